"""Faults of the environment in the middle of the work, tried as a user would.

Concurrent runs on one output folder (the run lock, core/runlock.py), a kill -9 and then ``--resume``, a full
disk (a real 1 MiB tmpfs where mounting is permitted, and simulated), a read-only folder, stdout that is full
or closed, stderr closed during training, the output folder deleted and the input changed mid-run.

In every case: one line and exit 2 (or exit 0 where only a reader went away), no traceback, and nothing
half-written or lost. Tests that start a Python with torch in a subprocess are ``slow``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from clirunner import run_main
from conftest import WORDS
from sts_fixtures import make_senteval

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------------------------- helpers
def _lines(n: int, seed: int = 0) -> list[str]:
    import random

    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 12))) for _ in range(n)]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _errors(r) -> list[str]:
    return [l for l in r.lines if l.startswith("esimcse: error:")]


def _one_error(r, *needles: str, code: int = 2) -> str:
    assert r.code == code, f"exit {r.code}:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    errors = _errors(r)
    assert len(errors) == 1 and errors[0] == r.lines[-1], r.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture
def systmp(tmp_path, monkeypatch) -> Path:
    """The system temporary folder, redirected so that stray temporary files are seen."""
    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    monkeypatch.delenv("ESIMCSE_DATA_DIR", raising=False)
    return d


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults-input")
    (d / "corpus.txt").write_text("\n".join(_lines(24)) + "\n", encoding="utf-8")
    (d / "big.txt").write_text("\n".join(_lines(3000, 1)) + "\n", encoding="utf-8")
    make_senteval(d / "senteval")
    return d


def _train_args(texts: Path, out: Path, tiny: Path, *extra: str) -> list[str]:
    return ["train", str(texts / "corpus.txt"), "-o", str(out), "-m", str(tiny), "-b", "4", "--max-length", "16",
            "--eval-steps", "0", "--save-steps", "0", "--dev-data", "none", *extra]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tiny_model_dir, texts) -> Path:
    """An output folder holding an interrupted run's state (step 1 of 3); copy it before changing it."""
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import train

    out = tmp_path_factory.mktemp("faults-saved") / "run"
    cfg = build_config({"corpus": str(texts / "corpus.txt"), "output_dir": str(out), "model": str(tiny_model_dir), "batch_size": 4,
                        "max_steps": 3, "save_steps": 0, "eval_steps": 0, "max_length": 16})
    res = train(cfg, should_stop=lambda step: step == 1)
    assert res.stopped == "callback" and (out / "state" / "state.json").is_file()
    assert not (out / ".esimcse.lock").exists()
    return out


