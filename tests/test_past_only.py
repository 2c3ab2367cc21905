"""bench/past_only.py: contexts filtered from the past alone, and the evaluation of both kinds of context."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import synthetic_ecg, write_signal
from hyper_params import load_config
from prepare_mitbih import read_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import past_only as P  # noqa: E402

FS_IN = 360.0


def two_records(folder: Path, end_s: float) -> tuple[Path, Path]:
    """A record and its twin whose samples after `end_s` (raw) are other ones: a future the context must not see."""
    x, _ = synthetic_ecg(40, FS_IN, seed=3)
    other = x.copy()
    cut = int(end_s * FS_IN)
    other[cut:] = synthetic_ecg(40, FS_IN, seed=4)[0][cut:] + 0.5
    return write_signal(folder, "500", x), write_signal(folder, "501", other)


def test_a_past_only_context_sees_nothing_after_its_last_sample_and_lies_on_the_prepared_grid(tmp_path):
    """The prepared contexts change with the samples after them (the zero-phase filter); the past-only ones do not,
    and their first half is the prepared one's (the read starts on the target grid: no sub-sample shift)."""
    cfg = load_config()
    fs, c = cfg.data.samples_per_second, cfg.data.window_samples
    end = 20 * fs                                       # the context ends at 20 s
    a, b = two_records(tmp_path, (end - 1) / fs + 1 / FS_IN)    # raw samples after the context's last one
    prepared = [read_record(r, cfg.data, annotator=None).signal[end - c:end] for r in (a, b)]
    past = [P.past_context(r, ["MLII", "V1"], FS_IN, cfg, end, c, 15.0) for r in (a, b)]
    assert np.abs(prepared[0] - prepared[1]).max() > 0.01
    np.testing.assert_array_equal(past[0], past[1])
    np.testing.assert_allclose(past[0][:c // 2], prepared[0][:c // 2], atol=2e-3)
    assert np.abs(past[0][-20:] - prepared[0][-20:]).max() > 1e-3      # the filter's end differs


def test_a_past_holding_a_gap_is_left_out_and_a_margin_shorter_than_the_context_is_refused(tmp_path):
    cfg = load_config()
    fs, c = cfg.data.samples_per_second, cfg.data.window_samples
    x, _ = synthetic_ecg(40, FS_IN, seed=3)
    x[int(15 * FS_IN):int(15.5 * FS_IN)] = np.nan
    path = write_signal(tmp_path, "500", x)
    assert P.past_context(path, ["MLII", "V1"], FS_IN, cfg, 20 * fs, c, 10.0) is None
    assert P.past_context(path, ["MLII", "V1"], FS_IN, cfg, 20 * fs, c, 4.0) is not None     # the gap before its read
    with pytest.raises(P.paths.UserError, match="--margin-seconds 2 is shorter than the context"):
        P.past_context(path, ["MLII", "V1"], FS_IN, cfg, 20 * fs, c, 2.0)


def test_the_bench_scores_both_contexts_of_the_same_windows(synthetic_db: Path, tmp_path: Path, capsys):
    """One JSON line: each forecaster's figures both ways over the same windows; a forecaster that does not read the
    context's end (zero) scores the same both ways, seasonal naive does not; a model (here one's own, seasonal naive
    again) is paired with the best baseline both ways, as the targets are."""
    (tmp_path / "mine.py").write_text("from baselines import SeasonalNaive\n\n\nclass Mine(SeasonalNaive):\n"
                                      "    name = 'mine'\n\n    def __init__(self, fs):\n        print('loading')\n"
                                      "        super().__init__(fs)\n")
    line = P.main(["--wfdb-dir", str(synthetic_db), "--model", "zero", "seasonal", f"{tmp_path / 'mine.py'}:Mine",
                   "--samples", "2", "--max-windows-per-record", "2", "--margin-seconds", "10"])
    out = capsys.readouterr()
    assert json.loads(out.out) == line and "loading" in out.err     # stdout is the JSON line alone
    assert line["windows"] == 12 and line["records"] == 6
    zero, seasonal = line["forecasters"]["zero"], line["forecasters"]["seasonal"]
    assert zero["prepared"] == zero["past_only"] and zero["paired_mse"]["mean"] == 0
    assert seasonal["prepared"]["mse"] != seasonal["past_only"]["mse"]
    assert 0 < line["context_change"]["first_half_rms_mv"] < line["context_change"]["last_0.3s_rms_mv"]
    for kind in ("prepared", "past_only"):
        mine = line["targets"][kind]["mine"]
        assert set(mine) == {"mse all", "mse 0-1 s", "crps all", "f1_100 all"} and mine["f1_100 all"]["records"] == 6
        assert mine["f1_100 all"]["baseline"] == "seasonal" and mine["f1_100 all"]["difference"] == 0


def test_one_record_gives_strict_json_and_a_past_all_gaps_is_one_error(synthetic_db: Path, tmp_path: Path):
    """One record has no interval over records: round(None) stopped the bench in a traceback, and a NaN interval was
    no JSON. Every window's past in a gap stopped it in a KeyError deep in evaluate.py."""
    one = tmp_path / "one"
    one.mkdir()
    for f in synthetic_db.glob("100.*"):
        (one / f.name).write_bytes(f.read_bytes())
    (tmp_path / "mine.py").write_text("from baselines import SeasonalNaive\n\n\nclass Mine(SeasonalNaive):\n"
                                      "    name = 'mine'\n")
    line = P.main(["--wfdb-dir", str(one), "--model", "zero", "seasonal", f"{tmp_path / 'mine.py'}:Mine",
                   "--samples", "2", "--max-windows-per-record", "1", "--margin-seconds", "10"])
    json.dumps(line, allow_nan=False)
    assert line["forecasters"]["zero"]["paired_mse"]["ci"] == [None, None]
    assert line["targets"]["past_only"]["mine"]["crps all"]["ci"] == [None, None]
    x, _ = synthetic_ecg(40, FS_IN, seed=3)
    x[: int(39 * FS_IN)] = np.nan
    write_signal(tmp_path / "gaps", "500", x)
    cfg = load_config()
    w = SimpleNamespace(signals=np.zeros((1, 768, 2), np.float32), record=np.array([0]), start=np.array([0]),
                        records=["500"], leads=[["MLII", "V1"]], fs_in=[FS_IN])
    with pytest.raises(P.paths.UserError, match="no window left: the 10 s before every context's end hold a gap"):
        P.past_only_windows(w, tmp_path / "gaps", cfg, cfg.data.window_samples, 10.0)


def test_a_data_dir_of_other_records_than_the_prepared_ones_is_refused(synthetic_db: Path, tmp_path: Path,
                                                                      monkeypatch):
    """A folder holding other files under the prepared records' names gave contexts of other signals without a
    word: the records read must hash to meta.json's input hash."""
    from tiny import tiny_setup

    setup = tiny_setup(tmp_path, synthetic_db)
    monkeypatch.setenv("ECG_PREPARED_DIR", setup["prepared"])
    P.check_same_records(synthetic_db)
    other = tmp_path / "other"
    other.mkdir()
    for f in synthetic_db.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    write_signal(other, "100", synthetic_ecg(60, FS_IN, seed=9)[0])
    with pytest.raises(P.paths.UserError, match=f"the records in {other} are not the files the prepared tensors"):
        P.check_same_records(other)
