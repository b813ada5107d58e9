"""``hostward blocked-ips list|unblock`` and the login-security whitelists.

``hostward whitelists login|ssh-ip|common-ip|common-location ...``.
"""

from __future__ import annotations

import time
from typing import Any

import typer

from hostward.cli.client import ApiClient, items_of
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_table, say, warn
from hostward.cli.resolve import resolve_server

blocked_ips_app = typer.Typer(
    help="Source addresses blocked by brute-force protection.", no_args_is_help=True
)
login_app = typer.Typer(
    help="Login whitelist: IPs never blocked (and, with a user name, that user's logins not alarmed).",
    no_args_is_help=True,
)
ssh_ip_app = typer.Typer(
    help="SSH login IP whitelist per server (≤10): SSH only from the listed addresses.", no_args_is_help=True
)
common_ip_app = typer.Typer(
    help="Common login IPs (≤20): logins from elsewhere are abnormal.", no_args_is_help=True
)
common_location_app = typer.Typer(
    help="Common login locations: logins from other countries/regions are abnormal.", no_args_is_help=True
)

BLOCKED_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Source", "source"),
    ("Server", lambda r: r.get("server_name") or r.get("server_id")),
    ("Service", "service"),
    (
        "Status",
        lambda r: f"{r.get('status')} ({r['unblock_error']})" if r.get("unblock_error") else r.get("status"),
    ),
    ("Times", "times_blocked"),
    ("First block", "first_blocked_at"),
    ("Latest block", "latest_blocked_at"),
    ("Expires", "expires_at"),
]
LOGIN_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Login IPs", "ip_text"),
    ("User", lambda r: r.get("username") or "any"),
    ("Servers", lambda r: r.get("server_ids") or "all"),
    ("Remarks", "remarks"),
    ("Created", "created_at"),
]
SSH_COLUMNS: list[Column] = [
    ("Server", lambda r: r.get("server_name") or r.get("server_id")),
    ("Address", "network"),
    ("Enabled", "enabled"),
    ("Remarks", "remarks"),
]
UNBLOCK_WAIT_S = 30.0


def attach(whitelists_app: typer.Typer) -> None:
    """Add the login-security groups to ``hostward whitelists`` (idempotent)."""
    have = {g.name for g in whitelists_app.registered_groups}
    for name, sub in (
        ("login", login_app),
        ("ssh-ip", ssh_ip_app),
        ("common-ip", common_ip_app),
        ("common-location", common_location_app),
    ):
        if name not in have:
            whitelists_app.add_typer(sub, name=name)


# ---- blocked IPs ----


