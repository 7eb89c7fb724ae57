"""Progress of ``equiv bench`` on stderr: a tqdm bar on a terminal, one line per step in logs.

Why both: the correctness pass, compiling ``floor`` and timing each size can each take minutes on a busy
machine, and a job that prints nothing for that long looks hung. A redrawn bar is right on a terminal and noise
in a CI log, so where stderr is not a terminal (or ``--no-progress`` asked for no bar) each step gets a line
before and after, and a long step a line at most every :data:`HEARTBEAT_S` seconds while it runs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HEARTBEAT_S = 10.0
"""Seconds between two lines of one running step (line mode): often enough to show it is alive, rarely enough
that a log of a quick run stays short."""
QUIET_S = 20.0
"""In line mode, the longest a log stays silent while one call runs (compiling ``floor``, one long round on a
busy machine): the watchdog then says what is still running (issue 18: no phase silent for more than 30 s)."""


def say(message: str) -> None:
    """A progress or status line on stderr (``equiv: ...``), so stdout holds only the report."""
    print(f"equiv: {message}", file=sys.stderr, flush=True)


class Progress:
    """Where the bench's progress goes: ``say`` for lines (:func:`say`: ``equiv: ...`` on stderr), and a
    tqdm bar when ``bar`` is True. ``heartbeats``: in line mode, also a line every ``heartbeat_s`` seconds of a
    running step. ``clock`` (seconds, monotonic) is injectable so tests can script it."""

    def __init__(
        self,
        say: Callable[[str], None],
        bar: bool,
        heartbeats: bool = True,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.say = say
        self.shows_bar = bar
        self.heartbeats = heartbeats and not bar
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self._bar: Any = None
        self._last_line = self._step_started = clock()
        self._last_message = "the bench"
        self._lock = threading.Lock()

    @classmethod
    def for_stderr(cls, say: Callable[[str], None] | None, progress: bool) -> Progress:
        """A bar when ``progress`` and stderr is a terminal; otherwise lines (heartbeats only with ``progress``)."""
        return cls(say or (lambda _message: None), bar=progress and sys.stderr.isatty(), heartbeats=progress)

    def line(self, message: str) -> None:
        """A line in both modes: what a reader of the output needs whether or not a bar is drawn."""
        with self._lock:  # the watchdog thread says lines too: whole lines, and a step's message with its start
            self._last_line = self._step_started = self.clock()
            self._last_message = message
            self.say(message)

    @contextmanager
    def watchdog(self, quiet_s: float = QUIET_S, poll_s: float = 1.0) -> Iterator[None]:
        """While the block runs (line mode with heartbeats), a background thread says which step is still running
        whenever nothing was said for ``quiet_s`` seconds: one call (a compile, a long round) cannot reach
        :meth:`note` between runs. A bar already shows it is alive, so on a terminal this does nothing."""
        if self.shows_bar or not self.heartbeats:
            yield
            return
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(poll_s):
                with self._lock:
                    now = self.clock()
                    if now - self._last_line >= quiet_s:
                        self._last_line = now  # not a new step: the message stays the step's own
                        step = self._last_message.removesuffix(" ...")
                        self.say(f"still running ({now - self._step_started:.0f} s): {step}")

        watcher = threading.Thread(target=watch, name="equiv-progress-watchdog", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()

    def step(self, message: str) -> None:
        """A line in line mode only (the bar shows the same step on a terminal)."""
        if not self.shows_bar:
            self.line(message)

    @contextmanager
    def bar(self, description: str, total: int | None = None) -> Iterator[None]:
        """A tqdm bar of ``total`` runs (None: open-ended) while the block runs (terminal only); no-op in line
        mode."""
        if not self.shows_bar:
            yield
            return
        from tqdm import tqdm

        with tqdm(desc=description, total=total, unit="run", mininterval=0.5) as drawn:
            self._bar = drawn
            try:
                yield
            finally:
                self._bar = None

    def update(self) -> None:
        """One run done (advances the bar)."""
        if self._bar is not None:
            self._bar.update()

    def note(self, message: str) -> None:
        """Where a running step stands: the bar's postfix on a terminal; in line mode a line, if the last line was
        at least ``heartbeat_s`` ago (and heartbeats are on)."""
        if self._bar is not None:
            self._bar.set_postfix_str(message)
        elif self.heartbeats and self.clock() - self._last_line >= self.heartbeat_s:
            self.line(message)
