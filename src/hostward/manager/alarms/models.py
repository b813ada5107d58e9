"""Alarms (security events) and alarm whitelist rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

ALARM_STATUSES = ("unhandled", "handled")
HANDLE_ACTIONS = ("mark_as_handled", "ignore", "add_to_alarm_whitelist", "whitelisted", "isolate_and_kill")
WHITELIST_FIELDS = ("file_hash", "file_path", "process_path", "process_cmdline", "login_ip", "username")
WHITELIST_JUDGES = ("equal", "contains", "glob")


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (
        Index("ix_alarms_merge", "server_id", "event_class", "fingerprint", "status"),
        Index("ix_alarms_last_seen", "last_seen"),
    )

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    event_class: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16), index=True)
    attack_phase: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(512), default="")
    fingerprint: Mapped[str] = mapped_column(String(256))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="unhandled", index=True)
    handle_action: Mapped[str | None] = mapped_column(String(32), nullable=True)
    handle_remark: Mapped[str] = mapped_column(Text, default="")
    handler: Mapped[str | None] = mapped_column(String(64), nullable=True)
    handled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    whitelist_rule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    first_seen: Mapped[datetime] = created_column()
    last_seen: Mapped[datetime] = created_column()
    count: Mapped[int] = mapped_column(Integer, default=1)


class AlarmWhitelistRule(Base):
    __tablename__ = "alarm_whitelist"

    id: Mapped[str] = id_column()
    event_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    field: Mapped[str] = mapped_column(String(32))
    judge: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(1024))
    server_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = created_column()
    hits: Mapped[int] = mapped_column(Integer, default=0)
