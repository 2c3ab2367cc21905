"""Score forecasters (trained checkpoints and baselines) side by side on identical windows.

    python3 evaluate.py [--model CHECKPOINT|pretrained|pretrained_sde|BASELINE|FILE.py:NAME[=CKPT] ...] [--split test]
                        [--wfdb-dir DIR [--leads LEAD1 LEAD2]] [--records ...]
                        [--horizon-beats normal|ectopic|ventricular|...]

Without --model: the shipped Transformer (pretrained/forecaster.pt) and every baseline; `pretrained_sde` is the
shipped latent SDE (pretrained/latent_sde.pt).

Baselines: the names --model lists below (baselines.BASELINES), or `baselines` for all. Each window's first
input_signal_duration seconds are the context, the rest the truth to forecast. Metrics are computed per record, then
averaged over records (each record weighs the same) with bootstrap 95 % intervals over records, and each model is
paired record by record against the best baseline on MSE, CRPS and R-peak F1, also on the windows of each kind of
horizon beats (normal, ectopic, supraventricular, ventricular). Writes report.md (the tables), metrics.json,
metrics.csv, error_curves.png (and .csv, the curves it draws) and gallery_<model>.png into a fresh
results/evaluate-<time> folder. Stopped (Ctrl-C, SIGTERM, a failure), the same command goes on from the windows it
scored, kept in the results root's .evaluate-partial-<key>.npz, with the same numbers (each window is forecast alone
with its own seed).
From Python, main(["--model", "zero", ...]) takes the flags as a list and returns that folder.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import shutil
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NoReturn, Sequence

import numpy as np
from tqdm import tqdm

import metrics as M
import paths
import running
from baselines import BASELINES, make_baseline
from eval_report import csv_text, file_name, markdown_report, sampled_paths
from forecast import Forecaster, ForecasterBase, checked_samples, point_forecast, slowest_bpm
from hyper_params import LEAD_KEYS, Config, add_leads_flag, data_hash, load_config
from own_forecaster import check_rate, checkpoint_file, own_code, own_spec, user_forecaster, weights_sha256
from paths import ROOT, SHIPPED, SHIPPED_SPECS, UserError
from train_results import LEGEND_FONTSIZE, forecast_panel

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from prepare_mitbih import Record

ALL_BASELINES = "baselines"
N_BOOT = 1000
PAIRED = {"mse": "lower", "crps": "lower", "f1_100": "higher"}   # scores a model is held to against baselines
# A record whose reference beats the R-peak detector finds under MISFIT_FOUND of (widest tolerance) on the true
# signal, of MISFIT_BEATS or more, has annotations that do not fit it (made at another rate, shifted, another
# record's): its R-peak scores mean nothing. MIT-BIH's lowest is far above it (the detector finds 99.7% of DS2's).
MISFIT_FOUND, MISFIT_BEATS = 0.5, 10
# beat symbols of each AAMI EC57 class; B (bundle branch block), n (supraventricular escape) and r (R-on-T PVC)
# do not occur in MIT-BIH and go where their kind does: with L and R, with the escapes e and j, with V
AAMI = {"N": "NLRejBn", "S": "AaJS", "V": "VEr", "F": "F", "Q": "/fQ"}
HORIZON_BEATS = {"normal": "N", "ectopic": "SVF", "supraventricular": "S", "ventricular": "V"}   # --horizon-beats


def make_forecaster(spec: str, fs: int, device: str | None = None) -> ForecasterBase:
    """A baseline by name, `pretrained` or `pretrained_sde` (the shipped models), a checkpoint path
    (forecast.Forecaster), or your own forecaster as FILE.py:NAME or module:NAME (own_forecaster.user_forecaster)."""
    if spec in BASELINES:
        return make_baseline(spec, fs)
    if own_spec(spec):
        return user_forecaster(spec, fs, device)
    path = paths.existing_checkpoint(spec, "--model", f"; --model takes a checkpoint path (e.g. "
                                     f"checkpoints/transformer-<time>/best.pt), a shipped model "
                                     f"({', '.join(SHIPPED_SPECS)}), a baseline ({', '.join(BASELINES)} or "
                                     f"{ALL_BASELINES}) or your own FILE.py:NAME or module:NAME")
    try:
        model = Forecaster.from_checkpoint(path, device)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from e
    check_rate(str(path), model, fs, " (--config's data.samples_per_second; the default is config_vqvae.json's): "
                                     "pass the VQ-VAE config the model was trained with as --config")
    return model


def checkpoint_digests(specs: list[str], loaded: dict[str, ForecasterBase]) -> dict[str, str]:
    """{"checkpoints": each checkpoint scored with its weights_sha256}, or {} when none is: a path alone does not
    say which weights were scored (best.pt changes while its run goes on, a shipped model when it is packed again).
    `loaded`: build_forecasters' forecasters by their report labels, in the order of expand_models(specs); each
    checkpoint is named by its label, the name the report's tables give it ('pretrained: ...' beside rows of
    'transformer' said which file was which forecaster to no one)."""
    found = [f"{label}: {paths.shown(checkpoint_file(spec))} sha256 {digest}"
             for spec, (label, f) in zip(expand_models(specs), loaded.items()) if (digest := weights_sha256(spec, f))]
    return {"checkpoints": "; ".join(found)} if found else {}


def preparation_mismatch(model: ForecasterBase, cfg: Config, leads: Sequence[str] | None = None) -> str:
    """How a model's own data config (if it carries one) differs from the evaluation data's, or ''. With --leads
    (`leads`) those are the leads read, whatever either config names, so the configs' leads are not compared: a
    model of II and V5 scored with --leads II V5 was said to be trained on data prepared differently."""
    own = getattr(getattr(model, "cfg", None), "data", None)
    keys = ("samples_per_second", "filter_band", "filter_order", *([] if leads else LEAD_KEYS),
            "input_signal_duration", "forecast_predictions")
    return ", ".join(f"{k} {getattr(own, k)!r} vs {getattr(cfg.data, k)!r}" for k in keys
                     if own is not None and getattr(own, k, None) != getattr(cfg.data, k))


def lead_hint(model: ForecasterBase, cfg: Config) -> str:
    """What reads --wfdb-dir's records with the leads a model was trained on, when --config names others: the
    warning said only that they differed, and the run went on with --config's."""
    own = model.cfg.data
    if all(getattr(own, k) == getattr(cfg.data, k) for k in LEAD_KEYS):
        return ""
    named = f"--leads {own.first_lead} {own.second_lead}, or " if own.first_lead and own.second_lead else ""
    return (f"; --wfdb-dir's records were read with --config's leads: pass {named}the config its VQ-VAE was "
            f"trained with as --config to read them as it was trained")


def unique_label(label: str, spec: str, taken: dict) -> str:
    """A forecaster's name in the report, told apart from the ones before it (two checkpoints of one kind) by its
    run folder and file, then by a number."""
    where = Path(spec)
    candidates = [label, f"{label} ({where.parent.name + '/' if where.parent.name else ''}{where.stem})"]
    return next(c for c in candidates + [f"{label} #{i}" for i in range(2, len(taken) + 3)] if c not in taken)


def seen_patients(model: ForecasterBase, records: list[str], split: str = "train") -> list[str]:
    """The records among `records` that the model trained on (`split` "train") or chose its checkpoint on
    ("validation"), as its checkpoint lists them (forecast.seen_records): scored here, they would be no test."""
    from prepare_mitbih import patients_seen

    return patients_seen(records, getattr(model, f"{split}_records", []))


def expand_models(specs: list[str]) -> list[str]:
    """`baselines` becomes every baseline name; duplicates are dropped, order kept."""
    out: list[str] = []
    for s in specs:
        for name in (list(BASELINES) if s == ALL_BASELINES else [s]):
            if name not in out:
                out.append(name)
    return out


# ----------------------------------------------------------------------------- data

@dataclass
class Windows:
    """Evaluation windows of several records, as prepare_mitbih.cut_windows lays them out."""

    signals: np.ndarray                 # [N, T, 2] float32 mV
    record: np.ndarray                  # [N] index into records
    start: np.ndarray                   # [N] window start (samples at fs)
    beat_ptr: np.ndarray                # [N+1] CSR pointers into beat_pos
    beat_pos: np.ndarray                # [M] reference beats, samples from the window start
    records: list[str]
    annotated: np.ndarray               # [R] bool: the record has beat annotations
    leads: list[list[str]]
    fs_in: list[float]
    source: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    beat_sym: np.ndarray | None = None  # [M] uint8: each reference beat's annotation symbol (ord)

    def beat_indices(self, idx: np.ndarray) -> np.ndarray:
        """The indices into beat_pos of the beats of windows idx, window by window."""
        return np.concatenate([np.arange(self.beat_ptr[i], self.beat_ptr[i + 1]) for i in idx] or
                              [np.zeros(0, np.int64)])

    def select(self, keep: np.ndarray) -> "Windows":
        """The windows `keep` (sorted indices), with their beats."""
        counts = np.diff(self.beat_ptr)[keep]
        beat_idx = self.beat_indices(keep)
        return Windows(self.signals[keep], self.record[keep], self.start[keep],
                       np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.beat_pos[beat_idx],
                       self.records, self.annotated, self.leads, self.fs_in, self.source, self.skipped,
                       None if self.beat_sym is None else self.beat_sym[beat_idx])


def _from_tensors(d: dict, annotated: list[bool], leads: list[list[str]], fs_in: list[float],
                  source: dict, skipped: list[tuple[str, str]]) -> Windows:
    """Windows of the tensors cut_windows or load_split gives (torch or numpy) and the records' details."""
    def arr(x):
        return x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return Windows(arr(d["signals"]), arr(d["record"]), arr(d["start"]), arr(d["beat_ptr"]),
                   arr(d["beat_pos"]), list(d["records"]), np.asarray(annotated, bool), leads, fs_in,
                   source, skipped, arr(d["beat_sym"]) if "beat_sym" in d else None)


