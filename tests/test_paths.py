"""Where runs write, what they record beside their results, what they refuse before long work, and what a
checkpoint may not do when loaded."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import evaluate
import paths
import running
import vqvae_train
from conftest import ROOT, edit_tree_after, run_script, write_record
from paths import UserError
from tiny import flags, tiny_setup
from train_results import load_checkpoint


def test_evaluate_writes_into_ECG_RESULTS_DIR(tmp_path, monkeypatch):
    db = tmp_path / "db"
    write_record(db, "r", seconds=12, seed=0)
    monkeypatch.setenv("ECG_RESULTS_DIR", str(tmp_path / "env_results"))
    run = evaluate.main(["--model", "zero", "--wfdb-dir", str(db), "--max-windows-per-record", "1"])
    assert run.parent == tmp_path / "env_results" and (run / "metrics.csv").is_file()


def test_forecast_writes_into_ECG_RESULTS_DIR_as_its_help_says(tmp_path, monkeypatch):
    """As the README says, forecast.py writes its runs into $ECG_RESULTS_DIR as the other scripts do; its --help
    said only results/forecast-<time>. The .json's command names the variable, else said again it wrote into
    results/; with --out it is the flag that chose the folder."""
    import forecast
    write_record(tmp_path / "db", "r", seconds=12, seed=0)
    monkeypatch.setenv("ECG_RESULTS_DIR", str(tmp_path / "env results"))
    asked = ["--record", str(tmp_path / "db" / "r"), "--start", "4", "--checkpoint", "zero"]
    made = forecast.main(asked)
    assert made["files"][0].parent.parent == tmp_path / "env results"
    said = json.loads(made["files"][2].read_text())["command"]
    assert shlex.split(said) == [f"ECG_RESULTS_DIR={tmp_path / 'env results'}", "python3", "forecast.py", *asked]
    made = forecast.main([*asked, "--out", str(tmp_path / "mine")])
    assert shlex.split(json.loads(made["files"][2].read_text())["command"])[:2] == ["python3", "forecast.py"]
    assert "$ECG_RESULTS_DIR" in " ".join(run_script(forecast.main, "forecast.py", ["--help"]).stdout.split())


def test_a_command_names_the_variable_of_a_location_whose_flag_it_does_not_give(monkeypatch):
    """The flag wins over the variable, so a command giving --prepared (or --prepared=) names no $ECG_PREPARED_DIR;
    one giving neither names it, as the folder it read would be data/prepared's without it."""
    monkeypatch.setenv("ECG_PREPARED_DIR", "env data")
    monkeypatch.setenv("ECG_RESULTS_DIR", "env runs")
    monkeypatch.delenv("ECG_CHECKPOINTS_DIR", raising=False)
    kinds = ("prepared", "results", "checkpoints")
    assert paths.command_line(["python3", "x.py", "--prepared", "mine"], kinds) == \
        "ECG_RESULTS_DIR='env runs' python3 x.py --prepared mine"
    assert paths.command_line(["python3", "x.py", "--results=r", "--prepared-not", "p"], kinds) == \
        "ECG_PREPARED_DIR='env data' python3 x.py --results=r --prepared-not p"
    assert paths.with_locations("python3 x.py", kinds) == "ECG_PREPARED_DIR='env data' ECG_RESULTS_DIR='env runs' " \
        "python3 x.py"


def test_a_path_starting_with_a_tilde_is_in_the_home_folder_for_every_flag_and_reader(tmp_path, monkeypatch):
    """The shell leaves ~ as it is in `--out=~/x` and in main([...]) from Python: forecast.py wrote into a folder named
    ~ in the working folder, and --record, --config, --checkpoint or read_record('~/...') said the file was missing,
    where --results, --prepared and --data-dir (paths.location) took it as the home folder."""
    import forecast
    import prepare_mitbih
    from hyper_params import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_record(tmp_path / "home" / "db", "r", seconds=12, seed=0)
    made = forecast.main(["--record", "~/db/r", "--start", "4", "--checkpoint", "zero", "--out=~/fc"])
    assert made["files"][0].parent == tmp_path / "home" / "fc" and not (tmp_path / "~").exists()
    assert prepare_mitbih.read_record("~/db/r", load_config().data).fs_in == 360
    shutil.copy(ROOT / "config_vqvae.json", tmp_path / "home" / "c.json")
    assert load_config("~/c.json") == load_config()
    with pytest.raises(UserError, match=f"^checkpoint not found: {re.escape(str(tmp_path / 'home' / 'x.pt'))}$"):
        load_checkpoint("~/x.pt")


def test_training_writes_into_ECG_RESULTS_DIR_and_ECG_CHECKPOINTS_DIR(tmp_path, synthetic_db, monkeypatch):
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 1, "max_steps_per_epoch": 2})
    del setup["results"], setup["checkpoints"]
    monkeypatch.setenv("ECG_RESULTS_DIR", str(tmp_path / "env_results"))
    monkeypatch.setenv("ECG_CHECKPOINTS_DIR", str(tmp_path / "env_ckpts"))
    vqvae_train.main(flags(setup, "--device", "cpu"))
    (run,) = (tmp_path / "env_results").iterdir()
    assert (run / "run.json").is_file() and (run / "metrics.csv").is_file()
    assert (tmp_path / "env_ckpts" / run.name / "last.pt").is_file()



def test_run_json_keeps_a_non_ascii_folder_name_as_typed(tmp_path, synthetic_db):
    """run.json's command, shell-quoted to be copied into a shell, held '\\u00e9' for an é in a folder's name: copied,
    it named another folder. Every JSON is UTF-8 now, as it is."""
    setup = tiny_setup(tmp_path, synthetic_db, train={"epochs": 1, "max_steps_per_epoch": 2})
    setup["results"] = str(tmp_path / "my runs é")
    r = run_script(vqvae_train.main, "vqvae_train.py", flags(setup, "--device", "cpu"))    # the shell's command line
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "my runs é").iterdir()
    assert f"--results '{tmp_path}/my runs é' " in (run / "run.json").read_text(encoding="utf-8")


def test_json_files_are_read_as_utf_8_in_any_locale(tmp_path):
    """A prepared folder's meta.json naming a folder 'données' is read as UTF-8 in any locale: in an ASCII one
    (LC_ALL=C) its records' details were {}, without a word (and Windows' cp1252 would read 'donnÃ©es')."""
    paths.atomic_write_json({"data_dir": "/data/données", "records": {"100": {"leads": ["MLII", "V5"]}}},
                            tmp_path / "meta.json")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    code = f"import prepare_mitbih; print(prepare_mitbih.stored_records({str(tmp_path)!r}))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "{'100': {'leads': ['MLII', 'V5']}}", run.stderr


def test_json_keeps_a_folder_name_of_undecodable_bytes_escaped(tmp_path):
    """A folder named in Latin-1 on a UTF-8 system ('donn\\xe9es') reaches Python as a lone surrogate, which has no
    UTF-8: written unescaped, prepare_mitbih.py stopped in a UnicodeEncodeError after the tensors, before meta.json.
    It stays escaped, as before, and reads back as the name it was."""
    name = os.fsdecode(b"/data/donn\xe9es")
    paths.atomic_write_json({"data_dir": name, "note": "données"}, tmp_path / "meta.json")
    text = (tmp_path / "meta.json").read_text(encoding="utf-8")
    assert '"/data/donn\\udce9es"' in text and '"données"' in text
    assert json.loads(text) == {"data_dir": name, "note": "données"}


