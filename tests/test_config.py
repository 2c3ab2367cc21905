"""config_vqvae.json -> typed dataclasses: defaults, unknown keys, wrong types, bad values, data hash."""
from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hyper_params
from conftest import run_script
from hyper_params import (PREDATED, Config, DataConfig, ModelConfig, config_from_dict, data_hash,
                          load_config, stored_config)
from paths import ROOT, UserError
from tiny import PHASE_MODEL, PLAIN_TRANSFORMER, phase_config, plain_transformer


def error_of(raw: dict) -> str:
    with pytest.raises(UserError) as e:
        config_from_dict(raw)
    return str(e.value)


def test_defaults_load():
    cfg = load_config()
    assert cfg == Config()
    assert config_from_dict({}) == Config()
    assert cfg.data.window_samples == 384 and cfg.data.total_samples == 768
    # the shipped file spells out every key with its default: nothing hidden in code only
    raw = json.loads(hyper_params.DEFAULT_CONFIG.read_text())
    assert raw == cfg.to_dict()


def test_checkpoint_configs_from_before_residual_codebooks_keep_their_model():
    """A config stored before `num_quantizers` and `window_gain` existed means one codebook and no gains
    (what those checkpoints were trained with), not today's defaults."""
    old = Config().to_dict()
    for key in PREDATED["model"]:
        del old["model"][key]
    m = stored_config(old, "old checkpoint").model
    assert (m.num_quantizers, m.window_gain, m.codebook_size) == (1, False, Config().model.codebook_size)
    assert stored_config(Config().to_dict(), "new checkpoint") == Config()


def test_configs_and_checkpoints_without_patience_train_every_epoch():
    """train.patience (and the latent SDE's crps.patience) came after configs and checkpoints were written: one
    without it trains every epoch, as it did; the error of a bad one names the key and the value."""
    from hyper_params_sde import SDEConfig, stored_sde_config

    old = Config().to_dict()
    del old["train"]["patience"]
    assert stored_config(old, "old checkpoint").train.patience is None
    old_sde = SDEConfig().to_dict()
    del old_sde["train"]["patience"], old_sde["crps"]["patience"]
    sde = stored_sde_config(old_sde, "old checkpoint")
    assert (sde.train.patience, sde.crps.patience) == (None, None)
    assert config_from_dict({"train": {"patience": 3}}).train.patience == 3
    assert error_of({"train": {"patience": 0}}) == "config: config key 'train.patience' = 0 must be >= 1 or null"


def test_the_latent_sdes_defaults_are_config_sde_json_key_for_key():
    """SDEConfig() and a config that leaves keys out get the recipe, every section's: the defaults were old
    checkpoints' (a beat phase, no drafts, other train settings), so a partial config trained another model."""
    from hyper_params_sde import DEFAULT_CONFIG, SDEConfig, load_sde_config, sde_config_from_dict

    assert SDEConfig().to_dict() == json.loads(DEFAULT_CONFIG.read_text())
    assert load_sde_config() == sde_config_from_dict({}) == SDEConfig()


def test_latent_sde_checkpoint_configs_from_before_the_drafts_keep_their_model():
    """A latent SDE config stored before the PREDATED keys existed means a beat phase without drafts (what those
    checkpoints were trained with), not today's recipe; a config that has them keeps its own."""
    from hyper_params_sde import PREDATED, SDEConfig, stored_sde_config

    old = SDEConfig().to_dict()
    for key in PREDATED["model"]:
        del old["model"][key]
    m = stored_sde_config(old, "old checkpoint").model
    assert {k: getattr(m, k) for k in PHASE_MODEL} == PHASE_MODEL and m.state_size == SDEConfig().model.state_size
    assert stored_sde_config(SDEConfig().to_dict(), "new checkpoint") == SDEConfig()
    no_hold = {**SDEConfig().to_dict(), "model": {k: v for k, v in SDEConfig().to_dict()["model"].items()
                                                  if k not in ("hold_band", "departure_scale")}}
    m = stored_sde_config(no_hold, "drafted checkpoint").model    # drafts, from before the hold and its scale
    assert (m.draft_beats, m.draft_noise, m.hold_band, m.departure_scale) == (True, 0.2, False, 1.0)


def test_sde_tokenizer_config_loads_and_shares_the_prepared_data():
    """config_vqvae_sde.json (the latent SDE's encoder and decoder: one codebook, attention, no gains) reads
    the same prepared tensors as the default."""
    sde = load_config(hyper_params.ROOT / "config_vqvae_sde.json")
    assert sde.data == Config().data and data_hash(sde.data) == data_hash(Config().data)
    m = sde.model
    assert (m.num_quantizers, m.codebook_size, m.window_gain, m.has_attention) == (1, 512, False, True)


def test_partial_sections_keep_defaults():
    cfg = config_from_dict({"data": {"samples_per_second": 256}, "train": {}})
    assert cfg.data.samples_per_second == 256
    assert cfg.data.window_samples == 768
    assert cfg.model == ModelConfig() and cfg.train == Config().train and cfg.train.epochs == 15


@pytest.mark.parametrize("section", ["data", "model", "train"])
def test_unknown_key_in_section(section):
    msg = error_of({section: {"bogus_key": 1}})
    assert f"'{section}.bogus_key'" in msg and "unknown" in msg


def test_unknown_top_level_key():
    msg = error_of({"data": {}, "optimizer": {}})
    assert "'optimizer'" in msg and "unknown" in msg


@pytest.mark.parametrize("given, script, names", [
    ("config_vqvae.json", "transformer", "a VQ-VAE's config (vqvae_train.py"),
    ("config_transformer.json", "sde", "a Transformer's config (transformer_train.py"),
    ("config_sde.json", "vqvae", "a latent SDE's config (latent_sde_train.py")])
