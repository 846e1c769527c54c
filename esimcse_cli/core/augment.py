"""Word repetition (ESimCSE) and the random insertion / deletion baselines, on any token sequence.

Data flow, for one sentence: its tokens (ids in training, words or sub-word strings for ``esimcse augment``)
→ ``N`` content positions (:func:`content_positions`) → how many to change (:func:`repeat_count`) → which ones
(distinct, uniform) → repeat / insert after / delete them → ``(out, positions)``. :func:`augment_ids` is that
whole path, and the one place that branches on the method; :func:`augment_batch` runs it over a training
batch with one generator. The line-in/line-out text tool around it is :mod:`esimcse_cli.core.augment_text`.

ESimCSE (Wu et al. 2021) builds the positive of a sentence by *repeating* a few of its tokens in place
(``t -> t t``), so that the positive pair differs in length without changing the meaning. Random
insertion and random deletion are the baselines the paper argues against; they are here so that the
comparison can be run.

How many tokens are repeated
----------------------------
``N`` is the number of *content* tokens of the sentence (sub-word pieces without ``[CLS]``/``[SEP]`` at
``level="subword"``, whitespace-separated words at ``level="word"``, non-space characters at ``level="char"``,
for text without spaces such as Chinese) and ``r`` the rate (``--dup-rate``, default 0.32, in ``[0, 1]``).

* ``variant="paper"`` (the default), the formula of the paper, the same at every level:
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

  - char: the released code has no character level, so ``official`` with ``level="char"`` is refused
    (:class:`ConfigError`) rather than given a made-up formula.

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
Every draw comes from the :class:`random.Random` passed in as ``rng``, in a fixed order (count, positions,
then the inserted tokens). With a seeded generator the output is fully reproducible: nothing depends on hash
seeds or set iteration order.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, TypeVar

from esimcse_cli.core.errors import ConfigError
from esimcse_cli.core.variants import VARIANTS

T = TypeVar("T")

METHODS = ("repetition", "insertion", "deletion")
LEVELS = ("subword", "word", "char")
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
# Its counterpart at character level: common Chinese function characters, written for this project.
CHAR_STOPWORDS: Tuple[str, ...] = ("的", "了", "是", "在", "和", "也", "就", "都", "而", "与", "着", "把", "被", "吧", "呢", "吗", "啊")


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
    """Validate the augmentation options up front (before any model is loaded); one-line ConfigError."""
    _check_choice(method, METHODS, "--method")
    _check_choice(level, LEVELS, "--level")
    _check_choice(variant, VARIANTS, "--variant")
    _check_choice(insert_token, INSERT_TOKENS, "--insert-token")
    _check_level_variant(level, variant)
    check_rate(dup_rate)


# ---------------------------------------------------------------------------------------------
# How many
# ---------------------------------------------------------------------------------------------
def _check_variant(variant: str) -> str:
    return _check_choice(variant, VARIANTS, "--variant")


def _check_level(level: str) -> str:
    return _check_choice(level, LEVELS, "--level")


def _check_level_variant(level: str, variant: str) -> None:
    # caskcsg/sentemb repeats sub-words or space-split words only: there is no released formula to follow.
    if level == "char" and variant == "official":
        raise ConfigError("--level char has no official formula; use --variant paper")


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

    ``paper`` (every level): ``0 .. min(n, max(2, int(r*n)))``. ``official`` sub-word: ``0 .. min(n,
    min(10, int(r*(n+2))) - 1)``, only ``0`` when ``int(r*(n+2)) == 0``. ``official`` word:
    ``0 .. min(10, n, max(2, int(r*n))) - 1``. Always ``{0}`` for ``n <= 0``.
    """
    _check_variant(variant)
    _check_level(level)
    _check_level_variant(level, variant)
    if n <= 0:
        return range(0, 1)
    if variant == "paper":
        return range(0, min(max(PAPER_MIN_UPPER, int(dup_rate * n)), n) + 1)
    if level == "subword":
        t = _official_subword_bound(n, dup_rate)
        return range(0, 1) if t <= 0 else range(0, min(min(OFFICIAL_MAX_REPEATS, t) - 1, n) + 1)
    return range(0, _official_word_bound(n, dup_rate))


