"""Evaluation bounds (ELBO, IWAE with chunked particles), t-SNE, and AIR's evaluation pictures.

Models here are small and untrained, with fixed seeds: an untrained guide is a poor proposal, so
the IWAE bound's gain over the ELBO is several nats and easy to see.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch

from airlab.data.mnist import MNISTDataModule
from airlab.estimators import elbo_estimate
from airlab.evaluation.bounds import (
    LogMeanExp,
    dataset_bounds,
    image_bounds,
    particle_log_weights,
    summarise,
)
from airlab.evaluation.latent_pictures import latent_pictures, latent_tsne, most_active_dims
from airlab.models.vae import VAE


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    dm = MNISTDataModule(source="bundled", eval_batch_size=32)
    return next(iter(dm.dataloader("test")))  # 32 real digits of three classes


@pytest.fixture
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(z_dim=5, hidden_dim=32)


def test_iwae_bound_is_above_the_elbo_and_rises_with_k(vae, digits):
    images = digits["image"]
    pyro.set_rng_seed(0)
    means = {
        k: float(image_bounds(vae.model, vae.guide, (images,), k, chunk=100).iwae.mean()) for k in (1, 5, 50)
    }
    # K=1 is the ELBO itself; each tenfold K gains well over a nat per image here (measured: about 6,
    # then about 1); 0.2 nats leaves room for Monte Carlo noise across torch versions.
    assert means[5] > means[1] + 0.2 and means[50] > means[5] + 0.2, means
    # The single-sample ELBO of the training loop, on the same batch, lies below the IWAE bound.
    # Its noise over 32 images is about 2 nats (sd); the measured gap to IWAE(50) is about 7.
    elbo = float(elbo_estimate(vae.model, vae.guide, images)) / len(images)
    assert elbo <= means[50] + 1.0, (elbo, means)


def test_the_elbo_and_iwae_of_the_same_draws_obey_jensen(vae, digits):
    pyro.set_rng_seed(1)
    bounds = image_bounds(vae.model, vae.guide, (digits["image"],), 20, chunk=6)
    assert bounds.elbo.shape == bounds.iwae.shape == (32,)
    assert bool((bounds.iwae >= bounds.elbo - 1e-4).all())  # log mean exp >= mean, per image


def test_chunks_combine_exactly_into_the_unchunked_bound():
    log_w = torch.randn(103, 7, generator=torch.Generator().manual_seed(0)) * 30 - 500
    accumulator = LogMeanExp()
    for part in log_w.split(10):  # ten chunks of 10 and a ragged one of 3
        accumulator.add(part)
    assert accumulator.count == 103
    expected = torch.logsumexp(log_w, 0) - math.log(103)
    assert torch.allclose(accumulator.log_mean_exp(), expected, atol=1e-4)
    assert torch.allclose(accumulator.mean(), log_w.mean(0), atol=1e-4)


def test_k_larger_than_the_chunk_agrees_with_one_chunk(vae, digits):
    images = digits["image"]
    pyro.set_rng_seed(2)
    chunked = image_bounds(
        vae.model, vae.guide, (images,), 200, chunk=16
    ).iwae  # 12 chunks of 16 and one of 8
    whole = image_bounds(vae.model, vae.guide, (images,), 200, chunk=200).iwae
    # Different draws: measured differences were at most 0.8 nats per image and 0.05 on the mean.
    assert (chunked - whole).abs().max() < 3.0
    assert abs(float((chunked - whole).mean())) < 0.3


def test_particles_are_independent_draws_for_each_image(vae, digits):
    images = digits["image"][:4]
    pyro.set_rng_seed(3)
    log_w = particle_log_weights(vae.model, vae.guide, (images,), 6)
    assert log_w.shape == (6, 4)
    assert log_w.std(0).min() > 0  # each image got six different draws
    alone = torch.stack(
        [particle_log_weights(vae.model, vae.guide, (images[i : i + 1],), 200)[:, 0] for i in range(2)]
    )
    both = particle_log_weights(vae.model, vae.guide, (images[:2],), 200).T
    # Tiling keeps images apart: image i's weights have the same distribution alone or batched
    # (means within 5 standard errors of their difference).
    standard_error = torch.sqrt(alone.var(1) / 200 + both.var(1) / 200)
    assert bool(((alone.mean(1) - both.mean(1)).abs() < 5 * standard_error).all())


def test_dataset_bounds_cover_every_image_and_summarise(vae, digits):
    batches = [{k: v[:20] for k, v in digits.items()}, {k: v[20:] for k, v in digits.items()}]
    seen = []
    bounds = dataset_bounds(vae.model, vae.guide, batches, 4, 3, progress=False, on_batch=seen.append)
    assert bounds.elbo.shape == (32,) and len(seen) == 2
    mean, sem = summarise(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and sem == pytest.approx(math.sqrt(5 / 3) / 2)


# -- t-SNE and latent pictures --------------------------------------------------------------------


def test_tsne_has_one_point_per_input_and_a_png(vae, digits, tmp_path):
    batches = [{k: v[:16] for k, v in digits.items()}, {k: v[16:] for k, v in digits.items()}]
    result = latent_tsne(vae, batches, num_points=30, seed=0, output_path=tmp_path / "t.png", progress=False)
    assert result.embedding.shape == (30, 2) and np.isfinite(result.embedding).all()
    assert result.labels.tolist() == digits["label"][:30].tolist()
    assert (tmp_path / "t.png").stat().st_size > 5000
    again = latent_tsne(vae, batches, num_points=30, seed=0, progress=False)
    assert np.allclose(result.embedding, again.embedding)  # fixed random_state


def test_traversal_and_interpolation_grids(vae, digits):
    from airlab.evaluation.latent_pictures import collect_latents

    latents = collect_latents(vae, [digits], 32)
    assert latents.means.shape == (32, 5)
    dims = most_active_dims(latents.means, 3)
    assert len(set(dims)) == 3 and latents.means.var(0)[dims[0]] == latents.means.var(0).max()
    grids = latent_pictures(vae, latents, num_dims=3, num_pairs=2)
    # 3 rows of 9 traversal steps; 2 interpolation rows of 10 steps (28 px digits, 2 px padding).
    assert grids["latent_traversal"].shape == (3, 3 * 30 + 2, 9 * 30 + 2)
    assert grids["interpolation"].shape == (3, 2 * 30 + 2, 10 * 30 + 2)


# -- AIR's evaluation pieces on a hand-made batch ------------------------------------------------


def test_air_pictures_and_worst_errors_on_a_hand_made_batch(tmp_path):
    from airlab.evaluation.air_pictures import WorstCountErrors, attention_grid, windows_grid
    from airlab.models.air import AIR
    from airlab.utils.figures import save_figure
    from tests.models.test_air import SMALL

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    air = AIR(**{**SMALL, "z_pres_prior": 0.5})
    images = torch.rand(6, 1, 50, 50) * 0.2
    inferred = air.infer(images)
    assert attention_grid(images, inferred).shape == (3, 2 * 52 + 2, 6 * 52 + 2)
    assert windows_grid(images, inferred).shape == (3, 6 * 52 + 2, 4 * 52 + 2)  # input + 3 steps
    errors = WorstCountErrors(limit=3)
    # Set counts: |inferred - true| = 0, 2, 1, 3, 0, 2. The worst three, ties by index: 3, 1, 5.
    inferred = {**inferred, "count": torch.tensor([0, 1, 2, 3, 1, 0])}
    errors.add(images, torch.tensor([0, 3, 1, 0, 1, 2]), inferred)
    kept = [(e.index, e.severity, e.true, e.inferred) for e in errors.errors]
    assert kept == [(3, 3.0, 0, 3), (1, 2.0, 3, 1), (5, 2.0, 2, 0)]
    assert torch.equal(errors.errors[0].image, images[3]) and errors.seen == 6
    assert save_figure(errors.figure(), tmp_path / "errors.png").stat().st_size > 1000
    bounds = image_bounds(air.model, air.guide, (images,), 10, chunk=4)
    assert bounds.iwae.shape == (6,) and bool((bounds.iwae >= bounds.elbo - 1e-3).all())


def test_interpolation_pairs_join_different_digits_across_the_classes():
    from airlab.evaluation.latent_pictures import interpolation_pairs, spread_indices

    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3])
    pairs = interpolation_pairs(labels, 6)
    assert pairs == [(0, 4), (2, 5)]  # first 0 with first 2, first 1 with first 3
    assert all(labels[i] != labels[j] for i, j in pairs)
    assert interpolation_pairs(None, 3) == [] and interpolation_pairs(torch.zeros(5), 2) == [(0, 1), (2, 3)]
    assert spread_indices(500, 5).tolist() == [0, 125, 250, 374, 499]
