"""Forecast latency for 1 and 64 contexts with 100 sampled futures each (and for 1 context without the
Transformer's key/value cache): one JSON line. One context is timed REPEATS times (the median is
reported: a single run varies by ±20 % on a shared CPU), the others once.

    python3 bench/forecast_latency.py [--checkpoint PATH] [--samples 100]

Uses the newest checkpoints/transformer-*/best.pt, else the shipped model, else a Transformer trained
for a few steps on the fly in a temporary folder (latency depends on the model's size, not on its
skill), and says which. Contexts are validation windows, the horizon is the model's own.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import bench_commit, emit, forecaster_to_time, memory_mb, positive_int

import paths  # noqa: E402 (common puts the repository on sys.path)
import running  # noqa: E402

REPEATS = 5


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=paths.given_path,
                   help="Transformer checkpoint (default: newest checkpoints/transformer-*/best.pt, "
                   "else the shipped pretrained/forecaster.pt, else one trained on the fly)")
    p.add_argument("--samples", type=positive_int, default=100)
    args = p.parse_args(argv)
    commit = bench_commit()     # at the start: the code that runs is the checkout of now, not of the end
    import torch

    from forecast import Forecaster
    from prepare_mitbih import load_split

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        path, prepared, source = forecaster_to_time(args.checkpoint, "transformer", Path(tmp))
        fc = Forecaster.from_checkpoint(path, "cpu")
        ctx, horizon = fc.cfg.data.window_samples, fc.cfg.data.window_samples * fc.cfg.data.forecast_predictions
        signals = load_split("validation", fc.cfg, prepared)["signals"]
        contexts = signals[torch.arange(64) % len(signals), :ctx].clone().numpy()
        fc.predict(contexts[:1], horizon, 2)  # warm-up
        one = float(np.median([timed(lambda: fc.predict(contexts[:1], horizon, args.samples, seed=0))
                               for _ in range(REPEATS)]))
        no_cache = timed(lambda: fc.predict(contexts[:1], horizon, args.samples, seed=0, use_cache=False))
        many = timed(lambda: fc.predict(contexts, horizon, args.samples, seed=0))
    return emit({"bench": "forecast_latency", "contexts_1_s": round(one, 2), "contexts_1_repeats": REPEATS,
                 "contexts_1_no_cache_s": round(no_cache, 2), "contexts_64_s": round(many, 2),
                 "samples": args.samples, "context_s": ctx / fc.fs, "horizon_s": horizon / fc.fs,
                 "checkpoint": source, "checkpoint_sha256": fc.checkpoint_sha256, **memory_mb()}, commit)


if __name__ == "__main__":
    running.run_main(main)
