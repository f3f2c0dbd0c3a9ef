"""Record what a chapter measured and set it beside what the paper claims.

    rec = Recorder("02_quantization")
    rec.record("int8_dynamic.accuracy", acc, unit="fraction", paper=0.9224,
               source="Q8BERT, SST-2 dev", note="MiniLM-L6 teacher on movie reviews")
    rec.save()                      # results/02_quantization.json
    paper_table(rec)                # a DataFrame: measured beside paper

Values are always what this run measured; the paper column comes from
shared anchors the chapter cites. ``runtime_s`` is the time since the
Recorder was made (the chapter's first cell).

Two kinds of entries share one shape across chapters, so the scoreboard
never special-cases a chapter:

- models: ``rec.model("student_kd", accuracy=..., latency_ms=..., params=...,
  unique_params=..., size_bytes=..., method="KD")`` writes
  ``models.<name>.<field>`` (and ``.chapter``).
- claims, the ledger: ``rec.claim("kd_beats_labels", effect, ci, threshold=0,
  direction="above", claim="KD beats training on labels", source="Hinton et
  al. 2015")`` writes ``claims.<id>.verdict`` / ``.effect`` / ``.ci_low`` /
  ``.ci_high`` / ``.threshold``. The verdict is computed by ``verdict()``,
  one rule for the whole book (``VERDICT_RULE``), never typed.

Intervals for the effects: ``paired_interval`` (a t interval over paired
seeds), ``bootstrap_interval`` (a paired bootstrap over test examples) and
``mean_interval``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

import numpy as np

from .common import LightKDError, atomic_write_bytes, cache_dir, digest, require_number
from .scales import current as current_scale, require_scale

UNITS = ("fraction", "percent", "ratio", "ms", "s", "bytes", "MB", "params", "count", "flops", "x", "points", "")


def results_dir(scale: str = "book") -> Path:
    """Where results of ``scale`` live: ``$LIGHTKD_RESULTS`` when set, else the
    ``results/`` folder of the book this runs in for the published ``book``
    scale, and a folder of the cache for ``tiny`` and ``paper`` runs (a test
    run never overwrites the published numbers)."""
    if os.environ.get("LIGHTKD_RESULTS"):
        path = Path(os.environ["LIGHTKD_RESULTS"])
    elif require_scale(scale) != "book":
        path = cache_dir("results", scale)
    else:
        here = Path.cwd().resolve()
        root = next((p for p in (here, *here.parents) if (p / "_toc.yml").exists()), here)
        path = root / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """What a results file was measured with. ``cpu_features`` because two processors that share a name
    ("AMD EPYC") may differ in what decides the numbers: bf16 units change how students train (bf16
    autocast where they pay), int8 dot products (VNNI) how fast int8 models run."""
    import transformers
    from .bench import cpu_features
    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "python": platform.python_version(), "cpu": cpu_name(), "cpu_features": cpu_features(),
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


class Recorder:
    """``out`` and ``name`` (optional): write ``out/name.json`` instead of
    ``results/<chapter>.json`` (the recipes write beside their other outputs)."""

    def __init__(self, chapter: str, *, out: str | Path | None = None, name: str | None = None,
                 code: str | None = None):
        for what, value in (("chapter", chapter), ("name", name)):
            if (value is not None or what == "chapter") and (not isinstance(value, str) or not value or "/" in value
                                                              or "\\" in value or value in (".", "..")):
                raise LightKDError(f"{what} must be a name like '01_teacher', got {value!r}")
        if out is not None and not isinstance(out, (str, os.PathLike)):
            raise LightKDError(f"out must be a folder (a path) or None, got {out!r}")
        if code is not None and not isinstance(code, str):
            raise LightKDError(f"code must be a digest (a string) or None, got {code!r}")
        self.chapter, self.start, self.metrics = chapter, time.perf_counter(), {}
        self.out, self.name = (Path(out) if out is not None else None), name or chapter
        self.scale = current_scale()
        self.code = code  # a digest of the code that produced the numbers (lightkd.recipes.chapter_digest)

    def record(self, name: str, value, unit: str = "", paper=None, source: str | None = None,
               note: str | None = None):
        if not isinstance(name, str) or not name or name != name.lower() or " " in name:
            raise LightKDError(f"metric names are dotted lower case without spaces, got {name!r}")
        if unit not in UNITS:
            raise LightKDError(f"unknown unit {unit!r}; use one of {UNITS}")
        if hasattr(value, "item"):
            try:
                value = value.item()
            except (ValueError, RuntimeError):
                raise LightKDError(f"{name}: value must be one number, got an array of shape "
                                   f"{tuple(getattr(value, 'shape', ()))}; record a list (.tolist()) or one entry") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise LightKDError(f"{name}: value is {value}; a measurement must be finite")
        _require_json(f"{name}: value", value)
        if paper is not None:
            if hasattr(paper, "item"):
                paper = paper.item()
            if not isinstance(paper, str):  # the paper's figure, or its words ("matches dense")
                require_number(f"{name}: paper", paper)
        for key, v in (("source", source), ("note", note)):
            if v is not None and not isinstance(v, str):
                raise LightKDError(f"{name}: {key} must be text, got {v!r}")
        entry = {"value": value, "unit": unit}
        for key, v in (("paper", paper), ("source", source), ("note", note)):
            if v is not None:
                entry[key] = v
        self.metrics[name] = entry
        return value

    def model(self, name: str, *, accuracy=None, accuracy_ci=None, latency_ms=None, params=None,
              unique_params=None, size_bytes=None, method: str = "", note: str | None = None, **extra):
        """One model's entry in the book-wide schema (``models.<name>.*``).
        ``accuracy_ci``: a (low, high) interval, e.g. over seeds. All its fields are
        recorded or, when one is refused, none."""
        with self._all_or_nothing():
            self._model(name, accuracy, accuracy_ci, latency_ms, params, unique_params, size_bytes, method, note,
                        extra)

    def _model(self, name, accuracy, accuracy_ci, latency_ms, params, unique_params, size_bytes, method, note,
               extra):
        _check_key(name, "model name")
        if not isinstance(method, str):
            raise LightKDError(f"method must be text (how the model was made), got {method!r}")
        fields = {"accuracy": (accuracy, "fraction"), "latency_ms": (latency_ms, "ms"), "params": (params, "params"),
                  "unique_params": (unique_params, "params"), "size_bytes": (size_bytes, "bytes")}
        for key, value in extra.items():
            fields[key] = (value, "")
        if accuracy is not None:
            require_number("accuracy", accuracy, low=0, high=1)
        for key in ("latency_ms", "params", "unique_params", "size_bytes"):
            if fields[key][0] is not None:
                require_number(key, fields[key][0], low=0)
        for key, (value, unit) in fields.items():
            if value is not None:
                self.record(f"models.{name}.{key}", value, unit=unit, note=note)
        if accuracy_ci is not None:
            low, high = _interval(accuracy_ci, "accuracy_ci")  # a t interval may reach past 0 or 1: allowed
            self.record(f"models.{name}.accuracy_ci_low", low, unit="fraction")
            self.record(f"models.{name}.accuracy_ci_high", high, unit="fraction")
        self.record(f"models.{name}.chapter", self.chapter)
        self.record(f"models.{name}.method", method or name)

    def claim(self, claim_id: str, effect, ci=None, *, threshold: float = 0.0, direction: str = "above",
              claim: str, source: str, unit: str = "points", note: str | None = None, paper=None,
              untestable: str | None = None, reason: str | None = None, mde: float | None = None,
              quote: str | None = None, measure: str | None = None, declared: str | None = None,
              history: list | None = None) -> str:
        """Record one line of the claim ledger and return its verdict.

        ``effect`` is what was measured (e.g. accuracy with KD minus without,
        in points), ``ci`` its 95% interval (None for an exact quantity such
        as a parameter count), and the paper's claim reads "effect is
        ``direction`` ``threshold``" (e.g. above 0: KD helps; below 1: within
        one point). ``claim`` is the paper's sentence, ``source`` its citation.
        ``untestable``: why this run cannot test the claim, when it cannot (for
        example, both arms of a comparison are still at chance, so a zero
        difference says nothing); the verdict is then *inconclusive* whatever
        the interval, and the ledger gives the reason beside the claim.

        ``lightkd.study.judge`` fills the rest from a declared claim: ``reason``
        (why a verdict is not "reproduced": one of ``study.REASONS``), ``mde``
        (the minimum detectable effect of the design), ``quote`` (the paper's
        words), ``measure`` (what the effect is), ``declared`` (when the claim
        was declared) and ``history`` (changes to the declaration after results
        existed: dicts of date, field, old, new, why).

        A claim is recorded whole or not at all: when any of its fields is
        refused, the ledger keeps none of them (a half-written claim would
        break ``ledger``).
        """
        with self._all_or_nothing():
            return self._claim(claim_id, effect, ci, threshold, direction, claim, source, unit, note, paper,
                               untestable, reason, mde, quote, measure, declared, history)

    def _claim(self, claim_id, effect, ci, threshold, direction, claim, source, unit, note, paper, untestable,
               reason, mde, quote, measure, declared, history) -> str:
        _check_key(claim_id, "claim id")
        for what, text in (("claim", claim), ("source", source)):
            if not isinstance(text, str) or not text.strip():
                raise LightKDError(f"claim {claim_id!r}: {what} must be non-empty text (the paper's sentence and "
                                   f"its citation), got {text!r}")
        for what, text in (("quote", quote), ("measure", measure), ("declared", declared)):
            if text is not None and not isinstance(text, str):
                raise LightKDError(f"claim {claim_id!r}: {what} must be text or None, got {text!r}")
        if history is not None and (not isinstance(history, (list, tuple)) or not all(
                isinstance(c, dict) and {"date", "field", "old", "new", "why"} <= set(c) for c in history)):
            raise LightKDError(f"claim {claim_id!r}: history must be a list of dicts with date, field, old, new "
                               f"and why, got {history!r}")
        if untestable is not None and (not isinstance(untestable, str) or not untestable.strip()):
            raise LightKDError(f"untestable must be None or the reason the run cannot test the claim, got {untestable!r}")
        verdict_ = verdict(effect, ci, threshold=threshold, direction=direction)
        if untestable:
            verdict_ = "inconclusive"
        from .study import REASONS
        if reason is not None and reason not in REASONS:
            raise LightKDError(f"claim {claim_id!r}: reason must be one of {REASONS}, got {reason!r}")
        if reason is not None and verdict_ == "reproduced":
            raise LightKDError(f"claim {claim_id!r}: a reproduced claim needs no reason, got {reason!r}")
        if mde is not None:
            require_number("mde", mde, low=0)
        low, high = (effect, effect) if ci is None else _interval(ci, "ci")
        base = f"claims.{claim_id}"
        self.record(f"{base}.verdict", verdict_, source=source, note=note)
        if untestable:
            self.record(f"{base}.untestable", untestable)
        self.record(f"{base}.claim", claim)
        self.record(f"{base}.effect", effect, unit=unit, paper=paper, source=source)
        self.record(f"{base}.ci_low", low, unit=unit)
        self.record(f"{base}.ci_high", high, unit=unit)
        self.record(f"{base}.threshold", float(threshold), unit=unit)
        self.record(f"{base}.direction", direction)
        for key, value in (("reason", reason), ("mde", mde), ("quote", quote), ("measure", measure),
                           ("declared", declared)):
            if value is not None:
                self.record(f"{base}.{key}", value, unit=unit if key == "mde" else "")
        if history:
            _require_json(f"claim {claim_id!r}: history", list(history))
            self.metrics[f"{base}.history"] = {"value": list(history), "unit": ""}
        return verdict_

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """Entries recorded inside the block stay only if the whole block succeeds."""
        before = dict(self.metrics)
        try:
            yield
        except BaseException:
            self.metrics.clear()
            self.metrics.update(before)
            raise

    def __getitem__(self, name):
        return self.metrics[name]["value"]

    @property
    def path(self) -> Path:
        if self.out is None:
            return results_dir(self.scale) / f"{self.chapter}.json"
        require_output_folder(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / f"{self.name}.json"

    def save(self) -> Path:
        """Write the results file, with a checksum of its contents (``read_results_file`` checks it)."""
        self.metrics["runtime_s"] = {"value": round(time.perf_counter() - self.start, 1), "unit": "s"}
        payload = {"chapter": self.chapter, "scale": self.scale, "code_digest": self.code,
                   "environment": environment(),
                   "runtime_s": self.metrics["runtime_s"]["value"], "metrics": self.metrics}
        payload = json.loads(json.dumps(payload))  # as it will be read back: the checksum is of that
        payload["sha256"] = _contents_digest(payload)
        atomic_write_bytes(self.path, (json.dumps(payload, indent=1) + "\n").encode())
        return self.path


def require_output_folder(out) -> Path:
    """A folder results can be written into: it exists as a folder, or can be made (no file in the way)."""
    if not isinstance(out, (str, os.PathLike)):
        raise LightKDError(f"out must be a folder (a path), got {out!r}")
    out = Path(out)
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise LightKDError(f"out must be a folder, but {blocker} is a file; give another --out / out folder")
    return out


def _contents_digest(payload: dict) -> str:
    """The checksum of a results file's contents (everything but the checksum itself, keys sorted)."""
    return digest(json.dumps({k: v for k, v in payload.items() if k != "sha256"}, sort_keys=True).encode())


