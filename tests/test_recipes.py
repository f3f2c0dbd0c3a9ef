"""The chapters' runnable recipes (``python -m lightkd.recipes``): every one runs
its tiny configuration and writes its results file; all of them run in one
``accelerate launch`` over two CPU processes, rank 0 alone writing; a mistake
on the command line is one message and exit status 2."""
import json
import re
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lightkd.common import LightKDError
from lightkd.recipes import RECIPES
from lightkd.recipes.__main__ import main, parse_set

# What each text recipe must record beyond the common schema (the vision recipes: the schema).
EXPECTED = {
    "teacher": ["models.teacher.accuracy", "teacher.accuracy"],
    "quantize": ["models.quantize_int8.accuracy", "models.quantize_onnx.accuracy", "int8_dynamic.size_ratio"],
    "prune": ["models.prune_gradual.accuracy", "models.prune_heads.accuracy", "gradual.sparsity"],
    "distilbert": ["models.ch04_distilbert_student.accuracy", "student.retained", "student.params_ratio",
                   "claims.distilbert_keeps_97.verdict", "claims.distilbert_keeps_97.mde"],
    "tinybert": ["models.tinybert_student.accuracy", "student.retained"],
    "mobilebert": ["models.mobilebert_student.accuracy", "student.encoder_params_ratio"],
    "compound": ["models.compound_onnx_int8.accuracy", "models.compound_trimmed.accuracy", "compound.size_ratio"],
}


def subprocess_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "LIGHTKD_PROGRESS": "0", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def check_results(payload: dict, name: str) -> None:
    recipe = RECIPES[name]
    assert payload["chapter"] == recipe.chapter
    assert {"environment", "runtime_s", "metrics"} <= set(payload)
    metrics = payload["metrics"]
    accuracies = [v["value"] for k, v in metrics.items() if k.startswith("models.") and k.endswith(".accuracy")]
    assert accuracies and all(0 <= a <= 1 for a in accuracies), f"{name} records no model accuracy"
    missing = [k for k in EXPECTED.get(name, []) if k not in metrics]
    assert not missing, f"{name} did not record {missing}"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_runs_tiny_and_writes_its_results(name, tmp_path):
    results = RECIPES[name](tiny=True, out=tmp_path)
    path = tmp_path / f"{name}.json"
    assert path.exists(), f"{name} wrote {sorted(p.name for p in tmp_path.iterdir())}, not {path.name}"
    assert json.loads(path.read_text()) == results
    check_results(results, name)


def test_every_recipe_has_its_scales_with_the_same_options():
    """Every recipe has a tiny and a paper scale; a chapter migrated to its recipe has a book scale too;
    every scale of a recipe takes the same options."""
    from lightkd.recipes import MODULES
    from lightkd.recipes.base import _options
    for name, recipe in RECIPES.items():
        assert recipe.chapter[:2].isdigit() and recipe.help, name
        assert {"tiny", "paper"} <= set(recipe.scales), name
        if recipe.chapter in MODULES:
            assert "book" in recipe.scales, f"{name}: a migrated chapter's recipe runs at book scale"
        options = [set(_options(p)) for p in recipe.presets.values()]
        assert all(o == options[0] for o in options), f"{name}: its scales take different options"


