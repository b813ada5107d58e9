"""Over the real app (TestClient): CSV / JSON exports of vulnerabilities (vulnerability view, server
view, findings), baseline results and alarms from the REST API and the console; the vulnerability
handling history; the one-click fix request, its refusal without the acknowledgement and its failure
when the agent refuses the command; verify; the risk counts on the server detail page."""

from __future__ import annotations

import csv
import io
import json
import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.core.ids import new_id
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.context import ManagerContext
from hostward.manager.scans.models import Scan
from hostward.manager.servers.models import Server
from hostward.manager.vulns.models import VulnFinding
from hostward.wire import AlarmEvent, CommandResult, RawEventBatch
from tests.integration.test_console_views import app_ctx, flash, post  # noqa: F401
from tests.integration.test_risk_console import api_headers, client, seed  # noqa: F401
from tests.managerapi import console_login


def _csv(body: str) -> list[dict[str, str]]:
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body[1:])))


def _alarm(ctx: ManagerContext, sid: str, title: str) -> None:
    event = AlarmEvent(
        key=new_id(),
        occurred_at=ctx.clock.now(),
        event_class="login_0002",
        severity="high",
        fingerprint=f"fp-{title}",
        title=title,
        evidence={"source_ip": "10.9.9.9"},
    )
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        batch = RawEventBatch(events=[json.loads(event.model_dump_json())])
        assert {a.status for a in ingest.ingest_batch(s, server, batch, ctx.clock.now())} == {"accepted"}


