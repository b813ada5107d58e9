"""IP blocking shared by the nftables and the iptables+ipset enforcers.

The backend-independent part lives here: the ledger is written first (it is the truth the kernel set is
checked against), protected networks are refused, overlapping blocks are merged, and ``verify()``
re-adds what a firewall reload removed behind our back and removes what is no longer wanted. Backends
render what they apply and run argv lists (``nft -f -``, ``ipset restore``), never a shell string;
with ``netns`` every command runs as ``ip netns exec NAME ...`` (tests use throw-away namespaces).

Blocks drop ALL traffic from the source (every port, new and established connections, input and
forward): an address caught guessing SSH passwords has no business with the host's other services, and
a per-service port map would miss FTP's passive ports and non-default ports.
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import math
import re
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hostward.agent.enforcers.blockledger import BlockEntry, BlockLedger
from hostward.agent.errors import AgentError
from hostward.core.net import IPNetwork, parse_network

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str], bytes | None], str]
SSH_PORT = 22


class FirewallError(AgentError):
    """A firewall command failed; the message carries the command's own error text."""

    code = "firewall_error"


def command_runner(netns: str | None = None, timeout: float = 15.0) -> Runner:
    """A runner: argv (inside network namespace ``netns`` if given) with stdin -> stdout; FirewallError."""
    prefix = ["ip", "netns", "exec", netns] if netns else []

    def run(argv: Sequence[str], stdin: bytes | None = None) -> str:
        full = [*prefix, *argv]
        exe = shutil.which(full[0]) or full[0]
        try:
            proc = subprocess.run(
                [exe, *full[1:]], input=stdin, capture_output=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FirewallError(f"{' '.join(full[:6])}: {exc}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise FirewallError(f"{' '.join(full[:6])} failed ({proc.returncode}): {err[-2000:]}")
        return proc.stdout.decode("utf-8", "replace")

    return run


def sshd_ports(config: Path = Path("/etc/ssh/sshd_config")) -> list[int]:
    """Port 22 plus every ``Port`` (and ``ListenAddress host:port``) of sshd_config and its Includes."""
    ports = {SSH_PORT}
    seen: set[Path] = set()

    def read(path: Path) -> None:
        if path in seen or len(seen) > 64:
            return
        seen.add(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if len(words) < 2:
                continue
            key = words[0].lower()
            if key == "port":
                for w in words[1:]:
                    if w.isdigit() and 0 < int(w) < 65536:
                        ports.add(int(w))
            elif key == "listenaddress":
                m = re.search(r"(?:\]|[\d.]):(\d+)$", words[1])
                if m and 0 < int(m.group(1)) < 65536:
                    ports.add(int(m.group(1)))
            elif key == "include":
                for pattern in words[1:]:
                    full = pattern if pattern.startswith("/") else str(config.parent / pattern)
                    for match in sorted(glob.glob(full)):
                        read(Path(match))

    read(config)
    return sorted(ports)


def canonical(network: str | IPNetwork) -> IPNetwork:
    return network if not isinstance(network, str) else parse_network(network)


def collapse(
    networks: Iterable[IPNetwork],
) -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv6Network]]:
    """Merge overlapping networks (interval sets reject overlaps), split by family."""
    nets = list(networks)
    v4 = list(ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network)))
    v6 = list(ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network)))
    return v4, v6


@dataclass
class BlockResult:
    applied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # network -> why (protected, expired)
    covered: list[str] = field(default_factory=list)  # already inside an active, larger block
    merged: list[str] = field(default_factory=list)  # smaller blocks replaced by a new, larger one
    failed: dict[str, str] = field(default_factory=dict)  # network -> error; verify() retries them


@dataclass
class VerifyResult:
    readded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    recreated: bool = False
    error: str = ""


@dataclass(frozen=True)
class Add:
    network: IPNetwork
    timeout_s: int
    refresh: bool = False  # already in the set: replace it so the new timeout applies


