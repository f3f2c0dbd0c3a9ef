"""Quantization: store numbers in few bits, compute with them, train for them.

Read top to bottom:

1. Linear quantization from scratch: ``scale_and_zero_point``,
   ``linear_quantize``, ``dequantize``, ``fake_quantize`` (symmetric or
   asymmetric, per-tensor or per-channel), and the error they give.
2. Dynamic int8 (weights int8, activations quantized on the fly):
   ``quantize_dynamic_int8`` picks torchao when it is installed, else
   torch.ao's ``quantize_dynamic`` (deprecated since torch 2.10 but the one
   with fast int8 kernels on x86 CPUs), so chapters never touch either.
3. Q8BERT (Zafrir et al. 2019, IntelLabs/nlp-architect quantization.py):
   ``QuantLinear`` and ``QuantEmbedding`` fake-quantize weights with the
   current max|W| and activations with an EMA of max|x|, gradients pass
   straight through the rounding; ``prepare_q8bert`` swaps them into a
   transformers model. The same modules with ranges calibrated on a few
   batches (``calibrate``, min-max or percentile) are static
   post-training quantization.
4. Check functions for the chapter's exercises.

ONNX Runtime's int8 (export, ``onnx_quantize_dynamic``, a runner that
behaves like the torch model) is deployment, shared with other chapters:
it lives in ``lightkd.bench``.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LightKDError, require_positive_int
from .exercises import check_function

SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("per_tensor", "per_channel")
OBSERVERS = ("minmax", "percentile")


# ------------------------------------------------------ 1. linear quantization
def _check_bits(bits, scheme: str = "symmetric") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise LightKDError(f"bits must be an integer, got {bits!r}")
    if bits <= 0 or bits > 16:
        raise LightKDError(f"bits must be between 1 and 16, got {bits}")
    if scheme == "symmetric" and bits < 2:
        raise LightKDError("symmetric quantization needs at least 2 bits (1 bit leaves only the value 0); "
                           "use scheme='asymmetric' for 1 bit")
    return bits


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise LightKDError(f"unknown scheme={scheme!r}; choose one of {', '.join(map(repr, SCHEMES))}")
    return scheme


def _check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise LightKDError(f"unknown granularity={granularity!r}; choose one of {', '.join(map(repr, GRANULARITIES))}")
    return granularity


def _check_float(x, what: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise LightKDError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise LightKDError(f"{what} must be a floating-point tensor (it is {x.dtype}): it is already integer; "
                           "quantize the float tensor it came from, or call .float() first")
    if x.numel() == 0:
        raise LightKDError(f"{what} is empty: there is nothing to quantize")
    if not torch.isfinite(x).all():  # a NaN would round to the most negative int32, not stay NaN
        raise LightKDError(f"{what} holds NaN or inf; quantization needs finite values")
    return x


def quant_range(bits: int, scheme: str = "symmetric") -> tuple[int, int]:
    """The integers a ``bits``-bit code can take.

    Symmetric uses the restricted range [-(2^(b-1)-1), 2^(b-1)-1] (Q8BERT's
    -127..127): zero is exact and +x and -x round alike. Asymmetric uses all
    2^b codes, [0, 2^b - 1].
    """
    _check_scheme(scheme)
    _check_bits(bits, scheme)
    if scheme == "symmetric":
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _per_channel_view(t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Reshape a (channels,) tensor so it broadcasts along ``axis`` of ``x``."""
    if t.ndim == 0:
        return t
    shape = [1] * x.ndim
    shape[axis] = -1
    return t.reshape(shape)


def _check_axis(x: torch.Tensor, axis: int) -> int:
    if x.ndim == 0:
        raise LightKDError("per-channel quantization needs a tensor with at least one dimension")
    if not -x.ndim <= axis < x.ndim:
        raise LightKDError(f"axis {axis} is out of range for a tensor with {x.ndim} dimensions")
    return axis % x.ndim