def test_exports_from_the_api(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    sid = seed(app_ctx)
    _alarm(app_ctx, sid, '=HYPERLINK("http://evil")')
    h = api_headers(client)

    r = client.get("/api/v1/vulns/export", headers=h, params={"view": "findings", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert re.match(
        r'attachment; filename="vulnerability-findings-\d{8}T\d{6}Z\.csv"', r.headers["content-disposition"]
    )
    rows = _csv(r.text)
    assert [(x["Vulnerability"], x["Server"], x["Package"], x["Status"]) for x in rows] == [
        ("CVE-9999-0001", "web-01", "glibc", "unfixed")
    ]
    assert rows[0]["Other IDs"] == "HWTEST-2024-0001" and rows[0]["Fix command"].endswith("libc6")
    r = client.get("/api/v1/vulns/export", headers=h, params={"view": "vulns", "format": "json"})
    assert r.headers["content-type"] == "application/json"
    assert [(x["vuln_id"], x["unfixed_servers"]) for x in r.json()] == [("CVE-9999-0001", 1)]
    servers = _csv(client.get("/api/v1/vulns/export", headers=h, params={"view": "servers"}).text)
    assert (servers[0]["Server"], servers[0]["Unfixed"], servers[0]["High"]) == ("web-01", "1", "1")
    none = client.get("/api/v1/vulns/export", headers=h, params={"status": "fixed"})
    assert _csv(none.text) == [] and none.headers["x-hostward-rows"] == "0"
    assert client.get("/api/v1/vulns/export", headers=h, params={"format": "xml"}).status_code == 422
    assert client.get("/api/v1/vulns/export", params={"format": "csv"}).status_code == 401

    results = _csv(client.get("/api/v1/baseline/export", headers=h).text)
    assert [(x["Check"], x["Result"], x["Server"]) for x in results] == [
        ("ssh-root-login", "failed", "web-01")
    ]
    checks = client.get(
        "/api/v1/baseline/export", headers=h, params={"view": "checks", "format": "json"}
    ).json()
    assert checks[0]["check_id"] == "ssh-root-login" and checks[0]["failed"] == 1
    weak = _csv(client.get("/api/v1/baseline/export", headers=h, params={"view": "weak_passwords"}).text)
    assert [(x["Account"], x["Reasons"]) for x in weak] == [("deploy", "username_derived")]
    assert "password" not in weak[0] and "hash" not in json.dumps(weak).lower()

    alarms = _csv(client.get("/api/v1/alarms/export", headers=h, params={"server_id": sid}).text)
    assert len(alarms) == 1 and alarms[0]["Event class"] == "login_0002"
    # a cell a spreadsheet would run as a formula is quoted
    assert alarms[0]["Title"] == '\'=HYPERLINK("http://evil")'
    assert json.loads(alarms[0]["Evidence"]) == {"source_ip": "10.9.9.9"}
    data = client.get("/api/v1/alarms/export", headers=h, params={"format": "json", "status": "handled"})
    assert data.json() == []
    assert client.get("/api/v1/alarms/export", headers=h, params={"severity": "bogus"}).status_code == 422


def test_fix_verify_and_history_over_the_api(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    sid = seed(app_ctx)
    h = api_headers(client)
    fid = client.get("/api/v1/vulns/findings", headers=h).json()["items"][0]["id"]
    handle = "/api/v1/vulns/findings/handle"

    r = client.post(handle, headers=h, json={"finding_ids": [fid], "action": "fix"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "fix_not_acknowledged"
    r = client.post(
        handle, headers=h, json={"finding_ids": [fid, "nope"], "action": "fix", "acknowledge": True}
    )
    assert r.status_code == 200, r.text
    assert [x["ok"] for x in r.json()["results"]] == [True, False]
    command_id = r.json()["commands"][sid]
    with app_ctx.uow() as s:
        command = s.get(AgentCommand, command_id)
        assert command is not None and command.kind == "vuln_fix"
        assert command.payload["packages"][0]["binaries"] == ["libc6"]
        assert command.payload["packages"][0]["fixed_versions"] == ["2.36-9+deb12u999"]
    finding = client.get(f"/api/v1/vulns/findings/{fid}", headers=h).json()
    assert (finding["fix_status"], finding["fix_by"]) == ("fixing", "admin")

    # an agent without the command (or with a bad payload) refuses it: the finding's fix fails with why
    with app_ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        agentlink.complete_command(
            s,
            server,
            command_id,
            CommandResult(status="failed", detail="unsupported command: vuln_fix"),
            app_ctx.clock.now(),
        )
    finding = client.get(f"/api/v1/vulns/findings/{fid}", headers=h).json()
    assert finding["fix_status"] == "failed" and finding["status"] == "unfixed"
    assert finding["fix_detail"] == "agent: unsupported command: vuln_fix"

    r = client.post(handle, headers=h, json={"finding_ids": [fid], "action": "verify"})
    assert r.status_code == 200 and r.json()["scans"][0]["server_id"] == sid
    with app_ctx.uow() as s:
        assert s.scalar(select(Scan.kind).where(Scan.server_id == sid)) == "vulnerability"
    client.post(handle, headers=h, json={"finding_ids": [fid], "action": "ignore", "remark": "accepted risk"})
    rule = client.post("/api/v1/whitelists/vulns", headers=h, json={"vuln_id": "CVE-9999-0001"})
    assert rule.status_code == 201

    # the history, by the primary id or an alias, newest first
    page = client.get("/api/v1/vulns/HWTEST-2024-0001/history", headers=h).json()
    actions = [x["action"] for x in page["items"]]
    assert actions == ["add_vuln_whitelist", "vuln_ignore", "vuln_verify", "vuln_fix_failed", "vuln_fix"], (
        actions
    )
    assert page["total"] == 5
    assert page["items"][1]["remark"] == "accepted risk" and page["items"][4]["actor"] == "admin"
    assert client.get("/api/v1/vulns/CVE-0000-0000/history", headers=h).json()["total"] == 0
    assert client.get("/api/v1/vulns/bad%20id/history", headers=h).status_code == 422
    audit = client.get("/api/v1/audit", headers=h, params={"action": "vuln_fix"}).json()
    assert audit["total"] == 1 and audit["items"][0]["target_id"] == fid


def test_console_exports_fix_history_and_server_counts(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    sid = seed(app_ctx)
    _alarm(app_ctx, sid, "brute force")
    csrf = console_login(client)
    with app_ctx.uow() as s:
        fid = s.scalars(select(VulnFinding.id)).one()

    page = client.get("/console/vulnerabilities/findings", params={"vuln_id": "CVE-9999-0001"})
    assert page.status_code == 200
    assert (
        'id="export-findings"' in page.text
        and 'value="fix"' in page.text
        and 'id="vuln-history"' in page.text
    )
    assert "Nobody has handled this vulnerability yet." in page.text
    export = client.get(
        re.search(r'id="export-findings" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    )  # type: ignore[union-attr]
    assert export.status_code == 200 and _csv(export.text)[0]["Vulnerability"] == "CVE-9999-0001"

    r = post(client, csrf, "/console/vulnerabilities/fix", action="fix", finding_ids=fid)
    assert "acknowledge" in flash(r.text)
    r = post(client, csrf, "/console/vulnerabilities/fix", action="fix", finding_ids=fid, acknowledge="1")
    assert flash(r.text) == "ok: Fixing 1 vulnerability on 1 server(s)."
    page = client.get("/console/vulnerabilities/findings", params={"vuln_id": "CVE-9999-0001"})
    assert 'data-fix-state="fixing"' in page.text and 'data-action="vuln_fix"' in page.text
    history = client.get("/console/history", params={"target_type": "vulnerability"})
    assert history.status_code == 200 and "CVE-9999-0001 glibc" in history.text
    assert 'id="vuln-handling-history"' in client.get("/console/vulnerabilities").text

    for url, marker in (
        ("/console/vulnerabilities", 'id="export-vulns"'),
        ("/console/baseline", 'id="export-baseline"'),
        ("/console/alarms", 'id="export-alarms"'),
    ):
        html = client.get(url).text
        link = re.search(marker + r' href="([^"]+)"', html)
        assert link, url
        download = client.get(link.group(1).replace("&amp;", "&"))
        assert download.status_code == 200 and len(_csv(download.text)) == 1, url
    assert (
        _csv(client.get("/console/vulnerabilities/export", params={"view": "servers"}).text)[0]["Server"]
        == "web-01"
    )

    detail = client.get(f"/console/servers/{sid}").text
    counts = {
        m.group(1): (m.group(2).replace("&amp;", "&"), int(m.group(3)))
        for m in re.finditer(r'<a data-risk="(\w+)" href="([^"]+)">(\d+) ', detail)
    }
    with app_ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        expected = {
            "vulnerabilities": server.risk_vulnerabilities,
            "baseline": server.risk_baseline,
            "intrusions": server.risk_intrusions,
            "assets": server.risk_assets,
        }
    assert {k: v[1] for k, v in counts.items()} == expected
    assert expected["vulnerabilities"] == 1 and expected["intrusions"] == 1 and expected["baseline"] >= 2
    vuln_list = client.get(counts["vulnerabilities"][0]).text
    assert "CVE-9999-0001" in vuln_list
    alarm_list = client.get(counts["intrusions"][0]).text
    assert "brute force" in alarm_list
    assert "ssh-root-login" in client.get(counts["baseline"][0]).text


def test_baseline_fix_from_the_console_and_the_api(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    from hostward.agent.riskchecks import chunked_records
    from hostward.manager.baseline import service as baseline

    sid = seed(app_ctx)
    now = app_ctx.clock.now()
    result = {
        "policy_id": "hostward_permissions",
        "policy_name": "Permissions of sensitive files",
        "check_id": "perm-passwd",
        "title": "/etc/passwd is 0644 or stricter and owned by root:root",
        "severity": "medium",
        "result": "failed",
        "reason": "/etc/passwd has mode 0666 (at most 0644)",
        "remediation": "chmod 644 /etc/passwd",
        "fixable": True,
    }
    ssh = {**result, "policy_id": "hostward_ssh", "check_id": "ssh-root-login", "fixable": False}
    events = chunked_records(baseline.BASELINE_TOPIC, "s2", "results", [result, ssh], 300, now, enabled=True)
    with app_ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        batch = RawEventBatch(events=[json.loads(e.model_dump_json()) for e in events])
        assert {a.status for a in ingest.ingest_batch(s, server, batch, now)} == {"accepted"}
    csrf = console_login(client)
    url = "/console/baseline/check?policy_id=hostward_permissions&check_id=perm-passwd"
    page = client.get(url).text
    assert 'name="action" value="fix"' in page
    with app_ctx.uow() as s:
        rid = next(
            r.id for r, _, _ in baseline.list_results(s, server_id=sid)[0] if r.check_id == "perm-passwd"
        )
    r = post(client, csrf, "/console/baseline/handle", action="fix", result_ids=rid, acknowledge="1")
    assert flash(r.text) == "ok: Fixing 1 check result(s) on 1 server(s)."
    assert 'data-fix-state="fixing"' in client.get(url).text
    h = api_headers(client)
    rows = client.get("/api/v1/baseline/results", headers=h, params={"check_id": "perm-passwd"}).json()[
        "items"
    ]
    assert (rows[0]["fixable"], rows[0]["fix_status"], rows[0]["fix_by"]) == (True, "fixing", "admin")
    # a check without a safe fix is refused with the reason
    other = client.get("/api/v1/baseline/results", headers=h, params={"check_id": "ssh-root-login"}).json()
    r = client.post(
        "/api/v1/baseline/results/handle",
        headers=h,
        json={"result_ids": [other["items"][0]["id"]], "action": "fix", "acknowledge": True},
    )
    assert r.status_code == 200 and "no safe automatic fix" in r.json()["results"][0]["error"]["message"]
