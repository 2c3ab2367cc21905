"""Latent SDE forecaster (Li et al. 2020, "Scalable gradients for stochastic differential equations").

The observations are the frozen VQ-VAE's continuous encoder frames (before quantisation): one
vector per `downsample_factor` samples, 16 per second at 128 Hz. A small state z(t) evolves by

    prior      dz = h(z) dt                 + g(z) dW
    posterior  dz = (h(z) + c(z, ctx(t))) dt + g(z) dW

with time in seconds, diagonal noise (g_i depends on z_i only) and an MLP emission z(t) -> frame;
the frozen VQ-VAE decoder turns frames into mV. The posterior network is a bidirectional GRU run
over each segment on its own (the context; in training also the future), so the context part of
the posterior is the same in training and forecasting. A forecast integrates the posterior over the
context, then the prior from there: S sampled paths. The path KL comes from torchsde's `logqp`.

Beat drafts (`model.draft_beats`, the recipe of config_sde.json): the emission adds, frame by frame, the
frames of a draft of the future: beats laid at beat times (drafts.draft_waves, as the Transformer's
drafts). In training the draft is the context's mean beat at the window's own R peaks, so the state learns
to render what the draft misses (shape changes, amplitude, noise); a forecast draws beat times per path
(drafts.draw_beat_times) and lays one of the context's own beats at each, so timing spread comes from
the drafts and the rest from the SDE. With `model.hold_band` (the recipe) what a path departs from its
draft is high-passed at the data's lower band edge (drafts.hold_to_band): left alone, the prior's
departure drifted below the band every recording was filtered to, by 0.2-0.3 mV over 20 s. A forecast adds
`model.departure_scale` times that departure (the recipe: 0.5): at full scale the mean path beats the drafts'
but the CRPS only ties theirs, and half of it scored the lowest CRPS on the validation patients
(EXPERIMENTS.md, session 31).

Without drafts, a beat phase in the state (`model.phase_harmonics` > 0, as in checkpoints older than the drafts):
- z[0] is a beat phase (radians) and z[1] a beat rate (Hz = min_rate_hz + softplus(z[1] + offset)):
  h moves the phase at 2 pi rate (plus an MLP share); every network sees cos/sin harmonics of the
  phase, not its raw value. Beats come from a phase that keeps turning, so sampled paths keep beating.
- The GRU also reads a phase psi off each frame, and the segment's rate off psi's mean step; the
  posterior locks z[0] to psi and z[1] to that rate (a phase-locked loop), corrects only
  z[:corrected_dims], and starts there. An annealed hint (loss.phase_hint, falling to 0) pulls psi
  and the rate toward the annotated beats of the training patients, so the emission learns to read
  the phase; without it the objective is the ELBO.
- Other dimensions start from q(z0) and follow the prior (morphology, amplitude, ...).
"""
from __future__ import annotations

import bisect
import copy
import math
import threading
import weakref
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchsde

from drafts import Rhythm, add_noise, context_rhythm, draft_waves, hold_matrix, hold_to_band
from forecast import ForecasterBase, context_tail, model_device, one_by_one, warn_short_context
from hyper_params import Config
from hyper_params_sde import SDEConfig, SDEModelConfig, check_solver_dt, stored_sde_config
from train_results import float32_default, load_weights
from vqvae import VQVAE, vqvae_from


TEMPLATE_EXCLUDE = 4  # frames: the phase template of a frame never reads the context frames this close to it
MAX_DRIFT = 30.0   # state units per second: learned drifts are soft-clipped to this, so no state can run away
DIFFUSION_START = 0.15   # each g_i starts this fraction of the way from its floor to its ceiling
Z0_LOGSTD = (-6, 2)   # log std bounds of q(z0) and p(z0) (std 0.0025..7.4): the initial KL and draws stay finite
REST_HZ = 1.2   # 72 bpm: the beat rate of z[1] = 0, and the rate a one-frame segment, which shows none, is read at
# the networks f, g and h run, whose parameters the adjoint differentiates besides the encoded frames (no beat
# phase's: the adjoint refuses one, hyper_params_sde)
ADJOINT_NETS = ("prior", "correction", "diffusion")
LEARNS_CRPS = ("prior", "diffusion", "emission")   # what PathCRPS trains; the posterior keeps its ELBO weights
Seeds = int | list[int]     # one for a batch drawn together, or one per row, each row then drawn alone
# sample_frames keeps its call's context on the model (torchsde's f(t, z) is told no more), so a model samples for
# one thread at a time; each model (DataParallel's replicas too) under a lock of its own
SAMPLING: weakref.WeakKeyDictionary[LatentSDE, threading.Lock] = weakref.WeakKeyDictionary()


def soft_clip(x: torch.Tensor) -> torch.Tensor:
    """x soft-clipped to (-MAX_DRIFT, MAX_DRIFT): tanh keeps a gradient where a hard clip would have none."""
    return MAX_DRIFT * torch.tanh(x / MAX_DRIFT)


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out))


