"""Check functions for the exercises.

Every check draws fresh random inputs, runs the reader's function and
lightkd's reference on each, and prints either a clear pass or the first
input where they differ and why. A fixed example can be gamed; twenty random
ones cannot. Chapters build their checks from ``check_function``; the
method modules hold their own (``quant.check_linear_quantize`` ...).
"""
from __future__ import annotations

import random

import torch

from .common import LightKDError


def _describe(x, limit=120):
    if isinstance(x, torch.Tensor):
        text = f"tensor{tuple(x.shape)} {x.dtype}"
        if x.numel() <= 8:
            text += f" {x.tolist()}"
        return text
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def _compare(expected, got, atol, rtol):
    """None if equal enough, else the reason they differ."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)} but expected {tuple(expected.shape)}"
        if expected.dtype == torch.bool or not expected.is_floating_point():
            bad = (got != expected)
            if bad.any():
                i = tuple(bad.nonzero()[0].tolist())
                return f"at index {i} got {got[i].item()} but expected {expected[i].item()}"
            return None
        if not torch.allclose(got.float(), expected.float(), atol=atol, rtol=rtol, equal_nan=True):
            diff = (got.float() - expected.float()).abs()
            i = tuple(int(v) for v in torch.nonzero(diff == diff.max())[0])
            return (f"largest difference {diff.max().item():.3g} at index {i}: "
                    f"got {got[i].item():.6g}, expected {expected[i].item():.6g}")
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a sequence of {len(expected)} items, got {_describe(got)}"
        for k, (e, g) in enumerate(zip(expected, got)):
            reason = _compare(e, g, atol, rtol)
            if reason:
                return f"item {k}: {reason}"
        return None
    if isinstance(expected, float) or isinstance(got, float):
        try:
            ok = abs(float(got) - float(expected)) <= atol + rtol * abs(float(expected))
        except (TypeError, ValueError):
            return f"expected a number, got {_describe(got)}"
        return None if ok else f"got {got}, expected {expected}"
    return None if got == expected else f"got {_describe(got)}, expected {_describe(expected)}"


def check_function(candidate, reference, make_inputs, *, trials: int = 20, seed: int | None = None,
                   atol: float = 1e-5, rtol: float = 1e-4, name: str | None = None, verbose: bool = True) -> bool:
    """Compare ``candidate(*args)`` with ``reference(*args)`` on random inputs.

    ``make_inputs(rng)`` returns a tuple of arguments, drawing from the
    ``random.Random`` it is given (and seeding torch from it). Prints one
    line: a pass, or the first failing input with the reason.
    """
    if not callable(candidate):
        raise LightKDError(f"candidate must be your function, got {candidate!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise LightKDError(f"trials must be a positive integer, got {trials!r}")
    name = name or getattr(candidate, "__name__", "your function")
    rng = random.Random(seed if seed is not None else random.randrange(2**31))
    for trial in range(1, trials + 1):
        torch.manual_seed(rng.randrange(2**31))
        args = make_inputs(rng)
        expected = reference(*args)
        try:
            got = candidate(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        except NotImplementedError:
            if verbose:
                print(f"✗ {name}: not implemented yet (it raised NotImplementedError)")
            return False
        except Exception as e:  # the reader's code may fail in any way: report it, do not crash
            if verbose:
                print(f"✗ {name} raised {type(e).__name__}: {e}\n  on trial {trial} with inputs "
                      + ", ".join(_describe(a) for a in args))
            return False
        reason = _compare(expected, got, atol, rtol)
        if reason:
            if verbose:
                print(f"✗ {name} differs on trial {trial}: {reason}\n  inputs: "
                      + ", ".join(_describe(a) for a in args))
            return False
    if verbose:
        print(f"✓ {name} passed {trials} random trials")
    return True


# ------------------------------------------------------------ chapter 1
def bert_layer_params_reference(hidden: int, intermediate: int, heads: int) -> int:
    """Parameters of one BERT encoder layer, counted on a real transformers BertLayer."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer
    config = BertConfig(hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=heads)
    config._attn_implementation = "eager"
    layer = BertLayer(config)
    return sum(p.numel() for p in layer.parameters())


def check_bert_layer_params(candidate, trials: int = 10, seed: int | None = None) -> bool:
    """Exercise: count one BERT layer's parameters from (hidden, intermediate, heads)."""
    def make(rng):
        heads = rng.choice([1, 2, 4, 8, 12, 16])
        hidden = heads * rng.randrange(4, 65, 4)
        return hidden, rng.choice([2, 3, 4]) * hidden + rng.randrange(0, 64), heads
    return check_function(candidate, bert_layer_params_reference, make, trials=trials, seed=seed,
                          name="bert_layer_params")