def test_another_models_config_is_named_as_what_it_is(given, script, names):
    """config_vqvae.json given to transformer_train.py said only "unknown config key 'data' (known sections: model,
    sample, augment, train)": the error now says whose config a section of another kind makes."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict
    read = {"vqvae": config_from_dict, "transformer": transformer_config_from_dict, "sde": sde_config_from_dict}
    with pytest.raises(UserError, match="unknown config key") as e:
        read[script](json.loads((ROOT / given).read_text()), given)
    assert names in str(e.value)


def test_typo_is_not_silently_ignored():
    msg = error_of({"data": {"sample_per_second": 256}})
    assert "data.sample_per_second" in msg and "samples_per_second" in msg  # lists the known keys


@pytest.mark.parametrize("section,key,value", [
    ("data", "samples_per_second", "128"),     # string for int
    ("model", "channels", True),               # bool for int
    ("train", "epochs", 2.5),                  # float for int
    ("train", "batch_size", 64.0),             # a float, even a whole one, is not an int
    ("model", "has_attention", 1),             # int for bool
    ("data", "input_signal_duration", None),   # null for a required number
    ("data", "input_signal_duration", "3"),
    ("data", "filter_band", "0.5-40"),
    ("data", "filter_band", [0.5, "40"]),
    ("data", "test_records", [100, 101]),      # record names are strings
    ("data", "first_lead", 2),
    ("train", "learning_rate", True),
    ("train", "max_steps_per_epoch", 10.0),
])
def test_wrong_type_names_key(section, key, value):
    msg = error_of({section: {key: value}})
    assert f"'{section}.{key}'" in msg and "wrong type" in msg


def test_non_finite_number_rejected():
    msg = error_of({"train": {"learning_rate": float("nan")}})
    assert "'train.learning_rate'" in msg


@pytest.mark.parametrize("section_value", [[], 3, None, "data"])
def test_section_must_be_object(section_value):
    assert "'data'" in error_of({"data": section_value})


@pytest.mark.parametrize("raw,key", [
    ({"model": {"downsample_factor": 6}}, "model.downsample_factor"),             # not a power of 2
    ({"model": {"downsample_factor": 0}}, "model.downsample_factor"),
    ({"model": {"downsample_factor": 256}}, "model.downsample_factor"),           # 384 % 256 != 0
    ({"data": {"samples_per_second": 100}}, "model.downsample_factor"),           # 300 % 8 != 0
    ({"data": {"filter_band": [0.5, 64.0]}}, "data.filter_band"),                 # at Nyquist (128 Hz)
    ({"data": {"filter_band": [0.5, 80.0]}}, "data.filter_band"),                 # above Nyquist
    ({"data": {"filter_band": [40.0, 0.5]}}, "data.filter_band"),
    ({"data": {"filter_band": [0.5]}}, "data.filter_band"),
    ({"data": {"filter_band": [-1.0, 40.0]}}, "data.filter_band"),
    ({"data": {"input_signal_duration": 3.3}}, "data.input_signal_duration"),     # 422.4 samples
    ({"data": {"input_signal_duration": 0}}, "data.input_signal_duration"),
    ({"data": {"samples_per_second": 0}}, "data.samples_per_second"),
    ({"data": {"forecast_predictions": -1}}, "data.forecast_predictions"),
    ({"data": {"signals_per_patient": -2}}, "data.signals_per_patient"),
    ({"data": {"window_stride": 0}}, "data.window_stride"),
    ({"data": {"filter_order": 0}}, "data.filter_order"),
    ({"data": {"normalization": "zscore"}}, "data.normalization"),
    ({"data": {"first_lead": " "}}, "data.first_lead"),
    ({"data": {"second_lead": " - "}}, "data.second_lead"),                      # no letter or digit: no lead
    ({"data": {"second_lead": "MLII"}}, "data.second_lead"),                     # first_lead's lead
    ({"data": {"first_lead": "II", "second_lead": "Lead ii"}}, "data.second_lead"),   # the same lead, spelt apart
    ({"model": {"has_attention": True, "attention_heads": 3}}, "model.attention_heads"),     # 64 % 3 != 0
    ({"model": {"ema_decay": 1.0}}, "model.ema_decay"),
    ({"model": {"res_blocks": -1}}, "model.res_blocks"),
    ({"model": {"restart_every": -5}}, "model.restart_every"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"learning_rate": 0}}, "train.learning_rate"),
    ({"train": {"checkpoint_every": 0}}, "train.checkpoint_every"),
    ({"train": {"num_workers": -1}}, "train.num_workers"),
    ({"train": {"max_steps_per_epoch": 0}}, "train.max_steps_per_epoch"),
    ({"train": {"patience": 0}}, "train.patience"),                 # would stop after the first epoch, best or not
    ({"data": {"input_signal_duration": 3.001}}, "data.input_signal_duration"),   # 384.128 samples
    ({"data": {"signals_per_patient": -1}}, "data.signals_per_patient"),
    ({"model": {"num_quantizers": 0}}, "model.num_quantizers"),
    ({"model": {"codebook_size": 0}}, "model.codebook_size"),
    ({"model": {"codebook_size": 1}}, "model.codebook_size"),     # 0 bits: training ended in a ZeroDivisionError
    ({"model": {"latent_dim": 0}}, "model.latent_dim"),
    ({"model": {"commitment_cost": -0.25}}, "model.commitment_cost"),
    ({"model": {"dead_code_threshold": -1.0}}, "model.dead_code_threshold"),
    ({"model": {"ema_decay": 0.0}}, "model.ema_decay"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"train": {"weight_decay": -1e-4}}, "train.weight_decay"),
    ({"train": {"warmup_steps": -1}}, "train.warmup_steps"),
    ({"train": {"plot_windows": -1}}, "train.plot_windows"),
    ({"train": {"weight_decay": float("inf")}}, "train.weight_decay"),             # no range check would catch it
    ({"train": {"seed": -1}}, "train.seed"),                  # numpy's generators refuse it once training starts
    ({"train": {"seed": 2 ** 32}}, "train.seed"),
    ({"train": {"grad_clip": 0.0}}, "train.grad_clip"),         # clips every gradient to 0: nothing would train
])
def test_bad_value_names_key(raw, key):
    msg = error_of(raw)
    assert f"'{key}'" in msg


@pytest.mark.parametrize("maker", ["vqvae", "transformer", "sde"])
def test_plot_windows_beyond_one_figures_rows_are_refused_by_name(maker):
    """train.plot_windows 10000 passed (>= 0) and every epoch drew, a forecaster's forecast, 10000 validation windows
    as the rows of one figure; every model's train section refuses it with the range, and takes the cap itself."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    build = {"vqvae": config_from_dict, "transformer": transformer_config_from_dict, "sde": sde_config_from_dict}[maker]
    assert build({"train": {"plot_windows": 16}}).train.plot_windows == 16
    assert build({"train": {"plot_windows": 0}}).train.plot_windows == 0       # none drawn, as its message says
    with pytest.raises(UserError, match=r"'train.plot_windows' = 10000 must be in \[0, 16\]: each epoch draws them as "
                                        r"the rows of one figure \(0: none\)$"):
        build({"train": {"plot_windows": 10000}})


def test_a_codebook_beyond_16_bit_codes_is_refused_before_the_model_is_built():
    """model.codebook_size 2**32 passed (>= 2) and building the VQ-VAE ran out of memory (64 x 2**32 floats a codebook)
    in a traceback; it is refused by key, value and range, and 2**16 is still a codebook."""
    assert config_from_dict({"model": {"codebook_size": 2 ** 16}}).model.codebook_size == 65536
    assert error_of({"model": {"codebook_size": 2 ** 32}}) == (
        "config: config key 'model.codebook_size' = 4294967296 must be in [2, 65536]: one code carries log2(1) = 0 "
        "bits, and a codebook beyond 16-bit codes only fills memory (residual codebooks are model.num_quantizers)")