@pytest.fixture
def sleeper():
    """A live process that is not this one (for a lock "held by another run")."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write_lock(folder: Path, pid: int, *, host: str | None = None, start="auto", dir_id="auto") -> dict:
    from esimcse_cli.core import runlock

    st = folder.stat()
    info = {"pid": pid, "host": host or socket.gethostname(), "since": time.time() - 60,
            "start": runlock._start_time(pid) if start == "auto" else start,
            "dir": [st.st_dev, st.st_ino] if dir_id == "auto" else dir_id, "token": "f" * 16, "program": "esimcse train"}
    (folder / runlock.LOCK_NAME).write_text(json.dumps(info) + "\n", encoding="utf-8")
    return info


# --------------------------------------------------------------------------------------------- the lock itself
def test_the_lock_is_taken_once_and_names_its_holder(tmp_path):
    from esimcse_cli.core import runlock

    out = tmp_path / "run"
    lock = runlock.acquire(out)
    info = json.loads((out / ".esimcse.lock").read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["since"] > 0
    with pytest.raises(runlock.LockHeld) as held:
        runlock.acquire(out)
    msg = str(held.value)
    assert "\n" not in msg and f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "since" in msg and "in use" in msg
    lock.release()
    assert not out.exists()  # the folder was made only for the lock, and nothing was written
    lock.release()  # twice is harmless


def test_release_leaves_an_existing_folder_as_it_was(tmp_path):
    from esimcse_cli.core import runlock

    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with runlock.acquire(out):
        assert (out / ".esimcse.lock").is_file()
    assert _snapshot(out) == {"notes.txt": b"mine"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with runlock.acquire(empty):
        pass
    assert empty.is_dir() and list(empty.iterdir()) == []  # an existing empty folder stays


def test_a_lock_left_by_a_dead_process_is_taken_over_with_one_warning(tmp_path, caplog):
    from esimcse_cli.core import runlock

    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    _write_lock(out, pid, start=None)
    with caplog.at_level("WARNING", logger="esimcse"):
        lock = runlock.acquire(out)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"pid {pid}" in warnings[0] and "no longer running" in warnings[0]
    assert json.loads((out / ".esimcse.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("how", ["pid reused", "folder copied", "left by this process"])
def test_a_lock_whose_holder_is_another_process_now_is_stale(tmp_path, sleeper, how):
    from esimcse_cli.core import runlock

    out = tmp_path / "run"
    out.mkdir()
    if how == "pid reused":  # a live pid, but not the process that took the lock (another start time)
        if runlock._start_time(sleeper.pid) is None:
            pytest.skip("no process start times here (/proc)")
        _write_lock(out, sleeper.pid, start=(runlock._start_time(sleeper.pid) or 0) + 1)
    elif how == "folder copied":  # cp -r of a folder a live run holds: that lock never held the copy
        _write_lock(out, sleeper.pid, dir_id=[0, 0])
    else:  # this pid, but not a lock this process holds (an earlier in-process run that was cut short)
        _write_lock(out, os.getpid())
    assert runlock.holder_alive(out, runlock.read_holder(out)) is False
    with runlock.acquire(out):
        pass
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("how", ["live", "other host", "unreadable"])
def test_a_lock_that_may_be_live_is_refused_not_taken(tmp_path, sleeper, how):
    from esimcse_cli.core import runlock

    out = tmp_path / "run"
    out.mkdir()
    if how == "live":
        _write_lock(out, sleeper.pid)
        needles = ["in use", f"pid {sleeper.pid}", "since"]
    elif how == "other host":
        _write_lock(out, 12345, host="elsewhere.example")
        needles = ["pid 12345 on host elsewhere.example", "cannot be checked", "remove", ".esimcse.lock"]
    else:
        (out / ".esimcse.lock").write_bytes(b"\x00garbage")
        needles = ["unreadable", "remove"]
    before = _snapshot(out)
    with pytest.raises(runlock.LockHeld) as held:
        runlock.acquire(out)
    for needle in needles:
        assert needle in str(held.value)
    assert _snapshot(out) == before
    assert runlock.remove_stale(out) is False and _snapshot(out) == before


def test_release_never_removes_a_lock_that_is_no_longer_ours(tmp_path, sleeper):
    from esimcse_cli.core import runlock

    out = tmp_path / "run"
    lock = runlock.acquire(out)
    _write_lock(out, sleeper.pid)  # e.g. someone removed ours by hand and another run took the folder
    lock.release()
    assert json.loads((out / ".esimcse.lock").read_text())["pid"] == sleeper.pid


def test_of_many_processes_at_once_exactly_one_gets_the_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    go = tmp_path / "go"
    done = tmp_path / "done"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from esimcse_cli.core import runlock\n"
        "print('ready', flush=True)\n"
        "while not Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
        "try:\n"
        "    lock = runlock.acquire(Path(sys.argv[1]))\n"
        "except runlock.LockHeld:\n"
        "    print('refused', flush=True); sys.exit(0)\n"
        "print('got', flush=True)\n"
        "while not Path(sys.argv[3]).exists(): time.sleep(0.01)\n"
        "lock.release()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(out), str(go), str(done)], stdout=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(6)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 6
        go.touch()  # all at once
        results = sorted(p.stdout.readline().strip() for p in procs)
    finally:
        done.touch()
        for p in procs:
            p.communicate(timeout=60)
    assert results == ["got"] + ["refused"] * 5, results
    assert list(out.iterdir()) == []


def test_without_hard_links_the_lock_is_made_with_o_excl(tmp_path, monkeypatch):
    from esimcse_cli.core import runlock

    def no_links(*a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "run"
    with runlock.acquire(out):
        assert json.loads((out / ".esimcse.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(runlock.LockHeld):
            runlock.acquire(out)
        assert sorted(p.name for p in out.iterdir()) == [".esimcse.lock"]  # no temporary file left
    assert not out.exists()


# --------------------------------------------------------------------------------------------- train and the lock
@pytest.mark.parametrize("extra", [pytest.param([], id="plain"), pytest.param(["--overwrite"], id="overwrite"),
                                   pytest.param(["--resume"], id="resume")])
def test_train_refuses_a_folder_that_a_live_run_holds(saved_run, texts, tiny_model_dir, tmp_path, systmp, sleeper, extra):
    """Before touching anything: the other run's state and files stay byte-for-byte, its lock too."""
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    _write_lock(run, sleeper.pid)
    before = _snapshot(run)
    r = run_main(*_train_args(texts, run, tiny_model_dir, *extra))
    line = _one_error(r, str(run), "in use by another esimcse run", f"pid {sleeper.pid}", f"on host {socket.gethostname()}", "since")
    assert len(r.lines) == 1, r.stderr
    assert line
    assert _snapshot(run) == before
    assert list(systmp.iterdir()) == []


