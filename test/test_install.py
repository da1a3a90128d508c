"""The robot install (README "Robot install"): every extra resolves for the Pythons ROS 2
ships with (3.10 Humble, 3.11, 3.12 Jazzy / Ubuntu 24.04), and the recipe's
``--system-site-packages`` virtual environment works on this machine's Python.

This Debian has no Python 3.12, so the resolution runs ``uv pip compile --python-version X
--python-platform x86_64-manylinux_2_Y --only-binary :all: -c constraints.txt`` against
PyPI for each target (Y: the glibc of the platform's Ubuntu / Debian). uv evaluates the
environment markers for the target Python and reads wheel metadata (PEP 658 / ranged
reads) instead of downloading whole wheels: the three resolutions take ~15-30 s cold and
~30 MB, where ``pip install --dry-run`` downloaded every torch wheel (~1.5 GB, ~280 s).
``empy`` (colcon-core, ros-rosidl-adapter) is published only as a pure-Python sdist, so its
metadata is built (``--no-binary empy``). Needs the network and the ``uv`` of the test
extra: skipped cleanly without them.
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
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# target Python → the manylinux glibc of its platform: Ubuntu 22.04 (Humble), Debian 12,
# Ubuntu 24.04 (Jazzy)
PYTHONS = {"3.10": "2_35", "3.11": "2_36", "3.12": "2_39"}
EXTRAS = ("ros", "cpu", "viz", "cuda", "test")
TORCH = "2.13.0"


def _online() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


ONLINE = _online()
needs_network = pytest.mark.skipif(not ONLINE, reason="PyPI is not reachable (offline): "
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


def _uv() -> str | None:
    try:
        from uv import find_uv_bin  # test extra; optional so that the module still imports
    except ImportError:
        return None
    return find_uv_bin()


def _raw_requirements(extras: tuple[str, ...]) -> list[str]:
    """install_requires plus `extras`, markers kept (uv evaluates them for the target)."""
    base, extra_reqs = _setup_requirements()
    return [*base, *(r for e in extras for r in extra_reqs[e])]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, tuple[int, str, dict[str, str]]]:
    """{python: (returncode, stderr, {name: version})}, the three resolved concurrently."""
    folder = tmp_path_factory.mktemp("uv")
    (folder / "req.in").write_text("\n".join(_raw_requirements(EXTRAS)) + "\n")
    procs = {}
    for python, glibc in PYTHONS.items():
        procs[python] = subprocess.Popen(
            [_uv(), "pip", "compile", str(folder / "req.in"), "-c", str(ROOT / "constraints.txt"),
             "--python-version", python, "--python-platform", f"x86_64-manylinux_{glibc}",
             "--only-binary", ":all:", "--no-binary", "empy",
             "--index-url", "https://pypi.org/simple", "--cache-dir", str(folder / "cache"),
             "--no-header", "--no-annotate", "-q", "-o", str(folder / f"{python}.txt")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("UV_")})
    out = {}
    for python, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        pins = {}
        if proc.returncode == 0:
            for line in (folder / f"{python}.txt").read_text().splitlines():
                if "==" in line and not line.startswith("#"):
                    name, version = line.split(";")[0].strip().split("==")
                    pins[canonicalize_name(name)] = version
        out[python] = (proc.returncode, err, pins)
    return out


def test_markers_pick_an_spconv_build_that_exists_for_each_python():
    # spconv-cu120 stops at cp311; Jazzy's Python 3.12 needs spconv-cu121
    for python, spconv in (("3.10", "spconv-cu120"), ("3.11", "spconv-cu120"),
                           ("3.12", "spconv-cu121")):
        reqs = requirements_for(python, ("cuda",))
        assert [r for r in reqs if r.startswith("spconv")] == [spconv], (python, reqs)
    assert "spconv" in requirements_for("3.12", ("cpu",))


@pytest.mark.slow
@needs_network
@pytest.mark.skipif(_uv() is None, reason="uv not installed (test extra): the resolution "
                    "check needs it")
@pytest.mark.parametrize("python", PYTHONS)
def test_every_extra_resolves_with_wheels_for_python(python, resolved):
    code, err, got = resolved[python]
    assert code == 0, f"Python {python}: {err[-4000:]}"
    assert got["torch"].split("+")[0] == TORCH, got["torch"]   # the constraints' pin holds
    for req in requirements_for(python, EXTRAS):               # markers evaluated by hand
        assert canonicalize_name(Requirement(req).name) in got, (python, req)
    assert {"ros-rclpy", "timm", "gsplat", "colcon-core", "empy"} <= set(got)
    # uv evaluated the spconv markers for the target, as our evaluation does
    cuda = "spconv-cu121" if python == "3.12" else "spconv-cu120"
    assert {n for n in got if n.startswith("spconv-")} == {cuda}, (python, sorted(got))


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
    # as the recipe runs it: an isolated build (setuptools + wheel from the index); offline,
    # the base Python's setuptools builds it (needs `wheel` there for setuptools < 70)
    isolation = [] if ONLINE else ["--no-build-isolation"]
    proc = subprocess.run([py, "-m", "pip", "install", "--dry-run", "--no-deps", *isolation,
                           "-q", str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "externally-managed" not in proc.stderr, proc.stderr
    from colcon_core.package_identification.ignore import IGNORE_MARKER  # test extra
    assert (env_dir / IGNORE_MARKER).is_file()
