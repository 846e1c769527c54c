"""Word repetition (ESimCSE) and the random insertion / deletion baselines.

ESimCSE (Wu et al. 2021) builds the positive of a sentence by *repeating* a few of its tokens in place
(``t -> t t``), so that the positive pair differs in length without changing the meaning. Random
insertion and random deletion are the baselines the paper argues against; they are here so that the
comparison can be run.

The same functions serve the ``esimcse augment`` command (over token *strings*, detokenised for display)
and ``esimcse train`` (over token *ids*, see :func:`repeat_batch` / :func:`augment_batch`).

How many tokens are repeated
----------------------------
``N`` is the number of *content* tokens of the sentence (sub-word pieces without ``[CLS]``/``[SEP]`` at
``level="subword"``, whitespace-separated words at ``level="word"``) and ``r`` the rate (``--dup-rate``,
default 0.32, in ``[0, 1]``).

* ``variant="paper"`` (the default), the formula of the paper, the same at both levels:
  ``dup_len ~ Uniform{0, 1, ..., max(2, int(r*N))}`` (both ends inclusive). Because at most ``N`` distinct
  positions exist, a draw above ``N`` is clipped to ``N``; this only happens for ``N <= 2`` (or ``r`` close
  to 1, never for ``r <= 0.5`` and ``N >= 3``), where the clipped value gets the extra probability mass.
  Note that ``max(2, ...)`` means even ``r = 0`` repeats up to two tokens: that is the paper's formula.
  Positions: uniform over all ``N`` tokens.
* ``variant="official"``, the released code (caskcsg/sentemb, ``ESimCSE/train.py``, ``prepare_features``),
  which has one formula per level (its ``--dup_type bpe`` and ``--dup_type word``):

  - sub-word (``dup_type bpe``, what its ``run.sh`` trains with): ``L = N + 2`` counts the ``[CLS]`` and
    ``[SEP]`` the tokenizer added. If ``int(r*L) > 0``: ``dup_len = randrange(min(10, int(r*L)))``, i.e.
    uniform on ``{0, ..., min(10, int(r*L)) - 1}``, else 0 (and no draw is made). Positions: uniform over
    the ``N`` tokens between ``[CLS]`` and ``[SEP]`` (``sample(range(1, L-1), dup_len)``). The released code
    would crash when ``dup_len > N`` (``sample`` larger than its population; only possible at ``r = 1``
    with ``N <= 8``): here ``dup_len`` is clipped to ``N``.
  - word (``dup_type word``): ``dup_len = randrange(min(10, N, max(2, int(r*N))))``, uniform on
    ``{0, ..., min(10, N, max(2, int(r*N))) - 1}``; positions ``sample(range(0, N-1), dup_len)``, so the
    *last word is never repeated*. It never crashes for ``N >= 1`` (``dup_len <= N - 1``); ``N = 0`` gives 0.
    (The released code splits on single spaces, ``sent.split(' ')``; ``level="word"`` splits on any
    whitespace, which is the same for text with single spaces between words.)

  Both never repeat more than 9 tokens. The draws are made in the released code's order (count, then
  positions, one sentence after the other), so with the same :class:`random.Random` state the output is
  the released code's output.

:func:`repeat_support` gives the exact set of counts for ``(N, r, variant, level)``.

Insertion and deletion use the same count formula (the same ``variant``, ``level`` and rate) and the same
choice of distinct positions (so with ``official`` at word level they never touch the last word either), so
the three methods differ only in what they do at the chosen positions:

* insertion puts one new token right *after* each chosen token (what repetition does with a copy);
  the new token comes from ``insert(rng)`` (a random vocabulary token, a stop word, or the mask token);
* deletion removes the chosen tokens, but never all of them: the count is clipped to ``N - 1``.

Randomness
----------
Every function takes ``rng``: a :class:`random.Random`, an ``int`` seed, ``None`` (a fresh unseeded
generator), or a :class:`torch.Generator` (wrapped so that draws come from ``torch.randint`` /
``torch.randperm``). With a seeded generator the output is fully reproducible: nothing depends on hash
seeds or set iteration order.
"""

from __future__ import annotations

import math
import numbers
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from esimcse_cli.core import corpus
from esimcse_cli.core.errors import ConfigError, InputError, ModelLoadError

