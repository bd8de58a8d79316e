"""A researcher's own model, data and configs, in a folder of their own, through the console scripts.

The package and the ``conf/`` folder are written into a temporary folder (nothing under ``airlab/``); the
commands are ``airlab-train`` and ``airlab-evaluate`` as ``pip install`` puts them beside the
interpreter. Subprocesses, each importing torch: a few, sharing one project.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from airlab import GenerativeModel
from airlab.config import validate_config
from airlab.errors import ConfigError
from airlab.training.build import build_module

BIN = Path(sys.executable).parent

#: Factor analysis of vectors: z ~ N(0, I_k), x ~ N(W z + b, sd^2 I), an amortised Gaussian guide.
MODEL_SOURCE = '''
from typing import Annotated

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from airlab import GenerativeModel, Range


class FactorAnalysis(GenerativeModel):
    """Vectors x [B, D] from k factors."""

    inputs = ("x",)
    max_plate_nesting = 1

    def __init__(
        self,
        data_shape: tuple[int, ...] = (8,),
        latent_dim: Annotated[int, Range(ge=1)] = 2,
        noise_sd: Annotated[float, Range(gt=0)] = 0.5,
    ) -> None:
        super().__init__()
        (dim,) = data_shape
        self.latent_dim, self.noise_sd = latent_dim, noise_sd
        self.loading = nn.Linear(latent_dim, dim)
        self.encoder = nn.Linear(dim, 2 * latent_dim)

    def model(self, x):
        pyro.module("fa", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.loading(z), self.noise_sd).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("fa", self)
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
'''

MODEL_YAML = """
# my factor analysis; it brings its data, as airlab's AIR brings MultiMNIST
defaults:
  - _self_
  - override /data@_global_.data: vectors
_target_: mypkg.model.FactorAnalysis
latent_dim: 2
noise_sd: 0.5
"""

DATA_YAML = """
defaults:
  - arrays
  - _self_
