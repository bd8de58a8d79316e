"""``elbo=enum_counts``: AIR's object counts summed out exactly.

Exactness needs an expectation that can be computed: with AIR's continuous latents fixed (every
``z_where_t`` and ``z_what_t`` conditioned on given values), the ELBO is an expectation over the
``max_steps + 1`` counts only. The test computes it count by count (a separate guide and model run per
count, no batching) and checks the estimator's value and gradient against it in float64, to 1e-9. Then
it checks that Pyro-style ``tracegraph``, which samples the counts, averages to the same gradient
(within 4 standard errors), and that enumeration's gradient of the ``z_pres`` head has no variance left.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

from airlab.errors import ConfigError
from airlab.estimators import CountEnumerationEstimator, TraceGraphEstimator
from airlab.models.vae import VAE
from tests.models.test_air_fast_step import small_air

BATCH = 3


@pytest.fixture()
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def fixed_continuous(air: torch.nn.Module, rows: int) -> dict[str, torch.Tensor]:
    """Values for every continuous site: poses near the prior's, appearances drawn once (seeded)."""
    generator = torch.Generator().manual_seed(7)
    values = {}
    for t in range(air.max_steps):
        noise = torch.randn(BATCH, 3, generator=generator)
        values[f"z_where_{t}"] = (air.where_prior_loc + 0.5 * air.where_prior_scale * noise).repeat(
            rows // BATCH, 1
        )
        values[f"z_what_{t}"] = torch.randn(BATCH, air.z_what_dim, generator=generator).repeat(
            rows // BATCH, 1
        )
    return values


def conditioned(air: torch.nn.Module, values: dict[str, torch.Tensor]) -> tuple:
    return poutine.condition(air.model, data=values), poutine.condition(air.guide, data=values)


def exact_elbo(air: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """sum over counts n of q(n) (log p(x, z_n) - log q(z_n)), count by count, summed over the batch."""
    model, guide = conditioned(air, fixed_continuous(air, BATCH))
    total = 0.0
    for n in range(air.max_steps + 1):
        pattern = {f"z_pres_{t}": torch.full((BATCH, 1), float(t < n)) for t in range(air.max_steps)}
        guide_trace = poutine.trace(poutine.condition(guide, data=pattern)).get_trace(images)
        model_trace = poutine.trace(poutine.condition(model, data=pattern)).get_trace(images)
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()

        def site_sum(trace: poutine.Trace, prefix: str | None = None) -> torch.Tensor:
            return sum(
                site["log_prob"]
                for name, site in trace.nodes.items()
                if site["type"] == "sample" and name != "data" and (prefix is None or name.startswith(prefix))
            )

        log_q_count = site_sum(guide_trace, "z_pres")
        log_w = site_sum(model_trace) - site_sum(guide_trace)
        total = total + (log_q_count.exp() * log_w).sum()
    return total


def test_enumeration_equals_the_exact_expectation_over_counts(float64):
    torch.manual_seed(0)
    air = small_air("none")
    images = torch.rand(BATCH, 1, 20, 20)
    estimator = CountEnumerationEstimator()
    estimator.bind(air)
    rows = BATCH * (air.max_steps + 1)
    model, guide = conditioned(air, fixed_continuous(air, rows))
    out = estimator(model, guide, images)
    exact = exact_elbo(air, images)
    assert float(out.loss) == pytest.approx(-float(exact), rel=1e-9)
    params = [p for p in air.parameters() if p.requires_grad]
    grad = torch.autograd.grad(out.surrogate, params, allow_unused=True)
    grad_exact = torch.autograd.grad(-exact, params, allow_unused=True)
    for g, e in zip(grad, grad_exact, strict=True):
        if e is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            assert torch.allclose(g, e, rtol=1e-9, atol=1e-12)
    assert sum(float(e.abs().sum()) for e in grad_exact if e is not None) > 1.0  # not an empty check


def test_tracegraph_averages_to_the_enumerated_gradient_which_has_no_count_variance():
    """tracegraph samples the counts; over many draws (one per replica of the batch in a 300-row plate,
    20 calls) its gradient of the z_pres head averages to enumeration's, which is the same every call."""
    torch.manual_seed(0)
    air = small_air("none")
    images = torch.rand(BATCH, 1, 20, 20)
    head = list(air.predict.z_pres_head.parameters())
    replicas, calls = 100, 20
    rows = BATCH * replicas
    estimator = CountEnumerationEstimator()
    estimator.bind(air)
    model, guide = conditioned(air, fixed_continuous(air, rows * (air.max_steps + 1)))
    enumerated = [
        torch.cat(
            [
                g.flatten()
                for g in torch.autograd.grad(
                    estimator(model, guide, images.repeat(replicas, 1, 1, 1)).surrogate, head
                )
            ]
        )
        / replicas
        for _ in range(2)
    ]
    assert torch.allclose(enumerated[0], enumerated[1])  # no randomness left in the count terms
    tracegraph = TraceGraphEstimator()
    tracegraph.bind(air)
    model, guide = conditioned(air, fixed_continuous(air, rows))
    pyro.set_rng_seed(1)
    sampled = torch.stack(
        [
            torch.cat(
                [
                    g.flatten()
                    for g in torch.autograd.grad(
                        tracegraph(model, guide, images.repeat(replicas, 1, 1, 1)).surrogate, head
                    )
                ]
            )
            / replicas
            for _ in range(calls)
        ]
    )
    mean, se = sampled.mean(0), sampled.std(0) / calls**0.5
    assert (sampled.std(0) > 0).sum() > 5  # the sampled counts do vary
    assert ((mean - enumerated[0]).abs() <= 4 * se + 1e-3).all(), (mean, enumerated[0], se)


def test_enumeration_refuses_a_model_without_discrete_configurations():
    with pytest.raises(ConfigError, match="model=vae declares no discrete configurations"):
        CountEnumerationEstimator().bind(VAE(z_dim=2, hidden_dim=4))
