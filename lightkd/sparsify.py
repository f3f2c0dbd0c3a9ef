"""Token sparsification: run a transformer on fewer tokens than it was given.

Read top to bottom:

1. Schedules and costs: ``keep_schedule`` (DynamicViT's rho, rho^2, rho^3),
   ``prune_locations`` (after a quarter, half and three quarters of the
   depth: blocks 3, 6, 9 of DeiT-S), ``kept_count``, and ``block_flops`` /
   ``blocks_flops``, the matmul FLOPs of pre-norm blocks over a given number
   of tokens (attention grows with the square of the tokens, the rest
   linearly).
2. DynamicViT (Rao et al., 2021): ``gumbel_softmax_hard`` (a straight-through
   hard sample), ``TokenPredictor`` (local features beside a policy-weighted
   global feature, an MLP to keep / drop log-probabilities) and
   ``DynamicViT``, which wraps a ``lightkd.models.VisionTransformer``. In
   training it samples hard masks and hides the dropped tokens from attention
   through the policy (``lightkd.models.masked_softmax``); in eval it keeps the
   top-k tokens by score and really drops the rest. ``dynamicvit_loss``:
   CE + 2.0 keep-ratio MSE + 0.5 KL on the class token + 0.5 MSE on the kept
   tokens, the unpruned backbone as teacher.
3. EViT (Liang et al., 2022): keep the patches the class token attends to
   most, fuse the rest into one token. No parameters, no training.
4. ToMe (Bolya et al., 2023), written from the paper: ``bipartite_matching``
   (alternate tokens into sets A and B, cosine similarity of keys, the r best
   A -> B edges), ``merge_tokens`` (size-weighted means) and ``ToMe`` with
   proportional attention (scores + log size). No training.
5. Text: ``PrunedBert`` eliminates word vectors progressively by attention
   significance (PoWER-BERT, LTP), training-free, on a transformers BERT
   sequence classifier, computed from the model's own weights.
6. Exercise checks: ``check_gumbel_softmax_hard``, ``check_bipartite_matching``,
   ``check_blocks_flops``.

Every model returns ``SparseOutput`` (a ``ModelOutput`` that also carries
the keep decisions and, for the pictures, which original patches survive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import additive_key_mask, attention_with_probs, encoder_layers
from .common import (LightKDError, require_positive_int, require_temperature, require_tensor, require_weight)
from .distill import soft_target_loss
from .exercises import check_function
from .models import ModelOutput, VisionTransformer


# ------------------------------------------------------- schedules and cost
def require_rho(rho, name: str = "rho") -> float:
    """A keep ratio in (0, 1]."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or not 0 < rho <= 1:
        raise LightKDError(f"{name} is the fraction of tokens kept and must lie in (0, 1], got {rho!r}")
    return float(rho)


def keep_schedule(rho: float, stages: int = 3) -> list[float]:
    """DynamicViT's hierarchical keep ratios: rho, rho^2, ..., rho^stages
    (each relative to the full number of patches)."""
    rho = require_rho(rho)
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise LightKDError(f"stages must be a positive integer, got {stages!r}")
    return [rho ** (s + 1) for s in range(stages)]


def prune_locations(depth: int, stages: int = 3) -> list[int]:
    """The blocks before which tokens are pruned: evenly spaced, [3, 6, 9] for
    12 blocks and 3 stages (DeiT-S), [1, 2, 3] for 4 blocks."""
    require_positive_int("depth", depth)
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise LightKDError(f"the keep schedule needs at least one stage, got {stages!r}")
    if stages >= depth:
        raise LightKDError(f"a keep schedule of {stages} stages is too long for a backbone of depth {depth}: "
                           f"it needs at most depth - 1 = {depth - 1} stages (one prune point between blocks)")
    return [depth * (s + 1) // (stages + 1) for s in range(stages)]


def _check_locations(locations, depth: int, stages: int) -> list[int]:
    try:
        locations = list(locations)
    except TypeError:
        raise LightKDError(f"locations must be a list of block indices, got {locations!r}") from None
    if len(locations) != stages:
        raise LightKDError(f"need one location per keep ratio: {stages} ratios, {len(locations)} locations")
    if any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i < depth for i in locations) or locations != sorted(set(locations)):
        raise LightKDError(f"locations must be increasing block indices in [1, {depth - 1}], got {locations}")
    return locations


