"""One generic trainer for every *_train.py: CPU, one GPU, DataParallel, or DDP under torchrun.

The model-specific parts come in as functions: `step_fn(model, batch) -> (loss, metrics)` and
`epoch_end(model, epoch, is_main) -> metrics`. Everything else (optimiser, schedule, clipping, AMP,
validation, checkpoints, exact resume, logging on rank 0) lives here once.

Under torchrun, train.batch_size is the global batch: each of N processes takes batch_size / N windows
of the same seeded permutation (DistributedSampler), gradients and metrics are averaged over the
processes, and a model without dropout follows the single-process run with that batch up to float
rounding. Rank 0 draws as a single process would, and checkpoints (end of every epoch, atomic) hold its
RNG state, so --resume after a kill redoes the interrupted epoch exactly as the uninterrupted run did it;
rank r reseeds from (seed, epoch, r) at every epoch's start.

It also holds what every *_train.py's main shares: its flags (run_parser), joining the process group before any
file is read (setup_runtime), the checkpoint it resumes (load_resume), its folders and run.json record, and
training_main, which drops a new run's unused folders and says how to resume a stopped run.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import itertools
import json
import math
import multiprocessing
import os
import random
import shlex
import shutil
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import paths
import running
from hyper_params import BEYOND_INT_LIMIT, INT_LIMIT, MAX_COPIES, TrainConfig
from paths import UserError, check_device
from train_results import (TRAINING_STATE, MetricsLog, check_same_config, float32_default, load_checkpoint,
                           load_weights, plot_codebook_health, plot_loss_curves, read_checkpoint, save_checkpoint)

StepFn = Callable[[nn.Module, object], tuple[torch.Tensor, dict]]
EpochEndFn = Callable[[nn.Module, int, bool], dict]
TRAINING_SECTIONS = ("train", "crps")     # a config's training settings: a resumed run may change them
TRAIN_FLAGS = {"epochs": "train.epochs", "max_steps": "train.max_steps_per_epoch",     # run_parser's overrides
               "batch_size": "train.batch_size", "seed": "train.seed"}
DIST_TIMEOUT_ENV, DIST_TIMEOUT_DEFAULT_S = "ECG_DIST_TIMEOUT", 600


def _model_sections(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The sections a resume must keep as they were: the training ones (--epochs to go further) may change."""
    return tuple(k for k in config if k not in TRAINING_SECTIONS)


@dataclass
class Runtime:
    """Where this process runs: rank and world size under torchrun, else a single process; and the checkout's
    commit as it started (paths.git_commit), which run.json records: taken there, after the windows were read and
    encoded (minutes), it named a tree edited meanwhile, not the code that ran."""
    device: torch.device
    rank: int = 0
    world: int = 1
    commit: str = field(default_factory=paths.git_commit)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def data_parallel(self) -> bool:
        """One process, several GPUs, no card named: the trainer splits each batch with nn.DataParallel."""
        return not self.distributed and self.device == torch.device("cuda") and torch.cuda.device_count() > 1


def setup_runtime(device: str | None = None) -> Runtime:
    """Join the torchrun process group when launched by torchrun (NCCL on GPUs, gloo on CPU). A script calls it
    before it reads a file (--resume, --vqvae, --config): a rank whose node lacks one failed before joining, and
    the others waited in init_process_group for $ECG_DIST_TIMEOUT (10 minutes) when no torchrun agent stops them
    (srun); failing in the group, it leaves them word (running.leave_word), which they say at their next collective."""
    commit = paths.git_commit()     # the code that runs, whatever the tree holds once the data are read
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), local_rank()
    device = _begun().device = check_device(device)       # before the GPU test: a typo is an error on any machine
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")   # cpu:0 too
    if world > 1:
        if "TORCHELASTIC_RUN_ID" in os.environ:     # set by torchrun for its workers
            running.stop_when_orphaned()
        return Runtime(_rank_device(device, use_cuda, rank, local, world), rank, world, commit)
    dev = torch.device(device if device else ("cuda" if use_cuda else "cpu"))
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)      # pinned batches and new tensors on the card asked for, not card 0
    return Runtime(dev, commit=commit)


def _rank_device(device: str | None, use_cuda: bool, rank: int, local: int, world: int) -> torch.device:
    """A torchrun rank's device, the process group joined: the GPU of its local rank, or the CPU."""
    per_node, visible = os.environ.get("LOCAL_WORLD_SIZE"), torch.cuda.device_count()
    # one visible card per process is a scheduler's way (CUDA_VISIBLE_DEVICES per task): each uses its own;
    # without CUDA_VISIBLE_DEVICES a single card is the node's only one, and NCCL refuses two ranks on it
    # ('Duplicate GPU detected') at the first collective, in a traceback per rank
    shared = visible > 1 or "CUDA_VISIBLE_DEVICES" not in os.environ
    if use_cuda and shared and per_node and int(per_node) > visible:   # the same on every rank: rank 0 says it
        raise UserError(f"torchrun started {per_node} processes per node but only {visible} "
                        "GPU(s) are visible: lower --nproc_per_node, or pass --device cpu")
    if use_cuda and shared and local >= visible:    # a launcher without LOCAL_WORLD_SIZE (srun): this rank's own
        raise UserError(f"local rank {local} has no GPU of its own: its node shows {visible}; start fewer "
                        "processes per node, or pass --device cpu")
    if not dist.is_initialized():
        join_process_group("nccl" if use_cuda else "gloo", rank, world)
    if not use_cuda:
        return torch.device("cpu")
    dev = torch.device("cuda", local if visible > 1 else 0)
    torch.cuda.set_device(dev)
    if rank == 0 and torch.device(device or "cuda").index is not None:
        running.note(f"--device {device}: under torchrun each process takes the card of its local rank "
                     f"(rank 0: {dev}); CUDA_VISIBLE_DEVICES chooses which cards a node offers")
    return dev


