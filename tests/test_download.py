"""download.py: MIT-BIH fetched from PhysioNet whole or not at all, never hung, as prepare_mitbih's find_records asks
for it. Each download's child process runs a stand-in for wfdb.dl_database (fake_physionet: offline unless a test
serves records), and the connect before it never leaves the machine (conftest's no_network and physionet)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import download as dl
import paths
import prepare_mitbih as pm
from conftest import ROOT, forbid_download, run_in_process, write_record
from paths import UserError

pytestmark = pytest.mark.usefixtures("no_network")

REACH_PHYSIONET = dl.reach_physionet


def gone(pid: int) -> bool:
    """Whether no process has `pid` (one ended and waited for)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def since_fetch(pid: Path) -> float:
    """Seconds since the download's child started fetching (fake_physionet writes its pid first): a bound from the
    test's start counted the child's start too, its imports of wfdb, numpy and pandas, 2 s on a loaded machine."""
    return time.time() - pid.stat().st_mtime


def test_empty_data_dir_download_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ERROR", "Max retries exceeded with url: /files/mitdb (Name or service not known)\nmore")
    with pytest.raises(UserError) as e:
        pm.find_records(tmp_path / "mitdb", download=True)
    msg = str(e.value)
    assert "downloading MIT-BIH from PhysioNet there failed (ConnectionError: Max retries" in msg
    assert str(tmp_path / "mitdb") in msg and "\n" not in msg and "--data-dir" in msg  # one line: what to do


def test_offline_download_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    """requests' message (a repr of its causes) is cut at a word, the run prints nothing else, and the folder
    it made for the download is gone again; a folder that was there stays."""
    monkeypatch.setenv("FAKE_ERROR", "HTTPSConnectionPool(host='physionet.org', port=443): Max retries exceeded with "
                       "url: /content/mitdb/ (Caused by NameResolutionError(\"HTTPSConnection(host='physio\"))")
    (tmp_path / "there").mkdir()
    for folder in (tmp_path / "new" / "mitdb", tmp_path / "there"):
        r = run_in_process(["--data-dir", str(folder), "--out", str(tmp_path / "out")])
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, (r.stdout, r.stderr)
        assert "(ConnectionError: HTTPSConnectionPool(host='physionet.org', port=443): Max retries" in r.stderr
        assert "/content/mitdb/ ...): put the MIT-BIH WFDB files" in r.stderr and str(folder) in r.stderr
    assert not (tmp_path / "new" / "mitdb").exists() and (tmp_path / "there").is_dir()


def test_a_network_that_drops_packets_fails_at_connect(tmp_path, monkeypatch):
    """wfdb's requests have no timeout: behind a firewall that drops packets the download hung for ever. A connect
    to PhysioNet with a timeout comes first, and its failure is the download's one line naming host and timeout."""
    connects = []

    def dropped(address, timeout=None):
        connects.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(dl, "reach_physionet", REACH_PHYSIONET)
    monkeypatch.setattr(socket, "create_connection", dropped)
    forbid_download(monkeypatch, "download started after no connect")
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        pm.find_records(tmp_path / "mitdb", download=True)
    assert time.monotonic() - start < 5 and connects == [(("physionet.org", 443), dl.CONNECT_TIMEOUT)]
    msg = str(e.value)
    assert "failed (ConnectionError: cannot connect to physionet.org:443: no answer within 20 s): put the " in msg
    assert "--data-dir" in msg and "\n" not in msg and not (tmp_path / "mitdb").exists()


@pytest.fixture
def connects(monkeypatch) -> list:
    """The real reach_physionet, its connects answered at once and listed (host, port)."""
    made = []

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(dl, "reach_physionet", REACH_PHYSIONET)
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: made.append(address) or
                        Connection())
    return made


def test_a_download_connects_first(tmp_path, monkeypatch, connects, physionet):
    """PhysioNet answering, the download goes on as before; through a proxy (as requests does) it is the proxy that
    is asked."""
    physionet("bring")
    assert pm.find_records(tmp_path / "direct", download=True) == ["100"]
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert pm.find_records(tmp_path / "proxied", download=True) == ["100"]
    assert connects == [("physionet.org", 443), ("proxy.example", 3128)]