T = TypeVar("T")

METHODS = ("repetition", "insertion", "deletion")
VARIANTS = ("paper", "official")
LEVELS = ("subword", "word")
INSERT_TOKENS = ("random", "stopword", "mask")
DEFAULT_DUP_RATE = 0.32
OFFICIAL_MAX_REPEATS = 10  # the released code's cap: randrange(min(10, ...))
PAPER_MIN_UPPER = 2  # max(2, int(r*N)): the paper's formula, and the released word-level code's

# A small built-in list of common English function words, written for this project.
STOPWORDS: Tuple[str, ...] = (
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "because", "been",
    "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more",
    "most", "my", "no", "not", "now", "of", "on", "only", "or", "other", "our", "out", "over", "she", "so",
    "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "too", "under", "up", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "why", "will", "with", "would", "you", "your",
)


# ---------------------------------------------------------------------------------------------
# Random number generators
# ---------------------------------------------------------------------------------------------
class TorchRandom:
    """The subset of :class:`random.Random` used here, drawing from a :class:`torch.Generator`."""

    def __init__(self, generator):
        self.generator = generator

    def _below(self, n: int) -> int:
        import torch

        return int(torch.randint(0, n, (1,), generator=self.generator).item())

    def randrange(self, n: int) -> int:
        if n <= 0:
            raise ValueError("empty range for randrange()")
        return self._below(n)

    def randint(self, a: int, b: int) -> int:
        if b < a:
            raise ValueError("empty range for randint()")
        return a + self._below(b - a + 1)

    def random(self) -> float:
        import torch

        return float(torch.rand(1, generator=self.generator).item())

    def choice(self, seq: Sequence[T]) -> T:
        if not len(seq):
            raise IndexError("cannot choose from an empty sequence")
        return seq[self._below(len(seq))]

    def sample(self, population: Sequence[T], k: int) -> List[T]:
        import torch

        n = len(population)
        if not 0 <= k <= n:
            raise ValueError("sample larger than population or is negative")
        if k == 0:
            return []
        idx = torch.randperm(n, generator=self.generator)[:k].tolist()
        return [population[i] for i in idx]


def as_rng(rng: Any = None):
    """Normalise ``rng`` (Random, int seed, None, torch.Generator) to an object with Random's methods."""
    if rng is None:
        return random.Random()
    if isinstance(rng, (random.Random, TorchRandom)):
        return rng
    if isinstance(rng, bool):
        raise TypeError("rng must be a random.Random, an int seed, a torch.Generator or None")
    if isinstance(rng, numbers.Integral):
        return random.Random(int(rng))
    if type(rng).__name__ == "Generator" and hasattr(rng, "manual_seed"):
        return TorchRandom(rng)
    raise TypeError(f"rng must be a random.Random, an int seed, a torch.Generator or None, not {type(rng).__name__}")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def check_rate(rate: float, name: str = "--dup-rate") -> float:
    """Return ``rate`` as a float in [0, 1], or raise a one-line :class:`ConfigError`."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1], got {rate!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {rate}")
    return value


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_options(
    method: str = "repetition",
    level: str = "subword",
    variant: str = "paper",
    insert_token: str = "random",
    dup_rate: float = DEFAULT_DUP_RATE,
) -> None:
    """Validate the ``augment`` options up front (before any model is loaded); one-line ConfigError."""
    _check_choice(method, METHODS, "--method")
    _check_choice(level, LEVELS, "--level")
    _check_choice(variant, VARIANTS, "--variant")
    _check_choice(insert_token, INSERT_TOKENS, "--insert-token")
    check_rate(dup_rate)


def needs_tokenizer(method: str, level: str, insert_token: str) -> bool:
    """Whether text-level augmentation with these options needs the model's tokenizer."""
    return level == "subword" or (method == "insertion" and insert_token == "random")


# ---------------------------------------------------------------------------------------------
# How many
# ---------------------------------------------------------------------------------------------
def _check_variant(variant: str) -> str:
    return _check_choice(variant, VARIANTS, "--variant")


def _check_level(level: str) -> str:
    return _check_choice(level, LEVELS, "--level")


