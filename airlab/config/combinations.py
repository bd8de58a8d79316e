"""Options of different groups that are valid alone but not together, checked before anything is built:
the trainer's ``accelerator`` and ``devices`` against the GPUs and CPU cores this process sees, and the
validation interval against the epoch's length. Whether an estimator can train a model is the
contract's rule (:func:`airlab.contracts.estimator.check_estimator_fits_model`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from airlab.contracts.options import describe
from airlab.errors import ConfigError

#: Lightning accelerators that run on CUDA GPUs.
GPU_ACCELERATORS = ("gpu", "cuda")


def requested_devices(devices: Any, available: int) -> int | None:
    """How many devices ``trainer.devices`` asks for (``auto`` and ``-1``: all there are, as Lightning
    reads them; a list or ``"0,1"``: those indices). None when the value is not one of these forms."""
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return available
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        devices = int(text) if text.lstrip("-").isdigit() else None
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        return available if devices == -1 else devices
    return None


def check_devices(trainer: Mapping[str, Any]) -> None:
    """Refuse a GPU accelerator without a visible GPU, and ``trainer.devices`` above what is available
    (GPUs for a GPU accelerator, or ``auto`` with a GPU visible; CPU cores otherwise)."""
    accelerator = trainer.get("accelerator", "auto")
    gpus = torch.cuda.device_count()
    if accelerator in GPU_ACCELERATORS and gpus == 0:
        raise ConfigError(
            "trainer.accelerator",
            f"{describe(accelerator)} needs a GPU, but none is visible; use trainer.accelerator=cpu or auto",
        )
    on_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and gpus > 0)
    if not on_gpu and accelerator not in ("auto", "cpu"):
        return  # mps, tpu, ...: Lightning counts those itself
    available, kind = (gpus, "GPU") if on_gpu else (os.cpu_count() or 1, "CPU core")
    devices = trainer.get("devices", "auto")
    if not on_gpu and (devices == -1 or isinstance(devices, list)):
        raise ConfigError(
            "trainer.devices",
            f"{describe(devices)} is not valid on the CPU; use a number of processes >= 1 (e.g. 2) or auto",
        )
    count = requested_devices(devices, available)
    if count is None or count < 1:
        raise ConfigError(
            "trainer.devices", f"{describe(devices)} is not valid; use a count >= 1, -1, auto or a list"
        )
    if on_gpu and isinstance(devices, list) and max(devices, default=0) >= available:
        raise ConfigError(
            "trainer.devices",
            f"{describe(devices)} names GPU {max(devices)}, but only {available} are visible "
            f"(indices 0..{available - 1})",
        )
    if count > available:
        raise ConfigError(
            "trainer.devices",
            f"{describe(devices)} asks for {count} devices, but only {available} {kind}"
            f"{'s' if available != 1 else ''} {'are' if available != 1 else 'is'} available; "
            f"use trainer.devices={available} or fewer",
        )


def training_batches(num_batches: int, limit: Any) -> int:
    """The batches an epoch trains on: the loader's, capped by ``trainer.limit_train_batches`` (a count,
    or a fraction of the loader)."""
    if limit is None:
        return num_batches
    if isinstance(limit, float) and limit <= 1.0:
        return int(num_batches * limit)
    return min(num_batches, int(limit))


def check_validation_interval(trainer: Mapping[str, Any], num_batches: int) -> None:
    """Refuse a step count ``trainer.val_check_interval`` longer than an epoch while validation is also
    tied to epochs (``check_val_every_n_epoch`` set): Lightning cannot run it (a preset's interval on the
    few batches of ``debug=limit`` or a small data set)."""
    interval = trainer.get("val_check_interval")
    if (
        not isinstance(interval, int)
        or isinstance(interval, bool)
        or trainer.get("check_val_every_n_epoch") is None
    ):
        return
    batches = training_batches(num_batches, trainer.get("limit_train_batches"))
    if interval > batches:
        raise ConfigError(
            "trainer.val_check_interval",
            f"{interval} steps is longer than an epoch ({batches} training batches) while "
            "check_val_every_n_epoch is set; set trainer.check_val_every_n_epoch=null to count steps "
            f"across epochs, or trainer.val_check_interval={batches} or fewer",
        )
