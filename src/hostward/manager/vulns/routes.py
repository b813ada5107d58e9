"""Vulnerabilities: feeds (upload or manager-side path), findings (vulnerability and server views),
ignore / unignore, whitelist rules, scheduled-scan settings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from hostward.core.errors import Invalid, NotFound
from hostward.manager.deps import Admin, Ctx, Operator, Reader
from hostward.manager.risk.fixes import handle_action
from hostward.manager.schemas_common import Page, paging
from hostward.manager.vulns import exports, feeds, fixes, schedule, service
from hostward.manager.vulns.schemas import (
    FeedOut,
    FeedPathIn,
    FindingOut,
    HandleIn,
    HistoryOut,
    ScanSettings,
    ServerVulnsOut,
    VulnStatisticsOut,
    VulnSummaryOut,
    WhitelistIn,
    WhitelistOut,
)

router = APIRouter(tags=["vulnerabilities"])

# Annotated, not a shared `Query()` default: FastAPI would give every parameter using one Query
# instance the alias of the first (all filters read `?region=`).
TextQ = Annotated[str | None, Query(max_length=256)]
MAX_UPLOAD_BYTES = 1024 * 1024 * 1024
# Pseudo file systems and the root are never walked for feed files.
REFUSED_ROOTS = ("/proc", "/sys", "/dev", "/run")


def finding_out(row: object, server_name: str = "") -> FindingOut:
    out = FindingOut.model_validate(row)
    out.server_name = server_name
    return out


@router.get("/vulns/statistics", response_model=VulnStatisticsOut)
def vuln_statistics(_p: Reader, ctx: Ctx, region: TextQ = None) -> VulnStatisticsOut:
    with ctx.uow() as session:
        return VulnStatisticsOut(**service.statistics(session, ctx.clock.now(), region=region))


@router.get("/vulns/feeds", response_model=list[FeedOut])
def list_feeds(_p: Reader, ctx: Ctx) -> list[FeedOut]:
    with ctx.uow() as session:
        return [FeedOut.model_validate(f) for f in feeds.list_feeds(session)]


def import_upload(ctx: Ctx, upload: UploadFile, name: str, actor: str) -> FeedOut:
    """Spool the upload to a private temporary file (bounded) and import it."""
    label = (name or upload.filename or "upload.json").strip()[:255] or "upload.json"
    with tempfile.TemporaryDirectory(prefix="hostward-feed-") as tmp:
        target = Path(tmp) / "feed"
        written = 0
        with open(target, "wb") as out:
            while chunk := upload.file.read(1024 * 1024):
                written += len(chunk)
                if written > MAX_UPLOAD_BYTES:
                    raise Invalid(f"feed upload larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
                out.write(chunk)
        with ctx.uow() as session:
            feed = feeds.import_path(
                session, target, name=label, source="upload", actor=actor, now=ctx.clock.now()
            )
            return FeedOut.model_validate(feed)


@router.post("/vulns/feeds", response_model=FeedOut)
def upload_feed(
    principal: Operator,
    ctx: Ctx,
    file: UploadFile = File(description="OSV JSON (single, list, .json.gz or zip) or Debian tracker JSON"),
    name: str = Form(default="", max_length=255),
) -> FeedOut:
    """Import a feed file; malformed entries are listed on the feed (``issues``), the rest imported."""
    return import_upload(ctx, file, name, principal.username)


def check_feed_path(raw: str) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        raise Invalid("path must be absolute")
    resolved = Path(os.path.realpath(path))
    text = str(resolved)
    if text == "/" or any(text == r or text.startswith(r + "/") for r in REFUSED_ROOTS):
        raise Invalid(f"{raw}: not a place for feed files")
    if not resolved.exists():
        raise NotFound(f"{raw}: no such file or directory on the manager host")
    if not (resolved.is_file() or resolved.is_dir()):
        raise Invalid(f"{raw}: not a regular file or directory")
    return resolved


@router.post("/vulns/feeds/path", response_model=FeedOut)
def import_feed_path(body: FeedPathIn, principal: Admin, ctx: Ctx) -> FeedOut:
    """Import a file or directory that is on the manager host (administrators only)."""
    path = check_feed_path(body.path)
    with ctx.uow() as session:
        feed = feeds.import_path(
            session,
            path,
            name=(body.name or path.name or str(path))[:255],
            source="path",
            actor=principal.username,
            now=ctx.clock.now(),
        )
        return FeedOut.model_validate(feed)


@router.delete("/vulns/feeds/{feed_id}", status_code=204)
def delete_feed(feed_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        feeds.delete_feed(session, feed_id, actor=principal.username)


@router.get("/vulns", response_model=Page[VulnSummaryOut])
def list_vulnerabilities(
    _p: Reader,
    ctx: Ctx,
    region: TextQ = None,
    severity: TextQ = None,
    q: TextQ = None,
    include_fixed: bool = False,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[VulnSummaryOut]:
    """Vulnerability view: one row per vulnerability with the number of affected servers."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_vulnerabilities(
            session,
            region=region,
            severity=severity,
            q=q,
            include_fixed=include_fixed,
            offset=offset,
            limit=limit,
        )
        return Page(items=[VulnSummaryOut(**r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/vulns/servers", response_model=Page[ServerVulnsOut])
def list_server_view(
    _p: Reader,
    ctx: Ctx,
    region: TextQ = None,
    q: TextQ = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[ServerVulnsOut]:
    """Server view: servers with findings and their counts by severity."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_server_view(session, region=region, q=q, offset=offset, limit=limit)
        return Page(items=[ServerVulnsOut(**r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/vulns/findings", response_model=Page[FindingOut])
def list_findings(
    _p: Reader,
    ctx: Ctx,
    server_id: TextQ = None,
    vuln_id: TextQ = None,
    status: TextQ = None,
    severity: TextQ = None,
    region: TextQ = None,
    q: TextQ = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[FindingOut]:
    """Findings (one vulnerable package on one server), most severe first."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        fixes.settle(session, ctx.clock.now())
        rows, total = service.list_findings(
            session,
            server_id=server_id,
            vuln_id=vuln_id,
            status=status,
            severity=severity,
            region=region,
            q=q,
            offset=offset,
            limit=limit,
        )
        return Page(items=[finding_out(f, n) for f, n in rows], total=total, offset=offset, limit=limit)


@router.get("/vulns/findings/{finding_id}", response_model=FindingOut)
def get_finding(finding_id: str, _p: Reader, ctx: Ctx) -> FindingOut:
    from hostward.manager.servers.models import Server

    with ctx.uow() as session:
        fixes.settle(session, ctx.clock.now())
        row = service.get_finding(session, finding_id)
        server = session.get(Server, row.server_id)
        return finding_out(row, server.name if server else "")


@router.post("/vulns/findings/handle")
def handle_findings(body: HandleIn, principal: Operator, ctx: Ctx) -> dict[str, Any]:
    """``ignore`` / ``unignore`` findings (each succeeds or fails on its own); ``fix`` them with the
    agent's package manager (``acknowledge`` required; the findings are ``fixing`` until the agent
    reports each package fixed or failed); ``verify`` (rescan their servers)."""
    with ctx.uow() as session:
        return handle_action(
            session,
            body.finding_ids,
            body.action,
            acknowledge=body.acknowledge,
            remark=body.remark,
            actor=principal.username,
            now=ctx.clock.now(),
            settings=ctx.settings,
            fix=fixes.request_fix,
            verify=fixes.verify,
            handle=service.handle,
        )


@router.get("/vulns/export")
def export_vulns(
    _p: Reader,
    ctx: Ctx,
    view: str = Query(default="findings", pattern="^(vulns|servers|findings)$"),
    format: str = Query(default="csv", pattern="^(csv|json)$"),
    region: TextQ = None,
    severity: TextQ = None,
    status: TextQ = None,
    server_id: TextQ = None,
    vuln_id: TextQ = None,
    q: TextQ = None,
) -> Response:
    """Download the vulnerability view, the server view or the findings (filtered) as CSV or JSON."""
    with ctx.uow() as session:
        return exports.export(
            session,
            view=view,
            fmt=format,
            now=ctx.clock.now(),
            region=region,
            severity=severity,
            status=status,
            server_id=server_id,
            vuln_id=vuln_id,
            q=q,
        )


@router.get("/vulns/{vuln_id}/history", response_model=Page[HistoryOut])
def vuln_history(
    vuln_id: str,
    _p: Reader,
    ctx: Ctx,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[HistoryOut]:
    """Handling history of a vulnerability: ignore / unignore / fix / verify of its findings, the fix
    outcomes, whitelist rules (newest first)."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = fixes.history(session, vuln_id, offset=offset, limit=limit)
        return Page(
            items=[HistoryOut.model_validate(r) for r in rows], total=total, offset=offset, limit=limit
        )


@router.get("/whitelists/vulns", response_model=list[WhitelistOut])
def list_whitelist(_p: Reader, ctx: Ctx) -> list[WhitelistOut]:
    with ctx.uow() as session:
        return [WhitelistOut.model_validate(r) for r in service.list_rules(session)]


@router.post("/whitelists/vulns", response_model=WhitelistOut, status_code=201)
def add_whitelist(body: WhitelistIn, principal: Operator, ctx: Ctx) -> WhitelistOut:
    """Whitelist a vulnerability on all servers (no ``server_ids``) or some: its findings are ignored."""
    with ctx.uow() as session:
        rule, _ = service.create_rule(
            session,
            vuln_id=body.vuln_id,
            server_ids=body.server_ids,
            remark=body.remark,
            actor=principal.username,
            now=ctx.clock.now(),
        )
        return WhitelistOut.model_validate(rule)


@router.delete("/whitelists/vulns/{rule_id}", status_code=204)
def delete_whitelist(rule_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_rule(session, rule_id, actor=principal.username)


@router.get("/vulns/scan-settings", response_model=ScanSettings)
def get_scan_settings(_p: Reader, ctx: Ctx) -> ScanSettings:
    with ctx.uow() as session:
        return schedule.get_settings(session)


@router.put("/vulns/scan-settings", response_model=ScanSettings)
def put_scan_settings(body: ScanSettings, principal: Operator, ctx: Ctx) -> ScanSettings:
    """Scheduled vulnerability scan: on/off and period (1, 3, 7 or 30 days), window 00:00-07:00."""
    with ctx.uow() as session:
        return schedule.put_settings(session, body, actor=principal.username, now=ctx.clock.now())
