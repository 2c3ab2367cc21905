"""Bad input never ends in a traceback: one 'error:' line naming the file, key or value; outputs untouched.

Each case runs `python prepare_mitbih.py ...` as a real process; the processes start together in a small
pool when the module begins and each test waits for its own result. The few cases in IN_PROCESS, which
fail before any record is read, run main() through running.run_main in this process instead (same code
path, without the second of interpreter start-up each).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

import download as dl
import evaluate
import prepare_mitbih as pm
from conftest import ROOT, forbid_download, run_in_process, snapshot, synthetic_ecg, write_record, write_signal
from hyper_params import config_from_dict
from paths import UserError

GOOD_CONFIG = {"data": {"test_records": ["a"], "validation_records": []}}
IN_PROCESS = {"bad_value", "config_is_folder", "unknown_record", "listed_missing"}
pytestmark = pytest.mark.usefixtures("no_network")


@dataclass
class Case:
    args: list[str]
    watch: Path              # an existing output (folder or file) that must come out unchanged
    before: dict
    result: Future


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MITBIH_DIR", "ECG_PREPARED_DIR")}
    return subprocess.run([sys.executable, "prepare_mitbih.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def good_db(folder: Path) -> Path:
    write_record(folder, "a", seconds=12, seed=0)
    return folder


def with_bad_b(folder: Path, **kw) -> Path:
    """A folder with a good record 'a' (read first) and a bad record 'b'."""
    good_db(folder)
    write_record(folder, "b", seed=1, **kw)
    return folder


def build_inputs(base: Path) -> dict[str, tuple[list[str], str]]:
    """Each case: (arguments after the data folder, which output it points at)."""
    config = base / "config.json"
    config.write_text(json.dumps(GOOD_CONFIG))
    common = ["--config", str(config), "--no-download"]
    cases: dict[str, list[str]] = {}

    cases["missing_dir"] = ["--data-dir", str(base / "no_such_folder")] + common
    (base / "empty").mkdir()
    cases["empty_dir"] = ["--data-dir", str(base / "empty")] + common

    db = with_bad_b(base / "truncated", seconds=12)
    dat = db / "b.dat"
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    cases["truncated_dat"] = ["--data-dir", str(db)] + common

    db = with_bad_b(base / "missing_dat", seconds=12)
    hea = db / "b.hea"
    hea.write_text(hea.read_text().replace("b.dat", "b_signals.dat"))  # names a file that is not there
    cases["missing_dat"] = ["--data-dir", str(db)] + common

    db = base / "nan"  # the bad record is 'a' here, read before the good 'b' (no filtering to wait for)
    x, _ = synthetic_ecg(12.0, 360.0, seed=1)
    x[1234:1300, 1] = np.nan
    x[2000, 0] = np.nan
    write_signal(db, "a", x, fmt="16")
    write_record(db, "b", seconds=12, seed=0)
    cases["nan_samples"] = ["--data-dir", str(db)] + common

    db = with_bad_b(base / "short", seconds=4)  # one window is 3 s context + 3 s forecast
    cases["short_record"] = ["--data-dir", str(db)] + common

    db = with_bad_b(base / "uneven_fs", seconds=12, fs=333.333)
    cases["uneven_fs"] = ["--data-dir", str(db)] + common

    db = good_db(base / "bad_header")
    write_record(db, "b", seconds=12, seed=1)
    (db / "b.hea").write_text("this is not a WFDB header\n")
    cases["bad_header"] = ["--data-dir", str(db)] + common

    db = good_db(base / "good")
    write_record(db, "b", seconds=12, seed=1)
    unknown = base / "unknown_key.json"
    unknown.write_text(json.dumps({"data": {"test_records": ["a"], "sampels_per_second": 128}}))
    cases["unknown_key"] = ["--data-dir", str(db), "--config", str(unknown), "--no-download"]
    typed = base / "wrong_type.json"
    typed.write_text(json.dumps({"data": {"test_records": ["a"]}, "model": {"downsample_factor": "8"}}))
    cases["wrong_type"] = ["--data-dir", str(db), "--config", str(typed), "--no-download"]
    cases["bad_value"] = ["--data-dir", str(db), "--config", str(base / "bad_value.json"), "--no-download"]
    (base / "bad_value.json").write_text(json.dumps({"data": {"filter_band": [0.5, 100.0]}}))
    cases["config_is_folder"] = ["--data-dir", str(db), "--config", str(base / "empty"), "--no-download"]
    cases["unknown_record"] = ["--data-dir", str(db), "--records", "a", "zz"] + common
    listed = base / "listed.json"
    listed.write_text(json.dumps({"data": {"test_records": ["a", "c"]}}))
    cases["listed_missing"] = ["--data-dir", str(db), "--config", str(listed), "--no-download"]
    (base / "somefile.txt").write_text("not a folder\n")
    cases["out_not_writable"] = ["--data-dir", str(db), "--out", str(base / "somefile.txt" / "sub")] + common
    return cases


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    args = build_inputs(base)
    # an existing prepared folder for every case to aim at (a copy each, so a culprit is easy to name)
    original = base / "prepared"
    pm.prepare(config_from_dict(GOOD_CONFIG), base / "good", original, download=False)
    pool = ThreadPoolExecutor(max_workers=3)
    cases = {}
    for name, a in args.items():
        if "--out" in a:
            watch = base / "somefile.txt"
        else:
            watch = base / f"prepared_{name}"
            shutil.copytree(original, watch)  # copy2 keeps the modification times
            a = a + ["--out", str(watch)]
        before = {"": (watch.read_bytes(), watch.stat().st_mtime_ns)} if watch.is_file() else snapshot(watch)
        if name in IN_PROCESS:
            result: Future = Future()
            result.set_result(run_in_process(a))
        else:
            result = pool.submit(run_cli, a)
        cases[name] = Case(a, watch, before, result)
    yield cases
    pool.shutdown(wait=True, cancel_futures=True)


def check_error(case: Case, *needles: str) -> str:
    """Non-zero exit, one 'error:' line on stderr naming every needle, no traceback, output untouched."""
    r = case.result.result()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: ") + 10, line
    for needle in needles:
        assert needle in line, (needle, line)
    after = ({"": (case.watch.read_bytes(), case.watch.stat().st_mtime_ns)} if case.watch.is_file()
             else snapshot(case.watch))
    assert after == case.before, "a failed run changed the existing output"
    return line


def test_missing_data_dir(cli):
    check_error(cli["missing_dir"], "no_such_folder", "does not exist")
    assert not Path(cli["missing_dir"].args[1]).exists()  # --no-download creates nothing


def test_empty_data_dir_no_download(cli):
    """'no WFDB records (*.hea) in': a download tried anyway (and failed offline) says 'no WFDB records in'."""
    check_error(cli["empty_dir"], str(Path(cli["empty_dir"].args[1])), "no WFDB records (*.hea) in")


def test_hidden_files_do_not_refuse_the_download(tmp_path, physionet):
    """A folder made in a file manager (.DS_Store) or kept in git (.gitkeep) holds no one's records: the download
    was refused as into 'other files (records in subfolders?)' that the user could not see."""
    physionet("bring")
    (tmp_path / "mitdb").mkdir()
    (tmp_path / "mitdb" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "mitdb" / ".gitkeep").touch()
    assert pm.find_records(tmp_path / "mitdb", download=True) == ["100"]


def test_a_data_folder_linked_to_nowhere_is_named(tmp_path, monkeypatch):
    """A data folder that is a link to a folder not there (shared data not mounted): the download failed with
    'FileExistsError: File exists', and --no-download said the folder did not exist; the link is named."""
    forbid_download(monkeypatch, "download started on a dangling link")
    (tmp_path / "mitdb").symlink_to(tmp_path / "shared" / "mitdb")
    for download in (True, False):
        with pytest.raises(UserError, match=f"mitdb is a link to {tmp_path / 'shared' / 'mitdb'}, which does not "
                                            "exist: make or mount that folder, or point --data-dir / MITBIH_DIR at"):
            pm.find_records(tmp_path / "mitdb", download=download)


def test_a_data_folder_below_a_link_to_nowhere_is_named(tmp_path, monkeypatch):
    """--data-dir link/mitdb, the link to a folder not there: the download failed with 'File exists', and
    --no-download said the folder did not exist; the link and its missing target are named, as for the folder itself."""
    forbid_download(monkeypatch, "download started below a dangling link")
    (tmp_path / "shared").symlink_to(tmp_path / "mounted")
    for download in (True, False):
        with pytest.raises(UserError, match=f"data folder {tmp_path / 'shared' / 'mitdb'} is in {tmp_path / 'shared'}, "
                                            f"which is a link to {tmp_path / 'mounted'}, which does not exist: make or "
                                            "mount that folder, or point --data-dir / MITBIH_DIR at"):
            pm.find_records(tmp_path / "shared" / "mitdb", download=download)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]


def test_a_data_folder_the_system_will_not_look_at_is_one_error(tmp_path, monkeypatch):
    """A data folder whose name is too long for the file system (as one under a folder that may not be searched), or
    that may not be read: Path.exists and iterdir raised the OSError as a traceback where the error names the folder;
    a name that fits but whose record header (NAME.hea) would not was a traceback too, not 'does not exist'."""
    forbid_download(monkeypatch, "download started")
    for folder in (tmp_path / ("x" * 300), tmp_path / ("x" * 300) / "mitdb"):
        for download in (True, False):
            with pytest.raises(UserError, match=f"cannot look in the data folder {folder}: File name too long: point "
                                                "--wfdb-dir at a folder that can be read, with the WFDB files"):
                pm.find_records(folder, download=download, flag="--wfdb-dir")
    with pytest.raises(UserError, match=f"data folder {tmp_path / ('x' * 253)} does not exist"):
        pm.find_records(tmp_path / ("x" * 253), download=False)
    assert list(tmp_path.iterdir()) == []
    iterdir = Path.iterdir

    def refused(self):          # a folder that may not be read (chmod a-r), which root never meets
        if self == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)
    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(UserError, match=f"cannot look in the data folder {tmp_path}: Permission denied: point"):
        pm.find_records(tmp_path, download=True)
    write_record(tmp_path, "100", seconds=12)       # its records found without a listing (RECORDS): no error
    (tmp_path / "RECORDS").write_text("100\n")
    assert pm.find_records(tmp_path, download=False) == ["100"]


def test_missing_prepared_tensors_say_the_command_that_writes_them_where_they_were_looked_for(tmp_path, monkeypatch):
    """`python3 prepare_mitbih.py` writes the default folder ($ECG_PREPARED_DIR's): told to a --prepared of one's own
    that was missing (a typo?) or empty, it prepared another folder and the error came again."""
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "default"))
    (tmp_path / "mine").mkdir()
    for folder, told in ((tmp_path / "default", "; run `python3 prepare_mitbih.py` first"),
                         (tmp_path / "mine", f"; run `python3 prepare_mitbih.py --out {tmp_path / 'mine'}` first"),
                         (tmp_path / "mien", f" ({tmp_path / 'mien'} does not exist); run `python3 prepare_mitbih.py "
                                             f"--out {tmp_path / 'mien'}` first")):
        with pytest.raises(UserError) as e:
            pm.read_prepared(folder / "test.pt", "test")
        assert str(e.value) == f"prepared tensors not found: {folder / 'test.pt'}{told}"


def test_a_prepared_folder_whose_name_the_system_refuses_is_one_error(tmp_path):
    """--prepared (or $ECG_PREPARED_DIR) too long a name for the file system: Path.exists raised the OSError as a
    traceback in every script that reads a split, where the error names the file and what to run."""
    path = tmp_path / ("x" * 300) / "train.pt"
    with pytest.raises(UserError, match=f"^prepared tensors not found: {path} \\({path.parent} does not exist\\); run "
                                        f"`python3 prepare_mitbih.py --out {path.parent}` first$"):
        pm.read_prepared(path, "train")


def test_a_killed_downloads_part_is_no_killed_move_of_the_users_records(tmp_path):
    """A part an earlier download left (killed before its move) made any record the user's RECORDS lacks a 'download
    of MIT-BIH killed while its files were moved in', to be emptied and downloaded anew: only a part holding the
    headers RECORDS lacks is that, and the user is told which record lacks its files."""
    write_record(tmp_path, "a", seconds=12)
    (tmp_path / "RECORDS").write_text("a\nb\n")
    (tmp_path / f"{dl.DOWNLOAD_PART}old").mkdir()
    write_record(tmp_path / f"{dl.DOWNLOAD_PART}old", "100", seconds=12)
    with pytest.raises(UserError, match=r"RECORDS lists 1 record with no \.hea in .*: b; add their files"):
        pm.find_records(tmp_path, download=False)
    write_record(tmp_path / f"{dl.DOWNLOAD_PART}old", "b", seconds=12)
    with pytest.raises(UserError, match=rf"killed while its files were moved in \(.*no \.hea, still in "
                                        rf"{dl.DOWNLOAD_PART}old\): empty the folder"):
        pm.find_records(tmp_path, download=False)


def test_a_reason_is_cut_at_a_word_only_when_too_long():
    """The download error quotes at most `limit` characters of a reason, whole when it fits exactly."""
    assert pm._first_line(ValueError("x" * 100 + "\nmore"), 100) == "x" * 100
    assert pm._first_line(ValueError("a b" * 50), 100) == ("a b" * 50)[:100].rsplit(" ", 1)[0] + " ..."


def test_no_download_never_calls_the_network(tmp_path, monkeypatch):
    """An AssertionError raised here came back as the download's own UserError ('no WFDB records in ..., and
    downloading MIT-BIH from PhysioNet there failed (AssertionError: ...)'), which the match took: pytest.fail is
    no Exception to catch, and the message is the one for a folder not to download into."""
    forbid_download(monkeypatch, "download started despite download=False")
    with pytest.raises(UserError, match=r"^no WFDB records \(\*\.hea\) in .*: put the MIT-BIH WFDB files"):
        pm.find_records(tmp_path, download=False)


def test_data_dir_that_is_a_file(tmp_path, monkeypatch):
    """A file given as the data folder is named at once, never a download target, with or without download."""
    forbid_download(monkeypatch, "download started on a file")
    (tmp_path / "100.hea").write_text("100 2 360 650000\n")
    for download in (True, False):
        with pytest.raises(UserError, match="100.hea is not a directory: point --data-dir"):
            pm.find_records(tmp_path / "100.hea", download=download)


def test_a_record_given_as_the_data_folder_is_named(tmp_path, monkeypatch):
    """--wfdb-dir DIR/100 (a record, DIR/100.hea): the folder and --records to pass, not "does not exist" and no
    download of MIT-BIH into a new folder DIR/100."""
    forbid_download(monkeypatch, "download started on a record")
    write_record(tmp_path, "100", seconds=12)
    with pytest.raises(UserError, match=f"100 is a record, not a folder: pass --wfdb-dir {tmp_path} --records 100$"):
        pm.find_records(tmp_path / "100", download=False, flag="--wfdb-dir")
    with pytest.raises(UserError, match=f"pass --data-dir {tmp_path} --records 100$"):
        pm.find_records(tmp_path / "100", download=True)
    assert not (tmp_path / "100").exists()


def test_no_download_into_a_folder_of_other_files(tmp_path, monkeypatch):
    """Records one folder down (a database with subfolders): MIT-BIH must not land among the user's files."""
    forbid_download(monkeypatch, "download started on a folder that has files")
    write_record(tmp_path / "db" / "patient1", "r1", seconds=12, seed=0)
    with pytest.raises(UserError, match="directly in .*db.*subfolders"):
        pm.find_records(tmp_path / "db", download=True)


def test_truncated_dat(cli):
    """What is wrong, not 'truncated', which the case's folder (.../truncated/b.dat) gave any error naming b.dat."""
    check_error(cli["truncated_dat"], "b.dat: ", "bytes, but the header's 4320 samples need", "(truncated file?)")


def test_header_names_missing_dat(cli):
    """What is wrong, not 'missing', which the case's folder (.../missing_dat/b) gave any error naming the files."""
    check_error(cli["missing_dat"], "b.hea names the signal file b_signals.dat, which is missing from")


def test_nan_samples(cli):
    check_error(cli["nan_samples"], "nan/a:", "67 NaN", "first at sample 1234", "lead V1", "--allow-gaps")


def test_record_shorter_than_one_window(cli):
    check_error(cli["short_record"], "/b:", "4.0 s", "shorter than one window of 6.0 s")


def test_uneven_sampling_rate(cli):
    check_error(cli["uneven_fs"], "/b:", "333.333 Hz", "128 Hz")


def test_unreadable_header(cli):
    check_error(cli["bad_header"], "b.hea", "cannot read the header")


def test_unknown_config_key(cli):
    check_error(cli["unknown_key"], "unknown_key.json", "'data.sampels_per_second'")


def test_wrongly_typed_config_key(cli):
    check_error(cli["wrong_type"], "wrong_type.json", "'model.downsample_factor'", "'8'", "wrong type")


def test_bad_config_value(cli):
    check_error(cli["bad_value"], "bad_value.json", "'data.filter_band'", "Nyquist")


def test_config_path_is_a_folder(cli):
    check_error(cli["config_is_folder"], "cannot read config file", "empty")


def test_unknown_record_asked_for(cli):
    check_error(cli["unknown_record"], "'zz'")


def test_listed_test_record_missing(cli):
    check_error(cli["listed_missing"], "'data.test_records'", "'c'")


def test_output_not_writable(cli):
    """Refused before any record is read: any error naming somefile.txt passed, the failed write of train.pt after
    every record was read and filtered ('cannot write to .../somefile.txt/sub') too."""
    check_error(cli["out_not_writable"], "cannot write to the output folder ",
                f"{Path('somefile.txt', 'sub')}: ", "somefile.txt is a file")


def test_prepared_tensors_missing(tmp_path):
    with pytest.raises(UserError) as e:
        pm.load_split("train", config_from_dict({}), tmp_path / "nothing_here")
    assert str(tmp_path / "nothing_here" / "train.pt") in str(e.value)
    assert f"run `python3 prepare_mitbih.py --out {tmp_path / 'nothing_here'}`" in str(e.value)


def test_prepared_tensors_from_another_config(tmp_path):
    db = good_db(tmp_path / "db")
    write_record(db, "b", seconds=12, seed=1)
    pm.prepare(config_from_dict(GOOD_CONFIG), db, tmp_path / "out", download=False)
    other = config_from_dict({"data": {**GOOD_CONFIG["data"], "samples_per_second": 256}})
    with pytest.raises(UserError) as e:
        pm.load_split("test", other, tmp_path / "out")
    msg = str(e.value)
    assert "test.pt" in msg and "another data config" in msg and "prepare_mitbih.py" in msg


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_prepared_tensors_corrupt(tmp_path, content):
    path = tmp_path / "validation.pt"
    if content is None:
        torch.save(torch.zeros(3), path)  # a real torch file, but not a prepared split
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match="validation.pt.*prepare_mitbih.py"):
        pm.load_split("validation", config_from_dict({}), tmp_path)


