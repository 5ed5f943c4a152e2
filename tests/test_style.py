"""The code base stays ruff clean (the same check CI runs)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed; it is part of the test extra")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


LAYERS_WITHOUT_IPYTHON = [
    "engine", "definitions", "registry.py", "pipeline.py", "lm/__init__.py", "lm/local.py", "lm/local_install.py",
    "lm/local_server.py", "lm/adapter.py", "datasets",
]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_and_lower_layers_import_no_ipython():
    # DSPy itself imports IPython, so this checks our source, not sys.modules.
    package = ROOT / "lmassert_magic"
    files = []
    for layer in LAYERS_WITHOUT_IPYTHON:
        target = package / layer
        files.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else [])
    assert files, "no layer files found"
    offenders = [str(f.relative_to(ROOT)) for f in files if {"IPython", "ipywidgets"} & _imported_modules(f)]
    assert offenders == []
