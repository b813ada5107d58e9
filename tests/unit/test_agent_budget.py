from __future__ import annotations

from hostward.agent.budget import BudgetMonitor, Usage

MB = 1024 * 1024


class Probe:
    def __init__(self) -> None:
        self.cpu = 0.0
        self.rss = 50 * MB

    def __call__(self) -> Usage:
        return Usage(self.cpu, self.rss)


def test_cpu_over_budget_degrades_then_recovers_with_hysteresis() -> None:
    probe = Probe()
    mon = BudgetMonitor(cpu_percent=20, rss_cap_bytes=150 * MB, window_s=60, probe=probe)
    assert not mon.check(0.0).cpu_over
    probe.cpu = 5.0  # 5 CPU-seconds in 10 s = 50 %
    state = mon.check(10.0)
    assert state.cpu_over and 49 < state.cpu_percent < 51 and "CPU" in state.reason
    # 17 % averaged over the window: under the budget but above 80 % of it -> still degraded
    for t in range(20, 140, 10):
        probe.cpu += 1.7
        state = mon.check(float(t))
    assert state.cpu_over
    for t in range(140, 260, 10):
        probe.cpu += 0.5
        state = mon.check(float(t))
    assert not state.cpu_over and state.cpu_percent < 16


def test_short_burst_at_start_is_not_judged() -> None:
    probe = Probe()
    mon = BudgetMonitor(cpu_percent=20, window_s=60, probe=probe)
    mon.check(0.0)
    probe.cpu = 2.0
    assert not mon.check(2.0).cpu_over


def test_rss_over_cap() -> None:
    probe = Probe()
    mon = BudgetMonitor(rss_cap_bytes=100 * MB, probe=probe)
    assert not mon.check(0.0).rss_over
    probe.rss = 101 * MB
    state = mon.check(5.0)
    assert state.rss_over and "memory" in state.reason


def test_real_process_probe() -> None:
    state = BudgetMonitor().check(0.0)
    assert state.rss_bytes > 10 * MB and state.cpu_percent == 0.0
