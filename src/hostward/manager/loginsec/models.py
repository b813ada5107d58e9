"""Blocked source addresses, the login whitelist, the per-server SSH login IP whitelist and the login
locations learned per server (abnormal-login learning rule)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

BLOCK_STATUSES = ("blocked", "unblocking", "unblocked")


class BlockedIp(Base):
    """One source (address or prefix) blocked on one server for one service; re-blocks count up."""

    __tablename__ = "blocked_ips"
    __table_args__ = (
        UniqueConstraint("server_id", "source", "service"),
        Index("ix_blocked_ips_latest", "latest_blocked_at"),
    )

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    # "203.0.113.7" for a single address, "2001:db8:1:2::/64" for a prefix
    source: Mapped[str] = mapped_column(String(64))
    network: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="blocked", index=True)
    times_blocked: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_blocked_at: Mapped[datetime] = created_column()
    latest_blocked_at: Mapped[datetime] = created_column()
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    reason: Mapped[str] = mapped_column(String(255), default="")
    users: Mapped[list[str]] = mapped_column(JSON, default=list)
    unblocked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # "expired", "manual", "agent" (the agent lifted it: protection off, uninstall) or empty
    unblock_reason: Mapped[str] = mapped_column(String(32), default="")
    unblocked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    unblock_command_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    updated_at: Mapped[datetime] = created_column()


class LoginWhitelistEntry(Base):
    """Login IPs (addresses, CIDRs, ranges) and an optional user name, for all servers or a list.

    Without a user name the networks are never blocked on the servers in scope (the policy whitelist);
    with one, only that user's logins from those networks are exempt from login alarms.
    """

    __tablename__ = "login_whitelist"

    id: Mapped[str] = id_column()
    server_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    ip_text: Mapped[str] = mapped_column(String(2048))
    networks: Mapped[list[str]] = mapped_column(JSON, default=list)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remarks: Mapped[str] = mapped_column(Text, default="")
    source_alarm_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = created_column()


class SshIpWhitelistEntry(Base):
    """When a server has enabled entries, new SSH connections from other addresses are dropped."""

    __tablename__ = "ssh_ip_whitelist"
    __table_args__ = (UniqueConstraint("server_id", "network"),)

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    network: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    remarks: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = created_column()


class LearnedLoginLocation(Base):
    """Locations a server's logins came from while it was learning (the first three are common)."""

    __tablename__ = "login_learned_locations"
    __table_args__ = (UniqueConstraint("server_id", "location"),)

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    location: Mapped[str] = mapped_column(String(128))
    learned_at: Mapped[datetime] = created_column()
