"""The command line of the recipes.

    python -m lightkd.recipes list
    python -m lightkd.recipes NAME [--tiny] [--out DIR] [--set key=value ...]
    python -m lightkd.recipes all --tiny [--out DIR]

``--set`` values are read as JSON when they parse (``lr=3e-5``,
``train_size=null``, ``augment=false``), else as text (``teacher=out/teacher``).
Under ``accelerate launch --num_processes N`` every process runs the recipe
and rank 0 alone writes and prints. A mistake on the command line is one
message and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..common import LightKDError


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
    p.add_argument("--tiny", action="store_true", help="the smoke configuration (offline, seconds on a CPU)")
    p.add_argument("--out", default="recipe-results", help="where the results files go (default: recipe-results)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one option of the recipe (repeatable)")
    return p


def describe(recipes) -> str:
    width = max(len(n) for n in recipes)
    return "\n".join(f"{n:<{width}}  {r.chapter:<24}  {r.help}" for n, r in recipes.items())


def main(argv=None) -> int:
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
        for name in names:  # check every configuration before the first one trains
            RECIPES[name].config(args.tiny, **overrides)
        if is_main_process():
            from ..train import world_size
            print(f"lightkd.recipes: {', '.join(names)} on {world_size()} process(es)", flush=True)
        for name in names:
            start = time.perf_counter()
            results = RECIPES[name](tiny=args.tiny, out=args.out, **overrides)
            if is_main_process():
                accuracies = {k.split(".")[1]: v["value"] for k, v in results["metrics"].items()
                              if k.startswith("models.") and k.endswith(".accuracy")}
                shown = ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items())
                print(f"{name}: {time.perf_counter() - start:.1f} s; accuracy {shown or '-'} -> {args.out}/{name}.json",
                      flush=True)
    except LightKDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
