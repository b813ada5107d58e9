"""Enrollment tokens, agent enrollment and credentials, heartbeats, queued commands, offline sweep.

Secrets (enrollment tokens, agent keys) are shown once and stored only as SHA-256. A server's identity
is ``sha256(machine_id + "\\0" + agent name)``: re-enrolling the same machine (same ``--name``) keeps its
server record and rotates its credential; a clone with a different machine id becomes a new server.
"""

from __future__ import annotations

import json
import secrets
import shlex
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, exists, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, Invalid, NotFound, Unauthorized
from hostward.core.ids import new_secret, sha256_hex
from hostward.manager.agentlink.hotpath import Snapshot, forget_after_commit
from hostward.manager.agentlink.models import AgentCommand, AgentCredential, EnrollmentToken
from hostward.manager.audit import service as audit
from hostward.manager.context import wake_after_commit
from hostward.manager.db.engine import is_postgres
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.regions import service as regions
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.wire import CommandResult, EnrollRequest, HeartbeatRequest, HeartbeatResponse, HostFacts

ENROLLMENT_TOKEN_PREFIX = "hwe_"
AGENT_KEY_PREFIX = "hwa_"
# Stored next to the hash so an operator can tell credentials apart ("hwa_" + 8 characters).
KEY_PREFIX_LENGTH = len(AGENT_KEY_PREFIX) + 8
DEFAULT_AGENT_STATE_DIR = "/var/lib/hostward-agent"
MAX_TOKEN_HOURS = 24 * 365
# A credential's last_used_at is written at most this often: 10k agents must not each write per request.
TOUCH_EVERY = timedelta(seconds=60)
_FACT_COLUMNS = (
    "hostname",
    "ips",
    "os_name",
    "os_version",
    "kernel",
    "arch",
    "agent_version",
    "timezone",
    "utc_offset_minutes",
)


# ---- enrollment tokens ------------------------------------------------------------------------------


def token_status(token: EnrollmentToken, now: datetime) -> str:
    """``active``, ``revoked``, ``expired`` or ``used_up``."""
    if token.revoked:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.max_uses is not None and token.uses >= token.max_uses:
        return "used_up"
    return "active"


def create_enrollment_token(
    session: Session,
    *,
    now: datetime,
    settings: ManagerSettings,
    actor: str,
    region: str | None = None,
    hours: int | None = None,
    max_uses: int | None = None,
    description: str = "",
) -> tuple[EnrollmentToken, str]:
    """Create a token (default expiry ``settings.enrollment_token_hours``; ``max_uses`` None = unlimited).

    Returns the row and the raw token, which is not stored and cannot be shown again.
    """
    lifetime = settings.enrollment_token_hours if hours is None else hours
    if not 1 <= lifetime <= MAX_TOKEN_HOURS:
        raise Invalid(f"hours must be between 1 and {MAX_TOKEN_HOURS}")
    if max_uses is not None and max_uses < 1:
        raise Invalid("max_uses must be at least 1 (omit it for unlimited uses until expiry)")
    region_name = regions.ensure(session, region)
    raw = ENROLLMENT_TOKEN_PREFIX + new_secret(24)
    token = EnrollmentToken(
        token_hash=sha256_hex(raw),
        region=region_name,
        description=description[:255],
        created_by=actor[:64],
        created_at=now,
        expires_at=now + timedelta(hours=lifetime),
        max_uses=max_uses,
        uses=0,
        revoked=False,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor,
        "create_enrollment_token",
        target_type="enrollment_token",
        target_id=token.id,
        target_name=description[:255],
        region=region_name,
        expires_at=token.expires_at.isoformat(),
        max_uses=max_uses,
    )
    return token, raw


def list_enrollment_tokens(session: Session) -> list[EnrollmentToken]:
    return list(session.scalars(select(EnrollmentToken).order_by(EnrollmentToken.created_at.desc())))


def revoke_enrollment_token(session: Session, token_id: str, *, now: datetime, actor: str) -> EnrollmentToken:
    """Revoke a token (idempotent); servers already enrolled with it keep their own credentials."""
    token = session.get(EnrollmentToken, token_id)
    if token is None:
        raise NotFound("enrollment token not found")
    if not token.revoked:
        token.revoked = True
        audit.record(
            session,
            actor,
            "revoke_enrollment_token",
            target_type="enrollment_token",
            target_id=token.id,
            target_name=token.description,
            uses=token.uses,
            revoked_at=now.isoformat(),
        )
    return token


