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

import ast
import dataclasses
import hashlib
import inspect
import math
import os
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..common import LightKDError
from ..results import read_results_file, require_output_folder
from ..scales import SCALES


@dataclass(frozen=True)
class Recipe:
    name: str                      # the command-line name, e.g. "distilbert"
    chapter: str                   # e.g. "04_distillation"
    help: str                      # one line for --help
    # The options at each scale: a config dataclass for a chapter whose pipeline lives here (tiny,
    # book, paper), or a dict for a recipe whose chapter is not migrated yet (tiny, paper).
    paper: object = None           # the paper's model, data and budget (hub, GPUs)
    tiny: object = None            # seconds on a CPU: what the tests run
    book: object = None            # the book's published CPU run
    run: Callable[[object, Path], dict] = None   # run(config, out) -> the recorded results (also saved under out)
    notes: str = ""                # what the paper-scale run needs (GPU hours, hub access)

    def __post_init__(self):
        if self.run is not None:  # the stages' digests read the module as it runs now
            remember_source(self.run.__module__)

    @property
    def presets(self) -> dict:
        return {s: getattr(self, s) for s in SCALES if getattr(self, s) is not None}

    @property
    def scales(self) -> tuple:
        return tuple(s for s in SCALES if s in self.presets)

    def config(self, scale: str | None = None, *, tiny: bool | None = None, **overrides):
        """The options of ``scale`` (default ``paper``; ``tiny=True`` is ``scale="tiny"``)
        with ``overrides``; an unknown option or a value of the wrong kind is a
        ``LightKDError`` that names the options. A None override sets the option
        to None (its "all" / "by epochs" meaning)."""
        if scale is True or scale is False:  # the old spelling: config(tiny)
            scale, tiny = None, scale
        scale = scale or ("tiny" if tiny else "paper")
        if scale not in self.presets:
            raise LightKDError(f"recipe {self.name!r} runs at {', '.join(self.scales)} scale, not {scale!r}")
        preset = self.presets[scale]
        options = _options(preset)
        unknown = set(overrides) - set(options)
        if unknown:
            raise LightKDError(f"recipe {self.name!r} has no option {sorted(unknown)[0]!r}; "
                               f"it takes {', '.join(sorted(options))}")
        for key, value in overrides.items():
            if value is not None:
                defaults = [_options(p).get(key) for p in self.presets.values()]
                _check_kind(self.name, key, value, defaults)
                _check_range(self.name, key, value, defaults)
        if dataclasses.is_dataclass(preset):
            return dataclasses.replace(preset, **overrides)
        return {**options, **overrides}  # None too: "max_steps=null" means "by epochs", "train_size=null" "all of it"

    def __call__(self, *, scale: str | None = None, tiny: bool = False, out: str | Path = "recipe-results",
                 **overrides) -> dict:
        """Run with the checked options; returns what ``out/<name>.json`` holds."""
        config = self.config(scale, tiny=tiny, **overrides)
        require_output_folder(out)  # before any training: a file in the way would fail only at the end
        if is_main_process():
            return self._run(config, Path(out))
        with tempfile.TemporaryDirectory(prefix=f"lightkd-{self.name}-") as scratch:
            return self._run(config, Path(scratch))

    def _run(self, config: dict, out: Path) -> dict:
        out.mkdir(parents=True, exist_ok=True)  # some runs write there (ONNX files) before their results file
        self.run(config, out)
        path = out / f"{self.name}.json"
        if not path.exists():
            raise LightKDError(f"recipe {self.name!r} wrote no {path.name}: its run must save a Recorder "
                               f"(Recorder(chapter, out=out, name={self.name!r}))")
        return read_results_file(path)


def _options(preset) -> dict:
    return dataclasses.asdict(preset) if dataclasses.is_dataclass(preset) else dict(preset)


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


# Every number option is finite and >= 0 (seed excepted); these have a narrower range.
COUNTS = {"batch_size", "max_length", "max_steps", "epochs", "layers", "student_layers", "teacher_layers", "seeds",
          "heads", "dim", "depth", "patch_size", "repeats", "copies", "intermediate", "hidden", "groups",
          "embedding_size", "intra_ratio", "train_size", "eval_size", "dev_size", "test_size", "n_images",
          "n_questions", "corpus_size", "transfer_steps", "importance_batches", "evals_per_epoch", "min_eval_steps",
          "patience", "latency_rounds", "student_grid", "teacher_grid", "student_image_size", "teacher_image_size",
          "intermediate_epochs", "prediction_epochs", "transfer_epochs"}   # integers >= 1 (where the presets hold integers)
FRACTIONS = {"alpha", "sparsity", "head_fraction", "ffn_fraction", "recover_fraction", "warmup_ratio",
             "labelled_fraction", "rho"}                                      # shares, in [0, 1]
POSITIVE = {"lr", "transfer_lr", "prediction_lr", "temperature", "tau", "predictor_lr_scale", "max_epochs",
            "small_max_epochs", "mlp_ratio", "epochs"}                     # > 0
MODEL_OPTIONS = {"model", "teacher", "student", "bert", "backbone", "data"}  # a name, a hub id or a folder


