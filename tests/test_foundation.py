"""The book's foundations: the layering of lightkd, the one output protocol,
distillation as data, the cache (tied weights, damaged entries, artefacts),
epoch-fixed data order, and the claim ledger."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from lightkd import data, distill, models, results, train, zoo
from lightkd.common import LightKDError
from lightkd.data import ImageSplit

PACKAGE = Path(__file__).resolve().parents[1] / "lightkd"
CORE = {"common", "data", "models", "zoo", "train", "bench", "viz", "results", "exercises", "__init__", "__main__",
        "scales", "study",
        "vldata", "extractors"}
BLOCKS = {"blocks"}
METHODS = {"quant", "prune", "distill", "tinybert", "mobilebert", "vit", "share", "sparsify", "vlm"}


def _lightkd_imports(path: Path, package: str = "lightkd") -> set[str]:
    """The modules a file imports (relative or absolute, anywhere in the file): of
    lightkd for a top-level module; for a module of ``package`` (``lightkd.recipes``),
    ``from .x`` names its sibling x and ``from ..x`` (or ``lightkd.x``) names lightkd's x."""
    depth = package.count(".")  # 0 for lightkd, 1 for lightkd.recipes
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level and node.level <= depth + 1:
                found = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                if depth and node.level == 1 and not node.module:  # `from . import RECIPES`: a name of __init__
                    found = [n if (path.parent / f"{n}.py").exists() else "__init__" for n in found]
                names.update(found)
            elif node.module and node.module.startswith("lightkd"):
                parts = node.module.split(".")
                names.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lightkd."))
    return names


RECIPES = PACKAGE / "recipes"


def test_every_module_is_core_blocks_or_method():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    layers = CORE | BLOCKS | METHODS
    assert modules <= layers, f"classify {modules - layers} as core, blocks or method in this test"
    assert not CORE & BLOCKS and not CORE & METHODS and not BLOCKS & METHODS, "a module sits in one layer"
    assert (RECIPES / "__init__.py").exists(), "lightkd.recipes, the third layer, is a package"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.stem)
def test_layering(path):
    """core <- blocks <- methods <- recipes: the core never imports the blocks or a method; the blocks
    import the core only; a method imports the core, the blocks and distill, no other method;
    none of them imports the recipes (the layer above them)."""
    imported = _lightkd_imports(path)
    assert "recipes" not in imported, f"{path.stem} imports lightkd.recipes: only the notebooks sit above it"
    imported &= CORE | BLOCKS | METHODS
    if path.stem in CORE:
        assert not imported & (BLOCKS | METHODS), f"core module {path.stem} imports {imported & (BLOCKS | METHODS)}"
    elif path.stem in BLOCKS:
        assert imported <= CORE | {path.stem}, f"blocks module {path.stem} imports {imported - CORE - {path.stem}}"
    else:
        assert not imported & (METHODS - {"distill", path.stem}), \
            f"method {path.stem} imports other methods {imported & (METHODS - {'distill', path.stem})}"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.py")), ids=lambda p: f"recipes.{p.stem}")
def test_recipes_layering(path):
    """Recipes may import the core, the blocks and any method, and one another, nothing unknown."""
    imported = _lightkd_imports(path, package="lightkd.recipes")
    inside = {p.stem for p in RECIPES.glob("*.py")}
    known = CORE | BLOCKS | METHODS | inside
    assert imported <= known, f"recipes.{path.stem} imports {imported - known}"


def test_layering_test_catches_a_violation(tmp_path):
    bad = tmp_path / "bench.py"
    bad.write_text("from . import quant\nfrom lightkd.vit import deit_loss\n")
    assert _lightkd_imports(bad) == {"quant", "vit"}
    bad.write_text("from .recipes.text import TEACHER\nimport lightkd.recipes\n")  # the core reaching up
    assert _lightkd_imports(bad) == {"recipes"}
    recipe = tmp_path / "text.py"
    recipe.write_text("from .. import prune, zoo\nfrom ..common import LightKDError\nfrom .base import Recipe\n"
                      "from lightkd.vit import deit_loss\n")
    assert _lightkd_imports(recipe, package="lightkd.recipes") == {"prune", "zoo", "common", "base", "vit"}
    blocks = tmp_path / "blocks.py"                          # the blocks reaching up to a method
    blocks.write_text("from .common import LightKDError\nfrom .distill import kd_loss\nfrom . import models\n")
    assert _lightkd_imports(blocks) == {"common", "distill", "models"}
    with pytest.raises(AssertionError, match=r"blocks module blocks imports \{'distill'\}"):
        test_layering(blocks)
    core = tmp_path / "zoo.py"                               # the core reaching up to the blocks
    core.write_text("from .blocks import encoder_layers\n")
    with pytest.raises(AssertionError, match=r"core module zoo imports \{'blocks'\}"):
        test_layering(core)


