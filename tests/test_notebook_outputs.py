"""Committed notebook outputs are the outputs of the committed code: fresh, error-free and quiet.

A notebook committed with outputs carries the facts of the run that made them (`lmassert` metadata,
written by `lmassert-notebook`); a code cell edited afterwards changes the code hash and fails here
until the notebook is run again.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from lmassert_magic.run_notebook import METADATA_KEY, code_hash

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
#: The quickstart stays small on purpose (the README's main job); the case studies run at full size.
FULL_SIZE = [p for p in NOTEBOOKS if not p.name.startswith("01_")]
WARNING = re.compile(r"\b\w*Warning\b|\bWARNING\b|warnings\.warn")


def _outputs(book):
    return [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _executed(path: Path):
    book = nbformat.read(path, as_version=4)
    if not _outputs(book):
        pytest.xfail(f"{path.name} is committed as source only (not yet executed and committed with outputs)")
    return book


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_come_from_the_committed_code(notebook):
    book = _executed(notebook)
    facts = book.metadata.get(METADATA_KEY)
    assert facts, f"{notebook.name} has outputs but no '{METADATA_KEY}' metadata: run lmassert-notebook --inplace"
    assert facts["code_hash"] == code_hash(book), (
        f"{notebook.name}: code cells changed since its outputs were made ({facts['executed']}): run it again"
    )
    assert facts["small"] is None, f"{notebook.name} was executed on a slice (LMASSERT_SMALL={facts['small']})"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_hold_no_error_and_no_warning(notebook):
    book = _executed(notebook)
    for index, cell in enumerate(book.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{notebook.name} cell {index}: {output.get('ename')}"
            if output.output_type == "stream":
                found = WARNING.search(output.get("text", ""))
                assert not found, f"{notebook.name} cell {index} prints a warning: {found.group(0)!r}"


@pytest.mark.parametrize("notebook", FULL_SIZE, ids=lambda p: p.stem)
def test_case_studies_are_committed_at_full_size(notebook):
    facts = _executed(notebook).metadata.get(METADATA_KEY, {})
    assert facts.get("n_dev", 0) >= 40, f"{notebook.name}: {facts.get('n_dev')} dev examples, full size is >= 40"
    assert facts.get("n_train", 0) > 0, f"{notebook.name}: no training examples recorded"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_solution_passes_its_check(notebook):
    """The collapsed solutions ran, and `check_exercise` said "done." for each exercise the notebook names."""
    book = _executed(notebook)
    keys = set(re.findall(r'check_exercise\("([\w.]+)"\)', "\n".join(c.source for c in book.cells)))
    assert keys, f"{notebook.name} has no self-checking exercise"
    solutions = [c for c in book.cells if "solution" in c.get("metadata", {}).get("tags", [])]
    assert solutions and all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions)
    printed = "".join(o.get("text", "") for c in solutions for o in c.get("outputs", []) if o.output_type == "stream")
    for key in sorted(keys):
        assert f"Exercise {key}: done." in printed, f"{notebook.name}: the solution does not pass {key}"
    assert "not yet" not in printed
