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


def test_records_the_run_in_the_notebook_metadata_and_leaves_no_extra_cell(tmp_path, capfd):
    from lmassert_magic.run_notebook import METADATA_KEY, code_hash

    nb = _notebook(tmp_path / "t.ipynb", "x = 1", "print(x + 1)")
    assert main([str(nb), "--out", str(tmp_path / "out")]) == 0
    out, _ = capfd.readouterr()
    assert "[3/" not in out and "kernel_facts" not in out
    executed = nbformat.read(tmp_path / "out" / "t.ipynb", as_version=4)
    assert [c.source for c in executed.cells] == ["x = 1", "print(x + 1)"]
    facts = executed.metadata[METADATA_KEY]
    assert facts["code_hash"] == code_hash(nbformat.read(nb, as_version=4))
    assert facts["n_dev"] == 0 and facts["n_train"] == 0  # no ablation ran
    assert facts["wall_seconds"] > 0 and facts["lmassert_magic"] and facts["dspy"]


def test_code_hash_changes_with_code_not_with_outputs_or_markdown():
    from nbformat.v4 import new_markdown_cell, new_output

    from lmassert_magic.run_notebook import code_hash

    book = new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell("text")])
    before = code_hash(book)
    book.cells[0].outputs = [new_output("stream", name="stdout", text="1")]
    book.cells[1].source = "other text"
    assert code_hash(book) == before
    book.cells[0].source = "x = 2"
    assert code_hash(book) != before


def test_kernel_facts_reads_sizes_from_the_results_the_notebook_made():
    import json

    from lmassert_magic.engine.ablation import AblationResult, CompileSummary, ExampleResult, SettingResult
    from lmassert_magic.run_notebook import kernel_facts

    def setting(key, n_dev, n_train):
        examples = [ExampleResult(i, {}, {}, 1.0, None) for i in range(n_dev)]
        return SettingResult(key, examples, compile=CompileSummary(n_examples=n_train) if n_train else None)

    result = AblationResult(settings={"vanilla": setting("vanilla", 7, 0), "compile": setting("compile", 7, 5)}, seed=3)
    report = type("Report", (), {"result": result})()
    facts = json.loads(kernel_facts({"report": report, "same": result, "other": 42}))
    assert (facts["n_dev"], facts["n_train"], facts["seeds"]) == (7, 5, [3])


def test_kernel_facts_record_the_decode_threads_of_the_lm_engine():
    import json

    import dspy

    from lmassert_magic.run_notebook import kernel_facts

    engine = type("Engine", (), {"decode_threads": 1, "requests_served": 17})()
    lm = type("LM", (), {"model": "fake", "engine": engine})()
    with dspy.context(lm=lm):
        facts = json.loads(kernel_facts({}))
    assert (facts["model"], facts["decode_threads"], facts["model_requests"]) == ("fake", 1, 17)


def test_package_source_names_the_commit_and_says_when_files_differ(tmp_path, monkeypatch):
    import subprocess

    import lmassert_magic.run_notebook as run_notebook

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(run_notebook, "__file__", str(package / "run_notebook.py"))
    assert run_notebook.package_source() == commit
    (package / "mod.py").write_text("x = 2\n")
    assert run_notebook.package_source() == commit + "+dirty"
    monkeypatch.setattr(run_notebook, "__file__", "/nonexistent/dir/run_notebook.py")
    assert run_notebook.package_source() is None


