"""Web tamper protection configuration: protected directories, backup path, privileged processes.

Limits follow the product notes (§6): ≤50 protected directories, each with ≤10 excluded
subdirectories, ≤10 excluded file types and ≤50 excluded paths; ≤10 privileged processes; a local
backup path that neither lies inside nor contains a protected directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from hostward.agent.errors import AgentError
from hostward.agent.wtp.schedule import Schedule, validate_schedule

MAX_DIRS = 50
MAX_EXCLUDED_SUBDIRS = 10
MAX_EXCLUDED_TYPES = 10
MAX_EXCLUDED_PATHS = 50
MAX_PRIVILEGED = 10
MAX_PATH_LEN = 256
_TYPE = re.compile(r"^[A-Za-z0-9]{1,10}$")
# protecting these would lock the host itself
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr")


class WtpError(AgentError):
    code = "wtp_error"


class WtpConfigError(WtpError):
    """Invalid configuration; the message names the field and the reason."""

    code = "wtp_invalid_config"


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@dataclass
class ProtectedDir:
    """One protected directory and what inside it is left alone."""

    path: str
    excluded_subdirs: list[str] = field(default_factory=list)
    excluded_types: list[str] = field(default_factory=list)
    excluded_paths: list[str] = field(default_factory=list)
    suspended: bool = False

    def is_excluded(self, path: str) -> bool:
        """Whether ``path`` (absolute, inside this directory) is neither locked nor backed up."""
        if not _within(path, self.path) or path == self.path:
            return False
        rel = os.path.relpath(path, self.path)
        for sub in self.excluded_subdirs:
            if _within(rel, sub.strip("/")) or _within(path, self._abs(sub)):
                return True
        for ex in self.excluded_paths:
            if _within(path, self._abs(ex)):
                return True
        name = os.path.basename(path)
        if "." in name:
            ext = name.rsplit(".", 1)[1].lower()
            if ext in {t.lower() for t in self.excluded_types}:
                return True
        return False

    def _abs(self, p: str) -> str:
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(self.path, p))


@dataclass
class WtpConfig:
    """The whole WTP configuration of one server."""

    dirs: list[ProtectedDir] = field(default_factory=list)
    backup_path: str = "/var/lib/hostward/wtp-backup"
    privileged: list[str] = field(default_factory=list)
    privileged_children: bool = False
    schedule: Schedule = field(default_factory=Schedule)
    enabled: bool = True

    def dir_for(self, path: str) -> ProtectedDir | None:
        """The protected directory holding ``path`` (the deepest one)."""
        best: ProtectedDir | None = None
        for d in self.dirs:
            if _within(path, d.path) and (best is None or len(d.path) > len(best.path)):
                best = d
        return best


def _check_list(where: str, items: list[str], limit: int) -> None:
    if len(items) > limit:
        raise WtpConfigError(f"{where}: at most {limit} entries allowed, got {len(items)}")
    for item in items:
        if not item or len(item) > MAX_PATH_LEN:
            raise WtpConfigError(f"{where}: entry {item!r} must be 1..{MAX_PATH_LEN} characters")


def validate(cfg: WtpConfig) -> WtpConfig:
    """Check limits and overlaps; returns ``cfg`` with normalised paths or raises ``WtpConfigError``."""
    if len(cfg.dirs) > MAX_DIRS:
        raise WtpConfigError(f"dirs: at most {MAX_DIRS} protected directories, got {len(cfg.dirs)}")
    seen: set[str] = set()
    for i, d in enumerate(cfg.dirs):
        where = f"dirs[{i}]"
        if not os.path.isabs(d.path) or len(d.path) > MAX_PATH_LEN:
            raise WtpConfigError(f"{where}.path: {d.path!r} must be an absolute path ≤{MAX_PATH_LEN} chars")
        d.path = os.path.normpath(d.path)
        if d.path in SYSTEM_DIRS:
            raise WtpConfigError(f"{where}.path: {d.path} is a system directory and cannot be protected")
        if d.path in seen:
            raise WtpConfigError(f"{where}.path: {d.path} is listed twice")
        seen.add(d.path)
        _check_list(f"{where}.excluded_subdirs", d.excluded_subdirs, MAX_EXCLUDED_SUBDIRS)
        _check_list(f"{where}.excluded_paths", d.excluded_paths, MAX_EXCLUDED_PATHS)
        if len(d.excluded_types) > MAX_EXCLUDED_TYPES:
            raise WtpConfigError(f"{where}.excluded_types: at most {MAX_EXCLUDED_TYPES} entries allowed")
        for t in d.excluded_types:
            if not _TYPE.match(t.lstrip(".")):
                raise WtpConfigError(f"{where}.excluded_types: {t!r} must be 1-10 letters or digits")
        d.excluded_types = [t.lstrip(".").lower() for t in d.excluded_types]
        for ex in d.excluded_paths + d.excluded_subdirs:
            if os.path.isabs(ex) and not _within(os.path.normpath(ex), d.path):
                raise WtpConfigError(f"{where}: excluded entry {ex} is not inside {d.path}")
    if not os.path.isabs(cfg.backup_path):
        raise WtpConfigError(f"backup_path: {cfg.backup_path!r} must be an absolute path")
    cfg.backup_path = os.path.normpath(cfg.backup_path)
    for i, d in enumerate(cfg.dirs):
        if _within(cfg.backup_path, d.path) or _within(d.path, cfg.backup_path):
            raise WtpConfigError(
                f"backup_path: {cfg.backup_path} overlaps protected directory dirs[{i}] {d.path}"
            )
    _check_list("privileged", cfg.privileged, MAX_PRIVILEGED)
    for p in cfg.privileged:
        if not os.path.isabs(p):
            raise WtpConfigError(f"privileged: {p!r} must be an absolute executable path")
    validate_schedule(cfg.schedule)
    return cfg
