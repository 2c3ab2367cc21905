import argparse
import csv
import functools
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import forecast
import paths
import running
import transformer_train
import vqvae_eval
import vqvae_train
from conftest import (closing_lines, edit_tree_after, loads_of, periodic_ecg, resumes_told, scripted_validation,
                      stopped_at, trainer_inputs, undocumented_columns, vqvae_splits)
from forecast import Forecaster
from hyper_params import ModelConfig, config_from_dict, stored_config
from hyper_params_transformer import SampleConfig
from paths import UserError, file_sha256
from tiny import TINY, flags, plain_sample, plain_transformer, tiny_setup
from train_results import fixed_titles, fixed_windows
from transformer_train import encode_drafted, encode_split
from transformer import CodeGPT, favour, sample_next
from vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rope", [True, False])
def test_cache_and_no_cache_generate_the_same_codes(rope: bool) -> None:
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=32, block_size=24, dim=32, layers=2, heads=4, rope=rope).eval()
    ctx = torch.randint(0, 32, (5, 10))
    with pytest.raises(ValueError, match="block_size"):
        gpt.generate(ctx, 15)
    a = gpt.generate(ctx, 14, generator=torch.Generator().manual_seed(3), use_cache=True)
    b = gpt.generate(ctx, 14, generator=torch.Generator().manual_seed(3), use_cache=False)
    c = gpt.generate(ctx, 14, generator=torch.Generator().manual_seed(4), use_cache=True)
    assert a.shape == (5, 14) and torch.equal(a, b) and not torch.equal(a, c)
    # several samples per context: the cache reads each context once, then copies its keys and values
    d = gpt.generate(ctx, 14, generator=torch.Generator().manual_seed(3), num_samples=3)
    e = gpt.generate(ctx, 14, generator=torch.Generator().manual_seed(3), use_cache=False, num_samples=3)
    assert d.shape == (15, 14) and torch.equal(d, e)


@pytest.mark.parametrize("rope", [True, False])
def test_cached_logits_match_full_forward(rope: bool) -> None:
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=16, block_size=12, dim=16, layers=2, heads=2, rope=rope).eval()
    seq = torch.randint(0, 16, (2, 12))
    with pytest.raises(ValueError, match="13 code steps exceeds block_size 12"):    # positions it never learned
        gpt.hidden(torch.randint(0, 16, (2, 13)))
    full = gpt.hidden(seq)
    caches = [{} for _ in gpt.blocks]
    first = gpt.hidden(seq[:, :7], caches)
    rest = torch.cat([gpt.hidden(seq[:, i:i + 1], caches, offset=i) for i in range(7, 12)], 1)
    assert torch.allclose(torch.cat([first, rest], 1), full, atol=1e-5)


def test_sampling_truncation() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert (sample_next(logits, top_k=1, generator=g) == 1).all()
    assert (sample_next(logits, temperature=0) == 1).all()
    assert set(sample_next(logits, top_k=2, generator=g).tolist()) <= {1, 3}
    assert (sample_next(logits, top_p=0.5, generator=g) == 1).all()
    assert len(set(sample_next(logits, generator=g).tolist())) == 4


def test_sampling_follows_the_probabilities() -> None:
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    draws = sample_next(probs.log().repeat(20000, 1), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4) / len(draws)
    assert freq[1] == 0 and torch.allclose(freq, probs, atol=0.015)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny VQ-VAE then a tiny Transformer trained on synthetic records."""
    from conftest import write_record

    tmp = tmp_path_factory.mktemp("forecaster")
    db = tmp / "wfdb"
    for i, name in enumerate(["100", "101", "102", "103", "104", "105"]):
        write_record(db, name, seed=i)
    setup = tiny_setup(tmp, db)
    vqvae_train.main(flags(setup, "--device", "cpu", "--epochs", "2"))
    vq = next((tmp / "checkpoints").glob("vqvae-*/best.pt"))
    tcfg = tmp / "transformer.json"
    tcfg.write_text(json.dumps(plain_transformer(model={"dim": 32, "layers": 2, "heads": 2, "dropout": 0.0},
                                                 augment={"copies": 1},
                                                 train={"epochs": 3, "batch_size": 8, "learning_rate": 0.003,
                                                        "warmup_steps": 2, "max_steps_per_epoch": 15,
                                                        "plot_windows": 2})))
    setup_t = {**setup, "config": str(tcfg)}
    rows = transformer_train.main(flags(setup_t, "--device", "cpu", "--vqvae", str(vq)))
    ckpt = next((tmp / "checkpoints").glob("transformer-*/best.pt"))
    return {"tmp": tmp, "ckpt": ckpt, "row": rows, "setup": setup}


def test_a_run_stopped_before_its_trainer_leaves_no_folders(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """SIGTERM between making its folders and building its Trainer (run.json's record): they go, and it says that
    nothing was saved yet, as vqvae_train.py (test_training's test_a_run_stopped_before_its_trainer_...)."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "config": str(trained["tmp"] / "transformer.json"), "results": str(tmp_path / "r"),
             "checkpoints": str(tmp_path / "c")}
    r = stopped_at(monkeypatch, transformer_train, "run_record", running.Terminated(), "transformer_train.py",
                   flags(setup, "--device", "cpu", "--vqvae", str(vq)))
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        143, "terminated; nothing was saved yet (last.pt is written at the end of every epoch)")
    assert not any((tmp_path / "r").iterdir()) and not any((tmp_path / "c").iterdir())


