"""MultiMNIST: the generator's distribution and geometry, disjoint digits, the cache, the data module,
the config and the script."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from scipy.stats import chisquare

from airlab.config import validate_config
from airlab.data.mnist import load_mnist, split_mnist
from airlab.data.multimnist import MultiMNISTDataModule
from airlab.data.multimnist_render import (
    CanvasParams,
    box_theta,
    generate_canvases,
    render_canvases,
    render_digits,
)
from airlab.errors import ConfigError
from tests.conftest import REPO_ROOT

SMALL = {"num_images": 200, "num_val_images": 40, "num_test_images": 40}


@pytest.fixture(scope="module")
def train_digits() -> tuple[torch.Tensor, torch.Tensor]:
    return split_mnist(load_mnist("bundled", "unused"), 0, 0.1, 0.1).train


#: The canvas options' defaults, from the one place they are written: the data module's signature.
CANVAS_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(MultiMNISTDataModule).parameters.items()
    if name in CanvasParams.__dataclass_fields__
}


def make(digits, n: int, seed: int = 0, **params):
    return generate_canvases(*digits, n, CanvasParams(**{**CANVAS_DEFAULTS, **params}), seed)


def test_same_seed_same_canvases_other_seed_other_canvases(train_digits):
    first, again, other = make(train_digits, 300, 0), make(train_digits, 300, 0), make(train_digits, 300, 1)
    for name in ("images", "count", "digits", "source_index"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert np.array_equal(first.boxes, again.boxes, equal_nan=True)
    assert not np.array_equal(first.images, other.images)
    assert not np.array_equal(first.count, other.count)


@pytest.mark.parametrize("max_digits", [2, 3])
def test_counts_are_uniform_on_0_to_max_digits(train_digits, max_digits):
    arrays = make(train_digits, 3000, max_digits=max_digits)
    observed = np.bincount(arrays.count, minlength=max_digits + 1)
    assert len(observed) == max_digits + 1 and observed.min() > 0
    # Under uniform counts this p-value falls below 0.001 one time in a thousand (fixed seed here).
    assert chisquare(observed).pvalue > 1e-3, observed
    # Slots past the count are padding; those before it are real digits.
    slot = np.arange(max_digits)[None, :]
    filled = slot < arrays.count[:, None]
    assert (arrays.digits[filled] >= 0).all() and (arrays.digits[~filled] == -1).all()
    assert np.isfinite(arrays.boxes[filled]).all() and np.isnan(arrays.boxes[~filled]).all()


def test_boxes_fit_the_canvas_are_about_21px_and_hold_the_pixel_mass(train_digits):
    arrays = make(train_digits, 2000)
    boxes = arrays.boxes[arrays.digits >= 0]  # [digits, 4]
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes >= 0).all() and (boxes <= 50).all()
    np.testing.assert_allclose(width, height, atol=1e-4)
    # 28/s with s ~ N(1.3, 0.1): mean about 21.7 px (sd of the mean over ~2000 digits: ~0.04 px).
    assert abs(width.mean() - 21.7) < 0.3 and width.std() == pytest.approx(1.7, abs=0.3)
    # Pixel mass within the union of boxes (pixel centres inside a box), canvas by canvas.
    centres = np.arange(50) + 0.5
    inside = np.zeros(arrays.images.shape, dtype=bool)
    for slot in range(arrays.boxes.shape[1]):
        x0, y0, x1, y1 = (arrays.boxes[:, slot, k, None] for k in range(4))  # NaN compares False
        in_x, in_y = (centres >= x0) & (centres <= x1), (centres >= y0) & (centres <= y1)
        inside |= in_y[:, :, None] & in_x[:, None, :]
    mass = arrays.images.reshape(len(arrays), -1).sum(1).astype(float)
    inner = (arrays.images * inside).reshape(len(arrays), -1).sum(1)
    assert (mass[arrays.count == 0] == 0).all() and (mass[arrays.count > 0] > 0).all()
    assert (inner[mass > 0] / mass[mass > 0]).min() > 0.99


def test_redraw_never_clips_and_clip_does(train_digits):
    images, labels = train_digits
    for overlap in ("redraw", "clip"):
        arrays = make(train_digits, 600, overlap=overlap)
        assert np.array_equal(
            arrays.digits[arrays.source_index >= 0],
            labels.numpy()[arrays.source_index[arrays.source_index >= 0]],
        )
        summed = render_canvases(images, arrays.source_index, arrays.boxes, 50)
        stored = torch.from_numpy(arrays.images).float()
        # Each canvas is its recorded digits at their recorded boxes, summed (and clipped at 255).
        assert (summed.clamp(0, 255).round() - stored).abs().max() <= 1
        peaks = summed.flatten(1).amax(1)
        if overlap == "redraw":
            assert peaks.max() < 255.5  # no pixel ever exceeds 255, i.e. 1.0 once served
        else:
            assert (peaks >= 255.5).sum() > 10  # overlaps happen and were clipped
            assert arrays.images.max() == 255


def test_render_is_grid_sample_with_align_corners_false_and_matches_air_boxes():
    from airlab.utils.spatial import where_to_box

    generator = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 256, (64, 28, 28), generator=generator).to(torch.uint8)
    width = 28 / (1.3 + 0.2 * torch.randn(64, generator=generator)).clamp(0.8, 2.5)
    corner = torch.rand(64, 2, generator=generator) * (50 - width[:, None])
    boxes = torch.cat([corner, corner + width[:, None]], 1)
    theta = box_theta(boxes, 50)
    grid = F.affine_grid(theta, [64, 1, 50, 50], align_corners=False)
    expected = F.grid_sample(digits[:, None].float(), grid, align_corners=False)[:, 0]
    assert (render_digits(digits, boxes, 50) - expected).abs().max() < 1e-2
    # theta is AIR's [[s, 0, x], [0, s, y]]: the model's box for that z_where is the generator's box.
    z_where = torch.stack([theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 2]], -1)
    torch.testing.assert_close(where_to_box(z_where, 50), boxes, atol=1e-3, rtol=0)


def test_canvas_splits_use_disjoint_digits_of_their_mnist_split(tmp_path):
    dm = MultiMNISTDataModule(source="bundled", data_dir=str(tmp_path), **SMALL)
    splits = dm.load_digits()
    used = {}
    for split in ("train", "val", "test"):
        arrays = dm.load_split(split).arrays
        images, labels = getattr(splits, split)
        rows = arrays.source_index[arrays.source_index >= 0]
        assert np.array_equal(arrays.digits[arrays.source_index >= 0], labels.numpy()[rows])
        rendered = render_canvases(images, arrays.source_index, arrays.boxes, 50).round()
        assert torch.equal(rendered, torch.from_numpy(arrays.images).float())  # made from this split
        used[split] = {images[row].numpy().tobytes() for row in set(rows.tolist())}
    assert used["train"] and used["val"] and used["test"]
    assert (
        not used["train"] & used["val"]
        and not used["train"] & used["test"]
        and not used["val"] & used["test"]
    )


def test_cache_is_loaded_keyed_by_parameters_and_rebuilt_when_stale(mnist_dir, caplog):
    caplog.set_level(logging.INFO, logger="airlab.data.multimnist")
    kwargs = dict(source="torchvision", data_dir=str(mnist_dir), **SMALL)
    first = MultiMNISTDataModule(**kwargs).load_split("train")
    assert first.built and first.reason == "no cache yet" and first.path.parent == mnist_dir / "multimnist"
    manifest_path = first.path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    assert (
        manifest["parameters"]["mnist_source"] == "torchvision"
        and manifest["parameters"]["num_images"] == 200
    )
    assert manifest["sizes"]["count"] == np.bincount(first.arrays.count, minlength=3).tolist()
    caplog.clear()

    again = MultiMNISTDataModule(**kwargs).load_split("train")
    assert not again.built and again.path == first.path
    assert np.array_equal(again.arrays.images, first.arrays.images)
    assert "loaded 200 canvases from cache" in caplog.text

    other = MultiMNISTDataModule(**{**kwargs, "seed": 1}).load_split("train")
    assert other.built and other.path != first.path and first.path.is_file()
    bundled = MultiMNISTDataModule(**{**kwargs, "source": "bundled"}).load_split("train")
    assert bundled.built and bundled.path != first.path  # the MNIST source is part of the key

    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))
    caplog.clear()
    rebuilt = MultiMNISTDataModule(**kwargs).load_split("train")
    assert rebuilt.built and "checksum" in rebuilt.reason
    assert "rebuilding cache" in caplog.text and "checksum" in caplog.text
    assert np.array_equal(rebuilt.arrays.images, first.arrays.images)  # the same canvases again

    manifest = json.loads(manifest_path.read_text())
    manifest["parameters"]["seed"] = 5
    manifest_path.write_text(json.dumps(manifest))
    caplog.clear()
    edited = MultiMNISTDataModule(**kwargs).load_split("train")
    assert edited.built and "manifest parameters differ (seed: 5 != 0)" in caplog.text
    assert json.loads(manifest_path.read_text())["parameters"]["seed"] == 0
    assert not list((mnist_dir / "multimnist").glob("*.tmp"))


def test_batches_have_the_documented_shapes_and_types(tmp_path):
    dm = MultiMNISTDataModule(source="bundled", data_dir=str(tmp_path), batch_size=64, **SMALL)
    assert dm.image_shape == (1, 50, 50) and dm.annotations == ("count", "digits", "boxes")
    assert [len(b["image"]) for b in dm.train_dataloader()] == [64, 64, 64]  # ragged last batch dropped
    assert dm.num_train == 200 and sum(len(b["image"]) for b in dm.val_dataloader()) == 40
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (40, 1, 50, 50) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["count"].shape == (40,) and batch["count"].dtype == torch.int64
    assert batch["digits"].shape == (40, 2) and batch["digits"].dtype == torch.int64
    assert batch["boxes"].shape == (40, 2, 4) and batch["boxes"].dtype == torch.float32
    small = MultiMNISTDataModule(
        source="bundled", data_dir=str(tmp_path), image_size=40, max_digits=3, subset_size=16, **SMALL
    )
    batch = next(iter(small.val_dataloader()))
    assert small.image_shape == (1, 40, 40) and batch["image"].shape == (16, 1, 40, 40)
    assert batch["boxes"].shape == (16, 3, 4) and small.num_train == 16


def test_config_composes_validates_and_builds_the_data_module(make_cfg):
    cfg = make_cfg(["data=multimnist"])
    validate_config(cfg)
    assert cfg.data.batch_size == 64 and cfg.data.max_digits == 2 and cfg.data.overlap == "redraw"
    dm = instantiate(cfg.data)
    assert isinstance(dm, MultiMNISTDataModule) and dm.sizes == {"train": 60000, "val": 5000, "test": 5000}
    validate_config(make_cfg([], name="generate_multimnist", run="gen"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.max_digits=-1", "data.max_digits: -1 is out of range; must be >= 1"),
        ("data.overlap=maybe", "data.overlap: 'maybe' is not valid; choose one of: redraw, clip"),
        ("data.source=idx", "data.source: 'idx' is not valid; choose one of: auto, torchvision, bundled"),
        ("data.num_images=0", "data.num_images: 0 is out of range; must be >= 1"),
        ("data.image_size=20", "data.scale_mean: 1.3 makes digits 21.5 px wide, more than the 20 px canvas"),
        ("+data.min_digits=1", "data.min_digits: unknown key"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(make_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(["data=multimnist", override]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_script_builds_then_loads_and_prints_a_table(make_cfg, tmp_path, capsys):
    import airlab.tasks.generate_multimnist as script

    overrides = ["data.source=bundled", *(f"data.{k}={v}" for k, v in SMALL.items())]
    for status in ("built", "loaded"):
        script.generate(make_cfg(overrides, name="generate_multimnist"))
        out = capsys.readouterr().out
        rows = [line for line in out.splitlines() if line.startswith("│ ")]
        assert [row.split("│")[1].strip() for row in rows] == ["train", "val", "test"]
        assert all(status in row for row in rows) and "multimnist-train-" in out
    assert len(list((tmp_path / "run" / "data" / "multimnist").glob("*.npz"))) == 3
    with pytest.raises(SystemExit) as exit_info:
        from airlab.errors import report_user_errors

        report_user_errors(script.generate, make_cfg(["data.max_digits=-1"], name="generate_multimnist"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "airlab error: data.max_digits: -1 is out of range; must be >= 1"
    ]


def test_script_help_lists_the_data_keys(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/generate_multimnist.py"), "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "airlab.data.multimnist.MultiMNISTDataModule" in result.stdout and "overlap: redraw" in result.stdout
    )
