"""Ctrl-C and SIGTERM end a command as ``KeyboardInterrupt``, but never in the middle of a tracking-store write.

Python runs a signal handler in the main thread between two bytecodes, so a plain ``KeyboardInterrupt`` can land
inside SQLAlchemy while MLflow holds a write transaction on its SQLite store. MLflow's session maker rolls back
on ``Exception`` only (``mlflow/store/db/utils.py``, ``make_managed_session``, MLflow 3.17), so such an
interrupt can leave the transaction open and the store locked by the interrupted process itself: ending the run
KILLED then waited on that lock, retry after retry (issue 18: a SIGTERM'd run still retrying after 120 s).
Store writes run inside :func:`deferred`; a signal that arrives meanwhile is raised as soon as the write is done,
and a second one while the first waits is raised at once (a store stuck on a lock must not hold Ctrl-C hostage).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

_HANDLED = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class _Deferral:
    """How many :func:`deferred` blocks the main thread is in, and the signal that came meanwhile (0: none)."""

    depth: int = 0
    pending: int = 0


_state = _Deferral()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _state.depth and not _state.pending:
        _state.pending = signum  # the first signal waits for the store call in progress
        return
    _state.pending = 0  # not deferred, or a second signal while one waits: stop now (a store stuck on a lock)
    raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, then raise ``KeyboardInterrupt`` if one came.

    Only the main thread receives Python-level signals; elsewhere (the heartbeat thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    finally:
        pending = _state.pending if _state.depth == 1 else 0
        if pending:
            _state.pending = 0  # cleared before leaving the block: a signal from here on raises at once
        _state.depth -= 1
        if pending:
            raise KeyboardInterrupt


@contextmanager
def interrupts_handled() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM (a CI timeout, ``kill``) for the block; restore the previous ones.

    Must be entered in the main thread (``signal.signal``'s rule).
    """
    previous = {signum: signal.signal(signum, _on_signal) for signum in _HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.pending = 0
