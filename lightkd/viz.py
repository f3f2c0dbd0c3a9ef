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


def _page_fontsize(fig, size, room=None, page_width=9.0):
    """A font size that stays readable on the page: the book shrinks a figure wider than about
    ``page_width`` inches to fit, so its text is drawn larger by the same factor; ``room`` (points
    per label, e.g. a token's row of an attention map) caps it so that labels do not overlap."""
    size = size * max(1.0, fig.get_figwidth() / page_width)
    if room is not None:
        size = min(size, max(6.0, 0.85 * room))
    return float(size)


def attention_map(attention, tokens, ax=None, title=None, cmap="viridis", vmax=None):
    """One head: query tokens down the side, key tokens along the top.

    The colour scale runs from 0 to the map's largest weight, or to ``vmax``:
    pass ``vmax=1`` to put maps of different models on one scale (on its own
    scale a uniform map looks as bright as a sharp one)."""
    a = _as_numpy(attention)
    if a.shape != (len(tokens), len(tokens)):
        raise LightKDError(f"attention is {a.shape} but there are {len(tokens)} tokens: one row and column each")
    if ax is None:
        size = max(3.0, 0.28 * len(tokens) + 1.2)
        _, ax = plt.subplots(figsize=(size, size))
    if vmax is not None and (isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not vmax > 0):
        raise LightKDError(f"vmax must be a positive number, got {vmax!r}")
    ax.imshow(a, cmap=cmap, vmin=0, vmax=vmax if vmax is not None else max(a.max(), 1e-9))
    fontsize = _page_fontsize(ax.figure, 8, room=72 * ax.get_position().height * ax.figure.get_figheight() / len(tokens))
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=fontsize)
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
    fontsize = _page_fontsize(fig, 8)
    for l in range(layers):
        for h in range(heads):
            ax = axes[l, h]
            ax.imshow(a[l, h], cmap="viridis", vmin=0)
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
            if l == 0:
                ax.set_title(f"head {h}", fontsize=fontsize)
            if h == 0:
                ax.set_ylabel(f"layer {l}", fontsize=fontsize)
    fig.suptitle(title or "attention of every layer and head", y=1.0, fontsize=max(11, fontsize + 2))
    fig.tight_layout()
    return fig


