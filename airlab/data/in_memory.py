"""In-memory datasets that hand out whole batches.

MNIST-sized data fits in memory, so a batch is one fancy-index into uint8 tensors instead of 256
``__getitem__`` calls and a collate. ``DataLoader`` calls ``__getitems__`` with the batch's indices;
``collate_batch`` passes the ready batch through. This keeps Lightning's samplers (shuffling, DDP's
``DistributedSampler``) in charge of which indices go where.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from airlab.contracts.options import ChecksOptions
from airlab.resume.loader import EpochSampler, ResumableLoader

Binarize = Literal["none", "fixed", "dynamic"]


class BatchedTensorDataset(Dataset):
    """Images stored as uint8 ``[N, 1, H, W]`` plus any per-image annotations.

    ``binarize``:
      - ``none``: grey pixels in [0, 1];
      - ``fixed``: pixels > 0.5 become 1, the rest 0 (the same every epoch);
      - ``dynamic``: each pixel is redrawn as Bernoulli(grey value) every time it is served.
    """

    def __init__(
        self,
        images: torch.Tensor,
        annotations: Mapping[str, torch.Tensor] | None = None,
        binarize: Binarize = "none",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.annotations = dict(annotations or {})
        for name, value in self.annotations.items():
            if len(value) != len(images):
                raise ValueError(f"annotation {name!r} has {len(value)} rows for {len(images)} images")
        self.binarize = binarize

    def __len__(self) -> int:
        return len(self.images)

    def _batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        image = self.images[index].float().div_(255.0)
        if self.binarize == "fixed":
            image = (image > 0.5).float()
        elif self.binarize == "dynamic":
            image = torch.bernoulli(image)
        batch = {"image": image}
        batch.update({name: value[index] for name, value in self.annotations.items()})
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self._batch(torch.tensor([index]))
        return {name: value[0] for name, value in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self._batch(torch.as_tensor(indices, dtype=torch.long))


def collate_batch(batch: dict[str, torch.Tensor] | list[Any]) -> dict[str, torch.Tensor]:
    """``__getitems__`` already built the batch; a list means single items (no ``__getitems__``)."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    drop_last: bool = False,
    epoch_batches: Callable[[], float | None] | None = None,
) -> DataLoader:
    # Dropping the ragged last batch keeps every training batch the same shape: a decaying-average
    # baseline is a per-position tensor, and a jit-compiled loss is traced for one batch size.
    """A resumable DataLoader over ``dataset`` (:mod:`airlab.resume.loader`); ``drop_last`` only when
    the dataset holds more than one batch. Shuffling is seeded by torch's seed (``seed``) and the epoch,
    and no loader draws from the global generators: resuming a run replays its data exactly."""
    drop_last = drop_last and len(dataset) > batch_size
    seed = torch.initial_seed()
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, seed) if shuffle else None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate_batch,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker seeds, not the global generator
        epoch_batches=epoch_batches,
    )


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Split ``range(n)`` into len(fractions)+1 disjoint parts, deterministically from ``seed``.

    The last part takes what the fractions leave; each fractional part has ``round(f * n)`` items.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    parts, start = [], 0
    for fraction in fractions:
        size = int(round(fraction * n))
        parts.append(order[start : start + size].sort().values)
        start += size
    parts.append(order[start:].sort().values)
    return parts


class InMemoryDataModule(ChecksOptions, pl.LightningDataModule):
    """Loaders over ``self.datasets`` (split name -> ``BatchedTensorDataset``), which ``setup`` fills.

    Training batches are shuffled and all ``batch_size`` images (the ragged last batch is dropped);
    evaluation batches are ``eval_batch_size`` and cover every image.
    """

    #: The per-image annotations the batches carry beside ``image`` (models that need one check it).
    annotations: tuple[str, ...] = ()

    def __init__(
        self, batch_size: int, eval_batch_size: int | None, num_workers: int, pin_memory: bool | None
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        # null means "when a GPU is present"
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.datasets: dict[str, BatchedTensorDataset] = {}

    @property
    def num_train(self) -> int:
        """The number of training images (after ``setup``)."""
        self.setup()
        return len(self.datasets["train"])

    def evaluation_split(self, split: str) -> str:
        """The split ``evaluate.py`` scores when asked for ``split`` (a data module may map it)."""
        return split

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """The loader for ``split``: ``batch_size`` batches for training, else ``eval_batch_size``."""
        self.setup()
        train = split == "train"
        return make_loader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=train,
            epoch_batches=self._train_batches if train else None,
        )

    def _train_batches(self) -> float | None:
        """The batches a training epoch takes under the attached trainer (``limit_train_batches``)."""
        trainer = self.trainer
        return None if trainer is None else trainer.num_training_batches

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in order."""
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, in order."""
        return self.dataloader("test")
