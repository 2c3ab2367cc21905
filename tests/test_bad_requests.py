"""Bad forecast requests get one clear message naming the argument, flag or file, and leave no half outputs:
predict's arguments (every forecaster), forecast.py's flags, foreign checkpoint files, devices, evaluate.py."""
from __future__ import annotations

import inspect
import json
import math
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import wfdb

import evaluate
import forecast
import paths
from baselines import BASELINES, make_baseline
from conftest import TWELVE, edit_tree_after, run_script, synthetic_ecg, twelve_leads, write_record, write_signal
from drafts import context_rhythm, whole_beats
from forecast import Forecaster
from hyper_params import DataConfig
from latent_sde import LatentSDEForecaster
from paths import PRETRAINED, UserError
from train_results import load_checkpoint
from training import setup_runtime

GOOD = np.zeros((1, 384, 2), np.float32)
BAD_REQUESTS = [  # (context, horizon, num_samples, seed), the name the message must give
    ((GOOD, 10, 0, 0), "num_samples"),
    ((GOOD, 10, -3, 0), "num_samples"),
    ((GOOD, 1.5, 2, 0), "horizon"),
    ((GOOD, 0, 2, 0), "horizon"),
    ((GOOD, 10, 2, -1), "seed"),
    ((GOOD, 10, 2, None), "seed"),
    ((GOOD, True, 2, 0), "horizon"),
    ((np.zeros((0, 384, 2)), 10, 2, 0), "context"),
    ((np.zeros((1, 0, 2)), 10, 2, 0), "context"),
    ((np.full((1, 384, 2), "a", dtype=object), 10, 2, 0), "context"),
    ((np.zeros((1, 384, 2), bool), 10, 2, 0), "context"),
    ((GOOD, 10, 2, 2 ** 63), "seed"),
    ((np.zeros((1, 2, 384)), 10, 2, 0), r"got shape \(1, 2, 384\); leads come last: transpose a \[B, 2, C\]"),
    ((np.zeros((2, 384)), 10, 2, 0), r"got shape \(2, 384\); leads come last: transpose a \[2, C\] context to \[C, 2\]"),
    ((np.zeros((2, 2, 384)), 10, 2, 0), r"got shape \(2, 2, 384\); leads come last: transpose a \[B, 2, C\] context$"),
    ((np.zeros((384, 3)), 10, 2, 0), r"got shape \(384, 3\)$"),                # the shape passed, not the batch made of it
    (([[[0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]], 10, 2, 0), "its contexts equally long .forecast contexts of other "
     "lengths in calls of their own."),                                                      # ragged
    ((np.where(np.arange(384)[None, :, None] == 7, np.nan, GOOD), 10, 2, 0), "row 0, sample 7, lead 1: every sample "
     "is forecast from; fill them or cut them out"),
    ((np.full((1, 384, 2), 1e40), 10, 2, 0), "inf samples .in float32."),
    ((np.ma.masked_greater(np.arange(768.0).reshape(384, 2), 766), 10, 2, 0), "1 samples masked, the first at row 0, "
     "sample 383, lead 2"),                         # np.asarray drops the mask: the values under it were forecast from
]


@pytest.fixture(scope="module")
def shipped() -> Forecaster:
    return Forecaster.from_checkpoint(PRETRAINED, "cpu")


@pytest.mark.parametrize("request_, name", BAD_REQUESTS)
def test_every_forecaster_names_the_bad_argument(shipped, request_, name):
    for f in [shipped] + [make_baseline(b, 128) for b in BASELINES]:
        with pytest.raises(ValueError, match=name):
            f.predict(*request_)


def test_integer_contexts_and_numpy_integers_are_fine(shipped):
    """Forecast as the same numbers in float and Python ints (the shape and dtype alone passed whatever was drawn)."""
    context = (np.arange(768).reshape(1, 384, 2) % 3).astype(np.int16)
    for f in (shipped, make_baseline("template_ensemble", 128)):
        out = f.predict(context, np.int64(8), np.int32(3), np.uint8(1))
        assert out.shape == (1, 3, 8, 2) and out.dtype == np.float32
        np.testing.assert_array_equal(out, f.predict(context.astype(np.float32), 8, 3, 1), err_msg=f.name)


def test_every_forecaster_returns_numpy_float32_for_numpy_and_torch_contexts(shipped):
    """What the README and ForecasterBase.predict promise: a numpy float32 array, whatever the context's type."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        for context in (x, torch.from_numpy(x), torch.from_numpy(x).float()[None]):
            out = f.predict(context, 8, 2)
            assert type(out) is np.ndarray and out.dtype == np.float32 and out.shape[::2] == (1, 8), f.name


def test_every_predict_shows_the_signature_it_takes(shipped):
    """help(fc.predict) showed the wrapped predict's `x: np.ndarray`, and predict(x=...) failed: every predict
    names its context `context`, and keywords as inspect shows them are taken."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        names = list(inspect.signature(f.predict).parameters)
        assert names[:4] == ["context", "horizon", "num_samples", "seed"], (f.name, names)
        by_name = f.predict(**dict(zip(names, (x, 8, 2, 1))))
        np.testing.assert_array_equal(by_name, f.predict(x, 8, 2, 1), err_msg=f.name)


def test_the_forecasters_help_says_how_to_get_one():
    """help(forecast.Forecaster) showed the constructor's models and configs, and not the way to a forecaster:
    its docstring names the loaders, which exist as named."""
    doc = " ".join(inspect.getdoc(Forecaster).split())
    assert "Forecaster.from_pretrained()" in doc and "Forecaster.from_checkpoint(path)" in doc
    assert all(isinstance(inspect.getattr_static(Forecaster, name), classmethod)
               for name in ("from_pretrained", "from_checkpoint"))


def test_every_predicts_help_says_what_it_takes(shipped):
    """help(fc.predict), what a notebook shows, described the samples returned only: not the context's shape, unit
    and rate, nor the horizon's unit or the seed."""
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        doc = inspect.getdoc(f.predict)
        assert all(said in doc for said in ("`context` [B, C, 2]", "in mV at `self.fs`", "`horizon` samples",
                                            "`seed`", "[B, S, H, 2]")), f.name


def test_every_argument_predict_shows_as_positional_is_taken_so(shipped):
    """inspect showed the Transformer's use_cache as positional, and predict(x, 8, 2, 1, False) was a TypeError:
    what one_by_one passes on after the seed is keyword-only, in the signature too."""
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        params = inspect.signature(f.predict).parameters.values()
        assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] == ["context", "horizon", "num_samples",
                                                                                 "seed"], f.name
    assert [p.name for p in inspect.signature(shipped.predict).parameters.values()
            if p.kind is p.KEYWORD_ONLY] == ["use_cache"]


def test_a_transposed_view_is_forecast_as_its_values(shipped):
    """A [B, 2, C] array (or tensor) transposed to [B, C, 2] is a view whose samples lie a lead apart: the context
    mean baseline summed them in another order and forecast 1 ulp off the same values laid out plainly."""
    x = np.stack([synthetic_ecg(3, 128, seed=s)[0] for s in range(2)]).astype(np.float32)
    leads_first = np.ascontiguousarray(x.transpose(0, 2, 1))
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        for view in (leads_first.transpose(0, 2, 1), torch.from_numpy(leads_first).transpose(1, 2)):
            np.testing.assert_array_equal(f.predict(view, 8, 2), f.predict(x, 8, 2), err_msg=f.name)


def test_a_context_is_forecast_alone(shipped):
    """A context's forecast depends on it, the horizon, the samples and the seed, not on its batch mates."""
    x = np.stack([synthetic_ecg(3, 128, seed=s)[0] for s in range(3)]).astype(np.float32)
    for f in [shipped] + [make_baseline(b, 128) for b in BASELINES]:
        batch = f.predict(x, 64, num_samples=3, seed=4)
        for b in range(3):
            np.testing.assert_array_equal(batch[b], f.predict(x[b], 64, num_samples=3, seed=4)[0], err_msg=f.name)
        if not f.deterministic:         # another seed, other paths
            assert not np.array_equal(batch[0], f.predict(x[0], 64, num_samples=3, seed=5)[0]), f.name


def test_a_read_only_context_is_forecast_without_a_warning(shipped):
    """A broadcast or read-only array (np.broadcast_to, a memory map opened "r") made torch.from_numpy warn that
    "writing to this tensor will result in undefined behavior" from inside the models' predict."""
    x = synthetic_ecg(3, 128, seed=0)[0].astype(np.float32)
    frozen = x[None].copy()
    frozen.setflags(write=False)
    for context in (np.broadcast_to(x, (2,) + x.shape), frozen):
        assert forecast.as_context(context).flags.writeable
        for f in (shipped, Forecaster.from_pretrained("cpu", model="latent_sde")):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                out = f.predict(context, 8, 2, seed=1)
            np.testing.assert_array_equal(out, f.predict(np.array(context), 8, 2, seed=1), err_msg=f.name)


