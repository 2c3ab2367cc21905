"""Every metric on hand-made signals whose value is known."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import metrics as M
from conftest import spike_train, synthetic_ecg

FS = 128


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _crps(samples: np.ndarray, y: np.ndarray, axis: int = 0) -> np.ndarray:
    """CRPS of samples (sample dimension `axis`) at y, as the evaluation's waveform_sums computes it."""
    return M.crps_sorted(M.sorted_samples(samples, axis), np.asarray(y))


def _cover(samples: np.ndarray, y: np.ndarray, level: int) -> tuple[float, float]:
    """The evaluation's cover (%) and mean width of the central `level` % interval (50 or 80) of samples [S, N]
    around y [N] (N even: read as two leads), through waveform_sums and record_metrics."""
    s, n = samples.shape
    sums, _ = M.waveform_sums(y.reshape(1, n // 2, 2), samples.reshape(1, s, n // 2, 2), np.array([0]))
    m = M.record_metrics(sums)
    return float(m[f"cov{level}"][0, -1]), float(m[f"width{level}"][0, -1])


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_prd_of_scaled_copy(scale):
    truth = np.sin(np.linspace(0, 20 * np.pi, 1000))        # zero mean: PRD and PRDN agree
    assert M.prd(scale * truth, truth) == pytest.approx(100 * abs(1 - scale), abs=1e-9)
    assert M.prdn(scale * truth, truth) == pytest.approx(100 * abs(1 - scale), abs=1e-6)


def test_prdn_ignores_the_truth_offset_that_flatters_prd():
    wave = np.sin(np.linspace(0, 20 * np.pi, 1000))
    truth = wave + 3.0
    pred = 0.5 * wave + 3.0
    assert M.prdn(pred, truth) == pytest.approx(50.0, abs=1e-6)
    assert M.prd(pred, truth) < 20                        # the offset hides the error from PRD


def test_crps_of_a_point_mass_equals_the_mae():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 7)), rng.normal(size=(40, 7))
    for copies in (1, 5, 64):
        samples = np.repeat(x[None], copies, axis=0)
        np.testing.assert_allclose(_crps(samples, y, axis=0), np.abs(x - y), atol=1e-12)


def test_crps_sorted_form_matches_the_quadratic_definition():
    rng = np.random.default_rng(1)
    samples, y = rng.normal(size=(30, 11)), rng.normal(size=11)
    brute = (np.abs(samples - y).mean(0)
             - 0.5 * np.abs(samples[:, None] - samples[None, :]).mean(axis=(0, 1)))
    np.testing.assert_allclose(_crps(samples, y, axis=0), brute, atol=1e-12)


def test_evaluation_scores_the_samples_own_crps_and_the_fair_one_and_the_report_says_which():
    """Two samples {0, 1} at 0: their own CRPS is 0.5 − ½·½ = 0.25 (the ½ of two equal pairs counted), the fair one
    (latent_sde.fair_crps, what the latent SDE trains on) 0.5 − ½·1 = 0; in general they differ by ½E|X−X'|/(S−1).
    report.md named neither, and the README called the training loss what forecasts are scored on. Both are scored,
    the fair one as the latent SDE's training computes it."""
    import torch

    import eval_report
    from latent_sde import fair_crps
    s, _ = M.waveform_sums(np.zeros((1, 1, 2)), np.array([0.0, 1.0]).reshape(1, 2, 1, 1).repeat(2, -1),
                           np.array([0, 1]))
    assert s["crps"][0, -1] / s["n"][0, -1] == pytest.approx(0.25) and s["crps_fair"][0, -1] == pytest.approx(0)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 10, 6, 2)), rng.normal(size=(4, 6, 2))
    own = _crps(x, y, axis=1)
    spread = 0.5 * np.abs(x[:, :, None] - x[:, None]).mean((1, 2))
    fair = float(fair_crps(torch.from_numpy(x), torch.from_numpy(y)))
    assert fair == pytest.approx(float(np.mean(own - spread / 9)), abs=1e-12)
    s, _ = M.waveform_sums(y, x, np.array([0, 3]))
    assert s["crps_fair"][:, -1].sum() / s["n"][:, -1].sum() == pytest.approx(fair, abs=1e-12)
    per_record = M.record_metrics({k: v.sum(0) for k, v in s.items()})     # the column report.md shows
    assert per_record["crps_fair"][-1] == pytest.approx(fair, abs=1e-12) and per_record["crps"][-1] > fair
    text = " ".join(eval_report.metrics_section())
    assert "all S² pairs" in text and "Fair CRPS: the same with ½E|X−X'| over the S(S−1) pairs" in text


def test_crps_of_gaussian_samples_matches_the_closed_form():
    rng = np.random.default_rng(2)
    sigma, y = 0.7, np.array([-1.0, 0.0, 0.4, 2.0])
    samples = rng.normal(0.0, sigma, size=(20000, len(y)))
    z = y / sigma
    exact = sigma * (z * (2 * _normal_cdf(z) - 1) + 2 * np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
                     - 1 / math.sqrt(math.pi))
    np.testing.assert_allclose(_crps(samples, y, axis=0), exact, atol=0.01)


def test_coverage_and_width_of_a_known_gaussian():
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((1000, 3000))          # 1000 samples for each of 3000 points (4000 took 12x longer)
    y = rng.standard_normal(3000)
    cov50, w50 = _cover(samples, y, 50)
    cov80, w80 = _cover(samples, y, 80)
    assert cov50 == pytest.approx(50, abs=3) and w50 == pytest.approx(1.349, abs=0.02)
    assert cov80 == pytest.approx(80, abs=2.5) and w80 == pytest.approx(2.563, abs=0.03)
    cov_wide, _ = _cover(3 * samples, y, 50)   # too wide: over-covers
    assert cov_wide > 85


def test_quantile_sorted_matches_numpy():
    xs = np.sort(np.random.default_rng(4).normal(size=(5, 37)), axis=-1)
    for q in (0.1, 0.25, 0.5, 0.9):
        np.testing.assert_allclose(M.quantile_sorted(xs, q), np.quantile(xs, q, axis=-1))


def test_match_beats_of_shifted_impulse_trains():
    ref = np.arange(50, 2000, 100)
    for shift, tol, expected in ((3, 5, 1.0), (6, 5, 0.0), (-6, 8, 1.0), (0, 1, 1.0)):
        ri, di = M.match_beats(ref, ref + shift, tol)
        f1 = M.f1_score(len(ri), len(ref) - len(di), len(ref) - len(ri))
        assert f1 == pytest.approx(expected)
    # a missing and an extra beat: TP = n-1, FN = 1, FP = 1
    det = np.sort(np.append(np.delete(ref, 4), 1010))
    ri, di = M.match_beats(ref, det, 5)
    assert len(ri) == len(ref) - 1
    assert M.f1_score(len(ri), len(det) - len(di), len(ref) - len(ri)) == pytest.approx(
        2 * (len(ref) - 1) / (2 * (len(ref) - 1) + 2))


