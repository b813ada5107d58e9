"""Follow login logs: files with persisted offsets (rotation and truncation safe) and the journal.

Files. For each file the position is stored as (device, inode, offset, hash of the first bytes) in
``<state_dir>/logtail.json`` (written atomically). On start: same inode, head unchanged and size >=
offset -> resume at the offset; same inode but shorter or a different head -> the file was truncated
or replaced -> from 0; another inode -> it was rotated while we were down: the rest of the old inode is
read first when a sibling (``auth.log.1``, ``auth.log-20251124``) still holds it, then the new file from
0. While running, a rename rotation is seen by the inode behind the path changing: the old file is
drained until it stops growing for ``rotate_grace_s`` and only then does the tailer switch, so lines
written just before the rename are not lost; a partial last line is kept until its newline arrives
(or, in a rotated-away file, handed out as the file's last line). Truncation in place
(``copytruncate``) restarts at 0. A file seen for the first time is read from its end (``start="end"``),
like ``tail -f``.

Lines are handed out as text: one decoded chunk of whole lines per read (``read_text``), each ending
with a newline, so the parser works on the chunk without a Python step per line.

Delivery is at-least-once: ``commit()`` stores the positions of the lines handed out so far; after a
clean stop nothing is read twice, after a crash at most the lines since the last commit are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hostward.agent.collectors.inotify import ChangeWaiter
from hostward.agent.collectors.journal import DEFAULT_UNITS, JournalEntry, JournalReader
from hostward.agent.collectors.logsources import AUTO, LogSource, discover_sources, parse_log_source

log = logging.getLogger(__name__)

STATE_FILE = "logtail.json"
HEAD_BYTES = 256
MAX_READ_PER_POLL = 8 << 20  # bounds memory and latency of one poll; the rest comes next poll
READ_CHUNK = MAX_READ_PER_POLL  # one read per poll: one decode, one text, nothing to join
MAX_LINE_BYTES = 1 << 20


class OffsetStore:
    """Positions per source in one JSON file, replaced atomically (write, fsync, rename)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / STATE_FILE
        self._data: dict[str, dict[str, Any]] = {}
        self._dirty = False
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and isinstance(loaded.get("sources"), dict):
                self._data = {k: v for k, v in loaded["sources"].items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as exc:
            # a damaged state file must not stop log reading: start over (from the end of the files)
            log.warning("%s unreadable (%s); starting without saved positions", self.path, exc)

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        return dict(value) if value is not None else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self._data.get(key) != value:
            self._data[key] = dict(value)
            self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = json.dumps({"version": 1, "sources": self._data}, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._dirty = False


def _head(fd: int, length: int) -> bytes:
    return os.pread(fd, length, 0) if length > 0 else b""


@dataclass
class _Open:
    fd: int
    dev: int
    ino: int
    pos: int  # next byte to read
    head: bytes = b""
    partial: bytes = b""
    discarding: bool = False  # inside an over-long line: drop bytes up to its newline


def _may_hold_long_line(buf: bytearray, start: int, end: int) -> bool:
    """False when no line of ``buf[start:end]`` is over ``MAX_LINE_BYTES``, found without a step per line:
    a line that long holds a whole aligned window of ``MAX_LINE_BYTES // 2`` bytes without a newline."""
    width = MAX_LINE_BYTES // 2
    return any(buf.find(b"\n", k, k + width) < 0 for k in range(start, end - width + 1, width))


@dataclass
class FileTailer:
    """Complete lines appended to one file, across rotation, truncation and restarts."""

    path: Path
    store: OffsetStore
    key: str
    start: Literal["end", "start"] = "end"
    rotate_grace_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("lines", "bytes", "rotations", "truncations", "long_lines", "missing", "lost_rotations"), 0
        )
    )

    def __post_init__(self) -> None:
        self._cur: _Open | None = None
        self._rotated: _Open | None = None  # the renamed-away file still being drained
        self._quiet_since = 0.0
        self._pending: dict[str, Any] | None = None
        self._first = True

    # ---- public ------------------------------------------------------------------------------------

    def read(self) -> list[str]:
        """Lines completed since the last call (decoded UTF-8, invalid bytes replaced, no newline)."""
        text = self.read_text()
        return text[:-1].split("\n") if text else []

    def read_text(self) -> str:
        """The lines completed since the last call as one text, each ending with a newline (decoded
        UTF-8, invalid bytes replaced)."""
        out: list[str] = []
        if self._cur is None:
            self._open(out)
        budget = MAX_READ_PER_POLL
        if self._rotated is not None:
            budget -= self._drain_rotated(out, budget)
        if self._cur is not None:
            self._check_truncation(self._cur)
            self._read_into(self._cur, out, budget)
            self._check_rotation()
        self._remember()
        return "".join(out)

    def commit(self) -> None:
        """Record the position of the lines handed out (persisted by ``OffsetStore.save``)."""
        if self._pending is not None:
            self.store.put(self.key, self._pending)

    def close(self) -> None:
        for handle in (self._cur, self._rotated):
            if handle is not None:
                with contextlib.suppress(OSError):
                    os.close(handle.fd)
        self._cur = self._rotated = None

    @property
    def draining(self) -> bool:
        return self._rotated is not None

    # ---- opening and resuming ------------------------------------------------------------------------

    def _open_path(self) -> _Open | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot open %s: %s", self.path, exc)
            self.counters["missing"] += 1
            return None
        st = os.fstat(fd)
        return _Open(fd=fd, dev=st.st_dev, ino=st.st_ino, pos=0)

    def _open(self, out: list[str]) -> None:
        first, self._first = self._first, False
        saved = self.store.get(self.key) if first else None
        if saved and isinstance(saved.get("rotated"), dict):
            # stopped while draining a rotated file: finish it first
            self._finish_inode(saved["rotated"], out)
        handle = self._open_path()
        if handle is None:
            return
        size = os.fstat(handle.fd).st_size
        if saved and (saved.get("dev"), saved.get("ino")) == (handle.dev, handle.ino):
            head = _head(handle.fd, int(saved.get("head_len", 0)))
            offset = int(saved.get("offset", 0))
            if size >= offset and hashlib.sha256(head).hexdigest() == saved.get("head"):
                handle.pos = offset
            else:
                self.counters["truncations"] += 1
        elif saved:
            # rotated while we were not running: finish the old inode first when it is still there
            self._finish_inode(saved, out)
        elif first and self.start == "end":
            handle.pos = size
        handle.head = _head(handle.fd, HEAD_BYTES)
        self._cur = handle

    def _finish_inode(self, saved: dict[str, Any], out: list[str]) -> None:
        old = self._find_inode(int(saved.get("dev", -1)), int(saved.get("ino", -1)))
        if old is None:
            self.counters["lost_rotations"] += 1
            return
        old.pos = int(saved.get("offset", 0))
        self._read_into(old, out, MAX_READ_PER_POLL, final=True)
        with contextlib.suppress(OSError):
            os.close(old.fd)
        self.counters["rotations"] += 1

    def _find_inode(self, dev: int, ino: int) -> _Open | None:
        """The file (the path itself or a rotated sibling such as auth.log.1) that has this inode."""
        with contextlib.suppress(OSError):
            for candidate in sorted(self.path.parent.iterdir()):
                if not candidate.name.startswith(self.path.name):
                    continue
                with contextlib.suppress(OSError):
                    st = candidate.stat()
                    if (st.st_dev, st.st_ino) == (dev, ino) and candidate.is_file():
                        fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                        return _Open(fd=fd, dev=dev, ino=ino, pos=0)
        return None

    # ---- reading ---------------------------------------------------------------------------------------

    def _read_into(self, handle: _Open, out: list[str], budget: int, *, final: bool = False) -> int:
        """Read from ``handle.pos`` up to EOF (or ``budget`` bytes); complete lines go to ``out``."""
        total = 0
        while total < budget:
            try:
                want = min(READ_CHUNK, budget - total, os.fstat(handle.fd).st_size - handle.pos)
                if want <= 0:
                    break
                # read in behind the kept partial line: the run of lines is decoded straight from this
                # buffer, with no copy to join the partial line and the new bytes
                keep = len(handle.partial)
                buf = bytearray(keep + want)
                buf[:keep] = handle.partial
                got = os.preadv(handle.fd, [memoryview(buf)[keep:]], handle.pos)
            except OSError as exc:
                log.warning("read %s: %s", self.path, exc)
                break
            if not got:
                break
            handle.pos += got
            total += got
            self._split(handle, buf, keep + got, out)
        if final and handle.partial:
            self._emit_partial(handle, out)
        self.counters["bytes"] += total
        return total

    def _split(self, handle: _Open, buf: bytearray, length: int, out: list[str]) -> None:
        """Hand out the complete lines of ``buf[:length]`` (the kept partial line, then the new bytes)."""
        data = memoryview(buf)[:length]
        end = buf.rfind(b"\n", 0, length)
        if end < 0:
            handle.partial = bytes(data)
        else:
            start = 0
            if handle.discarding:
                # the rest of an over-long line that was already handed out cut
                start = buf.find(b"\n", 0, length) + 1
                handle.discarding = False
            if start <= end:
                # one decode for the whole run of lines: a newline never ends inside a UTF-8 sequence
                if _may_hold_long_line(buf, start, end + 1):
                    out.append(self._cut_long_lines(bytes(data[start : end + 1])))
                else:
                    out.append(str(data[start : end + 1], "utf-8", "replace"))
                self.counters["lines"] += buf.count(b"\n", start, end + 1)
            handle.partial = bytes(data[end + 1 :])
        data.release()
        if len(handle.partial) > MAX_LINE_BYTES:
            # hand out the first MiB (the parser counts it as oversize) and drop the rest of that line
            if not handle.discarding:
                out.append(handle.partial[:MAX_LINE_BYTES].decode("utf-8", "replace") + "\n")
                self.counters["long_lines"] += 1
            handle.partial = b""
            handle.discarding = True

    def _cut_long_lines(self, run: bytes) -> str:
        """``run`` (whole lines) decoded, every line over ``MAX_LINE_BYTES`` cut there and counted."""
        lines = run[:-1].split(b"\n")
        for i, line in enumerate(lines):
            if len(line) > MAX_LINE_BYTES:
                lines[i] = line[:MAX_LINE_BYTES]
                self.counters["long_lines"] += 1
        return b"\n".join(lines).decode("utf-8", "replace") + "\n"

    def _emit_partial(self, handle: _Open, out: list[str]) -> None:
        if handle.partial and not handle.discarding:
            out.append(handle.partial.decode("utf-8", "replace") + "\n")
            self.counters["lines"] += 1
        handle.partial = b""
        handle.discarding = False

    def _check_truncation(self, handle: _Open) -> None:
        try:
            size = os.fstat(handle.fd).st_size
            head_now = _head(handle.fd, len(handle.head))
        except OSError:
            return
        if size < handle.pos or head_now != handle.head:
            # truncated in place (copytruncate) or rewritten: everything in it now is new
            self.counters["truncations"] += 1
            handle.pos = 0
            handle.partial = b""
            handle.discarding = False
            head_now = b""
        if len(head_now) < HEAD_BYTES and size > len(head_now):
            head_now = _head(handle.fd, min(HEAD_BYTES, size))
        handle.head = head_now

    def _check_rotation(self) -> None:
        """When the path now names another inode (or none), start draining ours and open the new one."""
        cur = self._cur
        if cur is None or self._rotated is not None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # renamed, the new file not created yet: keep reading the old one meanwhile
        except OSError:
            return
        if (st.st_dev, st.st_ino) == (cur.dev, cur.ino):
            return
        new = self._open_path()
        if new is None:
            return
        new.head = _head(new.fd, HEAD_BYTES)
        self._rotated, self._cur = cur, new
        self._quiet_since = self.clock()

    def _drain_rotated(self, out: list[str], budget: int) -> int:
        old = self._rotated
        assert old is not None
        got = self._read_into(old, out, budget)
        now = self.clock()
        if got:
            self._quiet_since = now
        elif now - self._quiet_since >= self.rotate_grace_s:
            self._emit_partial(old, out)  # a line cut by the rotation: the file is finished, so is it
            with contextlib.suppress(OSError):
                os.close(old.fd)
            self._rotated = None
            self.counters["rotations"] += 1
        return got

    def _remember(self) -> None:
        cur = self._cur
        if cur is None:
            return
        state: dict[str, Any] = {
            "dev": cur.dev,
            "ino": cur.ino,
            "offset": cur.pos - len(cur.partial),
            "head": hashlib.sha256(cur.head).hexdigest(),
            "head_len": len(cur.head),
        }
        old = self._rotated
        if old is not None:
            state["rotated"] = {"dev": old.dev, "ino": old.ino, "offset": old.pos - len(old.partial)}
        self._pending = state


