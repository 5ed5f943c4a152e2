"""Execute notebooks headless on this Python (the README's main job): `lmassert-notebook NB.ipynb ...`.

Writes the executed notebook and an HTML copy to `build/` so the results are visible without
Jupyter; exits non-zero if any cell fails, so CI catches broken notebooks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def execute(path: Path, out_dir: Path, *, timeout: int, small: int | None, inplace: bool) -> Path:
    """Run `path` in a fresh kernel; write the executed copy and its HTML to `out_dir`."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits our environment: the slice size, and static reports (no widget frontend
    # will ever render in a headless run; nbconvert shows the static HTML).
    overrides = {
        "LMASSERT_SMALL": str(small) if small else None,
        "LMASSERT_WIDGETS": os.environ.get("LMASSERT_WIDGETS", "0"),
    }
    saved = {k: os.environ.get(k) for k in overrides}
    for key, value in overrides.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        return _run(notebook, path, out_dir, timeout=timeout, inplace=inplace)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Where a run's facts go in the notebook's metadata (a test compares `code_hash` with the sources).
METADATA_KEY = "lmassert"

#: Appended as a last cell and removed after the run: reads the run's facts from inside the kernel.
_FACTS_CELL = "from lmassert_magic.run_notebook import kernel_facts as _f; print(_f(globals())); del _f"


