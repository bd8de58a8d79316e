"""Evaluate a checkpoint: `python scripts/evaluate.py ckpt_path=PATH [overrides]` (see README)."""

import hydra
from omegaconf import DictConfig

from airlab.errors import report_user_errors, run_hydra_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from airlab.tasks.evaluate import evaluate

    report_user_errors(evaluate, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
