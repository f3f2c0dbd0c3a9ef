"""train.fit on Hugging Face Accelerate: bitwise equal to the loop it replaced on one CPU process,
and data-parallel over two processes equal to one process up to floating-point tolerance."""
import copy
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightkd import train
from lightkd.common import LightKDError, require_number, require_positive_int, set_seed
import torch.nn.functional as F
from lightkd.train import (FitResult, _progress, _resolve_bf16, autocast, classification_loss, logits_of,
                           model_device, model_inputs, progress_default, to_device)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------- the loop as it was, frozen (do not edit)
@torch.no_grad()
def _reference_predict(model, batches, bf16="auto") -> torch.Tensor:
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


def _reference_evaluate(model, batches, bf16="auto") -> dict:
    """Accuracy and mean cross-entropy over a split; predictions in split order."""
    logits = _reference_predict(model, batches, bf16=bf16)
    labels = torch.empty(len(logits), dtype=torch.long)
    for batch in batches:
        labels[batch["index"]] = batch["labels"]
    predictions = logits.argmax(-1)
    return {"accuracy": (predictions == labels).float().mean().item(),
            "loss": F.cross_entropy(logits, labels).item(),
            "predictions": predictions, "labels": labels, "logits": logits}


def _reference_fit(model, train_batches, dev_batches=None, *, epochs: float = 1, max_steps: int | None = None,
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
                acc = _reference_evaluate(model, dev_batches, bf16=use_bf16)["accuracy"]
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


# ------------------------------------------------------------------ tests
sys.path.insert(0, str(ROOT / "tools"))
from dp_check import Batches  # noqa: E402
from conftest import make_tiny_bert  # noqa: E402


def _penalised(m, batch):
    base, logs = classification_loss(m, batch)
    penalty = 1e-3 * m.classifier.weight.pow(2).sum()
    return base + penalty, {**logs, "l2": penalty.item()}


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


CONFIGS = {
    "default": dict(epochs=2),
    "optimizer_and_lr_lambda": dict(max_steps=5, optimizer=_sgd, lr_lambda=lambda s: 1.0 / (1 + s)),
    "dev_early_stop_restore": dict(epochs=4, dev=True, eval_every=2, early_stop_patience=1, restore_best=True,
                                   lr=1e-2),
    "no_grad_clip": dict(max_steps=4, grad_clip=None, lr=1e-2),
    "custom_loss_logs": dict(max_steps=4, loss=_penalised, log_every=2),
    "max_steps_over_epochs": dict(max_steps=7, epochs=1),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fit_is_bitwise_the_old_loop_on_one_cpu_process(name, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    # a CPU model in one process takes the plain loop on any machine, GPU or not
    runs = []
    for fit in (_reference_fit, train.fit):
        kw = dict(CONFIGS[name])
        model = make_tiny_bert(layers=2, hidden=32)
        if "optimizer" in kw:
            kw["optimizer"] = kw["optimizer"](model)
        dev = Batches(seed=1) if kw.pop("dev", False) else None
        result = fit(model, Batches(), dev, seed=0, progress=False, **kw)
        runs.append((model, result))
    (a, ra), (b, rb) = runs
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert ra.history == rb.history and ra.evals == rb.evals and ra.steps == rb.steps
    assert ra.best_step == rb.best_step


def test_shard_splits_every_row_tensor():
    batch = {"input_ids": torch.arange(10).view(5, 2), "labels": torch.arange(5), "index": torch.arange(5) + 10,
             "t_logits": torch.ones(5, 3), "scale": torch.tensor(2.0), "name": "x"}
    s0, n0 = train.shard(batch, 0, 2)
    s1, n1 = train.shard(batch, 1, 2)
    assert (n0, n1) == (3, 2) and s0["index"].tolist() == [10, 12, 14] and s1["labels"].tolist() == [1, 3]
    assert s0["scale"] is batch["scale"] and s1["name"] == "x" and s1["t_logits"].shape == (2, 3)
    empty, n = train.shard({"index": torch.arange(1), "x": torch.ones(1, 4)}, 1, 2)
    assert n == 0 and len(empty["x"]) == 1  # a row to run the model on, weighted 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_one_process_model(tmp_path):
    pytest.importorskip("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1",
           "LIGHTKD_PROGRESS": "0"}
    env.pop("WORLD_SIZE", None)
    script = str(ROOT / "tools" / "dp_check.py")
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    start = time.perf_counter()
    subprocess.run([sys.executable, script, str(one)], env=env, check=True, timeout=120)
    # `accelerate launch --cpu` alone starts one process; --multi_gpu selects the torchrun launcher
    # and the processes find no GPU (ACCELERATE_USE_CPU), so they form a gloo group on the CPU.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), script, str(two)]
    subprocess.run(launch, env=env, check=True, timeout=120)
    a, b = torch.load(one), torch.load(two)
    assert (a["world"], b["world"]) == (1, 2)
    for k in a["state"]:
        assert torch.allclose(a["state"][k], b["state"][k], atol=1e-5, rtol=0), k
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]]
    for h, g in zip(a["history"], b["history"]):
        assert abs(h["ce"] - g["ce"]) < 1e-5
    assert [s for s, _ in a["evals"]] == [s for s, _ in b["evals"]]
    print(f"one + two processes: {time.perf_counter() - start:.1f} s")
