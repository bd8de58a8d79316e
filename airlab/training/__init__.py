"""The training glue: the builder, the SVI module, one training run, DDP's child processes.

May import: callbacks, config, contracts, data, estimators, evaluation, models, resume, tracking, utils.
"""
