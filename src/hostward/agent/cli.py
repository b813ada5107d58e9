"""Plain functions behind ``hostward agent enroll|run|status`` (the typer commands call these).

Each returns a process exit code and prints one line on error (``debug=True`` adds the traceback).
Exit codes: 0 ok, 1 failure, 2 bad configuration or not enrolled, 75 memory cap exceeded (restart me).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path

from hostward.agent.errors import AgentError, NotEnrolled
from hostward.core.errors import ConfigError, HostwardError

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _fail(exc: BaseException, debug: bool, code: int = EXIT_FAILURE) -> int:
    if debug:
        traceback.print_exception(exc)
    message = exc.message if isinstance(exc, HostwardError) else f"{type(exc).__name__}: {exc}"
    print(f"error: {message}", file=sys.stderr)
    return code


def enroll_cmd(
    manager: str,
    token: str,
    ca_fingerprint: str,
    state_dir: Path | str,
    name: str | None = None,
    *,
    debug: bool = False,
) -> int:
    """Enroll this host; prints the server id on success."""
    from hostward.agent.config import load_config
    from hostward.agent.enroll import enroll

    try:
        cfg = load_config(state_dir, {"name": name})
        creds = enroll(
            manager,
            token,
            ca_fingerprint,
            cfg.state_dir,
            cfg.name,
            root=cfg.host_root,
            timeout=cfg.request_timeout_s,
        )
    except ConfigError as exc:
        return _fail(exc, debug, EXIT_CONFIG)
    except (HostwardError, OSError) as exc:
        return _fail(exc, debug)
    print(f"enrolled as server {creds.server_id} (region {creds.region or '-'}); state in {cfg.state_dir}")
    return 0


def run_cmd(
    state_dir: Path | str,
    log_sources: list[str] | None = None,
    *,
    debug: bool = False,
) -> int:
    """Run the agent in the foreground until SIGTERM/SIGINT; returns its exit code."""
    from hostward.agent.config import load_config
    from hostward.agent.runtime import Agent

    try:
        cfg = load_config(state_dir, {"log_sources": list(log_sources) if log_sources else None})
    except ConfigError as exc:
        return _fail(exc, debug, EXIT_CONFIG)
    try:
        agent = Agent.from_config(cfg)
    except NotEnrolled as exc:
        return _fail(exc, debug, EXIT_CONFIG)
    except (AgentError, OSError) as exc:
        return _fail(exc, debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else getattr(logging, cfg.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: a long poll every 25 s would flood the journal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return agent.run()
    except AgentError as exc:
        agent.shutdown()
        return _fail(exc, debug)


def status_cmd(state_dir: Path | str, as_json: bool = False, *, debug: bool = False) -> int:
    """Print enrollment, server id, manager URL, outbox depth and the last heartbeat; 1 when not enrolled."""
    from hostward.agent.status import agent_status, format_status

    path = Path(state_dir)
    try:
        report = agent_status(path)
    except Exception as exc:
        return _fail(exc, debug)
    print(json.dumps(report, indent=2) if as_json else format_status(report))
    return 0 if report["enrolled"] else EXIT_FAILURE
