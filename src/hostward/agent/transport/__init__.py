"""Agent -> manager transport: outbox first, delete on acknowledgement, backoff with jitter."""

from hostward.agent.transport.backoff import Backoff
from hostward.agent.transport.client import AgentClient, channel_url, pinned_context
from hostward.agent.transport.outbox import Outbox, OutboxItem, OutboxStats
from hostward.agent.transport.sender import OutboxSender, SendResult

__all__ = [
    "AgentClient",
    "Backoff",
    "Outbox",
    "OutboxItem",
    "OutboxSender",
    "OutboxStats",
    "SendResult",
    "channel_url",
    "pinned_context",
]