def scale_and_zero_point(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric",
                         granularity: str = "per_tensor", axis: int = 0):
    """The scale S and zero point Z that map the range of ``x`` onto the integer grid.

    Symmetric: S = max|x| / q_max, Z = 0. Asymmetric: the range [min, max]
    (stretched to contain 0, so that 0 is exact) spread over all 2^b codes,
    S = (max - min) / (q_max - q_min), Z = q_min - round(min / S).
    Per-channel computes one (S, Z) per slice along ``axis`` (an output
    channel of a weight matrix is a row, axis 0). A range of zero (all values
    0) gets S = 1, so nothing divides by zero and zeros stay exactly zero.
    Returns ``(scale, zero_point)``: float32 and int32 tensors, 0-d for
    per-tensor, shape (channels,) for per-channel.
    """
    _check_float(x)
    _check_scheme(scheme)
    _check_granularity(granularity)
    qmin, qmax = quant_range(bits, scheme)
    x = x.detach().float()
    if granularity == "per_tensor":
        lo, hi = x.min(), x.max()
    else:
        axis = _check_axis(x, axis)
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    if scheme == "symmetric":
        scale = torch.maximum(lo.abs(), hi.abs()) / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero range: any scale is exact
    if scheme == "asymmetric":
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def linear_quantize(x: torch.Tensor, scale, zero_point, bits: int = 8, scheme: str = "symmetric",
                    axis: int = 0) -> torch.Tensor:
    """q = clamp(round(x / S) + Z, q_min, q_max), as int32 (enough for 16 bits).

    ``round`` is round-half-to-even, like torch's own quantizers.
    """
    _check_float(x)
    qmin, qmax = quant_range(bits, scheme)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    zero_point = torch.as_tensor(zero_point, dtype=torch.int32, device=x.device)
    if scale.ndim:
        axis = _check_axis(x, axis)
    if (scale <= 0).any() or not torch.isfinite(scale).all():
        raise LightKDError("scale must be positive and finite; compute it with scale_and_zero_point")
    s, z = _per_channel_view(scale, x, axis), _per_channel_view(zero_point, x, axis)
    q = torch.round(x.detach().float() / s) + z
    return q.clamp(qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale, zero_point, axis: int = 0) -> torch.Tensor:
    """x_hat = (q - Z) * S: the real number each integer code stands for."""
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    zero_point = torch.as_tensor(zero_point, dtype=torch.int32, device=q.device)
    if (scale <= 0).any() or not torch.isfinite(scale).all():
        raise LightKDError("scale must be positive and finite; compute it with scale_and_zero_point")
    s, z = _per_channel_view(scale, q, axis), _per_channel_view(zero_point, q, axis)
    return (q.to(torch.int32) - z).float() * s


def fake_quantize(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric",
                  granularity: str = "per_tensor", axis: int = 0) -> torch.Tensor:
    """Quantize and dequantize in one go: a float tensor that holds only grid values."""
    scale, zero_point = scale_and_zero_point(x, bits, scheme, granularity, axis)
    return dequantize(linear_quantize(x, scale, zero_point, bits, scheme, axis), scale, zero_point, axis)


def quantization_error(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric",
                       granularity: str = "per_tensor", axis: int = 0) -> float:
    """Relative error ||x - fake_quantize(x)|| / ||x|| (0 for an all-zero x)."""
    x = _check_float(x).detach().float()
    err = (x - fake_quantize(x, bits, scheme, granularity, axis)).norm()
    norm = x.norm()
    return float(err / norm) if norm > 0 else 0.0


def torch_fake_quantize(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric",
                        granularity: str = "per_tensor", axis: int = 0) -> torch.Tensor:
    """The same as ``fake_quantize`` through torch's own fused op, for checking."""
    scale, zero_point = scale_and_zero_point(x, bits, scheme, granularity, axis)
    qmin, qmax = quant_range(bits, scheme)
    x = x.detach().float()
    if granularity == "per_tensor":
        return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point, _check_axis(x, axis), qmin, qmax)


# ------------------------------------------------------------ 2. dynamic int8
def dynamic_int8_backends() -> list[str]:
    """Which dynamic-int8 implementations this environment has, preferred first."""
    found = []
    if importlib.util.find_spec("torchao") is not None:
        found.append("torchao")
    if hasattr(getattr(torch, "ao", None), "quantization"):
        found.append("torch.ao")
    return found


