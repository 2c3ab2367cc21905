"""Two-lead ECG VQ-VAE: strided conv encoder (+ attention), EMA vector quantizer, mirrored decoder.

Signals go in and come out as [B, T, 2] in mV; T must be a multiple of `downsample_factor`.
One code per `downsample_factor` samples covers both leads. With `num_quantizers` Q > 1 the
quantizer is residual (each further codebook codes what the ones before left), and a time step
has Q codes: codes are [B, T] for Q = 1 and [B, T, Q] otherwise.
"""
from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from hyper_params import Config, ModelConfig, stored_config
from paths import UserError
from train_results import float32_default, load_weights
from transformer import ConvAttention, as_levels, check_code_range


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _whole_batch(x: torch.Tensor) -> torch.Tensor:
    """x [B, ...] of every rank, ordered as one process would see the global batch (DistributedSampler
    deals samples round-robin, so sample b of rank r is global sample b * world + r)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts, 1).flatten(0, 1)


def _draw_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of x [N, D] at random, each once before any twice (so all of them when n >= N). Drawn with
    replacement, k-means started about 150 of 1024 codes on a row another code had too (a batch of 3072 encoder
    outputs) and ended with some 70 codes no output was nearest to, dead from the start, and a batch of fewer outputs
    than codes left some outputs without a code of their own; restarts put two dead codes on one output, one of them
    dead again."""
    rounds = -(-n // len(x))
    return x[torch.cat([torch.randperm(len(x), device=x.device) for _ in range(rounds)])[:n]]


GAIN_OCTAVES = (-8, 4)    # window gains (RMS, mV) from 2^-8 to 2^4 mV ...
GAIN_STEPS = 4            # ... in quarter octaves: 49 values,
GAIN_BITS = 6             # so 6 bits a lead and window
SAMPLE_BITS = 11          # an ECG sample as coding papers count it (MIT-BIH's 11-bit ADC): compression ratios
                          # of records whose own bits are unknown (a meta.json prepared before it kept them)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of code counts [K]: how many codes are in effective use (1 for no counts at all)."""
    p = counts / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p + 1e-10)).sum())


def codebook_health(counts: torch.Tensor) -> dict[str, float]:
    """Perplexity of code counts [K] and the share of codes used at all."""
    return {"perplexity": float(perplexity(counts)), "usage": float((counts > 0).float().mean())}


def level_key(name: str, level: int) -> str:
    """The metric name of residual level `level`'s codebook statistic: the first level's is the plain name."""
    return name if level == 0 else f"{name}_{level + 1}"


def _norm(ch: int) -> nn.GroupNorm:
    """Group norm of eight groups, or of one (all channels and time together) when eight do not divide `ch`."""
    return nn.GroupNorm(8 if ch % 8 == 0 else 1, ch)


class ResBlock(nn.Module):
    def __init__(self, ch: int, dilation: int = 1):
        super().__init__()
        self.net = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation),
                                 _norm(ch), nn.SiLU(), nn.Conv1d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _stage(ch: int, blocks: int) -> list[nn.Module]:
    return [ResBlock(ch, dilation=3 ** (i % 3)) for i in range(blocks)]


