"""Read MIT-BIH (or any two-lead WFDB database), filter, resample, cut windows, split by patient.

    python3 prepare_mitbih.py [--data-dir DIR] [--out DIR] [--config config_vqvae.json]

Writes train.pt / validation.pt / test.pt (signals in mV, window starts, reference beats) and
meta.json into the prepared folder. Every write is atomic. From Python, main(["--records", "100", ...]) takes
the flags as a list and returns meta.json's dict (None with --fetch-only).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Iterable, Sequence

import numpy as np
from tqdm import tqdm
# torch, scipy.signal and wfdb are imported in the functions that use them: a bad flag, config or data folder
# then fails in about a second instead of after seconds of loading them, and a script that reads prepared tensors
# or a checkpoint (evaluate.py --split, Forecaster.from_pretrained) never waits 0.35 s for wfdb and pandas.

import paths
import running
from download import DOWNLOAD_PART, download_mitbih
from hyper_params import (LEAD_KEYS, PREPARATION, AugmentConfig, Config, DataConfig, build_section, data_hash, lead_key,
                          load_config)
from paths import UserError

if TYPE_CHECKING:
    import torch
    import wfdb

DS1 = ["101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
       "203", "205", "207", "208", "209", "215", "220", "223", "230"]
DS2 = ["100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213",
       "214", "219", "221", "222", "228", "231", "232", "233", "234"]
PACED = ["102", "104", "107", "217"]
SAME_PATIENT = [("201", "202")]
MITBIH_FS = 360                   # its records' rate: a database at another one is not MIT-BIH
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")
# WFDB's labels: the beats, and the others (rhythm, noise, waves, comments), no reason to say so. A label outside
# them (a database's own, wrann's custom_labels) is named, since the beats it marks are no reference beats.
WFDB_SYMBOLS = BEAT_SYMBOLS | set('~|sT*D"=p^t+u![]@x()')
SPLITS = ("train", "validation", "test")
PREPARING_PART = ".preparing-"    # the hidden folder in --out a preparation writes its files into (paths.owned_folder)
# The split of null data.test_records / validation_records (config_split): DS2 and 201 (202's patient) test, every
# 7th remaining DS1 record from the 4th validation, the rest train.
DEFAULT_TEST = DS2 + ["201"]
DEFAULT_VALIDATION = [r for i, r in enumerate(r for r in DS1 if r != "201") if i % 7 == 3]

# Lead 1 when the record has no lead named cfg.first_lead: the first of these groups found, in this
# order (lead II is the usual rhythm lead and what MIT-BIH's MLII approximates). Names are compared
# case-insensitively, ignoring all but letters and digits and a leading 'LEAD' or 'ECG' ("Lead II", "ecg-ii",
# "ml2", BIDMC's "II," all count as lead II; so do "DII" and "D2", the D(erivation) names of French, Italian,
# Spanish and Portuguese ECGs). With none of them, lead 1 is the first ECG channel other than V1 (and a note
# says so).
# Lead 2 is the lead cfg.second_lead names, when set and the record has it (a note names a record without it); else
# V1 when the record has it (MIT-BIH's usual second lead, so 12-lead records feed the models alike), else the chest
# lead nearest it (V2, V3, ... V9, then an unnumbered V as MIMIC's and BIDMC's; a modified chest lead, MCL1 or CM5, as
# its own: MIT-BIH's other second leads are V2, V4 and V5, so the models never saw a limb lead there), else the first
# other ECG channel.
# A lead off throughout the record (off_throughout) is passed over for the next in these orders while two leads are
# left (a note says so), else the record is refused.
LEAD_PREFERENCE = (
    ("MLII", "II", "ML2", "DII", "D2"),       # lead II / modified lead II
    ("MLI", "I", "ML1", "DI", "D1"),          # lead I
    ("MLIII", "III", "ML3", "DIII", "D3"),    # lead III
    ("AVF",), ("AVL",), ("AVR",),
)
# Channel names of other signals a record may hold in volts (sleep and ICU records): never an ECG lead.
NOT_ECG = ("EEG", "EOG", "EMG", "RESP", "PLETH", "PPG", "SPO2", "SAO2", "ABP", "ART", "PAP", "CVP", "ICP",
           "CO2", "FLOW", "AIRFLOW", "THOR", "ABD", "CHIN", "LEG", "SNORE", "PULSE", "TEMP")
UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3}


@dataclass
class Record:
    name: str
    signal: np.ndarray        # [N, 2] float32 mV at the target rate, lead 1 first
    leads: list[str]
    beats: np.ndarray         # reference beat positions (samples at the target rate)
    symbols: list[str]
    fs_in: float
    has_annotations: bool
    invalid_s: float = 0.0    # seconds of NaN/invalid or flat samples in the source, gaps (NaN) in `signal`
    offset: int = 0           # read_record(span=...): the record's samples before signal[0] (target rate)...
    length: int = 0           # ...and all of its samples, of which signal holds [offset, offset + len(signal))


def config_split(names: list[str], data: DataConfig, available: list[str] | None = None,
                 folder: str = "the data folder") -> dict[str, list[str]]:
    """The split asked for by data.test_records / data.validation_records, each null meaning its default.

    A record listed explicitly wins over the other list's default. `available` (all records in the data
    folder) catches typos: an explicitly listed record that is not there is an error, not an empty split.
    """
    for key in ("test_records", "validation_records"):
        listed = getattr(data, key)
        unknown = [r for r in listed or [] if available is not None and r not in available]
        if unknown:
            raise UserError(f"config key 'data.{key}' names records {unknown} that are not in "
                            f"{folder}{records_there(unknown, available or [])}")
    test, validation = data.test_records, data.validation_records
    if test is None:
        test = [r for r in DEFAULT_TEST if r not in (validation or [])]
    if validation is None:
        validation = [r for r in DEFAULT_VALIDATION if r not in test]
    return assign_splits(names, list(test), list(validation))


def patients_seen(scored: list[str], listed: Iterable[str]) -> list[str]:
    """The records among `scored` that a model saw (`listed`: its checkpoint's training or validation records),
    by name or as the other record of one MIT-BIH patient (201 and 202): scored, they are no test of it."""
    listed = set(listed)
    partner = {a: b for pair in SAME_PATIENT for a, b in (pair, pair[::-1])}
    return [r if r in listed else f"{r} (the patient of {partner[r]})"
            for r in scored if r in listed or partner.get(r) in listed]


def assign_splits(names: list[str], test: list[str], validation: list[str]) -> dict[str, list[str]]:
    """Records in neither test nor validation train; patients are never shared between splits."""
    overlap = set(test) & set(validation)
    if overlap:
        raise UserError(f"records {sorted(overlap)} are in both test_records and validation_records")
    split = {"test": [r for r in names if r in test],
             "validation": [r for r in names if r in validation]}
    split["train"] = [r for r in names if r not in test and r not in validation]
    where = {r: s for s, rs in split.items() for r in rs}
    for a, b in SAME_PATIENT:
        if a in where and b in where and where[a] != where[b]:
            raise UserError(f"records {a} and {b} are the same patient (in MIT-BIH) but would be split between "
                            f"{where[a]} and {where[b]}; put them in the same split")
    return split


def find_records(data_dir: Path, download: bool = True, flag: str = "--data-dir / MITBIH_DIR") -> list[str]:
    """Record names in data_dir; download MIT-BIH there first when the folder is missing or empty (hidden files
    aside) and download is allowed (never into a folder of the user's files: records in subfolders, say)."""
    check_data_folder(data_dir, flag)
    try:
        names = header_stems(data_dir)
        # hidden files are no one's records: a killed download's part, or a .DS_Store or .gitkeep that refused the
        # download
        others = not names and os.path.isdir(data_dir) and any(not p.name.startswith(".") for p in data_dir.iterdir())
    except OSError as e:        # a folder that may not be read or searched
        raise unreadable(data_dir, e, flag) from e
    if names:
        return names
    hint = (f"put the MIT-BIH WFDB files (NNN.hea, NNN.dat, NNN.atr) in {data_dir}, or point "
            f"{flag} at a folder that has them")
    if others:
        raise UserError(f"no WFDB records (*.hea) directly in {data_dir}, which holds other files (records in "
                        f"subfolders?): point {flag} at the folder with the .hea files")
    if not download:
        if not os.path.exists(data_dir):
            raise UserError(f"data folder {data_dir} does not exist: {hint}")
        raise UserError(f"no WFDB records (*.hea) in {data_dir}: {hint}")
    return download_mitbih(data_dir, hint)


def check_data_folder(data_dir: Path, flag: str) -> None:
    """A data folder that is missing (to download into) or a folder; a file, a broken link or a record's path
    (DIR/NAME) is an error, never a download target."""
    # os.path's tests below (see paths), and os.stat's error for a folder that cannot be looked at named here
    try:
        os.stat(data_dir)
    except (FileNotFoundError, NotADirectoryError):
        pass        # not there: a link to nowhere is named below, a missing folder is downloaded into
    except OSError as e:
        raise unreadable(data_dir, e, flag) from e
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"data folder {data_dir} is not a directory: point {flag} at the folder with the WFDB "
                        f"files (NNN.hea, NNN.dat, NNN.atr)")
    if link := paths.broken_link(data_dir):         # a link to shared data not there: no download makes it
        where = "is" if link == data_dir else f"is in {link}, which is"
        raise UserError(f"data folder {data_dir} {where} a link to {link.readlink()}, which does not exist: make or "
                        f"mount that folder, or point {flag} at the folder with the WFDB files")
    if not os.path.exists(data_dir) and os.path.isfile(f"{data_dir}.hea"):     # DIR/NAME: never a download target
        raise UserError(f"{data_dir} is a record, not a folder: pass {flag.split()[0]} {data_dir.parent} "
                        f"--records {data_dir.name}")


def unreadable(data_dir: Path, e: OSError, flag: str) -> UserError:
    """find_records' error for a data folder the system will not let it look at or into."""
    return UserError(f"cannot look in the data folder {data_dir}: {e.strerror or e}: point {flag} at a folder that "
                     f"can be read, with the WFDB files (NNN.hea, NNN.dat, NNN.atr)")


def header_stems(data_dir: Path) -> list[str]:
    """The records of a folder: those its RECORDS file lists (PhysioNet's index; a stray copy of a header is no
    patient), else its headers, less the segments and layouts of multi-segment records (read through their
    master header, they would count one recording twice)."""
    if listed := records_file(data_dir):
        return listed
    stems = sorted(p.stem for p in data_dir.glob("*.hea")) if data_dir.is_dir() else []
    parts = {seg for name in stems for seg in segment_names(data_dir / f"{name}.hea")}
    return [n for n in stems if n not in parts]


def records_file(data_dir: Path) -> list[str]:
    """The records a folder's RECORDS file lists, in its order ([] without one); each must have its .hea."""
    index = data_dir / "RECORDS"
    if not index.is_file():
        return []
    try:
        names = [ln.strip() for ln in index.read_text(errors="replace").splitlines()]
    except OSError as e:
        raise UserError(f"cannot read {index}: {e.strerror or e}") from e
    names = list(dict.fromkeys(r for n in names if n and not n.startswith("#") for r in listed(data_dir, n)))
    missing = [n for n in names if not (data_dir / f"{n}.hea").is_file()]
    # download.move_in's index, and the part a kill left holding the headers not yet moved: a part alone is no such
    # evidence (a download killed before its move left one, and the user's own RECORDS then lacks a record)
    parts = [p for p in data_dir.glob(f"{DOWNLOAD_PART}*") if all((p / f"{n}.hea").is_file() for n in missing)]
    if missing and parts:
        raise UserError(f"{data_dir} holds a download of MIT-BIH killed while its files were moved in ({index} lists "
                        f"{running.counted(len(missing), 'record')} with no .hea, still in {parts[0].name}): empty "
                        f"the folder and run again to download it anew")
    if missing:
        raise UserError(f"{index} lists {running.counted(len(missing), 'record')} with no .hea in {data_dir}: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; add their files or take them "
                        f"out of RECORDS (without RECORDS, every *.hea is a record)")
    return names


def listed(data_dir: Path, name: str) -> list[str]:
    """A RECORDS line's records: `name`, or for a folder ('p00/', as the RECORDS of PhysioNet's MIMIC databases list
    theirs) the records of that folder (its own RECORDS, else its headers), each as FOLDER/NAME. Only a folder below
    (not '.' or '..': the same RECORDS again, without end), and one holding records: a record whose .hea is lost
    beside an empty folder of its name stays `name`, refused by records_file, not left out without a word."""
    folder = name.rstrip("/")
    below = bool(Path(folder).parts) and ".." not in Path(folder).parts
    if below and (name.endswith("/") or not (data_dir / f"{name}.hea").is_file()) and (data_dir / folder).is_dir():
        return [f"{folder}/{n}" for n in header_stems(data_dir / folder)] or [name]
    return [name]


def segment_names(header: Path) -> list[str]:
    """The segments (and layout) a multi-segment master header lists, [] for any other header."""
    lines = header_lines(header)
    if not lines or "/" not in lines[0][0]:
        return []
    return [ln[0] for ln in lines[1:] if ln[0] != "~"]


def header_lines(header: Path) -> list[list[str]]:
    """The fields of a header's lines, comments left out ([] when it can't be read). A line that is not UTF-8 is
    read as Latin-1 (Windows' cp1252 alike there): its 'µV' (byte 0xB5) would be a replacement character, not
    microvolts. Line by line: a Latin-1 comment appended to a UTF-8 header leaves its 'µV' UTF-8's."""
    try:
        raw = header.read_bytes()
    except OSError:
        return []
    text = [_decoded(ln) for ln in raw.splitlines()]
    return [ln.split() for ln in text if ln.strip() and not ln.lstrip().startswith("#")]


def _decoded(line: bytes) -> str:
    """A header line as UTF-8, else as Latin-1."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def resample_ratio(fs_in: float, fs_out: int, where: str) -> Fraction:
    """fs_out / fs_in as an exact small fraction, or a clear error when the rates do not divide evenly."""
    if isinstance(fs_in, bool) or not isinstance(fs_in, numbers.Real):       # '250' met numpy's TypeError
        raise UserError(f"{where}: sampling rate {fs_in!r} is not a number of Hz (a {type(fs_in).__name__})")
    fs_in = fs_in.item() if isinstance(fs_in, np.generic) else fs_in      # numpy's float32 is no Fraction's
    if not np.isfinite(fs_in) or fs_in <= 0:
        raise UserError(f"{where}: sampling rate {fs_in!r} Hz is not a positive number")
    ratio = _even_ratio(fs_in, fs_out)
    if ratio is None:
        near = [f for f in sorted(range(max(1, math.floor(fs_in) - 5), math.ceil(fs_in) + 6),
                                  key=lambda f: abs(f - fs_in)) if _even_ratio(f, fs_out)][:2]
        near = near or [fs_out * max(1, round(fs_in / fs_out))]      # a multiple of fs_out always does
        raise UserError(f"{where}: sampling rate {fs_in} Hz does not resample evenly to {fs_out} Hz: resample the "
                        f"record to a rate that does first, such as {' or '.join(map(str, near))} Hz")
    return ratio


def _even_ratio(fs_in: float, fs_out: int) -> Fraction | None:
    """fs_out / fs_in as a fraction small enough to resample by (resample_poly), None when there is none."""
    rate = Fraction(fs_in).limit_denominator(1000)      # 360.0 -> 360, 333.333... -> 1000/3
    ratio = Fraction(fs_out) / rate
    return ratio if abs(float(rate) - fs_in) <= 1e-6 and ratio.denominator <= 10000 else None


def mv_per_unit(unit: str | None) -> float | None:
    """Millivolts per unit of a channel in mV, uV or V (no units: mV); None for PLETH in NU, ABP in mmHg..."""
    return UNITS_TO_MV.get(str(unit or "mV").strip().lower())


def not_ecg(name: str) -> bool:
    """A channel named like an EEG, EOG, EMG or respiration signal (NOT_ECG): those come in uV or mV too, and
    one taken for a lead forecasts nonsense without a word."""
    return any(word.startswith(NOT_ECG) for word in re.findall(r"[A-Z0-9]+", str(name).upper()))


def ecg_channels(names: list[str], units: list[str | None], where: str) -> list[int]:
    """The channels in ECG units and not named as another signal (not_ecg), at least two of them, or one error
    naming the channels passed over."""
    ecg = [i for i, u in enumerate(units) if mv_per_unit(u) is not None and not not_ecg(names[i])]
    if len(ecg) < 2:
        others = [f"{names[i]} in '{units[i]}'" for i in range(len(names)) if i not in ecg]
        skipped = (f"; not ECG: {', '.join(others)} (a lead is not named {'/'.join(NOT_ECG[:5])}..., and if one of "
                   f"these is a lead, {where}.hea should give its units as mV, uV or V)" if others else "")
        has = f"{len(ecg)} ({', '.join(str(names[i]) for i in ecg)})" if ecg else "none"
        raise UserError(f"{where}: needs two leads, has {has}{skipped}")
    return ecg


def order_leads(names: list[str], first: str, where: str, units: list[str | None] | None = None,
                off: Collection[int] = (), second: str = "") -> list[int]:
    """Channel indices [lead 1, lead 2] among the channels in ECG units (ecg_channels), so that an ICU record's
    PLETH or ABP, or a sleep record's EEG, is passed over. Lead 1 is the channel named `first` (cfg.first_lead;
    exact name, else compared as in LEAD_PREFERENCE), else chosen as LEAD_PREFERENCE's comment says; lead 2 is the
    channel named `second` (cfg.second_lead, matched alike; "" or a record without it: none), else V1, else the chest
    lead nearest it (chest_rank), else the first other ECG channel. The channel named `second` is lead 2's alone:
    lead 1's preference (MLII before II) would take a lead 2 of II. The channels `off` (off_throughout) are passed
    over while two others are left: a 12-lead record whose V1 is off was refused though V2 to V6 were fine."""
    ecg = ecg_channels(names, list(units or [None] * len(names)), where)
    live = [i for i in ecg if i not in off]
    ecg = live if len(live) >= 2 else ecg
    keys = {i: lead_key(names[i]) for i in ecg}
    named = channels_named(names, second, ecg) if second else []
    if named:
        only_channel(named[0], ecg, keys, names, "lead 2", where)
    rest = [i for i in ecg if i not in named[:1]]
    choices = [channels_named(names, first, rest), *([i for i in rest if keys[i] in g] for g in LEAD_PREFERENCE)]
    lead1 = next((found[0] for found in choices if found), None)
    if lead1 is None:      # V1 is lead 2's (the models' second lead), so it leads only a record of V1 and nothing else
        lead1 = next((i for i in rest if chest_rank(keys[i]) != 1), rest[0])
        running.note(f"{where}: no channel is {first} or a limb lead ({', '.join(map(str, names))}); lead 1 is "
                     f"channel {lead1}, {names[lead1]}")
    else:
        only_channel(lead1, rest, keys, names, "lead 1", where)
    if named:
        return [lead1, named[0]]
    others = [j for j in ecg if j != lead1]
    lead2 = min(others, key=lambda j: chest_rank(keys[j]))      # the first of the nearest to V1
    if keys[lead2] == "V1":
        only_channel(lead2, others, keys, names, "lead 2", where)
    return [lead1, lead2]


def asked_leads(leads: Sequence[str] | None) -> None:
    """--leads LEAD1 LEAD2 (forecast.py, evaluate.py, vqvae_eval.py) checked before any record is read: two names of
    two leads (by lead_key), or none (None). Refused per record instead, the same lead twice would skip every record
    of evaluate.py's folder one by one."""
    if leads is None:
        return
    if len(leads) != 2 or not all(lead_key(name) for name in leads):
        raise UserError(f"--leads takes two channel names, lead 1 then lead 2, got {' '.join(map(repr, leads))}")
    if lead_key(leads[0]) == lead_key(leads[1]):
        raise UserError(f"--leads {leads[0]} {leads[1]} names lead {lead_key(leads[0])} twice: lead 1 and lead 2 "
                        f"are two channels; a record's two channels of one name are read without --leads, in its "
                        f"header's order (the first is lead 1)")


