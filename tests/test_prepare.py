"""prepare_mitbih.py on synthetic WFDB records (and two real MIT-BIH records): leads, rates, beats, splits."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.signal
import torch
import wfdb

import paths
import prepare_mitbih as pm
from conftest import (ROOT, TWELVE, edit_tree_after, run_script, snapshot, synthetic_ecg, twelve_leads,
                      write_record, write_signal)
from hyper_params import DataConfig, config_from_dict, data_hash
from paths import UserError

FS = 128
WINDOW = 768  # 3 s context + 3 s forecast at 128 Hz
MITBIH_48 = sorted(pm.DS1 + pm.DS2 + pm.PACED)


def make_cfg(**data):
    return config_from_dict({"data": data})


def corr(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def window_beats(data: dict, i: int) -> np.ndarray:
    """Reference beat positions (samples from the window start) of window i, read from the CSR layout."""
    lo, hi = int(data["beat_ptr"][i]), int(data["beat_ptr"][i + 1])
    return data["beat_pos"][lo:hi].numpy()


def annotated_beats(path: Path, fs_in: float) -> np.ndarray:
    """The beats written to <path>.atr, at the target rate."""
    ann = wfdb.rdann(str(path), "atr")
    return np.round(np.asarray(ann.sample) * FS / fs_in).astype(int)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Six 60 s records: 100 and 101 (250 Hz) test, 102 validation, 103 (leads swapped), 104, 105 train."""
    base = tmp_path_factory.mktemp("prep")
    db = base / "wfdb"
    write_record(db, "100", seed=0)
    write_record(db, "101", seed=1, fs=250.0)
    write_record(db, "102", seed=2)
    write_record(db, "103", seed=3, leads=("V1", "MLII"))
    write_record(db, "104", seed=3)
    write_record(db, "105", seed=5)
    cfg = make_cfg(test_records=["100", "101"], validation_records=["102"])
    out = base / "prepared"
    meta = pm.prepare(cfg, db, out, download=False)
    tensors = {s: torch.load(out / f"{s}.pt", weights_only=True) for s in pm.SPLITS}
    return SimpleNamespace(db=db, out=out, cfg=cfg, meta=meta, tensors=tensors)


def record_windows(t: dict, name: str) -> torch.Tensor:
    return t["signals"][t["record"] == t["records"].index(name)]


# ---------------------------------------------------------------- rates, leads, beats

def test_250hz_record_resampled_to_128hz(prepared):
    assert prepared.meta["records"]["101"]["fs_in"] == 250.0
    assert prepared.meta["records"]["101"]["seconds"] == pytest.approx(60.0)
    rec = pm.read_record(prepared.db / "101", prepared.cfg.data)
    assert rec.signal.shape == (60 * FS, 2) and rec.signal.dtype == np.float32
    _, beats_250 = synthetic_ecg(60.0, 250.0, seed=1)
    np.testing.assert_array_equal(rec.beats, np.round(beats_250 * FS / 250.0).astype(int))
    # the R peak of lead 1 is where the scaled beat position says (no shift from resampling)
    for b in rec.beats[1:-1]:
        assert abs(int(np.argmax(rec.signal[b - 6:b + 7, 0])) - 6) <= 1
    # the 360 Hz records end at the same rate and length
    assert len(pm.read_record(prepared.db / "100", prepared.cfg.data).signal) == 60 * FS


@pytest.mark.parametrize("fs_in,ratio", [(360.0, (16, 45)), (250.0, (64, 125)), (128.0, (1, 1)),
                                          (1000 / 3, (48, 125)), (500.0, (32, 125))])
def test_resample_ratio_exact(fs_in, ratio):
    r = pm.resample_ratio(fs_in, FS, "x")
    assert (r.numerator, r.denominator) == ratio


@pytest.mark.parametrize("fs_in, why", [(333.333, "333.333 Hz does not resample evenly to 128 Hz"),
                                        (0.0, "0.0 Hz is not a positive number"),
                                        (-360.0, "-360.0 Hz is not a positive number"),
                                        (float("nan"), "nan Hz is not a positive number"),
                                        (float("inf"), "inf Hz is not a positive number")])
def test_resample_ratio_uneven_or_invalid(fs_in, why):
    """Named with the record, the rate and what is wrong with it (any error naming rec7 passed)."""
    with pytest.raises(UserError, match=f"^rec7: sampling rate {why}"):
        pm.resample_ratio(fs_in, FS, "rec7")


@pytest.mark.parametrize("fs_in", ["250", None, True])
def test_a_rate_that_is_no_number_is_named(fs_in):
    """A rate given as text (or None, or a bool) is refused by name, not with numpy's TypeError from isfinite."""
    with pytest.raises(UserError, match=rf"rec7: sampling rate {fs_in!r} is not a number of Hz"):
        pm.resample_ratio(fs_in, FS, "rec7")
    assert pm.resample_ratio(np.float32(256.0), FS, "rec7") == 0.5                       # numpy's numbers are


@pytest.mark.parametrize("fs_in, near", [(333.333, "333 or 334"), (360.123456, "360 or 361"), (10007, "10006 or 10008")])
def test_an_uneven_rate_says_which_nearby_rates_resample_evenly(fs_in, near):
    with pytest.raises(UserError, match=rf"rec7: sampling rate {fs_in} Hz does not resample evenly to {FS} Hz: "
                                        rf"resample the record to a rate that does first, such as {near} Hz$"):
        pm.resample_ratio(fs_in, FS, "rec7")


def test_swapped_leads_end_with_mlii_first(prepared):
    assert prepared.meta["records"]["103"]["leads"] == ["MLII", "V1"]
    assert prepared.meta["records"]["104"]["leads"] == ["MLII", "V1"]
    train = prepared.tensors["train"]
    swapped, normal = record_windows(train, "103"), record_windows(train, "104")
    torch.testing.assert_close(swapped, normal)  # same signal, stored in the other channel order
    x, _ = synthetic_ecg(60.0, 360.0, seed=3)  # x[:, 0] is the MLII waveform write_record stored
    known = scipy.signal.resample_poly(x, 16, 45, axis=0)
    start = int(train["start"][train["record"] == train["records"].index("103")][0])
    got = swapped[0].numpy()
    lead1, lead2 = known[start:start + WINDOW, 0], known[start:start + WINDOW, 1]
    assert corr(got[:, 0], lead1) > 0.95
    assert corr(got[:, 0], lead1) > abs(corr(got[:, 0], lead2)) + 0.2
    assert corr(got[:, 1], lead2) > 0.95


@pytest.mark.parametrize("names,first,expected", [
    (["MLII", "V1"], "MLII", [0, 1]),
    (["V5", "MLII"], "MLII", [1, 0]),          # MIT-BIH 114
    (["V5", "V2"], "MLII", [0, 1]),            # MIT-BIH 102/104: no limb lead, record order
    (["V1", "II"], "MLII", [1, 0]),
    (["V1", "ii"], "MLII", [1, 0]),
    (["V1", "ML2"], "MLII", [1, 0]),
    (["V1", "Lead II"], "MLII", [1, 0]),
    (["V1", "ECG-II"], "MLII", [1, 0]),
    (["RESP,", "PLETH,", "V,", "AVR,", "II,"], "MLII", [4, 2]),     # BIDMC's names end in a comma
    (["I", "II"], "MLII", [1, 0]),             # lead II before lead I
    (["V1", "I", "III"], "MLII", [1, 0]),      # lead I before lead III
    (["V2", "III", "aVF"], "MLII", [1, 0]),
    (["V2", "V3", "avf"], "MLII", [2, 0]),     # no V1: lead 2 is the chest lead nearest it
    (["V4", "I", "II", "V3"], "MLII", [2, 3]),   # ... a chest lead, not lead I before it
    (["II", "aVR", "V"], "MLII", [0, 2]),      # ... an unnumbered V (MIMIC) too
    (["II", "V", "V9"], "MLII", [0, 2]),       # ... after every numbered one
    (["II", "I", "CM5"], "MLII", [0, 2]),      # ... a Holter's CM5 as V5
    (["II", "I", "III"], "MLII", [0, 1]),      # no chest lead: the first other channel
    (["ML2", "CM5", "MCL1"], "MLII", [0, 2]),  # a Holter's modified chest leads rank as theirs: MCL1 as V1
    (["ML2", "I", "MV2"], "MLII", [0, 2]),
    (["MCL1", "CM5"], "MLII", [1, 0]),         # ... and MCL1 leads only as V1 does, beside nothing else
    (["ECG1", "ECG2"], "MLII", [0, 1]),        # channel numbers are not lead I / II
    (["DI", "DII", "DIII", "V1", "V2"], "MLII", [1, 3]),    # lead II as D(erivation) II: not lead I by order
    (["ECG D1", "ECG D2"], "MLII", [1, 0]),
    (["V1", "d3", "D1"], "MLII", [2, 0]),      # lead I before lead III
    (["V1", "V5", "II"], "V5", [1, 0]),        # cfg.first_lead wins over the preference list
    (["V1", "v5", "II"], "V5", [1, 0]),        # ... compared case-insensitively
    (["II", "V1"], "V5", [0, 1]),              # first_lead absent: preference list
    (["A", "B", "C"], "MLII", [0, 1]),
    (["V1", "V2", "V5", "V6"], "MLII", [1, 0]),   # no limb lead: V1 is still lead 2, not lead 1 beside V2
    (["v1", "ECG2"], "MLII", [1, 0]),
    (["I", "II", "III", "V1"], "MLII", [1, 3]),      # 12-lead order: lead 2 is V1, as in MIT-BIH
    (["V5", "v1", "II"], "MLII", [2, 1]),
    (["V1", "aVL", "aVF"], "MLII", [2, 0]),    # aVF before aVL ...
    (["V2", "aVR", "aVL"], "MLII", [2, 0]),    # ... and aVL before aVR
    (["II", "RESP", "V5"], "MLII", [0, 2]),    # a respiration channel in mV is not lead 2
    (["EEG C4-A1", "EOG(L)", "ECG1", "EMG chin", "ECG2"], "MLII", [2, 4]),   # a sleep record's ECG leads
    (["Resp", "ECG"], "MLII", None),           # one lead left: an error, not a forecast of breathing
])
def test_order_leads(names, first, expected):
    if expected is None:
        with pytest.raises(UserError, match=r"rec: needs two leads, has 1 \(ECG\); not ECG: Resp in 'None'"):
            pm.order_leads(names, first, "rec")
    else:
        assert pm.order_leads(names, first, "rec") == expected


@pytest.mark.parametrize("names,twins,role", [
    (["II", "II", "V1"], "0 and 1 are both lead II", "lead 1"),
    (["V5", "II", "ii", "ECG II"], "1, 2 and 3 are all lead II", "lead 1"),
    (["V1", "MLII", "v1"], "0 and 2 are both lead V1", "lead 2"),
])
def test_order_leads_refuses_two_channels_of_the_lead_it_names(names, twins, role):
    """Two channels named as one lead (a hand-edited header): the first was taken without a word."""
    with pytest.raises(UserError, match=rf"rec: channels {twins} .*which one is {role} would be a guess"):
        pm.order_leads(names, "MLII", "rec")


@pytest.mark.parametrize("names,expected", [(["ECG", "ECG"], [0, 1]), (["V1", "V1"], [0, 1]),
                                            (["II", "V1", "V5", "V5"], [0, 1])])
def test_order_leads_takes_same_named_channels_it_does_not_choose_by_name(names, expected):
    assert pm.order_leads(names, "MLII", "rec") == expected


def test_leads_naming_one_lead_twice_says_how_a_record_of_two_such_channels_is_read(tmp_path):
    """--leads ECG ECG was refused without a word on how a record whose two channels are both ECG is read: it is,
    without --leads, in its header's order, and the error now says so."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    wfdb.wrsamp("r", fs=360, units=["mV", "mV"], sig_name=["ECG", "ECG2"], p_signal=x[:, [0, 0]] * [1, 0.5],
                fmt=["16"] * 2, adc_gain=[500.0] * 2, baseline=[0] * 2, write_dir=str(tmp_path))
    hea = tmp_path / "r.hea"
    hea.write_text(hea.read_text().replace(" ECG2", " ECG"))      # wfdb writes no two channels of one name
    rec = pm.read_record(tmp_path / "r", make_cfg().data, annotator=None)
    lead1, lead2 = np.nanstd(rec.signal, 0)
    assert rec.leads == ["ECG", "ECG"] and lead1 == pytest.approx(2 * lead2, 0.01)
    with pytest.raises(UserError, match=re.escape("--leads ECG ECG names lead ECG twice: lead 1 and lead 2 are two "
                                                  "channels; a record's two channels of one name are read without "
                                                  "--leads, in its header's order (the first is lead 1)")):
        pm.read_record(tmp_path / "r", make_cfg().data, annotator=None, leads=("ECG", "ECG"))


@pytest.mark.parametrize("names,second,expected", [
    (["I", "II", "V1", "V5"], "V5", [1, 3]),          # data.second_lead over V1
    (["I", "II", "V1", "v-5"], "V5", [1, 3]),         # ... compared as first_lead is
    (["MLII", "II", "V1"], "II", [0, 1]),             # MLII is first_lead's, II second_lead's
    (["II", "V1", "V5"], "II", [2, 0]),               # II is lead 2's alone: lead 1 is not II by its preference
    (["II", "V1"], "V5", [0, 1]),                     # a record without it: V1, as with second_lead ""
    (["II", "V1", "V5"], "", [0, 1]),
])
def test_order_leads_takes_the_lead_second_lead_names(names, second, expected, capsys):
    assert pm.order_leads(names, "MLII", "rec", second=second) == expected


def test_order_leads_refuses_two_channels_of_the_second_lead(capsys):
    with pytest.raises(UserError, match=r"rec: channels 2 and 3 are both lead V5 .*which one is lead 2 would be"):
        pm.order_leads(["II", "V1", "V5", "v5"], "MLII", "rec", second="V5")


def test_order_leads_needs_two_leads():
    with pytest.raises(UserError, match="rec9.*two leads"):
        pm.order_leads(["MLII"], "MLII", "rec9")


def test_read_record_other_database_leads(tmp_path):
    """A record without MLII (another database): lead II first, then the first other channel."""
    x, beats = synthetic_ecg(30.0, 360.0, seed=4)
    three = np.stack([0.3 * x[:, 1], -x[:, 1], x[:, 0]], axis=1)  # V1, aVR-ish, II
    write_signal(tmp_path, "r1", three, leads=("V1", "AVR", "II"))
    rec = pm.read_record(tmp_path / "r1", make_cfg().data)
    assert rec.leads == ["II", "V1"]
    assert rec.signal.shape[1] == 2
    assert corr(rec.signal[:, 0], scipy.signal.resample_poly(x[:, 0], 16, 45)) > 0.95


@pytest.mark.parametrize("fs", [250.0, 360.0])
def test_read_record_of_a_span_reads_only_it_and_the_same_samples(tmp_path, monkeypatch, fs):
    """read_record(span=...) asks wfdb for the span and SPAN_MARGIN_S around it, from a sample on the resampled
    grid, and gives the samples the whole record gives there (a forecast near the end of a 24 h record read all
    of it); a span past the end reads the record's end, whose length it gives."""
    write_record(tmp_path, "r", seconds=200.0, fs=fs, seed=2)
    cfg = make_cfg().data
    whole = pm.read_record(tmp_path / "r", cfg, gaps=True, annotator=None)
    asked, read = [], wfdb.rdrecord
    monkeypatch.setattr(wfdb, "rdrecord", lambda *a, **k: asked.append(k) or read(*a, **k))
    for a, b in [(100 * 128, 106 * 128), (190 * 128, 200 * 128), (0, 6 * 128), (300 * 128, 306 * 128)]:
        part = pm.read_record(tmp_path / "r", cfg, gaps=True, annotator=None, span=(a, b))
        sampfrom, sampto = asked[-1]["sampfrom"], asked[-1]["sampto"] or 200 * fs
        assert sampto - sampfrom <= (b - a) / 128 * fs + 2 * pm.SPAN_MARGIN_S * fs + fs, (a, b, asked[-1])
        assert part.length == len(whole.signal) and part.offset == sampfrom * 128 / fs
        lo, hi = max(min(a, part.length - 1), part.offset), min(b, part.length)
        np.testing.assert_allclose(part.signal[lo - part.offset:hi - part.offset], whole.signal[lo:hi], atol=1e-5)


def test_read_record_of_a_span_beside_a_long_gap_reads_past_it(tmp_path):
    """A read that begins or ends inside a gap longer than SPAN_MARGIN_S is widened until it does not: cut there, the
    gap lost its second of NaN (EDGE_MARGIN_S), so a forecast's context 170.5-173.5 s after a gap ending at 170 s was
    made of the filter's edge, and a lead off for all of the read was refused as off throughout the record."""
    x, _ = synthetic_ecg(300.0, 360.0, seed=2)
    x[100 * 360:170 * 360, 1] = np.nan
    x[200 * 360:290 * 360, 0] = 0.25                  # lead 1 off, held at one value
    write_signal(tmp_path, "g", x, fs=360.0)
    cfg = make_cfg().data
    whole = pm.read_record(tmp_path / "g", cfg, gaps=True, annotator=None)
    for start_s in (170.5, 96.0, 150.0, 245.0):
        a, b = round(start_s * 128), round(start_s * 128) + 3 * 128
        part = pm.read_record(tmp_path / "g", cfg, gaps=True, annotator=None, span=(a, b))
        np.testing.assert_array_equal(part.signal[a - part.offset:b - part.offset], whole.signal[a:b], str(start_s))
    assert np.isnan(whole.signal[round(170.5 * 128)]).all() and np.isnan(whole.signal[round(99.5 * 128)]).all()


