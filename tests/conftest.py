"""Shared fixtures: composing configs as the scripts do, tiny data, a clean Pyro param store."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def compose_config(config_name: str, overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose like ``@hydra.main`` does, with the run directory set to ``output_dir``."""
    GlobalHydra.instance().clear()
    if output_dir is not None:  # data and outputs of the test stay in its own folder
        overrides = [f"paths.root_dir={output_dir}", *overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.runtime.cwd = str(output_dir)
            cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(overrides, name="train")``: a composed config whose run dir is under tmp_path."""

    def make(overrides: list[str] | None = None, name: str = "train", run: str = "run") -> DictConfig:
        run_dir = tmp_path / run
        run_dir.mkdir(parents=True, exist_ok=True)
        return compose_config(name, list(overrides or []), run_dir)

    yield make
    GlobalHydra.instance().clear()


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """MNIST's IDX3 format: magic 0x00000803, counts and sizes as big-endian int32, then uint8 pixels."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">iiii", 0x803, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">ii", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocky 28x28 'digits': label k lights up a bar at row 2k+4, so classes are distinguishable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 * label + 4
        images[i, row : row + 3, 6:22] = rng.integers(128, 256)
    return images, labels


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A data_dir holding torchvision-layout MNIST IDX files: 60 training and 20 test digits."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train_images, train_labels = fake_digits(60, seed=1)
    test_images, test_labels = fake_digits(20, seed=2)
    write_idx_images(raw / "train-images-idx3-ubyte", train_images)
    write_idx_labels(raw / "train-labels-idx1-ubyte", train_labels)
    write_idx_images(raw / "t10k-images-idx3-ubyte", test_images)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", test_labels)
    return tmp_path / "data"


def read_events(log_dir: Path):
    """A loaded TensorBoard EventAccumulator for a run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


FAST = ["debug=fast", "data.source=bundled", "callbacks.progress_bar=null"]

# An AIR small enough for a test to train in seconds (the overrides of model=air).
TINY_AIR_MODEL = [
    "model.rnn_hidden=16",
    "model.baseline_rnn_hidden=8",
    "model.encoder_hidden=[16]",
    "model.decoder_hidden=[16]",
    "model.predict_hidden=[8]",
    "model.baseline_hidden=[8]",
    "model.z_what_dim=4",
]


def run_script(script: str, *overrides: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python scripts/<script> overrides...`` as a user runs it, from ``cwd``; output captured. The
    repository is on PYTHONPATH so that tests may point ``_target_``s at their own helpers."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
