"""``elbo=trace_enum``: Pyro's ``TraceEnum_ELBO`` sums a guide-enumerated discrete latent out exactly.

A toy with one discrete latent per datum, ``y ~ Cat(pi)``, ``x | y ~ N(mu_y, 1)``, and a guide
``q(y) = Cat(softmax(theta_i))`` marked ``infer={"enumerate": "parallel"}``: the ELBO is the finite sum
``sum_i sum_y q_i(y) (log pi_y + log N(x_i; mu_y, 1) - log q_i(y))``. Value and gradient (in float64) must
equal that sum to 1e-10, with no sampling noise at all.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from airlab.contracts.model import GenerativeModel
from airlab.estimators import TraceEnumEstimator

X = torch.tensor([0.3, -1.2, 2.0, 0.9], dtype=torch.float64)
PRIOR = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)


def toy(mu: torch.Tensor, theta: torch.Tensor):
    def model(x):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(PRIOR))
            pyro.sample("x", dist.Normal(mu[y], 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(logits=theta), infer={"enumerate": "parallel"})

    return model, guide


def exact_elbo(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    log_q = torch.log_softmax(theta, -1)  # [N, K]
    log_lik = -0.5 * (X[:, None] - mu[None, :]) ** 2 - 0.5 * math.log(2 * math.pi)
    return (log_q.exp() * (PRIOR.log()[None, :] + log_lik - log_q)).sum()


def test_value_and_gradient_equal_the_exact_sum():
    pyro.set_rng_seed(0)
    mu = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    theta = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    model, guide = toy(mu, theta)
    out = TraceEnumEstimator(max_plate_nesting=1)(model, guide, X)
    exact = exact_elbo(mu, theta)
    assert abs(float(-out.loss) - float(exact)) < 1e-10
    got = torch.autograd.grad(out.surrogate, (mu, theta))
    want = torch.autograd.grad(-exact, (mu, theta))
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-10, rtol=0)
    # The dataset scale multiplies value and gradient alike.
    scaled = TraceEnumEstimator(max_plate_nesting=1)(model, guide, X, scale=2.5)
    assert abs(float(-scaled.loss) - 2.5 * float(exact)) < 1e-9


def test_max_plate_nesting_comes_from_the_key_else_the_model():
    class Declares(GenerativeModel):
        max_plate_nesting = 2

    estimator = TraceEnumEstimator()
    estimator.bind(Declares())
    assert estimator.max_plate_nesting == 2
    keyed = TraceEnumEstimator(max_plate_nesting=1)
    keyed.bind(Declares())
    assert keyed.max_plate_nesting == 1
    guessed = TraceEnumEstimator()
    guessed.bind(GenerativeModel())  # declares nothing: Pyro guesses it from a first run
    assert guessed.max_plate_nesting == float("inf")
