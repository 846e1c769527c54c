"""One data discovery for every command that reads STS data: the order of the places, and the error where none holds it.

Order: --data-dir / DATA_DIR, $ESIMCSE_DATA_DIR, ./SentEval/data/downstream (SimCSE's layout), ./data/downstream,
the user data folder, the user cache folder; train's dev data also looks in the corpus's folder, right after
$ESIMCSE_DATA_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from esimcse_cli.core import evaluate, sts
from esimcse_cli.core.errors import ConfigError, InputError

from clirunner import run_main
from sts_fixtures import expected_counts, make_senteval

POSIX = pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="the XDG folders are the Linux/Unix places")


@pytest.fixture()
def bare(tmp_path, monkeypatch) -> Path:
    """A working folder with no data in it, no $ESIMCSE_DATA_DIR, and a home and XDG folders of its own."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(sts.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return work


def _data(root: Path, n_per_subset: int = 4) -> Path:
    """SentEval's data/downstream at ``root`` (small, written in code)."""
    return make_senteval(root, n_per_subset=n_per_subset)


# ---- the order ---------------------------------------------------------------------------------
@POSIX
def test_each_place_in_turn(bare, tmp_path, monkeypatch):
    cache = _data(tmp_path / "xdg-cache" / "esimcse" / "downstream")
    assert sts.find_data_dir() == cache
    user = _data(tmp_path / "xdg-data" / "esimcse" / "downstream")
    assert sts.find_data_dir() == user
    local = _data(bare / "data" / "downstream")
    assert sts.find_data_dir() == Path("data/downstream") == local.relative_to(bare)
    simcse = _data(bare / "SentEval" / "data" / "downstream")
    assert sts.find_data_dir() == Path("SentEval/data/downstream") == simcse.relative_to(bare)
    env = _data(tmp_path / "env" / "senteval")
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(tmp_path / "env"))  # a parent of the data is accepted, as for --data-dir
    assert sts.find_data_dir() == env
    given = _data(tmp_path / "given")
    assert sts.find_data_dir(given) == given
    assert sts.find_data_dir(str(given)) == given


