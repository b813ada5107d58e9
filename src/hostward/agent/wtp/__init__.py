"""Web tamper protection: lock protected directories, keep a backup, roll tampering back."""

from hostward.agent.wtp.backup import BackupDiskFull, BackupError
from hostward.agent.wtp.config import ProtectedDir, WtpConfig, WtpConfigError, WtpError, validate
from hostward.agent.wtp.guard import NO_IMMUTABLE, WtpGuard, WtpStatus
from hostward.agent.wtp.privileged import NotPrivileged, run_privileged
from hostward.agent.wtp.schedule import Schedule, ScheduleError, Window, is_unprotected, validate_schedule

__all__ = [
    "NO_IMMUTABLE",
    "BackupDiskFull",
    "BackupError",
    "NotPrivileged",
    "ProtectedDir",
    "Schedule",
    "ScheduleError",
    "Window",
    "WtpConfig",
    "WtpConfigError",
    "WtpError",
    "WtpGuard",
    "WtpStatus",
    "is_unprotected",
    "run_privileged",
    "validate",
    "validate_schedule",
]
