"""Training under real-world faults: torchrun with two processes, SIGKILL then --resume, NaN loss, a save that
dies half-way, and the training side of the bad-input matrix (one 'error:' line, exit 2, outputs untouched).

Killed and distributed runs are real processes (tests/train_harness.py runs a script's unchanged main() with
test-only hooks patched in from outside); reference runs are in this process. Everything runs on one CPU
thread, so runs compare bit for bit.
"""
from __future__ import annotations

import contextlib
import gc
import multiprocessing
import csv
import hashlib
import importlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import torch

import running
import training
import vqvae_train
from conftest import ROOT, TORCHRUN_VARS, snapshot, write_record
from paths import UserError, file_sha256
from tiny import flags, tiny_setup
from train_results import load_checkpoint

HARNESS = str(ROOT / "tests" / "train_harness.py")
# read at import, before conftest's own_folders clears the caller's variables: the same ones left out here
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("ECG_") and k not in TORCHRUN_VARS},
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny config prepared from six synthetic records, shared by the module (read-only)."""
    base = tmp_path_factory.mktemp("tiny")
    for i, name in enumerate(["100", "101", "102", "103", "104", "105"]):
        write_record(base / "wfdb", name, seed=i)
    return tiny_setup(base / "setup", base / "wfdb")


def outputs(tiny: dict, folder: Path) -> dict:
    """The tiny setup with its own results and checkpoints roots below `folder`."""
    return dict(tiny, results=str(folder / "results"), checkpoints=str(folder / "checkpoints"))


def train(setup: dict, *extra: str) -> Path:
    """Train in this process; return the run's checkpoint folder."""
    vqvae_train.main(flags(setup, "--device", "cpu", *extra))
    return newest(Path(setup["checkpoints"]))


