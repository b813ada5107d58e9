"""``hostward login|logout`` and ``hostward token ...`` (agent enrollment tokens)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from hostward.cli.client import ApiClient, Credentials
from hostward.cli.client import login as api_login
from hostward.cli.errors import CliError
from hostward.cli.output import print_json, print_record, print_table, say

PASSWORD_ENV = "HOSTWARD_PASSWORD"

token_app = typer.Typer(help="Agent enrollment tokens.", no_args_is_help=True)


def login(
    url: str | None = typer.Option(
        None, "--url", help="Manager URL, e.g. https://manager:8443 (default: last)."
    ),
    username: str = typer.Option("admin", "--username", "-u", help="Console user name."),
    ca_cert: Path | None = typer.Option(
        None, "--ca-cert", help="CA certificate to trust for an https URL (the manager's pki/ca.pem)."
    ),
) -> None:
    """Sign in and store the session token (password from HOSTWARD_PASSWORD, else prompted)."""
    if url is None:
        try:
            url = Credentials.load().url
        except CliError:
            raise CliError("--url is required (no previous login to reuse)", exit_code=2) from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = typer.prompt(f"password for {username}", hide_input=True)
    ca = str(ca_cert.resolve()) if ca_cert else None
    if ca_cert is not None and not ca_cert.is_file():
        raise CliError(f"--ca-cert {ca_cert}: no such file", exit_code=2)
    creds = api_login(url, username, password, ca_cert=ca)
    path = creds.save()
    say(f"logged in to {creds.url} as {creds.username}; token stored in {path}")


def logout() -> None:
    """End the session on the manager and forget the stored token."""
    try:
        creds = Credentials.load()
    except CliError:
        say("not logged in")
        return
    try:
        with ApiClient.from_credentials(creds) as client:
            client.post("/auth/logout")
    except CliError:
        pass  # an expired or unreachable session is still forgotten locally
    Credentials.forget()
    say(f"logged out of {creds.url}")


@token_app.command("create")
def token_create(
    hours: int | None = typer.Option(None, "--hours", min=1, help="Validity in hours (default 24)."),
    max_uses: int | None = typer.Option(
        None, "--max-uses", min=1, help="Enrollments allowed (default unlimited)."
    ),
    region: str | None = typer.Option(None, "--region", help="Region given to servers enrolled with it."),
    description: str | None = typer.Option(None, "--description", help="Free text."),
    name: str | None = typer.Option(None, "--name", help="Agent --name to put in the install command."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an enrollment token and print the one-line agent install command."""
    body = {"hours": hours, "max_uses": max_uses, "region": region, "description": description, "name": name}
    with ApiClient.from_credentials() as client:
        token = client.post("/enrollment-tokens", {k: v for k, v in body.items() if v is not None})
    if as_json:
        print_json(token)
        return
    print_record(token, skip=("install_command",))
    say("")
    say("install command (run on the server to protect):")
    say(str(token.get("install_command", "")))


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List enrollment tokens."""
    with ApiClient.from_credentials() as client:
        tokens = client.list_all("/enrollment-tokens")
    if as_json:
        print_json(tokens)
        return
    print_table(
        tokens,
        [
            ("ID", "id"),
            ("Region", "region"),
            ("Expires", "expires_at"),
            ("Max uses", "max_uses"),
            ("Uses", "uses"),
            ("Status", "status"),
            ("Description", "description"),
        ],
        title="Enrollment tokens",
    )


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="Token id (from `hostward token list`).")) -> None:
    """Revoke an enrollment token (enrolled agents keep their own credentials)."""
    with ApiClient.from_credentials() as client:
        client.delete(f"/enrollment-tokens/{token_id}")
    say(f"revoked enrollment token {token_id}")
