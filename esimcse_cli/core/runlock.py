"""One run per output folder: ``OUT/.esimcse.lock``, taken atomically, released on every exit.

``esimcse train -o OUT`` holds ``OUT`` for as long as it runs, so that a second ``train -o OUT`` (plain,
``--overwrite`` or ``--resume``) cannot remove or mix files into the first one's folder:

* **Taking it** is one atomic step that cannot succeed twice: the lock's contents (JSON: ``pid``, ``host``,
  ``since``, the process start time, the folder's inode and a random token) are written to a temporary file
  beside it, which is then hard-linked to ``.esimcse.lock`` (``link`` fails when the name exists, and the
  lock is never seen half-written). Where a file system has no hard links, ``O_CREAT | O_EXCL`` is used.
* **A second run** finds the lock and stops with one line naming the holder, ``OUT: in use by another
  esimcse run (pid 123 on host h, since 2025-01-01 12:00:00) ...`` (exit 2), before it touches anything.
* **A stale lock**, left by a process that no longer exists (a ``kill -9``, a power loss), is taken over with
  one warning. "No longer exists" is decided on the same host only: the pid is not running, is a zombie, or
  is a different process that reused the pid (its start time differs); a lock copied along with its folder
  (another inode) is stale too. A lock from another host is never taken over: the message says to remove
  the file by hand if that run is really gone.
* **Releasing it** removes the lock (only if it is still ours) and, if the folder was created just for the
  lock and holds nothing else, the folder too, so a run that stops before it writes anything leaves no trace.

Plain Python: no torch, no typer, no rich. Messages go through the ``esimcse`` logger.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

from esimcse_cli.core.errors import InputError

log = logging.getLogger("esimcse")

LOCK_NAME = ".esimcse.lock"

_HELD: set = set()  # the tokens of the locks this process holds


class LockHeld(InputError):
    """The output folder is in use by another live run (exit code 2)."""


# ------------------------------------------------------------------------------------------- about a process
def _start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2 :].split()[0] == "Z"
    except (OSError, ValueError, IndexError):
        return False


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return not _is_zombie(pid)


# ------------------------------------------------------------------------------------------- the lock file
def lock_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LOCK_NAME


def read_holder(folder: str | os.PathLike) -> Optional[Dict[str, Any]]:
    """The lock's contents; ``{}`` when it exists but cannot be read as ours; None when there is no lock."""
    try:
        raw = lock_path(folder).read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def holder_alive(folder: str | os.PathLike, info: Dict[str, Any]) -> Optional[bool]:
    """True (a live run holds it), False (stale: its process is gone), None (cannot tell: another host, unreadable)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(host, str):
        return None
    if host != socket.gethostname():
        return None
    try:
        st = os.stat(folder)
        if info.get("dir") and info["dir"] != [st.st_dev, st.st_ino]:
            return False  # copied (cp -r) along with its folder: it never held this one
    except OSError:
        pass
    if pid == os.getpid():
        return info.get("token") in _HELD  # ours, or left by an earlier call in this process
    if not _pid_running(pid):
        return False
    start = info.get("start")
    now = _start_time(pid)
    if isinstance(start, int) and now is not None and now != start:
        return False  # the pid was reused by another process
    return True


def describe(info: Dict[str, Any]) -> str:
    if not info:
        return "holder unknown: the lock file is unreadable"
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {when}"


def _held_message(folder, info: Dict[str, Any], alive: Optional[bool]) -> str:
    lock = lock_path(folder)
    if alive:
        return f"{folder}: in use by another esimcse run ({describe(info)}); wait for it to finish or stop it"
    return (f"{folder}: locked by another esimcse run ({describe(info)}) that cannot be checked from here; "
            f"if no run uses this folder, remove {lock}")


def remove_stale(folder: str | os.PathLike) -> bool:
    """Remove the lock of a run that no longer exists; a live (or unknown) holder's lock is left alone."""
    info = read_holder(folder)
    if info is None or holder_alive(folder, info) is not False:
        return False
    _take_away(folder, info)
    return True


def _take_away(folder, info: Dict[str, Any]) -> bool:
    """Remove the stale lock ``info`` was read from, and nothing else (another run may have just taken it)."""
    lock = lock_path(folder)
    aside = Path(folder) / f"{LOCK_NAME}.stale.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    try:
        try:
            same = json.loads(aside.read_bytes().decode("utf-8")) == info
        except (OSError, UnicodeDecodeError, ValueError):
            same = info == {}
        if not same:  # a new run took the lock in between: give it back
            try:
                os.link(aside, lock)
            except OSError:
                pass
        return same
    finally:
        aside.unlink(missing_ok=True)


class RunLock:
    """A held lock on ``folder``. :meth:`release` (or leaving a ``with`` block) gives it up; safe to call twice."""

    def __init__(self, folder: Path, token: str, created_folder: bool):
        self.folder = folder
        self.path = lock_path(folder)
        self.token = token
        self.created_folder = created_folder

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def release(self) -> None:
        if self.token not in _HELD:
            return
        _HELD.discard(self.token)
        info = read_holder(self.folder)
        if info is not None and info.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        if self.created_folder:
            try:
                self.folder.rmdir()  # only if empty: nothing was written
            except OSError:
                pass


def acquire(folder: str | os.PathLike) -> RunLock:
    """Take ``folder`` for this process (creating the folder if needed; its parent must exist).

    Raises :class:`LockHeld` when another live run holds it, :class:`InputError` when it cannot be written.
    """
    folder = Path(folder)
    created = False
    try:
        folder.mkdir()
        created = True
    except FileExistsError:
        if not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder") from None
    except OSError as exc:
        raise InputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        for _ in range(5):
            token = secrets.token_hex(8)
            st = os.stat(folder)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3),
                    "start": _start_time(os.getpid()), "dir": [st.st_dev, st.st_ino], "token": token, "program": "esimcse train"}
            if _create(folder, info):
                _HELD.add(token)
                return RunLock(folder, token, created)
            holder = read_holder(folder)
            if holder is None:
                continue  # released in between: try again
            alive = holder_alive(folder, holder)
            if alive is not False:
                raise LockHeld(_held_message(folder, holder, alive))
            if _take_away(folder, holder):
                log.warning("%s: taking over the lock of an earlier run that is no longer running (%s)", folder, describe(holder))
        raise LockHeld(f"{folder}: another esimcse run keeps taking this folder; try again")
    except BaseException:
        if created:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def _create(folder: Path, info: Dict[str, Any]) -> bool:
    """Create the lock with ``info`` in it, atomically; False if a lock exists."""
    from esimcse_cli.core.atomic import create_exclusive

    try:
        return create_exclusive(lock_path(folder), (json.dumps(info) + "\n").encode("utf-8"))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"{lock_path(folder)}: {os.strerror(exc.errno)}") from None
        raise InputError(f"{folder}: cannot write in the output folder ({exc.strerror or exc})") from None
