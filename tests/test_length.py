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
    # 6 sentences: fewer than MIN_PROBE_POINT behind the point, so it is marked sparse
    assert probe["per_count"] == [{"inserted": 0, "pairs": len(SENTS), "mean_cosine": pytest.approx(1.0, abs=1e-5), "sparse": True}]


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
    rep = length.length_report([str(tiny_model_dir), str(second_model_dir)], tmp_path, tasks="STSBenchmark,STS12",
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


def test_length_analysis_checks_first_and_writes_the_files_before_it_returns(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="--variant"):  # refused before the (missing) data folder is read
        length.length_analysis(data_dir=str(tmp_path / "nowhere"), variant="v9")
    make_senteval(tmp_path / "data", n_per_subset=16)
    js, png = tmp_path / "la.json", tmp_path / "la.png"
    rep, written = length.length_analysis(str(tmp_path / "data"), tasks="stsb", models=[str(tiny_model_dir)], probe_sentences=5,
                                          device="cpu", json_path=str(js), plot=str(png))
    assert written == [str(js), str(png)] and json.loads(js.read_text()) == json.loads(json.dumps(rep))
    assert png.read_bytes()[:4] == b"\x89PNG" and rep["bootstrap"]["n"] == 1000


def test_cli_length_analysis_writes_its_files_before_the_tables(monkeypatch, capsys, tmp_path, tiny_model_dir):
    import errno

    from test_evaluate import run_cli

    from esimcse_cli import console as ui

    def full_disk(table):
        raise OSError(errno.ENOSPC, "No space left on device", "<stdout>")

    monkeypatch.setattr(ui, "print_table", full_disk)
    make_senteval(tmp_path / "data", n_per_subset=16)
    js = tmp_path / "la.json"
    code, _, err = run_cli(monkeypatch, capsys, "length-analysis", "-m", tiny_model_dir, "--data-dir", tmp_path / "data",
                           "--tasks", "stsb", "--probe-sentences", "5", "--device", "cpu", "--json", js)
    assert code == 2 and "No space left on device" in err
    assert len(json.loads(js.read_text())["models"]) == 1


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


# ---- intervals, the paired gap difference, sparse probe points ---------------------------------
def _scored(seed: int, n: int = 300, noise: float = 1.0, long_noise: float = 2.0):
    """One task whose long-difference pairs (diff > 3) are noisier: a known gap."""
    from esimcse_cli.core.evaluate import TaskScores

    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, n)
    diff = rng.integers(0, 8, n)
    cos = gold + rng.normal(0, 1, n) * np.where(diff > 3, long_noise, noise)
    return {"T": TaskScores(cos=cos, gold=gold, diff=diff)}


def _report(scored_list, labels):
    buckets = evaluate.parse_buckets("0-3,4-")
    models = []
    for label, sc in zip(labels, scored_list):
        tasks = evaluate.summarise(sc, bucket_list=buckets)
        gaps = length.bucket_gaps({"tasks": tasks})
        models.append({"model": label, "tasks": tasks, "avg": tasks["T"]["spearman"], "gap": gaps, "avg_gap": gaps["T"]})
    return length.build_report(models, "test", "0-3,4-", "words", None)


def test_add_intervals_gap_ci_and_paired_gap_difference():
    a, b = _scored(0, long_noise=2.5), _scored(0, long_noise=1.0)  # same pairs, b has no length bias
    rep = length.add_intervals(_report([a, b, a], ["a", "b", "a2"]), [a, b, a], n=400, seed=1)
    assert rep["bootstrap"]["n"] == 400
    for m in rep["models"]:
        e = m["tasks"]["T"]
        assert e["ci"][0] <= e["spearman"] <= e["ci"][1]
        for bk in e["buckets"]:
            assert bk["ci"][0] <= bk["spearman"] <= bk["ci"][1]
        lo, hi = m["gap_ci"]["T"]
        assert lo <= m["gap"]["T"] <= hi and m["avg_gap_ci"] == m["gap_ci"]["T"]
    assert "gap_diff" not in rep["models"][0]
    d = rep["models"][1]["gap_diff"]["T"]
    assert d["diff"] == pytest.approx(rep["models"][1]["gap"]["T"] - rep["models"][0]["gap"]["T"], abs=2e-4)
    assert d["diff"] < 0 and d["diff_ci"][1] < 0 and d["significant"]  # the known effect: a smaller gap
    same = rep["models"][2]["gap_diff"]["T"]
    assert same["diff"] == 0.0 and same["diff_ci"] == [0.0, 0.0] and same["p"] == 1.0
    assert rep["models"][2]["avg_gap_diff"]["p"] == 1.0