@pytest.mark.parametrize("maker, section, key, most", [
    ("vqvae", "model", "channels", 4096), ("vqvae", "model", "latent_dim", 4096),
    ("vqvae", "model", "res_blocks", 64), ("vqvae", "model", "attention_layers", 64),
    ("vqvae", "model", "num_quantizers", 64), ("vqvae", "data", "filter_order", 64),
    ("transformer", "model", "dim", 4096), ("transformer", "model", "layers", 64),
    ("sde", "model", "state_size", 4096), ("sde", "model", "hidden_size", 4096),
    ("sde", "model", "encoder_hidden", 4096), ("sde", "model", "context_size", 4096),
    ("sde", "model", "emission_hidden", 4096),
    ("sde", "model", "diffusion_hidden", 4096), ("sde", "model", "phase_harmonics", 4096),
])
def test_sizes_no_model_is_built_with_are_refused_with_their_range(maker, section, key, most):
    """A width, depth or filter order of 10**6 passed (>= 1) and the model was built until memory ran out, or (a
    Butterworth of order 2000) scipy's OverflowError, order 300 NaN sections: each is refused by key, value and
    range, and the ceiling itself is a config."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    build = {"vqvae": config_from_dict, "transformer": transformer_config_from_dict, "sde": sde_config_from_dict}[maker]
    extra = {"has_attention": True} if key == "attention_layers" else {}
    assert getattr(getattr(build({section: {key: most, **extra}}), section), key) == most
    low = 0 if key in ("res_blocks", "attention_layers", "phase_harmonics") else 1
    with pytest.raises(UserError, match=rf"'{section}.{key}' = 1000000 must be in \[{low}, {most}\]$"):
        build({section: {key: 10 ** 6, **extra}})


def test_a_window_stride_cutting_a_window_at_nearly_every_sample_is_refused_with_its_floor():
    """data.window_stride 1e-9 passed (> 0), rounded to one sample, and preparing MIT-BIH stacked a 6 s window at every
    sample (31 GB); the floor is 1/64 of a training window, so no sample is in more than 64, and is itself a stride."""
    assert config_from_dict({"data": {"window_stride": 6 / 64}}).data.stride_samples == 12
    assert error_of({"data": {"window_stride": 1e-9}}).endswith(
        "'data.window_stride' = 1e-09 must be at least 0.09375 s or null: each sample in at most 64 training windows "
        "of 6 s (data.input_signal_duration x (1 + data.forecast_predictions))")


@pytest.mark.parametrize("data, total", [
    ({"input_signal_duration": 1e308}, "inf"),               # counted in floats: round(inf), an OverflowError
    ({"samples_per_second": 100000}, "600000"),              # prepared MIT-BIH as 63 GB of windows
    ({"forecast_predictions": 10 ** 6}, "3.84e+08"),
])
def test_a_window_beyond_65536_samples_is_refused_before_its_samples_are_counted(data, total):
    """A window's samples (duration x rate, times 1 + forecast_predictions) had no ceiling: 1e308 s stopped every
    script in an OverflowError traceback, 100 kHz filled memory preparing the data. Refused by the duration's key, the
    product and the ceiling, which itself is a window (256 s at 128 Hz, with a forecast as long)."""
    cfg = config_from_dict({"data": {"input_signal_duration": 256.0, "window_stride": None}})
    assert cfg.data.total_samples == 65536
    assert error_of({"data": data}).endswith(f"is a window of {total} samples with its forecast: at most 65536")


def test_a_window_stride_beyond_a_day_is_refused_by_name():
    """data.window_stride 1e308 passed (> 0) and preparing the data stopped in round(inf)'s OverflowError."""
    assert config_from_dict({"data": {"window_stride": 86400}}).data.stride_samples == 86400 * 128
    assert error_of({"data": {"window_stride": 1e308}}).endswith(
        "'data.window_stride' = 1e+308 must be in (0, 86400] s (a day) or null")


@pytest.mark.parametrize("maker, key", [("sde", "model.draft_noise"), ("sde", "model.departure_scale"),
                                        ("transformer", "sample.draft_noise")])
