"""The book's plots, in one consistent style."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from .common import LightKDError

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
PART_COLORS = {"embeddings": "#4C72B0", "attention": "#DD8452", "ffn": "#55A868",
               "bottleneck": "#8172B3", "norms": "#C44E52", "other": "#8C8C8C"}


def use_style():
    matplotlib.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (6.4, 3.6),
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.3, "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
        "font.size": 10, "axes.titlesize": 11, "legend.frameon": False,
    })


use_style()


def _as_numpy(x):
    return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def attention_map(attention, tokens, ax=None, title=None, cmap="viridis"):
    """One head: query tokens down the side, key tokens along the top."""
    a = _as_numpy(attention)
    if a.shape != (len(tokens), len(tokens)):
        raise LightKDError(f"attention is {a.shape} but there are {len(tokens)} tokens: one row and column each")
    if ax is None:
        size = max(3.0, 0.28 * len(tokens) + 1.2)
        _, ax = plt.subplots(figsize=(size, size))
    ax.imshow(a, cmap=cmap, vmin=0, vmax=max(a.max(), 1e-9))
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
    ax.grid(False)
    ax.set_xlabel("attends to (key)")
    ax.set_ylabel("token (query)")
    if title:
        ax.set_title(title)
    return ax


def attention_grid(attentions, tokens=None, title=None, cell=1.1):
    """Every layer (rows) and head (columns) of one sentence, as small maps.

    ``attentions`` is what transformers returns with ``output_attentions=True``
    (a tuple of (1, heads, seq, seq) tensors) or an array (layers, heads, seq, seq).
    """
    a = np.stack([_as_numpy(x)[0] if _as_numpy(x).ndim == 4 else _as_numpy(x) for x in attentions])
    layers, heads = a.shape[:2]
    fig, axes = plt.subplots(layers, heads, figsize=(cell * heads, cell * layers), squeeze=False)
    for l in range(layers):
        for h in range(heads):
            ax = axes[l, h]
            ax.imshow(a[l, h], cmap="viridis", vmin=0)
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
            if l == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"layer {l}", fontsize=8)
    fig.suptitle(title or "attention of every layer and head", y=1.0)
    fig.tight_layout()
    return fig


def bars(labels, values, ylabel="", ax=None, title=None, reference=None, fmt="{:.1f}", colors=None):
    """Labelled bars; ``reference`` draws a dashed line (e.g. the teacher)."""
    if len(labels) != len(values) or not len(labels):
        raise LightKDError(f"labels and values must pair up one to one, got {len(labels)} and {len(values)}")
    if ax is None:
        _, ax = plt.subplots()
    b = ax.bar(range(len(labels)), values, color=colors or PALETTE[: len(labels)])
    ax.set_xticks(range(len(labels)), labels, rotation=20 if max(map(len, labels)) > 10 else 0)
    ax.bar_label(b, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    ax.set_ylabel(ylabel)
    if reference is not None:
        ax.axhline(reference, ls="--", color="k", lw=1)
    if title:
        ax.set_title(title)
    return ax


def stacked_bars(counts: dict[str, dict[str, float]], ylabel="parameters (millions)", ax=None, title=None,
                 scale=1e6):
    """One bar per model, stacked by part (embeddings, attention, FFN, ...)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    names = list(counts)
    parts = [p for p in PART_COLORS if any(counts[n].get(p, 0) for n in names)]
    bottom = np.zeros(len(names))
    for part in parts:
        v = np.array([counts[n].get(part, 0) / scale for n in names])
        ax.bar(names, v, bottom=bottom, label=part, color=PART_COLORS[part])
        bottom += v
    for i, total in enumerate(bottom):
        ax.text(i, total, f"{total:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(ncol=3, fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def accuracy_vs_cost(points, cost_label="latency (ms)", ax=None, title=None, logx=False):
    """Accuracy against a cost, one marker per model, the Pareto front drawn.

    ``points``: dicts with ``name``, ``cost``, ``accuracy`` and optional ``group``.
    """
    if ax is None:
        _, ax = plt.subplots()
    groups = list(dict.fromkeys(p.get("group", "") for p in points))
    for g, color in zip(groups, PALETTE * 3):
        ps = [p for p in points if p.get("group", "") == g]
        ax.scatter([p["cost"] for p in ps], [p["accuracy"] for p in ps], color=color, label=g or None, zorder=3)
        for p in ps:
            ax.annotate(p["name"], (p["cost"], p["accuracy"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (p["cost"], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    ax.plot([p["cost"] for p in front], [p["accuracy"] for p in front], "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("accuracy")
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def confusion_matrix(labels, predictions, names, ax=None, title="confusion matrix"):
    labels, predictions = _as_numpy(labels).astype(int), _as_numpy(predictions).astype(int)
    k = len(names)
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (labels, predictions), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * k + 1.5, 1.2 * k + 1))
    ax.imshow(m, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, m[i, j], ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    ax.set_title(title)
    return ax
