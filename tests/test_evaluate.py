"""evaluate.py end to end: any WFDB database, bad records skipped with a reason, prepared splits."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import baselines
import evaluate
import eval_report
import metrics as M
import own_forecaster
import running
from conftest import (MINE, ROOT, TWELVE, edit_tree_after, spike_train, synthetic_ecg, twelve_leads, write_record,
                      write_signal)
from hyper_params import load_config
from paths import SHIPPED, UserError, file_sha256
from prepare_mitbih import cut_windows, evenly_spaced, prepare, read_record


def _run(argv: list[str]) -> tuple[Path, dict]:
    run = evaluate.main(argv)
    return run, json.loads((run / "metrics.json").read_text())


@pytest.fixture
def db250(tmp_path: Path) -> Path:
    """Synthetic database at 250 Hz: three good records (one without annotations, one without an
    MLII lead), one truncated .dat, one header whose signal file is missing."""
    folder = tmp_path / "db250"
    write_record(folder, "a01", seconds=40, fs=250, seed=1)
    write_record(folder, "a02", seconds=40, fs=250, seed=2, annotate=False)
    write_record(folder, "a03", seconds=40, fs=250, seed=3, leads=("V1", "V2"))
    dat = write_record(folder, "a04", seconds=40, fs=250, seed=4).with_suffix(".dat")
    os.truncate(dat, dat.stat().st_size // 3)
    write_record(folder, "a05", seconds=40, fs=250, seed=5).with_suffix(".dat").unlink()
    return folder


def test_wfdb_dir_at_250_hz_skips_bad_records_and_scores_the_rest(db250, tmp_path, capsys):
    run, result = _run(["--model", "zero", "template", "seasonal_ensemble", "--wfdb-dir", str(db250),
                        "--results", str(tmp_path / "results"), "--samples", "16"])
    assert f"note: 1 of 3 records in {db250} has no beat annotations (.atr): a02;" in capsys.readouterr().err
    info = {r["record"]: r for r in result["record_info"]}
    assert sorted(info) == ["a01", "a02", "a03"]
    assert all(r["fs_in"] == 250 and r["windows"] == 6 for r in info.values())
    assert info["a02"]["annotated"] is False and info["a03"]["leads"] == ["V2", "V1"]   # V1 is lead 2
    skipped = {s["record"]: s["reason"] for s in result["skipped"]}
    assert sorted(skipped) == ["a04", "a05"] and all(skipped.values())
    report = (run / "report.md").read_text()
    assert "Skipped 2 records" in report and "- a04: " in report and "- a05: " in report
    assert "## Baselines" in report and "- zero: Predicts 0 mV" in report and "- template: Averages" in report
    assert result["paired"] == [] and "Paired against" not in report        # baselines only: nothing to pair
    per = result["per_record"]
    assert per["zero"]["mse"]["a02"] is not None and per["zero"]["f1_100"]["a02"] is None   # no annotations
    assert "Only 2 of the 3 records have beat annotations" in report       # why F1 is over fewer records
    assert per["template"]["f1_100"]["a01"] > 0.3
    # the zero forecast's MSE is the mean square of the truth, recomputed here from the raw record
    cfg = load_config()
    w = cut_windows([read_record(db250 / "a01", cfg.data)], cfg.data, overlap=False)["signals"].numpy()
    assert per["zero"]["mse"]["a01"] == pytest.approx(np.mean(w[:, cfg.data.window_samples:] ** 2), rel=1e-4)
    assert result["detector"]["100ms"]["sensitivity"] > 0.95
    ens = result["forecasters"]["seasonal_ensemble"]["metrics"]
    assert ens["cov80"][-1]["value"] is not None and ens["crps"][-1]["value"] < ens["mae"][-1]["value"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 3 * len(result["horizons"]) * len(M.METRICS)
    for png in ("error_curves.png", "gallery_zero.png", "gallery_template.png", "gallery_seasonal_ensemble.png"):
        assert (run / png).stat().st_size > 10_000
    # the plotted curves: one row per horizon step; a curve's mean over the steps is the whole horizon's score
    curves = list(csv.DictReader((run / "error_curves.csv").open()))
    assert len(curves) == len(w[0]) - cfg.data.window_samples
    assert float(curves[0]["horizon (s)"]) == pytest.approx(1 / cfg.data.samples_per_second)
    for name in ("zero", "template", "seasonal_ensemble"):
        for key, col in (("mse", "MSE (mV²)"), ("crps", "CRPS (mV)")):
            whole = result["forecasters"][name]["metrics"][key][-1]["value"]
            assert np.mean([float(r[f"{name} {col}"]) for r in curves]) == pytest.approx(whole, rel=1e-4), (name, key)


def test_wfdb_dir_leads_scores_the_channels_named_and_the_report_names_them(tmp_path):
    """--wfdb-dir read a 12-lead folder's II and V1 whatever leads one wanted: --leads names them, matched in each
    record as order_leads matches a lead (a header's 'Lead V5' is V5). The report's records table and its data line
    name them; a record without them is skipped, saying why; without --wfdb-dir --leads is refused, as prepared
    tensors hold the leads they were prepared with."""
    db = tmp_path / "db"
    twelve_leads(db, "a", ())
    twelve_leads(db, "b", (), leads=tuple(f"Lead {name}" for name in TWELVE))
    write_record(db, "c", seconds=40, seed=1)                                       # MLII and V1: no lead II
    run, result = _run(["--model", "zero", "--wfdb-dir", str(db), "--leads", "II", "V5", "--max-windows-per-record",
                        "2", "--results", str(tmp_path / "results")])
    assert {r["record"]: r["leads"] for r in result["record_info"]} == {"a": ["II", "V5"], "b": ["Lead II", "Lead V5"]}
    cfg = load_config()
    rec = read_record(db / "a", cfg.data, annotator=None)
    assert rec.leads == ["II", "V1"]        # without --leads
    report = (run / "report.md").read_text()
    assert "| a | II, V5 | 360 | no | 2 |" in report and "| b | Lead II, Lead V5 | 360 | no | 2 |" in report
    assert ", --leads II V5)" in report
    assert f"- c: {db / 'c'}: no channel is II (--leads' lead 1); its channels are MLII, V1" in report
    with pytest.raises(UserError, match="--leads II V5 chooses the channels read from records of --wfdb-dir"):
        evaluate.main(["--model", "zero", "--leads", "II", "V5", "--results", str(tmp_path / "results")])
    with pytest.raises(UserError, match="^--leads II ii names lead II twice"):   # at once, not once a record
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db), "--leads", "II", "ii", "--results",
                       str(tmp_path / "results")])


def test_a_window_scores_the_same_whatever_else_is_evaluated(db250, tmp_path):
    """Each window is forecast alone with a seed of its own (record name, start): a record's scores do not
    move when other records or windows are evaluated with it."""
    common = ["--model", "template_ensemble", "--wfdb-dir", str(db250), "--samples", "8"]
    _, alone = _run(common + ["--records", "a03", "--results", str(tmp_path / "alone")])
    _, among = _run(common + ["--records", "a01", "a03", "--results", str(tmp_path / "among")])
    per = [r["per_record"]["template_ensemble"] for r in (alone, among)]
    assert among["header"]["data"].startswith(f"wfdb records a01, a03: {db250}")    # not "all records"
    assert per[0]["crps"]["a03"] == per[1]["crps"]["a03"] and per[0]["f1_100"]["a03"] == per[1]["f1_100"]["a03"]
    _, again = _run(common + ["--records", "a03", "--seed", "1", "--results", str(tmp_path / "seed1")])
    assert again["per_record"]["template_ensemble"]["crps"]["a03"] != per[0]["crps"]["a03"]


USER_FORECASTER = """
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HalfLastSecond:
    fs: int

    def predict(self, context, horizon, num_samples=100, seed=0):
        x = np.asarray(context, np.float32)[:, -self.fs:]
        return 0.5 * np.concatenate([x] * (horizon // self.fs + 1), 1)[:, None, :horizon]
"""


def test_your_own_forecaster_is_scored_and_paired_like_a_model(db250, tmp_path):
    (tmp_path / "mine.py").write_text(USER_FORECASTER)
    spec = f"{tmp_path / 'mine.py'}:HalfLastSecond"
    run, result = _run(["--model", spec, "zero", "template_ensemble", "--wfdb-dir", str(db250), "--samples", "4",
                        "--max-windows-per-record", "2", "--results", str(tmp_path / "results")])
    assert result["order"] == ["HalfLastSecond", "zero", "template_ensemble"]
    assert result["forecasters"]["HalfLastSecond"]["deterministic"] is True
    assert {row["forecaster"] for row in result["paired"]} == {"HalfLastSecond"}
    assert (run / "gallery_HalfLastSecond.png").is_file()
    for bad, needle in ((f"{tmp_path / 'nope.py'}:X", "no such file"), (f"{tmp_path / 'mine.py'}:Nope", "no class"),
                        ("numpy:pi", "numpy:pi: numpy has no class or function pi$"),   # not called, as pi(128)
                        ("my_models:Mine", "my_models.py:Mine loads it by its path")):
        with pytest.raises(UserError, match=needle):
            evaluate.main(["--model", bad, "--wfdb-dir", str(db250), "--results", str(tmp_path / "results")])


def test_your_own_forecaster_that_raises_is_named_with_its_own_frames(db250, tmp_path):
    """One's own predict raising is said as forecast.py says it: a UserError (exit status 2) naming FILE.py:NAME and
    the exception, with the traceback of its frames alone; before, evaluate.py stopped in a traceback of its own."""
    mine = tmp_path / "mine.py"
    bug = "x = np.asarray(context)[9]\n        x = np.asarray"             # index 9 of a batch of one
    mine.write_text(USER_FORECASTER.replace("x = np.asarray", bug))
    with pytest.raises(UserError) as caught:
        evaluate.main(["--model", f"{mine}:HalfLastSecond", "--wfdb-dir", str(db250), "--records", "a01",
                       "--max-windows-per-record", "1", "--results", str(tmp_path / "results")])
    said = str(caught.value)
    assert said.startswith(f"--model {mine}:HalfLastSecond: its predict raised IndexError: index 9 is out of bounds")
    assert [line.split(",")[0] for line in said.splitlines() if line.startswith("  File")] == [f'  File "{mine}"']
    assert not any((tmp_path / "results").iterdir())                 # no run folder


OWN_DATA_FORECASTER = """
import numpy as np

from forecast import ForecasterBase
from hyper_params import Config, DataConfig


class Own250:          # as the README's MyForecaster: the data settings of its checkpoint, whatever fs it is given
    def __init__(self, fs):
        self.cfg = Config(data=DataConfig(samples_per_second=250, input_signal_duration=2.0))
        self.fs = 250

    def predict(self, context, horizon, num_samples=100, seed=0):
        return np.zeros((len(context), 1, horizon, 2), np.float32)


class Bare250(Own250):
    def __init__(self, fs):
        self.fs = 250


class Undeclared250(ForecasterBase):     # ForecasterBase's fs is no choice of its: the rate of its data
    def __init__(self, fs):
        self.cfg = Config(data=DataConfig(samples_per_second=250, input_signal_duration=2.0))

    def predict(self, context, horizon, num_samples=100, seed=0):
        return np.zeros((len(context), 1, horizon, 2), np.float32)


class Undeclared:               # neither: the project's data settings and rate
    def __init__(self, fs):
        pass

    def predict(self, context, horizon, num_samples=100, seed=0):
        return np.zeros((len(context), 1, horizon, 2), np.float32)
"""


def test_forecast_py_takes_ones_own_forecaster_at_the_rate_of_its_own_data(db250, tmp_path):
    """forecast.py has no --config: one's own forecaster with data settings of its own (cfg.data), by which
    forecast_record reads the record, was refused as 'it forecasts at 250 Hz but the data is at 128 Hz' (the
    project's config_vqvae.json). It forecasts at its own rate; one declaring 250 Hz with no data settings is still
    refused, since its record would be read at 128 Hz."""
    import forecast

    (tmp_path / "own.py").write_text(OWN_DATA_FORECASTER)
    _, fc = forecast.load_forecaster(f"{tmp_path / 'own.py'}:Own250", "cpu")
    got = forecast.forecast_record(fc, str(db250 / "a01"), 5.0, None, 1, 0)
    assert got["fs"] == 250 and got["context"].shape == (500, 2) and got["samples"].shape == (1, 500, 2)
    with pytest.raises(UserError, match="Bare250: it forecasts at 250 Hz but the data is at 128 Hz"):
        forecast.load_forecaster(f"{tmp_path / 'own.py'}:Bare250", "cpu")


@pytest.mark.parametrize("name, fs, context", [("Undeclared250", 250, 500), ("Undeclared", 128, 384)])
def test_forecast_py_times_ones_own_forecaster_by_the_rate_it_reads_the_record_at(db250, tmp_path, name, fs, context):
    """`fs` is optional for one's own forecaster (the data's rate): forecast.py took it from the forecaster, so one
    with 250 Hz data settings and no `fs` was timed at ForecasterBase's 128 Hz on a record read at 250 Hz (--start
    5 s at sample 640, the horizon cut to 256 samples), and one with neither stopped in an AttributeError."""
    import forecast

    (tmp_path / "own.py").write_text(OWN_DATA_FORECASTER)
    _, fc = forecast.load_forecaster(f"{tmp_path / 'own.py'}:{name}", "cpu")
    got = forecast.forecast_record(fc, str(db250 / "a01"), 5.0, 2.0, 1, 0)
    assert (got["fs"], got["start_sample"], got["context"].shape, got["samples"].shape) == (
        fs, 5 * fs, (context, 2), (1, 2 * fs, 2))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, UserError], ids=["ctrl_c", "disk_full"])
def test_an_evaluation_stopped_while_writing_leaves_no_folder(db250, tmp_path, monkeypatch, stop):
    """Ctrl-C or a failed write while the galleries were drawn (each forecaster forecasts its picks again) left
    results/evaluate-<time>/ with error_curves.png and some galleries, and no metrics.json or report.md: a run
    folder without its scores. A failed evaluation leaves no folder, wherever it stops: only its scores, for the
    same command to go on from."""
    def stopped(*args, **kwargs):
        raise stop()
    monkeypatch.setattr(evaluate, "plot_gallery", stopped)
    with pytest.raises(stop, match="the 1 window scored is kept in .*evaluate-partial-"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db250), "--records", "a01", "--max-windows-per-record",
                       "1", "--results", str(tmp_path / "results")])
    assert [p.name[:18] for p in (tmp_path / "results").iterdir()] == [".evaluate-partial-"]


KILLED_AT_REPORT = """
import json, os, signal, sys
import evaluate, paths
key = evaluate.partial_key
evaluate.partial_key = lambda *args: json.dumps({**json.loads(key(*args)), "code": "pinned"}, sort_keys=True)
write = paths.atomic_write_text
def killed(text, path):
    if str(path).endswith("report.md"):
        os.kill(os.getpid(), signal.SIGKILL)
    write(text, path)
paths.atomic_write_text = killed
evaluate.main(sys.argv[1:])
"""


def test_an_evaluation_killed_while_writing_leaves_no_folder_to_take_for_a_finished_one(db250, tmp_path,
                                                                                          monkeypatch):
    """kill -9 (the out-of-memory killer, a pre-empted job) after metrics.json and metrics.csv, before report.md, left
    results/evaluate-<time>/ with the scores, the plots and no report, and the same command run again made a second
    folder beside it. The files are written into a hidden folder, renamed to evaluate-<time> once all are there; the
    next run removes the one a kill left, and goes on from the scores kept."""
    results = tmp_path / "results"
    args = ["--model", "zero", "--wfdb-dir", str(db250), "--records", "a01", "--max-windows-per-record", "1",
            "--results", str(results)]
    threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}    # the scores kept are this count's
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_REPORT, *args], cwd=ROOT, capture_output=True, text=True,
                            env=threads)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not list(results.glob("evaluate-*"))
    # both runs' keys say the same code (KILLED_AT_REPORT pins it too): each hashes the tree's *.py, and a commit
    # landing between the two (a suite run in a tree others merge into) made the second another code's evaluation,
    # which rightly started over and left the first one's kept scores beside its folder
    key = evaluate.partial_key
    monkeypatch.setattr(evaluate, "partial_key",
                        lambda *a: json.dumps({**json.loads(key(*a)), "code": "pinned"}, sort_keys=True))
    run = evaluate.main(args)
    assert sorted(p.name for p in results.iterdir()) == [run.name]
    assert (run / "report.md").is_file() and not list(run.glob(".*"))
    header = json.loads((run / "metrics.json").read_text())["header"]
    assert header["resumed"] == "went on from an interrupted run's 1 of 1 windows; the wall time is this part's"


CHECKPOINTED = """
import numpy as np


class Loaded:
    def __init__(self, fs, checkpoint=None, device="cpu"):
        self.fs, self.device = fs, device
        self.level = float(open(checkpoint).read()) if checkpoint else 0.0

    def predict(self, context, horizon, num_samples=100, seed=0):
        return np.full((len(context), 1, horizon, 2), self.level, np.float32)


def bare(fs):
    return Loaded(fs)
"""


def test_your_own_forecaster_is_handed_its_checkpoint_and_device_and_the_report_names_its_code(db250, tmp_path):
    """FILE.py:NAME=CHECKPOINT calls NAME(fs, checkpoint=CHECKPOINT), with device= when NAME takes one; the report
    names the file's SHA-256, since git's commit says nothing of an untracked file of one's own, and the
    checkpoint's."""
    import hashlib

    mine, ckpt = tmp_path / "mine.py", tmp_path / "level.txt"
    mine.write_text(CHECKPOINTED)
    ckpt.write_text("0.25")
    f = evaluate.make_forecaster(f"{mine}:Loaded={ckpt}", 128, "cpu")
    assert (f.level, f.device) == (0.25, "cpu")
    assert evaluate.make_forecaster(f"{mine}:Loaded", 128, None).level == 0.0
    with pytest.raises(UserError, match="bare takes no checkpoint argument"):
        evaluate.make_forecaster(f"{mine}:bare={ckpt}", 128, "cpu")
    _, result = _run(["--model", f"{mine}:Loaded={ckpt}", "zero", "--wfdb-dir", str(db250), "--records", "a01",
                      "--samples", "2", "--max-windows-per-record", "1", "--results", str(tmp_path / "results")])
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()[:16]
    assert result["header"]["own forecasters"] == f"{mine}:Loaded={ckpt}: {mine} sha256 {digest}"
    # its weights too: the code's hash says nothing of which checkpoint it loaded
    assert result["header"]["checkpoints"] == f"Loaded: {ckpt} sha256 {file_sha256(ckpt)}"
    assert result["per_record"]["Loaded"]["mse"]["a01"] != result["per_record"]["zero"]["mse"]["a01"]


def test_the_report_names_ones_own_code_as_it_ran(db250, tmp_path, monkeypatch):
    """A helper module of one's own edited while the evaluation runs: the report names the code that ran, taken at
    the start as the commit and checkpoints are (it hashed the files at the end)."""
    mine, helper = tmp_path / "mine.py", tmp_path / "mine_helper.py"
    mine.write_text(USER_FORECASTER.replace("import numpy as np\n", "import mine_helper\nimport numpy as np\n"))
    helper.write_text("LEVEL = 0.5\n")
    said = own_forecaster.own_code([f"{mine}:HalfLastSecond"])
    scored = evaluate.evaluate

    def then_edited(*args, **kwargs):
        out = scored(*args, **kwargs)
        helper.write_text("LEVEL = 0.25\n")
        return out
    monkeypatch.setattr(evaluate, "evaluate", then_edited)
    _, result = _run(["--model", f"{mine}:HalfLastSecond", "--wfdb-dir", str(db250), "--records", "a01",
                      "--max-windows-per-record", "1", "--results", str(tmp_path / "results")])
    assert result["header"]["own forecasters"] == said and f"{helper} sha256" in said
    assert own_forecaster.own_code([f"{mine}:HalfLastSecond"]) != said


def test_a_forecaster_of_ones_own_learns_its_patients_from_a_trainer_checkpoint_without_a_vqvae():
    """ForecasterBase.from_run on what training.Trainer saves for a model of one's own (no 'vqvae' key): it read
    ckpt['vqvae'] and failed with KeyError: 'vqvae'."""
    from forecast import ForecasterBase

    mine = ForecasterBase()
    mine.cfg = load_config()
    ckpt = {"kind": "mine", "model": {}, "meta": {"train_records": ["101", "106"], "validation_records": ["109"]}}
    mine.from_run("mine/best.pt", ckpt)
    assert (mine.checkpoint, mine.train_records, mine.validation_records) == ("mine/best.pt", ["101", "106"], ["109"])
    assert evaluate.seen_patients(mine, ["100", "106", "109"]) == ["106"]


def test_wfdb_dir_holds_one_record_at_a_time_and_keeps_the_same_windows(tmp_path, monkeypatch):
    """--wfdb-dir with --max-windows-per-record cuts each record's windows as it is read and lets its signal go: a
    folder of 24 h records held every record and all its windows (176 MB a record) before keeping a few. The
    windows kept are those limit_windows keeps of all of them."""
    import weakref

    import prepare_mitbih as pm
    for i in range(4):
        write_record(tmp_path / "db", f"r{i}", seconds=60, fs=250, seed=i)
    cfg, alive, held, read = load_config(), [], [], pm.read_record

    def reading(*args, **kwargs):
        held.append(sum(ref() is not None for ref in alive))        # earlier records' signals still in memory
        rec = read(*args, **kwargs)
        alive.append(weakref.ref(rec.signal))
        return rec
    monkeypatch.setattr(pm, "read_record", reading)
    w = evaluate.load_wfdb(tmp_path / "db", cfg, progress=False, per_record=3)
    assert held == [0, 0, 0, 0]
    monkeypatch.setattr(pm, "read_record", read)
    every = evaluate.limit_windows(evaluate.load_wfdb(tmp_path / "db", cfg, progress=False), None, 3)
    assert len(w.record) == 12 and w.records == every.records == ["r0", "r1", "r2", "r3"]
    for key in ("signals", "record", "start", "beat_ptr", "beat_pos", "beat_sym"):
        np.testing.assert_array_equal(getattr(w, key), getattr(every, key))
    assert w.leads == every.leads and w.source == every.source


def test_records_listed_in_subfolders_are_named_and_hashed_as_listed(tmp_path):
    """PhysioNet's RECORDS may list records in subfolders (PTB-XL: records500/00000/00001_hr): named by their file
    name alone, their files were looked for in the folder itself, and the report's input hash was of no file."""
    from prepare_mitbih import hash_inputs
    for i, name in enumerate(("a", "b")):
        write_record(tmp_path / "db" / "sub", name, seconds=20, fs=250, seed=i)
    (tmp_path / "db" / "RECORDS").write_text("sub/a\nsub/b\n")
    w = evaluate.load_wfdb(tmp_path / "db", load_config(), progress=False)
    assert w.records == ["sub/a", "sub/b"]
    assert w.source["input_hash"] == hash_inputs(tmp_path / "db", ["sub/a", "sub/b"]) != hash_inputs(tmp_path, [])


def test_a_model_is_paired_against_the_best_baseline_on_each_score(db250):
    cfg = load_config()
    fs, c = cfg.data.samples_per_second, cfg.data.window_samples
    w = evaluate.load_wfdb(db250, cfg, progress=False)
    baselines = frozenset(["zero", "seasonal", "template_ensemble"])
    fc = {n: evaluate.make_forecaster(n, fs) for n in baselines}
    fc["model"] = evaluate.make_forecaster("seasonal_ensemble", fs)    # any forecaster not among the baselines
    scores, truth = evaluate.evaluate(fc, w, c, fs, 16, 0, progress=False)
    s = evaluate.summarize(scores, truth, w, fs, w.signals.shape[1] - c, baselines=baselines)
    rows = {(r["metric"], r["horizon"]): r for r in s["paired"]}
    assert sorted(rows) == [("crps", "all"), ("f1_100", "all"), ("mse", "0-1 s"), ("mse", "all")]
    assert {r["forecaster"] for r in s["paired"]} == {"model"}
    for (metric, horizon), r in rows.items():
        j = s["horizons"].index(horizon)
        value = {b: s["forecasters"][b]["metrics"][metric][j]["value"] for b in baselines}
        assert r["baseline"] == (max if metric == "f1_100" else min)(value, key=value.get)
        assert r["baseline_value"] == value[r["baseline"]]
    per = s["per_record"]
    for metric in ("crps", "f1_100"):
        r = rows[(metric, "all")]
        d = [per["model"][metric][k] - per[r["baseline"]][metric][k] for k in per["model"][metric]
             if per["model"][metric][k] is not None]
        assert r["records"] == len(d) == (3 if metric == "crps" else 2)     # a02 has no annotations: no F1
        assert r["difference"]["value"] == pytest.approx(np.mean(d), abs=1e-5)
        assert r["difference"]["ci"][0] <= r["difference"]["value"] <= r["difference"]["ci"][1]
        assert r["better_on"] == sum((x < 0) if metric == "crps" else (x > 0) for x in d)
        assert r["worse_on"] == sum((x > 0) if metric == "crps" else (x < 0) for x in d)
    report = eval_report.markdown_report(s, {}, w)
    assert "## Paired against the best baseline" in report and "| model | CRPS (mV) | all | " in report


def test_models_are_paired_with_each_other_in_run_order(db250):
    cfg = load_config()
    fs, c = cfg.data.samples_per_second, cfg.data.window_samples
    w = evaluate.load_wfdb(db250, cfg, progress=False)
    fc = {"zero": evaluate.make_forecaster("zero", fs),                     # the only baseline
          "a": evaluate.make_forecaster("template_ensemble", fs), "b": evaluate.make_forecaster("seasonal", fs),
          "c": evaluate.make_forecaster("mean", fs)}
    scores, truth = evaluate.evaluate(fc, w, c, fs, 16, 0, progress=False)
    s = evaluate.summarize(scores, truth, w, fs, w.signals.shape[1] - c, baselines=frozenset(["zero"]))
    rows = s["paired_models"]
    assert [(r["forecaster"], r["against"]) for r in rows[::4]] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert len(rows) == 3 * 4 and {r["forecaster"] for r in s["paired"]} == {"a", "b", "c"}
    per = s["per_record"]
    for r in rows:
        j = s["horizons"].index(r["horizon"])
        assert r["against_value"] == s["forecasters"][r["against"]]["metrics"][r["metric"]][j]["value"]
        if r["horizon"] != "all":
            continue
        d = [per[r["forecaster"]][r["metric"]][k] - per[r["against"]][r["metric"]][k] for k in per["a"][r["metric"]]
             if per["a"][r["metric"]][k] is not None]
        assert r["records"] == len(d) and r["difference"]["value"] == pytest.approx(np.mean(d), abs=1e-5)
        assert r["better_on"] == sum((x > 0) if r["metric"] == "f1_100" else (x < 0) for x in d)
    # sampled drafts score a lower CRPS than a deterministic copy of the last beat, on every record
    crps = next(r for r in rows if (r["forecaster"], r["against"], r["metric"]) == ("a", "b", "crps"))
    assert crps["difference"]["value"] < 0 and crps["better_on"] == 3
    report = eval_report.markdown_report(s, {}, w)
    assert "## Models paired with each other" in report and "| a | CRPS (mV) | all | b | " in report
    one = evaluate.summarize({k: scores[k] for k in ("zero", "a")}, truth, w, fs, w.signals.shape[1] - c,
                             baselines=frozenset(["zero"]))
    assert one["paired_models"] == [] and "Models paired" not in eval_report.markdown_report(one, {}, w)


def test_real_mitbih_records_through_wfdb_dir(mitdb, tmp_path):
    run, result = _run(["--model", "baselines", "--wfdb-dir", str(mitdb), "--records", "100", "208",
                        "--max-windows-per-record", "12", "--samples", "20", "--results", str(tmp_path)])
    assert [r["record"] for r in result["record_info"]] == ["100", "208"]
    assert all(r["leads"][0] == "MLII" and r["windows"] == 12 for r in result["record_info"])
    assert result["detector"]["100ms"]["sensitivity"] > 0.95
    assert result["detector"]["100ms"]["positive_predictivity"] > 0.95
    table = result["forecasters"]
    assert result["order"] == list(evaluate.BASELINES)
    assert table["persistence"]["metrics"]["prd"][-1]["value"] > table["zero"]["metrics"]["prd"][-1]["value"]
    assert table["seasonal"]["metrics"]["f1_100"][-1]["value"] > table["zero"]["metrics"]["f1_100"][-1]["value"]


def test_wfdb_dir_scores_the_windows_between_gaps(tmp_path):
    """A record with a dropout is scored on its clean windows, and the report says what was left out."""
    x, _ = synthetic_ecg(30.0, 360.0, seed=1)
    x[3600:4320, 1] = np.nan                                    # lead 2 lost from 10 s to 12 s
    write_signal(tmp_path / "db", "g", x)
    run, result = _run(["--model", "seasonal", "--wfdb-dir", str(tmp_path / "db"), "--samples", "4",
                        "--results", str(tmp_path / "results")])
    assert result["skipped"] == [] and result["record_info"][0]["windows"] == 3    # from 0, 13 and 19 s
    mse = result["per_record"]["seasonal"]["mse"]["g"]                       # the one record's mean is the table's
    assert mse > 0 and mse == result["forecasters"]["seasonal"]["metrics"]["mse"][-1]["value"]
    assert "Windows leave out the gaps (NaN/invalid or flat samples) of g (2.0 s)." in (run / "report.md").read_text()


def test_prepared_split_and_record_filter(synthetic_db, tmp_path):
    cfg = load_config()
    prepared = tmp_path / "prepared"
    prepare(cfg, synthetic_db, prepared, download=False)
    run, result = _run(["--model", "persistence", "seasonal", "--prepared", str(prepared), "--split", "test",
                        "--results", str(tmp_path / "results"), "--max-windows-per-record", "4"])
    test_records = json.loads((prepared / "meta.json").read_text())["splits"]["test"]
    assert [r["record"] for r in result["record_info"]] == test_records
    assert all(r["windows"] == 4 for r in result["record_info"])
    assert "| persistence |" in (run / "report.md").read_text()
    _, one = _run(["--model", "zero", "--prepared", str(prepared), "--records", test_records[-1],
                   "--results", str(tmp_path / "results")])
    assert [r["record"] for r in one["record_info"]] == test_records[-1:]
    with pytest.raises(UserError, match=r"records \['999'\] are not in .*prepared/test\.pt \(it has "
                                        + ", ".join(test_records) + r"\)$"):        # the split's file and records
        evaluate.main(["--model", "zero", "--prepared", str(prepared), "--records", "999",
                       "--results", str(tmp_path / "results")])


@pytest.mark.parametrize("meta", [None, "[]", '{"records": []}'])
def test_a_prepared_split_without_its_meta_json_says_what_it_does_not_know(synthetic_db, tmp_path, meta):
    """test.pt copied without meta.json: its records' input rates showed as `nan` in the records table, and every
    record counted as annotated, so one without annotations scored each forecast beat a false positive (F1 0,
    not undefined). The rate is `—`, and a record is annotated when its windows hold reference beats. A meta.json
    that is not an object, or whose records are not, is as good as none (it was an AttributeError traceback)."""
    (synthetic_db / "103.atr").unlink()         # 100, 103 and 105 are the test records (MIT-BIH's DS2)
    prepare(load_config(), synthetic_db, tmp_path / "prepared", download=False)
    (tmp_path / "prepared" / "meta.json").unlink()
    if meta is not None:
        (tmp_path / "prepared" / "meta.json").write_text(meta)
    run, result = _run(["--model", "template", "--prepared", str(tmp_path / "prepared"), "--max-windows-per-record",
                        "3", "--results", str(tmp_path / "results")])
    assert {r["record"]: r["annotated"] for r in result["record_info"]} == {"100": True, "103": False, "105": True}
    f1 = result["per_record"]["template"]["f1_100"]
    assert f1["100"] > 0.3 and f1["103"] is None
    rows = _table((run / "report.md").read_text(), "## Records", "| record |")
    assert [row[2] for row in rows] == ["—"] * 3


def test_a_record_not_in_the_wfdb_dir_is_named_with_the_records_there_are(synthetic_db, tmp_path):
    """--records 999 on a folder said only that 999 is not there; a prepared split's error lists its records."""
    with pytest.raises(UserError, match=r"records \['999'\] are not in .*wfdb \(it has 100, 101, 102, 103, 104, "
                                        r"105\)$"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(synthetic_db), "--records", "100", "999",
                       "--results", str(tmp_path / "results")])


def test_a_record_its_folders_records_file_leaves_out_is_named_as_such(synthetic_db, tmp_path):
    """A record added beside a PhysioNet RECORDS index that does not list it was 'not in' the folder that holds its
    .hea: the error says RECORDS leaves it out."""
    (synthetic_db / "RECORDS").write_text("100\n101\n")
    with pytest.raises(UserError, match=r"are not in .*wfdb \(it has 100, 101\); .*RECORDS leaves out 105, whose "
                                        r"\.hea is there: add it to RECORDS to read it$"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(synthetic_db), "--records", "100", "105",
                       "--results", str(tmp_path / "results")])


