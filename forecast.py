"""Forecast the next seconds of a two-lead ECG.

    python3 forecast.py --record ../shared/data/mitdb/100 --start 60
                        [--checkpoint PATH|pretrained|pretrained_sde|BASELINE|FILE.py:NAME[=CKPT]]
                        [--horizon SECONDS] [--samples 100] [--seed 0] [--device D] [--out DIR]
                        [--leads LEAD1 LEAD2]

writes a PNG (context, truth, sample mean, 50%/80% bands, both leads), the samples as .npy [S, H, 2] in mV and a
JSON of what was asked. Without --checkpoint it uses the shipped Transformer (pretrained/forecaster.pt); the
shipped latent SDE is --checkpoint pretrained_sde (pretrained/latent_sde.pt), and a baseline is its name (seasonal,
template_ensemble, ...): the names evaluate.py --model takes.
From Python, main(["--record", ..., "--start", "60"]) takes the flags as a list and returns the forecast: context,
truth and samples [S, H, 2] in mV, fs, leads, heart_rate and the files written (files).

Every forecaster, trained model or baseline, implements `predict(context, horizon, num_samples, seed)`:
context [B, C, 2] in mV at `fs` (a numpy array or torch tensor), horizon in samples, returns a numpy float32
array [B, S, H, 2] in mV (S = 1 for deterministic forecasters).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

import paths
import running
from drafts import Rhythm, add_noise, context_rhythm, draft_waves, repeat_last
from hyper_params import Config, DataConfig, add_leads_flag, data_hash, load_config
from hyper_params_transformer import SampleConfig, stored_transformer_config
from metrics import FLAT_MV
from paths import PRETRAINED, ROOT, SHIPPED, SHIPPED_SPECS, UserError
from train_results import float32_default, load_weights, plot_forecasts, read_checkpoint
from transformer import CodeGPT, as_levels
from vqvae import VQVAE, vqvae_from

if TYPE_CHECKING:
    from prepare_mitbih import Record


class ForecasterBase:
    """The interface shared by models and baselines; evaluate.py only talks to this."""

    name: str = "forecaster"
    fs: int = 128
    deterministic: bool = True

    def predict(self, context: np.ndarray | torch.Tensor, horizon: int, num_samples: int = 100,
                seed: int = 0) -> np.ndarray:
        """Forecast `horizon` samples after each context: `context` [B, C, 2] (or [C, 2]) in mV at `self.fs`,
        band-passed as the training data were, lead II-like first (a numpy array, a torch tensor or a list),
        `num_samples` paths each, drawn from `seed` (each context forecast alone: the same seed, the same paths).
        Returns samples [B, S, H, 2] in mV, a numpy float32 array on the CPU (S = 1 for deterministic forecasters).
        They must be exchangeable draws (no order among them): the harness scores the rhythm of the first few paths
        of each window only."""
        raise NotImplementedError

    def __repr__(self) -> str:
        """What a notebook shows of a forecaster: its kind and rate, and a trained one's checkpoint and device (the
        default said only '<forecast.Forecaster object at 0x...>')."""
        said = [f"name={self.name!r}", f"fs={self.fs}"] + [f"{key}={str(value)!r}" for key in ("checkpoint", "device")
                                                          if (value := getattr(self, key, None)) is not None]
        return f"{type(self).__name__}({', '.join(said)})"

    def from_run(self, path: str | Path, ckpt: dict) -> None:
        """Where a trained forecaster came from, and the patients it saw (evaluate.py warns when it scores them).
        A forecaster of one's own calls it with its training.Trainer checkpoint once `self.cfg.data` is set."""
        self.checkpoint = str(path)
        self.train_records, self.validation_records = (seen_records(ckpt, self.cfg.data, s)
                                                       for s in ("train", "validation"))


def point_forecast(forecaster: object, paths: int, num_samples: int) -> bool:
    """Whether `paths` paths, asked `num_samples`, are a point forecast (scored so: its fair CRPS is its MAE, it has
    no interval): one path of a forecaster that says it is `deterministic` or gave one where more were asked. One
    that does not say is taken to sample, as as_context sizes its output: its one path at --samples 1 is a draw."""
    return paths == 1 and (num_samples > 1 or bool(getattr(forecaster, "deterministic", False)))


