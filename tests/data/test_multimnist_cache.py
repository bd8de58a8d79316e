"""File faults: missing or truncated data give one line naming the file; a corrupt MultiMNIST cache is
rebuilt (and the log says why); concurrent builders produce one good cache; writes are atomic."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from airlab.data.mnist import MNISTDataModule, load_mnist
from airlab.data.multimnist_cache import cache_paths, load_or_build, sha256_file
from airlab.errors import DataError, report_user_errors
from airlab.tracking.sweep import summarise_sweep
from airlab.utils.atomic import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text
from tests.conftest import REPO_ROOT, fake_digits

RAW = Path("MNIST") / "raw"


def one_line_error(capsys, fn, *args) -> str:
    """Run ``fn`` as a script does; it must exit with code 2 and print exactly one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        report_user_errors(fn, *args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("airlab error: "), lines
    return lines[0]


def test_missing_data_dir_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    line = one_line_error(capsys, load_mnist, "torchvision", missing)
    assert f"data.data_dir: data directory not found: {missing}" in line


def test_missing_idx_file_is_one_line_naming_it(mnist_dir, capsys):
    gone = mnist_dir / RAW / "t10k-labels-idx1-ubyte"
    gone.unlink()
    line = one_line_error(capsys, load_mnist, "torchvision", mnist_dir)
    assert "missing t10k-labels-idx1-ubyte" in line and str(mnist_dir / RAW) in line
    elsewhere = mnist_dir / "nowhere" / "labels"
    with pytest.raises(DataError, match=f"data.labels: file not found: {elsewhere} .*does not exist"):
        load_mnist(
            "idx", mnist_dir, images=str(mnist_dir / RAW / "train-images-idx3-ubyte"), labels=elsewhere
        )


@pytest.mark.parametrize(
    ("keep", "message"),
    [(-12, r"is truncated \(47044 bytes; its header promises 47056\)"), (10, "shorter than its IDX header")],
)
def test_truncated_idx_file_is_one_line_naming_it(mnist_dir, capsys, keep, message):
    path = mnist_dir / RAW / "train-images-idx3-ubyte"
    data = path.read_bytes()
    assert len(data) == 16 + 60 * 28 * 28
    path.write_bytes(data[:keep])
    line = one_line_error(capsys, load_mnist, "torchvision", mnist_dir)
    assert f"data.images: {path} " in line
    assert re.search(message, line), line


def test_idx_file_longer_than_its_header_is_corrupt(mnist_dir):
    path = mnist_dir / RAW / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(
        DataError, match=f"data.labels: {path} is corrupt \\(70 bytes; its header promises 68\\)"
    ):
        MNISTDataModule(source="torchvision", data_dir=str(mnist_dir)).setup()


# --- the MultiMNIST cache -------------------------------------------------------------------------------

PARAMETERS = {
    "format": 1,
    "split": "train",
    "num_images": 64,
    "image_size": 40,
    "max_digits": 2,
    "scale_mean": 1.3,
    "scale_sd": 0.1,
    "overlap": "clip",
    "seed": 3,
}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fake_digits(40, seed=5)
    return torch.from_numpy(images), torch.from_numpy(labels)


def build(cache_dir: Path, digits, parameters=PARAMETERS):
    return load_or_build(cache_dir, dict(parameters), *digits)


def assert_same_arrays(first, second) -> None:
    for name in ("images", "count", "digits", "source_index"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert np.array_equal(first.boxes, second.boxes, equal_nan=True)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:  # same length, other bytes: only the checksum can tell
    path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))


