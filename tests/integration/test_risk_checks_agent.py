"""The agent's risk checks (vulnerability, baseline, weak password) feeding a real manager database:
the vulnerability check asks for advisories (answered by the manager's feed store), matches this
machine's real dpkg database, and its records, like the baseline and weak-password ones, are ingested
through the manager's real ingest path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.errors import RequestRejected
from hostward.agent.riskchecks import RiskChecks
from hostward.agent.scan import CheckUnavailable, ScanJob, ScanRunner
from hostward.agent.transport.outbox import Outbox
from hostward.agent.weakpass.cryptlib import make_hash
from hostward.core.clock import SystemClock
from hostward.manager.agentlink import ingest
from hostward.manager.baseline import service as baseline
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.risk.models import RiskServerState
from hostward.manager.servers.models import Server
from hostward.manager.vulns import feeds
from hostward.manager.vulns import service as vulns
from hostward.wire import PolicyBundle, PolicyState, RawEventBatch
from tests.fakes.servers import enrolled_server

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "vulns"
NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


class FeedClient:
    """Stands in for the agent channel: answers from the manager's feed store like the real endpoint."""

    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx
        self.asked: list[tuple[str, str]] = []
        self.closed = False

    def vuln_advisories(self, packages: Sequence[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        self.asked = list(packages)
        with self.ctx.uow() as s:
            if feeds.advisory_count(s) == 0:
                raise RequestRejected("404 no_vuln_feed", status=404)
            lines = list(feeds.advisory_lines(s, feeds.advisory_ids_for(s, packages)))
        for line in lines:
            yield json.loads(line)

    def close(self) -> None:
        self.closed = True


def bundle(edition: str = "premium", **policies_on: dict[str, Any]) -> PolicyBundle:
    return PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition=edition,
        protection=True,
        policies={key: PolicyState(enabled=True, settings=settings) for key, settings in policies_on.items()},
    )


@pytest.fixture
def manager(ctx: ManagerContext) -> ManagerContext:
    with ctx.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    return ctx


def deliver(ctx: ManagerContext, outbox: Outbox, server_id: str) -> list[str]:
    items = outbox.batch(500)
    batch = RawEventBatch(events=[json.loads(i.body) for i in items])
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        acks = ingest.ingest_batch(s, server, batch, NOW)
    outbox.ack(acks)
    return [a.status for a in acks]


def checks(
    tmp_path: Path, ctx: ManagerContext, root: Path, current: PolicyBundle
) -> tuple[RiskChecks, Outbox, FeedClient]:
    outbox = Outbox.open(tmp_path / "agent")
    client = FeedClient(ctx)
    risk = RiskChecks(
        root,
        outbox,
        SystemClock(),
        client_factory=lambda: client,
        policy=lambda: current,
        languages=False,  # type: ignore[arg-type, return-value]
    )
    return risk, outbox, client


def test_vulnerability_check_on_the_real_dpkg_database(manager: ManagerContext, tmp_path: Path) -> None:
    ctx = manager
    with ctx.uow() as s:
        sid = enrolled_server(s, NOW, name="me").id
    risk, outbox, client = checks(tmp_path, ctx, Path("/"), bundle())
    job = ScanJob(scan_id="scan-v", kind="vulnerability")
    with pytest.raises(CheckUnavailable, match="no vulnerability feed"):
        risk.vulnerability(job)
    assert client.closed

    with ctx.uow() as s:
        for path in (SAMPLES / "debian-tracker.json", SAMPLES / "osv"):
            feeds.import_path(s, path, name=path.name, source="path", actor="t", now=NOW)
    detail = risk.vulnerability(job)
    assert detail.startswith("vulnerabilities: 1 among ")
    assert ("debian", "glibc") in client.asked and ("debian", "openssl") in client.asked
    assert deliver(ctx, outbox, sid) == ["accepted"]
    with ctx.uow() as s:
        rows, total = vulns.list_findings(s, server_id=sid)
        # glibc fixed in a later version: reported; the openssl backport and the others: not
        assert total == 1
        glibc = rows[0][0]
        assert (glibc.package, glibc.fixed_version, glibc.severity, glibc.cvss_score) == (
            "glibc",
            "2.36-9+deb12u999",
            "high",
            7.8,
        )
        assert set(glibc.ids) == {"CVE-9999-0001", "HWTEST-2024-0001"}
        assert "libc6" in (glibc.fix_command or "")
        state = s.get(RiskServerState, sid)
        assert state is not None and state.vuln_distro == "Debian 12" and state.vuln_backports >= 2
        assert s.get(Server, sid).risk_vulnerabilities == 1  # type: ignore[union-attr]


def test_baseline_check_sends_results_and_complexity(manager: ManagerContext, tmp_path: Path) -> None:
    ctx = manager
    with ctx.uow() as s:
        sid = enrolled_server(s, NOW, name="b").id
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin yes\nX11Forwarding yes\n")
    (root / "etc/login.defs").write_text("PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\n")
    risk, outbox, _ = checks(tmp_path, ctx, root, bundle(configuration_check={"command_timeout_s": 5}))
    detail = risk.baseline(ScanJob(scan_id="scan-b", kind="baseline"))
    assert detail.startswith("baseline: ") and "password complexity failed" in detail
    assert set(deliver(ctx, outbox, sid)) == {"accepted"}
    with ctx.uow() as s:
        rows, total = baseline.list_results(s, server_id=sid)
        results = {r.check_id: r.result for r, _, _ in rows}
        assert results["ssh-root-login"] == "failed"
        assert results["ssh-x11-forwarding"] == "failed"
        assert total > 50
        state = s.get(RiskServerState, sid)
        assert state is not None and state.complexity_passed is False and state.baseline_enabled
        assert s.get(Server, sid).risk_baseline >= 3  # type: ignore[union-attr]

    # basic edition: no configuration check, only the complexity policy
    risk, outbox, _ = checks(tmp_path / "basic", ctx, root, bundle("basic", configuration_check={}))
    assert "configuration check off" in risk.baseline(ScanJob(scan_id="scan-c", kind="baseline"))
    deliver(ctx, outbox, sid)
    with ctx.uow() as s:
        assert baseline.list_results(s, server_id=sid)[1] == 0


def test_weak_password_check_throttled_with_alarms(manager: ManagerContext, tmp_path: Path) -> None:
    ctx = manager
    with ctx.uow() as s:
        sid = enrolled_server(s, NOW, name="w").id
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
        "bob:x:1001:1001::/home/bob:/bin/bash\n"
    )
    strong = make_hash("c0rrect-h0rse-battery-staple!", "$6$")
    (root / "etc/shadow").write_text(
        f"root:!:19000::::::\nalice:{make_hash('s3cret-custom', '$6$')}:19000::::::\n"
        f"bob:{strong}:19000::::::\n"
    )
    (root / "etc/shadow").chmod(0o600)
    # the time limit ends bob's run through the whole dictionary; alice's custom-list guess comes first
    settings = {"custom_passwords": ["s3cret-custom"], "max_hashes_per_second": 50.0, "max_seconds": 6}
    risk, outbox, _ = checks(tmp_path, ctx, root, bundle(weak_password_detection=settings))
    detail = risk.weak_password(ScanJob(scan_id="scan-w", kind="weak_password"))
    assert detail.startswith("weak passwords: 1 of 2 accounts (incomplete: time limit)"), detail
    hashes = int(detail.split("; ")[1].split()[0])
    seconds = float(detail.split(" in ")[1].split()[0])
    assert hashes / seconds <= 50 * 1.2  # the throttle holds
    assert set(deliver(ctx, outbox, sid)) == {"accepted"}
    with ctx.uow() as s:
        rows, _ = baseline.list_weak_passwords(s, server_id=sid)
        assert [(w.username, w.reasons) for w, _ in rows] == [("alice", ["custom_list"])]
        server = s.get(Server, sid)
        assert server is not None and (server.risk_baseline, server.risk_intrusions) == (1, 1)

    # the policy off: the check is unavailable (a comprehensive scan skips it)
    off = bundle()
    risk, _, _ = checks(tmp_path / "off", ctx, root, off)
    with pytest.raises(CheckUnavailable, match="weak_password_detection"):
        risk.weak_password(ScanJob(scan_id="x", kind="weak_password"))


