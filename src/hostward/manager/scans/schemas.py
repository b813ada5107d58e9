"""API types for scans."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from hostward.manager.schemas_common import ApiModel

ScanKind = Literal[
    "full",
    "asset",
    "vulnerability",
    "baseline",
    "weak_password",
    "malware",
    "fim",
    "malware_full",
    "malware_custom",
    "webshell",
]
ScanStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
ScanTrigger = Literal["enable", "schedule", "manual"]

MAX_SERVERS_PER_REQUEST = 1000


class ScanOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    kind: str
    trigger: str
    status: str
    progress: int
    detail: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeout_at: datetime
    paths: list[str] | None = None


class ScanCreate(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=MAX_SERVERS_PER_REQUEST)
    kind: ScanKind = "full"
    # malware_custom: 1-20 absolute paths (directories or files) to scan.
    paths: list[str] | None = Field(default=None, max_length=20)


class ScanItems(BaseModel):
    items: list[ScanOut]
