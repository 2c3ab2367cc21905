"""A tiny configuration and prepared dataset so training tests run in seconds on a CPU."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyper_params import config_from_dict
from hyper_params_transformer import SampleConfig
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

# The latent SDE's beat-phase model without drafts, as checkpoints older than the drafts were: the model keys that
# turn the recipe (hyper_params_sde's defaults, config_sde.json's: beat drafts, no phase) into the model the phase
# tests test
PHASE_MODEL = {"phase_harmonics": 8, "corrected_dims": 2, "draft_beats": False, "draft_spread": 0.02,
               "draft_noise": 0.0, "hold_band": False, "departure_scale": 1.0}


def phase_config(**sections: dict) -> dict:
    """A latent SDE config (as a config file holds it) of the beat-phase model, each section's keys updated by
    `sections` (model={"phase_harmonics": 3}, solver={...})."""
    raw: dict[str, Any] = {"model": dict(PHASE_MODEL)}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


# The Transformer's defaults before they became config_transformer.json's recipe: no drafts (as checkpoints older than
# the drafts were), plain sampling at temperature 1, no augmented copies and the shared train section's defaults; the
# keys that turn the recipe into the model, sampling and training the plain tests test
PLAIN_TRANSFORMER = {"model": {"draft": False, "draft_beats": False},
                     "sample": {"temperature": 1.0, "draft_spread": 0.05, "draft_bias": 0.0, "draft_noise": 0.0},
                     "augment": {"copies": 0},
                     "train": {"epochs": 10, "batch_size": 64, "learning_rate": 0.002, "weight_decay": 1e-4,
                               "warmup_steps": 100, "plot_windows": 4, "max_steps_per_epoch": None}}


def plain_transformer(**sections: dict) -> dict:
    """A Transformer config (as a config file holds it) of the plain model, each section's keys updated by
    `sections` (model={"dim": 16}, train={...})."""
    raw: dict[str, Any] = {section: dict(keys) for section, keys in PLAIN_TRANSFORMER.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def plain_sample(**keys: Any) -> SampleConfig:
    """The plain sampling settings (temperature 1, no draft tilt, jitter 0.05, no noise), `keys` changed."""
    return SampleConfig(**{**PLAIN_TRANSFORMER["sample"], **keys})


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
