"""Vision distillation: DeiT and TinyViT, on the core's ViT and CNN.

Read top to bottom:

1. ``augmentation_params`` / ``augment`` / ``AugmentedBatches``: random shifts
   and flips that are a pure function of (seed, epoch, sample), so a stored
   teacher output can be matched to the exact view the student sees.
2. DeiT's losses: ``soft_distillation_loss`` (KL at temperature tau, times
   tau^2: ``distill.soft_target_loss``), ``hard_distillation_loss`` (CE on the
   teacher's argmax) and ``deit_loss`` = (1 - alpha) CE + alpha distill.
3. TinyViT's fast distillation: ``teacher_logits_for_views`` runs the teacher
   once per view; ``TeacherLogitStore`` keeps its top-k probabilities and
   their indices per (epoch, sample); ``sparse_soft_labels`` rebuilds the soft
   label while the student trains without the teacher in memory.
4. Check functions for the exercises.

The backbones (``VisionTransformer``, ``SmallCNN``, ``patchify``,
``attention_rollout``) live in ``lightkd.models``; they are re-exported here
so ``vit.VisionTransformer`` keeps working.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .common import LightKDError, require_positive_int, require_tensor
from .data import ImageBatches
from .distill import require_alpha, require_temperature, soft_target_loss
from .exercises import check_function
from .models import (Attention, Block, ModelOutput, SmallCNN, ViTConfig, ViTOutput, VisionTransformer,  # noqa: F401
                     attention_rollout, require_patch_size, masked_softmax, patchify, to_transformers, unpatchify)
from .train import logits_of, model_device, to_device

# ------------------------------------------------------------- augmentation
def augmentation_params(n: int, epoch: int, seed: int, max_shift: int = 0, flip: bool = True) -> dict:
    """Shifts and flips for all ``n`` samples of one epoch, a pure function of
    (seed, epoch): sample i of epoch e always gets the same view, which is
    what lets TinyViT store the teacher's output for that view."""
    require_positive_int("n", n, minimum=0), require_positive_int("epoch", epoch, minimum=0)
    require_positive_int("max_shift", max_shift, minimum=0)
    g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return {"shift_y": shifts[:, 0], "shift_x": shifts[:, 1], "flip": flips}


