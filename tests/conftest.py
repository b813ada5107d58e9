"""Shared fixtures and capability gates.

A test that needs root, network namespaces, nftables, PostgreSQL or a browser calls ``need(...)``: it is
skipped with a reason where the capability is missing, and FAILS instead when the capability is listed in
``HOSTWARD_REQUIRE`` (comma-separated, or ``all``), which CI sets so a mandatory test cannot skip silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostward.manager.context import ManagerContext
from hostward.manager.db import migrate
from hostward.manager.settings import ManagerSettings

CAPABILITIES = ("root", "netns", "nft", "postgres", "browser", "native")
PG_ADMIN_URL = os.environ.get("HOSTWARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _required() -> set[str]:
    raw = os.environ.get("HOSTWARD_REQUIRE", "")
    names = {n.strip() for n in raw.split(",") if n.strip()}
    return set(CAPABILITIES) if "all" in names else names


def need(capability: str, reason: str | None = None) -> None:
    """Skip (or fail, when required by HOSTWARD_REQUIRE) unless ``capability`` is available."""
    ok, why = _probe(capability)
    if ok:
        return
    message = f"{capability} unavailable: {reason or why}"
    if capability in _required():
        pytest.fail(f"mandatory capability missing ({message})", pytrace=False)
    pytest.skip(message)


_probe_cache: dict[str, tuple[bool, str]] = {}


def _probe(capability: str) -> tuple[bool, str]:
    if capability in _probe_cache:
        return _probe_cache[capability]
    result: tuple[bool, str]
    if capability == "root":
        result = (os.geteuid() == 0, "not running as root")
    elif capability == "netns":
        ok = os.geteuid() == 0 and shutil.which("ip") is not None
        if ok:
            name = f"hwprobe{uuid.uuid4().hex[:6]}"
            ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        result = (ok, "needs root and iproute2 (ip netns)")
    elif capability == "nft":
        result = (os.geteuid() == 0 and shutil.which("nft") is not None, "needs root and nftables (nft)")
    elif capability == "postgres":
        result = (_pg_available(), f"no PostgreSQL at {PG_ADMIN_URL}")
    elif capability == "browser":
        chromium = os.environ.get("HOSTWARD_CHROMIUM", "/usr/bin/chromium")
        try:
            import playwright  # noqa: F401

            has_pw = True
        except ImportError:
            has_pw = False
        result = (has_pw and Path(chromium).exists(), f"needs playwright and Chromium at {chromium}")
    elif capability == "native":
        from hostward import native

        missing = [name for name in native.MODULES if _native_module(name) is None]
        result = (not missing, f"C accelerators not built: {', '.join(missing)} (see setup.py)")
    else:
        raise ValueError(f"unknown capability {capability}")
    _probe_cache[capability] = result
    return result


def _native_module(name: str) -> object | None:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    need("postgres")
    import psycopg

    name = f"hw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def make_settings(data_dir: Path, database_url: str = "", **values: object) -> ManagerSettings:
    data_dir.mkdir(parents=True, exist_ok=True)
    return ManagerSettings(data_dir=data_dir, database_url=database_url, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> ManagerSettings:
    return make_settings(tmp_path / "manager")


@pytest.fixture
def ctx(settings: ManagerSettings) -> Iterator[ManagerContext]:
    """A migrated SQLite manager context."""
    migrate.upgrade(settings.effective_database_url)
    context = ManagerContext.from_settings(settings)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def pg_ctx(tmp_path: Path, pg_url: str) -> Iterator[ManagerContext]:
    """A migrated PostgreSQL manager context."""
    s = make_settings(tmp_path / "manager-pg", database_url=pg_url)
    migrate.upgrade(s.effective_database_url)
    context = ManagerContext.from_settings(s)
    try:
        yield context
    finally:
        context.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With HOSTWARD_NO_SKIPS=1 (CI), any skipped test fails the run: nothing mandatory skips silently."""
    if os.environ.get("HOSTWARD_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(
                f"HOSTWARD_NO_SKIPS=1: {skipped} test(s) skipped -> failing the run", red=True
            )