def kept_count(n: int, ratio: float) -> int:
    """How many of ``n`` patches a keep ratio keeps (DynamicViT: int(n * ratio), at least one)."""
    require_positive_int("n", n)
    require_rho(ratio, "ratio")
    return max(1, int(n * ratio + 1e-9))


def block_flops(tokens: int, dim: int, hidden: int) -> int:
    """Matmul FLOPs (a multiply-add counts 2) of one pre-norm block over
    ``tokens`` tokens: qkv (3 d^2), the output projection (d^2) and the MLP
    (2 d h) per token, plus QK^T and AV (2 n^2 d together) over the token pairs."""
    require_positive_int("tokens", tokens, minimum=0)
    require_positive_int("dim", dim)
    require_positive_int("hidden", hidden)
    n, d, h = tokens, dim, hidden
    return 2 * n * d * (4 * d + 2 * h) + 4 * n * n * d


def blocks_flops(tokens_per_block, dim: int, hidden: int) -> int:
    """FLOPs of a stack of blocks, each over its own number of tokens."""
    if isinstance(tokens_per_block, (int, str)) or not hasattr(tokens_per_block, "__iter__"):
        raise LightKDError(f"tokens_per_block must be a list of token counts, one per block, got {tokens_per_block!r}")
    return sum(block_flops(n, dim, hidden) for n in tokens_per_block)


def dynamicvit_tokens(num_patches: int, depth: int, rho: float, extra: int = 1, stages: int = 3) -> list[int]:
    """Tokens each block sees in DynamicViT's inference (class token included)."""
    require_positive_int("num_patches", num_patches)
    require_positive_int("extra", extra, minimum=0)
    ratios, locs = keep_schedule(rho, stages), prune_locations(depth, stages)
    tokens, n = [], num_patches
    for i in range(depth):
        if i in locs:
            n = kept_count(num_patches, ratios[locs.index(i)])
        tokens.append(n + extra)
    return tokens


# ------------------------------------------------------------- the output
@dataclass
class SparseOutput(ModelOutput):
    """``ModelOutput`` plus what the sparsifier decided.

    ``decisions``: per stage, (B, num_patches) keep masks (DynamicViT in
    training). ``kept``: per stage, (B, k) indices of the original patches
    still in the sequence (DynamicViT in eval; EViT, where -1 marks the fused
    token); for ToMe with ``track=True``, per block, (B, tokens, num_patches)
    0/1: which original patches each token holds. ``PrunedBert``: per layer,
    the positions kept (row i's first ``ceil(share * length_i)``)."""
    decisions: tuple | None = None
    kept: tuple | None = None


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), index (B, K) -> (B, K, C)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _require_keep_ratios(keep_ratios) -> list[float]:
    """A non-empty list of keep ratios, each in (0, 1]."""
    if isinstance(keep_ratios, (int, float, str)) or not hasattr(keep_ratios, "__iter__"):
        raise LightKDError(f"keep_ratios must be a list of keep ratios in (0, 1], one per stage, got {keep_ratios!r}")
    ratios = [require_rho(r, "each keep ratio") for r in keep_ratios]
    if not ratios:
        raise LightKDError("keep_ratios is empty: give at least one stage's keep ratio in (0, 1]")
    return ratios


def _check_backbone(backbone) -> VisionTransformer:
    if not isinstance(backbone, VisionTransformer):
        raise LightKDError(f"backbone must be a lightkd.models.VisionTransformer, got {type(backbone).__name__}")
    return backbone


# ------------------------------------------------------------- DynamicViT
def gumbel_softmax_hard(logits: torch.Tensor, noise: torch.Tensor | None = None, tau: float = 1.0) -> torch.Tensor:
    """A hard one-hot sample over the last dimension whose gradient is the soft
    sample's (straight-through): y = one_hot(argmax) - soft.detach() + soft,
    soft = softmax((logits + g) / tau), g ~ Gumbel(0, 1) (``noise`` if given)."""
    require_temperature("tau", tau)
    require_tensor("logits", logits, dims=tuple(range(1, 9)))
    if noise is None:
        noise = -torch.empty_like(logits).exponential_().log()
    elif not isinstance(noise, torch.Tensor) or noise.shape != logits.shape:
        raise LightKDError(f"noise must be a tensor shaped like logits {tuple(logits.shape)}, got "
                           f"{tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__}")
    soft = ((logits + noise) / tau).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


