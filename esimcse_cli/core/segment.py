"""Word segmentation for ``augment --level word``: ``--segmenter whitespace`` (the default) or ``jieba``.

Text without spaces (Chinese) has no whitespace words; jieba (an optional extra, ``esimcse-cli[zh]``) cuts it
into words, as bert4torch's ESimCSE example does before repeating whole words. jieba keeps the spaces it meets
as tokens of their own, so the words joined with nothing give the line back; a space is never chosen for
repetition, nor counted in N.
"""

from __future__ import annotations

from typing import Callable, List

from esimcse_cli.core.errors import ConfigError, InputError

SEGMENTERS = ("whitespace", "jieba")
ZH_EXTRA = "pip install 'esimcse-cli[zh]' (jieba)"


def check_segmenter(segmenter: str, level: str) -> None:
    if segmenter not in SEGMENTERS:
        raise ConfigError(f"--segmenter must be one of {', '.join(SEGMENTERS)}, got '{segmenter}'")
    if segmenter != "whitespace" and level != "word":
        raise ConfigError(f"--segmenter {segmenter} segments words: it goes with --level word, not --level {level}")
    if segmenter == "jieba":
        _jieba()


def _jieba():
    try:
        import jieba
    except ImportError:
        raise InputError(f"--segmenter jieba needs the jieba package: {ZH_EXTRA}") from None
    import logging

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading lines would go to stderr on every run
    return jieba


def segment_fn(segmenter: str) -> Callable[[str], List[str]]:
    """``text -> words``: whitespace words, or jieba's words (spaces kept as tokens)."""
    if segmenter == "jieba":
        jieba = _jieba()
        return lambda text: [w for w in jieba.cut(text) if w]
    return str.split


def join_fn(segmenter: str) -> Callable[[List[str]], str]:
    return "".join if segmenter == "jieba" else " ".join
