"""Blocked IPs (list, unblock through the agent), login whitelist, SSH login IP whitelist, common login
IPs and locations, the agent's share of the policy bundle, and the login-alarm handling actions.

Plain functions over the caller's session (flush, never commit); every change is audited. A whitelist
change recomputes the policy version of the servers it concerns and asks their agents to fetch the new
bundle at once (an ``apply_policy`` command over the long poll), so it is in force within seconds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.core.net import parse_address
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.commandstate import command_of, is_pending, refusal
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.loginsec.models import (
    BLOCK_STATUSES,
    BlockedIp,
    LoginWhitelistEntry,
    SshIpWhitelistEntry,
)
from hostward.manager.loginsec.netlist import display, parse_items, split_items
from hostward.manager.policies import service as policies
from hostward.manager.servers import listing
from hostward.manager.servers.models import Server
from hostward.manager.settings_store import service as global_settings

MAX_LOGIN_WHITELIST = 50  # IPs / segments per server (the reference's policy whitelist)
MAX_SSH_WHITELIST = 10
MAX_COMMON_IPS = 20
MAX_COMMON_LOCATIONS = 50
COMMON_IPS_KEY = "login_common_ips"
COMMON_LOCATIONS_KEY = "login_common_locations"
UNBLOCK_COMMAND = "unblock_ip"
MAX_BATCH = 1000
LOGIN_ALARM_CLASSES = ("login_0001", "login_0002", "login_1001", "login_1002")
LOGIN_ALARM_ACTIONS = ("add_to_login_whitelist", "remove_from_login_whitelist", "unblock")
_PUSH_TTL = timedelta(minutes=2)


@dataclass
class Outcome:
    id: str
    ok: bool
    error: HostwardError | None = None
    detail: str = ""


# ---- pushing whitelist changes to agents ----


def _push(session: Session, servers: list[Server], now: datetime) -> None:
    """New bundle version for each server; online agents are asked to fetch it now, not at the next
    heartbeat (offline ones get it when they come back, through the version in the heartbeat)."""
    for server in servers:
        before = server.policy_version
        policies.refresh_server_policy(session, server)
        if server.policy_version != before and server.agent_status == "online":
            agentlink.queue_command(session, server.id, "apply_policy", {}, now, ttl=_PUSH_TTL)


def _servers_in_scope(session: Session, server_ids: list[str] | None) -> list[Server]:
    if server_ids is None:
        return list(session.scalars(select(Server)))
    return [s for sid in server_ids if (s := session.get(Server, sid)) is not None]


def _server(session: Session, server_id: str) -> Server:
    server = session.get(Server, server_id)
    if server is None:
        raise NotFound(f"server {server_id} not found")
    return server


# ---- blocked IPs ----


def list_blocked(
    session: Session,
    *,
    server_id: str | None = None,
    region: str | None = None,
    status: str | None = None,
    service: str | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[BlockedIp, str]], int]:
    stmt = listing.with_server(BlockedIp, server_id=server_id, region=region)
    if status:
        stmt = stmt.where(BlockedIp.status == listing.one_of(status, BLOCK_STATUSES, "status"))
    if service:
        stmt = stmt.where(BlockedIp.service == service)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(BlockedIp.source.ilike(like), Server.name.ilike(like)))
    return listing.page(session, stmt, (BlockedIp.latest_blocked_at.desc(), BlockedIp.id), offset, limit)


def blocked_counts(session: Session, region: str | None = None) -> dict[str, int]:
    return listing.counts_by(session, BlockedIp.status, BLOCK_STATUSES, region)


def get_blocked(session: Session, blocked_id: str) -> BlockedIp:
    row = session.get(BlockedIp, blocked_id)
    if row is None:
        raise NotFound(f"blocked IP {blocked_id} not found")
    return row


def unblock(session: Session, ids: list[str], *, actor: str, now: datetime) -> list[Outcome]:
    """Ask each block's agent to lift it (command ``unblock_ip``); the row is ``unblocking`` until the
    agent confirms with a ``blocked_ip`` record. Each id succeeds or fails on its own."""
    if not ids or len(ids) > MAX_BATCH:
        raise Invalid(f"ids: 1 to {MAX_BATCH} blocked-IP ids")
    outcomes = []
    for blocked_id in dict.fromkeys(ids):
        try:
            with session.begin_nested():
                row = get_blocked(session, blocked_id)
                _unblock_one(session, row, actor=actor, now=now)
            outcomes.append(Outcome(blocked_id, True))
        except HostwardError as exc:
            outcomes.append(Outcome(blocked_id, False, exc))
    return outcomes


def _unblock_one(session: Session, row: BlockedIp, *, actor: str, now: datetime) -> None:
    if row.status == "unblocked":
        raise Conflict(f"{row.source} is not blocked on this server any more")
    if row.status == "unblocking" and is_pending(command_of(session, row.unblock_command_id)):
        raise Conflict(f"{row.source} is already being unblocked")
    command = agentlink.queue_command(
        session,
        row.server_id,
        UNBLOCK_COMMAND,
        {"blocked_ip_id": row.id, "network": row.network, "service": row.service},
        now,
    )
    row.status = "unblocking"
    row.unblock_command_id = command.id
    row.unblocked_by = actor
    row.updated_at = now
    server = session.get(Server, row.server_id)
    audit.record(
        session,
        actor,
        "unblock_ip",
        target_type="blocked_ip",
        target_id=row.id,
        target_name=row.source,
        server_id=row.server_id,
        server_name=server.name if server else "",
        service=row.service,
        command_id=command.id,
    )


def unblock_error(session: Session, row: BlockedIp) -> str:
    """Why an ``unblocking`` row is stuck (the agent refused the command), or empty."""
    if row.status != "unblocking":
        return ""
    return refusal(command_of(session, row.unblock_command_id))


# ---- login whitelist ----


def list_login_whitelist(session: Session, server_id: str | None = None) -> list[LoginWhitelistEntry]:
    entries = session.scalars(select(LoginWhitelistEntry).order_by(LoginWhitelistEntry.created_at.desc()))
    if server_id is None:
        return list(entries)
    return [e for e in entries if e.server_ids is None or server_id in e.server_ids]


def no_controls(value: str, what: str) -> str:
    """Control characters (NUL above all: PostgreSQL refuses it) have no place in names and remarks."""
    if any((ord(c) < 32 and c not in "\t\n") or ord(c) == 127 for c in value):
        raise Invalid(f"{what}: control characters are not allowed")
    return value


def _check_username(username: str | None) -> str | None:
    if username is None:
        return None
    value = username.strip()
    if not value:
        return None
    no_controls(value, "login whitelist user name")
    if len(value) > 64 or any(c.isspace() or c in ",:;" for c in value):
        raise Invalid(f"login whitelist user name {value[:64]!r}: 1-64 characters without spaces")
    return value


def add_login_whitelist(
    session: Session,
    *,
    ips: str | list[str],
    server_ids: list[str] | None,
    username: str | None,
    remarks: str,
    actor: str,
    now: datetime,
    source_alarm_id: str | None = None,
) -> LoginWhitelistEntry:
    """Add an entry; refuses invalid addresses (naming the entry) and more than 50 IPs per server."""
    items = split_items(ips)
    if not items:
        raise Invalid("login whitelist: give at least one IP address, CIDR or range")
    networks = [str(n) for n in parse_items(items, "login whitelist")]
    user = _check_username(username)
    if server_ids is not None:
        server_ids = list(dict.fromkeys(server_ids))
        if not server_ids:
            raise Invalid("login whitelist: server scope is empty; omit it for all servers")
        for sid in server_ids:
            _server(session, sid)
    _check_capacity(session, networks, server_ids)
    entry = LoginWhitelistEntry(
        server_ids=server_ids,
        ip_text=", ".join(items)[:2048],
        networks=networks,
        username=user,
        remarks=no_controls(remarks, "remarks")[:1000],
        source_alarm_id=source_alarm_id,
        created_by=actor,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    _push(session, _servers_in_scope(session, server_ids), now)
    audit.record(
        session,
        actor,
        "add_login_whitelist",
        target_type="login_whitelist",
        target_id=entry.id,
        target_name=entry.ip_text[:255],
        username=user,
        server_ids=server_ids,
        alarm_id=source_alarm_id,
    )
    return entry


def _check_capacity(session: Session, networks: list[str], server_ids: list[str] | None) -> None:
    existing = list(session.scalars(select(LoginWhitelistEntry)))
    global_count = sum(len(e.networks) for e in existing if e.server_ids is None)
    per_server: dict[str, int] = {}
    for e in existing:
        for scoped in e.server_ids or ():
            per_server[scoped] = per_server.get(scoped, 0) + len(e.networks)
    targets: list[str | None] = list(server_ids) if server_ids is not None else [None, *per_server]
    for sid in targets:
        have = global_count + (per_server.get(sid, 0) if sid else 0)
        if have + len(networks) > MAX_LOGIN_WHITELIST:
            where = "for all servers" if sid is None else f"on server {_server(session, sid).name}"
            raise Invalid(
                f"login whitelist: {have} IPs/segments already apply {where}; adding {len(networks)} "
                f"would exceed {MAX_LOGIN_WHITELIST}"
            )


def delete_login_whitelist(session: Session, entry_id: str, *, actor: str, now: datetime) -> None:
    entry = session.get(LoginWhitelistEntry, entry_id)
    if entry is None:
        raise NotFound(f"login whitelist entry {entry_id} not found")
    scope = entry.server_ids
    session.delete(entry)
    session.flush()
    _push(session, _servers_in_scope(session, scope), now)
    audit.record(
        session,
        actor,
        "remove_login_whitelist",
        target_type="login_whitelist",
        target_id=entry_id,
        target_name=entry.ip_text[:255],
    )


def login_whitelisted(session: Session, server_id: str, address: str, username: str | None) -> bool:
    """True when an entry in scope covers ``address`` (and its user name, when the entry names one)."""
    try:
        addr = parse_address(address)
    except ValueError:
        return False
    for entry in list_login_whitelist(session, server_id):
        if entry.username and entry.username != username:
            continue
        for text in entry.networks:
            net = ipaddress.ip_network(text)
            if net.version == addr.version and addr in net:
                return True
    return False


# ---- SSH login IP whitelist ----


def ssh_whitelist(session: Session, server_id: str) -> list[SshIpWhitelistEntry]:
    _server(session, server_id)
    return list(
        session.scalars(
            select(SshIpWhitelistEntry)
            .where(SshIpWhitelistEntry.server_id == server_id)
            .order_by(SshIpWhitelistEntry.created_at, SshIpWhitelistEntry.network)
        )
    )


def all_ssh_whitelists(session: Session) -> list[tuple[SshIpWhitelistEntry, str]]:
    rows = session.execute(
        select(SshIpWhitelistEntry, Server.name)
        .join(Server, Server.id == SshIpWhitelistEntry.server_id)
        .order_by(Server.name, SshIpWhitelistEntry.created_at)
    ).all()
    return [(e, n) for e, n in rows]


def put_ssh_whitelist(
    session: Session, server_id: str, items: list[dict[str, Any]], *, actor: str, now: datetime
) -> list[SshIpWhitelistEntry]:
    """Replace a server's SSH login IP whitelist (≤10 entries, each enabled or disabled)."""
    server = _server(session, server_id)
    if len(items) > MAX_SSH_WHITELIST:
        raise Invalid(
            f"SSH login IP whitelist: at most {MAX_SSH_WHITELIST} entries per server, got {len(items)}"
        )
    wanted: dict[str, dict[str, Any]] = {}
    for item in items:
        text = str(item.get("network") or item.get("ip") or "").strip()
        if "-" in text:
            raise Invalid(f"SSH login IP whitelist entry {text!r}: give one address or CIDR, not a range")
        networks = parse_items([text], "SSH login IP whitelist")
        if len(networks) != 1:
            raise Invalid(f"SSH login IP whitelist entry {text!r}: one address or CIDR")
        key = str(networks[0])
        if key in wanted:
            raise Invalid(f"SSH login IP whitelist entry {text!r}: listed twice")
        wanted[key] = {
            "enabled": bool(item.get("enabled", True)),
            "remarks": no_controls(str(item.get("remarks") or ""), "remarks")[:255],
        }
    current = {e.network: e for e in ssh_whitelist(session, server_id)}
    before = sorted((n, e.enabled) for n, e in current.items())
    for network, old in current.items():
        if network not in wanted:
            session.delete(old)
    for network, values in wanted.items():
        entry = current.get(network)
        if entry is None:
            session.add(
                SshIpWhitelistEntry(
                    server_id=server_id, network=network, created_by=actor, created_at=now, **values
                )
            )
        else:
            entry.enabled = values["enabled"]
            entry.remarks = values["remarks"]
    session.flush()
    _push(session, [server], now)
    audit.record(
        session,
        actor,
        "modify_login_white_ip",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        before=[f"{n}{'' if on else ' (disabled)'}" for n, on in before],
        after=[f"{n}{'' if v['enabled'] else ' (disabled)'}" for n, v in wanted.items()],
    )
    return ssh_whitelist(session, server_id)


