"""PhysioNet's MIT-BIH fetched into a data folder, whole or not at all and never hung: prepare_mitbih.py reads it."""
from __future__ import annotations

import functools
import importlib
import io
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any, Callable, NoReturn

import paths
import running
from paths import UserError

DOWNLOAD_PART = ".download-"   # the hidden folder in the data folder that a download arrives in (+ SPACE-PID-*,
                               # SPACE its paths.process_space: HOST~INODE)
CONNECT_TIMEOUT = 20.0         # seconds PhysioNet (or the proxy) has to answer before a download starts
STALL_LIMIT = 120.0            # seconds a download may go without an answer, a byte received or a file before it
                               # is given up (a server or proxy that stopped sending)
START_LIMIT = 120.0            # seconds the download's process has to start fetching (its imports: wfdb's, FETCH's)
FETCH = "wfdb:dl_database"     # module:function the download's child process calls with ("mitdb", its folder)


def download_mitbih(data_dir: Path, hint: str) -> list[str]:
    """MIT-BIH from PhysioNet into data_dir, its record names; a failure is one line ending in `hint` (what to
    do instead), and leaves no empty folder behind. The files arrive in a hidden folder in data_dir (beside it, a
    mount or a read-only parent took none) and move out once all are there: a download cut short left some
    records, and the next run prepared them as the database. The folder's name says whose it is (process_space and
    pid: paths.owned_folder), so that the next download removes it when a kill -9 left it (paths.remove_stale_parts)."""
    from prepare_mitbih import _first_line, header_stems     # here, not at the top: prepare_mitbih imports this module
    created = not os.path.exists(data_dir)
    part = None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        paths.remove_stale_parts(data_dir, DOWNLOAD_PART, "download")     # a kill -9's: MIT-BIH is 100 MB
        part = paths.owned_folder(data_dir, DOWNLOAD_PART)
        import wfdb
        url = wfdb.io.download.config.db_index_url
        reach_physionet(url)
        host = urllib.parse.urlsplit(url).hostname or url
        watched(part, url, host, STALL_LIMIT, START_LIMIT)
        move_in(part, data_dir)
    except Exception as e:  # wfdb raises requests' errors, OSError, ValueError... (in the child: FetchFailed)
        name = e.name if isinstance(e, FetchFailed) else type(e).__name__
        raise UserError(f"no WFDB records in {data_dir}, and downloading MIT-BIH from PhysioNet there failed "
                        f"({name}: {_first_line(e, 100)}): {hint}") from e
    finally:                # neither a part of a download nor a folder made for one that brought nothing is left
        if part is not None:
            shutil.rmtree(part, ignore_errors=True)
        if created and os.path.isdir(data_dir) and not any(data_dir.iterdir()):
            data_dir.rmdir()
    names = header_stems(data_dir)
    if not names:
        raise UserError(f"the download into {data_dir} produced no records: {hint}")
    print(f"no WFDB records were in {data_dir}: downloaded MIT-BIH from PhysioNet there "
          f"({running.counted(len(names), 'record')})")
    return names


def reach_physionet(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect once to the host (or proxy) that `url` is fetched from: wfdb's requests have no timeout, so on a
    network that drops packets (a firewall) the download would hang for ever instead of failing. The proxy is the
    one requests chooses ($https_proxy, else $all_proxy; none for a host $no_proxy names): a direct connect behind
    $all_proxy alone would refuse a download that works."""
    import requests.utils
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if proxy := requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url)):
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        default = 443 if via.scheme == "https" else 1080 if via.scheme.startswith("socks") else 80
        host, port = via.hostname or "", via.port or default
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else e.strerror or str(e)
        raise ConnectionError(f"cannot connect to {host}:{port}: {why}") from e


def watched(folder: Path, index_url: str, host: str, stall: float, start: float) -> None:
    """FETCH (wfdb.dl_database) of MIT-BIH from `index_url` into `folder`, in a child process, given up
    (TimeoutError) when `stall` seconds pass with no answer to a request (urllib3's log of it, which the child
    passes on), no byte received (the child's count: wfdb writes a file once it has all of it) and no byte more in
    `folder`: wfdb's requests have no timeout, so a server or proxy that stopped sending after the connect hung the
    download for ever. The stall clock starts when the child fetches; until then it has `start` seconds from its
    launch for its imports (wfdb's with numpy's, pandas' and scipy's: seconds, tens on a cold network filesystem),
    else it is given up too: an import that blocked (a filesystem that hangs) waited for ever. A bound of its own,
    not the stall's: the imports are this machine's, not the server's. A process, not a thread: given up, failed or
    stopped (Ctrl-C, SIGTERM) it is killed, where a thread went on waiting, and, the server back, brought files
    again into the folder removed (a notebook's session goes on). Its failure is FetchFailed, its prints are
    printed here, and the urllib3 records it passes on are logged here as this process's logger shows them."""
    where = [str(Path(__file__).resolve().parent), *sys.path]      # the modules this process sees, FETCH's too
    command = [sys.executable, "-c", _CHILD, json.dumps(where), FETCH, index_url, str(folder)]
    # a session of its own: the terminal's Ctrl-C reaches this process alone, which stops the child
    try:
        # utf-8, each byte that is not printed as U+FFFD: a C library's latin-1 stopped the reading thread in a
        # UnicodeDecodeError, and this process then waited for ever for a child that had ended
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, encoding="utf-8",
                                 errors="replace", start_new_session=True)
    except (OSError, ValueError, TypeError) as e:    # a venv removed under a session, an embedded Python's ''
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise RuntimeError(f"cannot start Python for the download's process ({why}): sys.executable is "
                           f"{sys.executable!r}") from e
    said: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pass_on, args=(child.stdout, said), name="download_mitbih", daemon=True).start()
    log = logging.getLogger("urllib3.connectionpool")
    answers, received, failed, seen, since = 0, 0, None, None, None
    launched = time.monotonic()
    try:
        while (line := _next_line(said)) is not None:
            message = _said(line)
            if "out" in message:
                print(message["out"], end="", flush=True)
            elif "log" in message:
                answers += 1
                level, text = message["log"]
                if log.isEnabledFor(level):
                    log.handle(logging.makeLogRecord({"name": log.name, "levelno": level, "msg": text,
                                                      "levelname": logging.getLevelName(level)}))
            elif "failed" in message:
                failed = FetchFailed(*message["failed"])
            elif "received" in message:
                received = message["received"]
            elif "fetching" in message:     # the clock starts: a child slow to start (importing wfdb) is no stall
                since = time.monotonic()
            if since is None:       # "" each 0.1 s the child is silent: its start is timed however it hangs
                if time.monotonic() - launched >= start and child.poll() is None:
                    raise TimeoutError(f"the download's process did not start fetching within {start:g} s (an "
                                       f"import hung?)")
                continue
            files = [f.stat().st_size for f in folder.rglob("*") if f.is_file()]
            now = (answers, received, len(files), sum(files))
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= stall and child.poll() is None:     # one that has ended is not given up
                raise TimeoutError(f"nothing came from {host} for {stall:g} s, after {len(files)} files "
                                   f"({sum(files) / 1e6:.1f} MB, not kept)")
        code = child.wait()
    finally:
        _stop(child)
    if failed is not None:
        raise failed
    if code != 0:
        raise RuntimeError(f"its process ended with {f'signal {-code}' if code < 0 else f'exit status {code}'}")


# The download's child process: this module's fetch_in_child, this module found where watched's process found it
_CHILD = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); import download; "
          "download.fetch_in_child(*sys.argv[2:])")


class FetchFailed(Exception):
    """What the download's child process raised, by the name it has there (requests' ConnectionError, an HTTPError):
    the exception itself stays in the child, whose modules this process may not have."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _pass_on(pipe: IO[str], said: queue.Queue[str | None]) -> None:
    """The lines the child says, put in `said` as they come, then None when it has ended (its stdout closed)."""
    with pipe:
        for line in pipe:
            said.put(line)
    said.put(None)


def _said(line: str) -> dict:
    """The message a line of the child's stdout says ({} for none); a line it did not say (a C library writing to
    fd 1 before fetch_in_child took it over) is a print, which failed a download that worked as a JSONDecodeError."""
    try:
        message = json.loads(line) if line else {}
    except ValueError:
        return {"out": line}
    return message if isinstance(message, dict) else {"out": line}


def _next_line(said: queue.Queue[str | None]) -> str | None:
    """The child's next line; "" when none came within 0.1 s (watched looks at the folder then), None at its end.
    A wait in 0.1 s steps: Ctrl-C and SIGTERM stop it at once."""
    try:
        return said.get(timeout=0.1)
    except queue.Empty:
        return ""


def _stop(child: subprocess.Popen) -> None:
    """The download's child ended: SIGTERM, then SIGKILL when it is still there after a second; nothing of it runs
    on, to bring files into a folder removed."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(1.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdin is not None:
        child.stdin.close()


def fetch_in_child(fetch: str, index_url: str, folder: str) -> NoReturn:
    """The download's child process (watched): `fetch` (module:function) of MIT-BIH from `index_url` into `folder`,
    saying on stdout, a JSON line each, when it starts, what it prints, each record urllib3's pool logs (the answers
    the stall rule counts) and what it failed with. It ends when its parent does (its stdin closes): a parent killed
    (kill -9) stops it no more, and a download with no timeout would go on. It ends as soon as `fetch` returns or
    fails (os._exit): its interpreter's teardown (numpy's, pandas', wfdb's: 2 s on a loaded machine) or a thread a
    library left held its exit off past the stall limit, and a download that had all its files was given up."""
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)               # the stdout of a C library too: only the lines said here go to the parent
    lock = threading.Lock()

    def say(**message: Any) -> None:
        with lock:      # wfdb downloads in two threads
            report.write(json.dumps(message) + "\n")
            report.flush()

    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(1)), name="parent_gone", daemon=True).start()
    sys.stdout = _Printed(say)
    log = logging.getLogger("urllib3.connectionpool")
    log.addHandler(_Passed(say))
    log.setLevel(logging.DEBUG)
    log.propagate = False
    count_received(say)
    code = 0
    try:
        import wfdb
        wfdb.set_db_index_url(index_url)        # one a notebook set (a mirror), as reach_physionet connected to
        module, _, name = fetch.partition(":")
        fetch_mitbih = getattr(importlib.import_module(module), name)
        say(fetching=True)
        fetch_mitbih("mitdb", folder)
    except BaseException as e:      # all of it said, once, to the parent
        say(failed=[type(e).__name__, str(e)])
        code = 1
    for stream in (sys.__stdout__, sys.stderr):     # fd 1 is stderr's now (a C library's lines): both kept
        if stream is not None:
            stream.flush()
    with lock:          # no message cut short
        os._exit(code)


def count_received(say: Callable[..., None], every: float = 0.25) -> None:
    """The bytes the download's child receives on its sockets, said as a running total (`received`) every `every`
    seconds while it grows: wfdb reads a file whole before writing it (dl_full_file), so a record's .dat coming
    slowly showed no answer and no byte in the folder, and was given up as stalled while its bytes still came. The
    child's socket classes count what they read; it is a process of its own, that only downloads."""
    import ssl
    total = [0]

    def counting(read: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(read)
        def counted(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            got = read(self, *args, **kwargs)
            total[0] += got if isinstance(got, int) else len(got)
            return got
        return counted

    for cls in (socket.socket, ssl.SSLSocket):
        for method in ("recv", "recv_into"):
            setattr(cls, method, counting(getattr(cls, method)))

    def tell() -> None:
        said = 0
        while True:
            time.sleep(every)
            if total[0] != said:
                said = total[0]
                say(received=said)
    threading.Thread(target=tell, name="received", daemon=True).start()


class _Printed(io.TextIOBase):
    """The child's sys.stdout: what it prints (wfdb's 'Downloading files...'), said to the parent, who prints it."""

    def __init__(self, say: Callable[..., None]) -> None:
        super().__init__()
        self.say = say

    def write(self, text: str) -> int:
        self.say(out=text)
        return len(text)


class _Passed(logging.Handler):
    """Each record of the child's urllib3 pool (a connection made, an answer come: one or two a request), said to
    the parent, who counts it and shows those its own logger shows."""

    def __init__(self, say: Callable[..., None]) -> None:
        super().__init__()
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(log=[record.levelno, record.getMessage()])


def move_in(part: Path, data_dir: Path) -> None:
    """A finished download's files moved from `part` into data_dir, all or none: a move stopped part way (Ctrl-C)
    left the records moved so far, which the next run prepared as the database. A RECORDS index of them all comes
    first and the headers last, so that even a killed move leaves a folder refused as incomplete
    (prepare_mitbih.records_file)."""
    from prepare_mitbih import header_stems      # here, not at the top: prepare_mitbih imports this module
    files = sorted(part.iterdir(), key=lambda f: (f.suffix == ".hea", f.name))
    names = header_stems(part)
    moved = []          # each named before it is made: a Ctrl-C just after leaves none behind
    try:
        if names:
            moved.append(data_dir / "RECORDS")
            paths.atomic_write_text("".join(f"{n}\n" for n in names), data_dir / "RECORDS")
        for f in files:
            moved.append(data_dir / f.name)
            f.replace(data_dir / f.name)
    except BaseException:
        for f in moved:
            f.unlink(missing_ok=True)
        raise
