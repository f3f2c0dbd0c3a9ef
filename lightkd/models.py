"""The plain-torch backbones every chapter may build on, and the one output
protocol every lightkd model follows.

Read top to bottom:

1. ``ModelOutput``: what every lightkd model returns, shaped like
   transformers' outputs: ``logits``; ``hidden_states`` as a tuple with the
   embedding output first and one entry per layer; ``attentions`` as a tuple
   with one (batch, heads, tokens, tokens) tensor per layer;
   ``last_hidden_state`` (after the final norm, as transformers' ViT). So
   ``lightkd.distill`` captures features from a lightkd model exactly as
   from a transformers one.
2. ``patchify``: an image becomes a sequence of flattened patches.
3. ``ViTConfig`` / ``VisionTransformer``: patch embedding, a class token (and
   DeiT's distillation token), position embeddings, pre-norm blocks. The
   attention takes an optional *key mask* (token sparsification hides tokens
   through it) and the blocks can share one set of weights across depth
   (weight sharing). ``to_transformers`` copies it into transformers' ViT /
   DeiT (equal logits).
4. ``attention_rollout``: where the class token looks, across layers.
5. ``SmallCNN``: the convnet teacher DeiT says a transformer learns best from.

Every vision model here takes ``pixel_values=`` so ``lightkd.train.fit`` and
``evaluate`` work unchanged. Methods (DeiT, MiniViT, DynamicViT, ...) live in
their own modules and build on these.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LightKDError, require_number, require_positive_int, require_tensor


# ------------------------------------------------------------ the protocol
@dataclass
class ModelOutput:
    """What every lightkd model returns (the fields transformers' outputs use).

    ``hidden_states[0]`` is the embedding output and ``hidden_states[k]`` the
    output of layer k; ``attentions[i]`` layer i's attention probabilities.
    Both are None unless asked for with ``output_hidden_states`` /
    ``output_attentions``. ``cls_logits`` / ``dist_logits`` are DeiT's two
    heads (``logits`` is their average at test time)."""
    logits: torch.Tensor
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    last_hidden_state: torch.Tensor | None = None
    cls_logits: torch.Tensor | None = None
    dist_logits: torch.Tensor | None = None


# ------------------------------------------------------------------ patches
def require_patch_size(image_size: int, patch_size: int) -> int:
    """The number of patches along one side; a clear error when it does not divide."""
    require_positive_int("patch_size", patch_size)
    require_positive_int("image_size", image_size)
    if image_size % patch_size:
        divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
        raise LightKDError(f"patch_size {patch_size} does not divide image size {image_size}; "
                           f"pick one of {divisors} or resize the images")
    return image_size // patch_size


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, num_patches, C * p * p), patches in reading order
    (left to right, top to bottom), each flattened channel-first."""
    require_tensor("images", images)
    if images.ndim != 4:
        raise LightKDError(f"images must be (batch, channels, height, width), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    gh, gw = require_patch_size(h, patch_size), require_patch_size(w, patch_size)
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    x = x.permute(0, 2, 4, 1, 3, 5)  # B, gh, gw, C, p, p
    return x.reshape(b, gh * gw, c * patch_size * patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 1) -> torch.Tensor:
    """The inverse of ``patchify`` for square images."""
    require_tensor("patches", patches, dims=3)
    require_positive_int("patch_size", patch_size)
    require_positive_int("channels", channels)
    b, n, d = patches.shape
    side = math.isqrt(n)
    if side * side != n or d != channels * patch_size ** 2:
        raise LightKDError(f"cannot fold {n} patches of {d} values into a square {channels}-channel image")
    x = patches.reshape(b, side, side, channels, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, side * patch_size, side * patch_size)


# ------------------------------------------------------------------- config
@dataclass
class ViTConfig:
    """Everything that decides a ViT's shape. ``share_weights`` ties the
    attention and MLP weights of every block to the first block's (MiniViT
    keeps a LayerNorm per layer, and so do we)."""
    image_size: int = 28
    patch_size: int = 7
    in_channels: int = 1
    num_classes: int = 10
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    distillation_token: bool = False
    share_weights: bool = False
    pixel_mean: float = 0.2860  # Fashion-MNIST's training-set mean and std
    pixel_std: float = 0.3530

    def __post_init__(self):
        require_patch_size(self.image_size, self.patch_size)
        for name in ("in_channels", "num_classes", "dim", "depth", "heads"):
            require_positive_int(name, getattr(self, name))
        if self.dim % self.heads:
            raise LightKDError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or \
                not math.isfinite(self.mlp_ratio) or self.mlp_ratio <= 0 or \
                isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise LightKDError(f"need mlp_ratio > 0 and 0 <= dropout < 1, got {self.mlp_ratio}, {self.dropout}")
        if int(self.dim * self.mlp_ratio) < 1:
            raise LightKDError(f"mlp_ratio {self.mlp_ratio} leaves the MLP of a {self.dim}-wide ViT no hidden unit; "
                               f"give mlp_ratio >= {1 / self.dim:g}")
        # pixels are normalised as (x - pixel_mean) / pixel_std: a zero or non-finite std makes every token inf or NaN
        require_number("pixel_mean", self.pixel_mean)
        require_number("pixel_std", self.pixel_std, low=0, low_open=True)
        for name in ("distillation_token", "share_weights"):
            if not isinstance(getattr(self, name), bool):
                raise LightKDError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_extra_tokens(self) -> int:
        """Tokens before the patches: the class token, and DeiT's distillation token."""
        return 2 if self.distillation_token else 1

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- attention
def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """Softmax over keys that ignores keys whose mask is 0.

    ``key_mask`` is (B, N) with 1 = keep, 0 = drop, or anything in between
    (DynamicViT trains with soft Gumbel masks, so the mask must carry
    gradients: we multiply, not fill with -inf). A dropped token still attends
    to itself (and the kept tokens), which keeps every row well defined
    (DynamicViT's ``softmax_with_policy``). Unlike the official code we
    subtract the largest score among the keys a row may see, not among all
    keys: when a dropped key scores highest, the kept weights would otherwise
    underflow towards the ``eps`` terms and the masked pass would drift from
    a pass over the kept tokens alone.
    """
    require_tensor("scores", scores, dims=4, nonempty=False)
    if key_mask is None:
        return scores.softmax(-1)
    require_tensor("key_mask", key_mask, nonempty=False)
    n = scores.shape[-1]
    if key_mask.shape != (scores.shape[0], n):
        raise LightKDError(f"key_mask must be (batch, tokens) = {(scores.shape[0], n)}, got {tuple(key_mask.shape)}")
    if key_mask.is_floating_point() and not torch.isfinite(key_mask).all():  # a NaN weight spreads to every row
        raise LightKDError("key_mask holds NaN or inf; it must hold 1 (keep), 0 (drop) or a weight in between")
    policy = key_mask.to(scores.dtype)[:, None, None, :]  # B, 1, 1, N
    eye = torch.eye(n, dtype=scores.dtype, device=scores.device)
    policy = policy + (1.0 - policy) * eye
    top = scores.detach().masked_fill(policy == 0, float("-inf")).amax(-1, keepdim=True)
    weights = torch.exp((scores - top).clamp(max=0.0)) * policy  # clamp: a dropped key's exp cannot overflow
    return (weights + eps / n) / (weights.sum(-1, keepdim=True) + eps)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        require_positive_int("dim", dim)
        require_positive_int("heads", heads)
        if dim % heads:
            raise LightKDError(f"dim {dim} must be divisible by heads {heads}")
        require_number("dropout", dropout, low=0, high=1, high_open=True)
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, key_mask=None, return_attention: bool = False):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if key_mask is None and not return_attention:  # the fused kernel: same math, faster
            out = F.scaled_dot_product_attention(q, k, v)
            attn = None
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            attn = masked_softmax(scores, key_mask)
            out = self.drop(attn) @ v
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj(out), attn


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        require_positive_int("dim", dim)
        require_positive_int("hidden", hidden)
        self.fc1, self.fc2, self.drop = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        require_positive_int("dim", dim)
        require_number("mlp_ratio", mlp_ratio, low=0, low_open=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x, key_mask=None, return_attention: bool = False):
        h, attn = self.attn(self.norm1(x), key_mask=key_mask, return_attention=return_attention)
        x = x + h
        return x + self.mlp(self.norm2(x)), attn


# -------------------------------------------------------------------- model
ViTOutput = ModelOutput  # the name chapter 7 first met it under


class VisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise LightKDError(f"config must be a lightkd.models.ViTConfig, got {type(config).__name__}")
        self.config = c = config
        self.patch_embed = nn.Linear(c.in_channels * c.patch_size ** 2, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.distillation_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_extra_tokens + c.num_patches, c.dim))
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        if c.share_weights:  # one block's attention and MLP at every depth; LayerNorms stay per layer
            for block in self.blocks[1:]:
                block.attn, block.mlp = self.blocks[0].attn, self.blocks[0].mlp
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)
        self.head_dist = nn.Linear(c.dim, c.num_classes) if c.distillation_token else None
        self._init_weights()

    def _init_weights(self):
        # Tokens and positions start small (as in DeiT); the Linear layers keep
        # torch's default init, which trains faster than std 0.02 at this tiny width.
        for p in (self.cls_token, self.pos_embed, self.dist_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image -> tokens: [cls, (dist), patch_1 ... patch_N] plus positions."""
        c = self.config
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (c.in_channels, c.image_size, c.image_size):
            raise LightKDError(f"pixel_values must be images of shape (batch, {c.in_channels}, {c.image_size}, "
                               f"{c.image_size}), got {tuple(pixel_values.shape)}")
        if not torch.isfinite(pixel_values).all():
            raise LightKDError("pixel_values hold NaN or inf; check the image loading")
        pixel_values = (pixel_values - c.pixel_mean) / c.pixel_std
        tokens = self.patch_embed(patchify(pixel_values, c.patch_size))
        extra = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        extra = torch.cat(extra, dim=1).expand(len(tokens), -1, -1)
        return torch.cat([extra, tokens], dim=1) + self.pos_embed

    def forward(self, pixel_values, key_mask=None, output_attentions: bool = False,
                output_hidden_states: bool = False, **_) -> ModelOutput:
        """``key_mask`` (B, num_patches): 1 keeps a patch token, 0 hides it from
        every other token's attention (class and distillation tokens are always kept)."""
        x = self.embed(pixel_values)
        if key_mask is not None:
            require_tensor("key_mask", key_mask, nonempty=False)
            if tuple(key_mask.shape) != (len(x), self.config.num_patches):
                raise LightKDError(f"key_mask must be (batch, num_patches) = {(len(x), self.config.num_patches)}, "
                                   f"got {tuple(key_mask.shape)}")
            keep_extra = torch.ones(len(x), self.config.num_extra_tokens, dtype=key_mask.dtype, device=key_mask.device)
            key_mask = torch.cat([keep_extra, key_mask], dim=1)
        hidden, attentions = [x], []
        for block in self.blocks:
            x, attn = block(x, key_mask=key_mask, return_attention=output_attentions)
            hidden.append(x)
            attentions.append(attn)
        x = self.norm(x)
        return self.classify(x, tuple(hidden) if output_hidden_states else None,
                             tuple(attentions) if output_attentions else None)

    def classify(self, x, hidden_states=None, attentions=None) -> ModelOutput:
        """The heads on the normed tokens: class token (and distillation token)."""
        cls_logits = self.head(x[:, 0])
        dist_logits = self.head_dist(x[:, 1]) if self.head_dist is not None else None
        logits = cls_logits if dist_logits is None else (cls_logits + dist_logits) / 2
        return ModelOutput(logits, hidden_states, attentions, x, cls_logits, dist_logits)


def to_transformers(model: VisionTransformer):
    """The same network as a transformers ``ViTForImageClassification`` (or, with
    a distillation token, ``DeiTForImageClassificationWithTeacher``), weights
    copied. transformers leaves pixel normalisation to its image processor, so
    feed it ``(pixels - config.pixel_mean) / config.pixel_std``. A shared-weights
    model comes out with each layer holding its own copy."""
    from transformers import (DeiTConfig, DeiTForImageClassificationWithTeacher, ViTConfig as HFViTConfig,
                              ViTForImageClassification)
    if not isinstance(model, VisionTransformer):
        raise LightKDError(f"model must be a lightkd.models.VisionTransformer, got {type(model).__name__}")
    c = model.config
    kwargs = dict(hidden_size=c.dim, num_hidden_layers=c.depth, num_attention_heads=c.heads,
                  intermediate_size=int(c.dim * c.mlp_ratio), image_size=c.image_size, patch_size=c.patch_size,
                  num_channels=c.in_channels, num_labels=c.num_classes, hidden_act="gelu", layer_norm_eps=1e-5,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True)
    if c.distillation_token:
        hf, root = DeiTForImageClassificationWithTeacher(DeiTConfig(**kwargs)), "deit"
    else:
        hf, root = ViTForImageClassification(HFViTConfig(**kwargs)), "vit"
    d, p = c.dim, c.patch_size
    state = {f"{root}.embeddings.cls_token": model.cls_token,
             f"{root}.embeddings.position_embeddings": model.pos_embed,
             f"{root}.embeddings.patch_embeddings.projection.weight": model.patch_embed.weight.reshape(d, c.in_channels, p, p),
             f"{root}.embeddings.patch_embeddings.projection.bias": model.patch_embed.bias,
             f"{root}.layernorm.weight": model.norm.weight, f"{root}.layernorm.bias": model.norm.bias}
    if c.distillation_token:
        state.update({"deit.embeddings.distillation_token": model.dist_token,
                      "cls_classifier.weight": model.head.weight, "cls_classifier.bias": model.head.bias,
                      "distillation_classifier.weight": model.head_dist.weight,
                      "distillation_classifier.bias": model.head_dist.bias})
    else:
        state.update({"classifier.weight": model.head.weight, "classifier.bias": model.head.bias})
    for i, block in enumerate(model.blocks):
        layer = f"{root}.encoder.layer.{i}"
        for j, name in enumerate(("query", "key", "value")):  # our fused qkv rows are [q; k; v]
            state[f"{layer}.attention.attention.{name}.weight"] = block.attn.qkv.weight[j * d:(j + 1) * d]
            state[f"{layer}.attention.attention.{name}.bias"] = block.attn.qkv.bias[j * d:(j + 1) * d]
        for ours, theirs in ((block.attn.proj, "attention.output.dense"), (block.mlp.fc1, "intermediate.dense"),
                             (block.mlp.fc2, "output.dense"), (block.norm1, "layernorm_before"),
                             (block.norm2, "layernorm_after")):
            state[f"{layer}.{theirs}.weight"], state[f"{layer}.{theirs}.bias"] = ours.weight, ours.bias
    hf.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return hf.eval()


def from_transformers(hf, pixel_mean: float = 0.0, pixel_std: float = 1.0) -> VisionTransformer:
    """The inverse of ``to_transformers``: a transformers ``ViTForImageClassification``
    or ``DeiTForImageClassification(WithTeacher)`` (e.g. a DeiT from the hub) as
    a ``VisionTransformer``, weights copied. The hub models expect their image
    processor's normalised pixels, hence ``pixel_mean`` 0 and ``pixel_std`` 1."""
    if not (hasattr(hf, "vit") or hasattr(hf, "deit")) or not hasattr(hf, "config"):
        raise LightKDError(f"hf must be a transformers ViT or DeiT image classifier, got {type(hf).__name__}")
    c = hf.config
    root = "deit" if hasattr(hf, "deit") else "vit"
    state = {k: v for k, v in hf.state_dict().items()}
    dist = f"{root}.embeddings.distillation_token" in state and "distillation_classifier.weight" in state
    head = "cls_classifier" if "cls_classifier.weight" in state else "classifier"
    config = ViTConfig(image_size=c.image_size, patch_size=c.patch_size, in_channels=c.num_channels,
                       num_classes=state[f"{head}.weight"].shape[0], dim=c.hidden_size, depth=c.num_hidden_layers,
                       heads=c.num_attention_heads, mlp_ratio=c.intermediate_size / c.hidden_size,
                       distillation_token=dist, pixel_mean=pixel_mean, pixel_std=pixel_std)
    if c.hidden_act != "gelu" or not getattr(c, "qkv_bias", True):
        raise LightKDError(f"only GELU ViTs with qkv biases convert; this one has {c.hidden_act!r}")
    model = VisionTransformer(config)
    d = c.hidden_size
    ours = {"cls_token": f"{root}.embeddings.cls_token", "pos_embed": f"{root}.embeddings.position_embeddings",
            "norm.weight": f"{root}.layernorm.weight", "norm.bias": f"{root}.layernorm.bias",
            "head.weight": f"{head}.weight", "head.bias": f"{head}.bias"}
    if dist:
        ours.update({"dist_token": f"{root}.embeddings.distillation_token",
                     "head_dist.weight": "distillation_classifier.weight",
                     "head_dist.bias": "distillation_classifier.bias"})
    new = {k: state[v] for k, v in ours.items()}
    new["patch_embed.weight"] = state[f"{root}.embeddings.patch_embeddings.projection.weight"].reshape(d, -1)
    new["patch_embed.bias"] = state[f"{root}.embeddings.patch_embeddings.projection.bias"]
    for i in range(c.num_hidden_layers):
        layer = f"{root}.encoder.layer.{i}"
        for kind in ("weight", "bias"):   # our fused qkv rows are [q; k; v]
            new[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [state[f"{layer}.attention.attention.{n}.{kind}"] for n in ("query", "key", "value")])
            for mine, theirs in (("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                                 ("mlp.fc2", "output.dense"), ("norm1", "layernorm_before"),
                                 ("norm2", "layernorm_after")):
                new[f"blocks.{i}.{mine}.{kind}"] = state[f"{layer}.{theirs}.{kind}"]
    model.load_state_dict({k: v.detach().clone() for k, v in new.items()}, strict=True)
    for module in model.modules():  # the hub's ViTs use eps 1e-12, ours 1e-5 by default
        if isinstance(module, nn.LayerNorm):
            module.eps = c.layer_norm_eps
    return model.eval()


def attention_rollout(attentions, num_extra_tokens: int = 1, token: int = 0) -> torch.Tensor:
    """Abnar and Zuidema's rollout: average the heads, add the identity for the
    residual path, renormalise, multiply through the layers. Returns how much
    ``token`` (default the class token) draws from each patch: (B, num_patches)."""
    if not isinstance(attentions, (list, tuple)) or not attentions or attentions[0] is None:
        raise LightKDError("no attentions: call the model with output_attentions=True")
    shape = tuple(attentions[0].shape)
    for a in attentions:
        require_tensor("attentions", a, dims=4)
        if tuple(a.shape) != shape or shape[-1] != shape[-2]:
            raise LightKDError(f"attentions must be (batch, heads, tokens, tokens) maps of one shape, got "
                               f"{tuple(a.shape)} beside {shape}")
    require_positive_int("num_extra_tokens", num_extra_tokens, minimum=0)
    if num_extra_tokens >= shape[-1]:
        raise LightKDError(f"num_extra_tokens {num_extra_tokens} leaves no patch among {shape[-1]} tokens")
    if isinstance(token, bool) or not isinstance(token, int) or not -shape[-1] <= token < shape[-1]:
        raise LightKDError(f"token must index one of the {shape[-1]} tokens, got {token!r}")
    result = None
    for a in attentions:
        a = a.float().mean(1)  # B, N, N
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result[:, token, num_extra_tokens:]


# ------------------------------------------------------------------ teacher
class SmallCNN(nn.Module):
    """The convnet teacher: two 3x3 conv stages with batch norm and max
    pooling, then a small MLP on the 7x7 feature map. Its built-in locality is
    the inductive bias DeiT argues a transformer student picks up through
    distillation."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, hidden: int = 128,
                 image_size: int = 28):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width),
                            ("hidden", hidden), ("image_size", image_size)):
            require_positive_int(name, value)
        if image_size % 4:
            raise LightKDError(f"image_size must be divisible by 4 (two 2x2 poolings), got {image_size}")

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.side = side = image_size // 4
        self.features = nn.Sequential(stage(in_channels, width), stage(width, 2 * width), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(2 * width * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, pixel_values, **_) -> ModelOutput:
        require_tensor("pixel_values", pixel_values, dims=4)
        channels, side = self.features[0][0].in_channels, self.side
        if pixel_values.shape[1] != channels or (pixel_values.shape[-2] // 4, pixel_values.shape[-1] // 4) != (side, side):
            raise LightKDError(f"pixel_values must be images of shape (batch, {channels}, {4 * side}, {4 * side}) "
                               f"(the size this SmallCNN was built for), got {tuple(pixel_values.shape)}")
        return ModelOutput(logits=self.head(self.features(pixel_values)))
