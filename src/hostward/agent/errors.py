"""Agent errors: one base type with a stable ``code``; transport failures are translated at the edge."""

from __future__ import annotations

from hostward.core.errors import HostwardError


class AgentError(HostwardError):
    """Base of every agent error."""

    code = "agent_error"


class NotEnrolled(AgentError):
    code = "not_enrolled"


class EnrollmentError(AgentError):
    code = "enrollment_failed"


class FingerprintMismatch(EnrollmentError):
    """The manager presented a CA whose SHA-256 differs from the pinned fingerprint."""

    code = "ca_fingerprint_mismatch"


class TransportError(AgentError):
    """The manager could not be reached or answered in a way the agent cannot use."""

    code = "transport_error"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.http_status = status
        self.retryable = retryable


class ManagerUnavailable(TransportError):
    """Network failure, timeout, TLS failure or a 5xx/429: try again later."""

    code = "manager_unavailable"


class AuthRejected(TransportError):
    """401/403: the agent credential is unknown or revoked."""

    code = "auth_rejected"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, status=status, retryable=False)


class RequestRejected(TransportError):
    """Any other 4xx: the request itself is wrong; resending it unchanged will not help."""

    code = "request_rejected"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, status=status, retryable=False)


class AlreadyRunning(AgentError):
    code = "already_running"