def named_leads(names: list[str], leads: Sequence[str], where: str, units: list[str | None]) -> list[int]:
    """Channel indices [lead 1, lead 2] of the two leads `leads` names (--leads), each matched as order_leads matches
    the config's (channels_named: 'Lead II', 'ii' -> II). A channel in units other than ECG's is refused as
    ecg_channels refuses it; one named like another signal (not_ecg) is taken, since it was asked for (an abdominal
    lead, 'Abdomen_1', reads as ABD)."""
    asked_leads(leads)         # two names, not one lead twice
    keys = {i: lead_key(name) for i, name in enumerate(names)}
    order = []
    for role, lead in zip(("lead 1", "lead 2"), leads):
        found = channels_named(names, lead, range(len(names)))
        if not found:
            raise UserError(f"{where}: no channel is {lead} (--leads' {role}); its channels are "
                            f"{', '.join(map(str, names))}")
        only_channel(found[0], found, keys, names, role, where)
        i = found[0]
        if mv_per_unit(units[i]) is None:
            raise UserError(f"{where}: {lead} (--leads' {role}) is channel {names[i]} in '{units[i]}', not ECG (if it "
                            f"is a lead, {where}.hea should give its units as mV, uV or V)")
        order.append(i)
    return order


def chest_rank(key: str) -> int:
    """Lead 2's preference of a lead by its lead_key: V1 (1), the chest leads after it (2 to 9), an unnumbered V
    (10), then any other lead (11); a Holter's modified chest leads (MCL1, MV2, CM5) rank as the lead they stand
    for. Lead 2 was the first other channel, so a 12-lead record without V1 (or with V1 off) fed the models lead I
    beside lead II, a limb lead where they learnt from chest leads only."""
    chest = re.fullmatch(r"(?:M?V|MCL|CM)([1-9]?)", key)
    return 11 if chest is None else int(chest[1] or 10)


def channels_named(names: list[str], lead: str, among: Iterable[int]) -> list[int]:
    """The channels `among` that are `lead`: of its exact name, else of its lead_key ('Lead II', 'ii' -> II). The one
    match of a lead named (data.first_lead, data.second_lead, --leads) and a record's channels, so that all agree."""
    among = list(among)
    return [i for i in among if names[i] == lead] or [i for i in among if lead_key(names[i]) == lead_key(lead)]


def only_channel(lead: int, among: list[int], keys: dict[int, str], names: list[str], role: str, where: str) -> None:
    """A lead chosen by its name must be the only channel `among` of that name: of two (a hand-edited or merged
    header; wfdb writes none), taking the first would go without a word, though it may be another recording of it."""
    twins = [j for j in among if keys[j] == keys[lead]]
    if len(twins) > 1:
        which = f"{', '.join(map(str, twins[:-1]))} and {twins[-1]} are {'both' if len(twins) == 2 else 'all'}"
        named = ", ".join(repr(str(names[j])) for j in twins)
        raise UserError(f"{where}: channels {which} lead {names[lead]} ({named}): which one is {role} would be a "
                        f"guess; rename or remove all but one in {where}.hea")


def data_section(cfg: DataConfig, who: str) -> DataConfig:
    """`cfg` when it is a data section: a whole config given for it (fc.cfg where fc.cfg.data is meant) stopped
    in an AttributeError on a field of the data section, deep inside."""
    if not hasattr(cfg, "samples_per_second") and hasattr(cfg, "data"):
        raise TypeError(f"{who} takes the config's data section (fc.cfg.data), not the whole {type(cfg).__name__}")
    return cfg


def filter_and_resample(x: np.ndarray, fs_in: float, cfg: DataConfig, where: str, gaps: bool = False) -> np.ndarray:
    """Zero-phase band-pass at the source rate (removes baseline wander and noise), then resample; with
    `gaps`, NaN samples are gaps kept as NaN. Each stretch between gaps, a whole signal without them, is
    filtered on its own (see _filter_stretches), so a record reads alike in prepare_mitbih.py, forecast.py
    and evaluate.py."""
    cfg = data_section(cfg, "filter_and_resample")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        flipped = " (transposed? pass x.T)" if x.ndim == 2 and x.shape[0] == 2 else ""
        raise UserError(f"{where}: expected samples [N, 2], time first, two leads; got {list(x.shape)}{flipped}")
    bad = ~np.isfinite(x)
    if not gaps and bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise UserError(f"{where}: {int(bad.sum())} NaN/invalid samples (first at sample {first}): they would spread "
                        f"through the whole filtered signal; pass gaps=True to keep them as gaps")
    ratio = resample_ratio(fs_in, cfg.samples_per_second, where)
    sos = band_pass(cfg, fs_in, where)
    too_short = 3 * (2 * len(sos) + 1)     # this many samples or fewer: not filtered (sosfiltfilt's default padlen)
    if len(x) <= too_short:
        raise UserError(f"{where}: record of {len(x)} samples ({len(x) / fs_in:.3g} s) is too short to filter")
    return _filter_stretches(x, sos, too_short, ratio, fs_in)


def band_pass(cfg: DataConfig, fs_in: float, where: str) -> np.ndarray:
    """The Butterworth sections of data.filter_band at the source rate; a low-pass edge too close to its
    Nyquist rate is lowered (with a note) rather than refused: a slowly sampled record still reads, with less
    detail."""
    import scipy.signal

    lo, hi = cfg.filter_band
    if hi > 0.45 * fs_in:
        hi = 0.45 * fs_in
        running.note(f"{where}: at {fs_in:g} Hz the low-pass of data.filter_band {list(cfg.filter_band)} sits at "
                     f"{hi:.3g} Hz instead: the record keeps less detail than the data models learn from")
    if hi <= lo:
        raise UserError(f"{where}: sampling rate {fs_in} Hz is too low for data.filter_band {cfg.filter_band}")
    if lo > 0:
        return scipy.signal.butter(cfg.filter_order, [lo, hi], btype="bandpass", fs=fs_in, output="sos")
    return scipy.signal.butter(cfg.filter_order, hi, btype="lowpass", fs=fs_in, output="sos")


