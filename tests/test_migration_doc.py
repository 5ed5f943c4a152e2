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


def tweets(messages):
    told = "remove hashtag" in messages[-1]["content"]
    return {"reasoning": "r", "tweet": "Lotte Vane directed it." if told else "Lotte Vane! #film"}


@pytest.fixture(autouse=True)
def _zero_edit_off():
    yield
    compat.uninstall()


def test_the_python_blocks_run_and_fix_the_tweet(scripted_lm, capsys):
    lm = scripted_lm(tweets)
    namespace: dict = {"__name__": "migration_doc"}
    code = blocks("python")
    assert len(code) == 2
    for block in code:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert capsys.readouterr().out.splitlines() == ["Lotte Vane directed it."] * 2
    assert len(lm.prompts) == 4  # each program: one attempt, one retry with the feedback
    assert not compat.installed()  # the second block turns zero-edit mode off again
    assert not hasattr(dspy, "Suggest")


def test_the_notebook_block_declares_the_constraint(ip):
    (cells,) = blocks("ipython")
    for cell in re.split(r"\n(?=%%)", cells.strip()):
        ip.run_cell(cell)
    from lmassert_magic.registry import get_registry

    assert "no_hashtags" in get_registry().constraints
