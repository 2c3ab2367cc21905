import contextlib
import copy
import csv
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Callable

import matplotlib.axes
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset

import paths
import running
import latent_sde_train
import train_results
import training
import transformer_train
import vqvae_train
from conftest import (ROOT, loads_of, run_script, scripted_validation, snapshot, stopped_at, trainer_inputs,
                      undocumented_columns, write_record)
from hyper_params import ModelConfig, TrainConfig, config_from_dict, load_config
from paths import UserError
from prepare_mitbih import SourceSamples, load_split, prepare
from tiny import TINY, flags, tiny_setup
from train_results import TRAINING_STATE, MetricsLog, check_same_config
from vqvae import VQVAE


def _run(setup: dict, *extra: str) -> dict:
    return vqvae_train.main(flags(setup, "--device", "cpu", *extra))


@contextlib.contextmanager
def killed_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int):
    """The run within dies as the trainer starts `epoch` (1-based), after the epoch before's checkpoint."""
    real_epoch = training.Trainer._train_epoch

    def die(self, model):
        if self.epoch == epoch - 1:
            raise RuntimeError("killed")
        return real_epoch(self, model)

    monkeypatch.setattr(training.Trainer, "_train_epoch", die)
    with pytest.raises(RuntimeError, match="killed"):
        yield
    monkeypatch.setattr(training.Trainer, "_train_epoch", real_epoch)


def _only_run(folder: Path) -> Path:
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run


def test_a_training_runs_figures_say_which_model_and_run_they_are(tmp_path: Path, synthetic_db: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """loss_curves.png had no title and codebook_health.png's named no run: a VQ-VAE's and a forecaster's curves
    looked alike once copied out of their folders. The VQ-VAE's reconstructions said 'epoch 2: ...' where the
    forecasters' epoch plots name their model. Each now says the model, and the run's curves its folder's name."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    _run(tiny_setup(tmp_path, synthetic_db), "--epochs", "1")
    run = _only_run(tmp_path / "results").name
    titles = [fig.get_suptitle() or fig.axes[0].get_title() for fig in figures]
    assert titles == ["VQ-VAE before training: validation windows, original vs reconstruction",
                      "VQ-VAE, epoch 1: validation windows, original vs reconstruction",
                      f"{run}: loss per epoch", f"{run}: codebook health in each training epoch"], titles


def test_vqvae_trains_in_float32_from_a_float64_session(tmp_path: Path, synthetic_db: Path) -> None:
    """vqvae_train.main() called where torch's default dtype is float64 (as scientific code sets it) built float64
    modules, and stopped in 'Input type (float) and bias type (double)' before its first step; it trains the float32
    model it saves, and leaves the session's default as it was."""
    setup = tiny_setup(tmp_path, synthetic_db)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        row = _run(setup, "--epochs", "1")
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(before)
    assert np.isfinite(row["val_loss"])
    ckpt = torch.load(next((tmp_path / "checkpoints").glob("*/last.pt")), weights_only=True)
    assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.float32}


def test_train_writes_plots_metrics_and_checkpoints(tmp_path: Path, synthetic_db: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    setup = tiny_setup(tmp_path, synthetic_db)
    row = _run(setup)
    run = _only_run(tmp_path / "results")
    ckpts = tmp_path / "checkpoints" / run.name
    assert (run / "reconstruction_initial.png").stat().st_size > 10_000
    assert (run / "reconstruction_epoch_001.png").exists() and (run / "reconstruction_epoch_002.png").exists()
    assert (run / "loss_curves.png").exists() and (run / "run.json").exists()
    assert (run / "codebook_health.png").stat().st_size > 10_000
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("train_loss", "val_loss", "val_mse_mv2", "val_prd", "val_prdn", "perplexity", "usage", "restarted"):
        assert key in rows[0], key
    assert float(rows[1]["perplexity"]) >= 1 and 0 < float(rows[1]["usage"]) <= 1
    assert not undocumented_columns(run / "metrics.csv")
    assert row["epoch"] == 2
    for name in ("last.pt", "best.pt", "epoch_001.pt", "epoch_002.pt"):
        ckpt = torch.load(ckpts / name, weights_only=True)
        assert ckpt["kind"] == "vqvae"
        assert not any(k.startswith("module.") for k in ckpt["model"])
        assert ckpt["meta"]["seed"] == 0 and ckpt["meta"]["git_commit"]
    assert not list(ckpts.glob("*.tmp"))
    # the reconstruction report of the trained model, through its CLI
    proc = subprocess.run([sys.executable, "vqvae_eval.py", "--checkpoint", str(ckpts / "best.pt"), "--split",
                           "validation", "--prepared", setup["prepared"], "--results", str(tmp_path / "eval")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(next((tmp_path / "eval").glob("vqvae_eval-*/reconstruction.json")).read_text())
    s = report["summary"]
    assert s["records"] == 1 and 0 < s["prdn"] < 200 and s["mse_mv2"] > 0
    # counted against the 360 Hz records of 12-bit samples (format 212), and against 12-bit samples at the model's 64 Hz
    assert (s["source_fs"], s["sample_bits"], s["sample_bits_assumed"]) == (360, 12, False)
    assert s["compression_ratio"] == pytest.approx(2 * 12 * 4 / 5 * 360 / 64)
    assert s["compression_ratio_model_rate"] == pytest.approx(2 * 12 * 4 / 5)
    # each record's leads, as meta.json gives them: a database of one's own may hold other leads in some records
    held = json.loads((Path(setup["prepared"]) / "meta.json").read_text())["records"]
    assert report["leads"] == {r: held[r]["leads"] for r in report["per_record"]} and report["leads"]
    md = next((tmp_path / "eval").glob("vqvae_eval-*/reconstruction.md")).read_text()
    assert "| record | leads | MSE (mV²) |" in md
    assert all(f"| {r} | {', '.join(leads)} | " in md for r, leads in report["leads"].items()), md
    # in process, on another split: the split asked for is the one scored, the report keeps what the checkpoint says
    # of its training, and the example plot shows the model's reconstruction beside the original
    import vqvae_eval
    drawn = {}
    monkeypatch.setattr(vqvae_eval, "plot_windows", lambda x, y, *a: drawn.update(x=x, y=y))
    monkeypatch.setattr(sys, "argv", ["vqvae_eval.py", "--checkpoint", str(ckpts / "best.pt"), "--split", "train",
                                      "--prepared", setup["prepared"], "--results", str(tmp_path / "eval_train")])
    vqvae_eval.main()
    report = json.loads(next((tmp_path / "eval_train").glob("vqvae_eval-*/reconstruction.json")).read_text())
    train = load_split("train", load_config(setup["config"]), setup["prepared"])
    assert report["split"] == "train" and report["summary"]["windows"] == len(train["signals"])
    assert report["checkpoint_sha256"] == paths.file_sha256(ckpts / "best.pt")     # the weights, not only their path
    assert report["trained"]["seed"] == 0
    # the data it read, named as the training run names its own (the same preparation here): config and input files
    assert report["data_hash"] == paths.run_data_hash(train) == report["trained"]["data_hash"]
    assert drawn["x"].shape == drawn["y"].shape and not np.allclose(drawn["x"], drawn["y"])
    # a record's codes and latents by the trained checkpoint: the 360 Hz record at its 64 Hz, to the record's end
    res = run_script(vqvae_eval.main, "vqvae_eval.py", ["--checkpoint", str(ckpts / "best.pt"), "--record",
                                                        str(synthetic_db / "100"), "--start", "55", "--seconds", "end",
                                                        "--results", str(tmp_path / "eval_record")])
    assert res.returncode == 0 and "its 360 Hz resampled to 64 Hz: 5 windows of 1 s from 55 s" in res.stdout, res.stderr
    assert np.load(next((tmp_path / "eval_record").glob("vqvae_eval-*/100_55s.npz")))["codes"].shape == (5, 16, 1)


def test_same_seed_same_numbers_and_resume_is_exact(tmp_path: Path, synthetic_db: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    setup = tiny_setup(tmp_path, synthetic_db)
    full = _run(setup, "--epochs", "2", "--batch-size", "4")
    again = _run(setup, "--epochs", "2", "--batch-size", "4")
    assert full["val_loss"] == again["val_loss"]
    runs = sorted((tmp_path / "checkpoints").iterdir())
    a = torch.load(runs[0] / "last.pt", weights_only=True)["model"]
    b = torch.load(runs[1] / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # die at the start of epoch 2 (after epoch 1's checkpoint), resume: the same weights, bit for bit
    with killed_in_epoch(monkeypatch, 2):
        _run(setup, "--epochs", "2", "--batch-size", "4")
    first = sorted((tmp_path / "checkpoints").iterdir())[2]
    initial = (tmp_path / "results" / first.name / "reconstruction_initial.png").stat().st_mtime_ns
    # as the README resumes: no config file and no flags of the run's, which its checkpoint keeps
    loads = loads_of(monkeypatch, first / "last.pt")
    resumed = vqvae_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(first / "last.pt")])
    assert len(loads) == 1      # read once, by main (load_resume), not again by the Trainer
    c = torch.load(first / "last.pt", weights_only=True)["model"]
    assert resumed["val_loss"] == full["val_loss"]
    # 'before training' stays the first run's plot, not the resumed model's
    assert (tmp_path / "results" / first.name / "reconstruction_initial.png").stat().st_mtime_ns == initial
    assert all(torch.equal(a[k], c[k]) for k in a)
    done = vqvae_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(first / "last.pt")])
    assert done == {"epoch": 2, "step": resumed["step"]}       # said so, and no final report of nothing
    (run,) = [r for r in (tmp_path / "results").iterdir() if r.name == first.name]
    record = json.loads((run / "run.json").read_text())        # the first run's record, then each resume's
    assert "'--batch-size', '4'" in record["command"] and record["config"]["train"]["batch_size"] == 4
    assert [r["checkpoint"] for r in record["resumes"]] == [str(first / "last.pt")]   # not the one with nothing to do
    assert "--resume" in record["resumes"][0]["command"] and record["resumes"][0]["train"]["epochs"] == 2
    assert record["torch_threads"] == record["resumes"][0]["torch_threads"] == torch.get_num_threads()


def test_a_run_refused_before_training_leaves_no_empty_folder(tmp_path: Path, synthetic_db: Path) -> None:
    setup = tiny_setup(tmp_path, synthetic_db)
    with pytest.raises(UserError, match=r"(\d+) training windows are fewer than one batch of 100000; pass "
                                        r"--batch-size \1 or less, or prepare more training records"):
        _run(setup, "--batch-size", "100000")
    for root in ("results", "checkpoints"):
        assert not (tmp_path / root).exists() or not any((tmp_path / root).iterdir())


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), running.Terminated(), UserError("loss is [nan]"),
                                  RuntimeError("a bug")], ids=["ctrl_c", "sigterm", "nan_loss", "traceback"])
def test_a_run_stopped_in_its_first_epoch_leaves_no_folders(tmp_path: Path, synthetic_db: Path, monkeypatch,
                                                            stop: BaseException) -> None:
    """Stopped before its first epoch ended, a run left an empty checkpoint folder and a results folder of run.json
    and the plot before training: the newest runs, with nothing to resume or compare (with a root for both too).
    Stopped in a later epoch, both stay (test_same_seed_same_numbers_and_resume_is_exact resumes one)."""
    setup = tiny_setup(tmp_path, synthetic_db)
    monkeypatch.setattr(training.Trainer, "_train_epoch", lambda self, model: (_ for _ in ()).throw(stop))
    with pytest.raises(type(stop)):
        _run(setup)
    with pytest.raises(type(stop)):
        _run(setup, "--results", str(tmp_path / "both"), "--checkpoints", str(tmp_path / "both"))
    for root in ("results", "checkpoints", "both"):
        assert not any((tmp_path / root).iterdir())


NOTHING_SAVED = "nothing was saved yet (last.pt is written at the end of every epoch)"
STOPS_BEFORE_TRAINING = [(KeyboardInterrupt(), 130, f"interrupted; {NOTHING_SAVED}"),
                         (running.Terminated(), 143, f"terminated; {NOTHING_SAVED}"),
                         (UserError("cannot read the git commit"), 2, "error: cannot read the git commit")]


@pytest.mark.parametrize("stop, status, said", STOPS_BEFORE_TRAINING, ids=["ctrl_c", "sigterm", "error"])
@pytest.mark.parametrize("at", ["run_record", "plot_fixed_windows"])
def test_a_run_stopped_before_its_trainer_runs_leaves_no_folders(tmp_path: Path, synthetic_db: Path, monkeypatch,
                                                                 stop: BaseException, status: int, said: str,
                                                                 at: str) -> None:
    """Stopped after its folders were made but before its Trainer ran (run.json's record; the plot before training,
    half drawn), a fresh run left both, empty or nearly, and Ctrl-C said only 'interrupted': they go, as a stop in
    the first epoch drops them, and it says that nothing was saved yet (with a root for both too)."""
    def half_drawn(model, windows, fs, out: Path, *rest) -> None:
        out.write_bytes(b"\x89PNG")
        raise stop

    setup = tiny_setup(tmp_path, synthetic_db)
    for roots in ({}, {"results": str(tmp_path / "both"), "checkpoints": str(tmp_path / "both")}):
        args = flags({**setup, **roots}, "--device", "cpu")
        if at == "run_record":
            r = stopped_at(monkeypatch, vqvae_train, at, stop, "vqvae_train.py", args)
        else:
            monkeypatch.setattr(vqvae_train, at, half_drawn)
            r = run_script(lambda: vqvae_train.main(args), "vqvae_train.py", args)
        assert (r.returncode, r.stderr.splitlines()) == (status, [said])
    for root in ("results", "checkpoints", "both"):
        assert not any((tmp_path / root).iterdir())


@pytest.mark.parametrize("stop, said", [(KeyboardInterrupt(), NOTHING_SAVED), (running.Terminated(), NOTHING_SAVED),
                                       (UserError("cannot read the git commit"), "cannot read the git commit")],
                         ids=["ctrl_c", "sigterm", "error"])
def test_a_main_called_from_python_stopped_before_its_trainer_leaves_no_folders(tmp_path: Path, synthetic_db: Path,
                                                                                monkeypatch, stop: BaseException,
                                                                                said: str) -> None:
    """vqvae_train.main() called from Python (a notebook, a test), not by its script (run_main): stopped before its
    Trainer was built, it left both folders, and its Ctrl-C said nothing. Now it drops them and says what the script
    says."""
    monkeypatch.setattr(vqvae_train, "run_record", lambda *a, **k: (_ for _ in ()).throw(stop))
    with pytest.raises(type(stop)) as raised:
        _run(tiny_setup(tmp_path, synthetic_db))
    assert type(raised.value) is type(stop) and str(raised.value) == said
    for root in ("results", "checkpoints"):
        assert not any((tmp_path / root).iterdir())


def test_a_stop_after_training_or_before_a_resume_leaves_the_runs_folders(tmp_path: Path, synthetic_db: Path,
                                                                          monkeypatch) -> None:
    """Folders go only when a new run stops before its first epoch is logged: not a finished run's stopped in its
    closing report (nor said to have saved nothing), nor a resumed run's own; a resume into new folders (its run's
    gone) says how it goes on, as the Trainer does."""
    setup = tiny_setup(tmp_path, synthetic_db)
    r = stopped_at(monkeypatch, vqvae_train, "compression_line", KeyboardInterrupt(), "vqvae_train.py",
                   flags(setup, "--device", "cpu", "--epochs", "1"))
    assert (r.returncode, r.stderr.splitlines()[-1]) == (130, "interrupted")
    run = _only_run(tmp_path / "results")
    last = tmp_path / "checkpoints" / run.name / "last.pt"
    assert (run / "metrics.csv").is_file() and last.is_file()
    kept = [snapshot(tmp_path / root) for root in ("results", "checkpoints")]
    resume = flags({k: v for k, v in setup.items() if k != "config"}, "--device", "cpu", "--resume", str(last))
    r = stopped_at(monkeypatch, vqvae_train, "run_record", KeyboardInterrupt(), "vqvae_train.py", resume)
    assert r.returncode == 130 and [snapshot(tmp_path / root) for root in ("results", "checkpoints")] == kept
    run.rename(tmp_path / "elsewhere")
    r = stopped_at(monkeypatch, vqvae_train, "run_record", KeyboardInterrupt(), "vqvae_train.py", resume)
    assert r.stderr.splitlines()[-1] == f"interrupted; resume with: python3 vqvae_train.py --resume {last}"
    assert not any((tmp_path / "results").iterdir()) and snapshot(tmp_path / "checkpoints") == kept[1]


@pytest.mark.parametrize("stop, status, word", [(KeyboardInterrupt(), 130, "interrupted"),
                                               (running.Terminated(), 143, "terminated")], ids=["ctrl_c", "sigterm"])
def test_a_resumed_run_stopped_before_its_trainer_says_how_to_resume(tmp_path: Path, synthetic_db: Path, monkeypatch,
                                                                     stop: BaseException, status: int,
                                                                     word: str) -> None:
    """A resumed run stopped before its Trainer ran (reading its tensors; encoding, in a forecaster's) said only
    'interrupted', where the same stop in training names the resume command: it names it too, and its folders stay.
    Stopped once its Trainer has run to the end, it says nothing more: there is nothing left to resume."""
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    last = tmp_path / "checkpoints" / _only_run(tmp_path / "results").name / "last.pt"
    kept = [snapshot(tmp_path / root) for root in ("results", "checkpoints")]
    resume = flags({"prepared": setup["prepared"]}, "--device", "cpu", "--resume", str(last))
    r = stopped_at(monkeypatch, vqvae_train, "run_splits", stop, "vqvae_train.py", resume)
    assert (r.returncode, r.stderr.splitlines()) == (status, [f"{word}; resume with: python3 vqvae_train.py "
                                                              f"--resume {last}"])
    assert [snapshot(tmp_path / root) for root in ("results", "checkpoints")] == kept
    monkeypatch.undo()
    r = stopped_at(monkeypatch, vqvae_train, "compression_line", stop, "vqvae_train.py", [*resume, "--epochs", "2"])
    assert (r.returncode, r.stderr.splitlines()[-1]) == (status, word)