def _attention(cfg: ModelConfig) -> ConvAttention | None:
    return ConvAttention(cfg.channels, cfg.attention_heads, cfg.attention_layers) if cfg.has_attention else None


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, levels = cfg.channels, int(math.log2(cfg.downsample_factor))
        layers: list[nn.Module] = [nn.Conv1d(2, ch, 7, padding=3)]
        for _ in range(levels):
            layers.append(nn.Conv1d(ch, ch, 4, stride=2, padding=1))
            layers += _stage(ch, cfg.res_blocks)
        if levels == 0:
            layers += _stage(ch, cfg.res_blocks)
        self.net = nn.Sequential(*layers)
        self.attn = _attention(cfg)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv1d(ch, cfg.latent_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        if self.attn is not None:
            h = self.attn(h)
        return self.out(h)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, levels = cfg.channels, int(math.log2(cfg.downsample_factor))
        self.inp = nn.Conv1d(cfg.latent_dim, ch, 3, padding=1)
        self.attn = _attention(cfg)
        layers: list[nn.Module] = []
        for _ in range(levels):
            layers += _stage(ch, cfg.res_blocks)
            layers.append(nn.ConvTranspose1d(ch, ch, 4, stride=2, padding=1))
        if levels == 0:
            layers += _stage(ch, cfg.res_blocks)
        layers += [_norm(ch), nn.SiLU(), nn.Conv1d(ch, 2, 7, padding=3)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        if self.attn is not None:
            h = self.attn(h)
        return self.net(h)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook with EMA updates (van den Oord et al. 2017, appendix).

    Codebook statistics are all-reduced under DistributedDataParallel so every rank keeps the same
    codebook; the k-means init and the restart reservoir see the whole global batch, so DDP on N ranks
    matches one process with the same global batch. All buffer updates are in place so DataParallel's
    device-0 replica records them.
    """

    def __init__(self, size: int, dim: int, decay: float, commitment: float, dead_threshold: float = 1.0,
                 restart_every: int = 100, reservoir: int = 4096):
        super().__init__()
        self.size, self.dim, self.decay, self.commitment = size, dim, decay, commitment
        self.dead_threshold, self.restart_every = dead_threshold, restart_every
        self.register_buffer("codebook", torch.randn(size, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("epoch_usage", torch.zeros(size))
        self.register_buffer("window_usage", torch.zeros(size))
        self.register_buffer("restarted", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("recent", torch.zeros(reservoir, dim))

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """The first nearest code of each row of flat [N, D]. min, not argmin (the same index, the first of equal
        ones), and norms added in place (the same floats) into no fresh [N, size] buffers: 15 ms, not 26 ms, on a
        forecast's [4800, 1024] draft distances on one thread."""
        d = (flat @ self.codebook.t()).mul_(-2).add_(flat.pow(2).sum(1, keepdim=True))
        return d.add_(self.codebook.pow(2).sum(1)[None]).min(1).indices

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """z [B, D, T] -> (straight-through quantized z, codes [B, T], losses); in float32 under mixed
        precision too, where half-precision distances and code counts would be wrong."""
        with torch.autocast(z.device.type, enabled=False):
            return self._quantize(z.float())

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        B, D, T = z.shape
        flat = z.permute(0, 2, 1).reshape(-1, D)
        seen = _whole_batch(z.detach().permute(0, 2, 1)).reshape(-1, D) if self.training else flat
        if self.training and not bool(self.initialized):
            self.init_from(seen)
        codes = self.nearest(flat.detach())
        zq = self.codebook[codes]
        counts = torch.bincount(codes, minlength=self.size).to(flat.dtype)
        if self.training:
            self._ema_update(flat.detach(), codes, counts, seen)
        commit = F.mse_loss(flat, zq.detach())
        zq_st = flat + (zq - flat).detach()
        out = zq_st.view(B, T, D).permute(0, 2, 1)
        # in training `counts` are the global batch's (_ema_update all-reduces them in place), else this batch's
        return out, codes.view(B, T), {"commitment": self.commitment * commit,
                                       "perplexity": perplexity(counts).detach(), "counts": counts.detach()}

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, seen: torch.Tensor) -> None:
        """EMA of this rank's code sums and counts (all-reduced); the reservoir takes `seen`, the global batch."""
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.epoch_usage.add_(counts)
        self.window_usage.add_(counts)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + self.size * 1e-5) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        keep = min(len(seen), len(self.recent))
        self.recent.copy_(torch.roll(self.recent, keep, 0))
        self.recent[:keep].copy_(seen[torch.randperm(len(seen), device=seen.device)[:keep]])
        self.updates.add_(1)
        if self.restart_every and int(self.updates) % self.restart_every == 0:
            self.restart_dead(self.dead_threshold)

    @torch.no_grad()
    def init_from(self, flat: torch.Tensor, iters: int = 10) -> None:
        """k-means on encoder outputs (the global batch), so no code starts far from the data (and dead)."""
        centers = _draw_rows(flat, self.size) + 1e-3 * torch.randn(self.size, self.dim, device=flat.device)
        for _ in range(iters):
            self.codebook.copy_(centers)
            assign = self.nearest(flat)
            sums = torch.zeros_like(centers).index_add_(0, assign, flat)
            n = torch.bincount(assign, minlength=self.size).float()
            centers = torch.where(n[:, None] > 0, sums / n.clamp(min=1)[:, None], centers)
        if _distributed():
            dist.broadcast(centers, 0)
        self.codebook.copy_(centers)
        self.ema_sum.copy_(centers)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)
        self.recent.copy_(_draw_rows(flat, len(self.recent)))

    @torch.no_grad()
    def restart_dead(self, threshold: float) -> int:
        """Codes used fewer than `threshold` times since the last check restart on recent encoder
        outputs (picked on rank 0 and broadcast, so every rank keeps the same codebook); none before the k-means
        init has filled that reservoir. Returns how many restarted."""
        dead = self.window_usage < threshold
        n_dead = int(dead.sum()) if bool(self.initialized) else 0
        if n_dead:
            pick = _draw_rows(self.recent, n_dead)
            spread = pick.std() if pick.numel() > 1 else pick.new_zeros(())  # std() of one number is NaN
            pick = pick + 1e-3 * spread * torch.randn_like(pick)
            self.codebook[dead] = pick
            self.ema_sum[dead] = pick
            self.ema_count[dead] = 1.0
            if _distributed():
                for buf in (self.codebook, self.ema_sum, self.ema_count):
                    dist.broadcast(buf, 0)
        self.window_usage.zero_()
        self.restarted.add_(n_dead)
        return n_dead

    @torch.no_grad()
    def end_epoch(self) -> dict:
        """Codebook health over the epoch: perplexity, share of codes used, codes restarted."""
        stats = {**codebook_health(self.epoch_usage), "restarted": int(self.restarted)}
        self.epoch_usage.zero_()
        self.restarted.zero_()
        return stats


