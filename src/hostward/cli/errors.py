"""Errors the CLI reports as one line on stderr with a non-zero exit status."""

from __future__ import annotations

from hostward.core.errors import HostwardError


class CliError(HostwardError):
    """A failure to report to the user: ``message`` is the one line shown, ``exit_code`` the status."""

    code = "cli_error"

    def __init__(self, message: str, *, exit_code: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.exit_code = exit_code


class ApiError(CliError):
    """The manager answered with an error envelope (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


class NotLoggedIn(CliError):
    code = "not_logged_in"
