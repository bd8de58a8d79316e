"""The MultiMNIST cache: one split's canvases in an ``.npz`` beside a ``.json`` manifest.

``<cache_dir>/multimnist-<split>-<hash>.npz`` holds the arrays (compressed; images as uint8), named by a
hash of every parameter that shapes the split. The manifest beside it holds those parameters, the sizes,
the count histogram, and the byte size and sha256 of the ``.npz``. Both files are written atomically
(:mod:`airlab.utils.atomic`), arrays first. A cache whose manifest parameters, size or checksum do not match
(stale, truncated, corrupt, unreadable) is rebuilt, with a log line naming the file and the reason. A
file lock (``<stem>.lock``) around check-then-build makes concurrent jobs of a multirun build a split
once: the others wait for the lock, then find the cache valid and load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from airlab.data.multimnist_render import CanvasParams, MultiMNISTArrays, generate_canvases
from airlab.errors import DataError
from airlab.utils.atomic import atomic_path, atomic_write_text

log = logging.getLogger("airlab.data.multimnist")  # one logger for the data module and its cache

SPLITS = ("train", "val", "test")
ARRAY_NAMES = ("images", "count", "digits", "boxes", "source_index")

__all__ = ["SPLITS", "CacheEntry", "cache_paths", "digits_fingerprint", "load_or_build", "sha256_file"]


@dataclass
class CacheEntry:
    """One split's canvases and where they came from: ``built`` is False when read from the cache."""

    split: str
    arrays: MultiMNISTArrays
    path: Path
    built: bool
    reason: str | None
    seconds: float


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digits_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of a split's source digits: a cache made from other MNIST files never matches."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().astype(np.int64).tobytes())
    return digest.hexdigest()


def cache_paths(cache_dir: Path, parameters: dict[str, Any]) -> tuple[Path, Path]:
    """The ``.npz`` arrays file and ``.json`` manifest of the split that ``parameters`` describe."""
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"multimnist-{parameters['split']}-{key}"
    return cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"


def _stale_reason(arrays_path: Path, manifest_path: Path, parameters: dict[str, Any]) -> str | None:
    """Why the cache cannot be used as it is, or None when its manifest, size and checksum match."""
    if not manifest_path.is_file():
        return "no cache yet"
    try:
        manifest = json.loads(manifest_path.read_text())
        stored = dict(manifest["parameters"])
        checksum = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"manifest {manifest_path.name} is unreadable or corrupt ({type(err).__name__})"
    if stored != parameters:
        keys = sorted(k for k in parameters.keys() | stored.keys() if stored.get(k) != parameters.get(k))
        diffs = ", ".join(f"{k}: {stored.get(k)!r} != {parameters.get(k)!r}" for k in keys)
        return f"manifest parameters differ ({diffs})"
    if not arrays_path.is_file():
        return f"arrays file {arrays_path.name} is missing"
    size, expected = arrays_path.stat().st_size, manifest.get("bytes")
    if isinstance(expected, int) and size != expected:
        state = "truncated" if size < expected else "corrupt"
        return f"arrays file {arrays_path.name} is {state} ({size} bytes, the manifest records {expected})"
    try:
        actual = sha256_file(arrays_path)
    except OSError as err:
        return f"arrays file {arrays_path.name} is unreadable ({type(err).__name__}: {err})"
    if actual != checksum:
        return f"arrays file {arrays_path.name} is corrupt (its checksum does not match the manifest)"
    return None


def _read_arrays(path: Path, parameters: dict[str, Any]) -> MultiMNISTArrays:
    with np.load(path, allow_pickle=False) as data:  # data only: a pickled object never loads
        arrays = MultiMNISTArrays(**{name: data[name] for name in ARRAY_NAMES})
    n, k, size = parameters["num_images"], parameters["max_digits"], parameters["image_size"]
    expected = {"images": (n, size, size), "count": (n,), "digits": (n, k), "boxes": (n, k, 4)}
    for name, shape in expected.items():
        if getattr(arrays, name).shape != shape:
            raise ValueError(f"{name} has shape {getattr(arrays, name).shape}, expected {shape}")
    return arrays


def _try_load(
    arrays_path: Path, manifest_path: Path, parameters: dict[str, Any]
) -> tuple[MultiMNISTArrays | None, str | None]:
    """``(arrays, None)`` from a valid cache, else ``(None, why it cannot be used)``."""
    reason = _stale_reason(arrays_path, manifest_path, parameters)
    if reason is None:
        try:
            return _read_arrays(arrays_path, parameters), None
        except Exception as err:  # a zip/npy error or a wrong shape: the file cannot be trusted
            reason = f"arrays file {arrays_path.name} is corrupt ({type(err).__name__}: {err})"
    return None, reason


