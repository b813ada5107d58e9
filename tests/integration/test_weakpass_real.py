"""Weak-password detection on real accounts created with useradd + chpasswd (yescrypt, Debian 12's
default, and SHA-512), and the clear status of an unreadable or missing shadow file."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hostward.agent.weakpass import WeakpassConfig, check_shadow, weak_password_alarms
from tests.conftest import need


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(list(argv), input=stdin, text=True, check=True, capture_output=True)


@pytest.fixture
def accounts() -> Iterator[dict[str, str]]:
    need("root", "creates real accounts with useradd")
    tag = uuid.uuid4().hex[:6]
    users = {
        f"hwy{tag}": ("yescrypt", "123456"),  # common password, yescrypt (chpasswd default on Debian 12)
        f"hws{tag}": ("SHA512", f"hws{tag}123"),  # username-derived, SHA-512
        f"hwk{tag}": ("SHA512", "Qz8!vN4#pL2@xR7$"),  # strong
        f"hwc{tag}": ("yescrypt", "Corp-Sp3cial-2024"),  # in the operator's custom list
        f"hwd{tag}": ("SHA512", "Corp-Sp3cial-2024"),  # same password as hwc: shared
    }
    created = []
    try:
        for name, (method, password) in users.items():
            _run("useradd", "-m", name)
            created.append(name)
            args = ["chpasswd"] if method == "yescrypt" else ["chpasswd", "-c", method]
            _run(*args, stdin=f"{name}:{password}\n")
        yield {name: method for name, (method, _) in users.items()}
    finally:
        for name in created:
            subprocess.run(["userdel", "-r", name], capture_output=True)


def test_weak_passwords_on_real_accounts(accounts: dict[str, str]) -> None:
    shadow = Path("/etc/shadow").read_text()
    hashes = {line.split(":")[0]: line.split(":")[1] for line in shadow.splitlines()}
    for name, method in accounts.items():
        assert hashes[name].startswith("$y$" if method == "yescrypt" else "$6$"), (name, hashes[name][:4])
    config = WeakpassConfig(max_hashes_per_second=None, workers=2, custom=("Corp-Sp3cial-2024",))
    report = check_shadow(Path("/etc/shadow"), config, wordlist=("password", "123456", "qwerty"))
    assert report.status == "ok" and report.complete
    weak = {w.username: w for w in report.weak if w.username in accounts}
    by_prefix = {name[:3]: name for name in accounts}
    assert weak[by_prefix["hwy"]].reasons == ("common_password",)
    assert weak[by_prefix["hws"]].reasons == ("username_derived",)
    assert set(weak[by_prefix["hwc"]].reasons) == {"custom_list", "shared_password"}
    assert set(weak[by_prefix["hwd"]].reasons) == {"custom_list", "shared_password"}
    assert by_prefix["hwk"] not in weak
    alarms = [
        a for a in weak_password_alarms(report, datetime.now(UTC)) if a.evidence["username"] in accounts
    ]
    assert {a.event_class for a in alarms} == {"login_1003"}
    for alarm in alarms:
        assert set(alarm.evidence) == {"username", "account_type", "reasons"}
        assert alarm.evidence["account_type"] == "user"
        dumped = alarm.model_dump_json()
        for secret in ("123456", "Corp-Sp3cial-2024", "$y$", "$6$"):
            assert secret not in dumped  # neither passwords nor hashes leave the host


def test_unreadable_shadow_is_a_clear_status(tmp_path: Path) -> None:
    need("root", "drops to another uid to make the file unreadable")
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$abc$def:19000:0:99999:7:::\n")
    shadow.chmod(0)
    os.chmod(tmp_path, 0o755)
    # A forked child drops to "nobody" and runs the check with the modules already imported (nobody
    # cannot execute this virtualenv's interpreter under /root).
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_fd, json.dumps(check_shadow(shadow).to_dict()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        data = json.loads(fh.read() or "{}")
    os.waitpid(pid, 0)
    assert data["status"] == "unreadable"
    assert "must run as root" in data["detail"]
    assert data["weak"] == [] and data["complete"] is False


def test_missing_shadow_is_a_clear_status(tmp_path: Path) -> None:
    report = check_shadow(tmp_path / "no-such-shadow")
    assert (report.status, report.complete) == ("missing", False)
    assert "does not exist" in report.detail
