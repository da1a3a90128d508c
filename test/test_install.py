"""The robot install (README "Robot install"): every extra resolves for the Pythons ROS 2
ships with (3.10 Humble, 3.11, 3.12 Jazzy / Ubuntu 24.04), and the recipe's
``--system-site-packages`` virtual environment works on this machine's Python.

This Debian has no Python 3.12, so the resolution runs ``pip install --dry-run
--only-binary=:all: --python-version X`` against PyPI. pip evaluates environment markers
for the *running* interpreter, not for ``--python-version`` (pypa/pip#11664), so the test
evaluates the project's markers for the target Python itself (``packaging.markers``)
and hands pip the selected requirements. ``empy`` (needed by colcon-core and
ros-rosidl-adapter) is published only as a pure-Python sdist: it is built into a
``py3-none-any`` wheel first. Needs the network: skipped cleanly offline.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12")
EXTRAS = ("ros", "cpu", "viz", "cuda", "test")
TORCH = "2.13.0"


def _online() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


needs_network = pytest.mark.skipif(not _online(), reason="PyPI is not reachable (offline): "
                                   "the resolution check needs the network")


def _setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    code = ("import json; from distutils.core import run_setup; "
            "d = run_setup('setup.py', stop_after='init'); "
            "print(json.dumps([d.install_requires, d.extras_require]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def requirements_for(python: str, extras: tuple[str, ...]) -> list[str]:
    """The project's requirements (with `extras`) that apply on Python `python`."""
    base, extra_reqs = _setup_requirements()
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    chosen = []
    for group, reqs in [("", base)] + [(e, extra_reqs[e]) for e in extras]:
        for text in reqs:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": group}):
                chosen.append(f"{req.name}{req.specifier}")
    return chosen


def _pip(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


@pytest.fixture(scope="module")
def empy_wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    proc = _pip("wheel", "-q", "--no-deps", "-w", str(folder), "empy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def test_markers_pick_an_spconv_build_that_exists_for_each_python():
    # spconv-cu120 stops at cp311; Jazzy's Python 3.12 needs spconv-cu121
    for python, spconv in (("3.10", "spconv-cu120"), ("3.11", "spconv-cu120"),
                           ("3.12", "spconv-cu121")):
        reqs = requirements_for(python, ("cuda",))
        assert [r for r in reqs if r.startswith("spconv")] == [spconv], (python, reqs)
    assert "spconv" in requirements_for("3.12", ("cpu",))


@pytest.mark.slow
@needs_network
@pytest.mark.parametrize("python", PYTHONS)
def test_every_extra_resolves_with_wheels_for_python(python, empy_wheel, tmp_path):
    reqs = requirements_for(python, EXTRAS)
    report = tmp_path / "report.json"
    proc = _pip("install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
                "--python-version", python, "--target", str(tmp_path / "t"),
                "--find-links", str(empy_wheel), "-c", "constraints.txt",
                "--report", str(report), "-q", *reqs)
    assert proc.returncode == 0, f"Python {python}: {proc.stderr[-4000:]}"
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"]
           for i in json.loads(report.read_text())["install"]}
    assert got["torch"].split("+")[0] == TORCH, got["torch"]   # the constraints' pin holds
    for req in reqs:
        assert Requirement(req).name.lower() in got, (python, req)
    assert "ros-rclpy" in got and "timm" in got and "gsplat" in got


@pytest.mark.slow
@needs_network
@pytest.mark.parametrize("python", PYTHONS)
def test_cpu_torch_build_exists_for_python(python, tmp_path):
    # the README's CPU variant installs torch==2.13.0+cpu from the PyTorch CPU index; here
    # that index is unreachable and only this machine's wheel folder may hold the build
    proc = _pip("install", "--dry-run", "--no-deps", "--ignore-installed",
                "--only-binary=:all:", "--python-version", python,
                "--target", str(tmp_path / "t"), "-q", f"torch=={TORCH}+cpu")
    if proc.returncode and ("No matching distribution" in proc.stderr
                            or "ResolutionImpossible" in proc.stderr):
        pytest.skip(f"no torch {TORCH}+cpu wheel for Python {python} on the indexes "
                    "reachable here (download.pytorch.org/whl/cpu is not)")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_system_site_packages_venv_recipe(tmp_path):
    """README robot install, steps 1-2 on this machine's Python: the venv sees the system
    packages (where apt puts rclpy), pip installs into it (no externally-managed
    refusal), and colcon skips it (COLCON_IGNORE)."""
    env_dir = tmp_path / "ws" / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    (env_dir / "COLCON_IGNORE").touch()
    py = env_dir / "bin" / "python"
    code = ("import json, site, sys; print(json.dumps({'prefix': sys.prefix, "
            "'base': sys.base_prefix, 'path': sys.path, 'site': site.getsitepackages()}))")
    info = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)
    assert info["prefix"] != info["base"]
    base_site = [p for p in info["site"] if not p.startswith(str(env_dir))]
    assert base_site and all(p in info["path"] for p in base_site), info
    proc = subprocess.run([py, "-m", "pip", "install", "--dry-run", "--no-deps",
                           "--no-build-isolation", "-q", str(ROOT)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "externally-managed" not in proc.stderr, proc.stderr
    from colcon_core.package_identification.ignore import IGNORE_MARKER  # test extra
    assert (env_dir / IGNORE_MARKER).is_file()