def test_sampling_rate_too_low_for_filter(tmp_path):
    x, _ = synthetic_ecg(60.0, 64.0, seed=0)
    write_signal(tmp_path, "slow", x, fs=64.0)
    with pytest.raises(UserError, match="slow.*64.0 Hz.*filter_band"):
        pm.read_record(tmp_path / "slow", config_from_dict({"data": {"filter_band": [30.0, 40.0]}}).data)


def test_one_lead_record(tmp_path):
    x, _ = synthetic_ecg(20.0, 360.0, seed=0)
    write_signal(tmp_path, "one", x[:, :1], leads=("MLII",))
    with pytest.raises(UserError, match="one.*two leads"):
        pm.read_record(tmp_path / "one", config_from_dict({}).data)


def test_unreadable_sampling_rate_is_named(tmp_path):
    """wfdb would read it as its default, 250 Hz, and stretch the record without a word."""
    write_record(tmp_path, "r", seconds=12, seed=0)
    hea = tmp_path / "r.hea"
    first, *rest = hea.read_text().splitlines()
    fields = first.split()
    fields[2] = "abc"
    hea.write_text("\n".join([" ".join(fields), *rest]) + "\n")
    with pytest.raises(UserError, match="r.hea.*'abc'"):
        pm.read_record(tmp_path / "r", config_from_dict({}).data)


