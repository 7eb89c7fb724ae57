"""Ctrl-C and SIGTERM never land inside a tracking-store write (equiv_core.support.interrupts)."""

from __future__ import annotations

import os
import signal

import pytest

from equiv_core.support.interrupts import deferred, interrupts_handled


def test_a_sigterm_inside_a_deferred_block_is_raised_when_the_block_ends() -> None:
    finished = False
    with interrupts_handled(), pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # bytecodes at which Python would run a handler that raises
                pass
            finished = True
    assert finished


def test_a_sigterm_outside_a_deferred_block_is_raised_at_once() -> None:
    reached = False
    with interrupts_handled(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
        reached = True
    assert not reached


def test_the_previous_handlers_are_back_after_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with interrupts_handled():
        pass
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_store_call_that_a_sigterm_interrupts_runs_to_its_end_before_the_interrupt() -> None:
    """Every store call goes through ``_retry_locked``: the signal waits for the call (then ends the run KILLED)."""
    from equiv_core.tracking.store import _retry_locked

    completed: list[bool] = []

    def store_call() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
        completed.append(True)

    with interrupts_handled(), pytest.raises(KeyboardInterrupt):
        _retry_locked(store_call)
    assert completed == [True]


def test_a_second_signal_while_the_first_waits_is_raised_at_once() -> None:
    reached = False
    with interrupts_handled(), pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            reached = True
    assert not reached


def test_a_run_interrupted_while_its_verdict_is_written_is_still_terminated(store: str) -> None:
    """The writes that end a run (verdict tags, the new name, set_terminated) are one deferred block."""
    from equiv_core.tracking.store import Outcome, Tracker

    tracker = Tracker(store).connect()
    real_update = tracker.client.update_run

    def update_run_then_sigterm(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)
        return real_update(*args, **kwargs)

    tracker.client.update_run = update_run_then_sigterm
    with interrupts_handled(), pytest.raises(KeyboardInterrupt):
        with tracker.run("run tiny-gpt2") as run:
            run.outcome = Outcome.counted((), 1)
    [summary] = tracker.runs()
    assert summary.status == "FINISHED"
