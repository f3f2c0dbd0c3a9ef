"""Three scales, one pipeline: how big a chapter's experiment is.

``LIGHTKD_SCALE`` picks one for the whole book:

- ``tiny``: what the tests run. Every chapter top to bottom on small slices
  (a few hundred sentences or images, a handful of steps, one seed) in about
  a minute on one CPU thread. It proves that every cell runs, that shapes,
  invariants and equivalence checks hold, that a method still moves its
  metric the right way, and that every claim is recorded well formed.
- ``book`` (the default): the published CPU reproduction. Students train
  until dev accuracy stops improving, compared arms get paired seeds, the
  whole test split is scored. The verdicts the book prints hold here.
- ``paper``: the paper's model, data and budget on GPUs, through the
  chapter's recipe (``python -m lightkd.recipes NAME --scale paper``).

A chapter's sizes for each scale live in one place (its recipe's presets, or
``pick`` in its first cells), so a reader sees what "book scale" means and a
teacher can run the tiny version in class.
"""
from __future__ import annotations

import os
from types import MappingProxyType

from .common import LightKDError

SCALES = ("tiny", "book", "paper")
DEFAULT = "book"


def require_scale(scale) -> str:
    if scale not in SCALES:
        raise LightKDError(f"scale must be one of {', '.join(map(repr, SCALES))}, got {scale!r} "
                           "(set LIGHTKD_SCALE, or --scale on the recipes' command line)")
    return scale


def current() -> str:
    """The scale this process runs at: ``$LIGHTKD_SCALE``, else ``book``."""
    return require_scale(os.environ.get("LIGHTKD_SCALE", DEFAULT).strip().lower() or DEFAULT)


def at_book() -> bool:
    """Whether the verdicts the book prints are being tested (``book`` scale)."""
    return current() == "book"


class Sizes:
    """A chapter's sizes at one scale: read-only attributes (``S.steps``), a
    ``scale`` name, and ``as_dict()`` for cache keys and the reader's table."""

    def __init__(self, scale: str, values: dict):
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no size {name!r}; this chapter's sizes are {', '.join(self._values)}") from None

    def __setattr__(self, name, value):
        raise LightKDError("a chapter's sizes are fixed by its scale; change them where they are declared")

    def as_dict(self) -> dict:
        return dict(self._values)

    def __repr__(self):
        return f"Sizes({self.scale}: " + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def pick(*, tiny: dict, book: dict, scale: str | None = None) -> Sizes:
    """A notebook's sizes at the current scale. Both presets name the same sizes.
    The ``paper`` scale belongs to the recipes: a notebook runs on a CPU."""
    scale = current() if scale is None else require_scale(scale)
    if set(tiny) != set(book):
        raise LightKDError(f"tiny and book must name the same sizes; they differ in {sorted(set(tiny) ^ set(book))}")
    if scale == "paper":
        raise LightKDError("a notebook runs at the tiny or book scale; the paper scale is its recipe's "
                           "(python -m lightkd.recipes NAME --scale paper)")
    return Sizes(scale, tiny if scale == "tiny" else book)