def read_results_file(path) -> dict:
    """A results file, checked: it must decode, hold ``metrics``, and match the checksum ``save``
    recorded in it (files written before checksums have none and are read as they are). A damaged
    file is an error that says to write it again; it is never read into a table."""
    if not isinstance(path, (str, os.PathLike)):
        raise LightKDError(f"path must name a results file, got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise LightKDError(f"there is no results file {path}")
    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LightKDError(f"results file {path.name} is damaged: it does not decode ({e}); re-run its chapter "
                           "(or recipe) to write it again") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("metrics"), dict):
        raise LightKDError(f"results file {path.name} is damaged: it holds no metrics; re-run its chapter")
    if "sha256" in payload and payload["sha256"] != _contents_digest(payload):
        raise LightKDError(f"results file {path.name} is damaged: its contents do not match the checksum written "
                           "with them; re-run its chapter (or recipe) to write it again")
    return payload


def load(chapter: str) -> dict:
    if not isinstance(chapter, str) or not chapter or "/" in chapter:
        raise LightKDError(f"chapter must be a name like '01_teacher', got {chapter!r}")
    path = results_dir() / f"{chapter}.json"
    if not path.exists():
        raise LightKDError(f"no results for chapter {chapter!r}; run notebooks/{chapter}.ipynb first")
    return read_results_file(path)


