"""Labelled items for the TweetGen judges, built so that every label is known without a person.

Why: an LM judge is a measuring instrument, and an instrument is calibrated against known answers before
its readings are trusted (:func:`lmassert_magic.engine.calibration.calibrate_judge`). Hand labels would
need a person; these sets get their labels from how each item is written.

* :func:`faithful_labelled`: a tweet states the example's gold answer (faithful, True) or another
  example's answer of the same kind, one that the item's context does not contain (unfaithful, False).
  Both use the same sentence templates, so the answer is the only thing that differs.
* :func:`engaging_labelled`: for each example a pair written to differ on purpose: a lively tweet (a
  question hook, an exclamation, a vivid verb) labelled True and a flat one ("The answer is X.") labelled
  False. "Engaging" has no ground truth; these labels hold by construction only, so agreement here
  measures whether a judge separates these two styles, not whether it knows what engages people.

Items are ``(fields, label)`` with fields ``question``, ``context`` (the example's top-3 retrieved
passages, with its gold passages always among them) and ``tweet``. Examples are drawn from TweetGen's
train and dev splits together; the same ``seed`` always gives the same items, in the same order.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from . import answer_in_text, load_study, title_of

__all__ = ["engaging_labelled", "faithful_labelled"]

# One plain statement of each question kind; {t} is the gold title, {a} the answer stated.
_STATEMENTS = {
    "film-director": '"{t}" was directed by {a}.',
    "book-author": '"{t}" was written by {a}.',
    "town-founded": "{t} was founded in {a}.",
    "invention-inventor": "The {t} was invented by {a}.",
    "landmark-architect": "The {t} was designed by {a}.",
    "band-founder": "{t} was founded by {a}.",
    "province-capital": "The capital of {t} is {a}.",
    "river-source": "The source of the {t}: {a}.",
    "painting-painter": '"{t}" was painted by {a}.',
}
_FAITHFUL_WRAPPERS = ("{s}", "Did you know? {s}", "Today I learned: {s}")

_LIVELY = (
    "Ever wondered {q} Drumroll, please... it's {a}! Bet you didn't see that one coming.",
    "Quick quiz: {q} Pause. Think. It's {a}! Did you get it right?",
    "{Q} We dug through the archives and one name leaps out: {a}! Who knew?",
)
_FLAT = ("The answer is {a}.", "Answer: {a}.", "It is {a}.")


@functools.cache
def _pool() -> tuple[dict[str, Any], ...]:
    """TweetGen's train + dev rows with their contexts (retrieval runs once per process)."""
    study = load_study("tweetgen")
    retrieve = study.retriever(k=3)
    by_title = {title_of(p): p for p in study.passages}
    rows = []
    for ex in [*study.train, *study.dev]:
        context = list(retrieve(ex.question))
        gold = [by_title[t] for t in ex.gold_titles if t in by_title]
        for g in gold:  # the gold passage always belongs in the context: replace the weakest non-gold hit
            if g not in context:
                spare = [i for i, p in enumerate(context) if p not in gold]
                if spare:
                    context[spare[-1]] = g
                else:
                    context.append(g)
        rows.append(
            {
                "kind": ex.kind,
                "question": ex.question,
                "answer": ex.answer,
                "title": ex.gold_titles[0] if ex.gold_titles else "",
                "context": context,
            }
        )
    return tuple(rows)


def _check_n(n: int, examples_needed: int, pool: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if examples_needed > pool:
        raise ValueError(f"n={n} needs {examples_needed} distinct examples; TweetGen has {pool} (train + dev)")


def _statement(row: dict[str, Any], answer: str) -> str:
    template = _STATEMENTS.get(row["kind"])
    if template is None:
        return f"{row['question']} {answer}."
    return template.format(t=row["title"], a=answer)


def _fields(row: dict[str, Any], tweet: str) -> dict[str, Any]:
    return {"question": row["question"], "context": list(row["context"]), "tweet": tweet}


def _wrong_answer(row: dict[str, Any], rows: tuple[dict[str, Any], ...], rng: random.Random) -> str:
    """Another example's answer of the same kind that the row's context does not contain."""
    candidates = sorted(
        {
            r["answer"]
            for r in rows
            if r["kind"] == row["kind"]
            and r["answer"] != row["answer"]
            and not answer_in_text(r["answer"], "\n".join(row["context"]))
        }
    )
    if not candidates:  # not reached on the shipped data; keep the set buildable on any data
        candidates = sorted({r["answer"] for r in rows if r["answer"] != row["answer"]})
    return rng.choice(candidates)


def faithful_labelled(n: int = 40, seed: int = 0) -> list[tuple[dict[str, Any], bool]]:
    """`n` items for a "faithful to the context" judge: half True (the gold answer), half False.

    Each item comes from a distinct example (so n <= 80); positives get the extra item when n is odd.
    """
    rows = _pool()
    _check_n(n, n, len(rows))
    rng = random.Random(f"faithful-{seed}")
    chosen = rng.sample(range(len(rows)), n)
    n_pos = n - n // 2
    items: list[tuple[dict[str, Any], bool]] = []
    for k, idx in enumerate(chosen):
        row = rows[idx]
        positive = k < n_pos
        answer = row["answer"] if positive else _wrong_answer(row, rows, rng)
        wrapper = _FAITHFUL_WRAPPERS[k % len(_FAITHFUL_WRAPPERS)]
        items.append((_fields(row, wrapper.format(s=_statement(row, answer))), positive))
    rng.shuffle(items)
    return items


def engaging_labelled(n: int = 40, seed: int = 0) -> list[tuple[dict[str, Any], bool]]:
    """`n` items (n/2 pairs, n even, n <= 160) for an "engaging" judge: lively True, flat False, same answer.

    The labels are true by construction only: they say which of two styles an item was written in.
    """
    rows = _pool()
    _check_n(n, n // 2, len(rows))
    if n % 2:
        raise ValueError(f"n must be even (items come in lively/flat pairs), got {n}")
    rng = random.Random(f"engaging-{seed}")
    chosen = rng.sample(range(len(rows)), n // 2)
    items: list[tuple[dict[str, Any], bool]] = []
    for k, idx in enumerate(chosen):
        row = rows[idx]
        q = row["question"]
        lively = _LIVELY[k % len(_LIVELY)].format(q=q[:1].lower() + q[1:], Q=q, a=row["answer"])
        flat = _FLAT[k % len(_FLAT)].format(a=row["answer"])
        items.append((_fields(row, lively), True))
        items.append((_fields(row, flat), False))
    rng.shuffle(items)
    return items