def test_a_header_its_folders_records_file_leaves_out_is_noted(synthetic_db, capsys):
    """A record added beside a PhysioNet RECORDS index that does not list it was left out of a --wfdb-dir run
    without a word, the report saying 'all records'."""
    (synthetic_db / "RECORDS").write_text("100\n101\n")
    w = evaluate.load_wfdb(synthetic_db, load_config(), progress=False)
    assert w.records == ["100", "101"]
    assert (f"note: {synthetic_db / 'RECORDS'} does not list 102, 103, 104, 105, whose .hea are there: not read (add "
            f"them to RECORDS to read them)") in capsys.readouterr().err
    evaluate.load_wfdb(synthetic_db, load_config(), records=["100"], progress=False)   # chosen by name: no note
    assert "does not list" not in capsys.readouterr().err


def test_a_split_of_ones_own_is_scored_without_its_config(synthetic_db, tmp_path):
    """Data prepared alike with record lists of one's own is scored with the default config (no --config F), on
    its own test records; data prepared otherwise (another band) is still refused."""
    from hyper_params import config_from_dict, data_hash

    raw = json.loads((ROOT / "config_vqvae.json").read_text())
    own = {**raw, "data": {**raw["data"], "test_records": ["104", "103"], "validation_records": ["105"]}}
    prepare(config_from_dict(own), synthetic_db, tmp_path / "own", download=False)
    _, result = _run(["--model", "zero", "--prepared", str(tmp_path / "own"), "--max-windows-per-record", "2",
                      "--results", str(tmp_path / "results")])
    assert [r["record"] for r in result["record_info"]] == ["103", "104"]
    # the header names the hash of the tensors scored, not only the default config's (which lists other records)
    tensors = torch.load(tmp_path / "own" / "test.pt", weights_only=True)
    assert f"(data hash {tensors['data_hash']}, input hash {tensors['input_hash']})" in result["header"]["data"]
    assert tensors["data_hash"] != data_hash(config_from_dict(raw).data)
    other = {**own, "data": {**own["data"], "filter_band": [0.5, 20.0]}}
    prepare(config_from_dict(other), synthetic_db, tmp_path / "other", download=False)
    with pytest.raises(UserError, match=r"prepared unlike the data section of --config \(filter_band .*\): pass the "
                                        r"config it was prepared with as --config"):
        evaluate.main(["--model", "zero", "--prepared", str(tmp_path / "other"), "--results", str(tmp_path / "results")])


def test_the_reports_command_names_the_folders_its_environment_chose(synthetic_db, tmp_path, monkeypatch):
    """Data read from $ECG_PREPARED_DIR and the report written under $ECG_RESULTS_DIR: the report's command, said
    again without them, read data/prepared and wrote results/ (a partial run went on elsewhere), so it names them;
    not a variable whose flag it gives, which wins over it."""
    from hyper_params import config_from_dict

    raw = json.loads((ROOT / "config_vqvae.json").read_text())
    own = {**raw, "data": {**raw["data"], "test_records": ["104"], "validation_records": ["105"]}}
    prepare(config_from_dict(own), synthetic_db, tmp_path / "my data", download=False)
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "my data"))
    monkeypatch.setenv("ECG_RESULTS_DIR", str(tmp_path / "results"))
    _, result = _run(["--model", "zero", "--max-windows-per-record", "1"])
    command = result["header"]["command"]
    assert shlex.split(command) == [f"ECG_PREPARED_DIR={tmp_path / 'my data'}",
                                    f"ECG_RESULTS_DIR={tmp_path / 'results'}",
                                    "python3", "evaluate.py", "--model", "zero", "--max-windows-per-record", "1"]
    assert subprocess.run(["bash", "-c", f"{command.split(' python3 ')[0]} env"], capture_output=True, text=True,
                          check=True).stdout.count(str(tmp_path / "my data")) == 1     # assignments a shell takes
    _, result = _run(["--model", "zero", "--max-windows-per-record", "1", "--prepared", str(tmp_path / "my data")])
    assert shlex.split(result["header"]["command"])[:2] == [f"ECG_RESULTS_DIR={tmp_path / 'results'}", "python3"]


def test_data_prepared_unlike_config_is_the_error_without_the_models_warning(synthetic_db, tmp_path, monkeypatch,
                                                                              capsys):
    """A model scored on the data it was trained on, prepared otherwise, without --config: the error (pass the
    config as --config) came after a warning that the model was trained on data prepared differently, which it
    was not; the models' warnings wait for the windows now."""
    from hyper_params import config_from_dict

    raw = json.loads((ROOT / "config_vqvae.json").read_text())
    other = {**raw, "data": {**raw["data"], "filter_band": [0.5, 20.0], "test_records": ["104"],
                             "validation_records": ["105"]}}
    prepare(config_from_dict(other), synthetic_db, tmp_path / "other", download=False)
    monkeypatch.setattr(evaluate, "make_forecaster", lambda *args: SimpleNamespace(cfg=config_from_dict(other)))
    with pytest.raises(UserError, match=r"prepared unlike the data section of --config \(filter_band"):
        evaluate.main(["--model", "mine.pt", "--prepared", str(tmp_path / "other"), "--results", str(tmp_path / "r")])
    assert "prepared differently" not in capsys.readouterr().err


def test_a_checkpoint_at_another_rate_than_the_config_names_config(tmp_path, monkeypatch):
    """A model trained at 250 Hz scored with the default config: the 128 Hz is --config's, not the data's, and
    the error says which flag to set."""
    (tmp_path / "best.pt").write_bytes(b"")
    monkeypatch.setattr(evaluate.Forecaster, "from_checkpoint", lambda path, device=None: SimpleNamespace(fs=250))
    with pytest.raises(UserError, match=r"forecasts at 250 Hz but the data is at 128 Hz \(--config's "
                                        r"data.samples_per_second.*pass the VQ-VAE config the model was trained with"):
        evaluate.make_forecaster(str(tmp_path / "best.pt"), 128)


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="missing.pt"):
        evaluate.main(["--model", str(tmp_path / "missing.pt"), "--results", str(tmp_path)])
    with pytest.raises(UserError, match="samples"):
        evaluate.main(["--model", "zero", "--samples", "0", "--results", str(tmp_path)])
    with pytest.raises(UserError, match=r"^no WFDB records \(\*\.hea\) in "):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(tmp_path), "--results", str(tmp_path)])


def test_cli_prints_one_error_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--model", str(tmp_path / "nope.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("error:") and "nope.pt" in out.stderr and "Traceback" not in out.stderr


def test_every_forecaster_keeps_its_own_label():
    """Three Transformer checkpoints (and one passed twice) get four rows, not two."""
    taken: dict = {}
    for spec in ("ck/transformer-a/best.pt", "ck/transformer-b/best.pt", "ck/transformer-c/best.pt",
                 "ck/transformer-c/best.pt"):
        taken[evaluate.unique_label("transformer", spec, taken)] = spec
    assert list(taken) == ["transformer", "transformer (transformer-b/best)", "transformer (transformer-c/best)",
                           "transformer #2"]