def test_run_json_names_the_vqvae_as_given_and_as_read_here(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """--vqvae pretrained: run.json named the shipped file as resolved and its digest, not what the flag said; now
    both (vqvae_given), and null when the newest checkpoints/vqvae-*/best.pt was taken. The VQ-VAE's own record
    (its training's paths, of another machine for the shipped model's) stays in the checkpoint's vqvae entry."""
    shipped = tmp_path / "forecaster.pt"
    shutil.copy(trained["ckpt"], shipped)
    monkeypatch.setitem(paths.SHIPPED, "transformer", shipped)
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    run = trainer_inputs(monkeypatch, transformer_train, flags(setup, "--device", "cpu", "--vqvae", "pretrained"))
    assert {k: run["meta"][k] for k in vqvae_eval.VQVAE_KEYS} == {
        "vqvae_checkpoint": str(shipped), "vqvae_given": "pretrained", "vqvae_sha256": file_sha256(shipped)}
    assert run["extras"]["vqvae"]["meta"] == torch.load(shipped, weights_only=True)["vqvae"]["meta"]
    newest = tmp_path / "ck" / "vqvae-1" / "best.pt"
    newest.parent.mkdir(parents=True)
    shutil.copy(next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt")), newest)
    run = trainer_inputs(monkeypatch, transformer_train, flags(setup, "--device", "cpu"))
    assert {k: run["meta"][k] for k in vqvae_eval.VQVAE_KEYS} == {
        "vqvae_checkpoint": str(newest), "vqvae_given": None, "vqvae_sha256": file_sha256(newest)}


def test_run_json_names_the_vqvae_weights_it_read_though_best_pt_is_replaced_while_it_encodes(
        trained: dict, tmp_path: Path, monkeypatch) -> None:
    """vqvae_sha256 is the file the run read: taken once the windows were encoded (minutes, on MIT-BIH), it named a
    best.pt the VQ-VAE's run, still going, had saved meanwhile, weights this run never trained on."""
    vq_path = tmp_path / "best.pt"
    shutil.copy(next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt")), vq_path)
    read = file_sha256(vq_path)
    code_datasets = transformer_train.code_datasets

    def replaced_meanwhile(*a, **k):
        vq_path.write_bytes(b"the VQ-VAE run's next best.pt")
        return code_datasets(*a, **k)
    monkeypatch.setattr(transformer_train, "code_datasets", replaced_meanwhile)
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    run = trainer_inputs(monkeypatch, transformer_train, flags(setup, "--device", "cpu", "--vqvae", str(vq_path)))
    assert run["meta"]["vqvae_sha256"] == read != file_sha256(vq_path)


def test_run_json_names_the_commit_the_run_started_at_not_the_tree_after_encoding(trained: dict, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """git_commit is the checkout's as the script started: taken once the windows were encoded (minutes, on
    MIT-BIH), it named a tree edited or checked out meanwhile, code that never ran."""
    edit_tree_after(monkeypatch, transformer_train, "code_datasets")
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    run = trainer_inputs(monkeypatch, transformer_train, flags(setup, "--device", "cpu", "--vqvae", str(vq)))
    assert run["meta"]["git_commit"] == "at-start"


def test_a_resumed_run_stopped_while_encoding_says_how_to_resume(trained: dict, monkeypatch) -> None:
    """Ctrl-C while a resumed run encodes its windows, before its Trainer exists: the resume command, as a stop in
    training says it (test_training's test_a_resumed_run_stopped_before_its_trainer_says_how_to_resume)."""
    last = trained["ckpt"].parent / "last.pt"
    r = stopped_at(monkeypatch, transformer_train, "code_datasets", KeyboardInterrupt(), "transformer_train.py",
                   flags({"prepared": trained["setup"]["prepared"]}, "--device", "cpu", "--resume", str(last)))
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        130, f"interrupted; resume with: python3 transformer_train.py --resume {last}")


def test_tiny_train_then_forecast(trained: dict) -> None:
    run = next((trained["tmp"] / "results").glob("transformer-*"))
    losses = [float(r["train_loss"]) for r in csv.DictReader((run / "metrics.csv").open())]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (run / "forecast_epoch_003.png").exists()
    assert not undocumented_columns(run / "metrics.csv")
    fc = Forecaster.from_checkpoint(trained["ckpt"], "cpu")
    assert fc.fs == 64
    context = np.random.default_rng(0).standard_normal((3, 64, 2)).astype(np.float32) * 0.3
    out = fc.predict(context, horizon=50, num_samples=7, seed=1)
    assert out.shape == (3, 7, 50, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.std(axis=1).mean() > 0  # sampled paths differ


def test_a_checkpoint_from_before_the_drafts_forecasts_as_the_model_it_is(trained: dict, tmp_path: Path) -> None:
    """A Transformer checkpoint stored before the drafts, their tilt and noise and the augment section existed loads
    as the model without them it was (hyper_params_transformer.PREDATED), forecasts and all: today's defaults (the
    recipe's beat drafts) built a CodeGPT its weights did not fit."""
    from hyper_params_transformer import PREDATED

    ckpt = torch.load(trained["ckpt"], weights_only=True)
    for section in ("model", "sample"):         # the fixture's plain model and sampling, which PREDATED means
        assert all(ckpt["config"][section].pop(k) == v for k, v in PREDATED[section].items())
    del ckpt["config"]["augment"]
    torch.save(ckpt, tmp_path / "old.pt")
    old, new = (Forecaster.from_checkpoint(p, "cpu") for p in (tmp_path / "old.pt", trained["ckpt"]))
    assert old.gpt.draft is None and not old.draft_beats and old.sample == new.sample
    context = np.random.default_rng(0).standard_normal((2, 64, 2)).astype(np.float32) * 0.3
    np.testing.assert_array_equal(old.predict(context, 40, 3, seed=1), new.predict(context, 40, 3, seed=1))


def test_a_checkpoint_knows_its_training_and_validation_patients(trained: dict) -> None:
    """Stored with the run (Transformer and VQ-VAE), so evaluate.py warns when it scores them, on any database."""
    fc = Forecaster.from_checkpoint(trained["ckpt"], "cpu")
    assert fc.train_records == ["102", "103", "104", "105"] and fc.validation_records == ["101"]
    assert evaluate.seen_patients(fc, ["100", "101", "103", "999"]) == ["103"]
    assert evaluate.seen_patients(fc, ["100", "101", "103", "999"], "validation") == ["101"]
    fc.train_records = ["202"]          # MIT-BIH's 201 and 202 are one patient: scoring 201 is no test of it
    assert evaluate.seen_patients(fc, ["100", "201", "203"]) == ["201 (the patient of 202)"]
    ckpt = torch.load(trained["ckpt"], weights_only=True)
    del ckpt["vqvae"]["meta"]["train_records"]          # a VQ-VAE from before session 21: MIT-BIH's split assumed
    seen = forecast.seen_records(ckpt, fc.cfg.data)
    assert {"102", "103", "104", "105", "230"} <= set(seen) and not {"100", "101"} & set(seen)


def test_same_seed_same_forecast(trained: dict) -> None:
    fc = Forecaster.from_checkpoint(trained["ckpt"], "cpu")
    context = np.random.default_rng(1).standard_normal((2, 64, 2)).astype(np.float32) * 0.3
    a = fc.predict(context, 64, num_samples=5, seed=7)
    b = fc.predict(context, 64, num_samples=5, seed=7)
    c = fc.predict(context, 64, num_samples=5, seed=8)
    d = fc.predict(context, 64, num_samples=5, seed=7, use_cache=False)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    np.testing.assert_allclose(a, d, atol=1e-5)
    long = 4 * fc.gpt.block_size * fc.factor               # drawn a block at a time
    e = fc.predict(context, long, num_samples=5, seed=7)
    assert e.shape == (2, 5, long, 2) and np.isfinite(e).all()
    np.testing.assert_array_equal(e, fc.predict(context, long, num_samples=5, seed=7))
    np.testing.assert_allclose(e, fc.predict(context, long, num_samples=5, seed=7, use_cache=False), atol=1e-5)


def test_forecast_cli_on_a_real_record(trained: dict, mitdb: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "forecast.py", "--checkpoint", str(trained["ckpt"]), "--record",
                           str(mitdb / "100"), "--start", "60", "--samples", "20", "--out", str(tmp_path),
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    png, npy = tmp_path / "100_60s.png", tmp_path / "100_60s_samples.npy"
    assert png.stat().st_size > 20_000
    samples = np.load(npy)
    assert samples.shape == (20, 64, 2) and np.isfinite(samples).all()
    meta = json.loads((tmp_path / "100_60s.json").read_text())
    assert meta["fs"] == 64 and meta["leads"][0] == "MLII" and meta["torch_threads"] >= 1
    assert f"settings: {tmp_path / '100_60s.json'}" in proc.stdout.splitlines()


def test_forecast_cli_bad_start_is_one_line(trained: dict, mitdb: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "forecast.py", "--checkpoint", str(trained["ckpt"]), "--record",
                           str(mitdb / "100"), "--start", "0.2", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_residual_levels_are_drawn_coarse_to_fine_in_one_pass_per_step() -> None:
    """With Q codebooks a step is one position: generation gives [N, steps, Q], the same with and without
    the cache, and each finer level's logits depend on the coarser codes drawn for the same step."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=10, dim=16, layers=1, heads=2, levels=3).eval()
    ctx = torch.randint(0, 8, (2, 4, 3))
    out = [gpt.generate(ctx, 6, generator=torch.Generator().manual_seed(0), use_cache=c, num_samples=4)
           for c in (True, False)]
    assert out[0].shape == (8, 6, 3) and torch.equal(out[0], out[1]) and int(out[0].max()) < 8
    with pytest.raises(ValueError, match="2 codebook levels, the model 3"):
        gpt.generate(ctx[..., :2], 2)
    h = gpt.hidden(ctx)[:, -1]
    with torch.no_grad():
        assert not torch.allclose(gpt.level_logits(h, 1, torch.zeros(2, 1, dtype=torch.long)),
                                  gpt.level_logits(h, 1, torch.ones(2, 1, dtype=torch.long)))
    logits = gpt(ctx)
    assert logits.shape == (2, 3, 3, 8)
    with torch.no_grad():  # teacher forcing: level 2 of step t+1 sees that step's true levels 0 and 1
        assert torch.allclose(logits[:, -1, 2], gpt.level_logits(gpt.hidden(ctx[:, :3])[:, -1], 2, ctx[:, 3, :2]))


def test_draft_is_read_and_cached_alike() -> None:
    """A drafting model's logits depend on the draft of the step predicted; -1 means no draft (the same as
    passing none); the cache gives the same codes as full passes; a draft of the wrong length is refused."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, levels=3, draft=True).eval()
    with torch.no_grad():
        gpt.no_draft.normal_()  # trained models learn it: zero, as at init, would hide a mix-up
    seq = torch.randint(0, 8, (2, 9, 3))
    draft = torch.randint(0, 8, (2, 12, 3))
    draft[:, :5] = -1
    with torch.no_grad():
        assert torch.allclose(gpt(seq, torch.full_like(seq, -1)), gpt(seq))
        base, other = gpt(seq, draft[:, :9]), draft[:, :9].clone()
        other[:, 7] = (other[:, 7] + 1) % 8
        changed = (gpt(seq, other) - base).abs().amax((0, 2, 3))
    assert changed[6] > 0 and changed[:6].max() == 0  # position 6 predicts step 7; earlier ones cannot see it
    ctx = seq[:, :5]
    out = [gpt.generate(ctx, 7, generator=torch.Generator().manual_seed(2), use_cache=c, num_samples=3, draft=draft)
           for c in (True, False)]
    assert out[0].shape == (6, 7, 3) and torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="draft of 6 steps"):
        gpt.generate(ctx, 7, draft=draft[:, :6])
    # a draft per sample: the same draft three times is the shared draft; a changed draft changes only
    # its own sample's codes, cached or not, also after a one-step context (nothing shared to read once)
    own = draft.repeat_interleave(3, 0)
    gen = functools.partial(gpt.generate, steps=7, num_samples=3)
    assert torch.equal(gen(ctx, generator=torch.Generator().manual_seed(2), draft=own), out[0])
    with torch.no_grad():
        gpt.draft.weight.mul_(50)        # make the draft matter to this untrained model
    shared = gen(ctx, generator=torch.Generator().manual_seed(2), draft=draft)
    own[1::3, 5:] = (own[1::3, 5:] + 1) % 8
    for c in (True, False):
        per = gen(ctx, generator=torch.Generator().manual_seed(2), use_cache=c, draft=own)
        assert torch.equal(per[0::3], shared[0::3]) and torch.equal(per[2::3], shared[2::3])
        assert not torch.equal(per[1::3], shared[1::3])
    one = [gen(ctx[:, 4:], generator=torch.Generator().manual_seed(2), use_cache=c, draft=own[:, 4:]) for c in (True, False)]
    assert torch.equal(one[0], one[1])


def test_draft_bias_tilts_sampling_towards_the_draft() -> None:
    """A bias in log-odds favours each step's draft codes, cached or not; an overwhelming one takes them
    all; a row without a draft (-1) samples as before."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, levels=3, draft=True).eval()
    ctx, draft = torch.randint(0, 8, (2, 5, 3)), torch.randint(0, 8, (6, 12, 3))
    draft[:, :5] = -1

    def gen(bias: float, cache: bool = True) -> torch.Tensor:
        return gpt.generate(ctx, 7, generator=torch.Generator().manual_seed(2), use_cache=cache, num_samples=3,
                            draft=draft, draft_bias=bias)
    taken = [float((gen(b) == draft[:, 5:]).float().mean()) for b in (0.0, 2.0, 1e4)]
    assert taken[0] < taken[1] < taken[2] == 1.0
    assert torch.equal(gen(2.0), gen(2.0, cache=False))
    logits = torch.randn(3, 8)
    tilted = favour(logits, torch.tensor([4, -1, 0]), 1.5)
    assert tilted[0, 4] == logits[0, 4] + 1.5 and tilted[2, 0] == logits[2, 0] + 1.5
    assert torch.equal(tilted[1], logits[1])
    assert (tilted - logits).abs().sum() == 3.0


@pytest.mark.parametrize("temperature, bias", [(2e38, 2.0), (2e38, -2.0), (float("inf"), 2.0), (0.9, float("inf")),
                                               (0.0, float("inf"))])
def test_a_draft_bias_times_temperature_beyond_float32_is_refused_by_name(temperature: float, bias: float) -> None:
    """The bias enters as bias * temperature before the temperature divides the logits: beyond float32 it stopped in
    masked_fill's 'value cannot be converted to type float without overflow', at an infinite temperature every row
    drew the last code (inf / inf), and an infinite bias at temperature 0 took the draft codes greedy sampling
    ignores. Just below the limit the tilt is still `bias` log-odds, as it is at any temperature."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, draft=True).eval()
    ctx, draft = torch.randint(0, 8, (2, 5)), torch.randint(0, 8, (2, 12))
    draft[:, :5] = -1
    said = re.escape(f"draft_bias {bias} at temperature {temperature}: ") + ".* no finite float32"
    with pytest.raises(ValueError, match=said):
        gpt.generate(ctx, 7, temperature=temperature, draft=draft, draft_bias=bias)
    gen = torch.Generator().manual_seed(2)
    out = gpt.generate(ctx, 7, temperature=1.7e38, generator=gen, num_samples=300, draft=draft, draft_bias=2.0)
    taken = float((out == draft.repeat_interleave(300, 0)[:, 5:]).float().mean())
    assert abs(taken - math.exp(2) / (math.exp(2) + 7)) < 0.03
    most = torch.finfo(torch.float32).max          # float32's largest is still a number: the draft codes, always
    assert torch.equal(gpt.generate(ctx, 7, temperature=1.0, draft=draft, draft_bias=most), draft[:, 5:])


def test_a_draft_tilt_is_held_to_the_dtype_of_half_precision_logits() -> None:
    """Under autocast the logits are float16: bias 100 at temperature 1000 (1e5, beyond its 65504) is refused by the
    float16 bound, as float32's would let masked_fill stop in its overflow; 60000 is a number, the draft codes."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, draft=True).eval()
    ctx, draft = torch.randint(0, 8, (2, 5)), torch.randint(0, 8, (2, 12))
    draft[:, :5] = -1
    with torch.autocast("cpu", dtype=torch.float16):
        with pytest.raises(ValueError, match=r"= 100000 before .* no finite float16 \(at most 65504\)"):
            gpt.generate(ctx, 7, temperature=1000.0, draft=draft, draft_bias=100.0)
        assert torch.equal(gpt.generate(ctx, 7, temperature=1.0, draft=draft, draft_bias=60000.0), draft[:, 5:])


@pytest.mark.parametrize("default", [torch.float16, torch.bfloat16])
def test_the_draft_bias_is_added_in_the_logits_dtype_whatever_torch_s_default(default) -> None:
    """favour made the bias a tensor of torch's default dtype: a session's set_default_dtype(torch.float16) rounded
    the draft bias (0.1 to 0.0999755859375) before it was added to the float32 logits."""
    logits = torch.zeros(2, 4)
    expected = favour(logits, torch.tensor([1, -1]), 0.1)
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        got = favour(logits, torch.tensor([1, -1]), 0.1)
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32 and torch.equal(got, expected) and got[0, 1] == torch.tensor(0.1)


@pytest.mark.parametrize("draft", ["none", "seasonal", "beats"])
def test_default_codebooks_train_and_forecast(tmp_path: Path, draft: str) -> None:
    """With the default's three codebooks the Transformer reads and writes a step's codes at one position;
    with window gains a context twice as loud gets the same forecast twice as loud, also when it reads
    the seasonal-naive draft or beats drawn per sample."""
    from conftest import write_record

    db = tmp_path / "wfdb"
    for i, name in enumerate(["100", "101", "102", "103"]):
        write_record(db, name, seed=i)
    default = ModelConfig()                       # the default model's codebooks, gains and (no) attention
    keys = {k: getattr(default, k) for k in ("num_quantizers", "window_gain", "has_attention")}
    setup = tiny_setup(tmp_path, db, model=keys, train={"epochs": 1})
    vqvae_train.main(flags(setup, "--device", "cpu"))
    vq = next((tmp_path / "checkpoints").glob("vqvae-*/best.pt"))
    tcfg = tmp_path / "transformer.json"
    tcfg.write_text(json.dumps(plain_transformer(model={"dim": 16, "layers": 1, "heads": 2, "dropout": 0.0,
                                                        "draft": draft != "none", "draft_beats": draft == "beats"},
                                                 augment={"copies": 3},
                                                 train={"epochs": 1, "batch_size": 8, "warmup_steps": 1,
                                                        "max_steps_per_epoch": 4, "plot_windows": 1})))
    transformer_train.main(flags({**setup, "config": str(tcfg)}, "--device", "cpu", "--vqvae", str(vq),
                                 "--augment-copies", "0"))
    ckpt = next((tmp_path / "checkpoints").glob("transformer-*/best.pt"))
    assert torch.load(ckpt, weights_only=True)["config"]["augment"]["copies"] == 0   # the flag beats the config's 3
    fc = Forecaster.from_checkpoint(ckpt, "cpu")
    assert fc.gpt.levels == 3 and fc.gpt.codebook_size == 32 and fc.gpt.block_size == 32
    assert (fc.gpt.draft is not None) == (draft != "none") and fc.draft_beats == (draft == "beats")
    context = np.random.default_rng(0).standard_normal((2, 64, 2)).astype(np.float32)
    out = fc.predict(context, 40, 3, seed=0)
    assert out.shape == (2, 3, 40, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(fc.predict(2 * context, 40, 3, seed=0), 2 * out, rtol=1e-4, atol=1e-6)
    long = fc.predict(context, 200, 3, seed=0)               # four blocks, each after the last 16 codes drawn
    assert long.shape == (2, 3, 200, 2) and np.isfinite(long).all()
    np.testing.assert_allclose(fc.predict(2 * context, 200, 3, seed=0), 2 * long, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fc.predict(context, 200, 3, seed=0, use_cache=False), long, atol=1e-5)
    if draft == "beats":        # paths that take every draft code are their drafts: the template ensemble's,
        # noise and all (a context of 16 codes, all the model reads, so both see the same beats)
        from baselines import TemplateEnsemble
        from conftest import synthetic_ecg

        beating = np.stack([synthetic_ecg(3, 64, seed=s, hr_bpm=120)[0][96:160] for s in (1, 2)]).astype(np.float32)
        fc.sample.draft_spread, fc.sample.draft_bias, fc.sample.draft_noise = 0.05, 1e4, 0.4
        drafts = TemplateEnsemble(64)
        drafts.jitter, drafts.noise = 0.05, 0.4
        want = drafts.predict(beating, 40, 3, seed=0)
        assert want.std(axis=1).max() > 0.01                     # drawn beat times that differ
        np.testing.assert_allclose(fc.predict(beating, 40, 3, seed=0), want, atol=2e-5)
        # and so over a horizon of four blocks, each read after the last 16 codes drawn: the drafts stay
        # in step with the blocks
        beating = np.stack([synthetic_ecg(1.0, 64, seed=s, hr_bpm=180)[0] for s in (1, 2)]).astype(np.float32)
        want = drafts.predict(beating, 200, 3, seed=0)
        assert want.std(axis=1).max() > 0.01
        np.testing.assert_allclose(fc.predict(beating, 200, 3, seed=0), want, atol=2e-5)


def test_beat_draft_draws_beat_times_per_sample() -> None:
    """A beating context gets a draft per sample, each at its own drawn beat times, the same for the same seed;
    one without two R peaks gets its seasonal-naive continuation in every sample; given beat times
    replace the drawn ones."""
    from conftest import synthetic_ecg
    from forecast import beat_draft

    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(downsample_factor=4, channels=16, res_blocks=1, latent_dim=8, codebook_size=32,
                           num_quantizers=3, has_attention=False)).eval()
    ecg, beats = synthetic_ecg(6.0, 128, seed=1)
    x = torch.from_numpy(np.stack([ecg[:384], np.zeros((384, 2))]).astype(np.float32))
    d = beat_draft(vq, x, 24, 128, num_samples=4, seed=0)
    assert d.shape == (8, 96 + 24, 3) and (d[:, :96] == -1).all() and (d[:, 96:] >= 0).all()
    assert torch.equal(d, beat_draft(vq, x, 24, 128, num_samples=4, seed=0))
    assert len({tuple(row.flatten().tolist()) for row in d[:4, 96:]}) > 1        # beat trains of their own
    assert all(torch.equal(d[4], row) for row in d[5:])                          # the flat context: one
    given = [beats[beats >= 0], np.zeros(0)]
    own = beat_draft(vq, x, 24, 128, beats=given)
    later = beat_draft(vq, x, 24, 128, beats=[given[0] + 20, given[1]])
    assert own.shape == (2, 120, 3) and not torch.equal(own[0], later[0]) and torch.equal(own[1], later[1])


def test_training_kept_on_the_cpu_of_a_gpu_machine_stays_there(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """--device cpu where CUDA is available: the per-epoch forecast plots must not move the model being trained
    to the GPU (here a CPU-only build, where any move to CUDA raises)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [])
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    row = transformer_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "2",
                                       "--max-steps", "2", "--augment-copies", "0"))
    assert row["epoch"] == 2


def test_a_forecaster_checkpoint_lends_its_vqvae(trained: dict, tmp_path: Path) -> None:
    """--vqvae pretrained/forecaster.pt trains a new forecaster on the shipped codes (here: the tiny one's)."""
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    transformer_train.main(flags(setup, "--device", "cpu", "--vqvae", str(trained["ckpt"]), "--epochs", "1",
                                 "--max-steps", "1", "--augment-copies", "0"))
    new = torch.load(next((tmp_path / "ck").glob("transformer-*/last.pt")), weights_only=True)["vqvae"]["model"]
    lent = torch.load(trained["ckpt"], weights_only=True)["vqvae"]["model"]
    assert new.keys() == lent.keys() and all(torch.equal(new[k], lent[k]) for k in new)


def test_resume_goes_on_with_the_runs_own_vqvae(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """A VQ-VAE trained since is the newest, but a resumed Transformer keeps the codes it was trained on; the
    run's config and flags come from its checkpoint. A run of its own: resuming the module's shared run would
    change the model the other tests read."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    transformer_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "1", "--max-steps", "2",
                                 "--augment-copies", "0"))
    (last,) = (tmp_path / "ck").glob("transformer-*/last.pt")
    vqvae_train.main(flags({**trained["setup"], "results": setup["results"], "checkpoints": setup["checkpoints"]},
                           "--device", "cpu", "--epochs", "1", "--seed", "1"))
    before = torch.load(last, weights_only=True)
    loads, told = loads_of(monkeypatch, last), resumes_told(monkeypatch, transformer_train)
    row = transformer_train.main(["--device", "cpu", "--prepared", setup["prepared"],
                                  "--checkpoints", setup["checkpoints"], "--resume", str(last), "--epochs", "2"])
    assert len(loads) == 1 and [r["ckpt_dir"] for r in told] == [str(last.parent)]     # read once
    after = torch.load(last, weights_only=True)
    assert row["epoch"] == 2 and after["meta"]["vqvae_checkpoint"] == before["meta"]["vqvae_checkpoint"] == str(vq)
    assert after["meta"]["vqvae_sha256"] == before["meta"]["vqvae_sha256"] == file_sha256(vq)
    assert all(torch.equal(v, before["vqvae"]["model"][k]) for k, v in after["vqvae"]["model"].items())
    assert after["config"]["model"] == before["config"]["model"] and after["config"]["model"]["dim"] == 32


def test_closing_lines_score_the_last_epoch_and_say_what_to_run_next(trained: dict, tmp_path: Path, monkeypatch,
                                                                     capsys) -> None:
    """A run ended with where its files went, nothing on how good the model is or what to run with it: its closing
    lines now give the last epoch's validation scores, name that epoch and best.pt's (an early stop's earlier one),
    and print forecast.py and evaluate.py commands on best.pt that run as printed; a resume with nothing left to
    train prints none of them."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    scripted_validation(monkeypatch, [2.0, 1.0, 1.5, 1.6, 1.7])
    row = transformer_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "5", "--max-steps",
                                       "1", "--augment-copies", "0", "--patience", "1"))
    final, fc, ev = closing_lines(capsys.readouterr().out)
    assert final == ("final validation (epoch 3, in last.pt; best.pt is epoch 2's): cross-entropy 1.5000 nats a "
                     f"code, perplexity 4.5 of 32 codes, next-code accuracy {100 * row['val_accuracy']:.1f}%")
    (best,) = (tmp_path / "ck").glob("transformer-*/best.pt")
    assert fc[:4] == ["python3", "forecast.py", "--checkpoint", str(best)]
    # the tiny data section is not config_vqvae.json's: the VQ-VAE's config is named, not a placeholder to fill in
    assert ev == ["python3", "evaluate.py", "--model", str(best), "--split", "validation", "--prepared",
                  setup["prepared"], "--config", str(best.parent / "vqvae_config.json")]
    done = forecast.main([*fc[2:], "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "fc")])
    assert all(Path(f).is_file() for f in done["files"])
    evaluate.main([*ev[2:], "--results", str(tmp_path / "ev"), "--samples", "2", "--max-windows-per-record", "1"])
    capsys.readouterr()
    last = best.parent / "last.pt"
    transformer_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(last)])
    out = capsys.readouterr().out
    assert "nothing to train" in out and "final validation" not in out and "forecast with" not in out
    transformer_train.main(flags({**setup, "checkpoints": str(tmp_path / "ck2")}, "--device", "cpu", "--vqvae",
                                 str(vq), "--epochs", "1", "--max-steps", "1", "--augment-copies", "0"))
    assert closing_lines(capsys.readouterr().out)[0].startswith("final validation (epoch 1, in best.pt and last.pt): ")


def test_temperature_scales_the_logits():
    """Logits of t * log p sampled at temperature t draw p (the shipped sampler runs at 0.9)."""
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    for t in (0.5, 2.0):
        draws = sample_next((t * probs.log()).repeat(20000, 1), temperature=t,
                            generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(draws, minlength=4) / len(draws)
        assert torch.allclose(freq, probs, atol=0.015), t


def test_a_vanishing_temperature_draws_the_likeliest_code():
    """Temperature 0 is greedy and a small one nearly so; below ~1e-37 the tempered logits overflowed float32 to
    inf, their softmax was NaN and every row drew the last code. Rows whose logits are all negative overflow to
    -inf instead, with the same NaN."""
    logits = torch.randn(50, 16, generator=torch.Generator().manual_seed(0)) * 10
    logits[:25] -= 100              # all negative: a head's logits need not reach 0
    for t in (1e-6, 1e-30, 1e-40, 1e-45):
        draws = sample_next(logits, temperature=t, top_p=0.9, generator=torch.Generator().manual_seed(0))
        assert torch.equal(draws, logits.argmax(-1)), t


def test_codes_tied_for_the_likeliest_split_alike_however_small_the_temperature():
    """Sampling tends to the likeliest codes alike as the temperature shrinks: tied ones split at 1e-30, and below
    ~1e-37, where the tempered logits overflow, every draw took the first of them. Temperature 0 is greedy: the
    first."""
    logits = torch.tensor([[1.0, 3.0, 0.0, 3.0]]).repeat(4000, 1)
    for t in (1e-30, 1e-40, 1e-45):
        draws = sample_next(logits, temperature=t, top_k=2, generator=torch.Generator().manual_seed(0))
        assert set(draws.tolist()) == {1, 3} and abs((draws == 1).float().mean() - 0.5) < 0.03, t
    assert set(sample_next(logits, temperature=0.0).tolist()) == {1}


def test_a_long_context_is_read_at_its_end():
    """A context longer than the model's block is cut to its most recent samples: whatever came long before
    (here: noise or silence) does not change the forecast, which continues where the context ends."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    vq = VQVAE(cfg.model).eval()
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 32, 1, 2, 0.0)
    fc = Forecaster(vq, gpt, cfg, plain_sample(), "cpu")
    rng = np.random.default_rng(0)
    recent = 0.3 * rng.standard_normal((1, 128, 2)).astype(np.float32)
    early = [0.3 * rng.standard_normal((1, 160, 2)).astype(np.float32), np.zeros((1, 160, 2), np.float32)]
    a, b = (fc.predict(np.concatenate([e, recent], 1), 32, num_samples=3, seed=4) for e in early)
    np.testing.assert_array_equal(a, b)


def test_the_future_is_decoded_after_the_contexts_last_codes_and_cut_after_them():
    """The sampled codes are decoded after the context's last DECODE_MARGIN codes, its last code included (the seam
    the decoder smooths is the context's end, not a code before it), and the forecast is what follows those."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    vq = VQVAE(cfg.model).eval()
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 32, 1, 2, 0.0)
    fc = Forecaster(vq, gpt, cfg, plain_sample(), "cpu")
    context = 0.3 * np.random.default_rng(0).standard_normal((1, cfg.data.window_samples, 2)).astype(np.float32)
    decoded, decode = [], vq.decode
    vq.decode = lambda codes, unit: decoded.append((codes, decode(codes, unit))) or decoded[-1][1]
    out = fc.predict(context, 24, num_samples=2, seed=0)
    x = torch.from_numpy(context)
    codes, wave = decoded[0]
    seam = fc.DECODE_MARGIN                                             # the whole context here: 16 codes
    assert codes.shape[1] == seam + 6                                   # 24 samples: 6 codes of 4
    assert torch.equal(codes[:1, :seam], vq.encode(x, vq.unit(x))[:, -seam:])
    np.testing.assert_array_equal(out[0], wave[:, seam * fc.factor:seam * fc.factor + 24].numpy())


def test_a_contexts_forecast_in_a_batch_is_its_forecast_alone():
    """predict forecasts each context alone with the call's seed (one_by_one): the second context of a batch gets
    the paths it gets asked alone, not those of another seed."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 32, 1, 2, 0.0)
    fc = Forecaster(VQVAE(cfg.model).eval(), gpt, cfg, plain_sample(), "cpu")
    x = 0.3 * np.random.default_rng(0).standard_normal((2, cfg.data.window_samples, 2)).astype(np.float32)
    both = fc.predict(x, 16, num_samples=3, seed=4)
    np.testing.assert_array_equal(both[1:], fc.predict(x[1:], 16, num_samples=3, seed=4))


def test_a_vqvae_checkpoint_is_no_forecaster(tmp_path):
    """--checkpoint / --model pointing at the VQ-VAE of a run (an easy slip: both are best.pt) is one clear error
    saying what the file holds, not a KeyError from deep in the loader."""
    cfg = config_from_dict(TINY)
    path = tmp_path / "vqvae-1" / "best.pt"
    path.parent.mkdir()
    torch.save({"kind": "vqvae", "model": VQVAE(cfg.model).state_dict(), "config": cfg.to_dict(), "meta": {}}, path)
    with pytest.raises(UserError, match=r"'vqvae' model, not a forecaster.*vqvae_eval.load_vqvae\(path\) loads a VQ-VAE"):
        Forecaster.from_checkpoint(path, "cpu")
    vq, ckpt = vqvae_eval.load_vqvae(path)          # the README's way to a VQ-VAE checkpoint's codes and latents
    assert vq.encode(torch.zeros(1, 8 * vq.factor, 2)).shape[:2] == (1, 8)
    assert stored_config(ckpt["config"], str(path)).data == cfg.data


def test_the_first_forecast_start_of_a_record_is_one_context_in(tmp_path):
    """--start may be exactly one context into a record (the context is then the record's first samples), and
    no earlier: the bound the error message names is inclusive."""
    from baselines import Persistence
    from conftest import write_record
    from forecast import forecast_record
    from hyper_params import load_config

    cfg = load_config()
    fc = Persistence(cfg.data.samples_per_second)
    fc.cfg = cfg
    rec = write_record(tmp_path, "r", seconds=20, seed=1)
    first = cfg.data.window_samples / cfg.data.samples_per_second
    out = forecast_record(fc, str(rec), first, 1.0, 1, 0)
    assert out["start_sample"] == cfg.data.window_samples and out["samples"].shape == (1, fc.fs, 2)
    with pytest.raises(UserError, match="must lie between"):
        forecast_record(fc, str(rec), first - 1 / cfg.data.samples_per_second, 1.0, 1, 0)



def test_a_start_past_the_end_of_a_record_without_a_length_is_said_by_forecast(tmp_path):
    """A header may leave out the signal length (wfdb reads it from the .dat's size): --start past such a record's
    end got wfdb's 'cannot read the record (sampfrom must be shorter than the signal length)' from the span read,
    not forecast's bounds; the length is inferred as wfdb does, and the bounds name the record's end."""
    from baselines import Persistence
    from conftest import write_record
    from forecast import forecast_record
    from hyper_params import load_config

    cfg = load_config()
    fc = Persistence(cfg.data.samples_per_second)
    fc.cfg = cfg
    rec = write_record(tmp_path, "r", seconds=20, seed=1)
    hea = tmp_path / "r.hea"
    first, *rest = hea.read_text().splitlines()
    assert first.split() == ["r", "2", "360", "7200"]
    hea.write_text("\n".join(["r 2 360", *rest]) + "\n")          # no signal length
    assert forecast_record(fc, str(rec), 19.0, 1.0, 1, 0)["truth"].shape == (cfg.data.samples_per_second, 2)
    for start in (30.0, 100.0, 1000.0):
        with pytest.raises(UserError, match=r"--start .* must lie between .* and the record's end \(20\.0 s\)"):
            forecast_record(fc, str(rec), start, 1.0, 1, 0)


def test_a_start_just_past_the_end_is_refused_with_an_end_before_it(tmp_path):
    """MIT-BIH's 100 ends at 1805.56 s: --start 1805.6 was refused as outside '... and the record's end (1805.6 s)',
    the end rounded up to the very start refused. The end is rounded down, so a start the message allows works."""
    from baselines import Persistence
    from conftest import write_record
    from forecast import forecast_record
    from hyper_params import load_config

    cfg = load_config()
    fc = Persistence(cfg.data.samples_per_second)
    fc.cfg = cfg
    rec = write_record(tmp_path, "r", seconds=19.96, seed=1)       # 2555 samples at 128 Hz: 19.9609 s
    with pytest.raises(UserError, match=r"--start 19\.97 s must lie .* and the record's end \(19\.96 s\)"):
        forecast_record(fc, str(rec), 19.97, 1.0, 1, 0)
    assert forecast_record(fc, str(rec), 19.96, 1.0, 1, 0)["truth"].shape == (0, 2)


def test_a_context_not_of_whole_tenths_is_named_at_the_first_start_it_allows(tmp_path):
    """A 2.25 s context (a config's, or one's own forecaster's) was said as 2.2 s, rounded to the nearest tenth:
    '--start 2.2 s must lie between 2.2 s (one context) and ...', and 'lasts 2.2 s, shorter than the model's context
    of 2.2 s'. The first start allowed is rounded up, a record's length down, to 0.01 s."""
    import dataclasses

    from baselines import Persistence
    from conftest import write_record
    from forecast import forecast_record
    from hyper_params import load_config

    cfg = load_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, input_signal_duration=2.25))
    fc = Persistence(cfg.data.samples_per_second)
    fc.cfg = cfg
    rec = write_record(tmp_path, "r", seconds=20, seed=1)
    with pytest.raises(UserError, match=r"--start 2\.2 s must lie between 2\.25 s \(one context\) and the record's end "
                                        r"\(20\.0 s\)"):
        forecast_record(fc, str(rec), 2.2, 1.0, 1, 0)
    assert forecast_record(fc, str(rec), 2.25, 1.0, 1, 0)["start_sample"] == 288
    short = write_record(tmp_path, "s", seconds=2.24, seed=1)
    with pytest.raises(UserError, match=r"s lasts 2\.24 s, shorter than the model's context of 2\.25 s"):
        forecast_record(fc, str(short), 2.0, 1.0, 1, 0)


@pytest.mark.parametrize("flag", ["--start", "--horizon"])
def test_a_start_or_horizon_beyond_any_number_of_samples_is_refused(tmp_path, flag):
    """--start 1e308 (or --horizon 1e308) passed the check for a time, then its sample, 1e308 s times 128 Hz, was
    infinity: OverflowError's traceback."""
    from conftest import run_script, write_record

    write_record(tmp_path, "r", seconds=12, seed=0)
    times = {"--start": "5", "--horizon": "1", flag: "1e308"}
    r = run_script(forecast.main, "forecast.py", ["--checkpoint", "persistence", "--record", str(tmp_path / "r"),
                                                  "--out", str(tmp_path), *(f"{k}={v}" for k, v in times.items())])
    assert r.returncode == 2 and r.stderr == f"error: {flag} 1e+308 s is more samples than any record or memory holds\n"


def test_training_codes_of_the_context_do_not_see_its_future():
    """A forecast encodes its context alone, with no future to read: the training windows' context codes must
    be the codes of the context alone too (and the future's those of the future alone), not codes of the
    whole window, which the encoder's convolutions and attention would let leak across the forecast start."""
    torch.manual_seed(0)
    cfg = ModelConfig(has_attention=True, downsample_factor=4, channels=16, res_blocks=1, attention_heads=2,
                      attention_layers=1, latent_dim=8, codebook_size=256, num_quantizers=1, window_gain=False)
    vq = VQVAE(cfg).eval()
    x = torch.randn(6, 128, 2)
    codes = encode_split(vq, x, 64)
    with torch.no_grad():
        assert torch.equal(codes[:, :16], vq.encode(x[:, :64]))
        assert torch.equal(codes[:, 16:], vq.encode(x[:, 64:]))


def test_encoding_under_a_progress_bar_gives_the_codes_of_one_pass(monkeypatch):
    """The bar's batches change no code: the codes and drafts of 10 windows in batches of 4 are those of all 10
    at once; the bar counts the 3 batches, and shows on rank 0 only."""
    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(has_attention=True, downsample_factor=4, channels=16, res_blocks=1, attention_heads=2,
                           attention_layers=1, latent_dim=8, codebook_size=32, num_quantizers=2,
                           window_gain=False)).eval()
    x = torch.from_numpy(periodic_ecg(10, noise=0.02, period=50, length=256))   # 2-3 beats a context
    bars, real_tqdm = [], vqvae_eval.tqdm
    monkeypatch.setattr(vqvae_eval, "tqdm", lambda it, **kw: bars.append((len(it), kw["disable"])) or
                        real_tqdm(it, **kw))
    for encode in (lambda s: encode_split(vq, s, 128), lambda s: encode_drafted(vq, s, 128, 128, beats=True)):
        assert torch.equal(vqvae_eval.in_batches(encode, True, batch=4)(x), encode(x))
    vqvae_eval.in_batches(encode, False, batch=4)(x)
    assert bars == [(3, None), (3, None), (3, True)]



def test_frozen_encodings_encode_each_split_under_its_own_key(monkeypatch):
    """The validation encodings are the validation windows' (a validation loss scored on training windows would look
    better than it is), and each split is cached under a key naming the VQ-VAE's weights, its data and the split."""
    from types import SimpleNamespace

    from train_results import weights_digest
    vq = VQVAE(config_from_dict(TINY).model).eval()
    keys = []
    monkeypatch.setattr(vqvae_eval, "cached_encoding",
                        lambda kind, key, compute, prepared, what: keys.append((what, key)) or compute())
    train = {"signals": torch.zeros(3, 64, 2), "data_hash": "dt", "input_hash": "it"}
    val = {"signals": torch.ones(2, 64, 2), "data_hash": "dv", "input_hash": "iv"}
    rt = SimpleNamespace(is_main=False, distributed=False, device=torch.device("cpu"))
    t, v, augmented = vqvae_eval.frozen_encodings("codes", vq, lambda x: x[:, 0, 0], train, val, "k",
                                                  SimpleNamespace(copies=0), None, 0, None, rt)
    assert torch.equal(t, torch.zeros(3)) and torch.equal(v, torch.ones(2)) and augmented is None
    digest = weights_digest(vq)
    assert keys == [("train", f"{digest}:dt:it:train:k"), ("validation", f"{digest}:dv:iv:validation:k")]


def test_stretched_copies_are_cached_under_the_splits_key_too(monkeypatch):
    """The augmented copies' encodings name what the plain windows' do (drafts.VERSION with drafts): they were
    cached without it, so copies drafted the old way were read back after the drafts changed."""
    from types import SimpleNamespace

    vq = VQVAE(config_from_dict(TINY).model).eval()
    asked = []
    monkeypatch.setattr(vqvae_eval, "cached_encoding", lambda kind, key, compute, prepared, what: compute())
    monkeypatch.setattr(vqvae_eval, "augmented_encoding", lambda *a: asked.append(a) or ([], torch.zeros(0)))
    split = {"signals": torch.zeros(3, 64, 2), "data_hash": "d", "input_hash": "i"}
    rt = SimpleNamespace(is_main=False, distributed=False, device=torch.device("cpu"))
    vqvae_eval.frozen_encodings("codes", vq, lambda x: x[:, 0, 0], split, split, "64:steps:drafts9",
                                SimpleNamespace(copies=1), None, 0, None, rt)
    assert asked and asked[0][-1] == "64:steps:drafts9"


def test_encodings_made_on_a_gpu_are_cached_apart_from_a_cpus(monkeypatch):
    """A GPU codes some windows otherwise than a CPU (cuDNN convolutions run in TF32 by default on Ampere and later:
    0.4% of the shipped VQ-VAE's validation codes, in a third of its windows), so a CPU run reads no encoding a GPU
    run cached, its stretched copies' neither, and trains as a CPU run does; a CPU's keys are as they were."""
    from types import SimpleNamespace

    from train_results import weights_digest
    vq = VQVAE(config_from_dict(TINY).model).eval()
    monkeypatch.setattr(vq, "to", lambda device: vq)        # no GPU here: the device is only named
    split = {"signals": torch.zeros(3, 64, 2), "data_hash": "d", "input_hash": "i"}
    keys = {}
    for device in ("cpu", "cuda"):
        asked = keys[device] = []
        monkeypatch.setattr(vqvae_eval, "cached_encoding",
                            lambda kind, key, compute, prepared, what: asked.append(key) or compute())
        monkeypatch.setattr(vqvae_eval, "augmented_encoding", lambda *a: asked.append(a[-1]) or ([], torch.zeros(0)))
        rt = SimpleNamespace(is_main=False, distributed=False, device=torch.device(device))
        vqvae_eval.frozen_encodings("codes", vq, lambda x: x[:, 0, 0], split, split, "k", SimpleNamespace(copies=1),
                                    None, 0, None, rt)
    digest = weights_digest(vq)
    assert keys["cpu"] == [f"{digest}:d:i:train:k", f"{digest}:d:i:validation:k", "k"]
    assert len(keys["cuda"]) == 3 and not set(keys["cuda"]) & set(keys["cpu"])


def test_rotary_scores_depend_on_the_relative_position_alone() -> None:
    """Rotary embedding is a rotation per dimension pair: it keeps each vector's norm, and a query-key score
    depends only on their distance, also at offsets past the first table (which must grow), as generation
    deep into a long block needs."""
    from transformer import rotary

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 3, 10, generator=g), torch.randn(1, 2, 3, 10, generator=g)
    assert torch.allclose(rotary(q, 5).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    near = rotary(q, 7) @ rotary(k, 2).transpose(-1, -2)
    far = rotary(q, 307) @ rotary(k, 302).transpose(-1, -2)
    assert torch.allclose(near, far, atol=1e-4)
    assert not torch.allclose(near, rotary(q, 2) @ rotary(k, 7).transpose(-1, -2), atol=1e-3)


def test_a_forecast_under_inference_mode_leaves_training_possible(monkeypatch) -> None:
    """The rotary tables are built once and shared: first built by a forecast under torch.inference_mode, they were
    inference tensors, and every later training step of the session stopped in autograd's 'Inference tensors cannot
    be saved for backward'."""
    import transformer

    monkeypatch.setattr(transformer, "_ROPE", {})          # as in a fresh session: this forecast builds the tables
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=16, block_size=12, dim=16, layers=1, heads=2).eval()
    with torch.inference_mode():
        gpt.generate(torch.randint(0, 16, (1, 3)), 4, generator=torch.Generator().manual_seed(0))
    loss, _ = transformer_train.step_fn(gpt.train(), (torch.randint(0, 16, (2, 12)),))
    loss.backward()
    assert gpt.tok.weight.grad is not None and gpt.tok.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("rope", [True, False])
def test_cached_chunks_see_the_past_and_themselves_not_the_future(rope: bool) -> None:
    """Several new positions read at once after a filled cache (the masked path) give the hidden states of one
    full causal pass: each sees every cached position and the chunk's earlier ones, never a later one; and
    dropout stays off in eval there too."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=16, block_size=12, dim=16, layers=2, heads=2, dropout=0.5, rope=rope).eval()
    seq = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        full = gpt.hidden(seq)
        caches = [{} for _ in gpt.blocks]
        parts = [gpt.hidden(seq[:, :4], caches), gpt.hidden(seq[:, 4:9], caches, offset=4),
                 gpt.hidden(seq[:, 9:], caches, offset=9)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_a_step_embeds_each_level_with_its_own_rows() -> None:
    """Level q's code c enters as row q * codebook_size + c of the tied embedding and leaves through the same
    rows: code 3 at level 0 and code 3 at level 1 are different tokens."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=6, dim=16, layers=1, heads=2, levels=3).eval()
    codes = torch.tensor([[[3, 5, 1]]])
    w = gpt.tok.weight
    with torch.no_grad():
        assert torch.allclose(gpt.embed(codes), w[3] + w[8 + 5] + w[16 + 1])
        assert not torch.allclose(gpt.embed(codes), gpt.embed(codes[..., [1, 0, 2]]))
    assert gpt.head.weight is gpt.tok.weight


def test_draft_code_zero_is_a_draft_not_none() -> None:
    """Only -1 marks a missing draft: a draft of code 0 (the first code, as common as any) is read as a draft."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, levels=2, draft=True).eval()
    with torch.no_grad():
        gpt.no_draft.normal_()
        seq = torch.randint(0, 8, (2, 6, 2))
        zero = torch.zeros_like(seq)
        assert not torch.allclose(gpt(seq, zero), gpt(seq))
        assert torch.allclose(gpt.embed_draft(zero, seq.shape), gpt.draft(gpt.embed(zero)))


def test_draft_bias_is_in_log_odds_after_the_temperature() -> None:
    """At temperature t the draft's code gains `bias` in log-odds over the tempered logits (not bias / t): the
    draws follow softmax(logits / t + bias at the draft code)."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=4, block_size=6, dim=16, layers=1, heads=2).eval()
    h = torch.randn(1, 16).repeat(20000, 1)
    t, bias = 4.0, 1.5
    with torch.no_grad():
        want = (gpt.level_logits(h[:1], 0) / t).softmax(-1)[0].log()
    want[2] += bias
    codes = gpt.sample_step(h, t, 0, 1.0, torch.Generator().manual_seed(0), prefer=torch.full((20000, 1), 2),
                            bias=bias)
    freq = torch.bincount(codes[:, 0], minlength=4) / len(codes)
    assert torch.allclose(freq, want.softmax(-1), atol=0.015)


def test_a_draft_one_step_short_is_refused() -> None:
    """A draft must cover context + steps: one step short is a clear ValueError, not an IndexError mid-way."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, draft=True).eval()
    ctx = torch.randint(0, 8, (2, 4))
    assert gpt.generate(ctx, 5, draft=torch.randint(0, 8, (2, 9))).shape == (2, 5)
    with pytest.raises(ValueError, match="draft of 8 steps"):
        gpt.generate(ctx, 5, draft=torch.randint(0, 8, (2, 8)))


@pytest.mark.parametrize("cache", [True, False])
def test_an_empty_context_is_refused_by_name(cache: bool) -> None:
    """The first step is drawn from the context's last position: without one, generate failed in a traceback
    (UnboundLocalError with the cache, IndexError without)."""
    gpt = CodeGPT(codebook_size=8, block_size=16, dim=8, layers=1, heads=2).eval()
    with pytest.raises(ValueError, match="at least one code step"):
        gpt.generate(torch.empty(2, 0, dtype=torch.long), 3, use_cache=cache)


@pytest.mark.parametrize("cache", [True, False])
def test_negative_steps_or_no_samples_are_refused_by_name(cache: bool) -> None:
    """steps -1 stopped in torch's 'Trying to create tensor with negative dimension' with the cache and drew nothing
    without it; num_samples 0 drew nothing, -1 stopped in 'Repeats must be non-negative'. 0 steps draw nothing."""
    gpt = CodeGPT(codebook_size=8, block_size=16, dim=8, layers=1, heads=2).eval()
    ctx = torch.randint(0, 8, (2, 4), generator=torch.Generator().manual_seed(0))
    assert gpt.generate(ctx, 0, use_cache=cache).shape == (2, 0)
    for steps, samples in ((-1, 1), (2, 0), (2, -1)):
        with pytest.raises(ValueError, match=f"steps >= 0 and num_samples >= 1, got steps {steps}, num_samples "
                                             f"{samples}"):
            gpt.generate(ctx, steps, use_cache=cache, num_samples=samples)


def test_a_draft_of_neither_one_row_per_context_nor_per_sample_is_refused() -> None:
    """A draft has a row per context or one per sample; any other count stopped in torch's 'The size of tensor a
    (2) must match the size of tensor b (4)'."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, draft=True).eval()
    ctx = torch.randint(0, 8, (2, 4))
    for rows in (2, 6):
        draft = torch.randint(0, 8, (rows, 7))
        draft[:, :4] = draft[:1, :4]                # one per sample: the same over the context
        assert gpt.generate(ctx, 3, num_samples=3, draft=draft).shape == (6, 3)
    for rows, samples in ((4, 3), (3, 1)):
        with pytest.raises(ValueError, match=f"draft of {rows} rows"):
            gpt.generate(ctx, 3, num_samples=samples, draft=torch.randint(0, 8, (rows, 7)))


def test_top_k_of_all_but_one_code_drops_the_least_likely() -> None:
    """top_k = V - 1 still truncates: the least likely code is never drawn."""
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(2000, 1)
    draws = sample_next(logits, top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {1, 2, 3}


def test_top_p_keeps_the_fewest_codes_reaching_it_and_the_codes_tied_with_them() -> None:
    """Nucleus sampling keeps the fewest likeliest codes whose probability reaches top_p: a code whose likelier
    codes already hold exactly top_p was kept too (uniform logits at top_p 0.5: three codes of four). Codes tied
    with the last one kept are all kept, as top-k keeps ties with the k-th: a code's index means nothing, and the
    sort's order of ties kept the lower codes."""
    g = torch.Generator().manual_seed(0)

    def kept(logits: torch.Tensor, top_p: float) -> set[int]:
        return set(sample_next(logits.repeat(4000, 1), top_p=top_p, generator=g).tolist())
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    reached = logits.softmax(-1).cumsum(-1)[0].tolist()
    assert [kept(logits, p) for p in reached[:3]] == [{0}, {0, 1}, {0, 1, 2}]
    assert kept(logits, 0.01) == {0}
    assert kept(torch.zeros(1, 4), 0.5) == {0, 1, 2, 3}
    ties = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    assert kept(ties, 0.3) == {1, 3, 5} and kept(ties.flip(-1), 0.3) == {0, 2, 4}


@pytest.mark.parametrize("setting", [{"temperature": -1.0}, {"temperature": float("nan")}, {"top_k": -1},
                                     {"top_p": 0.0}, {"top_p": 1.5}])
def test_sampling_refuses_settings_the_config_refuses(setting: dict) -> None:
    """A negative or NaN temperature drew greedily or the last code, top_k -1 failed in torch.topk ('selected index
    k out of range'), top_p 0 drew greedily: what the config refuses (sample.*), sampling refuses by name."""
    name, value = next(iter(setting.items()))
    with pytest.raises(ValueError, match=f"{name} {value}"):
        sample_next(torch.zeros(2, 4), **setting)


def test_a_uniform_of_zero_never_draws_a_masked_code(monkeypatch) -> None:
    """The inverse CDF searches the uniform's right side: a draw u = 0 (one in 2**24 in float32) takes the first
    code of some probability, never a code truncation masked (probability 0, before it in the CDF)."""
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.zeros(*shape, dtype=kw.get("dtype")))
    assert sample_next(logits, top_k=2).tolist() == [1]
    assert sample_next(logits, top_p=0.5).tolist() == [1]


def test_sampling_extremes_draw_what_they_mean() -> None:
    """top_k beyond the codebook and top_p 1 truncate nothing (the same draws as no truncation); a huge temperature
    draws every code alike."""
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(4000, 1)
    plain = sample_next(logits, generator=torch.Generator().manual_seed(0))
    for setting in ({"top_k": 5}, {"top_k": 1000}, {"top_p": 1.0}):
        assert torch.equal(sample_next(logits, generator=torch.Generator().manual_seed(0), **setting), plain)
    hot = sample_next(logits, temperature=1e6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.bincount(hot, minlength=4) / len(hot), torch.full((4,), 0.25), atol=0.03)


def test_conv_attention_knows_where_each_frame_is() -> None:
    """Conv feature maps get sinusoidal positions before attention: frames of a constant input come out
    different, as they could not from position-blind attention."""
    from transformer import ConvAttention

    torch.manual_seed(0)
    out = ConvAttention(16, 2, 1).eval()(torch.ones(1, 16, 10))
    assert (out - out[..., :1]).abs().amax() > 1e-3


def test_a_shared_draft_reaches_every_sample_of_its_own_context() -> None:
    """A draft per context [B, T + steps] is shared by that context's samples, which lie next to each other: with
    an overwhelming bias every sample takes its own context's draft, cached or not."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, levels=2, draft=True).eval()
    ctx, draft = torch.randint(0, 8, (2, 5, 2)), torch.randint(0, 8, (2, 12, 2))
    for cache in (True, False):
        out = gpt.generate(ctx, 7, generator=torch.Generator().manual_seed(0), use_cache=cache, num_samples=3,
                           draft=draft, draft_bias=1e4)
        assert torch.equal(out, draft[:, 5:].repeat_interleave(3, 0))


def test_a_block_normalises_each_branch_with_its_own_norm() -> None:
    """Pre-norm: x + attn(ln1(x)), then x + mlp(ln2(x)). A trained checkpoint's two norms differ, so reading
    one for the other changes what it computes (the shipped forecaster's references hardly see it: its strong
    draft bias makes paths follow the drafts)."""
    from transformer import Block

    torch.manual_seed(0)
    block = Block(8, 2).eval()
    with torch.no_grad():
        for ln in (block.ln1, block.ln2):
            ln.weight.normal_(), ln.bias.normal_()
        x = torch.randn(2, 5, 8)
        h = x + block.attn(block.ln1(x))
        assert torch.allclose(block(x), h + block.mlp(block.ln2(h)), atol=1e-6)


def test_each_block_of_a_long_horizon_reads_the_codes_drawn_last():
    """A horizon beyond the block is drawn a block at a time, each block after the first reading the last codes drawn
    (its path's previous block), not the context again: else every block would restart from the context."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    vq = VQVAE(cfg.model).eval()
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 32, 1, 2, 0.0)
    fc = Forecaster(vq, gpt, cfg, plain_sample(), "cpu")
    calls, generate = [], gpt.generate

    def spy(ctx: torch.Tensor, steps: int, *args, **kwargs) -> torch.Tensor:
        calls.append((ctx, generate(ctx, steps, *args, **kwargs)))
        return calls[-1][1]
    gpt.generate = spy
    context = 0.3 * np.random.default_rng(0).standard_normal((1, 64, 2)).astype(np.float32)
    fc.predict(context, 4 * gpt.block_size * fc.factor, num_samples=2, seed=0)
    assert len(calls) > 2
    for (_, drawn), (ctx, _) in zip(calls, calls[1:]):
        k = min(drawn.shape[1], ctx.shape[1])
        assert ctx.shape[0] == 2 and torch.equal(ctx[:, -k:], drawn[:, -k:])


class Terminal(io.StringIO):
    """stderr as a terminal shows it, where tqdm draws its bars (in a log or a pipe it draws none)."""

    def isatty(self) -> bool:
        return True


def test_a_long_horizon_shows_its_blocks_drawn_on_a_terminal(monkeypatch) -> None:
    """5 min of 100 paths drew codes for over a minute without a word: a horizon of ROLL_BAR_BLOCKS blocks or more
    shows a bar of them on a terminal; a shorter one (evaluate.py's, window after window) shows none."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 32, 1, 2, 0.0)
    fc = Forecaster(VQVAE(cfg.model).eval(), gpt, cfg, plain_sample(), "cpu")
    context = 0.3 * np.random.default_rng(0).standard_normal((1, 64, 2)).astype(np.float32)
    span = gpt.block_size - 64 // fc.factor
    monkeypatch.setattr(Forecaster, "ROLL_BAR_BLOCKS", 3)
    for blocks, shown in ((2, False), (3, True)):
        monkeypatch.setattr(sys, "stderr", Terminal())
        fc.predict(context, blocks * span * fc.factor, num_samples=2, seed=0)
        assert ("drawing codes" in sys.stderr.getvalue()) == shown, (blocks, sys.stderr.getvalue())


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_generation_takes_the_codes_teacher_forcing_scores_highest(cache: bool) -> None:
    """Generation and training must read a sequence alike: each code drawn greedily (temperature 0) is, at its level,
    the top code of the teacher-forced logits of the whole drawn sequence, which condition each level on the same
    step's coarser codes and each position on the draft of the step it predicts."""
    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=2, heads=2, levels=3, draft=True).eval()
    with torch.no_grad():
        gpt.no_draft.normal_()
        gpt.draft.weight.mul_(50)                 # make the draft matter to this untrained model
        for p in gpt.depth.parameters():          # and the coarser codes of a step, through the depth head
            p.mul_(5)
    ctx, draft = torch.randint(0, 8, (2, 5, 3)), torch.randint(0, 8, (2, 12, 3))
    draft[:, :5] = -1
    out = gpt.generate(ctx, 7, temperature=0.0, use_cache=cache, num_samples=2, draft=draft)
    seq, full = torch.cat([ctx.repeat_interleave(2, 0), out], 1), draft.repeat_interleave(2, 0)
    with torch.no_grad():
        logits = gpt(seq, full)[:, 4:]                          # [N, 7, Q, K]: the logits of the drawn steps
    chosen = logits.gather(-1, out[..., None])[..., 0]
    assert (chosen >= logits.amax(-1) - 1e-5).all()


def test_a_training_step_scores_each_position_on_the_next_code_with_its_draft() -> None:
    """The loss is the cross-entropy of each position's logits against the codes of the step after it (not its own
    codes, which a model would learn to copy), read with the drafts of a drafting model; the accuracy counts the
    same targets."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    gpt = CodeGPT(codebook_size=8, block_size=10, dim=16, layers=1, heads=2, dropout=0.0, levels=2, draft=True).eval()
    with torch.no_grad():
        gpt.no_draft.normal_()
        gpt.draft.weight.mul_(50)
    codes, draft = torch.randint(0, 8, (3, 10, 2)), torch.randint(0, 8, (3, 10, 2))
    draft[:, :4] = -1
    loss, stats = transformer_train.step_fn(gpt, (codes, draft))
    with torch.no_grad():
        logits = gpt(codes, draft)                                  # [B, 9, Q, K]
    assert torch.allclose(loss, F.cross_entropy(logits.flatten(0, -2), codes[:, 1:].flatten()), atol=1e-6)
    assert torch.allclose(stats["accuracy"], (logits.argmax(-1) == codes[:, 1:]).float().mean())


def test_beat_drafts_of_training_windows_lay_beats_at_the_windows_own_beats() -> None:
    """In training the beat draft is told where the window's future beats are (its own R peaks), not drawn from the
    context: two windows with the same context and different futures get different drafts."""
    from conftest import synthetic_ecg

    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(has_attention=False, downsample_factor=4, channels=16, res_blocks=1, latent_dim=8,
                           codebook_size=32, num_quantizers=2, window_gain=False)).eval()
    ecg = synthetic_ecg(6.0, 128, seed=1)[0]
    later = synthetic_ecg(6.0, 128, seed=2, hr_bpm=110)[0]          # beats of another rhythm
    x = np.stack([ecg[:512], np.concatenate([ecg[:256], later[256:512]])]).astype(np.float32)
    d = torch.cat([encode_drafted(vq, torch.from_numpy(w[None]), 256, 128, beats=True) for w in x])  # each alone
    assert d.shape == (2, 128, 4) and torch.equal(d[0, :64], d[1, :64])        # 2 codes, then 2 draft codes
    assert (d[:, :64, 2:] == -1).all() and not torch.equal(d[0, 64:, 2:], d[1, 64:, 2:])


def test_beat_drafts_follow_the_seed_and_the_configured_spread() -> None:
    """A beat-drafting forecaster whose paths take every draft code gives the template ensemble's forecast with the
    same jitter and noise, for any seed (not only 0): the seed draws the beat times and the noise, and
    sample.draft_spread sets the jitter (here not the default)."""
    from baselines import TemplateEnsemble
    from conftest import synthetic_ecg

    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 16, 1, 2, 0.0,
                  draft=True)
    sample = plain_sample(draft_spread=0.15, draft_bias=1e4, draft_noise=0.4)
    fc = Forecaster(VQVAE(cfg.model).eval(), gpt, cfg, sample, "cpu", draft_beats=True)
    drafts = TemplateEnsemble(64)
    drafts.jitter, drafts.noise = 0.15, 0.4
    beating = np.stack([synthetic_ecg(3, 64, seed=s, hr_bpm=120)[0][96:160] for s in (1, 2)]).astype(np.float32)
    for seed in (3, 5):
        want = drafts.predict(beating, 40, 4, seed=seed)
        np.testing.assert_allclose(fc.predict(beating, 40, 4, seed=seed), want, atol=2e-5)
    assert not np.allclose(want, drafts.predict(beating, 40, 4, seed=3))


def test_a_horizon_beyond_the_block_is_drawn_after_the_last_half_block():
    """As in training (context and future each half of the block, no draft over the context), a horizon is drawn
    after the last half block of a longer context, a long one a half block at a time, each block with no draft over
    the codes it reads. A short one read as much context as the block left room for, in positions training drafted
    (validation CRPS 1.5-3% worse for 5-6 s contexts and a 1 s horizon)."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 16, 1, 2, 0.0,
                  draft=True)
    fc = Forecaster(VQVAE(cfg.model).eval(), gpt, cfg, plain_sample(), "cpu")
    calls, generate = [], gpt.generate

    def spy(ctx: torch.Tensor, steps: int, *args, **kwargs) -> torch.Tensor:
        calls.append((ctx.shape[1], steps))
        assert (kwargs["draft"][:, :ctx.shape[1]] == -1).all() and (kwargs["draft"][:, ctx.shape[1]:] >= 0).all()
        return generate(ctx, steps, *args, **kwargs)
    gpt.generate = spy
    context = 0.3 * np.random.default_rng(0).standard_normal((1, 3 * 64, 2)).astype(np.float32)   # 48 codes
    half = gpt.block_size // 2
    fc.predict(context, 3 * half * fc.factor, num_samples=2, seed=0)
    assert calls == [(half, half)] * 3
    calls.clear()
    fc.predict(context, 5 * fc.factor, num_samples=2, seed=0)
    assert calls == [(half, 5)]