@pytest.mark.parametrize("extra", [pytest.param(["--resume"], id="resume"), pytest.param(["--overwrite"], id="overwrite")])
def test_a_stale_lock_does_not_block_the_next_run(saved_run, texts, tiny_model_dir, tmp_path, systmp, extra):
    """What a kill -9 leaves (a state and the lock of a dead pid): the next run takes over, with one warning."""
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    pid = _dead_pid()
    _write_lock(run, pid, start=None)
    if extra == ["--resume"]:
        r = run_main("train", "--resume", "-o", str(run), "--max-steps", "3")
    else:
        r = run_main(*_train_args(texts, run, tiny_model_dir, "--max-steps", "3", *extra))
    assert r.code == 0, r.stderr
    takeovers = [l for l in r.lines if "taking over the lock" in l]
    assert len(takeovers) == 1 and f"pid {pid}" in takeovers[0], r.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["steps"] == 3 and manifest["resumed_from_step"] == (1 if extra == ["--resume"] else None)
    assert not (run / ".esimcse.lock").exists() and not [p for p in run.iterdir() if p.name.startswith(".")]


def test_resume_with_dev_data_none_turns_selection_off(saved_run, tmp_path, systmp):
    """Before: `esimcse: error: none: data folder does not exist` (`none` was taken as a folder on --resume)."""
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    r = run_main("train", "--resume", "-o", str(run), "--max-steps", "2", "--dev-data", "none")
    assert r.code == 0, r.stderr
    assert json.loads((run / "manifest.json").read_text())["steps"] == 2


def test_clear_previous_run_keeps_a_live_lock_and_clears_a_stale_one(tmp_path, sleeper):
    from esimcse_cli.core.run_folder import clear_previous_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n", encoding="utf-8")
    _write_lock(run, sleeper.pid)
    clear_previous_run(run)
    assert sorted(p.name for p in run.iterdir()) == [".esimcse.lock"]
    _write_lock(run, _dead_pid(), start=None)
    clear_previous_run(run)
    assert list(run.iterdir()) == []