def test_match_beats_is_one_to_one():
    ri, di = M.match_beats(np.array([100]), np.array([98, 101, 103]), 5)
    assert list(ri) == [0] and list(di) == [1]


def _best_matchings(ref: list, det: list, tol: float) -> tuple[int, float]:
    """Exhaustively: the most pairs within tol, and the least total distance of such a matching."""
    best = (0, 0.0)

    def go(k: int, used: frozenset, n: int, dist: float) -> None:
        nonlocal best
        if k == len(ref):
            best = min(best, (n, dist), key=lambda v: (-v[0], v[1]))
            return
        go(k + 1, used, n, dist)
        for j, d in enumerate(det):
            if j not in used and abs(d - ref[k]) <= tol:
                go(k + 1, used | {j}, n + 1, dist + abs(d - ref[k]))

    go(0, frozenset(), 0, 0.0)
    return best


def test_match_beats_finds_the_most_pairs_and_then_the_nearest_even_when_beats_crowd():
    """Mutual nearest neighbours matched references 0, 8 and detections 4, 13 at tol 5 once: a flutter scored at
    a wide tolerance lost true positives."""
    ri, di = M.match_beats(np.array([0, 8]), np.array([4, 13]), 5)
    assert list(ri) == [0, 1] and list(di) == [0, 1]
    rng = np.random.default_rng(7)
    for _ in range(400):
        ref = np.sort(rng.choice(40, rng.integers(1, 6), replace=False))
        det = np.sort(rng.choice(40, rng.integers(1, 6), replace=False))
        tol = float(rng.integers(1, 8))
        ri, di = M.match_beats(ref, det, tol)
        assert len(set(ri)) == len(ri) and len(set(di)) == len(di)
        assert (np.abs(ref[ri] - det[di]) <= tol).all()
        assert (len(ri), float(np.abs(ref[ri] - det[di]).sum())) == _best_matchings(list(ref), list(det), tol)


