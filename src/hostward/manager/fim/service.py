"""File change records: ingest from agents, per-server counts, lists, accept as the new baseline.

Agents send one ``fim_change`` record per change (``hostward.manager.fim.records`` registers the
ingest handler) and raise the alarms themselves (``fileprotect_0002`` / ``fileprotect_0004``, stored by
the alarms service); package updates come as records only. Accepting a change queues a ``fim_accept``
command: the agent re-baselines the paths (only when they are still in the state the operator saw;
otherwise the newer change is reported as usual) and confirms with a ``baseline`` record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import ColumnElement, CursorResult, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, Invalid, NotFound
from hostward.core.ids import sha256_hex
from hostward.manager.agentlink import service as agentlink
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.fim.models import ACTIONS, CHANGE_TYPES, CLASSIFICATIONS, FimChange
from hostward.manager.fim.policy import FIM_EDITIONS, MAX_PATH
from hostward.manager.fim.schemas import MAX_ACCEPT_PATHS, ChangeData
from hostward.manager.servers.models import Server
from hostward.wire import RecordEvent

RECORD_TOPIC = "fim_change"
ACCEPT_COMMAND = "fim_accept"
FIM_ALARM_CLASSES = ("fileprotect_0002", "fileprotect_0004")
CHANGE_RETENTION_DAYS = 180
_ATTRS = frozenset(
    {
        "type", "mode", "uid", "gid", "size", "inode", "mtime", "ctime", "sha256", "flags", "xattrs",
        "target", "error",
    }
)  # fmt: skip
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_VALUE = 1024


def path_hash(path: str) -> str:
    return sha256_hex(path.encode("utf-8", "surrogatepass"))


def _text(value: str) -> str:
    """Storable on both databases: PostgreSQL text takes neither NUL nor lone surrogates. An event the
    database refuses would fail its whole batch again at every resend, so it is cleaned, not refused."""
    return value.replace("\0", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Known attributes only, long texts cut: evidence for people, not a place to store blobs."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _ATTRS:
            continue
        if isinstance(value, str):
            value = _text(value[:_MAX_VALUE])
        elif isinstance(value, dict):
            value = {
                _text(str(k)[:128]): (_text(v[:_MAX_VALUE]) if isinstance(v, str) else v)
                for k, v in list(value.items())[:64]
            }
        out[key] = value
    return out


def _package(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    return {
        "manager": _text(str(value.get("manager", ""))[:16]),
        "name": _text(str(value.get("name", ""))[:255]),
        "matches": bool(value.get("matches", False)),
    }


def _hash(values: dict[str, Any]) -> str | None:
    value = values.get("sha256")
    return value if isinstance(value, str) and _HEX64.match(value) else None


def _classification(data: ChangeData) -> str:
    if data.operation == "accept":
        return "baseline"
    if data.label == "package_update":
        return "package_update"
    return "alarmed"


def record_change(session: Session, server: Server, event: RecordEvent, now: datetime) -> FimChange:
    """Store one ``fim_change`` record (the ingest handler; the caller owns the transaction)."""
    try:
        data = ChangeData.model_validate(event.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "data"
        raise Invalid(f"fim_change record: {loc}: {err['msg']}") from exc
    process = data.process
    path = _text(data.path)
    change = FimChange(
        server_id=server.id,
        path=path,
        path_hash=path_hash(path),
        moved_from=_text(data.moved_from) if data.moved_from is not None else None,
        change_type="dir" if data.type == "directory" else "file",
        entry_type=_text(data.type),
        action=data.operation,
        important=data.important,
        attributes=data.attributes,
        old_hash=_hash(data.old),
        new_hash=_hash(data.new),
        old=_attrs(data.old),
        new=_attrs(data.new),
        classification=_classification(data),
        package=_package(data.package),
        process_pid=process.pid if process else None,
        process_exe=_text(process.exe) if process else "",
        process_user=_text(process.user) if process else "",
        process_cmdline=_text(process.cmdline) if process else "",
        occurred_at=min(event.occurred_at, now),
        received_at=now,
        accepted_by=(_text(data.actor) or None) if data.operation == "accept" else None,
    )
    session.add(change)
    return change


# ---- lists -------------------------------------------------------------------------------------------


def _counted() -> Any:
    """Real changes: the agent's baseline confirmations are not changes of the host."""
    return FimChange.action != "accept"


def _host_totals() -> Any:
    return (
        select(
            FimChange.server_id.label("server_id"),
            func.sum(case((_counted(), 1), else_=0)).label("total"),
            func.sum(case((FimChange.classification == "alarmed", 1), else_=0)).label("alarmed"),
            func.sum(case((FimChange.classification == "package_update", 1), else_=0)).label("packages"),
            func.sum(case((FimChange.classification == "accepted", 1), else_=0)).label("accepted"),
            func.max(case((_counted(), FimChange.occurred_at), else_=None)).label("last"),
        )
        .group_by(FimChange.server_id)
        .subquery()
    )


@dataclass
class HostRow:
    server: Server
    total: int
    alarmed: int
    package_updates: int
    accepted: int
    last_change_at: datetime | None
    last_change_path: str | None


