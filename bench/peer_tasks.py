"""The peer benchmark's constraints and the wire format of signatures, as plain Python shared by both environments.

`bench/peers.py` imports this in the main environment (DSPy 3 + lmassert_magic) and `bench/dspy25_harness.py`
in the DSPy 2.5.43 environment, so every system is checked by identical code. Nothing here imports
lmassert_magic (it needs DSPy 3); `dspy` is imported inside functions, and both DSPy versions provide what
is used (`dspy.evaluate.normalize_text` is the same SQuAD normalisation in 2.5.43 and 3.4.1).

A *step check* sees one predictor step's fields (what an assertion in the loop sees); a *final check* sees
a program's final outputs (what scoring, dspy.Refine's and dspy.BestOfN's rewards see). For TweetGen they
are the same; for multi-hop QA a final check holds when the step check holds for every hop's query.
Judged checks take a `judge(question, **fields) -> bool` supplied by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Judge = Callable[..., bool]
Check = Callable[[dict, Judge], bool]
Feedback = Callable[[dict], str]

STUDIES = ("tweetgen", "multihop")


def normalize(text: Any) -> str:
    """DSPy's answer normalisation (lower case, no punctuation or articles), in either DSPy version."""
    from dspy.evaluate import normalize_text

    return normalize_text(str(text))


def answer_in_text(answer: Any, text: Any) -> bool:
    """Whether `answer` occurs in `text` as whole words after normalisation (an empty answer never does)."""
    needle = normalize(answer)
    return bool(needle) and f" {needle} " in f" {normalize(text)} "


def is_new_query(query: Any, earlier_queries: list[Any]) -> bool:
    """Whether `query` differs from every earlier query after normalisation (the paper's distinct-query check)."""
    return normalize(query) not in {normalize(q) for q in earlier_queries or []}


# name -> (check(fields, judge) -> bool, feedback(fields) -> str), in the order a DSPy 2.5 program states them
TWEET_CHECKS: dict[str, tuple[Check, Feedback]] = {
    "no_hashtags": (
        lambda f, j: not re.search(r"#\w+", str(f["tweet"])),
        lambda f: "Please revise the tweet to remove hashtag phrases.",
    ),
    "under_280": (
        lambda f, j: len(str(f["tweet"])) <= 280,
        lambda f: f"The tweet is {len(str(f['tweet']))} characters long; keep it under 280 characters.",
    ),
    "has_answer": (
        lambda f, j: answer_in_text(f["answer"], f["tweet"]),
        lambda f: f"The tweet must state the answer: {f['answer']}.",
    ),
    "engaging": (
        lambda f, j: bool(j("Is this tweet engaging?", tweet=f["tweet"])),
        lambda f: "Make the tweet more engaging: a lively first sentence, no hashtags.",
    ),
    "faithful": (
        lambda f, j: bool(j("Is every claim in the tweet supported by the context?", context=f["context"],
                            tweet=f["tweet"])),
        lambda f: "Only say what the context supports.",
    ),
}

MULTIHOP_CHECKS: dict[str, tuple[Check, Feedback]] = {
    "short_query": (
        lambda f, j: len(str(f["query"])) <= 100,
        lambda f: "Query should be short and less than 100 characters.",
    ),
    "new_query": (
        lambda f, j: is_new_query(f["query"], f["earlier_queries"]),
        lambda f: "Query should be distinct from: " + "; ".join(str(q) for q in f["earlier_queries"]),
    ),
}

CHECKS: dict[str, dict[str, tuple[Check, Feedback]]] = {"tweetgen": TWEET_CHECKS, "multihop": MULTIHOP_CHECKS}


def step_verdict(check: Check, fields: dict, judge: Judge) -> bool:
    """A check's verdict on one step; a check that raises (a missing or malformed field) fails."""
    try:
        return bool(check(fields, judge))
    except Exception:
        return False


def final_verdicts(study: str, fields: dict, judge: Judge) -> dict[str, bool]:
    """Each constraint's verdict on a program's final outputs (plus its inputs)."""
    verdicts = {}
    for name, (check, _) in CHECKS[study].items():
        if study == "multihop":
            queries = list(fields.get("queries") or [])
            verdicts[name] = bool(queries) and all(
                step_verdict(check, {"query": q, "earlier_queries": queries[:i]}, judge) for i, q in enumerate(queries)
            )
        else:
            verdicts[name] = step_verdict(check, fields, judge)
    return verdicts


def fraction_passed(study: str, fields: dict, judge: Judge) -> float:
    """The reward dspy.Refine and dspy.BestOfN maximise: the share of constraints the final outputs pass."""
    verdicts = final_verdicts(study, fields, judge)
    return sum(verdicts.values()) / len(verdicts)


# ---------------------------------------------------------------- signatures on the wire

_TYPES = {"str": str, "bool": bool, "int": int, "float": float, "list[str]": list[str]}


def type_name(annotation: Any) -> str:
    """The wire name of a field type; anything unlisted travels as a string."""
    for name, kind in _TYPES.items():
        if annotation == kind:
            return name
    return "str"


def _desc(name: str, field: Any) -> str:
    desc = str((getattr(field, "json_schema_extra", None) or {}).get("desc") or "")
    return "" if desc == f"${{{name}}}" else desc


def signature_spec(signature: Any) -> dict[str, Any]:
    """A signature as JSON: its name, instructions and fields in order (works on DSPy 2.5 and 3 signatures)."""
    fields = [{"name": n, "io": "input", "type": type_name(f.annotation), "desc": _desc(n, f)}
              for n, f in signature.input_fields.items()]
    fields += [{"name": n, "io": "output", "type": type_name(f.annotation), "desc": _desc(n, f)}
               for n, f in signature.output_fields.items()]
    return {"name": getattr(signature, "__name__", "Signature"), "instructions": signature.instructions or "",
            "fields": fields}


def signature_from_spec(spec: dict[str, Any]) -> Any:
    """The signature a spec describes, built with the running DSPy (2.5 or 3)."""
    import dspy

    fields = {}
    for f in spec["fields"]:
        make = dspy.InputField if f["io"] == "input" else dspy.OutputField
        fields[f["name"]] = (_TYPES[f["type"]], make(desc=f["desc"]) if f["desc"] else make())
    return dspy.make_signature(fields, spec["instructions"], signature_name=spec["name"])
