"""The agent's threads: each loops over one duty of ``Agent`` and sleeps on the stop event in between.

heartbeat (+ the accounts timer), command long poll, outbox sender, scan worker. Each thread owns its
own HTTP client (connection pool); every wait is on ``agent.stopping`` so a stop request wakes them all,
except a long poll already blocked in the network, which is abandoned (daemon thread) at shutdown.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from hostward.agent.errors import AuthRejected, TransportError
from hostward.agent.transport import Backoff

if TYPE_CHECKING:
    from hostward.agent.runtime import Agent

log = logging.getLogger(__name__)

LONG_POLL_THREAD = "hostward-commands"


class Workers:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.poll_backoff = Backoff(agent.cfg.backoff_base_s, agent.cfg.backoff_cap_s)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads (idempotent)."""
        if self.threads:
            return
        for name, target in (
            ("hostward-heartbeat", self.heartbeat_loop),
            (LONG_POLL_THREAD, self.command_loop),
            ("hostward-sender", self.sender_loop),
            ("hostward-scans", self.scan_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            # A long poll blocked in recv() may outlive its closed pool; it only reads, and it is a
            # daemon thread, so it gets a short grace instead of holding up the shutdown.
            long_poll = thread.name == LONG_POLL_THREAD
            thread.join(1.0 if long_poll else timeout)
            if thread.is_alive():
                if long_poll:
                    log.info("long poll abandoned at shutdown")
                else:
                    log.warning("thread %s still running at shutdown", thread.name)

    def heartbeat_loop(self) -> None:
        agent = self.agent
        client = agent.new_client()
        while not agent.stopping.is_set():
            mono = agent.clock.monotonic()
            try:
                if mono >= agent.next_heartbeat:
                    agent.heartbeat_step(client, mono)
                if mono >= agent.next_accounts:
                    agent.accounts_step(mono)
            except Exception:
                log.exception("heartbeat loop error")
                agent.next_heartbeat = mono + agent.interval
            due = min(agent.next_heartbeat, agent.next_accounts) - agent.clock.monotonic()
            agent.stopping.wait(max(0.05, due))

    def command_loop(self) -> None:
        agent = self.agent
        client = agent.new_client()
        while not agent.stopping.is_set():
            try:
                agent.poll_commands(client, wait=agent.cfg.command_wait_s)
                self.poll_backoff.reset()
            except AuthRejected as exc:
                log.error("command poll: %s", exc)
                agent.stopping.wait(max(agent.interval, self.poll_backoff.next_delay()))
            except TransportError as exc:
                if agent.stopping.is_set():
                    break
                delay = self.poll_backoff.next_delay()
                log.warning("command poll failed (%s); reconnecting in %.1f s", exc, delay)
                agent.stopping.wait(delay)
            except Exception:
                if agent.stopping.is_set():
                    break
                log.exception("command loop error")
                agent.stopping.wait(self.poll_backoff.next_delay())

    def sender_loop(self) -> None:
        agent = self.agent
        client = agent.new_client()
        while not agent.stopping.is_set():
            mono = agent.clock.monotonic()
            if mono < agent.send_not_before:
                agent.stopping.wait(agent.send_not_before - mono)
                continue
            # Cleared before looking at the outbox, so an event put meanwhile still wakes the wait below.
            agent.outbox_ready.clear()
            try:
                sent = agent.send_step(client, mono)
            except Exception:
                log.exception("sender loop error")
                sent = None
                agent.defer_send(mono)
            if sent is None or agent.outbox.depth() > 0:
                continue  # backed off (the loop head waits), or more to send right away
            agent.outbox_ready.wait(5.0)

    def scan_loop(self) -> None:
        agent = self.agent
        client = agent.new_client()
        while not agent.stopping.is_set():
            job = agent.scan_queue.take(timeout=1.0)
            if job is not None:
                agent.run_scan(job, client)
