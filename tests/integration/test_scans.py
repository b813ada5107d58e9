"""Scans on SQLite and PostgreSQL: creation rules, agent progress, scan result, cancel, timeout,
daily planning."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from hostward.core.errors import HostwardError
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.alarms import service as alarms
from hostward.manager.audit.models import AuditRecord
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.scans import service as scans
from hostward.manager.scans.models import Scan
from hostward.manager.scheduler.runner import Scheduler
from hostward.manager.servers.models import Server
from hostward.wire.protocol import AlarmEvent, ScanProgressEvent
from tests.fakes.servers import enrolled_server


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with context.uow() as s:
        policies.ensure_presets(s)
    return context


def protected_server(ctx: ManagerContext, now: datetime, *, name: str = "web-1", scan: bool = False) -> str:
    """An online server with premium protection enabled (``scan``: with its comprehensive scan)."""
    with ctx.uow() as s:
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="test"
        )
        sid = enrolled_server(s, now, name=name).id
    with ctx.uow() as s:
        protection.enable_one(s, sid, "premium", now, ctx.settings, actor="alice", trigger_scan=scan)
    return sid


def server(ctx: ManagerContext, sid: str) -> Server:
    with ctx.uow() as s:
        row = s.get(Server, sid)
        assert row is not None
        return row


def scan_row(ctx: ManagerContext, scan_id: str) -> Scan:
    with ctx.uow() as s:
        row = s.get(Scan, scan_id)
        assert row is not None
        return row


def commands(ctx: ManagerContext, sid: str) -> list[tuple[str, dict[str, object]]]:
    with ctx.uow() as s:
        rows = s.scalars(
            select(AgentCommand).where(AgentCommand.server_id == sid).order_by(AgentCommand.created_at)
        )
        return [(c.kind, c.payload) for c in rows]


def start(ctx: ManagerContext, sids: list[str], now: datetime, kind: str = "full") -> list[str]:
    with ctx.uow() as s:
        return [sc.id for sc in scans.create_scans(s, sids, kind, "manual", now, ctx.settings, "bob")]


def progress(
    ctx: ManagerContext, sid: str, scan_id: str, status: str, pct: int, now: datetime, detail: str = ""
) -> Scan:
    event = ScanProgressEvent(
        key=f"{scan_id}:{status}:{pct}",
        occurred_at=now,
        scan_id=scan_id,
        status=status,
        progress=pct,
        detail=detail,
    )
    with ctx.uow() as s:
        srv = s.get(Server, sid)
        assert srv is not None
        return scans.on_progress(s, srv, event, now)


def code_of(exc: pytest.ExceptionInfo[HostwardError]) -> str:
    return exc.value.code


# ---- creation ------------------------------------------------------------------------------------------


def test_enabling_protection_queues_a_comprehensive_scan(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now, scan=True)
    with ctx.uow() as s:
        (scan,) = s.scalars(select(Scan).where(Scan.server_id == sid)).all()
        assert (scan.kind, scan.trigger, scan.status, scan.progress) == ("full", "enable", "queued", 0)
        assert scan.timeout_at == now + timedelta(minutes=30)
        assert scan.requested_by == "alice"
    assert commands(ctx, sid)[-1] == ("scan", {"scan_id": scan.id, "kind": "full"})
    assert server(ctx, sid).scan_result == "scanning"


def test_manual_scan_queues_a_command_and_is_audited(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    a = protected_server(ctx, now, name="a")
    b = protected_server(ctx, now, name="b")
    ids = start(ctx, [a, b, a], now, kind="asset")  # repeated ids are scanned once
    assert len(ids) == 2
    for sid, scan_id in zip((a, b), ids, strict=True):
        row = scan_row(ctx, scan_id)
        assert (row.server_id, row.kind, row.trigger, row.status) == (sid, "asset", "manual", "queued")
        assert commands(ctx, sid) == [("scan", {"scan_id": scan_id, "kind": "asset"})]
        assert server(ctx, sid).scan_result == "scanning"
    with ctx.uow() as s:
        actions = s.scalars(select(AuditRecord).where(AuditRecord.action == "start_scan")).all()
        assert sorted(r.target_id for r in actions) == sorted([a, b])
        assert {r.actor for r in actions} == {"bob"}


def test_manual_scan_refusals_name_the_reason(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    ok = protected_server(ctx, now, name="ok")
    with ctx.uow() as s:
        unprotected = enrolled_server(s, now, name="unprotected").id
    offline = protected_server(ctx, now, name="offline")
    later = now + timedelta(seconds=ctx.settings.offline_after_s + 1)
    with ctx.uow() as s:
        s.get(Server, ok).last_seen_at = later  # type: ignore[union-attr]
    with pytest.raises(HostwardError) as exc:
        start(ctx, [unprotected], now)
    assert (code_of(exc), exc.value.status) == ("server_not_protected", 409)
    with pytest.raises(HostwardError) as exc:
        start(ctx, [ok, offline], later)
    assert code_of(exc) == "agent_not_online"
    assert "offline" in exc.value.message
    with pytest.raises(HostwardError) as exc:
        start(ctx, [ok], later, kind="everything")
    assert code_of(exc) == "invalid_scan_kind"
    with pytest.raises(HostwardError) as exc:
        start(ctx, ["no-such-server"], later)
    assert code_of(exc) == "not_found"
    # A refused batch queues nothing at all.
    assert commands(ctx, ok) == []
    (first,) = start(ctx, [ok], later)
    with pytest.raises(HostwardError) as exc:
        start(ctx, [ok], later, kind="malware")
    assert code_of(exc) == "scan_in_progress"
    assert first in exc.value.message


def test_a_degraded_agent_still_scans_but_a_frozen_quota_does_not(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    busy = protected_server(ctx, now, name="busy")
    with ctx.uow() as s:
        srv = s.get(Server, busy)
        assert srv is not None
        srv.degraded = True
        protection.refresh_status(s, srv, now, ctx.settings)
        assert (srv.agent_status, srv.protection_status) == ("online", "protection_exception")
    (scan_id,) = start(ctx, [busy], now, kind="baseline")
    assert commands(ctx, busy)[-1][1]["scan_id"] == scan_id
    frozen = protected_server(ctx, now, name="frozen")
    with ctx.uow() as s:
        quota = protection.bound_quota(s, frozen)
        assert quota is not None
        quota.status = "frozen"
        srv = s.get(Server, frozen)
        assert srv is not None
        protection.refresh_status(s, srv, now, ctx.settings)
        assert srv.protection_status == "closed"
    with pytest.raises(HostwardError) as exc:
        start(ctx, [frozen], now, kind="baseline")
    assert code_of(exc) == "server_not_protected"


def test_enable_trigger_reuses_an_active_scan_of_the_same_kind(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now, scan=True)
    with ctx.uow() as s:
        again = scans.create_scans(s, [sid], "full", "enable", now, ctx.settings, "alice")
        (existing,) = s.scalars(select(Scan).where(Scan.server_id == sid)).all()
        assert [sc.id for sc in again] == [existing.id]
    assert len(commands(ctx, sid)) == 1


# ---- progress and scan result --------------------------------------------------------------------------


def test_progress_then_success_makes_the_server_clean(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    (scan_id,) = start(ctx, [sid], now)
    t1, t2 = now + timedelta(seconds=5), now + timedelta(seconds=60)
    row = progress(ctx, sid, scan_id, "running", 40, t1, detail="collecting packages")
    assert (row.status, row.progress, row.started_at, row.detail) == (
        "running",
        40,
        t1,
        "collecting packages",
    )
    progress(ctx, sid, scan_id, "running", 30, t1)  # never backwards
    assert scan_row(ctx, scan_id).progress == 40
    assert server(ctx, sid).scan_result == "scanning"
    row = progress(ctx, sid, scan_id, "succeeded", 100, t2)
    assert (row.status, row.progress, row.started_at, row.finished_at) == ("succeeded", 100, t1, t2)
    assert server(ctx, sid).scan_result == "clean"
    # A resend or a late report of an ended scan changes nothing.
    progress(ctx, sid, scan_id, "running", 50, t2 + timedelta(seconds=1))
    row = scan_row(ctx, scan_id)
    assert (row.status, row.progress) == ("succeeded", 100)


def test_open_findings_make_the_result_risky(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    (scan_id,) = start(ctx, [sid], now)
    with ctx.uow() as s:
        srv = s.get(Server, sid)
        assert srv is not None
        alarm = alarms.ingest(
            s,
            srv,
            AlarmEvent(key="k1", occurred_at=now, event_class="user_1001", fingerprint="user:eve"),
            now,
        )
        alarm_id = alarm.id
    assert server(ctx, sid).scan_result == "scanning"  # a running scan wins until it ends
    progress(ctx, sid, scan_id, "succeeded", 100, now)
    assert server(ctx, sid).scan_result == "risk"
    with ctx.uow() as s:
        alarms.handle(s, [alarm_id], "mark_as_handled", remark="", actor="bob", now=now)
    assert server(ctx, sid).scan_result == "clean"
    with ctx.uow() as s:
        srv = s.get(Server, sid)
        assert srv is not None
        srv.risk_vulnerabilities = 2
        assert scans.recompute_scan_result(s, srv) == "risk"


def test_failed_first_scan_leaves_the_server_undetected(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    (scan_id,) = start(ctx, [sid], now)
    row = progress(ctx, sid, scan_id, "failed", 20, now, detail="rpm database locked")
    assert (row.status, row.progress, row.finished_at, row.detail) == (
        "failed",
        20,
        now,
        "rpm database locked",
    )
    assert server(ctx, sid).scan_result == "undetected"


def test_progress_for_another_servers_scan_is_rejected(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    a = protected_server(ctx, now, name="a")
    b = protected_server(ctx, now, name="b")
    (scan_a,) = start(ctx, [a], now)
    with pytest.raises(HostwardError) as exc:
        progress(ctx, b, scan_a, "succeeded", 100, now)
    assert code_of(exc) == "scan_not_found"
    with pytest.raises(HostwardError):
        progress(ctx, b, "no-such-scan", "running", 1, now)
    assert scan_row(ctx, scan_a).status == "queued"


# ---- cancel and timeout ------------------------------------------------------------------------------


def test_cancel_tells_the_agent_and_ends_the_scan(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    (scan_id,) = start(ctx, [sid], now)
    progress(ctx, sid, scan_id, "running", 10, now)
    with ctx.uow() as s:
        row = scans.cancel_scan(s, scan_id, now, "bob")
        assert (row.status, row.finished_at) == ("cancelled", now)
    assert commands(ctx, sid)[-1] == ("cancel_scan", {"scan_id": scan_id})
    assert server(ctx, sid).scan_result == "undetected"
    with pytest.raises(HostwardError) as exc, ctx.uow() as s:
        scans.cancel_scan(s, scan_id, now, "bob")
    assert code_of(exc) == "scan_not_active"
    progress(ctx, sid, scan_id, "succeeded", 100, now)  # the agent finished anyway: still cancelled
    assert scan_row(ctx, scan_id).status == "cancelled"


def test_scans_past_their_timeout_are_timed_out_by_the_scheduler(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    (first,) = start(ctx, [sid], now)
    progress(ctx, sid, first, "succeeded", 100, now)
    (second,) = start(ctx, [sid], now + timedelta(seconds=10))
    with ctx.uow() as s:
        assert scans.expire_scans(s, now + timedelta(minutes=30)) == 0
    Scheduler(ctx).run_once(now + timedelta(minutes=30, seconds=10))
    row = scan_row(ctx, second)
    assert row.status == "timed_out"
    assert row.finished_at == now + timedelta(minutes=30, seconds=10)
    assert "30 minutes" in row.detail
    assert scan_row(ctx, first).status == "succeeded"
    assert server(ctx, sid).scan_result == "clean"  # the earlier successful scan still stands


# ---- daily planning ----------------------------------------------------------------------------------


def _heartbeat(ctx: ManagerContext, sid: str, at: datetime) -> None:
    with ctx.uow() as s:
        srv = s.get(Server, sid)
        assert srv is not None
        srv.last_seen_at = at
        protection.refresh_status(s, srv, at, ctx.settings)


def test_daily_scan_runs_once_a_day_in_the_servers_window(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    with ctx.uow() as s:
        s.get(Server, sid).utc_offset_minutes = 480  # type: ignore[union-attr]
    with ctx.uow() as s:
        assert scans.plan_daily_scans(s, now, ctx.settings) == 0  # first sight: a slot, no scan
    srv = server(ctx, sid)
    slot = srv.next_daily_scan_at
    assert slot is not None and now < slot <= now + timedelta(days=1)
    assert 0 <= srv.daily_scan_offset_s < 4 * 3600
    local = slot + timedelta(hours=8)
    assert 0 <= local.hour < 4
    assert (local.hour * 3600 + local.minute * 60 + local.second) == srv.daily_scan_offset_s

    _heartbeat(ctx, sid, slot)
    with ctx.uow() as s:
        assert scans.plan_daily_scans(s, slot - timedelta(seconds=1), ctx.settings) == 0
    with ctx.uow() as s:
        assert scans.plan_daily_scans(s, slot + timedelta(seconds=20), ctx.settings) == 1
    with ctx.uow() as s:
        (scan,) = s.scalars(select(Scan).where(Scan.server_id == sid)).all()
        assert (scan.kind, scan.trigger, scan.requested_by) == ("full", "schedule", "system")
        assert not s.scalars(select(AuditRecord).where(AuditRecord.action == "start_scan")).all()
    assert server(ctx, sid).next_daily_scan_at == slot + timedelta(days=1)
    with ctx.uow() as s:
        assert scans.plan_daily_scans(s, slot + timedelta(seconds=80), ctx.settings) == 0


def test_daily_planner_skips_offline_busy_and_long_missed_slots(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    with ctx.uow() as s:
        scans.plan_daily_scans(s, now, ctx.settings)
    slot = server(ctx, sid).next_daily_scan_at
    assert slot is not None
    # Offline at its slot (protection interrupted): no scan, tomorrow's slot planned.
    with ctx.uow() as s:
        srv = s.get(Server, sid)
        assert srv is not None
        protection.refresh_status(s, srv, slot, ctx.settings)
        assert srv.protection_status == "protection_exception"
        assert scans.plan_daily_scans(s, slot, ctx.settings) == 0
    assert server(ctx, sid).next_daily_scan_at == slot + timedelta(days=1)
    # Online but a scan is still running: skipped.
    slot2 = slot + timedelta(days=1)
    _heartbeat(ctx, sid, slot2)
    start(ctx, [sid], slot2)
    with ctx.uow() as s:
        assert scans.plan_daily_scans(s, slot2, ctx.settings) == 0
    # Manager down for longer than the window: the missed slot is not caught up in daytime.
    with ctx.uow() as s:
        for sc in s.scalars(select(Scan).where(Scan.server_id == sid)):
            sc.status = "succeeded"
    slot3 = slot2 + timedelta(days=1)
    late = slot3 + timedelta(hours=5)
    _heartbeat(ctx, sid, late)
    with ctx.uow() as s:
        assert scans.plan_daily_scans(s, late, ctx.settings) == 0
    assert server(ctx, sid).next_daily_scan_at == slot3 + timedelta(days=1)


def test_disabling_protection_forgets_the_slot(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    sid = protected_server(ctx, now)
    with ctx.uow() as s:
        scans.plan_daily_scans(s, now, ctx.settings)
    offset = server(ctx, sid).daily_scan_offset_s
    with ctx.uow() as s:
        protection.disable_one(s, sid, now, ctx.settings, actor="alice")
    with ctx.uow() as s:
        scans.plan_daily_scans(s, now, ctx.settings)
    srv = server(ctx, sid)
    assert srv.next_daily_scan_at is None
    assert srv.daily_scan_offset_s == offset  # the server keeps its place in the window
