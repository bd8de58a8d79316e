"""The VAE's model and guide: site names, shapes, and the helpers used for pictures."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

from airlab.models.vae import VAE


def test_model_and_guide_sites_and_shapes():
    vae = VAE(z_dim=7, hidden_dim=11)
    images = torch.rand(5, 1, 28, 28)
    guide_trace = poutine.trace(vae.guide).get_trace(images)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(images)
    guide_sites = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"]
    model_sites = [n for n, s in model_trace.nodes.items() if s["type"] == "sample"]
    assert guide_sites == ["data", "z"] and model_sites == ["data", "z", "x"]
    z, x = model_trace.nodes["z"], model_trace.nodes["x"]
    assert z["value"].shape == (5, 7) and z["fn"].event_shape == (7,) and z["fn"].batch_shape == (5,)
    assert x["is_observed"] and x["value"].shape == (5, 784) and x["fn"].batch_shape == (5,)
    model_trace.compute_log_prob()
    assert model_trace.nodes["x"]["log_prob"].shape == (5,)  # one log-likelihood per image


def test_parameters_are_registered_with_pyro_and_owned_by_the_module():
    vae = VAE(z_dim=3, hidden_dim=4)
    images = torch.rand(2, 1, 28, 28)
    vae.guide(images)
    vae.model(images)
    store = pyro.get_param_store()
    assert store["encoder$$$fc1.weight"] is vae.encoder.fc1.weight
    assert store["decoder$$$fc21.bias"] is vae.decoder.fc21.bias


def test_reconstruct_sample_and_encode_shapes():
    vae = VAE(z_dim=4, hidden_dim=8)
    images = torch.rand(3, 1, 28, 28)
    assert vae.reconstruct(images).shape == (3, 1, 28, 28)
    assert vae.sample(6).shape == (6, 1, 28, 28)
    assert vae.encode(images).shape == (3, 4)
    groups = vae.parameter_groups()
    assert set(groups) == {"guide/encoder", "model/decoder"}
    assert sum(p.numel() for ps in groups.values() for p in ps) == sum(p.numel() for p in vae.parameters())


def test_image_shape_sets_the_input_size():
    vae = VAE(image_shape=(1, 50, 50), z_dim=2, hidden_dim=3)
    assert vae.encoder.fc1.in_features == 2500 and vae.sample(1).shape == (1, 1, 50, 50)


def test_beta_weights_the_kl_term_and_nothing_else():
    """With the same draw of z, the Trace ELBO loss is linear in beta, with slope log q(z) - log p(z)."""
    from airlab.estimators import TraceEstimator

    images = torch.rand(4, 1, 28, 28).round()
    losses = {}
    for beta in (0.5, 1.0, 2.0):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE(z_dim=3, hidden_dim=8, beta=beta)
        torch.manual_seed(1)
        losses[beta] = float(TraceEstimator()(vae.model, vae.guide, images).loss)
    torch.manual_seed(0)
    vae = VAE(z_dim=3, hidden_dim=8)
    torch.manual_seed(1)
    guide = poutine.trace(vae.guide).get_trace(images)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(images)
    kl_term = float(guide.nodes["z"]["fn"].log_prob(guide.nodes["z"]["value"]).sum().detach()) - float(
        model.nodes["z"]["fn"].log_prob(guide.nodes["z"]["value"]).sum()
    )
    assert abs(kl_term) > 1.0  # the check below would be empty otherwise
    # float32 losses of about 2,000 nats: differences carry about 1e-3 of rounding
    assert losses[2.0] - losses[1.0] == pytest.approx(kl_term, abs=2e-3)
    assert losses[1.0] - losses[0.5] == pytest.approx(0.5 * kl_term, abs=2e-3)


def test_likelihood_sd_makes_the_pixels_normal_around_the_decoded_image():
    images = torch.rand(3, 1, 28, 28)
    torch.manual_seed(0)
    vae = VAE(z_dim=3, hidden_dim=8, likelihood_sd=0.3)
    guide = poutine.trace(vae.guide).get_trace(images)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(images)
    decoded = vae.decoder(guide.nodes["z"]["value"])
    expected = torch.distributions.Normal(decoded, 0.3).log_prob(images.reshape(3, -1)).sum(-1)
    assert torch.allclose(model.nodes["x"]["fn"].log_prob(model.nodes["x"]["value"]), expected)
    bernoulli = VAE(z_dim=3, hidden_dim=8)
    bernoulli.load_state_dict(vae.state_dict())
    plain = poutine.trace(poutine.replay(bernoulli.model, trace=guide)).get_trace(images)
    assert isinstance(plain.nodes["x"]["fn"].base_dist, pyro.distributions.Bernoulli)  # the default
