"""Time to prepare every MIT-BIH record with config_vqvae.json's data section, or --config's as prepare_mitbih.py
takes it (into a temporary folder): one JSON line.

    python3 bench/prepare_time.py [--config PATH]   # raw records as prepare_mitbih.py finds them, never downloaded
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from common import bench_commit, emit, memory_mb

import paths  # noqa: E402 (common puts the repository on sys.path)
import running  # noqa: E402
from hyper_params import DEFAULT_CONFIG, load_config  # noqa: E402
from prepare_mitbih import prepare  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=paths.given_path, help="VQ-VAE config JSON (default: config_vqvae.json)")
    args = p.parse_args(argv)
    commit = bench_commit()     # at the start: the code that runs is the checkout of now, not of the end
    cfg = load_config(args.config)
    data = paths.location("data")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        meta = prepare(cfg, data, Path(tmp), download=False)
        seconds = time.perf_counter() - t0
    return emit({"bench": "prepare", "config": paths.shown(args.config or DEFAULT_CONFIG),
                 "records": len(meta["records"]), "seconds": round(seconds, 1), "windows": meta["windows"],
                 "data_hash": paths.run_data_hash(meta), **memory_mb()}, commit)


if __name__ == "__main__":
    running.run_main(main)