def test_a_context_in_microvolts_is_warned_about():
    x = synthetic_ecg(3, 128, seed=0)[0]
    with pytest.warns(UserWarning, match="convert it to mV"):
        make_baseline("seasonal", 128).predict(x * 1000, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_baseline("seasonal", 128).predict(x, 8)


def test_a_models_context_in_microvolts_is_warned_about_once(shipped):
    """The models' predict warns of a context in microvolts as the baselines' does, once: the VQ-VAE's unit warning
    (for windows coded by hand) said it again for the context and for every chunk of drafts."""
    x = synthetic_ecg(3, 128, seed=0)[0] * 1000
    for f in (shipped, Forecaster.from_pretrained("cpu", model="latent_sde")):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            f.predict(x, 8, 2)
        assert len(said) == 1 and "units peak to peak" in str(said[0].message), (f.name, [str(w.message) for w in said])
        assert said[0].filename == __file__


def test_a_flat_lead_is_warned_about(shipped):
    """A lead off (or a context of zeros) swings nothing, which no unit turns into an ECG."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    x[:, 1] = 0.0
    for f in (shipped, make_baseline("seasonal", 128)):
        with pytest.warns(UserWarning, match=r"1 flat lead\(s\) .*row 0, lead 2: lead off\?"):
            f.predict(x, 8, 2)
        with pytest.warns(UserWarning, match=r"2 flat lead\(s\) .*row 0, lead 1: lead off\?"):
            f.predict(np.zeros((384, 2), np.float32), 8, 2)


def test_a_context_with_an_offset_is_warned_about():
    """A raw recording's offset of 5 mV is no band-passed context; one within 0.5 mV of zero is (prepared
    windows average 0.42 mV at most)."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    x -= x.mean(axis=0)
    f = make_baseline("seasonal", 128)
    with pytest.warns(UserWarning, match=r"lead 2 \(row 0\) averages 5 mV: not band-passed"):
        f.predict(x + [0.0, 5.0], 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f.predict(x + [0.5, -0.5], 8)


def test_a_lead_of_tiny_noise_is_flat_and_a_flat_context_no_unit_problem():
    """A lead off may carry noise far below 1e-6 mV: still flat. A context of zeros is told it is flat, not that
    it is in the wrong unit."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    x[:, 0] = 1e-7 * np.random.default_rng(0).standard_normal(len(x))
    f = make_baseline("seasonal", 128)
    with pytest.warns(UserWarning, match=r"1 flat lead\(s\) .*row 0, lead 1"):
        f.predict(x, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f.predict(np.zeros((384, 2)), 8)
    assert [str(w.message).split(" (")[0] for w in caught] == ["the context has 2 flat lead(s)"]


def run_forecast(args: list[str]) -> tuple[int, str]:
    """forecast.py in this process, as its __main__ runs it: (exit status, stderr)."""
    r = run_script(forecast.main, "forecast.py", args)
    return r.returncode, r.stderr


@pytest.mark.parametrize("flags, needle", [
    (["--samples", "0"], "error: --samples must be >= 1, got 0"),             # the one flag wrong, not both named
    (["--seed", "-1"], "error: --seed must be in [0, 2**63), got -1"),
    (["--horizon", "0"], "--horizon"),
    (["--horizon", "nan"], "--horizon"),
    (["--start", "nan"], "--start"),
    (["--start", "inf"], "--start"),
    (["--device", "bogus"], "bogus"),
    (["--device", "cuda:7"], "cuda:7"),
])
def test_forecast_flags_fail_with_one_line(tmp_path, flags, needle):
    write_record(tmp_path, "r", seconds=12, seed=0)
    out = tmp_path / "out"
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(tmp_path / "r"), "--start", "5",
                              "--out", str(out), *flags])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists() or not any(out.iterdir())


def test_forecast_too_long_for_memory_is_one_line(tmp_path, monkeypatch):
    """--horizon 1e7 (115 days) stopped in numpy's MemoryError traceback; the allocation is faked here."""
    def too_long(self, context, horizon, num_samples=100, seed=0):
        raise MemoryError(f"Unable to allocate 9.54 GiB for an array with shape ({horizon},) and data type int64")
    monkeypatch.setattr(Forecaster, "predict", too_long)
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "5", "--horizon",
                              "1e7", "--samples", "2", "--out", str(tmp_path / "out")])
    assert code == 2 and err == ("error: --horizon 1e+07 s with --samples 2: 2 paths of 1280000000 samples do not fit in "
                                 "memory (MemoryError: Unable to allocate 9.54 GiB for an array with shape "
                                 "(1280000000,) and data type int64)\n"), err
    assert not (tmp_path / "out").exists()


def test_forecast_of_more_bytes_than_an_array_holds_is_one_line(tmp_path):
    """--horizon 1e20 s: numpy refuses an array of 2**63 bytes or more with a ValueError ('Maximum allowed size
    exceeded'), a traceback that the MemoryError's line did not catch; said before anything is drawn."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", "seasonal", "--record", str(record), "--start", "5", "--horizon",
                              "1e20", "--out", str(tmp_path / "out")])
    assert code == 2 and err == ("error: --horizon 1e+20 s with --samples 100: 100 paths of 12800000000000000000000 "
                                 "samples do not fit in memory\n"), err
    assert not (tmp_path / "out").exists()


def test_forecast_of_a_record_shorter_than_one_context(tmp_path):
    """No --start fits in a record shorter than the context: said so, not as an empty range of starts."""
    record = write_record(tmp_path, "short", seconds=2, seed=0)
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "2",
                              "--out", str(tmp_path / "out")])
    want = f"{record} lasts 2.0 s, shorter than the model's context of 3.0 s: no forecast can start in it"
    assert code == 2 and err.strip() == f"error: {want}", err


def test_forecast_of_a_folder_names_its_records(tmp_path):
    """--record DIR (a folder) takes FOLDER/NAME, and names a record or two of DIR, not "missing file DIR.hea"."""
    for name in ("b", "a", "c"):
        write_record(tmp_path / "db", name, seconds=4, seed=0, annotate=False)
    (tmp_path / "empty").mkdir()
    for folder, tail in ((tmp_path / "db", f"e.g. {tmp_path / 'db' / 'a'} or {tmp_path / 'db' / 'b'}"),
                         (tmp_path / "empty", f"{tmp_path / 'empty'} holds no .hea file")):
        code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(folder), "--start", "3"])
        assert code == 2 and err == (f"error: --record {folder} is a folder: it takes one record, FOLDER/NAME without "
                                     f"an extension{', ' if 'e.g.' in tail else '; '}{tail}\n"), err


def test_forecast_of_a_record_named_without_its_folder(tmp_path, monkeypatch):
    """--record NAME (no folder) was 'NAME: missing file NAME.hea': now it says what --record takes, and offers the
    data folder's record of that name ($MITBIH_DIR, as prepare_mitbih.py reads it) when there is one."""
    write_record(tmp_path / "db", "zz9", seconds=12, seed=0)
    monkeypatch.chdir(tmp_path)
    want = "error: --record zz9: no header zz9.hea; --record takes a WFDB record's path without an extension, FOLDER/NAME"
    monkeypatch.setenv("MITBIH_DIR", str(tmp_path / "elsewhere"))
    assert run_forecast(["--checkpoint", str(PRETRAINED), "--record", "zz9", "--start", "5"]) == (2, want + "\n")
    monkeypatch.setenv("MITBIH_DIR", str(tmp_path / "db"))
    assert run_forecast(["--checkpoint", str(PRETRAINED), "--record", "zz9", "--start", "5"]) == (
        2, f"{want}, such as {tmp_path / 'db' / 'zz9'}\n")


def test_forecast_of_a_record_whose_name_the_system_refuses(tmp_path, monkeypatch):
    """--record whose folder's name is too long for the file system: Path.is_dir raised the OSError as a traceback
    (Python 3.11), where check_header's error names the record and what --record takes."""
    record = tmp_path / ("x" * 300) / "zz9"
    monkeypatch.setenv("MITBIH_DIR", str(tmp_path / ("x" * 300)))
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "5"])
    assert code == 2 and err == (f"error: --record {record}: no header {record}.hea; --record takes a WFDB record's "
                                 "path without an extension, FOLDER/NAME\n"), err


def test_a_checkpoint_whose_name_the_system_refuses_is_one_error(tmp_path):
    """A checkpoint path too long for the file system (--model, --checkpoint, --vqvae, --resume): Path.exists,
    is_file and is_dir raised the OSError as a traceback, where the errors name the path."""
    path = tmp_path / ("x" * 300) / "best.pt"
    with pytest.raises(UserError, match=f"^checkpoint not found: {path}$"):
        load_checkpoint(path)
    with pytest.raises(UserError, match=f"^--model {path}: no such checkpoint file; "):
        evaluate.make_forecaster(str(path), 128)
    with pytest.raises(UserError, match=f"^--checkpoint {path}: no such checkpoint file, and not a shipped model"):
        forecast.checkpoint_path(str(path))
    with pytest.raises(UserError, match=f"^--model {path}.py:F: no such file {path}.py$"):     # one's own FILE.py
        evaluate.make_forecaster(f"{path}.py:F", 128)


def test_a_checkpoints_root_whose_name_the_system_refuses_is_one_error(tmp_path):
    """A checkpoints root too long for the file system (vqvae_eval.py --checkpoints, $ECG_CHECKPOINTS_DIR): looking
    for its newest checkpoint raised the OSError as a traceback, where the error names the root and the flag (a
    trainer's is --vqvae)."""
    import vqvae_eval

    root = tmp_path / ("x" * 300)
    r = run_script(vqvae_eval.main, "vqvae_eval.py", ["--checkpoints", str(root)])
    said = (f"error: cannot look for vqvae checkpoints in {root}: File name too long; pass --checkpoint, or a "
            "checkpoints root that can be read\n")
    assert r.returncode == 2 and r.stderr == said, r.stderr
    import transformer_train        # a trainer's default VQ-VAE: the flag to pass is its --vqvae

    r = run_script(transformer_train.main, "transformer_train.py", ["--device", "cpu", "--checkpoints", str(root)])
    assert r.returncode == 2 and r.stderr == said.replace("--checkpoint,", "--vqvae,"), r.stderr


def test_forecast_of_a_record_exactly_one_context_long(shipped, tmp_path):
    """A record as long as the context is not too short: the forecast starts at its end, with no truth to plot."""
    record = write_record(tmp_path, "r", seconds=3, seed=0)
    res = forecast.forecast_record(shipped, str(record), 3.0, 1.0, 2, 0)
    assert res["samples"].shape == (2, 128, 2) and len(res["truth"]) == 0


def test_forecast_names_a_missing_shipped_model(tmp_path, monkeypatch):
    """A shipped model by name whose file is gone: the make target that builds it, and the flag to use instead."""
    gone = paths.ROOT / "pretrained" / "gone.pt"            # under ROOT, as --help shows it relative to ROOT
    monkeypatch.setitem(paths.SHIPPED, "latent_sde", gone)
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", "pretrained_sde", "--record", str(record), "--start", "5"])
    assert code == 2 and err == (f"error: no shipped model at {gone}: run `make pretrained-sde` or pass --checkpoint "
                                 "CHECKPOINT\n"), err


