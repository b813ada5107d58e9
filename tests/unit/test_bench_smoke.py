"""The benchmarks under bench/ still run end to end (tiny numbers): they cannot rot unnoticed.

The numbers themselves are not asserted here (the machine running the tests is not the benchmark
machine); a run must complete, exit 0 and print its SUMMARY line with a verdict.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{script} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def test_manager_load_smoke() -> None:
    out = _run(
        "manager_load.py",
        *("--db", "sqlite", "--agents", "20", "--interval", "2", "--warmup", "2", "--duration", "5"),
        *("--poll-wait", "3", "--event-agents", "2", "--event-batch", "20"),
        timeout=240,
    )
    summary = re.search(
        r"^SUMMARY manager_load db=sqlite agents=20 enrolled=(\d+) .* result=(PASS|FAIL)", out, re.M
    )
    assert summary, out
    assert summary.group(1) == "20", out
    assert "heartbeat latency  p50" in out
    stored = re.search(r"stored occurrences \(DB\) (\d+) \(matches accepted acks", out)
    assert stored and int(stored.group(1)) > 0, out


def test_agent_footprint_smoke() -> None:
    out = _run("agent_footprint.py", "--duration", "10", "--settle", "3", timeout=240)
    assert re.search(
        r"^SUMMARY agent_footprint rss_mean=[\d.]+MB rss_max=[\d.]+MB cpu_mean=[\d.]+% .* result=(PASS|FAIL)",
        out,
        re.M,
    ), out
    assert "manager sees agent  online" in out, out