def _resample(y: np.ndarray, ratio: Fraction) -> np.ndarray:
    """`y` resampled by `ratio` along time (polyphase: resample_poly), as float32."""
    import scipy.signal

    if ratio != 1:
        y = scipy.signal.resample_poly(y, ratio.numerator, ratio.denominator, axis=0)
    return y.astype(np.float32)


EDGE_PAD_S = 2.0     # each stretch, a record's start and end included, is padded by its mirror image this long
                     # before filtering (sosfiltfilt's default odd padding of 15 samples turned MIT-BIH's last
                     # sample, a step to 0 or -1.28 mV, into spikes up to 3.5 mV)...
EDGE_MARGIN_S = 1.0  # ...and this much beside a gap, or before a record's end, is left out of windows: what is
                     # left differs from the signal filtered whole by < 0.03 mV (8 MIT-BIH records, 80 random
                     # gaps), where the default padding left up to 2.9 mV within a second of a gap
                     # (EXPERIMENTS.md, sessions 22 and 24)


def _filter_stretches(x: np.ndarray, sos: np.ndarray, too_short: int, ratio: Fraction, fs_in: float) -> np.ndarray:
    """Each stretch of finite samples filtered and resampled on its own, NaN elsewhere: a gap never
    leaks into its neighbours, its edges' filter transients are cut off with it (EDGE_MARGIN_S), and
    stretches of `too_short` samples or fewer stay NaN. Each is padded by its mirror image, EDGE_PAD_S at most."""
    import scipy.signal

    n = math.ceil(len(x) * ratio)
    y = np.full((n, x.shape[1]), np.nan, np.float32)
    spans = finite_stretches(x)
    for a, b in spans:
        start = -(-a // ratio.denominator) * ratio.denominator     # a sample on the output grid: no sub-sample shift
        if b - a > too_short and b > start:
            at = min(int(start * ratio), n)
            for k in range(x.shape[1]):     # lead by lead: the filter's float64 copies of a 24 h record take GBs
                filtered = scipy.signal.sosfiltfilt(sos, x[a:b, k], padtype="even",
                                                    padlen=min(round(EDGE_PAD_S * fs_in), b - a - 1))
                part = _resample(filtered[start - a:], ratio)
                y[at:at + len(part), k] = part[:n - at]
    margin = round(EDGE_MARGIN_S * fs_in * ratio)
    for (_, gap_start), (gap_end, _) in zip(spans, spans[1:]):
        y[max(math.floor(gap_start * ratio) - margin, 0):math.ceil(gap_end * ratio) + margin] = np.nan
    return y


def finite_stretches(x: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the runs of samples finite in every lead."""
    ok = np.isfinite(x).reshape(len(x), -1).all(1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.view(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def window_spans(signal: np.ndarray, fs: int) -> list[tuple[int, int]]:
    """Where windows may lie: the finite stretches, clear of the last EDGE_MARGIN_S of recorded signal (a
    recording's last samples are where it stops, at the record's end or before trailing NaN; the filter's
    padding mirrors whatever they hold)."""
    spans = finite_stretches(signal)
    end = (spans[-1][1] if spans else 0) - round(EDGE_MARGIN_S * fs)
    return [(a, min(b, end)) for a, b in spans if a < end]


def _wfdb_read(read: Callable, path: Path, failure: str):
    """Call a wfdb reader on `path`; a missing file or a read error becomes one UserError line."""
    try:
        return read(str(path))
    except FileNotFoundError as e:
        raise UserError(f"{path}: missing file {Path(e.filename or '').name or e}") from e
    except Exception as e:
        raise UserError(f"{failure} ({type(e).__name__}: {_first_line(e)})") from e


def record_path(path: str | Path) -> Path:
    """A record's path without extension, also when given as NNN.hea, NNN.dat or NNN.atr; ~ is the home folder."""
    path = Path(path).expanduser()
    return path.with_suffix("") if path.suffix in (".hea", ".dat", ".atr") else path


def read_header(path: Path) -> wfdb.Record:
    """The header of WFDB record `path` (no samples), with its signal files (or segments) checked."""
    lines = header_lines(Path(f"{path}.hea"))      # the header's text, read once for the checks wfdb leaves out
    check_signal_lines(path, lines)
    header = wfdb_header(path)
    check_rate_field(path, lines)
    check_length_field(path, header)
    check_signal_files(path, header)
    check_segments(path, header)
    return header


def header_leads(path: Path, header: wfdb.Record) -> tuple[list[str], list[str | None]]:
    """Channel names and units of a header; a multi-segment header keeps them in its layout (or first) segment."""
    return channels(channel_header(path, header))


def channel_header(path: Path, header: wfdb.Record) -> wfdb.Record:
    """The header describing the channels of record `path` (header: its own): a multi-segment record's layout (or
    first) segment's, any other record's own."""
    if getattr(header, "seg_name", None):
        if not (parts := segments_of(header)):
            raise UserError(f"{path}.hea: a multi-segment record without a segment")
        header = wfdb_header(path.parent / parts[0])
    return header


def lead_storage(path: Path, leads: list[str]) -> dict[str, list[int] | None]:
    """How record `path` stores each of `leads` (meta.json's keys), from one read of its header: "bits" a frame, its
    header's ADC resolution when given, else its signal format's (wfdb's table: 212 holds 12, 16 holds 16, 310 holds
    10...), times its "samples_per_frame" (a lead of '212x4' stores 4 samples at the record's rate, which wfdb reads
    as their mean); each None when a lead is not there, bits None too when neither says. Compression ratios count
    these against the records, not MIT-BIH's 11 bits for every database."""
    from wfdb.io._signal import BIT_RES

    header = channel_header(path, wfdb_header(path))
    names = list(header.sig_name or [])
    res = list(header.adc_res or [None] * len(names))
    fmts = list(header.fmt or [None] * len(names))
    frames = [int(n or 1) for n in header.samps_per_frame or [1] * len(names)]
    bits = [r if isinstance(r, numbers.Integral) and r > 0 else BIT_RES.get(str(f)) for r, f in zip(res, fmts)]
    found = lead_channels(names, leads)
    if found is None:
        return {"bits": None, "samples_per_frame": None}
    return {"bits": None if any(bits[i] is None for i in found) else [int(bits[i]) * frames[i] for i in found],
            "samples_per_frame": [frames[i] for i in found]}


def lead_channels(names: list[str | None], leads: list[str]) -> list[int] | None:
    """The channel of each of `leads` among a header's `names`, None when one is not there. Two channels of one
    name are its leads in turn: two 'ECG' (or unnamed) leads in 16 and 212 were both counted at 16 bits."""
    free, found = list(range(len(names))), []     # a name given twice (two 'ECG', two unnamed: None): in turn
    for lead in leads:
        i = next((i for i in free if names[i] == lead), None)
        if i is None:
            return None
        free.remove(i)
        found.append(i)
    return found


def channels(header: wfdb.Record) -> tuple[list[str], list[str | None]]:
    """A header's channel names and their units (None each when it gives none)."""
    names = list(header.sig_name or [])
    return names, list(header.units or [None] * len(names))


def segments_of(header: wfdb.Record) -> list[str]:
    """The segments a multi-segment header lists, without its empty ones ('~'); [] for any other header."""
    return [n for n in getattr(header, "seg_name", None) or [] if n != "~"]


def spelled(header: wfdb.Record, path: Path) -> wfdb.Record:
    """`header` (of `path`.hea) with its units as the file spells them: wfdb reads a header as ASCII and drops the
    rest, so 'µV' comes out as 'V' and a record in microvolts would read 10**6 times too large."""
    if getattr(header, "units", None):
        lines = header_lines(Path(f"{path}.hea"))[1:1 + len(header.units)]
        header.units = as_spelled(header.units, [ln[2].partition("/")[2] if len(ln) > 2 else None for ln in lines])
    return header


def as_spelled(units: list[str | None], written: list[str | None]) -> list[str | None]:
    """Each of wfdb's `units` as `written` where that is it with its non-ASCII characters dropped."""
    return [s if u and s and s.encode("ascii", "ignore").decode() == u else u
            for u, s in zip(units, written + [None] * (len(units) - len(written)))]


def wfdb_header(path: Path) -> wfdb.Record:
    """The header of `path`.hea as wfdb reads it, its units as spelled, unchecked (read_header checks it)."""
    import wfdb
    return spelled(_wfdb_read(wfdb.rdheader, path, f"{path}.hea: cannot read the header"), path)


def check_segments(path: Path, header: wfdb.Record) -> None:
    """Each segment of a multi-segment record has its signal files (check_signal_files) and holds the channels of
    its layout (or, without one, of its first segment) in the same units: wfdb joins a fixed layout's segments by
    position and keeps the first one's units, so a segment storing V1 before MLII, or in uV, would be read as the
    other lead or 1000 times too large."""
    segments = segments_of(header)
    if not segments:
        return
    first = wfdb_header(path.parent / segments[0])
    fixed = bool(first.sig_len)                         # a layout header has no samples
    names, units = channels(first)
    unit_of = dict(zip(names, (mv_per_unit(u) for u in units)))
    for segment in segments[0 if fixed else 1:]:
        where = path.parent / segment
        seg = wfdb_header(where)
        check_signal_files(where, seg)
        seg_names, seg_units = channels(seg)
        if fixed and seg_names != names:
            raise UserError(f"{where}.hea: channels {', '.join(map(str, seg_names))} where the first "
                            f"segment of {path.name} has {', '.join(map(str, names))}: a record whose segments differ "
                            f"needs a layout header (a segment of length 0) naming its channels")
        for name, unit in zip(seg_names, seg_units):
            if name in unit_of and mv_per_unit(unit) != unit_of[name]:
                raise UserError(f"{where}.hea: channel {name} in '{unit or 'mV'}', where the "
                                f"{'first segment' if fixed else 'layout'} of {path.name} has it in "
                                f"'{units[names.index(name)] or 'mV'}': give every segment the same units")


def check_signal_lines(path: Path, lines: list[list[str]]) -> None:
    """An empty header, or a record line giving more signals than signal lines follow, ended in wfdb's
    'IndexError: list index out of range', which named no field (`lines`: the header's, header_lines)."""
    hea = Path(f"{path}.hea")
    if not lines and hea.is_file():
        raise UserError(f"{hea}: no record line (an empty header?)")
    words = path.name.split()
    if len(words) > 1 and lines and lines[0][:len(words)] == words:
        raise UserError(f"{hea}: the record name {path.name!r} holds a space, which a header reads as the end of "
                        f"its name: rename the record's files and its name in the header (and the signal lines')")
    if not lines or len(lines[0]) < 2 or "/" in lines[0][0] or not lines[0][1].isdigit():
        return                          # a multi-segment record's lines are segments, checked as records
    if int(lines[0][1]) > len(lines) - 1:
        raise UserError(f"{hea}: the record line gives {lines[0][1]} signals, but {len(lines) - 1} signal lines "
                        f"follow it")


def check_rate_field(path: Path, lines: list[list[str]]) -> None:
    """wfdb reads a sampling rate it cannot parse as the WFDB default, 250 Hz, and says nothing (`lines`: the
    header's, header_lines)."""
    fields = (lines or [[]])[0]
    if len(fields) >= 3:
        rate = fields[2].split("/")[0].split("(")[0]
        try:
            ok = float(rate) > 0
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"{path}.hea: the sampling frequency field {fields[2]!r} is not a positive number")


def check_length_field(path: Path, header: wfdb.Record) -> None:
    """A length field of 0 is WFDB's 'not given', but wfdb reads it as no samples and stopped in its 'sampto must be
    greater than sampfrom'; a field left out is counted from the .dat."""
    if header.sig_len == 0 and not getattr(header, "seg_name", None):
        raise UserError(f"{path}.hea: the first line gives the record 0 samples (its 4th field), which wfdb cannot "
                        f"read: write the number of samples there, or leave the field out")


def secs(v: float) -> str:
    """Seconds to a tenth, or to the millisecond when a tenth would round 5.992 s up to a window's 6.0 s."""
    return f"{v:.1f}" if abs(v - round(v, 1)) < 1e-9 else f"{v:.3f}"


def hundredths(seconds: float, up: bool) -> str:
    """`seconds` to 0.01 s, rounded up for a first start, down for an end, so the bound said is a start allowed:
    1805.56 s read 1805.6, beyond the start refused there; a 2.25 s context 2.2, before the first start."""
    n = math.ceil(seconds * 100 - 1e-6) if up else math.floor(seconds * 100 + 1e-6)
    return f"{n / 100:.2f}".removesuffix("0")


def check_record(path: Path, cfg: DataConfig) -> None:
    """The cheap checks (header, file sizes, sampling rate, leads, length) without reading or filtering samples."""
    path = record_path(path)
    header = read_header(path)
    ecg_channels(*header_leads(path, header), str(path))      # which are leads 1 and 2 is read_record's to say
    ratio = resample_ratio(float(header.fs), cfg.samples_per_second, str(path))
    if header.sig_len and math.ceil(header.sig_len * ratio) < cfg.total_samples:
        raise UserError(f"{path}: {secs(header.sig_len / header.fs)} s is shorter than one window of "
                        f"{secs(cfg.total_samples / cfg.samples_per_second)} s")


SPAN_MARGIN_S = 30.0     # read_record(span=...) reads this much more of the record on either side: the band-pass's
                         # transients from the read's edges die out within it (< 1e-5 mV where the span begins)


def read_record(path: str | Path, cfg: DataConfig, gaps: bool = False, annotator: str | None = "atr",
                span: tuple[int, int] | None = None, leads: Sequence[str] | None = None) -> Record:
    """One WFDB record as two filtered leads in mV at the target rate with its reference beats (from the
    `annotator` file, e.g. NNN.atr; None: no beats). NaN or invalid samples, and a lead holding one value for
    FLAT_S or more (lead off), are an error, or with `gaps` NaN stretches of the signal (see filter_and_resample).
    `span` [a, b) (target-rate samples) reads only that part and SPAN_MARGIN_S around it, giving the samples the
    whole record gives (signal[0] is its sample Record.offset): a forecast near the end of a 24 h Holter record
    need not read all of it (2.2 GB). A read that would begin or end inside a gap is widened: cut there, the gap
    would lose the margin beside it (EDGE_MARGIN_S), and a lead off for longer than the read would be refused as
    off throughout. `leads` (two channel names, --leads) are leads 1 and 2 instead of order_leads' choice
    (named_leads)."""
    cfg = data_section(cfg, "read_record")
    path = record_path(path)
    where = str(path)
    header = read_header(path)
    span = span if header.sig_len else None     # a header may leave its length out: read whole, its end is known then
    sampfrom, sampto, margin_s = 0, None, SPAN_MARGIN_S
    header_units = header_leads(path, header)[1]
    ratio = resample_ratio(float(header.fs), cfg.samples_per_second, where) if span else Fraction(1)
    while True:
        if span:
            sampfrom, sampto = source_span(span, float(header.fs), ratio, header.sig_len, margin_s)
        x, fs_in, names, units, flat = _read_leads(path, cfg, sampfrom, sampto, header_units, leads)
        gap = gap_mask(x, flat, fs_in, names, where, gaps, whole=not sampfrom and sampto is None, asked=leads)
        if not (sampfrom and gap[0] or sampto is not None and gap[-1]):
            break
        x, margin_s = None, 4 * margin_s
    x[gap] = np.nan                                   # a sample missing in one lead is a gap in both
    y = filter_and_resample(x, fs_in, cfg, where, gaps)
    check_swing(y, names, units, where)
    offset = int(sampfrom * ratio)
    length = math.ceil(header.sig_len * ratio) if span else offset + len(y)
    beats, symbols, has_ann = _read_beats(path, fs_in, cfg.samples_per_second, len(y), annotator, offset, length)
    return Record(path.name, y, names, beats, symbols, fs_in, has_ann, float(gap.sum() / fs_in), offset, length)


def _read_leads(path: Path, cfg: DataConfig, sampfrom: int, sampto: int | None, header_units: list[str | None],
                leads: Sequence[str] | None = None
                ) -> tuple[np.ndarray, float, list[str], list[str | None], np.ndarray]:
    """The source samples [sampfrom, sampto) of leads 1 and 2 in mV, the source rate, the leads' names and units
    (`header_units` when wfdb gives none: it drops every channel's of a variable-layout record whose segments give
    one channel, such as PLETH, different units, and an ABP channel then passed for a lead in mV), and their
    flat_runs, which the choice of leads needs and gap_mask takes rather than finding them again. The leads are
    `leads` by name when given (named_leads), kept even when off: they were asked for, and gap_mask says so."""
    import wfdb
    where = str(path)
    read = functools.partial(wfdb.rdrecord, sampfrom=sampfrom, sampto=sampto) if sampfrom or sampto else wfdb.rdrecord
    rec = _wfdb_read(read, path, f"{where}: cannot read the record")
    x = rec.p_signal
    if x is None or x.ndim != 2 or len(x) == 0:
        raise UserError(f"{where}: the record has no samples")
    if rec.sig_len and len(x) != rec.sig_len:
        raise UserError(f"{where}: the .dat holds {len(x)} samples but the header says {rec.sig_len} (truncated?)")
    all_units = as_spelled(list(rec.units or header_units), header_units)     # 'µV', which wfdb reads as 'V'
    order = (named_leads(list(rec.sig_name), leads, where, all_units) if leads else
             order_leads(list(rec.sig_name), cfg.first_lead, where, all_units, second=cfg.second_lead))
    flat = flat_runs(x[:, order], rec.fs)
    if not leads and off_throughout(x[:, order], flat).any():
        order = live_leads(path, rec, order, all_units, cfg, whole=not (sampfrom or sampto))
        flat = flat_runs(x[:, order], rec.fs)
    if not leads:
        note_lacking_leads(list(rec.sig_name), all_units, order, cfg, where)
    if not (sampfrom or sampto):
        check_checksums(rec, where)
    names, units = [rec.sig_name[i] for i in order], [all_units[i] for i in order]
    x = x[:, order] * [mv_per_unit(u) for u in units]     # the same flat runs: a unit scales every sample alike
    rec.p_signal = None                               # the samples as read: 0.33 GB of a 24 h record at 250 Hz
    return x, float(rec.fs), names, units, flat


def check_checksums(rec: wfdb.Record, where: str) -> None:
    """A warning for each channel whose samples do not sum to its header's checksum (16 bits), the one sign WFDB
    gives of a signal file damaged or not the record's: MIT-BIH's records are all 650000 samples long, and a .dat
    copied over another's was read with the other's beats without a word. Only for a whole read of one signal
    (a multi-segment record has no checksum; wfdb gives a channel of several samples a frame as their mean)."""
    if not rec.checksum or any((n or 1) > 1 for n in rec.samps_per_frame or []):
        return
    digital = rec.adc()         # the stored samples again, NaN as its format's invalid value
    for i, want in enumerate(rec.checksum):
        if want is None:
            continue
        got = int(digital[:, i].astype(np.int64).sum()) & 0xFFFF
        if got != int(want) & 0xFFFF:
            running.warn(f"{where}.hea: the samples of channel {rec.sig_name[i]} in {rec.file_name[i]} do not sum "
                         f"to its checksum {want} (they give {got - 0x10000 if got >= 0x8000 else got}): a signal "
                         f"file damaged, or another record's?")


def note_lacking_leads(names: list[str], units: list[str | None], order: list[int], cfg: DataConfig, where: str
                       ) -> None:
    """A note for each lead the config names (data.first_lead other than MIT-BIH's MLII, data.second_lead) that no
    ECG channel of the record is, naming the lead taken instead (order_leads' preference): most of MIT-BIH's records
    have no V5, and a model asked to learn II+V5 learnt V1 on them without a word; a first_lead I took II alike."""
    ecg = {lead_key(names[i]) for i in ecg_channels(names, units, where)}
    for key, role, taken in zip(LEAD_KEYS, ("lead 1", "lead 2"), order):
        asked = getattr(cfg, key)
        if asked != getattr(DataConfig, key) and lead_key(asked) not in ecg:
            running.note(f"{where}: no ECG channel is data.{key} {asked} ({', '.join(map(str, names))}); {role} is "
                         f"{names[taken]} instead")


def live_leads(path: Path, rec: wfdb.Record, order: list[int], units: list[str | None], cfg: DataConfig,
               whole: bool) -> list[int]:
    """order_leads again (by cfg's first_lead and second_lead) without the ECG channels off throughout the record
    (off_throughout), each lead passed over said in a note: a read of part of it (`whole` False) reads all of it to
    know, so that every read of the record takes the same leads."""
    import wfdb
    where, names = str(path), list(rec.sig_name)
    ecg = ecg_channels(names, units, where)
    x = rec.p_signal[:, ecg] if whole else _wfdb_read(functools.partial(wfdb.rdrecord, channels=ecg), path,
                                                      f"{where}: cannot read the record").p_signal
    dead = off_throughout(x, flat_runs(x, rec.fs))
    off = {i: off_reason(x[:, k]) for k, i in enumerate(ecg) if dead[k]}
    live = order_leads(names, cfg.first_lead, where, units, off, cfg.second_lead)
    for role, was, now in zip(("lead 1", "lead 2"), order, live):
        if was in off and now != was:
            running.note(f"{where}: lead {names[was]} {off[was]}; {role} is {names[now]} instead")
    return live


def off_reason(lead: np.ndarray) -> str:
    """Why a lead off throughout (off_throughout) is: a lead of NaN was said to hold one value, as gap_mask says it
    has no valid sample."""
    valid = np.isfinite(lead)
    if not valid.any():
        return "has no valid sample"
    if valid.all() and (lead == lead[0]).all():
        return "holds one value throughout (lead off?)"
    return "is flat or invalid throughout (lead off?)"


def off_throughout(x: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """[leads] whether each lead of x [N, leads] has no sample that is valid and outside a flat run (`flat`, its
    flat_runs): the lead is off, and gap_mask refuses the whole record for it."""
    return (~np.isfinite(x) | flat).all(0)


def source_span(span: tuple[int, int], fs_in: float, ratio: Fraction, sig_len: int | None,
                margin_s: float = SPAN_MARGIN_S) -> tuple[int, int | None]:
    """The source samples [sampfrom, sampto) to read for target samples `span`, `margin_s` wider on either side;
    sampfrom is on the resampled grid (a multiple of the ratio's denominator), so the span's samples fall where the
    whole record's do."""
    margin, first = round(margin_s * fs_in), math.floor(span[0] / ratio)
    first = min(first, sig_len) if sig_len else first      # a span past the end reads the end, to say so
    sampfrom = max(first - margin, 0) // ratio.denominator * ratio.denominator
    sampto = max(math.ceil(span[1] / ratio), first) + margin
    return sampfrom, (sampto if sig_len and sampto < sig_len else None)


def gap_mask(x: np.ndarray, flat: np.ndarray, fs: float, names: list[str], where: str, gaps: bool,
             whole: bool = True, asked: Sequence[str] | None = None) -> np.ndarray:
    """[N] the samples of leads x [N, 2] (mV, named `names`) that are NaN/invalid or flat for FLAT_S or more in
    either lead (`flat`: x's flat_runs): without `gaps` any is an error naming the first, since filtering would spread it or score a lead
    off as ECG; a lead with no valid sample at all is an error either way, when `x` is the `whole` record (one
    --leads named, `asked`, saying what reads another: it is never swapped, and the error said only 'lead off?')."""
    other = (f" (--leads {' '.join(asked)} names it: name another of {where}'s channels, or leave --leads out to "
             f"read the next lead that is on)" if asked else "")
    bad = ~np.isfinite(x)
    if bad.any() and not gaps:
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise UserError(f"{where}: {int(bad.sum())} NaN/invalid samples (first at sample {i}, {i / fs:.2f} s, "
                        f"lead {names[k]}); repair or exclude the record, or prepare with --allow-gaps "
                        f"(read_record: gaps=True) to keep its windows without them")
    if whole and flat.all(0).any():
        raise UserError(f"{where}: lead {names[int(np.argmax(flat.all(0)))]} holds one value throughout: lead "
                        f"off?{other}")
    if flat.any() and not gaps:
        i, k = (int(v) for v in np.argwhere(flat)[0])
        raise UserError(f"{where}: lead {names[k]} holds one value for {flat[:, k].sum() / fs:.1f} s "
                        f"(first from {i / fs:.2f} s): lead off? Repair or exclude the record, or prepare with "
                        f"--allow-gaps (read_record: gaps=True) to keep its windows without those stretches")
    bad |= flat
    dead = bad.all(0)
    if whole and dead.any():
        raise UserError(f"{where}: lead {names[int(np.argmax(dead))]} has no valid sample{other}")
    return bad.any(1)


FLAT_S = 2.0     # a lead that holds one value this long is off (a dropout stored as a constant, not as NaN): a gap;
                 # MIT-BIH's longest such run is 0.74 s (record 116)


def flat_runs(x: np.ndarray, fs: float) -> np.ndarray:
    """Mask [N, leads] of the samples in runs of one unchanging value lasting FLAT_S or more: filtered, such a
    stretch is a near-zero line that would be forecast and scored as ECG (or told it is in the wrong units)."""
    x = np.asarray(x)
    out = np.zeros(x.shape, bool)
    for k in range(x.shape[1]):
        edges = np.concatenate([[0], np.flatnonzero(x[1:, k] != x[:-1, k]) + 1, [len(x)]])
        long = np.flatnonzero(np.diff(edges) >= FLAT_S * fs)
        for a, b in zip(edges[long], edges[long + 1]):
            out[a:b, k] = np.isfinite(x[a, k])
    return out


def check_swing(y: np.ndarray, names: list[str], units: list[str | None], where: str) -> None:
    """An ECG swings 0.1 to 10 mV: far outside that, the header's units are wrong (samples in uV labelled mV,
    say) or the lead is flat, and every forecast and score of the record would be meaningless."""
    ok = np.isfinite(y).all(1)
    if not ok.any():
        return
    low, high = np.percentile(y[ok], [0.5, 99.5], axis=0)
    for name, unit, swing in zip(names, units, high - low):
        if swing > 50 or swing < 0.002:
            guess = unit_guess(unit, swing)
            raise UserError(f"{where}: lead {name} swings {swing:.3g} mV (0.5-99.5th percentile) where an ECG swings "
                            f"0.1 to 10 mV: its header's units ('{unit or 'mV'}') look wrong ({guess}); fix them in "
                            f"the .hea")


def unit_guess(unit: str | None, swing: float) -> str:
    """The hint for a lead that swings `swing` mV read in its header's `unit`: the unit (uV, mV or V) in which
    its samples would swing most like an ECG (nearest 1 mV); a tiny swing may also be a flat lead."""
    as_read = swing / (mv_per_unit(unit) or 1.0)          # the swing in the header's own unit
    fits = {u: as_read * k for u, k in (("uV", 1e-3), ("mV", 1.0), ("V", 1e3)) if 0.002 <= as_read * k <= 50}
    guess = min(fits, key=lambda u: abs(math.log10(fits[u])), default=None)
    if swing > 50:
        return f"samples in {guess}?" if guess else "samples in no ECG unit: not an ECG lead?"
    return f"samples in {guess}, or a flat lead?" if guess else "a flat lead?"


def _first_line(e: BaseException, limit: int = 200) -> str:
    """An exception message's first line, cut at a word (and marked '...') when longer than `limit`."""
    line = (str(e).splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def check_signal_files(path: Path, header: wfdb.Record) -> None:
    """Every signal file the header names exists and holds the samples the header promises (the bytes a sample
    takes in wfdb's table, 0 for a compressed format, whose size is not known before reading it)."""
    from wfdb.io._signal import BYTES_PER_SAMPLE

    files = getattr(header, "file_name", None) or []  # a multi-segment header lists segments instead
    n_sig = len(files)
    per_file: dict[str, list[int]] = {}
    for i, name in enumerate(files):
        per_file.setdefault(name, []).append(i)
    for name, chans in per_file.items():
        dat = path.parent / name
        if not dat.is_file():
            spelled_so = [f for f, *_ in header_lines(Path(f"{path}.hea"))[1:]
                          if f != name and f.encode("ascii", "ignore").decode() == name]
            if spelled_so:
                raise UserError(f"{path}.hea names the signal file {spelled_so[0]}, which wfdb reads as {name} (it "
                                f"drops non-ASCII characters): rename the file and its name in the header to ASCII")
            raise UserError(f"{path}.hea names the signal file {name}, which is missing from {path.parent}")
        fmt = str(header.fmt[chans[0]])
        if not header.sig_len or not BYTES_PER_SAMPLE.get(fmt):
            continue  # length unknown (read from the file) or a compressed format
        frame = sum((header.samps_per_frame or [1] * n_sig)[i] or 1 for i in chans)
        offset = (header.byte_offset or [0] * n_sig)[chans[0]] or 0
        need = offset + math.ceil(header.sig_len * frame * BYTES_PER_SAMPLE[fmt])
        have = dat.stat().st_size
        if have < need:
            raise UserError(f"{dat}: {have} bytes, but the header's {header.sig_len} samples need {need} "
                            f"(truncated file?)")


def _read_beats(path: Path, fs_in: float, fs_out: int, n: int, annotator: str | None = "atr", offset: int = 0,
                length: int | None = None) -> tuple[np.ndarray, list[str], bool]:
    """The reference beats of the `annotator` file at the target rate fs_out, as samples from `offset` within the
    n read, their symbols, and whether the record counts as annotated (no annotator, a missing file, or one of
    rhythm or noise labels only, does not). A file with a time resolution of its own counts its samples at that
    rate, not fs_in. A beat over a second past the record's end (`length`, at fs_out) is an error: the file is
    not this signal's (MIT-BIH's .atr kept beside a record resampled to 250 Hz scored every window against beats
    at the wrong times, without a word)."""
    if not annotator:
        return _no_beats()
    check_annotator(annotator)
    if not path.parent.joinpath(f"{path.name}.{annotator}").exists():
        hint = other_annotators(path, annotator)
        if annotator != "atr" or hint:      # asked for by name (a typo), or beats kept under another name
            running.note(f"{path}.{annotator} is missing; the record counts as unannotated (no R-peak scores){hint}")
        return _no_beats()
    check_annotation_end(path.parent / f"{path.name}.{annotator}")
    import wfdb
    ann = _wfdb_read(functools.partial(wfdb.rdann, extension=annotator), path,
                     f"{path}.{annotator}: cannot read the annotations")
    keep = [i for i, s in enumerate(ann.symbol) if s in BEAT_SYMBOLS]
    if not keep:        # rhythm or noise labels only (as AFDB's .atr): scoring R peaks against none would be wrong
        held = label_counts(ann.symbol) or "no labels at all"
        running.note(f"{path}.{annotator} has no beat labels ({held}; beats are {' '.join(sorted(BEAT_SYMBOLS))}); the "
                     f"record counts as unannotated (no R-peak scores)"
                     f"{other_annotators(path, annotator)}")
        return _no_beats()
    if unknown := [s for s in ann.symbol if s not in WFDB_SYMBOLS]:
        running.note(f"{path}.{annotator}: labels that are not WFDB's ({label_counts(unknown)}) are not read as beats: "
                     f"a forecast's R peak at one counts as a false detection")
    keep.sort(key=lambda i: ann.sample[i])
    fs_ann = float(ann.fs) if ann.fs else fs_in     # the file's own time resolution, else (wfdb) the record's rate
    pos = np.round(np.asarray(ann.sample, np.float64)[keep] * fs_out / fs_ann).astype(np.int64) - offset
    if length is not None and pos[-1] + offset >= length + fs_out:
        raise UserError(f"{path}.{annotator}: beats annotated up to {secs(ann.sample[keep[-1]] / fs_ann)} s, past the "
                        f"record's end at {secs(length / fs_out)} s: annotations made at another sampling rate than "
                        f"the record's {fs_in:g} Hz, or for a longer signal?")
    ok = (pos >= 0) & (pos < n)
    return pos[ok], [ann.symbol[i] for i, k in zip(keep, ok) if k], True


def label_counts(symbols: Iterable[str], most: int = 5) -> str:
    """'X 48, + 1': an annotation file's labels by count, to say which ones it holds."""
    counts = sorted(Counter(symbols).items(), key=lambda kv: -kv[1])
    more = f", {len(counts) - most} more" if len(counts) > most else ""
    return ", ".join(f"{s} {n}" for s, n in counts[:most]) + more


def _no_beats() -> tuple[np.ndarray, list[str], bool]:
    return np.zeros(0, np.int64), [], False


def check_annotation_end(file: Path) -> None:
    """A WFDB annotation file ends in a zero byte pair; wfdb.rdann drops the last pair unread, so a file cut short
    would lose its last annotation and every one after the cut without a word (the windows there scored against no
    beats)."""
    try:
        with open(file, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - 2, 0))
            end = f.read(2)
    except OSError as e:
        raise UserError(f"{file}: cannot read the annotations ({e.strerror or e})") from e
    if size % 2 or end != b"\0\0":
        raise UserError(f"{file}: {size} bytes not ending in WFDB's end-of-file marker (a zero byte pair): cut short? "
                        f"Its annotations after the cut would be missing")


def other_annotators(path: Path, asked: str = "atr") -> str:
    """A hint naming a beat annotation file of the record under a usual name other than the `asked` one, or ''
    (.atr too: --annotator qrs over a database whose other records keep .atr named no way back to them). Only a file
    that holds beats is named (holds_beats): a .atr cut short was offered to whoever had just turned from it."""
    usual = [ext for ext in ("atr", "qrs", "ecg", "qrsc", "sqrs", "gqrs") if ext != asked]
    other = [p.suffix[1:] for p in sorted(path.parent.glob(f"{path.name}.*"))
             if p.suffix[1:] in usual and holds_beats(path, p.suffix[1:])]
    return f" (--annotator {other[0]} reads {path.name}.{other[0]})" if other else ""


def holds_beats(path: Path, annotator: str) -> bool:
    """Whether the record's `annotator` file would give beats: whole (check_annotation_end), readable, with a beat
    label."""
    import wfdb
    try:
        check_annotation_end(path.parent / f"{path.name}.{annotator}")
        symbols = wfdb.rdann(str(path), extension=annotator).symbol
    except Exception:       # cut short, or anything wfdb cannot parse: _read_beats names it when it is asked for
        return False
    return any(s in BEAT_SYMBOLS for s in symbols)


def window_starts(spans: list[tuple[int, int]], cfg: DataConfig, overlap: bool, most: int | None = None
                  ) -> np.ndarray:
    """Starts of context+horizon windows, laid out in each span (window_spans) afresh; evaluation splits never
    overlap so no sample counts twice. data.signals_per_patient, then `most`, keep that many evenly spaced."""
    length, step = cfg.total_samples, cfg.stride_samples if overlap else cfg.total_samples
    starts = np.concatenate([np.zeros(0, np.int64)] + [np.arange(a, b - length + 1, step, dtype=np.int64)
                                                        for a, b in spans])
    for k in (cfg.signals_per_patient or 0, most or 0):
        if 0 < k < len(starts):
            starts = starts[evenly_spaced(len(starts), k)]
    return starts


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """k indices of n evenly spaced, the first and the last among them (all n when k >= n)."""
    return np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(np.int64))


def cut_windows(records: Iterable[Record], cfg: DataConfig, overlap: bool, most: int | None = None) -> dict:
    """Stack the windows of several records with their reference beats in CSR form (beat_ptr); at most `most` of
    each, evenly spaced. `records` are taken one at a time: a generator reading them keeps one record in memory."""
    import torch

    length = cfg.total_samples
    signals, rec_idx, starts, ptr, pos, sym, names = [], [], [], [0], [], [], []
    for r in records:       # not enumerate, whose last pair holds the record while the next is read
        for s in window_starts(window_spans(r.signal, cfg.samples_per_second), cfg, overlap, most):
            # copied when only some are kept (a view keeps the whole record), not the overlapping training windows
            signals.append(r.signal[s:s + length].copy() if most else r.signal[s:s + length])
            rec_idx.append(len(names))
            starts.append(int(s))
            lo, hi = np.searchsorted(r.beats, [s, s + length])
            pos.extend((r.beats[lo:hi] - s).tolist())
            sym.extend(ord(c) for c in r.symbols[lo:hi])
            ptr.append(len(pos))
        names.append(r.name)
        del r
    sig = np.stack(signals) if signals else np.zeros((0, length, 2), np.float32)
    return {
        "signals": torch.from_numpy(np.ascontiguousarray(sig, dtype=np.float32)),
        "record": torch.tensor(rec_idx, dtype=torch.int64),
        "start": torch.tensor(starts, dtype=torch.int64),
        "beat_ptr": torch.tensor(ptr, dtype=torch.int64),
        "beat_pos": torch.tensor(pos, dtype=torch.int64),
        "beat_sym": torch.tensor(sym, dtype=torch.uint8),
        "records": names,
    }


def check_annotator(annotator: str) -> None:
    """An annotator is a bare file extension: a path or pattern in it would read some other file."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", annotator):
        raise UserError(f"--annotator {annotator!r} must be a WFDB annotation file extension such as atr or qrs")


def check_annotated(data_dir: Path, names: list[str], annotator: str) -> None:
    """An annotator asked for by name must exist for some record: a typo would leave them all unannotated."""
    check_annotator(annotator)
    if annotator != "atr" and not any((data_dir / f"{n}.{annotator}").exists() for n in names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise UserError(f"--annotator {annotator}: none of the records read from {data_dir} ({shown}) has a "
                        f".{annotator} file")


def check_config_leads(data_dir: Path, names: list[str], first: str, second: str = "") -> None:
    """A data.first_lead of one's own, and a data.second_lead, must be an ECG lead of some record (compared as
    order_leads does, which passes over a RESP in mV as ecg_channels does): a typo would leave every record in the
    fallback order under a data hash of its own. The default first_lead, MLII, is MIT-BIH's lead; other databases
    fall back to LEAD_PREFERENCE by design."""
    asked = {key: lead for key, lead in zip(LEAD_KEYS, (first, second)) if lead and lead != getattr(DataConfig, key)}
    if not asked:
        return
    leads: dict[str, None] = {}
    for name in names:
        try:
            channels, units = header_leads(data_dir / name, read_header(data_dir / name))
        except UserError:
            continue        # a bad record, named as such when the records are read
        leads.update((str(c), None) for c, u in zip(channels, units) if mv_per_unit(u) is not None and not not_ecg(c))
    for key, lead in asked.items():
        if leads and not any(lead_key(c) == lead_key(lead) for c in leads):
            raise UserError(f"config key 'data.{key}' is {lead!r}, a lead none of the records in {data_dir} has "
                            f"(they have {', '.join(leads)})")


def hash_inputs(data_dir: Path, names: list[str], annotator: str | None = "atr") -> str:
    """sha256 over the bytes of every input file, so results can name the exact data they saw (annotator None:
    the signals alone, for a reader that reads no beats)."""
    h = hashlib.sha256()
    for name in names:
        for p in input_files(data_dir, name) + ([data_dir / f"{name}.{annotator}"] if annotator else []):
            if p.exists():
                h.update(p.name.encode())
                paths.hash_file(h, p)
    return h.hexdigest()[:16]


def record_hash(record: str | Path) -> str:
    """hash_inputs of one record's signal files (its beats not among them), named as forecast.py and vqvae_eval.py
    take it: a path without extension, or as NNN.hea."""
    where = record_path(record)
    return hash_inputs(where.parent, [where.name], annotator=None)


def input_files(data_dir: Path, name: str) -> list[Path]:
    """A record's header and the signal files it names; a multi-segment record's are its segments'. Both are named
    from the header's folder, as wfdb reads them: a record a RECORDS index lists in a subfolder (p00/100) had its
    .dat looked for in data_dir, not found, and left out of the hash without a word."""
    header = data_dir / f"{name}.hea"
    if segments := segment_names(header):
        return [header] + [p for seg in segments for p in input_files(header.parent, seg)]
    return [header] + [header.parent / f for f in dict.fromkeys(ln[0] for ln in header_lines(header)[1:])]


def prepare(cfg: Config, data_dir: Path, out_dir: Path, records: list[str] | None = None,
            download: bool = True, skip_bad: bool = False, allow_gaps: bool = False, annotator: str = "atr",
            keep_other: bool = False) -> dict:
    """Prepare every split and return the metadata written to meta.json. Every bad record is named at once;
    with `skip_bad` they are left out instead. With `allow_gaps`, NaN/invalid samples are gaps no window
    touches. With `keep_other` (out_dir not given: the default folder), another database's preparation there is
    refused, not replaced (check_other_database)."""
    commit = paths.git_commit()     # the code that runs, whatever the tree holds when meta.json is written
    d = cfg.data
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    available = find_records(data_dir, download)
    names = select_records(available, records, data_dir)
    if not records:
        warn_headless(data_dir, available, annotator)
        note_unlisted(data_dir, available)
    training_split(names, d, available, data_dir)   # the config's errors before any record is read
    check_annotated(data_dir, names, annotator)
    check_config_leads(data_dir, available, d.first_lead, d.second_lead)    # the folder's: --records may lack them
    if keep_other:
        check_other_database(out_dir, names, data_dir)
    paths.check_writable(out_dir, keep=False)  # before minutes of work, not after
    loaded, left_out = load_records(names, data_dir, d, skip_bad, allow_gaps, annotator)
    split = training_split(list(loaded), d, available, data_dir, list(left_out))
    warn_held_out(split, loaded, d, data_dir, config_split(available, d))
    tensors = {s: cut_windows([loaded[r] for r in rs], d, overlap=(s == "train")) for s, rs in split.items()}
    meta = prepared_meta(d, data_dir, loaded, annotator, split, tensors, commit, left_out)
    save_prepared(tensors, meta, out_dir)
    return meta


def check_other_database(out_dir: Path, names: list[str], data_dir: Path) -> None:
    """Refuses to prepare records into a folder holding a preparation of another database: a database of one's own
    prepared into the default folder (no --out) replaced MIT-BIH's, which every script reads from there, with only
    a note. Another database is one whose records none are among `names`, or whose records of the same names are
    all other recordings by their headers (record_difference: a record '100' of one's own is no MIT-BIH 100). A
    preparation from the same folder, or of some of the same records (again, other settings), is replaced."""
    held = stored_meta(out_dir)     # {}: nothing prepared there, or nothing readable: prepared anew, as before
    before = held.get("records")
    details = before if isinstance(before, dict) else {}
    before = list(before) if isinstance(before, (dict, list)) else []
    if not before or same_folder(held.get("data_dir"), data_dir):
        return
    shared = [n for n in names if n in before]
    differences = [record_difference(n, details.get(n), data_dir) for n in shared]
    if shared and not all(differences):
        return
    shown = ", ".join(before[:4]) + (", ..." if len(before) > 4 else "")
    why = (f"not {data_dir}'s (its records of the same names are other recordings: {differences[0]}"
           f"{', ...' if len(shared) > 1 else ''})" if shared else f"none of {data_dir}'s")
    raise UserError(f"{out_dir} holds the prepared data of another database ({held.get('data_dir', '?')}: "
                    f"records {shown}), {why}: pass "
                    f"--out DIR for this one (and --prepared DIR to the scripts that read it), or delete "
                    f"{out_dir} to replace it")


def same_folder(held: object, data_dir: Path) -> bool:
    """Whether a held meta.json's data_dir is `data_dir`: its records, whatever they say, are this database's."""
    try:
        return isinstance(held, str) and bool(held) and Path(held).resolve() == data_dir.resolve()
    except (OSError, ValueError):       # ValueError: a NUL in a meta.json edited by hand
        return False


def record_difference(name: str, held: object, data_dir: Path) -> str:
    """How record `name`'s header in `data_dir` tells it from the one of its name a held meta.json describes
    (`held`: its fs_in, leads, seconds), e.g. '100 at 250 Hz, not 360 Hz': a header only, before any samples are read.
    '' when it may be the same recording, or when either says too little to tell (a meta.json older than these
    fields, an unreadable header): such a record is taken for the same, as the names alone took it before."""
    path = data_dir / name
    try:
        fs, leads, seconds = float(held["fs_in"]), list(held["leads"]), float(held["seconds"])
        header = wfdb_header(path)
        channel_names = header_leads(path, header)[0]
        fs_here = float(header.fs)
    except (KeyError, TypeError, ValueError, UserError):
        return ""
    if not math.isclose(fs_here, fs, rel_tol=1e-6):
        return f"{name} at {fs_here:g} Hz, not {fs:g} Hz"
    if missing := [lead for lead in leads if lead not in channel_names]:
        return f"{name} without lead {', '.join(map(str, missing))}"
    here = (header.sig_len or 0) / fs_here
    if here and abs(here - seconds) > max(1.0, 0.01 * seconds):
        return f"{name} of {secs(here)} s, not {secs(seconds)} s"
    return ""


def warn_headless(data_dir: Path, names: list[str], annotator: str) -> None:
    """Warns of the .dat and annotation files of a folder without a RECORDS index that no header of its records
    `names` (or their segments) accounts for: a record whose .hea was lost would be left out without a word."""
    if records_file(data_dir):
        return          # the index is the database: a listed record without its .hea is refused there
    named = {p.name for n in names for p in input_files(data_dir, n)}
    headers = {p.stem for p in data_dir.glob("*.hea")}
    headless = [p.name for p in sorted(data_dir.glob("*")) if p.suffix in (".dat", f".{annotator}")
                and p.name not in named and p.stem not in headers]
    if headless:
        one = len(headless) == 1
        running.warn(f"{', '.join(headless[:5])}{' ...' if len(headless) > 5 else ''} in {data_dir} "
                     f"belong{'s' if one else ''} to no record's header (a lost .hea?): "
                     f"{'it is' if one else 'they are'} not prepared")


def note_unlisted(data_dir: Path, names: list[str]) -> None:
    """Notes the headers beside a RECORDS index that it does not list (nor as a segment of a listed record): a record
    added to a PhysioNet folder without adding it to RECORDS was left out without a word."""
    if not names or not (data_dir / "RECORDS").is_file():
        return
    parts = {seg for name in names for seg in segment_names(data_dir / f"{name}.hea")}
    unlisted = sorted(p.stem for p in data_dir.glob("*.hea") if p.stem not in names and p.stem not in parts)
    if unlisted:
        one, shown = len(unlisted) == 1, ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
        running.note(f"{data_dir / 'RECORDS'} does not list {shown}, whose .hea {'is' if one else 'are'} there: not "
                     f"read (add {'it' if one else 'them'} to RECORDS to read {'it' if one else 'them'})")


def select_records(names: list[str], records: list[str] | None, folder: Path) -> list[str]:
    """The asked-for `records` among `names`, in the folder's order (all of them when none are asked for); a name
    not found is refused with the names there are (the first 20), as a prepared split's are."""
    if not records:
        return names
    missing = [r for r in records if r not in names]
    if missing:
        # a header the folder's RECORDS leaves out is no record (header_stems): say so, not that it is not there
        unlisted = [r for r in missing if (folder / "RECORDS").is_file() and (folder / f"{r}.hea").is_file()]
        them = "it" if len(unlisted) == 1 else "them"
        why = (f"; {folder / 'RECORDS'} leaves out {', '.join(unlisted)}, whose .hea {'is' if them == 'it' else 'are'} "
               f"there: add {them} to RECORDS to read {them}") if unlisted else ""
        raise UserError(f"records {missing} are not in {folder}{records_there(missing, names)}{why}")
    return [r for r in names if r in records]


def records_there(missing: list[str], names: list[str]) -> str:
    """' (it has ...)': the records a folder has (the first 20), for an error naming `missing` ones, led by those
    whose last part a missing name is: a database of subfolders (PTB-XL's RECORDS lists records500/00000/00001_hr)
    names its records by their paths, and a split listed by the records' own names was refused as a list of typos."""
    meant = [n for r in missing for n in names if "/" in n and n.rsplit("/", 1)[1] == r]
    if meant:
        return f" (records are named by their path in it: {', '.join(meant[:20])}{', ...' if len(meant) > 20 else ''})"
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} records)" if len(names) > 20 else "")
    return f" (it has {shown})"


