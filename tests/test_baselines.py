"""Baselines: interface, shapes, and exact answers on signals whose future is known."""
from __future__ import annotations

import numpy as np
import pytest

import baselines as B
import metrics as M
from conftest import synthetic_ecg
from evaluate import make_forecaster
from paths import UserError

FS, C, H = 128, 384, 384
PERIOD = 100


def periodic_ecg(n_windows: int = 3, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Windows [B, C+H, 2] of an exactly periodic two-lead ECG (one beat per 100 samples)."""
    t = np.arange(PERIOD) / FS
    beat = np.stack([1.2 * np.exp(-0.5 * ((t - 0.3) / 0.012) ** 2) + 0.3 * np.exp(-0.5 * ((t - 0.55) / 0.05) ** 2),
                     -0.6 * np.exp(-0.5 * ((t - 0.3) / 0.012) ** 2)], axis=1)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_windows):
        x = np.tile(beat, (20, 1))[7 * i + 3:7 * i + 3 + C + H]     # a different phase per window
        out.append(x + noise * rng.standard_normal(x.shape))
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("name", list(B.BASELINES))
def test_every_baseline_follows_the_interface(name):
    f = make_forecaster(name, FS)
    x = periodic_ecg(4)
    out = f.predict(x[:, :C], H, num_samples=7, seed=1)
    s = 1 if f.deterministic else 7
    assert out.shape == (4, s, H, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    assert f.name == name and f.fs == FS
    np.testing.assert_array_equal(out, f.predict(x[:, :C], H, num_samples=7, seed=1))   # seeded


@pytest.mark.parametrize("name", list(B.BASELINES))
@pytest.mark.parametrize("c", [1, 8, 34, 40])
def test_every_baseline_takes_a_context_shorter_than_a_beat(name, c):
    """Below 0.25 s (32 samples) no beat period fits: the seasonal forecasts repeat the whole context."""
    x = periodic_ecg(2)[:, :c]
    out = make_forecaster(name, FS).predict(x, 50, num_samples=3, seed=0)
    assert out.shape[0] == 2 and out.shape[2:] == (50, 2) and np.isfinite(out).all()
    if name == "seasonal" and c < 35:
        np.testing.assert_array_equal(out[:, 0], np.tile(x, (1, 50 // c + 1, 1))[:, :50])


def test_flat_baselines():
    x = periodic_ecg(2)
    ctx = x[:, :C]
    assert not B.Zero(FS).predict(ctx, H).any()
    np.testing.assert_allclose(B.ContextMean(FS).predict(ctx, H)[:, 0], np.repeat(ctx.mean(1, keepdims=True), H, 1),
                               rtol=1e-6)
    np.testing.assert_array_equal(B.Persistence(FS).predict(ctx, H)[:, 0], np.repeat(ctx[:, -1:], H, 1))


def test_seasonal_and_template_continue_a_periodic_signal_exactly():
    x = periodic_ecg(3)
    _, period, _ = B.context_rhythm(x[:, :C], FS)
    assert list(period) == [PERIOD] * 3
    assert list(B.autocorr_period(x[:, :C], FS)) == [PERIOD] * 3
    for f in (B.SeasonalNaive(FS), B.MeanBeatTemplate(FS)):
        out = f.predict(x[:, :C], H)[:, 0]
        assert np.abs(out - x[:, C:]).max() < 1e-5, f.name


def test_template_averages_noise_away():
    x = periodic_ecg(6, noise=0.05, seed=1)
    clean = periodic_ecg(6)
    err = {f.name: np.mean((f.predict(x[:, :C], H)[:, 0] - clean[:, C:]) ** 2)
           for f in (B.SeasonalNaive(FS), B.MeanBeatTemplate(FS))}
    assert err["template"] < 0.5 * err["seasonal"]


def test_seasonal_and_template_keep_the_rhythm_that_flat_forecasts_lose():
    """On a jittered synthetic rhythm MSE may prefer a flat line; the beat F1 must not."""
    x, beats = synthetic_ecg(60.0, FS, seed=3, hr_bpm=75)
    starts = np.arange(0, len(x) - C - H, C + H)
    w = np.stack([x[i:i + C + H] for i in starts]).astype(np.float32)
    rows = np.concatenate([np.full(np.sum((beats >= s) & (beats < s + C + H)), k) for k, s in enumerate(starts)])
    pos = np.concatenate([beats[(beats >= s) & (beats < s + C + H)] - s for s in starts])
    edges = M.segment_edges(H, FS)
    f1 = {}
    for f in (B.Persistence(FS), B.SeasonalNaive(FS), B.MeanBeatTemplate(FS)):
        s = M.rhythm_sums(w[:, :C, 0], f.predict(w[:, :C], H)[:, 0, :, 0], rows, pos, FS, edges)
        f1[f.name] = M.record_metrics({k: v.sum(0) for k, v in s.items()})["f1_100"][-1]
    assert f1["persistence"] == 0.0
    assert f1["seasonal"] > 0.5 and f1["template"] > 0.5, f1


def test_ensemble_spread_comes_from_rr_variability_and_grows_with_the_horizon():
    x = periodic_ecg(3)
    f = B.SeasonalEnsemble(FS)
    out = f.predict(x[:, :C], H, num_samples=200, seed=0)
    spread = out.std(axis=1).mean(axis=(0, 2))                   # [H]
    assert spread[:20].mean() < spread[-100:].mean()             # the first beat is surest
    assert not np.allclose(out, f.predict(x[:, :C], H, num_samples=200, seed=1))
    # a regular rhythm gets the minimum spread: periods within a few percent of the true one
    _, period, sd = B.context_rhythm(x[:, :C], FS)
    assert np.all(sd == 0)
    irregular = B.SeasonalEnsemble(FS)
    irregular.min_spread = 0.2
    wide = irregular.predict(x[:, :C], H, num_samples=200, seed=0).std(axis=1).mean()
    assert wide > out.std(axis=1).mean()


def test_template_ensemble_is_the_template_at_drawn_periods():
    """Without spread it is the template; with it, its paths are the beat drafts the forecasters start from."""
    x = periodic_ecg(3)
    f = B.TemplateEnsemble(FS)
    f.min_spread = 0.0
    sharp = f.predict(x[:, :C], H, num_samples=4)
    assert np.abs(sharp - x[:, None, C:]).max() < 1e-5
    f.min_spread = 0.05
    out = f.predict(x[:, :C], H, num_samples=50, seed=2)
    waves, index = B.draft_waves(x[:, :C], H, FS, 50, 2, min_spread=0.05)
    np.testing.assert_allclose(out.reshape(-1, H, 2), waves[index], atol=1e-6)
    spread = out.std(axis=1).mean(axis=(0, 2))
    assert spread[:20].mean() < spread[-100:].mean()


def test_make_forecaster_rejects_a_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="nope.pt"):
        make_forecaster(str(tmp_path / "nope.pt"), FS)


def test_beat_train_lays_the_template_at_each_beat():
    """Each beat's R peak (the template's sample `pre`) lands on its time; before the first beat and in a
    gap longer than the template the last sample holds."""
    template = np.stack([np.arange(10.0), -np.arange(10.0)], 1)     # [period 10, 2], R peak at pre = 3
    out = B.beat_train(template, 3, np.array([105, 125]), 100, 40)
    assert out.shape == (40, 2)
    np.testing.assert_array_equal(out[[5, 25], 0], [3, 3])            # R peaks at 105 and 125
    np.testing.assert_array_equal(out[:2, 0], [9, 9])                 # before beat 105's onset (102)
    np.testing.assert_array_equal(out[2:12, 0], np.arange(10))        # one whole beat from its onset
    np.testing.assert_array_equal(out[12:22, 0], [9] * 10)            # the gap until the next onset (122)
    np.testing.assert_array_equal(out[22:32, 1], -np.arange(10))
    rows = B.beat_train(template, 3, np.array([[105, 125], [110, 140]]), 100, 40)     # one train per row
    assert rows.shape == (2, 40, 2)
    np.testing.assert_array_equal(rows[0], out)
    np.testing.assert_array_equal(rows[1], B.beat_train(template, 3, np.array([110, 140]), 100, 40))


def test_beat_train_lays_a_template_of_its_own_at_each_beat():
    """With `pick`, beat k takes template pick[k], in time order whatever the order of the beats given."""
    base = np.stack([np.arange(10.0), -np.arange(10.0)], 1)
    templates = np.stack([base, base + 100, base + 200])               # [3, 10, 2]
    out = B.beat_train(templates, 3, np.array([[125, 105]]), 100, 40, pick=np.array([[2, 1]]))
    np.testing.assert_array_equal(out[0, 2:12, 0], np.arange(10) + 100)      # beat 105: template 1
    np.testing.assert_array_equal(out[0, 22:32, 0], np.arange(10) + 200)     # beat 125: template 2
    np.testing.assert_array_equal(out[0, :2, 0], [109, 109])                 # before: the first beat's last sample
    same = B.beat_train(templates, 3, np.array([[105, 125]]), 100, 40, pick=np.array([[0, 0]]))
    np.testing.assert_array_equal(same[0], B.beat_train(base, 3, np.array([105, 125]), 100, 40))


def test_forecast_drafts_are_the_contexts_own_beats():
    """Each drafted beat is one of the context's whole beats, drawn per beat and path; training drafts (given
    beat times) lay the mean beat."""
    x = periodic_ecg(1)[:, :C].astype(np.float64)
    peaks, period, _ = B.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    pre = B.template_pre(p)
    level = np.random.default_rng(0).normal(0, 0.1, (len(r) + 1, 2))      # each beat shifted by a level of its own
    x[0] += np.repeat(level, np.diff(np.clip(np.r_[0, r - pre, C], 0, C)), axis=0)
    assert all(np.array_equal(a, b) for a, b in zip(B.context_rhythm(x, FS), (peaks, period, np.zeros(1))))
    shapes = B.whole_beats(x[0], r, p)
    assert 1 < len(shapes) < len(r) and shapes.shape[1:] == (p, 2)
    waves, index = B.draft_waves(x, H, FS, 40, seed=1, min_spread=0.0)     # no spread: beats one period apart
    assert waves.shape == (40, H, 2) and list(index) == list(range(40))
    onset = r[-1] - pre + p * np.arange(1, 10)
    o = onset[onset >= C][0] - C                                            # the first drafted beat begun in the horizon
    first = waves[:, o:o + p]
    assert all(np.abs(shapes - w).max(axis=(1, 2)).min() < 1e-9 for w in first)
    assert len({tuple(np.round(w[:, 0], 6)) for w in first}) == len(shapes)     # every whole beat is drawn
    trained, _ = B.draft_waves(x, H, FS, beats=[r[-1] + p * np.arange(1, 6)])
    np.testing.assert_allclose(trained[0, o:o + p], B.mean_beat(x[0], r, p), atol=1e-9)


def test_drawn_beat_times_jitter_beat_by_beat_around_the_rhythm():
    """Each path's intervals jitter around its own rhythm, so the spread of the k-th beat grows with k; the
    context's RR SD moves a path's whole rhythm; a seed gives the same times."""
    rng = np.random.default_rng(0)
    t = B.draw_beat_times(50, 100, np.nan, 0.05, 4000, 500, FS, rng)
    assert t.dtype == np.int64 and np.all(t[:, 0] == 50) and np.all(t[:, -1] > 500)
    assert np.all(np.diff(t, axis=1) >= round(B.MIN_PERIOD_S * FS))
    sd = t[:, 1:5].std(axis=0)
    assert abs(t[:, 1].mean() - 150) < 1 and 4.5 < sd[0] < 5.5 and 9 < sd[3] < 11   # 5 % per beat, sqrt(k)
    steady = B.draw_beat_times(50, 100, 20.0, 0.0, 4000, 500, FS, np.random.default_rng(0))
    assert 18 < steady[:, 1].std() < 22 and 36 < steady[:, 2].std() < 44             # one drawn rhythm per path
    again = B.draw_beat_times(50, 100, np.nan, 0.05, 4000, 500, FS, np.random.default_rng(0))
    assert np.array_equal(t, again)


def test_first_interval_is_drawn_from_prior_times_likelihood():
    """A flat likelihood leaves the normal prior (grid and tail together); a sharp one picks its interval."""
    rng = np.random.default_rng(0)
    flat = B.draw_first_interval(100.0, 8.0, 80, np.zeros(21), 20000, rng)    # grid 80..99, then the tail
    assert abs(flat.mean() - 100) < 0.3 and 7.6 < flat.std() < 8.4 and flat.min() >= 80
    assert np.all(flat[flat < 99.5] == np.rint(flat[flat < 99.5]))         # whole samples on the grid
    sharp = np.full(21, -1e4)
    sharp[5] = 0.0
    assert np.all(B.draw_first_interval(100.0, 8.0, 80, sharp, 500, rng) == 85)
    later = np.full(21, -1e4)
    later[-1] = 0.0
    assert B.draw_first_interval(100.0, 8.0, 80, later, 500, rng).min() >= 99.5


def p_wave_ecg(end_before_r: int) -> tuple[np.ndarray, int]:
    """A periodic context [1, C, 2] whose beats have a P wave, ending `end_before_r` samples before an
    R peak, and the sample of that next R peak."""
    t = np.arange(PERIOD) / FS
    g = lambda mu, sd, a: a * np.exp(-0.5 * ((t - mu) / sd) ** 2)
    lead = g(0.3, 0.012, 1.2) + g(0.19, 0.02, 0.25) + g(0.55, 0.05, 0.3)
    beat = np.stack([lead, -0.5 * lead], axis=1)
    r = int(np.argmax(lead))
    x = np.tile(beat, (8, 1))
    start = 5 * PERIOD + r - end_before_r - C                  # the context ends before beat 5's R peak
    return x[None, start:start + C].astype(np.float32), C + end_before_r


@pytest.mark.parametrize("end_before_r, most_sd", [(6, 1.0), (60, 6.0)])
def test_next_beat_evidence_times_a_beat_already_begun(end_before_r, most_sd):
    """A P wave already in the context pins the next R peak; with the beat not begun, the prior remains
    (5 % of a 100-sample period)."""
    x, next_r = p_wave_ecg(end_before_r)
    peaks, period, spread = B.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    assert p == PERIOD and spread[0] == 0
    template, pre = B.mean_beat(x[0], r, p), B.template_pre(p)
    evidence = B.next_beat_evidence(x[0], template, pre, r, FS)
    rng = np.random.default_rng(0)
    first = B.draw_beat_times(int(r[-1]), p, spread[0], 0.05, 2000, C + H, FS, rng, evidence)[:, 1]
    assert abs(np.median(first) - next_r) <= 1 and first.std() < most_sd
    blind = B.draw_beat_times(int(r[-1]), p, spread[0], 0.05, 2000, C + H, FS, rng)[:, 1]
    assert 4.5 < blind.std() < 5.5


def test_next_beat_evidence_needs_a_context_after_the_last_beat():
    """A last R peak on the context's final sample leaves nothing to read: the prior alone is drawn."""
    x, _ = p_wave_ecg(6)
    peaks = np.r_[B.context_rhythm(x, FS)[0][0][:-1], C - 1]
    template = B.mean_beat(x[0], peaks, PERIOD)
    assert B.next_beat_evidence(x[0], template, PERIOD // 3, peaks, FS) is None
    assert B.next_beat_evidence(x[0], template, PERIOD // 3, peaks[:-1], FS) is not None


def test_draw_periods_centre_on_the_period_with_its_spread():
    period, spread = np.array([100.0, 100.0]), np.array([np.nan, 20.0])
    p = B.draw_periods(period, spread, 0.05, 4000, 0, FS, C)
    assert p.shape == (2, 4000) and p.dtype == np.int64
    assert abs(p.mean() - 100) < 1.5
    assert 4 < p[0].std() < 6 and 18 < p[1].std() < 22                # at least 5 % of the period; else the RR SD
    assert np.array_equal(p, B.draw_periods(period, spread, 0.05, 4000, 0, FS, C))
    assert p.min() >= round(B.MIN_PERIOD_S * FS) and p.max() <= C


def test_noise_follows_the_contexts_departure_from_its_mean_beat():
    """A clean periodic context gets no noise; a noisy one about `scale` times its residual's SD, per lead
    and seeded; a context without two R peaks none (its seasonal-naive draft carries its own)."""
    assert B.residual_sd(periodic_ecg(3)[:, :C], FS).max() < 1e-5
    noisy = periodic_ecg(3, noise=0.05, seed=1)[:, :C]
    sd = B.residual_sd(noisy, FS)
    assert np.all((sd > 0.04) & (sd < 0.07)), sd            # and a little misfit where a peak is a sample off
    paths = np.zeros((3, 200, H, 2), np.float32)
    out = B.add_noise(paths, noisy, FS, 0.4, seed=0)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.4 * sd, rtol=0.05)
    assert np.array_equal(out, B.add_noise(paths, noisy, FS, 0.4, seed=0))
    assert not np.allclose(out, B.add_noise(paths, noisy, FS, 0.4, seed=1))
    assert B.add_noise(paths, noisy, FS, 0.0, seed=0) is paths
    flat = np.zeros((1, C, 2), np.float32)
    assert np.array_equal(B.add_noise(paths[:1], flat, FS, 0.4, seed=0), paths[:1])