# ---- common login IPs and locations ----


def common_ips(session: Session) -> list[str]:
    return list(global_settings.get(session, COMMON_IPS_KEY) or [])


def common_locations(session: Session) -> list[str]:
    return list(global_settings.get(session, COMMON_LOCATIONS_KEY) or [])


def put_common_ips(session: Session, items: list[str], *, actor: str, now: datetime) -> list[str]:
    values = [display(n) for n in parse_items(split_items(items), "common login IP")]
    if len(values) > MAX_COMMON_IPS:
        raise Invalid(f"common login IPs: at most {MAX_COMMON_IPS}, got {len(values)}")
    before = common_ips(session)
    global_settings.put(session, COMMON_IPS_KEY, values, now)
    session.flush()
    _push(session, _servers_in_scope(session, None), now)
    audit.record(
        session, actor, "modify_login_common_ip", target_type="settings", before=before, after=values
    )
    return values


def put_common_locations(session: Session, items: list[str], *, actor: str, now: datetime) -> list[str]:
    values: list[str] = []
    for item in items:
        name = " ".join(str(item).split())
        if not name:
            continue
        no_controls(name, "common login location")
        if len(name) > 128 or any(c in name for c in "<>\"'`;"):
            raise Invalid(f"common login location {name[:128]!r}: 1-128 characters, a country or region name")
        if name.casefold() not in {v.casefold() for v in values}:
            values.append(name)
    if len(values) > MAX_COMMON_LOCATIONS:
        raise Invalid(f"common login locations: at most {MAX_COMMON_LOCATIONS}, got {len(values)}")
    before = common_locations(session)
    global_settings.put(session, COMMON_LOCATIONS_KEY, values, now)
    session.flush()
    _push(session, _servers_in_scope(session, None), now)
    audit.record(
        session,
        actor,
        "modify_login_common_location",
        target_type="settings",
        before=before,
        after=values,
    )
    return values


