"""Forecast metrics that see amplitude, shape, timing and uncertainty, not only squared error.

Mean squared error alone rewards a flat line on ECG (a beat 40 ms late is punished twice), so next to
MSE/MAE/PRD this module scores the rhythm of a forecast (R peaks detected in it, matched to the
reference beat annotations) and the calibration of sampled forecasts (CRPS, interval coverage).

Evaluation works on sums: `waveform_sums` and `rhythm_sums` turn a batch of windows into per-window
sums for every horizon segment (one column per horizon second, then one for the whole horizon);
summing them over a record's windows and calling `record_metrics` gives that record's metrics,
which `bootstrap_ci` averages over records (each record weighs the same).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import scipy.ndimage
import scipy.optimize
import scipy.signal

# name -> (label in reports, unit); the order is the column order of the report table.
METRICS: dict[str, tuple[str, str]] = {
    "mse": ("MSE", "mV²"),
    "mae": ("MAE", "mV"),
    "prd": ("PRD", "%"),
    "prdn": ("PRDN", "%"),
    "r": ("Pearson r", ""),
    "crps": ("CRPS", "mV"),
    "crps_fair": ("fair CRPS", "mV"),
    "mse_median": ("MSE of median", "mV²"),
    "mae_median": ("MAE of median", "mV"),
    "cov50": ("cover 50", "%"),
    "width50": ("width 50", "mV"),
    "cov80": ("cover 80", "%"),
    "width80": ("width 80", "mV"),
    "f1_50": ("F1 ±50 ms", ""),
    "f1_100": ("F1 ±100 ms", ""),
    "timing_ms": ("timing err", "ms"),
    "hr_bpm": ("HR err", "bpm"),
}
TOLERANCES_MS = (50, 100)   # beat matching windows; timing error uses the wider one
RHYTHM_PATHS = 10   # sample paths per window whose R peaks are scored for a sampled forecast (the first ones)
DETECTOR = {"band_hz": (8.0, 20.0), "order": 2, "window_s": 0.08, "threshold": 0.3,
            "refractory_s": 0.2, "refine_s": 0.06}
FLAT_MV = 1e-6      # a lead swinging at most this is flat (lead off): no beats, and forecast.py warns of it
SHORTEST_ROW = 32   # samples: shorter rows have no beats (sosfiltfilt needs more than 15 at order 2)


# ----------------------------------------------------------------------------- point metrics

def check_pair(pred: np.ndarray, truth: np.ndarray, what: str = "pred") -> None:
    """A forecast and its truth must have one shape: numpy would broadcast a truth [H, 2] against forecasts
    [S, H, 2] (or a [1, H, 2] batch) into a number that is no score, silently."""
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"{what} has shape {np.shape(pred)} and the truth {np.shape(truth)}: they must be the same "
                         f"(one path of predict's [B, S, H, 2] against a truth [B, H, 2] is samples[:, s])")


def prd(pred: np.ndarray, truth: np.ndarray) -> float:
    """Percentage root-mean-square difference, 100·sqrt(Σ(x̂−x)² / Σx²): error relative to signal energy."""
    check_pair(pred, truth)
    truth = np.asarray(truth, np.float64)
    return float(100 * np.sqrt(np.sum((pred - truth) ** 2) / np.sum(truth ** 2)))


def prdn(pred: np.ndarray, truth: np.ndarray, axis: int = 0) -> float:
    """Normalised PRD: as PRD but against the truth's variance about its mean, so offsets do not flatter.

    Each lead (window) is centred about its own mean along the time axis `axis` (0 for [H] or [H, leads], 1 for
    [B, H, leads]), as the evaluation and vqvae_eval.py do: one mean over two leads of different offsets would
    count the offsets as signal.
    """
    check_pair(pred, truth)
    truth = np.asarray(truth, np.float64)
    centred = truth - truth.mean(axis=axis, keepdims=True)
    return float(100 * np.sqrt(np.sum((pred - truth) ** 2) / np.sum(centred ** 2)))


# ----------------------------------------------------------------------------- sampled forecasts

def sorted_samples(samples: np.ndarray, axis: int = 0) -> np.ndarray:
    """Samples moved to the last axis and sorted there: what crps_sorted and quantile_sorted take."""
    return np.sort(np.moveaxis(np.asarray(samples), axis, -1), axis=-1)


def crps_sorted(xs: np.ndarray, y: np.ndarray, half_spread: np.ndarray | None = None) -> np.ndarray:
    """CRPS of the empirical distribution of sorted samples xs [..., S] at observations y [...].

    Energy form E|X−y| − ½E|X−X'|; with samples sorted ascending ½E|X−X'| = Σᵢ (2i−S−1)·x₍ᵢ₎ / S²,
    so the cost is O(S) after an O(S log S) sort and no S×S matrix. A point mass gives |x−y| (MAE). This is the
    CRPS of the S samples as issued, not the fair estimator (÷ S(S−1), latent_sde.fair_crps), lower by ½E|X−X'|/(S−1).
    `half_spread`: half_spread_sorted(xs), when the caller has it already (the fair CRPS needs it too).
    """
    if half_spread is None:
        half_spread = half_spread_sorted(xs)
    return np.mean(np.abs(xs - y[..., None]), axis=-1) - half_spread


def half_spread_sorted(xs: np.ndarray) -> np.ndarray:
    """½E|X−X'| of sorted samples xs [..., S] over all S² pairs, the spread term crps_sorted subtracts; the fair
    CRPS subtracts S/(S−1) times it, so a run's CRPS exceeds its fair value by half_spread / (S − 1)."""
    s = xs.shape[-1]
    weights = (2 * np.arange(1, s + 1) - s - 1) / s ** 2
    return xs @ weights.astype(np.result_type(xs.dtype, np.float32))     # xs' precision, never cut to integers


