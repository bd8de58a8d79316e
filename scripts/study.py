"""An estimator study: `python scripts/study.py study=air_estimators [overrides]` (see README).

Runs every arm x seed of the preset as one Hydra multirun and writes study.csv, study.md and study.png
at the sweep root."""

import hydra
from omegaconf import DictConfig

from airlab.errors import report_user_errors, run_hydra_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="study")
def main(cfg: DictConfig) -> float | None:
    from airlab.tasks.study import study_job

    return report_user_errors(study_job, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
