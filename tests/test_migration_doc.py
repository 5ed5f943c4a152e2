"""docs/migration.md's code runs: its Python blocks in order, its notebook block in a shell."""

from __future__ import annotations

import re
from pathlib import Path

import dspy
import pytest

from lmassert_magic import compat

DOC = Path(__file__).resolve().parents[1] / "docs" / "migration.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


FIX = "Please remove hashtag phrases."


def tweets(messages):
    """Tweets with a hashtag until told (retry feedback, Refine's advice, or instructions GEPA rewrote)."""
    system, last = messages[0]["content"], messages[-1]["content"]
    if "`advice`" in system:  # dspy.Refine's advice step
        return {"discussion": "It has a hashtag.", "advice": {"predict": FIX}}
    if "`new_instruction`" in system:  # GEPA's reflection, shown the constraint's feedback
        told = "remove hashtag phrases" in last
        return {"new_instruction": f"Write a tweet that answers the question. {FIX}" if told else "Write a tweet."}
    told = "remove hashtag" in last or FIX in system
    return {"reasoning": "r", "tweet": "Lotte Vane directed it." if told else "Lotte Vane! #film"}


@pytest.fixture(autouse=True)
def _zero_edit_off():
    yield
    compat.uninstall()


def test_the_python_blocks_run_and_fix_the_tweet(scripted_lm, capsys):
    lm = scripted_lm(tweets)
    namespace: dict = {"__name__": "migration_doc"}
    code = blocks("python")
    assert len(code) == 4
    calls = []
    for block in code:
        exec(compile(block, str(DOC), "exec"), namespace)
        calls.append(len(lm.prompts))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Lotte")]  # not GEPA's bars
    assert printed == ["Lotte Vane directed it."] * 4
    assert calls[:3] == [2, 4, 7]  # each 2.5 program: an attempt and a retry; Refine: attempt, advice, attempt
    assert not compat.installed()  # the second block turns zero-edit mode off again
    assert not hasattr(dspy, "Suggest")
    reflections = [p for p in lm.prompts if "`new_instruction`" in p[0]["content"]]
    assert reflections and "no_hashtags" in reflections[0][-1]["content"]  # GEPA read the constraint's feedback


def test_the_notebook_block_declares_the_constraint(ip):
    (cells,) = blocks("ipython")
    for cell in re.split(r"\n(?=%%)", cells.strip()):
        ip.run_cell(cell)
    from lmassert_magic.registry import get_registry

    assert "no_hashtags" in get_registry().constraints