def quantize_dynamic_int8(model: nn.Module, backend: str = "auto") -> nn.Module:
    """A copy of ``model`` whose nn.Linear layers run in int8: weights stored
    as int8 once, activations quantized on the fly from each input's range.

    ``backend``: "torchao" (Int8DynamicActivationInt8WeightConfig), "torch.ao"
    (``quantize_dynamic``, per-tensor int8 weights, fbgemm kernels), or
    "auto" (torchao when installed, else torch.ao). The returned model has
    ``lightkd_backend`` set to the one used.
    """
    available = dynamic_int8_backends()
    if backend == "auto":
        if not available:
            raise LightKDError("no dynamic int8 backend: install torchao (pip install torchao) "
                               "or a torch build that still has torch.ao.quantization")
        backend = available[0]
    if backend not in ("torchao", "torch.ao"):
        raise LightKDError(f"unknown backend {backend!r}; choose 'auto', 'torchao' or 'torch.ao'")
    if backend not in available:
        raise LightKDError(f"backend {backend!r} is not available here (found: {available or 'none'}); "
                           "use backend='auto'")
    model = copy.deepcopy(model).eval()
    if backend == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    else:
        with warnings.catch_warnings():  # torch.ao warns it is deprecated: the choice is made here, once
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic
            model = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    model.lightkd_backend = backend
    return model


def linear_weight_state(model: nn.Module) -> dict:
    """The state-dict entries that belong to the model's Linear layers, quantized
    (torch.ao packed params) or not: what int8 shrinks."""
    state = model.state_dict()
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) or type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    return {k: v for k, v in state.items() if any(k.startswith(n + ".") for n in names)}