def test_rhythm_sums_of_shifted_spike_trains():
    """Truth has QRS-like spikes every 100 samples; forecasts copy them shifted by 5 or 10 samples."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    edges = M.segment_edges(h, FS)
    rows, pos = np.zeros(len(beats), np.int64), beats
    for shift, f1_50, f1_100 in ((0, 1.0, 1.0), (5, 1.0, 1.0), (10, 0.0, 1.0)):   # 39 ms, 78 ms
        fc = np.concatenate([truth[:c], spike_train(c + h, beats + shift)[c:]])
        s = M.rhythm_sums(fc[None, :c], fc[None, c:], rows, pos, FS, edges)
        m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
        assert m["f1_50"][-1] == pytest.approx(f1_50)
        assert m["f1_100"][-1] == pytest.approx(f1_100)
        assert m["timing_ms"][-1] == pytest.approx(shift * 1000 / FS, abs=1.0)
        assert m["hr_bpm"][-1] == pytest.approx(0.0, abs=0.5)
    flat = M.rhythm_sums(truth[None, :c], np.zeros((1, h)), rows, pos, FS, edges)
    m = M.record_metrics({k: v.sum(0) for k, v in flat.items()})
    assert m["f1_100"][-1] == 0.0
    assert m["hr_bpm"][-1] == pytest.approx(60 * FS / 100, rel=0.01)   # a flat line has 0 bpm
    none = M.rhythm_sums(truth[None, :c], truth[None, c:], rows, pos, FS, edges, annotated=np.array([False]))
    assert np.isnan(M.record_metrics({k: v.sum(0) for k, v in none.items()})["f1_100"]).all()


def test_a_beat_at_the_horizons_edge_counts_neither_hit_nor_missed():
    """A reference beat within the tolerance of the horizon's end may have its partner past the end: its miss
    never counted, and its hit did, which raised every F1. Now neither counts: a forecast that hits it and one
    that leaves it out score the same."""
    c, h = 384, 384
    beats = np.array([100, 250, 450, 600, c + h - 5])                # the last 39 ms before the horizon's end
    truth = spike_train(c + h, beats)
    edges = M.segment_edges(h, FS)
    rows, pos = np.zeros(len(beats), np.int64), beats
    scores = []
    for fc_beats in (beats, beats[:-1]):
        fc = np.concatenate([truth[:c], spike_train(c + h, fc_beats)[c:]])
        s = M.rhythm_sums(fc[None, :c], fc[None, c:], rows, pos, FS, edges)
        scores.append((s["tp100"][0, -1], s["fn100"][0, -1], s["fp100"][0, -1]))
    assert scores[0] == scores[1] == (2.0, 0.0, 0.0)


def test_detector_finds_the_beats_of_a_synthetic_ecg():
    x, beats = synthetic_ecg(60.0, FS, seed=5, hr_bpm=80)
    rows, pos = M.detect_r_peaks(x[None, :, 0], FS)
    ri, di = M.match_beats(beats, pos, 0.05 * FS)
    assert len(ri) == len(beats) and len(di) == len(pos)          # Se = +P = 100 %
    assert np.abs(pos[di] - beats[ri]).max() <= 2
    assert len(M.detect_r_peaks(np.zeros((3, 768)), FS)[0]) == 0


def test_heart_rate():
    assert M.heart_rate(np.arange(0, 384, 64), FS, 3.0) == pytest.approx(120.0)
    assert M.heart_rate(np.array([10]), FS, 3.0) == pytest.approx(20.0)
    assert M.heart_rate(np.array([], int), FS, 3.0) == 0.0


def test_waveform_sums_per_second_and_overall():
    rng = np.random.default_rng(6)
    truth = rng.normal(size=(4, 384, 2))
    edges = M.segment_edges(384, FS)
    fc = truth.copy()
    fc[:, 128:256] += 0.2                                          # error only in the second second
    s, curves = M.waveform_sums(truth, fc[:, None], edges)
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    np.testing.assert_allclose(m["mse"], [0, 0.04, 0, 0.04 / 3], atol=1e-12)
    np.testing.assert_allclose(m["crps"], m["mae"])                # deterministic: CRPS = MAE
    assert np.isnan(m["cov50"]).all()
    assert curves["se"].shape == (4, 384)
    samples = truth[:, None] + rng.normal(size=(4, 200, 384, 2))  # calibrated N(truth, 1) ensemble
    s, _ = M.waveform_sums(truth + rng.normal(size=truth.shape), samples.astype(np.float32), edges)
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    assert m["cov50"][-1] == pytest.approx(50, abs=3) and m["cov80"][-1] == pytest.approx(80, abs=3)
    assert m["crps"][-1] < m["mae"][-1]


def test_paired_difference_sees_a_small_gap_that_the_spread_between_records_hides():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.05, 0.25, 20)                              # records differ far more than the models do
    a = b - 0.004 + rng.normal(0, 0.001, 20)
    a[3] = np.nan                                                # undefined on one record: left out
    d = M.paired_difference(a, b, n_boot=2000, seed=0)
    assert d["records"] == 19 and d["below"] + d["above"] == 19 and d["below"] >= 17
    assert d["ci"][0] < d["mean"] < d["ci"][1] < 0 and d["mean"] == pytest.approx(-0.004, abs=0.001)
    _, lo, hi = M.bootstrap_ci(np.c_[np.delete(a, 3), np.delete(b, 3)], n_boot=2000, seed=0)
    assert lo[0] < hi[1] and lo[1] < hi[0]                       # each one's own intervals overlap
    same = M.paired_difference(b, b)
    assert same["mean"] == 0 and same["ci"] == [0, 0] and same["below"] == same["above"] == 0


def test_bootstrap_ci():
    v = np.array([1.0, 2.0, 3.0, np.nan])
    mean, lo, hi = M.bootstrap_ci(v, n_boot=500, seed=0)
    assert mean == pytest.approx(2.0) and 1.0 <= lo < 2.0 < hi <= 3.0
    assert M.bootstrap_ci(v, n_boot=500, seed=0)[1:] == (lo, hi)          # fixed seed: reproducible
    assert np.allclose(M.bootstrap_ci(np.full((5, 2), 0.5)), 0.5)


def test_waveform_sums_interval_widths_of_a_known_ensemble():
    rng = np.random.default_rng(6)
    truth = rng.normal(size=(4, 384, 2))
    samples = truth[:, None] + rng.normal(size=(4, 400, 384, 2))
    s, _ = M.waveform_sums(truth, samples.astype(np.float32), M.segment_edges(384, FS))
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    np.testing.assert_allclose(m["width50"], 1.349, rtol=0.03)     # N(0, 1): 2 x 0.674
    np.testing.assert_allclose(m["width80"], 2.563, rtol=0.03)     # 2 x 1.2816


def test_a_partial_last_horizon_second_is_its_own_segment():
    edges = M.segment_edges(400, FS)
    assert list(edges) == [0, 128, 256, 384, 400]
    truth = np.random.default_rng(0).normal(size=(2, 400, 2))
    fc = truth.copy()
    fc[:, 384:] += 0.2
    s, _ = M.waveform_sums(truth, fc[:, None], edges)
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    np.testing.assert_allclose(m["mse"], [0, 0, 0, 0.04, 0.04 * 16 / 400], atol=1e-12)


def test_a_beat_annotated_just_after_the_forecast_start_is_no_miss():
    """Its R peak lies in the context (the reference beat 6 samples, 47 ms, after it): the forecast is not
    blamed for it at either tolerance."""
    c, h = 384, 384
    peaks = np.arange(81, c + h, 100)                 # 381 = c - 3
    ref = np.where(peaks == 381, 387, peaks)          # annotated at c + 3
    truth = spike_train(c + h, peaks)
    s = M.rhythm_sums(truth[None, :c], truth[None, c:], np.zeros(len(ref), np.int64), ref, FS,
                      M.segment_edges(h, FS))
    assert s["fn50"][0, -1] == 0 and s["fn100"][0, -1] == 0
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    assert m["f1_50"][-1] == 1.0 and m["f1_100"][-1] == 1.0


def test_bootstrap_interval_has_its_nominal_width():
    v = np.random.default_rng(0).normal(size=400)
    sem = v.std(ddof=1) / np.sqrt(len(v))
    for level, z in ((0.95, 1.96), (0.8, 1.2816)):
        mean, lo, hi = M.bootstrap_ci(v, n_boot=4000, seed=0, level=level)
        assert hi - lo == pytest.approx(2 * z * sem, rel=0.03)    # 0.999 and 1.018 of it; at 8% a 93% interval passed
        assert (lo + hi) / 2 == pytest.approx(mean, abs=0.1 * sem)


def _rhythm(context, horizon, beats):
    """Rhythm scores of one single-lead window."""
    s = M.rhythm_sums(context[None], horizon[None], np.zeros(len(beats), np.int64), np.asarray(beats), FS,
                      M.segment_edges(horizon.shape[-1], FS))
    return M.record_metrics({k: v.sum(0) for k, v in s.items()})


def test_timing_error_is_a_magnitude_early_or_late():
    """A forecast whose beats come 5 samples (39 ms) early errs as much as one 5 samples late."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    err = {}
    for shift in (-5, 5):
        fc = spike_train(c + h, beats + shift)[c:]
        err[shift] = _rhythm(truth[:c], fc, beats)["timing_ms"][-1]
    assert err[5] == pytest.approx(5 * 1000 / FS, abs=1.0)
    assert err[-5] == pytest.approx(err[5], abs=1.0)


def test_windowed_pearson_r_is_the_correlation_of_each_window_and_lead():
    """waveform_sums' r is Pearson's r of each window and lead, averaged: an offset or a gain changes nothing,
    a flipped forecast gives -1, and noisy ones match the reference function whatever the leads' means."""
    rng = np.random.default_rng(1)
    t = np.arange(256) / FS
    truth = np.stack([np.sin(2 * np.pi * 1.1 * t) + 0.7, 0.5 * np.cos(2 * np.pi * 0.8 * t) - 0.4], -1)[None]
    edges = M.segment_edges(256, FS)
    for fc, want in ((2 * truth + 3, 1.0), (-truth + 0.2, -1.0)):
        s, _ = M.waveform_sums(truth, fc[:, None], edges)
        assert M.record_metrics(s)["r"][0, -1] == pytest.approx(want, abs=1e-9)
    fc = truth + 0.5 + rng.normal(0, 0.5, truth.shape)
    s, _ = M.waveform_sums(truth, fc[:, None], edges)
    ref = np.mean([np.corrcoef(fc[0, :, k], truth[0, :, k])[0, 1] for k in range(2)])
    assert M.record_metrics(s)["r"][0, -1] == pytest.approx(ref, abs=1e-9)


def test_median_scores_ignore_a_minority_of_outlying_paths():
    """Nine paths on the truth and two 5 mV off: the sample mean errs, the sample median does not."""
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(3, 256, 2))
    samples = np.repeat(truth[:, None], 11, axis=1)
    samples[:, :2] += 5.0
    s, _ = M.waveform_sums(truth, samples.astype(np.float64), M.segment_edges(256, FS))
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    assert m["mse"][-1] == pytest.approx((10 / 11) ** 2, rel=1e-6)
    assert m["mse_median"][-1] == pytest.approx(0.0, abs=1e-9)
    assert m["mae_median"][-1] == pytest.approx(0.0, abs=1e-9)


