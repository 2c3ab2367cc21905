"""One JSON line per bench script (bench/results.jsonl) -> a Markdown table (bench/results.md and stdout).

    python3 bench/report.py bench/results.jsonl bench/results.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # noqa: F401 (puts the repository on sys.path)

import paths  # noqa: E402 (common puts the repository on sys.path)
import running  # noqa: E402

MACHINE = ("date", "cpu", "cores", "torch_threads", "torch", "git_commit")     # said once in the header
REQUIRED = ("bench", "cpu", "cores", "torch_threads", "torch")     # in every line (date and git_commit came later)


def cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def machine_differences(row: dict, header: dict) -> list[str]:
    """The row's machine fields that are not the header's, a missing one as not recorded: an older line without
    git_commit or date read as run at the header's."""
    return [f"{k}: {row.get(k, 'not recorded')}" for k in MACHINE if row.get(k) != header.get(k)]


def read_lines(src: str) -> list[dict]:
    """The JSON lines of `src`; a line that is not a bench script's (a stray print, a cut-off write) is an error
    naming the file and line, not a traceback from json or a KeyError."""
    rows = []
    for n, line in enumerate(Path(src).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise paths.UserError(f"{src}, line {n}: not JSON ({e.msg})") from None
        missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise paths.UserError(f"{src}, line {n}: not a bench script's line (no {', '.join(missing)})")
        rows.append(row)
    return rows


def main(src: str, dst: str) -> str:
    rows = read_lines(src)
    if not rows:
        raise paths.UserError(f"{src} holds no results")
    m = rows[0]
    lines = ["# Benchmarks", "",
             f"{m.get('date', 'Date not recorded')}, commit {m.get('git_commit', 'not recorded')}: {m['cpu']}, "
             f"{m['cores']} cores, torch {m['torch']} on {m['torch_threads']} threads. Made by `make bench` from "
             f"`{src}`.", "", "| bench | peak RSS (MB) | results |", "|---|---:|---|"]
    for r in rows:
        details = [f"{k}: {cell(v)}" for k, v in r.items() if k not in ("bench", "peak_rss_mb", *MACHINE)]
        details += machine_differences(r, m)     # the header's machine, unless it differs
        lines.append(f"| {r['bench']} | {r.get('peak_rss_mb', '')} | {'; '.join(details)} |")
    text = "\n".join(lines) + "\n"
    paths.atomic_write_text(text, dst)     # a run cut short keeps the table before it
    print(text, end="")
    return text


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=paths.given_path, help="the bench scripts' JSON lines, e.g. bench/results.jsonl")
    p.add_argument("dst", type=paths.given_path, help="the Markdown table to write, e.g. bench/results.md")
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    running.run_main(lambda: main(args.src, args.dst))
