"""The one fit / evaluate loop every chapter trains through.

A batch is a dict. Everything but ``labels`` and ``index`` is passed to the
model as keyword arguments, so text models (``input_ids``,
``attention_mask``) and vision models (``pixel_values``) use the same loop.
The default loss is cross-entropy on the logits; distillation chapters pass
their own ``loss(model, batch) -> (loss, {"term": value, ...})``.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from .common import LightKDError, require_number, require_positive_int, set_seed

NOT_INPUTS = ("labels", "index")


@lru_cache(maxsize=1)
def bf16_pays() -> bool:
    """bf16 autocast is worth it on CPUs with native bf16 matmuls (AVX512-BF16 or
    AMX); elsewhere it emulates bf16 and is slower than fp32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _resolve_bf16(bf16) -> bool:
    if bf16 == "auto":
        return bf16_pays()
    if not isinstance(bf16, bool):
        raise LightKDError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    return bf16


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in NOT_INPUTS}


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def to_device(batch: dict, device) -> dict:
    """Move a batch's tensors to the model's device (a no-op on the CPU)."""
    if torch.device(device).type == "cpu":
        return batch
    return {k: v.to(device) if isinstance(v, torch.Tensor) and k != "index" else v for k, v in batch.items()}


def autocast(device, enabled: bool):
    """bf16 autocast on the model's device type."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def logits_of(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return output[0]


def classification_loss(model, batch):
    """Cross-entropy of the model's logits against ``batch['labels']``."""
    logits = logits_of(model(**model_inputs(batch)))
    loss = F.cross_entropy(logits.float(), batch["labels"])
    return loss, {"ce": loss.item()}


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, mininterval=1.0)


def progress_default() -> bool:
    return os.environ.get("LIGHTKD_PROGRESS", "1") != "0"


@torch.no_grad()
def predict(model, batches, bf16="auto") -> torch.Tensor:
    """Logits for every example, in the split's order (batches carry ``index``)."""
    model.eval()
    device = model_device(model)
    parts, order = [], []
    with autocast(device, _resolve_bf16(bf16)):
        for batch in batches:
            parts.append(logits_of(model(**model_inputs(to_device(batch, device)))).float().cpu())
            order.append(batch["index"])
    if not parts:
        raise LightKDError("there is nothing to predict: the batches are empty")
    logits, order = torch.cat(parts), torch.cat(order)
    out = torch.empty_like(logits)
    out[order] = logits
    return out


def evaluate(model, batches, bf16="auto") -> dict:
    """Accuracy and mean cross-entropy over a split; predictions in split order."""
    logits = predict(model, batches, bf16=bf16)
    labels = torch.empty(len(logits), dtype=torch.long)
    for batch in batches:
        labels[batch["index"]] = batch["labels"]
    predictions = logits.argmax(-1)
    return {"accuracy": (predictions == labels).float().mean().item(),
            "loss": F.cross_entropy(logits, labels).item(),
            "predictions": predictions, "labels": labels, "logits": logits}


@dataclass
class FitResult:
    steps: int
    seconds: float
    history: list = field(default_factory=list)  # one dict per logged step
    evals: list = field(default_factory=list)    # (step, dev accuracy)
    best_dev_accuracy: float | None = None
    best_step: int | None = None


