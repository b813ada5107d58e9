"""File change records reported by agents' file integrity monitoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

CHANGE_TYPES = ("file", "dir")
# create/modify/delete/attributes/move: what happened to the path; accept: the operator's new baseline.
ACTIONS = ("create", "modify", "delete", "attributes", "move", "accept")
# alarmed: an alarm was raised; package_update: matches the package database, recorded without alarm;
# accepted: an operator accepted the change as the new baseline; baseline: the agent's confirmation of
# that new baseline (the state it now compares with).
CLASSIFICATIONS = ("alarmed", "package_update", "accepted", "baseline")


class FimChange(Base):
    __tablename__ = "fim_changes"
    __table_args__ = (
        Index("ix_fim_changes_server_time", "server_id", "occurred_at"),
        Index("ix_fim_changes_server_path", "server_id", "path_hash"),
    )

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    # sha256 of the path: paths are too long for a portable index.
    path_hash: Mapped[str] = mapped_column(String(64))
    moved_from: Mapped[str | None] = mapped_column(Text, nullable=True)
    change_type: Mapped[str] = mapped_column(String(8))
    entry_type: Mapped[str] = mapped_column(String(16), default="file")
    action: Mapped[str] = mapped_column(String(16))
    important: Mapped[bool] = mapped_column(Boolean, default=False)
    attributes: Mapped[list[str]] = mapped_column(JSON, default=list)
    old_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    new_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    old: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    new: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    classification: Mapped[str] = mapped_column(String(16), index=True)
    package: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    process_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    process_exe: Mapped[str] = mapped_column(Text, default="")
    process_user: Mapped[str] = mapped_column(String(64), default="")
    process_cmdline: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime] = created_column()
    received_at: Mapped[datetime] = created_column()
    accepted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    accept_command_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
