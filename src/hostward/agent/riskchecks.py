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

Command ``vuln_fix {packages: [{package, manager, binaries, fixed_version, finding_ids}]}`` (one-click
fix): upgrades the packages on a worker thread (one fix at a time, the control thread keeps polling),
re-checks them, and reports per package in a ``vuln_fix`` record (durable through the outbox) and in
the command result. ``baseline_fix {checks: [{policy_id, check_id, result_ids}]}`` does the same for
baseline checks with a safe fix (file permissions and ownership; ``fixable`` in the results).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hostward.agent.commands import failed, succeeded
from hostward.agent.errors import RequestRejected
from hostward.agent.scan import CheckUnavailable, ScanCancelled, ScanJob, ScanRunner
from hostward.agent.transport.client import AgentClient
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import Clock
from hostward.core.ids import new_id
from hostward.wire import Command, CommandResult, PolicyBundle, PolicyState, RecordEvent

if TYPE_CHECKING:
    from hostward.agent.commands import CommandDispatcher
    from hostward.agent.runtime import Agent
    from hostward.agent.vulns.fix import VulnFixer

log = logging.getLogger(__name__)

VULN_TOPIC = "vuln_findings"
BASELINE_TOPIC = "baseline_results"
COMPLEXITY_TOPIC = "password_complexity"
WEAKPASS_TOPIC = "weak_passwords"
FIX_TOPIC = "vuln_fix"
FIX_COMMAND = "vuln_fix"
BASELINE_FIX_TOPIC = "baseline_fix"
BASELINE_FIX_COMMAND = "baseline_fix"
MAX_BASELINE_FIXES = 100
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
        fixer: VulnFixer | None = None,
        post_result: Callable[[str, CommandResult], None] | None = None,
    ) -> None:
        self.root = root
        self.outbox = outbox
        self.clock = clock
        self.client_factory = client_factory
        self.policy = policy
        self.notify = notify
        self.languages = languages
        self.fixer = fixer
        self.post_result = post_result
        self._fixes: queue.Queue[tuple[Command, Callable[[], CommandResult]]] = queue.Queue()
        self._fix_thread: threading.Thread | None = None
        self._fix_lock = threading.Lock()

    @classmethod
    def for_agent(cls, agent: Agent) -> RiskChecks:
        client_box: list[AgentClient] = []

        def post(command_id: str, result: CommandResult) -> None:
            if not client_box:
                client_box.append(agent.new_client())
            agent.post_result(client_box[0], command_id, result)

        return cls(
            agent.cfg.host_root,
            agent.outbox,
            agent.clock,
            client_factory=agent.new_client,
            policy=lambda: agent.bundle,
            notify=lambda: agent.outbox_ready.set(),
            post_result=post,
        )

    def register(self, runner: ScanRunner, dispatcher: CommandDispatcher | None = None) -> None:
        runner.add_check("vulnerability", self.vulnerability)
        runner.add_check("baseline", self.baseline)
        # Last: the slowest (hash throttle), so a comprehensive scan reports the rest early.
        runner.add_check("weak_password", self.weak_password)
        if dispatcher is not None:
            dispatcher.register(FIX_COMMAND, self.fix_command)
            dispatcher.register(BASELINE_FIX_COMMAND, self.baseline_fix_command)

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

    # ---- one-click fix ---------------------------------------------------------------------------

    def fix_command(self, command: Command) -> CommandResult | None:
        """``vuln_fix`` handler: a bad payload fails now; the fix runs on the worker thread."""
        from hostward.agent.vulns.fix import FixPayloadError, parse_targets

        try:
            targets = parse_targets(command.payload)
        except FixPayloadError as exc:
            return failed(str(exc))
        return self._on_worker(command, lambda: self.run_fix(command, list(targets)))

    def _on_worker(self, command: Command, work: Callable[[], CommandResult]) -> CommandResult | None:
        """Run ``work`` on the fix worker (one fix at a time); inline when results cannot be posted."""
        if self.post_result is None:
            return work()
        with self._fix_lock:
            self._fixes.put((command, work))
            if self._fix_thread is None or not self._fix_thread.is_alive():
                self._fix_thread = threading.Thread(target=self._fix_worker, name="risk-fix", daemon=True)
                self._fix_thread.start()
        return None

    def _fix_worker(self) -> None:
        while True:
            with self._fix_lock:
                try:
                    command, work = self._fixes.get_nowait()
                except queue.Empty:
                    self._fix_thread = None
                    return
            try:
                result = work()
            except Exception as exc:  # the worker must survive whatever one fix does
                log.exception("%s %s failed", command.kind, command.id)
                result = failed(f"{type(exc).__name__}: {exc}")
            if self.post_result is not None:
                self.post_result(command.id, result)

    def run_fix(self, command: Command, targets: list[Any]) -> CommandResult:
        """Fix, report per package in a ``vuln_fix`` record, return the command result."""
        from hostward.agent.vulns.fix import VulnFixer

        fixer = self.fixer or VulnFixer(self.root)
        results = [r.to_dict() for r in fixer.fix(targets)]
        now = self.clock.now()
        self._put(
            [
                RecordEvent(
                    key=new_id(),
                    occurred_at=now,
                    topic=FIX_TOPIC,
                    data={"command_id": command.id, "results": results},
                )
            ]
        )
        fixed = sum(1 for r in results if r["status"] == "fixed")
        detail = f"{fixed} of {len(results)} package(s) fixed" + "".join(
            f"; {r['package']}: {r['detail']}" for r in results if r["status"] != "fixed"
        )
        if fixed == len(results):
            return succeeded(detail, results=results)
        return failed(detail, results=results)

    def baseline_fix_command(self, command: Command) -> CommandResult | None:
        """``baseline_fix {checks: [{policy_id, check_id, result_ids}]}``: permission / ownership fixes of
        the shipped policies' checks, each re-evaluated; a ``baseline_fix`` record per check."""
        raw = command.payload.get("checks")
        if (
            not isinstance(raw, list)
            or not raw
            or len(raw) > MAX_BASELINE_FIXES
            or not all(isinstance(c, dict) and c.get("policy_id") and c.get("check_id") for c in raw)
        ):
            return failed(f"baseline_fix needs checks: 1 to {MAX_BASELINE_FIXES} {{policy_id, check_id}}")
        return self._on_worker(command, lambda: self.run_baseline_fix(command, raw))

    def run_baseline_fix(self, command: Command, checks: list[dict[str, Any]]) -> CommandResult:
        from hostward.agent.baseline import HostView, default_policy_dir, load_policies
        from hostward.agent.baseline.fix import CheckFix, fix_check

        policies, _ = load_policies([default_policy_dir()])
        by_key = {(p.id, c.id): (p, c) for p in policies for c in p.checks}
        host = HostView(root=self.root, allow_commands=False)
        results = []
        for item in checks:
            key = (str(item["policy_id"]), str(item["check_id"]))
            found = by_key.get(key)
            if found is None:
                fix = CheckFix(*key, "failed", "no such check in this agent's baseline policies")
            else:
                fix = fix_check(found[0], found[1], host)
            ids = item.get("result_ids")
            results.append({**fix.to_dict(), "result_ids": ids if isinstance(ids, list) else []})
        self._put(
            [
                RecordEvent(
                    key=new_id(),
                    occurred_at=self.clock.now(),
                    topic=BASELINE_FIX_TOPIC,
                    data={"command_id": command.id, "results": results},
                )
            ]
        )
        fixed = sum(1 for r in results if r["status"] == "fixed")
        detail = f"{fixed} of {len(results)} check(s) fixed" + "".join(
            f"; {r['check_id']}: {r['detail']}" for r in results if r["status"] != "fixed"
        )
        return (succeeded if fixed == len(results) else failed)(detail, results=results)

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
            fixable = self._fixable()
            results = [
                {
                    **r.to_dict(),
                    "policy_name": run.name,
                    "fixable": r.result == "failed" and (r.policy_id, r.check_id) in fixable,
                }
                for run in report.runs
                for r in run.results
            ]
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

    @staticmethod
    def _fixable() -> set[tuple[str, str]]:
        from hostward.agent.baseline import default_policy_dir, load_policies
        from hostward.agent.baseline.fix import fixable_checks

        return fixable_checks(load_policies([default_policy_dir()])[0])

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
