"""What the bench scripts share: the repository on sys.path, memory figures, one JSON line on stdout."""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def emit(record: dict) -> None:
    """Print the result as one JSON line (everything else the scripts print goes to stderr)."""
    import torch

    record.update(cpu=cpu_name(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                  torch=str(torch.__version__))
    print(json.dumps(record), flush=True)
