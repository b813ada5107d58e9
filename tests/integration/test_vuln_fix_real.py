"""One-click vulnerability fix for real: packages built in the test with dpkg-deb, the old version
installed into this machine's dpkg database, the new one served by a local apt repository (file://,
its own source list, lists and cache directories: the host's apt sources are not touched); the agent's
fixer upgrades with apt-get and re-checks the dpkg database, and the manager takes the outcome from the
``vuln_fix`` record through its real ingest path (findings fixed / failed, handling history)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hostward.agent.riskchecks import FIX_COMMAND, RiskChecks, chunked_records
from hostward.agent.transport.outbox import Outbox
from hostward.agent.vulns.fix import FixPayloadError, FixTarget, VulnFixer, parse_targets
from hostward.core.clock import SystemClock
from hostward.core.errors import Invalid
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.context import ManagerContext
from hostward.manager.servers.models import Server
from hostward.manager.vulns import fixes
from hostward.manager.vulns import service as vulns
from hostward.manager.vulns.models import VulnFinding
from hostward.wire import Command, RawEventBatch
from tests.conftest import need
from tests.fakes.servers import enrolled_server
from tests.integration.test_vulns_manager import any_ctx  # noqa: F401

PKG_OK = "hostward-fixtest-ok"
PKG_STUCK = "hostward-fixtest-stuck"


def _build(tmp: Path, name: str, version: str) -> Path:
    root = tmp / f"build-{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    doc = root / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "version").write_text(version + "\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: hostward tests <tests@example.invalid>\nDescription: hostward fix test package\n"
    )
    out = tmp / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True, capture_output=True
    )
    return out


def _purge() -> None:
    subprocess.run(["dpkg", "--purge", PKG_OK, PKG_STUCK], capture_output=True, timeout=120)


@pytest.fixture
def apt_repo(tmp_path: Path) -> Iterator[list[str]]:
    """Old versions installed, new versions in a private apt repository; yields the apt options."""
    need("root", "installs test packages into the dpkg database")
    for tool in ("dpkg-deb", "dpkg-scanpackages", "apt-get"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    old = [_build(tmp_path, PKG_OK, "1.0-1"), _build(tmp_path, PKG_STUCK, "1.0-1")]
    for deb in (_build(tmp_path, PKG_OK, "1.0-2"), _build(tmp_path, PKG_STUCK, "1.0-2")):
        shutil.move(str(deb), repo / deb.name)
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (repo / "Packages").write_text(packages)
    sources = tmp_path / "sources.list"
    sources.write_text(f"deb [trusted=yes] file:{repo} ./\n")
    (tmp_path / "lists/partial").mkdir(parents=True)
    (tmp_path / "cache/archives/partial").mkdir(parents=True)
    options = [
        f"Dir::Etc::sourcelist={sources}",
        f"Dir::Etc::sourceparts={tmp_path / 'no-parts'}",
        f"Dir::State::Lists={tmp_path / 'lists'}",
        f"Dir::Cache={tmp_path / 'cache'}",
        "APT::Sandbox::User=root",
    ]
    _purge()
    subprocess.run(["dpkg", "-i", *map(str, old)], check=True, capture_output=True, timeout=120)
    try:
        yield options
    finally:
        _purge()


def _dpkg_version(name: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
    return out.stdout.strip()


def test_fixer_upgrades_rechecks_and_reports_each_package(apt_repo: list[str], tmp_path: Path) -> None:
    fixer = VulnFixer(apt_options=apt_repo, timeout=300)
    targets = [
        FixTarget(PKG_OK, "dpkg", (PKG_OK,), "1.0-2", ("f-ok",)),
        # the repository's newest version (1.0-2) does not reach the fixed version (1.0-3)
        FixTarget(PKG_STUCK, "dpkg", (PKG_STUCK,), "1.0-3", ("f-stuck",)),
        FixTarget("hostward-not-installed", "dpkg", ("hostward-not-installed",), "2.0", ("f-gone",)),
        FixTarget("requests", "pip", ("requests",), "2.32.0", ("f-pip",), "pip install --upgrade requests"),
    ]
    ok, stuck, gone, pip = fixer.fix(targets)
    assert (ok.status, ok.before, ok.after) == ("fixed", {PKG_OK: "1.0-1"}, {PKG_OK: "1.0-2"}), ok
    assert _dpkg_version(PKG_OK) == "1.0-2"
    assert stuck.status == "failed" and "still vulnerable" in stuck.detail and "1.0-3" in stuck.detail
    assert _dpkg_version(PKG_STUCK) == "1.0-2"  # upgraded, but not far enough
    assert gone.status == "failed" and "is installed any more" in gone.detail
    assert pip.status == "failed" and "run by hand: pip install --upgrade requests" in pip.detail


def test_a_hanging_package_manager_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    need("root", "reads the real dpkg database for the installed version")
    pidfile = tmp_path / "child.pid"
    hang = tmp_path / "apt-get"
    hang.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    hang.chmod(0o755)
    fixer = VulnFixer(timeout=1.0, update=False, apt_get=str(hang))
    started = time.monotonic()
    (result,) = fixer.fix([FixTarget("bash", "dpkg", ("bash",), "99:1", ("f",))])
    assert time.monotonic() - started < 15
    assert result.status == "failed" and "timed out after 1 s" in result.detail
    # the package manager's own child went with it: its whole process group was killed
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


def test_bad_payloads_are_refused_with_the_reason() -> None:
    for payload, why in (
        ({}, "1 to 50 packages"),
        ({"packages": [{"package": "-oAPT::x", "manager": "dpkg"}]}, "not a package name"),
        ({"packages": [{"package": "a", "binaries": "a"}]}, "binaries"),
        ({"packages": ["x"]}, "not an object"),
    ):
        with pytest.raises(FixPayloadError, match=why):
            parse_targets(payload)
    (t,) = parse_targets(
        {"packages": [{"package": "a", "manager": "dpkg", "fixed_versions": ["1.0-2", "1:0.5"]}]}
    )
    assert t.fixed_version == "1:0.5" and t.binaries == ("a",)  # the epoch makes it the highest


def _deliver(ctx: ManagerContext, outbox: Outbox, server_id: str) -> None:
    items = outbox.batch(500)
    batch = RawEventBatch(events=[json.loads(i.body) for i in items])
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        acks = ingest.ingest_batch(s, server, batch, ctx.clock.now())
    assert {a.status for a in acks} == {"accepted"}
    outbox.ack(acks)


def _finding(package: str, vuln: str, fixed: str, manager: str = "dpkg") -> dict[str, Any]:
    return {
        "key": f"Debian:{package}:{vuln}:",
        "package": package,
        "binaries": [package],
        "installed_version": "1.0-1",
        "fixed_version": fixed,
        "ids": [vuln],
        "severity": "high",
        "cvss_score": 7.5,
        "ecosystem": "Debian",
        "manager": manager,
        "summary": f"{package} issue",
        "fix_command": f"apt-get install --only-upgrade {package}",
    }


def test_fix_from_the_manager_to_the_agent_and_back(
    apt_repo: list[str], ctx: ManagerContext, tmp_path: Path
) -> None:
    ingest.load_builtin_handlers()
    outbox = Outbox.open(tmp_path / "agent")
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now, name="fix-01")
        server.protection_status, server.edition = "opened", "premium"
        sid = server.id
    findings = [
        _finding(PKG_OK, "CVE-9999-1001", "1.0-2"),
        _finding(PKG_STUCK, "CVE-9999-1002", "1.0-3"),
        _finding("left-pad", "GHSA-xxxx-yyyy-zzzz", "2.0.0", manager="npm"),
    ]
    for event in chunked_records(vulns.RECORD_TOPIC, "scan-1", "findings", findings, 200, now):
        outbox.put(event)
    _deliver(ctx, outbox, sid)

    with ctx.uow() as s:
        rows = {r.package: r.id for r in s.scalars(select(VulnFinding))}
        with pytest.raises(Invalid, match="acknowledge"):
            fixes.request_fix(
                s,
                list(rows.values()),
                acknowledge=False,
                remark="",
                actor="admin",
                now=now,
                settings=ctx.settings,
            )
        request = fixes.request_fix(
            s,
            list(rows.values()),
            acknowledge=True,
            remark="patch tuesday",
            actor="admin",
            now=now,
            settings=ctx.settings,
        )
        by_id = {o.id: o for o in request.outcomes}
        assert by_id[rows[PKG_OK]].ok and by_id[rows[PKG_STUCK]].ok
        npm = by_id[rows["left-pad"]]
        assert not npm.ok and npm.error is not None and "no one-click fix for npm" in npm.error.message
        command = s.get(AgentCommand, request.commands[sid])
        assert command is not None and command.kind == FIX_COMMAND
        payload, command_id = dict(command.payload), command.id
        assert sorted(p["package"] for p in payload["packages"]) == [PKG_OK, PKG_STUCK]
        assert s.get(VulnFinding, rows[PKG_OK]).fix_status == "fixing"  # type: ignore[union-attr]
        # a second fix of the same findings while the first runs is refused
        again = fixes.request_fix(
            s, [rows[PKG_OK]], acknowledge=True, remark="", actor="admin", now=now, settings=ctx.settings
        )
        assert again.outcomes[0].error is not None and "already running" in again.outcomes[0].error.message

    # the agent side: the command handler, the real fixer, the record through the outbox
    risk = RiskChecks(
        Path("/"),
        outbox,
        SystemClock(),
        client_factory=lambda: None,  # type: ignore[arg-type, return-value]
        policy=lambda: None,
        fixer=VulnFixer(apt_options=apt_repo, timeout=300),
    )
    result = risk.fix_command(Command(id=command_id, kind=FIX_COMMAND, payload=payload, created_at=now))
    assert result is not None and result.status == "failed"
    assert result.detail.startswith("1 of 2 package(s) fixed"), result.detail
    _deliver(ctx, outbox, sid)

    with ctx.uow() as s:
        ok = s.get(VulnFinding, rows[PKG_OK])
        stuck = s.get(VulnFinding, rows[PKG_STUCK])
        assert ok is not None and stuck is not None
        assert (ok.status, ok.fix_status, ok.handled_by) == ("fixed", "fixed", "admin")
        assert "1.0-1 -> 1.0-2" in ok.fix_detail
        assert (stuck.status, stuck.fix_status) == ("unfixed", "failed")
        assert "still vulnerable" in stuck.fix_detail
        server = s.get(Server, sid)
        assert server is not None and server.risk_vulnerabilities == 2  # the stuck one and npm
        history, total = fixes.history(s, "CVE-9999-1002")
        assert total == 2
        assert [h.action for h in history] == ["vuln_fix_failed", "vuln_fix"]
        assert history[1].actor == "admin" and history[1].remark == "patch tuesday"
        assert fixes.history(s, "CVE-9999-1001")[0][0].action == "vuln_fix_fixed"


def test_the_agent_runs_vuln_fix_commands_on_a_worker_and_reports_them(tmp_path: Path) -> None:
    from hostward.agent.config import load_config
    from hostward.agent.enroll import enroll
    from tests.agenthost import GROUP, PASSWD
    from tests.fakes.agent_manager import FakeManager
    from tests.integration.test_agent_runtime import make_agent

    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/machine-id").write_text("feedfacefeedfacefeedfacefeedface\n")
    with FakeManager() as fm:
        state_dir = tmp_path / "state"
        enroll(fm.url, fm.token, fm.fingerprint, state_dir, "agent-1", root=root)
        agent = make_agent(load_config(state_dir, {"host_root": root, "backoff_base_s": 1.0}))
        try:
            agent.run_once()
            server_id = next(iter(fm.servers.values())).server_id
            bad = fm.queue(server_id, FIX_COMMAND, {"packages": [{"package": "--force-yes"}]})
            # dpkg under another host root and a pip package: refused per package, apt-get never runs
            fix = fm.queue(
                server_id,
                FIX_COMMAND,
                {
                    "packages": [
                        {
                            "package": "openssl",
                            "manager": "dpkg",
                            "binaries": ["libssl3"],
                            "finding_ids": ["a"],
                        },
                        {"package": "requests", "manager": "pip", "finding_ids": ["b"]},
                    ]
                },
            )
            agent.run_once()
            deadline = time.monotonic() + 30
            while fix not in fm.results and time.monotonic() < deadline:
                time.sleep(0.1)
                agent.run_once()
            assert fm.results[bad].status == "failed" and "not a package name" in fm.results[bad].detail
            result = fm.results[fix]
            assert result.status == "failed" and result.detail.startswith("0 of 2 package(s) fixed")
            assert [r["status"] for r in result.data["results"]] == ["failed", "failed"]
            assert "host root is" in result.data["results"][0]["detail"]
            deadline = time.monotonic() + 30
            while not [e for e in fm.events_of("record") if e["topic"] == "vuln_fix"]:
                assert time.monotonic() < deadline, "no vuln_fix record"
                time.sleep(0.1)
                agent.run_once()
            (record,) = [e for e in fm.events_of("record") if e["topic"] == "vuln_fix"]
            assert record["data"]["command_id"] == fix
            assert [r["finding_ids"] for r in record["data"]["results"]] == [["a"], ["b"]]
        finally:
            agent.shutdown()


def test_fix_outcomes_settle_and_history_on_both_databases(any_ctx: ManagerContext) -> None:  # noqa: F811
    """The manager half alone (record as the agent sends it), on SQLite and PostgreSQL."""
    ctx = any_ctx
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now, name="fix-02")
        server.protection_status = "opened"
        sid = server.id
    findings = [_finding("openssl", "DSA-9999-1", "3.0.99-1"), _finding("curl", "DSA-9999-2", "8.0.99-1")]
    findings[0]["ids"] = ["DSA-9999-1", "CVE-9999-2001"]
    events = chunked_records(vulns.RECORD_TOPIC, "scan-1", "findings", findings, 200, now)
    batch = RawEventBatch(events=[json.loads(e.model_dump_json()) for e in events])
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        ingest.ingest_batch(s, server, batch, now)
        rows = {r.package: r.id for r in s.scalars(select(VulnFinding))}
        request = fixes.request_fix(
            s, list(rows.values()), acknowledge=True, remark="", actor="op", now=now, settings=ctx.settings
        )
        command_id = request.commands[sid]
    record = {
        "command_id": command_id,
        "results": [
            {
                "package": "openssl",
                "finding_ids": [rows["openssl"]],
                "status": "fixed",
                "detail": "upgraded",
                "reboot_required": True,
            },
        ],
    }
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        fixes.ingest_fix(s, server, record, now)
    with ctx.uow() as s:
        openssl = s.get(VulnFinding, rows["openssl"])
        assert openssl is not None and (openssl.status, openssl.fix_status) == ("fixed", "reboot")
        # curl got no answer: two hours later its fix has failed
        assert fixes.settle(s, now + fixes.FIX_STALE + timedelta(minutes=1)) == 1
        curl = s.get(VulnFinding, rows["curl"])
        assert (
            curl is not None and curl.fix_status == "failed" and "no result from the agent" in curl.fix_detail
        )
        by_alias, _ = fixes.history(s, "CVE-9999-2001")
        assert [h.action for h in by_alias] == ["vuln_fix_reboot", "vuln_fix"]
        assert [h.action for h in fixes.history(s, "DSA-9999-2")[0]] == ["vuln_fix_failed", "vuln_fix"]
