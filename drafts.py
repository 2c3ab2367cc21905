"""Beat drafts: what a context shows of its heartbeat, carried into the future.

A context's R peaks and rhythm, its mean beat and its whole beats, beat times drawn from that rhythm
(reading the context's end for the next beat), beats laid at those times, and noise as large as the
context's own departure from its mean beat. The Transformer and the latent SDE start from these drafts,
and the template-ensemble baseline is the drafts alone (EXPERIMENTS.md has how each piece was chosen).
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.signal
import scipy.stats

from metrics import per_row, row_r_peaks

MIN_PERIOD_S, MAX_PERIOD_S = 0.25, 2.5   # 240 and 24 bpm: the plausible beat periods
TEMPLATE_PRE = 1 / 3                     # fraction of the beat period before the R peak
EVIDENCE_S, EVIDENCE_TEMPER = 0.3, 2.0   # the context's end that times its next beat (next_beat_evidence)
NOISE_SCALE = 0.2                        # of residual_sd: the template ensemble's noise on each drafted path
PREMATURE = 0.8                          # of the median RR: a shorter interval ends a premature beat (rhythm_spread)

VERSION = 2    # of how drafts are made, in the cache keys of drafted encodings: 2 since own_columns (session 34)

Rhythm = tuple[list[np.ndarray], np.ndarray, np.ndarray]   # context_rhythm's (R peaks, period, RR SD)


def shortest_period(fs: float) -> int:
    """The shortest plausible beat period in samples (MIN_PERIOD_S), at least one."""
    return max(1, round(MIN_PERIOD_S * fs))


def template_pre(period: int) -> int:
    """Samples of a beat template before its R peak (TEMPLATE_PRE of the period): where its P wave begins."""
    return int(round(TEMPLATE_PRE * period))


def autocorr_period(x: np.ndarray, fs: float) -> np.ndarray:
    """Beat period (samples) of contexts [B, C, 2] from the autocorrelation summed over both leads.

    The unbiased autocorrelation is searched from 0.25 s to 2.5 s (leaving at least 0.5 s of
    overlap); the first local maximum reaching 80 % of the best one wins, not a multiple of the period.
    At long lags the overlap is short, and one QRS in it can still lift a multiple above that bar (a
    150-sample period read as 300 in 3 s): context_rhythm uses it only when under two R peaks are found.
    """
    b, c, _ = x.shape
    lo = shortest_period(fs)
    if c < lo + 3:       # shorter than the shortest beat period: the whole context is the period
        return np.full(b, c, np.int64)
    z = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(z, n=2 * c, axis=1)
    acf = np.fft.irfft(f * np.conj(f), axis=1)[:, :c].sum(-1) / (c - np.arange(c))
    hi = max(lo + 3, min(round(MAX_PERIOD_S * fs), c - round(fs / 2)))
    seg = acf[:, lo:hi]
    best = seg.max(axis=1, keepdims=True)
    local = np.zeros_like(seg, bool)
    local[:, 1:-1] = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] >= seg[:, 2:])
    good = local & (seg >= 0.8 * best) & (best > 0)
    first = np.where(good.any(axis=1), np.argmax(good, axis=1), np.argmax(seg, axis=1))
    return (lo + first).astype(np.int64)


def detected_beats(signals: np.ndarray, fs: float) -> list[np.ndarray]:
    """R peaks detected in lead 1 of each window [N, T, 2], one array per window: a context's rhythm,
    and over a whole window (context and future) the beat times a training draft is laid at, so a
    model learns to render beats where it is told they are."""
    return per_row(*row_r_peaks(signals[:, :, 0], fs), len(signals))


def context_rhythm(x: np.ndarray, fs: float) -> Rhythm:
    """(R peaks of each context's lead 1, beat period in samples, RR standard deviation in samples).

    The period is the median RR interval of the detected R peaks when there are at least two,
    else the autocorrelation period (`autocorr_period`); the RR spread (`rhythm_spread`) is NaN with fewer
    than three. With one R peak that period may be shorter than the beat-free stretch the context shows around
    it; searching only above that stretch was not better on the training and validation patients: in 12 of
    their 13 such contexts the detector had missed a beat, and seasonal naive's MSE rose 9 % (F1 +0.03).
    """
    with np.errstate(under="ignore"):   # a tiny product is 0: under np.seterr(all='raise') forecasts stopped here
        peaks = detected_beats(x, fs)
        period = autocorr_period(x, fs)
    spread = np.full(len(x), np.nan)
    for i, p in enumerate(peaks):
        rr = np.diff(p)
        if len(rr) >= 1:
            period[i] = int(round(np.median(rr)))
        if len(rr) >= 2:
            spread[i] = rhythm_spread(rr)
    period = np.clip(period, shortest_period(fs), x.shape[1])
    return peaks, period, spread


def unfinished_beat_dropped(peaks: np.ndarray, c: int) -> np.ndarray:
    """A context's R peaks less one at its last sample, for drawn_drafts: the detector puts there a beat whose R
    wave still rises when the context ends, and the drafts took it for a beat gone by, so every path missed its
    peak. Left to next_beat_evidence, which times it from the context's end, the template ensemble's first 0.1 s
    MSE of such contexts of the validation patients (4.4 % of theirs) fell from 0.20 to 0.02 mV². Rules without
    that evidence (seasonal naive, the mean-beat template, the seasonal ensemble) time it better kept, and the
    period and spread keep its interval (EXPERIMENTS.md, session 60)."""
    return peaks[:-1] if len(peaks) > 2 and peaks[-1] == c - 1 else peaks


def rhythm_spread(rr: np.ndarray) -> float:
    """The SD of the RR intervals `rr` that do not end a premature beat (under PREMATURE of their median) or
    follow one (its pause), when two remain, else of them all. An ectopic beat and its pause say little of how
    the rhythm itself varies, and a wide spread lets one long first interval set a path's whole rhythm
    (`draw_beat_times`): leaving them out raised F1 at the same CRPS on the validation patients
    (EXPERIMENTS.md, session 30)."""
    early = rr < PREMATURE * np.median(rr)
    normal = rr[~(early | np.r_[False, early[:-1]])]
    return float(np.std(normal if len(normal) >= 2 else rr))


def repeat_last(x: np.ndarray, period: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last period[i] samples of each context [B, C, 2] (period may be [B] or [B, S])."""
    b, c = x.shape[:2]
    p = period.reshape(b, -1).astype(np.int32)                    # [B, S]
    start = (np.arange(b, dtype=np.int32) * c + c)[:, None, None] - p[:, :, None]
    idx = start + np.arange(horizon, dtype=np.int32) % p[:, :, None]   # [B, S, H] into x as [B*C]
    return x.reshape(b * c, 2)[idx]                               # [B, S, H, 2]


def beat_cuts(peaks: np.ndarray, period: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices [K, period] of one period around each R peak, starting TEMPLATE_PRE of a period
    before it, and which of them fall inside a context of `length` samples: how every beat is cut."""
    idx = peaks[:, None] - template_pre(period) + np.arange(period)
    return idx, (idx >= 0) & (idx < length)


def own_columns(peaks: np.ndarray, period: int) -> np.ndarray:
    """How many columns of each beat's cut [K] are its own: all of them, unless the next R peak lies in the cut
    (a premature beat after it, as in bigeminy), then those before the next beat's cut begins. Whole, such a
    cut laid two QRS complexes at every drawn beat time, and a mean beat holding a third of the next QRS made
    the context's end read as a beat already due."""
    rr = np.r_[np.diff(peaks), period]
    return np.where(rr < period - template_pre(period), rr, period)


def mean_beat(x: np.ndarray, peaks: np.ndarray, period: int) -> np.ndarray:
    """The average beat [period, 2] of one context [C, 2] (`beat_cuts`); samples outside the context or of the
    next beat (`own_columns`) are left out of the average."""
    idx, ok = beat_cuts(peaks, period, len(x))
    ok &= np.arange(period) < own_columns(peaks, period)[:, None]
    beats = np.where(ok[:, :, None], x[np.clip(idx, 0, len(x) - 1)], 0.0)
    return beats.sum(0) / np.maximum(ok.sum(0), 1)[:, None]


def whole_beats(x: np.ndarray, peaks: np.ndarray, period: int) -> np.ndarray:
    """The beats [K, period, 2] of one context [C, 2] that lie wholly inside it, cut as `mean_beat` cuts them;
    one that ends early (`own_columns`) holds its last own sample."""
    idx, ok = beat_cuts(peaks, period, len(x))
    idx = np.minimum(idx, (idx[:, 0] + own_columns(peaks, period) - 1)[:, None])
    return x[idx[ok.all(axis=1)]]


def draw_beat_times(last: int, period: int, spread: float, jitter: float, num_samples: int, until: int,
                    fs: float, rng: np.random.Generator,
                    evidence: np.ndarray | None = None) -> np.ndarray:
    """Beat times [S, K] from the context's last R peak `last` on, past sample `until`, one row per sample.

    Each path keeps a rhythm of its own, normal around the median RR `period` with the context's RR SD
    `spread` (NaN: none), and each of its intervals adds a fresh jitter of SD `jitter` of the period, so
    its timing error grows beat by beat as a heart's does. Against one drawn period per path (the
    seasonal ensemble's, whose k-th beat errs k times as much as its first) this places the near beats
    better at the same CRPS (EXPERIMENTS.md, session 12). The first interval is drawn first, from its
    posterior given `evidence` (`next_beat_evidence`) when there is some, and the path's rhythm given it."""
    shortest = shortest_period(fs)
    k = (until - last) // shortest + 1
    sd2, j2 = np.nan_to_num(spread, nan=0.0) ** 2, (jitter * period) ** 2
    sd = np.sqrt(sd2 + j2)                        # of the first interval: rhythm and jitter together
    if evidence is None or sd == 0:
        first = period + sd * rng.standard_normal(num_samples)
    else:
        first = draw_first_interval(period, sd, shortest, evidence, num_samples, rng)
    share = sd2 / sd ** 2 if sd > 0 else 0.0      # of the first interval's deviation that is the rhythm's
    level = period + share * (first - period) + np.sqrt(share * j2) * rng.standard_normal(num_samples)
    rr = np.c_[first, level[:, None] + np.sqrt(j2) * rng.standard_normal((num_samples, k - 1))]
    rr = np.maximum(rr, shortest)
    return np.rint(last + np.cumsum(np.c_[np.zeros(num_samples), rr], axis=1)).astype(np.int64)


def draw_first_interval(mean: float, sd: float, shortest: int, loglik: np.ndarray, num_samples: int,
                        rng: np.random.Generator) -> np.ndarray:
    """First RR intervals [S] from the normal prior (mean, sd) weighed by `loglik` on the whole intervals
    shortest, shortest + 1, ... (its last entry holds for every interval past them): exact, on a grid."""
    g = len(loglik) - 1
    edge = shortest + g - 0.5
    logw = np.r_[loglik[:-1] + scipy.stats.norm.logpdf(shortest + np.arange(g), mean, sd),
                 loglik[-1] + scipy.stats.norm.logsf(edge, mean, sd)]
    with np.errstate(under="ignore"):   # an unlikely interval weighs 0 (as in context_rhythm)
        w = np.exp(logw - logw.max())
    pick = np.minimum(np.searchsorted(np.cumsum(w), rng.uniform(size=num_samples) * w.sum()), g)
    later = scipy.stats.truncnorm.rvs((edge - mean) / sd, np.inf, mean, sd, size=num_samples, random_state=rng)
    return np.where(pick < g, shortest + pick, later)


def next_beat_evidence(x: np.ndarray, template: np.ndarray, pre: int, peaks: np.ndarray,
                       fs: float) -> np.ndarray | None:
    """What the end of a context [C, 2] says about its next R peak: the log-likelihoods of the intervals
    `draw_first_interval` weighs (from `shortest_period` on), or None when there is nothing to see.

    A beat due soon has begun before the context ends (the template starts `pre` samples before its
    R peak, with the P wave), and a beat already due would show its QRS. So each candidate interval,
    from the shortest to the one whose beat begins at the context's end, lays the template there and is
    scored on the last EVIDENCE_S seconds: Gaussian residuals, their mean removed (baseline drift),
    with the variance of the template's fit to the whole context times EVIDENCE_TEMPER (neighbouring
    samples are not independent). Settings chosen on the validation patients (EXPERIMENTS.md, session 13)."""
    c, last = len(x), int(peaks[-1])
    shortest = shortest_period(fs)
    start = max(last + 1, c - round(EVIDENCE_S * fs))
    if start >= c:
        return None
    nxt = np.r_[last + shortest + np.arange(max(0, c + pre - last - shortest)), c + pre]
    noise = np.mean(template_residual(x, template, pre, peaks) ** 2)
    res = x[start:] - beat_train(template, pre, np.c_[np.full(len(nxt), last), nxt], start, c - start)
    res -= res.mean(axis=1, keepdims=True)
    return -(res ** 2).sum(axis=(1, 2)) / (2 * EVIDENCE_TEMPER * noise + 1e-12)


def draft_waves(x: np.ndarray, h: int, fs: float, num_samples: int = 1, seed: int = 0,
                beats: list[np.ndarray] | None = None, jitter: float = 0.05,
                rhythm: Rhythm | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The drafts [N, h, 2] of contexts x [B, C, 2] and which one each of the B * num_samples samples takes:
    beats laid at beat times. Training gives the times, `beats` (a window's own R peaks), and lays the context's
    mean beat at those more than MIN_PERIOD_S after the context's last peak (a nearer one is that peak again); a
    forecast draws them (`drawn_drafts`; `jitter` is the SD, as a fraction of the period, that each
    drawn interval adds to the rhythm's: `draw_beat_times`'s `jitter`). A context with fewer than two R peaks gets
    its seasonal-naive continuation. `rhythm` is x's `context_rhythm` when the caller has it already."""
    c = x.shape[1]
    peaks, period, spread = rhythm or context_rhythm(x, fs)
    rng = np.random.default_rng(seed)
    waves, index = [], np.zeros((len(x), num_samples), np.int64)
    for i, r in enumerate(peaks):
        index[i] = len(waves)
        p = int(period[i])
        if len(r) < 2:                        # seasonal naive, from the rhythm already detected
            waves.append(repeat_last(x[i:i + 1], period[i:i + 1], h)[0, 0])
        elif beats is None:                   # a draft per sample
            index[i] += np.arange(num_samples)
            waves += list(drawn_drafts(x[i], r, p, spread[i], jitter, num_samples, h, fs, rng))
        else:
            times = np.r_[r[-1], beats[i][beats[i] > r[-1] + MIN_PERIOD_S * fs]]
            waves.append(beat_train(mean_beat(x[i], r, p), template_pre(p), times, c, h))
    return np.stack(waves), index.reshape(-1)


def drawn_drafts(x: np.ndarray, peaks: np.ndarray, period: int, spread: float, jitter: float,
                 num_samples: int, h: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Drafts [S, h, 2] after one context [C, 2]: beat times drawn (`draw_beat_times`, with `jitter` the
    beat-to-beat jitter), at each one of the context's whole beats drawn at random (the mean beat when none is
    whole), so that paths vary from beat to beat as the context does and show an ectopic beat as often
    (EXPERIMENTS.md, session 16)."""
    c, pre = len(x), template_pre(period)
    drawn = draft_beat_times(x, peaks, period, spread, jitter, num_samples, c + h, fs, rng)
    peaks = unfinished_beat_dropped(peaks, c)
    shapes = whole_beats(x, peaks, period)
    if not len(shapes):
        return beat_train(mean_beat(x, peaks, period), pre, drawn, c, h)
    return beat_train(shapes, pre, drawn, c, h, rng.integers(len(shapes), size=drawn.shape))


def draft_beat_times(x: np.ndarray, peaks: np.ndarray, period: int, spread: float, jitter: float, num_samples: int,
                     until: int, fs: float, rng: np.random.Generator, see_end: bool = True) -> np.ndarray:
    """drawn_drafts' beat times [S, n] after one context [C, 2], in one place so that bench/rhythm_bound.py
    measures the drafts' timing as they are (`see_end=False` leaves out `next_beat_evidence`, to weigh it)."""
    peaks = unfinished_beat_dropped(peaks, len(x))
    pre = template_pre(period)
    evidence = next_beat_evidence(x, mean_beat(x, peaks, period), pre, peaks, fs) if see_end else None
    return draw_beat_times(int(peaks[-1]), period, spread, jitter, num_samples, until, fs, rng, evidence)


def residual_sd(x: np.ndarray, fs: float, rhythm: Rhythm | None = None) -> np.ndarray:
    """Per-lead SD [B, 2] of each context's departure from its mean beat laid at its own R peaks (from the
    first beat's onset): the beat-to-beat change, noise and drift that a draft leaves out. 0 for a context
    with fewer than two R peaks, whose seasonal-naive draft carries its own noise."""
    peaks, period, _ = rhythm or context_rhythm(x, fs)
    out = np.zeros((len(x), 2))
    for i, r in enumerate(peaks):
        if len(r) >= 2:
            p = int(period[i])
            pre = template_pre(p)
            out[i] = template_residual(x[i], mean_beat(x[i], r, p), pre, r)[max(0, int(r[0]) - pre):].std(axis=0)
    return out


def template_residual(x: np.ndarray, template: np.ndarray, pre: int, peaks: np.ndarray) -> np.ndarray:
    """A context [C, 2] minus its `template` laid at its own R peaks: what a draft of it would leave out."""
    return x - beat_train(template, pre, peaks, 0, len(x))


def add_noise(paths: np.ndarray, x: np.ndarray, fs: float, scale: float, seed: int,
              rhythm: Rhythm | None = None) -> np.ndarray:
    """Paths [B, S, H, 2] of contexts x [B, C, 2] plus white Gaussian noise of SD `scale` × `residual_sd`.

    Paths of the mean beat agreed on everything but beat timing, so between beats their bands were too
    narrow for the truth's noise and drift (80% intervals covered 63%): noise of 0.4 of the context's
    residual restored the coverage and lowered the drafts' CRPS by 1-1.5% (EXPERIMENTS.md, session 14).
    Drafts of the context's own beats carry part of that variation, so they take 0.2 (session 16)."""
    if scale == 0:
        return paths
    rng = np.random.default_rng([int(seed) % 2 ** 63, 1])     # a stream apart from the drafts' beat times
    sd = (scale * residual_sd(x, fs, rhythm)).astype(np.float32)[:, None, None, :]
    return paths + sd * rng.standard_normal(paths.shape, dtype=np.float32)


def hold_to_band(departure: np.ndarray, before: int, low_hz: float, order: int, fs: float,
                 rows: int = 256) -> np.ndarray:
    """Paths' departures from their drafts [N, H, 2], high-passed at `low_hz` (zero-phase Butterworth of
    `order`, as the data were filtered), each taken as 0 over the `before` samples of context. A network
    renders what its draft misses; below the band every recording was filtered to, what it renders is drift
    that no recording has: the latent SDE's 20 s paths wandered by 0.2-0.3 mV (EXPERIMENTS.md, session 18)."""
    sos = scipy.signal.butter(order, low_hz, btype="highpass", fs=fs, output="sos")
    # a mirrored second at the end: the default (odd, 9 samples at order 2) left 0.14 mV of a held offset there
    pad = min(round(fs), before + departure.shape[1] - 1)
    out = np.empty_like(departure)
    for i in range(0, len(departure), rows):     # scipy filters in float64: a block of paths at a time
        part = departure[i:i + rows]
        full = np.concatenate([np.zeros((len(part), before, part.shape[2])), part], 1)
        out[i:i + rows] = scipy.signal.sosfiltfilt(sos, full, axis=1, padtype="even", padlen=pad)[:, before:]
    return out


@functools.lru_cache(maxsize=8)
def hold_matrix(before: int, length: int, low_hz: float, order: int, fs: float) -> np.ndarray:
    """hold_to_band as a matrix [length, length] (departure sample → held sample): the filter is linear, so
    a differentiable hold is one product. Cached: every validation batch of a run asks the same one."""
    band = hold_to_band(np.eye(length, dtype=np.float32)[:, :, None], before, low_hz, order, fs)[:, :, 0]
    band.flags.writeable = False
    return band


def beat_train(template: np.ndarray, pre: int, beats: np.ndarray, start: int, length: int,
               pick: np.ndarray | None = None) -> np.ndarray:
    """Samples start..start+length-1 [length, 2] of a beat `template` [period, 2] (R peak at sample `pre`)
    laid at each of `beats` [K] ([S, K]: one train [S, length, 2] per row): a sample takes its phase in
    the latest beat begun by then, and a gap longer than the template (or the time before the first
    beat) holds its last sample. With `pick` (like `beats`), `template` is [M, period, 2] and beat k takes
    template[pick[..., k]]."""
    p, rows = template.shape[-2], np.ndim(beats) == 2
    beats = np.atleast_2d(beats)
    order = np.argsort(beats, axis=1, kind="stable")
    onset = np.take_along_axis(beats, order, axis=1) - pre                # [S, K]
    t = start + np.arange(length)
    # [S, length]: latest onset so far, searched row by row (comparing every sample with every onset took
    # S × length × K bytes: 190 MB for 100 paths of 60 s, quadratic in the horizon)
    k = np.stack([np.searchsorted(row, t, side="right") for row in onset]) - 1
    began = np.clip(k, 0, None)
    phase = np.minimum(np.where(k >= 0, t - np.take_along_axis(onset, began, axis=1), p - 1), p - 1).astype(np.int64)
    if pick is None:
        out = template[phase]
    else:
        out = template[np.take_along_axis(np.take_along_axis(np.atleast_2d(pick), order, axis=1), began, axis=1), phase]
    return out if rows else out[0]
