"""SentEval's STS data: where it is, and how its files are read (``data/downstream`` and the raw SemEval releases).

Data flow: ``--data-dir`` or a place found by :func:`find_data_dir` -> :func:`find_senteval_dir` (the folder
holding ``STS/`` and ``SICK/``) -> :func:`load_task` -> :class:`Pair` lists. User pair files (``--pairs``)
are read by :mod:`esimcse_cli.core.pairs_file`.

Everything here follows SentEval's loading rules, so that the numbers match what SentEval (and SimCSE)
report on the same files:

- input files are split on tabs (never with CSV quoting) and the first two columns are the sentences;
- STS12-16: pairs whose gold line is empty are dropped (STS15/16 ship more inputs than scored pairs);
- STS-B: score in field 5, sentences in fields 6 and 7 (the raw release has 9 fields on some lines);
- SICK: a header line, then ``pair_ID, sentence_A, sentence_B, relatedness_score, ...``;
- each sentence is whitespace-normalised exactly as SentEval does (``" ".join(s.split())``).

Files are read as UTF-8; ``\\r\\n`` line endings are accepted. Any problem with a file raises
:class:`~esimcse_cli.core.errors.InputError` with a one-line ``file:line: what is wrong`` message.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from esimcse_cli.core.errors import ConfigError, InputError

__all__ = [
    "Pair",
    "TASKS",
    "STS_SUBSETS",
    "SPLITS",
    "DATA_DIR_ENV",
    "find_data_dir",
    "discover_dev_data",
    "find_senteval_dir",
    "given_data_dir",
    "resolve_tasks",
    "available_tasks",
    "load_task",
    "read_lines",
    "parse_score",
    "normalize",
]


@dataclass(frozen=True)
class Pair:
    """One scored sentence pair. ``subset`` is the SemEval subset (STS12-16) or the split name."""

    a: str
    b: str
    score: float
    subset: str


# SentEval's subset lists (STS13 leaves out the LDC-licensed SMT subset, as SentEval does).
STS_SUBSETS: Dict[str, Tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}

#: The seven standard tasks, by their JSON keys, in SimCSE's reporting order.
TASKS: Tuple[str, ...] = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")

SPLITS: Tuple[str, ...] = ("test", "dev", "train")  # test first: the default, and the order messages list them in

_ALIASES = {
    "sts12": "STS12",
    "sts13": "STS13",
    "sts14": "STS14",
    "sts15": "STS15",
    "sts16": "STS16",
    "stsbenchmark": "STSBenchmark",
    "stsb": "STSBenchmark",
    "sts-b": "STSBenchmark",
    "sickrelatedness": "SICKRelatedness",
    "sick": "SICKRelatedness",
    "sick-r": "SICKRelatedness",
    "sickr": "SICKRelatedness",
}

_STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
_SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}

# Where each task's folder may sit below the data root: SentEval's layout first, then flatter
# layouts (``raw/STS12/`` of the original releases, or task folders side by side).
_TASK_DIRS = {
    **{t: (f"STS/{t}-en-test", f"{t}-en-test", t) for t in STS_SUBSETS},
    "STSBenchmark": ("STS/STSBenchmark", "STSBenchmark", "STSBenchmark/stsbenchmark", "stsbenchmark"),
    "SICKRelatedness": ("SICK", "SICKRelatedness"),
}


def normalize(text: str) -> str:
    """SentEval's whitespace handling: split on any whitespace, join with single spaces."""
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------
# Finding the data
# ------------------------------------------------------------------------------------------------
def _looks_like_root(path: Path) -> bool:
    if (path / "STS").is_dir() or (path / "SICK").is_dir():
        return True
    return any((path / d).is_dir() for dirs in _TASK_DIRS.values() for d in dirs if "/" not in d)


