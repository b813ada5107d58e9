"""Real attacks on protected files, shared by the web tamper protection and ransomware tests: a writer
that clears the immutable flag first, and an encrypting script over a tree of documents."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
