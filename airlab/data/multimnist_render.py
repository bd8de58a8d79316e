"""The MultiMNIST canvas generator: random counts, scales and positions, rendered in one batch.

Every digit is a 28x28 MNIST image shrunk by ``s ~ N(scale_mean, scale_sd)`` to a ``28/s`` pixel
window placed uniformly at random fully inside the canvas. All digits of a chunk of canvases are
resampled at once, bilinearly with ``align_corners=False`` semantics (coordinates refer to pixel
edges, as in :mod:`airlab.utils.spatial`), and summed per canvas.

A box ``(x_min, y_min, x_max, y_max)`` is in pixel-edge units: the canvas spans ``[0, image_size]``.
The matrix that places the box is AIR's ``[[s', 0, x'], [0, s', y']]`` with ``s' = image_size / w``,
so ``airlab.utils.spatial.where_to_box`` maps it back to the same box.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from airlab.errors import ConfigError, DataError

DIGIT_SIZE = 28
OVERLAP_POLICIES = ("redraw", "clip")
CHUNK = 2048  # canvases rendered together: about 100 MB of grids and outputs
MAX_REDRAWS = 1000


@dataclass(frozen=True)
class CanvasParams:
    """What shapes a canvas; the values (and their defaults) come from MultiMNISTDataModule's options."""

    image_size: int
    max_digits: int
    scale_mean: float
    scale_sd: float
    overlap: str


@dataclass
class MultiMNISTArrays:
    """One split's canvases and their ground truth, slots ordered as placed.

    ``images`` uint8 ``[N, H, W]``; ``count`` int64 ``[N]``; ``digits`` int64 ``[N, K]`` labels and
    ``source_index`` int64 ``[N, K]`` rows of the source digit array (both -1 padded); ``boxes`` float32
    ``[N, K, 4]`` (NaN padded).
    """

    images: np.ndarray
    count: np.ndarray
    digits: np.ndarray
    boxes: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def box_theta(boxes: torch.Tensor, image_size: int) -> torch.Tensor:
    """``[n, 4]`` pixel boxes -> ``[n, 2, 3]`` affine matrices mapping canvas to window coordinates."""
    x_min, y_min, x_max, _ = boxes.unbind(-1)
    width = x_max - x_min
    scale = image_size / width
    shift_x = (image_size - 2 * x_min) / width - 1
    shift_y = (image_size - 2 * y_min) / width - 1
    zeros = torch.zeros_like(scale)
    return torch.stack([scale, zeros, shift_x, zeros, scale, shift_y], -1).view(-1, 2, 3)


def _axis_weights(low: torch.Tensor, width: torch.Tensor, image_size: int) -> torch.Tensor:
    """``[n, image_size, 28]`` bilinear weights from the 28 source pixels to each canvas pixel on one axis.

    Canvas pixel ``j`` (centre ``j + 0.5``) reads the source at ``t = (j + 0.5 - low) * 28 / width - 0.5``
    in source pixel units: ``grid_sample``'s mapping with ``align_corners=False``. Its two taps
    ``floor(t)`` and ``floor(t) + 1`` get weights ``1 - frac(t)`` and ``frac(t)``; taps beyond the border
    read zeros, as with ``padding_mode="zeros"``.
    """
    centres = torch.arange(image_size, dtype=torch.float32) + 0.5
    source = (centres[None, :] - low[:, None]) * (DIGIT_SIZE / width[:, None]) - 0.5
    # Taps far outside the digit are parked in the two padding columns that are cut off below.
    floor = source.floor().clamp_(-1, DIGIT_SIZE)
    frac = (source - floor).clamp_(0, 1)
    tap = (floor + 1).long()
    weights = torch.zeros(len(low), image_size, DIGIT_SIZE + 3)
    weights.scatter_(2, tap[..., None], (1 - frac)[..., None])
    weights.scatter_add_(2, tap[..., None] + 1, frac[..., None])
    return weights[..., 1 : DIGIT_SIZE + 1]


def render_digits(sources: torch.Tensor, boxes: torch.Tensor, image_size: int) -> torch.Tensor:
    """Place ``[n, 28, 28]`` digits into their boxes on empty canvases: float ``[n, H, W]`` in [0, 255].

    The same pixels as ``F.grid_sample(digit, F.affine_grid(box_theta(boxes), ...), align_corners=False)``
    (a test checks this), computed as ``rows @ digit @ cols.T``: an axis-aligned bilinear resampling is
    separable, and two small batched matmuls are ~20x faster on the CPU than building a sampling grid.
    """
    if len(sources) == 0:
        return torch.zeros(0, image_size, image_size)
    boxes = boxes.float()
    width = boxes[:, 2] - boxes[:, 0]
    rows = _axis_weights(boxes[:, 1], width, image_size)
    cols = _axis_weights(boxes[:, 0], width, image_size)
    return rows @ sources.float() @ cols.transpose(1, 2)


def render_canvases(
    digit_images: torch.Tensor, source_index: np.ndarray, boxes: np.ndarray, image_size: int
) -> torch.Tensor:
    """Unclipped float sums ``[N, H, W]`` of the digits that ``source_index``/``boxes`` describe."""
    canvas = torch.zeros(len(source_index), image_size, image_size)
    index, boxes = torch.from_numpy(source_index), torch.from_numpy(boxes)
    # One batch per slot, added slot by slot: the same order of additions whatever the chunking.
    for slot in range(source_index.shape[1]):
        present = (index[:, slot] >= 0).nonzero().squeeze(1)
        if len(present):
            canvas[present] += render_digits(
                digit_images[index[present, slot]], boxes[present, slot], image_size
            )
    return canvas


