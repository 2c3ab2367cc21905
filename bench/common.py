"""What the bench scripts share: the repository on sys.path, the forecaster to time, memory figures,
one JSON line on stdout."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


OUTPUTS = ("bench/results.jsonl", "bench/results.md")     # what `make bench` rewrites while its scripts run


def bench_commit() -> str:
    """The checkout's commit at a bench script's start. The files `make bench` is writing are left out of the
    '-dirty' test: the line that deleted or appended to results.jsonl made every later line of a clean checkout
    read '-dirty'."""
    import paths

    return paths.git_commit(besides=OUTPUTS)


def positive_int(value: str) -> int:
    """argparse type of a count (samples, repeats, threads, windows): 0 or less is a usage error naming the flag,
    not a traceback from deep in the run (or, for a falsy 0, a silent default)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number}: give at least 1")
    return number


def positive_seconds(value: str) -> float:
    """argparse type of a duration in seconds: 0 or less is a usage error naming the flag."""
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value}: give seconds above 0")
    return number


def memory_mb() -> dict:
    """Peak resident set of this process (ru_maxrss) and, on Linux, how much of the current one is
    anonymous (held by the process) and file-backed (memory-mapped files: reclaimable page cache)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2 if sys.platform == "darwin" else 1024)
    out = {"peak_rss_mb": round(peak)}
    status = Path("/proc/self/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        for key in ("RssAnon", "RssFile"):
            if key in fields:
                out[f"{key[3:].lower()}_rss_now_mb"] = round(int(fields[key].split()[0]) / 1024)
    return out


def keep_encodings_in(tmp: Path) -> None:
    """Forecaster trainers cache their encoded windows in $ECG_CACHE_DIR, else beside the prepared tensors: a
    bench's throwaway VQ-VAE's go to its temporary folder, not to pile up in the user's cache."""
    os.environ["ECG_CACHE_DIR"] = str(tmp)


def train_on_the_fly(tmp: Path, kind: str) -> tuple[Path, Path]:
    """A default-size `kind` forecaster ("transformer" or "latent_sde", on its own VQ-VAE config) after 5
    steps of each training, on records 101 (train), 109 (validation) and 100 (test); returns
    (checkpoint, prepared folder)."""
    import importlib

    import paths
    import vqvae_train
    from hyper_params import load_config
    from prepare_mitbih import prepare
    from vqvae_eval import latest_checkpoint

    prepared, ckpts = tmp / "prepared", tmp / "checkpoints"
    keep_encodings_in(tmp)
    prepare(load_config(), paths.location("data"), prepared, records=["100", "101", "109"], download=False)
    flags = ["--epochs", "1", "--max-steps", "5", "--device", "cpu", "--prepared", str(prepared),
             "--results", str(tmp / "results"), "--checkpoints", str(ckpts)]
    vqvae_train.main(flags + (["--config", str(ROOT / "config_vqvae_sde.json")] if kind == "latent_sde" else []))
    vqvae = str(latest_checkpoint("vqvae", str(ckpts), "last.pt"))
    importlib.import_module(f"{kind}_train").main(flags + ["--vqvae", vqvae])
    return latest_checkpoint(kind, str(ckpts), "last.pt"), prepared


def forecaster_to_time(checkpoint: str | None, kind: str, tmp: Path) -> tuple[Path, Path | None, str]:
    """(checkpoint, prepared folder or None for the default, how it was chosen): the given one, else the
    newest checkpoints/<kind>-*/best.pt, else the shipped model of that kind, else one trained on the fly
    (latency depends on the model's size, not on its skill)."""
    from paths import SHIPPED, UserError
    from train_results import load_checkpoint
    from vqvae_eval import latest_checkpoint

    if checkpoint:
        load_checkpoint(checkpoint, kind)   # the other kind would fail only after loading and a warm-up
        return Path(checkpoint), None, checkpoint
    try:
        path = latest_checkpoint(kind)
        return path, None, str(path)
    except UserError:
        pass
    shipped = SHIPPED.get(kind)
    if shipped and shipped.exists() and load_checkpoint(shipped)["kind"] == kind:
        return shipped, None, f"the shipped model {shipped.name}"
    path, prepared = train_on_the_fly(tmp, kind)
    return path, prepared, f"trained on the fly (no checkpoints/{kind}-*/best.pt): default configs, 5 steps each"


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def emit(record: dict, commit: str) -> dict:
    """Print the result as one JSON line (everything else the scripts print goes to stderr), with the date, machine
    and `commit` it ran at (paths.git_commit at the script's start): bench/report.py, run later, maybe at another
    commit, reports the lines' own. Returns the line's dict, what a bench script's main(argv) returns when called
    from Python."""
    import torch

    record.update(date=time.strftime("%Y-%m-%d"), cpu=cpu_name(), cores=os.cpu_count(),
                  torch_threads=torch.get_num_threads(), torch=str(torch.__version__), git_commit=commit)
    print(json.dumps(record), flush=True)
    return record
