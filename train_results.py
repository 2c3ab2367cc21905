"""What a training run leaves behind: metrics.csv, plots (PNG, physical units) and checkpoints."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

import paths
import running
from hyper_params import stored_config
from hyper_params_sde import stored_sde_config
from hyper_params_transformer import stored_transformer_config
from paths import UserError

if TYPE_CHECKING:       # matplotlib is imported by the plots that draw: `from forecast import Forecaster` waited 0.3 s
    import matplotlib.ticker
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEADS = ("lead 1", "lead 2")


class MetricsLog:
    """One CSV row per epoch; resumed runs append to the same file. Each append replaces the file atomically, so a
    run killed while logging leaves whole rows only."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _text(self) -> tuple[str, str]:
        """The file's whole lines, and a last line without its newline: half a row, left by a run of older code
        killed while appending it in place."""
        if not self.path.exists():
            return "", ""
        with self.path.open(newline="", encoding="utf-8") as f:    # newline="": the rows' \r\n kept as written
            text = f.read()
        end = text.rfind("\n") + 1
        return text[:end], text[end:]

    def append(self, row: dict) -> None:
        """A column the file lacks (a run resumed by code that logs more) is added, blank in the earlier rows:
        dropping it would lose that metric for the rest of the run. The row replaces those of its epoch and after:
        a run resumed from an older checkpoint trains them again, and drops them only once it has trained one (a
        resume that failed before, dropping them as it started, lost the rows of epochs that last.pt still held)."""
        rows = [r for r in self.read() if int(r["epoch"]) < int(row["epoch"])]
        self._write(list(dict.fromkeys([*(rows[0] if rows else {}), *row])),
                    [*rows, {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}])

    def read(self) -> list[dict]:
        return list(csv.DictReader(io.StringIO(self._text()[0])))

    def note_half_row(self) -> None:
        """Say so when the file ends in half a row, which the next append drops (`read` leaves it out)."""
        cut = self._text()[1]
        if cut:
            running.note(f"{self.path} ended in half a row ({cut[:40]!r}), from a run killed while writing it: dropped")

    def _write(self, fields: list[str] | None, rows: list[dict]) -> None:
        """The whole file anew, atomically (no fields: empty)."""
        out = io.StringIO()
        if fields:
            w = csv.DictWriter(out, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        paths.atomic_write_text(out.getvalue(), self.path)


def whole_ticks() -> matplotlib.ticker.MaxNLocator:
    """Ticks at whole numbers (epochs, codes) only: MaxNLocator(integer=True) alone falls back to fractions when
    fewer than two fit, and a run's plots after its first epoch read epochs 0.945, 0.96, ..., 1.05."""
    import matplotlib.ticker
    return matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1)


def plot_loss_curves(log: MetricsLog, out: Path, ylabel: str = "loss", run: str = "") -> None:
    """Training and validation loss per epoch; titled with the `run` (its folder's name, e.g. vqvae-<time>): the
    curves of a VQ-VAE, a Transformer and a latent SDE looked alike once copied out of their folders."""
    rows = log.read()
    if not rows:
        return
    import matplotlib.pyplot as plt
    epochs = [int(r["epoch"]) for r in rows]
    curves = {key: [float(r[key]) for r in rows] for key in ("train_loss", "val_loss") if key in rows[0]}
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, values in curves.items():
        ax.plot(epochs, values, marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(whole_ticks())      # after the first epoch too
    ax.set_ylabel(textwrap.fill(ylabel, 40))   # a trainer's loss name, e.g. the latent SDE's, is longer than 4 in
    # log only over a decade or more (a VQ-VAE's first epochs); a latent SDE's ELBO goes below 0 once its learned
    # noise is small, and a log axis would drop those epochs
    values = [v for vs in curves.values() for v in vs]
    ax.set_yscale("log" if min(values) > 0 and max(values) >= 10 * min(values) else "linear")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{run + ': ' if run else ''}loss per epoch", fontsize=10)
    fig.tight_layout()
    paths.atomic_savefig(fig, out, dpi=100)
    plt.close(fig)


def logged(value: str) -> float:
    """A metrics.csv cell as a number; NaN for a blank one, which MetricsLog.append leaves in the rows before a
    column was added (a run resumed by code that logs more)."""
    return float(value) if value else float("nan")


HEALTH = (("perplexity", "perplexity", 1), ("usage", "codes used (%)", 100), ("restarted", "dead codes restarted", 1))
CODEBOOK_MARKERS = ("o", "s", "^", "D", "v", "P")  # each codebook's own: in greyscale their colours were one grey


def plot_codebook_health(log: MetricsLog, out: Path, run: str = "") -> None:
    """Perplexity, share of codes used and dead codes restarted in each training epoch, a line per residual
    codebook (metrics.csv's perplexity, perplexity_2, ...): a collapsing codebook shows here before the
    reconstructions suffer. Nothing for a run without codebooks; `run` (its folder's name) in the title."""
    rows = log.read()
    if not rows or "perplexity" not in rows[0]:
        return
    import matplotlib.pyplot as plt
    epochs = [int(r["epoch"]) for r in rows]
    suffixes = [k[len("perplexity"):] for k in rows[0] if k == "perplexity" or k.startswith("perplexity_")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, label, factor) in zip(axes, HEALTH):
        for level, suffix in enumerate(suffixes):
            ax.plot(epochs, [factor * logged(r[name + suffix]) for r in rows],
                    marker=CODEBOOK_MARKERS[level % len(CODEBOOK_MARKERS)],
                    label=f"codebook {level + 1}", clip_on=False)      # a 0 on the axis keeps its marker
        ax.set(xlabel="epoch", ylabel=label)
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))      # counts and shares: none below 0, and no -0.04 restarts
        ax.xaxis.set_major_locator(whole_ticks())
        ax.grid(alpha=0.3)
    axes[2].yaxis.set_major_locator(whole_ticks())      # whole codes
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{run + ': ' if run else ''}codebook health in each training epoch")
    fig.tight_layout()
    paths.atomic_savefig(fig, out, dpi=100)
    plt.close(fig)


