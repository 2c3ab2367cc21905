"""The report of an evaluation run: report.md's sections and metrics.csv, from the summary `evaluate.summarize`
builds. Kept apart from the scoring so that either reads alone."""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Callable

import numpy as np

import metrics as M
import running

if TYPE_CHECKING:
    from evaluate import Windows


def fmt(v: float | None, digits: int = 3) -> str:
    """`digits` significant digits, no exponent for ordinary magnitudes; '—' for undefined. Trailing zeros are kept
    (0.140, not 0.14 beside 0.148 and its interval's 0.113: a column's numbers read at one precision); 0 is 0."""
    if v is None or not np.isfinite(v):
        return "—"
    if abs(float(f"{v:.{digits}g}")) >= 1000:      # rounded first: 999.6 is 1000, not 1e+03
        return f"{v:.0f}"
    if v == 0:
        return "0"
    return f"{v:#.{digits}g}".rstrip(".") if abs(v) >= 0.001 else f"{v:.{digits - 1}e}"


def cell(entry: dict) -> str:
    if entry["value"] is None:
        return "—"
    return f"{fmt(entry['value'])} [{fmt(entry['ci'][0])}, {fmt(entry['ci'][1])}]"


def header_of(metric: str) -> str:
    label, unit = M.METRICS[metric]
    return f"{label} ({unit})" if unit else label


def sampled_paths(summary: dict, samples: int | None) -> int | None:
    """The paths a sampled forecast was scored on, None when every forecaster scored was deterministic (one path
    each, whatever --samples asked): report.md and error_curves.png speak of paths only then."""
    return samples if any(not t["deterministic"] for t in summary["forecasters"].values()) else None


def markdown_report(summary: dict, header: dict, w: Windows, samples: int | None = None) -> str:
    """report.md: run header, every metric per forecaster, the paired comparisons and the windows by their horizon's
    beats, then per horizon second, the detector check, the metrics' definitions (with what a calibrated forecast of
    the run's `samples` covers), the baselines', the records and the plots."""
    lines = run_section(summary, header, w) + whole_horizon_section(summary)
    lines += paired_section(summary["paired"]) + models_section(summary["paired_models"])
    lines += horizon_beats_section(summary.get("horizon_beats", {}), summary["horizons"])
    lines += per_second_section(summary) + detector_section(summary["detector"])
    lines += metrics_section(sampled_paths(summary, samples))
    lines += baselines_section(summary["order"])
    lines += records_section(w) + plots_section(summary["order"])
    return "\n".join(lines) + "\n"


def run_section(summary: dict, header: dict, w: Windows) -> list[str]:
    """report.md's title and the run's header table."""
    records, windows = len(summary["records"]), len(w.record)
    lines = [f"# Forecast evaluation: {running.counted(records, 'record')}, {running.counted(windows, 'window')} "
             f"({w.source.get('kind')} {w.source.get('split')})", ""]
    lines += ["| | |", "|---|---|"]
    return lines + [f"| {k} | {'`' + v + '`' if k == 'command' else v} |" for k, v in header.items()] + [""]


# report.md's tables of every metric: three narrow ones instead of one of seventeen columns
METRIC_GROUPS = (("Point forecast (the sample mean)", ("mse", "mae", "prd", "prdn", "r")),
                 ("Samples: accuracy and calibration", ("crps", "crps_fair", "mse_median", "mae_median", "cov50",
                                                        "width50", "cov80", "width80")),
                 ("Rhythm (R peaks of lead 1)", ("f1_50", "f1_100", "timing_ms", "hr_bpm")))


FEW_RECORDS = 10    # below it the report says its bootstrap intervals over records are these records' spread


FEW_RECORDS_BOOTSTRAP = ("a bootstrap over so few cannot reach past the most extreme record and covers less than "
                         "95 % (with 2 it is their range)")


def few_records(records: int) -> bool:
    """Fewer than FEW_RECORDS records (from 2, which have an interval): a percentile bootstrap's resampled means never
    pass the extreme records, so with 2 records the '95 %' interval is their range."""
    return 2 <= records < FEW_RECORDS


def few_records_caution(records: int) -> str:
    """What a bootstrap over few records is worth, said when there are few (few_records)."""
    if not few_records(records):
        return ""
    return (f" Only {records} records: {FEW_RECORDS_BOOTSTRAP}, here and in the paired tables; read its intervals as "
            f"these records' spread, not as what other patients would show.")


