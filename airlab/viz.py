"""Pictures: image grids for TensorBoard and PNG files. No training logic here."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image


def reconstruction_grid(inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Inputs in the top row, their reconstructions below: ``[3, H', W']`` in [0, 1]."""
    n = inputs.shape[0]
    both = torch.cat([inputs, reconstructions]).clamp(0, 1).cpu()
    return make_grid(both, nrow=n, padding=2, pad_value=0.5)


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    return make_grid(images.clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5)


def save_grid(grid: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, str(path))
    return path
