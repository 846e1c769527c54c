"""A batch's two views, seeded per micro-batch.

    micro-batch index -> epoch's seeded permutation -> the batch's sentences (the last partial batch dropped)
      -> view 1: token ids, truncated to max_length (and, near the model's position limit, so that the
         second view still fits)
      -> view 2: word repetition of view 1 (or the insertion / deletion baselines), over content tokens

Everything random here is a function of ``(seed, micro-batch)`` and nothing else: the order from
``(seed, epoch)``, the second view from ``(seed, micro-batch, SECOND_VIEW_STREAM)``. So a batch's positives
do not depend on how many processes run, and a resumed run builds the same views as an uninterrupted one.
The trainer seeds dropout from ``(seed, micro-batch, rank)`` with the same :func:`seed_for`.

The repeated copy may grow beyond ``max_length`` and is not re-truncated, as in the paper: the point is a
positive of a different length. [CLS]/[SEP] (all special tokens) are never repeated and do not count in
the sentence length ``N``. Padding is :mod:`esimcse_cli.core.padding`'s.

``repetition_level`` ``word`` or ``char`` (bert4torch's Chinese ESimCSE repeats whole jieba words) works on
text, as ``esimcse augment --level word|char`` does: the part of the sentence that view 1 kept (up to the end
of its last content token, from the fast tokenizer's offsets) goes through the same
:class:`~esimcse_cli.core.augment_text.Augmenter`, and the copy is tokenised again. ``N`` then counts words
(whitespace or ``segmenter``'s) or non-space characters. A copy longer than the model's position limit is
cut there (only possible when ``max_length`` is near that limit); the sub-word level never cuts the copy.
"""

from __future__ import annotations

import random
from typing import Callable, List, Optional

import numpy as np

from esimcse_cli.core import augment
from esimcse_cli.core.augment_text import Augmenter
from esimcse_cli.core.config import TrainConfig
from esimcse_cli.core.errors import ConfigError

# The seed stream of the second view: it stands where dropout's seeds have the rank, and no process count
# reaches it, so the two streams never share a seed.
SECOND_VIEW_STREAM = 10**6


def seed_for(*parts: int) -> int:
    """A 63-bit seed drawn from ``parts`` (independent streams for different tuples)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded permutation of ``n`` sentences for ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class EpochOrder:
    """The sentence indices of each micro-batch: its epoch's permutation, cut into full batches."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size  # micro-batches; the last incomplete batch of an epoch is dropped
        self._epoch, self._order = -1, None

    def batch(self, micro: int) -> np.ndarray:
        epoch, pos = divmod(micro, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        return self._order[pos * self.batch_size : (pos + 1) * self.batch_size]


class Batcher:
    """Tokenise a batch once and build its second view (padding: :mod:`esimcse_cli.core.padding`)."""

    def __init__(self, tokenizer, cfg: TrainConfig, position_limit: Optional[int] = None):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.limit = position_limit
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        self.special_ids = set(int(i) for i in tokenizer.all_special_ids)
        self.insert = None
        self.augmenter = None  # word / char level: text-level augmentation of what view 1 kept
        if cfg.repetition_level != "subword":
            if not getattr(tokenizer, "is_fast", False):
                raise ConfigError(f"--repetition-level {cfg.repetition_level} needs a fast tokenizer (its offsets "
                                  "tell which part of a truncated sentence view 1 kept); use --repetition-level subword")
            self.augmenter = Augmenter(tokenizer, cfg.augmentation, cfg.repetition_level, cfg.dup_rate,
                                       cfg.repetition_variant, cfg.insert_token, seed=0, segmenter=cfg.segmenter)
        elif cfg.augmentation == "insertion":
            self.insert = augment.make_inserter(cfg.insert_token, tokenizer, level="subword", as_ids=True)

    def _encode(self, texts: List[str], offsets: bool = False):
        return self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self.cfg.max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False, return_offsets_mapping=offsets)

    def tokenize(self, texts: List[str]) -> List[List[int]]:
        ids = self._encode(texts)["input_ids"]
        if (self.limit is not None and self.cfg.repetition and self.cfg.augmentation != "deletion"
                and self.augmenter is None):
            ids = [fit_for_copy(x, self.limit, self._most_added, self.special_ids, self.cfg.repetition_variant) for x in ids]
        return ids

    def _most_added(self, n: int) -> int:
        """The most tokens the second view can add to a sentence of ``n`` content tokens."""
        return max(augment.repeat_support(n, self.cfg.dup_rate, self.cfg.repetition_variant))

    def second_view(self, ids: List[List[int]], seed: int, texts: Optional[List[str]] = None) -> List[List[int]]:
        """The second view: word repetition (or the insertion/deletion baselines) over content tokens, or, at
        word / char level, over the words or characters of ``texts`` that view 1 (``ids``) kept."""
        rng = random.Random(seed)
        if self.augmenter is None:
            return augment.augment_batch(ids, self.cfg.augmentation, self.cfg.dup_rate, self.cfg.repetition_variant, rng,
                                         special_ids=self.special_ids, insert=self.insert)
        if texts is None or len(texts) != len(ids):
            raise ValueError("second_view at word / char level needs the batch's texts")
        self.augmenter.rng = rng
        kept = self.kept_texts(texts)
        copies = [self.augmenter.record(k).augmented if k.strip() else None for k in kept]
        todo = [i for i, c in enumerate(copies) if c is not None]
        enc = self.tokenizer([copies[i] for i in todo], add_special_tokens=True, truncation=self.limit is not None,
                             max_length=self.limit, padding=False, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"] if todo else []
        out = [list(x) for x in ids]  # nothing left to repeat: the copy is view 1
        for i, new in zip(todo, enc):
            out[i] = new
        return out

    def kept_texts(self, texts: List[str]) -> List[str]:
        """Each text up to the end of view 1's last content token (all of it unless ``max_length`` cut it)."""
        enc = self._encode(texts, offsets=True)
        kept = []
        for text, offs in zip(texts, enc["offset_mapping"]):
            ends = [e for b, e in offs if e > b]  # the added [CLS]/[SEP] span nothing: (0, 0)
            kept.append(text[: max(ends)] if ends else "")
        return kept


def fit_for_copy(ids: List[int], limit: int, most_added: Callable[[int], int], special_ids: set, variant: str = "paper") -> List[int]:
    """Truncate a sentence so that its repeated (or inserted-into) copy fits in ``limit`` positions.

    The copy is never cut: it must stay longer than the original, which is the point of word repetition.
    Only a sentence within ``most_added(N)`` tokens of the model's position limit is shortened: content tokens
    go from the end, to the longest ``N`` with ``len + most_added(N) <= limit``, and what follows the last
    content token ([SEP]) is kept. ``N`` counts what the second view counts
    (:func:`~esimcse_cli.core.augment.content_positions` of ``variant``).
    """
    if len(ids) + most_added(len(ids)) <= limit:  # N <= len(ids), and most_added grows with N
        return ids
    content = augment.content_positions(ids, special_ids, variant)
    if not content:
        return ids
    tail = ids[content[-1] + 1 :]

    def head(m: int) -> int:  # the prefix that holds the first m content tokens
        return content[m - 1] + 1 if m else content[0]

    m = len(content)
    while m > 0 and head(m) + len(tail) + most_added(m) > limit:
        m -= 1
    return ids[: head(m)] + tail
