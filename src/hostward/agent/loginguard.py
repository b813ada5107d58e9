"""Login security as one engine: log sources -> parser -> brute-force detector -> firewall.

``LoginGuard.step(timeout)`` is one iteration: wait for new log data (inotify, so a failure line is
seen within milliseconds), parse it, feed the detector, apply its block decisions in one firewall
batch, and return the alarms for the outbox. The agent runtime calls it in its own thread (or a test
calls it directly); nothing here sleeps or loops on its own. ``maintain()`` is the periodic part:
verify the kernel set against the ledger (a firewall reload must not unblock silently).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hostward.agent.collectors.logtail import LogSource, LogWatch
from hostward.agent.detectors.bruteforce import BlockDecision, BruteForceDetector
from hostward.agent.detectors.logparse import LoginEvent, LogParser
from hostward.agent.enforcers.blockledger import BlockEntry
from hostward.agent.enforcers.firewall import BlockResult, Firewall, FirewallError, VerifyResult
from hostward.wire import AlarmEvent, DetectorHealth

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    events: list[LoginEvent] = field(default_factory=list)
    decisions: list[BlockDecision] = field(default_factory=list)
    blocks: BlockResult | None = None
    alarms: list[AlarmEvent] = field(default_factory=list)


def entry_of(decision: BlockDecision) -> BlockEntry:
    return BlockEntry(
        network=decision.network,
        service=decision.service,
        until=decision.until.timestamp(),
        reason=decision.reason,
        attempts=decision.attempts,
        times_blocked=decision.times_blocked,
    )


class LoginGuard:
    """Owns nothing but the wiring: the watch, the detector and the firewall are passed in."""

    name = "login_security"

    def __init__(
        self,
        watch: LogWatch,
        detector: BruteForceDetector,
        firewall: Firewall | None = None,
        *,
        clock: Callable[[], float] = time.time,
        parser_factory: Callable[[LogSource], LogParser] | None = None,
    ) -> None:
        self.watch = watch
        self.detector = detector
        self.firewall = firewall
        self.clock = clock
        self._parser_factory = parser_factory or (lambda s: LogParser(service=s.service))
        self._parsers: dict[str, LogParser] = {}
        self.firewall_error = ""

    def parser(self, source: LogSource) -> LogParser:
        p = self._parsers.get(source.key)
        if p is None:
            p = self._parsers[source.key] = self._parser_factory(source)
        return p

    def step(self, timeout: float) -> StepResult:
        """One iteration: wait up to ``timeout`` s for log data, then parse, detect and block."""
        result = StepResult()
        for batch in self.watch.poll(timeout):
            parser = self.parser(batch.source)
            if batch.lines:
                result.events += parser.parse_many(batch.lines)
            for entry in batch.entries:
                event = parser.parse_message(entry.identifier, entry.message, entry.realtime)
                if event is not None:
                    result.events.append(event)
        if result.events:
            verdict = self.detector.feed_many(result.events, self.clock())
            result.decisions = verdict.blocks
            result.alarms = verdict.alarms
            if verdict.blocks and self.firewall is not None:
                try:
                    result.blocks = self.firewall.block([entry_of(d) for d in verdict.blocks])
                    self.firewall_error = ""
                except FirewallError as exc:
                    # the ledger has the rows; maintain() re-applies them when the firewall works again
                    self.firewall_error = str(exc)
                    log.error("blocking failed: %s", exc)
        self.watch.commit()
        return result

    def maintain(self) -> VerifyResult | None:
        """Periodic: make the kernel set match the ledger again (re-add, expire, drop unwanted)."""
        if self.firewall is None:
            return None
        result = self.firewall.verify()
        self.firewall_error = result.error
        return result

    def health(self) -> DetectorHealth:
        counters: dict[str, int] = {}
        for parser in self._parsers.values():
            for k, v in parser.counters.as_dict().items():
                counters[f"parse_{k}"] = counters.get(f"parse_{k}", 0) + v
        counters.update({f"tail_{k}": v for k, v in self.watch.health().items()})
        counters.update({f"detect_{k}": v for k, v in self.detector.health().counters.items()})
        if self.firewall is not None:
            counters.update({f"firewall_{k}": v for k, v in self.firewall.counters.items()})
        reasons = []
        if self.firewall_error:
            reasons.append(f"firewall: {self.firewall_error}")
        if not self.watch.sources:
            reasons.append("no log source found")
        status = "degraded" if reasons else "running"
        return DetectorHealth(
            name=self.name, status=status, reason="; ".join(reasons)[:1024], counters=counters
        )

    def close(self) -> None:
        self.watch.close()
