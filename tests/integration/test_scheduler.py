"""The DB-backed scheduler on SQLite and PostgreSQL: claims, leases, retries, periodic tasks."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from hostward.manager.agentlink.models import AgentCommand, IngestedEvent
from hostward.manager.alarms.models import Alarm
from hostward.manager.auth.models import LoginAttempt
from hostward.manager.context import ManagerContext
from hostward.manager.db import migrate
from hostward.manager.scheduler import jobs
from hostward.manager.scheduler.builtin import builtin_registry
from hostward.manager.scheduler.models import Job, PeriodicTask
from hostward.manager.scheduler.registry import DuplicateRegistration, JobRun, Registry
from hostward.manager.scheduler.retention import purge_expired
from hostward.manager.scheduler.runner import Scheduler
from hostward.manager.servers.models import Server
from hostward.manager.wtp.models import WtpEvent
from tests.conftest import make_settings
from tests.fakes.servers import enrolled_server


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    return context


def replica(ctx: ManagerContext, name: str) -> ManagerContext:
    """A second context on the same database under another instance name (what a replica is)."""
    settings = ctx.settings.model_copy(update={"instance_name": name})
    return ManagerContext.from_settings(settings)


class Recorder:
    """A job kind that records every execution (thread-safe), optionally failing or pausing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.fail_times = 0
        self._lock = threading.Lock()

    def __call__(self, session: Any, run: JobRun) -> None:
        with self._lock:
            self.calls.append((run.id, run.instance, run.attempt))
            failing = self.fail_times > 0
            if failing:
                self.fail_times -= 1
        if failing:
            raise RuntimeError(f"boom on attempt {run.attempt}")


def registry_with(recorder: Recorder, *, max_attempts: int = 5) -> Registry:
    registry = Registry()
    registry.add_job("test.record", recorder, max_attempts=max_attempts)
    return registry


def job_row(ctx: ManagerContext, job_id: str) -> Job:
    with ctx.uow() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def enqueue(ctx: ManagerContext, kind: str = "test.record", **kw: Any) -> str:
    with ctx.uow() as s:
        return jobs.enqueue(s, kind, {"n": 1}, **kw).id


# ---- registry ----------------------------------------------------------------------------------------


def test_registry_rejects_duplicate_names() -> None:
    registry = Registry()
    registry.add_job("a", lambda s, r: None)
    registry.add_periodic("a", 5, lambda s, n, st: None)  # separate namespaces
    with pytest.raises(DuplicateRegistration, match="job kind 'a'"):
        registry.add_job("a", lambda s, r: None)
    with pytest.raises(DuplicateRegistration, match="periodic task 'a'"):
        registry.add_periodic("a", 10, lambda s, n, st: None)
    with pytest.raises(ValueError):
        registry.add_periodic("b", 0, lambda s, n, st: None)


def test_builtin_registry_lists_the_periodic_tasks() -> None:
    tasks = {t.name: t.interval_s for t in builtin_registry().periodic_tasks}
    assert tasks == {
        "agent_status_sweep": 5,
        "quota_status_refresh": 60,
        "scan_timeouts": 30,
        "daily_scans": 60,
        "retention": 3600,
        "vuln_scans": 60,
        "risk_retention": 3600,
        "security_score": 300,
        "daily_notifications": 60,
    }
    assert builtin_registry().job_kinds == ["notify_send"]


# ---- jobs ---------------------------------------------------------------------------------------------


