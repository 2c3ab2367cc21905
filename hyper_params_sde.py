"""Settings of the latent SDE forecaster: `config_sde.json` as typed dataclasses, validated like
hyper_params.py (unknown keys and wrong types are errors naming the key)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hyper_params import (MAX_PATH_SCALE, MAX_WIDTH, AugmentConfig, TrainConfig, _at_least, _check, _within,
                          build_config, read_config, with_predated)
from paths import ROOT

DEFAULT_CONFIG = ROOT / "config_sde.json"
METHODS = ("euler", "milstein", "srk")        # torchsde Ito solvers valid for diagonal noise
NOISE_TYPES = ("diagonal", "additive")
MAX_RATE_HZ = 5.0            # model.min_rate_hz's ceiling, 300 bpm: 1e10 gave a NaN loss, 1e39 overflowed float32
MAX_DIFFUSION = 10.0         # solver.max_diffusion's, per sqrt(second) on standardised frames: 1e4 gave a path KL of
                             # millions, 1e20 a NaN loss
MAX_STEPS_PER_FRAME = 64     # solver steps per VQ-VAE latent frame: solver.dt's floor, 1/1024 s at 128 Hz / 8


@dataclass
class SDEModelConfig:
    """Defaults are the recipe, config_sde.json's (beat drafts, no phase); a checkpoint's stored config that
    lacks a key means the behaviour it had when written (PREDATED: a beat phase, no drafts)."""
    state_size: int = 32          # latent SDE state z(t)
    context_size: int = 32        # posterior features per latent step (from the GRU)
    encoder_hidden: int = 64      # GRU width (each direction) of the posterior network
    hidden_size: int = 128        # width of the drift MLPs (prior and posterior correction)
    emission_hidden: int = 128    # width of the MLP from z(t) to one VQ-VAE latent frame
    diffusion_hidden: int = 16    # width of each per-dimension diffusion net
    phase_harmonics: int = 0      # >0: z[0] is a beat phase turning at the rate z[1] (plus the MLP's
                                  # share); networks see cos/sin of its first n harmonics. 0: plain MLP state
    corrected_dims: int = 0       # the posterior steers only z[:n] (with a phase: phase and rate); the
                                  # rest starts from q(z0) and follows the prior. 0: it steers all of z
    min_rate_hz: float = 0.3      # lowest beat rate the phase drift can express (18 bpm)
    min_obs_std: float = 0.05     # floor of the learned observation noise (normalised latent units)
    phase_template: bool = False  # (needs a phase) add to each emitted frame the context frames of the same
                                  # beat phase: the patient's own beat shape, copied instead of generated
    draft_beats: bool = True      # the emission adds a beat draft's frames (drafts.draft_waves): the context's
                                  # mean beat at the window's own R peaks in training, its own beats at beat
                                  # times drawn per path in a forecast; the state renders what the draft misses
    draft_spread: float = 0.06    # a forecast draft's beat-to-beat jitter, SD as a fraction of the period
    draft_noise: float = 0.2      # white noise on each forecast path, SD this fraction of the context's residual
                                  # from its mean beat (drafts.add_noise; 0: none)
    hold_band: bool = True        # (needs draft_beats) a forecast path's departure from its draft is high-passed
                                  # at the data's lower band edge (drafts.hold_to_band): no slow wander
    departure_scale: float = 0.5  # a forecast path is its draft plus this times the (held) departure, 1 without
                                  # draft_beats; a forecast-time setting, as the hold is (0: the drafts alone)

    def validate(self) -> None:
        """Sizes, and the combinations of phase, template, drafts and hold_band that make one model."""
        _within(1, MAX_WIDTH, "model", self, "state_size", "context_size", "encoder_hidden", "hidden_size",
                "emission_hidden", "diffusion_hidden")
        _within(0, MAX_WIDTH, "model", self, "phase_harmonics")
        _check(self.phase_harmonics == 0 or self.state_size >= 3, "model.state_size", self.state_size,
               "must be >= 3 with a phase (model.phase_harmonics > 0): phase, rate and at least one more")
        _check(self.phase_harmonics == 0 or self.corrected_dims == 0 or self.corrected_dims >= 2,
               "model.corrected_dims", self.corrected_dims,
               "must be 0 or >= 2 with a phase (the posterior steers phase and rate)")
        _check(0 <= self.corrected_dims <= self.state_size, "model.corrected_dims", self.corrected_dims,
               f"must be in [0, model.state_size={self.state_size}]")
        _check(not self.phase_template or self.phase_harmonics > 0, "model.phase_template", self.phase_template,
               "needs a beat phase (model.phase_harmonics > 0)")
        _check(not (self.draft_beats and self.phase_template), "model.draft_beats", self.draft_beats,
               "and model.phase_template are two ways to render the patient's beat: choose one")
        _check(0 <= self.draft_spread < 1, "model.draft_spread", self.draft_spread, "must be in [0, 1)")
        _within(0, MAX_PATH_SCALE, "model", self, "draft_noise")
        _check(not self.hold_band or self.draft_beats, "model.hold_band", self.hold_band,
               "needs model.draft_beats (the departure it holds is from the draft): set it false without drafts")
        _within(0, MAX_PATH_SCALE, "model", self, "departure_scale")
        _check(self.departure_scale == 1 or self.draft_beats, "model.departure_scale", self.departure_scale,
               "needs model.draft_beats (the departure it scales is from the draft): set it 1 without drafts")
        _check(0 < self.min_rate_hz <= MAX_RATE_HZ, "model.min_rate_hz", self.min_rate_hz,
               f"must be in (0, {MAX_RATE_HZ:g}] Hz (a floor of {60 * MAX_RATE_HZ:g} bpm is past any heart)")
        _check(0 < self.min_obs_std <= 1, "model.min_obs_std", self.min_obs_std,
               "must be in (0, 1]: the frames are standardised, so a floor above their SD of 1 leaves nothing to learn")


@dataclass
class SolverConfig:
    method: str = "euler"         # euler, milstein or srk (torchsde, Ito)
    dt: float = 0.0625            # seconds per solver step; 1/16 s = one VQ-VAE latent step at 128 Hz / 8
    noise_type: str = "diagonal"  # diagonal: g_i(z_i) per dimension; additive: g_i constant
    min_diffusion: float = 0.05   # g_i in (min_diffusion, max_diffusion), per sqrt(second); the floor keeps
    max_diffusion: float = 0.5    # the path KL finite where the posterior steers
    rate_diffusion_scale: float = 0.2  # with a phase, the rate's range is scaled by this: heart rate drifts
                                       # slowly, and a noisy rate would scatter the beats of sampled paths
    adjoint: bool = False         # sdeint_adjoint: memory O(1) in the steps, slower, gradients backprop's up to the
                                  # solver's error (1-3% at dt = 1/16, 0.3% at 1/64 on a tiny model); not needed at
                                  # 96 steps

    def validate(self) -> None:
        _check(self.method in METHODS, "solver.method", self.method, f"must be one of {', '.join(METHODS)}")
        _check(self.noise_type in NOISE_TYPES, "solver.noise_type", self.noise_type,
               f"must be one of {', '.join(NOISE_TYPES)}")
        _check(0 < self.dt <= 1, "solver.dt", self.dt, "must be in (0, 1] seconds")
        _check(0 < self.rate_diffusion_scale <= 1, "solver.rate_diffusion_scale", self.rate_diffusion_scale,
               "must be in (0, 1]")
        _check(0 < self.min_diffusion < MAX_DIFFUSION, "solver.min_diffusion", self.min_diffusion,
               f"must be in (0, {MAX_DIFFUSION:g}), below solver.max_diffusion")
        _check(self.max_diffusion <= MAX_DIFFUSION, "solver.max_diffusion", self.max_diffusion,
               f"must be at most {MAX_DIFFUSION:g} (per sqrt(second) on standardised frames)")
        _check(self.max_diffusion > self.min_diffusion, "solver.max_diffusion", self.max_diffusion,
               f"must be > solver.min_diffusion={self.min_diffusion}")


def check_solver_dt(solver: SolverConfig, frames_per_second: float) -> None:
    """solver.dt's floor, which the VQ-VAE's frame rate sets (the config alone does not know it): a step far below a
    frame only multiplies the work, and 1e-9 s never finished, 3e9 steps over 3 s summed in float32, where t + dt
    stops growing past 0.03 s."""
    least = 1 / (frames_per_second * MAX_STEPS_PER_FRAME)
    _check(solver.dt >= least * (1 - 1e-6), "solver.dt", solver.dt,
           f"must be in [{least:g}, 1] seconds with a VQ-VAE of {frames_per_second:g} latent frames a second: at most "
           f"{MAX_STEPS_PER_FRAME} solver steps a frame")


@dataclass
class LossConfig:
    kl_weight: float = 1.0        # weight of KL(z0) + path KL after annealing (1 = the ELBO)
    kl_start: float = 0.1         # weight at step 0, raised linearly ...
    kl_anneal_steps: int = 400    # ... to kl_weight over this many optimiser steps (0 = no annealing)
    phase_hint: float = 1.0       # curriculum (needs a phase): pull the posterior phase toward the beat
    phase_hint_steps: int = 1000  # phase of the annotated beats with this weight, falling linearly to 0
                                  # over these steps; only so the emission learns to read the phase

    def validate(self) -> None:
        _at_least(0, "loss", self, "kl_weight")
        _check(0 <= self.kl_start <= self.kl_weight, "loss.kl_start", self.kl_start,
               f"must be in [0, loss.kl_weight={self.kl_weight}]")
        _at_least(0, "loss", self, "phase_hint", "phase_hint_steps", "kl_anneal_steps")


@dataclass
class CRPSConfig:
    """Fine-tuning on the CRPS of forecast paths (latent_sde_train.py --crps-from CKPT): an ELBO-trained
    model's prior, diffusion and emission learn from `samples` paths per window; the epoch with the lowest
    validation CRPS is kept. No warm-up, no weight decay; the learning rate decays as in every run."""
    samples: int = 8              # paths per window (the fair CRPS is unbiased in their number)
    epochs: int = 3
    steps_per_epoch: int = 100    # 3 epochs of 100 steps of 32 windows: 11.2 min on one thread (session 25)
    batch_size: int = 32
    learning_rate: float = 3e-4
    patience: Optional[int] = None  # epochs without a lower validation CRPS before it stops; null = every epoch

    def validate(self) -> None:
        _check(self.samples >= 2, "crps.samples", self.samples,
               "must be >= 2 (the CRPS's spread term needs two paths)")
        _at_least(1, "crps", self, "epochs", "steps_per_epoch", "batch_size")
        _check(self.learning_rate > 0, "crps.learning_rate", self.learning_rate, "must be > 0")
        _check(self.patience is None or self.patience >= 1, "crps.patience", self.patience, "must be >= 1 or null")


@dataclass
class SDEConfig:
    model: SDEModelConfig = field(default_factory=SDEModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=128, warmup_steps=50, plot_windows=3,
                                                                   max_steps_per_epoch=100))
    crps: CRPSConfig = field(default_factory=CRPSConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for section in (self.model, self.solver, self.loss, self.crps, self.augment, self.train):
            section.validate()
        _check(not (self.solver.adjoint and self.model.phase_harmonics), "solver.adjoint", self.solver.adjoint,
               f"cannot train a beat phase (model.phase_harmonics = {self.model.phase_harmonics}): its phase loop's "
               "gain is 1 / solver.dt, too stiff for the reversed solve, whose gradients stayed more than half off "
               "backprop's at any dt; set it false, or model.phase_harmonics 0")
        _check(not self.train.amp, "train.amp", self.train.amp, "is not for the latent SDE: it solves in float32 (its "
               "path KL divides drift differences by a diffusion as small as solver.min_diffusion)")


def sde_config_from_dict(raw: dict, source: str = "config", stored: bool = False) -> SDEConfig:
    return build_config(SDEConfig, raw, source, stored)


# Keys added after latent SDE checkpoints were first written, with the behaviour those checkpoints had (a beat
# phase steering phase and rate, no drafts, so no jitter, noise, hold or scaled departure): a stored config
# without them means that behaviour, not today's recipe.
PREDATED = {"model": {"phase_harmonics": 8, "corrected_dims": 2, "draft_beats": False, "draft_spread": 0.02,
                      "draft_noise": 0.0, "hold_band": False, "departure_scale": 1.0}}


def stored_sde_config(raw: Any, source: str) -> SDEConfig:
    """The config a latent SDE checkpoint was trained with (older checkpoints lack the PREDATED keys)."""
    return sde_config_from_dict(with_predated(raw, PREDATED), source, stored=True)


def load_sde_config(path: str | Path | None = None) -> SDEConfig:
    return read_config(SDEConfig, path or DEFAULT_CONFIG)
