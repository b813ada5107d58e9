"""Servers (protected hosts), server groups and asset fingerprints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

AGENT_STATUSES = ("not_installed", "online", "offline")
PROTECTION_STATUSES = ("closed", "opened", "protection_exception")
SCAN_RESULTS = ("undetected", "scanning", "clean", "risk")
ASSET_IMPORTANCE = ("important", "common", "test")


class ServerGroup(Base):
    __tablename__ = "server_groups"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = created_column()


class Server(Base):
    __tablename__ = "servers"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(255), index=True)
    # sha256(machine_id + "\0" + agent name): re-enrolment of the same machine finds its record.
    identity: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    machine_id: Mapped[str] = mapped_column(String(128), default="")
    agent_name: Mapped[str] = mapped_column(String(128), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    ips: Mapped[list[str]] = mapped_column(JSON, default=list)
    os_name: Mapped[str] = mapped_column(String(128), default="")
    os_version: Mapped[str] = mapped_column(String(128), default="")
    kernel: Mapped[str] = mapped_column(String(128), default="")
    arch: Mapped[str] = mapped_column(String(32), default="")
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    utc_offset_minutes: Mapped[int] = mapped_column(Integer, default=0)
    region: Mapped[str] = mapped_column(ForeignKey("regions.name"), index=True)
    server_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("server_groups.id", ondelete="SET NULL"), nullable=True
    )
    asset_importance: Mapped[str] = mapped_column(String(16), default="common")
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)

    agent_status: Mapped[str] = mapped_column(String(16), default="not_installed", index=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    enrolled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_interval: Mapped[int] = mapped_column(Integer, default=10)
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)

    edition: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    protection_status: Mapped[str] = mapped_column(String(24), default="closed", index=True)
    protection_reason: Mapped[str] = mapped_column(String(255), default="")
    open_time: Mapped[datetime | None] = mapped_column(nullable=True)
    policy_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("policy_groups.id", ondelete="SET NULL"), nullable=True
    )
    # Desired policy bundle version (a content hash) and the one the agent last reported.
    policy_version: Mapped[int] = mapped_column(BigInteger, default=0)
    policy_version_applied: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    scan_result: Mapped[str] = mapped_column(String(16), default="undetected", index=True)
    daily_scan_offset_s: Mapped[int] = mapped_column(Integer, default=0)
    next_daily_scan_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)

    risk_vulnerabilities: Mapped[int] = mapped_column(Integer, default=0)
    risk_baseline: Mapped[int] = mapped_column(Integer, default=0)
    risk_intrusions: Mapped[int] = mapped_column(Integer, default=0)
    risk_assets: Mapped[int] = mapped_column(Integer, default=0)

    created_at: Mapped[datetime] = created_column()


class AssetSnapshotRow(Base):
    """Latest collected fingerprints of one category for one server."""

    __tablename__ = "asset_snapshots"
    __table_args__ = (UniqueConstraint("server_id", "category"),)

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(32))
    data: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    collected_at: Mapped[datetime] = created_column()
