"""airlab: config-driven experiments for probabilistic deep learning with Pyro.

The public API for model authors (docs/your_model.md; kept stable, and any change is named in
docs/CHANGELOG.md)::

    from airlab import GenerativeModel, Range, OneOf

Names are imported on first use, so ``import airlab`` stays cheap (no torch until a name needs it).
"""

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

#: The configs every command composes: the repository's ``configs/``, installed with the package as
#: ``airlab/configs`` (in a checkout, a link to ``../configs``: one copy).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: The public names and the module each lives in.
PUBLIC_API = {
    # writing a model
    "GenerativeModel": "airlab.contracts.model",
    "BaselineKind": "airlab.contracts.model",
    "DATA_PLATE": "airlab.estimators",
    # declaring options: Annotated[int, Range(ge=1)], Annotated[str, OneOf(("a", "b"))]
    "Range": "airlab.contracts.options",
    "OneOf": "airlab.contracts.options",
    "Excluded": "airlab.contracts.options",
    "ChecksOptions": "airlab.contracts.options",
    # writing an estimator or a data module
    "Estimator": "airlab.estimators",
    "LossOutput": "airlab.estimators",
    "InMemoryDataModule": "airlab.data.in_memory",
    "ArrayDataModule": "airlab.data.arrays",
    # runs and sweeps in a notebook (docs/usage.md, "Runs and sweeps in Python")
    "load_run": "airlab.analysis.runs",
    "Run": "airlab.analysis.runs",
    "load_sweep": "airlab.analysis.sweeps",
    "Sweep": "airlab.analysis.sweeps",
    # errors that end as one line and exit code 2
    "ConfigError": "airlab.errors",
    "DataError": "airlab.errors",
}

__all__ = sorted(PUBLIC_API)


def __getattr__(name: str) -> Any:
    if name in PUBLIC_API:
        return getattr(importlib.import_module(PUBLIC_API[name]), name)
    raise AttributeError(f"module 'airlab' has no attribute {name!r}")


def quiet_third_party_warnings() -> None:
    """Silence library noise that says nothing about the user's run. Called at task start, since
    imports made later (Hydra, Lightning) may reset the warning filters."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


quiet_third_party_warnings()


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdverts())