def test_a_resume_command_names_the_runs_device_where_a_resume_takes_another(tmp_path: Path, synthetic_db: Path,
                                                                            monkeypatch) -> None:
    """A run kept on the CPU (--device cpu) of a machine with a GPU printed a resume command without --device, which
    went on on the GPU, its numbers no longer the CPU run's: the command says --device cpu there, and nothing more
    where the CPU is the default anyway."""
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    last = tmp_path / "checkpoints" / _only_run(tmp_path / "results").name / "last.pt"
    resume = flags({"prepared": setup["prepared"]}, "--device", "cpu", "--resume", str(last))
    for gpu, said in ((False, ""), (True, " --device cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        r = stopped_at(monkeypatch, vqvae_train, "run_splits", KeyboardInterrupt(), "vqvae_train.py", resume)
        assert r.stderr.splitlines() == [f"interrupted; resume with: python3 vqvae_train.py --resume {last}{said}"]
    assert training._device_flag("cuda:1") == ["--device", "cuda:1"] and training._device_flag("cuda") == []


@pytest.mark.parametrize("stop, status, word", [(KeyboardInterrupt(), 130, "interrupted"),
                                               (running.Terminated(), 143, "terminated")], ids=["ctrl_c", "sigterm"])
@pytest.mark.parametrize("module", [vqvae_train, transformer_train, latent_sde_train],
                         ids=["vqvae", "transformer", "latent_sde"])
def test_a_run_stopped_while_it_joins_the_process_group_says_how_it_goes_on(tmp_path: Path, monkeypatch,
                                                                            module: ModuleType, stop: BaseException,
                                                                            status: int, word: str) -> None:
    """Under torchrun a main joins the process group (setup_runtime) before load_resume reads --resume: stopped
    while it waits there for the other ranks, a resumed run said only 'interrupted' (its checkpoint not yet noted),
    and so did a new run, where README says that nothing was saved yet; they say what a stop later says."""
    script, last = f"{module.__name__}.py", tmp_path / "checkpoints" / "run" / "last.pt"
    r = stopped_at(monkeypatch, module, "setup_runtime", stop, script, ["--device", "cpu", "--resume", str(last)])
    said = f"{word}; resume with: python3 {script} --resume {last}"
    assert (r.returncode, r.stderr.splitlines()) == (status, [said])
    r = stopped_at(monkeypatch, module, "setup_runtime", stop, script, ["--device", "cpu"])
    assert (r.returncode, r.stderr.splitlines()) == (status, [f"{word}; {NOTHING_SAVED}"])


def test_the_readmes_model_of_ones_own_stopped_before_training_leaves_no_folders(tmp_path: Path, synthetic_db: Path,
                                                                                monkeypatch) -> None:
    """README's my_model.py, stopped between its shared_run_dirs and its Trainer, as vqvae_train.py."""
    setup, module = readme_model(tmp_path, synthetic_db, monkeypatch)
    r = stopped_at(monkeypatch, module, "run_record", KeyboardInterrupt(), "my_model.py",
                   flags(setup, "--device", "cpu"))
    assert (r.returncode, r.stderr.splitlines()) == (130, [f"interrupted; {NOTHING_SAVED}"])
    assert not any((tmp_path / "results").iterdir()) and not any((tmp_path / "checkpoints").iterdir())


def test_resume_refuses_checkpoint_of_another_model_config(tmp_path: Path, synthetic_db: Path) -> None:
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    ckpt = _only_run(tmp_path / "checkpoints") / "last.pt"
    other = tiny_setup(tmp_path / "other", synthetic_db, model={"codebook_size": 16})
    with pytest.raises(UserError, match="model.codebook_size"):
        _run(other, "--resume", str(ckpt))


def test_resume_on_data_prepared_again_says_so(tmp_path: Path, synthetic_db: Path, capsys) -> None:
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    run = _only_run(tmp_path / "checkpoints")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["meta"]["data_hash"] = "0123456789abcdef/0123456789abcdef"      # as if prepared by an older version
    torch.save(ckpt, run / "last.pt")
    capsys.readouterr()
    _run(setup, "--epochs", "2", "--resume", str(run / "last.pt"))
    assert "trained on prepared data 0123456789abcdef/0123456789abcdef, these windows are" in capsys.readouterr().err
    record = json.loads((Path(ckpt["run_dir"]) / "run.json").read_text())
    assert record["resumes"][-1]["data_hash"] == record["data_hash"]      # what the resumed epochs trained on


def test_a_resume_on_other_prepared_tensors_says_to_pass_the_runs_prepared_again(tmp_path: Path,
                                                                                 synthetic_db: Path) -> None:
    """A resume without the run's --prepared read the default folder, whose error advised another --config, which a
    resume refuses: it now names the run's --prepared, from the command that wrote the checkpoint. A new run's error
    is as it was."""
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    last = _only_run(tmp_path / "checkpoints") / "last.pt"
    other = tiny_setup(tmp_path / "other", synthetic_db, data={"samples_per_second": 128})
    with pytest.raises(UserError, match="was prepared with another data config") as refused:
        _run({**setup, "prepared": other["prepared"]}, "--resume", str(last), "--epochs", "2")
    said = str(refused.value)
    assert "a resume reads the tensors its run trained on: pass that run's --prepared again" in said
    assert f"'--prepared', {setup['prepared']!r}" in said.split("this checkpoint was written by `vqvae_train.main(")[1]
    with pytest.raises(UserError, match="was prepared with another data config") as fresh:
        _run({**setup, "prepared": other["prepared"]}, "--epochs", "1")
    assert "--prepared again" not in str(fresh.value)


def test_a_resume_reads_the_prepared_tensors_its_run_read(tmp_path: Path, synthetic_db: Path, monkeypatch,
                                                         capsys) -> None:
    """The resume command a stop prints names no folder: typed as printed after a run on a --prepared of its own, it
    read the default folder (other tensors, or none) and was refused, told to pass the run's --prepared again. It
    reads the folder its run.json names; $ECG_PREPARED_DIR still names another, and a folder gone leaves the
    default."""
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    last = _only_run(tmp_path / "checkpoints") / "last.pt"
    record = json.loads((_only_run(tmp_path / "results") / "run.json").read_text())
    assert record["prepared"] == os.path.abspath(setup["prepared"])
    monkeypatch.setitem(paths.ENV, "prepared", ("ECG_PREPARED_DIR", tmp_path / "default"))     # holds nothing
    resume = ["--device", "cpu", "--resume", str(last), "--epochs", "2"]
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match=re.escape(f"prepared tensors not found: {tmp_path / 'elsewhere'}")):
        vqvae_train.main(resume)
    monkeypatch.delenv("ECG_PREPARED_DIR")
    capsys.readouterr()
    assert vqvae_train.main(resume)["epoch"] == 2
    assert f"note: reading the prepared tensors the run read, in {record['prepared']}" in capsys.readouterr().err
    shutil.move(setup["prepared"], tmp_path / "moved")
    with pytest.raises(UserError, match=re.escape(f"prepared tensors not found: {tmp_path / 'default'}")):
        vqvae_train.main([*resume[:-1], "3"])


def test_cut_checkpoint_is_a_clear_error(tmp_path: Path, synthetic_db: Path) -> None:
    setup = tiny_setup(tmp_path, synthetic_db)
    _run(setup, "--epochs", "1")
    ckpt = _only_run(tmp_path / "checkpoints") / "last.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(UserError, match="cut short"):
        _run(setup, "--resume", str(cut))


def test_missing_prepared_tensors_is_one_line_and_nonzero(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "vqvae_train.py", "--prepared", str(tmp_path / "nothing"),
                           "--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "c"), "--device", "cpu"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and sorted(p.name for p in tmp_path.iterdir()) == []
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "prepare_mitbih.py" in lines[0]
    assert "nothing" in lines[0]


def test_replica_outputs_are_averaged() -> None:
    """nn.DataParallel gathers each GPU's scalar loss and metrics into vectors; the trainer steps on their mean."""
    loss, metrics = training._gathered(torch.tensor([1.0, 3.0]), {"mse": torch.tensor([0.5, 1.5]), "n": 2})
    assert loss.item() == 2.0 and metrics["mse"].item() == 1.0 and metrics["n"] == 2
    loss, metrics = training._gathered(torch.tensor(1.5), {"acc": torch.tensor(0.25)})
    assert loss.item() == 1.5 and metrics["acc"].item() == 0.25


def test_replica_outputs_of_an_uneven_split_weigh_each_window_once() -> None:
    """DataParallel splits 10 windows over 4 GPUs as 3, 3, 3 and 1 (torch.chunk): each GPU's mean loss counts
    by its windows, so the step's loss is the batch's mean, not the last window's x 3."""
    dp = nn.DataParallel.__new__(nn.DataParallel)       # its constructor wants GPUs; the split needs device_ids only
    nn.Module.__init__(dp)
    dp.device_ids = [0, 1, 2, 3]
    per_window = torch.arange(10.0)
    sizes = training._replica_sizes(dp, (torch.zeros(10, 2), torch.zeros(10)))
    assert sizes == [3, 3, 3, 1]
    replica_means = torch.stack([c.mean() for c in per_window.chunk(4)])
    loss, metrics = training._gathered(replica_means, {"mse": replica_means, "n": 4}, sizes)
    assert loss.item() == per_window.mean().item() and metrics["mse"].item() == per_window.mean().item()
    assert training._replica_sizes(nn.Linear(1, 1), torch.zeros(10)) is None
    assert training._replica_sizes(dp, torch.zeros(2, 5)) == [1, 1]      # two windows fill two of the GPUs


def test_data_parallel_only_without_a_named_card(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert training.Runtime(torch.device("cuda")).data_parallel
    for rt in (training.Runtime(torch.device("cuda:1")), training.Runtime(torch.device("cuda:0"), 0, 2),
               training.Runtime(torch.device("cpu"))):
        assert not rt.data_parallel


def test_rng_state_brings_back_every_generator_a_resume_draws_from() -> None:
    """A resume is exact only if torch's, numpy's and Python's global generators all come back: nothing in training
    draws from numpy's or Python's today, so dropping either restore passed every resume test, and the first model
    code or augmentation to draw from them would resume on other numbers."""
    import random

    training.seed_everything(3)
    state = training.rng_state()
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    training.seed_everything(4)
    training.set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_unwrap_gives_the_bare_module_of_either_wrapper() -> None:
    """Checkpoints hold unwrap(model)'s weights and validation under torchrun runs unwrap(model) (DDP would sync
    buffers in every forward): an unwrap that gave the wrapper back saved 'module.'-prefixed weights that no bare
    model loads. DDP is built without a process group here, as the wrapper it is."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    bare = nn.Linear(4, 1)
    ddp = DDP.__new__(DDP)
    nn.Module.__init__(ddp)
    ddp.module = bare
    for wrapper in (nn.DataParallel(bare), ddp):
        assert training.unwrap(wrapper) is bare
        assert sorted(training.unwrap(wrapper).state_dict()) == ["bias", "weight"]
    assert training.unwrap(bare) is bare


def test_a_model_given_in_data_parallel_trains_as_its_bare_module(tmp_path, capsys) -> None:
    """A model wrapped in nn.DataParallel by its user: on a CPU (no device ids) _replica_sizes split each batch into
    0 chunks, a RuntimeError; the Trainer wraps the model itself as the runtime says, so it takes the module inside,
    said in a note, and trains it as the bare one."""
    inner = nn.Linear(4, 1)
    bare = toy_trainer(tmp_path / "bare", copy.deepcopy(inner))
    bare.fit()
    wrapped = toy_trainer(tmp_path / "wrapped", nn.DataParallel(inner))
    assert wrapped.model is inner and "note: the model given to Trainer is wrapped in DataParallel" in \
        capsys.readouterr().err
    wrapped.fit()
    assert all(torch.equal(a, b) for a, b in zip(bare.model.parameters(), inner.parameters()))


class CardsDataParallel(nn.DataParallel):
    """nn.DataParallel over cards 0, 1 and 2 as the trainer sees it, its forward on the CPU: its constructor wants
    GPUs, and the replicas' draws come from the cards' generators (torch.cuda.default_generators), patched here."""

    def __init__(self, module: nn.Module):
        nn.Module.__init__(self)
        self.module, self.device_ids = module, [0, 1, 2]

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)


def test_data_parallel_replicas_draw_apart_and_again_on_resume(tmp_path, monkeypatch) -> None:
    """torch.manual_seed seeds every card's generator alike, so DataParallel's replicas drew the same dropout masks
    and latent SDE noise for their shares of a batch. At every epoch's start cards 1 and 2 reseed from (seed, epoch,
    card), the first card left to draw as one GPU would: each card then draws its own numbers, and the same again
    when a resume redoes the epoch."""
    def states(name: str) -> list[torch.Tensor]:
        cards = [torch.Generator().manual_seed(0) for _ in range(3)]      # as torch.manual_seed(0) leaves them
        monkeypatch.setattr(torch.cuda, "default_generators", tuple(cards))
        trainer = toy_trainer(tmp_path / name)
        trainer._train_epoch(CardsDataParallel(trainer.model))
        return [card.get_state() for card in cards]

    first, resumed = states("first"), states("resumed")
    assert torch.equal(first[0], torch.Generator().manual_seed(0).get_state())
    assert not any(torch.equal(first[i], first[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    assert all(torch.equal(a, b) for a, b in zip(first, resumed))


def test_each_epoch_reseeds_the_cards_and_ranks_anew(monkeypatch) -> None:
    """epoch_seed differs by seed, epoch and stream (a rank, a card), the same again for the same three: the cards'
    draws of epoch 2 are not epoch 1's, as a rank's are not."""
    seeds = [training.epoch_seed(s, e, k) for s in (0, 1) for e in (0, 1, 2) for k in (0, 1, 2)]
    assert len(set(seeds)) == len(seeds) and training.epoch_seed(1, 2, 1) == seeds[-2]
    cards = [torch.Generator().manual_seed(0) for _ in range(3)]
    monkeypatch.setattr(torch.cuda, "default_generators", tuple(cards))
    model = CardsDataParallel(nn.Linear(4, 1))
    states = []
    for epoch in (1, 2):
        training.seed_replica_cards(model, 0, epoch)
        states.append([card.get_state() for card in cards])
    assert not any(torch.equal(a, b) for a, b in zip(states[0][1:], states[1][1:]))


def test_each_rank_but_the_first_seeds_its_epoch_from_its_own_rank(tmp_path, monkeypatch) -> None:
    """Rank k > 0 seeds an epoch's draws from (seed, epoch, k): ranks 1 and 2 draw apart, not alike."""
    class Seeded(Exception):
        pass

    def stop(*args) -> None:
        raise Seeded

    trainer, seeded = toy_trainer(tmp_path), []
    monkeypatch.setattr(training, "seed_everything", seeded.append)
    monkeypatch.setattr(training, "seed_replica_cards", stop)
    for rank in (0, 1, 2):
        trainer.rt = training.Runtime(torch.device("cpu"), rank, 3)
        with pytest.raises(Seeded):
            trainer._train_epoch(trainer.model)
    assert seeded == [training.epoch_seed(trainer.s.seed, trainer.epoch, rank) for rank in (1, 2)]


def test_cuda_generator_states_resume_on_other_cards(monkeypatch) -> None:
    """Saved by a process on card 1 of 4: one process on all 4 cards restores them all; a DDP rank on card 3,
    or a run on a machine with one card, restores card 1's state onto its own card."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(("all", len(states))))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append((int(s[0]), str(d))))
    state = training.rng_state()
    state.update(cuda=[torch.full((4,), i, dtype=torch.uint8) for i in range(4)], cuda_card=1)
    for count, device, expected in ((4, "cuda", ("all", 4)), (4, "cuda:3", (1, "cuda:3")), (1, "cuda", (1, "cuda")),
                                    (1, "cpu", None)):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        calls.clear()
        training.set_rng_state(state, torch.device(device))
        assert calls == ([expected] if expected else []), (count, device, calls)


def test_ranks_wait_for_each_other_on_their_own_card(tmp_path, monkeypatch) -> None:
    """Each epoch ends with the ranks waiting for each other: under NCCL on the rank's card, named (unnamed, torch
    guessed it and warned on rank 0, 'barrier(): using the device under current context', in every GPU run's
    output); gloo takes no card."""
    calls = []
    monkeypatch.setattr(training.dist, "barrier", lambda **kw: calls.append(kw))
    training.barrier(training.Runtime(torch.device("cuda", 1), 1, 2))
    training.barrier(training.Runtime(torch.device("cpu"), 1, 2))
    assert calls == [{"device_ids": [1]}, {}]

    class OneRankDDP(nn.Module):        # DDP without a process group: this rank alone
        def __init__(self, module: nn.Module, device_ids: list[int] | None) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args):
            return self.module(*args)
    waited = []
    monkeypatch.setattr(training, "check_same_data", lambda *a: None)
    monkeypatch.setattr(training, "DDP", OneRankDDP)
    monkeypatch.setattr(training.dist, "all_reduce", lambda t, op=None: None)
    monkeypatch.setattr(training, "barrier", waited.append)
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    rt = training.Runtime(torch.device("cpu"), 0, 2)
    (tmp_path / "run").mkdir()
    training.Trainer(nn.Linear(4, 1), data, data, squared_error, TrainConfig(epochs=2, batch_size=8, warmup_steps=0),
                     tmp_path / "run", tmp_path / "ckpt", {}, {}, rt, "toy").fit()
    assert waited == [rt, rt]


def test_best_checkpoint_follows_the_validation_loss_across_a_resume(tmp_path: Path, synthetic_db: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted losses: training falls every epoch, validation is best at epoch 1. best.pt stays epoch 1
    through epochs 2 and 3, also when epoch 3 is trained after a resume (best_val comes back with it)."""
    train_loss, val_loss = [5.0, 0.5, 0.1], [1.0, 3.0, 2.0]
    real_train, real_val = training.Trainer._train_epoch, training.Trainer.validate
    monkeypatch.setattr(training.Trainer, "_train_epoch",
                        lambda self, model: {**real_train(self, model), "loss": train_loss[self.epoch]})
    monkeypatch.setattr(training.Trainer, "validate",
                        lambda self, model: {**real_val(self, model), "loss": val_loss[self.epoch]})
    setup = tiny_setup(tmp_path, synthetic_db)
    vqvae_train.main(flags(setup, "--device", "cpu", "--epochs", "2"))
    (ckpts,) = (tmp_path / "checkpoints").iterdir()
    best = torch.load(ckpts / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["best_val"] == 1.0
    vqvae_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--epochs", "3",
                      "--resume", str(ckpts / "last.pt")])
    best = torch.load(ckpts / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["best_val"] == 1.0
    assert torch.load(ckpts / "last.pt", weights_only=True)["epoch"] == 3


def test_the_patience_flag_overrides_the_config_is_recorded_and_kept_by_old_checkpoints(tmp_path, synthetic_db):
    """--patience sets train.patience as --epochs sets train.epochs: run.json and the checkpoints hold it, and a
    resume given it records it in run.json's resumes. A checkpoint saved before the key existed (no train.patience
    in its config, no best_epoch) resumes as it did, without patience. 0 is none, the config's null."""
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 1, "max_steps_per_epoch": 2, "patience": 5})
    _run(setup, "--patience", "2")
    (run,), (ckpts,) = (tmp_path / "results").iterdir(), (tmp_path / "checkpoints").iterdir()
    assert json.loads((run / "run.json").read_text())["config"]["train"]["patience"] == 2
    last = ckpts / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["config"]["train"]["patience"], ckpt["best_epoch"]) == (2, 1)
    del ckpt["best_epoch"], ckpt["config"]["train"]["patience"]
    torch.save(ckpt, last)
    resume = ["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(last)]
    assert vqvae_train.main([*resume, "--epochs", "2"])["epoch"] == 2
    assert vqvae_train.main([*resume, "--epochs", "3", "--patience", "4"])["epoch"] == 3
    record = json.loads((run / "run.json").read_text())
    assert [r["train"]["patience"] for r in record["resumes"]] == [None, 4]
    assert torch.load(last, weights_only=True)["config"]["train"]["patience"] == 4
    parser = training.run_parser(None, "")
    assert training.flag_patience(parser.parse_args(["--patience", "0"]), 5) is None
    assert training.flag_patience(parser.parse_args([]), 5) == 5


# scripted validation losses, epoch 1 first: the best at epoch 2, then none lower for 4 epochs
PLATEAU = [3.0, 2.0, 2.5, 2.1, 2.2, 2.3, 1.0, 0.9, 0.8, 0.7]


def test_patience_stops_a_run_after_epochs_without_a_lower_validation_loss(tmp_path, monkeypatch, capsys):
    """A run of --epochs 100 trained every epoch when validation had long stopped improving: with train.patience 3
    it ends after the third epoch without a lower validation loss, as a finished run does (last.pt, best.pt of the
    best epoch, plots), saying so. Without patience, or when the patience runs out with the last epoch, every epoch
    is trained and no early stop is said."""
    scripted_validation(monkeypatch, PLATEAU)
    row = toy_trainer(tmp_path / "three", epochs=10, patience=3, max_steps_per_epoch=2).fit()
    out = capsys.readouterr().out
    assert row["epoch"] == 5 and out.endswith("stopped early after epoch 5 of 10: val_loss has not improved for 3 "
                                              "epochs (best 2 at epoch 2, in best.pt)\n"), out
    ckpts = tmp_path / "three" / "ckpt"
    last, best = (torch.load(ckpts / name, weights_only=True) for name in ("last.pt", "best.pt"))
    assert (last["epoch"], last["best_epoch"], best["epoch"], best["best_val"]) == (5, 2, 2, 2.0)
    assert [r["epoch"] for r in MetricsLog(tmp_path / "three" / "run" / "metrics.csv").read()] == list("12345")
    assert (tmp_path / "three" / "run" / "loss_curves.png").exists()
    assert toy_trainer(tmp_path / "none", epochs=10, max_steps_per_epoch=2).fit()["epoch"] == 10
    assert toy_trainer(tmp_path / "at_end", epochs=5, patience=3, max_steps_per_epoch=2).fit()["epoch"] == 5
    assert "stopped early" not in capsys.readouterr().out


def test_a_resume_of_a_run_stopped_early_says_so_and_a_larger_patience_goes_on(tmp_path, monkeypatch, capsys):
    """Resumed with its own patience, a run that stopped early trained on for another `patience` epochs, or would
    have, had the resume not said why it stopped: it trains nothing and says how to go on; a larger --patience, or
    none, goes on from where it stopped."""
    scripted_validation(monkeypatch, PLATEAU)
    toy_trainer(tmp_path / "run", epochs=10, patience=3, max_steps_per_epoch=2).fit()
    last = tmp_path / "run" / "ckpt" / "last.pt"
    capsys.readouterr()
    row = toy_trainer(tmp_path / "again", epochs=10, patience=3, max_steps_per_epoch=2).fit(resume=last)
    assert row == {"epoch": 5, "step": 10}
    assert capsys.readouterr().out == (
        f"nothing to train: {last}, epoch 5 of 10, is out of patience (3): val_loss has not improved for 3 epochs "
        f"(best 2 at epoch 2, in best.pt); pass --patience above 3 (or 0 for none) to go on\n")
    assert toy_trainer(tmp_path / "four", epochs=10, patience=4, max_steps_per_epoch=2).fit(resume=last)["epoch"] == 6
    assert "stopped early after epoch 6 of 10: val_loss has not improved for 4 epochs" in capsys.readouterr().out
    assert toy_trainer(tmp_path / "none", epochs=10, max_steps_per_epoch=2).fit(resume=last)["epoch"] == 10


def test_a_resume_from_an_older_checkpoint_that_trains_nothing_keeps_metrics_csv(tmp_path, monkeypatch, capsys):
    """A resume drops metrics.csv's rows after its checkpoint's epoch, which it trains again: one from epoch_003.pt
    that trained nothing (its patience spent, or its epochs done) dropped the rows of epochs 4 and 5, which last.pt,
    still the run's, had trained, for good."""
    scripted_validation(monkeypatch, PLATEAU)
    first = toy_trainer(tmp_path, epochs=10, patience=3, max_steps_per_epoch=2, checkpoint_every=1)
    first.fit()
    ckpts, log = tmp_path / "ckpt", MetricsLog(tmp_path / "run" / "metrics.csv")
    for settings in (dataclasses.replace(first.s, patience=1), dataclasses.replace(first.s, epochs=3)):
        again = training.Trainer(nn.Linear(4, 1), first.train_loader.dataset, first.train_loader.dataset,
                                 squared_error, settings, tmp_path / "run", ckpts, {}, {},
                                 training.Runtime(torch.device("cpu")), "toy")
        assert again.fit(resume=ckpts / "epoch_003.pt") == {"epoch": 3, "step": 6}
        assert "nothing to train" in capsys.readouterr().out
        assert [r["epoch"] for r in log.read()] == list("12345"), settings


def test_a_resume_out_of_patience_does_not_say_its_run_stopped_early(tmp_path, monkeypatch, capsys):
    """A run that trained all its epochs, resumed from its epoch_005.pt with --patience 2, is out of patience there:
    the resume said '... epoch_005.pt stopped early after epoch 5', of a run that never stopped early. It now says
    the epoch, the patience given and how long val_loss has not improved."""
    scripted_validation(monkeypatch, PLATEAU)
    toy_trainer(tmp_path / "run", epochs=10, max_steps_per_epoch=2, checkpoint_every=1).fit()
    fifth = tmp_path / "run" / "ckpt" / "epoch_005.pt"
    capsys.readouterr()
    assert toy_trainer(tmp_path / "two", epochs=10, patience=2, max_steps_per_epoch=2).fit(resume=fifth)["epoch"] == 5
    assert capsys.readouterr().out == (
        f"nothing to train: {fifth}, epoch 5 of 10, is out of patience (2): val_loss has not improved for 3 epochs "
        f"(best 2 at epoch 2, in best.pt); pass --patience above 3 (or 0 for none) to go on\n")


def test_a_validation_loss_equal_to_the_best_is_no_improvement(tmp_path, monkeypatch, capsys):
    """A loss equal to the best one neither replaces best.pt nor counts the patience again: a plateau of equal
    losses (a model that stopped learning) stops the run as one of higher losses does."""
    scripted_validation(monkeypatch, [2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert toy_trainer(tmp_path, epochs=6, patience=2, max_steps_per_epoch=2).fit()["epoch"] == 4
    assert "stopped early after epoch 4 of 6: val_loss has not improved for 2 epochs (best 1 at epoch 2" in \
        capsys.readouterr().out
    assert torch.load(tmp_path / "ckpt" / "best.pt", weights_only=True)["epoch"] == 2


def test_a_resume_on_data_prepared_again_counts_the_patience_from_the_resume(tmp_path, monkeypatch, capsys):
    """On data prepared again best.pt starts over with the resumed run's first epoch, and so does the patience: a run
    stopped early trains on, rather than being out of patience against a best of windows no longer there."""
    scripted_validation(monkeypatch, PLATEAU)
    toy_trainer(tmp_path / "a", meta={"data_hash": "d0/i0"}, epochs=10, patience=3, max_steps_per_epoch=2).fit()
    resumed = toy_trainer(tmp_path / "b", meta={"data_hash": "d0/i1"}, epochs=10, patience=3, max_steps_per_epoch=2)
    capsys.readouterr()
    assert resumed.fit(resume=tmp_path / "a" / "ckpt" / "last.pt")["epoch"] == 10
    assert "nothing to train" not in capsys.readouterr().out and resumed.best_epoch == 10


def test_a_checkpoint_from_before_patience_that_improves_has_its_best_of_one_epoch(tmp_path, monkeypatch, capsys):
    """A checkpoint without best_epoch has a best of its epoch 'or before'; once the resumed run beats it, the best is
    of that epoch, no 'or before' about it."""
    scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 1.5, 1.6, 1.7, 1.8])
    toy_trainer(tmp_path / "run", epochs=3, max_steps_per_epoch=2).fit()
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=True)
    del ckpt["best_epoch"]
    torch.save(ckpt, old := tmp_path / "old.pt")
    capsys.readouterr()
    assert toy_trainer(tmp_path / "on", epochs=7, patience=2, max_steps_per_epoch=2).fit(resume=old)["epoch"] == 6
    assert capsys.readouterr().out.endswith("stopped early after epoch 6 of 7: val_loss has not improved for 2 "
                                            "epochs (best 1.5 at epoch 4, in best.pt)\n")


