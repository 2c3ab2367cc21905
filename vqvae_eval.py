"""Reconstruction quality of a trained VQ-VAE on one split, averaged over records (each record weighs the same:
MIT-BIH's 201 and 202 are one patient).

    python3 vqvae_eval.py [--checkpoint checkpoints/<run>/best.pt] [--split test|validation|train]

Prints and saves (results/vqvae_eval-<time>/reconstruction.json, .md, a PNG; with the checkpoint's SHA-256, the
data hash, the command and the git commit) each record's leads (as meta.json gives them), MSE in mV^2, PRD and
normalised PRD in percent, codebook perplexity and usage, the compression ratio and the bit rate.

    python3 vqvae_eval.py [--checkpoint C] --record ../shared/data/mitdb/100 [--start 60] [--seconds 30|end]
                          [--leads LEAD1 LEAD2]

codes a WFDB record instead (any rate; read as forecast.py reads it, of the two channels --leads names when given,
e.g. II V5): consecutive windows of the model's length from --start (default 0 s) for --seconds (default one window;
'end': to the record's end), each coded alone as the forecaster codes its context. Writes
results/vqvae_eval-<time>/<record>_<start>s.npz: codes [W, T', Q] int, latents [W, T', D] float32 (the encoder's
output before quantisation, time before channel), gain [W, 2] mV (what each window is divided by before coding),
reconstruction and signal [W, T, 2] mV, start_s [W], fs, leads (the two read), record, checkpoint,
checkpoint_sha256, input_hash (the record's files), command, git_commit; and a PNG of the first windows against their
reconstructions, each panel naming its lead.

From Python, main(["--split", "test", ...]) takes the flags as a list and returns the report (reconstruction.json's
dict), or with --record the .npz's path.

It also holds what the forecaster trainers (transformer_train.py, latent_sde_train.py) share about the frozen
VQ-VAE they train on: finding and loading it (latest_checkpoint, load_vqvae, run_vqvae, vqvae_choice), its
config (forecasting_config) and the cached encodings of the training windows (frozen_encodings).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

import paths
import running
from hyper_params import AugmentConfig, Config, DataConfig, add_leads_flag, data_hash, load_config, stored_config
from metrics import prd, prdn
from prepare_mitbih import (SourceSamples, asked_leads, augmented_encoding, cached_encoding, hundredths, load_split,
                            patients_seen, record_hash, source_samples, stored_leads, stored_meta)
from train_results import fixed_indices, plot_windows, read_checkpoint, weights_digest, window_titles
from training import Runtime, main_first, ranks_apart, run_splits
from transformer import as_levels
from vqvae import SAMPLE_BITS, VQVAE, codebook_health, vqvae_from
from paths import UserError


def latest_checkpoint(kind: str, checkpoints: str | None = None, name: str = "best.pt",
                      flag: str = "--checkpoint") -> Path:
    """The newest <kind>-<time>/<name> under the checkpoints folder (`flag`: the script's way to name one)."""
    root = paths.location("checkpoints", checkpoints)
    try:
        found = sorted(root.glob(f"{kind}-*/{name}"), key=lambda p: p.stat().st_mtime)
    except OSError as e:        # a root the system will not look in (a name too long): a traceback, not the error
        raise UserError(f"cannot look for {kind} checkpoints in {root}: {e.strerror or e}; pass {flag}, or a "
                        f"checkpoints root that can be read") from e
    # run folders without one (killed in their first epoch, or in it still): those newer than the pick are said
    picked = modified(found[-1]) if found else -math.inf
    newer = [p for p in without_checkpoint(root, kind, name) if modified(p) > picked]
    passed = (f"{', '.join(map(str, newer))}: no {name} there, {'its run' if len(newer) == 1 else 'their runs'} "
              f"still in the first epoch or killed before it ended")
    if not found:
        raise UserError(f"no {kind} checkpoint in {root}{f' (passed over {passed})' if newer else ''}; train one "
                        f"first (python3 {kind}_train.py) or pass {flag}")
    if newer:
        running.note(f"took {found[-1]}, passing over the newer {passed}; {flag} names a checkpoint")
    note_unfinished(found[-1], flag)
    return found[-1]


def without_checkpoint(root: Path, kind: str, name: str) -> list[Path]:
    """The <kind>-<time> folders under `root` without `name`: a run killed before its first epoch ended leaves its
    folder so (nothing can tidy up after kill -9), and one in its first epoch looks the same. A folder of one's own
    named otherwise (vqvae-old/) is no run's."""
    return [p for p in sorted(root.glob(f"{kind}-*")) if paths.RUN_FOLDER.fullmatch(p.name) and os.path.isdir(p)
            and not os.path.exists(p / name)]


def modified(path: Path) -> float:
    """`path`'s modification time, -inf for one gone since it was listed: a run stopped in its first epoch drops its
    folder (training_main), which stopped the caller in stat's FileNotFoundError."""
    try:
        return path.stat().st_mtime
    except OSError:
        return -math.inf


def note_unfinished(path: Path, flag: str) -> None:
    """The newest checkpoint may be a run's that is still training (another one, started since), whose best.pt
    changes while this one reads it: said when its last.pt has trained fewer epochs than its train.epochs."""
    try:
        # mapped, not read: two numbers of a file whose weights and optimiser state may be large
        last = torch.load(path.parent / "last.pt", map_location="cpu", weights_only=True, mmap=True)
        epoch, epochs = int(last["epoch"]), int(last["config"]["train"]["epochs"])
    except Exception:           # no last.pt, or not one of ours: nothing to tell
        return
    if epoch < epochs:
        running.note(f"{path} is of a run at epoch {epoch} of {epochs}: still training, or stopped; {flag} names "
                     f"another checkpoint")


def load_vqvae(path: str | Path) -> tuple[VQVAE, dict]:
    """A trained VQ-VAE in eval mode and its checkpoint (config, meta), also the one inside a forecaster's
    checkpoint, so the shipped model's coder can be measured and trained on too: `pretrained` and `pretrained_sde`
    name the shipped models' (paths.named_checkpoint), as Forecaster.from_checkpoint takes them. The modules' first
    weights, replaced on load, are drawn from a fork of torch's generator, as there: a session's seeded draws after
    loading moved with it. Built on the CPU, as there, whatever torch's default device: on a GPU set as default they
    came from the GPU's generator, which the fork leaves moved."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        return read_vqvae(paths.named_checkpoint(path, "vqvae_eval.load_vqvae"))[:2]


def read_vqvae(path: str | Path) -> tuple[VQVAE, dict, str]:
    """load_vqvae's VQ-VAE and checkpoint, and the SHA-256 of the file's bytes it was loaded from (read_checkpoint):
    best.pt changes while its run goes on, so a result names the weights by the digest taken as they were read."""
    ckpt, digest = read_checkpoint(path)
    if ckpt["kind"] != "vqvae":
        if not isinstance(ckpt.get("vqvae"), dict):
            raise UserError(f"{path} holds a '{ckpt['kind']}' model without a VQ-VAE")
        ckpt = ckpt["vqvae"]
    return vqvae_from(ckpt, str(path))[0], ckpt, digest


# what a VQ-VAE's checkpoint flag (the trainers' --vqvae, vqvae_eval.py --checkpoint) takes besides the shipped names
VQVAE_TAKES = "a VQ-VAE's checkpoint path (e.g. checkpoints/vqvae-<time>/best.pt), a forecaster's for its VQ-VAE"


def run_vqvae(args: argparse.Namespace, resume: dict | None) -> tuple[VQVAE, dict, str, str]:
    """The frozen VQ-VAE a forecaster trains on, its checkpoint, where it came from and the SHA-256 of the file read
    (read_vqvae; "" on resume, which reads none): a resumed run's own (kept in its checkpoint, whatever VQ-VAE was
    trained since), else --vqvae, else the newest."""
    if resume:
        if args.vqvae:
            running.note(f"--vqvae {args.vqvae} is ignored: the resumed run goes on with its own VQ-VAE, kept in "
                         f"{args.resume}")
        return (vqvae_from(resume["vqvae"], args.resume)[0], resume["vqvae"],
                str(resume["meta"].get("vqvae_checkpoint", args.resume)), "")
    path = (paths.given_checkpoint(args.vqvae, "--vqvae", VQVAE_TAKES) if args.vqvae
            else latest_checkpoint("vqvae", args.checkpoints, flag="--vqvae"))
    model, ckpt, digest = read_vqvae(path)     # a forecaster's too: a new forecaster on the shipped codes
    return model, ckpt, str(path), digest


VQVAE_KEYS = ("vqvae_checkpoint", "vqvae_given", "vqvae_sha256")     # run.json's record of a forecaster's VQ-VAE


def source_record(resume: dict | None, keys: tuple[str, str, str], path: str, given: str | None,
                  digest: str) -> dict:
    """run.json's record of a checkpoint a forecaster's run starts from (its VQ-VAE, the ELBO run it fine-tunes),
    under `keys`: the file as resolved on this machine (`path`), as its flag named it (`given`: a shipped model's name
    such as pretrained_sde; None when the newest was taken) and the SHA-256 of the bytes loaded (read_checkpoint's):
    best.pt changes while its run goes on, so not the file hashed again later. A resume keeps its first run's
    record, as the file may have changed since (runs made before a key was recorded: without it). A relative path
    is made absolute: run.json is read from other folders."""
    path = os.path.abspath(path)
    if resume:
        return {keys[0]: path, **{k: resume["meta"][k] for k in keys[1:] if k in resume["meta"]}}
    return dict(zip(keys, (path, given, digest)))


def forecasting_config(vq_ckpt: dict, source: str) -> Config:
    """The data and model config a forecaster trains with: its VQ-VAE's, which must give windows a future (with
    data.forecast_predictions 0 the encoders met windows too short for their kernels, in a traceback)."""
    cfg = stored_config(vq_ckpt["config"], f"config stored in {source}")
    if cfg.data.forecast_predictions < 1:
        raise UserError(f"{source}: the VQ-VAE's data.forecast_predictions is 0, so its windows hold no future "
                        f"for a forecaster to learn; train the VQ-VAE with a config whose "
                        f"data.forecast_predictions is 1 or more (on data prepared with it)")
    return cfg


FORECASTER_FLAGS = {"augment_copies": "augment.copies"}   # the forecaster trainers' flags that set a config key


def add_forecaster_flags(p: argparse.ArgumentParser) -> None:
    """The forecaster trainers' own flags that set a config key: run_config applies them by FORECASTER_FLAGS."""
    p.add_argument("--augment-copies", type=int, help="override augment.copies (0: none, for quick runs)")