def test_a_paths_noise_or_departure_beyond_ten_times_its_own_is_refused(maker, key):
    """draft_noise or departure_scale 1e308 passed (>= 0) and every forecast path came out inf (numpy's overflow
    warning, then 'predict returned NaN or inf values'); 10 is the ceiling, itself a setting."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    build = transformer_config_from_dict if maker == "transformer" else sde_config_from_dict
    section, name = key.split(".")
    assert getattr(getattr(build({section: {name: 10}}), section), name) == 10
    with pytest.raises(UserError, match=rf"'{key}' = 1e\+308 must be in \[0, 10.0\]$"):
        build({section: {name: 1e308}})


@pytest.mark.parametrize("section, key, most, bad, why", [
    ("model", "min_rate_hz", 5, 1e39, r"must be in \(0, 5\] Hz \(a floor of 300 bpm is past any heart\)"),
    ("model", "min_obs_std", 1, 1e308, r"must be in \(0, 1\]: the frames are standardised, so a floor above their SD "
                                       r"of 1 leaves nothing to learn"),
    ("solver", "max_diffusion", 10, 1e20, r"must be at most 10 \(per sqrt\(second\) on standardised frames\)"),
])
def test_latent_sde_scales_no_model_learns_with_are_refused(section, key, most, bad, why):
    """A beat phase's min_rate_hz of 1e39 stopped the first step in torch's float overflow traceback (1e10: a NaN
    loss), max_diffusion 1e20 gave a NaN loss, min_obs_std 1e308 an inf one, each then blamed on the learning rate;
    refused by key and range, and the ceiling is a setting."""
    from hyper_params_sde import sde_config_from_dict

    assert getattr(getattr(sde_config_from_dict({section: {key: most}}), section), key) == most
    with pytest.raises(UserError, match=rf"'{section}.{key}' = {re.escape(repr(bad))} {why}$"):
        sde_config_from_dict({section: {key: bad}})


@pytest.mark.parametrize("maker", ["vqvae", "transformer", "sde"])
def test_copies_and_workers_beyond_their_ceilings_are_refused_by_name(maker):
    """augment.copies 1000 held 1000 copies of the training windows in memory (MIT-BIH's: 81 GB), train.num_workers
    10**6 would start a million DataLoader processes every epoch; each has a ceiling, named with its range."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    build = {"vqvae": config_from_dict, "transformer": transformer_config_from_dict, "sde": sde_config_from_dict}[maker]
    assert build({"train": {"num_workers": 64}}).train.num_workers == 64
    with pytest.raises(UserError, match=r"'train.num_workers' = 1000000 must be in \[0, 64\]$"):
        build({"train": {"num_workers": 10 ** 6}})
    if maker != "vqvae":
        assert build({"augment": {"copies": 16}}).augment.copies == 16
        with pytest.raises(UserError, match=r"'augment.copies' = 1000 must be in \[0, 16\]$"):
            build({"augment": {"copies": 1000}})


def test_a_diffusion_floor_beyond_the_ceiling_is_named_first():
    """solver.min_diffusion 20 passed its check (> 0) and the error blamed solver.max_diffusion (0.5 must be > 20), then,
    raised to 21, its ceiling of 10: two errors in turn before the key at fault was named."""
    from hyper_params_sde import sde_config_from_dict
    with pytest.raises(UserError, match=r"'solver.min_diffusion' = 20.0 must be in \(0, 10\)"):
        sde_config_from_dict({"solver": {"min_diffusion": 20}})
    assert sde_config_from_dict({"solver": {"min_diffusion": 9, "max_diffusion": 10}}).solver.min_diffusion == 9


@pytest.mark.parametrize("maker", ["vqvae", "transformer", "sde"])
def test_a_checkpoints_config_beyond_the_work_limits_still_loads(maker):
    """The work limits (plot windows, loader processes, augmented copies, the window stride's floor) came after
    checkpoints trained beyond them: Forecaster.from_checkpoint refused one of train.plot_windows 20. A checkpoint's
    stored config is not held to them; a config file, what a run is about to do, still is."""
    from hyper_params import stored_config
    from hyper_params_sde import sde_config_from_dict, stored_sde_config
    from hyper_params_transformer import stored_transformer_config, transformer_config_from_dict

    build, stored = {"vqvae": (config_from_dict, stored_config),
                     "transformer": (transformer_config_from_dict, stored_transformer_config),
                     "sde": (sde_config_from_dict, stored_sde_config)}[maker]
    beyond = [("train", "plot_windows", 20), ("train", "num_workers", 100)]
    beyond += [("data", "window_stride", 0.05)] if maker == "vqvae" else [("augment", "copies", 20)]
    for section, key, value in beyond:
        cfg = stored({section: {key: value}}, "config stored in old.pt")
        assert getattr(getattr(cfg, section), key) == value
        with pytest.raises(UserError, match=rf"'{section}.{key}' = {value} must be"):
            build({section: {key: value}})
    with pytest.raises(UserError, match=r"'train.plot_windows' = -1 must be >= 0"):     # what is not a limit still holds
        stored({"train": {"plot_windows": -1}}, "config stored in old.pt")


@pytest.mark.parametrize("channels", [1, 8])
def test_one_latent_frame_a_window_needs_group_norms_of_more_than_one_channel(channels):
    """downsample_factor = the window (128 Hz, 1 s, 128) with channels 8 (eight groups of one) or 1: each group norm
    saw one value, normalised to 0, and a forecaster's epoch plot, encoding one context, stopped in torch's 'Expected
    more than 1 value per channel' traceback. Refused by the channels' key; any other count (9 to 15 make one group
    too, the message said '2-7 or 16 or more'), or two frames, are fine."""
    one_frame = {"data": {"input_signal_duration": 1.0}, "model": {"downsample_factor": 128}}
    for fine in (2, 7, 9, 12, 15, 16):
        assert config_from_dict({**one_frame, "model": {"downsample_factor": 128, "channels": fine}}).model.channels \
            == fine
    assert config_from_dict({"model": {"downsample_factor": 128, "channels": channels}}).model.channels == channels
    for fine in (2, 7):     # one group norm over all of them (8 does not divide them): the ways out it names
        built = config_from_dict({**one_frame, "model": {"downsample_factor": 128, "channels": fine}})
        assert built.model.channels == fine
    assert error_of({**one_frame, "model": {"downsample_factor": 128, "channels": channels}}).endswith(
        f"'model.channels' = {channels} with one latent frame a window (model.downsample_factor 128 = the window's 128 "
        "samples) leaves each group norm one value to normalise: the signal is erased, and one window's encoding "
        "fails; give model.channels any count but 1 and 8 (e.g. 16), or a smaller downsample_factor")


def test_a_rate_the_compression_factor_does_not_divide_names_the_data_keys():
    """250 Hz (README: it needs e.g. a 3.2 s context) blames model.downsample_factor, which the user did not touch: the
    error says the window comes from the duration and the rate, so either can be changed."""
    assert error_of({"data": {"samples_per_second": 250}}).endswith(
        "'model.downsample_factor' = 8 must divide the window of 750 samples (data.input_signal_duration 3 s x "
        "data.samples_per_second 250)")


def test_a_sampling_rate_beyond_any_float_is_a_bad_value():
    """The window's length is worked out in floats: an integer literal beyond them was an OverflowError traceback. The
    bound the error names holds from it, and just beyond the largest float too."""
    assert "'data.samples_per_second'" in error_of({"data": {"samples_per_second": 10 ** 400}})
    for rate in (2 ** 63, 10 ** 310):
        assert error_of({"data": {"samples_per_second": rate}}).endswith(
            f"'data.samples_per_second' = {rate} is out of range: no setting takes an integer of size 2**63 or more")


@pytest.mark.parametrize("name", ["config_vqvae.json", "config_transformer.json", "config_sde.json"])
def test_an_integer_beyond_any_setting_is_refused_by_key(name):
    """A huge integer passed the checks that bound it from below: model.res_blocks 10**30 built blocks for ever,
    model.channels failed in torch's allocator, train.num_workers would start processes without end."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    read = {"config_vqvae.json": config_from_dict, "config_transformer.json": transformer_config_from_dict,
            "config_sde.json": sde_config_from_dict}[name]
    base = json.loads((hyper_params.ROOT / name).read_text())
    keys = [(s, k) for s in base for k, v in base[s].items() if type(v) is int]
    assert len(keys) > 5
    for section, key in keys:
        raw = copy.deepcopy(base)
        raw[section][key] = 2 ** 63
        with pytest.raises(UserError, match=f"'{section}.{key}' = 9223372036854775808 is out of range"):
            read(raw)
    raw = copy.deepcopy(base)
    raw["train"]["seed"] = 2 ** 32 - 1      # the largest seed numpy takes is still one
    assert read(raw).train.seed == 2 ** 32 - 1
    raw["train"]["grad_clip"] = 10 ** 10    # a number key written as an integer is a float, as 1e10 is
    assert read(raw).train.grad_clip == 1e10
    raw["train"]["max_steps_per_epoch"] = 10 ** 11     # "no cap" written large: checkpoints stored with it still load
    assert read(raw).train.max_steps_per_epoch == 10 ** 11


def test_edge_values_that_mean_something_are_accepted():
    """No horizon (a VQ-VAE codes contexts only), a low band edge of 0 Hz (a low-pass), greedy sampling, no dropout,
    drafts without jitter, the latent SDE's full rate diffusion and an annealing that starts at its end."""
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    data = config_from_dict({"data": {"forecast_predictions": 0, "filter_band": [0.0, 40.0]}}).data
    assert data.total_samples == data.window_samples and data.filter_band == [0.0, 40.0]
    t = transformer_config_from_dict({"model": {"dropout": 0}, "sample": {"temperature": 0, "draft_spread": 0}})
    assert (t.model.dropout, t.sample.temperature, t.sample.draft_spread) == (0, 0, 0)
    sde = sde_config_from_dict({"solver": {"rate_diffusion_scale": 1, "dt": 1}, "loss": {"kl_start": 1.0}})
    assert (sde.solver.rate_diffusion_scale, sde.solver.dt, sde.loss.kl_start) == (1, 1, 1)


def test_data_hash_changes_with_the_preparation(monkeypatch):
    """Tensors prepared by older code (a lower PREPARATION) must not pass for today's: the hash says re-prepare."""
    before = data_hash(DataConfig())
    monkeypatch.setattr(hyper_params, "PREPARATION", hyper_params.PREPARATION + 1)
    assert data_hash(DataConfig()) != before


def test_window_and_factor_message_gives_window():
    msg = error_of({"model": {"downsample_factor": 256}})
    assert "384" in msg


def test_load_config_names_file(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model": {"downsample_factor": 6}}))
    with pytest.raises(UserError, match="model.downsample_factor") as e:
        load_config(path)
    assert str(path) in str(e.value)
    path.write_text(json.dumps({"train": {"epoch": 3}}))
    with pytest.raises(UserError, match="train.epoch") as e:
        load_config(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("text,why", [
    ('{"data": ', "not valid JSON"),
    ("[1, 2]", "top level"),
    ("", "not valid JSON"),
    ('{"train": {"epochs": 1, "epochs": 2}}', "'epochs' is given twice"),
    ('{"train": {"learning_rate": NaN}}', "NaN is not a value"),
    ('{"train": {"learning_rate": -Infinity}}', "-Infinity is not a value"),
])
def test_load_config_bad_file(tmp_path, text, why):
    path = tmp_path / "cfg.json"
    path.write_text(text)
    with pytest.raises(UserError, match=why) as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_a_config_saved_with_a_byte_order_mark_loads(tmp_path):
    """Notepad's UTF-8 begins with a BOM: it was 'not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig)'."""
    path = tmp_path / "cfg.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"train": {"epochs": 2}}).encode())
    assert load_config(path).train.epochs == 2


def test_load_config_missing_file_or_folder(tmp_path):
    with pytest.raises(UserError, match="not found") as e:
        load_config(tmp_path / "nope.json")
    assert "nope.json" in str(e.value)
    with pytest.raises(UserError, match="cannot read") as e:  # a folder: was an IsADirectoryError traceback
        load_config(tmp_path)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(UserError, match="binary.json"):
        load_config(tmp_path / "binary.json")


def test_ints_for_floats_become_floats():
    cfg = config_from_dict({"data": {"input_signal_duration": 3, "filter_band": [1, 40], "window_stride": 2},
                            "train": {"learning_rate": 1}})
    assert isinstance(cfg.data.input_signal_duration, float)
    assert all(isinstance(v, float) for v in cfg.data.filter_band)
    assert isinstance(cfg.data.window_stride, float) and isinstance(cfg.train.learning_rate, float)


DATA_CHANGES = {
    "samples_per_second": 256,
    "input_signal_duration": 2.0,
    "forecast_predictions": 2,
    "signals_per_patient": 10,
    "window_stride": None,
    "first_lead": "V5",
    "second_lead": "V5",
    "filter_band": [1.0, 40.0],
    "filter_order": 4,
    "normalization": "none",
    "test_records": ["100"],
    "validation_records": [],
}


def test_data_changes_cover_every_data_key():
    assert set(DATA_CHANGES) == {f.name for f in dataclasses.fields(DataConfig)}


def test_keys_added_later_leave_the_data_hash_as_it_was_at_their_defaults():
    """data.second_lead came after the shipped checkpoints, prepared folders and caches were hashed: at its default
    it is left out of the hash (HASHED_UNLESS_DEFAULT), so those stay valid; set, it changes the hash."""
    assert data_hash(load_config().data) == "2724b1ff1b4f585e"      # the shipped checkpoints' data hash
    assert set(hyper_params.HASHED_UNLESS_DEFAULT) <= {f.name for f in dataclasses.fields(DataConfig)}
    assert all(getattr(DataConfig(), k) == v for k, v in hyper_params.HASHED_UNLESS_DEFAULT.items())
    assert data_hash(config_from_dict({"data": {"second_lead": "V5"}}).data) != "2724b1ff1b4f585e"


@pytest.mark.parametrize("key", sorted(DATA_CHANGES))
def test_data_hash_changes_with_data_key(key):
    base = load_config()
    changed = config_from_dict({"data": {key: DATA_CHANGES[key]}})
    assert getattr(changed.data, key) != getattr(base.data, key)
    assert data_hash(changed.data) != data_hash(base.data)


@pytest.mark.parametrize("section,key,value", [
    ("train", "epochs", 99), ("train", "learning_rate", 0.1), ("train", "seed", 7),
    ("train", "max_steps_per_epoch", 5), ("model", "codebook_size", 1024), ("model", "has_attention", False),
])
def test_data_hash_ignores_model_and_train(section, key, value):
    base = load_config()
    changed = config_from_dict({section: {key: value}})
    assert data_hash(changed.data) == data_hash(base.data)


def test_data_hash_same_for_equal_numbers():
    """3 and 3.0 are the same setting: they must not force a re-prepare (was a different hash)."""
    a = config_from_dict({"data": {"input_signal_duration": 3, "filter_band": [0.5, 40]}})
    assert data_hash(a.data) == data_hash(load_config().data)


def test_loading_does_not_mutate_input():
    raw = {"data": {"filter_band": [1, 40]}}
    before = copy.deepcopy(raw)
    config_from_dict(raw)
    assert raw == before


@pytest.mark.parametrize("raw, key", [
    (plain_transformer(model={"draft_beats": True}), "model.draft_beats"),     # beat drafts need a drafting model
    ({"sample": {"draft_spread": 1.5}}, "sample.draft_spread"),
    ({"sample": {"draft_bias": -1.0}}, "sample.draft_bias"),
    (plain_transformer(sample={"draft_bias": 10.0}), "sample.draft_bias"),    # no draft to favour: sampled as if 0
    ({"sample": {"draft_noise": -0.1}}, "sample.draft_noise"),
    ({"sample": {"temperature": -1}}, "sample.temperature"),
    ({"sample": {"draft_spred": 0.02}}, "draft_spred"),
    ({"train": {"grad_clip": -1.0}}, "train.grad_clip"),               # would flip every gradient's sign
    ({"train": {"max_steps_per_epoch": 0}}, "train.max_steps_per_epoch"),
    ({"train": {"num_workers": -1}}, "train.num_workers"),
])
def test_transformer_config_names_the_bad_key(raw, key):
    from hyper_params_transformer import transformer_config_from_dict

    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        transformer_config_from_dict(raw).validate()


@pytest.mark.parametrize("bias, temperature", [(2.0, 2e38), (1e300, 1.0), (10.0, 1e38)])
def test_a_draft_tilt_beyond_float32_is_refused_by_its_keys(bias, temperature, tmp_path):
    """draft_bias * temperature enters float32 logits (CodeGPT.sample_step): beyond float32's largest such a config
    loaded, and transformer_train.py trained an epoch, to fail at forecast time in a message naming values only."""
    import transformer_train
    from hyper_params_transformer import FLOAT32_MAX, load_transformer_config

    torch = pytest.importorskip("torch")
    assert FLOAT32_MAX == torch.finfo(torch.float32).max
    said = (re.escape(f"'sample.draft_bias' = {bias} at sample.temperature={temperature} is no finite float32 tilt: ")
            + ".* " + re.escape(f"draft_bias * temperature = {bias * temperature:g} "))
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"sample": {"draft_bias": bias, "temperature": temperature}}))
    with pytest.raises(UserError, match=said):
        load_transformer_config(path)
    r = run_script(transformer_train.main, "transformer_train.py", ["--config", str(path), "--device", "cpu",
                                                                    "--checkpoints", str(tmp_path / "ck")])
    assert r.returncode != 0 and re.search(said, r.stderr), r.stderr


