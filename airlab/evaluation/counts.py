"""Object counts: the count accuracy and confusion (computed here only), and the collector that
evaluates a checkpoint's counts and count pictures over a split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from airlab.evaluation.air_pictures import WorstCountErrors, attention_grid, boxed, windows_grid
from airlab.utils.figures import confusion_figure, save_figure, save_grid, upscale

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def count_accuracy(inferred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Fraction of images whose inferred object count equals the true count (a 0-d tensor on the counts'
    device, nan for no images): ``val/count_accuracy``, ``test/count_accuracy`` and evaluate's."""
    if inferred.shape != true.shape:
        raise ValueError(
            f"inferred {tuple(inferred.shape)} and true {tuple(true.shape)} counts differ in shape"
        )
    if not len(true):
        return torch.tensor(float("nan"))
    return (inferred == true).float().mean()


def count_confusion(inferred: torch.Tensor, true: torch.Tensor, max_count: int) -> torch.Tensor:
    """``[max_count + 1, max_count + 1]`` matrix: rows are true counts, columns inferred counts."""
    inferred = inferred.long().clamp(0, max_count).cpu()
    true = true.long().clamp(0, max_count).cpu()
    flat = true * (max_count + 1) + inferred
    return torch.bincount(flat, minlength=(max_count + 1) ** 2).view(max_count + 1, max_count + 1)


class ObjectCounts:
    """Count accuracy, confusion and pictures from one guide draw per image (as ``val/count_accuracy``)."""

    def __init__(self, model: torch.nn.Module, num_images: int, num_errors: int) -> None:
        self.model, self.num_images = model, num_images
        self.inferred: list[torch.Tensor] = []
        self.true: list[torch.Tensor] = []
        self.errors = WorstCountErrors(num_errors)
        self.first: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        """Add one batch (one guide draw per image): counts, worst errors and the first images."""
        inferred = self.model.infer(batch["image"])
        self.inferred.append(inferred["count"].cpu())
        self.true.append(batch["count"].cpu())
        self.errors.add(batch["image"], batch["count"], inferred)
        if self.first is None:
            n = self.num_images
            self.first = (batch["image"][:n].cpu(), {k: v[:n].cpu() for k, v in inferred.items()})

    def results(self, split: str) -> tuple[dict[str, Any], torch.Tensor]:
        """``<split>/count_accuracy`` and ``<split>/count_confusion``, and the confusion matrix."""
        inferred, true = torch.cat(self.inferred), torch.cat(self.true)
        max_count = int(max(self.model.max_steps, int(true.max())))
        confusion = count_confusion(inferred, true, max_count)
        return {
            f"{split}/count_accuracy": float(count_accuracy(inferred, true)),
            f"{split}/count_confusion": confusion.tolist(),
        }, confusion

    def pictures(
        self,
        run_dir: Path,
        confusion: torch.Tensor,
        scale: int = 1,
        writers: Sequence[SummaryWriter] = (),
        tag: str = "",
        step: int = 0,
    ) -> dict[str, str]:
        """Save (and log to ``writers``) the count pictures under ``run_dir``; file names by kind."""
        files = {}
        if self.first is not None:
            images, inferred = self.first
            top, bottom = boxed(images, inferred)
            grids = {"attention": attention_grid(images, inferred, (top, bottom))}
            # A row per image: eight rows keep the picture readable.
            few = {k: v[:8] for k, v in inferred.items()}
            grids["windows"] = windows_grid(images[:8], few, top[:8])
            for name, grid in grids.items():
                grid = upscale(grid, scale)
                files[name] = save_grid(grid, run_dir / f"{name}.png")
                for writer in writers:
                    writer.add_image(f"{tag}/{name}", grid, step)
        fig = self.errors.figure()
        if fig is not None:
            files["count_errors"] = save_figure(fig, run_dir / "count_errors.png")
        files["count_confusion"] = save_figure(confusion_figure(confusion), run_dir / "count_confusion.png")
        return {name: path.name for name, path in files.items()}