def as_context(context: np.ndarray | torch.Tensor, horizon: int = 1, num_samples: int = 1, seed: int = 0, *,
               forecaster: object = None) -> np.ndarray:
    """Validate a forecast request (the context batch, horizon, samples, seed) and return the context as
    float32 numpy [B, C, 2]. Every forecaster's predict starts here, so bad arguments fail with one message
    naming them instead of deep in numpy. `forecaster` (the caller's self) gives the context's rate `fs`, which the
    warnings judge its length by, and whether it returns one path (`deterministic`) or `num_samples`."""
    for name, value, least in (("horizon", horizon, 1), ("num_samples", num_samples, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if seed >= 2 ** 63:
        raise ValueError(f"seed must be below 2**63, got {seed}")
    x = context_array(context)
    paths_out = 1 if getattr(forecaster, "deterministic", False) else int(num_samples)
    check_output_size(len(x), paths_out, int(horizon), int(num_samples))
    if not np.isfinite(x).all():
        b, t, lead = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"context holds {int((~np.isfinite(x)).sum())} NaN or inf samples (in float32), the first "
                         f"at row {b}, sample {t}, lead {lead + 1}: every sample is forecast from; fill them or cut "
                         f"them out (a context from after a gap)")
    warn_units(x, getattr(forecaster, "fs", ForecasterBase.fs))
    return x


class OutputTooLarge(ValueError, MemoryError):
    """A request whose forecast alone would not fit in memory: a ValueError naming its sizes, said before anything
    is allocated, and a MemoryError to those who catch the one numpy or torch would raise (forecast.py does)."""


def memory_bytes() -> float:
    """The machine's physical memory, the most a forecast's output may take: more only swaps or fails later. Where
    the system does not say (Windows has no os.sysconf), no bound: numpy's own MemoryError is said then."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return math.inf


def check_output_size(batch: int, paths_out: int, horizon: int, num_samples: int) -> None:
    """Refuse a forecast whose output [B, S, H, 2] float32 alone exceeds the machine's memory, by its sizes: numpy's
    MemoryError (or torch's allocation failure) named none of them, deep in a model or baseline."""
    need, have = batch * paths_out * horizon * 2 * 4, memory_bytes()
    if need > have:
        raise OutputTooLarge(f"horizon={horizon}, num_samples={num_samples} for B={batch} context(s): the forecast "
                             f"[{batch}, {paths_out}, {horizon}, 2] float32 needs {need:,} bytes ({need / 2 ** 30:.3g} "
                             f"GiB), more than this machine's {have / 2 ** 30:.3g} GiB of memory; ask fewer samples, a "
                             f"shorter horizon or fewer contexts at a time")


def context_array(context: np.ndarray | torch.Tensor) -> np.ndarray:
    """The context as float32 numpy [B, C, 2] (a [C, 2] one is one row), C-contiguous and writable for torch;
    refused by name when it is no such array of real numbers, or a masked array with samples masked (numpy's
    asarray drops the mask, and the values under it were forecast from without a word)."""
    masked = np.ma.getmaskarray(context) if isinstance(context, np.ma.MaskedArray) else None
    if isinstance(context, (list, tuple)) and any(isinstance(c, torch.Tensor) for c in context):
        context = [tensor_array(c) if isinstance(c, torch.Tensor) else c for c in context]    # [t1, t2]: a batch
    try:
        x = tensor_array(context) if isinstance(context, torch.Tensor) else np.asarray(context)
    except ValueError as e:                                     # a ragged list
        raise ValueError(f"context must be a [B, C, 2] array of numbers (mV), its contexts equally long (forecast "
                         f"contexts of other lengths in calls of their own): {e}") from e
    given = x.shape                                             # the user's, for the message
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 2 or 0 in x.shape:
        hint = ("; leads come last: transpose a [2, C] context to [C, 2]" if len(given) == 2 and given[0] == 2 else
                "; leads come last: transpose a [B, 2, C] context" if x.ndim == 3 and x.shape[1] == 2 else "")
        raise ValueError(f"context must be [B, C, 2] (two leads, B and C at least 1), got shape {tuple(given)}" + hint)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"context must hold real numbers (mV), got dtype {x.dtype}")
    if masked is not None and masked.any():
        b, t, lead = np.argwhere(masked.reshape(x.shape))[0]
        raise ValueError(f"context is a masked array with {int(masked.sum())} samples masked, the first at row {b}, "
                         f"sample {t}, lead {lead + 1}: every sample is forecast from; fill them or cut them out")
    with np.errstate(over="ignore"):                            # too large for float32: inf, as_context refuses it
        x = x.astype(np.float32, copy=False)
    if not (x.flags.writeable and x.flags.c_contiguous):   # a broadcast or read-only array: torch.from_numpy warns
        x = np.array(x, order="C")  # of undefined behaviour; a transposed view's mean summed otherwise (1 ulp off)
    return x


def tensor_array(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as numpy, from any device, with grad or in bfloat16 (which numpy has not; float32 holds it
    exactly): a list of such tensors, a batch as [t1, t2], stopped in torch's "Can't call numpy() on Tensor that
    requires grad" or numpy's conversion of a GPU tensor."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def model_device(device: str | torch.device | None) -> torch.device:
    """The device a forecaster runs on, checked as --device is (paths.check_device): device="cuda" on a machine
    without one is named here, not met as torch's 'not compiled with CUDA' error."""
    paths.check_device(None if device is None else str(device), "device")
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def checked_samples(forecast: np.ndarray | torch.Tensor, who: str, horizon: int) -> np.ndarray:
    """One context's forecast as a float32 numpy array, checked to be [1, S, horizon, 2] and finite. A forecaster of
    one's own returning another shape or NaNs is named here, not met as numpy's error deep in the scoring or the plot,
    or saved as a forecast of NaNs; one handed --device's GPU may return a torch tensor there, or in bfloat16, which
    numpy reads neither of (tensor_array)."""
    if isinstance(forecast, torch.Tensor):
        forecast = tensor_array(forecast)
    try:
        y = np.asarray(forecast, np.float32)
    except (TypeError, ValueError) as e:
        raise UserError(f"{who}: predict returned a {type(forecast).__name__}, not an array of numbers: {e}") from e
    if y.ndim != 4 or y.shape[0] != 1 or y.shape[2:] != (horizon, 2) or y.shape[1] < 1:
        raise UserError(f"{who}: predict returned shape {y.shape}, expected [1, S, {horizon}, 2]")
    if not np.isfinite(y).all():
        raise UserError(f"{who}: predict returned NaN or inf values")
    return y


OFFSET_MV = 1.0   # a context averaging more than this on a lead was not band-passed (warn_offset)
# The shortest context (seconds) each warning judges: a shorter one may be as flat, tiny or offset as an ECG is
# (measured in mV over every stretch of the prepared MIT-BIH windows of all splits, at 128 Hz)
FLAT_S = 0.25     # one sample swings nothing, two may repeat a value; 0.25 s swing at least 5.5e-3 mV
TINY_S = 0.5      # 0.5 s swing at least 1.1e-2 mV, far above the 2e-3 mV said to be volts
OFFSET_S = 1.5    # 1.5 s average within 0.79 mV of zero, 1 s up to 1.36 mV, 0.25 s on an R peak up to 3.55 mV


def judged(x: np.ndarray, seconds: float, fs: float) -> bool:
    """Whether the context is long enough (`seconds` at `fs`) for a warning to judge it."""
    return x.shape[1] >= seconds * fs


def warn_units(x: np.ndarray, fs: float = ForecasterBase.fs) -> None:
    """Forecasters take millivolts; a context in microvolts or ADC units (or volts) still forecasts, in its
    own unit, but nothing like the training data. A flat lead (lead off, or zeros) is no ECG in any unit. Each
    judges a context long enough to tell (FLAT_S, TINY_S, OFFSET_S at `fs`): a few samples of an ECG may be as flat,
    tiny or offset, and the models refuse fewer than one step's with a message of their own."""
    swings = np.ptp(x, axis=1)
    swing = float(swings.max())
    wrong_unit = swing > 50 or (FLAT_MV < swing < 0.002 and judged(x, TINY_S, fs))    # no mV ECG swings 50 mV
    if wrong_unit:
        warnings.warn(f"the context swings {swing:.3g} units peak to peak, not the 0.1 to 10 mV of an ECG in "
                      f"millivolts: convert it to mV (microvolts / 1000, volts * 1000)", stacklevel=4)
    flat = np.argwhere(swings <= FLAT_MV) if judged(x, FLAT_S, fs) else []
    if len(flat):
        b, lead = flat[0]
        warnings.warn(f"the context has {len(flat)} flat lead(s) (swinging at most {FLAT_MV:g} mV), the first at "
                      f"row {b}, lead {lead + 1}: lead off? Its forecast means nothing", stacklevel=4)
    if not wrong_unit and judged(x, OFFSET_S, fs):
        warn_offset(x)


def warn_offset(x: np.ndarray) -> None:
    """Prepared contexts are band-passed from 0.5 Hz, so 3 s of one average within 0.5 mV of zero (0.42 mV at
    most over MIT-BIH's windows); a raw recording's offset or wander goes on into the forecast."""
    means = np.abs(x.mean(axis=1))
    if means.max() > OFFSET_MV:
        b, lead = np.unravel_index(np.argmax(means), means.shape)
        warnings.warn(f"the context's lead {lead + 1} (row {b}) averages {x[b, :, lead].mean():.3g} mV: not band-passed "
                      f"as the training data were? Filter it first (prepare_mitbih.filter_and_resample)", stacklevel=5)


def one_by_one(predict: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """A sampling predict that forecasts each context alone, with the call's seed, on the checked context
    (as_context): a context's forecast then depends on it, the horizon, the samples and the seed only, never
    on what else is in the batch. On a CPU that costs nothing: the samples of one context fill the batch.
    In float32 under a caller's autocast too (on the forecaster's `device`), as forecast.py and evaluate.py run it:
    a bfloat16 one moved the shipped Transformer's paths by up to 0.12 mV, the same seed; and in eval mode
    (in_eval)."""
    @functools.wraps(predict)
    def each(self, context, horizon: int, num_samples: int = 100, seed: int = 0, **kw) -> np.ndarray:
        x = as_context(context, horizon, num_samples, seed, forecaster=self)
        out, device = [], getattr(self, "device", None)     # one's own forecaster's may be no torch device
        with torch.autocast(device.type if isinstance(device, torch.device) else "cpu", enabled=False), in_eval(self):
            for b in range(len(x)):     # a loop, not a comprehension: warnings' stacklevel counts on this frame
                out.append(predict(self, x[b:b + 1], horizon, num_samples, int(seed), **kw))
        return np.concatenate(out)
    each.__signature__ = public_signature(predict)
    return each


@contextlib.contextmanager
def in_eval(forecaster: object) -> Iterator[None]:
    """The forecaster's torch modules (its attributes: fc.vq, fc.gpt, fc.sde) in eval mode for a forecast, then each
    submodule back in its own mode: one put in training (fine-tuning fc.gpt) forecast with the Transformer's dropout
    on, other paths at every call of the same seed. One of one's own that is a module itself keeps its parts in
    _modules, not among its attributes; an ensemble of one's own may keep its members in a list, tuple or dict
    attribute (self.members = [m1, m2]), looked into one level."""
    parts = [forecaster, *vars(forecaster).values()]
    held = [a.values() if isinstance(a, dict) else a for a in parts if isinstance(a, (list, tuple, dict))]
    parts += [p for items in held for p in items]
    modes = [(m, m.training) for part in parts if isinstance(part, torch.nn.Module) for m in part.modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def public_signature(predict: Callable[..., np.ndarray]) -> inspect.Signature:
    """The wrapped predict's signature with its checked context `x` named and typed as callers pass it: wraps
    alone would show `x: np.ndarray`, a name predict(x=...) refuses. Arguments after the seed (the Transformer's
    use_cache) are keyword-only, as one_by_one passes them: passed by position, they fail."""
    sig = inspect.signature(predict)
    self_, x, *rest = sig.parameters.values()
    rest = [p if i < 3 else p.replace(kind=p.KEYWORD_ONLY) for i, p in enumerate(rest)]   # after horizon, samples, seed
    return sig.replace(parameters=[self_, x.replace(name="context", annotation="np.ndarray | torch.Tensor"), *rest])


def seen_records(ckpt: dict, data: DataConfig, split: str = "train") -> list[str]:
    """The records a forecaster checkpoint and its VQ-VAE were trained on (`split` "train") or chose their
    checkpoints on ("validation"), as their runs stored them; an older run that stored none is taken to have used
    MIT-BIH's split of its data config, `data`. A checkpoint of one's own from
    training.Trainer has no VQ-VAE: its run's records alone."""
    from prepare_mitbih import DS1, DS2, PACED, config_split

    key, found = f"{split}_records", []
    runs = [ckpt["meta"]] + ([ckpt["vqvae"].get("meta", {})] if "vqvae" in ckpt else [])
    for meta in runs:
        found += meta[key] if key in meta else config_split(DS1 + DS2 + PACED, data)[split]
    return sorted(set(found))


def context_tail(x: np.ndarray, keep: int, factor: int, step: str) -> np.ndarray:
    """The context's last `keep` steps of `factor` samples, what a model reads of it, contiguous for torch; a context
    shorter than one `step` is refused by name."""
    if keep < 1:
        raise ValueError(f"context of {x.shape[1]} samples is shorter than one {step} ({factor} samples)")
    return np.ascontiguousarray(x[:, x.shape[1] - keep * factor:])


def warn_short_context(samples: int, trained: int, fs: int) -> None:
    """Models read their context's rhythm and beats; fewer seconds than in training still forecast, but worse."""
    if samples < trained:
        warnings.warn(f"a context of {samples} samples ({samples / fs:g} s) is shorter than the {trained} "
                      f"({trained / fs:g} s) the model was trained on; its forecasts may be worse", stacklevel=5)


class Forecaster(ForecasterBase):
    """VQ-VAE + code Transformer: encode the context, sample future codes (reading a draft when the
    model was trained with one: the seasonal-naive continuation, or with `draft_beats` the context's
    own beats at beat times drawn per sample), decode them together with the last second of context
    codes (so the seam is smooth) and keep the future samples. A horizon longer than the future the model's
    block holds after the context (the shipped model's: 3 s of 6 s) is drawn a block at a time (`roll`).

    Get one with Forecaster.from_pretrained() (a shipped model) or Forecaster.from_checkpoint(path) (a run's
    best.pt, or 'pretrained' / 'pretrained_sde'); the constructor takes the models these build."""

    name = "transformer"
    deterministic = False
    DECODE_MARGIN = 16  # context codes decoded with the future (16 codes = 1 s at the defaults)
    ROLL_BAR_BLOCKS = 10    # blocks a horizon rolls on through before it shows a bar (on a terminal): 30 s at 3 s each

    def __init__(self, vq: VQVAE, gpt: CodeGPT, cfg: Config, sample: SampleConfig,
                 device: str | torch.device | None = None, draft_beats: bool = False):
        check_parts(vq, gpt, cfg, sample, draft_beats)
        self.device = model_device(device)
        self.vq, self.gpt = vq.to(self.device).eval(), gpt.to(self.device).eval()
        self.cfg, self.sample, self.draft_beats = cfg, sample, draft_beats
        self.fs = cfg.data.samples_per_second
        self.factor = cfg.model.downsample_factor

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None) -> ForecasterBase:
        """Load any forecaster checkpoint (Transformer or latent SDE); it carries the VQ-VAE and configs. The
        shipped models' command-line names, `pretrained` and `pretrained_sde`, are taken too, as the CLIs take them.
        `fc.checkpoint_sha256` names the weights: the digest of the bytes loaded (paths.file_sha256's digits)."""
        paths.check_device(None if device is None else str(device), "device")
        if str(path) in SHIPPED_SPECS:
            path = paths.shipped_checkpoint(str(path), "Forecaster.from_checkpoint")
        elif str(path) in SHIPPED and not os.path.exists(path):     # a from_pretrained name: say so, not 'not found'
            raise UserError(f"Forecaster.from_checkpoint({str(path)!r}): no such file; it takes the shipped models as "
                            f"{' or '.join(SHIPPED_SPECS)}, from_pretrained(model={str(path)!r}) loads this one")
        elif os.path.basename(path) == str(path) and not Path(path).suffix and not os.path.exists(path):
            raise UserError(f"Forecaster.from_checkpoint({str(path)!r}): no such file, nor a shipped model's name "
                            f"({', '.join(SHIPPED_SPECS)}); a baseline by name is baselines.make_baseline(name, fs)")
        ckpt, digest = read_checkpoint(path)
        # the modules' first weights, replaced on load, come from torch's global generator: a session's seeded draws
        # must not move. Built on the CPU (then moved to `device`), whatever torch's default device: on a GPU set as
        # default they came from the GPU's generator, which fork_rng leaves moved, and CUDA held them for nothing
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            fc = cls._built(ckpt, path, device)
        fc.checkpoint_sha256 = digest               # of the bytes loaded: the file may be replaced since (best.pt)
        return fc

    @classmethod
    @float32_default()
    def _built(cls, ckpt: dict, path: str | Path, device: str | torch.device | None) -> ForecasterBase:
        """The forecaster of a loaded checkpoint (`path`'s, named in its errors)."""
        if ckpt["kind"] == "latent_sde":
            from latent_sde import LatentSDEForecaster     # it builds on this module
            return LatentSDEForecaster.from_checkpoint_dict(ckpt, path, device)
        if ckpt["kind"] == "vqvae":
            raise UserError(f"{path} holds a 'vqvae' model, not a forecaster: pass a Transformer's or latent SDE's "
                            f"(vqvae_eval.load_vqvae(path) loads a VQ-VAE for its codes and latents)")
        if ckpt["kind"] != "transformer":
            raise UserError(f"{path} holds a '{ckpt['kind']}' model: Forecaster loads Transformer and latent SDE "
                            f"checkpoints; a forecaster of one's own is FILE.py:NAME=CHECKPOINT, to forecast.py "
                            f"--checkpoint and evaluate.py --model alike")
        vq, cfg = vqvae_from(ckpt["vqvae"], str(path))
        tcfg = stored_transformer_config({k: ckpt["config"][k] for k in ("model", "sample", "train")},
                                         f"Transformer config stored in {path}")
        arch = tcfg.model
        gpt = CodeGPT(cfg.model.codebook_size, ckpt["block_size"], arch.dim, arch.layers, arch.heads, arch.dropout,
                      arch.rope, cfg.model.num_quantizers, arch.draft)
        load_weights(gpt, ckpt["model"], path)
        out = cls(vq, gpt, cfg, tcfg.sample, device, arch.draft_beats)
        out.from_run(path, ckpt)
        return out

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = None, model: str = "transformer") -> ForecasterBase:
        """A model shipped in pretrained/, `transformer` or `latent_sde` (trained on the training patients only;
        see the model card)."""
        if str(device) in {*SHIPPED, *SHIPPED_SPECS, "sde"}:   # from_pretrained("latent_sde"): a model, not a device
            raise UserError(f"from_pretrained's first argument is the device: the model is asked by name, "
                            f"from_pretrained(model=...) with one of {', '.join(SHIPPED)}, got {device!r}")
        if model in SHIPPED_SPECS:          # the command line's name, which from_checkpoint takes too
            raise UserError(f"no shipped model named '{model}' in from_pretrained: '{model}' is its command-line "
                            f"name; here it is model='{SHIPPED_SPECS[model]}' (or from_checkpoint('{model}'))")
        if model not in SHIPPED:
            raise UserError(f"no shipped model named '{model}': choose one of {', '.join(SHIPPED)}")
        if not SHIPPED[model].exists():
            target = paths.SHIPPED_NAMES[model].replace("_", "-")      # make pretrained-sde
            raise UserError(f"no shipped model at {SHIPPED[model]}: run `make {target}`, or load a checkpoint of your "
                            f"own with Forecaster.from_checkpoint(path)")
        return cls.from_checkpoint(SHIPPED[model], device)

    @one_by_one
    @torch.no_grad()
    def predict(self, x: np.ndarray, horizon: int, num_samples: int = 100, seed: int = 0,
                use_cache: bool = True) -> np.ndarray:
        # fc.sample, set anew to sample a trained model otherwise (README), is checked as a config's: a draft_noise,
        # draft_spread or draft_bias out of range set there forecast without a word
        self.sample.validate(self.gpt.draft is not None)
        steps = math.ceil(horizon / self.factor)
        # the context length it was trained on: more, with its drafts (which training starts there), forecast a
        # 1 s horizon 1.5-3% worse in CRPS (validation, EXPERIMENTS.md); a horizon beyond the block rolls on
        keep = min(x.shape[1], self.cfg.data.window_samples) // self.factor
        x_np = context_tail(x, keep, self.factor, "code")
        warn_short_context(x.shape[1], self.cfg.data.window_samples, self.fs)    # once it can forecast at all
        x = torch.from_numpy(x_np).to(self.device)
        unit = self.vq.unit(x, warn=False)     # the context's gain decodes the future too (as_context warned)
        codes = self.vq.encode(x, unit)
        drafting = self.draft_beats or self.gpt.draft is not None
        rhythm = context_rhythm(x_np, self.fs) if drafting else None   # read once, for the drafts and their noise
        draft, drafted = self.draft_codes(x, steps, num_samples, seed, rhythm)
        gen = torch.Generator(self.device).manual_seed(seed)
        future = self.roll(codes, steps, gen, use_cache, num_samples, draft)
        # decode the future with the last second of context codes: a smooth seam at a third of the cost
        seam = codes[:, keep - min(keep, self.DECODE_MARGIN):].repeat_interleave(num_samples, 0)
        u = unit.repeat_interleave(num_samples, 0)
        wave = self.decode_future(seam, future, u, horizon)
        if drafted is not None:     # what decoding loses of each draft, so a path that takes all its codes is its draft
            wave += drafted[:, :horizon] - self.decode_future(seam, draft[:, keep:].reshape(future.shape), u, horizon)
        out = wave.reshape(1, num_samples, horizon, 2).cpu().numpy()
        return add_noise(out, x_np, self.fs, self.sample.draft_noise, seed, rhythm)

    def draft_codes(self, x: torch.Tensor, steps: int, num_samples: int, seed: int, rhythm: Rhythm | None
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The draft codes [B or B * S, T + steps, Q] a drafting model reads (None for one that reads none) and, when
        sampling is tilted towards beat drafts (draft_bias > 0), the drafts themselves in mV [B * S, steps * factor,
        2], so that predict can add back what decoding loses of them. Both kinds are coded over at least a training
        draft's steps (beat_draft says why)."""
        least = (self.cfg.data.total_samples - self.cfg.data.window_samples) // self.factor
        if self.draft_beats:
            exact = self.sample.draft_bias > 0
            got = beat_draft(self.vq, x, steps, self.fs, num_samples, seed, jitter=self.sample.draft_spread,
                             waves=exact, rhythm=rhythm, least=least)
            return got if exact else (got, None)
        if self.gpt.draft is not None:
            return seasonal_draft(self.vq, x, steps, self.fs, rhythm, least), None
        return None, None

    def roll(self, context: torch.Tensor, steps: int, gen: torch.Generator, use_cache: bool, num_samples: int,
             draft: torch.Tensor | None) -> torch.Tensor:
        """Future codes [B * num_samples, steps, Q] after contexts [B, T, Q], a block at a time: each block
        after the first reads the last T codes drawn, with no draft over them, like a training window's
        context. `draft` [B or B * num_samples, T + steps, Q] covers the whole horizon."""
        T, span = context.shape[1], self.gpt.block_size - context.shape[1]
        blocks, ctx, n = [], context, num_samples
        starts = range(0, steps, span)
        # a long horizon's blocks on a terminal: 5 min of 100 paths drew codes for a minute and more without a word
        for start in tqdm(starts, desc="drawing codes", unit="block", leave=False,
                          disable=None if len(starts) >= self.ROLL_BAR_BLOCKS else True):
            k = min(span, steps - start)
            d = None if draft is None else torch.cat([draft[:, :T], draft[:, T + start:T + start + k]], 1)
            blocks.append(self.gpt.generate(ctx, k, self.sample.temperature, self.sample.top_k, self.sample.top_p,
                                            gen, use_cache=use_cache, num_samples=n, draft=d,
                                            draft_bias=self.sample.draft_bias))
            ctx = torch.cat([ctx.repeat_interleave(n, 0), blocks[-1]], 1)[:, -T:]     # one context per path now
            if draft is not None and len(draft) != len(ctx):
                draft = draft.repeat_interleave(num_samples, 0)
            n = 1
        return torch.cat(blocks, 1)

    def decode_future(self, seam: torch.Tensor, future: torch.Tensor, unit: torch.Tensor, horizon: int) -> torch.Tensor:
        """The first `horizon` samples [N, horizon, 2] of future codes decoded after the seam's context codes."""
        full = torch.cat([seam, future], 1)
        wave = torch.cat([self.vq.decode(f, u) for f, u in zip(full.split(512), unit.split(512))])
        start = seam.shape[1] * self.factor
        return wave[:, start:start + horizon]


def check_parts(vq: VQVAE, gpt: CodeGPT, cfg: Config, sample: SampleConfig, draft_beats: bool) -> None:
    """Refuse by name a VQ-VAE, CodeGPT, data and sampling settings that do not make one forecaster (the
    constructor's parts, built by hand): other codebooks or levels stopped in an embedding's 'index out of range in
    self', a block no longer than a context in 'range() arg 3 must not be zero' or an empty torch.cat, and beat drafts
    for a model that reads none still tilted its sampling towards them. The sampling settings are checked as a
    config's are: a negative draft_bias or draft_noise forecast without a word."""
    sample.validate(gpt.draft is not None)
    steps = cfg.data.window_samples // vq.factor
    odd = [f"{what}: the VQ-VAE's {mine}, {other}'s {its}" for what, mine, other, its in (
        ("codebook_size", vq.cfg.codebook_size, "the CodeGPT", gpt.codebook_size),
        ("codebook levels", len(vq.quantizers), "the CodeGPT", gpt.levels),
        ("downsample_factor", vq.factor, "cfg.model", cfg.model.downsample_factor)) if mine != its]
    if gpt.block_size <= steps:
        odd.append(f"the CodeGPT's block_size {gpt.block_size} leaves no step after a context of {steps} codes "
                   f"({cfg.data.window_samples} samples)")
    if draft_beats and gpt.draft is None:
        odd.append("draft_beats for a CodeGPT that reads no drafts (built without draft=True)")
    if odd:
        raise ValueError(f"Forecaster's parts do not fit: {'; '.join(odd)}")


@torch.no_grad()
def seasonal_draft(vq: VQVAE, context: torch.Tensor, steps: int, fs: int, rhythm: Rhythm | None = None,
                   least: int = 0) -> torch.Tensor:
    """Draft codes [B, T + steps, Q] of contexts [B, T * factor, 2] for a drafting CodeGPT: -1 over the
    context, then the codes of its seasonal-naive continuation (`rhythm`: the contexts' `context_rhythm`),
    coded over at least `least` steps (see beat_draft)."""
    x = context.cpu().numpy()
    ext = repeat_last(x, (rhythm or context_rhythm(x, fs))[1], max(steps, least) * vq.factor)[:, 0]
    T = context.shape[1] // vq.factor
    return code_draft(vq, ext, T, context.device)[:, :T + steps]


@torch.no_grad()
def beat_draft(vq: VQVAE, context: torch.Tensor, steps: int, fs: int, num_samples: int = 1, seed: int = 0,
               beats: list[np.ndarray] | None = None, jitter: float = 0.05,
               waves: bool = False, rhythm: Rhythm | None = None, least: int = 0
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Draft codes [B * num_samples, T + steps, Q] of `draft_waves`, each distinct draft coded once; with
    `waves`, also the drafts themselves [B * num_samples, steps * factor, 2] (mV). A draft of fewer than `least`
    steps (a training draft's) is coded continued by its last period, then cut: coded alone, its last codes (the
    encoder's edge) and its gain were unlike a training draft's, and the shipped model departed from them (CRPS of
    the first 1/8 s of 60 validation windows: 0.064 mV forecast 1/8 s ahead, 0.044 forecast 3 s ahead)."""
    x = context.cpu().numpy()
    rhythm = rhythm or context_rhythm(x, fs)
    drafts, index = draft_waves(x, steps * vq.factor, fs, num_samples, seed, beats, jitter, rhythm)
    full, more, T = drafts, (least - steps) * vq.factor, context.shape[1] // vq.factor
    if more > 0:                    # the drawn draft unchanged (the template ensemble's), only coded longer
        owner = np.empty(len(drafts), np.int64)
        owner[index] = np.repeat(np.arange(len(x)), num_samples)
        tail = repeat_last(np.concatenate([x[owner], drafts], 1), rhythm[1][owner], more)[:, 0]
        full = np.concatenate([drafts, tail], 1)
    codes = code_draft(vq, full, T, context.device)[:, :T + steps]
    which = torch.from_numpy(index).to(codes.device)
    if not waves:
        return codes[which]
    return codes[which], torch.from_numpy(drafts.astype(np.float32)).to(codes.device)[which]


def code_draft(vq: VQVAE, waves: np.ndarray, context_steps: int, device: torch.device, batch: int = 512) -> torch.Tensor:
    """[N, context_steps + steps, Q]: -1 over the context, then the codes of each continuation [N, H, 2],
    a chunk coded on its own like the future part of a training window."""
    w = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(vq.device)
    # each chunk at its own gain, as encode(chunk) takes it; predict's as_context warned of the context's unit
    future = torch.cat([as_levels(vq.encode(c, vq.unit(c, warn=False)), len(vq.quantizers)) for c in w.split(batch)])
    future = future.to(device)
    return torch.cat([torch.full_like(future[:, :1], -1).expand(-1, context_steps, -1), future], 1)


def default_checkpoint() -> Path:
    """The shipped Transformer (pretrained/forecaster.pt) when there is one, else the newest trained Transformer."""
    if PRETRAINED.exists():
        return PRETRAINED
    from vqvae_eval import latest_checkpoint
    return latest_checkpoint("transformer")


def checkpoint_path(checkpoint: str | None) -> Path:
    """The file --checkpoint names: a path, or a shipped model by the name evaluate.py --model gives it; without
    the flag, default_checkpoint()."""
    if checkpoint is None:
        return default_checkpoint()
    from baselines import BASELINES
    return paths.existing_checkpoint(checkpoint, "--checkpoint", f", and not a shipped model "
                                     f"({', '.join(SHIPPED_SPECS)}), a baseline ({', '.join(BASELINES)}) nor a "
                                     f"forecaster of one's own (FILE.py:NAME[=CHECKPOINT])")


def load_forecaster(checkpoint: str | None, device: str | None) -> tuple[str | Path, ForecasterBase]:
    """--checkpoint's forecaster and what names it: a checkpoint, a shipped model, a baseline by name, or one's own
    FILE.py:NAME(=CHECKPOINT), as evaluate.py --model takes them: a record's forecast set beside a baseline's."""
    device = paths.check_device(device)
    from baselines import BASELINES, make_baseline          # both build on this module
    from own_forecaster import own_spec, user_forecaster
    if checkpoint in BASELINES:
        return checkpoint, make_baseline(checkpoint, load_config().data.samples_per_second)
    if checkpoint and own_spec(checkpoint):
        return checkpoint, user_forecaster(checkpoint, load_config().data.samples_per_second, device, "--checkpoint",
                                           own_rate=True)
    path = checkpoint_path(checkpoint)
    return path, Forecaster.from_checkpoint(path, device)


def own_data(fc: object) -> DataConfig | None:
    """The data settings a forecaster carries (a checkpoint's, or one's own forecaster's `cfg.data`), else None."""
    data = getattr(getattr(fc, "cfg", None), "data", None)
    return data if isinstance(data, DataConfig) else None


def forecast_record(fc: ForecasterBase, record: str, start_s: float, horizon_s: float | None, samples: int,
                    seed: int, leads: Sequence[str] | None = None) -> dict:
    """Forecast a WFDB record from `start_s`, prepared exactly as the model's training data (record_data); of the
    channels `leads` names (--leads) when given, else of the leads the training data's reading chooses."""
    from prepare_mitbih import record_hash
    data = record_data(fc)
    fs, ctx = data.samples_per_second, data.window_samples
    if horizon_s is None:
        horizon_s = data.input_signal_duration * data.forecast_predictions
    for flag, seconds in (("--start", start_s), ("--horizon", horizon_s)):
        if math.isfinite(seconds) and not math.isfinite(seconds * fs):    # 1e308 s: round(inf)'s OverflowError
            raise UserError(f"{flag} {seconds:g} s is more samples than any record or memory holds")
    if not math.isfinite(horizon_s) or round(horizon_s * fs) < 1:
        raise UserError(f"--horizon {horizon_s} s must be at least one sample ({1 / fs:g} s at {fs} Hz)")
    if not math.isfinite(start_s):
        raise UserError(f"--start {start_s} s is not a time")
    horizon, at = round(horizon_s * fs), round(start_s * fs)
    rec = read_model_record(record, data, (max(at - ctx, 0), at + horizon), leads)     # the context and truth only
    input_hash = record_hash(record)    # the files just read
    context, truth = record_window(rec, record, data, start_s, horizon)
    too_many = (f"--horizon {horizon_s:g} s with --samples {samples}: {samples} paths of {horizon} samples do not "
                "fit in memory")
    if horizon * samples * 8 >= 2 ** 63:    # numpy refuses such an array with a ValueError, not a MemoryError
        raise UserError(too_many)
    try:
        forecast = fc.predict(context[None], horizon, samples, seed)
    except MemoryError as e:        # --horizon 1e7 (115 days) stopped in numpy's traceback
        raise UserError(f"{too_many} ({type(e).__name__}: {e})") from e
    samples_ = checked_samples(forecast, fc.name, horizon)[0]
    return {"context": context, "truth": truth, "samples": samples_, "fs": fs, "leads": rec.leads,
            "start_sample": at, "fs_in": rec.fs_in, "device": str(getattr(fc, "device", "cpu")),
            "input_hash": input_hash, "data_hash": data_hash(data)}


def record_data(fc: ForecasterBase) -> DataConfig:
    """How a record is read for `fc`: by its own data settings, else the project's. A forecaster at another rate is
    refused (own_forecaster.check_rate), called from Python as by forecast.py, not handed samples at the wrong rate."""
    from own_forecaster import check_rate                    # own_forecaster builds on this module
    own = own_data(fc)
    data = own or load_config().data     # one's own without data settings: the project's
    check_rate(f"forecaster {getattr(fc, 'name', type(fc).__name__)!r}", fc, data.samples_per_second,
               " (the record is read by the forecaster's own cfg.data)" if own else " (the record is read by "
               "config_vqvae.json's data section; a forecaster at another rate carries its own as cfg.data)")
    return data


def record_window(rec: Record, record: str, data: DataConfig, start_s: float, horizon: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The context before `start_s` (a training window's) and the `horizon` true samples after it, fewer at the
    record's end; refused by name when `rec`, read from `record`, has no whole context without gaps there."""
    from prepare_mitbih import hundredths           # loaded by now, with the record
    fs, ctx = data.samples_per_second, data.window_samples
    at = round(start_s * fs)
    if rec.length < ctx:
        raise UserError(f"{record} lasts {hundredths(rec.length / fs, up=False)} s, shorter than the model's "
                        f"context of {hundredths(ctx / fs, up=True)} s: no forecast can start in it")
    if at < ctx or at > rec.length:
        raise UserError(f"--start {start_s} s must lie between {hundredths(ctx / fs, up=True)} s (one context) and "
                        f"the record's end ({hundredths(rec.length / fs, up=False)} s) in {record}")
    i = at - rec.offset                                     # where the record's sample `at` is in what was read
    context = rec.signal[i - ctx:i]
    if not np.isfinite(context).all():
        raise UserError(f"{record}: the context {round((at - ctx) / fs, 3):g}-{start_s:.15g} s touches a gap of "
                        f"NaN/invalid or flat samples; {clean_starts(rec.signal, i, ctx, fs, rec.offset)}")
    return context, rec.signal[i:i + horizon]


def read_model_record(record: str, data: DataConfig, span: tuple[int, int] | None = None,
                      leads: Sequence[str] | None = None) -> Record:
    """--record read as the model's training data were (`data`: rate, band, leads; `leads`, --leads' channel names,
    choose the leads instead), gaps as NaN and no beats, only the samples `span` (and a margin,
    prepare_mitbih.read_record) when given; a folder or a name without its header is refused with what --record
    takes (vqvae_eval.py --record reads so too)."""
    from prepare_mitbih import read_record
    check_not_folder(Path(record))
    check_header(Path(record))
    return read_record(Path(record), data, gaps=True, annotator=None, span=span, leads=leads)


def check_not_folder(record: Path) -> None:
    """--record DIR (a folder) would be read as the record DIR.hea: say what --record takes, with DIR's records."""
    from prepare_mitbih import header_stems
    if os.path.isdir(record) and not os.path.isfile(f"{record}.hea"):      # os.path's: see paths
        try:
            names = header_stems(record)
        except UserError:                           # a RECORDS file naming a record not there: any header will do
            names = sorted(p.stem for p in record.glob("*.hea"))
        found = [str(record / name) for name in names[:2]]
        some = f", e.g. {' or '.join(found)}" if found else f"; {record} holds no .hea file"
        raise UserError(f"--record {record} is a folder: it takes one record, FOLDER/NAME without an extension{some}")


def check_header(record: Path) -> None:
    """A --record without its header (100, a name without its folder): say what --record takes, with the record of
    that name in the data folder (paths.location's) when there is one, not wfdb's 'missing file 100.hea'."""
    from prepare_mitbih import record_path
    where = record_path(record)
    if os.path.isfile(f"{where}.hea"):        # os.path's: see paths
        return
    there = paths.location("data") / where.name
    hint = f", such as {there}" if os.path.isfile(f"{there}.hea") and where != there else ""
    raise UserError(f"--record {record}: no header {where}.hea; --record takes a WFDB record's path without an "
                    f"extension, FOLDER/NAME{hint}")


def clean_starts(signal: np.ndarray, at: int, ctx: int, fs: int, offset: int = 0) -> str:
    """The nearest forecast starts before and after `at` whose context has no gap, said for an error (`signal`:
    the record's samples from `offset` on, read around `at`)."""
    said = [f"{s:g} s" for s in clean_start_times(signal, at, fs, offset, before=ctx)]
    return f"the nearest clean --start: {' or '.join(said)}" if said else "no context around it is without gaps"


def clean_start_times(signal: np.ndarray, at: int, fs: int, offset: int = 0, before: int = 0, after: int = 0
                      ) -> list[float]:
    """The nearest starts (seconds, to 1 ms) at or before and at or after `at` with `before` samples before them and
    `after` from them on without gaps: a forecast's context, vqvae_eval.py's windows (`signal`: the record's samples
    from `offset` on); fewer when none fits in `signal`."""
    from prepare_mitbih import finite_stretches
    ok = [(a + before, b - after) for a, b in finite_stretches(signal) if b - a >= before + after]
    earlier = [min(b, at) for a, b in ok if a <= at]
    later = [max(a, at) for a, b in ok if b >= at]
    return [round((s + offset) / fs, 3) for s in (max(earlier, default=None), min(later, default=None))
            if s is not None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Forecast a WFDB record: PNG of context, truth, forecast and bands; "
                                "samples as .npy.")
    shipped = ", ".join(f"{name} ({SHIPPED[kind].relative_to(ROOT)})" for name, kind in SHIPPED_SPECS.items())
    p.add_argument("--checkpoint", type=paths.given_path,
                   help=f"forecaster checkpoint, a shipped model by name: {shipped}, a baseline by name "
                   f"(seasonal, template_ensemble, ...: evaluate.py's), or a forecaster "
                   f"of one's own, FILE.py:NAME[=CHECKPOINT], as for evaluate.py --model (default: the shipped "
                   f"{PRETRAINED.relative_to(ROOT)} when present, else the newest checkpoints/transformer-*/best.pt)")
    p.add_argument("--record", required=True, type=paths.given_path,
                   help="WFDB record path without extension, e.g. ../shared/data/mitdb/100")
    p.add_argument("--start", type=float, required=True, help="forecast start in seconds (context ends here)")
    p.add_argument("--horizon", type=float, help="seconds to forecast (default: the model's horizon)")
    p.add_argument("--samples", type=int, default=100, help="sampled trajectories (default 100)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same forecast (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--out", type=paths.given_path,
                   help="output folder (default: forecast-<time> in $ECG_RESULTS_DIR or results)")
    add_leads_flag(p, "the record's channels to forecast as lead 1 and lead 2, e.g. II V5 (names as in its header; "
                   "'Lead II' or ii match II)", "the model's training data were")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0, commit = time.time(), paths.git_commit()    # the code that runs, whatever the tree holds at the end
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")
    from prepare_mitbih import asked_leads      # before the model loads: a bad --leads fails at once
    asked_leads(args.leads)
    path, fc = load_forecaster(args.checkpoint, args.device)
    run = {"command": paths.script_command("forecast.py", argv, () if args.out else ("results",)),   # where it wrote
           "git_commit": commit, **checkpoint_sha256(path, fc), **own_code_of(path)}   # what ran, taken at the start
    if args.out:
        paths.check_writable(args.out, keep=False)
    t_load = time.time() - t0                       # start-up: torch, the checkpoint
    res = forecast_record(fc, args.record, args.start, args.horizon, args.samples, args.seed, args.leads)
    res["heart_rate"] = heart_rates(res)
    files = save_forecast(res, args, path, run)
    n_paths, steps = res["samples"].shape[:2]     # a deterministic forecaster gives one path whatever --samples asks
    print(f"forecast of {args.record} from {args.start:.15g} s: {running.counted(n_paths, 'sample')} x {steps} "
          f"samples x 2 leads ({', '.join(res['leads'])}) at {res['fs']} Hz{resampled(res)} in "
          f"{time.time() - t0:.1f} s ({t_load:.1f} s of it loading the model)")
    truth, gap = truth_cover(res)
    if gap or truth < steps:
        running.note(f"the truth plotted covers {(truth - gap) / res['fs']:g} s of the {steps / res['fs']:g} s "
                     f"forecast (the record's end or a gap)")
    print(f"{heart_rate_line(res['heart_rate'], n_paths)} (lead 1 R peaks{'; ' + PATHS_KEY if n_paths > 1 else ''})")
    if said := no_rhythm(res["context"], res["fs"]):
        running.note(said)
    print(f"plot: {files[1]}\nsamples: {files[0]}\nsettings: {files[2]}")
    return {**res, "files": files}


def slowest_bpm(seconds: float) -> str:
    """The heart rate below which a context of `seconds` may hold fewer than two R peaks: two beats lie in any
    stretch of twice their interval (40 bpm for 3 s)."""
    return f"{120 / seconds:.0f}"


def no_rhythm(context: np.ndarray, fs: int) -> str:
    """What a context [C, 2] with fewer than two R peaks (drafts.context_rhythm's) does to the forecasts, or ''.
    The beat drafts continue the context's median RR; without one they repeat its last autocorrelation period,
    at a heart rate under slowest_bpm or over a pause a stretch between beats: a flat forecast, said by nothing but
    paths at 0 bpm."""
    peaks, period, _ = context_rhythm(context[None], fs)
    if len(peaks[0]) >= 2:
        return ""
    return (f"the context shows {running.counted(len(peaks[0]), 'R peak')} in its {len(context) / fs:g} s (a heart "
            f"rate under {slowest_bpm(len(context) / fs)} bpm, a pause, or beats the detector misses): the beat "
            f"drafts of the shipped models and of the seasonal and template baselines have no RR interval to "
            f"continue, and repeat the context's last {period[0] / fs:.3g} s")


def truth_cover(res: dict) -> tuple[int, int]:
    """The true samples after the start, and how many of them are gaps: the record may end, or break, early."""
    return len(res["truth"]), int((~np.isfinite(res["truth"])).any(1).sum())


def heart_rates(res: dict) -> dict:
    """Heart rate (bpm) of the context, of each sampled path (median and 10th-90th percentile over paths) and of
    the truth when the record covers the whole horizon, from lead 1's R peaks as evaluate.py detects them (the
    context's threshold): a forecast whose paths lose the patient's rhythm shows it in one line. A horizon
    shorter than the shortest plausible beat period (MIN_PERIOD_S) measures no rate: None, not 0 bpm; one shorter
    than the longest (MAX_PERIOD_S) measures none from a single beat (counted, one beat in 0.25 s read 240 bpm), so
    the paths' figures are of those with two beats: `paths_rated` says how many (record 100's 83 bpm over 1 s came
    from 5 of 100 paths, and read as the model's forecast rate)."""
    from drafts import MAX_PERIOD_S, MIN_PERIOD_S
    from metrics import detect_r_peaks, heart_rate, per_row
    fs, lead = res["fs"], res["context"][:, 0]
    c, horizon = len(lead), res["samples"].shape[1]
    context = heart_rate(detect_r_peaks(lead[None], fs)[1], fs, c / fs)
    none = {"context": context, "paths_median": None, "paths_p10": None, "paths_p90": None, "truth": None,
            "paths_rated": 0}
    if horizon < MIN_PERIOD_S * fs:
        return none

    def rates(continuations: np.ndarray) -> np.ndarray:
        x = np.concatenate([np.broadcast_to(lead, (len(continuations), c)), continuations], axis=1)
        found = [p[p >= c] for p in per_row(*detect_r_peaks(x, fs, level_from=c), len(x))]
        counted = horizon >= MAX_PERIOD_S * fs
        return np.array([heart_rate(p, fs, horizon / fs) if counted or len(p) >= 2 else np.nan
                         for p in found])

    paths, truth = rates(res["samples"][:, :, 0]), res["truth"][:, 0]
    truth_rate = rates(truth[None])[0] if len(truth) == horizon and np.isfinite(truth).all() else np.nan
    if np.isnan(paths).all():
        return none
    return {"context": context, "paths_median": float(np.nanmedian(paths)),
            "paths_p10": float(np.nanpercentile(paths, 10)), "paths_p90": float(np.nanpercentile(paths, 90)),
            "truth": None if np.isnan(truth_rate) else float(truth_rate), "paths_rated": int(np.isfinite(paths).sum())}


def one_decimal(hr: dict) -> dict:
    """heart_rates to 0.1 bpm for the .json (72.2, not 72.19999999999999). The line rounds the unrounded rates: 73.45
    kept as 73.5 would read 74."""
    return {key: None if v is None else round(v, 1) for key, v in hr.items()}


def heart_rate_line(hr: dict, n_paths: int = 2) -> str:
    """The rates of heart_rates in one line; "—" where none could be measured (a horizon too short for a beat, a
    truth of one beat in less than the longest period, or cut short by the record's end): a truth left out said
    nothing of why. One path (a deterministic forecaster's) has its rate alone: 'paths 74 [74-74]' said a spread
    there is not. Paths of which only some have a rate (heart_rates' `paths_rated`) say how many."""
    short = hr["paths_median"] is None
    truth = ", truth —" if hr["truth"] is None else f", truth {hr['truth']:.0f}"
    rate = "—" if short else f"{hr['paths_median']:.0f}"
    if n_paths == 1:
        return f"detected heart rate (bpm): context {hr['context']:.0f}, forecast {rate}{truth}"
    spread = "" if short else f" [{hr['paths_p10']:.0f}-{hr['paths_p90']:.0f}]"
    if not short and hr["paths_rated"] < n_paths:
        spread += f" ({hr['paths_rated']} of {n_paths} paths with two beats)"
    return f"detected heart rate (bpm): context {hr['context']:.0f}, paths {rate}{spread}{truth}"


PATHS_KEY = "paths: median [10th-90th percentile]"      # what heart_rate_line's paths give, for many


def resampled(res: dict) -> str:
    """' (the record's 250 Hz resampled)' for a record not at the model's rate: what was forecast is not its samples."""
    return f" (the record's {res['fs_in']:g} Hz resampled)" if res["fs_in"] != res["fs"] else ""


def save_forecast(res: dict, args: argparse.Namespace, checkpoint: Path, run: dict) -> list[Path]:
    """Write the samples (.npy), their plot (.png) and what was asked (.json) into --out, else a fresh
    results/forecast-<time>; returns the three files. They are written into a hidden folder first (paths.staging_folder)
    and are the forecast's only once all three are: killed outright while plotting (kill -9), a forecast into an --out
    holding an earlier one of the same record and start left its new samples beside the earlier plot and .json
    (another seed, maybe another model), unsaid. `run` is the git commit the run started at, the checkpoint's digest and
    one's own code's (own_code_of). The .json gives torch's CPU threads: another count may change the samples in their
    last bits."""
    from prepare_mitbih import record_path          # loaded by now, with the record
    record = record_path(args.record).name          # 100 also for 100.hea or 100.dat
    names = [f"{record}_{args.start:.15g}s{end}" for end in ("_samples.npy", ".png", ".json")]
    out = Path(args.out) if args.out else None
    if out and (taken := [n for n in names if (out / n).exists()]):
        running.note(f"replacing {', '.join(taken)} in {out}, an earlier forecast of {record} from {args.start:.15g} s")
    truth, gap = truth_cover(res)
    staged = paths.staging_folder(out or paths.location("results", None))
    try:
        npy, png, js = (staged / n for n in names)
        paths.atomic_save_npy(res["samples"], npy)
        plot_record(res, record, args, png, model_label(checkpoint))
        paths.atomic_write_json({"record": args.record, "start_s": args.start, "fs": res["fs"], "fs_in": res["fs_in"],
                                 "leads": res["leads"], "samples_shape": list(res["samples"].shape), "units": "mV",
                                 "seed": args.seed, "truth_samples": truth, "truth_gap_samples": gap,
                                 "heart_rate_bpm": one_decimal(res["heart_rate"]), "input_hash": res["input_hash"],
                                 "data_hash": res["data_hash"], "device": res["device"],
                                 "torch_threads": torch.get_num_threads(), "checkpoint": str(checkpoint), **run}, js)
        if out:
            paths.moved_in([(staged / n, out / n) for n in names], out, "run forecast.py again")
        else:
            out = paths.publish_run_dir(staged, "forecast")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return [out / n for n in names]


def checkpoint_sha256(checkpoint: str | Path, fc: ForecasterBase) -> dict:
    """The weights' digest as evaluate.py's report gives it (own_forecaster.weights_sha256: the bytes `fc` loaded);
    {} when there is no file (a baseline; own_code_of names one's own code)."""
    from own_forecaster import weights_sha256
    digest = weights_sha256(str(checkpoint), fc)
    return {"checkpoint_sha256": digest} if digest else {}


def own_code_of(checkpoint: str | Path) -> dict:
    """The files and SHA-256s behind a forecaster of one's own, its file and the local modules it imports
    (own_forecaster.own_code), {} for a checkpoint."""
    from own_forecaster import own_code
    return {"own_forecaster": code} if (code := own_code([str(checkpoint)])) else {}


def model_label(checkpoint: str | Path) -> str:
    """What a plot calls the model: its checkpoint within the project (pretrained/forecaster.pt), else its folder
    and file (transformer-<time>/best.pt), or one's own FILE.py:NAME as given."""
    path = Path(checkpoint)
    if not path.is_file():
        return str(checkpoint)
    return paths.in_project(path) or f"{path.parent.name}/{path.name}"


def plot_record(res: dict, record: str, args: argparse.Namespace, path: Path, model: str = "") -> None:
    """Context, truth and forecasts on the record's own clock; the truth is NaN-padded where the record ends first.
    The title names the model: a shipped and a retrained one draw alike."""
    n, horizon = res["samples"].shape[:2]       # a deterministic forecaster gives one path whatever --samples asks
    truth = np.pad(res["truth"], ((0, horizon - len(res["truth"])), (0, 0)), constant_values=np.nan)
    window = np.concatenate([res["context"], truth])
    drawn = f"{n} sampled forecasts" if n > 1 else "1 forecast path"
    title = (f"{model + ': ' if model else ''}record {record} from {args.start:.15g} s, {drawn}\n"
             f"{heart_rate_line(res['heart_rate'], n)}{'; ' + PATHS_KEY if n > 1 else ''}")
    plot_forecasts(window[None], res["samples"][None], res["fs"], len(res["context"]), path, title,
                   start_s=(res["start_sample"] - len(res["context"])) / res["fs"],
                   leads=tuple(f"lead {k + 1}: {name}" for k, name in enumerate(res["leads"])))


if __name__ == "__main__":
    running.run_main(main)
