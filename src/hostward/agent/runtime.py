"""The agent's main loop: heartbeat, command long poll, outbox sender, scan worker, budget watchdog.

Shape (STYLE §9): signal handlers only record the signal; the main thread turns it into a stop request;
shutdown runs ordered, idempotent phases. The threads (``workers.py``) only loop over the duties below;
``run_once(now)`` performs one pass of every periodic duty on the calling thread (no long poll, scans
inline) so that tests drive the agent with an injected clock.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from hostward.agent.budget import EXIT_RSS_CAP, BudgetMonitor, Probe
from hostward.agent.collectors.assets import AssetCollector, collect_accounts
from hostward.agent.commands import CommandDispatcher, failed, succeeded
from hostward.agent.components import Components
from hostward.agent.config import AgentConfig
from hostward.agent.detectors import (
    DetectorEvent,
    DetectorRegistry,
    DetectorSet,
    Observation,
    default_registry,
)
from hostward.agent.detectors.accounts import AccountsDetector
from hostward.agent.enroll import host_facts
from hostward.agent.errors import (
    AgentError,
    ManagerUnavailable,
    NotEnrolled,
    TransportError,
)
from hostward.agent.lockfile import acquire_lock
from hostward.agent.scan import Commit, ScanJob, ScanQueue, ScanRunner
from hostward.agent.state import Credentials, StateStore, ensure_private_dir
from hostward.agent.transport import AgentClient, Backoff, Outbox, OutboxSender, pinned_context
from hostward.agent.workers import Workers
from hostward.core.clock import Clock, SystemClock
from hostward.wire import (
    AgentHealth,
    AssetSnapshot,
    Command,
    CommandResult,
    DetectorHealth,
    HeartbeatRequest,
    HeartbeatResponse,
    HostFacts,
    PolicyBundle,
)

log = logging.getLogger(__name__)

EXIT_OK = 0

FACTS_TTL_S = 60.0
MAX_PENDING_RESULTS = 256
MAX_BATCHES_PER_PASS = 1000

ClientFactory = Callable[[], AgentClient]


class Agent:
    """One agent: owns its state, outbox, detectors and the threads that talk to the manager."""

    def __init__(
        self,
        cfg: AgentConfig,
        state: StateStore,
        outbox: Outbox,
        creds: Credentials,
        client_factory: ClientFactory,
        *,
        clock: Clock,
        detectors: DetectorSet,
        budget: BudgetMonitor,
        collector: AssetCollector | None = None,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.outbox = outbox
        self.creds = creds
        self.clock = clock
        self.detectors = detectors
        self.budget = budget
        self.collector = collector or AssetCollector(cfg.host_root)
        self._client_factory = client_factory
        self._clients: list[AgentClient] = []
        self._clients_lock = threading.Lock()

        self.interval = float(creds.heartbeat_interval or cfg.heartbeat_interval)
        self.bundle: PolicyBundle | None = state.policy_bundle()
        self._announced_version: int | None = self.bundle.version if self.bundle else None
        self._facts: HostFacts | None = None
        self._facts_at = -FACTS_TTL_S

        # Detectors are plain objects fed from several threads (scans, timers, policy): one lock.
        self._detect_lock = threading.Lock()
        accounts = self._accounts_detector()
        if accounts is not None:
            accounts.prime(state.last_accounts())
        self.detectors.configure(self.bundle)

        self.dispatcher = CommandDispatcher()
        self.dispatcher.register("scan", self._cmd_scan)
        self.dispatcher.register("cancel_scan", self._cmd_cancel_scan)
        self.dispatcher.register("apply_policy", self._cmd_apply_policy)
        self._pending_results: list[tuple[str, CommandResult]] = []
        self._results_lock = threading.Lock()

        self.scans = ScanRunner(
            self.collector,
            outbox,
            clock,
            on_snapshot=self._on_snapshot,
            throttle=self._throttle,
            notify=self._wake_sender,
        )
        self.scan_queue = ScanQueue()
        # FIM, risk checks, login security, malware, WTP, ransomware: built, configured and registered.
        parts = self.components = Components.for_agent(self)
        self.fim, self.loginsec, self.malware = parts.fim, parts.loginsec, parts.malware
        self.wtp, self.wtpctl, self.ransom = parts.wtp, parts.wtpctl, parts.ransom
        self._local = threading.local()
        self._once_client: AgentClient | None = None

        self.sender = OutboxSender(outbox, cfg.event_batch_size)
        self._send_backoff = Backoff(cfg.backoff_base_s, cfg.backoff_cap_s)
        self.send_not_before = 0.0
        self.next_heartbeat = 0.0
        # Soon after start (the policy has had a heartbeat to arrive): catches account changes made
        # while the agent was stopped, against the baseline saved by the previous run.
        self.next_accounts = clock.monotonic() + min(cfg.first_accounts_check_s, self._accounts_interval())
        self._next_budget = 0.0

        self.stopping = threading.Event()
        self.outbox_ready = threading.Event()
        self._signal: int | None = None
        self.workers = Workers(self)
        self._done_phases: set[str] = set()
        self._lock_fh: IO[str] | None = None
        self.exit_code = EXIT_OK
        self.stop_reason = ""

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        cfg: AgentConfig,
        clock: Clock | None = None,
        *,
        registry: DetectorRegistry | None = None,
        transport_factory: Callable[[], httpx.BaseTransport] | None = None,
        probe: Probe | None = None,
    ) -> Agent:
        """Open the state and outbox in ``cfg.state_dir``; raises NotEnrolled before enrollment."""
        ensure_private_dir(cfg.state_dir)
        state = StateStore.open(cfg.state_dir)
        creds = state.credentials()
        if creds is None:
            state.close()
            raise NotEnrolled(f"{cfg.state_dir}: not enrolled; run `hostward agent enroll` first")
        outbox = Outbox.open(cfg.state_dir, cfg.max_outbox_events)
        manager_url = cfg.manager_url or creds.manager_url
        try:
            tls = pinned_context(ca_path=Path(creds.ca_path))
        except (OSError, ssl.SSLError) as exc:
            outbox.close()
            state.close()
            raise AgentError(f"cannot load the pinned manager CA {creds.ca_path}: {exc}") from exc

        def client_factory() -> AgentClient:
            transport = transport_factory() if transport_factory else None
            return AgentClient(
                manager_url,
                verify=tls,
                agent_key=creds.agent_key,
                timeout=cfg.request_timeout_s,
                transport=transport,
            )

        budget = BudgetMonitor(
            cfg.budget.cpu_percent, cfg.budget.rss_mb * 1024 * 1024, cfg.budget.cpu_window_s, probe
        )
        detectors = (registry or default_registry()).create()
        return cls(
            cfg,
            state,
            outbox,
            creds,
            client_factory,
            clock=clock or SystemClock(),
            detectors=detectors,
            budget=budget,
        )

    def new_client(self) -> AgentClient:
        client = self._client_factory()
        with self._clients_lock:
            self._clients.append(client)
        return client

    def _accounts_detector(self) -> AccountsDetector | None:
        if "accounts" in self.detectors:
            detector = self.detectors["accounts"]
            if isinstance(detector, AccountsDetector):
                return detector
        return None

    # ---- one pass (tests, and the building blocks of the threads) --------------------------------

    def run_once(self, now: float | None = None) -> None:
        """Every duty that is due at monotonic time ``now``, on this thread, without blocking waits."""
        mono = self.clock.monotonic() if now is None else now
        if self._once_client is None:
            self._once_client = self.new_client()
        client = self._once_client
        if mono >= self._next_budget:
            self.check_budget(mono)
        if mono >= self.next_heartbeat:
            self.heartbeat_step(client, mono)
        try:
            self.poll_commands(client, wait=0)
        except TransportError as exc:
            log.warning("command poll failed: %s", exc)
        self._drain_scans(client)
        self.components.step(mono)
        if mono >= self.next_accounts:
            self.accounts_step(mono)
        for _ in range(MAX_BATCHES_PER_PASS):
            if mono < self.send_not_before or self.send_step(client, mono) is None:
                break
            if self.outbox.depth() == 0:
                break

    def heartbeat_step(self, client: AgentClient, mono: float) -> HeartbeatResponse | None:
        """Send one heartbeat; apply a new interval and fetch the policy when its version moved."""
        health = self.health()
        self.state.save_health(health)  # for `agent status`, which cannot ask the running process
        request = HeartbeatRequest(
            facts=self.facts(mono),
            health=health,
            policy_version=self.bundle.version if self.bundle else None,
        )
        try:
            response = client.heartbeat(request)
        except TransportError as exc:
            self.next_heartbeat = mono + self.interval
            self.state.record_heartbeat(self.clock.now(), ok=False, error=str(exc)[:500])
            log.warning("heartbeat failed: %s", exc)
            return None
        self.interval = float(max(1, response.heartbeat_interval))
        self.next_heartbeat = mono + self.interval
        self.state.record_heartbeat(self.clock.now(), ok=True, policy_version=response.policy_version)
        if response.policy_version != self._announced_version:
            try:
                self.refresh_policy(client)
                self._announced_version = response.policy_version
            except TransportError as exc:
                log.warning("policy fetch failed: %s", exc)
        return response

    def refresh_policy(self, client: AgentClient) -> PolicyBundle:
        bundle = client.policy()
        self.apply_policy(bundle)
        return bundle

    def apply_policy(self, bundle: PolicyBundle) -> None:
        """Cache the bundle and reconfigure the detectors and timers."""
        changed = self.bundle is None or self.bundle.model_dump() != bundle.model_dump()
        self.bundle = bundle
        if changed:
            self.state.save_policy_bundle(bundle)
            log.info("policy version %s applied (protection %s)", bundle.version, bundle.protection)
        with self._detect_lock:
            self.detectors.configure(bundle)
        self.components.configure(bundle)
        self.next_accounts = min(self.next_accounts, self.clock.monotonic() + self._accounts_interval())

    def _accounts_interval(self) -> int:
        detector = self._accounts_detector()
        if detector is not None and self.bundle is not None:
            return detector.interval_s
        return self.cfg.accounts_interval_s

    def poll_commands(self, client: AgentClient, wait: int) -> int:
        """One (long) poll: run every new command; returns how many arrived."""
        self._local.client = client  # handlers answering inline reuse the polling thread's client
        self.flush_results(client)
        commands = client.commands(wait)
        for command in commands:
            if self.dispatcher.already_seen(command.id):
                continue
            log.info("command %s: %s", command.id, command.kind)
            result = self.dispatcher.dispatch(command)
            if result is not None:
                self.post_result(client, command.id, result)
        return len(commands)

    def post_result(self, client: AgentClient, command_id: str, result: CommandResult) -> None:
        try:
            client.post_result(command_id, result)
        except ManagerUnavailable as exc:
            log.warning("command %s result kept for retry: %s", command_id, exc)
            with self._results_lock:
                self._pending_results.append((command_id, result))
                del self._pending_results[:-MAX_PENDING_RESULTS]
        except TransportError as exc:
            log.warning("command %s result refused: %s", command_id, exc)

    def flush_results(self, client: AgentClient) -> None:
        with self._results_lock:
            pending, self._pending_results = self._pending_results, []
        for command_id, result in pending:
            self.post_result(client, command_id, result)

    def send_step(self, client: AgentClient, mono: float) -> int | None:
        """Send one outbox batch; None when the manager is unavailable (the next try is backed off)."""
        try:
            result = self.sender.send_once(client)
        except TransportError as exc:
            delay = self.defer_send(mono)
            log.warning("event send failed (%s); retrying in %.1f s", exc, delay)
            return None
        self._send_backoff.reset()
        self.send_not_before = mono
        return result.sent

    def defer_send(self, mono: float) -> float:
        """Back off the sender after a failure; returns the delay chosen."""
        delay = self._send_backoff.next_delay()
        self.send_not_before = mono + delay
        return delay

    def accounts_step(self, mono: float) -> list[DetectorEvent]:
        """The accounts timer: collect accounts only, feed the detector, queue alarms, move the baseline."""
        self.next_accounts = mono + self._accounts_interval()
        try:
            accounts = collect_accounts(self.cfg.host_root)
        except Exception as exc:
            log.warning("account collection failed: %s", exc)
            return []
        with self._detect_lock:
            events = self.detectors.feed(Observation("accounts", accounts), self.clock.now())
            if events:
                self.outbox.put_many(events)
                self._wake_sender()
            self.state.save_last_accounts(accounts)
        return events

    def check_budget(self, mono: float) -> None:
        self._next_budget = mono + self.cfg.budget.check_interval_s
        state = self.budget.check(mono)
        if self.detectors.paused_heavy != state.cpu_over:
            log.warning("CPU budget: %s", state.reason or "back under budget, resuming heavy work")
        self.detectors.paused_heavy = state.cpu_over
        if state.rss_over:
            log.error("%s: exiting with code %d for a restart", state.reason, EXIT_RSS_CAP)
            self.request_stop(state.reason, EXIT_RSS_CAP)

    # ---- facts and health ------------------------------------------------------------------------

    def facts(self, mono: float) -> HostFacts:
        if self._facts is None or mono - self._facts_at >= FACTS_TTL_S:
            self._facts = host_facts(self.state, self.cfg.host_root)
            self._facts_at = mono
        return self._facts

    def health(self) -> AgentHealth:
        budget = self.budget.state
        stats = self.outbox.stats()
        detectors = [*self.detectors.health(), *self.components.health()]
        detectors.append(
            DetectorHealth(
                name="outbox",
                status="degraded" if stats.depth >= self.outbox.max_events else "running",
                reason="outbox full: dropping oldest events" if stats.depth >= self.outbox.max_events else "",
                counters={"depth": stats.depth, **stats.counters},
            )
        )
        return AgentHealth(
            cpu_percent=budget.cpu_percent,
            rss_bytes=budget.rss_bytes,
            outbox_depth=stats.depth,
            degraded=budget.cpu_over,
            degraded_reason=budget.reason[:1024],
            detectors=detectors[:64],
        )

    # ---- snapshots and scans ---------------------------------------------------------------------

    def _on_snapshot(self, snapshot: AssetSnapshot, now: datetime, commit: Commit) -> None:
        if "accounts" in snapshot.errors:
            commit([])
            return
        with self._detect_lock:
            events = self.detectors.feed(Observation("accounts", snapshot.accounts), now)
            commit(events)
            self.state.save_last_accounts(list(snapshot.accounts))

    def _throttle(self, cancel: threading.Event) -> None:
        """While over the CPU budget, scans wait (bounded, so a busy host still gets its scan)."""
        waited = 0.0
        while (
            self.budget.state.cpu_over
            and waited < 60.0
            and not cancel.is_set()
            and not self.stopping.is_set()
        ):
            self.stopping.wait(2.0)
            waited += 2.0

    def _cmd_scan(self, command: Command) -> CommandResult | None:
        scan_id = command.payload.get("scan_id")
        kind = command.payload.get("kind", "full")
        if not isinstance(scan_id, str) or not scan_id or not isinstance(kind, str):
            return failed("scan command needs payload {scan_id, kind}")
        # Queued, not run here: the command channel must stay free for a cancel_scan meanwhile.
        self.scan_queue.submit(
            ScanJob(scan_id=scan_id[:64], kind=kind, command_id=command.id, payload=dict(command.payload))
        )
        return None

    def run_scan(self, job: ScanJob, client: AgentClient) -> CommandResult:
        try:
            if not job.cancel.is_set():
                try:
                    self.refresh_policy(client)  # the scan must see whether protection is on now
                except TransportError as exc:
                    log.info("policy refresh before scan failed, using the cached one: %s", exc)
            log.info("scan %s (%s) started", job.scan_id, job.kind)
            result = self.scans.run(job)
            log.info("scan %s %s: %s", job.scan_id, result.status, result.detail)
        except Exception as exc:
            log.exception("scan %s crashed", job.scan_id)
            result = failed(f"{type(exc).__name__}: {exc}", scan_id=job.scan_id)
        finally:
            self.scan_queue.done(job)
        if job.command_id:
            self.post_result(client, job.command_id, result)
        return result

    def _drain_scans(self, client: AgentClient) -> None:
        while (job := self.scan_queue.take()) is not None:
            self.run_scan(job, client)

    def _cmd_cancel_scan(self, command: Command) -> CommandResult:
        scan_id = command.payload.get("scan_id")
        return succeeded(self.scan_queue.cancel(scan_id), scan_id=scan_id)

    def _cmd_apply_policy(self, command: Command) -> CommandResult:
        bundle = self.refresh_policy(self._local.client)
        return succeeded(f"policy version {bundle.version} applied", version=bundle.version)

    def _wake_sender(self) -> None:
        self.outbox_ready.set()

    # ---- lifecycle -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record it: locks, I/O and logging are not safe inside a signal handler.
        self._signal = signum

    def request_stop(self, reason: str, exit_code: int = EXIT_OK) -> None:
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.exit_code = exit_code
        self.stopping.set()
        self.outbox_ready.set()

    def run(self) -> int:
        """Run until a signal or a fatal condition; returns the process exit code."""
        self._lock_fh = acquire_lock(self.cfg.state_dir)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        log.info(
            "agent %s started (server %s, manager %s)",
            self.creds.name or "",
            self.creds.server_id,
            self.cfg.manager_url or self.creds.manager_url,
        )
        if self.cfg.log_sources:
            log.info("log sources configured (used by the log capabilities): %s", self.cfg.log_sources)
        try:
            self.workers.start()
            self.components.start()
            while not self.stopping.is_set():
                if self._signal is not None:
                    self.request_stop(f"signal {signal.Signals(self._signal).name}")
                    break
                mono = self.clock.monotonic()
                if mono >= self._next_budget:
                    self.check_budget(mono)
                self.stopping.wait(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.shutdown()
        log.info("agent stopped: %s", self.stop_reason or "done")
        return self.exit_code

    def _phase(self, name: str, action: Callable[[], None]) -> None:
        if name in self._done_phases:
            return
        self._done_phases.add(name)
        try:
            action()
        except Exception:
            log.exception("shutdown phase %s failed", name)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ordered, idempotent: stop work, interrupt I/O, join threads, stop detectors, close files."""
        self._phase("signal", lambda: self.request_stop(self.stop_reason or "shutdown", self.exit_code))
        self._phase("cancel-scan", self.scan_queue.cancel_current)
        self._phase("close-clients", self._close_clients)
        self._phase("join", lambda: self.workers.join(timeout))
        for component in self.components.shutdown_order():
            self._phase(component.name, component.stop)
        self._phase("detectors", self.detectors.stop)
        self._phase("outbox", self.outbox.close)
        self._phase("state", self.state.close)
        self._phase("lock", self._release_lock)

    def _close_clients(self) -> None:
        # Releases every connection; a long poll already blocked in recv() finishes on its own (the
        # join gives it a short grace).
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                log.debug("client close failed", exc_info=True)

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None