def test_unreadable_shadow_is_reported_as_a_status(manager: ManagerContext, tmp_path: Path) -> None:
    ctx = manager
    with ctx.uow() as s:
        sid = enrolled_server(s, NOW).id
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    risk, outbox, _ = checks(tmp_path, ctx, root, bundle(weak_password_detection={}))
    with pytest.raises(CheckUnavailable, match="weak-password check: missing"):
        risk.weak_password(ScanJob(scan_id="x", kind="weak_password"))
    deliver(ctx, outbox, sid)
    with ctx.uow() as s:
        state = s.get(RiskServerState, sid)
        assert state is not None and state.weakpass_status == "missing"


def test_checks_register_as_scan_kinds(tmp_path: Path, manager: ManagerContext) -> None:
    risk, outbox, _ = checks(tmp_path, manager, tmp_path, bundle())
    from hostward.agent.collectors.assets import AssetCollector

    runner = ScanRunner(AssetCollector(tmp_path), outbox, SystemClock())
    risk.register(runner)
    assert list(runner.checks) == ["vulnerability", "baseline", "weak_password"]
    # cancelled before the work: the scan reports itself cancelled
    job = ScanJob(scan_id="c", kind="baseline", cancel=threading.Event())
    job.cancel.set()
    assert runner.run(job).status == "failed"