@pytest.mark.parametrize("edit, said", [
    (lambda lines: [], "no record line (an empty header?)"),
    (lambda lines: lines[:2], "the record line gives 2 signals, but 1 signal lines follow it"),
    (lambda lines: [lines[0].replace(" 2 ", " 3 ", 1), *lines[1:]],
     "the record line gives 3 signals, but 2 signal lines follow it"),
], ids=["empty", "signal_line_lost", "more_signals_said"])
def test_a_header_without_the_signal_lines_it_promises_is_named(tmp_path, edit, said):
    """wfdb's own error was 'IndexError: list index out of range', naming no field."""
    write_record(tmp_path, "r", seconds=12, seed=0)
    hea = tmp_path / "r.hea"
    hea.write_text("".join(line + "\n" for line in edit(hea.read_text().splitlines())))
    with pytest.raises(UserError) as e:
        pm.read_record(tmp_path / "r", config_from_dict({}).data)
    assert str(e.value) == f"{tmp_path / 'r.hea'}: {said}"


@pytest.mark.parametrize("name, said", [
    ("r 3", "r 3.hea: the record name 'r 3' holds a space, which a header reads as the end of its name"),
    ("ré", "ré.hea names the signal file ré.dat, which wfdb reads as r.dat (it drops non-ASCII characters)"),
], ids=["space", "non_ascii"])
def test_a_record_name_a_header_cannot_hold_is_named(tmp_path, name, said):
    """A name with a space was read as a shorter name and wrong fields after it (MIT-BIH's '1 3': 'ValueError:
    unconverted data remains: 50000'); one with an accent was said to name a signal file that is missing (wfdb's
    name for it, without the accent), where the header's is there."""
    write_record(tmp_path / "src", "r", seconds=12, seed=0)
    (tmp_path / f"{name}.dat").write_bytes((tmp_path / "src" / "r.dat").read_bytes())
    first, *signals = (tmp_path / "src" / "r.hea").read_text(encoding="utf-8").splitlines()
    lines = [first.replace("r ", f"{name} ", 1), *(line.replace("r.dat", f"{name}.dat", 1) for line in signals)]
    (tmp_path / f"{name}.hea").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(UserError) as e:
        pm.read_record(tmp_path / name, config_from_dict({}).data)
    assert str(e.value).startswith(f"{tmp_path / said}")


