"""Stream texts from files without holding them all in memory.

Formats, by suffix:

* anything else (``.txt``, no suffix, ``-`` for stdin): one text per line. Lines are split on ``\\n``
  only (a trailing ``\\r`` is dropped), so row *i* of every output is line *i* of the input, as ``sed -n``
  counts them. A blank line is an empty text.
* ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.parquet``: read in chunks with pandas (parquet through
  pyarrow) from ``text_column`` (default: a column named ``text``, or the only column).

Text must be UTF-8. ``encoding_errors="replace"`` (CLI ``--encoding-errors replace``) turns undecodable
bytes into U+FFFD instead of stopping with ``file:line: not valid UTF-8``.

:class:`CorpusIndex` is the training corpus: read once into a spool file (one sentence per line, on disk)
while each kept line's byte offset goes into a compact array (8 bytes a line); a batch is read by seeking.
Blank lines are skipped and counted; ``dedupe`` drops exact repeats (first occurrence kept, by 8-byte hashes).
Memory holds neither the corpus nor its tokens.
"""

from __future__ import annotations

import array
import hashlib
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from esimcse_cli.core.errors import InputError, first_line

TABULAR = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
ENCODING_ERRORS = ("strict", "replace", "ignore")
_CHUNK_ROWS = 50_000


def input_format(path: str | os.PathLike) -> str:
    return TABULAR.get(Path(str(path)).suffix.lower(), "txt")


def check_input(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: not readable")
    return p


def check_stdin() -> None:
    """Refuse to wait on a terminal: ``-`` (the default input) with nothing piped in is a usage mistake."""
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        interactive = False
    if interactive:
        raise InputError("no input: give a text file, or pipe text into stdin (e.g. esimcse encode corpus.txt -o out.npy)")


@contextmanager
def materialize(path: str | os.PathLike | None) -> Iterator[Path]:
    """Yield a real file path; ``-``/``None`` spools stdin to a temporary file (on disk, not in memory)."""
    if path is None or str(path) == "-":
        fd, tmp = tempfile.mkstemp(prefix="esimcse-stdin-", suffix=".txt")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f, length=1 << 20)
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)
    else:
        yield check_input(path)


def decode_line(raw: bytes, where: str, lineno: int, errors: str) -> str:
    """Line ``lineno`` (1-based) of a file as text: its ``\n`` / ``\r\n`` dropped, a BOM dropped from line 1."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}:{lineno}: not valid UTF-8 at byte {exc.start} (use --encoding-errors replace to continue)") from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def check_encoding_errors(encoding_errors: str) -> str:
    if encoding_errors not in ENCODING_ERRORS:
        raise InputError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}, got '{encoding_errors}'")
    return encoding_errors


def decode_lines(fh: BinaryIO, where: str, encoding_errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` from a binary stream, split on ``\n`` only (1-based)."""
    check_encoding_errors(encoding_errors)
    for lineno, raw in enumerate(fh, start=1):
        yield lineno, decode_line(raw, where, lineno, encoding_errors)


def iter_lines(path: str | os.PathLike, encoding_errors: str = "strict", display: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of a text file (1-based); ``-`` reads stdin as it streams."""
    check_encoding_errors(encoding_errors)
    if str(path) == "-":
        yield from decode_lines(sys.stdin.buffer, display or "<stdin>", encoding_errors)
        return
    with open(check_input(path), "rb") as f:
        yield from decode_lines(f, display or str(path), encoding_errors)


def count_lines(path: str | os.PathLike) -> int:
    """Number of lines as :func:`iter_lines` yields them (a last line without ``\\n`` counts)."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (0 if last == b"\n" else 1)


def _pick_column(columns: list[str], text_column: str | None, where: str) -> str:
    if text_column is not None:
        if text_column not in columns:
            raise InputError(f"{where}: no column '{text_column}' (columns: {', '.join(map(str, columns))})")
        return text_column
    if "text" in columns:
        return "text"
    if len(columns) == 1:
        return columns[0]
    raise InputError(f"{where}: several columns ({', '.join(map(str, columns))}); choose one with --text-column")


def _frames(path: Path, fmt: str, encoding_errors: str):
    import pandas as pd

    where = str(path)
    try:
        if fmt in ("csv", "tsv"):
            reader = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                chunksize=_CHUNK_ROWS,
                encoding="utf-8",
                encoding_errors=encoding_errors,
                quoting=0 if fmt == "csv" else 3,  # QUOTE_MINIMAL for csv, QUOTE_NONE for tsv
            )
            yield from reader
        elif fmt == "jsonl":
            yield from pd.read_json(path, lines=True, chunksize=_CHUNK_ROWS, dtype=False, encoding="utf-8", encoding_errors=encoding_errors)
        elif fmt == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise InputError(f"{where}: reading parquet needs pyarrow (pip install 'esimcse-cli[parquet]')") from None
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_CHUNK_ROWS):
                yield batch.to_pandas()
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{where}: not valid UTF-8 (use --encoding-errors replace to continue)") from None
    except Exception as exc:  # pandas/pyarrow parse errors
        raise InputError(f"{where}: cannot read as {fmt}: {first_line(exc, type(exc).__name__)}") from None


