"""Weight sharing: ALBERT's factorized embeddings and cross-layer sharing,
MiniViT's weight multiplexing.

Read top to bottom:

1. Validators: ``SHARING_MODES`` (which weights a layer shares with its group),
   ``require_mode``, ``require_embedding_size``, ``layer_groups`` (ALBERT's
   ``group_idx = int(i / (L / G))``) and ``require_repeats``.
2. ALBERT's parameter arithmetic: ``SharedConfig`` (ALBERT-base by default)
   and ``parameter_count``, which counts every part from the config alone
   (embeddings V x E + E x H instead of V x H, one set of layer weights per
   group instead of per layer).
3. A from-scratch ALBERT-style encoder, ``SharedEncoder``: embeddings of
   width E, one E -> H projection, post-norm BERT layers whose attention
   and / or feed-forward weights are tied within a group, a pooler and a
   classifier. ``from_albert`` copies transformers' ``AlbertModel`` into it
   (equal outputs); the attention-only and FFN-only modes are ours: ALBERT's
   released code shares all or nothing.
4. Students from a BERT teacher: ``shared_student`` ties a copy of the
   teacher's layers by mode and group, initialising each shared module from
   the mean of the teacher layers it replaces or from one of them;
   ``FactorizedEmbedding`` / ``factorize_embeddings`` replace the V x H word
   table by V x E and E x H, initialised from the teacher's truncated SVD.
5. MiniViT: ``MiniViTConfig`` / ``MiniViT`` share each block's attention and
   MLP across ``repeats`` consecutive layers and give every layer its own
   LayerNorms plus optional weight transformations: a 1x1 mixing of the
   heads before and after the softmax, and a depthwise convolution over the
   patch grid on the MLP's input. ``untie`` makes an unshared copy.
6. Weight distillation (Mini-Swin's recipe, MiniLMv2's relations):
   ``relation_loss`` (Q-Q, K-K, V-V self-relations, soft cross-entropy),
   ``hidden_relation_loss`` (token-token cosine relations, MSE) and
   ``minivit_loss`` (logit KD plus both, for ``train.fit``).
7. MiniViT's observations, measured: ``layer_gradient_norms`` (each layer's
   share of the gradient) and ``consecutive_similarity`` (how alike the
   outputs of consecutive layers are).
8. Check functions for the exercises.

Unique parameters are counted with ``bench.count_params``: ``model.parameters()``
yields a tied tensor once.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ACTIVATIONS, FeedForward, SelfAttention, additive_key_mask, encoder_layers, get_module, low_rank
from .common import (LightKDError, require_number, require_positive_int, require_probability, require_temperature,
                     require_tensor, require_weight)
from .distill import kd_loss
from .exercises import check_function
from .models import Attention, MLP, ModelOutput, ViTConfig, VisionTransformer
from .train import logits_of, model_device, model_inputs, to_device

SHARING_MODES = ("all", "attention", "ffn", "none")


# ------------------------------------------------------------------ checks
def require_mode(mode) -> str:
    if mode not in SHARING_MODES:
        raise LightKDError(f"sharing mode must be one of {', '.join(map(repr, SHARING_MODES))} "
                           f"(what a layer shares with its group), got {mode!r}")
    return mode


def require_embedding_size(embedding_size, hidden_size) -> int:
    """E must be a positive integer no larger than H (factorizing into a wider E saves nothing)."""
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or embedding_size < 1:
        raise LightKDError(f"embedding_size E must be a positive integer, got {embedding_size!r}")
    if embedding_size > hidden_size:
        raise LightKDError(f"embedding_size E = {embedding_size} is larger than the hidden size H = {hidden_size}: "
                           "a factorized embedding (V x E + E x H) only saves parameters with E <= H")
    return embedding_size


def layer_groups(depth: int, groups: int) -> list[int]:
    """The group of each layer: ALBERT's ``int(i / (L / G))``, consecutive layers together."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise LightKDError(f"depth must be a positive integer, got {depth!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise LightKDError(f"the number of layer groups must be a positive integer, got {groups!r}")
    if depth % groups:
        divisors = [d for d in range(1, depth + 1) if depth % d == 0]
        raise LightKDError(f"{groups} groups do not divide {depth} layers evenly; pick one of {divisors}")
    return [i * groups // depth for i in range(depth)]


def require_repeats(repeats, depth: int) -> int:
    """MiniViT's ``repeated_times``: how many consecutive layers use one block's weights."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise LightKDError(f"repeats must be a positive integer (1 = no sharing), got {repeats!r}")
    if depth % repeats:
        divisors = [d for d in range(1, depth + 1) if depth % d == 0]
        raise LightKDError(f"repeats = {repeats} does not divide the depth {depth}; pick one of {divisors}")
    return repeats


def tied_indices(mode: str, depth: int, groups: int = 1) -> tuple[list[int], list[int]]:
    """Which attention and which feed-forward weights each layer uses.

    ``("all", 6, 1)`` -> every layer uses attention 0 and FFN 0;
    ``("attention", 6, 1)`` -> attention 0 everywhere, FFN i in layer i."""
    require_mode(mode)
    group = layer_groups(depth, groups)
    own = list(range(depth))
    attention = group if mode in ("all", "attention") else own
    ffn = group if mode in ("all", "ffn") else own
    return attention, ffn


def _require_config(config):
    if not isinstance(config, SharedConfig):
        raise LightKDError(f"config must be a lightkd.share.SharedConfig, got {type(config).__name__}")
    return config


def _require_token_ids(input_ids, vocab_size: int) -> None:
    """(batch, tokens) integer ids, each a row of the word table (an id outside it is an index error
    on the CPU and a device-side assert on a GPU)."""
    require_tensor("input_ids", input_ids, dims=2)
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise LightKDError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        raise LightKDError(f"input_ids must lie in 0..{vocab_size - 1} (the vocabulary), got "
                           f"{int(input_ids.min())}..{int(input_ids.max())}")


def _require_block(model, layer, name: str = "model") -> int:
    """``layer`` indexes one of ``model.blocks`` (negative counts from the end)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise LightKDError(f"{name} must be a lightkd ViT (its layers in .blocks), got {type(model).__name__}")
    n = len(blocks)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise LightKDError(f"layer must index one of the {n} blocks of {name} ({-n}..{n - 1}), got {layer!r}")
    return layer


# ------------------------------------------------ ALBERT's parameter arithmetic
@dataclass
class SharedConfig:
    """An ALBERT-style encoder's shape (defaults: ALBERT-base, E = 128).

    ``project_when_equal``: keep the E -> H projection when E == H. ALBERT's
    code (and transformers' ``AlbertModel``) always has it; the paper's Table
    4 counts are reproduced without it."""
    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    sharing: str = "all"
    num_groups: int = 1
    hidden_act: str = "gelu_new"
    layer_norm_eps: float = 1e-12
    num_labels: int = 0  # 0: no classifier; the model returns the pooled output as ``logits``
    project_when_equal: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LightKDError(f"{name} must be a positive integer, got {value!r}")
        require_mode(self.sharing)
        require_embedding_size(self.embedding_size, self.hidden_size)
        layer_groups(self.num_hidden_layers, self.num_groups)
        if self.hidden_size % self.num_attention_heads:
            raise LightKDError(f"hidden_size {self.hidden_size} must be divisible by num_attention_heads "
                               f"{self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise LightKDError(f"hidden_act must be one of {list(ACTIVATIONS)}, got {self.hidden_act!r}")
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise LightKDError(f"num_labels must be an integer >= 0, got {self.num_labels!r}")

    @property
    def has_projection(self) -> bool:
        return self.embedding_size != self.hidden_size or self.project_when_equal

    def replace(self, **changes) -> "SharedConfig":
        return SharedConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return asdict(self)


ALBERT_BASE = SharedConfig()


def parameter_count(config: SharedConfig) -> dict[str, int]:
    """Parameters of an ALBERT-style encoder by part, from its config alone.

    embeddings: (V + P + T) x E + a LayerNorm over E; projection: E x H + H
    (when there is one); attention: Q, K, V, O (4 (H^2 + H)) + a LayerNorm,
    once per *distinct* attention; ffn: H x F + F + F x H + H + a LayerNorm,
    once per distinct FFN; pooler: H^2 + H; classifier: H x labels + labels."""
    _require_config(config)
    c = config
    E, H, F_ = c.embedding_size, c.hidden_size, c.intermediate_size
    attention_ids, ffn_ids = tied_indices(c.sharing, c.num_hidden_layers, c.num_groups)
    parts = {
        "embeddings": (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * E + 2 * E,
        "projection": E * H + H if c.has_projection else 0,
        "attention": len(set(attention_ids)) * (4 * (H * H + H) + 2 * H),
        "ffn": len(set(ffn_ids)) * (2 * H * F_ + F_ + H + 2 * H),
        "pooler": H * H + H,
        "classifier": H * c.num_labels + c.num_labels if c.num_labels else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


# ALBERT's Table 4 (base): (parameters, the rounding the paper printed them with).
ALBERT_PAPER_PARAMS = {(128, "all"): (12e6, 1e6), (128, "attention"): (64e6, 1e6), (128, "ffn"): (38e6, 1e6),
                       (128, "none"): (90e6, 1e6), (768, "all"): (31.1e6, 0.1e6), (768, "attention"): (83.1e6, 0.1e6),
                       (768, "ffn"): (57.1e6, 0.1e6), (768, "none"): (109e6, 1e6)}


def matches_paper(count: int, paper: float, rounding: float, tolerance: float = 0.02) -> bool:
    """A computed count matches a printed one when it is within ``tolerance``
    (relative) or rounds to it at the paper's precision."""
    require_number("count", count, low=0)
    require_number("paper", paper, low=0)
    require_number("rounding", rounding, low=0)
    require_number("tolerance", tolerance, low=0)
    return abs(count - paper) <= max(tolerance * paper, rounding / 2)


def albert_table(embedding_sizes=(128, 768), base: SharedConfig = ALBERT_BASE, paper_counting: bool = True) -> dict:
    """{(E, mode): total parameters} for ALBERT-base, every sharing mode (ALBERT's Table 4)."""
    return {(E, mode): parameter_count(base.replace(embedding_size=E, sharing=mode,
                                                    project_when_equal=not paper_counting))["total"]
            for E in embedding_sizes for mode in SHARING_MODES}


# ------------------------------------------------ a from-scratch ALBERT encoder


class SharedEncoder(nn.Module):
    """An ALBERT-style encoder from a ``SharedConfig``.

    The distinct attention and feed-forward modules (the two halves of a
    post-norm ``blocks.BertLayer``: ``blocks.SelfAttention`` and
    ``blocks.FeedForward``, tied apart) are stored once
    (``attentions``, ``ffns``); layer i uses ``attentions[attention_ids[i]]``
    and ``ffns[ffn_ids[i]]``. ``bench.count_params`` therefore counts every
    weight once, and ``parameter_count(config)`` predicts it exactly."""

    def __init__(self, config: SharedConfig):
        super().__init__()
        self.config = c = _require_config(config)
        E, H = c.embedding_size, c.hidden_size
        self.word_embeddings = nn.Embedding(c.vocab_size, E)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, E)
        self.embedding_norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.projection = nn.Linear(E, H) if c.has_projection else nn.Identity()
        self.attention_ids, self.ffn_ids = tied_indices(c.sharing, c.num_hidden_layers, c.num_groups)
        self.attentions = nn.ModuleList(SelfAttention(H, c.num_attention_heads, c.layer_norm_eps)
                                        for _ in range(len(set(self.attention_ids))))
        self.ffns = nn.ModuleList(FeedForward(H, c.intermediate_size, c.hidden_act, c.layer_norm_eps)
                                  for _ in range(len(set(self.ffn_ids))))
        self.pooler = nn.Linear(H, H)
        self.classifier = nn.Linear(H, c.num_labels) if c.num_labels else None
        for module in self.modules():  # BERT's initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states: bool = False,
                output_attentions: bool = False, **_) -> ModelOutput:
        _require_token_ids(input_ids, self.config.vocab_size)
        if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor) or
                                           attention_mask.shape != input_ids.shape):
            raise LightKDError(f"attention_mask must be shaped like input_ids {tuple(input_ids.shape)}, got "
                               f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}")
        n = input_ids.shape[1]
        if n > self.config.max_position_embeddings:
            raise LightKDError(f"sequence of {n} tokens is longer than max_position_embeddings "
                               f"{self.config.max_position_embeddings}")
        positions = torch.arange(n, device=input_ids.device)
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + \
            self.token_type_embeddings(token_type_ids)
        x = self.projection(self.embedding_norm(x))
        additive = None if attention_mask is None else additive_key_mask(attention_mask, x.dtype)
        hidden, attentions = [x], []
        for a, f in zip(self.attention_ids, self.ffn_ids):
            x, attn = self.attentions[a](x, additive)
            x = self.ffns[f](x)
            hidden.append(x)
            attentions.append(attn)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        return ModelOutput(logits, tuple(hidden) if output_hidden_states else None,
                           tuple(attentions) if output_attentions else None, x)