def test_runs_due_jobs_of_known_kinds_only(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    rec = Recorder()
    due = enqueue(ctx, run_at=now - timedelta(seconds=1))
    later = enqueue(ctx, run_at=now + timedelta(minutes=5))
    unknown = enqueue(ctx, kind="test.unknown", run_at=now - timedelta(seconds=1))
    sched = Scheduler(ctx, registry_with(rec))
    assert sched.run_once(now) == 1
    assert [c[0] for c in rec.calls] == [due]
    done = job_row(ctx, due)
    assert (done.status, done.attempts, done.locked_by, done.finished_at) == ("done", 1, None, now)
    assert job_row(ctx, later).status == "pending"
    assert job_row(ctx, unknown).status == "pending"  # left for a replica that knows the kind
    assert sched.run_once(now) == 0
    assert sched.run_once(now + timedelta(minutes=5)) == 1
    assert job_row(ctx, later).status == "done"


def test_enqueue_dedup_key_returns_the_existing_job(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    first = enqueue(ctx, dedup_key="nightly:2024-03-01")
    second = enqueue(ctx, dedup_key="nightly:2024-03-01")
    other = enqueue(ctx, dedup_key="nightly:2024-03-02")
    assert first == second != other
    with ctx.uow() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 2


def test_claimed_job_is_not_reclaimed_until_its_lease_expires(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    job_id = enqueue(ctx, run_at=now)
    kinds = ["test.record"]
    with ctx.uow() as s:
        a = jobs.claim_job(s, now=now, instance="a", kinds=kinds, lease_s=60)
    assert a is not None and a.id == job_id and a.attempts == 1
    row = job_row(ctx, job_id)
    assert (row.status, row.locked_by, row.locked_until) == ("running", "a", now + timedelta(seconds=60))
    with ctx.uow() as s:
        assert (
            jobs.claim_job(s, now=now + timedelta(seconds=59), instance="b", kinds=kinds, lease_s=60) is None
        )
    # Replica a died: after the lease b takes the job over, and a's late completion is refused.
    later = now + timedelta(seconds=61)
    with ctx.uow() as s:
        b = jobs.claim_job(s, now=later, instance="b", kinds=kinds, lease_s=60)
    assert b is not None and b.id == job_id and b.attempts == 2
    with ctx.uow() as s:
        assert jobs.finish_job(s, a, instance="a", now=later) is False
    with ctx.uow() as s:
        assert jobs.finish_job(s, b, instance="b", now=later) is True
    row = job_row(ctx, job_id)
    assert (row.status, row.attempts, row.locked_by) == ("done", 2, None)


def test_expired_lease_job_is_run_by_another_replica(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    job_id = enqueue(ctx, run_at=now)
    with ctx.uow() as s:
        assert jobs.claim_job(s, now=now, instance="dead", kinds=["test.record"], lease_s=30) is not None
    rec = Recorder()
    other = replica(ctx, "b")
    try:
        sched = Scheduler(other, registry_with(rec), lease_s=30)
        assert sched.run_once(now + timedelta(seconds=10)) == 0
        assert sched.run_once(now + timedelta(seconds=31)) == 1
    finally:
        other.close()
    assert rec.calls == [(job_id, "b", 2)]
    assert job_row(ctx, job_id).status == "done"


def test_job_whose_lease_was_lost_while_running_is_rolled_back(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    job_id = enqueue(ctx, kind="test.slow", run_at=now)
    other = replica(ctx, "b")

    def slow_handler(session: Any, run: JobRun) -> None:
        # While this attempt "runs", its lease expires and replica b claims the job.
        with other.uow() as s2:
            stolen = jobs.claim_job(
                s2, now=now + timedelta(seconds=61), instance="b", kinds=["test.slow"], lease_s=60
            )
            assert stolen is not None
        jobs.enqueue(session, "test.side_effect", {"from": run.instance})

    registry = Registry()
    registry.add_job("test.slow", slow_handler)
    try:
        assert Scheduler(ctx, registry, lease_s=60).run_once(now) == 1
    finally:
        other.close()
    row = job_row(ctx, job_id)
    assert (row.status, row.locked_by, row.attempts) == ("running", "b", 2)
    with ctx.uow() as s:
        assert s.scalar(select(func.count()).where(Job.kind == "test.side_effect")) == 0


def test_failures_retry_with_backoff_then_fail_for_good(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    rec = Recorder()
    rec.fail_times = 10
    job_id = enqueue(ctx, run_at=now)
    sched = Scheduler(ctx, registry_with(rec, max_attempts=3), retry_base_s=10, retry_max_s=15)
    assert sched.run_once(now) == 1
    row = job_row(ctx, job_id)
    assert (row.status, row.attempts, row.locked_by) == ("pending", 1, None)
    assert row.run_at == now + timedelta(seconds=10)
    assert row.last_error == "RuntimeError: boom on attempt 1"
    assert sched.run_once(now + timedelta(seconds=9)) == 0
    t2 = now + timedelta(seconds=10)
    assert sched.run_once(t2) == 1
    row = job_row(ctx, job_id)
    assert (row.status, row.attempts) == ("pending", 2)
    assert row.run_at == t2 + timedelta(seconds=15)  # 20 s capped at retry_max_s
    t3 = t2 + timedelta(seconds=15)
    assert sched.run_once(t3) == 1
    row = job_row(ctx, job_id)
    assert (row.status, row.attempts, row.finished_at) == ("failed", 3, t3)
    assert row.last_error == "RuntimeError: boom on attempt 3"
    assert sched.run_once(t3 + timedelta(hours=1)) == 0
    assert [c[2] for c in rec.calls] == [1, 2, 3]


def test_a_retry_that_succeeds_clears_the_error(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    rec = Recorder()
    rec.fail_times = 1
    job_id = enqueue(ctx, run_at=now)
    sched = Scheduler(ctx, registry_with(rec), retry_base_s=5)
    sched.run_once(now)
    sched.run_once(now + timedelta(seconds=5))
    row = job_row(ctx, job_id)
    assert (row.status, row.attempts, row.last_error) == ("done", 2, "")


def test_attempts_lost_with_their_replica_count(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    job_id = enqueue(ctx, run_at=now)
    with ctx.uow() as s:
        jobs.claim_job(s, now=now, instance="dead", kinds=["test.record"], lease_s=30)
    rec = Recorder()
    sched = Scheduler(ctx, registry_with(rec, max_attempts=1), lease_s=30)
    assert sched.run_once(now + timedelta(seconds=31)) == 1
    assert rec.calls == []
    row = job_row(ctx, job_id)
    assert row.status == "failed"
    assert "lease expired" in row.last_error


def test_two_replicas_in_threads_run_each_job_once(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        ids = {jobs.enqueue(s, "test.record", {"i": i}).id for i in range(60)}
    rec = Recorder()
    registry = registry_with(rec)
    replicas = [replica(ctx, "r1"), replica(ctx, "r2")]
    try:
        scheds = [Scheduler(r, registry, batch=5) for r in replicas]
        barrier = threading.Barrier(2)

        def drain(sched: Scheduler) -> None:
            barrier.wait()
            while sched.run_once() > 0:
                pass

        threads = [threading.Thread(target=drain, args=(s,)) for s in scheds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for r in replicas:
            r.close()
    counts = Counter(c[0] for c in rec.calls)
    assert set(counts) == ids
    assert max(counts.values()) == 1
    with ctx.uow() as s:
        assert s.scalar(select(func.count()).where(Job.status == "done")) == 60


# ---- periodic tasks ----------------------------------------------------------------------------------


def test_periodic_task_runs_once_per_interval_across_replicas(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    runs: list[tuple[str, Any]] = []
    registry = Registry()
    registry.add_periodic("tick", 10, lambda s, at, st: runs.append((st.instance_name, at)))
    other = replica(ctx, "b")
    try:
        a = Scheduler(replica_ctx := replica(ctx, "a"), registry)
        b = Scheduler(other, registry)
        assert a.run_once(now) == 1
        assert b.run_once(now) == 0
        assert b.run_once(now + timedelta(seconds=9)) == 0
        assert b.run_once(now + timedelta(seconds=10)) == 1
        assert a.run_once(now + timedelta(seconds=10)) == 0
    finally:
        other.close()
        replica_ctx.close()
    assert runs == [("a", now), ("b", now + timedelta(seconds=10))]
    with ctx.uow() as s:
        row = s.get(PeriodicTask, "tick")
        assert row is not None
        assert (row.runs, row.last_run_by, row.interval_s) == (2, "b", 10)
        assert row.next_run_at == now + timedelta(seconds=20)


def test_failing_periodic_task_records_its_error_and_keeps_its_schedule(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    state = {"fail": True}

    def task(session: Any, at: Any, settings: Any) -> None:
        session.add(PeriodicTask(name="written-by-task", interval_s=1, next_run_at=at))
        if state["fail"]:
            raise ValueError("database said no")

    registry = Registry()
    registry.add_periodic("flaky", 30, task)
    sched = Scheduler(ctx, registry)
    assert sched.run_once(now) == 1
    with ctx.uow() as s:
        row = s.get(PeriodicTask, "flaky")
        assert row is not None
        assert row.last_error == "ValueError: database said no"
        assert row.next_run_at == now + timedelta(seconds=30)
        assert s.get(PeriodicTask, "written-by-task") is None  # its work was rolled back
    state["fail"] = False
    assert sched.run_once(now + timedelta(seconds=30)) == 1
    with ctx.uow() as s:
        assert s.get(PeriodicTask, "flaky").last_error == ""  # type: ignore[union-attr]


def test_builtin_tasks_run_on_an_empty_manager(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    sched = Scheduler(ctx)
    assert sched.run_once(ctx.clock.now()) == 9
    with ctx.uow() as s:
        rows = list(s.scalars(select(PeriodicTask)))
        assert {r.name: r.last_error for r in rows} == {
            "agent_status_sweep": "",
            "quota_status_refresh": "",
            "scan_timeouts": "",
            "daily_scans": "",
            "retention": "",
            "vuln_scans": "",
            "risk_retention": "",
            "security_score": "",
            "daily_notifications": "",
        }


# ---- the background thread ----------------------------------------------------------------------------


def test_start_runs_jobs_in_the_background_and_stop_is_idempotent(tmp_path: Any) -> None:
    settings = make_settings(tmp_path / "m", scheduler_poll_s=0.05)
    migrate.upgrade(settings.effective_database_url)
    ctx = ManagerContext.from_settings(settings)
    rec = Recorder()
    sched = Scheduler(ctx, registry_with(rec))
    try:
        sched.start()
        sched.start()  # no second thread
        assert sched.running
        job_id = enqueue(ctx)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and job_row(ctx, job_id).status != "done":
            time.sleep(0.02)
        assert job_row(ctx, job_id).status == "done"
    finally:
        sched.stop()
        sched.stop()
        ctx.close()
    assert not sched.running
    assert len(rec.calls) == 1


# ---- retention ---------------------------------------------------------------------------------------


def test_retention_deletes_only_expired_rows(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()

    def days(n: int) -> datetime:
        return now - timedelta(days=n)

    with ctx.uow() as s:
        sid = enrolled_server(s, now).id

        def alarm(last_seen: Any, status: str) -> Alarm:
            return Alarm(
                server_id=sid,
                event_class="user_1001",
                event_type=4014,
                name="Account change",
                category="user",
                severity="medium",
                attack_phase="persistence",
                fingerprint=str(last_seen),
                status=status,
                first_seen=last_seen,
                last_seen=last_seen,
            )

        s.add_all([alarm(days(31), "unhandled"), alarm(days(40), "handled"), alarm(days(29), "handled")])
        s.add_all(
            [
                IngestedEvent(server_id=sid, key="old", received_at=days(8)),
                IngestedEvent(server_id=sid, key="new", received_at=days(6)),
            ]
        )
        s.add_all(
            [
                LoginAttempt(username="u", success=False, at=days(2)),
                LoginAttempt(username="u", success=True, at=now - timedelta(hours=23)),
            ]
        )
        s.add_all(
            [
                Job(kind="k", status="done", run_at=days(9), finished_at=days(8)),
                Job(kind="k", status="failed", run_at=days(9), finished_at=days(8)),
                Job(kind="k", status="done", run_at=days(9), finished_at=days(6)),
                Job(kind="k", status="pending", run_at=days(9)),
            ]
        )
        s.add_all(
            [
                WtpEvent(server_id=sid, path="/srv/www/old.html", action="modified", occurred_at=days(181)),
                WtpEvent(server_id=sid, path="/srv/www/new.html", action="modified", occurred_at=days(179)),
            ]
        )
        s.add_all(
            [
                AgentCommand(server_id=sid, kind="scan", status="succeeded", created_at=days(8)),
                AgentCommand(server_id=sid, kind="scan", status="delivered", created_at=days(8)),
                AgentCommand(server_id=sid, kind="scan", status="queued", created_at=days(8)),
                AgentCommand(server_id=sid, kind="scan", status="failed", created_at=days(6)),
            ]
        )
        s.flush()
        s.get(Server, sid).risk_intrusions = 1  # type: ignore[union-attr]
    with ctx.uow() as s:
        counts = purge_expired(s, now, ctx.settings)
    assert counts == {
        "alarms": 2,
        "ingested_events": 1,
        "fim_changes": 0,
        "wtp_events": 1,
        "login_attempts": 1,
        "jobs": 2,
        "agent_commands": 2,
    }
    with ctx.uow() as s:
        assert [a.last_seen for a in s.scalars(select(Alarm))] == [days(29)]
        assert s.get(Server, sid).risk_intrusions == 0  # type: ignore[union-attr]
        assert [e.key for e in s.scalars(select(IngestedEvent))] == ["new"]
        assert sorted(j.status for j in s.scalars(select(Job))) == ["done", "pending"]
        assert sorted(c.status for c in s.scalars(select(AgentCommand))) == ["failed", "queued"]
        assert s.scalar(select(func.count()).select_from(LoginAttempt)) == 1
        assert [e.path for e in s.scalars(select(WtpEvent))] == ["/srv/www/new.html"]