def test_a_seasonal_drafting_forecaster_reads_each_steps_own_draft():
    """With an overwhelming draft bias the codes drawn are the codes of the seasonal-naive continuation, step for step:
    the draft of each step reaches the position that predicts it, over one block and over several. The continuation
    is coded over at least a training window's future (16 steps here), then cut."""
    from baselines import SeasonalNaive
    from conftest import synthetic_ecg

    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    vq = VQVAE(cfg.model).eval()
    gpt = CodeGPT(cfg.model.codebook_size, cfg.data.total_samples // cfg.model.downsample_factor, 16, 1, 2, 0.0,
                  draft=True)
    fc = Forecaster(vq, gpt, cfg, plain_sample(draft_bias=1e4), "cpu")
    drawn, roll = [], fc.roll
    fc.roll = lambda *args: drawn.append(roll(*args)) or drawn[-1]
    beating = synthetic_ecg(1.0, 64, seed=1, hr_bpm=120)[0][None].astype(np.float32)     # 16 codes: all read
    for steps in (10, 50):
        continuation = SeasonalNaive(64).predict(beating, max(steps, 16) * fc.factor)[:, 0]      # [1, H, 2]
        with torch.no_grad():
            want = vq.encode(torch.from_numpy(continuation)).reshape(1, -1)[:, :steps]
        fc.predict(beating, steps * fc.factor, 2, seed=0)
        assert torch.equal(drawn[-1].reshape(2, steps), want.expand(2, -1)), steps