def test_the_patience_lines_of_a_resume_from_an_older_epoch_name_best_pts_later_epoch(tmp_path, monkeypatch,
                                                                                      capsys):
    """Resumed from epoch_005.pt, a run whose best.pt is epoch 10's (of the trajectory it leaves, until the resumed
    run beats epoch 5's best) said its best was 'at epoch 2, in best.pt': best.pt's epoch is named instead."""
    scripted_validation(monkeypatch, PLATEAU)
    first = toy_trainer(tmp_path, epochs=10, max_steps_per_epoch=2, checkpoint_every=1)
    first.fit()
    ckpts = tmp_path / "ckpt"

    def resumed(patience: int, epochs: int = 10) -> training.Trainer:
        return training.Trainer(nn.Linear(4, 1), first.train_loader.dataset, first.train_loader.dataset,
                                squared_error, dataclasses.replace(first.s, patience=patience, epochs=epochs),
                                tmp_path / "run", ckpts, {}, {}, training.Runtime(torch.device("cpu")), "toy")
    capsys.readouterr()
    assert resumed(2).fit(resume=ckpts / "epoch_005.pt")["epoch"] == 5
    assert "(best 2 at epoch 2; best.pt is epoch 10's, trained before this resume); pass" in capsys.readouterr().out
    assert resumed(4).fit(resume=ckpts / "epoch_005.pt")["epoch"] == 6
    assert capsys.readouterr().out.endswith("stopped early after epoch 6 of 10: val_loss has not improved for 4 "
                                            "epochs (best 2 at epoch 2; best.pt is epoch 10's, trained before "
                                            "this resume)\n")
    scripted_validation(monkeypatch, [*PLATEAU[:5], 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1])   # epoch 6 beats epoch 5's
    assert resumed(4, epochs=12).fit(resume=ckpts / "epoch_005.pt")["epoch"] == 10
    assert capsys.readouterr().out.endswith("(best 1.5 at epoch 6, in best.pt)\n")


def test_a_checkpoint_from_before_patience_counts_it_from_the_resume(tmp_path, monkeypatch, capsys):
    """A checkpoint saved before train.patience existed holds no best_epoch: it resumes as it did, and a patience
    given to it counts from the epoch resumed, its best said to be of that epoch or before."""
    scripted_validation(monkeypatch, PLATEAU)
    toy_trainer(tmp_path / "run", epochs=4, max_steps_per_epoch=2).fit()
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=True)
    del ckpt["best_epoch"]
    torch.save(ckpt, old := tmp_path / "old.pt")
    capsys.readouterr()
    assert toy_trainer(tmp_path / "on", epochs=10, max_steps_per_epoch=2).fit(resume=old)["epoch"] == 10
    assert toy_trainer(tmp_path / "two", epochs=10, patience=2, max_steps_per_epoch=2).fit(resume=old)["epoch"] == 6
    assert capsys.readouterr().out.endswith("stopped early after epoch 6 of 10: val_loss has not improved for 2 "
                                            "epochs (best 2 at epoch 4 or before, in best.pt)\n")


def test_a_best_of_its_epoch_or_before_stays_so_in_the_checkpoints_after(tmp_path, monkeypatch, capsys):
    """An old checkpoint's best is of its epoch or before until a resumed run beats it: the checkpoints that run
    wrote in the meantime said best_epoch alone, so a resume of them said the best was of that epoch."""
    scripted_validation(monkeypatch, PLATEAU)
    toy_trainer(tmp_path / "run", epochs=2, max_steps_per_epoch=2).fit()
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=True)
    del ckpt["best_epoch"]
    torch.save(ckpt, old := tmp_path / "old.pt")
    toy_trainer(tmp_path / "on", epochs=3, max_steps_per_epoch=2).fit(resume=old)    # epoch 3: 2.5, not below 2
    last = tmp_path / "on" / "ckpt" / "last.pt"
    capsys.readouterr()
    assert toy_trainer(tmp_path / "two", epochs=10, patience=1, max_steps_per_epoch=2).fit(resume=last)["epoch"] == 3
    assert "val_loss has not improved for 1 epoch (best 2 at epoch 2 or before, in best.pt)" in capsys.readouterr().out


def test_warmup_then_cosine_to_a_tenth():
    """The first step already learns (a step at learning rate 0 is wasted), the peak is reached when the warm-up
    ends, and the cosine falls monotonically to 10% of it at step `total` (one past a run's last step) and stays."""
    f = training.warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    after = [f(s) for s in range(10, 111)]
    assert after[0] == pytest.approx(1.0) and after[-1] == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(after, after[1:]))


def squared_error(model, batch):
    inputs, target = batch
    return ((model(inputs) - target) ** 2).mean(), {}


def toy_trainer(tmp_path, model: nn.Module | None = None, data: Dataset | None = None, step=squared_error,
                meta: dict | None = None, **train) -> training.Trainer:
    """A small model fitted by the generic trainer on the CPU; by default a linear one on targets 100 x too large,
    so gradients are large. `meta`: run.json's record (its data hash)."""
    torch.manual_seed(0)
    if data is None:
        x = torch.randn(64, 4)
        data = TensorDataset(x, 100 * x.sum(1, keepdim=True))
    (tmp_path / "run").mkdir(parents=True)
    settings = TrainConfig(**{"epochs": 1, "batch_size": 8, "warmup_steps": 0, "learning_rate": 0.01, **train})
    return training.Trainer(model or nn.Linear(4, 1), data, data, step, settings, tmp_path / "run",
                            tmp_path / "ckpt", {}, meta or {}, training.Runtime(torch.device("cpu")), "toy")


def test_a_warm_up_longer_than_a_quarter_of_the_run_is_shortened_to_it(tmp_path, capsys):
    """make demo trained the Transformer 120 steps with warmup_steps 200: its learning rate never reached the peak
    nor decayed. A warm-up is kept to a quarter of the run, said in a note, and the run ends at a tenth of the peak."""
    trainer = toy_trainer(tmp_path, epochs=2, warmup_steps=100)       # 2 epochs x 8 steps
    lrs = []
    trainer.opt.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    trainer.fit()
    said = capsys.readouterr().err
    assert "train.warmup_steps 100 is over a quarter of this run's 16 steps: warming up over 4" in said
    assert lrs[:5] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01]) and len(lrs) == 16
    assert trainer.opt.param_groups[0]["lr"] == pytest.approx(0.001)
    toy_trainer(tmp_path / "short", epochs=2, warmup_steps=4).fit()            # a quarter exactly: as configured
    assert "warming up over" not in capsys.readouterr().err
    toy_trainer(tmp_path / "one", epochs=1, warmup_steps=100, max_steps_per_epoch=4).fit()     # one step: no 's'
    assert "this run's 4 steps: warming up over 1 step, so" in capsys.readouterr().err
    toy_trainer(tmp_path / "three", epochs=1, max_steps_per_epoch=3, warmup_steps=100).fit()
    assert "this run's 3 steps: with no warm-up, so" in capsys.readouterr().err      # not 'warming up over 0'


def test_a_resume_at_other_steps_per_epoch_notes_the_warm_up_it_trains_with(tmp_path, capsys):
    """The warm-up note was said when the Trainer was built, of epochs x the resume's steps per epoch: 4 epochs of 8
    resumed to 6 of 2 with warmup_steps 5 said 'this run's 12 steps: warming up over 3', while the schedule it trained
    with is laid out over the 36 steps taken and left, the warm-up kept at 5. 2 of 2 resumed to 4 of 8 with 6: 20."""
    for first, then, warmup, said in (((4, 8), (6, 2), 5, None),
                                      ((2, 2), (4, 8), 6, "20 steps: warming up over 5 steps")):
        toy_trainer(tmp_path / f"{first}", epochs=first[0], max_steps_per_epoch=first[1], warmup_steps=warmup).fit()
        capsys.readouterr()
        resumed = toy_trainer(tmp_path / f"{first}{then}", epochs=then[0], max_steps_per_epoch=then[1],
                              warmup_steps=warmup)
        resumed.fit(resume=tmp_path / f"{first}" / "ckpt" / "last.pt")
        notes = [line for line in capsys.readouterr().err.splitlines() if "warming up over" in line]
        assert notes == ([] if said is None else [f"note: train.warmup_steps {warmup} is over a quarter of this "
                                                  f"run's {said}, so the learning rate reaches its peak and decays"])


def test_a_resume_past_its_warm_up_says_none_and_one_step_an_epoch_is_no_steps(tmp_path, capsys):
    """A run resumed at step 8 of a warm-up cut to 3 said 'warming up over 3 steps', a warm-up it had done; a
    warm-up still ahead of the resume is said. One step an epoch read '1 steps/epoch'."""
    toy_trainer(tmp_path / "a", epochs=2, max_steps_per_epoch=4, warmup_steps=100).fit()
    toy_trainer(tmp_path / "b", epochs=1, max_steps_per_epoch=1, warmup_steps=100).fit()
    assert "x1: epochs 1..1, 1 step/epoch, run folder" in capsys.readouterr().out
    toy_trainer(tmp_path / "c", epochs=1, max_steps_per_epoch=2, warmup_steps=100).fit()
    capsys.readouterr()
    steps = {"a": 4, "b": 1, "c": 2}
    for run, epochs, said in (("a", 3, False), ("b", 8, True), ("c", 4, False)):
        # at step 8 of 12, warm-up 3; step 1 of 8, warm-up 2; step 2 of 8, warm-up 2: done as it resumes
        toy_trainer(tmp_path / f"{run}2", epochs=epochs, max_steps_per_epoch=steps[run],
                    warmup_steps=100).fit(resume=tmp_path / run / "ckpt" / "last.pt")
        assert ("warming up over" in capsys.readouterr().err) == said, run


def test_an_epoch_in_last_pt_is_printed_before_a_stop_in_its_plots(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the epoch's curves were drawn, after last.pt: its line never came, and the resume went on from
    the epoch after, so the epoch's numbers were shown nowhere but metrics.csv."""
    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "plot_loss_curves", stop)
    with pytest.raises(KeyboardInterrupt):
        toy_trainer(tmp_path, max_steps_per_epoch=1).fit()
    assert (tmp_path / "ckpt" / "last.pt").exists() and "epoch 1/1 " in capsys.readouterr().out


def test_a_resume_of_a_run_that_has_done_its_epochs_says_how_to_go_on(tmp_path, capsys):
    """--resume of a 3-epoch run with --epochs 2 said 'has done 3 of 2 epochs; pass a larger --epochs'."""
    toy_trainer(tmp_path, epochs=3, max_steps_per_epoch=1).fit()
    last = tmp_path / "ckpt" / "last.pt"
    for epochs, said in ((3, "has done 3 of 3 epochs"), (2, "has done 3 epochs, more than the 2 asked for")):
        capsys.readouterr()
        toy_trainer(tmp_path / f"again{epochs}", epochs=epochs, max_steps_per_epoch=1).fit(resume=last)
        assert capsys.readouterr().out == f"nothing to train: {last} {said}; pass --epochs above 3 to go on\n"


def test_a_resume_from_an_older_epoch_says_that_best_pt_is_a_later_epochs(tmp_path, capsys):
    """best.pt of epoch 3 stays beside a resume from epoch_001.pt; the resumed run replaces it once it beats
    epoch 1's validation loss, so best.pt may end up worse than the trajectory left behind: said."""
    trainer = toy_trainer(tmp_path, epochs=3, checkpoint_every=1)
    trainer.fit()
    ckpts = tmp_path / "ckpt"
    assert torch.load(ckpts / "best.pt", weights_only=True)["epoch"] == 3
    again = training.Trainer(nn.Linear(4, 1), trainer.train_loader.dataset, trainer.train_loader.dataset,
                             squared_error, trainer.s, tmp_path / "run", ckpts, {}, {},
                             training.Runtime(torch.device("cpu")), "toy")
    capsys.readouterr()
    again.resume(ckpts / "epoch_001.pt")
    assert f"{ckpts / 'best.pt'} is epoch 3's, after this checkpoint's epoch 1" in capsys.readouterr().err
    again.resume(ckpts / "last.pt")
    assert "is epoch 3's" not in capsys.readouterr().err
    shutil.copyfile(ckpts / "epoch_002.pt", ckpts / "last.pt")     # killed between epoch 3's best.pt and last.pt
    again.resume(ckpts / "last.pt")
    assert f"{ckpts / 'best.pt'} is epoch 3's, after this checkpoint's epoch 2" in capsys.readouterr().err


def test_a_resume_on_data_prepared_again_starts_best_pt_over(tmp_path, monkeypatch, capsys):
    """best_val is a loss on the validation windows the checkpoint was trained with: a resume on data prepared again
    (another data hash) compared its windows' losses with it, so best.pt could stay a model chosen on other windows
    for good. The resumed run's first epoch starts best.pt over, as the note says; on the same data best.pt stays."""
    real_val = training.Trainer.validate
    monkeypatch.setattr(training.Trainer, "validate",
                        lambda self, model: {**real_val(self, model), "loss": [1.0, 3.0][self.epoch]})
    for folder, hash_now, best_epoch in (("same", "d0/i0", 1), ("again", "d0/i1", 2), ("unnamed", None, 1)):
        toy_trainer(tmp_path / folder / "a", meta={"data_hash": "d0/i0"}).fit()
        ckpts = tmp_path / folder / "a" / "ckpt"
        resumed = toy_trainer(tmp_path / folder / "b", meta=hash_now and {"data_hash": hash_now}, epochs=2)
        resumed.ckpt_dir = ckpts
        capsys.readouterr()
        resumed.fit(resume=ckpts / "last.pt")
        best = torch.load(ckpts / "best.pt", weights_only=True)
        assert (best["epoch"], best["best_val"]) == (best_epoch, [1.0, 3.0][best_epoch - 1]), folder
        said = capsys.readouterr().err
        assert ("best.pt starts over: its validation loss 1 was on the windows prepared before" in said) == \
            (folder == "again"), said
        assert "None" not in said, said        # a Trainer of one's own names no data: no claim about it


@pytest.mark.parametrize("env, hours", [(None, 6), ("600", 6), ("36000", 10)])
def test_the_ranks_wait_for_rank_0s_encoding_6_hours_or_the_longer_dist_timeout(monkeypatch, env, hours):
    """The other ranks waited 6 h for rank 0 to encode whatever $ECG_DIST_TIMEOUT said: a database that takes
    longer to encode could not be trained on more than one process."""
    waits = []
    monkeypatch.setattr(training.dist, "new_group", lambda backend, timeout: waits.append(timeout))
    monkeypatch.setattr(training.dist, "barrier", lambda group: None)
    monkeypatch.setattr(training.dist, "destroy_process_group", lambda group: None)
    if env is None:
        monkeypatch.delenv(training.DIST_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(training.DIST_TIMEOUT_ENV, env)
    assert training.main_first(training.Runtime(torch.device("cpu"), 0, 2), lambda: "codes") == "codes"
    assert [w.total_seconds() for w in waits] == [hours * 3600]


@pytest.mark.parametrize("rank, local, computes_after", [(0, 0, 0), (2, 0, 1), (1, 1, 2), (3, 1, 2)],
                         ids=["rank_0", "first_of_node_1", "second_of_node_0", "second_of_node_1"])
def test_each_node_encodes_once_before_its_other_ranks(monkeypatch, rank, local, computes_after):
    """main_first ran rank 0's encoding first, then every other rank's at once: on a node whose cache is not rank 0's
    (ECG_CACHE_DIR on its own disk) each of its ranks encoded the windows, each printing so. Now rank 0 computes first
    (before the first of the group's barriers), each other node's local rank 0 next (between them), the rest last,
    reading their node's copy."""
    said = []
    monkeypatch.setattr(training.dist, "new_group", lambda backend, timeout: "group")
    monkeypatch.setattr(training.dist, "barrier", lambda group: said.append("barrier"))
    monkeypatch.setattr(training.dist, "destroy_process_group", lambda group: None)
    monkeypatch.setenv("LOCAL_RANK", str(local))
    rt = training.Runtime(torch.device("cpu"), rank, 4)
    assert training.main_first(rt, lambda: said.append("compute") or "codes") == "codes"
    assert said.index("compute") == computes_after and said.count("barrier") == 2 and said.count("compute") == 1


def test_a_single_process_computes_first_without_a_group(monkeypatch):
    """One process has no group to wait on: it computes once, making none (new_group without one joined fails)."""
    said = []
    monkeypatch.setattr(training.dist, "new_group", lambda **kw: said.append("group"))
    assert training.main_first(training.Runtime(torch.device("cpu")), lambda: said.append("compute") or 1) == 1
    assert said == ["compute"]


def test_an_epoch_capped_at_max_steps_loads_no_batch_past_the_cap(tmp_path):
    """The loop broke out on the batch after the last step: each capped epoch loaded (and with workers, augmented
    or read from disk) one batch it never trained on."""
    x = torch.randn(64, 4)

    class Counted(TensorDataset):
        fetched = 0

        def __getitem__(self, i):
            Counted.fetched += 1
            return super().__getitem__(i)

    trainer = toy_trainer(tmp_path, data=Counted(x, x.sum(1, keepdim=True)), max_steps_per_epoch=2)
    trainer._train_epoch(trainer.model)
    assert Counted.fetched == 2 * 8


def test_a_resume_removes_what_a_kill_half_wrote_beside_the_plots_too(tmp_path):
    """A kill (SIGKILL, a node lost) while metrics.csv or an epoch's plot was replaced left its hidden temporary file
    in the results folder, where a resume, which removed the checkpoint folder's, left it for good."""
    trainer = toy_trainer(tmp_path)
    trainer.fit()
    stale = [tmp_path / "run" / ".metrics.csv.k1ll3d.tmp", tmp_path / "run" / ".loss_curves.png.k1ll3d.tmp",
             tmp_path / "ckpt" / ".last.pt.k1ll3d.tmp"]
    for f in stale:
        f.write_bytes(b"half")
    training.Trainer(nn.Linear(4, 1), trainer.train_loader.dataset, trainer.train_loader.dataset, squared_error,
                     trainer.s, tmp_path / "run", tmp_path / "ckpt", {}, {}, training.Runtime(torch.device("cpu")),
                     "toy").resume(tmp_path / "ckpt" / "last.pt")
    assert [f.name for f in stale if f.exists()] == []
    assert (tmp_path / "run" / "metrics.csv").exists() and (tmp_path / "run" / "loss_curves.png").exists()
    (tmp_path / "run" / ".last.pt.k1ll3d.tmp").write_bytes(b"half")      # --results and --checkpoints one folder
    training.Trainer(nn.Linear(4, 1), trainer.train_loader.dataset, trainer.train_loader.dataset, squared_error,
                     trainer.s, tmp_path / "run", tmp_path / "run", {}, {}, training.Runtime(torch.device("cpu")),
                     "toy").resume(tmp_path / "ckpt" / "last.pt")
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_fewer_validation_windows_than_processes_is_refused(tmp_path, monkeypatch):
    """Under torchrun a rank whose validation shard is empty would all-reduce a metrics vector of another length
    than the other ranks' (gloo fails, NCCL hangs): refused on every rank before training (after the ranks compared
    their data, a collective this test has no process group for). A meta without a data hash (a trainer of one's own
    that records none) compares the window counts alone: it was a KeyError."""
    compared = []
    monkeypatch.setattr(training, "check_same_data", lambda *a: compared.append(a))
    x = torch.randn(64, 4)
    train, val = TensorDataset(x, x.sum(1, keepdim=True)), TensorDataset(x[:1], x[:1].sum(1, keepdim=True))
    settings = TrainConfig(epochs=1, batch_size=8, warmup_steps=0)
    for rank in (0, 1):
        with pytest.raises(UserError, match="1 validation windows are fewer than the 2 processes"):
            training.Trainer(nn.Linear(4, 1), train, val, squared_error, settings, tmp_path / "run", tmp_path / "ckpt",
                             {}, {}, training.Runtime(torch.device("cpu"), rank, 2), "toy")
    assert compared == [(None, 64, 1)] * 2


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), RuntimeError("Connection closed by peer")],
                         ids=["ctrl_c", "peer_failed"])
def test_a_run_stopped_while_the_ranks_compare_their_data_leaves_no_folders(tmp_path, monkeypatch, stop):
    """Rank 0 waits in check_same_data for a slower rank: stopped there (Ctrl-C, SIGTERM, or that rank failing
    alone), the fresh run's empty folders stayed, where the same stop a moment later, in training, removed them."""
    def waiting(*a) -> None:
        raise stop
    monkeypatch.setattr(training, "check_same_data", waiting)
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(1, keepdim=True))

    @training.training_main
    def main(argv: list[str] | None) -> dict:
        args = SimpleNamespace(results=str(tmp_path / "results"), checkpoints=str(tmp_path / "checkpoints"))
        run, ckpt = training.shared_run_dirs(args, SimpleNamespace(is_main=True, distributed=False), None, "toy")
        training.Trainer(nn.Linear(4, 1), data, data, squared_error, TrainConfig(epochs=1, batch_size=8), run, ckpt,
                         {}, {"data_hash": "h"}, training.Runtime(torch.device("cpu"), 0, 2), "toy")
        return {}

    with pytest.raises(type(stop)):
        main(None)
    assert not any((tmp_path / "results").iterdir()) and not any((tmp_path / "checkpoints").iterdir())


