"""An in-memory firewall backend: the shared ``Firewall`` logic (ledger, merging, verify) runs for real,
only the kernel set is a dict. ``fail_next`` makes the next batch fail, as a busy ``nft`` would."""

from __future__ import annotations

from collections.abc import Sequence

from hostward.agent.enforcers.firewall import Add, Firewall, FirewallError
from hostward.core.net import IPNetwork


class MemoryFirewall(Firewall):
    backend = "memory"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.kernel: dict[IPNetwork, float] = {}  # network -> expiry (clock time)
        self.configured = 0
        self.batches: list[tuple[list[Add], list[IPNetwork]]] = []
        self.fail_next = 0
        self.present = True

    def _backend_config(self) -> None:
        self.configured += 1
        self.present = True

    def _backend_apply(self, adds: Sequence[Add], removes: Sequence[IPNetwork]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise FirewallError("simulated failure")
        if not self.present:
            raise FirewallError("no such table")
        self.batches.append((list(adds), list(removes)))
        for net in removes:
            self.kernel.pop(net, None)
        now = self.clock()
        for add in adds:
            if any(
                n != add.network and n.version == add.network.version and n.overlaps(add.network)
                for n in self.kernel
            ):
                raise FirewallError(f"interval overlaps: {add.network}")
            self.kernel[add.network] = now + add.timeout_s

    def _backend_list(self) -> dict[IPNetwork, float | None]:
        if not self.present:
            raise FirewallError("no such table")
        now = self.clock()
        self.kernel = {n: t for n, t in self.kernel.items() if t > now}
        return {n: t - now for n, t in self.kernel.items()}

    def _backend_delete(self, networks: Sequence[IPNetwork]) -> None:
        for net in networks:
            self.kernel.pop(net)

    def _backend_teardown(self) -> None:
        self.kernel.clear()
        self.present = False