def training_split(names: list[str], d: DataConfig, available: list[str], data_dir: Path,
                   left_out: list[str] | None = None) -> dict[str, list[str]]:
    """config_split, refusing a split with no record to train on; `left_out`: the records --skip-bad left out,
    which may have been the training records (the config is then not what to check), as may --records have
    (`names` fewer than `available`)."""
    split = config_split(names, d, available, str(data_dir))
    if not split["train"] and left_out:
        raise UserError(f"no training records among {names}: --skip-bad left out {left_out} as bad (the warnings "
                        f"above say why)")
    if not split["train"] and config_split(available, d, available, str(data_dir))["train"]:
        raise UserError(f"no training records among {names}: --records names only held-out ones (test "
                        f"{split['test']}, validation {split['validation']}); add some that train to it")
    if not split["train"]:
        raise UserError(f"no training records among {names}; check data.test_records / validation_records")
    return split


def load_records(names: list[str], data_dir: Path, d: DataConfig, skip_bad: bool, allow_gaps: bool,
                 annotator: str) -> tuple[dict[str, Record], dict[str, str]]:
    """The good records, read, and why each bad one was left out (`skip_bad`). Each is checked whole (header, then
    samples) in one pass, so one error names every bad record, whichever check it fails. A record without the
    annotation file others have is said to be unannotated: a lost .atr went unnoticed, and the record's beats
    unscored."""
    loaded: dict[str, Record] = {}
    have = sum((data_dir / f"{n}.{annotator}").exists() for n in names)
    # no .atr where others have one: unannotated as _read_beats has it, which notes only a named annotator's missing
    lost = {n for n in names if have and annotator == "atr" and not (data_dir / f"{n}.atr").exists()
            and not other_annotators(data_dir / n)}

    def load(name: str) -> None:
        check_record(data_dir / name, d)      # the header's reason (one lead, too short) before any sample
        rec = replace(read_record(data_dir / name, d, allow_gaps, annotator), name=name)   # RECORDS' sub/NAME
        check_windows(rec, d, str(data_dir / name))
        if name in lost:
            running.warn(f"{data_dir / name}.atr is missing, where {running.counted(have, 'other record')} "
                         f"{'has' if have == 1 else 'have'} theirs: {name} counts as unannotated (no R-peak scores); "
                         f"restore the file if it was lost")
        loaded[name] = rec
    # The progress bar only on a terminal: in logs and pipes stderr keeps just the one 'error:' line.
    left_out = check_every_record(tqdm(names, desc="records", unit="rec", disable=None), load, skip_bad)
    return loaded, left_out


