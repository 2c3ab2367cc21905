"""A forecaster of one's own, as evaluate.py --model and forecast.py --checkpoint both take it: FILE.py:NAME[=CKPT]
or module:NAME, loaded, held to the data's rate, its predict's errors named by its own frames; the code (its files'
SHA-256) and weights (a checkpoint's) that both scripts record of what they ran.

It builds on forecast.py (ForecasterBase, own_data) and baselines.py; forecast.py imports it inside the functions
that use it, as it does baselines.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import numbers
import os
import re
import sys
import sysconfig
import traceback
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Callable

import numpy as np

import paths
from baselines import BASELINES
from forecast import ForecasterBase, own_data
from paths import SHIPPED_SPECS, UserError

USER_SPEC = re.compile(r"(?P<source>[^:=]+\.py|[\w.]+):(?P<name>\w+)(=(?P<checkpoint>.+))?")


def own_spec(spec: str) -> re.Match | None:
    """FILE.py:NAME[=CHECKPOINT] or module:NAME parsed, when `spec` names one's own forecaster: a checkpoint file
    of that very name is a checkpoint."""
    return None if os.path.isfile(spec) else USER_SPEC.fullmatch(spec)     # os.path's: see paths


def load_file(path: Path) -> ModuleType:
    """Import a .py file as a module: registered in sys.modules under a name of its path's own (dataclasses and
    pickle look themselves up there; two files named alike, two versions of one forecaster, overwrote each other's)
    and with its folder importable after the project's and the environment's (for the modules beside it: first, it
    had a later `import latent_sde` of the project's take a file of that name beside it)."""
    name = f"user_forecaster_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    found = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    if str(path.resolve().parent) not in sys.path:
        sys.path.append(str(path.resolve().parent))
    try:
        found.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def check_imports_ran(path: Path, source: str, said: str) -> None:
    """Refuse one's own code whose import statements name a module beside it that Python took from elsewhere: one
    of the project's or the environment's of that name (their metrics.py lost to the project's), or one loaded by
    another forecaster of one's own (v2/helper.py lost to v1/helper.py, one module per name in a process). It ran
    other code than the report would name (own_code hashes the files beside it), without a word."""
    root = import_root(path, source)
    for f in own_files(path, source)[1:]:
        parts = f.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        ran = getattr(sys.modules.get(name), "__file__", None)
        if ran and Path(ran).resolve() != f.resolve():
            theirs = not (in_environment(Path(ran)) or Path(ran).resolve().is_relative_to(paths.ROOT.resolve()))
            raise UserError(f"{said}: {path} imports {name}, meant to be {f}, but Python took {ran} (a module of that "
                            f"name loaded before: Python keeps one per name); rename {f.name}"
                            + (", or run the other forecaster apart" if theirs else ""))


def user_forecaster(spec: str, fs: int, device: str | None = None, flag: str = "--model",
                    own_rate: bool = False) -> ForecasterBase:
    """NAME from FILE.py or an importable module, called with the data's sampling rate: a class or factory
    whose result has `predict(context, horizon, num_samples, seed)` like every forecaster here. With
    FILE.py:NAME=CHECKPOINT it is called with checkpoint=CHECKPOINT too, and with --device's as device= when it
    takes one. `flag` names the option it came by in errors. `own_rate` (forecast.py, which reads the record by a
    forecaster's own data settings, forecast.own_data): one carrying them is held to their rate, not `fs`."""
    source, name, checkpoint = USER_SPEC.fullmatch(spec).group("source", "name", "checkpoint")
    module = import_source(spec, flag)
    if not callable(getattr(module, name, None)):
        raise UserError(f"{flag} {spec}: {source} has no class or function {name}")
    kwargs = user_arguments(f"{flag} {spec}", getattr(module, name), checkpoint, device)
    try:
        f = getattr(module, name)(fs, **kwargs)
    except Exception as e:
        call = ", ".join([str(fs), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise UserError(f"{flag} {spec}: {name}({call}) failed: {type(e).__name__}: {e}") from e
    if not callable(getattr(f, "predict", None)):
        raise UserError(f"{flag} {spec}: {name}({fs}) has no predict(context, horizon, num_samples, seed)")
    if own_rate and (data := own_data(f)) is not None:
        fs = data.samples_per_second
    check_rate(f"{flag} {spec}", f, fs)
    own = OwnForecaster(f, f"{flag} {spec}")
    if getattr(f, "name", ForecasterBase.name) == ForecasterBase.name:
        vars(own)["name"] = name        # the wrapper's: a frozen dataclass or __slots__ refused f.name = name
    return own


class OwnForecaster:
    """A forecaster of one's own as both scripts call it: every attribute is the object's (a `name` it lacks, its
    label, the wrapper's), but an exception its predict raises becomes a UserError (exit status 2) naming it (`said`:
    FLAG FILE.py:NAME), with the exception and the traceback of its frames only. The bug is in code the user can
    change, and where in it shows in those frames (an IndexError deep in their numpy code says nothing alone); the
    script's frames above them would only bury them and read as a crash of the script."""

    def __init__(self, own: object, said: str):
        vars(self).update(_own=own, _said=said)     # underscored: the object's own attributes keep their names

    def __getattr__(self, key: str):
        if "_own" not in vars(self):        # copy and pickle look up __setstate__ before restoring __dict__
            raise AttributeError(key)
        return getattr(vars(self)["_own"], key)

    def predict(self, *args, **kwargs) -> np.ndarray:
        try:
            return self._own.predict(*args, **kwargs)
        except Exception as e:
            tb = own_frames(e.__traceback__.tb_next, self._own.predict)
            frames = "".join(traceback.format_exception(type(e), e, tb)).rstrip()
            raise UserError(f"{self._said}: its predict raised {type(e).__name__}: {e}\n{frames}") from e


def own_frames(tb: TracebackType, predict: Callable) -> TracebackType:
    """The traceback from `predict`'s own frame on: a decorator's wrapper above it (torch.no_grad's, as the README's
    MyForecaster has) is no frame of theirs. All of `tb` when that frame is not in it (it failed in the wrapper).
    A functools.partial is its function's, an object with no code of its own its __call__'s."""
    fn = inspect.unwrap(predict)
    while isinstance(fn, functools.partial):
        fn = inspect.unwrap(fn.func)
    if not hasattr(fn, "__code__"):
        fn = inspect.unwrap(getattr(type(fn), "__call__", fn))
    code = getattr(fn, "__code__", None)
    own = tb
    while own is not None and own.tb_frame.f_code is not code:
        own = own.tb_next
    return own or tb


def import_source(spec: str, flag: str) -> ModuleType:
    """The FILE.py (loaded by its path) or module (imported by name) of a FILE.py:NAME or module:NAME spec; a
    failure is one line, which says how to load a module name's file by its path when the name is not found."""
    source, name = USER_SPEC.fullmatch(spec).group("source", "name")
    try:
        if source.endswith(".py"):
            if not os.path.isfile(source):      # os.path's: see paths
                raise UserError(f"{flag} {spec}: no such file {source}")
            try:
                module = load_file(Path(source))
            except Exception:           # a helper taken from elsewhere explains the failure better (no VALUE in it)
                check_imports_ran(Path(source), source, f"{flag} {spec}")
                raise
            check_imports_ran(Path(source), source, f"{flag} {spec}")
            return module
        return importlib.import_module(source)
    except UserError:
        raise
    except Exception as e:
        file = source.replace(".", "/") + ".py"
        missing = isinstance(e, ModuleNotFoundError) and not source.endswith(".py") and (
            e.name == source or source.startswith(f"{e.name}."))      # not a module the found one imports
        hint = (f" (a file? {flag} {file}:{name} loads it by its path; a module name is looked up on "
                f"PYTHONPATH, not in the working folder)" if missing else "")
        raise UserError(f"{flag} {spec}: importing {source} failed: {type(e).__name__}: {e}{hint}") from e


def declared_fs(f: ForecasterBase, fs: int) -> object:
    """The rate a forecaster of one's own says it forecasts at (its own or its class's `fs`, a property's value
    too), else `fs`: ForecasterBase's default is no choice of its. An OwnForecaster's is the object's it wraps."""
    f = vars(f)["_own"] if isinstance(f, OwnForecaster) else f
    owner = next((c for c in type(f).__mro__ if "fs" in vars(c)), None)
    chosen = "fs" in getattr(f, "__dict__", {}) or owner not in (None, ForecasterBase)
    return getattr(f, "fs", fs) if chosen else fs


def check_rate(who: str, f: ForecasterBase, fs: int, hint: str = "") -> None:
    """Refuse a forecaster (`who` names it) whose declared_fs is not a number equal to the data's rate `fs`, in
    one UserError line whatever loaded it: int() of both would let 128.4 Hz pass as 128, and None stop in a
    TypeError."""
    rate = declared_fs(f, fs)
    number = isinstance(rate, numbers.Real) and not isinstance(rate, bool)
    if not number or rate != fs:
        raise UserError(f"{who}: it forecasts at {rate if number else repr(rate)} Hz but the data is at {fs} Hz{hint}")


def user_arguments(asked: str, make: Callable, checkpoint: str | None, device: str | None) -> dict:
    """The keyword arguments a forecaster of one's own is called with besides the rate: `checkpoint` when the
    spec names one (refused if it takes none), `device` when it takes one and --device is given."""
    try:
        params = inspect.signature(make).parameters
    except (TypeError, ValueError):         # a builtin without a signature: nothing to pass
        params = {}
    def takes(key: str) -> bool:
        return key in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    if checkpoint and not takes("checkpoint"):
        raise UserError(f"{asked}: {getattr(make, '__name__', 'it')} takes no checkpoint argument "
                        f"(give it one, `checkpoint=None`, to be handed =CHECKPOINT)")
    return {**({"checkpoint": checkpoint} if checkpoint else {}),
            **({"device": device} if device and takes("device") else {})}


def own_code(specs: list[str]) -> str:
    """The files behind each forecaster of one's own among `specs` (evaluate.py's --model expanded, expand_models)
    and their SHA-256 (own_files: its file and the local modules it imports): git's commit says nothing of an
    untracked my_model.py or of the helper module it imports, so the report names the exact code it scored."""
    out = []
    for spec in specs:
        if m := own_spec(spec):
            found = m["source"] if m["source"].endswith(".py") else module_file(m["source"])
            if found and Path(found).is_file():
                files = own_files(Path(found), m["source"])
                out.append(f"{spec}: " + ", ".join(f"{f} sha256 {paths.file_sha256(f)}" for f in files))
    return "; ".join(out)


def module_file(source: str) -> str | None:
    """The file of module:NAME's module, imported already (no side effects): its own __file__, since __main__ (a
    script's or a notebook's, whose forecaster `__main__:NAME` names) has no spec, and find_spec raised ValueError on
    it; None when it has no file (a notebook's)."""
    if source in sys.modules:
        return getattr(sys.modules[source], "__file__", None)
    return getattr(importlib.util.find_spec(source), "origin", None)


def own_files(path: Path, source: str) -> list[Path]:
    """One's own forecaster's file, then (sorted) every module it imports that lies under the folder it is imported
    from (FILE.py's own folder, or module:NAME's sys.path entry), and those they import in turn. Imports are read
    from the import statements, not from what ran: the same files whichever script asks, and a module imported by
    importlib or exec is not seen. The standard library and installed packages are the environment's, not followed;
    a FILE.py in this project's folder takes the project's modules it imports along."""
    root = import_root(path, source)
    found, todo = [path], [path]
    while todo:
        for f in imported_files(todo.pop(), root):
            if f not in found and not in_environment(f):
                found.append(f)
                todo.append(f)
    return [path, *sorted(found[1:])]


def import_root(path: Path, source: str) -> Path:
    """The folder the absolute imports of one's own code are found in: FILE.py's (load_file puts it on sys.path),
    or the sys.path entry module:NAME came from (pkg.mod's file /x/pkg/mod.py: /x)."""
    if source.endswith(".py"):
        return path.parent
    return path.parents[source.count(".") + (path.name == "__init__.py")]


def imported_files(file: Path, root: Path) -> list[Path]:
    """The files under `root` (absolute imports) or `file`'s package (relative ones) that `file`'s import statements
    name; a module found nowhere there (numpy, os) gives none, and so does a file that does not parse (edited while
    the run went on: its hash says so, and the report is not lost to a SyntaxError at its end)."""
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f for alias in node.names for f in module_files(root, alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level > len(file.parents):      # above the folder it was given in: FILE.py has no package
                continue
            base = file.parents[node.level - 1] if node.level else root
            module = [node.module] if node.module else []
            out += module_files(base, ".".join(module)) if module else []
            out += [f for alias in node.names for f in module_files(base, ".".join([*module, alias.name]))]
    return out


def module_files(base: Path, dotted: str) -> list[Path]:
    """The files `import dotted` runs when found in folder `base`: each package's __init__.py on the way, then the
    module's file (`from pkg import name` asks for pkg.name too, which is a file only when name is a module); a
    folder without __init__.py is a namespace package, looked into."""
    found, folder = [], base
    for part in dotted.split("."):
        here = [f for f in (folder / part / "__init__.py", folder / f"{part}.py") if f.is_file()]
        if not here and not (folder / part).is_dir():
            break
        found += here[:1]
        folder = folder / part
    return found


def in_environment(file: Path) -> bool:
    """Whether a file is the standard library's or an installed package's: its version is the environment's, which
    no hash of one's own code should follow."""
    where, folders = file.resolve(), sysconfig.get_paths()
    return any(where.is_relative_to(Path(folders[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib"))


def weights_sha256(spec: str, f: ForecasterBase) -> str | None:
    """The SHA-256 (paths.file_sha256's digits) of the weights file a --model or --checkpoint spec names, None without
    one (a baseline, one's own forecaster without CHECKPOINT). A Forecaster's is the digest of the bytes it loaded
    (`f`): the file hashed again could be a later best.pt."""
    path = checkpoint_file(spec)
    if spec in BASELINES or not path.is_file():
        return None
    return getattr(f, "checkpoint_sha256", None) or paths.file_sha256(path)


def checkpoint_file(spec: str) -> Path:
    """The weights file of a --model spec: a shipped model's, a checkpoint path, or FILE.py:NAME=CHECKPOINT's."""
    if spec in SHIPPED_SPECS:
        return paths.SHIPPED[SHIPPED_SPECS[spec]]
    m = own_spec(spec)
    return Path(m["checkpoint"]) if m and m["checkpoint"] else Path(spec)