def test_a_run_that_fails_early_leaves_no_lock_and_no_folder(texts, tiny_model_dir, tmp_path):
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.errors import InputError
    from esimcse_cli.core.trainer import train

    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        cfg = build_config({"corpus": str(tmp_path / "nope.txt"), "output_dir": str(out), "model": str(tiny_model_dir), "batch_size": 4})
        with pytest.raises(InputError, match="nope.txt"):
            train(cfg)
        assert (out.name == "empty") == out.exists()
        assert not out.exists() or list(out.iterdir()) == []


def test_only_rank_0_takes_the_lock(texts, tmp_path, monkeypatch):
    """Under torchrun, rank 0 holds the folder; the other ranks hear from it whether that worked."""
    from esimcse_cli.core import distributed, run_folder
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.errors import InputError

    cfg = build_config({"corpus": str(texts / "corpus.txt"), "output_dir": str(tmp_path / "run")})
    monkeypatch.setattr(distributed, "any_rank", lambda flag, info, device="cpu": flag)
    assert run_folder.hold_output(cfg, distributed.DistInfo(rank=1, world_size=2)) is None
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(distributed, "any_rank", lambda flag, info, device="cpu": True)  # rank 0 failed
    with pytest.raises(InputError, match="rank 0 could not take the output folder"):
        run_folder.hold_output(cfg, distributed.DistInfo(rank=1, world_size=2))
    monkeypatch.undo()
    lock = run_folder.hold_output(build_config({"output_dir": str(tmp_path / "run0")}), distributed.DistInfo())
    assert (tmp_path / "run0" / ".esimcse.lock").is_file()
    lock.release()
    assert not (tmp_path / "run0").exists()