def train_scale(train: dict, d: DataConfig) -> list[float]:
    """Per-lead SD (mV) of the training windows with data.normalization train_std, else 1: computed on the
    training patients only, so held-out ones leak nothing into it."""
    if d.normalization != "train_std":
        return [1.0, 1.0]
    return train["signals"].double().std(dim=(0, 1)).tolist()


def prepared_meta(d: DataConfig, data_dir: Path, loaded: dict[str, Record], annotator: str,
                  split: dict[str, list[str]], tensors: dict[str, dict], commit: str,
                  left_out: dict[str, str]) -> dict:
    """meta.json: what was read and how, so a result can name the exact data it saw; `commit` is the code's at
    the run's start, `left_out` why each record --skip-bad left out was bad."""
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "git_commit": commit,
        "data_dir": os.path.abspath(data_dir),      # read from any working folder (vqvae_eval.next_commands)
        "input_hash": hash_inputs(data_dir, list(loaded), annotator),
        "annotator": annotator,
        "data_hash": data_hash(d),
        "preparation": PREPARATION,
        "config": asdict(d),
        "fs": d.samples_per_second,
        "window_samples": d.window_samples,
        "total_samples": d.total_samples,
        "filter": {"type": "butterworth band-pass, zero-phase (sosfiltfilt)", "band_hz": d.filter_band,
                   "order": d.filter_order},
        "scale_mv": train_scale(tensors["train"], d),
        "splits": split,
        "windows": {s: int(len(t["signals"])) for s, t in tensors.items()},
        "records": {n: {"fs_in": r.fs_in, "leads": r.leads, **lead_storage(data_dir / n, r.leads),
                        "has_annotations": r.has_annotations,
                        "seconds": len(r.signal) / d.samples_per_second, "invalid_seconds": r.invalid_s,
                        "beats": int(len(r.beats))}
                    for n, r in loaded.items()},
        "left_out": left_out,
        "window_starts": {s: {n: t["start"][t["record"] == i].tolist() for i, n in enumerate(t["records"])}
                          for s, t in tensors.items()},
    }


