"""Simulated agents for ``manager_load.py``: one load-generator process runs a slice of them in one loop.

Each simulated agent is what a real agent is on the wire: its own machine id and name, its own enrolled
credential, its own HTTPS connections verified against the manager's CA (one held by the command long
poll, one kept alive for heartbeats, a third for event batches on event agents), heartbeats at a fixed
phase of the interval. Enrollment uses httpx; the measured traffic uses ``RawClient``, a minimal
keep-alive HTTP/1.1 client on the (uv)loop's TLS transport, with pre-serialised bodies and responses
parsed only where needed: every client CPU cycle is taken from the manager on this machine.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import gc
import json
import random
import resource
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import httpx

ALARM_CLASS = "login_0001"  # brute force: a common, mergeable detection


@dataclass
class SimAgent:
    index: int
    machine_id: str
    name: str
    client: httpx.AsyncClient
    key: str = ""
    polling: bool = False
    hb_head: str = ""
    raw: RawClient | None = None


@dataclass
class Stats:
    enroll_ms: list[float] = field(default_factory=list)
    enroll_errors: Counter[str] = field(default_factory=Counter)
    hb_ms: list[float] = field(default_factory=list)
    hb_at: list[float] = field(default_factory=list)  # start, s after the window opened
    hb_lag_ms: list[float] = field(default_factory=list)
    hb_scheduled: int = 0
    hb_errors: Counter[str] = field(default_factory=Counter)
    poll_done: int = 0
    poll_early: int = 0
    poll_errors: Counter[str] = field(default_factory=Counter)
    polls_open_samples: list[int] = field(default_factory=list)
    ev_batch_ms: list[float] = field(default_factory=list)
    ev_acks: Counter[str] = field(default_factory=Counter)
    ev_errors: Counter[str] = field(default_factory=Counter)
    ev_last_ack_wall: float = 0.0
    loop_lag_ms: list[float] = field(default_factory=list)


def error_kind(exc: BaseException | None = None, status: int | None = None) -> str:
    if status is not None:
        return f"http_{status}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout_{type(exc).__name__.removesuffix('Timeout').lower()}"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "disconnected"
    return type(exc).__name__


class RawHttpError(Exception):
    """A failed request of the raw client; ``kind`` as ``error_kind`` names it."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, Content-Length responses only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False
        self._head_end = -1
        self._length = 0
        self._status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._head_end < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self._head_end = end + 4
            self._status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._length = 0
            else:
                stop = head.find(b"\r\n", at + 2)
                self._length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        end = self._head_end + self._length
        if len(self.buf) >= end:
            body = bytes(self.buf[self._head_end : end])
            del self.buf[:end]
            self._head_end = -1
            waiter.set_result((self._status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(RawHttpError("disconnected"))


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(RawHttpError("timeout_read"))


class RawClient:
    """A minimal HTTPS/1.1 client with a fixed number of kept-alive connections ("slots").

    The simulated agents talk the real protocol over real TLS (verified against the manager's CA) with
    their real credentials, but without httpx's per-request machinery: on this 2-core machine every
    cycle the load generator spends is taken from the manager it measures.
    """

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext, source: str, headers: dict[str, str], slots: int = 2
    ) -> None:
        self.host, self.port, self.tls, self.source = host, port, tls, source
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host}:{port}\r\n{extra}"
        self._conns: list[_Conn | None] = [None] * slots

    async def _connect(self, timeout: float) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Conn,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host,
                    local_addr=(self.source, 0),
                ),
                timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise RawHttpError("connect_error") from exc
        return conn

    async def request(
        self, slot: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        conn = self._conns[slot]
        if conn is None or conn.lost:
            conn = self._conns[slot] = await self._connect(10.0)
        loop = asyncio.get_running_loop()
        if body is None:
            data = f"{method} {path} HTTP/1.1\r\n{self._head}\r\n".encode()
        else:
            data = (
                f"{method} {path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        conn.waiter = waiter
        assert conn.transport is not None
        conn.transport.write(data)
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except RawHttpError:
            self._drop(slot)
            raise
        finally:
            timer.cancel()
            conn.waiter = None

    def _drop(self, slot: int) -> None:
        conn, self._conns[slot] = self._conns[slot], None
        if conn is not None and conn.transport is not None:
            conn.transport.abort()

    def close(self) -> None:
        for slot in range(len(self._conns)):
            self._drop(slot)


def facts(agent: SimAgent) -> dict[str, Any]:
    return {
        "hostname": agent.name,
        "machine_id": agent.machine_id,
        "ips": [f"10.{agent.index // 65536 % 256}.{agent.index // 256 % 256}.{agent.index % 256}"],
        "os_name": "Debian GNU/Linux",
        "os_version": "12",
        "kernel": "6.1.0-bench",
        "arch": "x86_64",
        "agent_version": "0.1.0",
    }


class Worker:
    def __init__(self, cfg: dict[str, Any], pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.stats = Stats()
        self.stopping = False
        self.window = (0.0, 0.0)
        self.ssl = ssl.create_default_context(cafile=cfg["ca_path"])
        first, count = cfg["first"], cfg["count"]
        self.agents = [self._agent(i) for i in range(first, first + count)]

    def _client(self, i: int) -> httpx.AsyncClient:
        # Spread source addresses over 127.0.1.0/24 so 20,000 connections never exhaust ephemeral ports.
        source = f"127.0.1.{1 + i % 250}"
        keepalive = self.cfg["interval"] + 10.0 if self.cfg["keepalive"] else 5.0
        transport = httpx.AsyncHTTPTransport(
            verify=self.ssl,
            local_address=source,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=keepalive),
        )
        return httpx.AsyncClient(
            base_url=self.cfg["agent_url"] + "/agent/v1",
            transport=transport,
            timeout=httpx.Timeout(self.cfg["timeout"], connect=10.0),
            headers={"Content-Type": "application/json", "User-Agent": "hostward-bench/1"},
        )

    def _raw(self, agent: SimAgent) -> RawClient:
        url = httpx.URL(self.cfg["agent_url"])
        headers = {"User-Agent": "hostward-bench/1", "Authorization": f"Bearer {agent.key}"}
        # Slot 0 holds the long poll, slot 1 carries heartbeats (2 connections per agent, or 1 with
        # --one-connection); event agents send their batches on a third connection of their own.
        source = f"127.0.1.{1 + agent.index % 250}"
        return RawClient(url.host, url.port or 443, self.ssl, source, headers, slots=3)

    def _agent(self, i: int) -> SimAgent:
        agent = SimAgent(i, f"bench-{self.cfg['run_id']}-{i:06d}", f"bench-{i:06d}", self._client(i))
        agent.hb_head = json.dumps({"facts": facts(agent)})[:-1]
        return agent

    # ---- enrollment ---------------------------------------------------------------------------------

    async def enroll_all(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.cfg["enroll_concurrency"])
        started = time.time()
        await asyncio.gather(*(self._enroll(a, gate) for a in self.agents))
        return {
            "enrolled": sum(1 for a in self.agents if a.key),
            "started": started,
            "finished": time.time(),
            "ms": self.stats.enroll_ms,
            "errors": dict(self.stats.enroll_errors),
        }

    async def _enroll(self, agent: SimAgent, gate: asyncio.Semaphore) -> None:
        body = json.dumps({"token": self.cfg["token"], "name": agent.name, "facts": facts(agent)})
        async with gate:
            for attempt in range(3):
                t0 = time.perf_counter()
                try:
                    resp = await agent.client.post("/enroll", content=body)
                except httpx.HTTPError as exc:
                    self.stats.enroll_errors[error_kind(exc)] += 1
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                if resp.status_code == 200:
                    self.stats.enroll_ms.append((time.perf_counter() - t0) * 1000)
                    agent.key = resp.json()["agent_key"]
                    # Like ``agent enroll`` then ``agent run``: the run starts on new connections.
                    await agent.client.aclose()
                    agent.raw = self._raw(agent)
                    return
                self.stats.enroll_errors[error_kind(status=resp.status_code)] += 1
                await asyncio.sleep(0.5 * (attempt + 1))

    # ---- measured run -------------------------------------------------------------------------------

    async def run(self, warm_wall: float, ramp: float, warmup: float, duration: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        # Wall-clock times from the parent (same machine) become this loop's monotonic times.
        t_warm = loop.time() + (warm_wall - time.time())
        t0, t1 = t_warm + warmup, t_warm + warmup + duration
        self.window = (t0, t1)
        live = [a for a in self.agents if a.key]
        rng = random.Random(self.cfg["first"])
        polls, finishing = [], []
        for agent in live:
            # Agents start over the ramp (a manager restart brings them all back, but not in one second);
            # each heartbeats at its own phase from then on.
            connect_at = t_warm + rng.uniform(0, ramp)
            first_hb = connect_at + rng.uniform(0, self.cfg["interval"])
            if self.cfg["one_connection"]:
                polls.append(asyncio.create_task(self._combined_loop(agent, connect_at, first_hb, t0, t1)))
                continue
            polls.append(asyncio.create_task(self._poll_loop(agent, connect_at)))
            finishing.append(asyncio.create_task(self._heartbeat_loop(agent, first_hb, t0, t1)))
        for agent in live[: self.cfg["event_agents"]]:
            finishing.append(asyncio.create_task(self._event_loop(agent, t0, t1)))
        monitor = asyncio.create_task(self._monitor(live, t0, t1))
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(0.0, t1 - loop.time()))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        open_at_end = sum(1 for a in live if a.polling)
        self.stopping = True
        # Heartbeats and event batches already started may finish (bounded by the request timeout).
        for t in [*polls, monitor]:
            t.cancel()
        await asyncio.wait(finishing, timeout=self.cfg["timeout"] + 5)
        for t in finishing:
            t.cancel()
        await asyncio.gather(*polls, *finishing, monitor, return_exceptions=True)
        s = self.stats
        return {
            "hb_ms": s.hb_ms,
            "hb_at": s.hb_at,
            "hb_lag_ms": s.hb_lag_ms,
            "hb_scheduled": s.hb_scheduled,
            "hb_errors": dict(s.hb_errors),
            "poll_done": s.poll_done,
            "poll_early": s.poll_early,
            "poll_errors": dict(s.poll_errors),
            "polls_open_samples": s.polls_open_samples,
            "polls_open_at_end": open_at_end,
            "live": len(live),
            "ev_batch_ms": s.ev_batch_ms,
            "ev_acks": dict(s.ev_acks),
            "ev_errors": dict(s.ev_errors),
            "ev_last_ack_wall": s.ev_last_ack_wall,
            "loop_lag_ms": s.loop_lag_ms,
            "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        }

    async def _poll(self, agent: SimAgent, wait: float) -> bool:
        """One long poll; False (after a backoff pause) when it failed."""
        loop = asyncio.get_running_loop()
        assert agent.raw is not None
        agent.polling = True
        start = loop.time()
        result: tuple[int, bytes] | None = None
        try:
            result = await agent.raw.request(
                0, "GET", f"/agent/v1/commands?wait={wait:.2f}", timeout=wait + self.cfg["timeout"]
            )
        except RawHttpError as exc:
            self.stats.poll_errors[exc.kind] += 1
        finally:
            agent.polling = False
        if result is not None and result[0] != 200:
            self.stats.poll_errors[error_kind(status=result[0])] += 1
        elif result is not None:
            if self.window[0] <= loop.time() < self.window[1]:
                self.stats.poll_done += 1
            if loop.time() - start < wait - 2 and b'"commands":[]' in result[1]:
                self.stats.poll_early += 1
            return True
        await asyncio.sleep(random.uniform(1.0, 3.0))
        return False

    async def _poll_loop(self, agent: SimAgent, start: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start - loop.time()))
        while not self.stopping:
            await self._poll(agent, self.cfg["poll_wait"])

    async def _combined_loop(self, agent: SimAgent, start: float, first: float, t0: float, t1: float) -> None:
        """--one-connection: heartbeats go out between long polls, on the poll's own connection."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start - loop.time()))
        due = first
        while not self.stopping:
            if loop.time() >= due - 0.05:
                if due < t1:
                    await self._heartbeat(agent, due, t0)
                due += self.cfg["interval"]
                continue
            await self._poll(agent, min(self.cfg["poll_wait"], max(0.1, due - loop.time())))

    async def _heartbeat_loop(self, agent: SimAgent, first: float, t0: float, t1: float) -> None:
        loop = asyncio.get_running_loop()
        due = first
        while due < t1 and not self.stopping:
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._heartbeat(agent, due, t0)
            due += self.cfg["interval"]

    async def _heartbeat(self, agent: SimAgent, due: float, t0: float) -> None:
        loop = asyncio.get_running_loop()
        measured = due >= t0
        health = (
            f',"health":{{"cpu_percent":{random.uniform(0.1, 0.9):.2f},'
            f'"rss_bytes":{random.randrange(40, 50) * 1_000_000},"outbox_depth":0}},"policy_version":null}}'
        )
        start = loop.time()
        # uvloop's clock has millisecond resolution: latencies are timed with perf_counter.
        started = time.perf_counter()
        assert agent.raw is not None
        slot = 0 if self.cfg["one_connection"] else 1
        try:
            status, _ = await agent.raw.request(
                slot, "POST", "/agent/v1/heartbeat", (agent.hb_head + health).encode(), self.cfg["timeout"]
            )
            if status != 200 and measured:
                self.stats.hb_errors[error_kind(status=status)] += 1
        except RawHttpError as exc:
            status = 0
            if measured:
                self.stats.hb_errors[exc.kind] += 1
        if measured:
            self.stats.hb_scheduled += 1
            self.stats.hb_lag_ms.append((start - due) * 1000)
            if status == 200:
                self.stats.hb_ms.append((time.perf_counter() - started) * 1000)
                self.stats.hb_at.append(start - t0)

    async def _event_loop(self, agent: SimAgent, t0: float, t1: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        batch, fingerprints = self.cfg["event_batch"], self.cfg["fingerprints"]
        pause = self.cfg["event_interval"]
        seq = 0
        while loop.time() < t1 and not self.stopping:
            now = datetime.now(UTC).isoformat()
            events = []
            for _ in range(batch):
                fp = seq % fingerprints
                events.append(
                    f'{{"kind":"alarm","key":"{agent.machine_id}-{seq}","occurred_at":"{now}",'
                    f'"event_class":"{ALARM_CLASS}","fingerprint":"bench-fp-{fp}",'
                    f'"title":"bench brute force","evidence":{{"login_ip":"192.0.2.{fp % 250 + 1}",'
                    f'"username":"root","attempts":{seq % 50 + 5}}}}}'
                )
                seq += 1
            started = time.perf_counter()
            assert agent.raw is not None
            body = ('{"events":[' + ",".join(events) + "]}").encode()
            try:
                status, answer = await agent.raw.request(
                    2,
                    "POST",
                    "/agent/v1/events",
                    body,
                    self.cfg["timeout"],
                )
            except RawHttpError as exc:
                self.stats.ev_errors[exc.kind] += 1
                await asyncio.sleep(1.0)
                continue
            if status != 200:
                self.stats.ev_errors[error_kind(status=status)] += 1
                await asyncio.sleep(1.0)
                continue
            self.stats.ev_batch_ms.append((time.perf_counter() - started) * 1000)
            self.stats.ev_acks.update(a["status"] for a in json.loads(answer)["acks"])
            self.stats.ev_last_ack_wall = time.time()
            if pause > 0:
                await asyncio.sleep(pause)

    async def _monitor(self, live: list[SimAgent], t0: float, t1: float) -> None:
        """Samples open long polls and this loop's own lag (a saturated client inflates latencies)."""
        loop = asyncio.get_running_loop()
        tick = 0.25
        while loop.time() < t1:
            before = loop.time()
            await asyncio.sleep(tick)
            if before >= t0:
                self.stats.loop_lag_ms.append(max(0.0, (loop.time() - before - tick) * 1000))
                if int(before / tick) % 4 == 0:
                    self.stats.polls_open_samples.append(sum(1 for a in live if a.polling))

    async def close(self) -> None:
        for agent in self.agents:
            if agent.raw is not None:
                agent.raw.close()
        for i in range(0, len(self.agents), 500):
            await asyncio.gather(
                *(a.client.aclose() for a in self.agents[i : i + 500]), return_exceptions=True
            )


async def _main(cfg: dict[str, Any], pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    # A TLS connection torn down mid-handshake (connect timeout) is already counted as connect_error;
    # the loop's default handler would print a traceback for each.
    loop.set_exception_handler(lambda _loop, _context: None)
    worker = Worker(cfg, pipe)
    try:
        pipe.send(("enrolled", await worker.enroll_all()))
        # Thousands of clients are long-lived objects: keep full collections (pauses of 100s of ms that
        # would show up as manager latency) out of the measurement.
        gc.freeze()
        message = await loop.run_in_executor(None, pipe.recv)
        if message[0] == "run":
            pipe.send(("result", await worker.run(*message[1:])))
    finally:
        await worker.close()


def worker_main(cfg: dict[str, Any], pipe: Connection) -> None:
    """Entry point of a load-generator process (``multiprocessing`` spawn target)."""
    # asyncio gives every TLS connection a zero-filled 256 KiB read buffer: for thousands of connections
    # that is gigabytes and a storm of page faults in the load generator. 16 KiB is one TLS record.
    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024
    # httpcore imports sniffio on every request to tell asyncio from trio; where sniffio is not installed
    # each failed import searches sys.path again (about a tenth of the client's CPU). None = not there.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
    gc.set_threshold(50_000, 50, 1000)
    # Thousands of connections per process: raise the descriptor limit as far as allowed (root: past
    # the hard limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((1 << 18, 1 << 18), (hard, hard)):
        if limits[0] > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                break
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError, EOFError):
        try:
            import uvloop
        except ImportError:
            asyncio.run(_main(cfg, pipe))
        else:
            uvloop.run(_main(cfg, pipe))
