"""The login-security rule's settings and the never-block safety list (validated once, at configure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from hostward.core.net import IPAddress, IPNetwork, parse_network

MAX_WHITELIST = 50
MAX_LOCK_MINUTES = 43_200
LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class BruteForceSettings:
    """The login-security rule. Defaults are the reference's: ≥5 failures in 30 s or ≥15 in 3,600 s."""

    short_window_s: int = 30
    short_threshold: int = 5
    long_window_s: int = 3600
    long_threshold: int = 15
    lock_minutes: int = 720
    escalation_factor: float = 2.0  # each re-block of a repeat offender multiplies the lock time ...
    max_lock_minutes: int = MAX_LOCK_MINUTES  # ... up to this
    offender_memory_s: int = 30 * 86_400  # a block older than this no longer escalates the next one
    ipv6_prefix: int = 64
    report_success: bool = True
    block_attackers: bool = True
    alarm_whitelisted: bool = True
    success_window_s: int = 86_400  # a success this long after a brute force is login_0002
    alarm_cooldown_s: int = 600  # one login_0001 per source and service per cooldown when not blocking
    max_sources: int = 50_000
    max_offenders: int = 100_000

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("short_window_s", 1 <= self.short_window_s <= 86_400, "1..86400"),
            ("short_threshold", 1 <= self.short_threshold <= 1000, "1..1000"),
            (
                "long_window_s",
                self.short_window_s <= self.long_window_s <= 7 * 86_400,
                "short_window_s..604800",
            ),
            ("long_threshold", 1 <= self.long_threshold <= 10_000, "1..10000"),
            ("lock_minutes", 1 <= self.lock_minutes <= MAX_LOCK_MINUTES, f"1..{MAX_LOCK_MINUTES}"),
            ("escalation_factor", 1.0 <= self.escalation_factor <= 10.0, "1..10"),
            (
                "max_lock_minutes",
                self.lock_minutes <= self.max_lock_minutes <= MAX_LOCK_MINUTES,
                f"lock_minutes..{MAX_LOCK_MINUTES}",
            ),
            ("offender_memory_s", 0 <= self.offender_memory_s <= 365 * 86_400, "0..31536000"),
            ("ipv6_prefix", 32 <= self.ipv6_prefix <= 128, "32..128"),
            ("success_window_s", 0 <= self.success_window_s <= 30 * 86_400, "0..2592000"),
            ("alarm_cooldown_s", 0 <= self.alarm_cooldown_s <= 86_400, "0..86400"),
            ("max_sources", 100 <= self.max_sources <= 10_000_000, "100..10000000"),
            ("max_offenders", 100 <= self.max_offenders <= 10_000_000, "100..10000000"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"login security setting {name}={getattr(self, name)!r}: allowed {allowed}")

    @classmethod
    def from_policy(cls, settings: Mapping[str, Any]) -> BruteForceSettings:
        """Settings from a policy's ``settings`` dict; unknown keys are ignored, bad values named."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, raw in settings.items():
            spec = known.get(name)
            if spec is None:
                continue
            kind = type(getattr(cls(), name))
            if kind is bool:
                if not isinstance(raw, bool):
                    raise ValueError(f"login security setting {name}={raw!r}: expected true or false")
                values[name] = raw
                continue
            try:
                values[name] = kind(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"login security setting {name}={raw!r}: expected a number") from exc
        return cls(**values)

    def lock_seconds(self, previous_blocks: int) -> int:
        """Lock time of a block that follows ``previous_blocks`` remembered blocks of the same source."""
        minutes = self.lock_minutes * self.escalation_factor ** max(0, previous_blocks)
        return int(min(minutes, self.max_lock_minutes) * 60)


@dataclass(frozen=True)
class SafetyList:
    """Sources that are never blocked, by reason. Loopback is always in it."""

    whitelist: tuple[IPNetwork, ...] = ()
    manager: tuple[IPNetwork, ...] = ()
    own: tuple[IPNetwork, ...] = ()
    admin_sessions: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(
        cls,
        whitelist: Iterable[str] = (),
        manager: Iterable[str] = (),
        own: Iterable[str] = (),
        admin_sessions: Iterable[str] = (),
    ) -> SafetyList:
        """Parse the lists; ValueError names a bad entry (and a login whitelist over 50 entries)."""
        white = tuple(_networks("login whitelist", whitelist))
        if len(white) > MAX_WHITELIST:
            raise ValueError(f"login whitelist has {len(white)} entries; at most {MAX_WHITELIST} are allowed")
        return cls(
            whitelist=white,
            manager=tuple(_networks("manager address", manager)),
            own=tuple(_networks("host address", own)),
            admin_sessions=tuple(_networks("administrator session", admin_sessions)),
        )

    def reason(self, addr: IPAddress) -> str | None:
        """Why ``addr`` must not be blocked, or None."""
        for name, networks in (
            ("loopback", LOOPBACK),
            ("whitelist", self.whitelist),
            ("manager", self.manager),
            ("own_address", self.own),
            ("admin_session", self.admin_sessions),
        ):
            if any(addr.version == n.version and addr in n for n in networks):
                return name
        return None

    def networks(self) -> list[IPNetwork]:
        """Every protected network (loopback included), for the firewall's accept set."""
        return [*LOOPBACK, *self.whitelist, *self.manager, *self.own, *self.admin_sessions]

    def overlaps(self, network: IPNetwork) -> bool:
        return any(network.version == n.version and network.overlaps(n) for n in self.networks())


def _networks(what: str, values: Iterable[str]) -> list[IPNetwork]:
    out = []
    for value in values:
        try:
            out.append(parse_network(str(value)))
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from exc
    return out
