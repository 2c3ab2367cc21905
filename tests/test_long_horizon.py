"""bench/long_horizon.py: the per-window table of a long forecast of one record, and its seam figure."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from conftest import write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import long_horizon as L  # noqa: E402


def test_a_templates_paths_keep_the_records_size_and_rate_in_every_window(tmp_path, capsys):
    """The drafts the models start from, on a synthetic sinus record: every window beats at the truth's rate and
    the context's size, the same seed draws the same paths, and the table names each window."""
    record = write_record(tmp_path, "100")
    line = L.main(["--record", str(record), "--start", "20", "--horizon", "12", "--samples", "4", "--every", "6",
                   "--checkpoint", "template_ensemble"])
    assert [(w["from_s"], w["to_s"]) for w in line["windows"]] == [(0, 6), (6, 12)]
    for w in line["windows"]:
        assert all(0.8 < v < 1.25 for v in w["ptp"] + w["truth_ptp"]), w
        assert abs(w["hr_bpm"] - w["truth_hr_bpm"]) < 0.1 * w["truth_hr_bpm"], w
    assert line["same_seed_same_paths"] and line["seam_step_mv"] is not None
    assert "   6-12 " in capsys.readouterr().err


def test_a_step_at_every_block_edge_is_the_seam_figure():
    """A path that jumps by 1 mV from each 3 s block to the next and is flat within them: the edges' mean step is
    that jump, elsewhere none; a horizon of one block has no edge."""
    path = np.repeat(np.arange(4.0), 384)[None, :, None].repeat(2, 2)
    assert L.seam_steps(path, 384) == (1.0, 0.0)
    assert L.seam_steps(path[:, :384], 384) == (None, 0.0)