class DiagonalDiffusion(nn.Module):
    """g_i(z_i) in scale_i * (min, max): one tiny MLP per state dimension, evaluated for all dimensions at once.

    The floor keeps the path KL, 0.5 |(f - h) / g|^2, finite: without it noise that only hurts the
    reconstruction is learned away (g -> 0) while the posterior still steers that dimension.
    Each g_i sees only z_i, which is what torchsde's 'diagonal' noise (Milstein, SRK) assumes.
    `additive` makes every g_i a learned constant, `constant_first` only g_0 (the beat phase, whose
    raw value grows without bound)."""

    def __init__(self, size: int, hidden: int, min_value: float, max_value: float, additive: bool = False,
                 constant_first: bool = False, scale: list[float] | None = None):
        super().__init__()
        self.min_value, self.max_value = min_value, max_value
        self.additive, self.constant_first = additive, constant_first
        self.register_buffer("scale", torch.tensor(scale or [1.0] * size, dtype=torch.float32))  # range per dim
        self.w1 = nn.Parameter(torch.randn(size, hidden))
        self.b1 = nn.Parameter(torch.randn(size, hidden) * 0.1)
        self.w2 = nn.Parameter(torch.randn(size, hidden) / math.sqrt(hidden) * 0.1)
        self.b2 = nn.Parameter(torch.full((size,), math.log(DIFFUSION_START / (1 - DIFFUSION_START))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.additive:
            z = z * 0   # not dropped: solvers differentiate g in z
        elif self.constant_first:
            z = torch.cat([z[:, :1] * 0, z[:, 1:]], 1)
        h = F.silu(z[..., None] * self.w1 + self.b1)
        unit = torch.sigmoid((h * self.w2).sum(-1) + self.b2)
        return self.scale * (self.min_value + (self.max_value - self.min_value) * unit)


def derived_seed(*keys: int) -> int:
    """A seed of its own for these keys (numpy's SeedSequence): streams that share no draws."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def window_seeds(windows: torch.Tensor, use: int) -> list[int]:
    """A seed per window from its index in the split alone, one stream per `use` (initial state, posterior path,
    forecast check): validation draws the same numbers for a window in any batch, on any number of processes."""
    return [derived_seed(int(i), use) for i in windows.tolist()]


def normal_like(like: torch.Tensor, seed: Seeds) -> torch.Tensor:
    """Standard normal noise shaped like `like` from `seed`: one generator for the whole tensor, or one per row."""
    def draw(shape: torch.Size, s: int) -> torch.Tensor:
        gen = torch.Generator(device=like.device).manual_seed(int(s))
        return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)
    if isinstance(seed, list):
        if len(seed) != len(like):      # one seed would broadcast to every row, and torchsde says only 'Batch sizes'
            raise ValueError(f"{len(seed)} seeds for {len(like)} rows: give one seed per row")
        return torch.stack([draw(like.shape[1:], s) for s in seed])
    return draw(like.shape, seed)


def solver_times(t0: float, t1: float, dt: float, dtype: torch.dtype) -> list[float]:
    """The times a fixed-step torchsde solver steps through from t0 to t1, summed as it sums them (its
    integrate: t = min(t + dt, t1) in the dtype of ts): in float32 they drift off t0 + j·dt at a dt that is not a
    power of two (at 0.01 s, 4.4875 s came out 1e-5 s later), by whole steps at a small one. On the CPU, whatever
    torch's default device: a GPU's (set_default_device) waited on the card twice a step, 'meta' failed outright."""
    t, end, out = torch.tensor(t0, dtype=dtype, device="cpu"), torch.tensor(t1, dtype=dtype, device="cpu"), [t0]
    while t < end:
        t = min(t + dt, end)
        out.append(float(t))
    return out


class RowBrownian(torchsde.BaseBrownian):
    """Brownian motion [B, channels] on a fixed-step solver's grid (solver_times: t0, t0 + dt, ..., t1) whose row i
    is drawn from seeds[i] alone, so a row's path does not depend on the rows beside it (validation, seeded per
    window). One generator per row, drawn once: a torchsde.BrownianInterval per row made validation 8 times slower.
    Its values at grid points are exact; a time off the grid (an adaptive solver's) is an error."""

    def __init__(self, t0: float, t1: float, dt: float, channels: int, like: torch.Tensor, seeds: list[int],
                 space_time: bool, time_dtype: torch.dtype = torch.float32):
        self.t0, self.dt, self.space_time, self.channels = t0, dt, space_time, channels
        self.times = solver_times(t0, t1, dt, time_dtype)
        steps = len(self.times) - 1
        h = torch.tensor([b - a for a, b in zip(self.times, self.times[1:])], dtype=like.dtype, device=like.device)
        noise = normal_like(like.new_empty(len(seeds), 1 + space_time, steps, channels), seeds)
        increments = noise[:, 0] * h.sqrt()[:, None]
        self.W = torch.cat([torch.zeros_like(increments[:, :1]), increments.cumsum(1)], 1)   # [B, steps + 1, channels]
        self.H = noise[:, 1] * (h / 12).sqrt()[:, None] if space_time else None      # space-time Levy area per step

    def index(self, t: float | torch.Tensor) -> int:
        """The grid point at time `t`: the nearest, which must be within a thousandth of a step."""
        t = float(t)
        j = bisect.bisect_left(self.times, t)
        j = min((k for k in (j - 1, j) if 0 <= k < len(self.times)), key=lambda k: abs(self.times[k] - t))
        if abs(self.times[j] - t) > 1e-3 * self.dt:
            raise ValueError(f"RowBrownian: time {t} is not on the solver's grid of step {self.dt}")
        return j

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_A or (return_U and not self.space_time):
            raise ValueError("RowBrownian gives the space-time Levy area of the srk method only")
        a, b = (0, self.index(ta)) if tb is None else (self.index(ta), self.index(tb))
        w = self.W[:, b] - self.W[:, a]
        if not return_U:
            return w
        if b != a + 1:
            raise ValueError("RowBrownian: a Levy area over more than one solver step")
        h = self.times[b] - self.times[a]
        return w, h * (0.5 * w + self.H[:, a])      # torchsde's U from H

    def __repr__(self) -> str:
        return f"RowBrownian({len(self.W)} rows, {self.channels} channels, t {self.t0}..{self.times[-1]}, dt {self.dt})"

    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.W), self.channels

    @property
    def levy_area_approximation(self) -> str:
        return "space-time" if self.space_time else "none"


class LatentSDE(nn.Module):
    """The SDE itself (torchsde calls f, g, h) plus the posterior network, emission and ELBO."""

    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, obs_size: int, cfg: SDEConfig, steps_per_second: float):
        super().__init__()
        m, s = cfg.model, cfg.solver
        check_solver_dt(s, steps_per_second)
        self.cfg, self.rate = cfg, float(steps_per_second)
        d, k = m.state_size, m.phase_harmonics
        self.phase = k > 0
        feat = d if k == 0 else 2 * k + d - 1     # features(z): z[0] as k cosines and k sines
        self.register_buffer("harmonics", torch.arange(1, k + 1, dtype=torch.float32))
        self.gru = nn.GRU(obs_size, m.encoder_hidden, bidirectional=True)
        self.ctx_out = nn.Linear(2 * m.encoder_hidden, m.context_size)
        self.qz0 = nn.Linear(m.context_size, 2 * d)
        self.pz0_mean = nn.Parameter(torch.zeros(d))
        self.pz0_logstd = nn.Parameter(torch.zeros(d))
        self.prior = mlp(feat, m.hidden_size, d)
        self.corrected = m.corrected_dims or d
        self.correction = mlp(feat + m.context_size, m.hidden_size, self.corrected)
        scale = [1.0, s.rate_diffusion_scale] + [1.0] * (d - 2) if self.phase else None
        self.diffusion = DiagonalDiffusion(d, m.diffusion_hidden, s.min_diffusion, s.max_diffusion,
                                           s.noise_type == "additive", constant_first=self.phase, scale=scale)
        self.drafted = m.draft_beats
        self.emission = mlp(feat + self.drafted, m.emission_hidden, obs_size)
        self.obs_logstd = nn.Parameter(torch.zeros(obs_size))
        if self.phase:
            self._add_phase_loop(m)
        self.template = self.phase and m.phase_template
        if self.template:
            self.template_kappa = nn.Parameter(torch.tensor(math.log(8.0)))   # sharpness of the phase match
            self.template_gain = nn.Parameter(torch.full((obs_size,), 0.5))
        self._add_state(obs_size)

    def _add_phase_loop(self, m: SDEModelConfig) -> None:
        """The beat phase's rate offset, the GRU's phase readout and the loop gains that lock z[0], z[1] to it."""
        self.rate_offset = math.log(math.expm1(max(REST_HZ - m.min_rate_hz, 0.05)))   # z[1] = 0 beats at REST_HZ
        self.beat_head = nn.Linear(m.context_size, 2)     # per frame: (cos, sin) of the phase psi
        self.lock = nn.Parameter(torch.zeros(2))           # loop gains, (0, 1 / dt) per second
        with torch.no_grad():    # the MLP's share of the phase drift starts small; phase prior wide
            self.prior[-1].weight[0].mul_(0.1)
            self.pz0_logstd[0] = math.log(2.0)

    def _add_state(self, obs_size: int) -> None:
        """What is not learned: the frames' standardisation, the optimiser step count, and the tensors of the
        batch being solved (set by encode, set_draft and f)."""
        # Frames are modelled standardised per dimension (statistics of the training patients).
        self.register_buffer("obs_mean", torch.zeros(obs_size))
        self.register_buffer("obs_std", torch.ones(obs_size))
        # Optimiser steps taken, for the annealing; a buffer so a resumed run continues the schedules.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._ctx: torch.Tensor | None = None          # [T, B, ctx] posterior features of the frames
        self._beat: torch.Tensor | None = None         # [T, B, 2] measured phase and rate (state units)
        self._tmpl: torch.Tensor | None = None         # [C, B, obs] context frames the phase template reads
        self._draft: torch.Tensor | None = None        # [T, B, obs + 1] normalised draft frames and a flag
        self._last_h: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ the SDE (torchsde interface)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """What the networks see of the state: cos/sin harmonics of the phase instead of its raw value."""
        if not self.phase:
            return z
        angle = z[..., :1] * self.harmonics
        return torch.cat([angle.cos(), angle.sin(), z[..., 1:]], -1)

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Posterior drift: the prior's plus a correction of z[:corrected] from the frames around t."""
        last = len(self._ctx) - 1
        # the frame index stays a tensor: float(t) would wait on the GPU at every solver step; 1e-3 of a frame
        # up, as frame k's float32 time times the rate falls a rounding short of k for half the frames at 45 per s
        now = (torch.as_tensor(t, device=self._ctx.device).double() * self.rate + 1e-3).floor().long().clamp(max=last)
        ahead = (now + 1).clamp(max=last)
        c = soft_clip(self.correction(torch.cat([self.features(z), self._ctx[ahead]], -1)))
        if self.phase:
            gain = torch.sigmoid(self.lock) / self.cfg.solver.dt  # gain * dt < 1: stable under Euler
            psi, rho = self._beat[now].unbind(-1)
            c = c + F.pad(torch.stack([gain[0] * torch.sin(psi - z[:, 0]), gain[1] * (rho - z[:, 1])], 1),
                          (0, self.corrected - 2))
        prior = self.h(t, z)
        self._last_h = (z, prior)    # torchsde's logqp asks for h(t, z) of this same z next
        return prior + F.pad(c, (0, z.shape[1] - self.corrected))

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Prior drift: a function of the state only (time-invariant: a window may start anywhere)."""
        if self._last_h is not None and self._last_h[0] is z:
            return self._last_h[1]
        out = soft_clip(self.prior(self.features(z)))
        if not self.phase:
            return out
        return torch.cat([out[:, :1] + 2 * math.pi * self.beat_hz(z[:, 1:2]), out[:, 1:]], 1)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.diffusion(z)

    def beat_hz(self, rate: torch.Tensor) -> torch.Tensor:
        """Beat rate in Hz of the rate coordinate z[1]."""
        return self.cfg.model.min_rate_hz + F.softplus(rate + self.rate_offset)

    # ------------------------------------------------------------------ pieces

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames - self.obs_mean) / self.obs_std

    def denormalise(self, frames: torch.Tensor) -> torch.Tensor:
        return frames * self.obs_std + self.obs_mean

    @torch.no_grad()
    def set_normaliser(self, frames: torch.Tensor) -> None:
        """Per-dimension mean and std of raw frames [..., obs]."""
        flat = frames.reshape(-1, frames.shape[-1]).float()
        self.obs_mean.copy_(flat.mean(0))
        self.obs_std.copy_(flat.std(0).clamp(min=1e-3))

    def encode(self, segments: list[torch.Tensor]) -> None:
        """Posterior features of normalised frames, each segment [T_k, B, obs] read on its own; with a
        phase also the measured beat phase psi of every frame and the segment's beat rate. The GRU's weights are
        packed into one chunk first: nn.DataParallel's replicas hold them apart, and cuDNN warned 'RNN module
        weights are not part of single contiguous chunk of memory' and packed them again at every GRU call (on the
        CPU the packing does nothing)."""
        self.gru.flatten_parameters()
        ctxs = [self.ctx_out(self.gru(seg)[0]) for seg in segments]
        self._ctx = torch.cat(ctxs, 0)
        if self.phase:
            self._beat = torch.cat([self.measure_beats(c) for c in ctxs], 0)
        if self.template:
            self._tmpl = segments[0]

    def set_draft(self, draft: torch.Tensor | None, before: int) -> None:
        """The beat draft added to the emission: raw frames [steps, B, obs] of the frames after the
        first `before` (the context, which has none: flag 0)."""
        if not self.drafted:
            return
        if draft is None:
            raise ValueError("this latent SDE reads beat drafts (model.draft_beats): pass the draft frames")
        d = torch.cat([self.normalise(draft.float()), torch.ones_like(draft[..., :1], dtype=torch.float32)], -1)
        self._draft = torch.cat([d.new_zeros(before, *d.shape[1:]), d])

    def emit(self, zs: torch.Tensor, first: int) -> torch.Tensor:
        """Frames of states zs [T, B, d] at frame indices first, first + 1, ...: the emission MLP, plus
        (draft_beats) the draft frames, or (phase_template) the context's frames of the same beat phase.
        The emission never sees the draft, only whether there is one: it renders what the draft misses,
        and a state drawn from the prior cannot undo the draft (an emission that read the draft learned
        to drop the beats of patients unlike the training ones)."""
        if self.drafted:
            d = self._draft[first:first + len(zs)]
            return self.emission(torch.cat([self.features(zs), d[..., -1:]], -1)) + d[..., :-1]
        out = self.emission(self.features(zs))
        return out + self.template_frames(zs, first) if self.template else out

    def template_frames(self, zs: torch.Tensor, first: int) -> torch.Tensor:
        """The context frames whose measured phase matches each state's, averaged (softmax of the match) and
        scaled by template_gain, so beats keep the patient's own shape and amplitude instead of a population
        average; a frame never reads the context frames within TEMPLATE_EXCLUDE of its own index."""
        frames = self._tmpl
        psi = self._beat[:len(frames), :, 0]                                     # their phases [C, B]
        logits = self.template_kappa.exp() * torch.cos(zs[:, None, :, 0] - psi[None])        # [T, C, B]
        if len(frames) > 2 * TEMPLATE_EXCLUDE + 1:
            t = torch.arange(first, first + len(zs), device=zs.device)
            near = (t[:, None] - torch.arange(len(frames), device=zs.device)).abs() <= TEMPLATE_EXCLUDE
            logits = logits.masked_fill(near[..., None], float("-inf"))
        return self.template_gain * torch.einsum("tcb,cbo->tbo", logits.softmax(1), frames)

    def measure_beats(self, ctx: torch.Tensor) -> torch.Tensor:
        """[T, B, 2]: phase psi per frame (from the GRU) and, in rate coordinates, the segment's rate:
        the mean phase step between frames, each wrapped to (-pi, pi]. A rate read off the phase
        over the whole segment is as steady as the beats; one read off single frames is not."""
        b = self.beat_head(ctx)
        psi = torch.atan2(b[..., 1], b[..., 0])
        if len(psi) > 1:
            step = torch.remainder(psi[1:] - psi[:-1] + math.pi, 2 * math.pi) - math.pi
            # kept above the floor: a rate at min_rate_hz has no rate coordinate (log(expm1(0)))
            hz = (step.mean(0) * self.rate / (2 * math.pi)).clamp(min=self.cfg.model.min_rate_hz + 0.01)
        else:
            hz = psi.new_full(psi.shape[1:], REST_HZ)
        rho = torch.log(torch.expm1(hz - self.cfg.model.min_rate_hz)) - self.rate_offset
        return torch.stack([psi, rho.expand_as(psi)], -1)

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log std of q(z0); with a phase, phase and rate start at the measured ones."""
        mean, logstd = self.qz0(self._ctx[0]).chunk(2, -1)
        if self.phase:
            mean = torch.cat([self._beat[0], mean[:, 2:]], 1)
        return mean, logstd.clamp(*Z0_LOGSTD)

    def observation_std(self) -> torch.Tensor:
        return self.cfg.model.min_obs_std + F.softplus(self.obs_logstd)

    def brownian(self, t0: float, t1: float, size: tuple[int, int], like: torch.Tensor,
                 entropy: Seeds, time_dtype: torch.dtype = torch.float32) -> torchsde.BaseBrownian:
        """Brownian motion fixed by `entropy` alone (its own generators: the global RNG is untouched); a list gives
        every row a path of its own seed's (RowBrownian, on the grid of solver steps from times of `time_dtype`)."""
        dt, srk = self.cfg.solver.dt, self.cfg.solver.method == "srk"
        if isinstance(entropy, list):
            return RowBrownian(t0, t1, dt, size[1], like, entropy, srk, time_dtype)
        return torchsde.BrownianInterval(t0, t1, size, like.dtype, like.device, entropy=entropy, dt=dt,
                                         levy_area_approximation="space-time" if srk else "none")

    def solve(self, z0: torch.Tensor, ts: torch.Tensor, entropy: Seeds, logqp: bool = False, prior: bool = False):
        """torchsde.sdeint (or sdeint_adjoint) of the posterior, or of the prior with `prior`."""
        # logqp appends the running KL to the state, and torchsde wants noise for it too
        bm = self.brownian(float(ts[0]), float(ts[-1]), (len(z0), z0.shape[1] + int(logqp)), z0, entropy, ts.dtype)
        s = self.cfg.solver
        kw = dict(dt=s.dt, method=s.method, bm=bm, names={"drift": "h"} if prior else None)
        self._last_h = None
        if s.adjoint and torch.is_grad_enabled():
            # the drift's inputs and the networks of f, g and h only: torchsde differentiates f in every adjoint
            # parameter, so the GRU behind self._ctx given too had its share counted twice (once through self._ctx)
            params = (self._ctx,) + tuple(p for name, p in self.named_parameters()
                                          if name.split(".")[0] in ADJOINT_NETS and p.requires_grad)
            return torchsde.sdeint_adjoint(self, z0, ts, logqp=logqp, adjoint_params=params, **kw)
        return torchsde.sdeint(self, z0, ts, logqp=logqp, **kw)

    def hint_weight(self) -> float:
        """Weight of the beat hint: loss.phase_hint falling linearly to 0 (always 0 when evaluating)."""
        lo = self.cfg.loss
        if not self.training or not self.phase or lo.phase_hint_steps == 0:
            return 0.0
        return lo.phase_hint * max(0.0, 1 - int(self.steps) / lo.phase_hint_steps)

    def kl_weight(self) -> float:
        """Linear warm-up of the KL weight from loss.kl_start to loss.kl_weight (the ELBO at 1)."""
        lo = self.cfg.loss
        if not self.training or lo.kl_anneal_steps == 0:
            return lo.kl_weight
        frac = min(1.0, int(self.steps) / lo.kl_anneal_steps)
        return lo.kl_start + (lo.kl_weight - lo.kl_start) * frac

    def beat_errors(self, beats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """How far the measured phase (1 - cos) and rate (squared log ratio) are from the annotated
        beats [B, T, 2] (phase in radians, rate in Hz; NaN where unknown), mean over known frames; and how many
        frames are known, to pool the means over batches by."""
        target = beats.transpose(0, 1)
        known = torch.isfinite(target[..., 0])
        n = known.sum().clamp(min=1)
        phase_miss = 1 - torch.cos(self._beat[..., 0] - torch.nan_to_num(target[..., 0]))
        hz = torch.nan_to_num(target[..., 1], 1.0)
        rate_miss = (torch.log(self.beat_hz(self._beat[..., 1])) - torch.log(hz)) ** 2
        return (phase_miss * known).sum() / n, (rate_miss * known).sum() / n, known.sum().float()

    # ------------------------------------------------------------------ training

    def observation_nll(self, x: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood of normalised frames x [T, B, obs] around the emitted pred,
        summed over frames and dimensions, mean over the batch: the ELBO's reconstruction term."""
        std = self.observation_std()
        return (0.5 * ((x - pred) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)).sum((0, 2)).mean()

    def initial_kl(self, mean: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
        """KL(q(z0) || p(z0)) of the initial state, summed over its dimensions, mean over the batch."""
        q0 = torch.distributions.Normal(mean, logstd.exp())
        p0 = torch.distributions.Normal(self.pz0_mean, self.pz0_logstd.clamp(*Z0_LOGSTD).exp())
        return torch.distributions.kl_divergence(q0, p0).sum(-1).mean()

    def forward(self, frames: torch.Tensor, context: int, beats: torch.Tensor | None = None,
                draft: torch.Tensor | None = None, windows: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Negative ELBO of raw frames [B, T, obs], whose first `context` are the context, per observed value
        (T * obs), and its metrics. `beats` [B, T, 2] add a phase's annealed beat hint; `draft` [B, T - context, obs]
        are the raw draft frames of the rest; `windows` the frames' indices in their split (see draws). In eval
        mode the metrics also score a one-path prior forecast of the rest from the context alone (forecast_check)."""
        x = self.normalise(frames.float()).transpose(0, 1)                   # [T, B, obs]
        T, _, O = x.shape
        self.encode([x[:context], x[context:]])
        self.set_draft(None if draft is None else draft.transpose(0, 1), context)
        mean, logstd = self.initial()
        z0, entropy, check = self.draws(mean, logstd, windows)
        ts = torch.arange(T, dtype=x.dtype, device=x.device) / self.rate
        zs, log_ratio = self.solve(z0, ts, entropy, logqp=True)
        pred = self.emit(zs, 0)
        nll = self.observation_nll(x, pred)
        kl0 = self.initial_kl(mean, logstd)
        kl_path = log_ratio.sum(0).mean()
        weight = self.kl_weight()
        n = T * O
        loss = (nll + weight * (kl0 + kl_path)) / n
        metrics = {"recon": (nll / n).detach(), "kl": ((kl0 + kl_path) / n).detach(),
                   "kl_path": (kl_path / n).detach(), "kl_weight": x.new_tensor(weight),
                   "mse": F.mse_loss(pred, x).detach(), "diffusion": self.g(ts[0], zs[context]).mean().detach()}
        if self.phase and beats is not None:
            phase_err, rate_err, known = self.beat_errors(beats)
            loss = loss + self.hint_weight() * (phase_err + rate_err)
            metrics.update(phase_err=phase_err.detach(), rate_err=rate_err.detach(), beat_frames=known)
        if self.training:
            self.steps += 1
        else:
            metrics.update(self.forecast_check(x, context, check, draft))
        return loss, metrics

    @staticmethod
    def draws(mean: torch.Tensor, logstd: torch.Tensor, windows: torch.Tensor | None
              ) -> tuple[torch.Tensor, Seeds, Seeds]:
        """z0 drawn from q(z0), and the Brownian seeds of the posterior path and of the forecast check: from the
        global generator in training; with `windows` (validation) from each window's own seeds (window_seeds), so
        the validation loss of given weights is the same after any draws, in any batches, on any number of
        processes."""
        if windows is None:
            z0 = mean + logstd.exp() * torch.randn_like(mean)
            seed = int(torch.randint(0, 2 ** 31 - 1, (), device=mean.device))   # each GPU's own generator
            return z0, seed, seed
        z0 = mean + logstd.exp() * normal_like(mean, window_seeds(windows, 0))
        return z0, window_seeds(windows, 1), window_seeds(windows, 2)

    @torch.no_grad()
    def forecast_check(self, x: torch.Tensor, context: int, entropy: Seeds, draft: torch.Tensor | None) -> dict:
        """One prior path per window from the context alone (and the draft at the true beats): latent MSE
        and how much of the true variation the last second keeps (near 0: it decays to a flat line). With a draft,
        of the truth's departure from it: the draft's beats alone kept about all of the truth's variation, whatever
        the SDE did. The last second is two frames at least: at one frame a second (128 Hz / 128) it was one, whose
        spread is NaN; a future of one frame has none to measure (NaN, said without torch's warning)."""
        draft = None if draft is None else draft.transpose(0, 1)
        fut = self.sample_frames(x[:context], len(x) - context, 1, entropy, normalised=True, draft=draft)
        truth = x[context:]
        if draft is not None:
            base = self.normalise(draft.float())
            fut, truth = fut - base, truth - base
        last = max(2, int(round(self.rate)))
        if len(truth) < 2:
            ratio = torch.full((), math.nan, device=x.device)
        else:
            ratio = fut[-last:].std(0).mean(-1) / truth[-last:].std(0).mean(-1).clamp(min=1e-6)
        return {"forecast_mse": F.mse_loss(fut, truth), "late_std_ratio": ratio.mean()}

    # ------------------------------------------------------------------ forecasting

    def sample_frames(self, context: torch.Tensor, steps: int, num_samples: int, seed: Seeds,
                      normalised: bool = False, draft: torch.Tensor | None = None) -> torch.Tensor:
        """Sampled future frames [steps, B * S, obs] (the S paths of a context next to each other)
        from normalised context frames [C, B, obs]: posterior over the context, then the prior; a
        drafting model reads raw draft frames [steps, B * S, obs], one draft per path. Differentiable,
        for the CRPS fine-tuning (PathCRPS): forecasts call it under no_grad. A list of seeds, one per path, draws
        each path from its own seed alone (RowBrownian), whatever paths are beside it."""
        if steps < 0 or num_samples < 1:    # -1 stopped in an IndexError or 'Repeats must be non-negative', 0 drew none
            raise ValueError(f"sample_frames takes steps >= 0 and num_samples >= 1, got steps {steps}, num_samples "
                             f"{num_samples}")
        C = len(context)
        with SAMPLING.setdefault(self, threading.Lock()):
            self.encode([context])
            self._ctx = self._ctx.repeat_interleave(num_samples, 1)
            if self.phase:
                self._beat = self._beat.repeat_interleave(num_samples, 1)
            if self.template:
                self._tmpl = self._tmpl.repeat_interleave(num_samples, 1)
            self.set_draft(draft, C)
            mean, logstd = self.initial()
            z = mean + logstd.exp() * normal_like(mean, seed)
            posterior, prior = path_seeds(seed)
            ts = torch.arange(C + steps, dtype=context.dtype, device=context.device) / self.rate
            if C > 1:
                z = self.solve(z, ts[:C], posterior)[-1]
            zs = self.solve(z, ts[C - 1:], prior, prior=True)[1:]
            out = self.emit(zs, C)
        return out if normalised else self.denormalise(out)


def path_seeds(seed: Seeds) -> tuple[Seeds, Seeds]:
    """The Brownian entropies of a sample's posterior (context) and prior (future) paths, from its seed(s)."""
    if isinstance(seed, list):
        pairs = [path_seeds(s) for s in seed]
        return [p for p, _ in pairs], [q for _, q in pairs]
    posterior, prior = np.random.SeedSequence([int(seed) % 2 ** 63, 1]).generate_state(2)
    return int(posterior), int(prior)


class LatentSDEForecaster(ForecasterBase):
    """Frozen VQ-VAE encoder -> latent SDE (posterior over the context, prior beyond) -> frozen decoder."""

    name = "latent_sde"
    deterministic = False

    def __init__(self, vq: VQVAE, sde: LatentSDE, cfg: Config, scfg: SDEConfig,
                 device: str | torch.device | None = None):
        self.device = model_device(device)
        self.vq, self.sde = vq.to(self.device).eval(), sde.to(self.device).eval()
        self.cfg, self.scfg = cfg, scfg
        self.fs = cfg.data.samples_per_second
        self.factor = cfg.model.downsample_factor
        self.context_frames = cfg.data.window_samples // self.factor

    @classmethod
    @float32_default()
    def from_checkpoint_dict(cls, ckpt: dict, path: str | Path, device: str | torch.device | None = None
                             ) -> "LatentSDEForecaster":
        """Build from a loaded latent_sde checkpoint: it carries the VQ-VAE weights and both configs. The modules are
        built on the CPU whatever torch's default device (as Forecaster.from_checkpoint builds them), then moved."""
        with torch.device("cpu"):
            vq, cfg = vqvae_from(ckpt["vqvae"], str(path))
            scfg = stored_sde_config({k: ckpt["config"][k] for k in ("model", "solver", "loss", "train")},
                                     f"latent SDE config stored in {path}")
            sde = LatentSDE(cfg.model.latent_dim, scfg, cfg.data.samples_per_second / cfg.model.downsample_factor)
            load_weights(sde, ckpt["model"], path)
        out = cls(vq, sde, cfg, scfg, device)
        out.from_run(path, ckpt)
        return out

    @one_by_one
    @torch.no_grad()
    def predict(self, x: np.ndarray, horizon: int, num_samples: int = 100, seed: int = 0) -> np.ndarray:
        self.scfg.validate()    # fc.scfg's forecast-time keys, set anew (README), are checked as a config's
        check_solver_dt(self.scfg.solver, self.sde.rate)
        x_np = context_tail(x, min(x.shape[1] // self.factor, self.context_frames), self.factor, "latent step")
        warn_short_context(x.shape[1], self.context_frames * self.factor, self.fs)   # once it can forecast at all
        x = torch.from_numpy(x_np).to(self.device)
        unit, frames = self.encode_context(x)
        steps = math.ceil(horizon / self.factor)
        rhythm = drafts = round_trip = waves = None
        if self.sde.drafted:
            rhythm = context_rhythm(x_np, self.fs)      # for the drafts and their noise
            drafts, round_trip, waves = self.draft_frames(x, steps, num_samples, seed, rhythm)
        paths = self.roll(x, unit, frames, steps, num_samples, seed, drafts, round_trip, waves)
        paths = paths[:, :horizon].cpu().numpy()
        if waves is not None:   # roll gave departures from the drafts: a path is its draft plus a share of its own
            band = self.cfg.data.filter_band[0], self.cfg.data.filter_order
            departure = hold_to_band(paths, x.shape[1], *band, self.fs) if self.holds() else paths
            paths = waves[:, :horizon].cpu().numpy() + self.scfg.model.departure_scale * departure
        return add_noise(paths.reshape(1, num_samples, horizon, 2), x_np, self.fs, self.scfg.model.draft_noise,
                         seed, rhythm)

    def roll(self, x: torch.Tensor, unit: torch.Tensor, frames: torch.Tensor, steps: int, num_samples: int,
             seed: int, drafts: torch.Tensor | None, round_trip: torch.Tensor | None, waves: torch.Tensor | None
             ) -> torch.Tensor:
        """The paths' decoded frames [S, steps * factor, 2] (a drafting model's: their departures from the decoded
        drafts), a trained horizon at a time. Each block after the first starts from the posterior over the last
        context of its own path, as a training window does (one SDE run over 60 s faded its paths to half the
        recording's size, EXPERIMENTS.md, session 36). That context is the draft plus `departure_scale` times the
        departure at the first context's gain, without predict's noise (not what the SDE renders) and hold (which
        moves a block's departure by 0.015 mV at most over 30 s of record 100). Its last samples carry the decoder's
        edge (up to 0.3 mV); decoding the draft alone too would remove it at a sixth more time, and changed no
        forecast's seams or beat size."""
        u = unit.repeat_interleave(num_samples, 0)
        block = self.context_frames * max(1, self.cfg.data.forecast_predictions)
        ctx = self.context_frames * self.factor
        history, out, n = x, [], num_samples     # n: paths per context; after the first block each path is one
        for k, start in enumerate(range(0, steps, block)):
            m, span = min(block, steps - start), slice(start * self.factor, (start + block) * self.factor)
            sde_seed = derived_seed(seed, 0, *([k] if k else []))   # block 0: a one-block forecast's seed, as shipped
            draft = None if drafts is None else drafts[:, start:start + m].transpose(0, 1)
            out.append(self.sde.sample_frames(frames, m, n, sde_seed, draft=draft).permute(1, 2, 0))  # [S, obs, m]
            if start + m < steps:        # the next block's context: the paths so far, as they come out
                path = decode_frames(self.vq, out[-1], u, self.context_frames)
                if waves is not None:
                    path = waves[:, span] + self.scfg.model.departure_scale * (path - round_trip[:, span])
                history = torch.cat([history.expand(num_samples, -1, -1), path.float()], 1)[:, -ctx:]
                frames = self.sde.normalise(self.vq.encode_latent(history, u).permute(2, 0, 1))
                n = 1
        # one block as it came: torch.cat's copy of it changes its strides, and the decoder's rounding with them
        wave = decode_frames(self.vq, out[0] if len(out) == 1 else torch.cat(out, 2), u, self.context_frames)
        return wave if round_trip is None else wave - round_trip

    def path_crps(self, signals: torch.Tensor, num_samples: int, seed: int, held: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fair CRPS (mV) of `num_samples` paths per window [B, C + H, 2] (C the model's context) against its last
        H samples, differentiable in the SDE, and that of the bare drafts with the same noise (for one window, at
        the recipe's spread and noise: the template ensemble's paths of the same seed). Drafts and noise are drawn
        as `predict` draws them for one window; `held` makes the paths a forecast's, held to the band and their
        departure scaled (not in training: trained through, the hold scored worse on validation, EXPERIMENTS.md,
        session 19, and a scale would be undone)."""
        c = self.context_frames * self.factor
        x, y = signals[:, :c], signals[:, c:]
        steps, horizon = math.ceil(y.shape[1] / self.factor), y.shape[1]
        x_np = x.detach().cpu().numpy()
        rhythm = context_rhythm(x_np, self.fs)
        with torch.no_grad():
            unit, frames = self.encode_context(x)
            drafts, round_trip, waves = self.draft_frames(x, steps, num_samples, seed, rhythm)
        # held, the SDE draws a forecast's first block's paths too (roll's seed), so the validation score is evaluate's
        fut = self.sde.sample_frames(frames, steps, num_samples, derived_seed(seed, 0) if held else seed,
                                     draft=drafts.transpose(0, 1))
        wave = decode_frames(self.vq, fut.permute(1, 2, 0), unit.repeat_interleave(num_samples, 0),
                             self.context_frames)          # as round_trip: in pieces past one, as a forecast decodes
        shape = (len(x), num_samples, horizon, 2)
        drafted = torch.from_numpy(add_noise(waves[:, :horizon].reshape(shape).cpu().numpy(), x_np, self.fs,
                                             self.scfg.model.draft_noise, seed, rhythm)).to(x.device)
        departure = (wave - round_trip)[:, :horizon]
        if held:
            if self.holds():
                band = hold_matrix(x.shape[1], horizon, self.cfg.data.filter_band[0], self.cfg.data.filter_order,
                                   self.fs)
                departure = torch.einsum("pnc,nt->ptc", departure, torch.tensor(band, device=x.device))
            departure = self.scfg.model.departure_scale * departure
        return fair_crps(drafted + departure.reshape(shape), y), fair_crps(drafted, y).detach()

    def encode_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The context's gain and its normalised latent frames [C, B, obs], what every path starts from."""
        unit = self.vq.unit(x, warn=False)      # predict warned of the context's unit (as_context)
        return unit, self.sde.normalise(self.vq.encode_latent(x, unit).permute(2, 0, 1))

    def holds(self) -> bool:
        """Whether paths are held to the band: the recipe asks it and the data were high-passed."""
        return self.scfg.model.hold_band and self.cfg.data.filter_band[0] > 0

    def draft_frames(self, x: torch.Tensor, steps: int, num_samples: int, seed: int, rhythm: Rhythm | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw latent frames [B * S, steps, obs] of each path's beat draft (beat times drawn per path), those
        frames decoded at the context's gain (the draft's VQ-VAE round trip), and the draft itself, both
        [B * S, steps * factor, 2] mV. A path is its draft plus how its decoded frames depart from the round trip,
        so a path the SDE leaves at its draft is the draft itself, not its round trip, which cost the drafts 12%
        more squared error (EXPERIMENTS.md)."""
        waves, index = draft_waves(x.cpu().numpy(), steps * self.factor, self.fs, num_samples, seed,
                                   jitter=self.scfg.model.draft_spread, rhythm=rhythm)
        # float32: drafts of the mean beat (a context without a whole beat) come in float64, and so did the forecast
        waves = torch.from_numpy(waves.astype(np.float32, copy=False)).to(self.device)
        index = torch.from_numpy(index).to(self.device)
        owner = torch.empty(len(waves), dtype=torch.long, device=self.device)    # each draft's context
        owner[index] = torch.arange(len(x), device=self.device).repeat_interleave(num_samples)
        unit = self.vq.unit(x, warn=False)[owner]       # coded and decoded at the context's gain, as the paths are
        frames = latent_frames(self.vq, waves, self.context_frames * self.factor, unit=unit)
        round_trip = decode_frames(self.vq, frames.transpose(1, 2), unit, self.context_frames)
        return frames[index], round_trip[index], waves[index]


class PathCRPS(nn.Module):
    """A latent SDE trained on what its forecasts are scored on: the fair CRPS of sampled paths in mV, from
    forecast-time drafts (latent_sde_train.py --crps-from). The ELBO teaches the prior to explain windows the
    posterior saw whole; this teaches it the spread and the departures from a mistimed draft that lower a
    forecast's CRPS. Only the prior drift, the diffusion and the emission learn: with the posterior network
    learning too, the validation patient 109's CRPS rose with every step, to 0.1483 mV against its bare drafts'
    0.1424 (EXPERIMENTS.md, session 19). In eval mode (validation) the paths are a forecast's: held to the
    band, their departure scaled. The forward is the loss so that the generic trainer (DDP, DataParallel)
    can run it; its state is the SDE's own."""

    def __init__(self, forecaster: LatentSDEForecaster, num_samples: int):
        super().__init__()
        if not forecaster.sde.drafted:
            raise ValueError("CRPS fine-tuning needs a latent SDE with beat drafts (model.draft_beats)")
        self.sde, self.vq, self.num_samples = forecaster.sde, forecaster.vq.requires_grad_(False), num_samples
        self.forecaster = [forecaster]          # a list: its settings, not more modules
        for name, p in self.sde.named_parameters():
            p.requires_grad_(name.split(".")[0] in LEARNS_CRPS)

    def train(self, mode: bool = True) -> "PathCRPS":
        super().train(mode)
        self.vq.eval()                          # in training mode its codebooks would update
        return self

    def forward(self, signals: torch.Tensor, seed: int | torch.Tensor) -> tuple[torch.Tensor, dict]:
        """`seed`: one for the batch (training: its windows draw their drafts and paths together), or one per
        window, each then drawn alone as a forecast is: a validation score the same whatever the batches and
        processes."""
        fc = copy.copy(self.forecaster[0])      # this replica's networks and device (DataParallel copies them)
        fc.sde, fc.vq, fc.device = self.sde, self.vq, signals.device
        if isinstance(seed, torch.Tensor):
            each = [fc.path_crps(signals[i:i + 1], self.num_samples, int(s), held=not self.training)
                    for i, s in enumerate(seed.tolist())]
            loss, drafts = (torch.stack(v).mean() for v in zip(*each))
        else:
            seed = replica_seed(seed, signals.device, self.forecaster[0].device)
            loss, drafts = fc.path_crps(signals, self.num_samples, seed, held=not self.training)
        return loss, {"crps": loss.detach(), "drafts_crps": drafts, "gain": drafts - loss.detach()}

    def state_dict(self, *args, **kwargs) -> dict:
        return self.sde.state_dict(*args, **kwargs)

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        return self.sde.load_state_dict(state, strict, assign)


def replica_seed(seed: int, device: torch.device, home: torch.device) -> int:
    """DataParallel hands every replica the batch's seed: the replica k cards after the model's own draws its
    share's paths from a seed of its own, not replica 0's again; a model on one card, whichever, keeps the seed."""
    k = (device.index or 0) - (home.index or 0)
    return derived_seed(seed, k) if k else seed


def fair_crps(paths: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean fair CRPS of sample paths [B, S, H, 2] against truth [B, H, 2]: unbiased in S, so 8 paths a
    window train toward the same spread as 100 would (the plain estimator rewards too little spread)."""
    s = paths.shape[1]
    skill = (paths - truth[:, None]).abs().mean(1)
    spread = (paths[:, :, None] - paths[:, None]).abs().sum((1, 2)) / (2 * s * (s - 1))
    return (skill - spread).mean()


def decode_frames(vq: VQVAE, z: torch.Tensor, unit: torch.Tensor, piece: int | None = None,
                  batch: int = 512) -> torch.Tensor:
    """Signals [N, T, 2] in mV of latent frames z [N, latent, T / factor], in batches; with `piece`, a longer z
    in overlapping runs of `piece` frames, as the VQ-VAE was trained (overlap_add): its attention over a long
    horizon rendered even the first beats smaller (a 60 s forecast's first second at two thirds of a 3 s one's).
    Differentiable in z: PathCRPS trains through it."""
    if piece and z.shape[2] > piece:
        return overlap_add(lambda part: decode_frames(vq, part.transpose(1, 2), unit, None, batch),
                           z.transpose(1, 2), piece, vq.factor)
    return torch.cat([vq.decode_latent(z[i:i + batch], unit[i:i + batch]) for i in range(0, len(z), batch)])


@torch.no_grad()
def latent_frames(vq: VQVAE, x: torch.Tensor, piece: int | None = None, batch: int = 512,
                  unit: torch.Tensor | None = None) -> torch.Tensor:
    """Continuous encoder frames [N, T / factor, latent] of signals [N, T, 2], each coded on its own on the VQ-VAE's
    device, returned on the signals'; with `piece`, a longer signal in overlapping runs of `piece` samples
    (see decode_frames). `unit` [N, 1, 2]: the gains to code them at (their context's: a forecast decodes its
    future at the context's gain), else each signal's own (VQVAE.unit)."""
    if piece and x.shape[1] > piece:
        return overlap_add(lambda part: latent_frames(vq, part, None, batch, unit), x, piece, 1 / vq.factor)
    def coded(i: int) -> torch.Tensor:
        part = x[i:i + batch].float().to(vq.device)     # a forecast's as_context warned of the context's unit
        u = vq.unit(part, warn=False) if unit is None else unit[i:i + batch].to(vq.device)
        return vq.encode_latent(part, u).transpose(1, 2)
    return torch.cat([coded(i) for i in range(0, len(x), batch)]).to(x.device)


def overlap_add(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, piece: int, ratio: float
                ) -> torch.Tensor:
    """fn of x [N, T, ...] (time on dim 1; fn's output has `ratio` steps per input step) over windows of `piece`
    steps half a window apart, blended with triangular weights: each output step comes mostly from windows that
    hold it far from their edges, so the windows' seams do not show as steps in the signal. With fewer output than
    input steps (an encoder's frames of samples), windows start on whole output steps: half of an odd number of
    frames' samples (360 Hz x 3 s at factor 8) would start one between two frames and blend frames of shifted
    samples into the grid's."""
    t, stride = x.shape[1], max(1, round(1 / ratio))
    if t % stride or piece % stride:
        raise ValueError(f"overlap_add: {t} and {piece} steps must be whole output steps of {stride}")
    hop = max(stride, piece // 2 // stride * stride)
    starts = sorted(set(range(0, t - piece, hop)) | {t - piece})
    parts = [fn(x[:, a:a + piece]) for a in starts]
    n = parts[0].shape[1]
    ramp = torch.arange(n, device=parts[0].device, dtype=parts[0].dtype)
    w = torch.minimum(ramp + 0.5, n - ramp - 0.5).view(1, n, *[1] * (parts[0].dim() - 2))
    out = parts[0].new_zeros((parts[0].shape[0], round(t * ratio), *parts[0].shape[2:]))
    total = torch.zeros_like(out[:1])
    for a, part in zip(starts, parts):
        at = round(a * ratio)
        out[:, at:at + n] += w * part
        total[:, at:at + n] += w
    return out / total
