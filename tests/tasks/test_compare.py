"""scripts/compare.py's task: a VAE and an AIR run side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from airlab.errors import ConfigError
from airlab.tasks.compare import CompareSettings, compare, count_reading, markdown
from airlab.training.run import train
from tests.conftest import FAST, TINY_AIR_MODEL, compose_config

MULTIMNIST = ["data=multimnist", "data.subset_size=256", "trainer.max_steps=8", "trainer.max_epochs=100"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A VAE and an AIR, a few steps each on the same tiny MultiMNIST, and a VAE on MNIST."""
    root = tmp_path_factory.mktemp("compare")
    shared = [f"paths.data_dir={root / 'data'}", "seed=0"]
    models = {
        "vae": [*FAST, *MULTIMNIST, *shared, "task_name=vae_multimnist"],
        "air": [
            *FAST,
            *MULTIMNIST,
            *shared,
            "task_name=air",
            "model=air",
            "elbo=tracegraph",
            *TINY_AIR_MODEL,
        ],
        "mnist": [*FAST, *shared],
        "other_vae": [*FAST, *MULTIMNIST, *shared, "task_name=other_vae", "optim.lr=0.01"],
    }
    folders = {}
    for name, overrides in models.items():
        folders[name] = root / name
        train(compose_config("train", overrides, folders[name]))
    GlobalHydra.instance().clear()
    return folders


def run_compare(tmp_path: Path, folders: list[Path], *overrides: str) -> dict:
    listed = ",".join(str(f) for f in folders)
    cfg = compose_config(
        "compare", [f"compare.runs=[{listed}]", "compare.progress=false", *overrides], tmp_path
    )
    return compare(cfg)


def test_a_vae_and_air_side_by_side(runs, tmp_path):
    result = run_compare(
        tmp_path, [runs["vae"], runs["air"]], "compare.probe_items=128", "compare.num_images=4"
    )
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert written == json.loads(json.dumps(result))
    vae, air = written["runs"]["vae_multimnist"], written["runs"]["air"]
    assert (vae["model"], air["model"]) == ("VAE", "AIR")
    assert vae["count_from"] == "linear probe of the posterior mean (128 training items)"
    assert air["count_from"] == "inferred"
    assert vae["steps"] == air["steps"] == 8
    for row in (vae, air):
        assert 0.0 <= row["count_accuracy"] <= 1.0 and math.isfinite(row["elbo"])
    assert 0.2 < written["majority_accuracy"] < 0.7  # 0, 1 or 2 digits, about a third each
    assert written["num_items"] > 0
    # the inputs above the VAE's and AIR's reconstructions: 3 rows of 4 canvases (50 px, 2 px padding), x2
    assert Image.open(tmp_path / "reconstructions.png").size == ((4 * 52 + 2) * 2, (3 * 52 + 2) * 2)
    table = (tmp_path / "comparison.md").read_text()
    assert (
        "| vae_multimnist | VAE | 8 |" in table and "top to bottom: the inputs, vae_multimnist, air" in table
    )


def test_each_run_is_measured_on_its_own_weights(runs, tmp_path):
    """Two VAEs register the same module names with Pyro: each must still run on its own weights."""
    alone = run_compare(tmp_path / "alone", [runs["vae"]], "compare.probe_items=128")["runs"][
        "vae_multimnist"
    ]
    both = run_compare(tmp_path / "both", [runs["other_vae"], runs["vae"]], "compare.probe_items=128")["runs"]
    assert both["vae_multimnist"]["elbo"] == pytest.approx(alone["elbo"], rel=1e-6)
    assert both["other_vae"]["elbo"] != pytest.approx(alone["elbo"], rel=1e-3)


def test_runs_of_different_data_or_without_counts_are_refused_in_one_line(runs, tmp_path):
    with pytest.raises(
        ConfigError, match=r"compare.runs: .*mnist was trained on other data .*data\._target_"
    ):
        run_compare(tmp_path, [runs["vae"], runs["mnist"]])
    with pytest.raises(ConfigError, match="compare.runs: .*no true counts"):
        run_compare(tmp_path, [runs["mnist"]])
    with pytest.raises(ConfigError, match="compare.split: 'train'"):
        run_compare(tmp_path, [runs["vae"]], "compare.split=train")
    assert not (tmp_path / "comparison.json").exists()


def test_a_folder_named_twice_gives_two_rows_and_the_picture_may_span_batches(runs, tmp_path):
    result = run_compare(
        tmp_path, [runs["vae"], runs["vae"]], "compare.probe_items=64", "compare.num_images=40"
    )
    first, second = result["runs"]["vae_multimnist #1"], result["runs"]["vae_multimnist #2"]
    assert first["elbo"] == pytest.approx(second["elbo"], rel=1e-6)  # the same weights, the same seed
    # 40 inputs (two evaluation batches of 32) above two rows of reconstructions, 50 px + 2 px padding, x2
    assert Image.open(tmp_path / "reconstructions.png").size == ((40 * 52 + 2) * 2, (3 * 52 + 2) * 2)


class Batches(list):
    batch_size = 4


class LatentOnly:
    has_object_counts, has_latent_space = False, True

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_a_probe_sample_of_one_count_is_refused_naming_probe_items():
    loader = Batches([{"image": torch.rand(4, 1, 2, 2), "count": torch.ones(4, dtype=torch.long)}])
    settings = CompareSettings(
        runs=["run"], checkpoint="last", split="test", num_images=1, probe_items=4, seed=0, picture_scale=1,
        progress=False,
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match="compare.probe_items: 4: the first 4 training items all hold 1 obj"
    ):
        count_reading(LatentOnly(), loader, loader, settings, "vae")


def test_the_caption_lists_only_the_runs_in_the_picture():
    row = {"model": "M", "elbo": 1.0}
    result = {
        "split": "test", "num_items": 4, "majority_accuracy": 0.5,
        "runs": {"a": {**row, "reconstructed": True}, "b": {**row, "reconstructed": False}},
    }  # fmt: skip
    assert "top to bottom: the inputs, a.\n" in markdown(result)
