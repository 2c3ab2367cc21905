"""bench/rhythm_bound.py: the timing rules and the cost of a calibrated timing spread, on beat
trains whose future is known."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import paths
from conftest import edit_tree_after, synthetic_ecg, write_record
from hyper_params import DataConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import rhythm_bound as R  # noqa: E402

FS, C, T = 128, 384, 768


def beat_windows(rr: list[float], n: int = 4) -> SimpleNamespace:
    """Windows in the shape evaluate.Windows has, each with beats every rr[k % len(rr)] samples."""
    pos, ptr = [], [0]
    for i in range(n):
        beats = 5.0 + i + np.cumsum([rr[k % len(rr)] for k in range(40)])
        beats = beats[beats < T]
        pos.extend(beats)
        ptr.append(len(pos))
    return SimpleNamespace(record=np.zeros(n, int), annotated=[True], beat_pos=np.array(pos),
                           beat_ptr=np.array(ptr), signals=np.zeros((n, T, 2)))


def test_next_beats_continue_the_rhythm_up_to_the_end():
    pred = R.next_beats(np.array([10.0, 110, 210]), R.RULES["median"], 500)
    np.testing.assert_allclose(pred, [310, 410])


def test_a_sampled_path_of_intervals_shorter_than_the_contexts_reaches_the_end():
    """The calibrated sampler scales the context's median by training ratios down to about 0.3: a path of short
    intervals still places its beats up to the window's end (asked for intervals as long as the context's
    shortest, it stopped at 400 after 4 of them)."""
    rule = R.calibrated_rule([np.full(3, 0.5)])
    np.testing.assert_allclose(R.next_beats(np.array([0.0, 100, 200]), rule, 500), [250, 300, 350, 400, 450])


def test_median_rule_is_exact_on_a_regular_rhythm():
    assert R.oracle_f1(beat_windows([100]), C, FS, R.RULES["median"]) == 1.0



def test_alternating_rule_follows_bigeminy_and_only_bigeminy():
    """Short-long pairs are continued as pairs, where the median would miss every other beat; a steady or
    irregular rhythm gets the median rule."""
    assert R.oracle_f1(beat_windows([40, 80]), C, FS, R.alternating) == 1.0
    assert R.oracle_f1(beat_windows([40, 80]), C, FS, R.RULES["median"]) < 0.8
    for rr in ([100.0, 100, 100], [90.0, 100, 110, 120]):
        np.testing.assert_allclose(R.alternating(np.array(rr), 3), np.full(3, np.median(rr)))

def test_calibrated_rule_without_error_is_the_point_rule():
    w = beat_windows([100])
    ratios = R.horizon_ratios(w, C)
    np.testing.assert_allclose(np.concatenate(ratios), 1.0)
    assert R.oracle_f1(w, C, FS, R.calibrated_rule(ratios), paths=10) == 1.0


def test_calibrated_spread_costs_f1():
    """Ratios drawn from windows of another rhythm: the paths scatter and the hit rate falls."""
    ratios = [np.full(5, 0.7), np.full(5, 1.0), np.full(5, 1.3)]
    w = beat_windows([100])
    f1 = R.oracle_f1(w, C, FS, R.calibrated_rule(ratios, seed=1), paths=30)
    assert 0.2 < f1 < 0.8


def record_window(beats: np.ndarray, start: int) -> tuple[SimpleNamespace, dict[int, np.ndarray]]:
    """One window of a record whose reference beats are `beats`, starting at sample `start`."""
    b = beats[(beats >= start) & (beats < start + T)] - start
    w = SimpleNamespace(record=np.zeros(1, int), start=np.array([start]), annotated=[True], beat_pos=b,
                        beat_ptr=np.array([0, len(b)]), signals=np.zeros((1, T, 2)))
    return w, {0: beats.astype(float)}


def test_a_history_as_long_as_the_context_is_the_windows_own_beats():
    rng = np.random.default_rng(0)
    w, beats = record_window(np.cumsum(rng.uniform(80, 140, 60)).round(), 2000)
    ctx, ref = R.history_beats(w, beats, C, C / FS, FS)(0)
    own = R.annotated_beats(w, 0, C)
    np.testing.assert_allclose(ctx, own[0])
    np.testing.assert_allclose(ref, own[1])


def test_a_longer_history_sees_the_rhythm_a_slow_spell_hides():
    """RR 100 for a minute but mostly 120 within the 3 s context, 100 again from its last beat on: the
    context's median misses every beat, the minute's median hits them all."""
    start, now, t = 6000, 6000 + C, [0]
    while t[-1] < now + T:
        t.append(t[-1] + (120 if now - C - 240 <= t[-1] < now - 110 else 100))
    w, beats = record_window(np.array(t), start)
    rr = np.diff(beats[0][(beats[0] >= now - C) & (beats[0] < now)])
    assert np.median(rr) == 120 and rr[-1] == 100
    short = R.oracle_f1(w, C, FS, R.RULES["median"], beats_of=R.history_beats(w, beats, C, 3, FS))
    long = R.oracle_f1(w, C, FS, R.RULES["median"], beats_of=R.history_beats(w, beats, C, 60, FS))
    assert long == 1.0 and short < 0.5
    assert R.first_beat_error(w, C, R.history_beats(w, beats, C, 60, FS), FS) == {"median_ms": 0.0, "within_20ms": 1.0}


def test_a_beat_on_the_windows_first_sample_is_in_a_context_long_history():
    """The history's oldest edge is inclusive, as the window's own context is: a beat at its sample 0 counts."""
    w, beats = record_window(np.arange(0.0, 10000, 100), 2000)
    ctx, _ = R.history_beats(w, beats, C, C / FS, FS)(0)
    assert ctx[0] == 0 and len(ctx) == len(R.annotated_beats(w, 0, C)[0])


def test_horizon_ratios_skip_unannotated_windows_and_single_beat_contexts():
    """A ratio needs the context's median RR (two beats) and reference beats (an annotated record)."""
    w = SimpleNamespace(record=np.array([0, 0, 1]), annotated=[True, False])
    beats = {0: (np.array([100.0, 200, 300]), np.array([400.0])), 1: (np.array([300.0]), np.array([400.0])),
             2: (np.array([100.0, 200, 300]), np.array([450.0]))}
    ratios = R.horizon_ratios(w, C, beats.get)
    assert len(ratios) == 1 and np.array_equal(ratios[0], [1.0])