def test_every_step_takes_gradients_clipped_to_grad_clip(tmp_path):
    trainer = toy_trainer(tmp_path, grad_clip=0.5)
    norms = []
    trainer.opt.register_step_pre_hook(lambda opt, *_: norms.append(float(torch.cat(
        [p.grad.flatten() for g in opt.param_groups for p in g["params"]]).norm())))
    trainer.fit()
    assert len(norms) == trainer.steps_per_epoch and max(norms) <= 0.5 + 1e-5


def test_each_epochs_line_reaches_a_log_file_as_the_epoch_ends(tmp_path, monkeypatch):
    """stdout into a file or a pipe (nohup, a SLURM job's --output, | tee) is block-buffered: a run's epoch lines
    reached its log only at its end, or with 8 KB of them, after its notes on stderr, and a killed job lost them.
    Each reaches the file as its epoch ends."""
    log = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(log, encoding="utf-8"))    # buffered, as for a file
    trainer = toy_trainer(tmp_path, epochs=2)
    seen: list[str] = []
    trainer.epoch_end = lambda model, epoch, is_main: seen.append(log.getvalue().decode()) or {}
    trainer.fit()
    assert seen[0].startswith("training toy on cpu x1: epochs 1..2")
    assert "epoch 1/2 train_loss=" in seen[1]


def test_amp_asked_for_on_a_cpu_trains_in_float32(tmp_path):
    """train.amp is for GPUs: on a CPU the run is the float32 run, bit for bit."""
    plain, amp = toy_trainer(tmp_path / "a"), toy_trainer(tmp_path / "b", amp=True)
    plain.fit()
    amp.fit()
    assert not amp.scaler.is_enabled()
    for a, b in zip(plain.model.parameters(), amp.model.parameters()):
        assert torch.equal(a, b)


def test_under_amp_gradients_the_scaler_cannot_mend_stop_the_run(tmp_path):
    """train.amp's loss scaler skips a step whose scaled gradients overflow and halves its scale: a NaN gradient of
    the model's own was so skipped at every step, and the run went on, its weights unchanged, saving checkpoints.
    Once the scale is down to 1 the run stops, as without AMP; an overflow at a larger scale is only skipped.
    (GPU-only in the trainer: the CPU's GradScaler and autocast stand in for CUDA's.)"""
    def nan_gradient_at(steps: set[int]):
        def step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
            loss, metrics = squared_error(model, batch)
            if trainer.step in steps:       # a finite loss whose gradient is NaN: sqrt at 0
                loss = loss + torch.sqrt(model.weight.abs() * 0).sum()
            return loss, metrics
        return step

    for steps, stops in ((set(range(16)), True), ({0}, False)):
        trainer = toy_trainer(tmp_path / str(stops), step=nan_gradient_at(steps), epochs=2)
        trainer.amp, trainer.scaler = True, torch.amp.GradScaler("cpu", init_scale=4.0)
        if stops:                           # steps 0 and 1 skipped at scales 4 and 2, step 2 at scale 1 stops
            with pytest.raises(UserError, match=r"loss or gradient norm is \[[-+.e0-9]+, nan\] in epoch 1 after 2 steps"):
                trainer.fit()
            assert not (tmp_path / "True" / "ckpt").exists()
        else:
            weights = trainer.model.weight.detach().clone()
            with warnings.catch_warnings(record=True) as said:    # torch's 'lr_scheduler.step() before
                warnings.simplefilter("always")                   # optimizer.step()' misread the skipped step
                assert trainer.fit()["step"] == 16 and not torch.equal(weights, trainer.model.weight)
            assert not [w for w in said if "lr_scheduler.step" in str(w.message)]


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    first = paths.new_run_dir("vqvae", tmp_path, tmp_path)
    (first / "results.json").write_text("{}")
    second = paths.new_run_dir("vqvae", tmp_path, tmp_path)
    assert second != first and not any(second.iterdir())
    assert (first / "results.json").exists()


def test_runs_of_their_own_results_started_in_the_same_second_keep_their_own_checkpoints(tmp_path, monkeypatch):
    """Two trainings with --results of their own and one checkpoints root, started in the same second, were given
    one checkpoint folder (checkpoints/<run name>, free in either results root): each wrote over the other's
    best.pt and last.pt, and both printed that folder as theirs."""
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    rank0 = SimpleNamespace(is_main=True, distributed=False)
    dirs = [training.shared_run_dirs(SimpleNamespace(results=str(tmp_path / r), checkpoints=str(tmp_path / "ck")),
                                     rank0, None, "vqvae") for r in ("a", "b")]
    (run_a, ckpt_a), (run_b, ckpt_b) = dirs
    assert ckpt_a != ckpt_b and (ckpt_a.name, ckpt_b.name) == (run_a.name, run_b.name)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [run_a.name, run_b.name]
    assert [p.name for p in (tmp_path / "b").iterdir()] == [run_b.name]     # the name tried first is not left empty


def test_one_root_for_results_and_checkpoints_is_one_run_folder(tmp_path):
    """--results and --checkpoints naming one folder gave a run one folder for both; taking the run's name in the
    checkpoints root too found it taken there (the results folder just made) at every try, and every training was
    refused with 'too many runs named vqvae-<time>'."""
    rank0 = SimpleNamespace(is_main=True, distributed=False)
    root = tmp_path / "out"
    run, ckpt = training.shared_run_dirs(SimpleNamespace(results=str(root), checkpoints=f"{root}/."), rank0, None,
                                         "vqvae")
    assert ckpt == run and [p.name for p in root.iterdir()] == [run.name]


def test_a_row_replaces_the_rows_of_its_epoch_and_after(tmp_path):
    """A run resumed from epoch 2's checkpoint logs epoch 3 again: rows 1 and 2 stay, the old rows 3 and 4 go."""
    log = MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2, 3, 4):
        log.append({"epoch": epoch, "val_loss": 1.0 / epoch, "seconds": 1.0})
    log.append({"epoch": 3, "val_loss": 0.25, "seconds": 2.0})
    assert [(r["epoch"], r["val_loss"]) for r in log.read()] == [("1", "1"), ("2", "0.5"), ("3", "0.25")]


def test_a_resume_that_fails_before_its_first_epoch_keeps_metrics_csv(tmp_path, monkeypatch):
    """The resume dropped the rows after its checkpoint's epoch as it started: one from epoch_002.pt stopped (Ctrl-C,
    an error) before an epoch lost rows 3 and 4 for good, while last.pt, still the run's, held epoch 4."""
    toy_trainer(tmp_path, epochs=4, max_steps_per_epoch=2, checkpoint_every=1).fit()
    log = MetricsLog(tmp_path / "run" / "metrics.csv")
    before = log.path.read_bytes()

    def interrupted(self, model):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "_train_epoch", interrupted)
    again = training.Trainer(nn.Linear(4, 1), *[toy_trainer(tmp_path / "data").train_loader.dataset] * 2,
                             squared_error, TrainConfig(epochs=4, batch_size=8, warmup_steps=0, learning_rate=0.01,
                                                        max_steps_per_epoch=2), tmp_path / "run", tmp_path / "ckpt",
                             {}, {}, training.Runtime(torch.device("cpu")), "toy")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        again.fit(resume=tmp_path / "ckpt" / "epoch_002.pt")
    assert log.path.read_bytes() == before and [r["epoch"] for r in log.read()] == list("1234")


def test_a_resume_drops_a_half_written_last_row_of_metrics_csv(tmp_path, capsys):
    """Killed while appending epoch 10's row in place (older code), metrics.csv ended in '1': the resume from
    epoch 9 appended '10,...' to it, an epoch 110. The half row is dropped, with a note, and each epoch has one row."""
    toy_trainer(tmp_path / "a", epochs=10, checkpoint_every=1).fit()
    log = tmp_path / "a" / "run" / "metrics.csv"
    with log.open(newline="") as f:
        lines = f.read().splitlines(keepends=True)
    log.write_bytes("".join(lines[:-1] + [lines[-1][:1]]).encode())
    resumed = toy_trainer(tmp_path / "b", epochs=10)
    resumed.log, resumed.ckpt_dir = MetricsLog(log), tmp_path / "a" / "ckpt"
    resumed.fit(resume=tmp_path / "a" / "ckpt" / "epoch_009.pt")
    assert f"{log} ended in half a row ('1')" in capsys.readouterr().err
    with log.open(newline="") as f:
        text = f.read()
    assert [int(r["epoch"]) for r in csv.DictReader(text.splitlines())] == list(range(1, 11))
    assert text.count("\r\n") == 11                      # header and rows end alike


def test_a_kill_while_appending_to_metrics_csv_leaves_its_rows_whole(tmp_path, monkeypatch):
    """Each row is appended by replacing the file atomically: a write that fails (a kill, a full disk) leaves the
    rows before it as they were, never half a row."""
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "val_loss": 1.0})
    before = log.path.read_bytes()

    def killed(text: str, path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(paths, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        log.append({"epoch": 2, "val_loss": 0.5})
    assert log.path.read_bytes() == before


def test_run_json_names_its_data_as_paths_run_data_hash_does(monkeypatch):
    """run.json's data hash is formatted by paths.run_data_hash alone (vqvae_eval's reconstruction.json too, above):
    'config hash/input hash', so the two cannot drift apart."""
    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    assert paths.run_data_hash(split) == "d0/i0"
    monkeypatch.setattr(paths, "run_data_hash", lambda s: f"<{s['data_hash']}>")
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), ["x"])
    assert record["data_hash"] == "<d0>"


def test_run_json_records_torchs_cpu_threads(monkeypatch):
    """A seed's weights on the CPU are the same only at the same thread count (a VQ-VAE trained 3 steps on one thread
    and on two differed in most tensors): run.json said the torch version but not the count to run again with."""
    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), ["x"])
    assert record["torch_threads"] == 7


def test_run_json_keeps_a_command_a_shell_can_run_again(monkeypatch):
    """A path with a space was joined bare ('--results my runs'), a command that names another folder when run
    again; quoted, it splits back into the arguments given, after the python3 and script that ran them."""
    import shlex

    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    argv = ["vqvae_train.py", "--results", "my runs", "--epochs", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), None)
    assert record["command"] == "python3 vqvae_train.py --results 'my runs' --epochs 2"
    assert shlex.split(record["command"]) == ["python3", *argv]


def test_run_json_names_the_folders_its_environment_chose(monkeypatch, tmp_path):
    """A run whose prepared tensors and checkpoints $ECG_PREPARED_DIR and $ECG_CHECKPOINTS_DIR chose: its command,
    run again without them, read data/prepared and wrote checkpoints/, so it names them, as evaluate's report does.
    The folder of the tensors is recorded too, where a resume reads them again (resumed_prepared). A --prepared
    given wins over the variable: only the other is named."""
    import shlex

    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py", "--epochs", "2"])
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "my data"))
    monkeypatch.setenv("ECG_CHECKPOINTS_DIR", "ckpts")
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), None)
    assert shlex.split(record["command"]) == [f"ECG_PREPARED_DIR={tmp_path / 'my data'}", "ECG_CHECKPOINTS_DIR=ckpts",
                                              "python3", "vqvae_train.py", "--epochs", "2"]
    assert record["prepared"] == str(tmp_path / "my data")
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py", "--prepared", "mine"])
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), None, "mine")
    assert shlex.split(record["command"]) == ["ECG_CHECKPOINTS_DIR=ckpts", "python3", "vqvae_train.py", "--prepared",
                                              "mine"]


def test_a_torchrun_workers_run_json_says_torchrun_when_its_launcher_is_unread(monkeypatch):
    """A torchrun worker's own command line trains one process: where its launcher's cannot be read (no /proc, or
    the launcher gone), run.json says a torchrun command starting as many processes per node."""
    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py", "--results", "my runs"])
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(running, "launcher_argv", lambda: None)
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), None)
    assert record["command"] == "torchrun --nproc-per-node=2 vqvae_train.py --results 'my runs'"


@pytest.mark.parametrize("launcher, said", [
    (["/venv/bin/python3", "/venv/bin/torchrun", "--nproc-per-node=2", "vqvae_train.py", "--results", "my runs"],
     "/venv/bin/torchrun --nproc-per-node=2 vqvae_train.py --resume 'my runs/last.pt'"),
    (["/usr/bin/python3", "-m", "torch.distributed.run", "--nproc-per-node=2", "vqvae_train.py", "--results",
      "my runs"],
     "/usr/bin/python3 -m torch.distributed.run --nproc-per-node=2 vqvae_train.py --resume 'my runs/last.pt'"),
    (None, "torchrun --nproc-per-node=2 vqvae_train.py --resume 'my runs/last.pt'")],
    ids=["launcher", "module", "unread"])
