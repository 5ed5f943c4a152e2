"""Does the quickstart give the same tables twice from a cold cache? (issue: numbers a workshop can trust)

Runs the quickstart notebook's cells (its five settings, on the embedded model) in a fresh process
per run, each with its own empty DSPy cache and calibration cache, then compares the tables:
`summary()`, `pass_rates()` and `comparisons()`. Runs 1 and 2 use one evaluation thread; run 3
(with --threads 2) uses two, to see whether the LM server's batching of parallel requests changes
the outputs. Prints whether each pair is identical and, if not, the first differing cells.

    python bench/reproducible.py [--n 6] [--threads 2] [--keep DIR]

One run of the quickstart at its default size (6 train / 6 dev) takes a few minutes here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"
TABLES = ("summary", "pass_rates", "comparisons")
# columns that measure the machine, not the run: they may differ and are not compared
TIMING = {"seconds"}


def run_once(out: Path, n: int, threads: int) -> None:
    """Child process: execute the quickstart's code cells in-process and dump its tables as JSON."""
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell

    os.environ["LMASSERT_SMALL"] = str(n)
    os.environ["LMASSERT_WIDGETS"] = "0"
    shell = InteractiveShell.instance()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = cell.source
        if source.startswith("%%compile") and threads > 1:
            first, rest = source.split("\n", 1)
            source = f"{first} --threads {threads}\n{rest}"
        result = shell.run_cell(source, silent=True)
        if not result.success:
            raise SystemExit(f"cell failed: {source[:80]!r}: {result.error_in_exec or result.error_before_exec}")
    report = shell.user_ns["report"].result
    tables = {
        "summary": report.summary().reset_index(),
        "pass_rates": report.pass_rates(),
        "comparisons": report.comparisons(),
    }
    payload = {name: json.loads(frame.to_json(orient="records", double_precision=10)) for name, frame in tables.items()}
    payload["outputs"] = {
        key: [e.outputs for e in res.examples] for key, res in report.settings.items()
    }
    payload["requests"] = _request_log()
    out.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str), encoding="utf-8")


def _request_log() -> list[dict]:
    """Every LM request of the run in order: what was sent and what came back (to find where runs part)."""
    from dspy.clients.base_lm import GLOBAL_HISTORY

    log = []
    for entry in GLOBAL_HISTORY:
        messages = entry.get("messages") or [{"role": "user", "content": entry.get("prompt")}]
        sent = json.dumps(messages, sort_keys=True, default=str)
        log.append({
            "sent": hashlib.sha256(sent.encode()).hexdigest()[:16],
            "kwargs": {k: v for k, v in (entry.get("kwargs") or {}).items() if k != "response_format"},
            "last_message": str(messages[-1].get("content"))[-300:],
            "outputs": entry.get("outputs"),
        })
    return log


def launch(out: Path, n: int, threads: int, workdir: Path) -> float:
    env = dict(os.environ)
    env["DSPY_CACHEDIR"] = str(workdir / "dspy_cache")  # a cold cache for this run only
    env["LMASSERT_CACHE_DIR"] = str(workdir / "lmassert_cache")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", str(out), "--n", str(n), "--threads", str(threads)],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT / "notebooks",
    )
    return time.perf_counter() - start


def differences(a: dict, b: dict, limit: int = 8) -> list[str]:
    found = []
    for table in (*TABLES, "outputs", "requests"):
        left, right = a[table], b[table]
        if table == "requests":
            # threads change the order requests are sent in, not what each one gets back: compare as sets
            def sent(r: dict) -> str:
                return json.dumps([r["sent"], r["kwargs"]], sort_keys=True)

            got = {}
            for r in right:
                got.setdefault(sent(r), []).append(r["outputs"])
            for i, x in enumerate(left):
                answers = got.get(sent(x))
                if not answers or x["outputs"] not in answers:
                    other = "never sent" if not answers else json.dumps(answers[0])[:300]
                    found.insert(0, f"LM request #{i} of run A ({len(left)} requests, {len(right)} in run B) got "
                                    f"another answer in run B:\n      prompt ends: {x['last_message'][-200:]!r}\n"
                                    f"      run A: {json.dumps(x['outputs'])[:300]}\n      run B: {other}")
                    break
            continue
        if table == "outputs":
            for key in left:
                for i, (x, y) in enumerate(zip(left[key], right.get(key, []))):
                    if x != y:
                        found.append(f"outputs[{key}][{i}]: {x!r} != {y!r}")
            continue
        if len(left) != len(right):
            found.append(f"{table}: {len(left)} rows != {len(right)} rows")
            continue
        for i, (x, y) in enumerate(zip(left, right)):
            for col in x:
                if col in TIMING:
                    continue
                if x[col] != y.get(col):
                    found.append(f"{table}[{i}].{col}: {x[col]!r} != {y.get(col)!r}")
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6, help="train and dev examples (the quickstart's default: 6)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the third run (1: skip it)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' JSON tables in this directory")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a run kept earlier (--keep): compare against it instead of making run 1 "
                             "(e.g. to check that a refactor leaves the tables as they were)")
    parser.add_argument("--repeats", type=int, default=2, help="one-thread runs to make (default 2)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"),
                        help="only compare two kept runs (no model runs)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_once(args.child, args.n, args.threads)
        return
    if args.compare:
        a, b = (json.loads(path.read_text(encoding="utf-8")) for path in args.compare)
        diff = differences(a, b)
        print(f"{args.compare[0].name} vs {args.compare[1].name}: tables "
              f"{'identical' if not diff else f'DIFFERENT in {len(diff)} place(s)'} (timing columns excluded)")
        for line in diff:
            print(f"    {line}")
        return

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results = {}
        if args.reference is not None:
            results[f"reference {args.reference.name}"] = json.loads(args.reference.read_text(encoding="utf-8"))
        first = len(results) + 1
        plan = [(f"run {first + i}", 1) for i in range(args.repeats)]
        if args.threads > 1:
            plan.append((f"run {first + len(plan)} ({args.threads} threads)", args.threads))
        for label, threads in plan:
            workdir = base / label.split(" (")[0].replace(" ", "_")
            workdir.mkdir()
            out = workdir / "tables.json"
            seconds = launch(out, args.n, threads, workdir)
            results[label] = json.loads(out.read_text(encoding="utf-8"))
            print(f"{label}: quickstart, {args.n} train / {args.n} dev, cold cache, {threads} thread(s): "
                  f"{seconds:.0f} s", flush=True)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"{workdir.name}.json").write_text(out.read_text(encoding="utf-8"), encoding="utf-8")
        labels = list(results)
        first = results[labels[0]]
        for label in labels[1:]:
            diff = differences(first, results[label])
            verdict = "identical" if not diff else f"DIFFERENT in {len(diff)} place(s)"
            print(f"{labels[0]} vs {label}: tables {verdict} (timing columns excluded)")
            for line in diff:
                print(f"    {line}")


if __name__ == "__main__":
    main()
