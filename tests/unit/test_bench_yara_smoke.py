"""bench/yara_vs_cli.py still runs end to end on a tiny tree (numbers are not asserted here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "yara_vs_cli.py"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("yara") is None, reason="yara command line tool not installed")
def test_yara_bench_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--small"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = done.stdout
    assert re.search(
        r"^SUMMARY yara_vs_cli yara_cli_mbps=[\d.]+ first_mbps=[\d.]+ .* result=(PASS|FAIL)$", out, re.M
    ), out
    assert "identical: True; all samples found: True" in out, out
