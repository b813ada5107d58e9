"""Vulnerability API types, and the shape of the agent's ``vuln_findings`` records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hostward.manager.schemas_common import ApiModel

MAX_FINDINGS_PER_RECORD = 500


# ---- agent -> manager ---------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FindingIn(_In):
    """One finding as the agent's matcher reports it (``Finding.to_dict()`` plus its ``key``)."""

    key: str = Field(min_length=1, max_length=4096)
    package: str = Field(min_length=1, max_length=255)
    binaries: list[str] = Field(default_factory=list, max_length=200)
    installed_version: str = Field(default="", max_length=255)
    fixed_version: str | None = Field(default=None, max_length=255)
    ids: list[str] = Field(min_length=1, max_length=200)
    severity: Literal["critical", "high", "medium", "low", "unknown"] = "unknown"
    cvss_score: float | None = Field(default=None, ge=0, le=10)
    cvss_vector: str | None = Field(default=None, max_length=255)
    ecosystem: str = Field(default="", max_length=64)
    manager: str = Field(default="", max_length=16)
    summary: str = Field(default="", max_length=4000)
    fix_command: str | None = Field(default=None, max_length=4000)
    remediation: str = Field(default="", max_length=4000)
    location: str = Field(default="", max_length=4096)


class FindingsRecord(_In):
    """Topic ``vuln_findings``: part ``part`` of ``parts`` of one scan's findings (``total`` distinct)."""

    scan_id: str = Field(min_length=1, max_length=64)
    part: int = Field(ge=0)
    parts: int = Field(ge=1, le=10_000)
    total: int = Field(ge=0)
    findings: list[FindingIn] = Field(default_factory=list, max_length=MAX_FINDINGS_PER_RECORD)
    distro: str | None = Field(default=None, max_length=128)
    packages: int = Field(default=0, ge=0)
    advisories: int = Field(default=0, ge=0)
    suppressed_backports: int = Field(default=0, ge=0)
    feed_issues: list[dict[str, Any]] = Field(default_factory=list, max_length=50)


# ---- API ----------------------------------------------------------------------------------------------


class FeedOut(ApiModel):
    id: str
    name: str
    source: str
    files: int
    advisories: int
    issue_count: int
    issues: list[dict[str, str]]
    seconds: float
    imported_by: str
    imported_at: datetime


class FeedPathIn(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="a file or directory on the manager host")
    name: str | None = Field(default=None, max_length=255)


class FindingOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    vuln_id: str
    ids: list[str]
    cves: list[str]
    package: str
    binaries: list[str]
    installed_version: str
    fixed_version: str | None
    severity: str
    cvss_score: float | None
    cvss_vector: str | None
    ecosystem: str
    manager: str
    summary: str
    fix_command: str | None
    remediation: str
    location: str
    status: str
    whitelist_rule_id: str | None
    handled_by: str | None
    handled_at: datetime | None
    remark: str
    first_seen: datetime
    last_seen: datetime
    fixed_at: datetime | None
    fix_status: str | None = None
    fix_detail: str = ""
    fix_by: str | None = None
    fix_requested_at: datetime | None = None
    fix_finished_at: datetime | None = None


class VulnSummaryOut(BaseModel):
    """Vulnerability view: one row per vulnerability across servers."""

    vuln_id: str
    severity: str
    cvss_score: float | None
    summary: str
    packages: list[str]
    unfixed_servers: int
    ignored: int
    fixed: int
    last_seen: datetime | None


class ServerVulnsOut(BaseModel):
    """Server view: one row per server with vulnerabilities."""

    server_id: str
    server_name: str
    asset_importance: str
    unfixed: int
    ignored: int
    fixed: int
    by_severity: dict[str, int]
    last_scan_at: datetime | None


class HandleIn(BaseModel):
    """``ignore`` / ``unignore``; ``fix`` (one-click fix by the agent, with ``acknowledge``: no backup,
    services may restart); ``verify`` (rescan the findings' servers)."""

    finding_ids: list[str] = Field(min_length=1, max_length=500)
    action: Literal["ignore", "unignore", "fix", "verify"]
    remark: str = Field(default="", max_length=2000)
    acknowledge: bool = False


class FixResultIn(_In):
    """One package of the agent's ``vuln_fix`` record."""

    package: str = Field(max_length=255)
    finding_ids: list[str] = Field(default_factory=list, max_length=500)
    status: Literal["fixed", "failed"]
    detail: str = Field(default="", max_length=4000)
    before: dict[str, str] = Field(default_factory=dict)
    after: dict[str, str] = Field(default_factory=dict)
    reboot_required: bool = False


class FixRecord(_In):
    """Topic ``vuln_fix``: the outcome of one ``vuln_fix`` command, per package."""

    command_id: str = Field(max_length=64)
    results: list[FixResultIn] = Field(max_length=100)


class HistoryOut(ApiModel):
    """One handling-history entry about a vulnerability (from the audit record)."""

    id: str
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    target_name: str
    remark: str
    detail: dict[str, Any]


class WhitelistIn(BaseModel):
    vuln_id: str = Field(min_length=1, max_length=128)
    server_ids: list[str] | None = Field(default=None, max_length=1000, description="None = all servers")
    remark: str = Field(default="", max_length=2000)


class WhitelistOut(ApiModel):
    id: str
    vuln_id: str
    server_ids: list[str] | None
    remark: str
    created_by: str
    created_at: datetime
    hits: int


class ScanSettings(BaseModel):
    """Scheduled vulnerability scan: every ``period_days`` days, in the 00:00-07:00 window (server time)."""

    enabled: bool = True
    period_days: Literal[1, 3, 7, 30] = 7


class VulnStatisticsOut(BaseModel):
    unfixed: int
    critical: int
    by_severity: dict[str, int]
    servers_with_vulnerabilities: int
    handled_today: int
    handled_total: int
    ignored: int
    fixed: int
    advisories: int
    feeds: int
    scans: int
