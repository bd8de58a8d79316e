"""What models, estimators and callbacks declare about themselves, and the callback set each model adds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from airlab.callbacks.attention import AttentionLogger, CountLogger
from airlab.callbacks.latent_space import LatentSpaceLogger
from airlab.callbacks.run_end import RunEndCallback
from airlab.callbacks.throughput import ThroughputMonitor
from airlab.contracts.model import GenerativeModel
from airlab.errors import ConfigError
from airlab.models.air import AIR
from airlab.models.vae import VAE
from airlab.tasks.benchmark import compares_bare_loop


def test_what_a_model_declares_decides_which_estimators_train_it():
    """The declarations act: a reparameterised-only bound refuses AIR (discrete latents) and takes the
    VAE; the count enumeration needs AIR's declared configurations; vectorised particles need the
    model's support for them."""
    from airlab.contracts.estimator import check_estimator_fits_model
    from airlab.estimators import CountEnumerationEstimator, MeanFieldEstimator, TraceEstimator

    fits = dict(vectorize_particles=False, baseline_kind="none")
    with pytest.raises(ConfigError, match="elbo=meanfield needs a fully reparameterised guide"):
        check_estimator_fits_model(MeanFieldEstimator, AIR, **fits)
    check_estimator_fits_model(MeanFieldEstimator, VAE, **fits)
    with pytest.raises(ConfigError, match="declares no discrete configurations"):
        check_estimator_fits_model(CountEnumerationEstimator, VAE, **fits)
    check_estimator_fits_model(CountEnumerationEstimator, AIR, **fits)
    with pytest.raises(ConfigError, match="elbo.vectorize_particles"):
        check_estimator_fits_model(TraceEstimator, AIR, vectorize_particles=True, baseline_kind="none")
    check_estimator_fits_model(
        TraceEstimator, GenerativeModel, vectorize_particles=True, baseline_kind="none"
    )


@pytest.mark.parametrize(
    ("callback", "key"),
    [(CountLogger(), "callbacks.counts"), (AttentionLogger(), "callbacks.attention")],
)
def test_air_callbacks_refuse_a_model_without_object_counts(callback, key):
    with pytest.raises(ConfigError, match=f"{key}: model=vae infers no object counts") as info:
        callback.setup(None, SimpleNamespace(model=VAE()), "fit")
    assert "\n" not in str(info.value)
    callback.setup(None, SimpleNamespace(model=AIR(rnn_hidden=4, baseline="none")), "fit")


def test_latent_callback_refuses_a_model_without_a_latent_space():
    callback = LatentSpaceLogger()
    with pytest.raises(ConfigError, match="callbacks.latent_tsne: model=air declares no latent space"):
        callback.setup(None, SimpleNamespace(model=AIR(rnn_hidden=4, baseline="none")), "fit")
    callback.setup(None, SimpleNamespace(model=VAE()), "fit")


def test_run_end_callbacks_declare_the_interface():
    assert isinstance(LatentSpaceLogger(), RunEndCallback)
    assert not isinstance(ThroughputMonitor(), RunEndCallback)


@pytest.mark.parametrize(
    ("overrides", "present", "absent"),
    [
        ([], {"latent_tsne", "reconstructions"}, {"counts", "attention"}),
        (["experiment=vae_mnist"], {"latent_tsne"}, {"counts", "attention"}),
        (["model=air", "data=multimnist"], {"counts", "attention", "reconstructions"}, {"latent_tsne"}),
        (["experiment=air_multimnist"], {"counts", "attention"}, {"latent_tsne"}),
        (["experiment=air_pyro_tutorial"], {"counts", "attention"}, {"latent_tsne"}),
    ],
)
def test_each_model_adds_its_own_callback_set(make_cfg, overrides, present, absent):
    callbacks = set(make_cfg(overrides).callbacks)
    assert present <= callbacks and not absent & callbacks


@pytest.mark.parametrize("model", [["model=vae"], ["model=air", "data=multimnist"]])
def test_callbacks_none_means_no_callbacks_for_every_model(make_cfg, model):
    assert not make_cfg([*model, "callbacks=none"]).get("callbacks")


@pytest.mark.parametrize(
    ("target", "asked", "expected"),
    [
        ("airlab.models.vae.VAE", True, True),
        ("airlab.models.vae.VAE", False, False),
        ("airlab.models.air.AIR", True, False),
    ],
)
def test_benchmark_times_the_bare_loop_only_for_a_model_that_declares_it(target, asked, expected):
    cfg = OmegaConf.create({"benchmark": {"bare_loop": asked}, "model": {"_target_": target}})
    assert compares_bare_loop(cfg) is expected