def _write(
    arrays_path: Path, manifest_path: Path, manifest: dict[str, Any], arrays: MultiMNISTArrays
) -> None:
    """Write arrays then manifest, each atomically: a crash never leaves a valid-looking manifest beside
    a half-written file. The manifest records the arrays file's size and sha256."""
    with atomic_path(arrays_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **{name: getattr(arrays, name) for name in ARRAY_NAMES})
        manifest["bytes"] = tmp.stat().st_size
        manifest["sha256"] = sha256_file(tmp)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _cache_lock(arrays_path: Path) -> Iterator[None]:
    """Hold ``<stem>.lock`` beside the cache: concurrent jobs of a multirun build a split one at a time."""
    lock = FileLock(arrays_path.with_suffix(".lock"))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("MultiMNIST: waiting for another process that builds %s", arrays_path)
            lock.acquire()
    except OSError as err:
        raise DataError(f"data.data_dir: cannot lock the MultiMNIST cache {arrays_path} ({err})") from None
    try:
        yield
    finally:
        lock.release()


def load_or_build(
    cache_dir: str | Path,
    parameters: dict[str, Any],
    digit_images: torch.Tensor,
    digit_labels: torch.Tensor,
    source_description: str = "",
    progress: Callable[[int], None] | None = None,
) -> CacheEntry:
    """The split that ``parameters`` describe, read from ``cache_dir`` or generated and written there.

    A cache that is missing, stale, truncated or corrupt is rebuilt, with a log line naming the file and
    the reason. Check-then-build runs under a file lock, so of several processes that need the same
    split one builds it and the others, once they get the lock, find it valid and load it. A cache that
    can be neither read nor written raises a one-line :class:`DataError` naming the file.
    """
    split = parameters["split"]
    cache_dir = Path(cache_dir)
    arrays_path, manifest_path = cache_paths(cache_dir, parameters)
    started = time.perf_counter()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = f"cannot create the MultiMNIST cache directory {cache_dir}"
        raise DataError(f"data.data_dir: {where} ({err})") from None
    arrays, reason = _try_load(arrays_path, manifest_path, parameters)
    built = False
    if arrays is None:
        with _cache_lock(arrays_path):
            # Another job may have built it while this one waited for the lock.
            arrays, reason = _try_load(arrays_path, manifest_path, parameters)
            if arrays is None:
                arrays = _build(
                    arrays_path,
                    manifest_path,
                    parameters,
                    reason,
                    digit_images,
                    digit_labels,
                    source_description,
                    progress,
                )
                built = True
    if not built:
        log.info("MultiMNIST %s: loaded %d canvases from cache %s", split, len(arrays), arrays_path)
    return CacheEntry(split, arrays, arrays_path, built, reason, time.perf_counter() - started)


def _build(
    arrays_path: Path,
    manifest_path: Path,
    parameters: dict[str, Any],
    reason: str,
    digit_images: torch.Tensor,
    digit_labels: torch.Tensor,
    source_description: str,
    progress: Callable[[int], None] | None,
) -> MultiMNISTArrays:
    """Generate the split's canvases and write them with their manifest (the caller holds the lock)."""
    split = parameters["split"]
    if reason == "no cache yet":
        log.info("MultiMNIST %s: building %s (%s)", split, arrays_path, reason)
    else:
        log.warning("MultiMNIST %s: rebuilding cache %s: %s", split, arrays_path, reason)
    started = time.perf_counter()
    canvas = CanvasParams(**{f: parameters[f] for f in CanvasParams.__dataclass_fields__})
    seed = np.random.SeedSequence([parameters["seed"], SPLITS.index(split)])
    arrays = generate_canvases(digit_images, digit_labels, parameters["num_images"], canvas, seed, progress)
    seconds = time.perf_counter() - started
    histogram = np.bincount(arrays.count, minlength=canvas.max_digits + 1).tolist()
    manifest = {
        "parameters": parameters,
        "source": source_description,
        "arrays_file": arrays_path.name,
        "sizes": {"images": len(arrays), "image_shape": list(arrays.images.shape[1:]), "count": histogram},
        "generation_seconds": round(seconds, 3),
    }
    try:
        _write(arrays_path, manifest_path, manifest, arrays)
    except OSError as err:
        raise DataError(
            f"data.data_dir: cannot write the MultiMNIST cache {arrays_path} ({reason}; {err})"
        ) from None
    log.info("MultiMNIST %s: built %d canvases in %.1f s, counts %s", split, len(arrays), seconds, histogram)
    return arrays