# ------------------------------------------------------------------ 3. Q8BERT
def fake_quantize_ste(x: torch.Tensor, threshold: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric fake quantization with threshold T (the max|x| to map onto q_max):
    S = q_max / T, x_hat = clamp(round(x S), -q_max, q_max) / S.

    The forward pass sees x_hat; the backward pass sees the identity (the
    straight-through estimator, Bengio et al. 2013): ``x + (x_hat - x).detach()``
    has the value of x_hat and the gradient of x.
    """
    qmax = quant_range(bits, "symmetric")[1]
    if not torch.isfinite(torch.as_tensor(threshold)).all():
        raise LightKDError(f"threshold must be finite, got {threshold!r}")
    scale = qmax / threshold.clamp(min=1e-8).to(x.dtype)
    x_hat = torch.round(x * scale).clamp(-qmax, qmax) / scale
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x_hat  # no backward pass to route: skip the two extra ops
    return x + (x_hat - x).detach()


class QuantLinear(nn.Linear):
    """nn.Linear with Q8BERT's fake quantization: the weight with its current
    max|W| each step, the input with an EMA of max|x| (``act_max``).

    Observing the input range: in training, act_max <- act_max - (1 - decay)(act_max - max|x|),
    started from the first batch's max (as nlp-architect does). Calibration
    (``calibrate``) observes in eval mode instead: "minmax" keeps the largest
    max|x| seen, "percentile" averages each batch's given percentile of |x|.
    In eval, the bias is rounded to int32 with scale S_x S_w, as an integer
    kernel would add it.
    """

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, ema_decay: float = 0.9999, act_bits: int | None = None,
                    per_channel: bool = False):
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = linear.in_features, linear.out_features
        q.weight, q.bias = linear.weight, linear.bias
        q.bits, q.act_bits, q.per_channel = bits, bits if act_bits is None else act_bits, per_channel
        q.ema_decay, q.observer, q.percentile = ema_decay, None, 99.99
        q.register_buffer("act_max", torch.zeros((), device=linear.weight.device))
        q.register_buffer("observed", torch.zeros((), device=linear.weight.device))  # batches seen
        return q

    def _observe(self, x: torch.Tensor) -> None:
        x = x.detach().float().abs()
        if self.training or self.observer == "ema":
            current = x.max()
            if self.observed == 0:
                self.act_max.fill_(current)
            else:
                self.act_max.sub_((1 - self.ema_decay) * (self.act_max - current))
        elif self.observer == "minmax":
            self.act_max.copy_(torch.maximum(self.act_max, x.max()))
        else:  # percentile: running mean of each batch's percentile, read off the top k of |x|
            flat = x.flatten()
            k = max(1, int(round(flat.numel() * (1 - self.percentile / 100))))
            current = flat.topk(k, sorted=False).values.min()
            self.act_max.add_((current - self.act_max) / (self.observed + 1))
        self.observed += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.observer is not None:
            self._observe(x)
        if self.observed == 0:
            raise LightKDError("this QuantLinear has no activation range yet: train it (QAT) or run "
                               "quant.calibrate(model, batches) first")
        x_q = fake_quantize_ste(x, self.act_max, self.act_bits)
        if self.training:
            w_q = fake_quantize_ste(self.weight, self._weight_max(), self.bits)
            return F.linear(x_q, w_q, self.bias)
        return F.linear(x_q, *self._frozen_weight_and_bias())

    def _weight_max(self) -> torch.Tensor:
        """max|W| of the whole matrix (Q8BERT), or of each output row (per-channel)."""
        w = self.weight.detach().abs()
        return w.amax(dim=1, keepdim=True) if self.per_channel else w.max()

    def _frozen_weight_and_bias(self):
        """In eval the weight does not change between calls: quantize it once
        (and again only when the weight, bias or range changes), as an int8
        kernel would. The bias goes to the int32 grid with scale S_x S_w."""
        key = (self.weight._version, self.weight.data_ptr(), self.act_max.item(), self.bits, self.act_bits,
               self.per_channel,
               None if self.bias is None else self.bias._version)
        if getattr(self, "_frozen_key", None) != key:
            with torch.no_grad():
                w_max = self._weight_max()
                w_q = fake_quantize_ste(self.weight, w_max, self.bits)
                w_max = w_max.flatten()  # one per output channel (or one) for the bias
                bias = self.bias
                if bias is not None:
                    bias_scale = ((self.act_max.clamp(min=1e-8) / (2 ** (self.act_bits - 1) - 1))
                                  * (w_max.clamp(min=1e-8) / (2 ** (self.bits - 1) - 1)))
                    bias = torch.round(bias / bias_scale) * bias_scale
            self._frozen, self._frozen_key = (w_q, bias), key
        return self._frozen

    def extra_repr(self):
        return (super().extra_repr() + f", bits={self.bits}, act_bits={self.act_bits}"
                + (", per_channel" if self.per_channel else ""))


class QuantEmbedding(nn.Embedding):
    """nn.Embedding whose table is fake-quantized with its current max|W|.

    Quantizing the looked-up rows with the whole table's scale is the same
    as looking up rows of the quantized table, and 100x cheaper for a 30k
    vocabulary.
    """

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int = 8, per_channel: bool = False):
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        for k in ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                  "scale_grad_by_freq", "sparse"):
            setattr(q, k, getattr(emb, k))
        q.weight, q.bits, q.per_channel = emb.weight, bits, per_channel
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
        if self.per_channel:  # one scale per table row (token): a row's own max
            return fake_quantize_ste(rows, rows.detach().abs().amax(dim=-1, keepdim=True), self.bits)
        return fake_quantize_ste(rows, self.weight.detach().abs().max(), self.bits)

    def extra_repr(self):
        return super().extra_repr() + f", bits={self.bits}"


Q8BERT_EMBEDDINGS = ("word_embeddings", "position_embeddings")


def prepare_q8bert(model: nn.Module, bits: int = 8, ema_decay: float = 0.9999,
                   embeddings=Q8BERT_EMBEDDINGS, act_bits: int | None = None,
                   weight_granularity: str = "per_tensor") -> nn.Module:
    """Swap every nn.Linear for a QuantLinear and the named embeddings for
    QuantEmbeddings, in place (the parameters are shared, not copied).

    LayerNorm, softmax, GELU and the attention matmuls stay in float, as in
    Q8BERT. ``bits`` is for weights and, unless ``act_bits`` says otherwise,
    activations too. ``weight_granularity="per_channel"`` gives every output
    row of a weight (every token of an embedding) its own scale, which Q8BERT
    does not do. Returns the model.
    """
    per_channel = _check_granularity(weight_granularity) == "per_channel"
    _check_bits(bits)
    if act_bits is not None:
        _check_bits(act_bits)
    if not 0 < ema_decay < 1:
        raise LightKDError(f"ema_decay must be between 0 and 1, got {ema_decay}")
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QuantLinear.from_linear(child, bits, ema_decay, act_bits, per_channel))
                swapped += 1
            elif type(child) is nn.Embedding and name in embeddings:
                setattr(parent, name, QuantEmbedding.from_embedding(child, bits, per_channel))
                swapped += 1
    if swapped == 0:
        raise LightKDError("the model has no nn.Linear or named embedding to quantize")
    return model


def quant_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))}


@torch.no_grad()
def calibrate(model: nn.Module, batches, observer: str = "minmax", percentile: float = 99.99,
              max_batches: int | None = None) -> nn.Module:
    """Static post-training quantization: run a few batches through a
    ``prepare_q8bert`` model in eval mode and fix each activation range from
    what they show. Returns the model, ready to evaluate."""
    from .train import model_device, model_inputs, to_device
    if observer not in OBSERVERS:
        raise LightKDError(f"unknown observer {observer!r}; choose one of {', '.join(map(repr, OBSERVERS))}")
    if not 0 < percentile <= 100:
        raise LightKDError(f"percentile must be in (0, 100], got {percentile}")
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if not linears:
        raise LightKDError("no QuantLinear in the model: call quant.prepare_q8bert(model) first")
    model.eval()
    device = model_device(model)
    for m in linears:
        m.observer, m.percentile = observer, percentile
        m.act_max.zero_()
        m.observed.zero_()
    try:
        for k, batch in enumerate(batches):
            if max_batches is not None and k >= max_batches:
                break
            model(**model_inputs(to_device(batch, device)))
    finally:
        for m in linears:
            m.observer = None
    return model


@dataclass
class QATRecipe:
    """Q8BERT-style quantization-aware fine-tuning of an already fine-tuned
    model. Bump ``version`` when the code changes (it names the cache entry)."""
    bits: int = 8
    act_bits: int = 8
    weight_granularity: str = "per_tensor"
    steps: int = 50
    batch_size: int = 32
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    ema_decay: float = 0.9999
    seed: int | None = None  # None: LIGHTKD_SEED
    version: int = 1


def q8bert_finetune(model: nn.Module, tokenizer, dataset, recipe: QATRecipe | None = None, bf16="auto",
                    fake_quant: bool = True, verbose: bool | None = None) -> nn.Module:
    """Fine-tune a fake-quantized copy of ``model`` on ``dataset.train`` (QAT),
    once per recipe: the result is cached with ``zoo.cached``. ``model`` is
    left as it is. ``lightkd_info`` on the result holds the training loss
    curve and how far the activation EMA moved from its first-batch start.

    ``fake_quant=False`` runs the same recipe (same batches, same steps) on a
    plain float copy: the control that separates what quantization costs from
    what the extra fine-tuning itself does."""
    from . import data, train, zoo
    from .common import default_seed
    recipe = dataclasses.replace(recipe or QATRecipe())
    recipe.seed = default_seed() if recipe.seed is None else recipe.seed
    bf16 = train._resolve_bf16(bf16)
    origin = getattr(model, "lightkd_cache", None) or zoo.spec_hash(
        {k: float(v.double().sum()) for k, v in model.state_dict().items()})
    spec = {"model": os.path.basename(str(origin)), "dataset": dataset.name, "n_train": len(dataset.train),
            "recipe": dataclasses.asdict(recipe), "bf16": bf16}
    if not fake_quant:  # only when False, so entries cached before the control existed stay valid
        spec["fake_quant"] = False

    def make():
        if not fake_quant:
            return copy.deepcopy(model)
        return prepare_q8bert(copy.deepcopy(model), bits=recipe.bits, act_bits=recipe.act_bits,
                              ema_decay=recipe.ema_decay, weight_granularity=recipe.weight_granularity)

    def fit(net):
        batches = data.text_batches(dataset.train, tokenizer, batch_size=recipe.batch_size, shuffle=True,
                                    seed=recipe.seed)
        first = {}

        def remember_first_range(step, m, opt):
            if step == 1:
                first.update({n: float(q.act_max) for n, q in m.named_modules() if isinstance(q, QuantLinear)})
        result = train.fit(net, batches, None, max_steps=recipe.steps, lr=recipe.lr,
                           warmup_ratio=recipe.warmup_ratio, seed=recipe.seed, bf16=bf16,
                           on_step=remember_first_range)
        info = {"steps": result.steps, "loss": [h.get("ce") for h in result.history]}
        moved = [abs(float(q.act_max) - first[n]) / max(first[n], 1e-8)
                 for n, q in net.named_modules() if isinstance(q, QuantLinear)]
        if moved:
            info.update(ema_relative_change_max=max(moved), ema_relative_change_mean=sum(moved) / len(moved))
        return info

    kind = f"q8bert-qat{recipe.bits}" if fake_quant else "q8bert-control-fp32"
    return zoo.cached(kind, spec, make, fit, verbose=verbose)


def ptq_static(model: nn.Module, batches, bits: int = 8, observer: str = "minmax", percentile: float = 99.99,
               max_batches: int | None = 8, act_bits: int | None = None,
               weight_granularity: str = "per_tensor") -> nn.Module:
    """A fake-quantized copy of ``model`` with calibrated activation ranges."""
    q = prepare_q8bert(copy.deepcopy(model), bits=bits, act_bits=act_bits, weight_granularity=weight_granularity)
    return calibrate(q, batches, observer=observer, percentile=percentile, max_batches=max_batches)


def evaluate_ptq(model: nn.Module, calibration, test, bits: int = 8, observer: str = "minmax",
                 percentile: float = 99.99, max_batches: int | None = 8, act_bits: int | None = None,
                 weight_granularity: str = "per_tensor", verbose: bool = False) -> dict:
    """``train.evaluate(ptq_static(model, calibration, ...), test, bf16=False)``,
    cached: scoring a fake-quantized model in float is slow, and a chapter
    scores many. ``calibration`` is read once, as ``ptq_static`` reads it (a
    shuffled iterator moves on one epoch), and the batches it gives are part
    of the cache key together with ``model``'s weights and every setting."""
    from . import zoo
    if max_batches is not None:
        require_positive_int("max_batches", max_batches)
    used = []
    for k, batch in enumerate(calibration):
        if max_batches is not None and k >= max_batches:
            break
        used.append(batch)
    if not used:
        raise LightKDError("calibration is empty: static quantization needs batches to observe")
    spec = {"model": zoo.content_identity(model), "calibration": zoo.batches_identity(used), "bits": bits,
            "act_bits": act_bits, "observer": observer, "percentile": percentile,
            "weight_granularity": weight_granularity, "version": 1}

    def build():
        return ptq_static(model, used, bits=bits, observer=observer, percentile=percentile, max_batches=None,
                          act_bits=act_bits, weight_granularity=weight_granularity)
    return zoo.cached_evaluate(build, test, bf16=False, spec=spec, kind="ptq-evaluation", verbose=verbose)


# ------------------------------------------------------------------ 4. checks
def _random_tensor(rng, min_dim: int = 1):
    ndim = rng.randint(min_dim, 3)
    shape = [rng.randint(1, 9) for _ in range(ndim)]
    x = torch.randn(shape) * 10 ** rng.uniform(-3, 2) + rng.choice([0.0, 0.0, rng.uniform(-5, 5)])
    return x


def check_linear_quantize(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``candidate(x, scale, zero_point, bits)`` -> integer codes
    (asymmetric range 0..2^bits-1, per-tensor scale and zero point)."""
    def make(rng):
        x, bits = _random_tensor(rng), rng.choice([2, 3, 4, 6, 8])
        scale, zp = scale_and_zero_point(x, bits, "asymmetric")
        return x, float(scale), int(zp), bits

    def reference(x, scale, zp, bits):
        return linear_quantize(x, scale, zp, bits, "asymmetric")

    def candidate_int(*args):
        out = candidate(*args)
        return out.to(torch.int32) if isinstance(out, torch.Tensor) else out
    candidate_int.__name__ = getattr(candidate, "__name__", "linear_quantize")
    return check_function(candidate_int, reference, make, trials=trials, seed=seed)


def check_dequantize(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``candidate(q, scale, zero_point)`` -> the floats the codes stand for."""
    def make(rng):
        x, bits = _random_tensor(rng), rng.choice([2, 4, 8])
        scale, zp = scale_and_zero_point(x, bits, "asymmetric")
        return linear_quantize(x, scale, zp, bits, "asymmetric"), float(scale), int(zp)

    return check_function(candidate, lambda q, s, z: dequantize(q, s, z), make, trials=trials, seed=seed,
                          name=getattr(candidate, "__name__", "dequantize"))


def better_granularity(w: torch.Tensor, bits: int) -> str:
    """The reference answer: the granularity with the smaller error on this weight
    (per-channel along the output rows, axis 0)."""
    errors = {g: quantization_error(w, bits, "symmetric", g, axis=0) for g in GRANULARITIES}
    return min(errors, key=errors.get)


def check_pick_granularity(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``candidate(w, bits)`` -> "per_tensor" or "per_channel",
    whichever gives the smaller symmetric quantization error on ``w``."""
    def make(rng):
        rows, cols = rng.randint(2, 16), rng.randint(4, 32)
        w = torch.randn(rows, cols)
        if rng.random() < 0.5:  # rows of very different size: per-channel wins
            w = w * torch.logspace(-2, 1, rows)[torch.randperm(rows)].unsqueeze(1)
        return w, rng.choice([2, 4, 8])

    return check_function(candidate, better_granularity, make, trials=trials, seed=seed,
                          name=getattr(candidate, "__name__", "pick_granularity"))