def repeat_count(n: int, dup_rate: float, variant: str, rng: random.Random, level: str = "subword") -> int:
    """Draw how many of the ``n`` content tokens of a sentence to repeat (see the module docstring).

    ``paper``: ``randint(0, max(2, int(r*n)))`` clipped to ``n`` (no draw for ``n <= 0``).
    ``official``, ``level="subword"``: ``randrange(min(10, int(r*(n+2))))`` when ``int(r*(n+2)) > 0``, else 0
    without a draw, clipped to ``n`` (where the released code would crash).
    ``official``, ``level="word"``: ``randrange(min(10, n, max(2, int(r*n))))``, 0 without a draw for ``n <= 0``.
    """
    _check_variant(variant)  # also for n == 0, so that a typo fails on the first (possibly empty) line
    _check_level(level)
    _check_level_variant(level, variant)
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


# ---------------------------------------------------------------------------------------------
# Which ones
# ---------------------------------------------------------------------------------------------
def repeat_population(n: int, variant: str = "paper", level: str = "subword") -> int:
    """How many of the ``n`` content tokens can be chosen: ``n``, except ``n - 1`` for ``official`` at word level.

    The released word-level code draws positions with ``sample(range(0, n-1), k)``, so its last word is never
    repeated (caskcsg/sentemb ``ESimCSE/train.py``, ``prepare_features``, ``dup_type == "word"``).
    """
    if variant == "official" and level == "word":
        return max(0, n - 1)
    return max(0, n)


def _choose_positions(population: int, k: int, rng: random.Random) -> List[int]:
    """``k`` sorted distinct indices out of ``range(population)`` (one ``sample`` call, none for ``k == 0``)."""
    if k <= 0 or population <= 0:
        return []
    return sorted(rng.sample(range(population), k))


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


# ---------------------------------------------------------------------------------------------
# What to do at the chosen positions
# ---------------------------------------------------------------------------------------------
def apply_repetition(tokens: Sequence[T], positions: Sequence[int]) -> List[T]:
    """Emit ``tokens[p]`` twice for every ``p`` in ``positions`` (sorted, distinct)."""
    return apply_insertion(tokens, positions, [tokens[p] for p in positions])


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


# ---------------------------------------------------------------------------------------------
# One sentence, one batch
# ---------------------------------------------------------------------------------------------
def augment_ids(
    ids: Sequence[T],
    method: str,
    rate: float,
    variant: str,
    rng: random.Random,
    *,
    level: str = "subword",
    content: Optional[Sequence[int]] = None,
    insert: Optional[Callable[[random.Random], T]] = None,
) -> Tuple[List[T], List[int]]:
    """Repeat, insert after, or delete a few tokens of one sentence: ``(out, positions)``.

    ``ids`` is any sequence (token ids, sub-word strings, words). ``content`` lists the indices that may be
    chosen (default: all; :func:`content_positions` leaves out [CLS]/[SEP]); their number is the ``N`` of
    :func:`repeat_count` at ``level``. ``positions`` are the chosen indices of ``ids``, sorted: the repeated
    tokens, the tokens an inserted one follows (it sits at ``p + j + 1`` in ``out``, see :func:`added_marks`),
    or the deleted tokens. Insertion needs ``insert(rng) -> token``.

    Draws, in this order: the count, the positions (one ``sample``), then one ``insert(rng)`` per position.
    """
    _check_choice(method, METHODS, "method")
    if method == "insertion" and insert is None:
        raise ValueError("augment_ids(method='insertion') needs insert=callable(rng) -> token")
    eligible = range(len(ids)) if content is None else content
    n = len(eligible)
    k = repeat_count(n, rate, variant, rng, level)
    if method == "deletion":
        k = min(k, max(0, n - 1))  # a sentence never loses all its tokens
    positions = [eligible[c] for c in _choose_positions(repeat_population(n, variant, level), k, rng)]
    if method == "repetition":
        return apply_repetition(ids, positions), positions
    if method == "insertion":
        return apply_insertion(ids, positions, [insert(rng) for _ in positions]), positions
    return apply_deletion(ids, positions), positions


