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
from hostward.manager.agentlink.hotpath import AgentCache, keys_to_forget
from hostward.manager.db.engine import make_engine, make_session_factory
from hostward.manager.settings import ManagerSettings


class CommandWakeups:
    """Wakes long-polling agents of this replica when a command is queued for them.

    Commands queued by another replica are found by the periodic sweep in the agent channel, so the
    in-process signal is an optimisation, not the source of truth (the database is). A waiter is an
    ``asyncio.Future`` of the loop that awaits it; waking sets its result (from any thread).

    ``idle`` servers are those whose last poll found nothing queued: their next poll waits without
    asking the database first. A wake-up (this replica's commit, or the sweep seeing a queued command
    for a waiting or idle server) takes the server out of ``idle`` and marks it ``pending``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._idle: set[str] = set()
        self._pending: set[str] = set()
        self.closing = False

    def release_all(self) -> None:
        """Shutdown: wake every held poll so it answers now instead of holding the server open."""
        with self._lock:
            self.closing = True
            waiters = [w for group in self._waiters.values() for w in group]
        for loop, fut in waiters:
            _wake(loop, fut)

    def register(self, server_id: str, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters.setdefault(server_id, set()).add((loop, fut))

    def unregister(self, server_id: str, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(server_id)
            if waiters is not None:
                waiters.discard((loop, fut))
                if not waiters:
                    del self._waiters[server_id]

    def waiting_servers(self) -> list[str]:
        with self._lock:
            return list(self._waiters)

    def sweep_targets(self) -> list[str]:
        """Servers the command sweep must look at: those waiting now and those marked idle."""
        with self._lock:
            return list(self._idle.union(self._waiters))

    def mark_idle(self, server_id: str) -> None:
        """The server's poll found nothing: its next poll may wait without asking the database."""
        with self._lock:
            if server_id not in self._pending:
                self._idle.add(server_id)

    def is_idle(self, server_id: str) -> bool:
        with self._lock:
            return server_id in self._idle

    def claimed(self, server_id: str) -> None:
        """The server's queued commands were just claimed (whatever was found)."""
        with self._lock:
            self._pending.discard(server_id)

    def maybe_pending(self, server_id: str) -> bool:
        with self._lock:
            return server_id in self._pending

    def forget(self, server_id: str) -> None:
        with self._lock:
            self._idle.discard(server_id)
            self._pending.discard(server_id)

    def notify(self, server_id: str) -> None:
        """Thread-safe: may be called from a sync route running in the thread pool."""
        with self._lock:
            self._idle.discard(server_id)
            self._pending.add(server_id)
            waiters = list(self._waiters.get(server_id, ()))
        for loop, fut in waiters:
            _wake(loop, fut)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _set_done(fut)
    else:
        loop.call_soon_threadsafe(_set_done, fut)


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
    agents: AgentCache = field(default_factory=AgentCache)

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
        commit, so a long-polling agent never looks before the command is visible; agent keys named by
        ``forget_after_commit`` (revocations) leave the credential cache.
        """
        with self.sessions() as session:
            try:
                with session.begin():
                    yield session
            finally:
                # Revoked credentials leave the cache even if the revoking transaction failed.
                forgotten = keys_to_forget(session)
                if forgotten:
                    self.agents.forget_keys(forgotten)
            for server_id in session.info.pop("wake", set()):
                self.wakeups.notify(server_id)

    def close(self) -> None:
        self.engine.dispose()
