"""``augment`` as a function: lines of text in, one augmented line out per line in.

Data flow: a text file or stdin → :func:`corpus.iter_lines` → :class:`Augmenter` (tokenise a chunk of lines,
:func:`augment.augment_ids` on each line's tokens, detokenise) → :func:`augment_file` writes the lines out in
chunks, to ``-o`` atomically or to stdout (:func:`atomic.write_stdout`), and keeps the first records for ``--show``, whose highlighted runs
:meth:`Augmenter.display_segments` gives. The algorithm itself is :mod:`esimcse_cli.core.augment`.

Sub-word level tokenises with ``tokenizer.tokenize`` and detokenises with ``convert_tokens_to_string`` (an
uncased tokenizer therefore lower-cases the text); word level splits on whitespace and joins with single
spaces; char level (text without spaces, such as Chinese) takes every character as a token and joins them
back as they were, where only the non-space characters may be chosen, so spaces stay in place. One generator seeded with ``seed`` runs through the stream in order, so the same seed and input give
the same output on every run.
"""

from __future__ import annotations

import os
import random
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from esimcse_cli.core import corpus, segment
from esimcse_cli.core.atomic import atomic_path, check_output_path, write_stdout
from esimcse_cli.core.augment import DEFAULT_DUP_RATE, added_marks, augment_ids, check_options, make_inserter
from esimcse_cli.core.errors import ConfigError, InputError

WRITE_LINES = 512  # lines per write: few system calls, and a reader (`| head`) still sees output early

Progress = Callable[[int], AbstractContextManager]


def needs_tokenizer(method: str, level: str, insert_token: str) -> bool:
    """Whether text-level augmentation with these options needs the model's tokenizer."""
    return level == "subword" or (method == "insertion" and insert_token == "random")


@dataclass
class AugmentRecord:
    """One augmented line, with the token-level detail the ``--show`` table highlights."""

    original: str
    augmented: str
    tokens: List[str] = field(default_factory=list)       # the original's tokens
    removed: List[bool] = field(default_factory=list)     # per original token: deleted (deletion only)
    new_tokens: List[str] = field(default_factory=list)   # the augmented tokens
    added: List[bool] = field(default_factory=list)       # per augmented token: a copy / an inserted token

    @property
    def n_changed(self) -> int:
        return sum(self.added) + sum(self.removed)


# Everything str.splitlines() treats as a line break: an output line never contains one.
_LINE_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _marks(n_in: int, n_out: int, positions: Sequence[int]) -> Tuple[List[bool], List[bool]]:
    """``(removed, added)``: per input token, deleted; per output token, added.

    Only deletion shortens a sentence, so the lengths tell which of the two the positions mark.
    """
    if n_out < n_in:
        removed = [False] * n_in
        for p in positions:
            removed[p] = True
        return removed, [False] * n_out
    return [False] * n_in, added_marks(n_in, positions)