def _fmt(value, unit):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit == "percent":  # already in percent
        return f"{value:.1f}%"
    if unit == "x":  # times faster or smaller
        return f"{value:.2f}x"
    if unit == "ratio":  # one quantity over another, e.g. student / teacher parameters
        return f"{value:.2f}"
    if unit == "points":
        return f"{value:+.2f}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "params":
        return f"{value / 1e6:.1f}M"
    if unit == "bytes":
        return f"{value / 1e6:.1f} MB"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def paper_table(source, names: list[str] | None = None, only_with_paper: bool = False,
                labels: dict[str, str] | None = None):
    """Measured beside paper as a DataFrame, from a Recorder or a chapter name.

    ``labels`` maps metric names to the row labels a reader sees (a name
    without a label shows as itself). Without ``names`` the table leaves out
    the ledger's ``claims.*`` and the scoreboard's ``models.*`` entries: each
    is shown, with its interval, where it belongs."""
    import pandas as pd
    if not isinstance(source, (Recorder, str)):
        raise LightKDError(f"source must be a Recorder or a chapter name, got {type(source).__name__}")
    if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise LightKDError(f"names must be a list of metric names, got {names!r}")
    metrics = source.metrics if isinstance(source, Recorder) else load(source)["metrics"]
    names = names or [n for n in metrics if n != "runtime_s" and not n.startswith(("claims.", "models."))]
    labels = labels or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) and v for v in labels.values()):
        raise LightKDError(f"labels must map metric names to non-empty strings, got {labels!r}")
    unknown = [k for k in labels if k not in names]
    if unknown:
        raise LightKDError(f"labels: {', '.join(map(repr, unknown))} not among the table's metrics")
    rows = []
    for n in names:
        if n not in metrics:
            raise LightKDError(f"names: no metric {n!r}; recorded: {', '.join(metrics) or 'nothing yet'}")
        m = metrics[n]
        if only_with_paper and "paper" not in m:
            continue
        rows.append({"metric": labels.get(n, n), "measured": _fmt(m["value"], m.get("unit", "")),
                     "paper": _fmt(m.get("paper"), m.get("unit", "")), "source": m.get("source", ""),
                     "note": m.get("note", "")})
    return _full_text(pd.DataFrame(rows).set_index("metric"), index=True)


