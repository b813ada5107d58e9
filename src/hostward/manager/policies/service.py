"""Policy groups: presets per edition, copies, per-policy changes, deployment and agent bundles."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from hostward.core.errors import Conflict, Forbidden, Invalid, NotFound
from hostward.manager.audit import service as audit
from hostward.manager.policies.models import Policy, PolicyGroup
from hostward.manager.policies.registry import POLICY_SPECS, specs_for
from hostward.manager.servers.models import Server
from hostward.manager.settings_store import service as global_settings
from hostward.wire import PolicyBundle, PolicyState

PRESETS = {
    # edition: (name, view_only, copyable, description)
    "basic": ("tenant_linux_basic_default_policy_group", True, False, "Basic edition default (view only)"),
    "enterprise": (
        "tenant_linux_enterprise_default_policy_group",
        True,
        False,
        "Enterprise edition default (view only; cannot be copied or deleted)",
    ),
    "premium": (
        "tenant_linux_premium_default_policy_group",
        False,
        True,
        "Premium and WTP default (copy it to create custom groups)",
    ),
}
# WTP servers use the premium presets (WTP includes every premium function).
EDITION_GROUP = {"basic": "basic", "enterprise": "enterprise", "premium": "premium", "wtp": "premium"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]([A-Za-z0-9_\- ]{0,126}[A-Za-z0-9_\-])?$")
GLOBAL_AGENT_SETTINGS: tuple[str, ...] = ()


def ensure_presets(session: Session) -> None:
    """Create the preset groups and add any policy registered since (idempotent; runs at init and serve)."""
    for edition, (name, view_only, copyable, description) in PRESETS.items():
        group = session.scalar(select(PolicyGroup).where(PolicyGroup.name == name))
        if group is None:
            group = PolicyGroup(
                name=name,
                edition=edition,
                is_default=True,
                view_only=view_only,
                copyable=copyable,
                description=description,
                version=1,
            )
            session.add(group)
            session.flush()
        _add_missing_policies(session, group)
    for group in session.scalars(select(PolicyGroup).where(PolicyGroup.is_default.is_(False))):
        _add_missing_policies(session, group)


def _add_missing_policies(session: Session, group: PolicyGroup) -> None:
    have = {p.key for p in group.policies}
    for spec in specs_for(group.edition):
        if spec.key not in have:
            group.policies.append(
                Policy(
                    key=spec.key,
                    enabled=spec.enabled_by_default(group.edition),
                    settings=spec.default_settings(),
                )
            )


def default_group(session: Session, edition: str) -> PolicyGroup:
    name = PRESETS[EDITION_GROUP[edition]][0]
    group = session.scalar(select(PolicyGroup).where(PolicyGroup.name == name))
    if group is None:
        raise NotFound(f"preset policy group {name} missing; run 'hostward manager init'")
    return group


def list_groups(session: Session) -> list[tuple[PolicyGroup, int]]:
    counts = dict(
        session.execute(select(Server.policy_group_id, func.count()).group_by(Server.policy_group_id)).all()
    )
    groups = session.scalars(
        select(PolicyGroup)
        .options(selectinload(PolicyGroup.policies))
        .order_by(PolicyGroup.is_default.desc(), PolicyGroup.name)
    ).all()
    return [(g, int(counts.get(g.id, 0))) for g in groups]


def get_group(session: Session, group_id: str) -> PolicyGroup:
    group = session.get(PolicyGroup, group_id)
    if group is None:
        raise NotFound("policy group not found")
    return group


def host_count(session: Session, group_id: str) -> int:
    return session.scalar(select(func.count()).where(Server.policy_group_id == group_id)) or 0


def copy_group(session: Session, group_id: str, name: str, description: str, *, actor: str) -> PolicyGroup:
    source = get_group(session, group_id)
    if not source.copyable:
        raise Forbidden(f"policy group {source.name} cannot be copied")
    name = name.strip()
    if not _NAME_RE.match(name):
        raise Invalid("name: 1-128 letters, digits, '_', '-' or inner spaces")
    if session.scalar(select(PolicyGroup).where(PolicyGroup.name == name)) is not None:
        raise Conflict(f"policy group {name!r} already exists")
    group = PolicyGroup(
        name=name,
        description=description[:1000],
        edition=source.edition,
        os=source.os,
        is_default=False,
        view_only=False,
        copyable=True,
        version=1,
    )
    for p in source.policies:
        group.policies.append(Policy(key=p.key, enabled=p.enabled, settings=dict(p.settings)))
    session.add(group)
    session.flush()
    audit.record(
        session,
        actor,
        "add_policy_group",
        target_type="policy_group",
        target_id=group.id,
        target_name=name,
        copied_from=source.name,
    )
    return group


def update_policy(
    session: Session,
    group_id: str,
    key: str,
    *,
    enabled: bool | None,
    settings: dict[str, Any] | None,
    actor: str,
) -> Policy:
    group = get_group(session, group_id)
    if group.view_only:
        raise Forbidden(f"policy group {group.name} is view only")
    policy = next((p for p in group.policies if p.key == key), None)
    spec = POLICY_SPECS.get(key)
    if policy is None or spec is None:
        raise NotFound(f"policy {key!r} not in group {group.name}")
    before = {"enabled": policy.enabled, "settings": dict(policy.settings)}
    if enabled is not None:
        policy.enabled = enabled
    if settings is not None:
        policy.settings = spec.validate({**policy.settings, **settings})
    group.version += 1
    session.flush()
    for server in session.scalars(select(Server).where(Server.policy_group_id == group.id)):
        refresh_server_policy(session, server)
    audit.record(
        session,
        actor,
        "modify_policy",
        target_type="policy_group",
        target_id=group.id,
        target_name=group.name,
        policy=key,
        before=before,
        after={"enabled": policy.enabled, "settings": policy.settings},
    )
    return policy


def delete_group(session: Session, group_id: str, *, actor: str) -> None:
    group = get_group(session, group_id)
    if group.is_default:
        raise Forbidden(f"preset group {group.name} cannot be deleted")
    if host_count(session, group_id):
        raise Conflict(f"policy group {group.name} is deployed to servers and cannot be deleted")
    session.delete(group)
    audit.record(
        session,
        actor,
        "delete_policy_group",
        target_type="policy_group",
        target_id=group_id,
        target_name=group.name,
    )


def apply_group(session: Session, group_id: str, server_ids: list[str], *, actor: str) -> list[Server]:
    """Deploy a group to protected servers of a matching edition (the new group replaces the old)."""
    group = get_group(session, group_id)
    servers = []
    for sid in server_ids:
        server = session.get(Server, sid)
        if server is None:
            raise NotFound(f"server {sid} not found")
        if server.edition is None:
            raise Conflict(f"server {server.name} is not protected; enable an edition first")
        if EDITION_GROUP[server.edition] != group.edition:
            raise Conflict(
                f"group {group.name} is for the {group.edition} edition; server {server.name} runs "
                f"{server.edition}"
            )
        servers.append(server)
    for server in servers:
        server.policy_group_id = group.id
        refresh_server_policy(session, server)
        audit.record(
            session,
            actor,
            "deploy_policy_group",
            target_type="server",
            target_id=server.id,
            target_name=server.name,
            group=group.name,
        )
    return servers


def bundle_for(session: Session, server: Server) -> PolicyBundle:
    """The policy bundle the agent applies; its version is a content hash, so any change is seen."""
    group = session.get(PolicyGroup, server.policy_group_id) if server.policy_group_id else None
    policies: dict[str, PolicyState] = {}
    if group is not None:
        for p in group.policies:
            policies[p.key] = PolicyState(enabled=p.enabled, settings=dict(p.settings))
    global_values = {k: global_settings.get(session, k) for k in GLOBAL_AGENT_SETTINGS}
    # Login security's per-server lists (whitelists, SSH IP whitelist, common login IPs/locations).
    from hostward.manager.loginsec.service import agent_section

    global_values["login_security"] = agent_section(session, server)
    # Web tamper protection (per-server configuration) and ransomware prevention (bound policy).
    from hostward.manager.ransomware.service import agent_section as ransomware_section
    from hostward.manager.wtp.service import agent_section as wtp_section

    global_values["wtp"] = wtp_section(session, server)
    global_values["ransomware"] = ransomware_section(session, server)
    # The "isolate and kill malicious programs" switch.
    from hostward.manager.malware.service import agent_section as malware_section

    global_values["malware"] = malware_section(session, server)
    protection = server.edition is not None and server.protection_status != "closed"
    body = {
        "group_id": group.id if group else None,
        "group_name": group.name if group else None,
        "edition": server.edition,
        "protection": protection,
        "policies": {k: v.model_dump() for k, v in sorted(policies.items())},
        "global_settings": global_values,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).digest()
    version = int.from_bytes(digest[:6], "big")  # fits a signed 64-bit column and JSON numbers
    return PolicyBundle(version=version, **body)


def refresh_server_policy(session: Session, server: Server) -> int:
    """Recompute the desired bundle version; agents compare it with theirs at each heartbeat."""
    server.policy_version = bundle_for(session, server).version
    return server.policy_version


def refresh_all_policies(session: Session) -> None:
    """After a global agent setting changes, every server's bundle changes."""
    for server in session.scalars(select(Server)):
        refresh_server_policy(session, server)
