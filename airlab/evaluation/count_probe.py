"""What a model's posterior knows about the number of objects: AIR infers the count, a VAE does not, but
its posterior mean may still encode it. A linear probe (multinomial logistic regression on standardised
posterior means) measures how much of the count a linear read-out can recover."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

Batches = Iterable[Mapping[str, torch.Tensor]]


@torch.no_grad()
def collect(
    batches: Batches, read: Callable[[torch.Tensor], torch.Tensor], limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``read(images)`` for each batch and the batches' true ``count``, concatenated, up to ``limit``
    items (all when None)."""
    values, counts, seen = [], [], 0
    for batch in batches:
        values.append(read(batch["image"]).cpu())
        counts.append(batch["count"].cpu())
        seen += len(batch["count"])
        if limit is not None and seen >= limit:
            break
    return torch.cat(values)[:limit], torch.cat(counts)[:limit]


def linear_count_probe(
    train_features: torch.Tensor,
    train_counts: torch.Tensor,
    test_features: torch.Tensor,
    test_counts: torch.Tensor,
    seed: int = 0,
) -> dict[str, float]:
    """Fit multinomial logistic regression of the count on standardised features ``[N, z]``; its
    accuracy on the training items and on the test items."""
    if len(torch.unique(train_counts)) < 2:
        raise ValueError("the probe needs training items of at least two different counts")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    probe.fit(train_features.double().numpy(), train_counts.numpy())
    return {
        "train_accuracy": float(probe.score(train_features.double().numpy(), train_counts.numpy())),
        "test_accuracy": float(probe.score(test_features.double().numpy(), test_counts.numpy())),
    }


def majority_accuracy(train_counts: torch.Tensor, test_counts: torch.Tensor) -> float:
    """The test accuracy of always answering the most frequent training count: the floor of any probe."""
    values, frequency = np.unique(train_counts.numpy(), return_counts=True)
    return float((test_counts.numpy() == values[frequency.argmax()]).mean())
