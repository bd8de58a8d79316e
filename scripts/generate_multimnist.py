"""Build or validate the MultiMNIST cache: `python scripts/generate_multimnist.py [data.* overrides]`."""

import hydra
from omegaconf import DictConfig

from airlab.errors import report_user_errors, run_hydra_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="generate_multimnist")
def main(cfg: DictConfig) -> None:
    from airlab.tasks.generate_multimnist import generate

    report_user_errors(generate, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
