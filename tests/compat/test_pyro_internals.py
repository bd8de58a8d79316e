"""Pyro's private pieces behind airlab.compat.pyro_internals still exist and behave as airlab relies on."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from airlab.compat.pyro_internals import (
    baseline_options,
    downstream_costs_by_plate,
    elbo_traces,
    put_store_entry,
    store_entries,
    store_tensor,
)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    loc = pyro.param("loc", torch.zeros(()))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 1.0))


def test_elbo_traces_gives_one_pair_of_traces_per_particle():
    pairs = list(elbo_traces(Trace_ELBO(num_particles=3), model, guide, (torch.ones(2),)))
    assert len(pairs) == 3
    model_trace, guide_trace = pairs[0]
    assert {"z", "x"} <= set(model_trace.nodes) and "z" in guide_trace.nodes
    assert model_trace.nodes["x"]["is_observed"]


def test_downstream_costs_sum_to_the_elbo_of_the_particle():
    x = torch.tensor([0.5, -1.0])
    model_trace, guide_trace = next(iter(elbo_traces(Trace_ELBO(), model, guide, (x,))))
    log_r = downstream_costs_by_plate(model_trace, guide_trace)
    elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    # A MultiFrameTensor: costs by plate frame, summed here over every plate.
    assert torch.allclose(log_r.sum_to(frozenset()).sum(), elbo.detach())


def test_baseline_options_read_a_sites_infer_dictionary():
    net = torch.nn.Identity()
    site = {
        "infer": {"baseline": {"nn_baseline": net, "nn_baseline_input": torch.ones(1), "baseline_beta": 0.8}}
    }
    nn_baseline, nn_input, use_average, beta, value = baseline_options(site)
    assert nn_baseline is net and torch.equal(nn_input, torch.ones(1))
    assert use_average is False and beta == 0.8 and value is None
    assert baseline_options({"infer": {"baseline": {"use_decaying_avg_baseline": True}}})[2] is True


def test_store_tensor_is_the_registered_tensor_itself():
    pyro.param("w", torch.ones(2))
    tensor = store_tensor("w")
    with torch.no_grad():
        tensor.add_(1.0)  # an update in place is what the store then hands out
    assert torch.equal(pyro.param("w").detach(), torch.full((2,), 2.0))
    assert tensor is dict(pyro.get_param_store().named_parameters())["w"]


def test_store_entries_put_back_the_same_object_under_its_name():
    pyro.param("w", torch.ones(2))
    ((name, (tensor, constraint)),) = store_entries().items()
    assert name == "w" and constraint is not None
    del pyro.get_param_store()["w"]
    put_store_entry("w", tensor, constraint)
    assert store_tensor("w") is tensor
    with poutine.trace() as captured:
        pyro.param("w")
    assert captured.trace.nodes["w"]["value"].detach().equal(torch.ones(2))
