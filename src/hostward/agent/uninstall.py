"""``hostward agent uninstall``: remove what the agent put on the host, then its state directory.

Refuses while an agent runs with that state directory (stop it first: a running agent would put its
firewall rules back). Removes our nftables table / iptables chains and sets (lifting every block) and
deletes the state directory (credentials, outbox, ledgers, caches).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hostward.agent.errors import AgentError
from hostward.agent.lockfile import is_running

log = logging.getLogger(__name__)


@dataclass
class UninstallReport:
    firewall: list[str] = field(default_factory=list)  # backends whose rules were removed
    errors: list[str] = field(default_factory=list)
    state_removed: bool = False


def uninstall(state_dir: Path, *, keep_state: bool = False) -> UninstallReport:
    """Tear down the firewall rules, then delete ``state_dir`` (unless ``keep_state``)."""
    if is_running(state_dir):
        raise AgentError(f"an agent is running with state directory {state_dir}; stop it first")
    from hostward.agent.enforcers.blockledger import BlockLedger
    from hostward.agent.enforcers.firewall import FirewallError
    from hostward.agent.loginsec.component import installed_firewalls

    report = UninstallReport()
    ledger_dir = state_dir if state_dir.is_dir() else None
    scratch = None
    if ledger_dir is None:
        import tempfile

        scratch = tempfile.mkdtemp(prefix="hostward-uninstall-")
        ledger_dir = Path(scratch)
    ledger = BlockLedger(ledger_dir)
    try:
        for firewall in installed_firewalls(ledger):
            try:
                firewall.teardown()
                report.firewall.append(firewall.backend)
            except FirewallError as exc:
                report.errors.append(f"{firewall.backend}: {exc}")
    finally:
        ledger.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if not keep_state and state_dir.is_dir():
        shutil.rmtree(state_dir)
        report.state_removed = True
    return report
