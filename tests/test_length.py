"""length-analysis: repetition probe, slope, gaps, report, plot and the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from esimcse_cli.core import evaluate, length
from esimcse_cli.core.errors import ConfigError

from sts_fixtures import make_senteval


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model_dir):
    from esimcse_cli.core.models import load_encoder

    return load_encoder(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    from conftest import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-2") / "model", seed=1)


SENTS = [
    "the man plays the guitar",
    "a small dog runs in the park",
    "the woman reads a very long book today",
    "children play ball on the street",
    "a red car and a blue car",
    "the old horse eats food slowly",
]


def test_fit_slope_matches_polyfit():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=40)
    y = 0.9 - 0.01 * x + rng.normal(scale=0.001, size=40)
    slope, intercept = length.fit_slope(x, y)
    ref = np.polyfit(x, y, 1)
    assert slope == pytest.approx(ref[0]) and intercept == pytest.approx(ref[1])
    assert length.fit_slope(np.array([2, 2, 2]), np.array([1.0, 2.0, 3.0])) == (None, None)


def test_sample_sentences_is_seeded_and_distinct():
    pool = [f"s{i}" for i in range(100)] + ["s1", "", "  "]
    a = length.sample_sentences(pool, 10, seed=3)
    assert a == length.sample_sentences(pool, 10, seed=3)
    assert a != length.sample_sentences(pool, 10, seed=4)
    assert len(set(a)) == 10 and "" not in a
    assert len(length.sample_sentences(pool, 1000)) == 100
    with pytest.raises(ConfigError):
        length.sample_sentences(pool, -1)


def test_repetition_pairs_subword_level(tiny_encoder):
    tok = tiny_encoder.tokenizer
    originals, copies, inserted = length.make_repetition_pairs(tok, SENTS, dup_rate=0.5, seed=1)
    assert len(originals) == len(copies) == len(SENTS)
    again = length.make_repetition_pairs(tok, SENTS, dup_rate=0.5, seed=1)
    assert copies == again[1] and inserted.tolist() == again[2].tolist()
    for s, o, c, k in zip(SENTS, originals, copies, inserted):
        t = tok.tokenize(s)
        assert o == tok.convert_tokens_to_string(t)
        assert k >= 0
        # every original word is still there, in order; the copy has k more sub-word tokens
        assert len(tok.tokenize(c)) == len(t) + k
    assert inserted.sum() > 0
    with pytest.raises(ConfigError):
        length.make_repetition_pairs(tok, SENTS, variant="nope")


def test_probe_cosine_one_when_nothing_inserted(tiny_encoder):
    # official variant with a tiny rate never repeats: each copy equals its original
    probe = length.repetition_probe(tiny_encoder, SENTS, dup_rate=0.01, variant="official", seed=0)
    assert probe["sentences"] == len(SENTS)
    assert probe["mean_inserted"] == 0
    assert probe["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert probe["slope"] is None and "slope undefined" in probe["note"]
    assert probe["per_count"] == [{"inserted": 0, "pairs": len(SENTS), "mean_cosine": pytest.approx(1.0, abs=1e-5)}]


def test_probe_slope_and_per_count_are_consistent(tiny_encoder):
    probe = length.repetition_probe(tiny_encoder, SENTS * 3, dup_rate=0.6, seed=5)
    counts = probe["per_count"]
    assert sum(c["pairs"] for c in counts) == probe["sentences"] == 18
    assert probe["mean_cosine"] == pytest.approx(sum(c["mean_cosine"] * c["pairs"] for c in counts) / 18, abs=1e-5)
    assert probe["mean_inserted"] == pytest.approx(sum(c["inserted"] * c["pairs"] for c in counts) / 18, abs=1e-3)
    if len(counts) > 1:
        x = np.repeat([c["inserted"] for c in counts], [c["pairs"] for c in counts])
        y = np.repeat([c["mean_cosine"] for c in counts], [c["pairs"] for c in counts])
        # the slope through per-count means equals the slope through all points (same x groups)
        assert probe["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], abs=1e-4)
        assert all(c["mean_cosine"] <= 1.0 + 1e-6 for c in counts)


def test_bucket_gaps():
    res = {"tasks": {
        "A": {"buckets": [{"spearman": 80.0}, {"spearman": 70.5}]},
        "B": {"buckets": [{"spearman": None}, {"spearman": 70.0}]},
        "C": {},
    }}
    assert length.bucket_gaps(res) == {"A": 9.5, "B": None, "C": None}


def test_length_analysis_core_report(tmp_path, tiny_model_dir, second_model_dir):
    data = make_senteval(tmp_path / "senteval", n_per_subset=16)
    rep = length.length_analysis([str(tiny_model_dir), str(second_model_dir)], tmp_path, tasks="STSBenchmark,STS12",
                                 buckets="0-1,2-3,4-", probe_sentences=20, device="cpu", seed=7)
    assert [m["model"] for m in rep["models"]] == [str(tiny_model_dir), str(second_model_dir)]
    assert [b["name"] for b in rep["buckets"]] == ["0-1", "2-3", ">=4"]
    assert rep["probe"]["sentences"] == 20 and rep["probe"]["source"] == "sts"
    for m in rep["models"]:
        assert list(m["tasks"]) == ["STS12", "STSBenchmark"]
        for task, e in m["tasks"].items():
            assert sum(b["pairs"] for b in e["buckets"]) == e["pairs"]
            first, last = e["buckets"][0]["spearman"], e["buckets"][-1]["spearman"]
            if first is not None and last is not None:
                assert m["gap"][task] == pytest.approx(first - last, abs=1e-3)
        assert m["probe"]["sentences"] == 20
    # the two random models differ, so their numbers do too
    assert rep["models"][0]["tasks"]["STS12"]["spearman"] != rep["models"][1]["tasks"]["STS12"]["spearman"]
    assert data.is_dir()


def test_probe_corpus(tmp_path, tiny_encoder):
    f = tmp_path / "c.txt"
    f.write_text("one dog\n\n  \ntwo cats play\nthree red cars\n", encoding="utf-8")
    texts, meta = length.choose_probe_texts({}, 10, f, seed=1)
    assert sorted(texts) == ["one dog", "three red cars", "two cats play"] and meta["source"] == str(f)
    assert length.choose_probe_texts({}, 0) == ([], None)
    (tmp_path / "e.txt").write_text("\n\n", encoding="utf-8")
    from esimcse_cli.core.errors import InputError

    with pytest.raises(InputError, match="no sentences"):
        length.choose_probe_texts({}, 5, tmp_path / "e.txt")


def _report_for_plot():
    bucket = lambda n, s: {"name": n, "min": 0, "max": None, "pairs": 50, "spearman": s}  # noqa: E731
    models = []
    for name, v in (("a", 80.0), ("b", 75.0)):
        models.append({"model": name, "tasks": {"T1": {"buckets": [bucket("<=3", v), bucket(">3", None)]},
                                                "T2": {"buckets": [bucket("<=3", v - 5), bucket(">3", v - 9)]}},
                       "probe": {"per_count": [{"inserted": 0, "pairs": 3, "mean_cosine": 1.0}, {"inserted": 2, "pairs": 4, "mean_cosine": 0.9}]}})
    return {"buckets": [{"name": "<=3"}, {"name": ">3"}], "length_unit": "words", "models": models}


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "len.png"
    length.plot_report(_report_for_plot(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    with pytest.raises(ConfigError, match="png"):
        length.plot_report(_report_for_plot(), tmp_path / "len.txt")


def test_plot_without_matplotlib_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"needs matplotlib: pip install 'esimcse-cli\[plot\]'"):
        length.plot_report(_report_for_plot(), tmp_path / "x.png")


def test_cli_length_analysis(monkeypatch, capsys, tmp_path, tiny_model_dir, second_model_dir):
    from test_evaluate import run_cli

    from rich.console import Console

    from esimcse_cli import console as ui

    monkeypatch.setattr(ui, "out", Console(width=200))
    make_senteval(tmp_path / "data", n_per_subset=16)
    js, png = tmp_path / "la.json", tmp_path / "la.png"
    code, out, err = run_cli(monkeypatch, capsys, "length-analysis", "-m", tiny_model_dir, "-m", second_model_dir,
                             "--data-dir", tmp_path / "data", "--tasks", "stsb,sick", "--probe-sentences", "15",
                             "--device", "cpu", "--json", js, "--plot", png)
    assert code == 0, err
    rep = json.loads(js.read_text())
    assert len(rep["models"]) == 2 and rep["probe"]["sentences"] == 15
    assert set(rep["models"][0]["tasks"]) == {"STSBenchmark", "SICKRelatedness"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "gap" in out and "Repetition probe" in out and "SICKRelatedness" in out
    code, out, err = run_cli(monkeypatch, capsys, "length-analysis", "--data-dir", tmp_path / "data", "--buckets", "0-3,5-")
    assert code == 2 and "should start at 4" in err and "Traceback" not in err
    code, out, err = run_cli(monkeypatch, capsys, "length-analysis", "--data-dir", tmp_path / "data", "--probe-sentences", "-1")
    assert code == 2 and "--probe-sentences" in err


def test_evaluate_buckets_default_used_by_length():
    assert [b.name for b in evaluate.parse_buckets(evaluate.DEFAULT_BUCKETS)] == ["<=3", ">3"]
