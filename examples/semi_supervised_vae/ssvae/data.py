"""MNIST with a few labelled training digits: the others keep their pixels and lose their label (-1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch

from airlab import Range
from airlab.data.in_memory import BatchedTensorDataset
from airlab.data.mnist import MNISTDataModule


class FewLabelsMNIST(MNISTDataModule):
    """``num_labelled`` training digits keep their label, as many of each class, chosen by
    ``label_seed``; ``unlabelled=drop`` trains on those alone. Validation and test digits keep theirs."""

    def __init__(
        self,
        num_labelled: Annotated[int, Range(ge=0)] = 300,
        label_seed: Annotated[int, Range(ge=0)] = 0,
        unlabelled: Literal["keep", "drop"] = "keep",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_labelled = num_labelled
        self.label_seed = label_seed
        self.unlabelled = unlabelled

    def labelled_rows(self, labels: torch.Tensor) -> torch.Tensor:
        """``num_labelled // 10`` random rows of each class (fewer where a class has fewer)."""
        generator = torch.Generator().manual_seed(self.label_seed)
        per_class = self.num_labelled // 10
        rows = []
        for digit in range(10):
            index = (labels == digit).nonzero().squeeze(1)
            rows.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
        return torch.cat(rows).sort().values

    def make_dataset(self, split: str) -> BatchedTensorDataset:
        """As MNIST's, with the unlabelled training digits' labels set to -1 (or dropped)."""
        dataset = super().make_dataset(split)
        if split != "train":
            return dataset
        labels = dataset.annotations["label"]
        keep = self.labelled_rows(labels)
        if self.unlabelled == "drop":
            return BatchedTensorDataset(dataset.images[keep], {"label": labels[keep]}, dataset.binarize)
        hidden = torch.full_like(labels, -1)
        hidden[keep] = labels[keep]
        return BatchedTensorDataset(dataset.images, {"label": hidden}, dataset.binarize)