# --------------------------------------------------------------- the ledger
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
DIRECTIONS = ("above", "below")
VERDICT_RULE = ("A claim reads \"the effect is above (or below) a threshold\". It is *reproduced* when the whole 95% "
                "interval of the measured effect lies on the claimed side of the threshold, *not reproduced* when "
                "the whole interval lies on the other side, and *inconclusive* when the interval contains the "
                "threshold.")


CLAIM_FIELDS = ("verdict", "claim", "effect", "ci_low", "ci_high", "threshold", "direction")  # every claim has them


def _check_key(key: str, what: str) -> None:
    if not isinstance(key, str) or not key or key != key.lower() or " " in key or "." in key:
        raise LightKDError(f"{what} must be lower case without spaces or dots, got {key!r}")


def _finite(what: str, value) -> float:
    """A finite real number (numpy and torch scalars too)."""
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise LightKDError(f"{what} must be one finite number, got an array") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LightKDError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _require_json(what: str, value) -> None:
    """A value a results file can hold: numbers (finite), text, True / False, None and lists or
    dicts of them; anything else would fail only when the file is saved, long after."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise LightKDError(f"{what} must be a finite number, text, True/False or a list of them (a results file "
                           f"is JSON), got {value!r:.200}") from None


def _interval(ci, what: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in ci)
    except (TypeError, ValueError):
        raise LightKDError(f"{what} must be a (low, high) pair of numbers, got {ci!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise LightKDError(f"{what} must be finite with low <= high, got {ci!r}")
    return low, high


def verdict(effect, ci=None, *, threshold: float = 0.0, direction: str = "above") -> str:
    """The book's one rule (``VERDICT_RULE``): where the 95% interval lies
    relative to the threshold. Without an interval the effect itself decides."""
    if direction not in DIRECTIONS:
        raise LightKDError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    effect, threshold = _finite("effect", effect), _finite("threshold", threshold)
    low, high = (effect, effect) if ci is None else _interval(ci, "ci")
    slack = 1e-9  # relative: an interval computed in float may miss its own mean by a rounding
    if not low - slack * max(1.0, abs(low)) <= effect <= high + slack * max(1.0, abs(high)):
        raise LightKDError(f"the effect {effect!r} lies outside its own interval ci [{low!r}, {high!r}]; give the "
                           "interval of the same statistic (a median's for a median)")
    if direction == "below":  # "effect below t" is "-effect above -t"
        low, high, threshold = -high, -low, -threshold
    if low > threshold:
        return "reproduced"
    if high < threshold or (ci is None and high <= threshold):
        return "not reproduced"
    return "inconclusive"


def _numbers(what: str, values) -> np.ndarray:
    """``values`` as a float array; a clear error for text, ragged lists or other things that are not numbers."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise LightKDError(f"{what} must be numbers (a list or an array), got {values!r:.200}") from None