def newest(root: Path) -> Path:
    return max(root.iterdir(), key=lambda p: p.stat().st_mtime_ns)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "vqvae_train.py", "--device", "cpu", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def check_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2 and exactly one 'error:' line on stderr naming every needle, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def kill_when_paused(hook: list[str], args: list[str]) -> None:
    """Run the training in the harness, SIGKILL it the moment it reports PAUSED (a deterministic point)."""
    proc = subprocess.Popen([sys.executable, HARNESS, *hook, "vqvae_train", "--", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.strip() == "PAUSED":
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(timeout=120) == -signal.SIGKILL, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def epochs_logged(ckpt_dir: Path) -> list[str]:
    run = Path(torch.load(ckpt_dir / "last.pt", weights_only=True)["run_dir"])
    return [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())]


def flat_tensors(obj, prefix: str = "") -> dict:
    """Every tensor and number inside a nested checkpoint entry, by path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in flat_tensors(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in flat_tensors(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


def assert_same_training_state(a: dict, b: dict) -> None:
    """Weights, codebook, optimiser moments, schedule, step and RNG states: all bit for bit."""
    for key in ("model", "optimizer", "scheduler", "step", "rng"):
        fa, fb = flat_tensors(a[key]), flat_tensors(b[key])
        assert fa.keys() == fb.keys(), key
        for k in fa:
            same = torch.equal(fa[k], fb[k]) if isinstance(fa[k], torch.Tensor) else fa[k] == fb[k]
            assert same, f"{key}{k} differs"


# A dropout-free tiny forecaster: dropout masks are drawn per process, so only without dropout can two
# processes follow one process's trajectory.
TINY_GPT = {"model": {"dim": 16, "layers": 1, "heads": 2, "dropout": 0.0},
            "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.003, "warmup_steps": 2, "plot_windows": 2,
                      "max_steps_per_epoch": 6}}
COMPARED = {"vqvae_train": ("train_loss", "train_recon", "train_commitment", "train_batch_perplexity", "val_loss",
                            "val_mse_mv2", "val_batch_perplexity", "perplexity"),
            "transformer_train": ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}


@pytest.fixture(scope="module")
def tiny_vqvae(tmp_path_factory, tiny: dict) -> Path:
    return train(outputs(tiny, tmp_path_factory.mktemp("vqvae")), "--epochs", "1") / "last.pt"


@pytest.mark.parametrize("script", list(COMPARED))
def test_torchrun_two_processes_match_one_process(tmp_path: Path, tiny: dict, tiny_vqvae: Path, script: str) -> None:
    """2 CPU processes (gloo, global batch 8 = 4 per rank) follow the single-process loss trajectory, and both
    ranks end with the same weights (for the VQ-VAE: the same codebook, k-means init and restarts included),
    though each rank draws its own random numbers (dropout, noise) in every epoch."""
    def args(folder: Path) -> list[str]:
        if script == "vqvae_train":
            return flags(outputs(tiny, folder), "--device", "cpu")
        config = tmp_path / "gpt.json"
        config.write_text(json.dumps(TINY_GPT))
        setup = dict(outputs(tiny, folder), config=str(config), vqvae=str(tiny_vqvae))
        return flags(setup, "--device", "cpu")

    importlib.import_module(script).main(args(tmp_path / "one"))
    one = newest(tmp_path / "one" / "checkpoints")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        HARNESS, "--dump-state", str(tmp_path / "ranks"), "--dump-rng", str(tmp_path / "rng"), script, "--",
                        *args(tmp_path / "two")],
                       cwd=ROOT, env={**ENV, "ECG_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    if script == "transformer_train":       # rank 0 encodes the windows, rank 1 reads its cache
        assert r.stdout.count("encoding the train windows once") == 1, r.stdout
    two = newest(tmp_path / "two" / "checkpoints")
    assert torch.load(two / "last.pt", weights_only=True)["meta"]["world_size"] == 2
    rows = {}
    for name, ckpt_dir in (("one", one), ("two", two)):
        run = Path(torch.load(ckpt_dir / "last.pt", weights_only=True)["run_dir"])
        rows[name] = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows["one"]) == len(rows["two"]) == 2
    for a, b in zip(rows["one"], rows["two"]):
        for key in COMPARED[script]:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4), (key, a[key], b[key])
    rng0, rng1 = (torch.load(tmp_path / "rng" / f"rng{r}.pt", weights_only=True) for r in (0, 1))
    assert len(rng0) == 2 and all(not torch.equal(a, b) for a, b in zip(rng0, rng1)), "ranks draw alike"
    rank0 = torch.load(tmp_path / "ranks" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ranks" / "rank1.pt", weights_only=True)
    differ = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    # only the restart reservoirs, each rank's own draws: restarts are picked from rank 0's and broadcast
    assert all(k.endswith("recent") for k in differ), f"ranks disagree on {differ}"
    saved = torch.load(two / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], rank0[k]) for k in saved)
    if script == "vqvae_train":
        single = torch.load(one / "last.pt", weights_only=True)["model"]
        assert int(single["quantizer.updates"]) == int(saved["quantizer.updates"]) == 12
        torch.testing.assert_close(saved["quantizer.codebook"], single["quantizer.codebook"], rtol=0, atol=1e-5)


def test_every_rank_stops_early_after_the_same_epoch(tmp_path: Path, tiny: dict) -> None:
    """Under torchrun every rank counts the epochs since the best validation loss (all-reduced, the same on each),
    so all of them stop after the same epoch: a count kept on rank 0 alone left the others training into an
    all-reduce that rank 0 never joined."""
    r = subprocess.run(torchrun(HARNESS, "--dump-state", str(tmp_path / "ranks"), "--val-losses", "2,1,3,4,5",
                                "vqvae_train", "--", *flags(outputs(tiny, tmp_path), "--device", "cpu", "--epochs", "5",
                                                            "--patience", "2")),
                       cwd=ROOT, env={**ENV, "ECG_DIST_TIMEOUT": "60"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped early after epoch 4 of 5: val_loss has not improved for 2 epochs (best 1 at epoch 2" in r.stdout
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == ["rank0.pt", "rank1.pt"]
    assert torch.load(newest(tmp_path / "checkpoints") / "last.pt", weights_only=True)["epoch"] == 4


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny: dict) -> dict:
    """A 3-epoch run that nobody killed: the final training state every resumed run must reproduce."""
    ckpt_dir = train(outputs(tiny, tmp_path_factory.mktemp("uninterrupted")), "--epochs", "3")
    return torch.load(ckpt_dir / "last.pt", weights_only=True)


@pytest.mark.parametrize("hook", [["--pause-at-step", "8"], ["--pause-in-save", "2"]], ids=["mid_step", "mid_save"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, tiny: dict, uninterrupted: dict,
                                                  hook: list[str]) -> None:
    """SIGKILL in the middle of step 9 (epoch 2 of 3, 6 steps each), or half-way through writing epoch 2's
    last.pt; --resume last.pt then ends bit for bit where the uninterrupted run ended."""
    setup = outputs(tiny, tmp_path)
    kill_when_paused(hook, flags(setup, "--device", "cpu", "--epochs", "3"))
    ckpt_dir = newest(Path(setup["checkpoints"]))
    last = ckpt_dir / "last.pt"
    assert load_checkpoint(last, "vqvae")["epoch"] == 1  # the previous checkpoint, intact
    if "--pause-in-save" in hook:
        assert list(ckpt_dir.glob(".last.pt.*.tmp")), "the kill did not land in the write"
    vqvae_train.main(flags(setup, "--device", "cpu", "--epochs", "3", "--resume", str(last)))
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 3
    assert_same_training_state(resumed, uninterrupted)
    assert epochs_logged(ckpt_dir) == ["1", "2", "3"]  # the redone epoch is listed once
    assert not list(ckpt_dir.glob("*.tmp"))  # the half-written file is gone


def torchrun(*args: str) -> list[str]:
    """The command that runs `args` under torchrun as 2 CPU processes (gloo) on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (torchrun's workers: in sessions of their own, so not in its group)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    below, todo = [], [pid]
    while todo:
        above = todo.pop()
        children = [p for p, parent in parents.items() if parent == above]
        below += children
        todo += children
    return below


def said(proc: subprocess.Popen, line: bytes, timeout: float) -> bool:
    """Whether proc's stdout says `line` within `timeout` s: read as it comes, so that a run that never says it fails
    the test, not hangs it (its loader workers, stuck, hold the pipe open)."""
    out, end = b"", time.monotonic() + timeout
    while line not in out and time.monotonic() < end:
        if select.select([proc.stdout], [], [], 1)[0]:
            if not (chunk := os.read(proc.stdout.fileno(), 1 << 16)):
                break
            out += chunk
    return line in out


def gone(pid: int) -> bool:
    """Dead, or a zombie not yet reaped (a SIGKILLed worker's parent, torchrun, is dead too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def kill_torchrun_when_paused(hook: list[str], args: list[str], paused: int) -> None:
    """Run the training in the harness under torchrun; once `paused` ranks report PAUSED, SIGKILL every worker, then
    torchrun: no worker says a word or saves a file (a kill of torchrun alone lets them stop as on SIGTERM)."""
    proc = subprocess.Popen(torchrun(HARNESS, *hook, "vqvae_train", "--", *args), cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, workers = [], []
    try:
        for line in proc.stdout:
            seen.append(line)
            # counted in the stream, not by lines: the workers write unbuffered (python -u), so two ranks' words and
            # newlines interleave ('PAUSEDPAUSED')
            if "".join(seen).count("PAUSED") == paused:
                workers = descendants(proc.pid)
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(timeout=120) == -signal.SIGKILL, "".join(seen)
        assert len(workers) >= 2, workers
        deadline = time.monotonic() + 30
        while not all(gone(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its SIGKILL"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def metrics_rows(last: Path) -> list[dict]:
    """The rows of the run's metrics.csv, but for each epoch's seconds (the one column a rerun cannot repeat)."""
    run = Path(torch.load(last, weights_only=True)["run_dir"])
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader((run / "metrics.csv").open())]


@pytest.fixture(scope="module")
def uninterrupted_ddp(tmp_path_factory, tiny: dict) -> tuple[dict, list[dict]]:
    """A 2-epoch run on 2 processes that nobody killed: its final last.pt and metrics.csv rows."""
    setup = outputs(tiny, tmp_path_factory.mktemp("uninterrupted_ddp"))
    r = subprocess.run(torchrun("vqvae_train.py", *flags(setup, "--device", "cpu")), cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    last = newest(Path(setup["checkpoints"])) / "last.pt"
    return torch.load(last, weights_only=True), metrics_rows(last)


@pytest.mark.parametrize("hook, paused", [(["--pause-at-step", "8"], 2), (["--pause-in-save", "2"], 1)],
                         ids=["mid_step", "mid_save"])
def test_sigkill_under_torchrun_then_resume_equals_uninterrupted(tmp_path: Path, tiny: dict, uninterrupted_ddp: tuple,
                                                                 hook: list[str], paused: int) -> None:
    """Under DDP (2 CPU processes, 2 epochs of 6 steps) every worker and torchrun SIGKILLed once epoch 1's
    checkpoint is written: both ranks in step 9, or rank 0 half-way through writing epoch 2's last.pt (its
    metrics.csv row written) while rank 1 waits. The same torchrun command with --resume last.pt then ends with the
    uninterrupted 2-process run's weights, codebook, optimiser moments, schedule and RNG state bit for bit, and its
    metrics.csv, each epoch once. The single-process test cannot see a resume that restores a state on rank 0 alone
    (its optimiser moments, say): DDP keeps the ranks' weights in step only while every rank's optimiser is."""
    setup = outputs(tiny, tmp_path)
    kill_torchrun_when_paused(hook, flags(setup, "--device", "cpu"), paused)
    ckpt_dir = newest(Path(setup["checkpoints"]))
    last = ckpt_dir / "last.pt"
    assert load_checkpoint(last, "vqvae")["epoch"] == 1
    assert bool(list(ckpt_dir.glob(".last.pt.*.tmp"))) == ("--pause-in-save" in hook)
    r = subprocess.run(torchrun("vqvae_train.py", *flags(setup, "--device", "cpu", "--resume", str(last))), cwd=ROOT,
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 2 and resumed["meta"]["world_size"] == 2
    final, rows = uninterrupted_ddp
    assert_same_training_state(resumed, final)
    assert [row["epoch"] for row in metrics_rows(last)] == ["1", "2"]
    assert metrics_rows(last) == rows
    assert not list(ckpt_dir.glob("*.tmp"))


def test_run_json_says_the_torchrun_command_of_a_run_and_of_its_resume(tmp_path: Path, tiny: dict) -> None:
    """Under torchrun run.json named each worker's own command line (`python3 vqvae_train.py ...`), which trains
    one process, for the run and for each of its resumes: it names torchrun's, which runs both again."""
    setup = outputs(tiny, tmp_path)
    first = torchrun("vqvae_train.py", *flags(setup, "--device", "cpu", "--epochs", "1", "--max-steps", "2"))
    r = subprocess.run(first, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    last = newest(Path(setup["checkpoints"])) / "last.pt"
    again = torchrun("vqvae_train.py", *flags(setup, "--device", "cpu", "--epochs", "2", "--resume", str(last)))
    r = subprocess.run(again, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.loads((Path(torch.load(last, weights_only=True)["run_dir"]) / "run.json").read_text())
    assert [record["command"], *(r["command"] for r in record["resumes"])] == [shlex.join(first), shlex.join(again)]


def test_a_torchrun_restart_resumes_the_failed_attempts_run(tmp_path: Path, tiny: dict) -> None:
    """torchrun --max-restarts runs the same command again after a worker failed: each restart was a new run from
    epoch 1 in a folder of its own. Rank 1 fails once in epoch 2 (2 epochs of 6 steps); the restart resumes the
    failed attempt's last.pt, and the job ends with one run whose metrics.csv has each epoch once. Without
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 a restarted gloo rank may read the failed attempt's address from the
    store torchrun keeps, and fail to connect (pytorch/pytorch#135712)."""
    setup = outputs(tiny, tmp_path)
    marker = tmp_path / "failed_once"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "--max-restarts", "1", HARNESS, "--fail-once", "1", "8", str(marker), "vqvae_train", "--",
                        *flags(setup, "--device", "cpu")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**ENV, "ECG_CACHE_DIR": str(tmp_path / "cache"), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    assert r.returncode == 0 and marker.exists(), r.stdout + r.stderr
    runs = list((tmp_path / "checkpoints").iterdir())
    assert len(runs) == 1, runs
    last = runs[0] / "last.pt"
    assert f"torchrun restart 1: resuming {last}" in r.stderr
    assert [row["epoch"] for row in metrics_rows(last)] == ["1", "2"]


@pytest.fixture
def one_epoch(tmp_path: Path, tiny: dict) -> Path:
    """last.pt after one epoch, in this test's own folders."""
    return train(outputs(tiny, tmp_path), "--epochs", "1") / "last.pt"


def test_nan_loss_stops_with_one_line_and_keeps_last_checkpoint(tmp_path: Path, tiny: dict, one_epoch: Path) -> None:
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tiny["prepared"], poisoned)
    data = torch.load(poisoned / "train.pt", weights_only=True)
    data["signals"][:] = float("nan")
    torch.save(data, poisoned / "train.pt")
    run_dir = Path(torch.load(one_epoch, weights_only=True)["run_dir"])
    before = snapshot(one_epoch.parent), snapshot(run_dir)
    r = cli(*flags(dict(outputs(tiny, tmp_path), prepared=str(poisoned)), "--epochs", "2", "--resume", str(one_epoch)))
    check_error(r, "loss or gradient norm is [nan, nan] in epoch 2 after 6 steps", "stopped",
                f"the last good checkpoint is {one_epoch}")
    assert (snapshot(one_epoch.parent), snapshot(run_dir)) == before
    assert load_checkpoint(one_epoch, "vqvae")["epoch"] == 1


def test_save_failing_half_way_keeps_previous_checkpoint(tmp_path: Path, tiny: dict, one_epoch: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way (disk full) is one clear error, which says how to go on once there is room (it
    said only which file it could not write); last.pt still holds epoch 1."""
    real_save = torch.save
    before = one_epoch.read_bytes()

    def half_then_disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if ".last.pt." in f.name:               # atomic_torch_save hands torch.save an open file
            f.flush()
            os.truncate(f.name, os.path.getsize(f.name) // 2)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_disk_full)
    with pytest.raises(UserError, match=re.escape(f"cannot write {one_epoch}: No space left on device; resume with: "
                                                  f"vqvae_train.main(['--resume', {str(one_epoch)!r}])") + "$"):
        train(outputs(tiny, tmp_path), "--epochs", "2", "--resume", str(one_epoch))
    monkeypatch.undo()
    assert one_epoch.read_bytes() == before and load_checkpoint(one_epoch, "vqvae")["epoch"] == 1
    assert not list(one_epoch.parent.glob("*.tmp"))


def test_resume_with_another_model_config_cli(tmp_path: Path, synthetic_db: Path, tiny: dict,
                                              one_epoch: Path) -> None:
    other = tiny_setup(tmp_path / "other", synthetic_db, model={"codebook_size": 16})
    before = snapshot(tmp_path)
    r = cli(*flags(other, "--resume", str(one_epoch)))
    check_error(r, str(one_epoch), "another config", "'model.codebook_size' is 32 there but 16 now")
    assert snapshot(tmp_path) == before


def test_cut_checkpoint_cli(tmp_path: Path, tiny: dict, one_epoch: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(one_epoch.read_bytes()[: one_epoch.stat().st_size // 2])
    before = snapshot(tmp_path)
    r = cli(*flags(outputs(tiny, tmp_path), "--resume", str(cut)))
    check_error(r, str(cut), "cut short")
    assert snapshot(tmp_path) == before


def test_prepared_tensors_from_another_config_cli(tmp_path: Path, tiny: dict) -> None:
    config = tmp_path / "other.json"
    raw = json.loads(Path(tiny["config"]).read_text())
    raw["data"]["filter_band"] = [0.5, 20.0]
    config.write_text(json.dumps(raw))
    before = snapshot(Path(tiny["prepared"]))
    r = cli(*flags(dict(outputs(tiny, tmp_path), config=str(config))))
    check_error(r, str(Path(tiny["prepared"]) / "train.pt"), "another data config", "prepare_mitbih.py")
    assert snapshot(Path(tiny["prepared"])) == before and not (tmp_path / "results").exists()


@pytest.mark.parametrize("which", ["results", "checkpoints"])
def test_output_folder_not_writable_cli(tmp_path: Path, tiny: dict, which: str) -> None:
    """A folder below a regular file cannot be made, even by root; the run stops before training."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    setup = dict(outputs(tiny, tmp_path), **{which: str(blocker / "sub")})
    r = cli(*flags(setup))
    check_error(r, str(blocker / "sub"))
    assert blocker.read_text() == "not a folder\n"
    assert not list(tmp_path.glob("*/vqvae-*"))  # no run was started


def test_torchrun_config_error_is_printed_once(tmp_path: Path) -> None:
    """Every rank meets the same bad key; the user reads it once, not once per process."""
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"train": {"epochz": 2}}))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "vqvae_train.py", "--config", str(config), "--device", "cpu"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "train.epochz" in errors[0], r.stderr


