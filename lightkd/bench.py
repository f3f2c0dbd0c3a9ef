"""Measure what a compression method buys: latency, size, parameters, FLOPs.

Latency is noisy on a shared machine, so every number here is a median of
repeats after warm-up with the thread count fixed, and chapters report
speed as ratios measured in one run: ``compare_latency`` times models
round-robin and gives each one's speed-up over a reference as the median
of per-round ratios, which a burst of load cannot flip.

Deployment: ``export_onnx`` writes any lightkd or transformers model (text
or image inputs) to ONNX, ``onnx_quantize_dynamic`` makes an int8 copy, and
``OnnxRunner`` runs the file in ONNX Runtime behind the same call and
``.logits`` output as the torch model, so ``train.evaluate``, ``latency``
and ``compare_latency`` take it unchanged.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import time
import warnings
from dataclasses import dataclass

import torch

from .common import LightKDError, require_positive_int, threads
from .models import ModelOutput
from .train import model_inputs


def cpu_features() -> dict:
    """What this CPU offers the kernels that decide int8 and bf16 speed:
    ``isa``, torch's vector instruction set (``AVX2``, ``AVX512``, ...), and
    whether it has int8 dot products (``vnni``: AVX-512 or AVX VNNI), bf16
    arithmetic (``bf16``: AVX-512 BF16 or AMX) and AMX matrix tiles
    (``amx``), read from /proc/cpuinfo (all False where it does not exist)."""
    flags = set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
        flags = set(line.partition(":")[2].split())
    return {"isa": torch.backends.cpu.get_cpu_capability(), "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
            "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}), "amx": bool(flags & {"amx_int8", "amx_bf16"})}


def text_inputs(model, batch_size: int = 1, seq_len: int = 128, seed: int = 0) -> dict:
    """Random token ids of the right shape for a transformers text model."""
    require_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LightKDError(f"seed must be an integer, got {seed!r}")
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", 512)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1 or seq_len > limit:
        raise LightKDError(f"seq_len must be between 1 and the model's maximum {limit}, got {seq_len!r}")
    vocab = getattr(config, "vocab_size", 30522)
    g = torch.Generator().manual_seed(seed)
    low = min(1000, vocab // 2)  # above the special tokens of a real vocabulary
    ids = torch.randint(low, vocab, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@dataclass
class Latency:
    """One model's wall time per forward pass (median and quartiles, ms).

    From ``compare_latency`` it also carries ``speedup``: the median over
    rounds of t_reference / t_model (above 1: faster than ``reference``),
    with the quartiles of those per-round ratios."""
    median_ms: float
    q25_ms: float
    q75_ms: float
    times_ms: list
    reference: str | None = None
    speedup: float | None = None
    speedup_q25: float | None = None
    speedup_q75: float | None = None

    @property
    def ratio(self) -> float | None:
        """The same as ``speedup``: median per-round t_reference / t_model."""
        return self.speedup

    def speedup_over(self, other: "Latency") -> float:
        """Median over rounds of t_other / t_self, for two results of one
        ``compare_latency`` run (the same rounds): how many times faster
        this model is than ``other``."""
        if not isinstance(other, Latency):
            raise LightKDError(f"other must be a Latency from the same compare_latency run, got {type(other).__name__}")
        if len(other.times_ms) != len(self.times_ms):
            raise LightKDError("speedup_over needs two results of the same compare_latency run")
        return statistics.median(o / t for o, t in zip(other.times_ms, self.times_ms))

    def __repr__(self):
        text = f"Latency({self.median_ms:.2f} ms, IQR {self.q25_ms:.2f}-{self.q75_ms:.2f}"
        if self.speedup is not None:
            text += (f"; {self.speedup:.2f}x vs {self.reference!r}, "
                     f"IQR {self.speedup_q25:.2f}-{self.speedup_q75:.2f}")
        return text + ")"


def _require_model(model) -> None:
    if not callable(model):
        raise LightKDError(f"model must be a model to call (an nn.Module or an OnnxRunner), got {type(model).__name__}")


def _quartiles(values) -> tuple[float, float, float]:
    values = list(values)
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def latency(model, inputs: dict | torch.Tensor | None = None, *, batch_size: int = 1, seq_len: int = 128,
            repeats: int = 20, warmup: int = 3, num_threads: int | None = None, bf16: bool = False) -> Latency:
    """Median wall time of one forward pass, in milliseconds.

    ``inputs`` is a batch dict (or a tensor for a plain torch model); without
    it, random token ids of ``batch_size`` x ``seq_len`` are made.
    """
    require_positive_int("repeats", repeats)
    require_positive_int("warmup", warmup, minimum=0)
    _require_model(model)
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
    state = model_or_state.state_dict() if callable(getattr(model_or_state, "state_dict", None)) else model_or_state
    if not isinstance(state, dict):
        raise LightKDError(f"model_or_state must be a model or a state dict, got {type(model_or_state).__name__}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def count_params(model, trainable_only: bool = False) -> int:
    """Parameters of ``model``, tied (shared) tensors counted once: its unique parameters."""
    if not callable(getattr(model, "parameters", None)):
        raise LightKDError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


PARTS = ("embeddings", "attention", "ffn", "bottleneck", "norms", "other")


def part_of(name: str) -> str:
    """Which part of a transformer a parameter belongs to, from its name."""
    if not isinstance(name, str):
        raise LightKDError(f"name must be a parameter name such as 'encoder.layer.0.attention.self.query.weight', "
                           f"got {name!r}")
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
    if not callable(getattr(model, "named_parameters", None)):
        raise LightKDError(f"model must be an nn.Module, got {type(model).__name__}")
    counts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        counts[part_of(name)] += p.numel()
    return counts


def flops(model, inputs: dict | torch.Tensor | None = None, **text_kwargs) -> int:
    """Floating-point operations of one forward pass (a multiply-add counts 2),
    counted by torch's FlopCounterMode over matmuls and convolutions, and
    over the fused attention kernel (QK^T and AV), which torch's CPU
    version of ``scaled_dot_product_attention`` would otherwise leave out."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
    _require_model(model)
    if inputs is None:
        inputs = text_inputs(model, **text_kwargs)
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {} if cpu_sdpa is None else {
        cpu_sdpa: lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter, torch.inference_mode():
        model(inputs) if isinstance(inputs, torch.Tensor) else model(**model_inputs(inputs))
    return int(counter.get_total_flops())


def compare_latency(models: dict, inputs=None, *, reference: str | None = None, rounds: int = 15,
                    repeats: int = 1, warmup: int = 2, num_threads: int | None = None, bf16: bool = False,
                    **text_kwargs) -> dict[str, Latency]:
    """Latency of several models measured round-robin, with each one's
    speed-up over ``reference`` (default: the first model).

    Each round times every model ``repeats`` times (its round time is the
    median of those), in forward order on even rounds and backward on odd
    ones. A burst of load on a shared machine then hits both sides of a
    round alike, so ``result[name].speedup``, the median over rounds of
    t_reference / t_model (with its quartiles ``speedup_q25/_q75``), stays
    honest where a ratio of two separately measured medians does not.
    ``inputs``: one batch for all, a dict of batches keyed like ``models``,
    or None for random text inputs (``batch_size``, ``seq_len``)."""
    if not isinstance(models, dict) or not models:
        raise LightKDError("models must be a non-empty dict {name: model}: compare_latency needs at least one model")
    require_positive_int("rounds", rounds)
    require_positive_int("repeats", repeats)
    require_positive_int("warmup", warmup, minimum=0)
    for model in models.values():
        _require_model(model)
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise LightKDError(f"reference {reference!r} is not one of the models: {', '.join(map(repr, models))}")
    calls = {}
    for name, model in models.items():
        x = inputs.get(name) if isinstance(inputs, dict) and name in inputs else inputs
        x = text_inputs(model, **text_kwargs) if x is None else x
        model.eval()
        calls[name] = (lambda m=model, x=x: m(x)) if isinstance(x, torch.Tensor) else \
            (lambda m=model, x=x: m(**model_inputs(x)))
    times = {name: [] for name in models}
    order = list(calls.items())
    with threads(num_threads), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for call in calls.values():
            for _ in range(warmup):
                call()
        for r in range(rounds):
            for name, call in (order if r % 2 == 0 else order[::-1]):
                ts = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    call()
                    ts.append((time.perf_counter() - start) * 1000)
                times[name].append(statistics.median(ts))
    out = {}
    for name, ts in times.items():
        q25, median, q75 = _quartiles(ts)
        s25, speedup, s75 = _quartiles(t_ref / t for t_ref, t in zip(times[reference], ts))
        out[name] = Latency(median, q25, q75, ts, reference, speedup, s25, s75)
    return out


# ------------------------------------------------------------- ONNX Runtime
# One exporter for the book: torch.onnx.export with dynamo=False (the
# TorchScript tracer) and named dynamic axes. The dynamo exporter
# (torch.export + onnxscript) is torch's newer path, but on this CPU it took
# 30 to 60 times longer: over a minute for BERT-base and three for the
# 24-layer MobileBERT on a busy core, against a few seconds, which a
# chapter's time budget cannot pay. The tracer records one run: sizes that
# the model reads with ``len()`` become constants (the lightkd ViT's batch
# size does: export it with the batch you will run), which is why the tests
# compare the graph with torch at other batch sizes and sentence lengths.
class _FirstTensor(torch.nn.Module):
    """Wraps a model for export: keyword inputs in a fixed order, one tensor out
    (``.logits`` of a ModelOutput or transformers output, else the first output)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *tensors):
        out = self.model(**dict(zip(self.names, tensors)))
        if isinstance(out, torch.Tensor):
            return out
        if getattr(out, "logits", None) is not None:
            return out.logits
        return out[0]


def _as_input_dict(inputs) -> dict:
    if isinstance(inputs, torch.Tensor):
        return {"pixel_values": inputs}
    if isinstance(inputs, dict) and inputs and all(isinstance(v, torch.Tensor) for v in model_inputs(inputs).values()):
        return dict(model_inputs(inputs))
    raise LightKDError("inputs must be a tensor of pixel values or a dict of tensors such as "
                       f"{{'input_ids': ..., 'attention_mask': ...}}, got {type(inputs).__name__}")


@contextlib.contextmanager
def _traced_sizes_as_ints():
    """The tracer hands a model its input's sizes as 0-d tensors; the ViT's
    patch-size check (``models.require_patch_size``) wants ints. Give it ints
    while exporting (the image size is fixed by the config anyway)."""
    from . import models
    check = getattr(models, "require_patch_size", None)
    if check is None:
        yield
        return
    models.require_patch_size = lambda size, patch: check(int(size), patch)
    try:
        yield
    finally:
        models.require_patch_size = check


def export_onnx(model, path, inputs) -> str:
    """Write ``model`` to one ONNX file at ``path`` and return the path.

    ``inputs``: an example batch, a dict of keyword tensors (``input_ids``,
    ``attention_mask``, ``token_type_ids``) or a tensor of ``pixel_values``.
    The graph takes those names and returns one tensor, ``logits`` (or the
    model's first output). The first axis is dynamic, and so is the second
    one of integer (token) inputs, so any batch and sentence length run,
    unless the model reads a size with ``len()``, which the tracer records
    as a constant (the lightkd ViT's batch size: export with the batch you
    will run; ``OnnxRunner`` says so if the sizes do not fit)."""
    _require_model(model)
    folder = os.path.dirname(os.path.abspath(str(path)))
    if not os.path.isdir(folder) or os.path.isdir(str(path)):
        raise LightKDError(f"path must name a file in an existing folder, got {str(path)!r}")
    feed = _as_input_dict(inputs)
    names = list(feed)
    axes = {k: {0: "batch", 1: "sequence"} if not v.is_floating_point() and v.ndim >= 2 else {0: "batch"}
            for k, v in feed.items()}
    wrapped = _FirstTensor(model.eval() if hasattr(model, "eval") else model, names).eval()
    with warnings.catch_warnings(), torch.no_grad(), _traced_sizes_as_ints():
        warnings.simplefilter("ignore")  # tracer warnings about constants: the tests check the graph instead
        torch.onnx.export(wrapped, tuple(feed.values()), str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return str(path)


def onnx_quantize_dynamic(source, target) -> str:
    """ONNX Runtime's own dynamic quantization of an exported file: int8
    weights for MatMul and Gather, activations quantized at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    if not os.path.isfile(str(source)):
        raise LightKDError(f"source {str(source)!r} is not an ONNX file; write one with bench.export_onnx")
    if not os.path.isdir(os.path.dirname(os.path.abspath(str(target)))):
        raise LightKDError(f"target must name a file in an existing folder, got {str(target)!r}")
    # Intermediate shapes stored in the file can clash with what the
    # quantizer's shape inference derives: drop them, it infers them again.
    graph = onnx.load(str(source))
    del graph.graph.value_info[:]
    prepared = f"{target}.prepared.onnx"
    onnx.save(graph, prepared)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice to pre-process first on every call
    try:
        quantize_dynamic(prepared, str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        os.remove(prepared)
    return str(target)


_ORT_DTYPES = {"tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(float)": torch.float32,
               "tensor(double)": torch.float64, "tensor(bool)": torch.bool}


class OnnxRunner:
    """An ONNX Runtime session that behaves like the torch model it was
    exported from: call it with the same keyword inputs (or one tensor of
    pixel values), get a ``ModelOutput`` whose ``.logits`` is the graph's
    output. Inputs the graph does not take are dropped; a missing
    ``attention_mask`` is all ones and a missing ``token_type_ids`` all zeros.

    ``num_threads``: ONNX Runtime's intra-op threads (sequential execution).
    ``optimize``: ONNX Runtime's graph optimisations (fusions, constant
    folding), on by default as in deployment."""

    def __init__(self, path, num_threads: int = 1, optimize: bool = True):
        import onnxruntime as ort
        if not isinstance(num_threads, int) or num_threads < 1:
            raise LightKDError(f"num_threads must be a positive integer, got {num_threads!r}")
        if not os.path.isfile(str(path)):
            raise LightKDError(f"path {str(path)!r} is not an ONNX file; write one with bench.export_onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        self.path, self.num_threads, self.optimize = str(path), num_threads, optimize
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: _ORT_DTYPES.get(i.type, torch.float32) for i in self.session.get_inputs()}
        self.input_names = list(self.inputs)

    def _feed(self, args, kwargs) -> dict:
        if len(args) > 1:
            raise LightKDError("OnnxRunner takes keyword inputs, or one positional tensor")
        if args:
            kwargs = {self.input_names[0]: args[0], **kwargs}
        given = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        ids = given.get("input_ids")
        defaults = {"attention_mask": torch.ones_like, "token_type_ids": torch.zeros_like}
        feed = {}
        for name, dtype in self.inputs.items():
            if name in given:
                x = given[name]
            elif name in defaults and ids is not None:
                x = defaults[name](ids)
            else:
                raise LightKDError(f"the ONNX graph needs input {name!r}; got {sorted(given) or 'none'}")
            feed[name] = x.detach().to(dtype).contiguous().numpy()
        return feed

    def __call__(self, *args, **kwargs):
        feed = self._feed(args, kwargs)
        try:
            outputs = self.session.run(None, feed)
        except Exception as e:  # onnxruntime's own error types; say which shapes it choked on
            shapes = {k: tuple(v.shape) for k, v in feed.items()}
            raise LightKDError(f"ONNX Runtime could not run {os.path.basename(self.path)} on inputs {shapes}: "
                               f"{str(e).splitlines()[0][:300]}. If only the batch size differs from the export "
                               "example, the model read it with len() and the tracer fixed it: export again "
                               "with the batch size you run") from e
        return ModelOutput(logits=torch.from_numpy(outputs[0]))

    def eval(self):
        return self

    def size_on_disk(self) -> int:
        """Bytes of the ONNX file."""
        return os.path.getsize(self.path)

    def __repr__(self):
        return f"OnnxRunner({os.path.basename(self.path)!r}, inputs={self.input_names}, threads={self.num_threads})"
