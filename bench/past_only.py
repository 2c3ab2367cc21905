"""Contexts filtered with their future: how much does that flatter the forecasts? One JSON line.

    python3 bench/past_only.py [--model pretrained pretrained_sde template_ensemble seasonal] [--split test]
                               [--max-windows-per-record 10] [--samples 100] [--data-dir DIR | --wfdb-dir DIR]
                               [--margin-seconds 60]

Preparation band-passes each whole record with a zero-phase filter (sosfiltfilt), so a context's last samples carry
a little of the horizon after them, which a forecast made in real time cannot see. This rebuilds each context from
its record's raw samples up to the context's last one alone (the same filter and resampling over the
`--margin-seconds` before it, mirrored at its end as preparation mirrors a record's end), forecasts the prepared and
the past-only context of every window with the window's seed, and scores both against the same prepared horizon with
evaluate.py: each forecaster's MSE (whole horizon and first second), CRPS, cover 80 and F1 ±100 ms both ways, the
change in MSE and CRPS paired by record, and each model paired with the best baseline both ways (`targets`: as the
README's targets table pairs them, MSE and CRPS over the horizon and its first second, F1 ±100 ms). `context_change`: how far the past-only contexts lie from the prepared ones
over their last 0.3 s and their first half (where only the filter's start differs: a check of the alignment).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

import numpy as np
from common import bench_commit, emit, positive_int, positive_seconds

import metrics as M  # noqa: E402 (common puts the repository on sys.path)
import paths  # noqa: E402
import running  # noqa: E402

MODELS = ["pretrained", "pretrained_sde", "template_ensemble", "seasonal"]
KEYS = ("mse", "crps", "cov80", "f1_100")
TARGETS = {("mse", "all"), ("mse", "0-1 s"), ("crps", "all"), ("f1_100", "all")}


def raw_past(path: Path, cfg, leads: list[str], start: int, end: int) -> np.ndarray:
    """Samples [start, end) of a record's two leads `leads` in mV, read as preparation reads them (its units, µV
    and all, and its errors naming the file)."""
    from prepare_mitbih import _read_leads, header_leads, read_header

    if not path.with_suffix(".hea").is_file():
        raise paths.UserError(f"{path}.hea not found: pass --data-dir the WFDB folder the prepared split was made from")
    return _read_leads(path, cfg.data, start, end, header_leads(path, read_header(path))[1], leads)[0]


def past_context(path: Path, leads: list[str], fs_in: float, cfg, end: int, context: int, margin_s: float
                 ) -> np.ndarray | None:
    """The context [context, 2] ending before target-rate sample `end`, filtered and resampled from the raw samples
    up to its last one alone; None when those hold NaN (a gap). The read starts on a raw sample of the target grid,
    so the resampled samples fall on the prepared ones."""
    from prepare_mitbih import filter_and_resample, resample_ratio

    ratio = resample_ratio(fs_in, cfg.data.samples_per_second, str(path))        # target / source
    stop = int((end - 1) / ratio) + 1                 # raw samples at or before the context's last one
    first = max(0, int((stop - margin_s * fs_in) // ratio.denominator) * ratio.denominator)
    at = int(first * ratio)                           # the target-rate sample of the read's first
    if end - context < at:
        raise paths.UserError(f"--margin-seconds {margin_s:g} is shorter than the context")
    x = raw_past(path, cfg, leads, first, stop)
    if not np.isfinite(x).all():
        return None
    return filter_and_resample(x, fs_in, cfg.data, str(path))[end - context - at:end - at].astype(np.float32)


def past_only_windows(w, folder: Path, cfg, context: int, margin_s: float):
    """w with every context rebuilt from the past alone, and the windows whose past holds a gap left out."""
    from tqdm import tqdm

    signals, keep = np.array(w.signals, np.float32), []
    for i in tqdm(range(len(w.record)), desc="past-only contexts", unit="window"):
        r = int(w.record[i])
        ctx = past_context(folder / w.records[r], w.leads[r], w.fs_in[r], cfg, int(w.start[i]) + context, context,
                           margin_s)
        if ctx is not None:
            signals[i, :context] = ctx
            keep.append(i)
    if not keep:
        raise paths.UserError(f"no window left: the {margin_s:g} s before every context's end hold a gap (NaN); "
                              f"lower --margin-seconds")
    keep = np.array(keep, int)
    return w.select(keep), dataclasses.replace(w, signals=signals).select(keep)


def check_same_records(folder: Path) -> None:
    """The records in `folder` must be those the prepared tensors were made from (meta.json's input hash, over every
    record prepared): others of the same names (another copy, edited) gave contexts of other signals without a word."""
    from prepare_mitbih import hash_inputs, records_of, stored_meta

    meta = stored_meta(paths.location("prepared"))
    made_from, names = meta.get("input_hash"), list(records_of(meta))
    if made_from and names and hash_inputs(folder, names, meta.get("annotator", "atr")) != made_from:
        raise paths.UserError(f"the records in {folder} are not the files the prepared tensors were made from (input "
                              f"hash {made_from}, of {len(names)} records): pass --data-dir the WFDB folder "
                              f"prepare_mitbih.py read")


def context_change(prepared: np.ndarray, past: np.ndarray, fs: int) -> dict:
    """RMS and largest change (mV) of the contexts' last 0.3 s, and the RMS of their first half."""
    d = past - prepared
    end, half = d[:, -round(0.3 * fs):], d[:, :d.shape[1] // 2]
    return {"last_0.3s_rms_mv": round(float(np.sqrt((end ** 2).mean())), 4),
            "last_0.3s_max_mv": round(float(np.abs(end).max()), 3),
            "first_half_rms_mv": round(float(np.sqrt((half ** 2).mean())), 5)}


def scored(forecasters: dict, baselines: frozenset[str], w, context: int, fs: int, samples: int) -> dict:
    """evaluate.py's summary of the windows w."""
    import evaluate as E

    scores, truth = E.evaluate(forecasters, w, context, fs, samples)
    return E.summarize(scores, truth, w, fs, w.signals.shape[1] - context, n_boot=1000, baselines=baselines)


def rounded(v: float | None) -> float | None:
    """A figure at 5 decimals; None for an undefined one (an interval over one record): NaN is no JSON."""
    return None if v is None or not np.isfinite(v) else round(float(v), 5)


def targets(summary: dict) -> dict:
    """Each model minus the best baseline, paired by record (summary["paired"]), on the targets' scores."""
    out: dict = {}
    for row in summary["paired"]:
        if (row["metric"], row["horizon"]) in TARGETS:
            d = row["difference"]
            out.setdefault(row["forecaster"], {})[f"{row['metric']} {row['horizon']}"] = {
                "baseline": row["baseline"], "difference": rounded(d["value"]), "ci": [rounded(v) for v in d["ci"]],
                "better_on": row["better_on"], "records": row["records"]}
    return out


def figures(summary: dict, name: str) -> dict:
    metrics = summary["forecasters"][name]["metrics"]
    out = {k: metrics[k][-1]["value"] for k in KEYS}
    out["mse_0_1s"] = metrics["mse"][0]["value"]
    return {k: rounded(v) for k, v in out.items()}


def paired(before: dict, after: dict, name: str, metric: str) -> dict:
    """The past-only value minus the prepared one, paired by record."""
    records = sorted(before["per_record"][name][metric])
    a = np.array([after["per_record"][name][metric][r] for r in records], float)
    b = np.array([before["per_record"][name][metric][r] for r in records], float)
    d = M.paired_difference(a, b)
    return {"mean": rounded(d["mean"]), "ci": [rounded(v) for v in d["ci"]], "higher": d["above"],
            "lower": d["below"], "records": d["records"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=MODELS,
                   help=f"as evaluate.py's --model, each scored twice (default: {' '.join(MODELS)})")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="prepared split to score (default: test)")
    p.add_argument("--max-windows-per-record", type=positive_int, default=10,
                   help="evenly spaced windows of each record (default: 10)")
    p.add_argument("--samples", type=positive_int, default=100, help="paths per sampled forecast (default: 100)")
    p.add_argument("--margin-seconds", type=positive_seconds, default=60.0,
                   help="raw seconds filtered before each context's end (default 60)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-dir", default=None, type=paths.given_path,
                     help=f"WFDB folder the prepared split was made from (default: {paths.DATA_DEFAULT})")
    src.add_argument("--wfdb-dir", default=None, type=paths.given_path,
                     help="score the records of this WFDB folder instead of a prepared split")
    args = p.parse_args(argv)
    commit = bench_commit()

    import evaluate as E
    from hyper_params import load_config

    cfg = load_config()
    fs, context = cfg.data.samples_per_second, cfg.data.window_samples
    if args.wfdb_dir:
        folder = Path(args.wfdb_dir)
        w = E.load_wfdb(folder, cfg, per_record=args.max_windows_per_record)
    else:
        folder = paths.location("data", args.data_dir)
        w = E.limit_windows(E.load_prepared(args.split, cfg, None), None, args.max_windows_per_record)
        check_same_records(folder)
    prepared, past = past_only_windows(w, folder, cfg, context, args.margin_seconds)
    if len(prepared.record) < len(w.record):
        running.note(f"{len(w.record) - len(prepared.record)} windows left out: their past holds a gap")
    with contextlib.redirect_stdout(sys.stderr):         # stdout is the one JSON line, whatever a forecaster prints
        forecasters, baselines, _ = E.build_forecasters(args.model, cfg, None)
        before = scored(forecasters, baselines, prepared, context, fs, args.samples)
        after = scored(forecasters, baselines, past, context, fs, args.samples)
    return emit({"bench": "past_only", "source": E.windows_source(w), "windows": len(prepared.record),
                 "records": len(np.unique(prepared.record)), "samples": args.samples,
                 "margin_s": args.margin_seconds,
                 "context_change": context_change(prepared.signals[:, :context], past.signals[:, :context], fs),
                 "forecasters": {name: {"prepared": figures(before, name), "past_only": figures(after, name),
                                        "paired_mse": paired(before, after, name, "mse"),
                                        "paired_crps": paired(before, after, name, "crps")}
                                 for name in forecasters},
                 "targets": {"prepared": targets(before), "past_only": targets(after)},
                 "data_hash": paths.run_data_hash(w.source)}, commit)


if __name__ == "__main__":
    running.run_main(main)