def test_a_torchrun_workers_resume_hint_says_its_torchrun_command(monkeypatch, launcher, said):
    """A torchrun worker said `python3 vqvae_train.py --resume ...`, which resumes on one process: it says the
    torchrun command up to the script, as run.json's command does (its launcher's as typed, not the shebang's
    '/venv/bin/python3 /venv/bin/torchrun', else a torchrun one)."""
    monkeypatch.setattr(training.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py", "--results", "my runs"])
    monkeypatch.setattr(running, "script_running", lambda: "vqvae_train.py")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(running, "launcher_argv", lambda: launcher)
    assert training.resume_hint("my runs/last.pt", "vqvae") == f"resume with: {said}"


NODE_0 = ["/venv/bin/python3", "/venv/bin/torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", "0",
          "--master_addr", "10.0.0.1", "vqvae_train.py", "--results", "r"]
NODE_0_JOINED = ["torchrun", "--nnodes=2", "--node-rank=0", "--master-addr=10.0.0.1", "vqvae_train.py", "--results",
                 "r"]
RENDEZVOUS = ["/venv/bin/python3", "/venv/bin/torchrun", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
              "--rdzv-endpoint=10.0.0.1:29500", "vqvae_train.py", "--results", "r"]


@pytest.mark.parametrize("launcher, note, said", [
    (NODE_0, "on each of the 2 nodes, with its own --node_rank, 0 to 1",
     "/venv/bin/torchrun --nnodes 2 --nproc_per_node 1 --node_rank 0 --master_addr 10.0.0.1 vqvae_train.py "
     "--resume r/last.pt"),
    (NODE_0_JOINED, "on each of the 2 nodes, with its own --node-rank, 0 to 1",
     "torchrun --nnodes=2 --node-rank=0 --master-addr=10.0.0.1 vqvae_train.py --resume r/last.pt"),
    (RENDEZVOUS, "on each of the 2 nodes",
     "/venv/bin/torchrun --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29500 "
     "vqvae_train.py --resume r/last.pt"),
    (None, "on each of the 2 nodes, with the rendezvous flags the run was started with",
     "torchrun --nnodes=2 --nproc-per-node=1 vqvae_train.py --resume r/last.pt")],
    ids=["node_rank", "node-rank=", "rendezvous", "unread"])
def test_a_multi_node_runs_resume_hint_and_run_json_say_to_run_it_on_every_node(monkeypatch, launcher, note, said):
    """A job over 2 nodes (torchrun's GROUP_WORLD_SIZE) said rank 0's launcher's line alone ('--node_rank 0'), or
    'torchrun --nproc-per-node=1 ...' when it was unread: typed as said, it restarted one node of the two, which
    waited for the other. The line is said after a note to run it on each node, with its own --node_rank where the
    line names one (either spelling, '--node-rank=0' too), not in a shell comment, which zsh passes on as arguments;
    the unread launcher's says --nnodes, and one process a node where LOCAL_WORLD_SIZE is not set. run.json's command
    is the line alone."""
    monkeypatch.setattr(training.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py", "--results", "r"])
    monkeypatch.setattr(running, "script_running", lambda: "vqvae_train.py")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    monkeypatch.setattr(running, "launcher_argv", lambda: launcher)
    assert training.resume_hint("r/last.pt", "vqvae") == f"resume with ({note}): {said}"
    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    record = training.run_record({}, 0, split, split, training.Runtime(torch.device("cpu")), None)
    assert record["command"] == said.replace("--resume r/last.pt", "--results r")


def test_a_single_node_torchrun_command_has_no_note(monkeypatch):
    """One node (GROUP_WORLD_SIZE 1, as torchrun --standalone sets it) says its command with no note."""
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py"])
    monkeypatch.setattr(running, "script_running", lambda: "vqvae_train.py")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    monkeypatch.setattr(running, "launcher_argv", lambda: None)
    assert training._run_command(None) == "torchrun --nproc-per-node=2 vqvae_train.py"
    assert training.resume_hint("r/last.pt", "vqvae") == "resume with: torchrun --nproc-per-node=2 vqvae_train.py " \
                                                          "--resume r/last.pt"


@pytest.mark.parametrize("nodes", ["", "two", "2.0"])
def test_a_group_world_size_of_no_count_stops_no_run(monkeypatch, nodes):
    """torchrun sets GROUP_WORLD_SIZE to the nodes' count; one set by hand to no count stopped the run as it began
    (run_record), in int()'s ValueError naming no variable, for a comment on its command: it counts one node."""
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py"])
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("GROUP_WORLD_SIZE", nodes)
    monkeypatch.setattr(running, "launcher_argv", lambda: None)
    assert training._run_command(None) == "torchrun --nproc-per-node=2 vqvae_train.py"


def test_a_torchrun_on_the_path_is_said_as_torchrun(monkeypatch, tmp_path):
    """torchrun typed as found on PATH reads '/abs/venv/bin/python3 /abs/venv/bin/torchrun' in /proc: said as
    `torchrun`; another torchrun than PATH's keeps its path."""
    mine, other = tmp_path / "torchrun", tmp_path / "other" / "torchrun"
    other.parent.mkdir()
    mine.write_text(""), other.write_text("")
    monkeypatch.setattr(training.shutil, "which", lambda name: str(mine))
    assert training.as_typed(["/v/python3.11", str(mine), "--standalone", "a.py"]) == ["torchrun", "--standalone",
                                                                                         "a.py"]
    assert training.as_typed(["/v/python3.11", str(other), "a.py"]) == [str(other), "a.py"]
    assert training.as_typed(["/v/bash", str(mine), "a.py"]) == ["/v/bash", str(mine), "a.py"]
    assert training.as_typed(["/v/torchrun"]) == ["/v/torchrun"]


def test_a_torchrun_typed_through_a_link_or_a_relative_path_is_said_as_torchrun(monkeypatch, tmp_path):
    """PATH's torchrun may be a link to the one typed (or the one typed a relative path): the same file is said as
    `torchrun`; a script path that names no file (another working folder's) is kept as typed."""
    real, link = tmp_path / "venv" / "torchrun", tmp_path / "bin" / "torchrun"
    real.parent.mkdir(), link.parent.mkdir()
    real.write_text("")
    link.symlink_to(real)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training.shutil, "which", lambda name: str(link))
    assert training.as_typed(["/v/python3", str(real), "a.py"]) == ["torchrun", "a.py"]
    assert training.as_typed(["/v/python3", "venv/torchrun", "a.py"]) == ["torchrun", "a.py"]
    assert training.as_typed(["/v/python3", "gone/torchrun", "a.py"]) == ["gone/torchrun", "a.py"]


def recording_main(monkeypatch) -> Callable[[list[str] | None], dict]:
    """A training main of vqvae_train's that returns its run.json record, in a script run as
    `/home/me/vqvae_train.py --epochs 3`."""
    split = {"data_hash": "d0", "input_hash": "i0", "records": ["100"]}
    rt = training.Runtime(torch.device("cpu"))

    @training.training_main
    def main(argv: list[str] | None = None) -> dict:
        return training.run_record({}, 0, split, split, rt, argv)
    main.__wrapped__.__module__ = "vqvae_train"
    monkeypatch.setattr(sys, "argv", ["/home/me/vqvae_train.py", "--epochs", "3"])
    return main


def test_run_json_names_a_main_called_from_python_as_that_call(monkeypatch):
    """vqvae_train.main([...]) from Python recorded its flags alone ('--epochs 1 --max-steps 2'), no script before
    them: neither runnable nor clear, and vqvae_eval's report said 'trained by `--epochs 1 ...`'. It is the call now,
    as resume_hint says it; a script run of the same main, its command line."""
    main = recording_main(monkeypatch)
    called = main(["--epochs", "1", "--max-steps", "2"])["command"]
    assert called == "vqvae_train.main(['--epochs', '1', '--max-steps', '2'])"
    assert running.script_running() is None and main()["command"] == "python3 /home/me/vqvae_train.py --epochs 3"


def test_a_main_called_from_python_after_a_script_ran_is_named_as_the_call(monkeypatch):
    """run_main's script runs no longer once it ends: a main called from Python after it (a session that ran a script
    through run_main, then a sweep) with the same flags is named as that call, not as the script's command line."""
    main = recording_main(monkeypatch)
    ran = []
    running.run_main(lambda: ran.append(main(["--epochs", "3"])["command"]))
    assert ran == ["python3 /home/me/vqvae_train.py --epochs 3"] and running.script_running() is None
    assert main(["--epochs", "3"])["command"] == "vqvae_train.main(['--epochs', '3'])"


def test_a_trainer_used_alone_after_a_training_main_ended_says_fit(monkeypatch):
    """A training main's record ends with it: a Trainer used alone afterwards (a notebook that ran vqvae_train.main
    first) says how to resume as one used alone does, fit(resume=...), not as that main's call."""
    @training.training_main
    def main(argv: list[str] | None = None) -> dict:
        return {}
    main.__wrapped__.__module__ = "vqvae_train"
    main(["--epochs", "1"])
    assert training.resume_hint("runs/last.pt", "vqvae") == "resume with: fit(resume='runs/last.pt')"


def test_forecast_bands_hold_the_central_50_and_80_percent_of_the_paths(tmp_path, monkeypatch):
    fs, context, horizon = 128, 64, 32
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((1, 2000, horizon, 2))
    windows = np.zeros((1, context + horizon, 2))
    bands = {}
    real = matplotlib.axes.Axes.fill_between

    def spy(self, x, lo, hi, *args, **kwargs):
        bands.setdefault(kwargs.get("label"), (np.asarray(lo), np.asarray(hi)))
        return real(self, x, lo, hi, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    train_results.plot_forecasts(windows, samples, fs, context, tmp_path / "f.png", "t")
    assert set(bands) == {"50% band", "80% band"}
    s = samples[0, :, :, 0]
    for label, share in (("50% band", 0.5), ("80% band", 0.8)):
        lo, hi = bands[label]
        inside = ((s >= lo) & (s <= hi)).mean(0)       # per time step, over the paths
        assert np.all(np.abs(inside - share) < 0.01), (label, inside.min(), inside.max())
        assert np.all(lo < np.median(s, 0)) and np.all(np.median(s, 0) < hi)       # central


def test_a_key_only_one_config_has_is_a_difference():
    """A key only one of two configs has (a model key since dropped, or one a checkpoint predates whose absence
    load_checkpoint did not fill in) means another model: refused, naming the key, as for a changed value."""
    saved = {"model": {"dim": 32, "layers": 2}, "train": {"epochs": 3}}
    check_same_config(saved, {"model": {"dim": 32, "layers": 2}, "train": {"epochs": 9}}, Path("c.pt"))
    with pytest.raises(UserError, match="model.draft"):
        check_same_config(saved, {"model": {"dim": 32, "layers": 2, "draft": True}}, Path("c.pt"))
    with pytest.raises(UserError, match="model.layers"):
        check_same_config(saved, {"model": {"dim": 32}}, Path("c.pt"))


@pytest.mark.parametrize("script, kind, change, first_work", [
    (vqvae_train, "vqvae", {"model": {"channels": 32}}, "load_split"),
    (transformer_train, "transformer", {"model": {"dropout": 0.2}}, "run_vqvae"),
    (transformer_train, "transformer", "--augment-copies", "run_vqvae"),
    (latent_sde_train, "latent_sde", {"model": {"draft_noise": 0.3}}, "run_vqvae"),
    (vqvae_train, "vqvae", {"data": {"filter_order": 3}}, "load_split"),      # data is no training section
])
def test_a_resume_with_another_config_is_refused_before_the_data(tmp_path, monkeypatch, script, kind, change,
                                                                  first_work):
    """A changed model or augment section (--config, --augment-copies) was refused by Trainer.resume, after the
    data was loaded and every window (and augmented copy) encoded: minutes on MIT-BIH before the error."""
    from hyper_params import Config
    from hyper_params_sde import SDEConfig
    from hyper_params_transformer import TransformerConfig

    config = {"vqvae": Config, "transformer": TransformerConfig, "latent_sde": SDEConfig}[kind]().to_dict()
    ckpt = tmp_path / "last.pt"
    torch.save({"kind": kind, "model": {}, "config": config, "vqvae": {}, "block_size": 96, "meta": {"seed": 0},
                **dict.fromkeys(TRAINING_STATE)}, ckpt)
    args = ["--resume", str(ckpt), "--device", "cpu"]
    if change == "--augment-copies":
        args += ["--augment-copies", "2"]
        changed = f"'augment.copies' is {config['augment']['copies']} there but 2 now"
    else:
        (section, values), = change.items()
        (key, value), = values.items()
        (tmp_path / "new.json").write_text(json.dumps({section: values}))
        args += ["--config", str(tmp_path / "new.json")]
        changed = f"'{section}.{key}' is {config[section][key]!r} there but {value!r} now"
    monkeypatch.setattr(script, first_work, lambda *a, **k: pytest.fail(f"{first_work} ran before the refusal"))
    with pytest.raises(UserError, match=f"{ckpt} was made with another config: {changed}"):
        script.main(args)


def test_a_trainer_built_in_python_refuses_to_resume_a_checkpoint_of_another_config(tmp_path):
    """The scripts refuse another model config in run_config, before the data; Trainer.resume checks it again, and
    is the only check for a Trainer of one's own (and of the VQ-VAE section a forecaster's config carries)."""
    first = toy_trainer(tmp_path / "a")
    first.config = {"model": {"width": 4}, "train": {"epochs": 1}}
    first.fit()
    other = toy_trainer(tmp_path / "b", epochs=2)
    other.config = {"model": {"width": 8}, "train": {"epochs": 2}}
    with pytest.raises(UserError, match="was made with another config: 'model.width' is 4 there but 8 now"):
        other.fit(tmp_path / "a" / "ckpt" / "last.pt")
    other.config["model"]["width"] = 4              # the training section alone may change
    assert other.fit(tmp_path / "a" / "ckpt" / "last.pt")["epoch"] == 2


def test_each_epoch_sees_the_training_windows_in_a_new_order(tmp_path):
    """Every window once per epoch, shuffled afresh each epoch (DistributedSampler.set_epoch), the same
    way for the same seed: a fixed order would repeat the same batches, epoch after epoch."""
    def run(folder: Path) -> list[list[int]]:
        seen: list[int] = []

        def step(model, batch):
            (i,) = batch
            if model.training:                  # training steps, not the validation pass
                seen.extend(int(v) for v in i)
            return (model(i[:, None].float()) ** 2).mean(), {}

        toy_trainer(folder, nn.Linear(1, 1), TensorDataset(torch.arange(32)), step, epochs=2).fit()
        return [seen[:32], seen[32:]]

    epochs = run(tmp_path / "a")
    assert all(sorted(e) == list(range(32)) for e in epochs)
    assert epochs[0] != epochs[1]
    assert epochs == run(tmp_path / "b")


def test_data_loader_workers_see_the_same_crops_as_the_main_process(tmp_path):
    """train.num_workers > 0: each epoch's workers crop as the main process would (the epoch set before they start,
    the offset from (seed, epoch, index), no worker RNG), so the run is the same as with none."""
    def run(folder: Path, workers: int) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []

        def step(model, batch):
            if model.training:
                seen.append(batch)
            return (model(batch) ** 2).mean(), {}

        crops = vqvae_train.RandomCrops(torch.randn(16, 12, 2, generator=torch.Generator().manual_seed(0)), 4, seed=3)
        toy_trainer(folder, nn.Linear(2, 1), crops, step, epochs=2, num_workers=workers).fit()
        return seen

    alone, workers = run(tmp_path / "a", 0), run(tmp_path / "b", 2)
    assert len(alone) == 4 and not torch.equal(alone[0], alone[2])     # the epochs crop anew
    assert all(torch.equal(a, b) for a, b in zip(alone, workers, strict=True))



class BlockedSignals(Dataset):
    """Windows of 4 numbers: whether SIGTERM and SIGINT are blocked in the process that loads them, then two zeros."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        return torch.tensor([float(signal.SIGTERM in blocked), float(signal.SIGINT in blocked), 0.0, 0.0])


def test_data_loader_workers_leave_sigterm_and_ctrl_c_to_the_trainer(tmp_path):
    """A scheduler's SIGTERM reaches a job's every process, train.num_workers' loader workers too: they died of it
    (the rank's traceback: 'DataLoader worker (pid N) is killed by signal') or ran the training's handler, inherited
    by fork, up the main's stack. Training's and validation's workers start with both signals blocked, and the main
    process gets them back as they were."""
    seen: list[torch.Tensor] = []

    def step(model, batch):
        seen.append(batch[:, :2])
        return (model(batch) ** 2).mean(), {}

    toy_trainer(tmp_path, nn.Linear(4, 1), BlockedSignals(), step, num_workers=1).fit()
    assert len(seen) == 4 and all(bool((batch == 1).all()) for batch in seen)      # 2 training, 2 validation batches
    assert not {signal.SIGTERM, signal.SIGINT} & signal.pthread_sigmask(signal.SIG_BLOCK, [])

def test_seed_zero_on_the_command_line_is_the_seed_used():
    """--seed 0 is a seed like any other: it overrides the config's, as --seed 5 does (0 is not 'not given')."""
    import argparse

    from training import TRAIN_FLAGS, apply_flags

    for seed in (0, 5):
        cfg = SimpleNamespace(train=TrainConfig(seed=1234))
        apply_flags(cfg, argparse.Namespace(epochs=None, max_steps=None, batch_size=None, seed=seed), TRAIN_FLAGS)
        assert cfg.train.seed == seed


def test_a_resume_says_a_seed_of_config_given_again_is_ignored(tmp_path: Path, capsys) -> None:
    """A resume keeps its seed: --config F given again took F's train section but dropped F's train.seed in silence,
    where --seed is said to be ignored; both are said now, and an equal seed is not."""
    import argparse

    stored = load_config(None)
    resume = {"config": stored.to_dict(), "meta": {"seed": stored.train.seed}}
    for seed, said in ((stored.train.seed + 7, True), (stored.train.seed, False)):
        raw = stored.to_dict()
        raw["train"]["seed"] = seed
        (tmp_path / "f.json").write_text(json.dumps(raw))
        args = argparse.Namespace(config=str(tmp_path / "f.json"), resume="last.pt", epochs=None, max_steps=None,
                                  batch_size=None, seed=None)
        cfg = training.run_config(args, resume, load_config, config_from_dict)
        assert cfg.train.seed == stored.train.seed
        note = (f"train.seed {seed} of --config {tmp_path / 'f.json'} is ignored: the resumed run goes on with its own "
                f"seed, {stored.train.seed}")
        assert (note in capsys.readouterr().err) == said


def test_a_scripts_own_flags_set_the_config_keys_it_declares():
    """run_config applies the flags a script declares ({args attribute: "section.key"}, the forecasters'
    vqvae_eval.FORECASTER_FLAGS) and no other: it read args.augment_copies of any script by name, declared nowhere."""
    import argparse

    from hyper_params_transformer import load_transformer_config, transformer_config_from_dict

    def copies(augment_copies: int | None, flags: dict | None) -> int:
        args = argparse.Namespace(config=None, epochs=None, max_steps=None, batch_size=None, seed=None,
                                  augment_copies=augment_copies)
        cfg = training.run_config(args, None, load_transformer_config, transformer_config_from_dict, flags)
        return cfg.augment.copies

    default = load_transformer_config(None).augment.copies
    flags = transformer_train.FORECASTER_FLAGS
    assert flags is latent_sde_train.FORECASTER_FLAGS and flags == {"augment_copies": "augment.copies"}
    assert copies(0, flags) == 0 != default        # 0 is a value, not "not given"
    assert copies(None, flags) == default == copies(0, None)


BAD_NUMBERS = [("--epochs", "0", "must be >= 1, got 0"), ("--max-steps", "-1", "must be >= 1, got -1"),
               ("--batch-size", "0", "must be >= 1, got 0"),
               ("--seed", "-1", "must be in [0, 2**32) (numpy's seed range), got -1"),
               ("--patience", "-1", "must be >= 0 (0: none), got -1")] + [
    (flag, str(2 ** 63), f"must be < 2**63 (no setting takes an integer of size 2**63 or more), got {2 ** 63}")
    for flag in ("--epochs", "--max-steps", "--batch-size", "--patience")]


@pytest.mark.parametrize("script", [vqvae_train, transformer_train, latent_sde_train])
@pytest.mark.parametrize("flag, value, said", BAD_NUMBERS)
def test_a_bad_number_is_refused_by_its_flags_name(tmp_path: Path, script, flag: str, value: str, said: str) -> None:
    """A bad --epochs, --max-steps, --batch-size or --seed is named as typed, before anything is read or made: the
    config key it sets was named instead ('train.epochs')."""
    r = run_script(script.main, f"{script.__name__}.py", [flag, value, "--results", str(tmp_path / "r")])
    assert r.returncode == 2 and r.stderr == f"error: {flag} {said}\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script", [transformer_train, latent_sde_train])
def test_augment_copies_beyond_any_setting_is_refused_by_its_flags_name(tmp_path: Path, script) -> None:
    """A run given --epochs or --augment-copies of 2**63 trained, and its checkpoints' stored config was then refused
    on --resume and as a --vqvae ('train.epochs = ... is out of range'): a flag is bounded as the config is."""
    r = run_script(script.main, f"{script.__name__}.py", ["--augment-copies", str(2 ** 63), "--results",
                                                          str(tmp_path / "r")])
    assert r.returncode == 2 and r.stderr == ("error: --augment-copies must be < 2**63 (no setting takes an integer of "
                                              f"size 2**63 or more), got {2 ** 63}\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script", [transformer_train, latent_sde_train])
def test_negative_augment_copies_is_refused_by_its_flags_name(tmp_path: Path, script) -> None:
    """--augment-copies -1 was refused as "config key 'augment.copies' = -1 must be >= 0": a key not typed."""
    r = run_script(script.main, f"{script.__name__}.py", ["--augment-copies", "-1", "--results", str(tmp_path / "r")])
    assert r.returncode == 2 and r.stderr == "error: --augment-copies must be >= 0 (0: none), got -1\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script", [transformer_train, latent_sde_train])
def test_augment_copies_beyond_the_ceiling_are_refused_by_the_flags_name(tmp_path: Path, script) -> None:
    """--augment-copies 1000 was taken (>= 0) and the run made 1000 stretched copies of the training windows, all in
    memory (MIT-BIH's: 81 GB); augment.copies has a ceiling of 16, said by the flag's name."""
    r = run_script(script.main, f"{script.__name__}.py", ["--augment-copies", "1000", "--results", str(tmp_path / "r")])
    assert r.returncode == 2
    assert r.stderr == ("error: --augment-copies must be <= 16 (each copy is the training windows again, in memory), "
                        "got 1000\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value, said", BAD_NUMBERS)
def test_a_bad_number_for_crps_fine_tuning_is_refused_by_its_flags_name(flag: str, value: str, said: str) -> None:
    """With --crps-from the flags set crps keys: 'crps.epochs' was named, a key neither typed nor in --help."""
    import argparse
    import re

    sde = latent_sde_train.SDEConfig()
    given = {"epochs": None, "max_steps": None, "batch_size": None, "seed": None, flag[2:].replace("-", "_"): int(value)}
    with pytest.raises(UserError, match=f"^{re.escape(f'{flag} {said}')}$"):
        latent_sde_train.crps_config(argparse.Namespace(config=None, resume=None, **given), None,
                                     {"config": sde.to_dict()}, "elbo.pt")


class Reached(Exception):
    """Raised by a script's first piece of work after its config checks: the resume was accepted."""


def old_checkpoint(tmp_path: Path, kind: str, drop: dict[str, tuple[str, ...]], **extra) -> Path:
    """A `kind` checkpoint of today's default config without the `drop` keys ({section: keys}), as one saved
    before they existed; `extra` replaces top-level entries."""
    from hyper_params import Config
    from hyper_params_sde import SDEConfig
    from hyper_params_transformer import TransformerConfig

    config = {"vqvae": Config, "transformer": TransformerConfig, "latent_sde": SDEConfig}[kind]().to_dict()
    for section, keys in drop.items():
        for key in keys:
            del config[section][key]
    path = tmp_path / f"{kind}.pt"
    torch.save({"kind": kind, "model": {}, "config": config, "vqvae": {}, "block_size": 96, "meta": {"seed": 0},
                **dict.fromkeys(TRAINING_STATE), **extra}, path)
    return path


@pytest.mark.parametrize("script, kind, first_work, drop", [
    (vqvae_train, "vqvae", "load_split", {"model": ("commitment_cost",)}),
    (transformer_train, "transformer", "run_vqvae", {"model": ("dropout",), "sample": ("top_k",)}),
    (latent_sde_train, "latent_sde", "run_vqvae", {"model": ("phase_template",), "solver": ("rate_diffusion_scale",)}),
])
def test_a_checkpoint_from_before_a_key_existed_resumes_as_the_model_it_is(tmp_path, monkeypatch, script, kind,
                                                                          first_work, drop):
    """A run saved before a config key existed was built with what the key's absence means (its default), so it
    resumes, with or without --config; it was refused: "'model.dropout' is None there but 0.1 now"."""
    ckpt = old_checkpoint(tmp_path, kind, drop)
    (tmp_path / "same.json").write_text("{}")
    monkeypatch.setattr(script, first_work, lambda *a, **k: (_ for _ in ()).throw(Reached()))
    for given in ([], ["--config", str(tmp_path / "same.json")]):
        with pytest.raises(Reached):
            script.main(["--resume", str(ckpt), "--device", "cpu", *given])


def test_a_key_a_checkpoint_predates_set_otherwise_now_is_named_with_both_values(tmp_path, monkeypatch):
    """The absence means the value a key had before it existed: VQ-VAE keys older checkpoints lack mean their
    PREDATED values (one codebook), not today's defaults (three), so a config of three is another model."""
    from hyper_params import PREDATED
    ckpt = old_checkpoint(tmp_path, "vqvae", {"model": tuple(PREDATED["model"])})
    monkeypatch.setattr(vqvae_train, "load_split", lambda *a, **k: (_ for _ in ()).throw(Reached()))
    with pytest.raises(Reached):
        vqvae_train.main(["--resume", str(ckpt), "--device", "cpu"])
    (tmp_path / "three.json").write_text(json.dumps({"model": {"num_quantizers": 3}}))
    with pytest.raises(UserError, match=f"^checkpoint {ckpt} was made with another config: 'model.num_quantizers' is "
                                        f"1 there but 3 now$"):
        vqvae_train.main(["--resume", str(ckpt), "--device", "cpu", "--config", str(tmp_path / "three.json")])


@pytest.mark.parametrize("kind, changed", [("latent_sde", "'model.corrected_dims' is 2 there but 0 now"),
                                           ("transformer", "'model.draft' is False there but True now")])
def test_a_forecaster_from_before_the_drafts_resumes_as_the_model_it_is(kind, changed, tmp_path, monkeypatch):
    """Keys older checkpoints lack mean their PREDATED values, not today's defaults (the config files' recipes): the
    latent SDE's a beat phase and no drafts, the Transformer's no drafts, tilt, noise or augmented copies. Such a run
    resumes as the model it is, and the recipe is another model."""
    import hyper_params_sde
    import hyper_params_transformer
    from tiny import PHASE_MODEL
    params, trainer = {"latent_sde": (hyper_params_sde, latent_sde_train),
                       "transformer": (hyper_params_transformer, transformer_train)}[kind]
    was = {"model": PHASE_MODEL} if kind == "latent_sde" else params.PREDATED     # the phase model, key for key
    ckpt = old_checkpoint(tmp_path, kind, {section: tuple(keys) for section, keys in params.PREDATED.items()})
    config = train_results.load_checkpoint(ckpt)["config"]
    assert {section: {k: config[section][k] for k in keys} for section, keys in was.items()} == was
    monkeypatch.setattr(trainer, "run_vqvae", lambda *a, **k: (_ for _ in ()).throw(Reached()))
    with pytest.raises(Reached):
        trainer.main(["--resume", str(ckpt), "--device", "cpu"])
    with pytest.raises(UserError, match=f"^checkpoint {ckpt} was made with another config: {changed}$"):
        trainer.main(["--resume", str(ckpt), "--device", "cpu", "--config", str(params.DEFAULT_CONFIG)])


@pytest.mark.parametrize("edit, said", [
    (("model", "layers", "4"), r"'model.layers' = '4' has the wrong type \(expected int\)"),
    (("model", "heads", 3), r"'model.heads' = 3 must divide model.dim=128"),
    (("model", "mixture", 4), r"unknown config key 'model.mixture' = 4 \(known: "),      # a newer version's
])
def test_a_stored_config_is_checked_like_a_config_file(tmp_path, edit, said):
    """A checkpoint's config, hand-edited or of a newer version, is validated on load, whatever reads it: a resume
    with --config given compared it raw ("'model.layers' is '4' there but 4 now")."""
    section, key, value = edit
    from hyper_params_transformer import TransformerConfig
    config = TransformerConfig().to_dict()
    config[section][key] = value
    ckpt = old_checkpoint(tmp_path, "transformer", {}, config=config)
    (tmp_path / "same.json").write_text("{}")
    with pytest.raises(UserError, match=f"^config stored in {ckpt}: .*{said}"):
        transformer_train.main(["--resume", str(ckpt), "--device", "cpu", "--config", str(tmp_path / "same.json")])


@pytest.mark.parametrize("kind, config, said", [
    ("vqvae", [1], "the top level must be an object"),
    ("vqvae", {"model": 5}, "section 'model' must be an object, got int"),
    ("transformer", "vqvae: None", "the top level must be an object"),
], ids=["vqvae_not_an_object", "vqvae_section_not_an_object", "carried_vqvae_none"])
def test_a_stored_vqvae_config_that_is_no_object_is_named(tmp_path, kind, config, said):
    """load_checkpoint builds every stored VQ-VAE config (a forecaster's carried one too): a damaged one, not an
    object or with a section that is none, was an AttributeError or TypeError traceback, as it is one error now."""
    from hyper_params_transformer import TransformerConfig
    if config == "vqvae: None":
        config = {**TransformerConfig().to_dict(), "vqvae": None}
    ckpt = old_checkpoint(tmp_path, kind, {}, config=config)
    with pytest.raises(UserError, match=f"^VQ-VAE config stored in {ckpt}: {said}" if kind != "vqvae"
                       else f"^config stored in {ckpt}: {said}"):
        train_results.load_checkpoint(ckpt, kind)


@pytest.mark.parametrize("script, model", [(transformer_train, "transformer"), (latent_sde_train, "latent_sde")])
def test_resuming_a_packed_model_is_named_before_the_data(tmp_path, monkeypatch, script, model):
    """pretrained/'s models keep their weights, not their training state: --resume of one loaded (and encoded) the
    data, then stopped at a KeyError traceback ('run_dir')."""
    monkeypatch.setattr(script, "forecaster_splits", lambda *a, **k: pytest.fail("the data was loaded"))
    with pytest.raises(UserError, match=f"^{re.escape(str(paths.SHIPPED[model]))} holds no training state "
                                        r"\(optimizer, .*\), as a packed model .*: --resume takes a run's checkpoint"):
        script.main(["--resume", str(paths.SHIPPED[model]), "--device", "cpu"])


def test_resuming_from_another_kind_of_checkpoint_is_named(tmp_path, synthetic_db):
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 1, "max_steps_per_epoch": 2})
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (last,) = (tmp_path / "checkpoints").glob("vqvae-*/last.pt")
    common = ["--device", "cpu", "--prepared", setup["prepared"], "--results", setup["results"],
              "--checkpoints", setup["checkpoints"]]
    with pytest.raises(UserError, match="holds a 'vqvae' model, expected 'transformer'"):
        transformer_train.main(common + ["--resume", str(last)])
    with pytest.raises(UserError, match="holds a 'vqvae' model, expected 'latent_sde'"):
        latent_sde_train.main(common + ["--resume", str(last)])
    with pytest.raises(UserError, match="holds a 'vqvae' model, expected 'latent_sde'"):
        latent_sde_train.main(common + ["--crps-from", str(last)])