def test_record_prd_and_prdn_are_the_reference_functions_on_one_window():
    """With a truth whose mean is not zero, PRD (against the truth's energy) and PRDN (against its variance
    about the mean) differ; the evaluation's sums give each its own reference value."""
    rng = np.random.default_rng(3)
    truth = rng.normal(0.8, 0.3, size=(1, 256, 2))
    fc = truth + rng.normal(0, 0.1, truth.shape)
    s, _ = M.waveform_sums(truth, fc[:, None], M.segment_edges(256, FS))
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    assert m["prd"][-1] == pytest.approx(M.prd(fc, truth), rel=1e-9)
    assert m["prdn"][-1] == pytest.approx(M.prdn(fc, truth, axis=1), rel=1e-6)    # each lead about its own mean
    assert m["prd"][-1] < m["prdn"][-1]


def test_one_giant_artefact_in_a_forecast_does_not_hide_its_beats():
    """Beats are found with the threshold of the context a forecast continues: a forecast with the right beats
    and one 12 mV spike between two of them scores those beats (one false positive), not a missed rhythm."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    fc = truth[c:] + 10 * spike_train(h, [480 - c])
    m = _rhythm(truth[:c], fc, beats)
    assert m["f1_100"][-1] == pytest.approx(8 / 9)            # 4 beats found, 1 false positive
    rows, pos = M.detect_r_peaks(np.concatenate([truth[:c], fc])[None], FS, level_from=c)
    assert set(beats[beats >= c]) <= set(pos)


def test_detector_places_inverted_r_waves_on_their_peak():
    """A lead whose QRS points down (V1, or an inverted MLII) has its R peaks where the deflection is largest,
    as for an upright lead: the detector reads |x - median|, not x."""
    x, beats = synthetic_ecg(30.0, FS, seed=5, hr_bpm=80)
    for sign in (1, -1):
        rows, pos = M.detect_r_peaks(sign * x[None, :, 0], FS)
        ri, di = M.match_beats(beats, pos, 0.05 * FS)
        assert len(ri) == len(beats) == len(pos)
        assert np.abs(pos[di] - beats[ri]).max() <= 2


# ----------------------------------------------------------------------------- edges the tests above leave open

def test_crps_reads_the_sample_axis_it_is_given():
    """Samples on axis 1: CRPS of {0, 2} at 1 is 1 - ½·1 = 0.5, of a point mass the absolute error."""
    samples = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])         # 3 points, 2 samples each
    np.testing.assert_allclose(_crps(samples, np.array([1.0, 0.0, 3.0]), axis=1), [0.5, 1.0, 3.0])


def test_interval_cover_counts_the_edges_and_averages_the_widths():
    """Central 50 % of 5 samples is [x₍₂₎, x₍₄₎] (closed: a truth on either edge is covered); width is the mean
    over points; q = 1 is the largest sample."""
    samples = np.array([[3, 0, 4, 1, 2], [8, 6, 4, 2, 0], [24, 18, 12, 6, 0], [4, 3, 2, 1, 0]], float)
    y = np.array([1.0, 6.0, 6.0, 3.5])        # lower edge, upper edge, lower edge, outside
    assert _cover(samples.T, y, 50) == (pytest.approx(75.0), pytest.approx(5.0))     # widths 2, 4, 12, 2
    assert list(M.quantile_sorted(np.sort(samples, axis=1), 1.0)) == [4, 8, 24, 4]


def test_match_beats_accepts_a_pair_exactly_tol_apart():
    """'At most tol apart': at 360 Hz the tolerances are whole samples (18 and 36), so the edge is reachable."""
    ri, di = M.match_beats(np.array([100, 300]), np.array([105, 306]), 5)
    assert list(ri) == [0] and list(di) == [0]


def test_match_beats_uses_a_detection_once_even_between_two_references():
    """Two references 4 samples apart and one detection between them: one true positive, not two."""
    ri, di = M.match_beats(np.array([100, 104]), np.array([101]), 5)
    assert list(ri) == [0] and list(di) == [0]
    ri, di = M.match_beats(np.array([100, 104]), np.array([102]), 5)      # a tie goes to the left reference
    assert list(ri) == [0] and list(di) == [0]


def test_match_beats_breaks_a_tie_to_the_left_so_the_other_beat_keeps_its_partner():
    """Detection 15 is 5 from references 10 and 20: it goes to 10 (the left one), leaving 20 for detection 20,
    two matches; sending it right would leave reference 10 unmatched."""
    ri, di = M.match_beats(np.array([10, 20]), np.array([15, 20]), 5)
    assert list(ri) == [0, 1] and list(di) == [0, 1]


def test_f1_score_is_undefined_with_nothing_to_find_and_nothing_found():
    """A window with no beats and no detections must not count as F1 0 (nor 1) in an average."""
    assert math.isnan(M.f1_score(0, 0, 0))
    assert M.f1_score(0, 1, 0) == 0.0 and M.f1_score(3, 1, 1) == pytest.approx(0.75)


def test_heart_rate_of_unsorted_beats():
    """Positions in any order give the same rate: 3 beats over 128 samples at 128 Hz is 2 intervals/s = 120 bpm."""
    assert M.heart_rate(np.array([128, 0, 64]), FS, 3.0) == pytest.approx(120.0)


def test_detector_threshold_is_on_amplitude_not_energy():
    """The envelope is the root of the smoothed squared slope, so a QRS half as tall as the largest (0.5 > 0.3)
    is found; against an energy envelope it would be 0.25 < 0.3 and missed."""
    beats = [50, 150, 250, 350]
    x = sum(a * spike_train(450, [p]) for a, p in zip((1.0, 1.0, 0.5, 1.0), beats))
    rows, pos = M.detect_r_peaks(x[None], FS)
    assert len(pos) == 4 and np.abs(pos - beats).max() <= 1


def test_detector_places_inverted_r_waves_on_a_baseline_offset():
    """Downward QRS complexes on a 2 mV baseline: the R peak is the largest deflection from the median, not the
    largest |x| (which is anywhere on the baseline)."""
    beats = np.array([50, 150, 250, 350])
    x = 2.0 - spike_train(450, beats)
    rows, pos = M.detect_r_peaks(x[None], FS)
    assert list(pos) == list(beats)


def test_heart_rate_error_with_one_beat_in_a_one_second_horizon():
    """One reference beat in a 1 s horizon is 60 bpm (60·n/seconds); a flat forecast has 0 bpm: error 60."""
    c, h = 384, 128
    beats = np.array([30, 130, 230, 330, 450])
    truth = spike_train(c + h, beats)
    m = _rhythm(truth[:c], np.zeros(h), beats)
    assert m["hr_bpm"][-1] == pytest.approx(60.0)


def test_the_report_says_a_forecast_without_beats_errs_by_the_whole_heart_rate():
    """The zero, mean and persistence forecasts' HR err of 75 bpm was the patients' mean heart rate, unexplained: a
    forecast without beats reads 0 bpm. Kept (leaving such windows out would favour a forecaster that goes flat when
    unsure), and said in the report's legend."""
    import eval_report
    text = " ".join(eval_report.metrics_section())
    assert "a forecast without beats reads 0 bpm and errs by the whole true rate" in text
    assert M.heart_rate(np.array([], np.int64), FS, 3.0) == 0.0


