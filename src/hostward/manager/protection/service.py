"""Enable / disable / switch protection by binding quotas, and derive agent and protection status.

Binding is atomic on both backends: one UPDATE picks an idle quota (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite transactions start with BEGIN IMMEDIATE), and ``quotas.server_id`` is unique, so
N concurrent requests for N-k idle quotas give exactly N-k bindings and k clear errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.manager.audit import service as audit
from hostward.manager.db.engine import is_postgres
from hostward.manager.policies import service as policies
from hostward.manager.quotas.models import EDITIONS, Quota
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.manager.settings_store import service as global_settings

SWITCHABLE = {"enterprise", "premium"}
ENABLE_EDITIONS = ("basic", "enterprise", "premium")


class NoQuota(HostwardError):
    code = "no_idle_quota"
    status = 409


class AgentNotOnline(HostwardError):
    code = "agent_not_online"
    status = 409


@dataclass
class Outcome:
    server_id: str
    ok: bool
    quota_id: str | None = None
    error: HostwardError | None = None


def derive_agent_status(server: Server, now: datetime, settings: ManagerSettings) -> str:
    if server.enrolled_at is None:
        return "not_installed"
    if server.last_seen_at is not None and now - server.last_seen_at <= timedelta(
        seconds=settings.offline_after_s
    ):
        return "online"
    return "offline"


def bound_quota(session: Session, server_id: str) -> Quota | None:
    return session.scalar(select(Quota).where(Quota.server_id == server_id))


def refresh_status(session: Session, server: Server, now: datetime, settings: ManagerSettings) -> None:
    """Re-derive agent status and protection status (recovers by itself when the cause clears)."""
    server.agent_status = derive_agent_status(server, now, settings)
    quota = bound_quota(session, server.id) if server.edition else None
    status, reason = "closed", ""
    if server.edition is None or quota is None:
        status = "closed"
    elif quota.status == "frozen":
        expired = f" (expired {quota.expires_at:%Y-%m-%d})" if quota.expires_at is not None else ""
        status, reason = "closed", f"quota {quota.id} is frozen{expired}"
    elif server.agent_status != "online":
        status = "protection_exception"
        seen = f" since {server.last_seen_at:%Y-%m-%d %H:%M:%S} UTC" if server.last_seen_at else ""
        reason = f"agent offline{seen}"
    elif server.degraded:
        status = "protection_exception"
        reason = "agent degraded: " + str(server.health.get("degraded_reason", "resource budget"))[:200]
    else:
        status = "opened"
        if quota.status == "expired" and quota.expires_at is not None:
            grace_end = quota.expires_at + timedelta(days=settings.quota_grace_days)
            reason = f"quota expired; protection continues until {grace_end:%Y-%m-%d}"
    changed = status != server.protection_status
    server.protection_status = status
    server.protection_reason = reason
    if changed:
        policies.refresh_server_policy(session, server)


def _lock_server(session: Session, server_id: str) -> Server:
    stmt = select(Server).where(Server.id == server_id)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    server = session.scalar(stmt)
    if server is None:
        raise NotFound(f"server {server_id} not found")
    return server


def _bind(session: Session, server: Server, edition: str, quota_id: str | None, now: datetime) -> str:
    """Atomically take an idle, usable quota of ``edition`` in the server's region; returns its id."""
    pick = select(Quota.id).where(
        Quota.server_id.is_(None),
        Quota.edition == edition,
        Quota.region == server.region,
        Quota.status != "frozen",
    )
    if quota_id is not None:
        quota = session.get(Quota, quota_id)
        if quota is None:
            raise NotFound(f"quota {quota_id} not found")
        if quota.edition != edition:
            raise Invalid(f"quota {quota_id} is a {quota.edition} quota, not {edition}")
        if quota.region != server.region:
            raise Invalid(f"quota {quota_id} belongs to region {quota.region}, server to {server.region}")
        pick = pick.where(Quota.id == quota_id)
    pick = pick.order_by(Quota.created_at, Quota.id).limit(1)
    if is_postgres(session):
        pick = pick.with_for_update(skip_locked=True)
    session.flush()
    try:
        with session.begin_nested():
            got = session.execute(
                update(Quota)
                .where(Quota.id == pick.scalar_subquery(), Quota.server_id.is_(None))
                .values(server_id=server.id, bound_at=now)
                .returning(Quota.id)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
    except IntegrityError as exc:
        raise Conflict(f"server {server.name} already has a quota") from exc
    if got is None:
        if quota_id is not None:
            raise NoQuota(f"quota {quota_id} is not idle or is frozen")
        raise NoQuota(f"no idle {edition} quota in region {server.region}")
    # The UPDATE bypassed the identity map: forget any Quota loaded before it.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Quota):
            session.expire(obj)
    return str(got)


def _after_protection_change(
    session: Session, server: Server, now: datetime, settings: ManagerSettings
) -> None:
    refresh_status(session, server, now, settings)
    policies.refresh_server_policy(session, server)


def enable_one(
    session: Session,
    server_id: str,
    edition: str,
    now: datetime,
    settings: ManagerSettings,
    *,
    actor: str,
    quota_id: str | None = None,
    trigger_scan: bool = True,
    from_wtp_page: bool = False,
) -> str:
    """Bind a quota of ``edition``; the WTP edition only through ``hostward.manager.wtp.service``
    (``from_wtp_page``), as in the reference, so that its configuration comes with it."""
    if edition == "wtp" and not from_wtp_page:
        raise Invalid("the WTP edition is enabled from the Web Tamper Protection page", code="wtp_page_only")
    if edition not in ENABLE_EDITIONS and edition != "wtp":
        raise Invalid(f"edition must be one of {', '.join(EDITIONS)}")
    server = _lock_server(session, server_id)
    server.agent_status = derive_agent_status(server, now, settings)
    if server.agent_status != "online":
        raise AgentNotOnline(
            f"server {server.name}: agent is {server.agent_status}; a quota binds only "
            "to a server whose agent is online"
        )
    if server.edition is not None:
        if server.edition == edition:
            raise Conflict(f"server {server.name} is already protected by the {edition} edition")
        raise Conflict(f"server {server.name} runs the {server.edition} edition; use switch-edition")
    qid = _bind(session, server, edition, quota_id, now)
    server.edition = edition
    server.open_time = now
    server.policy_group_id = policies.default_group(session, edition).id
    _after_protection_change(session, server, now, settings)
    audit.record(
        session,
        actor,
        "open_protection",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        edition=edition,
        quota_id=qid,
    )
    if trigger_scan:
        from hostward.manager.scans import service as scans

        scans.create_scans(session, [server.id], "full", "enable", now, settings, actor)
    return qid


def disable_one(
    session: Session, server_id: str, now: datetime, settings: ManagerSettings, *, actor: str
) -> None:
    server = _lock_server(session, server_id)
    if server.edition is None:
        raise Conflict(f"server {server.name} is not protected")
    quota = bound_quota(session, server.id)
    if quota is not None:
        quota.server_id = None
        quota.bound_at = None
    edition = server.edition
    server.edition = None
    server.policy_group_id = None
    server.open_time = None
    session.flush()
    _after_protection_change(session, server, now, settings)
    audit.record(
        session,
        actor,
        "close_protection",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        edition=edition,
        quota_id=quota.id if quota else None,
    )


def switch_edition_one(
    session: Session, server_id: str, edition: str, now: datetime, settings: ManagerSettings, *, actor: str
) -> str:
    """Enterprise <-> premium: the new quota is bound and the old one freed in one transaction."""
    server = _lock_server(session, server_id)
    if server.edition not in SWITCHABLE or edition not in SWITCHABLE:
        raise Invalid("switch edition works between enterprise and premium only")
    if server.edition == edition:
        raise Conflict(f"server {server.name} already runs {edition}")
    old = bound_quota(session, server.id)
    with session.begin_nested():
        if old is not None:
            old.server_id = None
            old.bound_at = None
            session.flush()
        qid = _bind(session, server, edition, None, now)
    old_edition = server.edition
    server.edition = edition
    server.policy_group_id = policies.default_group(session, edition).id
    _after_protection_change(session, server, now, settings)
    audit.record(
        session,
        actor,
        "switch_edition",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        old=old_edition,
        new=edition,
        quota_id=qid,
        freed_quota_id=old.id if old else None,
    )
    return qid


def batch(
    session: Session, server_ids: list[str], fn: object, *args: object, **kwargs: object
) -> list[Outcome]:
    """Run ``fn`` per server in its own savepoint: one refusal does not undo the others."""
    outcomes = []
    for sid in server_ids:
        try:
            with session.begin_nested():
                result = fn(session, sid, *args, **kwargs)  # type: ignore[operator]
            outcomes.append(Outcome(sid, True, quota_id=result if isinstance(result, str) else None))
        except HostwardError as exc:
            outcomes.append(Outcome(sid, False, error=exc))
    return outcomes


def on_enrolled(
    session: Session, server: Server, now: datetime, settings: ManagerSettings, actor: str
) -> None:
    """Auto-bind (switch off by default): give a newly enrolled online server an idle quota."""
    config = global_settings.get(session, "auto_bind") or {}
    if not config.get("enabled") or server.edition is not None:
        return
    server.agent_status = derive_agent_status(server, now, settings)
    if server.agent_status != "online":
        return
    preferred = config.get("edition")
    editions = [preferred] if preferred else ["premium", "enterprise", "basic"]
    for edition in editions:
        try:
            with session.begin_nested():
                enable_one(session, server.id, edition, now, settings, actor=f"{actor} (auto-bind)")
            return
        except HostwardError:
            continue
