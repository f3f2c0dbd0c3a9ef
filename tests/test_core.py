"""Unit tests for lightkd's core: common, data, zoo, train, bench, results, exercises, viz."""
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightkd import bench, data, exercises, results, train, viz, zoo
from lightkd.common import LightKDError, SourceMissing, atomic_write_bytes, cache_dir, default_seed, set_seed


# ------------------------------------------------------------------ common
def test_seed_knob(monkeypatch):
    monkeypatch.setenv("LIGHTKD_SEED", "7")
    assert default_seed() == 7
    a = (set_seed(), torch.rand(3))[1]
    b = (set_seed(), torch.rand(3))[1]
    assert torch.equal(a, b)
    monkeypatch.setenv("LIGHTKD_SEED", "seven")
    with pytest.raises(LightKDError, match="LIGHTKD_SEED"):
        default_seed()


def test_cache_knob_and_atomic_write(tmp_cache):
    path = cache_dir("x") / "f.bin"
    assert str(path).startswith(str(tmp_cache))
    atomic_write_bytes(path, b"abc")
    atomic_write_bytes(path, b"def")
    assert path.read_bytes() == b"def"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]  # no temporary files left


# -------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def reviews():
    return data.load_text_classification("movie_reviews")


def test_movie_reviews_split_is_fixed_and_balanced(reviews):
    sizes = [len(reviews.split(s)) for s in data.SPLITS]
    assert sizes == [8454, 1056, 1058]
    assert set(reviews.train.labels) == {0, 1}
    assert 0.45 < sum(reviews.test.labels) / len(reviews.test) < 0.55
    assert not set(reviews.train.texts) & set(reviews.test.texts) - {""}
    assert reviews.test.texts[0] == data.load_text_classification("movie_reviews").test.texts[0]


def test_movie_reviews_ignores_the_book_seed(monkeypatch, reviews):
    monkeypatch.setenv("LIGHTKD_SEED", "123")
    assert data.load_text_classification("movie_reviews").test.texts[:5] == reviews.test.texts[:5]


def test_bad_data_names(reviews):
    with pytest.raises(LightKDError, match="unknown text data set name='imdb'"):
        data.load_text_classification("imdb")
    with pytest.raises(LightKDError, match="no split 'validation'"):
        reviews.split("validation")
    with pytest.raises(LightKDError, match="unknown image data set"):
        data.load_images("cifar100")
    with pytest.raises(LightKDError, match="unknown unlabelled"):
        data.load_unlabelled_text("books")
    with pytest.raises(LightKDError, match="source"):
        data.load_images("digits", source="internet")


def test_hub_sources_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceMissing, match="HF_HUB_OFFLINE"):
        data.load_text_classification("sst2")
    with pytest.raises(SourceMissing, match="HF_HUB_OFFLINE"):
        zoo.model_path("bert-base-uncased")


def test_missing_fashion_mnist_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTKD_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(SourceMissing, match="apt-get install dataset-fashion-mnist"):
        data.load_images("fashion_mnist")


def test_unlabelled_text_has_no_test_sentences(reviews):
    texts = data.load_unlabelled_text("snippets")
    assert len(texts) > 20000
    assert not set(reviews.test.texts) & set(texts)
    assert len(data.load_unlabelled_text(max_sentences=10)) == 10
    with pytest.raises(LightKDError):
        data.load_unlabelled_text(max_sentences=0)


def test_images():
    digits = data.load_images("digits")
    assert digits.train.images.shape[1:] == (1, 8, 8) and digits.num_labels == 10
    assert 0 <= digits.train.images.min() and digits.train.images.max() <= 1
    if data.FASHION_MNIST_DIR.exists():
        fm = data.load_images("fashion_mnist")
        assert (len(fm.train), len(fm.dev), len(fm.test)) == (55000, 5000, 10000)
        assert fm.train.images.shape[1:] == (1, 28, 28)


@pytest.fixture(scope="module")
def tokenizer():
    return zoo.load_tokenizer("minilm-l6")


def test_text_batches(reviews, tokenizer):
    split = data.TextSplit(reviews.dev.texts[:100], reviews.dev.labels[:100])
    batches = data.text_batches(split, tokenizer, batch_size=16, shuffle=True, seed=1)
    seen = []
    for b in batches:
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[0] <= 16
        assert (b["attention_mask"].sum(1) > 0).all()
        seen += b["index"].tolist()
    assert sorted(seen) == list(range(100)) and len(batches) == 7
    with pytest.raises(LightKDError, match="batch_size"):
        data.text_batches(split, tokenizer, batch_size=0)
    with pytest.raises(LightKDError, match="maximum 512"):
        data.text_batches(split, tokenizer, max_length=1024)


