"""WTP API types and record shapes.

The configuration model mirrors the agent's limits (``hostward.agent.wtp.config`` and ``.schedule``;
the manager does not import agent code): ≤50 protected directories (absolute, ≤256 characters, not a
system directory, no duplicates), each with ≤10 excluded subdirectories, ≤10 excluded file types (1-10
letters or digits) and ≤50 excluded paths (inside the directory); ≤10 privileged executables; a backup
path that neither contains nor lies inside a protected directory; ≤5 unprotected windows a day, each
≥5 min within one day, no overlaps, ≥5 min apart unless one starts at 00:00 or ends at 23:59.
Every error names the field (``dirs.3.excluded_types``), so a bad request is a 422, never a 500.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hostward.manager.schemas_common import ApiModel

MAX_DIRS = 50
MAX_EXCLUDED_SUBDIRS = 10
MAX_EXCLUDED_TYPES = 10
MAX_EXCLUDED_PATHS = 50
MAX_PRIVILEGED = 10
MAX_PATH_LEN = 256
MAX_WINDOWS = 5
MIN_WINDOW_MINUTES = 5
MIN_GAP_MINUTES = 5
DEFAULT_BACKUP_PATH = "/var/lib/hostward/wtp-backup"
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr")
_TYPE = re.compile(r"^[A-Za-z0-9]{1,10}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_RECORD_TEXT = 4096


def within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _clean(value: str, what: str) -> str:
    if not value or len(value) > MAX_PATH_LEN:
        raise ValueError(f"{what} {value[:40]!r} must be 1..{MAX_PATH_LEN} characters")
    if "\0" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


def _absolute(value: str, what: str) -> str:
    _clean(value, what)
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be an absolute path")
    return posixpath.normpath(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProtectedDirIn(_Strict):
    path: str
    excluded_subdirs: list[str] = Field(default_factory=list, max_length=MAX_EXCLUDED_SUBDIRS)
    excluded_types: list[str] = Field(default_factory=list, max_length=MAX_EXCLUDED_TYPES)
    excluded_paths: list[str] = Field(default_factory=list, max_length=MAX_EXCLUDED_PATHS)
    suspended: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        path = _absolute(value, "path")
        if path in SYSTEM_DIRS:
            raise ValueError(f"{path} is a system directory and cannot be protected")
        return path

    @field_validator("excluded_subdirs", "excluded_paths")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        return [_clean(v, "entry") for v in value]

    @field_validator("excluded_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        out = []
        for t in value:
            if not _TYPE.match(t.lstrip(".")):
                raise ValueError(f"{t[:20]!r} must be 1-10 letters or digits")
            out.append(t.lstrip(".").lower())
        return list(dict.fromkeys(out))

    @model_validator(mode="after")
    def _inside(self) -> ProtectedDirIn:
        for ex in self.excluded_subdirs + self.excluded_paths:
            if ex.startswith("/") and not within(posixpath.normpath(ex), self.path):
                raise ValueError(f"excluded entry {ex} is not inside {self.path}")
        return self


class WindowIn(_Strict):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value[:10]!r}: expected HH:MM (00:00..23:59)")
        return value

    def minutes(self) -> tuple[int, int]:
        return _minutes(self.start), _minutes(self.end)


def _minutes(value: str) -> int:
    return int(value[:2]) * 60 + int(value[3:5])


class ScheduleIn(_Strict):
    enabled: bool = False
    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7], max_length=7)
    windows: list[WindowIn] = Field(default_factory=list, max_length=MAX_WINDOWS)

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if any(d not in range(1, 8) for d in value) or len(set(value)) != len(value):
            raise ValueError("each weekday must be 1 (Monday) .. 7 (Sunday), once")
        return sorted(value)

    @model_validator(mode="after")
    def _windows(self) -> ScheduleIn:
        spans = []
        for w in self.windows:
            start, end = w.minutes()
            if end <= start:
                raise ValueError(f"windows: {w.start}-{w.end} must end after it starts on the same day")
            if end - start < MIN_WINDOW_MINUTES:
                raise ValueError(f"windows: {w.start}-{w.end} is shorter than {MIN_WINDOW_MINUTES} minutes")
            spans.append((start, end, w))
        spans.sort(key=lambda s: s[0])
        for (s1, e1, w1), (s2, _e2, w2) in itertools.pairwise(spans):
            if s2 < e1:
                raise ValueError(f"windows: {w1.start}-{w1.end} and {w2.start}-{w2.end} overlap")
            if s2 - e1 < MIN_GAP_MINUTES and not (s1 == 0 or w2.end == "23:59"):
                raise ValueError(
                    f"windows: {w1.start}-{w1.end} and {w2.start}-{w2.end} are less than "
                    f"{MIN_GAP_MINUTES} minutes apart"
                )
        return self


class WtpConfigIn(_Strict):
    """A server's whole WTP configuration (``PUT /wtp/servers/{id}/config``)."""

    dirs: list[ProtectedDirIn] = Field(default_factory=list, max_length=MAX_DIRS)
    backup_path: str = DEFAULT_BACKUP_PATH
    privileged: list[str] = Field(default_factory=list, max_length=MAX_PRIVILEGED)
    privileged_children: bool = False
    schedule: ScheduleIn = Field(default_factory=ScheduleIn)
    remote_backup: bool = False

    @field_validator("backup_path")
    @classmethod
    def _backup(cls, value: str) -> str:
        return _absolute(value, "backup_path")

    @field_validator("privileged")
    @classmethod
    def _privileged(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_absolute(p, "executable") for p in value))

    @model_validator(mode="after")
    def _overlaps(self) -> WtpConfigIn:
        seen: set[str] = set()
        for i, d in enumerate(self.dirs):
            if d.path in seen:
                raise ValueError(f"dirs[{i}].path: {d.path} is listed twice")
            seen.add(d.path)
            if within(self.backup_path, d.path) or within(d.path, self.backup_path):
                raise ValueError(
                    f"backup_path: {self.backup_path} overlaps protected directory dirs[{i}] {d.path}"
                )
        return self