def test_run_json_names_the_input_records_and_a_resume_on_new_recordings_says_so(tmp_path, synthetic_db, capsys):
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 1, "max_steps_per_epoch": 2})
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (run,) = (tmp_path / "results").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert meta["input_hash"] in json.dumps(record) and meta["data_hash"] in json.dumps(record)
    # same config, other recordings under the same names: prepared again, then resumed
    write_record(synthetic_db, "105", seed=42)
    prepare(config_from_dict(json.loads((tmp_path / "config.json").read_text())), synthetic_db,
            tmp_path / "prepared", download=False)
    capsys.readouterr()
    vqvae_train.main(flags(setup, "--device", "cpu", "--resume", str(tmp_path / "checkpoints" / run.name / "last.pt"),
                           "--epochs", "2"))
    assert "prepared again since?" in capsys.readouterr().err


def test_max_steps_flag_caps_the_steps_of_an_epoch(tmp_path, synthetic_db):
    setup = tiny_setup(tmp_path, synthetic_db)                    # the config says 6 steps an epoch, 2 epochs
    vqvae_train.main(flags(setup, "--device", "cpu", "--epochs", "1", "--max-steps", "2"))
    (run,) = (tmp_path / "results").iterdir()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2")]
    train = json.loads((run / "run.json").read_text())["config"]["train"]
    assert (train["epochs"], train["max_steps_per_epoch"]) == (1, 2)


def test_validation_metrics_weigh_every_window_once(tmp_path: Path) -> None:
    """10 validation windows in batches of 8 and 2: the loss and metrics are their mean over the windows, not
    the mean of the two batch means (which would weigh each of the last 2 windows 4 times as much)."""
    def step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        (v,) = batch
        return v.mean() + 0 * model.weight.sum(), {"double": 2 * v.mean()}

    trainer = toy_trainer(tmp_path, nn.Linear(1, 1), TensorDataset(torch.arange(10.0)), step)
    assert trainer.validate(trainer.model) == {"loss": pytest.approx(4.5), "double": pytest.approx(9.0)}


@pytest.mark.parametrize("batch_size", [12, 4, 1])
def test_vqvae_validation_perplexity_is_of_the_codes_of_all_windows_pooled(tmp_path: Path, batch_size: int) -> None:
    """val_batch_perplexity is exp(entropy) of the first codebook's codes over every validation window, whatever
    the batches: under torchrun each rank validates batch_size / N windows a batch, and a mean of per-batch
    perplexities (the old figure) fell with the batch, so it changed with the number of processes."""
    torch.manual_seed(0)
    model = VQVAE(ModelConfig(downsample_factor=4, channels=16, res_blocks=1, attention_heads=2, latent_dim=8,
                              codebook_size=32, num_quantizers=2, window_gain=False), [0.5, 0.4])
    x = torch.randn(12, 64, 2)
    model(x)                                # training mode: the codebooks start from these windows' latents
    model.eval()
    with torch.no_grad():
        codes = model.encode(x)[..., 0].flatten()
    p = torch.bincount(codes, minlength=32).double() / codes.numel()
    pooled = float(torch.exp(-(p * torch.log(p + 1e-10)).sum()))
    assert pooled > 4           # many codes in use, so that small batches would see fewer of them
    trainer = toy_trainer(tmp_path, model, vqvae_train.Windows(x), vqvae_train.step_fn, batch_size=batch_size)
    assert trainer.validate(model)["batch_perplexity"] == pytest.approx(pooled, rel=1e-6)


def test_validation_in_eval_mode_training_in_train_mode(tmp_path: Path) -> None:
    """Dropout and batch statistics are off while validating and back on for the next epoch's training."""
    modes: list[bool] = []

    def step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        modes.append(model.training)
        return squared_error(model, batch)

    toy_trainer(tmp_path, step=step, epochs=2).fit()
    assert modes == ([True] * 8 + [False] * 8) * 2        # 64 windows in batches of 8, as training and validation


def test_every_step_starts_from_fresh_gradients(tmp_path: Path) -> None:
    """Each step's gradient is its own batch's: a loss whose gradient is always 1 shows 1 at every step, not
    1, 2, 3... as gradients left over from the steps before would add up."""
    grads: list[float] = []
    trainer = toy_trainer(tmp_path, nn.Linear(1, 1), TensorDataset(torch.ones(64, 1)),
                          lambda model, batch: (model.bias.sum() + 100, {}), grad_clip=1e9)
    trainer.opt.register_step_pre_hook(lambda opt, *_: grads.append(float(trainer.model.bias.grad)))
    trainer.fit()
    assert grads == [1.0] * 8


def test_the_learning_rate_reaches_its_floor_after_the_last_capped_step(tmp_path: Path) -> None:
    """The cosine runs over the steps the run takes (max_steps_per_epoch caps them), stepped once per step: after
    the last step the schedule stands at 10% of the peak."""
    trainer = toy_trainer(tmp_path, epochs=2, max_steps_per_epoch=3, learning_rate=0.01)
    trainer.fit()
    assert trainer.step == 6 and trainer.opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_a_resume_with_other_steps_per_epoch_still_ends_at_the_floor(tmp_path: Path) -> None:
    """The schedule was laid out over epochs x the resume's steps per epoch but went on from the step the run had
    reached with its own: 2 epochs of 2 steps resumed to 4 epochs of 8 ended at 45% of the peak, 4 of 8 resumed to 6
    of 2 trained all its steps at the floor. It is laid out over the steps taken and those left: the last step is the
    run's, and a resume with its run's own steps per epoch is laid out as before."""
    for first, then, left in (((2, 2), (4, 8), 16), ((4, 8), (6, 2), 4)):
        toy_trainer(tmp_path / f"{first}", epochs=first[0], max_steps_per_epoch=first[1], warmup_steps=0).fit()
        resumed = toy_trainer(tmp_path / f"{first}{then}", epochs=then[0], max_steps_per_epoch=then[1],
                              warmup_steps=0)
        took: list[float] = []
        resumed.opt.register_step_pre_hook(lambda opt, *_: took.append(opt.param_groups[0]["lr"]))
        resumed.fit(resume=tmp_path / f"{first}" / "ckpt" / "last.pt")
        total = first[0] * first[1] + left
        assert len(took) == left and took == pytest.approx([0.01 * training.warmup_cosine(0, total)(s)
                                                            for s in range(total - left, total)]), (first, then)
        assert resumed.opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_metrics_csv_lr_is_the_one_each_epochs_last_step_took_across_a_resume(tmp_path: Path, monkeypatch) -> None:
    """metrics.csv's lr was the scheduler's after the epoch, the next epoch's first step's (epoch 1 of a warm-up said
    0.00955 where its steps took 0.005, 0.01, 0.01; the last row said the floor, which no step took). Each row holds
    the learning rate of its epoch's last step, a resumed run's rows too."""
    def trained(folder: Path, resume: Path | None = None) -> tuple[list[float], list[float]]:
        trainer = toy_trainer(folder, epochs=3, max_steps_per_epoch=3, warmup_steps=2)
        took: list[float] = []
        trainer.opt.register_step_pre_hook(lambda opt, *_: took.append(opt.param_groups[0]["lr"]))
        if resume:
            trainer.log, trainer.ckpt_dir = MetricsLog(resume / "run" / "metrics.csv"), resume / "ckpt"
        trainer.fit(resume=resume / "ckpt" / "last.pt" if resume else None)
        return took, [float(r["lr"]) for r in trainer.log.read()]

    took, logged = trained(tmp_path / "a")
    assert took[:3] == pytest.approx([0.005, 0.01, 0.01]) and len(took) == 9
    assert logged == pytest.approx(took[2::3], rel=1e-5)
    with killed_in_epoch(monkeypatch, 3):
        trained(tmp_path / "b")
    resumed_took, resumed_logged = trained(tmp_path / "c", resume=tmp_path / "b")
    assert resumed_took == pytest.approx(took[6:]) and resumed_logged == pytest.approx(logged, rel=1e-5)


def test_numbered_checkpoints_every_checkpoint_every_epochs(tmp_path: Path, capsys) -> None:
    """checkpoint_every 2 over 5 epochs: epoch_002.pt and epoch_004.pt beside last.pt and best.pt, all named where
    the run ends (the line named best.pt and last.pt alone)."""
    toy_trainer(tmp_path, epochs=5, checkpoint_every=2).run()
    numbered = sorted(p.name for p in (tmp_path / "ckpt").glob("epoch_*.pt"))
    assert numbered == ["epoch_002.pt", "epoch_004.pt"]
    said = f"checkpoints: {tmp_path / 'ckpt'} (best.pt, epoch_002.pt, epoch_004.pt, last.pt)\n"
    assert capsys.readouterr().out.endswith(said)
    for epoch in (6, 8):
        shutil.copy(tmp_path / "ckpt" / "epoch_004.pt", tmp_path / "ckpt" / f"epoch_{epoch:03d}.pt")
    assert training.kept(tmp_path / "ckpt") == "best.pt, last.pt, 4 epoch_NNN.pt"     # counted past three
    assert torch.load(tmp_path / "ckpt" / "epoch_004.pt", weights_only=True)["epoch"] == 4


def test_a_kill_while_writing_best_pt_leaves_the_best_epoch_to_the_resume(tmp_path: Path, monkeypatch) -> None:
    """Killed while writing best.pt of its best epoch (the last, 3): the resume must end with that epoch in best.pt,
    as the uninterrupted run does. Were last.pt written first, it would hold epoch 3 and its best_val, the resume
    would have nothing to redo, and best.pt would stay epoch 2 for good."""
    toy_trainer(tmp_path / "a", epochs=3).fit()
    assert torch.load(tmp_path / "a" / "ckpt" / "best.pt", weights_only=True)["epoch"] == 3

    class Killed(Exception):
        pass

    real_save = training.save_checkpoint

    def save_or_die(state: dict, path: Path) -> None:
        if path.name == "best.pt" and state["epoch"] == 3:
            raise Killed
        real_save(state, path)

    monkeypatch.setattr(training, "save_checkpoint", save_or_die)
    with pytest.raises(Killed):
        toy_trainer(tmp_path / "b", epochs=3).fit()
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = toy_trainer(tmp_path / "c", epochs=3)
    resumed.ckpt_dir = tmp_path / "b" / "ckpt"
    resumed.fit(resume=tmp_path / "b" / "ckpt" / "last.pt")
    best = torch.load(tmp_path / "b" / "ckpt" / "best.pt", weights_only=True)
    assert best["epoch"] == 3
    uninterrupted = torch.load(tmp_path / "a" / "ckpt" / "best.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], uninterrupted["model"][k]) for k in best["model"])


def test_a_resume_trains_with_the_learning_rate_and_weight_decay_it_is_given(tmp_path: Path) -> None:
    """--resume --config F goes on with F's train section, which run.json records for the resume: its learning
    rate and weight decay are the ones used, not the first run's kept in the optimiser's saved state."""
    toy_trainer(tmp_path / "a", epochs=2).fit()
    resumed = toy_trainer(tmp_path / "b", epochs=4, learning_rate=0.1, weight_decay=0.5)
    resumed.fit(resume=tmp_path / "a" / "ckpt" / "last.pt")
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(0.01)     # the cosine's floor, 10% of the new peak
    assert [g["weight_decay"] for g in resumed.opt.param_groups] == [0.5]


def test_closing_codebook_line_is_the_last_training_epochs_for_every_level(tmp_path, synthetic_db, capsys):
    """Codes are counted by the training steps' EMA updates, never in validation: the closing line says so, and
    gives every residual level (as the epoch lines give their perplexities, usage and restarts), not the first
    level's alone."""
    setup = tiny_setup(tmp_path, synthetic_db, model={"num_quantizers": 2})
    row = vqvae_train.main(flags(setup, "--device", "cpu", "--epochs", "1"))
    out = capsys.readouterr().out
    assert (f"codebook in the last training epoch: perplexity {row['perplexity']:.1f}/{row['perplexity_2']:.1f}, "
            f"usage {100 * row['usage']:.0f}/{100 * row['usage_2']:.0f}% of 32 codes") in out
    for key in ("perplexity", "usage", "restarted", "perplexity_2", "usage_2", "restarted_2"):  # every epoch
        assert f" {key}={row[key]:.4g}" in out
    (final,) = [line for line in out.splitlines() if line.startswith("final validation")]
    assert "codebook" not in final and "perplexity" not in final


def test_the_closing_usage_of_a_large_codebook_is_not_rounded_to_nothing():
    """Usage in whole percent said 0% of a 65536-code codebook that used 12 codes (0.018%)."""
    assert [vqvae_train.percent(u) for u in (0.873, 0.01, 0.0001831, 0.0)] == ["87", "1", "0.018", "0"]
    cfg = config_from_dict({"model": {"num_quantizers": 2}})
    row = {"perplexity": 9.0, "perplexity_2": 3.0, "usage": 0.0001831, "usage_2": 0.5}
    assert "usage 0.018/50% of " in vqvae_train.codebook_line(row, cfg)



def test_closing_lines_say_which_epoch_they_score_and_where_best_pt_is(tmp_path, synthetic_db, monkeypatch, capsys):
    """The closing 'final validation' line scores the last epoch's weights: after an early stop those are never
    best.pt's, the model to use, and the line read as the run's result. It now names its epoch and best.pt's."""
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 5, "max_steps_per_epoch": 2})
    scripted_validation(monkeypatch, [2.0, 1.0, 1.5, 1.6, 1.7])
    assert vqvae_train.main(flags(setup, "--device", "cpu", "--patience", "1"))["epoch"] == 3
    (final,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final validation")]
    assert final.startswith("final validation (epoch 3, in last.pt; best.pt is epoch 2's): MSE "), final
    scripted_validation(monkeypatch, [2.0, 1.0])
    setup = tiny_setup(tmp_path / "b", synthetic_db, train={"epochs": 2, "max_steps_per_epoch": 2})
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (final,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final validation")]
    assert final.startswith("final validation (epoch 2, in best.pt and last.pt): MSE "), final


def test_vqvae_closing_lines_say_what_to_run_next_and_run_as_printed(tmp_path, synthetic_db, capsys):
    """vqvae_train.py ended with its scores and no word on what to run with its best.pt, where the forecaster
    trainers print their next commands: it now prints vqvae_eval.py on the validation patients and
    transformer_train.py on best.pt, on the run's --prepared folder, and both run as printed (the tiny data section
    is not config_vqvae.json's: they read the checkpoint's). A VQ-VAE whose windows hold no future gets no
    forecaster line: transformer_train.py refuses it."""
    import shlex

    import vqvae_eval
    from tiny import plain_transformer

    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 1, "max_steps_per_epoch": 2, "plot_windows": 0})
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (best,) = (tmp_path / "checkpoints").glob("vqvae-*/best.pt")
    told = {line.split(": ", 1)[0]: shlex.split(line.split(": ", 1)[1]) for line in capsys.readouterr().out.splitlines()
            if line.startswith(("evaluate on validation patients: ", "train a forecaster on it: "))}
    ev, tf = told["evaluate on validation patients"], told["train a forecaster on it"]
    assert ev == ["python3", "vqvae_eval.py", "--checkpoint", str(best), "--split", "validation", "--prepared",
                  setup["prepared"]]
    assert tf == ["python3", "transformer_train.py", "--vqvae", str(best), "--prepared", setup["prepared"]]
    report = vqvae_eval.main([*ev[2:], "--results", str(tmp_path / "ev")])
    assert report["checkpoint"] == str(best)
    tcfg = tmp_path / "transformer.json"
    tcfg.write_text(json.dumps(plain_transformer(model={"dim": 16, "layers": 1, "heads": 2},
                                                 train={"epochs": 1, "batch_size": 8, "plot_windows": 0})))
    row = transformer_train.main([*tf[2:], "--config", str(tcfg), "--max-steps", "1", "--device", "cpu",
                                  "--results", str(tmp_path / "tr"), "--checkpoints", str(tmp_path / "tc")])
    assert row["epoch"] == 1 and len(list((tmp_path / "tc").glob("transformer-*/best.pt"))) == 1
    no_future = config_from_dict({**TINY, "data": {**TINY["data"], "forecast_predictions": 0}})
    assert vqvae_train.next_commands(best.parent, no_future, None).splitlines() == [
        f"evaluate on validation patients: python3 vqvae_eval.py --checkpoint {shlex.quote(str(best))} "
        "--split validation"]


def test_the_closing_line_of_a_resumed_checkpoint_from_before_patience_says_or_before(tmp_path, synthetic_db,
                                                                                     monkeypatch, capsys):
    """A checkpoint without best_epoch resumed, and not beaten since, has its best of its epoch or before: best.pt
    may be older than the epoch the closing line names, so the line says so."""
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 2, "max_steps_per_epoch": 2})
    scripted_validation(monkeypatch, [2.0, 1.0, 1.5])
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (ckpts,) = (tmp_path / "checkpoints").iterdir()
    ckpt = torch.load(ckpts / "last.pt", weights_only=True)
    del ckpt["best_epoch"]
    torch.save(ckpt, ckpts / "last.pt")
    capsys.readouterr()
    vqvae_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(ckpts / "last.pt"),
                      "--epochs", "3"])
    (final,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final validation")]
    assert final.startswith("final validation (epoch 3, in last.pt; best.pt is epoch 2's or before): MSE "), final


def test_the_closing_line_of_a_resume_from_an_older_epoch_names_best_pts_later_epoch(tmp_path, synthetic_db,
                                                                                      monkeypatch, capsys):
    """Resumed from epoch_001.pt and not better since, best.pt is still the later epoch 3's, trained before the
    resume: the closing line said it was epoch 1's."""
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 3, "max_steps_per_epoch": 2, "checkpoint_every": 1})
    scripted_validation(monkeypatch, [2.0, 1.0, 0.5])
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (ckpts,) = (tmp_path / "checkpoints").iterdir()
    scripted_validation(monkeypatch, [2.0, 3.0])
    capsys.readouterr()
    vqvae_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(ckpts / "epoch_001.pt"),
                      "--epochs", "2"])
    (final,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final validation")]
    assert final.startswith("final validation (epoch 2, in last.pt; best.pt is epoch 3's, trained before this "
                            "resume): MSE "), final


@pytest.mark.parametrize("step, script, said", [
    (10, "toy_train.py", "interrupted; resume with: python3 toy_train.py --resume {ckpt}/last.pt"),
    (10, "../mine/my_forecaster.py", "interrupted; resume with: python3 ../mine/my_forecaster.py --resume {ckpt}/last.pt"),
    (3, "toy_train.py", "interrupted; nothing was saved yet (last.pt is written at the end of every epoch)")],
    ids=["second_epoch", "a_script_of_ones_own", "first_epoch"])
def test_an_interrupted_run_says_how_to_resume(tmp_path: Path, step: int, script: str, said: str) -> None:
    """Ctrl-C in the second epoch (8 steps an epoch) names the command that resumes from the first epoch's
    last.pt, with the script that runs (a trainer of one's own was told to run <kind>_train.py, which does not
    exist); in the first epoch, that there is nothing to resume from. Exit status 130 either way."""
    def interrupted_at_step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        if model.training and trainer.step == step:
            raise KeyboardInterrupt
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path, step=interrupted_at_step, epochs=2)
    r = run_script(trainer.run, script, [])
    assert (r.returncode, r.stderr.splitlines()) == (130, [said.format(ckpt=tmp_path / "ckpt")])


def test_the_resume_command_is_quoted_as_a_shell_needs_it(tmp_path: Path) -> None:
    """In a folder with a space (and an é), the resume command, copied into a shell, was split at the space."""
    def interrupted_in_the_second_epoch(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        if model.training and trainer.step == 10:
            raise KeyboardInterrupt
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path / "my runs é", step=interrupted_in_the_second_epoch, epochs=2)
    r = run_script(trainer.run, "toy_train.py", [])
    assert r.stderr.splitlines() == [f"interrupted; resume with: python3 toy_train.py --resume "
                                     f"'{tmp_path}/my runs é/ckpt/last.pt'"]


