"""An experiment as data: arms x seeds -> per-example correctness -> paired
intervals -> declared claims -> verdicts with reasons.

    claim = Claim("kd_beats_labels", statement="...", quote="...", source="Hinton et al. 2015, Table 5",
                  effect="KD minus labels only, test accuracy", threshold=0.0, declared="2026-12-07")
    st = Study(n_examples=len(test))
    st.add("kd", seed, correct)                  # one 0/1 row per trained model
    est = st.difference("kd", "labels_only")     # an Estimate in points, seeds and examples both counted
    judge(rec, claim, est, converged=True)       # verdict, reason, minimum detectable effect, in the ledger

Why not the paired bootstrap over examples and seeds: with two or three seeds
and a seed-to-seed spread larger than the test set's noise, resampling three
values with replacement underestimates their spread, and its 95% interval
covers the truth only 82-89% of the time. ``Study`` estimates the two
sources of variance separately (a two-way random-effects decomposition of
the per-example differences: seeds x examples) and uses a t interval with
Satterthwaite's degrees of freedom, so three seeds give the wide interval
three seeds deserve. ``tests/test_study.py`` checks its coverage by simulation.

Claims are data, declared in a chapter's recipe before anything runs. A
declaration that changes after results exist keeps the change in its
``history`` (date, field, old, new, why); ``judge`` refuses, at book scale,
a declaration that differs from the published results without one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .common import LightKDError, require_number
from .scales import current as current_scale

REASONS = ("method", "budget", "scale", "hardware", "resolution")
REASON_TEXT = {
    "method": "trained to convergence and still short: the method, as run here, does not reach the claim",
    "budget": "stopped before convergence: a longer run could change the verdict",
    "scale": "the claim is about a regime this book does not reach",
    "hardware": "this CPU lacks the instructions the claim relies on",
    "resolution": "the interval contains the threshold: the test cannot tell at this size",
}
DECLARED_FIELDS = ("statement", "threshold", "direction", "unit", "effect")


# ------------------------------------------------------------------ claims
@dataclass(frozen=True)
class Change:
    """One change to a declared claim after results existed."""
    date: str
    field: str
    old: object
    new: object
    why: str


@dataclass(frozen=True)
class Claim:
    """A paper's claim as the book tests it, declared before the run.

    ``statement`` says it in the book's words, ``quote`` gives the paper's own
    words, ``source`` where they stand. ``effect`` names what is measured and
    ``threshold`` / ``direction`` what the claim needs of it ("effect above
    0"). ``otherwise``: a reason known before the run that explains a verdict
    other than "reproduced" (``"hardware"``, ``"scale"``)."""
    id: str
    statement: str
    quote: str
    source: str
    effect: str
    threshold: float
    direction: str = "above"
    unit: str = "points"
    paper: float | None = None
    declared: str = ""
    otherwise: str | None = None
    history: tuple = ()

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id or self.id != self.id.lower() or " " in self.id or "." in self.id:
            raise LightKDError(f"claim id must be lower case without spaces or dots, got {self.id!r}")
        for name in ("statement", "quote", "source", "effect"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise LightKDError(f"claim {self.id!r}: {name} must be a non-empty string")
        require_number(f"claim {self.id!r}: threshold", self.threshold)
        if self.direction not in ("above", "below"):
            raise LightKDError(f"claim {self.id!r}: direction must be 'above' or 'below', got {self.direction!r}")
        if self.otherwise is not None and self.otherwise not in REASONS:
            raise LightKDError(f"claim {self.id!r}: otherwise must be one of {REASONS}, got {self.otherwise!r}")
        for change in self.history:
            if not isinstance(change, Change) or change.field not in DECLARED_FIELDS or not change.why.strip():
                raise LightKDError(f"claim {self.id!r}: history holds Change(date, field, old, new, why) entries "
                                   f"with field one of {DECLARED_FIELDS} and a reason, got {change!r}")

    def declaration(self) -> dict:
        return {"statement": self.statement, "threshold": float(self.threshold), "direction": self.direction,
                "unit": self.unit, "effect": self.effect}


@dataclass(frozen=True)
class Metric:
    """A number a chapter reports, declared once: its unit, the paper's figure
    for it and where that stands. A recipe records every metric through its
    declaration (``record``), so the notebook, the command line and the
    scoreboard read one definition (no "teacher / student" here and
    "student / teacher" there)."""
    name: str
    unit: str
    paper: float | None = None
    source: str | None = None
    note: str | None = None
    higher_is_better: bool = True

    def __post_init__(self):
        from .results import UNITS
        if not isinstance(self.name, str) or not self.name or self.name != self.name.lower() or " " in self.name:
            raise LightKDError(f"metric names are dotted lower case without spaces, got {self.name!r}")
        if self.unit not in UNITS:
            raise LightKDError(f"metric {self.name!r}: unknown unit {self.unit!r}; use one of {UNITS}")


def record(rec, metric: Metric, value, note: str | None = None):
    """Record ``value`` under ``metric``'s declaration; returns the value."""
    return rec.record(metric.name, value, unit=metric.unit, paper=metric.paper, source=metric.source,
                      note=note or metric.note)


# ---------------------------------------------------------------- estimates
@dataclass(frozen=True)
class Estimate:
    """An effect with its 95% interval, standard error and degrees of freedom."""
    effect: float
    low: float
    high: float
    se: float
    df: float
    level: float = 0.95

    @property
    def mde(self) -> float:
        """The minimum detectable effect: the smallest true effect (away from the
        threshold) this design finds with 80% power at the 5% level."""
        return minimum_detectable(self.se, self.df)

    def scaled(self, factor: float) -> "Estimate":
        lo, hi = sorted((self.low * factor, self.high * factor))
        return Estimate(self.effect * factor, lo, hi, self.se * abs(factor), self.df, self.level)


def _t(q: float, df: float) -> float:
    from scipy import stats
    return float(stats.t.ppf(q, df)) if math.isfinite(df) else float(stats.norm.ppf(q))


def minimum_detectable(se: float, df: float = math.inf, power: float = 0.8, level: float = 0.95) -> float:
    """(t_{1-a/2} + t_{power}) * se: the effect a two-sided test at ``level``
    detects with probability ``power``."""
    return (_t(0.5 + level / 2, df) + _t(power, df)) * se


def mde_of_interval(low: float, high: float, level: float = 0.95) -> float:
    """The minimum detectable effect implied by a (normal-like) interval: its
    half-width is z * se, so mde = (z + z_0.8) / z * half-width."""
    half = (high - low) / 2
    return minimum_detectable(half / _t(0.5 + level / 2, math.inf))


def seeded_interval(scores_a, scores_b, level: float = 0.95) -> Estimate:
    """Mean of ``a - b`` over paired seeds and shared test examples, with a t
    interval whose variance counts both the seeds and the examples.

    ``scores_*``: per-example scores (0/1 correctness), shaped (seeds,
    examples) or (examples,); a 1-D side is a fixed reference (the teacher,
    or 0.97 of it) shared by every seed. Two-way random effects: with
    d[s, i] = a[s, i] - b[s, i], the mean's variance is
    (MS_seeds + MS_examples - MS_residual) / (S N), and Satterthwaite's
    formula gives its degrees of freedom. One seed: examples only."""
    a, b = (np.asarray(x, dtype=float) for x in (scores_a, scores_b))
    a, b = (a if a.ndim == 2 else a[None]), (b if b.ndim == 2 else b[None])
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise LightKDError(f"both sides must be scored on the same examples: shapes {a.shape} and {b.shape}")
    if len(b) not in (1, len(a)):
        raise LightKDError(f"paired seeds need as many runs on both sides (or one fixed reference), got {len(a)} "
                           f"and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise LightKDError("per-example scores must be finite (0/1 correctness)")
    if not 0 < level < 1:
        raise LightKDError(f"level must be in (0, 1), got {level!r}")
    d = a - b
    seeds, n = d.shape
    if n < 2:
        raise LightKDError("need per-example scores of at least two examples")
    mean = float(d.mean())
    per_example = d.mean(0)
    if seeds == 1:
        var, df = float(per_example.var(ddof=1)) / n, n - 1.0
    else:
        per_seed = d.mean(1)
        ms_seed = n * float(per_seed.var(ddof=1))
        ms_example = seeds * float(per_example.var(ddof=1))
        resid = d - per_seed[:, None] - per_example[None, :] + mean
        ms_resid = float((resid ** 2).sum()) / ((seeds - 1) * (n - 1))
        total = max(ms_seed + ms_example - ms_resid, ms_resid, 0.0)
        var = total / (seeds * n)
        denom = ms_seed ** 2 / (seeds - 1) + ms_example ** 2 / (n - 1) + ms_resid ** 2 / ((seeds - 1) * (n - 1))
        df = total ** 2 / denom if denom > 0 else math.inf
        df = max(df, 1.0)
    se = math.sqrt(var)
    half = _t(0.5 + level / 2, df) * se
    return Estimate(mean, mean - half, mean + half, se, df, level)


class Study:
    """Per-example correctness of every trained model of a comparison, by arm
    and seed, on one test split; estimates in points (100 x accuracy)."""

    def __init__(self, n_examples: int):
        if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 2:
            raise LightKDError(f"n_examples must be an integer >= 2, got {n_examples!r}")
        self.n = n_examples
        self.runs: dict = {}  # arm -> {seed: 0/1 array}

    def add(self, arm: str, seed: int, correct) -> None:
        row = np.asarray(correct, dtype=float).reshape(-1)
        if row.shape != (self.n,) or not np.isin(row, (0.0, 1.0)).all():
            raise LightKDError(f"{arm!r} seed {seed}: correct must be {self.n} zeros and ones, got shape {row.shape}")
        self.runs.setdefault(arm, {})[seed] = row

    @property
    def arms(self) -> list[str]:
        return list(self.runs)

    def seeds(self, arm: str) -> list[int]:
        if arm not in self.runs:
            raise LightKDError(f"no arm {arm!r}; the study has {', '.join(self.runs) or 'none yet'}")
        return sorted(self.runs[arm])

    def scores(self, arm: str) -> np.ndarray:
        """(seeds, examples), rows in seed order."""
        return np.stack([self.runs[arm][s] for s in self.seeds(arm)])

    def accuracies(self, arm: str) -> list[float]:
        return [float(v) for v in self.scores(arm).mean(1)]

    def accuracy(self, arm: str) -> Estimate:
        """The arm's mean accuracy (a fraction) with its interval."""
        return seeded_interval(self.scores(arm), np.zeros(self.n))

    def difference(self, a: str, b) -> Estimate:
        """Arm ``a`` minus arm ``b`` (paired on their common seeds), or minus a
        fixed per-example reference (an array), in points."""
        if isinstance(b, str):
            common = sorted(set(self.seeds(a)) & set(self.seeds(b)))
            if not common:
                raise LightKDError(f"arms {a!r} and {b!r} share no seed, so they cannot be paired")
            sa = np.stack([self.runs[a][s] for s in common])
            sb = np.stack([self.runs[b][s] for s in common])
        else:
            sa, sb = self.scores(a), np.asarray(b, dtype=float)
        return seeded_interval(sa, sb).scaled(100.0)

    def retention_gap(self, arm: str, reference, share: float) -> Estimate:
        """Arm minus ``share`` of a reference model's per-example scores, in
        points: above 0 when the arm keeps more than ``share`` of its accuracy."""
        require_number("share", share, low=0, high=1, low_open=True)
        return self.difference(arm, share * np.asarray(reference, dtype=float))


# -------------------------------------------------------------------- judging
def reason_for(verdict: str, claim: Claim, converged: bool) -> str | None:
    """Why a verdict is not "reproduced": a reason declared with the claim, else
    ``budget`` when a model was stopped before it converged, else
    ``resolution`` (inconclusive) or ``method`` (not reproduced)."""
    if verdict == "reproduced":
        return None
    if claim.otherwise:
        return claim.otherwise
    if not converged:
        return "budget"
    return "resolution" if verdict == "inconclusive" else "method"


def check_declaration(claim: Claim, published: dict | None) -> None:
    """Refuse a declaration that differs from the published results without a
    history entry for the change (``published``: a results file's metrics)."""
    if not published or f"claims.{claim.id}.verdict" not in published:
        return
    old = {"statement": published.get(f"claims.{claim.id}.claim", {}).get("value"),
           "threshold": published.get(f"claims.{claim.id}.threshold", {}).get("value"),
           "direction": published.get(f"claims.{claim.id}.direction", {}).get("value"),
           "unit": published.get(f"claims.{claim.id}.effect", {}).get("unit"),
           "effect": published.get(f"claims.{claim.id}.measure", {}).get("value")}
    new = claim.declaration()
    for name, value in new.items():
        if old[name] is None or old[name] == value:
            continue
        if not any(c.field == name and c.new == value for c in claim.history):
            raise LightKDError(
                f"claim {claim.id!r}: its {name} was {old[name]!r} when the published results were made and is "
                f"{value!r} now. A declaration changed after results existed keeps the change in its history: "
                f"add Change(date, {name!r}, old={old[name]!r}, new={value!r}, why=...) to the claim.")


def judge(rec, claim: Claim, estimate, *, converged: bool = True, published: dict | None = None,
          note: str | None = None) -> str:
    """Record ``claim``'s line of the ledger in ``rec`` and return its verdict.

    ``estimate``: an ``Estimate``, or (effect, low, high) from another interval
    (a median's order statistics), or a bare number for an exact quantity.
    ``converged``: whether every model the effect rests on stopped because dev
    accuracy stopped improving. At book scale ``published`` (the published
    results' metrics; read from results/ when not given) is checked against
    the declaration."""
    if isinstance(estimate, Estimate):
        effect, ci, mde = estimate.effect, (estimate.low, estimate.high), estimate.mde
    elif isinstance(estimate, (tuple, list)) and len(estimate) == 3:
        effect, ci = float(estimate[0]), (float(estimate[1]), float(estimate[2]))
        mde = mde_of_interval(*ci)
    else:
        effect, ci, mde = float(estimate), None, 0.0
    if current_scale() == "book":
        if published is None:
            from .results import load
            try:
                published = load(rec.chapter)["metrics"]
            except LightKDError:
                published = None
        check_declaration(claim, published)
    from .results import verdict as rule
    verdict = rule(effect, ci, threshold=claim.threshold, direction=claim.direction)
    reason = reason_for(verdict, claim, converged)
    return rec.claim(claim.id, effect, ci, threshold=claim.threshold, direction=claim.direction,
                     claim=claim.statement, source=claim.source, unit=claim.unit, paper=claim.paper, note=note,
                     reason=reason, mde=mde, quote=claim.quote, measure=claim.effect, declared=claim.declared,
                     history=[vars(c) for c in claim.history])