def test_scoring_a_model_on_its_training_patients_is_flagged(tmp_path):
    """A folder naming MIT-BIH training and validation records (101 trains the shipped models, 109 chose them; 100
    is DS2): the report says those scores are no test."""
    for name in ("100", "101", "109"):
        write_record(tmp_path / "db", name, seconds=12, seed=int(name))
    run, result = _run(["--model", "pretrained", "pretrained_sde", "zero", "--wfdb-dir", str(tmp_path / "db"),
                        "--samples", "2", "--max-windows-per-record", "1", "--results", str(tmp_path / "results")])
    warning = result["header"]["warnings"]
    assert all(f"{m} was trained on records 101," in warning for m in ("transformer", "latent_sde"))
    assert "checkpoint on records 109," in warning and "100" not in warning
    assert "no test" in (run / "report.md").read_text()
    assert result["header"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    # which weights were scored: each checkpoint's file (within the project: from its root, the same in every
    # checkout) and SHA-256, not its name alone, under the forecaster's name in the report's tables (not the spec)
    assert result["header"]["checkpoints"] == "; ".join(
        f"{label}: {name} sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
        for label, name, path in (("transformer", "pretrained/forecaster.pt", SHIPPED["transformer"]),
                                  ("latent_sde", "pretrained/latent_sde.pt", SHIPPED["latent_sde"])))


def test_the_report_names_the_weights_loaded_though_the_file_is_replaced_after(tmp_path, monkeypatch):
    """evaluate.py hashed each checkpoint file once its forecasters were built: a best.pt its run saved in between
    was named in place of the weights scored. A Forecaster's digest is of the bytes it loaded."""
    import shutil

    ckpt = tmp_path / "best.pt"
    shutil.copy(SHIPPED["transformer"], ckpt)
    build = evaluate.build_forecasters

    def then_replaced(*a, **k):
        out = build(*a, **k)
        shutil.copy(SHIPPED["latent_sde"], ckpt)        # the run saves a new best.pt
        return out
    monkeypatch.setattr(evaluate, "build_forecasters", then_replaced)
    write_record(tmp_path / "db", "r", seconds=12, seed=0)
    _, result = _run(["--model", str(ckpt), "zero", "--wfdb-dir", str(tmp_path / "db"), "--samples", "2",
                      "--max-windows-per-record", "1", "--results", str(tmp_path / "results")])
    assert result["header"]["checkpoints"] == f"transformer: {ckpt} sha256 {file_sha256(SHIPPED['transformer'])}"
    assert file_sha256(ckpt) != file_sha256(SHIPPED["transformer"])


def test_the_device_is_chosen_and_checked(tmp_path):
    write_record(tmp_path / "db", "r", seconds=12, seed=0)
    common = ["--model", "pretrained", "--wfdb-dir", str(tmp_path / "db"), "--samples", "2",
              "--max-windows-per-record", "1", "--results", str(tmp_path / "results")]
    _, result = _run(common + ["--device", "cpu"])
    assert result["header"]["device"] == "cpu"
    with pytest.raises(UserError, match="bogus"):
        evaluate.main(common + ["--device", "bogus"])


def test_window_seed_depends_on_the_record_start_and_seed():
    """Two patients' windows at the same start must not draw the same noise; a window's seed is the same in
    every process (another interpreter, another string-hash salt), so an evaluation run again scores alike."""
    salt = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    r = subprocess.run([sys.executable, "-c", "import evaluate; print(evaluate.window_seed(0, '100', 0))"], cwd=ROOT,
                       env={**os.environ, "PYTHONHASHSEED": salt}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == evaluate.window_seed(0, "100", 0)
    assert evaluate.window_seed(0, "100", 0) != evaluate.window_seed(0, "101", 0)
    assert evaluate.window_seed(0, "100", 0) != evaluate.window_seed(0, "100", 768)
    assert evaluate.window_seed(0, "100", 0) != evaluate.window_seed(1, "100", 0)


def test_rhythm_is_averaged_over_the_first_sample_paths():
    c = h = 384
    beats = np.arange(30, c + h, 100)
    truth = spike_train(c + h, beats)
    paths = np.zeros((1, M.RHYTHM_PATHS + 5, h))
    paths[0, 0] = truth[c:]                              # one path with the beats, the others flat
    paths[0, M.RHYTHM_PATHS:] = truth[c:]         # beyond the first RHYTHM_PATHS: not scored
    s = evaluate.rhythm_of_paths(truth[None, :c], paths, np.zeros(len(beats), np.int64), beats, 128,
                                 M.segment_edges(h, 128), np.array([True]))
    m = M.record_metrics({k: v.sum(0) for k, v in s.items()})
    k = 1 / M.RHYTHM_PATHS                        # TP k n, FN (1 - k) n, FP 0
    assert m["f1_100"][-1] == pytest.approx(2 * k / (2 * k + 1 - k))



def test_rhythm_of_paths_scores_all_paths_at_once_exactly_as_one_path_at_a_time():
    """rhythm_of_paths scores its paths in one rhythm_sums call, as m * B windows: each window's sums must be the
    same numbers, to the bit, as scoring the paths one at a time, windows unannotated, flat or with no beats
    included, and windows' beats never matched to another window's."""
    c = h = 384
    rng = np.random.default_rng(3)
    windows = [np.arange(30, c + h, 100), np.arange(50, c + h, 70), np.arange(10, c + h, 120)]
    truth = np.stack([spike_train(c + h, b) for b in windows]) + 0.02 * rng.standard_normal((3, c + h))
    paths = np.stack([spike_train(h, np.sort(rng.choice(h, size=rng.integers(0, 6), replace=False)))
                      + 0.02 * rng.standard_normal(h) for _ in range(3 * 14)]).reshape(3, 14, h)
    paths[1, 2] = 0.0                                               # a flat path
    rows = np.concatenate([np.full(len(b), i) for i, b in enumerate(windows)])
    pos, edges, annotated = np.concatenate(windows), M.segment_edges(h, 128), np.array([True, False, True])
    got = evaluate.rhythm_of_paths(truth[:, :c], paths, rows, pos, 128, edges, annotated)
    want: dict[str, np.ndarray] = {}
    for j in range(M.RHYTHM_PATHS):
        for key, v in M.rhythm_sums(truth[:, :c], paths[:, j], rows, pos, 128, edges, annotated).items():
            want[key] = want.get(key, 0) + v / M.RHYTHM_PATHS
    assert list(got) == list(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert want["tp100"].sum() > 0 and want["fp100"].sum() > 0 and want["fn100"].sum() > 0

def test_a_records_f1_pools_its_windows_beat_counts_and_each_record_weighs_the_same():
    """As the README says: record 0's windows hit 1 of 1 beats and 0 of 3, so its F1 is 2·1 / (2·1 + 3) = 0.4 from
    the summed counts (not 0.5, the mean of its windows' F1s); record 1's one window hits 1 of 1; the table's F1 is
    the mean over records, 0.7 (not 2/3 over the three windows, nor 0.5 from pooling all beats)."""
    s = evaluate.Scores(3)
    zeros = np.zeros((1, 2))
    for r, idx, tp, fn in ((0, [0], 1, 0), (0, [1], 0, 3), (1, [2], 1, 0)):
        sums = {f"{k}{tol}": v + zeros for tol in M.TOLERANCES_MS for k, v in (("tp", tp), ("fn", fn), ("fp", 0))}
        s.add(r, np.array(idx), sums, {}, 1, 2)
    tables = evaluate.scored_tables({"f": s}, np.array([0, 1]), ["a", "b"], ["0-1 s", "all"], frozenset(), 100, 0)
    assert tables["per_record"]["f"]["f1_100"] == {"a": 0.4, "b": 1.0}
    assert tables["forecasters"]["f"]["metrics"]["f1_100"][-1]["value"] == pytest.approx(0.7)


def test_max_windows_per_record_spreads_them_over_the_record():
    n = 10
    w = evaluate.Windows(np.zeros((2 * n, 8, 2), np.float32), np.repeat([0, 1], n), np.tile(np.arange(n) * 8, 2),
                         np.arange(2 * n + 1), np.zeros(2 * n, np.int64), ["a", "b"], np.ones(2, bool),
                         [["MLII", "V1"]] * 2, [360.0] * 2)
    got = evaluate.limit_windows(w, None, 3)
    assert got.start.tolist() == [0, 32, 72] * 2              # first, middle, last window of each record
    assert got.beat_ptr.tolist() == list(range(7))


def _one_record_windows(signals: np.ndarray, beats: list[np.ndarray]) -> evaluate.Windows:
    """Windows [N, T, 2] laid end to end in one annotated record, r1, with these reference beats each."""
    n = len(signals)
    return evaluate.Windows(signals.astype(np.float32), np.zeros(n, np.int64), np.arange(n) * signals.shape[1],
                            np.concatenate([[0], np.cumsum([len(b) for b in beats])]).astype(np.int64),
                            np.concatenate(beats).astype(np.int64), ["r1"], np.array([True]), [["MLII", "V1"]],
                            [360.0])


def test_a_forecasters_warnings_name_the_record_and_window_they_came_from():
    """A warning given while forecasting one window of an evaluation is said with the forecaster, record and window
    start in front (bare, it named none); one repeated word for word (a model's own, as a short context's) is said
    at its first window only, over the whole evaluation (`said` is shared by its calls)."""
    import warnings

    w = _one_record_windows(np.zeros((3, 12, 2)), [np.zeros(0)] * 3)       # windows start at 0, 12 and 24 samples

    class Warns:
        def predict(self, x, horizon, num_samples=100, seed=0):
            warnings.warn(f"odd context (seed {seed % 7})")
            warnings.warn("this model was trained on longer contexts")
            return np.zeros((1, num_samples, horizon, 2), np.float32)

    said: set = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate.predict_windows(Warns(), "mine", w, np.array([1, 2]), 8, 2, seed=0, fs=6, said=said)
        evaluate.predict_windows(Warns(), "mine", w, np.array([0]), 8, 2, seed=0, fs=6, said=said)
    seeds = [evaluate.window_seed(0, "r1", start) % 7 for start in (12, 24, 0)]
    assert [str(c.message) for c in caught] == [
        f"mine on record r1 at 2 s: odd context (seed {seeds[0]})",
        "mine on record r1 at 2 s: this model was trained on longer contexts",
        f"mine on record r1 at 4 s: odd context (seed {seeds[1]})",
        f"mine on record r1 at 0 s: odd context (seed {seeds[2]})"]
    assert all(c.category is UserWarning and c.filename == __file__ for c in caught)


def test_a_warning_whose_class_takes_more_than_a_message_is_said_again_not_a_crash():
    """A forecaster's warning of a class built from more than a message (CodeWarning(code, text)) stopped the
    evaluation in a TypeError traceback when it was said again with its window; it is said as a UserWarning naming
    its class, and the forecast goes on."""
    import warnings

    class CodeWarning(UserWarning):
        def __init__(self, code: int, text: str):
            super().__init__(f"code {code}: {text}")

    class Warns:
        def predict(self, x, horizon, num_samples=100, seed=0):
            warnings.warn(CodeWarning(7, "odd context"))
            return np.zeros((1, num_samples, horizon, 2), np.float32)

    w = _one_record_windows(np.zeros((2, 12, 2)), [np.zeros(0)] * 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = evaluate.predict_windows(Warns(), "mine", w, np.array([0, 1]), 8, 2, seed=0, fs=6)
    assert out.shape == (2, 2, 4, 2)
    assert [(c.category, str(c.message)) for c in caught] == [
        (UserWarning, "mine on record r1 at 0 s: CodeWarning: code 7: odd context")]


def test_each_forecaster_sees_its_windows_context_alone():
    """The context handed to predict is the window's first `context` samples, never its horizon."""
    rng = np.random.default_rng(0)
    w = _one_record_windows(rng.normal(size=(3, 12, 2)), [np.zeros(0)] * 3)
    seen = []

    class Spy:
        def predict(self, x, horizon, num_samples=100, seed=0):
            seen.append((x.copy(), horizon, seed))
            return np.zeros((1, num_samples, horizon, 2), np.float32)

    out = evaluate.predict_windows(Spy(), "spy", w, np.array([2, 0]), 8, 3, seed=0, fs=8)
    assert out.shape == (2, 3, 4, 2)
    for (x, horizon, seed), i in zip(seen, (2, 0)):
        np.testing.assert_array_equal(x, w.signals[i:i + 1, :8])
        assert horizon == 4 and seed == evaluate.window_seed(0, "r1", int(w.start[i]))


def test_detector_check_tells_sensitivity_from_positive_predictivity():
    """True horizons with every annotated beat plus one unannotated spike each: the detector misses nothing
    (sensitivity 100 %) but finds one beat too many per window (positive predictivity TP / (TP + FP)); report.md
    shows each in its own column."""
    c, h = 384, 384
    beats = np.arange(30, c + h, 100)
    x = spike_train(c + h, beats) + spike_train(c + h, [480])     # an extra spike between two beats
    signals = np.repeat(np.stack([x, -0.5 * x], -1)[None], 3, axis=0)
    w = _one_record_windows(signals, [beats] * 3)
    scores, truth = evaluate.evaluate({}, w, c, 128, progress=False)
    summary = evaluate.summarize(scores, truth, w, 128, h, n_boot=10)["detector"]
    det = summary["100ms"]
    assert det["fp"] == 3 and det["fn"] == 0 and det["tp"] == 3 * np.sum(beats >= c)
    assert det["sensitivity"] == pytest.approx(1.0)
    assert det["positive_predictivity"] == pytest.approx(det["tp"] / (det["tp"] + det["fp"]), abs=1e-6)
    assert det["positive_predictivity"] < 1.0
    shown = {r[0]: r[1:3] for r in _table("\n".join(eval_report.detector_section(summary)), "detector check",
                                          "| tolerance |")}
    assert shown["±100 ms"] == [f"{100 * det['sensitivity']:.2f} %", f"{100 * det['positive_predictivity']:.2f} %"]
    rows = {r[0]: r[3:] for r in _table("\n".join(eval_report.detector_section(summary)), "detector check", "| tolerance |")}
    assert rows["±100 ms"] == [str(det["tp"]), "3", "0"]                   # TP, FP, FN each in its column
    own = {**summary, "timing_ms": {"value": 5.0, "ci": [4.0, 6.0]}, "hr_bpm": {"value": 1.5, "ci": [1.0, 2.0]}}
    text = "\n".join(eval_report.detector_section(own))
    assert "timing error (±100 ms matches): 5.00 [4.00, 6.00] ms; heart-rate error: 1.50 [1.00, 2.00] bpm" in text


def test_scoring_on_the_patients_a_model_chose_its_checkpoint_on_is_flagged_on_a_prepared_split():
    """A model whose checkpoint was chosen on record 109, scored on a prepared test split holding 109, is warned
    about; on the validation split itself (asked for on purpose) only its training records are."""
    model = SimpleNamespace(train_records=["101"], validation_records=["109"])
    scored = ["100", "101", "109"]
    test = evaluate.seen_warnings({"m": model}, scored, argparse.Namespace(wfdb_dir=None, split="test"))
    assert any("101" in s and "trained on" in s for s in test)
    assert any("109" in s and "chose its checkpoint" in s for s in test)
    val = evaluate.seen_warnings({"m": model}, scored, argparse.Namespace(wfdb_dir=None, split="validation"))
    assert not any("chose its checkpoint" in s for s in val) and any("101" in s for s in val)


def test_report_header_counts_the_records_scored_not_the_records_listed():
    """A prepared split lists three records; with --records only one of them is scored, and the report's header
    says 1 record, not 3, and its table of records lists that one only."""
    cfg = load_config()
    t = cfg.data.total_samples
    w = evaluate.Windows(np.zeros((4, t, 2), np.float32), np.array([1, 1, 1, 1]), np.arange(4) * t,
                         np.zeros(5, np.int64), np.zeros(0, np.int64), ["100", "103", "105"],
                         np.ones(3, bool), [["MLII", "V1"]] * 3, [360.0] * 3,
                         {"kind": "prepared", "split": "test", "path": "x/test.pt", "data_hash": "d",
                          "input_hash": "h"})
    args = argparse.Namespace(config=None, samples=2, seed=0, max_windows_per_record=None, horizon_beats=None)
    header = evaluate.report_header(args, ["--records", "103"], cfg, w, {}, 1.0, {"date": "d", "git commit": "c"})
    assert header["records / windows"] == "1 / 4"
    # the versions its forecasts depend on, which the commit does not pin (the trainers record torch's too)
    assert f"torch {torch.__version__}, numpy {np.__version__}" in header["software"]
    assert header["software"].endswith(f"; {torch.get_num_threads()} torch CPU threads")
    title = eval_report.run_section({"records": ["103"]}, header, w)[0]
    assert title == "# Forecast evaluation: 1 record, 4 windows (prepared test)"     # not '1 records'
    one = dataclasses.replace(w, record=w.record[:1])
    assert eval_report.run_section({"records": ["103"]}, header, one)[0].startswith("# Forecast evaluation: 1 record, "
                                                                                   "1 window (")
    assert [r[0] for r in _table("\n".join(eval_report.records_section(w)), "## Records", "| record |")] == ["103"]


def test_report_header_says_how_the_windows_were_chosen(tmp_path):
    """The header says how the scored windows were cut from each record: side by side without overlap, and with
    --max-windows-per-record that many evenly spaced (the report said '1 / 3' windows and no more, so which
    stretches of a record were scored, and whether they overlap, was for the reader to guess)."""
    write_record(tmp_path / "db", "r", seconds=40, seed=0)
    common = ["--model", "zero", "--wfdb-dir", str(tmp_path / "db")]
    _, every = _run(common + ["--results", str(tmp_path / "all")])
    _, some = _run(common + ["--max-windows-per-record", "3", "--results", str(tmp_path / "some")])
    # 40 s: six 6 s windows, three kept
    assert every["record_info"][0]["windows"] == 6 and some["record_info"][0]["windows"] == 3
    assert every["header"]["windows"] == ("6 s each, context then horizon, side by side without overlap, none across "
                                          "a gap; all of each record")
    assert some["header"]["windows"].endswith("; 3 evenly spaced per record, its first and last among them "
                                              "(--max-windows-per-record)")


def test_report_header_says_max_windows_are_spaced_over_the_windows_horizon_beats_keeps():
    """--horizon-beats picks windows before --max-windows-per-record spaces its K over them (load_windows): the header
    said '3 evenly spaced per record, its first and last among them', which reads as the record's first and last
    window, where they were the first and last of the windows with a ventricular beat."""
    cfg = load_config()
    t = cfg.data.total_samples
    w = evaluate.Windows(np.zeros((2, t, 2), np.float32), np.array([0, 0]), np.arange(2) * t, np.zeros(3, np.int64),
                         np.zeros(0, np.int64), ["100"], np.ones(1, bool), [["MLII", "V1"]], [360.0],
                         {"kind": "prepared", "split": "test", "path": "x/test.pt", "data_hash": "d",
                          "input_hash": "h"})
    args = argparse.Namespace(config=None, samples=2, seed=0, max_windows_per_record=3, horizon_beats="ventricular")
    header = evaluate.report_header(args, [], cfg, w, {}, 1.0, {"date": "d", "git commit": "c"})
    assert header["windows"].endswith("; the windows --horizon-beats ventricular keeps; then 3 evenly spaced per "
                                      "record among those, its first and last among them (--max-windows-per-record)")


def test_report_header_says_one_window_per_record_is_its_first():
    """--max-windows-per-record 1 keeps each record's first window (evenly_spaced's linspace of one point): the header
    said '1 evenly spaced per record, its first and last among them', a first and last that one window is not."""
    cfg = load_config()
    t = cfg.data.total_samples
    w = evaluate.Windows(np.zeros((1, t, 2), np.float32), np.array([0]), np.zeros(1, np.int64), np.zeros(2, np.int64),
                         np.zeros(0, np.int64), ["100"], np.ones(1, bool), [["MLII", "V1"]], [360.0],
                         {"kind": "prepared", "split": "test", "path": "x/test.pt", "data_hash": "d",
                          "input_hash": "h"})
    assert list(evenly_spaced(5, 1)) == [0]
    for beats, said in ((None, "; the first per record (--max-windows-per-record)"),
                        ("ventricular", "; then the first per record among those (--max-windows-per-record)")):
        args = argparse.Namespace(config=None, samples=2, seed=0, max_windows_per_record=1, horizon_beats=beats)
        header = evaluate.report_header(args, [], cfg, w, {}, 1.0, {"date": "d", "git commit": "c"})
        assert header["windows"].endswith(said)


def test_report_says_what_a_calibrated_forecast_of_the_runs_samples_covers(tmp_path):
    """The cover columns are read against level·(S−1)/(S+1), not the level: report.md gave it for 100 and 10
    samples only, so a run of --samples 4 left its reader to work out that 48 % at 80 % is calibrated. It now says
    so for the run's own S, and nothing of it when no forecaster samples (no cover column has a value)."""
    write_record(tmp_path / "db", "r", seconds=40, seed=0)
    common = ["--wfdb-dir", str(tmp_path / "db"), "--samples", "4"]
    sampled, _ = _run(common + ["--model", "seasonal_ensemble", "zero", "--results", str(tmp_path / "s")])
    assert "With this run's 4 samples: about 30.0 % at 50 %, 48.0 % at 80 % (" in (sampled / "report.md").read_text()
    point, _ = _run(common + ["--model", "zero", "--results", str(tmp_path / "p")])
    assert "samples: " not in (point / "report.md").read_text()
    assert eval_report.calibrated_cover(0.8, 100) == pytest.approx(78.4, abs=0.05)      # the text's own example


def test_calibrated_cover_is_exact_for_a_uniform_forecast_and_low_for_a_gaussian_one_of_few_samples():
    """The mark the cover columns are read against, checked by drawing the truth and the samples from one
    distribution: exact for a uniform one, but a calibrated Gaussian forecast of 4 samples covers 51 % at 80 %, not
    the 48.0 % report.md gave as the run's mark without an 'about' (a reader would call it too wide)."""
    rng = np.random.default_rng(0)
    for draw, low in ((rng.uniform, 0.0), (rng.normal, 2.0)):
        x, y = draw(size=(200_000, 4)), draw(size=200_000)
        for level in (0.5, 0.8):
            lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=1)     # linear, as the evaluation's
            covered = 100 * np.mean((y >= lo) & (y <= hi))
            assert covered - eval_report.calibrated_cover(level, 4) == pytest.approx(low, abs=0.9), (draw, level)
    text = "\n".join(eval_report.metrics_section(4))
    assert "about 30.0 % at 50 %, 48.0 % at 80 % (exact for a uniform forecast" in text and "Gaussian one 51 %" in text


def test_report_says_how_far_few_samples_lift_a_sampled_crps_and_how_many_paths_f1_scored():
    """A run of --samples 6 scored the template ensemble's CRPS 13.7 % above 100 samples' on the same DS2 windows,
    unwarned: read as the forecaster's, beside a deterministic baseline's CRPS or a README figure. The report now
    says how far S samples lift it, ½E|X−X'|/(S−1) above the fair CRPS it reports beside it, and that a run of fewer
    samples than RHYTHM_PATHS scored its F1 on all of them, not on 'its first 10'."""
    six = " ".join(eval_report.metrics_section(6))
    assert "This run's 6 samples lift a sampled forecaster's CRPS above its fair CRPS by ½E|X−X'|/5" in six
    assert "compare it, not CRPS, across runs of other --samples" in six
    assert "first 10 sample paths per window, here all 6 (pooled" in six
    many = " ".join(eval_report.metrics_section(100))
    assert "½E|X−X'|/99" in many and "here all" not in many
    assert "lift" not in " ".join(eval_report.metrics_section(None))     # no sampled forecaster, nothing lifted
    one = " ".join(eval_report.metrics_section(1))
    assert "paths per window, here its one (pooled" in one      # not 'all 1'
    assert "lift" not in one        # a point forecast: CRPS is the fair CRPS, no ½E|X−X'|/0


def test_the_fair_crps_of_few_samples_is_their_many_samples_crps():
    """The CRPS of S samples as issued falls as S grows (13.7 % from 6 to 100 samples on DS2): the fair CRPS the
    report gives beside it does not, so runs of other --samples compare; a deterministic forecast's is its MAE."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(20_000, 4, 2))
    edges = np.array([0, 2])
    fair, issued = {}, {}
    for s in (6, 400):
        sums, _ = M.waveform_sums(y, rng.normal(size=(len(y), s, 4, 2)), edges)
        fair[s], issued[s] = (sums[k][:, -1].sum() / sums["n"][:, -1].sum() for k in ("crps_fair", "crps"))
    half_spread = 1 / np.sqrt(np.pi)        # ½E|X−X'| of a standard normal
    assert issued[6] - issued[400] == pytest.approx(half_spread * (1 / 6 - 1 / 400), abs=0.005)
    assert fair[6] == pytest.approx(fair[400], abs=0.003) and fair[400] < issued[400]
    assert fair[6] == pytest.approx(issued[6] - half_spread * 5 / 6 / 5, abs=0.005)
    point = rng.normal(size=(3, 1, 4, 2))
    sums, _ = M.waveform_sums(y[:3], point, edges)
    np.testing.assert_array_equal(sums["crps_fair"], sums["crps"])
    assert np.isnan(M.waveform_sums(y[:3], point, edges, point_mass=False)[0]["crps_fair"]).all()


def test_report_names_the_commit_the_run_started_at(tmp_path, monkeypatch):
    """A long evaluation outlives edits to the tree: its header names the code that ran, not the code at its end."""
    write_record(tmp_path / "db", "r", seconds=12, seed=0)
    edit_tree_after(monkeypatch, evaluate, "evaluate")
    _, result = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--max-windows-per-record", "1",
                      "--results", str(tmp_path / "results")])
    assert result["header"]["git commit"] == "at-start"


@pytest.mark.parametrize("key,value", [("filter_band", [1.0, 30.0]), ("filter_order", 4), ("samples_per_second", 250),
                                       ("first_lead", "V5"), ("second_lead", "V5"), ("input_signal_duration", 2.0),
                                       ("forecast_predictions", 2)])
def test_a_model_trained_on_data_prepared_otherwise_is_flagged(key, value):
    """Each preparation setting that changes what a model reads (band-pass, rate, lead, window lengths) makes
    evaluate.py warn when the model's own data config differs from the evaluation data's."""
    import dataclasses

    cfg = load_config()
    model = SimpleNamespace(cfg=SimpleNamespace(data=dataclasses.replace(cfg.data, **{key: value})))
    assert key in evaluate.preparation_mismatch(model, cfg)
    assert evaluate.preparation_mismatch(SimpleNamespace(cfg=cfg), cfg) == ""


@pytest.mark.parametrize("second,hint", [("V5", "pass --leads II V5, or the config its VQ-VAE was trained with"),
                                         ("", "pass the config its VQ-VAE was trained with")])
def test_a_model_of_other_leads_is_warned_with_what_reads_its_own(monkeypatch, second, hint):
    """A model trained on II and V5, scored on --wfdb-dir with the default config: the warning said the leads
    differed, not that the records were read with --config's nor what reads them as the model was trained; and
    with --leads II V5 it warned of other leads though the model's were read."""
    cfg = load_config()
    own = SimpleNamespace(data=dataclasses.replace(cfg.data, first_lead="II", second_lead=second))
    monkeypatch.setattr(evaluate, "make_forecaster", lambda *a: SimpleNamespace(cfg=own, name="transformer"))

    def caution(**flags) -> str:
        return " ".join(evaluate.build_forecasters(["mine.pt"], cfg, "cpu", argparse.Namespace(**flags))[2])
    said = caution(leads=None, wfdb_dir="db")
    assert "first_lead 'II' vs 'MLII'" in said and f"--wfdb-dir's records were read with --config's leads: {hint} " \
        "as --config to read them as it was trained" in said
    assert caution(leads=["II", "V5"], wfdb_dir="db") == ""
    assert "--leads" not in caution(leads=None, wfdb_dir=None)      # a prepared split's leads are its preparation's
    bad_rate = SimpleNamespace(data=dataclasses.replace(own.data, samples_per_second=250))
    monkeypatch.setattr(evaluate, "make_forecaster", lambda *a: SimpleNamespace(cfg=bad_rate, name="transformer"))
    assert caution(leads=["II", "V5"], wfdb_dir="db").endswith("samples_per_second 250 vs 128")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_max_windows_per_record_below_one_is_named(tmp_path, value):
    """0 used to evaluate anyway and -2 to end in a numpy traceback."""
    db = tmp_path / "db"
    write_record(db, "r", seconds=12, seed=0)
    with pytest.raises(UserError, match=f"--max-windows-per-record must be >= 1, got {value}"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db), "--max-windows-per-record", value,
                       "--results", str(tmp_path / "results")])
    assert not (tmp_path / "results").exists()


def test_metrics_csv_matches_metrics_json(tmp_path):
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b", "c")):
        write_record(db, name, seconds=20, seed=i)
    run = evaluate.main(["--model", "zero", "seasonal_ensemble", "--wfdb-dir", str(db), "--samples", "8",
                         "--max-windows-per-record", "2", "--results", str(tmp_path / "results")])
    result = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert list(rows[0]) == ["forecaster", "horizon", "metric", "unit", "value", "ci_low", "ci_high", "records"]
    checked = 0
    for row in rows:
        i = result["horizons"].index(row["horizon"])
        entry = result["forecasters"][row["forecaster"]]["metrics"][row["metric"]][i]
        for column, want in (("value", entry["value"]), ("ci_low", entry["ci"][0]), ("ci_high", entry["ci"][1])):
            assert (row[column] == "") if want is None else float(row[column]) == pytest.approx(want), (row, entry)
        assert int(row["records"]) == entry["records"]
        assert row["unit"] == M.METRICS[row["metric"]][1]                   # the unit, not the label
        if entry["value"] is not None and entry["ci"][0] is not None:
            assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
            checked += 1
    assert checked > 10


def test_readme_names_every_file_column_and_key_of_an_evaluation(tmp_path):
    """A reader making a table of their own met metrics.csv's `cov80`, `f1_100`, `r` and metrics.json's `paired` rows
    with no word on them in the README. Its 'Tables and plots of your own' paragraph now names them: held to a run's
    files (two models, so both paired tables have rows) and to metrics.METRICS. The README also said error_curves.csv
    held 'the plotted curves', F1 and the CRPS gain among them, where it holds each forecaster's MSE and CRPS: every
    file of the run and error_curves.csv's columns are named as they are."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("**Tables and plots of your own**")
    spans = re.findall(r"`([^`]+)`", text[start:text.index("\n\n", start)])
    named = set(spans) | {word for span in spans for word in re.findall(r"\w+", span)}   # forecasters[name]["metrics"]
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b")):
        write_record(db, name, seconds=20, seed=i)
    run, result = _run(["--model", "zero", "baselines:SeasonalEnsemble", "baselines:TemplateEnsemble", "--wfdb-dir",
                        str(db), "--samples", "4", "--max-windows-per-record", "1", "--results", str(tmp_path / "r")])
    rows = list(csv.DictReader((run / "metrics.csv").open(encoding="utf-8")))
    assert set(rows[0]) | {r["metric"] for r in rows} | set(M.METRICS) <= named
    assert set(result) | set(result["forecasters"]["zero"]) <= named
    assert result["paired"] and result["paired_models"] and result["horizon_beats"]
    for kind in result["horizon_beats"].values():
        assert set(kind) <= named
    for row in result["paired"] + result["paired_models"]:
        assert set(row) <= named, set(row) - named
    files = {re.sub(r"^gallery_\w+\.png$", "gallery_<name>.png", f.name) for f in run.iterdir()}
    assert not {f for f in files if f"`{f}`" not in text}, files
    curves = text[text.index("`error_curves.csv` holds"):]
    spans = re.findall(r"`([^`]+)`", curves[:curves.index("\n\n")])
    header = (run / "error_curves.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    scores = {h.split(" ", 1)[1] for h in header[1:]}            # "zero MSE (mV²)": MSE (mV²)
    assert header[0] in spans and {f"transformer {score}" for score in scores} <= set(spans), header


def test_a_user_forecaster_at_another_rate_is_refused(tmp_path):
    db = tmp_path / "db"
    write_record(db, "r", seconds=12, seed=0)
    (tmp_path / "mine.py").write_text(MINE)
    with pytest.raises(UserError, match=r"mine.py:At360: it forecasts at 360 Hz but the data is at 128 Hz"):
        evaluate.main(["--model", f"{tmp_path / 'mine.py'}:At360", "--wfdb-dir", str(db),
                       "--max-windows-per-record", "1", "--results", str(tmp_path / "results")])
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("rate, shown", [("128.4", "128.4"), ("None", "None"), ("'128'", "'128'")])
def test_a_user_forecaster_at_a_rate_that_is_not_the_datas_number_is_one_error_line(tmp_path, rate, shown):
    """evaluate.py compared the rates as int() (128.4 Hz passed as 128, None stopped in a TypeError traceback), and
    evaluate()'s own check as float() saw no rate on the OwnForecaster wrapping it: 128.4 Hz was scored, and
    forecast.py forecast with it, without a word. One check (own_forecaster.check_rate) refuses it everywhere."""
    import forecast

    write_record(tmp_path / "db", "r", seconds=12, seed=0)
    (tmp_path / "mine.py").write_text(MINE.replace("fs = 360", f"fs = {rate}"))
    said = rf"mine.py:At360: it forecasts at {shown} Hz but the data is at 128 Hz$"
    with pytest.raises(UserError, match=rf"--model .*{said}"):
        evaluate.main(["--model", f"{tmp_path / 'mine.py'}:At360", "--wfdb-dir", str(tmp_path / "db"),
                       "--results", str(tmp_path / "results")])
    with pytest.raises(UserError, match=rf"--checkpoint .*{said}"):
        forecast.load_forecaster(f"{tmp_path / 'mine.py'}:At360", "cpu")
    w = _one_record_windows(np.zeros((1, 256, 2)), [np.zeros(0)])
    at360 = own_forecaster.load_file(tmp_path / "mine.py").At360(128)
    own = own_forecaster.OwnForecaster(at360, "--model mine.py:At360")
    with pytest.raises(UserError, match=rf"forecaster 'mine': it forecasts at {shown} Hz but the data is at 128 Hz"):
        evaluate.evaluate({"mine": own}, w, 128, 128, 1, progress=False)


@pytest.mark.parametrize("flag,value", [("--split", "validation"), ("--prepared", "elsewhere")])
def test_prepared_flags_given_with_wfdb_dir_are_noted_as_ignored(tmp_path, capsys, flag, value):
    """--split and --prepared choose prepared tensors; --wfdb-dir scores every record of its folder, and says so."""
    write_record(tmp_path / "db", "r", seconds=12, seed=0)
    for given, noted in (([flag, value], True), ([], False)):
        _, result = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), *given, "--results", str(tmp_path)])
        err = capsys.readouterr().err
        assert (f"note: {flag} {value} is ignored: it chooses prepared tensors" in err) == noted, err
        assert result["header"]["data"].startswith(f"wfdb all records: {tmp_path / 'db'}")


def _beat_class_windows() -> evaluate.Windows:
    """Seven windows told apart by their start (i * 1000): their horizon beats are normal, normal after a V in the
    context, V, A, paced (Q), none in an unannotated record, and none at all."""
    data = load_config().data
    c, t = data.window_samples, data.total_samples
    beats = [[(100, "N"), (c + 100, "N"), (c + 200, "N")], [(100, "V"), (c + 100, "N")],
             [(c + 100, "V"), (c + 200, "N")], [(c + 100, "A")], [(c + 100, "/")], [], [(100, "N")]]
    record = np.array([0, 0, 0, 0, 0, 1, 0])
    return evaluate.Windows(np.zeros((7, t, 2), np.float32), record, np.arange(7) * 1000,
                            np.cumsum([0] + [len(b) for b in beats]), np.array([p for b in beats for p, _ in b]),
                            ["100", "101"], np.array([True, False]), [["MLII", "V1"]] * 2, [360.0] * 2,
                            {"path": "x/test.pt"}, beat_sym=np.array([ord(s) for b in beats for _, s in b], np.uint8))


@pytest.mark.parametrize("kind,starts", [("normal", [0, 1000]), ("ventricular", [2000]), ("supraventricular", [3000]),
                                         ("ectopic", [2000, 3000])])
def test_horizon_beats_chooses_windows_by_the_classes_of_their_horizon(kind, starts):
    """The context's beats do not count, paced beats are neither normal nor ectopic, and an unannotated record's
    windows never qualify."""
    w = evaluate.select_horizon_beats(_beat_class_windows(), kind, load_config().data.window_samples)
    assert w.start.tolist() == starts
    assert len(w.beat_sym) == len(w.beat_pos) == w.beat_ptr[-1]


def test_horizon_beats_in_a_database_without_them_is_named(tmp_path):
    """Synthetic records hold normal beats only: asking for ventricular ones is refused with the flag and value,
    and normal ones are every window. Records without annotations are told apart from records without the class."""
    write_record(tmp_path / "db", "r", seconds=30, seed=0)
    with pytest.raises(UserError, match=r"--horizon-beats ventricular: none of the \d+ windows .* ventricular beat"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--horizon-beats", "ventricular",
                       "--results", str(tmp_path / "results")])
    _, everything = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--results", str(tmp_path / "all")])
    _, normal = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--horizon-beats", "normal",
                      "--results", str(tmp_path / "normal")])
    assert normal["header"]["records / windows"].startswith(everything["header"]["records / windows"] + ", only")
    write_record(tmp_path / "bare", "u", seconds=30, seed=0, annotate=False)
    with pytest.raises(UserError, match=r"--horizon-beats normal reads the beat annotations, and no record of .*bare"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(tmp_path / "bare"), "--horizon-beats", "normal",
                       "--results", str(tmp_path / "results")])


def test_horizon_beats_on_a_real_record_count_its_annotations(mitdb, tmp_path):
    """Record 208 (premature ventricular beats and fusions): the windows chosen as ventricular are those whose
    horizon holds a V or E annotation, counted here from the .atr file itself (±2 for beats on a boundary)."""
    import wfdb

    _, result = _run(["--model", "zero", "--wfdb-dir", str(mitdb), "--records", "208", "--horizon-beats",
                      "ventricular", "--results", str(tmp_path)])
    cfg = load_config().data
    ann = wfdb.rdann(str(mitdb / "208"), "atr")
    fs, c, t = cfg.samples_per_second, cfg.window_samples, cfg.total_samples
    v = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in "VE"]) * fs / ann.fs
    n = int(wfdb.rdheader(str(mitdb / "208")).sig_len * fs / ann.fs) // t
    expected = sum(bool(((v >= k * t + c) & (v < (k + 1) * t)).any()) for k in range(n))
    assert 100 < expected < n and abs(result["record_info"][0]["windows"] - expected) <= 2


def test_only_what_wfdb_dir_ignores_is_noted_and_split_defaults_to_test(capsys):
    """No note without --wfdb-dir or without the flags it ignores; --split keeps its value, test when not given."""
    for argv, split in ((["--wfdb-dir", "db"], "test"), (["--split", "validation", "--prepared", "p"], "validation"),
                        (["--prepared", "p"], "test")):
        args = evaluate.parse_args(["--model", "zero", *argv])
        evaluate.check_args(args)
        assert args.split == split and "ignored" not in capsys.readouterr().err, argv


def test_one_run_scores_each_kind_of_horizon_beats_as_the_flag_does(tmp_path):
    """The report's strata are the same forecasts scored on each kind's windows: the ventricular stratum of one run
    equals a --horizon-beats ventricular run to the last digit, intervals included, and the report shows it."""
    import wfdb

    for i, name in enumerate(["r", "s"]):
        write_record(tmp_path / "db", name, seconds=40, seed=i)
        _, beats = synthetic_ecg(40, 360.0, seed=i)
        wfdb.wrann(name, "atr", np.asarray(beats), symbol=["V" if k % 9 == 4 else "N" for k in range(len(beats))],
                   write_dir=str(tmp_path / "db"))
    argv = ["--model", "seasonal", "template_ensemble", "--wfdb-dir", str(tmp_path / "db"), "--samples", "8"]
    run, everything = _run([*argv, "--results", str(tmp_path / "all")])
    _, ventricular = _run([*argv, "--horizon-beats", "ventricular", "--results", str(tmp_path / "v")])
    stratum = everything["horizon_beats"]["ventricular"]
    assert 0 < stratum["windows"] < sum(r["windows"] for r in everything["record_info"])
    assert stratum["forecasters"] == ventricular["forecasters"]
    assert set(everything["horizon_beats"]) == {"normal", "ectopic", "ventricular"}
    assert "| ventricular | 2 / " in (run / "report.md").read_text()



def test_annotations_that_do_not_fit_their_signal_are_named(tmp_path, capsys):
    """A 360 Hz record's beats annotated at 250 Hz (they end at 69% of it, at the wrong times), or 0.3 s late:
    every R-peak score of the record was measured against beats that are not there, without a word. The detector,
    which finds 99.7% of DS2's beats and at least 94% of each MIT-BIH record's, names them."""
    import wfdb

    db = tmp_path / "db"
    for name, shift, scale in (("ok", 0.0, 1.0), ("at250", 0.0, 250 / 360), ("late", 0.3, 1.0)):
        write_record(db, name, seconds=40, seed=1)
        _, beats = synthetic_ecg(40, 360.0, seed=1)
        wfdb.wrann(name, "atr", np.round((np.asarray(beats) + shift * 360) * scale).astype(int),
                   symbol=["N"] * len(beats), write_dir=str(db))
    run, metrics = _run(["--model", "zero", "--wfdb-dir", str(db), "--results", str(tmp_path / "r")])
    assert [m["record"] for m in metrics["detector"]["misfit"]] == ["at250", "late"]
    said = "the R-peak detector finds under 50% of the reference beats (±100 ms) on the true signal of at250 ("
    assert f"warning: {said}" in capsys.readouterr().err and said in (run / "report.md").read_text()


def test_records_table_gives_each_record_its_own_leads_rate_annotations_and_windows():
    """report.md's records table: each scored record's row holds its own lead names, input rate, whether it is
    annotated and how many of the windows are its own."""
    w = evaluate.Windows(np.zeros((3, 8, 2), np.float32), np.array([0, 1, 1]), np.zeros(3, np.int64),
                         np.zeros(4, np.int64), np.zeros(0, np.int64), ["a", "b"], np.array([True, False]),
                         [["MLII", "V1"], ["V1", "V2"]], [360.0, 250.0])
    rows = _table("\n".join(eval_report.records_section(w)), "## Records", "| record |")
    assert rows == [["a", "MLII, V1", "360", "yes", "1"], ["b", "V1, V2", "250", "no", "2"]]


def _paired_row(**changes) -> dict:
    return {"forecaster": "model", "metric": "crps", "horizon": "all", "baseline": "zero", "baseline_value": 0.25,
            "value": 0.2, "difference": {"value": -0.05, "ci": [-0.07, -0.03]}, "change_pct": -20.0,
            "better_on": 3, "worse_on": 1, "records": 4, **changes}


def test_paired_tables_put_each_number_in_its_column():
    """The paired tables of report.md: the baseline (or other model) and its value, the forecaster's value, the
    difference with its interval low to high, the relative change and 'better on <n> of <records>'."""
    rows = _table("\n".join(eval_report.paired_section([_paired_row()])), "## Paired against the best baseline")
    assert rows == [["model", "CRPS (mV)", "all", "zero", "0.2500", "0.2000", "-0.0500 [-0.0700, -0.0300]", "-20.0 %",
                     "3 of 4"]]
    other = _paired_row(against="b", against_value=0.5, change_pct=None)
    rows = _table("\n".join(eval_report.models_section([other])), "## Models paired with each other")
    assert rows[0][3:5] == ["b", "0.5000"] and rows[0][7:] == ["—", "3 of 4"]


def test_paired_tables_count_the_ties():
    """Two models reading the same beat drafts often find the same beats: on 23 records one F1 was higher on 2, lower
    on 5 and the same on 16, which the tables gave as 'better on 2 of 23', read as worse on 21. Ties are said now,
    in both paired tables and the horizon beats' one."""
    tied = _paired_row(better_on=2, worse_on=5, records=23)
    for text, title in ((eval_report.paired_section([tied]), "## Paired against the best baseline"),
                        (eval_report.models_section([_paired_row(against="b", against_value=0.5, better_on=2,
                                                                 worse_on=5, records=23)]),
                         "## Models paired with each other")):
        assert _table("\n".join(text), title)[0][-1] == "2 of 23, 16 tied"
    strata = {"normal": {"records": ["a", "b"], "windows": 2, "paired": [tied],
                         "forecasters": {"model": {"metrics": {}}}}}
    text = "\n".join(eval_report.horizon_beats_section(strata, ["0-1 s", "all"]))
    assert _table(text, "Paired against the best baseline of each kind", "| horizon's beats |")[0][-1] == \
        "2 of 23, 16 tied"
    assert _table("\n".join(eval_report.paired_section([_paired_row()])), "## Paired")[0][-1] == "3 of 4"


def test_paired_tables_say_the_forecasters_share_each_windows_seed():
    """Every forecaster forecasts a window with the window's own seed, the same for all of them: the pairs share
    their random draws (the shipped models and the template ensemble draw the same beat times, hence their ties on
    F1), which the paired tables did not say."""
    class Seeds:
        fs = 128

        def __init__(self):
            self.seeds = []

        def predict(self, context, horizon, num_samples=1, seed=0):
            self.seeds.append(seed)
            return np.zeros((1, 1, horizon, 2), np.float32)
    cfg = load_config()
    t = cfg.data.total_samples
    w = evaluate.Windows(np.zeros((2, t, 2), np.float32), np.array([0, 0]), np.arange(2) * t, np.zeros(3, np.int64),
                         np.zeros(0, np.int64), ["100"], np.ones(1, bool), [["MLII", "V1"]], [360.0])
    a, b = Seeds(), Seeds()
    for f in (a, b):
        evaluate.predict_windows(f, "f", w, np.arange(2), cfg.data.window_samples, 1, 0, 128)
    assert a.seeds == b.seeds and len(set(a.seeds)) == 2
    for text in (eval_report.paired_section([_paired_row()]),
                 eval_report.models_section([_paired_row(against="b", against_value=1)])):
        assert "Every forecaster forecasts a window with that window's seed" in "\n".join(text)


def test_horizon_beats_table_shows_each_kinds_scores_and_paired_rows():
    """The 'by the horizon's beats' section: per kind its records / windows and each forecaster's headline scores
    (whole horizon and first second), a dash for a score it lacks, and the kind's whole-horizon paired rows."""
    def entries(values):
        return [{"value": v, "ci": [v, v], "records": 2} for v in values]
    strata = {"ventricular": {
        "records": ["a", "b"], "windows": 5,
        "forecasters": {"model": {"metrics": {"mse": entries([0.5, 0.1, 0.3]), "crps": entries([0.6, 0.7, 0.2]),
                                              "cov80": entries([70.0, 71.0, 72.0])}}},
        "paired": [_paired_row(horizon="0-1 s", difference={"value": 9.0, "ci": [8.0, 10.0]}), _paired_row()]}}
    text = "\n".join(eval_report.horizon_beats_section(strata, ["0-1 s", "1-2 s", "all"]))
    rows = _table(text, "## By the horizon's beats", "| horizon's beats |")
    assert rows == [["ventricular", "2 / 5", "model", "0.300", "0.500", "0.200", "72.0", "—"]]
    assert "| MSE (mV²) | MSE first second (mV²) | CRPS (mV) |" in text
    paired = _table(text, "Paired against the best baseline of each kind", "| horizon's beats |")
    assert paired == [["ventricular", "model", "CRPS (mV)", "zero", "-0.0500 [-0.0700, -0.0300]", "3 of 4"]]

@pytest.mark.parametrize("records, cautioned", [(1, False), (2, True), (9, True), (10, False)])
def test_horizon_beats_section_says_an_interval_over_few_records_is_their_spread(records, cautioned):
    """A kind of horizon beats has records of its own, often few (2 supraventricular of 23 in a run of 2 windows per
    record): its paired intervals were given as 95 % intervals with no word, where the whole-horizon table says what
    a bootstrap over under FEW_RECORDS records is worth. The section says it of those kinds, by name."""
    entry = [{"value": 0.1, "ci": [0.0, 0.2], "records": records}] * 2
    strata = {"normal": {"records": [str(i) for i in range(23)], "windows": 30, "paired": [],
                         "forecasters": {"zero": {"metrics": {"mse": entry}}}},
              "ventricular": {"records": [str(i) for i in range(records)], "windows": 5, "paired": [_paired_row()],
                              "forecasters": {"zero": {"metrics": {"mse": entry}}}}}
    text = "\n".join(eval_report.horizon_beats_section(strata, ["0-1 s", "all"]))
    assert (f"records in ventricular ({records}): a bootstrap over so few" in text) == cautioned
    assert "normal (23)" not in text


def test_horizon_beats_table_names_a_first_segment_under_a_second_by_its_span():
    """A 0.5 s horizon has one segment, the whole horizon: its column is 'MSE 0-0.5 s', not 'MSE first second'
    (it read the same as the whole horizon's MSE beside it, under a name claiming a second)."""
    strata = {"normal": {"records": ["a"], "windows": 1, "paired": [],
                         "forecasters": {"zero": {"metrics": {"mse": [{"value": 0.4, "ci": [0.4, 0.4]}] * 2}}}}}
    text = "\n".join(eval_report.horizon_beats_section(strata, ["0-0.5 s", "all"]))
    assert "| MSE (mV²) | MSE 0-0.5 s (mV²) | CRPS (mV) |" in text and "first second" not in text


def _table(report: str, title: str, header: str = "| forecaster |") -> list[list[str]]:
    """The cells of each row of the first table after `title` in report.md whose header starts with `header`."""
    lines = report.split(title, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:                    # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_report_tables_show_what_the_summary_holds(db250):
    """report.md against its summary (metrics.json): the whole-horizon table shows each score over the whole horizon
    with its interval low to high, the per-second table each second's score, the paired table the best baseline's
    value under the baseline and the model's under the model, the difference's interval low to high, and the
    horizon beats' paired table the whole-horizon rows."""
    cfg = load_config()
    fs, c = cfg.data.samples_per_second, cfg.data.window_samples
    w = evaluate.load_wfdb(db250, cfg, progress=False)
    baselines = frozenset(["zero", "seasonal"])
    fc = {n: evaluate.make_forecaster(n, fs) for n in sorted(baselines)}
    fc["model"] = evaluate.make_forecaster("seasonal_ensemble", fs)
    scores, truth = evaluate.evaluate(fc, w, c, fs, 8, 0, progress=False)
    s = evaluate.summarize(scores, truth, w, fs, w.signals.shape[1] - c, n_boot=100, baselines=baselines)
    report, fmt, cols = eval_report.markdown_report(s, {}, w), eval_report.fmt, list(M.METRICS)

    def interval(e: dict) -> str:
        if e["value"] is not None and e["ci"][0] is not None:
            assert e["ci"][0] <= e["value"] <= e["ci"][1]
        return "—" if e["value"] is None else f"{fmt(e['value'])} [{fmt(e['ci'][0])}, {fmt(e['ci'][1])}]"
    whole_part, per_second_part = report.split("## Per horizon second", 1)
    assert sorted(k for _, keys in eval_report.METRIC_GROUPS for k in keys) == sorted(cols)
    for title, keys in eval_report.METRIC_GROUPS:
        whole = _table(whole_part.split("## All forecasters, whole horizon", 1)[1], f"### {title}")
        assert [r[0] for r in whole] == s["order"]
        for name, *cells in whole:
            assert cells == [interval(s["forecasters"][name]["metrics"][k][-1]) for k in keys], name
        per_second = _table(per_second_part, f"### {title}")
        assert [r[:2] for r in per_second] == [[n, h] for n in s["order"] for h in s["horizons"][:-1]]
        shown = [k for k in keys if k not in eval_report.WHOLE_HORIZON_ONLY]
        for name, label, *cells in per_second:
            j = s["horizons"].index(label)
            assert cells == [fmt(s["forecasters"][name]["metrics"][k][j]["value"]) for k in shown], (name, label)
    # HR err has no per-second score: a column of dashes there said nothing, so it is left out, and only it
    assert eval_report.WHOLE_HORIZON_ONLY == ("hr_bpm",)
    assert all(e["value"] is None for t in s["forecasters"].values() for e in t["metrics"]["hr_bpm"][:-1])
    assert any(t["metrics"]["hr_bpm"][-1]["value"] is not None for t in s["forecasters"].values())
    assert "| HR err (bpm) |" in whole_part and "HR err (bpm)" not in per_second_part.split("## R-peak")[0]
    paired = _table(report, "## Paired against the best baseline")
    assert len(paired) == len(s["paired"]) > 0
    for row, r in zip(paired, s["paired"]):
        assert row[0] == r["forecaster"] and row[2] == r["horizon"]
        assert row[3:6] == [r["baseline"], fmt(r["baseline_value"], 4), fmt(r["value"], 4)]
        value, lo, hi = (float(v) for v in row[6].replace("[", "").replace("]", "").replace(",", "").split())
        assert lo <= value <= hi
    strata = _table(report, "Paired against the best baseline of each kind, whole horizon:", "| horizon's beats |")
    want = [[kind, r["forecaster"], r["baseline"]] for kind, st in s["horizon_beats"].items() for r in st["paired"]
            if r["horizon"] == "all"]
    assert want and [[r[0], r[1], r[3]] for r in strata] == want
    # each forecaster's gallery, under a file name any file system takes
    assert all(f"![{n} examples](gallery_{eval_report.file_name(n)}.png)" in report for n in s["order"])
    assert eval_report.file_name("my model/v2.1") == "my_model_v2_1"


@pytest.mark.parametrize("records, cautioned", [(1, False), (2, True), (9, True), (10, False), (23, False)])
def test_report_says_an_interval_over_few_records_is_their_spread(records, cautioned):
    """A percentile bootstrap over two records gives their range as the '95 %' interval (it cannot pass the extreme
    records), which the report called a 95 % interval all the same; under FEW_RECORDS records it says what it is.
    One record has no interval ('—') and needs no word."""
    lo, hi = M.bootstrap_ci(np.array([[0.2], [0.5]]), 1000, 0)[1:]
    assert (lo[0], hi[0]) == (0.2, 0.5)
    entry = [{"value": 0.1, "ci": [0.0, 0.2], "records": records}]
    summary = {"order": ["zero"], "records": [str(i) for i in range(records)],
               "detector": {"annotated_records": records},
               "forecasters": {"zero": {"metrics": {k: entry for k in M.METRICS}}}}
    text = "\n".join(eval_report.whole_horizon_section(summary))
    assert (f"Only {records} records: a bootstrap over so few" in text) == cautioned


@pytest.mark.parametrize("records, cautioned", [(["201", "202", "100"], True), (["201", "100"], False),
                                               (["202"], False)])
def test_report_says_two_records_of_one_patient_weigh_twice(records, cautioned):
    """MIT-BIH's 201 and 202 are one patient, both in the default test split: the report said 'each patient weighs
    the same' of means over records, where that patient weighs twice and the bootstrap resamples the two as two
    patients. It says 'each record' now, and what the two records are when both are scored."""
    entry = [{"value": 0.1, "ci": [0.0, 0.2], "records": len(records)}]
    summary = {"order": ["zero"], "records": records, "detector": {"annotated_records": len(records)},
               "forecasters": {"zero": {"metrics": {k: entry for k in M.METRICS}}}}
    text = "\n".join(eval_report.whole_horizon_section(summary))
    assert "each patient weighs the same" not in text and "each record weighs the same" in text
    assert ("records 201 and 202 are one patient's: that patient weighs twice" in text) == cautioned


def test_report_numbers_keep_three_significant_digits():
    """report.md's numbers: three significant digits without an exponent from 0.001 to 1000, trailing zeros kept (the
    demo's MAE column read '0.14 [0.112, 0.173]'), whole numbers from 1000, three in an exponent form below 0.001, 0 as
    0 and a dash for undefined; the paired tables ask for four digits."""
    fmt = eval_report.fmt
    assert [fmt(v) for v in (0.012345, 12.345, 999.4, 1234.6, 0.00012345, -0.5, 0.0, None, float("nan"))] == \
        ["0.0123", "12.3", "999", "1235", "1.23e-04", "-0.500", "0", "—", "—"]
    assert [fmt(v) for v in (0.14, 0.056, 100.0, 1.0, 0.52, 0.0001)] == ["0.140", "0.0560", "100", "1.00", "0.520",
                                                                         "1.00e-04"]
    assert fmt(0.1, 4) == "0.1000"
    assert fmt(1000.0) == "1000" and fmt(1.23456, 4) == "1.235"
    assert fmt(999.6) == "1000" and fmt(-999.7) == "-1000" and fmt(9999.6, 4) == "10000"


def test_window_seeds_are_the_same_in_every_process():
    """A window's seed comes from its record's name by a fixed hash (crc32), not Python's per-process one: a figure
    of one run is drawn again by the next."""
    assert evaluate.window_seed(0, "100", 0) == 933941904 and evaluate.window_seed(3, "208", 768) == 281506578


def test_records_listed_but_not_scored_are_left_out_of_every_table():
    """A prepared split lists records that --records leaves without windows: the scored record's numbers are its own,
    and the detector counts only the annotated records scored."""
    c = h = 128
    signals = np.random.default_rng(0).normal(size=(2, c + h, 2))
    w = _one_record_windows(signals, [np.zeros(0)] * 2)
    w.record, w.records, w.annotated = np.ones(2, np.int64), ["a", "r1", "b"], np.array([True, True, True])
    w.leads, w.fs_in = w.leads * 3, w.fs_in * 3
    scores, truth = evaluate.evaluate({"zero": evaluate.make_forecaster("zero", 128)}, w, c, 128, 1, progress=False)
    s = evaluate.summarize(scores, truth, w, 128, h, n_boot=10)
    assert s["records"] == ["r1"]
    assert s["per_record"]["zero"]["mse"] == {"r1": pytest.approx(np.mean(signals[:, c:] ** 2), rel=1e-5)}
    assert s["forecasters"]["zero"]["metrics"]["mse"][-1]["records"] == 1
    assert s["detector"]["annotated_records"] == 1


def test_horizon_beats_strata_start_at_the_context_end_when_the_horizon_is_longer():
    """With a horizon of two context lengths, a ventricular beat early in the horizon makes its window ventricular:
    the strata split each window at the context's end, not at the horizon's length from its end."""
    fs, c, h = 128, 128, 256
    beats = [np.array([c + 20, c + 130]), np.array([c + 20, c + 130])]
    w = _one_record_windows(np.random.default_rng(0).normal(size=(2, c + h, 2)), beats)
    w.beat_sym = np.array([ord(s) for s in "VNNN"], np.uint8)
    w.record, w.records, w.annotated = np.array([0, 1]), ["r1", "r2"], np.array([True, True])
    scores, truth = evaluate.evaluate({"zero": evaluate.make_forecaster("zero", fs)}, w, c, fs, 1, progress=False)
    strata = evaluate.summarize(scores, truth, w, fs, h, n_boot=10)["horizon_beats"]
    assert (strata["ventricular"]["windows"], strata["ventricular"]["records"]) == (1, ["r1"])
    assert (strata["normal"]["windows"], strata["normal"]["records"]) == (1, ["r2"])


def test_the_report_says_why_the_rhythm_columns_are_empty_or_over_fewer_records():
    """Records without beat annotations leave the rhythm columns `—`, or means over the others: the report says so
    rather than leave a bare `—` to be read as a failed forecast."""
    entry = [{"value": 0.1, "ci": [0.0, 0.2], "records": 2}]
    for annotated, said in ((2, None), (0, "No record scored here has beat annotations"),
                            (1, "Only 1 of the 2 records has beat annotations")):
        summary = {"order": ["zero"], "records": ["a", "b"], "detector": {"annotated_records": annotated},
                   "forecasters": {"zero": {"metrics": {k: entry for k in M.METRICS}}}}
        text = "\n".join(eval_report.whole_horizon_section(summary))
        assert (said in text) if said else "beat annotations" not in text


def test_without_annotations_a_model_is_paired_on_the_waveform_scores_only():
    """No record has beat annotations: no baseline has an F1, so there is no best baseline on F1 to pair against,
    and MSE and CRPS are paired as usual."""
    c = h = 256
    rng = np.random.default_rng(0)
    w = _one_record_windows(rng.normal(size=(2, c + h, 2)), [np.zeros(0)] * 2)
    w.annotated = np.array([False])
    fc = {n: evaluate.make_forecaster(n, 128) for n in ("zero", "mean", "persistence")}
    scores, truth = evaluate.evaluate(fc, w, c, 128, 1, progress=False)
    s = evaluate.summarize(scores, truth, w, 128, h, n_boot=10, baselines=frozenset(["zero", "mean"]))
    assert sorted(r["metric"] for r in s["paired"]) == ["crps", "mse", "mse"]
    assert all(r["forecaster"] == "persistence" and r["records"] == 1 for r in s["paired"])


def test_a_config_without_a_horizon_is_refused(tmp_path):
    """data.forecast_predictions 0 (a VQ-VAE's config) leaves nothing to forecast: said before any work."""
    (tmp_path / "c.json").write_text(json.dumps({"data": {"forecast_predictions": 0}}))
    with pytest.raises(UserError, match="no horizon to forecast"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(tmp_path), "--config", str(tmp_path / "c.json"),
                       "--results", str(tmp_path / "results")])


def test_a_run_reports_its_own_horizon_and_draws_its_intervals_with_its_seed(tmp_path, monkeypatch):
    """A horizon two contexts long (6 s): the horizon seconds run to 6 s, "all" is the whole of it, and the intervals
    are the bootstrap over records drawn with --seed, as the report's header says."""
    for i, name in enumerate("abcdefgh"):
        write_record(tmp_path / "db", name, seconds=12, seed=i)
    (tmp_path / "c.json").write_text(json.dumps({"data": {"forecast_predictions": 2}}))
    monkeypatch.setattr(evaluate, "plot_results", lambda *args: None)           # the figures are not under test
    _, result = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--config", str(tmp_path / "c.json"),
                      "--seed", "3", "--results", str(tmp_path / "results")])
    assert result["horizons"] == [f"{k}-{k + 1} s" for k in range(6)] + ["all"]
    mse = result["forecasters"]["zero"]["metrics"]["mse"]
    per = np.array([[result["per_record"]["zero"]["mse"][r]] for r in "abcdefgh"])
    _, lo, hi = M.bootstrap_ci(per, evaluate.N_BOOT, 3)
    assert mse[-1]["ci"] == pytest.approx([lo[0], hi[0]], abs=1e-6)
    assert mse[-1]["value"] == pytest.approx(per.mean(), abs=1e-6)
    assert "seed 3" in result["header"]["bootstrap"]


