"""Source addresses of logged-in remote sessions (utmp), for the never-block list.

An administrator who mistypes a password must not lock themselves out: the address of every open SSH
session of a user in the administrators list joins the safety list while the session lasts.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from hostward.core.net import parse_address


def session_sources(users: Iterable[str] | None = None) -> list[str]:
    """Remote addresses of current sessions of ``users`` (every user when None), as canonical text.

    Sessions whose host is a name rather than an address (sshd with UseDNS) are skipped: resolving it
    would let whoever controls that name's DNS pick an address we never block.
    """
    wanted = None if users is None else set(users)
    found: set[str] = set()
    try:
        sessions = psutil.users()
    except (OSError, RuntimeError):
        return []
    for session in sessions:
        if not session.host or (wanted is not None and session.name not in wanted):
            continue
        try:
            found.add(str(parse_address(session.host)))
        except ValueError:
            continue
    return sorted(found)