def test_probe_marks_points_with_fewer_than_ten_sentences(tiny_encoder):
    # many short sentences (dense counts) and one long one: "at 8 inserted tokens, one sentence makes the curve jump"
    sents = SENTS * 30 + [" ".join(["the old horse eats food slowly in the park"] * 8)]
    probe = length.repetition_probe(tiny_encoder, sents, dup_rate=0.5, seed=3)
    assert sum(p["pairs"] for p in probe["per_count"]) == probe["sentences"]
    for p in probe["per_count"]:
        assert p.get("sparse", False) == (p["pairs"] < length.MIN_PROBE_POINT)
    assert any(p.get("sparse") for p in probe["per_count"]) and any(not p.get("sparse") for p in probe["per_count"])


def test_plot_draws_error_bars_pair_counts_and_hollow_sparse_points(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    calls = {"errorbar": [], "annotate": [], "plot": []}
    for name in calls:
        real = getattr(matplotlib.axes.Axes, name)

        def spy(self, *a, _real=real, _name=name, **k):
            calls[_name].append((a, k))
            return _real(self, *a, **k)

        monkeypatch.setattr(matplotlib.axes.Axes, name, spy)
    rep = _report_for_plot()
    rep["bootstrap"] = {"level": 0.95}
    for m in rep["models"]:
        for t in m["tasks"].values():
            for b in t["buckets"]:
                b["ci"] = None if b["spearman"] is None else [b["spearman"] - 2, b["spearman"] + 1]
        m["probe"]["per_count"][1]["sparse"] = True
    length.plot_report(rep, tmp_path / "p.png")
    # one error-bar call per model and task, only over the scored buckets: 2 x (1 in T1 + 2 in T2)
    assert sum(len(a[0]) for a, _ in calls["errorbar"]) == 6
    assert all(k["yerr"][0] == [2.0] * len(k["yerr"][0]) and k["yerr"][1] == [1.0] * len(k["yerr"][1]) for _, k in calls["errorbar"])
    assert [a[0] for a, _ in calls["annotate"]].count("50") == 8  # every bar's pair count
    hollow = [k for _, k in calls["plot"] if k.get("markerfacecolor") == "none"]
    assert len(hollow) == 2 and all(k["linestyle"] == "none" for k in hollow)


def test_cli_length_analysis_intervals_and_gap_difference(monkeypatch, capsys, tmp_path, tiny_model_dir, second_model_dir):
    from test_evaluate import run_cli

    from rich.console import Console

    from esimcse_cli import console as ui

    monkeypatch.setattr(ui, "out", Console(width=250))
    make_senteval(tmp_path / "data", n_per_subset=16)
    js = tmp_path / "la.json"
    code, out, err = run_cli(monkeypatch, capsys, "length-analysis", "-m", tiny_model_dir, "-m", second_model_dir,
                             "--data-dir", tmp_path / "data", "--tasks", "stsb,sick", "--buckets", "0-1,2-",
                             "--probe-sentences", "10", "--device", "cpu", "--bootstrap", "200", "--json", js)
    assert code == 0, err
    rep = json.loads(js.read_text())
    assert rep["bootstrap"]["n"] == 200 and rep["bootstrap"]["seed"] == 42
    first, second = rep["models"]
    assert set(first["gap_ci"]) == {"STSBenchmark", "SICKRelatedness"} and "gap_diff" not in first
    assert set(second["gap_diff"]) == {"STSBenchmark", "SICKRelatedness"} and "p" in second["avg_gap_diff"]
    for m in rep["models"]:
        for t, e in m["tasks"].items():
            if m["gap"][t] is not None:
                assert m["gap_ci"][t][0] <= m["gap"][t] <= m["gap_ci"][t][1]
    assert "Gap difference from" in out and "[lo, hi]: 95% bootstrap interval" in out
    code, out, err = run_cli(monkeypatch, capsys, "length-analysis", "--data-dir", tmp_path / "data", "--bootstrap", "10")
    assert code == 2 and "--bootstrap 10: use at least 100" in err and "Traceback" not in err
