"""Risk checks run by scans: vulnerabilities, baseline (with password complexity), weak passwords.

Each is a scan check (``ScanRunner.add_check``): it runs for scans of its own kind and inside every
comprehensive (``full``) scan, and reports through the outbox as ``RecordEvent``s, so results taken while
the manager is down arrive when it is back.

- ``vulnerability``: inventories the packages, asks the manager for the advisories about them
  (``POST /agent/v1/vulns/advisories``, streamed) and matches them with the local engine; findings go
  in ``vuln_findings`` records of at most ``FINDINGS_PER_RECORD``. No feed on the manager: the check is
  unavailable (a comprehensive scan skips it).
- ``baseline``: the password complexity policy (every edition) and, when the ``configuration_check``
  policy is on (enterprise and above), the shipped baseline policies; ``password_complexity`` and
  ``baseline_results`` records.
- ``weak_password``: the ``weak_password_detection`` policy's throttled check of the shadow file;
  a ``weak_passwords`` record (user names and reason categories only) and one ``login_1003`` alarm
  per weak account.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hostward.agent.errors import RequestRejected
from hostward.agent.scan import CheckUnavailable, ScanCancelled, ScanJob, ScanRunner
from hostward.agent.transport.client import AgentClient
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import Clock
from hostward.core.ids import new_id
from hostward.wire import PolicyBundle, PolicyState, RecordEvent

if TYPE_CHECKING:
    from hostward.agent.runtime import Agent

log = logging.getLogger(__name__)

VULN_TOPIC = "vuln_findings"
BASELINE_TOPIC = "baseline_results"
COMPLEXITY_TOPIC = "password_complexity"
WEAKPASS_TOPIC = "weak_passwords"
WEAK_PASSWORD_POLICY = "weak_password_detection"
CONFIG_CHECK_POLICY = "configuration_check"
CONFIG_CHECK_EDITIONS = ("enterprise", "premium", "wtp")
FINDINGS_PER_RECORD = 200
RESULTS_PER_RECORD = 300
MAX_FEED_ISSUES = 50
DEFAULT_HASH_RATE = 10.0
DEFAULT_MAX_SECONDS = 1200.0


def chunked_records(
    topic: str,
    scan_id: str,
    field: str,
    items: Sequence[dict[str, Any]],
    per: int,
    now: datetime,
    **meta: Any,
) -> list[RecordEvent]:
    """``items`` split into records ``{scan_id, part, parts, total, <field>: [...], **meta}``."""
    parts = max(1, -(-len(items) // per))
    return [
        RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic=topic,
            data={
                "scan_id": scan_id,
                "part": n,
                "parts": parts,
                "total": len(items),
                field: list(items[n * per : (n + 1) * per]),
                **meta,
            },
        )
        for n in range(parts)
    ]


class RiskChecks:
    """The three checks; collaborators injected (tests use a fake client and an outbox in a tmp dir)."""

    def __init__(
        self,
        root: Path,
        outbox: Outbox,
        clock: Clock,
        *,
        client_factory: Callable[[], AgentClient],
        policy: Callable[[], PolicyBundle | None],
        notify: Callable[[], None] = lambda: None,
        languages: bool = True,
    ) -> None:
        self.root = root
        self.outbox = outbox
        self.clock = clock
        self.client_factory = client_factory
        self.policy = policy
        self.notify = notify
        self.languages = languages

    @classmethod
    def for_agent(cls, agent: Agent) -> RiskChecks:
        return cls(
            agent.cfg.host_root,
            agent.outbox,
            agent.clock,
            client_factory=agent.new_client,
            policy=lambda: agent.bundle,
            notify=lambda: agent.outbox_ready.set(),
        )

    def register(self, runner: ScanRunner) -> None:
        runner.add_check("vulnerability", self.vulnerability)
        runner.add_check("baseline", self.baseline)
        # Last: the slowest (hash throttle), so a comprehensive scan reports the rest early.
        runner.add_check("weak_password", self.weak_password)

    def _put(self, events: Sequence[BaseModel]) -> None:
        self.outbox.put_many(events)
        self.notify()

    def _policy(self, key: str) -> PolicyState | None:
        bundle = self.policy()
        if bundle is None or not bundle.protection:
            return None
        return bundle.policies.get(key)

    @staticmethod
    def _cancelled(job: ScanJob) -> None:
        if job.cancel.is_set():
            raise ScanCancelled

    # ---- vulnerabilities -------------------------------------------------------------------------

    def vulnerability(self, job: ScanJob) -> str:
        from hostward.agent.vulns import VulnDB, installed_packages, match
        from hostward.agent.vulns.feeds import normalize_name

        distro, packages = installed_packages(self.root, languages=self.languages)
        self._cancelled(job)
        wanted = sorted({(p.family, normalize_name(p.family, p.name)) for p in packages})
        db = VulnDB()
        client = self.client_factory()
        try:
            for item in client.vuln_advisories(wanted):
                self._add(db, item)
                if job.cancel.is_set():
                    break
        except RequestRejected as exc:
            if exc.http_status == 404:
                raise CheckUnavailable("vulnerability scan: no vulnerability feed on the manager") from exc
            raise
        finally:
            client.close()
        self._cancelled(job)
        result = match(packages, db, distro)
        findings: dict[str, dict[str, Any]] = {}
        for f in result.findings:
            findings.setdefault(f.key, {**f.to_dict(), "key": f.key})
        now = self.clock.now()
        events = chunked_records(
            VULN_TOPIC,
            job.scan_id,
            "findings",
            list(findings.values()),
            FINDINGS_PER_RECORD,
            now,
            distro=None if distro is None else f"{distro.family} {distro.version_id}".strip(),
            packages=len(packages),
            advisories=db.advisories,
            suppressed_backports=result.suppressed_backports,
            feed_issues=[i.to_dict() for i in db.issues[:MAX_FEED_ISSUES]],
        )
        self._put(events)
        counts = result.counts()
        worst = ", ".join(f"{counts[s]} {s}" for s in ("critical", "high") if counts[s])
        return (
            f"vulnerabilities: {len(findings)} among {len(packages)} packages"
            + (f" ({worst})" if worst else "")
            + f", {db.advisories} advisories checked"
        )

    @staticmethod
    def _add(db: Any, item: dict[str, Any]) -> None:
        kind, doc, feed = item.get("kind"), item.get("doc"), str(item.get("feed") or "manager")
        if kind == "osv":
            db.add_osv(doc, feed)
        elif kind == "debian" and isinstance(doc, dict) and isinstance(doc.get("info"), dict):
            db.add_debian_tracker({str(doc.get("package")): {str(doc.get("cve")): doc["info"]}}, feed)

    # ---- baseline and password complexity --------------------------------------------------------

    def baseline(self, job: ScanJob) -> str:
        from hostward.agent.baseline import run_baseline
        from hostward.agent.weakpass import check_complexity

        now = self.clock.now()
        complexity = check_complexity(self.root)
        events: list[BaseModel] = [
            RecordEvent(
                key=new_id(),
                occurred_at=now,
                topic=COMPLEXITY_TOPIC,
                data={"scan_id": job.scan_id, **complexity.to_dict()},
            )
        ]
        detail = f"password complexity {'passed' if complexity.passed else 'failed'}"
        state = self._policy(CONFIG_CHECK_POLICY)
        bundle = self.policy()
        enabled = bool(state and state.enabled and bundle and bundle.edition in CONFIG_CHECK_EDITIONS)
        if enabled:
            assert state is not None
            self._cancelled(job)
            timeout = float(state.settings.get("command_timeout_s", 10.0))
            report = run_baseline(None, root=self.root, command_timeout=timeout)
            self._cancelled(job)
            results = [{**r.to_dict(), "policy_name": run.name} for run in report.runs for r in run.results]
            events += chunked_records(
                BASELINE_TOPIC,
                job.scan_id,
                "results",
                results,
                RESULTS_PER_RECORD,
                now,
                seconds=round(report.seconds, 3),
                errors=[e.to_dict() for e in report.errors][:100],
                enabled=True,
            )
            c = report.counts()
            rate = report.pass_rate()
            detail = (
                f"baseline: {c['passed']} passed, {c['failed']} failed, {c['not_applicable']} not applicable"
                + (f" (pass rate {rate}%)" if rate is not None else "")
                + (f", {len(report.errors)} policy error(s)" if report.errors else "")
                + f"; {detail}"
            )
        else:
            events += chunked_records(
                BASELINE_TOPIC, job.scan_id, "results", [], RESULTS_PER_RECORD, now, enabled=False
            )
            detail = f"baseline: configuration check off; {detail}"
        self._put(events)
        return detail

    # ---- weak passwords --------------------------------------------------------------------------

    def weak_password(self, job: ScanJob) -> str:
        from hostward.agent.weakpass import WeakpassConfig, check_shadow, weak_password_alarms

        state = self._policy(WEAK_PASSWORD_POLICY)
        if state is None or not state.enabled:
            raise CheckUnavailable(f"weak-password detection is off (policy {WEAK_PASSWORD_POLICY})")
        settings = state.settings
        custom = tuple(str(w) for w in settings.get("custom_passwords", []) if isinstance(w, str) and w)[:300]
        config = WeakpassConfig(
            max_hashes_per_second=float(settings.get("max_hashes_per_second", DEFAULT_HASH_RATE)),
            workers=1,
            custom=custom,
            max_seconds=float(settings.get("max_seconds", DEFAULT_MAX_SECONDS)),
        )
        report = check_shadow(
            self.root / "etc/shadow",
            config,
            passwd=self.root / "etc/passwd",
            root=self.root,
            cancel=job.cancel,
        )
        self._cancelled(job)
        now = self.clock.now()
        record = RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic=WEAKPASS_TOPIC,
            data={"scan_id": job.scan_id, **report.to_dict()},
        )
        alarms = weak_password_alarms(report, now) if report.status == "ok" else []
        self._put([record, *alarms])
        if report.status != "ok":
            raise CheckUnavailable(f"weak-password check: {report.status}: {report.detail}")
        rate = f"{report.hashes / report.seconds:.1f}/s" if report.seconds > 0 else "-"
        return (
            f"weak passwords: {len(report.weak)} of {report.accounts_checked} accounts"
            + ("" if report.complete else " (incomplete: time limit)")
            + f"; {report.hashes} hashes in {report.seconds:.1f} s ({rate})"
        )