def test_a_signal_file_not_matching_its_headers_checksum_is_warned_of(tmp_path, capsys):
    """A .dat of the right size but other samples (MIT-BIH's records are all 650000 samples long: one copied over
    another's) was read with the other record's beats without a word."""
    write_record(tmp_path, "r", seconds=12, seed=0)
    pm.read_record(tmp_path / "r", config_from_dict({}).data)
    assert "checksum" not in capsys.readouterr().err
    hea = tmp_path / "r.hea"
    first, lead1, *rest = hea.read_text().splitlines()
    fields = lead1.split()
    fields[6] = str((int(fields[6]) + 1) % 32768)
    hea.write_text("\n".join([first, " ".join(fields), *rest]) + "\n")
    pm.read_record(tmp_path / "r", config_from_dict({}).data)
    err = capsys.readouterr().err
    assert err.count("checksum") == 1
    assert f"warning: {hea}: the samples of channel {fields[-1]} in r.dat do not sum to its checksum {fields[6]}" in err


def test_an_empty_split_is_refused_by_name(tmp_path, capsys):
    """A database without MIT-BIH's record names holds nothing out by default: say so, then refuse to load it."""
    cfg = config_from_dict({})
    pm.prepare(cfg, good_db(tmp_path / "db"), tmp_path / "prep", download=False)
    assert "data.validation_records" in capsys.readouterr().err
    with pytest.raises(UserError, match="validation.pt.*data.validation_records"):
        pm.load_split("validation", cfg, tmp_path / "prep")