@dataclass
class Batch:
    """What one poll produced for one source."""

    source: LogSource
    text: str = ""  # whole lines, each ending with a newline
    entries: list[JournalEntry] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return self.text[:-1].split("\n") if self.text else []


class LogWatch:
    """All log sources of the agent: ``poll()`` waits for changes and returns the new lines/entries."""

    def __init__(
        self,
        sources: Iterable[LogSource],
        state_dir: Path,
        *,
        start: Literal["end", "start"] = "end",
        journal_command: Sequence[str] = ("journalctl",),
        commit_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = list(sources)
        self.store = OffsetStore(state_dir)
        self._clock = clock
        self._commit_interval = commit_interval_s
        self._last_save = clock()
        self._tailers: list[tuple[LogSource, FileTailer]] = []
        self._journals: list[tuple[LogSource, JournalReader]] = []
        directories: set[Path] = set()
        for source in self.sources:
            if source.kind == "file":
                assert source.path is not None
                tailer = FileTailer(source.path, self.store, source.key, start=start, clock=clock)
                self._tailers.append((source, tailer))
                directories.add(source.path.parent)
        self.waiter = ChangeWaiter(sorted(d for d in directories if d.is_dir()))
        for source in self.sources:
            if source.kind == "journald":
                reader = JournalReader(
                    self.store,
                    key=source.key,
                    units=source.units or DEFAULT_UNITS,
                    command=journal_command,
                    on_entry=self.waiter.wake,
                )
                reader.start()
                self._journals.append((source, reader))

    def poll(self, timeout: float) -> list[Batch]:
        """New data of every source; waits up to ``timeout`` s when there is none yet."""
        batches = self._collect()
        if not batches and timeout > 0:
            self.waiter.wait(timeout)
            batches = self._collect()
        return batches

    def _collect(self) -> list[Batch]:
        batches: list[Batch] = []
        for source, tailer in self._tailers:
            if source.path is not None and source.path.parent.is_dir():
                self.waiter.watch(source.path.parent)
            text = tailer.read_text()
            if text:
                batches.append(Batch(source=source, text=text))
        for source, reader in self._journals:
            entries = reader.read()
            if entries:
                batches.append(Batch(source=source, entries=entries))
        return batches

    def commit(self, *, force: bool = False) -> None:
        """Positions of everything returned so far; written to disk at most every commit interval."""
        for _, tailer in self._tailers:
            tailer.commit()
        for _, reader in self._journals:
            reader.commit()
        now = self._clock()
        if force or now - self._last_save >= self._commit_interval:
            self.store.save()
            self._last_save = now

    def health(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, tailer in self._tailers:
            for name, value in tailer.counters.items():
                totals[name] = totals.get(name, 0) + value
        for _, reader in self._journals:
            for name, value in reader.counters.items():
                totals[f"journal_{name}"] = totals.get(f"journal_{name}", 0) + value
        return totals

    def close(self) -> None:
        """Stop the journal readers, store the positions, close the files (idempotent)."""
        for _, reader in self._journals:
            reader.stop()
        self.commit(force=True)
        for _, tailer in self._tailers:
            tailer.close()
        self.waiter.close()


__all__ = [
    "AUTO",
    "Batch",
    "FileTailer",
    "LogSource",
    "LogWatch",
    "OffsetStore",
    "discover_sources",
    "parse_log_source",
]
