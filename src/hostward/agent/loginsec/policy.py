"""What the policy bundle asks of the agent's login security, as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostward.agent.detectors.bruteforce import SUCCESSFUL_LOGIN
from hostward.agent.detectors.loginrules import BruteForceSettings
from hostward.core.net import parse_address, parse_network
from hostward.wire import AlarmEvent, PolicyBundle

POLICY_KEY = "login_security"
BLOCKING_EDITIONS = ("enterprise", "premium", "wtp")


@dataclass(frozen=True)
class Desired:
    """What the policy bundle asks of login security."""

    detect: bool = False  # protection on and the policy enabled
    firewall: bool = False  # protection on with an edition that can block
    block: bool = False  # block brute-force sources (firewall and the policy's option)
    settings: BruteForceSettings = field(default_factory=BruteForceSettings)
    whitelist: tuple[str, ...] = ()
    user_whitelist: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ssh_whitelist: tuple[str, ...] = ()
    error: str = ""


def desired_from_bundle(bundle: PolicyBundle | None) -> Desired:
    """Translate the bundle; a bad setting keeps the defaults and is reported in ``error``."""
    if bundle is None or not bundle.protection:
        return Desired()
    section: dict[str, Any] = dict(bundle.global_settings.get("login_security") or {})
    policy = bundle.policies.get(POLICY_KEY)
    detect = policy is not None and policy.enabled
    values = dict(policy.settings) if policy is not None else {}
    can_block = bundle.edition in BLOCKING_EDITIONS
    error = ""
    try:
        settings = BruteForceSettings(
            short_threshold=int(values.get("short_threshold", 5)),
            short_window_s=int(values.get("short_window_s", 30)),
            long_threshold=int(values.get("long_threshold", 15)),
            long_window_s=int(values.get("long_window_s", 3600)),
            lock_minutes=int(values.get("lock_minutes", 720)),
            escalation_factor=2.0 if values.get("escalation", True) else 1.0,
            ipv6_prefix=int(values.get("ipv6_prefix", 64)),
            report_success=bool(values.get("report_successful_logins", False)),
            block_attackers=can_block and bool(values.get("block_non_whitelisted", True)),
            alarm_whitelisted=bool(values.get("alarm_on_whitelisted_brute_force", True)),
        )
    except (TypeError, ValueError) as exc:
        error = f"policy {POLICY_KEY}: {exc}"
        settings = BruteForceSettings(block_attackers=can_block)
    users = tuple(
        (str(e.get("user", "")), tuple(str(n) for n in e.get("networks", [])))
        for e in section.get("login_whitelist_users", [])
        if isinstance(e, dict)
    )
    return Desired(
        detect=detect,
        firewall=can_block,
        block=detect and settings.block_attackers,
        settings=settings,
        whitelist=tuple(str(n) for n in section.get("login_whitelist", [])),
        user_whitelist=users,
        ssh_whitelist=tuple(str(n) for n in section.get("ssh_whitelist", [])),
        error=error,
    )


def user_whitelisted(alarm: AlarmEvent, desired: Desired) -> bool:
    """A successful-login alarm of a (user, IP) the login whitelist names is not raised."""
    if alarm.event_class != SUCCESSFUL_LOGIN:
        return False
    try:
        addr = parse_address(str(alarm.evidence.get("login_ip", "")))
    except ValueError:
        return False
    user = alarm.evidence.get("username")
    pairs = [(None, desired.whitelist), *desired.user_whitelist]
    for wanted_user, networks in pairs:
        if wanted_user and wanted_user != user:
            continue
        for text in networks:
            net = parse_network(text)
            if net.version == addr.version and addr in net:
                return True
    return False