@pytest.mark.parametrize("rank, name, said", [
    ("1", "SIGTERM", "error: another rank stopped (rank 1 terminated); resume with: vqvae_train.main(['--resume', "
                     "'{last}'])"),
    ("0", "SIGINT", "interrupted; resume with: vqvae_train.main(['--resume', '{last}'])")],
    ids=["rank_1_terminated", "rank_0_interrupted"])
def test_a_rank_stopped_alone_leaves_the_other_one_line_not_a_traceback(tmp_path: Path, tiny: dict, rank: str,
                                                                        name: str, said: str) -> None:
    """SIGTERM or Ctrl-C to one rank's process alone (a kill of its pid): it stops as ever, and the other rank, failing
    in its next collective on the closed connection, printed torch's traceback ('Connection closed by peer'). It finds
    the stopped rank's word in the store and says so in one line with the resume command (rank 1 says nothing: rank 0
    has said how to resume, and torchrun stops rank 1 in its grace period). The harness calls vqvae_train.main with a
    list of its own, which the call, not the harness's command line, runs again."""
    setup = outputs(tiny, tmp_path)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        HARNESS, "--signal-at-step", rank, "8", name, "vqvae_train", "--",
                        *flags(setup, "--device", "cpu")],
                       cwd=ROOT, env={**ENV, "ECG_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True, text=True,
                       timeout=300)
    last = newest(tmp_path / "checkpoints") / "last.pt"
    assert r.returncode != 0 and torch.load(last, weights_only=True)["epoch"] == 1
    workers = [line for line in r.stderr.splitlines() if re.match(r"(error|terminated|interrupted|\[rank)", line)]
    assert workers == [said.format(last=last)], r.stderr
    assert "Connection closed" not in r.stderr and r.stderr.count("Traceback") == 1, r.stderr    # torchrun's own


@pytest.mark.parametrize("rank", ["1", "0"])
def test_a_rank_failing_on_a_bug_alone_leaves_the_others_one_line_not_a_traceback(tmp_path: Path, tiny: dict,
                                                                                  rank: str) -> None:
    """A bug of one rank (an exception not the project's 'error:') printed its traceback, and the other rank, failing
    in its next collective on the closed connection, torch's ('Connection reset by peer'): two tracebacks, the user
    left to guess which came first. The failing rank's stays whole, ending with the resume command; rank 0, when it
    is the other, says in one line which rank failed on what and how to resume; rank 1 says nothing (torchrun stops
    it in its grace period, rank 0's traceback said how to resume)."""
    setup = outputs(tiny, tmp_path)
    r = subprocess.run(torchrun(HARNESS, "--fail-once", rank, "8", str(tmp_path / "failed"), "vqvae_train", "--",
                                *flags(setup, "--device", "cpu")),
                       cwd=ROOT, env={**ENV, "ECG_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True, text=True,
                       timeout=300)
    last = newest(tmp_path / "checkpoints") / "last.pt"
    assert r.returncode == 1 and torch.load(last, weights_only=True)["epoch"] == 1, r.stderr
    resume = f"resume with: vqvae_train.main(['--resume', '{last}'])"
    other = "0" if rank == "1" else "1"
    # strings, not lines: the failing rank's traceback, one write beyond a pipe's atomic 4 KB, and the other rank's
    # line may interleave
    for line in ("Traceback (most recent call last):", "RuntimeError: harness: failing once", resume):
        assert f"[rank{rank}]: {line}\n" in r.stderr, r.stderr
    assert f"[rank{other}]" not in r.stderr and "Connection" not in r.stderr, r.stderr
    assert r.stderr.count("Traceback") == 2, r.stderr     # the failing rank's and torchrun's own
    said = (f"error: another rank failed (rank 1's traceback: RuntimeError: harness: failing once); {resume}\n"
            if rank == "1" else "")
    assert r.stderr.count("error: ") == bool(said) and said in r.stderr, r.stderr


def test_a_rank_killed_outright_leaves_the_others_a_traceback_saying_how_to_resume(tmp_path: Path, tiny: dict) -> None:
    """A rank killed outright (kill -9, the out-of-memory killer) leaves no word in the store: the other rank's next
    collective failed with gloo's 'Connection closed by peer' traceback and no resume command (under torchrun in
    2 runs of 3, its agent's SIGTERM coming later). Two env:// ranks (no agent to stop rank 0) in the harness:
    rank 1 SIGKILLs itself in epoch 2; rank 0's traceback ends with the resume command."""
    setup = outputs(tiny, tmp_path)
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "ECG_DIST_TIMEOUT": "60", "ECG_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, HARNESS, "--signal-at-step", "1", "8", "SIGKILL", "vqvae_train", "--",
                               *flags(setup, "--device", "cpu")], cwd=ROOT, env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
             for rank in (0, 1)]
    (_, rank0), _ = [p.communicate(timeout=120) for p in procs]
    last = newest(tmp_path / "checkpoints") / "last.pt"
    assert [p.returncode for p in procs] == [1, -signal.SIGKILL], rank0
    assert torch.load(last, weights_only=True)["epoch"] == 1
    lines = rank0.splitlines()
    assert "RuntimeError" in " ".join(lines[-3:]), rank0
    assert lines[-1] == f"[rank0]: resume with: vqvae_train.main(['--resume', '{last}'])", rank0


@pytest.mark.parametrize("name, word, status", [("SIGTERM", "terminated", 143), ("SIGINT", "interrupted", 130)])
def test_a_stop_does_not_wait_for_loader_workers_stuck_in_a_read(tmp_path: Path, tiny: dict, name: str, word: str,
                                                                  status: int) -> None:
    """train.num_workers > 0, the workers stuck reading a window (a hung network file system): a SIGTERM or Ctrl-C
    said how to resume at once, but the run never ended (torch waits 10 s for each worker, then sends it SIGTERM,
    which it blocks; multiprocessing then waited for it without end as Python exited). The workers are killed, and
    the run ends with its status."""
    config = json.loads(Path(tiny["config"]).read_text())
    config["train"]["num_workers"] = 2
    (tmp_path / "workers.json").write_text(json.dumps(config))
    setup = dict(outputs(tiny, tmp_path), config=str(tmp_path / "workers.json"))
    proc = subprocess.Popen([sys.executable, HARNESS, "--stall-loading", "vqvae_train", "--",
                             *flags(setup, "--device", "cpu")], cwd=ROOT,
                            env={**ENV, "ECG_CACHE_DIR": str(tmp_path / "cache")}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    workers: list[int] = []
    try:
        assert said(proc, b"STALLED\n", 120), "no loader worker stalled"      # a worker's, in epoch 2
        workers = descendants(proc.pid)
        proc.send_signal(getattr(signal, name))
        assert proc.wait(timeout=60) == status, proc.stderr.read()
        assert len(workers) == 2 and all(gone(pid) for pid in workers), workers
        last = newest(tmp_path / "checkpoints") / "last.pt"
        assert proc.stderr.read().splitlines()[-1] == f"{word}; resume with: vqvae_train.main(['--resume', '{last}'])"
    finally:       # listed again while the run lives: a worker it started after the first list holds its pipes too
        for pid in {*workers, *descendants(proc.pid), proc.pid}:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=60)


