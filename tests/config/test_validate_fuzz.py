"""A property-based test of the start-up checks: any one key of the composed config (the VAE's and
AIR's, callbacks and loggers included) set to a hostile value is either accepted, and the pieces that key
configures then build, or refused with a ``ConfigError`` that names the key. Never any other exception.

Builders run in process and only for the group the drawn key belongs to (a model, a data module's
constructor, the estimator bound to the default model, the optimizer, the trainer, the callbacks, the
loggers), so that 500 draws take well under a minute. The seed is fixed and printed.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from airlab.config import validate_config
from airlab.errors import AirlabError, ConfigError
from airlab.training.build import build_optimizer, instantiate_group
from tests.conftest import compose_config

SEED = 20261202
EXAMPLES = 500
HOSTILE = ["abc", -1, 0, -0.5, 10**12, 1e999, -1e999, math.nan, [], None, True, [0], {"a": 1}]
#: Keys that are no option of a class (left to Hydra or read by tasks as paths and names).
NOT_OPTIONS = ("hydra", "paths", "ckpt_path", "task_name", "tags", "optimized_metric")


def leaf_keys(node, prefix=""):
    """Dotted keys of every leaf below ``node`` (``_target_``-style keys left out)."""
    for key, value in node.items():
        if str(key).startswith("_"):
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from leaf_keys(value, path)
        else:
            yield path


@cache
def base_config(model: str):
    import tempfile
    from pathlib import Path

    overrides = ["data.source=bundled"] + (["model=air"] if model == "air" else [])
    cfg = compose_config("train", overrides, Path(tempfile.mkdtemp()))
    return OmegaConf.to_container(cfg, resolve=True)


@cache
def keys_of(model: str) -> list[str]:
    return sorted(k for k in leaf_keys(base_config(model)) if not k.startswith(NOT_OPTIONS))


@cache
def default_model(model: str):
    from airlab.training.build import model_class

    node = OmegaConf.create(base_config(model)["model"])
    shape = (1, 50, 50) if model == "air" else (1, 28, 28)
    return instantiate(node, image_shape=shape) if model_class(node) else None


def build_group(cfg, key: str, model: str) -> None:
    """Build what ``key``'s group configures (nothing is trained and no data is read)."""
    group = key.split(".", 1)[0]
    if group == "model":
        shape = (1, 50, 50) if model == "air" else (1, 28, 28)
        instantiate(cfg.model, image_shape=shape)
    elif group == "data":
        instantiate(cfg.data)
    elif group == "elbo":
        instantiate(cfg.elbo).bind(default_model(model))
    elif group == "optim":
        build_optimizer(cfg.optim)([torch.nn.Parameter(torch.zeros(2))])
    elif group == "trainer":
        instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    elif group in ("callbacks", "logger"):
        instantiate_group(cfg.get(group))


def test_the_key_set_is_the_whole_config():
    assert len(keys_of("vae")) > 80 and len(keys_of("air")) > 100
    assert {"callbacks.grad_variance.every_n_steps", "callbacks.latent_tsne.perplexity"} <= set(
        keys_of("vae")
    )
    assert {"logger.tensorboard.save_dir", "trainer.max_epochs", "model.z_pres_prior"} <= set(keys_of("air"))


@pytest.mark.parametrize("model", ["vae", "air"])
def test_hostile_values_are_accepted_and_build_or_refused_naming_the_key(model, tmp_path, monkeypatch):
    print(f"hypothesis seed {SEED}, {EXAMPLES // 2} examples for model={model}")
    monkeypatch.chdir(tmp_path)  # loggers and callbacks that make folders make them here
    base = OmegaConf.create(base_config(model))

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES // 2,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(key=st.sampled_from(keys_of(model)), value=st.sampled_from(HOSTILE))
    def check(key: str, value) -> None:
        cfg = base.copy()
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        try:
            validate_config(cfg)
        except ConfigError as err:
            leaf = key.rsplit(".", 1)[-1]
            assert err.key.startswith(key) or key.startswith(err.key) or leaf in str(err), (key, value, err)
            assert "\n" not in str(err)
            return
        try:
            build_group(cfg, key, model)
        except AirlabError as err:  # refused by the class itself, in one line naming the key
            assert key.rsplit(".", 1)[-1] in str(err), (key, value, err)
        except Exception as err:  # anything else is a value the start-up check let through
            raise AssertionError(
                f"{key}={value!r} passed validation, then {type(err).__name__}: {err}"
            ) from err

    check()
