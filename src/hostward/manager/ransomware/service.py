"""Ransomware prevention: named policies, binding them to premium/WTP servers, status and snapshots.

The agent receives its server's policy in ``bundle.global_settings["ransomware"] = {enabled, policy}``
(``agent_section``); after any change affecting a server its bundle version is recomputed and an online
agent is asked to fetch it at once (``apply_policy``). Snapshots are listed from the agent's
``ransomware_snapshot`` records (the newest ``snapshot_keep`` per server, as the agent keeps them);
restoring one queues ``ransomware_restore {snapshot_id}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.manager.agentlink import service as agentlink
from hostward.manager.audit import service as audit
from hostward.manager.policies import service as policies
from hostward.manager.ransomware.models import RansomwarePolicy, RansomwareServer, RansomwareSnapshot
from hostward.manager.ransomware.schemas import EDITIONS, PolicyIn, SnapshotData, StatusData
from hostward.manager.servers.models import Server
from hostward.wire import RecordEvent

STATUS_TOPIC = "ransomware_status"
SNAPSHOT_TOPIC = "ransomware_snapshot"
RESTORE_COMMAND = "ransomware_restore"
ALARM_CLASSES = ("ransomware_0001", "ransomware_0002")
_PUSH_TTL = timedelta(minutes=2)
_POLICY_FIELDS = (
    "name",
    "protected_dirs",
    "excluded_dirs",
    "file_types",
    "action",
    "bait",
    "snapshot_interval_h",
    "snapshot_keep",
)


class EditionNotSupported(HostwardError):
    code = "edition_not_supported"
    status = 409


class PolicyInUse(HostwardError):
    code = "policy_in_use"
    status = 409


@dataclass
class Outcome:
    server_id: str
    ok: bool
    error: HostwardError | None = None


def get_server(session: Session, server_id: str) -> Server:
    # PostgreSQL refuses NUL in text parameters: such an id names no server.
    server = session.get(Server, server_id) if "\0" not in server_id else None
    if server is None:
        raise NotFound(f"server {server_id} not found")
    return server


def _push(session: Session, server: Server, now: datetime) -> None:
    before = server.policy_version
    policies.refresh_server_policy(session, server)
    if server.policy_version != before and server.agent_status == "online":
        agentlink.queue_command(session, server.id, "apply_policy", {}, now, ttl=_PUSH_TTL)


def policy_dict(policy: RansomwarePolicy) -> dict[str, Any]:
    return {k: getattr(policy, k) for k in _POLICY_FIELDS}


def is_active(server: Server, row: RansomwareServer | None) -> bool:
    return row is not None and row.enabled and server.edition in EDITIONS


def agent_section(session: Session, server: Server) -> dict[str, Any]:
    """``bundle.global_settings["ransomware"]``: ``{enabled, policy}`` (policy None when never bound)."""
    row = session.get(RansomwareServer, server.id)
    policy = session.get(RansomwarePolicy, row.policy_id) if row is not None else None
    protected = server.edition is not None and server.protection_status != "closed"
    return {
        "enabled": is_active(server, row) and protected and policy is not None,
        "policy": policy_dict(policy) if policy is not None else None,
    }


# ---- policies ----------------------------------------------------------------------------------------


def list_policies(session: Session) -> list[tuple[RansomwarePolicy, int]]:
    counts = dict(
        session.execute(
            select(RansomwareServer.policy_id, func.count()).group_by(RansomwareServer.policy_id)
        ).all()
    )
    rows = session.scalars(select(RansomwarePolicy).order_by(RansomwarePolicy.name)).all()
    return [(p, int(counts.get(p.id, 0))) for p in rows]


def get_policy(session: Session, policy_id: str) -> RansomwarePolicy:
    policy = session.get(RansomwarePolicy, policy_id) if "\0" not in policy_id else None
    if policy is None:
        raise NotFound(f"ransomware policy {policy_id} not found")
    return policy


def _name_free(session: Session, name: str, except_id: str | None = None) -> None:
    other = session.scalar(select(RansomwarePolicy).where(RansomwarePolicy.name == name))
    if other is not None and other.id != except_id:
        raise Conflict(f"name: a ransomware policy named {name!r} exists already")


def create_policy(session: Session, body: PolicyIn, *, actor: str, now: datetime) -> RansomwarePolicy:
    _name_free(session, body.name)
    policy = RansomwarePolicy(**body.model_dump(), created_at=now, updated_at=now)
    session.add(policy)
    session.flush()
    audit.record(
        session,
        actor,
        "ransomware_policy_create",
        target_type="ransomware_policy",
        target_id=policy.id,
        target_name=policy.name,
        **_audit_fields(body),
    )
    return policy


def _audit_fields(body: PolicyIn) -> dict[str, Any]:
    return {
        "protected_dirs": body.protected_dirs,
        "excluded_dirs": body.excluded_dirs,
        "policy_action": body.action,
        "bait": body.bait,
        "types": len(body.file_types),
    }


def _bound_servers(session: Session, policy_id: str) -> list[Server]:
    return list(
        session.scalars(
            select(Server)
            .join(RansomwareServer, RansomwareServer.server_id == Server.id)
            .where(RansomwareServer.policy_id == policy_id)
        )
    )


def update_policy(
    session: Session, policy_id: str, body: PolicyIn, *, actor: str, now: datetime
) -> RansomwarePolicy:
    policy = get_policy(session, policy_id)
    _name_free(session, body.name, except_id=policy.id)
    for key, value in body.model_dump().items():
        setattr(policy, key, value)
    policy.updated_at = now
    session.flush()
    for server in _bound_servers(session, policy.id):
        _push(session, server, now)
    audit.record(
        session,
        actor,
        "ransomware_policy_update",
        target_type="ransomware_policy",
        target_id=policy.id,
        target_name=policy.name,
        **_audit_fields(body),
    )
    return policy


def delete_policy(session: Session, policy_id: str, *, actor: str, now: datetime) -> None:
    policy = get_policy(session, policy_id)
    used = _bound_servers(session, policy.id)
    if used:
        names = ", ".join(s.name for s in used[:5]) + (" ..." if len(used) > 5 else "")
        raise PolicyInUse(
            f"ransomware policy {policy.name!r} is bound to {len(used)} server(s) ({names}); "
            "disable ransomware prevention there or bind another policy first"
        )
    session.delete(policy)
    audit.record(
        session,
        actor,
        "ransomware_policy_delete",
        target_type="ransomware_policy",
        target_id=policy_id,
        target_name=policy.name,
    )


# ---- enable / disable --------------------------------------------------------------------------------


def enable_one(session: Session, server_id: str, policy_id: str, now: datetime, *, actor: str) -> None:
    """Bind ``policy_id`` to the server and switch prevention on (or switch the bound policy)."""
    server = get_server(session, server_id)
    if server.edition not in EDITIONS:
        have = f"the {server.edition} edition" if server.edition else "no protection"
        raise EditionNotSupported(
            f"server {server.name} has {have}; ransomware prevention needs the premium or WTP edition"
        )
    policy = get_policy(session, policy_id)
    row = session.get(RansomwareServer, server.id)
    if row is not None and row.enabled and row.policy_id == policy.id:
        raise Conflict(f"server {server.name}: ransomware prevention is already on with policy {policy.name}")
    if row is None:
        row = RansomwareServer(server_id=server.id, policy_id=policy.id, status={})
        session.add(row)
    previous = row.policy_id
    row.policy_id = policy.id
    row.enabled = True
    row.enabled_at = now
    session.flush()
    _push(session, server, now)
    audit.record(
        session,
        actor,
        "ransomware_enable",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        policy_id=policy.id,
        policy=policy.name,
        previous_policy_id=previous if previous != policy.id else None,
    )


def disable_one(session: Session, server_id: str, now: datetime, *, actor: str) -> None:
    server = get_server(session, server_id)
    row = session.get(RansomwareServer, server.id)
    if row is None or not row.enabled:
        raise Conflict(f"server {server.name}: ransomware prevention is not enabled")
    # The binding goes (so the policy can be deleted); snapshots and status stay for the record.
    session.delete(row)
    session.flush()
    _push(session, server, now)
    audit.record(
        session,
        actor,
        "ransomware_disable",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
    )


def batch(session: Session, server_ids: list[str], fn: Any, *args: Any, **kwargs: Any) -> list[Outcome]:
    outcomes = []
    for sid in dict.fromkeys(server_ids):
        try:
            with session.begin_nested():
                fn(session, sid, *args, **kwargs)
            outcomes.append(Outcome(sid, True))
        except HostwardError as exc:
            outcomes.append(Outcome(sid, False, error=exc))
    return outcomes


# ---- servers and snapshots ---------------------------------------------------------------------------


@dataclass
class ServerRow:
    server: Server
    row: RansomwareServer | None
    policy: RansomwarePolicy | None
    snapshots: int
    last_snapshot_at: datetime | None

    @property
    def enabled(self) -> bool:
        return is_active(self.server, self.row)

    @property
    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        status = self.row.status if self.row is not None else {}
        return str(status.get("state") or "pending")


def list_servers(
    session: Session, *, q: str | None = None, server_id: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[ServerRow], int]:
    """Servers that can have ransomware prevention (premium, WTP) or have it bound, by name."""
    snaps = (
        select(
            RansomwareSnapshot.server_id.label("server_id"),
            func.count().label("n"),
            func.max(RansomwareSnapshot.taken_at).label("last"),
        )
        .group_by(RansomwareSnapshot.server_id)
        .subquery()
    )
    stmt = (
        select(Server, RansomwareServer, RansomwarePolicy, snaps.c.n, snaps.c.last)
        .outerjoin(RansomwareServer, RansomwareServer.server_id == Server.id)
        .outerjoin(RansomwarePolicy, RansomwarePolicy.id == RansomwareServer.policy_id)
        .outerjoin(snaps, snaps.c.server_id == Server.id)
        .where(or_(Server.edition.in_(EDITIONS), RansomwareServer.server_id.is_not(None)))
    )
    server_id = server_id.replace("\0", "") if server_id else server_id
    q = q.replace("\0", "") if q else q
    if server_id:
        stmt = stmt.where(Server.id == server_id)
    if q:
        stmt = stmt.where(Server.name.ilike(f"%{q.strip()}%"))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(Server.name, Server.id).offset(offset).limit(limit)).all()
    return [ServerRow(r[0], r[1], r[2], int(r[3] or 0), r[4]) for r in rows], total


def list_snapshots(
    session: Session, *, server_id: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[tuple[RansomwareSnapshot, str]], int]:
    stmt = select(RansomwareSnapshot, Server.name).join(Server, Server.id == RansomwareSnapshot.server_id)
    server_id = server_id.replace("\0", "") if server_id else server_id
    if server_id:
        stmt = stmt.where(RansomwareSnapshot.server_id == server_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(RansomwareSnapshot.taken_at.desc(), RansomwareSnapshot.id).offset(offset).limit(limit)
    ).all()
    return [(s, n) for s, n in rows], total


def restore(
    session: Session, server_id: str, snapshot_id: str, *, actor: str, now: datetime, path: str | None = None
) -> str:
    """Queue ``ransomware_restore {snapshot_id}`` for a snapshot the agent reported."""
    server = get_server(session, server_id)
    if "\0" in snapshot_id:
        raise NotFound(f"snapshot_id: server {server.name} has no such snapshot")
    snap = session.scalar(
        select(RansomwareSnapshot).where(
            RansomwareSnapshot.server_id == server.id, RansomwareSnapshot.snapshot_id == snapshot_id
        )
    )
    if snap is None:
        raise NotFound(f"snapshot_id: server {server.name} has no snapshot {snapshot_id}")
    if server.enrolled_at is None:
        raise Conflict(f"server {server.name} has no agent")
    payload = {"snapshot_id": snapshot_id, **({"path": path} if path else {})}
    command = agentlink.queue_command(session, server.id, RESTORE_COMMAND, payload, now)
    audit.record(
        session,
        actor,
        "ransomware_restore",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        snapshot_id=snapshot_id,
        path=path,
        taken_at=snap.taken_at.isoformat(),
        command_id=command.id,
    )
    return command.id


# ---- records -----------------------------------------------------------------------------------------


def _invalid(topic: str, exc: ValidationError) -> Invalid:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "data"
    return Invalid(f"{topic} record: {loc}: {err['msg']}")


def record_status(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    try:
        data = StatusData.model_validate(event.data)
    except ValidationError as exc:
        raise _invalid(STATUS_TOPIC, exc) from exc
    row = session.get(RansomwareServer, server.id)
    if row is None:
        return  # prevention was disabled meanwhile: nothing to show the status on
    if row.status_at is not None and event.occurred_at < row.status_at:
        return
    baits = data.baits if isinstance(data.baits, int) else len(data.baits)
    message = data.message.replace("\0", "").encode("utf-8", "backslashreplace").decode("utf-8")
    row.status = {"state": data.state, "message": message, "baits": baits}
    row.status_at = min(event.occurred_at, now)


def record_snapshot(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    try:
        data = SnapshotData.model_validate(event.data)
    except ValidationError as exc:
        raise _invalid(SNAPSHOT_TOPIC, exc) from exc
    existing = session.scalar(
        select(RansomwareSnapshot).where(
            RansomwareSnapshot.server_id == server.id, RansomwareSnapshot.snapshot_id == data.snapshot_id
        )
    )
    if existing is None:
        existing = RansomwareSnapshot(server_id=server.id, snapshot_id=data.snapshot_id)
        session.add(existing)
    existing.taken_at = data.taken_at
    existing.files = data.files
    existing.bytes = data.bytes
    existing.received_at = now
    session.flush()
    # Snapshots the agent no longer has cannot be restored: listed by the agent (``kept``) or, without
    # that list, the newest ``snapshot_keep`` as its retention keeps them.
    if data.kept is not None:
        kept = {*data.kept, data.snapshot_id}
        stale = [
            sid
            for sid, snap_id in session.execute(
                select(RansomwareSnapshot.id, RansomwareSnapshot.snapshot_id).where(
                    RansomwareSnapshot.server_id == server.id
                )
            ).all()
            if snap_id not in kept
        ]
    else:
        row = session.get(RansomwareServer, server.id)
        policy = session.get(RansomwarePolicy, row.policy_id) if row is not None else None
        keep = policy.snapshot_keep if policy is not None else 7
        stale = list(
            session.scalars(
                select(RansomwareSnapshot.id)
                .where(RansomwareSnapshot.server_id == server.id)
                .order_by(RansomwareSnapshot.taken_at.desc(), RansomwareSnapshot.id)
                .offset(keep)
            ).all()
        )
    if stale:
        session.execute(delete(RansomwareSnapshot).where(RansomwareSnapshot.id.in_(list(stale))))
