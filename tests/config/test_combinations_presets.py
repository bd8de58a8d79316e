"""Every preset with every debug option: each cell composes and validates, debug wins where the two
conflict (length, validation, limits, budget), the cheap cells run with ``debug=fast``, and a
combination that cannot work is refused in one line."""

from __future__ import annotations

import pytest

from airlab.config import validate_config
from airlab.errors import ConfigError
from airlab.training.run import run_training
from tests.config.test_validate import options

DEBUG = ["fast", "limit", "overfit", "profiler"]
PRESETS = [
    *(("train", f"experiment={name}") for name in options("experiment")),
    *(("train", f"hparams_search={name}") for name in options("hparams_search")),
    *(("study", f"study={name}") for name in options("study")),
]
CELLS = [(config, preset, debug) for config, preset in PRESETS for debug in DEBUG]


def test_the_matrix_covers_every_preset():
    assert len(PRESETS) == 8 and len(CELLS) == 32


@pytest.mark.parametrize(("config", "preset", "debug"), CELLS)
def test_every_cell_composes_validates_and_debug_wins(make_cfg, config, preset, debug):
    cfg = make_cfg([preset, f"debug={debug}", "data.source=bundled"], name=config)
    validate_config(cfg)
    trainer = cfg.trainer
    # A debug run goes to outputs/debug; a study keeps its own folder (study.yaml names it).
    assert cfg.task_name == ("study" if config == "study" else "debug") and trainer.max_time is None
    if debug == "fast":
        assert (trainer.max_steps, trainer.max_epochs, trainer.val_check_interval) == (6, 2, None)
        assert trainer.check_val_every_n_epoch == 1 and cfg.data.subset_size == 96
    else:
        assert trainer.max_steps == -1 and trainer.val_check_interval is None
        assert trainer.check_val_every_n_epoch == 1


@pytest.mark.parametrize(("config", "preset"), PRESETS)
def test_every_preset_runs_with_debug_fast(make_cfg, config, preset):
    overrides = [preset, "debug=fast", "data.source=bundled", "callbacks.progress_bar=null", "seed=0"]
    if config == "study":  # one job of the study's multirun: its first arm
        overrides.append("study_arm=tracegraph_nvil")
    metrics = run_training(make_cfg(overrides, name=config))
    assert metrics["global_step"] == 6


def test_a_validation_interval_longer_than_an_epoch_is_refused_in_one_line(make_cfg):
    cfg = make_cfg(["debug=fast", "data.source=bundled", "trainer.val_check_interval=50"])
    with pytest.raises(ConfigError, match=r"^trainer.val_check_interval: 50 steps is longer than an epoch "
                       r"\(3 training batches\) while check_val_every_n_epoch is set"):  # fmt: skip
        run_training(cfg)
