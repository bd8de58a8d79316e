"""What a data module's batches hold, read off the data before any model is built.

The builder needs three facts about the data: the batch keys (checked against the model's declared
``inputs``), the shape of one item of each key (the model's ``data_shape``) and the number of training
items (the dataset scale N/B). airlab's in-memory data modules answer from their training dataset; any
other ``LightningDataModule`` answers with the first batch of its training loader, drawn without
touching the random streams that training uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch

from airlab.data.in_memory import InMemoryDataModule
from airlab.errors import ConfigError
from airlab.resume.rng import preserved_rng


@dataclass(frozen=True)
class DataSpec:
    """The batch keys, one item's shape per key, and the number of training items (None if unknown)."""

    keys: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    num_train: int | None


def _first_batch(datamodule: pl.LightningDataModule) -> Any:
    if isinstance(datamodule, InMemoryDataModule):
        datamodule.setup("fit")
        dataset = datamodule.datasets["train"]
        return dataset, dataset.__getitems__([0])
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    return loader.dataset, next(iter(loader))


def describe_data(datamodule: pl.LightningDataModule) -> DataSpec:
    """The :class:`DataSpec` of ``datamodule`` (loading its data if it has not yet); batches that are
    not dicts of tensors are refused in one line naming ``data._target_``."""
    with preserved_rng():
        dataset, batch = _first_batch(datamodule)
    name = type(datamodule).__name__
    if not isinstance(batch, Mapping) or not batch:
        raise ConfigError(
            "data._target_",
            f"{name}'s batches must be dicts of tensors keyed by name (e.g. {{'image': ...}}), "
            f"got {type(batch).__name__}",
        )
    shapes = {str(k): tuple(v.shape[1:]) for k, v in batch.items() if torch.is_tensor(v)}
    try:
        num_train = len(dataset)
    except TypeError:  # an iterable dataset
        num_train = None
    return DataSpec(keys=tuple(str(k) for k in batch), shapes=shapes, num_train=num_train)