@pytest.mark.slow
def test_two_real_runs_on_one_folder(texts, tiny_model_dir, tmp_path, systmp):
    """A second `train --overwrite` while the first runs: refused with the first's pid; the first finishes its job."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "esimcse_cli", *_train_args(texts, out, tiny_model_dir, "--max-steps", "100000", "--log-steps", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        for extra in (["--overwrite"], ["--resume"], []):
            r = run_main(*_train_args(texts, out, tiny_model_dir, *extra))
            _one_error(r, "in use by another esimcse run", f"pid {proc.pid}")
        assert (out / "train_config.yaml").is_file() and (out / "manifest.json").is_file()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err[-2000:]
    assert json.loads((out / "state" / "state.json").read_text())["step"] >= 2
    assert not (out / ".esimcse.lock").exists()


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_continues(texts, tiny_model_dir, tmp_path, systmp):
    """SIGKILL cannot be caught: its lock stays, and the next --resume takes it over and continues from the state."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "esimcse_cli", *_train_args(texts, out, tiny_model_dir, "--max-steps", "100000")]
    cmd[cmd.index("--save-steps") + 1] = "2"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (out / "state" / "state.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no state was saved"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((out / ".esimcse.lock").read_text())["pid"] == proc.pid  # left behind by the kill
    step = json.loads((out / "state" / "state.json").read_text())["step"]
    r = run_main("train", "--resume", "-o", str(out), "--max-steps", str(step + 2))
    assert r.code == 0, r.stderr
    assert any("taking over the lock" in l and f"pid {proc.pid}" in l for l in r.lines), r.stderr
    assert json.loads((out / "manifest.json").read_text())["steps"] == step + 2
    assert not (out / ".esimcse.lock").exists() and not (out / "state").exists()


# --------------------------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs); skipped where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` with a file until at most ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\x01" * max(0, free - leave))
    if leave == 0:
        try:
            with open(disk / "filler", "ab") as f:
                while True:
                    f.write(b"\x01" * 4096)
                    f.flush()
        except OSError:
            pass


def test_encode_on_a_real_full_disk_is_one_line_and_leaves_nothing(texts, tiny_model_dir, small_disk):
    """Before: SIGBUS (exit 135) in the middle of the memory-mapped write, the temporary file left on the disk.
    A subprocess, so that a regression kills it rather than the test session."""
    _fill(small_disk, leave=64 * 1024)  # 3000 rows x 32 float32 = 384 KB
    out = small_disk / "x.npy"
    r = subprocess.run([sys.executable, "-m", "esimcse_cli", "encode", str(texts / "big.txt"), "-o", str(out), "-m", str(tiny_model_dir)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"esimcse: error: {out}: No space left on device"
    assert sorted(os.listdir(small_disk)) == ["filler"]


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_encode_when_the_reservation_finds_the_disk_full(texts, tiny_model_dir, tmp_path, systmp, monkeypatch):
    out = tmp_path / "x.npy"
    out.write_bytes(b"the previous result")
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    r = run_main("encode", str(texts / "big.txt"), "-o", str(out), "-m", str(tiny_model_dir))
    _one_error(r, f"{out}: No space left on device")
    assert out.read_bytes() == b"the previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["systmp", "x.npy"] and list(systmp.iterdir()) == []
    # -o -: the temporary file is in $TMPDIR; the message says which one, stdout gets nothing
    r = run_main("encode", str(texts / "big.txt"), "-o", "-", "-m", str(tiny_model_dir))
    line = _one_error(r, "No space left on device", "temporary file for -o -", str(systmp))
    assert r.stdout == b"" and list(systmp.iterdir()) == [], line


@pytest.mark.parametrize("how", ["EOPNOTSUPP", "EINVAL", "missing"])
def test_without_posix_fallocate_zeros_are_written_instead(texts, tiny_model_dir, tmp_path, monkeypatch, how):
    from esimcse_cli.core import atomic

    if how == "missing":
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    else:
        def unsupported(*a, **k):
            raise OSError(getattr(errno, how), os.strerror(getattr(errno, how)))

        monkeypatch.setattr(os, "posix_fallocate", unsupported)
    # the fallback writes every byte from `start` to the end (so the blocks are allocated) and not the bytes before
    written = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, pos: written.append((pos, len(data))) or real_pwrite(fd, data, pos))
    f = tmp_path / "sparse.bin"
    with open(f, "wb") as fh:
        fh.write(b"HEADER")
        fh.truncate(3 << 20)
    atomic.reserve_space(f, (3 << 20) + 5, start=6)
    assert written[0][0] == 6 and sum(n for _, n in written) == (3 << 20) + 5 - 6
    assert all(a + n == b for (a, n), (b, _) in zip(written, written[1:]))
    assert f.read_bytes()[:6] == b"HEADER" and f.stat().st_size == (3 << 20) + 5
    # and encode gives the same rows as with posix_fallocate
    r = run_main("encode", str(texts / "corpus.txt"), "-o", str(tmp_path / "x.npy"), "-m", str(tiny_model_dir))
    assert r.code == 0, r.stderr
    monkeypatch.undo()
    assert run_main("encode", str(texts / "corpus.txt"), "-o", str(tmp_path / "y.npy"), "-m", str(tiny_model_dir)).code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy"))


def test_the_zeros_fallback_on_a_full_disk_is_an_error(tmp_path, monkeypatch):
    from esimcse_cli.core import atomic
    from esimcse_cli.core.errors import InputError

    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    monkeypatch.setattr(os, "pwrite", _enospc)
    f = tmp_path / "x.npy.tmp"
    f.write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match=r"^x.npy: No space left on device$"):
        atomic.reserve_space(f, 1 << 20, display="x.npy")


@pytest.mark.parametrize("what", ["augment -o", "eval-sts --json", "eval-sts --csv"])
def test_other_outputs_on_a_real_full_disk_name_the_file(texts, tiny_model_dir, small_disk, systmp, what):
    """Before: `esimcse: error: No space left on device`, naming no file."""
    _fill(small_disk)
    target = small_disk / {"augment -o": "a.txt", "eval-sts --json": "r.json", "eval-sts --csv": "r.csv"}[what]
    if what.startswith("augment"):
        args = ["augment", str(texts / "big.txt"), "--level", "word", "-o", str(target)]
    else:
        args = ["eval-sts", str(texts / "senteval"), "-m", str(tiny_model_dir), what.split()[1], str(target)]
    r = run_main(*args)
    _one_error(r, f"{target}: No space left on device")
    assert sorted(os.listdir(small_disk)) == ["filler"]


@pytest.mark.parametrize("save_steps, where", [("1", "state"), ("0", "model")])
def test_train_on_a_real_full_disk_is_one_line(texts, tiny_model_dir, small_disk, systmp, save_steps, where):
    """Before: `internal error: SafetensorError: ... No space left on device (os error 28)`, exit 1.
    The run stops with exit 2 naming the folder; no temporary folder or lock is left."""
    _fill(small_disk, leave=48 * 1024)  # room for the small files, not for the state (~0.5 MB) or the model (~125 KB)
    run = small_disk / "run"
    args = _train_args(texts, run, tiny_model_dir, "--max-steps", "2")
    args[args.index("--save-steps") + 1] = save_steps
    r = run_main(*args)
    line = _one_error(r, "No space left on device")
    assert str(run) in line, line
    if where == "state":
        assert f"{run / 'state'}: No space left on device" in line
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], list(run.iterdir())
    assert list(systmp.iterdir()) == []