def package_source() -> str | None:
    """The git commit of the package that ran, with "+dirty" when its files differ from it.

    Outputs are only reproducible from a commit: a run made with uncommitted engine edits says so.
    None outside a git checkout (an installed wheel: its version says what ran).
    """
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def code_hash(notebook: Any) -> str:
    """A digest of the code cells' sources: outputs recorded under another digest are stale."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.strip().encode("utf-8") + b"\0")
    return digest.hexdigest()


def kernel_facts(namespace: dict[str, Any]) -> str:
    """JSON of what the notebook's ablation runs used: dev and train sizes, seeds, versions, model.

    Runs inside the kernel, at the end of a headless run: sizes are read from the results the
    notebook made, not from what the notebook asked for.
    """
    import dspy

    from . import __version__
    from .engine.ablation import AblationResult

    results = []
    for value in list(namespace.values()):
        result = getattr(value, "result", value)
        if isinstance(result, AblationResult) and all(result is not r for r in results):
            results.append(result)
    n_dev = max((s.n for r in results for s in r.settings.values()), default=0)
    n_train = max((s.compile.n_examples for r in results for s in r.settings.values() if s.compile), default=0)
    lm = dspy.settings.lm
    return json.dumps({
        "n_dev": n_dev,
        "n_train": n_train,
        "seeds": sorted({r.seed for r in results if r.seed is not None}),
        "model": getattr(lm, "model", None),
        "lmassert_magic": __version__,
        "dspy": getattr(dspy, "__version__", None),
        "python": sys.version.split()[0],
        # llama.cpp's decode threads can change floating-point sums, so a rerun needs the same number.
        "decode_threads": getattr(getattr(lm, "engine", None), "decode_threads", None),
        # what the model decoded: a run answered from the DSPy cache of an earlier run sends few requests
        "model_requests": getattr(getattr(lm, "engine", None), "requests_served", None),
    })


def _run(notebook: Any, path: Path, out_dir: Path, *, timeout: int, inplace: bool) -> Path:
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    code_cells = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    notebook.cells.append(nbformat.v4.new_code_cell(_FACTS_CELL))
    start = time.perf_counter()
    cell_start = [start]

    def on_cell_start(cell: Any, cell_index: int) -> None:
        cell_start[0] = time.perf_counter()

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        # one line per cell, so a long headless run shows where it is
        if cell_index not in code_cells:
            return  # the facts cell
        position = code_cells.index(cell_index) + 1
        first = (cell.source.strip().splitlines() or [""])[0][:70]
        now = time.perf_counter()
        print(f"  [{position}/{len(code_cells)}] {now - cell_start[0]:6.1f}s  {first}", flush=True)

    # IPC transport: a local kernel needs no TCP ports (and ipykernel then has no unencrypted-TCP warning)
    # (the socket path is absolute: the kernel runs in the notebook's directory, the client here)
    sockets = tempfile.mkdtemp(prefix="lmassert-kernel-")
    manager = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
    class _EchoingClient(NotebookClient):
        """Echoes the package's own progress lines ([lmassert] ...) to the console as they arrive."""

        def output(self, outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
            content = msg.get("content", {})
            if msg.get("msg_type") == "stream":
                for line in str(content.get("text", "")).splitlines():
                    if line.startswith("[lmassert]"):
                        print(f"        {line}", flush=True)
            return super().output(outs, msg, display_id, cell_index)

    client = _EchoingClient(
        notebook,
        km=manager,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
    )
    print(f"{path.name}: running {len(code_cells)} code cells", flush=True)
    try:
        client.execute()
    finally:
        facts_cell = notebook.cells.pop()
        if manager.has_kernel:  # the client does not own a kernel manager it was given
            manager.shutdown_kernel(now=False)
        shutil.rmtree(sockets, ignore_errors=True)
    seconds = time.perf_counter() - start
    facts = json.loads("".join(o.get("text", "") for o in facts_cell.get("outputs", []) if o.get("name") == "stdout"))
    facts.update(
        wall_seconds=round(seconds, 1),
        small=os.environ.get("LMASSERT_SMALL") or None,
        executed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        code_hash=code_hash(notebook),
        source=package_source(),
    )
    notebook.metadata[METADATA_KEY] = carry_cold_run(notebook.metadata.get(METADATA_KEY), facts)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = path if inplace else out_dir / path.name
    nbformat.write(notebook, executed)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    html_path = out_dir / (path.stem + ".html")
    html_path.write_text(html, encoding="utf-8")
    print(f"{path.name}: executed in {seconds:.0f}s -> {executed} and {html_path}")
    return html_path


#: What a replayed run keeps of the cold run whose cached responses it replays.
COLD_RUN_KEYS = ("wall_seconds", "model_requests", "source", "executed", "decode_threads")
#: A replay is of the same experiment only when these match.
EXPERIMENT_KEYS = ("n_dev", "n_train", "seeds", "model")


def carry_cold_run(previous: dict[str, Any] | None, facts: dict[str, Any]) -> dict[str, Any]:
    """Keep the cold run in `facts` when this run replayed it from the DSPy cache (0 model requests).

    A replay takes seconds; alone, its wall time would hide what the experiment costs. The cold run is
    the previous one if it asked the model, or the one the previous replay kept, and only for the same
    sizes, seeds and model.
    """
    if not previous or facts.get("model_requests") != 0:
        return facts
    if any(previous.get(key) != facts.get(key) for key in EXPERIMENT_KEYS):
        return facts
    if previous.get("model_requests"):
        facts["cold_run"] = {key: previous.get(key) for key in COLD_RUN_KEYS}
    elif previous.get("cold_run"):
        facts["cold_run"] = dict(previous["cold_run"])
    return facts


#: The generated table of committed runs sits between these lines in the README and the workshop guide.
RUNS_START, RUNS_END = "<!-- notebook-runs -->", "<!-- /notebook-runs -->"


def runs_table(paths: list[Path]) -> str:
    """A Markdown table of the runs committed in `paths`, read from their `lmassert` metadata.

    Sizes and times in the docs come from here, never typed by hand: a re-run changes the metadata,
    and a test fails until the docs are regenerated (`lmassert-notebook --update-docs ...`).
    """
    import nbformat

    rows = ["| notebook | dev | train | seed | wall time | requests to the model | model | decode threads | run on "
            "| package commit |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(paths, key=lambda p: p.name):
        facts = nbformat.read(path, as_version=4).metadata.get(METADATA_KEY)
        if not facts:
            rows.append(f"| `{path.stem}` | source only: not run yet | | | | | | | | |")
            continue
        seeds = ", ".join(str(s) for s in facts.get("seeds") or []) or "-"
        commit = str(facts.get("source") or "-")
        source = commit[:12] + (" (uncommitted edits)" if commit.endswith("+dirty") else "")
        rows.append(
            f"| `{path.stem}` | {facts.get('n_dev', '-')} | {facts.get('n_train', '-')} | {seeds} "
            f"| {_wall_time(facts)} | {_requests(facts)} "
            f"| {facts.get('model') or '-'} "
            f"| {facts.get('decode_threads') or '-'} | {str(facts.get('executed', '-'))[:10]} | {source} |"
        )
    return "\n".join(rows)


def main_command_note(record: Path) -> str:
    """One sentence on the README main command's last timed run (`bench/main_command.py` writes `record`)."""
    if not record.is_file():
        return "The README's main command has not been timed from a fresh clone yet (`bench/main_command.py`)."
    facts = json.loads(record.read_text(encoding="utf-8"))
    return (f"The README's main command, timed by `bench/main_command.py` on {facts['date']} (commit "
            f"{facts['commit'][:12]}, {facts['cpu_count']} cores; {facts['caches']}): "
            f"{facts['total_seconds']:.0f} s in all, of which set-up {facts['setup_seconds']:.0f} s and the "
            f"notebook {facts['notebook_seconds']} s" + _load_note(facts.get("load_average")) + ".")


def _load_note(load: list[float] | None) -> str:
    """'; 1-minute load average 5.2 at the start and 4.1 at the end' (a shared machine runs slower)."""
    if not load:
        return ""
    return f"; 1-minute load average {load[0]:.1f} at the start and {load[-1]:.1f} at the end"


def docs_block(notebooks: list[Path]) -> str:
    """What goes between the markers: the runs table, then the main command's timing."""
    root = notebooks[0].resolve().parent.parent if notebooks else Path.cwd()
    return runs_table(notebooks) + "\n\n" + main_command_note(root / "bench" / "results" / "main_command.json")


def _wall_time(facts: dict[str, Any]) -> str:
    """'1578.0 s (26.3 min)'; for a replay, the cold run's time first, then the replay's."""
    cold = facts.get("cold_run")
    if cold:
        return (f"{cold['wall_seconds']} s ({cold['wall_seconds'] / 60:.1f} min) at {str(cold['source'])[:12]}; "
                f"replayed from the cache in {facts.get('wall_seconds')} s")
    if facts.get("model_requests") == 0:
        return f"{facts.get('wall_seconds')} s, a replay from the cache (its cold run was not recorded)"
    return f"{facts.get('wall_seconds', '-')} s ({facts.get('wall_seconds', 0) / 60:.1f} min)"


def _requests(facts: dict[str, Any]) -> str:
    """Requests the model decoded; the rest of the run's LM calls came from the DSPy cache."""
    served = facts.get("model_requests")
    if facts.get("cold_run"):
        return f"{facts['cold_run']['model_requests']:,} (replay: {served:,})"
    return "not recorded" if served is None else f"{served:,}"


def update_docs(docs: list[Path], notebooks: list[Path]) -> list[Path]:
    """Rewrite the block between the markers of each doc; returns the docs that changed."""
    table = docs_block(notebooks)
    changed = []
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        start, end = text.find(RUNS_START), text.find(RUNS_END)
        if start < 0 or end < start:
            raise ValueError(f"{doc}: no {RUNS_START} ... {RUNS_END} block to fill")
        new = text[: start + len(RUNS_START)] + "\n" + table + "\n" + text[end:]
        if new != text:
            doc.write_text(new, encoding="utf-8")
            changed.append(doc)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmassert-notebook", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build"), help="where executed copies go (default: build/)")
    parser.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    parser.add_argument(
        "--small", type=int, default=None, metavar="N",
        help="run on N train and N dev examples (sets LMASSERT_SMALL, which notebooks read; default: "
             "LMASSERT_SMALL from the environment, else the full size)",
    )
    parser.add_argument("--inplace", action="store_true", help="write outputs back into the notebook itself")
    parser.add_argument("--update-docs", nargs="+", type=Path, metavar="DOC", default=None,
                        help="do not run: rewrite the table of committed runs in these Markdown files")
    args = parser.parse_args(argv)
    if args.small is None:
        args.small = _small_from_environment()
    if args.update_docs:
        for doc in update_docs(args.update_docs, args.notebooks):
            print(f"updated {doc}")
        return 0
    failed = 0
    for nb in args.notebooks:
        try:
            execute(nb, args.out, timeout=args.timeout, small=args.small, inplace=args.inplace)
        except Exception as exc:  # report every notebook, then fail
            failed += 1
            print(f"{nb.name}: FAILED: {type(exc).__name__}: {_tail(str(exc))}", file=sys.stderr)
    return 1 if failed else 0


def _small_from_environment() -> int | None:
    """LMASSERT_SMALL as set by the user: a size the runner would otherwise drop for the kernel."""
    value = os.environ.get("LMASSERT_SMALL", "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"LMASSERT_SMALL={value!r}: expected a number of examples, e.g. LMASSERT_SMALL=4") from None


def _tail(text: str, limit: int = 4000) -> str:
    """The end of a cell error: nbclient puts the cell's source first and the traceback last."""
    return text if len(text) <= limit else "..." + text[-limit:]


if __name__ == "__main__":
    raise SystemExit(main())