def _official_subword_bound(n: int, dup_rate: float) -> int:
    """``int(r*L)`` of the released sub-word code, with ``L = n + 2`` (its length counts [CLS] and [SEP]).

    caskcsg/sentemb ``ESimCSE/train.py``, ``prepare_features``, ``dup_type == "bpe"``.
    """
    return int(dup_rate * (n + 2))


def _official_word_bound(n: int, dup_rate: float) -> int:
    """The argument of the released word-level ``randrange`` (``dup_type == "word"``): ``min(10, n, max(2, int(r*n)))``."""
    return min(OFFICIAL_MAX_REPEATS, n, max(PAPER_MIN_UPPER, int(dup_rate * n)))


def repeat_support(n: int, dup_rate: float = DEFAULT_DUP_RATE, variant: str = "paper", level: str = "subword") -> range:
    """Exactly the values :func:`repeat_count` can return for a sentence of ``n`` content tokens.

    ``paper`` (both levels): ``0 .. min(n, max(2, int(r*n)))``. ``official`` sub-word: ``0 .. min(n,
    min(10, int(r*(n+2))) - 1)``, only ``0`` when ``int(r*(n+2)) == 0``. ``official`` word:
    ``0 .. min(10, n, max(2, int(r*n))) - 1``. Always ``{0}`` for ``n <= 0``.
    """
    _check_variant(variant)
    _check_level(level)
    if n <= 0:
        return range(0, 1)
    if variant == "paper":
        return range(0, min(max(PAPER_MIN_UPPER, int(dup_rate * n)), n) + 1)
    if level == "subword":
        t = _official_subword_bound(n, dup_rate)
        return range(0, 1) if t <= 0 else range(0, min(min(OFFICIAL_MAX_REPEATS, t) - 1, n) + 1)
    return range(0, _official_word_bound(n, dup_rate))


def repeat_count(
    n: int, dup_rate: float = DEFAULT_DUP_RATE, variant: str = "paper", rng: Any = None, level: str = "subword"
) -> int:
    """Draw how many of the ``n`` content tokens of a sentence to repeat (see the module docstring).

    ``paper``: ``randint(0, max(2, int(r*n)))`` clipped to ``n`` (no draw for ``n <= 0``).
    ``official``, ``level="subword"``: ``randrange(min(10, int(r*(n+2))))`` when ``int(r*(n+2)) > 0``, else 0
    without a draw, clipped to ``n`` (where the released code would crash).
    ``official``, ``level="word"``: ``randrange(min(10, n, max(2, int(r*n))))``, 0 without a draw for ``n <= 0``.
    """
    rng = as_rng(rng)
    _check_variant(variant)  # also for n == 0, so that a typo fails on the first (possibly empty) line
    _check_level(level)
    if variant == "paper":
        if n <= 0:
            return 0
        return min(rng.randint(0, max(PAPER_MIN_UPPER, int(dup_rate * n))), n)
    if level == "subword":
        t = _official_subword_bound(max(n, 0), dup_rate)
        if t <= 0:
            return 0
        # Drawn even for n == 0 (L == 2, r >= 0.5), as the released code draws; then clipped to 0.
        return min(rng.randrange(min(OFFICIAL_MAX_REPEATS, t)), max(n, 0))
    if n <= 0:
        return 0
    return rng.randrange(_official_word_bound(n, dup_rate))  # <= n - 1: fits its n - 1 positions


def repeat_population(n: int, variant: str = "paper", level: str = "subword") -> int:
    """How many of the ``n`` content tokens can be chosen: ``n``, except ``n - 1`` for ``official`` at word level.

    The released word-level code draws positions with ``sample(range(0, n-1), k)``, so its last word is never
    repeated (caskcsg/sentemb ``ESimCSE/train.py``, ``prepare_features``, ``dup_type == "word"``).
    """
    if variant == "official" and level == "word":
        return max(0, n - 1)
    return max(0, n)


def _choose_positions(population: int, k: int, rng) -> List[int]:
    """``k`` sorted distinct indices out of ``range(population)`` (one ``sample`` call, none for ``k == 0``)."""
    if k <= 0 or population <= 0:
        return []
    return sorted(rng.sample(range(population), k))