def test_the_connect_asks_the_proxy_requests_uses(monkeypatch, connects):
    """$all_proxy alone is requests' proxy too: a direct connect there (a network reached through the proxy only)
    would refuse a download that works; $no_proxy naming PhysioNet's host connects directly, as requests does."""
    monkeypatch.setenv("ALL_PROXY", "http://proxy.example:3128")
    dl.reach_physionet("https://physionet.org/files/")
    monkeypatch.setenv("NO_PROXY", "physionet.org")
    dl.reach_physionet("https://physionet.org/files/")
    assert connects == [("proxy.example", 3128), ("physionet.org", 443)]


def test_a_download_cut_short_leaves_no_records(tmp_path, physionet):
    """A download that fails part way left the records it had brought, and the next run prepared them as the
    database (here 2 of MIT-BIH's 48, without a word): the folder stays as it was, and no part of the download stays
    beside it."""
    physionet("cut_short", ("100", "101"))
    (tmp_path / "there").mkdir()
    for folder in (tmp_path / "new", tmp_path / "there"):
        with pytest.raises(UserError, match="failed \\(ConnectionError: Connection reset by peer\\)"):
            pm.find_records(folder, download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"] and not any((tmp_path / "there").iterdir())


def test_a_download_that_stalls_is_given_up(tmp_path, monkeypatch, physionet):
    """wfdb's requests have no read timeout: a server that accepted the connection and then sent nothing, or
    stopped part way, hung the download for ever, with no word. Nothing new for STALL_LIMIT seconds, it fails as any
    download does, saying from where, how long and what had come; the files that had come are not kept, and the
    download's process is gone."""
    pid = physionet("stall")
    monkeypatch.setattr(dl, "STALL_LIMIT", 0.5)
    (tmp_path / "there").mkdir()
    for folder in (tmp_path / "new", tmp_path / "there"):
        with pytest.raises(UserError) as e:
            pm.find_records(folder, download=True)
        assert since_fetch(pid) < 5 and gone(int(pid.read_text()))
        msg = str(e.value)
        assert (f"no WFDB records in {folder}, and downloading MIT-BIH from PhysioNet there failed (TimeoutError: "
                f"nothing came from physionet.org for 0.5 s, after 3 files (0.0 MB, not kept)): put the MIT-BIH WFDB "
                f"files (NNN.hea, NNN.dat, NNN.atr) in {folder}, or point --data-dir") in msg and "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"] and not any((tmp_path / "there").iterdir())


def test_a_download_given_up_brings_nothing_afterwards(tmp_path, monkeypatch, physionet):
    """A download given up ran on in a thread let go: in a session that goes on (a notebook), once the server sent
    again it brought its files into the part folder removed, made anew. It runs in a process, which is gone when
    the error comes, and nothing comes after."""
    pid = physionet("stall_then_recover", stall_s=1.5)
    monkeypatch.setattr(dl, "STALL_LIMIT", 0.5)
    with pytest.raises(UserError, match=r"\(TimeoutError: nothing came from physionet.org for 0.5 s, after 3 files"):
        pm.find_records(tmp_path / "mitdb", download=True)
    assert gone(int(pid.read_text()))
    time.sleep(2.0)         # past the stall: the server sends again
    assert not (tmp_path / "mitdb").exists()


