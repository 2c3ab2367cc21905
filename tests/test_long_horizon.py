"""bench/long_horizon.py: the per-window table of a long forecast of one record, and its seam figure."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from conftest import write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import long_horizon as L  # noqa: E402


def test_a_templates_paths_keep_the_records_size_and_rate_in_every_window(tmp_path, capsys):
    """The drafts the models start from, on a synthetic sinus record: every window beats at the truth's rate and
    the context's size, the same seed draws the same paths, and the table names each window."""
    record = write_record(tmp_path, "100")
    line = L.main(["--record", str(record), "--start", "20", "--horizon", "12", "--samples", "4", "--every", "6",
                   "--checkpoint", "template_ensemble"])
    assert [(w["from_s"], w["to_s"]) for w in line["windows"]] == [(0, 6), (6, 12)]
    for w in line["windows"]:
        assert all(0.8 < v < 1.25 for v in w["ptp"] + w["truth_ptp"]), w
        assert abs(w["hr_bpm"] - w["truth_hr_bpm"]) < 0.1 * w["truth_hr_bpm"], w
    assert line["same_seed_same_paths"] and line["seam_step_mv"] is not None
    assert "   6-12 " in capsys.readouterr().err


def test_a_step_at_every_block_edge_is_the_seam_figure():
    """A path that jumps by 1 mV from each 3 s block to the next and is flat within them: the edges' mean step is
    that jump, elsewhere none; a horizon of one block has no edge."""
    path = np.repeat(np.arange(4.0), 384)[None, :, None].repeat(2, 2)
    assert L.seam_steps(path, 384) == (1.0, 0.0)
    assert L.seam_steps(path[:, :384], 384) == (None, 0.0)


def test_the_size_of_a_beat_is_each_seconds_peak_to_peak_not_the_windows():
    """A drifting baseline spans more than a beat over a whole window: per-second peak-to-peak leaves the drift."""
    x = np.repeat(np.arange(2 * 128.0)[None, :, None] / 128, 2, axis=2)
    np.testing.assert_allclose(L.second_ptp(x, 128), [127 / 128] * 2)


def pulses(seconds: float, rate: float, fs: int = 128) -> np.ndarray:
    """Narrow 1 mV pulses, both leads, at `rate` beats a minute, the first half a beat in."""
    t = np.arange(int(seconds * fs)) / fs
    beats = np.arange(30 / rate, seconds, 60 / rate)
    x = np.exp(-0.5 * ((t[:, None] - beats) / 0.01) ** 2).sum(1)
    return np.repeat(x[:, None], 2, axis=1)


def test_each_windows_rate_is_the_paths_in_that_window_and_the_truths_is_apart():
    """The paths' heart rate of a window is theirs there alone (the context before it and the truth left out), their
    beats found at the context's level (an artifact ten times its size hides none); a window the record does not
    cover has no truth; the last window ends with the horizon."""
    path = np.concatenate([pulses(6, 60), pulses(4, 120)])[None]
    res = {"fs": 128, "context": pulses(3, 90), "samples": path, "truth": pulses(6, 80)}
    rows = L.window_rows(res, 6)
    assert [(r["from_s"], r["to_s"]) for r in rows] == [(0, 6), (6, 10)]
    assert [round(r["hr_bpm"]) for r in rows] == [60, 120] and round(rows[0]["truth_hr_bpm"]) == 80
    assert rows[1]["truth_ptp"] is None is rows[1]["truth_hr_bpm"]
    spiked = path.copy()
    spiked[0, 2 * 128:3 * 128] *= 10        # an artifact: the beats around it are found at the context's level
    assert [round(r["hr_bpm"]) for r in L.window_rows({**res, "samples": spiked}, 6)] == [60, 120]


def test_paths_that_change_with_the_same_seed_are_said_to(tmp_path, monkeypatch, capsys):
    """The same-seed figure is the paths of a second predict compared with the first's; the seam is looked for at
    the trained horizon's block edges."""
    import forecast

    loaded = forecast.load_forecaster

    def drifting(*args):
        name, fc = loaded(*args)
        predict, calls = fc.predict, []
        fc.predict = lambda *a, **k: calls.append(1) or predict(*a, **k) + len(calls)
        return name, fc
    monkeypatch.setattr(forecast, "load_forecaster", drifting)
    record = write_record(tmp_path, "100")
    line = L.main(["--record", str(record), "--start", "20", "--horizon", "6", "--samples", "2", "--every", "6",
                   "--checkpoint", "template_ensemble"])
    assert not line["same_seed_same_paths"] and "at the 3 s block edges" in capsys.readouterr().err