def augment(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Shift each image by whole pixels (zero fill) and mirror the flagged ones."""
    b, c, h, w = images.shape
    pad = int(max(shift_y.abs().max(), shift_x.abs().max())) if b else 0
    device = images.device  # the shifts come from augmentation_params, on the CPU
    shift_y, shift_x, flip = shift_y.to(device), shift_x.to(device), flip.to(device)
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(h, device=device)[None, :] + pad - shift_y[:, None]  # B, H
    cols = torch.arange(w, device=device)[None, :] + pad - shift_x[:, None]  # B, W
    out = padded[torch.arange(b, device=device)[:, None, None, None],
                 torch.arange(c, device=device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


class AugmentedBatches(ImageBatches):
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
        require_positive_int("batch_size", batch_size), require_positive_int("max_shift", max_shift, minimum=0)
        if len(split) == 0:
            raise LightKDError("split is empty: there is nothing to batch")
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
    device = model_device(teacher)
    start, n, out = time.perf_counter(), len(split), []
    for epoch in range(epochs):
        params = augmentation_params(n, epoch, seed, max_shift, flip)
        parts = []
        for s in range(0, n, batch_size):
            rows = torch.arange(s, min(s + batch_size, n))
            view = augment(split.images[rows], params["shift_y"][rows], params["shift_x"][rows], params["flip"][rows])
            # the stored logits stay on the CPU, beside the split they index
            parts.append(logits_of(teacher(pixel_values=view.to(device))).float().cpu())
        out.append(torch.cat(parts))
    return TeacherLogits(torch.stack(out), seed, max_shift, flip, epochs * n, time.perf_counter() - start)


# ------------------------------------------------------------ DeiT's losses
def soft_distillation_loss(student_logits, teacher_logits, tau: float = 1.0, reduction: str = "batchmean"):
    """tau^2 KL(softmax(teacher / tau) || softmax(student / tau)).

    ``reduction="batchmean"`` divides the summed KL by the batch size (the
    equation in the papers); ``"numel"`` divides by batch x classes, which is
    what DeiT's losses.py does (its issue 61): the same gradient direction,
    num_classes times weaker.
    """
    require_temperature(tau, "tau")
    kl = soft_target_loss(student_logits, teacher_logits, tau)  # summed over classes, mean over the batch
    if reduction == "batchmean":
        return kl
    if reduction == "numel":
        return kl / student_logits.shape[-1]
    raise LightKDError(f"reduction must be 'batchmean' or 'numel', got {reduction!r}")


def hard_distillation_loss(student_logits, teacher_logits):
    """Cross-entropy against the teacher's argmax: the teacher's decision as a label."""
    require_tensor("student_logits", student_logits, dims=2)  # an empty batch: the mean of nothing is NaN
    require_tensor("teacher_logits", teacher_logits, dims=2)
    if student_logits.shape != teacher_logits.shape:
        raise LightKDError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                           f"{tuple(teacher_logits.shape)} must have one (batch, classes) shape")
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
    alpha = require_alpha(alpha)
    if kind not in DISTILLATION_KINDS:
        raise LightKDError(f"kind must be one of {DISTILLATION_KINDS}, got {kind!r}")
    require_tensor("cls_logits", cls_logits, dims=2)  # an empty batch: the mean of nothing is NaN
    ce = F.cross_entropy(cls_logits.float(), labels)
    if kind == "none":
        return ce, {"ce": ce.item()}
    if dist_logits is None or (teacher_logits is None) == (teacher_probs is None):
        raise LightKDError(f"{kind} distillation needs dist_logits and exactly one of teacher_logits, teacher_probs")
    if teacher_probs is not None:  # stored top-k: KL(p || q) at tau = 1, or CE on the stored argmax
        if kind == "soft":
            if require_temperature(tau, "tau") != 1.0:
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
    require_alpha(alpha), require_temperature(tau, "tau")
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
                    teacher_logits = logits_of(teacher(pixel_values=batch["pixel_values"])).float()
            else:
                raise LightKDError(f"{kind} distillation needs a teacher, or batches that carry its outputs")
        return deit_loss(out.cls_logits, batch["labels"], dist, teacher_logits, kind, alpha, tau, reduction,
                         teacher_probs)

    return loss


@torch.no_grad()
def evaluate_heads(model, batches) -> dict:
    """Test accuracy of the class head, the distillation head, and their average."""
    model.eval()
    hits = {"cls": 0, "dist": 0, "both": 0}
    total = 0
    device = model_device(model)
    for batch in batches:
        batch = to_device(batch, device)
        out = model(pixel_values=batch["pixel_values"])
        y = batch["labels"]
        hits["cls"] += (out.cls_logits.argmax(-1) == y).sum().item()
        if out.dist_logits is not None:
            hits["dist"] += (out.dist_logits.argmax(-1) == y).sum().item()
        hits["both"] += (out.logits.argmax(-1) == y).sum().item()
        total += len(y)
    return {k: v / total for k, v in hits.items()}


# ------------------------------------------------------ TinyViT's stored logits
def require_k(k: int, num_classes: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= num_classes:
        raise LightKDError(f"k (how many teacher probabilities to keep) must be an integer from 1 to "
                           f"the number of classes {num_classes}, got {k!r}")
    return k


def topk_probs(logits: torch.Tensor, k: int):
    """The teacher's k largest probabilities and their class indices (TinyViT
    stores probabilities, not logits: float16 values, int16 indices)."""
    require_k(k, logits.shape[-1])
    values, indices = logits.float().softmax(-1).topk(k, dim=-1)
    return values.to(torch.float16), indices.to(torch.int16)


def sparse_soft_labels(values: torch.Tensor, indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rebuild a full distribution from top-k: the stored probabilities where
    they were, the remaining mass spread evenly over the other classes."""
    if values.shape != indices.shape or values.dim() < 1:
        raise LightKDError(f"values {tuple(values.shape)} and indices {tuple(indices.shape)} must have one shape")
    k = values.shape[-1]
    require_k(k, num_classes)
    values = values.float()
    if not torch.isfinite(values).all() or (values < 0).any() or (values.sum(-1) > 1.01).any():
        raise LightKDError("values must be probabilities: finite, >= 0 and summing to at most 1 per example")
    if indices.numel() and ((indices < 0).any() or (indices >= num_classes).any()):
        raise LightKDError(f"indices must name classes 0..{num_classes - 1}")
    if k > 1 and (indices.long().sort(-1).values.diff(dim=-1) == 0).any():
        raise LightKDError("indices repeat a class within an example; top-k indices are distinct")
    rest = (1.0 - values.sum(-1, keepdim=True)).clamp(min=0.0) / max(num_classes - k, 1)
    labels = rest.expand(*values.shape[:-1], num_classes).clone()
    return labels.scatter(-1, indices.long(), values)


def target_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c p_c log q_c (TinyViT's distillation loss)."""
    if student_logits.shape != target_probs.shape or student_logits.dim() < 2 or not student_logits.numel():
        raise LightKDError(f"student_logits {tuple(student_logits.shape)} and target_probs "
                           f"{tuple(target_probs.shape)} must be one (batch, classes) shape")
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