def test_a_draft_tilt_within_float32_or_none_is_accepted():
    """Just below float32's largest the tilt is still sampled (test_transformer); no bias tilts nothing at any
    temperature, and SampleConfig built by hand is held to the same bound (an infinite bias, or NaN at 0)."""
    from hyper_params_transformer import SampleConfig, transformer_config_from_dict

    for sample in ({"draft_bias": 2.0, "temperature": 1.7e38}, {"draft_bias": 0.0, "temperature": 1e300}):
        assert transformer_config_from_dict({"sample": sample}).sample.draft_bias == sample["draft_bias"]
    for temperature in (0.0, 0.9):
        said = re.escape(f"'sample.draft_bias' = inf at sample.temperature={temperature} ")
        with pytest.raises(UserError, match=said):
            SampleConfig(draft_bias=float("inf"), temperature=temperature).validate(draft=True)


def test_shipped_transformer_config_loads():
    from hyper_params_transformer import load_transformer_config

    cfg = load_transformer_config(None)
    assert cfg.model.draft and cfg.model.draft_beats and cfg.sample.draft_bias > 0


def test_the_transformers_defaults_are_config_transformer_json_key_for_key():
    """TransformerConfig() and a config that leaves keys out get the recipe, every section's: the defaults were
    another model (no drafts, temperature 1, no copies, the shared train defaults), so a partial config trained it."""
    from hyper_params_transformer import (DEFAULT_CONFIG, GPTConfig, SampleConfig, TransformerConfig,
                                          load_transformer_config, transformer_config_from_dict)

    recipe = json.loads(DEFAULT_CONFIG.read_text())
    assert TransformerConfig().to_dict() == recipe
    assert load_transformer_config() == transformer_config_from_dict({}) == TransformerConfig()
    assert (dataclasses.asdict(GPTConfig()), dataclasses.asdict(SampleConfig())) == (recipe["model"], recipe["sample"])