def test_an_unreadable_cache_is_computed_again(tmp_path, monkeypatch):
    monkeypatch.delenv("ECG_CACHE_DIR", raising=False)      # the cache in the prepared folder, tmp_path
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.arange(3)
    first = pm.cached_encoding("codes", "k", compute, tmp_path)
    (cache,) = (tmp_path / "encodings" / "codes").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:20])
    assert torch.equal(pm.cached_encoding("codes", "k", compute, tmp_path), first) and len(calls) == 2
    assert torch.equal(pm.cached_encoding("codes", "k", compute, tmp_path), first) and len(calls) == 2


def test_fetch_only_downloads_into_an_empty_folder_and_prepares_nothing(tmp_path, monkeypatch, physionet):
    """make demo's first forecast needs record 100 before anything is prepared: --fetch-only gets the data."""
    physionet("bring")      # asks for "mitdb"
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "prepared"))
    r = run_in_process(["--data-dir", str(tmp_path / "mitdb"), "--fetch-only"])
    assert r.returncode == 0 and "1 WFDB records" in r.stdout, r.stderr
    assert (tmp_path / "mitdb" / "100.hea").exists() and not (tmp_path / "prepared").exists()
    r = run_in_process(["--data-dir", str(tmp_path / "none"), "--fetch-only", "--no-download"])
    assert r.returncode == 2 and "no WFDB records" not in r.stdout and str(tmp_path / "none") in r.stderr


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path, monkeypatch, capsys):
    """A read-only prepared folder (here: a path below a file) still trains; $ECG_CACHE_DIR moves the cache."""
    monkeypatch.delenv("ECG_CACHE_DIR", raising=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    got = pm.cached_encoding("codes", "k", lambda: torch.arange(3), blocker)
    assert torch.equal(got, torch.arange(3)) and "ECG_CACHE_DIR" in capsys.readouterr().err
    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path / "cache"))
    pm.cached_encoding("codes", "k", lambda: torch.arange(3), blocker)
    assert len(list((tmp_path / "cache" / "encodings" / "codes").glob("*.pt"))) == 1


