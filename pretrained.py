"""Pack a trained forecaster into pretrained/ and record the reference forecasts the tests check it against.

    python3 pretrained.py --checkpoint checkpoints/pretrained/transformer-<time>/best.pt
    python3 pretrained.py --checkpoint checkpoints/pretrained/latent_sde_crps-<time>/best.pt
    python3 pretrained.py --references      # both shipped models' reference forecasts again, by today's code

`make pretrained` and `make pretrained-sde` run this after training from scratch. A Transformer goes to
pretrained/forecaster.pt, a latent SDE to pretrained/latent_sde.pt (paths.SHIPPED). The shipped file keeps
the weights, configs and provenance (seed, git commit, data hash, commands, training minutes) and drops
optimiser and RNG state, so it stays small and loads with torch.load(..., weights_only=True). From Python,
main(["--checkpoint", ...]) takes the flags as a list and returns the shipped file's path (with --references, the
first reference file's).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import paths
import running
from forecast import Forecaster, ForecasterBase, forecast_record
from paths import SHIPPED
from train_results import TRAINING_STATE, MetricsLog, load_checkpoint

# Two DS2 test records and start times the test forecasts; figures are recorded at packing time.
REFERENCE_CASES = (("100", 60.0), ("233", 300.0))
REFERENCE_SAMPLES, REFERENCE_SEED = 100, 0


def training_minutes(run_dir: str | None) -> float:
    """Sum of the per-epoch wall times a run logged in its metrics.csv (0 when the run folder is gone)."""
    rows = MetricsLog(Path(run_dir) / "metrics.csv").read() if run_dir else []
    return sum(float(row["seconds"]) for row in rows) / 60


def reference_path(model: str) -> Path:
    """Where a shipped model's reference forecasts live: beside it, named after its file."""
    return SHIPPED[model].with_suffix(".reference.json")


def pack(ckpt: dict, vqvae_run_dir: str | None, tuned_from_run_dir: str | None = None) -> dict:
    """The checkpoint without training-only state, plus what the model card needs to know. A checkpoint
    packed before (a shipped model whose sampling settings were changed) keeps the record it has. The
    forecaster's minutes include the run it was fine-tuned from (latent_sde_train.py --crps-from)."""
    out = {k: v for k, v in ckpt.items() if k not in TRAINING_STATE}
    minutes = training_minutes(ckpt.get("run_dir")) + training_minutes(tuned_from_run_dir)
    out.setdefault("pretrained", {"forecaster_minutes": round(minutes, 1),
                                  "vqvae_minutes": round(training_minutes(vqvae_run_dir), 1),
                                  "packed_at_commit": paths.git_commit()})
    return out


def forecast_figures(fc: ForecasterBase, record: Path, start_s: float) -> dict:
    """Summary figures of one seeded forecast: what the shipped-model test compares."""
    res = forecast_record(fc, str(record), start_s, None, REFERENCE_SAMPLES, REFERENCE_SEED)
    samples, truth = res["samples"], res["truth"]
    mean = samples.mean(0, dtype=np.float64)
    per_lead = {"mean_path_rms_mV": np.sqrt((mean ** 2).mean(0)),
                "sample_std_mV": samples.std(0, dtype=np.float64).mean(0)}
    return {"record": record.name, "start_s": start_s,
            **{k: [round(float(v), 6) for v in x] for k, x in per_lead.items()},
            "mse_of_mean_mV2": round(float(((mean - truth) ** 2).mean()), 6)}


def reference_figures(fc: ForecasterBase, mitdb: Path) -> list[dict]:
    """The figures of every REFERENCE_CASES forecast, from the MIT-BIH records in `mitdb`."""
    return [forecast_figures(fc, mitdb / name, start) for name, start in REFERENCE_CASES]


def run_dir_of(ckpt_path: str | None) -> str | None:
    """The run folder a checkpoint was trained in, when the checkpoint is still there."""
    return load_checkpoint(ckpt_path).get("run_dir") if ckpt_path and Path(ckpt_path).is_file() else None


