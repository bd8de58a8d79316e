"""The variance tool against a published result: for the IWAE bound, the encoder's gradient SNR falls
with the number of particles K and the decoder's rises (Rainforth et al. 2018: slopes about -0.5 and
+0.5 on log-log axes). A small VAE at fixed weights (seed 0), K in {1, 3, 10, 30}, 32 gradient draws."""

from __future__ import annotations

import json

from airlab.tasks.variance_report import run_variance_report
from tests.conftest import FAST


def test_iwae_snr_falls_for_the_encoder_and_rises_for_the_decoder(make_cfg):
    overrides = [
        "report=iwae_snr",
        "report.particles=[3,10,30]",
        "report.num_samples=32",
        "model.z_dim=4",
        "model.hidden_dim=32",
        "data.batch_size=16",
        "seed=0",
    ]
    cfg = make_cfg(FAST + overrides, name="variance_report")
    output = run_variance_report(cfg)
    assert list(output["estimators"]) == ["iwae", "iwae_k3", "iwae_k10", "iwae_k30"]
    slopes = output["snr_slopes"]
    print("fitted slopes:", slopes)
    assert slopes["guide/encoder"] < 0, slopes  # seen: -0.077 (seed 0)
    assert slopes["model/decoder"] > 0.1, slopes  # seen: +0.351
    saved = json.loads(open(f"{cfg.paths.output_dir}/variance_report.json").read())
    assert saved["snr_slopes"] == slopes
    assert (
        "SNR against the number of particles K" in open(f"{cfg.paths.output_dir}/variance_report.md").read()
    )
    assert open(f"{cfg.paths.output_dir}/snr_vs_particles.png", "rb").read(4) == b"\x89PNG"