def load_prepared(split: str, cfg: Config, prepared: str | None) -> Windows:
    """A prepared split (prepare_mitbih.py), with record details from its meta.json when present; its record
    lists may be other than the config's (a split of one's own), its windows not. Without them a record is
    annotated when its windows hold reference beats: one taken for annotated without any would score its
    forecasts' every beat a false positive, F1 0 where it is undefined."""
    from prepare_mitbih import load_split, records_of, stored_meta
    d = load_split(split, cfg, prepared, any_records=True, config_flag=True)
    folder = paths.location("prepared", prepared)
    stored = stored_meta(folder)
    meta = records_of(stored)
    names = list(d["records"])
    info = [meta.get(n, {}) for n in names]
    source = {"kind": "prepared", "path": str(folder / f"{split}.pt"), "split": split,
              "data_hash": d.get("data_hash", "unknown"), "input_hash": d.get("input_hash", "unknown"),
              "annotator": stored.get("annotator", "atr"),
              "invalid_seconds": {n: i["invalid_seconds"] for n, i in zip(names, info) if i.get("invalid_seconds")}}
    beats = np.asarray(d["beat_ptr"])
    with_beats = np.bincount(np.asarray(d["record"])[np.diff(beats) > 0], minlength=len(names)) > 0
    return _from_tensors(d, [i.get("has_annotations", bool(b)) for i, b in zip(info, with_beats)],
                         [i.get("leads", ["?", "?"]) for i in info], [i.get("fs_in", float("nan")) for i in info],
                         source, [])