def test_a_run_trains_on_the_training_codes_and_validates_on_the_validation_patients(trained: dict, tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """What transformer_train hands the trainer: the training windows' codes then the stretched copies', the
    validation patients' codes for validation and their windows for the plots (in seconds at the data's rate), a
    block as long as the code sequences, its seed and VQ-VAE recorded, a seeded start whatever the global RNG."""
    vq_path = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
             "config": str(trained["tmp"] / "transformer.json")}
    argv = flags(setup, "--device", "cpu", "--vqvae", str(vq_path), "--seed", "5")
    torch.manual_seed(1)
    run = trainer_inputs(monkeypatch, transformer_train, argv)
    vq, train, val, vq_ckpt = vqvae_splits(setup["prepared"], vq_path)
    codes, val_codes = (encode_split(vq, d["signals"], 64) for d in (train, val))
    (got,) = run["train_set"].tensors
    assert len(got) > len(codes) and torch.equal(got[:len(codes)], codes)      # the stretched copies after
    assert torch.equal(run["val_set"].tensors[0], val_codes)
    assert run["model"].block_size == run["extras"]["block_size"] == codes.shape[1] == 32
    assert run["meta"]["seed"] == run["settings"].seed == 5 and run["meta"]["vqvae_checkpoint"] == str(vq_path)
    assert run["meta"]["vqvae_sha256"] == file_sha256(vq_path)       # the weights: best.pt changes in its run
    assert run["extras"]["vqvae"]["meta"] == vq_ckpt["meta"] and run["config"]["vqvae"] == vq_ckpt["config"]
    plotted = []
    monkeypatch.setattr(transformer_train, "plot_epoch_forecasts", lambda *a, **k: plotted.append((a, k)))
    run["epoch_end"](run["model"], 1, True)
    windows, samples, fs, context = plotted[0][0][:4]
    np.testing.assert_array_equal(windows, fixed_windows(val, 2).numpy())
    assert plotted[0][0][-1] == fixed_titles(val, 2, setup["prepared"], 64)       # each panel: its record
    assert (fs, context, samples.shape) == (64, 64, (2, 20, 64, 2))
    torch.manual_seed(2)
    again = trainer_inputs(monkeypatch, transformer_train, argv + ["--augment-copies", "0"])
    assert len(again["train_set"]) == len(codes)
    start, other = run["model"].state_dict(), again["model"].state_dict()
    assert all(torch.equal(start[k], other[k]) for k in start)
    raw = json.loads((trained["tmp"] / "transformer.json").read_text())      # learned positions, beat drafts:
    raw["model"].update(rope=False, draft=True, draft_beats=True)           # the model and the plots take them
    (tmp_path / "beats.json").write_text(json.dumps(raw))
    beats = trainer_inputs(monkeypatch, transformer_train, flags({**setup, "config": str(tmp_path / "beats.json")},
                                                                 "--device", "cpu", "--vqvae", str(vq_path),
                                                                 "--augment-copies", "0"))
    assert beats["model"].pos is not None and beats["model"].draft is not None
    made = []
    monkeypatch.setattr(transformer_train, "Forecaster", lambda *a, **kw: made.append(kw) or
                        argparse.Namespace(predict=lambda x, h, **k: np.zeros((len(x), 20, h, 2), np.float32)))
    beats["epoch_end"](beats["model"], 1, True)
    assert made == [{"draft_beats": True}]