# ------------------------------------------------------------ the protocol
def tiny_vit(depth=4, dim=32, heads=4, seed=0, **kw):
    torch.manual_seed(seed)
    return models.VisionTransformer(models.ViTConfig(dim=dim, depth=depth, heads=heads, **kw)).eval()


def test_vit_follows_the_output_protocol():
    model, x = tiny_vit(), torch.rand(3, 1, 28, 28)
    out = model(pixel_values=x, output_hidden_states=True, output_attentions=True)
    assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) == 5
    assert torch.allclose(out.hidden_states[0], model.embed(x))           # the embedding output first
    assert out.hidden_states[2].shape == (3, 17, 32)                        # per layer, not per batch row
    assert len(out.attentions) == 4 and out.attentions[0].shape == (3, 4, 17, 17)
    assert torch.allclose(out.last_hidden_state, model.norm(out.hidden_states[-1]))
    assert models.SmallCNN(width=4, hidden=8)(pixel_values=x).logits.shape == (3, 10)


def test_distil_a_vit_into_a_smaller_one_through_matches():
    teacher, student, x = tiny_vit(4, seed=0), tiny_vit(2, seed=1), torch.rand(3, 1, 28, 28)
    batch = {"pixel_values": x, "labels": torch.tensor([0, 1, 2]), "index": torch.arange(3)}
    matches = [distill.Match(2, 1, "hidden"), distill.Match(3, 1, "attention"), distill.Match(feature="logits")]
    feats = distill.capture(teacher, batch, [("hidden", 2), ("attention", 3)])
    own = teacher(pixel_values=x, output_hidden_states=True, output_attentions=True)
    assert feats[("hidden", 2)].shape == (3, 17, 32) and torch.equal(feats[("hidden", 2)], own.hidden_states[2])
    assert torch.equal(feats[("attention", 3)], own.attentions[3])
    assert torch.equal(feats[("logits", None)], own.logits)
    loss = distill.DistillationLoss(teacher, student, matches, temperature=2.0, hard_weight=0.5)
    value, logs = loss(student, batch)
    s = student(pixel_values=x, output_hidden_states=True, output_attentions=True)
    expected = (0.5 * nn.functional.cross_entropy(s.logits, batch["labels"])
                + distill.mse_loss(s.hidden_states[1], own.hidden_states[2])
                + distill.mse_loss(s.attentions[1], own.attentions[3])
                + distill.soft_target_loss(s.logits, own.logits, 2.0))
    assert torch.allclose(value, expected, atol=1e-5)
    value.backward()
    assert student.blocks[0].attn.qkv.weight.grad is not None and teacher.blocks[0].attn.qkv.weight.grad is None


def test_matches_are_data():
    m = distill.Match(1, 1, "hidden", projection="linear")
    with pytest.raises(Exception):
        m.weight = 2.0                                              # frozen
    teacher, student = tiny_vit(2, dim=32), tiny_vit(2, dim=16)
    loss = distill.DistillationLoss(teacher, student, [m])
    assert m.projection == "linear" and isinstance(loss.projections[0], nn.Linear)   # not written back
    assert all(p.requires_grad for p in teacher.parameters())     # the caller's teacher is left alone
    custom = distill.Match(feature="logits", loss=lambda s, t, **_: (s - t).abs().mean())
    assert custom.loss_name == "<lambda>"
    value, _ = distill.DistillationLoss(teacher, tiny_vit(2, dim=32, seed=3), [custom])(
        tiny_vit(2, dim=32, seed=3), {"pixel_values": torch.rand(2, 1, 28, 28)})
    assert value > 0
    with pytest.raises(LightKDError, match="unknown loss"):
        distill.Match(feature="logits", loss="feature_map")        # no global registry to depend on


