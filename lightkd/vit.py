"""Vision transformers and their distillation, in plain torch.

Read top to bottom:

1. ``patchify``: an image becomes a sequence of flattened patches.
2. ``ViTConfig`` / ``VisionTransformer``: patch embedding, a class token (and
   DeiT's distillation token), position embeddings, pre-norm blocks. The
   attention takes an optional *key mask* (DynamicViT drops tokens through
   it) and the blocks can share one set of weights across depth (MiniViT).
   ``to_transformers`` copies it into transformers' ViT / DeiT (equal logits).
3. ``attention_rollout``: where the class token looks, across layers.
4. ``SmallCNN``: the convnet teacher DeiT says a transformer learns best from.
5. ``augmentation_params`` / ``augment`` / ``AugmentedBatches``: random shifts
   and flips that are a pure function of (seed, epoch, sample), so a stored
   teacher output can be matched to the exact view the student sees.
6. DeiT's losses: ``soft_distillation_loss`` (KL at temperature tau, times
   tau^2), ``hard_distillation_loss`` (CE on the teacher's argmax) and
   ``deit_loss`` = (1 - alpha) CE + alpha distill.
7. TinyViT's fast distillation: ``teacher_logits_for_views`` runs the teacher
   once per view; ``TeacherLogitStore`` keeps its top-k probabilities and
   their indices per (epoch, sample); ``sparse_soft_labels`` rebuilds the soft
   label while the student trains without the teacher in memory.
8. Check functions for the exercises.

Every vision model here takes ``pixel_values=`` so ``lightkd.train.fit`` and
``evaluate`` work unchanged.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LightKDError
from .exercises import check_function


# ------------------------------------------------------------------ patches
def check_patch_size(image_size: int, patch_size: int) -> int:
    """The number of patches along one side; a clear error when it does not divide."""
    if not isinstance(patch_size, int) or patch_size < 1:
        raise LightKDError(f"patch_size must be a positive integer, got {patch_size!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise LightKDError(f"image_size must be a positive integer, got {image_size!r}")
    if image_size % patch_size:
        divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
        raise LightKDError(f"patch size {patch_size} does not divide image size {image_size}; "
                           f"pick one of {divisors} or resize the images")
    return image_size // patch_size


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, num_patches, C * p * p), patches in reading order
    (left to right, top to bottom), each flattened channel-first."""
    if images.ndim != 4:
        raise LightKDError(f"images must be (batch, channels, height, width), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    gh, gw = check_patch_size(h, patch_size), check_patch_size(w, patch_size)
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    x = x.permute(0, 2, 4, 1, 3, 5)  # B, gh, gw, C, p, p
    return x.reshape(b, gh * gw, c * patch_size * patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 1) -> torch.Tensor:
    """The inverse of ``patchify`` for square images."""
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
        check_patch_size(self.image_size, self.patch_size)
        for name in ("in_channels", "num_classes", "dim", "depth", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LightKDError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise LightKDError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.mlp_ratio <= 0 or not 0 <= self.dropout < 1:
            raise LightKDError(f"need mlp_ratio > 0 and 0 <= dropout < 1, got {self.mlp_ratio}, {self.dropout}")

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
    (DynamicViT's ``softmax_with_policy``).
    """
    if key_mask is None:
        return scores.softmax(-1)
    n = scores.shape[-1]
    if key_mask.shape != (scores.shape[0], n):
        raise LightKDError(f"key_mask must be (batch, tokens) = {(scores.shape[0], n)}, got {tuple(key_mask.shape)}")
    policy = key_mask.to(scores.dtype)[:, None, None, :]  # B, 1, 1, N
    eye = torch.eye(n, dtype=scores.dtype, device=scores.device)
    policy = policy + (1.0 - policy) * eye
    weights = torch.exp(scores - scores.amax(-1, keepdim=True)) * policy
    return (weights + eps / n) / (weights.sum(-1, keepdim=True) + eps)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
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
        self.fc1, self.fc2, self.drop = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x, key_mask=None, return_attention: bool = False):
        h, attn = self.attn(self.norm1(x), key_mask=key_mask, return_attention=return_attention)
        x = x + h
        return x + self.mlp(self.norm2(x)), attn


# -------------------------------------------------------------------- model
@dataclass
class ViTOutput:
    """``logits`` is what a classifier reports: the class head, or with a
    distillation token the average of both heads (DeiT at test time)."""
    logits: torch.Tensor
    cls_logits: torch.Tensor
    dist_logits: torch.Tensor | None = None
    attentions: tuple | None = None
    hidden_states: torch.Tensor | None = None


class VisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
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
            raise LightKDError(f"expected images of shape (batch, {c.in_channels}, {c.image_size}, {c.image_size}), "
                               f"got {tuple(pixel_values.shape)}")
        pixel_values = (pixel_values - c.pixel_mean) / c.pixel_std
        tokens = self.patch_embed(patchify(pixel_values, c.patch_size))
        extra = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        extra = torch.cat(extra, dim=1).expand(len(tokens), -1, -1)
        return torch.cat([extra, tokens], dim=1) + self.pos_embed

    def forward(self, pixel_values, key_mask=None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> ViTOutput:
        """``key_mask`` (B, num_patches): 1 keeps a patch token, 0 hides it from
        every other token's attention (class and distillation tokens are always kept)."""
        x = self.embed(pixel_values)
        if key_mask is not None:
            keep_extra = torch.ones(len(x), self.config.num_extra_tokens, dtype=key_mask.dtype, device=key_mask.device)
            key_mask = torch.cat([keep_extra, key_mask], dim=1)
        attentions = []
        for block in self.blocks:
            x, attn = block(x, key_mask=key_mask, return_attention=output_attentions)
            attentions.append(attn)
        x = self.norm(x)
        cls_logits = self.head(x[:, 0])
        dist_logits = self.head_dist(x[:, 1]) if self.head_dist is not None else None
        logits = cls_logits if dist_logits is None else (cls_logits + dist_logits) / 2
        return ViTOutput(logits, cls_logits, dist_logits, tuple(attentions) if output_attentions else None,
                         x if output_hidden_states else None)


def to_transformers(model: VisionTransformer):
    """The same network as a transformers ``ViTForImageClassification`` (or, with
    a distillation token, ``DeiTForImageClassificationWithTeacher``), weights
    copied. transformers leaves pixel normalisation to its image processor, so
    feed it ``(pixels - config.pixel_mean) / config.pixel_std``. A shared-weights
    model comes out with each layer holding its own copy."""
    from transformers import (DeiTConfig, DeiTForImageClassificationWithTeacher, ViTConfig as HFViTConfig,
                              ViTForImageClassification)
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


def attention_rollout(attentions, num_extra_tokens: int = 1, token: int = 0) -> torch.Tensor:
    """Abnar and Zuidema's rollout: average the heads, add the identity for the
    residual path, renormalise, multiply through the layers. Returns how much
    ``token`` (default the class token) draws from each patch: (B, num_patches)."""
    if not attentions or attentions[0] is None:
        raise LightKDError("no attentions: call the model with output_attentions=True")
    result = None
    for a in attentions:
        a = a.float().mean(1)  # B, N, N
        a = a + torch.eye(a.shape[-1])
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

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        side = image_size // 4
        self.features = nn.Sequential(stage(in_channels, width), stage(width, 2 * width), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(2 * width * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, pixel_values):
        return self.head(self.features(pixel_values))


# ------------------------------------------------------------- augmentation
def augmentation_params(n: int, epoch: int, seed: int, max_shift: int = 0, flip: bool = True) -> dict:
    """Shifts and flips for all ``n`` samples of one epoch, a pure function of
    (seed, epoch): sample i of epoch e always gets the same view, which is
    what lets TinyViT store the teacher's output for that view."""
    g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return {"shift_y": shifts[:, 0], "shift_x": shifts[:, 1], "flip": flips}


def augment(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Shift each image by whole pixels (zero fill) and mirror the flagged ones."""
    b, c, h, w = images.shape
    pad = int(max(shift_y.abs().max(), shift_x.abs().max())) if b else 0
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(h)[None, :] + pad - shift_y[:, None]  # B, H
    cols = torch.arange(w)[None, :] + pad - shift_x[:, None]  # B, W
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


class AugmentedBatches:
    """Shuffled, augmented mini-batches of an image split, re-iterable (one pass
    = one epoch). Batches are dicts with ``pixel_values``, ``labels``, ``index``.

    ``seed`` decides each sample's view (a stored teacher output is only valid
    for the view it was computed on); ``order_seed`` decides the order of
    samples, which may differ between runs that share a store. With
    ``teacher_logits`` (epochs, N, C) batches also carry the teacher's dense
    logits for exactly this view; with ``store`` its top-k (``teacher_values``,
    ``teacher_indices``).
    """

    def __init__(self, split, batch_size: int = 128, seed: int = 0, order_seed: int | None = None,
                 max_shift: int = 0, flip: bool = True, teacher_logits: "TeacherLogits | None" = None,
                 store: "TeacherLogitStore | None" = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise LightKDError(f"batch_size must be a positive integer, got {batch_size!r}")
        for source in (teacher_logits, store):
            if source is not None:
                if (source.seed, source.max_shift, source.flip) != (seed, max_shift, flip):
                    raise LightKDError(
                        f"the teacher outputs were computed for augmentation (seed={source.seed}, max_shift="
                        f"{source.max_shift}, flip={source.flip}); these batches use ({seed}, {max_shift}, {flip}). "
                        "They must match, or the student would learn from the teacher's view of another image.")
                if source.num_samples != len(split):
                    raise LightKDError(f"the teacher outputs cover {source.num_samples} samples, the split has {len(split)}")
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.order_seed = seed if order_seed is None else order_seed
        self.max_shift, self.flip, self.teacher_logits, self.store = max_shift, flip, teacher_logits, store
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        epoch, n = self.epoch, len(self.split)
        for source in (self.teacher_logits, self.store):
            if source is not None and epoch >= source.epochs:
                raise LightKDError(f"the teacher outputs cover {source.epochs} epochs; this is epoch {epoch + 1}. "
                                   "Compute more epochs or train fewer.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.order_seed * 100003 + epoch + 7919))
        params = augmentation_params(n, epoch, self.seed, self.max_shift, self.flip)
        self.epoch += 1
        for s in range(0, n, self.batch_size):
            rows = order[s:s + self.batch_size]
            batch = {"pixel_values": augment(self.split.images[rows], params["shift_y"][rows],
                                             params["shift_x"][rows], params["flip"][rows]),
                     "labels": self.split.labels[rows], "index": rows}
            if self.teacher_logits is not None:
                batch["teacher_logits"] = self.teacher_logits.logits[epoch, rows]
            if self.store is not None:
                batch["teacher_values"] = self.store.values[epoch, rows]
                batch["teacher_indices"] = self.store.indices[epoch, rows]
            yield batch


@dataclass
class TeacherLogits:
    """The teacher's logits for every view a student will see: (epochs, N, C)."""
    logits: torch.Tensor
    seed: int
    max_shift: int
    flip: bool
    teacher_forward_passes: int
    seconds: float

    @property
    def epochs(self) -> int:
        return self.logits.shape[0]

    @property
    def num_samples(self) -> int:
        return self.logits.shape[1]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[2]


@torch.no_grad()
def teacher_logits_for_views(teacher, split, epochs: int, seed: int, max_shift: int = 0, flip: bool = True,
                             batch_size: int = 1000) -> TeacherLogits:
    """Run ``teacher`` once over every augmented view of ``epochs`` epochs."""
    if not isinstance(epochs, int) or epochs < 1:
        raise LightKDError(f"epochs must be a positive integer, got {epochs!r}")
    teacher.eval()
    start, n, out = time.perf_counter(), len(split), []
    for epoch in range(epochs):
        params = augmentation_params(n, epoch, seed, max_shift, flip)
        parts = []
        for s in range(0, n, batch_size):
            rows = torch.arange(s, min(s + batch_size, n))
            view = augment(split.images[rows], params["shift_y"][rows], params["shift_x"][rows], params["flip"][rows])
            parts.append(_logits(teacher(pixel_values=view)).float())
        out.append(torch.cat(parts))
    return TeacherLogits(torch.stack(out), seed, max_shift, flip, epochs * n, time.perf_counter() - start)


# ------------------------------------------------------------ DeiT's losses
def check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise LightKDError(f"alpha weighs distillation against the labels and must be in [0, 1], got {alpha!r}")
    return float(alpha)


def check_tau(tau: float) -> float:
    if not isinstance(tau, (int, float)) or tau <= 0:
        raise LightKDError(f"the temperature tau must be positive, got {tau!r}")
    return float(tau)


def soft_distillation_loss(student_logits, teacher_logits, tau: float = 1.0, reduction: str = "batchmean"):
    """tau^2 KL(softmax(teacher / tau) || softmax(student / tau)).

    ``reduction="batchmean"`` divides the summed KL by the batch size (the
    equation in the papers); ``"numel"`` divides by batch x classes, which is
    what DeiT's losses.py does (its issue 61): the same gradient direction,
    num_classes times weaker.
    """
    tau = check_tau(tau)
    if student_logits.shape != teacher_logits.shape:
        raise LightKDError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                           f"{tuple(teacher_logits.shape)} must have the same shape")
    kl = F.kl_div(F.log_softmax(student_logits.float() / tau, -1), F.log_softmax(teacher_logits.float() / tau, -1),
                  reduction="sum", log_target=True) * tau * tau
    if reduction == "batchmean":
        return kl / student_logits.shape[0]
    if reduction == "numel":
        return kl / student_logits.numel()
    raise LightKDError(f"reduction must be 'batchmean' or 'numel', got {reduction!r}")


def hard_distillation_loss(student_logits, teacher_logits):
    """Cross-entropy against the teacher's argmax: the teacher's decision as a label."""
    return F.cross_entropy(student_logits.float(), teacher_logits.argmax(-1))


DISTILLATION_KINDS = ("none", "soft", "hard")


def deit_loss(cls_logits, labels, dist_logits=None, teacher_logits=None, kind: str = "hard",
              alpha: float = 0.5, tau: float = 1.0, reduction: str = "batchmean", teacher_probs=None):
    """(1 - alpha) CE(class head, labels) + alpha distill(distillation head, teacher).

    Returns (loss, {"ce": ..., "distill": ...}). ``kind="none"`` is plain CE.
    Without a distillation token pass the class logits as ``dist_logits``
    (both terms then act on the one head, as in Hinton's KD). The teacher
    comes as ``teacher_logits`` or, rebuilt from a TinyViT store, as
    ``teacher_probs`` (probabilities at tau = 1).
    """
    alpha = check_alpha(alpha)
    if kind not in DISTILLATION_KINDS:
        raise LightKDError(f"kind must be one of {DISTILLATION_KINDS}, got {kind!r}")
    ce = F.cross_entropy(cls_logits.float(), labels)
    if kind == "none":
        return ce, {"ce": ce.item()}
    if dist_logits is None or (teacher_logits is None) == (teacher_probs is None):
        raise LightKDError(f"{kind} distillation needs dist_logits and exactly one of teacher_logits, teacher_probs")
    if teacher_probs is not None:  # stored top-k: KL(p || q) at tau = 1, or CE on the stored argmax
        if kind == "soft":
            if check_tau(tau) != 1.0:
                raise LightKDError(f"stored probabilities are at tau = 1; soft distillation from them needs tau=1, got {tau}")
            log_q = F.log_softmax(dist_logits.float(), -1)
            kl = (teacher_probs * (teacher_probs.clamp_min(1e-12).log() - log_q)).sum()
            distill = kl / (dist_logits.shape[0] if reduction == "batchmean" else dist_logits.numel())
        else:
            distill = F.cross_entropy(dist_logits.float(), teacher_probs.argmax(-1))
    elif kind == "soft":
        distill = soft_distillation_loss(dist_logits, teacher_logits, tau, reduction)
    else:
        distill = hard_distillation_loss(dist_logits, teacher_logits)
    return (1 - alpha) * ce + alpha * distill, {"ce": ce.item(), "distill": distill.item()}


def deit_loss_fn(teacher=None, kind: str = "hard", alpha: float = 0.5, tau: float = 1.0,
                 reduction: str = "batchmean"):
    """A ``loss(model, batch)`` for ``lightkd.train.fit``.

    Where the teacher's opinion comes from, first match wins: the batch's
    stored top-k (``teacher_values``/``teacher_indices``, TinyViT), the batch's
    dense ``teacher_logits``, or ``teacher`` run online on the same augmented
    images, in eval mode, without gradients (DeiT).
    """
    check_alpha(alpha), check_tau(tau)
    if kind not in DISTILLATION_KINDS:
        raise LightKDError(f"kind must be one of {DISTILLATION_KINDS}, got {kind!r}")
    if teacher is not None:
        teacher.eval()

    def loss(model, batch):
        out = model(pixel_values=batch["pixel_values"])
        dist = out.dist_logits if out.dist_logits is not None else out.cls_logits
        teacher_logits = teacher_probs = None
        if kind != "none":
            if "teacher_values" in batch:
                num_classes = out.cls_logits.shape[-1]
                teacher_probs = sparse_soft_labels(batch["teacher_values"], batch["teacher_indices"], num_classes)
            elif "teacher_logits" in batch:
                teacher_logits = batch["teacher_logits"]
            elif teacher is not None:
                with torch.no_grad():
                    teacher_logits = _logits(teacher(pixel_values=batch["pixel_values"])).float()
            else:
                raise LightKDError(f"{kind} distillation needs a teacher, or batches that carry its outputs")
        return deit_loss(out.cls_logits, batch["labels"], dist, teacher_logits, kind, alpha, tau, reduction,
                         teacher_probs)

    return loss


def _logits(output):
    return output if isinstance(output, torch.Tensor) else output.logits


@torch.no_grad()
def evaluate_heads(model, batches) -> dict:
    """Test accuracy of the class head, the distillation head, and their average."""
    model.eval()
    hits = {"cls": 0, "dist": 0, "both": 0}
    total = 0
    for batch in batches:
        out = model(pixel_values=batch["pixel_values"])
        y = batch["labels"]
        hits["cls"] += (out.cls_logits.argmax(-1) == y).sum().item()
        if out.dist_logits is not None:
            hits["dist"] += (out.dist_logits.argmax(-1) == y).sum().item()
        hits["both"] += (out.logits.argmax(-1) == y).sum().item()
        total += len(y)
    return {k: v / total for k, v in hits.items()}


# ------------------------------------------------------ TinyViT's stored logits
def check_k(k: int, num_classes: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= num_classes:
        raise LightKDError(f"k (how many teacher probabilities to keep) must be an integer from 1 to "
                           f"the number of classes {num_classes}, got {k!r}")
    return k


def topk_probs(logits: torch.Tensor, k: int):
    """The teacher's k largest probabilities and their class indices (TinyViT
    stores probabilities, not logits: float16 values, int16 indices)."""
    check_k(k, logits.shape[-1])
    values, indices = logits.float().softmax(-1).topk(k, dim=-1)
    return values.to(torch.float16), indices.to(torch.int16)


def sparse_soft_labels(values: torch.Tensor, indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rebuild a full distribution from top-k: the stored probabilities where
    they were, the remaining mass spread evenly over the other classes."""
    k = values.shape[-1]
    check_k(k, num_classes)
    values = values.float()
    rest = (1.0 - values.sum(-1, keepdim=True)).clamp(min=0.0) / max(num_classes - k, 1)
    labels = rest.expand(*values.shape[:-1], num_classes).clone()
    return labels.scatter(-1, indices.long(), values)


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c p_c log q_c (TinyViT's distillation loss)."""
    return -(target_probs * F.log_softmax(student_logits.float(), -1)).sum(-1).mean()


@dataclass
class TeacherLogitStore:
    """Top-k teacher probabilities for every (epoch, sample) of a training run:
    what TinyViT writes to disk once and reads back for every student."""
    values: torch.Tensor    # (epochs, N, k) float16, sorted, largest first
    indices: torch.Tensor   # (epochs, N, k) int16
    num_classes: int
    seed: int
    max_shift: int = 0
    flip: bool = True
    teacher_forward_passes: int = 0
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        return self.values.shape[0]

    @property
    def num_samples(self) -> int:
        return self.values.shape[1]

    @property
    def k(self) -> int:
        return self.values.shape[-1]

    def nbytes(self) -> int:
        """Bytes of the stored values and indices (the per-sample augmentation
        seed costs the same in a dense store and is left out of both)."""
        return self.values.numel() * self.values.element_size() + self.indices.numel() * self.indices.element_size()

    def dense_nbytes(self) -> int:
        """What storing every class's probability at the same precision would take."""
        return self.epochs * self.num_samples * self.num_classes * self.values.element_size()

    @classmethod
    def from_logits(cls, teacher: TeacherLogits, k: int) -> "TeacherLogitStore":
        values, indices = topk_probs(teacher.logits, k)
        return cls(values, indices, teacher.num_classes, teacher.seed, teacher.max_shift, teacher.flip,
                   teacher.teacher_forward_passes, teacher.seconds)

    @classmethod
    def build(cls, teacher, split, epochs: int, k: int, seed: int, max_shift: int = 0, flip: bool = True,
              batch_size: int = 1000) -> "TeacherLogitStore":
        """Run ``teacher`` once over every view the student will see; keep top-k."""
        return cls.from_logits(teacher_logits_for_views(teacher, split, epochs, seed, max_shift, flip, batch_size), k)

    def soft_labels(self, epoch: int, rows) -> torch.Tensor:
        return sparse_soft_labels(self.values[epoch, rows], self.indices[epoch, rows], self.num_classes)


# ---------------------------------------------------------------- exercises
def check_patchify(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: write ``patchify(images, patch_size)`` -> (B, N, C*p*p)."""
    def make(rng):
        p = rng.choice([1, 2, 3, 4, 7])
        side = p * rng.randrange(1, 6)
        return torch.randn(rng.randrange(1, 4), rng.choice([1, 3]), side, side), p
    return check_function(candidate, patchify, make, trials=trials, seed=seed, name="patchify")


def check_hard_distillation_loss(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: write ``hard_distillation_loss(student_logits, teacher_logits)``."""
    def make(rng):
        b, c = rng.randrange(1, 17), rng.randrange(2, 12)
        return torch.randn(b, c) * rng.uniform(0.5, 4), torch.randn(b, c) * rng.uniform(0.5, 4)
    return check_function(candidate, hard_distillation_loss, make, trials=trials, seed=seed,
                          name="hard_distillation_loss")


def check_sparse_soft_labels(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: rebuild TinyViT's soft label from stored top-k."""
    def make(rng):
        c = rng.randrange(2, 20)
        k = rng.randrange(1, c + 1)
        values, indices = topk_probs(torch.randn(rng.randrange(1, 9), c) * rng.uniform(0.5, 5), k)
        return values, indices, c
    return check_function(candidate, sparse_soft_labels, make, trials=trials, seed=seed, atol=1e-3,
                          name="sparse_soft_labels")
