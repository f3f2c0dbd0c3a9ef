"""Measure what a compression method buys: latency, size, parameters, FLOPs.

Latency is noisy on a shared machine, so every number here is a median of
repeats after warm-up with the thread count fixed, and chapters report
speed as ratios measured in one run.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import time
from dataclasses import dataclass

import torch

from .common import LightKDError
from .train import model_inputs


@contextlib.contextmanager
def threads(n: int | None):
    """Fix torch's intra-op thread count inside the block (None: leave it)."""
    if n is None:
        yield
        return
    if n < 1:
        raise LightKDError(f"threads must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def text_inputs(model, batch_size: int = 1, seq_len: int = 128, seed: int = 0) -> dict:
    """Random token ids of the right shape for a transformers text model."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise LightKDError(f"batch_size must be a positive integer, got {batch_size!r}")
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", 512)
    if not isinstance(seq_len, int) or seq_len < 1 or seq_len > limit:
        raise LightKDError(f"seq_len must be between 1 and the model's maximum {limit}, got {seq_len!r}")
    vocab = getattr(config, "vocab_size", 30522)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@dataclass
class Latency:
    median_ms: float
    q25_ms: float
    q75_ms: float
    times_ms: list

    def __repr__(self):
        return f"Latency({self.median_ms:.2f} ms, IQR {self.q25_ms:.2f}-{self.q75_ms:.2f})"


def latency(model, inputs: dict | torch.Tensor | None = None, *, batch_size: int = 1, seq_len: int = 128,
            repeats: int = 20, warmup: int = 3, num_threads: int | None = None, bf16: bool = False) -> Latency:
    """Median wall time of one forward pass, in milliseconds.

    ``inputs`` is a batch dict (or a tensor for a plain torch model); without
    it, random token ids of ``batch_size`` x ``seq_len`` are made.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise LightKDError(f"repeats must be a positive integer, got {repeats!r}")
    if warmup < 0:
        raise LightKDError(f"warmup must be >= 0, got {warmup}")
    if inputs is None:
        inputs = text_inputs(model, batch_size, seq_len)
    call = (lambda: model(inputs)) if isinstance(inputs, torch.Tensor) else (lambda: model(**model_inputs(inputs)))
    if hasattr(model, "eval"):
        model.eval()
    times = []
    with threads(num_threads), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(warmup):
            call()
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Latency(statistics.median(times), q[0], q[2], times)


def size_on_disk(model_or_state) -> int:
    """Bytes the weights take when saved (``torch.save`` of the state dict, which
    also handles quantized and packed tensors)."""
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def count_params(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


PARTS = ("embeddings", "attention", "ffn", "bottleneck", "norms", "other")


def part_of(name: str) -> str:
    """Which part of a transformer a parameter belongs to, from its name."""
    n = name.lower()
    if "norm" in n:  # LayerNorm, layer_norm, NoNorm (MobileBERT names it LayerNorm too)
        return "norms"
    if "embed" in n or "patch" in n or "cls_token" in n or "pos_" in n:
        return "embeddings"
    if "bottleneck" in n:
        return "bottleneck"
    if "attention" in n or "attn" in n or any(k in n for k in ("q_lin", "k_lin", "v_lin", "out_lin", "qkv")):
        return "attention"
    if any(k in n for k in ("intermediate", "output.dense", "ffn", "mlp", "lin1", "lin2", "fc1", "fc2")):
        return "ffn"
    return "other"


def params_by_part(model) -> dict[str, int]:
    """Parameter counts split into embeddings, attention, FFN, bottleneck, norms, other."""
    counts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        counts[part_of(name)] += p.numel()
    return counts


def flops(model, inputs: dict | torch.Tensor | None = None, **text_kwargs) -> int:
    """Floating-point operations of one forward pass (a multiply-add counts 2),
    counted by torch's FlopCounterMode over matmuls and convolutions."""
    from torch.utils.flop_counter import FlopCounterMode
    if inputs is None:
        inputs = text_inputs(model, **text_kwargs)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(inputs) if isinstance(inputs, torch.Tensor) else model(**model_inputs(inputs))
    return int(counter.get_total_flops())


def compare_latency(models: dict, inputs=None, *, rounds: int = 15, warmup: int = 2,
                    num_threads: int | None = None, bf16: bool = False, **text_kwargs) -> dict[str, Latency]:
    """Latency of several models measured round-robin: each round times every
    model once, so a burst of load on a shared machine hits all of them alike
    and their ratios stay honest. ``inputs``: one batch for all, a dict of
    batches keyed like ``models``, or None for random text inputs."""
    if not models:
        raise LightKDError("compare_latency needs at least one model")
    if not isinstance(rounds, int) or rounds < 1:
        raise LightKDError(f"rounds must be a positive integer, got {rounds!r}")
    calls = {}
    for name, model in models.items():
        x = inputs.get(name) if isinstance(inputs, dict) and name in inputs else inputs
        x = text_inputs(model, **text_kwargs) if x is None else x
        model.eval()
        calls[name] = (lambda m=model, x=x: m(x)) if isinstance(x, torch.Tensor) else \
            (lambda m=model, x=x: m(**model_inputs(x)))
    times = {name: [] for name in models}
    with threads(num_threads), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for call in calls.values():
            for _ in range(warmup):
                call()
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = Latency(statistics.median(ts), q[0], q[2], ts)
    return out