def test_live_teacher_and_cache_speak_one_protocol():
    teacher, student = tiny_vit(2, seed=0), tiny_vit(2, seed=1)
    split = ImageSplit(torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,)))
    batches = data.image_batches(split, batch_size=3)
    cache = distill.TeacherCache(teacher, batches, [("hidden", 1)])
    batch = next(iter(batches))
    keys = [("hidden", cache.resolve("hidden", -2)), ("logits", None)]
    live = distill.LiveTeacher(teacher)
    a, b = cache.features(batch, keys), live.features(batch, keys)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in keys)
    with pytest.raises(LightKDError, match="lacks"):
        cache.resolve("attention", 0)


# ------------------------------------------------------------------ cache
class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 64)
        self.b.weight = self.a.weight


def test_cache_stores_tied_weights_once(tmp_cache):
    def train_(m):
        with torch.no_grad():
            m.a.weight.add_(1.0)
    model = zoo.cached("tied", {"v": 1}, Tied, train_, verbose=False)
    assert model.b.weight is model.a.weight or torch.equal(model.b.weight, model.a.weight)
    entry = Path(model.lightkd_cache)
    meta = json.loads((entry / "spec.json").read_text())
    assert meta["tied"] == {"b.weight": "a.weight"}
    assert (entry / "model.safetensors").stat().st_size < 1.5 * 64 * 64 * 4


def test_damaged_cache_entry_is_rebuilt(tmp_cache):
    calls = []
    make = lambda: nn.Linear(8, 8)
    model = zoo.cached("lin", {"v": 1}, make, lambda m: calls.append(1), verbose=False)
    weights = Path(model.lightkd_cache) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])                 # truncated by a crash or a full disk
    zoo.cached("lin", {"v": 1}, make, lambda m: calls.append(1), verbose=False)
    assert len(calls) == 2


def test_cached_tensors_round_trip(tmp_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"logits": torch.arange(12.0).reshape(3, 4), "ids": torch.tensor([1, 2, 3])}, {"seconds": 1.5}
    for _ in range(2):
        tensors, info = zoo.cached_tensors("art", {"v": 1}, compute)
        assert torch.equal(tensors["logits"], torch.arange(12.0).reshape(3, 4)) and tensors["ids"].dtype == torch.long
        assert info["seconds"] == 1.5
    assert len(calls) == 1


def test_cached_evaluate_scores_once_and_keys_on_weights_and_data(tmp_cache, monkeypatch):
    split = ImageSplit(torch.rand(12, 1, 28, 28), torch.arange(12) % 10)
    test = data.image_batches(split, batch_size=5)
    model = models.SmallCNN(width=2, hidden=4).eval()
    expected = train.evaluate(model, test, bf16=False)
    got = zoo.cached_evaluate(model, test, bf16=False)
    assert torch.equal(got["logits"], expected["logits"]) and torch.equal(got["predictions"], expected["predictions"])
    assert got["accuracy"] == expected["accuracy"] and abs(got["loss"] - expected["loss"]) < 1e-6
    scored = []
    real = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: scored.append(1) or real(*a, **k))
    zoo.cached_evaluate(model, test, bf16=False)
    assert not scored, "the second call reads the stored logits"
    with torch.no_grad():
        next(model.parameters()).add_(1.0)                          # changed in place: same object, new key
    zoo.cached_evaluate(model, test, bf16=False)
    other = data.image_batches(ImageSplit(torch.rand(12, 1, 28, 28), torch.arange(12) % 10), batch_size=5)
    zoo.cached_evaluate(model, other, bf16=False)
    assert len(scored) == 2
    built = []
    lazy = zoo.cached_evaluate(lambda: built.append(1) or model, test, bf16=False, spec={"name": "cnn"})
    lazy_again = zoo.cached_evaluate(lambda: built.append(1) or model, test, bf16=False, spec={"name": "cnn"})
    assert len(built) == 1 and torch.equal(lazy["logits"], lazy_again["logits"])
    with pytest.raises(LightKDError, match="spec must name the model"):
        zoo.cached_evaluate(lambda: model, test, bf16=False)
    with pytest.raises(LightKDError, match="nn.Module or a function"):
        zoo.cached_evaluate("teacher", test, bf16=False)
    with pytest.raises(LightKDError, match="batches are empty"):
        zoo.cached_evaluate(model, [], bf16=False)


def test_model_identity_is_never_a_path():
    model = nn.Linear(2, 2)
    model.lightkd_cache = "/some/machine/path/teacher-abc123"
    assert zoo.model_identity(model) == "teacher-abc123"
    assert zoo.model_identity(nn.Linear(2, 2)) == "Linear"