class WtpConfigOut(WtpConfigIn):
    model_config = ConfigDict(extra="ignore")

    server_id: str
    enabled: bool


def default_config() -> dict[str, Any]:
    return WtpConfigIn().model_dump()


class ServerIdsIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=1000)


class EnableIn(ServerIdsIn):
    quota_id: str | None = Field(default=None, max_length=64)


class PathIn(BaseModel):
    path: str = Field(min_length=1, max_length=MAX_PATH_LEN)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _absolute(value, "path")


class WtpServerOut(BaseModel):
    server_id: str
    server_name: str
    region: str
    agent_status: str
    edition: str | None
    protection_status: str
    wtp_enabled: bool
    state: str
    message: str
    dirs: int
    dirs_suspended: int
    dirs_status: list[dict[str, Any]]
    backup: dict[str, Any]
    remote_backup: bool
    tamper_count: int
    last_tamper_at: datetime | None
    status_at: datetime | None


class WtpEventOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    path: str
    action: str
    outcome: str
    directory: str
    moved_to: str | None
    latency_ms: int | None
    process_pid: int | None
    process_exe: str
    process_user: str
    process_cmdline: str
    occurred_at: datetime
    received_at: datetime


class WtpStatisticsOut(BaseModel):
    servers_protected: int
    servers_configured: int
    tamper_events: int
    tamper_events_24h: int
    servers_tampered: int
    last_tamper_at: datetime | None


class CommandOut(BaseModel):
    server_id: str
    command_id: str


# ---- records from agents -----------------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ProcessData(_Record):
    pid: int | None = Field(default=None, ge=0, le=2**31)
    exe: str = Field(default="", max_length=_RECORD_TEXT)
    uid: int | None = None
    user: str = Field(default="", max_length=64)
    cmdline: str = Field(default="", max_length=8192)


class TamperData(_Record):
    """``wtp_tamper``: ``{path, action, outcome, directory, process, latency_ms, occurred_at, moved_to?}``."""

    path: str = Field(min_length=1, max_length=_RECORD_TEXT)
    # modified | deleted | renamed | created | attributes (stored as sent: an unknown verb is evidence too)
    action: str = Field(min_length=1, max_length=16)
    outcome: str = Field(default="", max_length=16)
    directory: str = Field(default="", max_length=_RECORD_TEXT)
    process: ProcessData | None = None
    latency_ms: float | None = Field(default=None, ge=0, le=10**9)
    moved_to: str | None = Field(default=None, max_length=_RECORD_TEXT)


class DirStatusData(_Record):
    path: str = Field(max_length=_RECORD_TEXT)
    state: str = Field(default="", max_length=32)
    files: int = Field(default=0, ge=0)


class BackupData(_Record):
    files: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)
    built_at: datetime | None = None


class StatusData(_Record):
    """``wtp_status``: ``{state, message, dirs:[{path, state, files}], backup:{files, bytes, built_at}}``."""

    state: str = Field(min_length=1, max_length=32)
    message: str = Field(default="", max_length=2000)
    dirs: list[DirStatusData] = Field(default_factory=list, max_length=MAX_DIRS * 2)
    backup: BackupData = Field(default_factory=BackupData)


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str = Field(min_length=1, max_length=_RECORD_TEXT)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    mode: int = Field(default=0o644, ge=0, le=0o7777)
    uid: int = Field(default=0, ge=0)
    gid: int = Field(default=0, ge=0)


class ManifestIn(BaseModel):
    files: list[ManifestFile] = Field(max_length=1_000_000)


class ManifestOut(BaseModel):
    files: int
    missing: list[str]