def save_prepared(tensors: dict[str, dict], meta: dict, out_dir: Path) -> None:
    """Each split's file carries the rate, scale and hashes of meta.json: a split loaded alone is checked against
    the config asking for it. Every file is written into a hidden folder inside out_dir first, and all are moved in
    only then: a run stopped while writing them (Ctrl-C, a full disk) replaced one split file after another and
    left the earlier preparation unusable; now it stays whole. That folder, as large as a preparation, is named after
    its process: one a kill -9 left is removed by the next preparation into out_dir (paths.remove_stale_parts). A
    Ctrl-C once every file is moved in says the preparation is whole, not what it left."""
    import torch

    if taken := [f"{s}.pt" for s in SPLITS if (out_dir / f"{s}.pt").exists()]:
        running.note(f"replacing the prepared data in {out_dir} ({', '.join(taken)})")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths.remove_stale_parts(out_dir, PREPARING_PART, "preparation")
        staging = paths.owned_folder(out_dir, PREPARING_PART)
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror or e}") from e
    names = [*(f"{s}.pt" for s in tensors), "meta.json"]
    try:
        for s, t in tensors.items():
            t.update(fs=meta["fs"], scale_mv=torch.tensor(meta["scale_mv"], dtype=torch.float32),
                     data_hash=meta["data_hash"], input_hash=meta["input_hash"], preparation=PREPARATION)
            paths.atomic_torch_save(t, staging / f"{s}.pt")
        paths.atomic_write_json(meta, staging / "meta.json")
        paths.moved_in([(staging / n, out_dir / n) for n in names], out_dir,
                       "run prepare_mitbih.py again before reading it")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def warn_held_out(split: dict[str, list[str]], loaded: dict[str, Record], d: DataConfig, data_dir: Path,
                  whole: dict[str, list[str]]) -> None:
    """An empty validation or test split, or one MIT-BIH's default names chose in another database, is legal
    but rarely meant: say so. `whole`: the split of every record in the folder, to tell a split emptied by
    --records (or --skip-bad) from one whose records the folder does not have."""
    for held in ("validation", "test"):
        listed = getattr(d, f"{held}_records")
        if not split[held] and whole[held]:
            running.warn(f"the {held} split is empty: its records in {data_dir} ({' '.join(whole[held])}) are not "
                         f"prepared (left out by --records or as bad)")
        elif split[held] and listed is None and any(loaded[r].fs_in != MITBIH_FS for r in split[held]):
            running.warn(f"data.{held}_records is null, so MIT-BIH's record names chose the {held} split "
                         f"({' '.join(split[held])}), but these records are not at MIT-BIH's {MITBIH_FS} Hz: list this "
                         f"database's held-out patients in config data.{held}_records")
        elif not split[held] and listed is None:      # MIT-BIH's default names, none in another database
            running.warn(f"no {held} records among the {len(loaded)} in {data_dir} (the defaults are MIT-BIH's); "
                         f"list this database's held-out patients in config data.{held}_records")