def test_first_beat_error_in_ms_of_annotated_windows_with_a_prediction():
    """Errors of 20 (on the 20 ms edge), 30 and 40 ms; a one-beat context predicts nothing and an unannotated
    record is not scored; a beat predicted on the horizon's first sample is the first prediction."""
    fs, c = 100, 384
    w = SimpleNamespace(record=np.array([0, 0, 0, 0, 1]), annotated=[True, False], signals=np.zeros((5, 768, 2)))
    ctx = np.array([84.0, 184, 284])                   # the median rule's next beat is at c, 384
    beats = {0: (ctx, np.array([386.0])), 1: (ctx, np.array([387.0])), 2: (ctx, np.array([388.0])),
             3: (np.array([300.0]), np.array([400.0])), 4: (ctx, np.array([434.0]))}
    assert R.first_beat_error(w, c, beats.get, fs) == {"median_ms": 30.0, "within_20ms": 0.333}


def test_record_beats_reads_every_annotated_record_by_its_index(tmp_path):
    """history_beats looks beats up by the window's record index; unannotated records are not read."""
    for seed, (name, annotate) in enumerate([("a", True), ("b", False), ("c", True)]):
        write_record(tmp_path, name, seconds=20, seed=seed, annotate=annotate)
    w = SimpleNamespace(records=["a", "b", "c"], annotated=[True, False, True])
    beats = R.record_beats(w, tmp_path, DataConfig())
    assert set(beats) == {0, 2}
    np.testing.assert_array_equal(beats[2], np.round(synthetic_ecg(20, 360, 2)[1] * 128 / 360))


def test_record_beats_without_records_names_the_flags(tmp_path):
    """`history` reads WFDB records: a folder without any says how to give one or skip the part."""
    with pytest.raises(paths.UserError, match="--data-dir.*--history-seconds"):
        R.record_beats(SimpleNamespace(records=["100"], annotated=[True]), tmp_path, None)


def test_history_bound_scores_each_history_with_the_training_rhythm(tmp_path, monkeypatch):
    """The slow spell again, and a perfectly regular training record: its sampler is the median rule, the 60 s
    history hits every beat, and no history asked reads no record (tmp_path holds none)."""
    assert R.history_bound(None, None, C, FS, tmp_path, None, []) == {}
    start, now, t = 6000, 6000 + C, [0]
    while t[-1] < now + T:
        t.append(t[-1] + (120 if now - C - 240 <= t[-1] < now - 110 else 100))
    w, beats = record_window(np.array(t), start)
    train, train_beats = record_window(np.arange(0.0, 10000, 100), start)
    monkeypatch.setattr(R, "record_beats", lambda windows, data_dir, data: train_beats if windows is train else beats)
    out = R.history_bound(w, train, C, FS, tmp_path, None, [3.0, 60.0])   # floats, as from --history-seconds
    assert list(out) == ["3s", "60s"] and out["60s"]["median"] == 1.0 and out["3s"]["median"] < 0.5
    assert all(out[k]["calibrated"] == out[k]["median"] for k in out)
    assert out["60s"]["first_beat"] == {"median_ms": 0.0, "within_20ms": 1.0}


def test_the_line_names_the_prepared_data_and_the_records_history_read(tmp_path, synthetic_db, monkeypatch, capsys):
    """Every other result names the data it came from (run.json's data_hash): the rhythm_bound line named none, neither
    the prepared windows its rules are scored and calibrated on nor the WFDB records `history` reads. Nor did it name
    --max-windows-per-record, which picks the windows scored (its `windows` is their count, not the cap)."""
    import json

    import hyper_params
    from prepare_mitbih import hash_inputs
    from tiny import tiny_setup

    setup = tiny_setup(tmp_path, synthetic_db)
    cfg = hyper_params.load_config(setup["config"])
    monkeypatch.setattr(hyper_params, "load_config", lambda *a, **k: cfg)
    monkeypatch.setenv("ECG_PREPARED_DIR", setup["prepared"])
    meta = json.loads((Path(setup["prepared"]) / "meta.json").read_text())
    edit_tree_after(monkeypatch, R, "next_beat_error")     # its line names the commit it started at, not ended at
    line = R.main(["--history-seconds", "3", "--data-dir", str(synthetic_db)])
    assert line["data_hash"] == f"{meta['data_hash']}/{meta['input_hash']}" and line["max_windows_per_record"] == 40
    assert line["git_commit"] == "at-start"
    # the test split's record and the training split's, which calibrate the samplers; not the validation one's (101)
    assert line["history_input_hash"] == hash_inputs(synthetic_db, ["100", "102", "103", "104", "105"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == line
    line = R.main(["--history-seconds", "--data-dir", str(synthetic_db), "--max-windows-per-record", "2"])
    assert line["data_hash"] == f"{meta['data_hash']}/{meta['input_hash']}" and "history_input_hash" not in line
    assert line["max_windows_per_record"] == 2
    json.dumps(line, allow_nan=False)           # strict JSON: a guess that no window scores is null, not NaN