def test_image_batches():
    digits = data.load_images("digits")
    b = next(iter(data.image_batches(digits.test, batch_size=32)))
    assert b["pixel_values"].shape == (32, 1, 8, 8)
    with pytest.raises(LightKDError):
        data.image_batches(digits.test, batch_size=-1)


# --------------------------------------------------------------------- zoo
def test_unknown_model_and_architecture():
    with pytest.raises(LightKDError, match="unknown model name='gpt2'"):
        zoo.model_path("gpt2")
    with pytest.raises(LightKDError, match="unknown architecture"):
        zoo.random_model("bert_huge")
    with pytest.raises(LightKDError, match="num_labels"):
        zoo.load_pretrained("minilm-l6", num_labels=1)


def test_architectures_have_the_papers_shapes():
    counts = {a: bench.count_params(zoo.random_model(a)) for a in ("bert_base", "tinybert4", "minilm_l6")}
    assert abs(counts["bert_base"] - 109.5e6) < 1e6
    assert abs(counts["tinybert4"] - 14.4e6) < 0.2e6
    assert abs(counts["minilm_l6"] - 22.7e6) < 0.2e6


def test_pretrained_teacher_loads_offline():
    model = zoo.load_pretrained("minilm-l6", num_labels=2, seed=0)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert bench.count_params(model) == 22713986


def _tiny_make():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=16))


def _tiny_train(log):
    def fit(model):
        with open(log, "a") as f:
            f.write("trained\n")
        time.sleep(1.0)  # long enough for the other process to arrive and wait
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return {"dev_accuracy": 0.5}
    return fit


def _worker(cache, log, out):
    os.environ["LIGHTKD_CACHE"] = cache
    model = zoo.cached("tiny", {"v": 1}, _tiny_make, _tiny_train(log), verbose=False)
    torch.save(model.state_dict(), out)