# Truth (or original) against forecast (or reconstruction) in every figure: black and red alike, 1.0 wide, they
# were one grey line printed in greyscale. The truth is thick, over any bands and samples; the forecast thin and
# solid over the truth, so both show where they agree.
TRUTH_LINE = {"color": "black", "lw": 1.8, "zorder": 4}
# The key below the panels of every reconstruction, forecast and evaluation figure, as large as the axis labels: at
# 8 pt it was the smallest text there, unreadable once a 13 in figure is shown at a report's width.
LEGEND_FONTSIZE = 10
FORECAST_LINE = {"color": "tab:red", "lw": 1.1, "zorder": 5}


def panel_title(ax: Axes, titles: list[tuple[str, str]] | None, i: int, lead: int,
                leads: tuple[str, ...] = LEADS) -> None:
    """Window i's own title for each lead's panel (window_titles), else the lead's name over the first row."""
    if titles:
        ax.set_title(titles[i][lead], fontsize=9)
    elif i == 0:
        ax.set_title(leads[lead])


def plot_windows(original: np.ndarray, other: np.ndarray, fs: float, out: Path, title: str,
                 titles: list[tuple[str, str]] | None = None) -> None:
    """Lead 1 and lead 2 of a few windows [N, T, 2] in mV against time from each window's start: original against
    reconstruction. `titles`: each window's two panels (its record, start and leads), else "lead 1", "lead 2" over
    the first row."""
    import matplotlib.pyplot as plt
    n = len(original)
    t = np.arange(original.shape[1]) / fs
    fig, axes = plt.subplots(n, 2, figsize=(12, 2.2 * n + 0.4), squeeze=False, sharex=True)
    for i in range(n):
        for lead in range(2):
            ax = axes[i, lead]
            ax.plot(t, original[i, :, lead], **TRUTH_LINE, label="original")
            ax.plot(t, other[i, :, lead], **FORECAST_LINE, label="reconstruction")
            ax.set_ylabel("mV")
            panel_title(ax, titles, i, lead)
    for ax in axes[-1]:     # not 'time (s)': under 'record 109 at 1794 s' an axis from 0 read as the record's clock
        ax.set_xlabel("time from window start (s)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", fontsize=LEGEND_FONTSIZE, ncol=2,
               frameon=False)      # below the panels: inside one it hid the last beat of the top right window
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    paths.atomic_savefig(fig, out, dpi=90)
    plt.close(fig)


def weights_digest(model: torch.nn.Module) -> str:
    """Fingerprint of a model's weights: caches derived from a frozen model are valid for exactly these."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomic: a kill during the save leaves the previous file intact."""
    paths.atomic_torch_save(state, path)


