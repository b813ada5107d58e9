"""Process events from the kernel's proc connector (netlink), enriched from /proc; /proc polling fallback.

The proc connector (``NETLINK_CONNECTOR``, group ``CN_IDX_PROC``) multicasts fork / exec / uid / gid /
exit events once a listener has sent ``PROC_CN_MCAST_LISTEN``. It needs CAP_NET_ADMIN and the initial
pid and user namespaces; elsewhere the kernel ignores the request without an answer, so ``subscribe``
waits for the kernel's acknowledgement and, without one, the collector falls back to polling /proc
every ``poll_interval_s`` (default 0.5 s: new processes are seen within that delay, processes that live
shorter than it are missed, an exec that keeps the process name is not seen).

Wire layout (host byte order), one event per datagram::

    struct nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }        16 bytes
    struct cn_msg    { u32 idx; u32 val; u32 seq; u32 ack; u16 len; u16 flags; } 20 bytes
    struct proc_event{ u32 what; u32 cpu; u64 timestamp_ns; union {...} }       16 + union
      fork: parent_pid, parent_tgid, child_pid, child_tgid      exec: pid, tgid
      uid/gid: pid, tgid, ruid|rgid, euid|egid                  exit: pid, tgid, code, signal, ...

Two threads: the reader drains the socket (a 16 MiB receive buffer absorbs bursts; an overrun is
counted as ``lost``) and queues exec / uid / exit events; the enricher reads /proc for each and emits
``Observation``s. A process that exits before it is enriched is counted (``exited_before_enrichment``),
not reported.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from hostward.agent.collectors.procfs import ProcReader
from hostward.agent.detectors.base import Observation
from hostward.agent.detectors.procmodel import (
    PROCESS_EXEC,
    PROCESS_EXIT,
    PROCESS_UID,
    ProcessExit,
    ProcessInfo,
)
from hostward.agent.detectors.revshell import DEFAULT_SHELLS, program_name
from hostward.wire import DetectorHealth

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4

EV_NONE = 0x0
EV_FORK = 0x1
EV_EXEC = 0x2
EV_UID = 0x4
EV_GID = 0x40
EV_SID = 0x80
EV_PTRACE = 0x100
EV_COMM = 0x200
EV_COREDUMP = 0x40000000
EV_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EV_HEADER = struct.Struct("=IIQ")
_FOUR = struct.Struct("=iiii")
_TWO = struct.Struct("=ii")
_ONE = struct.Struct("=i")
_HDR_LEN = _NLMSGHDR.size + _CN_MSG.size  # 36
_EV_BODY = _HDR_LEN + _EV_HEADER.size  # 52

DEFAULT_POLL_INTERVAL_S = 0.5
DEFAULT_RCVBUF = 16 * 1024 * 1024
# Shells and interpreters are read again this long after their exec: a Python or Perl one-liner
# connects its socket and dup2()s it onto 0/1/2 only after it has started.
RECHECK_AFTER_S = (0.5, 2.0)
MAX_RECHECKS = 10_000


class ProcEvent(NamedTuple):
    """One proc connector event; unused fields are 0."""

    what: int
    pid: int
    tgid: int
    timestamp_ns: int
    parent_tgid: int = 0  # fork: parent; exit: parent (kernels >= 4.18)
    child_tgid: int = 0  # fork
    ruid: int = 0  # uid / gid events (rgid for gid)
    euid: int = 0
    exit_code: int = 0
    err: int = 0  # ack (what == EV_NONE)


def parse_datagram(buf: bytes | memoryview) -> list[ProcEvent]:
    """Every proc event in one netlink datagram (non-connector or truncated messages are skipped)."""
    out: list[ProcEvent] = []
    offset = 0
    end = len(buf)
    while offset + _NLMSGHDR.size <= end:
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            break
        if mtype not in (NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN) and length >= _EV_BODY:
            idx, val, _s, _a, clen, _f = _CN_MSG.unpack_from(buf, offset + _NLMSGHDR.size)
            if idx == CN_IDX_PROC and val == CN_VAL_PROC and clen >= _EV_HEADER.size:
                what, _cpu, ts = _EV_HEADER.unpack_from(buf, offset + _HDR_LEN)
                body = offset + _EV_BODY
                room = offset + length - body
                if what == EV_FORK and room >= 16:
                    _ppid, ptgid, _cpid, ctgid = _FOUR.unpack_from(buf, body)
                    out.append(ProcEvent(what, ctgid, ctgid, ts, parent_tgid=ptgid, child_tgid=ctgid))
                elif what == EV_EXEC and room >= 8:
                    pid, tgid = _TWO.unpack_from(buf, body)
                    out.append(ProcEvent(what, pid, tgid, ts))
                elif what in (EV_UID, EV_GID) and room >= 16:
                    pid, tgid, r, e = _FOUR.unpack_from(buf, body)
                    out.append(ProcEvent(what, pid, tgid, ts, ruid=r & 0xFFFFFFFF, euid=e & 0xFFFFFFFF))
                elif what == EV_EXIT and room >= 16:
                    pid, tgid, code, _sig = _FOUR.unpack_from(buf, body)
                    ptgid = _ONE.unpack_from(buf, body + 20)[0] if room >= 24 else 0
                    out.append(ProcEvent(what, pid, tgid, ts, parent_tgid=ptgid, exit_code=code))
                elif what == EV_NONE and room >= 4:
                    out.append(ProcEvent(what, 0, 0, ts, err=struct.unpack_from("=I", buf, body)[0]))
                elif room >= 8:
                    pid, tgid = _TWO.unpack_from(buf, body)
                    out.append(ProcEvent(what, pid, tgid, ts))
        offset += (length + 3) & ~3
    return out


def control_message(op: int, seq: int = 0) -> bytes:
    """The netlink datagram that subscribes (LISTEN) or unsubscribes (IGNORE)."""
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, seq, 0) + cn


class ConnectorUnavailable(OSError):
    """The proc connector cannot be used here (not root, not the initial namespaces, no kernel support)."""


class ProcConnector:
    """The netlink socket. ``open()`` subscribes and waits for the kernel's acknowledgement."""

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None

    def open(self, ack_timeout: float = 1.0) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as exc:
            raise ConnectorUnavailable(f"netlink connector socket: {exc.strerror or exc}") from exc
        try:
            for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE (root) first, then the capped one
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, self.rcvbuf)
                    break
                except OSError:
                    continue
            sock.bind((0, CN_IDX_PROC))
            sock.send(control_message(PROC_CN_MCAST_LISTEN, seq=1))
            deadline = time.monotonic() + ack_timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectorUnavailable(
                        "no acknowledgement from the proc connector (not in the initial pid/user namespace?)"
                    )
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    continue
                for ev in parse_datagram(sock.recv(65536)):
                    if ev.what == EV_NONE:
                        if ev.err:
                            raise ConnectorUnavailable(f"proc connector refused: {os.strerror(ev.err)}")
                        self.sock = sock
                        return
                    # events already flowing also prove the subscription works
                    self.sock = sock
                    return
        except ConnectorUnavailable:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise ConnectorUnavailable(f"proc connector: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(control_message(PROC_CN_MCAST_IGNORE, seq=2))
        except OSError:
            pass
        self.sock.close()
        self.sock = None


# ---- the collector ---------------------------------------------------------------------------------


@dataclass
class CollectorStats:
    events: int = 0
    forks: int = 0
    execs: int = 0
    exits: int = 0
    uid_changes: int = 0
    enriched: int = 0
    exited_before_enrichment: int = 0
    lost_overruns: int = 0  # ENOBUFS: the kernel dropped events (count of overruns, not of events)
    dropped: int = 0  # queue full
    polls: int = 0
    rechecks: int = 0
    emit_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


Emit = Callable[[Observation], None]
Tap = Callable[[ProcEvent], None]
Mode = Literal["auto", "connector", "poll"]
_STOP = ProcEvent(-1, 0, 0, 0)


class ProcessCollector:
    """Turns process events into ``process_exec`` / ``process_uid`` / ``process_exit`` observations.

    ``emit`` is called from the collector's threads; the runtime hands the observation to its detectors
    (and must not block for long). ``mode``: ``auto`` uses the proc connector when it works and polls
    /proc otherwise; ``connector`` fails instead of polling; ``poll`` always polls.
    """

    def __init__(
        self,
        emit: Emit,
        *,
        mode: Mode = "auto",
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        proc_root: str = "/proc",
        snapshot: bool = True,
        queue_size: int = 200_000,
        rcvbuf: int = DEFAULT_RCVBUF,
    ) -> None:
        self.emit = emit
        self.mode: Mode = mode
        self.poll_interval_s = poll_interval_s
        self.reader = ProcReader(proc_root)
        self.snapshot = snapshot
        self.queue_size = queue_size
        self.rcvbuf = rcvbuf
        self.stats = CollectorStats()
        self.active_mode: str = "stopped"
        self.fallback_reason = ""
        self._connector: ProcConnector | None = None
        self._queue: queue.SimpleQueue[ProcEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._taps: list[Tap] = []
        self._exe: dict[int, str] = {}
        self._rechecks: list[tuple[float, int, int, int]] = []  # (due, pid, start_ticks, round)
        self.recheck_names = set(DEFAULT_SHELLS)
        self.ready = threading.Event()  # set once the start-up snapshot has been emitted

    def health(self) -> DetectorHealth:
        """For the agent's detector health: the mode in use, why it fell back, and the counters."""
        counters = self.stats.as_dict()
        if self.active_mode == "stopped":
            return DetectorHealth(
                name="process_events", status="disabled", reason="not running", counters=counters
            )
        reasons = []
        if self.active_mode == "poll":
            reasons.append(
                f"polling /proc every {self.poll_interval_s:g} s"
                + (f" (proc connector unavailable: {self.fallback_reason})" if self.fallback_reason else "")
            )
        if self.stats.lost_overruns or self.stats.dropped:
            reasons.append(f"events lost: {self.stats.lost_overruns} overruns, {self.stats.dropped} dropped")
        reason = "; ".join(reasons)[:1024]
        return DetectorHealth(
            name="process_events",
            status="degraded" if reason else "running",
            reason=reason,
            counters=counters,
        )

    def add_tap(self, tap: Tap) -> None:
        """Also hand every raw connector event to ``tap`` (reader thread; keep it cheap)."""
        self._taps.append(tap)

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        if self.mode != "poll":
            if os.geteuid() != 0:
                reason = "not running as root"
                if self.mode == "connector":
                    raise ConnectorUnavailable(reason)
                self.fallback_reason = reason
            else:
                connector = ProcConnector(self.rcvbuf)
                try:
                    connector.open()
                    self._connector = connector
                except ConnectorUnavailable as exc:
                    if self.mode == "connector":
                        raise
                    self.fallback_reason = str(exc)
                    log.warning(
                        "proc connector unavailable (%s): polling /proc every %.1f s",
                        exc,
                        self.poll_interval_s,
                    )
        if self._connector is not None:
            self.active_mode = "connector"
            self._threads = [
                threading.Thread(target=self._read_loop, name="proccn-reader", daemon=True),
                threading.Thread(target=self._enrich_loop, name="proccn-enrich", daemon=True),
            ]
        else:
            self.active_mode = "poll"
            self._threads = [threading.Thread(target=self._poll_loop, name="proccn-poll", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the threads and close the socket (idempotent)."""
        self._stop.set()
        self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        if self._connector is not None:
            self._connector.close()
            self._connector = None
        self.active_mode = "stopped"

    # ---- helpers ----------------------------------------------------------------------------------

    def _emit(self, obs: Observation) -> None:
        try:
            self.emit(obs)
        except Exception:
            self.stats.emit_errors += 1
            log.exception("process observation handler failed")

    def _exec(self, pid: int, event: str, event_ns: int = 0) -> ProcessInfo | None:
        info = self.reader.read(pid, event, previous_exe=self._exe.get(pid, ""), event_ns=event_ns)
        if info is None:
            self.stats.exited_before_enrichment += 1
            self._exe.pop(pid, None)
            return None
        self.stats.enriched += 1
        self._exe[pid] = info.exe
        if len(self._exe) > 65536:
            self._exe.clear()
        self._emit(Observation(PROCESS_EXEC, info))
        if (
            event != "recheck"
            and len(self._rechecks) < MAX_RECHECKS
            and program_name(info.exe, info.comm) in self.recheck_names
        ):
            heapq.heappush(self._rechecks, (time.monotonic() + RECHECK_AFTER_S[0], pid, info.start_ticks, 0))
        return info

    def _due_rechecks(self) -> float:
        """Re-read shells/interpreters whose recheck is due; returns seconds until the next one."""
        now = time.monotonic()
        while self._rechecks and self._rechecks[0][0] <= now:
            _, pid, start, rnd = heapq.heappop(self._rechecks)
            st = self.reader.stat(pid)
            if st is None or st.start_ticks != start:
                continue
            info = self.reader.read(pid, "recheck", previous_exe=self._exe.get(pid, ""))
            if info is None:
                continue
            self.stats.rechecks += 1
            self._emit(Observation(PROCESS_EXEC, info))
            if rnd + 1 < len(RECHECK_AFTER_S):
                heapq.heappush(
                    self._rechecks,
                    (now + RECHECK_AFTER_S[rnd + 1] - RECHECK_AFTER_S[rnd], pid, start, rnd + 1),
                )
        return self._rechecks[0][0] - now if self._rechecks else 0.25

    def _snapshot(self) -> None:
        for pid in self.reader.pids():
            if self._stop.is_set():
                return
            info = self.reader.read(pid, "snapshot")
            if info is not None:
                self._exe[pid] = info.exe
                self._emit(Observation(PROCESS_EXEC, info))

    # ---- connector mode ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self._connector is not None and self._connector.sock is not None
        sock = self._connector.sock
        buf = bytearray(65536)
        view = memoryview(buf)
        stats = self.stats
        taps = self._taps
        q = self._queue
        limit = self.queue_size
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.25)
                if not ready:
                    continue
                n = sock.recv_into(buf)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    stats.lost_overruns += 1
                    continue
                if self._stop.is_set():
                    return
                log.error("proc connector read failed: %s", exc)
                return
            try:
                events = parse_datagram(view[:n])
            except struct.error:
                log.exception("undecodable proc connector datagram")
                continue
            for ev in events:
                stats.events += 1
                what = ev.what
                for tap in taps:
                    tap(ev)
                if what == EV_FORK:
                    stats.forks += 1
                    continue
                if what == EV_EXEC:
                    stats.execs += 1
                elif what == EV_EXIT:
                    if ev.pid != ev.tgid:
                        continue  # a thread, not the process
                    stats.exits += 1
                elif what == EV_UID:
                    stats.uid_changes += 1
                else:
                    continue
                if q.qsize() >= limit:
                    stats.dropped += 1
                    continue
                q.put(ev)

    def _enrich_loop(self) -> None:
        if self.snapshot:
            self._snapshot()
        self.ready.set()
        q = self._queue
        while True:
            wait = self._due_rechecks() if self._rechecks else 0.25
            try:
                ev = q.get(timeout=max(0.001, min(wait, 0.25)))
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if ev is _STOP or self._stop.is_set():
                return
            try:
                if ev.what == EV_EXEC:
                    self._exec(ev.tgid, "exec", ev.timestamp_ns)
                elif ev.what == EV_UID:
                    info = self.reader.read(
                        ev.tgid, "uid", previous_exe=self._exe.get(ev.tgid, ""), event_ns=ev.timestamp_ns
                    )
                    if info is None:
                        self.stats.exited_before_enrichment += 1
                    else:
                        self._emit(Observation(PROCESS_UID, info))
                elif ev.what == EV_EXIT:
                    self._exe.pop(ev.tgid, None)
                    self._emit(Observation(PROCESS_EXIT, ProcessExit(ev.tgid, ev.exit_code)))
            except Exception:
                log.exception("process event %s failed", ev)

    # ---- polling mode -----------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        known: dict[int, tuple[int, str, int]] = {}
        if self.snapshot:
            self._snapshot()
        for pid in self.reader.pids():
            st = self.reader.stat(pid)
            if st is not None:
                known[pid] = (st.start_ticks, st.comm, self.reader.euid(pid))
        self.ready.set()
        # fixed rate: a pass that takes long does not push the next one back by its own duration
        next_at = time.monotonic() + self.poll_interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + self.poll_interval_s, time.monotonic())
            self.poll_once(known)
            if self._rechecks:
                self._due_rechecks()

    def poll_once(self, known: dict[int, tuple[int, str, int]]) -> None:
        """One polling pass: new processes first (they are what the detectors wait for), then in-place
        execs (process name changed) and effective-uid changes of known ones, then exits."""
        self.stats.polls += 1
        current = self.reader.pids()
        current_set = set(current)
        for pid in current:
            if pid in known:
                continue
            self.stats.execs += 1
            info = self._exec(pid, "poll")
            if info is not None:
                known[pid] = (info.start_ticks, info.comm, info.euid)
        for pid in current:
            prev = known.get(pid)
            if prev is None:
                continue
            st = self.reader.stat(pid)
            if st is None:
                continue
            if prev[0] != st.start_ticks or prev[1] != st.comm:
                self.stats.execs += 1
                info = self._exec(pid, "poll")
                known[pid] = (st.start_ticks, st.comm, info.euid if info else -1)
                continue
            euid = self.reader.euid(pid)
            if euid != prev[2] and euid != -1:
                self.stats.uid_changes += 1
                known[pid] = (st.start_ticks, st.comm, euid)
                info = self.reader.read(pid, "uid", previous_exe=self._exe.get(pid, ""))
                if info is not None:
                    self._emit(Observation(PROCESS_UID, info))
        for pid in set(known) - current_set:
            del known[pid]
            self.stats.exits += 1
            self._exe.pop(pid, None)
            self._emit(Observation(PROCESS_EXIT, ProcessExit(pid, 0)))
