"""Run the manager: the console/API server and the agent-channel server in one process and one loop.

``serve(settings)`` checks the configuration, brings the database schema and the policy presets up to
date, renews the server certificate if needed, then runs two ``uvicorn.Server``s sharing one
``ManagerContext``: the console + REST API on ``listen`` (HTTPS with the manager's certificate, or plain
HTTP when ``plain_http`` is set, which is refused unless ``listen`` is a loopback address) and the agent
channel on ``agent_listen`` (always HTTPS). SIGTERM or SIGINT stops both cleanly; a second signal stops
them at once. Access logs are off: 10,000 agents polling would drown everything else.

The loop is uvloop's and HTTP is parsed by httptools where they are installed (they are dependencies on
Linux): TLS and HTTP handling of thousands of agent connections is most of the manager's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from hostward.core.errors import ConfigError
from hostward.manager.agentlink import pki
from hostward.manager.app import create_agent_app, create_app
from hostward.manager.context import ManagerContext
from hostward.manager.db import migrate
from hostward.manager.settings import CONFIG_NAME, ManagerSettings, split_host_port

log = logging.getLogger("hostward.manager")

GRACEFUL_SHUTDOWN_S = 5
AGENT_WORKERS_ENV = "HOSTWARD_AGENT_WORKERS"


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
        _tune_gc()
        _run(_serve(settings, context, on_ready))
    finally:
        if ctx is None:
            context.close()


def _agent_server(settings: ManagerSettings, ctx: ManagerContext) -> _Server:
    return _Server(
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
            ssl_certfile=str(settings.server_cert_path),
            ssl_keyfile=str(settings.server_key_path),
        )
    )


def agent_worker_count(settings: ManagerSettings) -> int:
    """Processes serving the agent channel: ``agent_workers`` (manager.toml / ``--agent-workers``), or the
    ``HOSTWARD_AGENT_WORKERS`` environment variable when set; default 1.

    More than one needs PostgreSQL: each process keeps its own in-memory agent state and they meet only
    in the database (commands queued in one reach polls held by another within the 1 s tick).
    """
    raw = os.environ.get(AGENT_WORKERS_ENV, "").strip()
    source, key = "environment", AGENT_WORKERS_ENV
    if not raw:
        workers = settings.agent_workers
        source, key = str(settings.data_dir / CONFIG_NAME), "agent_workers"
    elif not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise ConfigError(source, key, f"must be a number of processes 1..64, not {raw!r}")
    else:
        workers = int(raw)
    if workers > 1 and not settings.effective_database_url.startswith("postgresql"):
        raise ConfigError(source, key, "several agent-channel processes need PostgreSQL (database_url)")
    return workers


async def _serve(settings: ManagerSettings, ctx: ManagerContext, on_ready: Callable[[], None] | None) -> None:
    workers = agent_worker_count(settings)
    api_sock = _bind("listen", settings.listen, settings)
    try:
        agent_sock = _bind("agent_listen", settings.agent_listen, settings, reuse_port=workers > 1)
    except BaseException:
        api_sock.close()
        raise
    # Extra agent-channel processes listen on the same port (SO_REUSEPORT: the kernel spreads new
    # connections over them); each has its own descriptor limit, loop and database pool.
    children = [_start_agent_worker(settings, i) for i in range(1, workers)]
    try:
        await _serve_here(settings, ctx, on_ready, api_sock, agent_sock)
    finally:
        _stop_agent_workers(children)


def _start_agent_worker(settings: ManagerSettings, index: int) -> Any:
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=_agent_worker_main, args=(settings,), name=f"hostward-agent-channel-{index}", daemon=True
    )
    proc.start()
    return proc


def _stop_agent_workers(children: list[Any]) -> None:
    for proc in children:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    for proc in children:
        proc.join(GRACEFUL_SHUTDOWN_S + 5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _agent_worker_main(settings: ManagerSettings) -> None:
    """An extra agent-channel process: the agent app only, on its own SO_REUSEPORT socket."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        # PR_SET_PDEATHSIG: a manager killed outright takes its agent-channel processes with it.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = ManagerContext.from_settings(settings)
    try:
        _tune_gc()
        _run(_serve_agent_only(settings, ctx))
    finally:
        ctx.close()


async def _serve_agent_only(settings: ManagerSettings, ctx: ManagerContext) -> None:
    sock = _bind("agent_listen", settings.agent_listen, settings, reuse_port=True)
    server = _agent_server(settings, ctx)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        ctx.wakeups.release_all()
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


async def _serve_here(
    settings: ManagerSettings,
    ctx: ManagerContext,
    on_ready: Callable[[], None] | None,
    api_sock: socket.socket,
    agent_sock: socket.socket,
) -> None:
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
    agent = _agent_server(settings, ctx)
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


def _bind(key: str, value: str, settings: ManagerSettings, *, reuse_port: bool = False) -> socket.socket:
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
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: the standard loop works, only slower
        asyncio.run(main)
        return
    uvloop.run(main)


def _tune_gc() -> None:
    # What start-up built (app, routes, models, caches) lives as long as the process: frozen, it is not
    # traversed by every full collection. A larger first generation means fewer collections under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


_FD_WANTED = 1 << 18


def _raise_fd_limit() -> None:
    # Every agent holds a long-poll connection (and often a keep-alive one): 10,000 agents need more
    # descriptors than the usual soft limit of 1024.
    # Two connections per agent: a hard limit of 20,000 stops accepting at 10,000 agents. A manager
    # started as root raises the hard limit too (up to the kernel's nr_open); others go up to it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _FD_WANTED
    with contextlib.suppress(OSError, ValueError):
        wanted = min(wanted, int(Path("/proc/sys/fs/nr_open").read_text()))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = wanted if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
