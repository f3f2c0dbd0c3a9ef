"""The blocks: the pieces several methods build from (below the methods, above the core).

Read top to bottom:

1. Model anatomy: ``get_module`` (a sub-module by dotted path),
   ``encoder_layers`` (the ModuleList of transformer layers of BERT,
   DistilBERT, MobileBERT, transformers' and lightkd's ViTs), ``num_layers``,
   ``head_grid`` (layers x heads) and ``attention_projections`` (one layer's
   query and key projections).
2. Attention masks, from a (batch, tokens) 0/1 ``attention_mask``:
   ``key_mask`` (True on the real keys, laid over (batch, heads, queries,
   keys) scores) and ``additive_key_mask`` (0 on real keys, the dtype's most
   negative number on padding: added to the scores before the softmax, as
   transformers does).
3. SVD factorisation: ``low_rank(weight, rank) -> (left, right)``, the best
   rank-k approximation ``left @ right`` (Eckart-Young). TinyBERT's PCA
   basis, ALBERT's factorised embeddings and MobileBERT's embedding
   projection are short calls to it.
4. The post-norm BERT layer: ``attention_with_probs`` (softmax(q k^T /
   sqrt(d) + mask) v, keeping the probabilities), ``SelfAttention``
   (attention, add & norm), ``FeedForward`` (feed-forward, add & norm) and
   ``BertLayer`` (one, then the other; ``load_bert_layer`` copies
   transformers' ``BertLayer``).
   ALBERT ties the two halves separately; the vision-language fusion
   encoder stacks whole layers.
5. Students from a teacher: ``spread_layers`` (which layers DistilBERT
   keeps), ``LAYER_MAPS`` / ``layer_map`` (TinyBERT's g(m), also the
   vision-language students'), ``keep_layers`` (in place) and
   ``student_from_teacher`` (a shallower copy, with the teacher's weights
   or fresh ones); ``check_spread_layers`` is the exercise's checker.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LightKDError, require_choice, require_number, require_positive_int, require_tensor, set_seed
from .exercises import check_function


# ------------------------------------------------------------------ 1. anatomy
def get_module(model: nn.Module, path: str) -> nn.Module:
    """The sub-module at a dotted path (``"bert.encoder.layer.2"``), or a clear error."""
    _require_module(model)
    if not isinstance(path, str):
        raise LightKDError(f"path must be a dotted module path such as 'bert.encoder.layer.2', got {path!r}")
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise LightKDError(f"{type(model).__name__} has no module {path!r}; module paths start like: "
                           f"{', '.join(names)} ...") from None


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise LightKDError(f"model must be a torch model (an nn.Module), got {type(model).__name__}")


LAYER_LISTS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "blocks")


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer layers and its path (BERT, DistilBERT, MobileBERT, ViTs)."""
    _require_module(model)
    prefixes = [""]
    base = getattr(model, "base_model_prefix", "")
    if base and hasattr(model, base):
        prefixes.insert(0, base + ".")
    for prefix in prefixes:
        for name in LAYER_LISTS:
            try:
                module = model.get_submodule(prefix + name)
            except AttributeError:
                continue
            if isinstance(module, nn.ModuleList):
                return prefix + name, module
    raise LightKDError(f"cannot find the transformer layers of {type(model).__name__} "
                       f"(looked for {', '.join(LAYER_LISTS)}); name them with module paths instead")


def num_layers(model: nn.Module) -> int:
    return len(encoder_layers(model)[1])


def head_grid(model: nn.Module) -> tuple[int, int]:
    """(layers, heads per layer) of a transformers model, as its config has them (before any pruning)."""
    return num_layers(model), model.config.num_attention_heads


def require_layer(model: nn.Module, layer) -> int:
    """A layer index of ``model`` (negative ones count from the end)."""
    n = num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise LightKDError(f"{type(model).__name__} has {n} layers (0..{n - 1}), so layer {layer!r} does not exist")
    return layer % n