def test_horizon_beats_are_chosen_before_the_windows_are_thinned(tmp_path):
    """--horizon-beats then --max-windows-per-record: the record keeps as many windows as asked for, all of the kind."""
    import wfdb

    write_record(tmp_path / "db", "r", seconds=60, seed=0)
    _, beats = synthetic_ecg(60, 360.0, seed=0)
    wfdb.wrann("r", "atr", np.asarray(beats), symbol=["V" if k % 9 == 4 else "N" for k in range(len(beats))],
               write_dir=str(tmp_path / "db"))
    cfg = load_config()
    args = argparse.Namespace(wfdb_dir=str(tmp_path / "db"), records=None, annotator="atr", horizon_beats="ventricular",
                              leads=None)
    every = evaluate.load_windows(argparse.Namespace(**vars(args), max_windows_per_record=None), cfg)
    two = evaluate.load_windows(argparse.Namespace(**vars(args), max_windows_per_record=2), cfg)
    assert len(every.start) > 2 and set(two.start) <= set(every.start) and len(two.start) == 2


def test_one_record_skipped_is_counted_as_one(tmp_path):
    """A database with one record too short to score: the report's header said '(1 records skipped)' and its
    Records section 'Skipped 1 record(s)'."""
    write_record(tmp_path / "db", "a", seconds=20, seed=1)
    write_record(tmp_path / "db", "short", seconds=5, seed=2)
    run, result = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--results", str(tmp_path / "out")])
    assert [s["record"] for s in result["skipped"]] == ["short"]
    report = (run / "report.md").read_text()
    assert "(1 record skipped)" in report and "\nSkipped 1 record:\n" in report and "(s)" not in report