def test_all_tiny_under_accelerate_on_two_cpu_processes(tmp_path):
    """One launch runs every recipe in both processes; each results file is written once, by rank 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    # `accelerate launch --cpu` alone starts one process; --multi_gpu selects the torchrun launcher
    # and the processes find no GPU (ACCELERATE_USE_CPU), so they form a gloo group on the CPU.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "lightkd.recipes", "all", "--tiny", "--out", str(out)]
    env = {**subprocess_env(), "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert run.stdout.count("on 2 process(es)") == 1, run.stdout[-3000:]
    written = sorted(p.name for p in out.glob("*.json"))
    assert written == sorted(f"{name}.json" for name in RECIPES)
    for name in RECIPES:
        assert run.stdout.count(f"{name}: ") == 1, f"{name} reported {run.stdout.count(f'{name}: ')} times"
        check_results(json.loads((out / f"{name}.json").read_text()), name)


# ------------------------------------------------------------ the command line
@pytest.mark.parametrize("argv, message", [
    (["no_such_recipe", "--tiny"], "unknown recipe 'no_such_recipe'"),
    (["teacher", "--tiny", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["teacher", "--tiny", "--set", "no_such_option=1"], "has no option 'no_such_option'"),
    (["teacher", "--tiny", "--set", "lr=fast"], "option 'lr' takes a float"),
    (["teacher", "--tiny", "--set", "lr"], "--set takes key=value"),
    (["all", "--tiny", "--set", "lr=0.1"], "--set changes one recipe's options"),
    (["teacher", "--tiny", "--set", "train_size=-10"], "option 'train_size' must be an integer >= 1"),
    (["teacher", "--tiny", "--set", "model=no/such/folder"], "there is no folder"),
    (["prune", "--tiny", "--set", "sparsity=1.5"], "option 'sparsity' must be a share in [0, 1]"),
    (["deit", "--tiny", "--set", "lr=NaN"], "option 'lr' must be a finite number"),
])
def test_bad_command_lines_exit_2_with_one_message(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir()), "nothing runs after a bad command line"


def test_an_out_that_is_a_file_fails_before_training(capsys, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    assert main(["teacher", "--tiny", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_an_unexpected_failure_is_one_line_and_exit_1(capsys, tmp_path, monkeypatch):
    import dataclasses

    def broken(config, out):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
    monkeypatch.setitem(RECIPES, "teacher", dataclasses.replace(RECIPES["teacher"], run=broken))
    assert main(["teacher", "--tiny", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: CUDA out of memory. Tried to allocate" in err
    assert "Traceback" in (tmp_path / "error-traceback.txt").read_text()


def test_every_preset_is_within_the_option_ranges():
    """The ranges the command line enforces admit every value the recipes ship with."""
    from lightkd.recipes.base import _check_range, _options
    for name, recipe in RECIPES.items():
        for preset in recipe.presets.values():
            for key, value in _options(preset).items():
                if value is not None:
                    _check_range(name, key, value, [_options(p).get(key) for p in recipe.presets.values()])


def test_bad_recipe_name_from_the_shell(tmp_path):
    run = subprocess.run([sys.executable, "-m", "lightkd.recipes", "nope"], cwd=tmp_path, env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "unknown recipe 'nope'" in run.stderr and "Traceback" not in run.stderr


def test_list_and_set_values(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed and RECIPES[name].chapter in listed for name in RECIPES)
    assert parse_set(["lr=3e-5", "train_size=null", "augment=false", "teacher=out/teacher", "note=a=b"]) == \
        {"lr": 3e-5, "train_size": None, "augment": False, "teacher": "out/teacher", "note": "a=b"}


def test_overrides_are_checked_and_applied():
    recipe = RECIPES["prune"]  # a recipe whose options are a dict
    config = recipe.config(tiny=True, lr=1e-4, max_steps=3, train_size=None)
    assert config["lr"] == 1e-4 and config["max_steps"] == 3 and config["train_size"] is None  # None: all of it
    assert recipe.config(tiny=False)["teacher"] == "textattack/bert-base-uncased-SST-2"
    recipe = RECIPES["distilbert"]  # a chapter's own config dataclass
    config = recipe.config("book", lr=3e-5, train_size=None, layers=[1, 3, 5])
    assert config.lr == 3e-5 and config.train_size is None and config.layers == (1, 3, 5)
    assert recipe.config("paper").teacher == "textattack/bert-base-uncased-SST-2"
    with pytest.raises(LightKDError, match="takes a bool"):
        recipe.config("tiny", freeze_embeddings="yes")
    for bad in (dict(seeds=0), dict(arms=("no_such_arm",)), dict(train_size=-10), dict(lr=-1.0)):
        with pytest.raises(LightKDError):
            recipe.config("tiny", **bad)
    with pytest.raises(LightKDError, match="runs at"):
        RECIPES["prune"].config("book")


def test_recorder_writes_where_it_is_told(tmp_path, monkeypatch):
    from lightkd.results import Recorder
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path / "results"))
    rec = Recorder("01_teacher", out=tmp_path / "out", name="teacher")
    rec.record("teacher.accuracy", 0.5, unit="fraction")
    assert rec.save() == tmp_path / "out" / "teacher.json"
    assert json.loads((tmp_path / "out" / "teacher.json").read_text())["chapter"] == "01_teacher"
    assert Recorder("01_teacher").path == tmp_path / "results" / "01_teacher.json"  # the chapters' default
    with pytest.raises(LightKDError, match="name must be"):
        Recorder("01_teacher", out=tmp_path, name="a/b")


# ------------------------------------------------------------ the chapters call them
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("chapter", sorted({r.chapter for r in RECIPES.values()}))
def test_every_chapter_scales_up_with_its_recipes(chapter):
    """A chapter's "Scaling up" runs the recipes registered for it (which CI runs --tiny above),
    not code that nobody executes."""
    nb = json.loads((NOTEBOOKS / f"{chapter}.ipynb").read_text())
    text = next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "markdown" and "## Scaling up" in "".join(c["source"]))
    section = text[text.index("## Scaling up"):].split("\n## ")[0]
    named = set(re.findall(r"-m lightkd\.recipes (\w+)", section)) - {"list"}
    assert named == {n for n, r in RECIPES.items() if r.chapter == chapter}, named
    assert "```python" not in section, "unexecuted code in Scaling up"
