"""Every estimator's gradient is unbiased: its mean over many draws matches the exact gradient.

The model is small enough to enumerate. Per replica: a global ``g ~ Bernoulli(0.02)`` and, in a plate of
three items, a chain ``a_i | g`` -> ``b_i | a_i`` -> ``x_i``; the guide mirrors it (``g`` -> ``a_i`` ->
``b_i``). All seven latents are discrete and have no reparameterisation, 2^7 = 128 configurations.
The upstream costs are the ones TraceGraph prunes: ``log p(g) - log q(g)`` swings by about 4 nats
(the guide proposes ``g = 1`` half the time against a 2% prior) and sits in every item's cost under
Trace.

Many independent draws run as one batch: an outer ``data`` plate of R replicas that all observe the
same ``x``, each replica with its own row of the (identical) parameters. The gradient with respect
to row r is then replica r's gradient estimate: R draws from one backward pass. The exact gradient
conditions the same Pyro model on all 128 configurations (one per replica), forms
``sum_z q(z) (log p(x, z) - log q(z))`` as a differentiable sum, and differentiates it. For the
IWAE and Renyi bounds with K = 2 it sums over all 128^2 pairs of configurations.

Tolerance, per coordinate: |mean - exact| <= 4 standard errors + 1e-3 (the standard error is the
sample standard deviation over the draws / sqrt(number of draws)).
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from airlab.estimators import (
    IWAEEstimator,
    JitTraceEstimator,
    JitTraceGraphEstimator,
    RenyiEstimator,
    TraceEstimator,
    TraceGraphEstimator,
    VIMCOEstimator,
)

X = torch.tensor([0.2, 1.7, 2.9])
PRIOR_G = 0.02
THETA = torch.tensor([-0.3, 1.2, -0.8, 0.9, 0.1])  # model: a logit, its g slope, b logit per a, x offset
PHI = torch.tensor([0.0, 0.3, -0.5, 0.6, -1.0, 0.4, -0.2])  # guide: g logit, a logits, a's g slope, b per a
NUM_DRAWS = 40_000
Z_SE, ATOL = 4.0, 1e-3
# The standard error of the K = 2 bounds' Monte-Carlo gradient mean, per coordinate: seen at most 0.045
# (iwae) and 0.047 (renyi) with seed 0. A score weighted by the whole batch's bound instead of its own
# datum's stays unbiased (the other data's bounds are independent of the score) but its standard error
# grows about sqrt(NUM_DRAWS) = 200x and more; the ceiling allows about 2x the honest value.
SE_CEILING = 0.1


def model(x):
    theta = pyro.param("theta")
    with pyro.plate("data", theta.shape[0], dim=-2):
        g = pyro.sample("g", dist.Bernoulli(torch.tensor(PRIOR_G)))
        with pyro.plate("items", x.shape[-1], dim=-1):
            a = pyro.sample("a", dist.Bernoulli(logits=(theta[:, :1] + theta[:, 1:2] * g).expand(-1, 3)))
            b = pyro.sample("b", dist.Bernoulli(logits=theta[:, 2:4].gather(-1, a.long())))
            pyro.sample("x", dist.Normal(a + 1.5 * b + theta[:, 4:5], 0.7), obs=x)


def make_guide(baseline: str = "none"):
    def guide(x):
        phi = pyro.param("phi")
        with pyro.plate("data", phi.shape[0], dim=-2):
            g = pyro.sample("g", dist.Bernoulli(logits=phi[:, :1]), infer=infer("g", None))
            with pyro.plate("items", x.shape[-1], dim=-1):
                a = pyro.sample(
                    "a", dist.Bernoulli(logits=phi[:, 1:4] + phi[:, 4:5] * g), infer=infer("a", g)
                )
                pyro.sample("b", dist.Bernoulli(logits=phi[:, 5:7].gather(-1, a.long())), infer=infer("b", a))

    def infer(site, upstream):
        if baseline == "decaying_avg":
            return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.5}}
        if baseline == "value":
            # A learned value that may depend on upstream draws, never on the site's own draw.
            value = pyro.param(f"baseline_{site}", torch.zeros(2))
            index = torch.zeros((), dtype=torch.long) if upstream is None else upstream.long()
            return {"baseline": {"baseline_value": value[index].expand(upstream_shape(site))}}
        return {}

    def upstream_shape(site):
        rows = pyro.param("phi").shape[0]
        return (rows, 1) if site == "g" else (rows, 3)

    return guide


def set_params(rows: int) -> None:
    store = pyro.get_param_store()
    for name, value in (("theta", THETA), ("phi", PHI)):
        if name in store:
            del store[name]
        pyro.param(name, value.expand(rows, -1).clone())


def params() -> list[torch.Tensor]:
    return [pyro.param("theta").unconstrained(), pyro.param("phi").unconstrained()]


# -- exact values by enumeration --------------------------------------------------------------------


def configurations() -> dict[str, torch.Tensor]:
    rows = list(itertools.product([0.0, 1.0], repeat=7))
    z = torch.tensor(rows)
    return {"g": z[:, :1], "a": z[:, 1:4], "b": z[:, 4:7]}


def log_weights_exact() -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z), log p(x, z) - log q(z)) for all 128 configurations, differentiable in the parameters."""
    values = configurations()
    set_params(128)
    guide = make_guide()
    guide_trace = poutine.trace(poutine.condition(guide, data=values)).get_trace(X)
    model_trace = poutine.trace(poutine.condition(model, data=values)).get_trace(X)

    def per_config(trace):
        trace.compute_log_prob()
        return sum(
            site["log_prob"].reshape(128, -1).sum(-1)
            for name, site in trace.nodes.items()
            if name in ("g", "a", "b", "x")  # not the plates' subsample sites
        )

    log_q = per_config(guide_trace)
    return log_q, per_config(model_trace) - log_q


