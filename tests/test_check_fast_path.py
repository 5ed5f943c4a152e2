"""Checks that cannot block run inline in a step (no round trip through `drive`/`adrive`); checks with a time limit
are offloaded. Both paths must leave the same record: attempts, verdicts, counts, constraint stats, feedback.
"""

from __future__ import annotations

import asyncio
import dataclasses

import dspy
import pytest

from lmassert_magic import Constraint, activate_assertions
from lmassert_magic.engine import run_record_of

from helpers import FIX, Tweet, no_hashtags


def respond(messages):
    text = messages[-1]["content"]
    return {"tweet": "clean tweet" if FIX in text else "tweet #tag"}


def constraints(timeout: float | None) -> list[Constraint]:
    return [
        Constraint("no_hashtags", no_hashtags, FIX + ".", target=Tweet, timeout=timeout),
        Constraint("not_empty", lambda tweet: bool(tweet.strip()), "Say something.", target=Tweet, hard=True,
                   timeout=timeout),
    ]


def record_facts(record) -> dict:
    attempts = [dataclasses.replace(a, seconds=0.0) for a in record.attempts]
    stats = {name: dataclasses.asdict(s) for name, s in record.constraints.items()}
    return {"attempts": attempts, "constraints": stats, "lm_calls": record.lm_calls, "tokens": record.tokens,
            "passes": record.passes, "kinds": record.kinds, "warnings": record.warnings,
            "counterexamples": [c.to_dict() for c in record.counterexamples]}


@pytest.mark.parametrize("use_async", [False, True])
def test_inline_checks_leave_the_record_the_offloaded_ones_do(scripted_lm, use_async):
    records = []
    for timeout in (None, 30.0):  # None: run inline; a time limit: offloaded (a thread of its own)
        lm = scripted_lm(respond)
        program = activate_assertions(dspy.Predict(Tweet), 3, constraints=constraints(timeout))
        prediction = asyncio.run(program.acall(question="q")) if use_async else program(question="q")
        assert prediction.tweet == "clean tweet" and len(lm.prompts) == 2
        records.append(record_facts(run_record_of(prediction)))
    assert records[0] == records[1]
    assert [a.verdicts for a in records[0]["attempts"]] == [{"no_hashtags": False, "not_empty": True},
                                                            {"no_hashtags": True, "not_empty": True}]
