"""airlab: config-driven experiments for probabilistic deep learning with Pyro."""

import logging
import warnings

__version__ = "0.1.0"

# Noise from third-party libraries that says nothing about the user's run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdverts())