def quantile_sorted(xs: np.ndarray, q: float) -> np.ndarray:
    """Quantile q of sorted samples along the last axis, linear interpolation (numpy's default)."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    pos = q * (xs.shape[-1] - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, xs.shape[-1] - 1)
    return xs[..., lo] + (pos - lo) * (xs[..., hi] - xs[..., lo])


# ----------------------------------------------------------------------------- R peaks and beats

@functools.lru_cache(maxsize=16)
def _band_sos(order: int, lo: float, hi: float, fs: float) -> np.ndarray:
    """The detector's band-pass, designed once per rate: the design took more than sosfiltfilt on an evaluation's
    few paths, and evaluate.py detects beats in every window's. Shared by every call: not to be written to (scipy's
    sosfilt takes no read-only array)."""
    return scipy.signal.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")


def _envelope(x: np.ndarray, fs: float) -> np.ndarray:
    """Root of the 80 ms moving average of the squared slope of the zero-phase 8-20 Hz band: large on QRS
    complexes only, and in mV/s, so that thresholds scale with amplitude, not energy."""
    lo, hi = DETECTOR["band_hz"]
    y = scipy.signal.sosfiltfilt(_band_sos(DETECTOR["order"], lo, min(hi, 0.45 * fs), fs), x, axis=-1)
    slope2 = (np.gradient(y, axis=-1) * fs) ** 2
    width = max(1, round(DETECTOR["window_s"] * fs))
    return np.sqrt(np.maximum(scipy.ndimage.uniform_filter1d(slope2, width, axis=-1, mode="nearest"), 0))


def detect_r_peaks(x: np.ndarray, fs: float, level_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """R peaks of single-lead signals x [B, T] (mV) as (row, sample) arrays sorted by row then sample.

    Pan-Tompkins-style, on scipy.signal: peaks of the QRS envelope (`_envelope`) at least 200 ms apart and above
    30 % of its maximum over the first `level_from` samples (the true context, so that a forecast is judged with
    the threshold of the signal it continues; None = the whole row), each moved to the R wave within ±60 ms.
    Parameters (DETECTOR) were chosen on the training split (DS1); `evaluate.py` reports its own sensitivity and
    positive predictivity against the annotations on the evaluated horizons.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or (x.shape[1] == 2 and x.shape[0] >= SHORTEST_ROW):     # [T], or a [T, 2] two-lead signal
        raise ValueError(f"x must be single-lead rows [B, T], got shape {x.shape}: lead 1 of a context [C, 2] is "
                         f"context[None, :, 0]")
    return row_r_peaks(x, fs, level_from)