def test_seasonal_and_beat_drafts_are_cached_apart(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """code_datasets: a beat-drafting run after a seasonal-drafting one on the same VQ-VAE and windows gets its own
    drafts, not the seasonal ones from the cache (and the codes and drafts as separate tensors); the cache is kept
    in the run's prepared folder."""
    from hyper_params_transformer import transformer_config_from_dict
    from training import Runtime

    monkeypatch.delenv("ECG_CACHE_DIR", raising=False)       # the cache in --prepared's folder
    vq_path = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    vq, train, val, vq_ckpt = vqvae_splits(trained["setup"]["prepared"], vq_path)
    cfg = config_from_dict(vq_ckpt["config"])
    args = argparse.Namespace(prepared=str(tmp_path / "elsewhere"))
    for beats in (False, True):
        tcfg = transformer_config_from_dict({"model": {"draft": True, "draft_beats": beats}, "augment": {"copies": 0}})
        _, val_set, _ = transformer_train.code_datasets(vq, cfg, tcfg, train, val, args, Runtime(torch.device("cpu")))
        want = encode_drafted(vq, val["signals"], 64, 64, beats=beats)
        assert torch.equal(torch.cat(val_set.tensors, -1), want) and len(val_set.tensors) == 2
    assert len(list((tmp_path / "elsewhere").rglob("*.pt"))) == 4        # each kind's training and validation
    monkeypatch.setattr(transformer_train, "DRAFTS_VERSION", transformer_train.DRAFTS_VERSION + 1)   # drafts made anew
    transformer_train.code_datasets(vq, cfg, tcfg, train, val, args, Runtime(torch.device("cpu")))
    assert len(list((tmp_path / "elsewhere").rglob("*.pt"))) == 6        # encoded again, not read from the cache


def test_a_short_horizon_reads_the_draft_codes_of_a_trained_length_draft():
    """A draft shorter than a training window's future is coded continued, then cut: coded alone, a 2-step draft's
    codes (the encoder's edge, the gain of 16 samples) were none of the codes the same samples have in a 3 s draft,
    and the shipped model's CRPS over the first 1/8 s of 60 validation windows was 0.064 mV at a 1/8 s horizon
    against 0.044 at 3 s. Here the drafts are exact (a periodic context, no jitter), so the codes must agree."""
    import dataclasses

    fc = Forecaster.from_checkpoint(ROOT / "pretrained" / "forecaster.pt", "cpu")
    fc.sample = dataclasses.replace(fc.sample, draft_spread=0.0)
    drafts, generate = [], fc.gpt.generate

    def spy(ctx: torch.Tensor, steps: int, *args, **kwargs) -> torch.Tensor:
        drafts.append(kwargs["draft"])
        return generate(ctx, steps, *args, **kwargs)
    fc.gpt.generate = spy
    short, full = (fc.predict(periodic_ecg(1, length=384), h, num_samples=2, seed=1) for h in (16, 384))
    T = 384 // fc.factor
    assert drafts[0].shape[1] == T + 2 and torch.equal(drafts[0][:, T:], drafts[1][:, T:T + 2])
    assert short.shape == (1, 2, 16, 2) and full.shape == (1, 2, 384, 2)


def test_a_trained_models_sampling_set_anew_from_python_is_checked_as_a_configs():
    """README: fc.sample set anew samples a trained model otherwise. Only the constructor checked the settings, so a
    draft_noise of -0.2, a draft_spread of 2 or a draft_bias of -1 set there forecast without a word; predict now
    refuses each by its key, as a config's check does."""
    import dataclasses

    fc = Forecaster.from_checkpoint(ROOT / "pretrained" / "forecaster.pt", "cpu")
    x, stored = periodic_ecg(1, length=384), fc.sample
    base = fc.predict(x, 16, num_samples=2, seed=1)
    fc.sample = dataclasses.replace(stored, temperature=0.0)     # greedy: the network's own likeliest codes
    assert not np.array_equal(fc.predict(x, 16, num_samples=2, seed=1), base)
    for key, value in (("draft_noise", -0.2), ("draft_spread", 2.0), ("draft_bias", -1.0)):
        fc.sample = dataclasses.replace(stored, **{key: value})
        with pytest.raises(UserError, match=f"'sample.{key}' = {value}"):
            fc.predict(x, 16, num_samples=2, seed=1)


@pytest.mark.parametrize("script", ["transformer_train", "latent_sde_train"])
def test_a_vqvae_of_windows_without_a_future_is_one_clear_error(script, monkeypatch, tmp_path):
    """data.forecast_predictions 0 trains a VQ-VAE fine, but its windows hold nothing to forecast: both forecasters'
    trainers say so and name the checkpoint (they ended in a convolution's traceback while encoding)."""
    import importlib

    module = importlib.import_module(script)
    raw = json.loads(json.dumps(TINY))
    raw["data"] = {**raw.get("data", {}), "forecast_predictions": 0}
    vq = VQVAE(config_from_dict(raw).model)
    monkeypatch.setattr(module, "run_vqvae", lambda args, resume: (vq, {"config": raw}, "vq0.pt", ""))
    with pytest.raises(UserError, match=r"vq0.pt: the VQ-VAE's data.forecast_predictions is 0"):
        module.main(["--prepared", str(tmp_path), "--results", str(tmp_path), "--checkpoints", str(tmp_path)])


def test_a_context_and_an_end_between_hundredths_are_said_at_a_start_allowed(tmp_path):
    """A context of 289 samples at 128 Hz (2.2578 s) is said as 2.26 s, the first start allowed, and a record of
    2559 samples (19.9922 s) ends at 19.99 s: rounded the other way, 2.25 s and 20.0 s are starts refused."""
    import dataclasses

    from baselines import Persistence
    from conftest import write_record
    from forecast import forecast_record
    from hyper_params import load_config

    cfg = load_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, samples_per_second=128,
                                                            input_signal_duration=289 / 128))
    fc = Persistence(128)
    fc.cfg = cfg
    rec = write_record(tmp_path, "r", seconds=2559 / 128, fs=128, seed=1)
    with pytest.raises(UserError, match=r"--start 2\.25 s must lie between 2\.26 s \(one context\) and the record's "
                                        r"end \(19\.99 s\)"):
        forecast_record(fc, str(rec), 2.25, 1.0, 1, 0)
    short = write_record(tmp_path, "s", seconds=2.25, fs=128, seed=1)
    with pytest.raises(UserError, match=r"s lasts 2\.25 s, shorter than the model's context of 2\.26 s"):
        forecast_record(fc, str(short), 2.0, 1.0, 1, 0)


