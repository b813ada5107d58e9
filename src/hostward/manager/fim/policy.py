"""The ``file_protection`` policy: what file integrity monitoring watches on a server.

Setting names are the ones the agent's FIM reads (``hostward.agent.detectors.fim.fim_policy``):
``important_files`` switches the default set of the reference (key binaries, account files, sudo, ssh,
cron, systemd units), ``directories`` are the operator's monitored directories (at most 50, each with
ignore globs and the operations that raise alarms), ``realtime`` the inotify/fanotify watcher and
``rate_bytes_per_s`` the hashing I/O limit. Paths are validated here, so the agent never receives one
it would refuse.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

POLICY_KEY = "file_protection"
FIM_EDITIONS = ("enterprise", "premium", "wtp")
Operation = Literal["create", "delete", "move", "modify", "attributes"]
OPERATIONS: tuple[Operation, ...] = ("create", "delete", "move", "modify", "attributes")
MAX_DIRECTORIES = 50
MAX_EXTRA_FILES = 50
MAX_IGNORE_GLOBS = 50
MAX_PATH = 4096
# Pseudo file systems: their "files" change all the time and hashing them can block or never end.
_REFUSED_TREES = ("/proc", "/sys", "/dev", "/run")
DEFAULT_RATE = 32 * 1024 * 1024


def clean_path(value: str, what: str = "path") -> str:
    """An absolute, normalised path; raises ValueError with the reason otherwise."""
    if any(c in value for c in "\0\n\r"):
        raise ValueError(f"{what} contains a NUL or line break")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8") from None
    value = value.strip(" \t")
    if not value:
        raise ValueError(f"{what} is empty")
    if len(value) > MAX_PATH:
        raise ValueError(f"{what} is longer than {MAX_PATH} characters")
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} is not absolute")
    if any(part == ".." for part in value.split("/")):
        raise ValueError(f"{what} {value!r} contains '..'")
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


def _monitorable(path: str, what: str) -> str:
    path = clean_path(path, what)
    if path == "/":
        raise ValueError(f"{what}: the whole file system cannot be monitored; choose directories")
    for tree in _REFUSED_TREES:
        if path == tree or path.startswith(tree + "/"):
            raise ValueError(f"{what} {path!r} is on a pseudo file system ({tree}) and cannot be monitored")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MonitoredDirectory(_Strict):
    """One operator directory."""

    path: str = Field(max_length=MAX_PATH, description="absolute path of a directory (or file)")
    alias: str = Field(default="", max_length=64, description="a name shown on the FIM page")
    recursive: bool = Field(default=True, description="include subdirectories")
    ignore: list[str] = Field(
        default_factory=list,
        max_length=MAX_IGNORE_GLOBS,
        description="globs of paths or names to skip, e.g. *.log or /var/www/cache",
    )
    operations: list[Operation] = Field(
        default_factory=lambda: list(OPERATIONS),
        min_length=1,
        description="which changes raise alarms: create, delete, move, modify, attributes",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _monitorable(value, "directory path")

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, value: list[str]) -> list[str]:
        out = []
        for glob in value:
            glob = glob.strip()
            if not glob or len(glob) > 255 or "\0" in glob:
                raise ValueError(f"ignore glob {glob!r}: 1-255 characters, no NUL")
            out.append(glob)
        return list(dict.fromkeys(out))

    @field_validator("operations")
    @classmethod
    def _operations(cls, value: list[Operation]) -> list[Operation]:
        return list(dict.fromkeys(value))


class FileProtectionSettings(_Strict):
    """File integrity monitoring settings of a policy group (enterprise, premium, WTP)."""

    important_files: bool = Field(
        default=True,
        title="File integrity of important files",
        description="monitor the default set: /bin and /usr/bin login, ls, ps, bash, passwd, top, killall, "
        "ssh, wget, curl; /etc/passwd, shadow, group, sudoers*, ssh/sshd_config, crontab, cron.d; "
        "/root/.ssh/authorized_keys; /var/spool/cron; /etc/systemd/system (alarm fileprotect_0002)",
    )
    extra_files: list[str] = Field(
        default_factory=list,
        max_length=MAX_EXTRA_FILES,
        title="More important files",
        description="absolute paths, one per line, treated like the default set",
    )
    directories: list[MonitoredDirectory] = Field(
        default_factory=list,
        max_length=MAX_DIRECTORIES,
        title="Monitored directories",
        description='at most 50: [{"path": "/var/www", "recursive": true, "ignore": ["*.log"], '
        '"operations": ["create", "delete", "move", "modify", "attributes"]}] (alarm fileprotect_0004)',
    )
    realtime: bool = Field(
        default=True,
        title="Real-time monitoring",
        description="inotify watches; off = changes are found by the daily check only",
    )
    fanotify: bool = Field(
        default=True,
        title="Identify the modifying process",
        description="fanotify (root only) names the process that wrote a file",
    )
    rate_bytes_per_s: int | None = Field(
        default=DEFAULT_RATE,
        ge=1024 * 1024,
        le=4 * 1024**3,
        title="Hashing read limit (bytes per second)",
        description="throttles baselines and checks; empty = unlimited",
    )
    workers: int = Field(default=1, ge=1, le=4, title="Hashing threads")

    @field_validator("extra_files")
    @classmethod
    def _extra_files(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_monitorable(p, "important file path") for p in value))

    @model_validator(mode="after")
    def _unique_directories(self) -> FileProtectionSettings:
        seen: set[str] = set()
        for item in self.directories:
            if item.path in seen:
                raise ValueError(f"directory {item.path!r} is listed twice")
            seen.add(item.path)
        return self
