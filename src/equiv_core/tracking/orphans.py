"""Runs whose owner is gone: an MLflow run still RUNNING after its process was killed (SIGKILL, power loss).

MLflow ends a run only when the process ends it (``MlflowClient.set_terminated``), so a killed process leaves
it RUNNING for ever. Every run equiv opens carries two tags: ``equiv.owner`` (host, pid and the process's start
time, so a reused pid is not mistaken for the owner) and ``equiv.heartbeat`` (ms since the epoch, renewed every
:data:`HEARTBEAT_S` seconds while the run is open). A RUNNING run is orphaned when its owner process on this
host no longer exists (or is a zombie), or, for runs from another host, when its heartbeat is older than
:data:`STALE_AFTER_S`. Runs without an owner tag (other tools, older equiv) are never judged.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from equiv_core.tracking.schema import Tag

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # twenty missed heartbeats


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that opened a run: ``started`` is its creation time (s since the epoch, from psutil)."""

    host: str
    pid: int
    started: float

    def to_tag(self) -> str:
        return f"{self.host} {self.pid} {self.started:.2f}"

    @classmethod
    def from_tag(cls, tag: str) -> Owner | None:
        try:
            host, pid, started = tag.rsplit(" ", 2)
            return cls(host, int(pid), float(started))
        except ValueError:
            return None


def this_process() -> Owner:
    return Owner(socket.gethostname(), psutil.Process().pid, psutil.Process().create_time())


def now_ms() -> int:
    return int(time.time() * 1000)


def gone_reason(owner: Owner, heartbeat_ms: int | None, at_ms: int | None = None) -> str:
    """Why the run's owner is gone ("" while it may still be running)."""
    if owner.host == socket.gethostname():
        try:
            process = psutil.Process(owner.pid)
            alive = process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - owner.started) < 1.0
        except psutil.NoSuchProcess:
            alive = False
        return "" if alive else f"its process {owner.pid} on {owner.host} has ended without ending the run"
    if heartbeat_ms is None:
        return ""
    silent_s = ((at_ms if at_ms is not None else now_ms()) - heartbeat_ms) / 1000
    if silent_s > STALE_AFTER_S:
        return f"no heartbeat from {owner.host} (pid {owner.pid}) for {silent_s / 60:.0f} min"
    return ""


def orphan_reason(status: str, tags: dict[str, str]) -> str:
    """Why a run with MLflow ``status`` and ``tags`` is orphaned; "" when it is not (or cannot be judged)."""
    if status != "RUNNING" or Tag.OWNER not in tags:
        return ""
    owner = Owner.from_tag(tags[Tag.OWNER])
    if owner is None:
        return ""
    heartbeat = tags.get(Tag.HEARTBEAT)
    return gone_reason(owner, int(heartbeat) if heartbeat and heartbeat.isdigit() else None)


class Heartbeat:
    """Calls ``beat(now_ms())`` every :data:`HEARTBEAT_S` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, beat: Callable[[int], None], interval_s: float = HEARTBEAT_S) -> None:
        self._beat = beat
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="equiv-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._beat(now_ms())

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