def same_patient_caution(records: list[str]) -> str:
    """What the record means are worth where two scored records are one patient's (prepare_mitbih.SAME_PATIENT:
    MIT-BIH's 201 and 202, both in the default test split): that patient weighs twice, and the bootstrap
    resamples the two records as two patients."""
    from prepare_mitbih import SAME_PATIENT

    pairs = [f"{a} and {b}" for a, b in SAME_PATIENT if a in records and b in records]
    if not pairs:
        return ""
    return (f" In MIT-BIH, records {'; '.join(pairs)} are one patient's: that patient weighs twice here, and the "
            f"bootstrap resamples the two records as two patients.")


def unannotated_caution(annotated: int, records: int) -> str:
    """Why the rhythm columns are empty, or over fewer records than the others, when records lack beat annotations:
    a bare `—` read as a failed forecast."""
    if annotated == records:
        return ""
    if not annotated:
        return (" No record scored here has beat annotations (an .atr file, or --annotator's), so the rhythm columns "
                "(R-peak F1, timing and heart-rate error) are empty.")
    return (f" Only {annotated} of the {records} records {'has' if annotated == 1 else 'have'} beat annotations (the "
            f"Records table says which): the rhythm columns are means over those {annotated}.")


def whole_horizon_section(summary: dict) -> list[str]:
    """Every metric of every forecaster over the whole horizon, with its interval."""
    order, tables, records = summary["order"], summary["forecasters"], summary["records"]
    return ["## All forecasters, whole horizon", "",
            "Mean over records [bootstrap 95 % interval over records]; each record's value pools its "
            "windows, so each record weighs the same. `—`: undefined (interval scores of deterministic "
            "forecasts or of one sample; an interval where fewer than two records define the value)."
            + same_patient_caution(records) + few_records_caution(len(records))
            + unannotated_caution(summary["detector"]["annotated_records"], len(records))] + grouped_tables(
        ["forecaster"], lambda cols: [f"| {name} | " + " | ".join(cell(tables[name]["metrics"][c][-1]) for c in cols)
                                      + " |" for name in order])


WHOLE_HORIZON_ONLY = ("hr_bpm",)    # scored on the whole horizon alone (metrics._heart_rate_sums): no column per second


def per_second_section(summary: dict) -> list[str]:
    """Every metric per forecaster and horizon second but WHOLE_HORIZON_ONLY's, whose column would be all '—';
    their intervals are in metrics.json / metrics.csv."""
    order, tables, seconds = summary["order"], summary["forecasters"], summary["horizons"][:-1]
    return ["", "## Per horizon second", "", "Same metrics, one row per forecaster and horizon second "
            "(mean over records; intervals in metrics.json / metrics.csv); HR err is scored on the whole horizon "
            "only."] + grouped_tables(
        ["forecaster", "horizon"],
        lambda cols: [f"| {name} | {label} | " + " | ".join(fmt(tables[name]["metrics"][c][j]["value"]) for c in cols)
                      + " |" for name in order for j, label in enumerate(seconds)], skip=WHOLE_HORIZON_ONLY)


def grouped_tables(lead: list[str], rows: Callable[[tuple[str, ...]], list[str]],
                   skip: tuple[str, ...] = ()) -> list[str]:
    """A table per METRIC_GROUPS group under its own heading: the `lead` columns, then the group's metrics but
    `skip`'s; `rows(metrics)` gives its rows."""
    lines = []
    for title, group in METRIC_GROUPS:
        cols = tuple(c for c in group if c not in skip)
        lines += ["", f"### {title}", "", "| " + " | ".join([*lead, *(header_of(c) for c in cols)]) + " |",
                  "|---" * len(lead) + "|" + "---:|" * len(cols), *rows(cols)]
    return lines


def detector_section(d: dict) -> list[str]:
    """The R-peak detector scored on the true horizons: what bounds every forecast's rhythm scores."""
    lines = ["", "## R-peak detector check", "",
             f"The detector (`metrics.detect_r_peaks`) run on the true horizons (lead 1) against the reference "
             f"beat annotations of {running.counted(d['annotated_records'], 'annotated record')} (pooled over all "
             f"windows):", "",
             "| tolerance | sensitivity | positive predictivity | TP | FP | FN |", "|---|---:|---:|---:|---:|---:|"]
    for tol in M.TOLERANCES_MS:
        e = d[f"{tol}ms"]
        se, pp = ("—" if v is None else f"{100 * v:.2f} %" for v in (e["sensitivity"], e["positive_predictivity"]))
        lines.append(f"| ±{tol} ms | {se} | {pp} | {e['tp']} | {e['fp']} | {e['fn']} |")
    return lines + ["", f"Its own timing error (±100 ms matches): {cell(d['timing_ms'])} ms; heart-rate error: "
                    f"{cell(d['hr_bpm'])} bpm. These bound what any forecast can score on the rhythm columns. A beat "
                    f"within the tolerance of the horizon's ends counts in no score (its partner may lie outside), so "
                    f"the wider tolerance can count fewer beats.", ""]


