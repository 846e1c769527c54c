"""The one atomic-write helper.

Every file the tool writes is first written to a temporary file beside its target and then
renamed into place with :func:`os.replace`, which is atomic on POSIX. An interrupted run
therefore leaves either the old file or the complete new one, never a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from esimcse_cli.core.errors import InputError


def check_output_path(target: str | os.PathLike) -> Path:
    """Refuse an output path whose folder does not exist (a clear error, before any work)."""
    text = os.fspath(target)
    target = Path(target)
    if text.endswith(("/", os.sep)) and not target.is_dir():
        raise InputError(f"{text}: ends with '/', expected a file path")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{target}: output folder {parent} does not exist")
    if target.is_dir():
        raise InputError(f"{target}: is a folder, expected a file path")
    return target


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block succeeds.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and the
    target is left untouched. ``suffix`` keeps an extension that a writer insists on (numpy's
    ``np.save`` appends ``.npy`` to names that lack it).
    """
    target = check_output_path(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=(suffix or "") + ".tmp", dir=target.parent or ".")
    except OSError as exc:
        raise InputError(f"{target}: cannot write in {target.parent} ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; swap it into place when the block succeeds.

    An existing ``target`` is first moved aside and deleted only after the new folder is in place; the two
    renames run with SIGINT/SIGTERM held, so an interruption leaves either the old folder or the complete new
    one under the target's name, never a half one and never none.
    """
    import shutil

    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{target}: output folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    old = None
    try:
        yield tmp
        # The two renames must not be split by a signal: between them neither folder is under the target's
        # name. SIGINT/SIGTERM arriving here are held and re-delivered right after (main thread only).
        with _signals_held():
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
                os.replace(target, old / "x")
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists() and (old / "x").exists():
            os.replace(old / "x", target)  # the second rename failed: put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for a few system calls, then deliver them (in the main thread; elsewhere a no-op).

    Blocking with ``pthread_sigmask`` would not do: a signal is delivered to any thread that does not block
    it (torch's worker threads), and Python then runs the handler in the main thread at once. So the Python
    handlers are swapped for a recorder instead, and each signal that arrived is raised again afterwards.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current in (signal.SIG_IGN, None):
            continue
        saved[sig] = current
        signal.signal(sig, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum in got:
            signal.raise_signal(signum)
