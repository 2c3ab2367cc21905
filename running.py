"""How a script runs and speaks: its notes, warnings and one-line errors (once under torchrun), Ctrl-C and SIGTERM
as clean stops, the word a rank that ends alone leaves the others, and run_main, which every script's main goes through.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any, Callable, Iterator, NoReturn

from paths import UserError


def say(text: str) -> None:
    """A line on stderr, once under torchrun (rank 0), whose ranks all meet the same note, error or Ctrl-C.
    Written by tqdm.write: a progress bar running (in a log, too) is cleared first and drawn again below it."""
    if os.environ.get("RANK", "0") == "0":
        from tqdm import tqdm      # here: this module imports nothing beyond the standard library and paths

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
    this rank ends on a signal, a UserError, a sys.exit or a failure of its own (a bug: its traceback, which it
    prints), for the others to say when their next collective fails on its closed connections (word_left). The first
    word stays: a rank that fails on another's end leaves none of its own.
    _get_default_store is torch's own, not public: requirements.txt pins the torch it is tested with."""
    dist = _process_group()
    if dist is None:
        return
    rank, first_line = dist.get_rank(), str(end).partition("\n")[0]
    if isinstance(end, KeyboardInterrupt):
        word = f"another rank stopped (rank {rank} {'terminated' if isinstance(end, Terminated) else 'interrupted'})"
    elif isinstance(end, SystemExit):      # sys.exit in one's own code: no traceback to point to
        status = _exit_status(end)
        said = first_line if status is None else f"exit status {status}"
        word = f"another rank exited (rank {rank}: {said})"
    elif isinstance(end, UserError):
        word = f"another rank failed (rank {rank}: {first_line})"
    else:
        said = f"{type(end).__name__}: {first_line}" if first_line else type(end).__name__    # `assert x` says none
        word = f"another rank failed (rank {rank}'s traceback: {said})"
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
    """main(); in a process group a rank that fails alone (its node lacks a file, a bug of its own) or is stopped
    alone closes its connections, and the others failed in their next collective with torch's traceback ('Connection
    closed by peer'), which the user read beside the failing rank's own, left to guess which came first: it leaves
    word, and they say it as their error. Its own failure keeps its traceback. The group is left on the way out
    (_leave_group), its word left before: the others read it as their collective fails."""
    try:
        main()
    except (UserError, KeyboardInterrupt, SystemExit) as e:
        leave_word(e)
        raise
    except Exception as e:
        if isinstance(e, RuntimeError):
            raise_word_left(e)
        leave_word(e)
        raise
    finally:
        _leave_group()


def raise_word_left(failed: RuntimeError, then: str = "") -> None:
    """A collective that `failed` on another rank's end (the word it left, word_left) as this rank's UserError, with
    `then` (a trainer's resume command) after it; with no word left, nothing: the failure keeps its traceback."""
    word = word_left()
    if word is not None:
        raise UserError(f"{word}; {then}" if then else word) from failed
    if orphaned():      # torchrun killed: its store, where the rank stopped first left word, went with it
        _stop_orphaned()


