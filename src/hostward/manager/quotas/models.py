"""Protection quotas: one quota of an edition protects one server of its region."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

EDITIONS = ("basic", "enterprise", "premium", "wtp")
QUOTA_STATUSES = ("normal", "expired", "frozen")


class Quota(Base):
    __tablename__ = "quotas"

    id: Mapped[str] = id_column()
    edition: Mapped[str] = mapped_column(String(16), index=True)
    region: Mapped[str] = mapped_column(ForeignKey("regions.name"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="normal", index=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    server_id: Mapped[str | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL"), unique=True, nullable=True
    )
    bound_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = created_column()

    @property
    def usage(self) -> str:
        return "used" if self.server_id else "idle"
