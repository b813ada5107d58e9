"""The web console over the real app (TestClient): sessions, CSRF, roles, every page, and its actions."""

from __future__ import annotations

import hashlib
import html as htmllib
import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.core.errors import Invalid
from hostward.manager.agentlink import pki
from hostward.manager.agentlink import service as agentlink
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import Alarm, AlarmWhitelistRule
from hostward.manager.app import create_app
from hostward.manager.auth import service as auth
from hostward.manager.console.settings_form import fields_for, parse_form
from hostward.manager.context import ManagerContext
from hostward.manager.deps import SESSION_COOKIE
from hostward.manager.policies import service as policies
from hostward.manager.policies.models import PolicyGroup
from hostward.manager.quotas import service as quotas
from hostward.manager.quotas.models import Quota
from hostward.manager.scans.models import Scan
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import Server
from hostward.manager.settings_store import service as global_settings
from hostward.wire import AlarmEvent, AssetsEvent, AssetSnapshot
from hostward.wire.assets import Account, ListeningPort, Package
from tests.fakes.servers import enrolled_server
from tests.managerapi import PASSWORD, console_login


@pytest.fixture
def app_ctx(ctx: ManagerContext) -> ManagerContext:
    with ctx.uow() as s:
        policies.ensure_presets(s)
        auth.create_user(s, "admin", PASSWORD, "admin", actor="test")
    return ctx


def add_user(ctx: ManagerContext, name: str, role: str) -> None:
    with ctx.uow() as s:
        auth.create_user(s, name, PASSWORD, role, actor="test")


@pytest.fixture
def client(app_ctx: ManagerContext) -> Iterator[TestClient]:
    app = create_app(app_ctx.settings, app_ctx, run_background=False)
    # https: the session cookie is Secure unless the manager runs with plain_http.
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def post(client: TestClient, csrf: str, url: str, **data: object) -> httpx.Response:
    return client.post(url, data={"csrf": csrf, **data}, follow_redirects=True)


def flash(html: str) -> str:
    found = re.search(r'<div class="flash flash-(\w+)"[^>]*>\s*<span>(.*?)</span>', html, re.S)
    return f"{found.group(1)}: {htmllib.unescape(found.group(2))}" if found else ""


def row(html: str, marker: str) -> str:
    """The table row whose opening tag contains ``marker``."""
    found = re.search(r"<tr[^>]*" + re.escape(marker) + r".*?</tr>", html, re.S)
    assert found, f"no row with {marker}"
    return found.group(0)


