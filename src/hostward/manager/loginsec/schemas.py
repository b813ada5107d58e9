"""API types of login security."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from hostward.manager.schemas_common import ApiModel, ErrorInfo


class BlockedIpOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    source: str
    network: str
    service: str
    status: str
    times_blocked: int
    attempts: int
    first_blocked_at: datetime
    latest_blocked_at: datetime
    expires_at: datetime | None
    reason: str
    users: list[str]
    unblocked_at: datetime | None
    unblock_reason: str
    unblocked_by: str | None
    unblock_error: str = ""


class UnblockIn(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000)


class ResultOut(BaseModel):
    id: str
    ok: bool
    error: ErrorInfo | None = None


class ResultsOut(BaseModel):
    results: list[ResultOut]


class LoginWhitelistOut(ApiModel):
    id: str
    server_ids: list[str] | None
    ip_text: str
    networks: list[str]
    username: str | None
    remarks: str
    source_alarm_id: str | None
    created_by: str
    created_at: datetime


class LoginWhitelistIn(BaseModel):
    ips: list[str] | str = Field(
        description="addresses, CIDRs or ranges (a-b), IPv4 or IPv6; a list or comma-separated text"
    )
    server_ids: list[str] | None = Field(default=None, max_length=10000, description="omit for all servers")
    username: str | None = Field(default=None, max_length=64)
    remarks: str = Field(default="", max_length=1000)


class SshEntryIn(BaseModel):
    network: str = Field(max_length=100, description="one address or CIDR")
    enabled: bool = True
    remarks: str = Field(default="", max_length=255)


class SshEntryOut(ApiModel):
    id: str
    network: str
    enabled: bool
    remarks: str
    created_by: str
    created_at: datetime


class SshWhitelistIn(BaseModel):
    items: list[SshEntryIn] = Field(max_length=100)


class SshWhitelistOut(BaseModel):
    server_id: str
    server_name: str
    max_entries: int
    items: list[SshEntryOut]


class SshWhitelistRow(SshEntryOut):
    server_id: str
    server_name: str = ""


class StringList(BaseModel):
    items: list[str] = Field(max_length=1000)


class StringListOut(BaseModel):
    items: list[str]
    max_items: int


class GeoRow(BaseModel):
    network: str = Field(max_length=100)
    location: str = Field(max_length=128)


class GeolocationIn(BaseModel):
    mmdb_path: str = Field(default="", max_length=1024)
    table: list[GeoRow] = Field(default_factory=list, max_length=1000)


class LoginAlarmActionIn(BaseModel):
    alarm_ids: list[str] = Field(min_length=1, max_length=1000)
    action: Literal["add_to_login_whitelist", "remove_from_login_whitelist", "unblock"]
    remark: str = Field(default="", max_length=2000)


class LoginAlarmResult(BaseModel):
    alarm_id: str
    ok: bool
    detail: str = ""
    error: ErrorInfo | None = None


class LoginAlarmActionOut(BaseModel):
    results: list[LoginAlarmResult]