@pytest.mark.parametrize("sent, status, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_stalled_download_stops_on_ctrl_c_or_sigterm(tmp_path, physionet, sent, status, said):
    """Ctrl-C, or SIGTERM (a scheduler's time limit), while the download waits on its socket stops the run at once,
    as before, and leaves no folder and no download running."""
    pid = physionet("signal_parent", signal=sent)
    r = run_in_process(["--data-dir", str(tmp_path / "mitdb"), "--fetch-only"])
    assert (r.returncode, r.stderr) == (status, f"{said}\n") and since_fetch(pid) < 5
    assert gone(int(pid.read_text())) and not (tmp_path / "mitdb").exists()


def test_a_stalled_download_is_given_up_stall_limit_after_its_last_file(tmp_path, monkeypatch, physionet):
    """Given up STALL_LIMIT seconds after the last file came, not some multiple of it (the files' copy starts just
    after the pid file is written)."""
    pid = physionet("stall")
    monkeypatch.setattr(dl, "STALL_LIMIT", 1.0)
    with pytest.raises(UserError, match="TimeoutError: nothing came from physionet.org for 1 s"):
        pm.find_records(tmp_path / "mitdb", download=True)
    assert 1.0 <= since_fetch(pid) < 1.8


def test_a_download_deaf_to_sigterm_is_killed_when_given_up(tmp_path, monkeypatch, physionet):
    """A child that ignores SIGTERM is killed a second later: given up, no process of it is left."""
    pid = physionet("stubborn")
    monkeypatch.setattr(dl, "STALL_LIMIT", 0.5)
    with pytest.raises(UserError, match="TimeoutError"):
        pm.find_records(tmp_path / "mitdb", download=True)
    assert gone(int(pid.read_text()))


def test_a_download_whose_parent_is_killed_ends_too(tmp_path, physionet):
    """kill -9 of the process downloading stops no child: the child, in a session of its own, ends when its stdin
    closes, else a download with no timeout would go on for ever, bringing files into a folder no one removes."""
    assert gone_within(download_killed(tmp_path / "mitdb", physionet("stall")), 5.0)


def test_the_folder_of_a_download_killed_goes_at_the_next(tmp_path, physionet, capsys):
    """kill -9 of the process downloading left its .download-* folder, which every run passed over: there for ever.
    The next download removes it, and says so."""
    assert gone_within(download_killed(tmp_path / "mitdb", physionet("stall")), 5.0)     # nothing more comes in
    [part] = (tmp_path / "mitdb").iterdir()
    assert part.name.startswith(f"{dl.DOWNLOAD_PART}{paths.process_space()}-")
    physionet("bring")
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert not part.exists() and not list((tmp_path / "mitdb").glob(".*"))
    assert f"removed {part}, the folder of a download whose process (" in capsys.readouterr().out


def test_the_folders_of_live_downloads_and_of_no_known_owner_stay(tmp_path, physionet, capsys):
    """Only a download folder of this process_space whose process is gone is removed: another run's download now
    (here this process's), one of another host, one of another container of this host's name (another pid
    namespace) and one whose name says no owner stay, the three the next download cannot judge said in a line."""
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    space, data = paths.process_space(), tmp_path / "mitdb"
    assert space == f"{socket.gethostname()}~{os.readlink('/proc/self/ns/pid')[5:-1]}"    # Linux: 'pid:[INODE]'
    names = [f"{space}-{ended.pid}-dead", f"{space}-{os.getpid()}-live", f"elsewhere-{ended.pid}-far", "abc_123",
             f"{socket.gethostname()}~1-{ended.pid}-boxed"]
    for name in names:
        (data / f"{dl.DOWNLOAD_PART}{name}").mkdir(parents=True)
        (data / f"{dl.DOWNLOAD_PART}{name}" / "100.dat").write_bytes(bytes(10))
    physionet("bring")
    assert pm.find_records(data, download=True) == ["100"]
    assert sorted(p.name for p in data.glob(".*")) == sorted(f"{dl.DOWNLOAD_PART}{n}" for n in names[1:])
    out = capsys.readouterr().out
    assert f"removed {data / dl.DOWNLOAD_PART}{names[0]}, the folder of a download whose process ({ended.pid})" in out
    assert f"left {data / dl.DOWNLOAD_PART}{names[2]}: a download's folder of elsewhere, another host or" in out
    assert f"left {data / dl.DOWNLOAD_PART}{names[3]}: a download's folder that names no process" in out
    assert f"left {data / dl.DOWNLOAD_PART}{names[4]}: a download's folder of {socket.gethostname()}~1, another" in out
    assert names[1] not in out


def test_a_download_folder_untouched_for_a_day_goes_whoever_it_names(tmp_path, capsys):
    """A folder of another host, or one made before names said their owner, was left and said on every run for
    ever: untouched for over a day (no live download is so quiet), it goes; a newer file in one keeps it."""
    names = ["abc_123", "elsewhere-12-far", f"{paths.process_space()}-{os.getpid()}-live", "busy_456"]
    for name in names:
        (tmp_path / f"{dl.DOWNLOAD_PART}{name}" / "sub").mkdir(parents=True)
        for p in (tmp_path / f"{dl.DOWNLOAD_PART}{name}" / "sub" / "100.dat",
                  tmp_path / f"{dl.DOWNLOAD_PART}{name}" / "sub", tmp_path / f"{dl.DOWNLOAD_PART}{name}"):
            p.touch()
            os.utime(p, (time.time() - 3 * 86400 - 60,) * 2)
    os.utime(tmp_path / f"{dl.DOWNLOAD_PART}busy_456" / "sub" / "100.dat", (time.time() - 60,) * 2)
    paths.remove_stale_parts(tmp_path, dl.DOWNLOAD_PART, "download")
    assert [p.name for p in tmp_path.iterdir()] == [f"{dl.DOWNLOAD_PART}busy_456"]
    out = capsys.readouterr().out
    assert f"removed {tmp_path / dl.DOWNLOAD_PART}abc_123, a download's folder untouched for over 3 days" in out
    assert f"left {tmp_path / dl.DOWNLOAD_PART}busy_456: a download's folder that names no process" in out
    assert paths.quiet_for(tmp_path / "none") == 0.0                    # one it cannot look into: judged by name


def test_a_download_folder_of_another_host_stays_a_day_and_a_dead_link_in_it_keeps_it_no_longer(tmp_path, capsys):
    """Another host's download, which this process cannot see, may be quiet for minutes between files: its folder
    stays until a day has passed, not an hour. A link in it whose target went is read as the link (lstat): followed,
    it made the folder unreadable, so judged by its name and left for ever."""
    for name, hours in (("elsewhere-12-near", 23), ("elsewhere-12-far", 25)):
        part = tmp_path / f"{dl.DOWNLOAD_PART}{name}"
        part.mkdir()
        (part / "100.dat").symlink_to(tmp_path / "gone")
        for p in (part / "100.dat", part):
            os.utime(p, (time.time() - hours * 3600,) * 2, follow_symlinks=False)
    paths.remove_stale_parts(tmp_path, dl.DOWNLOAD_PART, "download")
    assert [p.name for p in tmp_path.iterdir()] == [f"{dl.DOWNLOAD_PART}elsewhere-12-near"]
    assert f"removed {tmp_path / dl.DOWNLOAD_PART}elsewhere-12-far, a download's folder untouched for over 1 day\n" \
        in capsys.readouterr().out


def test_a_download_folder_whose_pid_no_process_can_have_fails_no_download(tmp_path, capsys):
    """A pid str.isdigit takes but int() refuses ('²') or beyond the system's pid_t stopped remove_stale_parts in a
    ValueError or OverflowError, and every download failed until the folder went: the first names no process (left,
    said), the second names none alive (removed)."""
    host = paths.process_space()
    for name in (f"{host}-\u00b2-x", f"{host}-99999999999999999999-x"):
        (tmp_path / f"{dl.DOWNLOAD_PART}{name}").mkdir()
    paths.remove_stale_parts(tmp_path, dl.DOWNLOAD_PART, "download")
    assert [p.name for p in tmp_path.iterdir()] == [f"{dl.DOWNLOAD_PART}{host}-\u00b2-x"]
    out = capsys.readouterr().out
    assert f"left {tmp_path / dl.DOWNLOAD_PART}{host}-\u00b2-x: a download's folder that names no process" in out
    assert f"removed {tmp_path / dl.DOWNLOAD_PART}{host}-99999999999999999999-x, the folder of a download" in out


def test_a_download_folder_is_told_by_its_last_two_dashes_and_only_a_dead_pid_of_a_folder_goes(tmp_path, monkeypatch,
                                                                                              capsys):
    """A host name has dashes and dots ('my-host.local'): the pid and the random part are the last two. Pid 0 (the
    process group to os.kill) names no process, a file of a folder's name is none, and a pid of another user's
    process (EPERM) is alive: none of those is removed, nor a link of a folder's name."""
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    monkeypatch.setattr(paths, "process_space", lambda: "my-host.local")
    for name in (f"my-host.local-{ended.pid}-x", f"my-host-{ended.pid}-x", "my-host.local-0-x"):
        (tmp_path / f"{dl.DOWNLOAD_PART}{name}").mkdir()
    (tmp_path / f"{dl.DOWNLOAD_PART}my-host.local-{ended.pid}-file").write_text("")
    (tmp_path / f"{dl.DOWNLOAD_PART}my-host.local-{ended.pid}-link").symlink_to(tmp_path / "kept", True)
    (tmp_path / "kept").mkdir()
    paths.remove_stale_parts(tmp_path, dl.DOWNLOAD_PART, "download")
    assert sorted(p.name[len(dl.DOWNLOAD_PART):] for p in tmp_path.glob(".*")) == [
        "my-host-" f"{ended.pid}-x", "my-host.local-0-x", f"my-host.local-{ended.pid}-file",
        f"my-host.local-{ended.pid}-link"]
    out = capsys.readouterr().out
    assert "-link" not in out      # a link is no download's folder: neither removed nor said "cannot remove"
    assert f"removed {tmp_path / dl.DOWNLOAD_PART}my-host.local-{ended.pid}-x, the folder" in out
    assert f"{dl.DOWNLOAD_PART}my-host-{ended.pid}-x: a download's folder of my-host, another host" in out
    assert f"{dl.DOWNLOAD_PART}my-host.local-0-x: a download's folder that names no process" in out
    assert "-file" not in out

    def not_yours(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(paths.os, "kill", not_yours)
    assert paths.alive(ended.pid)


def download_killed(folder: Path, pid: Path) -> int:
    """The pid of the child of a download into `folder` whose process was killed (kill -9) once the child had
    written its pid to `pid`."""
    script = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]; "
              f"import download as dl, prepare_mitbih as pm; "
              f"dl.FETCH = 'fake_physionet:stall'; dl.reach_physionet = lambda *a, **k: None; "
              f"pm.find_records(pm.Path({str(folder)!r}), download=True)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        while not (pid.exists() and pid.read_text()) and time.monotonic() - start < 60:
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    return int(pid.read_text())


def gone_within(pid: int, seconds: float) -> bool:
    """Whether `pid` has ended (gone_or_zombie) within `seconds`."""
    start = time.monotonic()
    while not gone_or_zombie(pid) and time.monotonic() - start < seconds:
        time.sleep(0.05)
    return gone_or_zombie(pid)


def gone_or_zombie(pid: int) -> bool:
    """Whether `pid` has ended (a zombie left to an init that reaps none counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_what_the_download_prints_is_printed_here(tmp_path, physionet, capfd):
    """wfdb's 'Downloading files...' in the child reaches this process's stdout, as it did in a thread."""
    physionet("printing")
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert "Downloading files...\n" in capfd.readouterr().out


def test_what_the_download_writes_to_its_stdout_is_no_message(tmp_path, physionet, capfd):
    """The child's messages are JSON lines on its stdout: a line a C library writes to file descriptor 1 goes to
    stderr instead, not into the messages, where it failed the download in json's 'Expecting value'."""
    physionet("c_stdout")
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert "a C library's line" in capfd.readouterr().err


def test_a_download_slow_to_start_is_not_given_up_before_it_fetches(tmp_path, monkeypatch, physionet):
    """The stall clock starts when the child says it fetches: its imports (wfdb's, seconds on a cold disk) are no
    stall."""
    physionet("bring")
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(1.5)\nfrom fake_physionet import bring\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(dl, "FETCH", "slow_import:bring")
    monkeypatch.setattr(dl, "STALL_LIMIT", 0.5)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]