def test_a_library_reporting_a_full_disk_as_text_is_one_line(texts, tiny_model_dir, tmp_path, systmp, monkeypatch):
    """safetensors says `... No space left on device (os error 28)`: still `OUT/state: No space left on device`, exit 2."""
    from esimcse_cli.core import checkpoint

    def full(*a, **k):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    run = tmp_path / "run"
    args = _train_args(texts, run, tiny_model_dir, "--max-steps", "2")
    args[args.index("--save-steps") + 1] = "1"
    r = run_main(*args)
    _one_error(r, f"{run / 'state'}: No space left on device")
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------- read-only
@pytest.fixture
def read_only_disk(small_disk):
    (small_disk / "run").mkdir()
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only: {r.stderr.decode(errors='replace').strip()}")
    return small_disk


@pytest.mark.parametrize("target, needles", [
    pytest.param("run", ["run: cannot write in the output folder (Read-only file system)"], id="existing folder"),
    pytest.param("new", ["new: cannot create the output folder (Read-only file system)"], id="new folder"),
])
def test_train_into_a_read_only_folder_is_one_line(texts, tiny_model_dir, read_only_disk, systmp, target, needles):
    r = run_main(*_train_args(texts, read_only_disk / target, tiny_model_dir))
    _one_error(r, *needles)
    assert len(r.lines) == 1
    assert sorted(os.listdir(read_only_disk)) == ["run"] and os.listdir(read_only_disk / "run") == []


def test_encode_and_eval_into_a_read_only_folder_are_one_line(texts, tiny_model_dir, read_only_disk, systmp):
    r = run_main("encode", str(texts / "corpus.txt"), "-o", str(read_only_disk / "x.npy"), "-m", str(tiny_model_dir))
    _one_error(r, "x.npy", "cannot write", "Read-only file system")
    r = run_main("eval-sts", str(texts / "senteval"), "-m", str(tiny_model_dir), "--json", str(read_only_disk / "r.json"))
    _one_error(r, "r.json", "cannot write", "Read-only file system")


# --------------------------------------------------------------------------------------------- stdout and stderr
def test_augment_into_a_full_stdout_names_stdout(texts):
    """`esimcse augment big.txt > /dev/full`: before, `No space left on device` naming nothing."""
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "esimcse_cli", "augment", str(texts / "big.txt"), "--level", "word"],
                           stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["esimcse: error: <stdout>: No space left on device"]