def forecaster_splits(cfg: Config, prepared: str | None, resume: dict | None) -> tuple[dict, dict]:
    """The training and validation splits the forecaster trainers read: their records may be other than the
    config's (a VQ-VAE's own split), and a resume's refusal says to pass the run's --prepared (run_splits)."""
    return run_splits(lambda split: load_split(split, cfg, prepared, any_records=True), resume)


def best_checkpoint(ckpt_dir: Path, resume: dict | None) -> str:
    """The best.pt a finished run's closing commands name: a resume in new folders (its run's results folder was
    gone) writes best.pt there only once it beats the resumed best, so until then the resumed run's."""
    best = str(Path(ckpt_dir) / "best.pt")
    earlier = os.path.join(resume.get("ckpt_dir") or "", "best.pt") if resume else ""
    if earlier and not os.path.isfile(best) and os.path.isfile(earlier):
        best = earlier
    return best


def next_commands(ckpt_dir: Path, cfg: Config, val: dict, prepared: str | None,
                  resume: dict | None = None) -> str:
    """What to run with a forecaster's best.pt once its training ends: forecast.py on the record and moment of the
    epoch plots' first panel (the record read from the folder it was prepared from, meta.json's data_dir), and
    evaluate.py on the validation patients, which reads the split by its --config's data section: when that is not
    config_vqvae.json's, the VQ-VAE's config is written next to the checkpoints and named, so the command runs as
    printed. best.pt is best_checkpoint's, not a file that is not there. Both name the $ECG_* folders that chose
    this run's (paths.command_line)."""
    best = best_checkpoint(ckpt_dir, resume)
    record = val["records"][int(val["record"][0])]
    start = (int(val["start"][0]) + cfg.data.window_samples) / float(val["fs"])
    folder = stored_meta(prepared).get("data_dir") or paths.location("data")
    forecast = ["python3", "forecast.py", "--checkpoint", best, "--record", str(Path(folder) / record),
                "--start", f"{start:.15g}"]       # exact: forecast.py rounds it to a sample, as it prints it
    evaluate = ["python3", "evaluate.py", "--model", best, "--split", "validation",
                *(["--prepared", prepared] if prepared else [])]
    try:
        own_data = data_hash(cfg.data) != data_hash(load_config().data)     # config_vqvae.json's, evaluate.py's default
    except UserError:       # missing or invalid (edited meanwhile): evaluate.py needs --config then too
        own_data = True
    if own_data:
        own = Path(ckpt_dir) / OWN_CONFIG
        paths.atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", own)
        evaluate += ["--config", str(own)]
    return (f"forecast with: {paths.command_line(forecast, ('results',))}\n"
            f"evaluate on validation patients: {paths.command_line(evaluate, ('prepared', 'results'))}")