def test_read_record_of_a_long_record_keeps_its_memory_down(tmp_path):
    """Reading a long record peaks at under 4.5 times its samples as float64 (3.6 now; 5.5 when wfdb's samples were
    kept to the end and both leads filtered at once: 1.95 GB for a 24 h record at 250 Hz, now 1.34 GB), with the
    same samples (the leads are filtered one at a time, each as before)."""
    import tracemalloc

    x, _ = synthetic_ecg(60.0, 250.0, seed=0)
    write_signal(tmp_path, "h", np.tile(x, (60, 1)), fs=250.0)        # an hour
    tracemalloc.start()
    try:
        rec = pm.read_record(tmp_path / "h", make_cfg().data, gaps=True, annotator=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4.5 * 3600 * 250 * 2 * 8, peak / (3600 * 250 * 2 * 8)
    whole = pm.filter_and_resample(np.tile(x, (60, 1)), 250.0, make_cfg().data, "h")
    np.testing.assert_allclose(rec.signal, whole, atol=0.01)      # the stored 16-bit samples, filtered alike


@pytest.mark.parametrize("micro", ["uV", "\u00b5V", "\u03bcV"])
def test_read_record_converts_microvolts(tmp_path, micro):
    """Microvolts spelled with the micro sign or the Greek mu too: wfdb reads a header as ASCII and drops them,
    'V', which read the record 10**6 times too large and refused it as mislabelled."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    write_signal(tmp_path, "mv", x, units="mV", gain=1000.0)
    write_signal(tmp_path, "uv", x * 1000.0, units=micro, gain=1.0)
    cfg = make_cfg().data
    rec = pm.read_record(tmp_path / "uv", cfg)
    np.testing.assert_allclose(rec.signal, pm.read_record(tmp_path / "mv", cfg).signal, atol=2e-3)
    pm.check_record(tmp_path / "uv", cfg)
    span = pm.read_record(tmp_path / "uv", cfg, span=(640, 1408))
    np.testing.assert_allclose(span.signal[640 - span.offset:1408 - span.offset], rec.signal[640:1408], atol=1e-6)
    write_signal(tmp_path, "nu", x, units="NU", gain=1000.0)
    with pytest.raises(UserError, match="nu.*'NU'"):
        pm.read_record(tmp_path / "nu", cfg)


def test_microvolts_of_a_latin1_header(tmp_path):
    """A header written as Latin-1 (a Windows tool's) spells µV as the lone byte 0xB5: read as UTF-8 it was a
    replacement character, and the record refused as 'needs two leads, has none; not ECG: II in '\ufffdV''."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    write_signal(tmp_path, "mv", x, units="mV", gain=1000.0)
    write_signal(tmp_path, "uv", x * 1000.0, units="\u00b5V", gain=1.0)
    header = tmp_path / "uv.hea"
    header.write_bytes(header.read_text("utf-8").encode("latin-1"))
    cfg = make_cfg().data
    np.testing.assert_allclose(pm.read_record(tmp_path / "uv", cfg).signal, pm.read_record(tmp_path / "mv", cfg).signal,
                               atol=2e-3)
    pm.check_record(tmp_path / "uv", cfg)


def test_microvolts_of_a_utf8_header_with_a_latin1_comment(tmp_path):
    """A UTF-8 header with a comment appended in Latin-1 (a patient's name by another tool): read whole as Latin-1,
    its UTF-8 'µV' was 'Âµ' and the record refused as 'not ECG: MLII in 'ÂµV''; each line is decoded on its own."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    write_signal(tmp_path, "mv", x, units="mV", gain=1000.0)
    write_signal(tmp_path, "uv", x * 1000.0, units="\u00b5V", gain=1.0)
    header = tmp_path / "uv.hea"
    header.write_bytes(header.read_bytes() + "# Ärztin Müller\n".encode("latin-1"))
    cfg = make_cfg().data
    np.testing.assert_allclose(pm.read_record(tmp_path / "uv", cfg).signal, pm.read_record(tmp_path / "mv", cfg).signal,
                               atol=2e-3)


def test_channels_in_other_units_are_not_leads(tmp_path):
    """An ICU record (PLETH, II, V): the pulse wave is passed over; with one ECG lead left, the error names it."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    pleth = 50 + 10 * np.sin(np.arange(len(x)) / 360.0 * 2 * np.pi)
    for name, chans, units in (("icu", ("PLETH", "II", "V"), ("NU", "mV", "mV")),
                               ("one", ("PLETH", "II"), ("NU", "mV"))):
        sig = np.column_stack([pleth, x])[:, :len(chans)]
        wfdb.wrsamp(name, fs=360, units=list(units), sig_name=list(chans), p_signal=sig,
                    fmt=["16"] * len(chans), adc_gain=[100.0] * len(chans), baseline=[0] * len(chans),
                    write_dir=str(tmp_path))
    cfg = make_cfg().data
    assert pm.read_record(tmp_path / "icu", cfg).leads == ["II", "V"]
    pm.check_record(tmp_path / "icu", cfg)
    with pytest.raises(UserError, match=r"one: needs two leads, has 1 \(II\); not ECG: PLETH in 'NU'"):
        pm.check_record(tmp_path / "one", cfg)


def test_leads_in_units_we_do_not_know_name_them_and_the_units_to_write(tmp_path):
    """'millivolts' or 'nV' are no units the reader knows: the message names them and the units the .hea should say,
    not "has 0 ()"."""
    x, _ = synthetic_ecg(12.0, 360.0)
    record = write_signal(tmp_path, "r", x, leads=("II", "V1"), units="millivolts")
    with pytest.raises(UserError) as e:
        pm.check_record(record, make_cfg().data)
    assert str(e.value) == (f"{record}: needs two leads, has none; not ECG: II in 'millivolts', V1 in 'millivolts' "
                            f"(a lead is not named EEG/EOG/EMG/RESP/PLETH..., and if one of these is a lead, "
                            f"{record}.hea should give its "
                            f"units as mV, uV or V)")


def test_units_that_cannot_be_right_are_refused(tmp_path):
    """Samples in uV under a header saying mV would be forecast and scored 1000 times too large."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    write_signal(tmp_path, "wrong", x * 1000.0, units="mV", gain=1.0)
    write_signal(tmp_path, "flat", x / 1000.0, units="mV", gain=100000.0)
    write_signal(tmp_path, "volts", x, units="V", gain=200.0)     # mV under a header saying V: far too large
    write_signal(tmp_path, "micro", x, units="uV", gain=200.0)    # mV under a header saying uV: far too small
    for name, unit, guess in (("wrong", "mV", r"\(samples in uV\?\)"), ("flat", "mV", r"\(samples in V, or a flat"),
                              ("volts", "V", r"\(samples in mV\?\)"), ("micro", "uV", r"\(samples in mV, or a flat")):
        with pytest.raises(UserError, match=f"{name}: lead MLII swings .* mV .*'{unit}'.*{guess}"):
            pm.read_record(tmp_path / name, make_cfg().data)
    assert pm.unit_guess("V", 1e-4) == "a flat lead?"                      # no unit brings it near 1 mV
    assert pm.unit_guess("uV", 1e5).startswith("samples in no ECG unit")


def test_multi_segment_records_are_one_record(tmp_path):
    """A master header and its segments: read through the master, and its segments are not records of their own."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=7)
    for k, part in enumerate((x[:3600], x[3600:]), 1):
        write_signal(tmp_path, f"m_{k}", part)
    (tmp_path / "m.hea").write_text(f"m/2 2 360 {len(x)}\nm_1 3600\nm_2 {len(x) - 3600}\n")
    write_signal(tmp_path, "other", x)
    assert pm.find_records(tmp_path, download=False) == ["m", "other"]
    cfg = make_cfg().data
    pm.check_record(tmp_path / "m", cfg)
    np.testing.assert_allclose(pm.read_record(tmp_path / "m", cfg).signal,
                               pm.read_record(tmp_path / "other", cfg).signal, atol=1e-4)
    before = pm.hash_inputs(tmp_path, ["m"])
    write_signal(tmp_path, "m_2", x[3600:] * 0.9)
    assert pm.hash_inputs(tmp_path, ["m"]) != before         # the segments' samples are part of the data hash


def test_a_records_file_lists_the_records_in_its_order(tmp_path):
    """PhysioNet's RECORDS index: a stray copy of a header beside it is no second patient, the order is the file's,
    and a listed record without its .hea is named; without RECORDS every header is a record, sorted."""
    x, _ = synthetic_ecg(12.0, 360.0)
    for name in ("a", "b"):
        write_signal(tmp_path, name, x)
    (tmp_path / "b_copy.hea").write_bytes((tmp_path / "b.hea").read_bytes())
    assert pm.find_records(tmp_path, download=False) == ["a", "b", "b_copy"]
    (tmp_path / "RECORDS").write_text("b\na\n\n")
    assert pm.find_records(tmp_path, download=False) == ["b", "a"]
    (tmp_path / "RECORDS").write_text("b\nc\na\n")
    with pytest.raises(UserError, match=r"RECORDS lists 1 record with no \.hea in .*: c; add their files"):
        pm.find_records(tmp_path, download=False)


def test_records_listed_in_subfolders_keep_the_names_records_gives_them(tmp_path):
    """PhysioNet's RECORDS may list records in subfolders (PTB-XL: records500/00000/00001_hr): their windows are
    named as listed, as the splits and the records of meta.json name them, not by the file name alone."""
    for i, name in enumerate(("a", "b", "c")):
        write_record(tmp_path / "db" / "sub", name, seconds=20.0, seed=i)
    (tmp_path / "db" / "RECORDS").write_text("sub/a\nsub/b\nsub/c\n")
    meta = pm.prepare(make_cfg(test_records=["sub/a"], validation_records=["sub/b"]), tmp_path / "db",
                      tmp_path / "out", download=False)
    assert meta["splits"] == {"test": ["sub/a"], "validation": ["sub/b"], "train": ["sub/c"]}
    assert {s: list(starts) for s, starts in meta["window_starts"].items()} == meta["splits"]
    assert torch.load(tmp_path / "out" / "test.pt", weights_only=True)["records"] == ["sub/a"]


def test_input_hash_covers_the_signal_files_of_records_in_subfolders(tmp_path):
    """A record RECORDS lists in a subfolder (and a multi-segment one there): its .dat is named from its header's
    folder, as wfdb reads it. It was looked for beside RECORDS, not found and left out of the hash without a word,
    so prepared tensors and cached encodings of changed samples kept the hash of the old ones."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=7)
    write_signal(tmp_path / "sub", "a", x)
    for k, part in enumerate((x[:3600], x[3600:]), 1):
        write_signal(tmp_path / "sub", f"m_{k}", part)
    (tmp_path / "sub" / "m.hea").write_text(f"m/2 2 360 {len(x)}\nm_1 3600\nm_2 {len(x) - 3600}\n")
    (tmp_path / "RECORDS").write_text("sub/a\nsub/m\n")
    assert all(p.is_file() for p in pm.input_files(tmp_path, "sub/m"))
    before = [pm.hash_inputs(tmp_path, [name], None) for name in ("sub/a", "sub/m")]
    write_signal(tmp_path / "sub", "a", 0.9 * x)
    write_signal(tmp_path / "sub", "m_2", 0.9 * x[3600:])
    after = [pm.hash_inputs(tmp_path, [name], None) for name in ("sub/a", "sub/m")]
    assert after[0] != before[0] and after[1] != before[1]
    assert after[0] == pm.record_hash(tmp_path / "sub" / "a")     # as forecast.py names the record read alone


def test_a_header_the_records_file_leaves_out_is_noted(tmp_path, capsys):
    """A record added beside a PhysioNet RECORDS index that does not list it was left out without a word."""
    for i, name in enumerate(("a", "b", "c", "d")):
        write_record(tmp_path / "db", name, seconds=20.0, seed=i)
    (tmp_path / "db" / "RECORDS").write_text("a\nb\nc\n")
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=["b"]), tmp_path / "db", tmp_path / "out",
                      download=False)
    assert meta["splits"]["train"] == ["c"]
    assert (f"note: {tmp_path / 'db' / 'RECORDS'} does not list d, whose .hea is there: not read (add it to RECORDS "
            f"to read it)") in capsys.readouterr().err


def test_the_unlisted_headers_noted_leave_out_listed_records_segments_and_stop_at_five(tmp_path, capsys):
    """A multi-segment record's segment headers are read through it, not unlisted records; the note names 5 at
    most, as a folder of many would fill a screen."""
    (tmp_path / "RECORDS").write_text("m\n")
    (tmp_path / "m.hea").write_text("m/2 2 360 720\nm_1 360\nm_2 360\n")
    for name in ("m_1", "m_2"):
        (tmp_path / f"{name}.hea").write_text(f"{name} 2 360 360\n")
    pm.note_unlisted(tmp_path, ["m"])
    assert capsys.readouterr().err == ""
    for name in "uvwxyz":
        (tmp_path / f"{name}.hea").write_text(f"{name} 2 360 360\n")
    pm.note_unlisted(tmp_path, ["m"])
    assert "does not list u, v, w, x, y ..., whose .hea are there: not read (add them to" in capsys.readouterr().err


def test_records_the_records_file_leaves_out_are_named_as_such(tmp_path):
    """--records asking for two headers RECORDS leaves out names both, in the plural; in a folder without RECORDS
    the hint is not given."""
    (tmp_path / "RECORDS").write_text("a\n")
    for name in "abc":
        (tmp_path / f"{name}.hea").write_text(f"{name} 2 360 360\n")
    with pytest.raises(UserError, match=r"leaves out b, c, whose .hea are there: add them to RECORDS to read them$"):
        pm.select_records(["a"], ["b", "c"], tmp_path)
    (tmp_path / "RECORDS").unlink()         # no index: a header not among the records is a segment's
    (tmp_path / "m.hea").write_text("m/1 2 360 360\nm_1 360\n")
    (tmp_path / "m_1.hea").write_text("m_1 2 360 360\n")
    with pytest.raises(UserError) as e:
        pm.select_records(pm.header_stems(tmp_path), ["m_1"], tmp_path)
    assert "RECORDS" not in str(e.value)


def test_a_split_or_records_by_file_name_alone_name_the_paths_meant(tmp_path):
    """Records in subfolders are named by their paths: a split or --records listed by the file names alone
    ('a', not 'sub/a') was refused with the folder's records unnamed (config) or among all of them (--records);
    the error names the paths meant."""
    for i, name in enumerate(("a", "b", "c")):
        write_record(tmp_path / "db" / "sub", name, seconds=20.0, seed=i)
    (tmp_path / "db" / "RECORDS").write_text("sub/a\nsub/b\nsub/c\n")
    meant = r"\(records are named by their path in it: sub/a\)"
    with pytest.raises(UserError, match=rf"'data.test_records' names records \['a'\] that are not in .*db {meant}"):
        pm.prepare(make_cfg(test_records=["a"], validation_records=[]), tmp_path / "db", tmp_path / "out",
                   download=False)
    with pytest.raises(UserError, match=rf"records \['a'\] are not in .*db {meant}"):
        pm.prepare(make_cfg(), tmp_path / "db", tmp_path / "out", records=["a"], download=False)
    with pytest.raises(UserError, match=r"'data.test_records' names records \['d'\] that are not in .*db \(it has "
                                        r"sub/a, sub/b, sub/c\)"):
        pm.prepare(make_cfg(test_records=["d"]), tmp_path / "db", tmp_path / "out", download=False)


def test_a_records_file_listing_folders_lists_their_records(tmp_path):
    """MIMIC's top-level RECORDS lists folders ('p00/'), each with a RECORDS of its own (or only headers): their
    records are FOLDER/NAME; the folder was taken for a record and refused as having no .hea."""
    x, _ = synthetic_ecg(12.0, 360.0)
    for folder, name in (("p00/p01", "a"), ("p00/p01", "b"), ("p02", "c")):
        write_signal(tmp_path / folder, name, x)
    (tmp_path / "p00" / "RECORDS").write_text("p01/\n")
    (tmp_path / "p00" / "p01" / "RECORDS").write_text("b\n")
    (tmp_path / "RECORDS").write_text("p00/\np02\n")
    assert pm.find_records(tmp_path, download=False) == ["p00/p01/b", "p02/c"]
    (tmp_path / "RECORDS").write_text("p00/\np03/\n./\n")
    with pytest.raises(UserError, match=r"RECORDS lists 2 records with no \.hea in .*: p03/, \./; add their files"):
        pm.find_records(tmp_path, download=False)
    (tmp_path / "p04").mkdir()         # a record's .hea lost beside a folder of its name holding none: still refused
    (tmp_path / "RECORDS").write_text("p02\np04\n")
    with pytest.raises(UserError, match=r"RECORDS lists 1 record with no \.hea in .*: p04; add their files"):
        pm.find_records(tmp_path, download=False)


def test_a_variable_layout_record_reads_its_ecg_leads(tmp_path):
    """MIMIC-style: a layout header, then segments with different channels (a pulse wave joins in the second)."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=3)
    pleth = 50 + 10 * np.sin(np.arange(len(x)) / 360.0 * 2 * np.pi)
    write_signal(tmp_path, "v_1", x[:3600], leads=("II", "V"))
    wfdb.wrsamp("v_2", fs=360, units=["NU", "mV", "mV"], sig_name=["PLETH", "II", "V"],
                p_signal=np.column_stack([pleth[3600:], x[3600:]]), fmt=["16"] * 3, adc_gain=[100.0, 200.0, 200.0],
                baseline=[0] * 3, write_dir=str(tmp_path))
    (tmp_path / "v_layout.hea").write_text("v_layout 3 360 0\n~ 0 100/NU 16 0 0 0 0 PLETH\n"
                                           "~ 0 200/mV 16 0 0 0 0 II\n~ 0 200/mV 16 0 0 0 0 V\n")
    (tmp_path / "v.hea").write_text(f"v/3 3 360 {len(x)}\nv_layout 0\nv_1 3600\nv_2 {len(x) - 3600}\n")
    assert pm.find_records(tmp_path, download=False) == ["v"]
    cfg = make_cfg().data
    pm.check_record(tmp_path / "v", cfg)
    rec = pm.read_record(tmp_path / "v", cfg)
    assert rec.leads == ["II", "V"] and np.isfinite(rec.signal).all()


@pytest.mark.parametrize("leads,units,error", [
    (("V1", "MLII"), "mV", r"m_2\.hea: channels V1, MLII where the first segment of m has MLII, V1: .*layout header"),
    (("MLII", "V1"), "uV", r"m_2\.hea: channel MLII in 'uV', where the first segment of m has it in 'mV'"),
])
def test_a_fixed_layout_record_whose_segments_differ_is_refused(tmp_path, leads, units, error):
    """wfdb joins a fixed layout's segments by position in the first one's units: a second segment storing V1 first
    was read as MLII, one in uV 1000 times too large."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=3)
    write_signal(tmp_path, "m_1", x[:3600])
    second = x[3600:, ::-1] if leads[0] == "V1" else x[3600:]
    write_signal(tmp_path, "m_2", second * (1000 if units == "uV" else 1), leads=leads, units=units,
                 gain=1.0 if units == "uV" else 200.0)
    (tmp_path / "m.hea").write_text(f"m/2 2 360 {len(x)}\nm_1 3600\nm_2 {len(x) - 3600}\n")
    with pytest.raises(UserError, match=error):
        pm.read_record(tmp_path / "m", make_cfg().data)


def test_units_are_taken_as_spelled_only_where_wfdb_dropped_their_non_ascii():
    """The header's spelling replaces wfdb's unit only where it is that unit with its µ or μ dropped: a unit of
    another channel or segment ('uV' where wfdb read 'mV') is no spelling of it, and read as such it scaled the lead
    by 1000."""
    assert pm.as_spelled(["V", "V", "mV", "mV", None], ["\u00b5V", "\u03bcV", "uV", None, "mV"]) == \
        ["\u00b5V", "\u03bcV", "mV", "mV", None]
    assert pm.as_spelled(["V", "mV"], ["\u00b5V"]) == ["\u00b5V", "mV"]       # fewer spelled than read


def test_a_record_whose_segments_spell_microvolts_two_ways_is_one_record(tmp_path):
    """A first segment in 'uV' and a second in 'µV' are the same units: wfdb read the second's as 'V', and the record
    was refused as segments in different units."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=3)
    write_signal(tmp_path, "m_1", x[:3600] * 1000, units="uV", gain=1.0)
    write_signal(tmp_path, "m_2", x[3600:] * 1000, units="\u00b5V", gain=1.0)
    (tmp_path / "m.hea").write_text(f"m/2 2 360 {len(x)}\nm_1 3600\nm_2 {len(x) - 3600}\n")
    write_signal(tmp_path, "mv", x, gain=1000.0)
    cfg = make_cfg().data
    np.testing.assert_allclose(pm.read_record(tmp_path / "m", cfg).signal, pm.read_record(tmp_path / "mv", cfg).signal,
                               atol=2e-3)


def test_a_segment_cut_short_is_named(tmp_path):
    """wfdb said 'Samples were not loaded correctly' of the record, naming no file."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=3)
    write_signal(tmp_path, "m_1", x[:3600])
    write_signal(tmp_path, "m_2", x[3600:])
    (tmp_path / "m.hea").write_text(f"m/2 2 360 {len(x)}\nm_1 3600\nm_2 {len(x) - 3600}\n")
    os.truncate(tmp_path / "m_2.dat", 2000)
    with pytest.raises(UserError, match=r"m_2\.dat: 2000 bytes, but the header's 3600 samples need 14400 \(truncated"):
        pm.read_record(tmp_path / "m", make_cfg().data)


def write_variable_layout(folder: Path, segment_units: list[list[str]], seconds: float = 20.0) -> None:
    """A MIMIC-style record `v` at 125 Hz: layout II (mV), AOBP (mmHg), PLETH (NU), V (mV), and a segment of those
    channels in each list of units."""
    x, _ = synthetic_ecg(seconds, 125.0, seed=3)
    n, t = len(x) // len(segment_units), np.arange(len(x)) / 125.0
    wave = 90 + 20 * np.sin(2 * np.pi * 1.2 * t)
    for i, units in enumerate(segment_units):
        part = slice(i * n, (i + 1) * n)
        mv = [1000.0 if u == "uV" else 1.0 for u in (units[0], units[3])]
        wfdb.wrsamp(f"v_{i + 1}", fs=125, units=units, sig_name=["II", "AOBP", "PLETH", "V"],
                    p_signal=np.column_stack([mv[0] * x[part, 0], wave[part], wave[part] / 2, mv[1] * x[part, 1]]),
                    fmt=["16"] * 4, adc_gain=[200.0 / mv[0], 100.0, 100.0, 200.0 / mv[1]], baseline=[0] * 4,
                    write_dir=str(folder))
    (folder / "v_layout.hea").write_text("v_layout 4 125 0\n~ 0 200/mV 16 0 0 0 0 II\n~ 0 100/mmHg 16 0 0 0 0 AOBP\n"
                                         "~ 0 100/NU 16 0 0 0 0 PLETH\n~ 0 200/mV 16 0 0 0 0 V\n")
    segments = "".join(f"v_{i + 1} {n}\n" for i in range(len(segment_units)))
    (folder / "v.hea").write_text(f"v/{len(segment_units) + 1} 4 125 {n * len(segment_units)}\nv_layout 0\n{segments}")


def test_a_variable_layout_record_keeps_its_layouts_units_when_wfdb_drops_them(tmp_path):
    """PLETH in NU in one segment and in % in the next: wfdb gives no channel's units, and AOBP (mmHg) was read as
    lead 2 in mV."""
    write_variable_layout(tmp_path, [["mV", "mmHg", "NU", "mV"], ["mV", "mmHg", "%", "mV"]])
    assert wfdb.rdrecord(str(tmp_path / "v")).units is None
    assert pm.read_record(tmp_path / "v", make_cfg().data).leads == ["II", "V"]


def test_a_variable_layout_segment_in_other_units_than_its_layout_is_refused(tmp_path):
    write_variable_layout(tmp_path, [["mV", "mmHg", "NU", "mV"], ["mV", "mmHg", "NU", "uV"]])
    with pytest.raises(UserError, match=r"v_2\.hea: channel V in 'uV', where the layout of v has it in 'mV'"):
        pm.read_record(tmp_path / "v", make_cfg().data)


def test_filter_and_resample_refuses_what_it_would_spoil():
    cfg = make_cfg().data
    x = np.random.default_rng(0).standard_normal((3600, 2))
    with pytest.raises(UserError, match=r"my ecg: expected samples \[N, 2\].*\[2, 3600\] \(transposed\? pass x.T\)"):
        pm.filter_and_resample(x.T, 360, cfg, "my ecg")
    x[100, 1] = np.nan
    with pytest.raises(UserError, match="my ecg: 1 NaN/invalid samples .*sample 100.*gaps=True"):
        pm.filter_and_resample(x, 360, cfg, "my ecg")
    y = pm.filter_and_resample(x, 360, cfg, "my ecg", gaps=True)
    assert np.isnan(y).any() and np.isfinite(y).mean() > 0.5


def test_a_whole_config_for_a_data_section_and_the_other_way_round_are_named(tmp_path):
    """read_record(path, fc.cfg) and filter_and_resample(x, fs, fc.cfg, ...) where fc.cfg.data is meant stopped in
    an AttributeError on a data field ('Config' object has no attribute 'first_lead'), and load_split(split,
    fc.cfg.data) where it takes the whole config in one on 'data'."""
    cfg = make_cfg()
    x = np.random.default_rng(0).standard_normal((3600, 2))
    with pytest.raises(TypeError, match=r"read_record takes the config's data section \(fc.cfg.data\), not the whole"):
        pm.read_record(write_record(tmp_path, "100", seconds=10), cfg)
    with pytest.raises(TypeError, match=r"filter_and_resample takes the config's data section"):
        pm.filter_and_resample(x, 360, cfg, "my ecg")
    with pytest.raises(TypeError, match=r"load_split takes the whole config \(fc.cfg\), not its data section"):
        pm.load_split("test", cfg.data, tmp_path)
    assert pm.filter_and_resample(x, 360, cfg.data, "my ecg").shape == (1280, 2)


def test_a_record_a_few_samples_short_says_so():
    assert (pm.secs(5.992), pm.secs(6.0), pm.secs(4.25)) == ("5.992", "6.0", "4.250")


def test_window_beats_match_annotations(prepared):
    total = 0
    for split, t in prepared.tensors.items():
        for i in range(len(t["signals"])):
            name = t["records"][int(t["record"][i])]
            start = int(t["start"][i])
            beats = annotated_beats(prepared.db / name, prepared.meta["records"][name]["fs_in"])
            expected = beats[(beats >= start) & (beats < start + WINDOW)] - start
            got = window_beats(t, i)
            np.testing.assert_array_equal(got, expected, err_msg=f"{split} window {i} of {name}")
            lo, hi = int(t["beat_ptr"][i]), int(t["beat_ptr"][i + 1])
            assert bytes(t["beat_sym"][lo:hi].tolist()) == b"N" * len(got)
            # and the R peak of lead 1 is at each reference beat
            for b in got[(got >= 6) & (got < WINDOW - 7)]:
                assert abs(int(t["signals"][i, b - 6:b + 7, 0].argmax()) - 6) <= 1
            total += len(got)
    assert total > 6 * 60  # about 72 beats per minute per record


def test_a_record_annotated_under_another_name_is_said_once(tmp_path, capsys):
    """A record whose beats are in b.qrs, not b.atr, is noted once, with the --annotator that reads them: the warning
    of a lost .atr (other records have theirs) would say the same twice, and call the file lost."""
    db = tmp_path / "db"
    write_record(db, "a", seed=0)
    write_record(db, "b", seed=1)
    (db / "b.atr").rename(db / "b.qrs")
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False)
    assert meta["records"]["b"]["has_annotations"] is False
    said = [line for line in capsys.readouterr().err.splitlines() if "b.atr" in line]
    assert said == [f"note: {db / 'b'}.atr is missing; the record counts as unannotated (no R-peak scores) "
                    f"(--annotator qrs reads b.qrs)"]


def test_a_record_without_the_annotators_file_is_said_once_by_that_file(tmp_path, capsys):
    """With --annotator qrs a record without its .qrs is noted as such (a named annotator's missing file always is):
    the lost-.atr warning, for the default annotator, would name a b.atr that was never asked for."""
    db = tmp_path / "db"
    write_record(db, "a", seed=0)
    write_record(db, "b", seed=1, annotate=False)
    (db / "a.atr").rename(db / "a.qrs")
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False,
                      annotator="qrs")
    assert meta["records"]["b"]["has_annotations"] is False and meta["records"]["a"]["has_annotations"] is True
    said = [line for line in capsys.readouterr().err.splitlines() if f"{db / 'b'}." in line]
    assert said == [f"note: {db / 'b'}.qrs is missing; the record counts as unannotated (no R-peak scores)"]


def test_a_record_annotated_in_atr_is_named_under_another_annotator(tmp_path, capsys):
    """--annotator qrs over a database whose other records keep their beats in .atr: the note of a missing .qrs
    named no file to read them from, as a missing .atr names a .qrs."""
    db = tmp_path / "db"
    write_record(db, "a", seed=0)
    write_record(db, "b", seed=1)
    (db / "a.atr").rename(db / "a.qrs")
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False,
                      annotator="qrs")
    assert meta["records"]["b"]["has_annotations"] is False
    said = [line for line in capsys.readouterr().err.splitlines() if f"{db / 'b'}." in line]
    assert said == [f"note: {db / 'b'}.qrs is missing; the record counts as unannotated (no R-peak scores) "
                    f"(--annotator atr reads b.atr)"]


def test_a_qrs_file_of_no_beats_names_the_records_atr(tmp_path, capsys):
    """--annotator qrs where b.qrs holds no beat labels (rhythm notes only) and b.atr holds its beats: the note
    names b.atr, not the very file it found wanting."""
    db = tmp_path / "db"
    write_record(db, "a", seed=0)
    write_record(db, "b", seed=1)
    (db / "a.atr").rename(db / "a.qrs")
    wfdb.wrann("b", "qrs", np.array([10, 20]), symbol=["+", "+"], aux_note=["(N", "(N"], write_dir=str(db))
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False,
                      annotator="qrs")
    assert meta["records"]["b"]["has_annotations"] is False
    said = [line for line in capsys.readouterr().err.splitlines() if f"{db / 'b'}.qrs has no beat labels" in line]
    assert len(said) == 1 and said[0].endswith(" (--annotator atr reads b.atr)"), said


def test_records_there_names_up_to_20_records_meant_and_dots_for_more(tmp_path):
    """A missing name that is the last part of a record's path lists the paths meant, twenty and then '...'."""
    names = [f"sub/{i:03d}" for i in range(21)]
    assert pm.records_there([f"{i:03d}" for i in range(20)], names).endswith("sub/019)")
    assert pm.records_there([f"{i:03d}" for i in range(21)], names).endswith("sub/019, ...)")
    assert pm.records_there(["x"], ["a", "b"]) == " (it has a, b)"


def test_records_without_annotations(tmp_path, capsys):
    """A record without the .atr another has is prepared as unannotated, and said to be: a lost .atr (a test record's,
    say) took its beats out of the R-peak scores without a word. A folder with no .atr at all is no news."""
    db = tmp_path / "db"
    write_record(db, "a", seed=0)
    write_record(db, "b", seed=1, annotate=False)
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False)
    assert meta["records"]["b"]["has_annotations"] is False and meta["records"]["b"]["beats"] == 0
    assert meta["records"]["a"]["has_annotations"] is True
    err = capsys.readouterr().err
    assert f"warning: {db / 'b'}.atr is missing, where 1 other record has theirs: b counts as unannotated" in err
    (db / "a.atr").unlink()
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False)
    assert not any(r["has_annotations"] for r in meta["records"].values()) and ".atr" not in capsys.readouterr().err


def test_a_header_giving_a_length_of_0_is_named_and_one_leaving_it_out_is_read(tmp_path):
    """WFDB's 0 for 'length not given' stopped in wfdb's 'sampto must be greater than sampfrom', which named no
    field; a header leaving the length out is read, its length counted from the .dat."""
    write_record(tmp_path, "r", seconds=20, seed=0)
    first, *rest = (tmp_path / "r.hea").read_text().splitlines()
    for length, ok in (("0", False), ("", True)):
        (tmp_path / "r.hea").write_text("\n".join([" ".join(first.split()[:3] + [length]).strip(), *rest]) + "\n")
        if ok:
            assert len(pm.read_record(tmp_path / "r", make_cfg().data).signal) == 20 * FS
        else:
            with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / 'r'))}\.hea: the first line gives the "
                                                r"record 0 samples \(its 4th field\), which wfdb cannot read: write "
                                                r"the number of samples there, or leave the field out$"):
                pm.read_record(tmp_path / "r", make_cfg().data)


