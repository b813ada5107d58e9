from __future__ import annotations

import pytest

from hostward.agent.transport.backoff import Backoff


def test_ceiling_doubles_until_cap_and_resets() -> None:
    upper = Backoff(1.0, 30.0, rand=lambda lo, hi: hi)
    assert [upper.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    upper.reset()
    assert upper.next_delay() == 1 and upper.failing


def test_full_jitter_stays_within_zero_and_ceiling() -> None:
    b = Backoff(0.5, 10.0)
    for _ in range(200):
        ceiling = b.ceiling()
        delay = b.next_delay()
        assert 0.0 <= delay <= ceiling <= 10.0


def test_many_attempts_do_not_overflow() -> None:
    b = Backoff(1.0, 60.0, rand=lambda lo, hi: hi)
    b.attempt = 10_000
    assert b.next_delay() == 60.0


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
