"""Regions: listed, created on demand; the default region always exists."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid
from hostward.manager.regions.models import DEFAULT_REGION, Region

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


def validate_name(name: str) -> str:
    value = name.strip().lower()
    if not _NAME.match(value):
        raise Invalid(f"region name {name!r}: 1-64 lowercase letters, digits, '.', '_' or '-'")
    return value


def ensure(session: Session, name: str | None) -> str:
    """Return the region's name, creating the row if needed (None -> the default region)."""
    value = validate_name(name) if name else DEFAULT_REGION
    if session.get(Region, value) is None:
        session.add(Region(name=value))
        session.flush()
    return value


def list_regions(session: Session) -> list[Region]:
    return list(session.scalars(select(Region).order_by(Region.name)))
