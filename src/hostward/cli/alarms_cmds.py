"""``hostward alarms list|show|handle`` and ``hostward whitelists alarm ...``."""

from __future__ import annotations

from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_record, print_table, say, warn
from hostward.cli.quotas_cmds import parse_expiry
from hostward.cli.resolve import resolve_server

alarms_app = typer.Typer(help="Security alarms.", no_args_is_help=True)
whitelists_app = typer.Typer(help="Whitelists.", no_args_is_help=True)
alarm_whitelist_app = typer.Typer(
    help="Alarm whitelist rules (matching alarms are not raised).", no_args_is_help=True
)
whitelists_app.add_typer(alarm_whitelist_app, name="alarm")

ACTIONS = (
    "mark_as_handled, unhandle, ignore, do_not_ignore, add_to_alarm_whitelist, remove_from_alarm_whitelist, "
    "isolate_and_kill; for brute-force and login alarms also add_to_login_whitelist, "
    "remove_from_login_whitelist or unblock"
)
# Brute-force and login alarms: sent to POST /alarms/login-actions (same per-alarm results).
LOGIN_ACTIONS = ("add_to_login_whitelist", "remove_from_login_whitelist", "unblock")
FIELDS = "file_hash, file_path, process_path, process_cmdline, login_ip or username"

ALARM_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Severity", "severity"),
    ("Alarm", lambda a: a.get("name") or a.get("event_class")),
    ("Server", lambda a: a.get("server_name") or a.get("server_id")),
    ("Status", "status"),
    ("Action", "handle_action"),
    ("Count", "count"),
    ("Last seen", "last_seen"),
]

WHITELIST_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Field", "field"),
    ("Judge", "judge"),
    ("Value", "value"),
    ("Alarm class", lambda r: r.get("event_class") or "any"),
    ("Servers", lambda r: r.get("server_ids") or "all"),
    ("Expires", lambda r: r.get("expires_at") or "never"),
    ("Hits", "hits"),
]


