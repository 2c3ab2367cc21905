"""How well can the horizon's beats be placed from the context's rhythm alone, and what does timing
spread cost in R-peak F1? One JSON line.

    python bench/rhythm_bound.py [--split test] [--max-windows-per-record 40]

1. `oracle_f1`: beats placed every median (last, mean of the last two) reference RR interval after
   the context's last reference beat, scored against the horizon's reference beats (±100 ms, F1 per
   record, mean over records). The context beats are the annotations, not detections: this bounds
   what a forecast that continues the context's rhythm can score.
2. `spread_frontier`: the seasonal ensemble with its minimum timing spread (fraction of the period)
   set to each value, scored by the evaluation harness: CRPS falls as the spread grows, the per-path
   R-peak F1 falls with it; the seasonal naive forecast is the no-spread end.
"""
from __future__ import annotations

import argparse

import numpy as np
from common import emit

import metrics as M  # noqa: E402 (common puts the repository on sys.path)

TOL_MS = 100
SPREADS = (0.0, 0.02, 0.05, 0.1)


def next_beats(ctx_beats: np.ndarray, rule: str, end: int) -> np.ndarray:
    """Beat positions after the context's last beat up to `end`, one per predicted RR interval."""
    rr = np.diff(ctx_beats)
    if len(rr) == 0:
        return np.zeros(0)
    period = {"median": np.median(rr), "last": rr[-1], "last_two": rr[-2:].mean()}[rule]
    return ctx_beats[-1] + period * np.arange(1, int((end - ctx_beats[-1]) / period) + 1)


def oracle_f1(w, context: int, fs: int, rule: str) -> float:
    """Mean over annotated records of the F1 of `next_beats` against the horizon's reference beats."""
    t, tol = w.signals.shape[1], TOL_MS / 1000 * fs
    sums: dict[int, np.ndarray] = {}
    for i, r in enumerate(w.record):
        if not w.annotated[r]:
            continue
        beats = np.sort(w.beat_pos[w.beat_ptr[i]:w.beat_ptr[i + 1]])
        ref = beats[(beats >= context) & (beats < t)]
        pred = next_beats(beats[beats < context], rule, t)
        pred = pred[(pred >= context) & (pred < t)]
        tp = len(M.match_beats(ref, pred, tol)[0])
        sums.setdefault(int(r), np.zeros(3))[:] += (tp, len(pred) - tp, len(ref) - tp)
    return float(np.mean([M.f1_score(*s) for s in sums.values()]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--max-windows-per-record", type=int, default=40)
    args = p.parse_args()

    import baselines as B
    import evaluate as E
    from hyper_params import load_config

    cfg = load_config()
    fs, context = cfg.data.samples_per_second, cfg.data.window_samples
    w = E.limit_windows(E.load_prepared(args.split, cfg, None), None, args.max_windows_per_record)
    oracle = {rule: round(oracle_f1(w, context, fs, rule), 3) for rule in ("median", "last", "last_two")}
    models: dict = {"seasonal": B.SeasonalNaive(fs)}
    for spread in SPREADS:
        models[f"ensemble_{spread:g}"] = B.SeasonalEnsemble(fs)
        models[f"ensemble_{spread:g}"].min_spread = spread
    scores, truth = E.evaluate(models, w, context, fs, progress=False)
    summary = E.summarize(scores, truth, w, fs, w.signals.shape[1] - context, n_boot=1)
    frontier = {name: {key: round(summary["forecasters"][name]["metrics"][key][-1]["value"], 4)
                       for key in ("crps", f"f1_{TOL_MS}")} for name in models}
    emit({"bench": "rhythm_bound", "split": args.split, "windows": len(w.record),
          "oracle_f1": oracle, "spread_frontier": frontier})


if __name__ == "__main__":
    main()
