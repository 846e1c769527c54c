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


# ------------------------------------------------------------------------------------------------
# The Chinese layouts (--pairs-format); sentences written for these tests
# ------------------------------------------------------------------------------------------------
BOJONE = "今天天气很好\t今天是晴天\t1\n我想买一部手机\t这家饭店很好吃\t0\n花呗怎么还款\t花呗如何还钱\t1\n"
CNSD = "一个男人在弹吉他。||一个人在弹奏乐器。||4\n两只狗在草地上奔跑。||一只猫在睡觉。||0\n\n一个女孩在唱歌。||一个女孩在跳舞。||1.5\n"


def test_bojone_tab_layout_reads_labels_as_scores(tmp_path):
    p = tmp_path / "LCQMC.test.data"
    p.write_text(BOJONE, encoding="utf-8")
    for fmt in (None, "auto", "tsv"):
        got = pairs_file.read_pairs_file(p, fmt=fmt)
        assert len(got) == 3
        assert [x.score for x in got] == [1.0, 0.0, 1.0]
        assert (got[0].a, got[0].b) == ("今天天气很好", "今天是晴天")


def test_cnsd_layout_by_shape_and_by_name(tmp_path):
    p = tmp_path / "cnsd-sts-test.txt"
    p.write_text(CNSD, encoding="utf-8")
    for fmt in (None, "auto", "cnsd"):
        got = pairs_file.read_pairs_file(p, fmt=fmt)
        assert len(got) == 3
        assert [x.score for x in got] == [4.0, 0.0, 1.5]
        assert (got[1].a, got[1].b) == ("两只狗在草地上奔跑。", "一只猫在睡觉。")
        assert got[0].subset == "cnsd-sts-test"
    with pytest.raises(InputError, match=r"cnsd-sts-test.txt:1: expected at least 3 tab-separated"):
        pairs_file.read_pairs_file(p, fmt="tsv")  # named, the layout is not guessed
    q = tmp_path / "b.tsv"
    q.write_text(BOJONE, encoding="utf-8")
    with pytest.raises(InputError, match=r"b.tsv:1: expected sent1\|\|sent2\|\|score"):
        pairs_file.read_pairs_file(q, fmt="cnsd")


def test_mixed_or_garbled_layouts_name_the_line(tmp_path):
    p = tmp_path / "mixed.txt"
    p.write_text("甲||乙||3\n丙\t丁\t1\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        pairs_file.read_pairs_file(p)
    assert str(e.value).startswith(f"{p}:2: ") and "\n" not in str(e.value)
    p.write_text("甲\t乙\t1\n丙||丁||3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mixed.txt:2: "):
        pairs_file.read_pairs_file(p)
    p.write_text("甲||乙||3\n丙||丁||戊||2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mixed.txt:2: .*found 4"):
        pairs_file.read_pairs_file(p)
    p.write_text("甲||乙||很高\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mixed.txt:1"):
        pairs_file.read_pairs_file(p)
    with pytest.raises(ConfigError, match="--pairs-columns does not apply"):
        pairs_file.read_pairs_file(tmp_path / "mixed.txt", "0", None, None, fmt="cnsd")


def test_pairs_format_bad_value(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text(CNSD, encoding="utf-8")
    with pytest.raises(ConfigError, match="--pairs-format must be one of auto, tsv, cnsd"):
        pairs_file.read_pairs_file(p, fmt="excel")
    assert pairs_file.check_pairs_format(None) == "auto" and pairs_file.check_pairs_format(" CNSD ") == "cnsd"


def test_cli_pairs_format_through_eval_sts_and_compare(tmp_path, tiny_model_dir):
    from clirunner import run_main

    c, b = tmp_path / "cnsd.txt", tmp_path / "bq.tsv"
    c.write_text(CNSD, encoding="utf-8")
    b.write_text(BOJONE, encoding="utf-8")
    out = tmp_path / "r.json"
    r = run_main("eval-sts", "--pairs", c, "--pairs", b, "--model", tiny_model_dir, "--device", "cpu", "--json", out)
    assert r.code == 0, r.stderr
    tasks = json.loads(out.read_text(encoding="utf-8"))["tasks"]
    assert tasks["cnsd"]["pairs"] == 3 and tasks["bq"]["pairs"] == 3
    for cmd in (["eval-sts", "--model", tiny_model_dir], ["compare", "--model", tiny_model_dir, "--model", tiny_model_dir]):
        bad = run_main(*cmd, "--pairs", c, "--pairs-format", "excel", "--json", tmp_path / "bad.json")
        assert bad.code == 2 and len(bad.lines) == 1 and "--pairs-format" in bad.lines[0], bad.stderr
        assert not (tmp_path / "bad.json").exists()
        forced = run_main(*cmd, "--pairs", c, "--pairs-format", "tsv")
        assert forced.code == 2 and len(forced.lines) == 1 and f"{c}:1:" in forced.lines[0], forced.stderr
