"""VQ-VAE and data settings: `config_vqvae.json` loaded into typed dataclasses.

Unknown keys, wrong types and bad values are rejected with a message naming the key, so a typo
never silently falls back to a default. The other models' configs (hyper_params_transformer.py,
hyper_params_sde.py) are read and checked with this module's read_config, build_config, _check and
_at_least, and share its train and augment sections. data_hash ties prepared tensors to the data
settings they were made with.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from paths import ROOT, UserError

DEFAULT_CONFIG = ROOT / "config_vqvae.json"
INT_LIMIT = 2 ** 63      # a 64-bit integer's range: torch's sizes and numpy's ints overflow beyond it
BEYOND_INT_LIMIT = "no setting takes an integer of size 2**63 or more"    # the config's words, and its flags'
MAX_CODEBOOK = 2 ** 16   # model.codebook_size: 16-bit codes, a codebook of 64 x 65536 floats, ample for any run
MAX_WIDTH = 4096         # a layer's width (channels, latent_dim, the forecasters' dims and hidden sizes) ...
MAX_DEPTH = 64           # ... and stacked blocks, layers or residual codebooks: beyond, a model only fills memory
MAX_FILTER_ORDER = 64    # data.filter_order: scipy's Butterworth design gave NaN sections from 300, overflowed at 2000
MAX_WINDOW_SAMPLES = 2 ** 16   # a window with its forecasts (data.total_samples): 100 kHz made MIT-BIH's 63 GB, a
                               # duration of 1e308 s overflowed the float its samples are counted in
MAX_STRIDE_S = 86400.0   # data.window_stride's ceiling, a day: longer leaves one window a stretch all the same
MAX_OVERLAP = 64         # training windows one sample may be in (data.window_stride's floor): 1e-9 s cut a window at
                         # every sample, 31 GB of MIT-BIH's training windows
MAX_PATH_SCALE = 10.0    # a forecast path's noise or departure in the context's own units (draft_noise and
                         # departure_scale): 1e308 made every path inf, ten times is already no ECG
MAX_COPIES = 16          # augment.copies: each is the training windows again, in memory (MIT-BIH's: 81 MB a copy)
MAX_WORKERS = 64         # train.num_workers: DataLoader processes, started anew every epoch
MAX_PLOT_WINDOWS = 16    # train.plot_windows: the rows of the figure drawn (a forecaster: forecast) every epoch


@dataclass
class DataConfig:
    samples_per_second: int = 128          # target rate; records at another rate are resampled
    input_signal_duration: float = 3.0     # seconds in one window (the context)
    forecast_predictions: int = 1          # future windows of input_signal_duration after each context
    signals_per_patient: Optional[int] = 0  # windows per record; 0 or null = the whole record
    window_stride: Optional[float] = 3.0   # seconds between training windows; null = no overlap
    first_lead: str = "MLII"               # lead 1
    second_lead: str = ""                  # lead 2; "" = V1, else the chest lead nearest it
    filter_band: list[float] = field(default_factory=lambda: [0.5, 40.0])  # Hz, zero-phase band-pass
    filter_order: int = 2
    normalization: str = "train_std"       # 'train_std' (per lead, training patients) or 'none'
    test_records: Optional[list[str]] = None        # null = DS2 + 201 (same patient as 202)
    validation_records: Optional[list[str]] = None  # null = every 7th DS1 record from the 4th

    @property
    def window_samples(self) -> int:
        return round(self.input_signal_duration * self.samples_per_second)

    @property
    def total_samples(self) -> int:
        return self.window_samples * (1 + self.forecast_predictions)

    @property
    def stride_samples(self) -> int:
        """Samples between the starts of overlapping (training) windows."""
        if not self.window_stride:
            return self.total_samples
        return max(1, round(self.window_stride * self.samples_per_second))

    def validate(self) -> None:
        _check(self.samples_per_second > 0, "data.samples_per_second", self.samples_per_second, "must be > 0")
        _check(self.input_signal_duration > 0, "data.input_signal_duration", self.input_signal_duration, "must be > 0")
        _at_least(0, "data", self, "forecast_predictions")
        total = self.input_signal_duration * self.samples_per_second * (1 + self.forecast_predictions)  # inf at worst
        _check(total <= MAX_WINDOW_SAMPLES, "data.input_signal_duration", self.input_signal_duration,
               f"x data.samples_per_second {self.samples_per_second} x (1 + data.forecast_predictions "
               f"{self.forecast_predictions}) is a window of {total:g} samples with its forecast: at most "
               f"{MAX_WINDOW_SAMPLES}")
        _check(abs(self.input_signal_duration * self.samples_per_second - self.window_samples) < 1e-6,
               "data.input_signal_duration", self.input_signal_duration,
               f"times samples_per_second={self.samples_per_second} must be a whole number of samples")
        _check(self.signals_per_patient is None or self.signals_per_patient >= 0, "data.signals_per_patient",
               self.signals_per_patient, "must be >= 0 or null")
        _check(self.window_stride is None or 0 < self.window_stride <= MAX_STRIDE_S, "data.window_stride",
               self.window_stride, f"must be in (0, {MAX_STRIDE_S:g}] s (a day) or null")
        lo_hi, nyquist = self.filter_band, self.samples_per_second / 2
        _check(len(lo_hi) == 2 and 0 <= lo_hi[0] < lo_hi[1] < nyquist, "data.filter_band", lo_hi,
               f"must be [low, high] Hz with 0 <= low < high < {nyquist} (Nyquist)")
        _within(1, MAX_FILTER_ORDER, "data", self, "filter_order")
        _check(self.normalization in ("train_std", "none"), "data.normalization", self.normalization,
               "must be 'train_std' or 'none'")
        _check(self.first_lead.strip() != "", "data.first_lead", self.first_lead, "must name a lead")
        second = self.second_lead
        _check(second == "" or lead_key(second) != "", "data.second_lead", second,
               "must name a lead, or be \"\" for V1 or the chest lead nearest it")
        _check(second == "" or lead_key(second) != lead_key(self.first_lead), "data.second_lead", second,
               f"names the lead data.first_lead={self.first_lead!r} names: lead 1 and lead 2 are two channels")

    def check_work(self) -> None:
        """The floor of data.window_stride: a work limit (check_work_limits), held to by a config file alone."""
        least = self.total_samples / self.samples_per_second / MAX_OVERLAP
        _check(not self.window_stride or self.window_stride >= least * (1 - 1e-9), "data.window_stride",
               self.window_stride, f"must be at least {least:g} s or null: each sample in at most {MAX_OVERLAP} "
               f"training windows of {self.total_samples / self.samples_per_second:g} s (data.input_signal_duration x "
               "(1 + data.forecast_predictions))")


@dataclass
class ModelConfig:
    has_attention: bool = False         # self-attention blocks in encoder and decoder
    downsample_factor: int = 8          # input samples per code (a power of 2): the compression knob
    channels: int = 64                  # conv width
    res_blocks: int = 2                 # residual blocks per resolution
    attention_heads: int = 4
    attention_layers: int = 1
    latent_dim: int = 64                # size of one code vector
    codebook_size: int = 1024
    num_quantizers: int = 3             # residual codebooks per time step (bits = this x log2(codebook_size))
    window_gain: bool = True            # code each window divided by its own RMS per lead (sent as 2 x 6 bits)
    commitment_cost: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0    # a code used fewer times than this in restart_every steps restarts
    restart_every: int = 100            # training steps between dead-code checks (0 = never)

    def validate(self, data: DataConfig) -> None:
        """`data`: the settings whose window downsample_factor must divide, named in the error, as a changed rate or
        duration is what usually breaks it."""
        f, window = self.downsample_factor, data.window_samples
        _check(f >= 1 and f & (f - 1) == 0, "model.downsample_factor", f, "must be a power of 2")
        _check(window % f == 0, "model.downsample_factor", f,
               f"must divide the window of {window} samples (data.input_signal_duration {data.input_signal_duration:g} "
               f"s x data.samples_per_second {data.samples_per_second})")
        _within(1, MAX_WIDTH, "model", self, "channels", "latent_dim")
        group = self.channels // (8 if self.channels % 8 == 0 else 1)     # channels a group norm takes (vqvae._norm)
        _check(window // f > 1 or group > 1, "model.channels", self.channels,
               f"with one latent frame a window (model.downsample_factor {f} = the window's {window} samples) leaves "
               "each group norm one value to normalise: the signal is erased, and one window's encoding fails; give "
               "model.channels any count but 1 and 8 (e.g. 16), or a smaller downsample_factor")
        _within(1, MAX_DEPTH, "model", self, "num_quantizers")
        _at_least(1, "model", self, "attention_heads")
        _check(2 <= self.codebook_size <= MAX_CODEBOOK, "model.codebook_size", self.codebook_size,
               f"must be in [2, {MAX_CODEBOOK}]: one code carries log2(1) = 0 bits, and a codebook beyond 16-bit codes "
               "only fills memory (residual codebooks are model.num_quantizers)")
        _check(not self.has_attention or self.channels % self.attention_heads == 0, "model.attention_heads",
               self.attention_heads, f"must divide model.channels={self.channels}")
        _check(not self.has_attention or self.attention_layers >= 1, "model.attention_layers", self.attention_layers,
               "must be >= 1 with model.has_attention true (0 layers add positions and no attention; set "
               "has_attention false for none)")
        _check(0 < self.ema_decay < 1, "model.ema_decay", self.ema_decay, "must be in (0, 1)")
        _within(0, MAX_DEPTH, "model", self, "res_blocks", "attention_layers")
        _at_least(0, "model", self, "commitment_cost", "dead_code_threshold", "restart_every")


@dataclass
class AugmentConfig:
    """Extra training data for the forecasters: stretched, rescaled copies of the training records."""
    copies: int = 0               # copies of the training records, each time-stretched and rescaled
    rate_range: float = 0.15      # heart rate x U[1 - r, 1 + r] per record and copy (time stretch)
    amplitude_range: float = 0.2  # each lead x U[1 - a, 1 + a] per record and copy

    def validate(self) -> None:
        _at_least(0, "augment", self, "copies")
        _check(0 <= self.rate_range < 0.5, "augment.rate_range", self.rate_range, "must be in [0, 0.5)")
        _check(0 <= self.amplitude_range < 1, "augment.amplitude_range", self.amplitude_range, "must be in [0, 1)")

    def check_work(self) -> None:
        """augment.copies' ceiling: a work limit (check_work_limits), held to by a config file alone."""
        _within(0, MAX_COPIES, "augment", self, "copies")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    amp: bool = False                   # mixed precision, GPU only
    seed: int = 0
    checkpoint_every: int = 5           # epochs between numbered checkpoints (last/best always)
    num_workers: int = 0                # DataLoader processes: 0 is fastest, the windows are in memory (each epoch
                                        # starts them anew; spawned, as on macOS and Windows, in seconds)
    plot_windows: int = 4               # fixed validation windows drawn every epoch
    max_steps_per_epoch: Optional[int] = None  # cap for quick runs; null = whole training split
    patience: Optional[int] = None      # epochs without a lower validation loss before it stops; null = every epoch

    def validate(self) -> None:
        """Every model's train section: a grad_clip of 0 would zero every gradient and a negative one climb the
        loss, a step cap of 0 is no cap, 10000 plot_windows drew (and forecast) 10000 rows every epoch."""
        _at_least(1, "train", self, "epochs", "batch_size")
        _check(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "must be > 0")
        _check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "must be > 0 (the largest gradient norm; 1e9 "
               "leaves gradients unclipped)")
        _at_least(0, "train", self, "weight_decay", "warmup_steps")
        _at_least(0, "train", self, "num_workers", "plot_windows")
        _at_least(1, "train", self, "checkpoint_every")
        _check(0 <= self.seed < 2 ** 32, "train.seed", self.seed, "must be in [0, 2**32) (numpy's seed range)")
        _check(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "train.max_steps_per_epoch",
               self.max_steps_per_epoch, "must be >= 1 or null")
        _check(self.patience is None or self.patience >= 1, "train.patience", self.patience, "must be >= 1 or null")

    def check_work(self) -> None:
        """The ceilings of train.num_workers and train.plot_windows: work limits (check_work_limits), held to by a
        config file alone."""
        _within(0, MAX_WORKERS, "train", self, "num_workers")
        _check(self.plot_windows <= MAX_PLOT_WINDOWS, "train.plot_windows", self.plot_windows,
               f"must be in [0, {MAX_PLOT_WINDOWS}]: each epoch draws them as the rows of one figure (0: none)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        self.data.validate()
        self.model.validate(self.data)
        self.train.validate()


LEAD_KEYS = ("first_lead", "second_lead")     # the data keys naming lead 1 and lead 2


def add_leads_flag(p: argparse.ArgumentParser, chooses: str, read_as: str) -> None:
    """--leads LEAD1 LEAD2 of forecast.py, evaluate.py and vqvae_eval.py: `chooses` says what it picks, `read_as`
    whose data's leads it stands in for ('--config's data are'), so the three state the default lead choice alike."""
    p.add_argument("--leads", nargs=2, metavar=("LEAD1", "LEAD2"),
                   help=f"{chooses} (default: as {read_as} read, lead 1 its data.first_lead (MLII) or a limb lead, "
                   f"lead 2 its data.second_lead or V1 or the chest lead nearest it)")


def lead_key(name: str) -> str:
    """'Lead II', 'ecg-ii', 'II,' -> 'II': upper case, letters and digits only, without a 'LEAD'/'ECG' prefix. Lead
    names compare by it, the config's data.first_lead and data.second_lead as a record's channels."""
    key = re.sub(r"[^0-9A-Za-z]+", "", str(name)).upper()
    return re.sub(r"^(LEAD|ECG)(?=.)", "", key)


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise UserError(f"config key '{key}' = {value!r} {why}")


def _at_least(low: int, section: str, settings: Any, *keys: str) -> None:
    """The commonest check, for sizes, counts and weights: each of `keys` >= low."""
    for key in keys:
        _check(getattr(settings, key) >= low, f"{section}.{key}", getattr(settings, key), f"must be >= {low}")


def _within(low: int, high: int, section: str, settings: Any, *keys: str) -> None:
    """Sizes and counts with a ceiling too (MAX_WIDTH, MAX_DEPTH, ...): each of `keys` in [low, high]."""
    for key in keys:
        value = getattr(settings, key)
        _check(low <= value <= high, f"{section}.{key}", value, f"must be in [{low}, {high}]")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)     # JSON's true is a Python int


