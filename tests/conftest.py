"""Shared fixtures: the real MIT-BIH copy beside the repository, synthetic WFDB records, a fake PhysioNet."""
from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

# tqdm takes a TQDM_* variable (TQDM_DISABLE=1, kept in many a CI config) as the default of that argument once, on
# import, which torch makes: the caller's shell then hid the bars whose lines the tests read. Gone before that import,
# here and in every subprocess a test starts.
for _var in [v for v in os.environ if v.startswith("TQDM_")]:
    del os.environ[_var]

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")  # the tests' plots go to files, as the scripts' do (run_main)
torch.set_num_threads(1)  # tiny models: one thread is faster and stable when other jobs share the cores
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MITDB = Path(os.environ.get("MITBIH_DIR") or ROOT.parent / "shared" / "data" / "mitdb").resolve()


def timeout_s(text: str | None) -> float:
    """ECG_TEST_TIMEOUT's seconds (default 300; 0: no limit). -1, nan or inf failed every test in setitimer's 'Invalid
    argument', 'Invalid value NaN' or 'timestamp out of range', and a word stopped the conftest in float's error, none
    naming the variable."""
    try:
        seconds = float(text or 300)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:     # `not <=`: a NaN is refused too
        raise ValueError(f"ECG_TEST_TIMEOUT={text}: a test phase's limit takes seconds >= 0 (0: none), e.g. 120")
    return seconds


# A test phase (setup, call or teardown) over this many seconds fails (time_limit; ECG_TEST_TIMEOUT sets another; the
# slowest takes 16 s): a hang (a download's child, a torchrun rank) hung the suite until CI's limit, naming no test.
TEST_TIMEOUT_S = timeout_s(os.environ.get("ECG_TEST_TIMEOUT"))
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_LOCALID")


@pytest.fixture(scope="session", autouse=True)
def own_folders():
    """Every test and module fixture writes where its flags say (tmp_path), never into the caller's
    $ECG_CACHE_DIR, results or checkpoints: a cache shared with other runs hands a test their encodings.
    Nor does a test run as a torchrun rank because the caller's shell has RANK or WORLD_SIZE set (RANK=1 silenced
    every note and delayed and renamed every error; the tests that want a rank set it themselves). --help is wrapped
    at 80 columns, as where no terminal is (CI): argparse takes the width from $COLUMNS, and an exported COLUMNS=40
    broke the file names the tests read in it."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("ECG_CACHE_DIR", "ECG_PREPARED_DIR", "ECG_RESULTS_DIR", "ECG_CHECKPOINTS_DIR", "ECG_DIST_TIMEOUT",
                    *TORCHRUN_VARS):
            mp.delenv(var, raising=False)
        mp.setenv("COLUMNS", "80")
        yield


@pytest.fixture(autouse=True)
def figures_closed():
    """Figures a test kept open to read (plt.close stubbed out, savefig stopped) closed after it: they piled up over
    test_training.py and matplotlib warned of more than 20 open figures in whichever test opened the 21st."""
    yield
    if (plt := sys.modules.get("matplotlib.pyplot")) is not None:
        plt.close("all")


@pytest.fixture(scope="session")
def mitdb() -> Path:
    """The real database; in CI its absence is a failure, elsewhere a skip."""
    if not (MITDB / "100.hea").exists():
        if os.environ.get("CI"):
            pytest.fail(f"MIT-BIH database not found at {MITDB} (CI needs ../shared/data/mitdb)")
        pytest.skip(f"MIT-BIH database not found at {MITDB}")
    return MITDB


def synthetic_ecg(seconds: float, fs: float, seed: int = 0, hr_bpm: float = 72.0):
    """Two-lead ECG-like signal (P, QRS, T bumps) in mV and its beat positions in samples: copies of the one drawn
    for these arguments (a 60 s record's bumps take a third of a second, and the suite asks for the same ones often),
    so a caller may change them."""
    x, beats = _synthetic_ecg(seconds, fs, seed, hr_bpm)
    return x.copy(), beats.copy()


@functools.lru_cache(maxsize=None)
def _synthetic_ecg(seconds: float, fs: float, seed: int, hr_bpm: float):
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    t = np.arange(n) / fs
    beats, time_s = [], 0.3
    while time_s < seconds - 0.3:
        beats.append(time_s)
        time_s += 60.0 / hr_bpm * (1 + 0.05 * rng.standard_normal())
    x = np.zeros((n, 2))
    for b in beats:
        for offset, width, amp in ((-0.18, 0.025, 0.15), (0.0, 0.012, 1.2), (0.25, 0.05, 0.3)):
            bump = np.exp(-0.5 * ((t - b - offset) / width) ** 2)
            x[:, 0] += amp * bump
            x[:, 1] += 0.5 * amp * bump * (-1 if offset == 0.0 else 1)
    x += 0.01 * rng.standard_normal(x.shape)
    return x, (np.asarray(beats) * fs).round().astype(int)


def periodic_ecg(n_windows: int = 3, noise: float = 0.0, seed: int = 0, period: int = 100, fs: float = 128,
                 length: int = 768):
    """Windows [B, length, 2] of an exactly periodic two-lead ECG (one beat per `period` samples), each at
    another phase, plus white noise of SD `noise`."""
    t = np.arange(period) / fs
    beat = np.stack([1.2 * np.exp(-0.5 * ((t - 0.3) / 0.012) ** 2) + 0.3 * np.exp(-0.5 * ((t - 0.55) / 0.05) ** 2),
                     -0.6 * np.exp(-0.5 * ((t - 0.3) / 0.012) ** 2)], axis=1)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_windows):
        x = np.tile(beat, ((7 * i + 3 + length) // period + 1, 1))[7 * i + 3:7 * i + 3 + length]
        out.append(x + noise * rng.standard_normal(x.shape))
    return np.stack(out).astype(np.float32)


def spike_train(n: int, positions, width: float = 0.012, fs: float = 128) -> np.ndarray:
    """QRS-like Gaussian spikes of 1.2 mV at the given samples."""
    t = np.arange(n) / fs
    return sum(1.2 * np.exp(-0.5 * ((t - p / fs) / width) ** 2) for p in positions)


def two_leads(lead: np.ndarray) -> np.ndarray:
    """A context [1, C, 2] of one lead and its mirror at half the amplitude."""
    return np.stack([lead, -0.5 * lead], 1)[None].astype(np.float64)


def undocumented_columns(metrics_csv: Path) -> list[str]:
    """The columns of a run's metrics.csv that README's metrics.csv paragraph does not name: each as it is, or as
    train_<metric> / val_<metric>, or a finer codebook's <name>_<level>."""
    text = (ROOT / "README.md").read_text()
    paragraph = text[text.index("- `metrics.csv`: one row per epoch"):text.index("- `loss_curves.png`")]
    named = set(re.findall(r"`([a-z_0-9]+)`", paragraph))
    header = metrics_csv.read_text().splitlines()[0].split(",")
    return [c for c in header if c not in named and re.sub(r"^(train|val)_|_\d+$", "", c) not in named]


def run_script(main, script: str, args: list[str]) -> subprocess.CompletedProcess:
    """A script's main() in this process, as its __main__ runs it (running.run_main): exit status, stdout, stderr."""
    import running

    out, err, argv, code = io.StringIO(), io.StringIO(), sys.argv, 0
    sys.argv = [script, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            running.run_main(main)
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def stopped_at(monkeypatch, module, name: str, stop: BaseException, script: str,
               args: list[str]) -> subprocess.CompletedProcess:
    """module.main(args) as `script` runs it (run_script), stopped by `stop` where it calls module.`name` (run_record:
    its run folders just made, no Trainer yet)."""
    def stopped(*a, **k):
        raise stop
    monkeypatch.setattr(module, name, stopped)
    return run_script(lambda: module.main(args), script, args)


def loads_of(monkeypatch, path: Path) -> list[Path]:
    """Every torch.load of `path` from now on: a resume reads its checkpoint once (a second read, on a shared disk,
    may find another file)."""
    import torch

    loads, load = [], torch.load

    def counted(f, *a, **k):
        name = Path(getattr(f, "name", f))      # a path, or the file load_checkpoint opened to hash what it loads
        if name.resolve() == Path(path).resolve():
            loads.append(name)
        return load(f, *a, **k)
    monkeypatch.setattr(torch, "load", counted)
    return loads


def scripted_validation(monkeypatch, losses: list[float]) -> None:
    """Epoch e's validation loss is losses[e - 1], whatever the model learns: early stops and best epochs on cue."""
    import training

    real_val = training.Trainer.validate
    monkeypatch.setattr(training.Trainer, "validate",
                        lambda self, model: {**real_val(self, model), "loss": losses[self.epoch]})


def resumes_told(monkeypatch, module) -> list:
    """The resumed checkpoints `module`'s closing next_commands is given: a resume in new folders that has not beaten
    its best names the resumed run's best.pt, which only that checkpoint's ckpt_dir tells."""
    told, real = [], module.next_commands

    def spied(ckpt_dir, cfg, val, prepared, resume=None):
        told.append(resume)
        return real(ckpt_dir, cfg, val, prepared, resume)
    monkeypatch.setattr(module, "next_commands", spied)
    return told


def closing_lines(out: str) -> tuple[str, list[str], list[str]]:
    """A forecaster training's closing lines in its output: the final validation line, and the argument lists of the
    forecast.py and evaluate.py commands it prints."""
    import shlex

    lines = out.splitlines()
    (final,) = [line for line in lines if line.startswith("final validation (")]
    (fc,) = [line.removeprefix("forecast with: ") for line in lines if line.startswith("forecast with: ")]
    (ev,) = [line.removeprefix("evaluate on validation patients: ") for line in lines
             if line.startswith("evaluate on validation patients: ")]
    return final, shlex.split(fc), shlex.split(ev)


def replaced_once_loaded(monkeypatch, path: Path) -> None:
    """torch.load writes other bytes into `path` right after loading it: its run saved its next best.pt between the
    loading and a later hash of the file."""
    import torch

    load = torch.load

    def then_replaced(f, *a, **k):
        out = load(f, *a, **k)
        if Path(getattr(f, "name", f)) == path:
            path.write_bytes(b"its run's next best.pt")
        return out
    monkeypatch.setattr(torch, "load", then_replaced)


def edit_tree_after(monkeypatch, module, name: str) -> None:
    """paths.git_commit says "at-start" until `module.name` has run and "at-end" after it, as when the tree is
    edited during a long run: a run that stamps its commit late names "at-end", code that never ran."""
    import paths

    tree, step = {"commit": "at-start"}, getattr(module, name)

    def then_edited(*args, **kwargs):
        out = step(*args, **kwargs)
        tree["commit"] = "at-end"
        return out
    monkeypatch.setattr(paths, "git_commit", lambda besides=(): tree["commit"])
    monkeypatch.setattr(module, name, then_edited)


class Built(Exception):
    """Raised by trainer_inputs in place of training: the run's Trainer has been built."""


def trainer_inputs(monkeypatch, script, argv: list[str]) -> dict:
    """A *_train module's main(argv) up to the Trainer it builds: the Trainer's arguments by name; no step is
    trained (the run folders are made, empty)."""
    import inspect

    import training
    seen = {}

    def build(*args, **kwargs):
        seen.update(inspect.signature(training.Trainer).bind(*args, **kwargs).arguments)
        raise Built
    monkeypatch.setattr(script, "Trainer", build)
    with pytest.raises(Built):
        script.main(argv)
    return seen


def vqvae_splits(prepared: str, vq_path) -> tuple:
    """A checkpoint's VQ-VAE (eval mode), the prepared training and validation splits of its stored config, and the
    VQ-VAE's checkpoint: what a forecaster's run reads."""
    from hyper_params import stored_config
    from prepare_mitbih import load_split
    from vqvae_eval import load_vqvae

    vq, vq_ckpt = load_vqvae(vq_path)
    cfg = stored_config(vq_ckpt["config"], str(vq_path))
    train, val = (load_split(s, cfg, prepared, any_records=True) for s in ("train", "validation"))
    return vq, train, val, vq_ckpt


def write_record(folder: Path, name: str, seconds: float = 60.0, fs: float = 360.0, seed: int = 0,
                 leads: tuple[str, str] = ("MLII", "V1"), annotate: bool = True) -> Path:
    """Write a synthetic two-lead WFDB record (with beat annotations) and return its path stem."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    x, beats = synthetic_ecg(seconds, fs, seed)
    if leads[0] != "MLII" and leads[1] == "MLII":
        x = x[:, ::-1].copy()
    wfdb.wrsamp(name, fs=fs, units=["mV", "mV"], sig_name=list(leads), p_signal=x, fmt=["212", "212"],
                adc_gain=[200.0, 200.0], baseline=[1024, 1024], write_dir=str(folder))
    if annotate:
        wfdb.wrann(name, "atr", np.asarray(beats), symbol=["N"] * len(beats), write_dir=str(folder))
    return folder / name


@pytest.fixture(scope="session")
def synthetic_db_written(tmp_path_factory) -> Path:
    """synthetic_db's records, written once a session (3 s of drawing and writing): each test gets a copy."""
    folder = tmp_path_factory.mktemp("synthetic_db") / "wfdb"
    for i, name in enumerate(["100", "101", "102", "103", "104", "105"]):
        write_record(folder, name, seed=i)
    return folder


@pytest.fixture
def synthetic_db(tmp_path: Path, synthetic_db_written: Path) -> Path:
    """Six synthetic 60 s records at 360 Hz: 100 and 101 test, 102 validation, the rest train. The test's own copy,
    its files as new as if written for it (shutil.copy, not copy2's old times), so it may change them."""
    return Path(shutil.copytree(synthetic_db_written, tmp_path / "wfdb", copy_function=shutil.copy))


def write_signal(folder: Path, name: str, x, fs: float = 360.0, leads: tuple[str, ...] = ("MLII", "V1"),
                 units: str = "mV", fmt: str = "16", gain: float = 200.0) -> Path:
    """Write an arbitrary signal [N, C] (NaN allowed: fmt 16 stores it as the invalid value -32768)."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, dtype=np.float64)
    n_sig = x.shape[1]
    wfdb.wrsamp(name, fs=fs, units=[units] * n_sig, sig_name=list(leads), p_signal=x, fmt=[fmt] * n_sig,
                adc_gain=[gain] * n_sig, baseline=[0] * n_sig, write_dir=str(folder))
    return folder / name


TWELVE = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def twelve_leads(folder: Path, name: str, off: tuple[str, ...], leads: tuple[str, ...] = TWELVE,
                 value: float | np.ndarray = 0.0, during: tuple[float, float] = (0.0, 120.0)) -> Path:
    """A synthetic record of `leads` (12 by default; 120 s at 360 Hz), each lead its own scale of one of two leads;
    the leads `off` held at `value` (0, or NaN: not recorded) for the seconds `during` (all of them by default)."""
    x, _ = synthetic_ecg(120.0, 360.0, seed=3)
    sig = np.column_stack([x[:, i % 2] * (1 + 0.1 * i) for i in range(len(leads))])
    for lead in off:
        sig[int(during[0] * 360):int(during[1] * 360), leads.index(lead)] = value
    return write_signal(folder, name, sig, leads=leads)


def snapshot(folder: Path) -> dict:
    """Bytes and modification time of every file below `folder`, to prove a failed run left it alone."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """prepare_mitbih.py's main() with `args` in this process (run_script)."""
    import prepare_mitbih as pm

    return run_script(pm.main, "prepare_mitbih.py", args)


@pytest.fixture
def no_network(monkeypatch):
    """The downloads of a test module that uses it (test_download.py's and test_bad_input.py's pytestmark) run
    stand-ins for wfdb.dl_database (fake_physionet, offline unless a test serves records), and the connect that
    precedes them never leaves the machine (the tests of that connect put it back, with socket's stubbed)."""
    import download as dl

    monkeypatch.setattr(dl, "reach_physionet", lambda url, timeout=dl.CONNECT_TIMEOUT: None)
    monkeypatch.setattr(dl, "FETCH", "fake_physionet:offline")
    for var in [v for v in os.environ if v.lower().endswith("_proxy")]:
        monkeypatch.delenv(var)


@pytest.fixture
def physionet(monkeypatch, tmp_path_factory):
    """A fake PhysioNet for the download, which runs in a child process that no monkeypatch of wfdb reaches:
    serve(stub, records) writes the records it holds and names the stand-in for wfdb.dl_database
    (fake_physionet.<stub>) that the child calls, with $FAKE_<KEY> set from the keywords."""
    import download as dl

    served, pid = tmp_path_factory.mktemp("physionet"), tmp_path_factory.mktemp("child") / "pid"
    monkeypatch.setenv("FAKE_PHYSIONET", str(served))
    monkeypatch.setenv("FAKE_PID", str(pid))

    def serve(stub: str, records: tuple[str, ...] = ("100",), **env) -> Path:
        """The file the child writes its pid into."""
        for record in records:
            write_record(served, record, seconds=12)
        for key, value in env.items():
            monkeypatch.setenv(f"FAKE_{key.upper()}", str(value))
        monkeypatch.setattr(dl, "FETCH", f"fake_physionet:{stub}")
        return pid
    return serve


def forbid_download(monkeypatch, why: str) -> None:
    """A download started fails the test: pytest.fail is no Exception, which the download's own error would take."""
    import download as dl

    monkeypatch.setattr(dl, "watched", lambda *a, **k: pytest.fail(why))


# One's own forecaster (FILE.py:At360) built for another rate than the data's: test_evaluate.py's and
# test_own_forecaster.py's
MINE = '''
import numpy as np


class At360:
    fs = 360                       # built for the raw MIT-BIH rate, not the prepared one

    def __init__(self, fs):
        pass

    def predict(self, context, horizon, num_samples=100, seed=0):
        x = np.asarray(context, np.float32)
        return np.repeat(x[:, None, -1:], horizon, axis=2)
'''


def pytest_configure(config):
    # wfdb 4.3 passes pandas the inplace= that pandas 3.1 deprecates, on import and on every annotation it reads or
    # header it writes: noise, not ours.
    config.addinivalue_line("filterwarnings", "ignore:The inplace keyword:Warning")
    # ECG_TEST_TIMEOUT=600 left pytest.ini's 450 s last resort to end the run first, and the alarm never came
    last = float(config.getini("faulthandler_timeout") or 0)
    if last and TEST_TIMEOUT_S and not TEST_TIMEOUT_S < last:
        raise pytest.UsageError(f"ECG_TEST_TIMEOUT={TEST_TIMEOUT_S:g} s is not below faulthandler_timeout={last:g} s "
                                f"(pytest.ini), which would end the run first: raise that too (-o "
                                f"faulthandler_timeout=...)")


def _stacks(interrupted) -> str:
    """Every thread's stack, where each waits (the hang may be in another one), this one's from the `interrupted`
    frame; faulthandler's dump needs a file descriptor, which --capture=sys's stderr has not (it raised
    UnsupportedOperation instead of the timeout)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    frames = {**sys._current_frames(), threading.get_ident(): interrupted}
    return "\n".join(f"thread {names.get(ident, ident)} (most recent call last):\n" + "".join(traceback.format_stack(f))
                     for ident, f in frames.items())


class PhaseTimeout(BaseException):
    """A test phase over the limit. No Exception, as KeyboardInterrupt is none: a TimeoutError was caught by the code
    under test's `except Exception` (load_wfdb's skipped record, a download's failure wrapped in a UserError that
    pytest.raises(UserError, match="TimeoutError") took for the download's own), and the hang went on unbounded."""


def _timed_out(signum, frame):
    print(_stacks(frame), file=sys.stderr)
    raise PhaseTimeout(f"this test phase took over {TEST_TIMEOUT_S:g} s (tests/conftest.py TEST_TIMEOUT_S, "
                       f"ECG_TEST_TIMEOUT to change it)")


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM fails a phase that runs over `seconds` with PhaseTimeout, and the run goes on; not where there is no
    SIGALRM (Windows). A hang that never returns to Python is pytest.ini's faulthandler_timeout's."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return
    before = signal.signal(signal.SIGALRM, _timed_out)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with time_limit(TEST_TIMEOUT_S):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with time_limit(TEST_TIMEOUT_S):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with time_limit(TEST_TIMEOUT_S):
        return (yield)
