"""The risk benchmarks (bench/vulns_match.py, baseline_run.py, weakpass.py) still run end to end on
tiny inputs; the numbers are not asserted here, only that each run completes with its SUMMARY line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, (
        f"{script} exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    return done.stdout


def test_vulns_match_smoke() -> None:
    out = _run("vulns_match.py", "--advisories", "2000", "--packages", "200")
    assert re.search(r"^SUMMARY vulns_match advisories=2000 .* result=PASS", out, re.M), out


def test_baseline_run_smoke() -> None:
    out = _run("baseline_run.py", "--rounds", "1")
    assert re.search(r"^SUMMARY baseline_run checks=\d+ .* result=PASS", out, re.M), out


def test_weakpass_smoke() -> None:
    out = _run(
        "weakpass.py",
        "--accounts",
        "3",
        "--passwords",
        "300",
        "--samples",
        "2",
        "--rate",
        "20",
        "--throttle-seconds",
        "1",
    )
    assert re.search(r"^SUMMARY weakpass accounts=3 passwords=300 .* result=PASS", out, re.M), out
