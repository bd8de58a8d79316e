"""``scripts/benchmark.py``: the VAE against a bare Pyro loop, and AIR against its in-run reference."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from airlab.tasks.benchmark import run_benchmark
from tests.conftest import TINY_AIR_MODEL

TINY_AIR = [
    "experiment=air_pyro_tutorial",
    "data.subset_size=64",
    "data.batch_size=16",
    *TINY_AIR_MODEL,
]


def test_benchmark_writes_the_air_fields(make_cfg):
    air_overrides = "[" + ",".join(f"'{o}'" for o in TINY_AIR) + "]"
    cfg = make_cfg(
        [
            "debug=fast",
            "data.source=bundled",
            "callbacks.progress_bar=null",
            "trainer.max_epochs=1",
            "benchmark.repeats=1",
            "benchmark.bare_loop=false",
            f"benchmark.air.overrides={air_overrides}",
            "benchmark.air.steps=4",
            "benchmark.air.repeats=1",
            f"benchmark.estimators.overrides={air_overrides}",
            "benchmark.estimators.arms=[tracegraph,enum_counts]",
            "benchmark.estimators.steps=2",
            "benchmark.estimators.repeats=1",
        ],
        name="benchmark",
    )
    result = run_benchmark(cfg)
    run_dir = Path(cfg.paths.output_dir)
    written = json.loads((run_dir / "benchmark.json").read_text())
    air = written["air"]
    for key in ("steps_per_s", "reference_steps_per_s", "peak_rss_mb", "images_per_s", "gflop_per_step"):
        assert air[key] > 0, key
    assert [run["steps"] for run in air["runs"]["airlab"]] == [4]
    assert [run["steps"] for run in air["runs"]["reference"]] == [4]
    # both sides were timed in this process, now: the ratio is of this run's own figures
    assert air["speedup_vs_reference"] > 0 and air["reference_steps_per_s"] > 0
    machine = written["machine"]
    assert machine["cpu"] and machine["torch_threads"] >= 1 and machine["matmul_gflops"] > 0.1
    # the floor is this machine's time for the step's arithmetic: the step takes longer
    assert 0 < air["floor_s_per_step"] < 1 / air["steps_per_s"]
    # the memory figure comes from a process of its own, which wrote its run folder
    assert (run_dir / "air_memory_run" / "train.log").is_file()
    assert air["peak_rss_mb"] > 100
    # the child's own high-water mark (VmHWM), not the benchmark process's, which getrusage(CHILDREN)
    # reported before: Linux carries a parent's peak across fork/exec into the child's ru_maxrss
    assert float((run_dir / "air_memory_run" / "peak_rss_mb.txt").read_text()) == air["peak_rss_mb"]
    assert air["peak_rss_mb"] != result["peak_rss_mb"]
    assert result["air"]["steps_per_s"] == air["steps_per_s"]
    assert air["grad_variance_s"] > 0  # measured on its own: it fires after 2,000 steps
    table = (run_dir / "benchmark.md").read_text()
    assert "AIR: reference steps/s" in table and "AIR: peak RSS of a process training AIR alone" in table
    assert "measured matrix-product rate" in table
    estimators = written["estimators"]
    assert set(estimators["s_per_step"]) == {"tracegraph", "enum_counts"}
    assert estimators["relative_to_first"]["tracegraph"] == 1.0
    assert all(seconds > 0 for seconds in estimators["s_per_step"].values())
    assert "AIR step, enum_counts (s, x the first arm)" in table


def test_the_reference_is_airs_algorithm_with_the_examples_layout():
    """With airlab's AIR weights copied in, the reference draws the same latents from the same seed and
    computes the same ELBO and baseline values: the benchmark compares two ways of running one model."""
    import pyro
    from pyro import poutine

    from airlab.benchmarking.air_reference import ReferenceAIR
    from airlab.models.air import AIR

    torch.manual_seed(0)
    sizes = dict(max_steps=3, z_what_dim=4, window_size=8, rnn_hidden=16, encoder_hidden=[12])
    sizes.update(decoder_hidden=[12], predict_hidden=[12], z_pres_prior=0.6)
    air = AIR(image_shape=(1, 20, 20), baseline_rnn_hidden=16, baseline_hidden=[6], **sizes)
    reference = ReferenceAIR(
        image_size=20, baseline_hidden=[6], decoder_output_bias=-2.0, likelihood_sd=0.3,
        where_prior_loc=[3.0, 0.0, 0.0], where_prior_scale=[0.1, 1.0, 1.0], **sizes,
    )  # fmt: skip

    def lstm_state(cell):  # airlab's split input weight -> nn.LSTMCell's one weight_ih
        weight_ih = torch.cat([cell.image_to_gates.t(), cell.weight_ih_step], 1)
        return {
            "weight_ih": weight_ih,
            "weight_hh": cell.weight_hh,
            "bias_ih": cell.bias_ih,
            "bias_hh": cell.bias_hh,
        }

    with torch.no_grad():
        reference.decode.load_state_dict(air.decoder.net.state_dict())
        reference.encode.load_state_dict(air.encoder.net.state_dict())
        reference.rnn.load_state_dict(lstm_state(air.rnn))
        reference.bl_rnn.load_state_dict(lstm_state(air.baseline_net.rnn))
        reference.bl_predict.load_state_dict(air.baseline_net.head.state_dict())
        reference.predict[0].load_state_dict(air.predict.trunk[0].state_dict())
        heads = (air.predict.z_pres_head, air.predict.z_where_head)
        reference.predict[2].weight.copy_(torch.cat([h.weight for h in heads]))
        reference.predict[2].bias.copy_(torch.cat([h.bias for h in heads]))
    images = torch.rand(5, 1, 20, 20)

    def draw(model, guide):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        guide_trace = poutine.trace(guide).get_trace(images)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(images)
        elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
        baselines = [
            guide_trace.nodes[f"z_pres_{t}"]["infer"]["baseline"]["baseline_value"] for t in range(3)
        ]
        counts = sum(guide_trace.nodes[f"z_pres_{t}"]["value"] for t in range(3))
        return elbo, torch.stack(baselines), counts

    air.train()
    got = draw(reference.model, reference.guide)
    expected = draw(air.model, air.guide)
    assert torch.equal(got[2], expected[2])  # the same numbers of objects
    assert 0 < float(got[2].float().mean()) < 3  # present and absent objects both drawn
    assert torch.allclose(got[0], expected[0], rtol=1e-5)
    assert torch.allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
