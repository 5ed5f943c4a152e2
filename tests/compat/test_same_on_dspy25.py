"""The ported tests and the assertions.py tests pass on DSPy 2.5.43 itself, not only on this package.

Needs a venv with `dspy==2.5.43` and pytest (`python3 -m venv V && V/bin/pip install "dspy==2.5.43" pytest`);
point `DSPY25_PYTHON` at its python. Skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FILES = ["test_assertions.py", "test_retry.py"]


@pytest.mark.slow
def test_the_same_files_pass_on_dspy_2_5_43(tmp_path):
    python = os.environ.get("DSPY25_PYTHON")
    if not python:
        pytest.skip("set DSPY25_PYTHON to a venv python with dspy==2.5.43 and pytest")
    for name in FILES:
        shutil.copy(HERE / name, tmp_path / name)
    env = {**os.environ, "DSP_CACHEDIR": str(tmp_path / "cache"), "DSPY_CACHEDIR": str(tmp_path / "cache")}
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir",
                           str(tmp_path), *FILES], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "passed" in done.stdout and " failed" not in done.stdout
