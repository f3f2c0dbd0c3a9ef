"""MobileBERT: bottlenecks, stacked FFNs, NoNorm and ReLU, progressive transfer.

Read top to bottom:

1. ``Config``: the shape of a MobileBERT (the paper's defaults: 24 layers,
   inter-block width 512, intra-block width 128, 4 heads, 4 stacked FFNs of
   width 512, 128-d trigram embedding, NoNorm, ReLU) and the checks that
   catch a shape that cannot work.
2. The pieces: ``NoNorm`` (x * gamma + beta), the factorized
   ``TrigramEmbedding`` (concatenate the embeddings of tokens t-1, t, t+1 and
   project up: a kernel-3 convolution), ``MobileBertBlock`` (input
   bottleneck, attention whose queries and keys come from a bottleneck and
   values from the block input, stacked FFNs, output bottleneck) and
   ``MobileBert`` (a sequence classifier that speaks the transformers
   protocol: ``output_hidden_states``, ``output_attentions``, ``.logits``).
   ``load_transformers_layer`` copies the weights of transformers'
   ``MobileBertLayer`` into a block, which is how the block is checked.
3. Parameter arithmetic: ``block_params`` counts one block from its shape
   (the student's and the paper's, IB-BERT's too).
4. Knowledge transfer on top of ``lightkd.distill``: ``feature_map_loss``
   (MSE after a parameter-free LayerNorm), the mean / variance terms,
   ``group_heads`` for teachers with more heads than the student,
   ``transfer_matches`` (which teacher layer matches which student layer),
   ``init_from_teacher`` (copy what fits, PCA the word embeddings).
5. The three strategies on one step budget: ``layerwise_transfer`` with
   ``"auxiliary"``, ``"joint"`` or ``"progressive"`` (layer l trains at 3x
   the learning rate in its phase and 0.3x after it, is still before it),
   then ``task_distill``.
6. Exercises: ``check_nonorm`` and ``check_bottleneck_shapes``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distill
from .blocks import additive_key_mask, attention_with_probs, encoder_layers, low_rank
from .common import LightKDError
from .models import ModelOutput
from .exercises import check_function
from .train import fit

NORMS = ("no_norm", "layer_norm")
ACTIVATIONS = ("relu", "gelu")


# ------------------------------------------------------------------ config
@dataclass
class Config:
    """The shape of a MobileBERT. Defaults are the paper's (and transformers').

    ``hidden_size`` is the inter-block width (what flows between blocks and
    what layer-wise transfer compares with the teacher); ``intra_size`` is the
    width inside a block, where attention and the FFNs work.
    """
    vocab_size: int = 30522
    num_labels: int = 2
    num_hidden_layers: int = 24
    hidden_size: int = 512
    intra_size: int = 128
    num_attention_heads: int = 4
    intermediate_size: int = 512
    num_ffn: int = 4
    embedding_size: int = 128
    trigram: bool = True
    normalization: str = "no_norm"
    activation: str = "relu"
    key_query_shared_bottleneck: bool = True
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    pad_token_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "num_labels", "num_hidden_layers", "hidden_size", "intra_size",
                     "num_attention_heads", "intermediate_size", "num_ffn", "embedding_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LightKDError(f"{name} must be a positive integer, got {v!r}")
        if self.intra_size % self.num_attention_heads:
            raise LightKDError(
                f"the intra-block width {self.intra_size} does not divide into {self.num_attention_heads} heads "
                f"(attention works inside the bottleneck); pick an intra_size that is a multiple of the head count, "
                f"e.g. {self.num_attention_heads * max(1, round(self.intra_size / self.num_attention_heads))}")
        if self.normalization not in NORMS:
            raise LightKDError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMS)}")
        if self.activation not in ACTIVATIONS:
            raise LightKDError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")

    @property
    def head_size(self) -> int:
        return self.intra_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_transformers(cls, hf, **overrides) -> "Config":
        """The same shape as a transformers ``MobileBertConfig``."""
        if not hf.use_bottleneck or hf.use_bottleneck_attention:
            raise LightKDError("only MobileBERT's own layout (use_bottleneck=True, use_bottleneck_attention=False) "
                               "is built here")
        act = hf.hidden_act if hf.hidden_act != "gelu_new" else "gelu"
        spec = dict(vocab_size=hf.vocab_size, num_labels=hf.num_labels, num_hidden_layers=hf.num_hidden_layers,
                    hidden_size=hf.hidden_size, intra_size=hf.intra_bottleneck_size,
                    num_attention_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
                    num_ffn=hf.num_feedforward_networks, embedding_size=hf.embedding_size, trigram=hf.trigram_input,
                    normalization=hf.normalization_type, activation=act,
                    key_query_shared_bottleneck=hf.key_query_shared_bottleneck,
                    max_position_embeddings=hf.max_position_embeddings, type_vocab_size=hf.type_vocab_size,
                    layer_norm_eps=hf.layer_norm_eps, pad_token_id=hf.pad_token_id)
        spec.update(overrides)
        return cls(**spec)


def student_config(teacher_config, intra_ratio: int = 4, num_ffn: int = 4, **overrides) -> Config:
    """A MobileBERT student for a BERT teacher: same depth, inter-block width =
    the teacher's hidden size (so feature maps compare without a projection),
    intra-block width a quarter of it (512 -> 128 in the paper), the teacher's
    head count (so attention maps compare head by head), FFN width 4x intra."""
    hidden = teacher_config.hidden_size
    if isinstance(intra_ratio, bool) or not isinstance(intra_ratio, int) or not 1 <= intra_ratio <= hidden:
        raise LightKDError(f"intra_ratio must be an integer from 1 to the hidden size {hidden}, got {intra_ratio!r}")
    intra = hidden // intra_ratio
    spec = dict(vocab_size=teacher_config.vocab_size, num_labels=getattr(teacher_config, "num_labels", 2),
                num_hidden_layers=teacher_config.num_hidden_layers, hidden_size=hidden, intra_size=intra,
                num_attention_heads=teacher_config.num_attention_heads, intermediate_size=4 * intra,
                num_ffn=num_ffn, embedding_size=intra, type_vocab_size=teacher_config.type_vocab_size,
                max_position_embeddings=teacher_config.max_position_embeddings,
                pad_token_id=teacher_config.pad_token_id or 0)
    spec.update(overrides)
    return Config(**spec)


# ------------------------------------------------------------------ pieces
class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise affine map, no
    statistics. On a phone (and a CPU) the mean and variance reductions of
    LayerNorm cost far more than their FLOPs suggest."""

    def __init__(self, width: int, eps: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        return x * self.weight + self.bias


def make_norm(name: str, width: int, eps: float = 1e-12) -> nn.Module:
    if name == "no_norm":
        return NoNorm(width)
    if name == "layer_norm":
        return nn.LayerNorm(width, eps=eps)
    raise LightKDError(f"unknown normalization name={name!r}; choose one of {', '.join(NORMS)}")


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()  # the exact (erf) GELU, transformers' "gelu"
    raise LightKDError(f"unknown activation name={name!r}; choose one of {', '.join(ACTIVATIONS)}")


class TrigramEmbedding(nn.Module):
    """Narrow word embeddings (128-d in the paper) widened by looking at the
    neighbours: concatenate the embeddings of tokens t-1, t, t+1 and project
    to the inter-block width. That is a kernel-3 1-D convolution over the
    sequence (``as_conv1d`` returns it as one). The table shrinks from
    vocab x 512 to vocab x 128; the projection adds only 3 x 128 x 512."""

    def __init__(self, config: Config):
        super().__init__()
        self.trigram = config.trigram
        self.word = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        width = config.embedding_size * (3 if config.trigram else 1)
        self.project = nn.Linear(width, config.hidden_size) \
            if config.trigram or config.embedding_size != config.hidden_size else nn.Identity()
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = make_norm(config.normalization, config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def trigrams(self, e):
        """(B, L, E) -> (B, L, 3E): [e_{t-1}, e_t, e_{t+1}], zeros beyond the ends."""
        previous = F.pad(e[:, :-1], (0, 0, 1, 0))
        following = F.pad(e[:, 1:], (0, 0, 0, 1))
        return torch.cat([previous, e, following], dim=-1)

    def as_conv1d(self) -> nn.Conv1d:
        """The projection as the kernel-3 convolution it is (channels = embedding dims)."""
        e = self.word.embedding_dim
        conv = nn.Conv1d(e, self.project.out_features, kernel_size=3, padding=1)
        with torch.no_grad():
            w = self.project.weight.view(-1, 3, e)  # (out, [t-1, t, t+1], E)
            conv.weight.copy_(w.permute(0, 2, 1))   # (out, E, k): k=0 sees t-1, k=2 sees t+1
            conv.bias.copy_(self.project.bias)
        return conv

    def forward(self, input_ids, token_type_ids=None):
        e = self.word(input_ids)
        if self.trigram:
            e = self.trigrams(e)
        e = self.project(e)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.dropout(self.norm(e + self.position(positions)[None] + self.token_type(types)))


class FFN(nn.Module):
    """One feed-forward network inside the bottleneck, with its residual and norm."""

    def __init__(self, config: Config):
        super().__init__()
        self.up = nn.Linear(config.intra_size, config.intermediate_size)
        self.act = make_activation(config.activation)
        self.down = nn.Linear(config.intermediate_size, config.intra_size)
        self.norm = make_norm(config.normalization, config.intra_size, config.layer_norm_eps)

    def forward(self, h):
        return self.norm(self.down(self.act(self.up(h))) + h)


class MobileBertBlock(nn.Module):
    """One MobileBERT layer, inter-block width H, intra-block width h (H > h):

        x (H) -> input bottleneck -> b (h)                 residual of attention
        x (H) -> query/key bottleneck -> s (h) -> Q, K     shared by Q and K
        x (H) -> V                                         values from the wide input
        a = norm(W_o attention(Q, K, V) + b)               (h)
        a = norm(FFN_i(a) + a), i = 1..F                   F stacked FFNs keep MHA:FFN balanced
        y = norm(W_up a + x)                               output bottleneck (H)
    """

    def __init__(self, config: Config):
        super().__init__()
        H, h = config.hidden_size, config.intra_size
        self.heads, self.head_size = config.num_attention_heads, config.head_size
        self.shared_qk = config.key_query_shared_bottleneck
        norm = lambda w: make_norm(config.normalization, w, config.layer_norm_eps)
        self.input_bottleneck, self.input_norm = nn.Linear(H, h), norm(h)
        if self.shared_qk:
            self.qk_bottleneck, self.qk_norm = nn.Linear(H, h), norm(h)
        self.query = nn.Linear(h if self.shared_qk else H, h)
        self.key = nn.Linear(h if self.shared_qk else H, h)
        self.value = nn.Linear(H, h)
        self.attention_out, self.attention_norm = nn.Linear(h, h), norm(h)
        self.ffns = nn.ModuleList([FFN(config) for _ in range(config.num_ffn)])
        self.output_bottleneck, self.output_norm = nn.Linear(h, H), norm(H)
        self.dropout = nn.Dropout(config.dropout)

    def _split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_size).transpose(1, 2)

    def forward(self, x, additive_mask=None):
        """x: (B, L, H); additive_mask: (B, 1, 1, L), 0 for tokens, very negative for padding.
        Returns the block output (B, L, H) and the attention probabilities (B, heads, L, L)."""
        b = self.input_norm(self.input_bottleneck(x))
        s = self.qk_norm(self.qk_bottleneck(x)) if self.shared_qk else x
        q, k, v = self._split(self.query(s)), self._split(self.key(s)), self._split(self.value(x))
        context, probs = attention_with_probs(q, k, v, additive_mask)
        context = context.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        a = self.attention_norm(self.attention_out(context) + b)
        for ffn in self.ffns:
            a = ffn(a)
        y = self.output_norm(self.dropout(self.output_bottleneck(a)) + x)
        return y, probs


class _Encoder(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.layer = nn.ModuleList([MobileBertBlock(config) for _ in range(config.num_hidden_layers)])


Output = ModelOutput  # the core's output protocol (lightkd.models)


class MobileBert(nn.Module):
    """MobileBERT for sequence classification: trigram embedding, blocks, a
    BERT-style pooler (first token, dense, tanh) and a linear classifier.

    ``forward(input_ids, attention_mask, output_hidden_states=..., output_attentions=...)``
    mirrors transformers: ``hidden_states[0]`` is the embedding output,
    ``hidden_states[k]`` the output of block k; ``attentions[i]`` block i's
    probabilities."""

    base_model_prefix = ""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.embeddings = TrigramEmbedding(config)
        self.encoder = _Encoder(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states: bool = False,
                output_attentions: bool = False, **_):
        x = self.embeddings(input_ids, token_type_ids)
        additive = None if attention_mask is None else additive_key_mask(attention_mask, x.dtype)
        hidden, attentions = [x], []
        for block in self.encoder.layer:
            x, probs = block(x, additive)
            hidden.append(x)
            attentions.append(probs)
        logits = self.classifier(torch.tanh(self.pooler(x[:, 0])))
        return Output(logits=logits, last_hidden_state=x,
                      hidden_states=tuple(hidden) if output_hidden_states else None,
                      attentions=tuple(attentions) if output_attentions else None)


def encoder_params(model: nn.Module) -> int:
    """Parameters of the transformer layers only (no embeddings, pooler, classifier)."""
    return sum(p.numel() for p in encoder_layers(model)[1].parameters())


# ---------------------------------------------- transformers' weights
def transformers_layer_names(num_ffn: int, shared_qk: bool = True) -> dict[str, str]:
    """Our block's parameter prefixes -> transformers' MobileBertLayer prefixes.
    transformers keeps the last FFN apart (``intermediate`` / ``output``) and
    the F-1 others in ``ffn``; here all F sit in one list."""
    names = {"input_bottleneck": "bottleneck.input.dense", "input_norm": "bottleneck.input.LayerNorm",
             "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attention_out": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
             "output_bottleneck": "output.bottleneck.dense", "output_norm": "output.bottleneck.LayerNorm"}
    if shared_qk:
        names.update({"qk_bottleneck": "bottleneck.attention.dense", "qk_norm": "bottleneck.attention.LayerNorm"})
    for i in range(num_ffn - 1):
        names.update({f"ffns.{i}.up": f"ffn.{i}.intermediate.dense", f"ffns.{i}.down": f"ffn.{i}.output.dense",
                      f"ffns.{i}.norm": f"ffn.{i}.output.LayerNorm"})
    last = num_ffn - 1
    names.update({f"ffns.{last}.up": "intermediate.dense", f"ffns.{last}.down": "output.dense",
                  f"ffns.{last}.norm": "output.LayerNorm"})
    return names


def load_transformers_layer(block: MobileBertBlock, hf_layer) -> MobileBertBlock:
    """Copy the weights of a transformers ``MobileBertLayer`` into ``block``."""
    names = transformers_layer_names(len(block.ffns), block.shared_qk)
    theirs = hf_layer.state_dict()
    state = {}
    for ours in block.state_dict():
        prefix, _, leaf = ours.rpartition(".")
        key = f"{names[prefix]}.{leaf}"
        if key not in theirs:
            raise LightKDError(f"transformers' layer has no {key} for our {ours}: the configs differ")
        state[ours] = theirs[key]
    block.load_state_dict(state, strict=True)
    return block


def load_transformers_embeddings(embeddings: TrigramEmbedding, hf_embeddings) -> TrigramEmbedding:
    """Copy transformers' ``MobileBertEmbeddings`` into ours. transformers
    concatenates [t+1, t, t-1]; we write [t-1, t, t+1], so the projection's
    three column blocks are reversed."""
    sd, e = hf_embeddings.state_dict(), embeddings.word.embedding_dim
    state = {"word.weight": sd["word_embeddings.weight"], "position.weight": sd["position_embeddings.weight"],
             "token_type.weight": sd["token_type_embeddings.weight"],
             "norm.weight": sd["LayerNorm.weight"], "norm.bias": sd["LayerNorm.bias"]}
    if isinstance(embeddings.project, nn.Linear):
        w = sd["embedding_transformation.weight"]
        if embeddings.trigram:
            w = torch.cat([w[:, 2 * e:], w[:, e:2 * e], w[:, :e]], dim=1)
        state.update({"project.weight": w, "project.bias": sd["embedding_transformation.bias"]})
    embeddings.load_state_dict(state, strict=True)
    return embeddings


# ------------------------------------------------------- parameter arithmetic
def block_params(hidden: int, intra: int, intermediate: int, num_ffn: int, shared_qk: bool = True) -> int:
    """Parameters of one block from its shape (weights + biases + norm gamma/beta)."""
    lin = lambda i, o: i * o + o
    norm = lambda w: 2 * w
    qk_in = intra if shared_qk else hidden
    n = lin(hidden, intra) + norm(intra)                          # input bottleneck
    n += (lin(hidden, intra) + norm(intra)) if shared_qk else 0   # shared query/key bottleneck
    n += 2 * lin(qk_in, intra) + lin(hidden, intra)               # Q, K from the bottleneck; V from the input
    n += lin(intra, intra) + norm(intra)                          # attention output
    n += num_ffn * (lin(intra, intermediate) + lin(intermediate, intra) + norm(intra))
    n += lin(intra, hidden) + norm(hidden)                        # output bottleneck
    return n


def mha_ffn_ratio(hidden: int, intra: int, intermediate: int, num_ffn: int, shared_qk: bool = True) -> float:
    """Parameters on the attention side over those of the stacked FFNs (the paper's best: 0.4-0.6).

    The attention side is everything that turns the wide block input into the
    attention output: the input and query/key bottlenecks, Q, K, V and the
    output projection. That is the paper's point: MHA reads the wide
    (inter-block) features, the FFNs only the narrow ones, so a bottlenecked
    block needs several FFNs to restore the balance."""
    lin = lambda i, o: i * o + o
    qk_in = intra if shared_qk else hidden
    mha = lin(hidden, intra) + (lin(hidden, intra) if shared_qk else 0)
    mha += 2 * lin(qk_in, intra) + lin(hidden, intra) + lin(intra, intra)
    ffn = num_ffn * (lin(intra, intermediate) + lin(intermediate, intra))
    return mha / ffn


def bert_block_params(hidden: int, intermediate: int) -> int:
    """One BERT layer: Q, K, V, O, two norms, the FFN."""
    return 4 * (hidden * hidden + hidden) + 2 * (2 * hidden) + 2 * hidden * intermediate + intermediate + hidden


# ----------------------------------------------------- knowledge transfer
def _layer_norm(x):
    return F.layer_norm(x.float(), (x.shape[-1],))


def feature_map_loss(student, teacher, mask=None, **_) -> torch.Tensor:
    """MobileBERT's feature-map transfer: MSE between the parameter-free
    LayerNorm of the student's and the teacher's layer outputs. Normalizing
    first makes the loss ignore each token's offset and scale (the NoNorm
    student has no LayerNorm to produce the teacher's), which is also why the
    mean and variance terms exist as separate, optional losses."""
    if student.shape != teacher.shape:
        raise LightKDError(f"feature map: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; the "
                           "student's inter-block width must equal the teacher's hidden size")
    return distill.mse_loss(_layer_norm(student), _layer_norm(teacher), mask)


def mean_gap_loss(student, teacher, mask=None, **_) -> torch.Tensor:
    """(mean_s - mean_t)^2 of each token's features (official weight: 5000)."""
    return distill.masked_mean((student.float().mean(-1) - teacher.float().mean(-1)) ** 2, mask)


def variance_gap_loss(student, teacher, mask=None, **_) -> torch.Tensor:
    """|var_s - var_t| of each token's features (official weight: 5)."""
    v_s = student.float().var(-1, unbiased=False)
    v_t = teacher.float().var(-1, unbiased=False)
    return distill.masked_mean((v_s - v_t).abs(), mask)


def group_heads(attention: torch.Tensor, heads: int) -> torch.Tensor:
    """Average groups of consecutive teacher heads down to ``heads`` heads.

    A mean of probability distributions is a probability distribution, so
    each grouped row still sums to 1 and KL(grouped teacher || student) is a
    proper divergence; with equal head counts it is the identity."""
    b, n, q, k = attention.shape
    if heads < 1 or n % heads:
        raise LightKDError(f"the teacher's {n} heads cannot be grouped into {heads} student heads; "
                           f"give the student a head count that divides {n} (the same count is best)")
    return attention.view(b, heads, n // heads, q, k).mean(2)


def grouped_attention_kl(student, teacher, mask=None, **_) -> torch.Tensor:
    """Attention transfer when the teacher has k times the student's heads."""
    return distill.attention_kl_loss(student, group_heads(teacher, student.shape[1]), mask)


@dataclass
class TransferWeights:
    """Loss weights of layer-wise transfer. The official code: feature map x100
    (spread over the L layers), attention 1, mean 5000 and variance 5 (0 here
    by default: they are the options)."""
    feature_map: float = 100.0
    attention: float = 1.0
    mean: float = 0.0
    variance: float = 0.0


def transfer_matches(teacher, student, layer: int | None = None,
                     weights: TransferWeights | None = None) -> list:
    """The layer-wise matches, as ``distill.Match`` data.

    Block l of the student (1..L) matches block l of the teacher: its output
    after LayerNorm (feature map) and its attention (KL(teacher || student)
    per head). ``layer`` picks one block (progressive transfer); None: all.
    """
    w = weights or TransferWeights()
    t_cfg = getattr(teacher, "config", teacher)
    s_cfg = getattr(student, "config", student)
    L = s_cfg.num_hidden_layers
    if t_cfg.num_hidden_layers != L:
        raise LightKDError(f"layer-wise transfer pairs layers one to one: the teacher has {t_cfg.num_hidden_layers} "
                           f"layers and the student {L}; build the student with the teacher's depth")
    if w.feature_map and s_cfg.hidden_size != t_cfg.hidden_size:
        raise LightKDError(f"feature-map transfer compares layer outputs, but the student's inter-block width "
                           f"({s_cfg.hidden_size}) differs from the teacher's hidden size ({t_cfg.hidden_size}); set "
                           f"hidden_size={t_cfg.hidden_size} (MobileBERT's reason for IB-BERT) or turn the feature-map "
                           "weight off")
    t_heads, s_heads = t_cfg.num_attention_heads, s_cfg.num_attention_heads
    if w.attention and t_heads != s_heads and t_heads % s_heads:
        raise LightKDError(f"attention transfer compares heads: the teacher's {t_heads} heads cannot be grouped "
                           f"into the student's {s_heads}")
    attn_loss = "attention_kl" if t_heads == s_heads else grouped_attention_kl
    layers = range(1, L + 1) if layer is None else [layer]
    matches = []
    for l in layers:
        if not 1 <= l <= L:
            raise LightKDError(f"the student has layers 1..{L}, not {l}")
        if w.feature_map:
            matches.append(distill.Match(l, l, "hidden", feature_map_loss, weight=w.feature_map / L))
        if w.attention:
            matches.append(distill.Match(l - 1, l - 1, "attention", attn_loss, weight=w.attention))
        if w.mean:
            matches.append(distill.Match(l, l, "hidden", mean_gap_loss, weight=w.mean / L))
        if w.variance:
            matches.append(distill.Match(l, l, "hidden", variance_gap_loss, weight=w.variance / L))
    return matches


@torch.no_grad()
def init_from_teacher(student: MobileBert, teacher) -> list[str]:
    """Copy what fits from a BERT teacher; returns what was copied.

    Position and token-type embeddings, pooler and classifier have the same
    shapes (inter-block width = teacher hidden) and are copied. The word
    table is narrower (embedding_size < hidden): it gets the teacher's table
    projected on its top principal directions, and the trigram projection's
    middle slot maps them back, so the first embedding the student computes
    is the teacher's, up to the dropped directions."""
    bert = getattr(teacher, "bert", teacher)
    done = []
    emb, t_emb = student.embeddings, bert.embeddings
    for ours, theirs, name in ((emb.position, t_emb.position_embeddings, "position embeddings"),
                               (emb.token_type, t_emb.token_type_embeddings, "token-type embeddings")):
        if ours.weight.shape == theirs.weight.shape:
            ours.weight.copy_(theirs.weight)
            done.append(name)
    table = t_emb.word_embeddings.weight.float()
    if table.shape[0] == emb.word.weight.shape[0]:
        e = emb.word.embedding_dim
        if table.shape[1] == e:
            emb.word.weight.copy_(table)
        else:
            basis = low_rank(table, e)[1]                       # (E, H): top principal directions
            emb.word.weight.copy_(table @ basis.T)
            if isinstance(emb.project, nn.Linear) and emb.project.out_features == table.shape[1]:
                emb.project.weight.zero_()
                emb.project.bias.zero_()
                middle = slice(e, 2 * e) if emb.trigram else slice(0, e)
                emb.project.weight[:, middle] = basis.T
        done.append(f"word embeddings (top {emb.word.embedding_dim} principal directions)")
    pooler = getattr(bert, "pooler", None)
    if pooler is not None and student.pooler.weight.shape == pooler.dense.weight.shape:
        student.pooler.load_state_dict(pooler.dense.state_dict())
        done.append("pooler")
    classifier = getattr(teacher, "classifier", None)
    if classifier is not None and student.classifier.weight.shape == classifier.weight.shape:
        student.classifier.load_state_dict(classifier.state_dict())
        done.append("classifier")
    return done


# --------------------------------------------------------------- strategies
STRATEGIES = ("auxiliary", "joint", "progressive")


def progressive_factors(layer: int, steps_per_layer: int, during: float = 3.0, after: float = 0.3):
    """lr factor of block ``layer`` (0-based) at a step: 0 before its phase,
    ``during`` in it, ``after`` once later blocks train (slowed, not frozen)."""
    if isinstance(steps_per_layer, bool) or not isinstance(steps_per_layer, int) or steps_per_layer < 1:
        raise LightKDError(f"a progressive schedule needs at least one step per layer (steps_per_layer), got "
                           f"{steps_per_layer!r}; "
                           "raise the step budget or use fewer layers")

    def factor(step: int) -> float:
        phase = step // steps_per_layer
        return 0.0 if phase < layer else during if phase == layer else after
    return factor


class ProgressiveLoss:
    """Layer l's transfer loss during its phase [l P, (l+1) P), nothing else."""

    def __init__(self, losses: list, steps_per_layer: int):
        self.losses, self.steps_per_layer, self.calls = losses, steps_per_layer, 0

    def __call__(self, model, batch):
        phase = min(self.calls // self.steps_per_layer, len(self.losses) - 1)
        self.calls += 1
        value, logs = self.losses[phase](model, batch)
        return value, {"phase": phase, **logs}


def task_loss(teacher, student, alpha: float = 0.5, temperature: float = 1.0):
    """Task distillation: alpha * KL(teacher || student) on the logits + (1 - alpha) * CE."""
    matches, hard = distill.kd_matches(alpha)
    return distill.DistillationLoss(teacher, student, matches, temperature=temperature, hard_weight=hard)


def layerwise_transfer(student: MobileBert, teacher, train_batches, strategy: str, steps: int, *,
                       lr: float = 1e-3, weights: TransferWeights | None = None, seed: int | None = None,
                       bf16=False, progress=None):
    """Stage 1 on a fixed step budget. ``teacher``: the model or a ``distill.TeacherCache``.

    - ``"auxiliary"``: layer-wise losses of every block beside the task loss, all at once.
    - ``"joint"``: layer-wise losses of every block at once (the task comes in stage 2).
    - ``"progressive"``: block l alone during its phase of ``steps // L`` steps;
      its learning rate is 3x in the phase and 0.3x after, 0 before. The
      embeddings train with block 0, the pooler and classifier wait (lr 0).
    Returns the ``train.FitResult``.
    """
    if strategy not in STRATEGIES:
        raise LightKDError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LightKDError(f"steps must be a positive integer, got {steps!r}")
    L = student.config.num_hidden_layers
    if strategy == "progressive":
        per_layer = steps // L
        progressive_factors(0, per_layer)  # checks per_layer >= 1 with a clear message
        losses = [distill.DistillationLoss(teacher, student, transfer_matches(teacher, student, l + 1, weights))
                  for l in range(L)]
        groups, lambdas = [], []
        blocks = student.encoder.layer
        embed = list(student.embeddings.parameters())
        for l, block in enumerate(blocks):
            groups.append({"params": list(block.parameters()) + (embed if l == 0 else [])})
            lambdas.append(progressive_factors(l, per_layer))
        head = list(student.pooler.parameters()) + list(student.classifier.parameters())
        groups.append({"params": head})
        lambdas.append(lambda step: 0.0)
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
        return fit(student, train_batches, None, max_steps=per_layer * L, loss=ProgressiveLoss(losses, per_layer),
                   optimizer=optimizer, lr_lambda=lambdas, seed=seed, bf16=bf16, progress=progress)
    matches, hard = transfer_matches(teacher, student, None, weights), 0.0
    if strategy == "auxiliary":  # the task terms ride along in the same forward pass
        kd, hard = distill.kd_matches(0.5)
        matches += kd
    loss = distill.DistillationLoss(teacher, student, matches, hard_weight=hard)
    return fit(student, train_batches, None, max_steps=steps, lr=lr, loss=loss, weight_decay=0.0,
               warmup_ratio=0.05, seed=seed, bf16=bf16, progress=progress)


def task_distill(student: MobileBert, teacher, train_batches, dev_batches, steps: int, *, lr: float = 3e-4,
                 alpha: float = 0.5, seed: int | None = None, bf16=False, progress=None, eval_every=None):
    """Stage 2: task distillation (soft targets + labels) for ``steps`` steps."""
    return fit(student, train_batches, dev_batches, max_steps=steps, lr=lr, loss=task_loss(teacher, student, alpha),
               weight_decay=0.01, warmup_ratio=0.1, seed=seed, bf16=bf16, progress=progress, eval_every=eval_every)


# ---------------------------------------------------------------- exercises
def nonorm_reference(x, weight, bias):
    return x * weight + bias


def check_nonorm(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``nonorm(x, weight, bias)`` for x of any leading shape."""
    def make(rng):
        width = rng.randint(1, 64)
        shape = [rng.randint(1, 4) for _ in range(rng.randint(0, 3))] + [width]
        return torch.randn(*shape) * rng.choice([0.1, 1.0, 10.0]), torch.randn(width), torch.randn(width)
    return check_function(candidate, nonorm_reference, make, trials=trials, seed=seed, name="nonorm")


def bottleneck_shapes_reference(batch: int, seq: int, hidden: int, intra: int, heads: int, intermediate: int):
    """Shapes inside a block: (bottleneck out, per-head queries, FFN hidden, block out)."""
    return ((batch, seq, intra), (batch, heads, seq, intra // heads), (batch, seq, intermediate),
            (batch, seq, hidden))


def check_bottleneck_shapes(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: the tensor shapes inside a MobileBERT block, as tuples."""
    def make(rng):
        heads = rng.choice([1, 2, 4, 8, 12])
        intra = heads * rng.randint(2, 16)
        return (rng.randint(1, 8), rng.randint(1, 128), intra * rng.choice([2, 3, 4]), intra, heads,
                intra * rng.choice([1, 2, 4]))
    wrap = lambda *a: tuple(tuple(s) for s in candidate(*a))
    return check_function(wrap, bottleneck_shapes_reference, make, trials=trials, seed=seed,
                          name="bottleneck_shapes")
