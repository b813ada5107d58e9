"""Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter").

Full jitter spreads a fleet's retries after a manager outage instead of having every agent knock at the
same second.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delay ``uniform(0, min(cap, base * 2**attempt))``; ``reset()`` after a success."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        *,
        rand: Callable[[float, float], float] | None = None,
    ) -> None:
        if base <= 0 or cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        self.base = base
        self.cap = max(cap, base)
        self.attempt = 0
        self._rand = rand or random.uniform

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        # Bound the exponent: 2**attempt overflows float long after the cap is reached.
        return min(self.cap, self.base * 2 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        delay = self._rand(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    @property
    def failing(self) -> bool:
        return self.attempt > 0