def test_unannotated_windows_have_no_rhythm_scores_at_all():
    """A window without annotations (annotated False) adds nothing to the heart-rate error either."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    s = M.rhythm_sums(truth[None, :c], np.zeros((1, h)), np.zeros(len(beats), np.int64), beats, FS,
                      M.segment_edges(h, FS), annotated=np.array([False]))
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    assert s["hr_n"].sum() == 0 and np.isnan(m["hr_bpm"][-1]) and np.isnan(m["timing_ms"][-1])


def test_reference_beats_outside_the_window_are_ignored():
    """Annotations at or after the window's end (sample c + h) are not horizon beats: a perfect forecast keeps
    F1 1 and heart-rate error 0."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)                                # 430 ... 730 in the horizon
    truth = spike_train(c + h, beats)
    m = _rhythm(truth[:c], truth[c:], np.append(beats, [c + h, c + h + 40]))
    assert m["f1_50"][-1] == 1.0 and m["f1_100"][-1] == 1.0
    assert m["hr_bpm"][-1] == pytest.approx(0.0, abs=0.5)


def test_a_true_positive_is_counted_in_its_reference_beats_second():
    """A beat annotated exactly at 1 s into the horizon belongs to the second second; its detection, 4 samples
    (31 ms) early, lies in the first second, but the reference beat decides."""
    c, h = 384, 384
    beats = np.arange(12, c + h, 100)                 # horizon beats at 28, 128, 228, 328 samples
    truth = spike_train(c + h, beats)
    fc = spike_train(c + h, beats - 4)[c:]
    s = M.rhythm_sums(truth[None, :c], fc[None], np.zeros(len(beats), np.int64), beats, FS, M.segment_edges(h, FS))
    for tol in (50, 100):
        assert list(s[f"tp{tol}"][0]) == [1, 2, 1, 4]
        assert s[f"fp{tol}"].sum() == 0 and s[f"fn{tol}"].sum() == 0


def test_a_match_with_one_beat_in_the_context_is_no_true_positive():
    """A reference beat at c + 3 whose R peak is at c - 3 (and the reverse) is neither hit nor miss: the true
    positives are the 3 pairs with both beats in the horizon."""
    c, h = 384, 384
    peaks = np.arange(81, c + h, 100)                 # 381 = c - 3, then 481, 581, 681
    for signal_at, ref_at in ((381, 387), (387, 381)):
        sig = np.where(peaks == 381, signal_at, peaks)
        ref = np.where(peaks == 381, ref_at, peaks)
        truth = spike_train(c + h, sig)
        s = M.rhythm_sums(truth[None, :c], truth[None, c:], np.zeros(len(ref), np.int64), ref, FS,
                          M.segment_edges(h, FS))
        for tol in (50, 100):
            assert s[f"tp{tol}"][0, -1] == 3 and s[f"fn{tol}"][0, -1] == 0 and s[f"fp{tol}"][0, -1] == 0