@pytest.mark.parametrize("cache", [True, False])
def test_codes_outside_the_codebooks_are_refused_by_name(cache: bool) -> None:
    """Level q's code c is row q * codebook_size + c of one embedding table: a context code beyond the codebook (a
    VQ-VAE of larger codebooks) or a negative one was read as another level's code, and generated without a word.
    Drafts take -1 (none) and nothing below it."""
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, levels=2, draft=True).eval()
    ctx = torch.randint(0, 8, (2, 4, 2), generator=torch.Generator().manual_seed(0))
    draft = torch.full((2, 7, 2), -1)
    assert gpt.generate(ctx, 3, use_cache=cache, draft=draft).shape == (2, 3, 2)
    for bad, got in ((8, "0..8"), (-1, "-1..7")):
        wrong = ctx.clone()
        wrong[1, 2, 0] = bad
        with pytest.raises(ValueError, match=rf"context codes must be in 0\.\.7 \(the model's codebook_size 8\), "
                                             rf"got {got}"):
            gpt.generate(wrong, 3, use_cache=cache)
    draft[0, 5, 1] = -2
    with pytest.raises(ValueError, match=r"draft codes must be in -1\.\.7 .*got -2\.\.-1"):
        gpt.generate(ctx, 3, use_cache=cache, draft=draft)


