"""The one atomic-write helper.

Every file the tool writes is first written to a temporary file beside its target and then
renamed into place with :func:`os.replace`, which is atomic on POSIX. An interrupted run
therefore leaves either the old file or the complete new one, never a half-written file.

Stdout cannot be renamed into place: :func:`write_stdout` is the one way text data goes there (UTF-8, a
full disk behind ``> file`` named ``<stdout>``, a reader that went away ending the writing quietly).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from esimcse_cli.core import signals
from esimcse_cli.core.errors import InputError, naming_stdout


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
        with disk_errors(target):
            yield tmp_path
            _rename_into_place(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
        with disk_errors(target):
            yield tmp
        # The two renames must not be split by a signal: between them neither folder is under the target's
        # name. SIGINT/SIGTERM arriving here are held and re-delivered right after (main thread only).
        with signals.held():
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
                os.replace(target, old / "x")
            _rename_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists() and (old / "x").exists():
            os.replace(old / "x", target)  # the second rename failed: put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _rename_into_place(tmp: Path, target: Path) -> None:
    """``os.replace(tmp, target)``; a folder deleted meanwhile (``rm -rf`` of the output folder) is one line, not a bug."""
    try:
        os.replace(tmp, target)
    except FileNotFoundError:
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"{target}: the output folder {parent} was removed while writing; nothing written") from None
        if not os.path.lexists(tmp):
            raise InputError(f"{target}: the temporary file {tmp} was removed while writing; nothing written") from None
        raise


# Write errors that are the disk's, not ours: the file names the target (a library may report them only as text,
# e.g. safetensors' "I/O error: No space left on device (os error 28)").
_DISK_FULL = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))


def disk_full_errno(exc: BaseException) -> int | None:
    """The errno of a full disk (ENOSPC, EDQUOT, EFBIG) behind ``exc``, or None."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in _DISK_FULL else None
    m = re.search(r"\(os error (\d+)\)", str(exc))
    if m and int(m.group(1)) in _DISK_FULL:
        return int(m.group(1))
    return None


@contextmanager
def disk_errors(target: str | os.PathLike) -> Iterator[None]:
    """A full disk inside the block becomes one line naming ``target``: ``TARGET: No space left on device``."""
    try:
        yield
    except Exception as exc:
        n = disk_full_errno(exc)
        if n is None:
            raise
        raise InputError(f"{target}: {os.strerror(n)}") from None


def create_exclusive(target: str | os.PathLike, data: bytes, mode: int = 0o644) -> bool:
    """Create ``target`` holding ``data`` unless a file of that name exists (then return False), atomically.

    ``data`` goes to a temporary file beside the target, which is then hard-linked to the target's name:
    ``link`` fails when the name exists, so of two processes only one succeeds, and the target is never seen
    half-written. On a file system without hard links, ``O_CREAT | O_EXCL`` creates it and writes into it.
    ``mode``: its permissions (readable by others by default: a lock's holder is no secret).
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            try:
                os.fchmod(f.fileno(), mode)
            except OSError:  # a file system without permissions
                pass
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def reserve_space(path: str | os.PathLike, size: int, start: int = 0, display: str | os.PathLike | None = None) -> None:
    """Allocate the disk blocks of ``path`` from ``start`` to ``size`` bytes now, before they are written.

    A memory-mapped file is sparse: its blocks are allocated only when a page is first written, and a full disk
    at that moment is SIGBUS (the process dies, exit 135, its temporary file left behind), not an error. With
    the blocks reserved first, a full disk is an ordinary ``DISPLAY: No space left on device`` here, before any
    work. ``os.posix_fallocate`` where it works; otherwise (no such call, or a file system that does not
    support it) zeros are written in chunks, which allocates the blocks just as well.
    """
    with disk_errors(display if display is not None else path), open(path, "r+b") as f:
        fd = f.fileno()
        try:
            os.posix_fallocate(fd, start, max(0, size - start))
            return
        except AttributeError:  # no posix_fallocate (macOS)
            pass
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                raise
        chunk = b"\0" * (1 << 20)
        pos = start
        while pos < size:
            pos += os.pwrite(fd, chunk[: min(len(chunk), size - pos)], pos)


def write_stdout(run: Callable[[Callable[[str], object]], None]) -> bool:
    """``run(write)`` with ``write(text)`` going to stdout as UTF-8, whatever the locale; False if the reader went away.

    A reader that stops early (``| head``) has what it wanted: stdout is pointed at /dev/null, so neither the
    rest nor the flush at exit fails, and the command can end as a success (click itself would exit 1).
    """
    stream = sys.stdout
    buf = getattr(stream, "buffer", None)
    try:
        with naming_stdout():  # a full disk behind `> file` says <stdout>
            if buf is not None:
                stream.flush()  # what went through the text layer before comes first
                run(lambda text: buf.write(text.encode("utf-8")))
                buf.flush()
            else:
                run(stream.write)
                stream.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
        return False
    return True
