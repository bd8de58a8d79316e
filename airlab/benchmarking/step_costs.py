"""The cost of one training step of each estimator arm, side by side on one model and one batch.

An arm is an option of ``configs/study_arm/`` (an estimator and its baseline). Each arm's step is what
the training loop does, without Lightning: the estimator's surrogate on a fixed batch, ``backward``,
the optimizer step. The arms alternate within each repeat, so a busy machine slows them alike; the
figures are medians over repeats of the mean time per step.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from airlab.config.compose import compose_config
from airlab.training.build import module_and_first_batch


def arm_step_seconds(
    arms: list[str], overrides: list[str], steps: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Seconds per step of every arm (``study_arm=<arm>`` on ``configs/study.yaml`` with ``overrides``),
    and each arm's cost relative to the first arm."""
    timings: dict[str, list[float]] = {arm: [] for arm in arms}
    setups = {}
    for arm in arms:
        cfg = compose_config("study", [f"study_arm={arm}", *overrides])
        module, inputs = module_and_first_batch(cfg, seed)
        optimizer = module.make_optimizer()
        setups[arm] = (module, inputs, optimizer, module.loss_scale(inputs[0].shape[0]))
    for _ in range(repeats):
        for arm in arms:
            # The arms share Pyro's param store: each computes with its own module's parameters, and
            # only the decaying-average arm reads its own store entries.
            module, inputs, optimizer, scale = setups[arm]
            for step in range(steps + 2):  # two warm-up steps
                if step == 2:
                    started = time.perf_counter()
                out = module.estimator(module.model_fn, module.guide_fn, *inputs, scale=scale)
                out.surrogate.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            timings[arm].append((time.perf_counter() - started) / steps)
    medians = {arm: statistics.median(values) for arm, values in timings.items()}
    reference = medians[arms[0]]
    return {
        "s_per_step": medians,
        "relative_to_first": {arm: value / reference for arm, value in medians.items()},
        "repeats": timings,
        "threads": torch.get_num_threads(),
    }
