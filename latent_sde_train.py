"""Train the latent SDE forecaster on the frozen VQ-VAE's continuous latent frames.

    python3 latent_sde_train.py [--vqvae checkpoints/vqvae-<time>/best.pt] [--config config_sde.json]
                                [--epochs N] [--max-steps N] [--batch-size N] [--resume PATH] [--device D]

Every prepared window of the training and validation patients is encoded once by the frozen
VQ-VAE (context and future each on their own, as at forecast time; cached next to the prepared
tensors, or in $ECG_CACHE_DIR), and with `model.draft_beats` so is its beat draft at its own R peaks. The loss is the
negative ELBO per latent number: reconstruction of context and future frames plus the KL of the
initial state and of the posterior path, with the KL weight annealed.
The best checkpoint is the lowest validation loss (the full ELBO, its noise drawn from each validation
window's own seed: the same weights score the same after any draws, on any number of processes); it holds
the VQ-VAE too, so forecast.py and evaluate.py need only this one file.

    python3 latent_sde_train.py --crps-from checkpoints/latent_sde-<time>/best.pt

then fine-tunes that model's prior, diffusion and emission on the fair CRPS of its forecast paths (the
config's crps section; latent_sde.PathCRPS) in a run of its own, latent_sde_crps-<time>, keeping the
epoch with the lowest validation CRPS: the ELBO alone left its forecasts' CRPS above the template
ensemble's (EXPERIMENTS.md, session 19).

The recipe's VQ-VAE comes from `vqvae_train.py --config config_vqvae_sde.json` (pass it with --vqvae): on
the default coder's latents the same recipe forecast worse and its KL term blew up (see EXPERIMENTS.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset

import paths
import running
from drafts import VERSION as DRAFTS_VERSION, detected_beats, draft_waves
from hyper_params import Config, TrainConfig
from hyper_params_sde import (CRPSConfig, SDEConfig, check_solver_dt, load_sde_config, sde_config_from_dict,
                            stored_sde_config)
from latent_sde import LatentSDE, LatentSDEForecaster, PathCRPS, latent_frames
from train_results import fixed_titles, fixed_windows, plot_epoch_forecasts, read_checkpoint
from training import (EpochEndFn, Pooled, Runtime, StepFn, Trainer, check_batch_split, check_run_flags,
                      check_run_roots, closing_epoch, flag_patience, resumed_seed, run_config, run_parser,
                      run_record, run_resume, seed_everything, setup_runtime, shared_run_dirs, training_main)
from vqvae import VQVAE
from vqvae_eval import (FORECASTER_FLAGS, VQVAE_KEYS, add_forecaster_flags, forecaster_splits, forecasting_config,
                        frozen_encodings, next_commands, run_vqvae, source_record, vqvae_choice)


@torch.no_grad()
def encode_windows(vq: VQVAE, signals: torch.Tensor, piece: int) -> torch.Tensor:
    """Frames [N, T / factor, latent] of windows [N, T, 2], each `piece` samples (context, then each
    future window) encoded on its own, so no frame has seen samples after its piece, at the context's gain: a
    forecast decodes its future at it (a VQ-VAE with window_gain coded each piece at its own, half of them a step or
    more from the context's, and the SDE learned frames that the forecast then decoded at the wrong gain)."""
    vq.eval()
    b, t, _ = signals.shape
    unit = context_units(vq, signals, piece).repeat_interleave(t // piece, 0)
    frames = latent_frames(vq, signals.reshape(b * (t // piece), piece, 2), unit=unit)
    return frames.reshape(b, t // vq.factor, -1).half()


def context_units(vq: VQVAE, signals: torch.Tensor, piece: int, batch: int = 4096) -> torch.Tensor:
    """The gains [N, 1, 2] of the windows' contexts (their first `piece` samples), on the signals' device."""
    return torch.cat([vq.unit(signals[i:i + batch, :piece].float().to(vq.device), warn=False).to(signals.device)
                      for i in range(0, len(signals), batch)])


@torch.no_grad()
def encode_drafted(vq: VQVAE, signals: torch.Tensor, piece: int, fs: int) -> torch.Tensor:
    """[N, T / factor + (T - piece) / factor, latent]: each window's frames (as encode_windows), then the
    frames of its beat draft: the context's mean beat laid at the window's own R peaks (detected over the
    whole window, as the Transformer's drafts), so the model learns to render beats where it is told. A draft
    longer than a piece is coded in overlapping pieces, as a forecast codes its drafts (draft_frames)."""
    waves, index = draft_waves(signals[:, :piece].float().numpy(), signals.shape[1] - piece, fs,
                               beats=detected_beats(signals.numpy(), fs))
    in_order = torch.from_numpy(waves)[torch.from_numpy(index)]    # a window's draft each, coded at its context's gain
    drafts = latent_frames(vq, in_order, piece, unit=context_units(vq, signals, piece))
    return torch.cat([encode_windows(vq, signals, piece), drafts.half()], 1)


def beat_targets(data: dict, frames: int, factor: int, fs: float, max_rr_s: float = 2.5) -> torch.Tensor:
    """Phase (radians: 0 at an annotated beat, rising linearly to 2 pi at the next) and rate (Hz,
    1 / RR) of the reference beats at the centre of every frame, [N, frames, 2]: the targets of the
    beat hint. NaN before the first and after the last beat of a window, across gaps longer than
    max_rr_s, and in windows without annotations."""
    ptr, pos = data["beat_ptr"].numpy(), data["beat_pos"].numpy()
    centre = np.arange(frames) * factor + (factor - 1) / 2
    out = np.full((len(ptr) - 1, frames, 2), np.nan, np.float32)
    for i in range(len(out)):
        p = np.sort(pos[ptr[i]:ptr[i + 1]]).astype(np.float64)
        if len(p) < 2:
            continue
        j = np.clip(np.searchsorted(p, centre, side="right") - 1, -1, len(p) - 1)
        jj = np.clip(j, 0, len(p) - 2)
        rr = p[jj + 1] - p[jj]
        ok = (j >= 0) & (j < len(p) - 1) & (rr <= max_rr_s * fs)
        out[i, ok, 0] = (2 * np.pi * (centre - p[jj]) / rr)[ok]
        out[i, ok, 1] = (fs / rr)[ok]
    return torch.from_numpy(out)


def plot_epoch(fc: LatentSDEForecaster, fixed: np.ndarray, piece: int, run_dir: Path, epoch: int,
               model_name: str, titles: list[tuple[str, str]] | None = None) -> None:
    """Forecasts of the fixed validation windows from seed 0 every epoch: the figures change with the weights alone."""
    samples = fc.predict(fixed[:, :piece], fixed.shape[1] - piece, num_samples=20, seed=0)
    plot_epoch_forecasts(fixed, samples, fc.fs, piece, run_dir, epoch, model_name, titles)


def plotting_epoch_end(fixed: np.ndarray, piece: int, run_dir: Path,
                       forecaster: Callable[[torch.nn.Module], LatentSDEForecaster], model_name: str,
                       titles: list[tuple[str, str]] | None = None) -> EpochEndFn:
    """Forecasts of the fixed validation windows after every epoch, from `forecaster(model)`; the forecaster's
    constructor puts the model in eval mode, so it goes back to training."""
    def epoch_end(m: torch.nn.Module, epoch: int, is_main: bool) -> dict:
        if is_main and len(fixed):
            plot_epoch(forecaster(m), fixed, piece, run_dir, epoch, model_name, titles)
            m.train()
        return {}
    return epoch_end


def crps_step(m: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, dict]:
    """Fresh drafts and paths every training step; in validation each window's own, by its index, every epoch."""
    signals, index = batch
    return m(signals.float(), int(torch.randint(2 ** 31 - 1, ())) if m.training else index)


def note_ignored_crps_flags(args: argparse.Namespace, source: str) -> None:
    """Flags that shape an ELBO run's data, said to be ignored by a fine-tuning run rather than dropped in silence."""
    for flag, value in (("--vqvae", args.vqvae), ("--augment-copies", args.augment_copies)):
        if value is not None:
            running.note(f"{flag} {value} is ignored: CRPS fine-tuning keeps the VQ-VAE of {source} and draws its "
                         f"windows from the training records as they are")


def crps_config(args: argparse.Namespace, resume: dict | None, start: dict, source: str) -> SDEConfig:
    """The ELBO run's config, as its weights are the start, with a crps section: the --config file's for a new run,
    the run's own on a resume."""
    check_run_flags(args)
    stored = {k: v for k, v in start["config"].items() if k != "vqvae"}
    scfg = stored_sde_config(stored, f"latent SDE config stored in {args.resume or source}")
    if not scfg.model.draft_beats:      # latent_sde.PathCRPS draws the forecasts' drafts
        raise paths.UserError(f"--crps-from {source}: CRPS fine-tuning needs a latent SDE with beat drafts "
                              f"(model.draft_beats true, as in config_sde.json); this one was trained without them")
    if not resume:
        given = load_sde_config(args.config)
        scfg.crps = given.crps
    elif args.config:
        running.note(f"--config {args.config} is ignored: the resumed fine-tuning goes on with the crps settings "
                     f"stored in {args.resume} (flags such as --epochs still change them)")
    c = scfg.crps
    for arg, key in (("epochs", "epochs"), ("max_steps", "steps_per_epoch"), ("batch_size", "batch_size")):
        if getattr(args, arg) is not None:      # into the config the run stores: a resume goes on with them
            setattr(c, key, getattr(args, arg))
    c.patience = flag_patience(args, c.patience)
    if not resume:      # with the flags' crps values, before --seed sets the run's seed
        note_ignored_sections(given, scfg, args.config, source, elbo="crps_from" not in start.get("meta", {}))
    if resume:
        scfg.train.seed = resumed_seed(args, resume)
    elif args.seed is not None:
        scfg.train.seed = args.seed
    scfg.validate()
    return scfg


def note_ignored_sections(given: SDEConfig, run: SDEConfig, config: str | None, source: str,
                          elbo: bool = True) -> None:
    """Fine-tuning takes only the crps section of --config: say which other settings there differ from the run's and
    are ignored (model, solver, loss, augment, and train settings such as grad_clip or seed), and name the crps key
    that sets a train setting it schedules (learning_rate, epochs, ...; unless `run` is already fine-tuned, not
    `elbo`: its train section is its own crps schedule, not settings a user wrote)."""
    scheduled, config = crps_schedule(given.crps), config or "config_sde.json"
    differ = [f"{section}.{key} {value!r} (the run's {getattr(getattr(run, section), key)!r})"
              for section in ("model", "solver", "loss", "augment", "train")
              for key, value in dataclasses.asdict(getattr(given, section)).items()
              if getattr(getattr(run, section), key) != value and not (section == "train" and key in scheduled)]
    if differ:
        running.note(f"--config {config}: {', '.join(differ)} ignored: CRPS fine-tuning keeps the "
                     f"model, solver and training settings of {source}, trains on the CRPS of the training windows as "
                     f"they are (no ELBO loss, no augmented copies) and takes only the crps section")
    replaced = [f"train.{key} {value!r} (the run's {getattr(run.train, key)!r}; fine-tuning runs "
                f"{SCHEDULED_BY[key] + ' ' if key in SCHEDULED_BY else ''}{scheduled[key]!r})"
                for key, value in dataclasses.asdict(given.train).items()
                if elbo and key in scheduled and getattr(run.train, key) != value]
    if replaced:
        running.note(f"--config {config}: {', '.join(replaced)} not used: CRPS fine-tuning "
                     f"trains for crps.epochs of crps.steps_per_epoch batches of crps.batch_size at "
                     f"crps.learning_rate, without warm-up or weight decay: set those crps keys instead")


# the crps key that sets each train setting of crps_schedule's (the others fine-tuning fixes itself)
SCHEDULED_BY = {"epochs": "crps.epochs", "max_steps_per_epoch": "crps.steps_per_epoch", "batch_size": "crps.batch_size",
                "learning_rate": "crps.learning_rate", "checkpoint_every": "crps.epochs", "patience": "crps.patience"}


def crps_schedule(c: CRPSConfig) -> dict:
    """The train settings the crps section (or fine-tuning itself) sets."""
    return dict(epochs=c.epochs, max_steps_per_epoch=c.steps_per_epoch, batch_size=c.batch_size,
                learning_rate=c.learning_rate, weight_decay=0.0, warmup_steps=0, checkpoint_every=c.epochs,
                patience=c.patience)


def crps_settings(scfg: SDEConfig) -> TrainConfig:
    """The generic trainer reads only a train section: the ELBO run's, with the crps section's schedule over it."""
    return dataclasses.replace(scfg.train, **crps_schedule(scfg.crps))


# what --crps-from takes besides the shipped latent SDE, pretrained_sde (paths.given_checkpoint)
CRPS_FROM_TAKES = "a latent SDE's checkpoint path (e.g. checkpoints/latent_sde-<time>/best.pt)"


def same_file(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether two spellings name one file (`--crps-from pretrained_sde`'s file and the path it was stored as,
    `./a.pt` and `a.pt`), whether or not it is still there: comparing them as typed noted the resumed run's own
    source as ignored."""
    return os.path.normpath(os.path.abspath(path)) == os.path.normpath(os.path.abspath(other))


CRPS_FROM_KEYS = ("crps_from", "crps_from_given", "crps_from_sha256")    # run.json's record of the start


def crps_sources(given: str | None, resume: dict | None, start: dict, source: str, read: str) -> dict:
    """run.json's record of what a fine-tuning starts from: the checkpoint as --crps-from named it (`given`), as
    resolved here (`source`) and the SHA-256 of the bytes read, which its VQ-VAE is read from too (source_record's
    keys). Its own run's record goes under started_from, apart: taken as this run's, the shipped model's VQ-VAE path
    named a folder of the machine it was trained on (/tmp/sde25/...). A resume keeps its first run's record (runs
    made before started_from: their vqvae_checkpoint is the ELBO run's VQ-VAE)."""
    source = os.path.abspath(source)
    if resume:
        kept = (*CRPS_FROM_KEYS, *VQVAE_KEYS, "started_from")
        return {"crps_from": source, "vqvae_checkpoint": source, **{k: resume["meta"][k] for k in kept
                                                                     if k in resume["meta"]}}
    return {**source_record(None, CRPS_FROM_KEYS, source, given, read),
            **source_record(None, VQVAE_KEYS, source, given, read),
            "started_from": {"path": source, "sha256": read, "meta": start["meta"]}}


def finetune_crps(args: argparse.Namespace, resume: dict | None, argv: list[str] | None, rt: Runtime) -> dict:
    """Fine-tune an ELBO-trained latent SDE on the fair CRPS of its forecast paths (latent_sde.PathCRPS), with
    the generic trainer: training windows drawn at random, the best epoch by the validation patients' CRPS."""
    source = (resume["meta"]["crps_from"] if resume
              else str(paths.given_checkpoint(args.crps_from, "--crps-from", CRPS_FROM_TAKES, ("pretrained_sde",))))
    if resume and args.crps_from and not same_file(paths.SHIPPED.get(paths.SHIPPED_SPECS.get(args.crps_from),
                                                                     args.crps_from), source):
        running.note(f"--crps-from {args.crps_from} is ignored: the resumed fine-tuning goes on from {source}")
    note_ignored_crps_flags(args, source)
    start, read = (resume, "") if resume else read_checkpoint(source, "latent_sde")
    scfg = crps_config(args, resume, start, source)
    settings = crps_settings(scfg)
    check_adjoint(scfg, rt)
    # the fine-tuning's global batch, named: the trainer's own check would name train.batch_size, which it ignores
    check_batch_split("crps.batch_size", scfg.crps.batch_size, rt.world)
    seed_everything(settings.seed)
    fc = LatentSDEForecaster.from_checkpoint_dict(start, source, rt.device)
    model = PathCRPS(fc, scfg.crps.samples)
    train, val = forecaster_splits(fc.cfg, args.prepared, resume)
    run_dir, ckpt_dir = shared_run_dirs(args, rt, resume, "latent_sde_crps")
    # the train section this run trains with (its crps settings over the ELBO run's), not the ELBO run's
    config = {**scfg.to_dict(), "train": dataclasses.asdict(settings), "vqvae": start["config"]["vqvae"]}
    meta = run_record(config, settings.seed, train, val, rt, argv, args.prepared)
    meta.update(crps_sources(args.crps_from, resume, start, source, read))
    fixed = fixed_windows(val, settings.plot_windows).numpy()
    epoch_end = plotting_epoch_end(fixed, fc.cfg.data.window_samples, run_dir, lambda m: fc,
                                   "latent SDE, CRPS fine-tuning",
                                   fixed_titles(val, settings.plot_windows, args.prepared, fc.cfg.data.window_samples))
    train_set, val_set = (TensorDataset(d["signals"], torch.arange(len(d["signals"]))) for d in (train, val))
    trainer = Trainer(model, train_set, val_set, crps_step, settings,
                      run_dir, ckpt_dir, config, meta, rt, kind="latent_sde", epoch_end=epoch_end,
                      shown=("val_drafts_crps", "val_gain", "seconds"), extras={"vqvae": start["vqvae"]},
                      loss_name="fair CRPS of the forecast paths (mV)")
    row = trainer.run(args.resume, resume)
    if rt.is_main and "val_loss" in row:        # not after a resume with nothing left to train
        print(f"final validation ({closing_epoch(row, trainer)}): {crps_words(row)}")
        print(next_commands(ckpt_dir, fc.cfg, val, args.prepared, resume))
    return row


def check_adjoint(scfg: SDEConfig, rt: Runtime) -> None:
    """nn.DataParallel's replicas hold their weights as plain tensors, so the adjoint would train none of them."""
    if scfg.solver.adjoint and rt.data_parallel:
        raise paths.UserError("solver.adjoint cannot train on several GPUs in one process (nn.DataParallel): "
                              "launch with torchrun, pick one card with --device cuda:0, or set solver.adjoint false")


def check_solver_step(scfg: SDEConfig, frames_per_second: float) -> None:
    """Warn of a solver step longer than one VQ-VAE latent frame, or that does not divide one: torchsde draws a
    frame between its steps on a straight line, and the posterior reads only the context frames at its steps.
    solver.dt is in seconds, so a VQ-VAE at a higher rate or a smaller downsample_factor than the default's
    128 Hz / 8 needs a smaller one."""
    frame, dt = 1 / frames_per_second, scfg.solver.dt
    per_frame = frame / dt
    if dt > frame * (1 + 1e-6):
        running.warn(f"solver.dt {dt:g} s is longer than one latent frame of the VQ-VAE ({frame:g} s: "
                     f"{frames_per_second:g} frames a second): the frames between solver steps come out on straight "
                     f"lines; set solver.dt to at most {frame:g} in the latent SDE config")
    elif abs(per_frame - round(per_frame)) > 1e-6 * per_frame:
        running.warn(f"solver.dt {dt:g} s does not divide one latent frame of the VQ-VAE ({frame:g} s: "
                     f"{per_frame:.3g} steps): the frames that fall between solver steps come out on straight lines; "
                     f"set solver.dt to {frame:g} over a whole number, e.g. {frame / math.ceil(per_frame):g}")


def elbo_config(args: argparse.Namespace, resume: dict | None) -> SDEConfig:
    scfg = run_config(args, resume, load_sde_config, sde_config_from_dict, FORECASTER_FLAGS)
    scfg.validate()
    return scfg


def encode_splits(vq: VQVAE, scfg: SDEConfig, cfg: Config, train: dict, val: dict, prepared: str | None,
                  rt: Runtime) -> tuple[torch.Tensor, torch.Tensor, tuple[list[dict], torch.Tensor] | None]:
    """The splits' frames (and drafts' frames) and the augmented copies', encoded once and cached per VQ-VAE."""
    piece, fs = cfg.data.window_samples, int(train["fs"])
    drafted = scfg.model.draft_beats
    kind = "latents_drafted" if drafted else "latents"   # with drafts: frames, then the draft's frames

    def encode(x: torch.Tensor) -> torch.Tensor:
        return encode_drafted(vq, x, piece, fs) if drafted else encode_windows(vq, x, piece)

    key = f"{piece}" + (f":drafts{DRAFTS_VERSION}" if drafted else "")    # new drafts, new encodings
    if vq.cfg.window_gain:      # futures and drafts coded at the context's gain: encodings of their own gain go
        key += ":context-gain"
    if drafted and train["signals"].shape[1] > 2 * piece:     # drafts of several pieces, once coded whole
        key += ":pieces"
    return frozen_encodings(kind, vq, encode, train, val, key, scfg.augment, cfg.data, scfg.train.seed,
                            prepared, rt)


def batch_names(scfg: SDEConfig) -> list[str]:
    """LatentSDE's keyword for each tensor after a batch's frames: the beat hint's targets and the drafts, when
    the model uses them."""
    hinted = bool(scfg.model.phase_harmonics and scfg.loss.phase_hint > 0)
    return ["beats"] * hinted + ["draft"] * scfg.model.draft_beats


def elbo_datasets(train: dict, val: dict, train_enc: torch.Tensor, val_enc: torch.Tensor,
                  augmented: tuple[list[dict], torch.Tensor] | None, names: list[str],
                  steps: int, factor: int) -> tuple[TensorDataset, TensorDataset]:
    """Frames, then the tensors `names` asks for, then each window's index in its split (validation seeds its
    noise from it: LatentSDE.forward)."""
    fs = int(train["fs"])
    all_enc, sources = train_enc, [train]       # sources: where each block's beat annotations come from
    if augmented:
        all_enc, sources = torch.cat([train_enc, augmented[1]]), sources + augmented[0]
    train_parts, val_parts = [all_enc[:, :steps]], [val_enc[:, :steps]]
    if "beats" in names:
        train_parts.append(torch.cat([beat_targets(d, steps, factor, fs) for d in sources]))
        val_parts.append(beat_targets(val, steps, factor, fs))
    if "draft" in names:
        train_parts.append(all_enc[:, steps:])
        val_parts.append(val_enc[:, steps:])
    return tuple(TensorDataset(*parts, torch.arange(len(parts[0]))) for parts in (train_parts, val_parts))


def elbo_step(context: int, names: list[str]) -> StepFn:
    """The ELBO of a batch of elbo_datasets'; in validation with every window's noise from its own index, and the
    beat hint's errors pooled over the annotated frames of all windows (training.Pooled): a mean of the batches'
    means moved with the batches, so with the processes."""
    def step_fn(m: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, dict]:
        frames, *named, windows = batch
        loss, metrics = m(frames, context, **dict(zip(names, named)), windows=None if m.training else windows)
        known = metrics.pop("beat_frames", None)
        if known is not None and not m.training:     # one value per GPU under nn.DataParallel: summed
            for key in ("phase_err", "rate_err"):
                metrics[key] = Pooled(torch.stack([(metrics[key] * known).sum(), known.sum()]), pooled_mean)
        return loss, metrics
    return step_fn


def pooled_mean(counts: torch.Tensor) -> float:
    """A Pooled (sum, count)'s mean; 0 with nothing counted."""
    return float(counts[0] / counts[1].clamp(min=1))


def train_elbo(args: argparse.Namespace, resume: dict | None, argv: list[str] | None, rt: Runtime) -> dict:
    """Train on the ELBO; the checkpoints hold the frozen VQ-VAE too, so forecast.py and evaluate.py need only them."""
    scfg = elbo_config(args, resume)
    vq, vq_ckpt, vq_source, vq_read = run_vqvae(args, resume)
    vq.requires_grad_(False)
    cfg = forecasting_config(vq_ckpt, vq_source)
    frames_per_second = cfg.data.samples_per_second / cfg.model.downsample_factor
    check_solver_dt(scfg.solver, frames_per_second)     # before the encoding, which takes minutes on a first run
    if rt.is_main:
        check_solver_step(scfg, frames_per_second)
    # as read: best.pt may be replaced while this encodes
    vq_record = source_record(resume, VQVAE_KEYS, vq_source, args.vqvae, vq_read)
    check_adjoint(scfg, rt)
    if rt.is_main:
        print(f"VQ-VAE: {vqvae_choice(args, vq_source)}")
    seed_everything(scfg.train.seed)
    train, val = forecaster_splits(cfg, args.prepared, resume)
    piece, factor = cfg.data.window_samples, cfg.model.downsample_factor
    check_run_roots(args, rt, resume)
    train_enc, val_enc, augmented = encode_splits(vq, scfg, cfg, train, val, args.prepared, rt)
    steps = train["signals"].shape[1] // factor
    model = LatentSDE(cfg.model.latent_dim, scfg, int(train["fs"]) / factor)
    model.set_normaliser(train_enc[:, :steps])   # a resumed run restores the same buffers from its checkpoint
    run_dir, ckpt_dir = shared_run_dirs(args, rt, resume, "latent_sde")
    config = {**scfg.to_dict(), "vqvae": vq_ckpt["config"]}
    meta = run_record(config, scfg.train.seed, train, val, rt, argv, args.prepared)
    meta.update(vq_record)
    extras = {"vqvae": {"model": vq.state_dict(), "config": vq_ckpt["config"], "meta": vq_ckpt["meta"]}}
    fixed = fixed_windows(val, scfg.train.plot_windows).numpy()
    epoch_end = plotting_epoch_end(fixed, piece, run_dir, lambda m: LatentSDEForecaster(vq, m, cfg, scfg, rt.device),
                                   "latent SDE", fixed_titles(val, scfg.train.plot_windows, args.prepared, piece))
    names = batch_names(scfg)
    train_set, val_set = elbo_datasets(train, val, train_enc, val_enc, augmented, names, steps, factor)
    trainer = Trainer(model, train_set, val_set, elbo_step(piece // factor, names), scfg.train, run_dir,
                      ckpt_dir, config, meta, rt, kind="latent_sde", epoch_end=epoch_end,
                      shown=("val_recon", "val_kl", "val_forecast_mse", "val_late_std_ratio", "train_kl_weight",
                             "seconds"), extras=extras,
                      loss_name="negative ELBO per latent number (nats; training: KL weight annealed)")
    row = trainer.run(args.resume, resume)
    if rt.is_main and "val_loss" in row:        # not after a resume with nothing left to train
        print(f"final validation ({closing_epoch(row, trainer)}): {elbo_words(row, scfg.loss.kl_weight)}")
        print(next_commands(ckpt_dir, cfg, val, args.prepared, resume))
    return row


def crps_words(row: dict) -> str:
    """The closing line's scores of a CRPS fine-tuning: its CRPS beside the bare drafts', and the gain between them."""
    return (f"fair CRPS {row['val_crps']:.4f} mV, the bare drafts' {row['val_drafts_crps']:.4f} mV: gain "
            f"{zero_unsigned(row['val_gain'])} mV (positive: the network helps)")


def zero_unsigned(v: float, decimals: int = 4) -> str:
    """`v` at `decimals` decimals, one that rounds to zero as 0.0000: a gain of -2e-05 mV read 'gain -0.0000 mV',
    a loss the network seems to cause where there is none to see."""
    text = f"{v:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def elbo_words(row: dict, kl_weight: float = 1.0) -> str:
    """The closing line's scores: the validation loss (its KL at loss.kl_weight, not annealed) and its terms, and the
    one-path forecast check, whose late std ratio near 0 says the forecasts decay to a flat line. The loss is the
    negative ELBO only at kl_weight 1: at 0 a 'negative ELBO' equal to the recon beside a KL above 0 misnamed it."""
    loss = "negative ELBO" if kl_weight == 1 else f"validation loss (recon + {kl_weight:g} x KL)"
    return (f"{loss} {row['val_loss']:.4f} nats a latent number (recon {row['val_recon']:.4f}, KL "
            f"{row['val_kl']:.4f}), forecast MSE {row['val_forecast_mse']:.4f} (normalised latents), late std ratio "
            f"{row['val_late_std_ratio']:.3f}")


def parser() -> argparse.ArgumentParser:
    p = run_parser(__doc__, "latent SDE config JSON (default: config_sde.json)")
    add_forecaster_flags(p)
    p.add_argument("--vqvae", type=paths.given_path,
                   help="VQ-VAE checkpoint, or a forecaster's for its VQ-VAE, or a shipped model by name: "
                   "pretrained, pretrained_sde (default: newest "
                   "checkpoints/vqvae-*/best.pt; "
                   "a resumed run uses the one stored in its checkpoint). The recipe's is trained with "
                   "vqvae_train.py --config config_vqvae_sde.json")
    p.add_argument("--crps-from", type=paths.given_path,
                   help="an ELBO-trained latent SDE checkpoint (or pretrained_sde, the shipped one) to "
                   "fine-tune on the CRPS of its forecast "
                   "paths, with the crps section of --config (EXPERIMENTS.md, session 19); with it --epochs, "
                   "--max-steps, --batch-size and --patience set crps.epochs, crps.steps_per_epoch, crps.batch_size "
                   "and crps.patience")
    return p


@training_main
def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    rt = setup_runtime(args.device)     # first: see training.setup_runtime
    resume = run_resume(args, rt, "latent_sde")
    if args.crps_from and resume and "crps_from" not in resume["meta"]:
        raise paths.UserError(f"--resume {args.resume} is an ELBO run's checkpoint and --crps-from starts a fine-tuning "
                              "run of its own: resume the ELBO run without --crps-from, or fine-tune with --crps-from "
                              "alone")
    if args.crps_from or (resume and "crps_from" in resume["meta"]):
        return finetune_crps(args, resume, argv, rt)
    return train_elbo(args, resume, argv, rt)


if __name__ == "__main__":
    running.run_main(main)