STOPPED = """
import multiprocessing, os, signal, sys, threading, time
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
import faulthandler
import running, training

faulthandler.dump_traceback_later(40, exit=True)     # a hang says where, within the test's 60 s
running.interruptible()     # a test run in a background job inherits Ctrl-C ignored, as a script's main takes it back
name, when = sys.argv[1:]

def stop():
    os.kill(os.getpid(), getattr(signal, name))
    handled_by = time.monotonic() + 10
    while when == "taken" and not (running._interrupted.is_set() or running._terminating.is_set()) \
            and time.monotonic() < handled_by:      # its handler run, noted, not left to come after iter(loader)
        time.sleep(0.01)
    time.sleep(0.5)

class Stuck(Dataset):
    def __len__(self): return 8
    def __getitem__(self, i):
        time.sleep(600)
        return torch.zeros(1)

class StopAsStarted(Sampler):      # read once the workers are forked
    def __len__(self): return 8
    def __iter__(self):
        if when in ("starting", "taken"):
            stop()
        if when == "failing":
            raise ValueError("a sampler's bug")
        return iter(range(8))

class StopInDel:
    def __del__(self):
        stop()

if when == "taken":      # a thread not blocking the signals: the kernel hands it there
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
if when == "ending":     # as the loop's end takes the workers out of torch's SIGCHLD watch, to kill them
    remove = torch.utils.data._utils.signal_handling._remove_worker_pids
    def stop_then_remove(key):
        stop()
        remove(key)
    torch.utils.data._utils.signal_handling._remove_worker_pids = stop_then_remove
signal.signal(signal.SIGTERM, running._terminate)
sys.unraisablehook = running._note_swallowed(sys.unraisablehook)
loader = DataLoader(Stuck(), batch_size=2, sampler=StopAsStarted(), num_workers=2)
t0 = time.monotonic()
try:
    with training.loader_batches(loader) as batches:
        if when == "swallowed":
            StopInDel()
            t0 = time.monotonic()
        if when != "ending":
            next(batches)
except (KeyboardInterrupt, ValueError) as e:
    print(type(e).__name__, time.monotonic() - t0 < 4, flush=True)
time.sleep(0.5)         # torch's SIGCHLD watch, had it the killed workers' pids still, would raise their deaths here
print("alive", sum(p.is_alive() for p in multiprocessing.active_children()), flush=True)
"""


def stopped_loader(name: str, when: str, ends_with: str | None = None) -> None:
    """STOPPED's run, stopped by signal `name` `when`, ends at once, its workers gone, and with no error but
    `ends_with` (the name of what it raised; by default the stop's)."""
    done = subprocess.run([sys.executable, "-c", STOPPED, name, when], cwd=ROOT, env={**ENV, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    ends_with = ends_with or ("Terminated" if name == "SIGTERM" else "KeyboardInterrupt")
    assert done.returncode == 0 and done.stdout.split() == [ends_with, "True", "alive", "0"], done.stdout + done.stderr
    assert "Error" not in done.stderr, done.stderr


@pytest.mark.parametrize("when", ["starting", "taken"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_that_comes_as_the_loader_starts_its_workers_ends_them(name: str, when: str) -> None:
    """A stop that came while iter(loader) forked its workers (the signals blocked in the main thread) was raised
    as their mask was put back, or, when another thread took it, ran in the main thread meanwhile, in the middle of
    iter(loader): the iterator was lost with its workers, which, stuck in a read, outlived torch's shutdown and kept
    the process from exiting (a full-suite run's stuck-in-a-read test timed out so), and once killed, torch's SIGCHLD
    watch raised their deaths ('DataLoader worker is killed by signal', a CI run). The stop is raised once
    iter(loader) returned, and its workers end as the loader's other workers do. The loader's sampler sends it."""
    stopped_loader(name, when)


def test_an_error_as_the_loader_starts_its_workers_is_raised_as_it_came() -> None:
    """A sampler's bug raised in iter(loader), its workers started and in torch's SIGCHLD watch: the iterator it was
    making was lost, its workers were killed still watched, and their deaths went up over the error or, as its __del__
    shut them down again, were printed ('DataLoader worker (pid N) is killed by signal: Killed')."""
    stopped_loader("SIGTERM", "failing", ends_with="ValueError")


class Stalls(torch.utils.data.Dataset):
    """Windows 0..7 as tensors; read in a loader worker, those from `ready` on never come (a hung file system), and
    `stalled` is set as the first one hangs."""

    def __init__(self, ready: int) -> None:
        self.ready, self.stalled = ready, multiprocessing.get_context("fork").Event()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        if i >= self.ready and torch.utils.data.get_worker_info() is not None:
            self.stalled.set()
            time.sleep(600)
        return torch.tensor(i)


@contextlib.contextmanager
def workers_checked() -> Iterator[None]:
    """The loader workers a test starts: none may be left alive after it (killed here if so, to fail cleanly)."""
    before = set(multiprocessing.active_children())
    try:
        yield
        left = set(multiprocessing.active_children()) - before
        assert not left, left
    finally:
        for w in set(multiprocessing.active_children()) - before:
            w.kill()
            w.join()


@pytest.mark.parametrize("end", [running.Terminated, KeyboardInterrupt, ValueError])
def test_a_stop_or_error_in_the_loop_kills_loader_workers_stuck_in_a_read(end: type[BaseException]) -> None:
    """Workers stuck reading a window (started deaf to SIGTERM) held a stopped run: torch waits 5 s for each, then
    sends it the SIGTERM it blocks. They are killed at once, with no 'DataLoader worker exited unexpectedly' from
    torch's SIGCHLD watch, and the stop goes up as it came."""
    data = Stalls(ready=1)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=2)
    with workers_checked(), pytest.raises(end):
        with training.loader_batches(loader) as batches:
            assert next(batches).tolist() == [0] and data.stalled.wait(30)
            t0 = time.monotonic()           # the stop; the workers' start is no part of its time
            raise end()
    assert time.monotonic() - t0 < 4, time.monotonic() - t0


def test_a_stop_raised_as_the_loader_workers_start_kills_them(monkeypatch) -> None:
    """A SIGTERM that came while the workers forked is raised as stops_held gives the stops back, after they
    started: the iterator was lost there, and its workers stuck in a read held the run as before."""
    stops_held = running.stops_held

    def started_then_stopped(call, raise_held=True):
        if stopped_at:          # the workers' end
            return stops_held(call, raise_held)
        started = stops_held(call, raise_held)
        assert data.stalled.wait(30)
        del started             # as a pending return value goes when its `finally` raises
        stopped_at.append(time.monotonic())
        raise running.Terminated()
    monkeypatch.setattr(running, "stops_held", started_then_stopped)
    data = Stalls(ready=0)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=1)
    stopped_at: list[float] = []
    with workers_checked(), pytest.raises(running.Terminated):
        with training.loader_batches(loader):
            pytest.fail("no batches for a stopped run")
    assert time.monotonic() - stopped_at[0] < 4, time.monotonic() - stopped_at[0]


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_swallowed_while_workers_stuck_in_a_read_hold_the_next_batch_is_raised(name: str) -> None:
    """A stop that came while Python ran a __del__ (an iterator shutting down its workers, a cyclic collection) is
    swallowed there, and the trainer raises it before its next step; with the loader workers stuck in a read no step
    came, and the run waited without end (a CI run's stuck-in-a-read test timed out so). The wait for the batch asks
    too. A __del__ sends the signal."""
    stopped_loader(name, "swallowed")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_as_the_loop_ends_its_workers_waits_for_their_end(name: str) -> None:
    """The loop's end kills its workers at every epoch's end: a stop that came in the middle (before the kills) went up
    from there, the workers, stuck in a read, left alive, and the process's exit waited for them without end. The
    stop waits for their end, and is raised then."""
    stopped_loader(name, "ending")


def test_a_stop_raised_as_stops_are_given_back_leaves_ctrl_c_and_the_mask_as_they_were(monkeypatch) -> None:
    """stops_held notes Ctrl-C with a handler of its own and blocks both signals: a SIGTERM raised the moment it
    stopped only noting left that handler in place for good (every later Ctrl-C noted, never raised)."""
    class StopAsCleared(running._Flag):
        def clear(self) -> None:
            super().clear()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)

    monkeypatch.setattr(running, "_deferring", StopAsCleared())
    with running._sigterm_as_stop(), pytest.raises(running.Terminated):
        running.stops_held(lambda: None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_an_ended_loops_iterator_is_freed_with_its_last_reference() -> None:
    """The wait that asks for stops held its iterator in a cycle: each epoch's iterator, its pipes and its workers'
    sentinels stayed open until a full garbage collection, and a long run failed with 'Too many open files'."""
    loader = torch.utils.data.DataLoader(Stalls(ready=8), batch_size=1, num_workers=2)
    gc.disable()
    try:
        with training.loader_batches(loader) as batches:
            assert next(batches).tolist() == [0]
        freed = weakref.ref(batches)
        del batches
        assert freed() is None
    finally:
        gc.enable()


def test_a_loader_with_persistent_workers_is_refused() -> None:
    """Its workers, killed at the loop's end, would serve the next loop."""
    loader = torch.utils.data.DataLoader(Stalls(ready=8), batch_size=1, num_workers=1, persistent_workers=True)
    with pytest.raises(ValueError, match="persistent_workers"):
        with training.loader_batches(loader):
            pass


@pytest.fixture
def pinning(monkeypatch) -> None:
    """DataLoader(pin_memory=True) as on a GPU, its pin-memory thread and all, on this CPU: an accelerator said to
    be there, and batches passed on as they come rather than page-locked."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: None)
    monkeypatch.setattr(torch.accelerator, "current_device_index", lambda: 0)
    monkeypatch.setattr(torch.accelerator, "set_device_index", lambda i: None)
    monkeypatch.setattr(torch.utils.data._utils.pin_memory, "pin_memory", lambda data, device=None: data)


@pytest.mark.parametrize("pin", [False, True])
def test_an_epoch_ending_with_workers_stuck_in_a_read_kills_them(request, pin: bool) -> None:
    """The epoch's last step taken while the workers read ahead, stuck (a hung file system): torch's shutdown in the
    iterator's __del__ waited 10 s for each, and left them alive to hold the process's exit. They are killed as the
    loop ends, the pin-memory thread (CUDA) stopped before them."""
    if pin:
        request.getfixturevalue("pinning")
    data = Stalls(ready=1)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=2, pin_memory=pin)
    with workers_checked():
        with training.loader_batches(loader) as batches:
            assert next(batches).tolist() == [0] and data.stalled.wait(30)
            assert hasattr(batches, "_pin_memory_thread") == pin
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 4, time.monotonic() - t0
        assert not pin or not batches._pin_memory_thread.is_alive()


def test_a_loaders_own_timeout_is_kept_while_the_wait_asks_for_stops() -> None:
    """train's loaders wait without a timeout; a loader given one (2 s here) still fails after it, not after
    WAIT_CHECK_S, the interval of the wait's asking for a swallowed stop."""
    loader = torch.utils.data.DataLoader(Stalls(ready=0), batch_size=1, num_workers=1, timeout=2)
    with workers_checked(), pytest.raises(RuntimeError, match="timed out after 2 seconds"):
        with training.loader_batches(loader) as batches:
            t0 = time.monotonic()
            next(batches)
    assert time.monotonic() - t0 >= 1.9


@pytest.fixture
def group_of_rank(monkeypatch) -> list[int]:
    """This process as a rank (the list's one value, to change) of a process group whose store is a HashStore."""
    import torch.distributed as dist
    store, rank = dist.HashStore(), [1]
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank[0])
    monkeypatch.setattr(dist.distributed_c10d, "_get_default_store", lambda: store)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    return rank


def test_a_stop_said_in_one_torchrun_attempt_is_not_found_in_the_next(group_of_rank, monkeypatch) -> None:
    """torchrun --max-restarts starts the workers again on its agent's store, keys and all: a rank's word that it
    stopped, left in attempt 0, was found by attempt 1, whose next failing collective (another rank's crash) was
    then said to be 'another rank stopped (rank 1 terminated)' instead of its own traceback."""
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert running.word_left() is None
    running.leave_word(running.Terminated())
    assert running.word_left() == "another rank stopped (rank 1 terminated)"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert running.word_left() is None
    group_of_rank[0] = 0
    running.leave_word(KeyboardInterrupt())
    assert running.word_left() == "another rank stopped (rank 0 interrupted)"


def test_a_script_ending_in_an_error_leaves_its_process_group(capsys) -> None:
    """Left to the interpreter's exit, the group of a rank launched without torchrun (srun: rank 0's process keeps the
    store) was torn down while the other ranks were still connected, and rank 0 aborted ('terminate called without an
    active exception', exit -6, not 2; once in a CI run of test_ranks_loading_different_vqvaes_are_stopped)."""
    import torch.distributed as dist

    def fails() -> None:
        raise UserError("the ranks loaded different VQ-VAEs")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit) as e:
            running.run_main(fails)
        assert e.value.code == 2 and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert capsys.readouterr().err == "error: the ranks loaded different VQ-VAEs\n"