def test_a_report_naming_a_folder_of_undecodable_bytes_is_written(tmp_path):
    """evaluate.py --wfdb-dir on a folder named in Latin-1 scored every window, then stopped in a UnicodeEncodeError
    writing report.md, which names the folder: the name is written escaped, the rest as it is."""
    paths.atomic_write_text(f"data: {os.fsdecode(b'/data/donn' + bytes([0xe9]) + b'es')}, 0.1 mV²\n", tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == "data: /data/donn\\udce9es, 0.1 mV²\n"


def _make_dry_run(target, **env):
    """The commands `make -n target` would run with these environment variables (the venv's own, so no install;
    a variable given as None is unset)."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {k: v for k, v in {**{k: v for k, v in os.environ.items() if not k.startswith("ECG_")}, **env}.items()
           if v is not None}
    run = subprocess.run(["make", "-n", target, f"VENV={os.path.dirname(os.path.dirname(sys.executable))}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _make_argv(target, script, **env):
    """The arguments `make target` would give `script`, as its shell splits them (in a folder with a space too):
    the dry run's command, run by bash with the venv's python replaced by printf."""
    out = _make_dry_run(target, **env).replace("\\\n\t", " ")
    python = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "bin", "python")
    line = next(line for line in out.splitlines() if line.startswith(f"{python} {script}"))
    run = subprocess.run(["bash", "-c", "printf '%s\\0' " + line[len(python):]], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return run.stdout.split("\0")[1:-1]


def test_make_demo_reads_its_checkpoints_from_ECG_CHECKPOINTS_DIR(tmp_path):
    """The trainers write into $ECG_CHECKPOINTS_DIR: the demo's forecast and evaluation must look there, not in
    checkpoints/ (an older run's model, or none)."""
    run = tmp_path / "my checkpoints" / "transformer-20260101-000000"
    run.mkdir(parents=True)
    (run / "best.pt").touch()
    env = {"ECG_CHECKPOINTS_DIR": str(run.parent)}
    assert _make_argv("demo", "forecast.py --checkpoint", **env)[:2] == ["--checkpoint", f"{run}/best.pt"]
    assert _make_argv("demo", "evaluate.py", **env)[:2] == ["--model", f"{run}/best.pt"]


@pytest.mark.parametrize("target, split", [("bench", "train"), ("pretrained-report", "test")])
@pytest.mark.parametrize("folder", ["prepared", "my prepared"])
def test_make_finds_tensors_in_ECG_PREPARED_DIR(tmp_path, target, split, folder):
    """Prepared tensors in $ECG_PREPARED_DIR are not prepared again, in a folder whose name has a space too (make's
    wildcard split it in two, and the user's own preparation was redone with the default config); a folder without
    them is."""
    (tmp_path / folder).mkdir()
    (tmp_path / folder / f"{split}.pt").write_bytes(b"")
    assert "prepare_mitbih.py" not in _make_dry_run(target, ECG_PREPARED_DIR=str(tmp_path / folder))
    assert "prepare_mitbih.py" in _make_dry_run(target, ECG_PREPARED_DIR=str(tmp_path / "none"))


def test_make_forecast_reads_a_MITBIH_DIR_with_a_space(tmp_path):
    db = tmp_path / "mit db"
    assert _make_argv("forecast", "forecast.py", MITBIH_DIR=str(db)) == ["--record", f"{db}/100", "--start", "60"]


def test_make_takes_an_empty_MITBIH_DIR_for_unset():
    """As the scripts do (paths.location): `MITBIH_DIR= make forecast` forecast record /100, after fetching into
    data/mitdb rather than finding the shared copy."""
    unset = _make_argv("forecast", "forecast.py", MITBIH_DIR=None)
    assert _make_argv("forecast", "forecast.py", MITBIH_DIR="") == unset


def test_make_names_the_checkpoint_it_did_not_find(tmp_path):
    """With no trained run, the newest checkpoint was an empty argument, which the scripts call "an empty path (an
    unset shell variable?)": they are given the pattern that found nothing, and say that no such checkpoint exists."""
    env = {"ECG_CHECKPOINTS_DIR": str(tmp_path / "my checkpoints")}
    assert _make_argv("demo", "evaluate.py", **env)[:2] == ["--model", f"{tmp_path}/my checkpoints/transformer-*/best.pt"]


def test_make_expands_a_leading_tilde_as_the_scripts_do(tmp_path):
    """paths.location expands ECG_CHECKPOINTS_DIR="~/..." (quoted, so the shell left it): make must find the same
    folders, though its recipes quote paths, and clean-cache must clear the cache the scripts use."""
    run = tmp_path / "my checkpoints" / "transformer-20260101-000000"
    run.mkdir(parents=True)
    (run / "best.pt").touch()
    env = {"HOME": str(tmp_path), "ECG_CHECKPOINTS_DIR": "~/my checkpoints", "MITBIH_DIR": "~/mit db"}
    assert _make_argv("demo", "forecast.py --checkpoint", **env) == [
        "--checkpoint", f"{run}/best.pt", "--record", f"{tmp_path}/mit db/100", "--start", "60"]
    cache = tmp_path / "my cache"
    (cache / "encodings" / "vqvae-x").mkdir(parents=True)
    (cache / "other").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_")}
    subprocess.run(["make", "clean-cache"], cwd=ROOT, env={**env, "HOME": str(tmp_path), "ECG_CACHE_DIR": "~/my cache"},
                   check=True, capture_output=True, timeout=60)
    assert sorted(p.name for p in cache.iterdir()) == ["other"]


def test_make_pretrained_keeps_its_runs_in_ECG_CHECKPOINTS_DIR_and_ECG_RESULTS_DIR(tmp_path):
    """`make pretrained` trained into checkpoints/ and reported into results/ whatever the variables said, unlike
    every script and the demo; a folder whose name has a space split the newest run's path in two; and the newest run
    folder was taken even without a best.pt, where the scripts take the newest best.pt (vqvae_eval.latest_checkpoint)."""
    ck, res = tmp_path / "my checkpoints", tmp_path / "my results"
    pre = ck / "pretrained"
    for kind in ("vqvae", "transformer", "latent_sde_crps"):
        (pre / f"{kind}-20260101-000000").mkdir(parents=True)
        (pre / f"{kind}-20260101-000000" / "best.pt").touch()
    stopped = pre / "transformer-20260102-000000"        # a later run stopped before its first best.pt: passed over
    stopped.mkdir()
    os.utime(stopped, (time.time() + 60, time.time() + 60))
    env = {"ECG_CHECKPOINTS_DIR": str(ck), "ECG_RESULTS_DIR": str(res)}
    assert _make_argv("pretrained", "vqvae_train.py", **env) == ["--checkpoints", str(pre)]
    assert _make_argv("pretrained", "transformer_train.py", **env) == [
        "--checkpoints", str(pre), "--vqvae", f"{pre}/vqvae-20260101-000000/best.pt"]
    for target, kind in (("pretrained", "transformer"), ("pretrained-sde", "latent_sde_crps")):
        assert _make_argv(target, "pretrained.py", **env) == ["--checkpoint", f"{pre}/{kind}-20260101-000000/best.pt"]
    assert _make_argv("pretrained-report", "evaluate.py", **env)[-2:] == ["--results", f"{res}/pretrained/card"]
    report = _make_dry_run("pretrained-report", **env)
    for run in ("card", "readme"):
        assert f'ls -td "{res}/pretrained/{run}"/evaluate-*/' in report


def test_make_pretrained_report_runs_both_evaluations_before_copying_either():
    """The Results table's run came after the model card's copy into pretrained/, so its report named the commit
    -dirty (the card's files changed in the tree it ran in)."""
    lines = [ln for ln in _make_dry_run("pretrained-report").splitlines() if "evaluate.py" in ln or "cp -r" in ln]
    assert ["cp -r" in ln for ln in lines] == [False, False, True, True]

def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_git_commit_marks_a_dirty_checkout(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    _git(tmp_path, "add", "model.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    assert paths.git_commit() == head
    (tmp_path / "model.py").write_text("a = 2\n")            # an uncommitted edit: results no longer match HEAD
    assert paths.git_commit() == head + "-dirty"
    (tmp_path / "notes.txt").write_text("untracked\n")       # untracked files do not count
    (tmp_path / "model.py").write_text("a = 1\n")
    assert paths.git_commit() == head


def test_git_commit_of_files_added_before_the_first_commit_is_unknown(tmp_path, monkeypatch):
    """`git add` and no commit yet: git tracks the code, yet no commit holds it; an empty commit or '-dirty' alone
    would be recorded as the code's commit."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    _git(tmp_path, "add", "model.py")
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    assert paths.git_commit() == "unknown"


def test_a_live_runs_staging_folder_stays_and_a_dead_ones_goes(tmp_path, monkeypatch):
    """staging_folder removes what a kill -9 left (a pid no process has) but not another live run's folder, still
    being written: two evaluations into one results folder, the second stopped the first at its rename. The folders
    are hidden, and a published run takes a name no earlier folder has (an empty one of the same second too)."""
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    dead = tmp_path / f"{paths.WRITING_PART}{paths.process_space()}-{ended.pid}-x"
    dead.mkdir()
    live = paths.staging_folder(tmp_path)
    assert live.name.startswith(".") and not dead.exists()
    second = paths.staging_folder(tmp_path)
    assert live.is_dir() and second.is_dir() and second != live
    monkeypatch.setattr(time, "strftime", lambda *a: "20260101-000000")
    (tmp_path / "evaluate-20260101-000000").mkdir()      # a folder of that name already, empty
    assert paths.publish_run_dir(live, "evaluate", tmp_path) == tmp_path / "evaluate-20260101-000000-1"
    assert not (tmp_path / "evaluate-20260101-000000-1").is_symlink() and not live.exists()


def test_a_second_with_a_thousand_runs_of_one_name_is_refused_by_both_namers(tmp_path, monkeypatch):
    """new_run_dir and publish_run_dir take the same names, -1 to -999 after the first, and say so past them rather
    than loop or overwrite; the staged folder stays whole to be published later."""
    monkeypatch.setattr(time, "strftime", lambda *a: "20260101-000000")
    for n in range(1000):
        (tmp_path / ("evaluate-20260101-000000" + (f"-{n}" if n else ""))).mkdir()
    staged = paths.staging_folder(tmp_path)
    (staged / "report.md").write_text("r")
    with pytest.raises(paths.UserError, match="too many runs named evaluate-20260101-000000 in"):
        paths.publish_run_dir(staged, "evaluate", tmp_path)
    with pytest.raises(paths.UserError, match="too many runs named evaluate-20260101-000000 in"):
        paths.new_run_dir("evaluate", tmp_path, tmp_path / "ck")
    assert (staged / "report.md").read_text() == "r" and len(list(tmp_path.glob("evaluate-*"))) == 1000
    (tmp_path / "evaluate-20260101-000000-999").rmdir()
    assert paths.publish_run_dir(staged, "evaluate", tmp_path).name == "evaluate-20260101-000000-999"


def test_both_namers_name_a_run_by_the_second_it_starts(tmp_path):
    """<experiment>-<YYYYmmdd-HHMMSS> (then -1, -2, ...): the README's names, sorting by time, the -N only for runs of
    the same second."""
    t0 = int(time.time())
    run = paths.new_run_dir("evaluate", tmp_path, tmp_path / "ck")
    published = paths.publish_run_dir(paths.staging_folder(tmp_path), "evaluate", tmp_path)
    t1 = time.time()
    for folder in (run, published):
        stamp = re.fullmatch(r"evaluate-(\d{8}-\d{6})(-1)?", folder.name)
        assert stamp and t0 <= time.mktime(time.strptime(stamp[1], "%Y%m%d-%H%M%S")) <= t1, folder.name


def test_git_commit_of_code_that_no_commit_holds_is_unknown(tmp_path, monkeypatch):
    """A copy unpacked inside another repository recorded that repository's commit, clean, as its own; one in a
    `git init` without commits recorded "HEAD". Either is "unknown", as a copy outside git is."""
    outer, code = tmp_path / "outer", tmp_path / "outer" / "ecg"
    code.mkdir(parents=True)
    _git(outer, "init", "-q")
    monkeypatch.setattr(paths, "ROOT", code)
    (code / "model.py").write_text("a = 1\n")
    assert paths.git_commit() == "unknown"                   # no commit yet
    _git(outer, "commit", "-q", "--allow-empty", "-m", "outer")
    assert paths.git_commit() == "unknown"                   # the outer repository's commit, not tracking model.py
    _git(outer, "add", "ecg/model.py")
    _git(outer, "commit", "-q", "-m", "tracked")
    assert paths.git_commit() == _git(outer, "rev-parse", "HEAD")     # tracked in a bigger repository: its commit
    monkeypatch.setattr(paths, "ROOT", tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    assert paths.git_commit() == "unknown"



def test_a_bench_line_of_a_clean_checkout_is_not_dirty_for_the_files_make_bench_writes(tmp_path, monkeypatch):
    """`make bench` deletes bench/results.jsonl, then appends a line per script: every line after the first read
    '<commit>-dirty' on a clean checkout (results.md's header too). Any other edit still counts."""
    sys.path.insert(0, str(ROOT / "bench"))
    import common

    _git(tmp_path, "init", "-q")
    (tmp_path / "bench").mkdir()
    for name in ("bench/results.jsonl", "bench/results.md", "model.py"):
        (tmp_path / name).write_text("one\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    (tmp_path / "bench" / "results.jsonl").unlink()
    (tmp_path / "bench" / "results.md").write_text("two\n")
    assert common.bench_commit() == head and paths.git_commit() == head + "-dirty"
    (tmp_path / "model.py").write_text("two\n")
    assert common.bench_commit() == head + "-dirty"


@pytest.fixture
def read_only_folder(tmp_path):
    """An existing folder no file can be created in (for root too: /proc/self refuses new files)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        yield "/proc/self"
    else:
        pytest.skip("no read-only folder available")


def test_evaluate_refuses_an_unwritable_results_folder_before_scoring(tmp_path, monkeypatch, read_only_folder):
    db = tmp_path / "db"
    write_record(db, "r", seconds=12, seed=0)

    def scored(*args, **kwargs):
        raise AssertionError("the evaluation ran although its results could not be written")
    monkeypatch.setattr(evaluate, "evaluate", scored)
    with pytest.raises(UserError, match="cannot write to the output folder"):
        evaluate.main(["--model", "zero", "--wfdb-dir", str(db), "--results", str(read_only_folder)])


def test_forecast_refuses_an_unwritable_out_folder_before_forecasting(tmp_path, monkeypatch, read_only_folder):
    import forecast
    from paths import PRETRAINED
    record = write_record(tmp_path / "db", "r", seconds=12, seed=0)
    monkeypatch.setattr(forecast, "forecast_record",
                        lambda *a, **k: pytest.fail("forecast although its files could not be written"))
    monkeypatch.setattr(sys, "argv", ["forecast.py", "--checkpoint", str(PRETRAINED), "--record", str(record),
                                      "--start", "5", "--device", "cpu", "--out", str(read_only_folder)])
    with pytest.raises(UserError, match="cannot write to the output folder"):
        forecast.main()


def test_prepare_refuses_an_unwritable_out_folder_before_reading_records(tmp_path, monkeypatch, read_only_folder):
    import prepare_mitbih as pm
    from hyper_params import config_from_dict
    for i, name in enumerate(("a", "b", "c")):
        write_record(tmp_path / "db", name, seconds=20, seed=i)
    monkeypatch.setattr(pm, "read_record", lambda *a, **k: pytest.fail("records read although nothing can be written"))
    cfg = config_from_dict({"data": {"test_records": ["a"], "validation_records": ["c"]}})
    with pytest.raises(UserError, match="cannot write to the output folder"):
        pm.prepare(cfg, tmp_path / "db", read_only_folder, download=False)


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):               # what a malicious pickle does when it is unpickled
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"kind": "vqvae", "model": {}, "config": {}, "extra": Payload(marker)}, path)
    with pytest.raises(UserError, match="evil.pt is unreadable"):
        load_checkpoint(path, "vqvae")
    assert not marker.exists()


@pytest.mark.parametrize("rank, said", [("0", "interrupted\n"), ("1", "")])
def test_a_run_started_with_sigint_ignored_stops_on_kill_int(rank: str, said: str):
    """A background job of a non-interactive shell inherits SIGINT ignored; run_main takes it back, so
    `kill -INT` interrupts the run (exit status 130) instead of doing nothing. torchrun passes a Ctrl-C on
    to every rank, and only rank 0 says so."""
    script = "import running, time; running.run_main(lambda: (print('ready', flush=True), time.sleep(20)))"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
                            env={**os.environ, "RANK": rank})
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert proc.stderr.read() == said
    finally:
        proc.kill()
        proc.communicate()


def test_a_scripts_lines_reach_a_log_file_as_printed(tmp_path):
    """Printed to a file (nohup, a SLURM job's --output), a script's lines sat in Python's 8 KB buffer: the line
    before minutes of work reached the log after them. run_main writes each at its line's end, then leaves stdout
    as it was. The script reads its own log after its first line."""
    log = tmp_path / "log.txt"
    script = ("import sys, running\n"
              "def main():\n"
              "    print('encoding the windows once')\n"
              f"    sys.stderr.write(open({str(log)!r}).read())\n"
              "running.run_main(main)\n"
              "print('after', sys.stdout.line_buffering, file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open(log, "w") as out:
        r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=60)
    assert r.returncode == 0 and r.stderr == "encoding the windows once\nafter False\n", r.stderr


def test_a_sigterm_after_one_a_finalizer_swallowed_stops_the_script():
    """A second SIGTERM is ignored while the first one's Terminated goes up, but not when Python swallowed that one
    in a __del__ (printed 'Exception ignored in'): evaluate.py, say, went on to its end, exit status 0."""
    script = ("import os, signal, time, running\n"
              "class SignalsWhenCollected:\n"
              "    def __del__(self): os.kill(os.getpid(), signal.SIGTERM)\n"
              "def main():\n"
              "    SignalsWhenCollected()\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(1)\n"
              "running.run_main(main)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "RANK"})
    assert (r.returncode, r.stderr.splitlines()[-1:]) == (143, ["terminated"]), r.stderr
    assert "Exception ignored in" in r.stderr


def test_a_second_sigterm_landing_anywhere_in_the_first_ones_handler_raises_one_terminated():
    """Python runs a signal's handler between any two bytecodes of the main thread, the handler's own too: SLURM's
    SIGTERM to every process of a torchrun job and the agent's forwarded one came together, and the second handler,
    run while the first held its threading.Event's lock (setting _stopping), waited on it forever. Rank 0 said
    nothing until torchrun's SIGKILL. The second handler is run here at each line of the first one, in turn."""
    script = ("import signal, sys, running\n"
              "def again_at(k):\n"
              "    seen = 0\n"
              "    def trace(frame, event, arg):\n"
              "        nonlocal seen\n"
              "        seen += 1\n"
              "        if seen == k:\n"
              "            running._terminate(signal.SIGTERM, None)\n"
              "        return trace\n"
              "    return trace, lambda: seen >= k\n"
              "k = 0\n"
              "while True:\n"
              "    k += 1\n"
              "    running._terminating.clear()\n"
              "    running._stopping.clear()\n"
              "    trace, reached = again_at(k)\n"
              "    sys.settrace(trace)\n"
              "    try:\n"
              "        running._terminate(signal.SIGTERM, None)\n"
              "    except running.Terminated:\n"
              "        pass\n"
              "    else:\n"
              "        sys.exit(f'no Terminated with the second handler at line {k}')\n"
              "    finally:\n"
              "        sys.settrace(None)\n"
              "    if not reached():\n"
              "        print(k - 1)\n"
              "        break\n")
    try:
        r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a second SIGTERM's handler, run inside the first one's, waited forever")
    assert r.returncode == 0 and int(r.stdout) > 1, r.stderr


def test_a_note_during_a_progress_bar_is_a_line_of_its_own(monkeypatch):
    """In a log (stderr no terminal) a note used to land on the bar's line: 'reading: 0%|...| 0/2note: ...'."""
    import io

    from tqdm import tqdm

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for i in tqdm(range(2), desc="reading", file=sys.stderr):
        if i == 0:
            running.note("a.atr is missing")
            running.warn("left out: b")
    text = err.getvalue()
    assert "\rnote: a.atr is missing\n" in text and "\rwarning: left out: b\n" in text
    assert "]note:" not in text and "reading: 100%" in text


def test_an_atomic_write_reaches_the_disk_then_renames_its_temporary_file(tmp_path, monkeypatch):
    """atomic_write_json syncs the temporary file and then renames it over the target in one step: a copy (or a
    rename before the sync) could leave a half or empty file after a crash or a power cut."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", os.fstat(fd).st_ino)) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append(("replace", str(a), str(b))) or real_replace(a, b))
    target = tmp_path / "metrics.json"
    paths.atomic_write_json({"b": 1, "a": 2}, target)
    assert [c[0] for c in calls] == ["fsync", "replace"]
    assert calls[1][1] != str(target) and calls[1][2] == str(target)
    assert calls[0][1] == target.stat().st_ino                  # the file synced is the one renamed into place
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_output_folder_linked_to_nowhere_is_named(tmp_path):
    """--out (or $ECG_PREPARED_DIR) a link to a folder not there, as a clone's data/prepared is to a shared one:
    'cannot write to the output folder ...: File exists' named neither the link nor what is missing."""
    (tmp_path / "prepared").symlink_to(tmp_path / "shared" / "prepared")
    with pytest.raises(UserError, match=f"output folder {tmp_path / 'prepared'}: it is a link to "
                                        f"{tmp_path / 'shared' / 'prepared'}, which does not exist$"):
        paths.check_writable(tmp_path / "prepared")


def test_an_output_folder_below_a_link_to_nowhere_is_named(tmp_path):
    """--out link/sub, the link to a folder not there: mkdir said only 'File exists'; the link and its missing
    target are named, as for --out link."""
    (tmp_path / "shared").symlink_to(tmp_path / "mounted")
    out = tmp_path / "shared" / "runs" / "prepared"
    for keep in (True, False):
        with pytest.raises(UserError, match=f"output folder {out}: {tmp_path / 'shared'} is a link to "
                                            f"{tmp_path / 'mounted'}, which does not exist$"):
            paths.check_writable(out, keep=keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]


def test_check_writable_keep_false_removes_every_folder_it_made_and_none_it_found(tmp_path):
    """keep=False (forecast.py's and prepare_mitbih.py's --out) removes the folders made for the proof, the parents
    made for it too (--out runs/today/r100 in a new runs/), but never a folder that was there, empty or not."""
    out = tmp_path / "runs" / "today" / "r100"
    assert paths.check_writable(out, keep=False) == out
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "there").mkdir()
    paths.check_writable(tmp_path / "there", keep=False)
    paths.check_writable(tmp_path / "there" / "new", keep=False)
    assert [p.name for p in tmp_path.iterdir()] == ["there"] and list((tmp_path / "there").iterdir()) == []
    paths.check_writable(tmp_path / "kept" / "out")
    assert (tmp_path / "kept" / "out").is_dir()


def test_an_output_folder_whose_name_the_system_refuses_is_one_error(tmp_path):
    """A --out whose last name is too long for the file system: looking for the folders to make, and for a link,
    raised the OSError as a traceback, where mkdir's refusal is the error naming the folder; keep=False removes
    the parents it made before mkdir stopped."""
    long = "x" * 300
    for out, keep in ((tmp_path / long, True), (tmp_path / "new" / long, False)):
        with pytest.raises(UserError, match=f"cannot write to the output folder {out}: File name too long$"):
            paths.check_writable(out, keep=keep)
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_linked_to_an_unwritable_folder_is_not_said_to_be_missing(tmp_path, read_only_folder):
    """Only a link whose folder is not there is named as one: a link to a folder that is there but takes no files
    says why it cannot be written, not 'which does not exist'."""
    (tmp_path / "out").symlink_to(read_only_folder)
    with pytest.raises(UserError, match=f"cannot write to the output folder {tmp_path / 'out'}: ") as refused:
        paths.check_writable(tmp_path / "out")
    assert "does not exist" not in str(refused.value)


def test_a_results_folder_that_cannot_be_made_is_one_error_line(read_only_folder):
    """new_run_dir (a training's) or staging_folder (an evaluation's) below a folder nothing can be created in raises
    a UserError naming the folder (run_main prints it as one 'error:' line), not an OSError traceback."""
    with pytest.raises(UserError, match="cannot create results folder .*vqvae-"):
        paths.new_run_dir("vqvae", read_only_folder, read_only_folder)
    with pytest.raises(UserError, match=f"^cannot write to {re.escape(str(read_only_folder))}: "):
        paths.staging_folder(Path(read_only_folder))


def test_locations_given_with_a_tilde_are_under_home(tmp_path, monkeypatch):
    """A flag or variable written as ~/runs (quoted in a shell script or a .env file, so not expanded there) is the
    home folder's runs, not a folder named '~' in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ECG_RESULTS_DIR", "~/env_results")
    assert paths.location("results") == tmp_path / "env_results"
    assert paths.location("results", "~/flag_results") == tmp_path / "flag_results"


def test_atomic_save_npy_writes_the_array_under_its_own_name(tmp_path):
    """The array lands in the file named (np.save given a name would append .npy to the temporary one and rename
    an empty file into place), and nothing else is left beside it."""
    import numpy as np

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    paths.atomic_save_npy(a, tmp_path / "codes.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), a)
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npy"]


def test_metrics_csv_rows_end_in_one_crlf_where_text_files_translate_newlines(tmp_path, monkeypatch):
    """On Windows a text file opened without newline='' writes each LF as CRLF: metrics.csv, read back and rewritten
    whole at every epoch, gained a CR on every row each time (CR CR CR LF after three epochs). Emulated here by
    opening text files for writing as Windows does."""
    import builtins
    import io

    from train_results import MetricsLog

    def windows(real):
        def open_(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, *a, **k):
            if "w" in mode and "b" not in mode and newline is None:
                newline = "\r\n"
            return real(file, mode, buffering, encoding, errors, newline, *a, **k)
        return open_

    monkeypatch.setattr(builtins, "open", windows(builtins.open))
    monkeypatch.setattr(io, "open", windows(io.open))
    log = MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "val_loss": 0.5})
    monkeypatch.undo()
    assert (tmp_path / "metrics.csv").read_bytes() == b"epoch,val_loss\r\n1,0.5\r\n2,0.5\r\n3,0.5\r\n"


def test_a_write_failing_for_the_disk_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    """A full disk while writing is a UserError naming the file and the reason (one 'error:' line from run_main),
    and the file written before is left whole, with no temporary file beside it."""
    import errno

    target = tmp_path / "report.md"
    paths.atomic_write_text("old\n", target)

    def full(self, text, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(paths.Path, "write_text", full)
    with pytest.raises(UserError, match=f"cannot write {target}: {os.strerror(errno.ENOSPC)}"):
        paths.atomic_write_text("new\n", target)
    assert target.read_bytes() == b"old\n" and [p.name for p in tmp_path.iterdir()] == ["report.md"]



@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs a POSIX file size limit")
def test_a_checkpoint_that_does_not_fit_is_one_error_and_keeps_the_old_one(tmp_path):
    """torch.save's own writer, stopped by the disk (here a file size limit: the same failed write(2)), raised a
    RuntimeError traceback ('unexpected pos 704 vs 598') naming neither the file nor the cause. Now it is the
    one 'error:' line of every other write, and the checkpoint before it is left whole."""
    target = tmp_path / "best.pt"
    code = (f"import resource, torch, paths, running; target = {str(target)!r}\n"
            "paths.atomic_torch_save({'w': torch.ones(10)}, target)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
            "running.run_main(lambda: paths.atomic_torch_save({'w': torch.zeros(1 << 16)}, target))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"error: cannot write {target}: {os.strerror(27)}"     # EFBIG: File too large
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(10))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_a_sigterm_in_the_middle_of_torch_save_stops_as_terminated(tmp_path, monkeypatch):
    """SIGTERM (or Ctrl-C) landing inside torch.save's archive writer: closing the cut archive raised its own
    RuntimeError ('unexpected pos 115328 vs 115217') over the Terminated, so a training under torchrun stopped with a
    traceback, exit status 1, and no resume command. It stops as terminated, the checkpoint before it whole."""
    import io

    target = tmp_path / "last.pt"
    paths.atomic_torch_save({"w": torch.ones(10)}, target)

    class SignalledMidway(io.FileIO):
        def write(self, data) -> int:
            if self.tell() > 4096:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().write(data)
    monkeypatch.setattr(paths, "open", lambda path, mode: SignalledMidway(path, mode), raising=False)
    r = run_script(lambda: paths.atomic_torch_save({"w": torch.zeros(1 << 16)}, target), "save.py", [])
    assert (r.returncode, r.stderr) == (143, "terminated\n")
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(10))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bench_report_keeps_the_old_table_when_its_write_fails(tmp_path, monkeypatch):
    """bench/report.py writes results.md atomically like every report: a write cut short (here by a full disk
    after half the text) leaves the table before it whole, and is one error (it truncated the old table)."""
    import errno
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    src, dst = tmp_path / "results.jsonl", tmp_path / "results.md"
    src.write_text(json.dumps({"bench": "b", "cpu": "c", "cores": 2, "torch_threads": 1, "torch": "t", "x": 1}) + "\n")
    dst.write_text("old table\n")
    real = paths.Path.write_text

    def half_then_full(self, text, **kwargs):
        real(self, text[:len(text) // 2], **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(paths.Path, "write_text", half_then_full)
    with pytest.raises(UserError, match=f"cannot write {dst}"):
        report.main(str(src), str(dst))
    assert dst.read_text() == "old table\n" and sorted(p.name for p in tmp_path.iterdir()) == [src.name, dst.name]


def test_bench_lines_carry_their_commit_and_the_report_gives_theirs(tmp_path, monkeypatch, capsys):
    """A bench line records the commit it ran at, and bench/report.py reports the lines' commit, not its own: the
    table named the commit of whatever checkout tabulated results.jsonl, later, maybe after edits."""
    sys.path.insert(0, str(ROOT / "bench"))
    import common
    import report

    common.emit({"bench": "b", "x": 1}, "aaaa-dirty")
    line = json.loads(capsys.readouterr().out)
    assert line["git_commit"] == "aaaa-dirty"
    src, dst = tmp_path / "results.jsonl", tmp_path / "results.md"
    src.write_text(json.dumps(line) + "\n" + json.dumps({**line, "bench": "c", "git_commit": "bbbb"}) + "\n")
    monkeypatch.setattr(paths, "git_commit", lambda: "cccc")       # the checkout at report time
    report.main(str(src), str(dst))
    table = dst.read_text()
    assert "commit aaaa-dirty:" in table and "cccc" not in table
    assert "| c |" in table and "git_commit: bbbb" in table.split("| c |")[1]   # a line of another commit says so


def test_a_bench_line_names_the_commit_it_started_at(monkeypatch, capsys):
    """A bench line took its commit when it printed, after the run: a tree edited or committed meanwhile (rhythm_bound
    runs for minutes) named code that never ran. It is the commit of the script's start, as evaluate.py's."""
    sys.path.insert(0, str(ROOT / "bench"))
    import sde_latency

    edit_tree_after(monkeypatch, sde_latency, "forecaster_to_time")
    line = sde_latency.main(["--checkpoint", str(ROOT / "pretrained" / "latent_sde.pt"), "--samples", "2",
                             "--horizon", "0.5", "--repeats", "1"])
    assert line["git_commit"] == "at-start" and paths.git_commit() == "at-end"


def test_bench_report_says_which_rows_lack_the_headers_commit_and_date(tmp_path, monkeypatch, capsys):
    """The header gave the first line's commit and the day of tabulating: a line without git_commit (results.jsonl's
    older ones) read as run at the header's commit, and a table made again today dated session 36's figures today.
    A line records its date, the header gives the first line's, and a row lacking either says so."""
    sys.path.insert(0, str(ROOT / "bench"))
    import common
    import report

    with monkeypatch.context() as m:
        m.setattr(common.time, "strftime", lambda fmt: "2020-01-02")
        common.emit({"bench": "a", "x": 1}, "aaaa")
    line = json.loads(capsys.readouterr().out)
    assert line["date"] == "2020-01-02"
    old = {k: v for k, v in line.items() if k not in ("date", "git_commit")}
    src, dst = tmp_path / "results.jsonl", tmp_path / "results.md"
    src.write_text(json.dumps(line) + "\n\n" + json.dumps({**old, "bench": "b"}) + "\n")     # tabulated on another day
    report.main(str(src), str(dst))
    table = dst.read_text().splitlines()
    assert table[2].startswith("2020-01-02, commit aaaa:")
    assert table[-2:] == ["| a |  | x: 1 |", "| b |  | x: 1; date: not recorded; git_commit: not recorded |"]


@pytest.mark.parametrize("text, said", [('{"bench": "a", "cpu": "c", "cores": 2, "torch_threads": 1, "torch": "t"}\n'
                                          "not json\n", "line 2: not JSON"),
                                         ('{"cpu": "c", "cores": 2}\n', "line 1: not a bench script's line (no bench, "
                                          "torch_threads, torch)"),
                                         ("[1, 2]\n", "line 1: not a bench script's line (no bench, cpu")])
def test_bench_report_names_the_line_that_is_not_a_bench_scripts(tmp_path, text, said):
    """A results.jsonl line that is not JSON, or not a bench script's dict, ended bench/report.py in a traceback from
    json (JSONDecodeError), a KeyError or an AttributeError; it is an error naming the file and line."""
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    src = tmp_path / "results.jsonl"
    src.write_text(text)
    with pytest.raises(UserError, match=re.escape(f"{src}, {said}")):
        report.main(str(src), str(tmp_path / "results.md"))
    assert not (tmp_path / "results.md").exists()


def test_train_speed_times_the_steps_after_the_first(monkeypatch):
    """bench/train_speed.py leaves the first step out of its throughput: its one-off work (the VQ-VAE's k-means start
    of its codebooks took two steps' time) made a 20-step bench report 5% fewer windows/s than training runs at."""
    from types import SimpleNamespace

    import training

    sys.path.insert(0, str(ROOT / "bench"))
    import train_speed

    clock = [0.0]

    def step(self, model, batch):
        clock[0] += 3.0 if clock[0] == 0 else 1.0           # the first step takes three, the others one second
    monkeypatch.setattr(training.Trainer, "_train_step", step)
    monkeypatch.setattr(training.Trainer, "_train_epoch", lambda self, model: [self._train_step(model, b) for b in
                                                                                range(self.steps_per_epoch)])
    monkeypatch.setattr(train_speed.time, "perf_counter", lambda: clock[0])
    timed = train_speed.time_train_epochs()

    class Fake(training.Trainer):
        def __init__(self):
            self.steps_per_epoch, self.s = 4, SimpleNamespace(batch_size=8)
    Fake()._train_epoch(None)
    assert timed == {"seconds": 3.0, "steps": 3, "batch": 8, "first_step_s": 3.0}


class Stop(Exception):
    """Raised by a patched step to end a script where the test has seen what it needs."""


def own_config(tmp_path, model: str, batch_size: int = 7):
    """A copy of `model`'s default config with another batch size, written to tmp_path/mine.json."""
    sys.path.insert(0, str(ROOT / "bench"))
    import train_speed

    raw = json.loads(train_speed.default_config(model).read_text())
    raw["train"]["batch_size"] = batch_size
    (tmp_path / "mine.json").write_text(json.dumps(raw))
    return tmp_path / "mine.json"


@pytest.mark.parametrize("model", ["vqvae", "transformer", "latent_sde"])
def test_train_speed_times_the_script_with_the_given_config(tmp_path, monkeypatch, model):
    """bench/train_speed.py timed each script's default config only: --config reaches the timed script, which reads
    it as it reads its own --config. The script is stopped once its config is read."""
    import importlib

    import training

    sys.path.insert(0, str(ROOT / "bench"))
    import train_speed

    for name in ("_train_step", "_train_epoch"):        # train_speed wraps them: put back after the test
        monkeypatch.setattr(training.Trainer, name, getattr(training.Trainer, name))
    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ECG_CHECKPOINTS_DIR", str(tmp_path / "no_checkpoints"))
    script, seen = importlib.import_module(f"{model}_train"), {}
    real = script.run_config

    def read_then_stop(*args, **kwargs):
        seen["config"] = real(*args, **kwargs)
        raise Stop
    monkeypatch.setattr(script, "run_config", read_then_stop)
    monkeypatch.setattr(sys, "argv", ["train_speed.py", model, "--config", str(own_config(tmp_path, model))])
    with pytest.raises(Stop):
        train_speed.main()
    assert seen["config"].train.batch_size == 7


@pytest.mark.parametrize("model, config", [("transformer", "config_vqvae.json"),
                                           ("latent_sde", "config_vqvae_sde.json")])
def test_train_speed_without_a_vqvae_checkpoint_uses_the_recipes_vqvae(tmp_path, monkeypatch, model, config):
    """With no VQ-VAE checkpoint the latent SDE's bench ran on an untrained VQ-VAE of config_vqvae.json (three
    codebooks of 1024), not of config_vqvae_sde.json's one of 512 that its recipe trains it on."""
    import torch

    from hyper_params import load_config

    sys.path.insert(0, str(ROOT / "bench"))
    import train_speed

    monkeypatch.setenv("ECG_CHECKPOINTS_DIR", str(tmp_path / "no_checkpoints"))
    path, said = train_speed.vqvae_checkpoint(tmp_path, model)
    assert torch.load(path, weights_only=True)["config"] == load_config(ROOT / config).to_dict()
    assert config in said


def one_fake_epoch(tmp_path, monkeypatch, script) -> list:
    """`script`.main replaced by one epoch of three steps that do nothing (batch size 8) on a stand-in train.pt, for
    train_speed to time; returns the argv lists it is called with."""
    from types import SimpleNamespace

    import training

    monkeypatch.setattr(training.Trainer, "_train_epoch", lambda self, model: [self._train_step(model, b) for b in
                                                                                range(self.steps_per_epoch)])
    monkeypatch.setattr(training.Trainer, "_train_step", lambda self, model, batch: None)
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "train.pt").write_bytes(b"0" * 2 ** 20)
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "prepared"))
    argvs = []

    class Fake(training.Trainer):
        def __init__(self):
            self.steps_per_epoch, self.s = 3, SimpleNamespace(batch_size=8)

    def one_epoch(argv):
        argvs.append(argv)
        Fake()._train_epoch(None)
        run = Path(argv[argv.index("--results") + 1]) / "run"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"data_hash": "config/files", "vqvae_sha256": "0123",
                                                  "seed": 1337}))
    monkeypatch.setattr(script, "main", one_epoch)
    return argvs


@pytest.mark.parametrize("given", [True, False])
def test_train_speed_names_the_config_it_timed(tmp_path, monkeypatch, given):
    """The JSON line says which config was timed: --config's path, or the script's default from the project's root
    (bench/results.jsonl's older lines, without the key, timed the default)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import train_speed

    argvs = one_fake_epoch(tmp_path, monkeypatch, vqvae_train)
    config = own_config(tmp_path, "vqvae")
    r = run_script(train_speed.main, "train_speed.py", ["vqvae", *(["--config", str(config)] if given else [])])
    assert r.returncode == 0, r.stderr
    assert ("--config" in argvs[0]) == given and (not given or argvs[0][argvs[0].index("--config") + 1] == str(config))
    line = json.loads(r.stdout)
    assert line["config"] == (str(config) if given else "config_vqvae.json")
    assert line["data_hash"] == "config/files" and "seed" not in line     # what the run read, from its run.json


def test_train_speed_times_the_forecasters_on_the_given_vqvae(tmp_path, monkeypatch):
    """A forecaster's step time depends on its VQ-VAE's compression factor (the code sequence's length): --vqvae
    reaches the timed script as its own --vqvae and the JSON line names it; the VQ-VAE bench refuses it by name."""
    import transformer_train

    sys.path.insert(0, str(ROOT / "bench"))
    import train_speed

    argvs = one_fake_epoch(tmp_path, monkeypatch, transformer_train)
    mine = str(tmp_path / "my_vqvae.pt")
    r = run_script(train_speed.main, "train_speed.py", ["transformer", "--vqvae", mine])
    assert r.returncode == 0, r.stderr
    assert argvs[0][argvs[0].index("--vqvae") + 1] == mine
    assert json.loads(r.stdout)["vqvae"] == mine and json.loads(r.stdout)["vqvae_sha256"] == "0123"
    r = run_script(train_speed.main, "train_speed.py", ["vqvae", "--vqvae", mine])
    assert r.returncode == 2 and "--vqvae is the forecasters' VQ-VAE" in r.stderr


def test_prepare_time_prepares_with_the_given_config(tmp_path, monkeypatch):
    """bench/prepare_time.py timed config_vqvae.json's data section only: --config's is the one prepared, and the
    JSON line names it."""
    sys.path.insert(0, str(ROOT / "bench"))
    import prepare_time

    raw = json.loads((ROOT / "config_vqvae.json").read_text())
    raw["data"]["window_stride"] = 1.5
    (tmp_path / "mine.json").write_text(json.dumps(raw))
    seen = []

    def prepare(cfg, data, out, download):
        seen.append(cfg)
        return {"records": ["100"], "windows": {"train": 1}, "data_hash": "config", "input_hash": "files"}
    monkeypatch.setattr(prepare_time, "prepare", prepare)
    edit_tree_after(monkeypatch, prepare_time, "prepare")       # its line names the commit it started at
    r = run_script(prepare_time.main, "prepare_time.py", ["--config", str(tmp_path / "mine.json")])
    assert r.returncode == 0, r.stderr
    assert seen[0].data.window_stride == 1.5
    line = json.loads(r.stdout)
    assert line["config"] == str(tmp_path / "mine.json") and line["data_hash"] == "config/files"   # as run.json's
    assert line["git_commit"] == "at-start"


@pytest.mark.parametrize("bench, script", [("train_speed", "vqvae_train"), ("train_speed", "transformer_train"),
                                           ("train_speed", "latent_sde_train"), ("prepare_time", "prepare_mitbih")])
@pytest.mark.parametrize("config", ["missing.json", "unknown_key.json", ""])
def test_bench_scripts_refuse_a_bad_config_as_the_script_they_time(tmp_path, monkeypatch, bench, script, config):
    """A missing config file, an unknown key or an empty path: the bench script's error is the timed script's own."""
    import importlib

    import training

    sys.path.insert(0, str(ROOT / "bench"))
    for name in ("_train_step", "_train_epoch"):
        monkeypatch.setattr(training.Trainer, name, getattr(training.Trainer, name))
    monkeypatch.setenv("ECG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ECG_CHECKPOINTS_DIR", str(tmp_path / "no_checkpoints"))
    (tmp_path / "unknown_key.json").write_text('{"train": {"batch_sise": 8}}' if script != "prepare_mitbih"
                                               else '{"data": {"window_sekonds": 8}}')
    path = str(tmp_path / config) if config else ""
    model = [script.removesuffix("_train")] if bench == "train_speed" else []
    ours = run_script(importlib.import_module(bench).main, f"{bench}.py", [*model, "--config", path])
    theirs = run_script(importlib.import_module(script).main, f"{script}.py", ["--config", path])
    assert ours.returncode == theirs.returncode == 2
    said = theirs.stderr.split("error: ", 1)[1]
    assert ours.stderr.split("error: ", 1)[1] == said and ("config" in said or "empty path" in said), said


@pytest.mark.parametrize("bench, flag, value", [
    ("forecast_latency", "--samples", "0"), ("sde_latency", "--samples", "-1"), ("sde_latency", "--repeats", "0"),
    ("sde_latency", "--threads", "0"), ("sde_latency", "--threads", "-2"), ("sde_latency", "--horizon", "0"),
    ("rhythm_bound", "--max-windows-per-record", "0"), ("rhythm_bound", "--max-windows-per-record", "-1"),
    ("rhythm_bound", "--history-seconds", "-6")])
def test_bench_scripts_refuse_a_count_or_duration_below_one_by_its_flag(monkeypatch, bench, flag, value):
    """The timing flags went unchecked: sde_latency --repeats 0 ended in an UnboundLocalError, --threads -2 in torch's
    RuntimeError, --samples 0 in predict's ValueError after the model was loaded; --threads 0 and rhythm_bound
    --max-windows-per-record 0 silently meant the default and every window. Each is a usage error naming its flag."""
    import importlib

    sys.path.insert(0, str(ROOT / "bench"))
    module = importlib.import_module(bench)

    def went_on(*args, **kwargs):
        raise UserError("went past the flags")
    monkeypatch.setattr(module, "forecaster_to_time", went_on, raising=False)
    monkeypatch.setattr(evaluate, "load_prepared", went_on)
    r = run_script(module.main, f"{bench}.py", [flag, value])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"{bench}.py: error: argument {flag}: {value}"), r.stderr


def test_bench_report_reads_lines_with_and_without_a_config(tmp_path):
    """bench/results.jsonl's lines from before --config have no "config" key: the table takes old and new lines."""
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    lines = [json.loads(line) for line in (ROOT / "bench" / "results.jsonl").read_text().splitlines()[:2]]
    old = [{k: v for k, v in line.items() if k != "config"} for line in lines]     # as written before --config
    new = {**lines[1], "config": "mine.json"}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in old + [new]))
    report.main(str(tmp_path / "results.jsonl"), str(tmp_path / "results.md"))
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| train_vqvae")]
    assert len(rows) == 2 and "config" not in rows[0] and "config: mine.json" in rows[1]


def test_bench_report_names_a_rows_machine_where_it_is_not_the_headers(tmp_path):
    """The header names the first line's CPU and threads and every row left them out: a line from
    `sde_latency.py --threads 1` (or another machine) read as if run on the header's 2 threads."""
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    machine = {"cpu": "c", "cores": 2, "torch_threads": 2, "torch": "t"}
    lines = [{"bench": "a", "x": 1, **machine}, {"bench": "b", "x": 2, **machine, "torch_threads": 1}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    report.main(str(tmp_path / "results.jsonl"), str(tmp_path / "results.md"))
    rows = (tmp_path / "results.md").read_text().splitlines()[-2:]
    assert "on 2 threads" in (tmp_path / "results.md").read_text()
    assert rows == ["| a |  | x: 1 |", "| b |  | x: 2; torch_threads: 1 |"]


def test_bench_results_md_is_the_table_of_results_jsonl(tmp_path):
    """bench/results.md is bench/report.py's table of bench/results.jsonl: session 38's run of the spread frontier went
    into the table only, and tabulating the lines again brought back the F1s it had replaced."""
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    report.main(str(ROOT / "bench" / "results.jsonl"), str(tmp_path / "results.md"))
    table = [line for line in (ROOT / "bench" / "results.md").read_text().splitlines() if line.startswith("|")]
    assert [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("|")] == table


def test_a_warning_under_a_progress_bar_gets_a_line_of_its_own():
    """A forecaster's warnings.warn while evaluate.py's bar is drawn: written plainly, the warning would
    continue the bar's line in a log; run_main writes it through tqdm.write, which clears the bar first."""
    script = ("import warnings, running, tqdm\n"
              "def main():\n"
              "    for i in tqdm.tqdm(range(2), desc='windows', mininterval=0):\n"
              "        warnings.warn('the context is odd')\n"
              "running.run_main(main)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    said = out.stderr
    at = said.index("UserWarning: the context is odd")
    line = said[:at].split("\n")[-1].split("\r")[-1]       # what the warning's line shows before it
    assert "windows" not in line and "|" not in line, repr(said)
    assert said.count("UserWarning: the context is odd") == 1      # once per place, as Python's default


def test_a_plot_killed_while_written_keeps_the_previous_png(tmp_path, monkeypatch):
    """A run killed while writing a plot (here half the PNG's bytes, then Ctrl-C) leaves the plot of the epoch
    before whole, with no temporary file beside it; written whole, the PNG is the one savefig writes by name."""
    import io

    import matplotlib.pyplot as plt
    import PIL.Image

    from train_results import MetricsLog, plot_loss_curves

    log = MetricsLog(tmp_path / "metrics.csv")
    for epoch in (1, 2):
        log.append({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    out = tmp_path / "loss_curves.png"
    plot_loss_curves(log, out)
    before = out.read_bytes()
    fig, _ = plt.subplots()
    fig.savefig(tmp_path / "direct.png", dpi=50)
    paths.atomic_savefig(fig, tmp_path / "atomic.png", dpi=50)
    plt.close(fig)
    assert (tmp_path / "atomic.png").read_bytes() == (tmp_path / "direct.png").read_bytes()
    real = PIL.Image.Image.save

    def half_then_killed(self, fp, *args, **kwargs):
        buf = io.BytesIO()
        real(self, buf, *args, **kwargs)
        (fp.write if hasattr(fp, "write") else paths.Path(fp).write_bytes)(buf.getvalue()[:len(buf.getvalue()) // 2])
        raise KeyboardInterrupt
    monkeypatch.setattr(PIL.Image.Image, "save", half_then_killed)
    log.append({"epoch": 3, "train_loss": 0.3, "val_loss": 0.6})
    with pytest.raises(KeyboardInterrupt):
        plot_loss_curves(log, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.png", "direct.png", "loss_curves.png", "metrics.csv"]


def test_every_figure_is_saved_through_atomic_savefig():
    """Plots are written like checkpoints and reports: no script saves a figure in place."""
    scripts = sorted(ROOT.glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    in_place = [f"{p.name}:{n}" for p in scripts if p.name != "paths.py"
                for n, line in enumerate(p.read_text().splitlines(), 1) if ".savefig(" in line]
    assert in_place == []


@pytest.mark.parametrize("script, flags", [("vqvae_eval.py", ["--prepared", "--results", "--checkpoints"]),
                                           ("vqvae_train.py", ["--prepared", "--results", "--checkpoints"]),
                                           ("evaluate.py", ["--prepared", "--results"])])
def test_help_names_the_location_variables(script, flags):
    """Each --prepared / --results / --checkpoints in a script's --help names the variable used without it (the
    flags each script has are listed: a flag missing from --help, or shown another way, is no pass)."""
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    options = " ".join(out.stdout.split()).split(" options: ", 1)[1]
    for flag, var in (("--prepared", "$ECG_PREPARED_DIR"), ("--results", "$ECG_RESULTS_DIR"),
                      ("--checkpoints", "$ECG_CHECKPOINTS_DIR")):
        _, found, rest = options.partition(f" {flag} {flag[2:].upper()} ")
        assert bool(found) == (flag in flags), (script, flag)
        assert not found or var in rest.split(" --", 1)[0], (script, flag, rest)


@pytest.mark.parametrize("rank, said", [("0", "error: no such checkpoint\n"),
                                        ("1", "error: rank 1: no such checkpoint\n")])
def test_an_error_of_a_rank_other_than_0_is_said_after_a_grace_period(monkeypatch, capsys, rank: str, said: str):
    """Under torchrun only rank 0 used to say an error: one that rank 1 alone met (its node had no copy of last.pt)
    ended in torchrun's 'exitcode: 2' with no word of why. Rank 0 says it at once, another rank after a grace
    period in which torchrun stops it when rank 0 meets the same error."""
    slept = []
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(running.time, "sleep", slept.append)

    def fails() -> None:
        raise UserError("no such checkpoint")
    with pytest.raises(SystemExit) as e:
        running.run_main(fails)
    assert e.value.code == 2 and capsys.readouterr().err == said
    assert slept == ([] if rank == "0" else [running.RANK_ERROR_GRACE_S])


def test_run_main_in_threads_leaves_the_process_wide_unraisable_hook_as_it_was():
    """run_main installs its unraisable hook with the SIGTERM handler it serves, in the main thread only: two
    run_mains in threads, the first ending first, each put back the hook it had found, and the first one's wrapper
    stayed installed for the rest of the process."""
    import threading

    before = sys.unraisablehook
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    a = threading.Thread(target=running.run_main, args=(lambda: (a_in.set(), b_in.wait(10)),))
    b = threading.Thread(target=running.run_main, args=(lambda: (a_in.wait(10), b_in.set(), a_out.wait(10)),))
    a.start()
    b.start()
    a.join(10)
    a_out.set()
    b.join(10)
    assert sys.unraisablehook is before


def test_a_rank_stopped_by_torchrun_in_its_grace_period_says_nothing_more(monkeypatch, capsys):
    """Rank 0 met the same error, said it and exited; torchrun then sends SIGTERM to the rank waiting out its grace
    period. Since SIGTERM is running.Terminated, that rank printed two tracebacks (the UserError's and, 'during handling
    of the above exception', Terminated's) where the signal's default had ended it silently."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(running.time, "sleep", lambda s: os.kill(os.getpid(), signal.SIGTERM))

    def fails() -> None:
        raise UserError("no such checkpoint")
    with pytest.raises(SystemExit) as e:
        running.run_main(fails)
    assert e.value.code == 143 and capsys.readouterr().err == ""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_bench_prepare_time_help_prepares_nothing(tmp_path):
    """bench/prepare_time.py took no options and ignored --help: it started preparing every record of $MITBIH_DIR
    (minutes), or with none there stopped in a 'data folder does not exist' error. --help now says what it does."""
    env = {**os.environ, "MITBIH_DIR": str(tmp_path / "no_records")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "prepare_time.py"), "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: prepare_time.py" in done.stdout and not done.stderr


def test_bench_report_answers_help_and_names_what_it_lacks(tmp_path):
    """bench/report.py read sys.argv itself: --help printed its docstring and exited 1, as an error."""
    run = [sys.executable, str(ROOT / "bench" / "report.py")]
    done = subprocess.run(run + ["--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: report.py [-h] src dst" in done.stdout and not done.stderr
    done = subprocess.run(run + [str(tmp_path / "results.jsonl")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "the following arguments are required: dst" in done.stderr


@pytest.mark.parametrize("script, flag", [
    ("prepare_mitbih", "--out"), ("prepare_mitbih", "--data-dir"), ("prepare_mitbih", "--config"),
    ("forecast", "--out"), ("forecast", "--record"), ("forecast", "--checkpoint"),
    ("vqvae_train", "--resume"), ("vqvae_train", "--prepared"), ("vqvae_train", "--checkpoints"),
    ("transformer_train", "--vqvae"), ("latent_sde_train", "--crps-from"),
    ("evaluate", "--wfdb-dir"), ("evaluate", "--results"), ("vqvae_eval", "--prepared"), ("pretrained", "--mitdb"),
])
def test_an_empty_path_flag_is_refused(script, flag, monkeypatch):
    """`--out "$DIR"` with DIR unset meant the flag's default without a word: prepare_mitbih.py wrote into
    data/prepared (or $ECG_PREPARED_DIR), --resume '' trained from scratch, --wfdb-dir '' scored the prepared split.
    Nothing runs past the parsing: a flag the parser takes stops the script there (Parsed)."""
    import argparse
    import importlib

    from conftest import run_script

    class Parsed(Exception):
        pass

    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, *args, **kwargs):
        parse(self, *args, **kwargs)
        raise Parsed(f"{flag} '' was taken")
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    module = importlib.import_module(script)
    needed = {"forecast": ["--record", "r", "--start", "5"], "pretrained": ["--checkpoint", "c.pt"]}.get(script, [])
    r = run_script(module.main, f"{script}.py", [*needed, flag, ""])
    assert r.returncode == 2 and f"error: argument {flag}: an empty path (an unset shell variable?)" in r.stderr, (
        r.returncode, r.stderr)


def test_reports_show_paths_within_the_project_from_its_root(tmp_path):
    """A report made in one checkout named /tmp/eval/main/pretrained/forecaster.pt; from the root it reads the same
    in every checkout. Paths elsewhere stay whole."""
    assert paths.shown(paths.ROOT / "pretrained" / "forecaster.pt") == "pretrained/forecaster.pt"
    assert paths.shown(paths.ROOT / "results" / ".." / "data" / "prepared" / "test.pt") == "data/prepared/test.pt"
    link = tmp_path / "link"
    link.symlink_to(paths.ROOT / "pretrained")
    assert paths.shown(link / "forecaster.pt") == "pretrained/forecaster.pt"
    assert paths.shown(tmp_path / "best.pt") == str(tmp_path / "best.pt")



def test_importing_the_modules_leaves_the_sessions_matplotlib_backend_and_scripts_draw_with_agg():
    """train_results switched matplotlib to Agg when imported, so `from forecast import Forecaster` in a notebook or
    Python session took the session's own backend (inline plots, plt.show) away. A module leaves it now; a script's
    run_main picks Agg, unless $MPLBACKEND chooses another."""
    def run(code: str, **env: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | env
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.lower().split()
    modules = "import matplotlib; import forecast, evaluate, vqvae_eval, latent_sde_train, running; "
    script = "running.run_main(lambda: print(matplotlib.get_backend()))"
    assert run("import matplotlib; matplotlib.use('pdf'); " + modules + "print(matplotlib.get_backend()); "
               + script) == ["pdf", "agg"]
    assert run("import matplotlib, running; " + script, MPLBACKEND="svg") == ["svg"]   # the modules: the run above
    # matplotlib first imported in the script, as the scripts do: Agg still, not chosen only at the first plot (None),
    # which on a machine with a display is a window's backend
    assert run("import running; running.run_main(lambda: print(__import__('matplotlib').rcParams."
               "_get_backend_or_none()))") == ["agg"]


def test_the_forecasting_api_and_the_scripts_help_import_neither_matplotlib_nor_wfdb():
    """train_results imported matplotlib.pyplot at the top, and prepare_mitbih wfdb (and with it pandas), so
    `Forecaster.from_pretrained()`, and every script's --help, waited for plots they never drew and records they never
    read (0.3 s of CPU each); the functions that plot or read records import them now, and run_main chooses Agg
    without importing matplotlib. The scripts' --help run in one process (torch is imported once), each as a user's
    is, without $MPLBACKEND (which conftest sets and run_main may have set for the script before)."""
    code = ("import sys, forecast, latent_sde, evaluate, prepare_mitbih; forecast.Forecaster.from_pretrained('cpu'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'wfdb')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]"]
    helps = ("import contextlib, io, os, runpy, sys; sys.path.insert(0, '.')\n"
             "for script in sys.argv[1:]:\n"
             "    sys.argv = [script, '--help']; os.environ.pop('MPLBACKEND', None)\n"
             "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
             "        runpy.run_path(script, run_name='__main__')\n"
             "    print(script, 'usage:' in out.getvalue(), *sorted({m.split('.')[0] for m in sys.modules}\n"
             "                                                    & {'matplotlib', 'wfdb'}))\n")
    scripts = ["forecast.py", "evaluate.py", "prepare_mitbih.py", "vqvae_train.py", "vqvae_eval.py",
               "transformer_train.py", "latent_sde_train.py", "pretrained.py"]
    out = subprocess.run([sys.executable, "-c", helps, *scripts], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{s} True" for s in scripts]


def test_the_data_folder_is_the_shared_copy_when_only_it_has_records(tmp_path, monkeypatch):
    """As make reads it: data/mitdb, else ../shared/data/mitdb when only it has records (`python3 prepare_mitbih.py`
    tried a download into an empty data/mitdb where `make prepare` read the shared copy); $MITBIH_DIR and the flag
    still win, and with records in neither, data/mitdb is where a download goes."""
    own, shared = tmp_path / "repo" / "data" / "mitdb", tmp_path / "shared" / "data" / "mitdb"
    monkeypatch.setitem(paths.ENV, "data", ("MITBIH_DIR", own))
    monkeypatch.setattr(paths, "SHARED_MITDB", shared)
    monkeypatch.delenv("MITBIH_DIR", raising=False)
    assert paths.location("data") == own
    write_record(shared, "100", seconds=8)
    assert paths.location("data") == shared
    write_record(own, "101", seconds=8)
    assert paths.location("data") == own
    monkeypatch.setenv("MITBIH_DIR", str(tmp_path / "env"))
    assert paths.location("data") == tmp_path / "env" and paths.location("data", "flag") == Path("flag")


def test_an_empty_variable_or_an_empty_data_folder_is_no_location(tmp_path, monkeypatch):
    """MITBIH_DIR= (set, empty) is unset, not the working folder; an empty data/mitdb (a download's folder made,
    nothing in it) holds no records, so the shared copy is read."""
    own, shared = tmp_path / "repo" / "data" / "mitdb", tmp_path / "shared" / "data" / "mitdb"
    monkeypatch.setitem(paths.ENV, "data", ("MITBIH_DIR", own))
    monkeypatch.setattr(paths, "SHARED_MITDB", shared)
    monkeypatch.setenv("MITBIH_DIR", "")
    own.mkdir(parents=True)
    assert paths.location("data") == own
    write_record(shared, "100", seconds=8)
    assert paths.location("data") == shared


def test_a_run_published_into_a_name_another_run_took_meanwhile_takes_the_next(tmp_path, monkeypatch):
    """Two evaluations finishing in the same second: the other's folder appeared between the check for the name and
    the rename (os.path.lexists said free). The rename fails on the other's files, never replaces them, and the run
    takes evaluate-<time>-1; its staging folder is gone."""
    monkeypatch.setattr(paths.time, "strftime", lambda fmt: "20260101-000000")
    other = tmp_path / "evaluate-20260101-000000"
    other.mkdir()
    (other / "report.md").write_text("the other run's")
    staged = paths.staging_folder(tmp_path)
    (staged / "report.md").write_text("this run's")
    monkeypatch.setattr(paths.os.path, "lexists", lambda p: False)       # the race: checked free, taken since
    run = paths.publish_run_dir(staged, "evaluate", tmp_path)
    monkeypatch.undo()
    assert run == tmp_path / "evaluate-20260101-000000-1" and (run / "report.md").read_text() == "this run's"
    assert (other / "report.md").read_text() == "the other run's" and not staged.exists()


def test_a_staging_folder_leaves_a_live_runs_and_removes_a_killed_ones(tmp_path, capsys):
    """Two evaluations at once in one results root: the second's clean-up of folders a kill -9 left must not take
    the first's, still being written (its process is alive); one whose process is gone goes."""
    live = paths.staging_folder(tmp_path)
    (live / "metrics.json").write_text("{}")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f"{paths.WRITING_PART}{paths.process_space()}-{int(gone.stdout)}-abc"
    killed.mkdir()
    (killed / "metrics.json").write_text("{}")
    second = paths.staging_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, second.name])
    assert (live / "metrics.json").is_file() and f"removed {killed}" in capsys.readouterr().out