# ---- the agent's share of the policy bundle ----


def agent_section(session: Session, server: Server) -> dict[str, Any]:
    """What the agent needs beyond the policy settings: never-block networks, the SSH whitelist, the
    user-bound whitelist entries and the common login IPs/locations. Deterministic (it is hashed into the
    bundle version)."""
    never_block: list[str] = []
    user_entries: list[dict[str, Any]] = []
    for entry in sorted(list_login_whitelist(session, server.id), key=lambda e: e.id):
        if entry.username:
            user_entries.append({"user": entry.username, "networks": list(entry.networks)})
        else:
            never_block.extend(n for n in entry.networks if n not in never_block)
    ssh = [e.network for e in ssh_whitelist(session, server.id) if e.enabled]
    return {
        "login_whitelist": sorted(never_block),
        "login_whitelist_users": user_entries,
        "ssh_whitelist": sorted(ssh),
        "common_login_ips": common_ips(session),
        "common_login_locations": common_locations(session),
    }


# ---- login alarm actions ----


def handle_login_alarms(
    session: Session, alarm_ids: list[str], action: str, *, remark: str, actor: str, now: datetime
) -> list[Outcome]:
    """``add_to_login_whitelist`` (the alarm is handled; the IP is NOT unblocked, as in the reference),
    its undo ``remove_from_login_whitelist``, and ``unblock`` (lifts the blocks of the alarm's source on
    its server; the alarm's status does not change)."""
    if action not in LOGIN_ALARM_ACTIONS:
        raise Invalid(f"action must be one of {', '.join(LOGIN_ALARM_ACTIONS)}")
    no_controls(remark, "remark")
    if not alarm_ids or len(alarm_ids) > MAX_BATCH:
        raise Invalid(f"alarm_ids: 1 to {MAX_BATCH} ids")
    outcomes = []
    touched: set[str] = set()
    for alarm_id in dict.fromkeys(alarm_ids):
        try:
            with session.begin_nested():
                alarm = session.get(Alarm, alarm_id)
                if alarm is None:
                    raise NotFound("alarm not found")
                if alarm.event_class not in LOGIN_ALARM_CLASSES:
                    raise Invalid(
                        f"{action} applies to brute-force and login alarms, not {alarm.event_class}"
                    )
                detail = _login_action(session, alarm, action, remark=remark, actor=actor, now=now)
                touched.add(alarm.server_id)
            outcomes.append(Outcome(alarm_id, True, detail=detail))
        except HostwardError as exc:
            outcomes.append(Outcome(alarm_id, False, exc))
    if action != "unblock":
        from hostward.manager.alarms import service as alarms

        for sid in touched:
            server = session.get(Server, sid)
            if server is not None:
                alarms.refresh_server_risk(session, server)
    return outcomes