@pytest.mark.slow
def test_encode_and_eval_sts_into_a_full_stdout(texts, tiny_model_dir, tmp_path):
    """eval-sts writes its --json/--csv before the table, so a failing stdout does not lose them."""
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "esimcse_cli", "encode", str(texts / "corpus.txt"), "-o", "-", "-m", str(tiny_model_dir)],
                           stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=300)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "esimcse: error: <stdout>: No space left on device", r.stderr
        r = subprocess.run([sys.executable, "-m", "esimcse_cli", "eval-sts", str(texts / "senteval"), "-m", str(tiny_model_dir),
                            "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")],
                           stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "esimcse: error: <stdout>: No space left on device", r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == 1 and (tmp_path / "r.csv").read_text().startswith("model,")


class _ClosedPipe:
    """A stream whose reader went away."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError(errno.EBADF, "no file descriptor")


def test_eval_sts_with_stdout_closed_still_writes_its_files(texts, tiny_model_dir, tmp_path, monkeypatch):
    """`eval-sts --json r.json | true`: before, Rich's SystemExit(1) and no r.json."""
    from esimcse_cli import console as ui

    monkeypatch.setattr(ui.out, "_file", _ClosedPipe())
    monkeypatch.setattr(ui.out, "quiet", False)
    r = run_main("eval-sts", str(texts / "senteval"), "-m", str(tiny_model_dir), "--json", str(tmp_path / "r.json"))
    assert r.code == 0, r.stderr
    assert "error" not in r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == 1


def test_train_with_stderr_closed_trains_to_the_end(texts, tiny_model_dir, tmp_path, monkeypatch):
    """`train ... 2>&1 | head -1`: before, the run died at its next message with exit 1, no model, no state."""
    from esimcse_cli import console as ui

    monkeypatch.setattr(ui.console, "_file", _ClosedPipe())
    monkeypatch.setattr(ui.console, "quiet", False)
    run = tmp_path / "run"
    r = run_main(*_train_args(texts, run, tiny_model_dir, "--max-steps", "3"))
    assert r.code == 0, r.stderr
    assert (run / "model.safetensors").is_file() and json.loads((run / "manifest.json").read_text())["steps"] == 3
    assert not (run / ".esimcse.lock").exists()


