"""bench/rhythm_bound.py: the timing rules and the cost of a calibrated timing spread, on beat
trains whose future is known."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

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


def test_median_rule_is_exact_on_a_regular_rhythm():
    assert R.oracle_f1(beat_windows([100]), C, FS, R.RULES["median"]) == 1.0


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
