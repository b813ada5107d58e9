"""Password hashing through the system's libxcrypt (``crypt_rn``), which knows every scheme shadow uses.

Python's ``crypt`` module is deprecated (removed in 3.13) and not thread-safe; ``crypt_rn`` with a
per-thread work area is both re-entrant and, called through ctypes, releases the GIL, so hashing can use
several cores. Debian 12's libcrypt.so.1 supports yescrypt (``$y$``), SHA-512 (``$6$``), SHA-256
(``$5$``), MD5 (``$1$``) and bcrypt (``$2b$``/``$2y$``), among others.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import lru_cache

CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt
SCHEMES = {
    "$y$": "yescrypt",
    "$gy$": "gost-yescrypt",
    "$7$": "scrypt",
    "$6$": "sha512crypt",
    "$5$": "sha256crypt",
    "$2b$": "bcrypt",
    "$2y$": "bcrypt",
    "$2a$": "bcrypt",
    "$1$": "md5crypt",
}


class CryptUnavailable(RuntimeError):
    """libcrypt could not be loaded or lacks crypt_rn."""


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name)
        fn = lib.crypt_rn
    except (OSError, AttributeError) as exc:
        raise CryptUnavailable(f"cannot use crypt_rn from {name}: {exc}") from exc
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    gensalt = lib.crypt_gensalt_rn
    gensalt.restype = ctypes.c_char_p
    gensalt.argtypes = [
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    return lib


_local = threading.local()


def _area() -> ctypes.Array[ctypes.c_char]:
    area = getattr(_local, "area", None)
    if area is None:
        area = _local.area = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
    return area


def crypt(password: str, setting: str) -> str | None:
    """``crypt(3)`` of ``password`` with ``setting`` (a full hash works: its salt part is used).

    None when the scheme is unsupported or the setting is invalid (libxcrypt returns NULL or a
    "*"-prefixed failure token).
    """
    out = _lib().crypt_rn(
        password.encode("utf-8"), setting.encode("ascii", "replace"), _area(), CRYPT_DATA_SIZE
    )
    if not out or out.startswith(b"*"):
        return None
    return out.decode("ascii", "replace")


def make_hash(password: str, prefix: str = "$y$", rounds: int = 0) -> str:
    """A fresh hash of ``password`` (tests and benchmarks build shadow files with it)."""
    buf = ctypes.create_string_buffer(256)
    setting = _lib().crypt_gensalt_rn(prefix.encode(), rounds, None, 0, buf, 256)
    if not setting:
        raise ValueError(f"libcrypt cannot generate a {prefix} salt")
    result = crypt(password, setting.decode())
    if result is None:
        raise ValueError(f"libcrypt cannot hash with {prefix}")
    return result


def scheme_of(hashed: str) -> str:
    for prefix, name in SCHEMES.items():
        if hashed.startswith(prefix):
            return name
    if len(hashed) == 13 and not hashed.startswith("$"):
        return "des"
    return "unknown"
