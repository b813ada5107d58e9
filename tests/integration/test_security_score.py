"""Security score (reference §9.3 deduction table, per-category caps), daily snapshots and the 7-day trend,
on the dashboard API and page; refreshed by handling. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.agent.riskchecks import chunked_records
from hostward.core.clock import Clock
from hostward.core.ids import new_id
from hostward.manager.agentlink import ingest
from hostward.manager.alarms import service as alarms
from hostward.manager.app import create_app
from hostward.manager.auth import service as auth
from hostward.manager.baseline import service as baseline
from hostward.manager.console.trend import risk_trend_chart
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.policies.models import Policy
from hostward.manager.risk import score
from hostward.manager.risk.models import RiskServerState, ScoreSnapshot
from hostward.manager.scheduler.builtin import builtin_registry
from hostward.manager.servers.models import Server
from hostward.manager.vulns import service as vulns
from hostward.wire import AlarmEvent, RawEventBatch
from tests.fakes.servers import enrolled_server

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with context.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    return context


def finding(n: int, severity: str) -> dict[str, Any]:
    return {"key": f"k{n}", "package": f"p{n}", "ids": [f"CVE-2025-{n:04d}"], "severity": severity}


def ingest_events(ctx: ManagerContext, sid: str, events: list[Any]) -> None:
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        batch = RawEventBatch(events=[json.loads(e.model_dump_json()) for e in events])
        assert {a.status for a in ingest.ingest_batch(s, server, batch, NOW)} == {"accepted"}


def alarm(severity: str, n: int, event_class: str = "login_0002") -> AlarmEvent:
    return AlarmEvent(
        key=new_id(),
        occurred_at=NOW,
        event_class=event_class,
        severity=severity,  # type: ignore[arg-type]
        fingerprint=f"f{n}",
        title="t",
    )


def deduction(data: dict[str, Any], key: str) -> float | None:
    return next((d["deducted"] for d in data["deductions"] if d["key"] == key), None)


def test_empty_fleet_scores_100(any_ctx: ManagerContext) -> None:
    with any_ctx.uow() as s:
        data = score.compute(s, NOW)
    assert (data["score"], data["level"], data["deductions"]) == (100, "low", [])


def test_deductions_caps_and_handling(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        group = policies.default_group(s, "premium")
        web = enrolled_server(s, NOW, name="web", region="r1")
        web.protection_status, web.edition, web.policy_group_id = "opened", "premium", group.id
        spare = enrolled_server(s, NOW, name="spare", region="r2")
        spare.asset_importance = "important"
        test_box = enrolled_server(s, NOW, name="test", region="r2")
        test_box.asset_importance = "test"
        sid = web.id
    # 1 critical + 2 high vulnerabilities = 16; a failed high + a failed low check = 11, a weak password 10
    events: list[Any] = [
        *chunked_records(
            vulns.RECORD_TOPIC,
            "v",
            "findings",
            [finding(1, "critical"), finding(2, "high"), finding(3, "high")],
            200,
            NOW,
        ),
        *chunked_records(
            baseline.BASELINE_TOPIC,
            "b",
            "results",
            [
                {"policy_id": "p", "check_id": "c1", "severity": "high", "result": "failed"},
                {"policy_id": "p", "check_id": "c2", "severity": "low", "result": "failed"},
                {"policy_id": "p", "check_id": "c3", "severity": "high", "result": "passed"},
            ],
            300,
            NOW,
        ),
        alarm("high", 1),
        alarm("medium", 2),
        alarm("critical", 3, "login_1003"),
    ]
    ingest_events(ctx, sid, events)
    with ctx.uow() as s:
        baseline.ingest_weak_passwords(
            s, s.get(Server, sid), {"status": "ok", "weak": [{"username": "u"}], "complete": True}, NOW
        )  # type: ignore[arg-type]
        data = score.compute(s, NOW)
        cats = data["categories"]
        # vulnerabilities 16 (the scan just ran: no "no scan" deduction), compliance 11 + 10 -> cap 20,
        # intrusions 3 + 1 (the weak-password alarm counts under compliance only), unprotected 1 + 0.1
        assert deduction(data, "vuln_critical") == 10.0 and deduction(data, "vuln_high") == 6.0
        assert deduction(data, "no_vuln_scan") is None
        assert cats["vulnerabilities"]["deducted"] == 16.0
        assert cats["compliance"]["deducted"] == 20.0
        assert deduction(data, "weak_passwords") == 10.0
        assert cats["intrusions"]["deducted"] == 4.0
        assert cats["unprotected"]["deducted"] == 1.1
        assert data["score"] == round(100 - 16 - 20 - 4 - 1.1)
        assert data["level"] == "high"  # 59
        assert data["deductions"][0]["key"] in (
            "compliance",
            "weak_passwords",
            "baseline_high",
            "vuln_critical",
        )
        assert data["risks"] == {"vulnerabilities": 3, "baseline": 3, "alarms": 2, "unprotected": 2}
        # by region: r2 has only the two unprotected servers, and none protected
        r2 = score.compute(s, NOW, "r2")
        assert deduction(r2, "no_protection") == 30.0 and r2["categories"]["vulnerabilities"]["deducted"] == 0

        # handling raises the score at once: ignore the critical vulnerability, handle the alarms
        crit = s.scalars(select(vulns.VulnFinding).where(vulns.VulnFinding.severity == "critical")).one()
        vulns.handle(s, [crit.id], "ignore", remark="", actor="op", now=NOW)
        ids = [a.id for a, _ in alarms.list_alarms(s, status="unhandled")[0]]
        alarms.handle(s, ids, "mark_as_handled", remark="", actor="op", now=NOW)
        after = score.compute(s, NOW)
        assert after["categories"]["vulnerabilities"]["deducted"] == 6.0
        assert after["categories"]["intrusions"]["deducted"] == 0
        assert after["score"] > data["score"]

        # a month later without scans: the "no scan in the past month" items appear
        later = score.compute(s, NOW + timedelta(days=31))
        assert deduction(later, "no_vuln_scan") == 15.0 and deduction(later, "no_baseline_check") == 10.0
        # policies switched off on a protected server
        for key in ("weak_password_detection", "login_security"):
            s.scalars(
                select(Policy).where(Policy.group_id == group.id, Policy.key == key)
            ).one().enabled = False
        off = score.compute(s, NOW)
        assert (
            deduction(off, "weak_password_policy") == 10.0 and deduction(off, "login_security_policy") == 10.0
        )


def test_snapshots_and_trend(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        server = enrolled_server(s, NOW, name="a", region="r1")
        server.protection_status = "opened"
        s.add(RiskServerState(server_id=server.id, vuln_scanned_at=NOW, baseline_scanned_at=NOW))
        sid = server.id
    for day in (5, 3, 1):  # snapshots 5, 3 and 1 days ago, then today's risks change
        with ctx.uow() as s:
            score.snapshot_all(s, NOW - timedelta(days=day))
    ingest_events(ctx, sid, [alarm("high", 1), alarm("low", 2)])
    with ctx.uow() as s:
        # twice the same day: one row per day and region (all regions "" and r1)
        assert score.snapshot_all(s, NOW) == 2
        assert score.snapshot_all(s, NOW + timedelta(minutes=5)) == 2
        rows = s.scalars(select(ScoreSnapshot).where(ScoreSnapshot.region == "")).all()
        assert len(rows) == 4
        points = score.trend(s, NOW)
    assert [p["day"] for p in points] == [(NOW - timedelta(days=6 - n)).date().isoformat() for n in range(7)]
    assert [p["score"] is not None for p in points] == [False, True, False, True, False, True, True]
    assert points[-1]["alarms"] == 2 and points[-2]["alarms"] == 0
    chart = risk_trend_chart(points)
    alarms_series = next(x for x in chart.series if x.key == "alarms")
    assert len(alarms_series.lines) == 3  # gaps on the days without a snapshot
    assert alarms_series.dots[-1].value == 2 and alarms_series.dots[-1].y < alarms_series.dots[0].y
    assert [v for _, v in chart.y_ticks] == [0, 2, 4]


def test_periodic_task_is_registered() -> None:
    names = {t.name for t in builtin_registry().periodic_tasks}
    assert {"security_score", "vuln_scans", "risk_retention"} <= names


class FixedClock(Clock):
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
def client(ctx: ManagerContext) -> Iterator[TestClient]:
    ctx.clock = FixedClock()
    with ctx.uow() as s:
        policies.ensure_presets(s)
        auth.create_user(s, "admin", PASSWORD, "admin", actor="test")
        enrolled_server(s, NOW, name="lonely")
    ingest.load_builtin_handlers()
    with TestClient(create_app(ctx.settings, ctx, run_background=False), base_url="https://testserver") as c:
        yield c


def test_dashboard_api_and_page_show_score_and_trend(client: TestClient) -> None:
    token = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}).json()[
        "token"
    ]
    data = client.get("/api/v1/dashboard", headers={"Authorization": f"Bearer {token}"}).json()
    assert (
        data["security_score"]["score"] == 70
    )  # one unprotected general server (0.5) and none protected (30)
    assert [d["key"] for d in data["security_score"]["deductions"]] == ["no_protection", "unprotected_common"]
    assert len(data["risk_trend"]) == 7 and data["risk_trend"][-1]["score"] == 70
    client.post("/console/login", data={"username": "admin", "password": PASSWORD, "next": ""})
    page = client.get("/console/").text
    assert 'data-figure="security_score">70<' in page
    assert 'data-deduction="no_protection"' in page and "Handle now" in page
    assert 'id="risk-trend"' in page and "<polyline" in page
