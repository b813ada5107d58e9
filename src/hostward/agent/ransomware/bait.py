"""Bait files: realistic decoy documents that no legitimate process has a reason to change.

Names start with a dot (hidden from ``ls`` and file managers) followed by ``~`` or ``0`` so that
tools walking a directory in name order reach them before the real documents. Contents carry the
real format headers (a valid OOXML zip for xlsx/docx, a PDF with xref, a JFIF JPEG, a SQL dump), so
a ransomware family that checks magic bytes still takes them. Planted in every protected directory
and in a few random subdirectories of them, never under excluded directories; re-planted with new
names every 12 hours (``rotate_if_due``).
"""

from __future__ import annotations

import io
import json
import os
import random
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from hostward.agent.ransomware.policy import BAIT_ROTATE_S, RansomwarePolicy
from hostward.agent.wtp.backup import hash_file

_WORDS = ("budget", "passwords", "backup", "payroll", "invoices", "contracts", "customers", "accounts")
MAX_RANDOM_LOCATIONS = 5

# Write access to one bait path: web tamper protection lifts its lock on the parent directory for the
# write and stops treating the path as web content (``WtpGuard.place``); no-op without it.
Access = Callable[[str], AbstractContextManager[object]]


def _no_gate(_path: str) -> AbstractContextManager[object]:
    return nullcontext()


def _ooxml(kind: str, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    main = "xl/workbook.xml" if kind == "xlsx" else "word/document.xml"
    ctype = (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
        if kind == "xlsx"
        else "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    )
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/{main}" ContentType="{ctype}"/></Types>',
        )
        z.writestr(
            "_rels/.rels",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            f'relationships/officeDocument" Target="{main}"/></Relationships>',
        )
        count = rng.randint(20, 60)
        rows = "".join(f"<row><c><v>{rng.randint(1000, 99999)}</v></c></row>" for _ in range(count))
        z.writestr(main, f'<?xml version="1.0" encoding="UTF-8"?><root>{rows}</root>')
    return buf.getvalue()


def _pdf(rng: random.Random) -> bytes:
    text = f"Signed contract no. {rng.randint(10000, 99999)}"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
    ]
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _jpg(rng: random.Random) -> bytes:
    header = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x01\x00H\x00H\x00\x00"
    quant = b"\xff\xdb\x00\x43\x00" + bytes(rng.randint(1, 60) for _ in range(64))
    sof = b"\xff\xc0\x00\x11\x08\x01\xe0\x02\x80\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    # entropy-coded data never holds a bare 0xFF (it would read as a marker)
    data = rng.randbytes(rng.randint(8000, 20000)).replace(b"\xff", b"\xfe")
    return header + quant + sof + sos + data + b"\xff\xd9"


def _sql(rng: random.Random) -> bytes:
    count = rng.randint(50, 120)
    rows = ",".join(f"({i},'u{i}','{rng.getrandbits(128):032x}','u{i}@example.com')" for i in range(1, count))
    return (
        "-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n-- Host: localhost    Database: prod\n"
        "-- ------------------------------------------------------\n\n"
        "DROP TABLE IF EXISTS `users`;\nCREATE TABLE `users` (\n  `id` int NOT NULL AUTO_INCREMENT,\n"
        "  `login` varchar(64) NOT NULL,\n  `password_hash` char(32) NOT NULL,\n  `email` varchar(255),\n"
        "  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\n"
        f"LOCK TABLES `users` WRITE;\nINSERT INTO `users` VALUES {rows};\nUNLOCK TABLES;\n"
        "-- Dump completed\n"
    ).encode()


GENERATORS: dict[str, Callable[[random.Random], bytes]] = {
    "xlsx": lambda r: _ooxml("xlsx", r),
    "docx": lambda r: _ooxml("docx", r),
    "pdf": _pdf,
    "jpg": _jpg,
    "sql": _sql,
}
PREFIXES = {"xlsx": ".~0_", "docx": ".~$0000_", "pdf": ".~0_", "jpg": ".000_IMG_", "sql": ".000_"}


def bait_name(ext: str, rng: random.Random) -> str:
    word = rng.choice(_WORDS) if ext != "jpg" else f"{rng.randint(1, 9999):04d}"
    year = rng.choice((2025, 2026))
    return f"{PREFIXES[ext]}{word}_{year}.{ext}" if ext != "jpg" else f"{PREFIXES[ext]}{word}.jpg"


def bait_types(policy: RansomwarePolicy) -> list[str]:
    """Bait formats for the policy's protected types (all formats when none of them overlap)."""
    chosen = [t for t in GENERATORS if t in policy.file_types]
    return chosen or list(GENERATORS)


@dataclass(frozen=True)
class Bait:
    path: str
    sha256: str


def _random_locations(policy: RansomwarePolicy, rng: random.Random, limit: int) -> list[str]:
    candidates: list[str] = []
    for top in policy.protected_dirs:
        for root, dirs, _files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not policy.is_excluded(os.path.join(root, d)))
            if root != top and root.count("/") - top.count("/") <= 3:
                candidates.append(root)
            if len(candidates) > 5000:
                break
    rng.shuffle(candidates)
    return candidates[:limit]


def plant(
    policy: RansomwarePolicy, rng: random.Random | None = None, access: Access = _no_gate
) -> list[Bait]:
    """Write bait files: one of each type in every protected directory, one in a few random subdirs.

    Each write goes through ``access(path)`` (see ``Access``)."""
    rng = rng or random.Random()
    types = bait_types(policy)
    targets = [(d, types) for d in policy.protected_dirs if not policy.is_excluded(d)]
    targets += [(d, [rng.choice(types)]) for d in _random_locations(policy, rng, MAX_RANDOM_LOCATIONS)]
    baits: list[Bait] = []
    for directory, exts in targets:
        if not os.path.isdir(directory):
            continue
        for ext in exts:
            path = os.path.join(directory, bait_name(ext, rng))
            if os.path.lexists(path):
                continue
            with access(path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(GENERATORS[ext](rng))
            baits.append(Bait(path, hash_file(path)))
    return baits


def remove(baits: list[Bait], access: Access = _no_gate) -> None:
    for b in baits:
        try:
            with access(b.path):
                os.unlink(b.path)
        except FileNotFoundError:
            pass


def load_state(state_path: str) -> tuple[float, list[Bait]]:
    try:
        with open(state_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return 0.0, []
    return float(data.get("planted_at", 0)), [Bait(**b) for b in data.get("baits", [])]


def save_state(state_path: str, planted_at: float, baits: list[Bait]) -> None:
    tmp = f"{state_path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"planted_at": planted_at, "baits": [b.__dict__ for b in baits]}, f)
    os.replace(tmp, state_path)


def rotate_if_due(
    policy: RansomwarePolicy,
    state_path: str,
    now: float,
    *,
    rng: random.Random | None = None,
    every_s: float = BAIT_ROTATE_S,
    access: Access = _no_gate,
) -> tuple[list[Bait], bool]:
    """The current baits, replanted when they are older than ``every_s`` (or absent); (baits, rotated)."""
    planted_at, baits = load_state(state_path)
    if not policy.bait:
        remove(baits, access)
        save_state(state_path, now, [])
        return [], bool(baits)
    if baits and now - planted_at < every_s and all(os.path.exists(b.path) for b in baits):
        return baits, False
    remove(baits, access)
    baits = plant(policy, rng, access)
    save_state(state_path, now, baits)
    return baits, True
