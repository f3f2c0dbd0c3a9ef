"""Pruning: set weights to zero (unstructured) or cut whole pieces out
(structured: attention heads, FFN neurons, layers).

Read top to bottom:

1. Magnitude masks. A mask keeps the weights with the largest |w|, per
   matrix (``layerwise_magnitude_masks``) or with one threshold across all
   of them (``global_magnitude_masks``). ``apply_masks`` zeroes the rest;
   ``keep_masks`` re-zeroes them after every optimizer step, so fine-tuning
   never revives a pruned weight.
2. Fine-tuning a pruned model (``fine_tune_masked``) and the lottery ticket:
   ``rewind`` puts the surviving weights back to where training started,
   ``random_reinit`` gives the same mask fresh random weights.
3. Why zeros are not speed: ``CSRLinear`` runs a pruned Linear with a real
   sparse format; ``semi_structured_mask`` builds the 2:4 pattern that
   sparse tensor cores want.
4. Heads: ``head_importance`` (Michel et al.: |dL/d gate| of a gate on each
   head's output), ``head_magnitude`` (weight norms, the baseline),
   ``heads_to_remove`` and ``remove_heads`` (physical removal through
   transformers' ``prune_heads``).
5. FFN neurons (``remove_ffn_neurons``) and whole layers (``drop_layers``).
6. The vocabulary: ``vocabulary_of`` (the word pieces a corpus uses) and
   ``trim_vocabulary``, which keeps only those rows of the word-embedding
   table behind a lookup from the tokenizer's ids, so the tokenizer and
   every caller stay as they were.
7. Check functions for the exercises.

Everything works on a transformers BERT classifier (``model.bert.encoder``)
and, for the mask functions, on any ``nn.Module``.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from . import train
from .blocks import encoder_layers, head_grid, keep_layers
from .common import LightKDError, require_positive_int, set_seed
from .exercises import check_function

STRATEGIES = ("top", "bottom", "alternate")


# ------------------------------------------------------------ 1. magnitude masks
def require_sparsity(sparsity) -> float:
    """Sparsity is the fraction of weights set to zero: 0 keeps all, 1 would keep none."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise LightKDError(f"sparsity must be a number in [0, 1) (0.5 = half the weights zero), got {sparsity!r}")
    return float(sparsity)


def n_to_prune(numel: int, sparsity: float) -> int:
    # round(), as torch.nn.utils.prune does, so the two agree weight for weight
    return int(round(require_sparsity(sparsity) * numel))


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask of ``weight``'s shape: False on the ``sparsity`` fraction with smallest |w|."""
    k = n_to_prune(weight.numel(), sparsity)
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if k:
        mask[torch.topk(weight.detach().abs().flatten(), k, largest=False).indices] = False
    return mask.view_as(weight)


def module_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The ``weight`` of submodule ``name``; a clear error if it has none."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise LightKDError(f"{type(model).__name__} has no submodule {name!r}") from None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise LightKDError(f"module {name!r} ({type(module).__name__}) has no weight to prune; "
                           "prune its Linear layers instead (see prunable_linears)")
    return weight