def _matches(value: Any, hint: Any) -> bool:
    """Does a JSON value fit a dataclass field's type hint (ints accepted for floats)?"""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is int:
        return _is_int(value)
    if hint is float:
        if not (_is_int(value) or isinstance(value, float)):
            return False
        try:
            return math.isfinite(float(value))
        except OverflowError:           # an integer literal beyond any float
            return False
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    """'int', 'int or null', 'list of float': the expected type in words for error messages."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true/false", str: "string", int: "int", float: "number"}.get(hint, str(hint))


def _as_declared(value: Any, hint: Any) -> Any:
    """An int given for a float field becomes a float, so 3 and 3.0 give the same config (and data hash). `value`
    fits `hint` (build_section checks _matches first), so one member of a union does."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return next(_as_declared(value, h) for h in typing.get_args(hint) if _matches(value, h))
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_as_declared(v, item) for v in value]
    if hint is float and _is_int(value):
        return float(value)
    return value


def build_section(base: Any, values: dict, section: str, source: str) -> Any:
    """`base` (a section's defaults) with the values of a dict, naming the key of any unknown or wrongly
    typed value."""
    cls = type(base)
    if not isinstance(values, dict):
        raise UserError(f"{source}: section '{section}' must be an object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    declared = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{source}: unknown config key '{section}.{key}' = {value!r} "
                            f"(known: {', '.join(sorted(known))})")
        if not _matches(value, hints[key]):
            raise UserError(f"{source}: config key '{section}.{key}' = {value!r} has the wrong type "
                            f"(expected {_type_name(hints[key])})")
        # an int for a float key is a float (grad_clip 10**10 is fine); res_blocks 10**30 built blocks for ever
        declared[key] = v = _as_declared(value, hints[key])
        if _is_int(v) and not -INT_LIMIT < v < INT_LIMIT:
            raise UserError(f"{source}: config key '{section}.{key}' = {value!r} is out of range: {BEYOND_INT_LIMIT}")
    return dataclasses.replace(base, **declared)


