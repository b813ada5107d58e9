"""Asset collection on a prepared tree and on this real machine."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hostward.agent.collectors.assets import CATEGORIES, AssetCollector, collect_accounts, parse_proc_modules
from hostward.agent.collectors.autostart import collect_autostart
from hostward.agent.collectors.hostfacts import collect_host_facts, read_timezone
from hostward.agent.collectors.packages import parse_dpkg_status, parse_rpm_output

NOW = datetime(2025, 1, 1, tzinfo=UTC)

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
+nisuser::::::
alice:x:1000:1000:Alice:/home/alice:/bin/bash
svc:x:998:998::/var/lib/svc:/bin/false
broken-line
weird:x:notanumber:1::/:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
sudo:x:27:alice
docker:x:999:alice,svc
alice:x:1000:
svc:x:998:
"""
DPKG = """\
Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0
Architecture: all

Package: coreutils
Status: install ok installed
Version: 9.1-1
Architecture: amd64
"""
MODULES = """\
nf_tables 372736 3 nft_chain_nat,nft_compat, Live 0x0000000000000000
ext4 1085440 2 - Live 0x0000000000000000
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    write(root / "etc/passwd", PASSWD)
    write(root / "etc/group", GROUP)
    write(root / "var/lib/dpkg/status", DPKG)
    write(root / "proc/modules", MODULES)
    write(root / "etc/crontab", "* * * * * root true\n")
    write(root / "etc/cron.d/backup", "0 3 * * * root /usr/local/bin/backup\n")
    write(root / "etc/cron.d/.placeholder", "")
    write(root / "var/spool/cron/crontabs/alice", "@reboot /home/alice/run.sh\n")
    write(root / "etc/cron.daily/logrotate", "#!/bin/sh\n")
    unit = write(root / "lib/systemd/system/ssh.service", "[Service]\nExecStart=/usr/sbin/sshd\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")  # absolute, as systemctl does
    (wants / "gone.service").symlink_to("/lib/systemd/system/gone.service")
    write(root / "etc/init.d/nginx", "#!/bin/sh\n")
    write(root / "etc/rc.local", "#!/bin/sh\nexit 0\n")
    write(root / "etc/ld.so.preload", "/usr/lib/evil.so\n")
    write(root / "usr/lib/evil.so", "ELF")
    write(root / "etc/os-release", 'NAME="Test Linux"\nVERSION_ID="7"\nID=test\n')
    write(root / "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    write(root / "etc/hostname", "prepared-host\n")
    write(root / "etc/timezone", "Europe/Paris\n")
    root.joinpath("ssh-sha").write_text(hashlib.sha256(unit.read_bytes()).hexdigest())
    return root


def test_accounts_from_prepared_tree(tree: Path) -> None:
    accounts = {a.name: a for a in collect_accounts(tree)}
    assert set(accounts) == {"root", "daemon", "alice", "svc"}
    assert accounts["root"].root and accounts["root"].uid == 0 and accounts["root"].login_allowed
    assert not accounts["daemon"].login_allowed and not accounts["svc"].login_allowed
    assert accounts["alice"].groups == ["alice", "sudo", "docker"]
    assert accounts["svc"].groups == ["svc", "docker"]
    assert not accounts["alice"].root


def test_packages_and_modules_parsers() -> None:
    pkgs = parse_dpkg_status(DPKG)
    assert [(p.name, p.version, p.arch, p.manager) for p in pkgs] == [
        ("bash", "5.2.15-2+b2", "amd64", "dpkg"),
        ("coreutils", "9.1-1", "amd64", "dpkg"),
    ]
    rpms = parse_rpm_output("bash\t0:5.1-1.el9\tx86_64\ngpg-pubkey\t1-2\t(none)\nkernel\t5.14-1\tx86_64\n")
    assert [(p.name, p.version, p.manager) for p in rpms] == [
        ("bash", "0:5.1-1.el9", "rpm"),
        ("kernel", "5.14-1", "rpm"),
    ]
    mods = parse_proc_modules(MODULES)
    assert mods[0].name == "nf_tables" and mods[0].size == 372736
    assert mods[0].used_by == ["nft_chain_nat", "nft_compat"] and mods[1].used_by == []


def test_autostart_from_prepared_tree(tree: Path) -> None:
    items = {(i.type, i.name): i for i in collect_autostart(tree)}
    ssh = items[("service", "ssh.service")]
    assert ssh.path == "/lib/systemd/system/ssh.service"
    assert ssh.sha256 == (tree / "ssh-sha").read_text()
    assert items[("service", "gone.service")].sha256 == ""  # dangling link: listed, not hashed
    assert items[("cron", "/etc/crontab")].user == "root"
    assert ("cron", "/etc/cron.d/backup") in items and ("cron", "/etc/cron.d/.placeholder") not in items
    assert items[("cron", "/var/spool/cron/crontabs/alice")].user == "alice"
    assert ("cron", "/etc/cron.daily/logrotate") in items
    assert ("rc_script", "nginx") in items and ("rc_script", "rc.local") in items
    preload = items[("preload", "/usr/lib/evil.so")]
    assert preload.path == "/usr/lib/evil.so" and preload.sha256 == hashlib.sha256(b"ELF").hexdigest()


def test_hash_is_capped(tree: Path) -> None:
    items = {(i.type, i.name): i for i in collect_autostart(tree, max_hash_bytes=4)}
    assert items[("rc_script", "rc.local")].sha256 == ""


def test_snapshot_of_prepared_tree_and_error_isolation(tree: Path) -> None:
    (tree / "etc/passwd").unlink()
    snap = AssetCollector(tree).collect(NOW)
    assert "accounts" in snap.errors and "FileNotFoundError" in snap.errors["accounts"]
    assert [p.name for p in snap.packages] == ["bash", "coreutils"]
    assert len(snap.kernel_modules) == 2
    assert snap.autostart and snap.processes and "packages" not in snap.errors


def test_checkpoint_sees_every_category(tree: Path) -> None:
    seen: list[tuple[str, int]] = []
    AssetCollector(tree).collect(NOW, checkpoint=lambda c, i: seen.append((c, i)))
    assert seen == [(c, i) for i, c in enumerate(CATEGORIES)]


def test_host_facts_from_prepared_tree(tree: Path) -> None:
    facts = collect_host_facts(tree)
    assert facts.hostname == "prepared-host"
    assert facts.machine_id == "0123456789abcdef0123456789abcdef"
    assert (facts.os_name, facts.os_version) == ("Test Linux", "7")
    assert facts.timezone == "Europe/Paris" and facts.utc_offset_minutes in (60, 120)
    assert facts.kernel == os.uname().release and facts.agent_version
    assert all(not ip.startswith("127.") and ip != "::1" for ip in facts.ips)


def test_timezone_from_localtime_link(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/localtime").symlink_to("/usr/share/zoneinfo/America/New_York")
    assert read_timezone(tmp_path) == "America/New_York"
    assert read_timezone(tmp_path / "nothing") == "UTC"


def test_machine_id_fallback(tmp_path: Path) -> None:
    assert collect_host_facts(tmp_path, machine_id_fallback="fallback-id").machine_id == "fallback-id"


# ---- this real machine --------------------------------------------------------------------------


def test_real_machine_snapshot() -> None:
    snap = AssetCollector().collect(datetime.now(UTC))
    names = {a.name: a for a in snap.accounts}
    assert "root" in names and names["root"].uid == 0 and names["root"].root
    if Path("/var/lib/dpkg/status").exists():
        assert sum(1 for p in snap.packages if p.manager == "dpkg") > 50
    if Path("/proc/modules").exists():
        assert snap.kernel_modules and "kernel_modules" not in snap.errors
    else:
        assert "kernel_modules" in snap.errors
    assert any(p.pid == os.getpid() for p in snap.processes)
    assert set(snap.errors) <= {"kernel_modules"}


def test_real_machine_sees_our_listening_socket() -> None:
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        snap = AssetCollector().collect(datetime.now(UTC), categories=("ports",))
    [ours] = [p for p in snap.ports if p.port == port]
    assert ours.protocol == "tcp" and ours.address == "127.0.0.1"
    if os.geteuid() == 0:
        assert ours.pid == os.getpid() and ours.process
