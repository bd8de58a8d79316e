"""What ``scripts/benchmark.py`` measures beyond a training run: AIR against its in-run reference, and
the machine at hand. May import the training glue, models, data and config; no task imports it but the
benchmark."""
