"""Brute-force detection over login events (``LoginRow``): sliding windows per source per service,
block decisions, ``login_0001`` (brute force), ``login_0002`` (brute force then a success, critical)
and ``login_1001`` (successful login, when reporting is on).

Pure logic: the caller passes every event with ``now`` (epoch seconds) and the safety list; nothing
here reads a clock, a file or the firewall. Sources are aggregated (IPv4 /32, IPv6 /64 by default), so
an attacker rotating addresses inside a /64 fills one window. Memory is bounded: at most
``max_sources`` windows and ``max_offenders`` offender records, least recently seen evicted first.

Counting (the ``counting`` of each pattern, see content/logpatterns/README.md): ``attempt`` lines count
one each; ``connection`` lines count one per connection (source address + port) unless that connection
already counted an attempt; ``followup`` lines never count.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hostward.agent.detectors.logevents import (
    ADDRESS,
    COUNTING,
    KIND,
    METHOD,
    PORT,
    SERVICE,
    TIMESTAMP,
    USER,
    LoginRow,
)
from hostward.agent.detectors.loginrules import (
    LOOPBACK,
    MAX_LOCK_MINUTES,
    MAX_WHITELIST,
    BruteForceSettings,
    SafetyList,
)
from hostward.core.ids import new_id
from hostward.core.net import IPAddress, IPNetwork, aggregate_source, parse_address, parse_network
from hostward.wire import AlarmEvent, DetectorHealth, alarm_class

BRUTE_FORCE = "login_0001"
BRUTE_FORCE_SUCCEEDED = "login_0002"
SUCCESSFUL_LOGIN = "login_1001"
_FUTURE_SKEW_S = 60.0
_MAX_USERS = 10
_MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class BlockDecision:
    """Block ``network`` (all ports) until ``until``; the enforcer applies it, the ledger keeps it."""

    network: str
    service: str
    until: datetime
    lock_seconds: int
    reason: str
    attempts: int
    address: str
    times_blocked: int
    first_failure: datetime
    last_failure: datetime
    users: tuple[str, ...] = ()


@dataclass
class Verdict:
    """What one event caused."""

    blocks: list[BlockDecision] = field(default_factory=list)
    alarms: list[AlarmEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.blocks or self.alarms)


@dataclass
class _Window:
    """Recent counted failures of one source network against one service."""

    times: deque[float]
    first: float
    last: float = 0.0
    attempts: int = 0
    address: str = ""
    users: list[str] = field(default_factory=list)
    # per connection (address, port): (attempt lines counted, counted anything)
    connections: OrderedDict[tuple[str, int], list[int]] = field(default_factory=OrderedDict)
    alarmed_at: float | None = None


@dataclass
class _Offender:
    blocked_until: float = 0.0
    times_blocked: int = 0
    last_block_at: float = 0.0
    flagged_at: float | None = None  # last brute-force detection, for login_0002
    flagged: dict[str, Any] = field(default_factory=dict)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class BruteForceDetector:
    """Feeds on event rows (a ``LoginEvent`` is one too); returns a ``Verdict`` (blocks, alarms) per event."""

    name = "login_bruteforce"

    def __init__(
        self,
        settings: BruteForceSettings | None = None,
        safety: SafetyList | None = None,
        *,
        ids: Callable[[], str] = new_id,
    ) -> None:
        self.settings = settings or BruteForceSettings()
        self.safety = safety or SafetyList()
        self._ids = ids
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._offenders: OrderedDict[str, _Offender] = OrderedDict()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "events",
                "failures",
                "counted",
                "successes",
                "no_address",
                "stale",
                "while_blocked",
                "protected",
                "blocks",
                "alarms",
                "evicted",
            ),
            0,
        )

    # ---- configuration ----------------------------------------------------------------------------

    def configure(self, settings: BruteForceSettings | None = None, safety: SafetyList | None = None) -> None:
        """New rule and/or safety list; windows are kept (a policy change does not forgive)."""
        if settings is not None:
            self.settings = settings
        if safety is not None:
            self.safety = safety

    def unblock(self, network: str) -> bool:
        """Forget the active block of ``network`` (manual unblock); its escalation history stays."""
        offender = self._offenders.get(str(parse_network(network)))
        if offender is None or offender.blocked_until == 0.0:
            return False
        offender.blocked_until = 0.0
        return True

    def restore_block(self, network: str, until: float, times_blocked: int, blocked_at: float) -> None:
        """Re-learn a block from the ledger after a restart, so escalation and dedup continue."""
        offender = self._offender(str(parse_network(network)))
        offender.blocked_until = max(offender.blocked_until, until)
        offender.times_blocked = max(offender.times_blocked, times_blocked)
        offender.last_block_at = max(offender.last_block_at, blocked_at)

    def blocked(self, network: str, now: float) -> bool:
        offender = self._offenders.get(network)
        return offender is not None and offender.blocked_until > now

    # ---- feeding ------------------------------------------------------------------------------------

    def feed(self, event: LoginRow, now: float) -> Verdict:
        """Account one event observed at ``now`` (epoch seconds)."""
        self.counters["events"] += 1
        verdict = Verdict()
        if event[KIND] not in ("failure", "success"):
            return verdict
        address, ts = event[ADDRESS], event[TIMESTAMP]
        if address is None:
            self.counters["no_address"] += 1
            return verdict
        try:
            addr = parse_address(address)
        except ValueError:
            self.counters["no_address"] += 1
            return verdict
        t = now if ts is None else min(ts, now + _FUTURE_SKEW_S)
        if t > now:
            t = now
        if t < now - self.settings.long_window_s:
            self.counters["stale"] += 1  # an old line (a backlog after a restart): no decision on it
            return verdict
        network = aggregate_source(addr, self.settings.ipv6_prefix)
        if event[KIND] == "success":
            self._success(event, addr, network, t, now, verdict)
        else:
            self._failure(event, addr, network, t, now, verdict)
        return verdict

    def feed_many(self, events: Iterable[LoginRow], now: float) -> Verdict:
        total = Verdict()
        for event in events:
            verdict = self.feed(event, now)
            total.blocks.extend(verdict.blocks)
            total.alarms.extend(verdict.alarms)
        return total

    def health(self) -> DetectorHealth:
        counters = {**self.counters, "tracked_sources": len(self._windows), "offenders": len(self._offenders)}
        return DetectorHealth(name=self.name, status="running", counters=counters)

    # ---- internals ----------------------------------------------------------------------------------

    def _failure(
        self, event: LoginRow, addr: IPAddress, network: IPNetwork, t: float, now: float, verdict: Verdict
    ) -> None:
        self.counters["failures"] += 1
        if event[COUNTING] == "followup":
            return
        s = self.settings
        key = (str(network), event[SERVICE])
        window = self._window(key, t)
        if not self._count(window, event):
            return
        self.counters["counted"] += 1
        window.attempts += 1
        window.last = max(window.last, t)
        window.address = str(addr)
        user = event[USER]
        if user and user not in window.users and len(window.users) < _MAX_USERS:
            window.users.append(user)
        times = window.times
        times.append(max(t, times[-1]) if times else t)
        offender = self._offenders.get(key[0])
        if offender is not None and offender.blocked_until > now:
            self.counters["while_blocked"] += 1  # lines already in flight when the block landed
            return
        short = len(times) >= s.short_threshold and times[-1] - times[-s.short_threshold] <= s.short_window_s
        long = len(times) >= s.long_threshold and times[-1] - times[-s.long_threshold] <= s.long_window_s
        if short or long:
            reason = (
                f"{s.short_threshold} failures in {s.short_window_s} s"
                if short
                else f"{s.long_threshold} failures in {s.long_window_s} s"
            )
            self._detected(window, key, addr, network, reason, now, verdict)

    def _count(self, window: _Window, event: LoginRow) -> bool:
        """Whether this failure line counts as one more attempt (connection-aware, see module doc)."""
        address, port = event[ADDRESS], event[PORT]
        if port is None or address is None:
            return True
        conn = (address, port)
        state = window.connections.get(conn)
        if state is None:
            state = window.connections[conn] = [0, 0]
            if len(window.connections) > _MAX_CONNECTIONS:
                window.connections.popitem(last=False)
        else:
            window.connections.move_to_end(conn)
        if event[COUNTING] == "attempt":
            state[0] += 1
            if state[0] > state[1]:
                state[1] = state[0]
                return True
            return False
        # "connection": one for the connection, unless attempts on it already counted
        if state[1] == 0:
            state[1] = 1
            return True
        return False

    def _detected(
        self,
        window: _Window,
        key: tuple[str, str],
        addr: IPAddress,
        network: IPNetwork,
        reason: str,
        now: float,
        verdict: Verdict,
    ) -> None:
        s = self.settings
        service = key[1]
        protected = self.safety.reason(addr)
        target = network
        if protected is None and self.safety.overlaps(network):
            # the /64 holds a protected address: block the attacker's own address only
            target = ipaddress.ip_network(addr)
        offender = self._offender(key[0])
        offender.flagged_at = now
        offender.flagged = {
            "attempts": window.attempts,
            "first_failure": _iso(window.first),
            "last_failure": _iso(window.last),
            "users": list(window.users),
        }
        block: BlockDecision | None = None
        if protected is None and s.block_attackers:
            previous = offender.times_blocked if now - offender.last_block_at <= s.offender_memory_s else 0
            lock = s.lock_seconds(previous)
            offender.times_blocked = previous + 1
            offender.last_block_at = now
            offender.blocked_until = now + lock
            block = BlockDecision(
                network=str(target),
                service=service,
                until=datetime.fromtimestamp(now + lock, UTC),
                lock_seconds=lock,
                reason=reason,
                attempts=window.attempts,
                address=str(addr),
                times_blocked=offender.times_blocked,
                first_failure=datetime.fromtimestamp(window.first, UTC),
                last_failure=datetime.fromtimestamp(window.last, UTC),
                users=tuple(window.users),
            )
            verdict.blocks.append(block)
            self.counters["blocks"] += 1
        elif protected:
            self.counters["protected"] += 1
        cooled = window.alarmed_at is None or now - window.alarmed_at >= s.alarm_cooldown_s
        if (protected is None or s.alarm_whitelisted) and (block is not None or cooled):
            window.alarmed_at = now
            evidence = {
                "login_ip": str(addr),
                "username": window.users[-1] if window.users else "",
                "usernames": list(window.users),
                "service": service,
                "attempts": window.attempts,
                "first_failure": _iso(window.first),
                "last_failure": _iso(window.last),
                "network": str(target),
                "rule": reason,
                "blocked": block is not None,
                "block_until": block.until.isoformat() if block else None,
                "lock_minutes": block.lock_seconds // 60 if block else None,
                "times_blocked": offender.times_blocked,
                "protected": protected,
            }
            title = f"Brute-force attack on {service} from {addr} ({window.attempts} failed logins)"
            verdict.alarms.append(
                self._alarm(BRUTE_FORCE, f"{BRUTE_FORCE}:{service}:{target}", title, evidence, now)
            )
        # a new window starts after a detection: the next one needs fresh failures
        window.times.clear()
        window.attempts = 0
        window.first = window.last = now
        window.users = []

    def _success(
        self, event: LoginRow, addr: IPAddress, network: IPNetwork, t: float, now: float, verdict: Verdict
    ) -> None:
        self.counters["successes"] += 1
        s = self.settings
        base = {
            "login_ip": str(addr),
            "username": event[USER] or "",
            "service": event[SERVICE],
            "method": event[METHOD],
            "login_time": _iso(t),
        }
        if s.report_success:
            title = f"Successful {event[SERVICE]} login of {event[USER] or '?'} from {addr}"
            fingerprint = f"{SUCCESSFUL_LOGIN}:{event[SERVICE]}:{addr}:{event[USER]}"
            verdict.alarms.append(self._alarm(SUCCESSFUL_LOGIN, fingerprint, title, dict(base), now))
        offender = self._offenders.get(str(network))
        if offender is None or offender.flagged_at is None or now - offender.flagged_at > s.success_window_s:
            return
        evidence = {
            **base,
            **offender.flagged,
            "network": str(network),
            "blocked": offender.blocked_until > now,
        }
        service, user = event[SERVICE], event[USER]
        title = f"Brute-force attack on {service} from {addr}, then a successful login of {user}"
        fingerprint = f"{BRUTE_FORCE_SUCCEEDED}:{event[SERVICE]}:{network}:{event[USER]}"
        verdict.alarms.append(self._alarm(BRUTE_FORCE_SUCCEEDED, fingerprint, title, evidence, now))

    def _alarm(
        self, code: str, fingerprint: str, title: str, evidence: dict[str, Any], now: float
    ) -> AlarmEvent:
        self.counters["alarms"] += 1
        return AlarmEvent(
            key=self._ids(),
            occurred_at=datetime.fromtimestamp(now, UTC),
            event_class=code,
            severity=alarm_class(code).severity,
            title=title[:512],
            fingerprint=fingerprint[:256],
            evidence=evidence,
        )

    def _window(self, key: tuple[str, str], t: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            size = max(self.settings.short_threshold, self.settings.long_threshold)
            window = self._windows[key] = _Window(times=deque(maxlen=size), first=t)
            while len(self._windows) > self.settings.max_sources:
                self._windows.popitem(last=False)
                self.counters["evicted"] += 1
        else:
            self._windows.move_to_end(key)
            size = max(self.settings.short_threshold, self.settings.long_threshold)
            if window.times.maxlen != size:  # thresholds changed by a policy update
                window.times = deque(window.times, maxlen=size)
            if window.times and t - window.times[-1] > self.settings.long_window_s:
                # quiet for longer than the long window: a new episode (old failures no longer count)
                window.times.clear()
                window.attempts = 0
                window.users = []
                window.connections.clear()
            if not window.times:
                window.first = t
        return window

    def _offender(self, network: str) -> _Offender:
        offender = self._offenders.get(network)
        if offender is None:
            offender = self._offenders[network] = _Offender()
            while len(self._offenders) > self.settings.max_offenders:
                self._offenders.popitem(last=False)
        else:
            self._offenders.move_to_end(network)
        return offender


__all__ = [
    "BRUTE_FORCE",
    "BRUTE_FORCE_SUCCEEDED",
    "LOOPBACK",
    "MAX_LOCK_MINUTES",
    "MAX_WHITELIST",
    "SUCCESSFUL_LOGIN",
    "BlockDecision",
    "BruteForceDetector",
    "BruteForceSettings",
    "SafetyList",
    "Verdict",
]