def test_every_bad_record_is_named_at_once_or_skipped(tmp_path, capsys):
    """A database with two bad records (one lead; 4 s) says both in one error, writes nothing, and with
    skip_bad prepares the rest, saying what it left out and that the test split came out empty."""
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b", "c")):
        write_record(db, name, seconds=12, seed=i)
    x, _ = synthetic_ecg(20.0, 360.0, seed=5)
    write_signal(db, "one", x[:, :1], leads=("MLII",))
    write_record(db, "short", seconds=4, seed=6)
    cfg = config_from_dict({"data": {"test_records": ["short"], "validation_records": ["c"]}})
    with pytest.raises(UserError, match="2 bad record.*one.*two leads.*short.*shorter.*--skip-bad"):
        pm.prepare(cfg, db, tmp_path / "out", download=False)
    assert not (tmp_path / "out").exists()              # not even empty: "writes nothing"
    meta = pm.prepare(cfg, db, tmp_path / "out", download=False, skip_bad=True)
    assert meta["splits"] == {"train": ["a", "b"], "validation": ["c"], "test": []}
    err = capsys.readouterr().err
    assert err.count("warning: left out: ") == 2 and "test split is empty" in err
    saved = json.loads((tmp_path / "out" / "meta.json").read_text(encoding="utf-8"))["left_out"]
    assert list(saved) == ["one", "short"] and "needs two leads" in saved["one"] and "shorter" in saved["short"]


def test_header_and_signal_faults_are_named_in_one_error(tmp_path, capsys):
    """A record bad in its header (one lead) and one bad in its samples (NaN) are named by the same run, not
    the second only once the first is repaired; skip_bad leaves both out."""
    db = tmp_path / "db"
    for i, name in enumerate(("a", "b")):
        write_record(db, name, seconds=12, seed=i)
    x, _ = synthetic_ecg(20.0, 360.0, seed=5)
    write_signal(db, "one", x[:, :1], leads=("MLII",))
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    x[3600:4000] = np.nan
    write_signal(db, "gap", x)
    cfg = config_from_dict(GOOD_CONFIG)
    with pytest.raises(UserError, match="2 bad record.*gap: 800 NaN.*one: needs two leads.*--skip-bad"):
        pm.prepare(cfg, db, tmp_path / "out", download=False)
    meta = pm.prepare(cfg, db, tmp_path / "out", download=False, skip_bad=True)
    assert sorted(meta["records"]) == ["a", "b"]
    assert capsys.readouterr().err.count("warning: left out: ") == 2


def test_first_lead_that_no_record_has(tmp_path, capsys):
    """data.first_lead naming no lead of any record is a config error naming the leads there are, not every
    record in the fallback order under a data hash of its own; a lead some records have, or the default MLII
    (another database's records fall back by design), prepares as before."""
    db = good_db(tmp_path / "db")
    write_record(db, "b", seconds=12, seed=1, leads=("ECG1", "ECG2"))
    ask = {"data": {**GOOD_CONFIG["data"], "first_lead": "XYZ"}}
    with pytest.raises(UserError, match=r"'data.first_lead' is 'XYZ', .*db has \(they have MLII, V1, ECG1, ECG2\)"):
        pm.prepare(config_from_dict(ask), db, tmp_path / "out", download=False)
    assert not (tmp_path / "out").exists()
    ask["data"]["first_lead"] = "ecg2"
    assert pm.prepare(config_from_dict(ask), db, tmp_path / "out", download=False)["records"]["b"]["leads"] == \
        ["ECG2", "ECG1"]
    assert pm.prepare(config_from_dict(GOOD_CONFIG), db, tmp_path / "out", download=False)["records"]["b"]["leads"] \
        == ["ECG1", "ECG2"]
    assert "b: no channel is MLII or a limb lead (ECG1, ECG2)" in capsys.readouterr().err


def test_first_lead_of_some_records_prepares_a_selection_without_it(tmp_path):
    """A first_lead the database has (V5, in b) prepares --records that lack it, each in the fallback order as a
    whole preparation would: it was refused as 'a lead none of the records in <db> has', judged by the selection."""
    db = good_db(tmp_path / "db")
    write_record(db, "b", seconds=12, seed=1, leads=("V5", "MLII"))
    write_record(db, "c", seconds=12, seed=2)
    ask = {"data": {**GOOD_CONFIG["data"], "first_lead": "V5"}}
    meta = pm.prepare(config_from_dict(ask), db, tmp_path / "out", records=["a", "c"], download=False)
    assert meta["records"]["a"]["leads"] == ["MLII", "V1"]


def test_a_record_short_and_gapped_is_named_for_its_length(tmp_path):
    """Each record's header is judged before its samples: the reason a repair cannot fix (too short) comes first."""
    db = good_db(tmp_path / "db")
    write_record(db, "b", seconds=12, seed=1)
    x, _ = synthetic_ecg(4.0, 360.0, seed=5)
    x[100:200] = np.nan
    write_signal(db, "short", x)
    with pytest.raises(UserError, match=r"1 bad record.*short: 4(\.0)? s is shorter than one window"):
        pm.prepare(config_from_dict(GOOD_CONFIG), db, tmp_path / "out", download=False)


def test_first_lead_is_judged_by_the_ecg_leads_of_readable_headers(tmp_path):
    """A pulse wave is no lead to name, an unreadable header is left for the record checks to name, with no
    readable lead there is nothing to judge by, and the default MLII is not asked of other databases."""
    x, _ = synthetic_ecg(20.0, 360.0, seed=6)
    pleth = 50 + 10 * np.sin(np.arange(len(x)) / 360.0 * 2 * np.pi)
    wfdb.wrsamp("icu", fs=360, units=["NU", "mV", "mV"], sig_name=["PLETH", "II", "V"],
                p_signal=np.column_stack([pleth, x]), fmt=["16"] * 3, adc_gain=[100.0] * 3, baseline=[0] * 3,
                write_dir=str(tmp_path))
    (tmp_path / "bad.hea").write_text("not a header\n")
    with pytest.raises(UserError, match=r"'PLETH', a lead none of .* has \(they have II, V\)$"):
        pm.check_config_leads(tmp_path, ["bad", "icu"], "PLETH")
    pm.check_config_leads(tmp_path, ["bad"], "PLETH")
    pm.check_config_leads(tmp_path, ["icu"], "MLII")


