"""Beat drafts: beat trains, drawn beat times, the next beat read from the context's end, noise."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.signal

import drafts as D
from conftest import periodic_ecg, spike_train, two_leads

FS, C, H = 128, 384, 384
PERIOD = 100


def test_beat_train_lays_the_template_at_each_beat():
    """Each beat's R peak (the template's sample `pre`) lands on its time; before the first beat and in a
    gap longer than the template the last sample holds."""
    template = np.stack([np.arange(10.0), -np.arange(10.0)], 1)     # [period 10, 2], R peak at pre = 3
    out = D.beat_train(template, 3, np.array([105, 125]), 100, 40)
    assert out.shape == (40, 2)
    np.testing.assert_array_equal(out[[5, 25], 0], [3, 3])            # R peaks at 105 and 125
    np.testing.assert_array_equal(out[:2, 0], [9, 9])                 # before beat 105's onset (102)
    np.testing.assert_array_equal(out[2:12, 0], np.arange(10))        # one whole beat from its onset
    np.testing.assert_array_equal(out[12:22, 0], [9] * 10)            # the gap until the next onset (122)
    np.testing.assert_array_equal(out[22:32, 1], -np.arange(10))
    rows = D.beat_train(template, 3, np.array([[105, 125], [110, 140]]), 100, 40)     # one train per row
    assert rows.shape == (2, 40, 2)
    np.testing.assert_array_equal(rows[0], out)
    np.testing.assert_array_equal(rows[1], D.beat_train(template, 3, np.array([110, 140]), 100, 40))


def test_beat_train_memory_grows_with_the_samples_not_with_samples_times_beats():
    """100 paths of 60 s hold some 250 beats each: finding each sample's latest onset must not compare every
    sample with every beat (190 MB here, quadratic in the horizon), only the train itself and its indices."""
    template = np.random.default_rng(0).standard_normal((PERIOD, 2))
    beats = np.sort(np.random.default_rng(1).integers(C - PERIOD, C + 60 * FS, (100, 250)), axis=1)
    tracemalloc.start()
    try:
        out = D.beat_train(template, 33, beats, C, 60 * FS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (100, 60 * FS, 2) and peak < 4 * out.nbytes, peak

def test_beat_train_lays_a_template_of_its_own_at_each_beat():
    """With `pick`, beat k takes template pick[k], in time order whatever the order of the beats given."""
    base = np.stack([np.arange(10.0), -np.arange(10.0)], 1)
    templates = np.stack([base, base + 100, base + 200])               # [3, 10, 2]
    out = D.beat_train(templates, 3, np.array([[125, 105]]), 100, 40, pick=np.array([[2, 1]]))
    np.testing.assert_array_equal(out[0, 2:12, 0], np.arange(10) + 100)      # beat 105: template 1
    np.testing.assert_array_equal(out[0, 22:32, 0], np.arange(10) + 200)     # beat 125: template 2
    np.testing.assert_array_equal(out[0, :2, 0], [109, 109])                 # before: the first beat's last sample
    same = D.beat_train(templates, 3, np.array([[105, 125]]), 100, 40, pick=np.array([[0, 0]]))
    np.testing.assert_array_equal(same[0], D.beat_train(base, 3, np.array([105, 125]), 100, 40))


def test_forecast_drafts_are_the_contexts_own_beats():
    """Each drafted beat is one of the context's whole beats, drawn per beat and path; training drafts (given
    beat times) lay the mean beat."""
    x = periodic_ecg(1)[:, :C].astype(np.float64)
    peaks, period, _ = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    pre = D.template_pre(p)
    level = np.random.default_rng(0).normal(0, 0.1, (len(r) + 1, 2))      # each beat shifted by a level of its own
    x[0] += np.repeat(level, np.diff(np.clip(np.r_[0, r - pre, C], 0, C)), axis=0)
    assert all(np.array_equal(a, b) for a, b in zip(D.context_rhythm(x, FS), (peaks, period, np.zeros(1))))
    shapes = D.whole_beats(x[0], r, p)
    assert 1 < len(shapes) < len(r) and shapes.shape[1:] == (p, 2)
    waves, index = D.draft_waves(x, H, FS, 40, seed=1, jitter=0.0)     # no spread: beats one period apart
    assert waves.shape == (40, H, 2) and list(index) == list(range(40))
    onset = r[-1] - pre + p * np.arange(1, 10)
    o = onset[onset >= C][0] - C                                            # the first drafted beat begun in the horizon
    first = waves[:, o:o + p]
    assert all(np.abs(shapes - w).max(axis=(1, 2)).min() < 1e-9 for w in first)
    assert len({tuple(np.round(w[:, 0], 6)) for w in first}) == len(shapes)     # every whole beat is drawn
    trained, _ = D.draft_waves(x, H, FS, beats=[r[-1] + p * np.arange(1, 6)])
    np.testing.assert_allclose(trained[0, o:o + p], D.mean_beat(x[0], r, p), atol=1e-9)


def test_drawn_beat_times_jitter_beat_by_beat_around_the_rhythm():
    """Each path's intervals jitter around its own rhythm, so the spread of the k-th beat grows with k; the
    context's RR SD moves a path's whole rhythm; a seed gives the same times."""
    rng = np.random.default_rng(0)
    t = D.draw_beat_times(50, 100, np.nan, 0.05, 4000, 500, FS, rng)
    assert t.dtype == np.int64 and np.all(t[:, 0] == 50) and np.all(t[:, -1] > 500)
    assert np.all(np.diff(t, axis=1) >= round(D.MIN_PERIOD_S * FS))
    sd = t[:, 1:5].std(axis=0)
    assert abs(t[:, 1].mean() - 150) < 1 and 4.5 < sd[0] < 5.5 and 9 < sd[3] < 11   # 5 % per beat, sqrt(k)
    steady = D.draw_beat_times(50, 100, 20.0, 0.0, 4000, 500, FS, np.random.default_rng(0))
    assert 18 < steady[:, 1].std() < 22 and 36 < steady[:, 2].std() < 44             # one drawn rhythm per path
    again = D.draw_beat_times(50, 100, np.nan, 0.05, 4000, 500, FS, np.random.default_rng(0))
    assert np.array_equal(t, again)


def test_first_interval_is_drawn_from_prior_times_likelihood():
    """A flat likelihood leaves the normal prior (grid and tail together); a sharp one picks its interval."""
    rng = np.random.default_rng(0)
    flat = D.draw_first_interval(100.0, 8.0, 80, np.zeros(21), 20000, rng)    # grid 80..99, then the tail
    assert abs(flat.mean() - 100) < 0.3 and 7.6 < flat.std() < 8.4 and flat.min() >= 80
    assert np.all(flat[flat < 99.5] == np.rint(flat[flat < 99.5]))         # whole samples on the grid
    sharp = np.full(21, -1e4)
    sharp[5] = 0.0
    assert np.all(D.draw_first_interval(100.0, 8.0, 80, sharp, 500, rng) == 85)
    later = np.full(21, -1e4)
    later[-1] = 0.0
    assert D.draw_first_interval(100.0, 8.0, 80, later, 500, rng).min() >= 99.5



def test_rhythm_and_first_interval_stand_a_session_that_raises_on_underflow():
    """A notebook's np.seterr(all="raise") stopped every forecast reading a rhythm in a FloatingPointError: the
    autocorrelation of a smooth context underflows in its spectrum's product, and an unlikely interval's weight in
    exp. Both are zeros, never errors: the same rhythm and draws as under numpy's defaults."""
    sine = np.repeat(np.sin(np.arange(C) / FS * 2 * np.pi)[None, :, None], 2, axis=2).astype(np.float32)  # as_context's
    sharp = np.full(21, -1e4)
    sharp[5] = 0.0
    got = []
    for raising in (False, True):
        with np.errstate(all="raise" if raising else "ignore"):
            peaks, period, spread = D.context_rhythm(sine, FS)
            drawn = D.draw_first_interval(100.0, 8.0, 80, sharp, 50, np.random.default_rng(0))
        got.append((period, spread, drawn))
    for kept, raised in zip(*got):
        np.testing.assert_array_equal(raised, kept)
    assert np.all(got[1][2] == 85)

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
    peaks, period, spread = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    assert p == PERIOD and spread[0] == 0
    template, pre = D.mean_beat(x[0], r, p), D.template_pre(p)
    evidence = D.next_beat_evidence(x[0], template, pre, r, FS)
    rng = np.random.default_rng(0)
    first = D.draw_beat_times(int(r[-1]), p, spread[0], 0.05, 2000, C + H, FS, rng, evidence)[:, 1]
    assert abs(np.median(first) - next_r) <= 1 and first.std() < most_sd
    blind = D.draw_beat_times(int(r[-1]), p, spread[0], 0.05, 2000, C + H, FS, rng)[:, 1]
    assert 4.5 < blind.std() < 5.5


