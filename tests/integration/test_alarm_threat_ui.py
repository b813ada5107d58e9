"""The alarm page's threat details (file, rules, process tree, isolation; hostile evidence escaped) and
the brute-force/login alarm actions from the alarms page's batch menu and from ``hostward alarms
handle``, against real manager components (console app, and a real manager process for the CLI)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.core.ids import new_id
from hostward.manager.agentlink.ingest import ingest_batch, load_builtin_handlers
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import Alarm
from hostward.manager.app import create_app
from hostward.manager.audit.models import AuditRecord
from hostward.manager.auth import service as auth
from hostward.manager.console.pages.malware import MAX_TREE, threat_evidence
from hostward.manager.context import ManagerContext
from hostward.manager.loginsec.models import BlockedIp, LoginWhitelistEntry
from hostward.manager.malware.policy import DEFAULT_HIGH_RISK_PATTERNS
from hostward.manager.policies import service as policies
from hostward.manager.policies.registry import POLICY_SPECS
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.wire import AlarmEvent, RawEventBatch, RecordEvent, ScanProgressEvent
from tests.fakes.servers import enrolled_server
from tests.managerapi import PASSWORD, console_login, flash_of, post_form
from tests.procs import hostward, login, ok, one_line_error, running_manager

SHA = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
XSS = "<script>alert(1)</script>"
HOSTILE_EVIDENCE: dict[str, Any] = {
    "file_path": f"/var/www/html/{XSS}.php",
    "file_hash": SHA,
    "file_size": 1234567,
    "file_owner": "<b>www</b>",
    "file_group": "www-data",
    "file_mode": "0644",
    "family": 'webshell"><img src=x onerror=alert(2)>',
    "source": "webshell",
    "matched_by": ["yara", {"odd": 1}],
    "rules": ["bundled:php_eval_<i>post</i>", 42, "ops:miner_stratum"],
    "rule_descriptions": {"php_eval_<i>post</i>": "eval of '\"><svg onload=alert(3)>"},
    "process_path": "/usr/sbin/php-fpm</td><td id=pwn1>",
    "process_cmdline": "php -r {{ 7*7 }} {% raw %}",
    "pid": 4321,
    "ppid": 900,
    "ruid": 33,
    "euid": 0,
    "process_tree": [
        {
            "pid": 4321,
            "exe": "/usr/bin/php</pre><pre id=pwn2>",
            "cmdline": "php -r {{ 7*7 }}",
            "ruid": 33,
            "euid": 0,
        },
        "not-a-process",
        {"pid": 900, "exe": "/usr/sbin/php-fpm", "cmdline": "php-fpm: master", "ruid": 0, "euid": 0},
        {"pid": 1, "exe": "/sbin/init", "cmdline": "/sbin/init", "ruid": 0, "euid": 0},
    ],
    "isolated": True,
    "vault_id": 'v"><x>&1',
    "killed_pids": [4321, "x", 4322],
}


def _alarm(s: Any, server: Server, event_class: str, evidence: dict[str, Any], tag: str) -> str:
    now = server.created_at  # any time will do: these alarms only need to exist
    event = AlarmEvent(
        key=new_id(),
        occurred_at=now,
        event_class=event_class,
        title=f"{event_class} {tag}",
        fingerprint=f"{event_class}:{tag}",
        evidence=evidence,
    )
    return alarms.ingest(s, server, event, now).id


def _seed(ctx: ManagerContext) -> dict[str, str]:
    """Users, a premium server with a blocked brute-force source, its alarm, malware alarms."""
    load_builtin_handlers()
    now = ctx.clock.now()
    with ctx.uow() as s:
        policies.ensure_presets(s)
        auth.create_user(s, "admin", PASSWORD, "admin", actor="t")
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="t")
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        server = enrolled_server(s, now, name="web-1")
        protection.enable_one(s, server.id, "premium", now, ctx.settings, actor="t", trigger_scan=False)
        block = RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic="blocked_ip",
            data={
                "action": "blocked",
                "network": "203.0.113.7/32",
                "service": "sshd",
                "until": (now + timedelta(hours=12)).isoformat(),
            },
        )
        ingest_batch(s, server, RawEventBatch(events=[block.model_dump(mode="json")]), now)
        login_evidence = {"login_ip": "203.0.113.7", "network": "203.0.113.7/32", "blocked": True}
        return {
            "server_id": server.id,
            "login_alarm_id": _alarm(s, server, "login_0001", login_evidence, "brute"),
            "hostile_alarm_id": _alarm(s, server, "webshell_0001", HOSTILE_EVIDENCE, "hostile"),
            "odd_alarm_id": _alarm(
                s,
                server,
                "malware_0002",
                {"process_tree": "garbage", "rules": 7, "file_size": True, "pid": None},
                "odd",
            ),
            "plain_alarm_id": _alarm(
                s,
                server,
                "malware_1001",
                {"file_path": "/tmp/x.elf", "file_hash": SHA, "rules": ["bundled:eicar"], "pid": 77},
                "plain",
            ),
        }


@pytest.fixture
def seeded(ctx: ManagerContext) -> dict[str, str]:
    return _seed(ctx)


@pytest.fixture
def client(ctx: ManagerContext, seeded: dict[str, str]) -> Iterator[TestClient]:
    app = create_app(ctx.settings, ctx, run_background=False)
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def _part(page: str, element_id: str, end: str) -> str:
    start = page.index(f'id="{element_id}"')
    return page[start : page.index(end, start)]


# ---- threat details on the alarm page ----


def test_threat_evidence_shapes() -> None:
    got = threat_evidence(HOSTILE_EVIDENCE)
    # Ancestors first, the alarmed process last; non-dict entries are skipped.
    assert [(p.pid, p.depth, p.alarmed) for p in got.tree] == [
        ("1", 0, False),
        ("900", 1, False),
        ("4321", 2, True),
    ]
    assert got.tree[2].uids == "33 / euid 0" and got.tree[0].uids == "0"
    assert got.rules == [
        ("bundled:php_eval_<i>post</i>", "eval of '\"><svg onload=alert(3)>"),
        ("42", ""),
        ("ops:miner_stratum", ""),
    ]
    file = dict(got.file)
    assert file["Size"] == "1,234,567 bytes" and file["Owner"] == "<b>www</b>:www-data"
    assert file["Matched by"] == "yara"
    assert got.isolated and got.vault_id == 'v"><x>&1' and got.killed_pids == "4321, 4322"
    long_chain = [{"pid": i, "exe": f"/bin/p{i}"} for i in range(MAX_TREE + 10)]
    many = threat_evidence({"process_tree": long_chain})
    assert len(many.tree) == MAX_TREE and many.tree_truncated and many.tree[-1].pid == "0"
    junks: list[Any] = [None, [], "x", {"process_tree": {"a": 1}, "rules": {"x": 1}, "killed_pids": "1"}]
    for junk in junks:
        assert not threat_evidence(junk)
    assert not threat_evidence({"login_ip": "203.0.113.7"})
    assert threat_evidence({"file_path": "/x", "file_size": True, "file_mode": None}).file == [("Path", "/x")]
    shell = threat_evidence({"process_path": "/bin/bash", "remote_address": "203.0.113.9:4444", "pid": 5})
    assert shell.process == [
        ("Executable", "/bin/bash"),
        ("PID", "5"),
        ("Remote address", "203.0.113.9:4444"),
    ]


def test_alarm_page_renders_threat_details_escaped(
    client: TestClient, ctx: ManagerContext, seeded: dict[str, str]
) -> None:
    csrf = console_login(client)
    r = client.get(f"/console/alarms/{seeded['hostile_alarm_id']}")
    assert r.status_code == 200
    page = r.text
    assert 'id="threat-evidence"' in page and 'id="process-tree"' in page
    # Nothing from the evidence comes through as markup; templates in it are not evaluated.
    for raw in (
        XSS,
        "<img src=x",
        "<svg onload",
        "<b>www</b>",
        "<td id=pwn1>",
        "<pre id=pwn2>",
        '"><x>',
        "<i>post</i>",
    ):
        assert raw not in page, raw
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        and "php -r {{ 7*7 }}" in page
        and "php -r 49" not in page
    )
    tree = _part(page, "process-tree", "</table>")
    assert [int(p) for p in re.findall(r'data-pid="(\d+)"', tree)] == [1, 900, 4321]
    assert tree.count("data-alarmed") == 1 and "/usr/bin/php&lt;/pre&gt;&lt;pre id=pwn2&gt;" in tree
    rules = _part(page, "threat-rules", "</ul>")
    assert "bundled:php_eval_&lt;i&gt;post&lt;/i&gt;" in rules and "&lt;svg onload=alert(3)&gt;" in rules
    isolation = _part(page, "threat-isolation", "</td>")
    assert 'data-isolation-state="isolated"' in isolation and "killed processes 4321, 4322" in isolation
    assert f"/console/isolated-files?server_id={seeded['server_id']}&amp;q=v%22%3E%3Cx%3E%261" in isolation

    # Odd shapes render (the generic table keeps them); a login alarm has no threat section.
    odd = client.get(f"/console/alarms/{seeded['odd_alarm_id']}")
    assert odd.status_code == 200 and 'id="threat-evidence"' not in odd.text and "garbage" in odd.text
    login_page = client.get(f"/console/alarms/{seeded['login_alarm_id']}").text
    assert 'id="threat-evidence"' not in login_page

    # A requested isolation shows on the alarm with a link to its Isolated Files row.
    plain = f"/console/alarms/{seeded['plain_alarm_id']}"
    page = client.get(plain).text
    assert "not isolated" in page and 'data-pid="77"' not in page  # no tree, but the process pid row
    text = post_form(client, csrf, "/console/alarms/handle", alarm_ids=seeded["plain_alarm_id"],
                     action="isolate_and_kill", next=plain)  # fmt: skip
    assert flash_of(text).startswith("ok: 1 alarm being isolated"), flash_of(text)
    isolation = _part(text, "threat-isolation", "</td>")
    assert 'data-isolation-state="isolating"' in isolation
    assert f"isolated-files?server_id={seeded['server_id']}&amp;q=/tmp/x.elf" in isolation.replace("%2F", "/")
    listed = client.get(
        "/console/isolated-files", params={"server_id": seeded["server_id"], "q": "x.elf"}
    ).text
    assert "/tmp/x.elf" in listed


# ---- login alarm actions from the batch menu ----


def test_batch_menu_login_actions(client: TestClient, ctx: ManagerContext, seeded: dict[str, str]) -> None:
    csrf = console_login(client)
    page = client.get("/console/alarms").text
    for action in ("add_to_login_whitelist", "remove_from_login_whitelist", "unblock"):
        assert f'<option value="{action}">' in page, action
    login_id, other_id = seeded["login_alarm_id"], seeded["plain_alarm_id"]

    text = post_form(client, csrf, "/console/alarms/handle", alarm_ids=[login_id, other_id],
                     action="add_to_login_whitelist", remark="office NAT",
                     next="/console/alarms")  # fmt: skip
    flash = flash_of(text)
    assert flash.startswith("error: 1 alarm: source added to the login whitelist"), flash
    assert f"{other_id[:8]}: add_to_login_whitelist applies to brute-force and login alarms" in flash
    with ctx.uow() as s:
        alarm = s.get(Alarm, login_id)
        assert alarm is not None and (alarm.status, alarm.handle_action) == (
            "handled",
            "add_to_login_whitelist",
        )
        other = s.get(Alarm, other_id)
        assert other is not None and other.status == "unhandled"
        (entry,) = s.scalars(select(LoginWhitelistEntry)).all()
        assert entry.source_alarm_id == login_id
        audited = s.scalars(
            select(AuditRecord.action).where(AuditRecord.target_id == login_id, AuditRecord.actor == "admin")
        ).all()
        assert "alarm_add_to_login_whitelist" in audited
        blocked = s.scalars(select(BlockedIp.status)).all()
        assert blocked == ["blocked"]  # whitelisting does not lift the block
    detail = client.get(f"/console/alarms/{login_id}").text
    assert "<td>Add to login whitelist</td><td>office NAT</td>" in detail.split("Handling history")[1]
    handle_form = _part(detail, "handle-alarm", "</form>")
    assert '<option value="remove_from_login_whitelist">' in handle_form
    assert '<option value="unblock">' in handle_form and "disabled" not in handle_form
    assert '<option value="add_to_login_whitelist">' not in handle_form

    text = post_form(client, csrf, "/console/alarms/handle", alarm_ids=login_id, action="unblock",
                     next="/console/alarms")  # fmt: skip
    flash = flash_of(text)
    assert flash == "ok: 1 alarm: source being unblocked (the agents confirm within seconds).", flash
    with ctx.uow() as s:
        assert s.scalars(select(BlockedIp.status)).all() == ["unblocking"]
    text = post_form(client, csrf, "/console/alarms/handle", alarm_ids=login_id,
                     action="remove_from_login_whitelist", next="/console/alarms")  # fmt: skip
    assert flash_of(text).startswith("ok: 1 alarm: source removed from the login whitelist"), flash_of(text)
    text = post_form(client, csrf, "/console/alarms/handle", alarm_ids=login_id,
                     action="remove_from_login_whitelist", next="/console/alarms")  # fmt: skip
    assert "undoes add_to_login_whitelist" in flash_of(text)
    with ctx.uow() as s:
        alarm = s.get(Alarm, login_id)
        assert alarm is not None and alarm.status == "unhandled"
        assert s.scalars(select(LoginWhitelistEntry)).all() == []

    # Read-only users cannot post; the generic actions still go to the generic handler.
    text = post_form(client, csrf, "/console/alarms/handle", alarm_ids=login_id, action="mark_as_handled",
                     next="/console/alarms")  # fmt: skip
    assert flash_of(text) == "ok: 1 alarm marked as handled."
    client.cookies.clear()
    viewer_csrf = console_login(client, "viewer")
    r = client.post("/console/alarms/handle",
                    data={"csrf": viewer_csrf, "alarm_ids": login_id, "action": "unblock"})  # fmt: skip
    assert r.status_code == 403


# ---- the CLI against a real manager ----


@pytest.mark.slow
def test_cli_login_alarm_actions(tmp_path: Path) -> None:
    with running_manager(tmp_path) as manager:
        login(manager, manager.home)
        home = manager.home
        ctx = ManagerContext.from_settings(ManagerSettings(data_dir=manager.data_dir))
        try:
            ids = _seed_for_cli(ctx)
            login_id, other_id = ids["login_alarm_id"], ids["plain_alarm_id"]
            out = ok(hostward(["alarms", "handle", login_id, "--action", "add_to_login_whitelist",
                               "--remark", "office"], home))  # fmt: skip
            assert "1 alarm(s): add_to_login_whitelist" in out
            out = ok(hostward(["alarms", "handle", login_id, "--action", "unblock"], home))
            assert f"alarm {login_id}: 1 block(s) being lifted" in out
            failed = hostward(["alarms", "handle", login_id, other_id, "--action",
                               "remove_from_login_whitelist"], home)  # fmt: skip
            assert failed.returncode == 1
            assert f"alarm {other_id}" in failed.stderr and "brute-force and login alarms" in failed.stderr
            assert "1 alarm(s): remove_from_login_whitelist" in failed.stdout
            err = one_line_error(
                hostward(["alarms", "handle", login_id, "--action", "unblock", "--value", "x"], home)
            )
            assert "--field and --value are for add_to_alarm_whitelist" in err
            err = one_line_error(hostward(["alarms", "handle", login_id, "--action", "unblok"], home))
            assert "unblok" in err or "action" in err
            with ctx.uow() as s:
                alarm = s.get(Alarm, login_id)
                assert alarm is not None and alarm.status == "unhandled"
                assert s.scalars(select(BlockedIp.status)).all() == ["unblocking"]
        finally:
            ctx.close()


def _seed_for_cli(ctx: ManagerContext) -> dict[str, str]:
    """The fixture's data in a manager that already has its admin user."""
    load_builtin_handlers()
    now = ctx.clock.now()
    with ctx.uow() as s:
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        server = enrolled_server(s, now, name="cli-web")
        protection.enable_one(s, server.id, "premium", now, ctx.settings, actor="t", trigger_scan=False)
        block = RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic="blocked_ip",
            data={"action": "blocked", "network": "203.0.113.7/32", "service": "sshd",
                  "until": (now + timedelta(hours=12)).isoformat()},
        )  # fmt: skip
        ingest_batch(s, server, RawEventBatch(events=[block.model_dump(mode="json")]), now)
        login_evidence = {"login_ip": "203.0.113.7", "network": "203.0.113.7/32", "blocked": True}
        return {
            "login_alarm_id": _alarm(s, server, "login_0001", login_evidence, "brute"),
            "plain_alarm_id": _alarm(s, server, "malware_1001", {"file_path": "/tmp/x.elf"}, "plain"),
        }


