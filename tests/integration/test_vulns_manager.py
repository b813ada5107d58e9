"""Vulnerabilities on the manager: feed import (sample feeds, malformed entries), advisory delivery by
package, findings from agent records through the real ingest path (fixed on rescan, ignore / unignore,
whitelist), views, statistics, the scheduled scan planner; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hostward.agent.riskchecks import chunked_records
from hostward.core.errors import Conflict, Invalid
from hostward.manager.agentlink import ingest
from hostward.manager.audit.models import AuditRecord
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.risk.models import RiskServerState
from hostward.manager.scans.models import Scan
from hostward.manager.servers.models import Server
from hostward.manager.vulns import feedfile, feeds, schedule, service
from hostward.manager.vulns.models import VulnAdvisory, VulnFinding
from hostward.manager.vulns.schemas import ScanSettings
from hostward.wire import RawEventBatch
from tests.fakes.servers import enrolled_server

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "vulns"
NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with context.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    return context


def finding(
    package: str, vuln: str, *, severity: str = "high", score: float | None = 7.5, **extra: Any
) -> dict[str, Any]:
    return {
        "key": f"Debian:{package}:{vuln}:",
        "package": package,
        "binaries": [package],
        "installed_version": "1.0-1",
        "fixed_version": "1.0-2",
        "ids": [vuln, *extra.pop("aliases", [])],
        "severity": severity,
        "cvss_score": score,
        "cvss_vector": None,
        "ecosystem": "Debian",
        "manager": "dpkg",
        "summary": f"{package} issue",
        "fix_command": f"apt-get install --only-upgrade {package}",
        "remediation": "Upgrade.",
        "location": "",
        **extra,
    }


def send(
    ctx: ManagerContext, server_id: str, scan_id: str, findings: list[dict[str, Any]], per: int = 2
) -> list[Any]:
    events = chunked_records(
        service.RECORD_TOPIC,
        scan_id,
        "findings",
        findings,
        per,
        NOW,
        distro="Debian 12",
        packages=400,
        advisories=9,
        suppressed_backports=1,
        feed_issues=[],
    )
    batch = RawEventBatch(events=[json.loads(e.model_dump_json()) for e in events])
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        return ingest.ingest_batch(s, server, batch, NOW)


def test_import_sample_feeds_and_deliver_by_package(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        tracker = feeds.import_path(
            s, SAMPLES / "debian-tracker.json", name="tracker", source="path", actor="admin", now=NOW
        )
        osv = feeds.import_path(s, SAMPLES / "osv", name="osv", source="path", actor="admin", now=NOW)
        bad = feeds.import_path(
            s, SAMPLES / "malformed.json", name="bad", source="upload", actor="admin", now=NOW
        )
        assert (tracker.advisories, tracker.issue_count) == (4, 0)
        assert (osv.advisories, osv.files, osv.issue_count) == (5, 5, 0)
        # the good entries are imported, every broken one is named with its file and entry
        assert bad.advisories == 5
        entries = {(i["entry"], i["message"]) for i in bad.issues}
        assert all(i["file"] == "bad" for i in bad.issues)
        assert ("#1", "an OSV entry must be a JSON object") in entries
        assert ("#2", "missing or invalid 'id'") in entries
        assert ("HWTEST-BAD-AFFECTED", "'affected' must be a list") in entries
        assert any(e == "HWTEST-BAD-EVENT affected[0]" for e, _ in entries)
        assert any(e == "HWTEST-BAD-PACKAGE affected[0]" for e, _ in entries)
        assert feeds.advisory_count(s) == 14
        glibc = s.scalars(select(VulnAdvisory).where(VulnAdvisory.primary_id == "HWTEST-2024-0001")).one()
        assert (glibc.severity, glibc.cvss_score) == ("high", 7.8)
        assert glibc.ids == ["HWTEST-2024-0001", "CVE-9999-0001"]

        ids = feeds.advisory_ids_for(s, [("debian", "glibc"), ("debian", "openssl"), ("pypi", "example-pkg")])
        lines = [json.loads(line) for line in feeds.advisory_lines(s, ids)]
        by_kind = sorted((li["kind"], li["feed"]) for li in lines)
        # glibc: tracker + OSV; openssl: tracker + OSV; Example_Pkg (PEP 503 name) from the malformed file
        assert by_kind == [
            ("debian", "tracker"),
            ("debian", "tracker"),
            ("osv", "bad"),
            ("osv", "osv"),
            ("osv", "osv"),
        ]
        tracker_line = next(li for li in lines if li["kind"] == "debian" and li["doc"]["package"] == "glibc")
        assert tracker_line["doc"]["info"]["releases"]["bookworm"]["fixed_version"] == "2.36-9+deb12u999"
        assert feeds.advisory_ids_for(s, [("debian", "no-such-package")]) == []

    # re-importing the same file replaces its advisories (no duplicates) and drops the emptied feed
    with ctx.uow() as s:
        again = feeds.import_path(
            s, SAMPLES / "debian-tracker.json", name="tracker", source="path", actor="admin", now=NOW
        )
        assert again.advisories == 4
        assert feeds.advisory_count(s) == 14
        assert {f.name for f in feeds.list_feeds(s)} == {"tracker", "osv", "bad"}
        assert tracker.id not in {f.id for f in feeds.list_feeds(s)}
        assert s.scalars(select(AuditRecord).where(AuditRecord.action == "import_vuln_feed")).all()


def test_nothing_importable_is_refused_with_the_reason(ctx: ManagerContext, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with ctx.uow() as s, pytest.raises(Invalid, match="not valid JSON"):
        feeds.import_path(s, broken, name="broken.json", source="upload", actor="a", now=NOW)
    with ctx.uow() as s:
        assert feeds.list_feeds(s) == []


def test_feed_name_rules_match_the_agent_matcher() -> None:
    from hostward.agent.vulns.feeds import normalize_name
    from hostward.agent.vulns.versions import family_of

    for eco in ("Debian:12", "PyPI", "pip", "npm", "Maven", "Red Hat:enterprise_linux:9", "Ubuntu:22.04:LTS"):
        assert feedfile.family_of(eco) == family_of(eco)
    for family, name in (("pypi", "Example_Pkg.Name"), ("npm", " left-pad "), ("debian", "glibc")):
        assert feedfile.normalize_name(family, name) == normalize_name(family, name)


def test_findings_lifecycle(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        server = enrolled_server(s, NOW, name="web-1")
        other = enrolled_server(s, NOW, name="web-2")
        sid, oid = server.id, other.id
    first = [
        finding("glibc", "CVE-9999-0001", severity="critical", score=9.8, aliases=["HWTEST-2024-0001"]),
        finding("curl", "CVE-9999-0010", severity="medium", score=5.0),
        finding("zlib", "CVE-9999-0011", severity="low", score=2.0),
    ]
    acks = send(ctx, sid, "scan-1", first)
    assert [a.status for a in acks] == ["accepted", "accepted"]
    send(ctx, oid, "scan-9", [finding("glibc", "CVE-9999-0001", severity="critical", score=9.8)])
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        assert (server.risk_vulnerabilities, server.scan_result) == (3, "risk")
        state = s.get(RiskServerState, sid)
        assert state is not None and (state.vuln_distro, state.vuln_packages, state.vuln_backports) == (
            "Debian 12",
            400,
            1,
        )
        rows, total = service.list_findings(s, server_id=sid)
        assert total == 3
        assert [r.package for r, _ in rows] == ["glibc", "curl", "zlib"]  # most severe first
        assert rows[0][0].vuln_id == "CVE-9999-0001" and rows[0][1] == "web-1"
        assert rows[0][0].fix_command == "apt-get install --only-upgrade glibc"
        vulns, vtotal = service.list_vulnerabilities(s)
        assert vtotal == 3
        assert (vulns[0]["vuln_id"], vulns[0]["unfixed_servers"], vulns[0]["severity"]) == (
            "CVE-9999-0001",
            2,
            "critical",
        )
        view, _ = service.list_server_view(s)
        assert [(v["server_name"], v["unfixed"]) for v in view] == [("web-1", 3), ("web-2", 1)]
        stats = service.statistics(s, NOW)
        assert (stats["unfixed"], stats["critical"], stats["servers_with_vulnerabilities"]) == (4, 2, 2)
        curl = next(r for r, _ in rows if r.package == "curl")
        zlib = next(r for r, _ in rows if r.package == "zlib")
        curl_id, zlib_id = curl.id, zlib.id

    # ignore one; unignore refuses what is not ignored; each id succeeds or fails on its own
    with ctx.uow() as s:
        outcomes = service.handle(s, [curl_id, "nope"], "ignore", remark="accepted", actor="op", now=NOW)
        assert [o.ok for o in outcomes] == [True, False]
        assert s.get(Server, sid).risk_vulnerabilities == 2  # type: ignore[union-attr]
        bad = service.handle(s, [zlib_id], "unignore", remark="", actor="op", now=NOW)
        assert not bad[0].ok and isinstance(bad[0].error, Conflict)

    # a rescan without zlib: zlib is fixed, the ignored curl stays ignored, glibc stays open
    send(ctx, sid, "scan-2", first[:2], per=500)
    with ctx.uow() as s:
        states = {r.package: (r.status, r.fixed_at) for r, _ in service.list_findings(s, server_id=sid)[0]}
        assert states["zlib"] == ("fixed", NOW)
        assert states["curl"][0] == "ignored" and states["glibc"][0] == "unfixed"
        assert s.get(Server, sid).risk_vulnerabilities == 1  # type: ignore[union-attr]
        # purged 7 days after the fix
        assert service.purge_fixed(s, NOW + timedelta(days=6)) == 0
        assert service.purge_fixed(s, NOW + timedelta(days=8)) == 1

    # an incomplete scan (a part missing) fixes nothing
    events = chunked_records(service.RECORD_TOPIC, "scan-3", "findings", first[:1], 1, NOW)
    data = dict(events[0].data, total=2)
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        service.ingest_findings(s, server, data, NOW)
        assert {r.status for r, _ in service.list_findings(s, server_id=sid)[0]} == {"unfixed", "ignored"}


def test_whitelist_rules(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        a, b = enrolled_server(s, NOW, name="a"), enrolled_server(s, NOW, name="b")
        aid, bid = a.id, b.id
    for sid in (aid, bid):
        send(ctx, sid, f"s-{sid}", [finding("glibc", "HWTEST-2024-0001", aliases=["CVE-9999-0001"])])
    with ctx.uow() as s:
        # by alias, on one server: its finding is ignored by the rule; the other stays open
        rule, matched = service.create_rule(
            s, vuln_id="CVE-9999-0001", server_ids=[aid], remark="vendor says safe", actor="op", now=NOW
        )
        assert matched == 1
        rule_id = rule.id
        assert (s.get(Server, aid).risk_vulnerabilities, s.get(Server, bid).risk_vulnerabilities) == (0, 1)  # type: ignore[union-attr]
        row = s.scalars(select(VulnFinding).where(VulnFinding.server_id == aid)).one()
        assert (row.status, row.whitelist_rule_id) == ("ignored", rule_id)
        outcome = service.handle(s, [row.id], "unignore", remark="", actor="op", now=NOW)[0]
        assert not outcome.ok and "whitelist rule" in str(outcome.error)
        with pytest.raises(Invalid):
            service.create_rule(s, vuln_id="bad id%", server_ids=None, remark="", actor="op", now=NOW)
    # a rescan keeps the whitelisted finding ignored
    send(ctx, aid, "again", [finding("glibc", "HWTEST-2024-0001", aliases=["CVE-9999-0001"])])
    with ctx.uow() as s:
        assert s.scalars(select(VulnFinding.status).where(VulnFinding.server_id == aid)).one() == "ignored"
        assert service.delete_rule(s, rule_id, actor="op") == 1
        assert s.scalars(select(VulnFinding.status).where(VulnFinding.server_id == aid)).one() == "unfixed"
        assert s.get(Server, aid).risk_vulnerabilities == 1  # type: ignore[union-attr]


def test_scheduled_vulnerability_scans(ctx: ManagerContext) -> None:
    settings = ctx.settings
    now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    with ctx.uow() as s:
        server = enrolled_server(s, now, name="sched")
        server.protection_status = "opened"
        server.edition = "premium"
        sid = server.id
        # no feed: nothing is planned
        assert schedule.plan_vuln_scans(s, now, settings)["skipped"] == "no feed"
        feeds.import_path(s, SAMPLES / "osv", name="osv", source="path", actor="a", now=now)
        assert schedule.plan_vuln_scans(s, now, settings) == {"queued": 0}
        state = s.get(RiskServerState, sid)
        assert state is not None and state.next_vuln_scan_at is not None
        slot = state.next_vuln_scan_at
        assert datetime(2025, 3, 4, 0, 0, tzinfo=UTC) <= slot < datetime(2025, 3, 4, 7, 0, tzinfo=UTC)
    at = slot + timedelta(seconds=5)
    with ctx.uow() as s:
        s.get(Server, sid).last_seen_at = at  # type: ignore[union-attr]
        assert schedule.plan_vuln_scans(s, at, settings) == {"queued": 1}
        scan = s.scalars(select(Scan).where(Scan.server_id == sid)).one()
        assert (scan.kind, scan.trigger) == ("vulnerability", "schedule")
        state = s.get(RiskServerState, sid)
        assert state is not None and state.next_vuln_scan_at is not None
        # weekly by default: the next slot is six to seven days later, in the window again
        gap = state.next_vuln_scan_at - slot
        assert timedelta(days=6) < gap <= timedelta(days=7, hours=7)
        assert state.next_vuln_scan_at.hour < 7
        schedule.put_settings(s, ScanSettings(enabled=False, period_days=3), actor="op", now=at)
        assert schedule.plan_vuln_scans(s, at + timedelta(days=7), settings)["skipped"] == "disabled"
        assert schedule.get_settings(s).period_days == 3
