"""The evaluation task's options (``eval.*``), checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from airlab.contracts.options import OneOf, Range


@dataclass(frozen=True)
class EvalSettings:
    """The ``eval.*`` options; their values (and defaults) are in configs/evaluate.yaml."""

    split: Annotated[str, OneOf(("test", "val"))]
    iwae_k: Annotated[int, Range(ge=1)]
    iwae_chunk: Annotated[int, Range(ge=1)]
    seed: Annotated[int, Range(ge=0)]
    device: Annotated[str, OneOf(("auto", "cpu", "cuda"))]
    progress: bool
    tsne: bool
    tsne_points: Annotated[int, Range(ge=4)]
    tsne_perplexity: Annotated[float, Range(gt=0)]
    pictures: bool
    num_images: Annotated[int, Range(ge=1)]
    traverse_dims: Annotated[int, Range(ge=1)]
    num_errors: Annotated[int, Range(ge=1)]
    picture_scale: Annotated[int, Range(ge=1)]
    tensorboard: bool
