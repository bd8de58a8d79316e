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

Cache: ``<data_dir>/multimnist/``, keyed by every parameter that shapes a split, including the MNIST
source and a fingerprint of its digits; checked by size and sha256, rebuilt when stale or corrupt, and
built once under a file lock (see :mod:`airlab.data.multimnist_cache`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import torch

from airlab.contracts.options import OneOf, Range
from airlab.data.in_memory import BatchedTensorDataset, InMemoryDataModule
from airlab.data.mnist import MNISTSplits, check_fractions, load_mnist, split_mnist
from airlab.data.multimnist_cache import SPLITS, CacheEntry, digits_fingerprint, load_or_build
from airlab.data.multimnist_render import (
    DIGIT_SIZE,
    OVERLAP_POLICIES,
    CanvasParams,
)
from airlab.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("auto", "torchvision", "bundled")
FORMAT_VERSION = 1  # bump when the generator changes what a parameter set produces

__all__ = ["OVERLAP_POLICIES", "SOURCES", "SPLITS", "CacheEntry", "MultiMNISTDataModule", "load_or_build"]


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