def prunable_linears(model: nn.Module, within: str = "encoder") -> list[str]:
    """Names of the Linear layers inside ``within`` (by default the transformer's
    encoder: Q, K, V, attention output, FFN in and out). Embeddings, pooler and
    classifier stay dense, as in Chen et al. (2020)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and f"{within}." in f"{n}."]
    if not names:
        raise LightKDError(f"no Linear layers inside {within!r} in {type(model).__name__}")
    return names


def layerwise_magnitude_masks(model: nn.Module, names: list[str], sparsity: float) -> dict:
    """The same sparsity in every matrix."""
    require_sparsity(sparsity)
    return {n: magnitude_mask(module_weight(model, n), sparsity) for n in names}


def global_magnitude_masks(model: nn.Module, names: list[str], sparsity: float) -> dict:
    """One |w| threshold across all the matrices: layers with many small weights lose more."""
    require_sparsity(sparsity)
    weights = [module_weight(model, n).detach() for n in names]
    flat = torch.cat([w.abs().flatten() for w in weights])
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    k = n_to_prune(flat.numel(), sparsity)
    if k:
        keep[torch.topk(flat, k, largest=False).indices] = False
    masks, start = {}, 0
    for n, w in zip(names, weights):
        masks[n] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global", names: list[str] | None = None) -> dict:
    names = prunable_linears(model) if names is None else list(names)
    if not names:  # an empty list must not silently mean "every layer"
        raise LightKDError("names is empty: give the modules to prune, or None for every prunable Linear")
    if scope == "global":
        return global_magnitude_masks(model, names, sparsity)
    if scope in ("layer", "layerwise"):
        return layerwise_magnitude_masks(model, names, sparsity)
    raise LightKDError(f"scope must be 'global' or 'layer', got {scope!r}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict) -> nn.Module:
    """Zero the pruned weights in place."""
    for name, mask in masks.items():
        weight = module_weight(model, name)
        if mask.shape != weight.shape:
            raise LightKDError(f"mask for {name!r} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
        weight.mul_(mask.to(weight.dtype))
    return model


def masks_from_zeros(model: nn.Module, names: list[str] | None = None) -> dict:
    """Recover the masks of a pruned model (a cached one, say) from its zeros."""
    return {n: module_weight(model, n) != 0 for n in (names or prunable_linears(model))}


def sparsity_of(masks: dict) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def sparsity_by_module(masks: dict) -> dict:
    return {n: 1.0 - m.float().mean().item() for n, m in masks.items()}


def keep_masks(masks: dict):
    """An ``on_step`` hook for ``train.fit``: re-zero pruned weights after each update."""
    def on_step(step, model, optimizer):
        apply_masks(model, masks)
    return on_step


# ---------------------------------------------- 2. fine-tuning and the lottery ticket
def freeze_embeddings(model: nn.Module) -> nn.Module:
    """Embeddings are not pruned; freezing them also saves most of the optimizer's
    work on a small BERT (the word embeddings are half of MiniLM's parameters)."""
    for name, p in model.named_parameters():
        if "embeddings" in name:
            p.requires_grad_(False)
    return model


def fine_tune_masked(model, masks: dict, train_batches, *, steps: int, lr: float = 5e-5,
                     seed: int | None = None, warmup_ratio: float = 0.1):
    """Fine-tune for ``steps`` updates with the pruned weights held at zero."""
    if not isinstance(steps, int) or steps < 1:
        raise LightKDError(f"steps must be a positive integer, got {steps!r}")
    freeze_embeddings(model)
    apply_masks(model, masks)
    result = train.fit(model, train_batches, None, max_steps=steps, lr=lr, seed=seed,
                       warmup_ratio=warmup_ratio, on_step=keep_masks(masks), progress=False)
    return {"steps": result.steps, "final_loss": result.history[-1].get("ce") if result.history else None}


def gradual_sparsity(step: int, final: float, ramp_steps: int) -> float:
    """Zhu and Gupta's cubic schedule: s_t = s_f (1 - (1 - t / n)^3). Prunes fast
    while there are many redundant weights, slowly near the end."""
    require_sparsity(final)
    if not isinstance(ramp_steps, int) or ramp_steps < 1:
        raise LightKDError(f"ramp_steps must be a positive integer, got {ramp_steps!r}")
    t = min(max(step, 0), ramp_steps) / ramp_steps
    return final * (1 - (1 - t) ** 3)


class GradualPruning:
    """An ``on_step`` hook for ``train.fit``: every ``every`` steps during the ramp,
    recompute the magnitude masks at the scheduled sparsity (pruned weights stay
    pruned because they are zero, the smallest |w|); re-apply them after every step."""

    def __init__(self, model: nn.Module, final: float, ramp_steps: int, every: int = 5, scope: str = "global"):
        self.final, self.ramp_steps, self.every, self.scope = require_sparsity(final), ramp_steps, every, scope
        gradual_sparsity(0, final, ramp_steps)  # validates
        self.masks = magnitude_masks(model, 0.0, scope)
        self.history = []  # (step, sparsity)

    def __call__(self, step, model, optimizer):
        if step % self.every == 0 and step <= self.ramp_steps:
            target = gradual_sparsity(step, self.final, self.ramp_steps)
            self.masks = magnitude_masks(model, target, self.scope)
            self.history.append((step, target))
        apply_masks(model, self.masks)


def fine_tune_gradual(model, train_batches, *, final: float, steps: int, ramp_fraction: float = 0.75,
                      lr: float = 5e-5, every: int = 5, seed: int | None = None):
    """Iterative (gradual) pruning: prune a little, train a little, repeat, up to
    ``final`` sparsity after ``ramp_fraction`` of the steps; the rest fine-tunes."""
    freeze_embeddings(model)
    ramp = every * max(1, round(ramp_fraction * steps / every))  # the last update lands on the final sparsity
    pruner = GradualPruning(model, final, ramp, every=every)
    result = train.fit(model, train_batches, None, max_steps=steps, lr=lr, seed=seed, on_step=pruner, progress=False)
    apply_masks(model, magnitude_masks(model, final))  # exactly final, whatever rounding did
    return {"steps": result.steps, "schedule": pruner.history}


@torch.no_grad()
def rewind(model: nn.Module, init_state: dict, masks: dict, skip: tuple = ("classifier",)) -> nn.Module:
    """Lottery-ticket rewinding: every weight back to its value in ``init_state``
    (for a pretrained BERT: the pretrained weights, Chen et al. 2020), then the mask.
    Parameters whose names start with one of ``skip`` keep their current values
    (the new classifier head has no pretrained value)."""
    if not isinstance(init_state, dict) or not init_state:
        raise LightKDError("init_state must be a non-empty state dict (model.state_dict() of the initial weights)")
    own = model.state_dict()
    matched = [name for name in init_state if name in own and not name.startswith(skip)]
    if not matched:  # a state dict of another model (a base model's, without the "bert." prefix) rewinds nothing
        raise LightKDError(f"init_state names none of the model's weights (its keys start like "
                           f"{', '.join(list(init_state)[:3])}; the model's like {', '.join(list(own)[:3])}): "
                           "give the state dict of the same kind of model")
    for name in matched:
        value = init_state[name]
        if own[name].shape != value.shape:
            raise LightKDError(f"{name}: shape {tuple(value.shape)} in init_state, {tuple(own[name].shape)} in the model")
    missing = [f"{m}.weight" for m in masks if f"{m}.weight" not in init_state]
    if missing:  # a pruned weight without an initial value would keep its trained value: no rewinding
        raise LightKDError(f"init_state has no initial value for the masked weight {missing[0]!r} "
                           f"({len(missing)} of {len(masks)} masked weights are missing)")
    for name in matched:
        own[name].copy_(init_state[name])
    return apply_masks(model, masks)


@torch.no_grad()
def random_reinit(model: nn.Module, masks: dict, seed: int | None = None, keep: tuple = ("embeddings",)) -> nn.Module:
    """The control: the same mask on fresh random weights (the model's own init,
    N(0, 0.02) for BERT). Modules whose names contain one of ``keep`` are left
    alone: the embeddings are neither pruned nor trained here, so they stay
    pretrained and the control differs from the ticket only in the pruned part."""
    if not hasattr(model, "_init_weights"):
        raise LightKDError(f"{type(model).__name__} has no _init_weights; build a fresh model from its config instead")
    set_seed(seed)
    for name, module in model.named_modules():
        if not any(k in name for k in keep) and not list(module.children()):
            model._init_weights(module)
    return apply_masks(model, masks)


# --------------------------------------------------------- 3. sparse formats
class CSRLinear(nn.Module):
    """A Linear whose weight is stored in compressed sparse row form: only the
    non-zeros and their column indices. y = W x is computed by a sparse kernel."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():  # "CSR support is in beta": known, and measured below
            warnings.simplefilter("ignore")
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x):
        shape = x.shape
        y = torch.sparse.mm(self.weight, x.reshape(-1, shape[-1]).T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], -1)


def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """2:4 sparsity: in every group of 4 consecutive weights of a row, keep the 2
    largest |w|. Exactly 50% sparse, in the pattern NVIDIA's sparse tensor cores run."""
    if weight.ndim != 2 or weight.shape[1] % 4:
        raise LightKDError(f"2:4 sparsity needs a 2-D weight whose rows divide into groups of 4, got {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(weight.shape[0], -1, 4)
    top = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(weight.shape)


# ------------------------------------------------------------------ 4. heads
def require_importance(model: nn.Module, importance: torch.Tensor) -> torch.Tensor:
    expected = head_grid(model)
    if not isinstance(importance, torch.Tensor) or tuple(importance.shape) != expected:
        got = tuple(importance.shape) if isinstance(importance, torch.Tensor) else type(importance).__name__
        raise LightKDError(f"importance must be a tensor of shape (layers, heads) = {expected}, got {got}")
    return importance


@contextlib.contextmanager
def head_gates(model: nn.Module, gates: torch.Tensor):
    """Multiply each head's output by ``gates[layer, head]`` inside the block.

    A gate of 1 changes nothing; 0 silences the head (what removing it does);
    its gradient is Michel et al.'s importance signal."""
    require_importance(model, gates)
    handles = []
    for i, layer in enumerate(encoder_layers(model)[1]):
        attn = layer.attention.self

        def hook(module, args, output, i=i):
            context = output[0]
            b, t, _ = context.shape
            gated = (context.view(b, t, module.num_attention_heads, module.attention_head_size)
                     * gates[i].to(device=context.device, dtype=context.dtype)[None, None, :, None]).view(b, t, -1)
            return (gated, *output[1:])
        if attn.num_attention_heads != gates.shape[1]:
            raise LightKDError("head_gates works on a model whose heads were not physically removed yet")
        handles.append(attn.register_forward_hook(hook))
    try:
        yield gates
    finally:
        for h in handles:
            h.remove()


def normalize_per_layer(importance: torch.Tensor, exponent: float = 2.0) -> torch.Tensor:
    """Michel et al.'s code divides each layer's scores by their L2 norm, so
    layers are comparable when heads are ranked across the whole model."""
    norm = importance.pow(exponent).sum(-1, keepdim=True).pow(1 / exponent)
    return importance / (norm + 1e-20)


def head_importance(model: nn.Module, batches, max_batches: int | None = None, normalize: bool = True) -> torch.Tensor:
    """I_h = sum over batches of |dL/d gate_h| at gate = 1 (Michel et al. 2019)."""
    if max_batches is not None:
        require_positive_int("max_batches", max_batches)
    layers, heads = head_grid(model)
    device = train.model_device(model)
    gates = torch.ones(layers, heads, requires_grad=True, device=device)
    total = torch.zeros(layers, heads, device=device)
    model.eval()  # no dropout: the score should not depend on it
    seen = 0
    with head_gates(model, gates):
        for k, batch in enumerate(batches):
            if max_batches is not None and k >= max_batches:
                break
            loss, _ = train.classification_loss(model, train.to_device(batch, device))
            grad, = torch.autograd.grad(loss, gates)
            total += grad.abs()
            seen = k + 1
    if not seen:  # zeros from no data would rank the heads by nothing
        raise LightKDError("batches is empty: head importance needs at least one batch with labels")
    return normalize_per_layer(total) if normalize else total


@torch.no_grad()
def head_magnitude(model: nn.Module) -> torch.Tensor:
    """Baseline score: L2 norm of all the weights that belong to a head (its rows
    of Q, K, V and its columns of the attention output)."""
    layers, heads = head_grid(model)
    scores = torch.zeros(layers, heads, device=train.model_device(model))
    for i, layer in enumerate(encoder_layers(model)[1]):
        s, d = layer.attention.self, layer.attention.self.attention_head_size
        if s.num_attention_heads != heads:
            raise LightKDError("head_magnitude needs the unpruned model")
        for h in range(heads):
            rows = slice(h * d, (h + 1) * d)
            parts = [s.query.weight[rows], s.key.weight[rows], s.value.weight[rows],
                     layer.attention.output.dense.weight[:, rows]]
            scores[i, h] = torch.sqrt(sum(p.pow(2).sum() for p in parts))
    return scores


def heads_to_remove(importance: torch.Tensor, fraction: float, min_heads_per_layer: int = 1) -> dict:
    """The least important ``fraction`` of all heads, ranked across layers, as
    ``{layer: [heads]}``; every layer keeps at least ``min_heads_per_layer``."""
    if not isinstance(importance, torch.Tensor) or importance.ndim != 2:
        raise LightKDError(f"importance must be a (layers, heads) tensor, got "
                           f"{tuple(importance.shape) if isinstance(importance, torch.Tensor) else type(importance).__name__}")
    layers, heads = importance.shape
    if not 0 <= fraction < 1:
        raise LightKDError(f"fraction of heads must be in [0, 1), got {fraction!r}")
    budget = int(round(fraction * layers * heads))
    if budget > layers * (heads - min_heads_per_layer):
        raise LightKDError(f"removing {budget} heads would leave some layer with fewer than {min_heads_per_layer}")
    left = {i: heads for i in range(layers)}
    chosen: dict = {}
    for flat in torch.argsort(importance.flatten(), stable=True).tolist():
        if budget == 0:
            break
        i, h = divmod(flat, heads)
        if left[i] > min_heads_per_layer:
            chosen.setdefault(i, []).append(h)
            left[i] -= 1
            budget -= 1
    return {i: sorted(hs) for i, hs in sorted(chosen.items())}


def random_heads(layers: int, heads: int, fraction: float, seed: int = 0) -> dict:
    """A random removal order with the same budget (the control)."""
    g = torch.Generator().manual_seed(seed)
    return heads_to_remove(torch.rand(layers, heads, generator=g), fraction)


def head_mask_gates(model: nn.Module, removed: dict) -> torch.Tensor:
    """Gates with 0 on the removed heads: simulates removal without changing shapes."""
    gates = torch.ones(*head_grid(model), device=train.model_device(model))
    for i, hs in removed.items():
        gates[i, hs] = 0
    return gates


def remove_heads(model: nn.Module, removed: dict) -> nn.Module:
    """Physically remove heads (``{layer: [heads]}``, original head numbers):
    Q, K, V lose rows, the attention output loses columns. In place."""
    layers, heads = head_grid(model)
    already = {int(k): set(v) for k, v in (model.config.pruned_heads or {}).items()}
    for i, hs in removed.items():
        if not isinstance(i, int) or not 0 <= i < layers:
            raise LightKDError(f"layer {i!r} does not exist; the model has layers 0..{layers - 1}")
        bad = [h for h in hs if not isinstance(h, int) or not 0 <= h < heads]
        if bad:
            raise LightKDError(f"layer {i}: head(s) {bad} do not exist; heads are 0..{heads - 1}")
        if len(already.get(i, set()) | set(hs)) >= heads:
            raise LightKDError(f"removing heads {sorted(hs)} would leave layer {i} with no attention head; "
                               "keep at least one per layer, or drop the whole layer with drop_layers")
    model.prune_heads({i: list(hs) for i, hs in removed.items() if hs})
    return model


# ------------------------------------------------------- 5. FFN neurons and layers
@torch.no_grad()
def ffn_neuron_importance(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, one score per intermediate neuron: ||w_in|| * ||w_out||, the
    size of the path through it (a magnitude score, like head_magnitude)."""
    return [layer.intermediate.dense.weight.norm(dim=1) * layer.output.dense.weight.norm(dim=0)
            for layer in encoder_layers(model)[1]]


@torch.no_grad()
def remove_ffn_neurons(model: nn.Module, fraction: float, scores: list[torch.Tensor] | None = None) -> nn.Module:
    """Cut the least important ``fraction`` of each layer's FFN neurons out of
    both FFN matrices. In place; the model really shrinks."""
    from transformers.pytorch_utils import prune_linear_layer
    require_sparsity(fraction)
    _, layers = encoder_layers(model)
    scores = scores or ffn_neuron_importance(model)
    if len(scores) != len(layers):
        raise LightKDError(f"need one score vector per layer ({len(layers)}), got {len(scores)}")
    for layer, score in zip(layers, scores):
        width = layer.intermediate.dense.out_features
        if score.shape != (width,):
            raise LightKDError(f"FFN scores must have shape ({width},), got {tuple(score.shape)}")
        keep = torch.sort(torch.topk(score, width - n_to_prune(width, fraction)).indices).values
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    return model


def layers_to_drop(num_layers: int, strategy: str, n: int) -> list[int]:
    """Which layers to drop: the top n, the bottom n, or every other one from
    the top (Sajjad et al. 2023)."""
    if strategy not in STRATEGIES:
        raise LightKDError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(n, int) or not 0 <= n < num_layers:
        raise LightKDError(f"can drop 0..{num_layers - 1} of {num_layers} layers, got {n!r}")
    if strategy == "top":
        return list(range(num_layers - n, num_layers))
    if strategy == "bottom":
        return list(range(n))
    if 2 * n > num_layers:  # every other layer, starting from the second-to-top
        raise LightKDError(f"'alternate' can drop at most {num_layers // 2} of {num_layers} layers")
    return sorted(num_layers - 2 - 2 * k for k in range(n))


def drop_layers(model: nn.Module, drop: list[int]) -> nn.Module:
    """Remove whole encoder layers. In place."""
    n = len(encoder_layers(model)[1])
    bad = [i for i in drop if not isinstance(i, int) or not 0 <= i < n]
    if bad or len(set(drop)) != len(drop) or len(drop) >= n:
        raise LightKDError(f"can drop distinct layers among 0..{n - 1}, keeping at least one; got {drop}")
    return keep_layers(model, [i for i in range(n) if i not in set(drop)])


# ------------------------------------------------------------ 6. the vocabulary
def vocabulary_of(texts, tokenizer) -> list[int]:
    """The sorted token ids that ``tokenizer`` gives ``texts``, with its
    special tokens ([CLS], [SEP], [PAD], [UNK], ...)."""
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise LightKDError("texts must be a non-empty list of strings")
    ids = set(tokenizer.all_special_ids)
    for row in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        ids.update(row)
    return sorted(ids)


def row_lookup(vocab_size: int, keep_ids, unk_id: int) -> torch.Tensor:
    """``row_of[token id]``: the token's row among the sorted ``keep_ids``, or
    [UNK]'s row for a token that is not kept."""
    keep = sorted(set(int(i) for i in keep_ids))
    row_of = torch.full((vocab_size,), keep.index(unk_id), dtype=torch.int32)
    row_of[torch.tensor(keep)] = torch.arange(len(keep), dtype=torch.int32)
    return row_of


class TrimmedVocabulary(nn.Module):
    """A text classifier whose word-embedding table keeps only some rows.

    ``row_of[token id]`` is the token's row in the small table; a token that
    was not kept reads the [UNK] row, exactly as if the tokenizer had never
    known it. The lookup is one int32 gather, so the model takes the
    original tokenizer's ids (and exports to ONNX) unchanged."""

    def __init__(self, model: nn.Module, row_of: torch.Tensor):
        super().__init__()
        self.model, self.config = model, model.config
        self.register_buffer("row_of", row_of.to(device=train.model_device(model), dtype=torch.int32))

    def forward(self, input_ids, **kwargs):
        return self.model(input_ids=self.row_of[input_ids], **kwargs)


@torch.no_grad()
def trim_vocabulary(model: nn.Module, keep_ids, unk_id: int) -> TrimmedVocabulary:
    """A copy of ``model`` with only the word embeddings of ``keep_ids``.

    Word embeddings are most of a small model: 11.7M of MiniLM-L6's 22.7M
    parameters, for 30,522 word pieces of which one English task corpus
    uses well under half. Cutting the unused rows changes no output on text
    made of kept pieces."""
    import copy
    embeddings = getattr(getattr(model, "bert", None), "embeddings", None)
    if embeddings is None:
        raise LightKDError("model must be a BERT-family classifier with model.bert.embeddings")
    table = embeddings.word_embeddings.weight
    vocab = table.shape[0]
    keep = sorted(set(int(i) for i in keep_ids))
    if not keep or keep[0] < 0 or keep[-1] >= vocab:
        raise LightKDError(f"keep_ids must be a non-empty set of token ids in 0..{vocab - 1}")
    if not isinstance(unk_id, int) or unk_id not in keep:
        raise LightKDError(f"unk_id {unk_id!r} must be one of keep_ids: unseen tokens are read as [UNK]")
    row_of = row_lookup(vocab, keep, unk_id)
    small = copy.deepcopy(model)
    pad = embeddings.word_embeddings.padding_idx
    small.bert.embeddings.word_embeddings = nn.Embedding.from_pretrained(
        table[keep].clone(), freeze=False, padding_idx=keep.index(pad) if pad in keep else None)
    small.config.vocab_size = len(keep)
    return TrimmedVocabulary(small, row_of)


# ------------------------------------------------------------ 7. exercises
def _random_weights(rng):
    return [torch.randn(rng.randrange(2, 20), rng.randrange(2, 20)) * rng.choice([0.1, 1.0, 3.0])
            for _ in range(rng.randrange(1, 5))]


def global_magnitude_mask_reference(weights: list, sparsity: float) -> list:
    """Exercise reference: one threshold over a list of tensors, masks as bool tensors."""
    model = nn.Module()
    for k, w in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data = w.clone()
        model.add_module(f"l{k}", lin)
    masks = global_magnitude_masks(model, [f"l{k}" for k in range(len(weights))], sparsity)
    return [masks[f"l{k}"] for k in range(len(weights))]


def check_global_magnitude_mask(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``candidate(weights: list[Tensor], sparsity) -> list[bool Tensor]``."""
    def make(rng):
        return _random_weights(rng), rng.choice([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, rng.random() * 0.99])
    return check_function(candidate, global_magnitude_mask_reference, make, trials=trials, seed=seed,
                          name="global_magnitude_mask")


def head_importance_reference(gate_grads: torch.Tensor) -> torch.Tensor:
    """Exercise reference: per-batch gate gradients (batches, layers, heads) ->
    Michel et al.'s normalised importance (layers, heads)."""
    return normalize_per_layer(gate_grads.abs().sum(0))


def _lookup_inputs(rng):
    vocab = rng.randrange(5, 200)
    keep = sorted(rng.sample(range(vocab), rng.randrange(1, vocab)))
    return vocab, keep, rng.choice(keep)


def check_row_lookup(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Check ``row_lookup(vocab_size, keep_ids, unk_id)`` on random vocabularies."""
    return check_function(candidate, lambda v, k, u: row_lookup(v, k, u).long(), _lookup_inputs, trials=trials,
                          seed=seed, name="row_lookup")


def check_head_importance(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``candidate(gate_grads) -> importance``."""
    def make(rng):
        return (torch.randn(rng.randrange(1, 6), rng.randrange(1, 7), rng.randrange(1, 13)),)
    return check_function(candidate, head_importance_reference, make, trials=trials, seed=seed,
                          name="head_importance")