@pytest.mark.parametrize("raw, said", [([1], "the top level must be an object"), (None, "the top level must be an"),
                                       ({"model": [1]}, "section 'model' must be an object, got list")])
def test_a_stored_config_that_is_no_object_is_named_not_filled_in(raw, said):
    """A checkpoint's config, or a section of it, that is not an object goes past the PREDATED filling to the
    config's own error naming it, for every model's stored config, not an AttributeError or TypeError there."""
    import hyper_params_sde
    import hyper_params_transformer
    for stored in (stored_config, hyper_params_sde.stored_sde_config,
                   hyper_params_transformer.stored_transformer_config):
        with pytest.raises(UserError, match=rf"^ckpt: {re.escape(said)}"):
            stored(raw, "ckpt")


def test_transformer_checkpoint_configs_from_before_the_drafts_keep_their_model():
    """A Transformer config stored before the PREDATED keys existed means no drafts, no tilt, no noise and no
    augmented copies (what those checkpoints were trained and sampled with), not today's recipe; a config that has
    them keeps its own."""
    from hyper_params_transformer import PREDATED, TransformerConfig, stored_transformer_config

    old = TransformerConfig().to_dict()
    for section, keys in PREDATED.items():
        for key in keys:
            del old[section][key]
    del old["augment"]                                  # older still: no augment section at all
    cfg = stored_transformer_config(old, "old checkpoint")
    for section in ("model", "sample"):
        assert {k: getattr(getattr(cfg, section), k) for k in PREDATED[section]} == PREDATED[section]
    assert (cfg.augment.copies, cfg.sample.temperature, cfg.model.dim) == (0, 0.9, TransformerConfig().model.dim)
    assert not cfg.model.draft and PLAIN_TRANSFORMER["model"] == PREDATED["model"]
    assert stored_transformer_config(TransformerConfig().to_dict(), "new checkpoint") == TransformerConfig()
    no_noise = TransformerConfig().to_dict()
    del no_noise["sample"]["draft_noise"]
    s = stored_transformer_config(no_noise, "drafted checkpoint").sample     # drafts, from before the noise
    assert (s.draft_bias, s.draft_noise) == (10.0, 0.0)


