"""Ransomware prevention API: policies, enable/disable per server, servers, snapshots and restore."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.ransomware import service
from hostward.manager.ransomware.models import RansomwarePolicy
from hostward.manager.ransomware.schemas import (
    EnableIn,
    PolicyIn,
    PolicyOut,
    RansomwareServerOut,
    RestoreIn,
    RestoreOut,
    ServerIdsIn,
    SnapshotOut,
)
from hostward.manager.schemas_common import ErrorInfo, Page, paging

router = APIRouter(tags=["ransomware"])

Text = Annotated[str | None, Query(max_length=256)]


class RansomwareResult(BaseModel):
    server_id: str
    ok: bool
    error: ErrorInfo | None = None


class RansomwareResponse(BaseModel):
    results: list[RansomwareResult]


def _response(outcomes: list[service.Outcome]) -> RansomwareResponse:
    return RansomwareResponse(
        results=[
            RansomwareResult(
                server_id=o.server_id,
                ok=o.ok,
                error=ErrorInfo(code=o.error.code, message=o.error.message) if o.error else None,
            )
            for o in outcomes
        ]
    )


def policy_out(policy: RansomwarePolicy, servers: int = 0) -> PolicyOut:
    return PolicyOut.model_validate(policy).model_copy(update={"servers": servers})


def server_out(row: service.ServerRow) -> RansomwareServerOut:
    s = row.server
    status = row.row.status if row.row is not None and row.enabled else {}
    return RansomwareServerOut(
        server_id=s.id,
        server_name=s.name,
        region=s.region,
        agent_status=s.agent_status,
        edition=s.edition,
        enabled=row.enabled,
        policy_id=row.policy.id if row.policy else None,
        policy_name=row.policy.name if row.policy else None,
        state=row.state,
        message=str(status.get("message", "")),
        baits=int(status.get("baits", 0) or 0),
        snapshots=row.snapshots,
        last_snapshot_at=row.last_snapshot_at,
        status_at=row.row.status_at if row.row is not None else None,
    )


@router.get("/ransomware/policies", response_model=list[PolicyOut])
def list_policies(_p: Reader, ctx: Ctx) -> list[PolicyOut]:
    with ctx.uow() as session:
        return [policy_out(p, n) for p, n in service.list_policies(session)]


@router.post("/ransomware/policies", response_model=PolicyOut, status_code=201)
def create_policy(body: PolicyIn, principal: Operator, ctx: Ctx) -> PolicyOut:
    with ctx.uow() as session:
        return policy_out(service.create_policy(session, body, actor=principal.username, now=ctx.clock.now()))


@router.get("/ransomware/policies/{policy_id}", response_model=PolicyOut)
def get_policy(policy_id: str, _p: Reader, ctx: Ctx) -> PolicyOut:
    with ctx.uow() as session:
        policy = service.get_policy(session, policy_id)
        counts = dict((p.id, n) for p, n in service.list_policies(session))
        return policy_out(policy, counts.get(policy.id, 0))


@router.put("/ransomware/policies/{policy_id}", response_model=PolicyOut)
def update_policy(policy_id: str, body: PolicyIn, principal: Operator, ctx: Ctx) -> PolicyOut:
    """Replace a policy; every server bound to it receives the change within seconds."""
    with ctx.uow() as session:
        policy = service.update_policy(
            session, policy_id, body, actor=principal.username, now=ctx.clock.now()
        )
        counts = dict((p.id, n) for p, n in service.list_policies(session))
        return policy_out(policy, counts.get(policy.id, 0))


@router.delete("/ransomware/policies/{policy_id}", status_code=204)
def delete_policy(policy_id: str, principal: Operator, ctx: Ctx) -> None:
    """Delete an unused policy (409 ``policy_in_use`` while servers are bound to it)."""
    with ctx.uow() as session:
        service.delete_policy(session, policy_id, actor=principal.username, now=ctx.clock.now())


@router.post("/ransomware/enable", response_model=RansomwareResponse)
def enable(body: EnableIn, principal: Operator, ctx: Ctx) -> RansomwareResponse:
    """Bind the policy and switch prevention on (premium and WTP servers only)."""
    with ctx.uow() as session:
        service.get_policy(session, body.policy_id)
        outcomes = service.batch(
            session,
            body.server_ids,
            service.enable_one,
            body.policy_id,
            ctx.clock.now(),
            actor=principal.username,
        )
    return _response(outcomes)


@router.post("/ransomware/disable", response_model=RansomwareResponse)
def disable(body: ServerIdsIn, principal: Operator, ctx: Ctx) -> RansomwareResponse:
    with ctx.uow() as session:
        outcomes = service.batch(
            session, body.server_ids, service.disable_one, ctx.clock.now(), actor=principal.username
        )
    return _response(outcomes)


@router.get("/ransomware/servers", response_model=Page[RansomwareServerOut])
def list_servers(
    _p: Reader,
    ctx: Ctx,
    q: Text = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[RansomwareServerOut]:
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_servers(session, q=q, offset=offset, limit=limit)
        return Page(items=[server_out(r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/ransomware/snapshots", response_model=Page[SnapshotOut])
def list_snapshots(
    _p: Reader,
    ctx: Ctx,
    server_id: Text = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[SnapshotOut]:
    """Snapshots the agents reported, newest first."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_snapshots(session, server_id=server_id, offset=offset, limit=limit)
        items = [
            SnapshotOut(
                id=s.id,
                server_id=s.server_id,
                server_name=n,
                snapshot_id=s.snapshot_id,
                taken_at=s.taken_at,
                files=s.files,
                bytes=s.bytes,
                received_at=s.received_at,
            )
            for s, n in rows
        ]
        return Page(items=items, total=total, offset=offset, limit=limit)


@router.post("/ransomware/restore", response_model=RestoreOut)
def restore(body: RestoreIn, principal: Operator, ctx: Ctx) -> RestoreOut:
    """Restore the protected directories from a snapshot (queues ``ransomware_restore``)."""
    with ctx.uow() as session:
        command_id = service.restore(
            session,
            body.server_id,
            body.snapshot_id,
            actor=principal.username,
            now=ctx.clock.now(),
            path=body.path,
        )
        return RestoreOut(server_id=body.server_id, snapshot_id=body.snapshot_id, command_id=command_id)