def test_a_rank_ending_in_an_error_skips_the_interpreters_teardown() -> None:
    """Launched without torchrun (srun), rank 0's process keeps the store, which torch's objects keep past
    destroy_process_group; torn down in the interpreter's exit while the other ranks were still connected, it now and
    then aborted ('terminate called without an active exception', exit -6, not 2; twice in CI runs of
    test_ranks_resuming_from_different_copies_of_last_pt_are_stopped). An exit handler that aborts stands in for it:
    a rank of several ends with its error's status, its line said."""
    r = rank_0_failing("os, running, torch.distributed", "os.abort", "the ranks resumed from different checkpoints")
    check_error(r, "the ranks resumed from different checkpoints")


def rank_0_failing(imports: str, at_exit: str, message: str) -> subprocess.CompletedProcess:
    """A script, rank 0 of 2 by its environment, that imports `imports`, registers the exit handler `at_exit` and
    whose main fails with UserError(`message`) under run_main."""
    script = (f"import atexit, {imports}\n"
              "from paths import UserError\n"
              f"atexit.register({at_exit})\n"
              "def fails():\n"
              f"    raise UserError({message!r})\n"
              "running.run_main(fails)\n")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**ENV, "WORLD_SIZE": "2", "RANK": "0"},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def test_a_rank_ending_well_skips_the_interpreters_teardown() -> None:
    """A rank of several whose main ended well left by the interpreter's exit, whose teardown of torch's process group
    now and then aborts: rank 1 of a torchrun resume in test_run_json_says_the_torchrun_command... ended with exit -6
    ('terminate called without an active exception') after its run had finished. An exit handler that aborts stands
    in for it: the rank ends with status 0, its output flushed."""
    script = ("import atexit, os, running, torch.distributed\n"
              "atexit.register(os.abort)\n"
              "running.run_main(lambda: print('trained', end=''))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**ENV, "WORLD_SIZE": "2", "RANK": "1"},
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "trained", "")


def test_a_process_in_no_group_exits_through_the_interpreter_whatever_WORLD_SIZE_says() -> None:
    """os._exit is for a rank that may have joined a process group (torch.distributed imported): a script that never
    imported it (a WORLD_SIZE left in a job's environment) is a single process, whose exit handlers still run."""
    r = rank_0_failing("running", "lambda: print('exit handlers ran')", "no such record")
    check_error(r, "no such record")
    assert r.stdout == "exit handlers ran\n"


def rank_1_alone(ends: str) -> tuple[list[int], str, str]:
    """Two env:// ranks (gloo) under run_main: rank 1 ends by `ends` (a statement) on its own, rank 0 in its next
    collective; an exit handler that aborts stands in for the interpreter's teardown of the process group (it now and
    then aborted). Their exit statuses, rank 0's stderr and rank 1's."""
    script = ("import atexit, os, sys, running, training, torch.distributed as dist\n"
              "atexit.register(os.abort)\n"
              "def main():\n"
              "    training.setup_runtime('cpu')\n"
              "    if dist.get_rank() == 1:\n"
              f"        {ends}\n"
              "    dist.barrier()\n"
              "running.run_main(main)\n")
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "ECG_DIST_TIMEOUT": "60"}
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
             for rank in (0, 1)]
    (_, rank0), (_, rank1) = [p.communicate(timeout=120) for p in procs]
    return [p.returncode for p in procs], rank0, rank1


def test_ranks_ending_in_a_traceback_skip_the_interpreters_teardown() -> None:
    """A failure that keeps its traceback (a bug: not a UserError, not a stop) left run_main to the interpreter, which
    printed it and tore the process group down in its exit, where UserErrors and signals skip that teardown (it now
    and then aborted, see above): rank 1 ends with its traceback and exit status 1, rank 0 with the line that names
    it and status 2."""
    codes, rank0, rank1 = rank_1_alone("raise ValueError('a bug of rank 1')")
    assert codes == [2, 1], (rank0, rank1)
    rank1 = rank1.splitlines()      # as the interpreter prints it (torch's hook: the rank)
    assert rank1[0] == "[rank1]: Traceback (most recent call last):", rank1
    assert rank1[-1] == "[rank1]: ValueError: a bug of rank 1", rank1
    assert rank0 == "error: another rank failed (rank 1's traceback: ValueError: a bug of rank 1)\n", rank0


def test_a_rank_calling_sys_exit_alone_is_named_by_the_others() -> None:
    """sys.exit in one rank's own code (a dataset, a forecaster of one's own) left no word: the other rank failed in
    its next collective with torch's 'Connection closed by peer' traceback, and the exiting rank went through the
    interpreter's teardown of the group."""
    codes, rank0, rank1 = rank_1_alone("sys.exit('rank 1 gives up')")
    assert codes == [2, 1], (rank0, rank1)
    assert (rank0, rank1) == ("error: another rank exited (rank 1: rank 1 gives up)\n", "rank 1 gives up\n")


@pytest.mark.parametrize("code, said", [(3, "exit status 3"), (None, "exit status 0")])
def test_a_sys_exit_leaves_word_of_its_status(group_of_rank, code: int | None, said: str) -> None:
    """run_main: sys.exit(3) or sys.exit() in a rank's main goes up as it is, its status said to the others."""
    with pytest.raises(SystemExit) as e:
        running.run_main(lambda: sys.exit(code))
    assert e.value.code == code and running.word_left() == f"another rank exited (rank 1: {said})"


def test_the_first_rank_to_fail_keeps_its_word(group_of_rank) -> None:
    """A rank failing alone leaves its error's first line; the rank whose collective then fails on it ends in a
    UserError too (saying that word), whose word, left over the first, would have named it to a third rank."""
    running.leave_word(UserError("prepared tensors not found: x/train.pt\nsecond line"))
    group_of_rank[0] = 0
    running.leave_word(UserError(running.word_left()))
    assert running.word_left() == "another rank failed (rank 1: prepared tensors not found: x/train.pt)"


def test_a_failed_collective_is_said_from_the_word_left(group_of_rank, capsys) -> None:
    """run_main: a RuntimeError of a collective, with another rank's word left, is the error line (rank 0: at once)."""
    def collective_fails() -> None:
        raise RuntimeError("Connection closed by peer")
    running.leave_word(UserError("no such checkpoint"))       # as rank 1
    group_of_rank[0] = 0
    with pytest.raises(SystemExit) as e:
        running.run_main(collective_fails)
    assert e.value.code == 2 and capsys.readouterr().err == "error: another rank failed (rank 1: no such checkpoint)\n"


