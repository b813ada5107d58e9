"""How many guesses of a real 4-task ``hydra`` reach a real sshd before hostward's block lands.

In throw-away network namespaces (server 10.88.1.1, attacker 10.88.1.2, joined by a veth pair) a real
OpenSSH server (``sshd -D -E LOG``, password authentication) runs in the server namespace, and the
agent's real login-security component (``LoginSecurity``: inotify log tail -> parser -> brute-force
detector -> nftables in the server namespace) follows its log with the default rule (5 failures in
30 s). From the attacker namespace ``hydra -t 4`` guesses root's password from a list. The count is
what sshd itself logged: its ``Failed password ... from 10.88.1.2`` lines, i.e. the guesses that reached
sshd; after the block every packet from the attacker is dropped, so no later guess can add one. fail2ban
let the same hydra run make 28 attempts here (anchor-perf.md §4). Target (issue 3): at most 8.

Needs root, ``hydra`` and ``sshd``. Repeats ``--runs`` times (a fresh block each run) and prints every
count, the median and the maximum.

    .venv/bin/python bench/hydra_attempts.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import install_sigterm_as_interrupt, temp_dir
from hostward.agent.enforcers.blockledger import BlockLedger
from hostward.agent.enforcers.nftables import NftEnforcer
from hostward.agent.loginsec import LoginSecurity
from hostward.wire import AlarmEvent, PolicyBundle, PolicyState, RecordEvent

TARGET = 8
SERVER, ATTACKER = "10.88.1.1", "10.88.1.2"
FAILED = re.compile(rf"Failed \S+ for (?:invalid user )?\S+ from {re.escape(ATTACKER)} port \d+")


def run(argv: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def bundle() -> PolicyBundle:
    return PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition="premium",
        protection=True,
        policies={"login_security": PolicyState(enabled=True, settings={"lock_minutes": 5})},
        global_settings={"login_security": {"login_whitelist": [], "ssh_whitelist": []}},
    )


class Lab:
    def __init__(self, root: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.root = root
        self.srv, self.atk = f"hwhys{tag}", f"hwhya{tag}"
        self.namespaces: list[str] = []
        self.sshd: subprocess.Popen[bytes] | None = None
        self.created_privsep = False

    def ns(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def build(self) -> None:
        for ns in (self.srv, self.atk):
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(
            [
                "ip",
                "link",
                "add",
                "hs",
                "netns",
                self.srv,
                "type",
                "veth",
                "peer",
                "name",
                "ha",
                "netns",
                self.atk,
            ]
        )
        run(["ip", "-n", self.srv, "addr", "add", f"{SERVER}/24", "dev", "hs"])
        run(["ip", "-n", self.atk, "addr", "add", f"{ATTACKER}/24", "dev", "ha"])
        run(["ip", "-n", self.srv, "link", "set", "hs", "up"])
        run(["ip", "-n", self.atk, "link", "set", "ha", "up"])

    def start_sshd(self) -> Path:
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(mode=0o755, parents=True)
            self.created_privsep = True
        d = self.root / "sshd"
        d.mkdir()
        key = d / "host_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        log = d / "sshd.log"
        log.touch()
        config = d / "sshd_config"
        config.write_text(
            f"Port 22\nListenAddress {SERVER}\nHostKey {key}\nPidFile {d / 'sshd.pid'}\nUsePAM no\n"
            "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n"
            # root may log in with a password, so sshd answers every guess as it would on a weak server
            "PermitRootLogin yes\nUseDNS no\nMaxStartups 100:30:200\nMaxAuthTries 6\nLogLevel INFO\n"
        )
        run(["/usr/sbin/sshd", "-t", "-f", str(config)])
        self.sshd = subprocess.Popen(
            self.ns(self.srv, "/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = run(self.ns(self.srv, "ss", "-ltn"), check=False).stdout
            if f"{SERVER}:22" in probe:
                return log
            time.sleep(0.1)
        raise SystemExit("sshd did not start listening")

    def close(self) -> None:
        if self.sshd is not None:
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        if self.created_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def blocked_records(sent: list[AlarmEvent | RecordEvent]) -> list[str]:
    return [
        str(e.data.get("network"))
        for e in list(sent)
        if isinstance(e, RecordEvent) and e.topic == "blocked_ip" and e.data.get("action") == "blocked"
    ]


def one_run(
    lab: Lab, log: Path, words: Path, sent: list[AlarmEvent | RecordEvent], settle_s: float
) -> tuple[int, float]:
    """One hydra run: (guesses sshd logged from the attacker, seconds from hydra's start to the block)."""
    before_lines = log.read_text(errors="replace").count("\n")
    before_blocks = len(blocked_records(sent))
    t0 = time.perf_counter()
    argv = ["hydra", "-I", "-q", "-t", "4", "-w", "5", "-l", "root", "-P", str(words), f"ssh://{SERVER}"]
    hydra = subprocess.Popen(
        lab.ns(lab.atk, *argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    blocked_at = None
    try:
        deadline = t0 + 60
        while time.perf_counter() < deadline and hydra.poll() is None:
            if len(blocked_records(sent)) > before_blocks:
                blocked_at = time.perf_counter() - t0
                break
            time.sleep(0.005)
        time.sleep(settle_s)  # guesses in flight when the block landed still reach sshd and are logged
    finally:
        hydra.kill()
        hydra.wait(10)
    lines = log.read_text(errors="replace").splitlines()[before_lines:]
    attempts = sum(1 for line in lines if FAILED.search(line))
    if blocked_at is None:
        raise SystemExit(f"the attacker was not blocked within 60 s ({attempts} guesses logged)")
    return attempts, blocked_at


def start_component(lab: Lab, log: Path, state: Path, sent: list[AlarmEvent | RecordEvent]) -> LoginSecurity:
    """The agent's login-security component on sshd's log, blocking in the server namespace."""

    def factory(ledger: BlockLedger) -> NftEnforcer:
        firewall = NftEnforcer(ledger, netns=lab.srv)
        firewall.ensure()
        return firewall

    component = LoginSecurity(
        state_dir=state,
        host_root=state,
        log_sources=[f"sshd:{log}"],
        manager_url="http://127.0.0.1:9",
        sink=sent.extend,
        firewall_factory=factory,
        discover=False,
    )
    component.configure(bundle())
    component.start()
    deadline = time.monotonic() + 15
    while component.firewall is None and time.monotonic() < deadline:
        time.sleep(0.05)  # blocking is on: the firewall is set up before the first attack
    if component.firewall is None:
        stop_component(component)
        raise SystemExit(f"login security did not set up its firewall: {component.enforcer_error}")
    return component


def stop_component(component: LoginSecurity) -> None:
    firewall = component.firewall
    component.stop()
    if firewall is not None:
        firewall.teardown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after the block")
    ap.add_argument("--strict", action="store_true", help="exit 3 when the maximum exceeds the target")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 50:
        ap.error("--runs must be 1..50")
    if os.geteuid() != 0:
        print("hydra_attempts: needs root (network namespaces, nftables); skipped")
        return 0
    missing = [t for t in ("hydra", "nft", "ssh-keygen") if not shutil.which(t)]
    if missing or not Path("/usr/sbin/sshd").exists():
        print(f"hydra_attempts: needs {', '.join(missing) or 'sshd'}; skipped")
        return 0
    install_sigterm_as_interrupt()
    counts: list[int] = []
    times: list[float] = []
    with temp_dir("hw-hydra-") as tmp:
        lab = Lab(tmp)
        component: LoginSecurity | None = None
        try:
            lab.build()
            log = lab.start_sshd()
            words = tmp / "words.txt"
            words.write_text("".join(f"guess-{i:04d}\n" for i in range(400)))
            for n in range(args.runs):
                # a fresh agent each run (its own state): every run is a first attack, not a repeat
                sent: list[AlarmEvent | RecordEvent] = []
                component = start_component(lab, log, tmp / f"state{n}", sent)
                attempts, blocked_after = one_run(lab, log, words, sent, args.settle)
                counts.append(attempts)
                times.append(blocked_after)
                print(
                    f"run {n + 1}: {attempts} guesses reached sshd; blocked {blocked_after:.2f} s after start"
                )
                stop_component(component)
                component = None
        finally:
            if component is not None:
                stop_component(component)
            lab.close()
    print(
        f"hydra -t 4 guesses that reached sshd before the block: {counts}; median "
        f"{statistics.median(counts):g}, max {max(counts)} (target <= {TARGET}; fail2ban here: 28); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.strict and max(counts) > TARGET:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