def test_data_order_is_fixed_by_the_epoch_not_by_history():
    split = ImageSplit(torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    fresh = data.image_batches(split, batch_size=5, shuffle=True, seed=3)
    used = data.image_batches(split, batch_size=5, shuffle=True, seed=3)
    list(used), list(used)                                          # someone iterated it before
    used.set_epoch(0)
    assert [b["index"].tolist() for b in fresh] == [b["index"].tolist() for b in used]
    seen = []
    model = models.SmallCNN(width=2, hidden=4)
    train.fit(model, used, None, epochs=1, lr=1e-3, bf16=False, progress=False,
              on_step=lambda *a: None, loss=lambda m, b: (seen.append(b["index"].tolist()) or
                                                          train.classification_loss(m, b)))
    used2 = data.image_batches(split, batch_size=5, shuffle=True, seed=3)
    assert seen == [b["index"].tolist() for b in used2]
    with pytest.raises(LightKDError, match="epoch"):
        used.set_epoch(-1)


# ------------------------------------------------------------ the ledger
def test_verdict_rule():
    assert results.verdict(1.0, (0.2, 1.8)) == "reproduced"
    assert results.verdict(1.0, (-0.2, 1.8)) == "inconclusive"
    assert results.verdict(-1.0, (-1.8, -0.2)) == "not reproduced"
    assert results.verdict(0.3, (0.1, 0.6), threshold=1.0, direction="below") == "reproduced"
    assert results.verdict(1.3, (1.1, 1.6), threshold=1.0, direction="below") == "not reproduced"
    assert results.verdict(12.0, None, threshold=10.0) == "reproduced"
    assert results.verdict(10.0, None, threshold=10.0) == "not reproduced"
    for bad in (dict(direction="sideways"), dict(threshold=float("nan"))):
        with pytest.raises(LightKDError):
            results.verdict(1.0, (0, 2), **bad)
    with pytest.raises(LightKDError, match="ci"):
        results.verdict(1.0, (2, 0))


def test_intervals():
    mean, lo, hi = results.paired_interval([0.80, 0.82, 0.81], [0.78, 0.79, 0.79])
    assert lo < mean < hi and abs(mean - 0.0233333) < 1e-6
    # t interval, 2 degrees of freedom: half-width = 4.303 * sd / sqrt(3)
    sd = np.std([0.02, 0.03, 0.02], ddof=1)
    assert abs((hi - lo) / 2 - 4.3027 * sd / np.sqrt(3)) < 1e-4
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.8).astype(float)
    b = a.copy()
    b[:100] = 0                                                      # B is A with 100 more mistakes
    d, lo, hi = results.bootstrap_interval(a, b)
    assert lo > 0 and lo < d < hi
    assert results.bootstrap_interval(a, a)[1:] == (0.0, 0.0)
    # Several seeds per arm: the runs are resampled too, so a large seed-to-seed spread widens the
    # interval that averaging the seeds first would hide.
    steady = np.stack([a, a, a])
    shaky = np.stack([a, np.where(rng.random(2000) < 0.1, 0.0, a), np.maximum(a, rng.random(2000) < 0.1)])
    _, lo_avg, hi_avg = results.bootstrap_interval(shaky.mean(0), steady.mean(0))
    _, lo_runs, hi_runs = results.bootstrap_interval(shaky, steady)
    assert hi_runs - lo_runs > 1.5 * (hi_avg - lo_avg)
    with pytest.raises(LightKDError):
        results.paired_interval([1, 2], [1, 2, 3])
    with pytest.raises(LightKDError):
        results.mean_interval([1.0])


def test_median_interval_is_the_order_statistics_and_resists_a_burst():
    # 20 values: [x_(6), x_(15)] is the 95% interval of the median (binomial, p = 1/2: 95.9% coverage)
    assert results.median_interval(np.arange(1.0, 21.0)) == (10.5, 6.0, 15.0)
    assert results.median_interval(np.arange(1.0, 7.0))[1:] == (1.0, 6.0)    # 6 values: min to max (96.9%)
    with pytest.raises(LightKDError, match="need more values"):
        results.median_interval([1.0, 2.0, 3.0, 4.0, 5.0])               # 5 values cannot reach 95%
    with pytest.raises(LightKDError, match="finite"):
        results.median_interval([1.0, float("nan")] * 5)
    rng = np.random.default_rng(0)
    covered = sum(low <= np.log(2) <= high for low, high in
                  (results.median_interval(rng.exponential(size=20))[1:] for _ in range(2000)))
    assert 0.94 < covered / 2000 < 0.98, "the exponential's median is inside about 95% of the time"
    ratios = np.full(20, 1.0) + rng.normal(0, 0.01, 20)
    ratios[3] = 0.3                                                  # one round hit by a burst of load
    median, low, high = results.median_interval(ratios)
    assert low <= median <= high and low > 0.95 and results.mean_interval(ratios)[1] < 0.9


