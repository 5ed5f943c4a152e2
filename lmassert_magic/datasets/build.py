"""Deterministic generator for the four case-study datasets shipped with the package.

The paper's studies run on HotPotQA with a Wikipedia retriever; a workshop laptop has neither the network nor
the disk for that. Instead this script writes a small, self-consistent fictional world (provinces, towns,
rivers, people and their works) as short encyclopedia passages, and derives the questions of the four studies
from the same tables, so every answer is guaranteed to be in the passages and nowhere in a model's prior
knowledge. The world is written out by hand (in `world.py`); the only "randomness" is a seeded shuffle, so running the
script twice gives byte-identical files.

Run ``python -m lmassert_magic.datasets.build`` to regenerate ``data/*.json`` (commit the result), or
``--check`` to verify that the committed files are up to date.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from .world import (
    BANDS,
    BOOKS,
    FILMS,
    INVENTIONS,
    LANDMARKS,
    PAINTINGS,
    PEOPLE,
    PROVINCES,
    RIVERS,
    TOWNS,
    answer_values,
    build_passages,
    person_of,
    river_of,
    river_title,
    town_of,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
STUDIES = ("tweetgen", "multihop", "longform", "quizgen")
N_TRAIN = 40
N_DEV = 40

# --------------------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------------------

Row = dict[str, object]


def _ex(kind: str, question: str, answer: object, gold: Sequence[str], **extra: object) -> Row:
    return {"kind": kind, "question": question, "answer": str(answer), "gold_titles": list(gold), **extra}


def _tweetgen() -> list[list[Row]]:
    """Single-hop factoid questions: the tweet must contain the answer found in one retrieved passage."""
    return [
        [_ex("film-director", f'Who directed "{f[0]}"?', f[3], [f[0]]) for f in FILMS],
        [_ex("book-author", f'Who wrote "{b[0]}"?', b[3], [b[0]]) for b in BOOKS],
        [_ex("town-founded", f"In what year was {t[0]} founded?", t[3], [t[0]]) for t in TOWNS],
        [_ex("invention-inventor", f"Who invented the {i[0]}?", i[2], [i[0]]) for i in INVENTIONS],
        [_ex("landmark-architect", f"Who designed the {lm[0]}?", lm[3], [lm[0]]) for lm in LANDMARKS],
        [_ex("band-founder", f"Who founded the band {b[0]}?", b[4], [b[0]]) for b in BANDS],
        [_ex("province-capital", f"What is the capital of {p[0]}?", p[2], [p[0]]) for p in PROVINCES],
        [_ex("river-source", f"Where does the {river_title(r[0])} rise?", r[1], [river_title(r[0])]) for r in RIVERS],
        [_ex("painting-painter", f'Who painted "{p[0]}"?', p[1], [p[0]]) for p in PAINTINGS],
    ]


def _multihop() -> list[list[Row]]:
    """Bridge questions: the first passage names the bridge entity, only the second passage has the answer."""

    def person_town(kind: str, question: str, title: str, person: str) -> Row:
        return _ex(kind, question, person_of(person)[3], [title, person])

    def person_year(kind: str, question: str, title: str, person: str) -> Row:
        return _ex(kind, question, person_of(person)[4], [title, person])

    def town_province(kind: str, question: str, title: str, town: str) -> Row:
        return _ex(kind, question, town_of(town)[2], [title, town])

    return [
        [
            person_town("film-director-birthplace", f'In which town was the director of "{f[0]}" born?', f[0], f[3])
            for f in FILMS
        ],
        [
            person_year("book-author-birthyear", f'In what year was the author of "{b[0]}" born?', b[0], b[3])
            for b in BOOKS
        ],
        [
            town_province("person-birthplace-province", f"In which province was {p[0]} born?", p[0], p[3])
            for p in PEOPLE
        ],
        [
            town_province("band-town-province", f"In which province was the band {b[0]} formed?", b[0], b[2])
            for b in BANDS
        ],
        [
            person_town("band-founder-birthplace", f"In which town was the founder of {b[0]} born?", b[0], b[4])
            for b in BANDS
        ],
        [
            person_town(
                "invention-inventor-birthplace", f"In which town was the inventor of the {i[0]} born?", i[0], i[2]
            )
            for i in INVENTIONS
        ],
        [
            town_province("landmark-town-province", f"In which province is the {lm[0]}?", lm[0], lm[2])
            for lm in LANDMARKS
        ],
        [
            person_year(
                "landmark-architect-birthyear", f"In what year was the architect of the {lm[0]} born?", lm[0], lm[3]
            )
            for lm in LANDMARKS
        ],
        [
            _ex(
                "town-river-sea",
                f"Into which sea does the river through {t[0]} flow?",
                river_of(t[5])[3],
                [t[0], river_title(t[5])],
            )
            for t in TOWNS
            if t[5]
        ],
        [
            person_town("painting-painter-birthplace", f'In which town was the painter of "{p[0]}" born?', p[0], p[1])
            for p in PAINTINGS
        ],
    ]


def _longform() -> list[list[Row]]:
    """Questions whose answer is a short fact, to be explained in a cited paragraph (one or two passages)."""
    band_town = {b[0]: b[2] for b in BANDS}
    return [
        [_ex("town-known-for", f"What is {t[0]} known for?", t[4], [t[0]]) for t in TOWNS],
        [
            _ex(
                "person-birthplace-known-for",
                f"What is the birthplace of {p[0]} known for?",
                town_of(p[3])[4],
                [p[0], p[3]],
            )
            for p in PEOPLE
        ],
        [_ex("band-genre", f"What kind of music does the band {b[0]} play?", b[1], [b[0]]) for b in BANDS],
        [
            _ex(
                "band-town-known-for",
                f"What is the hometown of the band {b[0]} known for?",
                town_of(band_town[b[0]])[4],
                [b[0], band_town[b[0]]],
            )
            for b in BANDS
        ],
        [_ex("invention-what", f"What kind of machine is the {i[0]}?", i[1], [i[0]]) for i in INVENTIONS],
        [_ex("film-genre", f'What kind of film is "{f[0]}"?', f[2], [f[0]]) for f in FILMS],
    ]


def _quizgen() -> list[list[Row]]:
    """Questions with a typed answer, so generated distractors can be checked against values of the same type."""
    return [
        [
            _ex("town-province", f"In which province is the town of {t[0]}?", t[2], [t[0]], answer_type="province")
            for t in TOWNS
        ],
        [_ex("person-birthplace", f"In which town was {p[0]} born?", p[3], [p[0]], answer_type="town") for p in PEOPLE],
        [
            _ex("film-year", f'In what year was the film "{f[0]}" released?', f[1], [f[0]], answer_type="year")
            for f in FILMS
        ],
        [
            _ex("person-profession", f"What is the profession of {p[0]}?", p[2], [p[0]], answer_type="profession")
            for p in PEOPLE
        ],
        [
            _ex(
                "river-sea",
                f"Into which sea does the {river_title(r[0])} flow?",
                r[3],
                [river_title(r[0])],
                answer_type="sea",
            )
            for r in RIVERS
        ],
        [_ex("person-birthyear", f"In what year was {p[0]} born?", p[4], [p[0]], answer_type="year") for p in PEOPLE],
        [
            _ex("town-river", f"Which river flows through {t[0]}?", river_title(t[5]), [t[0]], answer_type="river")
            for t in TOWNS
            if t[5]
        ],
        [
            _ex("landmark-town", f"In which town is the {lm[0]}?", lm[2], [lm[0]], answer_type="town")
            for lm in LANDMARKS
        ],
        [
            _ex("band-town", f"In which town was the band {b[0]} formed?", b[2], [b[0]], answer_type="town")
            for b in BANDS
        ],
    ]


GENERATORS: dict[str, Callable[[], list[list[Row]]]] = {
    "tweetgen": _tweetgen,
    "multihop": _multihop,
    "longform": _longform,
    "quizgen": _quizgen,
}

DESCRIPTIONS = {
    "tweetgen": "Write an engaging tweet (no hashtags, at most 280 characters) that answers the question "
    "faithfully from retrieved context.",
    "multihop": "Answer a two-hop question by generating search queries, retrieving twice and answering "
    "from the accumulated context.",
    "longform": "Write a short paragraph answering the question, citing retrieved passages as [n] after "
    "every one or two sentences.",
    "quizgen": "Generate multiple-choice options as JSON that include the correct answer and plausible "
    "distractors of the same type.",
}


def _seed(*parts: str) -> int:
    """A seed that is stable across processes (unlike hash() under PYTHONHASHSEED)."""
    return zlib.crc32(":".join(parts).encode())


def split(study: str, groups: list[list[Row]], n_train: int = N_TRAIN, n_dev: int = N_DEV) -> tuple[list, list]:
    """Pick train and dev examples round-robin over question kinds.

    Round-robin keeps every kind in both splits and makes the first N of each split (``limit=N``) diverse.
    Each kind's rows are shuffled with a seed derived from the study and kind, so which entities are asked
    about varies between kinds without changing between runs.
    """
    shuffled = []
    for rows in groups:
        rows = list(rows)
        random.Random(_seed(study, str(rows[0]["kind"]))).shuffle(rows)
        shuffled.append(rows)
    train: list[Row] = []
    dev: list[Row] = []
    pos = [0] * len(shuffled)
    while len(train) < n_train or len(dev) < n_dev:
        progressed = False
        for gi, rows in enumerate(shuffled):
            for target, want in ((train, n_train), (dev, n_dev)):
                if len(target) < want and pos[gi] < len(rows):
                    target.append(rows[pos[gi]])
                    pos[gi] += 1
                    progressed = True
        if not progressed:
            raise ValueError(f"{study}: not enough questions for {n_train} train + {n_dev} dev")
    return train, dev


def build_study(name: str) -> dict[str, object]:
    train, dev = split(name, GENERATORS[name]())
    return {"name": name, "description": DESCRIPTIONS[name], "train": train, "dev": dev}


def build_corpus() -> dict[str, object]:
    passages = build_passages()
    titles = [p.title for p in passages]
    if len(set(titles)) != len(titles):
        raise ValueError("duplicate passage titles")
    return {
        "passages": [{"title": p.title, "type": p.type, "text": p.text} for p in passages],
        "answer_values": answer_values(),
    }


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """File name -> exact file contents for every data file."""
    files = {"corpus.json": _dump(build_corpus())}
    for name in STUDIES:
        files[f"{name}.json"] = _dump(build_study(name))
    return files


def write(out_dir: Path = DATA_DIR) -> list[Path]:
    """Write all data files into ``out_dir`` (created if missing) and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, text in render().items():
        path = out_dir / fname
        path.write_text(text, encoding="utf-8", newline="\n")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output directory (default: package data)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files in --out are out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            fname
            for fname, text in render().items()
            if not (args.out / fname).exists() or (args.out / fname).read_text(encoding="utf-8") != text
        ]
        for fname in stale:
            print(f"out of date: {args.out / fname}", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
