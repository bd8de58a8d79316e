"""Rules for the parameters of third-party classes that a config builds (torch and Pyro optimizers, the
Lightning trainer, callbacks and loggers): their signatures give types only, so their ranges and choices
are stated here, by the module of the class. :mod:`airlab.config.validate` applies them.
"""

from __future__ import annotations

from airlab.config.options import OneOf, Range, Rule

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
    "limit_train_batches": Range(ge=0),
    "limit_val_batches": Range(ge=0),
    "limit_test_batches": Range(ge=0),
}
#: Rules of third-party parameters, by the module prefix of the target class.
LIBRARY_RULES: dict[str, dict[str, Rule]] = {
    **dict.fromkeys(OPTIMIZER_MODULES, OPTIMIZER_RULES),
    "pytorch_lightning.trainer.": TRAINER_RULES,
}
#: Classes whose ``**kwargs`` go to another class than their base (TensorBoard's ``SummaryWriter``):
#: their unknown keys are left to them.
OPEN_KEYWORDS = ("pytorch_lightning.loggers.tensorboard.TensorBoardLogger",)