def test_a_run_terminated_by_a_scheduler_stops_as_on_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM (kill, timeout, a cluster's time limit) ended a training on the spot, saying nothing and leaving a
    half-written checkpoint's temporary file; it now stops as Ctrl-C does, with the resume command, exit status 143,
    and the handler run_main put in is taken out again."""
    def terminated_at_step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        if model.training and trainer.step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path, step=terminated_at_step, epochs=2)
    r = run_script(trainer.run, "toy_train.py", [])
    assert (r.returncode, r.stderr.splitlines()) == (
        143, [f"terminated; resume with: python3 toy_train.py --resume {tmp_path / 'ckpt'}/last.pt"])
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_failed_save_of_a_run_resumed_into_folders_of_its_own_names_the_checkpoint_it_went_on_from(
        tmp_path: Path, monkeypatch) -> None:
    """A resume whose run folders are gone (another machine) trains into new ones. Its first save failing (a full
    disk) said 'nothing was saved yet', where Ctrl-C at the same point names the checkpoint it resumed, whole."""
    toy_trainer(tmp_path / "a", epochs=2).fit()

    def disk_full(obj, path):
        raise UserError(f"cannot write {path}: No space left on device")
    monkeypatch.setattr(paths, "atomic_torch_save", disk_full)
    resumed = tmp_path / "a" / "ckpt" / "last.pt"
    with pytest.raises(UserError, match=re.escape(f"No space left on device; resume with: fit(resume={str(resumed)!r})")
                       + "$"):
        toy_trainer(tmp_path / "b", epochs=4).fit(resume=resumed)


class SignalsWhenCollected:
    """A signal (SIGTERM, or Ctrl-C's SIGINT) sent from a __del__, where Python swallows what the handler raises: the
    signal as it lands while a DataLoader's iterator shuts down its workers at an epoch's end."""
    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")     # the swallowed one, printed
@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"),
                                                  (signal.SIGINT, 130, "interrupted")], ids=["sigterm", "ctrl_c"])
def test_a_signal_swallowed_by_a_finalizer_still_stops_the_run(tmp_path: Path, signum: int, status: int,
                                                               word: str) -> None:
    """The Terminated, or Ctrl-C's KeyboardInterrupt, raised in a __del__ was only printed ('Exception ignored in')
    and the run trained on to its end, exit status 0; it stops at the next step."""
    def signalled_in_a_finalizer(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        if model.training and trainer.step == 10:
            SignalsWhenCollected(signum)
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path, step=signalled_in_a_finalizer, epochs=3)
    r = run_script(trainer.run, "toy_train.py", [])
    assert (r.returncode, r.stderr.splitlines()[-1:]) == (
        status, [f"{word}; resume with: python3 toy_train.py --resume {tmp_path / 'ckpt'}/last.pt"])
    assert trainer.step == 11 and trainer.epoch == 1
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_nan_loss_names_the_last_good_checkpoint_or_that_none_was_written(tmp_path: Path) -> None:
    """A NaN loss stops the run saying where it can go on from: last.pt once an epoch saved it, else that none was
    written yet (not a last.pt that is not there)."""
    def nan_loss_from(first: int):
        def step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
            loss, metrics = squared_error(model, batch)
            return (loss * float("nan") if model.training and trainer.step >= first else loss), metrics
        return step

    for first, said in ((2, r"in epoch 1 after 2 steps; stopped, no checkpoint was written yet"),
                        (10, rf"in epoch 2 after 10 steps; stopped, the last good checkpoint is "
                             rf"{re.escape(str(tmp_path / '10' / 'ckpt' / 'last.pt'))} ")):
        trainer = toy_trainer(tmp_path / str(first), step=nan_loss_from(first), epochs=2)
        with pytest.raises(UserError, match=r"loss or gradient norm is \[nan, [-+.e0-9a-z]+\] " + said):
            trainer.fit()


def test_validation_shows_its_progress_bar_on_a_terminal(tmp_path: Path, monkeypatch) -> None:
    """The latent SDE's CRPS validation takes minutes: on a terminal it has a bar, as training has."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    toy_trainer(tmp_path).fit()
    assert "\rvalidation:   0%|" in sys.stderr.getvalue()


def test_validation_runs_in_float32_with_amp(tmp_path: Path) -> None:
    """With train.amp the validation ran under autocast too, while forecasts and vqvae_eval run the model in float32:
    best.pt was chosen by a slightly different model (a float16 encoder changed 0.7% of a VQ-VAE's codes). Training
    steps stay under autocast. AMP is a GPU setting; forced here on the CPU, whose autocast is bfloat16."""
    under = {True: [], False: []}

    def noted(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        under[model.training].append(torch.is_autocast_enabled("cpu"))
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path, step=noted)
    trainer.amp = True
    trainer.fit()
    assert under[True] == [True] * 8 and under[False] == [False] * 8


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")     # the swallowed one, printed
def test_a_signal_swallowed_in_validation_stops_it_at_the_next_batch(tmp_path: Path) -> None:
    """Validation asked for a swallowed signal only at the next training step: the whole split (the latent SDE's CRPS
    validation takes minutes) was validated first. It stops at the next of its 8 batches."""
    validated = []

    def signalled_in_validation(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        if not model.training:
            validated.append(len(batch[0]))
            if len(validated) == 1:
                SignalsWhenCollected()
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path, step=signalled_in_validation, epochs=2)
    r = run_script(trainer.run, "toy_train.py", [])
    assert r.returncode == 143 and r.stderr.splitlines()[-1].startswith("terminated; nothing was saved yet")
    assert validated == [8]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")     # the swallowed one, printed
@pytest.mark.parametrize("swallowed", [False, True], ids=["first_raised", "first_swallowed_by_a_finalizer"])
def test_a_second_sigterm_does_not_cut_the_first_ones_cleanup_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    swallowed: bool) -> None:
    """SLURM signals every process of a job and torchrun's agent forwards its own SIGTERM: the second one, landing
    while the first was handled, raised a bare Terminated and the resume command was lost ('terminated'). So too when
    the first landed in a finalizer (swallowed) and the trainer raised it again at its next step."""
    def terminated_at_step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        if model.training and trainer.step == 10:
            SignalsWhenCollected() if swallowed else os.kill(os.getpid(), signal.SIGTERM)
        return squared_error(model, batch)

    trainer = toy_trainer(tmp_path, step=terminated_at_step, epochs=2)
    hint = trainer.resume_hint

    def signalled_again(*args) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        return hint(*args)

    monkeypatch.setattr(trainer, "resume_hint", signalled_again)
    r = run_script(trainer.run, "toy_train.py", [])
    said = r.stderr.splitlines()        # after Python's 'Exception ignored in' lines for the swallowed one
    assert (r.returncode, said[-1:]) == (
        143, [f"terminated; resume with: python3 toy_train.py --resume {tmp_path / 'ckpt'}/last.pt"])
    assert swallowed or len(said) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and trainer.step == (11 if swallowed else 10)


@pytest.mark.parametrize("model, bits", [({}, 80), ({"num_quantizers": 2, "window_gain": True}, 166)],
                         ids=["one_codebook", "two_codebooks_and_gains"])
def test_compression_line_gives_the_bit_rate(tmp_path: Path, synthetic_db: Path, model: dict, bits: int) -> None:
    """The tiny model sends 64 / 4 = 16 codes a second of 5 bits (32 codes) per codebook, and with window_gain
    the two leads' 6-bit gains of each 2 s window (context and forecast): 80 bit/s, or 2 x 80 + 12 / 2 = 166."""
    setup = tiny_setup(tmp_path, synthetic_db, model=model)
    cfg = load_config(setup["config"])
    line = vqvae_train.compression_line(VQVAE(cfg.model), cfg, ["102"], setup["prepared"])
    assert line.endswith(f"against 64 Hz samples), {bits} bit/s") and "against the 360 Hz 12-bit records" in line


def test_compression_line_says_when_the_records_bits_are_assumed(tmp_path: Path, synthetic_db: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A meta.json prepared before it kept the records' bits: MIT-BIH's 11 are counted, and the line says so."""
    setup = tiny_setup(tmp_path, synthetic_db)
    cfg = load_config(setup["config"])
    monkeypatch.setattr(vqvae_train, "source_samples", lambda records, prepared: SourceSamples.uniform(360.0))
    line = vqvae_train.compression_line(VQVAE(cfg.model), cfg, ["102"], setup["prepared"])
    assert "against the 360 Hz 11-bit (assumed) records" in line and line.endswith("80 bit/s")


def test_compression_line_tells_records_of_several_rates_and_samples_a_frame_as_they_are(
        tmp_path: Path, synthetic_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line said 'against the 476.667 Hz 13.0-bit records' of records at 360 and 500 Hz, and 'the 250 Hz 44-bit
    records' of '212x4' leads: records that differ get their bit rate a lead and the ranges; '212x4' leads alike
    their 11-bit samples at 1000 Hz."""
    setup = tiny_setup(tmp_path, synthetic_db)
    cfg = load_config(setup["config"])
    for held, said in ((SourceSamples(1220 / 3, (360.0, 500.0), 15920 / 1220, (11.0, 16.0)),
                        "against the records (5,307 bit/s a lead on average: 11- to 16-bit samples at 360 to 500 Hz; "
                        "20.9 against 64 Hz samples), 80 bit/s"),
                       (SourceSamples(305.0, (250.0, 360.0)),
                        "against the records (3,355 bit/s a lead on average: 11-bit (assumed) samples at 250 to "
                        "360 Hz; 17.6 against 64 Hz samples), 80 bit/s"),
                       (SourceSamples.uniform(1000.0, 11.0),
                        "against the 1000 Hz 11-bit records (17.6 against 64 Hz samples), 80 bit/s")):
        monkeypatch.setattr(vqvae_train, "source_samples", lambda records, prepared, held=held: held)
        line = vqvae_train.compression_line(VQVAE(cfg.model), cfg, ["102"], setup["prepared"])
        assert line.endswith(said), line


@pytest.mark.parametrize("losses, val_offset, scale", [([2.0, 0.5, 0.1], 0.1, "log"), ([2.0, -0.5, -1.5], 0.1, "linear"),
                                                       ([2.0, 0.5, 0.1], -0.2, "linear"), ([6.6, 6.0, 5.7], 0.1, "linear")])
def test_loss_curves_keep_every_epoch_of_a_loss_below_zero(tmp_path: Path, monkeypatch, losses, val_offset,
                                                          scale) -> None:
    """A latent SDE's ELBO turns negative as its learned noise shrinks, the training or only the validation one; a
    log axis would leave those epochs out. A loss within a decade (a Transformer's cross-entropy, 5.7-6.7) reads
    on a linear axis, not as 6 x 10^0."""
    log = train_results.MetricsLog(tmp_path / "metrics.csv")
    for epoch, loss in enumerate(losses, 1):
        log.append({"epoch": epoch, "train_loss": loss, "val_loss": loss + val_offset})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    train_results.plot_loss_curves(log, tmp_path / "loss_curves.png")
    ax = figures[0].axes[0]
    assert ax.get_yscale() == scale and [list(line.get_ydata()) for line in ax.lines][0] == losses
    assert (tmp_path / "loss_curves.png").exists()


def test_a_long_forecast_stacks_its_leads_on_a_wider_figure():
    """Side by side, a 30 s forecast's beats run together; stacked, each lead gets the figure's width."""
    fig, axes = train_results.forecast_axes(1, 6.0)
    assert axes.shape == (1, 2) and fig.get_figwidth() == 13
    assert axes[0, 0].get_subplotspec().rowspan == axes[0, 1].get_subplotspec().rowspan     # side by side
    fig, axes = train_results.forecast_axes(2, 33.0)
    assert axes.shape == (2, 2) and fig.get_figwidth() == 30
    rows = [ax.get_subplotspec().rowspan.start for ax in axes.flat]
    assert rows == [0, 1, 2, 3]                                                           # one row per lead
    plt.close("all")


def test_a_vqvae_run_trains_on_fresh_crops_of_the_training_windows_and_validates_on_whole_validation_ones(
        tmp_path: Path, synthetic_db: Path, monkeypatch) -> None:
    """What vqvae_train hands the trainer: crops of a context's length from the training windows, at every offset
    and anew each epoch from the run's seed; the validation patients' whole windows for validation and the plots
    (on rank 0 only, the codebook statistics on every rank); the training windows' scale; the seed recorded; a
    seeded start whatever the global RNG."""
    setup = tiny_setup(tmp_path, synthetic_db)
    argv = flags(setup, "--device", "cpu", "--seed", "5")
    torch.manual_seed(1)
    run = trainer_inputs(monkeypatch, vqvae_train, argv)
    cfg = load_config(setup["config"])
    train, val = (load_split(s, cfg, setup["prepared"]) for s in ("train", "validation"))
    crops, length = run["train_set"], cfg.data.window_samples
    span = cfg.data.total_samples - length

    def offsets(epoch: int) -> list[int]:
        crops.set_epoch(epoch)
        return [next(o for o in range(span + 1) if torch.equal(crops[i], train["signals"][i, o:o + length]))
                for i in range(len(crops))]
    assert len(crops) == len(train["signals"]) and crops[0].shape == (length, 2)
    first = offsets(0)
    assert first != offsets(1) and set(first + offsets(1) + offsets(2)) == set(range(span + 1))
    assert crops.seed == 5 and run["meta"]["seed"] == run["settings"].seed == 5
    assert torch.equal(torch.stack(list(run["val_set"])), val["signals"])
    assert torch.equal(run["model"].scale, train["scale_mv"].float()) and run["summarize"] is vqvae_train.summarize
    plotted = []
    monkeypatch.setattr(vqvae_train, "plot_fixed_windows", lambda m, windows, *a: plotted.append((windows, a)))
    assert "perplexity" in run["epoch_end"](run["model"], 1, False) and not plotted
    run["epoch_end"](run["model"], 1, True)
    assert torch.equal(plotted[0][0], train_results.fixed_windows(val, 2))
    assert plotted[0][1][-1] == train_results.fixed_titles(val, 2, setup["prepared"])     # each panel: its record
    torch.manual_seed(2)
    again = trainer_inputs(monkeypatch, vqvae_train, argv)["model"].state_dict()
    assert all(torch.equal(v, again[k]) for k, v in run["model"].state_dict().items())


def test_vqvae_step_scores_prd_against_the_signal_and_prdn_against_each_windows_own_mean() -> None:
    """step_fn and summarize: MSE of the reconstruction in mV², PRD against the signal's energy, PRDN against its
    variance about each window's and lead's own mean (a baseline offset is no signal), both in percent."""
    x = torch.zeros(2, 8, 2)
    x[:, ::2] = 1.0                       # a square wave about 0.5 ...
    x[1] += 10.0                          # ... and one window offset by 10 mV
    x_hat = x + 0.1

    class Fixed(nn.Module):
        def forward(self, x):
            one = torch.ones(1)
            return x_hat, {"loss": one, "recon": one, "commitment": one, "perplexity": one}
    _, m = vqvae_train.step_fn(Fixed(), x)
    assert m["mse_mv2"] == pytest.approx(0.01, rel=1e-5) and m["deviation_mv2"] == pytest.approx(0.25)
    assert m["signal_mv2"] == pytest.approx((x ** 2).mean().item())
    row = vqvae_train.summarize({f"val_{k}": float(v) for k, v in m.items()})
    assert row["val_prdn"] == pytest.approx(100 * (0.01 / 0.25) ** 0.5, rel=1e-5)
    assert row["val_prd"] == pytest.approx(100 * (0.01 / (x ** 2).mean().item()) ** 0.5, rel=1e-5)


def test_plotting_the_fixed_windows_leaves_the_codebooks_alone(tmp_path: Path, monkeypatch) -> None:
    """The reconstruction plots run the validation windows through the model in eval mode: in training mode they
    would set up and update the codebooks from validation patients (before training: initialise them)."""
    torch.manual_seed(0)
    model = VQVAE(config_from_dict(TINY).model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(vqvae_train, "plot_windows", lambda *a: None)
    vqvae_train.plot_fixed_windows(model, torch.randn(3, 64, 2), 64, tmp_path / "r.png", "t")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_resume_without_its_run_folder_starts_a_new_one(tmp_path: Path) -> None:
    """shared_run_dirs: a resumed run writes into its own folders while its run folder exists; a checkpoint moved
    to a machine without it gets new folders, not a metrics.csv in a folder that is not there."""
    from training import Runtime

    args = SimpleNamespace(results=str(tmp_path / "results"), checkpoints=str(tmp_path / "checkpoints"),
                           resume=str(tmp_path / "last.pt"))
    rt = Runtime(torch.device("cpu"))
    (tmp_path / "old").mkdir()
    own = {"run_dir": str(tmp_path / "old"), "ckpt_dir": str(tmp_path / "old_ck")}
    assert training.shared_run_dirs(args, rt, own, "vqvae") == (tmp_path / "old", tmp_path / "old_ck")
    moved = {"run_dir": str(tmp_path / "gone"), "ckpt_dir": str(tmp_path / "gone_ck"), "kind": "vqvae"}
    run, ckpt = training.shared_run_dirs(args, rt, moved, "vqvae")
    assert run.is_dir() and run.parent == tmp_path / "results" and ckpt == tmp_path / "checkpoints" / run.name


def test_check_run_roots_proves_both_roots_of_a_new_run_and_leaves_nothing_made(tmp_path: Path) -> None:
    """check_run_roots: a new run's --results and --checkpoints are each proven writable (a checkpoints root that
    takes no folder is named before the encoding, not after it), the roots made for the proof go again, and a run
    resumed in its own folders is not refused for roots it ignores."""
    from training import Runtime

    rt = Runtime(torch.device("cpu"))
    new = SimpleNamespace(results=str(tmp_path / "r" / "results"), checkpoints=str(tmp_path / "c" / "checkpoints"))
    training.check_run_roots(new, rt, None)
    assert list(tmp_path.iterdir()) == []
    bad = tmp_path / ("x" * 300)
    with pytest.raises(UserError, match=re.escape(f"cannot write to the output folder {bad}: File name too long")):
        training.check_run_roots(SimpleNamespace(results=new.results, checkpoints=str(bad)), rt, None)
    (tmp_path / "own").mkdir()
    own = {"run_dir": str(tmp_path / "own"), "ckpt_dir": str(tmp_path / "own_ck")}
    training.check_run_roots(SimpleNamespace(results=str(bad), checkpoints=str(bad)), rt, own)
    assert [p.name for p in tmp_path.iterdir()] == ["own"]


def test_a_resume_says_that_results_and_checkpoints_roots_other_than_its_own_are_ignored(tmp_path: Path,
                                                                                        capsys) -> None:
    """shared_run_dirs: a resumed run keeps its own folders, so --results or --checkpoints naming other roots is said
    to be ignored (nothing is made there); the run's own roots given again, as a script repeats its flags, are not."""
    from training import Runtime

    rt = Runtime(torch.device("cpu"))
    (tmp_path / "results" / "vqvae-1").mkdir(parents=True)
    own = {"run_dir": str(tmp_path / "results" / "vqvae-1"), "ckpt_dir": str(tmp_path / "checkpoints" / "vqvae-1")}
    same = SimpleNamespace(results=str(tmp_path / "results"), checkpoints=str(tmp_path / "checkpoints"))
    assert training.shared_run_dirs(same, rt, own, "vqvae") == (Path(own["run_dir"]), Path(own["ckpt_dir"]))
    assert "ignored" not in capsys.readouterr().err
    other = SimpleNamespace(results=str(tmp_path / "r2"), checkpoints=str(tmp_path / "c2"))
    assert training.shared_run_dirs(other, rt, own, "vqvae") == (Path(own["run_dir"]), Path(own["ckpt_dir"]))
    err = capsys.readouterr().err
    assert f"--results {tmp_path / 'r2'} is ignored: the resumed run goes on in its own folder, {own['run_dir']}" in err
    assert f"--checkpoints {tmp_path / 'c2'} is ignored" in err and own["ckpt_dir"] in err
    assert not (tmp_path / "r2").exists() and not (tmp_path / "c2").exists()


def test_vqvae_train_refuses_several_gpus_in_one_process(monkeypatch, tmp_path: Path) -> None:
    """main checks the runtime before anything is read or written: DataParallel would lose the codebook statistics."""
    from training import Runtime

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(vqvae_train, "setup_runtime", lambda device: Runtime(torch.device("cuda")))
    with pytest.raises(UserError, match="DataParallel"):
        vqvae_train.main(["--prepared", str(tmp_path / "none"), "--results", str(tmp_path / "r"),
                          "--checkpoints", str(tmp_path / "c")])
    assert not any(tmp_path.iterdir())


def test_metrics_log_adds_a_new_column_and_writes_six_significant_digits(tmp_path: Path) -> None:
    """A resumed run may log a column the first run had not (or lack one): the column is added, blank in the earlier
    rows (it was dropped for the rest of the run), rows stay under their columns, and every float is written to 6
    significant digits."""
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "train_loss": 0.123456789, "val_loss": 2.0})
    log.append({"epoch": 2, "val_loss": 1234567.0, "val_new": 3.0, "train_loss": 1e-7})
    log.append({"epoch": 3, "val_loss": 0.5})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,train_loss,val_loss,val_new", "1,0.123457,2,", "2,1e-07,1.23457e+06,3", "3,,0.5,"]


def test_digest_of_the_frozen_weights_follows_every_parameter_and_buffer() -> None:
    """Cached encodings are keyed by weights_digest: it must change with any parameter or buffer (the VQ-VAE's
    codebooks and scale are buffers), and only with them."""
    torch.manual_seed(0)
    vq = VQVAE(config_from_dict(TINY).model)
    digest = train_results.weights_digest(vq)
    same = VQVAE(config_from_dict(TINY).model)
    same.load_state_dict(vq.state_dict())
    assert train_results.weights_digest(same) == digest and len(digest) == 16
    for name in ("scale", next(n for n, _ in vq.named_parameters())):
        changed = VQVAE(config_from_dict(TINY).model)
        changed.load_state_dict(vq.state_dict())
        weight = changed.get_buffer(name) if name == "scale" else changed.get_parameter(name)
        with torch.no_grad():
            weight.add_(1)
        assert train_results.weights_digest(changed) != digest, name


def test_plotted_windows_are_spread_over_the_split_from_its_first_to_its_last() -> None:
    """The plots follow the same windows every epoch, spread over all the split's records, not its first one's."""
    split = {"signals": torch.arange(10.0)[:, None, None].expand(10, 3, 2)}
    assert train_results.fixed_windows(split, 4)[:, 0, 0].tolist() == [0, 3, 6, 9]
    assert len(train_results.fixed_windows(split, 0)) == 0
    # more windows asked than the split has: each once (plot_windows 1000 drew 1000 rows of ten windows repeated)
    assert train_results.fixed_windows(split, 25)[:, 0, 0].tolist() == list(range(10))


def test_epoch_plots_name_the_record_time_and_lead_of_each_window(tmp_path: Path, monkeypatch) -> None:
    """A training run's epoch plots title each panel with its window's record, start and lead (meta.json), as
    vqvae_eval's do, so a forecast that goes wrong can be looked up."""
    (tmp_path / "meta.json").write_text(json.dumps({"records": {"109": {"leads": ["MLII", "V1"]}}}))
    split = {"signals": torch.zeros(5, 8, 2), "records": ["109", "122"], "record": torch.tensor([0, 0, 0, 1, 1]),
             "start": torch.tensor([0, 128, 256, 0, 384]), "fs": 128}
    assert train_results.fixed_titles(split, 2, str(tmp_path)) == [
        ("record 109 at 0 s, lead 1: MLII", "record 109 at 0 s, lead 2: V1"),
        ("record 122 at 3 s, lead 1", "record 122 at 3 s, lead 2")]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    titles = [("a1", "a2"), ("b1", "b2")]
    train_results.plot_forecasts(np.zeros((2, 12, 2)), np.zeros((2, 3, 4, 2)), 4, 8, tmp_path / "f.png", "t",
                                 titles=titles)
    assert [ax.get_title() for ax in figures[0].axes] == ["a1", "a2", "b1", "b2"]


@pytest.mark.parametrize("loss_name", ["negative ELBO per latent number (nats; training: KL weight annealed)",
                                       "reconstruction MSE + commitment (normalised units)", "loss"])
def test_loss_curves_show_the_whole_name_of_the_loss(tmp_path: Path, monkeypatch, loss_name: str) -> None:
    """The trainers' loss names ran past the 4 in figure's edge: the latent SDE's read 'negative ELBO per latent
    number (nats, KL weight anne', the VQ-VAE's lost its 'units)'. The label is wrapped to fit, every word kept."""
    log = train_results.MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2):
        log.append({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    train_results.plot_loss_curves(log, tmp_path / "loss_curves.png", loss_name)
    fig = figures[0]
    fig.canvas.draw()
    label = fig.axes[0].yaxis.label
    box = label.get_window_extent()
    assert label.get_text().split() == loss_name.split()
    assert 0 <= box.y0 and box.y1 <= fig.bbox.height and 0 <= box.x0, (box, fig.bbox)


def legend_boxes_over_panels(fig: plt.Figure) -> list:
    """The (legend, axes) pairs whose boxes overlap on the drawn figure: a legend there hides data."""
    fig.canvas.draw()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [(leg.get_texts()[0].get_text(), ax.get_title()) for leg in legends for ax in fig.axes
            if leg.get_window_extent().overlaps(ax.get_window_extent())]


@pytest.mark.parametrize("n", [1, 3])
def test_reconstruction_legend_hides_no_trace(tmp_path: Path, monkeypatch, n: int) -> None:
    """The reconstructions' legend sat inside the top right panel, over its last beat (vqvae_eval.py --record's
    PNG and every reconstruction_epoch_*.png): it is below the panels now, inside the figure."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    windows = np.sin(np.linspace(0, 40, 384))[None, :, None].repeat(n, 0).repeat(2, 2)
    train_results.plot_windows(windows, 0.9 * windows, 128, tmp_path / "w.png", "t")
    fig = figures[0]
    assert legend_boxes_over_panels(fig) == []
    [legend] = fig.legends
    box = legend.get_window_extent()
    assert [t.get_text() for t in legend.get_texts()] == ["original", "reconstruction"]
    assert 0 <= box.y0 and box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, fig.bbox)


def test_window_and_forecast_plots_read_in_seconds_and_millivolts(tmp_path: Path, monkeypatch) -> None:
    """Reconstructions: time in seconds from the window start; forecasts: in record seconds from `start_s`, the
    truth and the forecast over the horizon after the context, the forecast line the mean of the paths, the sample
    line the first path; every trace in mV as given."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    fs, context, horizon = 64, 32, 16
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((1, context + horizon, 2))
    train_results.plot_windows(windows, 2 * windows, fs, tmp_path / "w.png", "t")
    ax = figures[0].axes[1]                                     # lead 2
    original, other = ax.lines
    np.testing.assert_allclose(original.get_xdata(), np.arange(context + horizon) / fs)
    np.testing.assert_array_equal(other.get_ydata(), 2 * windows[0, :, 1])
    assert ax.get_ylabel() == "mV" and ax.get_xlabel() == "time from window start (s)"   # titles give the start
    samples = rng.standard_normal((1, 5, horizon, 2))
    train_results.plot_forecasts(windows, samples, fs, context, tmp_path / "f.png", "t", start_s=100.0)
    lines = {line.get_label(): line for line in figures[1].axes[1].lines}
    t = 100.0 + np.arange(context + horizon) / fs
    np.testing.assert_allclose(lines["context"].get_xdata(), t[:context])
    np.testing.assert_array_equal(lines["context"].get_ydata(), windows[0, :context, 1])
    for label, want in (("truth", windows[0, context:, 1]), ("forecast (mean)", samples[0, :, :, 1].mean(0)),
                        ("one sample", samples[0, 0, :, 1])):
        np.testing.assert_allclose(lines[label].get_xdata(), t[context:])
        np.testing.assert_allclose(lines[label].get_ydata(), want)


def test_truth_and_forecast_differ_in_width_not_only_in_colour(tmp_path: Path, monkeypatch) -> None:
    """Truth (black) and forecast (red), both 1.0 wide, were one grey line printed in greyscale: in forecast.py's
    PNG, the galleries, the trainers' epoch plots and the reconstructions alike. The truth is thick now, the forecast
    thin and solid over it, the legend drawing each as the panels do; one sample stays thinner than the forecast."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    fs, context, horizon = 64, 32, 16
    windows = np.random.default_rng(0).standard_normal((1, context + horizon, 2))
    samples = np.random.default_rng(1).standard_normal((1, 5, horizon, 2))
    train_results.plot_forecasts(windows, samples, fs, context, tmp_path / "f.png", "t")
    train_results.plot_forecasts(windows, samples[:, :1], fs, context, tmp_path / "f1.png", "t")
    train_results.plot_windows(windows, 2 * windows, fs, tmp_path / "w.png", "t")
    for fig, (truth, forecast) in zip(figures, [("truth", "forecast (mean)"), ("truth", "forecast"),
                                                ("original", "reconstruction")]):
        for ax in fig.axes:
            lines = {ln.get_label(): ln for ln in ax.lines}
            assert lines[truth].get_linewidth() >= 1.5 * lines[forecast].get_linewidth()
            assert lines[truth].get_linestyle() == lines[forecast].get_linestyle() == "-"
            assert lines[truth].get_color() != lines[forecast].get_color()      # and still in colours of their own
            assert lines[forecast].get_zorder() > lines[truth].get_zorder()
            if "one sample" in lines:
                assert lines["one sample"].get_linewidth() < lines[forecast].get_linewidth()
        legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
        assert legend[truth].get_linewidth() >= 1.5 * legend[forecast].get_linewidth()


def test_one_diverged_path_does_not_squash_the_forecast_panels(tmp_path: Path, monkeypatch) -> None:
    """A latent SDE path that blew up to 80 mV, drawn as the one sample (and pulling the mean), set every forecast
    panel's y-axis to 80 mV: the beats of context, truth and bands were a flat line at its bottom. The limits follow
    the context, the truth and the 80% band now; a lone forecast path still counts whole, and a record's NaN-padded
    truth (forecast.py past the record's end) is left out."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    fs, context, horizon = 64, 64, 64
    rng = np.random.default_rng(0)
    windows = np.sin(np.arange(context + horizon) / 5.0)[None, :, None].repeat(2, 2)
    samples = windows[:, None, context:] + 0.1 * rng.standard_normal((1, 20, horizon, 2))
    samples[0, 0] = 80.0
    windows[0, -5:] = np.nan
    train_results.plot_forecasts(windows, samples, fs, context, tmp_path / "f.png", "t")
    train_results.plot_forecasts(windows, samples[:, :1], fs, context, tmp_path / "f1.png", "t")
    for ax in figures[0].axes:
        low, high = ax.get_ylim()
        assert -1.5 < low < -1.0 and 1.0 < high < 1.5, (low, high)
    assert all(ax.get_ylim()[1] > 80 for ax in figures[1].axes)     # the only forecast: drawn in full


def test_forecast_panels_keep_the_truth_beyond_the_band_and_a_flat_trace_a_band(tmp_path: Path, monkeypatch) -> None:
    """robust_ylim takes the context and the truth: a truth beat above every forecast path (the paths near 0) stays
    in the panel, not cut at the band's edge; a flat trace (the zero forecast of a silent lead) keeps a band of 0.1
    mV either side, not matplotlib's 'identical low and high ylims' warning."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    fs, context, horizon = 64, 64, 64
    windows = np.zeros((1, context + horizon, 2))
    windows[0, :context] = np.sin(np.arange(context) / 5.0)[:, None]
    windows[0, context + 10] = 3.0
    train_results.plot_forecasts(windows, np.zeros((1, 20, horizon, 2)), fs, context, tmp_path / "f.png", "t")
    assert all(ax.get_ylim()[1] > 3.0 for ax in figures[0].axes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_results.plot_forecasts(np.zeros((1, context + horizon, 2)), np.zeros((1, 20, horizon, 2)), fs, context,
                                     tmp_path / "z.png", "t")
    assert all(ax.get_ylim() == pytest.approx((-0.1, 0.1)) for ax in figures[1].axes)


def test_augment_copies_at_the_ceiling_are_taken_by_the_flag_as_by_the_config() -> None:
    """--augment-copies 16 is augment.copies' ceiling itself: the flag takes it as the config does, and 17 not."""
    args = SimpleNamespace(seed=None, augment_copies=16)
    training.check_run_flags(args)
    with pytest.raises(paths.UserError, match=r"^--augment-copies must be <= 16 .* got 17$"):
        training.check_run_flags(SimpleNamespace(seed=None, augment_copies=17))


def test_the_key_below_the_panels_is_as_large_as_the_axis_labels(tmp_path: Path, monkeypatch) -> None:
    """The legends below the reconstructions and forecasts were 8 pt, the smallest text on a 12-13 in figure and
    unreadable once it is shown at a report's width; they are as large as the axis labels now."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    windows = np.random.default_rng(0).standard_normal((1, 48, 2))
    train_results.plot_windows(windows, 2 * windows, 16, tmp_path / "w.png", "t")
    train_results.plot_forecasts(windows, np.zeros((1, 5, 16, 2)), 16, 32, tmp_path / "f.png", "t")
    for fig in figures:
        label = fig.axes[0].yaxis.label.get_fontsize()
        assert [t.get_fontsize() >= label for t in fig.legends[0].get_texts()] == [True] * len(fig.legends[0].texts)


def test_both_forecaster_trainers_plot_their_epochs_alike_from_the_forecast_start(tmp_path: Path, monkeypatch) -> None:
    """The Transformer's epoch plots said '(20 samples)' and the latent SDE's '(20 sampled paths)' of the same
    thing, and both counted time from the window's start (the forecast at 1 s) beside a title giving the window's
    start in record time. Both now say it alike and count from the forecast start, the context negative, under
    titles giving that start in record time, as evaluate.py's galleries do."""
    (tmp_path / "meta.json").write_text(json.dumps({"records": {"109": {"leads": ["MLII", "V1"]}}}))
    fs, context, horizon = 16, 16, 8
    val = {"signals": torch.randn(3, context + horizon, 2), "records": ["109"], "fs": fs,
           "record": torch.zeros(3, dtype=torch.long), "start": torch.tensor([0, 160, 320])}

    def predict(x: np.ndarray, h: int, num_samples: int, seed: int) -> np.ndarray:
        return np.zeros((len(x), num_samples, h, 2), np.float32)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    monkeypatch.setattr(transformer_train, "Forecaster", lambda *a, **k: SimpleNamespace(predict=predict))
    tcfg = SimpleNamespace(train=SimpleNamespace(plot_windows=2), sample=None, model=SimpleNamespace(draft_beats=False))
    cfg = SimpleNamespace(data=SimpleNamespace(window_samples=context))
    transformer_train.forecast_plotter(None, cfg, tcfg, val, tmp_path, torch.device("cpu"), str(tmp_path))(
        nn.Linear(1, 1), 1, True)
    fixed = train_results.fixed_windows(val, 2).numpy()
    epoch_end = latent_sde_train.plotting_epoch_end(fixed, context, tmp_path,
                                                    lambda m: SimpleNamespace(predict=predict, fs=fs), "latent SDE",
                                                    train_results.fixed_titles(val, 2, str(tmp_path), context))
    epoch_end(nn.Linear(1, 1), 1, True)
    # alike but for the model's name: the two runs' plots look the same and were titled the same
    assert [fig.get_suptitle() for fig in figures] == ["Transformer, epoch 1: validation forecasts (20 sampled paths)",
                                                       "latent SDE, epoch 1: validation forecasts (20 sampled paths)"]
    for fig in figures:
        assert [ax.get_title() for ax in fig.axes[:3]] == [
            "record 109, lead 1: MLII, forecast from 1 s", "record 109, lead 2: V1, forecast from 1 s",
            "record 109, lead 1: MLII, forecast from 21 s"]
        assert fig.axes[-1].get_xlabel() == "time from forecast start (s)"
        lines = {line.get_label(): line for line in fig.axes[0].lines}
        np.testing.assert_allclose(lines["context"].get_xdata(), np.arange(-context, 0) / fs)
        np.testing.assert_allclose(lines["truth"].get_xdata(), np.arange(horizon) / fs)

def test_codebook_health_is_plotted_per_codebook_and_epoch(tmp_path: Path, monkeypatch) -> None:
    """codebook_health.png: a line per residual codebook in each of perplexity, usage (%) and restarts, from
    metrics.csv, each codebook with a marker of its own (they differed in colour only); a run without codebooks (the
    forecasters') gets none."""
    log = train_results.MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2):
        log.append({"epoch": epoch, "val_loss": 1.0, "perplexity": 100.0 * epoch, "usage": 0.5, "restarted": 3,
                    "perplexity_2": 50.0, "usage_2": 0.25, "restarted_2": 0})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    train_results.plot_codebook_health(log, tmp_path / "h.png")
    perplexity, usage, restarted = figures[0].axes
    assert [ln.get_label() for ln in perplexity.lines] == ["codebook 1", "codebook 2"]
    assert perplexity.lines[0].get_marker() != perplexity.lines[1].get_marker()     # apart in greyscale too
    assert list(perplexity.lines[0].get_ydata()) == [100.0, 200.0] and list(usage.lines[1].get_ydata()) == [25.0, 25.0]
    assert list(restarted.lines[0].get_ydata()) == [3.0, 3.0] and list(restarted.lines[0].get_xdata()) == [1, 2]
    plain = train_results.MetricsLog(tmp_path / "plain.csv")
    plain.append({"epoch": 1, "val_loss": 1.0})
    train_results.plot_codebook_health(plain, tmp_path / "none.png")
    assert len(figures) == 1 and not (tmp_path / "none.png").exists()


def test_codebook_health_with_no_restarts_counts_from_zero_in_whole_codes(tmp_path: Path, monkeypatch) -> None:
    """A run that restarted no code drew its restarts on an axis from -0.04 to 0.04: each panel starts at 0 now,
    and the restarts' ticks are whole numbers."""
    log = train_results.MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2):
        log.append({"epoch": epoch, "val_loss": 1.0, "perplexity": 300.0 / epoch, "usage": 0.9 / epoch, "restarted": 0})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    train_results.plot_codebook_health(log, tmp_path / "h.png")
    perplexity, usage, restarted = figures[0].axes
    assert [ax.get_ylim()[0] for ax in figures[0].axes] == [0, 0, 0]
    assert perplexity.get_ylim()[1] >= 300 and usage.get_ylim()[1] >= 90
    ticks = [t for t in restarted.get_yticks() if restarted.get_ylim()[0] <= t <= restarted.get_ylim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_plots_after_the_first_epoch_tick_whole_epochs(tmp_path: Path, monkeypatch) -> None:
    """After one epoch (and at the end of a one-epoch run) the loss curves and codebook health read epochs 0.945,
    0.96, ..., 1.05: the integer locator fell back to fractions with fewer than two whole numbers in view."""
    log = train_results.MetricsLog(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "perplexity": 300.0, "usage": 0.9, "restarted": 2})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    train_results.plot_loss_curves(log, tmp_path / "loss.png")
    train_results.plot_codebook_health(log, tmp_path / "h.png")
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1.0], ax.get_ylabel()
    lo, hi = figures[1].axes[2].get_ylim()
    assert all(float(t).is_integer() for t in figures[1].axes[2].get_yticks() if lo <= t <= hi)


