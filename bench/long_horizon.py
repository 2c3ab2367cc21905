"""Do a forecaster's paths keep the recording's beat size and rhythm over a long horizon (the models draw one past
3 s a trained block at a time: Forecaster.roll, LatentSDEForecaster.roll)? For one record, per window of the
horizon: each lead's per-second peak-to-peak (mean over paths, and the truth's) as a fraction of the context's, the
SD across paths of lead 1, and the median heart rate of the paths' lead 1 R peaks against the truth's; the mean
sample step at the block edges against elsewhere (a seam), and whether the same seed draws the same paths. A table
on stderr, one JSON line.

    python3 bench/long_horizon.py --record ../shared/data/mitdb/100 [--start 60] [--horizon 60] [--samples 20]
                                  [--seed 0] [--every 10] [--checkpoint pretrained|pretrained_sde|BASELINE|PATH]
"""
from __future__ import annotations

import argparse

import numpy as np
from common import bench_commit, emit, positive_int, positive_seconds

import paths  # noqa: E402 (common puts the repository on sys.path)
import running  # noqa: E402


def second_ptp(x: np.ndarray, fs: int) -> np.ndarray:
    """Peak-to-peak of each whole second of x [N, T, 2], mean over rows and seconds, per lead (mV)."""
    n = x.shape[1] // fs
    return np.ptp(x[:, :n * fs].reshape(len(x), n, fs, 2), axis=2).mean((0, 1), dtype=np.float64)


def ratios(x: np.ndarray, size: np.ndarray, fs: int) -> list[float]:
    """second_ptp of x per lead as a fraction of `size`, the context's, to 0.01."""
    return [round(float(v), 2) for v in second_ptp(x, fs) / size]


def window_rows(res: dict, every: int) -> list[dict]:
    """The table's rows, one per `every` seconds of the horizon (forecast_record's result `res`): the truth's
    figures are None where the record does not cover a window."""
    from metrics import detect_r_peaks, heart_rate, per_row

    fs, ctx, paths_ = res["fs"], res["context"], res["samples"]
    c, horizon = len(ctx), paths_.shape[1]
    truth = np.full((horizon, 2), np.nan)             # the record may end, or break, before the horizon does
    truth[:len(res["truth"])] = res["truth"]
    size = second_ptp(ctx[None], fs)
    x = np.concatenate([np.broadcast_to(ctx[:, 0], (len(paths_) + 1, c)),
                        np.vstack([paths_[:, :, 0], np.nan_to_num(truth[None, :, 0])])], axis=1)
    beats = [p - c for p in per_row(*detect_r_peaks(x, fs, level_from=c), len(x))]
    rows = []
    for a in range(0, horizon, every * fs):
        b = min(a + every * fs, horizon)
        rate = [heart_rate(p[(p >= a) & (p < b)], fs, (b - a) / fs) for p in beats]
        covered = np.isfinite(truth[a:b]).all()
        rows.append({"from_s": a / fs, "to_s": b / fs, "ptp": ratios(paths_[:, a:b], size, fs),
                     "truth_ptp": ratios(truth[None, a:b], size, fs) if covered else None,
                     "sd_mv": round(float(paths_[:, a:b, 0].std(0).mean()), 3),
                     "hr_bpm": round(float(np.median(rate[:-1])), 1),
                     "truth_hr_bpm": round(rate[-1], 1) if covered else None})
    return rows


def seam_steps(paths_: np.ndarray, block: int) -> tuple[float | None, float]:
    """Mean |sample step| (mV, both leads) from the last sample of each block to the next block's first, and
    elsewhere: a forecast drawn a block at a time whose blocks do not join shows it as a larger first figure."""
    step = np.abs(np.diff(paths_, axis=1))
    edge = np.zeros(step.shape[1], bool)
    edge[block - 1::block] = True
    return (round(float(step[:, edge].mean()), 4) if edge.any() else None), round(float(step[:, ~edge].mean()), 4)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", required=True, type=paths.given_path, help="WFDB record path without extension")
    p.add_argument("--start", type=float, default=60.0, help="forecast start in seconds (default 60)")
    p.add_argument("--horizon", type=positive_seconds, default=60.0, help="seconds (default 60)")
    p.add_argument("--samples", type=positive_int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=positive_int, default=10, help="seconds per row (default 10)")
    p.add_argument("--checkpoint", type=paths.given_path, help="as forecast.py --checkpoint (default: the shipped "
                   "Transformer)")
    args = p.parse_args(argv)
    commit = bench_commit()
    from forecast import forecast_record, load_forecaster, record_data

    name, fc = load_forecaster(args.checkpoint, "cpu")
    res = forecast_record(fc, args.record, args.start, args.horizon, args.samples, args.seed)
    data = record_data(fc)
    block = data.total_samples - data.window_samples        # the trained horizon: each block of a longer one
    again = fc.predict(res["context"][None], res["samples"].shape[1], args.samples, args.seed)[0]
    same = bool(np.array_equal(again, res["samples"]))
    rows = window_rows(res, args.every)
    seam, other = seam_steps(res["samples"], block)
    lines = [f"{args.record} from {args.start:g} s, {len(res['samples'])} paths of {name}; per-second peak-to-peak "
             f"of each lead as a fraction of the context's ({', '.join(res['leads'])}):",
             "window (s)  paths ptp  truth ptp  SD lead 1 (mV)  HR paths  HR truth (bpm)"]
    for r in rows:
        truth, hr = ("—", "—") if r["truth_ptp"] is None else ("/".join(f"{v:.2f}" for v in r["truth_ptp"]),
                                                                f"{r['truth_hr_bpm']:.1f}")
        lines.append(f"{r['from_s']:>4g}-{r['to_s']:<5g} {'/'.join(f'{v:.2f}' for v in r['ptp']):>10} {truth:>10} "
                     f"{r['sd_mv']:>15.3f} {r['hr_bpm']:>9.1f} {hr:>9}")
    lines.append(f"mean |step| at the {block / res['fs']:g} s block edges "
                 f"{'—' if seam is None else f'{seam:.3f}'} mV, elsewhere {other:.3f}; "
                 f"the same seed drew the same paths: {same}")
    running.say("\n".join(lines))
    return emit({"bench": "long_horizon", "record": str(args.record), "start_s": args.start,
                 "horizon_s": args.horizon, "samples": len(res["samples"]), "seed": args.seed, "checkpoint": str(name),
                 "windows": rows, "seam_step_mv": seam, "other_step_mv": other,
                 "same_seed_same_paths": same}, commit)


if __name__ == "__main__":
    running.run_main(main)
