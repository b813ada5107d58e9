"""Turn what the user typed (an id or a name) into the manager's object."""

from __future__ import annotations

from typing import Any

from hostward.cli.client import ApiClient, items_of
from hostward.cli.errors import ApiError, CliError


def resolve_server(client: ApiClient, ref: str) -> dict[str, Any]:
    """A server by id or exact name (searched with ``GET /servers?q=``); one-line error otherwise."""
    ref = ref.strip()
    if not ref:
        raise CliError("empty server name")
    matches = items_of(client.get("/servers", q=ref, limit=100))
    by_id = [s for s in matches if s.get("id") == ref]
    if by_id:
        return by_id[0]
    by_name = [s for s in matches if s.get("name") == ref]
    if not by_name:
        by_name = [s for s in matches if s.get("hostname") == ref]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        ids = ", ".join(str(s.get("id")) for s in by_name)
        raise CliError(f"{len(by_name)} servers are named {ref!r} ({ids}): give the id instead")
    # The search may not cover ids; ask for the id directly before giving up.
    try:
        server = client.get(f"/servers/{ref}")
    except ApiError as exc:
        if exc.status in (404, 422):
            raise CliError(f"no server with id or name {ref!r}", code="not_found") from None
        raise
    if not isinstance(server, dict):
        raise CliError(f"no server with id or name {ref!r}", code="not_found")
    return server


def resolve_policy_group(client: ApiClient, ref: str) -> dict[str, Any]:
    """A policy group by id or exact name."""
    groups = items_of(client.get("/policy-groups"))
    for group in groups:
        if group.get("id") == ref:
            return group
    named = [g for g in groups if g.get("name") == ref]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise CliError(f"{len(named)} policy groups are named {ref!r}: give the id instead")
    raise CliError(f"no policy group with id or name {ref!r}", code="not_found")
