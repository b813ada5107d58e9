"""Policy groups (named sets of per-policy on/off + settings) and their policies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hostward.manager.db.base import Base, created_column, id_column


class PolicyGroup(Base):
    __tablename__ = "policy_groups"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    edition: Mapped[str] = mapped_column(String(16))
    os: Mapped[str] = mapped_column(String(16), default="linux")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    view_only: Mapped[bool] = mapped_column(Boolean, default=False)
    copyable: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = created_column()

    policies: Mapped[list[Policy]] = relationship(
        back_populates="group", cascade="all, delete-orphan", order_by="Policy.key"
    )


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("group_id", "key"),)

    id: Mapped[str] = id_column()
    group_id: Mapped[str] = mapped_column(ForeignKey("policy_groups.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    group: Mapped[PolicyGroup] = relationship(back_populates="policies")