def test_unmatched_beats_near_the_horizon_edges_are_neither_missed_nor_false():
    """A reference beat 6 samples before the horizon's end that the forecast lacks, and forecast beats 4 samples
    after its start or 3 before its end with no reference: all within ±50 ms of an edge, so not counted."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)                 # 430, 530, 630, 730 in the horizon
    truth = spike_train(c + h, beats)
    m = _rhythm(truth[:c], truth[c:], np.append(beats, c + h - 6))           # missed at 762
    assert m["f1_50"][-1] == 1.0 and m["f1_100"][-1] == 1.0
    fc = spike_train(c + h, np.concatenate([beats, [c + 4, c + h - 3]]))[c:]  # extra at 388 and 765
    m = _rhythm(truth[:c], fc, beats)
    assert m["f1_50"][-1] == 1.0 and m["f1_100"][-1] == 1.0


def test_crps_and_intervals_do_not_depend_on_the_chunk_size():
    """Samples {0, 2} at truths 1, 3, 5: CRPS 1 - 0.5, 2 - 0.5, 4 - 0.5, whether windows are sorted together or
    one at a time (sample_chunk small)."""
    samples = np.zeros((3, 2, 4, 2))
    samples[:, 1] = 2.0
    truth = np.broadcast_to(np.array([1.0, 3.0, 5.0])[:, None, None], (3, 4, 2))
    for chunk in (4_000_000, 1):
        s, _ = M.waveform_sums(truth, samples, M.segment_edges(4, FS), sample_chunk=chunk)
        m = M.record_metrics(s)
        np.testing.assert_allclose(m["crps"][:, -1], [0.5, 1.5, 3.5])
        np.testing.assert_allclose(m["mae"][:, -1], [0.0, 2.0, 4.0])
        np.testing.assert_allclose(m["cov50"][:, -1], [100.0, 0.0, 0.0])


def test_an_ensemble_that_collapses_on_the_truth_covers_it():
    """Three identical sample paths equal to the truth: every interval is [y, y], which contains y (100 %)."""
    truth = np.random.default_rng(7).normal(size=(2, 128, 2))
    s, _ = M.waveform_sums(truth, np.repeat(truth[:, None], 3, axis=1), M.segment_edges(128, FS))
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    assert m["cov50"][-1] == 100.0 and m["cov80"][-1] == 100.0
    assert m["width50"][-1] == 0.0 and m["crps"][-1] == pytest.approx(0.0, abs=1e-12)


def test_error_curves_sum_the_two_leads():
    """curves[key] is [B, H] summed over leads: errors 0.2 and 0.1 give squared error 0.05, absolute 0.3."""
    truth = np.zeros((1, 128, 2))
    fc = truth + np.array([0.2, 0.1])
    _, curves = M.waveform_sums(truth, fc[:, None], M.segment_edges(128, FS))
    np.testing.assert_allclose(curves["se"], 0.05)
    np.testing.assert_allclose(curves["ae"], 0.3)


def test_pearson_r_skips_a_flat_truth_lead_and_zeroes_a_flat_forecast():
    """A lead whose truth is constant has no correlation and is left out of the mean (not counted as 0); a
    constant forecast of a varying lead has r 0 (it explains none of the shape)."""
    t = np.arange(256) / FS
    truth = np.stack([np.sin(2 * np.pi * 1.1 * t) + 0.7, np.full_like(t, 0.5)], -1)[None]
    fc = np.stack([2 * truth[0, :, 0] + 3, np.sin(2 * np.pi * 2.0 * t)], -1)[None]
    s, _ = M.waveform_sums(truth, fc[:, None], M.segment_edges(256, FS))
    np.testing.assert_allclose(M.record_metrics(s)["r"][0], 1.0, atol=1e-9)
    flat = np.stack([np.full_like(t, 0.3), np.full_like(t, 0.1)], -1)[None]
    s, _ = M.waveform_sums(truth, flat[:, None], M.segment_edges(256, FS))
    assert list(M.record_metrics(s)["r"][0]) == [0.0, 0.0, 0.0]


def test_a_value_of_fewer_than_two_records_has_no_interval():
    """One record resampled is that record every time: its interval [v, v] would read as a certain value, and a
    paired difference over one patient as one that excludes 0. Each column is judged by its own defined records."""
    mean, lo, hi = M.bootstrap_ci(np.array([[0.2, 1.0], [np.nan, 3.0], [np.nan, np.nan]]), n_boot=200, seed=0)
    assert mean[0] == pytest.approx(0.2) and np.isnan(lo[0]) and np.isnan(hi[0])
    assert 1.0 <= lo[1] < hi[1] <= 3.0
    mean, lo, hi = M.bootstrap_ci(np.array([0.5]))
    assert mean == 0.5 and np.isnan(lo) and np.isnan(hi)
    d = M.paired_difference(np.array([1.0]), np.array([2.0]))
    assert d["mean"] == -1.0 and all(np.isnan(d["ci"])) and (d["below"], d["records"]) == (1, 1)


def test_bootstrap_draws_every_record():
    """Two records 0 and 1: a quarter of the resamples are all 1 (mean 1) and a quarter all 0, so the 95 %
    interval is [0, 1]."""
    mean, lo, hi = M.bootstrap_ci(np.array([0.0, 1.0]), n_boot=1000, seed=0)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)


def test_a_beat_at_a_windows_end_is_not_matched_to_the_next_windows_first_beat():
    """Window 0's last reference beat (3 samples before its end) has its detection 5 samples (39 ms) early;
    window 1 has a beat at its first sample, 4 samples later on a shared axis. Windows are scored apart, so
    window 0's last detection is its own beat's, no false positive (that beat, within the tolerance of the
    horizon's end, counts in no score), and its 3 other true positives keep a timing error of 5 samples."""
    c, h = 384, 384
    b0, b1 = np.arange(65, c + h, 100), np.arange(1, c + h, 100)           # 765 = c + h - 3; 1
    truth = np.stack([spike_train(c + h, b0), spike_train(c + h, b1)])
    fc = np.stack([spike_train(c + h, b0 - 5)[c:], truth[1, c:]])
    rows = np.r_[np.zeros(len(b0), np.int64), np.ones(len(b1), np.int64)]
    s = M.rhythm_sums(truth[:, :c], fc, rows, np.r_[b0, b1], FS, M.segment_edges(h, FS))
    assert list(s["tp50"][:, -1]) == [3, 4] and list(s["fp50"][:, -1]) == [0, 0] and list(s["fn50"][:, -1]) == [0, 0]
    m = M.record_metrics(s)
    assert m["timing_ms"][0, -1] == pytest.approx(5 * 1000 / FS)


def test_median_scores_of_a_skewed_ensemble():
    """Samples {0, 1, 5} at truth 3: the median 1 errs by 2 (squared 4), the mean 2 by 1."""
    samples = np.zeros((1, 3, 128, 2))
    samples[:, 1], samples[:, 2] = 1.0, 5.0
    s, _ = M.waveform_sums(np.full((1, 128, 2), 3.0), samples, M.segment_edges(128, FS))
    m = M.record_metrics(s)
    np.testing.assert_allclose([m["mae_median"][0, -1], m["mse_median"][0, -1]], [2.0, 4.0])
    np.testing.assert_allclose([m["mae"][0, -1], m["mse"][0, -1]], [1.0, 1.0])


def test_a_metric_without_anything_to_average_is_nan_not_zero():
    """No matched beats (a flat forecast) leaves the timing error undefined: NaN, which the record mean skips."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    m = _rhythm(truth[:c], np.zeros(h), beats)
    assert np.isnan(m["timing_ms"]).all() and m["f1_100"][-1] == 0.0


def test_detector_finds_a_qrs_cut_by_the_rows_end():
    """A spike centred 1 to 3 samples before the end: the envelope is zero-padded, so its peak is still a peak."""
    for last in (447, 448, 449):
        rows, pos = M.detect_r_peaks(spike_train(450, [50, 150, 250, 350, last])[None], FS)
        assert list(pos) == [50, 150, 250, 350, last]


def test_reference_beats_may_come_in_any_order():
    """Reference beats are sorted before matching: a shuffled list scores a perfect forecast as perfect."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    m = _rhythm(truth[:c], truth[c:], beats[[5, 0, 7, 2, 6, 1, 4, 3]])
    assert m["f1_50"][-1] == 1.0 and m["f1_100"][-1] == 1.0
    assert m["hr_bpm"][-1] == pytest.approx(0.0, abs=0.5)


def test_crps_of_integer_samples_is_not_cut_to_their_mean_absolute_error():
    """Samples {0, 2} as integers at 1: CRPS 1 - ½·1 = 0.5. The spread term's weights (±¼) were cast to the samples'
    integer dtype, to 0, so the CRPS came out as E|X - y| = 1; float32 samples keep float32 weights."""
    np.testing.assert_allclose(_crps(np.array([[0], [2]]), np.array([1])), [0.5])
    assert _crps(np.array([[0], [2]], np.float32), np.array([1], np.float32)).dtype == np.float32


def test_prdn_centres_each_lead_about_its_own_mean():
    """Two leads at +0.4 and -0.4 mV: one mean over both counted the offsets as signal, and PRDN came out 20 %
    where the evaluation's sums (each window and lead about its own mean) give 35 %."""
    t = np.arange(384) / FS
    truth = np.stack([0.5 * np.sin(2 * np.pi * 1.2 * t) + 0.4, 0.3 * np.sin(2 * np.pi * 1.2 * t + 1) - 0.4], -1)
    fc = truth + np.random.default_rng(0).normal(0, 0.1, truth.shape)
    s, _ = M.waveform_sums(truth[None], fc[None, None], M.segment_edges(384, FS))
    assert M.prdn(fc, truth) == pytest.approx(M.record_metrics(s)["prdn"][0, -1], rel=1e-9)
    assert M.prdn(fc, truth) == pytest.approx(M.prdn(fc[None], truth[None], axis=1))


def _most_matches(ref: np.ndarray, det: np.ndarray, tol: float) -> int:
    """The largest one-to-one matching within tol, by brute force over which detection each reference takes."""
    best = 0
    for choice in itertools.product(*[[None, *np.flatnonzero(np.abs(det - r) <= tol)] for r in ref]):
        taken = [c for c in choice if c is not None]
        if len(set(taken)) == len(taken):
            best = max(best, len(taken))
    return best


def test_match_beats_finds_the_most_pairs_when_the_references_are_apart():
    """References more than 2·tol apart, detections crowded (as refined detections can be): mutual nearest
    neighbours match as many beats as any one-to-one matching can, and each pair is within tol."""
    rng = np.random.default_rng(8)
    tol = 12.8                                                    # 100 ms at 128 Hz
    for _ in range(300):
        ref = np.cumsum(rng.integers(26, 60, rng.integers(1, 5)))
        det = np.sort(rng.choice(np.arange(ref[-1] + 30), rng.integers(0, 7), replace=False))
        ri, di = M.match_beats(ref, det, tol)
        assert len(ri) == _most_matches(ref, det, tol)
        assert len(set(di)) == len(di) and np.all(np.abs(ref[ri] - det[di]) <= tol)


@pytest.mark.parametrize("samples", [10, 100])
def test_a_calibrated_ensemble_covers_a_share_below_the_level_with_few_samples(samples):
    """The truth drawn like the samples: the central interval of linearly interpolated quantiles holds it about
    level·(S−1)/(S+1) of the time (78.4 % for 80 % with 100 samples, 65 % with 10), as report.md says."""
    draws = np.random.default_rng(9).standard_normal((samples + 1, 40000))
    for level in (50, 80):
        cov, _ = _cover(draws[:-1], draws[-1], level)
        assert cov == pytest.approx(level * (samples - 1) / (samples + 1), abs=1.2)


def test_the_edge_rule_at_the_horizons_start_and_its_bounds():
    """At 128 Hz ±100 ms is 12.8 samples. A reference beat 2 samples into the horizon counts in no score, and the
    detection 12 samples after it, its ±100 ms hit, is no false positive (at ±50 ms, 6.4 samples, it is one: the
    detection is inside and unmatched). A reference 13 samples before the horizon's end is inside both: missed."""
    c, h = 384, 384
    beats = np.array([100, 250, c + 2, c + 150, c + 300, c + h - 13])
    truth = spike_train(c + h, beats)
    fc = spike_train(c + h, np.array([c + 14, c + 150, c + 300]))[c:]
    s = M.rhythm_sums(truth[None, :c], fc[None], np.zeros(len(beats), np.int64), beats, FS, M.segment_edges(h, FS))
    assert [tuple(s[f"{k}{tol}"][0, -1] for k in ("tp", "fn", "fp")) for tol in (50, 100)] == [(2, 1, 1), (2, 1, 0)]
    assert s["nterr"][0, -1] == 2 and s["terr"][0, -1] == 0


@pytest.mark.parametrize("tol_ms, outside, inside", [(100, 11, 12), (50, 5, 6)])
def test_the_edge_rule_leaves_out_exactly_the_beats_that_may_have_a_partner_outside(tol_ms, outside, inside):
    """At 128 Hz ±100 ms is 12.8 samples: a missed reference 11 samples into the horizon may have its partner at
    c − 1 (12 samples, 94 ms, away) and counts in no score; one 12 samples in cannot (c − 1 is 13 samples, 102
    ms, away) and is a miss. At ±50 ms (6.4 samples) the bound is 5 and 6 samples; at the end, likewise."""
    c, h = 384, 384
    last = c + h - 1
    for ref, fn in (((c + outside, last - outside), 0), ((c + inside, last - inside), 2)):
        beats = np.array([100, 250, *ref])
        truth = spike_train(c + h, beats)
        s = M.rhythm_sums(truth[None, :c], np.zeros((1, h)), np.zeros(len(beats), np.int64), beats, FS,
                          M.segment_edges(h, FS))
        assert s[f"fn{tol_ms}"][0, -1] == fn


def test_scores_refuse_a_truth_that_only_broadcasts_against_the_forecast():
    """predict's samples [1, S, H, 2] against a truth [H, 2]: prd of all S paths against one truth would be a number
    that is no score, and waveform_sums would broadcast. Each names both shapes."""
    rng = np.random.default_rng(0)
    samples, truth = rng.standard_normal((1, 20, 64, 2)), rng.standard_normal((64, 2))
    for score in (M.prd, M.prdn):
        with pytest.raises(ValueError, match=r"pred has shape \(20, 64, 2\) and the truth \(64, 2\)"):
            score(samples[0], truth)
    with pytest.raises(ValueError, match="forecast without its sample axis has shape"):
        M.waveform_sums(truth, samples, M.segment_edges(64, FS))


def test_a_quantile_outside_0_to_1_is_refused_by_name():
    """quantile_sorted(xs, 80) would stop in an IndexError from its indexing."""
    samples = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"quantile q must be in \[0, 1\], got 1.5"):
        M.quantile_sorted(samples.T, 1.5)