# ---- virus scans from the console: start, progress, cancel ----


def test_console_virus_scan_progress_and_cancel(
    client: TestClient, ctx: ManagerContext, seeded: dict[str, str]
) -> None:
    csrf = console_login(client)
    sid = seeded["server_id"]
    here = f"/console/servers/{sid}?tab=scans"
    text = post_form(client, csrf, f"/console/servers/{sid}/scan", kind="malware_full", paths="", next=here)
    assert flash_of(text).startswith("ok:"), flash_of(text)
    with ctx.uow() as s:
        (command,) = s.scalars(select(AgentCommand).where(AgentCommand.kind == "scan")).all()
        scan_id = command.payload["scan_id"]
        assert command.payload["kind"] == "malware_full"
        server = s.get(Server, sid)
        assert server is not None
        progress = ScanProgressEvent(
            key=new_id(),
            occurred_at=ctx.clock.now(),
            scan_id=scan_id,
            status="running",
            progress=37,
            detail="<b>12034</b> files, 1 detection",
        )
        ingest_batch(s, server, RawEventBatch(events=[progress.model_dump(mode="json")]), ctx.clock.now())
    page = client.get(f"/console/servers/{sid}", params={"tab": "scans"}).text
    row = _part(page, "scans-table", "</table>")
    row = row[row.index(f'data-scan-id="{scan_id}"') :]
    assert "Virus scan (full disk)" in row and "37%" in row and "width: 37%" in row
    assert "&lt;b&gt;12034&lt;/b&gt; files, 1 detection" in row and f"/scans/{scan_id}/cancel" in row
    text = post_form(client, csrf, f"/console/servers/{sid}/scans/{scan_id}/cancel", next=here)
    assert flash_of(text).startswith("ok:"), flash_of(text)
    with ctx.uow() as s:
        (cancel,) = s.scalars(select(AgentCommand).where(AgentCommand.kind == "cancel_scan")).all()
        assert cancel.payload == {"scan_id": scan_id}
    row = _part(text, "scans-table", "</table>")
    row = row[
        row.index(f'data-scan-id="{scan_id}"') : row.index("</tr>", row.index(f'data-scan-id="{scan_id}"'))
    ]
    assert "Cancelled" in row and "/cancel" not in row


