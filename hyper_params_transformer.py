"""Settings of the code Transformer forecaster: `config_transformer.json` as typed dataclasses,
validated like hyper_params.py (unknown keys and wrong types are errors naming the key)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyper_params import (MAX_DEPTH, MAX_PATH_SCALE, MAX_WIDTH, AugmentConfig, TrainConfig, _at_least, _check, _within,
                          build_config, read_config, with_predated)
from paths import ROOT

DEFAULT_CONFIG = ROOT / "config_transformer.json"
FLOAT32_MAX = 3.4028234663852886e38    # torch.finfo(torch.float32).max: the largest draft tilt the logits hold


@dataclass
class GPTConfig:
    dim: int = 128
    layers: int = 4
    heads: int = 4
    dropout: float = 0.1
    rope: bool = True            # rotary positions (relative offsets); false = learned absolute positions
    draft: bool = True           # read the seasonal-naive continuation's codes as a draft of each future step
    draft_beats: bool = True     # the draft lays beats at beat times instead: the mean beat at the true ones in
                                 # training, the context's own beats at times drawn per sample when forecasting
                                 # (drafts.draft_waves)

    def validate(self) -> None:
        _within(1, MAX_WIDTH, "model", self, "dim")
        _within(1, MAX_DEPTH, "model", self, "layers")
        _at_least(1, "model", self, "heads")
        _check(self.dim % self.heads == 0, "model.heads", self.heads, f"must divide model.dim={self.dim}")
        head = self.dim // self.heads
        _check(not self.rope or head % 2 == 0, "model.heads", self.heads,
               f"must leave an even head size with model.rope (rotary embeddings turn pairs), not {head}")
        _check(0 <= self.dropout < 1, "model.dropout", self.dropout, "must be in [0, 1)")
        _check(self.draft or not self.draft_beats, "model.draft_beats", self.draft_beats,
               "needs model.draft true: set it false without drafts")


@dataclass
class SampleConfig:
    temperature: float = 0.9     # 1.0 samples the learned distribution (without draft_bias: a draft_bias of 10
                                 # leaves the drafts' codes nearly sure, and the spread to the drafts' timing); 0
                                 # is greedy, the network's own likeliest code (draft_bias is added after the
                                 # temperature, so its tilt vanishes in that limit)
    top_k: int = 0               # 0 = no truncation
    top_p: float = 1.0           # 1.0 = no nucleus truncation
    draft_spread: float = 0.06   # with model.draft_beats: the drafts' beat-to-beat jitter, SD as a fraction of the
                                 # period (drafts.draw_beat_times)
    draft_bias: float = 10.0     # with model.draft: log-odds bonus of each step's draft codes when sampling; with
                                 # draft_beats, > 0 also adds back what decoding loses of each path's draft (0: plain
                                 # sampling)
    draft_noise: float = 0.2     # white noise on each path, SD this fraction of the context's residual from its
                                 # mean beat (drafts.add_noise; 0: none)

    def validate(self, draft: bool) -> None:
        """`draft`: model.draft, without which a draft_bias has nothing to favour. A tilt beyond float32 is refused
        here by its keys, not first by CodeGPT.sample_step at forecast time."""
        _check(self.temperature >= 0, "sample.temperature", self.temperature, "must be >= 0 (0 = greedy)")
        _at_least(0, "sample", self, "top_k")
        _check(0 < self.top_p <= 1, "sample.top_p", self.top_p, "must be in (0, 1]")
        _check(0 <= self.draft_spread < 1, "sample.draft_spread", self.draft_spread, "must be in [0, 1)")
        _at_least(0, "sample", self, "draft_bias")
        _check(draft or self.draft_bias == 0, "sample.draft_bias", self.draft_bias,
               "needs model.draft true: a model without drafts has no draft codes to favour (0 for none)")
        tilt = self.draft_bias * self.temperature
        _check(self.draft_bias == 0 or abs(tilt) <= FLOAT32_MAX, "sample.draft_bias", self.draft_bias,
               f"at sample.temperature={self.temperature} is no finite float32 tilt: the draft codes' logits gain "
               f"draft_bias * temperature = {tilt:g} before the temperature divides them (at most {FLOAT32_MAX:g})")
        _within(0, MAX_PATH_SCALE, "sample", self, "draft_noise")


@dataclass
class TransformerConfig:
    """Every section's defaults are the recipe, config_transformer.json's (beat drafts, sampling tilted towards
    them, augmented copies), so a config gives only the keys it changes; a checkpoint's stored config that lacks a
    key means the behaviour it had when written (PREDATED: no drafts, no copies)."""
    model: GPTConfig = field(default_factory=GPTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(copies=3))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=32, learning_rate=1e-3,
                                                                   weight_decay=0.1, warmup_steps=200, plot_windows=3,
                                                                   max_steps_per_epoch=400))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        self.model.validate()
        self.sample.validate(self.model.draft)
        self.augment.validate()
        self.train.validate()


def transformer_config_from_dict(raw: dict, source: str = "config", stored: bool = False) -> TransformerConfig:
    return build_config(TransformerConfig, raw, source, stored)


# Keys added after Transformer checkpoints were first written, with the behaviour those checkpoints had (no drafts,
# so no draft codes to favour and no noise; no augmented copies; draft_spread as it was, unused without beat drafts):
# a stored config without them means that behaviour, not today's recipe.
PREDATED = {"model": {"draft": False, "draft_beats": False},
            "sample": {"draft_spread": 0.05, "draft_bias": 0.0, "draft_noise": 0.0},
            "augment": {"copies": 0}}


def stored_transformer_config(raw: Any, source: str) -> TransformerConfig:
    """The config a Transformer checkpoint was trained with (older checkpoints lack the PREDATED keys)."""
    return transformer_config_from_dict(with_predated(raw, PREDATED), source, stored=True)


def load_transformer_config(path: str | Path | None = None) -> TransformerConfig:
    return read_config(TransformerConfig, path or DEFAULT_CONFIG)