def test_a_record_whose_header_is_lost_is_named(tmp_path, capsys):
    """Without its .hea a record's .dat and .atr were passed over in silence, and the database prepared without it
    (a test record lost from the test split): its files are named. Not with a RECORDS index (the database is the
    records it lists, a missing .hea of one of them an error there) nor with --records (the records asked for)."""
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b", "c")):
        write_record(db, name, seconds=20, seed=i)
    (db / "c.hea").unlink()
    cfg = make_cfg(test_records=["a"], validation_records=[])
    meta = pm.prepare(cfg, db, tmp_path / "out", download=False)
    assert list(meta["records"]) == ["a", "b"]
    assert f"warning: c.atr, c.dat in {db} belong to no record's header (a lost .hea?): they are not prepared" \
        in capsys.readouterr().err
    pm.prepare(cfg, db, tmp_path / "out", records=["a", "b"], download=False)
    (db / "RECORDS").write_text("a\nb\n")
    pm.prepare(cfg, db, tmp_path / "out", download=False)
    assert "c.dat" not in capsys.readouterr().err


def test_a_signal_file_named_otherwise_than_its_record_is_not_warned_of(tmp_path, capsys):
    """The files of a folder without RECORDS that no header accounts for are warned of as a lost .hea's: a .dat
    named otherwise than its record (b.hea naming b_signals.dat, as WFDB allows) is its header's, and no warning."""
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b")):
        write_record(db, name, seconds=20, seed=i)
    (db / "b.dat").rename(db / "b_signals.dat")
    header = db / "b.hea"
    header.write_text(header.read_text().replace("b.dat ", "b_signals.dat "))
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False)
    assert list(meta["records"]) == ["a", "b"] and "belong to no record's header" not in capsys.readouterr().err


# ---------------------------------------------------------------- meta.json and files

def test_meta_json(prepared):
    meta = json.loads((prepared.out / "meta.json").read_text())
    assert meta == json.loads(json.dumps(prepared.meta))
    assert meta["splits"] == {"train": ["103", "104", "105"], "validation": ["102"], "test": ["100", "101"]}
    assert meta["fs"] == FS and meta["window_samples"] == 384 and meta["total_samples"] == WINDOW
    assert meta["filter"]["band_hz"] == [0.5, 40.0] and meta["filter"]["order"] == 2
    assert meta["config"] == asdict(prepared.cfg.data)
    assert meta["data_hash"] == data_hash(prepared.cfg.data)
    assert meta["input_hash"] == pm.hash_inputs(prepared.db, [f"10{i}" for i in range(6)])
    assert len(meta["input_hash"]) == 16
    for split, t in prepared.tensors.items():
        assert meta["windows"][split] == len(t["signals"])
        for i, name in enumerate(t["records"]):
            assert meta["window_starts"][split][name] == t["start"][t["record"] == i].tolist()
        assert t["data_hash"] == meta["data_hash"] and t["input_hash"] == meta["input_hash"]
        assert t["fs"] == FS and t["signals"].dtype == torch.float32 and t["signals"].shape[1:] == (WINDOW, 2)
    train = prepared.tensors["train"]["signals"].double()
    np.testing.assert_allclose(meta["scale_mv"], train.std(dim=(0, 1)).numpy(), rtol=1e-6)
    assert all(0.05 < s < 2.0 for s in meta["scale_mv"])
    assert set(meta["records"]) == {f"10{i}" for i in range(6)}


def test_meta_names_the_commit_the_run_started_at(synthetic_db, tmp_path, monkeypatch):
    """Reading a database takes minutes and the tree may change meanwhile: meta.json names the code that ran,
    not the code at its end."""
    edit_tree_after(monkeypatch, pm, "load_records")
    meta = pm.prepare(make_cfg(test_records=["100"], validation_records=["101"]), synthetic_db, tmp_path / "out",
                      download=False)
    assert meta["git_commit"] == "at-start"
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["git_commit"] == "at-start"


def test_input_hash_follows_the_bytes(prepared, tmp_path):
    names = ["100", "102"]
    h = pm.hash_inputs(prepared.db, names)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in names:
        for ext in (".hea", ".dat", ".atr"):
            (copy / f"{name}{ext}").write_bytes((prepared.db / f"{name}{ext}").read_bytes())
    assert pm.hash_inputs(copy, names) == h
    dat = copy / "102.dat"
    raw = bytearray(dat.read_bytes())
    raw[100] ^= 1
    dat.write_bytes(bytes(raw))
    assert pm.hash_inputs(copy, names) != h