@contextlib.contextmanager
def float32_default() -> Iterator[None]:
    """torch's default dtype float32 for a while (a decorator too), for every loader that builds a model from a
    checkpoint: the models are float32, and a session that set float64 (as scientific code does) built float64
    modules and tensors, whose forecasts stopped in torch's 'Input type (float) and bias type (double) should be
    the same'."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def load_weights(model: torch.nn.Module, state: dict, path: str | os.PathLike) -> None:
    """A checkpoint's weights into the model its config builds. Weights the model lacks, lacks room for or has
    in another shape (a checkpoint of an older layout of the code, or an edited one) are one error naming the
    file and the first few tensors, not torch's traceback listing them all."""
    own = model.state_dict()
    state = state if isinstance(state, dict) else {}
    odd = ([f"{k} missing" for k in own if k not in state] + [f"{k} unexpected" for k in state if k not in own]
           + [f"{k} is {list(v.shape)}, the model's {list(own[k].shape)}" for k, v in state.items()
              if k in own and getattr(v, "shape", None) != own[k].shape])
    if odd:
        raise UserError(f"{path}: its weights do not fit the {type(model).__name__} its config builds "
                        f"({'; '.join(odd[:3])}{'; ...' if len(odd) > 3 else ''}): saved by another version of the "
                        f"code (run.json's git_commit), or edited")
    model.load_state_dict(state)


TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "run_dir", "ckpt_dir")    # what only a resume reads
CHECKPOINT_KEYS = {"vqvae": ("config",), "transformer": ("config", "vqvae", "block_size", "meta"),
                   "latent_sde": ("config", "vqvae", "meta")}      # what loading each kind of model reads


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load a checkpoint safely (weights_only) with one clear error for missing, cut or foreign files; its stored
    configs come back checked and complete (built_configs)."""
    return read_checkpoint(path, kind)[0]


def read_checkpoint(path: str | os.PathLike, kind: str | None = None, example: str = "best.pt") -> tuple[dict, str]:
    """load_checkpoint's checkpoint and the SHA-256 (paths.file_sha256's digits) of the bytes it was loaded from:
    the file hashed again after loading could be another one by then (a later best.pt, an edited --resume).
    `example`: the file a run's folder, given instead, is told to pass (--resume's is last.pt)."""
    path = Path(path).expanduser()
    if os.path.isdir(path):             # a run's checkpoint folder, passed for one of its files; os.path's: see paths
        held = sorted(p.name for p in path.glob("*.pt"))
        if not held:        # its e.g. FOLDER/best.pt named a file that is not there
            raise UserError(f"checkpoint {path} is {paths.unsaved_run(path) or 'a folder holding no checkpoint'}; "
                            f"pass a checkpoint file, e.g. another run's {example}")
        example = path / (example if example in held else held[0])     # pretrained/ holds no best.pt
        raise UserError(f"checkpoint {path} is a folder ({', '.join(held[:5])}): pass one checkpoint file, e.g. "
                        f"{example}")
    if not os.path.isfile(path):
        unsaved = paths.unsaved_run(path.parent)
        raise UserError(f"checkpoint not found: {path}{f' ({path.parent} is {unsaved})' if unsaved else ''}")
    try:
        with open(path, "rb") as f:
            digest = paths.opened_sha256(f)
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:      # whatever a foreign or cut file makes the unpickler raise
        if path.suffix == ".py":    # FILE.py:NAME without its :NAME was said to be a checkpoint cut short
            raise UserError(f"checkpoint {path} is Python source, not a checkpoint: evaluate.py --model and "
                            f"forecast.py --checkpoint take a forecaster class in it as {path}:NAME") from e
        if path.suffix == ".json":  # a config given for --vqvae, --resume or --checkpoint: 'cut short' said nothing
            raise UserError(f"checkpoint {path} is JSON (a config?), not a checkpoint: pass a .pt file a run wrote "
                            f"(e.g. its best.pt); configs go to --config") from e
        raise UserError(f"checkpoint {path} is unreadable or cut short ({type(e).__name__}); "
                        f"use another checkpoint (e.g. last.pt or best.pt)") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "kind" not in ckpt:
        raise UserError(f"{path} is not an ecg-forecast checkpoint")
    if kind is not None and ckpt["kind"] != kind:
        raise UserError(f"{path} holds a '{ckpt['kind']}' model, expected '{kind}'")
    missing = [k for k in CHECKPOINT_KEYS.get(ckpt["kind"], ()) if k not in ckpt]
    if missing:
        raise UserError(f"{path} is a '{ckpt['kind']}' checkpoint without {', '.join(missing)}: not one these "
                        f"scripts wrote, or damaged")
    if ckpt["kind"] in STORED_CONFIG:
        built_configs(ckpt, path)
    return ckpt, digest


# each kind's config as its checkpoints store it: the keys it predates mean what they meant then (each model's
# PREDATED), not today's defaults
STORED_CONFIG = {"vqvae": stored_config, "transformer": stored_transformer_config,
                 "latent_sde": stored_sde_config}


def built_configs(ckpt: dict, path: Path) -> None:
    """Replace a checkpoint's stored configs (its own, and the VQ-VAE's a forecaster carries) with the configs its
    model was built with, checked like a config file: unknown keys (a newer version's), wrong types and bad values
    are named with the file, and the keys it predates are filled in, so that a resume or a new run compares like
    with like. In place."""
    source = f"config stored in {path}"
    raw = ckpt["config"]
    own = {k: v for k, v in raw.items() if k != "vqvae"} if isinstance(raw, dict) else raw
    ckpt["config"] = STORED_CONFIG[ckpt["kind"]](own, source).to_dict()
    if isinstance(raw, dict) and "vqvae" in raw:
        ckpt["config"]["vqvae"] = stored_config(raw["vqvae"], f"VQ-VAE {source}").to_dict()
    carried = ckpt.get("vqvae")
    if isinstance(carried, dict) and "config" in carried:
        ckpt["vqvae"] = {**carried, "config": stored_config(carried["config"], f"VQ-VAE {source}").to_dict()}


def check_same_config(saved: dict, current: dict, path: Path, sections: tuple[str, ...] = ("model",)) -> None:
    """Refuse to resume or load weights into a model built from a different config."""
    for section in sections:
        a, b = saved.get(section, {}), current.get(section, {})
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            k = diff[0]
            raise UserError(f"checkpoint {path} was made with another config: '{section}.{k}' is "
                            f"{a.get(k)!r} there but {b.get(k)!r} now")


def fixed_indices(split: dict, n: int) -> np.ndarray:
    """The `n` windows of a prepared split plotted every epoch, evenly spread over it (the same each epoch); all of
    them, each once, when it has fewer."""
    size = len(split["signals"])
    return np.linspace(0, size - 1, min(n, size)).astype(int)


def fixed_windows(split: dict, n: int) -> torch.Tensor:
    return split["signals"][fixed_indices(split, n)].clone()


def window_titles(split: dict, idx: np.ndarray, leads: dict[str, list[str]],
                  context: int = 0) -> list[tuple[str, str]]:
    """'record 109 at 12 s, lead 1: MLII' for both leads of each window plotted, so a figure says which patient
    and moment it shows; the lead names from `leads` (prepare_mitbih.stored_leads) when the record is there. With a
    `context` (samples), a forecast's: 'record 109, lead 1: MLII, forecast from 15 s', the time its axis counts from
    (plot_epoch_forecasts), as evaluate.py's galleries say it."""
    out = []
    for i in idx:
        record, fs = split["records"][int(split["record"][i])], float(split["fs"])
        names = leads.get(record, [])
        lead = [f"lead {k + 1}" + (f": {names[k]}" if len(names) == 2 else "") for k in range(2)]
        start = int(split["start"][i])
        out.append(tuple(f"record {record}, {name}, forecast from {(start + context) / fs:g} s" if context else
                         f"record {record} at {start / fs:g} s, {name}" for name in lead))
    return out


def fixed_titles(split: dict, n: int, prepared_dir: str | None = None, context: int = 0) -> list[tuple[str, str]]:
    """The panel titles of fixed_windows(split, n): a training run's epoch plots name what they show."""
    from prepare_mitbih import stored_leads         # here: `from forecast import Forecaster` loads no prepare_mitbih
    return window_titles(split, fixed_indices(split, n), stored_leads(prepared_dir), context)


LONG_PLOT_S = 12.0      # a longer window stacks its two leads, on a figure as wide as the seconds need


def forecast_axes(n: int, seconds: float) -> tuple[Figure, np.ndarray]:
    """[n, 2] axes, one row per window and one column per lead; over LONG_PLOT_S seconds each lead gets a row of
    its own, up to 30 in wide, so that a 30 s forecast still shows its beats one by one."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    if seconds <= LONG_PLOT_S:
        height = 2.6 * n + 0.9              # the last 0.9 in: the title above and the legend below every trace
        return plt.subplots(n, 2, figsize=(13, height), squeeze=False, sharex=True)
    fig, axes = plt.subplots(2 * n, 1, figsize=(min(30.0, max(13.0, seconds)), 5.0 * n + 0.9), sharex=True,
                             squeeze=False)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(1.0))    # a grid line a second, as on paper
    return fig, axes.reshape(n, 2)


def forecast_panel(ax: Axes, t: np.ndarray, window: np.ndarray, samples: np.ndarray, context: int) -> None:
    """One lead of one window (plot_forecasts): `window` [C + H] is context then truth at times `t` (s), `samples`
    [S, H] the forecast paths, all in mV."""
    horizon = samples.shape[1]
    tf = t[context:context + horizon]
    ax.plot(t[:context], window[:context], color="0.45", lw=1.0, label="context")
    ax.plot(tf, window[context:context + horizon], **TRUTH_LINE, label="truth")
    if len(samples) > 1:
        for lo, hi, alpha in ((10, 90, 0.18), (25, 75, 0.3)):
            ax.fill_between(tf, np.percentile(samples, lo, 0), np.percentile(samples, hi, 0), color="tab:blue",
                            alpha=alpha, lw=0, label=f"{hi - lo}% band")
        ax.plot(tf, samples[0], color="tab:blue", lw=0.6, alpha=0.7, label="one sample")
    ax.plot(tf, samples.mean(0), **FORECAST_LINE, label="forecast (mean)" if len(samples) > 1 else "forecast")
    ax.axvline(t[context], color="0.3", ls=":", lw=0.8)
    ax.set_ylim(*robust_ylim(window[:context + horizon], samples))
    ax.set_ylabel("mV")
    ax.grid(alpha=0.3)


def robust_ylim(window: np.ndarray, samples: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    """forecast_panel's y-limits: the context and truth (`window`, NaN past a record's end) and the 10th-90th
    percentile band of the paths [S, H], padded by `pad` of their span; a lone forecast path counts whole. One
    diverged path (the drawn sample, or pulling the mean) squashed every beat into a flat line at the bottom; it
    now leaves the panel at its edge."""
    shown = samples if len(samples) == 1 else np.percentile(samples, (10, 90), 0)
    values = np.concatenate([np.ravel(window), np.ravel(shown)])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (-1.0, 1.0)
    margin = pad * (hi - lo) or 0.1      # a flat trace (the zero forecast of a silent lead) keeps a visible band
    return lo - margin, hi + margin


def plot_forecasts(windows: np.ndarray, samples: np.ndarray, fs: float, context: int, out: Path, title: str,
                   start_s: float = 0.0, leads: tuple[str, ...] = LEADS,
                   titles: list[tuple[str, str]] | None = None, xlabel: str = "time (s)") -> None:
    """Context, truth, sample-mean forecast, its 50% / 80% bands and one sample (the mean of paths that disagree
    on timing is smooth; a sample shows the beats) for lead 1 and lead 2.

    windows [N, C + H, 2] (context then truth) and samples [N, S, H, 2], all in mV; time in seconds from
    `start_s`, so a record's forecast reads in record time. `titles`: each window's two panels (window_titles),
    else `leads` over the first row."""
    import matplotlib.pyplot as plt
    t = start_s + np.arange(windows.shape[1]) / fs
    fig, axes = forecast_axes(len(windows), windows.shape[1] / fs)
    for i in range(len(windows)):
        for lead in range(2):
            ax = axes[i, lead]
            forecast_panel(ax, t, windows[i, :, lead], samples[i, :, :, lead], context)
            panel_title(ax, titles, i, lead, leads)
    for ax in axes.flat:
        if ax.get_subplotspec().is_last_row():
            ax.set_xlabel(xlabel)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", fontsize=LEGEND_FONTSIZE, ncol=6,
               frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
    paths.atomic_savefig(fig, out, dpi=100)
    plt.close(fig)


def plot_epoch_forecasts(windows: np.ndarray, samples: np.ndarray, fs: float, context: int, run_dir: Path,
                         epoch: int, model_name: str, titles: list[tuple[str, str]] | None = None) -> None:
    """A forecaster trainer's forecast_epoch_NNN.png (plot_forecasts): the same words for the Transformer's and the
    latent SDE's but `model_name` (their plots look alike, and were titled alike), and time from the forecast start,
    the context negative, as in evaluate.py's galleries (`titles`: fixed_titles(..., context=context), which give
    that start in record time)."""
    plot_forecasts(windows, samples, fs, context, run_dir / f"forecast_epoch_{epoch:03d}.png",
                   f"{model_name}, epoch {epoch}: validation forecasts ({samples.shape[1]} sampled paths)",
                   start_s=-context / fs,
                   titles=titles, xlabel="time from forecast start (s)")
