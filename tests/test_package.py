"""The package as a user installs it without a checkout: a wheel of this project carries every
subpackage and the workflow schema, and its `reengage` command works from anywhere."""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import reengage

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, a folder it was installed into without its dependencies)."""
    root = tmp_path_factory.mktemp("package")
    wheels, site, source = root / "wheels", root / "site", root / "source"
    # A copy, because setuptools builds in the source tree (build/, *.egg-info).
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "build", "dist", "*.egg-info", ".snakemake", "wandb",
        "__pycache__", ".pytest_cache", ".ruff_cache"))
    # --no-build-isolation: build with this environment's setuptools, offline.
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                    "--no-build-isolation", "--quiet", "--wheel-dir", str(wheels)],
                   check=True, cwd=root)
    (wheel,) = wheels.glob("reengage-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True, cwd=root)
    return wheel, site


def _run_installed(site: Path, code: str) -> subprocess.CompletedProcess:
    """Python code run from outside the checkout with the installed copy first on the
    interpreter's path (PYTHONPATH precedes site-packages, where the test environment's
    editable install is)."""
    environment = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=site.parent, env=environment)


def test_the_wheel_holds_every_subpackage_the_schema_and_the_license(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "reengage/schema.yaml" in names
    # Every package folder of the source tree, found on disk: pyproject.toml lists packages
    # by name, so a new subpackage is left out of the wheel until it is listed there too.
    roots = {"reengage": "reengage", "agents": "reengage/agents", "envs": "reengage/envs",
             "analysis": "reengage/analysis"}
    packages = {f"{installed_as}/{init.parent.relative_to(REPO / folder).as_posix()}".rstrip("/.")
                for folder, installed_as in roots.items()
                for init in (REPO / folder).rglob("__init__.py")}
    assert {"reengage", "reengage/agents", "reengage/device"} <= packages
    for package in sorted(packages):
        assert f"{package}/__init__.py" in names, f"{package} is missing from the wheel"
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_the_wheel_declares_this_version_and_the_dependencies(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist()
                                     if n.endswith("METADATA"))).decode()
    assert f"\nVersion: {reengage.__version__}\n" in metadata
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    required = {Requirement(line.removeprefix("Requires-Dist: "))
                for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    assert required == {Requirement(text) for text in declared}


def test_the_installed_copy_validates_a_config_with_its_own_schema(installed):
    _, site = installed
    config = REPO / "config" / "default.yaml"
    result = _run_installed(
        site, "import reengage.cli as cli, reengage.workflow as w; "
        "print(w.__file__); raise SystemExit(cli.main(['check-config', "
        f"{str(config)!r}]))")
    assert result.returncode == 0, result.stderr
    module_file, verdict = result.stdout.strip().splitlines()
    assert module_file.startswith(str(site))  # the wheel's copy ran, not the checkout's
    assert "valid" in verdict and "training jobs" in verdict


def test_version_option_prints_the_package_version(installed):
    _, site = installed
    result = _run_installed(site, "import reengage.cli as cli; cli.main(['--version'])")
    assert result.returncode == 0
    assert result.stdout.strip() == f"reengage {reengage.__version__}"
