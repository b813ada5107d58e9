"""Outbox: persistence across restarts, bounded size with alarm priority, acknowledgement."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from hostward.agent.transport.outbox import Outbox, parse_body
from hostward.wire import AlarmEvent, EventAck, RecordEvent

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def record(i: int, key: str | None = None) -> dict[str, object]:
    event: dict[str, object] = {
        "kind": "record",
        "occurred_at": NOW.isoformat(),
        "topic": "t",
        "data": {"i": i},
    }
    if key:
        event["key"] = key
    return event


def alarm(i: int) -> AlarmEvent:
    return AlarmEvent(key=f"alarm-{i}", occurred_at=NOW, event_class="user_1001", fingerprint=f"f{i}")


def test_put_assigns_key_and_batch_returns_oldest_first(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    k1 = box.put(record(1))
    k2 = box.put(RecordEvent(key="given", occurred_at=NOW, topic="t"))
    assert k1 and k2 == "given"
    items = box.batch(10)
    assert [i.key for i in items] == [k1, "given"]
    assert parse_body(items[0])["data"] == {"i": 1}
    assert box.depth() == 2


def test_put_is_idempotent_per_key(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    box.put(record(1, key="same"))
    box.put(record(2, key="same"))
    assert box.depth() == 1
    assert parse_body(box.batch(5)[0])["data"] == {"i": 1}


def test_invalid_event_is_refused_at_the_source(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    with pytest.raises(ValidationError):
        box.put({"kind": "alarm", "occurred_at": NOW.isoformat()})  # no event_class / fingerprint
    assert box.depth() == 0


def test_survives_restart(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    keys = box.put_many([record(i) for i in range(5)])
    box.ack([EventAck(key=keys[0], status="accepted")])
    box.close()
    again = Outbox.open(tmp_path)
    assert again.depth() == 4
    assert [i.key for i in again.batch(10)] == keys[1:]
    assert again.stats().counters["accepted"] == 1


def test_ack_deletes_accepted_duplicate_and_rejected_and_counts(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    keys = box.put_many([record(i) for i in range(4)])
    summary = box.ack(
        [
            EventAck(key=keys[0], status="accepted"),
            EventAck(key=keys[1], status="duplicate"),
            EventAck(key=keys[2], status="rejected", reason="bad"),
            EventAck(key="not-here", status="accepted"),
        ]
    )
    assert (summary.accepted, summary.duplicate, summary.rejected, summary.unknown) == (1, 1, 1, 1)
    assert [i.key for i in box.batch(10)] == [keys[3]]
    counters = box.stats().counters
    assert counters["accepted"] == 1 and counters["duplicate"] == 1 and counters["rejected"] == 1


def test_bounded_drops_oldest_non_alarm_first(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path, max_events=100)
    box.put(alarm(0))
    keys = box.put_many([record(i) for i in range(99)])
    assert box.depth() == 100
    box.put_many([alarm(1), record(100, key="newest")])
    assert box.depth() == 100
    remaining = [i.key for i in box.batch(200, max_bytes=10**9)]
    assert "alarm-0" in remaining and "alarm-1" in remaining and "newest" in remaining
    assert keys[0] not in remaining and keys[1] not in remaining and keys[2] in remaining
    stats = box.stats()
    assert stats.counters["dropped"] == 2 and stats.alarms == 2


def test_bounded_drops_oldest_alarms_when_only_alarms_remain(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path, max_events=100)
    box.put_many([alarm(i) for i in range(101)])
    remaining = [i.key for i in box.batch(200, max_bytes=10**9)]
    assert len(remaining) == 100 and "alarm-0" not in remaining and "alarm-100" in remaining
    assert box.stats().counters["dropped"] == 1


def test_batch_respects_byte_budget_but_returns_at_least_one(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    box.put_many([record(i) for i in range(10)])
    one = len(box.batch(1)[0].body)
    assert len(box.batch(10, max_bytes=one * 3 + 1)) == 3
    assert len(box.batch(10, max_bytes=1)) == 1


def test_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    box = Outbox.open(state)
    box.put(record(1))
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for name in os.listdir(state):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
