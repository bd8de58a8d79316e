"""AIR in pictures: attention boxes, the decoded window of every step, and the worst count errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from airlab.utils.figures import STEP_COLOURS, draw_boxes, image_grid, pyplot
from airlab.utils.spatial import where_to_box

if TYPE_CHECKING:  # matplotlib is imported lazily, on first use
    from matplotlib.figure import Figure

ABSENT_SHADE = 0.15  # the tile of a step that found no object: dark, so "absent" reads at a glance


def boxed(images: torch.Tensor, inferred: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, reconstructions) as RGB ``[B, 3, H, W]`` with one box per present step, coloured by step."""
    boxes = where_to_box(inferred["z_where"], images.shape[-1]).cpu()
    present = inferred["z_pres"].cpu()
    return draw_boxes(images.cpu(), boxes, present), draw_boxes(
        inferred["reconstruction"].cpu(), boxes, present
    )


BoxedPair = tuple[torch.Tensor, torch.Tensor]


def attention_grid(
    images: torch.Tensor, inferred: dict[str, torch.Tensor], pair: BoxedPair | None = None
) -> torch.Tensor:
    """Inputs (top row) and reconstructions (bottom row), both with the boxes of each step.
    ``pair``: ``boxed(images, inferred)`` when the caller already has it."""
    top, bottom = pair if pair is not None else boxed(images, inferred)
    return image_grid(torch.cat([top, bottom]), nrow=len(images))


def windows_grid(
    images: torch.Tensor, inferred: dict[str, torch.Tensor], top: torch.Tensor | None = None
) -> torch.Tensor:
    """One row per image: the input with its boxes, then the decoded window of every step, scaled to
    the canvas size and tinted with that step's box colour (dark when the step found no object).
    ``top``: the boxed inputs, ``boxed(images, inferred)[0]``, when the caller already has them."""
    if top is None:
        top, _ = boxed(images, inferred)
    windows = inferred["windows"].cpu().clamp(0, 1)  # [B, T, w, w]
    batch, steps = windows.shape[:2]
    size = images.shape[-1]
    scaled = F.interpolate(windows.reshape(batch * steps, 1, *windows.shape[-2:]), size=(size, size))
    scaled = scaled.view(batch, steps, 1, size, size)
    colours = STEP_COLOURS[torch.arange(steps) % len(STEP_COLOURS)].view(1, steps, 3, 1, 1)
    tiles = scaled * colours
    present = inferred["z_pres"].cpu().view(batch, steps, 1, 1, 1) > 0
    tiles = torch.where(present, tiles, torch.full_like(tiles, ABSENT_SHADE))
    rows = torch.cat([top.unsqueeze(1), tiles], 1)  # [B, 1 + T, 3, H, W]
    return image_grid(rows.flatten(0, 1), nrow=steps + 1)


@dataclass
class CountError:
    """One image whose inferred count is wrong, with what its picture needs."""

    severity: float  # |inferred - true|; ties keep the earliest image
    index: int
    true: int
    inferred: int
    image: torch.Tensor  # [1, H, W]
    reconstruction: torch.Tensor  # [1, H, W]
    z_where: torch.Tensor  # [T, 3]
    z_pres: torch.Tensor  # [T]


@dataclass
class WorstCountErrors:
    """Keeps the ``limit`` images whose inferred count is furthest from the true count."""

    limit: int = 16
    errors: list[CountError] = field(default_factory=list)
    seen: int = 0

    def add(self, images: torch.Tensor, true: torch.Tensor, inferred: dict[str, torch.Tensor]) -> None:
        """Keep the batch's miscounted images, indexed across batches, as the ``limit`` worst so far."""
        counts = inferred["count"].cpu()
        severity = (counts - true.cpu()).abs()
        for i in severity.nonzero().flatten().tolist():
            self.errors.append(
                CountError(
                    float(severity[i]),
                    self.seen + i,
                    int(true[i]),
                    int(counts[i]),
                    images[i].cpu(),
                    inferred["reconstruction"][i].cpu(),
                    inferred["z_where"][i].cpu(),
                    inferred["z_pres"][i].cpu(),
                )
            )
        self.seen += len(images)
        self.errors.sort(key=lambda e: (-e.severity, e.index))
        del self.errors[self.limit :]

    def figure(self, columns: int = 8) -> Figure | None:
        """Each error as its input (with boxes) above its reconstruction, titled true/inferred."""
        plt = pyplot()

        if not self.errors:
            return None
        images = torch.stack([e.image for e in self.errors])
        inferred = {
            "z_where": torch.stack([e.z_where for e in self.errors]),
            "z_pres": torch.stack([e.z_pres for e in self.errors]),
            "reconstruction": torch.stack([e.reconstruction for e in self.errors]),
        }
        top, bottom = boxed(images, inferred)
        columns = min(columns, len(self.errors))
        rows = -(-len(self.errors) // columns)
        fig, axes = plt.subplots(
            2 * rows, columns, figsize=(1.3 * columns, 2.7 * rows), dpi=100, squeeze=False
        )
        for ax in axes.flat:
            ax.axis("off")
        for k, error in enumerate(self.errors):
            row, col = 2 * (k // columns), k % columns
            axes[row, col].imshow(top[k].permute(1, 2, 0).numpy())
            axes[row, col].set_title(
                f"#{error.index}: true {error.true}, inferred {error.inferred}", fontsize=6
            )
            axes[row + 1, col].imshow(bottom[k].permute(1, 2, 0).numpy())
        fig.suptitle("worst count errors (input above reconstruction)", fontsize=8)
        fig.tight_layout()
        return fig
