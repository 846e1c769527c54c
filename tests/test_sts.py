"""STS readers: SentEval layout rules, real-data pair counts, clean errors (user pair files: test_pairs_file.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esimcse_cli.core import pairs_file, sts
from esimcse_cli.core.errors import InputError

from sts_fixtures import expected_counts, make_senteval

REAL_COUNTS = {
    ("STS12", "test"): 3108,
    ("STS13", "test"): 1500,
    ("STS14", "test"): 3750,
    ("STS15", "test"): 3000,
    ("STS16", "test"): 1186,
    ("STSBenchmark", "test"): 1379,
    ("STSBenchmark", "dev"): 1500,
    ("STSBenchmark", "train"): 5749,
    ("SICKRelatedness", "test"): 4927,
    ("SICKRelatedness", "dev"): 500,
    ("SICKRelatedness", "train"): 4500,
}


# ---- real data ------------------------------------------------------------------------------
@pytest.mark.parametrize("task,split", sorted(REAL_COUNTS))
def test_real_pair_counts_senteval(shared_data, task, split):
    pairs = sts.load_task(shared_data / "senteval", task, split)
    assert len(pairs) == REAL_COUNTS[(task, split)]
    assert all(0.0 <= p.score <= 5.0 for p in pairs)
    assert all(p.a and p.b for p in pairs)


@pytest.mark.parametrize("task,split", [("STS16", "test"), ("STSBenchmark", "test"), ("STS15", "test"), ("SICKRelatedness", "test")])
def test_real_pair_counts_raw_release(shared_data, task, split):
    # raw STS16 has 4 columns and STS2016.* names; raw STS-B has 9-field lines and stray quotes
    pairs = sts.load_task(shared_data / "raw", task, split)
    assert len(pairs) == REAL_COUNTS[(task, split)]
    assert not any("\t" in p.a or "\t" in p.b for p in pairs)


def test_parent_folder_is_accepted(shared_data):
    assert sts.find_senteval_dir(shared_data) == shared_data / "senteval"
    assert sts.find_senteval_dir(shared_data / "senteval") == shared_data / "senteval"
    assert len(sts.load_task(shared_data, "STS13")) == 1500


def test_real_subsets_and_sick_crlf(shared_data):
    pairs = sts.load_task(shared_data, "STS15")
    by_subset = {}
    for p in pairs:
        by_subset[p.subset] = by_subset.get(p.subset, 0) + 1
    assert by_subset == {"answers-forums": 375, "answers-students": 750, "belief": 375, "headlines": 750, "images": 750}
    sick = sts.load_task(shared_data, "SICKRelatedness")
    assert not any(p.b.endswith("\r") or "\r" in p.a for p in sick)
    assert all(1.0 <= p.score <= 5.0 for p in sick)


# ---- fixture layout -------------------------------------------------------------------------
def test_fixture_layout_counts(tmp_path):
    root = make_senteval(tmp_path / "downstream")
    for task, n in expected_counts().items():
        assert len(sts.load_task(tmp_path, task)) == n, task
    assert len(sts.load_task(tmp_path, "STSBenchmark", "dev")) == 25
    assert len(sts.load_task(root, "SICKRelatedness", "dev")) == 15


def test_sentences_are_whitespace_normalised_and_columns_beyond_two_ignored(tmp_path):
    folder = tmp_path / "STS" / "STS13-en-test"
    folder.mkdir(parents=True)
    for subset in sts.STS_SUBSETS["STS13"]:
        (folder / f"STS.input.{subset}.txt").write_text("  a  dog\truns\tsrc1\tsrc2\nx\ty\n", encoding="utf-8")
        (folder / f"STS.gs.{subset}.txt").write_text("4.5\n\n", encoding="utf-8")
    pairs = sts.load_task(tmp_path, "sts13")
    assert [(p.a, p.b, p.score) for p in pairs] == [("a dog", "runs", 4.5)] * 3
    assert [p.subset for p in pairs] == list(sts.STS_SUBSETS["STS13"])


def test_resolve_tasks_aliases_and_order():
    assert sts.resolve_tasks(None) == list(sts.TASKS)
    assert sts.resolve_tasks("all") == list(sts.TASKS)
    assert sts.resolve_tasks("sick,stsb,STS12") == ["STS12", "STSBenchmark", "SICKRelatedness"]
    assert sts.resolve_tasks(["sts-b", "STSBenchmark"]) == ["STSBenchmark"]
    with pytest.raises(InputError, match="unknown task 'STS17'"):
        sts.resolve_tasks("STS12,STS17")


# ---- errors ----------------------------------------------------------------------------------
def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        sts.load_task(tmp_path / "nope", "STS12")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no STS data found"):
        sts.find_senteval_dir(tmp_path / "empty")


def test_missing_task_names_where_it_looked(tmp_path):
    make_senteval(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "STS" / "STS14-en-test")
    with pytest.raises(InputError, match=r"STS14: task folder not found \(looked in .*STS14-en-test"):
        sts.load_task(tmp_path, "STS14")
    (tmp_path / "STS" / "STS12-en-test" / "STS.gs.MSRvid.txt").unlink()
    with pytest.raises(InputError, match=r"STS\.gs\.MSRvid\.txt: file not found"):
        sts.load_task(tmp_path, "STS12")
    (tmp_path / "SICK" / "SICK_trial.txt").unlink()
    with pytest.raises(InputError, match="SICKRelatedness: dev file not found"):
        sts.load_task(tmp_path, "SICKRelatedness", "dev")


def test_malformed_score_line_names_file_and_line(tmp_path):
    make_senteval(tmp_path)
    gs = tmp_path / "STS" / "STS12-en-test" / "STS.gs.MSRpar.txt"
    lines = gs.read_text().splitlines()
    lines[4] = "four"
    gs.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        sts.load_task(tmp_path, "STS12")
    assert str(exc.value) == f"{gs}:5: score 'four' is not a number"


def test_missing_column_names_file_and_line(tmp_path):
    make_senteval(tmp_path)
    inp = tmp_path / "STS" / "STS12-en-test" / "STS.input.MSRvid.txt"
    lines = inp.read_text().splitlines()
    lines[1] = "only one sentence"
    inp.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{inp}:2: expected 2 tab-separated sentences"):
        sts.load_task(tmp_path, "STS12")
    stsb = tmp_path / "STS" / "STSBenchmark" / "sts-test.csv"
    lines = stsb.read_text().splitlines()
    lines[2] = "a\tb\tc\t0001\tx.y\ts1\ts2"
    stsb.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{stsb}:3: score 'x.y' is not a number"):
        sts.load_task(tmp_path, "STSBenchmark")
    lines[2] = "a\tb\tc"
    stsb.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{stsb}:3: expected at least 7"):
        sts.load_task(tmp_path, "STSBenchmark")


def test_line_count_mismatch_and_bad_utf8(tmp_path):
    make_senteval(tmp_path)
    gs = tmp_path / "STS" / "STS13-en-test" / "STS.gs.FNWN.txt"
    gs.write_text("1.0\n2.0\n")
    with pytest.raises(InputError, match="2 gold lines but STS.input.FNWN.txt has 12 lines"):
        sts.load_task(tmp_path, "STS13")
    sick = tmp_path / "SICK" / "SICK_test_annotated.txt"
    sick.write_bytes(b"pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\ta\xff\tb\t3.0\n")
    with pytest.raises(InputError, match=rf"{sick}:2: not valid UTF-8"):
        sts.load_task(tmp_path, "SICKRelatedness")


def test_unknown_split(tmp_path):
    make_senteval(tmp_path)
    with pytest.raises(InputError, match="unknown split 'valid'"):
        sts.load_task(tmp_path, "STSBenchmark", "valid")


# ---- robustness: parse or clean error, never crash -------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gs=st.binary(max_size=200), inp=st.binary(max_size=200))
def test_random_bytes_parse_or_clean_error(tmp_path_factory, gs, inp):
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "STS" / "STS13-en-test"
    folder.mkdir(parents=True)
    for subset in sts.STS_SUBSETS["STS13"]:
        (folder / f"STS.input.{subset}.txt").write_bytes(inp)
        (folder / f"STS.gs.{subset}.txt").write_bytes(gs)
    (root / "p.tsv").write_bytes(inp + gs)
    for call in (lambda: sts.load_task(root, "STS13"), lambda: pairs_file.read_pairs_file(root / "p.tsv")):
        try:
            pairs = call()
        except InputError as exc:
            assert "\n" not in str(exc)
        else:
            assert pairs and all(isinstance(p.score, float) for p in pairs)


def test_discover_dev_data_finds_the_corpus_folders_senteval(tmp_path, monkeypatch):
    from esimcse_cli.core.sts import DATA_DIR_ENV, discover_dev_data

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    for var in ("HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):  # nor in the user's data folders
        monkeypatch.setenv(var, str(tmp_path / "home"))
    found = discover_dev_data(repo / "sample_data" / "corpus.txt")
    assert found == (repo / "sample_data" / "senteval").resolve()
    (tmp_path / "c.txt").write_text("a sentence\n")
    assert discover_dev_data(tmp_path / "c.txt") is None
    monkeypatch.setenv(DATA_DIR_ENV, str(repo / "sample_data"))
    assert discover_dev_data(tmp_path / "c.txt") == (repo / "sample_data" / "senteval").resolve()
