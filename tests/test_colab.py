"""The Colab path: every chapter's install cell, and a simulated Colab run.

``test_install_cells_are_generated`` is fast: each chapter's first code cell
is what ``tools/install_cell.py`` writes from ``_config.yml`` and
``constraints.txt``.

``test_colab_simulation`` (marked ``colab``; about 3-4 minutes on a busy
2-core machine, most of it pip) builds what a fresh Colab runtime has: a new
virtual environment without this machine's packages, plus torch (the pinned
build) and IPython outside it, where Colab keeps its system packages (linked
from this environment: pip-installing torch again would take minutes). It
then runs the install cell itself, taken from a notebook, with a stand-in
``google.colab`` module importable and the git URL replaced by a copy of this
checkout, and checks that it kept torch, pinned transformers and brought no
book or test tools. Last, in that environment, it runs each chapter's cells
tagged ``colab-smoke`` (the imports, and the first cell that loads data or
builds a model where that cell is cheap) in one process with the test run's
lightkd cache, so nothing is fetched or trained again. Fashion-MNIST is
hidden from its usual Debian folder, as on Colab, so the loader goes through
its fallback, ``vldata.debian_package`` (which uses an installed copy when
there is one, else ``apt-get download`` into the cache, as on Colab).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if p.stem[:2].isdigit())
SMOKE_TAG = "colab-smoke"

sys.path.insert(0, str(ROOT / "tools"))
import install_cell  # noqa: E402


def first_code_cell(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return next(c for c in nb["cells"] if c["cell_type"] == "code")


def smoke_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "code" and SMOKE_TAG in c.get("metadata", {}).get("tags", [])]


def test_install_cells_are_generated():
    want = install_cell.cell_source()
    assert install_cell.repository_url() in want and f"transformers=={install_cell.pinned('transformers')}" in want
    assert "lightkd[colab]" in want and "torch" not in re.sub(r"#.*", "", want)  # Colab's own torch stays
    for path in CHAPTERS:
        assert "".join(first_code_cell(path)["source"]) == want, f"{path.name}: run python tools/install_cell.py"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "install_cell.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_chapter_has_smoke_cells():
    for path in CHAPTERS:
        cells = smoke_cells(path)
        assert cells and "from lightkd import" in cells[0], f"{path.name}: tag its imports cell (and a cheap data cell)"


def test_fashion_mnist_falls_back_to_debian_package(monkeypatch, tmp_path):
    """Colab has no /usr/share/datasets/fashion-mnist: the loader unpacks Debian's package
    into the cache (vldata.debian_package), and says what to do when that fails too."""
    from lightkd import data, vldata
    from lightkd.common import SourceMissing
    monkeypatch.delenv("LIGHTKD_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    asked = []

    def unavailable(name, wanted):
        asked.append((name, wanted))
        raise SourceMissing("no apt-get here")
    monkeypatch.setattr(vldata, "debian_package", unavailable)
    with pytest.raises(SourceMissing, match="apt-get install dataset-fashion-mnist"):
        data.load_images("fashion_mnist")
    assert asked == [("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")]
    root = tmp_path / "unpacked"
    folder = root / "usr/share/datasets/fashion-mnist"
    folder.mkdir(parents=True)
    import gzip
    for stem, n in (("train", 6000), ("t10k", 10)):  # tiny IDX files: 6000 train images (dev takes 5000)
        with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes(n * 784))
        with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n)))
    monkeypatch.setattr(vldata, "debian_package", lambda name, wanted: root)
    fm = data.load_images("fashion_mnist")
    assert (len(fm.train), len(fm.dev), len(fm.test)) == (1000, 5000, 10)


def _checkout_copy(dest: Path) -> Path:
    """What pip needs to build lightkd from a git checkout, without .venv and the notebooks."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "lightkd", dest / "lightkd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def link_distributions(names, target: Path) -> list[str]:
    """Symlink the installed distributions ``names``, and every distribution they
    require, from this environment into ``target``; returns their names."""
    from importlib import metadata
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    seen, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            src, dst = Path(dist.locate_file(top)), target / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen)