class Augmenter:
    """Text-level augmentation with one generator: ``seed`` (an int) seeds a :class:`random.Random`, or a
    :class:`random.Random` is drawn from as it is (a caller that holds its state)."""

    def __init__(
        self,
        tokenizer=None,
        method: str = "repetition",
        level: str = "subword",
        dup_rate: float = DEFAULT_DUP_RATE,
        variant: str = "paper",
        insert_token: str = "random",
        seed: Union[int, random.Random, None] = None,
        segmenter: str = "whitespace",
    ):
        check_options(method, level, variant, insert_token, dup_rate)
        segment.check_segmenter(segmenter, level)
        self.method, self.level, self.variant, self.insert_token = method, level, variant, insert_token
        self.segmenter = segmenter
        self._split, self._join = segment.segment_fn(segmenter), segment.join_fn(segmenter)
        self.dup_rate = float(dup_rate)
        if level == "subword" and tokenizer is None:
            raise ConfigError("--level subword needs a tokenizer (or use --level word)")
        self.tokenizer = tokenizer
        self.rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        self.insert = make_inserter(insert_token, tokenizer, level) if method == "insertion" else None

    def tokenize(self, text: str) -> List[str]:
        if self.level == "word":
            return self._split(text)
        if self.level == "char":
            return list(text)  # spaces too: joining the tokens gives the line back as it was
        return list(self.tokenizer.tokenize(text))

    def detokenize(self, tokens: Sequence[str]) -> str:
        if self.level == "word":
            return self._join(list(tokens))
        if self.level == "char":
            return "".join(tokens)
        if not tokens:
            return ""
        return self.tokenizer.convert_tokens_to_string(list(tokens))

    def tokenize_many(self, texts: Sequence[str]) -> List[List[str]]:
        """``[self.tokenize(t) for t in texts]``, in one call to a fast tokenizer where there is one."""
        if self.level != "subword" or not texts:
            return [self.tokenize(t) for t in texts]
        tok = self.tokenizer
        if getattr(tok, "is_fast", False):
            try:
                enc = tok(list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False)
                return [list(enc.tokens(i)) for i in range(len(texts))]
            except Exception:  # any oddity of a tokenizer: fall back to the one-by-one path
                pass
        return [self.tokenize(t) for t in texts]

    def record(self, text: str, tokens: Optional[List[str]] = None) -> AugmentRecord:
        """Augment one line; ``tokens`` may carry its (already computed) tokenisation. A blank line stays blank."""
        text = text.rstrip("\r\n")
        if not text.strip():
            return AugmentRecord(original=text, augmented="")
        toks = self.tokenize(text) if tokens is None else tokens
        # At char level (and from jieba) a space is kept as a token but is never chosen, nor counted in N.
        spaced = self.level == "char" or self.segmenter == "jieba"
        content = [i for i, t in enumerate(toks) if not t.isspace()] if spaced else None
        new, pos = augment_ids(toks, self.method, self.dup_rate, self.variant, self.rng, level=self.level, content=content,
                               insert=self.insert)
        removed, added = _marks(len(toks), len(new), pos)
        return AugmentRecord(text, _one_line(self.detokenize(new)), toks, removed, new, added)

    def records(
        self, texts: Iterable[str], progress: Optional[Callable[[int], None]] = None, chunk: int = 256
    ) -> Iterator[AugmentRecord]:
        """Stream records in input order. Lines are tokenised ``chunk`` at a time (a fast tokenizer's batch
        call is several times quicker than one call per line), so output trails input by up to ``chunk`` lines."""
        buf: List[str] = []
        for text in texts:
            buf.append(text.rstrip("\r\n"))
            if len(buf) >= chunk:
                yield from self._flush(buf, progress)
                buf = []
        if buf:
            yield from self._flush(buf, progress)

    def _flush(self, lines: List[str], progress) -> Iterator[AugmentRecord]:
        idx = [i for i, t in enumerate(lines) if t.strip()]
        toks = dict(zip(idx, self.tokenize_many([lines[i] for i in idx])))
        for i, text in enumerate(lines):
            yield self.record(text, toks.get(i))
        if progress is not None:
            progress(len(lines))

    def display_segments(self, tokens: Sequence[str], marks: Sequence[bool]) -> List[Tuple[str, bool]]:
        """Split the detokenised text of ``tokens`` into ``(text, marked)`` runs, for highlighting.

        Works by detokenising growing prefixes; where a tokenizer's output is not prefix-stable it falls
        back to the tokens joined by spaces. Quadratic in the length: meant for the few lines ``--show`` prints.
        """
        if self.level == "char":
            return _merge([(tok, bool(mark)) for tok, mark in zip(tokens, marks)])
        if self.level == "word":
            segs: List[Tuple[str, bool]] = []
            sep = "" if self.segmenter == "jieba" else " "
            for i, (tok, mark) in enumerate(zip(tokens, marks)):
                segs.append(((sep if i else "") + tok, bool(mark)))
            return _merge(segs)
        prev = ""
        segs = []
        for i, mark in enumerate(marks):
            cur = self.detokenize(tokens[: i + 1])
            if not cur.startswith(prev):
                return _merge([((" " if j else "") + t, bool(m)) for j, (t, m) in enumerate(zip(tokens, marks))])
            piece = cur[len(prev):]
            if mark and piece.startswith(" "):
                segs.append((" ", False))
                piece = piece[1:]
            segs.append((piece, bool(mark)))
            prev = cur
        return _merge(segs)


def _merge(segs: List[Tuple[str, bool]]) -> List[Tuple[str, bool]]:
    out: List[Tuple[str, bool]] = []
    for text, mark in segs:
        if out and out[-1][1] == mark:
            out[-1] = (out[-1][0] + text, mark)
        elif text:
            out.append((text, mark))
    return out


# ---------------------------------------------------------------------------------------------
# A file (or stdin) in, a file (or stdout) out
# ---------------------------------------------------------------------------------------------
@dataclass
class AugmentResult:
    """What :func:`augment_file` did."""

    output: Optional[str] = None  # the file written; None: the lines went to stdout
    lines: int = 0
    changed: int = 0  # tokens repeated, inserted or deleted, over all lines
    shown: List[AugmentRecord] = field(default_factory=list)  # the first ``show_limit`` records
    reader_gone: bool = False  # stdout was closed before the end (`| head`): not an error, print nothing more


