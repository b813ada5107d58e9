"""Local accounts and their password hashes from ``/etc/shadow`` (+ uid from ``/etc/passwd``).

Reading shadow needs root. Every way it can fail is a clear status, never an exception or an empty
"nothing weak" result: ``unreadable`` (permission), ``missing`` (no such file), ``error`` (other I/O).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

LOCKED_PREFIXES = ("!", "*")


@dataclass(frozen=True)
class ShadowAccount:
    username: str
    hash: str
    account_type: str  # root | system | user

    @property
    def has_password(self) -> bool:
        return bool(self.hash) and not self.hash.startswith(LOCKED_PREFIXES)


@dataclass(frozen=True)
class ShadowRead:
    status: str  # ok | unreadable | missing | error
    detail: str
    accounts: tuple[ShadowAccount, ...] = ()


def _uid_min(root: Path) -> int:
    try:
        for line in (root / "etc/login.defs").read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                return int(parts[1])
    except OSError:
        pass
    return 1000


def _uids(passwd: Path) -> dict[str, int]:
    uids: dict[str, int] = {}
    try:
        for line in passwd.read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].isdigit():
                uids.setdefault(parts[0], int(parts[2]))
    except OSError:
        pass
    return uids


def account_type(uid: int | None, uid_min: int) -> str:
    if uid == 0:
        return "root"
    if uid is not None and uid < uid_min:
        return "system"
    return "user"


def read_shadow(
    shadow: Path = Path("/etc/shadow"), passwd: Path | None = None, root: Path = Path("/")
) -> ShadowRead:
    """Parse a shadow file; ``passwd`` defaults to the passwd file next to it."""
    try:
        text = shadow.read_text(encoding="utf-8", errors="replace")
    except PermissionError:
        return ShadowRead(
            "unreadable", f"permission denied reading {shadow}: the weak-password check must run as root"
        )
    except FileNotFoundError:
        return ShadowRead("missing", f"{shadow} does not exist")
    except OSError as exc:
        reason = errno.errorcode.get(exc.errno or 0, str(exc))
        return ShadowRead("error", f"cannot read {shadow}: {exc.strerror or reason}")
    uids = _uids(passwd if passwd is not None else shadow.with_name("passwd"))
    uid_min = _uid_min(root)
    accounts = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 2 or not parts[0]:
            continue
        accounts.append(ShadowAccount(parts[0], parts[1], account_type(uids.get(parts[0]), uid_min)))
    return ShadowRead("ok", f"{len(accounts)} accounts in {shadow}", tuple(accounts))
