"""``hostward manager init|serve``: set up a data directory and run the manager from it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from hostward.cli.output import say
from hostward.core.errors import ConfigError

app = typer.Typer(help="Set up and run the manager.", no_args_is_help=True)

ADMIN_PASSWORD_ENV = "HOSTWARD_ADMIN_PASSWORD"


@app.command("init")
def init(
    data_dir: Path = typer.Option(..., "--data-dir", help="State directory (database, CA, manager.toml)."),
    database_url: str | None = typer.Option(
        None, "--database-url", help="SQLAlchemy URL (PostgreSQL); default: SQLite file in the data dir."
    ),
    listen: str | None = typer.Option(
        None, "--listen", help="Console + API HOST:PORT (default 127.0.0.1:8443)."
    ),
    agent_listen: str | None = typer.Option(
        None, "--agent-listen", help="Agent channel HOST:PORT (default 0.0.0.0:10180)."
    ),
    agent_url: str | None = typer.Option(
        None, "--agent-url", help="URL agents use to reach the agent channel (default: from --agent-listen)."
    ),
) -> None:
    """Create the data dir, config, database, CA and admin user (idempotent).

    The admin password is HOSTWARD_ADMIN_PASSWORD when set; otherwise one is generated and printed once.
    """
    from hostward.manager.bootstrap import init_manager

    env_password = os.environ.get(ADMIN_PASSWORD_ENV) or None
    result = init_manager(
        data_dir,
        database_url=database_url,
        listen=listen,
        agent_listen=agent_listen,
        agent_url=agent_url,
        admin_password=env_password,
    )
    if result.created:
        say(f"initialised the manager in {data_dir}")
    else:
        say(f"the manager in {data_dir} was already initialised (nothing overwritten)")
    if result.admin_password is not None:
        if env_password is not None:
            say(f"admin user: admin (password from {ADMIN_PASSWORD_ENV})")
        else:
            say("admin user: admin")
            say(f"admin password: {result.admin_password}")
            say("(shown once: store it now)")


@app.command("serve")
def serve(
    ctx: typer.Context,
    data_dir: Path = typer.Option(..., "--data-dir", help="Directory created by `hostward manager init`."),
    listen: str | None = typer.Option(
        None, "--listen", help="Console + API HOST:PORT (overrides manager.toml)."
    ),
    agent_listen: str | None = typer.Option(
        None, "--agent-listen", help="Agent channel HOST:PORT (overrides manager.toml)."
    ),
    plain_http: bool = typer.Option(
        False, "--plain-http", help="Serve the console/API over plain HTTP (loopback addresses only)."
    ),
    database_url: str | None = typer.Option(None, "--database-url", help="Overrides manager.toml."),
    agent_workers: int | None = typer.Option(
        None,
        "--agent-workers",
        min=1,
        max=64,
        help="Processes serving the agent channel (overrides manager.toml; more than 1 needs PostgreSQL).",
    ),
) -> None:
    """Run the manager (console, REST API, agent channel, scheduler) until interrupted."""
    from hostward.manager.settings import CONFIG_NAME, load_settings

    if not data_dir.is_dir():
        raise ConfigError(
            str(data_dir / CONFIG_NAME),
            "data_dir",
            f"{data_dir} does not exist: run `hostward manager init --data-dir {data_dir}` first",
        )
    settings = load_settings(
        data_dir,
        listen=listen,
        agent_listen=agent_listen,
        plain_http=True if plain_http else None,
        database_url=database_url,
        agent_workers=agent_workers,
    )
    debug = bool(getattr(ctx.obj, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    from hostward.manager.serve import serve as run_manager

    # serve() refuses plain HTTP on a non-loopback address itself (ConfigError naming plain_http).
    run_manager(settings)
