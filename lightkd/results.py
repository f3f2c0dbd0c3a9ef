"""Record what a chapter measured and set it beside what the paper claims.

    rec = Recorder("02_quantization")
    rec.record("int8_dynamic.accuracy", acc, unit="fraction", paper=0.9224,
               source="Q8BERT, SST-2 dev", note="MiniLM-L6 teacher on movie reviews")
    rec.save()                      # results/02_quantization.json
    paper_table(rec)                # a DataFrame: measured beside paper

Values are always what this run measured; the paper column comes from
shared anchors the chapter cites. ``runtime_s`` is the time since the
Recorder was made (the chapter's first cell).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from .common import LightKDError, atomic_write_bytes

UNITS = ("fraction", "ratio", "ms", "s", "bytes", "MB", "params", "count", "flops", "x", "points", "")


def results_dir() -> Path:
    """``$LIGHTKD_RESULTS`` or the ``results/`` folder of the book this runs in."""
    if os.environ.get("LIGHTKD_RESULTS"):
        path = Path(os.environ["LIGHTKD_RESULTS"])
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
    import transformers
    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "python": platform.python_version(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


class Recorder:
    def __init__(self, chapter: str):
        if not chapter or "/" in chapter:
            raise LightKDError(f"chapter must be a name like '01_teacher', got {chapter!r}")
        self.chapter, self.start, self.metrics = chapter, time.perf_counter(), {}

    def record(self, name: str, value, unit: str = "", paper=None, source: str | None = None,
               note: str | None = None):
        if name != name.lower() or " " in name:
            raise LightKDError(f"metric names are dotted lower case without spaces, got {name!r}")
        if unit not in UNITS:
            raise LightKDError(f"unknown unit {unit!r}; use one of {UNITS}")
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            raise LightKDError(f"{name}: value is {value}; a measurement must be finite")
        entry = {"value": value, "unit": unit}
        for key, v in (("paper", paper), ("source", source), ("note", note)):
            if v is not None:
                entry[key] = v
        self.metrics[name] = entry
        return value

    def __getitem__(self, name):
        return self.metrics[name]["value"]

    @property
    def path(self) -> Path:
        return results_dir() / f"{self.chapter}.json"

    def save(self) -> Path:
        self.metrics["runtime_s"] = {"value": round(time.perf_counter() - self.start, 1), "unit": "s"}
        payload = {"chapter": self.chapter, "environment": environment(),
                   "runtime_s": self.metrics["runtime_s"]["value"], "metrics": self.metrics}
        atomic_write_bytes(self.path, (json.dumps(payload, indent=1) + "\n").encode())
        return self.path


def load(chapter: str) -> dict:
    path = results_dir() / f"{chapter}.json"
    if not path.exists():
        raise LightKDError(f"no results for {chapter!r} at {path}; run notebooks/{chapter}.ipynb first")
    return json.loads(path.read_text())


def _fmt(value, unit):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit in ("x", "ratio"):
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "params":
        return f"{value / 1e6:.1f}M"
    if unit == "bytes":
        return f"{value / 1e6:.1f} MB"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def paper_table(source, names: list[str] | None = None, only_with_paper: bool = False):
    """Measured beside paper as a DataFrame, from a Recorder or a chapter name."""
    import pandas as pd
    metrics = source.metrics if isinstance(source, Recorder) else load(source)["metrics"]
    names = names or [n for n in metrics if n != "runtime_s"]
    rows = []
    for n in names:
        if n not in metrics:
            raise LightKDError(f"no metric {n!r}; recorded: {', '.join(metrics)}")
        m = metrics[n]
        if only_with_paper and "paper" not in m:
            continue
        rows.append({"metric": n, "measured": _fmt(m["value"], m.get("unit", "")),
                     "paper": _fmt(m.get("paper"), m.get("unit", "")), "source": m.get("source", ""),
                     "note": m.get("note", "")})
    return pd.DataFrame(rows).set_index("metric")
