"""The bad-input matrix: every command, every kind of bad input a new user might try.

For each case: exit code 2, exactly one non-empty line on stderr (``esimcse: error: ...``) that names the
input and what is wrong, no traceback, nothing on stdout, and no output file (nor temporary file) left.
Runs in-process through ``cli.main()`` (tests/clirunner.py), so the whole matrix takes seconds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from clirunner import run_main
from sts_fixtures import make_senteval


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir) -> Path:
    """Inputs shared by every case (read-only for the tests)."""
    w = tmp_path_factory.mktemp("bad-input")
    (w / "ok.txt").write_text("a dog runs\nthe cat sits on the red car\n", encoding="utf-8")
    (w / "latin1.txt").write_bytes(b"a dog runs\ncaf\xe9 au lait\n")
    (w / "empty.txt").write_bytes(b"")
    (w / "folder").mkdir()
    (w / "random.bin").write_bytes(bytes(range(256)) * 8)
    # tabular inputs
    (w / "two_cols.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (w / "header_only.csv").write_text("text\n", encoding="utf-8")
    (w / "broken.csv").write_text('text\n"unterminated quote\n', encoding="utf-8")
    (w / "broken.jsonl").write_text('{"text": "a"}\n{not json\n', encoding="utf-8")
    (w / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    # model folders, each broken in one way
    tiny = Path(tiny_model_dir)
    for name in ("m_no_config", "m_bad_config", "m_config_list", "m_bad_weights", "m_no_weights", "m_no_tokenizer", "m_bad_pooling"):
        shutil.copytree(tiny, w / name)
    (w / "m_no_config" / "config.json").unlink()
    (w / "m_bad_config" / "config.json").write_text("{not json", encoding="utf-8")
    (w / "m_config_list" / "config.json").write_text("[1, 2, 3]", encoding="utf-8")
    (w / "m_bad_weights" / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    (w / "m_no_weights" / "model.safetensors").unlink()
    for f in (w / "m_no_tokenizer").iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()
    (w / "m_bad_pooling" / "esimcse.json").write_text(json.dumps({"pooling": "max"}), encoding="utf-8")
    # STS data: one good tree, and copies with one fault each
    make_senteval(w / "sts")
    stsb = Path("STS/STSBenchmark/sts-test.csv")
    sts12 = Path("STS/STS12-en-test")
    faults = {
        "sts_short_line": lambda r: _edit_line(r / stsb, 3, "only\ttwo fields"),
        "sts_bad_score": lambda r: _edit_line(r / stsb, 2, "a\tb\tc\td\tNOT-A-SCORE\tthe dog\tthe cat"),
        "sts_latin1": lambda r: (r / stsb).write_bytes((r / stsb).read_bytes() + b"caf\xe9\n"),
        "sts_empty": lambda r: (r / stsb).write_bytes(b""),
        "sts_no_test": lambda r: (r / stsb).unlink(),
        "sts_gs_mismatch": lambda r: (r / sts12 / "STS.gs.MSRpar.txt").write_text("1.0\n2.0\n", encoding="utf-8"),
        "sts_gs_missing": lambda r: (r / sts12 / "STS.gs.MSRvid.txt").unlink(),
        "sts_gs_nan": lambda r: _edit_line(r / sts12 / "STS.gs.SMTeuroparl.txt", 1, "nan"),
        "sts_one_column": lambda r: _edit_line(r / sts12 / "STS.input.MSRpar.txt", 2, "no tab on this line"),
    }
    for name, fault in faults.items():
        shutil.copytree(w / "sts", w / name)
        fault(w / name)
    # user pair files
    (w / "pairs_ok.tsv").write_text("a dog\ta cat\t3.0\nthe man\ta woman\t1\nbig car\tsmall car\t2\n", encoding="utf-8")
    (w / "pairs_bad_score.tsv").write_text("a dog\ta cat\t3.0\nthe man\ta woman\tfoo\n", encoding="utf-8")
    (w / "pairs_short.tsv").write_text("a dog\ta cat\t3.0\nonly one field\n", encoding="utf-8")
    (w / "pairs_empty.tsv").write_bytes(b"")
    (w / "pairs_latin1.tsv").write_bytes(b"a dog\ta cat\t3.0\ncaf\xe9\tthe\t1\n")
    (w / "pairs_broken.csv").write_text('"a,b\n', encoding="utf-8")
    (w / "pairs_broken.jsonl").write_text('{"a": 1\n', encoding="utf-8")
    (w / "pairs_broken.parquet").write_bytes(b"PAR1garbage")
    (w / "probe_latin1.txt").write_bytes(b"a dog runs\ncaf\xe9\n")
    return w


def _edit_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def out_dir(tmp_path, monkeypatch) -> Path:
    """A fresh folder for outputs; the system temp folder is redirected so stray temp files are seen too."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_folder").mkdir()
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    monkeypatch.delenv("ESIMCSE_DATA_DIR", raising=False)
    monkeypatch.delenv("ESIMCSE_DEBUG", raising=False)
    return out


def _expand(args: str, ws: Path, out: Path, tiny: Path) -> list[str]:
    return [a.replace("{w}", str(ws)).replace("{out}", str(out)).replace("{tiny}", str(tiny)) for a in args.split()]


def check_clean_failure(r, out: Path, needles, code: int = 2) -> str:
    """The shared assertions of the matrix; returns the error line."""
    err = r.stderr
    assert r.code == code, f"exit {r.code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(r.lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = r.lines[0]
    assert line.startswith("esimcse: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert r.stdout == b"", r.stdout[:200]
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name != "a_folder")
    assert left == [], f"left behind in the output folder: {left}"
    assert list((out / "a_folder").iterdir()) == []
    stray = list(Path(tempfile.tempdir).iterdir())
    assert stray == [], f"left in the temp folder: {stray}"
    return line


