"""Knowledge distillation: losses, feature capture, matches.

Read top to bottom:

1. Losses on logits: ``soft_target_loss`` (Hinton's KL(teacher || student)
   at temperature T, times T^2), ``kd_loss`` (that plus the hard-label loss,
   mixed by ``alpha``) and TinyBERT's ``soft_cross_entropy``.
2. Losses on features: ``mse_loss``, ``cosine_loss`` (DistilBERT's hidden
   state term), ``attention_kl_loss`` (MobileBERT's attention transfer), all
   with an optional padding mask, and ``LOSSES``, the names a ``Match`` may
   use (a ``Match`` may also carry any loss function itself).
3. Feature capture without model surgery: ``capture(model, batch, features)``
   takes hidden states and attentions from what transformers exposes
   (``output_hidden_states`` / ``output_attentions``), pre-softmax attention
   scores from forward hooks on the query and key projections, and any other
   tensor from a forward hook named by module path (``"blocks.3"``).
4. Distillation as data: a list of immutable ``Match`` (teacher layer,
   student layer, feature, loss, weight, projection) and ``DistillationLoss``,
   which turns teacher + matches into the ``loss(model, batch) -> (loss,
   logs)`` that ``train.fit`` takes. One teacher protocol serves a live model
   (``LiveTeacher``: eval mode, no gradients) and ``TeacherCache``, which
   stores the teacher's features once (TinyViT stores its teacher's logits
   the same way) so that many student runs share one teacher pass.
5. The exercise checker of the KD loss, ``check_kd_loss``.

Building a student from a teacher (``blocks.student_from_teacher``, DistilBERT's
"one layer out of two" with ``blocks.spread_layers``) and finding a model's
layers (``blocks.encoder_layers``) live in ``lightkd.blocks``: other methods
build from them too.

Layer numbering follows transformers. For ``"hidden"`` an index counts
layers done: 0 is the embedding output, k the output of the k-th layer
(``hidden_states[k]``), -1 the last. For ``"attention"`` and
``"attention_scores"`` an index names a layer from 0 (``attentions[i]``).
A string instead of an index is a module path, captured by a forward hook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import attention_projections, get_module, key_mask, num_layers
from . import common
from .common import LightKDError
from .exercises import check_function
from .train import logits_of, model_device, model_inputs, to_device

FEATURES = ("hidden", "attention", "attention_scores", "logits", "embeddings")
# Masked attention scores: TinyBERT sets entries <= -100 (the additive mask) to 0 in teacher and student.
MASKED_SCORE = 0.0


# ------------------------------------------------------------- checks
def require_temperature(T, name: str = "temperature") -> float:
    """A softmax temperature in ``common.TEMPERATURE_RANGE`` (1e-4 to 1e4)."""
    return common.require_temperature(name, T)


def require_alpha(alpha, name: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise LightKDError(f"{name} is the weight of the soft-target loss and must lie in [0, 1] "
                           f"(1 - {name} goes to the hard labels), got {alpha!r}")
    return float(alpha)


def _check_logits(student_logits, teacher_logits):
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(t, torch.Tensor):
            raise LightKDError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() < 2 or t.numel() == 0 or t.shape[-1] < 2:
            raise LightKDError(f"{name} must be (batch, classes) with at least one example and two classes, got "
                               f"shape {tuple(t.shape)}; a single example is logits[None]")
    if student_logits.shape != teacher_logits.shape:
        raise LightKDError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                           f"{tuple(teacher_logits.shape)} differ: teacher and student must predict the same "
                           "labels (same num_labels) for the same batch")


def require_labels(labels, logits) -> None:
    """Class indices, one per example, each a valid class of ``logits``."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise LightKDError(f"labels must be a tensor of class indices, got {type(labels).__name__}")
    if labels.shape != logits.shape[:-1]:
        raise LightKDError(f"labels {tuple(labels.shape)} must hold one class per example of logits "
                           f"{tuple(logits.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[-1]):
        raise LightKDError(f"labels must lie in 0..{logits.shape[-1] - 1}, got {labels.min().item()}.."
                           f"{labels.max().item()}")


# ------------------------------------------------------- logit losses
def softmax_t(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Softmax at temperature T: higher T spreads the mass over more classes."""
    return F.softmax(logits.float() / require_temperature(T), dim=-1)


def soft_target_loss(student_logits, teacher_logits, T: float = 1.0) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature T, summed over classes, averaged
    over examples ("batchmean"), times T^2.

    Why T^2: the gradient of the KL with respect to a student logit is
    (p_s - p_t) / T, and for large T that difference itself shrinks like 1/T,
    so the gradient shrinks like 1/T^2. Multiplying by T^2 keeps the soft
    term's weight independent of T when it is mixed with the hard-label loss.
    """
    T = require_temperature(T)
    _check_logits(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits.float() / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl / student_logits.shape[0] * T * T  # "batchmean": divide by the number of examples


def kd_loss(student_logits, teacher_logits, labels, T: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Hinton's distillation loss: alpha * soft targets + (1 - alpha) * cross-entropy with the labels."""
    alpha = require_alpha(alpha)
    soft = soft_target_loss(student_logits, teacher_logits, T)
    require_labels(labels, student_logits)
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * soft + (1.0 - alpha) * hard


def soft_cross_entropy(student_logits, teacher_logits, T: float = 1.0) -> torch.Tensor:
    """TinyBERT's prediction-layer loss: the mean over batch x classes of
    -softmax(t/T) * log_softmax(s/T). No T^2 factor, and a mean over classes
    too, as in the official task_distill.py (it equals the cross-entropy
    divided by the number of classes)."""
    T = require_temperature(T)
    _check_logits(student_logits, teacher_logits)
    p_t = F.softmax(teacher_logits.float() / T, dim=-1)
    return (-p_t * F.log_softmax(student_logits.float() / T, dim=-1)).mean()


# ----------------------------------------------------- feature losses
def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the positions ``mask`` keeps (mask broadcasts from the left)."""
    if values.numel() == 0:
        raise LightKDError(f"cannot average an empty feature (shape {tuple(values.shape)}): the batch is empty")
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    if m.dim() > values.dim() or any(a not in (1, b) for a, b in zip(m.shape, values.shape)):
        raise LightKDError(f"mask of shape {tuple(mask.shape)} does not lay over a feature of shape "
                           f"{tuple(values.shape)}; pass the batch's (batch, tokens) attention_mask")
    while m.dim() < values.dim():
        m = m.unsqueeze(-1)
    m = m.expand_as(values)
    return (values * m).sum() / m.sum().clamp_min(1.0)


masked_mean = _masked_mean  # public name: chapters that register their own losses use it


def _token_mask(mask, like: torch.Tensor):
    """A (batch, seq) padding mask laid out for a feature: hidden (B, L, D) or attention (B, H, L, L)."""
    if mask is None:
        return None
    if like.dim() == 4 and mask.dim() == 2:  # attention: keep the rows of real query tokens
        return mask[:, None, :]
    return mask


def mse_loss(student, teacher, mask=None, **_) -> torch.Tensor:
    """Mean squared error over the kept positions (TinyBERT's hidden and attention loss)."""
    if student.shape != teacher.shape:
        raise LightKDError(f"mse: student feature {tuple(student.shape)} and teacher feature "
                           f"{tuple(teacher.shape)} differ; add a projection to the Match")
    return _masked_mean((student.float() - teacher.float()) ** 2, _token_mask(mask, student))


def cosine_loss(student, teacher, mask=None, **_) -> torch.Tensor:
    """1 - cosine similarity of each token's vector, averaged over real tokens
    (DistilBERT's CosineEmbeddingLoss with target 1 on the last hidden state)."""
    if student.shape != teacher.shape:
        raise LightKDError(f"cosine: student feature {tuple(student.shape)} and teacher feature "
                           f"{tuple(teacher.shape)} differ; add a projection to the Match")
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    return _masked_mean(1.0 - cos, _token_mask(mask, student))


def attention_kl_loss(student, teacher, mask=None, eps: float = 1e-12, **_) -> torch.Tensor:
    """KL(teacher || student) between attention distributions (B, H, L, L),
    summed over keys, averaged over heads and real query tokens (MobileBERT)."""
    if student.shape != teacher.shape:
        raise LightKDError(f"attention_kl: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}: "
                           "the two models need the same number of heads")
    t, s = teacher.float(), student.float()
    kl = (t * (torch.log(t + eps) - torch.log(s + eps))).sum(-1)  # (B, H, L)
    return _masked_mean(kl, None if mask is None else mask[:, None, :])


def _logit_loss(fn):
    def loss(student, teacher, mask=None, temperature: float = 1.0, **_):
        return fn(student, teacher, temperature)
    loss.__name__ = fn.__name__
    return loss


# The losses a Match can name; a Match may also carry any callable
# fn(student_feature, teacher_feature, mask=None, temperature=1.0) itself.
LOSSES = {
    "kl": _logit_loss(soft_target_loss),
    "soft_ce": _logit_loss(soft_cross_entropy),
    "mse": mse_loss,
    "cosine": cosine_loss,
    "attention_kl": attention_kl_loss,
}


# ------------------------------------------------------ feature capture
def normalize_layer(model: nn.Module, feature: str, layer, who: str = "model"):
    """Check a layer index (or module path) against the model; negative indices count from the end."""
    if feature not in FEATURES:
        raise LightKDError(f"unknown feature {feature!r} (features are (feature, layer) pairs); choose one of "
                           f"{', '.join(FEATURES)}")
    if isinstance(layer, str):
        get_module(model, layer)
        return layer
    if feature in ("logits", "embeddings"):
        return None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise LightKDError(f"the {feature} of the {who} needs a layer index or a module path, got {layer!r}")
    n = num_layers(model)
    count = n + 1 if feature == "hidden" else n  # hidden states: the embeddings, then one per layer
    if not -count <= layer < count:
        valid = f"0..{n} (0 = embeddings)" if feature == "hidden" else f"0..{n - 1}"
        raise LightKDError(f"the {who} has {n} layers, so {feature} layer {layer} does not exist; "
                           f"valid indices are {valid} or negative ones counting from the end")
    return layer % count


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    raise LightKDError(f"a hooked module returned {type(output).__name__}, not a tensor")


class FeatureCapture:
    """Context manager that records the requested features of one forward pass.

        with FeatureCapture(model, [("hidden", -1), ("attention_scores", 0)]) as cap:
            out = model(**inputs, **cap.forward_kwargs)
        feats = cap.collect(out, attention_mask)   # {("hidden", 6): tensor, ...}

    Features are (feature, layer) pairs; ``layer`` is an index or a module path.
    """

    def __init__(self, model: nn.Module, features):
        self.model = model
        self.features = []
        for feature, layer in features:
            self.features.append((feature, normalize_layer(model, feature, layer)))
        self.features = list(dict.fromkeys(self.features))
        self.handles, self.hooked = [], {}
        kinds = {f for f, l in self.features if not isinstance(l, str)}
        self.forward_kwargs = {}
        if kinds & {"hidden", "embeddings"}:
            self.forward_kwargs["output_hidden_states"] = True
        if "attention" in kinds:
            self.forward_kwargs["output_attentions"] = True
        if self.forward_kwargs and getattr(model, "config", None) is None:
            raise LightKDError(f"{type(model).__name__} is not a transformers model, so it returns no "
                               "hidden_states or attentions; name the layer by module path instead "
                               "(Match('blocks.3', 'blocks.1', 'hidden'))")

    def _hook(self, key):
        def hook(module, inputs, output):
            self.hooked[key] = output
        return hook

    def __enter__(self):
        self.hooked = {}
        for feature, layer in self.features:
            if isinstance(layer, str):
                module = get_module(self.model, layer)
                self.handles.append(module.register_forward_hook(self._hook((feature, layer))))
            elif feature == "attention_scores":
                query, key, heads = attention_projections(self.model, layer)
                self.handles.append(query.register_forward_hook(self._hook(("query", layer))))
                self.handles.append(key.register_forward_hook(self._hook(("key", layer))))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _scores(self, layer, attention_mask):
        """QK^T / sqrt(d) from the hooked projections; masked keys set to 0 as TinyBERT does."""
        _, _, heads = attention_projections(self.model, layer)
        q, k = self.hooked[("query", layer)], self.hooked[("key", layer)]
        b, n, width = q.shape
        d = width // heads
        q = q.view(b, n, heads, d).transpose(1, 2)
        k = k.view(b, n, heads, d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if attention_mask is not None:
            scores = scores.masked_fill(~key_mask(attention_mask), MASKED_SCORE)
        return scores

    def collect(self, output, attention_mask=None) -> dict:
        feats = {}
        for feature, layer in self.features:
            if isinstance(layer, str):
                feats[(feature, layer)] = _first_tensor(self.hooked[(feature, layer)])
            elif feature == "logits":
                feats[(feature, layer)] = logits_of(output)
            elif feature in ("hidden", "embeddings"):
                states = getattr(output, "hidden_states", None)
                if states is None:
                    raise LightKDError(f"{type(self.model).__name__} returned no hidden_states; "
                                       "name the layer by module path instead")
                feats[(feature, layer)] = states[0 if feature == "embeddings" else layer]
            elif feature == "attention":
                attentions = getattr(output, "attentions", None)
                if attentions is None or attentions[layer] is None:
                    raise LightKDError(f"{type(self.model).__name__} returned no attentions; load it with "
                                       "attn_implementation='eager' (sdpa and flash attention do not "
                                       "compute the probabilities)")
                feats[(feature, layer)] = attentions[layer]
            elif feature == "attention_scores":
                feats[(feature, layer)] = self._scores(layer, attention_mask)
        return feats


def capture(model: nn.Module, batch: dict, features) -> dict:
    """One forward pass of ``model`` on ``batch``; returns {(feature, layer): tensor}.

    Always includes ``("logits", None)``. Gradients flow as usual (wrap in
    ``torch.no_grad()`` for a teacher)."""
    features = list(features) + [("logits", None)]
    batch = to_device(batch, model_device(model))
    with FeatureCapture(model, features) as cap:
        output = model(**model_inputs(batch), **cap.forward_kwargs)
    return cap.collect(output, batch.get("attention_mask"))


# ------------------------------------------------------------- matches
DEFAULT_LOSS = {"logits": "kl", "hidden": "mse", "embeddings": "mse", "attention": "mse",
                "attention_scores": "mse"}


@dataclass(frozen=True)
class Match:
    """One distillation term, as immutable data: the teacher's ``feature`` at
    layer ``teacher`` should match the student's at layer ``student`` under
    ``loss`` (a name from ``LOSSES`` or a callable), weighted by ``weight``.
    ``projection`` maps the student's feature to the teacher's width: an
    ``nn.Module`` (share one module across matches for TinyBERT's single
    W_h), ``"linear"`` to have ``DistillationLoss`` make one from the models'
    hidden sizes, or None. ``temperature`` overrides the DistillationLoss's
    for logit losses."""
    teacher: int | str | None = None
    student: int | str | None = None
    feature: str = "hidden"
    loss: str | object | None = None
    weight: float = 1.0
    projection: nn.Module | str | None = None
    temperature: float | None = None

    def __post_init__(self):
        if self.feature not in FEATURES:
            raise LightKDError(f"unknown feature {self.feature!r}; choose one of {', '.join(FEATURES)}")
        if self.loss is None:
            object.__setattr__(self, "loss", DEFAULT_LOSS[self.feature])
        if not callable(self.loss) and self.loss not in LOSSES:
            raise LightKDError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)} "
                               "or pass the loss function itself")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or \
                not math.isfinite(self.weight) or self.weight < 0:
            raise LightKDError(f"a match's weight must be a number >= 0, got {self.weight!r}")
        if self.projection is not None and self.projection != "linear" and not isinstance(self.projection, nn.Module):
            raise LightKDError(f"projection must be an nn.Module, 'linear' or None, got {self.projection!r}")
        if self.temperature is not None:
            require_temperature(self.temperature)

    @property
    def loss_fn(self):
        return self.loss if callable(self.loss) else LOSSES[self.loss]

    @property
    def loss_name(self) -> str:
        if isinstance(self.loss, str):
            return self.loss
        return getattr(self.loss, "__name__", "loss").removesuffix("_loss") or "loss"

    @property
    def name(self) -> str:
        if self.feature in ("logits", "embeddings"):
            return f"{self.loss_name}:{self.feature}"
        return f"{self.loss_name}:{self.feature}[{self.teacher}->{self.student}]"


def _config_value(model, *names):
    config = getattr(model, "config", model)  # a model, or already a config
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return None


def require_compatible(teacher, student) -> None:
    """Teacher and student (models or configs) must share the vocabulary and the label set."""
    for what, names in (("vocabulary size", ("vocab_size",)), ("number of labels", ("num_labels",))):
        t, s = _config_value(teacher, *names), _config_value(student, *names)
        if t is not None and s is not None and t != s:
            raise LightKDError(f"teacher and student differ in {what} ({t} vs {s}): distillation compares "
                               f"them token by token and label by label, so build the student from the "
                               f"teacher's config (student_from_teacher) or use the teacher's tokenizer")


class LiveTeacher:
    """A teacher model run on every batch, in eval mode, without gradients.

    The teacher protocol ``DistillationLoss`` speaks, shared with
    ``TeacherCache``: ``config``, ``resolve(feature, layer)`` (a checked,
    non-negative layer) and ``features(batch, keys)``. The model's own
    ``requires_grad`` flags are left as they are: no gradient reaches it
    because it runs under ``torch.no_grad``.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise LightKDError(f"teacher must be a model (nn.Module) or a TeacherCache, got {type(model).__name__}")
        self.model, self.config = model, getattr(model, "config", None)

    def resolve(self, feature: str, layer):
        return normalize_layer(self.model, feature, layer, "teacher")

    def features(self, batch, keys) -> dict:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return capture(self.model, batch, keys)
        finally:
            self.model.train(was_training)


def as_teacher(teacher):
    """A model or a TeacherCache, as the teacher protocol."""
    return teacher if isinstance(teacher, (TeacherCache, LiveTeacher)) else LiveTeacher(teacher)


class TeacherCache:
    """The teacher's features for every example of a split, computed once.

    Look-up by ``batch["index"]``; padded back to the batch's width. Text
    features are stored trimmed to each sentence's length (hidden states
    (L, D), attention (H, L, L)), so a cache of a few thousand sentences
    fits in memory. TinyViT stores its teacher's logits the same way.
    """

    SEQ_DIMS = {"hidden": (0,), "embeddings": (0,), "attention": (1, 2), "attention_scores": (1, 2),
                "logits": ()}

    def __init__(self, teacher, batches, features=(), dtype=torch.float32, bf16=False):
        self.config = getattr(teacher, "config", None)
        self.teacher_layers = num_layers(teacher) if not all(
            f in ("logits", "embeddings") or isinstance(l, str) for f, l in features) else None
        self.keys = [(f, normalize_layer(teacher, f, l, "teacher")) for f, l in features]
        self.keys = list(dict.fromkeys(self.keys + [("logits", None)]))
        self.store: dict = {key: {} for key in self.keys}
        teacher.eval()
        device = model_device(teacher)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for batch in batches:
                feats = capture(teacher, batch, self.keys)
                lengths = batch["attention_mask"].sum(-1).tolist() if "attention_mask" in batch else None
                for key, value in feats.items():
                    dims = self.SEQ_DIMS.get(key[0], (0,)) if lengths is not None else ()
                    for row, i in enumerate(batch["index"].tolist()):
                        v = value[row]
                        for d in dims:
                            v = v.narrow(d, 0, lengths[row])
                        self.store[key][i] = v.to("cpu", dtype).clone()

    def __len__(self):
        return len(self.store[("logits", None)])

    # -- kept on disk: teacher outputs on a transfer set are computed once for the whole book
    @classmethod
    def stored(cls, teacher, batches, features=(), dtype=torch.float32, bf16=False) -> "TeacherCache":
        """The same cache, kept in the model cache (``zoo.cached_tensors``):
        whichever chapter asks first runs the teacher, under a lock; every
        later one, in this notebook or another, reads the stored outputs.
        The key holds the teacher's identity, the features, the storage
        type and a hash of every batch's ids, so a different teacher, split
        or tokenisation gets its own entry."""
        import hashlib

        from . import zoo
        digest = hashlib.sha256()
        for batch in batches:
            for name in ("index", "input_ids", "attention_mask", "pixel_values"):
                if name in batch:
                    digest.update(name.encode() + batch[name].contiguous().numpy().tobytes())
        spec = {"teacher": zoo.model_identity(teacher), "features": [list(map(str, f)) for f in features],
                "dtype": str(dtype), "bf16": bool(bf16), "batches": digest.hexdigest()[:16], "version": 1}

        def compute():
            cache = cls(teacher, batches, features, dtype, bf16)
            return cache._as_tensors(), {"examples": len(cache)}

        tensors, _ = zoo.cached_tensors("teacher-outputs", spec, compute)
        return cls._from_tensors(teacher, features, tensors)

    def _as_tensors(self) -> dict:
        """Each feature's per-example tensors flattened into one, with their shapes and the example ids."""
        ids = sorted(self.store[("logits", None)])
        out = {"index": torch.tensor(ids, dtype=torch.int64)}
        for k, key in enumerate(self.keys):
            values = [self.store[key][i] for i in ids]
            ndim = values[0].dim()
            out[f"values{k}"] = torch.cat([v.reshape(-1) for v in values])
            out[f"shapes{k}"] = torch.tensor([list(v.shape) for v in values], dtype=torch.int64).reshape(len(ids), ndim)
        return out

    @classmethod
    def _from_tensors(cls, teacher, features, tensors: dict) -> "TeacherCache":
        cache = cls.__new__(cls)
        cache.config = getattr(teacher, "config", None)
        cache.teacher_layers = num_layers(teacher) if not all(
            f in ("logits", "embeddings") or isinstance(l, str) for f, l in features) else None
        cache.keys = list(dict.fromkeys([(f, normalize_layer(teacher, f, l, "teacher")) for f, l in features]
                                        + [("logits", None)]))
        ids = tensors["index"].tolist()
        cache.store = {}
        for k, key in enumerate(cache.keys):
            values, shapes, offset, rows = tensors[f"values{k}"], tensors[f"shapes{k}"], 0, {}
            for i, shape in zip(ids, shapes.tolist()):
                n = math.prod(shape)
                rows[i] = values[offset:offset + n].view(shape)
                offset += n
            cache.store[key] = rows
        return cache

    def resolve(self, feature: str, layer):
        """The stored key for a teacher layer (negative indices count from the end)."""
        if isinstance(layer, str) or feature in ("logits", "embeddings"):
            key = (feature, None if feature in ("logits", "embeddings") and not isinstance(layer, str) else layer)
        else:
            n = self.teacher_layers
            if n is None:
                raise LightKDError(f"the teacher cache has no layer features, so {feature} layer {layer} cannot be "
                                   "looked up; add it to the cache's features")
            count = n + 1 if feature == "hidden" else n
            if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
                raise LightKDError(f"the teacher has {n} layers, so {feature} layer {layer} does not exist")
            key = (feature, layer % count)
        if key not in self.store:
            raise LightKDError(f"the teacher cache lacks {key}; it holds {list(self.store)}")
        return key[1]

    def features(self, batch, keys) -> dict:
        return self.lookup(batch, keys)

    def lookup(self, batch, keys) -> dict:
        width = batch["attention_mask"].shape[1] if "attention_mask" in batch else None
        out = {}
        for key in keys:
            if key not in self.store:
                raise LightKDError(f"the teacher cache holds {list(self.store)}, not {key}; "
                                   "add it to the cache's features")
            rows = []
            for i in batch["index"].tolist():
                if i not in self.store[key]:
                    raise LightKDError(f"example {i} is not in the teacher cache; build the cache "
                                       "from the same split the student trains on")
                v = self.store[key][i]
                if width is not None:
                    for d in self.SEQ_DIMS.get(key[0], (0,)):
                        pad = [0, 0] * (v.dim() - d - 1) + [0, width - v.shape[d]]
                        v = F.pad(v, pad)
                rows.append(v)
            out[key] = torch.stack(rows).float()
        return out


class DistillationLoss(nn.Module):
    """``loss(student, batch) -> (loss, logs)`` for ``train.fit``, built from matches.

        loss = hard_weight * CE(student logits, labels) + sum_m weight_m * loss_m

    ``teacher`` is a model (run in eval mode under no_grad on every batch,
    its parameters untouched) or a ``TeacherCache``: both speak the teacher
    protocol (``LiveTeacher``). ``temperature`` applies to the logit losses
    ("kl", "soft_ce"). Projections are sub-modules of this loss (the matches
    stay as given): give ``list(student.parameters()) + list(loss.parameters())``
    to the optimizer.
    """

    def __init__(self, teacher, student, matches, *, temperature: float = 1.0, hard_weight: float = 0.0):
        super().__init__()
        self.temperature = require_temperature(temperature)
        if isinstance(hard_weight, bool) or not isinstance(hard_weight, (int, float)) or \
                not math.isfinite(hard_weight) or hard_weight < 0:
            raise LightKDError(f"hard_weight must be a finite number >= 0, got {hard_weight!r}")
        self.hard_weight = float(hard_weight)
        # Not a sub-module: the teacher's weights are not trained or saved with the loss.
        self.__dict__["teacher"] = as_teacher(teacher)
        self.matches = tuple(matches)
        if not self.matches and self.hard_weight == 0:
            raise LightKDError("no matches and hard_weight=0: there is nothing to learn from")
        for m in self.matches:
            if not isinstance(m, Match):
                raise LightKDError(f"matches must be Match objects, got {type(m).__name__}")
        require_compatible(self.teacher.config, student)
        self.teacher_keys = [(m.feature, self.teacher.resolve(m.feature, m.teacher)) for m in self.matches]
        self.student_keys = [(m.feature, normalize_layer(student, m.feature, m.student, "student"))
                             for m in self.matches]
        self.projections = nn.ModuleList(self._projection(m, student) for m in self.matches)

    def _projection(self, m: Match, student) -> nn.Module:
        if m.projection == "linear":
            t_dim = _config_value(self.teacher.config, "hidden_size", "dim")
            s_dim = _config_value(student, "hidden_size", "dim")
            if t_dim is None or s_dim is None:
                raise LightKDError("projection='linear' needs hidden_size in both configs; pass an nn.Module")
            return nn.Linear(s_dim, t_dim)
        return m.projection if m.projection is not None else nn.Identity()

    def teacher_features(self, batch) -> dict:
        return self.teacher.features(batch, self.teacher_keys)

    def forward(self, student, batch):
        s_feats = capture(student, batch, self.student_keys)
        t_feats = self.teacher_features(batch)
        logs, total = {}, 0.0
        s_logits = s_feats[("logits", None)]
        batch = to_device(batch, s_logits.device)
        mask = batch.get("attention_mask")
        # Token-level logits (a masked-language-model head, DistilBERT's pre-training) are compared
        # on the masked tokens only (labels != -100), as in DistilBERT's distiller.py.
        tokens = None
        if s_logits.dim() == 3:
            labels = batch.get("labels")
            tokens = (labels != -100) if labels is not None and labels.dim() == 2 else mask.bool()
        if self.hard_weight > 0:
            if tokens is not None:
                ce = F.cross_entropy(s_logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
            else:
                ce = F.cross_entropy(s_logits.float(), batch["labels"])
            total = total + self.hard_weight * ce
            logs["ce"] = ce.item()
        for m, s_key, t_key, proj in zip(self.matches, self.student_keys, self.teacher_keys, self.projections):
            s, t = proj(s_feats[s_key]), t_feats[t_key].to(s_feats[s_key].device)
            if m.feature == "logits" and s.shape != t.shape:
                _check_logits(s, t)
            if m.feature == "logits" and tokens is not None:
                s, t = s[tokens], t[tokens]
            term = m.loss_fn(s, t, mask=mask, temperature=m.temperature or self.temperature)
            total = total + m.weight * term
            logs[m.name] = term.item()
        logs["loss"] = float(total.detach()) if isinstance(total, torch.Tensor) else float(total)
        return total, logs


def kd_matches(alpha: float = 0.5, cosine_weight: float = 0.0) -> tuple[list[Match], float]:
    """Hinton's KD (and DistilBERT's cosine term) as matches: returns (matches, hard_weight)
    for ``DistillationLoss(teacher, student, matches, temperature=T, hard_weight=hard_weight)``."""
    alpha = require_alpha(alpha)
    matches = [Match(feature="logits", loss="kl", weight=alpha)] if alpha > 0 else []
    if cosine_weight:
        matches.append(Match(-1, -1, "hidden", "cosine", weight=cosine_weight))
    return matches, 1.0 - alpha


# DistilBERT's pre-training loss (HF distiller.py): 5.0 * KL * T^2 + 2.0 * MLM + 1.0 * cosine, T = 2.
DISTILBERT = {"temperature": 2.0, "alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0}


def distilbert_matches(recipe: dict = DISTILBERT) -> tuple[list[Match], float]:
    """DistilBERT's terms for masked-LM teacher and student (BertForMaskedLM): returns
    (matches, hard_weight); the hard term is the MLM cross-entropy on the masked tokens.
    The offline MiniLM teacher has no MLM head: this needs bert-base-uncased from the hub."""
    return ([Match(feature="logits", loss="kl", weight=recipe["alpha_ce"]),
             Match(-1, -1, "hidden", "cosine", weight=recipe["alpha_cos"])], recipe["alpha_mlm"])


# ------------------------------------------------------------ exercises
def _logit_inputs(rng):
    b, c = rng.randint(1, 16), rng.randint(2, 10)
    scale = rng.choice([0.5, 2.0, 5.0])
    return (torch.randn(b, c) * scale, torch.randn(b, c) * scale, torch.randint(0, c, (b,)),
            rng.choice([1.0, 2.0, 4.0, rng.uniform(0.5, 10.0)]), rng.choice([0.0, 0.5, 1.0, rng.random()]))


def check_kd_loss(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``kd_loss(student_logits, teacher_logits, labels, T, alpha)``."""
    return check_function(candidate, kd_loss, _logit_inputs, trials=trials, seed=seed, name="kd_loss")