def test_a_download_whose_process_hangs_before_it_fetches_is_given_up(tmp_path, monkeypatch, physionet):
    """The stall clock starts when the child fetches: a child whose imports hang (a network filesystem that blocks)
    never said so, and the download waited for ever. It has START_LIMIT seconds to start, then fails as a stall
    does, its process gone and no folder left. The child checked is the one watched started, not the pid it wrote:
    on a loaded machine its import of wfdb outlasted the test's 1 s START_LIMIT, and, killed before it reached the
    hung import, it had written none (FileNotFoundError)."""
    physionet("bring")
    (tmp_path / "hung_import.py").write_text("import time\nfrom fake_physionet import STALLED_S\n"
                                             "time.sleep(STALLED_S)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    started = []

    class Started(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)
    monkeypatch.setattr(subprocess, "Popen", Started)
    monkeypatch.setattr(dl, "FETCH", "hung_import:bring")
    monkeypatch.setattr(dl, "START_LIMIT", 1.0)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"failed \(TimeoutError: the download's process did not start fetching "
                                        r"within 1 s \(an import hung\?\)\): put the MIT-BIH"):
        pm.find_records(tmp_path / "mitdb", download=True)
    [child] = started
    assert time.monotonic() - start < 5 and gone(child.pid) and not (tmp_path / "mitdb").exists()