def test_forecast_checkpoint_names_the_shipped_models(tmp_path):
    """--checkpoint takes evaluate.py's names of the shipped models, says so in --help, and offers them for a
    checkpoint that is not there."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", "latent", "--record", str(record), "--start", "5"])
    assert code == 2 and err == ("error: --checkpoint latent: no such checkpoint file, and not a shipped model "
                                 f"(pretrained, pretrained_sde), a baseline ({', '.join(BASELINES)}) nor a "
                                 "forecaster of one's own (FILE.py:NAME[=CHECKPOINT])\n"), err
    usage = " ".join(run_script(forecast.main, "forecast.py", ["--help"]).stdout.split())
    assert "pretrained (pretrained/forecaster.pt), pretrained_sde (pretrained/latent_sde.pt)" in usage


def test_a_shipped_models_python_name_is_answered_with_its_cli_name(tmp_path):
    """`latent_sde` or `transformer` (Forecaster.from_pretrained's names) to --checkpoint or --model listed every name
    the flag takes, pretrained_sde among them, and left the user to match the two up: the error says which it is."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    for python, cli in (("latent_sde", "pretrained_sde"), ("transformer", "pretrained")):
        code, err = run_forecast(["--checkpoint", python, "--record", str(record), "--start", "5"])
        assert code == 2 and err == (f"error: --checkpoint {python}: no such checkpoint file; the shipped {python} "
                                     f"model is --checkpoint {cli} on the command line ('{python}' is its name in "
                                     f"Forecaster.from_pretrained(model=...))\n"), err
        with pytest.raises(UserError, match=f"^--model {python}: no such checkpoint file; the shipped {python} model "
                                            f"is --model {cli} on the command line "):
            evaluate.make_forecaster(python, 128)


def test_from_pretrained_answers_a_command_line_name_with_its_python_name(tmp_path, monkeypatch):
    """from_pretrained(model="pretrained_sde"), the name forecast.py and from_checkpoint take, listed only the two
    Python names; a missing shipped file said "pass --checkpoint", a flag Python has none of."""
    for cli, python in (("pretrained_sde", "latent_sde"), ("pretrained", "transformer")):
        with pytest.raises(UserError, match=f"^no shipped model named '{cli}' in from_pretrained: '{cli}' is its "
                                            f"command-line name; here it is model='{python}' "):
            Forecaster.from_pretrained("cpu", model=cli)
    monkeypatch.setitem(paths.SHIPPED, "latent_sde", tmp_path / "latent_sde.pt")
    with pytest.raises(UserError, match=r"latent_sde.pt: run `make pretrained-sde`, or load a checkpoint of your own "
                                        r"with Forecaster.from_checkpoint\(path\)$"):
        Forecaster.from_pretrained("cpu", model="latent_sde")


def test_forecast_output_folder_that_is_a_file(tmp_path, monkeypatch):
    """Refused as an output folder before any forecast is made, saying it is a file (mkdir's 'File exists' said
    what is there, not that it is no folder): any error naming 'taken' passed, the forecast's own failed write after
    all its work ('cannot write to .../taken') too."""
    write_record(tmp_path, "r", seconds=12, seed=0)
    (tmp_path / "taken").write_text("mine\n")
    monkeypatch.setattr(forecast, "forecast_record", lambda *a, **k: pytest.fail("forecast before --out was checked"))
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(tmp_path / "r"), "--start", "5",
                              "--out", str(tmp_path / "taken")])
    assert code == 2 and err == f"error: cannot write to the output folder {tmp_path / 'taken'}: it is a file\n", err
    assert (tmp_path / "taken").read_text() == "mine\n"


def test_forecast_takes_a_record_named_with_its_extension(tmp_path):
    write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(tmp_path / "r.hea"), "--start", "5",
                              "--horizon", "1", "--samples", "2", "--out", str(tmp_path / "out")])
    assert code == 0, err
    assert np.load(tmp_path / "out" / "r_5s_samples.npy").shape == (2, 128, 2)   # named after the record
    assert not list((tmp_path / "out").glob(".*.tmp"))