def word_repetition_positions(
    n: int, dup_rate: float = DEFAULT_DUP_RATE, variant: str = "paper", rng: Any = None, level: str = "subword"
) -> List[int]:
    """Sorted distinct indices (into a sequence of ``n`` tokens) whose tokens get repeated."""
    rng = as_rng(rng)
    k = repeat_count(n, dup_rate, variant, rng, level)
    return _choose_positions(repeat_population(n, variant, level), k, rng)


# ---------------------------------------------------------------------------------------------
# What to do at the chosen positions
# ---------------------------------------------------------------------------------------------
def apply_repetition(tokens: Sequence[T], positions: Sequence[int]) -> List[T]:
    """Repeat ``tokens[p]`` once in place for each ``p`` in sorted ``positions``."""
    out: List[T] = []
    j, m = 0, len(positions)
    for i, tok in enumerate(tokens):
        out.append(tok)
        if j < m and positions[j] == i:
            out.append(tok)
            j += 1
    return out


def apply_insertion(tokens: Sequence[T], positions: Sequence[int], new_tokens: Sequence[T]) -> List[T]:
    """Insert ``new_tokens[j]`` right after ``tokens[positions[j]]`` (positions sorted)."""
    out: List[T] = []
    j, m = 0, len(positions)
    for i, tok in enumerate(tokens):
        out.append(tok)
        if j < m and positions[j] == i:
            out.append(new_tokens[j])
            j += 1
    return out


def apply_deletion(tokens: Sequence[T], positions: Sequence[int]) -> List[T]:
    """Drop the tokens at ``positions``."""
    drop = set(positions)
    return [tok for i, tok in enumerate(tokens) if i not in drop]


def added_marks(n_in: int, positions: Sequence[int]) -> List[bool]:
    """For repetition/insertion output of length ``n_in + len(positions)``: True where a token was added."""
    marks = [False] * (n_in + len(positions))
    for j, p in enumerate(positions):
        marks[p + j + 1] = True
    return marks


def word_repetition(
    tokens: Sequence[T],
    dup_rate: float = DEFAULT_DUP_RATE,
    variant: str = "paper",
    rng: Any = None,
    return_positions: bool = False,
    level: str = "subword",
):
    """ESimCSE word repetition of a token sequence (ids or strings), all of it content (no [CLS]/[SEP]).

    ``level`` picks the ``official`` formula (``subword``: ``L = len(tokens) + 2``; ``word``: the
    word-level formula, last word never repeated); ``paper`` is the same at both levels.
    Returns the new list, or ``(new_list, positions)`` with ``return_positions=True`` where
    ``positions`` are the sorted indices of ``tokens`` that were repeated.
    """
    positions = word_repetition_positions(len(tokens), dup_rate, variant, rng, level)
    out = apply_repetition(tokens, positions)
    return (out, positions) if return_positions else out


def random_insertion(
    tokens: Sequence[T],
    rate: float = DEFAULT_DUP_RATE,
    insert: Optional[Callable[[Any], T]] = None,
    rng: Any = None,
    variant: str = "paper",
    return_positions: bool = False,
    level: str = "subword",
):
    """Insert ``repeat_count(len(tokens), rate, variant, level=level)`` new tokens, each right after a distinct
    token chosen as repetition chooses them (:func:`word_repetition_positions`).

    ``insert(rng)`` returns one new token (it receives the generator, a ``random.Random`` or
    :class:`TorchRandom`). With ``return_positions`` also returns the chosen source positions; the
    inserted tokens sit at ``p + j + 1`` in the output (see :func:`added_marks`).
    """
    if insert is None:
        raise ValueError("random_insertion needs insert=callable(rng) -> token")
    rng = as_rng(rng)
    positions = word_repetition_positions(len(tokens), rate, variant, rng, level)
    new = [insert(rng) for _ in positions]
    out = apply_insertion(tokens, positions, new)
    return (out, positions) if return_positions else out


def random_deletion(
    tokens: Sequence[T],
    rate: float = DEFAULT_DUP_RATE,
    rng: Any = None,
    variant: str = "paper",
    return_positions: bool = False,
    level: str = "subword",
):
    """Delete ``min(repeat_count(len(tokens), rate, variant, level=level), len(tokens) - 1)`` distinct tokens,
    chosen as repetition chooses them.

    At least one token always survives (an empty input stays empty).
    """
    rng = as_rng(rng)
    n = len(tokens)
    k = min(repeat_count(n, rate, variant, rng, level), max(0, n - 1))
    positions = _choose_positions(repeat_population(n, variant, level), k, rng)
    out = apply_deletion(tokens, positions)
    return (out, positions) if return_positions else out