def test_next_beat_evidence_needs_a_context_after_the_last_beat():
    """A last R peak on the context's final sample leaves nothing to read: the prior alone is drawn."""
    x, _ = p_wave_ecg(6)
    peaks = np.r_[D.context_rhythm(x, FS)[0][0][:-1], C - 1]
    template = D.mean_beat(x[0], peaks, PERIOD)
    assert D.next_beat_evidence(x[0], template, PERIOD // 3, peaks, FS) is None
    seen = D.next_beat_evidence(x[0], template, PERIOD // 3, peaks[:-1], FS)
    last = int(peaks[-2])           # one log-likelihood per interval, from the shortest to a beat begun at the end
    assert seen.shape == (C + PERIOD // 3 - last - D.shortest_period(FS) + 1,) and np.isfinite(seen).all()


def test_noise_follows_the_contexts_departure_from_its_mean_beat():
    """A clean periodic context gets no noise; a noisy one about `scale` times its residual's SD, per lead
    and seeded; a context without two R peaks none (its seasonal-naive draft carries its own)."""
    assert D.residual_sd(periodic_ecg(3)[:, :C], FS).max() < 1e-5
    noisy = periodic_ecg(3, noise=0.05, seed=1)[:, :C]
    sd = D.residual_sd(noisy, FS)
    assert np.all((sd > 0.04) & (sd < 0.07)), sd            # and a little misfit where a peak is a sample off
    paths = np.zeros((3, 200, H, 2), np.float32)
    out = D.add_noise(paths, noisy, FS, 0.4, seed=0)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.4 * sd, rtol=0.05)
    assert np.array_equal(out, D.add_noise(paths, noisy, FS, 0.4, seed=0))
    assert not np.allclose(out, D.add_noise(paths, noisy, FS, 0.4, seed=1))
    assert D.add_noise(paths, noisy, FS, 0.0, seed=0) is paths
    flat = np.zeros((1, C, 2), np.float32)
    assert np.array_equal(D.add_noise(paths[:1], flat, FS, 0.4, seed=0), paths[:1])


def test_noise_is_drawn_apart_from_the_beat_times_of_the_same_seed():
    """A path's noise and its draft's beat times come from one seed, in streams of their own: noise drawn from the
    beat times' stream (numpy's default_rng(seed)) would move with the path's timing, not beside it."""
    noisy = periodic_ecg(1, noise=0.05, seed=1)[:, :C]
    paths = np.zeros((1, 50, H, 2), np.float32)
    sd = 0.4 * D.residual_sd(noisy, FS)[:, None, None, :]
    normals = (D.add_noise(paths, noisy, FS, 0.4, seed=5) / sd).ravel()
    beat_stream = np.random.default_rng(5).standard_normal(paths.shape, dtype=np.float32).ravel()
    assert abs(np.corrcoef(normals, beat_stream)[0, 1]) < 0.05


def test_drafts_and_their_noise_take_a_rhythm_read_once():
    """A forecaster reads a context's rhythm once for its drafts and their noise: the same drafts and noise
    as each reading it again, and the rhythm passed is the one used."""
    x = periodic_ecg(3, noise=0.02, seed=2)[:, :C]
    rhythm = D.context_rhythm(x, FS)
    waves, index = D.draft_waves(x, H, FS, 20, seed=3, jitter=0.06)
    again, index_again = D.draft_waves(x, H, FS, 20, seed=3, jitter=0.06, rhythm=rhythm)
    assert np.array_equal(waves, again) and np.array_equal(index, index_again)
    paths = waves[index].reshape(3, 20, H, 2)
    assert np.array_equal(D.add_noise(paths, x, FS, 0.2, 0), D.add_noise(paths, x, FS, 0.2, 0, rhythm))
    peaks, period, spread = rhythm
    slower, _ = D.draft_waves(x, H, FS, 20, seed=3, jitter=0.06, rhythm=(peaks, period + 10, spread))
    assert not np.array_equal(slower, waves)


def test_hold_to_band_keeps_a_departure_above_the_band_and_drops_its_drift():
    """A departure from the draft of a 0.4 mV offset plus a 10 Hz wave keeps the wave and loses the offset
    (after the first second, over which it fades in from the context's end); a path at its draft stays there."""
    t = np.arange(10 * FS) / FS
    wave = 0.1 * np.sin(2 * np.pi * 10 * t)
    departure = np.stack([np.c_[0.4 + wave, 0.4 + wave], np.zeros((len(t), 2))])
    held = D.hold_to_band(departure, C, 0.5, 2, FS)
    assert 0.1 < held[0, 0, 0] < 0.3                                           # half the offset at the seam
    assert np.abs(held[0, FS:] - wave[FS:, None]).max() < 0.02                 # none a second on; the wave kept
    assert np.abs(held[1]).max() < 1e-9


def test_hold_to_band_filters_each_path_alone():
    """Paths are filtered a block at a time to bound memory: the blocks must not change any path."""
    departure = np.random.default_rng(0).standard_normal((7, 3 * FS, 2)).astype(np.float32)
    whole = D.hold_to_band(departure, C, 0.5, 2, FS)
    assert whole.dtype == np.float32
    np.testing.assert_allclose(D.hold_to_band(departure, C, 0.5, 2, FS, rows=2), whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(D.hold_to_band(departure[3:4], C, 0.5, 2, FS), whole[3:4], rtol=0, atol=1e-6)


def test_hold_matrix_is_the_hold_as_one_product():
    """A differentiable hold (the CRPS fine-tuning's validation) relies on the filter being linear."""
    departure = np.random.default_rng(1).standard_normal((3, 2 * FS, 2)).astype(np.float32)
    band = D.hold_matrix(C, 2 * FS, 0.5, 2, FS)
    np.testing.assert_allclose(np.einsum("pnc,nt->ptc", departure, band), D.hold_to_band(departure, C, 0.5, 2, FS),
                               rtol=0, atol=1e-5)
    assert D.hold_matrix(C, 2 * FS, 0.5, 2, FS) is band and not band.flags.writeable


def test_a_missed_beat_does_not_lengthen_the_period():
    """The period is the median RR: one beat the detector misses (an RR twice as long) must not move it, as
    a mean would (80 -> 90 samples here)."""
    n, period = 768, 80
    beats = [20 + period * k for k in range(9) if k != 4]            # the fifth beat missing
    lead = spike_train(n, beats)
    x = two_leads(lead)
    peaks, got, _ = D.context_rhythm(x, FS)
    assert len(peaks[0]) == len(beats)
    assert got[0] == period


def test_a_baseline_shift_over_the_evidence_window_does_not_retime_the_next_beat():
    """The evidence removes the mean of its residuals (baseline drift): a 0.3 mV baseline step over the last
    EVIDENCE_S seconds leaves the best candidate interval where it was, and the next R peak stays pinned by the P wave already begun."""
    def evidence_and_first(x):
        peaks, period, spread = D.context_rhythm(x, FS)
        r, p = peaks[0], int(period[0])
        ev = D.next_beat_evidence(x[0], D.mean_beat(x[0], r, p), D.template_pre(p), r, FS)
        first = D.draw_beat_times(int(r[-1]), p, spread[0], 0.05, 2000, 2 * C, FS, np.random.default_rng(0), ev)
        return ev, first[:, 1]

    x, next_r = p_wave_ecg(6)
    shifted = x.copy()
    shifted[0, C - round(D.EVIDENCE_S * FS):] += 0.3
    (ev, _), (ev_shifted, first) = evidence_and_first(x), evidence_and_first(shifted)
    assert np.argmax(ev_shifted) == np.argmax(ev)
    assert abs(np.median(first) - next_r) <= 1 and first.std() < 1.5


def test_noise_level_ignores_the_samples_before_the_first_beat():
    """A clean periodic context that starts in a T wave (before the first beat's onset, where no template is
    laid) has no residual: noise is measured from the first beat's onset on."""
    x = periodic_ecg(9)[8:9, :C]                     # starts 59 samples into a beat, on its T wave (sample 70)
    assert np.ptp(x[0, :10, 0]) > 0.05               # the T wave is there
    assert D.residual_sd(x, FS).max() < 1e-3


def test_a_training_beat_within_the_shortest_period_of_the_last_peak_is_that_peak():
    """Training lays the mean beat at the window's own R peaks after the context's last one; a reference beat
    a few samples from that last peak (annotation and detector disagreeing) is the same beat, not a new one
    that would restart the template in the middle of a beat."""
    x = periodic_ecg(1)[:, :C].astype(np.float64)
    peaks, period, _ = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    assert r[-1] - D.template_pre(p) + p > C            # the last beat runs on into the horizon
    later = r[-1] + p * np.arange(1, 5)
    plain, _ = D.draft_waves(x, 384, FS, beats=[later])
    doubled, _ = D.draft_waves(x, 384, FS, beats=[np.r_[r[-1] + 3, later]])
    np.testing.assert_array_equal(doubled, plain)


# --- pinned by the mutation audit of drafts.py -------------------------------------------------------------

def test_template_pre_is_the_nearest_sample_to_a_third_of_the_period():
    """Where every beat is cut (and a draft's beat begins) is TEMPLATE_PRE of the period, rounded, not floored."""
    for p in range(32, 321):
        assert abs(D.template_pre(p) - p / 3) <= 0.5, p
    assert D.template_pre(80) == 27 and D.template_pre(100) == 33


def test_autocorr_period_of_a_lone_context_with_an_offset():
    """The autocorrelation removes each context's own mean (not the batch's): a lone, offset periodic context
    gives its period, and one as long as 2.2 s is still found in 3 s (at least 0.5 s of overlap is left)."""
    x = periodic_ecg(1) + np.float32(0.5)
    assert D.autocorr_period(x, FS)[0] == 100
    assert list(D.autocorr_period(periodic_ecg(2) + np.float32([[[0.5]], [[-0.5]]]), FS)) == [100, 100]
    slow = periodic_ecg(1, period=280, length=C)                       # 384 - 280 = 104 samples of overlap
    assert D.autocorr_period(slow, FS)[0] == 280
    # unbiased (each lag's mean over its overlap): a biased estimate favours short lags, here by a sample
    assert list(D.autocorr_period(periodic_ecg(6, period=200, length=C), FS)) == [200] * 6   # two R peaks each


def test_autocorr_period_leaves_half_a_second_of_overlap():
    """A lag whose overlap is under 0.5 s is not searched: in a 2 s context a period of 210 samples (46 samples of
    overlap) is out of reach, and one of 180 (76 samples) is found."""
    assert D.autocorr_period(periodic_ecg(1, period=180, length=256), FS)[0] == 180
    assert D.autocorr_period(periodic_ecg(1, period=210, length=256), FS)[0] <= 256 - FS // 2


def test_autocorr_period_is_not_a_lesser_peak_below_80_percent():
    """Spikes every 50 samples alternating 1.2 and 0.48 mV repeat every 100: the 50-sample peak of the
    autocorrelation (about 0.6 of the best) is below the 80 % bar and must not win."""
    t = np.arange(768)
    lead = sum((1.2 if k % 2 == 0 else 0.48) * np.exp(-0.5 * ((t - p) / 1.5) ** 2)
               for k, p in enumerate(20 + 50 * np.arange(15)))
    assert D.autocorr_period(two_leads(lead), FS)[0] == 100


def test_two_r_peaks_give_their_interval_as_the_period():
    """With two R peaks their interval is the period (not the autocorrelation's guess, here out of its reach),
    and with one interval there is no RR SD (NaN)."""
    x = two_leads(spike_train(300, [30, 270]))
    peaks, period, spread = D.context_rhythm(x, FS)
    assert list(peaks[0]) == [30, 270]
    assert period[0] == 240 and np.isnan(spread[0])


def test_rr_spread_is_the_sd_of_the_intervals():
    """The RR SD is the (population) SD of the RR intervals themselves: 90, 110, 90 give 9.43 samples."""
    x = two_leads(spike_train(C, [20, 110, 220, 310]))
    peaks, period, spread = D.context_rhythm(x, FS)
    assert list(peaks[0]) == [20, 110, 220, 310] and period[0] == 90
    assert spread[0] == pytest.approx(np.sqrt(((90 - 290 / 3) ** 2 * 2 + (110 - 290 / 3) ** 2) / 3))


def test_rr_spread_leaves_out_a_premature_beat_and_its_pause():
    """A premature beat (an interval under 80% of the median) and the pause after it are left out of the RR SD
    when two intervals remain; when fewer remain, all of them count."""
    assert D.rhythm_spread(np.array([80, 82, 60, 100, 78])) == pytest.approx(np.std([80, 82, 78]))
    assert D.rhythm_spread(np.array([80, 82, 65, 100, 78])) == pytest.approx(np.std([80, 82, 65, 100, 78]))
    assert D.rhythm_spread(np.array([101, 76, 58])) == pytest.approx(np.std([101, 76]))
    assert D.rhythm_spread(np.array([80, 55, 105])) == pytest.approx(np.std([80, 55, 105]))
    x = two_leads(spike_train(C, [10, 90, 172, 232, 332]))
    peaks, period, spread = D.context_rhythm(x, FS)
    assert list(peaks[0]) == [10, 90, 172, 232, 332] and period[0] == 81
    assert spread[0] == pytest.approx(1.0)


def test_period_is_never_below_the_shortest_plausible_one():
    """R peaks 28 samples apart (274 bpm, which the 200 ms refractory detector still finds) give the shortest
    plausible period, 0.25 s, not 28 samples."""
    x = two_leads(spike_train(C, range(10, 380, 28)))
    peaks, period, _ = D.context_rhythm(x, FS)
    assert np.all(np.diff(peaks[0]) == 28)
    assert period[0] == D.shortest_period(FS) == 32


def test_a_beat_ending_on_the_contexts_last_sample_is_whole():
    """A beat cut from TEMPLATE_PRE of a period before its R peak to the context's last sample lies inside it."""
    length, p = 200, 60
    pre = D.template_pre(p)
    r = np.array([length - p + pre, length - p + pre + 1])               # ends on sample 199; one sample past
    idx, ok = D.beat_cuts(r, p, length)
    assert idx[0, -1] == length - 1 and ok[0].all() and not ok[1].all()
    x = np.random.default_rng(0).standard_normal((length, 2))
    np.testing.assert_array_equal(D.whole_beats(x, r[:1], p), x[None, length - p:])
    assert len(D.whole_beats(x, r[1:], p)) == 0


def test_a_bigeminal_contexts_beats_hold_one_qrs_each():
    """Long and short intervals in turn (bigeminy): the beat before a premature one ends where that one's cut
    begins, so every drafted beat lays one QRS and the paths beat at the context's rate, not twice it (MIT-BIH
    119 at 60 s forecast 130 bpm from a context of 65)."""
    x = two_leads(spike_train(C, [20, 180, 250]))                        # RR 160, 70: median 115
    peaks, period, _ = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    assert list(r) == [20, 180, 250] and list(D.own_columns(r, p)) == [p, 70, p]
    one_qrs = lambda lead, h: len(scipy.signal.find_peaks(lead, height=h)[0]) == 1
    shapes = D.whole_beats(x[0], r, p)
    assert len(shapes) == 2 and all(one_qrs(s[:, 0], 0.6) for s in shapes)
    assert np.all(shapes[0, 70:] == shapes[0, 69])                      # held past its own columns
    assert one_qrs(D.mean_beat(x[0], r, p)[:, 0], 0.1)
    waves, _ = D.draft_waves(x, 3 * H, FS, 20, seed=0)
    beats = [len(scipy.signal.find_peaks(w[:, 0], height=0.6, distance=D.shortest_period(FS))[0]) for w in waves]
    assert 8 <= np.median(beats) <= 12                                   # 9 s at a period of 115 samples: 10


def test_a_beat_keeps_its_whole_cut_unless_the_next_r_peak_lies_in_it():
    """A cut of period 100 starts 33 samples before its R peak, so it holds the next R peak only when that comes
    under 67 samples later: an interval of 66 ends the beat there, one of 67 leaves it whole."""
    assert D.template_pre(100) == 33
    assert list(D.own_columns(np.array([0, 66, 133, 233]), 100)) == [66, 100, 100, 100]


def test_only_an_interval_under_80_percent_of_the_median_is_premature():
    """PREMATURE is a strict bound: an interval of exactly 0.8 of the median is no premature beat, and it and the
    next interval stay in the RR SD."""
    rr = np.array([100, 100, 80, 100, 100])
    assert D.rhythm_spread(rr) == pytest.approx(np.std(rr))
    assert D.rhythm_spread(np.array([100, 100, 79, 100, 100])) == 0.0


def test_drawn_beat_times_reach_past_until_at_the_shortest_period():
    """Beat times run past `until` however short the intervals: at the shortest period with no spread, the
    last of them is the first multiple of it past `until`."""
    t = D.draw_beat_times(0, 32, np.nan, 0.0, 3, 320, FS, np.random.default_rng(0))
    np.testing.assert_array_equal(t, np.tile(32 * np.arange(12), (3, 1)))


def test_drawn_intervals_are_never_shorter_than_the_shortest_period():
    """A fast, irregular rhythm (period 40, RR SD 20) still draws no interval below the shortest plausible one."""
    t = D.draw_beat_times(0, 40, 20.0, 0.05, 2000, 400, FS, np.random.default_rng(0))
    rr = np.diff(t, axis=1)
    assert rr.min() == D.shortest_period(FS)                             # clipped there, and often
    assert np.mean(rr == D.shortest_period(FS)) > 0.2


def test_drawn_beat_times_are_rounded_not_floored():
    """A path's k-th beat is on average k periods after the last R peak: times are rounded to the nearest
    sample, so they carry no half-sample lag."""
    t = D.draw_beat_times(50, 100, 0.3, 0.0, 4000, 500, FS, np.random.default_rng(0))
    np.testing.assert_allclose(t[:, 1:5].mean(axis=0), 50 + 100 * np.arange(1, 5), atol=0.1)


def test_first_interval_tail_begins_half_a_sample_past_the_grid():
    """The tail is the prior truncated at the grid's edge (half a sample past its last interval): none of the
    prior's mass is lost between them, so about 9.5 % of tail draws fall in [99.5, 100.5)."""
    later = np.full(21, -1e4)
    later[-1] = 0.0
    tail = D.draw_first_interval(100.0, 8.0, 80, later, 4000, np.random.default_rng(0))
    assert tail.min() >= 99.5
    assert 0.08 < np.mean(tail < 100.5) < 0.11


def test_evidence_removes_each_leads_own_baseline():
    """Baseline drift differs between leads: opposite steps on the two leads over the last EVIDENCE_S seconds
    leave the best candidate interval where it was and the next R peak pinned by the P wave begun."""
    x, next_r = p_wave_ecg(6)
    shifted = x.copy()
    shifted[0, C - round(D.EVIDENCE_S * FS):] += np.float32([0.3, -0.3])
    out = []
    for ctx in (x, shifted):
        peaks, period, spread = D.context_rhythm(ctx, FS)
        r, p = peaks[0], int(period[0])
        ev = D.next_beat_evidence(ctx[0], D.mean_beat(ctx[0], r, p), D.template_pre(p), r, FS)
        first = D.draw_beat_times(int(r[-1]), p, spread[0], 0.05, 2000, 2 * C, FS, np.random.default_rng(0), ev)
        out.append((ev, first[:, 1]))
    assert np.argmax(out[1][0]) == np.argmax(out[0][0])
    assert abs(np.median(out[1][1]) - next_r) <= 1 and out[1][1].std() < 1.5


def test_evidence_is_tempered_by_evidence_temper(monkeypatch):
    """Neighbouring samples are not independent: the log-likelihoods are divided by EVIDENCE_TEMPER."""
    x, _ = p_wave_ecg(20)
    x = x + np.random.default_rng(0).normal(0, 0.02, x.shape).astype(np.float32)      # a noise to measure
    peaks, period, _ = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    template, pre = D.mean_beat(x[0], r, p), D.template_pre(p)
    tempered = D.next_beat_evidence(x[0], template, pre, r, FS)
    monkeypatch.setattr(D, "EVIDENCE_TEMPER", 1.0)
    plain = D.next_beat_evidence(x[0], template, pre, r, FS)
    assert np.ptp(plain) > 1
    np.testing.assert_allclose(tempered, plain / 2.0, rtol=1e-6)


def test_evidence_is_the_gaussian_log_likelihood_of_the_residuals(monkeypatch):
    """Untempered, a candidate's evidence is −Σres² / (2σ²): the residual of the context's end against the template
    laid at the last and the candidate R peak (each lead's mean removed), σ² the template's mean square misfit over
    the whole context. Without the 2 the posterior of the next beat was as if its noise had half its variance."""
    x, _ = p_wave_ecg(20)
    x = (x + np.random.default_rng(0).normal(0, 0.02, x.shape).astype(np.float32))[0].astype(np.float64)
    peaks, period, _ = D.context_rhythm(x[None], FS)
    r, p = peaks[0], int(period[0])
    template, pre = D.mean_beat(x, r, p), D.template_pre(p)
    monkeypatch.setattr(D, "EVIDENCE_TEMPER", 1.0)
    ev = D.next_beat_evidence(x, template, pre, r, FS)
    start, last = C - round(D.EVIDENCE_S * FS), int(r[-1])
    sigma2 = np.mean((x - D.beat_train(template, pre, r, 0, C)) ** 2)
    for k in (0, 5, len(ev) - 2):
        res = x[start:] - D.beat_train(template, pre, np.array([last, last + D.shortest_period(FS) + k]), start,
                                       C - start)
        res -= res.mean(axis=0)
        assert ev[k] == pytest.approx(-np.sum(res ** 2) / (2 * sigma2), rel=1e-6)


def test_noise_level_is_measured_per_lead():
    """A context noisy in one lead only gets noise in that lead only."""
    x = periodic_ecg(1)[:, :C].astype(np.float64)
    x[0, :, 1] += 0.05 * np.random.default_rng(0).standard_normal(C)
    sd = D.residual_sd(x, FS)[0]
    assert sd[0] < 1e-5 and 0.04 < sd[1] < 0.06


def test_noise_level_counts_the_first_beat_from_its_onset():
    """The first beat counts from its onset, P wave and all, like every other: the same departure before an R
    peak gives the same noise level in the first beat as in the third."""
    r = 40 + PERIOD * np.arange(4)                                       # onsets 7, 107, 207, 307 (pre 33)
    lead = spike_train(C, r)
    sds = []
    for beat in (0, 2):
        x = two_leads(lead)
        x[0, r[beat] - 33:r[beat] - 3, 1] += 0.2                         # lead 2 only: the detector reads lead 1
        peaks, period, _ = D.context_rhythm(x, FS)
        assert list(peaks[0]) == list(r) and period[0] == PERIOD
        sds.append(D.residual_sd(x, FS)[0, 1])
    assert sds[0] > 0.04
    assert sds[0] == pytest.approx(sds[1], rel=1e-9)


def test_training_drops_reference_beats_up_to_the_shortest_period_after_the_last_peak():
    """A reference beat up to MIN_PERIOD_S after the context's last R peak is that peak, however far within it."""
    x = periodic_ecg(1)[:, :C].astype(np.float64)
    peaks, period, _ = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    later = r[-1] + p * np.arange(1, 5)
    plain, _ = D.draft_waves(x, H, FS, beats=[later])
    for gap in (1, D.shortest_period(FS) // 2, D.shortest_period(FS) - 1):
        doubled, _ = D.draft_waves(x, H, FS, beats=[np.r_[r[-1] + gap, later]])
        np.testing.assert_array_equal(doubled, plain)


def test_training_draft_continues_the_contexts_last_beat():
    """Before the first reference beat a training draft carries on the mean beat laid at the context's last R
    peak, phase for phase, not a held sample."""
    x = periodic_ecg(1)[:, :C].astype(np.float64)
    peaks, period, _ = D.context_rhythm(x, FS)
    r, p = peaks[0], int(period[0])
    onset = r[-1] - D.template_pre(p)
    assert onset < C < onset + p                                         # the last beat runs into the horizon
    trained, _ = D.draft_waves(x, H, FS, beats=[r[-1] + p * np.arange(1, 5)])
    np.testing.assert_allclose(trained[0, :onset + p - C], D.mean_beat(x[0], r, p)[C - onset:], atol=1e-12)


def test_hold_to_band_is_the_datas_high_pass_with_a_mirrored_second():
    """The hold is the zero-phase Butterworth high-pass of [0 over the context, departure], padded at each end
    by one second mirrored (EXPERIMENTS.md, session 18)."""
    departure = np.cumsum(np.random.default_rng(2).standard_normal((2, 4 * FS, 2)), axis=1) * 0.01
    sos = scipy.signal.butter(2, 0.5, btype="highpass", fs=FS, output="sos")
    full = np.concatenate([np.zeros((2, C, 2)), departure], 1)
    want = scipy.signal.sosfiltfilt(sos, full, axis=1, padtype="even", padlen=FS)[:, C:]
    np.testing.assert_allclose(D.hold_to_band(departure, C, 0.5, 2, FS), want, rtol=0, atol=1e-12)


def test_a_context_ending_on_a_rising_r_wave_has_its_peak_forecast():
    """The detector puts a beat whose R wave still rises at the context's end on its last sample: the drafts took it
    for a beat gone by, and every path missed the peak one sample on. The drafts leave it to next_beat_evidence,
    which times it from the context's end; the mean-beat template, with no such evidence, keeps it (one sample
    early), which its validation error preferred."""
    from baselines import make_baseline

    x = periodic_ecg(1, length=2000)[0]
    end = 1500 + 35                                  # R peaks at 35.4 samples into each 100: one sample to go
    ctx, truth = x[None, end - C:end], x[end:end + 8, 0]
    assert D.context_rhythm(ctx, FS)[0][0][-1] == C - 1
    paths = make_baseline("template_ensemble", FS).predict(ctx, 8, 20, 0)[0, :, :, 0]
    assert truth[:2].max() > 1.1 and np.abs(paths.mean(0)[:2] - truth[:2]).max() < 0.15
    template = make_baseline("template", FS).predict(ctx, 8, 1, 0)[0, 0, :, 0]      # no evidence: the beat kept
    np.testing.assert_allclose(template[:3], truth[1:4], atol=0.05)


def test_draft_beat_times_time_a_beat_the_contexts_end_cuts_from_the_end():
    """bench/rhythm_bound.py scores the drafts' timing through draft_beat_times, so it must drop the cut beat as
    drawn_drafts does: taken for a beat gone by, it would put every path's next beat a whole period late."""
    x = periodic_ecg(1, length=2000)[0]
    ctx = x[1535 - C:1535]                           # an R peak at 35.4 samples into each 100: one sample to go
    peaks, period, spread = D.context_rhythm(ctx[None], FS)
    assert peaks[0][-1] == C - 1
    t = D.draft_beat_times(ctx, peaks[0], int(period[0]), spread[0], 0.05, 50, C + 8, FS, np.random.default_rng(0))
    assert abs(np.median(t[:, 1]) - C) <= 2
