"""The variance tool on Rainforth et al.'s linear-Gaussian toy (report=snr_gaussian_toy), scaled down:
the IWAE gradient's per-dimension SNR falls with K for the encoder's b and rises for the decoder's mu,
and at the exact optimum, where every true gradient is zero, it reads its noise floor sqrt(2/pi)/sqrt(n).
The paper-sized run (10^4 draws, K up to 1000) is in docs/results.md; a reduced one is marked slow."""

from __future__ import annotations

import json
import math

import pytest
import torch

from airlab.data.toy_vectors import GaussianToyDataModule
from airlab.estimators import IWAEEstimator
from airlab.models.gaussian_toy import GaussianToy
from airlab.tasks.variance_report import run_variance_report
from airlab.variance.estimate import gradient_variance
from airlab.variance.outputs import fitted_slope


def toy(perturbation: float, num_points: int = 256, seed: int = 0) -> tuple[GaussianToy, torch.Tensor]:
    data = GaussianToyDataModule(num_points=num_points, seed=seed)  # D = 20 as in the paper; N = 1024 there
    data.setup()
    x = data.datasets["train"].tensors["x"]
    torch.manual_seed(seed)
    model = GaussianToy(perturbation=perturbation)
    model.initialise_from_data(x)
    return model, x


def per_dim_snr(model: GaussianToy, x: torch.Tensor, k: int, draws: int) -> dict[str, float]:
    estimator = IWAEEstimator(num_particles=k, vectorize_particles=True)
    estimator.bind(model)
    groups = {"encoder": [model.b], "decoder": [model.mu]}
    result = gradient_variance(
        estimator, model.model, model.guide, (x,), groups, num_samples=draws, seed=0, terms=False
    )
    return {name: stats.snr_per_dim for name, stats in result.groups.items()}


def test_encoder_snr_falls_and_decoder_snr_rises_with_k():
    model, x = toy(perturbation=0.01)
    snr = {k: per_dim_snr(model, x, k, draws=200) for k in (3, 12, 48)}
    print("per-dimension SNR:", snr)
    encoder = fitted_slope([(k, s["encoder"]) for k, s in snr.items()])
    assert -0.65 < encoder < -0.35, snr
    # The decoder's full-batch signal, N (mean(x) - mu) / 2, is only as big as the perturbation; below
    # K ~ 50 the bias of the self-normalised weights (from the encoder's perturbation) adds to it.
    assert snr[48]["decoder"] > 1.15 * snr[12]["decoder"], snr
    floor = math.sqrt(2 / math.pi) / math.sqrt(200)
    assert snr[48]["encoder"] > 2 * floor, snr


def test_snr_at_the_exact_optimum_reads_the_noise_floor():
    # At the unperturbed optimum the guide's mean is the posterior's, so by symmetry the IWAE gradient
    # of b and of mu has mean zero: |mean| / sd then averages sqrt(2/pi) / sqrt(n), about 0.8 / sqrt(n).
    model, x = toy(perturbation=0.0)
    draws = 400
    snr = per_dim_snr(model, x, k=5, draws=draws)
    floor = math.sqrt(2 / math.pi) / math.sqrt(draws)
    # 20 coordinates: the average of |N(0, 1)| has a relative sd of 0.6 / 0.8 / sqrt(20) = 17%
    for name, value in snr.items():
        assert 0.5 * floor < value < 1.5 * floor, (name, value, floor)


@pytest.mark.slow
def test_snr_gaussian_toy_preset_reduced(make_cfg):
    # The preset through the report task, at 1000 draws and K up to 234 (about 13 minutes on 2 cores).
    cfg = make_cfg(
        ["report=snr_gaussian_toy", "report.num_samples=1000", "report.particles=[3,12,54,234]", "seed=0"],
        name="variance_report",
    )
    output = run_variance_report(cfg)
    slopes = output["snr_slopes"]
    assert -0.6 < slopes["encoder"] < -0.4, slopes
    assert output["snr_at_largest_k"]["encoder"] > 3 * output["snr_noise_floor"], output
    saved = json.loads(open(f"{cfg.paths.output_dir}/variance_report.json").read())
    assert set(saved["snr_slopes"]) == {"encoder", "decoder", "encoder_weights"}
