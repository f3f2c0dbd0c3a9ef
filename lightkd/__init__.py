"""lightkd: the tested pieces of the book "Lightweight Transformers"."""
__version__ = "0.1.0"

from .common import LightKDError, SourceMissing, cache_dir, default_seed, set_seed  # noqa: F401
