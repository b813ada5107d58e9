"""Budget watchdog (SPEC §4.8): CPU averaged over a window, RSS against a hard cap.

Over the CPU budget the agent reports itself degraded and pauses heavy work (scans throttle, heavy
detectors stop being fed) until it is back under 80% of the budget. Over the RSS cap it exits with
``EXIT_RSS_CAP`` so that systemd restarts it: a restart is the only reliable way to give memory back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psutil

EXIT_RSS_CAP = 75  # EX_TEMPFAIL: "try again"; the unit restarts the agent on it
RECOVER_RATIO = 0.8
MIN_WINDOW_S = 10.0


@dataclass(frozen=True)
class Usage:
    """Cumulative CPU seconds (user + system) and current RSS of the agent process."""

    cpu_seconds: float
    rss_bytes: int


Probe = Callable[[], Usage]


def process_probe() -> Probe:
    proc = psutil.Process()

    def sample() -> Usage:
        times = proc.cpu_times()
        return Usage(times.user + times.system, proc.memory_info().rss)

    return sample


@dataclass(frozen=True)
class BudgetState:
    cpu_percent: float
    rss_bytes: int
    cpu_over: bool
    rss_over: bool

    @property
    def reason(self) -> str:
        if self.rss_over:
            return f"memory {self.rss_bytes // (1024 * 1024)} MB over the cap"
        if self.cpu_over:
            return f"CPU {self.cpu_percent:.1f}% over budget: heavy work paused"
        return ""


class BudgetMonitor:
    """Feed it ``check(monotonic_now)`` every few seconds; it keeps a sliding window of samples."""

    def __init__(
        self,
        cpu_percent: float = 20.0,
        rss_cap_bytes: int = 150 * 1024 * 1024,
        window_s: float = 60.0,
        probe: Probe | None = None,
    ) -> None:
        self.cpu_budget = cpu_percent
        self.rss_cap = rss_cap_bytes
        self.window_s = window_s
        self._probe = probe or process_probe()
        self._samples: deque[tuple[float, float]] = deque()
        self.state = BudgetState(0.0, 0, False, False)

    def check(self, now: float) -> BudgetState:
        usage = self._probe()
        self._samples.append((now, usage.cpu_seconds))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        first_t, first_cpu = self._samples[0]
        elapsed = now - first_t
        cpu = (usage.cpu_seconds - first_cpu) / elapsed * 100.0 if elapsed > 0 else 0.0
        cpu = max(cpu, 0.0)
        # Decide only on a long enough window: start-up (imports, first scan) is a legitimate burst.
        judged = elapsed >= min(MIN_WINDOW_S, self.window_s)
        cpu_over = self.state.cpu_over
        if judged:
            if cpu > self.cpu_budget:
                cpu_over = True
            elif cpu < self.cpu_budget * RECOVER_RATIO:
                cpu_over = False
        self.state = BudgetState(
            cpu_percent=round(cpu, 2),
            rss_bytes=usage.rss_bytes,
            cpu_over=cpu_over,
            rss_over=usage.rss_bytes > self.rss_cap,
        )
        return self.state