class VQVAE(nn.Module):
    def __init__(self, cfg: ModelConfig, scale_mv: list[float] | None = None):
        super().__init__()
        f = cfg.downsample_factor
        if f < 1 or f & (f - 1):    # a ModelConfig built in code, unvalidated: 6 built a model of factor 4, silently
            raise ValueError(f"downsample_factor must be a power of 2, got {f}: the encoder halves a window's length "
                             f"log2(downsample_factor) times (ModelConfig.validate checks a config's)")
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        first, *rest = [VectorQuantizer(cfg.codebook_size, cfg.latent_dim, cfg.ema_decay, cfg.commitment_cost,
                                        cfg.dead_code_threshold, cfg.restart_every) for _ in range(cfg.num_quantizers)]
        self.quantizer = first  # keeps its name, so single-codebook checkpoints load unchanged
        self.residual = nn.ModuleList(rest)
        self.register_buffer("scale", torch.tensor(scale_mv or [1.0, 1.0], dtype=torch.float32))

    @property
    def device(self) -> torch.device:
        return self.scale.device        # a buffer: nn.DataParallel's replicas keep buffers, not parameters()

    @property
    def factor(self) -> int:
        return self.cfg.downsample_factor

    @property
    def quantizers(self) -> list[VectorQuantizer]:
        return [self.quantizer, *self.residual]

    def _check(self, x: torch.Tensor, finite: bool = True) -> None:
        """Windows encode can code, or an error saying what to pass instead (`finite`: also refuse NaN and inf)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch tensor [B, T, 2] in mV, got {type(x).__name__}: "
                            f"pass torch.as_tensor(x, dtype=torch.float32, device=vq.device)")
        if x.ndim != 3 or x.shape[-1] != 2 or x.shape[1] % self.factor:
            raise ValueError(f"expected [B, T, 2] with T a multiple of {self.factor}, got {tuple(x.shape)}"
                             + self._shape_hint(tuple(x.shape)))
        if not x.shape[1]:
            raise ValueError(f"got an empty window {tuple(x.shape)}: a slice that starts at or past the record's end?")
        if x.dtype != self.scale.dtype:
            raise ValueError(f"expected {self.scale.dtype} windows, the model's, got {x.dtype}: pass x.float()")
        if x.device != self.device:
            raise ValueError(f"the window is on {x.device}, the model on {self.device}: pass x.to(vq.device)")
        if finite:
            self._check_finite(x)

    def _shape_hint(self, shape: tuple[int, ...]) -> str:
        """What to do with a window encode refuses: a window without its batch axis or with its leads first (a
        record's signal.T) was only told the shape it must have, and one of 387 samples not which to keep."""
        f = self.factor
        if len(shape) == 2 and shape[-1] == 2:
            return ": one window [T, 2] takes x[None]"
        if len(shape) == 3 and shape[-1] == 2:
            whole = shape[1] - shape[1] % f
            return (f": keep whole steps of {f} samples, x[:, -{whole}:] (the last ones, as the forecasters read a "
                    f"context)" if whole else f": a window holds at least one step of {f} samples")
        if len(shape) in (2, 3) and shape[-2] == 2:
            return ": leads come last, " + ("x.T[None] of one window [2, T]" if len(shape) == 2 else
                                            "x.transpose(1, 2)")
        return ""

    @staticmethod
    def _check_finite(x: torch.Tensor) -> None:
        """NaN distances code every code of the window 0, and the reconstruction NaN."""
        bad = ~torch.isfinite(x)
        if bad.any():
            b, t, lead = bad.nonzero()[0].tolist()
            raise ValueError(f"the window holds {int(bad.sum())} NaN or inf samples, the first at window {b}, sample "
                             f"{t}, lead {lead + 1}: code windows of finite samples (read_record(..., gaps=True) "
                             f"gives a record's gaps as NaN)")

    def unit(self, x: torch.Tensor, warn: bool = True) -> torch.Tensor:
        """What each window [B, T, 2] is divided by before coding, [B, 1, 2]: the training patients' std
        per lead, or with `window_gain` the window's own RMS per lead on a quarter-octave grid (sent
        with the codes), so quiet and loud patients are coded at the same relative precision. With `warn`, a window
        louder than any gain (microvolts or ADC units, not mV) is warned of (warn_loud); the forecasters, whose
        predict warned of the context's unit already, pass False."""
        self._check(x)
        if warn:
            warn_loud(x)
        return self._gain(x)

    def _gain(self, x: torch.Tensor) -> torch.Tensor:
        """unit's gains of windows already checked."""
        if not self.cfg.window_gain:
            return self.scale.expand(len(x), 1, 2)
        rms = x.pow(2).mean(1, keepdim=True).sqrt().clamp(2.0 ** GAIN_OCTAVES[0], 2.0 ** GAIN_OCTAVES[1])
        return torch.exp2(torch.round(torch.log2(rms) * GAIN_STEPS) / GAIN_STEPS)

    def _given_unit(self, unit: torch.Tensor | np.ndarray | list, batch: int) -> torch.Tensor:
        """A unit given to encode or decode, as a tensor of the model's dtype on its device: the .npz's gain[:, None]
        is numpy, which encode's checks met in torch.isfinite (and a list in '.shape'), and a float64 one (numpy's
        own) the float32 encoder in 'Input type (double) and bias type (float)'. Checked by _check_unit."""
        unit = torch.as_tensor(unit, dtype=self.scale.dtype, device=self.device)
        self._check_unit(unit, batch)
        return unit

    @staticmethod
    def _check_unit(unit: torch.Tensor, batch: int) -> None:
        """A unit must be one gain per lead of each window, [B, 1, 2] (or one for all, [2]): [3, 1, 2] for one window
        broadcast it into three codings, and [B, 2, 1] stopped in torch's size mismatch."""
        try:
            fits = torch.broadcast_shapes(unit.shape, (batch, 1, 2)) == (batch, 1, 2)
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"unit has shape {tuple(unit.shape)}, not [{batch}, 1, 2] (a gain per window and lead): "
                             f"pass unit=vq.unit(x) of the same windows, or a gain [W, 2] that vqvae_eval.py saved "
                             f"as gain[:, None]")

    def _decode_unit(self, unit: torch.Tensor | None, batch: int) -> torch.Tensor:
        """What decode multiplies by: the given unit, else the training std per lead (window_gain needs it given)."""
        if unit is not None:
            return self._given_unit(unit, batch)
        if self.cfg.window_gain:
            raise ValueError("this VQ-VAE codes each window's gain: pass unit=vq.unit(window) to decode")
        return self.scale

    def encode_latent(self, x: torch.Tensor, unit: torch.Tensor | None = None) -> torch.Tensor:
        """Continuous encoder output before quantisation, [B, latent_dim, T / factor]."""
        if unit is None:
            unit = self.unit(x)         # which checks x
        else:
            self._check(x)
            unit = self._given_unit(unit, len(x))
            self._check_gain(unit)
        return self.encoder((x / unit).transpose(1, 2))

    @staticmethod
    def _check_gain(unit: torch.Tensor) -> None:
        """A given unit divides the windows: a zero one made their latents inf or NaN, which coded every step 0 (as
        NaN samples did, _check_finite) without a word, and a negative one coded the window upside down."""
        bad = ~(torch.isfinite(unit) & (unit > 0))
        if bad.any():
            raise ValueError(f"unit holds {int(bad.sum())} gain(s) that are not finite and > 0, e.g. "
                             f"{unit[bad][0].item():g}: a window is divided by its unit, so pass unit=vq.unit(x) "
                             f"(its RMS or the training std per lead, never 0)")

    def encode(self, x: torch.Tensor, unit: torch.Tensor | None = None) -> torch.Tensor:
        """Signals [B, T, 2] in mV -> codes [B, T / factor] (Q = 1) or [B, T / factor, Q], each window's codes
        depending on all of it (its gain, the group norms' statistics over it: code the model's window length as the
        forecasters do, not a longer stretch, for the codes they learnt); in float32 under autocast
        too, as the codes the Transformer learnt were made (a bfloat16 encoder and distances changed 9% of the shipped
        forecaster's codes of validation windows)."""
        with torch.autocast(self.device.type, enabled=False):     # the model's device: x is checked in encode_latent
            z = self.encode_latent(x, unit)
        return self.nearest_codes(z)                               # which codes in float32 itself

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """encode's codes of latents z [B, latent_dim, T'] from encode_latent, so that a caller wanting both (as
        vqvae_eval.code_windows) encodes only once. Distances in float32, as the quantizer's (bfloat16 ones changed
        6% of the codes of the same latents)."""
        self._check_latents(z)
        B, D, T = z.shape
        rest = z.float().permute(0, 2, 1).reshape(-1, D)
        codes = []
        with torch.autocast(self.device.type, enabled=False):
            for q in self.quantizers:
                codes.append(q.nearest(rest))
                rest = rest - q.codebook[codes[-1]]
        return codes[0].view(B, T) if len(codes) == 1 else torch.stack(codes, 1).view(B, T, len(codes))

    def _check_codes(self, codes: torch.Tensor) -> None:
        """Codes must index the codebooks: a negative one would silently pick a code from the end, and one too
        large fails deep in indexing without saying which codebook size was asked. A window's codes without their
        batch axis ([T'] of one codebook) or with one too many failed in a permute of torch's words."""
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"expected codes as a torch tensor, got {type(codes).__name__}: "
                            f"pass torch.as_tensor(codes, device=vq.device)")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be integers (torch.long), got {codes.dtype}")
        if codes.ndim not in (2, 3):
            raise ValueError(f"codes must be [B, T'] (one codebook) or [B, T', Q], got {list(codes.shape)}"
                             + (": one window's codes take codes[None]" if codes.ndim == 1 else ""))
        levels = len(self.quantizers)
        if codes.ndim == 2 and levels > 1 and codes.shape[1] == levels:    # as_levels would say 1 level, not why
            raise ValueError(f"codes {list(codes.shape)} have 1 codebook levels, the model {levels}: codes are [B, T] "
                             f"(one codebook) or [B, T, Q]; one window's codes [T, {levels}] take codes[None]")
        check_code_range(codes, self.cfg.codebook_size, "codes")

    def _check_latents(self, z: torch.Tensor) -> None:
        """Latents as encode_latent gives them, [B, latent_dim, T'], for decode_latent and nearest_codes: a .npz's
        array met conv1d's list of every signature it takes, and time-first latents a matmul's shapes."""
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"expected latents as a torch tensor, got {type(z).__name__}: "
                            f"pass torch.as_tensor(z, dtype=torch.float32, device=vq.device)")
        if z.ndim != 3 or z.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"latents must be [B, {self.cfg.latent_dim}, T'] (latent_dim second), got "
                             f"{tuple(z.shape)}: vqvae_eval.py's .npz keeps them time first, [W, T', "
                             f"{self.cfg.latent_dim}]: pass z.transpose(1, 2)")

    def decode_latent(self, zq: torch.Tensor, unit: torch.Tensor | None = None) -> torch.Tensor:
        """Latents [B, latent_dim, T'] -> signals [B, T' * factor, 2] in mV: quantised ones (decode sums them from
        the codes) or encode_latent's continuous ones, unquantised, as the latent SDE decodes its paths. Latents of
        another float dtype (edited or blended in numpy's float64) are decoded as the model's, as nearest_codes codes
        them: they stopped in conv1d's 'Input type (double) and bias type (float) should be the same'."""
        self._check_latents(zq)
        return self.decoder(zq.to(self.scale.dtype)).transpose(1, 2) * self._decode_unit(unit, len(zq))

    def decode(self, codes: torch.Tensor, unit: torch.Tensor | None = None) -> torch.Tensor:
        """Codes [B, T'] or [B, T', Q] -> signals [B, T' * factor, 2] in mV (`unit`: see `unit`)."""
        self._check_codes(codes)
        levels = as_levels(codes.long(), len(self.quantizers))    # uint8 ones would index as a mask
        z = sum(q.codebook[levels[..., i]] for i, q in enumerate(self.quantizers))
        return self.decode_latent(z.permute(0, 2, 1), unit)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Residual quantisation of z [B, D, T]: the sum of the levels' straight-through outputs, the
        levels' commitment losses summed, and the first level's (the coarse vocabulary's) perplexity and code
        counts. Each level passes the decoder's gradient on to z, so z gets it once per level, as it gets each
        level's commitment gradient (the shipped VQ-VAEs were trained so)."""
        total, rest, levels = torch.zeros_like(z), z, []
        for q in self.quantizers:
            zq, _, losses = q(rest)
            total, rest = total + zq, rest - zq.detach()
            levels.append(losses)
        return total, {"commitment": sum(lv["commitment"] for lv in levels), "perplexity": levels[0]["perplexity"],
                       "counts": levels[0]["counts"]}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Reconstruction in mV and losses (reconstruction MSE in normalised units + commitment). The windows are
        checked as encode's, but for NaN: it makes the loss NaN, which the trainer stops on naming the last good
        checkpoint, and a scan of every batch would cost each training step."""
        self._check(x, finite=False)
        unit = self._gain(x)
        zq, losses = self.quantize(self.encoder((x / unit).transpose(1, 2)))
        x_hat = self.decode_latent(zq, unit)
        recon = F.mse_loss(x_hat / unit, x / unit)
        losses.update(recon=recon, loss=recon + losses["commitment"])
        return x_hat, losses

    def end_epoch(self) -> dict:
        """Codebook health of every level; the first level's under the plain names."""
        stats = {}
        for i, q in enumerate(self.quantizers):
            stats.update({level_key(k, i): v for k, v in q.end_epoch().items()})
        return stats

    def compression_ratio(self, window: int, source_ratio: float = 1.0, sample_bits: float = SAMPLE_BITS) -> float:
        """Bits of a 2-lead window of `window` model-rate samples, stored as `sample_bits`-bit samples at
        `source_ratio` x the model rate (MIT-BIH records: 11 bits, 360 / 128), over the bits that code it: its
        codes (all levels) and, with `window_gain`, the two leads' gains. `window` must be one encode takes, a positive
        multiple of the factor."""
        if window < self.factor or window % self.factor:
            raise ValueError(f"window must be a positive multiple of {self.factor} samples (downsample_factor), got "
                             f"{window}")
        code_bits = window // self.factor * len(self.quantizers) * math.log2(self.cfg.codebook_size)
        gain_bits = 2 * GAIN_BITS if self.cfg.window_gain else 0
        return 2 * sample_bits * window * source_ratio / (code_bits + gain_bits)


def warn_loud(x: torch.Tensor) -> None:
    """Windows [B, T, 2] in microvolts or ADC units were coded without a word: a lead's RMS past the largest gain
    (16 mV, which no ECG in mV reaches) is clamped there, and its codes are nothing like an ECG's. Said at the first
    caller outside this module (encode(x) calls unit through encode_latent)."""
    rms = x.detach().float().pow(2).mean(1).sqrt()
    loud = rms > 2.0 ** GAIN_OCTAVES[1]
    if loud.any():
        b, lead = loud.nonzero()[0].tolist()
        level, frame = 2, sys._getframe(1)
        while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
            frame, level = frame.f_back, level + 1
        warnings.warn(f"{int(loud.sum())} lead(s) of the windows have an RMS above {2 ** GAIN_OCTAVES[1]} mV, the "
                      f"first window {b}'s lead {lead + 1} ({rms[b, lead].item():.3g}): not in millivolts? Convert "
                      f"them to mV (microvolts / 1000); their codes are nothing like an ECG's", stacklevel=level)


@float32_default()
def vqvae_from(ckpt: dict, source: str) -> tuple[VQVAE, Config]:
    """The VQ-VAE in eval mode that a checkpoint (or a forecaster's stored VQ-VAE) holds, and its config:
    forecasters prepare their input with the config's data settings. float32 as trained, whatever torch's default
    dtype: built in a float64 session, its windows met float64 weights ('Input type (float) and bias type (double)')."""
    missing = [k for k in ("model", "config") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:         # a forecaster's stored VQ-VAE cut short: a KeyError traceback, not the file and the key
        raise UserError(f"{source}: its VQ-VAE holds no {' and no '.join(missing)}: not a checkpoint these scripts "
                        f"wrote, or damaged")
    cfg = stored_config(ckpt["config"], f"VQ-VAE config stored in {source}")
    model = VQVAE(cfg.model)
    load_weights(model, ckpt["model"], source)
    return model.eval(), cfg
