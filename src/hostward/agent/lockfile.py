"""One agent per state directory: an flock on ``agent.lock`` held for the life of the process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from hostward.agent.errors import AlreadyRunning
from hostward.agent.state import ensure_private_dir

LOCK_NAME = "agent.lock"


def acquire_lock(state_dir: Path) -> IO[str]:
    """Take the lock (the file holds our pid); raises AlreadyRunning when another agent holds it."""
    ensure_private_dir(state_dir)
    fh = open(state_dir / LOCK_NAME, "a+", encoding="ascii")  # noqa: SIM115 - held until shutdown
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        fh.close()
        raise AlreadyRunning(f"another agent is running with state directory {state_dir}") from exc
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def is_running(state_dir: Path) -> bool:
    """True when an agent process holds this state directory's lock."""
    path = state_dir / LOCK_NAME
    if not path.exists():
        return False
    with open(path, encoding="ascii") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