def test_cached_model_is_built_once_by_two_processes(tmp_path):
    cache, log = str(tmp_path / "cache"), str(tmp_path / "log")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(cache, log, str(tmp_path / f"out{i}.pt"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert Path(log).read_text().count("trained") == 1
    a, b = (torch.load(tmp_path / f"out{i}.pt") for i in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    entry = next(p for p in Path(cache, "models").glob("tiny-*") if p.is_dir())
    assert (entry / "model.safetensors").exists()
    assert json.loads((entry / "spec.json").read_text())["info"]["dev_accuracy"] == 0.5


def test_cache_key_depends_on_spec(tmp_cache, tmp_path):
    log = tmp_path / "log"
    zoo.cached("tiny", {"v": 1}, _tiny_make, _tiny_train(log), verbose=False)
    zoo.cached("tiny", {"v": 1}, _tiny_make, _tiny_train(log), verbose=False)
    zoo.cached("tiny", {"v": 2}, _tiny_make, _tiny_train(log), verbose=False)
    assert log.read_text().count("trained") == 2


# ------------------------------------------------------------------- train
class TinyImageNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, pixel_values):
        return self.fc(pixel_values.flatten(1))


def test_fit_learns_digits_and_restores_best():
    digits = data.load_images("digits")
    set_seed(0)
    model = TinyImageNet()
    before = train.evaluate(model, data.image_batches(digits.dev))["accuracy"]
    res = train.fit(model, data.image_batches(digits.train, batch_size=32, shuffle=True),
                    data.image_batches(digits.dev), epochs=3, lr=0.05, bf16=False, progress=False)
    after = train.evaluate(model, data.image_batches(digits.dev))
    assert after["accuracy"] > 0.85 > before
    assert abs(after["accuracy"] - res.best_dev_accuracy) < 1e-6
    assert res.steps == 3 * 40 and len(res.evals) == 3 and res.history[0]["step"] == 10


def test_fit_is_reproducible():
    digits = data.load_images("digits")
    weights = []
    for _ in range(2):
        set_seed(3)
        model = TinyImageNet()
        train.fit(model, data.image_batches(digits.train, batch_size=64, shuffle=True, seed=3),
                  max_steps=15, lr=0.05, bf16=False, progress=False, seed=3)
        weights.append(model.fc.weight.detach().clone())
    assert torch.equal(*weights)


def test_fit_extra_loss_and_bad_args():
    digits = data.load_images("digits")
    model = TinyImageNet()
    calls = []

    def loss(m, batch):
        base, logs = train.classification_loss(m, batch)
        penalty = 1e-3 * m.fc.weight.pow(2).sum()
        calls.append(1)
        return base + penalty, {**logs, "l2": penalty.item()}

    res = train.fit(model, data.image_batches(digits.train, batch_size=64), max_steps=10, loss=loss,
                    bf16=False, progress=False)
    assert len(calls) == 10 and "l2" in res.history[-1]
    with pytest.raises(LightKDError):
        train.fit(model, data.image_batches(digits.train), epochs=0)
    with pytest.raises(LightKDError):
        train.fit(model, data.image_batches(digits.train), lr=0)


# ------------------------------------------------------------------- bench
def test_latency_and_bad_args():
    model = zoo.random_model("tinybert4")
    lat = bench.latency(model, batch_size=2, seq_len=16, repeats=3, warmup=1, num_threads=1)
    assert lat.median_ms > 0 and len(lat.times_ms) == 3
    with pytest.raises(LightKDError, match="repeats"):
        bench.latency(model, repeats=0)
    with pytest.raises(LightKDError, match="seq_len"):
        bench.latency(model, seq_len=513)
    with pytest.raises(LightKDError, match="batch_size"):
        bench.latency(model, batch_size=0)
    with pytest.raises(LightKDError, match="threads"):
        bench.latency(model, repeats=1, num_threads=0)
    both = bench.compare_latency({"a": model, "b": model}, rounds=2, seq_len=8)
    assert set(both) == {"a", "b"}
    with pytest.raises(LightKDError):
        bench.compare_latency({}, rounds=1)


def test_threads_are_restored():
    before = torch.get_num_threads()
    with bench.threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_params_by_part_and_flops():
    model = zoo.random_model("bert_base")
    parts = bench.params_by_part(model)
    assert sum(parts.values()) == bench.count_params(model)
    assert parts["ffn"] == 12 * (2 * 768 * 3072 + 3072 + 768)
    assert parts["attention"] == 12 * (4 * 768 * 768 + 4 * 768)
    mobile = bench.params_by_part(zoo.random_model("mobilebert"))
    assert mobile["bottleneck"] > 0 and mobile["ffn"] > mobile["attention"]
    tiny = zoo.random_model("tinybert4")
    f = bench.flops(tiny, seq_len=16)
    linear = 4 * 16 * 2 * (4 * 312 * 312 + 2 * 312 * 1200)
    assert linear <= f < 1.2 * linear
    assert bench.size_on_disk(tiny) > 4 * bench.count_params(tiny)


# ----------------------------------------------------------------- results
def test_recorder_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path))
    rec = results.Recorder("99_test")
    rec.record("a.accuracy", torch.tensor(0.5), unit="fraction", paper=0.9, source="paper")
    rec.record("a.speedup", 2.0, unit="x")
    rec.record("a.params_ratio", 0.6, unit="ratio")
    path = rec.save()
    saved = json.loads(path.read_text())
    assert saved["chapter"] == "99_test" and saved["metrics"]["a.accuracy"]["value"] == 0.5
    assert {"torch", "cpu", "threads"} <= set(saved["environment"]) and saved["runtime_s"] >= 0
    table = results.paper_table("99_test")
    assert table.loc["a.accuracy", "measured"] == "50.0%" and table.loc["a.accuracy", "paper"] == "90.0%"
    assert list(results.paper_table(rec, only_with_paper=True).index) == ["a.accuracy"]
    rec.claim("a_beats_b", 1.0, (0.5, 1.5), claim="A beats B", source="paper")
    rec.model("a", accuracy=0.5)
    assert list(results.paper_table(rec).index) == ["a.accuracy", "a.speedup", "a.params_ratio"], \
        "the ledger and scoreboard rows stay out"
    assert results.paper_table(rec).loc["a.speedup", "measured"] == "2.00x"
    assert results.paper_table(rec).loc["a.params_ratio", "measured"] == "0.60", "a share is not 'times'"
    assert "claims.a_beats_b.effect" in results.paper_table(rec, ["claims.a_beats_b.effect"]).index
    labelled = results.paper_table(rec, ["a.accuracy", "a.speedup"], labels={"a.speedup": "speed-up over the teacher"})
    assert list(labelled.index) == ["a.accuracy", "speed-up over the teacher"]
    with pytest.raises(LightKDError):
        rec.record("Bad Name", 1.0)
    with pytest.raises(LightKDError):
        rec.record("a.b", float("nan"))
    with pytest.raises(LightKDError, match="unit"):
        rec.record("a.b", 1.0, unit="parsecs")
    with pytest.raises(LightKDError, match="run notebooks/98_missing.ipynb"):
        results.load("98_missing")