def attention_projections(model: nn.Module, layer: int) -> tuple[nn.Module, nn.Module, int]:
    """The query and key projections of one layer and its number of heads (BERT-family naming)."""
    block = encoder_layers(model)[1][require_layer(model, layer)]
    for path in ("attention.self", "attention", "attn"):
        try:
            attn = block.get_submodule(path)
        except AttributeError:
            continue
        if hasattr(attn, "query") and hasattr(attn, "key"):
            heads = getattr(attn, "num_attention_heads", None) or model.config.num_attention_heads
            return attn.query, attn.key, heads
    raise LightKDError(f"cannot find query/key projections in layer {layer} of {type(model).__name__}; "
                       "attention_scores needs BERT-style attention.self.query / .key")


# ------------------------------------------------------------------- 2. masks
def _require_mask(mask) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.numel() == 0:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise LightKDError(f"attention_mask must be a non-empty (batch, tokens) tensor of 1 (token) and 0 "
                           f"(padding), got {shape}")
    return mask


def key_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, N) 0/1 -> (B, 1, 1, N) bool, True on real keys: broadcasts over (B, heads, queries, keys)."""
    return _require_mask(attention_mask)[:, None, None, :] != 0


def additive_key_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, N) 0/1 -> (B, 1, 1, N) in ``dtype``: 0 on real keys, the most negative ``dtype`` number on
    padding. Added to attention scores, it leaves padding no weight after the softmax; finfo.min
    rather than -inf (as transformers) keeps a sentence of padding alone finite, not NaN."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LightKDError(f"dtype must be the scores' floating dtype (torch.float32, ...), got {dtype!r}")
    mask = _require_mask(attention_mask)[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


# --------------------------------------------------------------------- 3. SVD
def require_rank(rank, weight, name: str = "rank") -> int:
    """A rank from 1 to min(rows, columns) of a 2-D ``weight``."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.numel() == 0:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise LightKDError(f"weight must be a non-empty 2-D matrix, got {shape}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(weight.shape):
        raise LightKDError(f"{name} must be an integer from 1 to {min(weight.shape)} (the smaller side of a "
                           f"{tuple(weight.shape)} matrix), got {rank!r}")
    return rank


