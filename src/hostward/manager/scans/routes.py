"""Scans: start (manual), list, show, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.scans import service
from hostward.manager.scans.models import Scan
from hostward.manager.scans.schemas import ScanCreate, ScanItems, ScanKind, ScanOut, ScanStatus, ScanTrigger
from hostward.manager.schemas_common import Page, paging
from hostward.manager.servers.models import Server

router = APIRouter(tags=["scans"])


def _out(scan: Scan, server_name: str) -> ScanOut:
    return ScanOut.model_validate(scan).model_copy(update={"server_name": server_name})


def _server_name(session: Session, server_id: str) -> str:
    server = session.get(Server, server_id)
    return server.name if server is not None else ""


@router.post("/scans", response_model=ScanItems, status_code=201)
def start_scans(body: ScanCreate, principal: Operator, ctx: Ctx) -> ScanItems:
    with ctx.uow() as session:
        scans = service.create_scans(
            session,
            body.server_ids,
            body.kind,
            "manual",
            ctx.clock.now(),
            ctx.settings,
            principal.username,
            paths=body.paths,
        )
        return ScanItems(items=[_out(s, _server_name(session, s.server_id)) for s in scans])


@router.get("/scans", response_model=Page[ScanOut])
def list_scans(
    _p: Reader,
    ctx: Ctx,
    server_id: str | None = None,
    region: str | None = None,
    status: ScanStatus | None = None,
    kind: ScanKind | None = None,
    trigger: ScanTrigger | None = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[ScanOut]:
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_scans(
            session,
            server_id=server_id,
            region=region,
            status=status,
            kind=kind,
            trigger=trigger,
            offset=offset,
            limit=limit,
        )
        return Page(items=[_out(s, name) for s, name in rows], total=total, offset=offset, limit=limit)


@router.get("/scans/{scan_id}", response_model=ScanOut)
def show_scan(scan_id: str, _p: Reader, ctx: Ctx) -> ScanOut:
    with ctx.uow() as session:
        scan = service.get_scan(session, scan_id)
        return _out(scan, _server_name(session, scan.server_id))


@router.post("/scans/{scan_id}/cancel", response_model=ScanOut)
def cancel_scan(scan_id: str, principal: Operator, ctx: Ctx) -> ScanOut:
    with ctx.uow() as session:
        scan = service.cancel_scan(session, scan_id, ctx.clock.now(), principal.username)
        return _out(scan, _server_name(session, scan.server_id))
