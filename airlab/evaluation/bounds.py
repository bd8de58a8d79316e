"""Per-image ELBO and importance-weighted (IWAE) bounds for evaluation, batched over particles.

Particles are drawn by tiling the batch: ``P`` particles of ``B`` images run as one batch of
``P * B`` rows through the guide and the model. That works for any model whose latents all sit in
the ``data`` plate (one set per image, no global latents), which holds for the VAE and AIR, and it
needs no support for vectorised particles in the model (AIR has none). ``K`` particles run
``chunk`` at a time and the chunks are combined with a running log-sum-exp, so memory grows with
the chunk, not with ``K``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from airlab.contracts.estimator import DATA_PLATE
from airlab.evaluation.progress import progress_bar


def per_image_log_prob(trace: poutine.Trace, batch_size: int) -> torch.Tensor:
    """The log-density of a trace's sample sites summed per image of the ``data`` plate: ``[B]``."""
    trace = prune_subsample_sites(trace)
    trace.compute_log_prob()
    total = torch.zeros(batch_size)
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        frame = next((f for f in site["cond_indep_stack"] if f.name == DATA_PLATE), None)
        if frame is None or frame.dim is None:
            # A global latent would be shared by the tiled copies of an image: the tiling is wrong.
            raise ValueError(f"sample site {name!r} lies outside the {DATA_PLATE!r} plate")
        log_prob = site["log_prob"]
        total = total.to(log_prob) + log_prob.movedim(frame.dim, 0).reshape(batch_size, -1).sum(-1)
    return total


@torch.no_grad()
def log_weights(model_fn: Callable, guide_fn: Callable, *inputs: torch.Tensor) -> torch.Tensor:
    """``log p(x, z) - log q(z | x)`` for one guide draw per item of the batch ``inputs``: ``[B]``."""
    guide_trace = poutine.trace(guide_fn).get_trace(*inputs)
    model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(*inputs)
    batch = inputs[0].shape[0]
    return per_image_log_prob(model_trace, batch) - per_image_log_prob(guide_trace, batch)


@torch.no_grad()
def particle_log_weights(
    model_fn: Callable, guide_fn: Callable, inputs: tuple[torch.Tensor, ...], num_particles: int
) -> torch.Tensor:
    """``[P, B]`` log-weights: ``P`` independent guide draws for each of the ``B`` items of ``inputs``."""
    batch = inputs[0].shape[0]
    tiled = [x.repeat(num_particles, *([1] * (x.dim() - 1))) for x in inputs]  # particle-major rows
    return log_weights(model_fn, guide_fn, *tiled).view(num_particles, batch)


class LogMeanExp:
    """Accumulates ``log mean_k exp(log_w_k)`` over chunks of particles, and their plain mean."""

    def __init__(self) -> None:
        self.log_sum_exp: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, log_w: torch.Tensor) -> None:
        """``log_w``: ``[P, B]`` for one chunk of ``P`` particles."""
        chunk_lse = torch.logsumexp(log_w, 0)
        chunk_sum = log_w.sum(0)
        if self.log_sum_exp is None:
            self.log_sum_exp, self.total = chunk_lse, chunk_sum
        else:
            self.log_sum_exp = torch.logaddexp(self.log_sum_exp, chunk_lse)
            self.total = self.total + chunk_sum
        self.count += log_w.shape[0]

    def log_mean_exp(self) -> torch.Tensor:
        """``log mean_k exp(log_w_k)`` per image ``[B]``: the IWAE bound."""
        return self.log_sum_exp - math.log(self.count)

    def mean(self) -> torch.Tensor:
        """The mean log-weight per image ``[B]``: the K-sample ELBO estimate."""
        return self.total / self.count


@dataclass
class ImageBounds:
    """Per-image bounds, nats: ``elbo`` is the mean of the K log-weights (an unbiased ELBO estimate
    with K samples), ``iwae`` the log of their mean weight (the IWAE bound). ``iwae >= elbo`` for
    every image by Jensen's inequality, since both come from the same draws."""

    elbo: torch.Tensor
    iwae: torch.Tensor


@torch.no_grad()
def image_bounds(
    model_fn: Callable, guide_fn: Callable, inputs: tuple[torch.Tensor, ...], num_particles: int, chunk: int
) -> ImageBounds:
    """ELBO and IWAE bounds per item of the batch ``inputs`` from ``num_particles`` guide draws,
    ``chunk`` particles at a time."""
    accumulator = LogMeanExp()
    done = 0
    while done < num_particles:
        size = min(chunk, num_particles - done)
        accumulator.add(particle_log_weights(model_fn, guide_fn, inputs, size))
        done += size
    return ImageBounds(elbo=accumulator.mean(), iwae=accumulator.log_mean_exp())


def summarise(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean (``std / sqrt(n)``, ``nan`` for fewer than two values)."""
    values = values.double()
    mean = float(values.mean())
    sem = float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return mean, sem


@torch.no_grad()
def dataset_bounds(
    model_fn: Callable,
    guide_fn: Callable,
    batches: Iterable[dict[str, torch.Tensor]],
    num_particles: int,
    chunk: int,
    device: torch.device | str = "cpu",
    total: int | None = None,
    progress: bool = True,
    on_batch: Callable[[dict[str, torch.Tensor]], None] | None = None,
    inputs: Sequence[str] = ("image",),
) -> ImageBounds:
    """Per-image bounds over every batch, in order; ``on_batch`` sees each batch (already on
    ``device``) for model-specific metrics computed in the same pass over the data. ``inputs``: the
    batch keys the model takes (``GenerativeModel.inputs``)."""
    elbos, iwaes = [], []
    description = f"ELBO and IWAE bound (K={num_particles})"
    with progress_bar(description, total, enabled=progress) as advance:
        for batch in batches:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            args = tuple(batch[key] for key in inputs)
            bounds = image_bounds(model_fn, guide_fn, args, num_particles, chunk)
            elbos.append(bounds.elbo.cpu())
            iwaes.append(bounds.iwae.cpu())
            if on_batch is not None:
                on_batch(batch)
            advance()
    if not elbos:
        raise ValueError("no images to evaluate")
    return ImageBounds(elbo=torch.cat(elbos), iwae=torch.cat(iwaes))
