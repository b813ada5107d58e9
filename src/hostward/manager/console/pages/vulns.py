"""Prediction -> Vulnerabilities: vulnerability view and server view, findings with ignore / unignore,
whitelist rules, feeds (upload or manager-side path), scheduled and manual scans."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy import select

from hostward.core.errors import Invalid
from hostward.manager.console.web import (
    PREFIX,
    Filter,
    FormAdmin,
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
from hostward.manager.scans import service as scans
from hostward.manager.servers.models import Server
from hostward.manager.vulns import exports, feeds, fixes, schedule, service
from hostward.manager.vulns.models import FINDING_STATES, VULN_SEVERITIES, VulnWhitelistRule
from hostward.manager.vulns.routes import check_feed_path, import_upload
from hostward.manager.vulns.schemas import ScanSettings

router = APIRouter()

PAGE = PREFIX + "/vulnerabilities"
MAX_IDS = 500
SEVERITY_BADGES = {
    "critical": ("Critical", "red"),
    "high": ("High", "orange"),
    "medium": ("Medium", "amber"),
    "low": ("Low", "grey"),
    "unknown": ("Unknown", "grey"),
}
STATE_BADGES = {"unfixed": ("Unfixed", "red"), "ignored": ("Ignored", "grey"), "fixed": ("Fixed", "green")}
FIX_BADGES = {
    "fixing": ("Fixing", "blue"),
    "fixed": ("Fix verified", "green"),
    "reboot": ("Restart required", "amber"),
    "failed": ("Fix failed", "red"),
}


@router.get("/vulnerabilities")
def vulns_page(
    request: Request,
    user: User,
    view: Filter = None,
    severity: Filter = None,
    q: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    view_name = "servers" if opt(view) == "servers" else "vulns"
    chosen = opt(severity) if opt(severity) in VULN_SEVERITIES else None
    with ctx.uow() as session:
        if view_name == "servers":
            rows, pager.total = service.list_server_view(
                session, region=region, q=opt(q), offset=pager.offset, limit=pager.size
            )
        else:
            rows, pager.total = service.list_vulnerabilities(
                session, region=region, severity=chosen, q=opt(q), offset=pager.offset, limit=pager.size
            )
        rules = service.list_rules(session)
        names = dict(
            session.execute(select(Server.id, Server.name).where(Server.id.in_(_rule_servers(rules)))).all()
        )
        return render(
            request,
            session,
            user,
            "vulns.html",
            active="vulnerabilities",
            title="Vulnerabilities",
            view=view_name,
            rows=rows,
            pager=pager,
            stats=service.statistics(session, ctx.clock.now(), region=region),
            feeds=feeds.list_feeds(session),
            rules=rules,
            rule_servers=names,
            scan_settings=schedule.get_settings(session),
            filters={"severity": chosen, "q": opt(q) or ""},
            severities=SEVERITY_BADGES,
        )


def _rule_servers(rules: list[VulnWhitelistRule]) -> list[str]:
    ids: list[str] = []
    for rule in rules:
        ids.extend(rule.server_ids or [])
    return ids


@router.get("/vulnerabilities/findings")
def findings_page(
    request: Request,
    user: User,
    vuln_id: Filter = None,
    server_id: Filter = None,
    status: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    state = opt(status) if opt(status) in FINDING_STATES else None
    with ctx.uow() as session:
        fixes.settle(session, ctx.clock.now())
        rows, pager.total = service.list_findings(
            session,
            vuln_id=opt(vuln_id),
            server_id=opt(server_id),
            status=state,
            region=region,
            offset=pager.offset,
            limit=pager.size,
        )
        server = session.get(Server, opt(server_id)) if opt(server_id) else None
        servers = (
            list(session.scalars(select(Server).order_by(Server.name).limit(500))) if opt(vuln_id) else []
        )
        title = opt(vuln_id) or (server.name if server else "Findings")
        history = fixes.history(session, opt(vuln_id) or "", limit=100)[0] if opt(vuln_id) else []
        return render(
            request,
            session,
            user,
            "vuln_findings.html",
            active="vulnerabilities",
            title=title,
            rows=rows,
            pager=pager,
            vuln_id=opt(vuln_id),
            server=server,
            servers=servers,
            status=state,
            severities=SEVERITY_BADGES,
            states=STATE_BADGES,
            fix_states=FIX_BADGES,
            history=history,
        )


@router.post("/vulnerabilities/handle")
def handle(
    request: Request,
    user: FormOperator,
    action: Annotated[str, Form(pattern="^(ignore|unignore)$")],
    finding_ids: Annotated[list[str], Form(max_length=MAX_IDS)] = [],  # noqa: B006
    remark: Annotated[str, Form(max_length=2000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = [i for i in finding_ids if i]
    if not ids:
        raise Invalid("select at least one vulnerability")
    with ctx.uow() as session:
        outcomes = service.handle(
            session, ids, action, remark=remark, actor=user.username, now=ctx.clock.now()
        )
    done = sum(1 for o in outcomes if o.ok)
    failed = [o for o in outcomes if not o.ok]
    verb = "Ignored" if action == "ignore" else "Unignored"
    lines = [f"{verb} {done} vulnerabilit{'y' if done == 1 else 'ies'}."] if done else []
    lines += [f"{o.id[:8]}: {o.error.message if o.error else 'failed'}" for o in failed[:10]]
    return redirect(safe_next(next, PAGE), ("error" if failed else "ok", " ".join(lines)))


@router.post("/vulnerabilities/fix")
def fix(
    request: Request,
    user: FormOperator,
    action: Annotated[str, Form(pattern="^(fix|verify)$")],
    finding_ids: Annotated[list[str], Form(max_length=MAX_IDS)] = [],  # noqa: B006
    acknowledge: Annotated[str, Form(max_length=8)] = "",
    remark: Annotated[str, Form(max_length=2000)] = "",
    next: Next = "",
) -> Response:
    """One-click fix (after the no-backup acknowledgement) or verify (rescan) of the selected findings."""
    ctx = ctx_of(request)
    ids = [i for i in finding_ids if i]
    if not ids:
        raise Invalid("select at least one vulnerability")
    with ctx.uow() as session:
        if action == "verify":
            created = fixes.verify(
                session, ids, actor=user.username, now=ctx.clock.now(), settings=ctx.settings
            )
            text = f"Verification scan queued on {len(created)} server(s)."
            return redirect(safe_next(next, PAGE), ("ok", text))
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
    failed = [o for o in request_.outcomes if not o.ok]
    lines = [
        f"Fixing {done} vulnerabilit{'y' if done == 1 else 'ies'} on {len(request_.commands)} server(s)."
    ]
    lines = lines if done else []
    lines += [f"{o.id[:8]}: {o.error.message if o.error else 'failed'}" for o in failed[:10]]
    return redirect(safe_next(next, PAGE), ("error" if failed else "ok", " ".join(lines)))


@router.get("/vulnerabilities/export")
def export(
    request: Request,
    user: User,
    view: Filter = None,
    format: Filter = None,
    severity: Filter = None,
    status: Filter = None,
    server_id: Filter = None,
    vuln_id: Filter = None,
    q: Filter = None,
) -> Response:
    """The vulnerability view, server view or findings (with the page's filters) as CSV or JSON."""
    ctx = ctx_of(request)
    with ctx.uow() as session:
        return exports.export(
            session,
            view=opt(view) or "findings",
            fmt=opt(format),
            now=ctx.clock.now(),
            region=current_region(request),
            severity=opt(severity) if opt(severity) in VULN_SEVERITIES else None,
            status=opt(status) if opt(status) in FINDING_STATES else None,
            server_id=opt(server_id),
            vuln_id=opt(vuln_id),
            q=opt(q),
        )


@router.post("/vulnerabilities/whitelist")
def add_whitelist(
    request: Request,
    user: FormOperator,
    vuln_id: Annotated[str, Form(max_length=128)],
    scope: Annotated[str, Form(pattern="^(all|selected)$")] = "all",
    server_ids: Annotated[list[str], Form(max_length=1000)] = [],  # noqa: B006
    remark: Annotated[str, Form(max_length=2000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    chosen = [s for s in server_ids if s]
    if scope == "selected" and not chosen:
        raise Invalid("choose the servers the rule applies to")
    with ctx.uow() as session:
        _, matched = service.create_rule(
            session,
            vuln_id=vuln_id,
            server_ids=chosen if scope == "selected" else None,
            remark=remark,
            actor=user.username,
            now=ctx.clock.now(),
        )
    text = f"Whitelisted {vuln_id.strip()}: {matched} open finding(s) ignored; later scans skip it."
    return redirect(safe_next(next, PAGE), ("ok", text))


@router.post("/vulnerabilities/whitelist/{rule_id}/delete")
def delete_whitelist(request: Request, rule_id: str, user: FormOperator, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        reopened = service.delete_rule(session, rule_id, actor=user.username)
    return redirect(
        safe_next(next, PAGE), ("ok", f"Whitelist rule deleted; {reopened} finding(s) open again.")
    )


@router.post("/vulnerabilities/feeds")
def upload_feed(
    request: Request,
    user: FormOperator,
    file: Annotated[UploadFile, File()],
    name: Annotated[str, Form(max_length=255)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    feed = import_upload(ctx, file, name, user.username)
    return redirect(safe_next(next, PAGE), ("ok" if not feed.issue_count else "info", _imported(feed)))


@router.post("/vulnerabilities/feeds/path")
def import_path(
    request: Request,
    user: FormAdmin,
    path: Annotated[str, Form(min_length=1, max_length=4096)],
    name: Annotated[str, Form(max_length=255)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    resolved = check_feed_path(path.strip())
    with ctx.uow() as session:
        feed = feeds.import_path(
            session,
            resolved,
            name=(name or resolved.name)[:255],
            source="path",
            actor=user.username,
            now=ctx.clock.now(),
        )
        text = _imported(feed)
    return redirect(safe_next(next, PAGE), ("ok", text))


def _imported(feed: object) -> str:
    issues = int(getattr(feed, "issue_count", 0))
    text = f"Imported {getattr(feed, 'advisories', 0)} advisories from {getattr(feed, 'name', '')}."
    if issues:
        first = (getattr(feed, "issues", None) or [{}])[0]
        text += (
            f" {issues} malformed entr{'y' if issues == 1 else 'ies'} skipped, e.g. "
            f"{first.get('file')}: {first.get('entry')}: {first.get('message')}"
        )
    return text


@router.post("/vulnerabilities/feeds/{feed_id}/delete")
def delete_feed(request: Request, feed_id: str, user: FormOperator, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        feeds.delete_feed(session, feed_id, actor=user.username)
    return redirect(safe_next(next, PAGE), ("ok", "Feed deleted with its advisories."))


@router.post("/vulnerabilities/settings")
def save_settings(
    request: Request,
    user: FormOperator,
    period_days: Annotated[int, Form()] = 7,
    enabled: Annotated[str, Form(max_length=8)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    if period_days not in (1, 3, 7, 30):
        raise Invalid("period: 1, 3, 7 or 30 days")
    value = ScanSettings(enabled=bool(enabled), period_days=period_days)
    with ctx.uow() as session:
        schedule.put_settings(session, value, actor=user.username, now=ctx.clock.now())
    state = f"every {period_days} day(s) between 00:00 and 07:00" if value.enabled else "off"
    return redirect(safe_next(next, PAGE), ("ok", f"Scheduled vulnerability scan: {state}."))


@router.post("/vulnerabilities/scan")
def scan_now(
    request: Request,
    user: FormOperator,
    server_ids: Annotated[list[str], Form(max_length=MAX_IDS)] = [],  # noqa: B006
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = [s for s in server_ids if s]
    if not ids:
        raise Invalid("select at least one server")
    with ctx.uow() as session:
        created = scans.create_scans(
            session, ids, "vulnerability", "manual", ctx.clock.now(), ctx.settings, user.username
        )
    return redirect(safe_next(next, PAGE), ("ok", f"Vulnerability scan queued on {len(created)} server(s)."))
