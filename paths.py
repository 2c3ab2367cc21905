"""Where raw data, prepared tensors, results and checkpoints live, and how files are written.

Every location has a default under the repository and an environment variable, and most have a
command-line flag in the scripts that use them (the flag wins, then the variable, then the default).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent
ENV = {
    "data": ("MITBIH_DIR", ROOT / "data" / "mitdb"),
    "prepared": ("ECG_PREPARED_DIR", ROOT / "data" / "prepared"),
    "results": ("ECG_RESULTS_DIR", ROOT / "results"),
    "checkpoints": ("ECG_CHECKPOINTS_DIR", ROOT / "checkpoints"),
}
# The shipped models (see pretrained/README.md): the Transformer is the default wherever one model is meant.
SHIPPED = {"transformer": ROOT / "pretrained" / "forecaster.pt", "latent_sde": ROOT / "pretrained" / "latent_sde.pt"}
PRETRAINED = SHIPPED["transformer"]
SHIPPED_SPECS = {"pretrained": "transformer", "pretrained_sde": "latent_sde"}   # their command-line names


class UserError(Exception):
    """A problem the user can fix (bad file, key or value); printed as one line, never a traceback."""


def shipped_checkpoint(spec: str, flag: str) -> Path:
    """The file of the shipped model named `spec` on the command line (SHIPPED_SPECS: evaluate.py --model and
    forecast.py --checkpoint take the same names); `flag` is the option that takes a checkpoint path instead."""
    path = SHIPPED[SHIPPED_SPECS[spec]]
    if not path.is_file():
        raise UserError(f"no shipped model at {path}: run `make {spec.replace('_', '-')}` or pass {flag} CHECKPOINT")
    return path


def given_path(value: str) -> str:
    """argparse type of every file and folder flag: an empty value (`--out "$DIR"` with DIR unset) meant the flag's
    default without a word, data/prepared or a fresh training instead of --resume's."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return value


def in_project(path: str | os.PathLike) -> str | None:
    """`path` relative to the project when inside it (pretrained/forecaster.pt), as given (a linked data/prepared)
    or as stored; else None."""
    for where in (Path(os.path.abspath(path)), Path(path).resolve()):
        if where.is_relative_to(ROOT):
            return str(where.relative_to(ROOT))
    return None


def shown(path: str | os.PathLike) -> str:
    """A path as reports print it: from the project's root when inside it, so a report made in one checkout reads
    the same in every other; else as it is."""
    return in_project(path) or str(path)


def location(kind: str, override: str | os.PathLike | None = None) -> Path:
    """Resolve one of 'data', 'prepared', 'results', 'checkpoints': flag, then env var, then default."""
    var, default = ENV[kind]
    return Path(override or os.environ.get(var) or default).expanduser()


def cache_dir(prepared: str | os.PathLike | None = None) -> Path:
    """Where encodings of the prepared windows are kept: encodings/ in $ECG_CACHE_DIR, else in the prepared
    folder; one folder of its own, so that clearing it touches nothing else."""
    return Path(os.environ.get("ECG_CACHE_DIR") or location("prepared", prepared)).expanduser() / "encodings"


