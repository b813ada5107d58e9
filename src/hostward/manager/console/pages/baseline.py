"""Prediction -> Baseline Checks: checks across servers (pass rate), per-server results with ignore /
unignore / verify, weak passwords and the password complexity policy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from hostward.core.errors import Invalid
from hostward.manager.baseline import service
from hostward.manager.console.web import (
    PREFIX,
    Filter,
    FormOperator,
    Next,
    Pager,
    User,
    ctx_of,
    current_region,
    opt,
    redirect,
    render,
    safe_next,
)
from hostward.manager.servers.models import Server

router = APIRouter()

PAGE = PREFIX + "/baseline"
MAX_IDS = 500
SEVERITY_BADGES = {
    "critical": ("Critical", "red"),
    "high": ("High", "orange"),
    "medium": ("Medium", "amber"),
    "low": ("Low", "grey"),
}
RESULT_BADGES = {
    "failed": ("Failed", "red"),
    "ignored": ("Ignored", "grey"),
    "passed": ("Passed", "green"),
    "not_applicable": ("Not applicable", "grey"),
}
REASON_LABELS = {
    "empty_password": "empty password",
    "username_derived": "derived from the user name",
    "custom_list": "in the custom list",
    "common_password": "common password",
    "shared_password": "shared with another account",
}
COMPLEXITY_LABELS = {
    "min_length": "Minimum length",
    "uppercase": "Uppercase letters",
    "lowercase": "Lowercase letters",
    "digit": "Digits",
    "special": "Special characters",
    "max_days": "Maximum password age",
    "min_days": "Minimum password age",
    "warn_age": "Expiry warning",
}


@router.get("/baseline")
def baseline_page(
    request: Request,
    user: User,
    server_id: Filter = None,
    severity: Filter = None,
    q: Filter = None,
    failed: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    chosen = opt(severity) if opt(severity) in SEVERITY_BADGES else None
    with ctx.uow() as session:
        checks, pager.total = service.list_checks(
            session,
            region=region,
            server_id=opt(server_id),
            severity=chosen,
            q=opt(q),
            only_failed=bool(opt(failed)),
            offset=pager.offset,
            limit=pager.size,
        )
        weak, weak_total = service.list_weak_passwords(
            session, server_id=opt(server_id), region=region, limit=200
        )
        states = service.list_states(session, server_id=opt(server_id), region=region)
        server = session.get(Server, opt(server_id)) if opt(server_id) else None
        return render(
            request,
            session,
            user,
            "baseline.html",
            active="baseline",
            title="Baseline Checks",
            stats=service.statistics(session, region=region),
            checks=checks,
            pager=pager,
            weak=weak,
            weak_total=weak_total,
            states=states,
            server=server,
            filters={"severity": chosen, "q": opt(q) or "", "failed": bool(opt(failed))},
            severities=SEVERITY_BADGES,
            reasons=REASON_LABELS,
            complexity_labels=COMPLEXITY_LABELS,
        )


@router.get("/baseline/export")
def export(
    request: Request,
    user: User,
    view: Filter = None,
    format: Filter = None,
    server_id: Filter = None,
    severity: Filter = None,
    result: Filter = None,
    q: Filter = None,
) -> Response:
    """Baseline results, the per-check summary or weak passwords (page filters) as CSV or JSON."""
    from hostward.manager.baseline import exports

    ctx = ctx_of(request)
    with ctx.uow() as session:
        return exports.export(
            session,
            view=opt(view) or "results",
            fmt=opt(format),
            now=ctx.clock.now(),
            region=current_region(request),
            server_id=opt(server_id),
            severity=opt(severity) if opt(severity) in SEVERITY_BADGES else None,
            result=opt(result),
            q=opt(q),
        )


@router.get("/baseline/check")
def check_page(
    request: Request,
    user: User,
    policy_id: Annotated[str, Query(max_length=128)],
    check_id: Annotated[str, Query(max_length=128)],
    result: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    chosen = opt(result) if opt(result) in RESULT_BADGES else None
    with ctx.uow() as session:
        from hostward.manager.baseline import fixes

        fixes.settle(session, ctx.clock.now())
        rows, pager.total = service.list_results(
            session,
            policy_id=policy_id,
            check_id=check_id,
            result=chosen,
            region=region,
            offset=pager.offset,
            limit=pager.size,
        )
        first = rows[0][0] if rows else None
        return render(
            request,
            session,
            user,
            "baseline_check.html",
            active="baseline",
            title=first.title if first else check_id,
            rows=rows,
            pager=pager,
            check=first,
            policy_id=policy_id,
            check_id=check_id,
            result=chosen,
            severities=SEVERITY_BADGES,
            results=RESULT_BADGES,
        )


@router.post("/baseline/handle")
def handle(
    request: Request,
    user: FormOperator,
    action: Annotated[str, Form(pattern="^(ignore|unignore|verify|fix)$")],
    result_ids: Annotated[list[str], Form(max_length=MAX_IDS)] = [],  # noqa: B006
    remark: Annotated[str, Form(max_length=2000)] = "",
    acknowledge: Annotated[str, Form(max_length=8)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = [i for i in result_ids if i]
    if not ids:
        raise Invalid("select at least one check result")
    with ctx.uow() as session:
        if action == "fix":
            from hostward.manager.baseline import fixes

            request_ = fixes.request_fix(
                session,
                ids,
                acknowledge=bool(acknowledge),
                remark=remark,
                actor=user.username,
                now=ctx.clock.now(),
                settings=ctx.settings,
            )
            done = sum(1 for o in request_.outcomes if o.ok)
            bad = [o for o in request_.outcomes if not o.ok]
            lines = [f"Fixing {done} check result(s) on {len(request_.commands)} server(s)."] if done else []
            lines += [f"{o.id[:8]}: {o.error.message if o.error else 'failed'}" for o in bad[:10]]
            return redirect(safe_next(next, PAGE), ("error" if bad else "ok", " ".join(lines)))
        if action == "verify":
            scans = service.verify(
                session, ids, actor=user.username, now=ctx.clock.now(), settings=ctx.settings
            )
            text = (
                f"Verifying: baseline scan queued on {len(scans)} server{'s' if len(scans) != 1 else ''}; "
                "the results refresh when it finishes."
            )
            return redirect(safe_next(next, PAGE), ("ok", text))
        outcomes = service.handle(
            session, ids, action, remark=remark, actor=user.username, now=ctx.clock.now()
        )
    done = sum(1 for o in outcomes if o.ok)
    failed = [o for o in outcomes if not o.ok]
    verb = "Ignored" if action == "ignore" else "Unignored"
    lines = [f"{verb} {done} check result{'s' if done != 1 else ''}."] if done else []
    lines += [f"{o.id[:8]}: {o.error.message if o.error else 'failed'}" for o in failed[:10]]
    return redirect(safe_next(next, PAGE), ("error" if failed else "ok", " ".join(lines)))


@router.post("/baseline/complexity")
def handle_complexity(
    request: Request,
    user: FormOperator,
    action: Annotated[str, Form(pattern="^(ignore|unignore)$")],
    server_id: Annotated[str, Form(max_length=64)],
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        service.handle_complexity(session, [server_id], action, actor=user.username, now=ctx.clock.now())
    verb = "ignored" if action == "ignore" else "no longer ignored"
    return redirect(safe_next(next, PAGE), ("ok", f"Password complexity policy {verb}."))