@pytest.mark.parametrize("bug", [RuntimeError("Connection closed by peer\nsecond line"), ValueError("a bug")])
def test_a_bug_keeps_its_traceback_and_leaves_word_of_it(group_of_rank, bug: Exception) -> None:
    """run_main: a failure with no word left (a bug, or a collective failing on a rank killed outright) goes up as it
    is, and leaves word of it, so that the others name this rank and its traceback rather than print torch's."""
    def fails() -> None:
        raise bug
    with pytest.raises(type(bug)):
        running.run_main(fails)
    first = str(bug).partition("\n")[0]
    assert running.word_left() == f"another rank failed (rank 1's traceback: {type(bug).__name__}: {first})"


def test_a_bug_without_a_message_leaves_word_of_its_type_alone(group_of_rank) -> None:
    """A failed `assert` (an AssertionError with no message) left 'rank 1's traceback: AssertionError: ', a colon
    before nothing."""
    def fails() -> None:
        raise AssertionError        # a plain `assert` outside pytest, which words its own
    with pytest.raises(AssertionError):
        running.run_main(fails)
    assert running.word_left() == "another rank failed (rank 1's traceback: AssertionError)"


@pytest.mark.parametrize("bug", [RuntimeError("out of memory"), ValueError("a bug"), UserError("no such file")])
def test_a_ranks_own_bug_ends_with_how_to_resume(group_of_rank, bug: Exception) -> None:
    """Under torchrun a rank's traceback ends with how to resume, as the README says: a RuntimeError's did, a
    ValueError's (any other bug in fit) did not. A UserError is one 'error:' line, which says its own."""
    def fit(resume, ckpt) -> dict:
        raise bug
    trainer = SimpleNamespace(rt=SimpleNamespace(distributed=True), fit=fit, resume_hint=lambda: "resume with: x")
    with pytest.raises(type(bug)) as e:
        training.Trainer._fit_beside_the_others(trainer, None, None)
    assert getattr(e.value, "__notes__", []) == ([] if isinstance(bug, UserError) else ["resume with: x"])


def test_a_rank_ending_after_the_store_went_writes_only_its_error(group_of_rank, monkeypatch, capfd) -> None:
    """Without a torchrun agent the store lives in rank 0's process: a rank leaving word after rank 0 had ended (the
    same error, met later) got 17 lines of torch's C++ stack frames on stderr above its one 'error:' line."""
    import datetime
    import torch.distributed as dist
    port = free_port()
    keeper = subprocess.Popen([sys.executable, "-c", "import torch.distributed as d; "
                               f"s = d.TCPStore('127.0.0.1', {port}, 2, True)"], env=ENV)
    client = dist.TCPStore("127.0.0.1", port, 2, False, timeout=datetime.timedelta(seconds=30))
    assert keeper.wait(timeout=30) == 0
    monkeypatch.setattr(dist.distributed_c10d, "_get_default_store", lambda: client)
    running.leave_word(UserError("the same error on every rank"))
    assert running.word_left() is None
    assert capfd.readouterr().err == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_rank_whose_partner_never_joins_stops_after_the_timeout(tmp_path: Path) -> None:
    """Rank 0 of 2 launched as a scheduler would (env://, no torchrun agent to stop it) while rank 1 failed before
    joining: it stops after $ECG_DIST_TIMEOUT seconds with one error line, not after torch's 30 minutes."""
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "RANK": "0",
           "LOCAL_RANK": "0", "ECG_DIST_TIMEOUT": "2", "ECG_RESULTS_DIR": str(tmp_path),
           "ECG_CHECKPOINTS_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "vqvae_train.py", "--device", "cpu"], cwd=ROOT, env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    check_error(r, "rank 0: not all 2 processes joined within 2 s", "ECG_DIST_TIMEOUT")
    assert not list(tmp_path.iterdir())     # no run was started: no results or checkpoints folder


STALLED_PEER = """
import os, sys, time
sys.path.insert(0, os.getcwd())
import torch, torch.distributed as dist
import training
training.join_process_group("gloo", int(os.environ["RANK"]), 2)
dist.all_reduce(torch.ones(1))
if dist.get_rank() == 1:
    time.sleep(60)
t0 = time.time()
try:
    dist.all_reduce(torch.ones(1))
except RuntimeError:
    print(f"stopped after {time.time() - t0:.1f} s")
"""


def test_a_rank_whose_partner_stalls_in_a_collective_stops_after_the_timeout() -> None:
    """$ECG_DIST_TIMEOUT bounds a collective's wait too, not only the join: a rank whose partner hangs (a stuck
    node, a scheduler's launcher with no torchrun agent to stop the rest) stops, not after gloo's 30 minutes."""
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "ECG_DIST_TIMEOUT": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", STALLED_PEER], cwd=ROOT, env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=40)
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    waited = re.fullmatch(r"stopped after ([\d.]+) s\n", out)
    assert waited and 1.5 < float(waited[1]) < 10, out + err


@pytest.mark.parametrize("signum, said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")],
                         ids=["ctrl_c", "sigterm"])