def test_input_hash_reads_a_long_record_a_little_at_a_time(tmp_path):
    """The hash of a record's files is the sha256 of their names and bytes, read a MB at a time: read whole, a 24 h
    record's .dat (86 MB) sat in memory beside forecast.py, which reads only the seconds it forecasts from."""
    import hashlib
    import tracemalloc

    x, _ = synthetic_ecg(60.0, 250.0, seed=0)
    write_signal(tmp_path, "h", np.tile(x, (80, 1)), fs=250.0)      # 80 min, a .dat of 4.8 MB
    want = hashlib.sha256(b"h.hea" + (tmp_path / "h.hea").read_bytes() + b"h.dat" + (tmp_path / "h.dat").read_bytes())
    tracemalloc.start()
    try:
        got = pm.hash_inputs(tmp_path, ["h"], annotator=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want.hexdigest()[:16]
    assert peak < (tmp_path / "h.dat").stat().st_size / 2, peak


def test_written_files_are_atomic(prepared):
    files = sorted(p.name for p in prepared.out.iterdir())
    assert files == ["meta.json", "test.pt", "train.pt", "validation.pt"]  # no temp files left
    mask = os.umask(0o022)
    os.umask(mask)
    for name in files:  # not the private 0600 mode of a temp file (was unreadable for other users)
        assert (prepared.out / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "train.pt"
    paths.atomic_torch_save({"old": 1}, target)
    before = target.read_bytes()

    def crash(obj, f):
        f.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):          # the failed write, not another error
        paths.atomic_torch_save({"new": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.pt"]


# ---------------------------------------------------------------- splits and windows

def test_splits_are_disjoint(prepared):
    split = prepared.meta["splits"]
    seen = [r for s in pm.SPLITS for r in split[s]]
    assert len(seen) == len(set(seen)) == 6
    for s in pm.SPLITS:
        assert prepared.tensors[s]["records"] == split[s]


def test_default_split_on_mitbih_names():
    assert len(MITBIH_48) == 48
    split = pm.config_split(MITBIH_48, make_cfg().data)       # null record lists: the default split
    seen = [r for s in pm.SPLITS for r in split[s]]
    assert sorted(seen) == MITBIH_48  # every record assigned, none twice
    assert {"201", "202"} <= set(split["test"])
    assert set(pm.PACED) <= set(split["train"])
    assert split["validation"] and set(split["validation"]) <= set(pm.DS1)
    assert split["validation"] == ["109", "122", "215"]
    assert set(split["test"]) == set(pm.DS2) | {"201"}
    assert not set(split["train"]) & set(pm.DS2)


def test_default_split_on_the_real_folder(mitdb):
    assert pm.find_records(mitdb, download=False) == MITBIH_48


def test_same_patient_in_two_splits_raises(tmp_path):
    with pytest.raises(UserError, match="201.*202"):
        pm.assign_splits(MITBIH_48, test=["201"], validation=["202"])
    with pytest.raises(UserError, match="201.*202.*same patient"):
        pm.assign_splits(["201", "202", "203"], test=["201"], validation=[])  # 202 would train
    db = tmp_path / "db"
    for i, name in enumerate(["201", "202", "203"]):
        write_record(db, name, seconds=8, seed=i)
    with pytest.raises(UserError, match="201.*202"):
        pm.prepare(make_cfg(test_records=["202"], validation_records=[]), db, tmp_path / "out", download=False)
    assert not (tmp_path / "out").exists()
    pm.prepare(make_cfg(test_records=["201", "202"], validation_records=[]), db, tmp_path / "out",
               download=False)


def test_mitbih_names_in_another_database_are_pointed_out(tmp_path, capsys):
    """Records named 100, 103, 104 at 250 Hz: the default lists (MIT-BIH's) would choose their test split by name."""
    db = tmp_path / "db"
    for i, name in enumerate(["100", "103", "104"]):
        write_record(db, name, seconds=8, seed=i, fs=250.0)
    pm.prepare(make_cfg(), db, tmp_path / "out", download=False)
    assert ("MIT-BIH's record names chose the test split (100 103), but these records are not at MIT-BIH's 360 Hz"
            in capsys.readouterr().err)


def test_record_in_test_and_validation_raises():
    with pytest.raises(UserError, match=r"^records \['109'\] are in both test_records and validation_records$"):
        pm.assign_splits(MITBIH_48, test=["109"], validation=["109"])


def test_patients_seen_names_either_record_of_one_patient():
    """201 and 202 are one patient whichever of them the model saw: a scored 202 of a model trained on 201 is no test
    of it either (the partner map was built both ways; one way only, 202 went unflagged)."""
    assert pm.patients_seen(["100", "201", "202"], ["201"]) == ["201", "202 (the patient of 201)"]
    assert pm.patients_seen(["100", "201", "202"], ["202"]) == ["201 (the patient of 202)", "202"]
    assert pm.patients_seen(["100", "203"], ["201", "202"]) == []


def test_each_null_split_list_keeps_its_default():
    """validation_records [] with test_records null still tests on DS2 (it used to train on everything)."""
    split = pm.config_split(MITBIH_48, make_cfg(validation_records=[]).data, MITBIH_48)
    assert split["validation"] == [] and set(split["test"]) == set(pm.DS2) | {"201"}
    split = pm.config_split(MITBIH_48, make_cfg(test_records=["100", "109"]).data, MITBIH_48)
    assert split["test"] == ["100", "109"] and split["validation"] == ["122", "215"]
    split = pm.config_split(MITBIH_48, make_cfg(validation_records=["100"]).data, MITBIH_48)
    assert split["validation"] == ["100"] and "100" not in split["test"] and "103" in split["test"]


@pytest.mark.parametrize("key", ["test_records", "validation_records"])
def test_listed_record_not_in_folder_raises(key):
    with pytest.raises(UserError, match=f"data.{key}.*1000"):
        pm.config_split(MITBIH_48, make_cfg(**{key: ["1000"]}).data, MITBIH_48)


def test_no_training_records_raises(tmp_path):
    db = tmp_path / "db"
    write_record(db, "a", seconds=8)
    with pytest.raises(UserError, match=r"^no training records among \['a'\]; check data.test_records / "
                                        r"validation_records$"):      # the config's doing: --records is not named
        pm.prepare(make_cfg(test_records=["a"], validation_records=[]), db, tmp_path / "out", download=False)


def test_data_and_prepared_folders_come_from_the_flag_then_the_variable(tmp_path, monkeypatch):
    """--data-dir and --out win over $MITBIH_DIR and $ECG_PREPARED_DIR, which win over data/ (never touched here)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": {"test_records": ["a"], "validation_records": []}}))
    for db in ("env_db", "flag_db"):
        for i, name in enumerate(("a", "b")):
            write_record(tmp_path / db, name, seconds=12, seed=i)
    monkeypatch.setenv("MITBIH_DIR", str(tmp_path / "env_db"))
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "env_out"))
    assert pm.main(["--config", str(config), "--no-download"])["data_dir"] == str(tmp_path / "env_db")
    assert (tmp_path / "env_out" / "meta.json").is_file()
    meta = pm.main(["--config", str(config), "--no-download", "--data-dir", str(tmp_path / "flag_db"),
                    "--out", str(tmp_path / "flag_out")])
    assert meta["data_dir"] == str(tmp_path / "flag_db") and (tmp_path / "flag_out" / "train.pt").is_file()


def test_a_relative_data_folder_is_kept_absolute_in_meta_json(tmp_path, monkeypatch):
    """meta.json's data_dir names the records for forecast.py commands printed elsewhere and tells a preparation of
    the same folder from another database's: a relative one ('db') read from another working folder named nothing."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": {"test_records": ["a"], "validation_records": []}}))
    for i, name in enumerate(("a", "b")):
        write_record(tmp_path / "db", name, seconds=12, seed=i)
    monkeypatch.chdir(tmp_path)
    meta = pm.main(["--config", str(config), "--no-download", "--data-dir", "db/../db", "--out", "out"])
    assert meta["data_dir"] == str(tmp_path / "db")
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["data_dir"] == str(tmp_path / "db")


def test_records_of_held_out_patients_alone_are_named_as_the_cause(tmp_path):
    """--records naming test records only was told to 'check data.test_records / validation_records', a config that
    was fine: the flag is named, with the split of the records it gave."""
    db = tmp_path / "db"
    for name in ("a", "b", "c"):
        write_record(db, name, seconds=8)
    with pytest.raises(UserError, match=r"no training records among \['a', 'b'\]: --records names only held-out ones "
                                        r"\(test \['a'\], validation \['b'\]\); add some that train to it$"):
        pm.prepare(make_cfg(test_records=["a"], validation_records=["b"]), db, tmp_path / "out", records=["a", "b"],
                   download=False)
    assert not (tmp_path / "out").exists()


def test_signals_per_patient_limits_windows(synthetic_db, tmp_path):
    cfg = make_cfg(signals_per_patient=3, test_records=["100", "101"], validation_records=["102"])
    meta = pm.prepare(cfg, synthetic_db, tmp_path / "out", download=False)
    for split, per_record in meta["window_starts"].items():
        assert set(per_record) == set(meta["splits"][split])
        for starts in per_record.values():
            assert len(starts) == 3  # spread over the record, first and last window kept
            step = 384 if split == "train" else WINDOW     # the last window that ends a second before the record
            assert starts[0] == 0 and 59 * FS - step < starts[-1] + WINDOW <= 59 * FS
    full = pm.window_starts([(0, 59 * FS)], make_cfg().data, overlap=True)
    assert len(full) > 3 and full[-1] == (59 * FS - WINDOW) // 384 * 384
    assert len(pm.window_starts([(0, 59 * FS)], make_cfg(signals_per_patient=1000).data, overlap=True)) == len(full)


def test_evaluation_windows_do_not_overlap(prepared):
    for split in ("validation", "test"):
        for name, starts in prepared.meta["window_starts"][split].items():
            assert np.all(np.diff(starts) >= WINDOW), (split, name)
            assert len(starts) == 59 * FS // WINDOW  # no overlap, no sample thrown away but the record's last second
    for starts in prepared.meta["window_starts"]["train"].values():
        assert np.all(np.diff(starts) == 384)  # window_stride 3 s: training windows may overlap
    no_stride = make_cfg(window_stride=None).data
    assert np.all(np.diff(pm.window_starts([(0, 60 * FS)], no_stride, overlap=True)) == WINDOW)


# ---------------------------------------------------------------- load_split

def test_load_split_round_trip_mmap(prepared):
    loaded = {split: pm.load_split(split, prepared.cfg, prepared.out) for split in pm.SPLITS}
    for split, data in loaded.items():
        for key in ("signals", "record", "start", "beat_ptr", "beat_pos", "beat_sym", "scale_mv"):
            torch.testing.assert_close(data[key], prepared.tensors[split][key])
        assert data["records"] == prepared.meta["splits"][split]
    with open("/proc/self/maps") as f:  # memory-mapped, not read into memory
        assert str(prepared.out / "train.pt") in f.read()


def test_load_split_from_env_location(prepared, monkeypatch):
    monkeypatch.setenv("ECG_PREPARED_DIR", str(prepared.out))
    assert len(pm.load_split("validation", prepared.cfg)["signals"]) == prepared.meta["windows"]["validation"]


def test_load_split_accepts_same_config_written_differently(prepared):
    same = make_cfg(test_records=["100", "101"], validation_records=["102"], input_signal_duration=3,
                    filter_band=[0.5, 40])
    assert len(pm.load_split("test", same, prepared.out)["signals"]) == prepared.meta["windows"]["test"]


def test_load_split_refuses_other_data_config(prepared):
    other = make_cfg(test_records=["100", "101"], validation_records=["102"], filter_order=4)
    with pytest.raises(UserError, match="another data config"):
        pm.load_split("train", other, prepared.out)


def test_load_split_refuses_an_older_preparation(prepared, tmp_path):
    old = {k: v for k, v in prepared.tensors["train"].items() if k != "preparation"}
    torch.save(old, tmp_path / "train.pt")
    with pytest.raises(UserError, match=r"train.pt was prepared by another version of prepare_mitbih.py "
                                        r"\(preparation 1, this one makes 3"):
        pm.load_split("train", prepared.cfg, tmp_path)


def test_load_split_refuses_splits_of_two_preparations(prepared, tmp_path):
    """A preparation stopped between its files leaves a split of new inputs beside a meta.json of old ones."""
    import shutil
    shutil.copytree(prepared.out, tmp_path / "p")
    assert pm.load_split("train", prepared.cfg, tmp_path / "p")["input_hash"] == prepared.meta["input_hash"]
    torch.save({**prepared.tensors["validation"], "input_hash": "0123456789abcdef"}, tmp_path / "p" / "validation.pt")
    with pytest.raises(UserError, match=r"validation.pt \(input hash 0123456789abcdef\) and .*meta.json \("
                                        + prepared.meta["input_hash"] + r"\) come from two preparations"):
        pm.load_split("validation", prepared.cfg, tmp_path / "p")
    pm.load_split("train", prepared.cfg, tmp_path / "p")            # the other splits still load


def test_load_split_refuses_a_split_of_another_config_beside_meta_json(prepared, tmp_path):
    """The same records prepared with another data config, stopped after its first split (or run at the same time
    into the folder): that split was refused as made with 'another data config', to be read with the config
    its meta.json keeps, which is the config passed. It is named as one of two preparations."""
    import shutil
    shutil.copytree(prepared.out, tmp_path / "p")
    torch.save({**prepared.tensors["validation"], "data_hash": "fedcba9876543210"}, tmp_path / "p" / "validation.pt")
    with pytest.raises(UserError, match=r"validation.pt \(data hash fedcba9876543210\) and .*meta.json \("
                                        + prepared.meta["data_hash"] + r"\) come from two preparations"):
        pm.load_split("validation", prepared.cfg, tmp_path / "p")


def test_a_forecaster_may_train_on_its_own_record_lists(prepared):
    """A Transformer on the shipped VQ-VAE (MIT-BIH's lists) trains on a database split its own way; windows made
    otherwise are still refused, naming what differs."""
    vq_data = make_cfg()                      # MIT-BIH's default lists, the prepared folder's own are others
    with pytest.raises(UserError, match="another data config"):
        pm.load_split("train", vq_data, prepared.out)
    train = pm.load_split("train", vq_data, prepared.out, any_records=True)
    assert train["records"] == ["103", "104", "105"]
    with pytest.raises(UserError, match=r"prepared unlike the VQ-VAE's data \(filter_order 2, not 3\)"):
        pm.load_split("train", make_cfg(filter_order=3), prepared.out, any_records=True)


# every data key but the record lists, changed: a forecaster's windows must be made as its VQ-VAE's were
WINDOW_MAKING_CHANGES = {"samples_per_second": 250, "input_signal_duration": 2.0, "forecast_predictions": 2,
                         "signals_per_patient": 5, "window_stride": 1.0, "first_lead": "V1", "second_lead": "V5",
                         "filter_band": [1.0, 40.0], "filter_order": 3, "normalization": "none"}


@pytest.mark.parametrize("key, value", WINDOW_MAKING_CHANGES.items(), ids=list(WINDOW_MAKING_CHANGES))
def test_own_record_lists_allow_no_other_data_key(prepared, key: str, value: object) -> None:
    """load_split(any_records=True) forgives the record lists alone: a key left out of the comparison (say
    normalization) would let a forecaster train on windows its VQ-VAE never saw made so, without a word."""
    lists = {"test_records", "validation_records"}
    assert set(WINDOW_MAKING_CHANGES) == {f.name for f in fields(DataConfig)} - lists
    cfg = make_cfg()
    cfg.data = replace(cfg.data, **{key: value})
    with pytest.raises(UserError, match=rf"prepared unlike the VQ-VAE's data \({key} "):
        pm.load_split("train", cfg, prepared.out, any_records=True)


def test_load_split_refuses_tensors_that_name_no_data_hash(prepared, tmp_path):
    """A split without a data hash (hand-made, or cut by a script of one's own) proves no data config: refused,
    not taken for whatever config is passed."""
    import shutil
    shutil.copytree(prepared.out, tmp_path / "p")
    torch.save({k: v for k, v in prepared.tensors["train"].items() if k != "data_hash"}, tmp_path / "p" / "train.pt")
    with pytest.raises(UserError, match=r"train.pt was prepared with another data config \(hash None"):
        pm.load_split("train", prepared.cfg, tmp_path / "p")


def test_tensors_of_another_split_name_the_lists_that_differ(tmp_path):
    """A database of one's own prepared with its split in a config, then trained on without that --config: the
    refusal gave two hashes; it names the record lists the tensors were prepared with."""
    for i, name in enumerate(("a", "b", "c")):
        write_record(tmp_path / "db", name, seconds=20.0, seed=i)
    pm.prepare(make_cfg(test_records=["a"], validation_records=["b"]), tmp_path / "db", tmp_path / "out",
               download=False)
    with pytest.raises(UserError, match=r"train.pt was prepared with another data config \(hash \w+ != \w+: "
                                        r"test_records \['a'\], not None, validation_records \['b'\], not None\)"):
        pm.load_split("train", make_cfg(), tmp_path / "out")


def test_own_record_lists_are_judged_by_the_tensors_own_meta(prepared, tmp_path):
    """A meta.json that does not describe the tensors beside it (edited, or copied from elsewhere) proves nothing."""
    import shutil
    copy = tmp_path / "prepared"
    shutil.copytree(prepared.out, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["config"]["filter_order"] = 3
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="meta.json is missing, unreadable or not the tensors' own"):
        pm.load_split("train", make_cfg(filter_order=3), copy, any_records=True)


def test_a_folder_prepared_at_250_hz_is_named_by_what_differs(tmp_path):
    """A folder whose window (2 s at 250 Hz, 500 samples) the default model's downsample_factor 8 does not divide
    was 'missing, unreadable or not the tensors' own': its data section was read as a whole config, default model
    and all, which refused it. It is read as a data section, and the error names the rate and the context."""
    from hyper_params import DataConfig
    data = DataConfig(samples_per_second=250, input_signal_duration=2.0)
    (tmp_path / "meta.json").write_text(json.dumps({"config": asdict(data)}))
    differ = pm.preparation_differences(tmp_path, make_cfg().data, data_hash(data))
    assert differ == "samples_per_second 250, not 128, input_signal_duration 2.0, not 3.0"


def test_location_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ECG_PREPARED_DIR", raising=False)
    assert paths.location("prepared") == ROOT / "data" / "prepared"
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "env"))
    assert paths.location("prepared") == tmp_path / "env"
    assert paths.location("prepared", tmp_path / "flag") == tmp_path / "flag"


# ---------------------------------------------------------------- command line

def test_cli_on_synthetic_records(synthetic_db, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": {"test_records": ["100"], "validation_records": ["101"]}}))
    out = tmp_path / "prepared"
    env = {k: v for k, v in os.environ.items() if k not in ("ECG_PREPARED_DIR",)}
    env["MITBIH_DIR"] = str(synthetic_db)  # the data folder from the environment, the output from the flag
    r = subprocess.run([sys.executable, "prepare_mitbih.py", "--config", str(config), "--out", str(out),
                        "--no-download", "--records", "100", "101", "102", "103"],
                       cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    assert f"prepared 4 records of {synthetic_db} in " in r.stdout       # the folder read, as the data default may be
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"] == {"train": ["102", "103"], "validation": ["101"], "test": ["100"]}
    assert meta["data_dir"] == str(synthetic_db)
    cfg = config_from_dict(json.loads(config.read_text()))
    assert len(pm.load_split("train", cfg, out)["signals"]) == meta["windows"]["train"] == 2 * 18  # 60 s: starts 0, 3, ... 51 s, clear of the last second


# ---------------------------------------------------------------- gaps (NaN/invalid samples)

def gappy_record(folder: Path, name: str = "g") -> tuple[Path, Path]:
    """60 s at 360 Hz losing lead 2 from 20 s to 22 s and one sample of lead 1 at 40 s, and the same
    signal without the gaps (`name`_whole)."""
    x, beats = synthetic_ecg(60.0, 360.0, seed=1)
    whole = write_signal(folder, f"{name}_whole", x)
    x[7200:7920, 1] = np.nan
    x[14400, 0] = np.nan
    path = write_signal(folder, name, x)
    wfdb.wrann(name, "atr", np.asarray(beats), symbol=["N"] * len(beats), write_dir=str(folder))
    return path, whole


def test_gaps_are_filtered_stretch_by_stretch_and_windows_avoid_them(tmp_path):
    path, whole = gappy_record(tmp_path)
    cfg = make_cfg().data
    with pytest.raises(UserError, match="721 NaN/invalid samples.*--allow-gaps"):
        pm.read_record(path, cfg)
    rec = pm.read_record(path, cfg, gaps=True)
    assert rec.invalid_s == pytest.approx(721 / 360)
    assert pm.finite_stretches(rec.signal) == [(0, 2432), (2944, 4992), (5249, 60 * FS)]  # a second beside each gap too
    # what is kept is the signal filtered whole, to 0.03 mV, the record's own ends included (padded alike)
    clean = pm.read_record(whole, cfg).signal
    np.testing.assert_array_equal(pm.read_record(whole, cfg, gaps=True).signal, clean)   # no gap: read alike
    kept = np.isfinite(rec.signal).all(1)
    np.testing.assert_allclose(rec.signal[kept], clean[kept], atol=0.03)
    w = pm.cut_windows([rec], cfg, overlap=False)
    assert w["start"].tolist() == [0, 768, 1536, 2944, 3712, 5249, 6017]   # and clear of the record's last second
    assert torch.isfinite(w["signals"]).all()
    beats = np.concatenate([window_beats(w, i) + s for i, s in enumerate(w["start"].tolist())])
    assert len(beats) > 50 and np.isin(beats, rec.beats).all()


def test_a_records_last_sample_step_stays_in_its_last_second():
    """MIT-BIH's last sample steps to 0 or -1.28 mV: mirror padding keeps that within the last quarter second
    (the filter's default odd padding spread it over the last second, up to 2.2 mV here), and no window
    reaches into the record's last second."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=3)
    stepped = x.copy()
    stepped[-1] = [-1.28, 0.0]
    cfg = make_cfg().data
    diff = np.abs(pm.filter_and_resample(stepped, 360, cfg, "x") - pm.filter_and_resample(x, 360, cfg, "x")).max(1)
    assert diff[:-FS // 4].max() < 0.01 and diff[-FS // 4:].max() < 0.3
    assert pm.window_spans(np.zeros((20 * FS, 2)), FS) == [(0, 19 * FS)]


def test_windows_keep_clear_of_the_last_second_before_trailing_nan():
    """A recording that stops into NaN stops there as it would at its end; a leading gap is its start."""
    x = np.zeros((20 * FS, 2))
    x[:2 * FS] = x[15 * FS:] = np.nan
    assert pm.window_spans(x, FS) == [(2 * FS, 14 * FS)]
    assert pm.window_spans(np.full((20 * FS, 2), np.nan), FS) == []


def test_prepare_allows_gaps_only_when_asked(tmp_path):
    gappy_record(tmp_path / "db")
    write_record(tmp_path / "db", "t", seconds=30, seed=2)
    cfg = make_cfg(test_records=["t"], validation_records=["g_whole"])
    with pytest.raises(UserError, match="g: 721 NaN.*--skip-bad"):
        pm.prepare(cfg, tmp_path / "db", tmp_path / "out", download=False)
    assert not (tmp_path / "out" / "meta.json").exists()
    meta = pm.prepare(cfg, tmp_path / "db", tmp_path / "out", download=False, allow_gaps=True)
    assert meta["records"]["g"]["invalid_seconds"] == pytest.approx(721 / 360)
    assert meta["records"]["t"]["invalid_seconds"] == 0
    train = pm.load_split("train", cfg, tmp_path / "out")
    assert len(train["signals"]) > 0 and torch.isfinite(train["signals"]).all()


def test_a_flat_stretch_is_a_gap_not_ecg(tmp_path):
    """A lead off stored as one value (zeros at 250 Hz, not NaN) was windowed, forecast and scored as ECG, and the
    forecasters told the user to convert a near-zero context from microvolts; it is a gap like NaN now, and a lead
    flat throughout is named."""
    x, _ = synthetic_ecg(40.0, 250.0, seed=1)
    x[20 * 250:25 * 250, 1] = 0.0
    path = write_signal(tmp_path, "off", x, fs=250.0)
    cfg = make_cfg().data
    with pytest.raises(UserError, match=r"off: lead V1 holds one value for 5.0 s \(first from 20.00 s\): lead off\?.*"
                                        r"--allow-gaps"):
        pm.read_record(path, cfg)
    rec = pm.read_record(path, cfg, gaps=True)
    assert rec.invalid_s == pytest.approx(5.0, abs=0.01)     # give or take a neighbour quantised to 0 too
    (a, b), (c, d) = pm.finite_stretches(rec.signal)        # a second beside the gap goes too
    assert (a, d) == (0, 40 * FS) and abs(b - 19 * FS) <= 1 and abs(c - 26 * FS) <= 1
    x[:, 0] = 0.5
    with pytest.raises(UserError, match="lead MLII holds one value throughout: lead off"):
        pm.read_record(write_signal(tmp_path, "dead_flat", x, fs=250.0), cfg, gaps=True)
    x, _ = synthetic_ecg(40.0, 250.0, seed=1)
    x[20 * 250:int(21.9 * 250)] = 0.0            # shorter than FLAT_S: a pause, kept (MIT-BIH's longest is 0.74 s)
    assert pm.read_record(write_signal(tmp_path, "pause", x, fs=250.0), cfg).invalid_s == 0


def test_a_lead_without_a_valid_sample_is_named(tmp_path):
    x, _ = synthetic_ecg(30.0, 360.0, seed=1)
    x[:, 1] = np.nan
    with pytest.raises(UserError, match="dead: lead V1 has no valid sample"):
        pm.read_record(write_signal(tmp_path, "dead", x), make_cfg().data, gaps=True)


def test_leads_asked_by_name_are_read_and_refused_by_name(tmp_path):
    """read_record(leads=...) (forecast.py, evaluate.py and vqvae_eval.py --leads) reads the channels named, exact
    names first, as order_leads matches data.first_lead: 'II' is the channel II beside 'Lead II', 'ii' would be
    either and is refused as a guess. A channel in other units than ECG's is refused as ecg_channels refuses it, one
    named like another signal taken (it was asked for)."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    pleth = 50 + 10 * np.sin(np.arange(len(x)) / 360.0 * 2 * np.pi)
    chans, units = ("II", "Lead II", "V1", "PLETH", "Abdomen_1"), ("mV", "mV", "mV", "NU", "mV")
    sig = np.column_stack([x[:, 0], 0.5 * x[:, 0], x[:, 1], pleth, 0.5 * x[:, 1]])
    wfdb.wrsamp("r", fs=360, units=list(units), sig_name=list(chans), p_signal=sig, fmt=["16"] * 5,
                adc_gain=[500.0] * 5, baseline=[0] * 5, write_dir=str(tmp_path))
    cfg, path = make_cfg().data, tmp_path / "r"
    with pytest.raises(UserError, match="channels 0 and 1 are both lead II .* which one is lead 1 would be a guess"):
        pm.read_record(path, cfg, annotator=None, leads=("ii", "V1"))
    exact = pm.read_record(path, cfg, annotator=None, leads=("Lead II", "abdomen 1"))
    assert exact.leads == ["Lead II", "Abdomen_1"]
    np.testing.assert_allclose(exact.signal, 0.5 * pm.read_record(path, cfg, annotator=None, leads=("II", "V1")).signal,
                               atol=2e-3)
    with pytest.raises(UserError, match=re.escape(f"{path}: PLETH (--leads' lead 2) is channel PLETH in 'NU', not "
                                                  f"ECG (if it is a lead, {path}.hea should give its units as mV")):
        pm.read_record(path, cfg, annotator=None, leads=("II", "PLETH"))
    with pytest.raises(UserError, match="--leads V1 v-1 names lead V1 twice"):
        pm.read_record(path, cfg, annotator=None, leads=("V1", "v-1"))
    with pytest.raises(UserError, match="--leads takes two channel names, lead 1 then lead 2, got 'II' '-'"):
        pm.read_record(path, cfg, annotator=None, leads=("II", "-"))
    with pytest.raises(UserError, match="--leads takes two channel names, lead 1 then lead 2, got 'II' 'V1' 'V2'"):
        pm.asked_leads(["II", "V1", "V2"])
    off = twelve_leads(tmp_path, "off", ("II",))        # a lead asked for is read, off or not: said, not replaced
    with pytest.raises(UserError, match=re.escape(f"{off}: lead II holds one value throughout")):
        pm.read_record(off, cfg, annotator=None, leads=("II", "V1"))


def test_a_lead_off_throughout_is_passed_over_for_the_next_one(tmp_path, capsys):
    """A 12-lead record whose V1 is off (zeros) throughout was refused although eleven leads were fine: lead 2 is the
    next in order_leads' order (the chest lead nearest V1, as in a record without V1), said in a note, in a read of
    the whole record and of a span alike; a lead 1 off goes the same way; with fewer than two leads left it is
    refused as before."""
    cfg = make_cfg().data
    path = twelve_leads(tmp_path, "v1_off", ("V1",))
    rec = pm.read_record(path, cfg, annotator=None)
    assert rec.leads == ["II", "V2"]
    said = f"note: {path}: lead V1 holds one value throughout (lead off?); lead 2 is V2 instead\n"
    assert capsys.readouterr().err == said
    part = pm.read_record(path, cfg, annotator=None, span=(100 * 128, 106 * 128))
    assert part.leads == ["II", "V2"] and "lead 2 is V2 instead" in capsys.readouterr().err
    np.testing.assert_allclose(part.signal[100 * 128 - part.offset:106 * 128 - part.offset],
                               rec.signal[100 * 128:106 * 128], atol=1e-5)
    rec = pm.read_record(twelve_leads(tmp_path, "ii_v1_off", ("II", "V1")), cfg, annotator=None)
    assert rec.leads == ["I", "V2"]
    assert [line.split("; ")[1] for line in capsys.readouterr().err.splitlines()] == ["lead 1 is I instead",
                                                                                     "lead 2 is V2 instead"]
    with pytest.raises(UserError, match="lead V1 holds one value throughout: lead off"):
        pm.read_record(twelve_leads(tmp_path, "one_on", tuple(set(TWELVE) - {"II"})), cfg, annotator=None)
    assert "instead" not in capsys.readouterr().err         # no lead was passed over: none is said to be
    two_on = twelve_leads(tmp_path, "two_on", tuple(set(TWELVE) - {"II", "V5"}))
    assert pm.read_record(two_on, cfg, annotator=None).leads == ["II", "V5"]


def test_second_lead_chooses_lead_2_of_a_record_and_its_note_when_off(tmp_path, capsys):
    """data.second_lead V5 reads a 12-lead record's V5 as lead 2, as --leads II V5 would; the default still reads V1.
    A V5 off throughout is passed over for V1 with a note, as a first_lead off is for the next lead; a lead 1 off
    throughout is passed over keeping V5 (live_leads chooses again by second_lead too, not V1)."""
    path = twelve_leads(tmp_path, "r", ())
    v5 = pm.read_record(path, make_cfg(second_lead="V5").data, annotator=None)
    assert v5.leads == ["II", "V5"]
    np.testing.assert_array_equal(v5.signal, pm.read_record(path, make_cfg().data, annotator=None,
                                                            leads=("II", "V5")).signal)
    assert pm.read_record(path, make_cfg().data, annotator=None).leads == ["II", "V1"]
    off = twelve_leads(tmp_path, "v5_off", ("V5",))
    assert pm.read_record(off, make_cfg(second_lead="V5").data, annotator=None).leads == ["II", "V1"]
    assert "lead V5 holds one value throughout (lead off?); lead 2 is V1 instead" in capsys.readouterr().err
    lead_1_off = twelve_leads(tmp_path, "ii_off", ("II",), leads=("II", "I", "V1", "V5"))
    assert pm.read_record(lead_1_off, make_cfg(second_lead="V5").data, annotator=None).leads == ["I", "V5"]
    assert "lead II holds one value throughout (lead off?); lead 1 is I instead" in capsys.readouterr().err


def test_a_record_without_the_second_lead_is_read_with_a_note_naming_the_lead_taken(tmp_path, capsys):
    """data.second_lead V5 on a record without V5 (MIT-BIH's 103: MLII and V2) reads the automatic lead 2, as ""
    does: said once per read, naming the record and the lead taken, as most of MIT-BIH's 48 records have no V5 and a
    model asked to learn II+V5 learnt V1 on them without a word. A record with V5 off throughout has one, said as
    off (live_leads), not as missing, and a channel of its name that is no ECG (RESP, ecg_channels) is none; --leads
    and the default say nothing."""
    no_v5 = twelve_leads(tmp_path, "no_v5", (), leads=("MLII", "V2"))
    assert pm.read_record(no_v5, make_cfg(second_lead="V5").data, annotator=None).leads == ["MLII", "V2"]
    err = capsys.readouterr().err
    assert err.count("note:") == 1
    assert f"note: {no_v5}: no ECG channel is data.second_lead V5 (MLII, V2); lead 2 is V2 instead" in err
    lead_1_off = twelve_leads(tmp_path, "lead_1_off", ("MLII",), leads=("MLII", "I", "V2"))
    assert pm.read_record(lead_1_off, make_cfg(second_lead="V5").data, annotator=None).leads == ["I", "V2"]
    assert capsys.readouterr().err.count("no ECG channel is data.second_lead V5 (MLII, I, V2); lead 2 is V2") == 1
    dead = twelve_leads(tmp_path, "dead", ("V5", "I"), leads=("I", "II", "V1", "V5"))
    assert pm.read_record(dead, make_cfg(second_lead="V5").data, annotator=None).leads == ["II", "V1"]
    assert "no ECG channel is" not in capsys.readouterr().err
    x = synthetic_ecg(30.0, 360.0, seed=3)[0]
    resp = write_signal(tmp_path, "resp", np.column_stack([x, x[:, 0]]), leads=("MLII", "V1", "RESP"))
    assert pm.read_record(resp, make_cfg(second_lead="RESP").data, annotator=None).leads == ["MLII", "V1"]
    assert "no ECG channel is data.second_lead RESP (MLII, V1, RESP); lead 2 is V1" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"'data.second_lead' is 'RESP', a lead none of the records in .* has \(they "
                                        r"have MLII, V1\)"):       # a database of such records is refused at once
        pm.check_config_leads(tmp_path, ["resp"], "MLII", "RESP")
    pm.read_record(no_v5, make_cfg().data, annotator=None)
    pm.read_record(no_v5, make_cfg(second_lead="V5").data, annotator=None, leads=("MLII", "V2"))
    assert "note:" not in capsys.readouterr().err


def test_a_record_without_the_first_lead_named_is_read_with_a_note_naming_the_lead_taken(tmp_path, capsys):
    """data.first_lead I on a record without I takes a limb lead by LEAD_PREFERENCE (II) as MLII's default does on a
    12-lead record: said, as second_lead's is, since it is the config's own choice; MLII's default, by design not
    found on other databases, says nothing."""
    no_i = twelve_leads(tmp_path, "no_i", (), leads=("II", "III", "V1"))
    assert pm.read_record(no_i, make_cfg(first_lead="I").data, annotator=None).leads == ["II", "V1"]
    err = capsys.readouterr().err
    assert err.count("note:") == 1
    assert f"note: {no_i}: no ECG channel is data.first_lead I (II, III, V1); lead 1 is II instead" in err
    assert pm.read_record(no_i, make_cfg().data, annotator=None).leads == ["II", "V1"]
    assert "note:" not in capsys.readouterr().err


def test_a_database_prepared_with_second_lead_holds_it(tmp_path, monkeypatch):
    """prepare_mitbih.py with data.second_lead V5: each record's lead 2 is its V5 (windows as read_record with
    --leads II V5 reads them) and meta.json says so; a preparation held with another second_lead is named by
    preparation_differences, one from before the key (meta.json without it) is the default's."""
    db = tmp_path / "db"
    for name in ("a", "b", "c"):
        twelve_leads(db, name, ())
    cfg = make_cfg(second_lead="V5", test_records=["a"], validation_records=["c"])
    meta = pm.prepare(cfg, db, tmp_path / "out", download=False)
    assert meta["config"]["second_lead"] == "V5" and meta["data_hash"] == data_hash(cfg.data)
    assert {r: v["leads"] for r, v in meta["records"].items()} == {r: ["II", "V5"] for r in "abc"}
    train = torch.load(tmp_path / "out" / "train.pt", weights_only=True)
    read = pm.read_record(db / "b", cfg.data, annotator=None, leads=("II", "V5")).signal
    start, n = int(train["start"][1]), cfg.data.total_samples
    np.testing.assert_array_equal(train["signals"][1].numpy(), read[start:start + n].astype(np.float32))

    default = replace(cfg.data, second_lead="")
    differences = pm.preparation_differences(tmp_path / "out", default, data_hash(cfg.data))
    assert differences == "second_lead 'V5', not ''"
    meta_file = tmp_path / "out" / "meta.json"
    held = json.loads(meta_file.read_text())
    del held["config"]["second_lead"]           # as data/prepared's meta.json, written before the key
    meta_file.write_text(json.dumps(held))
    assert pm.preparation_differences(tmp_path / "out", default, data_hash(default)) == ""
    assert pm.preparation_differences(tmp_path / "out", cfg.data, data_hash(default)) == "second_lead '', not 'V5'"

    monkeypatch.setattr(pm, "load_records", lambda *a, **k: pytest.fail("read samples before refusing the config"))
    with pytest.raises(UserError, match=r"config key 'data.second_lead' is 'V55', a lead none of the records in "
                                        r".*db has \(they have I, II, III, aVR"):
        pm.prepare(make_cfg(second_lead="V55"), db, tmp_path / "out2", download=False)
    with pytest.raises(UserError, match=r"'data.second_lead' = 'Lead II' names the lead data.first_lead='II' names"):
        make_cfg(first_lead="II", second_lead="Lead II")


def test_a_lead_passed_over_is_said_to_be_off_as_it_is(tmp_path, capsys):
    """A lead of NaN throughout, passed over, was said to 'hold one value throughout'; the note says what the
    whole record shows (a span read too), as gap_mask would have said it."""
    cfg = make_cfg().data
    half = np.where(np.arange(120 * 360) < 60 * 360, np.nan, 0.0)
    for name, value, said in (("nan", np.nan, "has no valid sample"),
                              ("half", half, "is flat or invalid throughout (lead off?)")):
        path = twelve_leads(tmp_path, name, ("V1",), value=value)
        for span in (None, (100 * 128, 106 * 128)):
            assert pm.read_record(path, cfg, annotator=None, span=span).leads == ["II", "V2"]
            assert capsys.readouterr().err == f"note: {path}: lead V1 {said}; lead 2 is V2 instead\n"


def test_a_lead_off_for_a_stretch_only_is_kept_in_every_read(tmp_path, capsys):
    """Only a lead off throughout the record is passed over: V1 off for 80 s of 120 is a gap, and stays lead 2 in
    a read of the whole record and in one of a span inside those 80 s (off_throughout looks at the whole record, so
    that every read of it takes the same leads), with no note."""
    cfg = make_cfg().data
    path = twelve_leads(tmp_path, "v1_gap", ("V1",), during=(20.0, 100.0))
    assert pm.read_record(path, cfg, gaps=True, annotator=None).leads == ["II", "V1"]
    part = pm.read_record(path, cfg, gaps=True, annotator=None, span=(55 * 128, 61 * 128))
    assert part.leads == ["II", "V1"] and np.isnan(part.signal[55 * 128 - part.offset]).all()
    assert capsys.readouterr().err == ""


def test_a_lead_not_recorded_throughout_is_passed_over_as_one_held_at_a_value(tmp_path, capsys):
    """V1 stored as the invalid value (NaN) throughout is off as a V1 of zeros is: lead 2 is the next lead."""
    path = twelve_leads(tmp_path, "v1_nan", ("V1",), value=np.nan)
    assert pm.read_record(path, make_cfg().data, annotator=None).leads == ["II", "V2"]
    assert "lead V1 has no valid sample; lead 2 is V2 instead" in capsys.readouterr().err


@pytest.mark.parametrize("value,said", [(0.0, "holds one value throughout: lead off?"),
                                        (np.nan, "has no valid sample")])
def test_a_lead_off_that_leads_names_says_what_reads_another(tmp_path, value, said):
    """--leads II V1 of a record whose V1 is off throughout: never swapped, it is an error, which said only 'lead
    off?', not that --leads chose it nor what reads another; a span read (forecast.py) says so too."""
    path = twelve_leads(tmp_path, "v1_off", ("V1",), value=value)
    for span in (None, (100 * 128, 106 * 128)):
        with pytest.raises(UserError, match=re.escape(
                f"{path}: lead V1 {said} (--leads II V1 names it: name another of {path}'s channels, or leave "
                f"--leads out to read the next lead that is on)")):
            pm.read_record(path, make_cfg().data, gaps=True, annotator=None, span=span, leads=("II", "V1"))


def test_a_lead_off_is_found_among_the_channels_not_by_its_place_among_the_ecg_ones(tmp_path, capsys):
    """A respiration channel before the leads (not ECG): the lead off is still V1, not the ECG channel at V1's
    place among the ECG channels; a lead 2 that changes only because lead 1 did is said to be off by no note."""
    cfg = make_cfg().data
    path = twelve_leads(tmp_path, "resp_first", ("V1",), leads=("RESP", "I", "II", "V1", "V5"))
    assert pm.read_record(path, cfg, annotator=None).leads == ["II", "V5"]
    assert capsys.readouterr().err.count("holds one value throughout") == 1
    path = twelve_leads(tmp_path, "ii_off", ("II",), leads=("II", "I", "III"))
    assert pm.read_record(path, cfg, annotator=None).leads == ["I", "III"]
    assert capsys.readouterr().err == (f"note: {path}: lead II holds one value throughout (lead off?); lead 1 is I "
                                       f"instead\n")


def test_a_record_whose_stretches_are_all_shorter_than_a_window(tmp_path):
    x, _ = synthetic_ecg(30.0, 360.0, seed=1)
    x[::1800, 0] = np.nan                                    # every 5 s: no clean 6 s window
    rec = pm.read_record(write_signal(tmp_path, "holes", x), make_cfg().data, gaps=True)
    with pytest.raises(UserError, match="holes: no stretch without invalid samples is one window .6.0 s. long "
                                        ".the longest is 3.875 s"):   # 0.1-4 s: a second beside each gap goes
        pm.check_windows(rec, make_cfg().data, str(tmp_path / "holes"))  # too, and the record's last second


def test_a_stretch_just_short_of_a_window_is_not_called_as_long():
    signal = np.zeros((968, 2), np.float32)
    signal[767] = np.nan                     # 767 clean samples (5.992 s): one short of a 6 s window
    rec = pm.Record("r", signal, ["MLII", "V1"], np.zeros(0, np.int64), [], 360.0, False, 1 / 360)
    with pytest.raises(UserError, match=r"one window \(6.0 s\) long \(the longest is 5.992 s\)"):
        pm.check_windows(rec, make_cfg().data, "r")


# ---------------------------------------------------------------- the real database

def test_two_real_records(mitdb, tmp_path):
    cfg = make_cfg(test_records=["100"], validation_records=[])
    meta = pm.prepare(cfg, mitdb, tmp_path / "out", records=["100", "114"], download=False)
    assert meta["splits"] == {"train": ["114"], "validation": [], "test": ["100"]}
    assert meta["records"]["114"]["leads"] == ["MLII", "V5"]  # stored V5, MLII
    assert meta["records"]["100"]["leads"] == ["MLII", "V5"]
    assert meta["records"]["100"]["fs_in"] == 360.0 and meta["records"]["100"]["bits"] == [11, 11]
    assert meta["records"]["100"]["seconds"] == pytest.approx(1805.56, abs=0.01)
    assert all(0.05 < s < 1.5 for s in meta["scale_mv"])  # millivolts, not ADC units or volts
    offsets = []
    for split in ("train", "test"):
        t = pm.load_split(split, cfg, tmp_path / "out")
        x = t["signals"]
        assert torch.isfinite(x).all() and x.abs().max() < 10.0
        assert x.mean(dim=1).abs().max() < 0.2  # baseline wander removed: every window centred on 0 mV
        for i in range(0, len(x), 10):
            lo, hi = int(t["beat_ptr"][i]), int(t["beat_ptr"][i + 1])
            for b, sym in zip(t["beat_pos"][lo:hi].tolist(), t["beat_sym"][lo:hi].tolist()):
                if chr(sym) == "N" and 13 <= b < WINDOW - 13:
                    lead1 = x[i, b - 13:b + 14, 0].abs()  # +-0.1 s around the reference beat
                    offsets.append(int(lead1.argmax()) - 13)
    offsets = np.abs(offsets)
    assert len(offsets) > 200
    assert np.median(offsets) <= 1 and np.mean(offsets <= 2) > 0.95  # reference beats sit on the R peaks


def test_stretched_copy_changes_heart_rate_and_gain_only() -> None:
    from hyper_params import AugmentConfig
    from prepare_mitbih import stretched_copy

    fs, n, stride, hz = 128, 768, 384, 1.2
    t = np.arange(60 * fs) / fs
    record = np.stack([np.sin(2 * np.pi * hz * t), 0.5 * np.cos(2 * np.pi * hz * t)], 1).astype(np.float32)
    beats = np.arange(0, len(t), fs / hz).round().astype(np.int64)            # one "beat" per period
    starts = np.arange(0, len(t) - n + 1, stride)
    per_window = [beats[(beats >= s) & (beats < s + n)] - s for s in starts]
    data = {"signals": torch.from_numpy(record[starts[:, None] + np.arange(n)]),
            "record": torch.zeros(len(starts), dtype=torch.long), "start": torch.from_numpy(starts),
            "beat_ptr": torch.from_numpy(np.cumsum([0] + [len(b) for b in per_window])),
            "beat_pos": torch.from_numpy(np.concatenate(per_window))}
    same = stretched_copy(data, AugmentConfig(1, 0.0, 0.0), stride, np.random.default_rng(0))
    for key in ("signals", "start", "beat_ptr", "beat_pos"):
        assert torch.equal(same[key], data[key]), key
    out = stretched_copy(data, AugmentConfig(1, 0.3, 0.5), stride, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(out["signals"][:, :, 0].numpy(), n=16 * n, axis=1)).mean(0)
    a = np.fft.rfftfreq(16 * n, 1 / fs)[np.argmax(spectrum)] / hz          # heart rate factor
    assert 0.7 <= a <= 1.3 and abs(a - 1) > 0.01
    assert abs(len(out["signals"]) - ((len(t) / a - n) // stride + 1)) <= 1   # the record is 1/a as long
    rr = np.diff(out["beat_pos"][out["beat_ptr"][0]:out["beat_ptr"][1]].numpy())
    assert np.allclose(rr, fs / hz / a, atol=1.5)                              # beats moved with the signal
    gains = out["signals"].abs().amax((0, 1)) / data["signals"].abs().amax((0, 1))
    assert ((gains > 0.45) & (gains < 1.55)).all() and abs(gains[0] - gains[1]) > 0.01
    keep = np.r_[0:5, 12:len(starts)]                  # signals_per_patient > 0 leaves gaps between windows
    sparse = {**data, "signals": data["signals"][keep], "record": data["record"][keep], "start": data["start"][keep],
              "beat_ptr": torch.from_numpy(np.cumsum([0] + [len(per_window[i]) for i in keep])),
              "beat_pos": torch.from_numpy(np.concatenate([per_window[i] for i in keep]))}
    out = stretched_copy(sparse, AugmentConfig(1, 0.3, 0.5), stride, np.random.default_rng(0))
    zeros = (out["signals"][:, :, 0].abs() < 1e-6).float()
    longest_flat = torch.nn.functional.avg_pool1d(zeros[:, None], 64, 1).amax()  # 1 if 64 zero samples in a row
    assert 0 < len(out["signals"]) < len(starts) - 7 and longest_flat < 1


def test_read_record_converts_volts(tmp_path):
    """A record in V reads as the same millivolts as the record in mV (1 V = 1000 mV)."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    write_signal(tmp_path, "mv", x, units="mV", gain=1000.0)
    write_signal(tmp_path, "volts", x / 1000.0, units="V", gain=1e6)
    cfg = config_from_dict({}).data
    np.testing.assert_allclose(pm.read_record(tmp_path / "volts", cfg).signal,
                               pm.read_record(tmp_path / "mv", cfg).signal, atol=2e-3)


def test_input_hash_follows_the_reference_beats(tmp_path):
    """The input hash names the exact data a result saw, reference beats included: other annotations (which
    change every R-peak score) give another hash."""
    write_record(tmp_path, "100", seconds=20.0, seed=0)
    before = pm.hash_inputs(tmp_path, ["100"])
    ann = wfdb.rdann(str(tmp_path / "100"), "atr")
    wfdb.wrann("100", "atr", ann.sample[:-1], symbol=ann.symbol[:-1], write_dir=str(tmp_path))   # one beat less
    assert pm.hash_inputs(tmp_path, ["100"]) != before


def run_prepare(args):
    r = run_script(pm.main, "prepare_mitbih.py", args)
    return r.returncode, r.stderr


def _db(tmp_path):
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b", "c")):
        write_record(db, name, seconds=20, seed=i)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": {"test_records": ["a"], "validation_records": ["c"]}}))
    return db, ["--data-dir", str(db), "--config", str(config), "--no-download", "--out", str(tmp_path / "out")]


def test_skip_bad_flag_leaves_a_bad_record_out(tmp_path):
    db, common = _db(tmp_path)
    write_record(db, "short", seconds=4, seed=6)
    code, err = run_prepare(common)
    assert code == 2 and "--skip-bad" in err
    code, err = run_prepare(common + ["--skip-bad"])
    assert code == 0, err
    assert "warning: left out: " in err
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert sorted(meta["records"]) == ["a", "b", "c"]


def test_allow_gaps_flag_keeps_a_record_with_gaps(tmp_path):
    db, common = _db(tmp_path)
    x, _ = synthetic_ecg(30.0, 360.0, seed=4)
    x[3600:4320, 1] = np.nan                                     # lead 2 lost from 10 s to 12 s
    write_signal(db, "g", x)
    code, err = run_prepare(common)
    assert code == 2 and "--allow-gaps" in err
    code, err = run_prepare(common + ["--allow-gaps"])
    assert code == 0, err
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["records"]["g"]["invalid_seconds"] > 1.9 and "g" in meta["splits"]["train"]


# ---------------------------------------------------------------- filter, window edges, beats (mutation audit)

@pytest.mark.parametrize("order,band", [(2, [0.5, 40.0]), (3, [1.0, 30.0])])
def test_the_filter_is_the_configured_zero_phase_band_pass(order: int, band: list[float]) -> None:
    """A sinusoid comes out scaled by |H(f)|^2 of the Butterworth band-pass that data.filter_band and
    data.filter_order name (run forward and back), and unshifted: the band, the order and the zero phase are
    the config's, below, inside and above the band."""
    fs = 360.0
    t = np.arange(int(60 * fs)) / fs
    cfg = make_cfg(filter_order=order, filter_band=band).data
    sos = scipy.signal.butter(order, band, btype="bandpass", fs=fs, output="sos")
    for f in (0.25, 10.0, 50.0):
        y = pm.filter_and_resample(np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], 1), fs, cfg, "x")
        ts = np.arange(10 * FS, 50 * FS) / FS                  # clear of the record's edges
        basis = np.stack([np.sin(2 * np.pi * f * ts), np.cos(2 * np.pi * f * ts)], 1)
        (s, c), *_ = np.linalg.lstsq(basis, y[10 * FS:50 * FS, 0], rcond=None)
        expected = abs(scipy.signal.sosfreqz(sos, [f], fs=fs)[1][0]) ** 2
        assert np.hypot(s, c) == pytest.approx(expected, rel=0.01, abs=1e-4), f
        assert abs(np.degrees(np.arctan2(c, s))) < 1, f                 # zero phase: no delay


def test_a_span_that_fits_windows_exactly_keeps_its_last_window() -> None:
    """A window may end at the last usable sample: a span of exactly two windows holds two, not one."""
    cfg = make_cfg().data
    assert pm.window_starts([(0, 2 * WINDOW)], cfg, overlap=False).tolist() == [0, WINDOW]
    assert pm.window_starts([(100, 100 + WINDOW)], cfg, overlap=True).tolist() == [100]
    assert pm.window_starts([(0, WINDOW + 384)], cfg, overlap=True).tolist() == [0, 384]


def test_a_window_holds_the_beats_from_its_first_sample_to_its_last() -> None:
    """Beats on a window's first and last samples are its own; one on the next window's first sample is not."""
    beats = np.array([0, WINDOW - 1, WINDOW, 2 * WINDOW - 1])
    rec = pm.Record("r", np.zeros((2 * WINDOW + FS, 2), np.float32), ["MLII", "V1"], beats, list("NVAN"), 360.0, True)
    w = pm.cut_windows([rec], make_cfg().data, overlap=False)
    assert w["start"].tolist() == [0, WINDOW]
    assert [window_beats(w, i).tolist() for i in range(2)] == [[0, WINDOW - 1], [0, WINDOW - 1]]
    assert bytes(w["beat_sym"].tolist()) == b"NVAN"


def test_reference_beats_are_the_beat_labels_only(tmp_path: Path) -> None:
    """Every beat class (normal, ventricular, paced...) is a reference beat; rhythm changes (+), noise (~) and
    other non-beat labels are not, wherever they sit in the file."""
    path = write_record(tmp_path, "r", seconds=20.0, annotate=False)
    samples = np.arange(1, 13) * 500
    symbols = ["N", "+", "V", "~", "A", "/", "|", "L", "x", "R", "F", "Q"]
    wfdb.wrann("r", "atr", samples, symbol=symbols, write_dir=str(tmp_path))
    rec = pm.read_record(path, make_cfg().data)
    beat = [i for i, s in enumerate(symbols) if s in "NVA/LRFQ"]
    assert rec.symbols == [symbols[i] for i in beat]
    np.testing.assert_array_equal(rec.beats, np.round(samples[beat] * FS / 360).astype(int))


def test_an_annotation_file_counts_its_beats_at_its_own_time_resolution(tmp_path: Path) -> None:
    """An annotation file may keep a time resolution of its own (wrann's fs; a QRS detector run on a resampled copy
    writes one): its sample numbers count at that rate. Read at the record's, the beats of a 360 Hz record annotated
    at 720 Hz lay at twice their times, those of its second half past its end, and scored every forecast against
    beats that were not there without a word."""
    path = write_record(tmp_path, "r", seconds=20.0, annotate=False)
    samples = np.arange(1, 14) * 500
    wfdb.wrann("r", "atr", samples * 2, symbol=["N"] * len(samples), fs=720, write_dir=str(tmp_path))
    rec = pm.read_record(path, make_cfg().data)
    np.testing.assert_array_equal(rec.beats, np.round(samples * FS / 360).astype(int))


def test_meta_json_is_written_after_every_split(synthetic_db: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """meta.json is the mark of a finished preparation: a run that dies writing a split leaves none behind."""
    real = paths.atomic_torch_save

    def die_on_test(obj, path):
        if Path(path).name == "test.pt":
            raise OSError("disk full")
        return real(obj, path)

    monkeypatch.setattr(paths, "atomic_torch_save", die_on_test)
    with pytest.raises(OSError, match="disk full"):
        pm.prepare(make_cfg(test_records=["100"], validation_records=["101"]), synthetic_db, tmp_path / "out",
                   download=False)
    assert not (tmp_path / "out" / "meta.json").exists()


STOPS = [KeyboardInterrupt(), UserError("cannot write train.pt: No space left on device")]


@pytest.mark.parametrize("stop", STOPS, ids=["ctrl_c", "disk_full"])
def test_a_preparation_stopped_while_writing_keeps_the_earlier_one_whole(synthetic_db: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch, stop) -> None:
    """Ctrl-C or a full disk after one split's file was written replaced it in the folder, beside the earlier
    preparation's other files: neither preparation could be read any more. The files are moved in once all are
    written, so the earlier preparation stays as it was, with no file of this run left beside it."""
    out = tmp_path / "out"
    pm.prepare(make_cfg(test_records=["100"], validation_records=["101"]), synthetic_db, out, download=False)
    before = snapshot(out)
    real, written = paths.atomic_torch_save, []

    def stop_at_the_second(obj, path):
        if written:
            raise stop
        written.append(Path(path).name)
        return real(obj, path)

    monkeypatch.setattr(paths, "atomic_torch_save", stop_at_the_second)
    with pytest.raises(type(stop)) as said:
        pm.prepare(make_cfg(test_records=["102"], validation_records=["101"]), synthetic_db, out, download=False)
    assert str(said.value) == str(stop)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.pt", "train.pt", "validation.pt"]


@pytest.mark.parametrize("stop", STOPS, ids=["ctrl_c", "disk_full"])
def test_a_preparation_stopped_between_moving_its_files_in_says_what_it_left(synthetic_db: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             stop) -> None:
    """Stopped between moving one written file into the folder and the next, the message says which are this
    run's."""
    out, real, moved = tmp_path / "out", os.replace, []

    def stop_at_the_second(src, dst):
        if Path(dst).parent == out:
            if moved:
                raise stop
            moved.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", stop_at_the_second)
    with pytest.raises(type(stop)) as said:
        pm.prepare(make_cfg(test_records=["100"], validation_records=["101"]), synthetic_db, out, download=False)
    assert str(said.value).startswith(str(stop))
    assert str(said.value).endswith(f"{out} holds only {moved[0]} of this run, beside what was there before: "
                                    f"run prepare_mitbih.py again before reading it")
    assert sorted(p.name for p in out.iterdir()) == [moved[0]]


def test_a_ctrl_c_after_the_last_move_says_the_preparation_is_whole(synthetic_db: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C landing just after meta.json was moved in said the folder held only the split files of this run and
    to prepare again, though the preparation was complete and loads."""
    out, real = tmp_path / "out", os.replace

    def stop_after_the_last(src, dst):
        real(src, dst)
        if Path(dst) == out / "meta.json":
            raise KeyboardInterrupt()

    monkeypatch.setattr(os, "replace", stop_after_the_last)
    cfg = make_cfg(test_records=["100"], validation_records=["101"])
    with pytest.raises(KeyboardInterrupt) as said:
        pm.prepare(cfg, synthetic_db, out, download=False)
    assert str(said.value) == (f"{out} holds this run's result whole (test.pt, validation.pt, train.pt, meta.json): "
                               f"it was stopped only once all were written")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.pt", "train.pt", "validation.pt"]
    assert len(pm.load_split("test", cfg, out)["signals"]) > 0


def test_a_killed_preparations_folder_goes_at_the_next_and_a_live_ones_stays(synthetic_db: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """kill -9 while writing left a .preparing-* folder in --out, as large as a preparation, said by nothing and there
    for ever. The next preparation into it removes one whose process is gone and says so; a live preparation's stays,
    and one naming no process is said; reading the prepared data passes over those left."""
    out, space = tmp_path / "out", paths.process_space()
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    names = [f"{space}-{ended.pid}-dead", f"{space}-{os.getpid()}-live", "unowned"]
    for name in names:
        (out / f"{pm.PREPARING_PART}{name}").mkdir(parents=True)
        (out / f"{pm.PREPARING_PART}{name}" / "train.pt").write_bytes(bytes(10))
    cfg = make_cfg(test_records=["100"], validation_records=["101"])
    pm.prepare(cfg, synthetic_db, out, download=False)
    assert sorted(p.name for p in out.glob(".*")) == [f"{pm.PREPARING_PART}{n}" for n in sorted(names[1:])]
    said = capsys.readouterr().out
    assert f"removed {out / pm.PREPARING_PART}{names[0]}, the folder of a preparation whose process ({ended.pid})" \
           f" is gone" in said
    assert (f"left {out / pm.PREPARING_PART}unowned: a preparation's folder that names no process; remove it if no "
            f"preparation runs there") in said
    assert "-live" not in said
    assert len(pm.load_split("test", cfg, out)["signals"]) > 0


def test_normalization_none_keeps_millivolts() -> None:
    """data.normalization 'none' scales by 1 mV per lead; 'train_std' by the training windows' SD per lead."""
    train = {"signals": torch.stack([torch.arange(8.0), 3 * torch.arange(8.0)], 1).repeat(2, 1, 1)}
    assert pm.train_scale(train, make_cfg(normalization="none").data) == [1.0, 1.0]
    sd = float(torch.arange(8.0).repeat(2).std())          # over every sample of every window
    assert pm.train_scale(train, make_cfg().data) == pytest.approx([sd, 3 * sd])


def test_a_record_without_room_for_a_window_is_named(tmp_path: Path) -> None:
    """6.5 s passes the header's length check (a window is 6 s) but holds no window clear of its last second:
    prepare names it as bad rather than keeping a record that adds no window to its split."""
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b", "c")):
        write_record(db, name, seconds=20, seed=i)
    write_record(db, "short", seconds=6.5, seed=3)
    with pytest.raises(UserError, match="short: 6.5 s is shorter than one window of 6.0 s and the last 1.0 s"):
        pm.prepare(make_cfg(test_records=["a"], validation_records=["c"]), db, tmp_path / "out", download=False)


# ---------------------------------------------------------------- units, gaps, hashes, augmentation (mutation audit)

@pytest.mark.parametrize("unit,mv", [("mV", 1.0), (None, 1.0), (" MV ", 1.0), ("uV", 1e-3), ("\u00b5V", 1e-3),
                                     ("\u03bcV", 1e-3), ("V", 1e3), ("NU", None), ("mmHg", None)])
def test_millivolts_per_unit(unit, mv) -> None:
    """Microvolts written with the micro sign (U+00B5) or the Greek mu (U+03BC) are microvolts too; a unit that
    is no voltage is no lead."""
    assert pm.mv_per_unit(unit) == mv


def test_each_lead_keeps_its_own_unit_when_the_leads_are_reordered(tmp_path: Path) -> None:
    """V1 stored first in uV, MLII second in mV: each channel's unit goes with it when MLII becomes lead 1, so the
    record reads as the same millivolts as one stored all in mV."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    write_signal(tmp_path, "mv", x, gain=1000.0)
    wfdb.wrsamp("mixed", fs=360, units=["uV", "mV"], sig_name=["V1", "MLII"],
                p_signal=np.column_stack([x[:, 1] * 1000.0, x[:, 0]]), fmt=["16", "16"], adc_gain=[1.0, 1000.0],
                baseline=[0, 0], write_dir=str(tmp_path))
    cfg = make_cfg().data
    rec = pm.read_record(tmp_path / "mixed", cfg)
    assert rec.leads == ["MLII", "V1"]
    np.testing.assert_allclose(rec.signal, pm.read_record(tmp_path / "mv", cfg).signal, atol=2e-3)


def test_a_gap_in_both_leads_is_a_gap_like_one_in_either(tmp_path: Path) -> None:
    """Both leads lost from 10 s to 12 s is a gap (not a lead without a valid sample): kept as NaN with a second
    beside it, counted as invalid, and no window touches it."""
    x, _ = synthetic_ecg(30.0, 360.0, seed=2)
    x[3600:4320] = np.nan
    cfg = make_cfg().data
    rec = pm.read_record(write_signal(tmp_path, "both", x), cfg, gaps=True)
    assert rec.invalid_s == pytest.approx(2.0)
    assert pm.finite_stretches(rec.signal) == [(0, 1152), (1664, 30 * FS)]
    assert pm.cut_windows([rec], cfg, overlap=False)["start"].tolist() == [0, 1664, 2432]


def test_a_record_one_window_and_one_second_long_holds_one_window(tmp_path: Path) -> None:
    """7 s = a 6 s window and the last second windows leave out: kept, with one window. 6 s passes the header's
    check (it is not shorter than a window) and is refused for the last second it lacks."""
    cfg = make_cfg().data
    rec = pm.read_record(write_record(tmp_path, "seven", seconds=7.0), cfg)
    pm.check_windows(rec, cfg, "seven")
    assert pm.cut_windows([rec], cfg, overlap=False)["start"].tolist() == [0]
    pm.check_record(write_record(tmp_path, "six", seconds=6.0), cfg)
    with pytest.raises(UserError, match="six: 6.0 s is shorter than one window of 6.0 s and the last 1.0 s"):
        pm.check_windows(pm.read_record(tmp_path / "six", cfg), cfg, "six")


def test_one_record_of_a_patient_alone_is_split_like_any_other() -> None:
    """With 202 left out (--records, or skipped as bad), 201 goes where its list says: the same-patient rule
    is about the two records together."""
    assert pm.assign_splits(["201", "203"], test=["201"], validation=[]) == \
        {"test": ["201"], "validation": [], "train": ["203"]}
    assert pm.assign_splits(["202", "203"], test=[], validation=["203"])["train"] == ["202"]
    assert "201" in pm.config_split([r for r in MITBIH_48 if r != "202"], make_cfg().data)["test"]


def test_records_are_selected_in_the_folders_order(tmp_path: Path) -> None:
    """--records picks records in the folder's order; --records with no names is every record."""
    assert pm.select_records(["a", "b", "c"], ["c", "a"], tmp_path) == ["a", "c"]
    assert pm.select_records(["a", "b", "c"], [], tmp_path) == ["a", "b", "c"]


def test_input_hash_covers_every_signal_file_of_a_record(tmp_path: Path) -> None:
    """A record keeping each lead in a signal file of its own: the second file's bytes are in the hash too."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=1)
    for k, lead in enumerate(("MLII", "V1")):
        write_signal(tmp_path, f"part{k}", x[:, k:k + 1], leads=(lead,))
    signal_lines = [(tmp_path / f"part{k}.hea").read_text().splitlines()[1] for k in (0, 1)]
    (tmp_path / "two.hea").write_text(f"two 2 360 {len(x)}\n" + "\n".join(signal_lines) + "\n")
    assert pm.read_record(tmp_path / "two", make_cfg().data).leads == ["MLII", "V1"]
    before = pm.hash_inputs(tmp_path, ["two"])
    write_signal(tmp_path, "part1", 0.9 * x[:, 1:], leads=("V1",))
    assert pm.hash_inputs(tmp_path, ["two"]) != before


def test_meta_input_hash_covers_the_annotator_read(tmp_path: Path) -> None:
    """With --annotator qrs the reference beats come from NNN.qrs: meta.json's input hash covers those bytes."""
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b", "c")):
        write_record(db, name, seconds=8, seed=i, annotate=False)
        wfdb.wrann(name, "qrs", np.arange(100, 8 * 360, 300), symbol=["N"] * 10, write_dir=str(db))
    meta = pm.prepare(make_cfg(test_records=["a"], validation_records=["c"]), db, tmp_path / "out", download=False,
                      annotator="qrs")
    assert meta["records"]["b"]["beats"] == 10
    assert meta["input_hash"] == pm.hash_inputs(db, ["a", "b", "c"], "qrs") != pm.hash_inputs(db, ["a", "b", "c"])


def test_a_cache_file_holding_another_key_is_computed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached encoding is used only for the key it was stored under (a file copied or left from elsewhere
    under its name is computed again)."""
    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path / "cache"))
    pm.cached_encoding("codes", "k1", lambda: torch.zeros(2), tmp_path)
    pm.cached_encoding("codes", "k2", lambda: torch.ones(2), tmp_path)
    files = {torch.load(p, weights_only=True)["key"]: p for p in (tmp_path / "cache" / "encodings" / "codes").iterdir()}
    files["k2"].write_bytes(files["k1"].read_bytes())
    seven = torch.full((2,), 7.0)
    assert torch.equal(pm.cached_encoding("codes", "k2", lambda: seven, tmp_path), seven)


def test_a_cache_write_cut_by_a_kill_goes_once_encoded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 while an encoding was written (tens to hundreds of MB) left its hidden temporary file in the cache for
    good: the next run encodes again and removes it. A newer one, another run's write going on, stays."""
    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "encodings" / "codes"
    pm.cached_encoding("codes", "k", lambda: torch.zeros(2), tmp_path)
    (stored,) = folder.glob("*.pt")
    stored.unlink()
    name = stored.name
    cut, other = folder / f".{name}.abc.tmp", folder / ".0123456789abcdef.pt.abc.tmp"   # another encoding's
    for f in (cut, other):
        f.write_bytes(b"half")
        os.utime(f, (time.time() - 60, time.time() - 60))
    writing = folder / f".{name}.new.tmp"

    def compute() -> torch.Tensor:
        writing.write_bytes(b"another run's")
        return torch.ones(2)
    assert torch.equal(pm.cached_encoding("codes", "k", compute, tmp_path), torch.ones(2))
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, writing.name, other.name])


def _split(records: list[np.ndarray], beats: list[np.ndarray], n: int, starts: list[np.ndarray]) -> dict:
    """A prepared split's tensors (signals, record, start, beat_ptr, beat_pos) cut at `starts` from whole
    records [N, 2] with their beats."""
    sig, rec, start, per_window = [], [], [], []
    for r, (x, b, s) in enumerate(zip(records, beats, starts)):
        sig.append(x[s[:, None] + np.arange(n)])
        rec += [r] * len(s)
        start.append(s)
        per_window += [b[(b >= s0) & (b < s0 + n)] - s0 for s0 in s]
    return {"signals": torch.from_numpy(np.concatenate(sig).astype(np.float32)), "record": torch.tensor(rec),
            "start": torch.from_numpy(np.concatenate(start)),
            "beat_ptr": torch.from_numpy(np.cumsum([0] + [len(b) for b in per_window])),
            "beat_pos": torch.from_numpy(np.concatenate(per_window).astype(np.int64)),
            "data_hash": "d", "input_hash": "i"}


def _sines(seconds: float, hz: float, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(round(seconds * FS)) / FS
    return (gain * np.stack([np.sin(2 * np.pi * hz * t), 0.5 * np.cos(2 * np.pi * hz * t)], 1),
            np.arange(0, len(t), FS / hz).round().astype(np.int64))


def test_stretched_copies_keep_records_apart_and_beats_in_their_window() -> None:
    """Unstretched (rate and gain ranges 0), the copy of a split of two records is the split itself: each window
    names its own record, and a beat on the first sample after a window belongs to the next one only."""
    from hyper_params import AugmentConfig

    (x0, b0), (x1, b1) = _sines(30.0, 1.2), _sines(20.0, 1.5, 0.8)
    b0 = np.unique(np.r_[b0, WINDOW])                       # on the end of window 0, the start of window 2
    data = _split([x0, x1], [b0, b1], WINDOW, [np.arange(0, len(x) - WINDOW + 1, 384) for x in (x0, x1)])
    same = pm.stretched_copy(data, AugmentConfig(1, 0.0, 0.0), 384, np.random.default_rng(0))
    for key in ("signals", "record", "start", "beat_ptr", "beat_pos"):
        assert torch.equal(same[key], data[key]), key
    assert set(same["record"].tolist()) == {0, 1} and int(same["beat_pos"].max()) < WINDOW


def test_a_stretched_copy_window_never_touches_a_gap() -> None:
    """Windows at 0 and 769 leave sample 768 uncovered, a gap: at stride 1 the only windows clear of it are the
    two, and one ending on the gap's sample is not."""
    from hyper_params import AugmentConfig

    x, b = _sines(12.1, 1.2)
    data = _split([x], [b], WINDOW, [np.array([0, WINDOW + 1])])
    out = pm.stretched_copy(data, AugmentConfig(1, 0.0, 0.0), 1, np.random.default_rng(0))
    assert out["start"].tolist() == [0, WINDOW + 1]


def test_a_stretched_copy_beside_a_gap_matches_the_whole_record_stretched() -> None:
    """The windows kept beside a gap are the whole record's stretched windows: zeros in the gap made the resampling
    filter ring into them (0.1 mV on MIT-BIH records), a line across it does not."""
    from hyper_params import AugmentConfig

    x, b = _sines(60.0, 1.2, 2.0)
    x = x + 0.5                                                          # a step to the zeros of a gap
    every = np.arange(0, len(x) - WINDOW + 1, 1)
    whole = pm.stretched_copy(_split([x], [b], WINDOW, [every]), AugmentConfig(1, 0.15, 0.0), 1, np.random.default_rng(3))
    gapped = every[(every + WINDOW <= 20 * FS) | (every >= 30 * FS)]
    part = pm.stretched_copy(_split([x], [b], WINDOW, [gapped]), AugmentConfig(1, 0.15, 0.0), 1, np.random.default_rng(3))
    at = {s: i for i, s in enumerate(whole["start"].tolist())}
    rows = [at[s] for s in part["start"].tolist()]
    assert len(rows) < len(at) - 5 * FS
    assert float((part["signals"] - whole["signals"][rows]).abs().max()) < 0.02


def test_stretched_copies_are_encoded_again_for_another_augmentation_or_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached encoding of stretched copies belongs to their augmentation ranges, seed and what else their
    encoder depends on (the drafts' version, as for the plain windows): another of any encodes anew, the same
    again reads the cache."""
    from hyper_params import AugmentConfig

    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path))
    x, b = _sines(40.0, 1.2)
    data = _split([x], [b], WINDOW, [np.arange(0, len(x) - WINDOW + 1, 384)])
    calls = []

    def encode(signals: torch.Tensor) -> torch.Tensor:
        calls.append(len(signals))
        return signals.mean(dim=(1, 2))
    cfg, first = make_cfg().data, AugmentConfig(1, 0.1, 0.1)
    copies, encoded = pm.augmented_encoding("codes", data, first, cfg, 0, encode, "vq")
    pm.augmented_encoding("codes", data, AugmentConfig(1, 0.2, 0.1), cfg, 0, encode, "vq")
    pm.augmented_encoding("codes", data, first, cfg, 1, encode, "vq")
    assert len(calls) == 3
    again, cached = pm.augmented_encoding("codes", data, first, cfg, 0, encode, "vq")
    assert len(calls) == 3
    pm.augmented_encoding("codes", data, first, cfg, 0, encode, "vq", what_else="384:steps:drafts3")   # new drafts
    assert len(calls) == 4 and torch.equal(cached, encoded) and torch.equal(cached, encode(again[0]["signals"]))


def test_a_beat_rounding_past_the_resampled_end_is_left_out(tmp_path: Path) -> None:
    """A beat on a 20 s record's last sample (7199 at 360 Hz) lands at 2560 at 128 Hz, one past the signal's
    last sample: every reference beat kept indexes the signal."""
    path = write_record(tmp_path, "r", seconds=20.0, annotate=False)
    wfdb.wrann("r", "atr", np.array([100, 7198, 7199]), symbol=["N"] * 3, write_dir=str(tmp_path))
    rec = pm.read_record(path, make_cfg().data)
    assert len(rec.signal) == 2560 and rec.beats.tolist() == [36, 2559] and rec.symbols == ["N", "N"]


def test_a_stretched_copy_of_windows_kept_apart_that_holds_no_window_says_why() -> None:
    """Windows kept apart (data.signals_per_patient) are 6 s islands: sped up (heart rate x a > 1) each is shorter
    than a window, so a copy of a record drawn a > 1 holds none, and one of only such records was numpy's
    'need at least one array to concatenate' (then torch.cat's on encoding it) instead of a reason."""
    from hyper_params import AugmentConfig

    x, b = _sines(120.0, 1.2)
    data = _split([x], [b], WINDOW, [np.array([0, 30 * FS, 60 * FS, 90 * FS])])
    rng = np.random.default_rng(0)
    assert rng.uniform(0.85, 1.15) > 1                  # seed 0 speeds the record up
    with pytest.raises(UserError, match="signals_per_patient"):
        pm.stretched_copy(data, AugmentConfig(1, 0.15, 0.2), 384, np.random.default_rng(0))


def test_preparing_over_a_preparation_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The prepared folder is what every trainer reads: preparing a few records into it replaced a whole preparation
    without a word."""
    for name, seed in (("a", 0), ("b", 1)):
        write_record(tmp_path / "db", name, seconds=12, seed=seed)
    cfg = config_from_dict({"data": {"test_records": ["a"], "validation_records": []}})
    pm.prepare(cfg, tmp_path / "db", tmp_path / "out", download=False)
    assert "replacing" not in capsys.readouterr().err
    pm.prepare(cfg, tmp_path / "db", tmp_path / "out", ["b"], download=False)
    assert (f"note: replacing the prepared data in {tmp_path / 'out'} (train.pt, validation.pt, test.pt)"
            in capsys.readouterr().err)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["splits"]["train"] == ["b"]


def test_another_database_is_not_prepared_over_the_default_folders(tmp_path: Path, monkeypatch) -> None:
    """`prepare_mitbih.py --data-dir own` (no --out) replaced MIT-BIH's preparation in data/prepared, which every
    script reads, with only a note; it is refused now, naming both, and loses nothing. --out takes it anywhere, and
    the same database's records (again, or a few) are prepared over it as before."""
    for i, name in enumerate(("100", "101", "102", "own_a", "own_b")):
        write_record(tmp_path / ("own" if name.startswith("own") else "mitdb"), name, seconds=12, seed=i)
    configs = {}
    for db, test in (("mitdb", "100"), ("own", "own_a")):
        configs[db] = tmp_path / f"{db}.json"
        configs[db].write_text(json.dumps({"data": {"test_records": [test], "validation_records": []}}))
    default = tmp_path / "prepared"
    monkeypatch.setitem(paths.ENV, "prepared", ("ECG_PREPARED_DIR", default))
    monkeypatch.delenv("ECG_PREPARED_DIR", raising=False)

    def flags(db: str) -> list[str]:
        return ["--data-dir", str(tmp_path / db), "--no-download", "--config", str(configs[db])]

    pm.main(flags("mitdb"))
    kept = {f: (default / f).read_bytes() for f in ("train.pt", "test.pt", "meta.json")}
    r = run_script(pm.main, "prepare_mitbih.py", flags("own"))
    assert r.returncode == 2 and r.stderr.startswith(f"error: {default} holds the prepared data of another "
                                                     f"database ("), r.stderr
    assert "records 100, 101, 102), none of" in r.stderr and "pass --out DIR for this one" in r.stderr
    assert {f: (default / f).read_bytes() for f in kept} == kept
    pm.main([*flags("own"), "--out", str(tmp_path / "own_prepared")])
    assert pm.main([*flags("mitdb"), "--records", "100", "101"])["splits"]["test"] == ["100"]
    assert list(pm.main([*flags("own"), "--out", str(default)])["records"]) == ["own_a", "own_b"]    # --out: replaced


def test_another_preparation_is_named_by_its_first_four_records_and_an_empty_one_is_none(tmp_path: Path) -> None:
    """check_other_database names four of the records held and '...' for more; a meta.json of no records (nothing
    prepared from any database) refuses nothing."""
    def held(records: list[str]) -> None:
        (tmp_path / "meta.json").write_text(json.dumps({"records": records, "data_dir": "db"}))

    held([])
    pm.check_other_database(tmp_path, ["a"], tmp_path)
    for records, shown in ((["r1", "r2", "r3", "r4"], "r1, r2, r3, r4)"), (["r1", "r2", "r3", "r4", "r5"],
                                                                          "r1, r2, r3, r4, ...)")):
        held(records)
        with pytest.raises(UserError, match=re.escape(f"another database (db: records {shown}, none of")):
            pm.check_other_database(tmp_path, ["a"], tmp_path)


def test_another_database_with_records_of_the_same_names_is_not_prepared_over_it(tmp_path: Path) -> None:
    """Another database with a record '100' was prepared over MIT-BIH's with only a note: the held meta.json's
    rate, leads and length of the records of the same names are held to the new headers, and none alike is another
    database. Some alike (again, or a copy elsewhere), or the same folder, is the same database, prepared over."""
    held = tmp_path / "prepared"
    for name in ("100", "101"):
        write_record(tmp_path / "mitdb", name, seconds=12)
        write_record(tmp_path / "rate", name, seconds=12, fs=250.0)
        write_record(tmp_path / "leads", name, seconds=12, leads=("II", "V2"))
        write_record(tmp_path / "long", name, seconds=30)
    pm.prepare(make_cfg(test_records=["100"], validation_records=[]), tmp_path / "mitdb", held, download=False)
    for db, why in (("rate", "100 at 250 Hz, not 360 Hz, ..."), ("leads", "100 without lead MLII, V1, ..."),
                    ("long", "100 of 30.0 s, not 12.0 s, ...")):
        with pytest.raises(UserError, match=re.escape(
                f"{held} holds the prepared data of another database ({tmp_path / 'mitdb'}: records 100, 101), not "
                f"{tmp_path / db}'s (its records of the same names are other recordings: {why}): pass --out DIR")):
            pm.check_other_database(held, ["100", "101"], tmp_path / db)
    with pytest.raises(UserError, match=re.escape("other recordings: 101 at 250 Hz, not 360 Hz): pass")):
        pm.prepare(make_cfg(), tmp_path / "rate", held, ["101"], download=False, keep_other=True)
    shutil.copytree(tmp_path / "mitdb", tmp_path / "copy")
    shutil.copy(tmp_path / "rate" / "100.hea", tmp_path / "copy")      # 100 is another recording, 101 the same
    for db in ("mitdb", "copy"):
        pm.check_other_database(held, ["100", "101"], tmp_path / db)
    meta = json.loads((held / "meta.json").read_text())
    (held / "meta.json").write_text(json.dumps({**meta, "data_dir": str(tmp_path / "rate")}))
    pm.check_other_database(held, ["100", "101"], tmp_path / "rate")                # its own folder, whatever it says
    (held / "meta.json").write_text(json.dumps({**meta, "records": {n: {"beats": 1} for n in meta["records"]}}))
    pm.check_other_database(held, ["100", "101"], tmp_path / "rate")                # without the fields: by names
    (held / "meta.json").write_text(json.dumps({**meta, "data_dir": "mitdb\0"}))     # NUL: no folder, no ValueError
    pm.check_other_database(held, ["100", "101"], tmp_path / "mitdb")


def test_a_records_length_is_told_apart_beyond_a_second_or_a_hundredth_and_a_header_saying_too_little_is_alike(
        tmp_path: Path) -> None:
    """record_difference holds lengths to a second (a short record's resampling rounds) or 1 % (a long one's), and
    takes a header without a length, or one wfdb cannot read, for the same recording: it cannot tell."""
    def header(samples: str) -> None:
        (tmp_path / "r.hea").write_text(f"r 2 360 {samples}\nr.dat 212 200 11 1024 0 0 0 MLII\n"
                                        f"r.dat 212 200 11 1024 0 0 0 V1\n")

    def held(seconds: float) -> dict:
        return {"fs_in": 360.0, "leads": ["MLII", "V1"], "seconds": seconds}

    for seconds, here, why in ((12.0, 12.5, ""), (12.0, 13.5, "r of 13.5 s, not 12.0 s"), (1800.0, 1817.0, ""),
                               (1800.0, 1830.0, "r of 1830.0 s, not 1800.0 s")):
        header(str(round(here * 360)))
        assert pm.record_difference("r", held(seconds), tmp_path) == why
    header("")
    assert pm.record_difference("r", held(12.0), tmp_path) == ""
    (tmp_path / "r.hea").write_text("r two\n")        # wfdb: invalid syntax in record line
    assert pm.record_difference("r", held(12.0), tmp_path) == ""


def test_a_held_out_split_emptied_by_records_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--records leaving out MIT-BIH's validation records warned 'no validation records among the 2 in DIR (the
    defaults are MIT-BIH's); list this database's held-out patients in config': the config was fine."""
    for i, name in enumerate(("100", "101", "109")):        # test, train and validation by MIT-BIH's default split
        write_record(tmp_path / "db", name, seconds=12, seed=i)
    pm.prepare(config_from_dict({}), tmp_path / "db", tmp_path / "out", ["100", "101"], download=False)
    err = capsys.readouterr().err
    assert (f"warning: the validation split is empty: its records in {tmp_path / 'db'} (109) are not prepared (left "
            "out by --records or as bad)") in err and "config" not in err, err


# ---------------------------------------------------------------- the bits the records hold

def test_a_leads_bits_are_its_headers_adc_resolution_else_its_formats(tmp_path: Path) -> None:
    """Compression ratios counted 11-bit samples (MIT-BIH's ADC) for every database: a lead's bits are its header's
    ADC resolution, else what its signal format holds (wfdb's table), else unknown (None)."""
    x, _ = synthetic_ecg(12.0, 360.0)
    for fmt, bits in (("16", 16), ("212", 12), ("24", 24), ("80", 8)):
        write_signal(tmp_path, f"f{fmt}", x, fmt=fmt, gain=50.0)     # format 80 holds -128..127
        assert pm.lead_storage(tmp_path / f"f{fmt}", ["MLII", "V1"])["bits"] == [bits, bits]
    lines = (tmp_path / "f212.hea").read_text().splitlines()
    for adc_res, bits in (("11", [11, 11]), ("0", [12, 12])):       # 0: none given, the format's
        signals = [" ".join([*s[:3], adc_res, *s[4:]]) for s in (ln.split() for ln in lines[1:])]
        (tmp_path / "own.hea").write_text("\n".join([lines[0].replace("f212", "own"), *signals]) + "\n")
        assert pm.lead_storage(tmp_path / "own", ["V1", "MLII"])["bits"] == bits
    assert pm.lead_storage(tmp_path / "f16", ["MLII", "V5"])["bits"] is None                 # no such lead
    (tmp_path / "twice.hea").write_text("twice 3 360 4320\nf.dat 16 200/mV 0 0 0 0 0 ECG\nf.dat 16 200/mV 12 0 0 0 0 "
                                        "ECG\ng.dat 80 200/mV 0 0 0 0 0\n")       # two named alike, one unnamed
    assert pm.lead_storage(tmp_path / "twice", ["ECG", "ECG"])["bits"] == [16, 12]
    assert pm.lead_storage(tmp_path / "twice", [None, "ECG"])["bits"] == [8, 16]
    assert pm.lead_storage(tmp_path / "twice", ["ECG", "ECG", "ECG"])["bits"] is None
    (tmp_path / "frames.hea").write_text("frames 2 360 4320\nf.dat 212x4 200/mV 11 0 0 0 0 MLII\n"
                                         "f.dat 212 200/mV 11 0 0 0 0 V1\n")       # 4 samples a frame: 4 x 11 bits
    assert pm.lead_storage(tmp_path / "frames", ["MLII", "V1"])["bits"] == [44, 11]
    assert pm.lead_storage(tmp_path / "frames", ["V1", "MLII"])["samples_per_frame"] == [1, 4]
    assert pm.lead_storage(tmp_path / "frames", ["V1", "V5"])["samples_per_frame"] is None
    write_variable_layout(tmp_path, [["mV", "mmHg", "NU", "mV"]])                 # its layout's ADC resolution
    assert pm.lead_storage(tmp_path / "v", ["II", "V"])["bits"] == [16, 16]
    (tmp_path / "v_layout.hea").write_text("v_layout 4 125 0\n~ 0 200/mV 0 0 0 0 0 II\n~ 0 100/mmHg 0 0 0 0 0 AOBP\n"
                                           "~ 0 100/NU 0 0 0 0 0 PLETH\n~ 0 200/mV 0 0 0 0 0 V\n")
    assert pm.lead_storage(tmp_path / "v", ["II", "V"])["bits"] is None                      # format 0 holds no samples


def test_the_mitbih_headers_give_11_bits(mitdb: Path) -> None:
    """MIT-BIH's compression ratio stays as published: its headers give 11-bit samples (format 212, 12 bits)."""
    assert {tuple(pm.lead_storage(mitdb / r, pm.header_leads(mitdb / r, pm.wfdb_header(mitdb / r))[0][:2])["bits"])
            for r in MITBIH_48} == {(11, 11)}


def test_meta_json_keeps_the_bits_of_lead_1_then_lead_2_whatever_order_the_header_gives(tmp_path: Path) -> None:
    """meta.json's bits follow its leads (MLII, V1), not the header's order of the channels (V1 stored first)."""
    for name in ("100", "101"):
        hea = write_record(tmp_path / "db", name, seconds=12, leads=("V1", "MLII")).with_suffix(".hea")
        lines = [ln.split() for ln in hea.read_text().splitlines()]
        lines[1][3], lines[2][3] = "10", "11"         # ADC resolutions: V1 10 bits, MLII 11
        hea.write_text("".join(" ".join(ln) + "\n" for ln in lines))
    meta = pm.prepare(make_cfg(test_records=["100"], validation_records=[]), tmp_path / "db", tmp_path / "out",
                      download=False)
    assert {n: (r["leads"], r["bits"]) for n, r in meta["records"].items()} == {
        n: (["MLII", "V1"], [11, 10]) for n in ("100", "101")}


def test_meta_json_keeps_each_leads_bits_and_their_mean_weighs_each_records_rate(prepared, tmp_path: Path) -> None:
    """meta.json's records keep each lead's bits and samples a frame (the synthetic records: format 212, 12 bits,
    one a frame); source_samples weighs each record's bits by its rate, so its fs x bits is the records' mean bit
    rate, and its bits are None for a meta.json prepared before the bits were kept."""
    assert {(r["bits"], r["samples_per_frame"]) == ([12, 12], [1, 1]) for r in prepared.meta["records"].values()
            } == {True}
    held = pm.source_samples(["100", "101"], prepared.out)
    assert (held.bits, held.bits_range) == (12.0, (12.0, 12.0))
    records = {"a": {"fs_in": 360.0, "bits": [11, 11]}, "b": {"fs_in": 120.0, "bits": [16, 16]},
               "c": {"fs_in": 360.0, "bits": [12, 16]}, "old": {"fs_in": 360.0},
               "unsaid": {"fs_in": 360.0, "bits": None}}
    (tmp_path / "meta.json").write_text(json.dumps({"records": records}))
    assert pm.source_samples(["a", "b"], tmp_path).bits == pytest.approx((11 * 360 + 16 * 120) / 480)
    assert pm.source_samples(["c"], tmp_path).bits == 14.0
    assert pm.source_samples(["a", "old"], tmp_path) == pm.SourceSamples.uniform(360.0)     # rates, but no bits
    assert pm.source_samples(["unsaid"], tmp_path) == pm.SourceSamples.uniform(360.0)
    assert pm.source_samples([], tmp_path) is None and pm.source_samples(["a"], tmp_path / "none") is None
    assert pm.source_samples(["a", "gone"], tmp_path) is None


def test_source_samples_tell_apart_records_of_several_rates_and_leads_of_several_samples_a_frame(
        tmp_path: Path) -> None:
    """Compression ratios said '11-bit samples at 476.667 Hz' of records at 360 and 500 Hz, and '44-bit samples' of a
    '212x4' lead (4 samples of 11 bits a frame): source_samples gives a lead's bits a sample and samples a second,
    their means (fs x bits the mean bit rate a lead, as before) and their ranges. A meta.json without samples a
    frame (prepared before it kept them) counts one a frame."""
    records = {"a": {"fs_in": 360.0, "bits": [11, 11], "samples_per_frame": [1, 1]},
               "b": {"fs_in": 500.0, "bits": [16, 16], "samples_per_frame": [1, 1]},
               "f": {"fs_in": 250.0, "bits": [44, 11], "samples_per_frame": [4, 1]},
               "old": {"fs_in": 250.0, "bits": [44, 11]}}
    (tmp_path / "meta.json").write_text(json.dumps({"records": records}))
    mixed = pm.source_samples(["a", "a", "b"], tmp_path)
    assert (mixed.fs, mixed.fs_range, mixed.bits_range) == (pytest.approx(1220 / 3), (360.0, 500.0), (11.0, 16.0))
    assert mixed.fs * mixed.bits == pytest.approx((2 * 11 * 360 + 16 * 500) / 3)
    frames = pm.source_samples(["f"], tmp_path)
    assert (frames.fs, frames.fs_range, frames.bits, frames.bits_range) == (625.0, (250.0, 1000.0), 11.0, (11.0, 11.0))
    assert frames.fs * frames.bits == (44 + 11) * 250 / 2
    old = pm.source_samples(["old"], tmp_path)
    assert (old.fs, old.fs_range, old.bits, old.bits_range) == (250.0, (250.0, 250.0), 27.5, (11.0, 44.0))


def test_source_samples_weigh_a_leads_bits_by_its_samples_a_second_and_refuse_rates_of_no_samples(
        tmp_path: Path) -> None:
    """A '212x4' 11-bit lead beside a 16-bit one at 250 Hz: 11 bits at 1000 Hz and 16 at 250, a mean of 12 bits a
    sample, so fs x bits is their mean bit rate. A meta.json edited by hand to a rate of 0 (or 0 samples a frame) made
    vqvae_eval's bit rate divide 0 by 0: it is no rate, as when none is kept; bits of 0, or a list of bits of another
    length than the samples a frame, are no bits."""
    records = {"f": {"fs_in": 250.0, "bits": [44, 16], "samples_per_frame": [4, 1]},
               "zero": {"fs_in": 0.0, "bits": [11, 11], "samples_per_frame": [1, 1]},
               "none_a_frame": {"fs_in": 360.0, "bits": [11, 11], "samples_per_frame": [0, 1]},
               "negative": {"fs_in": -360.0, "bits": [11, 11], "samples_per_frame": [-1, -1]},
               "no_bits": {"fs_in": 360.0, "bits": [0, 11], "samples_per_frame": [1, 1]},
               "short": {"fs_in": 360.0, "bits": [11], "samples_per_frame": [1, 1]}}
    (tmp_path / "meta.json").write_text(json.dumps({"records": records}))
    held = pm.source_samples(["f"], tmp_path)
    assert (held.fs, held.bits, held.bits_range) == (625.0, 12.0, (11.0, 16.0))
    assert held.fs * held.bits == (44 + 16) * 250 / 2
    assert pm.source_samples(["zero"], tmp_path) is None and pm.source_samples(["f", "none_a_frame"], tmp_path) is None
    assert pm.source_samples(["negative"], tmp_path) is None       # a rate of -360 Hz, whatever its samples a frame
    assert pm.source_samples(["no_bits"], tmp_path) == pm.source_samples(["short"], tmp_path) == \
        pm.SourceSamples.uniform(360.0)
    assert pm.SourceSamples.uniform(360.0, 11.0).bits_range == (11.0, 11.0)
