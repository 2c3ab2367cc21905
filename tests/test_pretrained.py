"""The shipped model: loads safely, stays small, and forecasts real records as recorded in its model card."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pretrained
from forecast import Forecaster
from hyper_params import config_from_dict
from paths import PRETRAINED
from prepare_mitbih import DS1, DS2, PACED, config_split

# Figures recorded by pretrained.py when the model was packed. Same seed on CPU gives the same numbers;
# the tolerance absorbs float differences between CPU instruction sets, which can flip a sampled code and
# so change a path or two of the 100.
ABS_MV = 2e-3
REL = 0.02


def test_shipped_checkpoint_is_small_safe_and_from_training_patients():
    assert PRETRAINED.is_file(), f"{PRETRAINED} is missing: run `make pretrained`"
    assert PRETRAINED.stat().st_size <= 25 * 2 ** 20
    ckpt = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    assert not set(pretrained.TRAINING_ONLY) & set(ckpt)
    for state in (ckpt["model"], ckpt["vqvae"]["model"]):
        assert not any(k.startswith("module.") for k in state)
    for meta in (ckpt["meta"], ckpt["vqvae"]["meta"]):
        assert meta["seed"] == 0 and meta["git_commit"] and meta["data_hash"]
    cfg = config_from_dict(ckpt["vqvae"]["config"], "shipped VQ-VAE config")
    split = config_split(DS1 + DS2 + PACED, cfg.data)
    assert set(split["test"]) == set(DS2) | {"201"} and {r for r, _ in pretrained.REFERENCE_CASES} <= set(split["test"])
    assert not set(split["train"]) & (set(split["test"]) | set(split["validation"]))


def test_shipped_model_reproduces_its_reference_forecasts(mitdb):
    ref = json.loads(pretrained.REFERENCE.read_text())
    fc = Forecaster.from_pretrained(device="cpu")
    assert fc.name == ref["model"]
    got = pretrained.reference_figures(fc, mitdb)
    for want, have in zip(ref["cases"], got, strict=True):
        assert have["record"] == want["record"]
        np.testing.assert_allclose(have["mean_path_rms_mV"], want["mean_path_rms_mV"], rtol=REL, atol=ABS_MV)
        np.testing.assert_allclose(have["sample_std_mV"], want["sample_std_mV"], rtol=REL, atol=ABS_MV)
        assert have["mse_of_mean_mV2"] == pytest.approx(want["mse_of_mean_mV2"], rel=REL)
