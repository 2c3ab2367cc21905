"""The suite's time limits (conftest.time_limit, pytest.ini): a hang fails its test or ends the run, naming it."""
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from conftest import ROOT, time_limit, timeout_s

HANGS = '''
import signal, threading, time

import pytest

@pytest.fixture
def hangs_in_setup():
    time.sleep(60)

@pytest.fixture
def hangs_in_teardown():
    yield
    time.sleep(60)

def test_set_up_for_ever(hangs_in_setup):
    pass

def test_torn_down_for_ever(hangs_in_teardown):
    pass

def test_sleeps():
    time.sleep(60)

def test_waits_in_a_thread():
    t = threading.Thread(target=time.sleep, args=(60,), daemon=True)
    t.start()
    t.join()

def test_quick():
    pass

def test_caught():    # the code under test's `except Exception` (a record skipped, a failed download reported)
    try:
        time.sleep(60)
    except Exception:
        pass
    time.sleep(60)

def test_deaf():      # SIGALRM blocked, as in a C call that never returns to Python
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
'''


def run_pytest(tmp_path, *args: str, timeout: str = "1") -> subprocess.CompletedProcess:
    """pytest on HANGS (the tests `args` name) with this suite's conftest and pytest.ini, in a process of its own."""
    (tmp_path / "test_hangs.py").write_text(HANGS)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "tests"), "ECG_TEST_TIMEOUT": timeout}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "-c", str(ROOT / "pytest.ini"), "--rootdir", str(tmp_path), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50)


def run_pytests(tmp_path, *runs: tuple[tuple[str, ...], str]) -> list[subprocess.CompletedProcess]:
    """run_pytest for each (args, timeout), three at a time, each in a folder of its own: a run is mostly its
    process's imports and a second's sleep to its limit, which need not wait for the run before."""
    folders = [tmp_path / f"run{i}" for i in range(len(runs))]
    for folder in folders:
        folder.mkdir()
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = [pool.submit(run_pytest, folder, *args, timeout=timeout)
                for folder, (args, timeout) in zip(folders, runs)]
        return [run.result() for run in done]


def test_a_phase_over_the_limit_fails_and_the_run_goes_on(tmp_path):
    tests = ("sleeps", "waits_in_a_thread", "caught", "quick")
    run = run_pytest(tmp_path, *(f"test_hangs.py::test_{name}" for name in tests))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "3 failed, 1 passed" in run.stdout
    assert "PhaseTimeout: this test phase took over 1 s" in run.stdout
    assert "in test_sleeps" in run.stdout          # every thread's stack, in the failed test's captured stderr


def test_setup_and_teardown_have_a_limit_of_their_own(tmp_path):
    run = run_pytest(tmp_path, "test_hangs.py::test_set_up_for_ever", "test_hangs.py::test_torn_down_for_ever")
    assert "1 passed, 2 errors" in run.stdout, run.stdout + run.stderr
    assert run.stdout.count("PhaseTimeout: this test phase took over 1 s") == 2


def test_a_limit_leaves_no_alarm_and_the_handler_it_found():
    """A phase's alarm left armed went off later, in pytest's own code between phases or after the last."""
    def found(signum, frame):
        pass

    signal.signal(signal.SIGALRM, found)        # this phase's limit's handler is given back by its end
    with time_limit(50):
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 49 and signal.getsignal(signal.SIGALRM) is not found
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is found


def test_the_stacks_are_shown_whatever_captures_stderr(tmp_path):
    """faulthandler's dump of the stacks needs a file descriptor: under --capture=sys (or tee-sys) the limit raised
    io.UnsupportedOperation: fileno, and showed no stack."""
    for run in run_pytests(tmp_path, *((("test_hangs.py::test_waits_in_a_thread", f"--capture={capture}"), "1")
                                       for capture in ("sys", "tee-sys", "no"))):
        assert "PhaseTimeout: this test phase took over 1 s" in run.stdout, run.stdout + run.stderr
        shown = run.stdout + run.stderr     # the captured stderr's section, or the terminal's
        assert "thread MainThread" in shown and "in test_waits_in_a_thread" in shown and "thread Thread-1" in shown
        assert "in _stacks" not in shown        # the test's stack where the alarm came, not the handler's


def test_a_limit_of_no_seconds_is_refused_by_name_and_0_is_none(tmp_path):
    bads = ("-1", "nan", "inf", "ten")
    *refused, beyond, raised = run_pytests(tmp_path, *((("test_hangs.py::test_quick",), bad) for bad in bads),
                                           (("test_hangs.py::test_quick",), "500"),     # past the last resort's 450 s
                                           (("test_hangs.py::test_quick", "-o", "faulthandler_timeout=600"), "500"))
    for bad, run in zip(bads, refused):
        assert run.returncode != 0 and f"ECG_TEST_TIMEOUT={bad}: a test phase's limit takes seconds >= 0" in run.stderr
    assert timeout_s("0") == 0 and timeout_s(None) == timeout_s("") == 300 and timeout_s("1.5") == 1.5
    with time_limit(0):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert beyond.returncode != 0 and "ECG_TEST_TIMEOUT=500 s is not below faulthandler_timeout=450 s" in beyond.stderr
    assert "passed" in raised.stdout


def test_a_hang_deaf_to_the_alarm_ends_the_run_naming_it(tmp_path):
    run = run_pytest(tmp_path, "test_hangs.py::test_deaf", "-o", "faulthandler_timeout=2")
    assert run.returncode != 0
    assert "Timeout (0:00:02)!" in run.stderr and re.search(r'test_hangs.py", line \d+ in test_deaf', run.stderr)


def test_the_last_resort_comes_after_the_limit(pytestconfig):
    assert pytestconfig.getini("faulthandler_exit_on_timeout") is True
    assert float(pytestconfig.getini("faulthandler_timeout")) > timeout_s(None)       # whatever ECG_TEST_TIMEOUT is