def test_a_rank_waiting_for_its_partner_stops_on_a_signal(signum: int, said: str) -> None:
    """torch waits for the other ranks to join in C++, where Python's signal handlers do not run: rank 0 of 2 (env://,
    rank 1 not yet started) stopped by Ctrl-C or SIGTERM went on waiting out $ECG_DIST_TIMEOUT (10 minutes by
    default) before it stopped. It stops at once, saying how to resume."""
    port = free_port()
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": "0",
           "LOCAL_RANK": "0", "ECG_DIST_TIMEOUT": "60"}
    proc = subprocess.Popen([sys.executable, "vqvae_train.py", "--device", "cpu", "--resume", "ckpt/last.pt"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        while not listening(port):      # rank 0 keeps the store: it listens as it waits
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (128 + signum, f"{said}; resume with: python3 vqvae_train.py --resume "
                                                    "ckpt/last.pt\n")


def test_a_signal_the_kernel_hands_to_the_joining_thread_still_stops_the_wait() -> None:
    """A process-directed Ctrl-C may reach the thread waiting in init_process_group rather than the main one, whose
    join() it then did not interrupt: rank 0 went on waiting out the timeout (CI, once). Sent to that thread alone,
    it stops the wait at once."""
    def waiting() -> None:
        time.sleep(5)

    def interrupt() -> None:
        time.sleep(0.3)
        joining = next(t for t in threading.enumerate() if t.name == "join_process_group")
        signal.pthread_kill(joining.ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        running.in_thread(waiting, "join_process_group")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("raised", [ValueError("bad"), SystemExit(3), KeyboardInterrupt()])
def test_in_thread_raises_what_the_call_raised_and_runs_it_in_a_daemon_thread(raised: BaseException) -> None:
    """Whatever the call raised is raised in the waiting thread, SystemExit and KeyboardInterrupt too (else only
    threading's excepthook printed them, and the caller went on as if the call had done its work); the call runs
    in a daemon thread of the name given, so a wait given up (Ctrl-C) keeps no process from ending."""
    ran: list[threading.Thread] = []

    def call() -> None:
        ran.append(threading.current_thread())
        raise raised
    with pytest.raises(type(raised)) as e:
        running.in_thread(call, "the call")
    assert e.value is raised and ran[0].name == "the call" and ran[0].daemon


def test_rank_whose_port_is_taken_is_not_said_to_have_waited(tmp_path: Path) -> None:
    """MASTER_PORT held by another program: rank 0 stops at once, naming the address; it said 'not all 2 processes
    joined within 30 s ... did another one fail before joining?' after 2 s (any DistError was read as the timeout)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": "0",
               "LOCAL_RANK": "0", "ECG_DIST_TIMEOUT": "30", "ECG_RESULTS_DIR": str(tmp_path),
               "ECG_CHECKPOINTS_DIR": str(tmp_path)}
        r = subprocess.run([sys.executable, "vqvae_train.py", "--device", "cpu"], cwd=ROOT, env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    check_error(r, f"rank 0: could not set up the process group at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port}",
                "EADDRINUSE", "--master-port")
    assert "joined" not in r.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["ten", "0", "-5", "inf", "1e14"])
def test_bad_dist_timeout_is_named(monkeypatch, value: str) -> None:
    """1e14 s is beyond a timedelta: an OverflowError traceback, now read by main_first too."""
    monkeypatch.setenv("ECG_DIST_TIMEOUT", value)
    with pytest.raises(UserError, match=f"ECG_DIST_TIMEOUT={value!r}: give the seconds"):
        training.dist_timeout()


def resumed_on_two_nodes(tmp_path: Path, setup: dict, epochs: str) -> list[subprocess.CompletedProcess]:
    """vqvae_train.py --resume ckpt/last.pt as ranks 0 and 1 of two nodes without a shared file system, launched as a
    scheduler would (env://, LOCAL_RANK 0 on both), each in its node's folder tmp_path/node<rank>."""
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "ECG_DIST_TIMEOUT": "60"}
    argv = [sys.executable, str(ROOT / "vqvae_train.py"), "--prepared", setup["prepared"], "--device", "cpu",
            "--epochs", epochs, "--resume", "ckpt/last.pt"]
    procs = [subprocess.Popen(argv, cwd=tmp_path / f"node{rank}", env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
             for rank in (0, 1)]
    said = [p.communicate(timeout=120) for p in procs]
    return [subprocess.CompletedProcess(argv, p.returncode, *out) for p, out in zip(procs, said)]


def test_ranks_resuming_from_different_copies_of_last_pt_are_stopped(tmp_path: Path, tiny: dict) -> None:
    """Two nodes without a shared file system, launched as a scheduler would (env://, LOCAL_RANK 0 on both), each
    resuming from its own copy of ckpt/last.pt: node 1's copy was a stale epoch 1 while node 0's was epoch 2. Rank 0
    trained one epoch and rank 1 two, their optimisers' moments apart: rank 0 saved a checkpoint of the mixed state
    as the finished run, and rank 1 ended in gloo's traceback. Now every rank stops before training, saying both."""
    setup = outputs(tiny, tmp_path)
    ckpt_dir = train(setup, "--epochs", "2")
    for node, epoch in (("node0", 2), ("node1", 1)):
        (tmp_path / node / "ckpt").mkdir(parents=True)
        shutil.copy(ckpt_dir / f"epoch_{epoch:03d}.pt", tmp_path / node / "ckpt" / "last.pt")
    before = snapshot(ckpt_dir)
    rank0, rank1 = resumed_on_two_nodes(tmp_path, setup, "3")
    check_error(rank0, "--resume ckpt/last.pt is not the same checkpoint on every rank: rank 0's is epoch 2 (step 12, "
                "sha256 ", "rank 1's epoch 1 (step 6, sha256 ", "copy rank 0's file to every node",
                "shared file system")
    assert rank1.returncode == 2 and rank1.stderr.startswith("error: rank 1: --resume ckpt/last.pt is not the same"), \
        rank1.stderr
    assert snapshot(ckpt_dir) == before


def test_ranks_compare_the_resumed_checkpoint_as_loaded_not_its_file_read_again(tmp_path: Path, monkeypatch) -> None:
    """check_same_checkpoint hashed the --resume file again, after load_resume had loaded it: a file replaced in
    between (another run's save, a copy from another node) was compared in place of the weights this rank goes on
    from. Now each rank says the SHA-256 of the bytes it loaded."""
    path = tmp_path / "last.pt"
    state = {"kind": "x", "model": {}, "epoch": 2, "step": 12, **{k: {} for k in training.TRAINING_STATE}}
    torch.save(state, path)
    loaded = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    ckpt = training.load_resume(path, "x")
    torch.save({**state, "epoch": 3}, path)                 # replaced after it was read
    said = []
    monkeypatch.setattr(training, "ranks_apart", lambda mine: (said.append(mine), ([mine], []))[1])
    training.check_same_checkpoint(path, ckpt)
    assert said == [(2, 12, loaded)] and loaded != file_sha256(path)


def test_a_resumed_checkpoint_replaced_as_it_is_loaded_is_named_by_the_bytes_loaded(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """load_resume's file_sha256 is the digest of the bytes torch.load read (read_checkpoint hashes them through the
    same open file): the file hashed again once loaded is another one when a run's save renamed a new last.pt in
    place meanwhile, and the ranks would compare weights none of them goes on from."""
    path = tmp_path / "last.pt"
    state = {"kind": "x", "model": {}, "epoch": 2, "step": 12, **{k: {} for k in training.TRAINING_STATE}}
    torch.save(state, path)
    loaded = file_sha256(path)
    real_load = torch.load

    def load_then_replaced(f, *args, **kwargs):
        out = real_load(f, *args, **kwargs)
        torch.save({**state, "epoch": 3}, tmp_path / "new.pt")
        os.replace(tmp_path / "new.pt", path)               # as atomic_torch_save renames the next epoch's in
        return out

    monkeypatch.setattr(torch, "load", load_then_replaced)
    ckpt = training.load_resume(path, "x")
    assert (ckpt["epoch"], ckpt["file_sha256"]) == (2, loaded) and file_sha256(path) != loaded


def test_a_rank_whose_node_lacks_the_resumed_checkpoint_stops_the_others(tmp_path: Path, tiny: dict) -> None:
    """Two nodes without a shared file system (env://, LOCAL_RANK 0 on both), node 1 without a copy of ckpt/last.pt:
    rank 1 read --resume before joining the process group and stopped, and rank 0 waited in init_process_group for
    $ECG_DIST_TIMEOUT (10 minutes by default) before saying that not all processes joined. Now the ranks join
    first: rank 0 says rank 1's error at its first collective."""
    setup = outputs(tiny, tmp_path)
    ckpt_dir = train(setup, "--epochs", "1")
    (tmp_path / "node0" / "ckpt").mkdir(parents=True)
    (tmp_path / "node1").mkdir()
    shutil.copy(ckpt_dir / "last.pt", tmp_path / "node0" / "ckpt" / "last.pt")
    before = snapshot(ckpt_dir)
    rank0, rank1 = resumed_on_two_nodes(tmp_path, setup, "2")
    check_error(rank0, "another rank failed (rank 1: checkpoint not found: ckpt/last.pt)")
    assert rank1.returncode == 2 and rank1.stderr == "error: rank 1: checkpoint not found: ckpt/last.pt\n", rank1.stderr
    assert snapshot(ckpt_dir) == before


def test_ranks_loading_different_vqvaes_are_stopped(tmp_path: Path, tiny: dict, tiny_vqvae: Path) -> None:
    """A forecaster's ranks each load --vqvae on their own node (here: two nodes without a shared file system, LOCAL_RANK 0
    on both, node 1's copy of another VQ-VAE): they encoded the windows with different VQ-VAEs and the Transformer
    trained on a mix of their codes, without a word. Now every rank stops before encoding, naming both digests."""
    other = torch.load(tiny_vqvae, weights_only=True)
    other["model"]["quantizer.codebook"] += 0.01
    for node, ckpt in (("node0", None), ("node1", other)):
        (tmp_path / node).mkdir()
        if ckpt is None:
            shutil.copy(tiny_vqvae, tmp_path / node / "vq.pt")
        else:
            torch.save(ckpt, tmp_path / node / "vq.pt")
    config = tmp_path / "gpt.json"
    config.write_text(json.dumps(TINY_GPT))
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "ECG_DIST_TIMEOUT": "60", "ECG_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "transformer_train.py"),
                               *flags(dict(outputs(tiny, tmp_path), config=str(config))), "--vqvae", "vq.pt",
                               "--device", "cpu"],
                              cwd=tmp_path / f"node{rank}", env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) for rank in (0, 1)]
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    check_error(subprocess.CompletedProcess([], procs[0].returncode, out0, err0),
                "the ranks loaded different VQ-VAEs (weights digest: rank 0's ", ", rank 1's ", "same --vqvae file")
    assert procs[1].returncode == 2 and err1.startswith("error: rank 1: the ranks loaded different VQ-VAEs"), err1
    assert "encoding" not in out0 + out1 and not (tmp_path / "results").exists()


def test_ranks_reading_different_prepared_data_are_stopped(tmp_path: Path, tiny: dict) -> None:
    """Two nodes without a shared file system (env://, LOCAL_RANK 0 on both), node 1's prepared folder made from other
    records: the model trained on a mix of both and run.json named rank 0's data alone. Now every rank stops before
    training, and the run's folders go."""
    other = tmp_path / "other"
    for i, name in enumerate(["100", "101", "102", "103", "104", "105"]):
        write_record(other / "wfdb", name, seed=10 + i, seconds=50.0)
    prepared = [tiny["prepared"], tiny_setup(other / "setup", other / "wfdb")["prepared"]]
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "ECG_DIST_TIMEOUT": "60"}
    procs = []
    for rank in (0, 1):
        (tmp_path / f"node{rank}").mkdir()
        (tmp_path / f"node{rank}" / "prep").symlink_to(prepared[rank])
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "vqvae_train.py"),
                                       *flags(dict(outputs(tiny, tmp_path), prepared="prep")), "--device", "cpu"],
                                      cwd=tmp_path / f"node{rank}", env={**env, "RANK": str(rank)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True))
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    check_error(subprocess.CompletedProcess([], procs[0].returncode, out0, err0),
                "the ranks read different prepared data (data hash, training/validation windows: rank 0's ",
                "rank 1's ", "every node needs the same prepared tensors")
    assert procs[1].returncode == 2 and err1.startswith("error: rank 1: the ranks read different prepared data"), err1
    assert not list((tmp_path / "results").iterdir()) and not list((tmp_path / "checkpoints").iterdir())


