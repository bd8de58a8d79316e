"""Run folders never collide: ``hydra.run.dir`` (configs/hydra/default.yaml) holds the start time to the
microsecond, so two runs started in the same second get two folders; a sweep's folders are as before."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from tests.conftest import CONFIG_DIR

#: outputs/<task>/<date>/<time>/, <time> as HH-MM-SS-ffffff.
RUN_DIR = re.compile(r"(?P<root>.+)/train/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}")


def composed(name: str = "train") -> DictConfig:
    """The config as ``@hydra.main`` composes it, with Hydra's own node."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=name, overrides=[], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_two_runs_started_at_once_get_two_run_dirs():
    first, second = composed(), composed()
    first_dir, second_dir = str(first.hydra.run.dir), str(second.hydra.run.dir)
    assert first_dir != second_dir
    for run_dir, cfg in ((first_dir, first), (second_dir, second)):
        found = RUN_DIR.fullmatch(run_dir)
        assert found, run_dir
        assert found["root"] == str(cfg.paths.log_dir)
    assert str(first.hydra.run.dir) == first_dir  # one reading of the clock per run: stable once resolved
    # Names sort as the runs started (ckpt_path=last goes by the files' times, not by the names).
    assert sorted([second_dir, first_dir]) == [first_dir, second_dir]


def test_a_sweeps_folders_are_unchanged():
    sweep = composed().hydra.sweep
    assert re.fullmatch(r".+/train/multirun/\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", str(sweep.dir)), sweep.dir
    assert OmegaConf.to_container(sweep, resolve=False)["subdir"] == "${hydra.job.num}"
    assert Path(str(sweep.dir)).parent.name == "multirun"