# --------------------------------------------------------------------------------------------- encode
E = "encode {w}/ok.txt -o {out}/x.npy -m {tiny}"  # a good encode command; cases change one thing
ENCODE = [
    ("missing input", "encode {w}/nope.txt -o {out}/x.npy -m {tiny}", ["nope.txt", "no such file"]),
    ("input is a folder", "encode {w}/folder -o {out}/x.npy -m {tiny}", ["folder", "is a folder"]),
    ("not UTF-8", "encode {w}/latin1.txt -o {out}/x.npy -m {tiny}", ["latin1.txt:2:", "not valid UTF-8", "--encoding-errors replace"]),
    ("binary file", "encode {w}/random.bin -o {out}/x.npy -m {tiny}", ["random.bin:2:", "not valid UTF-8"]),
    ("empty file", "encode {w}/empty.txt -o {out}/x.npy -m {tiny}", ["empty.txt", "empty"]),
    ("csv header only", "encode {w}/header_only.csv -o {out}/x.npy -m {tiny}", ["header_only.csv", "empty"]),
    ("broken csv", "encode {w}/broken.csv -o {out}/x.npy -m {tiny}", ["broken.csv", "cannot read as csv"]),
    ("broken jsonl", "encode {w}/broken.jsonl -o {out}/x.npy -m {tiny}", ["broken.jsonl", "cannot read as jsonl"]),
    ("broken parquet", "encode {w}/broken.parquet -o {out}/x.npy -m {tiny}", ["broken.parquet", "cannot read as parquet"]),
    ("csv needs a column", "encode {w}/two_cols.csv -o {out}/x.npy -m {tiny}", ["two_cols.csv", "--text-column"]),
    ("unknown column", "encode {w}/two_cols.csv -o {out}/x.npy -m {tiny} --text-column zz", ["two_cols.csv", "no column 'zz'"]),
    ("text column on txt", E + " --text-column text", ["ok.txt", "--text-column"]),
    ("output folder missing", "encode {w}/ok.txt -o {out}/no/such/x.npy -m {tiny}", ["x.npy", "does not exist"]),
    ("output is a folder", "encode {w}/ok.txt -o {out}/a_folder -m {tiny}", ["a_folder", "is a folder"]),
    ("output ends with a slash", "encode {w}/ok.txt -o {out}/results/ -m {tiny}", ["results/", "file path"]),
    ("output is the input", "encode {w}/ok.txt -o {w}/ok.txt -m {tiny}", ["ok.txt", "input file"]),
    ("model folder missing", "encode {w}/ok.txt -o {out}/x.npy -m {w}/no_model", ["no_model", "no such model folder"]),
    ("model is a file", "encode {w}/ok.txt -o {out}/x.npy -m {w}/ok.txt", ["ok.txt", "model folder"]),
    ("model empty string", "encode {w}/ok.txt -o {out}/x.npy --model=", ["--model", "empty"]),
    ("model without config.json", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_no_config", ["m_no_config", "config.json"]),
    ("model corrupt config.json", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_bad_config", ["m_bad_config", "config"]),
    ("model config.json not an object", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_config_list", ["m_config_list", "cannot load model"]),
    ("model corrupt weights", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_bad_weights", ["m_bad_weights", "cannot load model"]),
    ("model without weights", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_no_weights", ["m_no_weights", "cannot load model"]),
    ("model without tokenizer", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_no_tokenizer", ["m_no_tokenizer", "tokenizer"]),
    ("model records unknown pooling", "encode {w}/ok.txt -o {out}/x.npy -m {w}/m_bad_pooling", ["m_bad_pooling", "pooling 'max'"]),
    ("batch size 0", E + " --batch-size 0", ["--batch-size", "0"]),
    ("batch size negative", E + " -b -4", ["--batch-size", "-4"]),
    ("batch size not a number", E + " -b many", ["--batch-size", "valid integer"]),
    ("max length 0", E + " --max-length 0", ["--max-length", "0"]),
    ("max length negative", E + " --max-length -7", ["--max-length", "-7"]),
    ("unknown pooling", E + " --pooling max", ["pooling", "max"]),
    ("unknown dtype", E + " --dtype int8", ["--dtype", "int8"]),
    ("unknown encoding errors", E + " --encoding-errors maybe", ["--encoding-errors", "maybe"]),
    ("unknown device", E + " --device tpu", ["--device", "tpu"]),
    ("missing -o", "encode {w}/ok.txt -m {tiny}", ["--output"]),
    ("unknown option", E + " --fast", ["--fast"]),
    ("extra argument", E + " {w}/ok.txt", ["unexpected extra argument"]),
]


@pytest.mark.parametrize("args, needles", [pytest.param(a, n, id=i) for i, a, n in ENCODE])
def test_encode_bad_input(ws, out_dir, tiny_model_dir, args, needles):
    r = run_main(*_expand(args, ws, out_dir, tiny_model_dir))
    check_clean_failure(r, out_dir, needles)


@pytest.mark.parametrize(
    "stdin, needles",
    [pytest.param(b"", ["<stdin>", "empty"], id="empty stdin"), pytest.param(b"ok\n\xff\xfe\n", ["<stdin>:2:", "not valid UTF-8"], id="stdin not UTF-8")],
)
def test_encode_bad_stdin(ws, out_dir, tiny_model_dir, stdin, needles):
    r = run_main("encode", "-", "-o", str(out_dir / "x.npy"), "-m", str(tiny_model_dir), stdin=stdin)
    check_clean_failure(r, out_dir, needles)


def test_encode_existing_output_survives_a_failed_run(ws, out_dir, tiny_model_dir):
    """A run that fails leaves the previous output untouched (not truncated, not replaced)."""
    target = out_dir / "keep.npy"
    target.write_bytes(b"previous result")
    r = run_main("encode", str(ws / "latin1.txt"), "-o", str(target), "-m", str(tiny_model_dir))
    assert r.code == 2 and len(r.lines) == 1
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_folder", "keep.npy"]


# --------------------------------------------------------------------------------------------- augment
A = "augment {w}/ok.txt -o {out}/aug.txt --level word"
AUGMENT = [
    ("missing input", "augment {w}/nope.txt -o {out}/aug.txt --level word", ["nope.txt", "no such file"]),
    ("input is a folder", "augment {w}/folder -o {out}/aug.txt --level word", ["folder", "is a folder"]),
    ("not UTF-8 to file", "augment {w}/latin1.txt -o {out}/aug.txt --level word", ["latin1.txt:2:", "not valid UTF-8"]),
    ("not UTF-8 to stdout", "augment {w}/latin1.txt --level word", ["latin1.txt:2:", "not valid UTF-8"]),
    ("empty file", "augment {w}/empty.txt -o {out}/aug.txt --level word", ["empty.txt", "empty"]),
    ("empty file to stdout", "augment {w}/empty.txt --level word", ["empty.txt", "empty"]),
    ("output folder missing", "augment {w}/ok.txt -o {out}/no/aug.txt --level word", ["aug.txt", "does not exist"]),
    ("output is a folder", "augment {w}/ok.txt -o {out}/a_folder --level word", ["a_folder", "is a folder"]),
    ("output ends with a slash", "augment {w}/ok.txt -o {out}/results/ --level word", ["results/", "file path"]),
    ("output is the input", "augment {w}/ok.txt -o {w}/ok.txt --level word", ["ok.txt", "input file"]),
    ("dup-rate negative", A + " --dup-rate -0.1", ["--dup-rate", "-0.1"]),
    ("dup-rate above 1", A + " --dup-rate 1.5", ["--dup-rate", "1.5"]),
    ("dup-rate nan", A + " --dup-rate nan", ["--dup-rate", "nan"]),
    ("dup-rate not a number", A + " --dup-rate lots", ["--dup-rate", "valid number"]),
    ("unknown method", A + " --method shuffle", ["--method", "shuffle"]),
    ("unknown level", A.replace("--level word", "--level byte"), ["--level", "byte"]),
    ("unknown variant", A + " --variant v2", ["--variant", "v2"]),
    ("unknown insert token", A + " --method insertion --insert-token emoji", ["--insert-token", "emoji"]),
    ("unknown encoding errors", A + " --encoding-errors maybe", ["--encoding-errors", "maybe"]),
    ("show limit negative", A + " --show --show-limit -1", ["--show-limit", "-1"]),
    ("model folder missing", "augment {w}/ok.txt -o {out}/aug.txt --model {w}/no_model", ["no_model", "no such model folder"]),
    ("model empty string", "augment {w}/ok.txt -o {out}/aug.txt --model=", ["--model", "empty"]),
    ("model without tokenizer", "augment {w}/ok.txt -o {out}/aug.txt --model {w}/m_no_tokenizer", ["m_no_tokenizer", "tokenizer"]),
    ("model corrupt config.json", "augment {w}/ok.txt -o {out}/aug.txt --model {w}/m_bad_config", ["m_bad_config", "tokenizer"]),
    ("unknown option", A + " --rate 0.3", ["--rate"]),
]


@pytest.mark.parametrize("args, needles", [pytest.param(a, n, id=i) for i, a, n in AUGMENT])
def test_augment_bad_input(ws, out_dir, tiny_model_dir, args, needles):
    r = run_main(*_expand(args, ws, out_dir, tiny_model_dir))
    check_clean_failure(r, out_dir, needles)


def test_augment_empty_stdin(out_dir):
    r = run_main("augment", "-", "--level", "word", stdin=b"")
    check_clean_failure(r, out_dir, ["<stdin>", "empty"])


# --------------------------------------------------------------------------------------------- eval-sts
S = "eval-sts -m {tiny} -d {w}/sts -t stsb"
EVAL = [
    ("no data folder", "eval-sts -m {tiny}", ["--data-dir"]),
    ("data folder missing", "eval-sts -m {tiny} -d {w}/no_data", ["no_data", "does not exist"]),
    ("data folder is a file", "eval-sts -m {tiny} -d {w}/ok.txt", ["ok.txt", "not a folder"]),
    ("data folder without STS", "eval-sts -m {tiny} -d {w}/folder", ["folder", "no STS data"]),
    ("unknown task", "eval-sts -m {tiny} -d {w}/sts -t STS99", ["STS99", "unknown task"]),
    ("STS-B line too short", "eval-sts -m {tiny} -d {w}/sts_short_line -t stsb", ["sts-test.csv:3:", "fields"]),
    ("STS-B score not a number", "eval-sts -m {tiny} -d {w}/sts_bad_score -t stsb", ["sts-test.csv:2:", "NOT-A-SCORE"]),
    ("STS-B not UTF-8", "eval-sts -m {tiny} -d {w}/sts_latin1 -t stsb", ["sts-test.csv:21:", "UTF-8"]),
    ("STS-B empty", "eval-sts -m {tiny} -d {w}/sts_empty -t stsb", ["STSBenchmark", "no scored pairs"]),
    ("STS-B split missing", "eval-sts -m {tiny} -d {w}/sts_no_test -t stsb", ["sts-test.csv", "not found"]),
    ("STS12 gold/input mismatch", "eval-sts -m {tiny} -d {w}/sts_gs_mismatch -t sts12", ["STS.gs.MSRpar.txt", "lines"]),
    ("STS12 gold file missing", "eval-sts -m {tiny} -d {w}/sts_gs_missing -t sts12", ["STS.gs.MSRvid.txt", "not found"]),
    ("STS12 gold score nan", "eval-sts -m {tiny} -d {w}/sts_gs_nan -t sts12", ["STS.gs.SMTeuroparl.txt:1:", "finite"]),
    ("STS12 input one column", "eval-sts -m {tiny} -d {w}/sts_one_column -t sts12", ["STS.input.MSRpar.txt:2:", "tab"]),
    ("unknown split", S + " --split validation", ["--split", "validation"]),
    ("unknown aggregate", S + " --aggregate median", ["--aggregate", "median"]),
    ("bad buckets", S + " --buckets 5-1", ["--buckets", "5-1"]),
    ("unreadable buckets", S + " --buckets short,long", ["--buckets"]),
    ("unknown length unit", S + " --length-unit bytes", ["--length-unit", "bytes"]),
    ("batch size 0", S + " -b 0", ["--batch-size", "0"]),
    ("max length 0", S + " --max-length 0", ["--max-length", "0"]),
    ("json folder missing", S + " --json {out}/no/r.json", ["r.json", "does not exist"]),
    ("json is a folder", S + " --json {out}/a_folder", ["a_folder", "is a folder"]),
    ("csv folder missing", S + " --csv {out}/no/r.csv", ["r.csv", "does not exist"]),
    ("json ends with a slash", S + " --json {out}/results/", ["results/", "file path"]),
    ("model corrupt weights", "eval-sts -m {w}/m_bad_weights -d {w}/sts -t stsb --json {out}/r.json", ["m_bad_weights", "cannot load model"]),
    ("model without config.json", "eval-sts -m {w}/m_no_config -d {w}/sts -t stsb --json {out}/r.json", ["m_no_config", "config.json"]),
    ("model without tokenizer", "eval-sts -m {w}/m_no_tokenizer -d {w}/sts -t stsb", ["m_no_tokenizer", "tokenizer"]),
    ("model empty string", "eval-sts --model= -d {w}/sts -t stsb", ["--model", "empty"]),
    ("pairs missing", "eval-sts -m {tiny} --pairs {w}/nope.tsv", ["nope.tsv", "not found"]),
    ("pairs is a folder", "eval-sts -m {tiny} --pairs {w}/folder", ["folder", "is a folder"]),
    ("pairs empty", "eval-sts -m {tiny} --pairs {w}/pairs_empty.tsv", ["pairs_empty.tsv", "empty"]),
    ("pairs score not a number", "eval-sts -m {tiny} --pairs {w}/pairs_bad_score.tsv", ["pairs_bad_score.tsv:2:", "foo"]),
    ("pairs line too short", "eval-sts -m {tiny} --pairs {w}/pairs_short.tsv", ["pairs_short.tsv:2:", "fields"]),
    ("pairs not UTF-8", "eval-sts -m {tiny} --pairs {w}/pairs_latin1.tsv", ["pairs_latin1.tsv:2:", "UTF-8"]),
    ("pairs broken csv", "eval-sts -m {tiny} --pairs {w}/pairs_broken.csv", ["pairs_broken.csv", "cannot read"]),
    ("pairs broken jsonl", "eval-sts -m {tiny} --pairs {w}/pairs_broken.jsonl", ["pairs_broken.jsonl", "cannot read"]),
    ("pairs broken parquet", "eval-sts -m {tiny} --pairs {w}/pairs_broken.parquet", ["pairs_broken.parquet", "cannot read"]),
    ("pairs columns two", "eval-sts -m {tiny} --pairs {w}/pairs_ok.tsv --pairs-columns a,b", ["--pairs-columns", "three"]),
    ("pairs column out of range", "eval-sts -m {tiny} --pairs {w}/pairs_ok.tsv --pairs-columns 0,1,7", ["pairs_ok.tsv"]),
    ("pairs column unknown", "eval-sts -m {tiny} --pairs {w}/pairs_ok.tsv --pairs-columns x,y,z", ["pairs_ok.tsv", "'x'"]),
]


@pytest.mark.parametrize("args, needles", [pytest.param(a, n, id=i) for i, a, n in EVAL])
def test_eval_sts_bad_input(ws, out_dir, tiny_model_dir, args, needles):
    r = run_main(*_expand(args, ws, out_dir, tiny_model_dir))
    check_clean_failure(r, out_dir, needles)


# --------------------------------------------------------------------------------------------- length-analysis
L = "length-analysis -m {tiny} -d {w}/sts -t stsb --probe-sentences 10"
LENGTH = [
    ("no data folder", "length-analysis -m {tiny}", ["--data-dir"]),
    ("data folder missing", "length-analysis -m {tiny} -d {w}/no_data", ["no_data", "does not exist"]),
    ("unknown task", "length-analysis -m {tiny} -d {w}/sts -t sick-e", ["sick-e", "unknown task"]),
    ("STS-B line too short", "length-analysis -m {tiny} -d {w}/sts_short_line -t stsb", ["sts-test.csv:3:", "fields"]),
    ("STS-B not UTF-8", "length-analysis -m {tiny} -d {w}/sts_latin1 -t stsb", ["sts-test.csv:21:", "UTF-8"]),
    ("dup-rate above 1", L + " --dup-rate 2", ["--dup-rate", "2"]),
    ("dup-rate negative", L + " --dup-rate -0.5", ["--dup-rate", "-0.5"]),
    ("probe sentences negative", L + " --probe-sentences -1", ["--probe-sentences", "-1"]),
    ("unknown variant", L + " --variant v9", ["--variant", "v9"]),
    ("bad buckets", L + " --buckets 1-", ["--buckets", "1-"]),
    ("unknown length unit", L + " --length-unit bytes", ["--length-unit", "bytes"]),
    ("batch size 0", L + " -b 0", ["--batch-size", "0"]),
    ("max length negative", L + " --max-length -1", ["--max-length", "-1"]),
    ("unknown pooling", L + " --pooling max", ["pooling", "max"]),
    ("probe corpus missing", L + " --probe-corpus {w}/nope.txt", ["nope.txt", "no such file"]),
    ("probe corpus empty", L + " --probe-corpus {w}/empty.txt", ["empty.txt", "no sentences"]),
    ("probe corpus not UTF-8", L + " --probe-corpus {w}/probe_latin1.txt", ["probe_latin1.txt:2:", "UTF-8"]),
    ("probe corpus is a folder", L + " --probe-corpus {w}/folder", ["folder", "is a folder"]),
    ("plot folder missing", L + " --plot {out}/no/p.png", ["p.png", "does not exist"]),
    ("plot is a folder", L + " --plot {out}/a_folder", ["a_folder", "is a folder"]),
    ("json folder missing", L + " --json {out}/no/r.json", ["r.json", "does not exist"]),
    ("model corrupt weights", "length-analysis -m {w}/m_bad_weights -d {w}/sts -t stsb --json {out}/r.json", ["m_bad_weights", "cannot load model"]),
    ("model empty string", "length-analysis --model= -d {w}/sts -t stsb", ["--model", "empty"]),
    # refused before any work, not after the earlier models ran and the table was printed
    ("plot with an unknown suffix", L + " --plot {out}/p.txt", ["p.txt", ".png"]),
    ("second model corrupt", "length-analysis -m {tiny} -m {w}/m_bad_weights -d {w}/sts -t stsb --json {out}/r.json",
     ["m_bad_weights", "cannot load model"]),
    ("second model without weights", "length-analysis -m {tiny} -m {w}/m_no_weights -d {w}/sts -t stsb", ["m_no_weights", "no weights"]),
    ("second model without tokenizer", "length-analysis -m {tiny} -m {w}/m_no_tokenizer -d {w}/sts -t stsb", ["m_no_tokenizer", "tokenizer"]),
    ("second model corrupt config", "length-analysis -m {tiny} -m {w}/m_bad_config -d {w}/sts -t stsb", ["m_bad_config", "JSON"]),
]


@pytest.mark.parametrize("args, needles", [pytest.param(a, n, id=i) for i, a, n in LENGTH])
def test_length_analysis_bad_input(ws, out_dir, tiny_model_dir, args, needles):
    r = run_main(*_expand(args, ws, out_dir, tiny_model_dir))
    check_clean_failure(r, out_dir, needles)


# --------------------------------------------------------------------------------------------- train
# Each case through check_train_failure: exit 2 (3 only for a NaN loss, tested in test_trainer.py), one line,
# no traceback, and no output folder, state or temporary file left; where the output folder existed before the
# run, it is byte-for-byte unchanged. Cheap checks run before the corpus is read or a model is loaded.
def _train_words(n: int, seed: int = 0) -> list[str]:
    import random

    from conftest import WORDS

    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def tws(ws) -> Path:
    """Training inputs (beside the shared ones): corpora, YAML configs, saved states."""
    w = ws / "train"
    w.mkdir()
    lines = _train_words(24)
    (w / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (w / "small.txt").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")  # fewer than one batch of 4
    (w / "blank.txt").write_text("\n  \n\n", encoding="utf-8")  # only blank lines: no sentences
    (w / "latin1.txt").write_bytes(("\n".join(lines[:10]) + "\n").encode() + b"caf\xe9 au lait\n" + ("\n".join(lines[10:]) + "\n").encode())
    shutil.copytree(ws / "sts", w / "sts_no_dev")
    (w / "sts_no_dev" / "STS" / "STSBenchmark" / "sts-dev.csv").unlink()
    # configs
    c = w / "cfg"
    c.mkdir()
    (c / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (c / "not_yaml.yaml").write_text("batch_size: [1, 2\nlr: :\n", encoding="utf-8")
    (c / "unknown_key.yaml").write_text("corpus: corpus.txt\nbatch_sise: 4\n", encoding="utf-8")
    (c / "wrong_type.yaml").write_text("corpus: corpus.txt\nbatch_size: four\n", encoding="utf-8")
    (c / "python_tag.yaml").write_text("corpus: !!python/object/apply:os.system ['touch pwned']\n", encoding="utf-8")
    (c / "escape.yaml").write_text("corpus: ../../etc/passwd\n", encoding="utf-8")
    (c / "escape_abs.yaml").write_text("corpus: /etc/passwd\n", encoding="utf-8")
    (c / "escape_out.yaml").write_text("corpus: corpus.txt\noutput_dir: ../../escaped-run\n", encoding="utf-8")
    (c / "escape_dev.yaml").write_text("corpus: corpus.txt\ndev_data: ../../senteval\n", encoding="utf-8")
    (c / "escape_model.yaml").write_text(f"corpus: corpus.txt\nmodel: {ws}/m_bad_config\n", encoding="utf-8")
    (c / "escape_link.yaml").write_text("corpus: link.txt\n", encoding="utf-8")
    (c / "link.txt").symlink_to(w / "corpus.txt")  # inside by name, outside by target
    (c / "remote_code.yaml").write_text("corpus: corpus.txt\ntrust_remote_code: true\n", encoding="utf-8")
    (c / "list.yaml").write_text("- corpus.txt\n", encoding="utf-8")
    (c / "latin1.yaml").write_bytes(b"corpus: caf\xe9.txt\n")
    (c / "bad_range.yaml").write_text("corpus: corpus.txt\ndup_rate: 1.5\n", encoding="utf-8")
    return w


TRAIN_OK = "train {t}/corpus.txt -o {out}/run -m {tiny} -b 4 --max-steps 1 --save-steps 0 --eval-steps 0 --max-length 16"
TRAIN = [
    # the corpus
    ("missing corpus", "train {t}/nope.txt -o {out}/run -m {tiny} -b 4", ["nope.txt", "no such file"]),
    ("corpus is a folder", "train {w}/folder -o {out}/run -m {tiny} -b 4", ["folder", "is a folder"]),
    ("corpus not UTF-8", "train {t}/latin1.txt -o {out}/run -m {tiny} -b 4", ["latin1.txt:11:", "not valid UTF-8", "--encoding-errors"]),
    ("corpus empty", "train {w}/empty.txt -o {out}/run -m {tiny} -b 4", ["empty.txt", "no sentences"]),
    ("corpus only blank lines", "train {t}/blank.txt -o {out}/run -m {tiny} -b 4", ["blank.txt", "no sentences", "blank"]),
    ("corpus smaller than a batch", "train {t}/small.txt -o {out}/run -m {tiny} -b 4", ["small.txt", "fewer than one batch of 4"]),
    ("corpus binary", "train {w}/random.bin -o {out}/run -m {tiny} -b 4", ["random.bin:2:", "not valid UTF-8"]),
    ("no corpus", "train -o {out}/run -m {tiny}", ["no corpus"]),
    ("csv needs a column", "train {w}/two_cols.csv -o {out}/run -m {tiny} -b 4", ["two_cols.csv", "--text-column"]),
    # options out of range
    ("unknown method", TRAIN_OK + " --method moco", ["--method", "'moco'"]),
    ("lr negative", TRAIN_OK + " --lr -1", ["--lr", "-1"]),
    ("lr zero", TRAIN_OK + " --lr 0", ["--lr", "0"]),
    ("lr nan", TRAIN_OK + " --lr nan", ["--lr", "nan"]),
    ("dup-rate above 1", TRAIN_OK + " --dup-rate 1.5", ["--dup-rate", "1.5"]),
    ("dup-rate negative", TRAIN_OK + " --dup-rate -0.1", ["--dup-rate", "-0.1"]),
    ("dup-rate nan", TRAIN_OK + " --dup-rate nan", ["--dup-rate", "nan"]),
    ("queue-size negative", TRAIN_OK + " --queue-size -1", ["--queue-size", "-1"]),
    ("queue-ratio negative", TRAIN_OK + " --queue-ratio -2", ["--queue-ratio", "-2"]),
    ("batch size 0", TRAIN_OK + " --batch-size 0", ["--batch-size", "0"]),
    ("batch size not a number", TRAIN_OK + " -b many", ["--batch-size", "valid integer"]),
    ("momentum above 1", TRAIN_OK + " --momentum 1.5", ["--momentum", "1.5"]),
    ("momentum negative", TRAIN_OK + " --momentum -0.5", ["--momentum", "-0.5"]),
    ("temperature 0", TRAIN_OK + " --temperature 0", ["--temperature", "0"]),
    ("temperature inf", TRAIN_OK + " --temperature inf", ["--temperature", "inf"]),
    ("max-steps negative", TRAIN_OK + " --max-steps -5", ["--max-steps", "-5"]),
    ("max-steps 0", TRAIN_OK + " --max-steps 0", ["--max-steps", "0"]),
    ("epochs 0", TRAIN_OK + " --epochs 0", ["--epochs", "0"]),
    ("max-length 0", TRAIN_OK + " --max-length 0", ["--max-length", "0"]),
    ("dropout 1", TRAIN_OK + " --dropout 1", ["--dropout", "1"]),
    ("warmup negative", TRAIN_OK + " --warmup -1", ["--warmup", "-1"]),
    ("grad-accum 0", TRAIN_OK + " --grad-accum 0", ["--grad-accum", "0"]),
    ("max-grad-norm 0", TRAIN_OK + " --max-grad-norm 0", ["--max-grad-norm", "0"]),
    ("weight-decay negative", TRAIN_OK + " --weight-decay -1", ["--weight-decay", "-1"]),
    ("eval-steps negative", TRAIN_OK + " --eval-steps -1", ["--eval-steps", "-1"]),
    ("unknown pooler", TRAIN_OK + " --pooler max", ["--pooler", "'max'"]),
    ("unknown scheduler", TRAIN_OK + " --scheduler cosine", ["--scheduler", "'cosine'"]),
    ("unknown augmentation", TRAIN_OK + " --augmentation shuffle", ["--augmentation", "'shuffle'"]),
    ("unknown repetition variant", TRAIN_OK + " --repetition-variant v2", ["--repetition-variant", "'v2'"]),
    ("unknown encoding errors", TRAIN_OK + " --encoding-errors maybe", ["--encoding-errors", "'maybe'"]),
    ("unknown preset", TRAIN_OK + " --preset bert-huge", ["--preset", "'bert-huge'"]),
    ("unknown device", TRAIN_OK + " --device tpu", ["--device", "tpu"]),
    ("bf16 on CPU", TRAIN_OK + " --device cpu --bf16", ["--bf16", "CUDA"]),
    ("unknown option", TRAIN_OK + " --fast", ["--fast"]),
    # YAML config
    ("config missing", TRAIN_OK + " --config {t}/cfg/nope.yaml", ["nope.yaml", "not found"]),
    ("config is a folder", TRAIN_OK + " --config {t}/cfg", ["cfg", "is a folder"]),
    ("config not YAML", TRAIN_OK + " --config {t}/cfg/not_yaml.yaml", ["not_yaml.yaml:", "invalid YAML"]),
    ("config not UTF-8", TRAIN_OK + " --config {t}/cfg/latin1.yaml", ["latin1.yaml", "UTF-8"]),
    ("config not a mapping", TRAIN_OK + " --config {t}/cfg/list.yaml", ["list.yaml", "mapping"]),
    ("config unknown key", TRAIN_OK + " --config {t}/cfg/unknown_key.yaml", ["unknown_key.yaml", "unknown key 'batch_sise'"]),
    ("config wrong type", TRAIN_OK + " --config {t}/cfg/wrong_type.yaml", ["wrong_type.yaml", "batch_size", "integer", "'four'"]),
    ("config value out of range", "train -o {out}/run -m {tiny} --config {t}/cfg/bad_range.yaml", ["--dup-rate", "1.5"]),
    ("config python tag", "train -o {out}/run -m {tiny} --config {t}/cfg/python_tag.yaml", ["python_tag.yaml:1:", "invalid YAML"]),
    ("config corpus escapes (..)", "train -o {out}/run -m {tiny} --config {t}/cfg/escape.yaml", ["escape.yaml", "corpus", "leaves the config file's folder"]),
    ("config corpus absolute", "train -o {out}/run -m {tiny} --config {t}/cfg/escape_abs.yaml", ["escape_abs.yaml", "corpus", "leaves"]),
    ("config corpus symlink out", "train -o {out}/run -m {tiny} --config {t}/cfg/escape_link.yaml", ["escape_link.yaml", "corpus", "leaves"]),
    ("config output escapes", "train -m {tiny} --config {t}/cfg/escape_out.yaml", ["escape_out.yaml", "output_dir", "leaves"]),
    ("config dev data escapes", "train -o {out}/run -m {tiny} --config {t}/cfg/escape_dev.yaml", ["escape_dev.yaml", "dev_data", "leaves"]),
    ("config model escapes", "train -o {out}/run --config {t}/cfg/escape_model.yaml", ["escape_model.yaml", "model", "leaves"]),
    ("config trust_remote_code", "train -o {out}/run -m {tiny} --config {t}/cfg/remote_code.yaml", ["remote_code.yaml", "--trust-remote-code"]),
    # the output folder
    ("output parent missing", TRAIN_OK.replace("{out}/run", "{out}/no/such/run"), ["run", "does not exist"]),
    ("output is a file", TRAIN_OK.replace("{out}/run", "{t}/corpus.txt"), ["corpus.txt", "not a folder"]),
    ("resume without state", TRAIN_OK + " --resume", ["run", "no saved training state"]),
    ("resume without -o", "train {t}/corpus.txt --resume", ["--resume", "-o"]),
    # models and dev data
    ("dev data missing", TRAIN_OK + " --dev-data {w}/no_data", ["no_data"]),
    ("dev data without STS", TRAIN_OK + " --dev-data {w}/folder", ["folder", "STS"]),
    ("dev data without STS-B dev", TRAIN_OK + " --dev-data {t}/sts_no_dev", ["STSBenchmark", "dev file not found"]),
    ("model folder missing", TRAIN_OK.replace("-m {tiny}", "-m {w}/no_model"), ["no_model", "no such model folder"]),
    ("model empty string", TRAIN_OK.replace("-m {tiny}", "--model="), ["--model", "empty"]),
    ("model without config.json", TRAIN_OK.replace("-m {tiny}", "-m {w}/m_no_config"), ["m_no_config", "config.json"]),
    ("model corrupt config.json", TRAIN_OK.replace("-m {tiny}", "-m {w}/m_bad_config"), ["m_bad_config", "JSON"]),
    ("model corrupt weights", TRAIN_OK.replace("-m {tiny}", "-m {w}/m_bad_weights"), ["m_bad_weights", "cannot load model"]),
    ("model without weights", TRAIN_OK.replace("-m {tiny}", "-m {w}/m_no_weights"), ["m_no_weights", "weights"]),
    ("model without tokenizer", TRAIN_OK.replace("-m {tiny}", "-m {w}/m_no_tokenizer"), ["m_no_tokenizer", "tokenizer"]),
]


def _train_expand(args: str, ws: Path, tws: Path, out: Path, tiny: Path) -> list[str]:
    return [a.replace("{t}", str(tws)) for a in _expand(args, ws, out, tiny)]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def check_train_failure(r, out: Path, needles, code: int = 2) -> str:
    line = check_clean_failure(r, out, needles, code)
    for stray in ("escaped-run", "pwned"):
        assert not (out.parent / stray).exists() and not Path(stray).exists()
    return line


@pytest.mark.parametrize("args, needles", [pytest.param(a, n, id=i) for i, a, n in TRAIN])
def test_train_bad_input(ws, tws, out_dir, tiny_model_dir, args, needles):
    before = _snapshot(tws)
    r = run_main(*_train_expand(args, ws, tws, out_dir, tiny_model_dir))
    check_train_failure(r, out_dir, needles)
    assert _snapshot(tws) == before  # nothing written beside the inputs (a config's folder included)


def test_train_not_utf8_continues_with_encoding_errors_replace(tws, out_dir, tiny_model_dir):
    r = run_main(*TRAIN_OK.replace("{t}/corpus.txt", str(tws / "latin1.txt")).replace("{out}", str(out_dir))
                 .replace("{tiny}", str(tiny_model_dir)).split(), "--encoding-errors", "replace")
    assert r.code == 0, r.stderr
    assert (out_dir / "run" / "model.safetensors").is_file()


def _saved_run(tmp_path_factory, tiny_model_dir, tws) -> Path:
    """An output folder holding an interrupted run's state (step 1 of 3)."""
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import train

    out = tmp_path_factory.mktemp("saved") / "run"
    cfg = build_config({"corpus": str(tws / "corpus.txt"), "output_dir": str(out), "model": str(tiny_model_dir), "batch_size": 4,
                        "max_steps": 3, "save_steps": 0, "eval_steps": 0, "max_length": 16})
    res = train(cfg, should_stop=lambda step: step == 1)
    assert res.stopped == "callback" and (out / "state" / "state.json").is_file()
    return out


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tiny_model_dir, tws) -> Path:
    return _saved_run(tmp_path_factory, tiny_model_dir, tws)


STATE_FAULTS = {
    "state.json not JSON": (lambda s: (s / "state.json").write_text("{not json", encoding="utf-8"), ["state", "unreadable"]),
    "state.json a list": (lambda s: (s / "state.json").write_text("[1]", encoding="utf-8"), ["state.json", "not a training state"]),
    "state.json without step": (lambda s: _edit_json(s / "state.json", lambda d: d.pop("step")), ["state.json", "step"]),
    "state.json bad config value": (lambda s: _edit_json(s / "state.json", lambda d: d["config"].update(batch_size="x")), ["state.json", "batch_size"]),
    "state.json unknown config key": (lambda s: _edit_json(s / "state.json", lambda d: d["config"].update(zzz=1)), ["state.json", "'zzz'"]),
    "state.safetensors corrupt": (lambda s: (s / "state.safetensors").write_bytes(b"\x00garbage" * 32), ["state", "unreadable"]),
    "state.safetensors truncated": (lambda s: _truncate(s / "state.safetensors"), ["state", "unreadable"]),
    "state.safetensors missing": (lambda s: (s / "state.safetensors").unlink(), ["run", "no saved training state"]),
    "state.safetensors of another model": (lambda s: _drop_tensor(s / "state.safetensors"), ["state", "saved state does not match", "LayerNorm"]),
}


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    t = load_file(str(path))
    t.pop(next(k for k in t if k.startswith("online.")))
    save_file(t, str(path))


@pytest.mark.parametrize("fault", list(STATE_FAULTS))
def test_train_resume_with_a_corrupt_state(saved_run, tws, out_dir, tmp_path, tiny_model_dir, fault):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    edit, needles = STATE_FAULTS[fault]
    edit(run / "state")
    before = _snapshot(run)
    r = run_main("train", str(tws / "corpus.txt"), "-o", str(run), "-m", str(tiny_model_dir), "--resume")
    check_train_failure(r, out_dir, needles)
    assert _snapshot(run) == before  # the run folder is untouched: the state can still be repaired or inspected


@pytest.mark.parametrize(
    "extra, needles",
    [
        pytest.param([], ["run", "not empty", "--overwrite", "--resume"], id="exists without --overwrite"),
        pytest.param(["--resume", "--batch-size", "8"], ["--batch-size", "cannot change"], id="resume changes batch size"),
        pytest.param(["--resume", "--max-steps", "-1"], ["--max-steps", "-1"], id="resume with a bad value"),
    ],
)
def test_train_existing_output_folder_is_unchanged(saved_run, tws, out_dir, tmp_path, tiny_model_dir, extra, needles):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    before = _snapshot(run)
    r = run_main("train", str(tws / "corpus.txt"), "-o", str(run), "-m", str(tiny_model_dir), "-b", "4", *extra)
    check_train_failure(r, out_dir, needles)
    assert _snapshot(run) == before


def test_train_resume_with_another_corpus_is_refused(saved_run, tws, out_dir, tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    before = _snapshot(run)
    r = run_main("train", str(tws / "latin1.txt"), "-o", str(run), "--resume", "--encoding-errors", "replace")
    check_train_failure(r, out_dir, ["latin1.txt", "not the corpus"])
    assert _snapshot(run) == before


def test_train_output_that_holds_user_files_is_refused(tws, out_dir, tmp_path, tiny_model_dir):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    r = run_main(*TRAIN_OK.replace("{t}", str(tws)).replace("{out}/run", str(run)).replace("{tiny}", str(tiny_model_dir)).split())
    check_train_failure(r, out_dir, ["mine", "--overwrite"])
    assert _snapshot(run) == {"notes.txt": b"mine"}


# --------------------------------------------------------------------------------------------- usage and --debug
@pytest.mark.parametrize(
    "args, needles",
    [
        pytest.param("frobnicate", ["No such command", "frobnicate"], id="unknown command"),
        pytest.param("encode {w}/ok.txt -o", ["-o", "requires an argument"], id="option without value"),
        pytest.param("eval-sts --bogus", ["--bogus"], id="unknown option"),
    ],
)
def test_usage_errors_are_one_line(ws, out_dir, tiny_model_dir, args, needles):
    r = run_main(*_expand(args, ws, out_dir, tiny_model_dir))
    check_clean_failure(r, out_dir, needles)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(ws, out_dir, monkeypatch, how):
    from esimcse_cli.core.errors import InputError

    args = ["encode", str(ws / "nope.txt"), "-o", str(out_dir / "x.npy")]
    if how == "flag":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("ESIMCSE_DEBUG", "1")
    with pytest.raises(InputError, match="nope.txt: no such file"):
        run_main(*args)
    # and the next run, without --debug, is back to one line
    monkeypatch.delenv("ESIMCSE_DEBUG", raising=False)
    r = run_main(*args[-4:])
    check_clean_failure(r, out_dir, ["nope.txt"])


def test_internal_error_is_one_line_exit_1(ws, out_dir, monkeypatch, tiny_model_dir):
    """A bug (not bad input) is still one line, exit 1, with a pointer to --debug."""
    from esimcse_cli.core import embed

    def boom(*a, **k):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(embed, "encode_file", boom)
    r = run_main("encode", str(ws / "ok.txt"), "-o", str(out_dir / "x.npy"), "-m", str(tiny_model_dir))
    line = check_clean_failure(r, out_dir, ["internal error", "RuntimeError: simulated bug", "--debug"], code=1)
    assert "second line" not in line


# --------------------------------------------------------------------------------------------- terminals and the environment
class _Tty:
    def isatty(self) -> bool:
        return True


def test_no_input_on_a_terminal_is_refused_not_waited_on(monkeypatch):
    """`esimcse encode -o x.npy` typed at a prompt would wait forever on stdin: it is a one-line error instead."""
    import sys

    from esimcse_cli.core.augment_text import check_augment_args
    from esimcse_cli.core.embed import check_encode_args
    from esimcse_cli.core.errors import InputError

    monkeypatch.setattr(sys, "stdin", _Tty())
    with pytest.raises(InputError, match="no input"):
        check_encode_args("-", "x.npy")
    with pytest.raises(InputError, match="no input"):
        check_augment_args("-")


def test_binary_npy_is_not_written_to_a_terminal(ws, out_dir, tiny_model_dir, monkeypatch):
    from esimcse_cli.core import embed

    monkeypatch.setattr(embed, "_isatty", lambda stream: True)
    r = run_main("encode", str(ws / "ok.txt"), "-o", "-", "-m", str(tiny_model_dir))
    check_clean_failure(r, out_dir, ["stdout is a terminal"])


def test_unwritable_output_folder_is_one_line(ws, out_dir, tiny_model_dir, monkeypatch):
    """Permission denied (simulated: the tests may run as root) on the temporary file: exit 2, one line."""

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    r = run_main("encode", str(ws / "ok.txt"), "-o", str(out_dir / "x.npy"), "-m", str(tiny_model_dir))
    check_clean_failure(r, out_dir, ["x.npy", "cannot write", "Permission denied"])


def test_disk_full_mid_write_is_one_line_and_leaves_nothing(ws, out_dir, tiny_model_dir, monkeypatch):
    from esimcse_cli.core import encoder

    real = encoder.SentenceEncoder.encode

    def full(self, *a, **k):
        real(self, *a, **k)
        raise OSError(28, "No space left on device", str(out_dir / "x.npy"))

    monkeypatch.setattr(encoder.SentenceEncoder, "encode", full)
    r = run_main("encode", str(ws / "ok.txt"), "-o", str(out_dir / "x.npy"), "-m", str(tiny_model_dir))
    check_clean_failure(r, out_dir, ["x.npy", "No space left on device"])  # and the temp .npy was removed


@pytest.mark.parametrize("device", ["cuda:7", "cuda:x", "cuda0", "cuda:-1"])
def test_cuda_index_out_of_range_is_one_line(ws, out_dir, tiny_model_dir, monkeypatch, device):
    """On a (simulated) one-GPU machine, a wrong cuda index is a clean error, not a CUDA traceback."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    r = run_main("encode", str(ws / "ok.txt"), "-o", str(out_dir / "x.npy"), "-m", str(tiny_model_dir), "--device", device)
    check_clean_failure(r, out_dir, ["--device", device, "cuda:N"])


def test_train_nan_loss_is_exit_3_one_line(tws, out_dir, tiny_model_dir, monkeypatch):
    """By design not exit 2: the inputs were valid and the run diverged. The output folder keeps what was saved."""
    from esimcse_cli.core import trainer

    real = trainer.contrastive_loss
    calls = []

    def nan_at_3(*a, **k):
        calls.append(1)
        loss = real(*a, **k)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer, "contrastive_loss", nan_at_3)
    run = out_dir / "run"
    r = run_main(*TRAIN_OK.replace("{t}", str(tws)).replace("{out}", str(out_dir)).replace("{tiny}", str(tiny_model_dir)).split(),
                 "--max-steps", "5", "--save-steps", "2")
    assert r.code == 3, r.stderr
    errors = [l for l in r.lines if l.startswith("esimcse: error:")]
    assert "Traceback" not in r.stderr and errors == [r.lines[-1]]  # training had started: its info line comes first
    assert errors[0].startswith("esimcse: error: step 3: loss is nan") and "--lr" in errors[0] and "state" in errors[0]
    assert json.loads((run / "state" / "state.json").read_text())["step"] == 2
    assert not (run / "model.safetensors").exists() and not [p for p in run.iterdir() if p.name.startswith(".")]
