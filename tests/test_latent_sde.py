import copy
import csv
import dataclasses
import json
import math
import os
import re
import runpy
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchsde

import evaluate
import latent_sde_train
import vqvae_train
from baselines import TemplateEnsemble
from drafts import context_rhythm, hold_to_band, residual_sd
from forecast import Forecaster
from hyper_params_sde import DEFAULT_CONFIG, SDEConfig, load_sde_config, sde_config_from_dict
from latent_sde import (LEARNS_CRPS, MAX_DRIFT, DiagonalDiffusion, LatentSDE, LatentSDEForecaster, PathCRPS,
                        RowBrownian, fair_crps, overlap_add, replica_seed, soft_clip)
from vqvae import VQVAE
from vqvae_eval import VQVAE_KEYS
import paths
from paths import UserError, file_sha256
from conftest import (closing_lines, loads_of, periodic_ecg, replaced_once_loaded, resumes_told, scripted_validation,
                      stopped_at, trainer_inputs, undocumented_columns, vqvae_splits)
from tiny import flags, phase_config, tiny_setup
from train_results import TRAINING_STATE, fixed_windows

TINY_SDE = phase_config(
    model={"state_size": 6, "context_size": 8, "encoder_hidden": 16, "hidden_size": 32, "emission_hidden": 32,
           "diffusion_hidden": 4, "phase_harmonics": 3, "corrected_dims": 2},
    loss={"kl_start": 0.1, "kl_anneal_steps": 10, "phase_hint": 1.0, "phase_hint_steps": 20},
    augment={"copies": 1},
    train={"epochs": 3, "batch_size": 8, "learning_rate": 0.003, "warmup_steps": 2, "max_steps_per_epoch": 10,
           "plot_windows": 2, "checkpoint_every": 1},
)


