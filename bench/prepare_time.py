"""Time to prepare every MIT-BIH record with config_vqvae.json (into a temporary folder): one JSON line.

    python3 bench/prepare_time.py        # raw records from $MITBIH_DIR or data/mitdb, never downloaded
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from common import emit, memory_mb

import paths  # noqa: E402 (common puts the repository on sys.path)
from hyper_params import load_config  # noqa: E402
from prepare_mitbih import prepare  # noqa: E402


def main() -> None:
    # no options, but --help says so rather than starting to prepare all 48 records
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    data = paths.location("data")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        meta = prepare(load_config(), data, Path(tmp), download=False)
        seconds = time.perf_counter() - t0
    emit({"bench": "prepare", "records": len(meta["records"]), "seconds": round(seconds, 1),
          "windows": meta["windows"], **memory_mb()})


if __name__ == "__main__":
    paths.run_main(main)
