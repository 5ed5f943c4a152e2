"""The constraints and metrics of the peer benchmark, as plain Python shared by both environments.

`bench/peers.py` imports this in the main environment (DSPy 3 + lmassert_magic) and in the DSPy
2.5.43 environment, so every system is measured against identical checks. Judged checks take a
`judge(question, **fields) -> bool` supplied by the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

Judge = Callable[..., bool]


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", str(text).lower()).strip() + " "


def answer_in_text(answer: str, text: str) -> bool:
    return bool(str(answer).strip()) and _words(answer) in _words(text)


def parse_choices(choices: Any) -> dict[str, str] | None:
    try:
        value = json.loads(choices) if isinstance(choices, str) else choices
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or sorted(value) != ["A", "B", "C", "D"]:
        return None
    return {k: str(v) for k, v in value.items()}


# name -> (check(fields, judge) -> bool, feedback(fields) -> str)
TWEET_CHECKS: dict[str, tuple[Callable[[dict, Judge], bool], Callable[[dict], str]]] = {
    "no_hashtags": (
        lambda f, j: not re.search(r"#\w+", f["tweet"]),
        lambda f: "Please revise the tweet to remove hashtag phrases.",
    ),
    "under_280": (
        lambda f, j: len(f["tweet"]) <= 280,
        lambda f: f"The tweet is {len(f['tweet'])} characters long; keep it under 280 characters.",
    ),
    "has_answer": (
        lambda f, j: answer_in_text(f["answer"], f["tweet"]),
        lambda f: f"The tweet must state the answer: {f['answer']}.",
    ),
    "engaging": (
        lambda f, j: j("Is this tweet engaging?", tweet=f["tweet"]),
        lambda f: "Make the tweet more engaging: a lively first sentence, no hashtags.",
    ),
    "faithful": (
        lambda f, j: j("Is every claim in the tweet supported by the context?", context=f["context"], tweet=f["tweet"]),
        lambda f: "Only say what the context supports.",
    ),
}

QUIZ_CHECKS: dict[str, tuple[Callable[[dict, Judge], bool], Callable[[dict], str]]] = {
    "valid_json": (
        lambda f, j: parse_choices(f["choices"]) is not None,
        lambda f: 'The choices must be a JSON object with exactly the keys "A", "B", "C", "D".',
    ),
    "answer_included": (
        lambda f, j: bool(parse_choices(f["choices"]))
        and any(answer_in_text(f["answer"], o) for o in parse_choices(f["choices"]).values()),
        lambda f: f"One of the options must be the correct answer: {f['answer']}.",
    ),
    "plausible": (
        lambda f, j: j(
            "Could each of these options be a sensible answer to the question?",
            question=f["question"], options=f["choices"],
        ),
        lambda f: "Make the wrong options plausible: the same kind of thing as the correct answer.",
    ),
}

CHECKS = {"tweetgen": TWEET_CHECKS, "quizgen": QUIZ_CHECKS}


def tweet_quality(example: dict, outputs: dict) -> float:
    tweet = str(outputs.get("tweet") or "")
    return float(answer_in_text(example["answer"], tweet) and not re.search(r"#\w+", tweet) and len(tweet) <= 280)


def quiz_validity(example: dict, outputs: dict) -> float:
    parsed = parse_choices(outputs.get("choices"))
    if not parsed or not any(answer_in_text(example["answer"], o) for o in parsed.values()):
        return 0.0
    same_kind = {v.lower() for v in example.get("same_kind", [])}
    return float(all(o.strip().lower() in same_kind for o in parsed.values()))


METRICS = {"tweetgen": ("quality", tweet_quality), "quizgen": ("validity", quiz_validity)}


def fraction_passed(study: str, fields: dict, judge: Judge) -> float:
    checks = CHECKS[study]
    passed = 0
    for check, _ in checks.values():
        try:
            passed += bool(check(fields, judge))
        except Exception:
            pass
    return passed / len(checks)