OWN_CONFIG = "vqvae_config.json"     # the VQ-VAE's config, beside a forecaster's checkpoints (next_commands)


ENCODE_BATCH = 512      # windows the frozen VQ-VAE encodes at once; a multiple of latent_sde.latent_frames' batch


def in_batches(encode: Callable[[torch.Tensor], torch.Tensor], show: bool,
               batch: int = ENCODE_BATCH) -> Callable[[torch.Tensor], torch.Tensor]:
    """`encode` over batches of windows under a progress bar (`show`: rank 0, and tqdm's own test for a
    terminal): encoding the training windows takes minutes on a CPU. The batches are the ones the encoders
    make already (transformer_train.encode_split's windows, latent_frames' pieces), so the encodings are the same."""
    def encode_batches(signals: torch.Tensor) -> torch.Tensor:
        starts = tqdm(range(0, len(signals), batch), desc="encoding", unit="batch", leave=False,
                      disable=None if show else True)
        return torch.cat([encode(signals[i:i + batch]) for i in starts])
    return encode_batches


def check_same_vqvae(digest: str) -> None:
    """Every rank loads the VQ-VAE on its own node: a stale copy there, a best.pt rewritten by a run still training
    between the ranks' reads, or the newest of each node's own checkpoints/ (no --vqvae) would give the ranks codes of
    different VQ-VAEs, and the forecaster would train on a mix of them without a word."""
    ranks, apart = ranks_apart(digest)
    if apart:
        said = ", ".join(f"rank {r}'s {ranks[r]}" for r in apart)
        raise UserError(f"the ranks loaded different VQ-VAEs (weights digest: rank 0's {ranks[0]}, {said}): give every "
                        "node the same --vqvae file, not a best.pt of a run still training")


