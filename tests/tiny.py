"""A tiny configuration and prepared dataset so training tests run in seconds on a CPU."""
from __future__ import annotations

import json
from pathlib import Path

from hyper_params import config_from_dict
from prepare_mitbih import prepare

TINY = {
    "data": {"samples_per_second": 64, "input_signal_duration": 1.0, "forecast_predictions": 1,
             "window_stride": 1.0, "filter_band": [0.5, 25.0], "test_records": ["100"], "validation_records": ["101"]},
    "model": {"has_attention": True, "downsample_factor": 4, "channels": 16, "res_blocks": 1,
              "attention_heads": 2, "attention_layers": 1, "latent_dim": 8, "codebook_size": 32,
              "num_quantizers": 1, "window_gain": False, "restart_every": 5},
    "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.003, "warmup_steps": 2, "checkpoint_every": 1,
              "plot_windows": 2, "max_steps_per_epoch": 6},
}


def tiny_setup(tmp: Path, db: Path, **changes: dict) -> dict:
    """Write the tiny config (with per-section changes) and prepare the synthetic database with it.

    Returns the CLI flags that point a training script at this sandbox."""
    raw = json.loads(json.dumps(TINY))
    for section, values in changes.items():
        raw[section].update(values)
    tmp.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(raw))
    prepare(config_from_dict(raw), db, tmp / "prepared", download=False)
    return {"config": str(cfg_path), "prepared": str(tmp / "prepared"), "results": str(tmp / "results"),
            "checkpoints": str(tmp / "checkpoints")}


def flags(setup: dict, *extra: str) -> list[str]:
    out = []
    for key, value in setup.items():
        out += [f"--{key}", value]
    return out + list(extra)
