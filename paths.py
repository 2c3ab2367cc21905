"""Where raw data, prepared tensors, results and checkpoints live, and how files are written.

Every location has a default under the repository and an environment variable, and most have a
command-line flag in the scripts that use them (the flag wins, then the variable, then the default).
UserError, a problem the user can fix, is here too (running imports it; paths imports nothing of the project):
running.run_main says it in one line.

Whether a path as the user gave it exists, or is a file or a folder, is asked of os.path, not of Path: Python
3.11's Path.exists, is_file, is_dir (and glob) raise the OSError where a path cannot be looked at (a name too long,
a folder that may not be searched), a traceback in place of the error naming the path, where os.path's say False.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent
ENV = {
    "data": ("MITBIH_DIR", ROOT / "data" / "mitdb"),
    "prepared": ("ECG_PREPARED_DIR", ROOT / "data" / "prepared"),
    "results": ("ECG_RESULTS_DIR", ROOT / "results"),
    "checkpoints": ("ECG_CHECKPOINTS_DIR", ROOT / "checkpoints"),
}
FLAGS = {"data": "--data-dir", "prepared": "--prepared", "results": "--results", "checkpoints": "--checkpoints"}
# The shipped models (see pretrained/README.md): the Transformer is the default wherever one model is meant.
SHIPPED = {"transformer": ROOT / "pretrained" / "forecaster.pt", "latent_sde": ROOT / "pretrained" / "latent_sde.pt"}
PRETRAINED = SHIPPED["transformer"]
SHIPPED_SPECS = {"pretrained": "transformer", "pretrained_sde": "latent_sde"}   # their command-line names
SHIPPED_NAMES = {model: name for name, model in SHIPPED_SPECS.items()}          # and the other way round


class UserError(Exception):
    """A problem the user can fix (bad file, key or value); printed as one line, never a traceback."""


def shipped_checkpoint(spec: str, flag: str) -> Path:
    """The file of the shipped model named `spec` on the command line (SHIPPED_SPECS: evaluate.py --model and
    forecast.py --checkpoint take the same names); `flag` is the option that takes a checkpoint path instead."""
    path = SHIPPED[SHIPPED_SPECS[spec]]
    if not path.is_file():
        raise UserError(f"no shipped model at {path}: run `make {spec.replace('_', '-')}` or pass {flag} CHECKPOINT")
    return path


def named_checkpoint(spec: str | os.PathLike, flag: str) -> Path:
    """The checkpoint file `spec` names: a path, or a shipped model by its command-line name (shipped_checkpoint),
    as evaluate.py --model, forecast.py --checkpoint and vqvae_eval take them."""
    return shipped_checkpoint(str(spec), flag) if str(spec) in SHIPPED_SPECS else Path(spec)


def existing_checkpoint(spec: str, flag: str, refused: str, shipped: tuple[str, ...] = tuple(SHIPPED_SPECS)) -> Path:
    """The checkpoint file `flag`'s `spec` names (named_checkpoint), refused when it is no file: a shipped model's
    Python name among `shipped` (the shipped models the flag can use) with its command-line name, anything else
    with `refused`, what the flag takes. evaluate.py --model, forecast.py --checkpoint and given_checkpoint's flags
    say it their own way."""
    path = named_checkpoint(spec, flag)
    if not os.path.exists(path):        # a folder is said to be one by read_checkpoint; os.path's: see above
        if SHIPPED_NAMES.get(spec) in shipped:
            check_python_name(spec, flag)
        unsaved = unsaved_run(Path(path).parent)
        raise UserError(f"{flag} {spec}: no such checkpoint file"
                        f"{f' ({Path(path).parent} is {unsaved})' if unsaved else refused}")
    return path


# a training run's folder (new_run_dir): <experiment>-<time>, then -<n> when another run took the name that second
RUN_FOLDER = re.compile(r".+-\d{8}-\d{6}(-\d+)?")


def unsaved_run(folder: str | os.PathLike) -> str:
    """What `folder` is when it is a training run's folder holding no checkpoint ("" for any other): a run killed
    before its first epoch ended (kill -9, the out-of-memory killer) leaves it so, its run.json too, as nothing could
    tidy it away (a run stopped otherwise drops it); a run in its first epoch looks the same. Said where a checkpoint
    was looked for in it: "checkpoint not found" left the user guessing why."""
    folder = Path(folder)
    try:
        if not (RUN_FOLDER.fullmatch(folder.name) and os.path.isdir(folder)):
            return ""
        held = {p.name for p in folder.iterdir() if not p.name.startswith(".")}    # hidden: a save's temporary file
    except OSError:             # a folder that cannot be looked in: the caller's own error says enough
        return ""
    if any(name.endswith(".pt") for name in held) or (held and "run.json" not in held):
        return ""               # no training's (an evaluation's or a forecast's results, a folder of one's own)
    if "metrics.csv" in held:   # its run logged epochs: a results folder, its checkpoints kept apart
        return (f"a training run's results folder, which holds no checkpoint: its run saved them in the checkpoints "
                f"folder's {folder.name}/")
    return ("a training run's folder without checkpoints: its run is still in its first epoch, or was killed before "
            "that epoch ended and saved nothing to load or resume")


def given_checkpoint(spec: str, flag: str, takes: str, shipped: tuple[str, ...] = tuple(SHIPPED_SPECS)) -> Path:
    """The checkpoint file a trainer's or vqvae_eval's flag names (existing_checkpoint), refused with what `flag`
    takes (`takes`, then the names of the shipped models it can use, `shipped`): read_checkpoint said only
    'checkpoint not found', and --vqvae pretrained, which evaluate.py --model pretrained loads, looked for a file
    named pretrained. --crps-from takes pretrained_sde alone: the Transformer is no latent SDE to fine-tune."""
    return existing_checkpoint(spec, flag, f"; {flag} takes {takes} or a shipped model ({', '.join(shipped)})", shipped)


def check_python_name(spec: str, flag: str) -> None:
    """A missing checkpoint `spec` that is a shipped model's Python name (from_pretrained's 'latent_sde') is refused
    with its command-line name: the list of every name the flag takes left the user to match the two up."""
    if cli := SHIPPED_NAMES.get(spec):
        raise UserError(f"{flag} {spec}: no such checkpoint file; the shipped {spec} model is {flag} {cli} on the "
                        f"command line ('{spec}' is its name in Forecaster.from_pretrained(model=...))")


def given_path(value: str) -> str:
    """argparse type of every file and folder flag: an empty value (`--out "$DIR"` with DIR unset) meant the flag's
    default without a word, data/prepared or a fresh training instead of --resume's. A leading ~ is the home folder,
    as location's: the shell leaves it in `--out=~/x` and main([...]) from Python, and forecast.py wrote into a
    folder named ~ in the working folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return os.path.expanduser(value)


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


