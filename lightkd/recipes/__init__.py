"""One runnable recipe per chapter: the chapter's method at the paper's scale
(``python -m lightkd.recipes NAME``), or as a smoke test on tiny random models
(``--tiny``). Recipes are the layer above the methods: they may import the
core and any method; nothing in lightkd imports them."""
from . import text, vision
from .base import Recipe, registry

RECIPES = registry(text, vision)

__all__ = ["Recipe", "RECIPES"]