def albert_config(config: SharedConfig):
    """The transformers ``AlbertConfig`` of the same shape (sharing "all" only: ALBERT's code)."""
    from transformers import AlbertConfig
    _require_config(config)
    if config.sharing != "all":
        raise LightKDError(f"transformers' ALBERT shares all of a group's weights; sharing={config.sharing!r} "
                           "exists only in lightkd.share.SharedEncoder")
    c = config
    return AlbertConfig(vocab_size=c.vocab_size, embedding_size=c.embedding_size, hidden_size=c.hidden_size,
                        num_hidden_layers=c.num_hidden_layers, num_hidden_groups=c.num_groups,
                        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                        inner_group_num=1, hidden_act=c.hidden_act, max_position_embeddings=c.max_position_embeddings,
                        type_vocab_size=c.type_vocab_size, layer_norm_eps=c.layer_norm_eps,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)


def from_albert(albert) -> SharedEncoder:
    """A ``SharedEncoder`` holding the weights of transformers' ``AlbertModel``."""
    if not isinstance(albert, nn.Module) or not hasattr(albert, "config"):
        raise LightKDError(f"albert must be a transformers AlbertModel, got {type(albert).__name__}")
    c = albert.config
    if getattr(c, "inner_group_num", 1) != 1:
        raise LightKDError("only inner_group_num = 1 (ALBERT's released configs) is supported")
    config = SharedConfig(vocab_size=c.vocab_size, embedding_size=c.embedding_size, hidden_size=c.hidden_size,
                          num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                          intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
                          type_vocab_size=c.type_vocab_size, sharing="all", num_groups=c.num_hidden_groups,
                          hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps, project_when_equal=True)
    model = SharedEncoder(config)
    theirs = albert.state_dict()
    state = {"word_embeddings.weight": "embeddings.word_embeddings.weight",
             "position_embeddings.weight": "embeddings.position_embeddings.weight",
             "token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
             "embedding_norm.weight": "embeddings.LayerNorm.weight", "embedding_norm.bias": "embeddings.LayerNorm.bias",
             "projection.weight": "encoder.embedding_hidden_mapping_in.weight",
             "projection.bias": "encoder.embedding_hidden_mapping_in.bias",
             "pooler.weight": "pooler.weight", "pooler.bias": "pooler.bias"}
    for g in range(config.num_groups):
        layer = f"encoder.albert_layer_groups.{g}.albert_layers.0"
        for ours, name in (("query", "query"), ("key", "key"), ("value", "value"), ("attn_out", "dense"),
                           ("attn_norm", "LayerNorm")):
            for p in ("weight", "bias"):
                state[f"attentions.{g}.{ours}.{p}"] = f"{layer}.attention.{name}.{p}"
        for ours, name in (("ffn_in", "ffn"), ("ffn_out", "ffn_output"), ("ffn_norm", "full_layer_layer_norm")):
            for p in ("weight", "bias"):
                state[f"ffns.{g}.{ours}.{p}"] = f"{layer}.{name}.{p}"
    model.load_state_dict({ours: theirs[name].detach().clone() for ours, name in state.items()}, strict=True)
    return model.to(model_device(albert)).eval()  # built on the CPU (same init draws), then beside ALBERT