def find_senteval_dir(path: Union[str, os.PathLike]) -> Path:
    """Return the folder that holds ``STS/`` and ``SICK/`` (SentEval's ``data/downstream``).

    Accepts that folder itself or a parent of it: ``X/senteval``, ``X/downstream`` and
    ``X/data/downstream`` are tried in turn. A folder of original releases (``STS12/``,
    ``STSBenchmark/``, ``SICK/`` side by side, like ``shared/data/raw``) is accepted too.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise InputError(f"{root}: is not a folder (expected SentEval's data/downstream folder or its parent)")
    candidates = [root, root / "senteval", root / "downstream", root / "data" / "downstream"]
    for cand in candidates:
        if cand.is_dir() and _looks_like_root(cand):
            return cand
    looked = ", ".join(str(c) for c in candidates)
    raise InputError(f"{root}: no STS data found (looked for STS/ or SICK/ in {looked})")


DATA_DIR_ENV = "ESIMCSE_DATA_DIR"
# SimCSE's way to fetch SentEval's data, quoted where none is found
FETCH_HINT = "SimCSE fetches it with: cd SentEval/data/downstream && bash download_dataset.sh"


def given_data_dir(positional: Optional[str], option: Optional[str]) -> Optional[str]:
    """The one data folder of ``DATA_DIR`` and ``--data-dir`` (``None``: neither, so it is looked for)."""
    if positional and option and Path(positional) != Path(option):
        raise ConfigError(f"two data folders given ({positional} and --data-dir {option}): give one")
    return positional or option


def user_data_dirs() -> List[Path]:
    """The per-user places for SentEval's data: under the user's data folder, then under the cache folder.

    ``$XDG_DATA_HOME/esimcse/downstream`` (default ``~/.local/share``) and ``$XDG_CACHE_HOME/esimcse/downstream``
    (default ``~/.cache``); on macOS ``~/Library/Application Support/esimcse/downstream`` and
    ``~/Library/Caches/esimcse/downstream``; on Windows ``%LOCALAPPDATA%\\esimcse\\downstream``.
    """
    try:
        home = Path.home()
    except RuntimeError:  # no home folder to be found (a service account): only the explicit places
        return []
    if sys.platform == "darwin":
        bases = [home / "Library" / "Application Support", home / "Library" / "Caches"]
    elif sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        bases = [Path(local) if local else home / "AppData" / "Local"]
    else:
        bases = [_xdg_dir("XDG_DATA_HOME", home / ".local" / "share"), _xdg_dir("XDG_CACHE_HOME", home / ".cache")]
    return [base / "esimcse" / "downstream" for base in bases]


def _xdg_dir(var: str, default: Path) -> Path:
    value = os.environ.get(var, "")
    return Path(value) if os.path.isabs(value) else default  # the XDG spec: a relative value is to be ignored


def usual_places() -> List[Path]:
    """Where SentEval's data is looked for when no folder is given: SimCSE's layout, ``./data/downstream``,
    then :func:`user_data_dirs`."""
    return [Path("SentEval/data/downstream"), Path("data/downstream"), *user_data_dirs()]


def _first_holding(places: Sequence[Path], wanted=None) -> Optional[Path]:
    """The first place that holds SentEval's data (and ``wanted(root)``, when given), as :func:`find_senteval_dir` names it."""
    for place in places:
        try:
            root = find_senteval_dir(place)
        except InputError:
            continue
        if wanted is None or wanted(root):
            return root
    return None


def _shown(place: Path) -> str:
    """A place as the error names it: ``./`` for the working folder, ``~`` for the home folder."""
    if not place.is_absolute():
        return os.path.join(".", str(place))
    try:
        return os.path.join("~", str(place.relative_to(Path.home())))
    except (ValueError, RuntimeError):
        return str(place)