# ---------------------------------------------------------------------------------------------
# Batches of token ids (training)
# ---------------------------------------------------------------------------------------------
def content_positions(ids: Sequence[int], special_ids: Optional[Iterable[int]] = None, variant: str = "paper") -> List[int]:
    """The indices of ``ids`` that :func:`augment_batch` may choose; their number is the ``N`` of the count.

    ``paper``: every index whose id is not in ``special_ids``. ``official``: every index except a special
    token at the start and one at the end (the released code's ``range(1, L-1)``). Without ``special_ids``:
    every index. A caller bounding the added length uses ``max(repeat_support(len(content_positions(...)),
    rate, variant))``.
    """
    _check_variant(variant)
    if special_ids is None:
        return list(range(len(ids)))
    specials = special_ids if isinstance(special_ids, (set, frozenset)) else frozenset(int(i) for i in special_ids)
    if variant == "official":
        lo = 1 if ids and ids[0] in specials else 0
        hi = len(ids) - 1 if len(ids) > lo and ids[-1] in specials else len(ids)
        return list(range(lo, hi))
    return [i for i, t in enumerate(ids) if t not in specials]


def augment_batch(
    id_lists: Sequence[Sequence[int]],
    method: str = "repetition",
    rate: float = DEFAULT_DUP_RATE,
    variant: str = "paper",
    rng: Any = None,
    special_ids: Optional[Iterable[int]] = None,
    insert: Optional[Callable[[Any], int]] = None,
) -> List[List[int]]:
    """Augment each id list of a batch independently with one generator, in batch order.

    The count is the sub-word formula of ``variant`` (:func:`repeat_count` with ``level="subword"``) over
    ``N = len(content_positions(ids, special_ids, variant))``, and the positions are drawn among those:

    * ``paper``: tokens whose id is in ``special_ids`` (e.g. ``{cls_id, sep_id, pad_id}``) are never chosen
      and do not count in ``N``, so ``[CLS] a b c [SEP]`` has ``N = 3`` and keeps its ``[CLS]``/``[SEP]``.
    * ``official``: as the released code (caskcsg/sentemb ``ESimCSE/train.py``, ``prepare_features``,
      ``dup_type == "bpe"``: ``sample(range(1, L-1), ...)``), only the special token at each *end* is left
      out; so ``L = N + 2`` is the length of a tokenizer's ``[CLS] ... [SEP]`` list, and a special token
      inside the sentence (an ``[UNK]``) counts and may be repeated, as there.

    Without ``special_ids`` every position counts. With a :class:`random.Random` the draws are the
    released code's (count, then positions, sentence after sentence), so the same generator state gives
    its output. Padding should be stripped before the call; the result is longer (repetition, insertion)
    or shorter (deletion) and the caller re-pads / truncates.
    """
    _check_choice(method, METHODS, "method")
    rng = as_rng(rng)
    if method == "insertion" and insert is None:
        raise ValueError("augment_batch(method='insertion') needs insert=callable(rng) -> id")
    specials = frozenset(int(i) for i in special_ids) if special_ids is not None else None
    out: List[List[int]] = []
    for ids in id_lists:
        ids = list(ids)
        eligible = content_positions(ids, specials, variant)
        n = len(eligible)
        k = repeat_count(n, rate, variant, rng, "subword")
        if method == "deletion":
            k = min(k, max(0, n - 1))
        chosen = [eligible[c] for c in _choose_positions(n, k, rng)]
        if method == "repetition":
            out.append(apply_repetition(ids, chosen))
        elif method == "insertion":
            out.append(apply_insertion(ids, chosen, [insert(rng) for _ in chosen]))
        else:
            out.append(apply_deletion(ids, chosen))
    return out


def repeat_batch(
    id_lists: Sequence[Sequence[int]],
    dup_rate: float = DEFAULT_DUP_RATE,
    variant: str = "paper",
    rng: Any = None,
    special_ids: Optional[Iterable[int]] = None,
) -> List[List[int]]:
    """ESimCSE word repetition over a batch of token-id lists (see :func:`augment_batch`)."""
    return augment_batch(id_lists, "repetition", dup_rate, variant, rng, special_ids)


