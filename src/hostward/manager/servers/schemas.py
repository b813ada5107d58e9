"""API types for servers and server groups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from hostward.manager.schemas_common import ApiModel


class ServerOut(ApiModel):
    id: str
    name: str
    hostname: str
    ips: list[str]
    os_name: str
    os_version: str
    kernel: str
    arch: str
    agent_version: str
    agent_name: str
    region: str
    server_group_id: str | None
    asset_importance: str
    labels: list[str]
    agent_status: str
    last_seen_at: datetime | None
    enrolled_at: datetime | None
    protection_status: str
    protection_reason: str
    edition: str | None
    quota_id: str | None = None
    policy_group_id: str | None
    policy_version: int
    policy_version_applied: int | None
    scan_result: str
    risk_vulnerabilities: int
    risk_baseline: int
    risk_intrusions: int
    risk_assets: int
    health: dict[str, Any]
    degraded: bool
    open_time: datetime | None
    timezone: str
    created_at: datetime


class ServerIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    ips: list[str] = Field(default_factory=list, max_length=64)
    region: str | None = Field(default=None, max_length=64)


class ServerPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    region: str | None = Field(default=None, max_length=64)
    server_group_id: str | None = None
    asset_importance: str | None = Field(default=None, pattern="^(important|common|test)$")
    labels: list[str] | None = Field(default=None, max_length=20)


class ServerGroupOut(ApiModel):
    id: str
    name: str
    created_at: datetime
    servers: int = 0


class ServerGroupIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