def script_command(script: str, argv: Sequence[str] | None, kinds: Sequence[str] = ()) -> str:
    """`python3 <script>` with the flags this run was given (its main's `argv`, else sys.argv's), as command_line
    says it after the variables of the locations `kinds`: what a report or an output records to make it again."""
    return command_line(["python3", script, *(sys.argv[1:] if argv is None else argv)], kinds)


def command_line(words: Sequence[str], kinds: Sequence[str] = ()) -> str:
    """`words` quoted as a shell needs them, after the variables of the locations `kinds` (ENV's) this process was
    given: said again without them, a report's command reads and writes the default folders, not its own."""
    return with_locations(shlex.join(words), kinds, words)


def with_locations(command: str, kinds: Sequence[str], words: Sequence[str] = ()) -> str:
    """A shell command after the assignments of the variables of the locations `kinds` this process was given, but
    for those whose flag (FLAGS) is among the command's `words`: the flag wins over the variable, so it would say
    nothing."""
    flagged = {k for k in kinds if any(w == FLAGS[k] or w.startswith(FLAGS[k] + "=") for w in words)}
    given = [f"{ENV[k][0]}={shlex.quote(os.environ[ENV[k][0]])}" for k in kinds
             if k not in flagged and os.environ.get(ENV[k][0])]
    return " ".join([*given, command])