def calibrated_cover(level: float, samples: int) -> float:
    """The % of the truth a calibrated forecast of `samples` samples covers by the central `level` interval of
    linearly interpolated quantiles: the truth's rank among the samples is uniform, and level·(S − 1) of its S + 1
    gaps lie inside. Exact where the truth spreads evenly within a gap, as for a uniform forecast; a Gaussian one
    covers a little more where samples are few (51 % at 80 % with 4, where this says 48 %)."""
    return 100 * level * (samples - 1) / (samples + 1)


def metrics_section(samples: int | None = None) -> list[str]:
    """How each column is computed; with `samples`, what a calibrated forecast of the run covers, the mark the
    cover columns are read against, that so few samples lift a sampled CRPS (14 % at 6 on DS2, 1 % at 100: a small
    run's CRPS read unwarned as the forecaster's) where the fair CRPS stays, and how many paths the rhythm columns
    score (all, below 10)."""
    sampled = bool(samples and samples > 1)
    run = (f" With this run's {samples} samples: about {calibrated_cover(0.5, samples):.1f} % at 50 %, "
           f"{calibrated_cover(0.8, samples):.1f} % at 80 % (exact for a uniform forecast; a calibrated forecast of "
           f"heavier tails covers a little more where samples are few: a Gaussian one 51 % at 80 % with 4 samples, "
           f"where this says 48 %)." if sampled else "")
    lift = (f" This run's {samples} samples lift a sampled forecaster's CRPS above its fair CRPS by ½E|X−X'|/"
            f"{samples - 1}, the two columns' difference." if sampled else "")
    paths = ""
    if samples and samples < M.RHYTHM_PATHS:
        paths = ", here its one" if samples == 1 else f", here all {samples}"
    return ["## Metrics", "",
            "- MSE, MAE: point forecast (sample mean) vs truth, both leads. PRD = 100·sqrt(Σerr²/Σtruth²), "
            "PRDN the same against the truth's variance about its mean, energies pooled over a record's windows.",
            "- Pearson r: per window and lead, then averaged; 0 for a constant forecast.",
            "- CRPS of the samples as issued: E|X−y| − ½E|X−X'| over their own distribution (all S² pairs, from sorted "
            "samples; equals MAE for a deterministic forecast), so it falls as S grows. Fair CRPS: the same with "
            "½E|X−X'| over the S(S−1) pairs of distinct samples (the estimator the latent SDE trains on), unbiased at "
            "any S >= 2 (undefined for one path of a sampled forecaster): compare it, not CRPS, across runs of other "
            "--samples." + lift +
            " MSE/MAE of median: the sample median as point forecast; cover/width: fraction of true samples "
            "inside the central 50 % / 80 % interval of the samples and its mean width. Its ends interpolate "
            "linearly between sorted samples (numpy's default), so with S samples even a calibrated forecast covers "
            "about (S−1)/(S+1) of the level: 78.4 % at 80 % with 100 samples, 65 % with 10." + run,
            "- F1: R peaks detected in the forecast's lead 1 (continuing the true context) matched "
            "to the reference beats in the horizon within ±50 / ±100 ms; timing err: mean |Δt| of ±100 ms "
            "matches; HR err: |heart rate of detections − of reference beats| per window (bpm; 60·(n−1)/span of "
            "n ≥ 2 beats, else 60·n/horizon, so a forecast without beats reads 0 bpm and errs by the whole true "
            "rate, as a flat one does). A sampled "
            f"forecast is scored on its first {M.RHYTHM_PATHS} sample paths per window{paths} (pooled; samples are "
            "exchangeable draws): the mean of samples that disagree on timing has no sharp beats.", ""]


def baselines_section(order: list[str]) -> list[str]:
    """What each baseline in the run does (its class's docstring), so the report reads without the README. A baseline
    of one's own without a docstring is named by its class: its None stopped the report after every window's scoring."""
    from baselines import BASELINES

    found = [name for name in order if name in BASELINES]
    if not found:
        return []
    said = {name: " ".join((BASELINES[name].__doc__ or f"{BASELINES[name].__name__} (no docstring)").split())
            for name in found}
    return ["## Baselines", ""] + [f"- {name}: {said[name]}" for name in found] + [""]


