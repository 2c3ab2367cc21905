"""Every metric on hand-made signals whose value is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

import metrics as M
from conftest import spike_train, synthetic_ecg

FS = 128


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def test_mse_mae_of_constant_offset():
    truth = np.sin(np.linspace(0, 20, 500))
    assert M.mse(truth + 0.3, truth) == pytest.approx(0.09)
    assert M.mae(truth - 0.3, truth) == pytest.approx(0.3)


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


def test_pearson_r_of_scaled_and_flipped_copies_and_constants():
    truth = np.sin(np.linspace(0, 12, 300))
    assert M.pearson_r(3 * truth + 1, truth) == pytest.approx(1.0)
    assert M.pearson_r(-truth, truth) == pytest.approx(-1.0)
    assert M.pearson_r(np.full_like(truth, 0.2), truth) == 0.0


def test_crps_of_a_point_mass_equals_the_mae():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 7)), rng.normal(size=(40, 7))
    for copies in (1, 5, 64):
        samples = np.repeat(x[None], copies, axis=0)
        np.testing.assert_allclose(M.crps_samples(samples, y, axis=0), np.abs(x - y), atol=1e-12)


def test_crps_sorted_form_matches_the_quadratic_definition():
    rng = np.random.default_rng(1)
    samples, y = rng.normal(size=(30, 11)), rng.normal(size=11)
    brute = (np.abs(samples - y).mean(0)
             - 0.5 * np.abs(samples[:, None] - samples[None, :]).mean(axis=(0, 1)))
    np.testing.assert_allclose(M.crps_samples(samples, y, axis=0), brute, atol=1e-12)


def test_crps_of_gaussian_samples_matches_the_closed_form():
    rng = np.random.default_rng(2)
    sigma, y = 0.7, np.array([-1.0, 0.0, 0.4, 2.0])
    samples = rng.normal(0.0, sigma, size=(20000, len(y)))
    z = y / sigma
    exact = sigma * (z * (2 * _normal_cdf(z) - 1) + 2 * np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
                     - 1 / math.sqrt(math.pi))
    np.testing.assert_allclose(M.crps_samples(samples, y, axis=0), exact, atol=0.01)


def test_coverage_and_width_of_a_known_gaussian():
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((4000, 3000))          # 4000 samples for each of 3000 points
    y = rng.standard_normal(3000)
    cov50, w50 = M.interval_coverage(samples, y, 0.5, axis=0)
    cov80, w80 = M.interval_coverage(samples, y, 0.8, axis=0)
    assert cov50 == pytest.approx(0.5, abs=0.03) and w50 == pytest.approx(1.349, abs=0.02)
    assert cov80 == pytest.approx(0.8, abs=0.025) and w80 == pytest.approx(2.563, abs=0.03)
    cov_wide, _ = M.interval_coverage(3 * samples, y, 0.5, axis=0)   # too wide: over-covers
    assert cov_wide > 0.85


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
        assert hi - lo == pytest.approx(2 * z * sem, rel=0.08)
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
    """waveform_sums' r is pearson_r of each window and lead, averaged: an offset or a gain changes nothing,
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
    ref = np.mean([M.pearson_r(fc[0, :, k], truth[0, :, k]) for k in range(2)])
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
    centred = truth - truth.mean(axis=1, keepdims=True)             # each lead about its own mean
    assert m["prdn"][-1] == pytest.approx(100 * np.sqrt(np.sum((fc - truth) ** 2) / np.sum(centred ** 2)), rel=1e-6)
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