def test_codebook_health_plots_a_column_added_on_resume_from_the_epoch_it_starts(tmp_path: Path, monkeypatch) -> None:
    """MetricsLog.append adds a column a resumed run logs that the file lacks, blank in the earlier rows: the plot
    leaves those epochs out of its line (NaN), where float('') stopped the run's _save with a ValueError."""
    log = train_results.MetricsLog(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "val_loss": 1.0})
    log.append({"epoch": 2, "val_loss": 0.5, "perplexity": 80.0, "usage": 0.5, "restarted": 2})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    train_results.plot_codebook_health(log, tmp_path / "h.png")
    perplexity, usage, _ = figures[0].axes
    np.testing.assert_array_equal(perplexity.lines[0].get_ydata(), [np.nan, 80.0])
    np.testing.assert_array_equal(usage.lines[0].get_ydata(), [np.nan, 50.0])


def readme_model(tmp_path: Path, synthetic_db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, ModuleType]:
    """The tiny setup's flags and the README's my_model.py, written as given and imported as evaluate.py imports it."""
    import own_forecaster

    setup = tiny_setup(tmp_path, synthetic_db)
    raw = json.loads(Path(setup["config"]).read_text())
    Path(setup["config"]).write_text(json.dumps({"data": raw["data"], "train": raw["train"], "model": {"hidden": 8}}))
    mine = tmp_path / "my_model.py"
    mine.write_text(readme_block("class MyForecaster"))
    monkeypatch.setattr(sys, "argv", ["my_model.py"])
    return setup, own_forecaster.load_file(mine)


def readme_block(needle: str) -> str:
    """The README's python code block that holds `needle`, as written there."""
    blocks = (ROOT / "README.md").read_text().split("```python\n")[1:]
    (found,) = [b.split("\n```")[0] for b in blocks if needle in b]
    return found


def test_the_readmes_model_of_ones_own_trains_resumes_and_is_scored_by_evaluate(
        tmp_path: Path, synthetic_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README "Training your own model": its my_model.py, run exactly as written on tiny data, trains with
    metrics.csv and checkpoints, resumes, and loads as FILE.py:NAME=CHECKPOINT in evaluate.py, knowing its
    patients (the example stopped in ForecasterBase.from_run's KeyError: 'vqvae' before)."""
    import evaluate

    setup, module = readme_model(tmp_path, synthetic_db, monkeypatch)
    row = module.main(flags(setup, "--device", "cpu"))
    run = _only_run(tmp_path / "results")
    ckpts = tmp_path / "checkpoints" / run.name
    assert row["epoch"] == 2 and [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2"]
    assert (run / "loss_curves.png").is_file() and (ckpts / "best.pt").is_file()
    assert module.main(["--resume", str(ckpts / "last.pt"), "--epochs", "3", "--prepared", setup["prepared"],
                        "--device", "cpu"])["epoch"] == 3
    fc = evaluate.make_forecaster(f"{tmp_path / 'my_model.py'}:MyForecaster={ckpts / 'best.pt'}", 64, "cpu")
    assert (fc.name, fc.train_records, fc.validation_records) == ("gru", ["102", "103", "104", "105"], ["101"])
    context = np.random.default_rng(0).standard_normal((3, 64, 2)).astype(np.float32) * 0.3
    out = fc.predict(context, 40, num_samples=5)
    assert out.shape == (3, 1, 40, 2) and out.dtype == np.float32 and np.isfinite(out).all()


def test_augment_copies_0_is_taken_as_no_augmentation() -> None:
    """--augment-copies 0 is augmentation off (the config's augment.copies 0), not a bad number."""
    import argparse
    training.check_run_flags(argparse.Namespace(epochs=None, max_steps=None, batch_size=None, augment_copies=0,
                                                seed=None))


@pytest.mark.parametrize("module", [vqvae_train, transformer_train, latent_sde_train], ids=lambda m: m.__name__)
def test_every_trainers_help_says_how_to_run_on_several_processes(module: ModuleType) -> None:
    """Only vqvae_train.py's --help named torchrun: a user of the forecasters' trainers, told by README that every
    *_train.py scales under torchrun, found no word of it, of the global batch or of resuming across process counts."""
    script = f"{module.__name__}.py"
    r = run_script(module.main, script, ["--help"])
    said = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stderr
    assert f"torchrun --standalone --nproc_per_node N {script} [flags as usual]" in said, said
    assert "--batch-size is the global batch, which N must divide" in said and "gloo" in said, said
    assert "resumes (--resume) under torchrun or in one process alike" in said, said


@pytest.mark.parametrize("batch, world, sizes", [(33, 2, "32 or 34"), (3, 4, "4"), (10, 4, "8 or 12")])
def test_a_batch_the_processes_cannot_share_names_the_flag_and_the_sizes_they_can(batch, world, sizes):
    """'train.batch_size=33 must be divisible by the 2 processes' named neither the flag that sets it nor a size
    that would do."""
    with pytest.raises(UserError, match=rf"^train\.batch_size={batch} \(--batch-size\) must be divisible by the "
                                        rf"{world} processes: pass --batch-size {sizes}$"):
        training.check_batch_split("train.batch_size", batch, world)
    training.check_batch_split("train.batch_size", batch * world, world)


def test_the_trainer_asks_whether_its_processes_can_share_the_batch(tmp_path, monkeypatch):
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    monkeypatch.setattr(training, "check_same_data", lambda *a: None)      # ranks that share no process group
    with pytest.raises(UserError, match=r"^train\.batch_size=9 \(--batch-size\) must be divisible by the 2 "):
        training.Trainer(nn.Linear(4, 1), data, data, squared_error, TrainConfig(epochs=1, batch_size=9),
                         tmp_path / "run", tmp_path / "ckpt", {}, {}, training.Runtime(torch.device("cpu"), 0, 2),
                         "toy")


def test_a_torchrun_restart_of_a_resume_goes_on_from_the_failed_attempts_last_pt(tmp_path, monkeypatch, capsys):
    """torchrun --max-restarts runs `--resume epoch_002.pt` again after a worker failed: the restart went back to
    epoch 2, the failed attempt's epochs lost. A resume's run.json entry names the job's run id (written once it
    trained an epoch): the restart resumes that run's last.pt, and --resume's checkpoint only when none names it."""
    keys = ("command", "git_commit", "data_hash", "world_size", "device", "torch", "torch_threads", "started")
    trainer = toy_trainer(tmp_path / "toy", meta={**dict.fromkeys(keys, "x"), "torchrun_run_id": "job"})
    assert trainer.resumed_record("epoch_002.pt")["resumes"][-1]["torchrun_run_id"] == "job"
    run, ckpt = tmp_path / "results" / "vqvae-1", tmp_path / "checkpoints" / "vqvae-1"
    run.mkdir(parents=True)
    ckpt.mkdir(parents=True)
    (ckpt / "last.pt").write_bytes(b"")
    args = SimpleNamespace(resume=str(ckpt / "epoch_002.pt"), results=str(run.parent), checkpoints=str(ckpt.parent),
                           prepared=None)
    monkeypatch.setattr(training, "load_resume", lambda path, kind: {"loaded": path})
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    rank0 = SimpleNamespace(is_main=True, distributed=False)
    for resumes, want in (([{"torchrun_run_id": "earlier"}], ckpt / "epoch_002.pt"),
                          ([{"torchrun_run_id": "earlier"}, {"torchrun_run_id": "job"}], ckpt / "last.pt")):
        (run / "run.json").write_text(json.dumps({"torchrun_run_id": "first", "resumes": resumes}))
        args.resume = str(ckpt / "epoch_002.pt")
        assert training.run_resume(args, rank0, "vqvae") == {"loaded": str(want)}
    assert f"torchrun restart 1: resuming {ckpt / 'last.pt'}" in capsys.readouterr().err