def records_section(w: Windows) -> list[str]:
    """The scored records, then the gaps windows left out and the records skipped."""
    lines = ["## Records", "", "| record | leads | rate in (Hz) | annotations | windows |", "|---|---|---:|---|---:|"]
    counts = np.bincount(w.record, minlength=len(w.records))
    for i, name in enumerate(w.records):
        if counts[i]:
            rate = f"{w.fs_in[i]:g}" if np.isfinite(w.fs_in[i]) else "—"     # unknown without meta.json
            lines.append(f"| {name} | {', '.join(w.leads[i])} | {rate} | {'yes' if w.annotated[i] else 'no'} | "
                         f"{counts[i]} |")
    gaps = w.source.get("invalid_seconds") or {}
    if gaps:
        lines += ["", "Windows leave out the gaps (NaN/invalid or flat samples) of "
                  + ", ".join(f"{n} ({s:.1f} s)" for n, s in gaps.items()) + "."]
    if w.skipped:
        lines += ["", f"Skipped {running.counted(len(w.skipped), 'record')}:", ""]
        lines += [f"- {n}: {why}" for n, why in w.skipped]
    return lines


def plots_section(order: list[str]) -> list[str]:
    """What error_curves.png and each forecaster's gallery show."""
    return ["", "## Plots", "", "MSE and CRPS per horizon step (each record's mean over its windows and both "
            "leads, then the mean over records; the curves are in error_curves.csv), each model's CRPS minus the "
            "best CRPS baseline's, and F1 ±100 ms per horizon second; models solid, baselines dashed, each forecaster "
            "with a marker of its own.", "",
            "![error per horizon time](error_curves.png)", "",
            "Each forecaster's forecasts of the same windows, one from each of the records ranked lowest, median and "
            "highest by the MSE over the zero forecast's of the forecaster the titles name, with the 50 % and 80 % "
            "bands of a sampled forecast.", "",
            *(f"![{name} examples](gallery_{file_name(name)}.png)" for name in order)]


COMMON_SEEDS = ("Every forecaster forecasts a window with that window's seed (evaluate.window_seed), so the pairs "
                "share their random draws as well as their windows: the shipped models and the template ensemble draw "
                "the same beat times, and often tie on F1.")


def paired_section(rows: list[dict]) -> list[str]:
    """report.md lines for `paired_with_best_baseline` (none when no model was scored next to baselines)."""
    return paired_table(rows, "baseline", "Paired against the best baseline",
                        "Each model minus the best baseline on that score and horizon among this run's baselines "
                        "(lowest MSE or CRPS, highest F1: each score may have its own), record by record: mean over "
                        "records [bootstrap 95 % interval of the paired differences], the change "
                        "relative to the baseline, and on how many records the model is better (and how many tie). "
                        "An interval that excludes 0 is a difference these patients show; one that includes it is "
                        "not (`—`: fewer than two records, no interval). " + COMMON_SEEDS,
                        "best baseline | baseline's value")


def models_section(rows: list[dict]) -> list[str]:
    """report.md lines for `paired_between_models` (none with fewer than two models)."""
    return paired_table(rows, "against", "Models paired with each other",
                        "Each model minus each model after it, record by record, on MSE (whole horizon and first "
                        "second), CRPS and F1: mean over records [bootstrap 95 % interval of the paired differences], "
                        "the change relative to the other model, and on how many records the first is better (and "
                        "how many tie). " + COMMON_SEEDS,
                        "other model | other's value")


