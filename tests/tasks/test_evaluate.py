"""evaluate.py on checkpoints from short in-process runs: the JSON, the pictures, the refusals.

One VAE and one tiny AIR are trained once per module (debug=fast: 6 and 2 steps); every test then
evaluates their checkpoints in-process. Bounds and t-SNE have their own tests in test_eval_bounds.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from airlab.data.mnist import MNISTDataModule
from airlab.errors import CheckpointError, ConfigError
from airlab.tasks.evaluate import evaluate
from airlab.training.run import train
from tests.conftest import FAST, TINY_AIR_MODEL, compose_config, read_events

QUICK = ["eval.iwae_k=8", "eval.iwae_chunk=3", "eval.progress=false", "eval.tsne_points=64"]
TINY_AIR = [
    "data=multimnist",
    "model=air",
    "elbo=tracegraph",
    "data.subset_size=32",
    *TINY_AIR_MODEL,
]


def train_once(root: Path, overrides: list[str]) -> Path:
    # grad_variance off: its 16 extra passes at step 0 would dominate these tiny runs.
    cfg = compose_config(
        "train", FAST + ["seed=0", "callbacks.grad_variance.every_n_steps=0", *overrides], root
    )
    train(cfg)
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    return train_once(tmp_path_factory.mktemp("vae"), ["callbacks.latent_tsne.num_points=48"])


@pytest.fixture(scope="module")
def air_ckpt(tmp_path_factory) -> Path:
    return train_once(tmp_path_factory.mktemp("air"), TINY_AIR)


def test_vae_evaluation_writes_the_json_pictures_and_events(vae_ckpt, make_cfg):
    cfg = make_cfg([f"ckpt_path={vae_ckpt}", *QUICK], name="evaluate")
    results = evaluate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    written = json.loads((run_dir / "evaluation.json").read_text())
    assert written == json.loads(json.dumps(results))
    for key in (
        "test/elbo",
        "test/elbo_sem",
        "test/iwae",
        "test/iwae_k",
        "num_images",
        "ckpt_path",
        "global_step",
    ):
        assert key in written, key
    assert written["test/iwae_k"] == 8 and written["global_step"] == 6
    assert written["num_images"] == 96  # debug=fast's data.subset_size, kept from the trained config
    assert -800 < written["test/elbo"] <= written["test/iwae"] < 0
    assert 0 < written["test/elbo_sem"] < 50
    assert written["tsne_points"] == 64
    for name in ("latent_tsne", "latent_traversal", "interpolation", "reconstructions", "samples"):
        assert (run_dir / f"{name}.png").stat().st_size > 1000, name
    events = read_events(run_dir / "tensorboard")
    assert {"test/latent_tsne", "test/latent_traversal", "test/interpolation"} <= set(events.Tags()["images"])
    assert {"test/elbo", "test/iwae"} <= set(events.Tags()["scalars"])
    assert (run_dir / "tensorboard" / "projector_config.pbtxt").is_file()

    # The training run's own end-of-training t-SNE (callbacks.latent_tsne).
    train_dir = vae_ckpt.parents[1]
    assert (train_dir / "latent_tsne.png").is_file()
    train_events = read_events(train_dir / "tensorboard")
    assert {"val/latent_tsne", "val/latent_traversal", "val/interpolation"} <= set(
        train_events.Tags()["images"]
    )
    projector = (train_dir / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "sprite" in projector and "metadata" in projector


def test_idx_pair_is_evaluated_whole(vae_ckpt, make_cfg, mnist_dir):
    raw = mnist_dir / "MNIST" / "raw"
    overrides = [
        f"ckpt_path={vae_ckpt}",
        "data.source=idx",
        f"data.images={raw / 't10k-images-idx3-ubyte'}",
        f"data.labels={raw / 't10k-labels-idx1-ubyte'}",
        "data.batch_size=8",
        "data.eval_batch_size=null",
        "eval.tsne=false",
        "eval.pictures=false",
        *QUICK,
    ]
    results = evaluate(make_cfg(overrides, name="evaluate"))
    assert results["num_images"] == 20 and results["data_source"] == "idx"  # all 20, no val/test cut
    assert results["test/iwae"] >= results["test/elbo"]


def test_idx_data_module_serves_every_image_for_evaluation(mnist_dir):
    raw = mnist_dir / "MNIST" / "raw"
    dm = MNISTDataModule(
        source="idx", images=str(raw / "t10k-images-idx3-ubyte"), labels=str(raw / "t10k-labels-idx1-ubyte")
    )
    assert dm.evaluation_split("test") == "all"
    labels = torch.cat([b["label"] for b in dm.dataloader("all")])
    assert len(labels) == 20 and len(dm.datasets["test"]) == 2  # training keeps its 10% test cut
    assert MNISTDataModule(source="bundled").evaluation_split("val") == "val"


@pytest.mark.parametrize(
    "override,pattern",
    [
        (
            "model.z_dim=10",
            r"model\.z_dim=10 \(trained with 50\).*encoder\.fc21\.weight has shape \[50, 400\]",
        ),
        ("model=air", r"holds a VAE model .*airlab\.models\.air\.AIR; drop the model override"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(vae_ckpt, make_cfg, override, pattern):
    with pytest.raises(CheckpointError, match=pattern) as info:
        evaluate(make_cfg([f"ckpt_path={vae_ckpt}", override, *QUICK], name="evaluate"))
    assert "\n" not in str(info.value) and str(vae_ckpt) in str(info.value)


def test_missing_or_unreadable_checkpoint_names_ckpt_path(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path: required"):
        evaluate(make_cfg(QUICK, name="evaluate"))
    with pytest.raises(ConfigError, match="ckpt_path: file not found"):
        evaluate(make_cfg([f"ckpt_path={tmp_path / 'nope.ckpt'}", *QUICK], name="evaluate"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt is not a readable checkpoint"):
        evaluate(make_cfg([f"ckpt_path={junk}", *QUICK], name="evaluate"))
    with pytest.raises(ConfigError, match="eval.split: 'train' is not valid"):
        evaluate(make_cfg(["eval.split=train"], name="evaluate"))


def test_overrides_replay_on_the_trained_config(vae_ckpt, make_cfg):
    from airlab.config.replay import merge_overrides
    from airlab.resume.checkpoint import load_checkpoint

    trained = load_checkpoint(vae_ckpt)["airlab_config"]
    overrides = [
        "data.batch_size=7",
        "model=vae",
        "eval.iwae_k=3",
        f"ckpt_path={vae_ckpt}",
        "~data.val_fraction",
    ]
    composed = make_cfg(overrides, name="evaluate")
    merged = merge_overrides(trained, composed, overrides, ("model", "data"))
    assert merged.data.batch_size == 7 and merged.data.subset_size == 96  # the rest is the trained config
    assert merged.model.z_dim == 50 and "val_fraction" not in merged.data
    assert merged.ckpt_path == trained["ckpt_path"] and "eval" not in merged


def test_air_evaluation_writes_counts_confusion_and_attention_pictures(air_ckpt, make_cfg):
    cfg = make_cfg([f"ckpt_path={air_ckpt}", *QUICK], name="evaluate")
    results = evaluate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    written = json.loads((run_dir / "evaluation.json").read_text())
    assert written["model"] == "AIR" and written["num_images"] == 32
    confusion = torch.tensor(written["test/count_confusion"])
    assert confusion.shape == (4, 4) and int(confusion.sum()) == 32  # counts 0..max_steps=3
    assert written["test/count_accuracy"] == pytest.approx(float(confusion.diagonal().sum()) / 32)
    assert written["test/iwae"] >= written["test/elbo"]
    for name in ("attention", "windows", "count_confusion"):
        assert (run_dir / f"{name}.png").is_file(), name
    # During training: AttentionLogger's per-step windows; the latent t-SNE callback did nothing.
    train_dir = air_ckpt.parents[1]
    train_images = set(read_events(train_dir / "tensorboard").Tags()["images"])
    assert {"val/attention", "val/windows"} <= train_images and "val/latent_tsne" not in train_images
    assert not (train_dir / "latent_tsne.png").exists()
    # 2 training steps: there are errors to show (the picture exactly when accuracy is below 1).
    assert written["test/count_accuracy"] < 1
    assert results["pictures"]["count_errors"] == "count_errors.png"
    assert (run_dir / "count_errors.png").is_file()


@pytest.mark.slow  # a subprocess: the same behaviour is tested in-process in the fast suite
def test_script_refuses_a_mismatched_override_with_one_line(vae_ckpt, tmp_path):
    from tests.test_cli import run_script

    result = run_script("evaluate.py", f"ckpt_path={vae_ckpt}", "model.z_dim=10", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"airlab error: ckpt_path: {vae_ckpt} does not fit"), lines
    assert "model.z_dim=10 (trained with 50)" in lines[0]


def test_eval_split_val_scores_the_validation_images(vae_ckpt, make_cfg):
    """``eval.split=val`` scores the validation split: its keys are ``val/*``, and with the same
    ``eval.seed`` its bounds differ from the test split's (other images), which a task that scored the
    test images under the name ``val`` would not show."""
    plain = [f"ckpt_path={vae_ckpt}", "eval.tsne=false", "eval.pictures=false", "eval.seed=3", *QUICK]
    on_test = evaluate(make_cfg(plain, name="evaluate", run="test"))
    val_cfg = make_cfg([*plain, "eval.split=val"], name="evaluate", run="val")
    on_val = evaluate(val_cfg)
    assert on_val["split"] == "val" and on_test["split"] == "test"
    assert {"val/elbo", "val/iwae", "val/elbo_sem", "val/iwae_k"} <= set(on_val)
    assert not any(key.startswith("test/") for key in on_val)
    assert on_val["num_images"] == 96  # debug=fast's subset of the validation split
    assert -800 < on_val["val/elbo"] <= on_val["val/iwae"] < 0
    assert abs(on_val["val/elbo"] - on_test["test/elbo"]) > 1e-3
    written = json.loads((Path(val_cfg.paths.output_dir) / "evaluation.json").read_text())
    assert written["val/elbo"] == on_val["val/elbo"]
    assert {"val/elbo", "val/iwae"} <= set(
        read_events(Path(val_cfg.paths.output_dir) / "tensorboard").Tags()["scalars"]
    )