def bars(labels, values, ylabel="", ax=None, title=None, reference=None, fmt="{:.1f}", colors=None):
    """Labelled bars; ``reference`` draws a dashed line (e.g. the teacher)."""
    _check_pairs(labels, values)
    if ax is None:
        _, ax = plt.subplots()
    b = ax.bar(range(len(labels)), values, color=colors or PALETTE[: len(labels)])
    ax.bar_label(b, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    return _label_categories(ax, labels, ylabel, reference, title)


def _check_pairs(labels, values):
    if len(labels) != len(values) or not len(labels):
        raise LightKDError(f"labels and values must pair up one to one, got {len(labels)} and {len(values)}")


def _label_categories(ax, labels, ylabel, reference, title):
    """What bars and dots share: one tick per label (slanted when long), the y label, a dashed reference."""
    ax.set_xticks(range(len(labels)), labels, rotation=20 if max(map(len, map(str, labels))) > 10 else 0)
    ax.set_ylabel(ylabel)
    if reference is not None:
        ax.axhline(reference, ls="--", color="k", lw=1)
    if title:
        ax.set_title(title)
    return ax


def dots(labels, values, ylabel="", ax=None, title=None, errors=None, runs=None, reference=None,
         fmt="{:.3f}", colors=None):
    """Labelled points, for values compared near each other (accuracies): unlike a bar, a point does not
    claim a length from zero, so the axis may start where the data does.

    ``errors``: per point a half-width, or ``(below, above)`` (e.g. from a 95% interval); ``runs``: per
    point the single runs (seeds), drawn as small black dots; ``reference``: a dashed line (the teacher).
    """
    _check_pairs(labels, values)
    for what, extra in (("errors", errors), ("runs", runs)):
        if extra is not None and len(extra) != len(labels):
            raise LightKDError(f"{what} must have one entry per label ({len(labels)}), got {len(extra)}")
    if ax is None:
        _, ax = plt.subplots()
    colors = colors or (PALETTE * 3)[: len(labels)]
    for i, (v, c) in enumerate(zip(values, colors)):
        e = None
        if errors is not None:
            e = np.reshape(np.abs(np.asarray(errors[i], dtype=float)), (-1, 1))  # (1, 1) or (2, 1)
        ax.errorbar([i], [v], yerr=e, fmt="o", ms=7, color=c, capsize=4, zorder=3)
        ax.annotate(fmt.format(v), (i, v), xytext=(7, 0), textcoords="offset points", va="center", fontsize=8)
        if runs is not None:
            ax.scatter([i - 0.12] * len(runs[i]), runs[i], color="k", s=9, zorder=4)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    return _label_categories(ax, labels, ylabel, reference, title)


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


def plain_log_ticks(ax):
    """Tick labels of a log-scale x axis as plain numbers (20, not 2 x 10^1); the ticks between powers
    of ten get labels too when the axis spans less than about one and a half decades (else they crowd)."""
    ax.autoscale_view()
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    low, high = ax.get_xlim()
    ax.xaxis.set_minor_formatter(plain if low > 0 and high / low < 30 else matplotlib.ticker.NullFormatter())


def label_points(ax, points, fontsize=8):
    """Name each ``(x, y, text)`` point beside it, trying a few positions around the point and taking
    the first whose box overlaps neither a label already placed nor another point (a greedy placer:
    good enough for the dozen points of a chapter's plot)."""
    ax.autoscale_view()
    to_px = ax.transData.transform
    scale = ax.figure.dpi / 72                         # points to pixels
    char_w, line_h = 0.6 * fontsize * scale, 1.2 * fontsize * scale
    markers = [to_px((x, y)) for x, y, _ in points]
    placed = []

    def overlaps(box):
        x0, y0, x1, y1 = box
        hit_label = any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed)
        return hit_label or any(x0 - 3 < px < x1 + 3 and y0 - 3 < py < y1 + 3 for px, py in markers)

    for (x, y, text), (px, py) in sorted(zip(points, markers), key=lambda t: (t[1][0], -t[1][1])):
        w, h = char_w * len(str(text)), line_h
        options = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
                   (-5, -3, "right", "top"), (5, 12, "left", "bottom"), (5, -12, "left", "top"),
                   (-5, 12, "right", "bottom"), (-5, -12, "right", "top")]
        for dx, dy, ha, va in options + [options[0]]:       # none free: the first, as before
            x0 = px + dx * scale - (w if ha == "right" else 0)
            y0 = py + dy * scale - (h if va == "top" else 0)
            box = (x0, y0, x0 + w, y0 + h)
            if not overlaps(box):
                break
        placed.append(box)
        leader = dict(arrowstyle="-", lw=0.6, color="#777777", shrinkA=0, shrinkB=3) if abs(dy) > 5 else None
        ax.annotate(str(text), (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize,
                    arrowprops=leader)


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
    if logx:
        ax.set_xscale("log")
        plain_log_ticks(ax)
    label_points(ax, [(p["cost"], p["accuracy"], p["name"]) for p in points])
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (p["cost"], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    ax.plot([p["cost"] for p in front], [p["accuracy"] for p in front], "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def layer_diagram(teacher, student, links=(), *, dropped=(), ax=None, title=None,
                  names=("teacher", "student")):
    """A method drawn as two stacks of boxes, the teacher's above the student's.

    ``teacher`` and ``student`` are box labels left to right (embeddings,
    layers, head). ``links`` are ``(teacher_box, student_box, label, kind)``
    with kind ``"copied"`` (a grey arrow: the student starts from that box's
    weights) or ``"matched"`` (a coloured dashed line: a loss pulls the two
    outputs together; the label names the loss). ``dropped`` greys out
    teacher boxes the student does without. A box index may be negative.
    """
    teacher, student = [str(t) for t in teacher], [str(s) for s in student]
    if not teacher or not student:
        raise LightKDError("teacher and student must each have at least one box")

    def index(i, n, what):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise LightKDError(f"{what} box {i!r} is out of range: there are {n}")
        return int(i) % n

    kinds = {"copied": ("#8C8C8C", "-"), "matched": (PALETTE[3], "--")}
    parsed = []
    for link in links:
        if len(link) != 4 or link[3] not in kinds:
            raise LightKDError(f"each link is (teacher_box, student_box, label, 'copied' or 'matched'), got {link!r}")
        parsed.append((index(link[0], len(teacher), "teacher"), index(link[1], len(student), "student"),
                       str(link[2]), link[3]))
    dropped = {index(i, len(teacher), "dropped teacher") for i in dropped}
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 1.05 * max(len(teacher), len(student)) + 1.5), 2.8))
    width = max(len(teacher), len(student))
    xs_t = np.linspace(0, width - 1, len(teacher)) if len(teacher) > 1 else np.array([(width - 1) / 2])
    xs_s = np.linspace(0, width - 1, len(student)) if len(student) > 1 else np.array([(width - 1) / 2])
    y_t, y_s, h, w = 1.6, 0.0, 0.55, 0.8
    for xs, y, labels, who in ((xs_t, y_t, teacher, "t"), (xs_s, y_s, student, "s")):
        for k, (x, label) in enumerate(zip(xs, labels)):
            gone = who == "t" and k in dropped
            ax.add_patch(matplotlib.patches.FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", lw=1,
                facecolor="#F2F2F2" if gone else ("#DCE6F2" if who == "t" else "#E3F1E5"),
                edgecolor="#BBBBBB" if gone else "#555555", ls=":" if gone else "-"))
            ax.text(x, y, label, ha="center", va="center", fontsize=8 if len(label) <= 9 else 6.5,
                    color="#999999" if gone else "k")
    pairs = [(t, s) for t, s, _, _ in parsed]
    for t, s, label, kind in parsed:
        color, style = kinds[kind]
        shift = (0.15 if kind == "matched" else -0.15) if pairs.count((t, s)) > 1 else 0.0  # copied and matched
        x0, x1 = xs_t[t] + shift, xs_s[s] + shift
        ax.annotate("", xy=(x1, y_s + h / 2), xytext=(x0, y_t - h / 2),
                    arrowprops=dict(arrowstyle="->" if kind == "copied" else "<->", color=color, ls=style, lw=1.2,
                                    shrinkA=1, shrinkB=1))
        if label:
            left = kind == "copied"  # copied labels to the left of their arrow, matched ones to the right
            ax.text((x0 + x1) / 2 + (-0.06 if left else 0.06), (y_t + y_s) / 2, label, fontsize=7, color=color,
                    ha="right" if left else "left", va="center")
    ax.text(-0.75, y_t, names[0], ha="right", va="center", fontsize=9, weight="bold")
    ax.text(-0.75, y_s, names[1], ha="right", va="center", fontsize=9, weight="bold")
    handles = [matplotlib.lines.Line2D([], [], color=c, ls=ls, label=f"{k}") for k, (c, ls) in kinds.items()
               if any(p[3] == k for p in parsed)]
    if dropped:
        handles.append(matplotlib.patches.Patch(facecolor="#F2F2F2", edgecolor="#BBBBBB", ls=":", label="dropped"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 1.28), ncol=len(handles),
                  frameon=False)
    ax.set_xlim(-2.2, width - 0.3)
    ax.set_ylim(y_s - 0.6, y_t + 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10, pad=18)
    return ax