def test_windows_whose_context_shows_no_rhythm_are_warned_of(tmp_path, capsys):
    """At 25 bpm most 3 s contexts hold one R peak, and the drafts lay no beats after them: the forecasts' scores
    said so without a word. The warning names the record and its count; a record of 72 bpm has none."""
    x, _ = synthetic_ecg(60.0, 360.0, seed=3, hr_bpm=25.0)
    write_signal(tmp_path / "db", "slow", x)
    write_record(tmp_path / "db", "fast", seconds=60, seed=1)
    run, result = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--results", str(tmp_path / "out")])
    said = result["header"]["warnings"]
    assert re.search(r"^\d+ of 18 windows have a context of fewer than two R peaks \(a heart rate under 40 bpm, a "
                     r"pause\), in slow \(\d+\): the beat drafts", said) and "fast" not in said
    assert said in capsys.readouterr().err
    assert [evaluate.slowest_bpm(s) for s in (3.0, 2.0, 4.0)] == ["40", "60", "30"]     # 2 beats in 2 intervals


def test_the_rhythmless_warning_counts_contexts_of_under_two_peaks_and_names_the_most_such_records_first(
        monkeypatch):
    """rhythmless_caution counts the windows whose context holds fewer than two R peaks (two give an RR interval),
    says 'has' of one, names the records most such windows first, five of them, and '...' only for more."""
    import drafts
    monkeypatch.setattr(drafts, "context_rhythm", lambda x, fs: ([np.arange(int(v)) for v in x[:, 0, 0]], None, None))

    def said(peaks: list[int], record: list[int]) -> str | None:
        signals = np.zeros((len(peaks), 8, 2))
        signals[:, :4, 0] = np.array(peaks)[:, None]
        return evaluate.rhythmless_caution(SimpleNamespace(signals=signals, record=np.array(record),
                                                           records=[f"r{i}" for i in range(7)]), 3, 1)  # 3 s

    assert said([2, 3, 2], [0, 0, 1]) is None
    assert said([2, 1, 2], [0, 1, 1]).startswith("1 of 3 windows has a context of fewer than two R peaks (a heart "
                                                  "rate under 40 bpm, a pause), in r1 (1): the beat drafts")
    assert " in r2 (3), r0 (1), r1 (1): " in said([0, 1, 0, 1, 1], [1, 2, 2, 0, 2])   # ties in record order
    five = said([1] * 5, list(range(5)))
    assert five.startswith("5 of 5 windows have") and ", r4 (1): the beat" in five
    six = said([1] * 6, list(range(6)))
    assert ", r4 (1), ...: the beat" in six and "r5" not in six


def test_records_horizon_beats_leaves_without_windows_are_named_with_the_reason(tmp_path):
    """--records a b --horizon-beats ventricular scored only a, and the report's header and records said nothing
    of b: a record without annotations, or without such a beat in any horizon, is skipped with its reason."""
    import wfdb

    write_record(tmp_path / "db", "v", seconds=40, seed=0)
    _, beats = synthetic_ecg(40, 360.0, seed=0)
    wfdb.wrann("v", "atr", np.asarray(beats), symbol=["V" if k % 9 == 4 else "N" for k in range(len(beats))],
               write_dir=str(tmp_path / "db"))
    write_record(tmp_path / "db", "n", seconds=40, seed=1)
    write_record(tmp_path / "db", "u", seconds=40, seed=2, annotate=False)
    run, result = _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--horizon-beats", "ventricular",
                        "--results", str(tmp_path / "results")])
    assert [r["record"] for r in result["record_info"]] == ["v"]
    skipped = {s["record"]: s["reason"] for s in result["skipped"]}
    assert skipped == {"n": "none of its 6 windows has a ventricular beat in its horizon (--horizon-beats ventricular)",
                       "u": "no beat annotations, which --horizon-beats reads"}
    report = (run / "report.md").read_text()
    assert "(2 records skipped)" in report and "- n: none of its 6 windows" in report


def test_a_record_horizon_beats_leaves_unscored_counts_nowhere(tmp_path):
    """--horizon-beats ventricular loads n (annotated, all beats N) but scores none of its windows: the detector's
    counts, its annotated records and every table are those of scoring v alone, and n is only named as skipped."""
    import wfdb

    write_record(tmp_path / "db", "v", seconds=40, seed=0)
    _, beats = synthetic_ecg(40, 360.0, seed=0)
    wfdb.wrann("v", "atr", np.asarray(beats), symbol=["V" if k % 9 == 4 else "N" for k in range(len(beats))],
               write_dir=str(tmp_path / "db"))
    write_record(tmp_path / "db", "n", seconds=40, seed=1)
    argv = ["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--horizon-beats", "ventricular"]
    run, both = _run(argv + ["--results", str(tmp_path / "both")])
    _, alone = _run(argv + ["--records", "v", "--results", str(tmp_path / "alone")])
    assert both["detector"] == alone["detector"] and both["detector"]["annotated_records"] == 1
    assert both["detector"]["100ms"]["tp"] > 0
    assert both["records"] == alone["records"] == ["v"]
    assert both["per_record"] == alone["per_record"] and both["forecasters"] == alone["forecasters"]
    assert [r["record"] for r in both["record_info"]] == ["v"]
    assert both["horizon_beats"]["ventricular"]["records"] == ["v"]
    assert [s["record"] for s in both["skipped"]] == ["n"]
    report = (run / "report.md").read_text()
    assert "of 1 annotated record (pooled" in report and "| n |" not in report and "- n: none of its" in report