def read_json(path: str | Path) -> dict:
    """A config file's top-level object. A key given twice and NaN or Infinity are errors here: json would keep
    the last of two keys, and read NaN, without a word. ~ is the home folder, as the scripts' flags take it."""
    path = Path(path).expanduser()

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise UserError(f"{path}: key {twice[0]!r} is given twice in one object")
        return dict(pairs)

    def finite(name: str) -> None:
        raise UserError(f"{path}: {name} is not a value a config takes; give a finite number")

    try:
        # utf-8-sig: a byte-order mark (Windows Notepad's UTF-8) is read past, not 'Unexpected UTF-8 BOM'
        raw = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=unique, parse_constant=finite)
    except FileNotFoundError as e:
        raise UserError(f"config file not found: {path}") from e
    except OSError as e:  # a folder, no permission, ...
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a text (UTF-8) file: {e.reason} at byte {e.start}") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a JSON object")
    return raw


# The sections only one kind of config has: a config given to another model's script is named as what it is
OWNER = {"data": "a VQ-VAE's config (vqvae_train.py --config, e.g. config_vqvae.json)",
         "sample": "a Transformer's config (transformer_train.py --config, e.g. config_transformer.json)",
         **dict.fromkeys(("solver", "loss", "crps"), "a latent SDE's config (latent_sde_train.py --config, e.g. "
                                                     "config_sde.json)")}


