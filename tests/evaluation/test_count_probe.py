"""The linear count probe: it reads a count the features hold, and no more than chance from noise."""

from __future__ import annotations

import pytest
import torch

from airlab.evaluation.count_probe import linear_count_probe, majority_accuracy


def test_the_probe_reads_a_count_that_is_linear_in_the_features_and_not_one_that_is_absent():
    generator = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 3, (600,), generator=generator)
    noise = torch.randn(600, 5, generator=generator)
    encoded = torch.cat([torch.nn.functional.one_hot(counts, 3).double() * 4, noise], 1)
    read = linear_count_probe(encoded[:400], counts[:400], encoded[400:], counts[400:])
    assert read == {"train_accuracy": 1.0, "test_accuracy": 1.0}
    blind = linear_count_probe(noise[:400], counts[:400], noise[400:], counts[400:])
    floor = majority_accuracy(counts[:400], counts[400:])
    assert abs(floor - (counts[400:] == counts[:400].mode().values).double().mean()) < 1e-12
    assert abs(blind["test_accuracy"] - floor) < 0.12  # chance is 1/3; 200 items: SE about 0.033
    with pytest.raises(ValueError, match="at least two different counts"):
        linear_count_probe(noise[:4], torch.zeros(4), noise[:4], torch.zeros(4))
