"""Evaluation metrics (no training logic)."""

from __future__ import annotations

import torch


def count_accuracy(inferred: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of images whose inferred object count equals the true count."""
    if inferred.shape != true.shape:
        raise ValueError(
            f"inferred {tuple(inferred.shape)} and true {tuple(true.shape)} counts differ in shape"
        )
    return float((inferred == true).float().mean()) if len(true) else float("nan")


def count_confusion(inferred: torch.Tensor, true: torch.Tensor, max_count: int) -> torch.Tensor:
    """``[max_count + 1, max_count + 1]`` matrix: rows are true counts, columns inferred counts."""
    inferred = inferred.long().clamp(0, max_count).cpu()
    true = true.long().clamp(0, max_count).cpu()
    flat = true * (max_count + 1) + inferred
    return torch.bincount(flat, minlength=(max_count + 1) ** 2).view(max_count + 1, max_count + 1)