def exact_gradient(bound: str) -> torch.Tensor:
    """The gradient of the negative bound (the loss) at (THETA, PHI), flattened."""
    log_q, log_w = log_weights_exact()
    q = log_q.exp()
    assert float(q.sum().detach()) == pytest.approx(1.0, abs=1e-5)
    if bound == "elbo":
        value = (q * log_w).sum()
    elif bound == "iwae3":  # K = 3: all 128^3 triples of configurations
        triple = torch.logsumexp(
            torch.stack(
                torch.broadcast_tensors(log_w[:, None, None], log_w[None, :, None], log_w[None, None, :])
            ),
            0,
        )
        weight = q[:, None, None] * q[None, :, None] * q[None, None, :]
        value = (weight * (triple - torch.log(torch.tensor(3.0)))).sum()
    else:  # K = 2 particles: the expectation over all pairs of configurations
        alpha = 0.0 if bound == "iwae" else 0.5
        pair = torch.logsumexp(
            torch.stack(torch.broadcast_tensors((1 - alpha) * log_w[:, None], (1 - alpha) * log_w[None, :])),
            0,
        )
        value = (q[:, None] * q[None, :] * (pair - torch.log(torch.tensor(2.0))) / (1 - alpha)).sum()
    grads = torch.autograd.grad(-value, params())
    return torch.cat([g.sum(0) for g in grads])  # every row holds the same parameters


# -- Monte Carlo -----------------------------------------------------------------------------------


def draws(estimator, guide, rows: int, calls: int, seed: int = 0) -> torch.Tensor:
    """[rows * calls, 12] per-draw gradients of the estimator's surrogate loss."""
    pyro.set_rng_seed(seed)
    out = []
    for _ in range(calls):
        loss = estimator(model, guide, X).surrogate
        grads = torch.autograd.grad(loss, params())
        out.append(torch.cat(grads, -1))
    return torch.cat(out)


def warm_up_value_baselines(steps: int = 20, rows: int = 500) -> None:
    """Fit the baseline values to the downstream costs; only they move (Adam on the baseline loss)."""
    estimator, guide = TraceGraphEstimator(), make_guide("value")
    set_params(rows)
    guide(X)
    values = [pyro.param(f"baseline_{s}").unconstrained() for s in "gab"]
    optimizer = torch.optim.Adam(values, lr=0.5)
    pyro.set_rng_seed(123)
    for _ in range(steps):
        out = estimator(model, guide, X)
        grads = torch.autograd.grad(out.baseline_loss / rows, values)
        for v, g in zip(values, grads, strict=True):
            v.grad = g
        optimizer.step()


def check_unbiased(samples: torch.Tensor, exact: torch.Tensor, label: str) -> torch.Tensor:
    mean = samples.mean(0)
    se = samples.std(0) / samples.shape[0] ** 0.5
    error = (mean - exact).abs()
    bad = error > Z_SE * se + ATOL
    assert not bad.any(), (
        f"{label}: biased at coordinates {bad.nonzero().flatten().tolist()}; "
        f"mean {mean.tolist()}, exact {exact.tolist()}, standard error {se.tolist()}"
    )
    return samples.var(0)


def guide_variance(samples: torch.Tensor) -> float:
    return float(samples[:, THETA.numel() :].var(0).sum())


