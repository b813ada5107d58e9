"""Throw-away network namespaces for firewall tests: a server and a client joined by a veth pair.

``NetLab`` creates ``<prefix>srv`` and ``<prefix>cli`` (unique names), addresses in 10.0.0.0/8 and
fd00::/8 only inside them, a TCP echo server in the server namespace and a long-lived probe process
in the client namespace (one process, so that a connection attempt costs milliseconds, not a Python
start-up). Everything — processes, namespaces (the veth pair goes with them) — is removed by
``close()``, which the context manager calls even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SERVER = r"""
import socket, sys, threading
ports = [int(p) for p in sys.argv[1:]]
def serve(conn):
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)
def listen(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
for port in ports:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        threading.Thread(target=listen, args=(family, host, port), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

PROBE = r"""
import json, socket, sys, time
conns = {}
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    out = {}
    try:
        if op in ("connect", "open"):
            family = socket.AF_INET6 if ":" in cmd["dst"] else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(cmd.get("timeout", 1.0))
            s.bind((cmd["src"], 0))
            t0 = time.monotonic()
            try:
                s.connect((cmd["dst"], cmd["port"]))
                out = {"result": "ok", "s": time.monotonic() - t0}
            except socket.timeout:
                out = {"result": "timeout"}
            except OSError as exc:
                out = {"result": "error", "error": str(exc)}
            if op == "open" and out["result"] == "ok":
                conns[cmd["id"]] = s
            else:
                s.close()
        elif op == "echo":
            s = conns[cmd["id"]]
            s.settimeout(cmd.get("timeout", 1.0))
            try:
                s.sendall(cmd["data"].encode())
                out = {"result": "ok", "data": s.recv(4096).decode()}
            except socket.timeout:
                out = {"result": "timeout"}
            except OSError as exc:
                out = {"result": "error", "error": str(exc)}
        elif op == "close":
            conns.pop(cmd["id"]).close()
            out = {"result": "ok"}
    except Exception as exc:
        out = {"result": "error", "error": repr(exc)}
    print(json.dumps(out), flush=True)
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@dataclass
class NetLab:
    """Two namespaces; ``srv4/srv6`` is the server, ``clients4/clients6`` the client addresses."""

    ports: tuple[int, ...] = (2222, 8080)
    name: str = field(default_factory=lambda: f"hw{uuid.uuid4().hex[:6]}")
    srv4: str = "10.77.0.1"
    clients4: tuple[str, ...] = ("10.77.0.2", "10.77.0.3", "10.77.0.4")
    srv6: str = "fd00:77::1"
    clients6: tuple[str, ...] = ("fd00:77:0:1::2", "fd00:77:0:1::3", "fd00:77:0:2::2")
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _probe: subprocess.Popen[str] | None = None

    @property
    def srv(self) -> str:
        return f"{self.name}srv"

    @property
    def cli(self) -> str:
        return f"{self.name}cli"

    def setup(self) -> None:
        sh("ip", "netns", "add", self.srv)
        sh("ip", "netns", "add", self.cli)
        a, b = f"{self.name}a", f"{self.name}b"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.srv)
        sh("ip", "link", "set", b, "netns", self.cli)
        for ns, dev, v4s, v6s in (
            (self.srv, a, (self.srv4,), (self.srv6,)),
            (self.cli, b, self.clients4, self.clients6),
        ):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            for addr in v4s:
                sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            for addr in v6s:
                sh("ip", "-n", ns, "addr", "add", f"{addr}/48", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.srv, sys.executable, "-c", SERVER, *map(str, self.ports)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._procs.append(server)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("echo server did not start")
        self._probe = subprocess.Popen(
            ["ip", "netns", "exec", self.cli, sys.executable, "-c", PROBE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._procs.append(self._probe)

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self._probe is not None and self._probe.stdin and self._probe.stdout
        self._probe.stdin.write(json.dumps(cmd) + "\n")
        self._probe.stdin.flush()
        line = self._probe.stdout.readline()
        if not line:
            raise RuntimeError("probe process died")
        return json.loads(line)  # type: ignore[no-any-return]

    def connect(self, src: str, port: int | None = None, timeout: float = 1.0) -> str:
        """ "ok", "timeout" (dropped) or "error" for a new TCP connection from ``src`` to the server."""
        dst = self.srv6 if ":" in src else self.srv4
        return str(
            self.ask(op="connect", src=src, dst=dst, port=port or self.ports[-1], timeout=timeout)["result"]
        )

    def open(self, conn_id: str, src: str, port: int) -> str:
        dst = self.srv6 if ":" in src else self.srv4
        return str(self.ask(op="open", id=conn_id, src=src, dst=dst, port=port)["result"])

    def echo(self, conn_id: str, data: str = "ping") -> dict[str, Any]:
        return self.ask(op="echo", id=conn_id, data=data)

    def nft(self, *args: str) -> str:
        return sh("ip", "netns", "exec", self.srv, "nft", *args).stdout

    def close(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
            with contextlib.suppress(Exception):
                proc.terminate()
                proc.wait(5)
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(5)
        self._procs.clear()
        for ns in (self.srv, self.cli):
            sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def netlab(**kwargs: Any) -> Iterator[NetLab]:
    lab = NetLab(**kwargs)
    try:
        lab.setup()
        yield lab
    finally:
        lab.close()
        assert not os.path.exists(f"/run/netns/{lab.srv}"), "namespace left behind"
