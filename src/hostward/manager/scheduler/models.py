"""Jobs and periodic tasks stored in the database, claimed with row locks by any manager replica."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

JOB_STATUSES = ("pending", "running", "done", "failed")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "run_at"),)

    id: Mapped[str] = id_column()
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    run_at: Mapped[datetime] = created_column()
    dedup_key: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class PeriodicTask(Base):
    """A recurring task; the replica that advances ``next_run_at`` under a row lock runs it."""

    __tablename__ = "periodic_tasks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    interval_s: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = created_column()
    last_run_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_run_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
