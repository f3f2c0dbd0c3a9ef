# %% [markdown]
# # The scoreboard
#
# Every model a chapter trained or measured, and every paper claim a chapter
# tested, gathered from the results files the chapters wrote when they last
# ran. Nothing on this page is typed: rebuild the book and it follows the
# chapters. Accuracy is each chapter's own task (movie-review sentiment for the
# language chapters, Fashion-MNIST for the vision chapters), so compare models
# within a chapter, and methods across chapters by what they keep of their own
# teacher.

# %% tags=["remove-cell"]
import math
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from lightkd import results, viz

chapters = results.load_all()
models = results.models_frame(chapters)
claims = results.claims_frame(chapters)

# %% [markdown]
# ## Every model

# %% tags=["remove-input"]
def fmt(value, kind):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return {"pct": f"{100 * value:.1f}%", "m": f"{value / 1e6:.2f}M", "mb": f"{value / 1e6:.1f} MB",
            "ms": f"{value:.2f} ms", "x": f"{value:.2f}x"}[kind]

def accuracy_cell(row):
    text = fmt(row["accuracy"], "pct")
    lo, hi = row["accuracy_ci_low"], row["accuracy_ci_high"]
    if text and lo is not None and not math.isnan(lo):
        text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return text

table = pd.DataFrame({
    "chapter": models["chapter"], "model": models["model"], "method": models["method"],
    "accuracy [95% interval]": models.apply(accuracy_cell, axis=1),
    "parameters": models["params"].map(lambda v: fmt(v, "m")),
    "unique parameters": models["unique_params"].map(lambda v: fmt(v, "m")),
    "size on disk": models["size_bytes"].map(lambda v: fmt(v, "mb")),
    "latency (batch 1)": models["latency_ms"].map(lambda v: fmt(v, "ms")),
    "speed-up over its teacher": models["speedup"].map(lambda v: fmt(v, "x")),
})
display(table.style.hide(axis="index"))
display(Markdown(f"{len(table)} models from {models['chapter'].nunique()} chapters. Latency is measured on the "
                 "machine that built the book, one thread; compare ratios within a chapter, not milliseconds "
                 "across chapters."))

# %% [markdown]
# ## Accuracy against cost
#
# Hover over a point for the model, its method and its chapter; pick the cost
# on the horizontal axis. The dashed line joins the Pareto front: the models
# no other model beats on both accuracy and that cost.

# %% tags=["remove-input"]
if models["accuracy"].notna().any():
    display(HTML(viz.explorer_html(models)))
else:
    display(Markdown("No chapter has recorded a model yet."))

# %% tags=["remove-input"]
points = models.dropna(subset=["accuracy", "latency_ms"])
fig, ax = plt.subplots(figsize=(7, 3.8))
for i, (chapter, group) in enumerate(points.groupby("chapter")):
    ax.scatter(group["latency_ms"], 100 * group["accuracy"], label=chapter, color=viz.PALETTE[i % len(viz.PALETTE)])
front = results.pareto_front(list(zip(points["latency_ms"], points["accuracy"])))
front_rows = points.iloc[front]
ax.plot(front_rows["latency_ms"], 100 * front_rows["accuracy"], "--", color="grey", label="Pareto front")
ax.set(xscale="log", xlabel="latency, batch 1 (ms, log scale)", ylabel="accuracy (%)",
       title="the same points, as a still picture")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## The claim ledger
#
# Each line is a claim of a paper, the effect this book measured with its 95%
# interval, and the verdict by the book's one rule: *reproduced* when the whole
# interval lies on the claimed side of the threshold, *not reproduced* when it
# lies wholly on the other side, *inconclusive* when it contains the threshold.

# %% tags=["remove-input"]
if len(claims):
    counts = claims["verdict"].value_counts()
    display(claims.style.hide(axis="index"))
    display(Markdown(", ".join(f"**{counts.get(v, 0)}** {v}" for v in results.VERDICTS) +
                     f" of {len(claims)} claims from {claims['chapter'].nunique()} chapters."))
else:
    display(Markdown("No chapter has recorded a claim yet."))

# %% tags=["remove-cell"]
# The page shows every model and every claim of every chapter present.
for chapter, payload in chapters.items():
    metrics = payload["metrics"]
    named = {k.split(".")[1] for k in metrics if k.startswith("models.")}
    assert named == set(models.loc[models["chapter"] == chapter, "model"]), chapter
    ids = {k.split(".")[1] for k in metrics if k.startswith("claims.") and k.endswith(".verdict")}
    assert len(ids) == (claims["chapter"] == chapter).sum(), chapter
assert set(claims["verdict"]) <= set(results.VERDICTS)