SHARED_MITDB = ROOT.parent / "shared" / "data" / "mitdb"      # where the project's machines keep MIT-BIH
DATA_DEFAULT = "$MITBIH_DIR, else data/mitdb (../shared/data/mitdb when only it has records)"    # location's, said


def location(kind: str, override: str | os.PathLike | None = None) -> Path:
    """Resolve one of 'data', 'prepared', 'results', 'checkpoints': flag, then env var, then default. The data's
    default is the Makefile's too: data/mitdb, or the shared copy beside the repository when only it has records
    (`python3 prepare_mitbih.py` tried a download into an empty data/mitdb where `make prepare` read that copy)."""
    var, default = ENV[kind]
    given = override or os.environ.get(var)
    if given:
        return Path(given).expanduser()
    if kind == "data" and not has_records(default) and has_records(SHARED_MITDB):
        return SHARED_MITDB
    return default


def has_records(folder: Path) -> bool:
    """Whether `folder` holds a WFDB header; a folder that is missing or cannot be read holds none."""
    try:
        return any(folder.glob("*.hea"))
    except OSError:
        return False


def cache_dir(prepared: str | os.PathLike | None = None) -> Path:
    """Where encodings of the prepared windows are kept: encodings/ in $ECG_CACHE_DIR, else in the prepared
    folder; one folder of its own, so that clearing it touches nothing else."""
    return Path(os.environ.get("ECG_CACHE_DIR") or location("prepared", prepared)).expanduser() / "encodings"


def new_run_dir(experiment: str, results: str | os.PathLike | None, checkpoints: Path) -> Path:
    """A training's fresh folder results/<experiment>-<time> so runs never overwrite each other, its name taken in
    the `checkpoints` root too, its folder made: two runs of their own --results and one checkpoints root, started in
    the same second, wrote into one checkpoint folder, each over the other's best.pt. (The evaluations write into a
    staging_folder, published whole by publish_run_dir.)"""
    base = location("results", results)
    for run in _run_names(experiment, base):
        if not _made(run, "results"):
            continue
        if Path(checkpoints).resolve() == base.resolve():   # one root: one folder for both
            return run
        if _made(checkpoints / run.name, "checkpoint"):
            return run
        run.rmdir()             # made just now, so empty: the name is taken in the checkpoints root


WRITING_PART = ".writing-"      # the hidden folder a run's files are written into before they are its (staging_folder)


def staging_folder(folder: Path) -> Path:
    """A hidden folder in `folder` to write a run's files into, theirs only once all are whole: renamed a
    results/<experiment>-<time> (publish_run_dir), or each moved in (moved_in). An evaluation killed outright (kill -9,
    the out-of-memory killer) while writing its plots and tables left an evaluate-<time> folder with metrics.json and
    no report.md, to be taken for a finished run; a forecast into an --out holding an earlier one, its new samples
    beside the earlier plot and settings. Those a kill -9 left are removed by the next run into `folder`
    (remove_stale_parts)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(folder, WRITING_PART, "run")
        return owned_folder(folder, WRITING_PART)
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}") from e


def publish_run_dir(staging: Path, experiment: str, results: str | os.PathLike | None = None) -> Path:
    """The staged folder renamed, in one step, to a fresh results/<experiment>-<time> (as new_run_dir names them)."""
    base = location("results", results)
    for run in _run_names(experiment, base):
        if os.path.lexists(run):
            continue
        try:
            os.rename(staging, run)
            return run
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):      # the name taken meanwhile by another run
                continue
            raise UserError(f"cannot rename {staging} to {run}: {e.strerror or e}") from e


def _run_names(experiment: str, base: Path) -> Iterator[Path]:
    """base/<experiment>-<time>, then -1, -2, ... for runs started in the same second; a UserError past 1000."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        yield base / (f"{experiment}-{stamp}" + (f"-{n}" if n else ""))
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


def check_writable(folder: str | os.PathLike, keep: bool = True) -> Path:
    """Create `folder` if needed and prove a file can be written there, before any long work starts. `keep=False`
    removes the folders made for the proof again (the atomic writes make them): a run refused for its input after
    it, forecast.py's or prepare_mitbih.py's into a new --out, left that folder empty. A link to a folder not there
    (shared data not mounted), or one above it, is named as such (broken_link)."""
    folder = Path(folder)
    made = [f for f in (folder, *folder.parents) if not os.path.lexists(f)]      # deepest first; os.path's: see above
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(prefix=".write-test.", dir=folder):
            pass
    except OSError as e:
        link, file = broken_link(folder), next((f for f in (folder, *folder.parents) if os.path.isfile(f)), None)
        why = (f"{'it' if link == folder else link} is a link to {link.readlink()}, which does not exist" if link
               else f"{'it' if file == folder else file} is a file" if file else e.strerror or e)
        raise UserError(f"cannot write to the output folder {folder}: {why}") from e
    finally:
        for f in made if not keep else ():
            if not os.path.isdir(f):
                continue            # not made: mkdir stopped above it
            try:
                f.rmdir()
            except OSError:         # no longer empty: another's now
                break
    return folder


def broken_link(path: str | os.PathLike) -> Path | None:
    """The link to nothing (shared data not mounted) that `path` is or is below, else None: under it no folder can be
    made, and mkdir said only 'File exists', which named neither the link nor what is missing."""
    path = Path(path)
    return next((f for f in (*reversed(path.parents), path) if os.path.islink(f) and not os.path.exists(f)), None)


# a hidden working folder (a download's, a preparation's, a run's .writing-* staging: owned_folder) untouched this long
# is no live run's: a download's STALL_LIMIT ends one, and a preparation or a run's staging writes its files in minutes
QUIET_PART_S = 24 * 3600.0


