"""Training configuration: one small dataclass, YAML files, presets.

Precedence, lowest first: the dataclass defaults < ``--preset`` (a YAML file shipped in
``esimcse_cli/core/presets/``) < ``--config FILE.yaml`` < command-line flags. Every source
goes through the same checks: an unknown key is refused naming the key, a value of the wrong
type is refused naming the key and the type, and out-of-range values are refused by
:meth:`TrainConfig.validate`. YAML is read with :func:`yaml.safe_load`, so tags such as
``!!python/object`` are refused.

Path values read from a config file (``corpus``, ``dev_data``, ``output_dir``, and ``model`` when it
names a local folder) are resolved relative to the folder of that file and may not leave it (an
absolute path, ``..`` or a symbolic link that escapes is refused); a config file may not turn
``trust_remote_code`` on. Every file a run writes is inside ``output_dir`` (fixed names). Paths given
on the command line are taken as they are.

Options whose default depends on ``method`` (``repetition``, ``momentum_queue``) are ``None``
until :meth:`TrainConfig.resolved` fills them in:

=========  ==========  ==============
method     repetition  momentum_queue
=========  ==========  ==============
esimcse    on          on
simcse     off         off
=========  ==========  ==============
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from esimcse_cli.core import augment, segment
from esimcse_cli.core.corpus import ENCODING_ERRORS
from esimcse_cli.core.defaults import DEFAULT_SEED
from esimcse_cli.core.errors import ConfigError, first_line
from esimcse_cli.core.models import DEFAULT_MODEL
from esimcse_cli.core.pooling import POOLINGS, hidden_pooling
from esimcse_cli.core.variants import VARIANTS

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PRESETS = ("bert-base", "bert-large", "roberta-base", "roberta-large")
METHODS = ("esimcse", "simcse")
# The training poolers are pooling.POOLINGS, where "cls" = last_hidden[:, 0] (SimCSE's "cls"): with the MLP
# on, the MLP is used in training only and the exported model pools with "cls_before_pooler".
# "auto" (the default): the pooling the base model declares, else the paper's "cls" (see contrastive.choose_pooler).
AUTO_POOLER = "auto"
SCHEDULERS = ("linear", "constant")
# max_grad_norm under momentum_variant "official" when unset: the Hugging Face Trainer default the released code ran with.
OFFICIAL_MAX_GRAD_NORM = 1.0
PATH_KEYS = ("corpus", "dev_data", "output_dir")


@dataclass
class TrainConfig:
    """Every option of ``esimcse train``. Field names are the YAML keys (``--dup-rate`` -> ``dup_rate``)."""

    # what to train on and where to write
    corpus: Optional[str] = None
    output_dir: Optional[str] = None
    text_column: Optional[str] = None
    dedupe: bool = False
    encoding_errors: str = "strict"
    # model
    model: str = DEFAULT_MODEL
    trust_remote_code: bool = False
    dropout: Optional[float] = None
    pooler: str = AUTO_POOLER  # auto: what the base model declares (a raw BERT declares none: the paper's cls)
    mlp: Optional[bool] = None  # None: on for pooler "cls", off otherwise
    max_length: int = 32
    split_by_length: bool = True  # run each batch as a few length groups (less padding; same rows, same loss)
    # method and ablation switches
    method: str = "esimcse"
    repetition: Optional[bool] = None
    momentum_queue: Optional[bool] = None
    dup_rate: float = augment.DEFAULT_DUP_RATE
    repetition_variant: str = "paper"
    augmentation: str = "repetition"  # what builds the positive when repetition is on: repetition | insertion | deletion
    insert_token: str = "random"  # for augmentation=insertion: random | stopword | mask
    repetition_level: str = "subword"  # what the second view repeats: subword (the paper) | word | char
    segmenter: str = "whitespace"  # how repetition_level=word finds words: whitespace | jieba
    momentum: float = 0.995
    momentum_variant: str = "paper"
    queue_ratio: float = 2.5
    queue_size: Optional[int] = None
    temperature: float = 0.05
    # optimisation
    batch_size: int = 64
    lr: float = 3e-5
    weight_decay: float = 0.0
    epochs: int = 1
    max_steps: Optional[int] = None
    warmup: int = 0
    scheduler: str = "linear"
    grad_accum: int = 1
    max_grad_norm: Optional[float] = None
    seed: int = DEFAULT_SEED
    bf16: bool = False
    device: str = "auto"
    # evaluation, logging, saving
    dev_data: Optional[str] = None
    eval_steps: int = 125
    eval_batch_size: int = 128
    log_steps: int = 10
    save_steps: int = 500
    resume: bool = False
    overwrite: bool = False
    keep_state: bool = False  # keep OUT/state (momentum, queue, optimizer) after a finished run
    preset: Optional[str] = None

    # ------------------------------------------------------------------ derived values
    def resolved(self) -> "TrainConfig":
        """A copy with method-dependent defaults filled in (``repetition``, ``momentum_queue``, ``mlp``,
        ``max_grad_norm``).

        ``max_grad_norm``: unset (None) means no clipping, except with ``momentum_variant="official"``, which
        is the released training loop: caskcsg/sentemb runs the Hugging Face ``Trainer`` (``CLTrainer.train``
        in ``ESimCSE/esimcse/trainers.py`` clips with ``torch.nn.utils.clip_grad_norm_(model.parameters(),
        args.max_grad_norm)``), whose default ``max_grad_norm=1.0`` its ``run.sh`` never overrides (every
        ``logs/*.log`` prints ``max_grad_norm=1.0``). So under ``official`` an unset value becomes 1.0; an
        explicit ``--max-grad-norm`` always wins. ``paper`` stays unclipped: the paper names no clipping.
        """
        c = dataclasses.replace(self)
        if c.max_grad_norm is None and c.momentum_variant == "official":
            c.max_grad_norm = OFFICIAL_MAX_GRAD_NORM
        if c.repetition is None:
            c.repetition = c.method == "esimcse"
        if c.momentum_queue is None:
            c.momentum_queue = c.method == "esimcse"
        if c.mlp is None and c.pooler != AUTO_POOLER:  # auto: filled in once the pooler is chosen
            c.mlp = c.pooler == "cls"
        return c

    @property
    def test_pooling(self) -> str:
        """The pooling of the exported model: SimCSE's ``mlp_only_train`` drops the MLP at test time."""
        if self.pooler == AUTO_POOLER:
            raise ValueError("pooler 'auto' is chosen when the model is known (contrastive.choose_pooler)")
        return hidden_pooling(self.pooler)

    def effective_queue_size(self) -> int:
        if not (self.momentum_queue if self.momentum_queue is not None else self.method == "esimcse"):
            return 0
        if self.queue_size is not None:
            return int(self.queue_size)
        return int(round(self.queue_ratio * self.batch_size))

    def validate(self) -> "TrainConfig":
        """Refuse out-of-range values with a one-line :class:`ConfigError` naming the option."""

        def bad(key: str, what: str) -> None:
            raise ConfigError(f"--{key.replace('_', '-')}: {what}")

        def choice(key: str, allowed: Tuple[str, ...]) -> None:
            if getattr(self, key) not in allowed:
                bad(key, f"{getattr(self, key)!r} is not one of {', '.join(allowed)}")

        for f in fields(self):  # nan/inf pass the range checks below (nan > 0 is False, inf > 0 is True)
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                bad(f.name, f"must be a finite number, got {value}")
        choice("method", METHODS)
        choice("repetition_variant", VARIANTS)
        choice("momentum_variant", VARIANTS)
        choice("pooler", (AUTO_POOLER,) + POOLINGS)
        choice("scheduler", SCHEDULERS)
        choice("augmentation", augment.METHODS)
        choice("insert_token", augment.INSERT_TOKENS)
        choice("repetition_level", augment.LEVELS)
        choice("segmenter", segment.SEGMENTERS)
        if self.segmenter != "whitespace" and self.repetition_level != "word":
            bad("segmenter", f"{self.segmenter} segments words: it goes with --repetition-level word, not {self.repetition_level}")
        if self.repetition_level == "char" and self.repetition_variant == "official":
            bad("repetition_level", "char has no official formula (the released code repeats sub-words or words); use --repetition-variant paper")
        if self.segmenter == "jieba":
            segment.check_segmenter(self.segmenter, self.repetition_level)  # jieba installed, or one line
        choice("encoding_errors", ENCODING_ERRORS)
        if self.preset is not None:
            choice("preset", PRESETS)
        if self.batch_size < 2:
            bad("batch_size", f"must be at least 2 (in-batch negatives), got {self.batch_size}")
        if not self.lr > 0:
            bad("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        augment.check_rate(self.dup_rate)
        if not 0.0 <= self.momentum <= 1.0:
            bad("momentum", f"must be in [0, 1], got {self.momentum}")
        if self.queue_ratio < 0:
            bad("queue_ratio", f"must be >= 0, got {self.queue_ratio}")
        if self.queue_size is not None and self.queue_size < 0:
            bad("queue_size", f"must be >= 0, got {self.queue_size}")
        if not self.temperature > 0:
            bad("temperature", f"must be > 0, got {self.temperature}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            bad("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.max_length < 3:
            bad("max_length", f"must be at least 3 ([CLS] token [SEP]), got {self.max_length}")
        if self.epochs < 1:
            bad("epochs", f"must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps", f"must be at least 1, got {self.max_steps}")
        if self.warmup < 0:
            bad("warmup", f"must be >= 0 steps, got {self.warmup}")
        if self.grad_accum < 1:
            bad("grad_accum", f"must be at least 1, got {self.grad_accum}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad("max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        for key in ("eval_steps", "log_steps", "save_steps"):
            if getattr(self, key) < 0:
                bad(key, f"must be >= 0 (0 = never), got {getattr(self, key)}")
        if self.eval_batch_size < 1:
            bad("eval_batch_size", f"must be at least 1, got {self.eval_batch_size}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def to_cli_args(cfg: "TrainConfig") -> list:
    """The ``esimcse train`` arguments that rebuild ``cfg`` (options that differ from the defaults)."""
    default = TrainConfig()
    args: list = [cfg.corpus] if cfg.corpus else []
    for f in fields(TrainConfig):
        name, value = f.name, getattr(cfg, f.name)
        if name in ("corpus", "resume", "overwrite") or value == getattr(default, name) or value is None:
            continue
        flag = "-o" if name == "output_dir" else "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


# ---------------------------------------------------------------------------------- type checks
def _field_types() -> Dict[str, Tuple[tuple, bool]]:
    """field name -> (accepted python types, None allowed)."""
    out: Dict[str, Tuple[tuple, bool]] = {}
    for f in fields(TrainConfig):
        t = str(f.type)
        optional = t.startswith("Optional[")
        base = t[len("Optional["):-1] if optional else t
        types = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}[base]
        out[f.name] = (types, optional)
    return out


_TYPES = _field_types()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false"}


def check_values(values: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """Check keys and value types of a mapping from ``source`` (a file name or 'command line')."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: expected a mapping of option: value, got {type(values).__name__}")
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: option names must be strings, got {key!r}")
        name = key.replace("-", "_")
        if name not in _TYPES:
            raise ConfigError(f"{source}: unknown key {key!r}")
        types, optional = _TYPES[name]
        if value is None:
            if not optional:
                raise ConfigError(f"{source}: {key}: may not be empty")
        elif isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{source}: {key}: expected {_TYPE_NAMES[types[0]]}, got {value!r}")
        elif not isinstance(value, types):
            raise ConfigError(f"{source}: {key}: expected {_TYPE_NAMES[types[0]]}, got {value!r}")
        if value is not None and float in types:
            value = float(value)
        out[name] = value
    return out


def read_yaml(path: str | os.PathLike) -> Dict[str, Any]:
    """Read a YAML mapping safely; one-line errors for a missing file, bad YAML or unsafe tags."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    import yaml  # here, not at the top: the CLI imports this module for its choices and --help must stay quick

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    return check_values(data, str(path))


def _confine_paths(values: Dict[str, Any], config_path: Path) -> Dict[str, Any]:
    """Resolve path values of a config file against its folder; refuse those that leave it.

    ``corpus``, ``dev_data`` and ``output_dir`` are paths. ``model`` is a path when it names an existing
    file or folder (relative to the config's folder, or as the loader would see it from the working
    folder), or looks like one (absolute, ``~``, ``..``); otherwise it is a hub name and left alone.
    Symbolic links are followed before the check. ``trust_remote_code: true`` is refused in a file: only
    the command-line flag turns it on.
    """
    base = config_path.resolve().parent

    def refuse(key: str, value: str) -> None:
        raise ConfigError(f"{config_path}: {key}: {value!r} leaves the config file's folder; give it on the command line instead")

    def inside(target: Path) -> bool:
        return target == base or base in target.parents

    for key in PATH_KEYS:
        value = values.get(key)
        if value is None or value == "-":
            continue
        p = Path(value).expanduser()
        target = (base / p).resolve()
        if p.is_absolute() or not inside(target):
            refuse(key, value)
        values[key] = str(target)
    model = values.get("model")
    if model is not None and model.strip() not in ("", DEFAULT_MODEL):
        p = Path(model).expanduser()
        target = (base / p).resolve()
        if os.path.lexists(base / p):
            if not inside(target):
                refuse("model", model)
            values["model"] = str(target)
        elif p.is_absolute() or model.startswith("~") or ".." in p.parts or os.path.lexists(p):
            refuse("model", model)
    if values.get("trust_remote_code"):
        raise ConfigError(f"{config_path}: trust_remote_code: a config file may not turn it on; pass --trust-remote-code")
    return values


def load_preset(name: str) -> Dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"--preset: {name!r} is not one of {', '.join(PRESETS)}")
    return read_yaml(PRESETS_DIR / f"{name}.yaml")


# Where a run writes when no -o is given.
DEFAULT_OUTPUT_DIR = "esimcse-model"
# --dev-data none (any case): no model selection, not even on dev data found without being named.
NO_DEV_DATA = "none"


def build_config(
    cli_values: Optional[Mapping[str, Any]] = None,
    config_file: Optional[str | os.PathLike] = None,
    *,
    run: bool = False,
) -> TrainConfig:
    """Merge defaults < preset < config file < command-line values; check types and ranges.

    ``cli_values`` holds only the options the user actually gave (``None`` values are dropped).
    The preset may be named on the command line or in the config file.

    With ``run`` (``esimcse train``), the result is what a new run starts from: the output folder defaults
    to :data:`DEFAULT_OUTPUT_DIR`, a corpus is required, and without ``dev_data`` the STS-B dev data that
    :func:`~esimcse_cli.core.sts.discover_dev_data` finds is selected on (said on the ``esimcse`` logger);
    ``dev_data: none`` turns selection off. Without ``run`` nothing is filled in or looked for: a library
    caller names what it wants.
    """
    cli = check_values({k: v for k, v in (cli_values or {}).items() if v is not None}, "command line")
    file_values: Dict[str, Any] = {}
    if config_file is not None:
        file_values = read_yaml(config_file)
        # paths the command line overrides are not checked (so a written train_config.yaml can be reused)
        confined = {k: v for k, v in file_values.items() if k not in cli}
        file_values.update(_confine_paths(confined, Path(config_file)))
    preset = cli.get("preset", file_values.get("preset"))
    merged: Dict[str, Any] = {}
    if preset is not None:
        merged.update(load_preset(preset))
        merged["preset"] = preset
    merged.update(file_values)
    merged.update(cli)
    cfg = TrainConfig(**merged).validate()
    if run:
        _ready_to_run(cfg)
    return cfg


def _ready_to_run(cfg: TrainConfig) -> None:
    if cfg.output_dir is None:
        cfg.output_dir = DEFAULT_OUTPUT_DIR
    if cfg.corpus is None:
        raise ConfigError("no corpus given: esimcse train CORPUS [-o OUT_DIR]")
    if cfg.dev_data is None:
        import logging

        from esimcse_cli.core.sts import discover_dev_data  # the places eval-sts looks in, and the corpus's folder

        found = discover_dev_data(cfg.corpus)
        if found is not None:
            cfg.dev_data = str(found)
            logging.getLogger("esimcse").info(
                "selecting on STS-B dev from %s (found without --dev-data; --dev-data %s turns it off)", found, NO_DEV_DATA)
    cfg.dev_data = dev_data_or_none(cfg.dev_data)


def dev_data_or_none(dev_data: Optional[str]) -> Optional[str]:
    """``dev_data`` as a run uses it: :data:`NO_DEV_DATA` means none."""
    return None if dev_data is not None and str(dev_data).lower() == NO_DEV_DATA else dev_data


def write_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    from esimcse_cli.core.atomic import atomic_write_text

    atomic_write_text(path, "# resolved configuration of this run (esimcse train --config reads it back)\n" + cfg.to_yaml())


__all__ = [
    "TrainConfig",
    "build_config",
    "read_yaml",
    "check_values",
    "load_preset",
    "write_config",
    "to_cli_args",
    "dev_data_or_none",
    "DEFAULT_OUTPUT_DIR",
    "NO_DEV_DATA",
    "PRESETS",
    "METHODS",
    "AUTO_POOLER",
]