def frozen_encodings(kind: str, vq: VQVAE, encode: Callable[[torch.Tensor], torch.Tensor], train: dict, val: dict,
                     key: str, aug: AugmentConfig, data_cfg: DataConfig, seed: int, prepared: str | None,
                     rt: Runtime) -> tuple[torch.Tensor, torch.Tensor, tuple[list[dict], torch.Tensor] | None]:
    """The training and validation windows encoded once by the frozen `vq`, and `aug.copies` stretched
    copies of the training records with theirs, cached under `kind` (`key`: what else the encoding depends on).
    Rank 0 computes them first (main_first), on the run's device, in batches under a progress bar (in_batches).
    A GPU's are kept apart from a CPU's: its convolutions (TF32 on Ampere and later, torch's default for cuDNN)
    move some codes, and a CPU run that read them trained on other codes than a CPU run does."""
    encode = in_batches(encode, rt.is_main)
    digest = weights_digest(vq)
    if rt.distributed:
        check_same_vqvae(digest)
    vq.to(rt.device)
    if rt.device.type != "cpu":
        key += f":{rt.device.type}"

    def compute() -> tuple[torch.Tensor, torch.Tensor, tuple[list[dict], torch.Tensor] | None]:
        train_enc, val_enc = (
            cached_encoding(kind, f"{digest}:{d['data_hash']}:{d['input_hash']}:{split}:{key}",
                            lambda d=d: encode(d["signals"]), prepared, split)
            for split, d in (("train", train), ("validation", val)))
        return train_enc, val_enc, (augmented_encoding(kind, train, aug, data_cfg, seed, encode, digest,
                                                       prepared, key) if aug.copies else None)
    train_enc, val_enc, augmented = main_first(rt, compute)
    if augmented and rt.is_main:
        print(f"augmented: {len(augmented[1])} windows from {aug.copies} stretched copies of the training records")
    return train_enc, val_enc, augmented


def vqvae_choice(args: argparse.Namespace, source: str) -> str:
    """Which VQ-VAE a forecaster trains on, and why: both VQ-VAE configs write checkpoints/vqvae-*, so the
    newest may come from either."""
    if args.resume:
        return f"{source} (the resumed run's own, kept in {args.resume})"
    return source if args.vqvae else f"{source} (the newest; --vqvae chooses another)"


def compression(model: VQVAE, window: int, fs: float, source: SourceSamples | None = None) -> dict:
    """Compression of a window of `window` samples at the model's `fs`: against the records it came from (their
    `source` samples, the ECG-coding convention; defaults: `fs`, and MIT-BIH's SAMPLE_BITS, said to be assumed)
    and against samples of as many bits at `fs`, and the bit rate. The ranges of the records' rates and bits go
    with their means, so a mean is not told as every record's."""
    source = source or SourceSamples.uniform(fs)
    bits = source.bits or SAMPLE_BITS
    cr = model.compression_ratio(window, source.fs / fs, bits)
    return {"compression_ratio": cr, "source_fs": source.fs, "sample_bits": bits,
            "sample_bits_assumed": not source.bits,
            "source_fs_range": list(source.fs_range), "sample_bits_range": list(source.bits_range or (bits, bits)),
            "compression_ratio_model_rate": model.compression_ratio(window, sample_bits=bits),
            "bits_per_second": 2 * bits * source.fs / cr}


def uniform(s: dict) -> bool:
    """Whether every lead of the records (a compression summary's) holds samples of one rate and bits: only then
    are its mean rate and bits any lead's own, to be told as its samples."""
    return len({*s["source_fs_range"]}) == len({*s["sample_bits_range"]}) == 1


def source_words(s: dict, bits_note: str = "") -> str:
    """The records' samples a compression summary counts, e.g. '11-bit samples at 360 Hz'; records that differ
    get their mean bit rate a lead (the one the ratio counts) and the ranges, not a mean rate told as theirs."""
    (b_lo, b_hi), (f_lo, f_hi) = s["sample_bits_range"], s["source_fs_range"]
    words = (f"{b_lo:g}{f'- to {b_hi:g}' if b_hi != b_lo else ''}-bit{bits_note} samples at "
             f"{f_lo:g}{f' to {f_hi:g}' if f_hi != f_lo else ''} Hz")
    return words if uniform(s) else f"{s['source_fs'] * s['sample_bits']:,.0f} bit/s a lead on average: {words}"


