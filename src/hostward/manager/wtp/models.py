"""WTP per-server configuration and status, and the tamper events agents report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column


class WtpServer(Base):
    """One server's WTP configuration (kept when WTP is disabled) and the agent's last status."""

    __tablename__ = "wtp_servers"

    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The ``WtpConfigIn`` shape: dirs, backup_path, privileged, privileged_children, schedule, remote_backup.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The agent's last ``wtp_status`` record: state, message, dirs, backup.
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status_at: Mapped[datetime | None] = mapped_column(nullable=True)
    enabled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = created_column()


class WtpEvent(Base):
    """One tamper the agent's guard detected and rolled back (a ``wtp_tamper`` record)."""

    __tablename__ = "wtp_events"
    __table_args__ = (Index("ix_wtp_events_server_time", "server_id", "occurred_at"),)

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16), default="")
    directory: Mapped[str] = mapped_column(Text, default="")
    moved_to: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    process_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    process_exe: Mapped[str] = mapped_column(Text, default="")
    process_user: Mapped[str] = mapped_column(String(64), default="")
    process_cmdline: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime] = created_column()
    received_at: Mapped[datetime] = created_column()
