"""The agent's login-security component: login logs -> parser -> brute-force detector -> firewall, and
the alarms and records that go to the manager.

One worker thread owns the log sources, the parsers, the detector and the firewall; it wakes as soon as
a watched log changes (inotify, or the journal reader), so a block is in the kernel set milliseconds
after the line that decided it. The policy (``configure``) and ``unblock_ip`` commands arrive on other
threads and take the same lock. Every few seconds the worker checks the kernel set against the block
ledger (a firewall reload must not silently unban), reports expired blocks and refreshes the safety
list (administrators' sessions come and go).

What the bundle says decides what runs: protection off -> nothing (our table is removed, the blocks are
lifted and reported); the "login_security" policy on -> detection and alarms; an edition that can
block (enterprise, premium, WTP) -> the firewall, with blocks when "block non-whitelisted attack IPs"
is on, and the SSH login IP whitelist whatever the policy says.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from hostward.agent.collectors.logsources import LogSource, discover_sources, parse_log_source
from hostward.agent.collectors.logtail import LogWatch
from hostward.agent.commands import failed, succeeded
from hostward.agent.detectors.bruteforce import BruteForceDetector, Verdict
from hostward.agent.detectors.logevents import ADDRESS, KIND, LoginRow
from hostward.agent.detectors.loginrules import SafetyList
from hostward.agent.detectors.logparse import LogParser
from hostward.agent.enforcers.blockledger import BlockEntry, BlockLedger
from hostward.agent.enforcers.firewall import Firewall, FirewallError
from hostward.agent.loginsec import safety
from hostward.agent.loginsec.firewalls import FirewallFactory, default_firewall, installed_firewalls
from hostward.agent.loginsec.policy import Desired, desired_from_bundle, user_whitelisted
from hostward.agent.loginsec.reports import block_data, login_record, record
from hostward.core.net import parse_network
from hostward.wire import AlarmEvent, Command, CommandResult, DetectorHealth, PolicyBundle, RecordEvent

if TYPE_CHECKING:
    from hostward.agent.runtime import Agent

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
VERIFY_INTERVAL_S = 2.0
SAFETY_INTERVAL_S = 10.0
NAME = "login_security"

Sink = Callable[[list[AlarmEvent | RecordEvent]], None]


class LoginSecurity:
    """Log sources, parsers, brute-force detector and firewall of one agent (see the module docstring)."""

    name = NAME

    def __init__(
        self,
        *,
        state_dir: Path,
        host_root: Path,
        log_sources: Iterable[str],
        manager_url: str,
        sink: Sink,
        clock: Callable[[], float] = time.time,
        firewall_factory: FirewallFactory | None = None,
        discover: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.host_root = host_root
        self.log_sources = list(log_sources)
        self.manager_url = manager_url
        self.sink = sink
        self.clock = clock
        self.firewall_factory = firewall_factory or default_firewall(host_root)
        self.discover = discover
        self.detector = BruteForceDetector()
        self.desired = Desired()
        self._lock = threading.RLock()
        self._reconfigure = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.watch: LogWatch | None = None
        self.parsers: dict[str, LogParser] = {}
        self.ledger: BlockLedger | None = None
        self.firewall: Firewall | None = None
        self._firewall_tried = False
        self._applied: tuple[tuple[str, ...], tuple[str, ...] | None] | None = None
        self._torn_down = False
        self._safe = SafetyList()
        self._safety_at = 0.0
        self._verify_at = 0.0
        self.source_errors: list[str] = []
        self.enforcer_error = ""
        self.failure = ""
        self.counters = dict.fromkeys(
            ("events", "logins", "blocks_applied", "blocks_refused", "block_errors", "readded", "expired"), 0
        )

    @classmethod
    def for_agent(cls, agent: Agent) -> LoginSecurity:
        def sink(events: list[AlarmEvent | RecordEvent]) -> None:
            agent.outbox.put_many(events)
            agent.outbox_ready.set()

        return cls(
            state_dir=agent.cfg.state_dir,
            host_root=agent.cfg.host_root,
            log_sources=agent.cfg.log_sources,
            manager_url=agent.cfg.manager_url or agent.creds.manager_url,
            sink=sink,
        )

    # ---- lifecycle ------------------------------------------------------------------------------------

    def configure(self, bundle: PolicyBundle | None) -> None:
        """Take a new policy bundle; the worker applies it at once (it is woken)."""
        desired = desired_from_bundle(bundle)
        with self._lock:
            self.desired = desired
            self._reconfigure = True
        if desired.error:
            log.warning("login security: %s", desired.error)
        watch = self.watch
        if watch is not None:
            watch.waiter.wake()

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hostward-logins", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker, store log positions; blocks and an SSH whitelist stay in force (they survive
        a restart). Rules made ready for blocking with nothing in them are removed: no rules of ours
        stay behind on a host where there is nothing to enforce."""
        self._stop.set()
        watch = self.watch
        if watch is not None:
            watch.waiter.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            if self.watch is not None:
                self.watch.close()
                self.watch = None
            if self.ledger is not None:
                firewall = self.firewall
                if (
                    firewall is not None
                    and not self.desired.ssh_whitelist
                    and not self.ledger.active(self.clock())
                ):
                    try:
                        firewall.teardown()
                    except FirewallError as exc:
                        log.warning("removing the idle login security %s rules: %s", firewall.backend, exc)
                    self.firewall = None
                    self._firewall_tried = False
                    self._applied = None
                self.ledger.close()
                self.ledger = None

    def _run(self) -> None:
        try:
            self.setup()
        except Exception as exc:
            log.exception("login security could not start")
            self.failure = f"{type(exc).__name__}: {exc}"
            return
        while not self._stop.is_set():
            try:
                self.step(POLL_TIMEOUT_S)
                self.failure = ""
            except Exception as exc:
                log.exception("login security step failed")
                self.failure = f"{type(exc).__name__}: {exc}"
                self.counters["errors"] = self.counters.get("errors", 0) + 1
                self._stop.wait(1.0)

    def setup(self) -> None:
        """Open the log sources and the block ledger; re-learn the active blocks."""
        sources = self.sources()
        self.watch = LogWatch(sources, self.state_dir, start="end")
        self.parsers = {s.key: LogParser(service=s.service) for s in sources}
        self.ledger = BlockLedger(self.state_dir)
        now = self.clock()
        for row in self.ledger.active(now):
            self.detector.restore_block(row.network, row.until, row.times_blocked, row.blocked_at)
        log.info("login security: watching %s", ", ".join(str(s) for s in sources) or "no log source")

    def sources(self) -> list[LogSource]:
        chosen: list[LogSource] = []
        self.source_errors = []
        for spec in self.log_sources:
            try:
                chosen.append(parse_log_source(spec))
            except ValueError as exc:
                self.source_errors.append(str(exc))
                log.warning("ignoring log source: %s", exc)
        if self.discover:
            keys = {s.key for s in chosen}
            chosen += [s for s in discover_sources(self.host_root) if s.key not in keys]
        return chosen

    # ---- one pass -------------------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """Apply a pending policy, read what the logs got, act on it; periodic checks when due."""
        assert self.watch is not None, "setup() first"
        if self._reconfigure:
            self.apply_config()
        batches = self.watch.poll(timeout)
        if batches:
            events: list[LoginRow] = []
            for batch in batches:
                parser = self.parsers[batch.source.key]
                if batch.text:
                    events.extend(parser.parse_text(batch.text))
                for entry in batch.entries:
                    event = parser.parse_message(entry.identifier, entry.message, entry.realtime)
                    if event is not None:
                        events.append(event)
            if events:
                self.handle(events)
            self.watch.commit()
        now = self.clock()
        if now >= self._verify_at:
            self._verify_at = now + VERIFY_INTERVAL_S
            self.verify()
        if now >= self._safety_at:
            self.apply_config()

    def handle(self, events: list[LoginRow]) -> None:
        """Feed events to the detector, apply its blocks in one batch, send alarms and records."""
        now = self.clock()
        out: list[AlarmEvent | RecordEvent] = []
        verdict = Verdict()
        with self._lock:
            desired = self.desired
            for event in events:
                self.counters["events"] += 1
                if event[KIND] == "success" and event[ADDRESS] and desired.detect:
                    out.append(login_record(event, now))
                if desired.detect:
                    v = self.detector.feed(event, now)
                    verdict.blocks.extend(v.blocks)
                    verdict.alarms.extend(v.alarms)
            blocked = self._apply_blocks(verdict, now) if verdict.blocks else []
        alarms = [a for a in verdict.alarms if not user_whitelisted(a, desired)]
        out = [*blocked, *alarms, *out]
        if out:
            self.sink(out)

    def _apply_blocks(self, verdict: Verdict, now: float) -> list[AlarmEvent | RecordEvent]:
        records: list[AlarmEvent | RecordEvent] = []
        firewall = self._sync_firewall() if self.desired.block else None
        if firewall is None:
            errors = {str(parse_network(b.network)): "no usable firewall" for b in verdict.blocks}
        else:
            entries = [
                BlockEntry(
                    network=b.network,
                    service=b.service,
                    until=b.until.timestamp(),
                    reason=b.reason,
                    attempts=b.attempts,
                    times_blocked=b.times_blocked,
                    blocked_at=now,
                )
                for b in verdict.blocks
            ]
            result = firewall.block(entries)
            errors = {**result.refused, **result.failed}
            applied = set(result.applied)
            for b in verdict.blocks:
                network = str(parse_network(b.network))
                if network in applied:
                    self.counters["blocks_applied"] += 1
                    records.append(record("blocked_ip", now, block_data(b, network)))
                    log.info(
                        "blocked %s (%s, %s) until %s", network, b.service, b.reason, b.until.isoformat()
                    )
        for b in verdict.blocks:
            network = str(parse_network(b.network))
            if network in errors:
                self.counters["blocks_refused" if "protected" in errors[network] else "block_errors"] += 1
                self.detector.unblock(network)  # not in force: the next burst may try again
                for alarm in verdict.alarms:
                    if alarm.evidence.get("network") == b.network:
                        alarm.evidence["blocked"] = False
                        alarm.evidence["block_error"] = errors[network][:500]
        return records

    # ---- policy, safety list, firewall -----------------------------------------------------------------

    def apply_config(self) -> None:
        """Bring the detector and the firewall in line with the policy and the current safety list."""
        # The host's own facts are gathered before taking the lock (walking /proc is slow on a busy
        # host), so an unblock command never waits for it.
        self._reconfigure = False
        self._safety_at = self.clock() + SAFETY_INTERVAL_S
        desired = self.desired
        manager = safety.manager_addresses(self.manager_url)
        own = safety.own_addresses()
        admins = safety.admin_session_sources(self.host_root)
        with self._lock:
            now = self.clock()
            if self.desired is not desired:
                self._reconfigure = True  # a newer policy arrived meanwhile: the next step applies it
                desired = self.desired
            try:
                safe = SafetyList.build(
                    whitelist=desired.whitelist, manager=manager, own=own, admin_sessions=admins
                )
            except ValueError as exc:
                log.warning("login security safety list: %s", exc)
                safe = SafetyList.build(manager=manager, own=own, admin_sessions=admins)
            self.detector.configure(desired.settings, safe)
            self._safe = safe
            if not desired.firewall:
                self._lift_all("protection_off")
                return
            # Our table is created when there is something to enforce: an SSH whitelist, a block, or
            # blocking switched on — then it is ready before the first attack, so that block is one
            # `nft` call in the kernel within milliseconds (creating the table, restoring the ledger and
            # writing the safety set on the way took ~150 ms, in which a 4-task hydra makes 15 guesses).
            # With blocking off and no whitelist, a host carries no rules of ours.
            active = self.ledger is not None and bool(self.ledger.active(now))
            if desired.ssh_whitelist or desired.block or active or self.firewall is not None:
                self._sync_firewall()

    def _sync_firewall(self) -> Firewall | None:
        """The firewall, created if needed, with the current safety list and SSH whitelist written."""
        firewall = self._firewall()
        if firewall is None:
            return None
        networks = sorted({str(n) for n in self._safe.networks()})
        ssh = sorted(self.desired.ssh_whitelist) or None
        signature = (tuple(networks), tuple(ssh) if ssh is not None else None)
        if signature != self._applied:
            try:
                firewall.safety = [parse_network(n) for n in networks]
                firewall.set_ssh_whitelist(ssh)  # writes the safety set too (one configuration)
                self._applied = signature
                self.enforcer_error = ""
                log.info(
                    "login security firewall: %d protected networks, SSH whitelist %s",
                    len(networks),
                    ", ".join(ssh) if ssh else "off",
                )
            except FirewallError as exc:
                self._applied = None
                self.enforcer_error = str(exc)[:500]
                log.error("login security firewall: %s", exc)
        return firewall

    def _firewall(self) -> Firewall | None:
        if self.firewall is None and not self._firewall_tried and self.ledger is not None:
            self._firewall_tried = True
            self.firewall = self.firewall_factory(self.ledger)
            if self.firewall is None:
                self.enforcer_error = "no usable firewall (nftables or iptables + ipset): detect only"
                log.error("login security: %s", self.enforcer_error)
            else:
                self._torn_down = False
                restored = self.firewall.restore()
                log.info(
                    "login security: %s enforcer ready (%d blocks restored)", self.firewall.backend, restored
                )
        return self.firewall

    def _lift_all(self, why: str) -> None:
        """Protection off (or an edition that cannot block): remove every block and our firewall table."""
        if self.ledger is None:
            return
        now = self.clock()
        active = self.ledger.active(now)
        if not active and self._torn_down:
            return
        self.ledger.set_status([r.network for r in active], "unblocked", now)
        for row in active:
            self.detector.unblock(row.network)
        if active:
            data = [
                {"action": "unblocked", "network": r.network, "service": r.service, "by": why} for r in active
            ]
            self.sink([record("blocked_ip", now, d) for d in data])
        firewalls = [self.firewall] if self.firewall is not None else []
        for firewall in firewalls or installed_firewalls(self.ledger):
            try:
                firewall.teardown()
            except FirewallError as exc:
                log.warning("removing the login security %s rules: %s", firewall.backend, exc)
        self.firewall = None
        self._firewall_tried = False
        self._applied = None
        self._torn_down = True

    def verify(self) -> None:
        """Kernel set vs ledger: re-add vanished blocks, report expired ones."""
        with self._lock:
            firewall, ledger = self.firewall, self.ledger
            if ledger is None:
                return
            now = self.clock()
            if firewall is None:
                expired = ledger.expire(now)
            else:
                result = firewall.verify()
                expired = result.expired
                if result.readded:
                    self.counters["readded"] += len(result.readded)
                    log.warning("re-added %d block(s) that vanished from the firewall", len(result.readded))
                self.enforcer_error = result.error[:500]
            records = []
            for network in expired:
                row = ledger.get(network)
                service = row.service if row is not None else ""
                records.append(
                    record("blocked_ip", now, {"action": "expired", "network": network, "service": service})
                )
            self.counters["expired"] += len(expired)
        if records:
            self.sink(list(records))

    # ---- commands and health ----------------------------------------------------------------------------

    def cmd_unblock(self, command: Command) -> CommandResult:
        """``unblock_ip {network, blocked_ip_id?}``: remove the block now and report it."""
        raw = command.payload.get("network")
        try:
            network = str(parse_network(str(raw)))
        except ValueError:
            return failed(f"unblock_ip needs a network, got {raw!r}")
        now = self.clock()
        started = time.monotonic()
        with self._lock:
            gone: list[str] = []
            if self.firewall is not None:
                try:
                    gone = self.firewall.unblock([network])
                except FirewallError as exc:
                    return failed(f"firewall: {exc}")
            elif self.ledger is not None:
                self.ledger.set_status([network], "unblocked", now)
            self.detector.unblock(network)
        data = {
            "action": "unblocked",
            "network": network,
            "service": str(command.payload.get("service") or ""),
            "blocked_ip_id": str(command.payload.get("blocked_ip_id") or ""),
            "by": "manual",
        }
        self.sink([record("blocked_ip", now, data)])
        log.info(
            "unblocked %s in %.0f ms (command queued %.1f s ago)",
            network,
            (time.monotonic() - started) * 1000,
            now - command.created_at.timestamp(),
        )
        return succeeded(
            f"{network} unblocked" if gone else f"{network} was not in the firewall", network=network
        )

    def health_entries(self) -> list[DetectorHealth]:
        """For the heartbeat: nothing while login security is off here and nothing went wrong."""
        health = self.health()
        return [] if health.status == "disabled" else [health]

    def health(self) -> DetectorHealth:
        parsed: dict[str, int] = {}
        for parser in list(self.parsers.values()):
            for key, value in parser.counters.as_dict().items():
                parsed[key] = parsed.get(key, 0) + value
        watch = self.watch
        tail = watch.health() if watch is not None else {}
        ledger = self.ledger
        active = 0
        with contextlib.suppress(Exception):
            active = len(ledger.active(self.clock())) if ledger is not None else 0
        counters = {
            "lines_read": tail.get("lines", 0) + tail.get("journal_entries", 0),
            "lines_unparsed": parsed.get("unparsed", 0),
            "lines_oversize": parsed.get("oversize", 0),
            "login_events": parsed.get("events", 0),
            "failures": self.detector.counters.get("failures", 0),
            "successes": self.detector.counters.get("successes", 0),
            "blocks_active": active,
            "sources": len(self.parsers),
            **self.counters,
        }
        desired = self.desired
        if self.firewall is not None:
            notes = [f"enforcer {self.firewall.backend}"]
        elif desired.firewall and not self.enforcer_error:
            notes = ["enforcer idle (rules are created when there is something to enforce)"]
        else:
            notes = ["enforcer none"]
        if desired.ssh_whitelist and desired.firewall:
            notes.append(f"SSH whitelist {len(desired.ssh_whitelist)} entries")
        problems = [p for p in (self.failure, self.enforcer_error, desired.error, *self.source_errors) if p]
        if self.failure:
            status = "failed"
        elif not desired.detect and not desired.firewall:
            status = "disabled"
        elif problems or not self.parsers:
            status = "degraded"
            if not self.parsers:
                problems.append("no log source found")
        else:
            status = "running"
        reason = "; ".join([*problems, *notes])[:1024]
        return DetectorHealth(name=NAME, status=status, reason=reason, counters=counters)


__all__ = ["Desired", "LoginSecurity", "desired_from_bundle", "installed_firewalls"]
