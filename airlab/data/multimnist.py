"""MultiMNIST for AIR: 50x50 canvases holding 0..max_digits MNIST digits, generated once and cached.

Canvases (see :mod:`airlab.data.multimnist_render`): the number of digits is uniform on
0..``max_digits``; each digit is shrunk by ``s ~ N(scale_mean, scale_sd)`` to ``28/s`` pixels (about
21 px) and placed uniformly at random fully inside the canvas. Digits add up.

Overlap policy (``data.overlap``):
  - ``redraw`` (default, as in the AIR paper): a canvas whose summed pixel values exceed 255 anywhere
    keeps its digit count but gets new digits, scales and positions until it fits. Counts stay uniform
    and no pixel is ever clipped, so every image is exactly the sum of its digits.
  - ``clip``: digits are placed once and the sum is clipped at 255.

Digits come from ``data.source`` (see :mod:`airlab.data.mnist`), split by ``data.split_seed``:
train canvases use only the digits of the MNIST train split, val canvases the val split and test
canvases the test split, so no digit image appears in two canvas splits. Generation is deterministic
from ``data.seed``; each split draws from its own stream derived from it.

Cache: ``<data_dir>/multimnist/multimnist-<split>-<hash>.npz`` (compressed; images as uint8), named
by a hash of every parameter that shapes the split, including the MNIST source and a fingerprint of
its digits, and next to it a ``.json`` manifest holding those parameters, the sizes, the count
histogram and the sha256 of the ``.npz``. A cache whose manifest parameters or checksum do not match
is rebuilt, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from airlab.config.options import OneOf, Range
from airlab.data.batched import BatchedTensorDataset, InMemoryDataModule
from airlab.data.mnist import MNISTSplits, check_fractions, load_mnist, split_mnist
from airlab.data.multimnist_render import (
    DIGIT_SIZE,
    OVERLAP_POLICIES,
    CanvasParams,
    MultiMNISTArrays,
    generate_canvases,
)
from airlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SOURCES = ("auto", "torchvision", "bundled")
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1  # bump when the generator changes what a parameter set produces
ARRAY_NAMES = ("images", "count", "digits", "boxes", "source_index")

__all__ = ["OVERLAP_POLICIES", "SOURCES", "CacheEntry", "MultiMNISTDataModule", "load_or_build"]


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
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"multimnist-{parameters['split']}-{key}"
    return cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"


def _stale_reason(arrays_path: Path, manifest_path: Path, parameters: dict[str, Any]) -> str | None:
    """Why the cache cannot be used as it is, or None when its manifest and checksum match."""
    if not manifest_path.is_file():
        return "no cache yet"
    try:
        manifest = json.loads(manifest_path.read_text())
        stored = dict(manifest["parameters"])
        checksum = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"manifest {manifest_path.name} is unreadable ({type(err).__name__})"
    if stored != parameters:
        keys = sorted(k for k in parameters.keys() | stored.keys() if stored.get(k) != parameters.get(k))
        diffs = ", ".join(f"{k}: {stored.get(k)!r} != {parameters.get(k)!r}" for k in keys)
        return f"manifest parameters differ ({diffs})"
    if not arrays_path.is_file():
        return f"arrays file {arrays_path.name} is missing"
    if sha256_file(arrays_path) != checksum:
        return f"checksum of {arrays_path.name} does not match the manifest (changed or corrupt)"
    return None


def _read_arrays(path: Path, parameters: dict[str, Any]) -> MultiMNISTArrays:
    with np.load(path) as data:
        arrays = MultiMNISTArrays(**{name: data[name] for name in ARRAY_NAMES})
    n, k, size = parameters["num_images"], parameters["max_digits"], parameters["image_size"]
    expected = {"images": (n, size, size), "count": (n,), "digits": (n, k), "boxes": (n, k, 4)}
    for name, shape in expected.items():
        if getattr(arrays, name).shape != shape:
            raise ValueError(f"{name} has shape {getattr(arrays, name).shape}, expected {shape}")
    return arrays


def _write(
    arrays_path: Path, manifest_path: Path, manifest: dict[str, Any], arrays: MultiMNISTArrays
) -> None:
    """Write arrays then manifest, each to a temporary name first: a crash never leaves a valid-looking
    manifest beside a half-written file, and concurrent builders (DDP ranks) only race to rename."""
    arrays_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    tmp_arrays = arrays_path.with_name(arrays_path.name + suffix)
    with open(tmp_arrays, "wb") as handle:
        np.savez_compressed(handle, **{name: getattr(arrays, name) for name in ARRAY_NAMES})
    manifest["sha256"] = sha256_file(tmp_arrays)
    os.replace(tmp_arrays, arrays_path)
    tmp_manifest = manifest_path.with_name(manifest_path.name + suffix)
    tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_manifest, manifest_path)


def load_or_build(
    cache_dir: str | Path,
    parameters: dict[str, Any],
    digit_images: torch.Tensor,
    digit_labels: torch.Tensor,
    source_description: str = "",
    progress: Callable[[int], None] | None = None,
) -> CacheEntry:
    """The split that ``parameters`` describe, read from ``cache_dir`` or generated and written there."""
    split = parameters["split"]
    arrays_path, manifest_path = cache_paths(Path(cache_dir), parameters)
    started = time.perf_counter()
    reason = _stale_reason(arrays_path, manifest_path, parameters)
    if reason is None:
        try:
            arrays = _read_arrays(arrays_path, parameters)
        except Exception as err:  # a zip/npy error or a wrong shape: the file cannot be trusted
            reason = f"arrays file {arrays_path.name} is unreadable ({type(err).__name__}: {err})"
        else:
            seconds = time.perf_counter() - started
            log.info("MultiMNIST %s: loaded %d canvases from cache %s", split, len(arrays), arrays_path)
            return CacheEntry(split, arrays, arrays_path, False, None, seconds)
    if reason == "no cache yet":
        log.info("MultiMNIST %s: building %s (%s)", split, arrays_path, reason)
    else:
        log.warning("MultiMNIST %s: rebuilding cache %s: %s", split, arrays_path, reason)
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
        where = arrays_path.parent
        raise DataError(f"data.data_dir: cannot write the MultiMNIST cache in {where} ({err})") from None
    log.info("MultiMNIST %s: built %d canvases in %.1f s, counts %s", split, len(arrays), seconds, histogram)
    return CacheEntry(split, arrays, arrays_path, True, reason, time.perf_counter() - started)


class MultiMNISTDataModule(InMemoryDataModule):
    """Batches are dicts: ``image`` float ``[B, 1, H, W]`` in [0, 1] (grey, never binarised: AIR's
    likelihood is a Normal), ``count`` int64 ``[B]``, ``digits`` int64 ``[B, max_digits]`` (-1 padded)
    and ``boxes`` float ``[B, max_digits, 4]`` as pixel ``(x_min, y_min, x_max, y_max)`` (NaN padded).
    """

    image_shape = (1, 50, 50)
    annotations = ("count", "digits", "boxes")

    def __init__(
        self,
        source: Annotated[str, OneOf(SOURCES)] = "auto",
        data_dir: str = "data",
        batch_size: Annotated[int, Range(ge=1)] = 64,
        eval_batch_size: Annotated[int | None, Range(ge=1)] = None,
        num_workers: Annotated[int, Range(ge=0)] = 0,
        pin_memory: bool | None = None,
        split_seed: Annotated[int, Range(ge=0)] = 0,
        # every canvas split needs digits of its own
        val_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.1,
        test_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.1,
        subset_size: Annotated[int | None, Range(ge=1)] = None,
        download_timeout: Annotated[float, Range(gt=0)] = 10.0,
        max_digits: Annotated[int, Range(ge=1)] = 2,
        image_size: Annotated[int, Range(ge=8)] = 50,
        num_images: Annotated[int, Range(ge=1)] = 60000,
        num_val_images: Annotated[int, Range(ge=1)] = 5000,
        num_test_images: Annotated[int, Range(ge=1)] = 5000,
        seed: Annotated[int, Range(ge=0, le=2**32 - 1)] = 0,
        scale_mean: Annotated[float, Range(gt=0)] = 1.3,
        scale_sd: Annotated[float, Range(ge=0)] = 0.1,
        overlap: Annotated[str, OneOf(OVERLAP_POLICIES)] = "redraw",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        self.source = source
        self.data_dir = os.fspath(data_dir)
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.download_timeout = download_timeout
        self.seed = seed
        # Typed as the cache manifest stores them: `scale_mean: 1` from YAML must not be a new cache.
        self.canvas = CanvasParams(
            int(image_size), int(max_digits), float(scale_mean), float(scale_sd), overlap
        )
        self.image_shape = (1, image_size, image_size)
        # subset_size caps what is generated, not just what is served: a smoke test makes 96 canvases,
        # not 60,000 (in a cache file of its own, since the size is a parameter).
        cap = subset_size if subset_size is not None else max(num_images, num_val_images, num_test_images)
        self.sizes = {
            "train": min(num_images, cap),
            "val": min(num_val_images, cap),
            "test": min(num_test_images, cap),
        }
        self.splits: MNISTSplits | None = None
        self.source_description = ""
        self.entries: dict[str, CacheEntry] = {}

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], prefix: str) -> None:
        """Config-time checks that relate several options (see airlab.config.validate)."""
        check_fractions(options, prefix)
        scale_mean, image_size = options["scale_mean"], options["image_size"]
        if scale_mean * image_size < DIGIT_SIZE:
            raise ConfigError(
                f"{prefix}.scale_mean",
                f"{scale_mean:g} makes digits {DIGIT_SIZE / scale_mean:.1f} px wide, more than the "
                f"{image_size} px canvas ({prefix}.image_size); need >= {DIGIT_SIZE / image_size:.3g}",
            )

    @property
    def cache_dir(self) -> Path:
        """Where the generated MultiMNIST splits are cached: ``data_dir/multimnist``."""
        return Path(self.data_dir) / "multimnist"

    def load_digits(self) -> MNISTSplits:
        """The MNIST digits that the canvases are built from, split (loaded once)."""
        if self.splits is None:
            arrays = load_mnist(self.source, self.data_dir, self.download_timeout)
            self.splits = split_mnist(arrays, self.split_seed, self.val_fraction, self.test_fraction)
            self.source_description = f"{arrays.source} ({arrays.description})"
            sizes = "/".join(str(len(getattr(self.splits, s)[0])) for s in SPLITS)
            log.info(
                "MultiMNIST digits from MNIST source %s; train/val/test digits %s",
                self.source_description,
                sizes,
            )
        return self.splits

    def cache_parameters(self, split: str) -> dict[str, Any]:
        """Everything that shapes a split's canvases; the cache file name is a hash of it."""
        images, labels = getattr(self.load_digits(), split)
        return {
            "format": FORMAT_VERSION,
            "split": split,
            "num_images": self.sizes[split],
            **asdict(self.canvas),
            "seed": self.seed,
            "mnist_source": self.splits.source,
            "split_seed": self.split_seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "num_source_digits": len(images),
            "digits_sha256": digits_fingerprint(images, labels),
        }

    def load_split(self, split: str, progress: Callable[[int], None] | None = None) -> CacheEntry:
        """The cache entry for ``split``: loaded if its parameters match, else built and saved (once)."""
        if split not in self.entries:
            images, labels = getattr(self.load_digits(), split)
            self.entries[split] = load_or_build(
                self.cache_dir,
                self.cache_parameters(split),
                images,
                labels,
                self.source_description,
                progress,
            )
        return self.entries[split]

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup(): the cache is built once, and the
        # other ranks then load it.
        """Build or load every split's cache on one process, so that other ranks only load it."""
        for split in SPLITS:
            self.load_split(split)

    def setup(self, stage: str | None = None) -> None:
        """Build each missing split: canvases with ``count``, ``digits`` and ``boxes`` annotations."""
        for split in SPLITS:
            if split not in self.datasets:
                arrays = self.load_split(split).arrays
                annotations = {
                    "count": torch.from_numpy(arrays.count),
                    "digits": torch.from_numpy(arrays.digits),
                    "boxes": torch.from_numpy(arrays.boxes),
                }
                self.datasets[split] = BatchedTensorDataset(
                    torch.from_numpy(arrays.images).unsqueeze(1), annotations
                )