@POSIX
def test_xdg_defaults_and_relative_values(bare, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert sts.user_data_dirs() == [home / ".local/share/esimcse/downstream", home / ".cache/esimcse/downstream"]
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG spec: ignored
    assert sts.user_data_dirs()[0] == home / ".local/share/esimcse/downstream"
    _data(home / ".cache" / "esimcse" / "downstream")
    assert sts.find_data_dir() == home / ".cache/esimcse/downstream"


def test_a_place_without_the_data_is_passed_over(bare):
    # a SimCSE checkout before download_dataset.sh ran: the folder is there, the data is not
    (bare / "SentEval" / "data" / "downstream").mkdir(parents=True)
    (bare / "SentEval" / "data" / "downstream" / "download_dataset.sh").write_text("# fetch\n")
    local = _data(bare / "data" / "downstream")
    assert sts.find_data_dir() == local.relative_to(bare)


def test_a_named_folder_must_hold_the_data(bare, tmp_path, monkeypatch):
    _data(bare / "SentEval" / "data" / "downstream")  # not a fallback for a folder given by name
    with pytest.raises(InputError, match="nope: data folder does not exist"):
        sts.find_data_dir(tmp_path / "nope")
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no STS data found"):
        sts.find_data_dir()
    assert sts.find_data_dir(bare / "SentEval") == bare / "SentEval" / "data" / "downstream"  # given wins over the env


def test_two_data_folders_and_one(tmp_path):
    assert sts.given_data_dir(None, None) is None
    assert sts.given_data_dir("a", None) == "a" and sts.given_data_dir(None, "b") == "b"
    assert sts.given_data_dir("a/", "a") == "a/"  # the same folder twice is one
    with pytest.raises(ConfigError, match=r"two data folders given \(a and --data-dir b\): give one"):
        sts.given_data_dir("a", "b")


# ---- nothing found -----------------------------------------------------------------------------
@POSIX
def test_the_error_names_every_place_and_how_to_fetch_the_data(bare, tmp_path):
    with pytest.raises(ConfigError) as info:
        sts.find_data_dir()
    msg = str(info.value)
    assert "\n" not in msg
    looked = ["$ESIMCSE_DATA_DIR (not set)", "./SentEval/data/downstream", "./data/downstream",
              str(tmp_path / "xdg-data" / "esimcse" / "downstream"), str(tmp_path / "xdg-cache" / "esimcse" / "downstream")]
    positions = [msg.index(p) for p in looked]
    assert positions == sorted(positions)
    assert "--data-dir is needed" in msg and "set ESIMCSE_DATA_DIR" in msg
    assert "cd SentEval/data/downstream && bash download_dataset.sh" in msg


def test_the_error_shows_the_home_folder_as_a_tilde(bare, tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME")
    with pytest.raises(ConfigError) as info:
        sts.find_data_dir()
    assert str(tmp_path / "home") not in str(info.value) and "~" in str(info.value)


@pytest.mark.parametrize("command", ["eval-sts", "length-analysis", "compare"])
def test_cli_one_line_exit_2_where_nothing_is_found(bare, tiny_model_dir, command):
    args = [command, "-m", str(tiny_model_dir)] + (["-m", str(tiny_model_dir)] if command == "compare" else [])
    r = run_main(*args)
    assert r.code == 2, r.stderr
    assert len(r.lines) == 1 and "Traceback" not in r.stderr
    assert "no STS data found" in r.lines[0] and "download_dataset.sh" in r.lines[0]


# ---- the commands ------------------------------------------------------------------------------
def test_eval_sts_bucket_by_length_inside_a_simcse_checkout(bare, tiny_model_dir):
    """`esimcse eval-sts --bucket-by-length`, as a new user types it in a SimCSE checkout: it finds SentEval/data/downstream."""
    _data(bare / "SentEval" / "data" / "downstream")
    r = run_main("eval-sts", "--bucket-by-length", "-m", str(tiny_model_dir), "--device", "cpu", "--tasks", "stsb,sick",
                 "--json", "r.json")
    assert r.code == 0, r.stderr
    assert "STS data from SentEval/data/downstream" in r.stderr
    result = json.loads((bare / "r.json").read_text())
    assert {t: e["pairs"] for t, e in result["tasks"].items()} == {t: expected_counts(4)[t] for t in ("STSBenchmark", "SICKRelatedness")}
    assert [b["name"] for b in result["buckets"]] == ["<=3", ">3"]


def test_env_var_is_used_without_data_dir_and_the_option_wins(bare, tmp_path, monkeypatch, tiny_model_dir):
    env = _data(tmp_path / "env", n_per_subset=8)
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(env))
    assert list(evaluate.load_tasks(None, "STS13")) == ["STS13"]
    assert len(evaluate.load_tasks(None, "STS13")["STS13"]) == expected_counts(8)["STS13"]
    given = _data(tmp_path / "given", n_per_subset=4)
    assert len(evaluate.load_tasks(str(given), "STS13")["STS13"]) == expected_counts(4)["STS13"]
    r = run_main("eval-sts", "-d", str(given), "-m", str(tiny_model_dir), "--device", "cpu", "-t", "sts13", "--json", "r.json")
    assert r.code == 0, r.stderr
    assert json.loads((bare / "r.json").read_text())["tasks"]["STS13"]["pairs"] == expected_counts(4)["STS13"]
    r = run_main("eval-sts", "-m", str(tiny_model_dir), "--device", "cpu", "-t", "sts13", "--json", "r.json")
    assert r.code == 0, r.stderr
    assert json.loads((bare / "r.json").read_text())["tasks"]["STS13"]["pairs"] == expected_counts(8)["STS13"]
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(tmp_path / "missing"))  # a wrong env var is an error, not passed over
    r = run_main("eval-sts", "-m", str(tiny_model_dir), "-t", "sts13")
    assert r.code == 2 and "missing: data folder does not exist" in r.stderr


def test_pairs_files_alone_need_no_data_folder(bare, tiny_model_dir):
    (bare / "mine.tsv").write_text("".join(f"the dog {i}\ta cat {i % 3}\t{i % 5}\n" for i in range(12)), encoding="utf-8")
    r = run_main("eval-sts", "--pairs", "mine.tsv", "-m", str(tiny_model_dir), "--device", "cpu", "--json", "r.json")
    assert r.code == 0, r.stderr
    assert list(json.loads((bare / "r.json").read_text())["tasks"]) == ["mine"]


# ---- train's dev data --------------------------------------------------------------------------
def test_dev_data_order_corpus_folder_after_the_env_var(bare, tmp_path, monkeypatch):
    corpus_dir = tmp_path / "corpus"
    _data(corpus_dir / "senteval")
    (corpus_dir / "c.txt").write_text("a sentence\n")
    simcse = _data(bare / "SentEval" / "data" / "downstream")
    assert sts.discover_dev_data(corpus_dir / "c.txt") == (corpus_dir / "senteval").resolve()
    assert sts.discover_dev_data(None) == simcse.relative_to(bare)
    assert sts.discover_dev_data("-") == simcse.relative_to(bare)  # stdin has no folder
    env = _data(tmp_path / "env")
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(env))
    assert sts.discover_dev_data(corpus_dir / "c.txt") == env


def test_dev_data_passes_over_places_without_stsb_dev(bare, tmp_path, monkeypatch):
    no_dev = _data(tmp_path / "no-dev")
    (no_dev / "STS" / "STSBenchmark" / "sts-dev.csv").unlink()
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(no_dev))  # train runs on without selection rather than failing
    assert sts.discover_dev_data(None) is None
    monkeypatch.setenv(sts.DATA_DIR_ENV, str(tmp_path / "missing"))
    assert sts.discover_dev_data(None) is None
    user = _data(tmp_path / "xdg-data" / "esimcse" / "downstream")
    if sys.platform not in ("darwin", "win32"):
        assert sts.discover_dev_data(None) == user