@torch.no_grad()
def reconstruction_report(model: VQVAE, data: dict, source: SourceSamples | None = None, batch: int = 256) -> dict:
    """Per-record sums of squared error / signal / deviation, so PRD is exact per record. The compression
    ratio counts the bits of the records: their `source` samples (before resampling; default: MIT-BIH's 11 bits at
    the model's rate). The windows go to the model's device (a GPU's, from Python; the
    CLI's is the CPU); the code counts add up on the CPU, whatever torch's default device (a GPU's met the CPU's
    counts in 'Expected all tensors to be on the same device')."""
    sig = data["signals"]
    rec = data["record"].numpy()
    names = data["records"]
    sums = np.zeros((len(names), 3))
    usage = torch.zeros(model.cfg.codebook_size, device="cpu")
    device = next(model.parameters()).device
    for lo in tqdm(range(0, len(sig), batch), desc="windows", unit="batch"):
        x = sig[lo:lo + batch].to(device, copy=True)
        unit = model.unit(x)
        codes = model.encode(x, unit)
        first = codes if codes.ndim == 2 else codes[..., 0]
        usage += torch.bincount(first.flatten(), minlength=len(usage)).float().cpu()
        err = (model.decode(codes, unit) - x).pow(2).sum((1, 2)).double().cpu().numpy()
        energy = x.pow(2).sum((1, 2)).double().cpu().numpy()
        dev = (x - x.mean(1, keepdim=True)).pow(2).sum((1, 2)).double().cpu().numpy()
        np.add.at(sums, rec[lo:lo + batch], np.stack([err, energy, dev], 1))
    n_per_record = np.bincount(rec, minlength=len(names)) * sig.shape[1] * 2
    per_record = {names[i]: {"mse_mv2": sums[i, 0] / n_per_record[i], "prd": 100 * math.sqrt(sums[i, 0] / sums[i, 1]),
                             "prdn": 100 * math.sqrt(sums[i, 0] / sums[i, 2])}
                  for i in range(len(names)) if n_per_record[i]}
    summary = {k: float(np.mean([r[k] for r in per_record.values()])) for k in ("mse_mv2", "prd", "prdn")}
    summary.update(**codebook_health(usage),
                   **compression(model, sig.shape[1], float(data["fs"]), source),
                   codebooks=len(model.quantizers), codebook_size=len(usage),
                   records=len(per_record), windows=int(len(sig)))
    return {"summary": summary, "per_record": per_record}


def trained_line(meta: dict) -> list[str]:
    """How the VQ-VAE was trained (its run's command and epochs), so a briefly trained one is not read as the
    shipped one: figures of make demo's 2 epochs sit far from the README's."""
    train = meta.get("config", {}).get("train", {})
    if not meta.get("command"):
        return []
    steps = f", at most {train['max_steps_per_epoch']} steps each" if train.get("max_steps_per_epoch") else ""
    return [f"trained by `{meta['command']}`: {train.get('epochs', '?')} epochs{steps}", ""]


def report_lines(report: dict, data: dict) -> list[str]:
    """reconstruction.md: per-record leads (meta.json's, as evaluate.py's report gives them: a database of its own may
    hold other leads in some records) and errors, their mean, and the codebook's health and bit rate."""
    leads = report.get("leads") or {}
    s = report["summary"]
    lines = [f"# VQ-VAE reconstruction on the {report['split']} split", "",
             f"checkpoint `{report['checkpoint']}` (sha256 {report['checkpoint_sha256']}), "
             f"{running.counted(s['records'], 'record')}, {running.counted(s['windows'], 'window')} of "
             f"{data['signals'].shape[1] / float(data['fs']):g} s, git {report['git_commit']}", "",
             *([f"made by `{report['command']}`", ""] if report.get("command") else []),
             *trained_line(report.get("trained", {})),
             "| record | leads | MSE (mV²) | PRD (%) | PRDN (%) |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r} | {', '.join(leads.get(r) or ['?'])} | {v['mse_mv2']:.5f} | {v['prd']:.2f} | {v['prdn']:.2f} |"
              for r, v in report["per_record"].items()]
    return lines + [f"| **mean over records** | | **{s['mse_mv2']:.5f}** | **{s['prd']:.2f}** | **{s['prdn']:.2f}** |",
                    "",
                    f"first codebook on these windows (training's codebook_health.png counts its epochs' own): "
                    f"perplexity {s['perplexity']:.1f}, codes used {100 * s['usage']:.0f}% of "
                    f"{s['codebook_size']}; "
                    f"compression ratio {s['compression_ratio']:.1f} against the records ({source_words(s)}; "
                    f"{s['compression_ratio_model_rate']:.1f} against {model_rate_words(s)} at the model's "
                    f"{int(data['fs'])} Hz), "
                    f"{s['bits_per_second']:.0f} bit/s in {running.counted(s['codebooks'], 'codebook')}"
                    f"{bits_assumed(s)}"]


