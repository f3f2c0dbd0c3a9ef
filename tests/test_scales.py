"""Three scales, one pipeline: the scale knob, a notebook's sizes, where results go, and the
recipes' stage keys (cached on their config fields and their own code)."""
import dataclasses
import json
import sys
import textwrap
import types

import pytest

from lightkd import results, scales
from lightkd.common import LightKDError
from lightkd.recipes import RECIPES, distillation
from lightkd.recipes.base import code_digest, config_fields_read, remember_source, stage_key


def test_the_scale_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("LIGHTKD_SCALE", raising=False)
    assert scales.current() == "book" and scales.at_book()
    monkeypatch.setenv("LIGHTKD_SCALE", " Tiny ")
    assert scales.current() == "tiny" and not scales.at_book()
    monkeypatch.setenv("LIGHTKD_SCALE", "huge")
    with pytest.raises(LightKDError, match="LIGHTKD_SCALE"):
        scales.current()


def test_pick_gives_read_only_sizes_of_the_scale(monkeypatch):
    monkeypatch.setenv("LIGHTKD_SCALE", "tiny")
    S = scales.pick(tiny=dict(steps=6, seeds=1), book=dict(steps=80, seeds=3))
    assert (S.steps, S.seeds, S.scale) == (6, 1, "tiny") and S.as_dict() == {"steps": 6, "seeds": 1}
    assert scales.pick(tiny=dict(steps=6), book=dict(steps=80), scale="book").steps == 80
    with pytest.raises(LightKDError):
        S.steps = 7
    with pytest.raises(AttributeError, match="sizes are steps, seeds"):
        S.epochs
    with pytest.raises(LightKDError, match="the same sizes"):
        scales.pick(tiny=dict(steps=6), book=dict(steps=80, seeds=3))
    with pytest.raises(LightKDError, match="recipe"):
        scales.pick(tiny=dict(steps=6), book=dict(steps=80), scale="paper")


def test_tiny_results_never_overwrite_the_published_ones(monkeypatch, tmp_path):
    monkeypatch.delenv("LIGHTKD_RESULTS", raising=False)
    monkeypatch.setenv("LIGHTKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIGHTKD_SCALE", "tiny")
    rec = results.Recorder("99_demo")
    rec.record("x.accuracy", 0.5, unit="fraction")
    path = rec.save()
    assert path.is_relative_to(tmp_path / "cache") and json.loads(path.read_text())["scale"] == "tiny"
    assert results.results_dir("book").name == "results" and not results.results_dir("book").is_relative_to(tmp_path)


def _module(source: str, name: str = "stage_demo"):
    """A throwaway module from source, so inspect.getsource can read its functions."""
    path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = __import__("importlib.util").util.spec_from_file_location(name, path)
    module = __import__("importlib.util").util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


STAGES = """
from dataclasses import dataclass

STEPS = 10

@dataclass(frozen=True)
class Config:
    lr: float = 0.1
    seeds: int = 3
    rounds: int = 20

def helper(cfg, x):
    return x * cfg.lr

def stage(cfg, seed):
    return helper(cfg, seed) + STEPS

def greedy(cfg):
    return vars(cfg)
"""


def test_a_stage_key_holds_the_config_fields_it_reads_and_its_code():
    m = _module(STAGES)
    cfg = m.Config()
    assert config_fields_read(m.stage) == {"lr"}             # read through the helper it calls
    assert config_fields_read(m.greedy) is None              # the whole config handed away: every field counts
    key = stage_key(m.stage, cfg, seed=1)
    assert key["config"] == {"lr": 0.1} and key["seed"] == 1
    assert stage_key(m.stage, dataclasses.replace(cfg, seeds=5, rounds=3), seed=1) == key  # fields it never reads
    assert stage_key(m.stage, dataclasses.replace(cfg, lr=0.2), seed=1) != key
    changed = _module(STAGES.replace("return x * cfg.lr", "return x * cfg.lr * 2"), name="stage_demo2")
    assert code_digest(changed.stage) != code_digest(m.stage)          # a callee's code changed
    constant = _module(STAGES.replace("STEPS = 10", "STEPS = 11"), name="stage_demo3")
    assert code_digest(constant.stage) != code_digest(m.stage)         # a constant it uses changed
    prose = _module(STAGES.replace("def greedy(cfg):", "def greedy(cfg):\n    '''doc'''"), name="stage_demo4")
    assert code_digest(prose.stage) == code_digest(m.stage)            # elsewhere in the module: no change


def test_a_stage_key_names_the_code_that_runs_after_its_file_is_edited():
    # A kernel holds a recipe module; its file is then edited (lines added above a stage, the
    # stage changed). The running stages' digests must still name the code they run.
    m = _module(STAGES, name="stage_demo5")
    remember_source("stage_demo5")
    before = code_digest(m.stage)
    path = __import__("pathlib").Path(m.__file__)
    path.write_text("# added\n" * 3 + path.read_text().replace("return x * cfg.lr", "return x * cfg.lr * 2"))
    assert code_digest(m.stage) == before
    assert code_digest(_module(path.read_text(), name="stage_demo6").stage) != before   # the new code: a new key


def test_chapter_4s_students_are_keyed_by_what_trains_them():
    read = config_fields_read(distillation.train_student)
    assert {"lr", "batch_size", "patience", "temperature", "freeze_embeddings", "max_epochs"} <= read
    assert not {"seeds", "arms", "latency_rounds", "train_size", "test_size"} & read  # data enters as its digest


def test_chapter_4s_presets():
    recipe = RECIPES["distilbert"]
    tiny, book, paper = (recipe.config(s) for s in ("tiny", "book", "paper"))
    assert book == distillation.Config() and book.seeds >= 3 and book.small_seeds >= book.seeds and book.train_size is None and book.test_size is None
    assert tiny.seeds == 1 and tiny.train_size and tiny.train_size < 1000 and tiny.latency_rounds >= 6
    assert paper.teacher != "minilm-l6" and paper.task == "sst2" and not paper.cache_teacher
    assert distillation.config("tiny") == tiny
    for claim in distillation.CLAIMS.values():
        assert claim.declared and claim.quote and claim.source
    table = distillation.sizes_table(book)
    assert "| training sentences | all |" in table and "| seeds per arm (whole split) | 3 |" in table
    assert "| seeds per arm (3% runs) | 6 |" in table
    # arms on the same sentences share their seeds (paired); the cheap 3% arms get more of them
    assert distillation.seeds_of(book, "kd_3pct") == distillation.seeds_of(book, "random_3pct")
    assert distillation.seeds_of(book, "labels") == distillation.seeds_of(book, "kd")[:3] == distillation.seeds_of(book)
    assert distillation.seeds_of(book, "kd_3pct")[:3] == distillation.seeds_of(book)
    assert len(distillation.seeds_of(book, "kd_3pct")) == 6 and len(distillation.seeds_of(tiny, "kd_3pct")) == 1
    assert len(distillation.seeds_of(book, "kd")) == 5 and len(distillation.seeds_of(tiny, "kd")) == 1  # the 97% claim's arm
