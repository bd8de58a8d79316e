"""torch's and numpy's private pieces behind airlab.compat.torch_internals still behave as relied on."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from airlab.compat.torch_internals import (
    IndexSamplerHook,
    add_load_state_dict_pre_hook,
    numpy_array_types,
    summary_file_writer,
    tensor_norms,
)


def test_tensor_norms_are_each_tensors_2_norm_and_see_a_nan():
    tensors = [torch.tensor([3.0, 4.0]), torch.tensor([[1.0, float("nan")]])]
    norms = tensor_norms(tensors)
    assert float(norms[0]) == pytest.approx(5.0) and torch.isnan(norms[1])


def test_the_index_sampler_hook_is_read_once_per_pass_and_used():
    class FirstBatchOnly(IndexSamplerHook):
        calls = 0

        def wrap_index_sampler(self, sampler):
            FirstBatchOnly.calls += 1
            return [next(iter(sampler))]

    loader = FirstBatchOnly(list(range(10)), batch_size=4)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3]]
    assert FirstBatchOnly.calls == 1
    assert issubclass(FirstBatchOnly, DataLoader)


def test_summary_file_writer_takes_a_prepared_summary(tmp_path):
    from torch.utils.tensorboard.summary import scalar

    writer = SummaryWriter(tmp_path)
    summary_file_writer(writer).add_summary(scalar("x", 1.0), global_step=0)
    writer.close()
    assert any(p.name.startswith("events.out.tfevents") and p.stat().st_size > 0 for p in tmp_path.iterdir())


def test_numpy_arrays_load_under_weights_only_with_the_array_types():
    buffer = io.BytesIO()
    torch.save({"state": np.arange(3, dtype=np.int64)}, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(numpy_array_types()):
        loaded = torch.load(buffer, weights_only=True)
    assert loaded["state"].tolist() == [0, 1, 2]


def test_a_load_state_dict_pre_hook_sees_the_state_and_the_prefix():
    seen = []

    class Old(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))
            add_load_state_dict_pre_hook(self, self.rename)

        def rename(self, state_dict, prefix, *rest):
            seen.append(prefix)
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "old_weight")

    parent = torch.nn.Sequential(Old())
    parent.load_state_dict({"0.old_weight": torch.ones(2)})
    assert seen == ["0."] and torch.equal(parent[0].weight.detach(), torch.ones(2))