class TokenPredictor(nn.Module):
    """DynamicViT's prediction module: per token, keep / drop log-probabilities
    from its own (local) features beside the mean (global) features of the
    tokens still kept."""

    def __init__(self, dim: int):
        super().__init__()
        require_positive_int("dim", dim, minimum=4)  # the MLP narrows to dim // 4
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 4), nn.GELU(),
                                 nn.Linear(dim // 4, 2), nn.LogSoftmax(dim=-1))

    def forward(self, x: torch.Tensor, policy: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, C) patch tokens, policy (B, N) 1 = still kept. Returns (B, N, 2): log p(keep), log p(drop)."""
        x = self.inp(x)
        c = x.shape[-1] // 2
        local, rest = x[..., :c], x[..., c:]
        if policy is None:
            glob = rest.mean(1, keepdim=True)
        else:
            w = policy.unsqueeze(-1).to(x.dtype)
            glob = (rest * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-6)
        return self.out(torch.cat([local, glob.expand_as(rest)], dim=-1))


class DynamicViT(nn.Module):
    """A ViT that learns which patch tokens to drop.

    ``rho``: keep ratio of the first stage (stages keep rho, rho^2, ...); or
    ``keep_ratios`` explicitly. ``locations``: blocks before which each stage
    prunes (default ``prune_locations``). The backbone's weights are used,
    not copied."""

    def __init__(self, backbone: VisionTransformer, rho: float = 0.7, keep_ratios=None, locations=None,
                 tau: float = 1.0):
        super().__init__()
        self.backbone = _check_backbone(backbone)
        self.config = backbone.config
        depth = self.config.depth
        if keep_ratios is None:
            keep_ratios = keep_schedule(rho, 3)
        keep_ratios = _require_keep_ratios(keep_ratios)
        if len(keep_ratios) >= depth:
            raise LightKDError(f"a keep schedule of {len(keep_ratios)} stages is too long for a backbone of depth "
                               f"{depth}: it needs at most depth - 1 = {depth - 1} stages")
        self.keep_ratios = keep_ratios
        self.locations = (prune_locations(depth, len(keep_ratios)) if locations is None
                          else _check_locations(locations, depth, len(keep_ratios)))
        self.tau = require_temperature("tau", tau)  # the Gumbel-softmax's: <= 0 samples the least likely choice
        self.predictors = nn.ModuleList(TokenPredictor(self.config.dim) for _ in keep_ratios)

    # training: hard masks, dropped tokens hidden from attention through the policy
    def forward_masked(self, pixel_values, decide) -> SparseOutput:
        """Run every token, hiding the dropped ones through the attention policy.
        ``decide(stage, log_probs, decision) -> new decision (B, N)``."""
        bb, extra = self.backbone, self.config.num_extra_tokens
        x = bb.embed(pixel_values)
        b, n = len(x), self.config.num_patches
        decision = torch.ones(b, n, dtype=x.dtype, device=x.device)
        ones = torch.ones(b, extra, dtype=x.dtype, device=x.device)
        decisions, policy = [], None
        for i, block in enumerate(bb.blocks):
            if i in self.locations:
                stage = self.locations.index(i)
                log_probs = self.predictors[stage](x[:, extra:], decision)
                decision = decide(stage, log_probs, decision)
                decisions.append(decision)
                policy = torch.cat([ones, decision], dim=1)
            x, _ = block(x, key_mask=policy)
        out = bb.classify(bb.norm(x))
        return SparseOutput(out.logits, last_hidden_state=out.last_hidden_state, cls_logits=out.cls_logits,
                            dist_logits=out.dist_logits, decisions=tuple(decisions))

    def _sample(self, stage, log_probs, decision):
        return gumbel_softmax_hard(log_probs, tau=self.tau)[..., 0] * decision

    # inference: top-k tokens by score, the others removed from the sequence
    def forward_pruned(self, pixel_values) -> SparseOutput:
        bb, extra = self.backbone, self.config.num_extra_tokens
        x = bb.embed(pixel_values)
        n = self.config.num_patches
        index = torch.arange(n, device=x.device).expand(len(x), n)
        kept = []
        for i, block in enumerate(bb.blocks):
            if i in self.locations:
                stage = self.locations.index(i)
                k = kept_count(n, self.keep_ratios[stage])
                if k < x.shape[1] - extra:
                    score = self.predictors[stage](x[:, extra:])[..., 0]
                    top = score.topk(k, dim=1, sorted=False).indices
                    x = torch.cat([x[:, :extra], _gather_tokens(x[:, extra:], top)], dim=1)
                    index = index.gather(1, top)
                kept.append(index)
            x, _ = block(x)
        out = bb.classify(bb.norm(x))
        return SparseOutput(out.logits, last_hidden_state=out.last_hidden_state, cls_logits=out.cls_logits,
                            dist_logits=out.dist_logits, kept=tuple(kept))

    def forward(self, pixel_values, **_) -> SparseOutput:
        if self.training:
            return self.forward_masked(pixel_values, self._sample)
        return self.forward_pruned(pixel_values)


def dynamicvit_loss(teacher, keep_ratios, ratio_weight: float = 2.0, distill_weight: float = 0.5):
    """The training loss of DynamicViT's official code, for ``train.fit``:
    CE + ratio_weight * mean over stages of (mean keep - target)^2
    + distill_weight * KL(teacher || student) on the class token
    + distill_weight * MSE between the kept final tokens and the teacher's.
    ``teacher`` is the unpruned backbone (run without gradients)."""
    targets = _require_keep_ratios(keep_ratios)
    require_weight("ratio_weight", ratio_weight)
    require_weight("distill_weight", distill_weight)
    if not isinstance(teacher, nn.Module):
        raise LightKDError(f"teacher must be the unpruned backbone (an nn.Module), got {type(teacher).__name__}")
    teacher.eval()

    def loss(model, batch):
        out = model(pixel_values=batch["pixel_values"])
        if out.decisions is None or len(out.decisions) != len(targets):
            raise LightKDError("dynamicvit_loss needs a DynamicViT in training mode with one decision per keep ratio")
        with torch.no_grad():
            t = teacher(pixel_values=batch["pixel_values"])
        ce = F.cross_entropy(out.logits.float(), batch["labels"])
        ratio = sum(((d.float().mean(1) - r) ** 2).mean() for d, r in zip(out.decisions, targets)) / len(targets)
        kl = soft_target_loss(out.logits, t.logits, T=1.0)
        extra = model.config.num_extra_tokens
        keep = out.decisions[-1] > 0.5
        s_tok, t_tok = out.last_hidden_state[:, extra:].float(), t.last_hidden_state[:, extra:].float()
        token = ((s_tok - t_tok) ** 2)[keep].mean() if keep.any() else s_tok.new_zeros(())
        total = ce + ratio_weight * ratio + distill_weight * kl + distill_weight * token
        return total, {"ce": ce.item(), "ratio": ratio.item(), "kl": kl.item(), "token": token.item(),
                       "kept": out.decisions[-1].float().mean().item()}

    return loss


# -------------------------------------------------------------------- EViT
def _attention_parts(attn, x):
    b, n, d = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    return q, k, v


class EViT(nn.Module):
    """Training-free EViT on a trained backbone: in each pruning block, after
    the attention, keep the ``keep_rate`` share of patch tokens that the class
    token attended to most (heads averaged) and fuse the others into one token,
    their attention-weighted mean; the MLP then runs on the shorter sequence."""

    def __init__(self, backbone: VisionTransformer, keep_rate: float = 0.7, locations=None, stages: int = 3,
                 fuse: bool = True):
        super().__init__()
        self.backbone = _check_backbone(backbone)
        self.config = backbone.config
        self.keep_rate = require_rho(keep_rate, "keep_rate")
        depth = self.config.depth
        if locations is not None and not hasattr(locations, "__len__"):
            raise LightKDError(f"locations must be a list of block indices, got {locations!r}")
        self.locations = (prune_locations(depth, stages) if locations is None
                          else _check_locations(locations, depth, len(locations)))
        self.fuse = fuse

    def forward(self, pixel_values, **_) -> SparseOutput:
        bb, extra = self.backbone, self.config.num_extra_tokens
        x = bb.embed(pixel_values)
        b, n = len(x), self.config.num_patches
        index = torch.arange(n, device=x.device).expand(b, n)  # original patch of each token, -1 = fused
        kept = []
        for i, block in enumerate(bb.blocks):
            if i not in self.locations:
                x, _ = block(x)
                continue
            a = block.attn
            q, k, v = _attention_parts(a, block.norm1(x))
            h, probs = attention_with_probs(q, k, v)
            h = h.transpose(1, 2).reshape(x.shape)
            x = x + a.proj(h)
            cls_attn = probs[:, :, 0, extra:].mean(1)  # B, N - extra
            m = x.shape[1] - extra
            keep = math.ceil(self.keep_rate * m)
            if keep < m:
                order = cls_attn.argsort(dim=1, descending=True)
                top, rest = order[:, :keep], order[:, keep:]
                tokens = x[:, extra:]
                parts = [x[:, :extra], _gather_tokens(tokens, top)]
                if self.fuse:
                    w = cls_attn.gather(1, rest).unsqueeze(-1)
                    parts.append((_gather_tokens(tokens, rest) * w).sum(1, keepdim=True) / w.sum(1, keepdim=True))
                x = torch.cat(parts, dim=1)
                index = index.gather(1, top)
                if self.fuse:
                    index = torch.cat([index, index.new_full((b, 1), -1)], dim=1)
            kept.append(index)
            x = x + block.mlp(block.norm2(x))
        out = bb.classify(bb.norm(x))
        return SparseOutput(out.logits, last_hidden_state=out.last_hidden_state, cls_logits=out.cls_logits,
                            dist_logits=out.dist_logits, kept=tuple(kept))


# -------------------------------------------------------------------- ToMe
def require_merge_r(r, tokens: int, protected: int = 1) -> int:
    """ToMe's r: how many tokens one layer merges, at most half of the mergeable tokens."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise LightKDError(f"r (tokens merged per layer) must be a non-negative integer, got {r!r}")
    limit = (tokens - protected) // 2
    if r > limit:
        raise LightKDError(f"r = {r} is larger than half the tokens: bipartite matching can merge at most "
                           f"{limit} of {tokens} tokens in one layer ({protected} protected)")
    return r


def bipartite_matching(metric: torch.Tensor, r: int):
    """One step of ToMe's bipartite soft matching over mergeable tokens.

    Tokens alternate into set A (even positions) and set B (odd positions);
    each A token draws an edge to its most similar B token (cosine of
    ``metric``, (B, N, C)); the ``r`` strongest edges are merged. (The class
    token is not passed in: ToMe never merges it.) Returns ``(src, dst,
    unmerged)``: indices into A, into B and into A, shaped (B, r), (B, r),
    (B, |A| - r), ``unmerged`` in increasing order."""
    require_tensor("metric", metric, dims=3)
    if metric.shape[1] < 2:
        raise LightKDError(f"metric must hold at least two tokens (one in A, one in B), got {metric.shape[1]}")
    require_merge_r(r, metric.shape[1], protected=0)
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)
    best, best_b = scores.max(-1)
    order = best.argsort(-1, descending=True)
    src, unmerged = order[:, :r], order[:, r:].sort(-1).values
    return src, best_b.gather(1, src), unmerged


