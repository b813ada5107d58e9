"""Base error type carrying a stable machine-readable code."""

from __future__ import annotations


class HostwardError(Exception):
    """Base of every hostward error; ``code`` is stable and shown to API clients."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(HostwardError):
    code = "not_found"
    status = 404


class Conflict(HostwardError):
    code = "conflict"
    status = 409


class Invalid(HostwardError):
    code = "invalid"
    status = 422


class Forbidden(HostwardError):
    code = "forbidden"
    status = 403


class Unauthorized(HostwardError):
    code = "unauthorized"
    status = 401


class ConfigError(HostwardError):
    """Bad configuration: names the file, the key and the reason."""

    code = "config_error"

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason
