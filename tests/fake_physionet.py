"""Stand-ins for wfdb.dl_database, run by download.py's download in its child process (the tests name one in
download.FETCH). Each brings the records a test wrote into $FAKE_PHYSIONET into the folder it is given, as a
download does, and then fails, stalls or signals as the test asks ($FAKE_*). Light: no torch, no conftest."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

STALLED_S = 30.0        # longer than any test: a stalled download ends when it is stopped


def bring(name: str, folder: str, records: list[str] | None = None) -> None:
    """The files of `records` (all of $FAKE_PHYSIONET's without) copied into `folder`, its pid written first."""
    assert name == "mitdb", name
    if pid_file := os.environ.get("FAKE_PID"):
        Path(pid_file).write_text(str(os.getpid()))
    served = Path(os.environ["FAKE_PHYSIONET"])
    Path(folder).mkdir(parents=True, exist_ok=True)
    for f in sorted(served.iterdir()):
        if records is None or f.stem in records:
            shutil.copy(f, Path(folder) / f.name)


def offline(name: str, folder: str) -> None:
    """No network: requests' error, its message $FAKE_ERROR."""
    raise ConnectionError(os.environ.get("FAKE_ERROR", "no network in the tests"))


def cut_short(name: str, folder: str) -> None:
    bring(name, folder)
    raise ConnectionError("Connection reset by peer")


def stall(name: str, folder: str) -> None:
    """A server or proxy that stopped sending after the records came."""
    bring(name, folder)
    time.sleep(STALLED_S)


def stall_then_recover(name: str, folder: str) -> None:
    """A server that stopped sending for $FAKE_STALL_S seconds, and then sent the rest: the records again, into the
    folder, which a download given up meanwhile had removed."""
    bring(name, folder)
    time.sleep(float(os.environ["FAKE_STALL_S"]))
    bring(name, folder)


def lingering(name: str, folder: str) -> None:
    """bring, then failed with $FAKE_ERROR if it is set, leaving a thread that holds off the interpreter's exit for
    STALLED_S (as a library's thread does, or the teardown of numpy, pandas and wfdb on a loaded machine)."""
    bring(name, folder)
    threading.Thread(target=time.sleep, args=(STALLED_S,)).start()
    if error := os.environ.get("FAKE_ERROR"):
        raise ConnectionError(error)


def progress(name: str, folder: str) -> None:
    """bring, its progress bar's last line on stderr left without a newline (as tqdm's \\r lines are)."""
    bring(name, folder)
    sys.stderr.write("fetched 100%")


def signal_parent(name: str, folder: str) -> None:
    """Ctrl-C or SIGTERM ($FAKE_SIGNAL) to the process downloading, while the server sends nothing."""
    bring(name, folder)
    os.kill(os.getppid(), getattr(signal, os.environ["FAKE_SIGNAL"]))
    time.sleep(STALLED_S)


def slow(name: str, folder: str) -> None:
    """Four answers (urllib3's log of them) and then three records, each 0.25 s after the last."""
    for i in range(4):
        time.sleep(0.25)
        logging.getLogger("urllib3.connectionpool").debug('https://physionet.org:443 "HEAD /1%02d.atr" 200', i)
    for record in ("100", "101", "102"):
        time.sleep(0.25)
        bring(name, folder, [record])


def growing(name: str, folder: str) -> None:
    """Record 100, then 101.dat growing by 100 bytes every 0.25 s for 2 s, a retry's warning, then record 101."""
    bring(name, folder, ["100"])
    coming = Path(folder) / "101.dat"
    for _ in range(8):
        time.sleep(0.25)
        with coming.open("ab") as f:
            f.write(bytes(100))
    logging.getLogger("urllib3.connectionpool").warning(os.environ["FAKE_WARNING"])
    bring(name, folder, ["101"])


def told_where(name: str, folder: str) -> None:
    """bring, the folder it was given written to $FAKE_GIVEN."""
    Path(os.environ["FAKE_GIVEN"]).write_text(folder)
    bring(name, folder)


def trickle(name: str, folder: str) -> None:
    """A large file read whole before it is written (wfdb's dl_full_file): 100 bytes every 0.25 s for 2 s on a socket,
    nothing in the folder meanwhile, then the records."""
    served, read = socket.socketpair()

    def send() -> None:
        with served:
            for _ in range(8):
                time.sleep(0.25)
                served.sendall(bytes(100))
    threading.Thread(target=send, daemon=True).start()
    with read, read.makefile("rb") as body:     # http.client's way: SocketIO.readinto, socket.recv_into
        assert len(body.read()) == 800
    bring(name, folder)


def killed(name: str, folder: str) -> None:
    """bring, then killed by a signal (the OOM killer's SIGKILL) before it could say a word of why."""
    bring(name, folder)
    os.kill(os.getpid(), signal.SIGKILL)


def forked(name: str, folder: str) -> None:
    """bring, then ended, while a process it started holds its stdout open for $FAKE_HOLD_S seconds more."""
    bring(name, folder)
    if os.fork() == 0:
        time.sleep(float(os.environ["FAKE_HOLD_S"]))
        os._exit(0)


def stubborn(name: str, folder: str) -> None:
    """stall, deaf to SIGTERM (a C library's call that holds it off, a handler of its own)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stall(name, folder)


def told_url(name: str, folder: str) -> None:
    """bring, the PhysioNet index wfdb reads from written to $FAKE_GIVEN."""
    import wfdb
    Path(os.environ["FAKE_GIVEN"]).write_text(wfdb.io.download.config.db_index_url)
    bring(name, folder)


def c_stdout(name: str, folder: str) -> None:
    """bring, after a line written straight to file descriptor 1, as a C library (or a program it runs) writes."""
    os.write(1, b"a C library's line\n")
    bring(name, folder)


def printing(name: str, folder: str) -> None:
    """bring, after printing as wfdb.dl_database does."""
    print("Downloading files...")
    bring(name, folder)