def _login_action(
    session: Session, alarm: Alarm, action: str, *, remark: str, actor: str, now: datetime
) -> str:
    ip = str(alarm.evidence.get("login_ip") or alarm.evidence.get("address") or "")
    if action == "unblock":
        sources = {display(alarm.evidence["network"])} if alarm.evidence.get("network") else set()
        if ip:
            sources.add(ip)
        rows = session.scalars(
            select(BlockedIp).where(
                BlockedIp.server_id == alarm.server_id,
                BlockedIp.source.in_(sources),
                BlockedIp.status == "blocked",
            )
        ).all()
        if not rows:
            raise Conflict(f"{ip or 'this source'} is not blocked on the alarm's server")
        for row in rows:
            _unblock_one(session, row, actor=actor, now=now)
        return f"{len(rows)} block(s) being lifted"
    if action == "add_to_login_whitelist":
        if alarm.status == "handled":
            raise Conflict("alarm is already handled")
        if not ip:
            raise Invalid("this alarm has no login IP to whitelist")
        # A brute-force source is whitelisted as such (never blocked again); a login alarm's entry is
        # bound to the user who logged in.
        user = None if alarm.event_class == "login_0001" else (alarm.evidence.get("username") or None)
        add_login_whitelist(
            session,
            ips=[ip],
            server_ids=[alarm.server_id],
            username=user,
            remarks=remark or f"from alarm {alarm.id}",
            actor=actor,
            now=now,
            source_alarm_id=alarm.id,
        )
        alarm.status = "handled"
        alarm.handle_action = action
    else:
        if alarm.status != "handled" or alarm.handle_action != "add_to_login_whitelist":
            raise Conflict(
                f"{action} undoes add_to_login_whitelist; this alarm's state is "
                f"{alarm.status}/{alarm.handle_action or '-'}"
            )
        for entry in session.scalars(
            select(LoginWhitelistEntry).where(LoginWhitelistEntry.source_alarm_id == alarm.id)
        ).all():
            delete_login_whitelist(session, entry.id, actor=actor, now=now)
        alarm.status = "unhandled"
        alarm.handle_action = None
    alarm.handle_remark = remark[:2000]
    alarm.handler = actor
    alarm.handled_at = now
    audit.record(
        session,
        actor,
        f"alarm_{action}",
        target_type="alarm",
        target_id=alarm.id,
        target_name=alarm.name,
        remark=remark,
        server_id=alarm.server_id,
        login_ip=ip,
    )
    return ""
