"""Baselines: interface, shapes, and exact answers on signals whose future is known."""
from __future__ import annotations

import re

import numpy as np
import pytest

import baselines as B
import drafts as D
import metrics as M
import paths
from conftest import periodic_ecg, spike_train, synthetic_ecg, two_leads
from evaluate import make_forecaster
from paths import UserError

FS, C, H = 128, 384, 384
PERIOD = 100


@pytest.mark.parametrize("name", list(B.BASELINES))
def test_every_baseline_follows_the_interface(name):
    f = make_forecaster(name, FS)
    x = periodic_ecg(4)
    out = f.predict(x[:, :C], H, num_samples=7, seed=1)
    s = 1 if f.deterministic else 7
    assert out.shape == (4, s, H, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    assert f.name == name and f.fs == FS
    assert repr(f) == f"{type(f).__name__}(name='{name}', fs={FS})"
    np.testing.assert_array_equal(out, f.predict(x[:, :C], H, num_samples=7, seed=1))   # seeded


@pytest.mark.parametrize("name", list(B.BASELINES))
@pytest.mark.parametrize("c", [1, 8, 34, 40])
@pytest.mark.filterwarnings("ignore:the context has .* flat lead")     # 1 or 8 samples before the first beat are flat
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
    _, period, _ = D.context_rhythm(x[:, :C], FS)
    assert list(period) == [PERIOD] * 3
    assert list(D.autocorr_period(x[:, :C], FS)) == [PERIOD] * 3
    for f in (B.SeasonalNaive(FS), B.Analog(FS), B.MeanBeatTemplate(FS)):
        out = f.predict(x[:, :C], H)[:, 0]
        assert np.abs(out - x[:, C:]).max() < 1e-5, f.name


def test_analog_takes_the_latest_rhythm_where_the_median_rr_takes_the_usual_one():
    """Beats 120 samples apart, then 90: seasonal naive repeats the median RR (120); the analog method matches the
    last 0.5 s one beat back (90), the smallest lag on a tie, so the next beat comes 90 samples after the last."""
    x = two_leads(spike_train(C, [10, 130, 250, 340])).astype(np.float32)
    assert list(D.context_rhythm(x, FS)[1]) == [120]
    assert list(B.analog_lags(x, 64, D.shortest_period(FS))) == [90]
    out = B.Analog(FS).predict(x, H)[0, 0, :, 0]
    assert C + np.argmax(out[:100]) == 430
    longer = np.tile(x, (1, 3, 1))          # lags 90 and 90 + 384 match alike: the smallest wins
    assert list(B.analog_lags(longer, 64, 32)) == [90]


def test_analog_repeats_a_context_too_short_to_search():
    x = periodic_ecg(2)[:, :90]             # 90 - 64 samples: under the shortest period of 32
    np.testing.assert_array_equal(B.Analog(FS).predict(x, 200)[:, 0], np.concatenate([x, x, x[:, :20]], 1))


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
    _, period, sd = D.context_rhythm(x[:, :C], FS)
    assert np.all(sd == 0)
    irregular = B.SeasonalEnsemble(FS)
    irregular.min_spread = 0.2
    wide = irregular.predict(x[:, :C], H, num_samples=200, seed=0).std(axis=1).mean()
    assert wide > out.std(axis=1).mean()


def test_template_ensemble_is_the_template_at_drawn_periods():
    """Without spread it is the template; with it, its paths are the beat drafts the forecasters start from."""
    x = periodic_ecg(3)
    f = B.TemplateEnsemble(FS)
    f.jitter = 0.0
    sharp = f.predict(x[:, :C], H, num_samples=4)
    assert np.abs(sharp - x[:, None, C:]).max() < 1e-5
    f.jitter = 0.05
    out = f.predict(x[:, :C], H, num_samples=50, seed=2)
    for b in range(len(x)):                                     # each context drafted alone, with the call's seed
        waves, index = D.draft_waves(x[b:b + 1, :C], H, FS, 50, 2, jitter=0.05)
        np.testing.assert_allclose(out[b], waves[index], atol=1e-6)
    spread = out.std(axis=1).mean(axis=(0, 2))
    assert spread[:20].mean() < spread[-100:].mean()


def test_make_forecaster_rejects_a_missing_checkpoint(tmp_path):
    """Named with the flag and what --model takes (any error naming nope.pt passed, load_checkpoint's bare 'checkpoint
    not found' too)."""
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(UserError, match=f"^--model {re.escape(missing)}: no such checkpoint file; --model takes a "
                                        r"checkpoint path \(e\.g\. "):
        make_forecaster(missing, FS)


def test_an_unknown_model_is_told_every_name_evaluate_takes():
    """--model says it takes pretrained_sde, and every other form (a shipped model's Python name, latent_sde, is
    told its command-line name: test_bad_requests)."""
    with pytest.raises(UserError) as e:
        make_forecaster("latent", FS)
    for name in ("--model latent", "checkpoint path", "pretrained, pretrained_sde", *B.BASELINES, "baselines)",
                 "FILE.py:NAME"):
        assert name in str(e.value)


class MovingMean(B.Zero):
    """A baseline of one's own: each lead's mean over the context's last second."""

    name = "moving_mean"

    def predict(self, context, horizon, num_samples=100, seed=0):
        x = B.as_context(context, horizon, num_samples, seed)
        return np.repeat(x[:, -self.fs:].mean(1, keepdims=True)[:, None], horizon, axis=2)


def test_a_baseline_added_to_baselines_is_taken_by_name_everywhere(monkeypatch, capsys):
    """A class put in BASELINES is all a new baseline needs (README, Baselines): evaluate.py --model and its
    `baselines`, forecast.py --checkpoint, and every list of names said to the user take it. evaluate.py's
    description listed the baselines by hand, so a new one was missing there (and a test pinned that list)."""
    import evaluate
    import forecast
    monkeypatch.setitem(B.BASELINES, "moving_mean", MovingMean)
    assert isinstance(make_forecaster("moving_mean", FS), MovingMean)
    assert evaluate.expand_models(["baselines"])[-1] == "moving_mean"
    label, f = forecast.load_forecaster("moving_mean", "cpu")
    assert label == "moving_mean" and isinstance(f, MovingMean)
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert usage.count("moving_mean") == usage.count("template_ensemble") > 0, usage


def test_the_report_names_a_baseline_without_a_docstring(monkeypatch):
    """The report's Baselines section quotes each baseline's docstring; one of one's own without any is named by its
    class (its None raised AttributeError once every window was scored)."""
    import eval_report

    class Bare(B.Zero):
        name = "bare"

    monkeypatch.setitem(B.BASELINES, "bare", Bare)
    lines = eval_report.baselines_section(["zero", "bare"])
    assert lines[2] == f"- zero: {' '.join(B.Zero.__doc__.split())}" and lines[3] == "- bare: Bare (no docstring)"


def test_a_missing_shipped_model_says_how_to_make_it(tmp_path, monkeypatch):
    """--model pretrained_sde whose file is gone: the make target that builds it, or --model CHECKPOINT."""
    monkeypatch.setitem(paths.SHIPPED, "latent_sde", tmp_path / "latent_sde.pt")
    with pytest.raises(UserError, match=r"no shipped model at .*latent_sde.pt: run `make pretrained-sde` or pass "
                                        r"--model CHECKPOINT$"):
        make_forecaster("pretrained_sde", FS)


def test_draw_periods_centre_on_the_period_with_its_spread():
    period, spread = np.array([100.0, 100.0]), np.array([np.nan, 20.0])
    p = B.draw_periods(period, spread, 0.05, 4000, 0, FS, C)
    assert p.shape == (2, 4000) and p.dtype == np.int64
    assert abs(p.mean() - 100) < 1.5
    assert 4 < p[0].std() < 6 and 18 < p[1].std() < 22                # at least 5 % of the period; else the RR SD
    assert np.array_equal(p, B.draw_periods(period, spread, 0.05, 4000, 0, FS, C))
    assert p.min() >= round(D.MIN_PERIOD_S * FS) and p.max() <= C


def test_an_unknown_baseline_names_the_ones_there_are():
    with pytest.raises(ValueError, match="no baseline 'nope'; there are zero, "):
        B.make_baseline("nope", 128)


def test_template_ensemble_adds_the_contexts_noise():
    x = periodic_ecg(3, noise=0.05, seed=1)[:, :C]
    f = B.TemplateEnsemble(FS)
    out = f.predict(x, H, num_samples=40, seed=2)
    for b in range(len(x)):
        waves, index = D.draft_waves(x[b:b + 1], H, FS, 40, 2, jitter=f.jitter)
        added = out[b] - waves[index]
        np.testing.assert_allclose(added.std(axis=(0, 1)), f.noise * D.residual_sd(x[b:b + 1], FS)[0], rtol=0.1)


def test_a_baseline_is_made_at_the_rate_asked():
    """evaluate.py makes the baselines at the data's rate (64 Hz in the tiny configs), which sets the beat periods they
    read: a baseline made for 64 Hz continues a 64 Hz rhythm exactly."""
    for name in B.BASELINES:
        assert B.make_baseline(name, 64).fs == 64, name
    x = periodic_ecg(2, period=50, fs=64, length=384)
    out = B.make_baseline("seasonal", 64).predict(x[:, :192], 192)[:, 0]
    assert np.abs(out - x[:, 192:]).max() < 1e-5


@pytest.mark.parametrize("fs", [0, -128, float("nan"), "128", None])
def test_a_baseline_at_no_rate_is_refused_by_name(fs):
    """make_baseline("seasonal", 0) was made, and its predict stopped in scipy's 'Wn[0] must be less than Wn[1]'
    (a string or None in a TypeError of numpy's)."""
    with pytest.raises(ValueError, match="fs must be the contexts' sampling rate in Hz, a positive number"):
        B.make_baseline("seasonal", fs)


def test_ensemble_periods_spread_with_the_contexts_rr_variability():
    """An irregular rhythm (RR 80 to 100 samples, SD 8.3, above the 5 % floor of 4.25) spreads the ensemble's
    periods by its own RR SD, not by the floor alone."""
    x = two_leads(spike_train(C, [20, 100, 200, 280, 370])).astype(np.float32)   # as evaluate.py passes contexts
    _, period, spread = D.context_rhythm(x, FS)
    assert spread[0] > 1.5 * B.SeasonalEnsemble.min_spread * period[0]
    out = B.SeasonalEnsemble(FS).predict(x, H, num_samples=50, seed=3)
    want = D.repeat_last(x, B.draw_periods(period, spread, B.SeasonalEnsemble.min_spread, 50, 3, FS, C), H)
    np.testing.assert_array_equal(out, want)


def test_template_averages_a_context_of_two_beats():
    """Two detected beats are enough for the mean beat (fewer fall back to the seasonal naive forecast): it halves
    the noise a copy of the last period carries."""
    x, clean = periodic_ecg(1, noise=0.05, seed=1)[:, :200], periodic_ecg(1)[0, 200:300]
    assert len(D.context_rhythm(x, FS)[0][0]) == 2
    template = B.MeanBeatTemplate(FS).predict(x, 100)[0, 0]
    seasonal = B.SeasonalNaive(FS).predict(x, 100)[0, 0]
    assert np.mean((template - clean) ** 2) < 0.7 * np.mean((seasonal - clean) ** 2)


@pytest.mark.parametrize("level", [0.0, 0.3, -1.0])
@pytest.mark.filterwarnings("ignore:the context has .* flat lead")
def test_a_flat_first_lead_has_no_beats_whatever_its_level(level):
    """Lead 1 off (flat) and lead 2 beating every 100 samples: the period comes from the autocorrelation of both
    leads, so the seasonal forecast continues lead 2 exactly. Flat at 0.3 mV, the detector once read the filter's
    rounding dust (1e-16 mV/s) as 13 beats and repeated the last 32 samples: 1.2 mV off at lead 2's beats."""
    lead2 = spike_train(C + H, range(20, C + H + PERIOD, PERIOD))
    x = np.stack([np.full(C + H, level), lead2], 1)[None].astype(np.float32)
    peaks, period, _ = D.context_rhythm(x[:, :C], FS)
    assert len(peaks[0]) == 0 and period[0] == PERIOD
    out = B.SeasonalNaive(FS).predict(x[:, :C], H)[0, 0]
    assert np.abs(out - x[0, C:]).max() < 1e-5


def test_a_batch_of_two_sample_contexts_is_no_two_lead_signal():
    """detect_r_peaks refuses a two-lead signal [T, 2], and the lead 1 of 32 or more contexts of two samples has that
    shape: seasonal and template stopped in its 'x must be single-lead rows' where 31 contexts forecast. The rhythm
    sums of windows of two samples alike."""
    x = 0.01 * np.random.default_rng(0).standard_normal((40, 2, 2)).astype(np.float32)
    for name, cls in B.BASELINES.items():
        assert cls(128).predict(x, 10, num_samples=4).shape[:3:2] == (40, 10), name
    sums = M.rhythm_sums(x[:, :1, 0], x[:, 1:, 0], np.zeros(0, np.int64), np.zeros(0, np.int64), 128,
                         M.segment_edges(1, 128), np.ones(40, bool))
    assert all(v.shape[0] == 40 for v in sums.values())


def test_drawn_periods_are_rounded_to_the_nearest_sample_not_floored():
    """Periods are whole samples rounded from the normal draw: floored, every path's beats came half a sample early
    per beat on average."""
    p = B.draw_periods(np.array([100.0]), np.array([3.0]), 0.0, 20000, 0, FS, C)
    assert p.mean() == pytest.approx(100.0, abs=0.1)             # floored: 99.5


def test_analog_matches_the_contexts_end_on_both_leads():
    """The analog lag is the least squares match over both leads: here lead 1's end repeats the stretch 100 samples
    back and lead 2's, ten times larger, the one 150 back; both leads together pick 150."""
    x = np.random.default_rng(0).normal(size=(1, C, 2))
    x[..., 1] *= 10
    length = 64
    x[0, C - length:, 0] = x[0, C - length - 100:C - 100, 0]
    x[0, C - length:, 1] = x[0, C - length - 150:C - 150, 1]
    assert list(B.analog_lags(x, length, D.shortest_period(FS))) == [150]


def test_drawn_periods_are_never_below_the_shortest_plausible_one():
    """A fast, irregular rhythm draws periods under 0.25 s: they are held there, as the detected period is."""
    p = B.draw_periods(np.array([40.0]), np.array([20.0]), 0.05, 1000, 0, FS, C)
    assert p.min() == D.shortest_period(FS) and (p == D.shortest_period(FS)).sum() > 100
