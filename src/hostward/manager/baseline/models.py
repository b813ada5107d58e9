"""Baseline check results per server and check, and weak-password accounts per server."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

CHECK_RESULTS = ("passed", "failed", "not_applicable")
CHECK_SEVERITIES = ("critical", "high", "medium", "low")


class BaselineCheckResult(Base):
    """The latest result of one check on one server; a failed check can be ignored (accepted risk)."""

    __tablename__ = "baseline_results"
    __table_args__ = (
        UniqueConstraint("server_id", "policy_id", "check_id"),
        Index("ix_baseline_results_check", "policy_id", "check_id"),
    )

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    policy_id: Mapped[str] = mapped_column(String(128))
    policy_name: Mapped[str] = mapped_column(String(255), default="")
    check_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(512), default="")
    severity: Mapped[str] = mapped_column(String(16), default="medium")
    result: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    rationale: Mapped[str] = mapped_column(Text, default="")
    remediation: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    ignored: Mapped[bool] = mapped_column(Boolean, default=False)
    handled_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    handled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    remark: Mapped[str] = mapped_column(Text, default="")
    verify_scan_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    first_seen: Mapped[datetime] = created_column()
    checked_at: Mapped[datetime] = created_column()
    last_scan_id: Mapped[str] = mapped_column(String(64), default="")
    fixable: Mapped[bool] = mapped_column(Boolean, default=False)
    fix_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    fix_detail: Mapped[str] = mapped_column(Text, default="")
    fix_command_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    fix_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fix_requested_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WeakPassword(Base):
    """An account whose password the agent guessed: only the name, type and reason categories."""

    __tablename__ = "weak_passwords"
    __table_args__ = (UniqueConstraint("server_id", "username"),)

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(128))
    account_type: Mapped[str] = mapped_column(String(16), default="")
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = created_column()
    last_seen: Mapped[datetime] = created_column()