def merge_tokens(x: torch.Tensor, size: torch.Tensor, src, dst, unmerged):
    """Merge the A tokens ``src`` into the B tokens ``dst`` by size-weighted
    mean. x (B, N, C), size (B, N, 1). Returns (x, size) with the unmerged A
    tokens first (in order), then B."""
    require_tensor("x", x, dims=3)
    require_tensor("size", size, dims=3)
    if size.shape != (*x.shape[:2], 1):
        raise LightKDError(f"size must be (batch, tokens, 1) = {(*x.shape[:2], 1)}, got {tuple(size.shape)}")
    if not (size > 0).all():  # a token standing for no patch would divide its merged mean by zero
        raise LightKDError("size must be > 0 for every token: it counts the patches a token stands for")
    xa, xb = x[:, ::2] * size[:, ::2], x[:, 1::2] * size[:, 1::2]
    sa, sb = size[:, ::2], size[:, 1::2]
    c = x.shape[-1]
    dst_c = dst.unsqueeze(-1)
    xb = xb.scatter_add(1, dst_c.expand(-1, -1, c), _gather_tokens(xa, src))
    sb = sb.scatter_add(1, dst_c, sa.gather(1, src.unsqueeze(-1)))
    keep_a = _gather_tokens(xa, unmerged)
    sizes = torch.cat([sa.gather(1, unmerged.unsqueeze(-1)), sb], dim=1)
    return torch.cat([keep_a, xb], dim=1) / sizes, sizes