def owned_folder(folder: Path, prefix: str) -> Path:
    """A new hidden working folder in `folder` named `prefix`SPACE-PID-* after its owner (process_space, pid): a
    later run removes it when a kill -9 or a crash left it (remove_stale_parts), and leaves a live run's alone."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{process_space()}-{os.getpid()}-", dir=folder))


def remove_stale_parts(folder: Path, prefix: str, what: str) -> None:
    """The working folders `prefix`* in `folder` (owned_folder's) of a `what` ('download') whose process is gone
    removed, each said in a line: one left by kill -9 (or a machine's crash) was passed over by every run, there for
    ever. Only those whose name says this process_space and a pid no process has: a live run's (another run's now; a
    pid reused counts as live) stays, and so do one of another host or container, whose processes this one cannot
    see, and one whose name says no owner (made before names did), each said in a line for the user to judge. A link
    of such a name is no run's (mkdtemp makes folders), and rmtree refused it on every run. Any folder untouched for
    a day (QUIET_PART_S) goes: no live run is that quiet, and those this process cannot judge (of another host, or
    made before names said their owner) were otherwise said on every run for ever."""
    space = process_space()
    for part in sorted(p for p in folder.glob(f"{prefix}*") if p.is_dir() and not p.is_symlink()):
        name, pid, _ = (part.name[len(prefix):].rsplit("-", 2) + ["", ""])[:3]
        if (quiet := quiet_for(part)) > QUIET_PART_S:
            days = int(quiet // 86400)
            remove_part(part, f"a {what}'s folder untouched for over {days} day{'s' * (days != 1)}")
        elif not (pid.isascii() and pid.isdigit()) or int(pid) <= 0:     # '²' is a digit int() refuses
            print(f"left {part}: a {what}'s folder that names no process; remove it if no {what} runs there")
        elif name != space:
            print(f"left {part}: a {what}'s folder of {name}, another host or container, whose processes this one "
                  f"cannot see; remove it if no {what} runs there")
        elif not alive(int(pid)):
            remove_part(part, f"the folder of a {what} whose process ({pid}) is gone")


def remove_part(part: Path, what: str) -> None:
    """A stale working folder removed, and said with `what` it was: an owner's gone process and a day's quiet
    say why in the same words, and one rmtree could not remove (another user's files) is said so, not as gone."""
    shutil.rmtree(part, ignore_errors=True)
    print(f"{'cannot remove' if part.exists() else 'removed'} {part}, {what}")


def quiet_for(part: Path) -> float:
    """Seconds since anything in working folder `part` last changed, links as themselves (one whose target went
    is no change); 0 when the folder or a file in it went while read (a live run moving its files out), so
    that it is judged by its name. A subfolder it cannot read counts by its own time (pathlib skips its files)."""
    try:
        newest = max([part.lstat().st_mtime, *(p.lstat().st_mtime for p in part.rglob("*"))])
    except OSError:
        return 0.0
    return time.time() - newest


def process_space() -> str:
    """Whose pids a working folder's pid is: the host's name and, where Linux shows it, its pid namespace
    ('HOST~INODE'). Containers given one host name (host networking) each have pids of their own, and one took
    another's live download, its pid free here, for one killed."""
    host = socket.gethostname()
    try:
        return f"{host}~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return host


def alive(pid: int) -> bool:
    """Whether a process this one can see (its pid namespace, process_space) has `pid`: another user's too; none has
    one beyond the system's pid_t."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass
    return True


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
def written_together(folder: Path, again: str, every: Sequence[str] = ()) -> Iterator[list[str]]:
    """The files of one result, each written atomically, the names of those written appended to the list yielded:
    stopped between two (Ctrl-C, a full disk), the message says which are this run's, beside what was there
    before, and `again` how to go on. Stopped once all of `every` (the result's files) are written (a Ctrl-C just
    after the last), it says the result is whole: 'holds only' all of them sent the user to make it again."""
    written: list[str] = []
    try:
        yield written
    except (KeyboardInterrupt, UserError) as e:
        if not written:
            raise
        if every and set(every) <= set(written):
            part = (f"{folder} holds this run's result whole ({', '.join(every)}): it was stopped only once all "
                    f"were written")
        else:
            part = f"{folder} holds only {', '.join(written)} of this run, beside what was there before: {again}"
        raise type(e)(f"{e}; {part}" if str(e) else part) from None


def moved_in(moves: Sequence[tuple[Path, Path]], folder: Path, again: str) -> None:
    """A result's files, written whole beside `folder` (`moves`: staged file, its place in `folder`), renamed in one
    after another as written_together says them: a file counts as moved once it is gone from its stage, so one a
    Ctrl-C lands just after counts, and once all are in the result is said whole. A rename that fails names its file."""
    with written_together(folder, again, [dst.name for _, dst in moves]) as written:
        try:
            for src, dst in moves:
                try:
                    os.replace(src, dst)
                except OSError as e:
                    raise UserError(f"cannot write {dst}: {e.strerror or e}") from e
        finally:
            written.extend(dst.name for src, dst in moves if not os.path.lexists(src))


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
    with open(path, "rb") as f:
        return opened_sha256(f)


def opened_sha256(f: BinaryIO) -> str:
    """file_sha256 of an open file, which is left at its start again: a checkpoint hashed and then loaded through
    one handle is hashed as loaded, even if its path is given another file meanwhile (atomic_torch_save's rename)."""
    h = hashlib.sha256()
    hash_stream(h, f)
    f.seek(0)
    return h.hexdigest()[:16]


def hash_file(h: Any, path: str | os.PathLike) -> None:
    """Feed a file's bytes to hash `h` a MB at a time: read whole, a 24 h record's .dat (86 MB at 250 Hz) sat in
    memory beside a forecast that reads only seconds of it."""
    with open(path, "rb") as f:
        hash_stream(h, f)


def hash_stream(h: Any, f: BinaryIO) -> None:
    """hash_file's loop on an open file, from where it is to its end."""
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)


def run_data_hash(split: dict[str, Any]) -> str:
    """The prepared data a run read, as run.json and reconstruction.json name it: the data config's hash and the
    input files' ("config/files"), the config's alone being the same for any database prepared with it. One
    format, so a training run and an evaluation of its model compare equal on the same data."""
    return f"{split['data_hash']}/{split['input_hash']}"


def git_commit(besides: tuple[str, ...] = ()) -> str:
    """The commit of this checkout (with '-dirty' when files differ, files `besides` aside), recorded next to every
    result; "unknown" when the code is not in one: a copy outside git, a repository without commits, or inside
    another repository that does not track it (whose commit says nothing of this code)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "--verify", "-q", "HEAD")
        if head.returncode or not git("ls-files", "--", ".").stdout.strip():
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    *(f":(exclude){p}" for p in besides)).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty else "")