def _draw_scales(rng: np.random.Generator, shape: tuple[int, ...], params: CanvasParams) -> np.ndarray:
    """N(scale_mean, scale_sd) truncated so that a digit fits the canvas and stays at least 2 px wide."""
    low, high = DIGIT_SIZE / params.image_size, DIGIT_SIZE / 2.0
    scales = rng.normal(params.scale_mean, params.scale_sd, size=shape)
    for _ in range(100):
        bad = (scales < low) | (scales > high)
        if not bad.any():
            break
        scales[bad] = rng.normal(params.scale_mean, params.scale_sd, size=int(bad.sum()))
    return np.clip(scales, low, high)


def _draw_slots(
    rng: np.random.Generator, count: np.ndarray, num_sources: int, params: CanvasParams
) -> tuple[np.ndarray, np.ndarray]:
    """Source rows and boxes for ``len(count)`` canvases; slots past a canvas's count are padding."""
    shape = (len(count), params.max_digits)
    index = rng.integers(0, num_sources, size=shape)
    width = DIGIT_SIZE / _draw_scales(rng, shape, params)
    corner = rng.random(size=shape + (2,)) * (params.image_size - width)[..., None]
    boxes = np.concatenate([corner, corner + width[..., None]], -1).astype(np.float32)
    absent = np.arange(params.max_digits)[None, :] >= count[:, None]
    index[absent] = -1
    boxes[absent] = np.nan
    return index, boxes


def _check(params: CanvasParams, num_sources: int) -> None:
    if params.overlap not in OVERLAP_POLICIES:
        raise ConfigError("data.overlap", f"{params.overlap!r} is not valid; choose one of: redraw, clip")
    if params.scale_mean * params.image_size < DIGIT_SIZE:
        raise ConfigError(
            "data.scale_mean",
            f"{params.scale_mean:g} makes digits {DIGIT_SIZE / params.scale_mean:.1f} px wide, more than the "
            f"{params.image_size} px canvas; need scale_mean >= {DIGIT_SIZE / params.image_size:.3g}",
        )
    if num_sources == 0:
        raise DataError("MultiMNIST: the MNIST split that feeds this canvas split holds no digits")


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Generation is thousands of small tensor ops. With a thread pool each op waits at a barrier for
    every thread, which on a busy machine means waiting for a descheduled one: on 2 shared cores this
    measured 0.4 s with one thread against 5 s with two for 3,000 canvases (and 4 s against 2.3 s for
    60,000 canvases on an idle machine), so one thread is the robust choice."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generate_canvases(
    digit_images: torch.Tensor,
    digit_labels: torch.Tensor,
    num_images: int,
    params: CanvasParams,
    seed: np.random.SeedSequence | int,
    progress: Callable[[int], None] | None = None,
) -> MultiMNISTArrays:
    """``num_images`` canvases from uint8 ``[M, 28, 28]`` digits; deterministic from ``seed``.

    Counts are uniform on 0..max_digits. With ``overlap="redraw"`` a canvas whose summed pixels exceed
    255 keeps its count and gets new digits, scales and positions until it fits, so the count
    distribution stays uniform. ``progress`` is called with the number of canvases finished per chunk.
    """
    _check(params, len(digit_images))
    with _one_torch_thread():
        return _generate(
            digit_images, digit_labels, num_images, params, np.random.default_rng(seed), progress
        )


def _generate(
    digit_images: torch.Tensor,
    digit_labels: torch.Tensor,
    num_images: int,
    params: CanvasParams,
    rng: np.random.Generator,
    progress: Callable[[int], None] | None,
) -> MultiMNISTArrays:
    size, slots = params.image_size, params.max_digits
    images = np.empty((num_images, size, size), dtype=np.uint8)
    count = rng.integers(0, slots + 1, size=num_images)
    index = np.empty((num_images, slots), dtype=np.int64)
    boxes = np.empty((num_images, slots, 4), dtype=np.float32)
    for start in range(0, num_images, CHUNK):
        part = slice(start, min(start + CHUNK, num_images))
        chunk_index, chunk_boxes = _draw_slots(rng, count[part], len(digit_images), params)
        canvas = render_canvases(digit_images, chunk_index, chunk_boxes, size)
        if params.overlap == "redraw":
            todo = np.arange(len(canvas))
            for _ in range(MAX_REDRAWS):
                # A sum that rounds to at most 255 loses nothing when stored as uint8.
                peak = canvas[torch.from_numpy(todo)].flatten(1).amax(1)
                todo = todo[(peak >= 255.5).numpy()]
                if not len(todo):
                    break
                new_index, new_boxes = _draw_slots(rng, count[part][todo], len(digit_images), params)
                chunk_index[todo], chunk_boxes[todo] = new_index, new_boxes
                canvas[torch.from_numpy(todo)] = render_canvases(digit_images, new_index, new_boxes, size)
            else:
                raise DataError(
                    f"data.overlap=redraw: {len(todo)} canvases still overlap after {MAX_REDRAWS} "
                    "redraws; use fewer data.max_digits, a larger data.image_size or data.overlap=clip"
                )
        images[part] = canvas.clamp_(0, 255).round_().to(torch.uint8).numpy()
        index[part], boxes[part] = chunk_index, chunk_boxes
        if progress is not None:
            progress(part.stop - part.start)
    labels = digit_labels.numpy()[np.maximum(index, 0)]
    labels[index < 0] = -1
    return MultiMNISTArrays(images, count.astype(np.int64), labels.astype(np.int64), boxes, index)