# ---------------------------------------------------------------------------------------------
# What insertion inserts
# ---------------------------------------------------------------------------------------------
def _is_bracketed(tok: str) -> bool:
    return (tok.startswith("[") and tok.endswith("]")) or (tok.startswith("<") and tok.endswith(">"))


def insertion_vocab(tokenizer, level: str = "subword", as_ids: bool = False) -> list:
    """Candidate tokens for ``--insert-token random``, in vocabulary-id order (deterministic).

    Sub-word level: every vocabulary entry except special tokens, bracketed entries such as ``[unused0]``
    or ``<s>``, and WordPiece continuation pieces (``##...``). Word level: of those, only alphabetic
    entries (stripped of a leading ``▁``/``Ġ`` word marker), so that a whole word is inserted.
    """
    vocab = tokenizer.get_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    items = sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]))
    out = []
    for tok, idx in items:
        if tok in specials or tok.startswith("##") or _is_bracketed(tok) or not tok.strip():
            continue
        if level == "word":
            word = tok.lstrip("\u2581\u0120")
            if not word.isalpha():
                continue
            out.append(idx if as_ids else word)
        else:
            out.append(idx if as_ids else tok)
    return out


def make_inserter(insert_token: str, tokenizer=None, level: str = "subword", as_ids: bool = False) -> Callable[[Any], Any]:
    """Return ``insert(rng) -> token`` for ``--insert-token random|stopword|mask``.

    ``stopword`` draws from :data:`STOPWORDS`; at sub-word level only the stop words that are a single
    vocabulary token are used. ``mask`` is ``tokenizer.mask_token`` (``[MASK]`` at word level without a tokenizer).
    """
    _check_choice(insert_token, INSERT_TOKENS, "--insert-token")
    need_tok = as_ids or level == "subword" or insert_token == "random"
    if need_tok and tokenizer is None:
        raise ConfigError(f"--insert-token {insert_token} at {level} level needs a tokenizer")
    if insert_token == "mask":
        tok = getattr(tokenizer, "mask_token", None) if tokenizer is not None else "[MASK]"
        if tok is None:
            raise ConfigError("--insert-token mask: this tokenizer has no mask token")
        value = tokenizer.convert_tokens_to_ids(tok) if as_ids else tok
        return lambda rng: value
    if insert_token == "stopword":
        if level == "word" and not as_ids:
            pool: list = list(STOPWORDS)
        else:
            vocab = tokenizer.get_vocab()
            pool = []
            for word in STOPWORDS:
                pieces = tokenizer.tokenize(word)
                if len(pieces) == 1 and pieces[0] in vocab:
                    pool.append(vocab[pieces[0]] if as_ids else pieces[0])
            if not pool:
                raise ConfigError("--insert-token stopword: no stop word is a single token of this tokenizer")
    else:
        pool = insertion_vocab(tokenizer, "subword" if as_ids else level, as_ids=as_ids)
        if not pool:
            raise ConfigError("--insert-token random: the tokenizer vocabulary has no usable tokens")
    return lambda rng: rng.choice(pool)


# ---------------------------------------------------------------------------------------------
# Text level
# ---------------------------------------------------------------------------------------------
def load_tokenizer(spec: Optional[str] = None, trust_remote_code: bool = False):
    """Load only the tokenizer of ``--model`` (default: the bundled model); see :func:`models.load_tokenizer`."""
    from esimcse_cli.core.models import load_tokenizer as _load

    return _load(spec, trust_remote_code=trust_remote_code)


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


