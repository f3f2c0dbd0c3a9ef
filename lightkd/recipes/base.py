"""What every recipe is: a name, its paper-scale defaults, a tiny smoke
configuration, and a ``run(config, out)`` that trains through ``train.fit``
(so it runs on one CPU, one GPU, or several processes under
``accelerate launch`` / ``torchrun``) and writes a results file in the
chapters' schema (``lightkd.results.Recorder``) under ``out``.

Call a recipe as ``RECIPES[name](tiny=True, out="somewhere", lr=1e-4)``: the
overrides are checked against its options, and when several processes run it,
rank 0 alone writes into ``out`` (every other rank gets a scratch folder that
is deleted afterwards, so a recipe never has to ask which rank it is)."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..common import LightKDError


@dataclass(frozen=True)
class Recipe:
    name: str                      # the command-line name, e.g. "distilbert"
    chapter: str                   # e.g. "04_distillation"
    help: str                      # one line for --help
    paper: dict                    # paper-scale defaults (hub models, GLUE through datasets, full budget)
    tiny: dict                     # smoke configuration: tiny random models, offline data, a few steps
    run: Callable[[dict, Path], dict]   # run(config, out) -> the recorded results (also saved under out)
    notes: str = ""                # what the paper-scale run needs (GPU hours, hub access)

    def config(self, tiny: bool = False, **overrides) -> dict:
        """The paper's (or the tiny) options with ``overrides``; an unknown option
        or a value of the wrong kind is a ``LightKDError`` that names the options.
        A None override sets the option to None (its "all" / "by epochs" meaning)."""
        base = dict(self.tiny if tiny else self.paper)
        unknown = set(overrides) - set(base)
        if unknown:
            raise LightKDError(f"recipe {self.name!r} has no option {sorted(unknown)[0]!r}; "
                               f"it takes {', '.join(sorted(base))}")
        for key, value in overrides.items():
            if value is not None:
                _check_kind(self.name, key, value, (self.paper.get(key), self.tiny.get(key)))
        base.update(overrides)  # None too: "max_steps=null" means "by epochs", "train_size=null" "all of it"
        return base

    def __call__(self, *, tiny: bool = False, out: str | Path = "recipe-results", **overrides) -> dict:
        """Run with the checked options; returns what ``out/<name>.json`` holds."""
        config = self.config(tiny, **overrides)
        if is_main_process():
            return self._run(config, Path(out))
        with tempfile.TemporaryDirectory(prefix=f"lightkd-{self.name}-") as scratch:
            return self._run(config, Path(scratch))

    def _run(self, config: dict, out: Path) -> dict:
        self.run(config, out)
        path = out / f"{self.name}.json"
        if not path.exists():
            raise LightKDError(f"recipe {self.name!r} wrote no {path.name}: its run must save a Recorder "
                               f"(Recorder(chapter, out=out, name={self.name!r}))")
        return json.loads(path.read_text())


def _check_kind(recipe: str, key: str, value, defaults) -> None:
    """A number where the defaults hold a number, text where they hold text, and
    so on (ints pass for floats; an option whose defaults are None takes anything)."""
    kinds = {type(d) for d in defaults if d is not None}
    if not kinds:
        return
    ok = any(isinstance(value, bool) if k is bool else
             (isinstance(value, (int, float)) and not isinstance(value, bool)) if k is float else
             (isinstance(value, int) and not isinstance(value, bool)) if k is int else
             isinstance(value, k) for k in kinds)
    if not ok:
        want = " or ".join(sorted(k.__name__ for k in kinds))
        raise LightKDError(f"recipe {recipe!r}: option {key!r} takes a {want}, got {value!r}")


def is_main_process() -> bool:
    """Rank 0 of a distributed run (``accelerate launch``, ``torchrun``), or the only process."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def saved(rec) -> dict:
    """Write a recipe's results file (its Recorder was made with ``out=`` and ``name=``) and
    return what it holds. Every process writes: ``Recipe.__call__`` gives the others a scratch folder."""
    return json.loads(rec.save().read_text())


def device():
    """The device this process trains on (``accelerate``'s choice: its GPU, or the CPU)."""
    from accelerate import PartialState
    return PartialState().device


def registry(*modules) -> dict[str, Recipe]:
    """Every recipe of the given modules (each has a ``RECIPES`` list), by name."""
    out: dict[str, Recipe] = {}
    for module in modules:
        for recipe in module.RECIPES:
            if recipe.name in out:
                raise LightKDError(f"two recipes are called {recipe.name!r}")
            out[recipe.name] = recipe
    return out
