"""SIGINT and SIGTERM: the one place they are handled, as three layers that chain.

    the CLI's interrupt handlers      (installed by ``esimcse``'s ``main`` for the whole command)
      <- the trainer's DeferredStop   (installed by ``train`` for the run, on top of the CLI's)
        <- held()                     (installed for a few system calls, on top of whatever is current)

1. :func:`install_interrupt_handlers` (the CLI, for every command): a signal becomes ``KeyboardInterrupt``, so
   every atomic writer and progress bar unwinds and cleans up; the signal is remembered (:func:`last_signal`)
   so that ``main`` exits 128 + its number (130 for SIGINT, 143 for SIGTERM) and names it. A signal the parent
   process ignores (``nohup``) or already handles stays as it was. :func:`restore` puts the previous ones back.
2. :class:`DeferredStop` (``train``): the first SIGINT/SIGTERM only sets a flag, which the loop reads at the
   next step boundary, so the step finishes and the state is saved. A second one of the same kind is passed
   on to the handler below it (the CLI's, so the run unwinds at once with the right exit code; or Python's
   default) — a forced stop, which still leaves the last complete state, because states are swapped in whole.
3. :func:`held`: for the renames that swap a folder into place, whatever handler is current is replaced by a
   recorder, and each signal that arrived meanwhile is raised again afterwards, into that handler. So a
   Ctrl-C can never land between the two renames, and is not lost either.

All three act in the main thread only: Python runs signal handlers there, and elsewhere they are a no-op.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

log = logging.getLogger("esimcse")

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_last: Dict[str, Optional[int]] = {"signum": None}


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------------------- 1. the CLI's
def _interrupt(signum, frame) -> None:
    """SIGINT and SIGTERM both become KeyboardInterrupt, so atomic writers and progress bars clean up."""
    _last["signum"] = signum
    raise KeyboardInterrupt


def install_interrupt_handlers() -> Dict[int, Any]:
    """Route SIGINT/SIGTERM through :func:`_interrupt`; returns what :func:`restore` needs to undo it.

    Only a signal still at Python's default is taken: one the parent ignores (or a caller handles) stays as it is.
    :func:`last_signal` starts again from None.
    """
    _last["signum"] = None
    saved: Dict[int, Any] = {}
    if not _in_main_thread():
        return saved
    for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        current = signal.getsignal(sig)
        if current is default:
            saved[sig] = current
            signal.signal(sig, _interrupt)
    return saved


def restore(saved: Dict[int, Any]) -> None:
    """Put back the handlers :func:`install_interrupt_handlers` replaced."""
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def last_signal() -> Optional[int]:
    """The signal that :func:`_interrupt` last turned into KeyboardInterrupt, or None."""
    return _last["signum"]


# ------------------------------------------------------------------------------------------- 2. the trainer's
class DeferredStop:
    """Turn the first SIGINT/SIGTERM into a flag (:attr:`signum`) read at step boundaries (main thread only).

    A second signal of the same kind falls through to the handler this one replaced (a forced stop).
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "DeferredStop":
        if _in_main_thread():
            for s in SIGNALS:
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second time: restore the previous handler and let it act now
            old = self._old.get(signum)
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
            log.warning("%s again: stopping now; the last complete state (if any) is kept", signal.Signals(signum).name)
            if callable(old):  # the CLI's handler (exit 130/143 after clean-up) or Python's KeyboardInterrupt
                old(signum, frame)
                return
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)  # SIG_DFL: die now; a state folder is only ever swapped in whole
            return
        self.signum = signum
        log.warning("%s received: finishing this step and saving state (send it again to stop at once)", signal.Signals(signum).name)

    def __exit__(self, *exc) -> bool:
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        return False


# ------------------------------------------------------------------------------------------- 3. held
@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for a few system calls, then deliver them (in the main thread; elsewhere a no-op).

    Blocking with ``pthread_sigmask`` would not do: a signal is delivered to any thread that does not block
    it (torch's worker threads), and Python then runs the handler in the main thread at once. So the Python
    handlers are swapped for a recorder instead, and each signal that arrived is raised again afterwards.
    """
    if not _in_main_thread():
        yield
        return
    got: list = []
    saved = {}
    for sig in SIGNALS:
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