def test_horizon_beats_on_unclassified_beats_says_they_carry_no_class(tmp_path, capsys):
    """A QRS detector's annotations (--annotator qrs) label every beat N: --horizon-beats ventricular said only that
    no window has such a beat, and normal took every window as normal, both without saying why. A cardiologist's of
    patients with normal beats alone (MIT-BIH's 115 and 122) read N too: they were said to carry no beat class."""
    write_record(tmp_path / "db", "d", seconds=40, seed=0)
    with pytest.raises(UserError, match="has a ventricular beat in its horizon; its reference beats all read N: the "
                                        "patients' beats are all normal, or the annotations carry no beat class"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--horizon-beats", "ventricular",
                       "--results", str(tmp_path / "results")])
    _run(["--model", "zero", "--wfdb-dir", str(tmp_path / "db"), "--horizon-beats", "normal",
          "--results", str(tmp_path / "results")])
    assert "reference beats all read N" in capsys.readouterr().err


def test_a_beat_on_the_first_horizon_sample_is_a_horizon_beat():
    """The horizon starts at sample `context`: a beat there is the horizon's, one a sample before it the context's."""
    c = 128
    w = _one_record_windows(np.zeros((2, 2 * c, 2)), [np.array([c - 1, c + 50]), np.array([c, c + 50])])
    w.beat_sym = np.array([ord(s) for s in "VNVN"], np.uint8)
    assert evaluate.horizon_classes(w, c) == [{"N"}, {"V", "N"}]


@pytest.mark.parametrize("symbol,kinds", [("F", ["ectopic"]), ("E", ["ectopic", "ventricular"]), ("?", []),
                                          ("r", ["ectopic", "ventricular"]), ("B", ["normal"]), ("n", ["normal"])])
def test_horizon_beats_follow_the_aami_classes_of_every_beat_symbol(symbol, kinds):
    """A fusion (F) is ectopic but neither supraventricular nor ventricular, a ventricular escape (E) ventricular, and
    an unclassifiable beat (?, class Q) makes its window none of the kinds, not even normal. Symbols of other
    databases: an R-on-T PVC (r) is ventricular, a bundle branch block beat (B) and a supraventricular escape (n)
    normal."""
    c = 128
    w = _one_record_windows(np.zeros((1, 2 * c, 2)), [np.array([c + 10, c + 60])])
    w.beat_sym = np.array([ord("N"), ord(symbol)], np.uint8)
    masks = evaluate.horizon_beats_masks(w, c)
    assert [kind for kind in evaluate.HORIZON_BEATS if masks[kind][0]] == kinds


def test_the_best_baseline_is_chosen_on_each_score_by_its_own_value():
    """Baseline "early" has the lower MSE in the first second and the lower CRPS, "late" the lower MSE over the whole
    horizon and the higher F1: each row pairs with its own best, and its change is the difference relative to that
    baseline's mean."""
    labels = ["0-1 s", "1-2 s", "2-3 s", "all"]
    per = {"early": {"mse": [[1, 9, 9, 6], [1, 9, 9, 6]], "crps": [[1.2] * 4] * 2, "f1_100": [[0.5] * 4] * 2},
           "late": {"mse": [[2, 3, 3, 3], [2, 3, 3, 3]], "crps": [[2] * 4] * 2, "f1_100": [[0.9] * 4, [0.8] * 4]},
           "model": {"mse": [[3, 3, 3, 2], [1, 3, 3, 2]], "crps": [[1] * 4, [2] * 4], "f1_100": [[0.9] * 4, [0.9] * 4]}}
    per = {name: {k: np.array(v, float) for k, v in d.items()} for name, d in per.items()}
    tables = {name: {"metrics": evaluate.metric_table(d, 4, 10, 0)} for name, d in per.items()}
    rows = evaluate.paired_with_best_baseline(per, tables, frozenset(["early", "late"]), labels, 10, 0)
    got = {(r["metric"], r["horizon"]): (r["baseline"], r["difference"]["value"], r["change_pct"]) for r in rows}
    assert got == {("mse", "all"): ("late", -1, pytest.approx(-100 / 3)), ("mse", "0-1 s"): ("early", 1, 100),
                   ("crps", "all"): ("early", pytest.approx(0.3), pytest.approx(25)),
                   ("f1_100", "all"): ("late", pytest.approx(0.05), pytest.approx(100 * 0.05 / 0.85))}


def test_metrics_json_keeps_small_numbers_to_their_significant_digits():
    """metrics.json rounded to 6 decimals: an MSE difference of 1.234e-05 was kept as 1.2e-05, which the report then
    printed as '1.20e-05', and an interval's end under 5e-7 as 0."""
    assert evaluate._num(1.234567e-05) == 1.234567e-05 and evaluate._num(-4e-07) == -4e-07
    assert evaluate._num(-100 / 3) == -33.33333 and evaluate._num(0.0849123456) == 0.08491235
    assert evaluate._num(np.nan) is None and evaluate._num(np.float32(np.inf)) is None


def test_a_horizon_of_one_second_pairs_its_mse_once():
    """With one horizon second its MSE is the whole horizon's: paired once, not twice."""
    assert evaluate.paired_scores(2) == [("mse", 1), ("crps", 1), ("f1_100", 1)]
    assert evaluate.paired_scores(4) == [("mse", 3), ("mse", 0), ("crps", 3), ("f1_100", 3)]


@pytest.mark.parametrize("bad,needle", [(lambda y: y[..., :1], r"shape \(1, 2, 4, 1\), expected \[1, S, 4, 2\]"),
                                        (lambda y: y[:, :, :3], r"shape \(1, 2, 3, 2\)"),
                                        (lambda y: y * np.nan, "NaN or inf"), (lambda y: y + np.inf, "NaN or inf")])
def test_a_forecast_of_the_wrong_shape_or_not_finite_is_refused_by_name(bad, needle):
    """Your own forecaster's output is checked before it is scored: a NaN would make every mean over records NaN."""
    w = _one_record_windows(np.random.default_rng(0).normal(size=(2, 12, 2)), [np.zeros(0)] * 2)

    class Broken:
        def predict(self, x, horizon, num_samples=100, seed=0):
            return bad(np.ones((1, num_samples, horizon, 2), np.float32))

    with pytest.raises(UserError, match=f"mine: predict returned {needle}"):
        evaluate.predict_windows(Broken(), "mine", w, np.array([0, 1]), 8, 2, seed=0, fs=8)