def local_rank() -> int:
    """The process's index on its node: torchrun's LOCAL_RANK, else srun's SLURM_LOCALID. A job script that exports
    RANK and WORLD_SIZE for srun but not LOCAL_RANK put every rank of a node on its first card (NCCL: 'Duplicate
    GPU detected')."""
    return int(os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID") or "0")


def dist_timeout() -> datetime.timedelta:
    """How long a process waits for the others to join or to meet it in a collective ($ECG_DIST_TIMEOUT seconds,
    default 10 minutes): a rank that failed before joining, or stopped short of a collective, then ends the others'
    wait with an error instead of torch's 30 minutes (gloo), or for ever when no torchrun agent stops them (a
    launcher of a scheduler's, or a rank on another node)."""
    raw = os.environ.get(DIST_TIMEOUT_ENV, str(DIST_TIMEOUT_DEFAULT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    try:
        if 0 < seconds < float("inf"):
            return datetime.timedelta(seconds=seconds)
    except OverflowError:       # beyond timedelta's 10**9 days
        pass
    raise UserError(f"{DIST_TIMEOUT_ENV}={raw!r}: give the seconds a process waits for the others, e.g. "
                    f"{DIST_TIMEOUT_DEFAULT_S}")


def join_process_group(backend: str, rank: int, world: int) -> None:
    """init_process_group with dist_timeout(): a process whose partners never come says so, and stops."""
    timeout = dist_timeout()
    try:
        # a stop then ends a rank whose partners never come at once, not after the timeout; run_main ends a rank of
        # several by os._exit (running._exit), the thread still waiting
        running.in_thread(lambda: dist.init_process_group(backend, timeout=timeout), "join_process_group")
    except dist.DistStoreError as e:        # the wait timed out
        raise UserError(f"rank {rank}: not all {world} processes joined within {timeout.total_seconds():g} s "
                        f"({DIST_TIMEOUT_ENV}); did another one fail before joining? ({str(e).splitlines()[0]})") from e
    except dist.DistError as e:             # no wait at all: the address is taken or unreachable
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise UserError(f"rank {rank}: could not set up the process group at MASTER_ADDR:MASTER_PORT {where} "
                        f"({str(e).splitlines()[0]}); another run may hold the port: give torchrun another "
                        f"--master-port") from e


def main_first(rt: Runtime, compute: Callable[[], Any]) -> Any:
    """`compute` on rank 0 before the other ranks start it, then on each other node's first process (local rank 0)
    before the rest of its node: an encoding it caches is then made once, and the other ranks read it. A node that
    does not share rank 0's cache (ECG_CACHE_DIR or the prepared folder on its own disk) makes its own copy once,
    which its other ranks read (when only rank 0 went first, each of them encoded it, all at once). A rank whose
    cache could not be written computes it itself. They wait on a group of their own with a long timeout: encoding
    a large database outlasts the default group's. A longer $ECG_DIST_TIMEOUT is kept: a database that takes longer
    to encode stopped the other ranks at 6 h."""
    if not rt.distributed:
        return compute()
    group = dist.new_group(backend="gloo", timeout=max(datetime.timedelta(hours=6), dist_timeout()))
    turn = 0 if rt.is_main else 1 if local_rank() == 0 else 2
    out = None
    for now in range(3):
        if now == turn:
            out = compute()
        if now < 2:         # the last turn's ranks wait for no one after them
            dist.barrier(group=group)
    dist.destroy_process_group(group)
    return out


def barrier(rt: Runtime) -> None:
    """Every rank waits here for the others. Under NCCL on this rank's card, named: unnamed, torch guesses the card
    and warns on rank 0 ('barrier(): using the device under current context'), a line in every GPU run's output."""
    if rt.device.type == "cuda":
        dist.barrier(device_ids=[rt.device.index])
    else:
        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of a stream of draws (a DDP rank, a DataParallel card) for one epoch: its own, and the same again
    when a resume redoes the epoch."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def seed_replica_cards(model: nn.Module, seed: int, epoch: int) -> None:
    """Under nn.DataParallel each replica draws from its own card's generator, and torch.manual_seed seeds every
    card alike: left so, the replicas would draw the same dropout masks and the same latent SDE noise for their
    shares of each batch. The first card draws as one GPU would; card k reseeds from (seed, epoch, k) at every
    epoch's start, as rank k does under DDP, so a resume draws them again."""
    if isinstance(model, nn.DataParallel):
        for card in model.device_ids[1:]:
            torch.cuda.default_generators[card].manual_seed(epoch_seed(seed, epoch, card))


def rng_state(device: torch.device = torch.device("cpu")) -> dict:
    """The generators' states, with the CUDA card this process draws on (`device`)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "cuda_card": device.index or 0,
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
            "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()]}


def set_rng_state(state: dict, device: torch.device = torch.device("cpu")) -> None:
    """Restore the generators for a run on `device`: every card's state when one process drives them all
    (DataParallel) on as many cards as before, else the saved process's card's state for this one, so a run
    resumes on fewer or other cards too. Under DDP only rank 0's state matters: the other ranks reseed at
    every epoch's start (Trainer._train_epoch)."""
    torch.set_rng_state(state["torch"])
    cuda, card = state["cuda"], state.get("cuda_card", 0)
    if device.type == "cuda" and cuda:
        if device.index is None and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        elif card < len(cuda):
            torch.cuda.set_rng_state(cuda[card], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 10% of the peak learning rate, reached at step `total`: one past a run's
    last step, which takes a little more (10.01% of the peak in a run of 200 steps)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def run_warmup(warmup: int, total: int) -> int:
    """The warm-up steps of a run of `total` steps: at most a quarter of it, or a short run (make demo's 120
    steps against the Transformer's 200) would never reach its peak learning rate, nor decay from it."""
    return min(warmup, total // 4)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (DDP, nn.DataParallel)) else model


@dataclass(frozen=True)
class Pooled:
    """A metric of counts pooled over the epoch's batches and all ranks, then `figure(counts)` (e.g. the perplexity
    of the codes used): a mean of per-batch figures would change with the batches, hence with the processes."""
    counts: torch.Tensor
    figure: Callable[[torch.Tensor], torch.Tensor | float]

    def __add__(self, other: Pooled) -> Pooled:
        return Pooled(self.counts.double() + other.counts.double(), self.figure)     # float32 counts stop at 2**24


def _all_reduce_mean(values: dict[str, float | Pooled], weight: float, rt: Runtime) -> dict[str, float]:
    """Weighted average of metric sums over ranks (weight = samples seen on this rank); a Pooled metric's figure
    of its counts summed over ranks."""
    keys = sorted(k for k, v in values.items() if not isinstance(v, Pooled))
    pooled = sorted(k for k, v in values.items() if isinstance(v, Pooled))
    t = torch.cat([torch.tensor([values[k] for k in keys] + [weight], dtype=torch.float64),
                   *(values[k].counts.detach().double().cpu().flatten() for k in pooled)])
    if rt.distributed:
        t = t.to(rt.device) if rt.device.type == "cuda" else t
        dist.all_reduce(t)
        t = t.cpu()
    total = max(float(t[len(keys)]), 1e-12)
    out = {k: float(v) / total for k, v in zip(keys, t[:len(keys)])}
    start = len(keys) + 1
    for k in pooled:
        size = values[k].counts.numel()
        out[k] = float(values[k].figure(t[start:start + size]))
        start += size
    return out


WAIT_CHECK_S = 1.0      # a wait for a loader worker's batch asks this often whether a stop was swallowed meanwhile


@contextlib.contextmanager
def loader_batches(loader: DataLoader) -> Iterator[Iterator]:
    """iter(loader), its worker processes started deaf to SIGTERM and Ctrl-C (running.stops_held): a stop sent to
    every process of the job is the trainer's to say, once. Its workers end with it however it ends (a stop, an
    error, the epoch's last step), killed here in plain code, whole (_end_workers): left to the iterator's __del__,
    torch's shutdown left those stuck in a read alive, to hold the process's exit, and a stop that came while it ran
    was swallowed. A stop swallowed elsewhere is raised while a batch is waited for (_asking_for_stops), not only
    before the next step: with the workers stuck, no step came, and the run went on waiting without end. Workers are
    started anew each time: a loader with persistent_workers would be handed killed ones."""
    if not loader.num_workers:
        yield iter(loader)
        return
    if loader.persistent_workers:
        raise ValueError("loader_batches ends a loader's workers with each loop: persistent_workers=True would have "
                         "the next loop read from killed ones")
    made: list = []
    before = set(multiprocessing.active_children())

    def end(error: BaseException | None = None) -> None:
        _end_workers(made[0] if made else _being_made(error), before)
    try:
        running.stops_held(lambda: made.append(_asking_for_stops(iter(loader))))
        yield made[0]
    except BaseException as e:
        running.stops_held(functools.partial(end, e), raise_held=False)
        raise
    running.stops_held(end)


def _being_made(error: BaseException | None) -> Any:
    """The iterator iter(loader) was making when `error` came (a sampler's bug), from its __init__'s frame: lost with
    its workers' pids in torch's SIGCHLD watch, which raised their deaths over `error` once they were killed
    ('DataLoader worker is killed by signal'), or printed them as its __del__ shut them down again."""
    tb = error.__traceback__ if error is not None else None
    while tb is not None:
        made = tb.tb_frame.f_locals.get("self")
        if isinstance(made, _MultiProcessingDataLoaderIter) and hasattr(made, "_workers"):
            return made
        tb = tb.tb_next
    return None


def _asking_for_stops(batches: Any) -> Any:
    """The iterator, its wait for a batch (torch's _try_get_data, in a loop of 5 s waits) asking
    running.raise_if_signalled every WAIT_CHECK_S: a SIGTERM or Ctrl-C that came while Python ran a __del__ or a
    weakref callback was swallowed there, and went unsaid while workers stuck in a read sent no batch. A loader's own
    timeout is its own: torch passes it, and it is kept. The wait holds the iterator weakly: a cycle would keep it,
    its pipes and its workers' sentinels open, until a full garbage collection ('Too many open files' after some
    epochs)."""
    wait, batches_ref = type(batches)._try_get_data, weakref.ref(batches)

    def asking(timeout: float = WAIT_CHECK_S) -> tuple[bool, Any]:
        running.raise_if_signalled()
        return wait(batches_ref(), timeout)
    batches._try_get_data = asking
    return batches


def _end_workers(batches: Any, before: set) -> None:
    """The workers of an iterator (when iter(loader) failed before it listed them: the processes started since `before`)
    killed, then it shut down: torch asks them to end and waits 5 s for each one stuck in a read (a hung network file
    system), sends it SIGTERM, which it blocks, and waits 5 s more; multiprocessing then waited for them without end
    as Python exited. The pin-memory thread (CUDA) ends first, not to read a batch of a worker killed meanwhile; the
    workers' pids leave torch's SIGCHLD watch, which would raise their deaths here ('DataLoader worker exited
    unexpectedly'). These are torch's own attributes, not public: requirements.txt pins the torch it is tested with."""
    if batches is not None and not batches._shutdown:
        if hasattr(batches, "_pin_memory_thread"):
            batches._pin_memory_thread_done_event.set()
            batches._worker_result_queue.put((None, None))
            batches._pin_memory_thread.join()
        if batches._worker_pids_set:
            torch.utils.data._utils.signal_handling._remove_worker_pids(id(batches))
            batches._worker_pids_set = False
    workers = batches._workers if batches is not None else set(multiprocessing.active_children()) - before
    for worker in workers:
        worker.kill()
    if batches is not None:
        batches._shutdown_workers()


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _batch_len(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    return _batch_len(batch[0])


def _add_batch(sums: dict[str, float | Pooled], batch: Any, loss: torch.Tensor, metrics: dict) -> int:
    """Add a batch's loss and metrics to the epoch's sums, each weighted by the batch's windows (so an epoch's
    mean counts every window once, a short last batch too), a Pooled metric's counts as they are; returns how
    many windows that was."""
    n = _batch_len(batch)
    for k, v in {"loss": loss, **metrics}.items():
        if isinstance(v, Pooled):
            sums[k] = sums[k] + v if k in sums else v
        else:
            sums[k] = sums.get(k, 0.0) + float(v) * n
    return n


def _gathered(loss: torch.Tensor, metrics: dict, sizes: list[int] | None = None) -> tuple[torch.Tensor, dict]:
    """A model under nn.DataParallel returns one value per GPU, gathered into a vector: average them, each
    weighted by the windows its GPU had (`sizes`, see _replica_sizes), so an uneven split counts every window once."""
    def mean(v: torch.Tensor) -> torch.Tensor:
        if sizes is None or v.ndim != 1 or len(v) != len(sizes):
            return v.float().mean()
        w = torch.tensor(sizes, dtype=torch.float32, device=v.device)
        return (v.float() * w).sum() / w.sum()
    return mean(loss), {k: mean(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


def _replica_sizes(model: nn.Module, batch: Any) -> list[int] | None:
    """The windows of `batch` each GPU gets under nn.DataParallel, which splits it with torch.chunk: the last
    share is smaller when the GPUs do not divide the batch, and a small batch fills fewer GPUs."""
    if not isinstance(model, nn.DataParallel):
        return None
    return [len(c) for c in torch.empty(_batch_len(batch)).chunk(len(model.device_ids))]


class Trainer:
    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset, step_fn: StepFn,
                 settings: TrainConfig, run_dir: Path, ckpt_dir: Path, config: dict, meta: dict,
                 rt: Runtime, kind: str, epoch_end: EpochEndFn | None = None,
                 summarize: Callable[[dict], dict] | None = None, shown: tuple[str, ...] = (),
                 extras: dict | None = None, loss_name: str = "loss"):
        """`step_fn(model, batch) -> (loss, metrics)` gets the model as wrapped for DDP or DataParallel: it must
        call model(...) and nothing else of it (a method of the bare module would skip DDP's gradient sync).
        `settings`: the config's train section. `config`: the whole config as a dict, stored in checkpoints;
        a resume refuses another one, its training sections aside. `meta`: run_record's (run.json; its records
        and data hash are checked on resume). `kind` names the model in its checkpoints (load_checkpoint(path,
        kind) refuses another). `epoch_end(model, epoch, is_main)` gets the bare model after validation
        (plots; metrics it returns join the row); `summarize(row)` adds metrics computed from the row; `shown`:
        the row's keys printed each epoch; `extras`: whatever else rebuilds the model from a checkpoint."""
        self.s, self.rt, self.kind = settings, rt, kind
        self.step_fn, self.epoch_end, self.summarize = step_fn, epoch_end, summarize
        self.run_dir, self.ckpt_dir = Path(run_dir), Path(ckpt_dir)
        self.config, self.meta, self.extras, self.loss_name = config, meta, extras or {}, loss_name
        if rt.distributed:
            check_same_data(meta.get("data_hash"), len(train_set), len(val_set))
        self.make_loaders(train_set, val_set)
        self.steps_per_epoch = len(self.train_loader)
        if settings.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, settings.max_steps_per_epoch)
        self.model = self._bare(model).to(rt.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=settings.learning_rate,
                                     weight_decay=settings.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._schedule(settings.epochs * self.steps_per_epoch))
        self.amp = settings.amp and rt.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.step, self.best = 0, 0, float("inf")
        self.best_epoch = 0         # the epoch of the lowest validation loss, `best`: train.patience counts from it
        self.best_before = False    # `best` is of best_epoch or before (a resumed checkpoint that did not say)
        self.step_lr = settings.learning_rate      # the learning rate the last step took (metrics.csv's lr)
        self.pending_record: dict | None = None    # a resume's run.json, written with its first epoch
        self.resumed_from: str | Path | None = None     # the checkpoint fit() went on from (resume_hint's fallback)
        # best.pt's epoch while it is a later one's than the older checkpoint resumed (note_later_best), else None
        self.later_best: int | None = None
        self.log = MetricsLog(self.run_dir / "metrics.csv")
        self.shown = ("train_loss", "val_loss") + tuple(shown)

    def _bare(self, model: nn.Module) -> nn.Module:
        """The module inside a model given wrapped in nn.DataParallel or DDP, said in a note: the Trainer wraps the
        model itself as the runtime says (wrapped), so a DataParallel given on a CPU split each batch over no device
        (_replica_sizes), and one given on several GPUs was wrapped twice."""
        if unwrap(model) is model:
            return model
        if self.rt.is_main:
            running.note(f"the model given to Trainer is wrapped in {type(model).__name__}: it trains the module "
                         f"inside, wrapped as the runtime says (nn.DataParallel on several GPUs of one process, DDP "
                         f"under torchrun)")
        return unwrap(model)

    def make_loaders(self, train_set: Dataset, val_set: Dataset) -> None:
        """Each rank's share of the global batch, drawn from one seeded permutation of the training windows."""
        settings, rt = self.s, self.rt
        check_batch_split("train.batch_size", settings.batch_size, rt.world)
        per_rank = settings.batch_size // rt.world
        self.sampler = DistributedSampler(train_set, rt.world, rt.rank, shuffle=True, seed=settings.seed,
                                          drop_last=True)
        pin = rt.device.type == "cuda"      # page-locked batches: the non_blocking copies overlap compute
        self.train_loader = DataLoader(train_set, per_rank, sampler=self.sampler, drop_last=True,
                                       num_workers=settings.num_workers, pin_memory=pin)
        # every validation window exactly once over all ranks (DistributedSampler would pad with repeats)
        val_shard = Subset(val_set, range(rt.rank, len(val_set), rt.world))
        self.val_loader = DataLoader(val_shard, per_rank, num_workers=settings.num_workers, pin_memory=pin)
        if len(self.train_loader) == 0:
            most = len(train_set) // rt.world * rt.world
            fits = (f"; pass --batch-size {most} or less" if most else
                    f"; run fewer processes than {rt.world}")
            raise UserError(f"{len(train_set)} training windows are fewer than one batch of {settings.batch_size}"
                            f"{fits}, or prepare more training records")
        if len(val_set) < rt.world:     # a rank without one would all-reduce no metrics: gloo fails, NCCL hangs
            raise UserError(f"{len(val_set)} validation windows are fewer than the {rt.world} processes; "
                            "run fewer processes")

    def _schedule(self, total: int) -> Callable[[int], float]:
        """The learning-rate factor of each step of a run of `total` steps, its warm-up cut to a quarter of them."""
        return warmup_cosine(run_warmup(self.s.warmup_steps, total), total)

    def _run_steps(self) -> int:
        """The steps the run's schedule spans: those taken and the epochs left at this run's steps per epoch."""
        return self.step + max(0, self.s.epochs - self.epoch) * self.steps_per_epoch

    def _note_short_warmup(self) -> None:
        """Said as fit starts, of the steps it trains over, not when the Trainer is built: a resume at other steps
        per epoch lays its schedule out anew (_lay_out_the_steps_left). A resume past the warm-up says none: 'warming
        up over 3 steps' at step 10 told of a warm-up the run had done."""
        total = self._run_steps()
        warmup = run_warmup(self.s.warmup_steps, total)
        if warmup < self.s.warmup_steps and (self.step == 0 or self.step < warmup) and self.rt.is_main:
            over = f"warming up over {running.counted(warmup, 'step')}" if warmup else "with no warm-up"
            running.note(f"train.warmup_steps {self.s.warmup_steps} is over a quarter of this run's "
                         f"{running.counted(total, 'step')}: "
                         f"{over}, so the learning rate reaches its peak and decays")

    def wrapped(self) -> nn.Module:
        """The model as the forward pass sees it: DDP under torchrun, DataParallel on several GPUs."""
        if self.rt.distributed:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            return DDP(self.model, device_ids=ids)
        if self.rt.data_parallel:
            return nn.DataParallel(self.model)
        return self.model

    def state(self) -> dict:
        return {"kind": self.kind, "model": unwrap(self.model).state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "epoch": self.epoch,
                "step": self.step, "best_val": self.best, "best_epoch": self.best_epoch,
                "best_before": self.best_before, "rng": rng_state(self.rt.device), "config": self.config,
                "meta": self.meta, "run_dir": str(self.run_dir), "ckpt_dir": str(self.ckpt_dir), **self.extras}

    def resume(self, path: str | Path, ckpt: dict | None = None) -> None:
        """Go on from a checkpoint exactly where it stopped: weights, optimiser, schedule, counters and generators.
        `ckpt`: path's, as the entry point read it (load_resume), not read again: on a shared disk a second read could
        find a file another run has written since."""
        ckpt = ckpt if ckpt is not None else load_resume(path, self.kind)
        if self.rt.distributed:
            check_same_checkpoint(path, ckpt)
        check_same_config(ckpt["config"], self.config, Path(path), sections=_model_sections(self.config))
        load_weights(unwrap(self.model), ckpt["model"], path)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step, self.best = ckpt["epoch"], ckpt["step"], ckpt["best_val"]
        # a checkpoint from before train.patience does not say when its best was: the patience counts from the resume,
        # and the checkpoints after it say so (best_before) until the run beats that best
        self.best_epoch = ckpt.get("best_epoch", self.epoch)
        self.best_before = "best_epoch" not in ckpt or ckpt.get("best_before", False)
        self._lay_out_the_steps_left()
        self._take_settings()
        if ckpt["scaler"]:                  # empty when the run was made without AMP (e.g. on a CPU)
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], self.rt.device)
        self._start_best_over_on_other_data(path, ckpt)
        if self.rt.is_main:
            self._tidy_resumed(path)

    def _start_best_over_on_other_data(self, path: str | Path, ckpt: dict) -> None:
        """A checkpoint's best_val is a loss on the validation windows it was trained with: on data prepared again
        (another data hash) those may be other windows, against which best.pt could never (or wrongly) be replaced,
        so best.pt starts over with the resumed run's first epoch. The same data keeps it: resumes stay exact."""
        trained_on, now = ckpt.get("meta", {}).get("data_hash"), self.meta.get("data_hash")
        if trained_on and now and trained_on != now:    # a run that names no data (a Trainer of one's own) cannot tell
            running.note(f"{path} trained on prepared data {trained_on}, these windows are {now} (prepared again "
                         f"since?): the epochs after {self.epoch} train on these, and best.pt starts over: its "
                         f"validation loss {self.best:.6g} was on the windows prepared before")
            self.best, self.best_epoch, self.best_before = float("inf"), self.epoch, False

    def _lay_out_the_steps_left(self) -> None:
        """The schedule over the steps taken and the epochs left at this run's steps per epoch: with other steps per
        epoch than the checkpoint's (--max-steps, --batch-size, data prepared again), epochs x steps per epoch ended
        the cosine before or after the run's last step. With its own, that is the same number of steps."""
        total = self._run_steps()
        if total != self.s.epochs * self.steps_per_epoch:
            self.sched.lr_lambdas = [self._schedule(total) for _ in self.opt.param_groups]

    def _take_settings(self) -> None:
        """The loaded state dicts hold the run's learning rate and weight decay: a resume's train section (run.json
        records it) must win, as its epochs do; unchanged settings give the same numbers, so resumes stay exact."""
        self.sched.base_lrs = [self.s.learning_rate for _ in self.opt.param_groups]
        for group, factor in zip(self.opt.param_groups, self.sched.lr_lambdas):
            group.update(initial_lr=self.s.learning_rate, weight_decay=self.s.weight_decay,
                         lr=self.s.learning_rate * factor(self.sched.last_epoch))

    def _tidy_resumed(self, path: str | Path) -> None:
        """Rank 0's files after a resume: a later best.pt is said, and temporary files half written by a run killed
        while saving go: checkpoints, and metrics.csv and plots. metrics.csv keeps the rows of the epochs about to be
        redone until the first of them is logged (MetricsLog.append): a resume that trains nothing, or fails first,
        keeps them all."""
        self.log.note_half_row()
        self.note_later_best(path)
        for stale in [*self.ckpt_dir.glob(".*.tmp"), *self.run_dir.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)       # found twice when --results and --checkpoints are one folder

    def note_later_best(self, path: str | Path) -> None:
        """A resume from an older epoch_NNN.pt finds best.pt from a later epoch of the trajectory it leaves: said,
        since the resumed run replaces it as soon as it beats the older checkpoint's best validation loss. So may one
        from last.pt, written after best.pt: a kill between the two leaves best.pt an epoch ahead, which a resume off
        the CPU (not bit for bit) may not beat again."""
        best = self.ckpt_dir / "best.pt"
        if best.exists() and Path(path).resolve() != best.resolve():
            try:
                epoch = load_checkpoint(best)["epoch"]
            except UserError:                   # nothing to say of a file that cannot be read
                return
            if epoch > self.epoch and self.best < float("inf"):    # else best.pt starts over (resume says why)
                self.later_best = epoch
                running.note(f"{best} is epoch {epoch}'s, after this checkpoint's epoch {self.epoch}: the resumed run "
                             f"replaces it once its validation loss is below {self.best:.6g}")

    def _train_epoch(self, model: nn.Module) -> dict:
        model.train()
        if self.rt.rank:    # rank 0 draws as one process would; the others their own, and again so on resume
            seed_everything(epoch_seed(self.s.seed, self.epoch, self.rt.rank))
        seed_replica_cards(model, self.s.seed, self.epoch)
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.train_loader.dataset, "set_epoch"):
            self.train_loader.dataset.set_epoch(self.epoch)
        sums: dict[str, float] = {}
        seen = 0
        # the bar only on rank 0 and a terminal: logs and pipes keep one line per epoch (and one 'error:' line);
        # closed on Ctrl-C too, so that the resume hint starts a line of its own
        with tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.s.epochs}",
                  disable=None if self.rt.is_main else True, leave=False) as bar:
            # no batch loaded past the cap
            with loader_batches(self.train_loader) as batches:
                for batch in itertools.islice(batches, self.steps_per_epoch):
                    running.raise_if_signalled()
                    batch = _to(batch, self.rt.device)
                    loss, metrics = self._train_step(model, batch)
                    seen += _add_batch(sums, batch, loss.detach(), metrics)
                    bar.update()
                    bar.set_postfix(loss=f"{loss.item():.4f}")
        return _all_reduce_mean(sums, seen, self.rt)

    def _train_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
        """One optimiser step on a batch already on the device; its loss and metrics."""
        with torch.autocast(self.rt.device.type, enabled=self.amp):
            loss, metrics = _gathered(*self.step_fn(model, batch), _replica_sizes(model, batch))
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
        # under AMP the scaler skips a step whose scaled gradients overflow, and halves its scale; at a scale of 1 or
        # less nothing was scaled up, so non-finite gradients are the model's own: they stop the run, as without AMP
        # (skipped for good, they would leave the weights as they are while the run went on and saved them)
        scale = self.scaler.get_scale()     # 1.0 without AMP
        self._check_finite(torch.stack([loss.detach().float(), norm.float()]) if scale <= 1 else loss)
        self.step_lr = self.opt.param_groups[0]["lr"]      # the scheduler's, after this step, is the next step's
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self._step_schedule(skipped=self.scaler.get_scale() < scale)
        self.step += 1
        return loss, metrics

    def _step_schedule(self, skipped: bool) -> None:
        """The schedule moves at every step, one the loss scaler skipped too; torch then says the scheduler stepped
        before the optimiser (at a run's first step), which is not so here."""
        if not skipped:
            self.sched.step()
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.sched.step()

    def _check_finite(self, values: torch.Tensor, what: str = "loss or gradient norm") -> None:
        """Stop every rank together when a value is NaN or inf, before a step or a checkpoint can use it."""
        ok = torch.tensor(float(torch.isfinite(values.detach()).all()), device=self.rt.device)
        if self.rt.distributed:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            last = self.ckpt_dir / "last.pt"
            kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
            raise UserError(f"{what} is {values.detach().cpu().tolist()} in epoch {self.epoch + 1} after {self.step} "
                            f"steps; stopped, {kept} (lower train.learning_rate or check the data)")

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict:
        """The validation split's mean metrics, with a bar as training's (the latent SDE's CRPS validation takes
        minutes) and a signal Python swallowed raised at each batch, not after the whole split. In float32 with
        train.amp too: forecasts and vqvae_eval run the model so, and best.pt is the best of that model (an autocast
        encoder changed 0.7% of the codes in float16)."""
        model.eval()
        sums: dict[str, float] = {}
        seen = 0
        with loader_batches(self.val_loader) as batches:
            for batch in tqdm(batches, desc="validation", total=len(self.val_loader),
                              disable=None if self.rt.is_main else True, leave=False):
                running.raise_if_signalled()
                batch = _to(batch, self.rt.device)
                loss, metrics = _gathered(*self.step_fn(model, batch), _replica_sizes(model, batch))
                seen += _add_batch(sums, batch, loss, metrics)
        return _all_reduce_mean(sums, seen, self.rt)

    def fit(self, resume: str | Path | None = None, ckpt: dict | None = None) -> dict:
        """Train to the last epoch, or until train.patience epochs pass without a lower validation loss (from
        checkpoint `resume`, `ckpt` if read: resume()); returns the final epoch's metrics row."""
        self.resumed_from = resume
        if resume:
            self.resume(resume, ckpt)
        if why := self._nothing_to_train(resume):
            if self.rt.is_main:
                print(why)
            return {"epoch": self.epoch, "step": self.step}
        self._note_short_warmup()
        model = self.wrapped()
        row: dict = {}
        if self.rt.is_main:
            print(f"training {self.kind} on {self.rt.device} x{self.rt.world}: epochs {self.epoch + 1}..{self.s.epochs}, "
                  f"{running.counted(self.steps_per_epoch, 'step')}/epoch, run folder {self.run_dir}", flush=True)
        while self.epoch < self.s.epochs:
            row = self._epoch(model)
            # every rank: val_loss is all-reduced, the same float on each, so all of them stop after the same epoch
            improved = row["val_loss"] < self.best
            if improved:
                self.best, self.best_epoch, self.best_before = row["val_loss"], self.epoch, False
                self.later_best = None      # best.pt is this epoch's now
            if self.rt.is_main:
                self._save(row, improved)
            if self.rt.distributed:
                barrier(self.rt)
            if self._out_of_patience():
                if self.rt.is_main:
                    print(f"stopped early after epoch {self.epoch} of {self.s.epochs}: {self._not_improved()}",
                          flush=True)
                break
        return row

    def _nothing_to_train(self, resume: str | Path | None) -> str:
        """Why fit() trains no epoch, '' when it trains: the epochs are done, or the patience has run out."""
        if self.epoch >= self.s.epochs:
            done = (f"{self.epoch} of {self.s.epochs} epochs" if self.epoch == self.s.epochs
                    else f"{self.epoch} epochs, more than the {self.s.epochs} asked for")
            return (f"nothing to train: {resume or 'this run'} has done {done}; pass --epochs above {self.epoch} "
                    f"to go on")
        if self._out_of_patience():     # not 'stopped early': its run may have trained on, without this patience
            return (f"nothing to train: {resume or 'this run'}, epoch {self.epoch} of {self.s.epochs}, is out of "
                    f"patience ({self.s.patience}): {self._not_improved()}; pass --patience above "
                    f"{self.epoch - self.best_epoch} (or 0 for none) to go on")
        return ""

    def _out_of_patience(self) -> bool:
        """train.patience epochs have passed without a lower validation loss, before the last epoch."""
        return (self.s.patience is not None and self.epoch < self.s.epochs
                and self.epoch - self.best_epoch >= self.s.patience)

    def _not_improved(self) -> str:
        """Why an early stop stopped, and a resume out of patience trains nothing: where the best model is (best.pt
        may still be a later epoch's of the run the resumed checkpoint was left behind by)."""
        where = ", in best.pt" if self.later_best is None else f"; best.pt is {self.best_pt_epoch()}"
        return (f"val_loss has not improved for {running.counted(self.epoch - self.best_epoch, 'epoch')} (best "
                f"{self.best:.6g} at epoch {self.best_epoch}{' or before' * self.best_before}{where})")

    def best_pt_epoch(self) -> str:
        """The epoch best.pt holds, as the patience lines and a script's closing lines say it: a later one's than the
        older checkpoint resumed until the run beats it, else best_epoch, 'or before' when an old checkpoint did not
        say when its best was."""
        if self.later_best is not None:
            return f"epoch {self.later_best}'s, trained before this resume"
        return f"epoch {self.best_epoch}'s{' or before' * self.best_before}"

    def _epoch(self, model: nn.Module) -> dict:
        """Train and validate one epoch; its metrics.csv row."""
        t0 = time.time()
        train = self._train_epoch(model)
        # DDP would sync buffers in every forward, so ranks with unequal validation shards validate unwrapped
        val = self.validate(unwrap(model) if self.rt.distributed else model)
        self._check_finite(torch.tensor([train["loss"], val["loss"]]), "train/validation loss")
        self.epoch += 1
        extra = self.epoch_end(unwrap(self.model), self.epoch, self.rt.is_main) if self.epoch_end else {}
        row = {"epoch": self.epoch, "step": self.step, "lr": self.step_lr,
               **{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()},
               **extra, "seconds": time.time() - t0}
        if self.summarize:
            row.update(self.summarize(row))
        return row

    def run(self, resume: str | Path | None = None, ckpt: dict | None = None) -> dict:
        """fit() as every entry point uses it: run.json first (fresh runs), then where plots and
        checkpoints went, and the torchrun process group closed at the end. A Ctrl-C or SIGTERM says how to resume
        (the entry point's training_main drops a new run's folders when no epoch was logged)."""
        _begun().trainer_ran = True
        self.pending_record = self.resumed_record(resume) if resume and self.rt.is_main else None
        if self.rt.is_main and not resume:
            paths.atomic_write_json(self.meta, self.run_dir / "run.json")
        try:
            row = self._fit_beside_the_others(resume, ckpt)
        except KeyboardInterrupt as e:      # Ctrl-C or SIGTERM (running.Terminated)
            if self.rt.is_main:             # run_main prints it after 'interrupted'
                raise type(e)(self.resume_hint()) from None
            raise
        if self.rt.is_main:
            print(f"plots and metrics.csv: {self.run_dir}\ncheckpoints: {self.ckpt_dir} ({kept(self.ckpt_dir)})")
        if self.rt.distributed:
            dist.destroy_process_group()
        return row

    def _fit_beside_the_others(self, resume: str | Path | None, ckpt: dict | None) -> dict:
        """fit(); under torchrun a rank stopped or failing alone closes its connections, and the others fail in their
        next collective with torch's traceback: when it left word (running.leave_word), they say it in one line, with
        how to resume. Any other failure keeps its traceback, ending with how to resume: a rank killed outright
        (kill -9, the out-of-memory killer) leaves no word, and the others' tracebacks ('Connection closed by peer')
        said none; a bug of a rank's own (a ValueError too, not only a RuntimeError) said none either."""
        try:
            return self.fit(resume, ckpt)
        except Exception as e:
            if self.rt.distributed and not isinstance(e, UserError):    # a UserError is its one 'error:' line
                hint = self.resume_hint()
                if isinstance(e, RuntimeError):     # a collective's, maybe: another rank's end
                    running.raise_word_left(e, hint)
                e.add_note(hint)
            raise

    def resume_hint(self) -> str:
        """How an interrupted or failed run goes on: from its last.pt, else from the checkpoint it resumed, if any
        (into folders of its own, its run's being gone), as resume_hint says it."""
        last = self.ckpt_dir / "last.pt"
        return resume_hint(last if last.exists() else self.resumed_from, self.kind)

    def resumed_record(self, resume: str | Path) -> dict:
        """The run's run.json with this resume added to its `resumes`: the command, commit, processes and
        training settings it went on with, the first run's record kept as it was (written with its first epoch)."""
        try:
            record = json.loads((self.run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):       # resumed into a new folder, or the record was lost
            record = dict(self.meta)
        entry = {k: self.meta[k] for k in ("command", "git_commit", "data_hash", "world_size", "device", "torch",
                                           "torch_threads", "started")}
        entry.update({"checkpoint": str(resume), "torchrun_run_id": self.meta.get("torchrun_run_id"),
                      **{s: self.config[s] for s in TRAINING_SECTIONS if s in self.config}})
        record.setdefault("resumes", []).append(entry)
        return record

    def _save(self, row: dict, improved: bool) -> None:
        try:
            self._write_epoch(row, improved)
        except UserError as e:      # a failed write (a full disk): every file is whole, last.pt the epoch before's
            raise UserError(f"{e}; {self.resume_hint()}") from e

    def _write_epoch(self, row: dict, improved: bool) -> None:
        if self.pending_record:     # a resume is recorded once it has trained an epoch: a failed one changes nothing
            paths.atomic_write_json(self.pending_record, self.run_dir / "run.json")
            self.pending_record = None
        self.log.append(row)  # before the checkpoints: a kill between the two redoes this epoch on resume
        state = self.state()
        # last.pt last: a kill before it redoes this epoch, best.pt included; written first, it would carry this
        # epoch's best_val into the resume while best.pt still held an older epoch, for good
        if improved:
            save_checkpoint(state, self.ckpt_dir / "best.pt")
        if self.s.checkpoint_every and self.epoch % self.s.checkpoint_every == 0:
            save_checkpoint(state, self.ckpt_dir / f"epoch_{self.epoch:03d}.pt")
        save_checkpoint(state, self.ckpt_dir / "last.pt")
        # said as soon as last.pt holds it: a stop in the plots below left the epoch unsaid, its resume beyond it
        self._print_epoch(row, improved)
        plot_loss_curves(self.log, self.run_dir / "loss_curves.png", self.loss_name, self.run_dir.name)
        plot_codebook_health(self.log, self.run_dir / "codebook_health.png", self.run_dir.name)

    def _print_epoch(self, row: dict, improved: bool) -> None:
        """The row's `shown` metrics, flushed: a log file or pipe gets the line now, not at the run's end."""
        shown = {k: row[k] for k in self.shown if k in row}
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        print(f"epoch {self.epoch}/{self.s.epochs} {text}" + (" (best)" if improved else ""), flush=True)


def closing_epoch(row: dict, trainer: Trainer) -> str:
    """Which weights a training script's closing lines score: the last epoch's, which best.pt, the model to use, need
    not hold (an early stop's never does)."""
    last = int(row["epoch"])
    if trainer.later_best is None and trainer.best_epoch == last:      # an improvement in this run
        return f"epoch {last}, in best.pt and last.pt"
    return f"epoch {last}, in last.pt; best.pt is {trainer.best_pt_epoch()}"


def drop_unused_folders(run_dir: Path, ckpt_dir: Path) -> bool:
    """A fresh run stopped before its first epoch is logged leaves nothing to resume or compare, yet its folders would
    be the newest that `ls -t` and a --resume typed from them find: the results folder goes unless metrics.csv is
    there, the checkpoint folder when empty. True when no epoch was logged."""
    unused = not (run_dir / "metrics.csv").exists()
    if unused and run_dir.is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
    if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
        ckpt_dir.rmdir()
    return unused


def resume_hint(start: str | Path | None, kind: str) -> str:
    """How a stopped run goes on from checkpoint `start` (none: nothing was saved yet), said as it was started: its
    script's command line, or the call from Python (_from_command_line), since a notebook's sys.argv[0] is the
    kernel's launcher and a sweep's the sweep; a Trainer used outside a script, fit(resume=...). The run's --device
    is said again when it is not the one a resume takes without it (_device_flag)."""
    if not start:
        return "nothing was saved yet (last.pt is written at the end of every epoch)"
    begun = _begun()
    flags = ["--resume", str(start), *_device_flag(begun.device)]
    if begun.module and not _from_command_line(begun.argv):
        return f"resume with: {_main_call(flags)}"
    if not begun.module and running.script_running() is None:
        return f"resume with: fit(resume={str(start)!r})"
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else f"{kind}_train.py"
    command, nodes = _launched(script, flags)      # a folder 'my runs' too
    return f"resume with{f' ({nodes})' if nodes else ''}: {command}"


def _device_flag(device: str | None) -> list[str]:
    """['--device', device] when a resume without it would run elsewhere: a run kept on the CPU of a machine with a
    GPU went on on the GPU (its numbers no longer the same), one on cuda:1 on cuda:0. [] for the default's own."""
    if device is None:
        return []
    dev, default = torch.device(device), "cuda" if torch.cuda.is_available() else "cpu"
    return [] if dev.type == default and not dev.index else ["--device", device]


def _launched(script: str, flags: list[str]) -> tuple[str, str]:
    """The command that starts `script` with `flags` again as this process was, quoted as a shell needs it, and where
    to run it: `python3 <script> ...`; a torchrun worker's own would start one process: its launcher's is said
    (running.launcher_argv), else a torchrun one starting as many processes per node, on as many nodes. Over several
    nodes a launcher starts its own node alone: the note says to run the command on each (with its own --node-rank
    when the line names this node's), so that it neither restarts a part of the job nor, typed on every node as it
    stands, claims one node's rank twice. It is no shell comment in the command: zsh passes '#' on as arguments."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:     # set by torchrun for its workers
        return shlex.join(["python3", script, *flags]), ""
    try:
        nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    except ValueError:      # torchrun sets it; one set by hand to no count stops no run for a comment's sake
        nodes = 1
    launcher = running.launcher_argv()
    if launcher:        # it ends with this process's flags, sys.argv[1:]
        launch = as_typed(launcher[:len(launcher) - len(sys.argv) + 1])
    else:
        launch = ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []),
                  f"--nproc-per-node={os.environ.get('LOCAL_WORLD_SIZE', '1')}", script]
    command = shlex.join([*launch, *flags])
    if nodes <= 1:
        return command, ""
    rank_flag = next((p.split("=")[0] for p in launch if p.split("=")[0] in ("--node_rank", "--node-rank")), None)
    if rank_flag:
        return command, f"on each of the {nodes} nodes, with its own {rank_flag}, 0 to {nodes - 1}"
    if launcher:
        return command, f"on each of the {nodes} nodes"
    return command, f"on each of the {nodes} nodes, with the rendezvous flags the run was started with"


def check_batch_split(key: str, batch: int, world: int) -> None:
    """A global batch of `key` (which --batch-size sets) that the `world` processes cannot share evenly is refused,
    with the sizes either side that they can."""
    if batch % world:
        lower = batch // world * world
        sizes = f"{lower} or {lower + world}" if lower else f"{world}"
        raise UserError(f"{key}={batch} (--batch-size) must be divisible by the {world} processes: pass --batch-size "
                        f"{sizes}")


def as_typed(launcher: list[str]) -> list[str]:
    """A torchrun launcher's command line as one types it: the kernel runs the console script through its shebang,
    so /proc reads '/venv/bin/python3 /venv/bin/torchrun ...'; the interpreter goes, and the script is `torchrun`
    when PATH finds that one. `python3 -m torch.distributed.run ...` is kept as it is."""
    if len(launcher) < 2 or os.path.basename(launcher[1]) != "torchrun" \
            or not os.path.basename(launcher[0]).startswith("python"):
        return launcher
    found = shutil.which("torchrun")
    try:
        same = found is not None and os.path.samefile(found, launcher[1])
    except OSError:
        same = False
    return ["torchrun" if same else launcher[1], *launcher[2:]]


def _from_command_line(argv: list[str] | None) -> bool:
    """Whether a training main given `argv` runs its script's command line: given none (it parsed sys.argv), or the
    command line's own flags under its script (running.run_main passes them on); any other list is a call from
    Python (a notebook, a sweep script), which the call, not the command line, runs again."""
    return argv is None or (running.script_running() is not None and list(argv) == sys.argv[1:])


def _main_call(argv: list[str]) -> str:
    """The running training main called from Python with `argv`, as it is called again: vqvae_train.main([...]),
    or main([...]) from its own script's __main__."""
    module = _begun().module
    return f"{'' if module in ('__main__', '') else module + '.'}main({list(argv)!r})"


@dataclass
class _Begun:
    """What a training's main (training_main) has begun, for what a stop of it leaves and says."""
    resume: str | Path | None = None                # the checkpoint it goes on from (--resume, load_resume), its kind
    kind: str = ""
    module: str = ""                                # the module of the main, which a call from Python resumes
    argv: list[str] | None = None                   # what the main was given (_from_command_line)
    folders: tuple[Path, Path] | None = None        # a new run's results and checkpoint folders (shared_run_dirs)
    device: str | None = None                       # --device as given (setup_runtime): resume_hint says it again
    trainer_ran: bool = False                       # Trainer.run began: it says how to resume from then on

    def stopped(self, e: BaseException) -> None:
        """Drops a new run's folders when no epoch was logged, and raises a bare Ctrl-C or SIGTERM of such a run, or
        of any run before its Trainer ran (joining the process group, encoding, building loaders), again saying how
        it goes on, as the Trainer's does (whose own says it already)."""
        unused = self.folders is not None and drop_unused_folders(*self.folders)
        if isinstance(e, KeyboardInterrupt) and not str(e) and (unused or not self.trainer_ran):
            raise type(e)(resume_hint(self.resume, self.kind)) from None


_mains: list[_Begun] = []       # the training mains running, the innermost last


def _begun() -> _Begun:
    """The running training main's record; outside one (a Trainer used on its own), one nothing reads."""
    return _mains[-1] if _mains else _Begun()


def training_main(main: Callable[[list[str] | None], dict]) -> Callable[[list[str] | None], dict]:
    """A *_train.py's main(), run by its script or called from Python: a new run stopped (Ctrl-C, SIGTERM or an
    error) before its first epoch is logged leaves no folders, and a Ctrl-C or SIGTERM then, or in any run before its
    Trainer runs, says how it goes on, as the Trainer's would (_Begun.stopped). The models train in float32 whatever
    torch's default dtype: a session that set float64 (as scientific code does) built float64 modules, which met the
    float32 windows in 'Input type (float) and bias type (double)' before the first step."""
    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> dict:
        _mains.append(begun := _Begun(module=main.__module__, argv=argv))
        try:
            with float32_default():
                return main(argv)
        except BaseException as e:
            begun.stopped(e)
            raise
        finally:
            _mains.pop()
    return run


def ranks_apart(mine: Any) -> tuple[list, list[int]]:
    """Every rank's `mine`, and the ranks whose differs from rank 0's: what each node reads for itself (--resume, a
    forecaster's VQ-VAE) must be the same on all of them."""
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every, [r for r, theirs in enumerate(every) if theirs != every[0]]


def check_same_data(data_hash: str | None, train: int, val: int) -> None:
    """Every rank reads the prepared tensors on its own node: another node's prepared from other records (or by other
    code) trained the model on a mix of both, and run.json named rank 0's data alone. No hash (a trainer of one's own
    whose meta has none): the window counts alone."""
    ranks, apart = ranks_apart((data_hash, train, val))
    if apart:
        said = "; ".join(f"rank {r}'s {ranks[r][0]}, {ranks[r][1]}/{ranks[r][2]}" for r in apart)
        raise UserError(f"the ranks read different prepared data (data hash, training/validation windows: rank 0's "
                        f"{ranks[0][0]}, {ranks[0][1]}/{ranks[0][2]}; {said}): every node needs the same prepared "
                        "tensors at the same path")


def check_same_checkpoint(path: str | Path, ckpt: dict) -> None:
    """Every rank reads --resume on its own node: a node without the shared file system keeps a copy, which may be an
    older one. Ranks resumed from different epochs trained on with their optimisers apart, for unequal numbers of
    epochs: rank 0 saved the mixed state as the finished run, and another rank ended in gloo's traceback."""
    ranks, apart = ranks_apart((ckpt["epoch"], ckpt["step"], ckpt["file_sha256"]))     # as loaded (load_resume)
    if apart:
        said = ", ".join(f"rank {r}'s epoch {ranks[r][0]} (step {ranks[r][1]}, sha256 {ranks[r][2]})" for r in apart)
        raise UserError(f"--resume {path} is not the same checkpoint on every rank: rank 0's is epoch {ranks[0][0]} "
                        f"(step {ranks[0][1]}, sha256 {ranks[0][2]}), {said}; copy rank 0's file to every node, or "
                        "keep checkpoints/ on a shared file system")


def kept(ckpt_dir: Path) -> str:
    """The checkpoints a run's folder holds, its epoch_NNN.pt too; more than three of those are counted."""
    names = sorted(p.name for p in ckpt_dir.glob("*.pt"))
    numbered = [n for n in names if n.startswith("epoch_")]
    if len(numbered) > 3:
        names = [n for n in names if n not in numbered] + [f"{len(numbered)} epoch_NNN.pt"]
    return ", ".join(names)


def load_resume(path: str | Path, kind: str) -> dict:
    """The checkpoint --resume goes on from, refused before the data is loaded when it holds no training state (a
    packed model, as pretrained/'s). Its "file_sha256" is the bytes loaded, which check_same_checkpoint compares
    across ranks; noted for training_main, so that a stop from here on says how to resume it."""
    _begun().resume, _begun().kind = path, kind
    ckpt, digest = read_checkpoint(path, kind, example="last.pt")
    ckpt["file_sha256"] = digest
    missing = [k for k in TRAINING_STATE if k not in ckpt]
    if missing:
        raise UserError(f"{path} holds no training state ({', '.join(missing)}), as a packed model such as "
                        f"pretrained/'s: --resume takes a run's checkpoint, e.g. checkpoints/{kind}-<time>/last.pt")
    return ckpt


def run_resume(args: argparse.Namespace, rt: Runtime, kind: str) -> dict | None:
    """The checkpoint a run goes on from (load_resume), None for a new run: --resume's, but in an attempt that
    torchrun --max-restarts started after a worker failed (the same command again) the failed attempt's last.pt when
    it trained an epoch, which every rank resumes as --resume would. Each restart was a new run from epoch 1, the
    last.pt unused; a restart of `--resume epoch_005.pt` went back to epoch 5, the failed attempt's epochs lost."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        found = [_restarted_run(args) if rt.is_main else None]
        if rt.distributed:
            dist.broadcast_object_list(found, src=0)
        args.resume = found[0] or args.resume
    if not args.resume:
        return None
    ckpt = load_resume(args.resume, kind)
    args.prepared = resumed_prepared(args.prepared, ckpt)
    return ckpt


def resumed_prepared(given: str | None, ckpt: dict) -> str | None:
    """The prepared tensors a resume reads: --prepared's, else $ECG_PREPARED_DIR's, else its run's (run_record's
    "prepared") while that folder is there. The resume command a stop prints names no folder: typed as printed after
    a run on a folder of its own, it read data/prepared, other tensors or none, and its error told to pass the run's
    --prepared again. A folder gone (the run made on another machine) leaves the default."""
    if given or os.environ.get(paths.ENV["prepared"][0]):
        return given
    ran_on = ckpt.get("meta", {}).get("prepared")
    if not ran_on or not os.path.isdir(ran_on) or ran_on == os.path.abspath(paths.location("prepared")):
        return given
    running.note(f"reading the prepared tensors the run read, in {ran_on} (--prepared reads others)")
    return ran_on


def _restarted_run(args: argparse.Namespace) -> str | None:
    """Rank 0's pick for a torchrun restart: the last.pt of the newest run whose run.json has this job's torchrun run
    id (run_record, or a resume's entry: written once it trained an epoch), None when it has none yet (the attempt
    failed in its first epoch: a new run, or --resume's again, as before). The default run id 'none' is every job's
    that gave no --rdzv-id: another job's run is never resumed by it."""
    run_id, restart = os.environ.get("TORCHELASTIC_RUN_ID"), os.environ["TORCHELASTIC_RESTART_COUNT"]
    if run_id in (None, "none"):
        again = f"--resume {args.resume} again" if args.resume else "a new run"
        running.note(f"torchrun restart {restart}: {again} (give torchrun a unique --rdzv-id to resume the last)")
        return None
    ckpt_root, found = paths.location("checkpoints", args.checkpoints), []
    with contextlib.suppress(OSError):      # a results root that cannot be looked in holds no run to go on with
        for record in paths.location("results", args.results).glob("*/run.json"):
            last = ckpt_root / record.parent.name / "last.pt"
            with contextlib.suppress(OSError, ValueError, AttributeError):      # a record cut short, or not a dict
                if run_id in _torchrun_ids(json.loads(record.read_text(encoding="utf-8"))) and last.is_file():
                    found.append((last.stat().st_mtime_ns, str(last)))
    if not found:
        return None
    running.note(f"torchrun restart {restart}: resuming {max(found)[1]}")
    return max(found)[1]


def _torchrun_ids(record: dict) -> list[str | None]:
    """The torchrun run ids of a run.json's run and of its resumes."""
    return [record.get("torchrun_run_id"), *(r.get("torchrun_run_id") for r in record.get("resumes", []))]


def _run_command(argv: list[str] | None) -> str:
    """What ran, to run it again, as resume_hint says it: the command line (`python3 <script> ...`, quoted as a shell
    needs it, after the $ECG_PREPARED_DIR, $ECG_RESULTS_DIR and $ECG_CHECKPOINTS_DIR that chose its folders) or the
    call from Python (_main_call). The list alone ('--epochs 1') named no script. A torchrun worker's own command
    line would start one process: its launcher's is said (_launched)."""
    if not _from_command_line(argv):
        return _main_call(argv)
    return paths.with_locations(_launched(sys.argv[0], sys.argv[1:])[0], ("prepared", "results", "checkpoints"),
                                sys.argv[1:])


def run_record(cfg_dict: dict, seed: int, train: dict, val: dict, rt: Runtime, argv: list[str] | None,
               prepared: str | os.PathLike | None = None) -> dict:
    """What every run records next to its results: config, seed, git commit (rt's, the start's), the training split's
    data hash, the training and validation records (so evaluate.py can tell when it scores a model on patients it
    trained or chose its checkpoint on), the prepared folder they were read from (--prepared, `prepared`: a resume
    reads it again, resumed_prepared), command (_run_command; `argv`: the main's own, None when it parsed sys.argv),
    torch's version and CPU threads (a seed's weights on the CPU are the same only at the same count)."""
    return {"config": cfg_dict, "seed": seed, "git_commit": rt.commit,
            "data_hash": paths.run_data_hash(train), "train_records": list(train["records"]),
            "validation_records": list(val["records"]),
            "prepared": os.path.abspath(paths.location("prepared", prepared)),
            "world_size": rt.world, "device": str(rt.device), "command": _run_command(argv),
            "torch": str(torch.__version__), "torch_threads": torch.get_num_threads(),
            "torchrun_run_id": os.environ.get("TORCHELASTIC_RUN_ID"),     # a restart's run to resume (run_resume)
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


MULTI_PROCESS_HELP = """\
several processes (DistributedDataParallel: one per GPU, or CPU processes over gloo):
    torchrun --standalone --nproc_per_node N %(prog)s [flags as usual]
  --batch-size is the global batch, which N must divide; only rank 0 prints and writes files; on CPUs set
  OMP_NUM_THREADS to cores / N. A run resumes (--resume) under torchrun or in one process alike."""


def run_parser(doc: str | None, config_help: str) -> argparse.ArgumentParser:
    """The flags every *_train.py shares; scripts add their own (e.g. --vqvae) to it. Its epilog says how to run
    on several processes, which only vqvae_train.py's own docstring said: every trainer runs under torchrun."""
    p = argparse.ArgumentParser(description=doc, epilog=MULTI_PROCESS_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=paths.given_path, help=config_help)
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--patience", type=int,
                   help="override train.patience: stop after N epochs without a lower validation loss (0: none)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps_per_epoch (quick runs)")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (global, over all processes)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--resume", type=paths.given_path, action=_ResumeFlag,
                   help="checkpoint to continue from (e.g. checkpoints/<run>/last.pt)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--prepared", type=paths.given_path,
                   help="prepared tensors folder (default: $ECG_PREPARED_DIR or data/prepared)")
    p.add_argument("--results", type=paths.given_path, help="results root (default: $ECG_RESULTS_DIR or results)")
    p.add_argument("--checkpoints", type=paths.given_path,
                   help="checkpoints root (default: $ECG_CHECKPOINTS_DIR or checkpoints)")
    return p


class _ResumeFlag(argparse.Action):
    """--resume, noted for the training main as it is parsed: a stop while the main joins the process group
    (setup_runtime, before load_resume reads the file) says how to resume, as a stop after it does."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        _begun().resume = values


def run_splits(load: Callable[[str], dict], resume: dict | None) -> tuple[dict, dict]:
    """The training and validation splits, `load(split)`. A resume refused its data most often because the run's
    --prepared was not given again (the checkpoint keeps the run's config, not where its tensors are): said so, with
    the command that wrote the checkpoint, rather than only the advice to pass another --config, which a resume
    refuses."""
    try:
        return load("train"), load("validation")
    except UserError as e:
        if not resume:
            raise
        raise UserError(f"{e}; a resume reads the tensors its run trained on: pass that run's --prepared again "
                        f"(this checkpoint was written by `{resume['meta'].get('command', '?')}`)") from e


def shared_run_dirs(args: argparse.Namespace, rt: Runtime, resume_ckpt: dict | None,
                    experiment: str) -> tuple[Path, Path]:
    """The run's results and checkpoint folders (results/<experiment>-<time>/, checkpoints/<same>/, from
    run_parser's --results and --checkpoints): rank 0 names them (or reuses the resumed run's); every rank
    learns the same. Folders made here go again if the training's main stops before its first epoch is logged
    (training_main), a resumed run's own never."""
    names = [None, None]
    if rt.is_main:
        if resumes_in_place(resume_ckpt):
            names = [resume_ckpt["run_dir"], resume_ckpt["ckpt_dir"]]
            note_ignored_roots(args, *names)
        else:
            ckpt_root = paths.check_writable(paths.location("checkpoints", args.checkpoints))  # before training
            run = paths.new_run_dir(experiment, args.results, ckpt_root)
            ckpt_dir = ckpt_root / run.name
            names = [str(run), str(ckpt_dir)]
            _begun().folders = (run, ckpt_dir)
    if rt.distributed:      # another rank failing before it (its node lacks the data) ends this one here
        dist.broadcast_object_list(names, src=0)
    return Path(names[0]), Path(names[1])


def resumes_in_place(resume_ckpt: dict | None) -> bool:
    """A resumed run goes on in its own folders while they are there; else its run is a new one's."""
    return bool(resume_ckpt) and Path(resume_ckpt["run_dir"]).is_dir()


def check_run_roots(args: argparse.Namespace, rt: Runtime, resume_ckpt: dict | None) -> None:
    """A new run's --results and --checkpoints roots proven writable before a forecaster's windows are encoded
    (minutes with a cold cache), where shared_run_dirs found them only after; nothing is left made here."""
    if rt.is_main and not resumes_in_place(resume_ckpt):
        for kind in ("results", "checkpoints"):
            paths.check_writable(paths.location(kind, getattr(args, kind)), keep=False)


def note_ignored_roots(args: argparse.Namespace, run_dir: str, ckpt_dir: str) -> None:
    """--results and --checkpoints name where a new run's folders go; a resumed run goes on in its own, so a root
    other than theirs is said to be ignored rather than silently dropped."""
    for flag, root, folder in (("--results", args.results, run_dir), ("--checkpoints", args.checkpoints, ckpt_dir)):
        if root and Path(root).resolve() != Path(folder).resolve().parent:
            running.note(f"{flag} {root} is ignored: the resumed run goes on in its own folder, {folder}")


def run_config(args: argparse.Namespace, resume: dict | None, load: Callable[[str | None], Any],
               from_dict: Callable[[dict, str], Any], flags: Mapping[str, str] | None = None) -> Any:
    """The config a run trains with. A resumed run goes on with its own, stored in its checkpoint, not the
    config file's (unless --config is given) and with its own seed; flags given now (--epochs to go further)
    change it either way: run_parser's, and the script's own that `flags` declares ({args attribute: "section.key"},
    as apply_flags takes them). A resume whose config differs beyond the training sections is refused here, before
    the data is loaded and encoded (Trainer.resume checks it again, with the VQ-VAE's)."""
    check_run_flags(args)
    if resume and not args.config:
        cfg = from_dict({k: v for k, v in resume["config"].items() if k != "vqvae"},
                        f"config stored in {args.resume}")
    else:
        cfg = load(args.config)
    apply_flags(cfg, args, {**TRAIN_FLAGS, **(flags or {})})
    cfg.train.patience = flag_patience(args, cfg.train.patience)
    if resume:
        cfg.train.seed = resumed_seed(args, resume, cfg.train.seed if args.config else None)
        current = cfg.to_dict()
        check_same_config(resume["config"], current, Path(args.resume), sections=_model_sections(current))
    return cfg


def check_run_flags(args: argparse.Namespace) -> None:
    """run_parser's numbers and the forecasters' --augment-copies refused by the flag's name and value: the config
    key a flag sets (train.epochs, augment.copies, or crps.epochs when fine-tuning a latent SDE) is not what was
    typed. A size of 2**63 or more is refused here as the config's is: a run given one trained, and its checkpoints
    could then be neither resumed nor used."""
    for flag, least, meaning in (("epochs", 1, ""), ("max_steps", 1, ""), ("batch_size", 1, ""),
                                 ("patience", 0, " (0: none)"),
                                 ("augment_copies", 0, " (0: none)")):   # --augment-copies: the forecasters' alone
        if (value := getattr(args, flag, None)) is not None and not least <= value < INT_LIMIT:
            bound = f">= {least}{meaning}" if value < least else f"< 2**63 ({BEYOND_INT_LIMIT})"
            raise UserError(f"--{flag.replace('_', '-')} must be {bound}, got {value}")
    if (copies := getattr(args, "augment_copies", None)) is not None and copies > MAX_COPIES:
        raise UserError(f"--augment-copies must be <= {MAX_COPIES} (each copy is the training windows again, in "
                        f"memory), got {copies}")
    if args.seed is not None and not 0 <= args.seed < 2 ** 32:
        raise UserError(f"--seed must be in [0, 2**32) (numpy's seed range), got {args.seed}")


def flag_patience(args: argparse.Namespace, patience: int | None) -> int | None:
    """The patience a run stops by: --patience N when given (0: none, the config's null, which a flag cannot spell;
    an early-stopped run goes on with a larger one or none), else the config's `patience`."""
    given = getattr(args, "patience", None)
    return patience if given is None else given or None


def resumed_seed(args: argparse.Namespace, resume: dict, config_seed: int | None = None) -> int:
    """A resumed run keeps its seed (its generators' states come back from the checkpoint); --seed, or the train.seed
    of a --config given again (`config_seed`), is said to be ignored rather than silently dropped."""
    seed = resume["meta"]["seed"]
    if args.seed is not None and args.seed != seed:
        running.note(f"--seed {args.seed} is ignored: the resumed run goes on with its own seed, {seed}")
    elif args.seed is None and config_seed is not None and config_seed != seed:
        running.note(f"train.seed {config_seed} of --config {args.config} is ignored: the resumed run goes on with its "
                     f"own seed, {seed}")
    return seed


def apply_flags(cfg: Any, args: argparse.Namespace, flags: Mapping[str, str]) -> None:
    """Command-line overrides of config keys, {args attribute: "section.key"} (None = keep the config's value):
    run_parser's (TRAIN_FLAGS) and a script's own, declared where it adds the flags."""
    for arg, key in flags.items():
        if (value := getattr(args, arg)) is not None:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)


