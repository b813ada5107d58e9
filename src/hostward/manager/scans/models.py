"""Scans: comprehensive detection (full) or one kind, on enable, on schedule or on demand."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

SCAN_KINDS = (
    "full",
    "asset",
    "vulnerability",
    "baseline",
    "weak_password",
    "malware",
    "fim",
    "malware_full",
    "malware_custom",
    "webshell",
)
SCAN_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")
SCAN_TRIGGERS = ("enable", "schedule", "manual")


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = created_column()
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    timeout_at: Mapped[datetime] = mapped_column()
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    # A custom virus scan's directories and files (``malware_custom`` only).
    paths: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