def test_a_context_of_one_code_outside_the_codebook_is_refused_by_name() -> None:
    """One code is a context too: beyond the codebook it is named as any longer context's codes are."""
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2).eval()
    with pytest.raises(ValueError, match=r"context codes must be in 0\.\.7 .*got 9\.\.9"):
        gpt.generate(torch.tensor([[9]]), 2)


def test_a_forecaster_of_parts_that_do_not_fit_is_refused_by_name() -> None:
    """Forecaster(vq, gpt, cfg, ...) built by hand: a CodeGPT of other codebooks stopped in an embedding's 'index out of
    range in self' at the first forecast, a block no longer than a context in 'range() arg 3 must not be zero' (or
    an empty torch.cat), and draft_beats for a CodeGPT that reads no drafts still tilted its sampling towards them."""
    import dataclasses

    cfg = config_from_dict(TINY)
    vq, steps = VQVAE(cfg.model).eval(), cfg.data.window_samples // cfg.model.downsample_factor     # 16 codes
    block = cfg.data.total_samples // cfg.model.downsample_factor
    assert Forecaster(vq, CodeGPT(32, steps + 1, 16, 1, 2, 0.0, draft=True), cfg, plain_sample(), "cpu",
                      draft_beats=True).gpt.block_size == steps + 1
    for gpt, beats, said in ((CodeGPT(16, block, 16, 1, 2, 0.0), False,
                              "codebook_size: the VQ-VAE's 32, the CodeGPT's 16"),
                             (CodeGPT(32, block, 16, 1, 2, 0.0, levels=2), False,
                              "codebook levels: the VQ-VAE's 1, the CodeGPT's 2"),
                             (CodeGPT(32, steps, 16, 1, 2, 0.0), False,
                              "block_size 16 leaves no step after a context of 16 codes (64 samples)"),
                             (CodeGPT(32, block, 16, 1, 2, 0.0), True,
                              "draft_beats for a CodeGPT that reads no drafts")):
        with pytest.raises(ValueError, match=rf"Forecaster's parts do not fit: .*{re.escape(said)}"):
            Forecaster(vq, gpt, cfg, plain_sample(), "cpu", draft_beats=beats)
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, downsample_factor=8))
    with pytest.raises(ValueError, match="downsample_factor: the VQ-VAE's 4, cfg.model's 8"):
        Forecaster(vq, CodeGPT(32, block, 16, 1, 2, 0.0), other, plain_sample(), "cpu")


