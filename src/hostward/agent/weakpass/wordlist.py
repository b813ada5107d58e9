"""Candidate passwords: the shipped dictionary, the operator's custom list, and username-derived guesses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import hostward

MAX_CUSTOM_ENTRIES = 300
MAX_ENTRY_LENGTH = 128
_LEET = str.maketrans({"a": "@", "o": "0", "e": "3", "i": "1", "s": "$"})


class WordlistError(ValueError):
    """The custom list is unusable (too many entries, unreadable); the message says which and why."""


def default_wordlist_path() -> Path:
    return Path(hostward.__file__).resolve().parent / "content" / "weakpass" / "common.txt"


def _read(path: Path) -> list[str]:
    out: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#") or not line:
            continue
        out.append(line[:MAX_ENTRY_LENGTH])
    return out


@lru_cache(maxsize=4)
def default_wordlist(path: Path | None = None) -> tuple[str, ...]:
    """The shipped list (most likely first)."""
    return tuple(dict.fromkeys(_read(path or default_wordlist_path())))


def custom_wordlist(entries: list[str] | None = None, path: Path | None = None) -> tuple[str, ...]:
    """The operator's own weak passwords (at most 300), from a list or a file (one per line)."""
    items: list[str] = list(entries or [])
    if path is not None:
        try:
            items.extend(_read(path))
        except OSError as exc:
            raise WordlistError(
                f"cannot read the custom password list {path}: {exc.strerror or exc}"
            ) from exc
    items = [i for i in dict.fromkeys(i.rstrip("\r") for i in items) if i]
    if len(items) > MAX_CUSTOM_ENTRIES:
        where = f" in {path}" if path else ""
        raise WordlistError(
            f"the custom weak-password list has {len(items)} entries{where}; at most {MAX_CUSTOM_ENTRIES}"
        )
    return tuple(items)


def username_guesses(username: str, years: tuple[int, ...] = ()) -> tuple[str, ...]:
    """What people derive from their user name: alice, alice123, Alice@123, ecila, al1c3, alice2024..."""
    u = username
    if not u:
        return ()
    cap = u[:1].upper() + u[1:]
    out = [
        u,
        cap,
        u.upper(),
        u + u,
        u[::-1],
        *(
            u + s
            for s in (
                "1",
                "12",
                "123",
                "1234",
                "12345",
                "123456",
                "!",
                "@123",
                "#123",
                "_123",
                ".123",
                "123!",
                "01",
                "000",
                "888",
                "666",
                "@1",
                "1!",
            )
        ),
        *(cap + s for s in ("1", "123", "1234", "@123", "123!", "1!", "#123", "!")),
        "123" + u,
        "1" + u,
        u.translate(_LEET),
        cap.translate(_LEET),
        u.translate(_LEET) + "123",
        *(u + str(y) for y in years),
        *(cap + str(y) for y in years),
        *(cap + "@" + str(y) for y in years),
    ]
    return tuple(dict.fromkeys(x for x in out if x))