def _leave_group() -> None:
    """Close a process group a script ended in (an error, a signal), its connections to the other ranks with it, rather
    than leave it to the process's exit (_exit)."""
    dist = _process_group()
    if dist is not None:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _of_several() -> bool:
    """Whether this process is a rank of several, which may have joined their process group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "torch.distributed" in sys.modules


def _exit(code: int) -> NoReturn:
    """sys.exit(code); a rank of several processes ends with os._exit after flushing its output. torch's objects keep
    the process group (gloo's threads, and rank 0's store when launched without torchrun, as by srun) running past
    destroy_process_group, and torn down in the interpreter's exit while the other ranks are still connected it now
    and then aborts ('terminate called without an active exception', exit -6, not 2). Folders and files to remove
    went before this (training.training_main)."""
    if _of_several():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def counted(n: int, noun: str) -> str:
    """'1 record', '2 records': every message and report that counts says it so."""
    return f"{n} {noun}{'s' * (n != 1)}"


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


def in_thread(call: Callable[[], None], name: str) -> None:
    """call() in a daemon thread of its own, this one waiting 0.1 s at a time: a wait in C++ (torch's rendezvous)
    holds off Python's signal handlers, and a signal the kernel hands to that thread interrupts no join(), so a
    Ctrl-C or SIGTERM stopped it only after its own timeout. A stop leaves the thread waiting (a daemon): run_main
    ends a rank of several by os._exit."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:      # raised again in the waiting thread, as its own
            failed.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if failed:
        raise failed[0]


def stops_held(call: Callable[[], Any], raise_held: bool = True) -> Any:
    """call() whole, SIGTERM and SIGINT held off: blocked in this thread, so the processes it forks (a DataLoader's
    workers, train.num_workers > 0) inherit them blocked for life, and only noted should Python run their handlers
    meanwhile (the kernel hands a signal this thread blocks to another one, tqdm's monitor); raised once it returned
    (`raise_held`: False where a stop or an error is on its way up already, and ends the run anyway).
    - The workers: a scheduler's SIGTERM reaches every process of a job (SLURM signals the whole step, torchrun each
      worker's process group), and a loader worker died of it ('DataLoader worker (pid N) is killed by signal') or
      ran the training's SIGTERM handler, inherited by fork, up the main's stack (a second 'terminated; resume
      with' line). Its main stops it as it stops, once.
    - Whole: raised in the middle of torch's setup of an iterator, a stop lost it, its workers killed still in
      torch's SIGCHLD watch, which raised their deaths ('DataLoader worker exited unexpectedly'); in the middle of
      their teardown, it left them alive, and the process's exit waited for them without end.
    Every step that holds them off is undone in a `finally` of its own, so a stop raised as one is undone leaves none
    behind (a Ctrl-C only noted, SIGTERM blocked in this thread)."""
    if not hasattr(signal, "pthread_sigmask"):      # Windows: no fork, no masks
        return call()
    _deferring.set()
    interrupt = None
    try:
        interrupt = _noting_interrupts()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            return call()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    finally:
        try:
            if interrupt is not None:
                signal.signal(signal.SIGINT, interrupt)
        finally:
            _deferring.clear()
        if raise_held:
            raise_if_signalled()


def _noting_interrupts() -> Any:
    """Ctrl-C's handler made one that notes it (raise_if_signalled raises it), if it is Python's own in the main
    thread; the handler it replaced, to put back, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, lambda signum, frame: _interrupted.set())


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a cluster scheduler's time limit) raised as Ctrl-C is: the script stops the same way,
    its temporary files removed and a training's resume command said, where the signal's default ended it on the
    spot, leaving them."""


class _Flag:
    """threading.Event's set, clear and is_set without its lock, which the SIGTERM handler must not take: Python runs
    a handler between any two bytecodes of the main thread, its own too, and a second SIGTERM (SLURM's and torchrun's
    forwarded one, together) landing while the first handler held the lock of the Event it set waited on it forever,
    the rank silent until torchrun's SIGKILL. Nothing waits on these flags; each write is one store of a bool,
    whole with the GIL or without it (free-threaded Python), and handlers run in the main thread only."""

    def __init__(self) -> None:
        self._on = False

    def set(self) -> None:
        self._on = True

    def clear(self) -> None:
        self._on = False

    def is_set(self) -> bool:
        return self._on


# _terminating: a SIGTERM came; _stopping: its Terminated is on its way up (cleared when Python swallowed it);
# _interrupted: a Ctrl-C's KeyboardInterrupt Python swallowed
_terminating, _stopping, _interrupted = _Flag(), _Flag(), _Flag()
_deferring = _Flag()    # stops_held runs: a SIGTERM is only noted, and raised once it is done


def _terminate(signum: int, frame: Any) -> None:
    """Terminated, raised once: a scheduler (SLURM) signals every process of a job and torchrun's agent forwards its
    own SIGTERM to the workers, so a second one came in the first one's cleanup, and cut it short (the resume
    command lost, a traceback, a temporary file left)."""
    _terminating.set()
    if not _stopping.is_set() and not _deferring.is_set():
        raise_if_signalled()


def raise_if_signalled() -> None:
    """Terminated again, when SIGTERM came while Python ran a __del__ or a weakref callback (a DataLoader's
    iterator shutting down its workers at every epoch's end): raised there, it is only printed ('Exception
    ignored in') and a training would go on until the scheduler's SIGKILL; and KeyboardInterrupt again when Ctrl-C
    came there, which a training would otherwise train on to its end. The trainer asks before every step. A later
    SIGTERM is ignored while this one goes up, as while the first one does."""
    if _terminating.is_set():
        _stopping.set()
        raise Terminated()
    if _interrupted.is_set():
        _interrupted.clear()
        raise KeyboardInterrupt()


_launcher: int | None = None    # the process stop_when_orphaned watches (once a process); GONE: gone before it began
GONE = -1                       # never a parent's pid
_launcher_line: list[str] | None = None     # its command line, read as it began (launcher_argv)
_orphan_stop = threading.Lock()     # taken by the one stop of an orphaned worker (_stop_orphaned)


def stop_when_orphaned(poll_s: float = 1.0) -> None:
    """torchrun starts each worker in a session of its own, so a kill -9 of torchrun left its workers training and
    writing the run's files, beside a resume of the same run: a worker whose launcher is gone sends itself SIGTERM,
    and stops as on a scheduler's (Terminated), saying how to resume."""
    global _launcher, _launcher_line
    if _launcher is not None:
        return
    # killed while this worker started (importing torch): init adopted it already, and the launcher's pid is lost; a
    # torchrun that is pid 1 itself (a container's first process) names this worker in its command line
    parent, _launcher_line = os.getppid(), launcher_argv()
    _launcher = GONE if parent == 1 and _launcher_line is None else parent

    def watch() -> None:
        while not orphaned():
            time.sleep(poll_s)
        _stop_orphaned()

    threading.Thread(target=watch, name="stop_when_orphaned", daemon=True).start()


def orphaned() -> bool:
    """Whether the launcher stop_when_orphaned watches is gone, though its watch may not have looked yet."""
    return _launcher is not None and os.getppid() != _launcher


def _stop_orphaned() -> None:
    """SIGTERM to this worker, its launcher gone, saying why: once, from its watch or from a collective that failed on
    another worker's stop (raise_word_left), whichever comes first."""
    if _orphan_stop.acquire(blocking=False):
        pid = "" if _launcher == GONE else f", pid {_launcher}"
        note(f"the process that started this one (torchrun{pid}) is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)


def launcher_argv() -> list[str] | None:
    """The command line of the process that started this one, read on Linux (/proc), when it names this process's
    script (or module) and ends with its arguments, as torchrun passes them on; else None: no /proc, or another
    parent (init, which adopted this process when its launcher died). A watched launcher gone (stop_when_orphaned),
    its line as read while it ran: an orphaned rank 0 of a job over several nodes said a torchrun line without the
    run's rendezvous flags as its resume command."""
    if orphaned():
        return _launcher_line
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            parts = [os.fsdecode(part) for part in f.read().split(b"\0")[:-1]]
    except OSError:
        return None
    mine = sys.argv[1:]
    named = sys.argv[0] in parts or os.path.splitext(os.path.basename(sys.argv[0]))[0] in parts
    return parts if named and parts[len(parts) - len(mine):] == mine else None


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
    imported: then `import forecast` in a notebook or a Python session would switch the session's backend to Agg,
    and its own figures (inline plots, plt.show) would no longer show. Through $MPLBACKEND, which matplotlib reads
    when first imported: importing it here to choose would make every script's --help wait 0.4 s for plots."""
    if "MPLBACKEND" in os.environ:
        return
    if "matplotlib" in sys.modules:         # imported already: it reads $MPLBACKEND no more
        sys.modules["matplotlib"].use("Agg")
    else:
        os.environ["MPLBACKEND"] = "Agg"


_scripts: list[str] = []      # sys.argv[0] of each run_main running: a script runs, not Python calling a main


def script_running() -> str | None:
    """The script run_main runs (its sys.argv[0]), None when a main was called from Python (a notebook, whose
    sys.argv[0] is its kernel's ipykernel_launcher.py)."""
    return _scripts[-1] if _scripts else None


@contextlib.contextmanager
def _lines_as_printed() -> Iterator[None]:
    """stdout written at each line's end, as on a terminal: to a log file or pipe (nohup, a SLURM job's --output,
    | tee) Python holds a script's lines in an 8 KB buffer, so a line said before minutes of work ('encoding the
    windows once') would come after it, and a job killed outright would lose them. Buffered as before afterwards."""
    out = sys.stdout
    switch = getattr(out, "line_buffering", None) is False and hasattr(out, "reconfigure")
    if switch:
        out.reconfigure(line_buffering=True)
    try:
        yield
    finally:
        if switch:
            out.reconfigure(line_buffering=False)


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's main(); a UserError becomes one 'error:' line and exit status 2. Under torchrun the ranks
    usually meet the same error, and rank 0 says it (say_error); one met by a rank alone is said by the others as
    theirs (_beside_the_others). Ctrl-C exits with 130, SIGTERM (Terminated) with 143, as the shell counts a signal's
    death. Any other failure keeps its traceback and exit status 1; a rank of several prints it and leaves by _exit
    too, not by the interpreter's exit, as it does when its main ends well or calls sys.exit."""
    script_backend()
    interruptible()
    with _sigterm_as_stop():
        _scripts.append(sys.argv[0] if sys.argv else "")
        try:
            with warnings.catch_warnings(), _lines_as_printed():
                warnings.showwarning = show_warning
                _beside_the_others(main)
        except UserError as e:
            try:
                say_error(str(e))
            except KeyboardInterrupt as stop:   # torchrun stopping a rank in its grace period: rank 0 said the error
                _exit(_stop_status(stop))
            _exit(2)
        except KeyboardInterrupt as e:     # a trainer's carries how to resume; torchrun hands Ctrl-C to every rank
            word = "terminated" if isinstance(e, Terminated) else "interrupted"
            say(f"{word}; {e}" if str(e) else word)
            _exit(_stop_status(e))
        except Exception:
            if not _of_several():
                raise
            sys.excepthook(*sys.exc_info())     # as the interpreter prints it (torch's hook: each line after its rank)
            _exit(1)
        except SystemExit as e:     # as the interpreter ends on it, but a rank of several by _exit, as above
            if not _of_several():
                raise
            status = _exit_status(e)
            if status is None:
                print(e.code, file=sys.stderr)
            _exit(1 if status is None else status)
        finally:
            _scripts.pop()
    if _of_several():       # a run that ended well too: its rank 1 aborted in the teardown once in a CI run (_exit)
        _exit(0)


def _exit_status(end: SystemExit) -> int | None:
    """The exit status sys.exit(code) ends with, as Python counts it; None for a message (printed, status 1)."""
    return end.code or 0 if end.code is None or isinstance(end.code, int) else None


def _stop_status(stop: KeyboardInterrupt) -> int:
    """The exit status of a death by SIGTERM (Terminated) or SIGINT, as the shell counts it: 128 + the signal."""
    return 143 if isinstance(stop, Terminated) else 130


@contextlib.contextmanager
def _sigterm_as_stop() -> Iterator[None]:
    """SIGTERM raised as Terminated while a script's main runs, and a stop Python swallowed noted (_note_swallowed);
    only where SIGTERM has its default handler in the main thread: a caller's own handler is left alone."""
    main_thread = threading.current_thread() is threading.main_thread()
    default_term = main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    unraisable_hook = sys.unraisablehook
    if default_term:
        signal.signal(signal.SIGTERM, _terminate)
        sys.unraisablehook = _note_swallowed(unraisable_hook)
    try:
        yield
    finally:
        if default_term:        # the default first: a SIGTERM from here on ends the process, none escapes as a traceback
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sys.unraisablehook = unraisable_hook
            _terminating.clear()
            _stopping.clear()
            _interrupted.clear()
