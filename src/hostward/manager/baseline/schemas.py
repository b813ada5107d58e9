"""Baseline API types, and the shape of the agent's baseline, complexity and weak-password records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hostward.manager.schemas_common import ApiModel

MAX_RESULTS_PER_RECORD = 500


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CheckResultIn(_In):
    """``CheckResult.to_dict()`` of the agent's baseline engine."""

    policy_id: str = Field(min_length=1, max_length=128)
    policy_name: str = Field(default="", max_length=255)
    check_id: str = Field(min_length=1, max_length=128)
    title: str = Field(default="", max_length=512)
    severity: Literal["critical", "high", "medium", "low"] = "medium"
    result: Literal["passed", "failed", "not_applicable"]
    reason: str = Field(default="", max_length=4000)
    rationale: str = Field(default="", max_length=8000)
    remediation: str = Field(default="", max_length=8000)
    description: str = Field(default="", max_length=8000)
    fixable: bool = False


class BaselineRecord(_In):
    """Topic ``baseline_results``: part ``part`` of ``parts`` of one run (``total`` results)."""

    scan_id: str = Field(min_length=1, max_length=64)
    part: int = Field(ge=0)
    parts: int = Field(ge=1, le=1000)
    total: int = Field(ge=0)
    results: list[CheckResultIn] = Field(default_factory=list, max_length=MAX_RESULTS_PER_RECORD)
    seconds: float = Field(default=0.0, ge=0)
    errors: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    enabled: bool = True


class ComplexityItemIn(_In):
    id: str = Field(max_length=32)
    result: Literal["passed", "failed"]
    value: str = Field(default="", max_length=255)
    suggestion: str = Field(default="", max_length=1000)


class ComplexityRecord(_In):
    """Topic ``password_complexity``: ``ComplexityReport.to_dict()``."""

    scan_id: str = Field(default="", max_length=64)
    module: str | None = Field(default=None, max_length=32)
    source: str = Field(default="", max_length=255)
    passed: bool
    items: list[ComplexityItemIn] = Field(default_factory=list, max_length=32)


class WeakAccountIn(_In):
    username: str = Field(min_length=1, max_length=128)
    account_type: str = Field(default="", max_length=16)
    reasons: list[str] = Field(default_factory=list, max_length=8)


class WeakpassRecord(_In):
    """Topic ``weak_passwords``: ``WeakpassReport.to_dict()`` (user names and reason categories only)."""

    scan_id: str = Field(default="", max_length=64)
    status: str = Field(max_length=16)
    detail: str = Field(default="", max_length=2000)
    accounts_total: int = Field(default=0, ge=0)
    accounts_checked: int = Field(default=0, ge=0)
    weak: list[WeakAccountIn] = Field(default_factory=list, max_length=5000)
    hashes: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    complete: bool = True


# ---- API ----------------------------------------------------------------------------------------------


class CheckSummaryOut(BaseModel):
    """One check across servers."""

    policy_id: str
    policy_name: str
    check_id: str
    title: str
    severity: str
    failed: int
    ignored: int
    passed: int
    not_applicable: int
    servers: int
    last_checked: datetime | None


class ResultOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    policy_id: str
    policy_name: str
    check_id: str
    title: str
    severity: str
    result: str
    reason: str
    rationale: str
    remediation: str
    description: str
    ignored: bool
    handled_by: str | None
    handled_at: datetime | None
    remark: str
    verifying: bool = False
    checked_at: datetime
    fixable: bool = False
    fix_status: str | None = None
    fix_detail: str = ""
    fix_by: str | None = None
    fix_requested_at: datetime | None = None


class WeakPasswordOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    username: str
    account_type: str
    reasons: list[str]
    first_seen: datetime
    last_seen: datetime


class ComplexityOut(BaseModel):
    server_id: str
    server_name: str
    module: str
    source: str
    passed: bool | None
    ignored: bool
    items: list[dict[str, Any]]
    checked_at: datetime | None


class WeakpassStatusOut(BaseModel):
    server_id: str
    server_name: str
    status: str
    detail: str
    complete: bool
    accounts: int
    hashes: int
    seconds: float
    weak: int
    checked_at: datetime | None


class BaselineHandleIn(BaseModel):
    """``fix`` (checks with ``fixable``: file permissions / ownership) needs ``acknowledge``."""

    result_ids: list[str] = Field(min_length=1, max_length=500)
    action: Literal["ignore", "unignore", "verify", "fix"]
    remark: str = Field(default="", max_length=2000)
    acknowledge: bool = False


class BaselineFixResultIn(_In):
    policy_id: str = Field(max_length=128)
    check_id: str = Field(max_length=128)
    result_ids: list[str] = Field(default_factory=list, max_length=500)
    status: Literal["fixed", "failed"]
    detail: str = Field(default="", max_length=4000)
    result: CheckResultIn | None = None


class BaselineFixRecord(_In):
    """Topic ``baseline_fix``: the outcome of one ``baseline_fix`` command, per check."""

    command_id: str = Field(max_length=64)
    results: list[BaselineFixResultIn] = Field(max_length=200)


class ComplexityHandleIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=500)
    action: Literal["ignore", "unignore"]


class BaselineStatisticsOut(BaseModel):
    servers_scanned: int
    checks: int
    failed: int
    ignored: int
    passed: int
    not_applicable: int
    pass_rate: float | None
    servers_with_failed: int
    weak_passwords: int
    servers_with_weak_passwords: int
    complexity_failed: int
    top_servers: list[dict[str, Any]]