def augment_batch(
    id_lists: Sequence[Sequence[int]],
    method: str,
    rate: float,
    variant: str,
    rng: random.Random,
    special_ids: Optional[Iterable[int]] = None,
    insert: Optional[Callable[[random.Random], int]] = None,
) -> List[List[int]]:
    """Augment each id list of a batch independently with one generator, in batch order (:func:`augment_ids`).

    The count is the sub-word formula of ``variant`` (:func:`repeat_count` with ``level="subword"``) over
    ``N = len(content_positions(ids, special_ids, variant))``, and the positions are drawn among those:

    * ``paper``: tokens whose id is in ``special_ids`` (e.g. ``{cls_id, sep_id, pad_id}``) are never chosen
      and do not count in ``N``, so ``[CLS] a b c [SEP]`` has ``N = 3`` and keeps its ``[CLS]``/``[SEP]``.
    * ``official``: as the released code (caskcsg/sentemb ``ESimCSE/train.py``, ``prepare_features``,
      ``dup_type == "bpe"``: ``sample(range(1, L-1), ...)``), only the special token at each *end* is left
      out; so ``L = N + 2`` is the length of a tokenizer's ``[CLS] ... [SEP]`` list, and a special token
      inside the sentence (an ``[UNK]``) counts and may be repeated, as there.

    Without ``special_ids`` every position counts. The draws are the released code's (count, then
    positions, sentence after sentence), so the same generator state gives its output. Padding should be
    stripped before the call; the result is longer (repetition, insertion) or shorter (deletion) and the
    caller re-pads / truncates.
    """
    specials = frozenset(int(i) for i in special_ids) if special_ids is not None else None
    return [augment_ids(list(ids), method, rate, variant, rng, content=content_positions(ids, specials, variant), insert=insert)[0]
            for ids in id_lists]


# ---------------------------------------------------------------------------------------------
# What insertion inserts
# ---------------------------------------------------------------------------------------------
def _is_bracketed(tok: str) -> bool:
    return (tok.startswith("[") and tok.endswith("]")) or (tok.startswith("<") and tok.endswith(">"))


def insertion_vocab(tokenizer, level: str = "subword", as_ids: bool = False) -> list:
    """Candidate tokens for ``--insert-token random``, in vocabulary-id order (deterministic).

    Sub-word level: every vocabulary entry except special tokens, bracketed entries such as ``[unused0]``
    or ``<s>``, and WordPiece continuation pieces (``##...``). Word level: of those, only alphabetic
    entries (stripped of a leading ``▁``/``Ġ`` word marker), so that a whole word is inserted. Char level:
    of those, only the single alphabetic characters (a CJK character counts), so that one character is inserted.
    """
    vocab = tokenizer.get_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    items = sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]))
    out = []
    for tok, idx in items:
        if tok in specials or tok.startswith("##") or _is_bracketed(tok) or not tok.strip():
            continue
        if level in ("word", "char"):
            word = tok.lstrip("\u2581\u0120")
            if not word.isalpha() or (level == "char" and len(word) != 1):
                continue
            out.append(idx if as_ids else word)
        else:
            out.append(idx if as_ids else tok)
    return out


def make_inserter(insert_token: str, tokenizer=None, level: str = "subword", as_ids: bool = False) -> Callable[[random.Random], Any]:
    """Return ``insert(rng) -> token`` for ``--insert-token random|stopword|mask``.

    ``stopword`` draws from :data:`STOPWORDS` (:data:`CHAR_STOPWORDS` at char level); at sub-word level only
    the stop words that are a single vocabulary token are used. ``mask`` is ``tokenizer.mask_token``
    (``[MASK]`` at word or char level without a tokenizer).
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
        if level == "char" and not as_ids:
            pool: list = list(CHAR_STOPWORDS)
        elif level == "word" and not as_ids:
            pool = list(STOPWORDS)
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