def test_a_forecast_over_an_earlier_one_says_so(tmp_path):
    """--out names a folder of one's own, and a forecast of the same record and start (another seed, another model)
    replaced the earlier one's files without a word."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    asked = ["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "5", "--horizon", "1", "--samples",
             "2", "--out", str(tmp_path / "out")]
    code, err = run_forecast(asked)
    assert code == 0 and "replacing" not in err, err
    code, err = run_forecast(asked + ["--seed", "1"])
    assert code == 0 and (f"note: replacing r_5s_samples.npy, r_5s.png, r_5s.json in {tmp_path / 'out'}, an earlier "
                          "forecast of r from 5 s") in err, err
    assert json.loads((tmp_path / "out" / "r_5s.json").read_text())["seed"] == 1


def test_forecasts_from_nearby_starts_are_kept_apart(tmp_path):
    """Files were named by the start to 6 digits: in a long (Holter) record 12345.67 s and 12345.71 s, five samples
    apart, both wrote 12345.7s files, the second over the first, and the plot said 'from 12345.7 s'."""
    x, _ = synthetic_ecg(10.0, 128.0, seed=0)
    record = write_signal(tmp_path, "long", np.tile(x, (1236, 1)), fs=128.0)       # 12360 s
    for start in ("12345.67", "12345.71"):
        code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", start,
                                  "--horizon", "0.5", "--samples", "1", "--out", str(tmp_path / "out")])
        assert code == 0 and "replacing" not in err, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["long_12345.67s.json", "long_12345.71s.json"]


def test_forecast_json_names_the_commit_the_run_started_at(tmp_path, monkeypatch):
    """The tree may change while a forecast runs: its .json names the code that ran, not the code at its end."""
    write_record(tmp_path, "r", seconds=12, seed=0)
    edit_tree_after(monkeypatch, forecast, "forecast_record")
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(tmp_path / "r"), "--start", "5",
                              "--horizon", "1", "--samples", "2", "--out", str(tmp_path / "out")])
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "r_5s.json").read_text())["git_commit"] == "at-start"

def test_forecast_json_names_the_data_weights_and_device_it_used(tmp_path):
    """Next to its seed and commit, a forecast's .json names the record's files by hash (another recording under
    the same name is told apart), the checkpoint by its SHA-256 (best.pt changes while its run goes on) and the
    device (a GPU draws other numbers)."""
    import hashlib

    from prepare_mitbih import hash_inputs
    asked = ["--checkpoint", str(PRETRAINED), "--start", "5", "--horizon", "1", "--samples", "2", "--device", "cpu"]
    said = []
    for seed in (0, 1):
        folder = tmp_path / f"db{seed}"
        write_record(folder, "r", seconds=12, seed=seed)
        code, err = run_forecast([*asked, "--record", str(folder / "r"), "--out", str(folder / "out")])
        assert code == 0, err
        said.append(json.loads((folder / "out" / "r_5s.json").read_text()))
    assert said[0]["input_hash"] == hash_inputs(tmp_path / "db0", ["r"], annotator=None) != said[1]["input_hash"]
    assert said[0]["checkpoint_sha256"] == hashlib.sha256(PRETRAINED.read_bytes()).hexdigest()[:16]
    assert said[0]["device"] == "cpu" and said[0]["seed"] == 0


def test_forecast_json_names_the_data_config_and_command(tmp_path):
    """Training runs and evaluate.py's report give the data config's hash and the command; a forecast's .json gave
    neither, so a record read with another filter band or rate (a baseline reads by config_vqvae.json) was not told
    apart, nor the flags it ran with."""
    from hyper_params import data_hash
    write_record(tmp_path, "r", seconds=12, seed=0)
    asked = ["--checkpoint", "persistence", "--record", str(tmp_path / "r"), "--start", "5", "--horizon", "1",
             "--out", str(tmp_path / "out")]
    code, err = run_forecast(asked)
    assert code == 0, err
    said = json.loads((tmp_path / "out" / "r_5s.json").read_text())
    assert said["data_hash"] == data_hash(forecast.load_config().data)
    assert said["command"] == "python3 forecast.py " + " ".join(asked)


def test_forecast_json_names_the_weights_loaded_though_the_file_is_replaced_after(tmp_path, monkeypatch):
    """The checkpoint was hashed again once loaded: a best.pt its run replaced in between was named in place of the
    weights that forecast. Forecaster.from_checkpoint keeps the digest of the bytes it loaded, which the .json gives."""
    import shutil

    ckpt, other = tmp_path / "best.pt", paths.SHIPPED["latent_sde"]
    shutil.copy(PRETRAINED, ckpt)
    load = forecast.load_forecaster

    def then_replaced(*a, **k):
        out = load(*a, **k)
        shutil.copy(other, ckpt)        # the run saves a new best.pt
        return out
    monkeypatch.setattr(forecast, "load_forecaster", then_replaced)
    write_record(tmp_path / "db", "r", seconds=12)
    code, err = run_forecast(["--checkpoint", str(ckpt), "--record", str(tmp_path / "db" / "r"), "--start", "5",
                              "--horizon", "1", "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 0, err
    said = json.loads((tmp_path / "out" / "r_5s.json").read_text())["checkpoint_sha256"]
    assert said == paths.file_sha256(PRETRAINED) != paths.file_sha256(ckpt)


@pytest.mark.parametrize("name", ["seasonal", "template_ensemble"])
def test_forecast_py_forecasts_a_record_with_a_baseline_by_name(tmp_path, name):
    """forecast.py took evaluate.py's shipped-model names but not its baselines', refused as 'no such checkpoint
    file': a record's forecast is set beside a baseline's with the same flags. Its paths are the baseline's own."""
    write_record(tmp_path / "db", "r", seconds=12)
    out = forecast.main(["--checkpoint", name, "--record", str(tmp_path / "db" / "r"), "--start", "5",
                         "--horizon", "1", "--samples", "3", "--device", "cpu", "--out", str(tmp_path / "out")])
    expected = make_baseline(name, 128).predict(out["context"][None], 128, num_samples=3, seed=0)[0]
    assert np.array_equal(out["samples"], expected) and out["samples"].shape == (len(expected), 128, 2)
    said = json.loads((tmp_path / "out" / "r_5s.json").read_text())
    assert said["checkpoint"] == name and "checkpoint_sha256" not in said
    assert all(f.is_file() for f in out["files"])


def test_forecast_py_leads_forecasts_the_channels_named(tmp_path):
    """A 12-lead record was forecast from II and V1, whatever leads one wanted: --leads names them, exactly or as
    order_leads matches a lead ('lead ii' is II). The context is the named channels' (as a record of those two
    alone reads), and the plot and .json name them; a name that is no channel lists the record's, before the
    forecast; one lead twice is refused before the record is read."""
    path = twelve_leads(tmp_path / "db", "r", ())
    x = wfdb.rdrecord(str(path)).p_signal
    two = write_signal(tmp_path / "two", "r", x[:, [TWELVE.index("II"), TWELVE.index("V5")]], leads=("II", "V5"))
    base = ["--checkpoint", "seasonal", "--start", "10", "--horizon", "1", "--samples", "1", "--device", "cpu"]
    out = forecast.main([*base, "--record", str(path), "--leads", "lead ii", "V5", "--out", str(tmp_path / "out")])
    alone = forecast.main([*base, "--record", str(two), "--out", str(tmp_path / "alone")])
    assert alone["leads"] == out["leads"] == ["II", "V5"] and np.array_equal(out["context"], alone["context"])
    assert json.loads((tmp_path / "out" / "r_10s.json").read_text())["leads"] == ["II", "V5"]
    default = forecast.main([*base, "--record", str(path), "--out", str(tmp_path / "default")])
    assert default["leads"] == ["II", "V1"] and not np.array_equal(default["context"], out["context"])
    with pytest.raises(UserError, match=re.escape(f"{path}: no channel is V7 (--leads' lead 2); its channels are "
                                                  f"{', '.join(TWELVE)}")):
        forecast.main([*base, "--record", str(path), "--leads", "II", "V7"])
    with pytest.raises(UserError, match="--leads II ii names lead II twice"):
        forecast.main([*base, "--record", str(tmp_path / "none"), "--leads", "II", "ii"])
    with pytest.raises(UserError, match="--leads II ii names lead II twice"):     # before the model loads
        forecast.main([*base, "--checkpoint", str(tmp_path / "none.pt"), "--record", str(path), "--leads", "II", "ii"])


class TrainedOnV5(forecast.ForecasterBase):
    """A forecaster whose data settings (as a checkpoint's stored config gives them) chose lead 2 V5."""

    fs = 128
    cfg = SimpleNamespace(data=DataConfig(second_lead="V5"))

    def predict(self, context, horizon, num_samples=100, seed=0):
        return make_baseline("seasonal", self.fs).predict(context, horizon, num_samples, seed)


def test_a_forecaster_trained_on_a_second_lead_forecasts_it_without_leads(tmp_path):
    """A model prepared and trained with data.second_lead V5 reads a record's V5 as lead 2 with no --leads, as its
    training data were read, not V1."""
    path = twelve_leads(tmp_path / "db", "r", ())
    res = forecast.forecast_record(TrainedOnV5(), str(path), 10.0, 1.0, 1, 0)
    named = forecast.forecast_record(make_baseline("seasonal", 128), str(path), 10.0, 1.0, 1, 0, leads=("II", "V5"))
    assert res["leads"] == ["II", "V5"] and np.array_equal(res["context"], named["context"])


def test_forecast_py_says_when_the_context_shows_no_rhythm(tmp_path, capsys):
    """At 30 bpm a 3 s context may hold one R peak: the drafts then repeat its last 0.25 s, a flat forecast whose
    paths read 0 bpm, and nothing said why. A context of several beats gets no note."""
    x, beats = synthetic_ecg(30.0, 360.0, seed=2, hr_bpm=30.0)
    write_signal(tmp_path / "db", "slow", x)
    write_record(tmp_path / "db", "r", seconds=12)
    start = next(s for s in range(4, 29) if np.sum((beats > (s - 2.8) * 360) & (beats < (s - 0.2) * 360)) == 1)
    for name, at, said in (("slow", start, True), ("r", 5, False)):
        out = forecast.main(["--checkpoint", "seasonal", "--record", str(tmp_path / "db" / name), "--start", str(at),
                             "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert ("note: the context shows 1 R peak in its 3 s (a heart rate under 40 bpm" in err) is said, err
        if said:
            assert "repeat the context's last 0.25 s" in err and np.ptp(out["samples"][..., 0]) < 0.2


def test_forecast_from_a_record_with_gaps(tmp_path):
    """A context touching a gap of invalid samples is refused with the nearest clean starts; a context
    clear of the gap forecasts, with the gap left blank in the truth."""
    x, _ = synthetic_ecg(30.0, 360.0, seed=1)
    x[3600:4320, 1] = np.nan                                    # lead 2 lost from 10 s to 12 s
    write_signal(tmp_path, "g", x)
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(tmp_path / "g"), "--start", "13",
                              "--samples", "2", "--out", str(tmp_path / "out")])
    assert code == 2 and "g: the context 10-13 s touches a gap" in err, err
    assert "nearest clean --start: 9 s or 16 s" in err
    assert not (tmp_path / "out").exists()          # a refused forecast leaves no --out folder, as none without it
    r = run_script(forecast.main, "forecast.py", ["--checkpoint", str(PRETRAINED), "--record", str(tmp_path / "g"),
                                                  "--start", "8", "--samples", "2", "--out", str(tmp_path / "out")])
    assert r.returncode == 0, r.stderr
    assert "2 leads (MLII, V1) at 128 Hz (the record's 360 Hz resampled) in" in r.stdout     # the leads read
    samples = np.load(tmp_path / "out" / "g_8s_samples.npy")
    assert samples.shape == (2, 384, 2) and np.isfinite(samples).all()
    saved = json.loads((tmp_path / "out" / "g_8s.json").read_text())
    assert saved["truth_gap_samples"] == 256    # 9 s to 11 s: the gap and a second before it
    assert (saved["fs"], saved["fs_in"]) == (128, 360)             # the record's own rate, and what it was resampled to


def test_forecast_reads_only_its_context_and_horizon(tmp_path, monkeypatch):
    """A forecast near the end of a long record asks wfdb for its context and horizon and a margin, not the whole
    record (6 s near the end of a 24 h Holter record took 9 s and 2.2 GB), and forecasts from the samples the
    whole record gives there; a gap's nearest clean starts are said in the record's seconds."""
    import wfdb

    from prepare_mitbih import read_record
    x, _ = synthetic_ecg(400.0, 250.0, seed=3)
    x[350 * 250:352 * 250, 1] = np.nan
    write_signal(tmp_path, "long", x, fs=250.0)
    asked, read = [], wfdb.rdrecord
    monkeypatch.setattr(wfdb, "rdrecord", lambda *a, **k: asked.append(k) or read(*a, **k))
    res = forecast.forecast_record(make_baseline("zero", 128), str(tmp_path / "long"), 390.0, 3.0, 1, 0)
    assert len(asked) == 1 and 350 * 250 <= asked[0].get("sampfrom", 0) and asked[0].get("sampto") is None
    monkeypatch.setattr(wfdb, "rdrecord", read)
    whole = read_record(tmp_path / "long", forecast.load_config().data, gaps=True, annotator=None).signal
    np.testing.assert_allclose(res["context"], whole[390 * 128 - 384:390 * 128], atol=1e-5)
    np.testing.assert_allclose(res["truth"], whole[390 * 128:393 * 128], atol=1e-5)
    assert res["start_sample"] == 390 * 128                 # the record's sample, which the plot's time axis takes
    with pytest.raises(UserError, match="nearest clean --start: 349 s or 356 s"):
        forecast.forecast_record(make_baseline("zero", 128), str(tmp_path / "long"), 353.0, 3.0, 1, 0)


def test_a_forecast_may_start_at_the_records_end_and_not_after(tmp_path):
    """--start at the record's last sample's end forecasts past the record (a monitor's last seconds: no truth to
    score it by); a start past the end is refused."""
    write_signal(tmp_path, "r", synthetic_ecg(20.0, 360.0, seed=0)[0])
    res = forecast.forecast_record(make_baseline("seasonal", 128), str(tmp_path / "r"), 20.0, 3.0, 1, 0)
    assert res["start_sample"] == 20 * 128 and res["truth"].shape == (0, 2) and res["samples"].shape == (1, 384, 2)
    with pytest.raises(UserError, match=r"--start 20.01 s must lie between 3.0 s \(one context\) and the record's end "
                                        r"\(20.0 s\)"):
        forecast.forecast_record(make_baseline("seasonal", 128), str(tmp_path / "r"), 20.01, 3.0, 1, 0)


class At250(forecast.ForecasterBase):
    """One's own forecaster at 250 Hz with no data settings of its own, as a notebook would write it."""

    fs = 250

    def predict(self, context, horizon, num_samples=100, seed=0):
        return make_baseline("seasonal", self.fs).predict(context, horizon, num_samples, seed)


@pytest.mark.parametrize("fc, rate", [(make_baseline("template_ensemble", 360), 360), (At250(), 250)],
                         ids=["baseline", "own"])
def test_forecast_record_refuses_a_forecaster_at_another_rate_than_the_record_is_read_at(tmp_path, fc, rate):
    """forecast.py checks its forecaster's rate (own_forecaster.check_rate); forecast_record called from Python did not:
    make_baseline("template_ensemble", 360) forecast record 100 read at 128 Hz with its rhythm and noise timed at
    360 Hz (up to 1.3 mV from the 128 Hz baseline's), without a word."""
    write_signal(tmp_path, "r", synthetic_ecg(20.0, 250.0, seed=0)[0], fs=250.0)
    with pytest.raises(UserError, match=rf"forecaster '\w+': it forecasts at {rate} Hz but the data is at 128 Hz"):
        forecast.forecast_record(fc, str(tmp_path / "r"), 10.0, 3.0, 2, 0)


def test_a_clean_stretch_exactly_one_context_long_offers_its_start():
    """Between gaps at 100-110 and 494-500 (samples) lies exactly one context of 384: its end, 494 (3.859 s at
    128 Hz), is a clean --start, the nearest after 300."""
    signal = np.ones((1000, 2), np.float32)
    signal[100:110] = signal[494:500] = np.nan
    assert forecast.clean_starts(signal, 300, 384, 128) == "the nearest clean --start: 3.859 s"


@pytest.mark.parametrize("content", [b"hello\n", b"\x80\x02}q\x00."])
def test_foreign_files_are_not_checkpoints(tmp_path, content):
    """Said to be unreadable, by name (any error naming x.pt passed, 'checkpoint not found' too)."""
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"checkpoint {path} is unreadable or cut short (")):
        load_checkpoint(path)


