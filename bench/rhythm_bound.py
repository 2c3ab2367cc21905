"""How well can the horizon's beats be placed from the context's rhythm alone, and what does timing
spread cost in R-peak F1? One JSON line.

    python3 bench/rhythm_bound.py [--split test] [--max-windows-per-record 40] [--history-seconds 3 6 10 20 30]
                                  [--data-dir DIR]

1. `oracle_f1`: beats placed every median (last, mean of the last two) reference RR interval after
   the context's last reference beat, scored against the horizon's reference beats (±100 ms, F1 per
   record, mean over records); `last_pair` repeats the last two intervals in turn, and `alternating`
   does so only when the context's intervals alternate short and long, as in bigeminy. The context
   beats are the annotations, not detections: this bounds what a forecast that continues the
   context's rhythm can score. Two more rules: `calibrated`, the median rule turned into a sampler
   whose timing errors are the rule's own on the training patients (scored on 10 paths per window,
   as evaluate.py scores sampled forecasts), and `learned`, a small MLP fitted on the training
   patients' beats. For a calibrated sampler, the per-path hit rate
   E_s P_t(|s - t| < tol) (s and t drawn from the same forecast) is at most max_s P_t(|s - t| < tol),
   the best point rule's: timing spread that is honest about the uncertainty costs F1.
2. `placed_beat_mse`: the point-forecast MSE (mV², first second and whole horizon) of the context's
   mean beat (the template baseline's) placed at the horizon's reference beats, `oracle_timing`, or
   at the first one and then every median RR, `oracle_first_beat`, and the same with the first beat's
   time off by a normal error of 5-40 ms SD; `zero` on the same windows for scale. It tells how well
   the next beat must be timed for a given first-second MSE. `next_beat_error`: how far the median-RR
   rule (1.) and the forecasts' beat drafts place the horizon's first beat from the reference one.
3. `spread_frontier`: the seasonal ensemble with its minimum timing spread (fraction of the period)
   set to each value, scored by the evaluation harness: CRPS falls as the spread grows, the per-path
   R-peak F1 falls with it; the seasonal naive forecast is the no-spread end.
4. `history`: the median rule and its calibrated sampler (1.) when they see the last 3, 6, ... s of
   the record's annotated rhythm instead of the 3 s context (reads the WFDB records), with the
   median miss of the horizon's first beat: would a longer context place the beats better?
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np
from common import bench_commit, emit, positive_int, positive_seconds

import metrics as M  # noqa: E402 (common puts the repository on sys.path)
import paths  # noqa: E402
import running  # noqa: E402

TOL_MS = 100
PATHS = 10          # sample paths per window a sampled rule is scored on, as evaluate.py scores forecasts
SPREADS = (0.0, 0.02, 0.05, 0.1)
JITTER_MS = (5, 10, 20, 40)


Rule = Callable[[np.ndarray, int], np.ndarray]      # (context RR intervals, n) -> the next n intervals


def alternating(rr: np.ndarray, n: int) -> np.ndarray:
    """Bigeminy's rule: when the context's intervals alternate short and long (by over 10% of their median),
    the last two repeat; otherwise the median rule. Alternation needs three intervals to be seen at all."""
    d = np.diff(rr)
    if len(rr) >= 3 and np.all(d[:-1] * d[1:] < 0) and np.abs(d).min() > 0.1 * np.median(rr):
        return np.resize(rr[-2:], n)
    return np.full(n, np.median(rr))


RULES: dict[str, Rule] = {"median": lambda rr, n: np.full(n, np.median(rr)),
                          "last": lambda rr, n: np.full(n, rr[-1]),
                          "last_two": lambda rr, n: np.full(n, rr[-2:].mean()),
                          "last_pair": lambda rr, n: np.resize(rr[-2:], n),
                          "alternating": alternating}


def next_beats(ctx_beats: np.ndarray, rule: Rule, end: int) -> np.ndarray:
    """Beat positions after the context's last beat up to `end`, one per interval the rule predicts. A rule
    whose intervals may be shorter than the context's (the calibrated and learned ones) says how short
    (`shortest`, a share of the context's median): asked for too few, its paths stopped before `end`."""
    rr = np.diff(ctx_beats).astype(float)
    if len(rr) == 0:
        return np.zeros(0)
    shortest = min(rr.min(), getattr(rule, "shortest", 1.0) * np.median(rr))
    n = int((end - ctx_beats[-1]) / shortest) + 1               # enough intervals to pass `end`
    pred = ctx_beats[-1] + np.cumsum(rule(rr, n))
    return pred[pred < end]


BeatsOf = Callable[[int], tuple[np.ndarray, np.ndarray]]   # window -> its (context, horizon) reference beats


def annotated_beats(w, i: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Window i's reference beats: (in the context, in the horizon)."""
    beats = np.sort(w.beat_pos[w.beat_ptr[i]:w.beat_ptr[i + 1]]).astype(float)
    return beats[beats < context], beats[beats >= context]


def oracle_f1(w, context: int, fs: int, rule: Rule, paths: int = 1, beats_of: BeatsOf | None = None) -> float:
    """Mean over annotated records of the F1 of `next_beats` against the horizon's reference beats,
    pooled over `paths` calls of the rule per window (a sampled rule gives a path per call). The
    context's beats are the window's own unless `beats_of` reaches further back."""
    beats_of = beats_of or (lambda i: annotated_beats(w, i, context))
    sums: dict[int, np.ndarray] = {}
    for i, r in enumerate(w.record):
        if not w.annotated[r]:
            continue
        ctx, ref = beats_of(i)
        for _ in range(paths):
            pred = next_beats(ctx, rule, w.signals.shape[1])
            pred = pred[pred >= context]
            tp = len(M.match_beats(ref, pred, TOL_MS / 1000 * fs)[0])
            sums.setdefault(int(r), np.zeros(3))[:] += (tp, len(pred) - tp, len(ref) - tp)
    return float(np.mean([M.f1_score(*s) for s in sums.values()]))


def horizon_ratios(w, context: int, beats_of: BeatsOf | None = None) -> list[np.ndarray]:
    """Per annotated window with two context beats: the horizon's RR intervals (from the context's last
    beat on) over the context's median RR, i.e. how the truth departs from the median rule."""
    beats_of = beats_of or (lambda i: annotated_beats(w, i, context))
    out = []
    for i, r in enumerate(w.record):
        if not w.annotated[r]:
            continue
        ctx, ref = beats_of(i)
        if len(ctx) >= 2 and len(ref):
            out.append(np.diff(np.r_[ctx[-1], ref]) / np.median(np.diff(ctx)))
    return out


def record_beats(w, data_dir: Path, data) -> dict[int, np.ndarray]:
    """Every annotated record's reference beats over the whole recording (samples at fs)."""
    import prepare_mitbih as P

    if not paths.has_records(data_dir):
        raise paths.UserError(f"{data_dir} holds no WFDB records, which `history` reads: give --data-dir or "
                              "$MITBIH_DIR, or skip it with --history-seconds and no values")
    return {r: P.read_record(data_dir / name, data, gaps=True).beats.astype(float)
            for r, name in enumerate(w.records) if w.annotated[r]}


def history_beats(w, beats: dict[int, np.ndarray], context: int, seconds: float, fs: int) -> BeatsOf:
    """Like `annotated_beats`, but the context's beats are the record's last `seconds` before the
    forecast starts, however far that reaches before the window (positions from the window start)."""
    def of(i: int) -> tuple[np.ndarray, np.ndarray]:
        b = beats[int(w.record[i])] - w.start[i]
        return b[(b < context) & (b >= context - seconds * fs)], b[(b >= context) & (b < w.signals.shape[1])]
    return of


def history_bound(w, train, context: int, fs: int, data_dir: Path, data, seconds: list[float]) -> dict:
    """`oracle_f1` of the median rule and its calibrated sampler when the rule sees the last `seconds`
    of annotated rhythm instead of the 3 s context: would a longer context place the beats better?"""
    if not seconds:
        return {}
    beats, train_beats = record_beats(w, data_dir, data), record_beats(train, data_dir, data)
    out = {}
    for sec in seconds:
        of = history_beats(w, beats, context, sec, fs)
        sampler = calibrated_rule(horizon_ratios(train, context, history_beats(train, train_beats, context, sec, fs)))
        out[f"{sec:g}s"] = {"median": round(oracle_f1(w, context, fs, RULES["median"], beats_of=of), 3),
                            "calibrated": round(oracle_f1(w, context, fs, sampler, PATHS, of), 3),
                            "first_beat": first_beat_error(w, context, of, fs)}
    return out


def first_beat_error(w, context: int, beats_of: BeatsOf, fs: int) -> dict[str, float]:
    """How far the median-RR rule misses the horizon's first beat (ms, pooled windows): the median
    (beat times are whole samples, so it moves in steps of 1/fs) and the share within 20 ms."""
    err = []
    for i, r in enumerate(w.record):
        if not w.annotated[r]:
            continue
        ctx, ref = beats_of(i)
        pred = next_beats(ctx, RULES["median"], w.signals.shape[1])
        pred = pred[pred >= context]
        if len(ref) and len(pred):
            err.append(abs(pred[0] - ref[0]) / fs * 1000)
    return {"median_ms": round(float(np.median(err)), 1), "within_20ms": round(float(np.mean(np.array(err) <= 20)), 3)}


def calibrated_rule(ratios: list[np.ndarray], seed: int = 0) -> Rule:
    """The median rule made a calibrated sampler: each path takes the whole ratio sequence of a random
    training window (its last ratio repeated when short), so its timing errors are the rule's own."""
    rng = np.random.default_rng(seed)

    def rule(rr: np.ndarray, n: int) -> np.ndarray:
        seq = ratios[rng.integers(len(ratios))]
        return np.median(rr) * np.r_[seq, np.full(max(0, n - len(seq)), seq[-1])][:n]
    rule.shortest = min(float(r.min()) for r in ratios)     # for next_beats
    return rule


def learned_rule(train, context: int, fs: int, seed: int = 0, history: int = 6, bins: int = 41) -> Rule:
    """A small MLP fitted on the training patients' reference beats: the next RR over the context's
    median, as a class over log-ratio bins, from the last `history` log ratios. It predicts the
    interval whose ±100 ms neighbourhood holds the most probability (the per-path F1 optimum) and
    continues from its own predictions."""
    edges = np.linspace(-0.8, 0.8, bins)
    x, y = rr_examples(train, context, edges, history)
    probabilities = fit_rr_classifier(x, y, 2 * history + 1, bins, seed)
    tol = TOL_MS / 1000 * fs

    def rule(rr: np.ndarray, n: int) -> np.ndarray:
        rr = list(rr)
        for _ in range(n):
            p = probabilities(rr_features(np.array(rr), history))
            cand = np.median(rr) * np.exp(edges)
            rr.append(cand[np.argmax([p[np.abs(cand - c) <= tol].sum() for c in cand])])
        return np.array(rr[-n:])
    rule.shortest = float(np.exp(edges[0]))      # of the median the rule last saw; for next_beats
    return rule


def rr_features(rr: np.ndarray, history: int) -> np.ndarray:
    """Log ratios of the last `history` RR intervals to their median (zero-padded in front when fewer), a mask
    of those present, and the log median RR."""
    r = np.log(rr[-history:] / np.median(rr))
    f = np.zeros(2 * history + 1, np.float32)
    f[history - len(r):history], f[2 * history - len(r):2 * history], f[-1] = r, 1, np.log(np.median(rr))
    return f


def rr_examples(train, context: int, edges: np.ndarray, history: int) -> tuple[list[np.ndarray], list[int]]:
    """Every RR interval after a window's first one: the rr_features of those before it, and the log-ratio bin
    (`edges`) it falls in."""
    x, y = [], []
    for i in range(len(train.record)):
        rr = np.diff(np.concatenate(annotated_beats(train, i, context)))
        for j in range(1, len(rr)):
            x.append(rr_features(rr[:j], history))
            y.append(np.abs(np.log(rr[j] / np.median(rr[:j])) - edges).argmin())
    return x, y


def fit_rr_classifier(x: list[np.ndarray], y: list[int], inputs: int, bins: int, seed: int
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """An MLP from `inputs` features to `bins` classes, trained by cross-entropy on the examples (30 epochs);
    returns features -> class probabilities."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(inputs, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                              torch.nn.GELU(), torch.nn.Linear(64, bins))
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-3)
    xt, yt = torch.tensor(np.array(x)), torch.tensor(y)
    for _ in range(30):
        for idx in torch.randperm(len(xt)).split(256):
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def probabilities(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(features)), -1).numpy()
    return probabilities


def next_beat_error(w, context: int, fs: int) -> dict[str, dict[str, float]]:
    """How far the horizon's first reference beat is missed (ms, pooled windows): by the median-RR rule
    (1.) on the context's reference beats, and by the median first beat of 100 beat drafts (the
    context's detected beats, the template ensemble's jitter), without and with what the context's
    end already shows of the next beat (`drafts.next_beat_evidence`)."""
    import baselines as B
    import drafts as D

    peaks, period, spread = D.context_rhythm(np.asarray(w.signals[:, :context], np.float32), fs)
    err: dict[str, list[float]] = {"median_rule": [], "drafts": [], "drafts_with_evidence": []}
    for i, r in enumerate(w.record):
        ctx, ref = annotated_beats(w, i, context)
        if not w.annotated[r] or not len(ref):
            continue
        guesses = {"median_rule": next_beats(ctx, RULES["median"], w.signals.shape[1])}
        if len(peaks[i]) >= 2:
            x = np.asarray(w.signals[i, :context], np.float32)
            for name, see_end in (("drafts", False), ("drafts_with_evidence", True)):
                t = D.draft_beat_times(x, peaks[i], int(period[i]), spread[i], B.TemplateEnsemble.jitter, 100,
                                       context, fs, np.random.default_rng(i), see_end)
                guesses[name] = [np.median([row[row >= context][0] for row in t])]
        for name, g in guesses.items():
            g = np.asarray(g)[np.asarray(g) >= context]       # as oracle_f1 scores them
            if len(g):
                err[name].append(abs(g[0] - ref[0]) / fs * 1000)
    return {name: miss_summary(np.array(e)) for name, e in err.items()}


def miss_summary(e: np.ndarray) -> dict[str, float | None]:
    """next_beat_error's figures of one guess; None where no window counts (a small split): NaN is no JSON."""
    if not len(e):
        return {"windows": 0, "median_ms": None, "within_20ms": None, "within_100ms": None}
    return {"windows": len(e), "median_ms": round(float(np.median(e)), 1),
            "within_20ms": round(float(np.mean(e <= 20)), 3), "within_100ms": round(float(np.mean(e <= 100)), 3)}


def place(template: np.ndarray, beats: np.ndarray, pre: int, horizon: int) -> np.ndarray:
    """[horizon, 2]: the beat `template` [period, 2] with its R peak (sample `pre`) at each of `beats`."""
    out = np.zeros((horizon, 2), np.float32)
    for b in np.rint(beats).astype(int):
        lo = b - pre
        if lo < horizon:
            seg = slice(max(lo, 0), min(lo + len(template), horizon))
            out[seg] = template[seg.start - lo:seg.stop - lo]
    return out


def placed_beat_mse(w, context: int, fs: int) -> dict[str, dict[str, float]]:
    """MSE per record (first second, whole horizon), mean over annotated records, of the mean beat
    placed at known beat times; contexts with fewer than two detected beats get the zero forecast.
    `first_beat_sd_<ms>`: the first beat's time known up to a normal error of that SD (the beats after
    it one median RR apart), the point forecast being the mean over the error, as a sample mean is."""
    import scipy.stats

    import drafts as D

    x = np.asarray(w.signals, np.float32)
    ctx, truth = x[:, :context], x[:, context:]
    horizon = truth.shape[1]
    peaks, period, _ = D.context_rhythm(ctx, fs)
    shifts = scipy.stats.norm.ppf((np.arange(16) + 0.5) / 16)   # 16 equal-probability normal errors
    sums: dict[str, dict[int, np.ndarray]] = {}
    for i, r in enumerate(w.record):
        if not w.annotated[r]:
            continue
        p = int(period[i])
        pre = D.template_pre(p)
        beats = np.concatenate(annotated_beats(w, i, context)) - context
        beats, future = beats[beats > pre - p], beats[beats >= 0]
        first = future[:1] + p * np.arange(horizon // p + 1) if len(future) else future
        template = D.mean_beat(ctx[i], peaks[i], p) if len(peaks[i]) >= 2 else np.zeros((p, 2))
        forecasts = {"zero": np.zeros((horizon, 2)), "oracle_timing": place(template, beats, pre, horizon),
                     "oracle_first_beat": place(template, first, pre, horizon)}
        for ms in JITTER_MS:
            forecasts[f"first_beat_sd_{ms}ms"] = np.mean([place(template, first + z * ms / 1000 * fs, pre, horizon)
                                                          for z in shifts], 0)
        for name, out in forecasts.items():
            err = (out - truth[i]) ** 2
            sums.setdefault(name, {}).setdefault(int(r), np.zeros(3))[:] += (err[:fs].mean(), err.mean(), 1)
    return {name: {"mse_0_1s": round(float(np.mean([v[0] / v[2] for v in d.values()])), 4),
                   "mse": round(float(np.mean([v[1] / v[2] for v in d.values()])), 4)} for name, d in sums.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--max-windows-per-record", type=positive_int, default=40)
    p.add_argument("--history-seconds", type=positive_seconds, nargs="*", default=[3, 6, 10, 20, 30],
                   help="rhythm history the median rule sees in `history` (none: skip it)")
    p.add_argument("--data-dir", default=None, type=paths.given_path,
                   help=f"WFDB folder for `history` (default: {paths.DATA_DEFAULT})")
    args = p.parse_args(argv)
    commit = bench_commit()     # at the start: the code that runs is the checkout of now, not of the end

    import baselines as B
    import evaluate as E
    from hyper_params import load_config

    cfg = load_config()
    fs, context = cfg.data.samples_per_second, cfg.data.window_samples
    w = E.limit_windows(E.load_prepared(args.split, cfg, None), None, args.max_windows_per_record)
    train = E.load_prepared("train", cfg, None)
    history = history_bound(w, train, context, fs, paths.location("data", args.data_dir), cfg.data, args.history_seconds)
    rules = {**RULES, "calibrated": calibrated_rule(horizon_ratios(train, context)),
             "learned": learned_rule(train, context, fs)}
    oracle = {name: round(oracle_f1(w, context, fs, rule, PATHS if name == "calibrated" else 1), 3)
              for name, rule in rules.items()}
    placed = placed_beat_mse(w, context, fs)
    first_error = next_beat_error(w, context, fs)
    models: dict = {"seasonal": B.SeasonalNaive(fs)}
    for spread in SPREADS:
        models[f"ensemble_{spread:g}"] = B.SeasonalEnsemble(fs)
        models[f"ensemble_{spread:g}"].min_spread = spread
    scores, truth = E.evaluate(models, w, context, fs, progress=False)
    summary = E.summarize(scores, truth, w, fs, w.signals.shape[1] - context, n_boot=1)
    frontier = {name: {key: round(summary["forecasters"][name]["metrics"][key][-1]["value"], 4)
                       for key in ("crps", f"f1_{TOL_MS}")} for name in models}
    return emit({"bench": "rhythm_bound", "split": args.split, "max_windows_per_record": args.max_windows_per_record,
                 "windows": len(w.record), "oracle_f1": oracle, "placed_beat_mse": placed,
                 "next_beat_error": first_error, "history": history, "spread_frontier": frontier,
                 **data_read(w, train, paths.location("data", args.data_dir), history)}, commit)


def data_read(w, train, data_dir: Path, history: dict) -> dict:
    """The data the line's numbers came from: the prepared windows' hash as run.json gives it (paths.run_data_hash;
    the training split, which calibrates the rules, is of the same preparation) and, when `history` read the WFDB
    records, their files' (prepare_mitbih.hash_inputs): a line without it named no data at all."""
    from prepare_mitbih import hash_inputs

    out = {"data_hash": paths.run_data_hash(w.source)}
    if history:
        read = sorted({name for split in (w, train) for r, name in enumerate(split.records) if split.annotated[r]})
        out["history_input_hash"] = hash_inputs(data_dir, read)
    return out


if __name__ == "__main__":
    running.run_main(main)