# ---- documentation the operators rely on ----


def test_high_risk_defaults_documented_and_form_examples_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    content = yaml.safe_load((repo / "content/process/high_risk_commands.yaml").read_text())
    ids = [p["id"] for p in content["patterns"]]
    assert tuple(ids) == DEFAULT_HIGH_RISK_PATTERNS
    readme = (repo / "README.md").read_text()
    section = readme[readme.index("- Default high-risk command list") :]
    section = section[: section.index("\n- ")]
    assert re.findall(r"`([a-z0-9-]+)`\s+\(", section) == ids
    # The JSON examples in the policy forms' help texts are accepted as they stand.
    for key, name in (
        ("high_risk_command", "patterns"),
        ("high_risk_command", "whitelist"),
        ("reverse_shell", "whitelist"),
        ("process_privilege_escalation", "whitelist"),
    ):
        spec = POLICY_SPECS[key]
        description = spec.settings_model.model_json_schema()["properties"][name]["description"]
        example = re.search(r"e\.g\. (\[.*\])", description)
        assert example is not None, (key, name)
        assert spec.validate({name: json.loads(example.group(1))})[name], (key, name)


def test_threat_policies_edited_in_the_console(
    client: TestClient, ctx: ManagerContext, seeded: dict[str, str]
) -> None:
    csrf = console_login(client)
    with ctx.uow() as s:
        premium = policies.default_group(s, "premium").id
    r = client.post(
        f"/console/policies/{premium}/copy",
        data={"csrf": csrf, "name": "web servers", "description": ""},
        follow_redirects=True,
    )
    assert r.status_code == 200, r.text
    group_id = str(r.url).rstrip("/").rsplit("/", 1)[-1]
    page = r.text
    card = _part(page, "policy-high_risk_command", "</form>")
    # Each list is a textarea with its help text; the defaults are shown (nothing disabled yet).
    assert 'name="s_disabled"' in card and 'name="s_patterns"' in card and 'name="s_whitelist"' in card
    assert "netcat-exec" in card and "(JSON)" in card and "(one per line)" in card
    url = f"/console/policies/{group_id}/policies/high_risk_command"
    form = {
        "csrf": csrf,
        "enabled": "1",
        "s_disabled": "dev-tcp\nhistory-clear",
        "s_patterns": '["\\\\bnmap\\\\s", {"id": "miner", "regex": "xmrig", "description": "miner"}]',
        "s_whitelist": '[{"process_path": "^/usr/bin/backup$", "cmdline_regex": "--nightly"}]',
        "next": f"/console/policies/{group_id}",
    }
    r = client.post(url, data=form, follow_redirects=True)
    assert flash_of(r.text).startswith("ok: Policy Real-time process (high-risk commands) saved"), flash_of(
        r.text
    )
    r = client.post(url, data={**form, "s_disabled": "no-such-id"}, follow_redirects=True)
    assert "no-such-id" in flash_of(r.text) and flash_of(r.text).startswith("error:")
    r = client.post(url, data={**form, "s_patterns": "[unclosed"}, follow_redirects=True)
    assert "not valid JSON" in flash_of(r.text)
    with ctx.uow() as s:
        (policy,) = [p for p in policies.get_group(s, group_id).policies if p.key == "high_risk_command"]
        assert policy.settings == {
            "disabled": ["dev-tcp", "history-clear"],
            "patterns": ["\\bnmap\\s", {"id": "miner", "regex": "xmrig", "description": "miner"}],
            "whitelist": [{"process_path": "^/usr/bin/backup$", "cmdline": "--nightly"}],
        }
