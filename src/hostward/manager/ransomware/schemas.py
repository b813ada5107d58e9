"""Ransomware prevention API types and record shapes.

Policy limits mirror the agent's (``hostward.agent.ransomware.policy``): ≤20 protected and ≤20 excluded
directories (absolute), protected file types of 1-10 letters or digits, action ``alarm`` or
``alarm_and_isolate``, bait files on/off, snapshots every ``snapshot_interval_h`` hours keeping
``snapshot_keep``.
"""

from __future__ import annotations

import posixpath
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hostward.manager.schemas_common import ApiModel

MAX_PROTECTED_DIRS = 20
MAX_EXCLUDED_DIRS = 20
MAX_TYPES = 200
MAX_PATH_LEN = 256
DEFAULT_TYPES = (
    "doc", "docx", "xls", "xlsx", "ppt", "pptx", "pdf", "txt", "csv", "sql", "db", "jpg", "jpeg", "png",
    "zip", "tar", "gz", "7z", "rar", "bak", "html", "php", "py", "java", "c", "js", "json", "xml",
)  # fmt: skip
EDITIONS = ("premium", "wtp")
_TYPE = re.compile(r"^[a-z0-9]{1,10}$")
# the agent names snapshots by time (``20260101T120000.000000Z``)
SNAPSHOT_ID = r"^[A-Za-z0-9._:+-]{1,64}$"


def _absolute(value: str) -> str:
    if not value or len(value) > MAX_PATH_LEN or not value.startswith("/"):
        raise ValueError(f"{value[:40]!r} must be an absolute path of at most {MAX_PATH_LEN} characters")
    if any(ord(c) < 32 for c in value):
        raise ValueError("paths must not contain control characters")
    return posixpath.normpath(value)


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    protected_dirs: list[str] = Field(min_length=1, max_length=MAX_PROTECTED_DIRS)
    excluded_dirs: list[str] = Field(default_factory=list, max_length=MAX_EXCLUDED_DIRS)
    file_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TYPES), min_length=1, max_length=MAX_TYPES
    )
    action: Literal["alarm", "alarm_and_isolate"] = "alarm"
    bait: bool = True
    snapshot_interval_h: int = Field(default=24, ge=1, le=24 * 30)
    snapshot_keep: int = Field(default=7, ge=1, le=100)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ord(c) < 32 for c in value):
            raise ValueError("name must be printable text")
        return value

    @field_validator("protected_dirs", "excluded_dirs")
    @classmethod
    def _dirs(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_absolute(p) for p in value))

    @field_validator("file_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        out = []
        for t in value:
            t = t.lstrip(".").lower()
            if not _TYPE.match(t):
                raise ValueError(f"{t[:20]!r} must be 1-10 letters or digits")
            out.append(t)
        return list(dict.fromkeys(out))

    @model_validator(mode="after")
    def _not_protected_and_excluded(self) -> PolicyIn:
        both = set(self.protected_dirs) & set(self.excluded_dirs)
        if both:
            raise ValueError(f"excluded_dirs: {sorted(both)[0]} is also a protected directory")
        return self


class PolicyOut(ApiModel):
    id: str
    name: str
    protected_dirs: list[str]
    excluded_dirs: list[str]
    file_types: list[str]
    action: str
    bait: bool
    snapshot_interval_h: int
    snapshot_keep: int
    servers: int = 0
    created_at: datetime
    updated_at: datetime


class EnableIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=1000)
    policy_id: str = Field(min_length=1, max_length=64)


class ServerIdsIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=1000)


class RestoreIn(BaseModel):
    server_id: str = Field(min_length=1, max_length=64)
    snapshot_id: str = Field(pattern=SNAPSHOT_ID)
    # only what lies under this path (default: all protected directories)
    path: str | None = Field(default=None, max_length=MAX_PATH_LEN)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return _absolute(value) if value is not None else None


class RestoreOut(BaseModel):
    server_id: str
    snapshot_id: str
    command_id: str


class RansomwareServerOut(BaseModel):
    server_id: str
    server_name: str
    region: str
    agent_status: str
    edition: str | None
    enabled: bool
    policy_id: str | None
    policy_name: str | None
    state: str
    message: str
    baits: int
    snapshots: int
    last_snapshot_at: datetime | None
    status_at: datetime | None


class SnapshotOut(BaseModel):
    id: str
    server_id: str
    server_name: str
    snapshot_id: str
    taken_at: datetime
    files: int
    bytes: int
    received_at: datetime


# ---- records from agents -----------------------------------------------------------------------------


class StatusData(BaseModel):
    """``ransomware_status``: ``{state, message, baits}`` (``baits`` a count or the list of bait paths)."""

    model_config = ConfigDict(extra="ignore")

    state: str = Field(min_length=1, max_length=32)
    message: str = Field(default="", max_length=2000)
    baits: int | list[str] = 0


class SnapshotData(BaseModel):
    """``ransomware_snapshot``: ``{snapshot_id, taken_at, files, bytes, kept?}``."""

    model_config = ConfigDict(extra="ignore")

    snapshot_id: str = Field(pattern=SNAPSHOT_ID)
    taken_at: datetime
    files: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)
    # the snapshots the agent still has after its retention ran (older ones cannot be restored)
    kept: list[str] | None = Field(default=None, max_length=1000)