def load_wfdb(folder: str | Path, cfg: Config, records: list[str] | None = None, progress: bool = True,
              annotator: str = "atr", per_record: int | None = None, leads: Sequence[str] | None = None) -> Windows:
    """Every readable record of a WFDB folder: filtered, resampled, lead-ordered as for training, or of the two
    channels `leads` names (--leads; a record without them is skipped, saying so); at most `per_record` evenly spaced
    windows of each (as limit_windows keeps).

    Records that cannot be read (missing or truncated files, one lead, too short) are returned in
    `skipped` with the reason instead of stopping the run; NaN/invalid samples are gaps no window touches.
    Each record's windows are cut as it is read, and its signal let go: a folder of 24 h records held every
    record and all of its windows (176 MB a record at 128 Hz) before keeping a few of them.
    """
    from prepare_mitbih import (check_annotated, check_windows, cut_windows, find_records, hash_inputs, note_unlisted,
                                read_record, select_records)
    folder = Path(folder)
    names = select_records(find_records(folder, download=False, flag="--wfdb-dir"), records, folder)
    if records is None:
        note_unlisted(folder, names)
    check_annotated(folder, names, annotator)
    loaded, skipped = [], []

    def read() -> Iterator[Record]:
        for name in tqdm(names, desc="reading", unit="rec", disable=not progress):
            try:
                rec = replace(read_record(folder / name, cfg.data, gaps=True, annotator=annotator, leads=leads),
                              name=name)
                check_windows(rec, cfg.data, str(folder / name))
            except Exception as e:   # UserError from read_record, or anything wfdb/scipy raise on odd files
                skipped.append((name, str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"))
                continue
            loaded.append(replace(rec, signal=rec.signal[:0].copy()))     # what is said of it, not its samples
            yield rec
            del rec
    d = cut_windows(read(), cfg.data, overlap=False, most=per_record)
    if not loaded:
        reasons = "; ".join(f"{n}: {why}" for n, why in skipped[:5])
        raise UserError(f"no usable record in {folder} ({reasons})")
    bare = [r.name for r in loaded if not r.has_annotations]
    if bare:
        shown = ", ".join(bare[:5]) + (", ..." if len(bare) > 5 else "")
        running.note(f"{len(bare)} of {len(loaded)} records in {folder} {'has' if len(bare) == 1 else 'have'} no "
                     f"beat annotations (.{annotator}): {shown}; their R-peak scores (F1, timing, heart rate) stay "
                     f"empty")
    chosen = "all records" if records is None else f"records {', '.join(names)}"
    source = {"kind": "wfdb", "path": str(folder), "split": chosen, "data_hash": data_hash(cfg.data),
              "input_hash": hash_inputs(folder, [r.name for r in loaded], annotator), "annotator": annotator,
              "invalid_seconds": {r.name: r.invalid_s for r in loaded if r.invalid_s}}
    if leads:           # the data hash is the config's, whichever leads were read: the report says which
        source["leads"] = list(leads)
    return _from_tensors(d, [r.has_annotations for r in loaded], [r.leads for r in loaded],
                         [r.fs_in for r in loaded], source, skipped)


def limit_windows(w: Windows, records: list[str] | None, per_record: int | None) -> Windows:
    """Keep only some records, and at most `per_record` evenly spaced windows of each."""
    from prepare_mitbih import evenly_spaced, records_there
    keep = np.ones(len(w.record), bool)
    if records:
        missing = [r for r in records if r not in w.records]
        if missing:
            raise UserError(f"records {missing} are not in {w.source.get('path')}{records_there(missing, w.records)}")
        keep &= np.isin(w.record, [w.records.index(r) for r in records])
    if per_record:
        sub = np.zeros(len(w.record), bool)
        for r in np.unique(w.record[keep]):
            idx = np.flatnonzero(keep & (w.record == r))
            sub[idx[evenly_spaced(len(idx), per_record)]] = True
        keep = sub
    return w if keep.all() else w.select(np.flatnonzero(keep))


def horizon_classes(w: Windows, context: int) -> list[set[str]]:
    """The AAMI classes of each window's reference beats in its horizon (a symbol of no class, ?, counts as Q)."""
    if w.beat_sym is None:
        raise UserError(f"{w.source.get('path')} keeps no beat symbols: prepare it again with prepare_mitbih.py")
    of = {ord(sym): c for c, syms in AAMI.items() for sym in syms}
    out = []
    for i in range(len(w.record)):
        lo, hi = w.beat_ptr[i], w.beat_ptr[i + 1]
        out.append({of.get(int(s), "Q") for s, p in zip(w.beat_sym[lo:hi], w.beat_pos[lo:hi]) if p >= context})
    return out


def horizon_beats_masks(w: Windows, context: int) -> dict[str, np.ndarray]:
    """For each HORIZON_BEATS kind, which windows qualify: all of the horizon's reference beats normal (`normal`),
    or one of them of the kind's classes. Windows of records without annotations never qualify."""
    classes = horizon_classes(w, context)
    annotated = np.asarray(w.annotated, bool)[w.record]
    masks = {}
    for kind, of_kind in HORIZON_BEATS.items():
        want = set(of_kind)
        hit = [c == want if kind == "normal" else bool(c & want) for c in classes]
        masks[kind] = annotated & np.array(hit, bool)
    return masks


def beats_unclassified(w: Windows) -> bool:
    """Whether every reference beat reads N: a QRS detector's annotations do, and tell no beat's class (so do a
    cardiologist's of patients whose beats are all normal, MIT-BIH's 115 and 122)."""
    return w.beat_sym is not None and len(w.beat_sym) > 0 and bool((np.asarray(w.beat_sym) == ord("N")).all())


def select_horizon_beats(w: Windows, kind: str, context: int) -> Windows:
    """Only the windows of `horizon_beats_masks`' kind: where the rhythm breaks, the forecasters can be told apart
    from where it runs on. A record left without windows is skipped with the reason, not dropped unsaid."""
    if not np.asarray(w.annotated, bool)[w.record].any():
        raise UserError(f"--horizon-beats {kind} reads the beat annotations, and no record of {w.source.get('path')} "
                        f"has them (with --wfdb-dir, --annotator names the annotation file)")
    keep = np.flatnonzero(horizon_beats_masks(w, context)[kind])
    wanted = "only normal beats" if kind == "normal" else f"a {kind} beat"
    unclassified = ("its reference beats all read N: the patients' beats are all normal, or the annotations carry no "
                    "beat class, as a QRS detector's do (--annotator qrs)") if beats_unclassified(w) else ""
    if not len(keep):
        raise UserError(f"--horizon-beats {kind}: none of the {len(w.record)} windows of {w.source.get('path')} "
                        f"has {wanted} in its horizon" + (f"; {unclassified}" if unclassified else ""))
    if unclassified:
        running.note(f"--horizon-beats {kind}: {w.source.get('path')}: {unclassified}, so every annotated window "
                     f"counts as normal")
    left_out = [(w.records[r], "no beat annotations, which --horizon-beats reads" if not w.annotated[r] else
                 f"none of its {np.sum(w.record == r)} windows has {wanted} in its horizon (--horizon-beats {kind})")
                for r in np.setdiff1d(w.record, w.record[keep])]
    return replace(w.select(keep), skipped=w.skipped + left_out)


# ----------------------------------------------------------------------------- scoring

@dataclass
class Scores:
    """Sums of one forecaster: each window's own, and pooled over each record's windows."""

    windows: int                        # N, the windows scored
    deterministic: bool = True
    sums: dict[str, np.ndarray] = field(default_factory=dict)          # key -> [R, K+1]
    curves: dict[str, np.ndarray] = field(default_factory=dict)        # key -> [R, H] (summed over windows, leads)
    window_sums: dict[str, np.ndarray] = field(default_factory=dict)   # key -> [N, K+1]

    def add(self, r: int, idx: np.ndarray, sums: dict[str, np.ndarray], curves: dict[str, np.ndarray],
            point: bool, records: int) -> None:
        """Pool the per-window sums and curves of windows idx, all of record r, a point forecast each or not
        (`point`: forecast.point_forecast)."""
        self.deterministic = self.deterministic and point
        _add_sums(self.sums, sums, r, records)
        _add_sums(self.curves, curves, r, records)
        self.curves.setdefault("windows", np.zeros(records))[r] += len(idx)
        for key, v in sums.items():
            if key not in self.window_sums:
                self.window_sums[key] = np.zeros((self.windows, *v.shape[1:]))
            self.window_sums[key][idx] = v

    @property
    def window_mse(self) -> np.ndarray:
        """[N] whole-horizon MSE of every window."""
        return self.window_sums["se"][:, -1] / self.window_sums["n"][:, -1]

    def only(self, keep: np.ndarray, record: np.ndarray, records: int) -> "Scores":
        """The same forecasts scored on the windows `keep` (a mask over all windows) alone, pooled per record again."""
        out = Scores(int(keep.sum()), self.deterministic,
                     window_sums={key: v[keep] for key, v in self.window_sums.items()})
        for key, v in out.window_sums.items():
            out.sums[key] = np.zeros((records, *v.shape[1:]))
            np.add.at(out.sums[key], record[keep], v)
        return out


def _add_sums(store: dict[str, np.ndarray], sums: dict[str, np.ndarray], r: int, records: int) -> None:
    """Add per-window sums [B, ...] to row r of per-record totals [records, ...]: metrics are taken per record,
    so that each record weighs the same."""
    for key, v in sums.items():
        store.setdefault(key, np.zeros((records, *v.shape[1:])))[r] += v.sum(0)


def _chunks(w: Windows, size: int = 256) -> list[tuple[int, np.ndarray]]:
    """(record, window indices): the windows scored together, within one record."""
    out = []
    for r in np.unique(w.record):
        idx = np.flatnonzero(w.record == r)
        out += [(int(r), idx[i:i + size]) for i in range(0, len(idx), size)]
    return out


def window_seed(seed: int, record: str, start: int) -> int:
    """A window's own seed, from the record's name and the window's start: its forecast is the same whatever
    else is evaluated with it (other records, --max-windows-per-record)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(record.encode()), start]).generate_state(1)[0])


def _beats(w: Windows, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference beats of windows idx as (row in idx, sample from the window start)."""
    rows = np.repeat(np.arange(len(idx)), w.beat_ptr[idx + 1] - w.beat_ptr[idx])
    return rows, w.beat_pos[w.beat_indices(idx)]


def predict_windows(f: ForecasterBase, name: str, w: Windows, idx: np.ndarray, context: int, num_samples: int,
                    seed: int, fs: int, said: set | None = None) -> np.ndarray:
    """Forecasts [len(idx), S, H, 2] of windows idx, each window forecast alone with its window_seed and
    checked: float [1, S, H, 2], finite. The forecaster's warnings are said naming their window (say_warnings;
    `said`: those said before in this evaluation)."""
    horizon, out = w.signals.shape[1] - context, []
    said = set() if said is None else said
    for i in idx:
        x = np.asarray(w.signals[i:i + 1, :context], np.float32)
        with warnings.catch_warnings(record=True) as caught:
            y = f.predict(x, horizon, num_samples=num_samples,
                          seed=window_seed(seed, w.records[w.record[i]], int(w.start[i])))
        say_warnings(caught, f"{name} on record {w.records[w.record[i]]} at {int(w.start[i]) / fs:g} s", said)
        out.append(checked_samples(y, name, horizon))
    return np.concatenate(out)


def say_warnings(caught: list[warnings.WarningMessage], where: str, said: set) -> None:
    """Warnings given while forecasting one window, again with `where` (forecaster, record, window start) in front:
    bare, one of a whole evaluation named no window. Each is said at its first window only, as Python says a
    warning repeated from one line once, and `said` keeps it."""
    for c in caught:
        key = (c.category, str(c.message), c.filename, c.lineno)
        if key not in said:
            said.add(key)
            warnings.warn_explicit(said_again(c, where), c.category, c.filename, c.lineno)


def said_again(c: warnings.WarningMessage, where: str) -> Warning:
    """Warning `c` again with `where` in front, of its own category; one whose constructor takes more than a message
    (one's own forecaster's, or a library's) is said as a UserWarning naming it: calling it with the new message
    stopped the evaluation in a TypeError traceback."""
    try:
        return c.category(f"{where}: {c.message}")
    except Exception:
        return UserWarning(f"{where}: {c.category.__name__}: {c.message}")


def rhythm_of_paths(context: np.ndarray, sample_paths: np.ndarray, rows: np.ndarray, pos: np.ndarray, fs: int,
                    edges: np.ndarray, annotated: np.ndarray) -> dict[str, np.ndarray]:
    """Rhythm sums of lead-1 forecasts [B, S, H], averaged over the first M.RHYTHM_PATHS sample paths.

    Beats are a property of a trajectory: the mean of samples that disagree on timing has no sharp
    beats, so a sampled forecast is scored on its sample paths (a deterministic one on its forecast).
    """
    b, m = len(context), min(sample_paths.shape[1], M.RHYTHM_PATHS)
    # the m paths scored in one call, as m * B windows (path j of window i is row j * B + i): rhythm_sums scores
    # each row alone, and a call per path spent most of its time in each call's own overheads, on a few rows
    stacked = sample_paths[:, :m].transpose(1, 0, 2).reshape(m * b, -1)
    sums = M.rhythm_sums(np.tile(context, (m, 1)), stacked, np.concatenate([rows + j * b for j in range(m)]),
                         np.tile(pos, m), fs, edges, np.tile(annotated, m))
    return {key: sum(v[j * b:(j + 1) * b] / m for j in range(m)) for key, v in sums.items()}


def evaluate(forecasters: dict[str, ForecasterBase], w: Windows, context: int, fs: int, num_samples: int = 100,
             seed: int = 0, progress: bool = True, partial: Partial | None = None) -> tuple[dict[str, Scores], dict]:
    """Score every forecaster on the same windows, each window forecast alone with its own seed (window_seed).

    Returns each forecaster's Scores and the rhythm sums of the R-peak detector run on the true
    horizons: its own sensitivity and positive predictivity against the reference annotations. With `partial`
    (main's) the sums are kept in its file as the chunks are scored, and a run stopped or failed goes on from them.
    """
    check_request(forecasters, w, context, fs)
    scores = {name: Scores(len(w.signals)) for name in forecasters}
    truth_sums: dict[str, np.ndarray] = {}
    edges = M.segment_edges(w.signals.shape[1] - context, fs)     # horizon segments, the same for every chunk
    chunks = _chunks(w)
    done = load_partial(partial, scores, truth_sums, chunks) if partial else 0
    # windows, not records: one 24 h record's 14400 windows stood at 0/1 records for hours
    bar = tqdm(total=len(w.record), initial=_windows_in(chunks[:done]), desc="windows", unit="win",
               disable=not progress)
    said: set = set()
    adding = False      # True while a chunk's sums are added: stopped then, the sums are of no whole chunk
    try:
        for r, idx in chunks[done:]:
            running.raise_if_signalled()     # a SIGTERM or Ctrl-C Python swallowed in a finalizer still stops it
            scored = score_chunk(forecasters, w, r, idx, context, fs, edges, num_samples, seed, said)
            adding = True
            add_chunk(scored, r, idx, scores, truth_sums, len(w.records))
            done, adding = done + 1, False
            bar.update(len(idx))
            if partial:
                save_partial(partial, scores, truth_sums, done, now=done == len(chunks))
    except (KeyboardInterrupt, Exception) as e:
        if not partial or adding or not done:
            raise
        save_partial(partial, scores, truth_sums, done, now=True)
        raise_kept(e, partial, _windows_in(chunks[:done]))
    finally:
        bar.close()
    return scores, truth_sums


def check_request(forecasters: dict[str, ForecasterBase], w: Windows, context: int, fs: int) -> None:
    """evaluate's arguments as a script of one's own gives them, checked first: a context as long as the windows would
    stop in a ZeroDivisionError deep in the scores, one of 0 in numpy's 'zero-size array', and a forecaster at another
    rate than the windows' (make_baseline(name, 360) on 128 Hz windows) would be scored without a word."""
    total = w.signals.shape[1]
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not 0 < context < total:
        raise ValueError(f"context must be an integer from 1 to {total - 1} (the windows' {total} samples less a "
                         f"horizon), got {context!r}")
    for name, f in forecasters.items():
        check_rate(f"forecaster {name!r}", f, fs)


def score_chunk(forecasters: dict[str, ForecasterBase], w: Windows, r: int, idx: np.ndarray, context: int, fs: int,
                edges: np.ndarray, num_samples: int, seed: int, said: set) -> dict:
    """The sums of windows idx, all of record r, for add_chunk: the detector's on the true horizons ("truth") and
    every forecaster's per horizon segment (`edges`, metrics.segment_edges) with the paths it drew; `said`:
    predict_windows'. Nothing is added here: a run stopped while the chunk is forecast keeps sums of whole chunks."""
    x = np.asarray(w.signals[idx], np.float32)
    ctx, truth = x[:, :context], x[:, context:]
    rows, pos = _beats(w, idx)
    annotated = np.full(len(idx), bool(w.annotated[r]))
    out: dict = {"truth": M.rhythm_sums(ctx[..., 0], truth[..., 0], rows, pos, fs, edges, annotated), "forecasters": {}}
    for name, f in forecasters.items():
        paths_drawn = predict_windows(f, name, w, idx, context, num_samples, seed, fs, said)
        point = point_forecast(f, paths_drawn.shape[1], num_samples)
        wave, curves = M.waveform_sums(truth, paths_drawn, edges, point_mass=point)
        rhythm = rhythm_of_paths(ctx[..., 0], paths_drawn[..., 0], rows, pos, fs, edges, annotated)
        out["forecasters"][name] = ({**wave, **rhythm}, curves, point)
    return out


def _windows_in(chunks: list[tuple[int, np.ndarray]]) -> int:
    """The windows of record chunks (_chunks')."""
    return sum(len(idx) for _, idx in chunks)


def add_chunk(scored: dict, r: int, idx: np.ndarray, scores: dict[str, Scores], truth_sums: dict[str, np.ndarray],
              records: int) -> None:
    """score_chunk's sums of windows idx (record r) added to the detector's and each forecaster's Scores."""
    _add_sums(truth_sums, scored["truth"], r, records)
    for name, (sums, curves, point) in scored["forecasters"].items():
        scores[name].add(r, idx, sums, curves, point, records)


# ----------------------------------------------------------------------------- going on from an interrupted run

PARTIAL_EVERY_S = 10.0      # the running sums are saved at most this often (and on a stop or failure, and at the end)


@dataclass
class Partial:
    """The file evaluate keeps its running sums in, and the key they are kept under (partial_key: everything an
    evaluation's numbers depend on); `resumed`: the windows this run found scored there."""

    path: Path
    key: str
    resumed: int = 0
    saved_at: float = -np.inf       # time.monotonic() of the last save
    save_s: float = 0.0             # how long it took


def raise_kept(e: BaseException, partial: Partial, windows: int) -> NoReturn:
    """Raise the stop or UserError `e` again saying that the scores of `windows` windows are kept for the same command
    to go on from (on a line of its own after a message of several: one's own forecaster's frames end in its
    exception's line, not to be read as its words), and from the same cause (that exception, for a debugger); a crash
    keeps its traceback, the word said as a note before it."""
    kept = (f"the {running.counted(windows, 'window')} scored {'are' if windows != 1 else 'is'} kept in "
            f"{partial.path}: the same command goes on from them")
    if isinstance(e, (KeyboardInterrupt, UserError)):
        then = "\n" if "\n" in str(e) else "; "
        raise type(e)(f"{e}{then}{kept}" if str(e) else kept).with_traceback(e.__traceback__) from e.__cause__
    running.note(kept)
    raise e


def partial_key(forecasters: dict[str, ForecasterBase], specs: list[str], started: dict[str, str], w: Windows,
                cfg: Config, samples: int, seed: int) -> str:
    """Everything the scores depend on, as JSON: the forecasters (labels, specs, weights' and own code's SHA-256s,
    devices), the windows themselves (their samples, beats and records hashed, so every flag that picks them is
    covered), the data config, samples and seed, the versions of Python's libraries, and the project's own code:
    the hash of its *.py files, since a commit says nothing of a tree edited since (-dirty); and torch's threads."""
    h = hashlib.sha256()
    for a in (w.signals, w.record, w.start, w.beat_ptr, w.beat_pos, w.annotated,
              np.zeros(0, np.uint8) if w.beat_sym is None else w.beat_sym):
        h.update(np.ascontiguousarray(a))
    code = hashlib.sha256()
    for f in sorted(ROOT.glob("*.py")):
        code.update(f.name.encode())
        paths.hash_file(code, f)
    return json.dumps({"forecasters": list(forecasters), "specs": expand_models(specs),
                       "weights": started.get("checkpoints", ""), "own code": started.get("own forecasters", ""),
                       "devices": sorted(str(getattr(f, "device", "cpu")) for f in forecasters.values()),
                       "windows": h.hexdigest(), "records": w.records, "source": w.source,
                       "data": cfg.to_dict()["data"], "samples": samples, "seed": seed, "software": software(),
                       "threads": torch_threads(), "code": code.hexdigest()}, sort_keys=True, default=str)


def torch_threads() -> int:
    """torch's CPU threads: a model's sums on the CPU may differ in their last bits with another count."""
    import torch

    return torch.get_num_threads()


def partial_file(results: Path, key: str) -> Path:
    """The hidden file in the results root that keeps the running sums of an evaluation of this key."""
    return results / f".evaluate-partial-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def save_partial(partial: Partial, scores: dict[str, Scores], truth_sums: dict[str, np.ndarray], done: int,
                 now: bool = False) -> None:
    """Keep the sums of the first `done` chunks in partial.path (atomically, as plain arrays: np.load reads them
    without pickle); unless `now`, only PARTIAL_EVERY_S after the last save, or ten times the save's own time."""
    if not now and time.monotonic() - partial.saved_at < max(PARTIAL_EVERY_S, 10 * partial.save_s):
        return
    t = time.monotonic()
    arrays = {"key": np.array(partial.key), "done": np.array(done), **{f"truth/{k}": v for k, v in truth_sums.items()}}
    for i, s in enumerate(scores.values()):
        arrays[f"{i}/deterministic"] = np.array(s.deterministic)
        for part in ("sums", "curves", "window_sums"):
            arrays.update({f"{i}/{part}/{k}": v for k, v in getattr(s, part).items()})
    paths.atomic_save_npz(partial.path, **arrays)
    partial.saved_at, partial.save_s = time.monotonic(), time.monotonic() - t


def note_other_partials(results: Path) -> None:
    """Scores kept by interrupted runs of other commands (or of weights or code since changed) stay until their
    command runs again, unseen in a hidden file each: say they are there, and what they weigh. A run going on
    beside this one in the same results root keeps its file there too, so the note does not call them all stopped."""
    others = [size for p in sorted(results.glob(".evaluate-partial-*.npz")) if (size := _size(p)) is not None]
    if others:
        mb = sum(others) / 2 ** 20
        many = len(others) > 1
        running.note(f"{len(others)} evaluation{'s' * many} of other settings, interrupted or still running, "
                     f"{'keep their' if many else 'keeps its'} scores in {results}/.evaluate-partial-*.npz "
                     f"({mb:.1f} MB): each goes on when its command runs again; delete those you will not run again")


def _size(path: Path) -> int | None:
    """A kept file's bytes; None when it went (another run finished meanwhile) or is a link to nothing: the run whose
    report is written does not end in a traceback over it."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def load_partial(partial: Partial, scores: dict[str, Scores], truth_sums: dict[str, np.ndarray],
                 chunks: list[tuple[int, np.ndarray]]) -> int:
    """The chunks an interrupted run of the same key scored, their sums put into `scores` and `truth_sums`; 0 when
    there is no such file. One of another key is never read into them (its name is another key's, or it says so)."""
    if not partial.path.is_file():
        return 0
    try:
        with np.load(partial.path, allow_pickle=False) as z:
            if str(z["key"]) != partial.key:
                running.warn(f"{partial.path} keeps another evaluation's scores: starting over, it is replaced")
                return 0
            kept = {name: z[name] for name in z.files}
    except Exception as e:      # any file np.load cannot read whole (empty, cut, a flipped byte: a dozen kinds)
        running.warn(f"cannot read {partial.path} ({type(e).__name__}: {e}): starting over, it is replaced")
        return 0
    done = int(kept.pop("done"))
    names = list(scores)
    for name, v in kept.items():
        where, _, key = name.partition("/")
        if where == "truth":
            truth_sums[key] = v
        elif where != "key":
            part, _, key = key.partition("/")
            s = scores[names[int(where)]]
            if part == "deterministic":
                s.deterministic = bool(v)
            else:
                getattr(s, part)[key] = v
    partial.resumed = _windows_in(chunks[:done])
    running.note(f"going on from an interrupted run: {partial.resumed} of {_windows_in(chunks)} "
                 f"windows scored ({partial.path})")
    return done


def summarize(scores: dict[str, Scores], truth_sums: dict, w: Windows, fs: int, horizon: int,
              n_boot: int = N_BOOT, seed: int = 0, baselines: frozenset[str] = frozenset()) -> dict:
    """Per-record metrics, their means over records with bootstrap CIs, the detector check, and every
    other forecaster paired against the best of `baselines` (`paired_with_best_baseline`) and against each
    other (`paired_between_models`)."""
    edges = M.segment_edges(horizon, fs)
    labels = [f"{a / fs:g}-{b / fs:g} s" for a, b in zip(edges[:-1], edges[1:])] + ["all"]
    used = np.unique(w.record)                      # records that have windows
    return {"horizons": labels, "order": list(scores),
            **scored_tables(scores, used, w.records, labels, baselines, n_boot, seed),
            "records": [w.records[i] for i in used],
            "detector": detector_check(truth_sums, w, used, n_boot, seed),
            "horizon_beats": by_horizon_beats(scores, w, w.signals.shape[1] - horizon, labels, baselines, n_boot, seed)}


def scored_tables(scores: dict[str, Scores], used: np.ndarray, records: list[str], labels: list[str],
                  baselines: frozenset[str], n_boot: int, seed: int) -> dict:
    """Every forecaster's metrics per record (`used`: the indices into `records` that have windows) and their means
    with bootstrap intervals, and the paired comparisons (against the best baseline, between models)."""
    out: dict = {"forecasters": {}, "per_record": {}}
    per_record = {}
    for name, s in scores.items():
        per_rec = per_record[name] = M.record_metrics({key: v[used] for key, v in s.sums.items()})
        out["forecasters"][name] = {"deterministic": s.deterministic,
                                    "metrics": metric_table(per_rec, len(labels), n_boot, seed)}
        out["per_record"][name] = {metric: {records[i]: _num(v[j, -1]) for j, i in enumerate(used)}
                                   for metric, v in per_rec.items()}
    out["paired"] = paired_with_best_baseline(per_record, out["forecasters"], baselines, labels, n_boot, seed)
    out["paired_models"] = paired_between_models(per_record, out["forecasters"], baselines, labels, n_boot, seed)
    return out


def by_horizon_beats(scores: dict[str, Scores], w: Windows, context: int, labels: list[str],
                     baselines: frozenset[str], n_boot: int, seed: int) -> dict:
    """The same forecasts scored again on the windows of each `horizon_beats_masks` kind that has any, as
    --horizon-beats would score them alone: an ectopic beat in the horizon is where forecasts fail, and
    the run's means hide it. Empty without beat annotations."""
    if w.beat_sym is None:
        return {}
    out = {}
    for kind, keep in horizon_beats_masks(w, context).items():      # all empty without annotations
        if keep.any():
            used = np.unique(w.record[keep])
            only = {name: s.only(keep, w.record, len(w.records)) for name, s in scores.items()}
            tables = scored_tables(only, used, w.records, labels, baselines, n_boot, seed)
            out[kind] = {"records": [w.records[i] for i in used], "windows": int(keep.sum()),
                         "forecasters": tables["forecasters"], "paired": tables["paired"]}
    return out


def metric_table(per_rec: dict[str, np.ndarray], horizons: int, n_boot: int, seed: int) -> dict[str, list[dict]]:
    """Each metric's mean over records per horizon segment, with its bootstrap interval and how many records
    define it."""
    table = {}
    for metric, values in per_rec.items():
        mean, lo, hi = M.bootstrap_ci(values, n_boot, seed)
        n_rec = np.sum(np.isfinite(values), axis=0)
        table[metric] = [{"value": _num(mean[j]), "ci": [_num(lo[j]), _num(hi[j])], "records": int(n_rec[j])}
                         for j in range(horizons)]
    return table


def detector_check(truth_sums: dict, w: Windows, used: np.ndarray, n_boot: int, seed: int) -> dict:
    """The R-peak detector on the true horizons of the `used` records: its sensitivity and positive
    predictivity per tolerance (pooled), its timing and heart-rate errors (mean over records)."""
    det = {}
    for tol in M.TOLERANCES_MS:
        tp, fp, fn = (float(truth_sums[f"{key}{tol}"][used, -1].sum()) for key in ("tp", "fp", "fn"))
        det[f"{tol}ms"] = {"sensitivity": _num(tp / (tp + fn)) if tp + fn else None,
                           "positive_predictivity": _num(tp / (tp + fp)) if tp + fp else None,
                           "tp": int(tp), "fp": int(fp), "fn": int(fn)}
    truth_metrics = M.record_metrics({key: v[used] for key, v in truth_sums.items()})
    for metric in ("timing_ms", "hr_bpm"):
        mean, lo, hi = M.bootstrap_ci(truth_metrics[metric][:, -1], n_boot, seed)
        det[metric] = {"value": _num(mean), "ci": [_num(lo), _num(hi)]}
    det["annotated_records"] = int(np.sum(w.annotated[used]))
    tp, fn = (truth_sums[f"{key}{max(M.TOLERANCES_MS)}"][:, -1] for key in ("tp", "fn"))
    det["misfit"] = [{"record": w.records[i], "found": _num(tp[i] / (tp[i] + fn[i])), "beats": int(tp[i] + fn[i])}
                     for i in used if w.annotated[i] and tp[i] + fn[i] >= MISFIT_BEATS
                     and tp[i] < MISFIT_FOUND * (tp[i] + fn[i])]
    return det


def misfit_caution(detector: dict) -> str | None:
    """The warning naming the records whose annotations the detector does not find on their own signal."""
    if not (misfit := detector.get("misfit")):
        return None
    named = ", ".join(f"{m['record']} ({100 * m['found']:.0f}% of {m['beats']})" for m in misfit)
    return (f"the R-peak detector finds under {100 * MISFIT_FOUND:.0f}% of the reference beats (±"
            f"{max(M.TOLERANCES_MS)} ms) on the true signal of {named}: their annotations do not fit the signal "
            f"(made at another sampling rate, shifted, another record's?), and their R-peak scores mean nothing")


def paired_scores(horizons: int) -> list[tuple[str, int]]:
    """(metric, horizon index) of each PAIRED score: the whole horizon, and MSE in the first second too."""
    wanted = [(metric, horizons - 1) for metric in PAIRED]
    if horizons > 2:
        wanted.insert(1, ("mse", 0))
    return wanted


def paired_entry(per_record: dict[str, dict[str, np.ndarray]], tables: dict, name: str, ref: str, metric: str,
                 j: int, n_boot: int, seed: int, ref_key: str) -> dict:
    """`ref`'s value of `metric` in horizon segment j (as `ref_key`) and `name`'s, and `name`'s per-record scores
    minus `ref`'s (`metrics.paired_difference`): the difference, the change relative to ref's mean, and on how
    many records `name` is better and worse (the rest are ties: two forecasters reading the same drafts often find
    the same beats)."""
    ref_value = tables[ref]["metrics"][metric][j]["value"]
    d = M.paired_difference(per_record[name][metric][:, j], per_record[ref][metric][:, j], n_boot, seed)
    return {ref_key: ref_value, "value": tables[name]["metrics"][metric][j]["value"],
            "difference": {"value": _num(d["mean"]), "ci": [_num(v) for v in d["ci"]]},
            "change_pct": _num(100 * d["mean"] / ref_value) if ref_value else None,
            "better_on": d["below"] if PAIRED[metric] == "lower" else d["above"],
            "worse_on": d["above"] if PAIRED[metric] == "lower" else d["below"], "records": d["records"]}


def paired_with_best_baseline(per_record: dict[str, dict[str, np.ndarray]], tables: dict, baselines: frozenset[str],
                              labels: list[str], n_boot: int, seed: int) -> list[dict]:
    """Each forecaster that is not a baseline minus the best baseline on each PAIRED score, record by record.

    A model's edge over its best baseline is often far smaller than the spread between patients, so
    only the paired difference can tell it from zero; this is how the issues' targets are judged."""
    best = {(metric, j): ref for metric, j in paired_scores(len(labels))
            if (ref := best_baseline(tables, baselines, metric, j))}
    rows = []
    for name in [n for n in per_record if n not in baselines]:
        for (metric, j), ref in best.items():
            if metric not in per_record[name]:
                continue
            rows.append({"forecaster": name, "metric": metric, "horizon": labels[j], "baseline": ref,
                         **paired_entry(per_record, tables, name, ref, metric, j, n_boot, seed, "baseline_value")})
    return rows


def best_baseline(tables: dict, baselines: frozenset[str], metric: str, j: int = -1) -> str | None:
    """The baseline with the best `metric` in horizon segment `j` (lowest, or highest for F1) among `tables`
    (summary["forecasters"]), the one models are paired against; None when no baseline has a value."""
    known = [b for b in tables if b in baselines and tables[b]["metrics"][metric][j]["value"] is not None]
    if not known:
        return None
    pick = min if PAIRED[metric] == "lower" else max
    return pick(known, key=lambda b: tables[b]["metrics"][metric][j]["value"])


def paired_between_models(per_record: dict[str, dict[str, np.ndarray]], tables: dict, baselines: frozenset[str],
                          labels: list[str], n_boot: int, seed: int) -> list[dict]:
    """Every two forecasters that are not baselines, the first minus the later one in run order, on each
    PAIRED score, record by record: two models' own intervals overlap as much as a model's and a
    baseline's do, so the side-by-side comparison needs the pairing too."""
    models = [n for n in per_record if n not in baselines]
    rows = []
    for i, name in enumerate(models):
        for other in models[i + 1:]:
            for metric, j in paired_scores(len(labels)):
                if metric not in per_record[name] or metric not in per_record[other]:
                    continue
                rows.append({"forecaster": name, "against": other, "metric": metric, "horizon": labels[j],
                             **paired_entry(per_record, tables, name, other, metric, j, n_boot, seed,
                                            "against_value")})
    return rows


def _num(v) -> float | None:
    """metrics.json's number: 7 significant digits (6 decimals kept 1.2e-05 of 1.234e-05, and an interval's end
    under 5e-7 as 0), None for undefined."""
    v = float(v)
    return float(f"{v:.7g}") if np.isfinite(v) else None


# ----------------------------------------------------------------------------- plots

BASELINE_COLOURS = {"zero": "0.6", "mean": "0.35", "persistence": "C5", "seasonal": "C4", "analog": "darkgoldenrod",
                    "template": "C6", "seasonal_ensemble": "C9", "template_ensemble": "C2"}   # the same in every figure
MODEL_COLOURS = ("C0", "C3", "C1", "C8", "C7")
BASELINE_MARKERS = {"zero": "o", "mean": "s", "persistence": "^", "seasonal": "v", "analog": "D", "template": "P",
                    "seasonal_ensemble": "X", "template_ensemble": "<"}     # as the colours: the same in every figure
MODEL_MARKERS = ("*", ">", "h", "p", "d")
OTHER_BASELINE_COLOURS = ("teal", "slateblue", "sienna", "olivedrab")   # baselines of one's own, in turn
OTHER_BASELINE_MARKERS = ("H", "8", "+", "x")
MARKS_PER_CURVE = 10


def curve_colours(order: list[str], baselines: frozenset[str]) -> dict[str, str]:
    """A baseline's colour by its name, the models' in turn from the colours no baseline takes."""
    return _in_turn(order, baselines, BASELINE_COLOURS, MODEL_COLOURS, OTHER_BASELINE_COLOURS)


def curve_markers(order: list[str], baselines: frozenset[str]) -> dict[str, str]:
    """A marker per forecaster, as curve_colours gives colours: a line lying on another's (the template ensemble
    under the models) still shows its own marks, and the lines tell apart without colour."""
    return _in_turn(order, baselines, BASELINE_MARKERS, MODEL_MARKERS, OTHER_BASELINE_MARKERS)


def _in_turn(order: list[str], baselines: frozenset[str], named: dict[str, str], models: tuple[str, ...],
             others: tuple[str, ...]) -> dict[str, str]:
    """A named baseline's style, the models' in turn, and a baseline of one's own (registered in
    baselines.BASELINES, not in `named`) one of `others` in turn: it took the fifth model's."""
    model_turn, other_turn = itertools.cycle(models), itertools.cycle(others)
    return {name: (named.get(name) or next(other_turn)) if name in baselines else next(model_turn) for name in order}


def marks_at(order: list[str], name: str, n: int) -> slice:
    """Which of the n points of `name`'s curve carry its marker: MARKS_PER_CURVE of them, from an offset of its own,
    so that the marks of coinciding curves fall side by side, not on top of each other."""
    every = max(1, n // MARKS_PER_CURVE)
    return slice(order.index(name) * every // len(order), None, every)


MARK_KEYS = ("marker", "ms", "mec", "mew")


def plot_curve(ax: Axes, x: np.ndarray, y: np.ndarray, name: str, style: dict, order: list[str]) -> None:
    """`name`'s line in its style (plot_error_curves), and its marks (marks_at) drawn apart, over every line: where
    a thick model lies on another's line, the other's marks stay in sight."""
    ax.plot(x, y, label=name, **{k: v for k, v in style.items() if k not in MARK_KEYS})
    at = marks_at(order, name, len(y))
    ax.plot(np.asarray(x)[at], np.asarray(y)[at], ls="none", color=style["color"], zorder=4,
            **{k: style[k] for k in MARK_KEYS})


def mean_curve(s: Scores, key: str) -> np.ndarray:
    """A score per horizon step, the mean over records of each record's mean over its windows and leads."""
    n = s.curves["windows"]
    used = n > 0
    return np.mean(s.curves[key][used] / (2 * n[used, None]), axis=0)


def plot_error_curves(scores: dict[str, Scores], summary: dict, fs: int, path: Path,
                      baselines: frozenset[str] = frozenset(), title: str = "") -> None:
    """MSE and CRPS against horizon time (mean over records), each model's CRPS minus the best baseline's (the
    differences the paired tables test are too small to see on the curves themselves), and F1 ±100 ms per horizon
    second. Models thick and on top, baselines thin and dashed, a colour and a marker per forecaster by name, one
    legend; `title` (curves_title) says which windows."""
    import matplotlib.lines
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.6))
    order = summary["order"]
    colour, marker = curve_colours(order, baselines), curve_markers(order, baselines)
    style = {name: dict(color=colour[name], marker=marker[name], mec="white", mew=0.5, **(
        dict(lw=1.0, ls="--", zorder=2, ms=6) if name in baselines else dict(lw=2.0, zorder=3, ms=8)))
        for name in order}
    step_s = f"{1000 / fs:.3g} ms"
    for (key, label), ax in zip((("se", "MSE (mV²)"), ("crps", "CRPS (mV)")), axes.flat):
        for name, s in scores.items():
            curve = mean_curve(s, key)
            plot_curve(ax, np.arange(1, len(curve) + 1) / fs, curve, name, style[name], order)
        ax.set(xlabel="horizon (s)", ylabel=label, title=f"{label.split()[0]} per horizon step ({step_s})")
        ax.grid(alpha=0.3)
    plot_crps_gain(axes.flat[2], scores, summary, fs, baselines, style)
    plot_f1_per_segment(axes.flat[3], summary, style)
    handles = [matplotlib.lines.Line2D([], [], **style[name]) for name in scores]     # line and marker in one
    fig.legend(handles, list(scores), loc="lower center", ncol=min(len(scores), 5), fontsize=LEGEND_FONTSIZE,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    rows = -(-len(scores) // 5)
    fig.tight_layout(rect=(0, (0.15 + 0.22 * rows) / fig.get_figheight(), 1, 1))
    paths.atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def curves_title(w: Windows, samples: int | None, horizon_beats: str | None = None) -> str:
    """What error_curves.png averages: the split or folder, its windows and records, the paths per sampled
    forecast (sampled_paths; None: none was sampled). The figure is often seen without its report, and 3 windows'
    curves look like 920's."""
    where = windows_source(w)
    beats = f" (--horizon-beats {horizon_beats})" if horizon_beats else ""
    windows, records = len(w.record), len(np.unique(w.record))
    paths_said = f", {running.counted(samples, 'path')} per sampled forecast" if samples else ""
    return (f"{where}: {running.counted(windows, 'window')}{beats} from {running.counted(records, 'record')}"
            f"{paths_said}; means over records")


def windows_source(w: Windows) -> str:
    """Where the windows come from, as the figures name it: 'validation split', or a WFDB folder and its records."""
    src = w.source
    return f"{src['split']} split" if src["kind"] == "prepared" else f"{paths.shown(src['path'])}, {src['split']}"


def error_curves_csv(scores: dict[str, Scores], order: list[str], fs: int) -> str:
    """The curves error_curves.png draws, one row per horizon step, so they can be plotted again or compared across
    runs without the windows."""
    cols = {f"{name} {label}": mean_curve(scores[name], key) for name in order
            for key, label in (("se", "MSE (mV²)"), ("crps", "CRPS (mV)"))}
    steps = np.arange(1, len(next(iter(cols.values()))) + 1) / fs
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["horizon (s)", *cols])
    writer.writerows([f"{t:.6g}", *(f"{v[i]:.6g}" for v in cols.values())] for i, t in enumerate(steps))
    return out.getvalue()


def plot_crps_gain(ax: Axes, scores: dict[str, Scores], summary: dict, fs: int, baselines: frozenset[str],
                   style: dict) -> None:
    """Each model's CRPS minus the best baseline's per horizon step, as a 0.1 s running mean (below 0: the model
    is better there); said so when there is no model or no baseline to subtract."""
    best = best_baseline(summary["forecasters"], baselines, "crps")
    models = [name for name in scores if name not in baselines]
    if best is None or not models:
        ax.text(0.5, 0.5, "no model and baseline to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    k = max(1, round(0.1 * fs))
    ref = mean_curve(scores[best], "crps")
    for name in models:
        gain = np.convolve(mean_curve(scores[name], "crps") - ref, np.ones(k) / k, mode="valid")
        plot_curve(ax, (np.arange(len(gain)) + (k + 1) / 2) / fs, gain, name, style[name], summary["order"])
    ax.axhline(0, color=style[best]["color"], ls="--", lw=1.0)
    ax.set(xlabel="horizon (s)", ylabel="CRPS difference (mV)",
           title=f"CRPS minus {best}'s (0.1 s running mean; below 0: better)")
    ax.grid(alpha=0.3)


F1_DODGE = 0.3     # the F1 panel's points of a horizon second spread over ±this (its seconds lie 1 apart)


def dodge(order: list[str], name: str) -> float:
    """`name`'s shift from its horizon second in the F1 panel: each second has one point per forecaster, all marked,
    and equal F1s (no beats: zero, mean and persistence; the models and the template ensemble) lay on one spot."""
    return F1_DODGE * (2 * order.index(name) / (len(order) - 1) - 1) if len(order) > 1 else 0.0


def plot_f1_per_segment(ax: Axes, summary: dict, style: dict) -> None:
    """Each forecaster's F1 (±100 ms) in every horizon segment (summary["horizons"], a second each), or a word
    that it is undefined when no horizon holds a reference beat, or no record scored has beat annotations."""
    labels = summary["horizons"][:-1]
    f1 = {name: [e["value"] for e in summary["forecasters"][name]["metrics"]["f1_100"][:-1]]
          for name in summary["order"]}
    for name, values in f1.items():
        x = np.arange(len(labels)) + dodge(summary["order"], name)
        plot_curve(ax, x, np.array([np.nan if v is None else v for v in values], float), name, style[name],
                   summary["order"])
    if all(v is None for values in f1.values() for v in values):
        why = "no reference beats in any horizon" if summary["detector"]["annotated_records"] else \
            "the records have no beat annotations"
        ax.text(0.5, 0.5, f"{why}: F1 is undefined", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(np.arange(len(labels)), labels)
    # below 0 too: the forecasters finding no beats (zero, mean, persistence) lay half hidden on the bottom spine
    ax.set(xlabel="horizon", ylabel="F1 (±100 ms)", title="beat detection F1 per horizon second", ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)


def plot_gallery(name: str, f: ForecasterBase, s: Scores, w: Windows, context: int, fs: int, num_samples: int,
                 seed: int, path: Path, picks: list[tuple[str, int, int]], zero_mse: np.ndarray,
                 ranked_by: str | None = None, where: str = "") -> None:
    """Context, truth, point forecast and 50% / 80% bands of both leads for the windows `picks` (gallery_picks: the
    same in every gallery, so they compare), forecast with the evaluation's seeds. Titles give each window's MSE and
    its share of the zero forecast's (`zero_mse`); the row titles and the figure's say whose shares ranked the picks
    (`ranked_by`: another forecaster's need not follow them; a bare 'lowest-error record' read as this one's) and
    how many paths each window drew (the bands' width depends on it); `where` (windows_source) which windows these
    are, as error_curves.png says it: the galleries of a validation and a test run looked alike."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(picks), 2, figsize=(13, 3.3 * len(picks) + 0.5), squeeze=False)
    t = (np.arange(w.signals.shape[1]) - context) / fs
    whose = f"{ranked_by}'s " if ranked_by and len(picks) > 1 else ""     # the ranks are not this gallery's own
    for row, (label, r, i) in enumerate(picks):
        with warnings.catch_warnings():      # the window's forecast of the evaluation again: its warnings were said
            warnings.simplefilter("ignore")
            samples = predict_windows(f, name, w, np.array([i]), context, num_samples, seed, fs)[0]
        truth = np.asarray(w.signals[i], np.float32)
        share = 100 * s.window_mse[i] / zero_mse[i]
        for lead in range(2):
            lead_name = f"lead {lead + 1}" + (f": {w.leads[r][lead]}" if lead < len(w.leads[r]) else "")
            plot_lead(axes[row, lead], t, context, truth[:, lead], samples[:, :, lead],
                      f"{whose}{label} {w.records[r]}, {lead_name}, "
                      f"forecast from {(w.start[i] + context) / fs:.0f} s"
                      f"\n{name}'s window MSE (both leads) {s.window_mse[i]:.3g} mV², {share:.0f}% of the zero "
                      f"forecast's")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=LEGEND_FONTSIZE,
               frameon=False)
    said = [f"{len(samples)} sampled paths" if len(samples) > 1 else "1 forecast path"]
    if whose:
        said.append(f"records ranked by {ranked_by}'s MSE over the zero forecast's")
    fig.suptitle(f"{name}: forecast examples{', ' + where if where else ''} ({'; '.join(said)})", fontsize=11)
    height = fig.get_figheight()        # margins in inches: the legend below, the titles above, for any rows
    fig.subplots_adjust(left=0.06, right=0.99, bottom=1.13 / height, top=1 - 1.04 / height, hspace=0.7,
                        wspace=0.16)
    paths.atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def zero_forecast_mse(w: Windows, context: int) -> np.ndarray:
    """[N] each window's horizon power, the zero forecast's MSE (floored above 0, as a divisor)."""
    return np.maximum(np.mean(np.asarray(w.signals[:, context:], np.float64) ** 2, axis=(1, 2)), 1e-12)


def gallery_picks(s: Scores, w: Windows, zero_mse: np.ndarray) -> list[tuple[str, int, int]]:
    """(label, record, window) of the records where the forecaster `s` does best, middling and worst, by their
    mean window MSE over the zero forecast's (`zero_mse`; raw MSE would rank the records by amplitude): from
    each, the window with the record's median such ratio. Each record once: with one or two records the same
    window drawn thrice under three ranks would show a spread there is not."""
    ratio = s.window_mse / zero_mse
    per_rec = {r: np.nanmean(ratio[w.record == r]) for r in np.unique(w.record)}
    order = sorted(per_rec, key=per_rec.get)
    ranked = [("lowest-error record", order[0]), ("median record", order[len(order) // 2]),
              ("highest-error record", order[-1])]
    if len(order) < 3:
        ranked = [("the only record", order[0])] if len(order) == 1 else [ranked[0], ranked[2]]
    picks = []
    for label, r in ranked:
        idx = np.flatnonzero(w.record == r)
        picks.append((label, r, int(idx[np.argsort(ratio[idx])[len(idx) // 2]])))
    return picks


def plot_lead(ax: Axes, t: np.ndarray, context: int, truth: np.ndarray, samples: np.ndarray, title: str) -> None:
    """One lead of a window on the matplotlib Axes `ax`: context and truth [T] and the forecast samples [S, H],
    drawn as forecast.py and the trainers draw them (train_results.forecast_panel: the truth thick over the 50% and
    80% bands and one sample when sampled, the forecast thin over the truth)."""
    forecast_panel(ax, t, truth, samples, context)
    ax.set_xlabel("time from forecast start (s)")
    ax.set_title(title, fontsize=9)


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["pretrained", ALL_BASELINES],
                   help=f"checkpoint paths, pretrained or pretrained_sde (the shipped "
                   f"{' and '.join(str(SHIPPED[k].relative_to(ROOT)) for k in SHIPPED_SPECS.values())}), your own "
                   f"forecaster as FILE.py:NAME or module:NAME (NAME(fs) must have predict; NAME=CHECKPOINT "
                   f"passes checkpoint=CHECKPOINT too), and/or "
                   f"baselines: {', '.join(BASELINES)}, {ALL_BASELINES} (= all); default: pretrained {ALL_BASELINES}")
    p.add_argument("--split", choices=("validation", "test"), help="prepared split (default test)")
    p.add_argument("--wfdb-dir", default=None, type=paths.given_path,
                   help="evaluate every record of this WFDB folder instead")
    p.add_argument("--annotator", default="atr", help="with --wfdb-dir: the annotation file with the reference "
                   "beats (default atr: NNN.atr; e.g. qrs)")
    add_leads_flag(p, "with --wfdb-dir: the channels to score as lead 1 and lead 2, e.g. II V5 (names as in the "
                   "headers; 'Lead II' or ii match II); a record without them is skipped", "--config's data are")
    p.add_argument("--records", nargs="+", default=None, help="only these records")
    p.add_argument("--samples", type=int, default=100,
                   help="samples per window for probabilistic forecasters (default 100)")
    p.add_argument("--seed", type=int, default=0, help="of the samples and the bootstrap (default 0)")
    p.add_argument("--config", default=None, type=paths.given_path, help="config JSON (default: config_vqvae.json)")
    p.add_argument("--prepared", default=None, type=paths.given_path,
                   help="prepared folder (default: $ECG_PREPARED_DIR or data/prepared)")
    p.add_argument("--results", default=None, type=paths.given_path,
                   help="results folder (default: $ECG_RESULTS_DIR or results)")
    p.add_argument("--max-windows-per-record", type=int, default=None,
                   help="evenly spaced windows per record (default: all)")
    p.add_argument("--horizon-beats", choices=list(HORIZON_BEATS), default=None,
                   help="only windows whose horizon's reference beats are all normal, or hold an ectopic "
                   "(supraventricular, ventricular or fusion), supraventricular or ventricular beat (AAMI classes "
                   "of the annotations), before --max-windows-per-record (default: every window)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available); a GPU draws other samples "
                   "than the CPU, so reproduce CPU figures with --device cpu")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad flag values, and say which flags --wfdb-dir makes pointless; --split becomes test when not given
    (its default is None so that one given with --wfdb-dir can be noted, as --prepared is)."""
    from prepare_mitbih import asked_leads
    for flag in ("samples", "max_windows_per_record"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.annotator != "atr" and not args.wfdb_dir:
        raise UserError("--annotator reads records of --wfdb-dir; a prepared split keeps the beats it was prepared "
                        "with (prepare_mitbih.py --annotator)")
    if args.leads and not args.wfdb_dir:
        raise UserError(f"--leads {' '.join(args.leads)} chooses the channels read from records of --wfdb-dir; a "
                        f"prepared split holds the leads it was prepared with (its meta.json names each record's)")
    asked_leads(args.leads)
    for flag in ("split", "prepared"):
        if args.wfdb_dir and getattr(args, flag):
            running.note(f"--{flag} {getattr(args, flag)} is ignored: it chooses prepared tensors, and --wfdb-dir "
                         f"scores every record of {args.wfdb_dir} (--records chooses some)")
    args.split = args.split or "test"


def build_forecasters(specs: list[str], cfg: Config, device: str | None, args: argparse.Namespace | None = None
                      ) -> tuple[dict[str, ForecasterBase], frozenset[str], list[str]]:
    """Every --model by its report label, which of them are baselines, and a warning for each model trained on
    data prepared otherwise (`args`: --leads and --wfdb-dir, which choose the leads read)."""
    leads, wfdb_dir = getattr(args, "leads", None), getattr(args, "wfdb_dir", None)
    forecasters: dict[str, ForecasterBase] = {}
    baselines, cautions = set(), []
    for spec in expand_models(specs):
        f = make_forecaster(spec, cfg.data.samples_per_second, device)
        label = unique_label(spec if spec in BASELINES else getattr(f, "name", Path(spec).stem), spec, forecasters)
        forecasters[label] = f
        if spec in BASELINES:
            baselines.add(label)
        elif why := preparation_mismatch(f, cfg, leads):
            cautions.append(f"{label} ({spec}) was trained on data prepared differently (its config's vs --config's): "
                            f"{why}{lead_hint(f, cfg) if wfdb_dir and not leads else ''}")
    return forecasters, frozenset(baselines), cautions


def seen_warnings(forecasters: dict[str, ForecasterBase], scored: list[str], args: argparse.Namespace) -> list[str]:
    """A warning for each model scored on patients it trained on, or chose its checkpoint on (unless the
    validation split is what was asked for)."""
    splits = {"train": "was trained on"}
    if args.wfdb_dir or args.split != "validation":
        splits["validation"] = "chose its checkpoint on"
    return [f"{label} {did} records {', '.join(seen)}, evaluated here too: if these are the same recordings, their "
            f"scores are no test"
            for label, f in forecasters.items() for split, did in splits.items()
            if (seen := seen_patients(f, scored, split))]       # baselines carry no config, so never


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    t0, started = time.time(), {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "git commit": paths.git_commit()}
    check_args(args)
    device = paths.check_device(args.device)
    cfg = load_config(args.config)
    fs, context = cfg.data.samples_per_second, cfg.data.window_samples
    if cfg.data.total_samples <= context:
        raise UserError("config data.forecast_predictions is 0: there is no horizon to forecast")
    forecasters, baselines, cautions = build_forecasters(args.model, cfg, device, args)
    started.update(checkpoint_digests(args.model, forecasters))     # the weights loaded
    if code := own_code(expand_models(args.model)):
        started["own forecasters"] = code
    w = load_windows(args, cfg)     # first: prepared unlike --config is the error, not the models' warnings of it
    scored = [w.records[i] for i in np.unique(w.record)]
    seen = seen_warnings(forecasters, scored, args) + [said for said in [rhythmless_caution(w, context, fs)] if said]
    print_warnings(cautions + seen)
    cautions += seen
    results = paths.check_writable(paths.location("results", args.results))     # before the work, not after
    key = partial_key(forecasters, args.model, started, w, cfg, args.samples, args.seed)
    partial = Partial(partial_file(results, key), key)
    print(f"evaluating {', '.join(forecasters)} on {running.counted(len(scored), 'record')}, "
          f"{running.counted(len(w.record), 'window')}")
    scores, truth_sums = evaluate(forecasters, w, context, fs, args.samples, args.seed, partial=partial)
    # made now, its files renamed a run folder once whole: a failed or killed evaluation leaves no folder
    staged = paths.staging_folder(paths.location("results", args.results))
    try:
        summary = summarize(scores, truth_sums, w, fs, w.signals.shape[1] - context, seed=args.seed,
                            baselines=baselines)
        if misfit := misfit_caution(summary["detector"]):
            running.warn(misfit)
            cautions.append(misfit)
        plot_results(staged, forecasters, scores, summary, w, cfg, args, baselines)
        running.raise_if_signalled()        # one swallowed while the last gallery was drawn: not a finished run
        wall = time.time() - t0
        header = report_header(args, argv, cfg, w, forecasters, wall, started)
        if cautions:
            header["warnings"] = "; ".join(cautions)
        if partial.resumed:
            header["resumed"] = (f"went on from an interrupted run's {partial.resumed} of {len(w.record)} windows; "
                                 f"the wall time is this part's")
        write_results(staged, header, cfg, summary, w, args.samples)
        run = paths.publish_run_dir(staged, "evaluate", args.results)
    except BaseException as e:      # Ctrl-C or an error in the galleries' forecasts or a write: plots without scores
        shutil.rmtree(staged, ignore_errors=True)
        if not isinstance(e, (KeyboardInterrupt, Exception)):
            raise
        raise_kept(e, partial, len(w.record))
    partial.path.unlink(missing_ok=True)
    note_other_partials(results)
    for n, why in w.skipped:
        print(f"skipped {n}: {why}")
    print(f"done in {wall:.1f} s -> {run / 'report.md'}")
    return run


def rhythmless_caution(w: Windows, context: int, fs: int) -> str | None:
    """The warning naming the records whose windows have a context of fewer than two R peaks (a heart rate under
    40 bpm, a pause): the beat drafts have no RR interval there and repeat the context's last autocorrelation
    period, so the shipped models and the seasonal and template baselines forecast no beats, which their scores
    showed without a word of why (MIT-BIH's DS2 has 56 such windows in 6,900, most of them 232's and 231's)."""
    from drafts import context_rhythm
    peaks, _, _ = context_rhythm(np.asarray(w.signals[:, :context]), fs)
    few = np.array([len(p) < 2 for p in peaks], bool)
    if not few.any():
        return None
    records, counts = np.unique(w.record[few], return_counts=True)
    named = ", ".join(f"{w.records[r]} ({n})" for r, n in sorted(zip(records, counts), key=lambda rn: -rn[1])[:5])
    n = int(few.sum())
    more = ", ..." if len(records) > 5 else ""
    return (f"{n} of {running.counted(len(few), 'window')} {'has' if n == 1 else 'have'} a context of fewer than two "
            f"R peaks (a heart rate under {slowest_bpm(context / fs)} bpm, a pause), in {named}{more}: the beat "
            f"drafts of the shipped models and of the seasonal and template baselines lay no beats there")


def print_warnings(cautions: list[str]) -> None:
    """Each caution on stderr as a warning line, before the scoring: they are in report.md's header too."""
    for warning in cautions:
        running.warn(warning)


def load_windows(args: argparse.Namespace, cfg: Config) -> Windows:
    """The windows to score: of --wfdb-dir or the prepared --split, only --records, only --horizon-beats, at most
    --max-windows-per-record of each."""
    if args.wfdb_dir:       # --horizon-beats picks among all windows, and only then keeps some
        most = None if args.horizon_beats else args.max_windows_per_record
        w = load_wfdb(args.wfdb_dir, cfg, args.records, annotator=args.annotator, per_record=most, leads=args.leads)
    else:
        w = limit_windows(load_prepared(args.split, cfg, args.prepared), args.records, None)
    if args.horizon_beats:
        w = select_horizon_beats(w, args.horizon_beats, cfg.data.window_samples)
    w = limit_windows(w, None, args.max_windows_per_record)
    if len(w.record) == 0:
        raise UserError(f"no windows to evaluate in {w.source['path']}")
    return w


def plot_results(run: Path, forecasters: dict[str, ForecasterBase], scores: dict[str, Scores], summary: dict,
                 w: Windows, cfg: Config, args: argparse.Namespace, baselines: frozenset[str] = frozenset()) -> None:
    """error_curves.png, and each forecaster's gallery_<name>.png forecast with the evaluation's seeds."""
    fs, context = cfg.data.samples_per_second, cfg.data.window_samples
    plot_error_curves(scores, summary, fs, run / "error_curves.png", baselines,
                      curves_title(w, sampled_paths(summary, args.samples), args.horizon_beats))
    paths.atomic_write_text(error_curves_csv(scores, summary["order"], fs), run / "error_curves.csv")
    reference = gallery_reference(summary, scores, baselines)
    zero_mse = zero_forecast_mse(w, context)
    picks = gallery_picks(scores[reference], w, zero_mse)      # the same windows in every gallery
    for name, f in forecasters.items():
        running.raise_if_signalled()    # a Ctrl-C or SIGTERM Python swallowed in matplotlib's finalizers stops it
        plot_gallery(name, f, scores[name], w, context, fs, args.samples, args.seed,
                     run / f"gallery_{file_name(name)}.png", picks, zero_mse, ranked_by=reference,
                     where=windows_source(w))


def gallery_reference(summary: dict, scores: dict[str, Scores], baselines: frozenset[str]) -> str:
    """Whose MSE over the zero forecast's ranks the galleries' records: the best baseline's, else the first
    forecaster's. Never the zero forecast's own, 100% in every window, unless it is all there is: as the best
    baseline of a small run (zero persistence) its 'lowest-error' and 'highest-error records' were float noise."""
    others = [n for n in scores if n != "zero"]
    return best_baseline(summary["forecasters"], baselines - {"zero"}, "crps") or (others or list(scores))[0]


def write_results(run: Path, header: dict, cfg: Config, summary: dict, w: Windows, samples: int | None = None
                  ) -> None:
    """metrics.json (everything, with the config and the records), metrics.csv and report.md (`samples`: per
    window, what the cover columns are read against)."""
    result = {"header": header, "config": cfg.to_dict(), **summary, "record_info": record_info(w),
              "skipped": [{"record": n, "reason": why} for n, why in w.skipped]}
    paths.atomic_write_json(result, run / "metrics.json")
    paths.atomic_write_text(csv_text(summary), run / "metrics.csv")
    paths.atomic_write_text(markdown_report(summary, header, w, samples), run / "report.md")


def record_info(w: Windows) -> list[dict]:
    """Each scored record's leads, input rate, annotations and window count."""
    return [{"record": n, "leads": w.leads[i], "fs_in": _num(w.fs_in[i]), "annotated": bool(w.annotated[i]),
             "windows": int(np.sum(w.record == i))}
            for i, n in enumerate(w.records) if np.any(w.record == i)]


def report_header(args: argparse.Namespace, argv: list[str] | None, cfg: Config, w: Windows,
                  forecasters: dict[str, ForecasterBase], wall: float, started: dict[str, str]) -> dict:
    """What the report's first table says about the run: command, commit, data, settings, device, time. The date,
    commit, checkpoints and own forecasters' code are the run's start (`started`): the code that ran, even if the
    tree changed during the run."""
    fs, context, src = cfg.data.samples_per_second, cfg.data.window_samples, w.source
    horizon, beats = w.signals.shape[1] - context, args.horizon_beats
    return {
        "command": paths.script_command("evaluate.py", argv, ("prepared", "results")),
        **started,
        "config": f"{args.config or 'config_vqvae.json'} (data hash {data_hash(cfg.data)})",
        # the tensors' own data hash: with record lists of one's own it is not the config's above
        "data": f"{src['kind']} {src['split']}: {paths.shown(src['path'])} (data hash {src['data_hash']}, "
                f"input hash {src['input_hash']}" + (f", --leads {' '.join(src['leads'])}" if src.get("leads") else "")
                + (f", beats from .{src['annotator']})" if src.get("annotator", "atr") != "atr" else ")"),
        "records / windows": f"{len(np.unique(w.record))} / {len(w.record)}"
                             + (f" ({running.counted(len(w.skipped), 'record')} skipped)" if w.skipped else "")
                             + (f", {beats_asked(beats)}" if beats else ""),
        "windows": windows_chosen(cfg, args.max_windows_per_record, beats),
        "context / horizon": f"{context / fs:g} s / {horizon / fs:g} s at {fs} Hz "
                             f"(band-pass {cfg.data.filter_band[0]:g}-{cfg.data.filter_band[1]:g} Hz)",
        "samples / seed": f"{args.samples} / {args.seed}",
        "device": ", ".join(sorted({str(f.device) for f in forecasters.values() if hasattr(f, "device")})) or "cpu",
        "software": f"{software()}; {torch_threads()} torch CPU threads",   # CPU sums may differ in their last bits
        "bootstrap": f"{N_BOOT} resamples of records, seed {args.seed}, 95 % percentile intervals",
        "wall time": f"{wall:.1f} s",
    }


def software() -> str:
    """The versions a run's numbers depend on: a model's samples are torch's random streams and kernels, which a
    commit does not pin (the trainers record torch's version too, training.run_record)."""
    import scipy
    import torch

    return (f"python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}")


def windows_chosen(cfg: Config, per_record: int | None, horizon_beats: str | None = None) -> str:
    """How the scored windows were cut from each record (prepare_mitbih.window_starts), in the report's words: which
    stretches of a record were scored is otherwise told by the command alone. --horizon-beats picks before
    --max-windows-per-record, which then spaces its windows over the ones picked, not over the record."""
    picked = f"the windows --horizon-beats {horizon_beats} keeps" if horizon_beats else ""
    steps = [f"{spaced(cfg.data.signals_per_patient)} (data.signals_per_patient)" if cfg.data.signals_per_patient
             else "", picked,
             f"{spaced(per_record, ' among those' if picked else '')} (--max-windows-per-record)" if per_record else ""]
    return (f"{cfg.data.total_samples / cfg.data.samples_per_second:g} s each, context then horizon, side by side "
            f"without overlap, none across a gap; " + ("; then ".join(s for s in steps if s) or "all of each record"))


def spaced(k: int, among: str = "") -> str:
    """k windows kept of a record's (prepare_mitbih.evenly_spaced) in words: one is its first alone, which 'its first
    and last among them' would misstate."""
    if k == 1:
        return f"the first per record{among}"
    return f"{k} evenly spaced per record{among}, its first and last among them"


def beats_asked(kind: str) -> str:
    """--horizon-beats in the report's words."""
    if kind == "normal":
        return "only windows whose horizon's beats are all normal (AAMI class N; --horizon-beats normal)"
    return (f"only windows whose horizon holds a beat of AAMI class {' or '.join(HORIZON_BEATS[kind])} "
            f"(--horizon-beats {kind})")


if __name__ == "__main__":
    running.run_main(main)
