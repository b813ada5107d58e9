"""Set-up shared by the tests that run a real agent runtime in-process against a fake manager: a small
host tree, an enrolled configuration, a probe that keeps the agent under its budget, and a loop that
drives the agent with ``run_once`` until something is seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from hostward.agent.budget import Usage
from hostward.agent.config import AgentConfig, load_config
from hostward.agent.enroll import enroll
from hostward.agent.runtime import Agent

MB = 1024 * 1024
PASSWD = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
GROUP = "root:x:0:\nalice:x:1000:\n"
MACHINE_ID = "feedfacefeedfacefeedfacefeedface"


class Enrolls(Protocol):
    """What enrollment needs of a fake manager (``FakeManager``, ``WtpFakeManager``)."""

    url: str
    token: str
    fingerprint: str


def quiet_probe() -> Usage:
    """The agent's resource probe, well under any budget."""
    return Usage(0.0, 40 * MB)


def fake_host(
    root: Path,
    *,
    passwd: str = PASSWD,
    group: str = GROUP,
    machine_id: str = MACHINE_ID,
    hostname: str = "fake-host",
) -> Path:
    """A host root with the files the agent reads at enrollment and in its account checks."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text(group)
    (root / "etc/machine-id").write_text(machine_id + "\n")
    (root / "etc/hostname").write_text(hostname + "\n")
    return root


def enrolled_config(
    tmp_path: Path, fm: Enrolls, name: str = "agent-1", *, host: Path | None = None, **overrides: Any
) -> AgentConfig:
    """An agent enrolled with ``fm`` (state in ``tmp_path/state``) whose host root is ``host`` (a fresh
    ``fake_host`` under ``tmp_path`` when None)."""
    host = host if host is not None else fake_host(tmp_path / "host")
    state_dir = tmp_path / "state"
    enroll(fm.url, fm.token, fm.fingerprint, state_dir, name, root=host)
    return load_config(state_dir, {"host_root": host, **overrides})


def pump(
    agent: Agent,
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    heartbeat: bool = False,
    seen: Callable[[], object] = lambda: "",
) -> None:
    """Agent passes until ``check()`` holds; ``heartbeat`` sends one every pass (a new policy is fetched
    at once). Fails after ``timeout`` seconds naming ``what`` and whatever ``seen()`` describes."""
    deadline = time.monotonic() + timeout
    while True:
        if heartbeat:
            agent.next_heartbeat = 0.0
        agent.run_once()
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout}s; {seen()}")
        time.sleep(0.05)
