"""Lists of per-server rows (alarms, isolated files, blocked IPs) as the API and console page them: each
row with its server's name, filtered by server and region, counted, then one page in a stable order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from hostward.core.errors import Invalid
from hostward.manager.servers.models import Server


def with_server(model: Any, *, server_id: str | None, region: str | None) -> Select[Any]:
    """``(row, server name)`` of ``model`` (a table with a ``server_id`` column), kept to one server
    and/or one region when given."""
    stmt = select(model, Server.name).join(Server, Server.id == model.server_id)
    if server_id:
        stmt = stmt.where(model.server_id == server_id)
    if region:
        stmt = stmt.where(Server.region == region)
    return stmt


def one_of(value: str, allowed: Sequence[str], field: str) -> str:
    """``value`` when it is one of ``allowed``; else ``Invalid`` naming ``field`` and the choices."""
    if value not in allowed:
        raise Invalid(f"{field} must be one of {', '.join(allowed)}")
    return value


def page(
    session: Session, stmt: Select[Any], order: Sequence[Any], offset: int, limit: int
) -> tuple[list[tuple[Any, str]], int]:
    """One page of ``stmt`` (built by ``with_server``) in ``order``, and how many rows match in all."""
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(*order).offset(offset).limit(limit)).all()
    return [(row, name) for row, name in rows], total


def counts_by(
    session: Session, column: InstrumentedAttribute[Any], values: Sequence[str], region: str | None
) -> dict[str, int]:
    """How many rows of ``column``'s table (joined to its server) hold each of ``values`` (0 for none),
    in one region when given."""
    stmt = select(column, func.count()).join(Server, Server.id == column.class_.server_id)
    if region:
        stmt = stmt.where(Server.region == region)
    counts = {str(k): int(v) for k, v in session.execute(stmt.group_by(column))}
    return {v: counts.get(v, 0) for v in values}