def vqvae_checkpoint_of(meta: dict) -> str | None:
    """The checkpoint a forecaster's VQ-VAE was trained in: a fine-tuning's vqvae_checkpoint is the run it started
    from, whose own record (started_from) names the VQ-VAE's; older fine-tunings named the VQ-VAE's themselves."""
    while "started_from" in meta:
        meta = meta["started_from"]["meta"]
    return meta.get("vqvae_checkpoint")


def check_mitdb(folder: Path) -> Path:
    """The reference forecasts read MIT-BIH records: fail before anything is written when they are not there."""
    missing = [name for name, _ in REFERENCE_CASES if not (folder / f"{name}.hea").is_file()]
    if missing:
        raise paths.UserError(f"{folder} lacks MIT-BIH record(s) {', '.join(missing)} for the reference forecasts: "
                              "give --mitdb or $MITBIH_DIR")
    return folder


def ship(packed: dict, out: Path, ref_path: Path, mitdb: Path, commit: str, again: str) -> None:
    """The packed model as `out` and its reference forecasts on `mitdb` as `ref_path`, both made whole beside the
    shipped pair, then renamed over it: a stop while writing them (Ctrl-C, a full disk) leaves the shipped pair as it
    was, never new weights beside the old model's references. `again`: how to go on, if stopped between the renames;
    stopped just after the last, the pair is said whole."""
    out.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".packing-", dir=out.parent) as tmp:
        new, new_ref = Path(tmp) / out.name, Path(tmp) / ref_path.name
        paths.atomic_torch_save(packed, new)
        fc = Forecaster.from_checkpoint(new, device="cpu")
        paths.atomic_write_json(reference_record(fc, new, mitdb, commit), new_ref)
        paths.moved_in([(new, out), (new_ref, ref_path)], out.parent, again)


def reference_record(fc: ForecasterBase, checkpoint: Path, mitdb: Path, commit: str) -> dict:
    """The reference forecasts of `fc`, loaded from `checkpoint`, and which weights and code made them: the shipped
    file may be packed again (its sampling settings), and the code that forecasts may change."""
    return {"samples": REFERENCE_SAMPLES, "seed": REFERENCE_SEED, "model": fc.name,
            "checkpoint_sha256": paths.file_sha256(checkpoint), "git_commit": commit,
            "cases": reference_figures(fc, mitdb)}


def write_references(mitdb: Path, commit: str) -> list[Path]:
    """Both shipped models' reference forecasts made again from the files as shipped, after a change to the code
    that forecasts (drafts, sampling): the test holds a model to figures today's code gives, and to its file."""
    out = []
    for model, checkpoint in SHIPPED.items():
        fc = Forecaster.from_checkpoint(checkpoint, device="cpu")
        paths.atomic_write_json(reference_record(fc, checkpoint, mitdb, commit), reference_path(model))
        out.append(reference_path(model))
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=paths.given_path, help="forecaster best.pt (Transformer or latent SDE)")
    what.add_argument("--references", action="store_true",
                      help="write the shipped models' reference forecasts again from the files as shipped")
    p.add_argument("--mitdb", default=str(paths.location("data")), type=paths.given_path,
                   help=f"MIT-BIH folder for the reference forecasts (default: {paths.DATA_DEFAULT})")
    args = p.parse_args(argv)
    commit = paths.git_commit()     # the code that runs, whatever the tree holds when the references are written
    mitdb = check_mitdb(Path(args.mitdb))
    if args.references:
        written = write_references(mitdb, commit)
        print("reference forecasts -> " + ", ".join(str(p) for p in written))
        return written[0]
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt["kind"] not in SHIPPED:
        raise paths.UserError(f"{args.checkpoint} holds a '{ckpt['kind']}' model, not a forecaster")
    out, ref_path = SHIPPED[ckpt["kind"]], reference_path(ckpt["kind"])
    packed = pack(ckpt, run_dir_of(vqvae_checkpoint_of(ckpt["meta"])), run_dir_of(ckpt["meta"].get("crps_from")))
    again = f"run {paths.script_command('pretrained.py', argv)} again"
    ship(packed, out, ref_path, mitdb, commit, again)
    print(f"packed {args.checkpoint} -> {out} ({out.stat().st_size / 2 ** 20:.1f} MiB), "
          f"reference forecasts -> {ref_path}")
    return out


if __name__ == "__main__":
    running.run_main(main)