def new_run_dir(experiment: str, results: str | os.PathLike | None = None,
                checkpoints: Path | None = None) -> Path:
    """A fresh folder results/<experiment>-<time> so runs never overwrite each other. With `checkpoints` (a
    training's root) the name is taken there too, its folder made: two runs of their own --results and one
    checkpoints root, started in the same second, wrote into one checkpoint folder, each over the other's best.pt."""
    base = location("results", results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run = base / (f"{experiment}-{stamp}" + (f"-{n}" if n else ""))
        if not _made(run, "results"):
            continue
        if checkpoints is None or Path(checkpoints).resolve() == base.resolve():   # one root: one folder for both
            return run
        if _made(checkpoints / run.name, "checkpoint"):
            return run
        run.rmdir()             # made just now, so empty: the name is taken in the checkpoints root
    raise UserError(f"too many runs named {experiment}-{stamp} in {base}")


def _made(folder: Path, what: str) -> bool:
    """`folder` created by this call (False: it exists already); one that cannot be made is a UserError."""
    try:
        folder.mkdir(parents=True, exist_ok=False)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise UserError(f"cannot create {what} folder {folder}: {e.strerror}") from e


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove a file can be written there, before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(prefix=".write-test.", dir=folder):
            pass
    except OSError as e:
        raise UserError(f"cannot write to the output folder {folder}: {e.strerror or e}") from e
    return folder


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves a half file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write to {path.parent}: {e.strerror}") from e
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it the mode any other new file would get.
        os.chmod(tmp, 0o666 & ~_umask())
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data reaches the disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # here, not at the top: a script that stops at a bad flag or config never waits for torch

    def write(tmp: Path) -> None:
        # through a Python file: torch's own writer reports a full disk as a RuntimeError of its own ('unexpected
        # pos 704 vs 598'), a traceback naming neither the file nor the cause; a file's failed write is the OSError.
        # So too a Ctrl-C or SIGTERM in the middle of the write: closing the cut archive raised that RuntimeError
        # over it, and a training stopped with a traceback instead of its resume command
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as e:
                if isinstance(e.__context__, (OSError, KeyboardInterrupt)):
                    raise e.__context__ from None
                raise
    _atomic(Path(path), write)


def atomic_save_npy(array: Any, path: str | os.PathLike) -> None:
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:      # a file object: np.save would append .npy to a name
            np.save(f, array)
    _atomic(Path(path), write)


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:      # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)
    _atomic(Path(path), write)


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """A matplotlib figure saved atomically (a run killed while plotting keeps the previous PNG, never half of one);
    the format is named from `path`, since matplotlib would read it from the temporary file's .tmp."""
    path = Path(path)
    _atomic(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs))


def check_device(device: str | None, name: str = "--device") -> str | None:
    """A device (the --device flag, or `name`) checked before any model loads: one message for a typo or a
    GPU that is not there."""
    if device is None:
        return None
    import torch
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"{name} {device!r} is not a device: use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{name} {device} asked for a GPU but torch.cuda.is_available() is False")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise UserError(f"{name} {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{name} {device}: only cpu and cuda are supported")
    return device


@contextlib.contextmanager
def written_together(folder: Path, again: str) -> Iterator[list[str]]:
    """The files of one result, each written atomically, the names of those written appended to the list yielded:
    stopped between two (Ctrl-C, a full disk), the message says which are this run's, beside what was there
    before, and `again` how to go on."""
    written: list[str] = []
    try:
        yield written
    except (KeyboardInterrupt, UserError) as e:
        if not written:
            raise
        part = f"{folder} holds only {', '.join(written)} of this run, beside what was there before: {again}"
        raise type(e)(f"{e}; {part}" if str(e) else part) from None


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """`text` written as it is, in UTF-8 (reports hold Σ, −, ²: any locale) and with no newline translation:
    on Windows metrics.csv's CRLF rows, rewritten whole at every epoch, would gain a CR each time. A name of
    undecodable bytes (a Latin-1 'données' on a UTF-8 system, Python's lone surrogate '\\udce9') has no UTF-8: it is
    written escaped, which in a JSON file is the JSON escape; it stopped evaluate.py's report.md and
    prepare_mitbih.py's meta.json in a UnicodeEncodeError after all their work."""
    _atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8", errors="backslashreplace", newline=""))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """UTF-8 as it is, not escaped: run.json's command with a folder named 'données' read '\\u00e9', and copied
    into a shell named another folder. Read back with encoding="utf-8", whatever the locale."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", path)


