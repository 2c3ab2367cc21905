"""Every entry point's main called from Python (a notebook, a script of one's own), as the trainers' are: the flags
as a list, the session's sys.argv never read (a notebook's are the kernel's), and what it made returned."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import forecast
import prepare_mitbih
import pretrained
import vqvae_eval
import vqvae_train
from conftest import ROOT, edit_tree_after, run_script, synthetic_ecg, write_record
from paths import PRETRAINED, SHIPPED, SHIPPED_SPECS, UserError, file_sha256
from test_pretrained import packing_a_changed_model, stopped_between_the_renames
from tiny import TINY, flags, tiny_setup

KERNEL_ARGV = ["/opt/conda/lib/python3.11/site-packages/ipykernel_launcher.py", "-f", "/root/kernel-1.json"]


@pytest.fixture
def notebook(monkeypatch):
    """sys.argv as Jupyter leaves it: a main that parsed it would stop at the kernel's -f."""
    monkeypatch.setattr(sys, "argv", list(KERNEL_ARGV))


def test_prepare_returns_its_meta(notebook, synthetic_db, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    meta = prepare_mitbih.main(["--config", str(config), "--data-dir", str(synthetic_db), "--out",
                                str(tmp_path / "prepared"), "--no-download"])
    assert meta == json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["splits"]["test"] == ["100"] and meta["windows"]["train"] > 0


def test_vqvae_eval_returns_its_report_or_the_records_codes(notebook, synthetic_db, tmp_path):
    setup = tiny_setup(tmp_path, synthetic_db)
    vqvae_train.main(flags(setup, "--epochs", "1", "--max-steps", "2"))
    (best,) = Path(setup["checkpoints"]).glob("vqvae-*/best.pt")
    report = vqvae_eval.main(["--checkpoint", str(best), "--split", "validation", "--prepared", setup["prepared"],
                              "--results", str(tmp_path / "eval")])
    assert report["split"] == "validation" and report["summary"]["records"] == 1
    assert report == json.loads(next((tmp_path / "eval").glob("vqvae_eval-*/reconstruction.json")).read_text())
    said = next((tmp_path / "eval").glob("vqvae_eval-*/reconstruction.md")).read_text()
    assert report["command"].startswith("python3 vqvae_eval.py --checkpoint ")
    assert f"made by `{report['command']}`" in said
    npz = vqvae_eval.main(["--checkpoint", str(best), "--record", str(synthetic_db / "100"), "--start", "5",
                           "--results", str(tmp_path / "eval")])
    assert npz.name == "100_5s.npz" and np.load(npz)["codes"].shape == (1, 16, 1)


def test_the_shipped_models_vqvae_is_loaded_and_coded_by_name(notebook, tmp_path, monkeypatch):
    """load_vqvae('pretrained') and vqvae_eval.py --checkpoint pretrained read a file or folder of that name (in the
    repository, the folder pretrained/, which they refused; 'pretrained_sde' was not found): they take the shipped
    models' names as Forecaster.from_checkpoint and forecast.py --checkpoint do, from any folder."""
    record = write_record(tmp_path / "db", "r", seconds=12)
    monkeypatch.chdir(tmp_path)
    for name, model in SHIPPED_SPECS.items():
        vq, ckpt = vqvae_eval.load_vqvae(name)
        shipped = vqvae_eval.load_vqvae(SHIPPED[model])[0].state_dict()
        assert all(torch.equal(w, shipped[k]) for k, w in vq.state_dict().items()) and "config" in ckpt, name
    npz = vqvae_eval.main(["--checkpoint", "pretrained", "--record", str(record), "--results", str(tmp_path / "ev")])
    assert str(np.load(npz)["checkpoint"]) == str(PRETRAINED)


def test_forecast_returns_the_samples_and_its_files(notebook, tmp_path):
    record = write_record(tmp_path / "db", "r", seconds=12)
    res = forecast.main(["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "5", "--horizon", "1",
                         "--samples", "3", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert res["samples"].shape == (3, 128, 2) and res["truth"].shape == (128, 2) and res["fs"] == 128
    assert [p.name for p in res["files"]] == ["r_5s_samples.npy", "r_5s.png", "r_5s.json"]
    np.testing.assert_array_equal(np.load(res["files"][0]), res["samples"])


def test_a_bad_request_from_python_raises_its_user_error(notebook, tmp_path):
    """run_main turns a UserError into one 'error:' line and exit status 2 for the script; called from Python, the
    error itself comes up, to be caught or read."""
    record = write_record(tmp_path / "db", "r", seconds=12)
    argv = ["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "30", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    said = r"--start 30.0 s must lie between 3.0 s .* and the record's end \(12.0 s\)"
    with pytest.raises(UserError, match=said):
        forecast.main(argv)
    res = run_script(forecast.main, "forecast.py", argv)
    assert res.returncode == 2 and re.fullmatch(f"error: {said} in {re.escape(str(record))}\n", res.stderr)


def test_packing_returns_the_shipped_file_and_names_its_own_flags(notebook, tmp_path, monkeypatch):
    """Packing stopped between its renames says how to pack again with the flags it was given, not the kernel's."""
    moved, argv = packing_a_changed_model(tmp_path, monkeypatch)
    assert pretrained.main(argv) == moved["latent_sde"]
    stopped_between_the_renames(monkeypatch)
    with pytest.raises(KeyboardInterrupt, match=re.escape(f"run python3 pretrained.py {' '.join(argv)} again")):
        pretrained.main(argv)


def test_a_bench_returns_its_json_line(notebook, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import sde_latency

    line = sde_latency.main(["--checkpoint", str(ROOT / "pretrained" / "latent_sde.pt"), "--samples", "2",
                             "--horizon", "0.5", "--repeats", "1"])
    assert line["bench"] == "sde_latency" and line["output_shape"] == [1, 2, 64, 2]
    assert json.loads(capsys.readouterr().out) == line
    # the weights timed, not only their path (the newest best.pt is replaced while its run goes on)
    assert line["checkpoint_sha256"] == file_sha256(ROOT / "pretrained" / "latent_sde.pt")


def test_the_forecast_latency_line_names_the_weights_it_timed(notebook, capsys, monkeypatch):
    """forecast_latency's line named its checkpoint by path ("the shipped model forecaster.pt") alone: which weights
    were timed was not said, the newest best.pt being replaced while its run goes on. Nor did it say that one
    context's time is a median of repeats, the others one run, nor (taken at the end) the commit it started at. Its
    validation contexts are synthetic here: a clean checkout has no prepared tensors."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import forecast_latency

    ecg = torch.as_tensor(synthetic_ecg(6, 128)[0], dtype=torch.float32)       # one 6 s window
    monkeypatch.setattr(prepare_mitbih, "load_split", lambda *a, **k: {"signals": ecg[None]})
    monkeypatch.setattr(forecast_latency, "timed", lambda fn: 0.0)    # the line, not its timings (2 min)
    edit_tree_after(monkeypatch, forecast_latency, "timed")         # the commit of the start, not of the end
    line = forecast_latency.main(["--checkpoint", str(PRETRAINED), "--samples", "1"])
    assert line["checkpoint"] == str(PRETRAINED) and line["checkpoint_sha256"] == file_sha256(PRETRAINED)
    assert line["git_commit"] == "at-start"
    assert line["contexts_1_repeats"] == 5
    assert json.loads(capsys.readouterr().out) == line


def test_a_trainer_stopped_in_a_notebook_says_how_to_resume_from_python(notebook, synthetic_db, tmp_path,
                                                                        monkeypatch):
    """A trainer's main called from Python and stopped said `python3 .../ipykernel_launcher.py --resume ...`, the
    kernel's launcher, which trains nothing: it names the main to call again (a script still names itself). So does
    a sweep script of one's own (run_main) calling it with a list of its own: it was told `python3 sweep.py --resume
    ...`, which passes no --resume on; the sweep's own command line passed on still names the sweep."""
    setup = tiny_setup(tmp_path, synthetic_db)
    vqvae_train.main(flags(setup, "--epochs", "1", "--max-steps", "2"))
    (last,) = Path(setup["checkpoints"]).glob("vqvae-*/last.pt")
    resume = ["--prepared", setup["prepared"], "--resume", str(last), "--epochs", "2"]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(vqvae_train, "run_splits", stopped)
    with pytest.raises(KeyboardInterrupt) as said:
        vqvae_train.main(resume)
    assert str(said.value) == f"resume with: vqvae_train.main(['--resume', {str(last)!r}])"
    r = run_script(lambda: vqvae_train.main(resume), "vqvae_train.py", resume)
    assert r.stderr.splitlines() == [f"interrupted; resume with: python3 vqvae_train.py --resume {last}"]
    r = run_script(lambda: vqvae_train.main(resume), "sweep.py", ["--lr", "1e-3"])
    assert r.stderr.splitlines() == [f"interrupted; resume with: vqvae_train.main(['--resume', {str(last)!r}])"]
    r = run_script(vqvae_train.main, "sweep.py", resume)
    assert r.stderr.splitlines() == [f"interrupted; resume with: python3 sweep.py --resume {last}"]
