"""Abnormal login (``login_1002``): a successful login from outside the common login IPs, or from a
location outside the common login locations, evaluated on the manager where those lists live.

Learning rule (as in the reference): once common locations are configured, the first three other
locations a server's logins come from are learned as common for that server; alarms start at the fourth.
Locations come from an IP-to-location database the operator configures (MaxMind GeoLite2 / DB-IP
``.mmdb``, read with the ``maxminddb`` library) and, for the addresses it does not know (or when none is
configured or it cannot be read), from a small CIDR table the operator can also set; private ranges are
``intranet`` and never abnormal by location.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from datetime import datetime
from typing import Any

import maxminddb
from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid
from hostward.core.net import IPAddress, IPNetwork, parse_address
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.loginsec import service as loginsec
from hostward.manager.loginsec.models import LearnedLoginLocation
from hostward.manager.loginsec.netlist import parse_item
from hostward.manager.servers.models import Server
from hostward.manager.settings_store import service as global_settings
from hostward.wire import AlarmEvent

log = logging.getLogger("hostward.manager.loginsec")

ABNORMAL_LOGIN = "login_1002"
LEARNED_LOCATIONS = 3
INTRANET = "intranet"
UNKNOWN = "unknown"
GEO_KEY = "login_geolocation"
MAX_GEO_TABLE = 1000
# Intranet = where a login cannot have a geographic location: RFC 1918, shared (CGNAT), loopback,
# link-local and unique-local ranges. (``ipaddress``'s is_private also counts documentation ranges.)
INTRANET_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


# ---- locations --------------------------------------------------------------------------------------


class _MmdbCache:
    """One open reader per database file, reopened when the file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: dict[str, tuple[float, Any]] = {}

    def lookup(self, path: str, addr: IPAddress) -> dict[str, Any] | None:
        """The database's record for ``addr``; None when it has none or the file cannot be read."""
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        with self._lock:
            cached = self._readers.get(path)
            if cached is None or cached[0] != mtime:
                try:
                    reader = maxminddb.open_database(path)
                except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                    log.warning("cannot open IP location database %s: %s", path, exc)
                    return None
                self._readers[path] = cached = (mtime, reader)
        try:
            record = cached[1].get(str(addr))
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None  # an IPv6 address in an IPv4-only database, or a damaged file
        return record if isinstance(record, dict) else None


_MMDB = _MmdbCache()


def geolocation_settings(session: Session) -> dict[str, Any]:
    value = global_settings.get(session, GEO_KEY) or {}
    return {"mmdb_path": str(value.get("mmdb_path") or ""), "table": list(value.get("table") or [])}


def put_geolocation(
    session: Session, mmdb_path: str, table: list[dict[str, str]], *, actor: str, now: datetime
) -> dict[str, Any]:
    """The location database path and the CIDR -> location table (checked before the database)."""
    rows = []
    if len(table) > MAX_GEO_TABLE:
        raise Invalid(f"location table: at most {MAX_GEO_TABLE} rows")
    for row in table:
        network = str(row.get("network", "")).strip()
        location = " ".join(str(row.get("location", "")).split())
        loginsec.no_controls(location, "location table")
        nets = parse_item(network, "location table")
        if len(nets) != 1:
            raise Invalid(f"location table entry {network!r}: one CIDR per row")
        if not location or len(location) > 128:
            raise Invalid(f"location table entry {network!r}: location must have 1-128 characters")
        rows.append({"network": str(nets[0]), "location": location})
    path = loginsec.no_controls(mmdb_path.strip(), "location database")
    if path and not os.path.isabs(path):
        raise Invalid(f"location database {path!r}: give an absolute path")
    value = {"mmdb_path": path, "table": rows}
    global_settings.put(session, GEO_KEY, value, now)
    audit.record(
        session, actor, "modify_login_geolocation", target_type="settings", mmdb_path=path, rows=len(rows)
    )
    return value


def _mmdb_name(record: dict[str, Any]) -> str | None:
    for key in ("country", "registered_country", "continent"):
        names = (record.get(key) or {}).get("names") or {}
        name = names.get("en")
        if isinstance(name, str) and name:
            return name
    return None


def locate(session: Session, address: str) -> str:
    """The location name of ``address``: ``intranet``, the database's name for it, else the CIDR
    table's (most specific row), else ``unknown``."""
    try:
        addr = parse_address(address)
    except ValueError:
        return UNKNOWN
    if any(addr.version == n.version and addr in n for n in INTRANET_NETWORKS):
        return INTRANET
    geo = geolocation_settings(session)
    if geo["mmdb_path"]:
        record = _MMDB.lookup(geo["mmdb_path"], addr)
        name = _mmdb_name(record) if record is not None else None
        if name:
            return name
    best: tuple[int, str] | None = None
    for row in geo["table"]:
        net = ipaddress.ip_network(row["network"])
        if net.version == addr.version and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, row["location"])
    return best[1] if best is not None else UNKNOWN


# ---- the rule ------------------------------------------------------------------------------------------


def _learned(session: Session, server_id: str) -> list[str]:
    return list(
        session.scalars(
            select(LearnedLoginLocation.location)
            .where(LearnedLoginLocation.server_id == server_id)
            .order_by(LearnedLoginLocation.learned_at)
        )
    )


def learned_locations(session: Session, server_id: str) -> list[str]:
    return _learned(session, server_id)


def evaluate_login(
    session: Session,
    server: Server,
    *,
    address: str,
    user: str | None,
    service: str,
    method: str | None,
    login_time: datetime,
    key: str,
    now: datetime,
) -> Alarm | None:
    """Raise ``login_1002`` when this successful login is abnormal; returns the alarm or None."""
    try:
        addr = parse_address(address)
    except ValueError:
        return None
    if loginsec.login_whitelisted(session, server.id, str(addr), user):
        return None
    reasons: list[str] = []
    ips = loginsec.common_ips(session)
    if ips:
        nets = [n for text in ips for n in parse_item(text, "common login IP")]
        if not any(addr.version == n.version and addr in n for n in nets):
            reasons.append(f"{addr} is not a common login IP")
    location = locate(session, str(addr))
    common = {c.casefold() for c in loginsec.common_locations(session)}
    if common and location != INTRANET and location.casefold() not in common:
        learned = {c.casefold() for c in _learned(session, server.id)}
        if location.casefold() not in learned:
            if len(learned) < LEARNED_LOCATIONS:
                session.add(LearnedLoginLocation(server_id=server.id, location=location, learned_at=now))
                session.flush()
            else:
                reasons.append(f"location {location} is not a common login location")
    if not reasons:
        return None
    evidence = {
        "login_ip": str(addr),
        "username": user or "",
        "service": service,
        "method": method,
        "location": location,
        "login_time": login_time.isoformat(),
        "reasons": reasons,
    }
    event = AlarmEvent(
        key=f"{key}:{ABNORMAL_LOGIN}"[:128],
        occurred_at=login_time,
        event_class=ABNORMAL_LOGIN,
        title=f"Abnormal {service} login of {user or '?'} from {addr} ({location})"[:512],
        fingerprint=f"{ABNORMAL_LOGIN}:{service}:{addr}:{user or ''}"[:256],
        evidence=evidence,
    )
    return alarms.ingest(session, server, event, now)