def file_sha256(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256: a result names the exact checkpoint it used, which a path
    alone does not (best.pt changes while its run goes on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def run_data_hash(split: dict[str, Any]) -> str:
    """The prepared data a run read, as run.json and reconstruction.json name it: the data config's hash and the
    input files' ("config/files"), the config's alone being the same for any database prepared with it. One
    format, so a training run and an evaluation of its model compare equal on the same data."""
    return f"{split['data_hash']}/{split['input_hash']}"


def git_commit() -> str:
    """The commit of this checkout (with '-dirty' when files differ), recorded next to every result."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def say(text: str) -> None:
    """A line on stderr, once under torchrun (rank 0), whose ranks all meet the same note, error or Ctrl-C.
    Written by tqdm.write: a progress bar running (in a log, too) is cleared first and drawn again below it."""
    if os.environ.get("RANK", "0") == "0":
        from tqdm import tqdm      # here: paths itself imports nothing beyond the standard library

        tqdm.write(text, file=sys.stderr)


RANK_ERROR_GRACE_S = 5.0     # torchrun stops the other ranks within its monitor interval (0.1 s) of a failure


def say_error(message: str) -> None:
    """The 'error:' line of a failed run. Under torchrun rank 0 says it at once; another rank says its own only
    after a grace period, in which rank 0, meeting the same error, says it and torchrun stops this rank: so an
    error of that rank alone (a checkpoint or prepared folder missing on one node) is not lost, and a rank
    failing first no longer gets rank 0 stopped before it has said anything."""
    rank = os.environ.get("RANK", "0")
    if rank == "0":
        say(f"error: {message}")
        return
    from tqdm import tqdm

    time.sleep(RANK_ERROR_GRACE_S)
    tqdm.write(f"error: rank {rank}: {message}", file=sys.stderr)


def _process_group() -> Any:
    """torch.distributed when this process has joined a process group (training.setup_runtime), else None; never
    imported here: a script that joined one has."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def _word_key() -> str:
    """Where leave_word puts its word in the process group's store: one key per torchrun attempt, since
    --max-restarts starts the workers again on the same agent's store, and a word of the attempt before would name an
    end the new one never had."""
    return f"ecg-forecast/ended/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


@contextlib.contextmanager
def _quiet_store() -> Iterator[None]:
    """torch's store client writes a failed call's C++ stack frames to the process's stderr before it raises (rank 0's
    process, keeping the store without a torchrun agent, has ended): 17 lines before a rank's one 'error:' line. They
    go to /dev/null while a store call runs, its failure being handled."""
    sys.stderr.flush()
    stderr = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)


def leave_word(end: BaseException) -> None:
    """In a process group, leave word in its store (torchrun's agent keeps it; without one, rank 0's process) that
    this rank ends on a signal or a UserError, for the others to say when their next collective fails on its closed
    connections (word_left). The first word stays: a rank that fails on another's end leaves none of its own.
    _get_default_store is torch's own, not public: requirements.txt pins the torch it is tested with."""
    dist = _process_group()
    if dist is None:
        return
    rank, first_line = dist.get_rank(), str(end).partition("\n")[0]
    if isinstance(end, KeyboardInterrupt):
        word = f"another rank stopped (rank {rank} {'terminated' if isinstance(end, Terminated) else 'interrupted'})"
    else:
        word = f"another rank failed (rank {rank}: {first_line})"
    try:
        with _quiet_store():
            dist.distributed_c10d._get_default_store().compare_set(_word_key(), "", word)
    except (AttributeError, RuntimeError, ValueError):     # no store to reach (or the private API moved): the others
        pass                                                # show torch's traceback, as before


def word_left() -> str | None:
    """What leave_word left ('another rank failed (rank 1: ...)'), else None."""
    dist = _process_group()
    if dist is None:
        return None
    try:
        store, key = dist.distributed_c10d._get_default_store(), _word_key()
        with _quiet_store():
            return store.get(key).decode() if store.check([key]) else None
    except (AttributeError, RuntimeError, ValueError):     # the store went with the rank that kept it (no torchrun agent)
        return None


def _beside_the_others(main: Callable[[], Any]) -> None:
    """main(); in a process group a rank that fails alone (its node lacks a file) or is stopped alone closes its
    connections, and the others failed in their next collective with torch's traceback ('Connection closed by peer'):
    it leaves word, and they say it as their error. Any other failure keeps its traceback. The group is left on the
    way out (_leave_group)."""
    try:
        main()
    except (UserError, KeyboardInterrupt) as e:
        leave_word(e)
        raise
    except RuntimeError as e:
        raise_word_left(e)
        raise
    finally:
        _leave_group()


def raise_word_left(failed: RuntimeError, then: str = "") -> None:
    """A collective that `failed` on another rank's end (the word it left, word_left) as this rank's UserError, with
    `then` (a trainer's resume command) after it; with no word left, nothing: the failure keeps its traceback."""
    word = word_left()
    if word is not None:
        raise UserError(f"{word}; {then}" if then else word) from failed


def _leave_group() -> None:
    """Close a process group a script ended in (an error, a signal) rather than leave it to the interpreter's exit:
    launched without torchrun (srun), rank 0's process keeps the store, and torn down at exit while the other ranks
    were still connected it aborted ('terminate called without an active exception', exit -6, not 2)."""
    dist = _process_group()
    if dist is not None:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def note(message: str) -> None:
    say(f"note: {message}")


def warn(message: str) -> None:
    say(f"warning: {message}")


def interruptible() -> None:
    """A non-interactive shell starts a background job (`python3 ... &` in a script) with SIGINT ignored, so
    `kill -INT` would not stop it: Python's handler is put back, and it stops as on Ctrl-C (a training saying
    how to resume)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a cluster scheduler's time limit) raised as Ctrl-C is: the script stops the same way,
    its temporary files removed and a training's resume command said, where the signal's default ended it on the
    spot, leaving them."""


# _terminating: a SIGTERM came; _stopping: its Terminated is on its way up (cleared when Python swallowed it);
# _interrupted: a Ctrl-C's KeyboardInterrupt Python swallowed
_terminating, _stopping, _interrupted = threading.Event(), threading.Event(), threading.Event()


def _terminate(signum: int, frame: Any) -> None:
    """Terminated, raised once: a scheduler (SLURM) signals every process of a job and torchrun's agent forwards its
    own SIGTERM to the workers, so a second one came in the first one's cleanup, and cut it short (the resume
    command lost, a traceback, a temporary file left)."""
    _terminating.set()
    if not _stopping.is_set():
        raise_if_signalled()


def raise_if_signalled() -> None:
    """Terminated again, when SIGTERM came while Python ran a __del__ or a weakref callback (a DataLoader's
    iterator shutting down its workers at every epoch's end): raised there, it was only printed ('Exception
    ignored in') and a training went on until the scheduler's SIGKILL; and KeyboardInterrupt again when Ctrl-C
    came there, which a training trained on to its end. The trainer asks before every step. A later SIGTERM is
    ignored while this one goes up, as while the first one does."""
    if _terminating.is_set():
        _stopping.set()
        raise Terminated()
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt()


def _note_swallowed(hook: Callable[[Any], Any]) -> Callable[[Any], None]:
    """sys.unraisablehook that notes a Terminated or KeyboardInterrupt Python swallowed (see raise_if_signalled): a
    Ctrl-C's is raised again at the next step, and a later SIGTERM raises Terminated again in any script, rather
    than being ignored as a second one."""
    def note(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Terminated):
            _stopping.clear()
        elif isinstance(unraisable.exc_value, KeyboardInterrupt):
            _interrupted.set()
        hook(unraisable)
    return note


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """Python's warning line, written by tqdm.write like say()'s, so that it does not land on the end of a
    progress bar's line (every rank's: a warning may be one rank's own)."""
    from tqdm import tqdm

    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
    tqdm.write(text, file=file or sys.stderr)


def script_backend() -> None:
    """Scripts draw into files, with matplotlib's Agg unless $MPLBACKEND chooses. Chosen here, not when a module is
    imported: `import forecast` in a notebook or a Python session switched the session's backend to Agg, so its own
    figures (inline plots, plt.show) were no longer shown."""
    if "MPLBACKEND" not in os.environ:
        import matplotlib
        matplotlib.use("Agg")


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's main(); a UserError becomes one 'error:' line and exit status 2. Under torchrun the ranks
    usually meet the same error, and rank 0 says it (say_error); one met by a rank alone is said by the others as
    theirs (_beside_the_others). Ctrl-C exits with 130, SIGTERM (Terminated) with 143, as the shell counts a signal's
    death."""
    script_backend()
    interruptible()
    main_thread = threading.current_thread() is threading.main_thread()
    default_term = main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    unraisable_hook = sys.unraisablehook
    if default_term:
        signal.signal(signal.SIGTERM, _terminate)
        sys.unraisablehook = _note_swallowed(unraisable_hook)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            _beside_the_others(main)
    except UserError as e:
        try:
            say_error(str(e))
        except KeyboardInterrupt as stop:   # torchrun stopping a rank in its grace period: rank 0 said the error
            sys.exit(143 if isinstance(stop, Terminated) else 130)
        sys.exit(2)
    except KeyboardInterrupt as e:     # a trainer's carries how to resume; torchrun hands Ctrl-C to every rank
        word = "terminated" if isinstance(e, Terminated) else "interrupted"
        say(f"{word}; {e}" if str(e) else word)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    finally:
        if default_term:        # the default first: a SIGTERM from here on ends the process, none escapes as a traceback
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sys.unraisablehook = unraisable_hook
            _terminating.clear()
            _stopping.clear()
            _interrupted.clear()
