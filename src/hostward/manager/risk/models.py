"""Per-server risk-scan state and daily security-score snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column


class RiskServerState(Base):
    """What the last vulnerability, baseline, weak-password and complexity checks of a server said,
    and when its next scheduled vulnerability scan is due."""

    __tablename__ = "risk_server_state"

    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    next_vuln_scan_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    vuln_scan_offset_s: Mapped[int] = mapped_column(Integer, default=-1)

    vuln_scanned_at: Mapped[datetime | None] = mapped_column(nullable=True)
    vuln_scan_id: Mapped[str] = mapped_column(String(64), default="")
    vuln_distro: Mapped[str] = mapped_column(String(128), default="")
    vuln_packages: Mapped[int] = mapped_column(Integer, default=0)
    vuln_advisories: Mapped[int] = mapped_column(Integer, default=0)
    vuln_backports: Mapped[int] = mapped_column(Integer, default=0)
    vuln_feed_issues: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    baseline_scanned_at: Mapped[datetime | None] = mapped_column(nullable=True)
    baseline_scan_id: Mapped[str] = mapped_column(String(64), default="")
    baseline_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    baseline_errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    baseline_enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    weakpass_checked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    weakpass_status: Mapped[str] = mapped_column(String(16), default="")
    weakpass_detail: Mapped[str] = mapped_column(Text, default="")
    weakpass_complete: Mapped[bool] = mapped_column(Boolean, default=True)
    weakpass_accounts: Mapped[int] = mapped_column(Integer, default=0)
    weakpass_hashes: Mapped[int] = mapped_column(Integer, default=0)
    weakpass_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    complexity_checked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    complexity_module: Mapped[str] = mapped_column(String(32), default="")
    complexity_source: Mapped[str] = mapped_column(String(255), default="")
    complexity_passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    complexity_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    complexity_ignored: Mapped[bool] = mapped_column(Boolean, default=False)


class ScoreSnapshot(Base):
    """The security score and risk counts of one day (``region`` "" = all regions), for the trend."""

    __tablename__ = "security_score_snapshots"
    __table_args__ = (UniqueConstraint("day", "region"),)

    id: Mapped[str] = id_column()
    day: Mapped[str] = mapped_column(String(10))
    region: Mapped[str] = mapped_column(String(64), default="")
    score: Mapped[int] = mapped_column(Integer)
    risks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deductions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = created_column()