@pytest.mark.slow
def test_real_closed_pipes(texts, tiny_model_dir, tmp_path):
    cmd = [sys.executable, "-m", "esimcse_cli"]
    r = subprocess.run(" ".join([*cmd, "eval-sts", str(texts / "senteval"), "-m", str(tiny_model_dir), "--json", str(tmp_path / "r.json"),
                                 "2>", str(tmp_path / "err.txt"), "| true; exit ${PIPESTATUS[0]}"]),
                       shell=True, executable="/bin/bash", env=ENV, timeout=300)
    assert r.returncode == 0, (tmp_path / "err.txt").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == 1
    run = tmp_path / "run"
    r = subprocess.run(" ".join([*cmd, *_train_args(texts, run, tiny_model_dir, "--max-steps", "3"), "2>&1 | head -1; exit ${PIPESTATUS[0]}"]),
                       shell=True, executable="/bin/bash", env=ENV, timeout=300, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert (run / "model.safetensors").is_file()


def test_naming_stdout_leaves_other_errors_alone():
    from esimcse_cli.core.errors import naming_stdout

    with pytest.raises(OSError) as info:
        with naming_stdout():
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == "<stdout>"
    with pytest.raises(OSError) as info:
        with naming_stdout():
            raise OSError(errno.ENOSPC, "No space left on device", "/some/file")
    assert info.value.filename == "/some/file"
    with pytest.raises(BrokenPipeError) as info:
        with naming_stdout():
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
    assert info.value.filename is None


# --------------------------------------------------------------------------------------------- things that change mid-run
def test_the_output_folder_deleted_mid_run_stops_it_with_one_line(texts, tiny_model_dir, tmp_path):
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.errors import InputError
    from esimcse_cli.core.trainer import train

    run = tmp_path / "run"
    cfg = build_config({"corpus": str(texts / "corpus.txt"), "output_dir": str(run), "model": str(tiny_model_dir), "batch_size": 4,
                        "max_steps": 5, "save_steps": 0, "eval_steps": 0, "log_steps": 1, "max_length": 16})
    with pytest.raises(InputError, match="does not exist") as info:
        train(cfg, on_step=lambda row: shutil.rmtree(run) if row["step"] == 2 else None)
    assert "\n" not in str(info.value) and str(run) in str(info.value)
    assert not run.exists()  # not re-created behind the user's back


@pytest.mark.parametrize("change", [-1, +1], ids=["grew", "shrank"])
def test_an_input_that_changes_while_encode_reads_it_is_one_line(texts, tiny_model_dir, tmp_path, systmp, monkeypatch, change):
    """Before: a file that grew between the count and the encoding gave `internal error: ValueError`, exit 1."""
    from esimcse_cli.core import corpus

    real = corpus.count_texts
    monkeypatch.setattr(corpus, "count_texts", lambda *a, **k: real(*a, **k) + change)
    out = tmp_path / "x.npy"
    r = run_main("encode", str(texts / "corpus.txt"), "-o", str(out), "-m", str(tiny_model_dir))
    _one_error(r, str(texts / "corpus.txt"), "changed while it was read")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["systmp"] and list(systmp.iterdir()) == []


@pytest.mark.parametrize("command", ["encode", "eval-sts --json"])
def test_the_output_folder_deleted_while_writing_is_one_line(texts, tiny_model_dir, tmp_path, systmp, monkeypatch, command):
    """Before: `internal error: FileNotFoundError: ... -> 'gone/v.npy'`, exit 1."""
    from esimcse_cli.core import atomic

    gone = tmp_path / "gone"
    gone.mkdir()
    real = atomic.os.replace

    def folder_removed_first(src, dst):
        if Path(dst).parent == gone:
            shutil.rmtree(gone)
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", folder_removed_first)
    if command == "encode":
        r = run_main("encode", str(texts / "corpus.txt"), "-o", str(gone / "v.npy"), "-m", str(tiny_model_dir))
        target = gone / "v.npy"
    else:
        r = run_main("eval-sts", str(texts / "senteval"), "-m", str(tiny_model_dir), "--json", str(gone / "r.json"))
        target = gone / "r.json"
    _one_error(r, f"{target}: the output folder {gone} was removed while writing")
    assert not gone.exists() and list(systmp.iterdir()) == []


def test_train_on_a_disk_too_full_for_the_lock(texts, tiny_model_dir, small_disk, systmp):
    _fill(small_disk)
    run = small_disk / "run"
    r = run_main(*_train_args(texts, run, tiny_model_dir))
    _one_error(r, f"{run / '.esimcse.lock'}: No space left on device")
    assert len(r.lines) == 1
    assert sorted(os.listdir(small_disk)) == ["filler"]


def test_permission_lost_mid_run_is_one_line_and_releases_the_folder(texts, tiny_model_dir, tmp_path, monkeypatch):
    """The output folder becomes unwritable while training (simulated: the tests may run as root)."""
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.errors import InputError
    from esimcse_cli.core.trainer import train

    real = tempfile.mkstemp
    denied = {"on": False}

    def mkstemp(*a, **k):
        if denied["on"]:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    run = tmp_path / "run"
    cfg = build_config({"corpus": str(texts / "corpus.txt"), "output_dir": str(run), "model": str(tiny_model_dir), "batch_size": 4,
                        "max_steps": 5, "save_steps": 0, "eval_steps": 0, "log_steps": 1, "max_length": 16})
    with pytest.raises(InputError, match=r"cannot write in .*Permission denied"):
        train(cfg, on_step=lambda row: denied.update(on=row["step"] == 2))
    denied["on"] = False
    assert not (run / ".esimcse.lock").exists()
    assert json.loads((run / "manifest.json").read_text())["model"]  # what was written before stays
