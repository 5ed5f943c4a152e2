"""Execute notebooks headless on this Python (the README's main job): `lmassert-notebook NB.ipynb ...`.

Writes the executed notebook and an HTML copy to `build/` so the results are visible without
Jupyter; exits non-zero if any cell fails, so CI catches broken notebooks.
"""

from __future__ import annotations

import argparse
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


def _run(notebook: Any, path: Path, out_dir: Path, *, timeout: int, inplace: bool) -> Path:
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    code_cells = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    start = time.perf_counter()
    cell_start = [start]

    def on_cell_start(cell: Any, cell_index: int) -> None:
        cell_start[0] = time.perf_counter()

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        # one line per cell, so a long headless run shows where it is
        position = code_cells.index(cell_index) + 1 if cell_index in code_cells else 0
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
        if manager.has_kernel:  # the client does not own a kernel manager it was given
            manager.shutdown_kernel(now=False)
        shutil.rmtree(sockets, ignore_errors=True)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = path if inplace else out_dir / path.name
    nbformat.write(notebook, executed)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    html_path = out_dir / (path.stem + ".html")
    html_path.write_text(html, encoding="utf-8")
    print(f"{path.name}: executed in {seconds:.0f}s -> {executed} and {html_path}")
    return html_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmassert-notebook", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build"), help="where executed copies go (default: build/)")
    parser.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    parser.add_argument(
        "--small", type=int, default=None, metavar="N",
        help="run on N train and N dev examples (sets LMASSERT_SMALL; notebooks read it)",
    )
    parser.add_argument("--inplace", action="store_true", help="write outputs back into the notebook itself")
    args = parser.parse_args(argv)
    failed = 0
    for nb in args.notebooks:
        try:
            execute(nb, args.out, timeout=args.timeout, small=args.small, inplace=args.inplace)
        except Exception as exc:  # report every notebook, then fail
            failed += 1
            print(f"{nb.name}: FAILED: {type(exc).__name__}: {_tail(str(exc))}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())


def _tail(text: str, limit: int = 4000) -> str:
    """The end of a cell error: nbclient puts the cell's source first and the traceback last."""
    return text if len(text) <= limit else "..." + text[-limit:]