@pytest.mark.parametrize("setting", [{"draft_noise": -1.0}, {"draft_bias": -5.0}, {"draft_spread": 1.5}])
def test_a_forecaster_refuses_sampling_settings_its_config_would(setting: dict) -> None:
    """SampleConfig built by hand is checked as config_transformer.json's sample section is: a negative draft_noise
    or draft_bias (a tilt away from the draft) and a jitter beyond the period forecast without a word."""
    cfg = config_from_dict(TINY)
    gpt = CodeGPT(32, cfg.data.total_samples // cfg.model.downsample_factor, 16, 1, 2, 0.0, draft=True)
    (name, value), = setting.items()
    with pytest.raises(UserError, match=rf"'sample\.{name}' = {value}"):
        Forecaster(VQVAE(cfg.model).eval(), gpt, cfg, SampleConfig(**setting), "cpu", draft_beats=True)


def test_a_draft_per_sample_that_differs_over_the_context_is_refused() -> None:
    """With the cache a context's samples read it once, with its first sample's draft: drafts per sample that
    differed there drew other codes than the uncached reference, without a word."""
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, draft=True).eval()
    ctx = torch.randint(0, 8, (1, 4), generator=torch.Generator().manual_seed(0))
    draft = torch.randint(0, 8, (1, 9), generator=torch.Generator().manual_seed(1)).repeat(3, 1)
    draft[1, 6:] = (draft[1, 6:] + 1) % 8           # past the context: allowed
    assert gpt.generate(ctx, 5, num_samples=3, draft=draft).shape == (3, 5)
    draft[1, 2] = (draft[1, 2] + 1) % 8
    for cache in (True, False):
        with pytest.raises(ValueError, match="the same over the context"):
            gpt.generate(ctx, 5, num_samples=3, draft=draft, use_cache=cache)


def test_a_draft_step_mixing_codes_and_none_across_levels_is_refused() -> None:
    """The draft's level 0 says whether a step has one: a -1 at a finer level beside a code was read as code 0."""
    gpt = CodeGPT(codebook_size=8, block_size=12, dim=16, layers=1, heads=2, levels=2, draft=True).eval()
    ctx = torch.randint(0, 8, (1, 4, 2), generator=torch.Generator().manual_seed(0))
    draft = torch.randint(0, 8, (1, 9, 2), generator=torch.Generator().manual_seed(1))
    draft[:, :4] = -1
    assert gpt.generate(ctx, 5, draft=draft).shape == (1, 5, 2)
    draft[0, 6, 1] = -1
    with pytest.raises(ValueError, match="every level"):
        gpt.generate(ctx, 5, draft=draft)
