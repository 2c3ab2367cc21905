"""own_forecaster.py: a forecaster of one's own (FILE.py:NAME or module:NAME) loaded, held to its rate, its errors
said with its own frames only, and its code named by what it imports."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import baselines
import own_forecaster
from conftest import MINE
from paths import UserError, file_sha256


def test_your_own_forecasters_frames_leave_out_a_decorator_around_its_predict(tmp_path):
    """The README's MyForecaster decorates predict with @torch.no_grad(): the traceback of 'its own frames only'
    began in torch's _contextlib.py, the decorator's wrapper; it begins at predict now."""
    mine = tmp_path / "mine.py"
    mine.write_text("import torch\n\n\nclass Raises:\n    @torch.no_grad()\n    def predict(self, context, horizon, "
                    "num_samples=100, seed=0):\n        raise ValueError('no')\n\n\ndef make(fs):\n    r = Raises()"
                    "\n    r.fs = fs\n    return r\n")
    fc = own_forecaster.user_forecaster(f"{mine}:make", 128)
    with pytest.raises(UserError) as caught:
        fc.predict(np.zeros((1, 384, 2)), 10, 1, 0)
    assert [line.split(",")[0] for line in str(caught.value).splitlines() if line.startswith("  File")] == [
        f'  File "{mine}"']


OWN_PREDICTS = """
import functools
import torch


@torch.no_grad()
def forecast(context, horizon, num_samples=100, seed=0, scale=1.0):
    raise ValueError('no')


class Predicts:
    @torch.no_grad()
    def __call__(self, context, horizon, num_samples=100, seed=0):
        raise ValueError('no')


class Partial:
    predict = staticmethod(functools.partial(forecast, scale=2.0))


class CallsAnObject:
    predict = Predicts()
"""


@pytest.mark.parametrize("name", ["Partial", "CallsAnObject"])
def test_your_own_predict_as_a_partial_or_an_object_has_its_own_frames_only(tmp_path, name):
    """A predict that is a functools.partial of a decorated function, or an object whose decorated __call__ does
    the work, had no code of its own to find: its traceback began in torch's decorator, as before."""
    mine = tmp_path / "mine.py"
    mine.write_text(OWN_PREDICTS)
    own = getattr(own_forecaster.import_source(f"{mine}:{name}", "--model"), name)()
    fc = own_forecaster.OwnForecaster(own, "--model")
    with pytest.raises(UserError) as caught:
        fc.predict(np.zeros((1, 384, 2)), 10, 1, 0)
    assert [line.split(",")[0] for line in str(caught.value).splitlines() if line.startswith("  File")] == [
        f'  File "{mine}"']


def test_your_own_predict_that_fails_in_its_decorator_has_the_decorators_frame(tmp_path):
    """A decorator of one's own that raises before predict runs: predict's frame is not in the traceback, so all of
    one's own frames are shown (the wrapper's), none of the script's, and not an empty traceback."""
    mine = tmp_path / "mine.py"
    mine.write_text("import functools\n\n\ndef checked(f):\n    @functools.wraps(f)\n    def wrapper(*a, **k):\n"
                    "        raise ValueError('checked')\n    return wrapper\n\n\nclass FailsEarly:\n    @checked\n"
                    "    def predict(self, context, horizon, num_samples=100, seed=0):\n        return None\n")
    own = own_forecaster.import_source(f"{mine}:FailsEarly", "--model").FailsEarly()
    fc = own_forecaster.OwnForecaster(own, "--model")
    with pytest.raises(UserError) as caught:
        fc.predict(np.zeros((1, 384, 2)), 10, 1, 0)
    assert [line.split(",")[0] for line in str(caught.value).splitlines() if line.startswith("  File")] == [
        f'  File "{mine}"']


def test_ones_own_forecaster_as_wrapped_copies_and_pickles():
    """OwnForecaster passes every attribute on to the object inside; copy.copy and pickle ask the bare wrapper
    for __setstate__ before its __dict__ is back, and got KeyError '_own' where the protocol wants AttributeError."""
    import copy
    import pickle

    f = own_forecaster.OwnForecaster(baselines.Zero(250), "--model mine.py:Zero")
    context = np.sin(np.arange(500) / 9.0)[None, :, None].repeat(2, 2).astype(np.float32)
    for again in (copy.copy(f), pickle.loads(pickle.dumps(f))):
        assert again.fs == 250 and again.predict(context, 3, 1).shape == (1, 1, 3, 2)
    assert not hasattr(own_forecaster.OwnForecaster.__new__(own_forecaster.OwnForecaster), "predict_anything")


