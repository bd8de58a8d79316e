"""The score-function baselines on their own: the decaying average's arithmetic (Pyro's), its one stored
tensor, its guard against non-finite costs, its slice under DDP, and the learned baselines' loss."""

from __future__ import annotations

import pyro
import pytest
import torch
from torch import nn

from airlab.compat.pyro_internals import store_tensor
from airlab.estimators import baselines
from airlab.estimators.baselines import AVERAGE_PREFIX, construct_baseline, decaying_average


def site(**baseline):
    return {"infer": {"baseline": baseline}}


def test_decaying_average_returns_the_average_before_the_update():
    first = decaying_average("z", torch.tensor([2.0, 4.0]), beta=0.9)
    assert torch.equal(first, torch.zeros(2))  # nothing seen yet
    second = decaying_average("z", torch.tensor([12.0, 14.0]), beta=0.9)
    assert torch.allclose(second, torch.tensor([0.2, 0.4]))  # (1 - beta) * first cost
    stored = store_tensor(AVERAGE_PREFIX + "z")
    assert torch.allclose(stored, 0.9 * torch.tensor([0.2, 0.4]) + 0.1 * torch.tensor([12.0, 14.0]))


def test_the_store_holds_one_tensor_per_site_for_the_whole_run():
    decaying_average("z", torch.ones(3), beta=0.5)
    tensor = store_tensor(AVERAGE_PREFIX + "z")
    for step in range(50):
        decaying_average("z", torch.full((3,), float(step)), beta=0.5)
    assert store_tensor(AVERAGE_PREFIX + "z") is tensor  # updated in place, never replaced
    assert list(pyro.get_param_store().keys()) == [AVERAGE_PREFIX + "z"]


def test_a_non_finite_cost_leaves_the_average_alone():
    decaying_average("z", torch.tensor([1.0, 1.0]), beta=0.5)
    before = store_tensor(AVERAGE_PREFIX + "z").detach().clone()
    decaying_average("z", torch.tensor([float("nan"), 3.0]), beta=0.5)
    after = store_tensor(AVERAGE_PREFIX + "z").detach()
    assert float(after[0]) == float(before[0]) and float(after[1]) == pytest.approx(
        0.5 * float(before[1]) + 1.5
    )


def test_another_batch_size_is_one_clear_error():
    decaying_average("z", torch.ones(4), beta=0.9)
    with pytest.raises(ValueError, match="holds 4 batch positions, expected 3"):
        decaying_average("z", torch.ones(3), beta=0.9)


def test_under_ddp_a_rank_updates_its_own_slice_of_the_global_batch(monkeypatch):
    monkeypatch.setattr(baselines, "rank_and_world", lambda: (1, 2))
    old = decaying_average("z", torch.tensor([4.0, 8.0]), beta=0.5)
    assert torch.equal(old, torch.zeros(2))
    stored = store_tensor(AVERAGE_PREFIX + "z")
    assert torch.equal(stored, torch.tensor([0.0, 0.0, 2.0, 4.0]))  # rank 0's half untouched


def test_a_learned_baseline_is_subtracted_and_trained_on_the_squared_error():
    net = nn.Linear(2, 1, bias=False)
    nn.init.constant_(net.weight, 1.0)
    features = torch.tensor([[1.0, 2.0]])
    cost = torch.tensor([5.0])
    baseline, loss = construct_baseline(
        "z", site(nn_baseline=lambda x: net(x).squeeze(-1), nn_baseline_input=features), cost
    )
    assert torch.equal(baseline.detach(), torch.tensor([3.0]))
    assert float(loss) == pytest.approx((5.0 - 3.0) ** 2)
    loss.backward()
    assert torch.equal(net.weight.grad, torch.tensor([[-4.0, -8.0]]))  # d/dw (5 - w.x)^2 = -2 (5 - w.x) x


def test_no_baseline_asked_for_gives_none():
    assert construct_baseline("z", {"infer": {}}, torch.ones(2)) == (None, None)


def test_a_value_and_a_network_together_are_refused():
    with pytest.raises(ValueError, match="cannot be used together"):
        construct_baseline("z", site(nn_baseline=nn.Identity(), baseline_value=torch.ones(1)), torch.ones(1))