def test_detect_r_peaks_refuses_a_signal_that_is_not_single_lead_rows():
    """A lead [T] or a two-lead context [T, 2] (rows of two samples) found no beats, silently."""
    x, _ = synthetic_ecg(6, FS)
    assert len(M.detect_r_peaks(x[None, :, 0], FS)[1]) > 3
    for wrong in (x[:, 0], x):
        with pytest.raises(ValueError, match=r"single-lead rows \[B, T\].*context\[None, :, 0\]"):
            M.detect_r_peaks(wrong, FS)


def test_paired_difference_refuses_values_of_other_records():
    """a of three records and b of one were paired by broadcasting, every record against b's one value."""
    with pytest.raises(ValueError, match=r"one value per record each.*shapes \(3,\) and \(1,\)"):
        M.paired_difference(np.array([1.0, 2.0, 3.0]), np.array([2.0]))
    assert M.paired_difference(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), n_boot=10)["below"] == 1


def _crps_integral(samples: np.ndarray, y: float) -> float:
    """CRPS by its definition ∫ (F(x) − 1{x ≥ y})² dx, F the samples' empirical CDF: the integrand is constant
    between consecutive points of samples ∪ {y}, so summing it at each gap's midpoint times the gap is exact."""
    knots = np.sort(np.append(samples, y))
    mid, gap = (knots[1:] + knots[:-1]) / 2, np.diff(knots)
    cdf = np.searchsorted(np.sort(samples), mid, side="right") / len(samples)
    return float(np.sum((cdf - (mid >= y)) ** 2 * gap))


