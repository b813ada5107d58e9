"""Ingest a batch of agent events: per-event validation, idempotency and dispatch.

Each event is validated on its own. The valid ones are stored in one SAVEPOINT; if any of them is
refused, that SAVEPOINT is undone and the batch is redone with one SAVEPOINT per event, so one bad event
is acknowledged ``rejected`` (with the reason) while the rest of the batch is stored. Handlers must
therefore act only through the session: a handler may run again for an event whose first run was
rolled back. The idempotency key of every
stored event is kept in ``ingested_events``; a resend is acknowledged ``duplicate`` and does nothing.
Whatever the ack, the agent may drop the event from its outbox: ``rejected`` will never be accepted.

Capabilities that send ``RecordEvent``s register a handler for their topic::

    @register("blocked_ip")
    def on_blocked_ip(session, server, event, now): ...

and list their module in ``BUILTIN_RECORD_MODULES`` so that ``load_builtin_handlers`` (called by
``create_agent_app``) imports it; nothing registers at import of this module.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostward.core.errors import HostwardError
from hostward.core.ids import new_id
from hostward.manager.agentlink.models import IngestedEvent
from hostward.manager.alarms import service as alarms
from hostward.manager.scans import service as scans
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import Server
from hostward.wire import (
    AlarmEvent,
    AssetsEvent,
    Event,
    EventAck,
    RawEventBatch,
    RecordEvent,
    ScanProgressEvent,
)

log = logging.getLogger("hostward.manager.ingest")

RecordHandler = Callable[[Session, Server, RecordEvent, datetime], None]
RECORD_HANDLERS: dict[str, RecordHandler] = {}
# Modules whose import registers record handlers; capabilities add theirs here (explicit, no discovery).
BUILTIN_RECORD_MODULES: tuple[str, ...] = (
    "hostward.manager.loginsec.records",
    "hostward.manager.fim.records",
    "hostward.manager.risk.records",
    "hostward.manager.wtp.records",
    "hostward.manager.ransomware.records",
    "hostward.manager.malware.records",
)

_H = TypeVar("_H", bound=RecordHandler)
_EVENT: TypeAdapter[Any] = TypeAdapter(Event)
_REASON_MAX = 500


class EventRejected(HostwardError):
    """Raised by a handler to reject one event with a reason (any HostwardError does the same)."""

    code = "event_rejected"
    status = 422


class _AlreadyStored(Exception):
    pass


def register(topic: str) -> Callable[[_H], _H]:
    """Decorator: handle ``RecordEvent``s of ``topic``; a second handler for a topic is an error."""

    def decorator(fn: _H) -> _H:
        register_handler(topic, fn)
        return fn

    return decorator


def register_handler(topic: str, fn: RecordHandler) -> None:
    if not topic or len(topic) > 64:
        raise ValueError(f"record topic must have 1-64 characters: {topic!r}")
    existing = RECORD_HANDLERS.get(topic)
    if existing is not None and existing is not fn:
        raise ValueError(
            f"record topic {topic!r} already has a handler ({existing.__module__}.{existing.__name__})"
        )
    RECORD_HANDLERS[topic] = fn


def load_builtin_handlers() -> None:
    """Import the modules listed in ``BUILTIN_RECORD_MODULES`` (idempotent)."""
    for name in BUILTIN_RECORD_MODULES:
        importlib.import_module(name)


def ingest_batch(session: Session, server: Server, raw: RawEventBatch, now: datetime) -> list[EventAck]:
    """Validate, de-duplicate and dispatch each event; one ack per input event, in order."""
    acks: list[EventAck | None] = [None] * len(raw.events)
    parsed: list[tuple[int, Any]] = []
    for index, item in enumerate(raw.events):
        try:
            parsed.append((index, _EVENT.validate_python(item)))
        except ValidationError as exc:
            acks[index] = EventAck(key=_raw_key(item, index), status="rejected", reason=_describe(exc))

    keys = {event.key for _, event in parsed}
    seen: set[str] = set()
    if keys:
        seen = set(
            session.scalars(
                select(IngestedEvent.key).where(
                    IngestedEvent.server_id == server.id, IngestedEvent.key.in_(keys)
                )
            )
        )
    fresh: list[tuple[int, Any]] = []
    for index, event in parsed:
        if event.key in seen:
            acks[index] = EventAck(key=event.key, status="duplicate")
        else:
            seen.add(event.key)
            fresh.append((index, event))
    if fresh and not _ingest_all(session, server, [event for _, event in fresh], now):
        # Something in the batch was refused: redo it one event at a time, so only that one is.
        for index, event in fresh:
            acks[index] = _ingest_one(session, server, event, now)
    else:
        for index, event in fresh:
            acks[index] = EventAck(key=event.key, status="accepted")
    return [ack for ack in acks if ack is not None]


_EVENT_ERRORS = (IntegrityError, HostwardError, ValueError, TypeError, KeyError)


def _ingest_all(session: Session, server: Server, events: list[Any], now: datetime) -> bool:
    """Fast path: the whole batch in one SAVEPOINT and one multi-row insert of keys; False = undone."""
    try:
        with session.begin_nested():
            session.execute(
                insert(IngestedEvent),
                [{"id": new_id(), "server_id": server.id, "key": e.key, "received_at": now} for e in events],
            )
            alarm_events = [e for e in events if isinstance(e, AlarmEvent)]
            # One query for the open alarms the batch merges into (not one per event).
            open_alarms = alarms.prefetch_open_alarms(session, server, alarm_events) if alarm_events else None
            alarms_seen = False
            for event in events:
                if isinstance(event, AlarmEvent):
                    alarms.ingest(session, server, event, now, refresh_risk=False, open_alarms=open_alarms)
                    alarms_seen = True
                else:
                    _dispatch(session, server, event, now)
            if alarms_seen:
                alarms.refresh_server_risk(session, server)
            session.flush()
    except _EVENT_ERRORS:
        return False
    return True


def _ingest_one(session: Session, server: Server, event: Any, now: datetime) -> EventAck:
    try:
        with session.begin_nested():
            session.add(IngestedEvent(server_id=server.id, key=event.key, received_at=now))
            try:
                session.flush()
            except IntegrityError as exc:
                raise _AlreadyStored from exc
            _dispatch(session, server, event, now)
            session.flush()
    except _AlreadyStored:
        # The key was stored by a concurrent request (a resend racing the original): not twice.
        return EventAck(key=event.key, status="duplicate")
    except IntegrityError as exc:
        log.warning("event %s from server %s conflicts with stored data: %s", event.key, server.id, exc)
        return EventAck(key=event.key, status="rejected", reason="event conflicts with stored data")
    except HostwardError as exc:
        return EventAck(key=event.key, status="rejected", reason=exc.message[:_REASON_MAX])
    except (ValueError, TypeError, KeyError) as exc:
        # Data a handler could not use is the event's fault; a database outage is not (it propagates,
        # the whole batch fails and the agent resends it later).
        log.warning("event %s from server %s rejected: %s", event.key, server.id, exc)
        return EventAck(key=event.key, status="rejected", reason=f"invalid event data: {exc}"[:_REASON_MAX])
    return EventAck(key=event.key, status="accepted")


def _dispatch(session: Session, server: Server, event: Any, now: datetime) -> None:
    if isinstance(event, AlarmEvent):
        alarms.ingest(session, server, event, now)
    elif isinstance(event, ScanProgressEvent):
        scans.on_progress(session, server, event, now)
    elif isinstance(event, AssetsEvent):
        servers.store_assets(session, server, event, now)
    elif isinstance(event, RecordEvent):
        handler = RECORD_HANDLERS.get(event.topic)
        if handler is None:
            raise EventRejected(f"unknown record topic {event.topic!r}")
        handler(session, server, event, now)
    else:  # pragma: no cover - the discriminated union has no other member
        raise EventRejected(f"unsupported event kind {type(event).__name__}")


def prune_ingested(session: Session, now: datetime, keep_days: int = 14) -> int:
    """Forget idempotency keys older than ``keep_days`` (longer than any agent keeps an unsent event)."""
    result = session.execute(
        delete(IngestedEvent).where(IngestedEvent.received_at < now - timedelta(days=keep_days))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _raw_key(item: Any, index: int) -> str:
    key = item.get("key") if isinstance(item, dict) else None
    if isinstance(key, str) and key:
        return key[:128]
    return f"#{index}"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or 'event'}: {err.get('msg', 'invalid')}")
    return ("invalid event: " + "; ".join(parts))[:_REASON_MAX]
