"""The manager's run-time context: settings, database, clock and in-process wake-ups.

Built once by ``create_app``/``create_agent_app`` (nothing happens at import) and reached from routes
through ``request.app.state.ctx``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from hostward.core.clock import Clock, SystemClock
from hostward.manager.db.engine import make_engine, make_session_factory
from hostward.manager.settings import ManagerSettings


class CommandWakeups:
    """Wakes long-polling agents of this replica when a command is queued for them.

    Commands queued by another replica are found by the periodic sweep in the agent channel, so the
    in-process signal is an optimisation, not the source of truth (the database is).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.closing = False

    def release_all(self) -> None:
        """Shutdown: wake every held poll so it answers now instead of holding the server open."""
        with self._lock:
            self.closing = True
            waiters = [w for group in self._waiters.values() for w in group]
        for loop, ev in waiters:
            loop.call_soon_threadsafe(ev.set)

    def register(self, server_id: str, loop: asyncio.AbstractEventLoop, ev: asyncio.Event) -> None:
        with self._lock:
            self._waiters.setdefault(server_id, set()).add((loop, ev))

    def unregister(self, server_id: str, loop: asyncio.AbstractEventLoop, ev: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(server_id)
            if waiters is not None:
                waiters.discard((loop, ev))
                if not waiters:
                    del self._waiters[server_id]

    def waiting_servers(self) -> list[str]:
        with self._lock:
            return list(self._waiters)

    def notify(self, server_id: str) -> None:
        """Thread-safe: may be called from a sync route running in the thread pool."""
        with self._lock:
            waiters = list(self._waiters.get(server_id, ()))
        for loop, ev in waiters:
            loop.call_soon_threadsafe(ev.set)


def wake_after_commit(session: Session, server_id: str) -> None:
    """Ask the unit of work to wake ``server_id``'s long poll once this transaction has committed."""
    session.info.setdefault("wake", set()).add(server_id)


@dataclass
class ManagerContext:
    settings: ManagerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock = field(default_factory=SystemClock)
    wakeups: CommandWakeups = field(default_factory=CommandWakeups)

    @classmethod
    def from_settings(cls, settings: ManagerSettings, clock: Clock | None = None) -> ManagerContext:
        engine = make_engine(settings.effective_database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            clock=clock or SystemClock(),
        )

    @property
    def instance_name(self) -> str:
        return self.settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"

    @contextmanager
    def uow(self) -> Iterator[Session]:
        """One unit of work: the caller owns the transaction (commit on success, rollback on error).

        Servers named in ``session.info["wake"]`` (see ``wake_after_commit``) are woken only after the
        commit, so a long-polling agent never looks before the command is visible.
        """
        with self.sessions() as session:
            with session.begin():
                yield session
            for server_id in session.info.pop("wake", set()):
                self.wakeups.notify(server_id)

    def close(self) -> None:
        self.engine.dispose()
