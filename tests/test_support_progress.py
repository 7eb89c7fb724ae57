"""The bench's progress: lines where stderr is not a terminal, a bar where it is, heartbeats on a scripted clock."""

from __future__ import annotations

import io
import sys

import pytest

from equiv_core.support.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_step_is_a_line_where_no_bar_is_drawn() -> None:
    said: list[str] = []
    Progress(said.append, bar=False).step("correctness pass: hook ...")
    assert said == ["correctness pass: hook ..."]


def test_a_step_is_silent_where_the_bar_shows_it() -> None:
    said: list[str] = []
    Progress(said.append, bar=True).step("correctness pass: hook ...")
    assert said == []


def test_a_line_is_said_in_both_modes() -> None:
    said: list[str] = []
    Progress(said.append, bar=True).line("floor: done in 90.0 s, 88.0 s of it compiling")
    Progress(said.append, bar=False).line("floor: done in 90.0 s, 88.0 s of it compiling")
    assert len(said) == 2


def test_a_note_becomes_a_line_only_after_the_heartbeat_interval() -> None:
    said: list[str] = []
    clock = _Clock()
    progress = Progress(said.append, bar=False, clock=clock, heartbeat_s=10.0)
    for now in (4.0, 9.9, 10.0, 15.0, 20.0):
        clock.now = now
        progress.note(f"at {now}")
    assert said == ["at 10.0", "at 20.0"]


def test_no_heartbeats_with_progress_off() -> None:
    said: list[str] = []
    clock = _Clock()
    progress = Progress(said.append, bar=False, heartbeats=False, clock=clock)
    clock.now = 60.0
    progress.note("round 9")
    assert said == []


@pytest.mark.parametrize(("tty", "progress", "bar"), [(True, True, True), (False, True, False), (True, False, False)])
def test_a_bar_only_on_a_terminal_with_progress_on(
    monkeypatch: pytest.MonkeyPatch, tty: bool, progress: bool, bar: bool
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(stream, "isatty", lambda: tty)
    monkeypatch.setattr(sys, "stderr", stream)
    assert Progress.for_stderr(print, progress).shows_bar is bar


def test_the_watchdog_says_which_step_is_still_running_after_a_silent_spell() -> None:
    """One long call (compiling floor) cannot reach note(): the watchdog thread speaks for it, once per spell."""
    import time

    said: list[str] = []
    clock = _Clock()
    shown = Progress(said.append, bar=False, clock=clock)
    shown.line("correctness pass: floor at 8 new tokens (compiles on its first call) ...")
    with shown.watchdog(quiet_s=20.0, poll_s=0.001):
        clock.now = 25.0
        deadline = time.monotonic() + 10.0  # a bound on waiting for the thread, not a speed requirement
        while len(said) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)  # more polls at the same scripted time: no second line for the same spell
    assert said[1:] == ["still running (25 s): correctness pass: floor at 8 new tokens (compiles on its first call)"]


def test_the_watchdog_is_silent_while_lines_keep_coming() -> None:
    """90 s of scripted time, a line every 10 s, and the thread polling many times at each of them."""
    import time

    said: list[str] = []
    clock = _Clock()
    shown = Progress(said.append, bar=False, clock=clock)
    with shown.watchdog(quiet_s=20.0, poll_s=0.001):
        for second in range(0, 100, 10):
            clock.now = float(second)
            shown.line(f"timing round at {second} s")
            time.sleep(0.02)  # ~20 polls at this scripted time: a watchdog ignoring the lines would speak at 20 s
    assert len(said) == 10 and not [line for line in said if line.startswith("still running")]