def test_claims_and_models_are_recorded_in_one_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path))
    rec = results.Recorder("99_ledger")
    v = rec.claim("kd_helps", 1.2, (0.4, 2.0), claim="KD beats labels only", source="Hinton et al. 2015")
    assert v == "reproduced" and rec["claims.kd_helps.verdict"] == "reproduced"
    rec.model("student", accuracy=0.83, accuracy_ci=(0.82, 0.84), params=1000, method="KD")
    rec.save()
    saved = json.loads((tmp_path / "99_ledger.json").read_text())["metrics"]
    for key in ("verdict", "effect", "ci_low", "ci_high", "threshold", "claim"):
        assert f"claims.kd_helps.{key}" in saved
    assert saved["models.student.chapter"]["value"] == "99_ledger"
    table = results.ledger("99_ledger")
    assert list(table["verdict"]) == ["reproduced"] and table.loc[0, "95% interval"] == "[+0.40, +2.00]"
    with pytest.raises(LightKDError):
        rec.claim("Bad Id", 1.0, claim="x", source="y")
    with pytest.raises(LightKDError, match="outside its own interval"):
        rec.claim("median_with_a_mean_interval", 0.37, (0.41, 0.77), claim="x", source="y")


def test_a_claim_the_run_cannot_test_is_inconclusive_whatever_its_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path))
    rec = results.Recorder("99_untestable")
    # Two students at chance differ by nothing, and "costs at most a point" would read as reproduced.
    v = rec.claim("costs_little", 0.1, (-0.3, 0.5), threshold=-1.0, claim="Factorizing costs little",
                  source="ALBERT", untestable="both students are at chance")
    assert v == "inconclusive" and rec["claims.costs_little.untestable"] == "both students are at chance"
    assert rec.claim("plain", 0.1, (-0.3, 0.5), threshold=-1.0, claim="c", source="s") == "reproduced"
    table = results.ledger(rec)
    assert list(table["verdict"]) == ["inconclusive", "reproduced"]
    assert table.loc[0, "claim"] == "Factorizing costs little (cannot be tested here: both students are at chance)"
    # The notebook shows every claim whole (pandas cuts cells at 50 characters by default).
    long_claim = "A claim long enough that pandas would cut it short in a notebook's table, unless told not to"
    rec.claim("long", 1.0, (0.5, 1.5), claim=long_claim, source="s")
    html = results.ledger(rec)._repr_html_()
    assert long_claim in html and "..." not in html
    for bad in ("", "  ", 3):
        with pytest.raises(LightKDError, match="untestable"):
            rec.claim("bad", 0.1, (-0.3, 0.5), claim="c", source="s", untestable=bad)