def test_a_forecaster_file_without_its_class_is_not_called_a_cut_checkpoint(tmp_path):
    """forecast.py --checkpoint mine.py (FILE.py:NAME without :NAME) was 'unreadable or cut short (UnpicklingError);
    use another checkpoint': the file is Python, and the flag takes a class in it as mine.py:NAME."""
    own = tmp_path / "mine.py"
    own.write_text("class Mine:\n    pass\n")
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", str(own), "--record", str(record), "--start", "5"])
    assert code == 2 and err == (f"error: checkpoint {own} is Python source, not a checkpoint: evaluate.py --model and "
                                 f"forecast.py --checkpoint take a forecaster class in it as {own}:NAME\n"), err


def test_a_config_given_as_a_checkpoint_is_said_to_be_one(tmp_path):
    """transformer_train.py --vqvae my_vqvae.json (the config, not the run's best.pt) was said to be a checkpoint
    'unreadable or cut short'."""
    path = tmp_path / "my_vqvae.json"
    path.write_text('{"model": {"codebook_size": 64}}')
    with pytest.raises(UserError, match=re.escape(f"checkpoint {path} is JSON (a config?), not a checkpoint: pass a "
                                                  ".pt file a run wrote (e.g. its best.pt); configs go to --config")):
        load_checkpoint(path)


def test_a_checkpoint_that_unpickles_arbitrary_objects_is_refused(tmp_path):
    """Checkpoints load with weights_only=True: tensors, numbers, strings and containers only. A file that would
    build any other object (as a crafted one runs code while it unpickles) is refused as unreadable, even with a
    checkpoint's keys; loaded in full, it built the object and was taken for a checkpoint."""
    import argparse

    path = tmp_path / "x.pt"
    torch.save({"kind": "toy", "model": {}, "extra": argparse.Namespace(run="code")}, path)
    with pytest.raises(UserError, match=re.escape(f"checkpoint {path} is unreadable or cut short (UnpicklingError)")):
        load_checkpoint(path)


@pytest.mark.parametrize("saved", [{"weight": torch.zeros(2)}, {"model": {}}, [torch.zeros(2)]],
                         ids=["state_dict", "no_kind", "list"])
def test_a_torch_file_of_another_program_is_not_a_checkpoint(tmp_path, saved):
    """A readable torch file that no script here wrote (a bare state_dict): one line naming it, not a KeyError."""
    path = tmp_path / "x.pt"
    torch.save(saved, path)
    with pytest.raises(UserError, match=f"^{re.escape(str(path))} is not an ecg-forecast checkpoint$"):
        load_checkpoint(path)


def test_a_run_folder_given_for_a_checkpoint_is_called_a_folder(tmp_path):
    """A run's checkpoint folder passed to --checkpoint, --model, --resume or --vqvae was 'not found' (forecast.py,
    every trainer) or 'no such checkpoint file' (evaluate.py), though it is there."""
    run = tmp_path / "transformer-1"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"transformer-1 is a folder \(best.pt\): pass one checkpoint file"):
        load_checkpoint(run)
    with pytest.raises(UserError, match="is a folder"):
        evaluate.make_forecaster(str(run), 128)
    with pytest.raises(UserError, match="is a folder"):
        forecast.load_forecaster(str(run), "cpu")
    (run / "best.pt").unlink()
    (run / "forecaster.pt").write_bytes(b"")         # as pretrained/ holds: vqvae_eval.py --checkpoint pretrained
    with pytest.raises(UserError, match=r"\(forecaster.pt\): pass one checkpoint file, e.g. \S+forecaster.pt$"):
        load_checkpoint(run)


def test_a_run_folder_given_to_resume_is_told_its_last_pt(tmp_path):
    """--resume of a run's folder named best.pt as the file to pass, which resumes the best epoch, not the last."""
    import training
    run = tmp_path / "vqvae-1"
    run.mkdir()
    for name in ("best.pt", "last.pt"):
        (run / name).write_bytes(b"")
    with pytest.raises(UserError, match=rf"vqvae-1 is a folder \(best.pt, last.pt\): pass one checkpoint file, e.g. "
                                        rf"{re.escape(str(run / 'last.pt'))}$"):
        training.load_resume(run, "vqvae")


def test_a_run_folder_its_run_left_without_checkpoints_is_said_to_be_one(tmp_path):
    """A run killed (kill -9) in its first epoch leaves its folders, run.json and no checkpoint: --resume of the folder
    was told to pass FOLDER/last.pt, a file that is not there, and then 'checkpoint not found'; evaluate.py and
    forecast.py said 'no such checkpoint file'. Each now says what the folder is."""
    import training
    run = tmp_path / "transformer-20260101-120000"
    run.mkdir()
    (run / "run.json").write_text("{}")
    said = (f"{re.escape(str(run))} is a training run's folder without checkpoints: its run is still in its first "
            f"epoch, or was killed before that epoch ended and saved nothing to load or resume")
    with pytest.raises(UserError, match=rf"^checkpoint {said}; pass a checkpoint file, e.g. another run's last.pt$"):
        training.load_resume(run, "transformer")
    with pytest.raises(UserError, match=rf"^checkpoint not found: \S+last.pt \({said}\)$"):
        training.load_resume(run / "last.pt", "transformer")
    with pytest.raises(UserError, match=rf"^--model \S+best.pt: no such checkpoint file \({said}\)$"):
        evaluate.make_forecaster(str(run / "best.pt"), 128)
    with pytest.raises(UserError, match=rf"^--checkpoint \S+best.pt: no such checkpoint file \({said}\)$"):
        forecast.load_forecaster(str(run / "best.pt"), "cpu")
    other = tmp_path / "my models"          # a folder of no run's, empty: no file inside it is suggested
    other.mkdir()
    with pytest.raises(UserError, match=r"^checkpoint .+my models is a folder holding no checkpoint; pass a "
                                        r"checkpoint file, e.g. another run's best.pt$"):
        load_checkpoint(other)
    with pytest.raises(UserError, match=r"^checkpoint not found: .+my models/best.pt$"):
        load_checkpoint(other / "best.pt")


def test_a_folder_named_as_a_run_is_said_to_be_a_killed_runs_only_when_it_holds_what_one_leaves(tmp_path):
    """Any <name>-<date>-<time> folder without a .pt in it was said to be a training run killed in its first epoch: a
    finished run's results folder (checkpoints are kept apart), an evaluation's or a forecast's results, a folder of
    one's own holding its checkpoints in subfolders."""
    import training
    results = tmp_path / "transformer-20260101-120000"       # a finished run's, its checkpoints in checkpoints/
    results.mkdir()
    (results / "run.json").write_text("{}")
    (results / "metrics.csv").write_text("epoch\n1\n")
    said = ("is a training run's results folder, which holds no checkpoint: its run saved them in the checkpoints "
            "folder's transformer-20260101-120000/")
    with pytest.raises(UserError, match=rf"^--model \S+best.pt: no such checkpoint file \(\S+ {said}\)$"):
        evaluate.make_forecaster(str(results / "best.pt"), 128)
    with pytest.raises(UserError, match=rf"^checkpoint \S+ {said}; pass a checkpoint file"):
        training.load_resume(results, "transformer")
    own = tmp_path / "mine-20260101-120000"
    (own / "sub").mkdir(parents=True)
    (own / "sub" / "best.pt").write_bytes(b"")
    evaluated = tmp_path / "evaluate-20260101-120000"
    evaluated.mkdir()
    (evaluated / "metrics.json").write_text("{}")
    for folder in (own, evaluated):
        with pytest.raises(UserError, match=rf"^checkpoint not found: {re.escape(str(folder / 'best.pt'))}$"):
            load_checkpoint(folder / "best.pt")
        with pytest.raises(UserError, match=r"is a folder holding no checkpoint; pass"):
            load_checkpoint(folder)
    killed = tmp_path / "vqvae-20260101-120000"                 # a save's temporary file, killed while writing it
    killed.mkdir()
    (killed / ".last.pt.x1y2.tmp").write_bytes(b"")
    with pytest.raises(UserError, match=r"is a training run's folder without checkpoints: its run is still"):
        load_checkpoint(killed / "last.pt")


