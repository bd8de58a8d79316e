"""airlab's surrogate losses reproduce Pyro's own gradients, site by site."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from airlab.errors import ConfigError
from airlab.estimators import (
    IWAEEstimator,
    JitTraceEstimator,
    JitTraceGraphEstimator,
    MeanFieldEstimator,
    RenyiEstimator,
    TraceEstimator,
    TraceGraphEstimator,
    elbo_estimate,
)
from airlab.models.air import AIR
from airlab.models.vae import VAE


def chain_model(x):
    p = pyro.param("p_model", torch.tensor(0.3))
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Bernoulli(p))
        b = pyro.sample("b", dist.Bernoulli(0.2 + 0.6 * a))
        pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)


def chain_guide(x, baseline=True):
    q = pyro.param("q", torch.tensor(0.5))
    r = pyro.param("r", torch.tensor([0.4, 0.6]))
    infer = {"baseline": {"use_decaying_avg_baseline": True}} if baseline else {}
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Bernoulli(q), infer=infer)
        pyro.sample("b", dist.Bernoulli(r[a.long()]))


def params():
    return [pyro.param(name).unconstrained() for name in ("p_model", "q", "r")]


X = torch.tensor([0.0, 1.0, 2.0])


@pytest.mark.parametrize(
    "mine,theirs", [(TraceEstimator, Trace_ELBO), (TraceGraphEstimator, TraceGraph_ELBO)]
)
@pytest.mark.parametrize("scale", [1.0, 7.0])
def test_gradients_equal_pyros(mine, theirs, scale):
    from pyro import poutine

    chain_guide(X)
    chain_model(X)
    model, guide = poutine.scale(chain_model, scale), poutine.scale(chain_guide, scale)
    pyro.set_rng_seed(0)
    loss = theirs().loss_and_grads(model, guide, X)
    expected = [p.grad.clone() for p in params()]
    pyro.get_param_store()._params.pop("__baseline_avg_downstream_cost_a", None)
    pyro.set_rng_seed(0)
    out = mine()(chain_model, chain_guide, X, scale=scale)
    got = torch.autograd.grad(out.surrogate, params())
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6)
    assert out.loss.item() == pytest.approx(loss, rel=1e-6)
    assert set(out.score_terms) == {"a", "b"}


def test_only_tracegraph_applies_the_baseline():
    chain_guide(X)
    chain_model(X)
    for estimator, uses in ((TraceEstimator(), False), (TraceGraphEstimator(), True)):
        pyro.clear_param_store()
        estimator(chain_model, chain_guide, X)
        assert ("__baseline_avg_downstream_cost_a" in pyro.get_param_store()) is uses


def test_meanfield_matches_pyro():
    vae = VAE(z_dim=3, hidden_dim=5)
    images = torch.rand(4, 1, 28, 28)
    pyro.set_rng_seed(1)
    expected = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, images)
    pyro.set_rng_seed(1)
    got = MeanFieldEstimator()(vae.model, vae.guide, images).surrogate
    assert torch.allclose(got, expected, rtol=1e-5)


def plain_chain_guide(x):
    chain_guide(x, baseline=False)


@pytest.mark.parametrize(
    "compiled,eager", [(JitTraceEstimator, TraceEstimator), (JitTraceGraphEstimator, TraceGraphEstimator)]
)
def test_compiled_estimators_give_the_eager_gradients(compiled, eager):
    """Same draws, same gradients (Pyro's own JitTrace_ELBO doubles log p gradients under torch 2.14)."""
    plain_chain_guide(X)
    chain_model(X)
    estimator = compiled()
    estimator(chain_model, plain_chain_guide, X)  # the first call compiles
    pyro.set_rng_seed(3)
    out = estimator(chain_model, plain_chain_guide, X)
    got = torch.autograd.grad(out.surrogate, params())
    pyro.set_rng_seed(3)
    reference = eager()(chain_model, plain_chain_guide, X)
    expected = torch.autograd.grad(reference.surrogate, params())
    assert float(out.loss) == pytest.approx(float(reference.loss), rel=1e-5)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6), (g, e)


def test_meanfield_refuses_discrete_guides():
    class Discrete(VAE):
        has_discrete_latents = True

    with pytest.raises(ConfigError, match="elbo=meanfield needs a fully reparameterised guide"):
        MeanFieldEstimator().check_model(Discrete())


def test_jit_tracegraph_refuses_decaying_average_baselines():
    class DecayingAverage(VAE):
        def uses_decaying_avg_baseline(self) -> bool:
            return True

    with pytest.raises(ConfigError, match="model.baseline"):
        JitTraceGraphEstimator().check_model(DecayingAverage())
    JitTraceGraphEstimator().check_model(VAE())  # the VAE declares no such baseline


def test_air_declares_its_decaying_average_baseline():
    assert AIR(rnn_hidden=4, baseline="decaying_avg").uses_decaying_avg_baseline()
    assert not AIR(rnn_hidden=4, baseline="nvil").uses_decaying_avg_baseline()
    with pytest.raises(ConfigError, match="model.baseline"):
        JitTraceGraphEstimator().check_model(AIR(rnn_hidden=4, baseline="decaying_avg"))


def test_vectorized_particles_refused_for_a_model_that_declares_it_cannot():
    with pytest.raises(ConfigError, match="elbo.vectorize_particles"):
        TraceEstimator(vectorize_particles=True).check_model(AIR(rnn_hidden=4, baseline="none"))
    TraceEstimator(vectorize_particles=True).check_model(VAE())


def test_only_iwae_declares_a_reported_bound():
    assert IWAEEstimator().reports_bound == "iwae"
    for estimator in (TraceEstimator(), TraceGraphEstimator(), MeanFieldEstimator(), RenyiEstimator()):
        assert estimator.reports_bound is None


def test_renyi_refuses_alpha_one():
    with pytest.raises(ConfigError, match="elbo.alpha"):
        RenyiEstimator(alpha=1.0)


@pytest.mark.parametrize("vectorize", [False, True])
def test_iwae_bound_is_per_datum_and_tighter_than_the_elbo(vectorize):
    """With K samples the bound lies between the ELBO and log p(x) on average (same seed)."""
    vae = VAE(z_dim=2, hidden_dim=8)
    images = torch.rand(16, 1, 28, 28).round()
    pyro.set_rng_seed(0)
    elbo = sum(-float(elbo_estimate(vae.model, vae.guide, images)) for _ in range(200)) / 200
    estimator = IWAEEstimator(num_particles=20, vectorize_particles=vectorize, max_plate_nesting=1)
    iwae = sum(float(estimator(vae.model, vae.guide, images).loss) for _ in range(10)) / 10
    assert iwae < elbo - 1.0  # a lower loss: the bound is tighter, per image, summed over 16 images


def test_jit_compiles_once():
    vae = VAE(z_dim=2, hidden_dim=4)
    model, guide = vae.model, vae.guide
    images = torch.rand(8, 1, 28, 28)
    for estimator in (JitTraceEstimator(), JitTraceGraphEstimator()):
        pyro.clear_param_store()
        for _ in range(4):
            estimator(model, guide, images).surrogate.backward()
        assert estimator.num_compilations == 1