def check_windows(rec: Record, cfg: DataConfig, where: str) -> None:
    """A record must hold one window (without gaps, clear of its last second); a record with gaps says how
    much of it they take."""
    fs, need = cfg.samples_per_second, cfg.total_samples / cfg.samples_per_second
    spans = window_spans(rec.signal, fs)
    longest = max((b - a for a, b in spans), default=0)
    if longest < cfg.total_samples:
        if not rec.invalid_s:
            raise UserError(f"{where}: {secs(len(rec.signal) / fs)} s is shorter than one window of {secs(need)} s "
                            f"and the last {secs(EDGE_MARGIN_S)} s, which windows leave out")
        raise UserError(f"{where}: no stretch without invalid samples is one window ({secs(need)} s) long "
                        f"(the longest is {secs(longest / fs)} s)")
    if rec.invalid_s:
        running.note(f"{where}: {rec.invalid_s:.1f} s of NaN/invalid or flat samples; windows leave out the gaps "
                     f"({len(spans)} clean stretches)")


def check_every_record(names: Iterable[str], check: Callable[[str], None], skip_bad: bool) -> dict[str, str]:
    """Run `check` on every name; the failures of all are one error naming them (or, with `skip_bad`, a warning
    each, and returned by name for meta.json: a preparation said what it left out only on the console), so a user
    fixes a database in one go, not one run per bad record."""
    bad = {}
    for name in names:
        try:
            check(name)
        except UserError as e:
            bad[name] = str(e)
    if bad and not skip_bad:
        raise UserError(f"{running.counted(len(bad), 'bad record')}, nothing prepared: {'; '.join(bad.values())} "
                        f"(repair them, or leave them out with --skip-bad)")
    for reason in bad.values():
        running.warn(f"left out: {reason}")
    return bad


def load_split(split: str, cfg: Config, prepared_dir: str | Path | None = None, any_records: bool = False,
               config_flag: bool = False) -> dict:
    """Open a prepared split memory-mapped, refusing tensors made with another data config. With `any_records`
    (a forecaster trained on a frozen VQ-VAE), other record lists are fine: the VQ-VAE needs windows made alike,
    not the patients it was trained on. `config_flag`: `cfg` is the --config of evaluate.py, whose error then
    says to pass the config the folder was prepared with (a 250 Hz folder is no reason to prepare again)."""
    if hasattr(cfg, "samples_per_second") and not hasattr(cfg, "data"):    # read_record's takes this section
        raise TypeError("load_split takes the whole config (fc.cfg), not its data section")
    path = paths.location("prepared", prepared_dir) / f"{split}.pt"
    data = read_prepared(path, split)
    if data.get("data_hash") == data_hash(cfg.data):
        return data
    if any_records:
        differ = preparation_differences(path.parent, cfg.data, data.get("data_hash"))
        if not differ:
            return data
        if config_flag:
            raise UserError(f"{path} was prepared unlike the data section of --config ({differ}): pass the config "
                            f"it was prepared with as --config (the default is config_vqvae.json)")
        raise UserError(f"{path} was prepared unlike the VQ-VAE's data ({differ}): prepare with `python3 "
                        f"prepare_mitbih.py --config F --out DIR`, F holding the VQ-VAE's data section (its record "
                        f"lists may be your own), and pass --prepared DIR")
    differ = preparation_differences(path.parent, cfg.data, data.get("data_hash"), lists=True)
    raise UserError(f"{path} was prepared with another data config (hash {data.get('data_hash')} != "
                    f"{data_hash(cfg.data)}: {differ}); pass the config it was prepared with (--config; its meta.json "
                    f"keeps the data section), or prepare with `python3 prepare_mitbih.py --config F [--out DIR]`, "
                    f"F holding this run's data section (a forecaster's: its VQ-VAE's), and pass --prepared DIR "
                    f"(evaluate.py and vqvae_eval.py take data prepared alike with record lists of your own: "
                    f"--prepared DIR)")


def unprepared(folder: Path) -> str:
    """What to run to prepare `folder`: prepare_mitbih.py alone writes the default folder ($ECG_PREPARED_DIR's), not
    a --prepared of one's own, which is told to pass --out (and, missing, said so: a typo in its name?)."""
    if os.path.abspath(folder) == os.path.abspath(paths.location("prepared")):
        return "; run `python3 prepare_mitbih.py` first"
    gone = "" if os.path.isdir(folder) else f" ({folder} does not exist)"
    return f"{gone}; run `{paths.command_line(['python3', 'prepare_mitbih.py', '--out', str(folder)])}` first"


def read_prepared(path: Path, split: str) -> dict:
    """A prepared split's file memory-mapped, refused unless it holds windows made by this preparation."""
    import torch

    if not os.path.exists(path):        # os.path's: see paths
        raise UserError(f"prepared tensors not found: {path}{unprepared(Path(path).parent)}")
    try:
        data = torch.load(path, mmap=True, weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); delete it and run prepare_mitbih.py again") from e
    if not isinstance(data, dict) or "signals" not in data:
        raise UserError(f"{path} is not a prepared split; delete it and run `python3 prepare_mitbih.py` again")
    if len(data["signals"]) == 0:
        raise UserError(f"{path} holds no windows: no record of the {split} split was prepared (config "
                        f"data.{split}_records, or prepare_mitbih.py --records)")
    if data.get("preparation", 1) != PREPARATION:
        raise UserError(f"{path} was prepared by another version of prepare_mitbih.py (preparation "
                        f"{data.get('preparation', 1)}, this one makes {PREPARATION}: see hyper_params.PREPARATION); "
                        f"run `python3 prepare_mitbih.py` again with the flags it was prepared with")
    check_one_preparation(path, data)
    return data


def check_one_preparation(path: Path, data: dict) -> None:
    """Refuses a split whose input or data hash is not its folder's meta.json's: each file is written atomically,
    but a preparation stopped between files (or two into one folder at once) leaves splits of new inputs or another
    data config beside splits (and meta.json) of old ones. The data hash is checked here too: later, a split of
    another config would be refused as prepared with 'another data config' and told to pass the config meta.json
    keeps, the one already passed."""
    meta = stored_meta(path.parent)             # {}: no meta.json to hold it to (a split copied alone)
    for key, value in {key: meta.get(key) for key in ("input_hash", "data_hash")}.items():
        if value is not None and data.get(key) not in (None, value):
            raise UserError(f"{path} ({key.replace('_', ' ')} {data.get(key)}) and {path.parent / 'meta.json'} "
                            f"({value}) come from two preparations, one stopped part way: run `python3 "
                            f"prepare_mitbih.py` again into {path.parent}")


def preparation_differences(folder: Path, data: DataConfig, tensor_hash: str | None, lists: bool = False) -> str:
    """How the data section a prepared folder was made with (its meta.json, if it is the tensors' own) differs
    from `data`, record lists aside unless `lists`: '' when its windows are made alike. With them, the one key a
    database of one's own changes (its split) is named, where two hashes left the user to find it."""
    try:
        stored = json.loads((folder / "meta.json").read_text(encoding="utf-8"))["config"]
        stored_data = build_section(DataConfig(), stored, "data", str(folder / "meta.json"))
        stored_data.validate()          # the data alone: a whole config's default model need not fit its window
        own = data_hash(stored_data) == tensor_hash
    except (OSError, ValueError, KeyError, TypeError, UserError):
        own = False
    if not own:
        return f"{folder / 'meta.json'} is missing, unreadable or not the tensors' own"
    held, wanted = (json.loads(json.dumps(asdict(d))) for d in (stored_data, data))  # a key it predates at its default
    return ", ".join(f"{k} {held[k]!r}, not {v!r}" for k, v in wanted.items()
                     if (lists or k not in ("test_records", "validation_records")) and held[k] != v)


