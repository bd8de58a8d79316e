"""``data=gaussian_toy``: vectors drawn from Rainforth et al.'s toy model, ``x = z + noise``.

``mu_true ~ N(0, I)``, then for each point ``z ~ N(mu_true, I)`` and ``x ~ N(z, I)``, in ``dim``
dimensions. The training split has ``num_points`` vectors (1024 in the paper, one full batch); the
validation and test splits have ``num_eval_points`` each, from the same ``mu_true``. ``seed`` fixes
all of it (null: a fresh draw).
"""

from __future__ import annotations

from typing import Annotated

import torch

from airlab.contracts.options import Range
from airlab.data.arrays import TensorDictDataset
from airlab.data.in_memory import InMemoryDataModule


class GaussianToyDataModule(InMemoryDataModule):
    """Vectors ``x`` ``[N, dim]`` of the linear-Gaussian toy; batches are ``{"x": [B, dim]}``."""

    def __init__(
        self,
        num_points: Annotated[int, Range(ge=2)] = 1024,
        dim: Annotated[int, Range(ge=1)] = 20,
        num_eval_points: Annotated[int, Range(ge=1)] = 256,
        seed: int | None = None,
        batch_size: Annotated[int, Range(ge=1)] = 1024,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        self.num_points = num_points
        self.dim = dim
        self.num_eval_points = num_eval_points
        self.seed = seed
        self.mu_true: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        """Draw ``mu_true`` and the three splits (once)."""
        if self.datasets:
            return
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        self.mu_true = torch.randn(self.dim, generator=generator)
        sizes = {"train": self.num_points, "val": self.num_eval_points, "test": self.num_eval_points}
        for split, size in sizes.items():
            z = self.mu_true + torch.randn(size, self.dim, generator=generator)
            x = z + torch.randn(size, self.dim, generator=generator)
            self.datasets[split] = TensorDictDataset({"x": x})
