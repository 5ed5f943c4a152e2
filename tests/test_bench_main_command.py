"""bench/main_command.py reads the command a newcomer copies from the README."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("main_command", ROOT / "bench" / "main_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_timed_command_is_the_readme_one():
    bench = load_bench()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = bench.main_command(readme)
    assert command.startswith("python3 -m venv") and "lmassert-notebook notebooks/01_quickstart.ipynb" in command
    assert f"```\n{command}\n```" in readme


def test_a_readme_without_the_block_is_refused():
    with pytest.raises(SystemExit, match="no <!-- main-command --> block"):
        load_bench().main_command("# readme\n")
