"""The ransomware watcher: bait files and the behaviour rule, with optional kill-and-isolate.

inotify tells *what* happened (a bait modified, renamed, deleted or its attributes changed; a
protected file renamed); fanotify tells *who*: the pid of every write in a protected directory and
of every open of a bait file — ransomware reads a file before it encrypts it, so the opener of a
bait that is then renamed or deleted is the suspect even though rename and unlink events carry no
pid. With ``alarm_and_isolate`` the process tree is frozen and killed (``ProcessKiller``) and the
program is moved into the quarantine vault: the script for an interpreter (never the interpreter
itself), the executable otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from hostward.agent.enforcers.process import KillRefused, ProcessKiller
from hostward.agent.enforcers.quarantine import QuarantineError, QuarantineVault
from hostward.agent.fim import inotify as ino
from hostward.agent.fim.fanotify import FAN_CLOSE_WRITE, FAN_MODIFY, Fanotify, describe_process
from hostward.agent.ransomware.bait import Bait
from hostward.agent.ransomware.behaviour import RateRule
from hostward.agent.ransomware.policy import RansomwarePolicy, validate
from hostward.agent.wtp.events import process_dict
from hostward.core.clock import Clock, SystemClock
from hostward.core.ids import new_id
from hostward.wire.alarms import alarm_class
from hostward.wire.protocol import AlarmEvent

log = logging.getLogger(__name__)

BAIT_TOUCHED = "ransomware_0001"
ENCRYPTION_BEHAVIOUR = "ransomware_0002"
FAN_OPEN = 0x00000020
FAN_MARK_ADD = 0x00000001
AT_FDCWD = -100
SUSPECT_TTL_S = 30.0
INTERPRETERS = ("python", "perl", "ruby", "node", "php", "bash", "sh", "dash", "zsh", "lua", "java")
WATCH_MASK = (
    ino.IN_MODIFY
    | ino.IN_CLOSE_WRITE
    | ino.IN_ATTRIB
    | ino.IN_MOVED_FROM
    | ino.IN_MOVED_TO
    | ino.IN_DELETE
    | ino.IN_CREATE
    | ino.IN_ONLYDIR
    | ino.IN_DONT_FOLLOW
)
BAIT_MASK = ino.IN_MODIFY | ino.IN_ATTRIB | ino.IN_MOVED_FROM | ino.IN_DELETE | ino.IN_CLOSE_WRITE

Sink = Callable[[dict[str, Any], AlarmEvent], None]


def _mark_file(fan: Fanotify, path: str, mask: int) -> None:
    """An inode mark on one file (the shared binding only marks directories)."""
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    if lib.fanotify_mark(fan.fd, FAN_MARK_ADD, mask, AT_FDCWD, os.fsencode(path)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_mark: {os.strerror(err)}", path)


def isolation_target(exe: str, cmdline: list[str]) -> str:
    """The file to quarantine: the script an interpreter runs, else the executable."""
    name = os.path.basename(exe)
    if any(
        name == i or (name.startswith(i) and name[len(i) :].strip("0123456789.") == "") for i in INTERPRETERS
    ):
        for arg in cmdline[1:]:
            if arg.startswith("-"):
                if arg in ("-c", "-m", "-e"):
                    return ""  # inline code or a module: nothing on disk to isolate
                continue
            return os.path.abspath(arg) if os.path.isfile(arg) else ""
        return ""
    return exe


class RansomwareMonitor:
    def __init__(
        self,
        policy: RansomwarePolicy,
        *,
        baits: list[Bait] | None = None,
        killer: ProcessKiller | None = None,
        vault: QuarantineVault | None = None,
        on_event: Sink | None = None,
        clock: Clock | None = None,
        use_fanotify: bool = True,
    ) -> None:
        self.policy = validate(policy)
        self.baits = {b.path: b for b in baits or []}
        self.killer = killer
        self.vault = vault
        self.on_event = on_event
        self.clock = clock or SystemClock()
        self.use_fanotify = use_fanotify
        self.rule = RateRule(policy.rate_files, policy.rate_window_s)
        self.events: list[dict[str, Any]] = []
        self.fanotify_ok = False
        self._ino: ino.Inotify | None = None
        self._fan: Fanotify | None = None
        self._wds: dict[int, str] = {}
        self._suspect: dict[str, tuple[int, float]] = {}  # bait path / dir -> last pid seen there
        self._handled: set[int] = set()
        self._bait_hit: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._self = os.getpid()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._ino = ino.Inotify()
        if self.use_fanotify:
            try:
                self._fan = Fanotify.open()
                self.fanotify_ok = True
            except OSError as exc:
                log.info("fanotify unavailable, ransomware alarms will not name the process: %s", exc)
        dirs: set[str] = set()
        for top in self.policy.protected_dirs:
            for root, sub, _files in os.walk(top):
                sub[:] = [d for d in sub if not self.policy.is_excluded(os.path.join(root, d))]
                dirs.add(root)
        dirs |= {os.path.dirname(p) for p in self.baits}
        for d in sorted(dirs):
            self._watch_dir(d)
        if self._fan is not None:
            for p in self.baits:
                try:
                    _mark_file(self._fan, p, FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE)
                except OSError as exc:
                    log.warning("ransomware: cannot mark bait %s: %s", p, exc)
        self._thread = threading.Thread(target=self._run, name="ransomware-watch", daemon=True)
        self._thread.start()

    def _watch_dir(self, d: str) -> None:
        assert self._ino is not None
        try:
            self._wds[self._ino.add_watch(os.fsencode(d), WATCH_MASK)] = d
            if self._fan is not None:
                self._fan.mark_dir(os.fsencode(d), FAN_MODIFY | FAN_CLOSE_WRITE)
        except OSError as exc:
            log.warning("ransomware: cannot watch %s: %s", d, exc)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for h in (self._ino, self._fan):
            if h is not None:
                h.close()
        self._ino = self._fan = None

    def _run(self) -> None:
        poller = select.poll()
        assert self._ino is not None
        poller.register(self._ino.fd, select.POLLIN)
        if self._fan is not None:
            poller.register(self._fan.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                self.step()
            except Exception:  # one bad event must not end the watcher
                log.exception("ransomware: event handling failed")

    # ---- events ---------------------------------------------------------------------------------

    def step(self) -> None:
        now = time.monotonic()
        self._read_fan(now)
        if self._ino is None:
            return
        for ev in self._ino.read():
            base = self._wds.get(ev.wd)
            if base is None or ev.mask & ino.IN_Q_OVERFLOW:
                continue
            path = os.path.join(base, os.fsdecode(ev.name)) if ev.name else base
            if path in self.baits and ev.mask & BAIT_MASK:
                self._read_fan(now)  # a write just before may name the process
                self._bait_touched(path, ev.mask, now)
            elif ev.mask & ino.IN_CREATE and ev.mask & ino.IN_ISDIR and not self.policy.is_excluded(path):
                self._watch_dir(path)
            elif ev.mask & (ino.IN_MOVED_FROM | ino.IN_MOVED_TO) and self._counts(path):
                pid = self._recent(base, now)
                if pid:
                    self._feed_rule(pid, path, now)

    def _counts(self, path: str) -> bool:
        return path not in self.baits and self.policy.is_protected(path) and self.policy.protected_type(path)

    def _recent(self, key: str, now: float) -> int | None:
        hit = self._suspect.get(key)
        return hit[0] if hit and now - hit[1] < SUSPECT_TTL_S else None

    def _read_fan(self, now: float) -> None:
        if self._fan is None:
            return
        for ev in self._fan.read():
            if ev.path is None or ev.pid == self._self:
                continue
            path = os.fsdecode(ev.path).removesuffix(" (deleted)")
            self._suspect[path] = (ev.pid, now)
            self._suspect[os.path.dirname(path)] = (ev.pid, now)
            if path in self.baits:
                if ev.mask & (FAN_MODIFY | FAN_CLOSE_WRITE):
                    self._bait_touched(path, ino.IN_MODIFY, now)
            elif ev.mask & FAN_CLOSE_WRITE and self._counts(path):
                self._feed_rule(ev.pid, path, now)
        if len(self._suspect) > 10000:
            self._suspect = {k: v for k, v in self._suspect.items() if now - v[1] < SUSPECT_TTL_S}

    def _feed_rule(self, pid: int, path: str, now: float) -> None:
        paths = self.rule.feed(pid, path, now)
        if paths is not None:
            self._detect(ENCRYPTION_BEHAVIOUR, pid, {"paths": paths[:50], "count": len(paths)}, paths[0])

    def _bait_touched(self, path: str, mask: int, now: float) -> None:
        action = (
            "deleted"
            if mask & ino.IN_DELETE
            else "renamed"
            if mask & ino.IN_MOVED_FROM
            else "modified"
            if mask & (ino.IN_MODIFY | ino.IN_CLOSE_WRITE)
            else "attributes"
        )
        pid = self._recent(path, now) or self._recent(os.path.dirname(path), now)
        key = f"{path}:{pid}"
        if key in self._bait_hit:
            return
        self._bait_hit.add(key)
        self._detect(BAIT_TOUCHED, pid, {"bait": path, "action": action}, path)

    # ---- response -------------------------------------------------------------------------------

    def _detect(self, code: str, pid: int | None, detail: dict[str, Any], path: str) -> None:
        if pid is not None and pid in self._handled:  # already killed: later events are its echoes
            return
        if pid and self.policy.action == "alarm_and_isolate":
            self._handled.add(pid)
            self._stop_now(pid)
        writer = describe_process(pid) if pid else None
        try:
            cmdline = psutil.Process(pid).cmdline() if pid else []
        except psutil.Error:
            cmdline = []
        record: dict[str, Any] = {
            "code": code,
            "path": path,
            **detail,
            "process": process_dict(writer),
            "occurred_at": self.clock.now().isoformat(),
            "response": [],
        }
        if pid and self.policy.action == "alarm_and_isolate":
            record["response"] = self._isolate(pid, writer.exe if writer else "", cmdline)
        self.events.append(record)
        if self.on_event is not None:
            self.on_event(record, _alarm(record, self.clock.now()))

    def _stop_now(self, pid: int) -> None:
        """SIGSTOP the suspect at once: every millisecond is another file encrypted; the tree is
        frozen and killed properly by the killer right after."""
        if self.killer is None:
            return
        try:
            self.killer.check(pid)
            os.kill(pid, signal.SIGSTOP)
        except (KillRefused, OSError):
            pass

    def _isolate(self, pid: int, exe: str, cmdline: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.killer is None:
            return [{"action": "kill", "ok": False, "error": "no process killer configured"}]
        try:
            res = self.killer.kill_tree(pid, timeout=2.0)
            out.append({"action": "kill", "ok": True, "killed": res.killed, "failed": res.failed})
        except KillRefused as exc:
            out.append({"action": "kill", "ok": False, "error": str(exc), "reason": exc.reason})
        target = isolation_target(exe, cmdline)
        if not target:
            out.append(
                {"action": "isolate", "ok": False, "error": "no program file to isolate (inline code)"}
            )
        elif self.vault is None:
            out.append({"action": "isolate", "ok": False, "error": "no quarantine vault configured"})
        else:
            try:
                entry = self.vault.isolate(target)
                out.append({"action": "isolate", "ok": True, "path": target, "entry_id": entry.id})
            except QuarantineError as exc:
                out.append({"action": "isolate", "ok": False, "path": target, "error": str(exc)})
        return out


def _alarm(record: dict[str, Any], now: Any) -> AlarmEvent:
    code = record["code"]
    proc = record.get("process") or {}
    who = proc.get("exe") or (f"pid {proc['pid']}" if proc.get("pid") else "unknown process")
    if code == BAIT_TOUCHED:
        title = f"Ransomware bait file {record['action']} by {who}: {record['path']}"
    else:
        title = f"Ransomware encryption behaviour: {who} rewrote {record['count']} protected files"
    return AlarmEvent(
        key=f"rw-{new_id()}",
        occurred_at=now,
        event_class=code,
        severity=alarm_class(code).severity,
        title=title[:512],
        fingerprint=f"{code}:{proc.get('exe') or record['path']}"[:256],
        evidence={k: v for k, v in record.items() if k != "code"},
    )
