"""Regions: operator-named partitions; servers and quotas belong to one, quotas bind within it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column

DEFAULT_REGION = "default"


class Region(Base):
    __tablename__ = "regions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = created_column()
