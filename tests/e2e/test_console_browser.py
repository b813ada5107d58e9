"""The console in a real browser: a real manager process, Chromium driven by Playwright.

Logs in, opens Servers & Quota, enables protection through the Enable dialog with the premium edition
and sees the server Protected; screenshots of the pages are kept in the test's tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hostward.manager.alarms import service as alarms
from hostward.manager.bootstrap import init_manager
from hostward.manager.context import ManagerContext
from hostward.manager.quotas import service as quotas
from hostward.manager.servers.models import Server
from hostward.manager.settings import load_settings
from hostward.wire import AlarmEvent
from tests.conftest import free_port, need
from tests.fakes.servers import enrolled_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PASSWORD = "e2e-console-password"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Manager:
    url: str
    ctx: ManagerContext
    ids: dict[str, str]


def _seed(ctx: ManagerContext) -> dict[str, str]:
    """An online server to protect, a few others for a realistic list, one premium quota, an alarm."""
    now = ctx.clock.now()
    with ctx.uow() as s:
        web = enrolled_server(s, now, name="e2e-web")
        web.ips = ["10.20.0.11"]
        web.os_name, web.os_version, web.agent_version = "Debian GNU/Linux", "12", "0.1.0"
        web.labels = ["prod", "web"]
        db = enrolled_server(s, now, name="e2e-db")
        db.ips = ["10.20.0.12"]
        old = enrolled_server(s, now, name="e2e-legacy", online=False)
        old.ips = ["10.20.0.13"]
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="e2e"
        )
        quotas.add_quotas(
            s, "enterprise", 2, expires_at=None, region=None, now=now, settings=ctx.settings, actor="e2e"
        )
        alarms.ingest(
            s,
            db,
            AlarmEvent(
                key="e2e-1",
                occurred_at=now,
                event_class="user_1002",
                fingerprint="user_1002:toor",
                title="New uid-0 account toor",
                evidence={"username": "toor", "uid": 0},
            ),
            now,
        )
        return {"web": web.id, "db": db.id}


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    need("browser")
    data_dir = tmp_path / "manager"
    port, agent_port = free_port(), free_port()
    init_manager(
        data_dir, listen=f"127.0.0.1:{port}", agent_listen=f"127.0.0.1:{agent_port}", admin_password=PASSWORD
    )
    # Seeded servers have no agent sending heartbeats: keep them online for the length of the test.
    with (data_dir / "manager.toml").open("a") as f:
        f.write("heartbeat_interval = 600\n")
    settings = load_settings(data_dir)
    ctx = ManagerContext.from_settings(settings)
    ids = _seed(ctx)
    log = (tmp_path / "manager.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostward.cli",
            "manager",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--agent-listen",
            f"127.0.0.1:{agent_port}",
            "--plain-http",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "manager.log").read_text()
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                "manager did not start: " + (tmp_path / "manager.log").read_text()
            )
            time.sleep(0.2)
        yield Manager(url=url, ctx=ctx, ids=ids)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        ctx.close()


def test_login_enable_through_the_dialog_and_see_protected(manager: Manager, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = os.environ.get("HOSTWARD_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{manager.url}/console/")
            expect(page).to_have_url(f"{manager.url}/console/login?next=/console/")

            # A wrong password is refused with the reason.
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", "not-the-password")
            page.click("button[type=submit]")
            expect(page.locator(".flash-error")).to_contain_text("invalid username or password")

            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Dashboard")
            expect(page.locator('[data-figure="servers"] .num')).to_have_text("3")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            page.click('a[data-nav="servers"]')
            expect(page).to_have_url(f"{manager.url}/console/servers")
            row = page.locator(f'tr[data-server-id="{manager.ids["web"]}"]')
            expect(row.locator(".col-protection")).to_have_text("Unprotected")
            expect(row.locator(".col-agent")).to_have_text("Online")

            row.locator("button[data-enable]").click()
            dialog = page.locator("#enable-dialog")
            expect(dialog).to_be_visible()
            expect(dialog.locator(".dlg-targets")).to_contain_text("e2e-web")
            expect(dialog.locator('[data-idle-count="premium"]')).to_have_text("1")
            expect(dialog.locator('[data-idle-count="enterprise"]')).to_have_text("2")
            expect(dialog.locator('input[value="basic"]')).to_be_disabled()
            expect(dialog.locator(".dlg-none")).to_be_hidden()
            dialog.locator('input[name=edition][value="premium"]').check()
            page.screenshot(path=str(tmp_path / "enable-dialog.png"))
            dialog.locator("button[type=submit]").click()

            expect(page.locator(".flash-ok")).to_contain_text("Protection enabled (premium): e2e-web")
            row = page.locator(f'tr[data-server-id="{manager.ids["web"]}"]')
            expect(row.locator(".col-protection")).to_have_text("Protected")
            expect(row.locator(".col-edition")).to_have_text("Premium")
            page.screenshot(path=str(tmp_path / "servers.png"), full_page=True)

            # Batch: select the second server; no premium quota is left, so the dialog offers enterprise.
            db_row = page.locator(f'tr[data-server-id="{manager.ids["db"]}"]')
            db_row.locator("input[data-check]").check()
            page.locator("button[data-enable-selected]").click()
            expect(dialog.locator(".dlg-targets")).to_contain_text("e2e-db")
            expect(dialog.locator('[data-idle-count="premium"]')).to_have_text("0")
            expect(dialog.locator('input[value="premium"]')).to_be_disabled()
            expect(dialog.locator('input[value="enterprise"]')).to_be_checked()
            dialog.locator("button[type=submit]").click()
            expect(page.locator(".flash-ok")).to_contain_text("Protection enabled (enterprise): e2e-db")
            db_row = page.locator(f'tr[data-server-id="{manager.ids["db"]}"]')
            expect(db_row.locator(".col-protection")).to_have_text("Protected")
            expect(db_row.locator(".col-edition")).to_have_text("Enterprise")

            # The server page shows the comprehensive-detection scan queued on enable.
            row.locator("td a", has_text="e2e-web").click()
            expect(page.locator("h1")).to_have_text("e2e-web")
            page.locator(".tabs a", has_text="Scans").click()
            expect(page.locator("#scans-table tbody tr").first).to_contain_text("Comprehensive detection")
            page.screenshot(path=str(tmp_path / "server-scans.png"), full_page=True)
        finally:
            browser.close()

    # The change made in the browser is in the database.
    with manager.ctx.uow() as s:
        server = s.get(Server, manager.ids["web"])
        assert server is not None
        assert (server.protection_status, server.edition) == ("opened", "premium")


def test_wtp_page_enable_and_manage_directories(manager: Manager, tmp_path: Path) -> None:
    """Web Tamper Protection page: add a server (binds the wtp quota), add a protected directory with
    exclusions, see a refused one explained, suspend it."""
    from playwright.sync_api import expect, sync_playwright

    now = manager.ctx.clock.now()
    with manager.ctx.uow() as s:
        quotas.add_quotas(
            s, "wtp", 1, expires_at=None, region=None, now=now, settings=manager.ctx.settings, actor="e2e"
        )
    web = manager.ids["web"]
    chromium = os.environ.get("HOSTWARD_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{manager.url}/console/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Dashboard")

            page.click('a[data-nav="wtp"]')
            expect(page.locator("h1")).to_have_text("Web Tamper Protection")
            page.select_option("#wtp-enable select[name=server_ids]", web)
            page.locator("#wtp-enable button[type=submit]").click()
            expect(page.locator(".flash-ok")).to_contain_text("Web tamper protection enabled on 1 server")
            row = page.locator(f'#wtp-servers tr[data-server-id="{web}"]')
            expect(row.locator("[data-wtp-state]")).to_have_text("Starting")  # no agent reports here

            row.locator("a", has_text="Configure").click()
            expect(page.locator("h1")).to_have_text("e2e-web")
            form = page.locator("#wtp-add-dir")
            form.locator("input[name=path]").fill("/srv/site")
            form.locator("input[name=excluded_types]").fill("log; tmp")
            form.locator("button[type=submit]").click()
            expect(page.locator(".flash-ok")).to_contain_text("Protected directory /srv/site saved")
            dir_row = page.locator('#wtp-dirs tr[data-dir="/srv/site"]')
            expect(dir_row).to_contain_text("log; tmp")

            form.locator("input[name=path]").fill("/etc")
            form.locator("button[type=submit]").click()
            expect(page.locator(".flash-error")).to_contain_text("system directory")

            dir_row.locator("button", has_text="Suspend").click()
            expect(page.locator(".flash-ok")).to_contain_text("/srv/site suspended")
            expect(page.locator('#wtp-dirs tr[data-dir="/srv/site"]')).to_contain_text("Suspended")
            page.screenshot(path=str(tmp_path / "wtp-server.png"), full_page=True)
        finally:
            browser.close()

    with manager.ctx.uow() as s:
        server = s.get(Server, web)
        assert server is not None and server.edition == "wtp"
