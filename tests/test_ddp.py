"""DDP on two CPU processes (gloo): gradients are averaged, so the ranks keep identical weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import run_script


class WeightDigest(pl.Callback):
    """Each rank writes the sum of every parameter and of the images it trained on."""

    def __init__(self) -> None:
        self.image_sum = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.image_sum += float(batch["image"].double().sum())

    def on_train_end(self, trainer, pl_module) -> None:
        weights = [float(p.detach().double().sum()) for p in pl_module.parameters()]
        path = Path(trainer.default_root_dir) / f"digest_rank{trainer.global_rank}.json"
        path.write_text(
            json.dumps({"weights": weights, "image_sum": self.image_sum, "step": trainer.global_step})
        )


@pytest.mark.slow
def test_ddp_ranks_see_different_data_and_keep_identical_weights(tmp_path):
    result = run_script(
        "train.py",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.source=bundled",
        "data.subset_size=256",
        "data.batch_size=32",
        "trainer.max_steps=5",
        "trainer.max_epochs=5",
        "test=false",
        "callbacks.progress_bar=null",
        "+callbacks.digest._target_=tests.test_ddp.WeightDigest",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    digests = [json.loads((tmp_path / "run" / f"digest_rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0]["step"] == digests[1]["step"] == 5
    assert digests[0]["image_sum"] != pytest.approx(digests[1]["image_sum"])  # different shards
    assert torch.allclose(torch.tensor(digests[0]["weights"]), torch.tensor(digests[1]["weights"]), rtol=1e-6)
