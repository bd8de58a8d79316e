"""airlab: config-driven experiments for probabilistic deep learning with Pyro."""

import logging
import warnings

__version__ = "0.1.0"


def quiet_third_party_warnings() -> None:
    """Silence library noise that says nothing about the user's run. Called at task start, since
    imports made later (Hydra, Lightning) may reset the warning filters."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


quiet_third_party_warnings()


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdverts())
