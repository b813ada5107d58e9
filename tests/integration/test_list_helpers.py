"""The shared pieces of the per-server lists and record parsing: a bad filter value is refused with the
same message on every list, counts cover every state, and record fields are read or rejected alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hostward.core.errors import Invalid
from hostward.manager.agentlink.ingest import EventRejected
from hostward.manager.agentlink.recordfields import text_field, time_field
from hostward.manager.alarms import service as alarms
from hostward.manager.context import ManagerContext
from hostward.manager.loginsec import service as loginsec
from hostward.manager.malware import service as malware
from tests.fakes.servers import enrolled_server


def test_bad_filter_values_are_refused_with_the_choices(ctx: ManagerContext) -> None:
    with ctx.uow() as s:
        with pytest.raises(Invalid, match=r"^state must be one of isolating, isolated, restored, deleted$"):
            malware.list_isolated(s, state="gone")
        with pytest.raises(Invalid, match=r"^status must be one of blocked, unblocking, unblocked$"):
            loginsec.list_blocked(s, status="open")
        with pytest.raises(Invalid, match=r"^status must be one of unhandled, handled$"):
            alarms.list_alarms(s, status="new")
        with pytest.raises(Invalid, match=r"^severity must be one of "):
            alarms.list_alarms(s, severity="urgent")


def test_empty_lists_and_counts_per_state(ctx: ManagerContext) -> None:
    with ctx.uow() as s:
        server = enrolled_server(s, ctx.clock.now(), name="web-1")
        assert malware.list_isolated(s, server_id=server.id, state="isolated") == ([], 0)
        assert loginsec.list_blocked(s, region=server.region, q="203.0.113") == ([], 0)
        assert malware.state_counts(s) == {"isolating": 0, "isolated": 0, "restored": 0, "deleted": 0}
        assert loginsec.blocked_counts(s, "nowhere") == {"blocked": 0, "unblocking": 0, "unblocked": 0}


def test_record_text_fields() -> None:
    data = {"path": "/var/www/index.php", "empty": "", "size": 12}
    assert text_field(data, "path", 8) == "/var/www"
    assert text_field(data, "empty", 8) == "" and text_field(data, "missing", 8) == ""
    with pytest.raises(EventRejected, match=r"^missing is required$"):
        text_field(data, "missing", 8, required=True)
    with pytest.raises(EventRejected, match=r"^size must be text$"):
        text_field(data, "size", 8)


def test_record_time_fields() -> None:
    local = datetime(2026, 11, 24, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    got = time_field({"at": local.isoformat()}, "at")
    assert got == local and got is not None and got.tzinfo == UTC
    assert time_field({"at": ""}, "at") is None and time_field({}, "at") is None
    with pytest.raises(EventRejected, match=r"^until: not an ISO date-time$"):
        time_field({"until": "tomorrow"}, "until")
