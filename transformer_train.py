"""Train the causal code Transformer that forecasts future VQ-VAE codes.

    python3 transformer_train.py [--vqvae checkpoints/vqvae-<time>/best.pt] [--config config_transformer.json]
                                 [--epochs N] [--resume PATH] [--device D] [--seed S]

The frozen VQ-VAE encodes every prepared window of the training and validation patients once
(cached next to the prepared tensors, or in $ECG_CACHE_DIR); the Transformer learns next-code prediction on those
sequences. The checkpoint holds the VQ-VAE too, so forecast.py needs only this one file.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import paths
import running
from drafts import VERSION as DRAFTS_VERSION, detected_beats
from forecast import Forecaster, beat_draft, seasonal_draft
from hyper_params import Config
from hyper_params_transformer import TransformerConfig, load_transformer_config, transformer_config_from_dict
from train_results import fixed_titles, fixed_windows, plot_epoch_forecasts
from training import (Runtime, Trainer, check_run_roots, closing_epoch, run_config, run_parser,
                      run_record, run_resume, seed_everything, setup_runtime, shared_run_dirs, training_main)
from transformer import CodeGPT, as_levels
from vqvae import VQVAE
from vqvae_eval import (ENCODE_BATCH, FORECASTER_FLAGS, VQVAE_KEYS, add_forecaster_flags, forecaster_splits,
                        forecasting_config, frozen_encodings, next_commands, run_vqvae, source_record, vqvae_choice)


@torch.no_grad()
def encode_split(vq: VQVAE, signals: torch.Tensor, chunk: int, batch: int = ENCODE_BATCH) -> torch.Tensor:
    """Codes [N, T(, Q)] of every window, encoding each `chunk` (one context length) on its
    own: at forecast time the context is encoded without seeing the future, so training codes must
    be made alike. Encoded on the VQ-VAE's device, returned on the signals'."""
    out = []
    for i in range(0, len(signals), batch):
        x = signals[i:i + batch].to(vq.device, copy=True)
        out.append(torch.cat([vq.encode(x[:, t:t + chunk]) for t in range(0, x.shape[1], chunk)], 1).to(signals.device))
    return torch.cat(out)


def encode_drafted(vq: VQVAE, signals: torch.Tensor, chunk: int, fs: int, beats: bool = False) -> torch.Tensor:
    """[N, T, 2Q]: each window's codes (as encode_split), then its drafts: -1 over the context chunk, then
    the codes of the context's seasonal-naive continuation, as a forecast sees them; or with `beats`
    the context's mean beat laid at the window's own R peaks (detected over the whole window), so that
    the model learns to render beats where it is told they are."""
    codes = as_levels(encode_split(vq, signals, chunk), len(vq.quantizers))
    steps, context = codes.shape[1] - chunk // vq.factor, signals[:, :chunk]
    if beats:
        draft = beat_draft(vq, context, steps, fs, beats=detected_beats(signals.numpy(), fs))
    else:
        draft = seasonal_draft(vq, context, steps, fs)
    return torch.cat([codes, draft], -1)


def step_fn(model: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, dict]:
    """Next-code cross-entropy over every position and level, and how often the likeliest code is the right one."""
    codes, *draft = batch                           # draft: only for a drafting model
    logits = model(codes, *draft)                   # [B, T-1, Q, K]
    target = codes[:, 1:].reshape(logits.shape[:-1])
    loss = F.cross_entropy(logits.flatten(0, -2), target.flatten())
    acc = (logits.argmax(-1) == target).float().mean()
    return loss, {"accuracy": acc.detach()}


def code_datasets(vq: VQVAE, cfg: Config, tcfg: TransformerConfig, train: dict, val: dict, args: argparse.Namespace,
                  rt: Runtime) -> tuple[TensorDataset, TensorDataset, int]:
    """The Transformer's training and validation sets: the frozen VQ-VAE's codes of the prepared windows
    (cached; augmented copies appended to training), with their drafts for a drafting model. Also
    returns the code sequences' length, the model's block size."""
    chunk, fs, arch = cfg.data.window_samples, int(train["fs"]), tcfg.model
    kind = "beat_drafted" if arch.draft_beats else "drafted" if arch.draft else "codes"
    encode = ((lambda x: encode_drafted(vq, x, chunk, fs, arch.draft_beats)) if arch.draft
              else (lambda x: encode_split(vq, x, chunk)))
    key = f"{chunk}:steps" + (f":drafts{DRAFTS_VERSION}" if arch.draft else "")   # new drafts, new encodings
    train_codes, val_codes, augmented = frozen_encodings(kind, vq, encode, train, val, key, tcfg.augment,
                                                         cfg.data, tcfg.train.seed, args.prepared, rt)
    if augmented:
        train_codes = torch.cat([train_codes, augmented[1]])
    q = cfg.model.num_quantizers
    train_set, val_set = (TensorDataset(*(c.split(q, -1) if arch.draft else (c,))) for c in (train_codes, val_codes))
    return train_set, val_set, int(train_codes.shape[1])


def forecast_plotter(vq: VQVAE, cfg: Config, tcfg: TransformerConfig, val: dict, run_dir: Path, device: torch.device,
                     prepared: str | None = None) -> Callable:
    """The trainer's epoch_end: sampled forecasts of fixed validation windows against their truth, a PNG
    per epoch, so a run shows what it forecasts while it learns."""
    fixed = fixed_windows(val, tcfg.train.plot_windows).numpy()
    ctx_len, fs = cfg.data.window_samples, int(val["fs"])
    titles = fixed_titles(val, tcfg.train.plot_windows, prepared, ctx_len)

    def epoch_end(m: CodeGPT, epoch: int, is_main: bool) -> dict:
        if is_main and len(fixed):
            # on the run's device: a Forecaster moves the model it is given, and m is the one being trained
            fc = Forecaster(vq, m, cfg, tcfg.sample, device, draft_beats=tcfg.model.draft_beats)
            samples = fc.predict(fixed[:, :ctx_len], fixed.shape[1] - ctx_len, num_samples=20, seed=0)
            plot_epoch_forecasts(fixed, samples, fs, ctx_len, run_dir, epoch, "Transformer", titles)
            m.train()
        return {}
    return epoch_end


@training_main
def main(argv: list[str] | None = None) -> dict:
    p = run_parser(__doc__, "Transformer config JSON (default: config_transformer.json)")
    add_forecaster_flags(p)
    p.add_argument("--vqvae", type=paths.given_path,
                   help="VQ-VAE checkpoint, or a forecaster's for its VQ-VAE, e.g. pretrained/forecaster.pt, or "
                   "a shipped model by name: pretrained, pretrained_sde (default: newest checkpoints/vqvae-*/best.pt)")
    args = p.parse_args(argv)
    rt = setup_runtime(args.device)     # first: see training.setup_runtime
    resume = run_resume(args, rt, "transformer")
    tcfg = run_config(args, resume, load_transformer_config, transformer_config_from_dict, FORECASTER_FLAGS)
    tcfg.validate()
    vq, vq_ckpt, vq_path, vq_read = run_vqvae(args, resume)
    cfg = forecasting_config(vq_ckpt, vq_path)
    # as read: best.pt may be replaced while this encodes
    vq_record = source_record(resume, VQVAE_KEYS, vq_path, args.vqvae, vq_read)
    if rt.is_main:
        print(f"VQ-VAE: {vqvae_choice(args, vq_path)}")
    seed_everything(tcfg.train.seed)
    train, val = forecaster_splits(cfg, args.prepared, resume)
    check_run_roots(args, rt, resume)
    train_set, val_set, block = code_datasets(vq, cfg, tcfg, train, val, args, rt)
    arch = tcfg.model
    model = CodeGPT(cfg.model.codebook_size, block, arch.dim, arch.layers, arch.heads,
                    arch.dropout, arch.rope, cfg.model.num_quantizers, arch.draft)
    run_dir, ckpt_dir = shared_run_dirs(args, rt, resume, "transformer")
    config = {**tcfg.to_dict(), "vqvae": vq_ckpt["config"]}
    meta = run_record(config, tcfg.train.seed, train, val, rt, argv, args.prepared)
    meta.update(vq_record)
    extras = {"vqvae": {"model": vq.state_dict(), "config": vq_ckpt["config"], "meta": vq_ckpt["meta"]},
              "block_size": block}
    trainer = Trainer(model, train_set, val_set, step_fn, tcfg.train, run_dir, ckpt_dir, config, meta, rt,
                      kind="transformer", shown=("val_accuracy", "seconds"), extras=extras,
                      loss_name="cross-entropy of the next code (nats)",
                      epoch_end=forecast_plotter(vq, cfg, tcfg, val, run_dir, rt.device, args.prepared))
    row = trainer.run(args.resume, resume)
    if rt.is_main and "val_loss" in row:        # not after a resume with nothing left to train
        print(f"final validation ({closing_epoch(row, trainer)}): {validation_words(row, cfg.model.codebook_size)}")
        print(next_commands(ckpt_dir, cfg, val, args.prepared, resume))
    return row


def validation_words(row: dict, codebook_size: int) -> str:
    """The closing line's scores: perplexity, exp of the cross-entropy, reads against the codebook's size (a model
    that learned nothing guesses among all its codes)."""
    return (f"cross-entropy {row['val_loss']:.4f} nats a code, perplexity {math.exp(row['val_loss']):.1f} "
            f"of {codebook_size} codes, next-code accuracy {100 * row['val_accuracy']:.1f}%")


if __name__ == "__main__":
    running.run_main(main)
