"""``data=arrays``: a researcher's own arrays, from one ``.npz`` or ``.pt`` file.

Every array of the file (or those named by ``keys``) becomes a batch key; all must have the same first
dimension. ``uint8`` arrays are images, scaled to [0, 1] as MNIST's pixels are; floating arrays become
float32; the others (integer labels, masks) stay as they are. The rows are split into train, val and
test by ``val_fraction``, ``test_fraction`` and ``split_seed``.

Files are read as data only: ``.npz`` with ``allow_pickle=False``, ``.pt`` with ``weights_only=True``
(a dict of tensors); nothing in them can run code.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from airlab.contracts.options import Range
from airlab.data.in_memory import InMemoryDataModule, split_indices
from airlab.data.mnist import check_fractions
from airlab.errors import ConfigError, DataError

SUFFIXES = (".npz", ".pt")


class TensorDictDataset(Dataset):
    """Equal-length tensors by name; a batch is one fancy-index into each (``uint8`` scaled to [0, 1])."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = dict(tensors)
        self.length = len(next(iter(self.tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {}
        for name, value in self.tensors.items():
            rows = value[index]
            batch[name] = rows.float().div_(255.0) if rows.dtype == torch.uint8 else rows
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.__getitems__([index]).items()}


def read_arrays(path: str) -> dict[str, torch.Tensor]:
    """The arrays of a ``.npz`` or ``.pt`` file as tensors (floats as float32); one line naming the file
    for a missing, unreadable or non-array file."""
    file = Path(path)
    if file.suffix not in SUFFIXES:
        raise ConfigError("data.path", f"{path!r} is not a .npz or .pt file")
    if not file.is_file():
        raise DataError(f"data.path: file not found: {path}")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as npz:
                raw: Any = {name: torch.from_numpy(np.array(npz[name])) for name in npz.files}
        else:
            raw = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data.path: {path} cannot be read as arrays ({detail})") from None
    if not isinstance(raw, Mapping) or not all(torch.is_tensor(v) for v in raw.values()):
        raise DataError(f"data.path: {path} must hold a dict of arrays (name -> tensor)")
    tensors = {}
    for name, value in raw.items():
        if value.dim() == 0:
            raise DataError(
                f"data.path: array {name!r} of {path} is a scalar; every array needs one row per item"
            )
        tensors[str(name)] = value.float() if value.is_floating_point() else value
    if not tensors:
        raise DataError(f"data.path: {path} holds no arrays")
    return tensors


class ArrayDataModule(InMemoryDataModule):
    """Batches are dicts of the file's arrays, row by row (``keys``: only these, in this order)."""

    def __init__(
        self,
        path: str,
        keys: list[str] | None = None,
        batch_size: Annotated[int, Range(ge=1)] = 128,
        eval_batch_size: Annotated[int | None, Range(ge=1)] = None,
        num_workers: Annotated[int, Range(ge=0)] = 0,
        pin_memory: bool | None = None,
        split_seed: Annotated[int, Range(ge=0)] = 0,
        val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1,
        test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1,
        subset_size: Annotated[int | None, Range(ge=1)] = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        self.path = str(path)
        self.keys = None if keys is None else [str(k) for k in keys]
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.subset_size = subset_size

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], prefix: str) -> None:
        """The val and test fractions must leave rows for training."""
        check_fractions(options, prefix)

    def load(self) -> dict[str, torch.Tensor]:
        """The chosen arrays, checked: every key present, every array of the same length."""
        tensors = read_arrays(self.path)
        if self.keys is not None:
            missing = [k for k in self.keys if k not in tensors]
            if missing:
                raise ConfigError(
                    "data.keys", f"{missing[0]!r} is not in {self.path}; its arrays: {', '.join(tensors)}"
                )
            tensors = {k: tensors[k] for k in self.keys}
        lengths = {name: len(value) for name, value in tensors.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
            raise DataError(f"data.path: the arrays of {self.path} have different lengths ({shown})")
        return tensors

    def setup(self, stage: str | None = None) -> None:
        """Load the file once and split its rows into the train, val and test datasets."""
        if self.datasets:
            return
        tensors = self.load()
        n = len(next(iter(tensors.values())))
        val, test, train = split_indices(n, [self.val_fraction, self.test_fraction], self.split_seed)
        if len(train) == 0:
            raise DataError(f"data.path: {self.path} has {n} rows: none are left for training")
        for split, index in (("train", train), ("val", val), ("test", test)):
            if self.subset_size is not None:
                index = index[: self.subset_size]
            self.datasets[split] = TensorDictDataset({k: v[index] for k, v in tensors.items()})
