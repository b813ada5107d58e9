"""The console's filtered, paged lists of per-server rows (Isolated Files, Blocked IPs): the page's filters
go to the domain's list function as keywords, and the page shows the rows with the server filtered on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hostward.manager.console.web import Pager, User, ctx_of, current_region, render
from hostward.manager.servers.models import Server

Lister = Callable[..., tuple[list[tuple[Any, str]], int]]
Extras = Callable[[Session, str | None, list[tuple[Any, str]]], dict[str, Any]]


def list_page(
    request: Request,
    user: User,
    filters: dict[str, str | None],
    lister: Lister,
    extras: Extras,
    *,
    template: str,
    active: str,
    title: str,
) -> Response:
    """Render ``template`` with one page of ``lister(session, region=..., offset=..., limit=..., **filters)``
    in the current region; ``extras(session, region, rows)`` adds the page's own values."""
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    with ctx.uow() as session:
        rows, pager.total = lister(session, region=region, offset=pager.offset, limit=pager.size, **filters)
        server_id = filters.get("server_id")
        return render(
            request,
            session,
            user,
            template,
            active=active,
            title=title,
            rows=rows,
            pager=pager,
            filters=filters,
            filter_server=session.get(Server, server_id) if server_id else None,
            **extras(session, region, rows),
        )
