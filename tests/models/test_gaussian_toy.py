"""Rainforth et al.'s linear-Gaussian toy: its optimum, its exact evidence, and a guide whose IWAE bound
is exact when its spread is the posterior's."""

from __future__ import annotations

import math

import pytest
import torch

from airlab.data.toy_vectors import GaussianToyDataModule
from airlab.estimators import IWAEEstimator, TraceEstimator
from airlab.models.gaussian_toy import GaussianToy


def toy_and_data(**options) -> tuple[GaussianToy, torch.Tensor]:
    data = GaussianToyDataModule(num_points=64, dim=5, seed=0)
    data.setup()
    x = data.datasets["train"].tensors["x"]
    torch.manual_seed(0)
    model = GaussianToy(data_shape=(5,), **options)
    model.initialise_from_data(x)
    return model, x


def test_unperturbed_start_is_the_optimum():
    model, x = toy_and_data(perturbation=0.0)
    assert torch.allclose(model.mu, x.mean(0))
    assert torch.allclose(model.A, torch.eye(5) / 2)
    assert torch.allclose(model.b, x.mean(0) / 2)
    # the guide's mean is then the exact posterior mean (x + mu) / 2
    assert torch.allclose(x @ model.A.T + model.b, (x + model.mu) / 2, atol=1e-6)


def test_perturbation_moves_every_entry_by_about_its_scale():
    exact, _ = toy_and_data(perturbation=0.0)
    moved, _ = toy_and_data(perturbation=0.01)
    again, _ = toy_and_data(perturbation=0.01)
    for name in ("mu", "A", "b"):
        shift = getattr(moved, name) - getattr(exact, name)
        assert 0.003 < float(shift.detach().std()) < 0.03, name
        assert torch.equal(getattr(moved, name), getattr(again, name))  # the same seed, the same point


def test_bounds_are_exact_with_the_posterior_spread():
    # With q = the exact posterior N((x + mu) / 2, I / 2) every importance weight equals p(x): the ELBO
    # and the IWAE bound both equal log p(x), whatever the draw.
    model, x = toy_and_data(perturbation=0.0, encoder_variance=0.5)
    log_px = float(model.log_likelihood(x).sum())
    expected = torch.distributions.Normal(x.mean(0), math.sqrt(2.0)).log_prob(x).sum()
    assert log_px == pytest.approx(float(expected), rel=1e-6)
    for estimator in (TraceEstimator(), IWAEEstimator(num_particles=7, vectorize_particles=True)):
        estimator.bind(model)
        loss = float(estimator(model.model, model.guide, x).loss)
        assert loss == pytest.approx(-log_px, rel=1e-5), type(estimator).__name__


def test_a_wider_guide_gives_a_bound_below_the_evidence():
    model, x = toy_and_data(perturbation=0.0)  # variance 2/3 against the posterior's 1/2
    estimator = TraceEstimator(num_particles=200, vectorize_particles=True)
    estimator.bind(model)
    elbo = -float(estimator(model.model, model.guide, x).loss)
    log_px = float(model.log_likelihood(x).sum())
    # KL(N(m, 2/3) || N(m, 1/2)) per dimension = (log(3/4) + 4/3 - 1) / 2 = 0.0228
    gap = 64 * 5 * 0.5 * (math.log(0.75) + 4 / 3 - 1)
    assert log_px - elbo == pytest.approx(gap, rel=0.05)


def test_evaluate_reports_the_exact_evidence():
    model, x = toy_and_data()
    metrics, _ = model.evaluate({"x": x})
    assert float(metrics["log_likelihood"]) == pytest.approx(float(model.log_likelihood(x).mean()))
    with pytest.raises(ValueError, match="vectors"):
        GaussianToy(data_shape=(1, 28, 28))