def model_rate_words(s: dict) -> str:
    """The samples the model-rate ratio counts: the records' bits, or, when the records differ, their mean, which
    is no lead's and so is said to be a mean."""
    lo, hi = s["sample_bits_range"]
    return f"{s['sample_bits']:g}-bit samples" if lo == hi else f"samples of their mean {s['sample_bits']:.3g} bits"


def bits_assumed(s: dict) -> str:
    """The words a compression ratio of records whose bits per sample are unknown (an older meta.json) needs."""
    if not s["sample_bits_assumed"]:
        return ""
    return (f"; {s['sample_bits']:g} bits a sample (MIT-BIH's) are assumed: the prepared meta.json gives no bits of "
            f"these records (prepare them again to count their own)")


def seen_warnings(meta: dict, records: list[str], split: str) -> list[str]:
    """Records scored here that the VQ-VAE trained on, or chose its checkpoint on when the test split is scored:
    with record lists of one's own (load_split's any_records) a 'test' split may hold them, and be no test."""
    asked = {"validation": {"train_records": "trained on"},
             "test": {"train_records": "trained on", "validation_records": "chose its checkpoint on"}}.get(split, {})
    out = []
    for key, did in asked.items():
        if seen := patients_seen(records, meta.get(key, [])):
            out.append(f"the VQ-VAE {did} records {', '.join(seen)}, scored here too: if these are the same "
                       f"recordings, their figures are no {split} result")
    return out


@torch.no_grad()
def plot_examples(model: VQVAE, data: dict, split: str, prepared: str | None, out: Path, checkpoint: Path) -> None:
    """Four windows spread over the split against their reconstructions, each panel naming its record and lead, the
    title the checkpoint (as --record's figure names it)."""
    idx = fixed_indices(data, 4)
    x = data["signals"][idx].clone()
    plot_windows(x.numpy(), model(x.to(next(model.parameters()).device))[0].cpu().numpy(), float(data["fs"]), out,
                 f"the VQ-VAE of {paths.shown(checkpoint)}: {split} windows, original vs reconstruction",
                 window_titles(data, idx, stored_leads(prepared)))


PLOTTED = 4     # windows drawn against their reconstructions