@pytest.mark.parametrize("maker, raw, key", [
    ("transformer", {"augment": {"rate_range": 0.5}}, "augment.rate_range"),   # a stretch of x0.5..x1.5 or worse
    ("transformer", {"sample": {"top_p": 0.0}}, "sample.top_p"),               # a nucleus holding no probability
    ("transformer", {"model": {"dropout": 1.0}}, "model.dropout"),             # every activation dropped
    ("sde", {"solver": {"min_diffusion": 0.0}}, "solver.min_diffusion"),       # the path KL divides by g
    ("transformer", {"model": {"heads": 3}}, "model.heads"),                   # 128 % 3 != 0
    ("transformer", {"model": {"layers": 0}}, "model.layers"),
    ("transformer", {"sample": {"top_k": -1}}, "sample.top_k"),
    ("transformer", {"sample": {"top_p": 1.5}}, "sample.top_p"),
    ("transformer", {"augment": {"copies": -1}}, "augment.copies"),
    ("transformer", {"augment": {"amplitude_range": 1.0}}, "augment.amplitude_range"),   # a lead scaled by 0
    ("sde", phase_config(model={"corrected_dims": 1}), "model.corrected_dims"),  # a phase without its rate
    ("sde", {"model": {"corrected_dims": 33}}, "model.corrected_dims"),        # more than state_size=32
    ("sde", {"model": {"phase_harmonics": -1}}, "model.phase_harmonics"),
    ("sde", {"model": {"phase_harmonics": 0, "phase_template": True}}, "model.phase_template"),
    ("sde", {"model": {"min_rate_hz": 0.0}}, "model.min_rate_hz"),
    ("sde", {"model": {"min_obs_std": 0.0}}, "model.min_obs_std"),
    ("sde", {"solver": {"dt": 2.0}}, "solver.dt"),
    ("sde", {"solver": {"max_diffusion": 0.05}}, "solver.max_diffusion"),     # = min_diffusion: no range
    ("sde", {"solver": {"rate_diffusion_scale": 0.0}}, "solver.rate_diffusion_scale"),
    ("sde", {"loss": {"kl_anneal_steps": -1}}, "loss.kl_anneal_steps"),
    ("sde", {"augment": {"rate_range": 0.5}}, "augment.rate_range"),
    ("sde", {"crps": {"patience": 0}}, "crps.patience"),
    ("transformer", {"train": {"patience": -1}}, "train.patience"),
    ("sde", phase_config(solver={"adjoint": True}), "solver.adjoint"),    # a beat phase: its loop is too stiff
])
def test_out_of_range_values_are_refused_by_name(maker, raw, key):
    from hyper_params_sde import sde_config_from_dict
    from hyper_params_transformer import transformer_config_from_dict

    build = transformer_config_from_dict if maker == "transformer" else sde_config_from_dict
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        build(raw)


def test_a_solver_step_far_below_a_latent_frame_is_refused_by_name():
    """solver.dt 1e-9 passed (0 < dt <= 1) and forecasting never ended: 3e9 solver steps over a 3 s window, and in
    float32 t + dt stopped growing past 0.03 s. The floor is 1/64 of the VQ-VAE's latent frame, so the model refuses
    it when built, naming the key, its value and the range; the floor itself is accepted."""
    from hyper_params_sde import check_solver_dt, sde_config_from_dict
    from latent_sde import LatentSDE

    scfg = sde_config_from_dict({"solver": {"dt": 1e-9}})
    with pytest.raises(UserError, match=r"^config key 'solver.dt' = 1e-09 must be in \[0.000976562, 1\] seconds "
                                        r"with a VQ-VAE of 16 latent frames a second: at most 64 solver steps a "
                                        r"frame$"):
        LatentSDE(8, scfg, 16.0)
    check_solver_dt(sde_config_from_dict({"solver": {"dt": 1 / 1024}}).solver, 16.0)
    with pytest.raises(UserError, match=r"'solver.dt' = 0.0009765625 must be in \[0.00195312, 1\]"):
        check_solver_dt(sde_config_from_dict({"solver": {"dt": 1 / 1024}}).solver, 8.0)


def test_adjoint_is_refused_with_a_beat_phase_alone():
    """{"solver": {"adjoint": true}} alone was refused for a beat phase the config never asked for (the default was
    8, old checkpoints'): the defaults are config_sde.json's recipe, no phase, so it is accepted; with a phase the
    error names its value and the other way out."""
    from hyper_params_sde import sde_config_from_dict

    assert sde_config_from_dict({"solver": {"adjoint": True}}).solver.adjoint
    with pytest.raises(UserError, match=r"'solver.adjoint' = True cannot train a beat phase \(model.phase_harmonics "
                                        r"= 8\): .*set it false, or model.phase_harmonics 0$"):
        sde_config_from_dict(phase_config(solver={"adjoint": True}))


def test_reviewed_model_settings_are_checked_where_they_matter():
    """Rotary embeddings turn pairs of a head's dimensions: an odd head size (dim 6, heads 2) trained with 4-wide
    queries from 3-wide heads, silently. Attention heads need to divide the channels only when there is attention.
    An integer literal beyond any float is a bad value, not an OverflowError traceback."""
    from hyper_params_transformer import transformer_config_from_dict

    with pytest.raises(UserError, match="'model.heads'.*even head size with model.rope"):
        transformer_config_from_dict({"model": {"dim": 6, "heads": 2, "rope": True}})
    assert transformer_config_from_dict({"model": {"dim": 6, "heads": 2, "rope": False}}).model.heads == 2
    assert config_from_dict({"model": {"has_attention": False, "attention_heads": 3}}).model.attention_heads == 3
    assert "'model.attention_heads'" in error_of({"model": {"has_attention": True, "attention_heads": 3}})
    # attention asked for with no attention layers ran none: only the blocks' sinusoidal positions were added
    assert "'model.attention_layers' = 0" in error_of({"model": {"has_attention": True, "attention_layers": 0}})
    assert config_from_dict({"model": {"has_attention": False, "attention_layers": 0}}).model.attention_layers == 0
    assert "'train.learning_rate'" in error_of({"train": {"learning_rate": 10 ** 400}})


def readme_section(title: str) -> str:
    """The README's section under `## {title}`, up to the next `## ` heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_configuration_table_names_every_key_with_its_default():
    """Every key config_vqvae.json takes is in a row of the README's table that shows its default: the rows of network
    size, VQ losses, dead-code restarts and train.* showed none, though the table's header promises them."""
    table = readme_section("Configuration (`config_vqvae.json`)")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    words = {None: "null", False: "false", True: "true"}
    for section, keys in Config().to_dict().items():
        for key, default in keys.items():
            row = next((r for r in rows if f"`{section}.{key}`" in r.split("|")[1]
                        or (section == "train" and f" {key} (" in r)), None)
            assert row, f"{section}.{key} is not in the README's configuration table"
            shown = [words.get(v, v) if isinstance(v, bool) or v is None else v
                     for v in (default if isinstance(default, list) else [default])]
            for value in shown:
                whole = isinstance(value, float) and value.is_integer()      # 40.0 may read 40
                text = rf"{int(value)}(\.0)?" if whole else re.escape(str(value))
                pattern = rf"\b{key} \([^)]*?\b{text}\b" if section == "train" else rf"(?<![\w.]){text}(?![\w]|\.\d)"
                assert re.search(pattern, row), f"{section}.{key}'s default {value} is not in its row: {row[:80]}"