def test_annotations_without_beats_leave_the_record_unannotated(tmp_path, capsys):
    """An .atr of rhythm labels only (AFDB's '+' with aux notes) must not make every forecast beat a false one."""
    write_record(tmp_path, "af", seconds=12, seed=0, annotate=False)
    wfdb.wrann("af", "atr", np.array([10, 2000]), symbol=["+", "+"], aux_note=["(AFIB", "(N"], write_dir=str(tmp_path))
    rec = pm.read_record(tmp_path / "af", config_from_dict({}).data)
    assert not rec.has_annotations and len(rec.beats) == 0 and "no beat labels (+ 2; beats" in capsys.readouterr().err
    (tmp_path / "af.atr").write_bytes(b"\0\0")       # no annotation at all: the note says so, not '(; beats are'
    assert not pm.read_record(tmp_path / "af", config_from_dict({}).data).has_annotations
    assert "af.atr has no beat labels (no labels at all; beats are / ?" in capsys.readouterr().err


def test_annotation_labels_of_ones_own_are_named(tmp_path, capsys):
    """A database's own beat label (wrann's custom_labels) is no reference beat: a file of only those said 'no beat
    labels' without naming them, and one where they mark some beats dropped those beats without a word."""
    custom = pd.DataFrame({"label_store": [42], "symbol": ["X"], "description": ["my beat"]})
    cfg = config_from_dict({}).data
    for name, labels in (("own", ["X"] * 4), ("mixed", ["N", "X", "N", "+"])):
        write_record(tmp_path, name, seconds=12, seed=0, annotate=False)
        wfdb.wrann(name, "atr", np.array([400, 700, 1000, 1300]), symbol=labels, custom_labels=custom,
                   write_dir=str(tmp_path))
    assert not pm.read_record(tmp_path / "own", cfg).has_annotations
    assert "own.atr has no beat labels (X 4; beats are / ? A" in capsys.readouterr().err
    assert len(pm.read_record(tmp_path / "mixed", cfg).beats) == 2
    err = capsys.readouterr().err
    assert "mixed.atr: labels that are not WFDB's (X 1) are not read as beats" in err and "+" not in err


def test_annotations_past_the_records_end_are_refused(tmp_path):
    """MIT-BIH's .atr (360 Hz samples) kept beside a record resampled to 250 Hz: its beats ran 44% past the end,
    were dropped there, and every window was scored against beats at the wrong times without a word. One beat
    a fraction of a second past the end (a record trimmed a little) is no sign of that."""
    cfg = config_from_dict({}).data
    write_record(tmp_path, "r", seconds=20, fs=250, seed=0, annotate=False)
    beats = np.arange(100, 20 * 250, 200)
    wfdb.wrann("r", "atr", np.r_[beats, 20 * 250 + 100], symbol=["N"] * (len(beats) + 1), write_dir=str(tmp_path))
    assert len(pm.read_record(tmp_path / "r", cfg).beats) == len(beats)
    wfdb.wrann("r", "atr", np.round(beats * 360 / 250).astype(int), symbol=["N"] * len(beats), write_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"r\.atr: beats annotated up to 28\.224 s, past the record's end at 20\.0 s: "
                                         r"annotations made at another sampling rate than the record's 250 Hz"):
        pm.read_record(tmp_path / "r", cfg)


def test_beats_from_another_annotator(tmp_path, capsys):
    """AFDB keeps rhythm in .atr and beats in .qrs: --annotator qrs scores R peaks against the .qrs beats."""
    db = tmp_path / "db"
    write_record(db, "af", seconds=30, seed=0, annotate=False)
    wfdb.wrann("af", "atr", np.array([10]), symbol=["+"], aux_note=["(AFIB"], write_dir=str(db))
    beats = np.arange(200, 30 * 360, 300)
    wfdb.wrann("af", "qrs", beats, symbol=["N"] * len(beats), write_dir=str(db))
    assert not pm.read_record(db / "af", config_from_dict({}).data).has_annotations
    assert "(--annotator qrs reads af.qrs)" in capsys.readouterr().err
    (db / "af.atr").rename(db / "af.atr.bak")          # beats only in .qrs: the missing .atr points there too
    assert not pm.read_record(db / "af", config_from_dict({}).data).has_annotations
    assert "af.atr is missing; the record counts as unannotated (no R-peak scores) (--annotator qrs reads af.qrs)" \
        in capsys.readouterr().err
    (db / "af.atr.bak").rename(db / "af.atr")
    rec = pm.read_record(db / "af", config_from_dict({}).data, annotator="qrs")
    assert rec.has_annotations and np.array_equal(rec.beats, np.round(beats * 128 / 360).astype(int))
    run = evaluate.main(["--model", "seasonal", "--wfdb-dir", str(db), "--annotator", "qrs",
                         "--results", str(tmp_path / "results")])
    report = (run / "report.md").read_text()
    assert "beats from .qrs" in report and "| af | MLII, V1 | 360 | yes |" in report
    for bad, needle in ((["--annotator", "../x", "--wfdb-dir", str(db)], "'../x'"),
                        (["--annotator", "qsr", "--wfdb-dir", str(db)], "none of the records read from .* has a .qsr file"),
                        (["--annotator", "qrs"], "--annotator reads records of --wfdb-dir")):
        with pytest.raises(UserError, match=needle):
            evaluate.main(["--model", "seasonal", "--results", str(tmp_path / "results"), *bad])