def test_a_run_folder_is_told_by_its_whole_name_a_second_runs_suffix_too(tmp_path):
    """new_run_dir names a run started in the same second as another <name>-<date>-<time>-<n>; a name that only
    begins as a run's (a copy's) is no run folder."""
    for name, said in (("vqvae-20260101-120000-2", True), ("vqvae-20260101-120000.old", False),
                       ("vqvae-20260101-120000-2x", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text("{}")
        assert paths.unsaved_run(tmp_path / name).startswith("a training run's folder") == said, name


@pytest.mark.parametrize("cut, said", [
    (("vqvae",), "is a 'transformer' checkpoint without vqvae:"), (("meta",), "is a 'transformer' checkpoint without meta:"),
    (("vqvae", "config"), ": its VQ-VAE holds no config:"), (("vqvae", "model"), ": its VQ-VAE holds no model:")])
def test_a_forecaster_checkpoint_missing_a_part_is_named(tmp_path, cut, said):
    """Without its meta (the records it saw) or its VQ-VAE's config, forecast.py and pretrained.py stopped in a
    KeyError traceback, not an error naming the file and the key."""
    ckpt = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    holder = ckpt if len(cut) == 1 else ckpt[cut[0]]
    del holder[cut[-1]]
    torch.save(ckpt, tmp_path / "cut.pt")
    with pytest.raises(UserError, match=f"cut.pt{said}" if said.startswith(":") else f"cut.pt {said}"):
        Forecaster.from_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize("model, edit, said", [
    ("transformer", ("config", "layers", 3), r"CodeGPT its config builds \(blocks\.3\.\S+ unexpected; "),
    ("latent_sde", ("config", "hidden_size", 64),
     r"LatentSDE its config builds \(prior\.0\.weight is \[128, 32\], the model's \[64, 32\]; "),
    ("transformer", ("vqvae", "channels", 32),
     r"VQVAE its config builds \(\S+ is \[64, 2, 7\], the model's \[32, 2, 7\]; "),
])
def test_weights_that_do_not_fit_their_config_are_named(tmp_path, model, edit, said):
    """Weights of another layout than the model the stored config builds (a checkpoint of another version of the
    code, or an edited one) were torch's RuntimeError traceback listing every tensor."""
    ckpt = torch.load(paths.SHIPPED[model], map_location="cpu", weights_only=True)
    where, key, value = edit
    (ckpt[where] if where == "config" else ckpt[where]["config"])["model"][key] = value
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(UserError, match=f"^{tmp_path / 'other.pt'}: its weights do not fit the {said}"):
        Forecaster.from_checkpoint(tmp_path / "other.pt")


def test_devices_are_checked_before_work():
    assert paths.check_device(None) is None and paths.check_device("cpu") == "cpu"
    for bad in ("bogus", "cuda:99", "meta"):
        with pytest.raises(UserError, match=bad):
            paths.check_device(bad)
        with pytest.raises(UserError, match=bad):       # every training script's runtime, GPU or not
            setup_runtime(bad)
        with pytest.raises(UserError, match=f"device '?{bad}"):    # and the Python API
            Forecaster.from_checkpoint(PRETRAINED, bad)
    shipped = Forecaster.from_pretrained(device="cpu")
    for build in (lambda d: Forecaster(shipped.vq, shipped.gpt, shipped.cfg, shipped.sample, d),
                  lambda d: LatentSDEForecaster(shipped.vq, None, shipped.cfg, None, d)):
        with pytest.raises(UserError, match="device cuda:99"):     # a model built directly, too
            build("cuda:99")


def test_a_gpu_index_beyond_the_machines_gpus_is_refused(monkeypatch):
    """On a machine with one GPU, --device cuda:1 is one clear error before any model loads; cuda:0 and cuda pass."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert paths.check_device("cuda:0") == "cuda:0" and paths.check_device("cuda") == "cuda"
    with pytest.raises(UserError, match="cuda:1: this machine has 1 GPU"):
        paths.check_device("cuda:1")


def test_failed_evaluation_leaves_no_run_folder(tmp_path, monkeypatch):
    db = tmp_path / "db"
    write_record(db, "r", seconds=12, seed=0)

    def broken(*args, **kwargs):
        raise RuntimeError("the forecaster broke")
    monkeypatch.setattr(evaluate, "evaluate", broken)
    results = tmp_path / "results"
    with pytest.raises(RuntimeError, match="broke"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db), "--results", str(results)])
    assert not results.exists() or not any(results.iterdir())
    with pytest.raises(UserError, match="--seed"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db), "--seed", "-1", "--results", str(results)])


def test_evaluate_hint_names_its_own_flag(tmp_path):
    with pytest.raises(UserError, match="--wfdb-dir"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(tmp_path), "--results", str(tmp_path / "r")])


def test_shipped_model_scored_on_other_windows_is_warned(tmp_path):
    cfg = tmp_path / "one_second.json"
    cfg.write_text('{"data": {"input_signal_duration": 1.0}}')
    assert "input_signal_duration" in evaluate.preparation_mismatch(
        Forecaster.from_checkpoint(PRETRAINED, "cpu"), evaluate.load_config(str(cfg)))


def test_results_are_written_whole(tmp_path, monkeypatch):
    """A write that fails part way (a full disk) keeps the earlier file whole and leaves no part of its own."""
    target = tmp_path / "a.npy"
    paths.atomic_save_npy(np.arange(5), target)
    assert np.array_equal(np.load(target), np.arange(5)) and [p.name for p in tmp_path.iterdir()] == ["a.npy"]
    before = target.read_bytes()

    def disk_full(f, array):
        f.write(b"half an array")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(UserError, match=f"cannot write {target}: No space left on device"):
        paths.atomic_save_npy(np.arange(7), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.npy"]



def test_torchrun_with_more_processes_than_gpus_is_refused(monkeypatch):
    """Checked on every rank before the process group forms, so rank 0 reports it (here: 4 ranks, 3 GPUs; 2 ranks on
    a node's only GPU). One visible card per process, set by CUDA_VISIBLE_DEVICES, is a scheduler's way of giving
    each its own: rank 1 then runs on its cuda:0."""
    import torch.distributed as dist
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    for key, value in (("WORLD_SIZE", "4"), ("RANK", "0"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "4")):
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=r"4 processes per node but only 3 GPU\(s\)"):
        setup_runtime(None)
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(key, value)
    # a node's only GPU (no CUDA_VISIBLE_DEVICES): both ranks would land on it, and NCCL refuses that
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(UserError, match=r"2 processes per node but only 1 GPU\(s\)"):
        setup_runtime(None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")     # the scheduler gave this rank a card of its own
    rt = setup_runtime(None)
    assert rt.device == torch.device("cuda", 0) == chosen[0] and rt.rank == 1


def test_a_scheduler_launch_without_local_world_size_takes_its_local_rank_card(monkeypatch):
    """srun sets RANK, WORLD_SIZE and LOCAL_RANK (a job script's exports), not torchrun's LOCAL_WORLD_SIZE: the
    processes per node were taken to be the world's, so 2 nodes of 8 GPUs (16 ranks) were refused as '16 processes per
    node but only 8 GPU(s)'. Without it, a rank is refused only when its own local rank has no card."""
    import torch.distributed as dist
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    for key, value in (("WORLD_SIZE", "16"), ("RANK", "15"), ("LOCAL_RANK", "7")):
        monkeypatch.setenv(key, value)
    rt = setup_runtime(None)
    assert rt.device == torch.device("cuda", 7) and (rt.rank, rt.world) == (15, 16)
    monkeypatch.setenv("LOCAL_RANK", "8")       # a ninth process on a node of 8 cards
    with pytest.raises(UserError, match=r"local rank 8 has no GPU of its own: its node shows 8"):
        setup_runtime(None)


def test_an_srun_launch_without_local_rank_takes_its_slurm_local_id_card(monkeypatch):
    """A job script exporting RANK and WORLD_SIZE for srun but not LOCAL_RANK: srun's SLURM_LOCALID says which card is
    the rank's (it took cuda:0 on every rank); torchrun's LOCAL_RANK, when set, comes first."""
    import torch.distributed as dist
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for key, value in (("WORLD_SIZE", "8"), ("RANK", "6"), ("SLURM_LOCALID", "2")):
        monkeypatch.setenv(key, value)
    assert setup_runtime(None).device == torch.device("cuda", 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert setup_runtime(None).device == torch.device("cuda", 3)


def test_a_card_named_under_torchrun_is_said_to_be_overruled(monkeypatch, capsys):
    """Under torchrun each rank takes its local rank's card: --device cuda:1 would silently mean nothing, so rank 0
    says so (once: the other ranks say nothing)."""
    import torch.distributed as dist
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for rank in ("0", "1"):
        for key, value in (("WORLD_SIZE", "2"), ("RANK", rank), ("LOCAL_RANK", rank), ("LOCAL_WORLD_SIZE", "2")):
            monkeypatch.setenv(key, value)
        assert setup_runtime("cuda:1").device == torch.device("cuda", int(rank))
        said = capsys.readouterr().err
        assert ("--device cuda:1: under torchrun each process takes the card of its local rank (rank 0: cuda:0)" in said
                ) == (rank == "0"), said
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    setup_runtime("cuda")                               # no card named: nothing to say
    assert "under torchrun" not in capsys.readouterr().err


def test_a_cpu_named_with_an_index_under_torchrun_is_the_cpu(monkeypatch):
    """--device cpu:0 is the CPU (paths.check_device takes it) under torchrun too: taken for 'not cpu', it ran every
    rank on its GPU over NCCL."""
    import torch.distributed as dist
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(key, value)
    for device in ("cpu", "cpu:0"):
        assert setup_runtime(device).device.type == "cpu"
    assert setup_runtime(None).device == setup_runtime("cuda").device == torch.device("cuda", 1)


def test_a_context_shorter_than_in_training_is_warned(shipped):
    with pytest.warns(UserWarning, match="128 samples .* shorter than the 384"):
        shipped.predict(synthetic_ecg(1, 128, seed=0)[0], 8, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shipped.predict(synthetic_ecg(3, 128, seed=0)[0], 8, 2)


def test_a_context_shorter_than_one_code_is_one_error_not_a_warning_first(shipped):
    """A context the models cannot forecast from at all (less than one code or latent step) was first warned about as
    shorter than in training, and then refused: two messages for one fault, the warning with the wrong advice."""
    for f, step in ((shipped, "code"), (Forecaster.from_pretrained("cpu", model="latent_sde"), "latent step")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=f"context of 7 samples is shorter than one {step} .8 samples.$"):
                f.predict(synthetic_ecg(3, 128, seed=0)[0][:7], 8, 2)


def test_a_bfloat16_context_is_forecast_as_its_values(shipped):
    """numpy has no bfloat16: such a tensor stopped in torch's .numpy() with "Got unsupported ScalarType BFloat16"."""
    x = torch.from_numpy(synthetic_ecg(3, 128, seed=0)[0]).to(torch.bfloat16)
    for f in (shipped, make_baseline("template_ensemble", 128)):
        np.testing.assert_array_equal(f.predict(x, 8, 2, seed=1), f.predict(x.float(), 8, 2, seed=1), err_msg=f.name)


def test_a_batch_given_as_a_list_of_tensors_is_forecast_as_their_stack(shipped):
    """A batch as [t1, t2] of tensors that require grad (a network's outputs) stopped in torch's "Can't call numpy()
    on Tensor that requires grad", and one of bfloat16 tensors in "Got unsupported ScalarType BFloat16"."""
    rows = [torch.from_numpy(synthetic_ecg(3, 128, seed=s)[0]) for s in (0, 1)]
    for f in (shipped, make_baseline("template_ensemble", 128), make_baseline("seasonal", 128)):
        want = f.predict(torch.stack(rows), 8, 2, seed=1)
        np.testing.assert_array_equal(f.predict([r.clone().requires_grad_(True) for r in rows], 8, 2, seed=1), want,
                                      err_msg=f.name)
        half = [r.to(torch.bfloat16) for r in rows]
        np.testing.assert_array_equal(f.predict(tuple(half), 8, 2, seed=1), f.predict(torch.stack(half), 8, 2, seed=1),
                                      err_msg=f.name)


def test_a_batch_mixing_arrays_and_tensors_is_forecast_as_their_stack():
    """[array, tensor that requires grad]: each row as its values, as a batch of either kind alone is."""
    rows = [synthetic_ecg(3, 128, seed=s)[0] for s in (0, 1)]
    f = make_baseline("seasonal", 128)
    np.testing.assert_array_equal(f.predict([rows[0], torch.from_numpy(rows[1]).requires_grad_(True)], 8, 2, seed=1),
                                  f.predict(np.stack(rows), 8, 2, seed=1))


def test_a_forecast_under_the_callers_autocast_is_the_float32_one(shipped):
    """A notebook's torch.autocast left on around predict ran the models in bfloat16: the same seed drew other paths
    (the Transformer's up to 0.12 mV off record 100's), unlike forecast.py's and evaluate.py's, with no word."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    for f in (shipped, Forecaster.from_pretrained("cpu", model="latent_sde")):
        plain = f.predict(x, 64, 3, seed=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            np.testing.assert_array_equal(f.predict(x, 64, 3, seed=1), plain, err_msg=f.name)
            assert torch.is_autocast_enabled("cpu")


class OnItsOwnDevice(forecast.ForecasterBase):
    device = "my accelerator"           # one's own forecaster's device, no torch device

    @forecast.one_by_one
    def predict(self, x, horizon, num_samples=100, seed=0):
        return np.zeros((1, num_samples, horizon, 2), np.float32)


def test_one_by_one_takes_a_forecaster_whose_device_is_no_torch_device():
    """one_by_one turns a caller's autocast off on the forecaster's device: one of one's own naming a device torch
    does not know is forecast, not stopped in torch.device's 'Expected one of cpu, cuda, ...'."""
    assert OnItsOwnDevice().predict(synthetic_ecg(3, 128, seed=0)[0], 8, 2).shape == (1, 2, 8, 2)


def test_a_forecaster_put_in_training_forecasts_in_eval_mode_and_stays_in_training():
    """fc.gpt.train() (fine-tuning it) left the Transformer's dropout on in predict: other paths at every call of the
    same seed. predict forecasts in eval mode and gives each submodule its own mode back."""
    fc = Forecaster.from_checkpoint(PRETRAINED, "cpu")
    x = synthetic_ecg(3, 128, seed=0)[0]
    plain = fc.predict(x, 64, 3, seed=1)
    fc.gpt.train()
    frozen = next(m for m in fc.gpt.modules() if isinstance(m, torch.nn.Dropout))
    frozen.eval()
    for _ in range(2):
        np.testing.assert_array_equal(fc.predict(x, 64, 3, seed=1), plain)
    assert [m is frozen for m in fc.gpt.modules() if not m.training] == [True] and not fc.vq.training


class AutocastSeen(forecast.ForecasterBase):
    """One's own forecaster on the CPU that says whether it ran under autocast."""
    device, seen = torch.device("cpu"), []

    @forecast.one_by_one
    def predict(self, x, horizon, num_samples=100, seed=0):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return np.zeros((1, num_samples, horizon, 2), np.float32)


def test_a_forecast_runs_without_autocast_with_or_without_the_callers():
    """Comparing forecasts under a caller's autocast with those outside it held with autocast turned on for both."""
    fc, x = AutocastSeen(), synthetic_ecg(3, 128, seed=0)[0]
    fc.predict(x, 8, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fc.predict(x, 8, 2)
    assert fc.seen == [False, False]


class NoisyModule(torch.nn.Module, forecast.ForecasterBase):
    """One's own forecaster that is a module itself, with dropout, forecast through one_by_one."""
    fs = 128

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    @forecast.one_by_one
    def predict(self, x, horizon, num_samples=100, seed=0):
        return self.drop(torch.ones(1, num_samples, horizon, 2)).numpy()


def test_a_forecaster_that_is_a_module_forecasts_in_eval_mode_too():
    """in_eval looked among the forecaster's attributes only: a module's parts are in its _modules, so one of one's
    own that is a module, put in training, forecast with its dropout on."""
    fc = NoisyModule().train()
    out = fc.predict(synthetic_ecg(3, 128, seed=0)[0], 16, 4)
    np.testing.assert_array_equal(out, np.ones_like(out))
    assert fc.training and fc.drop.training


class NoisyEnsemble(forecast.ForecasterBase):
    """One's own ensemble forecaster keeping its members, with dropout, in a list attribute."""
    fs = 128

    def __init__(self):
        self.members = [torch.nn.Dropout(0.5), torch.nn.Dropout(0.5)]

    @forecast.one_by_one
    def predict(self, x, horizon, num_samples=100, seed=0):
        return sum(m(torch.ones(1, num_samples, horizon, 2)) for m in self.members).numpy() / 2


def test_an_ensemble_keeping_its_members_in_a_list_forecasts_in_eval_mode():
    """in_eval looked at the forecaster's attributes themselves: modules kept in a list (an ensemble's members), put
    in training, forecast with their dropout on."""
    fc = NoisyEnsemble()
    for m in fc.members:
        m.train()
    out = fc.predict(synthetic_ecg(3, 128, seed=0)[0], 16, 4)
    np.testing.assert_array_equal(out, np.ones_like(out))
    assert all(m.training for m in fc.members)


class FailingModule(NoisyModule):
    @forecast.one_by_one
    def predict(self, x, horizon, num_samples=100, seed=0):
        raise RuntimeError("out of memory")


def test_a_forecast_that_fails_gives_each_module_its_mode_back():
    """A forecast stopped by an error (out of memory) left a module put in training in eval mode."""
    fc = FailingModule().train()
    with pytest.raises(RuntimeError, match="out of memory"):
        fc.predict(synthetic_ecg(3, 128, seed=0)[0], 16, 4)
    assert fc.training and fc.drop.training


OWN = """
import numpy as np


class Level:
    def __init__(self, fs, checkpoint=None):
        self.fs, self.level = fs, float(open(checkpoint).read()) if checkpoint else 0.0

    def predict(self, context, horizon, num_samples=100, seed=0):
        return np.full((len(context), num_samples, horizon, 2), self.level, np.float32)


class One(Level):
    def predict(self, context, horizon, num_samples=100, seed=0):
        return super().predict(context, horizon, 1, seed)


def refuse(horizon):
    raise ValueError(f"cannot forecast {horizon} samples")


class Raises(Level):
    def predict(self, context, horizon, num_samples=100, seed=0):
        return refuse(horizon)


class Flat(Level):
    def predict(self, context, horizon, num_samples=100, seed=0):
        return super().predict(context, horizon, num_samples, seed)[0]


class Nan(Level):
    def predict(self, context, horizon, num_samples=100, seed=0):
        return super().predict(context, horizon, num_samples, seed) * np.nan
"""


def test_forecast_py_takes_a_forecaster_of_ones_own_as_evaluate_py_does(tmp_path):
    """--checkpoint FILE.py:NAME=CHECKPOINT forecasts a record with one's own model, plotted and saved alike, the
    .json naming its file's SHA-256; a checkpoint of one's own given as a file says how to load it."""
    import hashlib

    record = write_record(tmp_path, "r", seconds=12, seed=0)
    (tmp_path / "mine.py").write_text(OWN)
    (tmp_path / "level.txt").write_text("0.5")
    spec = f"{tmp_path / 'mine.py'}:Level={tmp_path / 'level.txt'}"
    code, err = run_forecast(["--checkpoint", spec, "--record", str(record), "--start", "5", "--samples", "3",
                              "--out", str(tmp_path / "out")])
    assert code == 0, err
    samples = np.load(tmp_path / "out" / "r_5s_samples.npy")
    assert samples.shape == (3, 384, 2) and np.all(samples == 0.5) and (tmp_path / "out" / "r_5s.png").is_file()
    said = json.loads((tmp_path / "out" / "r_5s.json").read_text())
    digest = hashlib.sha256((tmp_path / "mine.py").read_bytes()).hexdigest()[:16]
    assert said["checkpoint"] == spec and said["own_forecaster"].endswith(f"sha256 {digest}")
    assert said["checkpoint_sha256"] == hashlib.sha256(b"0.5").hexdigest()[:16]     # the weights it was handed
    one = f"{tmp_path / 'mine.py'}:One"         # deterministic: one path, whatever --samples asks
    r = run_script(forecast.main, "forecast.py", ["--checkpoint", one, "--record", str(record), "--start", "5",
                                                  "--samples", "3", "--out", str(tmp_path / "one")])
    assert r.returncode == 0 and ": 1 sample x 384 samples x 2 leads" in r.stdout, r.stdout + r.stderr
    code, err = run_forecast(["--checkpoint", f"{tmp_path / 'mine.py'}:Nope", "--record", str(record), "--start", "5"])
    assert code == 2 and err.startswith(f"error: --checkpoint {tmp_path / 'mine.py'}:Nope: ") and "no class" in err
    torch.save({"kind": "mine", "model": {}, "config": {}}, tmp_path / "mine.pt")
    code, err = run_forecast(["--checkpoint", str(tmp_path / "mine.pt"), "--record", str(record), "--start", "5"])
    assert code == 2 and "a forecaster of one's own is FILE.py:NAME=CHECKPOINT" in err, err


def test_forecast_plot_title_counts_the_paths_drawn(tmp_path, monkeypatch):
    """A deterministic forecaster draws one path whatever --samples asks: its plot was titled '3 sampled forecasts',
    then '1 sampled forecast' with its heart rate as 'paths 74 [74-74]' under a key of percentiles over paths; now
    '1 forecast path' and its one rate, and the title and the printed line agree."""
    titles = []
    monkeypatch.setattr(forecast, "plot_forecasts", lambda *a, **k: titles.append(a[5]) or a[4].write_bytes(b"png"))
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    (tmp_path / "mine.py").write_text(OWN)
    for name, want, key in (("One", "1 forecast path\n", False), ("Level", "3 sampled forecasts\n", True)):
        r = run_script(forecast.main, "forecast.py", ["--checkpoint", f"{tmp_path / 'mine.py'}:{name}", "--record",
                                                      str(record), "--start", "5", "--samples", "3",
                                                      "--out", str(tmp_path / name)])
        assert r.returncode == 0 and want in titles[-1], (r.stderr, titles)
        assert ("10th-90th percentile" in titles[-1]) == key and ("10th-90th percentile" in r.stdout) == key
        assert ("forecast " if not key else "paths ") in titles[-1].split("\n")[1], titles[-1]
        assert (" [" in titles[-1].split("\n")[1].split(";")[0]) == key, titles[-1]


def test_forecast_py_names_a_forecaster_of_ones_own_that_fails(tmp_path):
    """One's own predict raising is their bug: exit status 2, an error naming FILE.py:NAME and the exception, and
    the traceback of their frames alone (forecast.py's frames were all it showed before). A wrong shape or NaNs are
    refused by name as evaluate.py refuses them (a numpy traceback in the plot before, and a plot of NaNs)."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    mine = tmp_path / "mine.py"
    mine.write_text(OWN)
    errors = {}
    for name, said in (("Raises", f"error: --checkpoint {mine}:Raises: its predict raised ValueError: cannot forecast "
                                  f"384 samples\nTraceback"),
                       ("Flat", "error: Flat: predict returned shape (3, 384, 2), expected [1, S, 384, 2]\n"),
                       ("Nan", "error: Nan: predict returned NaN or inf values\n")):
        out = tmp_path / name
        code, errors[name] = run_forecast(["--checkpoint", f"{mine}:{name}", "--record", str(record), "--start", "5",
                                           "--samples", "3", "--out", str(out)])
        assert code == 2 and errors[name].startswith(said), errors[name]
        assert not out.exists()
    frames = [line.split(",")[0] for line in errors["Raises"].splitlines() if line.startswith("  File")]
    assert frames == [f'  File "{mine}"'] * 2            # its predict, then refuse: no frame of ours


def test_forecast_json_names_ones_own_code_as_it_ran(tmp_path, monkeypatch):
    """One's own file edited while the forecast runs: the .json names the code that ran, taken at the start as the
    commit and checkpoint are (it hashed the file at the end)."""
    import hashlib

    record, mine = write_record(tmp_path, "r", seconds=12, seed=0), tmp_path / "mine.py"
    mine.write_text(OWN)
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()[:16]
    forecast_record = forecast.forecast_record

    def then_edited(*args, **kwargs):
        out = forecast_record(*args, **kwargs)
        mine.write_text(OWN + "# edited\n")
        return out
    monkeypatch.setattr(forecast, "forecast_record", then_edited)
    code, err = run_forecast(["--checkpoint", f"{mine}:One", "--record", str(record), "--start", "5",
                              "--out", str(tmp_path / "out")])
    assert code == 0, err
    said = json.loads((tmp_path / "out" / "r_5s.json").read_text())["own_forecaster"]
    assert said == f"{mine}:One: {mine} sha256 {digest}"


def test_a_context_without_a_whole_beat_is_forecast_in_float32(shipped):
    """Two R peaks 2.3 s apart (26 bpm, near the slowest plausible rhythm) leave no beat whole in 3 s: the drafts are
    laid from the mean beat, which numpy averaged to float64, and the latent SDE returned its forecast in float64."""
    x = synthetic_ecg(3, 128, seed=0, hr_bpm=26)[0].astype(np.float32)
    (peaks,), (period,), _ = context_rhythm(x[None], 128)
    assert len(peaks) == 2 and len(whole_beats(x, peaks, int(period))) == 0
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        out = f.predict(x, 64, 2)
        assert out.dtype == np.float32 and np.isfinite(out).all(), (f.name, out.dtype)


def test_paths_of_just_2_to_the_63_bytes_are_refused_before_predict(tmp_path, monkeypatch):
    """2 paths of 2**59 samples (--horizon 2**52 s at 128 Hz) are 2**63 bytes of float64, one past what numpy
    allocates: said as not fitting, with the paths counted, before the forecaster is asked."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    fc = make_baseline("seasonal", 128)
    monkeypatch.setattr(fc, "predict", lambda *a, **k: pytest.fail("predict was asked"))
    said = f"--horizon {2.0 ** 52:g} s with --samples 2: 2 paths of {2 ** 59} samples do not fit in memory"
    with pytest.raises(UserError, match=f"^{re.escape(said)}$"):
        forecast.forecast_record(fc, str(record), 5.0, 2.0 ** 52, 2, 0)


@pytest.mark.parametrize("flag, seconds, said", [
    ("--start", float("nan"), "--start nan s is not a time"),
    ("--start", float("inf"), "--start inf s is not a time"),
    ("--horizon", float("nan"), "--horizon nan s must be at least one sample"),
    ("--horizon", float("inf"), "--horizon inf s must be at least one sample"),
])
def test_a_start_or_horizon_that_is_no_number_of_seconds_is_not_said_to_be_too_many_samples(tmp_path, flag, seconds,
                                                                                            said):
    """nan and inf are no time at all: said so, not as 'more samples than any record or memory holds' (1e308 s's)."""
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    times = {"--start": 5.0, "--horizon": 1.0, flag: seconds}
    with pytest.raises(UserError, match=f"^{re.escape(said)}"):
        forecast.forecast_record(make_baseline("seasonal", 128), str(record), times["--start"], times["--horizon"],
                                 1, 0)


def test_a_context_too_short_to_judge_is_not_called_flat(shipped):
    """A context of 1 to 7 samples was warned of as a flat lead ('lead off?'), which it is not: too short to tell.
    The models' refusal is the one message for it, and the baselines forecast it without a word; a lead off for a
    quarter second (forecast.FLAT_S) is still said to be one."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for n in (1, 2, 7):
        for f, step in ((shipped, "code"), (sde, "latent step")):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with pytest.raises(ValueError, match=f"context of {n} samples is shorter than one {step} .8 samples.$"):
                    f.predict(x[:n], 8, 2)
        for f in [make_baseline(b, 128) for b in BASELINES]:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert f.predict(x[:n], 8, 2).shape[2:] == (8, 2), f.name
    off = x[:32].copy()
    off[:, 1] = 0.0
    with pytest.warns(UserWarning, match=r"1 flat lead\(s\) .*row 0, lead 2: lead off\?"):
        make_baseline("seasonal", 128).predict(off, 8)
    quiet = np.linspace(0.0, 1e-3, 16)[:, None].repeat(2, axis=1)    # 1/8 s of a baseline swinging 1 uV: no volts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_baseline("seasonal", 128).predict(quiet, 8)
    with pytest.warns(UserWarning, match="convert it to mV"):
        make_baseline("seasonal", 128).predict(x[:64] / 1000, 8)    # half a second in volts


def test_a_short_window_on_an_r_peak_is_not_called_offset():
    """A few samples cut on an R peak average over 1 mV, band-passed as they are: they were warned of as not
    band-passed. The offset is judged over 1.5 s (forecast.OFFSET_S) or more, where a raw offset still shows."""
    x, beats = synthetic_ecg(3, 128, seed=0)
    x *= 1.5                                                    # R peaks of 1.8 mV
    peak = x[beats[1] - 2:beats[1] + 3]
    assert peak[:, 0].mean() > forecast.OFFSET_MV
    for f in [make_baseline(b, 128) for b in BASELINES]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            f.predict(peak, 8, 2)
    stretch = x[:round(forecast.OFFSET_S * 128)] - x.mean(axis=0)
    with pytest.warns(UserWarning, match=r"lead 2 \(row 0\) averages 5 mV: not band-passed"):
        make_baseline("seasonal", 128).predict(stretch + [0.0, 5.0], 8)


def test_a_forecast_larger_than_memory_is_refused_before_it_is_drawn(shipped, monkeypatch, tmp_path):
    """horizon = num_samples = 10**6 (8 TB of output) stopped in numpy's MemoryError, or torch's, named by none of
    the request's sizes: refused first, a ValueError naming them and the bytes, which the CLI says in one line."""
    x = synthetic_ecg(3, 128, seed=0)[0]
    sde = Forecaster.from_pretrained("cpu", model="latent_sde")
    for f in [shipped, sde] + [make_baseline(b, 128) for b in BASELINES]:
        paths_out = 1 if f.deterministic else 10 ** 6
        horizon = 10 ** 12 if f.deterministic else 10 ** 6          # a deterministic one returns one path of it
        with pytest.raises(ValueError, match=rf"^horizon={horizon}, num_samples=1000000 for B=2 context\(s\): the "
                           rf"forecast \[2, {paths_out}, {horizon}, 2\] float32 needs 16,000,000,000,000 bytes"):
            f.predict(np.stack([x, x]), horizon, 10 ** 6)
    monkeypatch.setattr(forecast, "memory_bytes", lambda: 2 * 100 * 384 * 2 * 4)    # two contexts' output fit
    for f in (shipped, make_baseline("template_ensemble", 128)):
        assert f.predict(np.stack([x, x]), 384, 100).shape == (2, 100, 384, 2)
        with pytest.raises(MemoryError, match=r"B=3 .* needs 921,600 bytes .*more than this machine's 0.000572 GiB"):
            f.predict(np.stack([x, x, x]), 384, 100)
    record = write_record(tmp_path, "r", seconds=12, seed=0)
    code, err = run_forecast(["--checkpoint", str(PRETRAINED), "--record", str(record), "--start", "5", "--horizon",
                              "10", "--out", str(tmp_path / "out")])
    assert code == 2 and err.startswith("error: --horizon 10 s with --samples 100: 100 paths of 1280 samples do not "
                                        "fit in memory (OutputTooLarge: horizon=1280, num_samples=100 for B=1") \
        and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_system_that_does_not_say_its_memory_sets_no_bound(monkeypatch):
    """Windows has no os.sysconf: every predict stopped in an AttributeError there; no bound is set instead."""
    monkeypatch.delattr(forecast.os, "sysconf")
    assert forecast.memory_bytes() == math.inf
    assert make_baseline("seasonal", 128).predict(synthetic_ecg(3, 128, seed=0)[0], 8, 2).shape == (1, 1, 8, 2)