def fit(model, train_batches, dev_batches=None, *, epochs: float = 1, max_steps: int | None = None,
        lr: float = 5e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
        loss=classification_loss, optimizer=None, lr_lambda=None, grad_clip: float | None = 1.0,
        eval_every: int | None = None, early_stop_patience: int | None = None, restore_best: bool = True,
        bf16="auto", seed: int | None = None, progress: bool | None = None, on_step=None,
        log_every: int = 10) -> FitResult:
    """Train ``model`` in place with AdamW and a linear warm-up / decay schedule.

    ``loss(model, batch)`` returns ``(loss, logs)``. ``optimizer`` and
    ``lr_lambda(step) -> factor`` replace the defaults (per-group learning
    rates, progressive schedules). ``on_step(step, model, optimizer)`` runs
    after every update. With ``dev_batches`` the model is evaluated every
    ``eval_every`` steps (default: each epoch), training stops after
    ``early_stop_patience`` evaluations without improvement, and the best
    weights are restored at the end.
    """
    if max_steps is not None:
        require_positive_int("max_steps", max_steps)
    else:
        require_number("epochs", epochs, low=0, low_open=True)
    require_number("lr", lr, low=0, low_open=True)
    require_number("weight_decay", weight_decay, low=0)
    require_number("warmup_ratio", warmup_ratio, low=0, high=1)
    if grad_clip is not None:  # a negative clip norm would flip every gradient: ascent, not descent
        require_number("grad_clip", grad_clip, low=0, low_open=True)
    for name, value in (("eval_every", eval_every), ("early_stop_patience", early_stop_patience)):
        if value is not None:
            require_positive_int(name, value)
    require_positive_int("log_every", log_every)
    if not callable(loss):
        raise LightKDError(f"loss must be a function loss(model, batch) -> (loss, logs), got {loss!r}")
    if not hasattr(train_batches, "__len__") or not hasattr(train_batches, "__iter__"):
        raise LightKDError("train_batches must be a re-iterable with a length (data.text_batches / image_batches)")
    seed = set_seed(seed)
    steps_per_epoch = len(train_batches)
    if steps_per_epoch == 0:
        raise LightKDError("train_batches is empty: there is no training data")
    total = max_steps or max(1, math.ceil(epochs * steps_per_epoch))
    eval_every = eval_every or steps_per_epoch
    use_bf16 = _resolve_bf16(bf16)
    device = model_device(model)
    progress = progress_default() if progress is None else progress

    if optimizer is None:
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    if lr_lambda is None:
        warm = max(1, int(warmup_ratio * total))
        lr_lambda = lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    result = FitResult(steps=0, seconds=0.0)
    best_state, bad_evals, step, start = None, 0, 0, time.perf_counter()
    bar = _progress(range(total), total, "training", progress)
    bar_iter = iter(bar)
    running = {}
    done, epoch = False, 0
    while not done:
        if hasattr(train_batches, "set_epoch"):  # the data order of epoch e is fixed, whatever ran before
            train_batches.set_epoch(epoch)
        epoch += 1
        for batch in train_batches:
            model.train()
            batch = to_device(batch, device)
            with autocast(device, use_bf16):
                value, logs = loss(model, batch)
            if not torch.isfinite(value.detach()).all():  # stop before a NaN reaches the weights
                raise LightKDError(f"the training loss became {value.item()} at step {step + 1}; lower lr, check the "
                                   "inputs for NaN or inf, or turn bf16 off")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            next(bar_iter, None)
            for k, v in logs.items():
                running[k] = running.get(k, 0.0) + float(v)
            if step % log_every == 0 or step == total:
                n = step % log_every or log_every
                result.history.append({"step": step, **{k: v / n for k, v in running.items()}})
                running = {}
            if on_step is not None:
                on_step(step, model, optimizer)
            if dev_batches is not None and (step % eval_every == 0 or step == total):
                acc = evaluate(model, dev_batches, bf16=use_bf16)["accuracy"]
                result.evals.append((step, acc))
                if result.best_dev_accuracy is None or acc > result.best_dev_accuracy:
                    result.best_dev_accuracy, result.best_step, bad_evals = acc, step, 0
                    if restore_best:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_evals += 1
                    if early_stop_patience is not None and bad_evals >= early_stop_patience:
                        done = True
            if step >= total or done:
                done = True
                break
    if hasattr(bar, "close"):
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.steps, result.seconds = step, time.perf_counter() - start
    summary = f"trained {step} steps in {result.seconds:.0f} s"
    if result.best_dev_accuracy is not None:
        summary += f"; best dev accuracy {result.best_dev_accuracy:.4f} at step {result.best_step}"
    print(summary, file=sys.stdout)
    return result
