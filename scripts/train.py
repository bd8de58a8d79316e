"""Train a model: `python scripts/train.py [overrides]` (see README; `--cfg job` lists the keys)."""

import hydra
from omegaconf import DictConfig

from airlab.errors import report_user_errors, run_hydra_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from airlab.tasks.train import train

    return report_user_errors(train, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
