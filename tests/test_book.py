"""The book as a whole: it builds with -W, its pages need no CDN, every chapter
is in the table of contents and wrote its results, and the set-up files agree."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Render the book from the outputs stored in the notebooks (the README's
    book command executes them; nbval executes them in this test run)."""
    out = tmp_path_factory.mktemp("book")
    subprocess.run(["bash", str(ROOT / "tools" / "vendor_js.sh")], check=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config_path = out / "_config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))  # key order = script order
    jb = Path(sys.executable).parent / "jupyter-book"
    done = subprocess.run([str(jb), "build", "-W", "-n", "--keep-going", "--config", str(config_path),
                           "--path-output", str(out), str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, "book build failed:\n" + done.stdout[-4000:] + done.stderr[-4000:]
    return out / "_build" / "html"


def test_book_builds_without_warnings(built_book):
    assert (built_book / "index.html").exists()
    for nb in NOTEBOOKS:
        assert (built_book / "notebooks" / f"{nb.stem}.html").exists(), f"{nb.stem} was not rendered"


def test_pages_need_no_cdn(built_book):
    page = (built_book / "notebooks" / "01_teacher.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page
    assert "_static/html-manager/require-embed-amd.js" in page
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    remote = [s for s in scripts if s.startswith("http") or s.startswith("//")]
    assert not remote, f"pages load scripts from the network: {remote}"
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists()
    bundle = (built_book / "_static" / "html-manager" / "require-embed-amd.js").read_text()
    assert bundle.index("RequireJS") < bundle.index("@jupyter-widgets"), "RequireJS must come first"


def test_chapters_have_colab_buttons_and_citations(built_book):
    page = (built_book / "notebooks" / "01_teacher.html").read_text()
    assert "colab.research.google.com/github/lightkd/lightweight-transformers/blob/main/notebooks/01_teacher.ipynb" in page
    refs = (built_book / "book" / "references.html").read_text().lower()
    for key_text in ("Q8BERT", "DistilBERT", "TinyBERT", "MobileBERT", "ALBERT", "TinyViT", "MiniViT",
                     "DynamicViT", "MiniVLM", "Compressing Visual-linguistic Model via Knowledge Distillation"):
        assert key_text.lower() in refs, f"{key_text} missing from the references page"


def test_every_notebook_is_in_the_toc_and_ran_clean():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in toc, f"{nb.name} is not in _toc.yml"
        cells = json.loads(nb.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert "google.colab" in "".join(code[0]["source"]), f"{nb.name}: first code cell must set up Colab"
        assert all(c.get("execution_count") for c in code), f"{nb.name} is saved with unexecuted cells"
        assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"], \
            f"{nb.name} is saved with an error output"


def test_results_follow_the_schema():
    for nb in NOTEBOOKS:
        path = ROOT / "results" / f"{nb.stem}.json"
        assert path.exists(), f"{nb.stem} has no results file"
        saved = json.loads(path.read_text())
        assert saved["chapter"] == nb.stem
        assert {"torch", "cpu", "threads"} <= set(saved["environment"])
        assert saved["runtime_s"] > 0
        for name, metric in saved["metrics"].items():
            assert name == name.lower() and "value" in metric, f"{path.name}: {name}"


# ------------------------------------------------------------ the published pages are current
def test_every_chapter_is_migrated_or_listed():
    """A chapter's pipeline lives in its recipe (MODULES) or the chapter is listed, in one place, as not yet
    migrated; the list empties as the book-scale work moves chapters to their recipes."""
    from lightkd.recipes import MODULES, NOT_MIGRATED
    stems = {nb.stem for nb in NOTEBOOKS}
    assert set(MODULES) | set(NOT_MIGRATED) == stems and not set(MODULES) & set(NOT_MIGRATED)
    for chapter, module in MODULES.items():
        assert module.CHAPTER == chapter


@pytest.mark.parametrize("chapter", sorted(__import__("lightkd.recipes", fromlist=["MODULES"]).MODULES))
def test_published_chapter_is_book_scale_and_current(chapter):
    """The stored page and its results were produced at book scale by the code that is committed: the
    results file's digest of the notebook's code cells and the recipe module equals today's. Edit a code
    cell or the recipe and this fails until the chapter is executed again (tools/book.sh CHAPTER)."""
    from lightkd.recipes import chapter_digest
    saved = json.loads((ROOT / "results" / f"{chapter}.json").read_text())
    assert saved.get("scale") == "book", f"results/{chapter}.json was written at scale {saved.get('scale')!r}"
    assert saved.get("code_digest") == chapter_digest(chapter, ROOT), \
        f"{chapter}'s stored page and results come from other code than what is committed; execute it again"
    shown = [o for c in json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())["cells"]
             for o in c.get("outputs", []) if "ran at **" in "".join(o.get("data", {}).get("text/markdown", ""))]
    assert shown and "ran at **book** scale" in "".join(shown[0]["data"]["text/markdown"]), \
        f"{chapter}'s page must say the scale it ran at, and it must be book"


def test_the_staleness_test_sees_an_edited_code_cell(tmp_path):
    """The digest changes with a code cell or the recipe, not with prose."""
    from lightkd.recipes import MODULES, chapter_digest
    chapter = sorted(MODULES)[0]
    (tmp_path / "notebooks").mkdir()
    nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    write = lambda: (tmp_path / "notebooks" / f"{chapter}.ipynb").write_text(json.dumps(nb))
    write()
    base = chapter_digest(chapter, tmp_path)
    assert base == chapter_digest(chapter, ROOT)
    prose = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    prose["source"] = "".join(prose["source"]) + "\nA new sentence."
    write()
    assert chapter_digest(chapter, tmp_path) == base, "prose does not change the numbers"
    cell = next(c for c in nb["cells"][3:] if c["cell_type"] == "code")
    cell["source"] = "".join(cell["source"]) + "\nx = 1"
    write()
    assert chapter_digest(chapter, tmp_path) != base, "an edited code cell must make the stored page stale"


def test_setup_files_agree():
    """environment.yml installs what the README's commands install."""
    readme = (ROOT / "README.md").read_text()
    assert "bash tools/book.sh" in readme and "bash tools/test.sh" in readme
    assert "tools/test.sh" in (ROOT / ".ci" / "run").read_text()
    setup = (ROOT / "tools" / "setup_env.sh").read_text()
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', setup).group(1)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert f"-e .[{extras}]" in pip
    pins = [l.strip() for l in (ROOT / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    for pin in pins:
        assert pin in pip, f"environment.yml lacks {pin} from constraints.txt"
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in extras.split(","):
        assert f"\n{extra} = [" in pyproject
    assert re.search(r'"torch>=[0-9.]+,<', pyproject), "pyproject keeps torch as a range"


def test_both_commands_run_chapters_on_one_thread():
    """The book command and the test command train on the thread count the
    published results were made with; another count changes their last digits."""
    for command in ("book.sh", "test.sh"):
        text = (ROOT / "tools" / command).read_text()
        assert re.search(r"^export .*\bOMP_NUM_THREADS=1\b", text, re.M), f"{command} does not pin one thread"
    book = (ROOT / "tools" / "book.sh").read_text()
    assert "python tools/build_chapters.py" in book, "the book command executes the chapters with the driver"
    driver = load_driver()
    assert driver.CHILD_ENV["OMP_NUM_THREADS"] == "1", "the driver must run every chapter on one thread"
    assert "run_notebook.py" in (ROOT / "tools" / "build_chapters.py").read_text()
    order = [nb.stem for nb in driver.select([])]
    assert order[-1] == "scoreboard" and order[:-1] == [nb.stem for nb in NOTEBOOKS], \
        "every chapter runs, then the scoreboard after the chapters"
    assert '"off"' in book, "the book command renders what it executed; jupyter-book must not execute again"


def load_driver():
    """tools/build_chapters.py, the book command's driver, as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_chapters", ROOT / "tools" / "build_chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_book_driver_names_a_failed_chapter_and_runs_the_rest(tmp_path):
    """A failing chapter is named and fails the command once the other chapters have run, each on one thread."""
    import nbformat
    sources = {"a_fails": "raise ValueError('this chapter fails')",
               "b_passes": "import os\nassert os.environ['OMP_NUM_THREADS'] == '1'\nprint('ran')"}
    for name, code in sources.items():
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), tmp_path / f"{name}.ipynb")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_chapters.py"), "--out-dir", str(out),
                           "--jobs", "1", *(str(tmp_path / f"{name}.ipynb") for name in sources)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "4"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "a_fails: FAILED" in done.stdout and "this chapter fails" in done.stdout
    assert "b_passes: done in" in done.stdout and "FAILED: a_fails (1 of 2" in done.stdout
    assert "without encryption" not in done.stdout + done.stderr, "the kernel's TCP warning is back"
    passed = nbformat.read(out / "b_passes.ipynb", as_version=4)
    assert passed.cells[0].outputs[0]["text"] == "ran\n"


CHAPTER_ENDING = ["Exercises", "Paper vs. measured", "The claim ledger", "Scaling up"]
METRIC_KEY = re.compile(r"^(?=[^.]*[a-z])[a-z0-9_]+(\.[a-z0-9_]+)+$")  # e.g. student.kd.accuracy


def test_chapters_end_alike_and_show_no_metric_keys():
    """Every chapter ends with the same four sections, the ledger last before the
    recipes; no table a reader sees labels its rows with raw metric names."""
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        heads = [h.strip() for c in cells if c["cell_type"] == "markdown"
                 for h in re.findall(r"^## (.+)$", "".join(c["source"]), re.M)]
        assert heads[-4:] == CHAPTER_ENDING, f"{nb.name} ends with {heads[-4:]}"
        text = ["".join(c["source"]) for c in cells]
        start = next(i for i, t in enumerate(text) if re.search(r"^## Exercises", t, re.M))
        end = next(i for i, t in enumerate(text) if re.search(r"^## Paper vs\. measured", t, re.M))
        assert any("redict" in t for t in text[start:end + 1]), f"{nb.name}: no exercise asks for a prediction first"
        for c in cells:
            if c["cell_type"] != "code" or {"remove-output", "remove-cell"} & set(c.get("metadata", {}).get("tags", [])):
                continue
            for out in c.get("outputs", []):
                html = "".join(out.get("data", {}).get("text/html", ""))
                keys = [k for k in re.findall(r"<th>([^<]*)</th>", html) if METRIC_KEY.match(k.strip())]
                assert not keys, f"{nb.name}: a table shows metric names as labels: {keys[:3]}"
                shown = "".join(out.get("data", {}).get("text/plain", "")).strip()
                assert not (out["output_type"] == "execute_result" and shown in ("True", "False")), \
                    f"{nb.name}: a stray {shown} under: {''.join(c['source'])[:60]!r}"


def test_the_intro_quotes_bert_base_as_lightkd_counts_it():
    """The intro's opening figures (parameters, GFLOPs per 128-token sentence) are counted, not remembered."""
    from lightkd import bench, zoo
    intro = (ROOT / "book" / "intro.md").read_text()
    params, gflops = (int(m) for m in re.search(r"BERT-base has (\d+) million parameters and needs about\s+(\d+) GFLOPs "
                                               r"per 128-token sentence", intro).groups())
    bert_base = zoo.random_model("bert_base")  # the encoder without a task head, as the paper counts it
    assert round(bench.count_params(bert_base) / 1e6, -1) == params
    assert round(bench.flops(bert_base, seq_len=128) / 1e9) == gflops