def check_augment_args(
    source: Union[str, os.PathLike],
    output: Union[str, os.PathLike, None] = None,
    *,
    method: str = "repetition",
    level: str = "subword",
    variant: str = "paper",
    insert_token: str = "random",
    dup_rate: float = DEFAULT_DUP_RATE,
    show_limit: int = 0,
    encoding_errors: str = "strict",
    segmenter: str = "whitespace",
) -> None:
    """Refuse bad arguments before any tokenizer is loaded; one-line errors.

    Output to stdout cannot be taken back, so there a file is read through once here: a byte that is not
    UTF-8 fails before the first line goes out (stdin cannot be read twice; there, it fails where it is met).
    """
    check_options(method, level, variant, insert_token, dup_rate)
    segment.check_segmenter(segmenter, level)
    if show_limit < 0:
        raise ConfigError(f"--show-limit must be 0 or more, got {show_limit}")
    _check_paths(source, output)
    corpus.check_encoding_errors(encoding_errors)
    if not _to_file(output) and str(source) != "-":
        for _ in corpus.iter_lines(source, encoding_errors):
            pass


def _check_paths(source: Union[str, os.PathLike], output: Union[str, os.PathLike, None]) -> None:
    if str(source) == "-":
        corpus.check_stdin()
    else:
        corpus.check_input(source)
    if _to_file(output):
        check_output_path(output)
        if str(source) != "-" and Path(output).exists() and os.path.samefile(source, output):
            raise InputError(f"{output}: is also the input file; writing there would destroy it (choose another -o)")


def _to_file(output: Union[str, os.PathLike, None]) -> bool:
    return output is not None and str(output) != "-"


def augment_file(
    augmenter: Augmenter,
    source: Union[str, os.PathLike],
    output: Union[str, os.PathLike, None] = None,
    *,
    encoding_errors: str = "strict",
    show_limit: int = 0,
    progress: Optional[Progress] = None,
) -> AugmentResult:
    """Augment every line of ``source`` (a path, or ``-`` for stdin) into ``output`` (a path, replaced
    atomically; ``None`` or ``-``: stdout), one line out per line in, in order.

    ``progress(total)``, given a file's line count (not for stdin: it cannot be counted ahead), returns a
    context manager that yields ``advance(n)`` (or None). It is entered around the writing, so that an error,
    or a reader that went away, ends it there. Counting costs a pass over the file: pass it only to show it.
    A reader that closes stdout early (``esimcse augment big.txt | head``) ends the run quietly, with
    ``reader_gone`` set. To stdout, lines go out as they are made: :func:`check_augment_args` first finds a
    file's undecodable bytes, before anything is written.
    """
    _check_paths(source, output)
    result = AugmentResult(output=str(output) if _to_file(output) else None)

    def run(write: Callable[[str], object]) -> None:
        with _bar(progress, source) as advance:
            texts = (text for _, text in corpus.iter_lines(source, encoding_errors))
            _write_lines(augmenter.records(texts, progress=advance), write, result, show_limit)
            if result.lines == 0:
                raise InputError(f"{'<stdin>' if str(source) == '-' else source}: no lines (the input is empty); nothing to augment")

    if _to_file(output):
        with atomic_path(output) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                run(fh.write)
        return result
    result.reader_gone = not write_stdout(run)
    return result


def _bar(progress: Optional[Progress], source) -> AbstractContextManager:
    if progress is None or str(source) == "-":
        return nullcontext(None)
    try:
        total = corpus.count_lines(source)
    except OSError:  # unreadable now: no bar, and reading it says why
        return nullcontext(None)
    return progress(total)


def _write_lines(records: Iterable[AugmentRecord], write: Callable[[str], object], result: AugmentResult, show_limit: int) -> None:
    """Write each record's line, ``WRITE_LINES`` at a time; count them and keep the first ``show_limit``."""
    chunk: List[str] = []
    for rec in records:
        result.lines += 1
        result.changed += rec.n_changed
        if len(result.shown) < show_limit:
            result.shown.append(rec)
        chunk.append(rec.augmented)
        if len(chunk) >= WRITE_LINES:
            write("\n".join(chunk) + "\n")
            chunk = []
    if chunk:
        write("\n".join(chunk) + "\n")