def low_rank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-``rank`` approximation of a 2-D ``weight`` as two factors (truncated SVD):
    left = U_k S_k (rows x k) and right = V_k^T (k x columns), in float32. The rows of ``right``
    are the top right singular vectors, orthonormal: ``right.T`` is a principal basis."""
    require_rank(rank, weight)
    U, S, Vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    return U[:, :rank] * S[:rank], Vh[:rank]


# ------------------------------------------------------- 4. the BERT layer
ACTIVATIONS = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


def attention_with_probs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         additive_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v over (B, heads, N, d) inputs: (context (B, heads, N, d),
    probabilities (B, heads, N, N)). Torch's fused attention does not return the probabilities,
    which attention distillation and token pruning read."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t, dims=4)
    if k.shape != v.shape[:-1] + (q.shape[-1],) or q.shape[:2] != k.shape[:2]:
        raise LightKDError(f"q, k and v must be (batch, heads, tokens, head_dim) with one batch, heads and key "
                           f"count, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if additive_mask is not None:
        scores = scores + additive_mask
    probs = scores.softmax(-1)
    return probs @ v, probs


class SelfAttention(nn.Module):
    """Multi-head self-attention with its add & norm (post-norm, as BERT):
    attn_norm(x + attn_out(softmax(q k^T / sqrt(d) + mask) v)). Returns (x, probabilities)."""

    def __init__(self, hidden: int, heads: int, eps: float = 1e-12):
        super().__init__()
        self._attention_weights(hidden, heads, eps)

    def _attention_weights(self, hidden: int, heads: int, eps: float) -> None:
        require_positive_int("hidden", hidden)
        require_positive_int("heads", heads)
        require_number("eps", eps, low=0, low_open=True)
        if hidden % heads:
            raise LightKDError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)

    def attend(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None):
        """x (B, N, H); additive_mask (B, 1, 1, N) from ``additive_key_mask``, or None."""
        b, n, h = x.shape
        split = lambda t: t.reshape(b, n, self.heads, h // self.heads).transpose(1, 2)   # (B, heads, N, d)
        context, probs = attention_with_probs(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                              additive_mask)
        context = context.transpose(1, 2).reshape(b, n, h)
        return self.attn_norm(x + self.attn_out(context)), probs

    forward = attend


class FeedForward(nn.Module):
    """The feed-forward with its add & norm (post-norm): ffn_norm(x + ffn_out(act(ffn_in(x))))."""

    def __init__(self, hidden: int, intermediate: int, act: str = "gelu", eps: float = 1e-12):
        super().__init__()
        self._ffn_weights(hidden, intermediate, act, eps)

    def _ffn_weights(self, hidden: int, intermediate: int, act: str, eps: float) -> None:
        require_positive_int("hidden", hidden)
        require_positive_int("intermediate", intermediate)
        require_number("eps", eps, low=0, low_open=True)
        self.act = require_choice("act", act, ACTIVATIONS)
        self.ffn_in, self.ffn_out = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_norm(x + self.ffn_out(ACTIVATIONS[self.act](self.ffn_in(x))))

    forward = feed_forward


class BertLayer(SelfAttention, FeedForward):
    """One post-norm BERT encoder layer: ``SelfAttention``, then ``FeedForward``.

    It inherits both halves rather than holding them so that its weights sit
    side by side under flat names (transformers' ``BertLayer`` flattened:
    query, key, value, attn_out, attn_norm, ffn_in, ffn_out, ffn_norm): the
    names the vision-language models cached by ``zoo`` were saved under."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float = 1e-12, act: str = "gelu"):
        nn.Module.__init__(self)
        self._attention_weights(hidden, heads, eps)
        self._ffn_weights(hidden, intermediate, act, eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None):
        """x (B, N, H); additive_mask (B, 1, 1, N) from ``additive_key_mask``, or None.
        Returns the layer's output (B, N, H) and its attention probabilities (B, heads, N, N)."""
        x, probs = self.attend(x, additive_mask)
        return self.feed_forward(x), probs

    def load_bert_layer(self, layer) -> "BertLayer":
        """Copy a transformers ``BertLayer``'s weights (same shapes)."""
        att = layer.attention
        pairs = [(self.query, att.self.query), (self.key, att.self.key), (self.value, att.self.value),
                 (self.attn_out, att.output.dense), (self.attn_norm, att.output.LayerNorm),
                 (self.ffn_in, layer.intermediate.dense), (self.ffn_out, layer.output.dense),
                 (self.ffn_norm, layer.output.LayerNorm)]
        with torch.no_grad():
            for mine, theirs in pairs:
                if mine.weight.shape != theirs.weight.shape:
                    raise LightKDError(f"layer has weights of shape {tuple(theirs.weight.shape)} where this "
                                       f"BertLayer has {tuple(mine.weight.shape)}: build it with the BERT's sizes")
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
        return self


# ------------------------------------------------------- 5. students
def spread_layers(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layers to copy: the first of each block of n_teacher / n_student
    layers (DistilBERT's "one layer out of two" for 12 -> 6: 0, 2, 4, 6, 8, 10)."""
    if any(isinstance(n, bool) or not isinstance(n, int) for n in (n_student, n_teacher)) or \
            not 1 <= n_student <= n_teacher:
        raise LightKDError(f"need 1 <= n_student <= n_teacher, got {n_student} and {n_teacher}")
    return [i * n_teacher // n_student for i in range(n_student)]


# TinyBERT's g(m) for student layer m = 1..M of an N-layer teacher; g(0) = 0
# always (the embeddings).
LAYER_MAPS = {
    "uniform": lambda m, n, M: m * (n // M),   # the paper's g(m) = 3m for 12 -> 4
    "top": lambda m, n, M: n - M + m,          # the last M teacher layers
    "bottom": lambda m, n, M: m,               # the first M teacher layers
}


def layer_map(kind, n_teacher: int, n_student: int) -> list[int]:
    """g(0), g(1), ..., g(M): the teacher layer each student layer learns from.

    ``kind`` is "uniform", "top", "bottom" or an explicit list g(1..M).
    Layers count from 1 (layer 0 is the embedding layer), as in TinyBERT's
    paper; ``tinybert.tinybert_matches`` turns this into lightkd's indices;
    the vision-language students (``vlm.spread``) use the uniform map.
    """
    require_positive_int("n_teacher", n_teacher)
    require_positive_int("n_student", n_student)
    if n_student > n_teacher:
        raise LightKDError(f"a {n_student}-layer student (n_student) cannot map onto a {n_teacher}-layer teacher "
                           "one layer each; TinyBERT's student is shallower than its teacher")
    if isinstance(kind, str):
        if kind not in LAYER_MAPS:
            raise LightKDError(f"unknown layer map kind={kind!r}; choose one of {', '.join(LAYER_MAPS)} "
                               "or give the list g(1..M)")
        g = [LAYER_MAPS[kind](m, n_teacher, n_student) for m in range(1, n_student + 1)]
    else:
        g = list(kind)
        if len(g) != n_student:
            raise LightKDError(f"the layer map has {len(g)} entries but the student has {n_student} layers: "
                               "give one teacher layer g(m) for each student layer m = 1..M")
        bad = [x for x in g if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= n_teacher]
        if bad:
            raise LightKDError(f"the layer map names teacher layer {bad[0]!r}, but the teacher has layers "
                               f"1..{n_teacher} (0 is the embedding layer, mapped to 0 already)")
    return [0] + g


def keep_layers(model: nn.Module, layers) -> nn.Module:
    """Keep only the encoder layers ``layers`` (indices, in the order given), in place; the
    config's layer count follows."""
    path, old = encoder_layers(model)
    n = len(old)
    try:
        layers = list(layers)
    except TypeError:  # not a sequence of indices: answered below
        pass
    if not isinstance(layers, list) or not layers or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise LightKDError(f"layers must be a non-empty list of layer indices, got {layers!r}")
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise LightKDError(f"the model has {n} layers (0..{n - 1}); it has no layer {bad[0]}")
    if len(set(layers)) != len(layers):
        raise LightKDError(f"layers repeat an index: {layers}")
    kept = nn.ModuleList([old[i] for i in layers])
    for k, layer in enumerate(kept):
        for module in layer.modules():  # transformers keeps each layer's position for its caches
            if hasattr(module, "layer_idx"):
                module.layer_idx = k
    parent, _, name = path.rpartition(".")
    setattr(get_module(model, parent) if parent else model, name, kept)
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layers", "depth"):
        if config is not None and hasattr(config, key):
            setattr(config, key, len(kept))
    return model


def _reinitialize(model: nn.Module) -> None:
    if hasattr(model, "_init_weights"):
        model.apply(model._init_weights)
    else:
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def student_from_teacher(teacher: nn.Module, layers=None, *, n_layers: int | None = None, init: str = "teacher",
                         seed: int | None = None) -> nn.Module:
    """A shallower copy of ``teacher`` keeping the encoder layers ``layers``
    (default: ``spread_layers`` down to ``n_layers``, half the teacher's).

    ``init="teacher"``: every weight is the teacher's (embeddings, the chosen
    layers, pooler and classifier), DistilBERT's initialisation. ``init="random"``:
    the same shape with fresh random weights (from ``seed``), the ablation
    that shows what the initialisation is worth. Works for any model whose
    layers sit in one ModuleList (BERT, RoBERTa, DistilBERT, plain ViTs).
    """
    if init not in ("teacher", "random"):
        raise LightKDError(f"init must be 'teacher' or 'random', got {init!r}")
    if layers is not None and n_layers is not None:
        raise LightKDError("give layers or n_layers, not both: layers names the teacher layers to keep")
    n = num_layers(teacher)
    if layers is None:
        layers = spread_layers(n, n_layers if n_layers is not None else max(1, n // 2))
    student = keep_layers(copy.deepcopy(teacher), layers)
    if init == "random":
        set_seed(seed)
        _reinitialize(student)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


def check_spread_layers(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: which teacher layers to copy into an n_student-layer student."""
    def make(rng):
        n_teacher = rng.choice([4, 6, 8, 12, 24])
        return n_teacher, rng.randint(1, n_teacher)
    return check_function(lambda a, b: list(candidate(a, b)), spread_layers, make, trials=trials, seed=seed,
                          name="spread_layers")
