"""The agent's optional capabilities, wired in one place: FIM, risk checks, login security, malware and
process threats, web tamper protection (with its control socket) and ransomware protection.

Each capability is seen by the runtime as a ``Component``: a name (its shutdown phase) and the hooks it
has (configure from a policy bundle, start its threads, one ``step`` for tests driving the agent with
an injected clock, stop, health entries). ``Components`` builds them for an agent, registers their
commands and scan checks, and runs each hook over the list in a fixed order; ``Agent`` keeps its own
loop (enroll, heartbeat, poll, outbox, budget) and only calls these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hostward.agent.fimrunner import ACCEPT_COMMAND, FimRunner
from hostward.agent.loginsec import LoginSecurity
from hostward.agent.malwarerunner import SCAN_KINDS as MALWARE_SCAN_KINDS
from hostward.agent.malwarerunner import MalwareRunner
from hostward.agent.ransomrunner import RansomRunner
from hostward.agent.riskchecks import RiskChecks
from hostward.agent.wtpctl import WtpControl
from hostward.agent.wtprunner import WtpRunner
from hostward.wire import DetectorHealth, PolicyBundle

if TYPE_CHECKING:
    from hostward.agent.runtime import Agent

__all__ = ["SHUTDOWN_ORDER", "Component", "Components"]

# Dependents stop before what they use: the WTP socket before WTP, ransomware (which writes baits
# through WTP and isolates with the malware vault) before both, malware last (it owns the vault). FIM
# goes first so that what its watcher queued still reaches the malware listener while that runs.
SHUTDOWN_ORDER = ("fim", "loginsec", "wtpctl", "wtp", "ransomware", "malware")


@dataclass(frozen=True)
class Component:
    """One capability as the runtime sees it; a hook it does not have is None."""

    name: str
    stop: Callable[[], None]
    configure: Callable[[PolicyBundle | None], None] | None = None
    start: Callable[[], None] | None = None
    step: Callable[[float], None] | None = None
    health: Callable[[], list[DetectorHealth]] | None = None


class _Runner(Protocol):
    def configure(self, bundle: PolicyBundle | None) -> None: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...


def _component(
    name: str,
    runner: _Runner,
    health: Callable[[], list[DetectorHealth]],
    step: Callable[[float], None] | None = None,
) -> Component:
    """The usual shape: a runner with configure / start / stop."""
    return Component(
        name, runner.stop, configure=runner.configure, start=runner.start, step=step, health=health
    )


class Components:
    """The optional capabilities of one agent, in the order they are built, configured and started."""

    def __init__(
        self,
        *,
        fim: FimRunner,
        risk: RiskChecks,
        loginsec: LoginSecurity,
        malware: MalwareRunner,
        wtp: WtpRunner,
        wtpctl: WtpControl,
        ransom: RansomRunner,
    ) -> None:
        self.fim = fim
        self.risk = risk
        self.loginsec = loginsec
        self.malware = malware
        self.wtp = wtp
        self.wtpctl = wtpctl
        self.ransom = ransom
        self.items: list[Component] = [
            _component("fim", fim, fim.health, lambda _mono: fim.step()),
            # No step: login security's worker blocks on the logs it tails.
            _component("loginsec", loginsec, loginsec.health_entries),
            _component("malware", malware, malware.health, malware.step),
            _component("wtp", wtp, wtp.health, lambda _mono: wtp.step()),
            Component("wtpctl", wtpctl.stop, start=wtpctl.start),
            _component("ransomware", ransom, ransom.health, lambda _mono: ransom.step()),
        ]

    @classmethod
    def for_agent(cls, agent: Agent) -> Components:
        """Build every capability of ``agent``, configure it from the cached bundle and register its
        commands (on ``agent.dispatcher``) and scan checks (on ``agent.scans``)."""
        bundle, dispatcher, scans = agent.bundle, agent.dispatcher, agent.scans
        # Registration order is scan order: a comprehensive scan runs the checks as they were added.
        fim = FimRunner.for_agent(agent)
        fim.configure(bundle)
        dispatcher.register(ACCEPT_COMMAND, fim.accept_command)
        scans.add_check("fim", fim.scan_check)
        risk = RiskChecks.for_agent(agent)
        risk.register(scans, dispatcher)
        loginsec = LoginSecurity.for_agent(agent)
        loginsec.configure(bundle)
        dispatcher.register("unblock_ip", loginsec.cmd_unblock)
        malware = MalwareRunner.for_agent(agent)
        malware.configure(bundle)
        fim.add_listener(malware.fim_changed)
        for kind in MALWARE_SCAN_KINDS:
            scans.add_check(kind, malware.scan_check(kind))
        dispatcher.register("isolate_file", malware.cmd_isolate)
        dispatcher.register("restore_file", malware.cmd_restore)
        dispatcher.register("delete_isolated_file", malware.cmd_delete)
        wtp = WtpRunner.for_agent(agent)
        wtp.configure(bundle)
        wtp.register(dispatcher, scans)
        wtpctl = WtpControl(agent.cfg.state_dir, wtp)
        ransom = RansomRunner.for_agent(agent, wtp=wtp, malware=malware)
        ransom.configure(bundle)
        ransom.register(dispatcher)
        return cls(
            fim=fim, risk=risk, loginsec=loginsec, malware=malware, wtp=wtp, wtpctl=wtpctl, ransom=ransom
        )

    def configure(self, bundle: PolicyBundle | None) -> None:
        """Hand a new bundle to every capability (each applies it on its own thread)."""
        for component in self.items:
            if component.configure is not None:
                component.configure(bundle)

    def start(self) -> None:
        for component in self.items:
            if component.start is not None:
                component.start()

    def step(self, mono: float) -> None:
        """One pass of every capability's thread duties on the calling thread (``Agent.run_once``)."""
        for component in self.items:
            if component.step is not None:
                component.step(mono)

    def health(self) -> list[DetectorHealth]:
        return [
            entry for component in self.items if component.health is not None for entry in component.health()
        ]

    def shutdown_order(self) -> Iterator[Component]:
        by_name = {component.name: component for component in self.items}
        return (by_name[name] for name in SHUTDOWN_ORDER)
