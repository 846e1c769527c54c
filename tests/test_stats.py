"""Bootstrap intervals (core/stats.py) and eval-sts --bootstrap: exact Spearman per replicate, strata, seeds, output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from esimcse_cli.core import evaluate, stats, sts
from esimcse_cli.core.errors import ConfigError
from esimcse_cli.core.evaluate import TaskScores

from sts_fixtures import make_senteval


def synthetic_task(rng, n=300, noise=1.5, subsets=None, ties=True) -> TaskScores:
    """Gold on a 0-5 grid (many ties), cosine = gold + noise (rounded: ties there too)."""
    gold = np.round(rng.uniform(0, 5, n) * 2) / 2 if ties else rng.uniform(0, 5, n)
    cos = gold + rng.normal(0, noise, n)
    cos = np.round(cos, 1) if ties else cos
    ts = TaskScores(cos=cos, gold=gold, diff=rng.integers(0, 9, n))
    if subsets:
        ts.subsets = tuple(subsets)
        ts.subset_ids = rng.integers(0, len(subsets), n)
    return ts


def expand(counts_row: np.ndarray) -> np.ndarray:
    """The resampled indices a row of counts stands for."""
    return np.repeat(np.arange(len(counts_row)), counts_row.astype(np.int64))


# ---- Spearman of a resample ------------------------------------------------------------------
@pytest.mark.parametrize("ties", [True, False])
def test_resample_spearman_equals_scipy_on_every_replicate(ties):
    rng = np.random.default_rng(1)
    ts = synthetic_task(rng, n=250, ties=ties)
    idx = rng.integers(0, 250, size=(120, 250))
    ours = stats.resample_spearman(stats.counts_from_indices(idx, 250), ts.cos, ts.gold)
    ref = np.array([spearmanr(ts.cos[i], ts.gold[i]).statistic * 100 for i in idx])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_resample_spearman_undefined_and_tiny_cases():
    x = np.array([1.0, 2.0, 2.0, 3.0])
    y = np.array([5.0, 5.0, 1.0, 0.0])
    counts = np.array([[4, 0, 0, 0], [0, 2, 2, 0], [1, 1, 1, 1], [0, 0, 3, 1]], dtype=float)
    got = stats.resample_spearman(counts, x, y)
    assert np.isnan(got[0])  # one pair drawn four times: constant
    assert np.isnan(got[1])  # x constant (2, 2, 2, 2)
    assert got[2] == pytest.approx(spearmanr(x, y).statistic * 100, abs=1e-9)
    assert got[3] == pytest.approx(spearmanr(x[[2, 2, 2, 3]], y[[2, 2, 2, 3]]).statistic * 100, abs=1e-9)


# ---- the resampling ----------------------------------------------------------------------------
def test_stratified_resampling_keeps_each_subset_size():
    rng = np.random.default_rng(2)
    ts = synthetic_task(rng, n=400, subsets=sts.STS_SUBSETS["STS12"])
    counts = stats.replicate_counts("STS12", ts, n=200, seed=5)
    assert counts.shape == (200, 400)
    for k in range(len(ts.subsets)):
        m = ts.subset_ids == k
        assert (counts[:, m].sum(axis=1) == m.sum()).all()
    # a task outside STS12-16 (or a pairs file) resamples all its pairs together: sizes vary by subset
    flat = stats.replicate_counts("mine", ts, n=200, seed=5)
    assert (flat.sum(axis=1) == 400).all()
    per_subset = np.stack([flat[:, ts.subset_ids == k].sum(axis=1) for k in range(len(ts.subsets))])
    assert (per_subset != np.bincount(ts.subset_ids)[:, None]).any()


@pytest.mark.parametrize("aggregate", ["all", "mean", "wmean"])
def test_replicates_recompute_the_statistic_as_the_point_estimate(aggregate):
    """Replicate r of a task equals evaluate's own computation on the pairs that replicate drew."""
    rng = np.random.default_rng(3)
    ts = synthetic_task(rng, n=240, subsets=sts.STS_SUBSETS["STS13"])
    buckets = evaluate.parse_buckets("0-3,4-")
    [st] = stats.bootstrap([stats.Entry("m", [{"STS13": ts}])], aggregate, buckets, n=120, seed=9)
    counts = stats.replicate_counts("STS13", ts, n=120, seed=9)
    for r in (0, 17, 119):
        i = expand(counts[r])
        resampled = TaskScores(cos=ts.cos[i], gold=ts.gold[i], subsets=ts.subsets, subset_ids=ts.subset_ids[i], diff=ts.diff[i])
        ref = evaluate.summarise({"STS13": resampled}, aggregate=aggregate, bucket_list=buckets)["STS13"]
        assert st.tasks["STS13"].reps[r] == pytest.approx(ref["spearman"], abs=1e-3)  # summarise rounds to 4 decimals
        for est, b in zip(st.buckets["STS13"], ref["buckets"]):
            assert est.reps[r] == pytest.approx(b["spearman"], abs=1e-3)
    point = evaluate.summarise({"STS13": ts}, aggregate=aggregate)["STS13"]["spearman"]
    assert st.tasks["STS13"].point == pytest.approx(point, abs=1e-4)


def test_average_replicate_averages_that_replicates_task_scores():
    rng = np.random.default_rng(4)
    scores = {"A": synthetic_task(rng, 200), "B": synthetic_task(rng, 150, noise=3.0)}
    [st] = stats.bootstrap([stats.Entry("m", [scores])], n=150, seed=1)
    np.testing.assert_allclose(st.avg.reps, (st.tasks["A"].reps + st.tasks["B"].reps) / 2)
    assert st.avg.point == pytest.approx((st.tasks["A"].point + st.tasks["B"].point) / 2)


def test_seeded_reproducible_per_task_and_independent_of_block_size(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = synthetic_task(rng, 300), synthetic_task(rng, 200)
    run = lambda scores, seed=7: stats.bootstrap([stats.Entry("m", [scores])], n=200, seed=seed)[0]  # noqa: E731
    one = run({"A": a, "B": b})
    np.testing.assert_array_equal(one.tasks["A"].reps, run({"A": a, "B": b}).tasks["A"].reps)
    np.testing.assert_array_equal(one.tasks["A"].reps, run({"A": a}).tasks["A"].reps)  # other tasks do not matter
    assert not np.array_equal(one.tasks["A"].reps, run({"A": a}, seed=8).tasks["A"].reps)
    monkeypatch.setattr(stats, "BLOCK_CELLS", 1000)  # 3 replicates a block
    np.testing.assert_array_equal(one.tasks["A"].reps, run({"A": a}).tasks["A"].reps)


# ---- intervals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregate", ["all", "mean", "wmean"])
def test_intervals_contain_the_point_estimate(aggregate):
    rng = np.random.default_rng(6)
    for trial in range(5):
        scores = {"STS14": synthetic_task(rng, 400, noise=rng.uniform(0.5, 3), subsets=sts.STS_SUBSETS["STS14"]),
                  "pairs": synthetic_task(rng, 120, noise=rng.uniform(0.5, 3))}
        result = {"model": "m", "tasks": evaluate.summarise(scores, aggregate=aggregate, bucket_list=evaluate.parse_buckets("0-3,4-"))}
        result["avg"] = np.mean([e["spearman"] for e in result["tasks"].values()])
        stats.add_intervals(result, scores, aggregate, "0-3,4-", n=400, seed=trial)
        for e in result["tasks"].values():
            assert e["ci"][0] <= e["spearman"] <= e["ci"][1]
            assert e["ci"][1] - e["ci"][0] > 0
            for b in e["buckets"]:
                assert b["ci"][0] <= b["spearman"] <= b["ci"][1]
        assert result["avg_ci"][0] <= result["avg"] <= result["avg_ci"][1]
        assert result["bootstrap"]["n"] == 400 and result["bootstrap"]["seed"] == trial


def test_interval_narrows_with_more_pairs_and_widens_with_level():
    rng = np.random.default_rng(7)
    small, large = synthetic_task(rng, 100, ties=False), synthetic_task(rng, 2000, ties=False)
    st_s, st_l = stats.bootstrap([stats.Entry("m", [{"A": small, "B": large}])], n=400, seed=0)[0].tasks.values()
    width = lambda est, lv: np.subtract(*stats.interval(est, lv)[::-1])  # noqa: E731
    assert width(st_s, 0.95) > 2 * width(st_l, 0.95)
    assert width(st_s, 0.99) > width(st_s, 0.9)


def test_check_options():
    stats.check_options(100, 0.5)
    for n, level, needle in ((99, None, "at least 100"), (1000, 1.0, "--ci 1"), (1000, 0.0, "--ci 0"), (1000, -0.5, "between 0 and 1"),
                             (1000, float("nan"), "--ci nan")):
        with pytest.raises(ConfigError, match=needle):
            stats.check_options(n, level)


def test_small_bucket_gets_no_interval():
    rng = np.random.default_rng(8)
    ts = synthetic_task(rng, 60)
    ts.diff = np.zeros(60, dtype=np.int64)
    ts.diff[:5] = 9  # 5 pairs in the last bucket: no Spearman, no interval
    result = {"model": "m", "tasks": evaluate.summarise({"T": ts}, bucket_list=evaluate.parse_buckets("0-3,4-"))}
    result["avg"] = result["tasks"]["T"]["spearman"]
    stats.add_intervals(result, {"T": ts}, buckets="0-3,4-", n=100)
    assert result["tasks"]["T"]["buckets"][1]["spearman"] is None and result["tasks"]["T"]["buckets"][1]["ci"] is None
    assert result["tasks"]["T"]["buckets"][0]["ci"] is not None


# ---- eval-sts --bootstrap through the CLI ------------------------------------------------------
@pytest.fixture()
def senteval(tmp_path):
    return make_senteval(tmp_path / "data" / "downstream", n_per_subset=16)


def test_cli_eval_sts_bootstrap_json_csv_table(monkeypatch, tmp_path, tiny_model_dir, senteval):
    from clirunner import run_main
    from rich.console import Console

    from esimcse_cli import console as ui

    monkeypatch.setattr(ui, "out", Console(width=200))

    js, cs = tmp_path / "b.json", tmp_path / "b.csv"
    r = run_main("eval-sts", senteval, "--model", tiny_model_dir, "--device", "cpu", "--tasks", "STS12,stsb,sick",
                 "--bucket-by-length", "--bootstrap", "200", "--seed", "3", "--ci", "0.9", "--json", js, "--csv", cs)
    assert r.code == 0, r.stderr
    res = json.loads(js.read_text())
    assert res["bootstrap"]["n"] == 200 and res["bootstrap"]["level"] == 0.9 and res["bootstrap"]["seed"] == 3
    assert "bootstrap" in res["seconds"]
    for e in res["tasks"].values():
        lo, hi = e["ci"]
        assert lo <= e["spearman"] <= hi
        for b in e["buckets"]:
            assert b["ci"] is None if b["spearman"] is None else b["ci"][0] <= b["spearman"] <= b["ci"][1]
    assert res["avg_ci"][0] <= res["avg"] <= res["avg_ci"][1]
    rows = list(csv.DictReader(cs.open(encoding="utf-8")))
    assert list(rows[0])[-2:] == ["ci_lo", "ci_hi"]
    by = {(row["task"], row["subset"], row["bucket"]): row for row in rows}
    assert float(by[("STSBenchmark", "", "")]["ci_lo"]) == res["tasks"]["STSBenchmark"]["ci"][0]
    assert float(by[("avg", "", "")]["ci_hi"]) == res["avg_ci"][1]
    assert by[("STS12", "MSRpar", "")]["ci_lo"] == ""
    lo, hi = res["tasks"]["STSBenchmark"]["ci"]
    assert f"[{lo:.1f}, {hi:.1f}]" in r.stdout.decode()
    # the same seed again: the same intervals
    js2 = tmp_path / "b2.json"
    r = run_main("eval-sts", senteval, "--model", tiny_model_dir, "--device", "cpu", "--tasks", "STS12,stsb,sick",
                 "--bucket-by-length", "--bootstrap", "200", "--seed", "3", "--ci", "0.9", "--json", js2)
    assert json.loads(js2.read_text())["tasks"] == res["tasks"]


def test_cli_bare_bootstrap_means_the_default_and_ci_implies_it(tmp_path, tiny_model_dir, senteval):
    from clirunner import run_main

    for extra in (["--bootstrap"], ["--ci", "0.8"]):
        js = tmp_path / "d.json"
        r = run_main("eval-sts", "--tasks", "stsb", "--model", tiny_model_dir, "--device", "cpu", "--json", js, *extra, senteval)
        assert r.code == 0, r.stderr
        assert json.loads(js.read_text())["bootstrap"]["n"] == stats.DEFAULT_REPLICATES
    r = run_main("eval-sts", senteval, "--tasks", "stsb", "--model", tiny_model_dir, "--device", "cpu")
    assert r.code == 0 and b"[" not in r.stdout  # off unless asked for


def test_cli_bootstrap_pairs_file(tmp_path, tiny_model_dir):
    from clirunner import run_main

    rng = np.random.default_rng(0)
    words = "the a dog cat man woman plays runs red blue ball park".split()
    lines = [f"{' '.join(rng.choice(words, 4))}\t{' '.join(rng.choice(words, int(rng.integers(2, 9))))}\t{rng.uniform(0, 5):.2f}" for _ in range(40)]
    f = tmp_path / "mine.tsv"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    js = tmp_path / "p.json"
    r = run_main("eval-sts", "--pairs", f, "--model", tiny_model_dir, "--device", "cpu", "--bootstrap", "300", "--buckets", "0-2,3-", "--json", js)
    assert r.code == 0, r.stderr
    e = json.loads(js.read_text())["tasks"]["mine"]
    assert e["ci"][0] <= e["spearman"] <= e["ci"][1]
    assert [b["name"] for b in e["buckets"]] == ["<=2", ">2"]


@pytest.mark.parametrize("args,needle", [
    (["--bootstrap", "50"], "--bootstrap 50: use at least 100"),
    (["--bootstrap", "-5"], "--bootstrap -5"),
    (["--ci", "1.5"], "--ci 1.5: the level must be between 0 and 1"),
    (["--bootstrap", "200", "--ci", "0"], "--ci 0"),
])
def test_cli_bad_bootstrap_options_exit_2_one_line(tmp_path, senteval, args, needle):
    from clirunner import run_main

    r = run_main("eval-sts", senteval, "--tasks", "stsb", *args)
    assert r.code == 2, r.stderr
    assert len(r.lines) == 1 and needle in r.lines[0] and "Traceback" not in r.stderr


# ---- the bundled model on the real data (slow: encodes the seven tasks) -----------------------------
@pytest.mark.slow
def test_default_model_intervals_contain_points_and_match_an_independent_bootstrap(shared_data):
    from esimcse_cli.core.models import load_encoder

    enc = load_encoder(None, device="cpu")
    task_pairs = evaluate.load_tasks(shared_data)
    res = evaluate.evaluate_loaded(enc, task_pairs, bootstrap=1000, seed=0)
    for e in res["tasks"].values():
        assert e["ci"][0] <= e["spearman"] <= e["ci"][1]
    assert res["avg_ci"][0] <= res["avg"] <= res["avg_ci"][1]
    # an independent percentile bootstrap over the same STS-B test pairs: plain indices, scipy, numpy's percentile
    pairs = task_pairs["STSBenchmark"]
    cos = evaluate.PairScorer(pairs).cosines(enc)
    gold = np.array([p.score for p in pairs])
    rng = np.random.default_rng(12345)
    reps = []
    for _ in range(1000):
        i = rng.integers(0, len(pairs), len(pairs))
        reps.append(spearmanr(cos[i], gold[i]).statistic * 100)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    ours = res["tasks"]["STSBenchmark"]["ci"]
    assert abs((ours[1] - ours[0]) - (hi - lo)) <= 0.25 * (hi - lo)