def tiny_sde(**solver) -> LatentSDE:
    torch.manual_seed(0)
    raw = json.loads(json.dumps(TINY_SDE))
    raw["solver"] = solver
    return LatentSDE(obs_size=8, cfg=sde_config_from_dict(raw), steps_per_second=16.0)


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
@pytest.mark.parametrize("phase", [3, 0])
def test_sde_integrates_to_finite_paths_of_the_right_shape(method: str, phase: int) -> None:
    sde = tiny_sde(method=method)
    if not phase:   # the plain MLP state, no beat phase
        raw = json.loads(json.dumps(TINY_SDE))
        raw["model"].update(phase_harmonics=0, corrected_dims=0)
        raw["solver"] = {"method": method}
        sde = LatentSDE(8, sde_config_from_dict(raw), 16.0)
    frames = torch.randn(4, 16, 8)
    loss, metrics = sde(frames, 8)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
    grads = [p.grad for p in sde.prior.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    sde.eval()
    out = sde.sample_frames(torch.randn(8, 2, 8), steps=12, num_samples=3, seed=0)
    assert out.shape == (12, 6, 8) and torch.isfinite(out).all()
    assert out.std(0).mean() > 0   # paths move


def test_the_gru_s_weights_are_packed_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.DataParallel's replicas hold the GRU's weights apart: cuDNN warned that they are 'not part of single
    contiguous chunk of memory' and packed them again at each GRU call. encode packs them once first, for the
    training forward (two segments) and for sampling (PathCRPS's replicas). On the CPU packing does nothing: only
    its calls show."""
    sde = tiny_sde()
    calls: list[tuple[str, torch.nn.Module]] = []
    run = torch.nn.GRU.forward
    monkeypatch.setattr(torch.nn.GRU, "flatten_parameters", lambda self: calls.append(("pack", self)))
    monkeypatch.setattr(torch.nn.GRU, "forward", lambda self, *a: calls.append(("run", self)) or run(self, *a))
    sde(torch.randn(2, 16, 8), 8)
    sde.eval().sample_frames(torch.randn(8, 1, 8), 4, 2, 0)
    assert [what for what, _ in calls] == ["pack", "run", "run", "pack", "run"]
    assert all(module is sde.gru for _, module in calls)


def test_negative_steps_or_no_samples_are_refused_by_name() -> None:
    """As CodeGPT.generate: steps -1 stopped in an IndexError ('index 0 is out of bounds'), num_samples 0 drew no
    path without a word and -1 stopped in 'Repeats must be non-negative'. 0 steps draw nothing."""
    sde = tiny_sde().eval()
    ctx = torch.randn(8, 2, 8)
    assert sde.sample_frames(ctx, 0, 2, 0).shape == (0, 4, 8)
    for steps, samples in ((-1, 1), (2, 0), (2, -1)):
        with pytest.raises(ValueError, match=f"steps >= 0 and num_samples >= 1, got steps {steps}, num_samples "
                                             f"{samples}"):
            sde.sample_frames(ctx, steps, samples, 0)


def test_two_models_sample_at_once() -> None:
    """sample_frames keeps its call's context on the model, so calls on one model wait for each other; two models
    (nn.DataParallel's replicas in CRPS fine-tuning, one per card) keep their own and must not: with one lock for
    every model, a replica's SDE solve waited for the others' and the cards took turns."""
    import threading

    held, solving = threading.Event(), threading.Event()
    a, b = tiny_sde().eval(), tiny_sde().eval()
    solve = a.solve

    def held_solve(*args, **kwargs):
        solving.set()
        held.wait(60)
        return solve(*args, **kwargs)
    a.solve = held_solve
    first = threading.Thread(target=a.sample_frames, args=(torch.randn(8, 1, 8), 4, 2, 0))
    second = threading.Thread(target=b.sample_frames, args=(torch.randn(8, 1, 8), 4, 2, 0))
    first.start()
    try:
        assert solving.wait(60)
        second.start()
        second.join(20)
        assert not second.is_alive(), "b waited for a's sampling"
    finally:
        held.set()
        first.join()
        if second.ident is not None:        # started
            second.join()


def test_phase_template_copies_the_context_frame_of_the_same_phase_but_never_a_neighbour() -> None:
    raw = json.loads(json.dumps(TINY_SDE))
    raw["model"]["phase_template"] = True
    sde = LatentSDE(8, sde_config_from_dict(raw), 16.0)
    loss, _ = sde(torch.randn(4, 16, 8), 8)
    loss.backward()
    assert torch.isfinite(loss) and sde.template_gain.grad.abs().sum() > 0
    sde.eval()
    assert sde.sample_frames(torch.randn(12, 2, 8), steps=5, num_samples=3, seed=0).shape == (5, 6, 8)

    C = 20
    frames, psi = torch.randn(C, 1, 8), torch.linspace(0, 2 * math.pi, C + 1)[:C, None]   # one phase per frame
    sde._tmpl, sde._beat = frames, torch.stack([psi, torch.zeros_like(psi)], -1)
    with torch.no_grad():
        sde.template_kappa.fill_(math.log(200.0))
        sde.template_gain.fill_(1.0)
        for p in sde.emission.parameters():
            p.zero_()
        z = torch.zeros(1, 1, 6)
        z[0, 0, 0] = psi[3, 0]
        assert torch.allclose(sde.emit(z, first=C)[0, 0], frames[3, 0], atol=1e-3)    # a future frame
        assert not torch.allclose(sde.emit(z, first=5)[0, 0], frames[3, 0], atol=0.1)  # frame 5: 3 is too close


def drafted_sde() -> LatentSDE:
    torch.manual_seed(0)
    raw = json.loads(json.dumps(TINY_SDE))
    raw["model"].update(phase_harmonics=0, corrected_dims=0, draft_beats=True)
    return LatentSDE(8, sde_config_from_dict(raw), 16.0)


def test_drafted_sde_reads_the_draft_of_future_frames_only() -> None:
    sde = drafted_sde()
    frames, draft = torch.randn(4, 16, 8), torch.randn(4, 8, 8)
    loss, _ = sde(frames, 8, draft=draft)
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="draft"):
        sde(frames, 8)
    sde.eval()
    ctx, d = torch.randn(8, 2, 8), torch.randn(5, 6, 8)
    a = sde.sample_frames(ctx, 5, 3, seed=0, draft=d)
    assert a.shape == (5, 6, 8) and torch.isfinite(a).all()
    assert torch.equal(a, sde.sample_frames(ctx, 5, 3, seed=0, draft=d))
    later = d.clone()
    later[3:] += 1.0                      # a draft that differs from frame 3 on changes frames 3 on only
    b = sde.sample_frames(ctx, 5, 3, seed=0, draft=later)
    assert torch.equal(a[:3], b[:3]) and not torch.allclose(a[3:], b[3:])
    sde.set_draft(d, 8)
    assert (sde._draft[:8] == 0).all() and (sde._draft[8:, :, -1] == 1).all()   # the context has no draft
    with torch.no_grad():           # an emission that renders nothing leaves the draft
        sde.emission[-1].weight.zero_()
        sde.emission[-1].bias.zero_()
        sde.obs_mean.fill_(0.3)
        sde.obs_std.fill_(2.0)
    assert torch.allclose(sde.sample_frames(ctx, 5, 3, seed=0, draft=d), d, atol=1e-5)


def test_the_posterior_drift_is_bounded_whatever_its_networks_say() -> None:
    """Prior drift and posterior correction are each soft-clipped to MAX_DRIFT: however far a network's output
    runs, no state runs away (and the solver's step stays meaningful)."""
    sde = drafted_sde()
    with torch.no_grad():
        for net in (sde.prior, sde.correction):
            net[-1].bias.fill_(1e4)
        sde.encode([sde.normalise(torch.randn(4, 2, 8))])
        drift = sde.f(torch.tensor(0.0), torch.randn(2, sde.cfg.model.state_size))
    assert drift.abs().max() <= 2 * MAX_DRIFT


def test_path_kl_is_non_negative_and_zero_without_posterior_correction() -> None:
    sde = tiny_sde()
    x = sde.normalise(torch.randn(5, 32, 8)).transpose(0, 1)
    sde.encode([x[:16], x[16:]])
    mean, _ = sde.initial()
    ts = torch.arange(32) / sde.rate
    _, log_ratio = sde.solve(mean, ts, entropy=1, logqp=True)
    assert log_ratio.shape == (31, 5) and (log_ratio >= 0).all() and log_ratio.sum() > 0
    with torch.no_grad():   # posterior drift == prior drift: no path KL
        sde.correction[-1].weight.zero_()
        sde.correction[-1].bias.zero_()
        sde.lock.fill_(-1e4)
    _, log_ratio = sde.solve(mean, ts, entropy=1, logqp=True)
    assert log_ratio.abs().max() < 1e-6
    _, metrics = sde(torch.randn(5, 32, 8), 16)
    assert metrics["kl"] >= 0 and metrics["kl_path"] >= 0


def test_kl_and_hint_schedules() -> None:
    sde = tiny_sde()
    assert sde.kl_weight() == pytest.approx(0.1) and sde.hint_weight() == pytest.approx(1.0)
    sde.steps.fill_(5)
    assert sde.kl_weight() == pytest.approx(0.55) and sde.hint_weight() == pytest.approx(0.75)
    sde.steps.fill_(50)
    assert sde.kl_weight() == pytest.approx(1.0) and sde.hint_weight() == 0.0
    sde.steps.fill_(0)
    sde.eval()   # validation always scores the full ELBO, without the hint
    assert sde.kl_weight() == 1.0 and sde.hint_weight() == 0.0


def test_beat_hint_targets_follow_the_annotations() -> None:
    data = {"beat_ptr": torch.tensor([0, 3, 3]), "beat_pos": torch.tensor([10, 74, 138])}
    t = latent_sde_train.beat_targets(data, frames=40, factor=4, fs=64.0)
    assert t.shape == (2, 40, 2) and torch.isnan(t[1]).all()
    centre = np.arange(40) * 4 + 1.5
    inside = (centre >= 10) & (centre < 138)
    assert torch.isfinite(t[0, inside]).all() and torch.isnan(t[0, ~inside]).all()
    np.testing.assert_allclose(t[0, inside, 1], 1.0)                 # one beat per 64 samples = 1 Hz
    k = int(np.argmax(inside))
    assert float(t[0, k, 0]) == pytest.approx(2 * np.pi * (centre[k] - 10) / 64, rel=1e-5)


def test_config_validation_names_the_key() -> None:
    assert load_sde_config(DEFAULT_CONFIG) == sde_config_from_dict({}) == SDEConfig()    # the recipe
    for raw, key in (({"solver": {"method": "rk4"}}, "solver.method"), ({"solver": {"dt": 0}}, "solver.dt"),
                     ({"solver": {"noise_type": "general"}}, "solver.noise_type"),
                     ({"loss": {"kl_start": 2.0}}, "loss.kl_start"),
                     (phase_config(model={"state_size": 2}), "model.state_size"),
                     ({"model": {"stat_size": 8}}, "model.stat_size"), ({"loss": {"kl_weight": "1"}}, "loss.kl_weight"),
                     ({"model": {"draft_spread": 1.5}}, "model.draft_spread"),
                     ({"model": {"draft_noise": -0.1}}, "model.draft_noise"),
                     ({"model": {"phase_harmonics": 8, "phase_template": True}}, "model.draft_beats"),
                     (phase_config(model={"hold_band": True}), "model.hold_band"),
                     ({"model": {"departure_scale": -0.5}}, "model.departure_scale"),
                     (phase_config(model={"departure_scale": 0.5}), "model.departure_scale"),
                     ({"crps": {"samples": 1}}, "crps.samples"), ({"train": {"amp": True}}, "train.amp"), ({"crps": {"epochs": 0}}, "crps.epochs"),
                     ({"crps": {"learning_rate": 0}}, "crps.learning_rate"), ({"crps": {"sample": 8}}, "crps.sample"),
                     ({"sde": {}}, "sde")):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            sde_config_from_dict(raw)
    # drafts turned off alone: the recipe's hold and half departure need them, and the error says what to set
    with pytest.raises(UserError, match=r"'model.hold_band' = True needs model.draft_beats .*: set it false without "
                                        r"drafts$"):
        sde_config_from_dict({"model": {"draft_beats": False}})
    with pytest.raises(UserError, match=r"'model.departure_scale' = 0.5 needs model.draft_beats .*: set it 1 without "
                                        r"drafts$"):
        sde_config_from_dict({"model": {"draft_beats": False, "hold_band": False}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny VQ-VAE, then a tiny latent SDE trained on its latents of synthetic records."""
    from conftest import write_record

    tmp = tmp_path_factory.mktemp("latent_sde")
    db = tmp / "wfdb"
    for i, name in enumerate(["100", "101", "102", "103", "104", "105"]):
        write_record(db, name, seconds=40.0, seed=i)
    setup = tiny_setup(tmp, db)
    vqvae_train.main(flags(setup, "--device", "cpu", "--epochs", "1"))
    vq = next((tmp / "checkpoints").glob("vqvae-*/best.pt"))
    cfg = tmp / "sde.json"
    cfg.write_text(json.dumps(TINY_SDE))
    setup_s = {**setup, "config": str(cfg)}
    row = latent_sde_train.main(flags(setup_s, "--device", "cpu", "--vqvae", str(vq)))
    run = next((tmp / "results").glob("latent_sde-*"))
    return {"tmp": tmp, "setup": setup, "setup_sde": setup_s, "run": run, "row": row,
            "ckpt": tmp / "checkpoints" / run.name / "best.pt", "last": tmp / "checkpoints" / run.name / "last.pt"}


def test_tiny_train_lowers_the_loss_then_forecasts(trained: dict) -> None:
    rows = list(csv.DictReader((trained["run"] / "metrics.csv").open()))
    assert len(rows) == 3
    val = [float(r["val_loss"]) for r in rows]        # the full ELBO every epoch: comparable
    recon = [float(r["train_recon"]) for r in rows]
    assert val[-1] < val[0] and recon[-1] < recon[0]
    assert not undocumented_columns(trained["run"] / "metrics.csv")
    assert (trained["run"] / "forecast_epoch_003.png").stat().st_size > 10_000
    ckpt = torch.load(trained["ckpt"], weights_only=True)
    assert ckpt["kind"] == "latent_sde" and "vqvae" in ckpt and int(ckpt["model"]["steps"]) > 0
    fc = Forecaster.from_checkpoint(trained["ckpt"], "cpu")
    assert isinstance(fc, LatentSDEForecaster) and fc.name == "latent_sde" and not fc.deterministic
    assert fc.fs == 64
    context = np.random.default_rng(0).standard_normal((3, 64, 2)).astype(np.float32) * 0.3
    out = fc.predict(context, horizon=50, num_samples=7, seed=1)
    assert out.shape == (3, 7, 50, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.std(axis=1).mean() > 0              # sampled paths differ
    with pytest.warns(UserWarning, match="30 samples .* shorter than the 64"):     # short context, long horizon
        longer = fc.predict(context[:, -30:], horizon=130, num_samples=2, seed=1)
    assert longer.shape == (3, 2, 130, 2) and np.isfinite(longer).all()


def test_overlap_add_blends_windows_into_one_signal() -> None:
    """A long horizon coded and decoded in overlapping windows: a map without edge effects comes back whole (at
    its own rate), and one whose output shifts from window to window blends without a step at any window's edge."""
    x = torch.randn(3, 100, 2, dtype=torch.float64)
    assert torch.allclose(overlap_add(lambda part: part, x, 32, 1), x)
    assert torch.allclose(overlap_add(lambda part: part.repeat_interleave(4, 1), x, 32, 4), x.repeat_interleave(4, 1))
    assert torch.allclose(overlap_add(lambda part: part[:, ::4], x, 32, 1 / 4), x[:, ::4])
    ramp = torch.arange(100, dtype=torch.float64)[None, :, None]
    blended = overlap_add(lambda part: torch.full_like(part, float(part[0, 0, 0])), ramp, 32, 1)[0, :, 0]
    # windows start 16 samples apart (0, 16, ..., 64, then 68): end to end they would step by 16
    assert blended.diff().abs().max() < 4 and blended[0] == 0 and blended[-1] == 68


def test_overlap_add_starts_windows_on_whole_frames() -> None:
    """An encoder's frames of windows of an odd number of frames (9 frames of 4 samples: half a window is 4.5
    frames): every window starts on a frame, so each frame is the one of its own samples, not of samples half a
    frame later."""
    x = torch.randn(2, 36 * 3 + 8, 2, dtype=torch.float64)
    torch.testing.assert_close(overlap_add(lambda part: part[:, ::4], x, 36, 1 / 4), x[:, ::4])
    with pytest.raises(ValueError, match="whole output steps of 4"):
        overlap_add(lambda part: part[:, ::4], x[:, :-2], 36, 1 / 4)


def test_same_seed_same_paths_whatever_the_global_rng(trained: dict) -> None:
    fc = Forecaster.from_checkpoint(trained["ckpt"], "cpu")
    context = np.random.default_rng(1).standard_normal((2, 64, 2)).astype(np.float32) * 0.3
    state = torch.get_rng_state()
    a = fc.predict(context, 64, num_samples=5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)    # predict leaves the global RNG alone
    torch.manual_seed(123)
    np.random.seed(123)
    b = fc.predict(context, 64, num_samples=5, seed=7)
    c = fc.predict(context, 64, num_samples=5, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[1], fc.predict(context[1], 64, num_samples=5, seed=7)[0])    # not its batch mates'


def test_resume_continues_the_run(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   monkeypatch) -> None:
    """A run of its own (resuming the module's shared run would change the model the other tests read)."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup_sde"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    latent_sde_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "2", "--max-steps", "3"))
    (run,) = (tmp_path / "res").iterdir()
    last = tmp_path / "ck" / run.name / "last.pt"
    loads, told = loads_of(monkeypatch, last), resumes_told(monkeypatch, latent_sde_train)
    row = latent_sde_train.main(flags(setup, "--device", "cpu", "--resume", str(last), "--epochs", "3",
                                      "--max-steps", "3"))
    assert row["epoch"] == 3 and len(loads) == 1      # its checkpoint read once
    assert [r["ckpt_dir"] for r in told] == [str(last.parent)]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    record = json.loads((run / "run.json").read_text())      # the calls that ran, not their flags alone
    assert [r["command"][:25] for r in (record, *record["resumes"])] == ["latent_sde_train.main(['-"] * 2
    ckpt = torch.load(last, weights_only=True)
    assert int(ckpt["model"]["steps"]) == 9     # the annealing schedules continued, not restarted
    done = last.read_bytes()
    capsys.readouterr()
    row = latent_sde_train.main(flags(setup, "--device", "cpu", "--resume", str(last), "--epochs", "3",
                                      "--vqvae", "elsewhere.pt"))
    out = capsys.readouterr()
    assert row["epoch"] == 3 and "nothing to train" in out.out   # said, not silently done
    assert "final validation" not in out.out and "forecast with" not in out.out    # no epoch to close
    assert "--vqvae elsewhere.pt is ignored: the resumed run goes on with its own VQ-VAE" in out.err
    assert last.read_bytes() == done
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 3


def test_elbo_run_closes_with_the_last_epochs_scores_and_what_to_run_next(trained: dict, tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    """A run ended with where its files went, nothing on how good the model is or what to run with it: its closing
    lines now give the last epoch's validation ELBO and forecast check, name that epoch and best.pt's (an early
    stop's earlier one), and print forecast.py and evaluate.py commands on best.pt."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup_sde"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    scripted_validation(monkeypatch, [2.0, 1.0, 1.5, 1.6, 1.7])
    row = latent_sde_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "5", "--max-steps",
                                      "1", "--augment-copies", "0", "--patience", "1"))
    final, fc, ev = closing_lines(capsys.readouterr().out)
    assert final == (f"final validation (epoch 3, in last.pt; best.pt is epoch 2's): negative ELBO 1.5000 nats a "
                     f"latent number (recon {row['val_recon']:.4f}, KL {row['val_kl']:.4f}), forecast MSE "
                     f"{row['val_forecast_mse']:.4f} (normalised latents), late std ratio "
                     f"{row['val_late_std_ratio']:.3f}")
    (best,) = (tmp_path / "ck").glob("latent_sde-*/best.pt")
    assert fc[:4] == ["python3", "forecast.py", "--checkpoint", str(best)] and fc[4] == "--record"
    assert Path(f"{fc[5]}.hea").is_file() and fc[6] == "--start"
    assert ev == ["python3", "evaluate.py", "--model", str(best), "--split", "validation", "--prepared",
                  setup["prepared"], "--config", str(best.parent / "vqvae_config.json")]


def test_a_trained_models_forecast_settings_set_anew_from_python_are_checked_as_a_configs() -> None:
    """README: fc.scfg.model's forecast-time keys set anew sample a trained latent SDE otherwise. Only loading checked
    them, so a departure_scale of -1 (each path's departure from its draft turned over) or a draft_noise of -0.2
    forecast without a word, and one of 1e308 paths of inf; predict now refuses each by its key."""
    fc = Forecaster.from_checkpoint(paths.ROOT / "pretrained" / "latent_sde.pt", "cpu")
    x, stored = periodic_ecg(1, length=384), dataclasses.replace(fc.scfg.model)
    base = fc.predict(x, 16, num_samples=2, seed=1)
    fc.scfg.model.departure_scale = 1.0
    assert not np.array_equal(fc.predict(x, 16, num_samples=2, seed=1), base)
    for key, value in (("departure_scale", -1.0), ("draft_noise", -0.2), ("departure_scale", 1e308),
                       ("draft_noise", 1e308)):
        fc.scfg.model = dataclasses.replace(stored, **{key: value})
        with pytest.raises(UserError, match=re.escape(f"'model.{key}' = {value}")):
            fc.predict(x, 16, num_samples=2, seed=1)


def test_a_solver_step_set_anew_below_its_floor_is_refused_before_the_forecast_runs() -> None:
    """fc.scfg.solver.dt set from Python after loading, as the forecast-time keys are: 1e-9 s passed the config's
    checks and the forecast ran for ever; predict refuses it by its key and the range the VQ-VAE's frames allow."""
    fc = untrained_drafted_forecaster()
    fc.scfg.solver.dt = 1e-9
    with pytest.raises(UserError, match=r"'solver.dt' = 1e-09 must be in \[0.000976562, 1\] seconds with a VQ-VAE of "
                                        r"16 latent frames a second"):
        fc.predict(periodic_ecg(1, length=192, fs=64), 16, num_samples=2, seed=1)


def test_closing_line_names_a_loss_at_another_kl_weight_as_what_it_is(trained: dict, tmp_path: Path, capsys) -> None:
    """At loss.kl_weight 0 the validation loss is the recon alone, yet the closing line called it the negative ELBO,
    next to a KL above 0 that it left out; it now names the weighted loss it is."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    raw = json.loads(json.dumps(TINY_SDE))
    raw["loss"].update(kl_weight=0.0, kl_start=0.0)
    cfg = tmp_path / "kl0.json"
    cfg.write_text(json.dumps(raw))
    setup = {**trained["setup_sde"], "config": str(cfg), "results": str(tmp_path / "res"),
             "checkpoints": str(tmp_path / "ck")}
    row = latent_sde_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "1", "--max-steps",
                                      "1", "--augment-copies", "0"))
    final = closing_lines(capsys.readouterr().out)[0]
    assert row["val_loss"] == pytest.approx(row["val_recon"]) and row["val_kl"] > 0
    assert final.startswith(f"final validation (epoch 1, in best.pt and last.pt): validation loss (recon + 0 x KL) "
                            f"{row['val_loss']:.4f} nats a latent number (recon {row['val_recon']:.4f}, KL ")
    assert "ELBO" not in final


def test_evaluate_takes_the_sde_checkpoint(trained: dict, tmp_path: Path) -> None:
    s = trained["setup"]
    run = evaluate.main(["--model", str(trained["ckpt"]), "seasonal", "--config", s["config"], "--prepared",
                         s["prepared"], "--results", str(tmp_path / "eval"), "--samples", "4",
                         "--max-windows-per-record", "3"])
    report = (Path(run) / "report.md").read_text()
    assert "| latent_sde |" in report and "| seasonal |" in report
    m = json.loads((Path(run) / "metrics.json").read_text())
    assert m["forecasters"]["latent_sde"]["deterministic"] is False


def test_window_gain_vqvae_decodes_paths_at_the_context_gain(trained: dict) -> None:
    """With a window-gain VQ-VAE a context twice as loud gives the same paths twice as loud."""
    fc = Forecaster.from_checkpoint(trained["ckpt"], "cpu")
    torch.manual_seed(0)
    fc.vq = VQVAE(dataclasses.replace(fc.cfg.model, window_gain=True)).eval()
    context = np.random.default_rng(2).standard_normal((2, 64, 2)).astype(np.float32) * 0.3
    a = fc.predict(context, 40, num_samples=3, seed=0)
    np.testing.assert_allclose(fc.predict(2 * context, 40, num_samples=3, seed=0), 2 * a, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def drafted(trained: dict) -> dict:
    """A tiny latent SDE with beat drafts, trained on the same records."""
    tmp = trained["tmp"]
    raw = json.loads(json.dumps(TINY_SDE))
    raw["model"].update(phase_harmonics=0, corrected_dims=0, draft_beats=True)
    raw["train"]["epochs"] = 2
    cfg = tmp / "sde_draft.json"
    cfg.write_text(json.dumps(raw))
    vq = next((tmp / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "config": str(cfg), "results": str(tmp / "res_draft"),
             "checkpoints": str(tmp / "ck_draft")}
    latent_sde_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq)))
    run = next((tmp / "res_draft").glob("latent_sde-*"))
    return {"setup": setup, "run": run, "ckpt": tmp / "ck_draft" / run.name / "best.pt"}


def test_drafted_sde_trains_then_forecasts_from_its_own_drafts(drafted: dict) -> None:
    """train → forecast with beat drafts: the training windows' drafts come from their own R peaks,
    a forecast draws one beat period per path; same seed, same paths."""
    rows = list(csv.DictReader((drafted["run"] / "metrics.csv").open()))
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    fc = Forecaster.from_checkpoint(drafted["ckpt"], "cpu")
    assert isinstance(fc, LatentSDEForecaster) and fc.sde.drafted
    from conftest import synthetic_ecg
    context = synthetic_ecg(2, fc.fs, seed=3)[0].astype(np.float32)
    out = fc.predict(np.stack([context, 0.5 * context]), horizon=64, num_samples=6, seed=1)
    assert out.shape == (2, 6, 64, 2) and np.isfinite(out).all() and out.std(axis=1).mean() > 0
    assert np.array_equal(out, fc.predict(np.stack([context, 0.5 * context]), horizon=64, num_samples=6, seed=1))
    drafts = TemplateEnsemble(fc.fs)
    drafts.jitter, drafts.noise = fc.scfg.model.draft_spread, 0.0
    whole = context[-min(len(context) // fc.factor, fc.context_frames) * fc.factor:]   # what the SDE reads
    fc.scfg.model.draft_noise = 0.0
    with torch.no_grad():           # an emission that renders an offset: paths that drift from their drafts ...
        fc.sde.emission[-1].bias.add_(30.0)     # well above the held paths' own 2e-4 mV from their drafts
    late_drift = {}
    for hold in (False, True):      # ... but for a second after the context when held to the data's band
        fc.scfg.model.hold_band = hold
        departure = fc.predict(whole[None], 10 * fc.fs, 4, seed=1) - drafts.predict(whole[None], 10 * fc.fs, 4, seed=1)
        late_drift[hold] = np.abs(departure[:, :, fc.fs:].mean(axis=2)).mean()
    assert late_drift[False] > 1e-3 and late_drift[True] < 0.1 * late_drift[False], late_drift
    fc.scfg.model.hold_band = False
    with torch.no_grad():           # an emission that renders nothing leaves every path at its draft ...
        fc.sde.emission[-1].weight.zero_()
        fc.sde.emission[-1].bias.zero_()
    fc.scfg.model.draft_noise = drafts.noise = 0.4      # (this short context has no residual to scale: the
    # noise itself is test_forecast_noise_is_draft_noise_times_the_contexts_residual's)
    for vq in (fc.vq, VQVAE(dataclasses.replace(fc.cfg.model, window_gain=True)).eval()):
        fc.vq = vq                  # ... the draft itself, not the VQ-VAE's round trip of it, at any gain
        np.testing.assert_allclose(fc.predict(whole[None], 64, num_samples=6, seed=1),
                                   drafts.predict(whole[None], 64, num_samples=6, seed=1), atol=1e-5)


def test_a_forecast_within_the_trained_horizon_is_one_sde_run_decoded_whole(drafted: dict) -> None:
    """Up to the trained horizon a forecast is what it was before long horizons ran a block at a time, to the
    bit: one SDE run from the seed's stream, its frames decoded in one pass (even one frame for one path)."""
    fc = Forecaster.from_checkpoint(drafted["ckpt"], "cpu")
    fc.scfg.model.draft_noise = 0.0
    from conftest import synthetic_ecg
    x_np = synthetic_ecg(2, fc.fs, seed=3)[0][-fc.context_frames * fc.factor:][None].astype(np.float32)
    for horizon, n in ((1, 1), (fc.factor + 1, 3), (fc.context_frames * fc.factor, 2)):
        steps = math.ceil(horizon / fc.factor)
        with torch.no_grad():
            x = torch.from_numpy(x_np)
            unit, frames = fc.encode_context(x)
            drafts, round_trip, waves = fc.draft_frames(x, steps, n, 5, context_rhythm(x_np, fc.fs))
            sde_seed = int(np.random.SeedSequence([5, 0]).generate_state(1)[0])
            z = fc.sde.sample_frames(frames, steps, n, sde_seed, draft=drafts.transpose(0, 1)).permute(1, 2, 0)
            wave = fc.vq.decode_latent(z, unit.repeat_interleave(n, 0))
        departure = (wave - round_trip)[:, :horizon].numpy()
        if fc.holds():
            departure = hold_to_band(departure, x.shape[1], fc.cfg.data.filter_band[0], fc.cfg.data.filter_order,
                                     fc.fs)
        expected = waves[:, :horizon].numpy() + fc.scfg.model.departure_scale * departure
        assert np.array_equal(fc.predict(x_np, horizon, n, seed=5)[0], expected), (horizon, n)


def test_fair_crps_of_known_samples() -> None:
    """A point mass scores its absolute error; two samples straddling the truth by 1 score 0 (fair: the
    spread term divides by S(S-1), not S^2)."""
    y = torch.ones(1, 3, 2)
    assert torch.isclose(fair_crps(torch.full((1, 4, 3, 2), 3.0), y), torch.tensor(2.0))
    assert torch.isclose(fair_crps(torch.stack([0 * y, 2 * y], 1), y), torch.tensor(0.0))


def test_crps_fine_tuning_trains_prior_diffusion_and_emission_only(drafted: dict) -> None:
    """PathCRPS: its state is the SDE's (no prefix); gradients reach only the prior, diffusion and emission;
    a few steps on one batch lower that batch's CRPS, the posterior and the VQ-VAE (kept in eval mode) untouched."""
    fc = Forecaster.from_checkpoint(drafted["ckpt"], "cpu")
    model = PathCRPS(fc, num_samples=4).train()
    assert model.sde.training and not model.vq.training
    vq_before = {k: v.clone() for k, v in fc.vq.state_dict().items()}
    assert model.state_dict().keys() == fc.sde.state_dict().keys()
    from conftest import synthetic_ecg
    window = fc.context_frames * fc.factor + 64
    signals = torch.from_numpy(np.stack([synthetic_ecg(3, fc.fs, seed=s)[0][:window] for s in range(3)])).float()
    before = {k: v.clone() for k, v in fc.sde.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(6):
        loss, metrics = model(signals, seed=5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(metrics) == {"crps", "drafts_crps", "gain"} and np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses
    changed = {k.split(".")[0] for k, v in fc.sde.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(LEARNS_CRPS), changed
    assert all(torch.equal(v, vq_before[k]) for k, v in fc.vq.state_dict().items())
    fc.scfg.model.hold_band = True
    with torch.no_grad():               # validation scores paths held to the band, as forecasts are
        held = model.eval()(signals, seed=5)[0]
        fc.scfg.model.hold_band = False
        assert not torch.equal(model(signals, seed=5)[0], held)


def test_crps_fine_tuning_scores_against_the_template_ensemble(drafted: dict) -> None:
    """path_crps's bare drafts of a window, noise included, are the template ensemble's paths for the same
    seed (the noise is drafts.add_noise's, as a forecast lays it): the gain it logs is over the baseline the
    issue names."""
    fc = Forecaster.from_checkpoint(drafted["ckpt"], "cpu")
    fc.scfg.model.draft_noise = 0.2
    ensemble = TemplateEnsemble(fc.fs)
    ensemble.jitter, ensemble.noise = fc.scfg.model.draft_spread, 0.2
    from conftest import synthetic_ecg
    context = fc.context_frames * fc.factor
    signals = torch.from_numpy(synthetic_ecg(3, fc.fs, seed=1, hr_bpm=150)[0][None, :context + 64]).float()
    with torch.no_grad():
        drafts_crps = fc.path_crps(signals, num_samples=4, seed=5)[1]
    paths = ensemble.predict(signals[:, :context].numpy(), 64, num_samples=4, seed=5)
    assert residual_sd(signals[:, :context].numpy(), fc.fs).min() > 0     # beats enough for noise to match
    assert torch.isclose(drafts_crps, fair_crps(torch.from_numpy(paths), signals[:, context:]), rtol=1e-6, atol=0)


def test_crps_fine_tuning_replicas_run_their_own_networks(drafted: dict) -> None:
    """Under DataParallel each GPU runs a replica: a shallow copy (nn.Module._replicate_for_data_parallel, as
    torch makes them) whose modules are that device's copies, sharing the forecaster's settings. A replica
    must run its own SDE: one whose emission renders nothing scores its bare drafts; the original does not."""
    fc = Forecaster.from_checkpoint(drafted["ckpt"], "cpu")
    model = PathCRPS(fc, num_samples=4)
    replica = model._replicate_for_data_parallel()
    replica.sde = copy.deepcopy(model.sde)
    from conftest import synthetic_ecg
    context = fc.context_frames * fc.factor
    signals = torch.from_numpy(np.stack([synthetic_ecg(3, fc.fs, seed=s)[0][:context + 64] for s in range(3)])).float()
    with torch.no_grad():
        replica.sde.emission[-1].weight.zero_()
        replica.sde.emission[-1].bias.zero_()
        loss, metrics = replica(signals, seed=5)
        assert torch.isclose(loss, metrics["drafts_crps"], rtol=0, atol=1e-6)
        loss, metrics = model(signals, seed=5)
        assert abs(loss - metrics["drafts_crps"]) > 1e-5


def test_crps_fine_tuning_replicas_draw_apart_and_one_card_draws_as_any_other() -> None:
    """DataParallel's replicas (the model on cuda:0, replicas on 0, 1, 2) draw from seeds of their own; a run on
    --device cuda:1 alone draws what one on cuda:0 or the CPU draws."""
    cuda = [torch.device("cuda", k) for k in range(3)]
    seeds = [replica_seed(7, card, torch.device("cuda")) for card in cuda]
    assert seeds[0] == 7 and len(set(seeds)) == 3
    cpu = torch.device("cpu")
    assert replica_seed(7, cuda[1], cuda[1]) == replica_seed(7, cuda[0], cuda[0]) == replica_seed(7, cpu, cpu) == 7
    assert replica_seed(7, cuda[2], cuda[1]) == seeds[1]


def test_crps_validation_draws_each_window_alone(drafted: dict) -> None:
    """Seeded per window, a validation score does not depend on which windows share a batch (or a process): it
    chose best.pt differently at batch sizes 4 and 8 when a batch drew its drafts together."""
    fc = Forecaster.from_checkpoint(drafted["ckpt"], "cpu")
    model = PathCRPS(fc, num_samples=4).eval()
    from conftest import synthetic_ecg
    context = fc.context_frames * fc.factor
    signals = torch.from_numpy(np.stack([synthetic_ecg(3, fc.fs, seed=s)[0][:context + 64] for s in range(3)])).float()
    with torch.no_grad():
        together, metrics = model(signals, torch.arange(3))
        alone = [model(signals[i:i + 1], torch.tensor([i])) for i in range(3)]
        shuffled = model(signals[[2, 0, 1]], torch.tensor([2, 0, 1]))[0]
    assert torch.isclose(together, torch.stack([a[0] for a in alone]).mean(), rtol=1e-6)
    assert torch.isclose(shuffled, together, rtol=1e-6)
    assert torch.isclose(metrics["drafts_crps"], torch.stack([a[1]["drafts_crps"] for a in alone]).mean(), rtol=1e-6)


def test_crps_fine_tuning_of_a_latent_sde_without_drafts_is_one_clear_error(trained: dict, tmp_path: Path) -> None:
    """--crps-from a latent SDE trained without beat drafts: one error naming the file and the key, before any run
    folder is made (was PathCRPS's ValueError traceback)."""
    setup = {**trained["setup_sde"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    with pytest.raises(UserError, match=f"--crps-from {trained['ckpt']}: .*model.draft_beats"):
        latent_sde_train.main(flags(setup, "--device", "cpu", "--crps-from", str(trained["ckpt"])))
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("run", ["elbo", "crps"])
def test_a_run_stopped_before_its_trainer_leaves_no_folders(trained: dict, drafted: dict, tmp_path: Path,
                                                            monkeypatch, run: str) -> None:
    """Ctrl-C between making its folders and building its Trainer (run.json's record), in an ELBO run or a
    --crps-from fine-tuning: they go, and it says that nothing was saved yet, as vqvae_train.py."""
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup, source = ((trained["setup_sde"], ["--vqvae", str(vq)]) if run == "elbo"
                     else (drafted["setup"], ["--crps-from", str(drafted["ckpt"])]))
    setup = {**setup, "results": str(tmp_path / "r"), "checkpoints": str(tmp_path / "c")}
    r = stopped_at(monkeypatch, latent_sde_train, "run_record", KeyboardInterrupt(), "latent_sde_train.py",
                   flags(setup, "--device", "cpu", *source))
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        130, "interrupted; nothing was saved yet (last.pt is written at the end of every epoch)")
    assert not any((tmp_path / "r").iterdir()) and not any((tmp_path / "c").iterdir())


def test_crps_fine_tuning_run_keeps_a_forecaster_checkpoint(drafted: dict, tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    """latent_sde_train.py --crps-from: a run of the generic trainer whose checkpoint forecast.py loads, its
    validation loss the CRPS, its source recorded; --resume continues it."""
    setup = {**drafted["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    row = latent_sde_train.main(flags(setup, "--device", "cpu", "--crps-from", str(drafted["ckpt"]), "--epochs", "1",
                                      "--max-steps", "2", "--batch-size", "4"))
    assert row["epoch"] == 1 and 0 < row["val_loss"] < 1 and np.isclose(row["val_gain"], row["val_drafts_crps"] - row["val_loss"])
    (run,) = (tmp_path / "res").glob("latent_sde_crps-*")
    last = tmp_path / "ck" / run.name / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["meta"]["crps_from"] == str(drafted["ckpt"]) and ckpt["config"]["crps"]["samples"] >= 2
    train = ckpt["config"]["train"]              # what this run trained with, not the ELBO run's settings
    assert (train["batch_size"], train["max_steps_per_epoch"]) == (4, 2)
    assert (train["learning_rate"], train["warmup_steps"]) == (ckpt["config"]["crps"]["learning_rate"], 0)
    source = torch.load(drafted["ckpt"], weights_only=True)["model"]
    assert torch.equal(ckpt["model"]["gru.weight_ih_l0"], source["gru.weight_ih_l0"])
    assert not torch.equal(ckpt["model"]["prior.0.weight"], source["prior.0.weight"])
    fc = Forecaster.from_checkpoint(tmp_path / "ck" / run.name / "best.pt", "cpu")
    assert isinstance(fc, LatentSDEForecaster)
    loads, told = loads_of(monkeypatch, last), resumes_told(monkeypatch, latent_sde_train)
    row = latent_sde_train.main(["--device", "cpu", "--prepared", setup["prepared"], "--resume", str(last),
                                 "--epochs", "2", "--seed", "9"])      # its 2 steps of 4 windows: kept in the run
    assert row["epoch"] == 2 and row["step"] == 4 and len(loads) == 1
    assert [r["ckpt_dir"] for r in told] == [str(last.parent)]
    assert "--seed 9 is ignored: the resumed run goes on with its own seed" in capsys.readouterr().err
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2"]
    assert not undocumented_columns(run / "metrics.csv")


def test_a_gain_that_rounds_to_zero_closes_as_zero_not_minus_zero() -> None:
    """A fine-tuning's closing line read 'gain -0.0000 mV' for a gain of -2e-05 mV: it now reads 0.0000."""
    row = {"val_crps": 0.12345, "val_drafts_crps": 0.12343, "val_gain": -2e-05}
    assert latent_sde_train.crps_words(row) == ("fair CRPS 0.1235 mV, the bare drafts' 0.1234 mV: gain 0.0000 mV "
                                                "(positive: the network helps)")
    assert [latent_sde_train.zero_unsigned(v) for v in (-2e-05, 2e-05, -0.0, -0.00012, 0.5)] == [
        "0.0000", "0.0000", "0.0000", "-0.0001", "0.5000"]


def test_crps_fine_tuning_closes_with_its_crps_and_gain(drafted: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    """A fine-tuning run ended without its CRPS or which checkpoint to use: its closing lines give the last epoch's
    validation CRPS against the bare drafts', name best.pt's epoch when it is another, and print forecast.py and
    evaluate.py commands on this run's best.pt."""
    setup = {**drafted["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    scripted_validation(monkeypatch, [1.0, 1.5])
    row = latent_sde_train.main(flags(setup, "--device", "cpu", "--crps-from", str(drafted["ckpt"]), "--epochs", "2",
                                      "--max-steps", "1", "--batch-size", "4"))
    final, fc, ev = closing_lines(capsys.readouterr().out)
    assert final == (f"final validation (epoch 2, in last.pt; best.pt is epoch 1's): fair CRPS {row['val_crps']:.4f} "
                     f"mV, the bare drafts' {row['val_drafts_crps']:.4f} mV: gain {row['val_gain']:.4f} mV "
                     f"(positive: the network helps)")
    (best,) = (tmp_path / "ck").glob("latent_sde_crps-*/best.pt")
    assert fc[:4] == ["python3", "forecast.py", "--checkpoint", str(best)] and ev[:4] == [
        "python3", "evaluate.py", "--model", str(best)]


def test_crps_fine_tuning_says_which_settings_of_config_it_ignores(tmp_path: Path, capsys) -> None:
    """--crps-from takes the crps section of --config and the ELBO run's model and solver: a departure_scale or dt
    edited in --config was dropped in silence, the fine-tuned model forecasting with the run's."""
    import argparse

    run = SDEConfig()
    given = {"model": {"draft_beats": True, "departure_scale": 0.3}, "solver": {"dt": 0.125}, "crps": {"epochs": 2}}
    (tmp_path / "c.json").write_text(json.dumps(given))
    args = argparse.Namespace(config=str(tmp_path / "c.json"), resume=None, epochs=None, max_steps=None,
                              batch_size=None, seed=None)
    scfg = latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert (scfg.model, scfg.solver, scfg.crps.epochs) == (run.model, run.solver, 2)
    err = capsys.readouterr().err
    assert "model.departure_scale 0.3 (the run's 0.5), solver.dt 0.125 (the run's 0.0625) ignored" in err
    assert "model, solver and training settings of elbo.pt" in err
    # a train setting fine-tuning runs with (grad_clip) is the run's; one the crps section sets (epochs) is not among
    given = {"model": {"draft_beats": True}, "train": {"grad_clip": 0.25, "epochs": 3}, "crps": {"epochs": 2}}
    (tmp_path / "c.json").write_text(json.dumps(given))
    scfg = latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert latent_sde_train.crps_settings(scfg).grad_clip == run.train.grad_clip
    err = capsys.readouterr().err
    (ignored,) = (line for line in err.splitlines() if "ignored" in line)
    assert "train.grad_clip 0.25 (the run's 1.0) ignored" in ignored and "train.epochs" not in ignored
    # as --augment-copies is: an augment.copies (or a loss setting) of --config's was dropped in silence
    given = {"model": {"draft_beats": True}, "augment": {"copies": 3}, "loss": {"kl_weight": 0.5}}
    (tmp_path / "c.json").write_text(json.dumps(given))
    scfg = latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert (scfg.augment, scfg.loss) == (run.augment, run.loss)
    err = " ".join(capsys.readouterr().err.split())
    assert "loss.kl_weight 0.5 (the run's 1.0), augment.copies 3 (the run's 0) ignored" in err
    assert "training windows as they are (no ELBO loss, no augmented copies)" in err
    (tmp_path / "c.json").write_text(json.dumps({"model": {"draft_beats": True}, "crps": {"epochs": 2}}))
    latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert "ignored" not in (err := capsys.readouterr().err) and "not used" not in err


def test_crps_fine_tuning_names_the_crps_key_that_replaces_a_train_setting_of_config(tmp_path: Path, capsys) -> None:
    """A train.learning_rate or train.epochs edited in --config was replaced by the crps section's in silence, the run
    training at crps.learning_rate: it is named with the crps key (and value, --epochs' too) that sets it."""
    import argparse

    run = SDEConfig()
    given = {"model": {"draft_beats": True}, "train": {"learning_rate": 1e-3, "epochs": 7, "weight_decay": 0.01},
             "crps": {"learning_rate": 2e-4}}
    (tmp_path / "c.json").write_text(json.dumps(given))
    args = argparse.Namespace(config=str(tmp_path / "c.json"), resume=None, epochs=5, max_steps=None,
                              batch_size=None, seed=None)
    scfg = latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    settings = latent_sde_train.crps_settings(scfg)
    assert (settings.learning_rate, settings.epochs, settings.weight_decay) == (2e-4, 5, 0.0)
    err = " ".join(capsys.readouterr().err.split())
    assert ("train.epochs 7 (the run's 10; fine-tuning runs crps.epochs 5), train.learning_rate 0.001 (the run's "
            "0.002; fine-tuning runs crps.learning_rate 0.0002), train.weight_decay 0.01 (the run's 0.0001; "
            "fine-tuning runs 0.0) not used" in err and "set those crps keys instead" in err and "ignored" not in err)
    # train.patience too: crps.patience stops the fine-tuning
    given = {"model": {"draft_beats": True}, "train": {"patience": 4}, "crps": {"patience": 2}}
    (tmp_path / "c.json").write_text(json.dumps(given))
    latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert ("train.patience 4 (the run's None; fine-tuning runs crps.patience 2) not used"
            in " ".join(capsys.readouterr().err.split()))
    # the ELBO run's own schedule in --config (one file for both steps) is not news
    (tmp_path / "c.json").write_text(json.dumps({"model": {"draft_beats": True}, "train": run.to_dict()["train"]}))
    latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert "not used" not in capsys.readouterr().err
    # nor config_sde.json's against a fine-tuned model's train section (its own crps schedule), tuned further
    tuned = dataclasses.replace(run, train=latent_sde_train.crps_settings(run))
    shipped = {"model": {"draft_beats": True}, "train": SDEConfig().to_dict()["train"]}
    (tmp_path / "c.json").write_text(json.dumps(shipped))
    latent_sde_train.crps_config(args, None, {"config": tuned.to_dict(), "meta": {"crps_from": "elbo.pt"}}, "tuned.pt")
    assert "not used" not in capsys.readouterr().err


@pytest.mark.parametrize("flag, patience", [(None, 2), (0, None), (5, 5)])
def test_a_resumed_fine_tuning_keeps_its_crps_patience_unless_patience_is_given(flag, patience) -> None:
    """A resumed fine-tuning goes on with the crps.patience stored in its checkpoint; --patience N replaces it (0:
    none), as it does for a new one, so a run stopped early goes on with a larger one."""
    import argparse

    run = SDEConfig()
    run.model.draft_beats, run.crps.patience = True, 2
    resume = {"config": run.to_dict(), "meta": {"seed": 0, "crps_from": "elbo.pt"}}
    args = argparse.Namespace(config=None, resume="last.pt", epochs=None, max_steps=None, batch_size=None, seed=None,
                              patience=flag)
    scfg = latent_sde_train.crps_config(args, resume, resume, "elbo.pt")
    assert scfg.crps.patience == latent_sde_train.crps_settings(scfg).patience == patience


def test_crps_from_help_names_the_crps_keys_the_schedule_flags_set(tmp_path: Path) -> None:
    """With --crps-from, --epochs, --max-steps and --batch-size set crps keys, not the train.* their own help names:
    --crps-from's help says which, as crps_config sets them."""
    import argparse

    run = SDEConfig()
    (tmp_path / "c.json").write_text(json.dumps({"model": {"draft_beats": True}}))
    args = argparse.Namespace(config=str(tmp_path / "c.json"), resume=None, epochs=3, max_steps=2, batch_size=4,
                              seed=None, patience=2)
    scfg = latent_sde_train.crps_config(args, None, {"config": run.to_dict()}, "elbo.pt")
    assert (scfg.crps.epochs, scfg.crps.steps_per_epoch, scfg.crps.batch_size, scfg.crps.patience) == (3, 2, 4, 2)
    assert (scfg.train.epochs, scfg.train.batch_size, scfg.train.patience) == (run.train.epochs, run.train.batch_size,
                                                                               run.train.patience)
    assert latent_sde_train.crps_settings(scfg).patience == 2      # the train section the fine-tuning trains with
    help_text = " ".join(latent_sde_train.parser().format_help().split())
    assert ("--crps-from CRPS_FROM an ELBO-trained" in help_text and "with it --epochs, --max-steps, --batch-size and "
            "--patience set crps.epochs, crps.steps_per_epoch, crps.batch_size and crps.patience" in help_text)


def test_resume_with_crps_from_names_the_pair_of_flags(tmp_path: Path, capsys, monkeypatch) -> None:
    """--resume of an ELBO run with --crps-from is one clear error (was a KeyError traceback: the ELBO run's meta
    has no crps_from); a fine-tuning run resumed with another --crps-from says it goes on from its own source."""
    elbo, tuned = tmp_path / "elbo.pt", tmp_path / "tuned.pt"
    common = {"kind": "latent_sde", "model": {}, "config": {}, "vqvae": {"model": {}, "config": {}},
              **dict.fromkeys(TRAINING_STATE)}
    torch.save({**common, "meta": {"seed": 0}}, elbo)
    torch.save({**common, "meta": {"seed": 0, "crps_from": "first.pt"}}, tuned)
    with pytest.raises(UserError, match=f"--resume {elbo} .* ELBO run .* --crps-from"):
        latent_sde_train.main(["--device", "cpu", "--resume", str(elbo), "--crps-from", "other.pt"])
    # the run goes on from its own source, first.pt, and stops at the fabricated checkpoint's config (no drafts)
    with pytest.raises(UserError, match="^--crps-from first.pt: CRPS fine-tuning needs a latent SDE with beat drafts"):
        latent_sde_train.main(["--device", "cpu", "--resume", str(tuned), "--crps-from", "other.pt"])
    assert "--crps-from other.pt is ignored: the resumed fine-tuning goes on from first.pt" in capsys.readouterr().err
    # its own source spelt another way, or by a shipped model's name, is not news
    torch.save({**common, "meta": {"seed": 0, "crps_from": str(paths.shipped_checkpoint("pretrained_sde", "x"))}},
               tuned)
    for spelt in ("pretrained_sde", f"./{os.path.relpath(paths.shipped_checkpoint('pretrained_sde', 'x'))}"):
        with pytest.raises(UserError, match="CRPS fine-tuning needs a latent SDE with beat drafts"):
            latent_sde_train.main(["--device", "cpu", "--resume", str(tuned), "--crps-from", spelt])
        assert "is ignored" not in capsys.readouterr().err
    # a flag the resume ignores is not read: no error when the shipped model it names has gone
    monkeypatch.setitem(paths.SHIPPED, "latent_sde", tmp_path / "gone.pt")
    with pytest.raises(UserError, match="CRPS fine-tuning needs a latent SDE with beat drafts"):
        latent_sde_train.main(["--device", "cpu", "--resume", str(tuned), "--crps-from", "pretrained_sde"])
    assert "--crps-from pretrained_sde is ignored" in capsys.readouterr().err


def test_crps_fine_tuning_under_torchrun_keeps_the_ranks_in_step(drafted: dict, tmp_path: Path) -> None:
    """2 CPU processes (gloo): DDP reduces the gradients of the trained networks only, so both ranks end with
    the same weights, the posterior's still the source's."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    setup = {**drafted["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    args = flags(setup, "--device", "cpu", "--crps-from", str(drafted["ckpt"]), "--epochs", "1", "--max-steps", "2",
                 "--batch-size", "4")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ECG_")}, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(root / "tests" / "train_harness.py"), "--dump-state", str(tmp_path / "ranks"),
                        "latent_sde_train", "--", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rank0, rank1 = (torch.load(tmp_path / "ranks" / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0), "ranks disagree"
    source = torch.load(drafted["ckpt"], weights_only=True)["model"]
    assert torch.equal(rank0["gru.weight_ih_l0"], source["gru.weight_ih_l0"])
    assert not torch.equal(rank0["prior.0.weight"], source["prior.0.weight"])


def test_elbo_training_under_torchrun_saves_a_plain_checkpoint_that_validates_alike_on_one_process(
        trained: dict, tmp_path: Path, monkeypatch) -> None:
    """2 CPU processes (gloo) train on the ELBO, each rank drawing its own noise: both end with the same weights, and
    last.pt holds the bare model's (no 'module.' prefixes of the DDP wrapper), loads with weights_only=True and as a
    forecaster. Its last epoch's validation scores (in metrics.csv) are those one process gets from the same weights
    (README: the validation's noise comes from each window's index, so the same weights score the same on any number
    of processes); drawn from the global generator, they would depend on the ranks' generators and shards."""
    import subprocess
    import sys
    import training
    root = Path(__file__).resolve().parents[1]
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup_sde"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    args = flags(setup, "--device", "cpu", "--vqvae", str(vq), "--epochs", "2", "--max-steps", "3")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ECG_")}, "OMP_NUM_THREADS": "1",
           "ECG_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(root / "tests" / "train_harness.py"), "--dump-state", str(tmp_path / "ranks"),
                        "latent_sde_train", "--", *args], cwd=root, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (tmp_path / "res").iterdir()
    last = tmp_path / "ck" / run.name / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["kind"], ckpt["epoch"], ckpt["meta"]["world_size"]) == ("latent_sde", 2, 2)
    assert not [k for k in (*ckpt["model"], *ckpt["vqvae"]["model"]) if k.startswith("module.")]
    rank0, rank1 = (torch.load(tmp_path / "ranks" / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert rank0.keys() == rank1.keys() == ckpt["model"].keys()
    assert all(torch.equal(rank0[k], rank1[k]) and torch.equal(rank0[k], ckpt["model"][k]) for k in rank0)
    assert isinstance(Forecaster.from_checkpoint(last, "cpu"), LatentSDEForecaster)
    two = list(csv.DictReader((run / "metrics.csv").open()))[-1]

    def validate_only(self, resume=None, ckpt=None) -> dict:
        self.resume(resume, ckpt)
        return self.validate(self.model)

    monkeypatch.setattr(training.Trainer, "fit", validate_only)
    one = latent_sde_train.main(flags(setup, "--device", "cpu", "--resume", str(last)))
    assert {f"val_{k}" for k in one} == {k for k in two if k.startswith("val_")}
    # the beat hint's errors too: pooled over the annotated frames, where a mean of each batch's means moved with the
    # batches (0.06% here)
    scores = [k for k in two if k.startswith("val_")]
    assert len(scores) == 11 and {"val_phase_err", "val_rate_err"} <= set(scores)
    for k in scores:
        assert float(two[k]) == pytest.approx(one[k.removeprefix("val_")], rel=1e-5), k


def test_the_adjoint_is_refused_under_data_parallel(monkeypatch) -> None:
    from training import Runtime
    scfg = sde_config_from_dict({"model": {"phase_harmonics": 0}, "solver": {"adjoint": True}}, "test")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="solver.adjoint .* torchrun"):
        latent_sde_train.check_adjoint(scfg, Runtime(torch.device("cuda")))
    latent_sde_train.check_adjoint(scfg, Runtime(torch.device("cuda:0")))          # one named card: fine
    latent_sde_train.check_adjoint(scfg, Runtime(torch.device("cuda:0"), 0, 2))    # DDP: fine


def test_the_adjoint_is_used_and_its_gradients_are_backprops(monkeypatch) -> None:
    """solver.adjoint trains through torchsde.sdeint_adjoint, with backprop's gradients up to the solver's error (it
    shrinks with dt; at dt = 1/128 every group below is within 0.2%). Given the GRU as adjoint parameters besides the
    context features it makes, torchsde counted the encoder's share of the path twice: 7.8% off at any dt."""
    groups = {"encoder": ("gru", "ctx_out"), "q(z0)": ("qz0",), "drifts": ("prior", "correction"),
              "diffusion": ("diffusion",)}
    calls = []
    real = torchsde.sdeint_adjoint
    monkeypatch.setattr(torchsde, "sdeint_adjoint", lambda *a, **k: calls.append(1) or real(*a, **k))

    def gradients(adjoint: bool) -> dict:
        raw = json.loads(json.dumps(TINY_SDE))
        raw["model"].update(phase_harmonics=0, corrected_dims=0)
        raw["solver"] = {"adjoint": adjoint, "dt": 1 / 64}
        torch.manual_seed(0)
        sde = LatentSDE(8, sde_config_from_dict(raw), 16.0).double()
        torch.manual_seed(1)
        sde(torch.randn(4, 16, 8, dtype=torch.float64), 8)[0].backward()
        return {g: torch.cat([p.grad.flatten() for n, p in sde.named_parameters() if n.split(".")[0] in names])
                for g, names in groups.items()}

    direct = gradients(False)
    assert not calls
    adjoint = gradients(True)
    assert len(calls) == 1
    for g in groups:
        assert float((adjoint[g] - direct[g]).norm() / direct[g].norm()) < 0.01, g


def test_loss_is_reconstruction_plus_weighted_kl():
    sde = tiny_sde()
    sde.train()
    loss, m = sde(torch.randn(5, 32, 8), 16)
    assert m["kl"] > 0
    assert float(loss.detach()) == pytest.approx(float(m["recon"] + m["kl_weight"] * m["kl"]), rel=1e-5)


def test_the_forecast_checks_late_spread_takes_two_frames_at_one_frame_a_second() -> None:
    """A VQ-VAE of 128 Hz / 128 gives one latent frame a second: the check's 'last second' was that one frame, whose
    standard deviation over time is NaN (and torch's degrees-of-freedom warning) in every validation row; it takes
    the last two frames. A future of a single frame has no spread to compare: NaN, without the warning."""
    torch.manual_seed(0)
    sde = LatentSDE(8, sde_config_from_dict(json.loads(json.dumps(TINY_SDE))), 1.0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            _, m = sde(torch.randn(3, 6, 8), 3, windows=torch.arange(3))
            _, one = sde(torch.randn(3, 4, 8), 3, windows=torch.arange(3))
    assert math.isfinite(float(m["late_std_ratio"])) and float(m["late_std_ratio"]) > 0
    assert math.isnan(float(one["late_std_ratio"]))


def test_the_forecast_checks_late_spread_compares_the_last_frames_of_path_and_truth(monkeypatch) -> None:
    """late_std_ratio is the path's spread over the last second over the truth's over the same second: a path that
    matches the truth's last frames scores 1 whatever its first frames do (here flat where the truth varies)."""
    torch.manual_seed(0)
    sde = LatentSDE(8, sde_config_from_dict(json.loads(json.dumps(TINY_SDE))), 2.0).eval()
    x = torch.randn(10, 3, 8)
    path = x[4:].clone()
    path[:-2] = 0.0                     # flat but for the last second (two frames at 2 a second)
    monkeypatch.setattr(sde, "sample_frames", lambda *a, **k: path)
    assert float(sde.forecast_check(x, 4, None, None)["late_std_ratio"]) == pytest.approx(1.0)


def test_the_forecast_checks_late_spread_of_a_drafted_model_is_of_its_departure_from_the_draft(monkeypatch) -> None:
    """A drafted path is its draft plus what the SDE renders: a path that is the draft alone kept the truth's beats,
    and its late spread scored about 1 (0.98 on the shipped model's validation windows), flat SDE or not. Measured
    on the departures from the draft, the draft alone scores 0 and the truth 1."""
    sde = drafted_sde().eval()
    x, draft = torch.randn(10, 3, 8), torch.randn(3, 6, 8)
    for path, want in ((sde.normalise(draft.transpose(0, 1)), 0.0), (x[4:], 1.0)):
        monkeypatch.setattr(sde, "sample_frames", lambda *a, p=path, **k: p)
        with torch.no_grad():
            m = sde.forecast_check(x, 4, None, draft)
        assert float(m["late_std_ratio"]) == pytest.approx(want, abs=1e-6)
    assert float(m["forecast_mse"]) == pytest.approx(0.0)


@pytest.mark.parametrize("method", ["euler", "srk"])
def test_validation_loss_of_given_weights_depends_on_the_windows_alone(method: str) -> None:
    """Seeded by window (LatentSDE.forward's `windows`), the ELBO and the forecast check of the same weights are the
    same twice, after the global generator moved on, and whatever windows share a batch: so DDP's shards of a
    batch_size / N give what one process gives. From the global generator they were not."""
    sde = tiny_sde(method=method).eval()
    frames = torch.randn(5, 32, 8)

    def score(index: list[int]) -> dict:
        with torch.no_grad():
            loss, m = sde(frames[index], 16, windows=torch.tensor(index))
        return {"loss": loss, **{k: m[k] for k in ("recon", "kl", "forecast_mse", "late_std_ratio")}}

    def mean(scores: list[dict], weights: list[int]) -> dict:
        return {k: sum(w * s[k] for s, w in zip(scores, weights)) / sum(weights) for k in scores[0]}

    together = score([0, 1, 2, 3, 4])
    torch.manual_seed(123)
    torch.randn(1000)
    assert score([0, 1, 2, 3, 4]) == together
    shards = mean([score([0, 2, 4]), score([1, 3])], [3, 2])        # two ranks' strided shards
    alone = mean([score([i]) for i in range(5)], [1] * 5)
    for k in together:
        assert float(shards[k]) == pytest.approx(float(together[k]), rel=1e-5), k
        assert float(alone[k]) == pytest.approx(float(together[k]), rel=1e-5), k
    with torch.no_grad():
        assert sde(frames, 16)[0] != sde(frames, 16)[0]        # training's draws: the global generator's


VALIDATE = """
import json, os, sys
import torch
sys.path[:0] = [{root!r}, {tests!r}]
import latent_sde_train, training
from hyper_params import TrainConfig
from test_latent_sde import tiny_sde
from torch.utils.data import TensorDataset

torch.set_num_threads(1)                    # as train_harness.py


def main():
    rt = training.setup_runtime("cpu")
    sde = tiny_sde()                        # the same weights on every rank
    torch.manual_seed(100 + rt.rank)        # and generators apart
    frames = torch.randn(10, 32, 8, generator=torch.Generator().manual_seed(1))
    data = TensorDataset(frames, torch.arange(10))
    settings = TrainConfig(batch_size={batch}, warmup_steps=0)
    trainer = training.Trainer(sde, data, data, latent_sde_train.elbo_step(16, []), settings, {out!r}, {out!r}, {{}},
                               {{}}, rt, "toy")
    scores = [trainer.validate(sde), trainer.validate(sde)]
    if rt.is_main:
        json.dump(scores, open({out!r} + "/val.json", "w"))
    return rt


if main().distributed:                      # as Trainer.run ends: gloo may abort a process that leaves without it
    torch.distributed.destroy_process_group()
    sys.stdout.flush()      # even so, about one torchrun in fifteen aborted in torch's teardown after the last line
    os._exit(0)             # ('terminate called without an active exception', no Python frame): not what is tested
"""


def validation_scores(tmp_path: Path, batch: int, processes: int) -> list[dict]:
    """Trainer.validate of the tiny SDE's weights on 10 windows, twice: in this process, or under torchrun with
    `processes` (gloo)."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / f"{processes}x{batch}"
    out.mkdir()
    script = out / "validate.py"
    script.write_text(VALIDATE.format(root=str(root), tests=str(root / "tests"), out=str(out), batch=batch))
    if processes == 1:
        runpy.run_path(str(script))
    else:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ECG_")}, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                            str(processes), str(script)], cwd=root, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((out / "val.json").read_text())


def test_validation_of_given_weights_is_the_same_on_one_process_and_two(tmp_path: Path) -> None:
    """ELBO validation through the trainer (elbo_step, windows' indices last) of the same weights: the same twice
    in a row, at global batches of 4 and 2, and on 2 processes (gloo; shards of 2 and 1 windows a batch) as on
    one, each process's global generator seeded apart. From the global generator best.pt could differ."""
    one, two = validation_scores(tmp_path, 4, 1), validation_scores(tmp_path, 4, 2)
    small = validation_scores(tmp_path, 2, 1)
    assert one[0] == one[1] and two[0] == two[1]
    for other in (two[0], small[0]):
        assert other.keys() == one[0].keys()
        for k, v in one[0].items():
            assert other[k] == pytest.approx(v, rel=1e-5), k


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_per_path_seeds_draw_each_path_from_its_own_seed_alone(method: str) -> None:
    """sample_frames with a seed per path (validation's forecast check) gives a path the same numbers whatever
    paths are beside it; the Brownian increments over two solver steps are the sum of the two steps' (RowBrownian);
    a single seed keeps drawing the batch together, as forecasts do."""
    sde = tiny_sde(method=method).eval()
    context = torch.randn(16, 3, 8)
    with torch.no_grad():
        rows = sde.sample_frames(context, 8, 1, [11, 12, 13], normalised=True)
        alone = torch.cat([sde.sample_frames(context[:, i:i + 1], 8, 1, [11 + i], normalised=True)
                           for i in range(3)], 1)
        batch = sde.sample_frames(context, 8, 1, 11, normalised=True)
    assert torch.isfinite(rows).all() and torch.allclose(rows, alone, atol=1e-6)
    assert not torch.allclose(batch, rows, atol=1e-3)
    bm = RowBrownian(0.0, 1.0, 0.25, 4, context, [5, 6], space_time=True)
    assert torch.allclose(bm(0.0, 0.5), bm(0.0, 0.25) + bm(0.25, 0.5))
    assert bm(0.0, 0.25, return_U=True)[1].shape == (2, 4)
    with pytest.raises(ValueError, match="time 0.1 is not on the solver's grid of step 0.25"):
        bm(0.1, 0.25)


def test_per_path_seeds_draw_alike_in_a_session_with_another_default_device() -> None:
    """torch.set_default_device("cuda"), as GPU notebooks set it, beside a latent SDE on the CPU: RowBrownian's time
    grid (solver_times) was summed on the default device, a GPU sync twice a solver step; 'meta' stands in for the
    GPU this machine lacks: any tensor made there fails ('Tensor.item() cannot be called on meta tensors')."""
    sde = tiny_sde().eval()
    context = torch.randn(16, 2, 8)
    with torch.no_grad():
        expected = sde.sample_frames(context, 8, 1, [11, 12], normalised=True)
        torch.set_default_device("meta")
        try:
            got = sde.sample_frames(context, 8, 1, [11, 12], normalised=True)
        finally:
            torch.set_default_device(None)
    assert torch.equal(got, expected)


def test_the_phase_advances_at_the_beat_rate_in_seconds():
    """The prior's phase drift is 2 pi * rate (Hz) per second: per frame, that over the frame rate."""
    sde = tiny_sde()
    with torch.no_grad():
        sde.prior[-1].weight.zero_()
        sde.prior[-1].bias.zero_()                      # drift = the beat rate alone
    sde.eval()
    seen = []
    emit = sde.emit
    sde.emit = lambda zs, c: (seen.append(zs), emit(zs, c))[1]
    with torch.no_grad():
        sde.sample_frames(torch.randn(16, 2, 8), steps=32, num_samples=4, seed=0)
    zs = seen[-1]                                       # [steps, B*S, state]
    step = torch.diff(zs[..., 0], dim=0)
    expect = 2 * math.pi * sde.beat_hz(zs[:-1, :, 1]) / sde.rate
    assert float(step.mean()) == pytest.approx(float(expect.mean()), rel=0.25)


def test_diffusion_stays_between_its_floor_and_ceiling():
    """g_i in scale_i * [min, max] for any state, also where the network asks for no noise at all: the floor
    keeps the path KL, 0.5 |(f - h) / g|^2, finite."""
    torch.manual_seed(0)
    g = DiagonalDiffusion(3, 4, 0.05, 0.5, scale=[1.0, 0.2, 1.0])
    z = 10 * torch.randn(256, 3)
    for bias in (-60.0, 0.0, 60.0):                    # the network's unit output near 0, in between, near 1
        with torch.no_grad():
            g.b2.fill_(bias)
        out = g(z)
        assert torch.all(out >= g.scale * 0.05 - 1e-7) and torch.all(out <= g.scale * 0.5 + 1e-7)
    with torch.no_grad():
        g.b2.fill_(-60.0)
    torch.testing.assert_close(g(z), (g.scale * 0.05).expand(256, 3))


def untrained_drafted_forecaster(**model):
    """A tiny untrained latent SDE with beat drafts on a tiny VQ-VAE: 64 Hz, 3 s contexts (no training needed to
    check how its paths are assembled)."""
    from hyper_params import config_from_dict
    from tiny import TINY

    torch.manual_seed(0)
    raw = json.loads(json.dumps(TINY))
    raw["data"].update(input_signal_duration=3.0)
    cfg = config_from_dict(raw)
    sraw = json.loads(json.dumps(TINY_SDE))
    sraw["model"].update(phase_harmonics=0, corrected_dims=0, draft_beats=True, **model)
    scfg = sde_config_from_dict(sraw)
    sde = LatentSDE(cfg.model.latent_dim, scfg, cfg.data.samples_per_second / cfg.model.downsample_factor)
    return LatentSDEForecaster(VQVAE(cfg.model), sde, cfg, scfg, "cpu")


def noisy_context():
    from conftest import periodic_ecg

    return periodic_ecg(1, noise=0.05, seed=1, period=50, fs=64, length=192)


@pytest.mark.parametrize("default", [torch.float64, torch.float16, torch.bfloat16])
def test_predict_does_not_depend_on_torch_s_default_dtype(default):
    """torch.set_default_dtype(torch.float16) in the user's session moved the latent SDE's forecast by ~1e-5 mV: the
    VQ-VAE's attention made its sinusoidal positions in the default dtype, rounded to float16 before their use in
    float32 (float64 held them exactly, so its forecast was the same)."""
    fc, x = untrained_drafted_forecaster(), noisy_context()
    expected = fc.predict(x, 64, 4, seed=3)
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        got = fc.predict(x, 64, 4, seed=3)
    finally:
        torch.set_default_dtype(before)
    np.testing.assert_array_equal(got, expected)


def test_forecast_noise_is_draft_noise_times_the_contexts_residual():
    """predict adds white noise of model.draft_noise x the context's residual from its mean beat (per lead):
    two forecasters that differ only in draft_noise differ by exactly that noise."""
    x = noisy_context()
    quiet = untrained_drafted_forecaster(draft_noise=0.0).predict(x, 64, 200, seed=3)
    noisy = untrained_drafted_forecaster(draft_noise=0.4).predict(x, 64, 200, seed=3)
    sd = residual_sd(x, 64)[0]
    assert sd.min() > 0.03
    np.testing.assert_allclose((noisy - quiet)[0].std(axis=(0, 1)), 0.4 * sd, rtol=0.05)


def test_a_long_horizons_next_block_starts_from_the_paths_latest_context():
    """Past the trained horizon each block's context is the last context's worth of its path so far, as a training
    window's is: here (one block is one context long, departure_scale 0) the first block's drafts, not the context
    given again."""
    x = noisy_context()
    fc = untrained_drafted_forecaster()
    fc.scfg.model.departure_scale = 0.0
    seen, encode = [], fc.vq.encode_latent
    fc.vq.encode_latent = lambda signal, *a: seen.append(signal) or encode(signal, *a)
    fc.predict(x, 2 * x.shape[1], 3, seed=3)
    second = seen[-1]                               # the last signal encoded: the second block's context
    waves = fc.draft_frames(torch.from_numpy(x), 2 * x.shape[1] // fc.factor, 3, 3, context_rhythm(x, fc.fs))[2]
    torch.testing.assert_close(second, waves[:, :x.shape[1]])


def test_each_block_of_a_long_horizon_draws_noise_of_its_own():
    """A block after the first draws its Brownian paths from a seed of its own: the first block's seed again would
    repeat its noise, block after block, in every path."""
    x = noisy_context()
    fc = untrained_drafted_forecaster()
    seeds, sample = [], fc.sde.sample_frames

    def seen(frames: torch.Tensor, steps: int, n: int, seed: int, **kw) -> torch.Tensor:
        seeds.append(seed)
        return sample(frames, steps, n, seed, **kw)
    fc.sde.sample_frames = seen
    fc.predict(x, 3 * x.shape[1], 2, seed=3)
    assert len(seeds) == len(set(seeds)) == 3


def test_a_forecasts_departure_is_held_to_the_band_after_a_context_of_zeros():
    """With model.hold_band a path's departure from its draft is high-passed as hold_to_band does it, after the
    context's samples taken as 0 (no departure there): the filter's start then sees no edge of its own."""
    x = noisy_context()
    fc = untrained_drafted_forecaster(departure_scale=1.0)
    ensemble = TemplateEnsemble(fc.fs)
    ensemble.jitter, ensemble.noise = fc.scfg.model.draft_spread, fc.scfg.model.draft_noise
    drafts = ensemble.predict(x, 64, 4, seed=3)[0]
    paths = {}
    for hold in (False, True):
        fc.scfg.model.hold_band = hold
        paths[hold] = fc.predict(x, 64, 4, seed=3)[0]
    band = fc.cfg.data.filter_band[0]
    held = hold_to_band(paths[False] - drafts, x.shape[1], band, fc.cfg.data.filter_order, fc.fs)
    np.testing.assert_allclose(paths[True] - drafts, held, atol=1e-5)


def test_departure_scale_scales_what_the_sde_adds_to_its_drafts():
    """A forecast path is its draft plus departure_scale times the held departure, noise apart: at 0 the
    template ensemble's paths, and the paths at 0.5 halfway between those and the paths at 1. Validation in eval
    mode scores the scaled paths, as a forecast draws them."""
    x = noisy_context()
    fc = untrained_drafted_forecaster(hold_band=True)
    paths = {}
    for scale in (0.0, 0.5, 1.0):
        fc.scfg.model.departure_scale = scale
        paths[scale] = fc.predict(x, 64, 6, seed=3)
    ensemble = TemplateEnsemble(fc.fs)
    ensemble.jitter, ensemble.noise = fc.scfg.model.draft_spread, fc.scfg.model.draft_noise
    np.testing.assert_allclose(paths[0.0], ensemble.predict(x, 64, 6, seed=3), atol=1e-5)
    assert np.abs(paths[1.0] - paths[0.0]).mean() > 1e-3
    np.testing.assert_allclose(paths[0.5] - paths[0.0], 0.5 * (paths[1.0] - paths[0.0]), atol=1e-5)
    window = torch.from_numpy(np.concatenate([x, x[:, :64]], 1))
    model = PathCRPS(fc, num_samples=4).eval()
    with torch.no_grad():
        scored = {}
        for scale in (0.5, 1.0):
            fc.scfg.model.departure_scale = scale
            scored[scale] = model(window, torch.tensor([5]))[0]
        fc.scfg.model.departure_scale = 0.0
        assert torch.isclose(model(window, torch.tensor([5]))[0], fc.path_crps(window, 4, 5)[1])
        model.train()
        fc.scfg.model.departure_scale = 0.5
        assert torch.equal(model(window, 5)[0], fc.path_crps(window, 4, 5)[0])    # training: the full departure
    assert not torch.isclose(scored[0.5], scored[1.0])


def test_crps_validation_holds_paths_to_the_band_as_a_forecast_does():
    """In eval mode (validation, one seed per window) PathCRPS scores the paths a forecast would make: held to the
    band when the recipe holds them."""
    fc = untrained_drafted_forecaster(hold_band=True)
    window = torch.from_numpy(np.concatenate([noisy_context(), noisy_context()[:, :64]], 1))
    model = PathCRPS(fc, num_samples=4).eval()
    with torch.no_grad():
        loss, _ = model(window, torch.tensor([5]))
        held, _ = fc.path_crps(window, 4, 5, held=True)
        loose, _ = fc.path_crps(window, 4, 5, held=False)
    assert not torch.isclose(held, loose)
    torch.testing.assert_close(loss, held)


def test_crps_validation_scores_the_paths_a_forecast_of_the_same_seed_draws():
    """The validation score of a window is its forecast's at the window's seed: the drafts and noise were drawn as
    predict draws them, but the SDE's Brownian paths from the bare seed, not roll's derived_seed(seed, 0)."""
    fc = untrained_drafted_forecaster(hold_band=True)
    with torch.no_grad():
        fc.sde.emission[-1].bias.normal_()           # departures an untrained emission would not show
    window = torch.from_numpy(np.concatenate([noisy_context(), noisy_context()[:, :64]], 1))
    c = fc.context_frames * fc.factor
    with torch.no_grad():
        held, _ = fc.path_crps(window, 4, 5, held=True)
    paths = torch.from_numpy(fc.predict(window[:, :c].numpy(), 64, num_samples=4, seed=5))
    torch.testing.assert_close(held, fair_crps(paths, window[:, c:]), rtol=1e-5, atol=0)


def test_the_first_future_frame_is_one_frame_after_the_context() -> None:
    """The prior runs on from the posterior's last context state: the first future frame is one frame step
    (1 / rate s) later, not that state again, which would delay every path by a frame."""
    sde = drafted_sde().eval()
    with torch.no_grad():
        sde.prior[-1].weight.zero_()
        sde.prior[-1].bias.fill_(20.0)               # a steady drift, far above the noise
        sde.diffusion.b2.fill_(-60.0)                 # noise at its floor
    solved, emitted = [], []
    solve, emit = sde.solve, sde.emit
    sde.solve = lambda *a, **k: solved.append(solve(*a, **k)) or solved[-1]
    sde.emit = lambda zs, first: emitted.append(zs) or emit(zs, first)
    with torch.no_grad():
        sde.sample_frames(torch.randn(8, 1, 8), steps=4, num_samples=3, seed=0, draft=torch.randn(4, 3, 8))
    step = float(soft_clip(torch.tensor(20.0))) / sde.rate             # the drift per frame
    zs = torch.cat([solved[0][-1:], emitted[-1]])            # the last context state, then the future's
    torch.testing.assert_close(torch.diff(zs, dim=0), torch.full_like(zs[1:], step), atol=0.1, rtol=0)


def test_training_integrates_over_seconds_as_a_forecast_does() -> None:
    """The ELBO's path runs in seconds, one frame every 1 / rate s (the solver's dt and the posterior's frame index
    are in seconds): a path over frame numbers would read frame 16 t and take rate times more solver steps."""
    sde = tiny_sde()
    times = []
    solve = sde.solve
    sde.solve = lambda z0, ts, *a, **k: times.append(ts) or solve(z0, ts, *a, **k)
    sde(torch.randn(2, 16, 8), 8)
    torch.testing.assert_close(times[0], torch.arange(16) / sde.rate)


def test_the_posterior_drift_over_a_frame_step_reads_the_frame_it_reaches() -> None:
    """Between frames k and k + 1 the posterior steers by frame k + 1's features, the frame the state it reaches
    is emitted as (the last frame holds at the end), not by frame k's, which the state has already passed."""
    sde = tiny_sde()
    with torch.no_grad():
        sde.encode([sde.normalise(torch.randn(6, 2, 8))])
        z, t = torch.randn(2, sde.cfg.model.state_size), torch.tensor(2 / sde.rate)
        base = sde.f(t, z)
        for frame, moves in ((2, False), (3, True)):
            ctx = sde._ctx.clone()
            sde._ctx[frame] += 1.0
            assert torch.allclose(sde.f(t, z), base) != moves, frame
            sde._ctx = ctx


def test_a_forecast_starts_each_path_from_a_draw_of_q_z0() -> None:
    """Paths start from z0 ~ q(z0) = N(mean, exp(logstd)) of the context, as in training: the spread is the
    standard deviation, not its log."""
    sde = tiny_sde().eval()
    ctx = torch.randn(8, 1, 8)
    starts, solve = [], sde.solve
    sde.solve = lambda z0, *a, **k: starts.append(z0) or solve(z0, *a, **k)
    with torch.no_grad():
        sde.sample_frames(ctx, 2, 4000, seed=0)
        sde.encode([ctx])
        mean, logstd = sde.initial()
    torch.testing.assert_close(starts[0].std(0), logstd.exp()[0], rtol=0.06, atol=0)
    torch.testing.assert_close(starts[0].mean(0), mean[0], atol=0.1 * float(logstd.exp().max()), rtol=0)


def test_a_context_of_two_frames_or_more_is_read_by_the_posterior() -> None:
    """The posterior runs over every context of two frames or more (a single frame has no step to run): a
    two-frame context starting the prior from q(z0) would forecast as if the context had no second frame."""
    sde = tiny_sde().eval()
    for frames, runs in ((1, [True]), (2, [False, True]), (3, [False, True])):
        priors, solve = [], sde.solve
        sde.solve = lambda *a, prior=False, **k: priors.append(prior) or solve(*a, prior=prior, **k)
        with torch.no_grad():
            sde.sample_frames(torch.randn(frames, 1, 8), 2, 2, seed=0)
        sde.solve = solve
        assert priors == runs, frames


def test_each_contexts_paths_come_together_and_depend_on_it_alone() -> None:
    """sample_frames returns a context's S paths next to each other ([steps, B * S, obs]), where its drafts are laid
    (PathCRPS trains on batches of windows): changing the second context changes its own paths only."""
    sde = drafted_sde().eval()
    ctx, draft = torch.randn(8, 2, 8), torch.randn(5, 6, 8)
    other = ctx.clone()
    other[:, 1] += 1.0
    with torch.no_grad():
        a, b = (sde.sample_frames(c, 5, 3, seed=0, draft=draft) for c in (ctx, other))
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_training_reads_the_context_apart_from_its_future() -> None:
    """The posterior's GRU reads the context and the future each on its own: what it makes of the context in
    training does not see the future, as in a forecast, which has none."""
    sde = tiny_sde()
    frames = torch.randn(2, 16, 8)
    later = frames.clone()
    later[:, 8:] += 1.0
    sde(frames, 8)
    seen = sde._ctx[:8].detach().clone()
    sde(later, 8)
    torch.testing.assert_close(sde._ctx[:8].detach(), seen)


def test_reconstruction_term_sums_over_frames_and_dimensions() -> None:
    """The ELBO's Gaussian NLL of frames [T, B, obs]: summed over frames and dimensions and averaged over windows,
    as the path KL it is weighed against is summed over the path."""
    sde = tiny_sde()
    x = torch.randn(10, 3, 8)
    std = sde.observation_std().detach()
    with torch.no_grad():
        exact = sde.observation_nll(x, x)
        off = sde.observation_nll(x, x + std)                # one std off everywhere: 0.5 more per frame and dim
    torch.testing.assert_close(exact, 10 * (std.log() + 0.5 * math.log(2 * math.pi)).sum())
    torch.testing.assert_close(off - exact, torch.tensor(0.5 * 10 * 8))


def test_the_losss_path_kl_is_summed_over_the_path() -> None:
    """kl_path is torchsde's log ratio summed over the solver's steps (the KL of whole paths), averaged over
    windows, per observed number."""
    sde = tiny_sde()
    solved = []
    solve = sde.solve
    sde.solve = lambda *a, **k: solved.append(solve(*a, **k)) or solved[-1]
    _, m = sde(torch.randn(5, 32, 8), 16)
    whole = float(solved[0][1].detach().sum(0).mean())
    assert whole > 0 and float(m["kl_path"]) * 32 * 8 == pytest.approx(whole, rel=1e-5)


def test_initial_kl_is_the_posteriors_from_the_prior() -> None:
    """KL(q(z0) || p(z0)), not the reverse: N(2, 0.5) from N(0, 1) is log 2 + (0.25 + 4) / 2 - 0.5 per dimension."""
    sde = drafted_sde()                                      # p(z0) = N(0, 1) in each of its 6 dimensions
    mean, logstd = torch.full((1, 6), 2.0), torch.full((1, 6), math.log(0.5))
    assert float(sde.initial_kl(mean, logstd).detach()) == pytest.approx(6 * (math.log(2) + 4.25 / 2 - 0.5), rel=1e-5)


def test_the_configured_solver_is_the_one_run() -> None:
    """solver.method reaches torchsde: Euler and Milstein paths of the same seed differ (g depends on the state)."""
    ctx = torch.randn(8, 1, 8)
    paths = [tiny_sde(method=method).eval().sample_frames(ctx, 6, 2, seed=0) for method in ("euler", "milstein")]
    assert not torch.allclose(*paths)


def test_a_long_context_is_read_at_its_end_by_the_latent_sde() -> None:
    """As for the Transformer: a context longer than the model's is cut to its most recent samples, so whatever came
    long before does not change the forecast."""
    fc = untrained_drafted_forecaster()
    recent = noisy_context()                                 # 192 samples: the model's 3 s at 64 Hz
    early = [0.3 * np.random.default_rng(0).standard_normal((1, 100, 2)).astype(np.float32),
             np.zeros((1, 100, 2), np.float32)]
    a, b = (fc.predict(np.concatenate([e, recent], 1), 32, 3, seed=4) for e in early)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("drafted", [False, True])
def test_encoding_under_a_progress_bar_gives_the_frames_of_one_pass(drafted: bool, monkeypatch) -> None:
    """frozen_encodings runs encode_splits' encoder under the bar (rank 0 only), and the bar's batches change
    no frame, drafts' neither: 520 windows in two batches encode as all at once. The batches must be those of
    latent_frames: the continuous frames are not the same to the last bit in batches of other sizes."""
    import vqvae_eval
    from conftest import periodic_ecg
    from hyper_params import ModelConfig

    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(has_attention=True, downsample_factor=4, channels=16, res_blocks=1, attention_heads=2,
                           attention_layers=1, latent_dim=8, codebook_size=32, num_quantizers=1,
                           window_gain=False)).eval()
    x = torch.from_numpy(periodic_ecg(520, noise=0.02, period=50, length=256))   # 2-3 beats a context
    one_pass = (latent_sde_train.encode_drafted(vq, x, 128, 128) if drafted
                else latent_sde_train.encode_windows(vq, x, 128))
    bars, real_tqdm = [], vqvae_eval.tqdm
    monkeypatch.setattr(vqvae_eval, "tqdm", lambda it, **kw: bars.append((len(it), kw["disable"])) or
                        real_tqdm(it, **kw))
    folders, keys = [], set()   # no cache: where it would be kept, and under which keys
    monkeypatch.setattr(vqvae_eval, "cached_encoding",
                        lambda kind, key, compute, prepared, what: folders.append(prepared) or keys.add(key) or compute())
    scfg = SimpleNamespace(model=SimpleNamespace(draft_beats=drafted), augment=SimpleNamespace(copies=0),
                           train=SimpleNamespace(seed=0))
    cfg = SimpleNamespace(data=SimpleNamespace(window_samples=128))
    split = {"fs": 128, "signals": x, "data_hash": "d", "input_hash": "i"}
    for rank0 in (True, False):
        rt = SimpleNamespace(is_main=rank0, distributed=False, device=torch.device("cpu"))
        train_enc, val_enc, _ = latent_sde_train.encode_splits(vq, scfg, cfg, split, split, "elsewhere", rt)
        assert torch.equal(train_enc, one_pass) and torch.equal(val_enc, one_pass)
    assert bars == [(2, None), (2, None), (2, True), (2, True)]
    assert folders == ["elsewhere"] * 4          # --prepared's cache, not data/prepared's
    key = f"128:drafts{latent_sde_train.DRAFTS_VERSION}" if drafted else "128"   # drafts made anew, encoded anew
    assert {k.split(":", 4)[4] for k in keys} == {key}


def plotted_windows(run: dict, monkeypatch) -> np.ndarray:
    """The windows a run's epoch end plots (on rank 0 alone: every rank would write the same files)."""
    shown = []
    monkeypatch.setattr(latent_sde_train, "plot_epoch", lambda fc, fixed, *a: shown.append((fixed, a[-1])))
    run["epoch_end"](run["model"], 1, False)
    assert not shown
    run["epoch_end"](run["model"], 1, True)
    assert shown[0][1] and all("record " in t for pair in shown[0][1] for t in pair)     # each panel: its record
    return shown[0][0]


def test_elbo_run_trains_on_the_training_frames_and_validates_on_the_validation_patients(trained: dict, tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """What train_elbo hands the trainer: the training windows' frames and beat targets, then the stretched copies';
    the validation patients' for validation and the plots; a normaliser of the training frames alone; the beat hint
    it is configured with; its seed and VQ-VAE recorded (each could break unnoticed by the runs' own tests)."""
    vq_path = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup_sde"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    argv = flags(setup, "--device", "cpu", "--vqvae", str(vq_path), "--seed", "5")
    torch.manual_seed(1)
    run = trainer_inputs(monkeypatch, latent_sde_train, argv)
    vq, train, val, vq_ckpt = vqvae_splits(setup["prepared"], vq_path)
    piece, factor = 64, 4
    steps = train["signals"].shape[1] // factor
    train_enc, val_enc = (latent_sde_train.encode_windows(vq, d["signals"], piece) for d in (train, val))
    frames, beats, windows = run["train_set"].tensors    # the hint is on (phase_hint 1): its targets are the second
    n = len(train_enc)
    assert torch.equal(windows, torch.arange(len(frames)))     # the windows' indices last: validation's seeds
    assert len(frames) > n and torch.equal(frames[:n], train_enc[:, :steps])     # the stretched copies after
    np.testing.assert_array_equal(beats[:n], latent_sde_train.beat_targets(train, steps, factor, 64.0))
    assert torch.equal(run["val_set"].tensors[0], val_enc[:, :steps]) and len(run["val_set"]) == len(val["signals"])
    assert torch.equal(run["val_set"].tensors[-1], torch.arange(len(val["signals"])))
    torch.testing.assert_close(run["model"].obs_mean, train_enc[:, :steps].float().reshape(-1, 8).mean(0))
    assert run["meta"]["seed"] == run["settings"].seed == 5 and run["meta"]["vqvae_checkpoint"] == str(vq_path)
    assert run["meta"]["vqvae_sha256"] == file_sha256(vq_path)       # the weights: best.pt changes in its run
    assert run["extras"]["vqvae"]["meta"] == vq_ckpt["meta"] and run["config"]["vqvae"] == vq_ckpt["config"]
    np.testing.assert_array_equal(plotted_windows(run, monkeypatch), fixed_windows(val, 2).numpy())
    torch.manual_seed(2)                            # another global RNG, no copies: the same seeded start
    again = trainer_inputs(monkeypatch, latent_sde_train, argv + ["--augment-copies", "0"])
    assert len(again["train_set"]) == n
    start, other = run["model"].state_dict(), again["model"].state_dict()
    assert all(torch.equal(start[k], other[k]) for k in start)


@pytest.mark.parametrize("step, read_after", [("elbo", "encode_splits"), ("crps", "forecaster_splits")])
def test_run_json_names_the_weights_it_started_from_though_best_pt_is_replaced_meanwhile(
        trained: dict, drafted: dict, tmp_path: Path, monkeypatch, step: str, read_after: str) -> None:
    """vqvae_sha256 (an ELBO run's VQ-VAE) and crps_from_sha256 (a fine-tuning's ELBO run) are the files the run
    read: taken once the windows were loaded and encoded, they named a best.pt its run, still going, had saved
    meanwhile, weights this run never started from."""
    start = tmp_path / "best.pt"
    copy_of = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt")) if step == "elbo" else drafted["ckpt"]
    start.write_bytes(copy_of.read_bytes())
    read, key = file_sha256(start), "vqvae_sha256" if step == "elbo" else "crps_from_sha256"
    reading = getattr(latent_sde_train, read_after)

    def replaced_meanwhile(*a, **k):
        start.write_bytes(b"its run's next best.pt")
        return reading(*a, **k)
    monkeypatch.setattr(latent_sde_train, read_after, replaced_meanwhile)
    setup = {**(trained["setup_sde"] if step == "elbo" else drafted["setup"]), "results": str(tmp_path / "res"),
             "checkpoints": str(tmp_path / "ck")}
    run = trainer_inputs(monkeypatch, latent_sde_train,
                         flags(setup, "--device", "cpu", "--vqvae" if step == "elbo" else "--crps-from", str(start)))
    assert run["meta"][key] == read != file_sha256(start)
    assert run["meta"]["vqvae_given" if step == "elbo" else "crps_from_given"] == str(start)    # as the flag named it


@pytest.mark.parametrize("step", ["elbo", "crps"])
def test_run_json_names_the_weights_loaded_not_the_file_hashed_again_after(
        trained: dict, drafted: dict, tmp_path: Path, monkeypatch, step: str) -> None:
    """vqvae_sha256 and crps_from_sha256 hashed the file again right after loading it: a best.pt its run saved in
    between was named in place of the weights this run started from. They are the digest of the bytes loaded."""
    start = tmp_path / "best.pt"
    copy_of = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt")) if step == "elbo" else drafted["ckpt"]
    start.write_bytes(copy_of.read_bytes())
    read, key = file_sha256(start), "vqvae_sha256" if step == "elbo" else "crps_from_sha256"
    replaced_once_loaded(monkeypatch, start)
    setup = {**(trained["setup_sde"] if step == "elbo" else drafted["setup"]), "results": str(tmp_path / "res"),
             "checkpoints": str(tmp_path / "ck")}
    run = trainer_inputs(monkeypatch, latent_sde_train,
                         flags(setup, "--device", "cpu", "--vqvae" if step == "elbo" else "--crps-from", str(start)))
    assert run["meta"][key] == read != file_sha256(start)

def test_the_beat_hint_is_fed_only_when_it_has_a_weight_and_a_phase() -> None:
    """batch_names: the targets only for a phase model whose hint weighs something, the drafts for a drafting one."""
    for harmonics, hint, drafts, names in ((3, 1.0, False, ["beats"]), (3, 0.0, False, []), (0, 1.0, False, []),
                                           (0, 0.0, True, ["draft"])):
        scfg = sde_config_from_dict(phase_config(model={"phase_harmonics": harmonics, "draft_beats": drafts},
                                                 loss={"phase_hint": hint}))
        assert latent_sde_train.batch_names(scfg) == names, (harmonics, hint, drafts)


def test_crps_steps_draw_fresh_paths_and_validation_seeds_each_window_by_its_index() -> None:
    """crps_step: a training step's paths from a seed drawn anew from the run's generator; validation's from each
    window's index, the same every epoch (a drawn seed would make best.pt a matter of luck)."""
    seen = []
    model = torch.nn.Module()
    model.forward = lambda signals, seed: seen.append(seed) or (signals.sum(), {})
    batch = (torch.zeros(2, 4, 2, dtype=torch.float16), torch.tensor([7, 9]))
    torch.manual_seed(0)
    latent_sde_train.crps_step(model.train(), batch)
    latent_sde_train.crps_step(model, batch)
    assert isinstance(seen[0], int) and seen[0] != seen[1]
    latent_sde_train.crps_step(model.eval(), batch)
    assert torch.equal(seen[2], torch.tensor([7, 9]))


def test_crps_run_takes_its_config_and_seed_and_validates_on_the_validation_patients(drafted: dict, tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """What finetune_crps hands the trainer: the --config file's crps section and --seed (a new run), no
    weight decay pulling the ELBO run's weights to 0, the validation patients' windows for validation and the
    plots, the VQ-VAE kept in the checkpoint it starts from, the global generators seeded."""
    raw = json.loads(json.dumps(TINY_SDE))
    raw["model"].update(phase_harmonics=0, corrected_dims=0, draft_beats=True)
    raw["crps"] = {"samples": 3, "epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "learning_rate": 0.0007,
                   "patience": 1}
    (tmp_path / "crps.json").write_text(json.dumps(raw))
    setup = {**drafted["setup"], "config": str(tmp_path / "crps.json"), "results": str(tmp_path / "res"),
             "checkpoints": str(tmp_path / "ck")}
    torch.manual_seed(1)
    run = trainer_inputs(monkeypatch, latent_sde_train,
                         flags(setup, "--device", "cpu", "--crps-from", str(drafted["ckpt"]), "--seed", "5"))
    assert torch.initial_seed() == 5
    s = run["settings"]
    assert (s.epochs, s.max_steps_per_epoch, s.batch_size, s.learning_rate, s.weight_decay, s.warmup_steps,
            s.checkpoint_every, s.seed, s.patience) == (2, 3, 4, 0.0007, 0.0, 0, 2, 5, 1)
    assert run["model"].num_samples == 3 and run["meta"]["seed"] == 5
    source = torch.load(drafted["ckpt"], weights_only=True)
    digest = file_sha256(drafted["ckpt"])     # the weights it starts from, its VQ-VAE among them
    assert [run["meta"][k] for k in ("crps_from", "crps_from_sha256", "vqvae_checkpoint", "vqvae_sha256")] == [
        str(drafted["ckpt"]), digest, str(drafted["ckpt"]), digest]
    assert run["meta"]["started_from"] == {"path": str(drafted["ckpt"]), "sha256": digest, "meta": source["meta"]}
    vq, train, val, _ = vqvae_splits(setup["prepared"], Path(source["meta"]["vqvae_checkpoint"]))
    assert torch.equal(run["train_set"].tensors[0], train["signals"])
    assert torch.equal(run["val_set"].tensors[0], val["signals"])
    assert torch.equal(run["val_set"].tensors[1], torch.arange(len(val["signals"])))
    np.testing.assert_array_equal(plotted_windows(run, monkeypatch), fixed_windows(val, 2).numpy())


def test_crps_run_from_the_shipped_model_records_the_file_read_here_not_the_path_it_was_trained_at(
        drafted: dict, tmp_path: Path, monkeypatch) -> None:
    """--crps-from pretrained_sde wrote run.json's vqvae_checkpoint as the shipped model's own meta named it, a folder
    of the machine it was trained on (/tmp/sde25/...), with no digest of it: this run's VQ-VAE is the one kept in the
    shipped file. run.json (and the checkpoint's meta) name that file as given and as read here; the shipped model's
    own record is kept under started_from."""
    shipped = tmp_path / "pretrained" / "latent_sde.pt"
    shipped.parent.mkdir()
    source = torch.load(drafted["ckpt"], weights_only=True)
    source["meta"] = {**source["meta"], "vqvae_checkpoint": "/tmp/sde25/ck/vqvae-20261203-175409/best.pt"}
    source["meta"].pop("vqvae_sha256", None)     # as the shipped model's: trained before the digest was recorded
    torch.save(source, shipped)
    monkeypatch.setitem(paths.SHIPPED, "latent_sde", shipped)
    setup = {**drafted["setup"], "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck")}
    run = trainer_inputs(monkeypatch, latent_sde_train,
                         flags(setup, "--device", "cpu", "--crps-from", "pretrained_sde"))
    meta, digest = run["meta"], file_sha256(shipped)
    assert {k: meta[k] for k in (*latent_sde_train.CRPS_FROM_KEYS, *VQVAE_KEYS)} == {
        "crps_from": str(shipped), "crps_from_given": "pretrained_sde", "crps_from_sha256": digest,
        "vqvae_checkpoint": str(shipped), "vqvae_given": "pretrained_sde", "vqvae_sha256": digest}
    assert meta["started_from"] == {"path": str(shipped), "sha256": digest, "meta": source["meta"]}
    assert "/tmp/sde25" not in json.dumps({k: v for k, v in meta.items() if k != "started_from"})
    # a resume keeps the first run's record, whatever the shipped file holds since
    shipped.write_bytes(b"another model")
    resume = {"config": run["config"], "meta": meta}
    assert latent_sde_train.crps_sources(None, resume, resume, meta["crps_from"], "") == {
        k: meta[k] for k in (*latent_sde_train.CRPS_FROM_KEYS, *VQVAE_KEYS, "started_from")}


def test_a_fine_tuning_started_from_a_relative_path_records_it_absolute(tmp_path: Path, monkeypatch) -> None:
    """started_from, and a resume's paths, named --crps-from ck/best.pt as given: no file from another folder."""
    monkeypatch.chdir(tmp_path)
    new = latent_sde_train.crps_sources("ck/best.pt", None, {"meta": {}}, "ck/best.pt", "ab12")
    assert new["started_from"]["path"] == new["crps_from"] == str(tmp_path / "ck" / "best.pt")
    resumed = latent_sde_train.crps_sources(None, {"meta": {}}, {"meta": {}}, "ck/last.pt", "")
    assert resumed == dict.fromkeys(("crps_from", "vqvae_checkpoint"), str(tmp_path / "ck" / "last.pt"))


def test_training_drafts_lay_beats_at_the_windows_own_future_beats() -> None:
    """encode_drafted: a training window's draft is told where its future beats are (R peaks over the whole window),
    not only the context's: two windows with the same context and different futures get different drafts, and the
    same frames over their common context."""
    from conftest import synthetic_ecg
    from hyper_params import ModelConfig

    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(has_attention=False, downsample_factor=4, channels=16, res_blocks=1, latent_dim=8,
                           codebook_size=32, num_quantizers=1, window_gain=False)).eval()
    ecg = synthetic_ecg(6.0, 128, seed=1)[0]
    later = synthetic_ecg(6.0, 128, seed=2, hr_bpm=110)[0]          # beats of another rhythm
    x = torch.from_numpy(np.stack([ecg[:512], np.concatenate([ecg[:256], later[256:512]])]).astype(np.float32))
    d = torch.cat([latent_sde_train.encode_drafted(vq, w[None], 256, 128) for w in x])      # each window alone
    assert d.shape == (2, 128 + 64, 8) and torch.equal(d[0, :64], d[1, :64])
    assert not torch.allclose(d[0, 128:], d[1, 128:], atol=1e-2)


def test_beat_hint_targets_skip_long_gaps_whatever_the_order_of_the_annotations() -> None:
    """No phase or rate across a gap longer than max_rr_s (a pause or missing annotations is no 0.3 Hz heart),
    and annotations stored out of order give the targets of the sorted ones."""
    data = {"beat_ptr": torch.tensor([0, 3, 6]), "beat_pos": torch.tensor([10, 74, 300, 74, 300, 10])}
    t = latent_sde_train.beat_targets(data, frames=80, factor=4, fs=64.0, max_rr_s=2.0)
    centre = np.arange(80) * 4 + 1.5
    assert torch.isfinite(t[0, (centre >= 10) & (centre < 74)]).all()
    assert torch.isnan(t[0, centre >= 74]).all()                # 226 samples: 3.5 s > 2 s
    np.testing.assert_array_equal(t[1], t[0])


def test_a_solver_step_longer_than_a_latent_frame_is_warned_of(capsys) -> None:
    """At 128 Hz / 4 (or 250 Hz / 8) the default 1/16 s step spans two frames, and torchsde draws the one between
    on a straight line: the training says so, naming the key and the step that fits."""
    scfg = sde_config_from_dict({}, "test")
    sde = LatentSDE(obs_size=8, cfg=sde_config_from_dict(TINY_SDE), steps_per_second=32.0).eval()
    z = sde.solve(torch.randn(2, 6), torch.arange(5.0) / 32, 0, prior=True).detach()
    assert torch.allclose(z[1], (z[0] + z[2]) / 2)                  # the premise: an interpolated frame
    latent_sde_train.check_solver_step(scfg, 128 / 8)               # the defaults: one step a frame, no word
    assert capsys.readouterr().err == ""
    latent_sde_train.check_solver_step(scfg, 128 / 4)
    err = capsys.readouterr().err
    assert "solver.dt 0.0625 s is longer than one latent frame" in err and "at most 0.03125" in err
    latent_sde_train.check_solver_step(dataclasses.replace(scfg, solver=dataclasses.replace(scfg.solver, dt=0.04)),
                                       128 / 8)                     # 1.5625 steps a frame
    err = capsys.readouterr().err
    assert "solver.dt 0.04 s does not divide one latent frame" in err and "e.g. 0.03125" in err
    latent_sde_train.check_solver_step(dataclasses.replace(scfg, solver=dataclasses.replace(scfg.solver, dt=1 / 48)),
                                       128 / 8)                     # three steps a frame
    assert capsys.readouterr().err == ""


def test_the_solver_step_warning_comes_before_the_encoding(trained: dict, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    """The warning came after every training window was encoded: minutes on a VQ-VAE's first run, for a word
    that needs only its rate and downsample_factor."""
    import latent_sde_train

    def encoding(*args, **kwargs):
        raise RuntimeError("encoding")
    monkeypatch.setattr(latent_sde_train, "encode_splits", encoding)
    raw = json.loads(json.dumps(TINY_SDE))
    raw["solver"] = {"dt": 0.125}                   # two of the tiny VQ-VAE's 1/16 s frames
    cfg = tmp_path / "sde.json"
    cfg.write_text(json.dumps(raw))
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "config": str(cfg)}
    with pytest.raises(RuntimeError, match="encoding"):
        latent_sde_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq)))
    assert "solver.dt 0.125 s is longer than one latent frame" in capsys.readouterr().err


def test_a_too_small_solver_dt_stops_the_training_before_the_encoding(trained: dict, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """solver.dt's floor needs only the VQ-VAE's frame rate, which the config alone does not know: checked only by
    LatentSDE, a 1e-9 s step failed after every training window was encoded (minutes on a VQ-VAE's first run)."""
    import latent_sde_train

    def encoding(*args, **kwargs):
        raise AssertionError("encoded before solver.dt was checked")
    monkeypatch.setattr(latent_sde_train, "encode_splits", encoding)
    raw = json.loads(json.dumps(TINY_SDE))
    raw["solver"] = {"dt": 1e-9}                    # in (0, 1]: the config's own check passes it
    cfg = tmp_path / "sde.json"
    cfg.write_text(json.dumps(raw))
    vq = next((trained["tmp"] / "checkpoints").glob("vqvae-*/best.pt"))
    setup = {**trained["setup"], "config": str(cfg), "results": str(tmp_path / "r"),
             "checkpoints": str(tmp_path / "c")}
    with pytest.raises(UserError, match=r"'solver.dt' = 1e-09 must be in \[\S+, 1\] seconds with a VQ-VAE of 16 "):
        latent_sde_train.main(flags(setup, "--device", "cpu", "--vqvae", str(vq)))


def test_an_odd_crps_batch_under_torchrun_names_the_crps_key(tmp_path: Path, monkeypatch) -> None:
    """--crps-from --batch-size 3 with two processes said 'train.batch_size=3 must be divisible', a key the user
    never set (the fine-tuning's batch is crps.batch_size)."""
    import latent_sde_train
    from training import Runtime
    raw = json.loads(json.dumps(TINY_SDE))
    raw["model"].update(phase_harmonics=0, corrected_dims=0, draft_beats=True)
    elbo = tmp_path / "elbo.pt"
    torch.save({"kind": "latent_sde", "model": {}, "config": {**raw, "vqvae": {}}, "meta": {"seed": 0},
                "vqvae": {"model": {}, "config": {}}}, elbo)
    monkeypatch.setattr(latent_sde_train, "setup_runtime", lambda device: Runtime(torch.device("cpu"), 0, 2))
    with pytest.raises(UserError, match=r"^crps\.batch_size=3 \(--batch-size\) must be divisible by the 2 "
                                        r"processes: pass --batch-size 2 or 4$"):
        latent_sde_train.main(["--device", "cpu", "--crps-from", str(elbo), "--batch-size", "3"])


@pytest.mark.parametrize("method", ["euler", "srk"])
def test_per_path_seeds_follow_the_solvers_float32_steps_at_any_dt(method: str) -> None:
    """torchsde steps t + dt + dt ... in the float32 of ts, which drifts off t0 + j·dt at a dt that is not a power of
    two (0.01 s: 4.49 s is 1.5e-5 s off the grid by step 449): RowBrownian refused those times ('not on the
    solver's grid'), so validation with a per-window seed stopped at solver.dt 0.01 over a 6 s window."""
    sde = tiny_sde(method=method, dt=0.01).eval()
    context = torch.randn(48, 3, 8)
    with torch.no_grad():
        rows = sde.sample_frames(context, 48, 1, [11, 12, 13], normalised=True)
        alone = sde.sample_frames(context[:, 1:2], 48, 1, [12], normalised=True)   # one row: three took twice as long
    assert torch.isfinite(rows).all() and torch.allclose(rows[:, 1:2], alone, atol=1e-6)


def test_per_row_seeds_must_be_one_per_row() -> None:
    from latent_sde import normal_like
    like = torch.zeros(3, 4)
    assert normal_like(like, [1, 2, 3]).shape == (3, 4)
    with pytest.raises(ValueError, match="1 seeds for 3 rows"):
        normal_like(like, [1])


def test_a_training_draft_longer_than_a_piece_is_coded_as_a_forecasts(monkeypatch) -> None:
    """With data.forecast_predictions > 1 a training draft spans several pieces: encode_drafted codes it as a forecast
    codes its drafts (latent_frames in overlapping pieces, LatentSDEForecaster.draft_frames), so the emission adds
    at forecast time the frames it learned with. Coded whole, the encoder's attention over the longer draft gave other
    frames (8% of the shipped VQ-VAE's over 6 s)."""
    import vqvae_eval
    from conftest import periodic_ecg
    from drafts import detected_beats, draft_waves
    from hyper_params import ModelConfig
    from latent_sde import latent_frames

    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(has_attention=True, downsample_factor=4, channels=16, res_blocks=1, attention_heads=2,
                           attention_layers=1, latent_dim=8, codebook_size=32, num_quantizers=1,
                           window_gain=False)).eval()
    piece = 128
    x = torch.from_numpy(periodic_ecg(2, noise=0.02, seed=1, period=90, fs=64, length=3 * piece)).float()
    waves, index = draft_waves(x[:, :piece].numpy(), 2 * piece, 64, beats=detected_beats(x.numpy(), 64))
    forecast_coded = latent_frames(vq, torch.from_numpy(waves), piece)[torch.from_numpy(index)]
    drafts = latent_sde_train.encode_drafted(vq, x, piece, 64)[:, 3 * piece // 4:].float()
    torch.testing.assert_close(drafts, forecast_coded.half().float())
    keys = []       # and not read from a cache of drafts coded whole
    monkeypatch.setattr(vqvae_eval, "cached_encoding", lambda kind, key, compute, *a: keys.append(key) or compute())
    scfg = SimpleNamespace(model=SimpleNamespace(draft_beats=True), augment=SimpleNamespace(copies=0),
                           train=SimpleNamespace(seed=0))
    split = {"fs": 64, "signals": x, "data_hash": "d", "input_hash": "i"}
    rt = SimpleNamespace(is_main=True, distributed=False, device=torch.device("cpu"))
    latent_sde_train.encode_splits(vq, scfg, SimpleNamespace(data=SimpleNamespace(window_samples=piece)), split, split,
                                   None, rt)
    assert {k.split(":", 4)[4] for k in keys} == {f"{piece}:drafts{latent_sde_train.DRAFTS_VERSION}:pieces"}


def test_training_codes_the_future_and_its_draft_at_the_contexts_gain() -> None:
    """A forecast decodes its future frames at the context's gain: with a VQ-VAE that codes each window's gain
    (window_gain) training coded each future piece, and its draft, at its own, so the SDE learned frames that the
    forecast then decoded at another gain (half the validation windows a step or more apart). A future 4 x as loud
    as its context is coded at the context's gain, its draft too; the forecast's drafts are coded alike."""
    from conftest import periodic_ecg
    from drafts import detected_beats, draft_waves
    from hyper_params import ModelConfig
    from latent_sde import latent_frames

    torch.manual_seed(0)
    vq = VQVAE(ModelConfig(has_attention=False, downsample_factor=4, channels=16, res_blocks=1, latent_dim=8,
                           codebook_size=32, num_quantizers=1, window_gain=True)).eval()
    piece = 128
    x = torch.from_numpy(periodic_ecg(2, noise=0.02, seed=1, period=90, fs=64, length=2 * piece)).float()
    x[:, piece:] *= 4
    unit = vq.unit(x[:, :piece])
    with torch.no_grad():
        want = vq.encode_latent(x[:, piece:], unit).transpose(1, 2)
        assert not torch.allclose(want, vq.encode_latent(x[:, piece:]).transpose(1, 2), atol=1e-2)
        torch.testing.assert_close(latent_sde_train.encode_windows(vq, x, piece)[:, piece // 4:].float(),
                                   want.half().float())
        waves, index = draft_waves(x[:, :piece].numpy(), piece, 64, beats=detected_beats(x.numpy(), 64))
        drafts = latent_frames(vq, torch.from_numpy(waves)[torch.from_numpy(index)], unit=unit)
        torch.testing.assert_close(latent_sde_train.encode_drafted(vq, x, piece, 64)[:, 2 * piece // 4:].float(),
                                   drafts.half().float())


def test_crps_paths_of_an_emission_that_renders_nothing_are_their_drafts_over_several_pieces() -> None:
    """path_crps decodes its paths as it decodes their drafts and as a forecast decodes both (in overlapping pieces,
    decode_frames): a path the SDE leaves at its draft scores as the draft, over a horizon of two pieces too. Decoded
    whole against drafts decoded in pieces, such paths departed from their drafts by the decoder's difference alone
    (here CRPS 0.17 against the drafts' 0.05), which the fine-tuning then trained on."""
    from conftest import periodic_ecg

    fc = untrained_drafted_forecaster()
    with torch.no_grad():
        fc.sde.emission[-1].weight.zero_()
        fc.sde.emission[-1].bias.zero_()
    for pieces in (1, 2):
        window = torch.from_numpy(periodic_ecg(1, noise=0.05, seed=1, period=50, fs=64, length=192 * (1 + pieces)))
        with torch.no_grad():
            paths, drafts = fc.path_crps(window.float(), 4, 5)
        torch.testing.assert_close(paths, drafts, atol=1e-6, rtol=0)


def test_validations_beat_errors_pool_over_the_annotated_frames_alone() -> None:
    """elbo_step's beat-hint errors in validation are (sum, frames) pooled over batches: a batch with no annotated
    frame adds nothing, so the pooled error is the annotated batch's own, and alone it reads 0, not NaN."""
    sde = tiny_sde().eval()
    step = latent_sde_train.elbo_step(16, ["beats"])
    frames = torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(1))
    none = torch.full((2, 32, 2), float("nan"))
    some = none.clone()
    some[0, :10] = torch.tensor([1.0, 1.2])
    with torch.no_grad():
        unannotated = step(sde, (frames, none, torch.arange(2)))[1]
        annotated = step(sde, (frames, some, torch.arange(2)))[1]
    for key in ("phase_err", "rate_err"):
        empty, own = unannotated[key], annotated[key]
        assert empty.figure(empty.counts) == 0 and own.figure(own.counts) > 0
        both = empty + own
        assert both.figure(both.counts) == pytest.approx(own.figure(own.counts), rel=1e-6), key