# ------------------------------------------------------ students from a teacher
class FactorizedEmbedding(nn.Module):
    """ALBERT's factorized embedding: V x E lookup, then E x H projection."""

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int):
        super().__init__()
        require_positive_int("vocab_size", vocab_size)
        require_embedding_size(embedding_size, hidden_size)
        self.embed = nn.Embedding(vocab_size, embedding_size)
        self.project = nn.Linear(embedding_size, hidden_size, bias=False)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, embedding_size: int) -> "FactorizedEmbedding":
        """The best rank-E approximation of a V x H table (truncated SVD: U_E S_E and V_E^T)."""
        V, H = require_tensor("weight", weight, dims=2).shape
        if not weight.detach().float().square().sum() > 0:  # nothing to approximate, and its energy is 0 / 0
            raise LightKDError("weight is all zero (or not finite): there is no table to factorize")
        module = cls(V, embedding_size, H)
        left, right = low_rank(weight, embedding_size)
        with torch.no_grad():
            module.embed.weight.copy_(left)
            module.project.weight.copy_(right.T)
        # the share of the table's squared norm kept: sum of the top E squared singular values over all of them
        module.energy = float(left.square().sum() / weight.detach().float().square().sum())
        return module.to(weight.device)  # beside the table it replaces (built on the CPU: same init draws)

    @property
    def weight(self) -> torch.Tensor:
        """The V x H table this factorization stands for (what a tied output layer would read)."""
        return self.project(self.embed.weight)

    def forward(self, input_ids):
        return self.project(self.embed(input_ids))