def test_the_teacher_is_fine_tuned_on_one_thread_whatever_the_caller_uses(monkeypatch):
    """Two threads round float sums differently from one: the shared teacher must come out the same
    whether setup trained it (on every core) or a chapter did (on one)."""
    seen = []

    def fake_fit(net, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return train.FitResult(steps=0, seconds=0.0, best_dev_accuracy=0.5)

    monkeypatch.setattr(zoo.training, "fit", fake_fit)
    monkeypatch.setattr(zoo, "load_pretrained", lambda *a, **k: nn.Linear(1, 1))
    monkeypatch.setattr(zoo, "cached", lambda kind, spec, make, fit, verbose=True: (fit(make()), make())[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        zoo.fine_tuned_teacher(verbose=False)
        assert seen == [zoo.TEACHER_THREADS] == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_unusable_cache_folder_gives_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LIGHTKD_CACHE", str(blocker / "cache"))
    with pytest.raises(LightKDError, match="LIGHTKD_CACHE"):
        zoo.cached("lin", {"v": 1}, lambda: nn.Linear(2, 2), lambda m: None, verbose=False)


def test_full_disk_while_caching_gives_a_clear_error_and_no_partial_entry(tmp_cache, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(zoo, "save_file", full)
    with pytest.raises(LightKDError, match="free space"):
        zoo.cached("lin", {"v": 2}, lambda: nn.Linear(2, 2), lambda m: None, verbose=False)
    assert not [p for p in (tmp_cache / "models").iterdir() if not p.name.endswith(".lock")]


def _artefact_worker(cache, out):
    import os
    os.environ["LIGHTKD_CACHE"] = cache
    import time as _time
    from lightkd import zoo as z

    def compute():
        _time.sleep(1.0)
        return {"x": torch.randn(50, 7)}, {"made_by": os.getpid()}
    tensors, info = z.cached_tensors("shared-artefact", {"v": 1}, compute)
    torch.save({"x": tensors["x"], "made_by": info["made_by"]}, out)


def test_two_processes_asking_for_one_artefact_get_the_same_one(tmp_path):
    import multiprocessing as mp
    cache = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_artefact_worker, args=(cache, str(tmp_path / f"o{i}.pt"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    a, b = (torch.load(tmp_path / f"o{i}.pt") for i in range(2))
    assert torch.equal(a["x"], b["x"]) and a["made_by"] == b["made_by"]
    leftovers = [p.name for p in Path(cache, "models").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"partial files left behind: {leftovers}"


def test_scoreboard_gathers_every_chapter_in_one_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path))
    for chapter, acc in (("01_a", 0.8), ("02_b", 0.7)):
        rec = results.Recorder(chapter)
        rec.model("teacher", accuracy=acc, latency_ms=10.0, params=100, size_bytes=400, method="teacher")
        rec.model("student", accuracy=acc - 0.05, accuracy_ci=(acc - 0.07, acc - 0.03), latency_ms=2.0, params=20,
                  unique_params=10, method="KD")
        rec.claim("kd", 1.0, (0.5, 1.5), claim="KD helps", source="paper")
        rec.save()
    chapters = results.load_all()
    models_ = results.models_frame(chapters)
    assert len(models_) == 4 and set(models_["chapter"]) == {"01_a", "02_b"}
    assert models_.loc[models_["model"] == "student", "unique_params"].tolist() == [10, 10]
    claims = results.claims_frame(chapters)
    assert list(claims["chapter"]) == ["01_a", "02_b"] and set(claims["verdict"]) == {"reproduced"}
    viz = __import__("lightkd.viz", fromlist=["viz"])
    html = viz.explorer_html(models_, titles={"01_a": "1. first", "02_b": "2. second"})
    assert "<script>" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert '"chapter": "02_b"' in html and '"chapter_title": "2. second"' in html and "Pareto" in html
    assert ">2. second</span>" in html, "the legend names chapters as a reader knows them"
    styles = viz.chapter_styles([f"{i:02d}_c" for i in range(1, 12)])
    assert len(set(styles.values())) == 11 and len({c for c, _ in styles.values()}) == 11, "eleven distinct colours"
    assert all(c in html for c, _ in viz.chapter_styles(["01_a", "02_b"]).values())


def test_pareto_front():
    assert results.pareto_front([(1, 0.5), (2, 0.6), (1.5, 0.4), (3, 0.6), (0.5, 0.3)]) == [4, 0, 1]
    assert results.pareto_front([]) == []


def test_every_chapter_ends_with_a_claim_ledger():
    """Every chapter's results file carries claims with a verdict by the book's rule, and every
    verdict agrees with the recorded effect, interval and threshold (nothing typed by hand)."""
    root = Path(__file__).resolve().parents[1]
    chapters = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert chapters, "no chapters found"
    for chapter in chapters:
        metrics = json.loads((root / "results" / f"{chapter}.json").read_text())["metrics"]
        ids = {k.split(".")[1] for k in metrics if k.startswith("claims.") and k.endswith(".verdict")}
        assert ids, f"{chapter} records no claim ledger"
        for cid in ids:
            get = lambda field: metrics[f"claims.{cid}.{field}"]["value"]
            expected = results.verdict(get("effect"), (get("ci_low"), get("ci_high")), threshold=get("threshold"),
                                       direction=get("direction"))
            # A claim the run could not test is inconclusive whatever its interval, and says why.
            why = metrics.get(f"claims.{cid}.untestable", {}).get("value")
            assert why is None or (isinstance(why, str) and why.strip()), (chapter, cid)
            assert get("verdict") == ("inconclusive" if why else expected), (chapter, cid)