def record_windows(signal: np.ndarray, start_s: float, seconds: float | None, window: int, fs: int,
                   record: str, offset: int = 0, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive windows [W, window, 2] of a record's `signal` from `start_s` for `seconds` (None: one window,
    inf: every whole window to the end; a part window left over is left out, said) and their starts in seconds;
    `signal` may hold the record's `length` samples from `offset` on only (read_record's span)."""
    n, at = length or len(signal), round(start_s * fs) if math.isfinite(start_s) else -1
    if at < 0:
        raise UserError(f"--start {start_s:g} s is not a time in the record (seconds from its beginning)")
    if n < window:
        raise UserError(f"{record} lasts {hundredths(n / fs, up=False)} s, shorter than the model's window of "
                        f"{window / fs:g} s")
    if n - at < window:
        raise UserError(f"--start {start_s:g} s leaves less than one window ({window / fs:g} s) of {record}, which "
                        f"lasts {hundredths(n / fs, up=False)} s; the last window starts at {(n - window) / fs:g} s")
    if seconds is not None and not seconds > 0:
        raise UserError(f"--seconds {seconds:g} must be positive, or 'end'")
    fit = (n - at) // window
    count = 1 if seconds is None else fit if math.isinf(seconds) else round(seconds * fs) // window
    if count < 1:
        raise UserError(f"--seconds {seconds:g} is shorter than one window of {window / fs:g} s")
    if count > fit:
        raise UserError(f"--seconds {seconds:g} from --start {start_s:g} s runs past the end of {record} "
                        f"({n / fs:.1f} s): {running.counted(fit, 'window')} of {window / fs:g} s fit, --seconds "
                        f"end takes them")
    if seconds is not None and math.isfinite(seconds) and round(seconds * fs) % window:
        running.note(f"--seconds {seconds:g} is no whole number of {window / fs:g} s windows: coding {count}, "
                     f"{count * window / fs:g} s")
    windows = signal[at - offset:at - offset + count * window].reshape(count, window, 2)
    if gaps := np.flatnonzero(~np.isfinite(windows).all((1, 2))).tolist():
        s = (at + gaps[0] * window) / fs
        raise UserError(f"{record}: the window {s:g}-{s + window / fs:g} s touches a gap of NaN/invalid or flat "
                        f"samples; {clean_spans(signal, at - offset, count * window, fs, offset)}")
    return windows, (at + window * np.arange(count)) / fs


def clean_spans(signal: np.ndarray, at: int, span: int, fs: int, offset: int) -> str:
    """The nearest --start before and after `at` from which `span` samples have no gap, said for an error as
    forecast.py says a clean context's (`signal`: the record's samples from `offset` on, read around `at`)."""
    from forecast import clean_start_times
    if said := [f"{s:g} s" for s in clean_start_times(signal, at, fs, offset, after=span)]:
        return f"the nearest clean --start for {span / fs:g} s: {' or '.join(said)}"
    return (f"no --start between {offset / fs:g} and {(offset + len(signal)) / fs:g} s (the part read) gives "
            f"{span / fs:g} s without gaps")


@torch.no_grad()
def code_windows(model: VQVAE, windows: np.ndarray) -> dict[str, np.ndarray]:
    """Each window [T, 2] in mV coded alone, as the forecaster codes a context and the README's recipe a window:
    codes [T', Q], continuous latents [T', D], gain [2] and reconstruction [T, 2] in mV, stacked over windows."""
    out: dict[str, np.ndarray] = {}
    for i, w in enumerate(tqdm(windows, desc="coding", unit="window", disable=None if len(windows) > 1 else True)):
        x = torch.from_numpy(w[None]).to(model.device)
        unit = model.unit(x)
        z = model.encode_latent(x, unit)
        codes = model.nearest_codes(z)
        for key, v in (("codes", as_levels(codes, len(model.quantizers))), ("latents", z.transpose(1, 2)),
                       ("gain", unit[:, 0]), ("reconstruction", model.decode(codes, unit))):
            if key not in out:      # filled in place: stacking a list of 28800 windows' held them twice
                out[key] = np.empty((len(windows), *v.shape[1:]), v.cpu().numpy().dtype)
            out[key][i] = v[0].cpu().numpy()
    return out


def record_span(start: float, seconds: float | None, data: DataConfig) -> tuple[int, int]:
    """The samples --start and --seconds ask for, so that only they are read ('end': past any record's end, which
    read_record reads to); record_windows checks them."""
    fs = data.samples_per_second
    at = round(start * fs) if math.isfinite(start) else 0
    end = at + (data.window_samples if seconds is None else round(seconds * fs) if math.isfinite(seconds) else 2 ** 62)
    return max(at, 0), max(end, 0)


def code_record(args: argparse.Namespace, model: VQVAE, data: DataConfig, checkpoint: Path,
                run_record: dict) -> Path:
    """--record: its windows coded one by one into one .npz (codes, latents, gains, reconstructions, the windows)
    and the first ones drawn against their reconstructions. `run_record` (the checkpoint's digest, the command and
    the commit, taken at the start) goes into the .npz with the record files' input hash, as forecast.py's .json
    gives them.
    Returns the .npz's path. The leads are those --leads names, else those the model's training data's reading
    chooses; the .npz's `leads` and the plot name them."""
    from forecast import read_model_record
    fs, start, seconds = data.samples_per_second, args.start or 0.0, args.seconds
    rec = read_model_record(args.record, data, record_span(start, seconds, data), args.leads)
    windows, starts = record_windows(rec.signal, start, seconds, data.window_samples, fs, args.record, rec.offset,
                                     rec.length)
    input_hash = record_hash(args.record)   # the files just read
    coded = code_windows(model, windows)
    staged = paths.staging_folder(paths.location("results", args.results))     # stopped or killed: no folder
    stem = f"{rec.name}_{starts[0]:.15g}s"
    try:
        paths.atomic_save_npz(staged / f"{stem}.npz", **coded, signal=windows, start_s=starts, fs=fs,
                              leads=rec.leads, record=args.record, checkpoint=str(checkpoint), input_hash=input_hash,
                              **run_record)
        titles = [tuple(f"record {rec.name} at {s:g} s, lead {k + 1}: {lead}" for k, lead in enumerate(rec.leads))
                  for s in starts[:PLOTTED]]
        plot_windows(windows[:PLOTTED], coded["reconstruction"][:PLOTTED], fs, staged / f"{stem}.png",
                     f"the VQ-VAE of {paths.shown(checkpoint)}: record {rec.name}, original vs reconstruction", titles)
        run = paths.publish_run_dir(staged, "vqvae_eval", args.results)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    npz, png = run / f"{stem}.npz", run / f"{stem}.png"
    resampled = f", its {rec.fs_in:g} Hz resampled to {fs} Hz" if rec.fs_in != fs else ""
    error, normalised = prd(coded["reconstruction"], windows), prdn(coded["reconstruction"], windows, axis=1)
    print(f"record {args.record} (leads {', '.join(rec.leads)}){resampled}: "
          f"{running.counted(len(windows), 'window')} of {data.window_samples / fs:g} s from {starts[0]:g} s, "
          f"reconstructed at PRD {error:.1f}%, PRDN {normalised:.1f}%")
    print(f"codes {list(coded['codes'].shape)}, latents {list(coded['latents'].shape)}: {npz}\nplot: {png}")
    return npz