class OnGpu(torch.Tensor):
    """A tensor numpy cannot read until it is copied to the CPU, as a CUDA tensor is."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                        "host memory first.")

    def cpu(self, *args, **kwargs) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)


@pytest.mark.parametrize("as_tensor", [lambda y: torch.from_numpy(y).as_subclass(OnGpu),
                                       lambda y: torch.from_numpy(y).bfloat16()], ids=["on_a_gpu", "bfloat16"])
def test_a_forecast_returned_as_a_torch_tensor_is_scored_as_its_numbers(as_tensor):
    """A forecaster of one's own handed --device's GPU may return its paths there, or in bfloat16: both are read on
    the CPU as float32, as a numpy array of the same numbers would be."""
    w = _one_record_windows(np.random.default_rng(0).normal(size=(2, 12, 2)), [np.zeros(0)] * 2)

    class OnDevice:
        def predict(self, x, horizon, num_samples=100, seed=0):
            return as_tensor(np.full((1, num_samples, horizon, 2), 0.25, np.float32))

    y = evaluate.predict_windows(OnDevice(), "mine", w, np.array([0, 1]), 8, 2, seed=0, fs=8)
    assert y.dtype == np.float32 and y.shape == (2, 2, 4, 2) and (y == 0.25).all()


def test_a_record_of_more_windows_than_one_chunk_scores_every_window():
    """A 30-minute MIT-BIH record has more windows than one chunk of 256: its MSE is the mean over all of them."""
    c = h = 128
    signals = np.random.default_rng(0).normal(0, 0.3, size=(300, c + h, 2)).astype(np.float32)
    signals[255] *= 3                                      # the first chunk's last window
    w = _one_record_windows(signals, [np.zeros(0)] * 300)
    scores, truth = evaluate.evaluate({"zero": evaluate.make_forecaster("zero", 128)}, w, c, 128, 1, progress=False)
    s = evaluate.summarize(scores, truth, w, 128, h, n_boot=10)
    assert s["per_record"]["zero"]["mse"]["r1"] == pytest.approx(np.mean(signals[:, c:] ** 2), rel=1e-5)


def test_the_progress_bar_counts_windows(monkeypatch):
    """The bar moves with every chunk of windows scored: counted in records, one 24 h record's 14400 windows (hours
    with a model) stood at 0/1 until the end."""
    moved = []

    class Bar:
        def __init__(self, total, **kwargs):
            moved.append(total)

        def update(self, n):
            moved.append(n)

        def close(self):
            pass
    monkeypatch.setattr(evaluate, "tqdm", Bar)
    w = _one_record_windows(np.random.default_rng(0).normal(0, 0.3, size=(300, 256, 2)), [np.zeros(0)] * 300)
    evaluate.evaluate({"zero": evaluate.make_forecaster("zero", 128)}, w, 128, 128, 1)
    assert moved == [300, 256, 44]


def test_forecast_beats_are_read_on_lead_1():
    """The R peaks of a forecast are detected on its first lead, as the reference beats are annotated: a forecast
    with the true beats on lead 1 and a flat lead 2 scores F1 1."""
    c = h = 384
    beats = np.arange(30, c + h, 100)
    x = spike_train(c + h, beats)
    w = _one_record_windows(np.stack([x, -0.5 * x], -1)[None], [beats])

    class Lead1:
        def predict(self, context, horizon, num_samples=100, seed=0):
            return np.stack([x[c:], np.zeros(h)], -1)[None, None].astype(np.float32)

    scores, truth = evaluate.evaluate({"lead1": Lead1()}, w, c, 128, 1, progress=False)
    assert evaluate.summarize(scores, truth, w, 128, h, n_boot=10)["per_record"]["lead1"]["f1_100"]["r1"] == 1


def test_the_detector_check_reads_lead_1():
    """The detector is checked on the lead the beats are annotated on: a true window with clear beats on lead 1
    and a flat lead 2 find every beat."""
    c = h = 384
    beats = np.arange(30, c + h, 100)
    x = spike_train(c + h, beats)
    w = _one_record_windows(np.stack([x, np.zeros_like(x)], -1)[None], [beats])
    scores, truth = evaluate.evaluate({}, w, c, 128, progress=False)
    det = evaluate.summarize(scores, truth, w, 128, h, n_boot=10)["detector"]["100ms"]
    assert (det["tp"], det["fn"], det["fp"]) == (np.sum(beats >= c), 0, 0)
    assert det["sensitivity"] == det["positive_predictivity"] == 1


def test_each_horizon_second_counts_the_records_that_define_it():
    """A record without beats in a horizon second has no F1 there: that second's mean and record count are of
    the other records, while the whole horizon still counts both."""
    c = h = 256
    beats = [np.arange(30, c + h, 100), np.arange(30, c + 128, 100)]      # r2: none in the horizon's second second
    signals = np.stack([np.stack([spike_train(c + h, b)] * 2, -1) for b in beats])
    w = evaluate.Windows(signals.astype(np.float32), np.array([0, 1]), np.zeros(2, np.int64),
                         np.array([0, len(beats[0]), len(beats[0]) + len(beats[1])]), np.concatenate(beats),
                         ["r1", "r2"], np.array([True, True]), [["MLII", "V1"]] * 2, [360.0] * 2)
    scores, truth = evaluate.evaluate({"zero": evaluate.make_forecaster("zero", 128)}, w, c, 128, 1, progress=False)
    f1 = evaluate.summarize(scores, truth, w, 128, h, n_boot=10)["forecasters"]["zero"]["metrics"]["f1_100"]
    assert [e["records"] for e in f1] == [2, 1, 2] and [e["value"] for e in f1] == [0, 0, 0]


def _records_of_beats(periods: list[int], windows: int, c: int, h: int, fs: int = 128) -> evaluate.Windows:
    """One annotated record per beat period (samples), `windows` windows each: spikes on lead 1 plus some noise,
    every reference beat normal (N)."""
    rng = np.random.default_rng(0)
    signals, beats, record = [], [], []
    for r, period in enumerate(periods):
        for k in range(windows):
            b = np.arange(10 + 7 * k, c + h, period)
            x = spike_train(c + h, b, fs=fs) + rng.normal(0, 0.05, c + h)
            signals.append(np.stack([x, -0.5 * x], -1))
            beats.append(b)
            record.append(r)
    return evaluate.Windows(np.array(signals, np.float32), np.array(record), np.tile(np.arange(windows) * (c + h),
                            len(periods)), np.concatenate([[0], np.cumsum([len(b) for b in beats])]).astype(np.int64),
                            np.concatenate(beats).astype(np.int64), [f"r{r}" for r in range(len(periods))],
                            np.ones(len(periods), bool), [["MLII", "V1"]] * len(periods), [360.0] * len(periods),
                            beat_sym=np.full(sum(len(b) for b in beats), ord("N"), np.uint8))


def test_every_interval_is_drawn_with_the_run_seed():
    """The header says the intervals are the bootstrap over records drawn with --seed: every metric of every
    forecaster, every paired difference and the detector's errors resample the records with that seed, so two
    forecasters' intervals stand on the same resampled patients; and a stratum of horizon beats that holds every
    window scores exactly as the whole run."""
    c, h, fs, n_boot, seed = 256, 256, 128, 20, 3
    w = _records_of_beats([90, 100, 110, 120, 130], 2, c, h, fs)
    fc = {n: evaluate.make_forecaster(n, fs) for n in ("zero", "mean", "persistence", "seasonal")}
    scores, truth = evaluate.evaluate(fc, w, c, fs, 1, progress=False)
    s = evaluate.summarize(scores, truth, w, fs, h, n_boot=n_boot, seed=seed, baselines=frozenset(["zero", "mean"]))
    num = evaluate._num
    per = {name: M.record_metrics(sc.sums) for name, sc in scores.items()}        # every record has windows
    for name, table in s["forecasters"].items():
        for metric, rows in table["metrics"].items():
            _, lo, hi = M.bootstrap_ci(per[name][metric], n_boot, seed)
            assert [r["ci"] for r in rows] == [[num(a), num(b)] for a, b in zip(lo, hi)], (name, metric)
    pairs = s["paired"] + s["paired_models"]
    assert {r["forecaster"] for r in s["paired"]} == {"persistence", "seasonal"} and s["paired_models"]
    for r in pairs:
        j = s["horizons"].index(r["horizon"])
        d = M.paired_difference(per[r["forecaster"]][r["metric"]][:, j],
                                per[r.get("baseline") or r["against"]][r["metric"]][:, j], n_boot, seed)
        assert r["difference"]["ci"] == [num(v) for v in d["ci"]], r
    truth_metrics = M.record_metrics(truth)
    for metric in ("timing_ms", "hr_bpm"):
        _, lo, hi = M.bootstrap_ci(truth_metrics[metric][:, -1], n_boot, seed)
        assert s["detector"][metric]["ci"] == [num(lo), num(hi)]
    normal = s["horizon_beats"]["normal"]                  # every window's horizon beats are normal
    assert normal["windows"] == len(w.record)
    assert normal["forecasters"] == s["forecasters"] and normal["paired"] == s["paired"]


def test_a_model_named_twice_is_evaluated_once():
    """`--model template template`, or `baselines` with a baseline also named on its own, scores each forecaster
    once, where it is first named: not a second row "template (template)" of the same numbers."""
    from baselines import BASELINES

    assert evaluate.expand_models(["zero", "zero"]) == ["zero"]
    once = ["template", *[b for b in BASELINES if b != "template"]]
    assert evaluate.expand_models(["template", "baselines", "zero", "baselines"]) == once
    forecasters, baselines, _ = evaluate.build_forecasters(["template", "baselines", "template"], load_config(), "cpu")
    assert list(forecasters) == once and baselines == set(BASELINES)


def test_a_forecaster_is_deterministic_only_when_it_says_so_and_draws_one_sample():
    """metrics.json's `deterministic`, in the run's tables and in each horizon-beats stratum: a sampled baseline run
    with --samples 1 is still a sampled forecaster, and one that does not say (ForecasterBase's default) but returns
    several samples is sampled too; a baseline that returns one sample is deterministic. The fair CRPS of a sampled
    forecaster's one path is undefined: one draw cannot estimate its spread (it was the MAE, twice its CRPS)."""
    c, h, fs = 256, 256, 128
    w = _records_of_beats([100, 120], 1, c, h, fs)

    class Undeclared:
        def predict(self, context, horizon, num_samples=100, seed=0):
            return np.random.default_rng(seed).normal(size=(1, 3, horizon, 2)).astype(np.float32)

    class UndeclaredOne:
        """Draws as many paths as asked, and does not say so: at --samples 1 its one path is a draw (it was scored
        as a point forecast, its fair CRPS its MAE); one path where three were asked is a point forecast."""
        def __init__(self, paths: int | None = None):
            self.paths = paths

        def predict(self, context, horizon, num_samples=100, seed=0):
            shape = (1, self.paths or num_samples, horizon, 2)
            return np.random.default_rng(seed).normal(size=shape).astype(np.float32)

    fc = {"zero": evaluate.make_forecaster("zero", fs), "ens": evaluate.make_forecaster("seasonal_ensemble", fs),
          "undeclared": Undeclared(), "sampler": UndeclaredOne(), "point": UndeclaredOne(1)}
    scores, truth = evaluate.evaluate(fc, w, c, fs, 1, progress=False)
    s = evaluate.summarize(scores, truth, w, fs, h, n_boot=10)
    want = {"zero": True, "ens": False, "undeclared": False, "sampler": False, "point": False}
    assert {name: t["deterministic"] for name, t in s["forecasters"].items()} == want
    assert {name: t["deterministic"] for name, t in s["horizon_beats"]["normal"]["forecasters"].items()} == want
    fair = {name: t["metrics"]["crps_fair"][-1]["records"] for name, t in s["forecasters"].items()}
    assert fair == {"zero": 2, "ens": 0, "undeclared": 2, "sampler": 0, "point": 0}
    assert s["forecasters"]["ens"]["metrics"]["crps"][-1]["records"] == 2     # the one path's, as issued
    scores, truth = evaluate.evaluate({"point": UndeclaredOne(1)}, w, c, fs, 3, progress=False)
    assert evaluate.summarize(scores, truth, w, fs, h, n_boot=10)["forecasters"]["point"]["deterministic"] is True


def test_each_window_keeps_its_own_reference_beats_within_a_chunk():
    """The windows of a record are scored together, in one chunk: each window's reference beats are matched with
    its own horizon. Three windows with beats at other times and in other numbers: the detector finds every beat
    and nothing else on the true horizons, and a forecast of the true horizon scores F1 1."""
    c = h = 384
    beats = [np.arange(20, c + h, 70), np.arange(70, c + h, 130), np.arange(50, c + h, 100)]    # 11, 6, 8 beats
    signals = np.stack([np.stack([spike_train(c + h, b), np.zeros(c + h)], -1) for b in beats]).astype(np.float32)
    w = _one_record_windows(signals, beats)

    class Oracle:           # the true horizon of the window whose context it is handed
        def predict(self, context, horizon, num_samples=100, seed=0):
            i = next(k for k in range(len(signals)) if np.array_equal(signals[k, :c], context[0]))
            return signals[i, c:][None, None]

    scores, truth = evaluate.evaluate({"oracle": Oracle()}, w, c, 128, 1, progress=False)
    s = evaluate.summarize(scores, truth, w, 128, h, n_boot=10)
    det = s["detector"]["100ms"]
    assert (det["tp"], det["fp"], det["fn"]) == (sum(int(np.sum(b >= c)) for b in beats), 0, 0)
    assert s["per_record"]["oracle"]["f1_100"]["r1"] == 1


def test_the_gallery_picks_records_and_windows_by_their_whole_horizon_mse_over_the_zero_forecasts():
    """gallery_<model>.png shows the records forecast best, middling and worst by whole-horizon MSE over the zero
    forecast's (the horizon's power): a record that forecasts its first second well but the rest badly is not the
    best one, and a loud record is not the worst for its loudness alone."""
    first, whole = [9, 9, 0, 0, 1, 1], [1, 3, 2, 2.5, 5, 6]       # records 0, 0, 1, 1, 2, 2; n = 1 everywhere
    s = evaluate.Scores(6, window_sums={"se": np.array([first, [0] * 6, whole], float).T, "n": np.ones((6, 3))})
    np.testing.assert_array_equal(s.window_mse, whole)
    signals = np.ones((6, 4, 2))                                   # context 2, horizon 2: power 1 everywhere
    w = SimpleNamespace(record=np.repeat([0, 1, 2], 2), signals=signals)
    picks = evaluate.gallery_picks(s, w, evaluate.zero_forecast_mse(w, 2))
    assert picks == [("lowest-error record", 0, 1), ("median record", 1, 3), ("highest-error record", 2, 5)]
    signals[4:] *= 10                                              # record 2 ten times louder: its ratio 0.055
    picks = evaluate.gallery_picks(s, w, evaluate.zero_forecast_mse(w, 2))
    assert [p[1] for p in picks] == [2, 0, 1]


def test_the_gallery_draws_each_record_once_when_there_are_fewer_than_three():
    """One record was drawn three times, the same window as its lowest-, median- and highest-error record."""
    s = evaluate.Scores(4, window_sums={"se": np.array([[1, 2, 5, 3]], float).T, "n": np.ones((4, 1))})
    w = SimpleNamespace(record=np.array([0, 0, 1, 1]), signals=np.ones((4, 4, 2)))
    assert evaluate.gallery_picks(s, w, evaluate.zero_forecast_mse(w, 2)) == [
        ("lowest-error record", 0, 1), ("highest-error record", 1, 2)]
    w.record[:] = 0
    assert evaluate.gallery_picks(s, w, evaluate.zero_forecast_mse(w, 2)) == [("the only record", 0, 3)]


def test_a_gallery_panel_draws_the_truth_on_top_with_both_bands_as_forecast_py_does():
    """The galleries drew the truth first, under the 80 % band and the sample path, where forecast.py's PNG and the
    trainers' draw it on top; they had no 50% band. A gallery panel is forecast.py's panel now: the truth above
    every band and sample, the 50% and 80% bands, and a point forecast labelled as no mean."""
    import matplotlib.pyplot as plt
    context, horizon = 8, 16
    t = (np.arange(context + horizon) - context) / 16
    truth = np.sin(np.arange(context + horizon, dtype=float))
    samples = np.random.default_rng(0).standard_normal((50, horizon))
    fig, ax = plt.subplots()
    evaluate.plot_lead(ax, t, context, truth, samples, "record r1 MLII")
    drawn = {a.get_label(): a for a in ax.lines + ax.collections}
    assert {"context", "truth", "50% band", "80% band", "one sample", "forecast (mean)"} <= set(drawn)
    assert all(drawn["truth"].get_zorder() > drawn[k].get_zorder() for k in ("50% band", "80% band", "one sample"))
    assert ax.get_ylabel() == "mV" and ax.get_xlabel() == "time from forecast start (s)"
    fig, ax = plt.subplots()
    evaluate.plot_lead(ax, t, context, truth, samples[:1], "record r1 MLII")
    assert [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")] == ["context", "truth", "forecast"]
    plt.close("all")


def test_gallery_panels_name_the_lead_by_number_and_name_and_the_figure_whose_ranking(tmp_path, monkeypatch):
    """A gallery panel said 'record 117 MLII' where every other figure says 'lead 1: MLII': both are said now, and
    a record without lead names still says which lead. The records are ranked by the best baseline's MSE for every
    gallery, so gallery_persistence.png's 'lowest-error record' could be its worst (125% of the zero forecast's
    against 101%): the figure's title says whose ranking it is, and how many paths each window drew (it said none,
    where forecast.py's and the trainers' plots say theirs)."""
    drawn = []
    monkeypatch.setattr(evaluate, "plot_lead", lambda *a: drawn.append(a[-1]))
    import matplotlib.pyplot as plt
    plt_titles = []
    monkeypatch.setattr(plt, "close", lambda fig: plt_titles.append(fig._suptitle.get_text()))
    w = SimpleNamespace(signals=np.zeros((2, 48, 2), np.float32), record=np.array([0, 1]), records=["117", "r2"],
                        start=np.array([0, 128]), leads=[["MLII", "V2"], []])
    s = evaluate.Scores(2, window_sums={"se": np.ones((2, 1)), "n": np.ones((2, 1))})
    picks = [("lowest-error record", 0, 0), ("highest-error record", 1, 1)]
    evaluate.plot_gallery("zero", evaluate.make_baseline("zero", 16), s, w, 32, 16, 1, 0, tmp_path / "g.png", picks,
                          np.ones(2))
    assert plt_titles[0] == "zero: forecast examples (1 forecast path)"      # no one's ranking: the test passes none
    evaluate.plot_gallery("zero", evaluate.make_baseline("zero", 16), s, w, 32, 16, 1, 0, tmp_path / "g.png", picks,
                          np.ones(2), ranked_by="template_ensemble")
    assert plt_titles[1] == ("zero: forecast examples (1 forecast path; records ranked by template_ensemble's MSE over "
                             "the zero forecast's)")
    monkeypatch.setattr(evaluate, "predict_windows", lambda *a: np.zeros((1, 7, 16, 2), np.float32))
    evaluate.plot_gallery("sampler", None, s, w, 32, 16, 7, 0, tmp_path / "g.png", picks, np.ones(2))
    assert plt_titles[2] == "sampler: forecast examples (7 sampled paths)"       # the paths behind its bands
    assert [t.split("\n")[0] for t in drawn[:4]] == [
        "lowest-error record 117, lead 1: MLII, forecast from 2 s",
        "lowest-error record 117, lead 2: V2, forecast from 2 s",
        "highest-error record r2, lead 1, forecast from 10 s",
        "highest-error record r2, lead 2, forecast from 10 s"]


def test_each_gallery_names_the_split_or_folder_its_windows_come_from(tmp_path, monkeypatch):
    """error_curves.png named its split, but gallery_<model>.png did not: a validation run's gallery and the model
    card's test gallery looked alike. The gallery's title names the windows' source as the curves' title does. Its
    key below the panels is as large as the axis labels (it was 8 pt, the smallest text on the figure)."""
    import matplotlib.pyplot as plt
    titles, figures = [], []
    monkeypatch.setattr(plt, "close", lambda fig: titles.append(fig._suptitle.get_text()) or figures.append(fig))
    for name in ("plot_error_curves", "curves_title", "error_curves_csv"):
        monkeypatch.setattr(evaluate, name, lambda *a, **k: "")
    monkeypatch.setattr(evaluate, "gallery_picks", lambda *a: [("lowest-error record", 0, 0)])
    w = SimpleNamespace(signals=np.zeros((1, 48, 2), np.float32), record=np.array([0]), records=["117"],
                        start=np.array([0]), leads=[["MLII", "V2"]], source={"kind": "prepared", "split": "validation"})
    s = evaluate.Scores(1, window_sums={"se": np.ones((1, 1)), "n": np.ones((1, 1))})
    cfg = SimpleNamespace(data=SimpleNamespace(samples_per_second=16, window_samples=32))
    args = SimpleNamespace(samples=1, seed=0, horizon_beats=None)
    summary = {"order": ["zero"], "forecasters": {"zero": {"metrics": {}, "deterministic": True}}}
    evaluate.plot_results(tmp_path, {"zero": evaluate.make_baseline("zero", 16)}, {"zero": s}, summary, w, cfg, args,
                          frozenset({"zero"}))
    assert titles == ["zero: forecast examples, validation split (1 forecast path)"]
    label = figures[0].axes[0].yaxis.label.get_fontsize()       # the key as large as the axis labels, as elsewhere
    assert all(t.get_fontsize() >= label for t in figures[0].legends[0].get_texts())
    w.source = {"kind": "wfdb", "split": "records 100, 101", "path": str(tmp_path / "db")}
    assert evaluate.windows_source(w) == f"{tmp_path / 'db'}, records 100, 101"


def test_each_gallery_row_says_whose_error_ranked_it(tmp_path, monkeypatch):
    """Every gallery shows the windows the reference forecaster's error ranks, yet each row said 'lowest-error
    record' as if by this gallery's own: only the figure's title said whose ranking it was. Each row's title names
    the ranker now, and its second line whose MSE it gives; the titles of a row stay apart and inside the figure."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    fs, context = 128, 384
    w = SimpleNamespace(signals=np.zeros((2, 768, 2), np.float32), record=np.array([0, 1]), records=["117", "sel0106"],
                        start=np.array([128000, 230000]), leads=[["MLII", "V2"], ["MLII", "V1"]])
    s = evaluate.Scores(2, window_sums={"se": np.ones((2, 1)), "n": np.ones((2, 1))})
    picks = [("lowest-error record", 0, 0), ("highest-error record", 1, 1)]
    evaluate.plot_gallery("transformer", evaluate.make_baseline("zero", fs), s, w, context, fs, 1, 0,
                          tmp_path / "g.png", picks, np.ones(2), ranked_by="seasonal_ensemble")
    fig = figures[0]
    titles = [ax.get_title().split("\n") for ax in fig.axes]
    assert titles[3] == ["seasonal_ensemble's highest-error record sel0106, lead 2: V1, forecast from 1800 s",
                         "transformer's window MSE (both leads) 1 mV², 100% of the zero forecast's"]
    assert all(t[0].startswith("seasonal_ensemble's ") and t[1].startswith("transformer's window MSE") for t in titles)
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in fig.axes]
    assert all(0 <= b.x0 and b.x1 <= fig.bbox.width for b in boxes), (boxes, fig.bbox)
    assert not any(boxes[2 * row].overlaps(boxes[2 * row + 1]) for row in range(2))
    evaluate.plot_gallery("transformer", evaluate.make_baseline("zero", fs), s, w, context, fs, 1, 0,
                          tmp_path / "g.png", [("the only record", 0, 0)], np.ones(2), ranked_by="seasonal_ensemble")
    assert figures[1].axes[0].get_title().startswith("the only record 117, lead 1")      # one record: no ranks


def test_a_run_on_one_record_shows_no_intervals_and_draws_it_once(tmp_path, monkeypatch):
    """Bootstrapping one record gives [v, v]: the report showed intervals of no width, and a model paired with a
    baseline on one patient an interval that excludes 0."""
    write_record(tmp_path / "one", "r1", seconds=30, fs=250, seed=1)
    own = tmp_path / "own.py"
    own.write_text("from baselines import make_baseline\n\n\ndef Mine(fs):\n    return make_baseline('template', fs)\n")
    drawn = []
    monkeypatch.setattr(evaluate, "plot_gallery", lambda *a, **k: drawn.append(a[-2]))
    run, result = _run(["--model", f"{own}:Mine", "zero", "--wfdb-dir", str(tmp_path / "one"),
                        "--results", str(tmp_path / "results")])
    mse = result["forecasters"]["zero"]["metrics"]["mse"][-1]
    assert mse["value"] > 0 and mse["ci"] == [None, None] and mse["records"] == 1
    assert result["paired"] and all(r["difference"]["ci"] == [None, None] for r in result["paired"])
    assert result["detector"]["timing_ms"]["ci"] == [None, None]
    report = (run / "report.md").read_text()
    assert f"| zero | {eval_report.fmt(mse['value'])} [—, —] |" in report and "0 [0, 0]" not in report
    assert [[p[0] for p in picks] for picks in drawn] == [["the only record"]] * 2


def test_error_curves_draw_the_models_over_the_baselines_in_one_colour_each(tmp_path, monkeypatch):
    """A model a hair from the best baseline was hidden under its line: models are drawn thick and on top,
    baselines thin and dashed, a baseline's colour by its name in every run; a panel draws each model's CRPS minus
    the best baseline's; F1's ticks name the horizon seconds; one legend, below the panels."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    names = ["zero", "model", "template_ensemble"]
    crps = {"zero": 3.0, "model": 1.0, "template_ensemble": 1.5}
    scores = {n: evaluate.Scores(2, curves={"se": np.ones((2, 32)), "ae": np.ones((2, 32)),
                                            "crps": np.full((2, 32), 2 * crps[n]), "windows": np.array([1.0, 1.0])})
              for n in names}
    f1 = [{"value": 0.5}, {"value": 0.4}, {"value": 0.45}]
    summary = {"order": names, "horizons": ["0-1 s", "1-2 s", "all"],
               "forecasters": {n: {"metrics": {"f1_100": f1, "crps": [{"value": crps[n]}] * 3}} for n in names}}
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero", "template_ensemble"}))
    fig = figures[0]
    mse, crps_ax, gain, f1_ax = fig.axes
    for ax in (mse, crps_ax, f1_ax):
        lines = {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}
        assert lines["model"].get_linewidth() > lines["template_ensemble"].get_linewidth()
        assert lines["model"].get_zorder() > lines["template_ensemble"].get_zorder()
        assert lines["zero"].get_linestyle() == "--" and lines["model"].get_linestyle() == "-"
        assert [ln.get_color() for ln in ax.lines] == [ln.get_color() for ln in mse.lines]
        assert ax.get_legend() is None
    assert lines["template_ensemble"].get_color() == evaluate.BASELINE_COLOURS["template_ensemble"]
    assert "template_ensemble" in gain.get_title() and np.allclose(gain.lines[0].get_ydata(), -0.5)
    assert [t.get_text() for t in f1_ax.get_xticklabels()] == ["0-1 s", "1-2 s"]
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == names


def test_a_baseline_of_ones_own_takes_no_models_colour_or_marker():
    """A baseline registered in baselines.BASELINES but not in BASELINE_COLOURS was drawn in C7 with marker d, the
    fifth model's: each now takes a colour and marker of its own, and the named baselines and models keep theirs."""
    order = ["m1", "m2", "m3", "m4", "m5", "mine", "zero", "also_mine"]
    baselines = frozenset({"mine", "zero", "also_mine"})
    for styles, named, models in ((evaluate.curve_colours, evaluate.BASELINE_COLOURS, evaluate.MODEL_COLOURS),
                                  (evaluate.curve_markers, evaluate.BASELINE_MARKERS, evaluate.MODEL_MARKERS)):
        got = styles(order, baselines)
        assert [got[m] for m in order[:5]] == list(models) and got["zero"] == named["zero"]
        assert len(set(got.values())) == len(order)


def test_error_curves_tell_coinciding_forecasters_apart_by_their_marks(tmp_path, monkeypatch):
    """The template ensemble's line lay hidden under the transformer's, nearly equal, told apart by colour alone:
    each forecaster has a marker of its own now (a baseline's by its name, as its colour), drawn over every line
    and at points of its own, so coinciding curves show both; the legend shows line and marker, the colours kept."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    names = ["model", "zero", "template_ensemble"]
    curve = np.linspace(1.0, 2.0, 32)[None]
    scores = {n: evaluate.Scores(1, curves={"se": curve, "crps": curve, "windows": np.array([0.5])}) for n in names}
    summary = {"order": names, "horizons": ["0-1 s", "1-2 s", "all"],
               "forecasters": {n: {"metrics": {"f1_100": [{"value": 0.5}] * 3, "crps": [{"value": 1.0}] * 3}}
                               for n in names}}
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero", "template_ensemble"}))
    fig = figures[0]
    mse = fig.axes[0]
    lines = {ln.get_label(): ln for ln in mse.lines if not ln.get_label().startswith("_")}
    marks = {ln.get_color(): ln for ln in mse.lines if ln.get_label().startswith("_")}
    assert len(marks) == 3 and all(m.get_linestyle() == "None" for m in marks.values())
    markers = {n: marks[lines[n].get_color()].get_marker() for n in names}
    assert len(set(markers.values())) == 3
    assert markers["template_ensemble"] == evaluate.BASELINE_MARKERS["template_ensemble"]
    assert lines["template_ensemble"].get_color() == evaluate.BASELINE_COLOURS["template_ensemble"]
    assert min(m.get_zorder() for m in marks.values()) > max(ln.get_zorder() for ln in lines.values())
    at = {n: set(marks[lines[n].get_color()].get_xdata()) for n in names}
    assert all(at[n] for n in names) and not at["model"] & at["template_ensemble"] and not at["model"] & at["zero"]
    legend = dict(zip([t.get_text() for t in fig.legends[0].get_texts()], fig.legends[0].legend_handles))
    assert {n: legend[n].get_marker() for n in names} == markers
    assert legend["zero"].get_linestyle() == "--" and legend["model"].get_linestyle() == "-"


def test_error_curves_give_each_model_a_marker_of_its_own_in_every_panel(tmp_path, monkeypatch):
    """Two models whose curves coincide are told apart by their marks as a model and a baseline are: a marker each,
    at points of their own, in every panel, the CRPS difference panel's too, and F1's, where every point is marked
    and equal F1s lay on one spot (the dodge)."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    names, baselines = ["transformer", "latent_sde", "zero"], frozenset({"zero"})
    curve = np.linspace(1.0, 2.0, 64)[None]
    scores = {n: evaluate.Scores(1, curves={"se": curve, "crps": curve, "windows": np.array([0.5])}) for n in names}
    summary = {"order": names, "horizons": ["0-1 s", "1-2 s", "all"],
               "forecasters": {n: {"metrics": {"f1_100": [{"value": 0.5}] * 3, "crps": [{"value": 1.0}] * 3}}
                               for n in names}}
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", baselines)
    colour = evaluate.curve_colours(names, baselines)
    for ax in figures[0].axes:
        marks = {ln.get_color(): ln for ln in ax.lines if ln.get_linestyle() == "None"}
        first, second = (marks[colour[n]] for n in ("transformer", "latent_sde"))
        assert first.get_marker() != second.get_marker()
        assert not set(first.get_xdata()) & set(second.get_xdata())
    f1_marks = [ln.get_xdata() for ln in figures[0].axes[3].lines if ln.get_linestyle() == "None"]
    assert all(len(x) == 2 and abs(x[0] - round(x[0])) <= evaluate.F1_DODGE for x in f1_marks)


def test_the_f1_panels_dodge_spreads_a_seconds_points_evenly_within_half_a_second():
    """Each forecaster's F1 points sit at their own shift, from -F1_DODGE for the first to +F1_DODGE for the last,
    evenly, and never as far as half a second (the neighbouring seconds' points); a lone forecaster's stay put."""
    assert evaluate.dodge(["a"], "a") == 0.0
    assert [evaluate.dodge(["a", "b"], n) for n in "ab"] == [-evaluate.F1_DODGE, evaluate.F1_DODGE]
    assert [evaluate.dodge(list("abc"), n) for n in "abc"] == pytest.approx([-evaluate.F1_DODGE, 0, evaluate.F1_DODGE])
    shifts = [evaluate.dodge(list("abcdef"), n) for n in "abcdef"]
    assert np.allclose(np.diff(shifts), np.diff(shifts)[0]) and 0 < max(map(abs, shifts)) < 0.5


def test_error_curves_say_which_windows_they_average(tmp_path, monkeypatch):
    """error_curves.png had no title: seen without its report, 3 validation windows' curves read like the model
    card's 920 test windows. It names the split (or folder and records), windows, records and paths now."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    w = SimpleNamespace(record=np.array([0, 0, 1]), source={"kind": "prepared", "split": "validation"})
    title = evaluate.curves_title(w, 20)
    assert title == "validation split: 3 windows from 2 records, 20 paths per sampled forecast; means over records"
    w.source = {"kind": "wfdb", "split": "records 100, 101", "path": str(tmp_path / "db")}
    assert evaluate.curves_title(w, 5, "ventricular").startswith(
        f"{tmp_path / 'db'}, records 100, 101: 3 windows (--horizon-beats ventricular) from 2 records, 5 paths")
    w.record = np.array([0])
    assert evaluate.curves_title(w, 5).split(", 5 paths")[0].endswith(": 1 window from 1 record")
    assert ", 1 path per sampled forecast;" in evaluate.curves_title(w, 1)       # --samples 1 said '1 paths'
    scores = {"zero": evaluate.Scores(1, curves={"se": np.ones((1, 32)), "crps": np.ones((1, 32)),
                                                 "windows": np.array([1.0])})}
    summary = {"order": ["zero"], "horizons": ["0-1 s", "1-2 s", "all"],
               "forecasters": {"zero": {"metrics": {"f1_100": [{"value": 0.5}] * 3, "crps": [{"value": 1.0}] * 3}}}}
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero"}), title)
    assert figures[0].get_suptitle() == title


def test_error_curves_speak_of_paths_only_when_a_forecaster_scored_was_sampled(db250, tmp_path, monkeypatch):
    """The title said '8 paths per sampled forecast' when every forecaster scored was deterministic (--model zero
    mean seasonal): a sampled one there was none of. It says the paths when one was, as report.md decides it."""
    titles = []
    monkeypatch.setattr(evaluate, "plot_error_curves", lambda *a: titles.append(a[-1]))
    monkeypatch.setattr(evaluate, "plot_gallery", lambda *a, **k: None)
    common = ["--wfdb-dir", str(db250), "--records", "a01", "--max-windows-per-record", "2", "--samples", "8",
              "--results", str(tmp_path / "results")]
    evaluate.main(["--model", "zero", "mean", "seasonal", *common])
    evaluate.main(["--model", "zero", "seasonal_ensemble", *common])
    assert [t.split(": ", 1)[1] for t in titles] == ["2 windows from 1 record; means over records",
                                                   "2 windows from 1 record, 8 paths per sampled forecast; means over "
                                                   "records"]


def test_an_f1_panel_without_reference_beats_says_why_it_is_empty(tmp_path, monkeypatch):
    """Records without beat annotations left the F1 panel blank, like a plot that failed to draw; it said 'no
    reference beats' where the records had no beat annotations to hold them."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    scores = {"zero": evaluate.Scores(1, curves={"se": np.ones((1, 32)), "crps": np.ones((1, 32)),
                                                 "windows": np.array([1.0])})}
    summary = {"order": ["zero"], "horizons": ["0-1 s", "1-2 s", "all"], "detector": {"annotated_records": 1},
               "forecasters": {"zero": {"metrics": {"f1_100": [{"value": None}] * 3, "crps": [{"value": 1.0}] * 3}}}}
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero"}))
    assert [t.get_text() for t in figures[0].axes[-1].texts] == ["no reference beats in any horizon: F1 is undefined"]
    summary["detector"]["annotated_records"] = 0
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero"}))
    assert [t.get_text() for t in figures[1].axes[-1].texts] == ["the records have no beat annotations: F1 is "
                                                                 "undefined"]
    summary["forecasters"]["zero"]["metrics"]["f1_100"] = [{"value": 0.5}] * 3
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero"}))
    assert len(figures[2].axes[-1].texts) == 0