def merge_sources(source: torch.Tensor, src, dst, unmerged):
    """Track which original patches each token holds: source (B, N, N0) 0/1."""
    require_tensor("source", source, dims=3)
    sa, sb = source[:, ::2], source[:, 1::2]
    sb = sb.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, sb.shape[-1]), _gather_tokens(sa, src))
    return torch.cat([_gather_tokens(sa, unmerged), sb], dim=1)


class ToMe(nn.Module):
    """Training-free token merging on a trained backbone: in every block,
    attention with proportional attention (softmax(QK^T / sqrt(d) + log size)),
    then merge ``r`` tokens by bipartite matching on the keys (heads averaged),
    then the MLP. ``track=True`` also keeps which patches each token holds."""

    def __init__(self, backbone: VisionTransformer, r: int = 4, track: bool = False):
        super().__init__()
        self.backbone = _check_backbone(backbone)
        self.config = backbone.config
        tokens = self.config.num_patches + self.config.num_extra_tokens
        self.r = require_merge_r(r, tokens, self.config.num_extra_tokens)
        self.track = track

    def forward(self, pixel_values, **_) -> SparseOutput:
        bb, extra = self.backbone, self.config.num_extra_tokens
        x = bb.embed(pixel_values)
        b, n = x.shape[:2]
        size = torch.ones(b, n, 1, dtype=x.dtype, device=x.device)
        m = n - extra
        source = torch.eye(m, device=x.device).expand(b, m, m) if self.track else None
        sources = []
        for block in bb.blocks:
            a = block.attn
            q, k, v = _attention_parts(a, block.norm1(x))
            bias = size.log().reshape(b, 1, 1, -1).to(q.dtype)  # proportional attention
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            x = x + a.proj(h.transpose(1, 2).reshape(x.shape))
            r = min(self.r, (x.shape[1] - extra) // 2)
            if r > 0:  # the class (and distillation) token stay out of the matching
                src, dst, unmerged = bipartite_matching(k.mean(1)[:, extra:], r)
                merged, msize = merge_tokens(x[:, extra:], size[:, extra:], src, dst, unmerged)
                x, size = torch.cat([x[:, :extra], merged], 1), torch.cat([size[:, :extra], msize], 1)
                if source is not None:
                    source = merge_sources(source, src, dst, unmerged)
                    sources.append(source)
            x = x + block.mlp(block.norm2(x))
        out = bb.classify(bb.norm(x))
        return SparseOutput(out.logits, last_hidden_state=out.last_hidden_state, cls_logits=out.cls_logits,
                            dist_logits=out.dist_logits, kept=tuple(sources) if self.track else None)


def tome_tokens(tokens: int, depth: int, r: int, protected: int = 1) -> list[int]:
    """Tokens each ToMe block's attention sees (its MLP sees the next entry's count)."""
    require_positive_int("tokens", tokens)
    require_positive_int("depth", depth)
    require_positive_int("r", r, minimum=0)
    require_positive_int("protected", protected, minimum=0)
    if protected >= tokens:
        raise LightKDError(f"protected ({protected}) must leave some of the {tokens} tokens to merge")
    out = []
    for _ in range(depth):
        out.append(tokens)
        tokens -= min(r, (tokens - protected) // 2)
    return out


# -------------------------------------------------------------------- text
def text_keep_schedule(rho: float, layers: int) -> list[float]:
    """Share of each sequence's word vectors that layer l keeps after its
    attention: rho^(l+1), a progressive elimination like PoWER-BERT's."""
    rho = require_rho(rho)
    require_positive_int("layers", layers)
    return [rho ** (l + 1) for l in range(layers)]


class PrunedBert(nn.Module):
    """A transformers BERT sequence classifier run layer by layer from its own
    weights, eliminating word vectors by attention significance: after layer
    l's attention, keep the ``keep[l]`` share of each sequence's tokens that
    receive the most attention (summed over heads and real query tokens;
    [CLS] always kept), then run the feed-forward on those only.
    Training-free (PoWER-BERT and LTP learn where to cut; we fix a schedule)."""

    def __init__(self, model, keep=None):
        super().__init__()
        if not hasattr(model, "bert") or not hasattr(model, "classifier"):
            raise LightKDError("PrunedBert needs a transformers BertForSequenceClassification")
        self.model = model
        _, layers = encoder_layers(model)
        keep = [1.0] * len(layers) if keep is None else [require_rho(k, "each keep share") for k in keep]
        if len(keep) > len(layers):
            raise LightKDError(f"a keep schedule of {len(keep)} layers is longer than the model's {len(layers)} layers")
        self.keep = keep + [keep[-1] if keep else 1.0] * (len(layers) - len(keep))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_kept: bool = False, **_):
        m = self.model
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = m.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = attention_mask.to(x.dtype)
        lengths = attention_mask.sum(1)  # shares are of each sequence's real length
        kept = []
        for layer, share in zip(encoder_layers(m)[1], self.keep):
            sa = layer.attention.self
            b, n, d = x.shape
            heads = sa.num_attention_heads
            hd = d // heads
            split = lambda t: t.reshape(b, n, heads, hd).transpose(1, 2)
            q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
            bias = additive_key_mask(mask, x.dtype)
            target = torch.clamp((lengths.float() * share).ceil().long(), min=1)
            prune = bool((target < mask.sum(1).long()).any())
            if prune:  # the probabilities say which tokens matter
                ctx, probs = attention_with_probs(q, k, v, bias)
            else:
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            ctx = ctx.transpose(1, 2).reshape(b, n, d)
            h = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
            if prune:
                significance = (probs * mask[:, None, :, None]).sum((1, 2))  # attention each key receives
                significance = significance.masked_fill(mask == 0, -math.inf)
                significance[:, 0] = math.inf  # [CLS] feeds the classifier
                # by significance, [CLS] first; row i keeps its first target[i] (the rest is masked)
                top = significance.topk(int(target.max()), dim=1).indices
                h = _gather_tokens(h, top)
                mask = (torch.arange(top.shape[1], device=x.device)[None, :] < target[:, None]).to(x.dtype)
                kept.append(top)
            x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(h)) + h)
        pooled = m.bert.pooler(x) if m.bert.pooler is not None else x[:, 0]
        logits = m.classifier(m.dropout(pooled))
        out = SparseOutput(logits, last_hidden_state=x, kept=tuple(kept))
        return out


