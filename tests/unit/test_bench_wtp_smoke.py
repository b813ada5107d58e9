"""``bench/wtp_restore.py`` still runs end to end (tiny numbers; the numbers themselves are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_wtp_restore_smoke() -> None:
    need("root", "the immutable flag and fanotify need root")
    done = subprocess.run(
        [sys.executable, str(BENCH / "wtp_restore.py"), "--tampers", "10", "--pages", "50", "--gap-ms", "10"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = re.search(r"^SUMMARY wtp_restore tampers=(\d+) .* result=(PASS|FAIL)", done.stdout, re.M)
    assert summary, done.stdout
    assert int(summary.group(1)) >= 1, done.stdout
    assert "not restored within 5 s 0" in done.stdout, done.stdout