path: vectors.npz
keys: [x]
"""


def write_project(root: Path) -> Path:
    """``root/mypkg`` (the model), ``root/conf`` (its configs) and ``root/vectors.npz`` (400 vectors)."""
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "model.py").write_text(MODEL_SOURCE)
    for group, text in (("model/mine.yaml", MODEL_YAML), ("data/vectors.yaml", DATA_YAML)):
        (root / "conf" / group).parent.mkdir(parents=True, exist_ok=True)
        (root / "conf" / group).write_text(textwrap.dedent(text).lstrip())
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2))
    x = z @ rng.normal(size=(2, 8)) + 0.5 * rng.normal(size=(400, 8))
    np.savez(root / "vectors.npz", x=x.astype(np.float64), label=rng.integers(0, 3, 400))
    return root


def airlab(command: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``airlab-<command> args...`` run from ``cwd``."""
    return subprocess.run(
        [str(BIN / f"airlab-{command}"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


FAST = ["debug=fast", "callbacks.progress_bar=null"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def trained(project) -> Path:
    """One training run from the project folder (the folder's own package is importable there)."""
    result = airlab("train", "-cd", "conf", "model=mine", "seed=0", *FAST, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (project / "outputs" / "debug").glob("*/*/metrics.json")
    return run.parent


def test_console_script_trains_a_users_model_on_its_arrays(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["seed"] == 0
    assert np.isfinite(metrics["val/elbo"]) and np.isfinite(metrics["test/elbo"])
    config = OmegaConf.load(trained / ".hydra" / "config.yaml")
    assert config.model._target_ == "mypkg.model.FactorAnalysis"
    assert config.data._target_ == "airlab.data.arrays.ArrayDataModule"  # the model's default data
    assert (trained / "train.log").is_file() and (trained / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow  # a subprocess: the same behaviour is tested in-process in the fast suite
def test_resume_and_evaluate_a_users_model(project, trained):
    last = trained / "checkpoints" / "last.ckpt"
    resumed = airlab(
        "train",
        "-cd",
        "conf",
        "model=mine",
        f"ckpt_path={last}",
        "trainer.max_steps=9",
        "trainer.max_epochs=3",
        *FAST,
        cwd=project,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = sorted(project.glob("outputs/debug/*/*/metrics.json"), key=os.path.getmtime)
    assert json.loads(runs[-1].read_text())["global_step"] == 9

    evaluated = airlab("evaluate", "-cd", "conf", f"ckpt_path={last}", "eval.iwae_k=4", cwd=project)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (results,) = project.glob("outputs/evaluate/*/*/evaluation.json")
    results = json.loads(results.read_text())
    assert results["model"] == "FactorAnalysis" and results["num_images"] == 40  # the 10% test rows
    assert np.isfinite(results["test/elbo"]) and results["test/iwae"] >= results["test/elbo"] - 1.0


@pytest.mark.slow  # a subprocess: the same behaviour is tested in-process in the fast suite
def test_sweep_from_another_folder_with_the_package_on_pythonpath(project, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = airlab(
        "train",
        "-cd",
        str(project / "conf"),
        "-m",
        "model=mine",
        "seed=0,1",
        f"data.path={project / 'vectors.npz'}",
        *FAST,
        cwd=work,
        env={"PYTHONPATH": str(project)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = work.glob("outputs/debug/multirun/*/summary.csv")
    rows = list(csv.DictReader(summary.open()))
    assert [row["seed"] for row in rows] == ["0", "1"]
    assert all(np.isfinite(float(row["val/elbo"])) for row in rows)


def test_a_users_out_of_range_option_is_one_line_and_exit_2(project):
    result = airlab("train", "-cd", "conf", "model=mine", "model.latent_dim=0", *FAST, cwd=project)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["airlab error: model.latent_dim: 0 is out of range; must be >= 1"]


# -- in process: the same project, composed as the command composes it ---------------------------------


@pytest.fixture
def user_cfg(tmp_path, monkeypatch, make_cfg):
    """``make_cfg`` with the project's package importable and its configs on the search path."""
    root = write_project(tmp_path / "project")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(root)

    def make(overrides: list[str]):
        return make_cfg([f"hydra.searchpath=[file://{root / 'conf'}]", *overrides])

    return make


def test_a_users_model_gets_its_data_shape_and_the_validators_checks(user_cfg):
    cfg = user_cfg(["model=mine", *FAST])
    validate_config(cfg)
    module = build_module(cfg, instantiate(cfg.data))
    assert module.model.loading.out_features == 8  # data_shape = (8,), one row of the file's "x"
    with pytest.raises(ConfigError, match=r"^model.noise_sd: -1.0 is out of range; must be > 0$"):
        validate_config(user_cfg(["model=mine", "model.noise_sd=-1.0"]))
    with pytest.raises(
        ConfigError, match=r"^model.latent_dims: unknown key; valid keys: latent_dim, noise_sd"
    ):
        validate_config(user_cfg(["model=mine", "+model.latent_dims=3"]))


def test_a_user_model_missing_an_input_key_is_refused_in_one_line(user_cfg):
    cfg = user_cfg(["model=mine", "data.keys=[label]"])
    data = instantiate(cfg.data)
    with pytest.raises(ConfigError, match=r"^data: model=factoranalysis reads batch key 'x', which"):
        build_module(cfg, data)  # its inputs are ("x",): this data has only label


class NoParticleBatches(GenerativeModel):
    """A user's model class (any module) that declares it cannot run particles as a batch dimension."""

    supports_vectorized_particles = False


def test_estimator_combinations_apply_to_a_users_model(user_cfg):
    validate_config(user_cfg(["model=mine", "elbo=trace_enum"]))
    validate_config(user_cfg(["model=mine", "elbo=meanfield"]))  # fully reparameterised: allowed
    cfg = user_cfg(["model=mine", "elbo=trace", "elbo.vectorize_particles=true"])
    with open_dict(cfg):
        cfg.model = {"_target_": "tests.test_cli_user_project.NoParticleBatches"}
    with pytest.raises(
        ConfigError, match=r"^elbo.vectorize_particles: true is not valid for model=noparticle"
    ):
        validate_config(cfg)


def test_arrays_data_scales_uint8_keeps_ints_and_splits(tmp_path):
    from airlab.data.arrays import ArrayDataModule

    path = tmp_path / "a.pt"
    images = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    torch.save({"image": images, "label": torch.arange(50), "w": torch.ones(50, dtype=torch.float64)}, path)
    data = ArrayDataModule(str(path), batch_size=8, val_fraction=0.2, test_fraction=0.1, split_seed=3)
    data.setup()
    assert {k: len(v) for k, v in data.datasets.items()} == {"train": 35, "val": 10, "test": 5}
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["image"].max() <= 1.0
    assert batch["label"].dtype == torch.int64 and batch["w"].dtype == torch.float32
    rows = batch["label"]
    assert torch.equal(batch["image"], images[rows].float() / 255)  # rows stay together
    again = ArrayDataModule(str(path), batch_size=8, val_fraction=0.2, test_fraction=0.1, split_seed=3)
    again.setup()
    assert torch.equal(again.datasets["val"].tensors["label"], data.datasets["val"].tensors["label"])


@pytest.mark.parametrize(
    ("arrays", "keys", "message"),
    [
        (None, None, r"^data.path: file not found: .*missing.npz$"),
        ({"x": np.ones((5, 2)), "y": np.ones(4)}, None, r"different lengths \(x: 5, y: 4\)$"),
        ({"x": np.ones((5, 2))}, ["x", "label"], r"^data.keys: 'label' is not in .*; its arrays: x$"),
        ({"x": np.array([None] * 5, dtype=object)}, None, r"cannot be read as arrays"),
    ],
)
def test_arrays_data_refuses_bad_files_in_one_line(tmp_path, arrays, keys, message):
    from airlab.data.arrays import ArrayDataModule
    from airlab.errors import AirlabError

    path = tmp_path / "missing.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    with pytest.raises(AirlabError, match=message) as info:
        ArrayDataModule(str(path), keys=keys).setup()
    assert "\n" not in str(info.value)