def test_the_report_names_the_modules_ones_own_forecaster_imports(tmp_path, monkeypatch):
    """A change in a helper module of one's own changes what is recorded: own_code hashes FILE.py and the modules
    its import statements name under its folder (packages, relative imports, theirs in turn), not numpy's, nor a
    module imported from elsewhere. It named FILE.py alone before, so an edited helper went unrecorded."""
    for folder in ("own_pkg", "ns/deep"):
        (tmp_path / folder).mkdir(parents=True)
    files = {"mine.py": "import numpy as np\nimport helper\nfrom own_pkg import sub\nimport forecast\n",
             "helper.py": "import os\nLEVEL = 0.5\n", "own_pkg/__init__.py": "",
             "own_pkg/sub.py": "from . import leaf\nfrom ns.deep import broken\n", "own_pkg/leaf.py": "STEP = 1\n",
             "ns/deep/broken.py": "this does not parse\n", "unused.py": "NOTHING = 0\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)

    def hashed(*names: Path | str) -> str:
        return ", ".join(f"{Path(name)} sha256 {file_sha256(name)}" for name in names)

    said = own_forecaster.own_code(["mine.py:Mine", "zero"])
    assert said == "mine.py:Mine: " + hashed("mine.py", "helper.py", "ns/deep/broken.py", "own_pkg/__init__.py",
                                             "own_pkg/leaf.py", "own_pkg/sub.py")    # a file that does not parse too
    (tmp_path / "helper.py").write_text("import os\nLEVEL = 0.25\n")
    assert own_forecaster.own_code(["mine.py:Mine"]) != said
    monkeypatch.syspath_prepend(str(tmp_path))                  # module:NAME, found on sys.path
    assert own_forecaster.own_code(["own_pkg.sub:Mine"]) == "own_pkg.sub:Mine: " + hashed(*(
        tmp_path / name for name in ("own_pkg/sub.py", "ns/deep/broken.py", "own_pkg/leaf.py")))


def test_a_relative_import_above_ones_own_files_folder_is_not_followed(tmp_path, monkeypatch):
    """FILE.py given by a relative path whose import statements climb above its folder (`from ..pkg import x` in a
    function never called: run, it could not import, FILE.py being no package's): nothing of its own is named
    there; own_code read file.parents[1] of 'mine.py' and stopped evaluate.py and forecast.py in an IndexError."""
    (tmp_path / "mine.py").write_text("import numpy as np\n\n\ndef later():\n    from ..pkg import thing\n")
    monkeypatch.chdir(tmp_path)
    assert own_forecaster.own_code(["mine.py:Mine"]) == f"mine.py:Mine: mine.py sha256 {file_sha256('mine.py')}"


def test_a_forecaster_defined_in_a_script_or_notebook_is_evaluated_as_main_name(tmp_path, monkeypatch):
    """evaluate.main(["--model", "__main__:Mine", ...]) from a script or a notebook, whose __main__ has no spec: it
    loaded, then own_code's find_spec stopped evaluate.py in a ValueError ('__main__.__spec__ is None'). A script's
    file is named; a notebook's __main__ has none, and nothing is."""
    script = tmp_path / "analysis.py"
    script.write_text("class Mine: ...\n")
    main = type(sys)("__main__")
    main.Mine = baselines.Persistence
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert isinstance(own_forecaster.user_forecaster("__main__:Mine", 128), own_forecaster.OwnForecaster)
    assert main.__spec__ is None and own_forecaster.own_code(["__main__:Mine", "zero"]) == ""
    main.__file__ = str(script)
    assert own_forecaster.own_code(["__main__:Mine"]) == f"__main__:Mine: {script} sha256 {file_sha256(script)}"


def test_a_user_forecaster_that_sets_128_hz_itself_is_held_to_it(tmp_path):
    """128 Hz is also ForecasterBase's default, but a class that sets it chose it: on data at another rate it is
    refused as any other rate would be; one that only inherits it is not."""
    (tmp_path / "mine.py").write_text(MINE.replace("fs = 360", "fs = 128"))
    with pytest.raises(UserError, match=r"mine.py:At360: it forecasts at 128 Hz but the data is at 250 Hz"):
        own_forecaster.user_forecaster(f"{tmp_path / 'mine.py'}:At360", 250)
    (tmp_path / "base.py").write_text("from forecast import ForecasterBase\n\n\nclass Mine(ForecasterBase):\n"
                                      "    def __init__(self, fs):\n        pass\n")
    assert own_forecaster.user_forecaster(f"{tmp_path / 'base.py'}:Mine", 250).name == "Mine"


def test_a_user_forecaster_whose_rate_is_a_property_is_held_to_it(tmp_path):
    """declared_fs took the rate from the instance's __dict__, else from the class: a property's rate was the
    property object itself, and int() of it a TypeError traceback instead of the check of the rate it returns."""
    (tmp_path / "mine.py").write_text(MINE + '''

class Property(At360):
    fs = property(lambda self: self.rate)

    def __init__(self, fs):
        self.rate = 360
''')
    with pytest.raises(UserError, match=r"mine.py:Property: it forecasts at 360 Hz but the data is at 128 Hz"):
        own_forecaster.user_forecaster(f"{tmp_path / 'mine.py'}:Property", 128)
    assert own_forecaster.user_forecaster(f"{tmp_path / 'mine.py'}:Property", 360).name == "Property"


FORECASTER_WITH_HELPER = """import numpy as np
from {helper} import VALUE


class F:
    def __init__(self, fs):
        self.fs, self.value = fs, VALUE

    def predict(self, context, horizon, num_samples=100, seed=0):
        return np.full((1, 1, horizon, 2), self.value, np.float32)
"""


def test_two_versions_of_ones_own_forecaster_are_two_modules_or_refused(tmp_path, monkeypatch):
    """v1/model.py and v2/model.py, each beside its own helper.py: the second ran the first's helper (Python keeps one
    module per name), while the report hashed v2/helper.py; it is refused by name. Beside helpers of their own names,
    both load, each its own module (one registered name for both files overwrote the first's: pickle refused it)."""
    import pickle

    monkeypatch.setattr(sys, "path", list(sys.path))
    for version in (1, 2):
        (tmp_path / f"v{version}").mkdir()
        (tmp_path / f"v{version}" / "model.py").write_text(FORECASTER_WITH_HELPER.format(helper="own_helper_v"))
        (tmp_path / f"v{version}" / "own_helper_v.py").write_text(f"VALUE = {version}\n")
    try:
        first = own_forecaster.user_forecaster(f"{tmp_path / 'v1' / 'model.py'}:F", 128)
        assert first.value == 1
        with pytest.raises(UserError, match=r"imports own_helper_v, meant to be .*v2/own_helper_v.py, but Python took "
                                            r".*v1/own_helper_v.py .*rename own_helper_v.py, or run the other "
                                            r"forecaster apart"):
            own_forecaster.user_forecaster(f"{tmp_path / 'v2' / 'model.py'}:F", 128)
        (tmp_path / "v2" / "model.py").write_text(FORECASTER_WITH_HELPER.format(helper="own_helper_v2"))
        (tmp_path / "v2" / "own_helper_v2.py").write_text("VALUE = 2\n")
        second = own_forecaster.user_forecaster(f"{tmp_path / 'v2' / 'model.py'}:F", 128)
        assert second.value == 2 and type(first._own).__module__ != type(second._own).__module__
        assert pickle.loads(pickle.dumps(first._own)).value == 1 and pickle.loads(pickle.dumps(second._own)).value == 2
    finally:
        for name in ("own_helper_v", "own_helper_v2"):
            sys.modules.pop(name, None)


def test_a_helper_named_like_a_project_module_is_refused_and_the_project_keeps_its_own(tmp_path, monkeypatch):
    """A metrics.py beside one's own file lost to the project's metrics (already loaded), which the forecaster then
    ran while the report hashed theirs; it is refused by name. Its folder comes after the project's on sys.path, so
    a project module imported later is the project's, not a file of that name beside one's own."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "metrics.py").write_text("VALUE = 3\n")
    (tmp_path / "mine.py").write_text(FORECASTER_WITH_HELPER.format(helper="metrics"))
    with pytest.raises(UserError, match=r"imports metrics, meant to be .*metrics.py, but Python took .*rename "
                                        r"metrics.py$"):        # the project's: no other forecaster to run apart
        own_forecaster.user_forecaster(f"{tmp_path / 'mine.py'}:F", 128)
    assert sys.path[-1] == str(tmp_path.resolve())         # after the project's and the environment's folders


def test_ones_own_frozen_or_slotted_forecaster_gets_its_label_on_the_wrapper(tmp_path):
    """Its label was set on the object (f.name = NAME): a frozen dataclass raised FrozenInstanceError, one with
    __slots__ AttributeError, tracebacks of exit status 1."""
    (tmp_path / "frozen.py").write_text(
        "import dataclasses\nimport numpy as np\n\n\n@dataclasses.dataclass(frozen=True)\nclass Frozen:\n    fs: int\n\n"
        "    def predict(self, context, horizon, num_samples=100, seed=0):\n"
        "        return np.zeros((1, 1, horizon, 2), np.float32)\n\n\nclass Slotted:\n    __slots__ = ('fs',)\n\n"
        "    def __init__(self, fs):\n        self.fs = fs\n\n"
        "    def predict(self, context, horizon, num_samples=100, seed=0):\n"
        "        return np.zeros((1, 1, horizon, 2), np.float32)\n")
    for name in ("Frozen", "Slotted"):
        f = own_forecaster.user_forecaster(f"{tmp_path / 'frozen.py'}:{name}", 128)
        assert f.name == name and f.fs == 128 and not hasattr(f._own, "name")


def test_a_module_that_ones_own_file_imports_and_is_missing_gets_no_file_hint(tmp_path):
    """'a file? --model dep/py.py:F loads it by its path' was said of a missing package that FILE.py imports; the
    hint is for a module:NAME whose module is not found."""
    (tmp_path / "dep.py").write_text("import not_installed_pkg_xyz\n")
    with pytest.raises(UserError) as caught:
        own_forecaster.user_forecaster(f"{tmp_path / 'dep.py'}:F", 128)
    assert "not_installed_pkg_xyz" in str(caught.value) and "a file?" not in str(caught.value)
    with pytest.raises(UserError, match=r"a file\? --model my_pkg_xyz/model.py:F loads it by its path"):
        own_forecaster.user_forecaster("my_pkg_xyz.model:F", 128)