def test_records_without_a_name_is_refused(tmp_path):
    """--records with no name after it (an empty shell list, say) prepared every record, as if it were not given."""
    good_db(tmp_path / "db")
    r = run_in_process(["--data-dir", str(tmp_path / "db"), "--out", str(tmp_path / "out"), "--no-download",
                        "--records"])
    assert r.returncode == 2 and "argument --records: expected at least one argument" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_an_annotation_file_cut_short_is_a_bad_record(tmp_path):
    """wfdb.rdann reads a .atr cut short without a word (it drops the last byte pair, taken for the end marker):
    the record's beats stopped at the cut, and its later windows were scored against none."""
    db = good_db(tmp_path / "db")
    whole = pm.read_record(db / "a", pm.DataConfig())
    write_record(db, "b", seconds=12, seed=1)
    atr = (db / "b.atr").read_bytes()
    (db / "b.atr").write_bytes(atr[:len(atr) // 2 // 2 * 2])       # an even cut: rdann reads it, fewer beats
    with pytest.raises(UserError, match=r"b\.atr: \d+ bytes not ending in WFDB's end-of-file marker"):
        pm.read_record(db / "b", pm.DataConfig())
    r = run_in_process(["--data-dir", str(db), "--out", str(tmp_path / "out"), "--no-download"])
    assert r.returncode == 2 and "1 bad record, nothing prepared" in r.stderr and "b.atr" in r.stderr, r.stderr
    assert len(whole.beats) > 10 and not list((tmp_path / "out").glob("*"))


def test_another_annotator_is_not_offered_when_its_file_is_cut_short_or_beatless(tmp_path, capsys):
    """Whoever turned from a .atr cut short to --annotator rhy was told '--annotator atr reads b.atr', the file that
    had just been refused; a file without beat labels would score none either. Only one holding beats is offered."""
    db = good_db(tmp_path / "db")
    write_record(db, "b", seconds=12, seed=1)
    atr = (db / "b.atr").read_bytes()
    (db / "b.atr").write_bytes(atr[:len(atr) // 2 // 2 * 2])
    wfdb.wrann("b", "ecg", np.array([10]), symbol=["+"], aux_note=["(AFIB"], write_dir=str(db))
    cfg = config_from_dict({}).data
    assert not pm.read_record(db / "b", cfg, annotator="rhy").has_annotations
    assert "b.rhy is missing; the record counts as unannotated (no R-peak scores)\n" in capsys.readouterr().err
    wfdb.wrann("b", "rhy", np.array([10]), symbol=["+"], aux_note=["(N"], write_dir=str(db))
    assert not pm.read_record(db / "b", cfg, annotator="rhy").has_annotations
    assert "the record counts as unannotated (no R-peak scores)\n" in capsys.readouterr().err
    wfdb.wrann("b", "qrs", np.arange(200, 12 * 360, 300), symbol=["N"] * 14, write_dir=str(db))
    pm.read_record(db / "b", cfg, annotator="rhy")
    assert "the record counts as unannotated (no R-peak scores) (--annotator qrs reads b.qrs)" in \
        capsys.readouterr().err


def test_an_annotation_file_wfdb_cannot_parse_is_named_in_one_line(tmp_path):
    """A .atr that ends in the end marker but holds garbage: wfdb.rdann's IndexError is one line naming the file."""
    db = good_db(tmp_path / "db")
    (db / "a.atr").write_bytes(b"\xff\xff" * 7 + b"\0\0")
    with pytest.raises(UserError, match=r"a\.atr: cannot read the annotations \(IndexError: [^\n]*\)$"):
        pm.read_record(db / "a", pm.DataConfig())


def test_skip_bad_leaving_no_training_record_says_so(tmp_path):
    """--skip-bad leaving out the only training record was 'no training records among ['a']; check
    data.test_records / validation_records': the config was fine, the record was bad."""
    db = with_bad_b(tmp_path / "db", seconds=4)          # 'a' is the test record, 'b' (too short) would train
    with pytest.raises(UserError, match=r"^no training records among \['a'\]: --skip-bad left out \['b'\] as bad"):
        pm.prepare(config_from_dict(GOOD_CONFIG), db, tmp_path / "out", download=False, skip_bad=True)


def test_fetch_only_refuses_the_flags_of_a_preparation(tmp_path, monkeypatch):
    """--fetch-only --records 100 fetched all of MIT-BIH and prepared nothing, --records passed over without a word."""
    forbid_download(monkeypatch, "fetched despite flags it passes over")
    r = run_in_process(["--data-dir", str(tmp_path / "mitdb"), "--fetch-only", "--records", "100", "--skip-bad"])
    assert r.returncode == 2 and r.stderr == ("error: --fetch-only prepares nothing (it fetches all of MIT-BIH when the "
                                              "data folder has no records), so --records, --skip-bad would do nothing: "
                                              "drop them or --fetch-only\n"), r.stderr
    assert not (tmp_path / "mitdb").exists()