def parse_seconds(value: str) -> float:
    """--seconds: a duration, or 'end' for every whole window to the record's end."""
    try:
        return math.inf if value == "end" else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither seconds nor 'end'") from None


def evaluate_split(args: argparse.Namespace, model: VQVAE, ckpt: dict, cfg: Config, checkpoint: Path, digest: str,
                   run: dict) -> dict:
    """--split: reconstruction.json and .md, naming the checkpoint by the `digest` of the bytes loaded, and the run by
    its command and the git commit at the start (`run`), and a PNG of examples. Returns the report."""
    data = load_split(args.split, cfg, args.prepared, any_records=True)   # a split of one's own is fine
    for warning in seen_warnings(ckpt["meta"], list(data["records"]), args.split):
        running.warn(warning)
    report = reconstruction_report(model, data, source_samples(data["records"], args.prepared))
    # the data hash as a training run's run.json gives it
    report.update(checkpoint=str(checkpoint), checkpoint_sha256=digest, split=args.split, **run,
                  data_hash=paths.run_data_hash(data), trained=ckpt["meta"],
                  leads={r: leads for r, leads in stored_leads(args.prepared).items() if r in report["per_record"]})
    lines = report_lines(report, data)
    staged = paths.staging_folder(paths.location("results", args.results))     # stopped or killed: no folder
    try:
        paths.atomic_write_json(report, staged / "reconstruction.json")
        paths.atomic_write_text("\n".join(lines) + "\n", staged / "reconstruction.md")
        plot_examples(model, data, args.split, args.prepared, staged / "reconstruction_examples.png", checkpoint)
        run = paths.publish_run_dir(staged, "vqvae_eval", args.results)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    print("\n".join(lines[-3:]))
    print(f"report: {run / 'reconstruction.md'}")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=paths.given_path,
                   help="VQ-VAE checkpoint, or a forecaster's for the VQ-VAE inside it, e.g. "
                   "pretrained/forecaster.pt, or a shipped model by name: pretrained, pretrained_sde "
                   "(default: newest checkpoints/vqvae-*/best.pt)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--split", default="validation", choices=["train", "validation", "test"],
                      help="prepared split (default validation)")
    what.add_argument("--record", type=paths.given_path,
                      help="code a WFDB record instead, its path without extension, e.g. ../shared/data/mitdb/100")
    p.add_argument("--start", type=float, help="with --record: the first window's start in seconds (default 0)")
    p.add_argument("--seconds", type=parse_seconds,
                   help="with --record: seconds to code in windows of the model's length, or 'end' (default: one window)")
    add_leads_flag(p, "with --record: the record's channels to code as lead 1 and lead 2, e.g. II V5 (names as in "
                   "its header; 'Lead II' or ii match II)", "the model's training data were")
    p.add_argument("--prepared", type=paths.given_path,
                   help="prepared tensors folder (default: $ECG_PREPARED_DIR or data/prepared)")
    p.add_argument("--checkpoints", type=paths.given_path,
                   help="checkpoints root for the default checkpoint (default: $ECG_CHECKPOINTS_DIR "
                   "or checkpoints)")
    p.add_argument("--results", type=paths.given_path, help="results root (default: $ECG_RESULTS_DIR or results)")
    args = p.parse_args(argv)
    if args.record is None and (args.start is not None or args.seconds is not None):
        p.error("--start and --seconds go with --record")
    if args.leads and args.record is None:
        p.error(f"--leads {' '.join(args.leads)} chooses the channels read from --record; a prepared split holds the "
                f"leads it was prepared with (its meta.json names each record's)")
    if args.record and args.prepared:
        p.error("--prepared goes with --split: --record reads the record itself")
    return args


def main(argv: list[str] | None = None) -> dict | Path:
    args = parse_args(argv)
    asked_leads(args.leads)     # before the model loads: a bad --leads fails at once
    run = {"command": paths.script_command("vqvae_eval.py", argv, ("prepared", "results", "checkpoints")),
           "git_commit": paths.git_commit()}   # the code that runs, whatever the tree holds when the report is written
    path = (paths.given_checkpoint(args.checkpoint, "--checkpoint", VQVAE_TAKES) if args.checkpoint
            else latest_checkpoint("vqvae", args.checkpoints))
    model, ckpt, digest = read_vqvae(path)      # the weights coded with: best.pt changes while its run goes on
    cfg = stored_config(ckpt["config"], f"config stored in {path}")
    paths.check_writable(paths.location("results", args.results), keep=False)     # before the coding, not after
    if args.record:
        return code_record(args, model, cfg.data, path, {"checkpoint_sha256": digest, **run})
    return evaluate_split(args, model, ckpt, cfg, path, digest, run)


if __name__ == "__main__":
    running.run_main(main)