def test_a_download_whose_process_ended_is_not_given_up_while_its_output_drains(tmp_path, monkeypatch, physionet):
    """A child that has ended is not given up, though its stdout stays open (here a process it started holds it)
    past STALL_LIMIT: its download is over, and it is read to the end."""
    physionet("forked", hold_s=1.5)
    monkeypatch.setattr(dl, "STALL_LIMIT", 0.5)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]


@pytest.mark.parametrize("error", ["", "Connection reset by peer"])
def test_a_download_whose_process_is_slow_to_exit_is_not_given_up(tmp_path, monkeypatch, physionet, error):
    """A child whose fetch has returned or failed is done, but its exit (its interpreter's teardown of numpy, pandas
    and wfdb: 2 s on a loaded machine; a thread a library left) outlasted STALL_LIMIT, and a download that had
    brought every file, or failed, was given up as stalled. The child ends as soon as its fetch does."""
    physionet("lingering", error=error)
    monkeypatch.setattr(dl, "STALL_LIMIT", 0.5)
    if not error:
        assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
        return
    with pytest.raises(UserError, match=r"failed \(ConnectionError: Connection reset by peer\)"):
        pm.find_records(tmp_path / "mitdb", download=True)


def test_a_downloads_last_words_on_stderr_are_kept_though_its_process_ends_at_once(tmp_path, monkeypatch, physionet,
                                                                                  capfd):
    """The child ends in os._exit, which flushes nothing: a progress bar's last line, with no newline, was lost
    (stderr buffered, as it is without PYTHONUNBUFFERED)."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    physionet("progress")
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert "fetched 100%" in capfd.readouterr().err


def test_a_download_whose_process_ended_before_it_fetched_fails_by_its_exit_not_its_start(tmp_path, monkeypatch,
                                                                                          physionet):
    """A child that ended before it fetched is not timed out past START_LIMIT while a process it started holds its
    stdout: it failed, and says how (its exit status), not that an import hung. Its start (torch's and wfdb's imports,
    a second or two, more on a loaded machine) well within the limit, the holder outlasts it."""
    physionet("bring")
    (tmp_path / "ends_early.py").write_text("import os, time\nif os.fork() == 0:\n    time.sleep(9)\n"
                                            "    os._exit(0)\nos._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(dl, "FETCH", "ends_early:bring")
    monkeypatch.setattr(dl, "START_LIMIT", 8.0)
    with pytest.raises(UserError, match=r"failed \(RuntimeError: its process ended with exit status 3\)"):
        pm.find_records(tmp_path / "mitdb", download=True)


def test_a_download_killed_by_a_signal_fails_by_name(tmp_path, physionet):
    """A child killed by a signal (the OOM killer's SIGKILL) says nothing of why, and its exit code is negative: it
    fails as any download does, naming the signal, and its records are not moved in."""
    physionet("killed")
    with pytest.raises(UserError, match=r"failed \(RuntimeError: its process ended with signal 9\)"):
        pm.find_records(tmp_path / "mitdb", download=True)
    assert not (tmp_path / "mitdb").exists()


def test_a_slow_download_is_not_given_up(tmp_path, monkeypatch, caplog, physionet):
    """A download that brings a file, or an answer, within STALL_LIMIT seconds of the last goes on, however long it
    takes: before its first file wfdb asks for every record's header (urllib3 logs each answer), writing nothing.
    The answers counted are not logged."""
    physionet("slow", ("100", "101", "102"))
    monkeypatch.setattr(dl, "STALL_LIMIT", 1.0)
    start = time.monotonic()
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100", "101", "102"]
    assert time.monotonic() - start > 1.5 and not caplog.records


def test_a_download_whose_file_grows_is_not_given_up_and_its_warnings_show(tmp_path, monkeypatch, caplog,
                                                                           physionet):
    """A file that grows (a large .dat written as it comes) is progress as a new file or an answer is, for as long
    as it grows; a warning urllib3 logs while the answers are counted (a retry) is shown as it was before."""
    retry = "Retrying (Retry(total=2)) after connection broken"
    physionet("growing", ("100", "101"), warning=retry)
    monkeypatch.setattr(dl, "STALL_LIMIT", 1.0)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100", "101"]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("urllib3.connectionpool", retry)]


def test_a_download_still_receiving_a_file_is_not_given_up(tmp_path, monkeypatch, physionet):
    """wfdb reads a file whole before it writes it: a record's .dat coming slowly (a slow link) showed neither an
    answer nor a byte in the folder, and was given up as stalled while its bytes still came. The bytes the child's
    sockets receive are progress too."""
    physionet("trickle", ("100",))
    monkeypatch.setattr(dl, "STALL_LIMIT", 1.0)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]


def test_the_download_reads_the_index_this_process_set(tmp_path, monkeypatch, physionet):
    """A mirror set in this process (wfdb.set_db_index_url, as a notebook may) is the one the child downloads from,
    as reach_physionet connected to it, not wfdb's default."""
    import wfdb
    given = tmp_path / "url"
    physionet("told_url", given=given)
    monkeypatch.setattr(wfdb.io.download.config, "db_index_url", "https://mirror.example/files/")
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert given.read_text() == "https://mirror.example/files/"


def test_a_download_stopped_while_moved_in_leaves_no_records(tmp_path, monkeypatch, physionet):
    """Ctrl-C while a finished download's files were moved into the data folder left the records moved so far (here
    100 of 3), which the next run prepared as the database: none stay. A kill there (no clean-up) leaves a RECORDS
    index naming all three, and the download's part, so the next run refuses the folder as a download killed (not
    'take them out of RECORDS', which would make it a smaller database) rather than read a smaller one."""
    physionet("bring", ("100", "101", "102"))
    replace, calls = Path.replace, []

    def stopped(self, target):
        calls.append(target)
        if len(calls) == 8:         # the signals, annotations and 100.hea in: the state a kill here would leave
            part = re.escape(f"{dl.DOWNLOAD_PART}{paths.process_space()}-{os.getpid()}-")    # 'HOST~INODE': '~' too
            refused = (rf"killed while its files were moved in \(.*RECORDS lists 2 records with no \.hea, still in "
                       rf"{part}\w+\): empty the folder and run again")
            with pytest.raises(UserError, match=refused):
                pm.header_stems(Path(target).parent)
            raise KeyboardInterrupt
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", stopped)
    (tmp_path / "there").mkdir()
    for folder in (tmp_path / "mitdb", tmp_path / "there"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            pm.find_records(folder, download=True)
        assert len(calls) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"] and not any((tmp_path / "there").iterdir())
    monkeypatch.setattr(Path, "replace", replace)
    write_text = pm.paths.atomic_write_text

    def written_then_stopped(*args):        # Ctrl-C just after the index is written, before it is counted as moved
        write_text(*args)
        raise KeyboardInterrupt
    monkeypatch.setattr(pm.paths, "atomic_write_text", written_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        pm.find_records(tmp_path / "mitdb", download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"]
    monkeypatch.setattr(pm.paths, "atomic_write_text", write_text)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100", "101", "102"]
    assert (tmp_path / "mitdb" / "RECORDS").read_text() == "100\n101\n102\n"


def test_a_download_stopped_just_after_a_file_arrived_leaves_none(tmp_path, monkeypatch, physionet):
    """Ctrl-C just after a file was moved into the data folder, before it was counted as moved: it goes too (each is
    named before it is made), and the folder is left as it was found."""
    physionet("bring", ("100", "101"))
    replace = Path.replace

    def moved_then_stopped(self, target):
        replace(self, target)
        raise KeyboardInterrupt
    monkeypatch.setattr(Path, "replace", moved_then_stopped)
    (tmp_path / "mitdb").mkdir()
    with pytest.raises(KeyboardInterrupt):
        pm.find_records(tmp_path / "mitdb", download=True)
    assert not any((tmp_path / "mitdb").iterdir())


def test_a_download_arrives_in_the_data_folder_and_a_killed_ones_part_blocks_none(tmp_path, tmp_path_factory,
                                                                                    physionet):
    """The download arrives in the data folder itself: one beside it failed where the data folder is a mount (a
    container's volume: 'Invalid cross-device link' on moving the files in) or its parent is not writable. A part
    a killed download left there is not the user's files, which would refuse the next download."""
    given = tmp_path_factory.mktemp("given") / "folder"
    physionet("told_where", given=given)
    data = tmp_path / "mitdb"
    write_record(data / f"{dl.DOWNLOAD_PART}killed", "101", seconds=12)
    assert pm.find_records(data, download=True) == ["100"]
    assert Path(given.read_text()).parent == data and sorted(p.name for p in tmp_path.iterdir()) == ["mitdb"]


def test_download_that_brings_nothing(tmp_path, physionet):
    physionet("bring", ())
    with pytest.raises(UserError, match="produced no records"):
        pm.find_records(tmp_path, download=True)


def test_a_download_says_what_it_brought(tmp_path, capsys, physionet):
    """Only a download that worked is announced, with its count of records, on stdout."""
    physionet("bring")
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert "downloaded MIT-BIH from PhysioNet there (1 record)" in capsys.readouterr().out


def test_a_download_whose_process_cannot_start_says_which_python(tmp_path, monkeypatch, physionet):
    """sys.executable gone (a venv deleted under a notebook) or empty (an embedded Python): the download failed with
    'FileNotFoundError: [Errno 2] No such file or directory: ...', as if PhysioNet's file were missing; it names the
    Python that cannot start the download's process, and leaves no folder."""
    physionet("bring")
    for python, why in ((str(tmp_path / "venv" / "bin" / "python"), "No such file or directory"),
                        ("", "Permission denied")):
        monkeypatch.setattr(sys, "executable", python)
        with pytest.raises(UserError, match=re.escape(f"failed (RuntimeError: cannot start Python for the download's "
                                                      f"process ({why}): sys.executable is ")):
            pm.find_records(tmp_path / "mitdb", download=True)
        assert not (tmp_path / "mitdb").exists()


def test_a_line_of_the_download_process_not_its_own_is_printed_not_its_failure(tmp_path, monkeypatch, capsys,
                                                                              physionet):
    """A line on the child's stdout that it did not say (a C library writing to fd 1 while the child imports, before
    fetch_in_child takes fd 1 over), JSON or not, failed a download that worked with 'JSONDecodeError: Expecting
    value' (or a TypeError for '1'); it is printed as the child's prints are."""
    physionet("bring")
    monkeypatch.setattr(dl, "_CHILD", "import os; os.write(1, b'libfoo: loaded\\n1\\n'); " + dl._CHILD)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert capsys.readouterr().out.startswith("libfoo: loaded\n1\n")


def test_a_line_of_the_download_process_in_no_utf8_is_printed(tmp_path, monkeypatch, capsys, physionet):
    """Bytes that are no UTF-8 (a C library's message in latin-1) stopped the thread reading the child's lines in a
    UnicodeDecodeError, and the download then waited for ever for a child that had ended. Such a byte is printed
    as U+FFFD."""
    physionet("bring")
    monkeypatch.setattr(dl, "_CHILD", "import os; os.write(1, b'libfoo: \\xe9t\\xe9\\n'); " + dl._CHILD)
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]
    assert capsys.readouterr().out.startswith("libfoo: \ufffdt\ufffd\n")