def row_r_peaks(x: np.ndarray, fs: float, level_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """detect_r_peaks without its check, for rows [B, T] that its caller built: SHORTEST_ROW or more rows of two
    samples (contexts of two) have the shape of the two-lead signal [T, 2] it refuses."""
    x = np.asarray(x, np.float64)
    if x.shape[1] < SHORTEST_ROW:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, peaks = _envelope_peaks(x, fs, level_from)
    return _move_to_r(x, rows, peaks, round(DETECTOR["refine_s"] * fs))


def _envelope_peaks(x: np.ndarray, fs: float, level_from: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(row, sample) of the envelope peaks detect_r_peaks keeps. A row flat over the first `level_from` samples
    (FLAT_MV) has none: its envelope is the filter's rounding dust, in which a relative threshold finds a beat
    every 200 ms. The envelope is zero-padded so that a QRS cut by the row's end still peaks."""
    env = np.pad(_envelope(x, fs), ((0, 0), (1, 1)))
    stop = x.shape[1] + 2 if level_from is None else level_from + 1    # in padded samples
    level = DETECTOR["threshold"] * env[:, :stop].max(axis=1)
    level[np.ptp(x[:, :stop - 1], axis=1) <= FLAT_MV] = 0
    distance = max(1, round(DETECTOR["refractory_s"] * fs))
    rows, peaks = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for b in np.flatnonzero(level > 0):
        p, _ = scipy.signal.find_peaks(env[b], height=level[b], distance=distance)
        rows.append(np.full(len(p), b, np.int64))
        peaks.append(p - 1)
    return np.concatenate(rows), np.concatenate(peaks)


def _move_to_r(x: np.ndarray, rows: np.ndarray, peaks: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Each peak moved to the largest |x − median| within ±w samples, the R wave where MIT-BIH annotates beats;
    sorted by row, then sample, with peaks that moved onto one another merged."""
    t = x.shape[1]
    centred = np.abs(x - np.median(x, axis=1, keepdims=True))
    idx = np.clip(peaks[:, None] + np.arange(-w, w + 1), 0, t - 1)
    p = idx[np.arange(len(peaks)), np.argmax(centred[rows[:, None], idx], axis=1)]
    key = np.unique(rows * t + p)
    return key // t, key % t


def per_row(rows: np.ndarray, pos: np.ndarray, n: int) -> list[np.ndarray]:
    """The positions of each of rows 0..n-1, from (row, position) arrays sorted by row (detect_r_peaks')."""
    return np.split(pos, np.searchsorted(rows, np.arange(1, n)))


def match_beats(ref: np.ndarray, det: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ref, into det) of matched beats: the most pairs at most `tol` apart, each beat used once,
    and among those the pairs nearest in time.

    Both arrays are sorted positions. Where the reference beats or the detections of a run of nearby beats are
    more than 2·tol apart (all of MIT-BIH's DS2 at ±100 ms), every beat has at most one candidate partner
    cluster and mutual nearest neighbours are that matching. Elsewhere (a fast flutter scored at a wide
    tolerance: references 0, 8 and detections 4, 13 at tol 5) mutual nearest neighbours miss pairs, so those
    runs are matched by linear_sum_assignment.
    """
    ref, det = np.asarray(ref), np.asarray(det)
    if len(ref) == 0 or len(det) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    j, i = _nearest(det, ref), _nearest(ref, det)
    r = np.arange(len(ref))
    ok = (i[j] == r) & (np.abs(det[j] - ref) <= tol)
    ri, di = r[ok], j[ok]
    for rs, ds in _crowded_runs(ref, det, tol):
        keep = (ri < rs.start) | (ri >= rs.stop)
        a, b = _assign(ref[rs], det[ds], tol)
        ri, di = np.concatenate([ri[keep], a + rs.start]), np.concatenate([di[keep], b + ds.start])
    order = np.argsort(ri, kind="stable")
    return ri[order], di[order]


def _crowded_runs(ref: np.ndarray, det: np.ndarray, tol: float) -> list[tuple[slice, slice]]:
    """The runs of beats (slices of ref and of det) that only one another can match, and in which both some
    references and some detections are within 2·tol of each other: where mutual nearest neighbours may miss."""
    pos = np.concatenate([ref, det])
    order = np.argsort(pos, kind="stable")
    run = np.empty(len(pos), np.int64)
    run[order] = np.cumsum(np.diff(pos[order], prepend=-np.inf) > tol)
    ref_run, det_run = run[:len(ref)], run[len(ref):]
    crowded = np.intersect1d(_close_neighbours(ref, ref_run, tol), _close_neighbours(det, det_run, tol))
    return [(_slice_of(ref_run, k), _slice_of(det_run, k)) for k in crowded]


def _close_neighbours(pos: np.ndarray, run: np.ndarray, tol: float) -> np.ndarray:
    """The runs in which two neighbouring positions are at most 2·tol apart."""
    close = (np.diff(pos) <= 2 * tol) & (run[1:] == run[:-1])
    return np.unique(run[1:][close])


def _slice_of(run: np.ndarray, k: int) -> slice:
    """The indices of sorted beats in run k, which are consecutive."""
    return slice(int(np.searchsorted(run, k)), int(np.searchsorted(run, k, "right")))


def _assign(ref: np.ndarray, det: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The most pairs at most tol apart, then the least total distance (each extra pair is worth more than
    any distances can add up to)."""
    dist = np.abs(ref[:, None] - det[None, :]).astype(float)
    bonus = (min(len(ref), len(det)) + 1) * tol + 1
    cost = np.where(dist <= tol, dist - bonus, 0.0)
    a, b = scipy.optimize.linear_sum_assignment(cost)
    ok = dist[a, b] <= tol
    return a[ok], b[ok]


def _nearest(sorted_a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Index of the element of sorted_a nearest to each element of b (the left one on ties)."""
    j = np.searchsorted(sorted_a, b)
    left, right = np.clip(j - 1, 0, len(sorted_a) - 1), np.clip(j, 0, len(sorted_a) - 1)
    return np.where(np.abs(sorted_a[left] - b) <= np.abs(sorted_a[right] - b), left, right)


def f1_score(tp: float, fp: float, fn: float) -> float:
    """2·TP / (2·TP + FP + FN); NaN when there is nothing to find and nothing was found."""
    den = 2 * tp + fp + fn
    return float(2 * tp / den) if den else float("nan")


def heart_rate(pos: np.ndarray, fs: float, seconds: float) -> float:
    """Beats per minute from beat positions: 60·(n−1)/span for n ≥ 2, else 60·n/seconds (0 for none)."""
    pos = np.sort(np.asarray(pos))
    if len(pos) >= 2 and pos[-1] > pos[0]:
        return float(60 * (len(pos) - 1) * fs / (pos[-1] - pos[0]))
    return float(60 * len(pos) / seconds)


# ----------------------------------------------------------------------------- per-window sums

def segment_edges(horizon: int, fs: int) -> np.ndarray:
    """Sample edges of the horizon seconds [0, fs, 2fs, ..., horizon] (the last one may be partial)."""
    return np.unique(np.append(np.arange(0, horizon, fs), horizon))


def _seg(a: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum over the time axis (1) of a [B, H, ...] per segment, then the total: [B, K+1, ...]."""
    parts = np.add.reduceat(a, edges[:-1], axis=1)
    return np.concatenate([parts, a.sum(axis=1, keepdims=True)], axis=1)


def _seg_sum(a: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """_seg summed over the leads too: one sum per window and segment [B, K+1]."""
    return _seg(a, edges).sum(-1)


def waveform_sums(truth: np.ndarray, forecast: np.ndarray, edges: np.ndarray, sample_chunk: int = 4_000_000,
                  point_mass: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-window sums of the waveform scores of forecast [B, S, H, 2] against truth [B, H, 2].

    Returns (sums, curves): sums[key] is [B, K+1] (K horizon segments, then the whole horizon),
    curves[key] is [B, H] summed over leads. The point forecast is the sample mean; one path (S = 1) gets
    CRPS = MAE and no interval scores (NaN), and the fair CRPS of a `point_mass` (a deterministic forecast): one
    path drawn from a distribution (not point_mass) cannot estimate its spread, so its fair CRPS is NaN, not an
    MAE about twice its CRPS.
    """
    b, s, h, _ = forecast.shape
    y = np.asarray(truth, np.float64)
    check_pair(forecast[:, 0], y, "forecast without its sample axis")
    if s == 1:
        point = forecast[:, 0].astype(np.float64)
        median, crps, intervals = point, np.abs(point - y), None
        fair = crps if point_mass else np.full_like(crps, np.nan)     # a point mass's CRPS is its MAE
    else:
        point, median, crps, fair, intervals = _sample_scores(forecast, y, sample_chunk)
    se, ae = (point - y) ** 2, np.abs(point - y)
    seg_len = np.append(np.diff(edges), h).astype(np.float64)              # K segments, then all
    sums = {"n": np.tile(2 * seg_len, (b, 1)),
            "se": _seg_sum(se, edges), "ae": _seg_sum(ae, edges),
            "tt": _seg_sum(y ** 2, edges), "crps": _seg_sum(crps, edges), "crps_fair": _seg_sum(fair, edges),
            "se_med": _seg_sum((median - y) ** 2, edges), "ae_med": _seg_sum(np.abs(median - y), edges)}
    sums.update(_correlation_sums(y, point, edges, seg_len[None, :, None]))
    sums.update(_interval_sums(y, intervals, edges, b))
    curves = {"se": se.sum(-1), "ae": ae.sum(-1), "crps": crps.sum(-1)}
    return sums, curves


def _sample_scores(forecast: np.ndarray, y: np.ndarray, sample_chunk: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Sample mean, median, CRPS, fair CRPS and quartiles/deciles [B, H, 2] of forecast samples [B, S, H, 2],
    sorted in chunks of windows to bound memory at a few times sample_chunk floats."""
    b, s, h, _ = forecast.shape
    step = max(1, sample_chunk // (s * h * 2))
    point, median, crps, fair = (np.empty((b, h, 2)) for _ in range(4))
    quantiles = (("q10", 0.1), ("q25", 0.25), ("q75", 0.75), ("q90", 0.9))
    intervals = {k: np.empty((b, h, 2)) for k, _ in quantiles}
    for i in range(0, b, step):
        xs = sorted_samples(forecast[i:i + step], axis=1)
        point[i:i + step] = xs.mean(axis=-1)
        median[i:i + step] = quantile_sorted(xs, 0.5)
        half_spread = half_spread_sorted(xs)
        crps[i:i + step] = crps_sorted(xs, y[i:i + step].astype(xs.dtype), half_spread)
        fair[i:i + step] = crps[i:i + step] - half_spread / (s - 1)
        for k, q in quantiles:
            intervals[k][i:i + step] = quantile_sorted(xs, q)
    return point, median, crps, fair, intervals


def _correlation_sums(y: np.ndarray, point: np.ndarray, edges: np.ndarray,
                      lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Centred truth energy and Pearson r per window, segment and lead, from first and second moments (one
    pass over the samples, no per-segment means)."""
    sy, sp = _seg(y, edges), _seg(point, edges)
    syy, spp, spy = _seg(y * y, edges), _seg(point * point, edges), _seg(point * y, edges)
    vy, vp, cov = syy - sy ** 2 / lengths, spp - sp ** 2 / lengths, spy - sp * sy / lengths
    ok_truth = vy > 1e-12 * lengths
    flat = vp <= 1e-12 * lengths
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(flat, 0.0, cov / np.sqrt(np.maximum(vp, 1e-300) * vy))
    return {"tc": vy.sum(-1), "r_sum": np.where(ok_truth, r, 0.0).sum(-1),
            "r_n": ok_truth.sum(-1).astype(np.float64)}


def _interval_sums(y: np.ndarray, intervals: dict[str, np.ndarray] | None, edges: np.ndarray,
                   b: int) -> dict[str, np.ndarray]:
    """Samples inside, and width of, the central 50 % and 80 % intervals; NaN for a deterministic forecast
    (intervals None), which has no spread to score."""
    sums = {}
    for level, lo, hi in ((50, "q25", "q75"), (80, "q10", "q90")):
        if intervals is None:
            sums[f"in{level}"] = np.full((b, len(edges)), np.nan)
            sums[f"w{level}"] = np.full((b, len(edges)), np.nan)
        else:
            inside = (y >= intervals[lo]) & (y <= intervals[hi])
            sums[f"in{level}"] = _seg_sum(inside.astype(np.float64), edges)
            sums[f"w{level}"] = _seg_sum(intervals[hi] - intervals[lo], edges)
    return sums


def rhythm_sums(context: np.ndarray, horizon: np.ndarray, ref_row: np.ndarray, ref_pos: np.ndarray,
                fs: int, edges: np.ndarray, annotated: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-window beat-matching sums [B, K+1] for forecast (or true) lead 1 horizon [B, H].

    R peaks are detected in context+horizon (so the forecast is judged as a continuation, with the
    context's threshold) and matched to the reference beats (ref_row, ref_pos: window row and
    sample from the window start) within ±50 and ±100 ms. A matched pair with both beats in the
    horizon is a true positive (in the reference beat's second); an unmatched reference beat
    (detection) in the horizon is a false negative (positive). A beat whose partner may lie outside the
    horizon (a sample before or after it is within the tolerance) counts in none. Timing error:
    |detection − reference| of the ±100 ms matches. Heart rate (`heart_rate`) of the horizon's
    detections vs its reference beats, whole horizon only. Rows with annotated False get zeros
    (their rhythm metrics become NaN).
    """
    b, c = context.shape
    h = horizon.shape[1]
    t = c + h
    annotated = np.ones(b, bool) if annotated is None else np.asarray(annotated, bool)
    det_row, det_pos = row_r_peaks(np.concatenate([context, horizon], axis=1), fs, level_from=c)
    keep = annotated[det_row]
    det = det_row[keep], det_pos[keep]
    ref = _reference_beats(ref_row, ref_pos, annotated, t, fs)
    sums = _match_sums(ref, det, b, c, t, fs, edges)
    sums["hr_err"], sums["hr_n"] = _heart_rate_sums(ref, det, annotated, b, c, h, fs, len(edges))
    return sums


def _beat_keys(rows: np.ndarray, pos: np.ndarray, t: int, fs: int) -> np.ndarray:
    """row·stride + sample: the beats of all windows on one sorted axis, rows so far apart that beats of two
    windows never match."""
    stride = t + 10 * fs
    return rows * stride + pos


def _reference_beats(ref_row: np.ndarray, ref_pos: np.ndarray, annotated: np.ndarray, t: int,
                     fs: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference beats inside annotated windows of t samples, sorted as match_beats needs them."""
    ref_row, ref_pos = np.asarray(ref_row, np.int64), np.asarray(ref_pos, np.int64)
    keep = annotated[ref_row] & (ref_pos >= 0) & (ref_pos < t)
    order = np.argsort(_beat_keys(ref_row[keep], ref_pos[keep], t, fs), kind="stable")
    return ref_row[keep][order], ref_pos[keep][order]


def _per_segment(rows: np.ndarray, pos: np.ndarray, b: int, edges: np.ndarray,
                 weight: np.ndarray | None = None) -> np.ndarray:
    """Beats (or their weights) summed per window and horizon segment [B, K+1] from their positions in the
    horizon, the last column all segments."""
    out = np.zeros((b, len(edges)))
    np.add.at(out, (rows, np.searchsorted(edges, pos, side="right") - 1), 1.0 if weight is None else weight)
    out[:, -1] = out[:, :-1].sum(1)
    return out


def _match_sums(ref: tuple[np.ndarray, np.ndarray], det: tuple[np.ndarray, np.ndarray], b: int, c: int, t: int,
                fs: int, edges: np.ndarray) -> dict[str, np.ndarray]:
    """TP, FN and FP at each tolerance, and the timing error of the widest one's matches. A reference beat within
    the tolerance of the samples just outside the horizon counts in no score, hit or missed, nor does a detection
    there that matched nothing: its partner may lie outside, and counting its hits but not its misses raised every
    F1 (seasonal naive 0.618 → 0.631 on DS2). A pair is scored by its reference beat."""
    (ref_row, ref_pos), (det_row, det_pos) = ref, det
    ref_key, det_key = _beat_keys(ref_row, ref_pos, t, fs), _beat_keys(det_row, det_pos, t, fs)
    sums: dict[str, np.ndarray] = {}
    for tol_ms in TOLERANCES_MS:
        tol = tol_ms / 1000 * fs
        ri, di = match_beats(ref_key, det_key, tol)
        ref_hit, det_hit = np.zeros(len(ref_key), bool), np.zeros(len(det_key), bool)
        ref_hit[ri], det_hit[di] = True, True
        inner = _partners_inside(ref_pos, tol, c, t)
        ri, di = ri[inner[ri]], di[inner[ri]]
        fn = ~ref_hit & inner
        fp = ~det_hit & _partners_inside(det_pos, tol, c, t)
        sums[f"tp{tol_ms}"] = _per_segment(ref_row[ri], ref_pos[ri] - c, b, edges)
        sums[f"fn{tol_ms}"] = _per_segment(ref_row[fn], ref_pos[fn] - c, b, edges)
        sums[f"fp{tol_ms}"] = _per_segment(det_row[fp], det_pos[fp] - c, b, edges)
        if tol_ms == max(TOLERANCES_MS):
            err_ms = np.abs(det_pos[di] - ref_pos[ri]) * 1000.0 / fs
            sums["terr"] = _per_segment(ref_row[ri], ref_pos[ri] - c, b, edges, err_ms)
            sums["nterr"] = sums[f"tp{tol_ms}"].copy()
    return sums


def _partners_inside(pos: np.ndarray, tol: float, c: int, t: int) -> np.ndarray:
    """Whether every sample within tol of a beat lies in the horizon [c, t), so that it has no partner outside: at
    128 Hz and ±100 ms (12.8 samples) a beat 12 samples in is inside, since c − 1 is 13 samples away."""
    return (np.ceil(pos - tol) >= c) & (np.floor(pos + tol) <= t - 1)


def _heart_rate_sums(ref: tuple[np.ndarray, np.ndarray], det: tuple[np.ndarray, np.ndarray], annotated: np.ndarray,
                     b: int, c: int, h: int, fs: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """|heart rate of the detections − of the reference beats| in each annotated window's horizon, and its
    count, in the whole-horizon column only."""
    (ref_row, ref_pos), (det_row, det_pos) = ref, det
    hr_err = np.zeros((b, k))
    hr_n = np.zeros((b, k))
    in_h_ref, in_h_det = ref_pos >= c, det_pos >= c
    ref_split = per_row(ref_row[in_h_ref], ref_pos[in_h_ref], b)
    det_split = per_row(det_row[in_h_det], det_pos[in_h_det], b)
    for i in np.flatnonzero(annotated):
        hr_err[i, -1] = abs(heart_rate(det_split[i], fs, h / fs) - heart_rate(ref_split[i], fs, h / fs))
        hr_n[i, -1] = 1.0
    return hr_err, hr_n


# ----------------------------------------------------------------------------- records and CIs

def record_metrics(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metrics (see METRICS) from sums accumulated over one record's windows (any leading shape).

    Only the metrics whose sums are present are returned (e.g. rhythm sums alone give the rhythm
    metrics); a zero denominator gives NaN.
    """
    def ratio(num: str, den: str, scale: float = 1.0, root: bool = False) -> np.ndarray | None:
        if num not in s or den not in s:
            return None
        r = _ratio(s[num], s[den])
        return scale * (np.sqrt(r) if root else r)

    def f1(tol: int) -> np.ndarray | None:
        if not all(f"{k}{tol}" in s for k in ("tp", "fp", "fn")):
            return None
        tp, fp, fn = s[f"tp{tol}"], s[f"fp{tol}"], s[f"fn{tol}"]
        return _ratio(2 * tp, 2 * tp + fp + fn)

    found = {
        "mse": ratio("se", "n"), "mae": ratio("ae", "n"),
        "prd": ratio("se", "tt", 100, root=True), "prdn": ratio("se", "tc", 100, root=True),
        "r": ratio("r_sum", "r_n"), "crps": ratio("crps", "n"), "crps_fair": ratio("crps_fair", "n"),
        "mse_median": ratio("se_med", "n"), "mae_median": ratio("ae_med", "n"),
        "cov50": ratio("in50", "n", 100), "width50": ratio("w50", "n"),
        "cov80": ratio("in80", "n", 100), "width80": ratio("w80", "n"),
        "f1_50": f1(50), "f1_100": f1(100),
        "timing_ms": ratio("terr", "nterr"), "hr_bpm": ratio("hr_err", "hr_n"),
    }
    return {name: v for name, v in found.items() if v is not None}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (nothing to score in that record and segment)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over records (axis 0, NaN records skipped) and its percentile bootstrap interval.

    Records are resampled with replacement with a fixed seed, so every forecaster is scored on the
    same resamples and intervals are reproducible. Records that leave a value undefined are resampled too, so how
    many define it varies as it would between samples of patients (a ratio estimator's bootstrap). Where fewer
    than two records define a value its interval is NaN: resampling one record gives [mean, mean], which would
    read as a certain value.
    """
    v = np.asarray(values, np.float64)
    if v.shape[0] == 0:
        nan = np.full(v.shape[1:], np.nan)
        return nan, nan, nan
    idx = np.random.default_rng(seed).integers(0, v.shape[0], size=(n_boot, v.shape[0]))
    with warnings.catch_warnings():   # all-NaN columns are expected (e.g. no annotated records)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=0)
        boots = np.nanmean(v[idx], axis=1)
        lo, hi = np.nanpercentile(boots, [50 * (1 - level), 50 * (1 + level)], axis=0)
    few = np.sum(np.isfinite(v), axis=0) < 2
    return mean, np.where(few, np.nan, lo)[()], np.where(few, np.nan, hi)[()]


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Mean over records of a - b with its bootstrap interval, and on how many records a is below / above b.

    Paired by record: the same patients' spread cancels, so a difference far smaller than either
    forecaster's own interval can still be told from zero. Records where either is undefined are left out.
    """
    if np.shape(a) != np.shape(b):      # a [R] and b [1] broadcast: every record paired with one
        raise ValueError(f"a and b must hold one value per record each, the same records: got shapes {np.shape(a)} "
                         f"and {np.shape(b)}")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[np.isfinite(d)]
    mean, lo, hi = bootstrap_ci(d, n_boot, seed, level)
    return {"mean": float(mean), "ci": [float(lo), float(hi)], "below": int(np.sum(d < 0)),
            "above": int(np.sum(d > 0)), "records": len(d)}

