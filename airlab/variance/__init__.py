"""Gradient variance: the estimate, the training callback, the report's configurations and files.

May import: config, contracts, estimators, training, utils.

Gradient variance, one package: the estimate (:mod:`.estimate`), the training callback
(:mod:`.monitor`), the report's configurations and baseline warm-up (:mod:`.configurations`) and the
report's files (:mod:`.outputs`). The report task is ``airlab/tasks/variance_report.py``.
"""