def stored_meta(prepared_dir: str | Path | None = None) -> dict:
    """A prepared folder's meta.json, {} when it is missing, unreadable or not an object: the tensors carry what
    their use needs, and the metadata only names more."""
    try:
        meta = json.loads((paths.location("prepared", prepared_dir) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def stored_records(prepared_dir: str | Path | None = None) -> dict:
    """Each prepared record's details (meta.json's records: fs_in, leads, ...), {} when the metadata is missing."""
    return records_of(stored_meta(prepared_dir))


def records_of(meta: dict) -> dict:
    """The records of a meta.json read (stored_meta), {} when it has none that are an object."""
    stored = meta.get("records")
    return stored if isinstance(stored, dict) else {}


@dataclass(frozen=True)
class SourceSamples:
    """A lead's samples in these records as stored (meta.json), so compression ratios count the records' own bits:
    `fs` is the mean samples a second a lead, `bits` the mean bits a sample weighted by their number (fs x bits is
    the records' mean bit rate a lead), and the ranges say whether the records differ. `bits` and `bits_range` are
    None when meta.json gives no bits (prepared before it kept them, or a header that says none)."""
    fs: float
    fs_range: tuple[float, float]
    bits: float | None = None
    bits_range: tuple[float, float] | None = None

    @classmethod
    def uniform(cls, fs: float, bits: float | None = None) -> SourceSamples:
        """Records all of one rate (and bits, when known): ranges of that one value, so they are told as their
        samples, not as a mean of differing ones."""
        return cls(fs, (fs, fs), bits, None if bits is None else (bits, bits))


def source_samples(records: list[str], prepared_dir: str | Path | None = None) -> SourceSamples | None:
    """How these records store a lead (meta.json's fs_in, bits a frame and samples a frame): a '212x4' lead holds
    4 samples of 11 bits a frame, 4 x fs_in samples a second. A meta.json prepared before it kept samples a frame
    counts one; None when it is missing, lacks a record's rate or gives one of no samples (a meta.json edited by
    hand: at 0 Hz the bit rate divided 0 by 0); bits of none or fewer are taken as unknown."""
    stored = stored_records(prepared_dir)
    try:
        held = [stored[r] for r in records]
        fs_in = [float(h["fs_in"]) for h in held]
        frames = [h.get("samples_per_frame") or [1] * len(h.get("bits") or [0]) for h in held]
        rates = [n * f for f, per in zip(fs_in, frames) for n in per]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not rates or not all(r > 0 for r in (*fs_in, *rates)):
        return None
    fs = SourceSamples(float(np.mean(rates)), (min(rates), max(rates)))
    try:
        per_lead = [(b / n, n * f) for h, f, per in zip(held, fs_in, frames)
                    for b, n in zip(h["bits"], per, strict=True)]
        bits = [b for b, _ in per_lead]
    except (KeyError, TypeError, ValueError):
        return fs
    if not all(b > 0 for b in bits):
        return fs
    return replace(fs, bits=sum(b * r for b, r in per_lead) / sum(r for _, r in per_lead),
                   bits_range=(min(bits), max(bits)))


def stored_leads(prepared_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Each prepared record's lead names [lead 1, lead 2] (meta.json), {} when the metadata is missing."""
    try:
        return {r: list(v["leads"]) for r, v in stored_records(prepared_dir).items()}
    except (KeyError, TypeError):
        return {}


def cached_encoding(kind: str, key: str, compute: Callable[[], torch.Tensor],
                    prepared_dir: str | Path | None = None, what: str = "") -> torch.Tensor:
    """A tensor derived from prepared data (codes, latent frames), computed once per `key` and kept under
    <kind>/ in paths.cache_dir; a stored file whose key differs is recomputed,
    and a folder that can't be written only costs the encoding next time. `what`: which windows, for the log. A
    write of it that a kill -9 cut short, a hidden file as large as the encoding that no run reads, goes once this run
    has encoded it again: one older than this run's encoding is no live run's write (a write takes seconds)."""
    import torch

    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = paths.cache_dir(prepared_dir) / kind / f"{digest}.pt"
    if cache.exists():
        try:
            stored = torch.load(cache, weights_only=True)
        except Exception as e:      # cut short or foreign: it is only a cache
            running.note(f"{cache} is unreadable ({type(e).__name__}); computing it again")
            stored = {}
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["tensor"]
    print(f"encoding the {what + ' ' if what else ''}windows once ({kind}; kept in {cache.parent})")
    began = time.time()
    tensor = compute()
    try:
        paths.atomic_torch_save({"key": key, "tensor": tensor}, cache)
    except paths.UserError as e:
        running.note(f"the encoding is not kept ({e}); set ECG_CACHE_DIR to a writable folder to keep it")
    for cut in cache.parent.glob(f".{cache.name}.*.tmp"):     # atomic_torch_save's temporary files
        with contextlib.suppress(OSError):
            if cut.stat().st_mtime < began:
                cut.unlink()
    return tensor


def stretched_copy(data: dict, aug: AugmentConfig, stride: int, rng: np.random.Generator) -> dict:
    """A prepared split's windows cut again from every record after a time stretch (heart rate x a)
    and a gain per lead, both drawn per record: new patients for the forecasters, on which continuing
    the previous beats still works. Returns signals, record, start, beat_ptr and beat_pos like the split.
    Windows kept apart (data.signals_per_patient) are islands a window long: sped up (a > 1) one holds no
    window, and slowed one only when the stride's grid meets it, so such a split's copies keep few windows, all of
    records drawn slower; a copy with none is refused."""
    import torch

    sig, rec, start = data["signals"], data["record"].numpy(), data["start"].numpy()
    ptr, pos = data["beat_ptr"].numpy(), data["beat_pos"].numpy()
    n = sig.shape[1]
    parts: dict[str, list] = {"signals": [], "record": [], "start": [], "beats": []}
    for r in np.unique(rec):
        idx = np.flatnonzero(rec == r)
        offset = start[idx] - start[idx].min()
        whole, gap = whole_record(sig[idx].numpy(), offset)
        beats = np.unique(np.concatenate([offset[k] + pos[ptr[i]:ptr[i + 1]] for k, i in enumerate(idx)]))
        y, beats, gap = stretch_record(whole, beats, gap, aug, rng)
        starts = np.arange(0, len(y) - n + 1, stride)
        in_gap = np.concatenate([[0.0], np.cumsum(gap)])
        starts = starts[in_gap[starts + n] == in_gap[starts]]                   # windows without a gap
        parts["signals"].append(torch.from_numpy(y[starts[:, None] + np.arange(n)].astype(np.float32)))
        parts["record"].append(np.full(len(starts), r))
        parts["start"].append(starts)
        lo, hi = np.searchsorted(beats, starts), np.searchsorted(beats, starts + n)
        parts["beats"] += [beats[first:last] - s0 for first, last, s0 in zip(lo, hi, starts)]
    if not parts["beats"]:          # nothing to encode: numpy's and torch's empty-concatenation errors otherwise
        raise UserError("a time-stretched copy of the training records holds no window: the training windows are "
                        "kept apart (data.signals_per_patient, or gaps), and sped up each is shorter than a window; set "
                        "augment.copies to 0, or data.signals_per_patient to 0 (the whole records)")
    counts = np.array([len(b) for b in parts["beats"]])
    return {"signals": torch.cat(parts["signals"]),
            "record": torch.from_numpy(np.concatenate(parts["record"])),
            "start": torch.from_numpy(np.concatenate(parts["start"])),
            "beat_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(counts)])),
            "beat_pos": torch.from_numpy(np.concatenate(parts["beats"]))}


def whole_record(windows: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A record's samples put back together from its windows [k, n, leads] starting `offset` samples in, and
    its gaps: 1 where no window covers the record."""
    n = windows.shape[1]
    whole = np.zeros((offset.max() + n, windows.shape[2]), np.float32)
    whole[offset[:, None] + np.arange(n)] = windows             # overlapping windows hold the same samples
    gap = np.ones(len(whole))
    gap[offset[:, None] + np.arange(n)] = 0
    return whole, gap


def stretch_record(whole: np.ndarray, beats: np.ndarray, gap: np.ndarray, aug: AugmentConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A record [N, leads] with heart rate x a and a gain per lead, both drawn from `rng` (in that order), and
    its beat positions and gaps moved with it."""
    import scipy.signal

    a = Fraction(rng.uniform(1 - aug.rate_range, 1 + aug.rate_range)).limit_denominator(32)
    y = scipy.signal.resample_poly(bridge_gaps(whole, gap), a.denominator, a.numerator, axis=0)   # 1 / a as long
    y = y * rng.uniform(1 - aug.amplitude_range, 1 + aug.amplitude_range, whole.shape[1])
    beats = np.round(beats * a.denominator / a.numerator).astype(np.int64)
    gap = np.interp(np.arange(len(y)) * float(a), np.arange(len(whole)), gap)
    return y, beats, gap


def bridge_gaps(whole: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """A straight line across each gap: the resampling filter rang for about 80 ms beside the step to the zeros
    of a gap, into the windows kept beside it."""
    held = gap == 0
    if held.all():
        return whole
    t = np.arange(len(whole))
    return np.stack([np.interp(t, t[held], lead[held]) for lead in whole.T], 1).astype(whole.dtype)


def augmented_encoding(kind: str, data: dict, aug: AugmentConfig, cfg: DataConfig, seed: int,
                       encode: Callable[[torch.Tensor], torch.Tensor], encoder_digest: str,
                       prepared_dir: str | Path | None = None, what_else: str = "") -> tuple[list[dict], torch.Tensor]:
    """`aug.copies` stretched copies of a training split (stretched_copy, seeded) and their windows
    encoded by `encode`, cached like the plain windows (see cached_encoding); `what_else`: what else the
    encoding depends on, as for the plain windows (the drafts' version: new drafts, new encodings)."""
    import torch

    rng = np.random.default_rng(seed)
    copies = [stretched_copy(data, aug, cfg.stride_samples, rng) for _ in range(aug.copies)]
    key = (f"{encoder_digest}:{data['data_hash']}:{data['input_hash']}:augment:{aug}:{cfg.window_samples}:{seed}"
           f":{what_else}")
    return copies, cached_encoding(kind, key, lambda: torch.cat([encode(c["signals"]) for c in copies]), prepared_dir,
                                   f"{aug.copies} stretched copies' training")


def check_fetch_only(args: argparse.Namespace) -> None:
    """--fetch-only prepares nothing: a flag of the preparation beside it (--records 100, expecting one record
    fetched) is refused, not passed over without a word."""
    given = [flag for flag, on in (("--records", args.records), ("--out", args.out), ("--config", args.config),
                                   ("--skip-bad", args.skip_bad), ("--allow-gaps", args.allow_gaps),
                                   ("--annotator", args.annotator != "atr")) if on]
    if args.fetch_only and given:
        raise UserError(f"--fetch-only prepares nothing (it fetches all of MIT-BIH when the data folder has no "
                        f"records), so {', '.join(given)} would do nothing: drop "
                        f"{'it' if len(given) == 1 else 'them'} or --fetch-only")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, type=paths.given_path,
                   help="VQ-VAE config JSON (default: config_vqvae.json)")
    p.add_argument("--data-dir", default=None, type=paths.given_path,
                   help=f"WFDB folder (default: {paths.DATA_DEFAULT})")
    p.add_argument("--out", default=None, type=paths.given_path,
                   help="prepared folder (default: $ECG_PREPARED_DIR or data/prepared)")
    p.add_argument("--records", nargs="+", help="prepare only these records")
    p.add_argument("--no-download", action="store_true", help="never try to download from PhysioNet")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out records that can't be used (too short, one lead, NaN samples...) with a warning")
    p.add_argument("--allow-gaps", action="store_true",
                   help="keep records with NaN/invalid samples or flat stretches (lead off), cutting windows only "
                   "where both leads are valid (a second clear of each gap)")
    p.add_argument("--annotator", default="atr",
                   help="annotation file with the reference beats (default atr: NNN.atr; e.g. qrs for AFDB's beats)")
    p.add_argument("--fetch-only", action="store_true",
                   help="only make sure the data folder has records (downloading MIT-BIH into it if it has none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    check_fetch_only(args)
    cfg = load_config(args.config)
    t0 = time.time()
    data_dir, out_dir = paths.location("data", args.data_dir), paths.location("prepared", args.out)
    if args.fetch_only:      # make demo's first forecast needs a record before anything is prepared
        print(f"{len(find_records(data_dir, not args.no_download))} WFDB records in {data_dir}")
        return None
    meta = prepare(cfg, data_dir, out_dir, args.records, download=not args.no_download, skip_bad=args.skip_bad,
                   allow_gaps=args.allow_gaps, annotator=args.annotator, keep_other=args.out is None)
    print(f"prepared {running.counted(len(meta['records']), 'record')} of {data_dir} in {time.time() - t0:.1f} s "
          f"-> {out_dir}")
    for s in SPLITS:
        print(f"  {s:10s} {meta['windows'][s]:6d} windows  records: {' '.join(meta['splits'][s])}")
    print(f"  scale (mV, per lead): {', '.join(f'{v:.3f}' for v in meta['scale_mv'])}  data hash {meta['data_hash']}")
    return meta


if __name__ == "__main__":
    running.run_main(main)