def build_config(cls: type, raw: dict, source: str, stored: bool = False) -> Any:
    """A validated config dataclass whose fields are sections (each a dataclass of settings);
    shared by every model's config so all reject bad input the same way. A checkpoint's config (`stored`) is not held
    to the work limits (check_work_limits): its run did that work, a forecast does none of it, and a checkpoint
    trained before a limit existed (train.plot_windows 20) stays loadable."""
    sections = [f.name for f in dataclasses.fields(cls)]
    names = ", ".join(sections)
    if not isinstance(raw, dict):
        raise UserError(f"{source}: the top level must be an object with sections {names}")
    for key in raw:
        if key not in sections:
            raise UserError(f"{source}: unknown config key '{key}' (known sections: {names})"
                            + (f"; a '{key}' section makes {OWNER[key]}" if key in OWNER else ""))
    defaults = cls()
    cfg = cls(**{name: build_section(getattr(defaults, name), raw.get(name, {}), name, source)
                 for name in sections})
    try:
        cfg.validate()
        if not stored:
            check_work_limits(cfg)
    except UserError as e:
        raise UserError(f"{source}: {e}") from e
    return cfg


def check_work_limits(cfg: Any) -> None:
    """Ceilings on the work a training or a preparation does, not on what a model is: windows cut per sample
    (data.window_stride's floor), augmented copies held in memory, loader processes, validation windows drawn every
    epoch."""
    for f in dataclasses.fields(cfg):
        if check := getattr(getattr(cfg, f.name), "check_work", None):
            check()


