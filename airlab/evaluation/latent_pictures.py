"""The VAE's latent space in pictures: t-SNE of posterior means, traversals and interpolations.

Everything here needs a model that declares ``has_latent_space`` (``encode`` gives posterior means,
``decode`` images); callers skip models that do not (AIR).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from airlab.evaluation.progress import progress_bar
from airlab.evaluation.settings import EvalSettings
from airlab.utils.figures import image_grid, pyplot, reconstruction_grid, save_figure, save_grid, upscale

if TYPE_CHECKING:  # matplotlib is imported lazily, on first use
    from matplotlib.figure import Figure

TSNE_TAG = "val/latent_tsne"
PROJECTOR_TAG = "latent_means"


@dataclass
class Latents:
    """Posterior means ``[N, z]`` of ``N`` images, their labels ``[N]`` (or None) and the images."""

    means: torch.Tensor
    labels: torch.Tensor | None
    images: torch.Tensor


@torch.no_grad()
def collect_latents(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], max_points: int
) -> Latents:
    """The first ``max_points`` images of ``batches``, encoded to posterior means (on the CPU)."""
    device = next(model.parameters()).device
    means, labels, images, seen = [], [], [], 0
    for batch in batches:
        take = min(max_points - seen, len(batch["image"]))
        if take <= 0:
            break
        batch_images = batch["image"][:take]
        means.append(model.encode(batch_images.to(device)).cpu())
        images.append(batch_images.cpu())
        if "label" in batch:
            labels.append(batch["label"][:take].cpu())
        seen += take
    if not means:
        raise ValueError("no images to encode")
    return Latents(
        torch.cat(means), torch.cat(labels) if len(labels) == len(means) else None, torch.cat(images)
    )


def tsne_embedding(
    means: np.ndarray, seed: int = 0, perplexity: float = 30.0, threads: int = 1
) -> np.ndarray:
    """A 2-D t-SNE embedding ``[N, 2]`` of ``[N, z]`` points, deterministic for a fixed ``seed``.

    ``threads`` caps sklearn's OpenMP threads: its Barnes-Hut gradient busy-waits, so on a shared
    2-core machine two threads ran 4x slower than one (2000 points: 70 s against 16 s).
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(means)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    # sklearn requires perplexity < n; a third of n keeps small sets (smoke tests) meaningful.
    perplexity = min(perplexity, (n - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=threads)
    with threadpool_limits(threads):
        return tsne.fit_transform(np.asarray(means, dtype=np.float32))


def tsne_figure(
    embedding: np.ndarray, labels: np.ndarray | None, title: str = "t-SNE of posterior means"
) -> Figure:
    """Scatter plot coloured by digit class with tab10 (ten distinct colours) and a legend."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    cmap = plt.get_cmap("tab10")
    if labels is None:
        ax.scatter(embedding[:, 0], embedding[:, 1], s=6, color=cmap(0), alpha=0.8)
    else:
        for label in np.unique(labels):
            points = embedding[labels == label]
            ax.scatter(
                points[:, 0], points[:, 1], s=6, color=cmap(int(label) % 10), alpha=0.8, label=str(label)
            )
        ax.legend(title="digit", markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"{title} ({len(embedding)} images)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


@dataclass
class TSNEResult:
    """A t-SNE of the guide's latents (``embedding`` ``[N, 2]``), with the picture's path and the time."""

    embedding: np.ndarray  # [N, 2]
    labels: np.ndarray | None  # [N]
    latents: Latents
    path: Path | None
    seconds: float


def latent_tsne(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    num_points: int,
    seed: int = 0,
    perplexity: float = 30.0,
    output_path: str | Path | None = None,
    writers: Iterable = (),
    step: int = 0,
    progress: bool = True,
    tag: str = TSNE_TAG,
) -> TSNEResult:
    """Encode up to ``num_points`` images, embed them with t-SNE, save the PNG (when
    ``output_path``) and log it as ``val/latent_tsne`` plus the projector embedding to ``writers``."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    latents = collect_latents(model, batches, num_points)
    model.train(was_training)
    labels = latents.labels.numpy() if latents.labels is not None else None
    with progress_bar(f"t-SNE of {len(latents.means)} posterior means", None, enabled=progress):
        embedding = tsne_embedding(latents.means.numpy(), seed=seed, perplexity=perplexity)
    fig = tsne_figure(embedding, labels)
    for writer in writers:
        writer.add_figure(tag, fig, step, close=False)
        # The projector shows the means themselves (PCA or its own t-SNE), with digit sprites.
        writer.add_embedding(
            latents.means,
            metadata=[str(int(v)) for v in labels] if labels is not None else None,
            label_img=latents.images.clamp(0, 1),
            global_step=step,
            tag=PROJECTOR_TAG,
        )
    path = None
    if output_path is not None:
        path = save_figure(fig, output_path)
    else:
        pyplot().close(fig)
    return TSNEResult(embedding, labels, latents, path, time.perf_counter() - started)


# -- traversals and interpolations --------------------------------------------------------------


def most_active_dims(means: torch.Tensor, count: int) -> list[int]:
    """The latent dimensions whose posterior means vary most across images (the ones in use)."""
    spread = means.var(0) if len(means) > 1 else means.abs().squeeze(0)
    return spread.argsort(descending=True)[:count].tolist()


@torch.no_grad()
def latent_traversal(
    model: torch.nn.Module, z: torch.Tensor, dims: list[int], span: float = 3.0, steps: int = 9
) -> torch.Tensor:
    """A grid: one row per dimension in ``dims``; along the row that coordinate of ``z`` moves
    from ``-span`` to ``+span`` prior standard deviations around its value, the others stay."""
    offsets = torch.linspace(-span, span, steps, device=z.device)
    codes = z.reshape(1, 1, -1).repeat(len(dims), steps, 1)
    for row, dim in enumerate(dims):
        codes[row, :, dim] = z[dim] + offsets
    decoded = model.decode(codes.reshape(len(dims) * steps, -1))
    return image_grid(decoded, nrow=steps)


@torch.no_grad()
def interpolation_grid(
    model: torch.nn.Module, starts: torch.Tensor, ends: torch.Tensor, steps: int = 10
) -> torch.Tensor:
    """One row per pair: decoded points on the straight line from each start code to its end code."""
    weights = torch.linspace(0, 1, steps, device=starts.device).view(1, steps, 1)
    codes = starts.unsqueeze(1) * (1 - weights) + ends.unsqueeze(1) * weights  # [pairs, steps, z]
    decoded = model.decode(codes.reshape(-1, codes.shape[-1]))
    return image_grid(decoded, nrow=steps)


def interpolation_pairs(labels: torch.Tensor | None, num_pairs: int) -> list[tuple[int, int]]:
    """Index pairs of images of different digits, spread over the classes (the first image of each
    class, paired with the class half-way round); consecutive images when there are no labels."""
    if labels is None or len(labels.unique()) < 2:
        n = 0 if labels is None else len(labels)
        return [(2 * i, 2 * i + 1) for i in range(min(num_pairs, n // 2))]
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique()]
    n = len(firsts)
    pairs: list[tuple[int, int]] = []
    for k in range(n):
        pair = (firsts[k], firsts[(k + max(1, n // 2)) % n])
        if len(pairs) < num_pairs and set(pair) not in [set(p) for p in pairs]:
            pairs.append(pair)
    return pairs


def spread_indices(n: int, count: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(n)``: splits may be sorted by class."""
    return torch.linspace(0, n - 1, min(count, n)).round().long()


@torch.no_grad()
def latent_pictures(
    model: torch.nn.Module, latents: Latents, num_dims: int = 8, num_pairs: int = 6
) -> dict[str, torch.Tensor]:
    """``latent_traversal`` (around the first image's posterior mean, along the most active
    dimensions) and ``interpolation`` (between pairs of images of different digits) grids."""
    device = next(model.parameters()).device
    means = latents.means.to(device)
    dims = most_active_dims(latents.means, min(num_dims, means.shape[1]))
    pictures = {"latent_traversal": latent_traversal(model, means[0], dims)}
    pairs = interpolation_pairs(latents.labels, num_pairs)
    if pairs:
        starts = means[[i for i, _ in pairs]]
        ends = means[[j for _, j in pairs]]
        pictures["interpolation"] = interpolation_grid(model, starts, ends)
    return pictures


def latent_space_pictures(
    model: torch.nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    settings: EvalSettings,
    run_dir: Path,
    split: str,
    writers: Sequence[Any],
    step: int,
) -> tuple[dict[str, str], TSNEResult | None]:
    """A checkpoint's latent space: t-SNE, traversal, interpolation, reconstructions and prior samples,
    saved under ``run_dir`` and logged to ``writers`` at ``settings.picture_scale``; (files, t-SNE)."""
    files: dict[str, str] = {}
    scale = settings.picture_scale
    result = None
    if settings.tsne:
        result = latent_tsne(
            model,
            loader,
            settings.tsne_points,
            seed=settings.seed,
            perplexity=settings.tsne_perplexity,
            output_path=run_dir / "latent_tsne.png",
            writers=writers,
            step=step,
            progress=settings.progress,
            tag=f"{split}/latent_tsne",
        )
        files["latent_tsne"] = result.path.name
    if settings.pictures:
        latents = result.latents if result is not None else collect_latents(model, loader, 512)
        with torch.no_grad():
            grids = latent_pictures(model, latents, num_dims=settings.traverse_dims)
            chosen = spread_indices(len(latents.images), settings.num_images)
            inputs = latents.images[chosen].to(next(model.parameters()).device)
            grids["reconstructions"] = reconstruction_grid(inputs, model.reconstruct(inputs))
            grids["samples"] = image_grid(model.sample(settings.num_images))
        for name, grid in grids.items():
            grid = upscale(grid, scale)
            files[name] = save_grid(grid, run_dir / f"{name}.png").name
            for writer in writers:
                writer.add_image(f"{split}/{name}", grid, step)
    return files, result
