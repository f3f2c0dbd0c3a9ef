"""The package installs whole: a wheel built from this checkout holds every
module of lightkd, and installed from that wheel (not editable, as pip
installs it in Colab) it imports and runs a recipe from a folder outside the
checkout. Every other test runs on the editable install, which reads the
checkout and so never notices a subpackage missing from the wheel.

The fresh environment is a virtual environment without pip or system site
packages; a .pth line adds this environment's site-packages after it for the
dependencies (torch, transformers, ...). A bare path line in a .pth file adds
the folder without processing the .pth files in it, so the editable install's
finder, which points at the checkout, never loads there; the test asserts that
lightkd is imported from the wheel's install location. About 30 s on a busy
2-core machine, most of it the tiny teacher recipe."""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(python, site-packages, wheel): a fresh environment with lightkd installed from a wheel of this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so the build leaves no build/ or egg-info folder in the checkout.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for licence in ROOT.glob("LICEN[CS]E*"):
        shutil.copy(licence, src / licence.name)
    shutil.copytree(ROOT / "lightkd", src / "lightkd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    # Offline with this environment's setuptools when it is new enough for pyproject.toml (a Python 3.11 venv
    # starts with 65); else pip fetches the build requirements from PyPI into an isolated build environment.
    offline = ["--no-build-isolation", "--no-index"] if setuptools_version() >= (77,) else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *offline, "-w", str(dist), str(src)],
                   check=True, timeout=300)
    wheel, = dist.glob("lightkd-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # --target installs into a folder as pip would into a fresh environment, ignoring what this one has installed.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site, wheel


def setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


def run_installed(python, args, cwd, timeout=300):
    """Run the fresh environment's python isolated (-I: no PYTHONPATH, no user site, no working folder on sys.path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", LIGHTKD_PROGRESS="0")  # LIGHTKD_CACHE: the test run's
    done = subprocess.run([str(python), "-I", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_holds_every_module_of_the_source_tree(wheel_env):
    _, _, wheel = wheel_env
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("lightkd/") and n.endswith(".py")}
    in_source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lightkd").rglob("*.py") if "__pycache__" not in p.parts}
    assert "lightkd/recipes/__init__.py" in in_source
    assert not in_source - in_wheel, f"the wheel lacks {sorted(in_source - in_wheel)}"
    assert not in_wheel - in_source, f"the wheel holds files the checkout lacks: {sorted(in_wheel - in_source)}"


def test_installed_wheel_imports_from_its_install_location(wheel_env, tmp_path):
    python, site, _ = wheel_env
    packages = sorted({p.parent.relative_to(ROOT).as_posix().replace("/", ".")
                       for p in (ROOT / "lightkd").rglob("__init__.py")})
    code = ("import importlib, sys\n"
            f"for name in {packages!r}:\n"
            "    print(name, importlib.import_module(name).__file__)\n")
    files = dict(line.split(" ", 1) for line in run_installed(python, ["-c", code], cwd=tmp_path).splitlines())
    assert set(files) == set(packages)
    for name, file in files.items():
        assert Path(file).resolve().is_relative_to(site.resolve()), f"{name} came from {file}, not from the wheel"


def test_installed_wheel_runs_a_recipe_outside_the_checkout(wheel_env, tmp_path):
    python, _, _ = wheel_env
    listed = run_installed(python, ["-m", "lightkd.recipes", "list"], cwd=tmp_path)
    assert "teacher" in listed.split()
    # The recipes' smoke size is --scale tiny where the CLI has it, --tiny before that.
    usage = run_installed(python, ["-m", "lightkd.recipes", "--help"], cwd=tmp_path)
    smoke = ["--scale", "tiny"] if "--scale" in usage else ["--tiny"]
    out = tmp_path / "out"
    run_installed(python, ["-m", "lightkd.recipes", "teacher", *smoke, "--out", str(out)], cwd=tmp_path)
    assert list(out.glob("*.json")), f"the teacher recipe wrote no results file into {out}"
