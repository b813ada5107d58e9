"""Job rows: enqueue, claim under a row lock, finish, fail with retry; periodic-task claims.

Claims are the only place where replicas compete. On PostgreSQL a replica selects a claimable row with
``FOR UPDATE SKIP LOCKED`` (so replicas never wait on each other) and marks it running in the same
transaction; on SQLite (one writer at a time, ``BEGIN IMMEDIATE``) a single ``UPDATE ... WHERE id =
(SELECT ...)`` re-checks the claim condition atomically. A running job carries a lease
(``locked_until``); when its replica dies the lease expires and another replica re-claims it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hostward.core.clock import utcnow
from hostward.core.ids import new_id
from hostward.manager.db.engine import is_postgres
from hostward.manager.scheduler.models import Job, PeriodicTask

MAX_ERROR_LENGTH = 4000


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    kind: str
    payload: dict[str, Any]
    attempts: int


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any] | None = None,
    run_at: datetime | None = None,
    dedup_key: str | None = None,
) -> Job:
    """Add a pending job in the caller's transaction.

    With ``dedup_key``, a job already holding that key (pending, running or kept after finishing, until
    retention removes it) is returned instead of adding a second one — also when two replicas enqueue
    the same key at the same moment.
    """
    when = run_at or utcnow()
    if dedup_key is None:
        job = Job(kind=kind, payload=payload or {}, run_at=when, status="pending")
        session.add(job)
        session.flush()
        return job
    values = {
        "id": new_id(),
        "kind": kind,
        "payload": payload or {},
        "status": "pending",
        "run_at": when,
        "dedup_key": dedup_key,
        "attempts": 0,
        "last_error": "",
        "created_at": utcnow(),
    }
    dialect = postgresql if is_postgres(session) else sqlite
    stmt = dialect.insert(Job).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    session.execute(stmt)
    job = session.scalars(select(Job).where(Job.dedup_key == dedup_key)).one()
    return job


def _claimable(now: datetime, kinds: list[str]) -> ColumnElement[bool]:
    return and_(
        Job.kind.in_(kinds),
        or_(
            and_(Job.status == "pending", Job.run_at <= now),
            and_(Job.status == "running", Job.locked_until < now),
        ),
    )


def claim_job(
    session: Session, *, now: datetime, instance: str, kinds: list[str], lease_s: float
) -> ClaimedJob | None:
    """Mark the oldest claimable job of ``kinds`` running for ``instance``; None when there is none.

    Claimable: pending and due, or running with an expired lease (its replica died). The attempt
    counter is incremented here, so an attempt that dies with its replica still counts.
    """
    if not kinds:
        return None
    values = {
        "status": "running",
        "locked_by": instance,
        "locked_until": now + timedelta(seconds=lease_s),
        "attempts": Job.attempts + 1,
    }
    returning = (Job.id, Job.kind, Job.payload, Job.attempts)
    if is_postgres(session):
        picked = session.scalars(
            select(Job.id)
            .where(_claimable(now, kinds))
            .order_by(Job.run_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if picked is None:
            return None
        stmt = update(Job).where(Job.id == picked)
    else:
        oldest = select(Job.id).where(_claimable(now, kinds)).order_by(Job.run_at).limit(1)
        # The outer condition is repeated so the statement alone decides the claim.
        stmt = update(Job).where(Job.id == oldest.scalar_subquery(), _claimable(now, kinds))
    row = session.execute(
        stmt.values(**values).returning(*returning).execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return ClaimedJob(id=row.id, kind=row.kind, payload=dict(row.payload or {}), attempts=row.attempts)


def _held(job: ClaimedJob, instance: str) -> ColumnElement[bool]:
    # The attempt number guards against a replica that restarted under the same name.
    return and_(
        Job.id == job.id,
        Job.status == "running",
        Job.locked_by == instance,
        Job.attempts == job.attempts,
    )


def finish_job(session: Session, job: ClaimedJob, *, instance: str, now: datetime) -> bool:
    """Mark the job done; False when the lease was lost (another replica re-claimed it)."""
    result = session.execute(
        update(Job)
        .where(_held(job, instance))
        .values(status="done", finished_at=now, locked_by=None, locked_until=None, last_error="")
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def retry_delay(attempt: int, *, base_s: float, max_s: float) -> timedelta:
    """Exponential backoff: ``base_s`` after the first failure, doubling, capped at ``max_s``."""
    return timedelta(seconds=min(max_s, base_s * 2 ** max(0, attempt - 1)))


def fail_job(
    session: Session,
    job: ClaimedJob,
    *,
    instance: str,
    now: datetime,
    error: str,
    max_attempts: int,
    base_s: float,
    max_s: float,
) -> str | None:
    """Record a failed attempt: back to pending after a backoff, or failed for good after
    ``max_attempts``. Returns the new status, or None when the lease was already lost."""
    final = job.attempts >= max_attempts
    values: dict[str, Any] = {
        "locked_by": None,
        "locked_until": None,
        "last_error": error[:MAX_ERROR_LENGTH],
    }
    if final:
        values.update(status="failed", finished_at=now)
    else:
        values.update(status="pending", run_at=now + retry_delay(job.attempts, base_s=base_s, max_s=max_s))
    result = session.execute(
        update(Job).where(_held(job, instance)).values(**values).execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return str(values["status"])


def ensure_periodic_rows(session: Session, intervals: dict[str, int], now: datetime) -> None:
    """Create missing ``periodic_tasks`` rows (due now) and keep their intervals in step with the code."""
    if not intervals:
        return
    dialect = postgresql if is_postgres(session) else sqlite
    for name, interval_s in intervals.items():
        stmt = dialect.insert(PeriodicTask).values(
            name=name, interval_s=interval_s, next_run_at=now, runs=0, last_error=""
        )
        session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        session.execute(
            update(PeriodicTask)
            .where(PeriodicTask.name == name, PeriodicTask.interval_s != interval_s)
            .values(interval_s=interval_s)
            .execution_options(synchronize_session=False)
        )


def claim_periodic(session: Session, *, now: datetime, instance: str, intervals: dict[str, int]) -> list[str]:
    """Advance every due task of ``intervals`` to its next run; the names advanced here are this
    replica's to run (each period goes to exactly one replica)."""
    if not intervals:
        return []
    due = and_(PeriodicTask.name.in_(list(intervals)), PeriodicTask.next_run_at <= now)
    if is_postgres(session):
        names = list(
            session.scalars(
                select(PeriodicTask.name)
                .where(due)
                .order_by(PeriodicTask.name)
                .with_for_update(skip_locked=True)
            )
        )
    else:
        names = list(session.scalars(select(PeriodicTask.name).where(due).order_by(PeriodicTask.name)))
    claimed: list[str] = []
    for name in names:
        result = session.execute(
            update(PeriodicTask)
            .where(PeriodicTask.name == name, PeriodicTask.next_run_at <= now)
            .values(
                next_run_at=now + timedelta(seconds=intervals[name]),
                last_run_at=now,
                last_run_by=instance,
                runs=PeriodicTask.runs + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            claimed.append(name)
    return claimed


def record_periodic_error(session: Session, name: str, error: str) -> None:
    """Store the task's last error ("" after a successful run); no write when it is unchanged."""
    error = error[:MAX_ERROR_LENGTH]
    session.execute(
        update(PeriodicTask)
        .where(PeriodicTask.name == name, PeriodicTask.last_error != error)
        .values(last_error=error)
        .execution_options(synchronize_session=False)
    )
