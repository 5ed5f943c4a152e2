"""The headless runner (the README's main job): progress while it runs, a quiet console, errors that show."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lmassert_magic.run_notebook import main

pytestmark = pytest.mark.slow  # starts a real kernel (a few seconds)


def _notebook(path, *sources):
    book = new_notebook()
    book.cells = [new_code_cell(src) for src in sources]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, path)
    return path


def test_prints_a_line_per_cell_and_the_package_progress(tmp_path, capfd):
    progress = "import sys\nprint('[lmassert] Vanilla: evaluating 1/2', file=sys.stderr)"
    nb = _notebook(tmp_path / "t.ipynb", "x = 1", progress)
    assert main([str(nb), "--out", str(tmp_path / "out")]) == 0
    out, err = capfd.readouterr()
    assert "[1/2]" in out and "[2/2]" in out
    assert "[lmassert] Vanilla: evaluating 1/2" in out
    assert "without encryption" not in out + err
    assert (tmp_path / "out" / "t.html").is_file()


def test_a_failing_cell_shows_the_end_of_its_traceback(tmp_path, capfd):
    nb = _notebook(tmp_path / "t.ipynb", "'x' * 5000\nraise ValueError('the real reason')")
    assert main([str(nb), "--out", str(tmp_path / "out")]) != 0
    _, err = capfd.readouterr()
    assert "the real reason" in err