def paired_table(rows: list[dict], key: str, title: str, text: str, columns: str) -> list[str]:
    """A report section of paired rows, each against the forecaster named under `key` (its value: `key`_value)."""
    if not rows:
        return []
    out = ["", f"## {title}", "", text, "",
           f"| forecaster | score | horizon | {columns} | forecaster's value | difference | change | better on |",
           "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        pct = "—" if r["change_pct"] is None else f"{signed_number(r['change_pct'], 1)} %"
        out.append(f"| {r['forecaster']} | {header_of(r['metric'])} | {r['horizon']} | {r[key]} | "
                   f"{fmt(r[key + '_value'], 4)} | {fmt(r['value'], 4)} | {signed(r['difference'])} | {pct} | "
                   f"{better_on(r)} |")
    return out


STRATUM_METRICS = (("mse", -1, "MSE (mV²)"), ("mse", 0, "MSE {first} (mV²)"), ("crps", -1, "CRPS (mV)"),
                   ("cov80", -1, "cover 80 (%)"), ("f1_100", -1, "F1 ±100 ms"))   # (metric, horizon segment, header)


def stratum_headers(horizons: list[str]) -> list[str]:
    """STRATUM_METRICS' column headers; the first segment is named by its span unless it is a whole second: a
    horizon under 1 s has one segment, the whole horizon, and 'first second' would claim a second it lacks."""
    first = "first second" if horizons[0] == "0-1 s" else horizons[0]
    return [header.format(first=first) for _, _, header in STRATUM_METRICS]


def horizon_beats_section(strata: dict, horizons: list[str]) -> list[str]:
    """report.md lines for `by_horizon_beats`: the headline scores per kind of window, and the paired whole-horizon
    differences against the best baseline of that kind; `horizons`: the summary's segment labels."""
    if not strata:
        return []
    out = ["", "## By the horizon's beats", "",
           "The same forecasts, scored again on the windows whose horizon's reference beats are all normal (AAMI "
           "class N), or hold an ectopic (S, V or F), supraventricular (S) or ventricular (V) beat: a subset of "
           "this run's windows, scored as `--horizon-beats` scores them (which picks windows of its own, so its "
           "figures differ). Each kind has its own records: compare forecasters within a kind. Means over the kind's "
           "records; their intervals are in metrics.json.", "",
           "| horizon's beats | records / windows | forecaster | " + " | ".join(stratum_headers(horizons)) + " |",
           "|---|---|---|" + "---:|" * len(STRATUM_METRICS)]
    for kind, st in strata.items():
        for name, table in st["forecasters"].items():
            cells = [fmt(table["metrics"][m][j]["value"]) if m in table["metrics"] else "—"
                     for m, j, _ in STRATUM_METRICS]
            out.append(f"| {kind} | {len(st['records'])} / {st['windows']} | {name} | " + " | ".join(cells) + " |")
    out += horizon_beats_paired(strata)
    few = [f"{kind} ({len(st['records'])})" for kind, st in strata.items() if few_records(len(st["records"]))]
    if few:
        out += ["", f"Under {FEW_RECORDS} records in {', '.join(few)}: {FEW_RECORDS_BOOTSTRAP}; read those kinds' "
                f"intervals as these records' spread, not as what other patients would show."]
    return out


def horizon_beats_paired(strata: dict) -> list[str]:
    """The whole-horizon rows of each kind's pairing against its best baseline, as one table (none without rows)."""
    rows = [(kind, r) for kind, st in strata.items() for r in st["paired"] if r["horizon"] == "all"]
    if not rows:
        return []
    head = ["", "Paired against the best baseline of each kind, whole horizon:", "",
            "| horizon's beats | forecaster | score | best baseline | difference | better on |",
            "|---|---|---|---|---:|---:|"]
    return head + [f"| {kind} | {r['forecaster']} | {header_of(r['metric'])} | {r['baseline']} | "
                   f"{signed(r['difference'])} | {better_on(r)} |" for kind, r in rows]


def better_on(row: dict) -> str:
    """'<n> of <records>' of a paired row, with its ties: 'better on 2 of 23' alone reads as worse on 21 where 16 may
    be ties (two models of the same beat drafts find the same beats)."""
    tied = row["records"] - row["better_on"] - row["worse_on"]
    return f"{row['better_on']} of {row['records']}" + (f", {tied} tied" if tied else "")


def signed_number(v: float, decimals: int = 4) -> str:
    """`v` with an explicit sign at `decimals` decimals, or its first significant digit when those would show a
    nonzero `v` as ±0: a paired difference of −5e-05 mV² printed −0.0000 (and a change of −0.04 % as −0.0 %)
    beside an interval and a 'better on 16 of 23' that say it is not 0."""
    return f"{v:+.1g}" if v and round(v, decimals) == 0 else f"{v:+.{decimals}f}"


def signed(entry: dict) -> str:
    """A difference and its interval with explicit signs, four decimals: paired gaps are small. A value or an end
    that four decimals would show as ±0.0000 keeps its first significant digit (signed_number), so whether the
    interval excludes 0 shows."""
    if entry["value"] is None:
        return "—"
    lo, hi = ("—" if v is None else signed_number(v) for v in entry["ci"])
    return f"{signed_number(entry['value'])} [{lo}, {hi}]"


def csv_text(summary: dict) -> str:
    """Long format: one row per forecaster, horizon segment and metric."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["forecaster", "horizon", "metric", "unit", "value", "ci_low", "ci_high", "records"])
    for name in summary["order"]:
        for metric, entries in summary["forecasters"][name]["metrics"].items():
            for label, e in zip(summary["horizons"], entries):
                out.writerow([name, label, metric, M.METRICS[metric][1], _csv(e["value"]), _csv(e["ci"][0]),
                              _csv(e["ci"][1]), e["records"]])
    return buf.getvalue()


def _csv(v: float | None) -> str:
    return "" if v is None else repr(v)


def file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