def _t_critical(n: int, level: float) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): a t interval for the mean of a few runs (e.g. seeds)."""
    x = _numbers("values", values)
    if x.ndim != 1 or len(x) < 2 or not np.isfinite(x).all():
        raise LightKDError(f"need at least two finite values for an interval, got {values!r}")
    require_number("level", level, low=0, high=1, low_open=True, high_open=True)
    mean, half = float(x.mean()), _t_critical(len(x), level) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def median_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): a distribution-free interval for the median, from
    order statistics (the number of values below the median is binomial with
    p = 1/2). For per-round latency ratios: a burst of load in one round moves
    the mean and the t interval, not the median."""
    x = _numbers("values", values)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise LightKDError(f"values must be finite numbers, got {values!r}")
    require_number("level", level, low=0, high=1, low_open=True, high_open=True)
    x = np.sort(x)
    n, tail = len(x), (1 - level) / 2
    below = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    k = 0  # the interval [x_(k+1), x_(n-k)] misses the median with probability 2 P(B <= k)
    while k + 1 < n - k and sum(below[:k + 1]) <= tail:
        k += 1
    if n < 2 or sum(below[:k]) > tail or k == 0:
        raise LightKDError(f"need more values for a {level:.0%} interval of the median, got {n}")
    return float(np.median(x)), float(x[k - 1]), float(x[n - k])


def paired_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """(mean difference, low, high) of ``a - b`` over paired runs (the same
    seeds for both arms): a t interval on the per-seed differences."""
    a, b = _numbers("a", a), _numbers("b", b)
    if a.shape != b.shape:
        raise LightKDError(f"paired runs need the same number of values on both sides, got {a.shape} and {b.shape}")
    return mean_interval(a - b, level)


