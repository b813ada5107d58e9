"""Read and write global switches with typed defaults."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hostward.manager.settings_store.models import GlobalSetting

DEFAULTS: dict[str, Any] = {
    # Bind an idle quota to every newly enrolled online server (off by default, as in the reference).
    "auto_bind": {"enabled": False, "edition": None},
}


def get(session: Session, key: str) -> Any:
    row = session.get(GlobalSetting, key)
    if row is None:
        return DEFAULTS.get(key)
    return row.value


def put(session: Session, key: str, value: Any, now: datetime) -> None:
    row = session.get(GlobalSetting, key)
    if row is None:
        session.add(GlobalSetting(key=key, value=value, updated_at=now))
    else:
        row.value = value
        row.updated_at = now
