"""``hostward wtp exec -- CMD``: run a privileged command with the lock lifted.

Only a command whose resolved executable is in the configured privileged list may run this way.
The guard lifts the lock for the duration, rolls back writes by other (named) processes meanwhile,
and refreshes the backup and re-locks when the command ends, whatever its exit status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from hostward.agent.wtp.config import WtpError
from hostward.agent.wtp.guard import WtpGuard


class NotPrivileged(WtpError):
    code = "wtp_not_privileged"


def resolve_exe(cmd: str) -> str:
    """The real path of the executable ``cmd`` would run (PATH lookup, symlinks resolved)."""
    found = cmd if os.sep in cmd else shutil.which(cmd)
    if not found or not os.path.isfile(found):
        raise NotPrivileged(f"{cmd}: executable not found")
    return os.path.realpath(found)


def ancestor_exes(pid: int, proc: str = "/proc", limit: int = 64) -> set[str]:
    """Executables of ``pid``'s ancestors (not ``pid`` itself), as far as /proc still knows them."""
    exes: set[str] = set()
    for _ in range(limit):
        try:
            with open(f"{proc}/{pid}/stat", "rb") as f:
                data = f.read()
            pid = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        try:
            exes.add(os.path.realpath(os.readlink(f"{proc}/{pid}/exe")))
        except OSError:
            continue
    return exes


def run_privileged(guard: WtpGuard, argv: Sequence[str], *, timeout: float | None = None) -> int:
    """Run ``argv`` (no shell) as a privileged process; returns its exit status."""
    if not argv:
        raise NotPrivileged("no command given")
    exe = resolve_exe(argv[0])
    allowed = {os.path.realpath(p) for p in guard.config.privileged}
    if exe not in allowed:
        names = ", ".join(sorted(allowed)) or "none"
        raise NotPrivileged(f"{exe} is not a privileged process (allowed: {names})")
    with guard.privileged():
        done = subprocess.run([exe, *argv[1:]], timeout=timeout, check=False)
    return done.returncode
