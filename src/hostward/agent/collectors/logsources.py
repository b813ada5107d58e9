"""Which logs to follow: ``LogSource``, ``--log-source SERVICE:PATH`` parsing, automatic discovery."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hostward.agent.collectors.journal import DEFAULT_UNITS
from hostward.agent.detectors.logpatterns import SERVICES

AUTO = "auto"
AUTH_LOGS = ("var/log/auth.log", "var/log/secure")
SERVICE_LOGS: dict[str, tuple[str, ...]] = {
    "vsftpd": ("var/log/vsftpd.log",),
    "proftpd": ("var/log/proftpd/proftpd.log",),
    "pure-ftpd": ("var/log/pure-ftpd/pure-ftpd.log", "var/log/pureftpd.log"),
    "mysql": (
        "var/log/mysql/error.log",
        "var/log/mysqld.log",
        "var/log/mariadb/mariadb.log",
        "var/log/mysql.err",
    ),
}


@dataclass(frozen=True)
class LogSource:
    """A file (``kind="file"``) or the journal; ``service`` is the parser hint (``auto`` or a service)."""

    kind: Literal["file", "journald"]
    service: str = AUTO
    path: Path | None = None
    units: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"file:{self.path}" if self.kind == "file" else "journald"

    def __str__(self) -> str:
        return f"{self.service}:{self.path}" if self.kind == "file" else f"journald:{','.join(self.units)}"


def parse_log_source(spec: str) -> LogSource:
    """``SERVICE:PATH``, ``PATH`` (service auto) or ``journald[:UNIT,...]``; ValueError names the problem.

    SERVICE is one of auto, sshd, vsftpd, proftpd, pure-ftpd, mysql, dropbear, pam; PATH is absolute.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty log source")
    head, sep, rest = text.partition(":")
    if head == "journald":
        units = tuple(u.strip() for u in rest.split(",") if u.strip()) if sep else DEFAULT_UNITS
        return LogSource(kind="journald", service=AUTO, units=units)
    if text.startswith("/"):
        service, path = AUTO, text
    elif sep:
        service, path = head.strip(), rest.strip()
    else:
        raise ValueError(f"log source {spec!r}: expected SERVICE:PATH, an absolute PATH or journald")
    if service not in (AUTO, *SERVICES):
        raise ValueError(
            f"log source {spec!r}: unknown service {service!r}; use one of auto, {', '.join(SERVICES)}"
        )
    if not path.startswith("/"):
        raise ValueError(f"log source {spec!r}: the path must be absolute")
    return LogSource(kind="file", service=service, path=Path(path))


def discover_sources(root: Path = Path("/"), *, journal: bool | None = None) -> list[LogSource]:
    """The login logs present under ``root``: auth.log / secure, FTP and MySQL logs; the journal when
    there is no auth log and journald runs (``journal`` overrides that check)."""
    sources: list[LogSource] = []
    for rel in AUTH_LOGS:
        if (root / rel).is_file():
            sources.append(LogSource(kind="file", path=root / rel))
    has_auth = bool(sources)
    for service, candidates in SERVICE_LOGS.items():
        for rel in candidates:
            if (root / rel).is_file():
                sources.append(LogSource(kind="file", service=service, path=root / rel))
                break
    if journal is None:
        journal = (root / "run/systemd/journal").is_dir() and shutil.which("journalctl") is not None
    if journal and not has_auth:
        sources.append(LogSource(kind="journald", units=DEFAULT_UNITS))
    return sources
