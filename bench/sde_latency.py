"""Latency of the latent SDE forecaster: 100 sampled paths of 3 s for one context (target: under 2 s
on this CPU), one JSON line.

    python3 bench/sde_latency.py [--checkpoint PATH] [--samples 100] [--horizon 3] [--repeats 5] [--threads N]

Uses the newest checkpoints/latent_sde-*/best.pt, else the shipped pretrained/latent_sde.pt, else
one trained for a few steps on the fly (see common.forecaster_to_time). The context is a validation
window when the prepared data is there, else noise (the cost does not depend on it).
The time is the median of `repeats` calls of `predict` after one warm-up call; load_avg says how busy
the machine was.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from common import bench_commit, emit, forecaster_to_time, memory_mb, positive_int, positive_seconds

import paths  # noqa: E402 (common puts the repository on sys.path)
import running  # noqa: E402

TARGET_S = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=paths.given_path,
                   help="latent SDE checkpoint (default: newest checkpoints/latent_sde-*/best.pt, "
                   "else the shipped pretrained/latent_sde.pt, else one trained on the fly)")
    p.add_argument("--samples", type=positive_int, default=100)
    p.add_argument("--horizon", type=positive_seconds, default=3.0, help="seconds")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    commit = bench_commit()     # at the start: the code that runs is the checkout of now, not of the end

    import numpy as np
    import torch

    from forecast import Forecaster
    from paths import UserError
    from prepare_mitbih import load_split

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        path, prepared, source = forecaster_to_time(args.checkpoint, "latent_sde", Path(tmp))
        fc = Forecaster.from_checkpoint(path, "cpu")
        n = fc.cfg.data.window_samples
        try:
            context, where = load_split("validation", fc.cfg, prepared)["signals"][:1, :n].numpy(), "validation window"
        except UserError:
            context, where = np.random.default_rng(0).standard_normal((1, n, 2)).astype(np.float32) * 0.3, "noise"
    horizon = round(args.horizon * fc.fs)
    fc.predict(context, horizon, args.samples, seed=0)            # warm-up
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = fc.predict(context, horizon, args.samples, seed=r + 1)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return emit({"bench": "sde_latency", "checkpoint": source, "checkpoint_sha256": fc.checkpoint_sha256,
                 "context": where, "samples": args.samples,
                 "horizon_s": args.horizon, "output_shape": list(out.shape), "repeats": args.repeats,
                 "median_s": round(median, 3), "best_s": round(min(times), 3), "target_s": TARGET_S,
                 "meets_target": median < TARGET_S, "solver": fc.scfg.solver.method, "dt_s": fc.scfg.solver.dt,
                 "state_size": fc.scfg.model.state_size, "load_avg": round(os.getloadavg()[0], 2), **memory_mb()},
                commit)


if __name__ == "__main__":
    running.run_main(main)
