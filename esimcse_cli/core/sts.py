"""STS data readers: SentEval's ``data/downstream`` layout, the raw SemEval releases, and user pair files.

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

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from esimcse_cli.core.errors import InputError

__all__ = [
    "Pair",
    "TASKS",
    "STS_SUBSETS",
    "SPLITS",
    "find_senteval_dir",
    "resolve_tasks",
    "available_tasks",
    "load_task",
    "read_pairs_file",
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

SPLITS: Tuple[str, ...] = ("train", "dev", "test")

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


def discover_dev_data(corpus: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """Find STS-B dev data without being told, as SimCSE's scripts find ``SentEval/data``.

    Looked at in order: ``$ESIMCSE_DATA_DIR``; the corpus's own folder (e.g. ``sample_data/`` holds
    ``senteval/``); ``./SentEval/data/downstream`` and ``./data/downstream``. Returns the first folder
    that has ``STS/STSBenchmark/sts-dev.csv``, or ``None``.
    """
    places: List[Path] = []
    if os.environ.get(DATA_DIR_ENV):
        places.append(Path(os.environ[DATA_DIR_ENV]))
    if corpus is not None and str(corpus) != "-":
        places.append(Path(corpus).expanduser().resolve().parent)
    places += [Path("SentEval/data/downstream"), Path("data/downstream")]
    for place in places:
        try:
            root = find_senteval_dir(place)
        except InputError:
            continue
        if (root / "STS" / "STSBenchmark" / "sts-dev.csv").is_file():
            return root
    return None


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
def _read_lines(path: Path) -> List[str]:
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


def _parse_score(raw: str, where: str) -> float:
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
    inputs = _read_lines(inp)
    golds = _read_lines(gs)
    if len(inputs) != len(golds):
        raise InputError(f"{gs}: {len(golds)} gold lines but {inp.name} has {len(inputs)} lines")
    pairs = []
    for n, (line, gold) in enumerate(zip(inputs, golds), start=1):
        if gold.strip() == "":
            continue  # unscored pair: SentEval drops it
        score = _parse_score(gold, f"{gs}:{n}")
        cols = line.split("\t")
        if len(cols) < 2:
            raise InputError(f"{inp}:{n}: expected 2 tab-separated sentences, found {len(cols)} column")
        pairs.append(Pair(normalize(cols[0]), normalize(cols[1]), score, subset))
    return pairs


def _read_stsb(path: Path, split: str) -> List[Pair]:
    pairs = []
    for n, line in enumerate(_read_lines(path), start=1):
        if line.strip() == "":
            continue
        cols = line.strip().split("\t")  # SentEval: line.strip().split('\t')
        if len(cols) < 7:
            raise InputError(f"{path}:{n}: expected at least 7 tab-separated fields (score in 5, sentences in 6 and 7), found {len(cols)}")
        score = _parse_score(cols[4], f"{path}:{n}")
        pairs.append(Pair(normalize(cols[5]), normalize(cols[6]), score, split))
    return pairs


def _read_sick(path: Path, split: str) -> List[Pair]:
    pairs = []
    lines = _read_lines(path)
    for n, line in enumerate(lines, start=1):
        if n == 1:
            continue  # header: pair_ID sentence_A sentence_B relatedness_score entailment_judgment
        if line.strip() == "":
            continue
        cols = line.strip().split("\t")
        if len(cols) < 4:
            raise InputError(f"{path}:{n}: expected at least 4 tab-separated fields (pair_ID, sentence_A, sentence_B, relatedness_score), found {len(cols)}")
        score = _parse_score(cols[3], f"{path}:{n}")
        pairs.append(Pair(normalize(cols[1]), normalize(cols[2]), score, split))
    return pairs


def load_task(data_dir: Union[str, os.PathLike], task: str, split: str = "test") -> List[Pair]:
    """Load one task's scored pairs.

    ``data_dir`` is SentEval's ``data/downstream`` folder or a parent (see :func:`find_senteval_dir`).
    ``split`` applies to STSBenchmark and SICKRelatedness (``dev`` is SICK's ``trial`` file);
    STS12-16 only have a test set and ignore it.
    """
    key = resolve_tasks([task])[0]
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


# ------------------------------------------------------------------------------------------------
# User pair files (--pairs)
# ------------------------------------------------------------------------------------------------
_S1_NAMES = ("sentence1", "sentence_1", "sentence_a", "sent1", "text1", "text_a", "s1", "a")
_S2_NAMES = ("sentence2", "sentence_2", "sentence_b", "sent2", "text2", "text_b", "s2", "b")
_SCORE_NAMES = ("score", "label", "similarity", "relatedness_score", "gold", "gold_score")

Column = Union[str, int, None]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pick_column(header: Sequence[str], wanted: Column, defaults: Tuple[str, ...], fallback: int, what: str, path: Path) -> int:
    """Index of a column given by name, by 0-based index (int or digit string), or by the usual names."""
    lowered = [str(h).strip().lower() for h in header]
    if wanted is not None:
        if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.strip().isdigit()):
            idx = int(wanted)
            if idx >= len(header):
                raise InputError(f"{path}: {what} column index {idx} is out of range ({len(header)} columns)")
            return idx
        name = str(wanted).strip().lower()
        if name in lowered:
            return lowered.index(name)
        raise InputError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(map(str, header))})")
    for name in defaults:
        if name in lowered:
            return lowered.index(name)
    if fallback < len(header):
        return fallback
    raise InputError(f"{path}: cannot find the {what} column (columns: {', '.join(map(str, header))}); name it with a column option")


def _read_tsv_pairs(path: Path, s1: Column, s2: Column, score: Column, subset: str, stats: Dict[str, int]) -> List[Pair]:
    lines = _read_lines(path)
    start = 0
    idx = (0, 1, 2)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise InputError(f"{path}: file is empty")
    head = lines[first].split("\t")
    named = any(isinstance(c, str) and not c.strip().isdigit() for c in (s1, s2, score))
    guess_idx = int(score) if score is not None and str(score).strip().isdigit() else 2
    score_guess = head[guess_idx] if guess_idx < len(head) else ""
    has_header = named or (score_guess.strip() != "" and not _is_number(score_guess))
    if has_header:
        idx = (
            _pick_column(head, s1, _S1_NAMES, 0, "sentence1", path),
            _pick_column(head, s2, _S2_NAMES, 1, "sentence2", path),
            _pick_column(head, score, _SCORE_NAMES, 2, "score", path),
        )
        start = first + 1
    else:
        idx = tuple(int(c) if c is not None else d for c, d in zip((s1, s2, score), (0, 1, 2)))
    need = max(idx) + 1
    pairs = []
    for n in range(start, len(lines)):
        line = lines[n]
        if line.strip() == "":
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise InputError(f"{path}:{n + 1}: expected at least {need} tab-separated fields (sentence1, sentence2, score), found {len(cols)}")
        raw = cols[idx[2]]
        if raw.strip() == "":
            stats["unscored"] += 1
            continue
        pairs.append(Pair(normalize(cols[idx[0]]), normalize(cols[idx[1]]), _parse_score(raw, f"{path}:{n + 1}"), subset))
    return pairs


def _read_table_pairs(path: Path, fmt: str, s1: Column, s2: Column, score: Column, subset: str, stats: Dict[str, int]) -> List[Pair]:
    import pandas as pd

    try:
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        else:
            try:
                df = pd.read_parquet(path)
            except ImportError:
                raise InputError(f"{path}: reading Parquet needs pyarrow (pip install 'esimcse-cli[parquet]')") from None
    except InputError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot read as {fmt.upper()} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    except Exception as exc:  # pandas/pyarrow parser errors have many types
        raise InputError(f"{path}: cannot read as {fmt.upper()} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    header = [str(c) for c in df.columns]
    if not header:
        raise InputError(f"{path}: no columns found")
    idx = (
        _pick_column(header, s1, _S1_NAMES, 0, "sentence1", path),
        _pick_column(header, s2, _S2_NAMES, 1, "sentence2", path),
        _pick_column(header, score, _SCORE_NAMES, 2, "score", path),
    )
    cols = [df.iloc[:, i].tolist() for i in idx]
    pairs = []
    for row, (a, b, sc) in enumerate(zip(*cols), start=1):
        where = f"{path}: row {row}"
        if sc is None or (isinstance(sc, float) and math.isnan(sc)) or (isinstance(sc, str) and sc.strip() == ""):
            stats["unscored"] += 1
            continue
        if isinstance(sc, bool) or not isinstance(sc, (int, float, str)):
            raise InputError(f"{where}: score {sc!r} is not a number")
        value = _parse_score(sc, where) if isinstance(sc, str) else float(sc)
        if not math.isfinite(value):
            raise InputError(f"{where}: score {sc!r} is not a finite number")
        for name, s in (("sentence1", a), ("sentence2", b)):
            if not isinstance(s, str):
                if s is None or (isinstance(s, float) and math.isnan(s)):
                    raise InputError(f"{where}: {name} is missing")
        pairs.append(Pair(normalize(str(a)), normalize(str(b)), value, subset))
    return pairs


def read_pairs_file(
    path: Union[str, os.PathLike],
    sentence1_col: Column = None,
    sentence2_col: Column = None,
    score_col: Column = None,
    fmt: Optional[str] = None,
) -> List[Pair]:
    """Read a user's scored pairs (``--pairs``).

    - ``.tsv`` / ``.txt`` (default): ``sentence1<TAB>sentence2<TAB>score``, split on tabs (no quoting),
      with or without a header line (a header is recognised by a non-numeric score field);
    - ``.csv``, ``.jsonl`` / ``.json``, ``.parquet``: read through pandas.

    Columns are found by name (``sentence1``/``sentence_A``/``text1``..., ``score``/``label``...) or given
    by the ``*_col`` options as a name or a 0-based index. Rows with an empty score are dropped (as
    SentEval drops unscored pairs) and logged. The pairs' ``subset`` is the file's stem.
    """
    import logging

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a pairs file")
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "tsv")
    fmt = fmt.lower()
    if fmt not in ("tsv", "csv", "jsonl", "parquet"):
        raise InputError(f"{path}: unknown pairs format {fmt!r} (tsv, csv, jsonl, parquet)")
    stats = {"unscored": 0}
    subset = path.stem
    if fmt == "tsv":
        pairs = _read_tsv_pairs(path, sentence1_col, sentence2_col, score_col, subset, stats)
    else:
        pairs = _read_table_pairs(path, fmt, sentence1_col, sentence2_col, score_col, subset, stats)
    if stats["unscored"]:
        logging.getLogger("esimcse").warning("%s: skipped %d pair(s) with an empty score", path, stats["unscored"])
    if not pairs:
        raise InputError(f"{path}: no scored pairs found")
    return pairs
