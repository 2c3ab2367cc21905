"""Baseline forecasters that need no training, all behind forecast.ForecasterBase.

A trained model is only interesting if it beats these: a flat line (zero, context mean), the last value, a copy of the
last beat period (seasonal naive) or of a period found by matching the context's end to its past (analog), the
context's average beat placed at the predicted rhythm (template), a probabilistic seasonal naive whose spread comes
from the context's RR variability (for CRPS and coverage), and the context's own beats at drawn beat times with some
of its noise (the drafts of `drafts.py`, which the models start from). Their `predict` returns what
ForecasterBase.predict says: a numpy float32 array [B, S, H, 2] in mV, with S = 1 for the deterministic ones.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from drafts import (NOISE_SCALE, add_noise, context_rhythm, draft_waves, mean_beat, repeat_last,
                    shortest_period, template_pre)
from forecast import ForecasterBase, as_context, one_by_one

if TYPE_CHECKING:
    import torch


class Zero(ForecasterBase):
    """Predicts 0 mV: the band-passed ECG's mean, so the MSE floor any real forecast must beat."""

    name = "zero"

    def __init__(self, fs: int = 128):
        if isinstance(fs, bool) or not isinstance(fs, (int, float, np.integer, np.floating)) or not 0 < fs < np.inf:
            raise ValueError(f"fs must be the contexts' sampling rate in Hz, a positive number, got {fs!r}")
        self.fs = fs

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        return np.zeros((len(x), 1, horizon, 2), np.float32)


class ContextMean(Zero):
    """Predicts each lead's context mean."""

    name = "mean"

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        return np.repeat(x.mean(axis=1, keepdims=True)[:, None], horizon, axis=2)


class Persistence(Zero):
    """Repeats the last context sample."""

    name = "persistence"

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        return np.repeat(x[:, None, -1:], horizon, axis=2)


class SeasonalNaive(Zero):
    """Repeats the context's last beat period (median RR of its R peaks, else autocorrelation)."""

    name = "seasonal"

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        _, period, _ = context_rhythm(x, self.fs)
        return repeat_last(x, period, horizon)


class Analog(Zero):
    """Seasonal naive whose period is the lag, 0.25 s (the shortest plausible beat period) or longer, at which an
    earlier stretch of the context best matches its last 0.5 s (least squares over both leads): the analog method.
    It times the next beats better than seasonal naive's median RR (F1 ±100 ms 0.704 against 0.671 on the training
    patients, EXPERIMENTS.md, session 42); a context too short to search is repeated whole."""

    name = "analog"
    match_s = 0.5

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        lags = analog_lags(x, round(self.match_s * self.fs), shortest_period(self.fs))
        return repeat_last(x, lags, horizon)


def analog_lags(x: np.ndarray, length: int, shortest: int) -> np.ndarray:
    """Per context [B, C, 2], the lag in [shortest, C - length] whose stretch of `length` samples before it is
    nearest the last `length` samples (the smallest such lag on a tie); C when there is no such lag."""
    b, c, _ = x.shape
    if c - length < shortest:
        return np.full(b, c)
    ends = np.lib.stride_tricks.sliding_window_view(x, length, axis=1)[:, :c - length - shortest + 1]  # [B, n, 2, L]
    last = np.moveaxis(x[:, c - length:], 1, 2)[:, None]                                            # [B, 1, 2, L]
    cost = ((ends - last) ** 2).sum((2, 3))                             # [B, n]: stretch n ends `shortest` before
    return shortest + cost[:, ::-1].argmin(1)


class MeanBeatTemplate(Zero):
    """Averages the context's beats (one period around each R peak) and tiles that mean beat from
    the last R peak on, one per median RR interval: the rhythm continues, the noise averages out.
    Contexts with fewer than two detected beats fall back to the seasonal naive forecast."""

    name = "template"

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        c = x.shape[1]
        peaks, period, _ = context_rhythm(x, self.fs)
        out = repeat_last(x, period, horizon)
        for i, r in enumerate(peaks):
            if len(r) < 2:
                continue
            p = int(period[i])
            pre = template_pre(p)
            phase = (c + np.arange(horizon) - (r[-1] - pre)) % p
            out[i, 0] = mean_beat(x[i], r, p)[phase]
        return out


class SeasonalEnsemble(Zero):
    """Seasonal naive with one random period per sample, drawn around the median RR with the
    context's RR standard deviation (`rhythm_spread`): timing uncertainty that grows with every beat, the
    probabilistic baseline for CRPS and interval coverage. Two to four RR intervals underestimate
    the spread, so it is at least 5 % of the period (best CRPS on the training split)."""

    name = "seasonal_ensemble"
    deterministic = False
    min_spread = 0.05

    @one_by_one
    def predict(self, x: np.ndarray, horizon: int, num_samples: int = 100, seed: int = 0) -> np.ndarray:
        _, period, spread = context_rhythm(x, self.fs)
        periods = draw_periods(period, spread, self.min_spread, num_samples, seed, self.fs, x.shape[1])
        return repeat_last(x, periods, horizon)


class TemplateEnsemble(Zero):
    """The context's own beats at drawn beat times (`draw_beat_times`, `draft_waves`), one rhythm per
    sample, plus some of the noise the context shows around its mean beat (`add_noise`). These are the beat
    drafts the Transformer and the latent SDE start from, so a model beats this baseline only if its
    network adds something to the draft it is given. Jitter 6% and noise 0.2: the best CRPS on the
    training split."""

    name = "template_ensemble"
    deterministic = False
    jitter = 0.06
    noise = NOISE_SCALE

    @one_by_one
    def predict(self, x: np.ndarray, horizon: int, num_samples: int = 100, seed: int = 0) -> np.ndarray:
        rhythm = context_rhythm(x, self.fs)
        waves, index = draft_waves(x, horizon, self.fs, num_samples, seed, jitter=self.jitter, rhythm=rhythm)
        paths = waves[index].reshape(len(x), num_samples, horizon, 2).astype(np.float32)
        return add_noise(paths, x, self.fs, self.noise, seed, rhythm)


def draw_periods(period: np.ndarray, spread: np.ndarray, min_spread: float, num_samples: int, seed: int,
                 fs: float, longest: int) -> np.ndarray:
    """Beat periods [B, S] in samples, one per sample: normal around each context's period with its RR
    standard deviation (NaN: none), but at least `min_spread` of the period (see SeasonalEnsemble)."""
    sd = np.fmax(np.nan_to_num(spread, nan=0.0), min_spread * period)
    z = np.random.default_rng(seed).standard_normal((len(period), num_samples))
    p = np.rint(period[:, None] + sd[:, None] * z).astype(np.int64)
    return np.clip(p, shortest_period(fs), longest)


BASELINES: dict[str, type[ForecasterBase]] = {
    cls.name: cls for cls in (Zero, ContextMean, Persistence, SeasonalNaive, Analog, MeanBeatTemplate,
                              SeasonalEnsemble, TemplateEnsemble)
}


def make_baseline(name: str, fs: int) -> ForecasterBase:
    """A baseline by its --model name (see BASELINES)."""
    if name not in BASELINES:
        raise ValueError(f"no baseline {name!r}; there are {', '.join(BASELINES)}")
    return BASELINES[name](fs)
