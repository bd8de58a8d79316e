"""Gradient variance, one package: the estimate (:mod:`.estimate`), the training callback
(:mod:`.monitor`), the report's configurations and baseline warm-up (:mod:`.configurations`) and the
report's files (:mod:`.outputs`). The report task is ``airlab/tasks/variance_report.py``."""