@blocked_ips_app.command("list")
def blocked_list(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    status: str | None = typer.Option(None, "--status", help="blocked, unblocking or unblocked."),
    service: str | None = typer.Option(None, "--service", help="sshd, vsftpd, mysql, ..."),
    search: str | None = typer.Option(None, "--search", "-q", help="Part of the address or server name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List blocked source addresses."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        rows = client.list_all("/blocked-ips", server_id=server_id, status=status, service=service, q=search)
    if as_json:
        print_json(rows)
        return
    print_table(rows, BLOCKED_COLUMNS, title="Blocked IPs")


@blocked_ips_app.command("unblock")
def blocked_unblock(
    ids: list[str] | None = typer.Argument(None, help="Blocked-IP ids (from `blocked-ips list`)."),
    ip: str | None = typer.Option(None, "--ip", help="Unblock this source address instead of ids."),
    server: str | None = typer.Option(None, "--server", help="With --ip: only on this server."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the agents confirm (at most 30 s)."),
) -> None:
    """Lift blocks now: the agent removes the address from its firewall set within seconds."""
    with ApiClient.from_credentials() as client:
        wanted = list(ids or [])
        if ip:
            server_id = resolve_server(client, server)["id"] if server else None
            rows = client.list_all("/blocked-ips", server_id=server_id, status="blocked", q=ip.strip())
            wanted += [r["id"] for r in rows if r.get("source") == ip.strip()]
            if not wanted:
                raise CliError(f"{ip} is not blocked" + (f" on {server}" if server else ""), code="not_found")
        if not wanted:
            raise CliError("give blocked-IP ids or --ip ADDRESS", exit_code=2)
        answer = client.post("/blocked-ips/unblock", {"ids": wanted})
        results = answer.get("results", []) if isinstance(answer, dict) else []
        failed = [r for r in results if not r.get("ok")]
        for result in failed:
            message = (result.get("error") or {}).get("message") or "refused"
            warn(f"error: {result.get('id')}: {' '.join(str(message).split())}")
        done = [r["id"] for r in results if r.get("ok")]
        if wait and done:
            _wait_unblocked(client, done)
    say(f"{len(done)} block(s) {'lifted' if wait else 'being lifted'}")
    if failed:
        raise typer.Exit(1)


def _wait_unblocked(client: ApiClient, ids: list[str]) -> None:
    deadline = time.monotonic() + UNBLOCK_WAIT_S
    pending = set(ids)
    while pending:
        rows = client.list_all("/blocked-ips", status="unblocking")
        still = {r["id"] for r in rows} & pending
        errors = [r for r in rows if r["id"] in still and r.get("unblock_error")]
        if errors:
            raise CliError(f"{errors[0]['source']}: {errors[0]['unblock_error']}")
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise CliError(
                f"{len(pending)} block(s) not confirmed by their agents within {UNBLOCK_WAIT_S:.0f} s"
            )
        time.sleep(0.2)


# ---- login whitelist ----


@login_app.command("list")
def login_list(
    server: str | None = typer.Option(None, "--server", help="Only entries that apply to this server."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List login whitelist entries."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        rows = items_of(client.get("/whitelists/login", server_id=server_id))
    if as_json:
        print_json(rows)
        return
    print_table(rows, LOGIN_COLUMNS, title="Login whitelist")


@login_app.command("add")
def login_add(
    ips: list[str] = typer.Argument(..., help="Addresses, CIDRs or ranges (a-b), IPv4 or IPv6."),
    server: list[str] | None = typer.Option(
        None, "--server", help="Limit to servers (repeatable; default all)."
    ),
    user: str | None = typer.Option(None, "--user", help="Only this user's logins (no blocking exemption)."),
    remarks: str = typer.Option("", "--remarks"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add an entry (at most 50 IPs/segments apply to one server)."""
    body: dict[str, Any] = {"ips": ips, "remarks": remarks}
    if user:
        body["username"] = user
    with ApiClient.from_credentials() as client:
        if server:
            body["server_ids"] = [resolve_server(client, ref)["id"] for ref in server]
        entry = client.post("/whitelists/login", body)
    if as_json:
        print_json(entry)
        return
    say(f"added login whitelist entry {entry.get('id')} ({entry.get('ip_text')})")


@login_app.command("delete")
def login_delete(entry_id: str = typer.Argument(..., help="Entry id.")) -> None:
    """Delete a login whitelist entry."""
    with ApiClient.from_credentials() as client:
        client.delete(f"/whitelists/login/{entry_id}")
    say(f"deleted login whitelist entry {entry_id}")


# ---- SSH login IP whitelist ----


def _ssh_items(client: ApiClient, server_id: str) -> list[dict[str, Any]]:
    body = client.get(f"/servers/{server_id}/ssh-ip-whitelist")
    return [
        {"network": i["network"], "enabled": i["enabled"], "remarks": i.get("remarks", "")}
        for i in body["items"]
    ]


def _ssh_put(client: ApiClient, server_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    answer: dict[str, Any] = client.put(f"/servers/{server_id}/ssh-ip-whitelist", {"items": items})
    return answer


def _same(a: str, b: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return a.strip() == b.strip()


@ssh_ip_app.command("list")
def ssh_list(
    server: str | None = typer.Argument(None, help="Server id or name (default: every server)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show SSH login IP whitelists."""
    with ApiClient.from_credentials() as client:
        if server:
            srv = resolve_server(client, server)
            body = client.get(f"/servers/{srv['id']}/ssh-ip-whitelist")
            rows = [{**i, "server_id": srv["id"], "server_name": srv["name"]} for i in body["items"]]
        else:
            rows = items_of(client.get("/whitelists/ssh-ip"))
    if as_json:
        print_json(rows)
        return
    print_table(rows, SSH_COLUMNS, title="SSH login IP whitelist")


@ssh_ip_app.command("set")
def ssh_set(
    server: str = typer.Argument(..., help="Server id or name."),
    ips: list[str] = typer.Argument(..., help="Addresses or CIDRs (≤10); replaces the list."),
) -> None:
    """Replace a server's SSH login IP whitelist."""
    with ApiClient.from_credentials() as client:
        srv = resolve_server(client, server)
        body = _ssh_put(client, srv["id"], [{"network": ip, "enabled": True} for ip in ips])
    say(f"{srv['name']}: SSH allowed only from {', '.join(i['network'] for i in body['items'])}")


@ssh_ip_app.command("add")
def ssh_add(
    server: str = typer.Argument(..., help="Server id or name."),
    ip: str = typer.Argument(..., help="Address or CIDR."),
    disabled: bool = typer.Option(False, "--disabled", help="Add it disabled."),
    remarks: str = typer.Option("", "--remarks"),
) -> None:
    """Add one address to a server's SSH login IP whitelist."""
    with ApiClient.from_credentials() as client:
        srv = resolve_server(client, server)
        items = _ssh_items(client, srv["id"])
        if any(_same(i["network"], ip) for i in items):
            raise CliError(f"{ip} is already in the SSH login IP whitelist of {srv['name']}", code="conflict")
        items.append({"network": ip, "enabled": not disabled, "remarks": remarks})
        _ssh_put(client, srv["id"], items)
    say(f"{srv['name']}: added {ip} to the SSH login IP whitelist")


def _ssh_change(server: str, ip: str, change: str) -> None:
    with ApiClient.from_credentials() as client:
        srv = resolve_server(client, server)
        items = _ssh_items(client, srv["id"])
        match = [i for i in items if _same(i["network"], ip)]
        if not match:
            raise CliError(f"{ip} is not in the SSH login IP whitelist of {srv['name']}", code="not_found")
        if change == "remove":
            items = [i for i in items if i not in match]
        else:
            match[0]["enabled"] = change == "enable"
        _ssh_put(client, srv["id"], items)
    say(f"{srv['name']}: {ip} {change}d")


@ssh_ip_app.command("remove")
def ssh_remove(server: str = typer.Argument(...), ip: str = typer.Argument(...)) -> None:
    """Remove one address from a server's SSH login IP whitelist."""
    _ssh_change(server, ip, "remove")


@ssh_ip_app.command("enable")
def ssh_enable(server: str = typer.Argument(...), ip: str = typer.Argument(...)) -> None:
    """Enable one entry."""
    _ssh_change(server, ip, "enable")


@ssh_ip_app.command("disable")
def ssh_disable(server: str = typer.Argument(...), ip: str = typer.Argument(...)) -> None:
    """Disable one entry (kept in the list, not enforced)."""
    _ssh_change(server, ip, "disable")


@ssh_ip_app.command("clear")
def ssh_clear(server: str = typer.Argument(..., help="Server id or name.")) -> None:
    """Remove every entry: SSH is allowed from anywhere again."""
    with ApiClient.from_credentials() as client:
        srv = resolve_server(client, server)
        _ssh_put(client, srv["id"], [])
    say(f"{srv['name']}: SSH login IP whitelist cleared")


# ---- common login IPs and locations ----


def _list_commands(app: typer.Typer, path: str, noun: str) -> None:
    @app.command("list")
    def _list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        with ApiClient.from_credentials() as client:
            body = client.get(path)
        if as_json:
            print_json(body["items"])
            return
        say("\n".join(body["items"]) if body["items"] else f"(no {noun}s)")

    _list.__doc__ = f"List the {noun}s."

    @app.command("set")
    def _set(
        values: list[str] | None = typer.Argument(None, help="The whole list (none: clear it)."),
    ) -> None:
        with ApiClient.from_credentials() as client:
            body = client.put(path, {"items": list(values or [])})
        say(f"{len(body['items'])} {noun}(s) set")

    _set.__doc__ = f"Replace the {noun}s."

    @app.command("add")
    def _add(value: str = typer.Argument(...)) -> None:
        with ApiClient.from_credentials() as client:
            items = list(client.get(path)["items"])
            items.append(value)
            client.put(path, {"items": items})
        say(f"added {noun} {value}")

    _add.__doc__ = f"Add one {noun}."

    @app.command("remove")
    def _remove(value: str = typer.Argument(...)) -> None:
        with ApiClient.from_credentials() as client:
            items = list(client.get(path)["items"])
            kept = [i for i in items if i.casefold() != value.strip().casefold() and not _same(i, value)]
            if len(kept) == len(items):
                raise CliError(f"{value} is not a {noun}", code="not_found")
            client.put(path, {"items": kept})
        say(f"removed {noun} {value}")

    _remove.__doc__ = f"Remove one {noun}."


_list_commands(common_ip_app, "/settings/common-login-ips", "common login IP")
_list_commands(common_location_app, "/settings/common-login-locations", "common login location")
