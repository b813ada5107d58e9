"""Push alarm events through the real agent transport, with the credential of an enrolled agent.

Used by the SIGKILL-during-ingest test as a separate process::

    python -m tests.e2e.push_events STATE_DIR WORK_DIR COUNT [BATCH] [DEADLINE_S]

Events go into a real ``Outbox`` (in WORK_DIR, not the agent's own) and leave it through the real
``OutboxSender`` and ``AgentClient`` over the agent channel (HTTPS, pinned CA, the agent's key), exactly
as the agent sends them. Event ``i`` has the idempotency key ``e2e-kill-<i>`` and the fingerprint
``e2e-kill:<i>``. After each acknowledged batch the keys that left the outbox are appended (and fsynced)
to WORK_DIR/acked, so the test knows what the sender saw acknowledged at any moment. Exits 0 and prints
``done {totals as JSON}`` once the outbox is empty, 1 when DEADLINE_S passes first.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from hostward.agent.errors import ManagerUnavailable
from hostward.agent.state import StateStore
from hostward.agent.transport import AgentClient, Backoff, Outbox, OutboxSender, pinned_context
from hostward.wire import AlarmEvent

KEY_PREFIX = "e2e-kill-"
FINGERPRINT_PREFIX = "e2e-kill:"


def _pending(outbox: Outbox) -> set[str]:
    return {item.key for item in outbox.batch(10**6, max_bytes=1 << 40)}


def main(argv: list[str]) -> int:
    state_dir, work_dir, count = Path(argv[0]), Path(argv[1]), int(argv[2])
    batch = int(argv[3]) if len(argv) > 3 else 20
    deadline = time.monotonic() + (float(argv[4]) if len(argv) > 4 else 120.0)
    state = StateStore.open(state_dir, readonly=True)
    creds = state.credentials()
    state.close()
    assert creds is not None, f"{state_dir} is not enrolled"

    work_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox.open(work_dir, max_events=count + 100)
    now = datetime.now(UTC)
    outbox.put_many(
        AlarmEvent(
            key=f"{KEY_PREFIX}{i:05d}",
            occurred_at=now,
            event_class="user_1001",
            title=f"e2e event {i}",
            fingerprint=f"{FINGERPRINT_PREFIX}{i:05d}",
            evidence={"username": f"e2e{i:05d}", "change": "added"},
        )
        for i in range(count)
    )
    sender = OutboxSender(outbox, batch_size=batch)
    client = AgentClient(
        creds.manager_url,
        verify=pinned_context(ca_path=Path(creds.ca_path)),
        agent_key=creds.agent_key,
        timeout=5.0,
    )
    backoff = Backoff(0.1, 0.5)
    totals = {"acked": 0, "accepted": 0, "duplicate": 0, "rejected": 0, "unavailable": 0}
    with open(work_dir / "acked", "a") as acked_file:
        print(f"ready {outbox.depth()}", flush=True)
        while outbox.depth() > 0:
            if time.monotonic() > deadline:
                print(f"deadline passed with {outbox.depth()} events unsent: {totals}", flush=True)
                return 1
            before = _pending(outbox)
            try:
                result = sender.send_once(client)
            except ManagerUnavailable as exc:
                totals["unavailable"] += 1
                print(f"unavailable: {exc}", flush=True)
                time.sleep(backoff.next_delay())
                continue
            backoff.reset()
            acked = sorted(before - _pending(outbox))
            if acked:
                acked_file.write("".join(f"{key}\n" for key in acked))
                acked_file.flush()
                os.fsync(acked_file.fileno())
            totals["acked"] += len(acked)
            totals["accepted"] += result.summary.accepted
            totals["duplicate"] += result.summary.duplicate
            totals["rejected"] += result.summary.rejected
    client.close()
    outbox.close()
    print(f"done {json.dumps(totals)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