# ------------------------------------------------------------- exercises
def _gumbel_inputs(rng):
    b, n, c = rng.randint(1, 4), rng.randint(1, 20), rng.choice([2, 2, 3, 5])
    logits = torch.randn(b, n, c) * rng.uniform(0.5, 3)
    noise = -torch.log(-torch.log(torch.rand(b, n, c).clamp(1e-6, 1 - 1e-6)))
    return logits, noise, rng.choice([0.5, 1.0, 2.0]), torch.randn(b, n, c)


def _value_and_grad(fn):
    def run(logits, noise, tau, weights):
        logits = logits.clone().requires_grad_(True)
        y = fn(logits, noise, tau)
        (y * weights).sum().backward()
        return y.detach(), logits.grad
    return run


def check_gumbel_softmax_hard(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``gumbel_softmax_hard(logits, noise, tau)``: the forward value is
    one-hot, the gradient is the soft sample's. Both are checked."""
    return check_function(_value_and_grad(candidate), _value_and_grad(gumbel_softmax_hard), _gumbel_inputs,
                          trials=trials, seed=seed, name="gumbel_softmax_hard")


def matching_pairs(metric: torch.Tensor, r: int):
    """One ToMe step for one image's patch tokens, as positions in the sequence:
    (src, dst) LongTensors of length r, sorted by src: token src[i] merges into
    token dst[i]. metric (N, C); A = even positions, B = odd positions."""
    require_tensor("metric", metric, dims=2)
    src, dst, _ = bipartite_matching(metric[None], r)
    src, dst = 2 * src[0], 2 * dst[0] + 1
    order = src.argsort()
    return src[order], dst[order]


def check_bipartite_matching(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``matching_pairs(metric, r)`` (see ``matching_pairs``)."""
    def make(rng):
        n = rng.randint(2, 30)
        return torch.randn(n, rng.choice([4, 8, 16])), rng.randint(0, n // 2)
    return check_function(candidate, matching_pairs, make, trials=trials, seed=seed, name="matching_pairs")


def check_blocks_flops(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``blocks_flops(tokens_per_block, dim, hidden)``."""
    def make(rng):
        depth = rng.randint(1, 12)
        return [rng.randint(1, 200) for _ in range(depth)], 8 * rng.randint(1, 48), 8 * rng.randint(1, 96)
    return check_function(candidate, blocks_flops, make, trials=trials, seed=seed, name="blocks_flops")