def test_a_rank_failing_alone_before_the_trainer_leaves_the_others_one_line(tmp_path: Path, tiny: dict) -> None:
    """Two nodes (env://, LOCAL_RANK 0 on both), node 1 without the prepared tensors: rank 1 said its error and exited,
    while rank 0, waiting in shared_run_dirs' broadcast, ended in gloo's traceback ('Connection closed by peer') and
    left its run folders, just made, empty. Rank 1 leaves word in the store; rank 0 says it in one line, folders gone."""
    (tmp_path / "empty").mkdir()
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "ECG_DIST_TIMEOUT": "60"}
    setup = {k: v for k, v in outputs(tiny, tmp_path).items() if k != "prepared"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "vqvae_train.py"), *flags(setup), "--device", "cpu"], cwd=ROOT,
                              env={**env, "RANK": str(rank),
                                   "ECG_PREPARED_DIR": tiny["prepared"] if rank == 0 else str(tmp_path / "empty")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
             for rank in (0, 1)]
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    missing = f"prepared tensors not found: {tmp_path / 'empty' / 'train.pt'}"
    check_error(subprocess.CompletedProcess([], procs[0].returncode, out0, err0),
                f"error: another rank failed (rank 1: {missing}")
    assert procs[1].returncode == 2 and err1.startswith(f"error: rank 1: {missing}"), err1
    assert not list((tmp_path / "results").iterdir()) and not list((tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("script, shipped", [("transformer_train", "transformer"), ("latent_sde_train", "latent_sde")])
def test_a_forecasters_run_roots_are_checked_before_its_data_is_encoded(script, shipped, tmp_path, monkeypatch):
    """A --results that takes no folder (a name too long, a read-only folder) was found after every training window
    had been encoded by the VQ-VAE (minutes with a cold cache); now before the encoding, the error naming it."""
    import paths
    from conftest import run_script

    module = importlib.import_module(script)
    monkeypatch.setattr(module, "forecaster_splits", lambda *a, **k: ({}, {}))     # no prepared data needed
    monkeypatch.setattr(module, "code_datasets" if script == "transformer_train" else "encode_splits",
                        lambda *a, **k: pytest.fail("the training data was encoded"))
    results = tmp_path / ("x" * 300)
    r = run_script(module.main, f"{script}.py", ["--device", "cpu", "--vqvae", str(paths.SHIPPED[shipped]),
                                                 "--results", str(results), "--checkpoints", str(tmp_path / "ckpt")])
    assert r.returncode == 2 and r.stderr == f"error: cannot write to the output folder {results}: File name too long\n"
    assert list(tmp_path.iterdir()) == []


LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", *sys.argv[2:]], start_new_session=True, stdout=sys.stdout,
                         stderr=open(sys.argv[1], "w"))
print(child.pid, flush=True)
time.sleep(60)
"""


def launch_worker(worker: str, err: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """A launcher that starts `worker` in a session of its own, as torchrun does, and waits: kill it to orphan the
    worker, whose stderr goes to `err`. Returns the launcher and the worker's pid."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(err), worker, *args], cwd=ROOT,
                                env={**ENV, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    return launcher, int(launcher.stdout.readline())


def stopped_says(err: Path) -> str:
    """The orphaned worker's stderr once it says it was terminated (or after 10 s)."""
    for _ in range(200):
        if "terminated" in err.read_text():
            break
        time.sleep(0.05)
    return err.read_text()


WATCHING = """
import time, running
def main():
    running.stop_when_orphaned(0.05)
    print("ready", flush=True)
    while True:
        time.sleep(0.01)
running.run_main(main)
"""


def test_a_torchrun_worker_whose_torchrun_is_killed_stops(tmp_path: Path) -> None:
    """torchrun starts its workers in sessions of their own: a kill -9 of torchrun left them training and writing the
    run's files. A worker that outlives the process that started it stops as on SIGTERM, saying why."""
    err = tmp_path / "err"
    launcher, worker = launch_worker(WATCHING, err)
    try:
        assert launcher.stdout.readline() == "ready\n"
        launcher.kill()
        launcher.wait()
        assert stopped_says(err) == (f"note: the process that started this one (torchrun, pid {launcher.pid}) is "
                                     "gone: stopping\nterminated\n")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


IMPORTING = """
import os, time, running
parent = os.getppid()
print("started", flush=True)
while os.getppid() == parent:       # a worker still importing torch when torchrun is killed
    time.sleep(0.01)
print(os.getppid(), flush=True)
def main():
    running.stop_when_orphaned(0.05)
    while True:
        time.sleep(0.01)
running.run_main(main)
"""


def test_a_torchrun_worker_orphaned_before_it_watches_stops(tmp_path: Path) -> None:
    """A kill -9 of torchrun while its workers imported torch left them adopted by init before their watch began,
    which then waited for init to go, and they waited in init_process_group for the whole timeout: a watch that
    begins with init as its parent, not naming the worker as torchrun does, stops at once."""
    err = tmp_path / "err"
    launcher, worker = launch_worker(IMPORTING, err, "vqvae_train.py", "--epochs", "2")
    try:
        assert launcher.stdout.readline() == "started\n"
        launcher.kill()
        launcher.wait()
        if launcher.stdout.readline() != "1\n":
            pytest.skip("a subreaper, not init, adopted the orphan")
        assert stopped_says(err) == "note: the process that started this one (torchrun) is gone: stopping\nterminated\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def test_a_collective_failing_after_torchrun_went_stops_the_rank(monkeypatch, capsys) -> None:
    """torchrun killed -9: the rank whose watch looked first stopped, and another's next collective failed on its
    closed connections before its own watch looked. The word the first one left went with torchrun's store, so that
    one ended in gloo's traceback (2 runs in 3); it stops as its watch would, once."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    sent = []
    monkeypatch.setattr(running, "_launcher", dead.pid)
    monkeypatch.setattr(running, "_orphan_stop", running.threading.Lock())
    monkeypatch.setattr(running.os, "kill", lambda pid, signum: sent.append((pid, signum)))
    for _ in range(2):      # the collective's failure, then the watch
        running.raise_word_left(RuntimeError("Connection closed by peer"), "resume with: ...")
    assert sent == [(os.getpid(), signal.SIGTERM)]
    said = f"note: the process that started this one (torchrun, pid {dead.pid}) is gone: stopping\n"
    assert capsys.readouterr().err == said


def test_an_orphaned_workers_resume_command_is_its_launchers_line_as_read_while_it_ran(monkeypatch) -> None:
    """torchrun of rank 0's node killed -9: rank 0 stopped, its launcher's command line gone with it from /proc, and
    said 'torchrun --nnodes=2 --nproc-per-node=1 vqvae_train.py --resume ...', without the node's rendezvous flags
    (--node_rank, --master_addr), as its resume command. It says the line read as it began (stop_when_orphaned)."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    line = ["torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", "0", "--master_addr", "10.0.0.1",
            "vqvae_train.py", "--results", "r"]
    monkeypatch.setattr(running, "_launcher", dead.pid)
    monkeypatch.setattr(running, "_launcher_line", line)
    monkeypatch.setattr(sys, "argv", ["vqvae_train.py", "--results", "r"])
    monkeypatch.setattr(running, "script_running", lambda: "vqvae_train.py")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    assert training.resume_hint("r/last.pt", "vqvae") == (
        "resume with (on each of the 2 nodes, with its own --node_rank, 0 to 1): torchrun --nnodes 2 "
        "--nproc_per_node 1 --node_rank 0 --master_addr 10.0.0.1 vqvae_train.py --resume r/last.pt")


def test_a_watched_launchers_line_is_read_as_the_watch_begins(monkeypatch) -> None:
    """The line an orphaned worker says (above) is the one stop_when_orphaned read from /proc while its launcher
    ran: read no earlier, none was there to say once the launcher had gone."""
    line = ["torchrun", "--nnodes", "2", "--node_rank", "0", "vqvae_train.py"]
    read = running.launcher_argv
    monkeypatch.setattr(running, "_launcher", None)
    monkeypatch.setattr(running, "_launcher_line", None)
    monkeypatch.setattr(running.threading, "Thread", lambda **kw: type("Thread", (), {"start": lambda self: None})())
    monkeypatch.setattr(running, "launcher_argv", lambda: line)
    running.stop_when_orphaned()
    monkeypatch.setattr(running, "launcher_argv", read)
    assert running._launcher == os.getppid()
    monkeypatch.setattr(running, "_launcher", os.getppid() + 1)      # as if init (or a subreaper) had adopted it
    assert running.orphaned() and running.launcher_argv() == line


@pytest.mark.parametrize("elastic", [True, False], ids=["torchrun", "other_launcher"])
def test_only_torchruns_workers_watch_their_launcher(monkeypatch, elastic: bool) -> None:
    """torchrun's workers (TORCHELASTIC_RUN_ID) watch it; srun's ranks and a lone process, whose launchers do not
    start them in sessions of their own, do not."""
    watched = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    if elastic:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    else:
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setattr(training, "_rank_device", lambda *a: torch.device("cpu"))
    monkeypatch.setattr(running, "stop_when_orphaned", lambda: watched.append(True))
    assert training.setup_runtime("cpu").world == 2 and watched == [True] * elastic


def test_a_process_watches_its_launcher_once(monkeypatch) -> None:
    """A second call (a second setup_runtime in one process) starts no second watch, which would say the note and
    send SIGTERM twice."""
    started = []
    monkeypatch.setattr(running, "_launcher", None)
    thread = type("Thread", (), {"start": lambda self: None})
    monkeypatch.setattr(running.threading, "Thread", lambda **kw: started.append(kw) or thread())
    running.stop_when_orphaned()
    running.stop_when_orphaned()
    assert [kw["name"] for kw in started] == ["stop_when_orphaned"]


def test_a_sigterm_to_every_process_of_a_torchrun_job_with_loader_workers_says_terminated_once(tmp_path: Path,
                                                                                                tiny: dict) -> None:
    """A scheduler's SIGTERM reaches every process of the job (SLURM signals the whole step; torchrun its workers'
    process groups), the DataLoader's worker processes (train.num_workers > 0) too. They died of it, and each rank
    ended in a traceback ('DataLoader worker (pid N) is killed by signal: Terminated', 'Exception ignored in ...
    __del__'), not in the stop it is. Forked with SIGTERM and SIGINT blocked, they leave the stop to their rank:
    one 'terminated; resume with' line. Torchrun's SIGTERM, forwarded, lands beside the test's: a rank whose second
    SIGTERM handler waited on the first one's lock said nothing until torchrun's SIGKILL, 30 s later."""
    setup = outputs(tiny, tmp_path)
    config = json.loads(Path(setup["config"]).read_text())
    config["train"]["num_workers"] = 2
    setup["config"] = str(tmp_path / "workers.json")
    Path(setup["config"]).write_text(json.dumps(config))
    proc = subprocess.Popen(torchrun(HARNESS, "--pause-at-step", "8", "vqvae_train", "--",
                                     *flags(setup, "--device", "cpu")),
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        seen = ""
        for line in proc.stdout:
            seen += line
            if seen.count("PAUSED") == 2:
                break
        for pid in [proc.pid, *descendants(proc.pid)]:      # every process of the job, as a scheduler signals it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=180)     # torchrun itself SIGKILLs a rank still there 30 s after its SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    said = [line for line in err.splitlines() if re.match(r"(error|terminated|interrupted|\[rank|Exception)", line)]
    assert len(said) == 1 and said[0].startswith("terminated; resume with: "), err
    assert "DataLoader worker" not in err, err
    assert "Unable to shutdown process" not in err, err     # torchrun's word for a rank it had to SIGKILL
