"""Smoke test of ``examples/semi_supervised_vae``: its package, configs and presets, a few steps each,
composed as ``airlab-train -cd configs experiment=<preset>`` composes them (in process)."""

from __future__ import annotations

import math

import pytest
import torch

from airlab.training.build import build_datamodule
from airlab.training.run import run_training
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "semi_supervised_vae"


@pytest.fixture
def example_cfg(make_cfg, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))

    def make(overrides: list[str]):
        return make_cfg([f"hydra.searchpath=[file://{EXAMPLE / 'configs'}]", *overrides])

    return make


@pytest.mark.parametrize("preset", ["ssvae_enum", "ssvae_tracegraph", "labelled_only"])
def test_each_preset_trains_and_reports_test_accuracy(example_cfg, preset):
    cfg = example_cfg([f"experiment={preset}", "debug=fast", "callbacks.progress_bar=null", "seed=0"])
    metrics = run_training(cfg)
    assert metrics["global_step"] == 6
    assert 0.0 <= metrics["test/accuracy"] <= 1.0 and math.isfinite(metrics["val/elbo"])


def test_the_data_hides_all_but_a_few_balanced_labels(example_cfg):
    cfg = example_cfg(["experiment=ssvae_enum", "data.num_labelled=100"])
    data = build_datamodule(cfg)
    data.setup()
    train = data.datasets["train"].annotations["label"]
    assert len(train) == 4000 and int((train >= 0).sum()) == 100
    assert torch.bincount(train[train >= 0], minlength=10).tolist() == [10] * 10
    assert bool((data.datasets["test"].annotations["label"] >= 0).all())  # held-out digits keep theirs


def test_trace_enum_is_refused_with_the_unused_baseline_network(example_cfg):
    from airlab.config import validate_config
    from airlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.baseline: 'nvil' is not valid with elbo=trace_enum"):
        validate_config(example_cfg(["experiment=ssvae_enum", "model.baseline=nvil"]))
