"""data=gaussian_toy: seeded draws of Rainforth et al.'s toy, in three splits."""

from __future__ import annotations

import math

import pytest
import torch

from airlab.data.toy_vectors import GaussianToyDataModule


def test_splits_shapes_and_seed():
    data = GaussianToyDataModule(num_points=1024, dim=20, num_eval_points=100, seed=3)
    data.setup()
    sizes = {split: data.datasets[split].tensors["x"].shape for split in ("train", "val", "test")}
    assert sizes == {"train": (1024, 20), "val": (100, 20), "test": (100, 20)}
    again = GaussianToyDataModule(num_points=1024, dim=20, num_eval_points=100, seed=3)
    again.setup()
    assert torch.equal(again.datasets["train"].tensors["x"], data.datasets["train"].tensors["x"])
    other = GaussianToyDataModule(num_points=1024, dim=20, seed=4)
    other.setup()
    assert not torch.equal(other.mu_true, data.mu_true)
    # x ~ N(mu_true, 2 I): the training mean is within 4 standard errors of mu_true in every coordinate
    x = data.datasets["train"].tensors["x"]
    assert float((x.mean(0) - data.mu_true).abs().max()) < 4 * math.sqrt(2 / 1024)
    assert float(x.var(0).mean()) == pytest.approx(2.0, rel=0.1)
    batch = next(iter(data.train_dataloader()))
    assert batch["x"].shape == (1024, 20)  # one full batch