# --------------------------------------------------------------- exercises
def test_check_function_passes_and_fails(capsys):
    make = lambda rng: (torch.randn(rng.randrange(1, 5), 3),)
    assert exercises.check_function(lambda x: x * 2, lambda x: x + x, make, trials=5, seed=0)
    assert "passed 5 random trials" in capsys.readouterr().out
    assert not exercises.check_function(lambda x: x * 2.01, lambda x: x + x, make, trials=5, seed=0)
    assert "largest difference" in capsys.readouterr().out
    assert not exercises.check_function(lambda x: x[:1], lambda x: x, make, trials=5, seed=1)
    out = capsys.readouterr().out
    assert "shape" in out or "passed" not in out

    def todo(x):
        raise NotImplementedError

    assert not exercises.check_function(todo, lambda x: x, make, trials=2)
    assert "not implemented" in capsys.readouterr().out
    assert not exercises.check_function(lambda x: 1 / 0, lambda x: x, make, trials=2)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_check_bert_layer_params_cannot_be_gamed():
    right = lambda h, i, n: 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
    assert exercises.check_bert_layer_params(right, seed=1)
    fixed_answer = lambda h, i, n: 7087872  # BERT-base's layer: right once, wrong on random shapes
    assert not exercises.check_bert_layer_params(fixed_answer, seed=1)


# --------------------------------------------------------------------- viz
def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    att = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    fig = viz.attention_grid(att, list("abcde"))
    assert len(fig.axes) == 6
    viz.attention_map(att[0, 0], list("abcde"))
    viz.attention_map(att[0, 0], list("abcde"), vmax=1)
    for bad in (0, -1.0, "1", True):
        with pytest.raises(LightKDError, match="vmax"):
            viz.attention_map(att[0, 0], list("abcde"), vmax=bad)
    with pytest.raises(ValueError):
        viz.attention_map(att[0, 0], list("abc"))
    viz.stacked_bars({"m": {"ffn": 1e6, "attention": 5e5}})
    viz.accuracy_vs_cost([{"name": "a", "cost": 1, "accuracy": 0.8}, {"name": "b", "cost": 2, "accuracy": 0.9}])
    viz.confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), ["n", "p"])
    viz.bars(["a", "b"], [1.0, 2.0], reference=1.5)


def test_layer_diagram_draws_every_box_and_link():
    import matplotlib
    matplotlib.use("Agg")
    links = [(0, 0, "", "copied"), (2, 1, "", "copied"), (-1, -1, "KL", "matched"), (-1, -1, "", "copied")]
    ax = viz.layer_diagram(["emb", "l0", "l1", "head"], ["emb", "l0", "head"], links, dropped=[1], title="t")
    assert len(ax.patches) == 7 and len(ax.texts) == 7 + 2 + 1 + 4  # 7 boxes; texts: their labels, 2 names, 1 link label, 4 arrows
    assert sum(1 for t in ax.texts if t.get_text() == "KL") == 1
    for bad in ([(4, 0, "", "copied")], [(0, -4, "", "copied")], [(0, 0, "", "shared")], [(0, 0, "copied")],
                [(True, 0, "", "copied")]):
        with pytest.raises(LightKDError):
            viz.layer_diagram(["a", "b", "c"], ["a", "b", "c"], bad)
    with pytest.raises(LightKDError, match="dropped"):
        viz.layer_diagram(["a"], ["a"], dropped=[3])
    with pytest.raises(LightKDError, match="at least one box"):
        viz.layer_diagram([], ["a"])


def test_dataflow_diagram_and_mask_grid_draw_what_they_are_given():
    import matplotlib
    matplotlib.use("Agg")
    colors = {"int8": "#cfe", "float": "#eee"}
    steps = [("embed", "int8"), ("LayerNorm", "float"), ("query", "int8"), ("softmax", "float"), ("out", "int8")]
    ax = viz.dataflow_diagram(steps, colors, per_row=3, title="t")
    assert len(ax.patches) == 5 and [t.get_text() for t in ax.texts[:5]] == [s for s, _ in steps]
    assert sum(1 for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)) == 4  # an arrow between each pair
    assert [p.get_facecolor() for p in ax.patches][1] == matplotlib.colors.to_rgba("#eee")
    with pytest.raises(LightKDError, match="colors"):
        viz.dataflow_diagram([("a", "int4")], colors)
    with pytest.raises(LightKDError, match="steps"):
        viz.dataflow_diagram([], colors)
    with pytest.raises(LightKDError, match="per_row"):
        viz.dataflow_diagram(steps, colors, per_row=0)
    keep = torch.ones(4, 6, dtype=torch.bool)
    keep[:, :2] = False
    fig = viz.mask_grid({"heads": {"W_Q": keep, "W_O": keep.T}, "none": {"W_Q": torch.ones(4, 6), "W_O": torch.ones(6, 4)}})
    assert len(fig.axes) == 4 and fig.axes[0].get_xlabel() == "67% kept" and fig.axes[2].get_xlabel() == "100% kept"
    with pytest.raises(LightKDError, match="first row"):
        viz.mask_grid({"a": {"W_Q": keep}, "b": {"W_K": keep}})
    with pytest.raises(LightKDError, match="2-d"):
        viz.mask_grid({"a": {"W_Q": torch.ones(3)}})
    with pytest.raises(LightKDError, match="non-empty"):
        viz.mask_grid({})

