"""Train the ECG tokenizer (VQ-VAE) on the training patients.

    python3 vqvae_train.py [--config config_vqvae.json] [--epochs N] [--resume PATH] [--device D] [--seed S]

Writes plots, metrics.csv and run.json to results/vqvae-<time>/ and checkpoints (last, best,
every N epochs) to checkpoints/vqvae-<time>/.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import paths
import running
from hyper_params import Config, config_from_dict, load_config
from prepare_mitbih import load_split, source_samples
from train_results import fixed_titles, fixed_windows, plot_windows
from training import (EpochEndFn, Pooled, Runtime, Trainer, closing_epoch, run_config, run_parser, run_record,
                      run_resume, run_splits, seed_everything, setup_runtime, shared_run_dirs, training_main)
from vqvae import VQVAE, level_key, perplexity
from vqvae_eval import best_checkpoint, compression, source_words, uniform


class RandomCrops(Dataset):
    """Crops of `length` samples from prepared windows; the offset depends only on (seed, epoch,
    index), so single-process, DDP and resumed runs see the same crops."""

    def __init__(self, signals: torch.Tensor, length: int, seed: int):
        self.signals, self.length, self.seed, self.epoch = signals, length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.signals)

    def __getitem__(self, i: int) -> torch.Tensor:
        span = self.signals.shape[1] - self.length
        off = int(np.random.default_rng((self.seed, self.epoch, i)).integers(span + 1)) if span > 0 else 0
        return self.signals[i, off:off + self.length].clone()


class Windows(Dataset):
    """The validation windows, whole."""

    def __init__(self, signals: torch.Tensor):
        self.signals = signals

    def __len__(self) -> int:
        return len(self.signals)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.signals[i].clone()


def step_fn(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Loss and metrics of a batch. batch_perplexity is the first codebook's: in training that of each step's
    global batch (its counts are all-reduced), averaged over the steps; in validation that of the codes of all
    validation windows pooled (training.Pooled), so neither changes with the number of processes."""
    x_hat, losses = model(x)
    return losses["loss"].mean(), {
        "recon": losses["recon"].mean().detach(), "commitment": losses["commitment"].mean().detach(),
        "batch_perplexity": (losses["perplexity"].float().mean() if model.training
                             else Pooled(losses["counts"], perplexity)),
        "mse_mv2": ((x_hat.detach() - x) ** 2).mean(), "signal_mv2": (x ** 2).mean(),
        "deviation_mv2": ((x - x.mean(1, keepdim=True)) ** 2).mean()}


def summarize(row: dict) -> dict:
    """PRD against the signal energy, normalised PRD against its variance (percent), pooled over the validation
    windows: vqvae_eval.py's mean over records weighs each record the same and differs from it."""
    return {"val_prd": 100 * float(np.sqrt(row["val_mse_mv2"] / row["val_signal_mv2"])),
            "val_prdn": 100 * float(np.sqrt(row["val_mse_mv2"] / row["val_deviation_mv2"]))}


def plot_fixed_windows(model: VQVAE, windows: torch.Tensor, fs: int, out: Path, title: str,
                       titles: list[tuple[str, str]] | None = None) -> None:
    """Original against reconstruction of the fixed validation windows (none: train.plot_windows 0)."""
    if not len(windows):
        return
    model.eval()
    with torch.no_grad():
        x = windows.to(model.device)
        x_hat, _ = model(x)
    plot_windows(x.cpu().numpy(), x_hat.cpu().numpy(), fs, out, title, titles)


def plotting_epoch_end(fixed: torch.Tensor, fs: int, run_dir: Path,
                       titles: list[tuple[str, str]] | None = None) -> EpochEndFn:
    """The trainer's epoch end: the codebook's epoch statistics, and on rank 0 a plot of the fixed validation
    windows' reconstructions."""
    def epoch_end(m: VQVAE, epoch: int, is_main: bool) -> dict:
        stats = m.end_epoch()
        if is_main:
            plot_fixed_windows(m, fixed, fs, run_dir / f"reconstruction_epoch_{epoch:03d}.png",
                               f"VQ-VAE, epoch {epoch}: validation windows, original vs reconstruction", titles)
            m.train()
        return stats
    return epoch_end


def check_not_data_parallel(rt: Runtime) -> None:
    """nn.DataParallel's replicas update their codebook statistics and lose them: usage and dead-code restarts
    would see the first card's share of each batch only, and restart codes the other cards use."""
    if rt.data_parallel:
        raise paths.UserError("the VQ-VAE does not train under nn.DataParallel (one process, several GPUs): its "
                              "codebook statistics would come from the first card's share of each batch; launch with "
                              "torchrun --nproc_per_node N (they are all-reduced there) or pick one card with "
                              "--device cuda:0")