def test_runs_table_is_read_from_metadata_and_the_docs_follow_it(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from lmassert_magic.run_notebook import RUNS_END, RUNS_START, runs_table, update_docs

    ran = new_notebook(cells=[new_code_cell("x = 1")])
    ran.metadata["lmassert"] = {"n_dev": 40, "n_train": 23, "seeds": [0], "wall_seconds": 1578.0,
                                "model": "local/m", "decode_threads": 2, "executed": "2026-11-29T10:00:00Z",
                                "source": "abcdef1234567890+dirty", "model_requests": 1234}
    nbformat.write(ran, tmp_path / "04_quiz.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("y = 1")]), tmp_path / "02_multi.ipynb")
    books = [tmp_path / "04_quiz.ipynb", tmp_path / "02_multi.ipynb"]
    table = runs_table(books)
    lines = table.splitlines()
    assert lines[2].startswith("| `02_multi` | source only: not run yet")
    assert lines[3] == ("| `04_quiz` | 40 | 23 | 0 | 1578.0 s (26.3 min) | 1,234 | local/m | 2 | 2026-11-29 "
                        "| abcdef123456 (uncommitted edits) |")

    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n{RUNS_START}\nold table\n{RUNS_END}\nafter\n")
    assert update_docs([doc], books) == [doc]
    untimed = "The README's main command has not been timed from a fresh clone yet (`bench/main_command.py`)."
    assert doc.read_text() == f"intro\n{RUNS_START}\n{table}\n\n{untimed}\n{RUNS_END}\nafter\n"
    assert update_docs([doc], books) == []  # already current
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(ValueError, match="plain.md: no <!-- notebook-runs -->"):
        update_docs([tmp_path / "plain.md"], books)


def test_the_docs_show_the_runs_the_committed_notebooks_record():
    """README and the workshop guide carry the table generated from the notebooks' metadata."""
    from pathlib import Path

    from lmassert_magic.run_notebook import RUNS_END, RUNS_START, docs_block

    root = Path(__file__).resolve().parents[1]
    table = docs_block(sorted((root / "notebooks").glob("*.ipynb")))
    for doc in (root / "README.md", root / "docs" / "workshop.md"):
        text = doc.read_text(encoding="utf-8")
        block = text[text.index(RUNS_START) + len(RUNS_START):text.index(RUNS_END)].strip()
        assert block == table, f"{doc.name} is stale: run lmassert-notebook notebooks/*.ipynb --update-docs {doc.name}"


def test_main_command_note_reads_the_timed_run(tmp_path):
    import json

    from lmassert_magic.run_notebook import main_command_note

    record = tmp_path / "main_command.json"
    record.write_text(json.dumps({"date": "2026-11-29", "commit": "0123456789abcdef", "cpu_count": 2,
                                  "caches": "empty caches", "total_seconds": 281.4, "setup_seconds": 98.2,
                                  "notebook_seconds": 183}))
    assert main_command_note(record) == (
        "The README's main command, timed by `bench/main_command.py` on 2026-11-29 (commit 0123456789ab, 2 cores; "
        "empty caches): 281 s in all, of which set-up 98 s and the notebook 183 s.")
    # the machine's load during the run is part of the figure (a shared machine runs slower)
    record.write_text(json.dumps({**json.loads(record.read_text()), "load_average": [5.24, 4.1]}))
    assert main_command_note(record).endswith(
        "the notebook 183 s; 1-minute load average 5.2 at the start and 4.1 at the end.")


def test_a_re_run_from_the_cache_keeps_the_cold_run_that_filled_it(tmp_path):
    # A re-run that the DSPy cache answers (0 requests) takes seconds; its wall time alone would hide what the
    # run costs. The cold run it replays stays in the metadata, and the table shows both.
    from lmassert_magic.run_notebook import carry_cold_run, runs_table

    cold = {"n_dev": 40, "n_train": 28, "seeds": [0], "model": "local/m", "wall_seconds": 1438.1,
            "model_requests": 405, "source": "2927bfaab15e", "executed": "2026-11-29T13:28:00Z", "decode_threads": 2}
    rerun = {**cold, "wall_seconds": 12.7, "model_requests": 0, "source": "df7205cd24f5",
             "executed": "2026-11-29T13:38:00Z"}
    kept = carry_cold_run(cold, dict(rerun))
    assert kept["cold_run"] == {"wall_seconds": 1438.1, "model_requests": 405, "source": "2927bfaab15e",
                                "executed": "2026-11-29T13:28:00Z", "decode_threads": 2}
    assert kept["wall_seconds"] == 12.7 and kept["model_requests"] == 0
    # a second cached re-run keeps the same cold run
    again = carry_cold_run(kept, {**rerun, "wall_seconds": 11.0})
    assert again["cold_run"] == kept["cold_run"]
    # a run that asked the model is its own cold run; other sizes, seeds or models are another experiment
    assert "cold_run" not in carry_cold_run(cold, {**rerun, "model_requests": 3})
    assert "cold_run" not in carry_cold_run(cold, {**rerun, "n_dev": 4})
    assert "cold_run" not in carry_cold_run(cold, {**rerun, "model": "local/other"})
    assert "cold_run" not in carry_cold_run(None, dict(rerun))

    book = new_notebook(cells=[new_code_cell("x = 1")])
    book.metadata["lmassert"] = kept
    nbformat.write(book, tmp_path / "03_long.ipynb")
    row = runs_table([tmp_path / "03_long.ipynb"]).splitlines()[2]
    assert "| 1438.1 s (24.0 min) at 2927bfaab15e; replayed from the cache in 12.7 s |" in row
    assert "| 405 (replay: 0) |" in row
    # a replay whose cold run was never recorded says so rather than passing for a 13-second experiment
    book.metadata["lmassert"] = rerun
    nbformat.write(book, tmp_path / "03_long.ipynb")
    row = runs_table([tmp_path / "03_long.ipynb"]).splitlines()[2]
    assert "| 12.7 s, a replay from the cache (its cold run was not recorded) | 0 |" in row


def test_the_small_size_set_in_the_environment_reaches_the_notebook(monkeypatch, tmp_path):
    # LMASSERT_SMALL=3 without --small once ran the full size: the runner dropped the variable
    import lmassert_magic.run_notebook as run_notebook

    seen = []
    monkeypatch.setattr(run_notebook, "execute", lambda nb, out, **kw: seen.append(kw["small"]))
    monkeypatch.setenv("LMASSERT_SMALL", "3")
    assert run_notebook.main([str(tmp_path / "nb.ipynb")]) == 0
    assert run_notebook.main([str(tmp_path / "nb.ipynb"), "--small", "2"]) == 0  # the flag wins
    monkeypatch.delenv("LMASSERT_SMALL")
    assert run_notebook.main([str(tmp_path / "nb.ipynb")]) == 0
    assert seen == [3, 2, None]