def build_install_command(
    agent_url: str,
    token: str,
    fingerprint: str,
    name: str | None = None,
    state_dir: str = DEFAULT_AGENT_STATE_DIR,
) -> str:
    """The one-line command an operator pastes on a server (as root) to enroll and start its agent.

    ``hostward agent enroll --manager URL --token T --ca-fingerprint F --state-dir DIR [--name N] &&
    hostward agent run --state-dir DIR``; every value is shell-quoted.
    """
    enroll = [
        "hostward",
        "agent",
        "enroll",
        "--manager",
        agent_url,
        "--token",
        token,
        "--ca-fingerprint",
        fingerprint,
        "--state-dir",
        state_dir,
    ]
    if name:
        enroll += ["--name", name]
    run = ["hostward", "agent", "run", "--state-dir", state_dir]
    return f"{shlex.join(enroll)} && {shlex.join(run)}"


# ---- enrollment and credentials ---------------------------------------------------------------------


def server_identity(machine_id: str, name: str | None) -> str:
    return sha256_hex(machine_id + "\0" + (name or ""))


def _use_token(session: Session, raw_token: str, now: datetime) -> EnrollmentToken:
    stmt = select(EnrollmentToken).where(EnrollmentToken.token_hash == sha256_hex(raw_token))
    if is_postgres(session):
        # Concurrent enrollments with one limited token must not both take its last use.
        stmt = stmt.with_for_update()
    token = session.scalar(stmt)
    if token is None:
        raise Unauthorized("unknown enrollment token")
    status = token_status(token, now)
    if status == "revoked":
        raise Unauthorized("enrollment token has been revoked; create a new one")
    if status == "expired":
        raise Unauthorized(f"enrollment token expired at {token.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    if status == "used_up":
        raise Unauthorized(f"enrollment token already used {token.uses} time(s), its limit")
    token.uses += 1
    return token


def _new_credential(session: Session, server: Server, now: datetime) -> tuple[AgentCredential, str]:
    raw = AGENT_KEY_PREFIX + new_secret(32)
    cred = AgentCredential(
        server_id=server.id,
        key_hash=sha256_hex(raw),
        key_prefix=raw[:KEY_PREFIX_LENGTH],
        created_at=now,
    )
    session.add(cred)
    return cred, raw


def _apply_facts(server: Server, facts: HostFacts) -> None:
    """Copy host facts, writing only the columns whose value changed (keeps UPDATEs small)."""
    for column in _FACT_COLUMNS:
        value: Any = getattr(facts, column)
        if column == "ips":
            value = list(value)
        if getattr(server, column) != value:
            setattr(server, column, value)


def enroll(
    session: Session, req: EnrollRequest, now: datetime, settings: ManagerSettings
) -> tuple[Server, str]:
    """Enroll an agent with a token; returns its server and its new raw key (shown once).

    The same machine id and name find the existing server, whose old credentials are revoked; a new
    identity creates a server in the token's region. Unusable tokens raise Unauthorized.
    """
    token = _use_token(session, req.token, now)
    name = (req.name or "").strip() or None
    identity = server_identity(req.facts.machine_id, name)
    server = session.scalar(select(Server).where(Server.identity == identity))
    if server is not None:
        # Recorded for the audit trail only: a re-installed agent that lost its key keeps its record too.
        previous_proof = bool(req.previous_key) and (
            session.scalar(
                select(AgentCredential.id).where(
                    AgentCredential.key_hash == sha256_hex(req.previous_key or ""),
                    AgentCredential.revoked_at.is_(None),
                    AgentCredential.server_id == server.id,
                )
            )
            is not None
        )
        revoked = _revoke_all(session, server.id, now)
        _apply_facts(server, req.facts)
        server.machine_id = req.facts.machine_id
        server.enrolled_at = server.enrolled_at or now
        server.last_seen_at = now
        server.agent_status = "online"
        server.heartbeat_interval = settings.heartbeat_interval
        _, raw_key = _new_credential(session, server, now)
        session.flush()
        audit.record(
            session,
            "agent",
            "reenroll_server",
            target_type="server",
            target_id=server.id,
            target_name=server.name,
            enrollment_token_id=token.id,
            revoked_credentials=revoked,
            previous_key_proof=previous_proof,
        )
        protection.refresh_status(session, server, now, settings)
        return server, raw_key

    server = Server(
        name=name or req.facts.hostname or req.facts.machine_id[:16],
        identity=identity,
        machine_id=req.facts.machine_id,
        agent_name=name or "",
        region=token.region,
        agent_status="online",
        enrolled_at=now,
        last_seen_at=now,
        heartbeat_interval=settings.heartbeat_interval,
        daily_scan_offset_s=secrets.randbelow(settings.scan_window_hours * 3600),
        created_at=now,
    )
    _apply_facts(server, req.facts)
    try:
        with session.begin_nested():
            session.add(server)
            session.flush()
    except IntegrityError as exc:
        # Two enrollments of one machine at the same moment: the other one created the record.
        raise Conflict("this machine is being enrolled by another request; retry") from exc
    _, raw_key = _new_credential(session, server, now)
    policies.refresh_server_policy(session, server)
    session.flush()
    audit.record(
        session,
        "agent",
        "enroll_server",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        enrollment_token_id=token.id,
        region=server.region,
        hostname=server.hostname,
        machine_id=server.machine_id,
    )
    protection.on_enrolled(session, server, now, settings, actor="agent")
    protection.refresh_status(session, server, now, settings)
    return server, raw_key


def _revoke_all(session: Session, server_id: str, now: datetime) -> int:
    creds = session.scalars(
        select(AgentCredential).where(
            AgentCredential.server_id == server_id, AgentCredential.revoked_at.is_(None)
        )
    ).all()
    for cred in creds:
        cred.revoked_at = now
    forget_after_commit(session, [cred.key_hash for cred in creds])
    return len(creds)


def authenticate_agent(session: Session, raw_key: str, now: datetime) -> Server:
    """The server owning ``raw_key``; Unauthorized for unknown or revoked keys."""
    row = session.execute(
        select(AgentCredential, Server)
        .join(Server, Server.id == AgentCredential.server_id)
        .where(AgentCredential.key_hash == sha256_hex(raw_key))
    ).first()
    if row is None:
        raise Unauthorized("unknown agent credential; enroll the agent again")
    cred, server = row
    if cred.revoked_at is not None:
        raise Unauthorized("agent credential has been revoked; enroll the agent again")
    if cred.last_used_at is None or now - cred.last_used_at >= TOUCH_EVERY:
        cred.last_used_at = now
    return server


def list_credentials(session: Session, server_id: str) -> list[AgentCredential]:
    if session.get(Server, server_id) is None:
        raise NotFound("server not found")
    return list(
        session.scalars(
            select(AgentCredential)
            .where(AgentCredential.server_id == server_id)
            .order_by(AgentCredential.created_at.desc())
        )
    )


def revoke_credential(
    session: Session, server_id: str, cred_id: str, *, now: datetime, actor: str
) -> AgentCredential:
    """Revoke one agent credential (idempotent): the agent gets 401 until it is enrolled again."""
    server = session.get(Server, server_id)
    cred = session.get(AgentCredential, cred_id)
    if server is None or cred is None or cred.server_id != server_id:
        raise NotFound("credential not found")
    if cred.revoked_at is None:
        cred.revoked_at = now
        forget_after_commit(session, [cred.key_hash])
        audit.record(
            session,
            actor,
            "revoke_agent_credential",
            target_type="server",
            target_id=server.id,
            target_name=server.name,
            credential_id=cred.id,
            key_prefix=cred.key_prefix,
        )
    return cred


# ---- heartbeat and status ---------------------------------------------------------------------------


def heartbeat(
    session: Session, server: Server, req: HeartbeatRequest, now: datetime, settings: ManagerSettings
) -> HeartbeatResponse:
    """Record a heartbeat: host facts, health, last seen; re-derive agent and protection status."""
    _apply_facts(server, req.facts)
    if server.machine_id != req.facts.machine_id:
        server.machine_id = req.facts.machine_id
    health = req.health.model_dump(mode="json")
    if server.health != health:
        server.health = health
    if server.degraded != req.health.degraded:
        server.degraded = req.health.degraded
    if req.policy_version is not None and server.policy_version_applied != req.policy_version:
        server.policy_version_applied = req.policy_version
    if server.heartbeat_interval != settings.heartbeat_interval:
        server.heartbeat_interval = settings.heartbeat_interval
    server.last_seen_at = now
    server.agent_status = "online"
    protection.refresh_status(session, server, now, settings)
    pending = session.scalar(
        select(exists().where(AgentCommand.server_id == server.id, AgentCommand.status == "queued"))
    )
    return HeartbeatResponse(
        server_time=now,
        heartbeat_interval=settings.heartbeat_interval,
        policy_version=server.policy_version,
        commands_pending=bool(pending),
    )


def facts_key(facts: HostFacts) -> tuple[Any, ...]:
    """The host facts a heartbeat may change, as one comparable value (machine id last)."""
    values: list[Any] = []
    for column in _FACT_COLUMNS:
        value = getattr(facts, column)
        values.append(tuple(value) if column == "ips" else value)
    values.append(facts.machine_id)
    return tuple(values)


def snapshot_of(server: Server) -> Snapshot:
    values: list[Any] = []
    for column in _FACT_COLUMNS:
        value = getattr(server, column)
        values.append(tuple(value or ()) if column == "ips" else value)
    values.append(server.machine_id)
    return Snapshot(
        facts=tuple(values),
        degraded=server.degraded,
        policy_version_applied=server.policy_version_applied,
        heartbeat_interval=server.heartbeat_interval,
        policy_version=server.policy_version,
        agent_status=server.agent_status,
    )


def heartbeat_from_memory(snap: Snapshot | None, req: HeartbeatRequest, settings: ManagerSettings) -> bool:
    """True when a heartbeat changes nothing but ``last_seen_at`` and health figures of an online server.

    Such a heartbeat is answered from the snapshot and buffered (``flush_heartbeats``); any other (new
    facts, degraded flag flipped, new applied policy version, server not online) takes the full path.
    """
    return (
        snap is not None
        and snap.agent_status == "online"
        and snap.heartbeat_interval == settings.heartbeat_interval
        and snap.degraded == req.health.degraded
        and (req.policy_version is None or req.policy_version == snap.policy_version_applied)
        and snap.facts == facts_key(req.facts)
    )


_FLUSH_CHUNK = 500


def flush_heartbeats(
    session: Session,
    beats: dict[str, tuple[datetime, dict[str, Any]]],
    now: datetime,
    settings: ManagerSettings,
) -> dict[str, tuple[str, int]]:
    """Write buffered heartbeats (last seen, health) in one executemany; returns, per server still in the
    database, its agent status and policy version as stored afterwards.

    A server the offline sweep marked offline in the meantime is brought back online with the full
    status refresh here, as its heartbeat would have done.
    """
    if not beats:
        return {}
    table = Server.__table__
    assert isinstance(table, Table)
    stmt = (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            or_(table.c.last_seen_at.is_(None), table.c.last_seen_at < bindparam("b_at")),
        )
        .values(last_seen_at=bindparam("b_at"), health=bindparam("b_health"))
    )
    session.execute(
        stmt, [{"b_id": sid, "b_at": at, "b_health": health} for sid, (at, health) in beats.items()]
    )
    stored: dict[str, tuple[str, int]] = {}
    ids = list(beats)
    for i in range(0, len(ids), _FLUSH_CHUNK):
        rows = session.execute(
            select(Server.id, Server.agent_status, Server.policy_version).where(
                Server.id.in_(ids[i : i + _FLUSH_CHUNK])
            )
        )
        stored.update({sid: (status, version) for sid, status, version in rows})
    stale = [sid for sid, (status, _) in stored.items() if status != "online"]
    if stale:
        stmt_servers = select(Server).where(Server.id.in_(stale))
        if is_postgres(session):
            stmt_servers = stmt_servers.with_for_update(skip_locked=True)
        for server in session.scalars(stmt_servers).all():
            server.agent_status = "online"
            protection.refresh_status(session, server, now, settings)
            stored[server.id] = (server.agent_status, server.policy_version)
    return stored