def bootstrap_interval(correct_a, correct_b=None, *, resamples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high) of accuracy A minus accuracy B on the same test
    examples, with a paired bootstrap over the examples (percentile interval).
    Without ``correct_b``: accuracy A's interval.

    ``correct_*`` are 0/1 per example, or (runs, examples) for several seeds.
    With several runs each resample also draws the runs (the same run indices
    for both arms when they have as many runs: paired seeds), so the interval
    holds the seed-to-seed spread as well as the test set's. Averaging the
    seeds first and resampling examples alone would hide the spread between
    training runs, which on a small budget is often the larger of the two."""
    a = _numbers("correct_a", correct_a)
    b = np.zeros_like(a) if correct_b is None else _numbers("correct_b", correct_b)
    for name, x in (("correct_a", a), ("correct_b", b)):
        # per-example scores: 0/1 correctness, or a share of it (a mean over seeds, 0.97 of a reference)
        if not (np.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()):
            raise LightKDError(f"{name} must be per-example scores in [0, 1] (1 = correct), finite; got values "
                               f"from {np.nanmin(x) if x.size else 'none'} to {np.nanmax(x) if x.size else 'none'}")
    require_number("level", level, low=0, high=1, low_open=True, high_open=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LightKDError(f"seed must be an integer, got {seed!r}")
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise LightKDError("per-example scores must be 1-D (examples) or 2-D (runs, examples)")
    a, b = (a if a.ndim == 2 else a[None]), (b if b.ndim == 2 else b[None])
    if a.shape[1] != b.shape[1]:
        raise LightKDError(f"both arms must be scored on the same examples, got {a.shape[1]} and {b.shape[1]}")
    n = a.shape[1]
    if n < 2:
        raise LightKDError("need per-example scores of at least two examples")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise LightKDError(f"resamples must be an integer >= 100, got {resamples!r}")
    rng = np.random.default_rng(seed)
    examples = rng.integers(0, n, size=(resamples, n))
    diff = a.mean(0) - b.mean(0)
    if len(a) == 1 and len(b) == 1:
        stats = diff[examples].mean(1)
    else:
        runs_a = rng.integers(0, len(a), size=(resamples, len(a)))
        runs_b = runs_a if len(b) == len(a) else rng.integers(0, len(b), size=(resamples, len(b)))
        stats = np.array([(a[ra].mean(0) - b[rb].mean(0))[ex].mean() for ra, rb, ex in zip(runs_a, runs_b, examples)])
    tail = (1 - level) / 2 * 100
    return float(diff.mean()), float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


def ledger(source):
    """The claim ledger as a DataFrame (claim, source, effect, 95% interval,
    threshold, verdict), from a Recorder, a chapter name or a results dict."""
    import pandas as pd
    if isinstance(source, Recorder):
        metrics = source.metrics
    elif isinstance(source, dict):
        if not isinstance(source.get("metrics"), dict):
            raise LightKDError("source must be a Recorder, a chapter name, or a results dict with 'metrics'")
        metrics = source["metrics"]
    elif isinstance(source, str):
        metrics = load(source)["metrics"]
    else:
        raise LightKDError(f"source must be a Recorder, a chapter name or a results dict, got {type(source).__name__}")
    ids = list(dict.fromkeys(k.split(".")[1] for k in metrics if k.startswith("claims.") and k.endswith(".verdict")))
    rows = []
    for cid in ids:
        missing = [f for f in CLAIM_FIELDS if f"claims.{cid}.{f}" not in metrics]
        if missing:
            raise LightKDError(f"claim {cid!r} is incomplete in these results (no {missing[0]}); re-run the chapter "
                               "to record it whole")
        m = lambda f: metrics[f"claims.{cid}.{f}"]
        unit = m("effect").get("unit", "")
        side = ">" if m("direction")["value"] == "above" else "<"
        why = metrics.get(f"claims.{cid}.untestable", {}).get("value")
        changes = metrics.get(f"claims.{cid}.history", {}).get("value") or []
        changed = "".join(f" (declaration changed {c['date']}: {c['field']} {c['old']} -> {c['new']}; {c['why']})"
                          for c in changes)
        rows.append({"claim": m("claim")["value"] + (f" (cannot be tested here: {why})" if why else "") + changed,
                     "source": m("verdict").get("source", ""),
                     "measured": _fmt(m("effect")["value"], unit) + (" points" if unit == "points" else ""),
                     "95% interval": f"[{_fmt(m('ci_low')['value'], unit)}, {_fmt(m('ci_high')['value'], unit)}]",
                     "holds if": f"{side} {_fmt(m('threshold')['value'], unit)}",
                     "verdict": m("verdict")["value"],
                     "why": metrics.get(f"claims.{cid}.reason", {}).get("value", "")})
    columns = ["claim", "source", "measured", "95% interval", "holds if", "verdict", "why"]
    table = pd.DataFrame(rows, columns=columns)
    if not table["why"].astype(bool).any():  # chapters judged before reasons were recorded
        table = table.drop(columns="why")
    return _full_text(table)


_FULL_TEXT_CLASSES = {}


def _full_text(table, index: bool = False):
    """``table``, shown in a notebook with every cell's whole text: pandas cuts strings at 50
    characters in its HTML, and a claim the reader cannot finish is no ledger. Without ``index``
    the row numbers are left out (a ledger's claim names its row); with it the row labels are
    shown without a header row of their own. (The subclasses are built once, on first use:
    lightkd imports pandas only where it needs it.)"""
    if index not in _FULL_TEXT_CLASSES:
        import pandas as pd

        class FullText(pd.DataFrame):
            @property
            def _constructor(self):
                return FullText

            def _repr_html_(self):
                with pd.option_context("display.max_colwidth", None):
                    return self.to_html(index=index, index_names=False)

        _FULL_TEXT_CLASSES[index] = FullText
    return _FULL_TEXT_CLASSES[index](table)


# ------------------------------------------------------------ the scoreboard
def load_all() -> dict:
    """Every chapter's results file, by chapter name, in reading order."""
    out = {}
    for path in sorted(results_dir().glob("[0-9][0-9]_*.json")):
        out[path.stem] = read_results_file(path)
    return out


def _grouped(metrics: dict, prefix: str) -> dict:
    """{"name": {"field": entry}} for every metric ``<prefix>.<name>.<field>``."""
    groups: dict = {}
    for key, entry in metrics.items():
        if key.startswith(prefix + "."):
            name, _, field = key[len(prefix) + 1:].rpartition(".")
            if name:
                groups.setdefault(name, {})[field] = entry
    return groups


def models_frame(chapters: dict | None = None):
    """One row per model any chapter recorded (``models.<name>.*``): the
    scoreboard's table, in the same columns for every chapter."""
    import pandas as pd
    chapters = load_all() if chapters is None else chapters
    rows = []
    for chapter, payload in chapters.items():
        for name, fields in _grouped(payload["metrics"], "models").items():
            value = lambda f: fields[f]["value"] if f in fields else None
            rows.append({"chapter": chapter, "model": name, "method": value("method") or name,
                         "accuracy": value("accuracy"), "accuracy_ci_low": value("accuracy_ci_low"),
                         "accuracy_ci_high": value("accuracy_ci_high"), "params": value("params"),
                         "unique_params": value("unique_params"), "size_bytes": value("size_bytes"),
                         "latency_ms": value("latency_ms"), "speedup": value("speedup")})
    columns = ["chapter", "model", "method", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "params",
               "unique_params", "size_bytes", "latency_ms", "speedup"]
    return pd.DataFrame(rows, columns=columns)


def claims_frame(chapters: dict | None = None):
    """The book's whole claim ledger: every chapter's claims, one row each."""
    import pandas as pd
    chapters = load_all() if chapters is None else chapters
    frames = []
    for chapter, payload in chapters.items():
        table = ledger(payload)
        if len(table):
            frames.append(table.assign(chapter=chapter))
    if not frames:
        return pd.DataFrame(columns=["chapter", "claim", "source", "measured", "95% interval", "holds if", "verdict"])
    table = pd.concat(frames, ignore_index=True).fillna("")  # a chapter judged before reasons existed has no "why"
    return table[["chapter"] + [c for c in table.columns if c != "chapter"]]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and
    accuracy (higher), sorted by cost."""
    try:
        points = [(float(c), float(a)) for c, a in points]
    except (TypeError, ValueError):
        raise LightKDError(f"points must be (cost, accuracy) pairs of numbers, got {points!r:.200}") from None
    if not all(math.isfinite(c) and math.isfinite(a) for c, a in points):
        raise LightKDError("points must hold finite (cost, accuracy) pairs")
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
