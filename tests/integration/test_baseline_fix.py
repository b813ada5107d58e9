"""One-click fix of baseline checks with a safe remediation (file permissions and ownership) on a
prepared host tree: the agent's real baseline run marks them ``fixable``, the manager queues a
``baseline_fix`` command, the agent changes the files, evaluates the checks again and its record makes
them passed (or the fix failed, with the reason) through the manager's real ingest path."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hostward.agent.baseline import HostView, default_policy_dir, load_policies
from hostward.agent.baseline.fix import fix_check, fixable_checks
from hostward.agent.riskchecks import BASELINE_FIX_COMMAND, RiskChecks
from hostward.agent.scan import ScanJob
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import SystemClock
from hostward.core.errors import Invalid
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.baseline import fixes
from hostward.manager.baseline import service as baseline
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.servers.models import Server
from hostward.wire import Command, PolicyBundle, PolicyState, RawEventBatch
from tests.conftest import need
from tests.fakes.servers import enrolled_server


def _tree(root: Path) -> Path:
    """A host whose account files are too open."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nshadow:x:42:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(root / "etc/passwd", 0o666)
    os.chmod(root / "etc/shadow", 0o644)
    (root / "etc/gshadow").symlink_to("/nonexistent-gshadow-target")
    return root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_permission_checks_are_fixed_and_others_are_not(tmp_path: Path) -> None:
    need("root", "chown to root-owned test files")
    root = _tree(tmp_path / "host")
    policies_, errors = load_policies([default_policy_dir()])
    assert not errors
    fixable = fixable_checks(policies_)
    assert {("hostward_permissions", "perm-passwd"), ("hostward_permissions", "perm-shadow")} <= fixable
    assert not any(p == "hostward_ssh" or p == "hostward_kernel_network" for p, _ in fixable)
    by_id = {(p.id, c.id): (p, c) for p in policies_ for c in p.checks}
    host = HostView(root=root, allow_commands=False)

    passwd = fix_check(*by_id["hostward_permissions", "perm-passwd"], host)
    assert passwd.status == "fixed" and "mode 0666 -> 0644" in passwd.detail, passwd
    assert _mode(root / "etc/passwd") == 0o644 and passwd.result and passwd.result["result"] == "passed"
    shadow = fix_check(*by_id["hostward_permissions", "perm-shadow"], host)
    assert shadow.status == "fixed" and _mode(root / "etc/shadow") == 0o640
    ssh = fix_check(*by_id["hostward_ssh", "ssh-root-login"], host)
    assert ssh.status == "failed" and "no safe automatic fix" in ssh.detail
    link = fix_check(*by_id["hostward_permissions", "perm-gshadow"], host)
    assert "gshadow is a symbolic link: not changed" in link.detail, link
    assert (root / "etc/gshadow").is_symlink()


def _deliver(ctx: ManagerContext, outbox: Outbox, sid: str) -> None:
    items = outbox.batch(500)
    batch = RawEventBatch(events=[json.loads(i.body) for i in items])
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        acks = ingest.ingest_batch(s, server, batch, ctx.clock.now())
    assert {a.status for a in acks} == {"accepted"}
    outbox.ack(acks)


def test_fix_from_the_manager_to_the_agent_and_back(ctx: ManagerContext, tmp_path: Path) -> None:
    need("root", "chown to root-owned test files")
    with ctx.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now, name="bl-01")
        server.protection_status, server.edition = "opened", "premium"
        sid = server.id
    root = _tree(tmp_path / "host")
    outbox = Outbox.open(tmp_path / "agent")
    bundle = PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition="premium",
        protection=True,
        policies={"configuration_check": PolicyState(enabled=True, settings={"command_timeout_s": 5})},
    )
    risk = RiskChecks(
        root,
        outbox,
        SystemClock(),
        client_factory=lambda: None,  # type: ignore[arg-type, return-value]
        policy=lambda: bundle,
        languages=False,
    )
    risk.baseline(ScanJob(scan_id="scan-1", kind="baseline"))
    _deliver(ctx, outbox, sid)

    with ctx.uow() as s:
        rows = {r.check_id: r for r, _, _ in baseline.list_results(s, server_id=sid, limit=200)[0]}
        passwd = rows["perm-passwd"]
        assert passwd.result == "failed" and passwd.fixable
        assert not any(r.fixable for r in rows.values() if r.policy_id != "hostward_permissions")
        risk_before = s.get(Server, sid).risk_baseline  # type: ignore[union-attr]
        ids = [passwd.id, rows["perm-shadow"].id]
        with pytest.raises(Invalid, match="acknowledge"):
            fixes.request_fix(
                s, ids, acknowledge=False, remark="", actor="admin", now=now, settings=ctx.settings
            )
        other = next(r for r in rows.values() if not r.fixable)  # passed, not applicable or no safe fix
        request = fixes.request_fix(
            s, [*ids, other.id], acknowledge=True, remark="", actor="admin", now=now, settings=ctx.settings
        )
        assert [o.ok for o in request.outcomes] == [True, True, False]
        assert request.outcomes[2].error is not None
        command = s.get(AgentCommand, request.commands[sid])
        assert command is not None and command.kind == BASELINE_FIX_COMMAND
        payload, command_id = dict(command.payload), command.id

    result = risk.baseline_fix_command(
        Command(id=command_id, kind=BASELINE_FIX_COMMAND, payload=payload, created_at=now)
    )
    assert result is not None and result.status == "succeeded", result
    assert _mode(root / "etc/passwd") == 0o644 and _mode(root / "etc/shadow") == 0o640
    _deliver(ctx, outbox, sid)
    with ctx.uow() as s:
        rows = {r.check_id: r for r, _, _ in baseline.list_results(s, server_id=sid, limit=200)[0]}
        assert (rows["perm-passwd"].result, rows["perm-passwd"].fix_status) == ("passed", "fixed")
        assert rows["perm-shadow"].result == "passed" and "0644 -> 0640" in rows["perm-shadow"].fix_detail
        assert s.get(Server, sid).risk_baseline == risk_before - 2  # type: ignore[union-attr]
    bad = risk.baseline_fix_command(Command(id="x", kind=BASELINE_FIX_COMMAND, payload={}, created_at=now))
    assert bad is not None and bad.status == "failed" and "needs checks" in bad.detail
