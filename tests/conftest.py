"""Shared fixtures: a tiny random BERT (2 layers, hidden 32, ~300-token vocab) built in code in well under a second."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
SENTEVAL_DIR = SHARED_DATA / "senteval"
CORPUS_DIR = SHARED_DATA / "corpus"

WORDS = (
    "the a an of to and in is was it for on with as by at from that this be are were has have had "
    "not but or if then so than more most very many much some any all one two three four five "
    "man woman child dog cat car house city river road tree bird horse ball game team year day night "
    "time world people water food music film book song word sentence model data small large big new old "
    "good bad first last long short high low red blue green black white he she they we you i his her their "
    "runs run ran walks walk plays play played eats eat sits sit reads read writes write sings sing "
    "is are said says made make takes take goes go went comes come see saw looks look "
    "quickly slowly happily together again always never often here there today yesterday "
    "cutting cuts slicing onion tomato guitar piano playing riding bike street park beach"
).split()


def build_tiny_bert(path: Path, seed: int = 0, positions: int = 128) -> Path:
    """Write a random 2-layer BERT (hidden 32, ``positions`` position embeddings) with a small WordPiece vocab to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase) + list(string.digits) + list(".,!?;:'\"-()")
    vocab = specials + chars + ["##" + c for c in string.ascii_lowercase + string.digits] + sorted(set(WORDS))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True, model_max_length=128)
    if len(tok.get_vocab()) < len(set(vocab)):  # transformers 5 ignores vocab_file (it takes vocab=): all [UNK]
        tok = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True, model_max_length=128)
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    BertModel(config).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SENTEVAL_DIR.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_configure(config):
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