def find_data_dir(given: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The SentEval data folder that ``eval-sts``, ``compare`` and ``length-analysis`` read.

    In order: ``given`` (``DATA_DIR`` / ``--data-dir``), then ``$ESIMCSE_DATA_DIR``: a folder named either way
    must hold the data (see :func:`find_senteval_dir` for its errors). Without either, the first of
    :func:`usual_places` that holds it, or a one-line :class:`ConfigError` naming the places looked in and
    how the data is fetched.
    """
    if given is not None and str(given) != "":
        return find_senteval_dir(given)
    if os.environ.get(DATA_DIR_ENV):
        return find_senteval_dir(os.environ[DATA_DIR_ENV])
    places = usual_places()
    found = _first_holding(places)
    if found is None:
        looked = ", ".join([f"${DATA_DIR_ENV} (not set)"] + [_shown(p) for p in places])
        raise ConfigError(f"no STS data found (looked in {looked}): --data-dir is needed, SentEval's data/downstream "
                          f"folder or its parent, or set {DATA_DIR_ENV}; {FETCH_HINT}")
    logging.getLogger("esimcse").info("STS data from %s (found without --data-dir)", found)
    return found


def discover_dev_data(corpus: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """STS-B dev data for ``train``'s model selection, found without being told; ``None`` where there is none.

    The places of :func:`find_data_dir`, with the corpus's own folder right after ``$ESIMCSE_DATA_DIR``
    (``sample_data/corpus.txt`` finds ``sample_data/senteval/``). A place without
    ``STS/STSBenchmark/sts-dev.csv`` is skipped, ``$ESIMCSE_DATA_DIR`` included: training runs on without
    selection (and says so) rather than failing.
    """
    places: List[Path] = []
    if os.environ.get(DATA_DIR_ENV):
        places.append(Path(os.environ[DATA_DIR_ENV]))
    if corpus is not None and str(corpus) != "-":
        places.append(Path(corpus).expanduser().resolve().parent)
    return _first_holding(places + usual_places(), lambda root: (root / "STS" / "STSBenchmark" / _STSB_FILES["dev"]).is_file())


def resolve_tasks(names: Optional[Union[str, Sequence[str]]]) -> List[str]:
    """Map user task names (case-insensitive, with aliases like ``stsb``, ``sick``) to JSON keys.

    ``None``, ``""`` or ``"all"`` give all seven tasks. A comma-separated string is accepted.
    Duplicates are dropped; the order of :data:`TASKS` is kept.
    """
    if names is None:
        return list(TASKS)
    if isinstance(names, str):
        names = [names]
    parts = [p.strip() for n in names for p in str(n).split(",") if p.strip()]
    if not parts or any(p.lower() == "all" for p in parts):
        return list(TASKS)
    chosen = set()
    for p in parts:
        key = _ALIASES.get(p.lower())
        if key is None:
            raise InputError(f"unknown task {p!r}: choose from {', '.join(TASKS)} (or 'all')")
        chosen.add(key)
    return [t for t in TASKS if t in chosen]


def available_tasks(data_dir: Union[str, os.PathLike]) -> List[str]:
    """The standard tasks whose folder exists under the data root (in :data:`TASKS` order)."""
    root = find_senteval_dir(data_dir)
    return [t for t in TASKS if any((root / rel).is_dir() for rel in _TASK_DIRS[t])]


def _task_dir(root: Path, task: str) -> Path:
    for rel in _TASK_DIRS[task]:
        cand = root / rel
        if cand.is_dir():
            return cand
    looked = ", ".join(str(root / rel) for rel in _TASK_DIRS[task])
    raise InputError(f"{task}: task folder not found (looked in {looked})")


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------
def read_lines(path: Path) -> List[str]:
    """UTF-8 lines without their ``\\n`` / ``\\r\\n`` endings (a final newline adds no line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_score(raw: str, where: str) -> float:
    """A gold score as a finite float; ``where`` (``file:line``) names it in the error."""
    try:
        value = float(raw)
    except ValueError:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise InputError(f"{where}: score {shown!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: score {raw.strip()!r} is not a finite number")
    return value


def _read_sts_subset(folder: Path, subset: str) -> List[Pair]:
    """One SemEval subset: ``STS.input.<subset>.txt`` + ``STS.gs.<subset>.txt`` (or the ``STS2016.`` names)."""
    inp = gs = None
    for prefix in ("STS", "STS2016"):
        i, g = folder / f"{prefix}.input.{subset}.txt", folder / f"{prefix}.gs.{subset}.txt"
        if i.is_file() or g.is_file():
            inp, gs = i, g
            break
    if inp is None:
        raise InputError(f"{folder}: missing STS.input.{subset}.txt and STS.gs.{subset}.txt")
    if not inp.is_file():
        raise InputError(f"{inp}: file not found (needed with {gs.name})")
    if not gs.is_file():
        raise InputError(f"{gs}: file not found (needed with {inp.name})")
    inputs = read_lines(inp)
    golds = read_lines(gs)
    if len(inputs) != len(golds):
        raise InputError(f"{gs}: {len(golds)} gold lines but {inp.name} has {len(inputs)} lines")
    pairs = []
    for n, (line, gold) in enumerate(zip(inputs, golds), start=1):
        if gold.strip() == "":
            continue  # unscored pair: SentEval drops it
        score = parse_score(gold, f"{gs}:{n}")
        cols = line.split("\t")
        if len(cols) < 2:
            raise InputError(f"{inp}:{n}: expected 2 tab-separated sentences, found {len(cols)} column")
        pairs.append(Pair(normalize(cols[0]), normalize(cols[1]), score, subset))
    return pairs


def _read_stsb(path: Path, split: str) -> List[Pair]:
    pairs = []
    for n, line in enumerate(read_lines(path), start=1):
        if line.strip() == "":
            continue
        cols = line.strip().split("\t")  # SentEval: line.strip().split('\t')
        if len(cols) < 7:
            raise InputError(f"{path}:{n}: expected at least 7 tab-separated fields (score in 5, sentences in 6 and 7), found {len(cols)}")
        score = parse_score(cols[4], f"{path}:{n}")
        pairs.append(Pair(normalize(cols[5]), normalize(cols[6]), score, split))
    return pairs


def _read_sick(path: Path, split: str) -> List[Pair]:
    pairs = []
    lines = read_lines(path)
    for n, line in enumerate(lines, start=1):
        if n == 1:
            continue  # header: pair_ID sentence_A sentence_B relatedness_score entailment_judgment
        if line.strip() == "":
            continue
        cols = line.strip().split("\t")
        if len(cols) < 4:
            raise InputError(f"{path}:{n}: expected at least 4 tab-separated fields (pair_ID, sentence_A, sentence_B, relatedness_score), found {len(cols)}")
        score = parse_score(cols[3], f"{path}:{n}")
        pairs.append(Pair(normalize(cols[1]), normalize(cols[2]), score, split))
    return pairs


def load_task(data_dir: Union[str, os.PathLike], task: str, split: str = "test") -> List[Pair]:
    """Load one task's scored pairs.

    ``data_dir`` is SentEval's ``data/downstream`` folder or a parent (see :func:`find_senteval_dir`).
    ``split`` applies to STSBenchmark and SICKRelatedness (``dev`` is SICK's ``trial`` file);
    STS12-16 only have a test set and ignore it.
    """
    key = resolve_tasks([task])[0]
    # the commands check --split first (evaluate.check_split, a ConfigError); this guards the library call
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    root = find_senteval_dir(data_dir)
    folder = _task_dir(root, key)
    if key in STS_SUBSETS:
        pairs: List[Pair] = []
        for subset in STS_SUBSETS[key]:
            pairs.extend(_read_sts_subset(folder, subset))
    elif key == "STSBenchmark":
        path = folder / _STSB_FILES[split]
        if not path.is_file():
            raise InputError(f"{key}: {split} file not found: {path}")
        pairs = _read_stsb(path, split)
    else:
        path = folder / _SICK_FILES[split]
        if not path.is_file():
            raise InputError(f"{key}: {split} file not found: {path}")
        pairs = _read_sick(path, split)
    if not pairs:
        raise InputError(f"{key}: no scored pairs found in {folder}")
    return pairs

