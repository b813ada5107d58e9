"""Baseline checks on the manager: results from agent records through the real ingest path, per-check
view with pass rate, ignore / unignore / verify, weak passwords (login_1003 alarms closed when the password
is fixed), password complexity; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hostward.agent.riskchecks import chunked_records
from hostward.core.errors import Conflict
from hostward.core.ids import new_id
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.alarms.models import Alarm
from hostward.manager.baseline import service
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.risk.models import RiskServerState
from hostward.manager.servers.models import Server
from hostward.wire import AlarmEvent, RawEventBatch, RecordEvent
from tests.fakes.servers import enrolled_server

NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with context.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    return context


def check(check_id: str, result: str, severity: str = "high", policy: str = "hostward_ssh") -> dict[str, Any]:
    return {
        "policy_id": policy,
        "policy_name": "SSH server",
        "check_id": check_id,
        "title": f"title of {check_id}",
        "severity": severity,
        "result": result,
        "reason": f"reason of {check_id}",
        "rationale": "why",
        "remediation": "how",
        "description": "",
    }


def post(ctx: ManagerContext, server_id: str, events: list[Any], at: datetime = NOW) -> list[str]:
    batch = RawEventBatch(events=[json.loads(e.model_dump_json()) for e in events])
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        return [a.status for a in ingest.ingest_batch(s, server, batch, at)]


def record(topic: str, data: dict[str, Any]) -> RecordEvent:
    return RecordEvent(key=new_id(), occurred_at=NOW, topic=topic, data=data)


def test_baseline_results_views_and_handling(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        a = enrolled_server(s, NOW, name="alpha")
        b = enrolled_server(s, NOW, name="beta")
        for srv in (a, b):
            srv.protection_status, srv.edition = "opened", "premium"
        aid, bid = a.id, b.id
    results = [
        check("ssh-root-login", "failed", "high"),
        check("ssh-x11-forwarding", "failed", "low"),
        check("ssh-max-auth-tries", "passed", "medium"),
        check("nginx-server-tokens", "not_applicable", "low", policy="hostward_nginx"),
    ]
    events = chunked_records(
        service.BASELINE_TOPIC, "scan-a", "results", results, 3, NOW, seconds=1.5, errors=[], enabled=True
    )
    assert len(events) == 2
    assert post(ctx, aid, events) == ["accepted", "accepted"]
    post(
        ctx,
        bid,
        chunked_records(
            service.BASELINE_TOPIC,
            "scan-b",
            "results",
            [check("ssh-root-login", "passed")],
            300,
            NOW,
            enabled=True,
        ),
    )
    with ctx.uow() as s:
        assert s.get(Server, aid).risk_baseline == 2  # type: ignore[union-attr]
        assert s.get(Server, aid).scan_result == "risk"  # type: ignore[union-attr]
        checks, total = service.list_checks(s)
        assert total == 4
        root = checks[0]
        assert (root["check_id"], root["failed"], root["passed"], root["servers"]) == (
            "ssh-root-login",
            1,
            1,
            2,
        )
        stats = service.statistics(s)
        assert (stats["failed"], stats["passed"], stats["not_applicable"]) == (2, 2, 1)
        assert stats["pass_rate"] == 50.0
        assert stats["top_servers"] == [{"server_id": aid, "server_name": "alpha", "failed": 2}]
        rows, _ = service.list_results(s, server_id=aid, result="failed")
        x11 = next(r for r, _, _ in rows if r.check_id == "ssh-x11-forwarding")
        passed = next(r for r, _, _ in service.list_results(s, server_id=aid, result="passed")[0])
        x11_id, passed_id = x11.id, passed.id
        root_id = next(r.id for r, _, _ in rows if r.check_id == "ssh-root-login")

    with ctx.uow() as s:
        outcomes = service.handle(s, [x11_id, passed_id], "ignore", remark="kiosk", actor="op", now=NOW)
        assert [o.ok for o in outcomes] == [True, False]
        assert isinstance(outcomes[1].error, Conflict)
        assert s.get(Server, aid).risk_baseline == 1  # type: ignore[union-attr]
        assert service.statistics(s)["pass_rate"] == pytest.approx(66.7)
        assert service.list_results(s, server_id=aid, result="ignored")[1] == 1

    # verify: a manual baseline scan of that server; its results show "verifying" until the run comes back
    with ctx.uow() as s:
        scans = service.verify(s, [root_id, x11_id], actor="op", now=NOW, settings=ctx.settings)
        assert [(sc.server_id, sc.kind, sc.trigger) for sc in scans] == [(aid, "baseline", "manual")]
        command = s.scalars(select(AgentCommand).where(AgentCommand.server_id == aid)).one()
        assert command.payload == {"scan_id": scans[0].id, "kind": "baseline"}
        rows, _ = service.list_results(s, server_id=aid, result="failed")
        assert all(v for _, _, v in rows)
        scan_id = scans[0].id
    # the rerun: root login fixed, x11 passes now (its exception is dropped), nginx check gone
    rerun = [
        check("ssh-root-login", "passed"),
        check("ssh-x11-forwarding", "passed", "low"),
        check("ssh-max-auth-tries", "passed", "medium"),
    ]
    post(ctx, aid, chunked_records(service.BASELINE_TOPIC, scan_id, "results", rerun, 300, NOW, enabled=True))
    with ctx.uow() as s:
        rows, total = service.list_results(s, server_id=aid)
        assert total == 3
        assert {r.result for r, _, _ in rows} == {"passed"}
        assert not any(r.ignored or v for r, _, v in rows)
        assert s.get(Server, aid).risk_baseline == 0  # type: ignore[union-attr]
        state = s.get(RiskServerState, aid)
        assert state is not None and state.baseline_scan_id == scan_id

    # the configuration check turned off (basic edition): results are cleared
    post(ctx, aid, chunked_records(service.BASELINE_TOPIC, "off", "results", [], 300, NOW, enabled=False))
    with ctx.uow() as s:
        assert service.list_results(s, server_id=aid)[1] == 0
        assert s.get(RiskServerState, aid).baseline_enabled is False  # type: ignore[union-attr]


def weak_alarm(user: str) -> AlarmEvent:
    return AlarmEvent(
        key=new_id(),
        occurred_at=NOW,
        event_class="login_1003",
        title=f"Weak password: {user}",
        fingerprint=f"login_1003:{user}",
        evidence={"username": user, "account_type": "normal", "reasons": ["common_password"]},
    )


def weak_record(weak: list[str], *, complete: bool = True, status: str = "ok") -> RecordEvent:
    return record(
        service.WEAKPASS_TOPIC,
        {
            "scan_id": "s",
            "status": status,
            "detail": f"2 accounts checked, {len(weak)} weak"
            if status == "ok"
            else "/etc/shadow: permission denied",
            "accounts_total": 5,
            "accounts_checked": 2,
            "weak": [{"username": u, "account_type": "normal", "reasons": ["common_password"]} for u in weak],
            "hashes": 120,
            "seconds": 12.0,
            "complete": complete,
        },
    )


def test_weak_passwords_and_complexity(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        sid = enrolled_server(s, NOW, name="w").id
    assert (
        post(ctx, sid, [weak_record(["alice", "bob"]), weak_alarm("alice"), weak_alarm("bob")])
        == ["accepted"] * 3
    )
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        assert (server.risk_baseline, server.risk_intrusions) == (2, 2)
        rows, _total = service.list_weak_passwords(s, server_id=sid)
        assert [(w.username, w.reasons) for w, _ in rows] == [
            ("alice", ["common_password"]),
            ("bob", ["common_password"]),
        ]
        assert service.statistics(s)["servers_with_weak_passwords"] == 1
    # incomplete run: nothing is concluded about bob
    post(ctx, sid, [weak_record(["alice"], complete=False)])
    with ctx.uow() as s:
        assert service.list_weak_passwords(s, server_id=sid)[1] == 2
    # complete run without bob: bob's row goes, his alarm is handled by the system
    post(ctx, sid, [weak_record(["alice"])])
    with ctx.uow() as s:
        assert [w.username for w, _ in service.list_weak_passwords(s, server_id=sid)[0]] == ["alice"]
        bob = s.scalars(select(Alarm).where(Alarm.fingerprint == "login_1003:bob")).one()
        assert (bob.status, bob.handler) == ("handled", "system")
        assert s.get(Server, sid).risk_intrusions == 1  # type: ignore[union-attr]
    # unreadable shadow: a clear status, the known weak account is kept
    post(ctx, sid, [weak_record([], status="unreadable", complete=False)])
    with ctx.uow() as s:
        state = s.get(RiskServerState, sid)
        assert state is not None
        assert (state.weakpass_status, state.weakpass_detail) == (
            "unreadable",
            "/etc/shadow: permission denied",
        )
        assert service.list_weak_passwords(s, server_id=sid)[1] == 1

    complexity = {
        "scan_id": "s",
        "module": "pam_pwquality",
        "source": "/etc/pam.d/common-password",
        "passed": False,
        "items": [
            {"id": "min_length", "result": "failed", "value": "6", "suggestion": "at least 8"},
            {"id": "uppercase", "result": "passed", "value": "required", "suggestion": ""},
        ],
    }
    post(ctx, sid, [record(service.COMPLEXITY_TOPIC, complexity)])
    with ctx.uow() as s:
        assert s.get(Server, sid).risk_baseline == 2  # type: ignore[union-attr]
        assert service.handle_complexity(s, [sid], "ignore", actor="op", now=NOW) == 1
        assert s.get(Server, sid).risk_baseline == 1  # type: ignore[union-attr]
        assert service.statistics(s)["complexity_failed"] == 0
    post(ctx, sid, [record(service.COMPLEXITY_TOPIC, dict(complexity, passed=True))], NOW + timedelta(days=1))
    with ctx.uow() as s:
        state = s.get(RiskServerState, sid)
        assert state is not None and (state.complexity_passed, state.complexity_ignored) == (True, False)
        with pytest.raises(Conflict):
            service.handle_complexity(s, [sid], "ignore", actor="op", now=NOW)


def test_bad_records_are_rejected_with_a_reason(ctx: ManagerContext) -> None:
    ingest.load_builtin_handlers()
    with ctx.uow() as s:
        sid = enrolled_server(s, NOW).id
    statuses = post(
        ctx,
        sid,
        [
            record(service.BASELINE_TOPIC, {"scan_id": "x", "part": 3, "parts": 1, "total": 0}),
            record(service.WEAKPASS_TOPIC, {"weak": "nope"}),
        ],
    )
    assert statuses == ["rejected", "rejected"]
