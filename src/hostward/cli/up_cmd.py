"""``hostward up``: a whole local installation in one command (what ``make run`` uses).

Initialise the data dir if absent, start the manager (plain HTTP on loopback), log in as admin, enroll
an agent for this machine and run it, print the console URL, then wait; SIGINT/SIGTERM stop the agent
and then the manager.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import typer

from hostward.cli.client import ApiClient, Credentials, write_private_file
from hostward.cli.client import login as api_login
from hostward.cli.errors import CliError
from hostward.cli.output import say, warn
from hostward.cli.supervise import Interrupted, Supervisor, child_env, self_command

LOOPBACK = "127.0.0.1"
ADMIN = "admin"
PASSWORD_FILE = "admin-password"
START_TIMEOUT_S = 60.0
ONLINE_TIMEOUT_S = 30.0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _initialise(data_dir: Path, port: int, agent_port: int) -> None:
    """Run ``manager init`` once; keep the admin password (0600) so later runs can log in again."""
    from hostward.manager.bootstrap import init_manager
    from hostward.manager.settings import CONFIG_NAME

    if (data_dir / CONFIG_NAME).exists():
        return
    env_password = os.environ.get("HOSTWARD_ADMIN_PASSWORD") or None
    result = init_manager(
        data_dir,
        listen=f"{LOOPBACK}:{port}",
        agent_listen=f"{LOOPBACK}:{agent_port}",
        admin_password=env_password,
    )
    say(f"initialised a new manager in {data_dir}")
    password = result.admin_password or env_password
    if password:
        write_private_file(data_dir / PASSWORD_FILE, password + "\n")
    if result.admin_password and not env_password:
        say(f"admin user: {ADMIN}")
        say(f"admin password: {result.admin_password}")
        say(f"(shown once; kept for `hostward up` in {data_dir / PASSWORD_FILE}, mode 0600)")


def _admin_password(data_dir: Path) -> str:
    path = data_dir / PASSWORD_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    for name in ("HOSTWARD_ADMIN_PASSWORD", "HOSTWARD_PASSWORD"):
        if os.environ.get(name):
            return os.environ[name]
    raise CliError(
        f"cannot log in as {ADMIN}: {path} is missing; set HOSTWARD_ADMIN_PASSWORD to its password"
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def up(
    data_dir: Path = typer.Option(
        Path(".hostward"), "--data-dir", help="Manager data dir (created if absent)."
    ),
    port: int = typer.Option(8443, "--port", min=1, max=65535, help="Console + API port on 127.0.0.1."),
    agent_port: int = typer.Option(10180, "--agent-port", min=1, max=65535, help="Agent channel port."),
    no_agent: bool = typer.Option(False, "--no-agent", help="Start only the manager."),
) -> None:
    """Initialise (if needed) and run a manager plus an agent for this machine until Ctrl-C."""
    data_dir = data_dir.resolve()
    if port == agent_port:
        raise CliError("--port and --agent-port must differ", exit_code=2)
    for p in (port, agent_port):
        if not _port_free(p):
            raise CliError(
                f"port {p} on {LOOPBACK} is in use (another `hostward up`?): choose --port/--agent-port"
            )
    _initialise(data_dir, port, agent_port)
    url = f"http://{LOOPBACK}:{port}"
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    try:
        manager = supervisor.start(
            "manager",
            self_command(
                "manager",
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                f"{LOOPBACK}:{port}",
                "--agent-listen",
                f"{LOOPBACK}:{agent_port}",
                "--plain-http",
            ),
            data_dir / "manager.log",
            env=child_env(),
        )
        say(f"manager starting (pid {manager.proc.pid}, log {manager.log_path})")
        supervisor.wait_until("the manager's /api/v1/health", lambda: _healthy(url), START_TIMEOUT_S)

        creds = api_login(url, ADMIN, _admin_password(data_dir))
        creds.save()
        say(f"CLI logged in as {ADMIN} (credentials in {Credentials.path()})")
        if not no_agent:
            _start_agent(supervisor, creds, data_dir)
        say("")
        password_file = data_dir / PASSWORD_FILE
        where = f"; password in {password_file}" if password_file.exists() else ""
        say(f"console: {url}/console/   (user {ADMIN}{where})")
        say("press Ctrl-C to stop")
        supervisor.run_forever()
        say("stopping ...")
    except Interrupted:
        say("stopping ...")
    finally:
        supervisor.stop()
        supervisor.restore_signal_handlers()
    say("stopped")


def _start_agent(supervisor: Supervisor, creds: Credentials, data_dir: Path) -> None:
    state_dir = data_dir / "agent"
    with ApiClient.from_credentials(creds) as client:
        token = client.post(
            "/enrollment-tokens", {"hours": 1, "max_uses": 1, "description": "hostward up: local agent"}
        )
    # Enrolling again on every start is safe: the same machine keeps its server record.
    enroll = self_command(
        "agent",
        "enroll",
        "--manager",
        str(token["agent_url"]),
        "--token",
        str(token["token"]),
        "--ca-fingerprint",
        str(token["ca_fingerprint"]),
        "--state-dir",
        str(state_dir),
    )
    enroller = supervisor.start("agent enrollment", enroll, data_dir / "agent.log", env=child_env())
    supervisor.children.remove(enroller)  # a one-shot, not a service: its exit is not a failure
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while enroller.proc.poll() is None:
            if time.monotonic() > deadline:
                enroller.proc.kill()
                raise CliError(f"agent enrollment did not finish in {START_TIMEOUT_S:.0f} s")
            supervisor.sleep(0.2)
    finally:
        if enroller.proc.poll() is None:
            enroller.proc.kill()
            enroller.proc.wait()
        enroller.log.close()
    if enroller.proc.returncode != 0:
        warn(enroller.tail())
        raise CliError(
            f"agent enrollment failed with status {enroller.proc.returncode} (log: {enroller.log_path})"
        )

    if os.geteuid() != 0:
        warn(
            "note: not running as root, so the agent runs DETECT-ONLY: it reports and alarms but cannot "
            "block IPs, isolate files or read root-only logs. Run `sudo make run` for full protection."
        )
    agent = supervisor.start(
        "agent",
        self_command("agent", "run", "--state-dir", str(state_dir)),
        data_dir / "agent.log",
        env=child_env(),
    )
    say(f"agent starting (pid {agent.proc.pid}, state {state_dir}, log {agent.log_path})")
    _report_online(supervisor, creds)


def _report_online(supervisor: Supervisor, creds: Credentials) -> None:
    """Say when this machine shows up Online (do not fail if it is slow: the log tells why)."""
    with ApiClient.from_credentials(creds) as client:
        deadline = time.monotonic() + ONLINE_TIMEOUT_S
        while time.monotonic() < deadline:
            online = client.get("/servers", agent_status="online", limit=100).get("items", [])
            mine = [s for s in online if s.get("hostname") == socket.gethostname()] or online
            if mine:
                say(f"server {mine[0].get('name')} is Online")
                return
            supervisor.sleep(0.5)
    warn(f"the agent is not Online after {ONLINE_TIMEOUT_S:.0f} s; see {supervisor.children[-1].log_path}")