def test_crps_matches_its_integral_definition():
    """Against ∫ (F − H)² dx, independent of the energy form the code and the quadratic test use; ties among the
    samples and a y equal to one of them included."""
    rng = np.random.default_rng(11)
    cases = [(rng.normal(size=7), 0.3), (rng.exponential(size=40), 2.5), (np.array([0.0, 0.0, 1.0, 3.0]), 1.0),
             (np.array([2.0, 2.0]), -1.0), (rng.integers(0, 4, 9).astype(float), 10.0)]
    for samples, y in cases:
        got = float(M.crps_sorted(M.sorted_samples(samples), np.array(y)))
        assert got == pytest.approx(_crps_integral(samples, y), abs=1e-12), (samples, y)


def test_evaluated_crps_of_a_gaussian_ensemble_matches_the_closed_form():
    """waveform_sums (float32 samples sorted in chunks, as evaluate.py passes them) gives, pooled by
    record_metrics, the closed-form CRPS of N(mu, s) at each truth, averaged: s·(z(2Φ(z)−1) + 2φ(z) − 1/√π)."""
    rng = np.random.default_rng(12)
    mu, sd = 0.4, 0.3
    truth = rng.normal(0.2, 0.5, size=(3, 16, 2))
    samples = (mu + sd * rng.standard_normal((3, 4000, 16, 2))).astype(np.float32)
    s, _ = M.waveform_sums(truth, samples, M.segment_edges(16, FS), sample_chunk=300_000)
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    z = (truth - mu) / sd
    exact = sd * (z * (2 * _normal_cdf(z) - 1) + 2 * np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
                  - 1 / math.sqrt(math.pi))
    assert m["crps"][-1] == pytest.approx(exact.mean(), abs=0.003)


def test_median_of_an_even_ensemble_is_halfway_between_its_middle_samples():
    """Samples {0, 1, 3, 8} at truth 0: the median is 2 (not the upper middle sample 3, nor the lower 1)."""
    samples = np.array([0.0, 1.0, 3.0, 8.0])[None, :, None, None] * np.ones((1, 4, 128, 2))
    s, _ = M.waveform_sums(np.zeros((1, 128, 2)), samples, M.segment_edges(128, FS))
    m = M.record_metrics(s)
    np.testing.assert_allclose([m["mae_median"][0, -1], m["mse_median"][0, -1]], [2.0, 4.0])


def test_a_detection_near_a_windows_end_is_not_taken_by_the_next_windows_first_reference_beat():
    """Window 0's last reference beat (752, inside the horizon at ±100 ms) has its detection 12 samples late (764);
    window 1's first reference beat is at its sample 0, with no QRS to detect. Were the windows next to each other on
    the matching axis, 764 would pair with that beat 4 samples on (mutual nearest neighbours) and 752 be missed."""
    c, h = 384, 384
    b0, b1 = np.arange(52, c + h, 100), np.arange(0, c + h, 100)          # 752 = c + h - 16; 0
    truth = np.stack([spike_train(c + h, b0), spike_train(c + h, b1[1:])])
    fc = np.stack([spike_train(c + h, np.r_[b0[:-1], 764])[c:], truth[1, c:]])
    rows = np.r_[np.zeros(len(b0), np.int64), np.ones(len(b1), np.int64)]
    s = M.rhythm_sums(truth[:, :c], fc, rows, np.r_[b0, b1], FS, M.segment_edges(h, FS))
    assert list(s["tp100"][:, -1]) == [4, 4] and list(s["fn100"][:, -1]) == [0, 0]
    assert M.record_metrics(s)["timing_ms"][0, -1] == pytest.approx(12 * 1000 / FS / 4)


def test_detector_places_r_on_the_r_wave_not_on_a_deep_s_wave_behind_a_tall_t_wave():
    """R 1.2 mV, S −1.1 mV 6 samples (47 ms) later, T 0.5 mV: the T waves lift the row's mean by 0.11 mV, so
    |x − mean| would be larger at S; the median (the baseline) keeps the detection on R."""
    t = np.arange(1280)
    beats = np.arange(50, 1200, 100)

    def bumps(centres, sd):
        return np.exp(-0.5 * ((t[:, None] - centres) / sd) ** 2).sum(1)
    x = spike_train(len(t), beats) - 1.1 * bumps(beats + 6, 1.0) + 0.5 * bumps(beats + 35, 8.0)
    rows, pos = M.detect_r_peaks(x[None], FS)
    assert list(pos) == list(beats)


def test_r_peak_search_reaches_the_full_window_on_both_sides():
    """An envelope peak moves to the largest deflection anywhere within ±refine_s (±8 samples at 128 Hz), the last
    sample included, as far late as early."""
    w = round(M.DETECTOR["refine_s"] * FS)
    for offset in (-w, w):
        x = np.zeros((1, 100))
        x[0, 50 + offset] = 1.0
        rows, pos = M._move_to_r(x, np.array([0]), np.array([50]), w)
        assert list(pos) == [50 + offset]


def test_heart_rate_of_two_beats_is_their_interval_not_their_count():
    """Two beats half a second apart in a 3 s horizon beat at 120 bpm, not the 40 bpm of two beats in 3 s; two on one
    sample (no interval) fall back to the count."""
    assert M.heart_rate(np.array([10, 74]), FS, 3.0) == pytest.approx(120.0)
    assert M.heart_rate(np.array([10, 10]), FS, 3.0) == pytest.approx(40.0)


def test_a_reference_beat_on_the_horizons_first_sample_counts_in_its_heart_rate():
    """A beat at horizon sample 0 (c) is the horizon's: leaving the reference one out but not the detected one read an
    irregular rhythm's heart rate 15 bpm off for a forecast that is the truth itself."""
    c, h = 384, 384
    beats = np.array([84, 184, 284, c, c + 50, c + 200, c + 300])
    truth = spike_train(c + h, beats)
    m = _rhythm(truth[:c], truth[c:], beats)
    assert M.heart_rate(beats[3:], FS, h / FS) == pytest.approx(76.8)      # 3 RR over 300 samples
    assert m["hr_bpm"][-1] == pytest.approx(0.0, abs=1e-9)


def test_bootstrap_resamples_are_the_seeds_alone():
    """Every forecaster's records are resampled alike (seed fixed), so intervals are reproducible and a column's
    interval does not depend on the other columns scored with it; another seed draws other resamples."""
    v = np.random.default_rng(3).normal(size=(30, 2))
    first, again = M.bootstrap_ci(v, n_boot=200, seed=0), M.bootstrap_ci(v, n_boot=200, seed=0)
    np.testing.assert_array_equal(np.array(first), np.array(again))
    alone = M.bootstrap_ci(v[:, 1], n_boot=200, seed=0)
    np.testing.assert_allclose([alone[1], alone[2]], [first[1][1], first[2][1]], rtol=1e-12)
    assert M.bootstrap_ci(v, n_boot=200, seed=1)[1][0] != first[1][0]