def test_an_f1_of_zero_is_drawn_inside_the_f1_panel(tmp_path, monkeypatch):
    """The zero, mean and persistence forecasts find no beats: their F1 of 0 lay on the panel's bottom edge, lines and
    markers cut in half by it. The panel reaches a little below 0 and above 1. The key is as large as the axis labels,
    as in every figure's."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    scores = {"zero": evaluate.Scores(1, curves={"se": np.ones((1, 32)), "crps": np.ones((1, 32)),
                                                 "windows": np.array([1.0])})}
    summary = {"order": ["zero"], "horizons": ["0-1 s", "1-2 s", "all"],
               "forecasters": {"zero": {"metrics": {"f1_100": [{"value": 0.0}] * 3, "crps": [{"value": 1.0}] * 3}}}}
    evaluate.plot_error_curves(scores, summary, 16, tmp_path / "e.png", frozenset({"zero"}))
    low, high = figures[0].axes[-1].get_ylim()
    assert low < 0 and high > 1
    label = figures[0].axes[0].yaxis.label.get_fontsize()       # the key as large as the axis labels, as elsewhere
    assert all(t.get_fontsize() >= label for t in figures[0].legends[0].get_texts())


def test_a_paired_interval_end_near_zero_keeps_its_sign_and_digit():
    """−0.0000 hid whether an interval excluded 0 (the model card's latent SDE MSE: upper end −1e-6 mV²): an end
    that rounds to zero at four decimals keeps a significant digit; an exact 0 stays +0.0000."""
    assert eval_report.signed({"value": -0.000303, "ci": [-0.000632, -1e-06]}) == "-0.0003 [-0.0006, -1e-06]"
    assert eval_report.signed({"value": 0.0001, "ci": [-0.0001, 0.0]}) == "+0.0001 [-0.0001, +0.0000]"
    assert eval_report.signed({"value": None, "ci": [None, None]}) == "—"


def test_a_paired_difference_near_zero_keeps_its_sign_and_digit():
    """The demo's transformer against the template ensemble: MSE 0.08656 against 0.08661 read '-0.0000 [-0.0001,
    -5e-06]' and '-0.1 %', CRPS '-0.0 %' on 20 of 23 records better: the value and the change keep a significant
    digit where they round to zero, as the interval's ends do; an exact 0 stays +0.0000 and +0.0 %."""
    assert eval_report.signed({"value": -4.6e-05, "ci": [-0.0001, -5e-06]}) == "-5e-05 [-0.0001, -5e-06]"
    assert eval_report.signed({"value": 0.0, "ci": [-0.0001, 0.0001]}) == "+0.0000 [-0.0001, +0.0001]"
    row = _paired_row(difference={"value": -2e-05, "ci": [-3e-05, -1e-05]}, change_pct=-0.04)
    assert _table("\n".join(eval_report.paired_section([row])), "## Paired")[0][6:8] == \
        ["-2e-05 [-3e-05, -1e-05]", "-0.04 %"]
    assert _table("\n".join(eval_report.paired_section([_paired_row(change_pct=0.0)])), "## Paired")[0][7] == "+0.0 %"


def test_a_sigterm_python_swallowed_stops_the_evaluation_at_its_next_record(db250, tmp_path, monkeypatch):
    """A SIGTERM that lands in a finalizer is only printed by Python; noted by the handler (running._terminating), it
    stops a long evaluation before its next record rather than letting it run to the scheduler's SIGKILL."""
    came = threading.Event()
    came.set()
    monkeypatch.setattr(running, "_terminating", came)
    monkeypatch.setattr(running, "_stopping", threading.Event())     # set as it goes up: this test's own
    # not scored to the end and stopped by the check after the galleries, which also leaves no folder
    monkeypatch.setattr(evaluate, "score_chunk", lambda *a, **k: pytest.fail("a record was scored after the SIGTERM"))
    with pytest.raises(running.Terminated):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db250), "--records", "a01",
                       "--results", str(tmp_path / "results")])
    assert not list((tmp_path / "results").glob("evaluate-*"))


def test_the_galleries_are_never_ranked_by_the_zero_forecasts_share_of_itself(tmp_path, monkeypatch):
    """The zero forecast's MSE is 100% of its own in every window: as the best baseline of a run (zero against
    persistence, whose CRPS is higher), it ranked the galleries' records by float noise, and the figures called
    them lowest- and highest-error. The next best baseline ranks them, or the first forecaster other than zero."""
    for k in range(3):
        write_record(tmp_path / "db", f"r{k}", seconds=40, fs=250, seed=k)
    drawn = []
    monkeypatch.setattr(evaluate, "plot_gallery", lambda *a, **k: drawn.append((a[0], k["ranked_by"], a[-2])))
    _, result = _run(["--model", "zero", "persistence", "--wfdb-dir", str(tmp_path / "db"),
                      "--results", str(tmp_path / "results")])
    crps = {n: result["forecasters"][n]["metrics"]["crps"][-1]["value"] for n in ("zero", "persistence")}
    assert crps["zero"] < crps["persistence"]        # zero is the best baseline on the paired tables
    assert [(name, by) for name, by, _ in drawn] == [("zero", "persistence"), ("persistence", "persistence")]
    own = tmp_path / "own.py"
    own.write_text("from baselines import make_baseline\n\n\ndef Mine(fs):\n    return make_baseline('template', fs)\n")
    drawn.clear()
    _, result = _run(["--model", "zero", f"{own}:Mine", "--wfdb-dir", str(tmp_path / "db"),
                      "--results", str(tmp_path / "results")])
    (mine,) = set(result["forecasters"]) - {"zero"}
    assert {by for _, by, _ in drawn} == {mine}


def test_evaluate_refuses_a_context_that_leaves_no_horizon_and_a_forecaster_at_another_rate():
    """evaluate() called from a script of one's own: a context as long as the windows stopped in a ZeroDivisionError
    deep in the scores, one of 0 in numpy's 'zero-size array', and a baseline made for 360 Hz was scored on 128 Hz
    windows without a word. A forecaster that says no rate (no `fs`) is taken at the windows'."""
    w = _one_record_windows(np.random.default_rng(0).normal(0, 0.3, size=(2, 256, 2)), [np.zeros(0)] * 2)
    zero = {"zero": evaluate.make_forecaster("zero", 128)}
    for context in (0, 256, 900, 128.0):
        with pytest.raises(ValueError, match=rf"context must be an integer from 1 to 255 .*got {context}"):
            evaluate.evaluate(zero, w, context, 128, 1, progress=False)
    with pytest.raises(UserError, match="forecaster 'seasonal': it forecasts at 360 Hz but the data is at 128 Hz"):
        evaluate.evaluate({"seasonal": evaluate.make_forecaster("seasonal", 360)}, w, 128, 128, 1, progress=False)

    class NoRate:
        def predict(self, context, horizon, num_samples=100, seed=0):
            return np.zeros((1, 1, horizon, 2), np.float32)
    scores, _ = evaluate.evaluate({**zero, "mine": NoRate()}, w, 128, 128, 1, progress=False)
    assert scores["mine"].windows == 2


def _stop_at_call(monkeypatch, k: int, stop: BaseException) -> None:
    """predict_windows raising `stop` at its k-th call (a forecaster's forecasts of one chunk), as a Ctrl-C, SIGTERM
    or a failing forecaster would in the middle of an evaluation."""
    calls = iter(range(1, 10**6))
    real = evaluate.predict_windows

    def predict(*args, **kwargs):
        if next(calls) == k:
            raise stop
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluate, "predict_windows", predict)


def _same_numbers(a: Path, b: Path) -> None:
    """Two runs' metrics.json, metrics.csv and error_curves.csv alike but for the header's date, wall time, resumed
    note and command (its --results)."""
    ja, jb = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    for j in (ja, jb):
        for k in ("date", "wall time", "resumed", "command"):
            j["header"].pop(k, None)
    assert ja == jb
    for name in ("metrics.csv", "error_curves.csv"):
        assert (a / name).read_text() == (b / name).read_text()


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), running.Terminated(), RuntimeError("out of memory")],
                         ids=["ctrl_c", "sigterm", "crash"])
def test_an_interrupted_evaluation_goes_on_where_it_stopped_with_the_same_numbers(db250, tmp_path, monkeypatch,
                                                                                  capsys, stop):
    """A DS2 evaluation of both shipped models takes 15-25 min: stopped or failed, the chunks it scored are kept in
    the results root, and the same command goes on from them. Each window is forecast alone with its own seed, so the
    numbers are those of a run never stopped. Stopped in the third record's chunk (between its two forecasters),
    after the first two's: the second's sums, not due by the 10 s between saves, are saved on the stop."""
    common = ["--model", "zero", "seasonal_ensemble", "--wfdb-dir", str(db250), "--samples", "4",
              "--max-windows-per-record", "3"]
    whole = evaluate.main(common + ["--results", str(tmp_path / "whole")])
    results = tmp_path / "results"
    _stop_at_call(monkeypatch, 6, stop)
    with pytest.raises(type(stop)) as stopped:
        evaluate.main(common + ["--results", str(results)])
    kept = list(results.glob(".evaluate-partial-*.npz"))
    assert len(kept) == 1 and not list(results.glob("evaluate-*"))
    if not isinstance(stop, RuntimeError):
        assert f"the 6 windows scored are kept in {kept[0]}: the same command goes on" in str(stopped.value)
    monkeypatch.undo()
    capsys.readouterr()
    run = evaluate.main(common + ["--results", str(results)])
    assert f"going on from an interrupted run: 6 of 9 windows scored ({kept[0]})" in capsys.readouterr().err
    _same_numbers(run, whole)
    header = json.loads((run / "metrics.json").read_text())["header"]
    assert header["resumed"] == "went on from an interrupted run's 6 of 9 windows; the wall time is this part's"
    assert "| resumed | went on from" in (run / "report.md").read_text()
    assert not list(results.glob(".evaluate-*"))        # gone with the success


def test_a_stop_while_a_chunks_sums_are_added_keeps_the_last_whole_chunks(db250, tmp_path, monkeypatch):
    """Stopped between adding one forecaster's sums of a chunk and the next's, the sums are of no whole chunk: the
    file keeps those saved before, and going on from them gives the numbers of a run never stopped."""
    common = ["--model", "zero", "persistence", "--wfdb-dir", str(db250), "--max-windows-per-record", "2"]
    whole = evaluate.main(common + ["--results", str(tmp_path / "whole")])
    calls = iter(range(1, 10**6))
    real = evaluate.Scores.add

    def add(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if next(calls) == 5:         # the third record's first forecaster added, not the second
            raise KeyboardInterrupt
    monkeypatch.setattr(evaluate.Scores, "add", add)
    results = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(common + ["--results", str(results)])
    monkeypatch.undo()
    with np.load(next(results.glob(".evaluate-partial-*.npz"))) as kept:
        assert int(kept["done"]) == 1       # saved after the first chunk (the second's not due), not the third's half
    _same_numbers(evaluate.main(common + ["--results", str(results)]), whole)


def test_other_runs_kept_scores_are_counted_and_one_gone_or_dangling_is_left_out(tmp_path, capsys):
    """A finished run names the scores other runs kept: a file that went between listing and reading (another run
    finishing) or a link to nothing was a FileNotFoundError traceback after the report was written."""
    (tmp_path / ".evaluate-partial-a.npz").write_bytes(b"x" * 2 ** 20)
    (tmp_path / ".evaluate-partial-b.npz").write_bytes(b"x" * 2 ** 19)
    (tmp_path / ".evaluate-partial-c.npz").symlink_to(tmp_path / "gone")
    (tmp_path / "..evaluate-partial-d.npz.1.tmp").write_bytes(b"x")    # atomic_save_npz's file being written
    evaluate.note_other_partials(tmp_path)
    assert capsys.readouterr().err == (
        f"note: 2 evaluations of other settings, interrupted or still running, keep their scores in {tmp_path}/"
        f".evaluate-partial-*.npz (1.5 MB): each goes on when its command runs again; delete those you will not run "
        f"again\n")
    for name in "ab":
        (tmp_path / f".evaluate-partial-{name}.npz").unlink()
    evaluate.note_other_partials(tmp_path)
    assert capsys.readouterr().err == ""


def test_an_interrupted_evaluations_scores_are_not_used_by_another(db250, tmp_path, monkeypatch, capsys):
    """The scores kept are an evaluation's of its own forecasters, windows, samples and seed: a run with another seed
    starts over, leaving them for their own command."""
    common = ["--model", "zero", "seasonal_ensemble", "--wfdb-dir", str(db250), "--samples", "4",
              "--max-windows-per-record", "2"]
    whole = evaluate.main(common + ["--results", str(tmp_path / "whole")])
    results = tmp_path / "results"
    _stop_at_call(monkeypatch, 5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(common + ["--seed", "1", "--results", str(results)])
    monkeypatch.undo()
    kept = list(results.glob(".evaluate-partial-*.npz"))
    before = kept[0].read_bytes()
    capsys.readouterr()
    _same_numbers(evaluate.main(common + ["--results", str(results)]), whole)
    said = capsys.readouterr().err
    assert "going on" not in said
    assert f"1 evaluation of other settings, interrupted or still running, keeps its scores in {results}/" in said
    assert list(results.glob(".evaluate-partial-*.npz")) == kept and kept[0].read_bytes() == before
    evaluate.main(common + ["--seed", "1", "--results", str(results)])
    said = capsys.readouterr().err
    assert "going on from an interrupted run: 4 of 6 windows scored" in said
    assert "interrupted or still running" not in said


def test_kept_scores_are_of_their_torch_thread_count(db250, tmp_path, monkeypatch, capsys):
    """A model's CPU sums may differ in their last bits with torch's thread count: scores kept under one count are not
    gone on from under another, which could match neither run never stopped."""
    common = ["--model", "zero", "--wfdb-dir", str(db250), "--max-windows-per-record", "1",
              "--results", str(tmp_path / "results")]
    _stop_at_call(monkeypatch, 2, KeyboardInterrupt())
    monkeypatch.setattr(evaluate, "torch_threads", lambda: 7)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(common)
    monkeypatch.undo()
    capsys.readouterr()
    evaluate.main(common)
    assert "going on" not in capsys.readouterr().err


def test_the_kept_scores_key_changes_with_everything_the_scores_depend_on(monkeypatch, tmp_path):
    """Scores kept under one key are gone on from by a run of the same key only: the samples, the seed, the weights,
    one's own code, the windows' samples and beats, the data config, torch's threads and the project's code each
    make another key (one left out would add a run's sums to another's)."""
    from dataclasses import replace

    monkeypatch.setattr(evaluate, "ROOT", tmp_path)
    (tmp_path / "a.py").write_text("x = 1\n")
    cfg = load_config(None)
    started = {"checkpoints": "w1", "own forecasters": "o1"}
    w = evaluate.Windows(np.zeros((2, 10, 2), np.float32), np.array([0, 0]), np.array([0, 5]), np.array([0, 1, 1]),
                         np.array([3]), ["a"], np.array([True]), [["MLII", "V1"]], [250.0])

    def key(w=w, cfg=cfg, started=started, samples=4, seed=0) -> str:
        return evaluate.partial_key({"zero": baselines.Zero(250)}, ["zero"], started, w, cfg, samples, seed)

    same = key()
    keys = {"samples": key(samples=5), "seed": key(seed=1), "weights": key(started={**started, "checkpoints": "w2"}),
            "own code": key(started={**started, "own forecasters": "o2"}),
            "signals": key(replace(w, signals=w.signals + 1e-3)), "beats": key(replace(w, beat_pos=w.beat_pos + 1)),
            "data": key(cfg=replace(cfg, data=replace(cfg.data, filter_order=3)))}
    with monkeypatch.context() as m:
        m.setattr(evaluate, "torch_threads", lambda: 99)
        keys["threads"] = key()
    (tmp_path / "a.py").write_text("x = 2\n")
    keys["code"] = key()
    (tmp_path / "a.py").write_text("x = 1\n")
    assert key() == same
    assert [k for k, v in keys.items() if v == same] == [] and len(set(keys.values())) == len(keys)


def test_a_stop_before_any_window_is_scored_keeps_nothing(db250, tmp_path, monkeypatch):
    """Stopped in the first chunk there is nothing to go on from: no kept file, and no word of 0 windows kept."""
    _stop_at_call(monkeypatch, 1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as stopped:
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db250), "--max-windows-per-record", "1",
                       "--results", str(tmp_path / "results")])
    assert "kept" not in str(stopped.value) and not list((tmp_path / "results").iterdir())


def test_a_stop_after_the_last_window_goes_on_with_every_window_scored(db250, tmp_path, monkeypatch, capsys):
    """Stopped while the galleries were drawn, every window's sums are kept (the last chunk's saved whatever the time
    since the last save), and the same command scores none again; a forecaster that draws paths without saying it
    is not deterministic is reported so after the resume as before."""
    (tmp_path / "own.py").write_text(
        "import numpy as np\n\n\nclass Noisy:\n    def __init__(self, fs):\n        self.fs = fs\n\n"
        "    def predict(self, context, horizon, num_samples=100, seed=0):\n"
        "        rng = np.random.default_rng(seed)\n"
        "        return rng.normal(0, 0.1, (len(context), num_samples, horizon, 2)).astype(np.float32)\n")
    common = ["--model", f"{tmp_path / 'own.py'}:Noisy", "--wfdb-dir", str(db250), "--samples", "3",
              "--max-windows-per-record", "1"]
    whole = evaluate.main(common + ["--results", str(tmp_path / "whole")])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluate, "plot_gallery", stopped)
    results = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt, match="the 3 windows scored are kept in"):
        evaluate.main(common + ["--results", str(results)])
    monkeypatch.undo()
    calls = []
    real = evaluate.score_chunk
    monkeypatch.setattr(evaluate, "score_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    capsys.readouterr()
    run = evaluate.main(common + ["--results", str(results)])
    assert "going on from an interrupted run: 3 of 3 windows scored" in capsys.readouterr().err and not calls
    _same_numbers(run, whole)


def test_an_unreadable_kept_file_is_started_over_not_a_traceback(db250, tmp_path, monkeypatch, capsys):
    """The kept scores emptied (a full disk, a copy that failed): np.load raised EOFError, a traceback that every run of
    the same command met again until the hidden file was found and deleted. It is started over, with a warning."""
    common = ["--model", "zero", "--wfdb-dir", str(db250), "--max-windows-per-record", "1",
              "--results", str(tmp_path / "results")]
    _stop_at_call(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(common)
    monkeypatch.undo()
    (kept,) = (tmp_path / "results").glob(".evaluate-partial-*.npz")
    kept.write_bytes(b"")
    capsys.readouterr()
    evaluate.main(common)
    assert f"warning: cannot read {kept} (EOFError: No data left in file): starting over" in capsys.readouterr().err
    assert not kept.exists()


def test_the_kept_scores_are_said_on_a_line_of_their_own_after_ones_own_forecasters_frames(db250, tmp_path):
    """One's own forecaster raising in the second record ends its error with its frames and its exception's line: the
    word of the scores kept was glued to that line ('ValueError: cannot forecast; the 1 window scored is kept in'),
    as if the forecaster had said it. It is a line of its own."""
    mine = tmp_path / "mine.py"
    mine.write_text("import numpy as np\ncalls = 0\n\n\nclass Second:\n    def __init__(self, fs):\n"
                    "        self.fs = fs\n\n"
                    "    def predict(self, context, horizon, num_samples=100, seed=0):\n        global calls\n"
                    "        calls += 1\n        if calls == 2:\n            raise ValueError('cannot forecast')\n"
                    "        return np.zeros((1, 1, horizon, 2), np.float32)\n")
    with pytest.raises(UserError) as caught:
        evaluate.main(["--model", f"{mine}:Second", "--wfdb-dir", str(db250), "--max-windows-per-record", "1",
                       "--results", str(tmp_path / "results")])
    *_, raised, kept = str(caught.value).splitlines()
    assert raised == "ValueError: cannot forecast"
    assert kept.startswith("the 1 window scored is kept in ") and kept.endswith(": the same command goes on from them")
    assert repr(caught.value.__cause__) == "ValueError('cannot forecast')"      # as raised without scores kept


@pytest.mark.parametrize("where", ["plot_error_curves", "plot_gallery"])
def test_a_stop_python_swallowed_while_drawing_still_stops_the_evaluation(db250, tmp_path, monkeypatch, where):
    """Ctrl-C while the figures were drawn landed in a matplotlib weakref callback, where Python only printed it
    ('Exception ignored in'): the evaluation wrote its report and exited 0. The stop noted (running's unraisable hook)
    stops it before the next gallery (each forecasts its picks again) or the report, its scores kept."""
    drawn = []
    gallery = evaluate.plot_gallery
    monkeypatch.setattr(evaluate, "plot_gallery", lambda *a, **k: drawn.append(a[0]) or gallery(*a, **k))
    real = getattr(evaluate, where)

    def swallowed(*args, **kwargs):
        real(*args, **kwargs)
        running._interrupted.set()
    monkeypatch.setattr(evaluate, where, swallowed)
    try:
        with pytest.raises(KeyboardInterrupt, match="the 2 windows scored are kept in"):
            evaluate.main(["--model", "zero", "persistence", "--wfdb-dir", str(db250), "--records", "a01",
                           "--max-windows-per-record", "2", "--results", str(tmp_path / "results")])
    finally:
        running._interrupted.clear()
    assert not list((tmp_path / "results").glob("evaluate-*"))
    assert drawn == ([] if where == "plot_error_curves" else ["zero"])


def test_a_stop_python_swallowed_while_scoring_stops_before_the_next_chunk(db250, tmp_path, monkeypatch):
    """A Ctrl-C or SIGTERM Python swallowed in a finalizer while a chunk was forecast stops the evaluation before the
    next chunk, not after every window was scored; the scores of the chunks done are kept."""
    calls = []
    real = evaluate.predict_windows

    def swallowed(*args, **kwargs):
        calls.append(1)
        running._interrupted.set()
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluate, "predict_windows", swallowed)
    try:
        with pytest.raises(KeyboardInterrupt, match="the 1 window scored is kept in"):
            evaluate.main(["--model", "zero", "--wfdb-dir", str(db250), "--max-windows-per-record", "1",
                           "--results", str(tmp_path / "results")])
    finally:
        running._interrupted.clear()
    assert len(calls) == 1


def test_error_curves_are_the_mean_over_records_of_each_records_mean_per_sample():
    """A record of one window weighs as much as one of three, and each value is per lead (curves sum two leads):
    a per-sample MSE of 1 mV² on one record and 3 mV² on the other reads 2, not the windows' pooled 2.5."""
    s = evaluate.Scores(4)
    s.add(0, np.array([0]), {}, {"se": np.full((1, 5), 2.0)}, 1, 2)          # 2 leads of 1 mV²
    s.add(1, np.array([1, 2, 3]), {}, {"se": np.full((3, 5), 6.0)}, 1, 2)    # 2 leads of 3 mV², three windows
    np.testing.assert_allclose(evaluate.mean_curve(s, "se"), np.full(5, 2.0))