def seed(ctx: ManagerContext) -> dict[str, str]:
    """Two online servers, one offline, premium and enterprise quotas, an alarm, assets and a scan."""
    now = ctx.clock.now()
    with ctx.uow() as s:
        web = enrolled_server(s, now, name="web-1")
        web.ips = ["10.0.0.5", "2001:db8::5"]
        web.labels = ["prod"]
        db = enrolled_server(s, now, name="db-1")
        gone = enrolled_server(s, now, name="old-1", online=False)
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        quotas.add_quotas(
            s, "enterprise", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        alarm = alarms.ingest(
            s,
            db,
            AlarmEvent(
                key="k1",
                occurred_at=now,
                event_class="user_1002",
                fingerprint="user_1002:toor",
                title="new uid-0 account toor",
                evidence={"username": "toor", "uid": 0, "tree": [{"pid": 1}]},
            ),
            now,
        )
        servers.store_assets(
            s,
            web,
            AssetsEvent(
                key="a1",
                occurred_at=now,
                snapshot=AssetSnapshot(
                    collected_at=now,
                    accounts=[Account(name="root", uid=0, gid=0, home="/root", shell="/bin/bash", root=True)],
                    ports=[ListeningPort(protocol="tcp", address="0.0.0.0", port=22, pid=10, process="sshd")],
                    packages=[Package(name="openssl", version="3.0.2", manager="dpkg")],
                ),
            ),
            now,
        )
        return {"web": web.id, "db": db.id, "gone": gone.id, "alarm": alarm.id}


# ---- sessions, CSRF and roles ------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_and_wrong_password_is_refused(client: TestClient) -> None:
    r = client.get("/console/servers", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=/console/servers"
    r = client.post(
        "/console/login", data={"username": "admin", "password": "nope", "next": "/console/servers"}
    )
    assert r.status_code == 401
    assert "invalid username or password" in r.text
    assert SESSION_COOKIE not in client.cookies
    r = client.post(
        "/console/login",
        data={"username": "admin", "password": PASSWORD, "next": "/console/servers"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/servers"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    page = client.get("/console/servers")
    assert page.status_code == 200 and "Servers &amp; Quota" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    # Only local console paths are followed after login (no open redirect).
    r = client.post(
        "/console/login",
        data={"username": "admin", "password": PASSWORD, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/console/"


def test_failed_logins_are_rate_limited(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    for _ in range(app_ctx.settings.login_max_failures):
        assert client.post("/console/login", data={"username": "oper", "password": "bad"}).status_code == 401
    r = client.post("/console/login", data={"username": "oper", "password": PASSWORD})
    assert r.status_code == 429 and "too many failed logins" in r.text


def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = console_login(client)
    r = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_posts_need_the_csrf_token(client: TestClient, app_ctx: ManagerContext) -> None:
    ids = seed(app_ctx)
    console_login(client)
    r = client.post("/console/servers/enable", data={"server_ids": ids["web"], "edition": "premium"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(
        "/console/servers/enable", data={"csrf": "0" * 64, "server_ids": ids["web"], "edition": "premium"}
    )
    assert r.status_code == 403
    with app_ctx.uow() as s:
        assert s.get(Server, ids["web"]).edition is None  # type: ignore[union-attr]


def test_readonly_sees_no_change_buttons_and_cannot_post(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "viewer", "readonly")
    ids = seed(app_ctx)
    csrf = console_login(client, "viewer")
    page = client.get("/console/servers").text
    assert "web-1" in page
    assert "data-enable" not in page and "/servers/disable" not in page and 'id="enable-dialog"' not in page
    assert "/alarms/handle" not in client.get("/console/alarms").text
    assert 'id="add-quotas"' not in client.get("/console/quotas").text
    r = client.post(
        "/console/servers/enable", data={"csrf": csrf, "server_ids": ids["web"], "edition": "premium"}
    )
    assert r.status_code == 403 and "operator role" in r.text
    r = client.post(
        "/console/alarms/handle", data={"csrf": csrf, "alarm_ids": ids["alarm"], "action": "mark_as_handled"}
    )
    assert r.status_code == 403
    # Choosing a region is a view preference: allowed for every role.
    r = client.post(
        "/console/region",
        data={"csrf": csrf, "region": "default", "next": "/console/servers"},
        follow_redirects=False,
    )
    assert r.status_code == 303


def test_operator_cannot_add_quotas(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    csrf = console_login(client, "oper")
    r = client.post("/console/quotas", data={"csrf": csrf, "edition": "premium", "count": "1"})
    assert r.status_code == 403 and "admin role" in r.text


# ---- pages ---------------------------------------------------------------------------------------------


def test_every_page_renders_with_data(client: TestClient, app_ctx: ManagerContext) -> None:
    ids = seed(app_ctx)
    pki.ensure_pki(app_ctx.settings)
    with app_ctx.uow() as s:
        group = policies.default_group(s, "premium").id
    console_login(client)
    pages = {
        "/console/": ["Agent status", "Quota usage", "new uid-0 account toor"],
        "/console/servers": ["web-1", "10.0.0.5", "db-1", "Online", "Offline", "Unprotected", "prod"],
        f"/console/servers/{ids['web']}": ["Detector health", "Agent credentials", "web-1"],
        f"/console/servers/{ids['web']}?tab=assets": ["Accounts (1)", "/bin/bash"],
        f"/console/servers/{ids['web']}?tab=assets&cat=ports": ["sshd", "0.0.0.0"],
        f"/console/servers/{ids['web']}?tab=assets&cat=packages": ["openssl", "3.0.2"],
        f"/console/servers/{ids['web']}?tab=scans": ["No scans yet"],
        f"/console/servers/{ids['db']}?tab=alarms": ["new uid-0 account toor"],
        "/console/quotas": ["Premium", "Enterprise", "Idle", "Auto-bind"],
        "/console/agents": ["Create enrollment token", "sha256:"],
        "/console/alarms": ["new uid-0 account toor", "Unsafe account", "Privilege escalation"],
        f"/console/alarms/{ids['alarm']}": ["Evidence", "toor", "&#34;pid&#34;: 1"],
        "/console/whitelists/alarm": ["Add rule", "No whitelist rules"],
        "/console/policies": ["tenant_linux_premium_default_policy_group"],
        f"/console/policies/{group}": ["Asset discovery", "Open ports refresh (seconds)", "Copy group"],
        "/console/history": ["create_user".replace("_", " "), "add quotas"],
    }
    for url, expected in pages.items():
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:500])
        for text in expected:
            assert text in r.text, (url, text)
    assert client.get("/console/static/console.css").status_code == 200
    assert client.get("/console/static/console.js").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"
    missing = client.get("/console/servers/nope")
    assert missing.status_code == 404 and "server not found" in missing.text


def test_server_list_filters_search_paging_and_escaping(client: TestClient, app_ctx: ManagerContext) -> None:
    now = app_ctx.clock.now()
    with app_ctx.uow() as s:
        for i in range(23):
            enrolled_server(s, now, name=f"node-{i:02d}")
        evil = enrolled_server(s, now, name="<script>alert(1)</script>", online=False)
        evil.ips = ["192.0.2.77"]
    console_login(client)
    page = client.get("/console/servers?size=10&page=3").text
    assert page.count('<tr data-server-id="') == 4
    assert "21–24 of 24" in page
    page = client.get("/console/servers?agent_status=offline").text
    assert page.count('<tr data-server-id="') == 1
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    page = client.get("/console/servers?q=192.0.2.77").text
    assert page.count('<tr data-server-id="') == 1
    assert client.get("/console/servers?q=node-0&size=50").text.count('<tr data-server-id="') == 10
    bad = client.get("/console/servers?agent_status=sleepy")
    assert bad.status_code == 422 and "agent_status" in bad.text


def test_region_selector_scopes_the_pages(client: TestClient, app_ctx: ManagerContext) -> None:
    now = app_ctx.clock.now()
    with app_ctx.uow() as s:
        enrolled_server(s, now, name="eu-web", region="eu-1")
        enrolled_server(s, now, name="us-web", region="us-1")
    csrf = console_login(client)
    assert "eu-web" in client.get("/console/servers").text
    r = client.post("/console/region", data={"csrf": csrf, "region": "eu-1", "next": "/console/servers"})
    assert r.status_code == 200
    assert "eu-web" in r.text and "us-web" not in r.text
    assert '<option value="eu-1" selected>' in r.text
    dash = client.get("/console/").text
    assert re.search(r'data-figure="servers">.*?<a [^>]*>1</a>', dash, re.S)
    client.post("/console/region", data={"csrf": csrf, "region": "", "next": "/console/servers"})
    page = client.get("/console/servers").text
    assert "eu-web" in page and "us-web" in page


# ---- actions -------------------------------------------------------------------------------------------


def test_enable_disable_and_switch_edition(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    ids = seed(app_ctx)
    csrf = console_login(client, "oper")
    page = client.get("/console/servers").text
    idle = re.search(r'data-idle="([^"]*)"', page)
    assert idle and "&#34;premium&#34;: 1" in idle.group(1)
    r = post(
        client,
        csrf,
        "/console/servers/enable",
        server_ids=ids["web"],
        edition="premium",
        next="/console/servers",
    )
    assert r.status_code == 200
    html = r.text
    assert flash(html).startswith("ok: Protection enabled (premium): web-1")
    web_row = row(html, f'data-server-id="{ids["web"]}"')
    assert 'data-status="opened"' in web_row and "Protected" in web_row and "Premium" in web_row
    with app_ctx.uow() as s:
        assert s.scalar(select(Quota.server_id).where(Quota.edition == "premium")) == ids["web"]
        assert s.scalar(select(Scan.trigger).where(Scan.server_id == ids["web"])) == "enable"
    # The second server is refused with the reason; the offline one too.
    html = post(
        client,
        csrf,
        "/console/servers/enable",
        server_ids=[ids["db"], ids["gone"]],
        edition="premium",
        next="/console/servers",
    ).text
    message = flash(html)
    assert message.startswith("error:")
    assert "db-1: no idle premium quota in region default" in message
    assert "old-1: server old-1: agent is offline" in message
    # Switch premium -> enterprise frees the premium quota.
    html = post(
        client,
        csrf,
        "/console/servers/switch-edition",
        server_ids=ids["web"],
        edition="enterprise",
        next="/console/servers",
    ).text
    assert flash(html).startswith("ok: Edition switched to enterprise")
    assert "Enterprise" in row(html, f'data-server-id="{ids["web"]}"')
    html = post(client, csrf, "/console/servers/disable", server_ids=ids["web"], next="/console/servers").text
    assert 'data-status="closed"' in row(html, f'data-server-id="{ids["web"]}"')
    with app_ctx.uow() as s:
        assert s.scalar(select(Quota).where(Quota.server_id.is_not(None))) is None
    r = client.post(
        "/console/servers/enable", data={"csrf": csrf, "edition": "premium", "next": "/console/servers"}
    )
    assert flash(r.text) == "error: select at least one server"


def test_quotas_add_unbind_delete_and_auto_bind(client: TestClient, app_ctx: ManagerContext) -> None:
    ids = seed(app_ctx)
    csrf = console_login(client)
    html = post(
        client,
        csrf,
        "/console/quotas",
        edition="basic",
        count="3",
        expires="2999-12-31",
        region="default",
        next="/console/quotas",
    ).text
    assert flash(html) == "ok: Added 3 basic quotas in region default, valid through 2999-12-31."
    html = post(client, csrf, "/console/quotas", edition="gold", count="1", next="/console/quotas").text
    assert flash(html).startswith("error: edition must be one of")
    html = client.get("/console/quotas?edition=basic").text
    assert html.count('data-quota-id="') == 3 and "2999-12-31" in html
    post(
        client, csrf, "/console/servers/enable", server_ids=ids["web"], edition="enterprise", next="/console/"
    )
    with app_ctx.uow() as s:
        qid = s.scalar(select(Quota.id).where(Quota.server_id == ids["web"]))
    html = post(client, csrf, f"/console/quotas/{qid}/unbind", next="/console/quotas").text
    assert flash(html).startswith("ok: Quota unbound")
    with app_ctx.uow() as s:
        assert s.get(Server, ids["web"]).protection_status == "closed"  # type: ignore[union-attr]
    html = post(client, csrf, f"/console/quotas/{qid}/delete", next="/console/quotas").text
    assert flash(html) == "ok: Quota deleted."
    html = post(
        client, csrf, "/console/quotas/auto-bind", enabled="1", edition="premium", next="/console/quotas"
    ).text
    assert flash(html).startswith("ok: Auto-bind is on")
    with app_ctx.uow() as s:
        assert global_settings.get(s, "auto_bind") == {"enabled": True, "edition": "premium"}


def test_alarm_handling_undo_and_whitelist(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    ids = seed(app_ctx)
    csrf = console_login(client, "oper")
    html = post(
        client,
        csrf,
        "/console/alarms/handle",
        alarm_ids=ids["alarm"],
        action="ignore",
        remark="known admin",
        next="/console/alarms",
    ).text
    assert flash(html) == "ok: 1 alarm ignored."
    alarm_row = row(html, f'data-alarm-id="{ids["alarm"]}"')
    assert "Handled" in alarm_row and "Stop ignoring" in alarm_row
    html = post(
        client,
        csrf,
        "/console/alarms/handle",
        alarm_ids=ids["alarm"],
        action="unhandle",
        next="/console/alarms",
    ).text
    assert flash(html).startswith("error:") and "unhandle undoes mark_as_handled" in flash(html)
    post(
        client,
        csrf,
        "/console/alarms/handle",
        alarm_ids=ids["alarm"],
        action="do_not_ignore",
        next="/console/",
    )
    html = post(
        client,
        csrf,
        "/console/alarms/handle",
        alarm_ids=ids["alarm"],
        action="add_to_alarm_whitelist",
        wl_field="username",
        wl_judge="equal",
        wl_scope="all",
        next=f"/console/alarms/{ids['alarm']}",
    ).text
    assert flash(html) == "ok: 1 alarm whitelisted."
    assert "Whitelisted" in html and "Remove from alarm whitelist" in html
    with app_ctx.uow() as s:
        rule = s.scalar(select(AlarmWhitelistRule))
        assert rule is not None and (rule.field, rule.value, rule.server_ids) == ("username", "toor", None)
    history = client.get(f"/console/alarms/{ids['alarm']}").text
    assert "Ignore" in history and "known admin" in history
    assert "toor" in client.get("/console/whitelists/alarm").text


def test_whitelist_rules_add_apply_delete(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    ids = seed(app_ctx)
    csrf = console_login(client, "oper")
    html = post(
        client,
        csrf,
        "/console/whitelists/alarm",
        event_class="user_1002",
        field="username",
        judge="glob",
        value="to*",
        servers="db-1",
        next="/console/whitelists/alarm",
    ).text
    assert flash(html).startswith("ok: Whitelist rule added (username glob to*)")
    assert "db-1" in html
    with app_ctx.uow() as s:
        rule_id = s.scalar(select(AlarmWhitelistRule.id))
    html = post(
        client, csrf, f"/console/whitelists/alarm/{rule_id}/apply", next="/console/whitelists/alarm"
    ).text
    assert flash(html) == "ok: Rule applied: 1 open alarm handled."
    with app_ctx.uow() as s:
        assert s.get(Alarm, ids["alarm"]).handle_action == "whitelisted"  # type: ignore[union-attr]
    html = post(
        client,
        csrf,
        "/console/whitelists/alarm",
        field="username",
        value="x",
        servers="no-such-host",
        next="/console/whitelists/alarm",
    ).text
    assert flash(html) == "error: no server with id or name 'no-such-host'"
    html = post(
        client, csrf, f"/console/whitelists/alarm/{rule_id}/delete", next="/console/whitelists/alarm"
    ).text
    assert flash(html).startswith("ok: Rule deleted") and "No whitelist rules" in html


def test_policy_settings_copy_apply_and_delete(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    ids = seed(app_ctx)
    with app_ctx.uow() as s:
        premium = policies.default_group(s, "premium").id
        enterprise = policies.default_group(s, "enterprise").id
    csrf = console_login(client, "oper")
    # The enterprise default is view only: fields disabled, no save button.
    page = client.get(f"/console/policies/{enterprise}").text
    assert "View only" in page and ">Save</button>" not in page
    html = post(
        client,
        csrf,
        f"/console/policies/{premium}/copy",
        name="web servers",
        description="for web",
        next=f"/console/policies/{premium}",
    ).text
    assert flash(html) == "ok: Policy group web servers created."
    with app_ctx.uow() as s:
        custom = s.scalar(select(PolicyGroup).where(PolicyGroup.name == "web servers"))
        assert custom is not None
        custom_id, version = custom.id, custom.version
    url = f"/console/policies/{custom_id}/policies/asset_discovery"
    form = {
        "enabled": "1",
        "s_ports_interval_s": "60",
        "s_accounts_interval_s": "600",
        "s_processes_interval_s": "3600",
        "s_autostart_interval_s": "3600",
        "s_software_interval_s": "86400",
        "next": f"/console/policies/{custom_id}",
    }
    html = post(client, csrf, url, **form).text
    assert flash(html).startswith("ok: Policy Asset discovery saved")
    with app_ctx.uow() as s:
        group = s.get(PolicyGroup, custom_id)
        assert group is not None and group.version == version + 1
        settings = next(p for p in group.policies if p.key == "asset_discovery").settings
        # The unchecked checkbox turned account alarms off.
        assert (settings["ports_interval_s"], settings["account_alarms"]) == (60, False)
    html = post(client, csrf, url, **{**form, "s_ports_interval_s": "5"}).text
    assert flash(html).startswith("error: policy asset_discovery: ports_interval_s")
    html = post(client, csrf, url, **{**form, "s_ports_interval_s": "soon"}).text
    assert flash(html) == "error: Open ports refresh (seconds): 'soon' is not a whole number"
    # Deploy to a premium server, then the group cannot be deleted.
    post(client, csrf, "/console/servers/enable", server_ids=ids["web"], edition="premium", next="/console/")
    page = client.get(f"/console/policies/{custom_id}").text
    assert "web-1" in page
    html = post(
        client,
        csrf,
        f"/console/policies/{custom_id}/apply",
        server_ids=ids["web"],
        next=f"/console/policies/{custom_id}",
    ).text
    assert flash(html) == "ok: Policy group deployed to 1 server(s): web-1."
    html = post(client, csrf, f"/console/policies/{custom_id}/delete", next="/console/policies").text
    assert flash(html) == "error: policy group web servers is deployed to servers and cannot be deleted"
    post(client, csrf, f"/console/policies/{premium}/apply", server_ids=ids["web"], next="/console/")
    html = post(client, csrf, f"/console/policies/{custom_id}/delete").text
    assert flash(html) == "ok: Policy group web servers deleted."


def test_agents_page_creates_and_revokes_tokens(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    pki.ensure_pki(app_ctx.settings)
    csrf = console_login(client, "oper")
    r = client.post(
        "/console/agents/tokens",
        data={
            "csrf": csrf,
            "hours": "2",
            "max_uses": "3",
            "region": "default",
            "description": "rack 4",
            "name": "a1",
        },
    )
    assert r.status_code == 200
    command = re.search(r'<pre id="install-command">(.*?)</pre>', r.text, re.S)
    assert command is not None
    text = command.group(1)
    assert "hostward agent enroll --manager https://127.0.0.1:10180 --token hwe_" in text
    assert f"--ca-fingerprint {pki.ca_fingerprint(app_ctx.settings)}" in text and "--name a1" in text
    assert "rack 4" in r.text and "0 / 3" in r.text
    with app_ctx.uow() as s:
        (token,) = agentlink.list_enrollment_tokens(s)
        assert token.max_uses == 3 and token.expires_at - token.created_at == timedelta(hours=2)
    html = post(client, csrf, f"/console/agents/tokens/{token.id}/revoke", next="/console/agents").text
    assert flash(html).startswith("ok: Enrollment token revoked")
    assert "Revoked" in html
    html = post(client, csrf, "/console/agents/tokens", hours="0", next="/console/agents").text
    assert flash(html) == "error: hours must be between 1 and 8760"


def test_server_detail_edit_scan_and_credentials(client: TestClient, app_ctx: ManagerContext) -> None:
    add_user(app_ctx, "oper", "operator")
    ids = seed(app_ctx)
    with app_ctx.uow() as s:
        server = s.get(Server, ids["web"])
        assert server is not None
        cred, _raw = agentlink._new_credential(s, server, app_ctx.clock.now())
        s.flush()
        cred_id = cred.id
    csrf = console_login(client, "oper")
    detail = f"/console/servers/{ids['web']}"
    html = post(
        client,
        csrf,
        f"{detail}/edit",
        name="web-1",
        asset_importance="important",
        labels="prod, <b>eu</b>\nweb",
        server_group_id="",
        next=detail,
    ).text
    assert flash(html) == "ok: Server details saved."
    with app_ctx.uow() as s:
        server = s.get(Server, ids["web"])
        assert server is not None
        assert (server.asset_importance, server.labels) == ("important", ["<b>eu</b>", "prod", "web"])
    assert "&lt;b&gt;eu&lt;/b&gt;" in client.get("/console/servers").text
    # Scans need protection on.
    html = post(client, csrf, f"{detail}/scan", kind="full").text
    assert flash(html) == "error: server web-1 is not protected (closed); enable protection first"
    assert 'id="enable-dialog"' in client.get(detail).text
    html = post(
        client, csrf, "/console/servers/enable", server_ids=ids["web"], edition="premium", next=detail
    ).text
    assert flash(html).startswith("ok: Protection enabled") and "Disable protection" in html
    assert "Switch to Enterprise" in html and 'id="enable-dialog"' not in html
    with app_ctx.uow() as s:
        (scan,) = s.scalars(select(Scan).where(Scan.server_id == ids["web"]))
        scan_id = scan.id
    page = client.get(f"{detail}?tab=scans")
    assert 'data-refresh="3"' in page.text and 'class="progress' in page.text and "On enable" in page.text
    html = post(client, csrf, f"{detail}/scans/{scan_id}/cancel").text
    assert flash(html) == "ok: Scan cancelled."
    html = post(client, csrf, f"{detail}/scan", kind="asset").text
    assert flash(html).startswith("ok: Scan queued")
    assert "Asset collection" in html
    html = post(client, csrf, f"{detail}/credentials/{cred_id}/revoke").text
    assert flash(html).startswith("ok: Credential hwa_")
    assert 'data-status="revoked"' in html


def test_dashboard_figures(client: TestClient, app_ctx: ManagerContext) -> None:
    ids = seed(app_ctx)
    console_login(client)
    post(
        client,
        hashlib.sha256(("csrf:" + client.cookies[SESSION_COOKIE]).encode()).hexdigest(),
        "/console/servers/enable",
        server_ids=ids["web"],
        edition="premium",
        next="/console/",
    )
    html = client.get("/console/").text
    assert re.search(r'data-figure="protected">1<', html)
    assert re.search(r'data-severity-count="high">1<', html)
    premium = row(html, 'data-quota-edition="premium"')
    assert "1 / 1" in premium
    # Ring: two online (one of them protected), one offline.
    ring = html[html.index('aria-label="Agent status') :]
    assert ring[: ring.index("</svg>")].count("stroke-dasharray=") == 2


def test_settings_form_round_trip() -> None:
    """Schema -> widgets -> posted form -> settings, for the value types policies use."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class Sample(BaseModel):
        paths: list[str] = Field(default_factory=lambda: ["/etc"])
        ports: list[int] = Field(default_factory=list)
        limit_mb: int | None = None
        mode: Literal["alarm", "alarm_and_isolate"] = "alarm"
        enabled: bool = True
        extra: dict[str, int] = Field(default_factory=dict)

    fields = fields_for(Sample.model_json_schema(), Sample().model_dump())
    widgets = {f.name: (f.widget, f.title) for f in fields}
    assert widgets == {
        "paths": ("lines", "Paths"),
        "ports": ("lines", "Ports"),
        "limit_mb": ("number", "Limit (MB)"),
        "mode": ("select", "Mode"),
        "enabled": ("checkbox", "Enabled"),
        "extra": ("json", "Extra"),
    }
    assert next(f for f in fields if f.name == "paths").text == "/etc"
    assert next(f for f in fields if f.name == "extra").text == "{}"
    posted = {
        "s_paths": " /srv\n\n/var/www ",
        "s_ports": "22\n2222",
        "s_limit_mb": "",
        "s_mode": "alarm_and_isolate",
        "s_extra": '{"a": 1}',
    }
    settings = parse_form(fields, posted)
    assert settings == {
        "paths": ["/srv", "/var/www"],
        "ports": [22, 2222],
        "limit_mb": None,
        "mode": "alarm_and_isolate",
        "enabled": False,
        "extra": {"a": 1},
    }
    assert Sample(**settings).ports == [22, 2222]
    with pytest.raises(Invalid, match="Extra: not valid JSON"):
        parse_form(fields, {**posted, "s_extra": "{"})
