"""The set-id and abnormal-shell checks on a real file tree under a host root (``host_root``), with their
baselines kept in the agent state directory across restarts: a restart reports what changed while the
agent was down and nothing already known; directories added to the policy start silently; a check
switched off forgets its baseline."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.detectors.revshell import KillRequest
from hostward.agent.malwarepolicy import desired_from_bundle
from hostward.agent.procthreats import ProcessThreats
from hostward.agent.threatstate import SETID_FILE, SHELLS_FILE
from hostward.wire import AlarmEvent, PolicyBundle, PolicyState
from tests.fakes.agent_clock import FakeClock


def bundle(**policies: dict[str, Any] | None) -> PolicyBundle:
    return PolicyBundle(
        version=int(time.monotonic() * 1000),
        group_id="g1",
        group_name="default",
        edition="premium",
        protection=True,
        policies={k: PolicyState(enabled=v is not None, settings=v or {}) for k, v in policies.items()},
    )


def no_kill(request: KillRequest) -> tuple[list[int], str]:
    raise AssertionError("nothing is killed here")


class Agentlet:
    """One 'agent run': the component over ``host`` with ``state`` as its state directory."""

    def __init__(self, host: Path, state: Path) -> None:
        self.events: list[Any] = []
        self.threats = ProcessThreats(
            self.events.extend, FakeClock(), kill=no_kill, host_root=str(host), state_dir=state
        )

    def run(self, b: PolicyBundle) -> list[AlarmEvent]:
        self.threats.configure(desired_from_bundle(b), exec_scan=False)
        before = len(self.events)
        self.threats.tick(0.0, force=True)
        return [e for e in self.events[before:] if isinstance(e, AlarmEvent)]

    def stop(self) -> None:
        self.threats.stop()


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    host, state = tmp_path / "host", tmp_path / "state"
    (host / "opt" / "app").mkdir(parents=True)
    (host / "srv" / "extra").mkdir(parents=True)
    state.mkdir(mode=0o700)
    yield host, state


def setuid_copy(path: Path, bits: int = stat.S_ISUID, source: str = "/bin/true") -> None:
    shutil.copy2(source, path)
    os.chmod(path, 0o755 | bits)


def paths(alarms: list[AlarmEvent]) -> list[tuple[str, str]]:
    return sorted((a.evidence["file_path"], a.evidence["change"]) for a in alarms)


def test_setid_baseline_survives_a_restart(tree: tuple[Path, Path]) -> None:
    host, state = tree
    app = host / "opt" / "app"
    setuid_copy(app / "known")
    on = bundle(file_privilege_escalation={"dirs": ["/opt/app"]})  # a host path: re-rooted under host
    first = Agentlet(host, state)
    assert first.run(on) == []  # the first collection is the baseline
    setuid_copy(app / "while-running")
    assert paths(first.run(on)) == [(str(app / "while-running"), "new")]
    first.stop()
    assert (state / SETID_FILE).exists()

    # while the agent is down: one new set-uid file, one gains set-gid, one is replaced
    setuid_copy(app / "while-down")
    os.chmod(app / "known", 0o755 | stat.S_ISUID | stat.S_ISGID)
    (app / "while-running").unlink()
    setuid_copy(app / "while-running", source="/bin/false")  # other content (the inode may be reused)
    second = Agentlet(host, state)
    assert paths(second.run(on)) == [
        (str(app / "known"), "bits_added"),
        (str(app / "while-down"), "new"),
        (str(app / "while-running"), "replaced"),
    ]
    assert second.run(on) == []
    second.stop()

    # a restart with nothing changed reports nothing
    third = Agentlet(host, state)
    assert third.run(on) == []
    # a directory added to the policy starts silently; new files in it are reported afterwards
    setuid_copy(host / "srv" / "extra" / "old")
    wider = bundle(file_privilege_escalation={"dirs": ["/opt/app", "/srv/extra"]})
    assert third.run(wider) == []
    setuid_copy(host / "srv" / "extra" / "fresh", stat.S_ISGID)
    (alarm,) = third.run(wider)
    assert alarm.evidence["file_path"] == str(host / "srv" / "extra" / "fresh")
    assert alarm.evidence["setid"] == "setgid"
    # switched off: the baseline is forgotten, switching on again starts silently
    third.run(bundle(file_privilege_escalation=None, reverse_shell={}))
    assert not (state / SETID_FILE).exists()
    setuid_copy(app / "while-off")
    assert third.run(wider) == []
    third.stop()


def test_setid_collection_stays_inside_the_host_root(tree: tuple[Path, Path]) -> None:
    host, state = tree
    agent = Agentlet(host, state)
    on = bundle(file_privilege_escalation={})  # default directories (/usr/bin, /tmp, ...) under host
    (host / "usr" / "bin").mkdir(parents=True)
    (host / "tmp").mkdir()
    assert agent.run(on) == []
    setuid_copy(host / "tmp" / "x")
    setuid_copy(host / "usr" / "bin" / "y")
    alarms = agent.run(on)
    assert paths(alarms) == [(str(host / "tmp" / "x"), "new"), (str(host / "usr" / "bin" / "y"), "new")]
    files = agent.threats.setid.baseline or {}
    assert files and all(p.startswith(str(host) + "/") for p in files)  # not the real /usr/bin's su, ...
    agent.stop()


def test_abnormal_shell_under_the_host_root_and_across_a_restart(tree: tuple[Path, Path]) -> None:
    host, state = tree
    (host / "usr" / "bin").mkdir(parents=True)
    (host / "bin").symlink_to("usr/bin")  # merged /usr, as on current distributions
    bash = host / "usr" / "bin" / "bash"
    shutil.copy2(os.path.realpath("/bin/bash"), bash)
    (host / "tmp").mkdir()
    shutil.copy2(bash, host / "tmp" / ".b")
    os.symlink("../usr/bin/bash", host / "tmp" / "sh")
    on = bundle(abnormal_shell={})
    first = Agentlet(host, state)
    alarms = first.run(on)
    # a copy in an odd place is reported when first seen; the shell is the host tree's, not ours
    assert paths(alarms) == [(str(host / "tmp" / ".b"), "copy"), (str(host / "tmp" / "sh"), "symlink")]
    assert alarms[0].evidence["shell"] == str(bash)
    assert first.run(on) == []
    first.stop()
    assert (state / SHELLS_FILE).exists()

    os.chmod(bash, 0o4755)  # while the agent is down
    second = Agentlet(host, state)
    alarms = second.run(on)
    assert paths(alarms) == [(str(bash), "permissions")]  # the known copy is not reported again
    assert alarms[0].evidence["new_mode"] == "4755"
    second.stop()
