"""Training throughput (windows/s) and peak RSS of a *_train.py on all of MIT-BIH: one JSON line.

    python3 bench/train_speed.py vqvae|transformer|latent_sde [--steps 20] [--config PATH] [--vqvae PATH]

Runs the real script with its default config, or with --config (passed on: the script checks it), on the prepared
tensors ($ECG_PREPARED_DIR or data/prepared, memory-mapped) for one epoch capped at --steps, outputs in a temporary
folder; the JSON line names the config, and the data and VQ-VAE the run read. Throughput counts the
training steps after the first only (not start-up, the first step's one-off work such as the VQ-VAE's k-means start
of its codebooks, validation or a forecaster's one-off encoding of every window).
The forecasters use --vqvae, else the newest checkpoints/vqvae-*/best.pt, else an untrained VQ-VAE of the config
their recipe trains it with (the speed of a step does not depend on what the VQ-VAE learned, but on its compression
factor and codebooks: the code sequence's length).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

from common import bench_commit, emit, keep_encodings_in, memory_mb

import paths  # noqa: E402 (common puts the repository on sys.path)
import running  # noqa: E402
import training  # noqa: E402
from paths import UserError  # noqa: E402


RECIPE_VQVAE = {"transformer": "config_vqvae.json", "latent_sde": "config_vqvae_sde.json"}   # as the Makefile trains


def vqvae_checkpoint(tmp: Path, model: str) -> tuple[Path, str]:
    """The newest VQ-VAE checkpoint, else an untrained one of the config `model`'s recipe trains it with: the
    latent SDE's bench ran on config_vqvae.json's (three codebooks of 1024), its recipe's has one of 512."""
    from vqvae_eval import latest_checkpoint

    try:
        path = latest_checkpoint("vqvae")
        return path, str(path)
    except UserError:
        import torch

        from hyper_params import load_config
        from vqvae import VQVAE

        cfg = load_config(paths.ROOT / RECIPE_VQVAE[model])
        path = tmp / "untrained_vqvae.pt"
        torch.save({"kind": "vqvae", "model": VQVAE(cfg.model).state_dict(), "config": cfg.to_dict(),
                    "meta": {"note": "untrained, for benchmarking"}}, path)
        return path, f"untrained, of {RECIPE_VQVAE[model]} (no checkpoints/vqvae-*/best.pt)"


def time_train_epochs() -> dict:
    """Make Trainer._train_epoch note its seconds, steps and batch size in the dict returned, the first step left
    out: the time of the training steps alone. The first does one-off work (the VQ-VAE's k-means start of its
    codebooks: 0.54 s against 0.27 s for a step), which cut a 20-step bench's windows/s by 5%."""
    timed: dict = {}
    real_epoch, real_step = training.Trainer._train_epoch, training.Trainer._train_step

    def timed_step(self: training.Trainer, model, batch):
        t0 = time.perf_counter()
        out = real_step(self, model, batch)
        timed.setdefault("first_step_s", time.perf_counter() - t0)
        return out

    def timed_epoch(self: training.Trainer, model):
        timed.pop("first_step_s", None)
        t0 = time.perf_counter()
        out = real_epoch(self, model)
        timed.update(seconds=time.perf_counter() - t0 - timed["first_step_s"], steps=self.steps_per_epoch - 1,
                     batch=self.s.batch_size)
        return out

    training.Trainer._train_step, training.Trainer._train_epoch = timed_step, timed_epoch
    return timed


def read_by_run(results: Path) -> dict:
    """The data hash and VQ-VAE digest the timed run's run.json gives, as the line's own: the run's folder goes with
    the temporary one."""
    run = json.loads(next(results.glob("*/run.json")).read_text())
    return {k: run[k] for k in ("data_hash", "vqvae_sha256") if k in run}


def default_config(model: str) -> Path:
    """The config file `model`'s script trains with when given no --config."""
    module = {"vqvae": "hyper_params", "transformer": "hyper_params_transformer", "latent_sde": "hyper_params_sde"}
    return importlib.import_module(module[model]).DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["vqvae", "transformer", "latent_sde"])
    p.add_argument("--steps", type=int, default=20, help="training steps to run (the first is not timed)")
    p.add_argument("--config", type=paths.given_path, help="the timed script's config JSON, as its --config "
                   "(default: its own, config_vqvae.json, config_transformer.json or config_sde.json)")
    p.add_argument("--vqvae", type=paths.given_path, help="the forecasters' VQ-VAE checkpoint, as their --vqvae "
                   "(default: the newest checkpoints/vqvae-*/best.pt, else an untrained one)")
    args = p.parse_args(argv)
    commit = bench_commit()     # at the start: the code that runs is the checkout of now, not of the end
    if args.vqvae and args.model == "vqvae":
        p.error("--vqvae is the forecasters' VQ-VAE: the vqvae bench trains one (give its --config)")
    if args.steps < 2:
        p.error(f"--steps {args.steps}: give at least 2 (the first step is not timed)")
    timed = time_train_epochs()
    prepared = paths.location("prepared")
    extra = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        tmp = Path(tmp)
        flags = ["--epochs", "1", "--max-steps", str(args.steps), "--device", "cpu",
                 "--results", str(tmp / "results"), "--checkpoints", str(tmp / "checkpoints")]
        flags += ["--config", args.config] if args.config else []
        script = importlib.import_module(f"{args.model}_train")
        if args.model == "vqvae":
            script.main(flags + ["--prepared", str(prepared)])
        else:
            keep_encodings_in(tmp)
            vq, extra["vqvae"] = (Path(args.vqvae), args.vqvae) if args.vqvae else vqvae_checkpoint(tmp, args.model)
            script.main(flags + ["--prepared", str(prepared), "--vqvae", str(vq)])
        extra.update(read_by_run(tmp / "results"))
    train_bytes = (prepared / "train.pt").stat().st_size
    return emit({"bench": f"train_{args.model}", "config": paths.shown(args.config or default_config(args.model)),
                 "windows_per_s": round(timed["steps"] * timed["batch"] / timed["seconds"], 1),
                 "steps": timed["steps"], "batch_size": timed["batch"], "seconds": round(timed["seconds"], 1),
                 "first_step_s": round(timed["first_step_s"], 2),
                 **memory_mb(), "train_pt_mb": round(train_bytes / 2 ** 20), **extra}, commit)


if __name__ == "__main__":
    running.run_main(main)