class Augmenter:
    """Text-level augmentation with one seeded generator; see :func:`augment_texts`."""

    def __init__(
        self,
        tokenizer=None,
        method: str = "repetition",
        level: str = "subword",
        dup_rate: float = DEFAULT_DUP_RATE,
        variant: str = "paper",
        insert_token: str = "random",
        seed: Any = None,
    ):
        self.method = _check_choice(method, METHODS, "--method")
        self.level = _check_choice(level, LEVELS, "--level")
        self.variant = _check_choice(variant, VARIANTS, "--variant")
        self.insert_token = _check_choice(insert_token, INSERT_TOKENS, "--insert-token")
        self.dup_rate = check_rate(dup_rate)
        if level == "subword" and tokenizer is None:
            raise ConfigError("--level subword needs a tokenizer (or use --level word)")
        self.tokenizer = tokenizer
        self.rng = as_rng(seed)
        self.insert = make_inserter(insert_token, tokenizer, level) if method == "insertion" else None

    def tokenize(self, text: str) -> List[str]:
        if self.level == "word":
            return text.split()
        return list(self.tokenizer.tokenize(text))

    def detokenize(self, tokens: Sequence[str]) -> str:
        if self.level == "word":
            return " ".join(tokens)
        if not tokens:
            return ""
        return self.tokenizer.convert_tokens_to_string(list(tokens))

    def tokenize_many(self, texts: Sequence[str]) -> List[List[str]]:
        """``[self.tokenize(t) for t in texts]``, in one call to a fast tokenizer where there is one."""
        if self.level == "word" or not texts:
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
        """Augment one line; ``tokens`` may carry its (already computed) tokenisation."""
        text = text.rstrip("\r\n")
        if not text.strip():
            return AugmentRecord(original=text, augmented="")
        toks = self.tokenize(text) if tokens is None else tokens
        n = len(toks)
        removed = [False] * n
        if self.method == "repetition":
            new, pos = word_repetition(toks, self.dup_rate, self.variant, self.rng, return_positions=True, level=self.level)
            added = added_marks(n, pos)
        elif self.method == "insertion":
            new, pos = random_insertion(toks, self.dup_rate, self.insert, self.rng, self.variant, return_positions=True,
                                        level=self.level)
            added = added_marks(n, pos)
        else:
            new, pos = random_deletion(toks, self.dup_rate, self.rng, self.variant, return_positions=True, level=self.level)
            added = [False] * len(new)
            for p in pos:
                removed[p] = True
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
        if self.level == "word":
            segs: List[Tuple[str, bool]] = []
            for i, (tok, mark) in enumerate(zip(tokens, marks)):
                segs.append(((" " if i else "") + tok, bool(mark)))
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


def augment_texts(
    texts: Iterable[str],
    tokenizer=None,
    method: str = "repetition",
    level: str = "subword",
    dup_rate: float = DEFAULT_DUP_RATE,
    variant: str = "paper",
    insert_token: str = "random",
    seed: Any = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Iterator[str]:
    """Stream one augmented line per input text (a blank line gives a blank line).

    Sub-word level tokenises with ``tokenizer.tokenize`` and detokenises with
    ``convert_tokens_to_string`` (an uncased tokenizer therefore lower-cases the text); word level splits
    on whitespace and joins with single spaces. One generator seeded with ``seed`` runs through the stream
    in order, so the same seed and input give the same output on every run.
    """
    aug = Augmenter(tokenizer, method, level, dup_rate, variant, insert_token, seed)
    for rec in aug.records(texts, progress):
        yield rec.augmented


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------
def read_lines(source: str | os.PathLike, encoding_errors: str = "strict") -> Iterator[str]:
    """Stream the lines of a UTF-8 file (``-`` = stdin, read as it arrives) without their line ends.

    A line that is not valid UTF-8 raises :class:`InputError` naming ``file:line``, unless
    ``encoding_errors`` is ``replace`` (U+FFFD) or ``ignore`` (CLI ``--encoding-errors``).
    """
    for _, text in corpus.iter_lines(source, encoding_errors):
        yield text


def check_input_path(source: str | os.PathLike) -> None:
    """Fail early, with one line, on an input file that is missing or a folder (``-`` is stdin)."""
    if str(source) == "-":
        corpus.check_stdin()
    else:
        corpus.check_input(source)


def check_input_text(source: str | os.PathLike, encoding_errors: str = "strict") -> int:
    """Read a file once, before any output: its line count, or a ``file:line`` error for bytes that are not UTF-8.

    ``-`` (stdin) cannot be read twice and returns -1 without reading.
    """
    if str(source) == "-":
        return -1
    return sum(1 for _ in read_lines(source, encoding_errors=encoding_errors))


def count_lines(path: str | os.PathLike) -> Optional[int]:
    """Number of lines of a file (cheap, binary), or None for stdin / unreadable."""
    if str(path) == "-":
        return None
    try:
        return corpus.count_lines(path)
    except OSError:
        return None
