"""Benchmark a training config against a bare Pyro loop: `python scripts/benchmark.py [overrides]`."""

import hydra
from omegaconf import DictConfig

from airlab.errors import report_user_errors, run_hydra_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    from airlab.tasks.benchmark import run_benchmark

    report_user_errors(run_benchmark, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
