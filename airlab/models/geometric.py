"""The geometric recursion: a stochastic function whose number of random choices is itself random.

This is the shape of AIR's "how many objects" latent. ``geometric`` keeps flipping a coin and stops at
the first success, so each run of it records a different number of ``pyro.sample`` sites.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch


def geometric(p: float | torch.Tensor, t: int = 0) -> int:
    """Draw ``flip_0, flip_1, ...`` ~ Bernoulli(p) until the first 1; return the number of 0s.

    The count is Geometric(p): P(k) = (1 - p)^k p.
    """
    flip = pyro.sample(f"flip_{t}", dist.Bernoulli(torch.as_tensor(p, dtype=torch.float)))
    if flip.item() == 1:
        return t
    return geometric(p, t + 1)


def truncated_geometric_pmf(presence_prob: float, max_steps: int) -> torch.Tensor:
    """Count pmf when each of at most ``max_steps`` objects is present with ``presence_prob``, given
    the previous one was: P(n) = q^n (1 - q) for n < max_steps, P(max_steps) = q^max_steps.
    """
    q = torch.as_tensor(presence_prob, dtype=torch.float64)
    n = torch.arange(max_steps + 1, dtype=torch.float64)
    pmf = q**n * (1 - q)
    pmf[-1] = q**max_steps
    return pmf
