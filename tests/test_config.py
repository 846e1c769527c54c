"""TrainConfig: YAML loading, precedence, presets, refusals."""

from __future__ import annotations

import pytest
import yaml

from esimcse_cli.core.config import PRESETS, TrainConfig, build_config, load_preset
from esimcse_cli.core.errors import ConfigError


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_match_the_paper(tiny_model_dir):
    c = TrainConfig().resolved()
    assert (c.batch_size, c.max_length, c.lr, c.temperature) == (64, 32, 3e-5, 0.05)
    assert (c.dup_rate, c.momentum, c.queue_ratio) == (0.32, 0.995, 2.5)
    assert c.repetition and c.momentum_queue
    assert c.effective_queue_size() == 160
    # --pooler auto: a raw BERT, which declares no pooling, gets the paper's [CLS] + training-only MLP
    assert c.pooler == "auto" and c.mlp is None
    from esimcse_cli.core.trainer import settle_pooler

    raw, why = settle_pooler(TrainConfig(model=str(tiny_model_dir)).resolved())
    assert (raw.pooler, raw.mlp, raw.test_pooling) == ("cls", True, "cls_before_pooler") and "declares no pooling" in why


def test_method_simcse_turns_both_parts_off_and_flags_override():
    c = build_config({"method": "simcse"}).resolved()
    assert not c.repetition and not c.momentum_queue and c.effective_queue_size() == 0
    c = build_config({"method": "simcse", "repetition": True}).resolved()
    assert c.repetition and not c.momentum_queue


def test_unknown_key_is_refused_naming_it(tmp_path):
    p = write(tmp_path, "batch_size: 8\ndup_ratee: 0.2\n")
    with pytest.raises(ConfigError, match="dup_ratee"):
        build_config({}, p)