def revoked_key_hashes(session: Session, since: datetime) -> list[str]:
    """Hashes of credentials revoked at or after ``since`` (by any replica)."""
    return list(session.scalars(select(AgentCredential.key_hash).where(AgentCredential.revoked_at >= since)))


def sweep_agent_status(session: Session, now: datetime, settings: ManagerSettings) -> int:
    """Mark online servers unseen for ``offline_after_s`` as offline; returns how many changed."""
    cutoff = now - timedelta(seconds=settings.offline_after_s)
    stmt = select(Server).where(Server.agent_status == "online", Server.last_seen_at < cutoff)
    if is_postgres(session):
        # Another replica's sweep (or a heartbeat holding the row) is skipped, not waited for.
        stmt = stmt.with_for_update(skip_locked=True)
    changed = 0
    for server in session.scalars(stmt).all():
        server.agent_status = "offline"
        protection.refresh_status(session, server, now, settings)
        changed += 1
    return changed


# ---- commands ---------------------------------------------------------------------------------------


def queue_command(
    session: Session,
    server_id: str,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    ttl: timedelta | None = None,
) -> AgentCommand:
    """Queue a command for a server's agent; its long poll is woken once the transaction commits.

    ``ttl`` None = the command waits until delivered; otherwise it expires undelivered after ``ttl``.
    """
    command = AgentCommand(
        server_id=server_id,
        kind=kind,
        payload=payload,
        status="queued",
        created_at=now,
        expires_at=now + ttl if ttl is not None else None,
    )
    session.add(command)
    session.flush()
    wake_after_commit(session, server_id)
    return command


