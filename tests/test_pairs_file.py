"""User pair files (``--pairs``): tsv with and without a header, csv / jsonl / parquet through pandas, clean errors."""

from __future__ import annotations

import json

import pytest

from esimcse_cli.core import pairs_file
from esimcse_cli.core.errors import ConfigError, InputError


def test_pairs_tsv_with_and_without_header(tmp_path):
    body = 'a "quoted dog\tthe dog\t4.0\nx\ty\t1\nskip me\tplease\t\n'
    p1 = tmp_path / "mine.tsv"
    p1.write_text(body, encoding="utf-8")
    pairs = pairs_file.read_pairs_file(p1)
    assert [(p.a, p.b, p.score, p.subset) for p in pairs] == [('a "quoted dog', "the dog", 4.0, "mine"), ("x", "y", 1.0, "mine")]
    p2 = tmp_path / "hdr.tsv"
    p2.write_text("score\tsentence1\tsentence2\r\n2.5\tone\ttwo\r\n", encoding="utf-8")
    pairs = pairs_file.read_pairs_file(p2)
    assert [(p.a, p.b, p.score) for p in pairs] == [("one", "two", 2.5)]
    p3 = tmp_path / "cols.tsv"
    p3.write_text("id\tleft\tright\tgold\n1\tl\tr\t3\n", encoding="utf-8")
    pairs = pairs_file.read_pairs_file(p3, sentence1_col="left", sentence2_col="right", score_col="gold")
    assert [(p.a, p.b, p.score) for p in pairs] == [("l", "r", 3.0)]
    pairs = pairs_file.read_pairs_file(p3, sentence1_col=1, sentence2_col=2, score_col=3)
    assert [(p.a, p.b, p.score) for p in pairs] == [("l", "r", 3.0)]


def test_pairs_tsv_errors(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("a\tb\t1.0\nc\td\tlots\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{p}:2: score 'lots' is not a number"):
        pairs_file.read_pairs_file(p)
    p.write_text("a\tb\t1.0\nc d 2.0\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{p}:2: expected at least 3 tab-separated fields"):
        pairs_file.read_pairs_file(p)
    p.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="file is empty"):
        pairs_file.read_pairs_file(p)
    with pytest.raises(InputError, match="file not found"):
        pairs_file.read_pairs_file(tmp_path / "nope.tsv")
    p.write_text("sentence1\tsentence2\tscore\n", encoding="utf-8")
    with pytest.raises(InputError, match="no scored pairs"):
        pairs_file.read_pairs_file(p)


def test_pairs_csv_jsonl_parquet(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"sentence_A": ["a, b", "c"], "sentence_B": ['d "e', "f"], "relatedness_score": [4.5, None]})
    df.to_csv(tmp_path / "p.csv", index=False)
    got = pairs_file.read_pairs_file(tmp_path / "p.csv")
    assert [(p.a, p.b, p.score) for p in got] == [("a, b", 'd "e', 4.5)]
    with open(tmp_path / "p.jsonl", "w", encoding="utf-8") as fh:
        for a, b, s in (("x", "y", 1), ("z", "w", 2.5)):
            fh.write(json.dumps({"text1": a, "text2": b, "label": s}) + "\n")
    got = pairs_file.read_pairs_file(tmp_path / "p.jsonl")
    assert [(p.a, p.b, p.score) for p in got] == [("x", "y", 1.0), ("z", "w", 2.5)]
    pytest.importorskip("pyarrow")
    pd.DataFrame({"q": ["k"], "r": ["l"], "sim": [0.5]}).to_parquet(tmp_path / "p.parquet")
    got = pairs_file.read_pairs_file(tmp_path / "p.parquet", "q", "r", "sim")
    assert [(p.a, p.b, p.score) for p in got] == [("k", "l", 0.5)]
    with pytest.raises(InputError, match="no sentence1 column 'nope'"):
        pairs_file.read_pairs_file(tmp_path / "p.parquet", "nope", "r", "sim")
    pd.DataFrame({"sentence1": ["k"], "sentence2": ["l"], "score": ["high"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"bad.csv: row 1: score 'high' is not a number"):
        pairs_file.read_pairs_file(tmp_path / "bad.csv")


def test_parse_columns():
    assert pairs_file.parse_columns(None) == (None, None, None)
    assert pairs_file.parse_columns("q, ,2") == ("q", None, "2")
    with pytest.raises(ConfigError, match="--pairs-columns 'a,b': give three columns"):
        pairs_file.parse_columns("a,b")
