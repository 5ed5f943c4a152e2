"""Time the README's main command as a newcomer meets it: a fresh clone, a fresh venv, empty caches.

    python bench/main_command.py [--repo PATH] [--keep]

Clones the repository's committed state (HEAD of `--repo`, default this checkout) into a temporary
directory, reads the main command from the clone's README (between the `main-command` markers),
and runs it with empty DSPy, calibration, uv and pip caches, so the set-up time includes downloading
every wheel. Prints the figures and writes them to
`bench/results/main_command.json`, from which the README's table of runs is generated.
Run it under `flock /tmp/lmassert-model.lock` on a shared machine: it starts the embedded model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "main_command.json"
EXECUTED = re.compile(r"01_quickstart\.ipynb: executed in (\d+)s")


def main_command(readme: str) -> str:
    """The command between the README's `main-command` markers (one fenced line)."""
    match = re.search(r"<!-- main-command -->\s*```[a-z]*\n(.+?)\n```\s*<!-- /main-command -->", readme, re.S)
    if match is None:
        raise SystemExit("README.md has no <!-- main-command --> block")
    return match.group(1).strip()


def run(repo: Path, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lmassert-main-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    command = main_command((clone / "README.md").read_text(encoding="utf-8"))
    env = {**os.environ, "DSPY_CACHEDIR": str(work / "dspy-cache"), "LMASSERT_CACHE_DIR": str(work / "lmassert-cache"),
           "UV_CACHE_DIR": str(work / "uv-cache"), "PIP_CACHE_DIR": str(work / "pip-cache")}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    print(f"[main-command] {commit[:12]} in {clone}\n[main-command] $ {command}", flush=True)
    load_at_start = os.getloadavg()[0]
    start = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(["bash", "-c", command], cwd=clone, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print("  " + line, end="", flush=True)
    total = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"the main command failed with exit code {proc.returncode}")
    executed = next((int(m.group(1)) for m in map(EXECUTED.search, lines) if m), None)
    figures = {
        "command": command,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "total_seconds": round(total, 1),
        "notebook_seconds": executed,
        "setup_seconds": round(total - executed, 1) if executed is not None else None,
        "caches": "fresh clone and venv; empty DSPy, calibration, uv and pip caches (every wheel downloaded)",
        # 1-minute load average at the start and the end: the same command runs slower on a busy machine
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }
    if not keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the repository to clone (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the clone, venv and caches")
    args = parser.parse_args(argv)
    figures = run(args.repo, args.keep)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"[main-command] {figures['total_seconds']:.0f} s in all: set-up {figures['setup_seconds']} s, "
          f"notebook {figures['notebook_seconds']} s -> {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
