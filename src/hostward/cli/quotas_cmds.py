"""``hostward quotas list|add|bind|unbind|delete``."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import typer

from hostward.cli.client import ApiClient, items_of
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_table, say
from hostward.cli.resolve import resolve_server

app = typer.Typer(help="Quotas (one protects one server).", no_args_is_help=True)

QUOTA_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Edition", "edition"),
    ("Region", "region"),
    ("Status", "status"),
    ("Usage", "usage"),
    ("Server", lambda q: q.get("server_name") or q.get("server_id")),
    ("Expires", lambda q: q.get("expires_at") or "never"),
    ("Bound", "bound_at"),
]


def parse_expiry(value: str) -> str:
    """``YYYY-MM-DD`` (valid through that day, UTC) or an ISO 8601 date-time -> ISO 8601 UTC."""
    raw = value.strip()
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time(23, 59, 59), tzinfo=UTC).isoformat()
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"--expires: expected YYYY-MM-DD or an ISO 8601 date-time, got {value!r}", exit_code=2
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


@app.command("list")
def quotas_list(
    region: str | None = typer.Option(None, "--region"),
    edition: str | None = typer.Option(None, "--edition"),
    status: str | None = typer.Option(None, "--status", help="normal, expired or frozen."),
    usage: str | None = typer.Option(None, "--usage", help="idle or used."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List quotas."""
    with ApiClient.from_credentials() as client:
        quotas = client.list_all("/quotas", region=region, edition=edition, status=status, usage=usage)
    if as_json:
        print_json(quotas)
        return
    print_table(quotas, QUOTA_COLUMNS, title="Quotas")


@app.command("add")
def quotas_add(
    edition: str = typer.Option(..., "--edition", help="basic, enterprise, premium or wtp."),
    count: int = typer.Option(..., "--count", min=1, help="How many quotas to add."),
    expires: str | None = typer.Option(
        None, "--expires", help="YYYY-MM-DD (valid through that day, UTC) or ISO date-time; default never."
    ),
    region: str | None = typer.Option(None, "--region", help="Region the quotas belong to (default region)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add quotas."""
    body: dict[str, Any] = {"edition": edition, "count": count}
    if expires:
        body["expires_at"] = parse_expiry(expires)
    if region:
        body["region"] = region
    with ApiClient.from_credentials() as client:
        created = items_of(client.post("/quotas", body))
    if as_json:
        print_json(created)
        return
    print_table(created, QUOTA_COLUMNS, title=f"Added {len(created)} quota(s)")


@app.command("bind")
def quotas_bind(
    quota: str = typer.Argument(..., help="Quota id."),
    server: str = typer.Argument(..., help="Server id or name (its agent must be online)."),
) -> None:
    """Bind a quota to a server."""
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        client.post(f"/quotas/{quota}/bind", {"server_id": found["id"]})
    say(f"quota {quota} bound to {found.get('name') or found['id']}")


@app.command("unbind")
def quotas_unbind(quota: str = typer.Argument(..., help="Quota id.")) -> None:
    """Unbind a quota (the server it protected becomes unprotected)."""
    with ApiClient.from_credentials() as client:
        client.post(f"/quotas/{quota}/unbind")
    say(f"quota {quota} unbound")


@app.command("delete")
def quotas_delete(quota: str = typer.Argument(..., help="Quota id.")) -> None:
    """Delete a quota."""
    with ApiClient.from_credentials() as client:
        client.delete(f"/quotas/{quota}")
    say(f"quota {quota} deleted")


@app.command("auto-bind")
def quotas_auto_bind(
    enabled: bool | None = typer.Option(None, "--on/--off", help="Switch it on or off (omit to show)."),
    edition: str | None = typer.Option(None, "--edition", help="Edition auto-bound quotas must have."),
) -> None:
    """Show or set the switch that binds an idle quota to every newly enrolled online server."""
    with ApiClient.from_credentials() as client:
        if enabled is None:
            current = client.get("/settings/auto-bind")
        else:
            body: dict[str, Any] = {"enabled": enabled}
            if edition:
                body["edition"] = edition
            current = client.put("/settings/auto-bind", body)
    state = "on" if current.get("enabled") else "off"
    say(f"auto-bind is {state}" + (f" (edition {current['edition']})" if current.get("edition") else ""))
