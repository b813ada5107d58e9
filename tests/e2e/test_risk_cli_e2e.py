"""The risk action and export commands against a real manager process: downloads written as the API
produced them, refusals with one clear line (fix without the acknowledgement, unknown findings, bad
views), the handling history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.procs import as_json, hostward, login, ok, one_line_error, running_manager

pytestmark = pytest.mark.slow


def test_exports_history_and_refusals_through_the_cli(tmp_path: Path) -> None:
    with running_manager(tmp_path / "m") as m:
        login(m, m.home)
        out = tmp_path / "vulns.csv"
        assert "wrote 0 row(s)" in ok(hostward(["vulns", "export", "-o", out], m.home))
        assert out.read_text(encoding="utf-8-sig").startswith("Finding ID,Server,Vulnerability,")
        assert (
            json.loads(ok(hostward(["vulns", "export", "--view", "servers", "--format", "json"], m.home)))
            == []
        )
        checks = ok(hostward(["baseline", "export", "--view", "checks"], m.home))
        assert checks.startswith("Policy,Check,Title,Risk level")
        alarms = ok(hostward(["alarms", "export"], m.home))
        assert alarms.startswith("Alarm ID,Server,Severity")
        assert as_json(hostward(["vulns", "history", "CVE-2024-0001", "--json"], m.home)) == []

        assert "--yes" in one_line_error(hostward(["vulns", "fix", "nope"], m.home))
        refused = hostward(["vulns", "fix", "nope", "--yes"], m.home)
        assert refused.returncode == 1 and "nope: vulnerability finding nope not found" in refused.stderr
        assert "not found" in one_line_error(hostward(["vulns", "verify", "nope"], m.home))
        assert "export refused (422)" in one_line_error(
            hostward(["vulns", "export", "--view", "bogus"], m.home)
        )
        assert "export refused (422)" in one_line_error(
            hostward(["alarms", "export", "--format", "xml"], m.home)
        )
