"""Baseline checks: per-check and per-server results (ignore / unignore / verify), weak passwords,
password complexity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from hostward.manager.baseline import exports, fixes, service
from hostward.manager.baseline.schemas import (
    BaselineHandleIn,
    BaselineStatisticsOut,
    CheckSummaryOut,
    ComplexityHandleIn,
    ComplexityOut,
    ResultOut,
    WeakpassStatusOut,
    WeakPasswordOut,
)
from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.risk.fixes import handle_action
from hostward.manager.schemas_common import Page, paging

router = APIRouter(tags=["baseline"])

# Annotated, not a shared `Query()` default: FastAPI would give every parameter using one Query
# instance the alias of the first (all filters read `?region=`).
TextQ = Annotated[str | None, Query(max_length=256)]


@router.get("/baseline/statistics", response_model=BaselineStatisticsOut)
def baseline_statistics(_p: Reader, ctx: Ctx, region: TextQ = None) -> BaselineStatisticsOut:
    with ctx.uow() as session:
        return BaselineStatisticsOut(**service.statistics(session, region=region))


@router.get("/baseline/checks", response_model=Page[CheckSummaryOut])
def list_checks(
    _p: Reader,
    ctx: Ctx,
    region: TextQ = None,
    server_id: TextQ = None,
    severity: TextQ = None,
    q: TextQ = None,
    only_failed: bool = False,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[CheckSummaryOut]:
    """Checks across servers, those failing on most servers first."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_checks(
            session,
            region=region,
            server_id=server_id,
            severity=severity,
            q=q,
            only_failed=only_failed,
            offset=offset,
            limit=limit,
        )
        return Page(items=[CheckSummaryOut(**r) for r in rows], total=total, offset=offset, limit=limit)


def result_out(row: object, server_name: str, verifying: bool) -> ResultOut:
    out = ResultOut.model_validate(row)
    out.server_name, out.verifying = server_name, verifying
    return out


@router.get("/baseline/results", response_model=Page[ResultOut])
def list_results(
    _p: Reader,
    ctx: Ctx,
    server_id: TextQ = None,
    policy_id: TextQ = None,
    check_id: TextQ = None,
    result: TextQ = None,
    region: TextQ = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[ResultOut]:
    """Results per server and check (``result``: passed, failed, not_applicable or ignored)."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        fixes.settle(session, ctx.clock.now())
        rows, total = service.list_results(
            session,
            server_id=server_id,
            policy_id=policy_id,
            check_id=check_id,
            result=result,
            region=region,
            offset=offset,
            limit=limit,
        )
        return Page(items=[result_out(*r) for r in rows], total=total, offset=offset, limit=limit)


@router.post("/baseline/results/handle")
def handle_results(body: BaselineHandleIn, principal: Operator, ctx: Ctx) -> dict[str, Any]:
    """``ignore`` / ``unignore`` failed checks, ``verify`` them (re-run their servers' baseline), or
    ``fix`` the ``fixable`` ones (file permissions / ownership; ``acknowledge`` required)."""
    with ctx.uow() as session:
        return handle_action(
            session,
            body.result_ids,
            body.action,
            acknowledge=body.acknowledge,
            remark=body.remark,
            actor=principal.username,
            now=ctx.clock.now(),
            settings=ctx.settings,
            fix=fixes.request_fix,
            verify=service.verify,
            handle=service.handle,
        )


@router.get("/baseline/export")
def export_baseline(
    _p: Reader,
    ctx: Ctx,
    view: str = Query(default="results", pattern="^(results|checks|weak_passwords)$"),
    format: str = Query(default="csv", pattern="^(csv|json)$"),
    region: TextQ = None,
    server_id: TextQ = None,
    result: TextQ = None,
    severity: TextQ = None,
    q: TextQ = None,
) -> Response:
    """Download baseline results per server, the per-check summary or the weak passwords (CSV, JSON)."""
    with ctx.uow() as session:
        return exports.export(
            session,
            view=view,
            fmt=format,
            now=ctx.clock.now(),
            region=region,
            server_id=server_id,
            result=result,
            severity=severity,
            q=q,
        )


@router.get("/baseline/weak-passwords", response_model=Page[WeakPasswordOut])
def list_weak_passwords(
    _p: Reader,
    ctx: Ctx,
    server_id: TextQ = None,
    region: TextQ = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[WeakPasswordOut]:
    """Accounts with a weak password: user name, type and why (never the password)."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_weak_passwords(
            session, server_id=server_id, region=region, offset=offset, limit=limit
        )
        items = []
        for row, name in rows:
            out = WeakPasswordOut.model_validate(row)
            out.server_name = name
            items.append(out)
        return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/baseline/weak-password-status", response_model=list[WeakpassStatusOut])
def weak_password_status(
    _p: Reader, ctx: Ctx, server_id: TextQ = None, region: TextQ = None
) -> list[WeakpassStatusOut]:
    """Per server: the last weak-password check's status (``unreadable`` shadow file, ...)."""
    with ctx.uow() as session:
        weak_by_server: dict[str, int] = {}
        rows, _ = service.list_weak_passwords(session, server_id=server_id, region=region, limit=200)
        for row, _name in rows:
            weak_by_server[row.server_id] = weak_by_server.get(row.server_id, 0) + 1
        return [
            WeakpassStatusOut(
                server_id=server.id,
                server_name=server.name,
                status=state.weakpass_status or "never",
                detail=state.weakpass_detail,
                complete=state.weakpass_complete,
                accounts=state.weakpass_accounts,
                hashes=state.weakpass_hashes,
                seconds=state.weakpass_seconds,
                weak=weak_by_server.get(server.id, 0),
                checked_at=state.weakpass_checked_at,
            )
            for state, server in service.list_states(session, server_id=server_id, region=region)
            if state.weakpass_checked_at is not None
        ]


@router.get("/baseline/complexity", response_model=list[ComplexityOut])
def list_complexity(
    _p: Reader, ctx: Ctx, server_id: TextQ = None, region: TextQ = None
) -> list[ComplexityOut]:
    """Password complexity policy per server: minimum length, character classes, aging."""
    with ctx.uow() as session:
        return [
            ComplexityOut(
                server_id=server.id,
                server_name=server.name,
                module=state.complexity_module,
                source=state.complexity_source,
                passed=state.complexity_passed,
                ignored=state.complexity_ignored,
                items=state.complexity_items,
                checked_at=state.complexity_checked_at,
            )
            for state, server in service.list_states(session, server_id=server_id, region=region)
            if state.complexity_checked_at is not None
        ]


@router.post("/baseline/complexity/handle")
def handle_complexity(body: ComplexityHandleIn, principal: Operator, ctx: Ctx) -> dict[str, int]:
    with ctx.uow() as session:
        changed = service.handle_complexity(
            session, body.server_ids, body.action, actor=principal.username, now=ctx.clock.now()
        )
    return {"changed": changed}
