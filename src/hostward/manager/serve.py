"""Run the manager: the console/API server and the agent-channel server in one process and one loop.

``serve(settings)`` checks the configuration, brings the database schema and the policy presets up to
date, renews the server certificate if needed, then runs two ``uvicorn.Server``s sharing one
``ManagerContext``: the console + REST API on ``listen`` (HTTPS with the manager's certificate, or plain
HTTP when ``plain_http`` is set, which is refused unless ``listen`` is a loopback address) and the agent
channel on ``agent_listen`` (always HTTPS). SIGTERM or SIGINT stops both cleanly; a second signal stops
them at once. Access logs are off: 10,000 agents polling would drown everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn

from hostward.core.errors import ConfigError
from hostward.manager.agentlink import pki
from hostward.manager.app import create_agent_app, create_app
from hostward.manager.context import ManagerContext
from hostward.manager.db import migrate
from hostward.manager.settings import CONFIG_NAME, ManagerSettings, split_host_port

log = logging.getLogger("hostward.manager")

GRACEFUL_SHUTDOWN_S = 5


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``serve``: two servers must stop together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: ManagerSettings) -> None:
    """Refuse plain HTTP on anything but loopback (ConfigError naming ``plain_http``)."""
    host, _ = split_host_port(settings.listen)
    if settings.plain_http and not is_loopback(host):
        raise ConfigError(
            str(settings.data_dir / CONFIG_NAME),
            "plain_http",
            f"plain HTTP is allowed only on a loopback address, not on listen={settings.listen}; "
            "drop plain_http to serve HTTPS",
        )


def prepare(settings: ManagerSettings, ctx: ManagerContext) -> None:
    """Migrate the database, create missing policy presets, renew the server certificate if due."""
    pki.ensure_pki(settings, create_ca=False)
    migrate.upgrade(settings.effective_database_url)
    from hostward.manager.policies import service as policies

    with ctx.uow() as session:
        policies.ensure_presets(session)


def serve(
    settings: ManagerSettings,
    *,
    ctx: ManagerContext | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run both servers until SIGTERM/SIGINT; ConfigError on bad settings or unusable addresses."""
    check_settings(settings)
    context = ctx or ManagerContext.from_settings(settings)
    try:
        prepare(settings, context)
        _raise_fd_limit()
        asyncio.run(_serve(settings, context, on_ready))
    finally:
        if ctx is None:
            context.close()


async def _serve(settings: ManagerSettings, ctx: ManagerContext, on_ready: Callable[[], None] | None) -> None:
    api_sock = _bind("listen", settings.listen, settings)
    try:
        agent_sock = _bind("agent_listen", settings.agent_listen, settings)
    except BaseException:
        api_sock.close()
        raise
    tls_cert, tls_key = str(settings.server_cert_path), str(settings.server_key_path)
    api = _Server(
        uvicorn.Config(
            create_app(settings, ctx),
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            ssl_certfile=None if settings.plain_http else tls_cert,
            ssl_keyfile=None if settings.plain_http else tls_key,
        )
    )
    agent = _Server(
        uvicorn.Config(
            create_agent_app(ctx),
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            # Agents keep their connection between heartbeats: no TLS handshake per request.
            timeout_keep_alive=settings.heartbeat_interval + 15,
            backlog=4096,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
        )
    )
    servers = (api, agent)
    loop = asyncio.get_running_loop()

    signals_seen = 0

    def on_signal() -> None:
        # Only flags here: the servers' own loops notice them and shut down in order.
        nonlocal signals_seen
        signals_seen += 1
        ctx.wakeups.release_all()
        for server in servers:
            server.should_exit = True
            if signals_seen > 1:
                server.force_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        tasks = [
            asyncio.create_task(api.serve(sockets=[api_sock]), name="hostward-api"),
            asyncio.create_task(agent.serve(sockets=[agent_sock]), name="hostward-agent-channel"),
        ]
        ready = asyncio.create_task(_notify_ready(servers, on_ready), name="hostward-ready")
        scheme = "http" if settings.plain_http else "https"
        log.info(
            "console and API on %s://%s, agent channel on https://%s",
            scheme,
            settings.listen,
            settings.agent_listen,
        )
        # When one server ends (startup failure or signal) the other is stopped too.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        ctx.wakeups.release_all()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        ready.cancel()
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        api_sock.close()
        agent_sock.close()


async def _notify_ready(servers: tuple[_Server, ...], on_ready: Callable[[], None] | None) -> None:
    while not all(s.started for s in servers):
        if any(s.should_exit for s in servers):
            return
        await asyncio.sleep(0.05)
    if on_ready is not None:
        on_ready()


def _bind(key: str, value: str, settings: ManagerSettings) -> socket.socket:
    """Bind the listening socket ourselves so an unusable address is a ConfigError naming the key."""
    host, port = split_host_port(value)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            str(settings.data_dir / CONFIG_NAME), key, f"cannot resolve {host!r}: {exc}"
        ) from exc
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" serves IPv4 clients too.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(4096)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            str(settings.data_dir / CONFIG_NAME), key, f"cannot listen on {value}: {exc}"
        ) from exc
    return sock


def _raise_fd_limit() -> None:
    # Every agent holds a long-poll connection (and often a keep-alive one): 10,000 agents need more
    # descriptors than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