def garble_manifest(path: Path) -> None:
    manifest = path.with_suffix(".json")
    manifest.write_text(manifest.read_text()[:40])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            truncate,
            r"arrays file multimnist-train-\w+\.npz is truncated \(\d+ bytes, the manifest records \d+\)",
        ),
        (
            garble,
            r"arrays file multimnist-train-\w+\.npz is corrupt \(its checksum does not match the manifest\)",
        ),
        (
            garble_manifest,
            r"manifest multimnist-train-\w+\.json is unreadable or corrupt \(JSONDecodeError\)",
        ),
    ],
)
def test_damaged_cache_is_rebuilt_and_the_log_says_why(tmp_path, digits, caplog, damage, reason):
    fresh = build(tmp_path / "fresh", digits)
    first = build(tmp_path / "cache", digits)
    manifest = json.loads(first.path.with_suffix(".json").read_text())
    assert manifest["bytes"] == first.path.stat().st_size and manifest["sha256"] == sha256_file(first.path)
    damage(first.path)
    caplog.set_level(logging.INFO, logger="airlab.data.multimnist")
    rebuilt = build(tmp_path / "cache", digits)
    assert rebuilt.built and re.fullmatch(reason, rebuilt.reason), rebuilt.reason
    (record,) = [r for r in caplog.records if "rebuilding cache" in r.getMessage()]
    assert record.levelno == logging.WARNING and str(first.path) in record.getMessage()
    assert re.search(reason, record.getMessage())
    assert_same_arrays(rebuilt.arrays, fresh.arrays)
    with np.load(first.path) as data:  # the file on disk is whole again
        assert np.array_equal(data["images"], fresh.arrays.images)
    assert not build(tmp_path / "cache", digits).built
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_cache_that_cannot_be_rewritten_is_one_line_naming_it(tmp_path, digits, monkeypatch, capsys):
    entry = build(tmp_path, digits)
    truncate(entry.path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("airlab.data.multimnist_cache._write", refuse)
    line = one_line_error(capsys, build, tmp_path, digits)
    assert f"data.data_dir: cannot write the MultiMNIST cache {entry.path} (arrays file" in line
    assert "is truncated" in line and "Permission denied" in line


def test_script_reports_and_rebuilds_a_truncated_cache(make_cfg, tmp_path, capsys, caplog):
    import airlab.tasks.generate_multimnist as script
    from tests.data.test_multimnist import SMALL

    cfg = make_cfg(
        ["data.source=bundled", *(f"data.{k}={v}" for k, v in SMALL.items())], "generate_multimnist"
    )
    script.generate(cfg)
    (train,) = (tmp_path / "run" / "data" / "multimnist").glob("multimnist-train-*.npz")
    truncate(train)
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="airlab.data.multimnist")
    script.generate(cfg)
    statuses = {row.split("│")[1].strip(): row for row in capsys.readouterr().out.splitlines() if "│ " in row}
    assert "rebuilt" in statuses["train"] and "loaded" in statuses["val"] and "loaded" in statuses["test"]
    assert f"rebuilding cache {train}: arrays file {train.name} is truncated" in caplog.text


RACER = """
import hashlib, json, sys, time
from pathlib import Path
import numpy as np, torch
from airlab.data.multimnist_cache import load_or_build
cache_dir, ready, go = (Path(arg) for arg in sys.argv[1:4])
parameters = json.loads(sys.argv[4])
rng = np.random.default_rng(0)
images = torch.from_numpy(rng.integers(0, 120, size=(50, 28, 28), dtype=np.uint8))
labels = torch.from_numpy(rng.integers(0, 10, size=50))
ready.touch()
while not go.exists():
    time.sleep(0.005)
entry = load_or_build(cache_dir, parameters, images, labels)
digest = hashlib.sha256()
for name in ("images", "count", "digits", "boxes", "source_index"):
    digest.update(getattr(entry.arrays, name).tobytes())
print(json.dumps({"built": entry.built, "sha256": digest.hexdigest(), "sum": int(entry.arrays.images.sum())}))
"""


def test_two_processes_racing_build_the_cache_once(tmp_path):
    """Both racers import everything, then start together: one builds under the lock, the other waits
    for it and loads the result (without the lock both would build)."""
    go, cache_dir = tmp_path / "go", tmp_path / "cache"
    parameters = {**PARAMETERS, "num_images": 3000}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(cache_dir), str(tmp_path / f"ready{i}"), str(go)]
            + [json.dumps(parameters)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        assert all(r.poll() is None for r in racers), [r.communicate()[1][-2000:] for r in racers]
        time.sleep(0.05)
    go.touch()
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=240)
        assert racer.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [False, True]  # the second found it valid and loaded it
    assert results[0]["sha256"] == results[1]["sha256"]
    arrays_path, manifest_path = cache_paths(cache_dir, parameters)
    files = sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock")
    assert files == sorted([arrays_path.name, manifest_path.name])  # one cache, no temporary files
    assert json.loads(manifest_path.read_text())["sha256"] == sha256_file(arrays_path)
    with np.load(arrays_path) as data:
        assert int(data["images"].sum()) == results[0]["sum"]


# --- atomic writes --------------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"old": 1}')
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_open(path, "w") as handle:
        handle.write('{"new": ')
        handle.flush()
        raise RuntimeError("disk on fire")
    assert path.read_text() == '{"old": 1}'
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left
    atomic_write_bytes(path, b"\x00new")
    assert path.read_bytes() == b"\x00new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_summary_csv_is_written_to_a_temporary_file_then_renamed(tmp_path, monkeypatch):
    job = tmp_path / "0"
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"val/elbo": -99.5}))
    (tmp_path / "summary.csv").write_text("old summary\n")
    renames = []
    real_replace = os.replace

    def observe(src, dst):
        # At the moment of the rename the whole new table is in the temporary file and the old one
        # is still in place.
        renames.append((Path(src), Path(dst), Path(src).read_text(), Path(dst).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", observe)
    path = summarise_sweep(tmp_path)
    ((src, dst, new_text, old_text),) = renames
    assert dst == path == tmp_path / "summary.csv" and src.parent == tmp_path and src != dst
    assert old_text == "old summary\n" and new_text == path.read_text()
    assert list(csv.DictReader(path.open())) == [{"job": "0", "overrides": "", "val/elbo": "-99.5"}]
    assert not src.exists()
