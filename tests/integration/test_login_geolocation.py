"""Login locations from a real ``.mmdb`` file (written here with ``mmdb-writer``, read by ``maxminddb``),
the operator's CIDR table as the fallback, private ranges as intranet, and the abnormal-login alarm."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from hostward.core.ids import new_id
from hostward.manager.agentlink.ingest import ingest_batch, load_builtin_handlers
from hostward.manager.alarms import service as alarms
from hostward.manager.context import ManagerContext
from hostward.manager.loginsec import abnormal
from hostward.manager.loginsec import service as loginsec
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.servers.models import Server
from hostward.wire import RawEventBatch, RecordEvent
from tests.fakes.servers import enrolled_server


def _country(name: str) -> dict[str, Any]:
    return {"country": {"names": {"en": name, "de": f"{name} (de)"}, "iso_code": name[:2].upper()}}


def write_mmdb(path: Path) -> Path:
    """A small GeoLite2-Country-like database, IPv6 tree with the IPv4 space mapped in."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    writer.insert_network(IPSet(["198.51.100.0/24"]), _country("Germany"))
    writer.insert_network(IPSet(["203.0.113.0/25"]), _country("France"))
    writer.insert_network(IPSet(["2001:db8:1::/48"]), _country("Japan"))
    writer.insert_network(IPSet(["45.0.0.0/8"]), _country("Spain"))
    # a record with only a continent, as GeoLite2 has for some anycast ranges
    writer.insert_network(IPSet(["192.0.2.128/25"]), {"continent": {"names": {"en": "Europe"}}})
    # a record without any name: located as the CIDR table says, else unknown
    writer.insert_network(IPSet(["192.0.2.0/26"]), {"traits": {"is_anycast": True}})
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def mmdb(tmp_path: Path) -> Path:
    path = write_mmdb(tmp_path / "GeoLite2-Country.mmdb")
    with maxminddb.open_database(str(path)) as reader:  # the file is what a reader expects
        assert reader.get("198.51.100.7") == _country("Germany")
    return path


def _configure(ctx: ManagerContext, mmdb_path: str, table: list[dict[str, str]]) -> None:
    with ctx.uow() as s:
        abnormal.put_geolocation(s, mmdb_path, table, actor="t", now=ctx.clock.now())


TABLE = [
    {"network": "203.0.113.0/24", "location": "Table-France"},  # the database knows the lower half
    {"network": "8.8.8.0/24", "location": "United States"},
    {"network": "192.0.2.0/24", "location": "Table-Docs"},
    {"network": "2001:db8::/32", "location": "Table-v6"},
]


def test_locations_come_from_the_mmdb_then_the_table(ctx: ManagerContext, mmdb: Path) -> None:
    _configure(ctx, str(mmdb), TABLE)
    with ctx.uow() as s:
        assert abnormal.locate(s, "198.51.100.7") == "Germany"
        assert abnormal.locate(s, "::ffff:198.51.100.7") == "Germany"
        assert abnormal.locate(s, "203.0.113.5") == "France"  # database wins over the table
        assert abnormal.locate(s, "203.0.113.200") == "Table-France"  # not in the database: table
        assert abnormal.locate(s, "8.8.8.8") == "United States"
        assert abnormal.locate(s, "2001:db8:1::99") == "Japan"
        assert abnormal.locate(s, "2001:db8:2::1") == "Table-v6"
        assert abnormal.locate(s, "192.0.2.200") == "Europe"  # continent when there is no country
        assert abnormal.locate(s, "192.0.2.10") == "Table-Docs"  # a record without a name
        assert abnormal.locate(s, "9.9.9.9") == "unknown"
        # private ranges are intranet whatever the database or the table say
        for private in ("10.1.2.3", "192.168.1.1", "172.16.0.9", "127.0.0.1", "fd00::1", "fe80::1"):
            assert abnormal.locate(s, private) == "intranet", private
        assert abnormal.locate(s, "not-an-ip") == "unknown"


def test_a_missing_or_damaged_database_falls_back_to_the_table(ctx: ManagerContext, tmp_path: Path) -> None:
    _configure(ctx, str(tmp_path / "absent.mmdb"), TABLE)
    with ctx.uow() as s:
        assert abnormal.locate(s, "8.8.8.8") == "United States"
        assert abnormal.locate(s, "198.51.100.7") == "unknown"
    damaged = tmp_path / "damaged.mmdb"
    damaged.write_bytes(b"\x00" * 4096 + b"this is no MaxMind database")
    _configure(ctx, str(damaged), TABLE)
    with ctx.uow() as s:
        assert abnormal.locate(s, "8.8.8.8") == "United States"


def test_a_replaced_database_file_is_reopened(ctx: ManagerContext, tmp_path: Path) -> None:
    path = tmp_path / "geo.mmdb"
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True)
    writer.insert_network(IPSet(["198.51.100.0/24"]), _country("Norway"))
    writer.to_db_file(str(path))
    _configure(ctx, str(path), [])
    with ctx.uow() as s:
        assert abnormal.locate(s, "198.51.100.7") == "Norway"
    write_mmdb(tmp_path / "new.mmdb").replace(path)  # a new inode and a new mtime, as an update does
    with ctx.uow() as s:
        assert abnormal.locate(s, "198.51.100.7") == "Germany"


def _login(address: str) -> dict[str, Any]:
    at = datetime.now(UTC)
    event = RecordEvent(
        key=new_id(),
        occurred_at=at,
        topic="login",
        data={
            "user": "alice",
            "address": address,
            "service": "sshd",
            "method": "password",
            "login_time": at.isoformat(),
        },
    )
    return event.model_dump(mode="json")


def test_abnormal_login_alarm_uses_the_mmdb_location(ctx: ManagerContext, mmdb: Path) -> None:
    now = ctx.clock.now()
    load_builtin_handlers()
    with ctx.uow() as s:
        policies.ensure_presets(s)
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        server = enrolled_server(s, now, name="geo-1")
        protection.enable_one(s, server.id, "premium", now, ctx.settings, actor="t", trigger_scan=False)
        sid = server.id
        loginsec.put_common_locations(s, ["Germany"], actor="t", now=now)
    _configure(ctx, str(mmdb), [])
    # learned: France, Japan, Europe (intranet and Germany never count); the fourth, Spain, raises login_1002
    for address in ("198.51.100.1", "203.0.113.1", "2001:db8:1::1", "192.0.2.129", "10.0.0.8"):
        with ctx.uow() as s:
            server_row = s.get(Server, sid)
            assert server_row is not None
            ingest_batch(s, server_row, RawEventBatch(events=[_login(address)]), ctx.clock.now())
        with ctx.uow() as s:
            assert alarms.list_alarms(s, event_class="login_1002")[1] == 0, address
    with ctx.uow() as s:
        server_row = s.get(Server, sid)
        assert server_row is not None
        ingest_batch(s, server_row, RawEventBatch(events=[_login("45.1.2.3")]), ctx.clock.now())
    with ctx.uow() as s:
        items, total = alarms.list_alarms(s, event_class="login_1002")
        assert total == 1
        alarm = items[0][0]
        assert alarm.evidence["location"] == "Spain"
        assert alarm.evidence["login_ip"] == "45.1.2.3"