@training_main
def main(argv: list[str] | None = None) -> dict:
    args = run_parser(__doc__, "config JSON (default: config_vqvae.json)").parse_args(argv)
    rt = setup_runtime(args.device)     # first: see training.setup_runtime
    resume_ckpt = run_resume(args, rt, "vqvae")
    cfg = run_config(args, resume_ckpt, load_config, config_from_dict)
    cfg.validate()
    check_not_data_parallel(rt)
    seed_everything(cfg.train.seed)
    train, val = run_splits(lambda split: load_split(split, cfg, args.prepared), resume_ckpt)
    fs = int(train["fs"])
    model = VQVAE(cfg.model, train["scale_mv"].tolist())
    run_dir, ckpt_dir = shared_run_dirs(args, rt, resume_ckpt, "vqvae")
    meta = run_record(cfg.to_dict(), cfg.train.seed, train, val, rt, argv, args.prepared)
    fixed, titles = fixed_windows(val, cfg.train.plot_windows), fixed_titles(val, cfg.train.plot_windows, args.prepared)
    trainer = Trainer(model, RandomCrops(train["signals"], cfg.data.window_samples, cfg.train.seed),
                      Windows(val["signals"]), step_fn, cfg.train, run_dir, ckpt_dir, cfg.to_dict(), meta, rt,
                      kind="vqvae", epoch_end=plotting_epoch_end(fixed, fs, run_dir, titles), summarize=summarize,
                      loss_name="reconstruction MSE + commitment (normalised units)",
                      shown=shown_columns(cfg))
    if rt.is_main and not resume_ckpt:
        plot_fixed_windows(model, fixed, fs, run_dir / "reconstruction_initial.png",
                           "VQ-VAE before training: validation windows, original vs reconstruction", titles)
    row = trainer.run(args.resume, resume_ckpt)
    if rt.is_main and "val_mse_mv2" in row:      # not after a resume with nothing left to train
        print(f"final validation ({closing_epoch(row, trainer)}): MSE {row['val_mse_mv2']:.5f} mV^2, "
              f"PRD {row['val_prd']:.2f}%, "
              f"PRDN {row['val_prdn']:.2f}% (pooled over windows; vqvae_eval.py: mean over records)")
        print(codebook_line(row, cfg))
        print(compression_line(model, cfg, val["records"], args.prepared))
        print(next_commands(ckpt_dir, cfg, args.prepared, resume_ckpt))
    return row


def next_commands(ckpt_dir: Path, cfg: Config, prepared: str | None, resume: dict | None = None) -> str:
    """What to run with the run's best.pt (best_checkpoint's) once its training ends, as the forecaster trainers
    say it: vqvae_eval.py on the validation patients, and a forecaster trained on it (transformer_train.py), on the
    run's --prepared folder (or the $ECG_* folders that chose this run's). Both read the data section from the
    checkpoint, so no --config; a VQ-VAE whose data.forecast_predictions is 0 gets no forecaster line, as
    forecasting_config refuses it."""
    best = best_checkpoint(ckpt_dir, resume)
    data = ["--prepared", prepared] if prepared else []
    lines = ["evaluate on validation patients: " + paths.command_line(
        ["python3", "vqvae_eval.py", "--checkpoint", best, "--split", "validation", *data], ("prepared", "results"))]
    if cfg.data.forecast_predictions > 0:
        lines.append("train a forecaster on it: " + paths.command_line(
            ["python3", "transformer_train.py", "--vqvae", best, *data], ("prepared", "results", "checkpoints")))
    return "\n".join(lines)


def shown_columns(cfg: Config) -> tuple[str, ...]:
    """The metrics printed each epoch: validation error, every level's codebook health, time."""
    health = [k for name in ("perplexity", "usage", "restarted") for k in levels(name, cfg)]
    return ("val_mse_mv2", "val_prdn", *health, "seconds")


def levels(name: str, cfg: Config) -> list[str]:
    """The metrics.csv columns of one codebook statistic, a column per residual level."""
    return [level_key(name, i) for i in range(cfg.model.num_quantizers)]


def codebook_line(row: dict, cfg: Config) -> str:
    """The codebooks' health as the last training epoch's EMA updates counted it (validation counts no codes),
    every residual level's, coarse to fine."""
    perplexity = "/".join(f"{row[k]:.1f}" for k in levels("perplexity", cfg))
    usage = "/".join(percent(row[k]) for k in levels("usage", cfg))
    return (f"codebook in the last training epoch: perplexity {perplexity}, usage {usage}% "
            f"of {cfg.model.codebook_size} codes")


def percent(share: float) -> str:
    """A share in whole percent, or to two figures under 1%: a large codebook's few codes used read 0%."""
    p = 100 * share
    return f"{p:.0f}" if p >= 1 or p == 0 else f"{p:.2g}"


def compression_line(model: VQVAE, cfg: Config, records: list[str], prepared: str | None) -> str:
    """Compression against the stored records (the ECG-coding convention) and against model-rate samples, and
    the bit rate of the codes (and gains), which needs no convention."""
    fs = cfg.data.samples_per_second
    c = compression(model, cfg.data.total_samples, fs, source_samples(records, prepared))
    assumed = " (assumed)" if c["sample_bits_assumed"] else ""
    model_rate = f"{c['compression_ratio_model_rate']:.1f} against {fs} Hz samples"
    held = (f"the {c['source_fs']:g} Hz {c['sample_bits']:g}-bit{assumed} records ({model_rate})" if uniform(c)
            else f"the records ({source_words(c, assumed)}; {model_rate})")
    return f"compression ratio {c['compression_ratio']:.1f} against {held}, {c['bits_per_second']:.0f} bit/s"


if __name__ == "__main__":
    running.run_main(main)
