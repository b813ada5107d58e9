"""Where a queued agent command stands, as the domains that wait on one see it (a requested unblock,
file restore or one-click fix): still pending, or refused by the agent (failed, or expired before the
agent took it) with the reason to show."""

from __future__ import annotations

from sqlalchemy.orm import Session

from hostward.manager.agentlink.models import AgentCommand

PENDING_STATUSES = ("queued", "delivered")
REFUSED_STATUSES = ("failed", "expired")


def command_of(session: Session, command_id: str | None) -> AgentCommand | None:
    return session.get(AgentCommand, command_id) if command_id else None


def is_pending(command: AgentCommand | None) -> bool:
    """The agent has not answered yet (it may still take or run the command)."""
    return command is not None and command.status in PENDING_STATUSES


def refusal(command: AgentCommand | None) -> str:
    """``agent: <reason>`` when the command failed or expired, else ""."""
    if command is None or command.status not in REFUSED_STATUSES:
        return ""
    return f"agent: {command.detail or command.status}"