def factorized_params(vocab_size: int, embedding_size: int, hidden_size: int) -> int:
    """V x E + E x H (the E x H projection has no bias here)."""
    require_positive_int("vocab_size", vocab_size)
    require_embedding_size(embedding_size, hidden_size)
    return vocab_size * embedding_size + embedding_size * hidden_size


def factorize_embeddings(model: nn.Module, embedding_size: int) -> nn.Module:
    """Replace a transformers model's word-embedding table (in place) by a
    ``FactorizedEmbedding`` initialised from the table's truncated SVD."""
    if not callable(getattr(model, "get_input_embeddings", None)):
        raise LightKDError(f"model must be a transformers model (it has get_input_embeddings), got {type(model).__name__}")
    table = model.get_input_embeddings()
    if not isinstance(table, nn.Embedding):
        raise LightKDError(f"the model's input embedding is a {type(table).__name__}, not an nn.Embedding")
    require_embedding_size(embedding_size, table.weight.shape[1])
    model.set_input_embeddings(FactorizedEmbedding.from_weight(table.weight, embedding_size))
    return model


INIT_CHOICES = ("mean", "first", "middle", "last")


def _merged(modules: list[nn.Module], init) -> nn.Module:
    """One module standing for several teacher modules: their mean, or one of them."""
    if init == "mean":
        merged = copy.deepcopy(modules[0])
        states = [m.state_dict() for m in modules]
        merged.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                                for k, v in states[0].items()})
        return merged
    index = {"first": 0, "middle": (len(modules) - 1) // 2, "last": len(modules) - 1}[init]
    return copy.deepcopy(modules[index])


def shared_student(teacher: nn.Module, mode: str = "all", groups: int = 1, init: str = "mean",
                   embedding_size: int | None = None) -> nn.Module:
    """A copy of a BERT-family ``teacher`` with its layers tied ALBERT-style.

    ``mode``: which weights the layers of a group share ("all", "attention":
    self-attention + its output projection and LayerNorm, "ffn":
    intermediate + output dense and LayerNorm, "none"). ``groups``: how
    many distinct groups (consecutive layers). ``init``: each shared module
    starts as the mean of the teacher modules it replaces, or as the
    first / middle / last of them. ``embedding_size``: also factorize the
    word embeddings to V x E + E x H (truncated SVD of the teacher's table).
    """
    require_mode(mode)
    if init not in INIT_CHOICES:
        raise LightKDError(f"init must be one of {', '.join(map(repr, INIT_CHOICES))}, got {init!r}")
    if not isinstance(teacher, nn.Module):
        raise LightKDError(f"teacher must be a BERT-family model (an nn.Module), got {type(teacher).__name__}")
    student = copy.deepcopy(teacher)
    _, layers = encoder_layers(student)
    group = layer_groups(len(layers), groups)
    parts = {"all": [None], "attention": ["attention"], "ffn": ["intermediate", "output"], "none": []}[mode]
    for g in sorted(set(group)):
        members = [i for i, gi in enumerate(group) if gi == g]
        for part in parts:
            if part is None:  # the whole layer
                shared = _merged([layers[i] for i in members], init)
                for i in members:
                    layers[i] = shared
            else:
                shared = _merged([getattr(layers[i], part) for i in members], init)
                for i in members:
                    setattr(layers[i], part, shared)
    if embedding_size is not None:
        factorize_embeddings(student, embedding_size)
    for p in student.parameters():
        p.requires_grad_(True)
    student.sharing = {"mode": mode, "groups": groups, "init": init, "embedding_size": embedding_size}
    return student


def encoder_params(model: nn.Module) -> int:
    """Unique parameters of the transformer layers alone (tied tensors once)."""
    return sum(p.numel() for p in encoder_layers(model)[1].parameters())


# ------------------------------------------------------------------- MiniViT
@dataclass
class MiniViTConfig(ViTConfig):
    """A ViT whose blocks share weights ``repeats`` layers at a time (MiniViT's
    ``repeated_times``), every layer keeping its own LayerNorms.
    ``attention_transform``: a per-layer 1x1 mixing of the heads before and
    after the softmax; ``mlp_transform``: a per-layer depthwise 3x3
    convolution over the patch grid on the MLP's input (Mini-Swin's MLP
    transformation, at our 4x4 grid)."""
    repeats: int = 2
    attention_transform: bool = False
    mlp_transform: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.share_weights:
            raise LightKDError("MiniViTConfig shares through repeats=; leave share_weights False")
        require_repeats(self.repeats, self.depth)

    @property
    def unique_blocks(self) -> int:
        return self.depth // self.repeats

    @classmethod
    def from_vit(cls, config: ViTConfig, **changes) -> "MiniViTConfig":
        base = {f.name: getattr(config, f.name) for f in fields(ViTConfig)}
        return cls(**{**base, "share_weights": False, **changes})


class HeadMix(nn.Module):
    """A 1x1 convolution across heads, (B, h, N, N) -> (B, h, N, N), starting as the identity."""

    def __init__(self, heads: int):
        super().__init__()
        require_positive_int("heads", heads)
        self.weight = nn.Parameter(torch.eye(heads))
        self.bias = nn.Parameter(torch.zeros(heads))

    def forward(self, maps):
        return torch.einsum("gh,bhij->bgij", self.weight, maps) + self.bias[:, None, None]


class PatchConv(nn.Module):
    """A depthwise 3x3 convolution over the patch grid, added to its input
    (starts at zero, so the layer starts as plain sharing); extra tokens
    (class, distillation) pass unchanged."""

    def __init__(self, channels: int, grid: int, extra_tokens: int):
        super().__init__()
        require_positive_int("channels", channels)
        require_positive_int("grid", grid)
        require_positive_int("extra_tokens", extra_tokens, minimum=0)
        self.grid, self.extra = grid, extra_tokens
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        b, n, c = x.shape
        patches = x[:, self.extra:].transpose(1, 2).reshape(b, c, self.grid, self.grid)
        delta = self.conv(patches).flatten(2).transpose(1, 2)
        return torch.cat([x[:, :self.extra], x[:, self.extra:] + delta], dim=1)


class MiniBlock(nn.Module):
    """One layer of a MiniViT: shared attention and MLP weights, its own
    LayerNorms and (optionally) its own weight transformations."""

    def __init__(self, attn: Attention, mlp: MLP, config: MiniViTConfig):
        super().__init__()
        if not isinstance(attn, Attention) or not isinstance(mlp, MLP) or not isinstance(config, MiniViTConfig):
            raise LightKDError("MiniBlock takes a shared models.Attention, a shared models.MLP and a MiniViTConfig")
        c = config
        self.norm1, self.norm2 = nn.LayerNorm(c.dim), nn.LayerNorm(c.dim)
        self.attn, self.mlp = attn, mlp  # shared: the same modules sit in several MiniBlocks
        self.pre_mix = HeadMix(c.heads) if c.attention_transform else None
        self.post_mix = HeadMix(c.heads) if c.attention_transform else None
        self.mlp_conv = PatchConv(c.dim, c.image_size // c.patch_size, c.num_extra_tokens) if c.mlp_transform else None
        self.qkv_out = nn.Identity()  # a per-layer hook point: the shared qkv Linear fires once per layer

    def forward(self, x, key_mask=None, return_attention: bool = False):
        if key_mask is not None:
            raise LightKDError("MiniViT blocks take no key_mask")
        h = self.norm1(x)
        b, n, d = h.shape
        heads = self.attn.heads
        q, k, v = self.qkv_out(self.attn.qkv(h)).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        if self.pre_mix is None and not return_attention:
            out, attn = F.scaled_dot_product_attention(q, k, v), None
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
            if self.pre_mix is not None:
                scores = self.pre_mix(scores)
            attn = scores.softmax(-1)
            if self.post_mix is not None:
                attn = self.post_mix(attn)
            out = attn @ v
        x = x + self.attn.proj(out.transpose(1, 2).reshape(b, n, d))
        h = self.norm2(x)
        if self.mlp_conv is not None:
            h = self.mlp_conv(h)
        return x + self.mlp(h), attn


class MiniViT(VisionTransformer):
    """``VisionTransformer`` with MiniViT's weight multiplexing: layer i uses
    the attention and MLP of distinct block ``i // repeats``."""

    def __init__(self, config: MiniViTConfig):
        if not isinstance(config, MiniViTConfig):
            raise LightKDError(f"MiniViT needs a MiniViTConfig, got {type(config).__name__}")
        super().__init__(config)
        c = config
        distinct = [(Attention(c.dim, c.heads, c.dropout), MLP(c.dim, int(c.dim * c.mlp_ratio), c.dropout))
                    for _ in range(c.unique_blocks)]
        self.blocks = nn.ModuleList(MiniBlock(*distinct[i // c.repeats], c) for i in range(c.depth))

    @classmethod
    def from_vit(cls, vit: VisionTransformer, config: MiniViTConfig, init: str = "mean") -> "MiniViT":
        """A MiniViT initialised from a trained ViT of the same width: embeddings,
        head and every layer's LayerNorms copied, each shared block the mean
        (or the first) of the ViT blocks it replaces."""
        if init not in ("mean", "first"):
            raise LightKDError(f"init must be 'mean' or 'first', got {init!r}")
        if not isinstance(vit, VisionTransformer) or isinstance(vit, MiniViT):
            raise LightKDError(f"vit must be a trained lightkd VisionTransformer, got {type(vit).__name__}")
        if not isinstance(config, MiniViTConfig):
            raise LightKDError(f"config must be a MiniViTConfig (MiniViTConfig.from_vit), got {type(config).__name__}")
        shape = ("image_size", "patch_size", "in_channels", "num_classes", "dim", "depth", "heads", "mlp_ratio",
                 "distillation_token")
        differ = [f"{k} {getattr(vit.config, k)} vs {getattr(config, k)}" for k in shape
                  if getattr(vit.config, k) != getattr(config, k)]
        if differ:  # a deeper ViT would lose its last blocks silently; a wider one fails to load
            raise LightKDError(f"config must have the vit's shape (MiniViTConfig.from_vit(vit.config, ...)); "
                               f"they differ in {', '.join(differ)}")
        model = cls(config)
        state = {k: v for k, v in vit.state_dict().items() if not k.startswith("blocks.")}
        for i, block in enumerate(vit.blocks):
            for name in ("norm1", "norm2"):
                for p, v in getattr(block, name).state_dict().items():
                    state[f"blocks.{i}.{name}.{p}"] = v
        model.load_state_dict(state, strict=False)  # the shared weights and the transformations come next
        for u in range(config.unique_blocks):
            members = [vit.blocks[i] for i in range(u * config.repeats, (u + 1) * config.repeats)]
            target = model.blocks[u * config.repeats]
            target.attn.load_state_dict(_merged([m.attn for m in members], init).state_dict())
            target.mlp.load_state_dict(_merged([m.mlp for m in members], init).state_dict())
        return model.to(model_device(vit))  # built on the CPU (same init draws), then beside the ViT


def untie(model: nn.Module) -> nn.Module:
    """A copy in which every layer owns its weights (equal outputs, no sharing):
    one backward pass then gives each layer's own share of the shared gradient."""
    if not isinstance(model, nn.Module):
        raise LightKDError(f"model must be an nn.Module, got {type(model).__name__}")
    clone = copy.deepcopy(model)
    for module in list(clone.modules()):  # a ModuleList holding one layer several times (ALBERT's "all")
        if isinstance(module, nn.ModuleList):
            seen = set()
            for i, item in enumerate(module):
                if id(item) in seen:
                    module[i] = copy.deepcopy(item)
                seen.add(id(module[i]))
    for block in getattr(clone, "blocks", []):  # ViT blocks hold their shared attention and MLP as attributes
        if hasattr(block, "attn") and hasattr(block, "mlp"):
            block.attn, block.mlp = copy.deepcopy(block.attn), copy.deepcopy(block.mlp)
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


# ----------------------------------------------------- weight distillation
def self_relation(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, N): softmax over keys of x_h x_h^T / sqrt(D / heads), per head."""
    require_tensor("x", x, dims=3)
    require_positive_int("heads", heads)
    b, n, d = x.shape
    if d % heads:
        raise LightKDError(f"width {d} is not divisible by {heads} relation heads")
    xh = x.reshape(b, n, heads, d // heads).transpose(1, 2).float()
    return (xh @ xh.transpose(-2, -1) / math.sqrt(d // heads)).log_softmax(-1)


def relation_loss(student_qkv: torch.Tensor, teacher_qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """MiniLMv2's Q-Q, K-K, V-V relation distillation (Mini-Swin's weight
    distillation): soft cross-entropy between teacher and student self-relations,
    averaged over Q, K, V, heads and tokens. ``*_qkv``: (B, N, 3D), [q; k; v]."""
    for name, t in (("student_qkv", student_qkv), ("teacher_qkv", teacher_qkv)):
        require_tensor(name, t, dims=3)
        if t.shape[-1] % 3:
            raise LightKDError(f"{name} must be [q; k; v] side by side (a width divisible by 3), got {tuple(t.shape)}")
    if student_qkv.shape[:2] != teacher_qkv.shape[:2]:
        raise LightKDError(f"relation distillation needs the same tokens: {tuple(student_qkv.shape)} vs "
                           f"{tuple(teacher_qkv.shape)}")
    total = 0.0
    for s, t in zip(student_qkv.chunk(3, -1), teacher_qkv.chunk(3, -1)):
        log_s, log_t = self_relation(s, heads), self_relation(t, heads)
        total = total + -(log_t.exp() * log_s).sum(-1).mean()
    return total / 3


def hidden_relation(h: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, N, N): cosine similarity between every pair of tokens."""
    require_tensor("h", h, dims=3)
    h = F.normalize(h.float(), dim=-1)
    return h @ h.transpose(-2, -1)


def hidden_relation_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """MSE between token-token relations: needs no projection when the widths differ."""
    require_tensor("student_hidden", student_hidden, dims=3)
    require_tensor("teacher_hidden", teacher_hidden, dims=3)
    if student_hidden.shape[:2] != teacher_hidden.shape[:2]:
        raise LightKDError(f"student_hidden {tuple(student_hidden.shape)} and teacher_hidden "
                           f"{tuple(teacher_hidden.shape)} must hold the same (batch, tokens)")
    return F.mse_loss(hidden_relation(student_hidden), hidden_relation(teacher_hidden))


def _qkv_path(model, layer: int) -> str:
    _require_block(model, layer)
    block = model.blocks[layer]
    return f"blocks.{layer % len(model.blocks)}." + ("qkv_out" if isinstance(block, MiniBlock) else "attn.qkv")


class _Grab:
    """Record a module's output during one forward pass."""

    def __init__(self, model, path):
        self.module, self.value = get_module(model, path), None

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda m, i, o: setattr(self, "value", o))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def minivit_loss(relation_teacher=None, logit_teacher=None, *, alpha: float = 0.5, tau: float = 1.0,
                 relation_weight: float = 1.0, hidden_weight: float = 1.0, layer: int = -1):
    """``loss(model, batch)`` for ``train.fit``: Hinton KD on the logits from
    ``logit_teacher`` (alpha, tau; ``1 - alpha`` on the labels) plus Mini-Swin's
    weight distillation from ``relation_teacher`` (a ViT of the same token
    count): Q/K/V relations and hidden-state relations at ``layer``."""
    if relation_teacher is None and logit_teacher is None:
        raise LightKDError("minivit_loss needs a logit teacher, a relation teacher, or both")
    require_probability("alpha", alpha)
    require_temperature("tau", tau)
    require_weight("relation_weight", relation_weight)
    require_weight("hidden_weight", hidden_weight)
    if relation_teacher is not None:
        _require_block(relation_teacher, layer, "relation_teacher")
    elif isinstance(layer, bool) or not isinstance(layer, int):
        raise LightKDError(f"layer must be an integer block index, got {layer!r}")
    for t in (relation_teacher, logit_teacher):
        if t is not None and not isinstance(t, nn.Module):
            raise LightKDError(f"a teacher must be a model (an nn.Module), got {type(t).__name__}")
    for t in (relation_teacher, logit_teacher):
        if t is not None:
            t.eval()
            for p in t.parameters():
                p.requires_grad_(False)

    def loss(model, batch):
        inputs = model_inputs(batch)
        want_rel = relation_teacher is not None and (relation_weight or hidden_weight)
        if want_rel:
            with _Grab(model, _qkv_path(model, layer)) as grab:
                out = model(**inputs, output_hidden_states=True)
            s_qkv = grab.value
        else:
            out = model(**inputs)
        logs = {}
        if logit_teacher is not None:
            with torch.no_grad():
                t_logits = logits_of(logit_teacher(**inputs))
            total = kd_loss(out.logits, t_logits, batch["labels"], T=tau, alpha=alpha)
            logs["kd"] = total.item()
        else:
            total = F.cross_entropy(out.logits.float(), batch["labels"])
            logs["ce"] = total.item()
        if want_rel:
            with torch.no_grad(), _Grab(relation_teacher, _qkv_path(relation_teacher, layer)) as grab:
                t_out = relation_teacher(**inputs, output_hidden_states=True)
            if relation_weight:
                rel = relation_loss(s_qkv, grab.value, model.config.heads)
                total = total + relation_weight * rel
                logs["qkv_relation"] = rel.item()
            if hidden_weight:
                hid = hidden_relation_loss(out.hidden_states[layer], t_out.hidden_states[layer])
                total = total + hidden_weight * hid
                logs["hidden_relation"] = hid.item()
        return total, logs

    return loss


# --------------------------------------------------- MiniViT's observations
def layer_gradient_norms(model: nn.Module, batch: dict) -> torch.Tensor:
    """Each layer's share of the training gradient, as one norm per layer:
    the norm of the gradient with respect to that layer's copy of its
    attention and MLP weights (an untied copy, so shared weights split into
    their per-layer contributions)."""
    if not hasattr(model, "blocks"):
        raise LightKDError(f"model must be a lightkd ViT (its layers in .blocks), got {type(model).__name__}")
    if not isinstance(batch, dict) or "labels" not in batch:
        raise LightKDError("batch must be a dict of inputs with labels (one batch of train.fit's batches)")
    free = untie(model).train()
    free.zero_grad(set_to_none=True)
    batch = to_device(batch, model_device(free))
    out = free(**model_inputs(batch))
    F.cross_entropy(logits_of(out).float(), batch["labels"]).backward()
    norms = []
    for block in free.blocks:
        grads = [p.grad.flatten() for m in (block.attn, block.mlp) for p in m.parameters() if p.grad is not None]
        norms.append(torch.cat(grads).norm())
    return torch.stack(norms).detach()


def gradient_spread(norms: torch.Tensor) -> float:
    """Coefficient of variation of per-layer gradient norms (0: all alike)."""
    require_tensor("norms", norms, dims=1, finite=True)
    norms = norms.float()
    if not norms.mean() > 0:  # all zero: no gradient reached the layers, and 0 / 0 is no spread
        raise LightKDError(f"norms must be gradient norms with a positive mean, got {norms.tolist()}")
    return float(norms.std(unbiased=False) / norms.mean())


@torch.no_grad()
def consecutive_similarity(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the outputs of layers k and k + 1 (k = 1..L-1),
    averaged over tokens and images: (L - 1,) values."""
    if not isinstance(model, nn.Module):
        raise LightKDError(f"model must be a lightkd ViT, got {type(model).__name__}")
    require_tensor("pixel_values", pixel_values, dims=4)
    model.eval()
    pixel_values = pixel_values.to(model_device(model))
    hidden = model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[1:]
    return torch.stack([F.cosine_similarity(a, b, dim=-1).mean() for a, b in zip(hidden[:-1], hidden[1:])])


# ---------------------------------------------------------------- exercises
def check_factorized_params(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: parameters of a factorized embedding, ``(V, E, H) -> V*E + E*H``."""
    def make(rng):
        H = rng.choice([64, 128, 256, 384, 768, 1024])
        return rng.randint(1000, 60000), rng.randint(1, H), H
    return check_function(candidate, factorized_params, make, trials=trials, seed=seed, name="factorized_params")


def check_tied_indices(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: which attention and FFN each layer uses, ``(mode, depth, groups) -> (attention_ids, ffn_ids)``."""
    def make(rng):
        depth = rng.choice([2, 4, 6, 8, 12, 24])
        divisors = [d for d in range(1, depth + 1) if depth % d == 0]
        return rng.choice(SHARING_MODES), depth, rng.choice(divisors)
    return check_function(lambda *a: tuple(list(x) for x in candidate(*a)), tied_indices, make, trials=trials,
                          seed=seed, name="tied_indices")