def test_fetch_command(capsys):
    from lightkd.__main__ import main
    assert main(["nonsense"]) == 2


def test_attention_maps_shape_and_rows_sum_to_one():
    from transformers import BertConfig, BertForSequenceClassification
    tok = zoo.load_tokenizer("minilm-l6")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=32))
    tokens, att = zoo.attention_maps(model, tok, "a fine film")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert att.shape == (2, 4, len(tokens), len(tokens))
    assert torch.allclose(att.sum(-1), torch.ones(2, 4, len(tokens)), atol=1e-5)


def test_attention_distance_is_zero_to_itself_and_grows_with_a_change():
    import copy
    from transformers import BertConfig, BertForSequenceClassification
    tok = zoo.load_tokenizer("minilm-l6")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=32))
    sentences = ["a fine film", "the plot never comes together ."]
    assert zoo.attention_distance(model, model, tok, sentences).tolist() == [0.0, 0.0]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.bert.encoder.layer[1].attention.self.query.weight.mul_(8)  # only layer 1's attention changes
    d = zoo.attention_distance(other, model, tok, sentences)
    assert d.shape == (2,) and d[0] == 0.0 and 0.0 < d[1] <= 1.0
    # by hand, the second sentence alone: half the L1 distance per query row, averaged
    a, b = zoo.attention_maps(other, tok, sentences[1])[1], zoo.attention_maps(model, tok, sentences[1])[1]
    by_hand = 0.5 * (a[1] - b[1]).abs().sum(-1).mean().item()
    assert abs(zoo.attention_distance(other, model, tok, sentences[1:])[1] - by_hand) < 1e-6


def test_registry_package_missing_is_one_clear_error(tmp_cache):
    from lightkd.common import registry_package
    with pytest.raises(SourceMissing, match="pip install --no-deps lightkd-no-such-package==0.0.1"):
        registry_package("lightkd-no-such-package", "0.0.1")


def test_dots_draw_points_not_bars():
    import matplotlib
    matplotlib.use("Agg")
    ax = viz.dots(["a", "b", "c"], [0.8, 0.82, 0.79], errors=[0.01, (0.02, 0.01), 0.0], runs=[[0.79, 0.81], [], [0.79]],
                  reference=0.85, title="t")
    assert not ax.patches, "no bars"
    assert [t.get_text() for t in ax.texts] == ["0.800", "0.820", "0.790"]
    assert ax.get_ylim()[0] > 0.5, "the axis starts near the data"
    with pytest.raises(LightKDError, match="errors"):
        viz.dots(["a", "b"], [1, 2], errors=[0.1])
    with pytest.raises(LightKDError, match="runs"):
        viz.dots(["a"], [1], runs=[[1], [2]])
    with pytest.raises(LightKDError, match="pair up"):
        viz.dots([], [])


def test_point_labels_move_apart_and_log_ticks_read_plainly():
    import matplotlib
    matplotlib.use("Agg")
    pts = [{"name": "recovered", "cost": 13.1, "accuracy": 0.784}, {"name": "trimmed", "cost": 13.7, "accuracy": 0.781},
           {"name": "teacher", "cost": 43.0, "accuracy": 0.845}]
    ax = viz.accuracy_vs_cost(pts, logx=True)
    offsets = {t.get_text(): t.xyann for t in ax.texts}
    assert set(offsets) == {"recovered", "trimmed", "teacher"}
    assert offsets["recovered"] != offsets["trimmed"], "two close points get their labels on different sides"
    ax.figure.canvas.draw()
    assert "20" in [t.get_text() for t in ax.xaxis.get_minorticklabels()], "ticks read 20, not 2 x 10^1"