def _check_range(recipe: str, key: str, value, defaults) -> None:
    """The option's value within its range, checked before anything trains (``--set train_size=-10``
    would otherwise train on all but the last ten sentences)."""
    def refuse(want: str):
        raise LightKDError(f"recipe {recipe!r}: option {key!r} must be {want}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            refuse("a finite number")
        integers = any(isinstance(d, int) and not isinstance(d, bool) for d in defaults)
        if key in COUNTS and integers and value < 1:
            refuse("an integer >= 1" + (" or null" if None in defaults else ""))
        if key in FRACTIONS and not 0 <= value <= 1:
            refuse("a share in [0, 1]")
        if key in POSITIVE and value <= 0:
            refuse("a number > 0")
        if key != "seed" and value < 0:
            refuse("a number >= 0")
    if key in MODEL_OPTIONS and isinstance(value, str) and _looks_like_a_path(value) and \
            not os.path.isdir(os.path.expanduser(value)):
        refuse("a name, a hub id (namespace/name) or an existing folder; there is no folder "
               f"{os.path.abspath(os.path.expanduser(value))}")


def _looks_like_a_path(value: str) -> bool:
    """A folder, not a hub id: a hub id is ``name`` or ``namespace/name``, never more."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value


def is_main_process() -> bool:
    """Rank 0 of a distributed run (``accelerate launch``, ``torchrun``), or the only process."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def saved(rec) -> dict:
    """Write a recipe's results file (its Recorder was made with ``out=`` and ``name=``) and
    return what it holds. Every process writes: ``Recipe.__call__`` gives the others a scratch folder."""
    return read_results_file(rec.save())


def device():
    """The device this process trains on (``accelerate``'s choice: its GPU, or the CPU).
    ``cpu=True`` where no GPU is wanted: the process state is a singleton, and one made
    without it on a CPU forms no process group, so ``accelerate launch`` on CPUs would
    leave every process training alone."""
    from accelerate import PartialState
    from ..train import _wants_gpu
    return PartialState(cpu=not _wants_gpu()).device


def registry(*modules) -> dict[str, Recipe]:
    """Every recipe of the given modules (each has a ``RECIPES`` list), by name."""
    out: dict[str, Recipe] = {}
    for module in modules:
        for recipe in module.RECIPES:
            if recipe.name in out:
                raise LightKDError(f"two recipes are called {recipe.name!r}")
            out[recipe.name] = recipe
    return out


# ------------------------------------------------------------ stages and their cache keys
# Each recipe module's source as it was imported (the code that runs), kept when its Recipe is
# made. A module edited on disk while a kernel or a run still holds the old one would otherwise
# give the digest of other lines, and a cache entry keyed on code it was not made by.
_IMPORTED_SOURCE: dict = {}


def remember_source(module_name: str) -> None:
    """Keep ``module_name``'s source as it is now, for the digests of its stages."""
    module = sys.modules[module_name]
    if getattr(module, "__file__", None):  # (again on a reload: the module runs its new code)
        _IMPORTED_SOURCE[module_name] = Path(module.__file__).read_text().splitlines(keepends=True)


def _source_that_runs(fn) -> str:
    """``fn``'s source in its module as imported (read from its file for a module
    that made no Recipe)."""
    lines = _IMPORTED_SOURCE.get(fn.__module__)
    if lines is None:
        return textwrap.dedent(inspect.getsource(fn))
    return textwrap.dedent("".join(inspect.getblock(lines[fn.__code__.co_firstlineno - 1:])))


def _same_module_sources(fn, seen=None) -> list:
    """``fn``'s source and, recursively, the sources of the functions and the
    repr of the plain constants of its own module that it names."""
    seen = {} if seen is None else seen
    if fn in seen:
        return []
    module = sys.modules[fn.__module__]
    source = _source_that_runs(fn)
    seen[fn] = source
    out = [source]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id != fn.__name__:
            value = getattr(module, node.id, None)
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                out += _same_module_sources(value, seen)
            elif isinstance(value, (int, float, str, tuple, frozenset, dict)) and not isinstance(value, bool):
                if ("const", node.id) not in seen:
                    seen[("const", node.id)] = True
                    out.append(f"{node.id} = {value!r}")
    return out


def code_digest(fn) -> str:
    """A hash of what a stage runs: its own source and that of the functions and
    constants of its module it uses (a change to any of them changes the digest;
    a change elsewhere in the module, or to prose, does not)."""
    return hashlib.sha256("\n".join(_same_module_sources(fn)).encode()).hexdigest()[:16]


def config_fields_read(fn, config_name: str = "cfg") -> set | None:
    """The fields of the config a stage reads (``cfg.lr``), through the functions
    of its module it calls; None when it hands the whole config to something
    outside its module (then every field counts)."""
    module = sys.modules[fn.__module__]
    fields = set()
    for source in _same_module_sources(fn):
        if source.split(" = ")[0].isidentifier() and not source.startswith(("def ", "@")):
            continue  # a constant
        tree = ast.parse(source)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Name) and node.id == config_name):
                continue
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                fields.add(parent.attr)
            elif isinstance(parent, ast.arg) or isinstance(parent, ast.arguments):
                continue
            elif isinstance(parent, ast.Call) and node in parent.args and isinstance(parent.func, ast.Name) and \
                    (inspect.isfunction(getattr(module, parent.func.id, None)) or parent.func.id == "stage_key"):
                continue  # passed to a function of this module (its own reads are counted), or to stage_key
            elif isinstance(parent, ast.keyword) and isinstance(parents.get(parent), ast.Call) and \
                    isinstance(parents[parent].func, ast.Name) and \
                    inspect.isfunction(getattr(module, parents[parent].func.id, None)):
                continue
            else:
                return None
    return fields


def stage_key(fn, cfg=None, **arguments) -> dict:
    """The cache key of one stage run: the stage's name, its code digest, the
    config fields it reads (all of them when it cannot tell), and its other
    arguments (an arm, a seed). Changing the code or any of those gives a new
    cache entry without anyone bumping a version."""
    key = {"stage": f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__qualname__}", "code": code_digest(fn)}
    if cfg is not None:
        options = _options(cfg)
        read = config_fields_read(fn)
        key["config"] = {k: v for k, v in options.items() if read is None or k in read}
    return {**key, **arguments}