def read_config(cls: type, path: str | Path) -> Any:
    """A config file read into `cls` by build_config, every error naming the file."""
    return build_config(cls, read_json(path), str(Path(path)))


def config_from_dict(raw: dict, source: str = "config", stored: bool = False) -> Config:
    return build_config(Config, raw, source, stored)


# Model keys added after checkpoints were first written, with the behaviour those checkpoints had: a
# stored config without them means that behaviour, not today's default.
PREDATED = {"model": {"num_quantizers": 1, "window_gain": False}}


def with_predated(raw: Any, predated: dict[str, dict[str, Any]]) -> Any:
    """A checkpoint's stored config with the keys it predates filled in as they were then (`predated`, a model's
    PREDATED map), so that its defaults can be today's recipe. A config or section that is not an object is passed
    on as it is, for build_config to name rather than fail here filling in."""
    if not isinstance(raw, dict):
        return raw
    return {**raw, **{section: {**keys, **raw.get(section, {})} for section, keys in predated.items()
                      if isinstance(raw.get(section, {}), dict)}}


def stored_config(raw: Any, source: str) -> Config:
    """The config a checkpoint was trained with (older checkpoints lack the PREDATED keys)."""
    return config_from_dict(with_predated(raw, PREDATED), source, stored=True)


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a VQ-VAE config; None means the repository's config_vqvae.json."""
    return read_config(Config, path or DEFAULT_CONFIG)


# Raised when prepare_mitbih.py makes other tensors of the same data settings, so that the data hash tells
# the older prepared folders apart. 2 (session 24): record edges mirror-padded, windows clear of a record's
# last second. 3 (session 25): and clear of the last second before trailing NaN (MIT-BIH's tensors unchanged).
PREPARATION = 3


# Data keys added after tensors were first prepared and checkpoints shipped, with their defaults, which keep the
# tensors as they were: data_hash leaves such a key out while at its default, so those hashes (the shipped
# checkpoints' 2724b1ff1b4f585e, prepared folders, caches) hold.
HASHED_UNLESS_DEFAULT = {"second_lead": ""}


def data_hash(data: DataConfig) -> str:
    """Fingerprint of the settings, and of the preparation, that shape prepared tensors: a mismatch means
    re-prepare."""
    settings = {k: v for k, v in dataclasses.asdict(data).items()
                if k not in HASHED_UNLESS_DEFAULT or v != HASHED_UNLESS_DEFAULT[k]}
    text = json.dumps({**settings, "preparation": PREPARATION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
