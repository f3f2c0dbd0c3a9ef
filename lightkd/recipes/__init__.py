"""One runnable recipe per chapter, the layer above the methods.

A chapter whose pipeline lives here (``distillation`` for chapter 4) has one
module with a config dataclass and its three presets (``tiny``, ``book``,
``paper``), named stages that the notebook calls, and the chapter's metric
and claim declarations; ``python -m lightkd.recipes NAME --scale paper`` runs
the same stages. The chapters in ``NOT_MIGRATED`` still run their pipeline
in the notebook; their recipes (``text``, ``vision``) are the paper-scale
versions, with a tiny smoke configuration. Recipes may import the core, the
blocks and any method; nothing in lightkd imports them."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import distillation, text, vision
from .base import Recipe, registry

RECIPES = registry(distillation, text, vision)

# Chapters whose pipeline is still written in the notebook (and, for the paper scale, again in
# text.py / vision.py). The list must be empty when the book-scale work is done: tests/test_book.py
# holds every other chapter's stored page and results to the code that is committed.
NOT_MIGRATED = ("01_teacher", "02_quantization", "03_pruning", "05_tinybert", "06_mobilebert", "07_vision",
                "08_sharing", "09_token_sparsification", "10_vision_language", "11_putting_it_together")

MODULES = {"04_distillation": distillation}


def book_root() -> Path | None:
    """The checkout of the book this runs in (the folder with ``_toc.yml``), or None."""
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / "_toc.yml").exists()), None)


def notebook_code(path: Path) -> list[str]:
    """A notebook's code cells as run, without the Colab install cell (written for
    every chapter by tools/install_cell.py; it changes no number)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]).strip() for c in cells if c["cell_type"] == "code"]
    return [c for c in code if c and not c.startswith("# Colab only")]


def chapter_digest(chapter: str, root: Path | None = None) -> str | None:
    """A digest of the code that produces a chapter's numbers: the notebook's code
    cells and its recipe module. A results file records it; a test compares it
    with the committed code, so a page produced by other code is found stale.
    None outside a checkout of the book (Colab runs one notebook alone)."""
    root = root or book_root()
    module = MODULES.get(chapter)
    if root is None or module is None:
        return None
    notebook = root / "notebooks" / f"{chapter}.ipynb"
    if not notebook.exists():
        return None
    h = hashlib.sha256()
    for cell in notebook_code(notebook):
        h.update(cell.encode() + b"\0")
    h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


__all__ = ["Recipe", "RECIPES", "NOT_MIGRATED", "MODULES", "chapter_digest"]
