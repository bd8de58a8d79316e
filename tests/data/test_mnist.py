"""The MNIST data module: sources, splits, value range, binarisation and errors."""

from __future__ import annotations

import logging

import pytest
import torch

from airlab.data.mnist import MNISTDataModule
from airlab.errors import DataError
from tests.conftest import write_idx_images


def test_bundled_splits_are_disjoint_deterministic_and_sized():
    dm = MNISTDataModule(source="bundled", split_seed=3)
    dm.setup()
    sizes = {split: len(dm.datasets[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    again = MNISTDataModule(source="bundled", split_seed=3)
    again.setup()
    assert torch.equal(dm.datasets["val"].images, again.datasets["val"].images)
    other = MNISTDataModule(source="bundled", split_seed=4)
    other.setup()
    assert not torch.equal(dm.datasets["val"].images, other.datasets["val"].images)
    # No digit sits in two splits (the bundled digits have no duplicates among these hashes).
    hashes = {split: {hash(img.numpy().tobytes()) for img in dm.datasets[split].images} for split in sizes}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"]


def test_batches_are_images_in_unit_range_with_labels():
    dm = MNISTDataModule(source="bundled", batch_size=64)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (64, 1, 28, 28) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].max() == 1.0 and 0 < batch["image"].mean() < 0.5
    assert batch["label"].shape == (64,) and set(batch["label"].tolist()) <= set(range(10))


def test_training_batches_have_one_shape_and_cover_the_set():
    dm = MNISTDataModule(source="bundled", batch_size=300, subset_size=1000)
    sizes = [len(b["image"]) for b in dm.train_dataloader()]
    assert sizes == [300, 300, 300]  # the ragged last batch is dropped in training
    assert sum(len(b["image"]) for b in dm.val_dataloader()) == 500


@pytest.mark.parametrize("mode", ["fixed", "dynamic"])
def test_binarize_gives_binary_pixels(mode):
    dm = MNISTDataModule(source="bundled", binarize=mode, batch_size=32, subset_size=64)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        image = next(iter(loader))["image"]
        assert set(image.unique().tolist()) == {0.0, 1.0}
    if mode == "dynamic":  # validation pixels stay put; training pixels are redrawn
        first = next(iter(dm.val_dataloader()))["image"]
        assert torch.equal(first, next(iter(dm.val_dataloader()))["image"])


def test_torchvision_source_reads_idx_files(mnist_dir, caplog):
    caplog.set_level(logging.INFO, logger="airlab.data.mnist")
    dm = MNISTDataModule(source="torchvision", data_dir=str(mnist_dir), val_fraction=0.25)
    dm.setup()
    assert len(dm.datasets["train"]) == 45 and len(dm.datasets["val"]) == 15
    assert len(dm.datasets["test"]) == 20  # the official test files
    assert "MNIST source: torchvision" in caplog.text
    labels = dm.datasets["test"].annotations["label"]
    images = dm.datasets["test"].images[:, 0].float()
    # fake_digits puts label k's bar at row 2k+4: the data really came from the files
    rows = images.sum(-1).argmax(-1)
    assert torch.equal(rows, 2 * labels + 4)


def test_auto_prefers_local_files_and_falls_back_to_bundled(mnist_dir, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="airlab.data.mnist")
    dm = MNISTDataModule(source="auto", data_dir=str(mnist_dir))
    dm.setup()
    assert dm.splits.source == "torchvision"
    import airlab.data.mnist as mnist

    monkeypatch.setattr(mnist, "try_download", lambda data_dir, timeout: False)
    empty = MNISTDataModule(source="auto", data_dir=str(tmp_path / "empty"))
    empty.setup()
    assert empty.splits.source == "bundled"
    assert "MNIST source: bundled" in caplog.text


def test_idx_source_reads_a_named_pair(mnist_dir):
    raw = mnist_dir / "MNIST" / "raw"
    dm = MNISTDataModule(
        source="idx", images=str(raw / "t10k-images-idx3-ubyte"), labels=str(raw / "t10k-labels-idx1-ubyte")
    )
    dm.setup()
    assert sum(len(dm.datasets[s]) for s in ("train", "val", "test")) == 20


def test_missing_torchvision_files_name_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"missing train-images-idx3-ubyte.*MNIST/raw"):
        MNISTDataModule(source="torchvision", data_dir=str(tmp_path)).setup()


def test_corrupt_idx_file_names_the_file(mnist_dir):
    bad = mnist_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(b"not an idx file at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        MNISTDataModule(source="torchvision", data_dir=str(mnist_dir)).setup()


def test_idx_label_count_mismatch_is_reported(mnist_dir, tmp_path):
    import numpy as np

    images = tmp_path / "five-images"
    write_idx_images(images, np.zeros((5, 28, 28), dtype=np.uint8))
    labels = mnist_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    with pytest.raises(DataError, match="20 labels for 5 images"):
        MNISTDataModule(source="idx", images=str(images), labels=str(labels)).setup()


def test_subset_is_a_random_sample_of_every_class():
    dm = MNISTDataModule(source="bundled", subset_size=200)
    dm.setup()
    labels = dm.datasets["train"].annotations["label"]
    assert len(labels) == 200 and set(labels.tolist()) == set(range(10))  # the bundled set is class-sorted
