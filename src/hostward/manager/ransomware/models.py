"""Ransomware prevention: named policies, per-server binding and status, snapshots agents report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

ACTIONS = ("alarm", "alarm_and_isolate")


class RansomwarePolicy(Base):
    __tablename__ = "ransomware_policies"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    protected_dirs: Mapped[list[str]] = mapped_column(JSON, default=list)
    excluded_dirs: Mapped[list[str]] = mapped_column(JSON, default=list)
    file_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    action: Mapped[str] = mapped_column(String(32), default="alarm")
    bait: Mapped[bool] = mapped_column(Boolean, default=True)
    snapshot_interval_h: Mapped[int] = mapped_column(Integer, default=24)
    snapshot_keep: Mapped[int] = mapped_column(Integer, default=7)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class RansomwareServer(Base):
    """A server's ransomware prevention: its policy (kept when disabled) and the agent's last status."""

    __tablename__ = "ransomware_servers"

    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    # RESTRICT: a policy in use cannot be deleted (the service says so with a 409 first).
    policy_id: Mapped[str] = mapped_column(
        ForeignKey("ransomware_policies.id", ondelete="RESTRICT"), index=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status_at: Mapped[datetime | None] = mapped_column(nullable=True)
    enabled_at: Mapped[datetime | None] = mapped_column(nullable=True)


class RansomwareSnapshot(Base):
    """A snapshot the agent took of the protected directories (``ransomware_snapshot`` record)."""

    __tablename__ = "ransomware_snapshots"
    __table_args__ = (UniqueConstraint("server_id", "snapshot_id"),)

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[str] = mapped_column(String(64))
    taken_at: Mapped[datetime] = created_column()
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    received_at: Mapped[datetime] = created_column()
