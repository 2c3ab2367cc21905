"""Latency of the latent SDE forecaster: S sampled paths of H seconds for one context, on this CPU.

    python3 bench/sde_latency.py [--checkpoint checkpoints/latent_sde-<time>/best.pt] [--samples 100]
                                 [--horizon 3] [--repeats 5] [--threads N]

Prints one JSON line: median and best wall time of `predict` (after one warm-up call), whether the
median meets the 2 s target, and the solver settings that drive the cost.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_S = 2.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="latent SDE checkpoint (default: newest checkpoints/latent_sde-*/best.pt)")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--horizon", type=float, default=3.0, help="seconds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()

    import numpy as np
    import torch

    from forecast import Forecaster
    from vqvae_eval import latest_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.checkpoint) if args.checkpoint else latest_checkpoint("latent_sde")
    fc = Forecaster.from_checkpoint(path, "cpu")
    context = np.random.default_rng(0).standard_normal((1, fc.cfg.data.window_samples, 2)).astype(np.float32) * 0.3
    horizon = round(args.horizon * fc.fs)
    fc.predict(context, horizon, args.samples, seed=0)            # warm-up
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = fc.predict(context, horizon, args.samples, seed=r)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    print(json.dumps({"benchmark": "sde_latency", "checkpoint": str(path), "samples": args.samples,
                      "horizon_s": args.horizon, "output_shape": list(out.shape), "repeats": args.repeats,
                      "median_s": round(median, 3), "best_s": round(min(times), 3), "target_s": TARGET_S,
                      "meets_target": median < TARGET_S, "torch_threads": torch.get_num_threads(),
                      "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
                      "solver": fc.scfg.solver.method, "dt_s": fc.scfg.solver.dt,
                      "state_size": fc.scfg.model.state_size}))


if __name__ == "__main__":
    main()
