"""Rules for the parameters of third-party classes that a config builds (torch and Pyro optimizers, the
Lightning trainer, callbacks and loggers): their signatures give types only, so their ranges and choices
are stated here, by the module of the class. :mod:`airlab.config.validate` applies them.
"""

from __future__ import annotations

import re
from typing import Any

from airlab.contracts.options import OneOf, Predicate, Range, Rule

#: Lightning's duration strings, ``DD:HH:MM:SS``.
DURATION = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")
TIMEDELTA_KEYS = {"weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_duration(value: Any) -> bool:
    """``"00:12:00:00"`` or a dict of ``datetime.timedelta`` keyword arguments (Lightning's ``max_time``)."""
    if isinstance(value, str):
        return bool(DURATION.match(value))
    return (
        isinstance(value, dict)
        and bool(value)
        and set(value) <= TIMEDELTA_KEYS
        and all(_number(v) and 0 <= v < float("inf") for v in value.values())
    )


def is_batch_limit(value: Any) -> bool:
    """A count of batches (an int >= 0) or a fraction of them (a float in [0, 1])."""
    if isinstance(value, bool) or not _number(value):
        return False
    return value >= 0 if isinstance(value, int) else 0.0 <= value <= 1.0


def is_val_check_interval(value: Any) -> bool:
    """Steps between validations (an int >= 1), a fraction of an epoch (in (0, 1]) or a duration."""
    if isinstance(value, str):
        return is_duration(value)
    if isinstance(value, bool) or not _number(value):
        return False
    return value >= 1 if isinstance(value, int) else 0.0 < value <= 1.0


BATCH_LIMIT = Predicate(is_batch_limit, "a count of batches (an int >= 0) or a fraction in [0, 1]")

#: Ranges of the torch and Pyro optimizers' parameters (their signatures give types only), by name.
OPTIMIZER_RULES: dict[str, Rule] = {
    "lr": Range(gt=0),
    "eps": Range(gt=0),
    "weight_decay": Range(ge=0),
    "betas": Range(ge=0, lt=1),
    "momentum": Range(ge=0),
    "alpha": Range(ge=0, le=1),
    "clip_norm": Range(gt=0),
    "lrd": Range(gt=0, le=1),
}
OPTIMIZER_MODULES = ("torch.optim.", "pyro.optim.")
#: Ranges of torch's learning-rate schedules' parameters (configs/scheduler), by name.
SCHEDULER_RULES: dict[str, Rule] = {
    "milestones": Range(ge=1),
    "gamma": Range(gt=0, le=1),
    "T_max": Range(ge=1),
    "eta_min": Range(ge=0),
}
#: Ranges and choices of the Lightning trainer's parameters (``devices`` is checked against the
#: hardware in :func:`airlab.config.combinations.check_devices`).
TRAINER_RULES: dict[str, Rule] = {
    "accelerator": OneOf(("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla")),
    "max_epochs": Range(ge=-1),
    "min_epochs": Range(ge=0),
    "max_steps": Range(ge=-1),
    "min_steps": Range(ge=0),
    "num_nodes": Range(ge=1),
    "check_val_every_n_epoch": Range(ge=1),
    "log_every_n_steps": Range(ge=0),
    "num_sanity_val_steps": Range(ge=-1),
    "accumulate_grad_batches": Range(ge=1),
    "gradient_clip_val": Range(ge=0),
    "gradient_clip_algorithm": OneOf(("norm", "value")),
    **dict.fromkeys(
        ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"),
        BATCH_LIMIT,
    ),
    "overfit_batches": BATCH_LIMIT,
    "val_check_interval": Predicate(
        is_val_check_interval, "steps (an int >= 1), a fraction of an epoch in (0, 1], or DD:HH:MM:SS"
    ),
    "max_time": Predicate(
        is_duration, "a duration DD:HH:MM:SS (e.g. 00:00:10:00) or a dict of days, hours, ..."
    ),
}
#: Ranges and choices of Lightning's callbacks' parameters (checkpoints, early stopping, lr monitor).
CALLBACK_RULES: dict[str, Rule] = {
    "mode": OneOf(("min", "max")),
    **dict.fromkeys(("every_n_epochs", "every_n_train_steps", "patience", "min_delta"), Range(ge=0)),
    "save_top_k": Range(ge=-1),
    "logging_interval": OneOf(("step", "epoch")),
}
#: Rules of third-party parameters, by the module prefix of the target class.
LIBRARY_RULES: dict[str, dict[str, Rule]] = {
    "torch.optim.lr_scheduler.": SCHEDULER_RULES,  # before "torch.optim.": the first prefix that fits wins
    **dict.fromkeys(OPTIMIZER_MODULES, OPTIMIZER_RULES),
    "pytorch_lightning.trainer.": TRAINER_RULES,
    "pytorch_lightning.callbacks.": CALLBACK_RULES,
}
#: Classes whose ``**kwargs`` go to another class than their base (TensorBoard's ``SummaryWriter``):
#: their unknown keys are left to them.
OPEN_KEYWORDS = ("pytorch_lightning.loggers.tensorboard.TensorBoardLogger",)
