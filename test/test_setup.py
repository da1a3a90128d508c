"""setup.py: one package, ``fit3d_ros``, however it is installed.

The top-level ``models/``, ``training/`` and ``kernels/`` folders reach the package through
relative symlinks committed in git (``fit3d_ros/models -> ../models`` ...), and setup.py
has no ``package_dir`` mapping. These tests build the package the four ways it is
installed -- ``colcon build``, ``colcon build --symlink-install``, a wheel
(``pip install .``) and the editable install of this venv (``pip install -e .``) -- and
import it from outside the repository, checking every time that the modules come from
what was built and that no bare ``models`` / ``training`` / ``kernels`` is installed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fit3d_ros"
LINKED = ("models", "training", "kernels")
TIMEOUT = 300

# Imports the package and prints where its parts came from (run in a fresh interpreter).
PROBE = """
import importlib.util, json, sys
import fit3d_ros, fit3d_ros.models, fit3d_ros.training, fit3d_ros.kernels
from importlib.resources import files
print(json.dumps({
    "fit3d_ros": fit3d_ros.__file__,
    "models": fit3d_ros.models.__file__,
    "training": fit3d_ros.training.__file__,
    "kernels": fit3d_ros.kernels.__file__,
    "csrc": sorted(p.name for p in files("fit3d_ros.kernels").joinpath("csrc").iterdir()),
    "subpackages": {n: getattr(importlib.util.find_spec(n), "origin", None)
                    for n in sys.argv[1:]},
    "bare": [n for n in ("models", "training", "kernels") if importlib.util.find_spec(n)],
    "probes": {n: getattr(sys.modules["fit3d_ros." + n], "SETUP_TEST_PROBE", None)
               for n in ("models", "kernels")},
}))
"""

# Appended to the workspace copy's fit3d_ros/__init__.py: tells which copy a script imported.
MARKER = ('\nif __import__("os").environ.get("FIT3D_ROS_SETUP_TEST"):\n'
          '    print("fit3d_ros imported from", __file__, file=__import__("sys").stderr)\n')

needs_colcon = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("colcon_core", "colcon_ros")),
    reason="colcon-core / colcon-ros are not installed (the `test` extra brings them)")


def _env(**extra: str) -> dict[str, str]:
    """The environment without anything that could point imports or colcon elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "AMENT_PREFIX_PATH",
                        "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "COLCON_CURRENT_PREFIX",
                        "COLCON_HOME", "COLCON_DEFAULTS_FILE", "PYTHONSAFEPATH")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", _env())
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
        f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def _repo_files() -> list[str] | None:
    """The files git tracks, plus untracked ones it does not ignore (None: no git)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted({n for n in out.decode().split("\0") if n})


def _copy_repo(dest: Path) -> Path:
    """Copies the repository as a clone would have it (symlinks stay symlinks)."""
    names = _repo_files()
    if names is None:
        shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "install", "log", "__pycache__", "*.egg-info"))
        return dest
    for name in names:
        src, dst = ROOT / name, dest / name
        if not os.path.lexists(src):      # deleted in the work tree, not yet in the index
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst)
    return dest


def _package_files(src: Path) -> set[str]:
    """What an install of the copy `src` must hold under fit3d_ros/: every module of every
    package (through the symlinks) and the C++ sources of the kernels."""
    found = set()
    for folder, dirs, names in os.walk(src / PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = Path(folder).relative_to(src)
        for name in names:
            if name.endswith(".py") or (rel.parts[-2:] == ("kernels", "csrc")
                                        and name.endswith((".cpp", ".h"))):
                found.add((rel / name).as_posix())
    return found


def _subpackages(src: Path) -> list[str]:
    """Dotted names of the sub-packages of the linked folders (e.g. fit3d_ros.training.ditr)."""
    names = []
    for top in LINKED:
        for init in sorted((src / top).rglob("__init__.py")):
            parts = init.parent.relative_to(src).parts
            if len(parts) > 1 and "__pycache__" not in parts:
                names.append(".".join((PACKAGE,) + parts))
    return names


def _probe(python_cmd: list[str], src: Path, cwd: Path, **env: str) -> dict:
    proc = _ok(_run([*python_cmd, "-c", PROBE, *_subpackages(src)], cwd=cwd, env=_env(**env)))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _under(path: str | Path, base: Path) -> bool:
    return Path(path).is_relative_to(base)


def _assert_imports_from(found: dict, base: Path, src: Path) -> None:
    for key in ("fit3d_ros", "models", "training", "kernels"):
        assert _under(found[key], base), (key, found[key], base)
        assert not _under(Path(found[key]).resolve(), ROOT), (key, found[key])
    assert found["bare"] == [], f"top-level names importable: {found['bare']}"
    assert {"raster_cpu.cpp", "tiles.h"} <= set(found["csrc"]), found["csrc"]
    for name, origin in found["subpackages"].items():
        assert origin and _under(origin, base), (name, origin)
    assert sorted(found["subpackages"]) == _subpackages(src)


# -- colcon --------------------------------------------------------------------------------

def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path.resolve() / "ws"      # resolved: compared below with resolved links
    src = _copy_repo(ws / "src" / PACKAGE)
    for top in LINKED:
        link = src / PACKAGE / top
        assert link.is_symlink() and link.resolve() == (src / top).resolve(), link
    with open(src / PACKAGE / "__init__.py", "a") as f:
        f.write(MARKER)
    return ws, src


def _colcon_build(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return _ok(_run([sys.executable, "-m", "colcon", "--log-base", ws / "log", "build",
                     "--base-paths", ws / "src", "--executor", "sequential", *args],
                    cwd=ws, env=_env(COLCON_HOME=str(ws / ".colcon"))))


def _site_packages(ws: Path) -> Path:
    from colcon_core.python_install_path import get_python_install_path
    return Path(get_python_install_path("purelib", {"base": str(ws / "install" / PACKAGE)}))


def _sourced(*cmd) -> list:
    """`cmd` run after `. $FIT3D_ROS_WS/install/setup.sh` (what `source` gives a user)."""
    return ["sh", "-c", '. "$FIT3D_ROS_WS/install/setup.sh" && exec "$@"', "sh", *cmd]


def _check_workspace(ws: Path, src: Path, tmp_path: Path, base: Path) -> dict:
    """Checks the install space of a built workspace; `base`: where modules must load from."""
    install = ws / "install" / PACKAGE
    share = install / "share" / PACKAGE
    assert (install / "share/ament_index/resource_index/packages" / PACKAGE).is_file()
    assert (share / "package.xml").read_text() == (src / "package.xml").read_text()
    for folder, pattern in (("launch", "*.py"), ("config", "*.yaml")):
        wanted = sorted(p.name for p in (src / folder).glob(pattern))
        assert wanted and sorted(p.name for p in (share / folder).iterdir()) == wanted, folder
    for name in ("fit3d-ros", "feature_node", "segmentation_node", "perception", "player"):
        assert os.access(install / "lib" / PACKAGE / name, os.X_OK), name
        # colcon ties the shebang to the Python that ran it (README: the robot venv's)
        with open(install / "lib" / PACKAGE / name) as f:
            assert f.readline().strip() == f"#!{sys.executable}", name

    env = {"FIT3D_ROS_WS": str(ws), "FIT3D_ROS_SETUP_TEST": "1"}
    env_proc = _ok(_run(_sourced("env"), cwd=tmp_path, env=_env(**env)))
    pythonpath = next(line.split("=", 1)[1] for line in env_proc.stdout.splitlines()
                      if line.startswith("PYTHONPATH="))
    assert str(_site_packages(ws)) in pythonpath.split(os.pathsep), pythonpath

    found = _probe(_sourced(sys.executable), src, tmp_path, **env)
    _assert_imports_from(found, base, src)

    cli = _ok(_run(_sourced(install / "lib" / PACKAGE / "fit3d-ros", "--help"),
                   cwd=tmp_path, env=_env(**env)))
    assert "usage: fit3d-ros" in cli.stdout
    assert f"fit3d_ros imported from {base}" in cli.stderr, cli.stderr
    return found


@pytest.mark.slow
@needs_colcon
def test_colcon_build_installs_the_linked_folders_inside_fit3d_ros(tmp_path):
    ws, src = _workspace(tmp_path)
    _colcon_build(ws)
    site = _site_packages(ws)
    # one package, copied (no links back into the sources), with every module once
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".egg-info")) \
        == [PACKAGE], sorted(site.iterdir())
    (egg,) = site.glob("*.egg-info")
    assert (egg / "top_level.txt").read_text().split() == [PACKAGE]
    installed = site / PACKAGE
    assert not any(p.is_symlink() for p in [installed, *installed.rglob("*")])
    got = {p.relative_to(site).as_posix() for p in installed.rglob("*")
           if p.is_file() and "__pycache__" not in p.parts}
    assert got == _package_files(src)

    found = _check_workspace(ws, src, tmp_path, base=site)
    assert Path(found["models"]) == installed / "models" / "__init__.py"


@pytest.mark.slow
@needs_colcon
def test_colcon_symlink_install_sees_source_edits_without_rebuilding(tmp_path):
    ws, src = _workspace(tmp_path)
    _colcon_build(ws, "--symlink-install")
    build = ws / "build" / PACKAGE
    assert (build / PACKAGE).is_symlink() and (build / PACKAGE).resolve() == src / PACKAGE
    assert not any((build / top).exists() for top in LINKED), "bare package linked in build/"
    site = _site_packages(ws)
    assert not (site / PACKAGE).exists(), "symlink-install copied the package"
    share = ws / "install" / PACKAGE / "share" / PACKAGE
    assert (share / "package.xml").resolve() == src / "package.xml"

    found = _check_workspace(ws, src, tmp_path, base=ws)
    for key in LINKED:      # through build/fit3d_ros -> src/fit3d_ros -> ../<key>
        assert Path(found[key]).resolve() == src / key / "__init__.py", found[key]
    assert found["probes"] == {"models": None, "kernels": None}

    for key in ("models", "kernels"):
        with open(src / key / "__init__.py", "a") as f:
            f.write(f"\nSETUP_TEST_PROBE = {key!r}\n")
    env = {"FIT3D_ROS_WS": str(ws)}
    found = _probe(_sourced(sys.executable), src, tmp_path, **env)
    assert found["probes"] == {"models": "models", "kernels": "kernels"}

    _colcon_build(ws, "--symlink-install")      # a rebuild over the first one works too
    assert _probe(_sourced(sys.executable), src, tmp_path, **env)["probes"]["models"] \
        == "models"


# -- pip -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_wheel_holds_the_linked_folders_only_under_fit3d_ros(tmp_path):
    tmp_path = tmp_path.resolve()
    src = _copy_repo(tmp_path / "src")
    dist = tmp_path / "dist"
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
              "-w", dist, src], cwd=tmp_path))
    (whl,) = dist.glob(f"{PACKAGE}-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert len(names) == len(set(names)), "a file is in the wheel twice"
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.startswith(f"{PACKAGE}-")} == {PACKAGE}, tops
    assert {n for n in names if n.startswith(f"{PACKAGE}/")} == _package_files(src)
    for key in LINKED:
        assert f"{PACKAGE}/{key}/__init__.py" in names
    assert f"{PACKAGE}/kernels/csrc/raster_cpu.cpp" in names

    site = tmp_path / "site"
    _ok(_run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site,
              whl], cwd=tmp_path))
    assert not any(p.is_symlink() for p in (site / PACKAGE).rglob("*"))
    found = _probe([sys.executable], src, tmp_path, PYTHONPATH=str(site))
    _assert_imports_from(found, site, src)


@pytest.mark.slow
def test_editable_install_resolves_into_this_checkout(tmp_path):
    # asked outside the checkout: in it, the fit3d_ros.egg-info that setuptools leaves there
    # would answer instead of the venv's dist-info
    code = ("import importlib.metadata as m; "
            "print(m.distribution('fit3d_ros').read_text('direct_url.json') or '{}')")
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)
    if proc.returncode:
        pytest.skip(f"fit3d_ros is not installed in this interpreter: {proc.stderr[-300:]}")
    direct = json.loads(proc.stdout.strip().splitlines()[-1])
    if not direct.get("dir_info", {}).get("editable"):
        pytest.skip("fit3d_ros is not editable-installed in this interpreter")
    if Path(direct["url"].removeprefix("file://")).resolve() != ROOT:
        pytest.skip(f"the editable install points at {direct['url']}, not {ROOT}")
    found = _probe([sys.executable], ROOT, tmp_path)
    assert found["bare"] == [], f"top-level names importable: {found['bare']}"
    for key in LINKED:
        assert Path(found[key]) == ROOT / PACKAGE / key / "__init__.py", found[key]
        assert Path(found[key]).resolve() == ROOT / key / "__init__.py"
    for name, origin in found["subpackages"].items():
        assert origin and Path(origin).resolve().is_relative_to(ROOT), (name, origin)
    assert {"raster_cpu.cpp", "tiles.h"} <= set(found["csrc"])


def test_setup_py_finds_every_package_through_the_symlinks(tmp_path):
    for key in LINKED:
        link = ROOT / PACKAGE / key
        assert link.is_symlink() and os.readlink(link) == f"../{key}", link
    code = ("import json, setuptools; from distutils.core import run_setup; "
            "d = run_setup('setup.py', stop_after='init'); "
            "print(json.dumps({'packages': d.packages, 'package_dir': d.package_dir or {}, "
            "'package_data': d.package_data}))")
    info = json.loads(_ok(_run([sys.executable, "-c", code], cwd=ROOT)).stdout.splitlines()[-1])
    assert info["package_dir"] == {}, "colcon --symlink-install rejects a package_dir mapping"
    packages = set(info["packages"])
    assert {f"{PACKAGE}.{key}" for key in LINKED} | set(_subpackages(ROOT)) <= packages
    assert all(p == PACKAGE or p.startswith(f"{PACKAGE}.") for p in packages), packages
    assert info["package_data"][f"{PACKAGE}.kernels"] == ["csrc/*.cpp", "csrc/*.h"]
