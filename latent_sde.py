"""Latent SDE forecaster (Li et al. 2020, "Scalable gradients for stochastic differential equations").

The observations are the frozen VQ-VAE's continuous encoder frames (before quantisation): one
vector per `downsample_factor` samples, 16 per second at 128 Hz. A small state z(t) moves by

    prior      dz = h(z) dt                 + g(z) dW
    posterior  dz = (h(z) + c(z, ctx(t))) dt + g(z) dW

with time in seconds, diagonal noise (g_i depends on z_i only) and an MLP emission z(t) -> frame.
`ctx(t)` comes from a GRU run backward in time over the frames of one segment, so it tells the
posterior what is still to come. During training the posterior sees the context and the future
(each segment read on its own); when forecasting, it is integrated over the context only, and the
prior carries the state on. The posterior drift is the prior drift plus a correction, so the path
KL (torchsde `logqp`) penalises only the correction and the reconstruction gradient trains the
prior dynamics directly: the prior has to produce the beats itself.

Forecast frames are decoded to mV by the frozen VQ-VAE decoder.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchsde

from forecast import ForecasterBase, as_context
from hyper_params import Config, config_from_dict
from hyper_params_sde import SDEConfig, sde_config_from_dict
from vqvae import VQVAE


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out))


class DiagonalDiffusion(nn.Module):
    """g_i(z_i) in (0, max): one tiny MLP per state dimension, evaluated for all dimensions at once.

    Each g_i sees only z_i, which is what torchsde's 'diagonal' noise (Milstein, SRK) assumes.
    `additive` makes g_i a learned constant."""

    def __init__(self, size: int, hidden: int, max_value: float, additive: bool = False, init: float = 0.15):
        super().__init__()
        self.max_value, self.additive = max_value, additive
        self.w1 = nn.Parameter(torch.randn(size, hidden))
        self.b1 = nn.Parameter(torch.randn(size, hidden) * 0.1)
        self.w2 = nn.Parameter(torch.randn(size, hidden) / math.sqrt(hidden) * 0.1)
        self.b2 = nn.Parameter(torch.full((size,), math.log(init / (1 - init))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.additive:
            return (self.max_value * torch.sigmoid(self.b2) + 0 * z)  # + 0*z: solvers differentiate g in z
        h = F.silu(z[..., None] * self.w1 + self.b1)
        return self.max_value * torch.sigmoid((h * self.w2).sum(-1) + self.b2)


class LatentSDE(nn.Module):
    """The SDE itself (torchsde calls f, g, h) plus the posterior network, emission and ELBO."""

    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, obs_size: int, cfg: SDEConfig, steps_per_second: float):
        super().__init__()
        m, s = cfg.model, cfg.solver
        self.cfg, self.rate = cfg, float(steps_per_second)
        self.gru = nn.GRU(obs_size, m.encoder_hidden)
        self.ctx_out = nn.Linear(m.encoder_hidden, m.context_size)
        self.qz0 = nn.Linear(m.context_size, 2 * m.state_size)
        self.pz0_mean = nn.Parameter(torch.zeros(m.state_size))
        self.pz0_logstd = nn.Parameter(torch.zeros(m.state_size))
        self.prior = mlp(m.state_size, m.hidden_size, m.state_size)
        self.correction = mlp(m.state_size + m.context_size, m.hidden_size, m.state_size)
        self.diffusion = DiagonalDiffusion(m.state_size, m.diffusion_hidden, s.max_diffusion, s.noise_type == "additive")
        self.emission = mlp(m.state_size, m.emission_hidden, obs_size)
        self.obs_logstd = nn.Parameter(torch.zeros(obs_size))
        # Frames are modelled standardised per dimension (statistics of the training patients).
        self.register_buffer("obs_mean", torch.zeros(obs_size))
        self.register_buffer("obs_std", torch.ones(obs_size))
        # Optimiser steps taken, for the KL annealing; a buffer so a resumed run continues the schedule.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._ctx: torch.Tensor | None = None

    # ------------------------------------------------------------------ the SDE (torchsde interface)

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Posterior drift: the prior's plus a correction that reads the frames ahead of t."""
        i = min(int(math.floor(float(t) * self.rate + 1e-3)) + 1, len(self._ctx) - 1)
        return self.prior(z) + self.correction(torch.cat([z, self._ctx[i]], -1))

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Prior drift: a function of the state only (time-invariant: a window may start anywhere)."""
        return self.prior(z)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.diffusion(z)

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

    def encode(self, segments: list[torch.Tensor]) -> torch.Tensor:
        """Backward GRU over each normalised segment [T_k, B, obs] on its own; features [sum T_k, B, ctx]."""
        out = []
        for seg in segments:
            h, _ = self.gru(torch.flip(seg, (0,)))
            out.append(torch.flip(self.ctx_out(h), (0,)))
        return torch.cat(out, 0)

    def initial(self, ctx0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logstd = self.qz0(ctx0).chunk(2, -1)
        return mean, logstd.clamp(-6, 2)

    def observation_std(self) -> torch.Tensor:
        return self.cfg.model.min_obs_std + F.softplus(self.obs_logstd)

    def brownian(self, t0: float, t1: float, size: tuple[int, int], like: torch.Tensor,
                 entropy: int) -> torchsde.BrownianInterval:
        """Brownian motion fixed by `entropy` alone (its own generators: the global RNG is untouched)."""
        levy = "space-time" if self.cfg.solver.method == "srk" else "none"
        return torchsde.BrownianInterval(t0, t1, size, like.dtype, like.device, entropy=entropy,
                                         dt=self.cfg.solver.dt, levy_area_approximation=levy)

    def _solve(self, z0: torch.Tensor, ts: torch.Tensor, entropy: int, logqp: bool = False, prior: bool = False):
        # logqp appends the running KL to the state, and torchsde wants noise for it too
        bm = self.brownian(float(ts[0]), float(ts[-1]), (len(z0), z0.shape[1] + int(logqp)), z0, entropy)
        s = self.cfg.solver
        kw = dict(dt=s.dt, method=s.method, bm=bm, names={"drift": "h"} if prior else None)
        if s.adjoint and torch.is_grad_enabled():
            params = (self._ctx,) + tuple(p for p in self.parameters() if p.requires_grad)
            return torchsde.sdeint_adjoint(self, z0, ts, logqp=logqp, adjoint_params=params, **kw)
        return torchsde.sdeint(self, z0, ts, logqp=logqp, **kw)

    def kl_weight(self) -> float:
        """Linear warm-up of the KL weight from loss.kl_start to loss.kl_weight (the ELBO at 1)."""
        lo = self.cfg.loss
        if not self.training or lo.kl_anneal_steps == 0:
            return lo.kl_weight
        frac = min(1.0, int(self.steps) / lo.kl_anneal_steps)
        return lo.kl_start + (lo.kl_weight - lo.kl_start) * frac

    # ------------------------------------------------------------------ training

    def forward(self, frames: torch.Tensor, context: int) -> tuple[torch.Tensor, dict]:
        """Negative ELBO per observed number of raw frames [B, T, obs] whose first `context` are the
        context; in eval mode also a one-path prior forecast of the rest (the early-stopping signal)."""
        x = self.normalise(frames.float()).transpose(0, 1)                   # [T, B, obs]
        T, B, O = x.shape
        self._ctx = self.encode([x[:context], x[context:]])
        mean, logstd = self.initial(self._ctx[0])
        z0 = mean + logstd.exp() * torch.randn_like(mean)
        ts = torch.arange(T, dtype=x.dtype, device=x.device) / self.rate
        entropy = int(torch.randint(0, 2 ** 31 - 1, ()))
        zs, log_ratio = self._solve(z0, ts, entropy, logqp=True)
        pred = self.emission(zs)
        std = self.observation_std()
        nll = (0.5 * ((x - pred) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)).sum((0, 2)).mean()
        q0 = torch.distributions.Normal(mean, logstd.exp())
        p0 = torch.distributions.Normal(self.pz0_mean, self.pz0_logstd.clamp(-6, 2).exp())
        kl0 = torch.distributions.kl_divergence(q0, p0).sum(-1).mean()
        kl_path = log_ratio.sum(0).mean()
        weight = self.kl_weight()
        n = T * O
        loss = (nll + weight * (kl0 + kl_path)) / n
        metrics = {"recon": (nll / n).detach(), "kl": ((kl0 + kl_path) / n).detach(),
                   "kl_path": (kl_path / n).detach(), "kl_weight": torch.tensor(weight),
                   "mse": F.mse_loss(pred, x).detach(), "diffusion": self.g(ts[0], zs[context]).mean().detach()}
        if self.training:
            self.steps += 1
        else:
            metrics.update(self.forecast_check(x, context, entropy))
        return loss, metrics

    @torch.no_grad()
    def forecast_check(self, x: torch.Tensor, context: int, entropy: int) -> dict:
        """One prior path per window from the context alone: latent MSE and how much of the true
        variation the last second keeps (a ratio near 0 means the forecast decays to a flat line)."""
        fut = self.sample_frames(x[:context], len(x) - context, 1, entropy, normalised=True)
        truth = x[context:]
        last = max(1, int(round(self.rate)))
        ratio = fut[-last:].std(0).mean(-1) / truth[-last:].std(0).mean(-1).clamp(min=1e-6)
        return {"forecast_mse": F.mse_loss(fut, truth), "late_std_ratio": ratio.mean()}

    # ------------------------------------------------------------------ forecasting

    @torch.no_grad()
    def sample_frames(self, context: torch.Tensor, steps: int, num_samples: int, seed: int,
                      normalised: bool = False) -> torch.Tensor:
        """Sampled future frames [steps, B * S, obs] (sample-major within each context) from normalised
        context frames [C, B, obs]: posterior over the context, then the prior."""
        C, B, _ = context.shape
        ctx = self.encode([context]).repeat_interleave(num_samples, 1)
        self._ctx = ctx
        mean, logstd = self.initial(ctx[0])
        gen = torch.Generator(device=context.device).manual_seed(int(seed))
        z = mean + logstd.exp() * torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
        seeds = np.random.SeedSequence([int(seed) % 2 ** 63, 1]).generate_state(2)
        ts = torch.arange(C + steps, dtype=context.dtype, device=context.device) / self.rate
        if C > 1:
            z = self._solve(z, ts[:C], int(seeds[0]))[-1]
        zs = self._solve(z, ts[C - 1:], int(seeds[1]), prior=True)[1:]
        out = self.emission(zs)
        return out if normalised else self.denormalise(out)


class LatentSDEForecaster(ForecasterBase):
    """Frozen VQ-VAE encoder -> latent SDE (posterior over the context, prior beyond) -> frozen decoder."""

    name = "latent_sde"
    deterministic = False

    def __init__(self, vq: VQVAE, sde: LatentSDE, cfg: Config, scfg: SDEConfig,
                 device: str | torch.device | None = None, max_paths: int = 8192):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.vq, self.sde = vq.to(self.device).eval(), sde.to(self.device).eval()
        self.cfg, self.scfg = cfg, scfg
        self.fs = cfg.data.samples_per_second
        self.factor = cfg.model.downsample_factor
        self.context_frames = cfg.data.window_samples // self.factor
        self.max_paths = max_paths

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict, path: str | Path, device: str | torch.device | None = None
                             ) -> "LatentSDEForecaster":
        """Build from a loaded latent_sde checkpoint: it carries the VQ-VAE weights and both configs."""
        cfg = config_from_dict(ckpt["vqvae"]["config"], f"VQ-VAE config stored in {path}")
        scfg = sde_config_from_dict({k: ckpt["config"][k] for k in ("model", "solver", "loss", "train")},
                                    f"latent SDE config stored in {path}")
        vq = VQVAE(cfg.model)
        vq.load_state_dict(ckpt["vqvae"]["model"])
        sde = LatentSDE(cfg.model.latent_dim, scfg, cfg.data.samples_per_second / cfg.model.downsample_factor)
        sde.load_state_dict(ckpt["model"])
        out = cls(vq, sde, cfg, scfg, device)
        out.checkpoint = str(path)
        return out

    @torch.no_grad()
    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        x = as_context(context)
        keep = min(x.shape[1] // self.factor, self.context_frames)
        if keep < 1:
            raise ValueError(f"context of {x.shape[1]} samples is shorter than one latent step ({self.factor} samples)")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 sample, got {horizon}")
        x = torch.from_numpy(np.ascontiguousarray(x[:, x.shape[1] - keep * self.factor:])).to(self.device)
        frames = self.sde.normalise(self.vq.encode_latent(x).permute(2, 0, 1))      # [C, B, obs]
        steps = math.ceil(horizon / self.factor)
        out = np.empty((len(x), num_samples, horizon, 2), np.float32)
        per_chunk = max(1, self.max_paths // num_samples)
        for n, lo in enumerate(range(0, len(x), per_chunk)):
            chunk_seed = int(np.random.SeedSequence([int(seed) % 2 ** 63, n]).generate_state(1)[0])
            fut = self.sde.sample_frames(frames[:, lo:lo + per_chunk], steps, num_samples, chunk_seed)
            z = fut.permute(1, 2, 0)                                                   # [b * S, obs, steps]
            wave = torch.cat([self.vq.decode_latent(z[i:i + 512]) for i in range(0, len(z), 512)])
            out[lo:lo + per_chunk] = wave[:, :horizon].reshape(-1, num_samples, horizon, 2).cpu().numpy()
        return out