def test_readme_layout_names_every_file_at_the_root():
    """A reader learns what each file is for from the Layout table: Makefile, requirements.txt, environment.yml
    and .ci/run were missing from it."""
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        pytest.skip("no git: the files at the root are the ones git tracks")
    if tracked.returncode:
        pytest.skip("not a git clone: the files at the root are the ones git tracks")
    layout = readme_section("Layout")
    names = {path.split("/")[0] for path in tracked.stdout.splitlines() if not path.startswith(".ci/")}
    names |= {path for path in tracked.stdout.splitlines() if path.startswith(".ci/")}
    missing = sorted(n for n in names - {"README.md", ".gitignore"}
                     if f"`{n}`" not in layout and f"`{n}/`" not in layout)
    assert not missing, f"README's Layout leaves out {missing}"


DOCS_WITH_COMMANDS = ("README.md", "pretrained/README.md", "EXPERIMENTS.md")
OWN_SCRIPTS = {"my_model.py"}     # the README's example forecaster, which a reader writes


def doc_commands(text: str, docstring: bool = False) -> list[str]:
    """The commands a reader may copy from a Markdown text: inline code that starts by running a script
    (`python3 X.py`, `X.py --flag ...`, wrapped lines joined) or make (`make T`), and the lines of fenced blocks
    that do; from a script, its docstring's usage lines (`    python3 X.py [--flag ...]`)."""
    if docstring:
        doc = ast.get_docstring(ast.parse(text)) or ""
        return [" ".join(line.split("  #")[0].split()) for line in doc.splitlines() if line.startswith("    python3 ")]
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    inline = re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    lines = [line.split("  #")[0] for block in fenced for line in block.splitlines()]
    commands = (" ".join(c.split()) for c in inline + lines)
    return [c for c in commands if re.match(r"(python3 |torchrun .*?)[\w/]+\.py( |$)|[\w/]+\.py |make \w", c)]


def script_usage(script: str) -> str:
    """The usage line of `python3 {script} --help`, run in this process (bench scripts import `common` from bench/):
    every flag the script takes, and none that its description (often the docstring checked) names."""
    folder = str((ROOT / script).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(Path(script).stem)
    done = run_script(module.main, script, ["--help"])
    assert done.returncode == 0 and done.stdout.startswith("usage:"), f"{script} --help: {done.stderr}"
    return done.stdout.split("\n\n")[0]


def test_docs_commands_name_scripts_flags_models_and_make_targets_that_exist():
    """A reader reproduces a figure by copying a command from EXPERIMENTS.md, the README, the model card or a script's
    docstring (the bench scripts' among them): every script such a command runs is there and takes every flag the
    command gives it, evaluate.py's --model names are ones it knows, and every `make` target is the Makefile's."""
    from baselines import BASELINES

    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M))
    usages: dict[str, str] = {}
    checked = 0
    sources = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("*.py"), *ROOT.glob("bench/*.py")])
    for doc in [*DOCS_WITH_COMMANDS, *sources]:
        for command in doc_commands((ROOT / doc).read_text(encoding="utf-8"), docstring=Path(doc).suffix == ".py"):
            for target in re.findall(r"(?:^|\s)make ([\w-]+)", command):
                assert target in targets, f"{doc}: `{command}` runs make {target}, which the Makefile has not"
            scripts = re.findall(r"(?:^|\s)((?:bench/)?\w+\.py)(?=\s|$)", command)
            if not scripts or scripts[0] in OWN_SCRIPTS:
                continue
            script, rest = scripts[0], re.sub(r"<[^>]*>", "<>", command.split(scripts[0], 1)[1])   # <best.pt> etc.
            assert (ROOT / script).is_file(), f"{doc}: `{command}` runs {script}, which is not there"
            usages.setdefault(script, script_usage(script))
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest):
                assert re.search(rf"(?<![\w-]){flag}(?![\w-])", usages[script]), \
                    f"{doc}: `{command}` gives {script} {flag}, which it does not take"
            models = re.search(r"--model((?:\s+[^-\[\s]\S*)+)", rest) if script == "evaluate.py" else None
            for name in models.group(1).split() if models else []:
                assert (name in {"pretrained", "pretrained_sde", "baselines", *BASELINES} or "<" in name
                        or re.search(r"[/.:]", name)), f"{doc}: `{command}`: evaluate.py knows no --model {name}"
            checked += 1
    assert checked > 40, f"only {checked} commands found: doc_commands no longer reads the docs"


def test_readme_states_the_codes_own_numbers():
    """The README states timeouts, margins and drafting settings as numbers a reader plans by (how long a stalled
    download waits, how much of a record forecast.py reads): each is held to the constant or shipped setting it
    names, so that changing one fails here until the README says it too."""
    import download
    import drafts
    import evaluate
    import forecast
    import prepare_mitbih as pm
    import train_results
    import training

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    sample = json.loads((ROOT / "config_transformer.json").read_text(encoding="utf-8"))["sample"]
    sde = json.loads((ROOT / "config_sde.json").read_text(encoding="utf-8"))["model"]
    assert download.STALL_LIMIT == 120 and "for two minutes (`download.STALL_LIMIT`)" in text
    assert download.START_LIMIT == 120 and "two minutes to start fetching (`download.START_LIMIT`)" in text
    assert training.DIST_TIMEOUT_DEFAULT_S == 600 and sde["departure_scale"] == 0.5 and "adds half of its" in text
    stated = [f"with a {download.CONNECT_TIMEOUT:g} s timeout", f"one value for {pm.FLAT_S:g} s or more",
              f"`ECG_DIST_TIMEOUT` seconds (default {training.DIST_TIMEOUT_DEFAULT_S})",
              f"and {pm.SPAN_MARGIN_S:g} s either side", f"(at most every {evaluate.PARTIAL_EVERY_S:g} s",
              f"together pass {train_results.LONG_PLOT_S:g} s", f"shorter than a beat, {drafts.MIN_PERIOD_S:g} s",
              f"under {drafts.MAX_PERIOD_S:g} s, the longest beat period", f"context's last {drafts.EVIDENCE_S:g} s",
              f"white noise of {drafts.NOISE_SCALE:g} times", f"adds {sample['draft_bias']:g} to the log-odds",
              f"a fresh {sample['draft_spread']:.0%} jitter",
              f"averaging more than {forecast.OFFSET_MV:g} mV", f"from {forecast.OFFSET_S:g} s on (1 s around",
              f"flat lead (lead off?), from {forecast.FLAT_S:g} s on", f"or, from {forecast.TINY_S:g} s on, less than"]
    missing = [s for s in stated if s not in text]
    assert not missing, f"the README does not say {missing}"