class Firewall(ABC):
    """Blocks in a kernel set, driven by the ledger. Subclasses implement the ``_backend_*`` methods."""

    backend = "abstract"

    def __init__(
        self,
        ledger: BlockLedger,
        *,
        netns: str | None = None,
        runner: Runner | None = None,
        clock: Callable[[], float] = time.time,
        ssh_ports: Sequence[int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.netns = netns
        self.run = runner or command_runner(netns)
        self.clock = clock
        self.safety: list[IPNetwork] = []
        self.ssh_allow: list[IPNetwork] | None = None  # None: SSH login IP whitelist off
        self.ssh_ports = list(ssh_ports) if ssh_ports else [SSH_PORT]
        self.counters = dict.fromkeys(("applied", "refused", "failed", "readded", "removed", "unblocked"), 0)

    # ---- backend ----------------------------------------------------------------------------------------

    @abstractmethod
    def _backend_config(self) -> None:
        """Create what is missing and (re)write rules, the safety set and the SSH whitelist atomically."""

    @abstractmethod
    def _backend_apply(self, adds: Sequence[Add], removes: Sequence[IPNetwork]) -> None:
        """One batch: remove ``removes`` (tolerating absent ones), then add ``adds`` with timeouts."""

    @abstractmethod
    def _backend_list(self) -> dict[IPNetwork, float | None]:
        """Blocked networks in the kernel set -> seconds left (None if unknown); FirewallError if no set."""

    @abstractmethod
    def _backend_delete(self, networks: Sequence[IPNetwork]) -> None:
        """Delete networks known to be in the set."""

    @abstractmethod
    def _backend_teardown(self) -> None:
        """Remove everything this backend created (idempotent)."""

    # ---- configuration ----------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create our table/sets/rules if missing and write the current configuration (idempotent)."""
        self._backend_config()

    def set_safety(self, networks: Iterable[str | IPNetwork]) -> None:
        """The never-block list (whitelist, manager, own addresses, loopback, admin sessions)."""
        self.safety = [canonical(n) for n in networks]
        self._backend_config()

    def set_ssh_whitelist(
        self, networks: Iterable[str | IPNetwork] | None, ports: Sequence[int] | None = None
    ) -> None:
        """Only these sources may open new SSH connections (None: no restriction); the safety list still
        may, and established sessions survive. ``ports``: sshd's ports (default: as configured)."""
        self.ssh_allow = None if networks is None else [canonical(n) for n in networks]
        if ports:
            self.ssh_ports = sorted({int(p) for p in ports})
        self._backend_config()

    def protected(self, network: IPNetwork) -> str | None:
        for safe in self.safety:
            if safe.version == network.version and safe.overlaps(network):
                return f"overlaps protected {safe}"
        return None

    # ---- blocking ---------------------------------------------------------------------------------------

    def block(self, entries: Iterable[BlockEntry]) -> BlockResult:
        """Record and apply blocks in one batch. Protected networks are refused; a block inside an active
        larger one is skipped; a larger block replaces the active blocks it covers."""
        now = self.clock()
        result = BlockResult()
        active = {canonical(r.network): r for r in self.ledger.active(now)}
        adds: list[Add] = []
        removes: list[IPNetwork] = []
        for entry in entries:
            try:
                net = canonical(entry.network)
            except ValueError as exc:
                result.refused[entry.network] = str(exc)
                continue
            why = self.protected(net) or ("already expired" if entry.until <= now else None)
            if why:
                result.refused[str(net)] = why
                self.counters["refused"] += 1
                log.warning("refusing to block %s: %s", net, why)
                continue
            timeout = max(1, math.ceil(entry.until - now))
            if net in active:
                if entry.until > active[net].until:
                    adds.append(Add(net, timeout, refresh=True))
                    self.ledger.record(_with_network(entry, net, now), now)
                    active[net] = self.ledger.get(str(net)) or active[net]
                    result.applied.append(str(net))
                else:
                    result.covered.append(str(net))
                continue
            if any(a.version == net.version and net.subnet_of(a) for a in active):  # type: ignore[arg-type]
                result.covered.append(str(net))
                continue
            inside = [a for a in active if a.version == net.version and a.subnet_of(net)]  # type: ignore[arg-type]
            for small in inside:
                removes.append(small)
                del active[small]
                result.merged.append(str(small))
            self.ledger.set_status([str(s) for s in inside], "merged", now)
            self.ledger.record(_with_network(entry, net, now), now)
            row = self.ledger.get(str(net))
            if row is not None:
                active[net] = row
            adds.append(Add(net, timeout))
            result.applied.append(str(net))
        if adds or removes:
            self._apply(adds, removes, result)
        return result

    def _apply(self, adds: list[Add], removes: list[IPNetwork], result: BlockResult) -> None:
        try:
            self._backend_apply(adds, removes)
            self.counters["applied"] += len(adds)
            return
        except FirewallError as exc:
            log.warning("batch of %d blocks failed (%s); recreating and applying one by one", len(adds), exc)
        try:
            self._backend_config()
            if removes:
                self._backend_apply([], removes)
        except FirewallError as exc:
            log.error("firewall unusable: %s", exc)
            for add in adds:
                result.failed[str(add.network)] = str(exc)
            self.counters["failed"] += len(adds)
            return
        for add in adds:
            try:
                self._backend_apply([add], [])
                self.counters["applied"] += 1
            except FirewallError as exc:
                result.failed[str(add.network)] = str(exc)
                self.counters["failed"] += 1
        for network in result.failed:
            if network in result.applied:
                result.applied.remove(network)

    def unblock(self, networks: Iterable[str]) -> list[str]:
        """Remove blocks now (manual unblock); returns the networks that were blocked."""
        now = self.clock()
        wanted = [canonical(n) for n in networks]
        self.ledger.set_status([str(n) for n in wanted], "unblocked", now)
        try:
            present = self._backend_list()
        except FirewallError:
            return []
        gone = [n for n in wanted if n in present]
        if gone:
            self._backend_delete(gone)
        self.counters["unblocked"] += len(gone)
        return [str(n) for n in gone]

    def restore(self) -> int:
        """After a restart: recreate our rules and re-apply every active block of the ledger."""
        self._backend_config()
        return len(self.verify().readded)

    def verify(self) -> VerifyResult:
        """Make the kernel set match the ledger: re-add missing blocks, drop unwanted ones, expire rows."""
        now = self.clock()
        result = VerifyResult(expired=self.ledger.expire(now))
        try:
            present = self._backend_list()
        except FirewallError as exc:
            # our table or set is gone (firewall reload, flush): rebuild it, then re-add everything
            log.warning("firewall set missing (%s); recreating", exc)
            result.recreated = True
            try:
                self._backend_config()
                present = self._backend_list()
            except FirewallError as exc2:
                result.error = str(exc2)
                return result
        wanted = {canonical(r.network): r for r in self.ledger.active(now + 1)}
        missing = [Add(n, max(1, math.ceil(r.until - now))) for n, r in wanted.items() if n not in present]
        extra = [n for n in present if n not in wanted]
        if missing or extra:
            try:
                self._backend_apply(missing, extra)
            except FirewallError as exc:
                result.error = str(exc)
                return result
        result.readded = [str(a.network) for a in missing]
        result.removed = [str(n) for n in extra]
        self.counters["readded"] += len(missing)
        self.counters["removed"] += len(extra)
        return result

    def listed(self) -> dict[str, float | None]:
        """What the kernel set holds now: network -> seconds left."""
        return {str(n): left for n, left in self._backend_list().items()}

    def teardown(self) -> None:
        """Remove our rules and sets (agent uninstall, protection disabled); the ledger stays."""
        self._backend_teardown()


def _with_network(entry: BlockEntry, net: IPNetwork, now: float) -> BlockEntry:
    return BlockEntry(
        network=str(net),
        service=entry.service,
        until=entry.until,
        reason=entry.reason,
        attempts=entry.attempts,
        times_blocked=entry.times_blocked,
        blocked_at=entry.blocked_at or now,
    )