def dataflow_diagram(steps, colors: dict, *, per_row: int = 7, ax=None, title=None):
    """A computation drawn as boxes joined by arrows, each box coloured by its kind.

    ``steps`` are ``(label, kind)`` in the order the data flows; ``colors``
    maps every kind to a colour and gives the legend (chapter 2: which steps
    of a layer run on integers and which stay in float). The boxes wrap
    into rows of ``per_row``, read left to right, top to bottom.
    """
    steps = [(str(label), kind) for label, kind in steps]
    if not steps:
        raise LightKDError("steps must hold at least one (label, kind) pair")
    unknown = sorted({kind for _, kind in steps} - set(colors), key=str)
    if unknown:
        raise LightKDError(f"colors has no entry for the kind(s) {unknown}; it has {sorted(colors)}")
    if isinstance(per_row, bool) or not isinstance(per_row, int) or per_row < 1:
        raise LightKDError(f"per_row must be a positive integer, got {per_row!r}")
    rows = -(-len(steps) // per_row)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.45 * min(per_row, len(steps)) + 0.4, 0.95 * rows + 0.7))
    w, h, gap = 1.15, 0.5, 0.3
    pos = [((i % per_row) * (w + gap), -(i // per_row) * (h + 0.45)) for i in range(len(steps))]
    for (x, y), (label, kind) in zip(pos, steps):
        ax.add_patch(matplotlib.patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", lw=1,
                                                       facecolor=colors[kind], edgecolor="#555555"))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=7.5 if len(label) <= 14 else 6.5)
    arrow = dict(arrowstyle="->", color="#555555", lw=1, shrinkA=0, shrinkB=1)
    for (x0, y0), (x1, y1) in zip(pos, pos[1:]):
        if y0 == y1:       # the next box in the row
            ax.annotate("", xy=(x1, y1 + h / 2), xytext=(x0 + w, y0 + h / 2), arrowprops=arrow)
        else:              # down into the gap, back along it, down into the next row's first box
            mid = (y0 + y1 + h) / 2
            ax.plot([x0 + w / 2, x0 + w / 2, x1 + w / 2], [y0, mid, mid], color="#555555", lw=1)
            ax.annotate("", xy=(x1 + w / 2, y1 + h), xytext=(x1 + w / 2, mid), arrowprops=arrow)
    used = [k for k in colors if any(kind == k for _, kind in steps)]
    ax.legend(handles=[matplotlib.patches.Patch(facecolor=colors[k], edgecolor="#555555", label=str(k)) for k in used],
              fontsize=7.5, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(used), frameon=False)
    ax.set_xlim(-0.1, min(per_row, len(steps)) * (w + gap))
    ax.set_ylim(-(rows - 1) * (h + 0.45) - 0.1, h + 0.1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10, pad=22)
    return ax


def mask_grid(masks: dict, *, ax_size: float = 1.3, title=None):
    """Which weights a method keeps, drawn as one grid of matrices.

    ``masks`` maps a row label (a method) to ``{matrix name: 2-d mask}``
    with True (or 1) for a kept weight; every row names the same matrices.
    Kept weights are coloured, removed ones pale (chapter 3: what
    unstructured, head, neuron and layer pruning each take out).
    """
    if not masks or not all(isinstance(row, dict) and row for row in masks.values()):
        raise LightKDError("masks must map each row label to a non-empty {matrix name: mask} dict")
    columns = list(next(iter(masks.values())))
    for label, row in masks.items():
        if list(row) != columns:
            raise LightKDError(f"row {label!r} names the matrices {list(row)}; the first row names {columns}")
        for name, m in row.items():
            if np.ndim(_as_numpy(m)) != 2:
                raise LightKDError(f"the mask of {name!r} in row {label!r} must be 2-d, got shape "
                                   f"{np.shape(_as_numpy(m))}")
    fig, axes = plt.subplots(len(masks), len(columns), squeeze=False,
                             figsize=(ax_size * len(columns) + 1.6, ax_size * len(masks) + 0.4))
    cmap = matplotlib.colors.ListedColormap(["#EEEEEE", PALETTE[0]])
    for r, (label, row) in enumerate(masks.items()):
        for c, (name, m) in enumerate(row.items()):
            ax = axes[r, c]
            m = _as_numpy(m).astype(bool)
            ax.imshow(m, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
            ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
            for side in ax.spines.values():
                side.set_visible(True); side.set_color("#999999")
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
            ax.set_xlabel(f"{m.mean():.0%} kept", fontsize=7, labelpad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


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


# ------------------------------------------------------------- the explorer
EXPLORER_AXES = {"latency_ms": "latency, batch 1 (ms)", "size_mb": "size on disk (MB)",
                 "unique_params_m": "unique parameters (millions)"}


def chapter_styles(chapters) -> dict:
    """One (colour, marker) per chapter, alike in every plot of the scoreboard: eleven chapters are more
    than a ten-colour palette, so tab20's dark shades come first, then its light ones, each with its own
    marker."""
    colours, markers = [matplotlib.colors.to_hex(c) for c in plt.cm.tab20.colors], "osD^v<>ph*X"
    return {c: (colours[2 * i % 20 if i < 10 else (2 * (i - 10) + 1) % 20], markers[i % len(markers)])
            for i, c in enumerate(sorted(chapters))}


def explorer_html(models, element_id: str = "lightkd-explorer", titles=None) -> str:
    """An accuracy-vs-cost explorer as self-contained HTML: an SVG scatter of
    every model (one colour per chapter, as ``chapter_styles``), an axis
    picker (latency, size, unique parameters), a log-scale cost axis, each
    chapter's own Pareto front for the axis shown (chapters differ in task,
    so no front crosses them), and a tooltip with model, method and chapter
    on hover. Its script is inline: the page needs no CDN and works offline.

    ``models``: the scoreboard's frame (``results.models_frame()``);
    ``titles``: a chapter id -> the name a reader knows it by."""
    import json as _json
    import math as _math
    points = []
    for row in models.to_dict("records"):
        if row.get("accuracy") is None or _math.isnan(row["accuracy"]):
            continue
        def num(v, scale=1.0):
            return None if v is None or (isinstance(v, float) and _math.isnan(v)) or v <= 0 else v / scale
        points.append({"model": row["model"], "method": row["method"], "chapter": row["chapter"],
                       "accuracy": row["accuracy"], "latency_ms": num(row.get("latency_ms")),
                       "size_mb": num(row.get("size_bytes"), 1e6),
                       "unique_params_m": num(row.get("unique_params") or row.get("params"), 1e6)})
    if not points:
        raise LightKDError("models has no row with an accuracy: nothing to draw")
    chapters = sorted({p["chapter"] for p in points})
    colours = {c: colour for c, (colour, _) in chapter_styles(chapters).items()}
    name = (lambda c: str(titles(c))) if callable(titles) else (lambda c: str((titles or {}).get(c, c)))
    for p in points:
        p["chapter_title"] = name(p["chapter"])
    payload = _json.dumps({"points": points, "axes": EXPLORER_AXES, "colours": colours})
    options = "".join(f'<option value="{k}">{v}</option>' for k, v in EXPLORER_AXES.items())
    legend = "".join(f'<span style="margin-right:12px;white-space:nowrap"><span style="display:inline-block;width:10px;height:10px;'
                     f'border-radius:5px;background:{colours[c]};margin-right:4px"></span>{name(c)}</span>'
                     for c in chapters)
    return f"""
<div id="{element_id}" style="font-family:sans-serif;font-size:13px;max-width:760px;position:relative">
  <label>cost axis: <select class="axis">{options}</select></label>
  <label style="margin-left:16px"><input type="checkbox" class="logx" checked> log scale</label>
  <div style="margin:6px 0">{legend}</div>
  <svg viewBox="0 0 740 420" style="width:100%;max-width:740px;height:auto;border:1px solid #ddd;background:#fff"></svg>
  <div class="tip" style="position:absolute;display:none;background:#222;color:#fff;padding:4px 8px;
       border-radius:4px;pointer-events:none;font-size:12px"></div>
</div>
<script>
(function() {{
  const data = {payload};
  const root = document.getElementById("{element_id}");
  const svg = root.querySelector("svg"), tip = root.querySelector(".tip");
  const W = 740, H = 420, L = 60, R = 20, T = 15, B = 45, NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {{
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e); return e;
  }}
  function draw() {{
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const axis = root.querySelector(".axis").value, logx = root.querySelector(".logx").checked;
    const pts = data.points.filter(p => p[axis] !== null);
    if (!pts.length) {{ el("text", {{x: W / 2, y: H / 2, "text-anchor": "middle"}}, "no model records this cost"); return; }}
    const f = v => logx ? Math.log10(v) : v;
    let x0 = Math.min(...pts.map(p => f(p[axis]))), x1 = Math.max(...pts.map(p => f(p[axis])));
    let y0 = Math.min(...pts.map(p => p.accuracy)), y1 = Math.max(...pts.map(p => p.accuracy));
    const padx = (x1 - x0 || 1) * 0.08, pady = (y1 - y0 || 0.1) * 0.1;
    x0 -= padx; x1 += padx; y0 -= pady; y1 += pady;
    const sx = v => L + (f(v) - x0) / (x1 - x0) * (W - L - R);
    const sy = v => H - B - (v - y0) / (y1 - y0) * (H - T - B);
    el("line", {{x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#444"}});
    el("line", {{x1: L, y1: T, x2: L, y2: H - B, stroke: "#444"}});
    for (let i = 0; i <= 4; i++) {{
      const yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
      el("text", {{x: L - 6, y: sy(yv) + 4, "text-anchor": "end", "font-size": 11}}, (100 * yv).toFixed(1) + "%");
      const shown = logx ? Math.pow(10, xv) : xv;
      el("text", {{x: L + (W - L - R) * i / 4, y: H - B + 16, "text-anchor": "middle", "font-size": 11}},
         shown >= 100 ? shown.toFixed(0) : shown.toPrecision(2));
    }}
    el("text", {{x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle"}}, data.axes[axis] + (logx ? ", log scale" : ""));
    el("text", {{x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${{(T + H - B) / 2}})`, "text-anchor": "middle"}}, "accuracy");
    const front = [];   // each chapter's own front: chapters differ in task, so none crosses them
    for (const ch of [...new Set(pts.map(p => p.chapter))]) {{
      const mine = pts.filter(p => p.chapter === ch).sort((a, b) => a[axis] - b[axis] || b.accuracy - a.accuracy);
      let best = -Infinity; const line = [];
      for (const p of mine) if (p.accuracy > best) {{ line.push(p); best = p.accuracy; }}
      front.push(...line);
      if (line.length > 1)
        el("polyline", {{points: line.map(p => sx(p[axis]) + "," + sy(p.accuracy)).join(" "), fill: "none",
                        stroke: data.colours[ch], "stroke-dasharray": "5,4"}});
    }}
    for (const p of pts) {{
      const c = el("circle", {{cx: sx(p[axis]), cy: sy(p.accuracy), r: front.includes(p) ? 7 : 5,
                              fill: data.colours[p.chapter], stroke: front.includes(p) ? "#000" : "none", opacity: 0.85}});
      c.addEventListener("mousemove", e => {{
        const box = root.getBoundingClientRect();
        tip.style.display = "block"; tip.style.left = (e.clientX - box.left + 12) + "px";
        tip.style.top = (e.clientY - box.top + 12) + "px";
        tip.innerHTML = `<b>${{p.model}}</b><br>${{p.method}}<br>chapter ${{p.chapter_title}}<br>` +
          `accuracy ${{(100 * p.accuracy).toFixed(1)}}%, ${{data.axes[axis]}} ${{p[axis].toPrecision(3)}}` +
          (front.includes(p) ? "<br>on its chapter's Pareto front" : "");
      }});
      c.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
    }}
  }}
  root.querySelector(".axis").addEventListener("change", draw);
  root.querySelector(".logx").addEventListener("change", draw);
  draw();
}})();
</script>"""