def iter_texts(
    path: str | os.PathLike,
    text_column: str | None = None,
    encoding_errors: str = "strict",
    display: str | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_or_row_number, text)`` from any supported format (row numbers count the header for csv/tsv)."""
    path = Path(path)
    fmt = input_format(path)
    if fmt == "txt":
        if text_column is not None:
            raise InputError(f"{display or path}: --text-column applies to csv, tsv, jsonl and parquet files, not plain text")
        yield from iter_lines(path, encoding_errors, display)
        return
    first_row = 2 if fmt in ("csv", "tsv") else 1
    row = first_row
    column = None
    for frame in _frames(path, fmt, encoding_errors):
        names = [str(c) for c in frame.columns]  # pandas may name columns 0, 1, ... (ints)
        if column is None:
            column = _pick_column(names, text_column, display or str(path))
        if column not in names:  # a later jsonl chunk without the key
            raise InputError(f"{display or path}: row {row}: no column '{column}'")
        for value in frame[frame.columns[names.index(column)]].tolist():
            yield row, "" if value is None or (isinstance(value, float) and value != value) else str(value)
            row += 1


def count_texts(path: str | os.PathLike, text_column: str | None = None, encoding_errors: str = "strict", display: str | None = None) -> int:
    """Count rows; with ``encoding_errors="strict"`` this pass also finds any undecodable line, before work starts."""
    fmt = input_format(path)
    if fmt == "txt":
        if encoding_errors == "strict":
            return sum(1 for _ in iter_lines(path, encoding_errors, display))
        return count_lines(path)
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        except ImportError:
            raise InputError(f"{path}: reading parquet needs pyarrow (pip install 'esimcse-cli[parquet]')") from None
        except Exception as exc:
            raise InputError(f"{path}: cannot read as parquet: {first_line(exc, type(exc).__name__)}") from None
    return sum(1 for _ in iter_texts(path, text_column, encoding_errors))


class CorpusIndex:
    """Kept sentences of a corpus, spooled to disk, addressed by an offsets array."""

    def __init__(self, spool: Path, offsets, stats: dict[str, Any]):
        self.spool = spool
        self.offsets = offsets  # np.ndarray of int64 byte offsets into the spool
        self.stats = stats
        self._fh = open(spool, "rb")

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def get(self, indices: Sequence[int]) -> list[str]:
        out = []
        for i in indices:
            self._fh.seek(int(self.offsets[i]))
            out.append(self._fh.readline().rstrip(b"\n").decode("utf-8"))
        return out

    def close(self) -> None:
        self._fh.close()

    @classmethod
    def build(cls, source: str, workdir: Path, text_column: str | None = None, encoding_errors: str = "strict", dedupe: bool = False,
              stop: Callable[[], bool] | None = None) -> "CorpusIndex":
        """Spool ``source``; ``stop()`` is polled every 64k lines and, when true, raises :class:`KeyboardInterrupt`."""
        import numpy as np

        display = "<stdin>" if str(source) == "-" else str(source)
        spool = workdir / "corpus.spool.txt"
        offsets = array.array("q")
        hashes = array.array("Q") if dedupe else None
        n_lines = n_blank = 0
        sha = hashlib.sha256()
        with materialize(source) as path:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    sha.update(block)
            pos = 0
            with open(spool, "wb") as out:
                for _, text in iter_texts(path, text_column, encoding_errors, display=display):
                    n_lines += 1
                    if stop is not None and not n_lines & 0xFFFF and stop():
                        raise KeyboardInterrupt
                    if not text.strip():
                        n_blank += 1
                        continue
                    data = (text.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8")
                    if hashes is not None:
                        hashes.append(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
                    offsets.append(pos)
                    out.write(data)
                    pos += len(data)
        off = np.frombuffer(offsets, dtype=np.int64).copy()
        n_dupes = 0
        if hashes is not None and len(off):
            h = np.frombuffer(hashes, dtype=np.uint64)
            _, first = np.unique(h, return_index=True)
            keep = np.sort(first)
            n_dupes = int(len(off) - len(keep))
            off = off[keep]
        stats = {"lines": n_lines, "blank": n_blank, "duplicates": n_dupes, "sentences": int(len(off)), "sha256": sha.hexdigest(), "source": display}
        return cls(spool, off, stats)
