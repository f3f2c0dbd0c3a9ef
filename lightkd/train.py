"""The one fit / evaluate loop every chapter trains through.

A batch is a dict. Everything but ``labels`` and ``index`` is passed to the
model as keyword arguments, so text models (``input_ids``,
``attention_mask``) and vision models (``pixel_values``) use the same loop.
The default loss is cross-entropy on the logits; distillation chapters pass
their own ``loss(model, batch) -> (loss, {"term": value, ...})``.

``fit`` runs on Hugging Face Accelerate: the same call trains on one CPU,
one GPU (with bf16 / fp16 mixed precision) or several processes started by
``accelerate launch`` or ``torchrun`` (data parallel: each process takes its
share of every batch). On one CPU process Accelerate has nothing to do, so
it is not created and the loop is exactly the plain PyTorch one.
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
from torch import nn

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


def _resolve_bf16(bf16, device="cpu") -> bool:
    if bf16 == "auto":
        if torch.device(device).type == "cuda":
            return torch.cuda.is_bf16_supported()
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


def has_int8_kernels(model) -> bool:
    """Whether ``model`` holds torch's quantized modules (dynamic or static int8),
    whose kernels take fp32 inputs only."""
    modules = model.modules() if isinstance(model, nn.Module) else ()
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in modules)


@torch.no_grad()
def predict(model, batches, bf16="auto") -> torch.Tensor:
    """Logits for every example, in the split's order (batches carry ``index``).
    ``bf16="auto"`` never autocasts a model with int8 kernels: they reject bf16."""
    model.eval()
    device = model_device(model)
    parts, order = [], []
    use_bf16 = _resolve_bf16(bf16, device) and not (bf16 == "auto" and has_int8_kernels(model))
    with autocast(device, use_bf16):
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
    return scores(logits, labels)


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """What ``evaluate`` reports, from logits and labels in split order."""
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


# ------------------------------------------------------- Accelerate and data parallelism
def world_size() -> int:
    """How many processes train together (``accelerate launch`` and ``torchrun`` set WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _wants_gpu() -> bool:
    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes")


def _accelerator(bf16, model):
    """An ``accelerate.Accelerator`` for this run, or None for one process whose model is
    not on a GPU, where it could change nothing (and the chapters' recorded numbers come
    from the plain loop). The caller chooses the device: one process trains where its
    model is (a notebook's CPU model stays on the CPU even when a GPU is there, so CPU-only
    steps after training, such as int8 kernels, still find it); several processes
    (``accelerate launch`` / ``torchrun``) train on Accelerate's device for each process.
    On a GPU mixed precision is Accelerate's: bf16 where the GPU has it (``bf16='auto'``),
    or what ``accelerate launch --mixed_precision`` asked for; the CPU keeps lightkd's
    own bf16 autocast (see ``bf16_pays``)."""
    if world_size() == 1 and model_device(model).type != "cuda":
        return None
    try:
        from accelerate import Accelerator, PartialState
        from accelerate.state import AcceleratorState
    except ImportError as e:
        if world_size() > 1:
            raise LightKDError(f"training in {world_size()} processes needs accelerate: pip install accelerate") from e
        return None
    cpu = not _wants_gpu()  # Accelerate only forms a CPU process group (gloo) when told cpu=True
    device = PartialState(cpu=cpu).device  # the process group and this process's device
    precision = "no"
    if device.type == "cuda":
        launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        precision = "bf16" if _resolve_bf16(bf16, device) else (launched if bf16 == "auto" else "no")
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        # The state is a process-wide singleton that refuses a change of precision, and one
        # process may call fit with bf16 on, then off; the process group (PartialState) stays.
        AcceleratorState._reset_state()
    return Accelerator(cpu=cpu, mixed_precision=precision)


def batch_rows(batch: dict) -> int:
    """How many examples a batch holds (its ``index``, else its first tensor)."""
    rows = batch["index"] if "index" in batch else next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return len(rows)


def shard(batch: dict, rank: int, world: int) -> tuple[dict, int]:
    """Process ``rank``'s share of a batch: rows rank, rank + world, ... of every tensor
    with one row per example (inputs, ``labels``, ``index``, teacher targets); other
    entries are kept whole. Returns (shard, its number of rows). A process whose share
    is empty (a last batch smaller than the world) gets row 0 to run the model on; it
    weighs 0 in the update (see ``fit``)."""
    n = batch_rows(batch)
    take = torch.arange(rank, n, world)
    size = len(take)
    if size == 0:
        take = torch.arange(1)
    return {k: v[take.to(v.device)] if isinstance(v, torch.Tensor) and v.dim() and len(v) == n else v
            for k, v in batch.items()}, size


def _average_gradients(accelerator, params: list) -> None:
    """Average every process's gradients in place, as DistributedDataParallel would.
    Done by hand because distillation losses read activations through forward hooks
    (``distill.capture``), which DDP's graph tracking cannot see. A parameter no process
    gave a gradient keeps None, so the optimizer skips it as it would in one process."""
    present = torch.tensor([float(p.grad is not None) for p in params], device=accelerator.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    present, flat = accelerator.reduce(present, "sum"), accelerator.reduce(flat, "mean")
    offset = 0
    for p, seen in zip(params, present.tolist()):
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone() if seen else None
        offset += p.numel()


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

    In several processes (``accelerate launch`` / ``torchrun``) every process
    iterates the same batches and trains on its share of each (``shard``);
    gradients are all-reduced, weighted by share size, so the update is the
    one-process update on the whole batch (for losses that are means over
    the rows). Every process evaluates the whole dev set and the main
    process's accuracy decides early stopping for all; ``on_step`` runs on
    every process; only the main process shows progress and prints.
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
    progress = progress_default() if progress is None else progress

    if optimizer is None:
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    if lr_lambda is None:
        warm = max(1, int(warmup_ratio * total))
        lr_lambda = lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    # Stepped once per update by us, not prepared: Accelerate would step it once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    # One CPU process: the plain loop. Otherwise the model goes to this process's device,
    # the optimizer is wrapped by Accelerate (fp16 loss scaling on GPUs), and after every
    # backward the processes average their gradients (``_average_gradients``).
    accelerator = _accelerator(bf16, model)
    opt, rank, world, trained = optimizer, 0, 1, []
    if accelerator is None:
        device = model_device(model)
        precision = lambda: autocast(device, use_bf16)
        backward, clip = (lambda v: v.backward()), torch.nn.utils.clip_grad_norm_
    else:
        device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
        if device.type != "cpu":
            use_bf16 = accelerator.mixed_precision == "bf16"
        model.to(device)
        if isinstance(loss, torch.nn.Module):  # projections that train beside the model (TinyBERT's W_h)
            loss.to(device)
        opt = accelerator.prepare(optimizer)
        trained = [p for g in optimizer.param_groups for p in g["params"]]
        precision = accelerator.autocast if device.type != "cpu" else (lambda: autocast(device, use_bf16))
        backward, clip = accelerator.backward, accelerator.clip_grad_norm_
        progress = progress and accelerator.is_main_process
        if world > 1:  # dropout draws differently on each process (the rows differ too)
            torch.manual_seed((0 if seed is None else seed) + 7919 * rank)

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
            if world > 1:
                whole = batch_rows(batch)
                batch, rows = shard(batch, rank, world)
            batch = to_device(batch, device)
            with precision():
                value, logs = loss(model, batch)
            if world > 1:
                value, logs, weight = _all_processes(accelerator, value, logs, rows, whole)
            if not torch.isfinite(value.detach()).all():  # stop before a NaN reaches the weights
                raise LightKDError(f"the training loss became {value.item()} at step {step + 1}; lower lr, check the "
                                   "inputs for NaN or inf, or turn bf16 off")
            opt.zero_grad(set_to_none=True)
            if world > 1:
                # Weighting each share's mean loss by world * rows / batch rows makes the
                # average of the processes' gradients the whole batch's gradient.
                backward(weight)
                _average_gradients(accelerator, trained)
            else:
                backward(value)
            if grad_clip:
                clip(model.parameters(), grad_clip)
            opt.step()
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
                if world > 1:  # one decision for all: the main process's accuracy
                    from accelerate.utils import broadcast
                    acc = broadcast(torch.tensor([acc], dtype=torch.float64, device=device)).item()
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
    if accelerator is not None:
        opt = None
        accelerator.free_memory()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.steps, result.seconds = step, time.perf_counter() - start
    summary = f"trained {step} steps in {result.seconds:.0f} s"
    if result.best_dev_accuracy is not None:
        summary += f"; best dev accuracy {result.best_dev_accuracy:.4f} at step {result.best_step}"
    if accelerator is None or accelerator.is_main_process:
        print(summary, file=sys.stdout)
    return result


def _all_processes(accelerator, value, logs: dict, rows: int, whole: int):
    """The whole batch's loss and logs from every process's share (means weighted by
    share size, so every process logs and checks the same numbers), and this process's
    loss weighted for the gradient average: world * rows / whole (1 with equal shares)."""
    share = rows / whole
    local = torch.tensor([float(value.detach()), *map(float, logs.values())], dtype=torch.float64,
                         device=accelerator.device)
    both = accelerator.reduce(local * share if rows else torch.zeros_like(local), "sum")
    weighted = value if share * accelerator.num_processes == 1 else value * (share * accelerator.num_processes)
    return both[0], dict(zip(logs, both[1:].tolist())), weighted
