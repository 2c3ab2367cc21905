"""Run a *_train.py main() unchanged, with test-only hooks patched in from outside (never in the scripts).

    python tests/train_harness.py [--pause-at-step N] [--pause-in-save EPOCH] [--dump-state DIR] \
        SCRIPT -- SCRIPT_ARGS...

--pause-at-step N    after N optimiser steps, in the middle of the next one, print PAUSED and sleep (kill me)
--pause-in-save E    while writing last.pt of epoch E, leave the temporary file half written, print PAUSED
                     and sleep (kill me)
--dump-state DIR     after training, every rank saves the state_dict it holds to DIR/rank<R>.pt
--dump-rng DIR       every rank saves its torch RNG state at each epoch's first step to DIR/rng<R>.pt
--signal-at-step R N SIG   rank R alone sends itself SIG (SIGTERM, SIGINT, SIGKILL) after N optimiser steps, in
                           the next one
--fail-once R N MARKER    rank R raises a RuntimeError after N optimiser steps, in the next one, unless the file
                           MARKER exists, which it makes: a torchrun restart of the same command runs through
--val-losses L1,L2,...     epoch e's validation loss is Le on every rank, as all-reduced (the model's is dropped)
--stall-loading            vqvae_train's loader workers (train.num_workers > 0) hang in the training set's
                           __getitem__ from epoch 2 on, as on a hung network file system, printing STALLED first
Works under torchrun too. One CPU thread, like the in-process tests, so runs compare bit for bit.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import running  # noqa: E402
import training  # noqa: E402


def pause() -> None:
    print("PAUSED", flush=True)
    time.sleep(600)
    raise SystemExit("harness: nobody killed me")


def after_loss_check(rank: int | None, step: int, act) -> None:
    """act() once the trainer has checked the loss of `step`, on rank `rank` (None: every rank)."""
    real_check = training.Trainer._check_finite

    def check_then_act(self, values, what="loss or gradient norm"):
        real_check(self, values, what)
        if (rank is None or self.rt.rank == rank) and self.step == step and what.startswith("loss"):
            act()

    training.Trainer._check_finite = check_then_act


def fail_once(marker: Path) -> None:
    """A worker failing the first time only (the marker file says it did), as a torchrun restart then runs through."""
    with contextlib.suppress(FileExistsError):
        marker.touch(exist_ok=False)
        raise RuntimeError("harness: failing once")


def stall_loading() -> None:
    """vqvae_train's training windows, read in a loader worker from the second epoch on, never come."""
    import vqvae_train

    real_item = vqvae_train.RandomCrops.__getitem__

    def item_or_stall(self, i):
        if self.epoch >= 1 and torch.utils.data.get_worker_info() is not None:
            os.write(1, b"STALLED\n")     # one write: print's text and newline are two unbuffered (PYTHONUNBUFFERED),
            time.sleep(600)                # and two workers' made 'STALLEDSTALLED', a line the test waited for in vain
        return real_item(self, i)

    vqvae_train.RandomCrops.__getitem__ = item_or_stall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pause-at-step", type=int)
    p.add_argument("--pause-in-save", type=int)
    p.add_argument("--dump-state")
    p.add_argument("--dump-rng")
    p.add_argument("--signal-at-step", nargs=3, metavar=("RANK", "STEP", "SIGNAL"))
    p.add_argument("--fail-once", nargs=3, metavar=("RANK", "STEP", "MARKER"))
    p.add_argument("--val-losses")
    p.add_argument("--stall-loading", action="store_true")
    p.add_argument("script", help="module name, e.g. vqvae_train")
    args, rest = p.parse_known_args()
    rest = rest[1:] if rest[:1] == ["--"] else rest
    torch.set_num_threads(1)

    if args.pause_at_step is not None:
        after_loss_check(None, args.pause_at_step, pause)
    if args.signal_at_step:
        rank, step, name = args.signal_at_step
        after_loss_check(int(rank), int(step), lambda: os.kill(os.getpid(), getattr(signal, name)))
    if args.fail_once:
        rank, step, marker = args.fail_once
        after_loss_check(int(rank), int(step), lambda: fail_once(Path(marker)))

    if args.stall_loading:
        stall_loading()

    if args.pause_in_save is not None:
        real_save = torch.save

        def save_half_then_pause(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            name = str(getattr(f, "name", f))       # atomic_torch_save hands torch.save an open file
            if isinstance(obj, dict) and obj.get("epoch") == args.pause_in_save and ".last.pt." in name:
                f.flush()
                os.truncate(name, os.path.getsize(name) // 2)
                pause()

        torch.save = save_half_then_pause

    if args.dump_state:
        real_fit = training.Trainer.fit

        def fit_then_dump(self, resume=None, ckpt=None):
            row = real_fit(self, resume, ckpt)
            out = Path(args.dump_state)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(training.unwrap(self.model).state_dict(), out / f"rank{self.rt.rank}.pt")
            return row

        training.Trainer.fit = fit_then_dump

    if args.dump_rng:
        real_epoch = training.Trainer._train_epoch
        states = []

        def epoch_noting_rng(self, model):
            real_step = self.step_fn

            def first_step(m, batch):
                self.step_fn = real_step
                states.append(torch.get_rng_state())     # read, not drawn: the run goes on unchanged
                return real_step(m, batch)
            self.step_fn = first_step
            row = real_epoch(self, model)
            out = Path(args.dump_rng)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(torch.stack(states), out / f"rng{self.rt.rank}.pt")
            return row

        training.Trainer._train_epoch = epoch_noting_rng

    if args.val_losses:
        losses = [float(v) for v in args.val_losses.split(",")]
        real_validate = training.Trainer.validate

        def scripted_validate(self, model):
            return {**real_validate(self, model), "loss": losses[self.epoch]}

        training.Trainer.validate = scripted_validate

    script = importlib.import_module(args.script)
    running.run_main(lambda: script.main(rest))


if __name__ == "__main__":
    main()
