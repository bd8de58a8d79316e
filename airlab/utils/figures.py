"""Pictures: image grids for TensorBoard and PNG files. No training logic here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torchvision.utils import make_grid, save_image

if TYPE_CHECKING:  # matplotlib is imported lazily, on first use
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend: figures are written to files and TensorBoard, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a matplotlib figure (PNG by the suffix) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


#: Nearest-neighbour enlargement of every picture airlab writes (TensorBoard and PNG): the default of the
#: picture callbacks' ``picture_scale`` and of evaluate's ``eval.picture_scale``.
PICTURE_SCALE = 2


def upscale(grid: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour enlargement, so that 28-pixel digits are visible in an image viewer."""
    return grid.repeat_interleave(factor, -1).repeat_interleave(factor, -2) if factor > 1 else grid


def reconstruction_grid(inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Inputs in the top row, their reconstructions below: ``[3, H', W']`` in [0, 1]."""
    n = inputs.shape[0]
    both = torch.cat([inputs, reconstructions]).clamp(0, 1).cpu()
    return make_grid(both, nrow=n, padding=2, pad_value=0.5)


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """Images ``[N, C, H, W]``, clamped to ``[0, 1]``, as one grid ``[3, H', W']`` on the CPU."""
    return make_grid(images.clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5)


def save_grid(grid: torch.Tensor, path: str | Path) -> Path:
    """Save ``grid`` as a PNG at ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, str(path))
    return path


STEP_COLOURS = torch.tensor(
    [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.5, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0], [0.2, 1.0, 1.0]]
)


def draw_boxes(images: torch.Tensor, boxes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Grey ``[B, 1, H, W]`` images -> RGB ``[B, 3, H, W]`` with box outlines, one colour per step.

    ``boxes`` is ``[B, T, 4]`` (x_min, y_min, x_max, y_max in pixels); ``present`` is ``[B, T]``.
    """
    rgb = images.clamp(0, 1).repeat(1, 3, 1, 1).cpu()
    height, width = rgb.shape[-2:]
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, -1) + 0.5
    for b in range(rgb.shape[0]):
        for t in range(boxes.shape[1]):
            if not bool(present[b, t]):
                continue
            x0, y0, x1, y1 = boxes[b, t].tolist()
            inside_x = (xs >= x0 - 0.5) & (xs <= x1 + 0.5)
            inside_y = (ys >= y0 - 0.5) & (ys <= y1 + 0.5)
            on_vertical = ((xs - x0).abs() < 0.5) | ((xs - x1).abs() < 0.5)
            on_horizontal = ((ys - y0).abs() < 0.5) | ((ys - y1).abs() < 0.5)
            outline = (inside_x & inside_y) & (on_vertical | on_horizontal)
            colour = STEP_COLOURS[t % len(STEP_COLOURS)].view(3, 1, 1)
            rgb[b] = torch.where(outline, colour, rgb[b])
    return rgb


def labelled_rows_figure(rows: dict[str, torch.Tensor], title: str) -> Figure:
    """Rows of images ``{label: [n, C, H, W]}``, one under another, each labelled on its left."""
    plt = pyplot()
    width = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 + 0.9 * width, 1.0 * len(rows) + 0.4), dpi=100)
    for ax, (label, images) in zip([axes] if len(rows) == 1 else axes, rows.items(), strict=True):
        grid = image_grid(images.detach().cpu(), nrow=len(images))
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(confusion: torch.Tensor, title: str = "count confusion") -> Figure:
    """A matplotlib figure of a count confusion matrix (rows: true, columns: inferred)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(3.2, 3.0), dpi=100)
    ax.imshow(confusion.numpy(), cmap="Blues")
    rows, cols = confusion.shape
    for i in range(rows):
        for j in range(cols):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8)
    ax.set_xlabel("inferred count")
    ax.set_ylabel("true count")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
