"""The control thread shared by the agent components that apply a policy and then tick on a timer
(web tamper protection, ransomware protection).

``configure`` (any thread, cheap) stores what is wanted and calls ``wake``; the control thread runs
``step`` — apply the wanted state, then the periodic duties — under the component's lock every
``poll_s`` seconds or sooner when woken. Tests call ``step`` on their own thread instead of ``start``.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import Clock
from hostward.wire import AlarmEvent, RecordEvent


class ControlLoop(ABC):
    """Start / stop / step of one control thread; subclasses provide ``_apply``, ``_tick``, ``_teardown``."""

    name = "component"  # names the thread (hostward-<name>) and its log lines
    poll_s = 30.0

    def __init__(self, outbox: Outbox, clock: Clock, notify: Callable[[], None]) -> None:
        self.outbox = outbox
        self.clock = clock
        self.notify = notify
        self.counters: dict[str, int] = {"errors": 0}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=f"hostward-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, then ``_teardown`` under the lock (idempotent)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            self._teardown()

    def step(self) -> None:
        """One pass of the thread's duties (tests drive the agent this way)."""
        with self._lock:
            self._apply()
            self._tick()

    def wake(self) -> None:
        """Have the control thread run a pass now (a new policy, a backup to follow up)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:
                logging.getLogger(type(self).__module__).exception("%s control loop error", self.name)
                self.counters["errors"] += 1
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _put(self, *events: AlarmEvent | RecordEvent) -> None:
        """Queue events in the outbox and wake the sender."""
        self.outbox.put_many(events)
        self.notify()

    @abstractmethod
    def _apply(self) -> None:
        """Bring what runs in line with the last policy (control thread, under the lock)."""

    @abstractmethod
    def _tick(self) -> None:
        """The periodic duties (control thread, under the lock)."""

    @abstractmethod
    def _teardown(self) -> None:
        """Release what runs once the thread has stopped (under the lock)."""
