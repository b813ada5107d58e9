"""Moves events from the outbox to the manager, one batch per call; the caller owns the retry timing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hostward.agent.errors import ManagerUnavailable, RequestRejected
from hostward.agent.transport.client import AgentClient
from hostward.agent.transport.outbox import DEFAULT_MAX_BATCH_BYTES, AckSummary, Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    sent: int
    summary: AckSummary
    remaining: int


class OutboxSender:
    """Send the oldest batch; on a rejected request, halve the batch until the bad event is alone."""

    def __init__(
        self, outbox: Outbox, batch_size: int = 500, max_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> None:
        self.outbox = outbox
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self._limit = batch_size

    def send_once(self, client: AgentClient) -> SendResult:
        """Send one batch. Raises ``ManagerUnavailable``/``AuthRejected`` for the caller to back off.

        Without an exception the outbox made progress (events acknowledged or discarded, or the batch
        narrowed), so the caller may call again at once while events remain.
        """
        items = self.outbox.batch(self._limit, self.max_bytes)
        if not items:
            return SendResult(0, AckSummary(), 0)
        try:
            response = client.post_events([item.body for item in items])
        except RequestRejected as exc:
            # The whole request was refused (size limit, schema drift). Narrow it down instead of
            # retrying the same poison batch forever; a single refused event is dropped and counted.
            if len(items) > 1:
                self._limit = max(1, len(items) // 2)
                log.warning("event batch of %d refused (%s); retrying with %d", len(items), exc, self._limit)
                return SendResult(0, AckSummary(), self.outbox.depth())
            self.outbox.discard([items[0].key], f"refused by the manager: {exc}")
            return SendResult(0, AckSummary(rejected=1), self.outbox.depth())
        summary = self.outbox.ack(response.acks)
        if summary.accepted + summary.duplicate + summary.rejected == 0:
            # A 200 that acknowledges nothing would make the caller resend the same batch in a tight loop.
            raise ManagerUnavailable(f"the manager acknowledged none of {len(items)} events")
        if self._limit < self.batch_size:
            self._limit = min(self.batch_size, self._limit * 2)
        return SendResult(len(items), summary, self.outbox.depth())