@pytest.mark.parametrize(
    "text,key",
    [("batch_size: 8.5\n", "batch_size"), ("lr: fast\n", "lr"), ("dedupe: 3\n", "dedupe"), ("epochs: true\n", "epochs")],
)
def test_wrong_type_is_refused(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        build_config({}, write(tmp_path, text))


def test_python_tag_is_refused(tmp_path):
    p = write(tmp_path, "model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        build_config({}, p)


@pytest.mark.parametrize(
    "values,key",
    [({"dup_rate": 1.5}, "dup-rate"), ({"batch_size": 0}, "batch-size"), ({"queue_size": -1}, "queue-size"),
     ({"method": "moco"}, "method"), ({"temperature": 0.0}, "temperature")],
)
def test_out_of_range_is_refused(values, key):
    with pytest.raises(ConfigError, match=key):
        build_config(values)


def test_precedence_preset_then_file_then_cli(tmp_path):
    p = write(tmp_path, "preset: roberta-large\nlr: 2.0e-5\nbatch_size: 32\n")
    c = build_config({"batch_size": 16}, p)
    assert c.dup_rate == 0.28 and c.queue_size == 128  # from the preset
    assert c.lr == 2e-5  # file over preset
    assert c.batch_size == 16  # command line over file


def test_presets_hold_the_paper_values():
    got = {name: load_preset(name) for name in PRESETS}
    assert [got[n]["lr"] for n in PRESETS] == [3e-5, 1e-5, 1e-5, 1e-5]
    assert [got[n]["dup_rate"] for n in PRESETS] == [0.32, 0.32, 0.30, 0.28]
    assert [got[n]["queue_size"] for n in PRESETS] == [160, 160, 160, 128]
    # roberta-large: 0.15 as the released ESimCSE/run.sh and logs/roberta-large.log have it (see the preset)
    assert [got[n]["dropout"] for n in PRESETS] == [0.1, 0.1, 0.1, 0.15]


def test_config_paths_are_confined_to_the_config_folder(tmp_path):
    (tmp_path / "c.txt").write_text("x\n")
    c = build_config({}, write(tmp_path, "corpus: c.txt\n"))
    assert c.corpus == str((tmp_path / "c.txt").resolve())
    with pytest.raises(ConfigError, match="corpus"):
        build_config({}, write(tmp_path, "corpus: ../elsewhere.txt\n"))
    with pytest.raises(ConfigError, match="dev_data"):
        build_config({}, write(tmp_path, "dev_data: /etc\n"))
    # the command line may override such a path
    c = build_config({"corpus": "/tmp/x.txt"}, write(tmp_path, "corpus: /etc/passwd\n"))
    assert c.corpus == "/tmp/x.txt"


def test_written_config_round_trips(tmp_path):
    c = build_config({"batch_size": 8, "method": "simcse", "max_steps": 3})
    p = tmp_path / "train_config.yaml"
    from esimcse_cli.core.config import write_config

    write_config(c, p)
    assert yaml.safe_load(p.read_text())["batch_size"] == 8
    assert build_config({}, p) == c


def test_to_cli_args_round_trips_through_the_cli_parser():
    from typer.testing import CliRunner

    from esimcse_cli.core.config import to_cli_args

    c = build_config({"corpus": "c.txt", "output_dir": "o", "method": "simcse", "repetition": True, "dup_rate": 0.24,
                      "batch_size": 16, "mlp": False, "pooler": "avg"})
    args = to_cli_args(c)
    assert args[0] == "c.txt" and "--repetition" in args and "--no-mlp" in args and args[args.index("--dup-rate") + 1] == "0.24"
    # every flag exists on the command and parses back to the same values
    import typer

    from esimcse_cli.cli import app

    group = typer.main.get_command(app)
    ctx = group.commands["train"].make_context("train", list(args))
    p = ctx.params
    assert (p["corpus"], p["output_dir"], p["method"], p["repetition"], p["dup_rate"], p["batch_size"], p["mlp"], p["pooler"]) == (
        "c.txt", "o", "simcse", True, 0.24, 16, False, "avg")


def test_model_path_in_a_config_is_confined_but_hub_names_pass(tmp_path):
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    (cfg_dir / "mymodel").mkdir()
    (tmp_path / "outside").mkdir()
    c = build_config({}, write(cfg_dir, "model: mymodel\n"))
    assert c.model == str((cfg_dir / "mymodel").resolve())  # relative to the config's folder
    for value in ("default", "bert-base-uncased", "princeton-nlp/unsup-simcse-bert-base-uncased"):
        assert build_config({}, write(cfg_dir, f"model: {value}\n")).model == value
    for value in (str(tmp_path / "outside"), "../outside", "~/models/x", "/no/such/model"):
        with pytest.raises(ConfigError, match="model: .* leaves the config file's folder"):
            build_config({}, write(cfg_dir, f"model: '{value}'\n"))
    (cfg_dir / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigError, match="model"):
        build_config({}, write(cfg_dir, "model: link\n"))
    # the command line may name any model
    assert build_config({"model": str(tmp_path / "outside")}, write(cfg_dir, "model: ../outside\n")).model == str(tmp_path / "outside")


def test_a_config_file_cannot_turn_on_remote_code(tmp_path):
    p = write(tmp_path, "trust_remote_code: true\n")
    with pytest.raises(ConfigError, match="--trust-remote-code"):
        build_config({}, p)
    assert build_config({"trust_remote_code": True}, p).trust_remote_code is True
    assert build_config({}, write(tmp_path, "trust_remote_code: false\n")).trust_remote_code is False


@pytest.mark.parametrize("key", ["lr", "temperature", "weight_decay", "queue_ratio", "max_grad_norm", "momentum"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')}"):
        build_config({key: value})


def test_a_run_from_a_config_writes_only_inside_its_output_folder(tmp_path, tiny_model_dir, monkeypatch):
    """Every file a run writes is under output_dir (resolved inside the config's folder); nothing else changes."""
    import random
    import tempfile

    from clirunner import run_main
    from conftest import WORDS

    r = random.Random(0)
    cfg_dir = tmp_path / "project"
    cfg_dir.mkdir()
    (cfg_dir / "corpus.txt").write_text("\n".join(" ".join(r.choice(WORDS) for _ in range(6)) for _ in range(20)) + "\n")
    (cfg_dir / "train.yaml").write_text(f"corpus: corpus.txt\noutput_dir: runs/first\nmodel: '{tiny_model_dir}'\nbatch_size: 4\n"
                                        "max_steps: 2\nsave_steps: 1\nmax_length: 16\nkeep_state: true\n")
    (cfg_dir / "runs").mkdir()
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    before = {p for p in tmp_path.rglob("*")}
    res = run_main("train", "--config", str(cfg_dir / "train.yaml"), "-m", str(tiny_model_dir), cwd=cwd)
    assert res.code == 0, res.stderr
    new = {p for p in tmp_path.rglob("*")} - before - {cfg_dir / "runs" / "first"}
    run = (cfg_dir / "runs" / "first").resolve()
    assert new and all(run in p.resolve().parents for p in new), sorted(map(str, new))
    assert {"model.safetensors", "train_config.yaml", "manifest.json", "metrics.jsonl", "state"} <= {p.name for p in run.iterdir()}
    assert list(systmp.iterdir()) == [] and list(cwd.iterdir()) == []


def test_every_train_option_is_a_config_field_and_back():
    """The train command's parameters are TrainConfig's fields by name: the options are written once."""
    import dataclasses

    import typer

    from esimcse_cli.cli import app
    from esimcse_cli.cli.train import NOT_CONFIG

    command = typer.main.get_command(app).commands["train"]
    options = {p.name for p in command.params} - set(NOT_CONFIG)
    assert options == {f.name for f in dataclasses.fields(TrainConfig)} - {"eval_batch_size"}  # internal: no option


@pytest.fixture
def no_usual_data(tmp_path, monkeypatch):
    """No STS data where discovery looks unless a test puts it there: an empty working folder, no env, no user folders."""
    from esimcse_cli.core import sts

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(sts.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(sts, "user_data_dirs", lambda: [])
    return work


def test_a_run_gets_a_default_output_folder_and_needs_a_corpus(no_usual_data, tmp_path):
    from esimcse_cli.core.config import DEFAULT_OUTPUT_DIR
    from sts_fixtures import make_senteval

    (tmp_path / "c.txt").write_text("x\n")
    make_senteval(tmp_path / "senteval")
    plain = build_config({"corpus": str(tmp_path / "c.txt")})  # a library caller names what it wants
    assert (plain.output_dir, plain.dev_data) == (None, None)
    with pytest.raises(ConfigError, match="no corpus given: esimcse train CORPUS"):
        build_config({}, run=True)
    c = build_config({"corpus": str(tmp_path / "c.txt")}, run=True)
    assert c.output_dir == DEFAULT_OUTPUT_DIR and c.dev_data == str((tmp_path / "senteval").resolve())
    for off in ("none", "None"):
        assert build_config({"corpus": str(tmp_path / "c.txt"), "dev_data": off}, run=True).dev_data is None
        assert build_config({"corpus": str(tmp_path / "c.txt"), "dev_data": off}).dev_data == off


def test_train_says_where_it_found_dev_data(no_usual_data, tmp_path, tiny_model_dir):
    """The line on stderr is the one the CLI printed before the discovery moved into build_config."""
    import random

    from clirunner import run_main
    from conftest import WORDS
    from sts_fixtures import make_senteval

    r = random.Random(0)
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(r.choice(WORDS) for _ in range(6)) for _ in range(16)) + "\n")
    found = make_senteval(tmp_path / "senteval").resolve()
    args = [str(tmp_path / "corpus.txt"), "-m", str(tiny_model_dir), "-b", "4", "--max-steps", "1", "--max-length", "16",
            "--eval-steps", "0", "--save-steps", "0"]
    res = run_main("train", *args, "-o", str(tmp_path / "found"))
    assert res.code == 0, res.stderr
    assert f"selecting on STS-B dev from {found} (found without --dev-data; --dev-data none turns it off)" in res.lines
    res = run_main("train", *args, "-o", str(tmp_path / "off"), "--dev-data", "none")
    assert res.code == 0, res.stderr
    assert not any("selecting on STS-B dev" in line for line in res.lines)
    assert yaml.safe_load((tmp_path / "off" / "train_config.yaml").read_text())["dev_data"] is None
    res = run_main("train", "--resume")
    assert res.code == 2 and res.lines == ["esimcse: error: --resume needs -o OUT_DIR, the folder of the interrupted run"]