def _run(cmd, *, env=None, timeout=600, cwd=None):
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{cmd[:4]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


SMOKE_DRIVER = textwrap.dedent('''\
    import json, sys, time, traceback
    from pathlib import Path
    import matplotlib
    matplotlib.use("Agg")
    import lightkd.data
    # Colab has no /usr/share/datasets/fashion-mnist: hide it, so the loader's fallback runs.
    lightkd.data.FASHION_MNIST_DIR = Path("/nonexistent/fashion-mnist")
    chapters = json.loads(Path(sys.argv[1]).read_text())
    failed = {}
    for name, cells in chapters.items():
        start = time.perf_counter()
        try:
            exec(compile("\\n\\n".join(cells), name, "exec"), {"__name__": "__main__"})
        except BaseException:
            failed[name] = traceback.format_exc(limit=6)
        print(f"SMOKE {name} {'FAILED' if name in failed else 'ok'} {time.perf_counter() - start:.1f}s", flush=True)
    for name, tb in failed.items():
        print(f"===== {name}\\n{tb}", file=sys.stderr)
    sys.exit(1 if failed else 0)
''')


@pytest.mark.colab
def test_colab_simulation(tmp_path):
    start = time.perf_counter()
    venv = tmp_path / "colab-venv"
    _run([sys.executable, "-m", "venv", str(venv)])  # no --system-site-packages: only what Colab would have
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # What a Colab runtime already has, outside the environment as Colab's system packages are:
    # torch and IPython (its kernel). Linked from this environment (pip-installing the pinned CPU
    # torch into a fresh venv takes minutes on a busy 2-core machine); pip sees them as installed.
    system = tmp_path / "colab-system"
    system.mkdir()
    linked = link_distributions(["torch", "ipython"], system)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env).stdout.strip())
    (site / "colab-system.pth").write_text(f"{system}\n")
    colab_ready = time.perf_counter() - start

    # The install cell itself, from a notebook, with google.colab importable and the repository local.
    code = "".join(first_code_cell(CHAPTERS[0])["source"])
    url = install_cell.repository_url()
    checkout = _checkout_copy(tmp_path / "checkout")
    assert f"git+{url}" in code
    code = code.replace(f"git+{url}", checkout.as_uri())
    assert '"-q",' in code
    code = code.replace('"-q",', '"-q", "--no-compile",', 1)  # here only: saves a minute of CPU
    fake = tmp_path / "fake-colab" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text('"""Stand-in for Colab\'s module: its presence is what the cell checks."""\n')
    cell = tmp_path / "install_cell.py"
    cell.write_text("import google.colab\n" + code + "\n")
    _run([python, str(cell)], env={**env, "PYTHONPATH": str(fake.parent.parent)}, timeout=900)
    installed = time.perf_counter() - start

    versions = _run([python, "-c", "import torch, transformers, lightkd, onnxruntime, datasets, ipywidgets; "
                     "print(torch.__version__, transformers.__version__, lightkd.__file__)"],
                    env=env, cwd=tmp_path).stdout.split()
    assert versions[0].startswith(install_cell.pinned("torch")), f"the install cell replaced torch: {versions}"
    assert versions[1] == install_cell.pinned("transformers")
    assert "site-packages" in versions[2], "lightkd must come from the installed package, not the checkout"
    for banned in ("jupyter_book", "pytest", "jupyterlab"):  # the lean extra: no book toolchain, no test tools
        assert subprocess.run([python, "-c", f"import {banned}"], capture_output=True, cwd=tmp_path).returncode, banned

    # Each chapter's smoke cells, in one process (imports are paid once), with the test run's cache.
    chapters = {p.stem: smoke_cells(p) for p in CHAPTERS}
    spec = tmp_path / "chapters.json"
    spec.write_text(json.dumps(chapters))
    driver = tmp_path / "smoke.py"
    driver.write_text(SMOKE_DRIVER)
    from lightkd.common import cache_dir
    run_env = {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "LIGHTKD_PROGRESS": "0",
               "LIGHTKD_CACHE": str(cache_dir()), "LIGHTKD_RESULTS": str(tmp_path / "results"),
               "MPLBACKEND": "Agg"}
    run_env.pop("LIGHTKD_FASHION_MNIST_DIR", None)
    work = tmp_path / "work"  # not the checkout: results and stray files stay in tmp
    work.mkdir()
    done = subprocess.run([python, str(driver), str(spec)], capture_output=True, text=True, env=run_env,
                          timeout=900, cwd=work)
    report = "\n".join(line for line in done.stdout.splitlines() if line.startswith("SMOKE"))
    print(f"preinstalled: {', '.join(linked)}")
    print(f"fresh venv + torch {colab_ready:.0f}s, install cell {installed - colab_ready:.0f}s, "
          f"smoke cells {time.perf_counter() - start - installed:.0f}s\n{report}")
    assert done.returncode == 0, f"{report}\n{done.stderr[-6000:]}"
    assert report.count(" ok ") == len(CHAPTERS), report