def list_hosts(
    session: Session,
    *,
    region: str | None = None,
    q: str | None = None,
    server_id: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[HostRow], int]:
    """Servers that FIM covers (their edition includes it) or that reported changes, busiest first."""
    totals = _host_totals()
    stmt = (
        select(Server, totals.c.total, totals.c.alarmed, totals.c.packages, totals.c.accepted, totals.c.last)
        .outerjoin(totals, totals.c.server_id == Server.id)
        .where(or_(Server.edition.in_(FIM_EDITIONS), totals.c.total > 0))
    )
    if region:
        stmt = stmt.where(Server.region == region)
    if server_id:
        stmt = stmt.where(Server.id == server_id)
    if q:
        stmt = stmt.where(Server.name.ilike(f"%{q.strip()}%"))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    stmt = stmt.order_by(totals.c.last.is_(None), totals.c.last.desc(), Server.name, Server.id)
    rows = session.execute(stmt.offset(offset).limit(limit)).all()
    latest = _latest_paths(session, {r[0].id: r[5] for r in rows if r[5] is not None})
    out = [
        HostRow(
            server=r[0],
            total=int(r[1] or 0),
            alarmed=int(r[2] or 0),
            package_updates=int(r[3] or 0),
            accepted=int(r[4] or 0),
            last_change_at=r[5],
            last_change_path=latest.get(r[0].id),
        )
        for r in rows
    ]
    return out, total


def _latest_paths(session: Session, last: dict[str, datetime]) -> dict[str, str]:
    if not last:
        return {}
    rows = session.execute(
        select(FimChange.server_id, FimChange.path, FimChange.occurred_at).where(
            FimChange.server_id.in_(list(last)),
            FimChange.occurred_at.in_(list(set(last.values()))),
            _counted(),
        )
    ).all()
    return {sid: path for sid, path, at in rows if last.get(sid) == at}


def _change_conditions(
    *,
    server_id: str | None,
    region: str | None,
    action: str | None,
    classification: str | None,
    change_type: str | None,
    q: str | None,
    since: datetime | None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if server_id:
        conditions.append(FimChange.server_id == server_id)
    if region:
        conditions.append(Server.region == region)
    if action:
        if action not in ACTIONS:
            raise Invalid(f"action must be one of {', '.join(ACTIONS)}")
        conditions.append(FimChange.action == action)
    if classification:
        if classification not in CLASSIFICATIONS:
            raise Invalid(f"classification must be one of {', '.join(CLASSIFICATIONS)}")
        conditions.append(FimChange.classification == classification)
    if change_type:
        if change_type not in CHANGE_TYPES:
            raise Invalid(f"change_type must be one of {', '.join(CHANGE_TYPES)}")
        conditions.append(FimChange.change_type == change_type)
    if q:
        conditions.append(FimChange.path.ilike(f"%{q.strip()}%"))
    if since is not None:
        conditions.append(FimChange.occurred_at >= since)
    return conditions


def list_changes(
    session: Session,
    *,
    server_id: str | None = None,
    region: str | None = None,
    action: str | None = None,
    classification: str | None = None,
    change_type: str | None = None,
    q: str | None = None,
    since: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[FimChange, str]], int]:
    """Change records, newest first, with their server's name."""
    conditions = _change_conditions(
        server_id=server_id,
        region=region,
        action=action,
        classification=classification,
        change_type=change_type,
        q=q,
        since=since,
    )
    stmt = select(FimChange, Server.name).join(Server, Server.id == FimChange.server_id).where(*conditions)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(FimChange.occurred_at.desc(), FimChange.id).offset(offset).limit(limit)
    ).all()
    return [(c, n) for c, n in rows], total


def get_change(session: Session, change_id: str) -> FimChange:
    change = session.get(FimChange, change_id)
    if change is None:
        raise NotFound("change record not found")
    return change


def statistics(session: Session, region: str | None = None) -> dict[str, Any]:
    servers = select(func.count()).select_from(Server).where(Server.edition.in_(FIM_EDITIONS))
    changes = select(
        func.count(func.distinct(FimChange.server_id)),
        func.sum(case((FimChange.classification == "alarmed", 1), else_=0)),
        func.sum(case((FimChange.classification == "package_update", 1), else_=0)),
        func.sum(case((FimChange.classification == "accepted", 1), else_=0)),
        func.count(),
        func.max(FimChange.occurred_at),
    ).where(_counted())
    if region:
        servers = servers.where(Server.region == region)
        changes = changes.join(Server, Server.id == FimChange.server_id).where(Server.region == region)
    with_changes, alarmed, packages, accepted, count, last = session.execute(changes).one()
    return {
        "servers_monitored": session.scalar(servers) or 0,
        "servers_with_changes": int(with_changes or 0),
        "changes": int(count or 0),
        "alarmed": int(alarmed or 0),
        "package_updates": int(packages or 0),
        "accepted": int(accepted or 0),
        "last_change_at": last,
    }


# ---- accept ------------------------------------------------------------------------------------------


