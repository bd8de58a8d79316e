"""A key written as one interpolation names the key it takes its value from."""

from __future__ import annotations

from omegaconf import OmegaConf

from airlab.config.interpolation import interpolation_source


def test_a_plain_interpolation_names_its_source_and_nothing_else_does():
    cfg = OmegaConf.create(
        {"trainer": {"max_steps": -1}, "scheduler": {"T_max": "${trainer.max_steps}", "eta_min": 0.0}}
    )
    cfg.scheduler.label = "steps: ${trainer.max_steps}"  # not one interpolation: no single source
    assert interpolation_source(cfg, "scheduler.T_max") == "trainer.max_steps"
    assert interpolation_source(cfg, "scheduler.eta_min") is None
    assert interpolation_source(cfg, "scheduler.label") is None
    assert interpolation_source(cfg, "scheduler.missing") is None
    assert interpolation_source(cfg, "nowhere.T_max") is None