def claim_commands(session: Session, server_id: str, now: datetime, limit: int = 50) -> list[AgentCommand]:
    """Take the server's queued commands (oldest first) and mark them delivered; expired ones expire.

    On PostgreSQL rows are locked ``FOR UPDATE SKIP LOCKED``, so two concurrent polls of one agent (or
    two replicas) never deliver the same command twice.
    """
    stmt = (
        select(AgentCommand)
        .where(AgentCommand.server_id == server_id, AgentCommand.status == "queued")
        .order_by(AgentCommand.created_at, AgentCommand.id)
        .limit(limit)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    delivered = []
    for command in session.scalars(stmt).all():
        if command.expires_at is not None and command.expires_at <= now:
            command.status = "expired"
            command.finished_at = now
            command.detail = "expired before the agent polled"
            continue
        command.status = "delivered"
        command.delivered_at = now
        delivered.append(command)
    return delivered


def complete_command(
    session: Session, server: Server, command_id: str, result: CommandResult, now: datetime
) -> AgentCommand:
    """Store the agent's result; a repeated report of a finished command is accepted unchanged."""
    command = session.get(AgentCommand, command_id)
    if command is None or command.server_id != server.id:
        raise NotFound("command not found")
    if command.status in ("succeeded", "failed"):
        return command
    if command.status == "expired":
        raise Conflict("command expired before delivery")
    command.status = result.status
    command.finished_at = now
    command.detail = result.detail
    command.result = result.data
    return command


def servers_with_queued_commands(session: Session, server_ids: list[str]) -> set[str]:
    """Which of ``server_ids`` have a queued command: ONE query, whatever the number of servers.

    The agent channel's sweep calls this every second for the agents long-polling on this replica, so
    commands queued by another replica (no in-process wake-up) still arrive within about a second.
    """
    if not server_ids:
        return set()
    if is_postgres(session):
        sql = (
            "SELECT DISTINCT server_id FROM agent_commands WHERE status = 'queued' AND server_id = ANY(:ids)"
        )
        params: dict[str, Any] = {"ids": list(server_ids)}
    else:
        sql = (
            "SELECT DISTINCT server_id FROM agent_commands WHERE status = 'queued' "
            "AND server_id IN (SELECT value FROM json_each(:ids))"
        )
        params = {"ids": json.dumps(list(server_ids))}
    return set(session.scalars(text(sql), params))