@dataclass
class AcceptResult:
    server: Server
    command_id: str
    paths: list[str]
    records_accepted: int
    alarms_handled: int


def _under(column: Any, paths: list[str]) -> Any:
    """The paths themselves (by hash) or anything below one of them."""
    clauses = [FimChange.path_hash.in_([path_hash(p) for p in paths])]
    for p in paths:
        prefix = p.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(column.like(prefix + "/%", escape="\\"))
    return or_(*clauses)


def _inside(path: str, paths: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)


def _expected(session: Session, server_id: str, paths: list[str]) -> dict[str, str]:
    """The state the operator saw, per path: the newest record's content hash ("" = deleted)."""
    expected: dict[str, str] = {}
    for p in paths:
        latest = session.scalars(
            select(FimChange)
            .where(FimChange.server_id == server_id, FimChange.path_hash == path_hash(p))
            .order_by(FimChange.occurred_at.desc(), FimChange.received_at.desc())
            .limit(1)
        ).first()
        if latest is None or latest.action == "accept":
            continue
        if latest.action == "delete":
            expected[p] = ""
        elif latest.new_hash is not None:
            expected[p] = latest.new_hash
    return expected


def accept(
    session: Session,
    server_id: str,
    paths: list[str],
    *,
    actor: str,
    now: datetime,
    remark: str = "",
) -> AcceptResult:
    """Accept the current state of ``paths`` (and what is below them) as the new baseline.

    Queues ``fim_accept`` for the agent, marks the alarmed records ``accepted`` and handles their open
    FIM alarms; a later change of the same path is reported again.
    """
    if not paths or len(paths) > MAX_ACCEPT_PATHS:
        raise Invalid(f"paths: 1 to {MAX_ACCEPT_PATHS} paths")
    if any(len(p) > MAX_PATH or not p.startswith("/") for p in paths):
        raise Invalid("paths must be absolute")
    server = session.get(Server, server_id)
    if server is None:
        raise NotFound(f"server {server_id} not found")
    if server.edition not in FIM_EDITIONS:
        raise Conflict(
            f"server {server.name} has no file integrity monitoring (enterprise edition or above needed)"
        )
    if server.enrolled_at is None:
        raise Conflict(f"server {server.name} has no agent")
    paths = list(dict.fromkeys(paths))
    payload = {"paths": paths, "expected": _expected(session, server.id, paths), "actor": actor}
    command = agentlink.queue_command(session, server.id, ACCEPT_COMMAND, payload, now)
    result = cast(
        CursorResult[Any],
        session.execute(
            update(FimChange)
            .where(
                FimChange.server_id == server.id,
                FimChange.classification == "alarmed",
                _under(FimChange.path, paths),
            )
            .values(
                classification="accepted", accepted_by=actor, accepted_at=now, accept_command_id=command.id
            )
            .execution_options(synchronize_session=False)
        ),
    )
    records = int(result.rowcount or 0)
    open_alarms = session.scalars(
        select(Alarm).where(
            Alarm.server_id == server.id,
            Alarm.status == "unhandled",
            Alarm.event_class.in_(FIM_ALARM_CLASSES),
        )
    ).all()
    alarm_ids = [a.id for a in open_alarms if _inside(str(a.evidence.get("file_path", "")), paths)]
    handled = 0
    for start in range(0, len(alarm_ids), alarms.MAX_BATCH):
        outcomes = alarms.handle(
            session,
            alarm_ids[start : start + alarms.MAX_BATCH],
            "mark_as_handled",
            remark=remark or "change accepted as the new baseline",
            actor=actor,
            now=now,
        )
        handled += sum(1 for o in outcomes if o.ok)
    audit.record(
        session,
        actor,
        "fim_accept",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        remark=remark,
        paths=paths[:20],
        path_count=len(paths),
        command_id=command.id,
        records=records,
        alarms=handled,
    )
    return AcceptResult(server, command.id, paths, records, handled)


def accept_changes(
    session: Session, change_ids: list[str], *, actor: str, now: datetime, remark: str = ""
) -> list[AcceptResult]:
    """Accept the paths of these records, one command per server (the console's row and batch buttons)."""
    by_server: dict[str, list[str]] = {}
    for change_id in dict.fromkeys(change_ids):
        change = get_change(session, change_id)
        by_server.setdefault(change.server_id, []).append(change.path)
    results = []
    for server_id, paths in by_server.items():
        unique = list(dict.fromkeys(paths))
        for start in range(0, len(unique), MAX_ACCEPT_PATHS):
            chunk = unique[start : start + MAX_ACCEPT_PATHS]
            results.append(accept(session, server_id, chunk, actor=actor, now=now, remark=remark))
    return results


def purge_old(session: Session, now: datetime, days: int = CHANGE_RETENTION_DAYS) -> int:
    """Delete change records older than ``days``."""
    result = cast(
        CursorResult[Any],
        session.execute(
            delete(FimChange)
            .where(FimChange.occurred_at < now - timedelta(days=days))
            .execution_options(synchronize_session=False)
        ),
    )
    return int(result.rowcount or 0)