CASES = {
    # name: (estimator factory, guide baseline, rows per call, calls)
    "trace": (TraceEstimator, "none", NUM_DRAWS, 1),
    "tracegraph": (TraceGraphEstimator, "none", NUM_DRAWS, 1),
    # The running average moves between calls, so the draws come in several calls.
    "tracegraph_decaying_avg": (TraceGraphEstimator, "decaying_avg", NUM_DRAWS // 8, 8),
    "tracegraph_value_baseline": (TraceGraphEstimator, "value", NUM_DRAWS, 1),
    "jit_trace": (JitTraceEstimator, "none", NUM_DRAWS // 4, 4),
    "jit_tracegraph": (JitTraceGraphEstimator, "none", NUM_DRAWS // 4, 4),
}


@pytest.fixture(scope="module")
def elbo_gradient() -> torch.Tensor:
    pyro.clear_param_store()
    return exact_gradient("elbo")


@pytest.fixture(scope="module")
def variances() -> dict[str, float]:
    return {}


@pytest.mark.parametrize("name", list(CASES))
def test_elbo_estimators_are_unbiased(name, elbo_gradient, variances):
    factory, baseline, rows, calls = CASES[name]
    if baseline == "value":
        warm_up_value_baselines()
    set_params(rows)
    samples = draws(factory(), make_guide(baseline), rows, calls)
    assert samples.shape == (NUM_DRAWS, 12)
    check_unbiased(samples, elbo_gradient, name)
    variances[name] = guide_variance(samples)


def test_tracegraph_has_lower_variance_than_trace(elbo_gradient, variances):
    for name in ("trace", "tracegraph", "tracegraph_decaying_avg", "tracegraph_value_baseline"):
        if name not in variances:
            factory, baseline, rows, calls = CASES[name]
            if baseline == "value":
                warm_up_value_baselines()
            set_params(rows)
            variances[name] = guide_variance(draws(factory(), make_guide(baseline), rows, calls))
    trace, tracegraph = variances["trace"], variances["tracegraph"]
    average, baseline = variances["tracegraph_decaying_avg"], variances["tracegraph_value_baseline"]
    message = (
        f"total variance of the guide's gradient: trace {trace:.4g}, tracegraph {tracegraph:.4g} "
        f"({tracegraph / trace:.3f}x), + decaying average {average:.4g} ({average / trace:.3f}x), "
        f"+ value baseline {baseline:.4g} ({baseline / trace:.3f}x)"
    )
    print(message)
    assert tracegraph < 0.8 * trace, message
    assert baseline < tracegraph, message


@pytest.mark.parametrize("name,estimator", [("iwae", IWAEEstimator), ("renyi", RenyiEstimator)])
def test_multi_sample_bounds_are_unbiased_for_their_own_bound(name, estimator):
    """The K = 2 IWAE and Renyi gradients average to their own bound's exact gradient, and each draw's
    score is weighted by its own datum's bound: the standard error stays under ``SE_CEILING``."""
    exact = exact_gradient(name)
    set_params(NUM_DRAWS)
    kwargs = {"num_particles": 2} if name == "iwae" else {"alpha": 0.5, "num_particles": 2}
    samples = draws(estimator(**kwargs), make_guide(), NUM_DRAWS, 1)
    check_unbiased(samples, exact, f"{name} (K=2)")
    se = samples.std(0) / samples.shape[0] ** 0.5
    assert float(se.max()) < SE_CEILING, f"{name}: standard error {se.tolist()} over {SE_CEILING}"
    # The bound's own gradient, not the ELBO's: the two differ by far more than the tolerance.
    elbo = exact_gradient("elbo")
    assert (exact - elbo).abs().max() > 0.05


@pytest.mark.parametrize("k", [2, 3])
def test_vimco_is_unbiased_for_the_iwae_bound_with_less_variance(k):
    """VIMCO's K-particle gradient averages to the IWAE bound's exact gradient (K = 3 checks the
    geometric-mean replacement, which K = 2 reduces to the other particle), with a standard error under
    ``SE_CEILING``, and its guide gradient varies less than the IWAE estimator's (the same bound, each
    score weighted by the bound itself instead of the leave-one-out signal)."""
    exact = exact_gradient("iwae" if k == 2 else "iwae3")
    set_params(NUM_DRAWS)
    vimco = draws(VIMCOEstimator(num_particles=k), make_guide(), NUM_DRAWS, 1)
    check_unbiased(vimco, exact, f"vimco (K={k})")
    se = vimco.std(0) / vimco.shape[0] ** 0.5
    assert float(se.max()) < SE_CEILING, f"vimco: standard error {se.tolist()} over {SE_CEILING}"
    set_params(NUM_DRAWS)
    iwae = draws(IWAEEstimator(num_particles=k), make_guide(), NUM_DRAWS, 1, seed=1)
    check_unbiased(iwae, exact, f"iwae (K={k})")
    ratio = guide_variance(vimco) / guide_variance(iwae)
    print(f"K={k}: guide-gradient variance vimco / iwae = {ratio:.3f}")
    assert ratio < 0.8, ratio
