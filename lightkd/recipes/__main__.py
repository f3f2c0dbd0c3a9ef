"""The command line of the recipes.

    python -m lightkd.recipes list
    python -m lightkd.recipes NAME [--scale tiny|book|paper] [--out DIR] [--set key=value ...]
    python -m lightkd.recipes all --scale tiny [--out DIR]

``--scale`` picks the recipe's preset: ``paper`` (the default, unless
``LIGHTKD_SCALE`` says otherwise: the paper's model, data and budget, for
GPUs), ``book`` (the chapter's published CPU run, for chapters whose pipeline
lives in their recipe) or ``tiny`` (seconds on a CPU; ``--tiny`` for short).

``--set`` values are read as JSON when they parse (``lr=3e-5``,
``train_size=null``, ``augment=false``), else as text (``teacher=out/teacher``).
Under ``accelerate launch --num_processes N`` every process runs the recipe
and rank 0 alone writes and prints. A mistake on the command line is one
message and exit status 2, never a traceback; every option is checked before
anything trains. Any other failure is one line and exit status 1 (its
traceback goes to ``OUT/error-traceback.txt``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..common import LightKDError
from ..results import require_output_folder
from ..scales import SCALES, require_scale


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; one LightKDError instead
        raise LightKDError(f"{message} (see python -m lightkd.recipes --help)")


def parse_set(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise LightKDError(f"--set takes key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lightkd.recipes", description="Run a chapter's method at the paper's scale, "
                "or with --tiny as a seconds-long smoke test on tiny random models and offline data.")
    p.add_argument("name", help="a recipe name, 'list', or 'all'")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="tiny (seconds on a CPU), book (the chapter's CPU run) or paper (the default: the paper's "
                        "model, data and budget); LIGHTKD_SCALE sets the default")
    p.add_argument("--tiny", action="store_true", help="the same as --scale tiny")
    p.add_argument("--out", default="recipe-results", help="where the results files go (default: recipe-results)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one option of the recipe (repeatable)")
    return p


def describe(recipes) -> str:
    width = max(len(n) for n in recipes)
    return "\n".join(f"{n:<{width}}  {r.chapter:<24}  {'/'.join(r.scales):<15}  {r.help}" for n, r in recipes.items())


def chosen_scale(args) -> str:
    if args.tiny and args.scale not in (None, "tiny"):
        raise LightKDError(f"--tiny and --scale {args.scale} disagree; give one of them")
    if args.tiny:
        return "tiny"
    return args.scale or require_scale(os.environ.get("LIGHTKD_SCALE", "paper").strip().lower() or "paper")


def main(argv=None) -> int:
    args = None
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
        from . import RECIPES
        from .base import is_main_process
        if args.name == "list":
            print(describe(RECIPES))
            return 0
        overrides = parse_set(args.overrides)
        if args.name == "all":
            if overrides:
                raise LightKDError("--set changes one recipe's options; run that recipe by name")
            names = list(RECIPES)
        elif args.name in RECIPES:
            names = [args.name]
        else:
            raise LightKDError(f"unknown recipe {args.name!r}; choose one of {', '.join(RECIPES)}, 'list' or 'all'")
        scale = chosen_scale(args)
        if args.name == "all":
            skipped = [n for n in names if scale not in RECIPES[n].scales]
            names = [n for n in names if n not in skipped]
            if skipped:
                print(f"lightkd.recipes: {', '.join(skipped)} have no {scale} scale yet; skipped", flush=True)
        for name in names:  # check every configuration before the first one trains
            RECIPES[name].config(scale, **overrides)
        require_output_folder(args.out)
        if is_main_process():
            from ..train import world_size
            print(f"lightkd.recipes: {', '.join(names)} on {world_size()} process(es)", flush=True)
        for name in names:
            start = time.perf_counter()
            results = RECIPES[name](scale=scale, out=args.out, **overrides)
            if is_main_process():
                accuracies = {k.split(".")[1]: v["value"] for k, v in results["metrics"].items()
                              if k.startswith("models.") and k.endswith(".accuracy")}
                shown = ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items())
                print(f"{name}: {time.perf_counter() - start:.1f} s; accuracy {shown or '-'} -> {args.out}/{name}.json",
                      flush=True)
    except LightKDError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a disk, the hub, a GPU or a bug: one line here, the traceback in a file
        where = _save_traceback(args)
        print(f"error: {type(e).__name__}: {_one_line(e)}" + (f" (traceback in {where})" if where else ""),
              file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _save_traceback(args) -> str | None:
    """Write the traceback being handled to ``<out>/error-traceback.txt``; its path, or None."""
    import traceback
    try:
        path = os.path.join(getattr(args, "out", None) or ".", "error-traceback.txt")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(traceback.format_exc())
        return path
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