@alarms_app.command("list")
def alarms_list(
    status: str | None = typer.Option(None, "--status", help="unhandled or handled."),
    severity: str | None = typer.Option(None, "--severity", help="critical, high, medium or low."),
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    event_class: str | None = typer.Option(None, "--class", help="Alarm class, e.g. user_1001."),
    search: str | None = typer.Option(None, "--search", "-q"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List alarms."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        alarms = client.list_all(
            "/alarms",
            status=status,
            severity=severity,
            server_id=server_id,
            event_class=event_class,
            q=search,
        )
    if as_json:
        print_json(alarms)
        return
    print_table(alarms, ALARM_COLUMNS, title="Alarms")


@alarms_app.command("show")
def alarms_show(
    alarm_id: str = typer.Argument(..., help="Alarm id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one alarm with its evidence."""
    with ApiClient.from_credentials() as client:
        alarm = client.get(f"/alarms/{alarm_id}")
    if as_json:
        print_json(alarm)
        return
    print_record(alarm, title=f"Alarm {alarm_id}")


@alarms_app.command("handle")
def alarms_handle(
    alarm_ids: list[str] = typer.Argument(..., help="Alarm ids."),
    action: str = typer.Option(..., "--action", help=ACTIONS),
    remark: str | None = typer.Option(None, "--remark"),
    field: str | None = typer.Option(
        None, "--field", help=f"add_to_alarm_whitelist: {FIELDS} (default: from the alarm's evidence)."
    ),
    judge: str = typer.Option("equal", "--judge", help="add_to_alarm_whitelist: equal, contains or glob."),
    value: str | None = typer.Option(None, "--value", help="add_to_alarm_whitelist: value to match."),
    scope: str = typer.Option("server", "--scope", help="add_to_alarm_whitelist: server or all."),
) -> None:
    """Handle alarms in a batch (the manager records who did what in Handling History)."""
    body: dict[str, Any] = {"alarm_ids": alarm_ids, "action": action}
    if remark:
        body["remark"] = remark
    if action == "add_to_alarm_whitelist":
        spec: dict[str, Any] = {"judge": judge, "scope": scope}
        if field:
            spec["field"] = field
        if value is not None:
            spec["value"] = value
        body["whitelist"] = spec
    login = action in LOGIN_ACTIONS
    if login and (field or value is not None):
        raise CliError(f"--field and --value are for add_to_alarm_whitelist, not {action}", code="invalid")
    with ApiClient.from_credentials() as client:
        answer = client.post("/alarms/login-actions" if login else "/alarms/handle", body)
    results = answer.get("results") if isinstance(answer, dict) else None
    if isinstance(results, list):
        failed = [r for r in results if not r.get("ok", True)]
        for result in failed:
            message = (result.get("error") or {}).get("message") or "refused"
            warn(f"error: alarm {result.get('alarm_id')}: {' '.join(str(message).split())}")
        for result in results:
            if result.get("ok", True) and result.get("detail"):
                say(f"alarm {result.get('alarm_id')}: {' '.join(str(result['detail']).split())}")
        say(f"{len(results) - len(failed)} alarm(s): {action}")
        if failed:
            raise typer.Exit(1)
        return
    say(f"{len(alarm_ids)} alarm(s): {action}")


@alarm_whitelist_app.command("list")
def whitelist_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List alarm whitelist rules."""
    with ApiClient.from_credentials() as client:
        rules = client.list_all("/whitelists/alarm")
    if as_json:
        print_json(rules)
        return
    print_table(rules, WHITELIST_COLUMNS, title="Alarm whitelist")


@alarm_whitelist_app.command("add")
def whitelist_add(
    field: str = typer.Option(..., "--field", help=FIELDS),
    value: str = typer.Option(..., "--value", help="Value to match."),
    judge: str = typer.Option("equal", "--judge", help="equal, contains or glob."),
    event_class: str | None = typer.Option(None, "--class", help="Only alarms of this class (default any)."),
    server: list[str] | None = typer.Option(
        None, "--server", help="Limit to these servers (id or name, repeatable; default all)."
    ),
    expires: str | None = typer.Option(None, "--expires", help="YYYY-MM-DD or ISO date-time; default never."),
    description: str | None = typer.Option(None, "--description"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add an alarm whitelist rule (applies to new alarms; `apply` handles existing ones)."""
    body: dict[str, Any] = {"field": field, "judge": judge, "value": value}
    if event_class:
        body["event_class"] = event_class
    if expires:
        body["expires_at"] = parse_expiry(expires)
    if description:
        body["description"] = description
    with ApiClient.from_credentials() as client:
        if server:
            body["server_ids"] = [resolve_server(client, ref)["id"] for ref in server]
        rule = client.post("/whitelists/alarm", body)
    if as_json:
        print_json(rule)
        return
    say(f"added alarm whitelist rule {rule.get('id')}")


@alarm_whitelist_app.command("delete")
def whitelist_delete(rule_id: str = typer.Argument(..., help="Rule id.")) -> None:
    """Delete an alarm whitelist rule."""
    with ApiClient.from_credentials() as client:
        client.delete(f"/whitelists/alarm/{rule_id}")
    say(f"deleted alarm whitelist rule {rule_id}")


@alarm_whitelist_app.command("apply")
def whitelist_apply(rule_id: str = typer.Argument(..., help="Rule id.")) -> None:
    """Apply a rule to existing unhandled alarms (marks the matching ones whitelisted)."""
    with ApiClient.from_credentials() as client:
        answer = client.post(f"/whitelists/alarm/{rule_id}/apply")
    count = None
    if isinstance(answer, dict):
        count = answer.get("handled")
    say(f"applied alarm whitelist rule {rule_id}" + (f": {count} alarm(s)" if count is not None else ""))
