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


def explorer_html(models, element_id: str = "lightkd-explorer") -> str:
    """An accuracy-vs-cost explorer as self-contained HTML: an SVG scatter of
    every model (one colour per chapter), an axis picker (latency, size,
    unique parameters), a log-scale cost axis, the Pareto front for the axis
    shown, and a tooltip with model, method and chapter on hover. Its
    script is inline: the page needs no CDN and works offline.

    ``models``: the scoreboard's frame (``results.models_frame()``)."""
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
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(chapters)}
    payload = _json.dumps({"points": points, "axes": EXPLORER_AXES, "colours": colours})
    options = "".join(f'<option value="{k}">{v}</option>' for k, v in EXPLORER_AXES.items())
    legend = "".join(f'<span style="margin-right:12px"><span style="display:inline-block;width:10px;height:10px;'
                     f'border-radius:5px;background:{colours[c]};margin-right:4px"></span>{c}</span>'
                     for c in chapters)
    return f"""
<div id="{element_id}" style="font-family:sans-serif;font-size:13px;max-width:760px;position:relative">
  <label>cost axis: <select class="axis">{options}</select></label>
  <label style="margin-left:16px"><input type="checkbox" class="logx" checked> log scale</label>
  <div style="margin:6px 0">{legend}</div>
  <svg width="740" height="420" style="border:1px solid #ddd;background:#fff"></svg>
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
    const sorted = pts.slice().sort((a, b) => a[axis] - b[axis] || b.accuracy - a.accuracy);
    let best = -Infinity; const front = [];
    for (const p of sorted) if (p.accuracy > best) {{ front.push(p); best = p.accuracy; }}
    el("polyline", {{points: front.map(p => sx(p[axis]) + "," + sy(p.accuracy)).join(" "), fill: "none",
                    stroke: "#999", "stroke-dasharray": "5,4"}});
    for (const p of pts) {{
      const c = el("circle", {{cx: sx(p[axis]), cy: sy(p.accuracy), r: front.includes(p) ? 7 : 5,
                              fill: data.colours[p.chapter], stroke: front.includes(p) ? "#000" : "none", opacity: 0.85}});
      c.addEventListener("mousemove", e => {{
        const box = root.getBoundingClientRect();
        tip.style.display = "block"; tip.style.left = (e.clientX - box.left + 12) + "px";
        tip.style.top = (e.clientY - box.top + 12) + "px";
        tip.innerHTML = `<b>${{p.model}}</b><br>${{p.method}}<br>chapter ${{p.chapter}}<br>` +
          `accuracy ${{(100 * p.accuracy).toFixed(1)}}%, ${{data.axes[axis]}} ${{p[axis].toPrecision(3)}}` +
          (front.includes(p) ? "<br>on the Pareto front" : "");
      }});
      c.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
    }}
  }}
  root.querySelector(".axis").addEventListener("change", draw);
  root.querySelector(".logx").addEventListener("change", draw);
  draw();
}})();
</script>"""
