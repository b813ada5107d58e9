"""The C recorder (``hostward.agent.fim._fimscan``) against its pure-Python twin: the same rows for every
kind of file, bad input handed back instead of crashing, and the agent's throttle still in force."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostward import native
from hostward.agent.fim import model, reader
from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.model import KEY, O_DIR, Row
from hostward.agent.fim.reader import PER_FILE_COST, SMALL_FILE, PathReader, Throttle
from hostward.agent.fim.scan import FS_APPEND_FL, FS_IMMUTABLE_FL, Scanner, stat_key
from tests.conftest import need


def _b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


@pytest.fixture
def fast() -> object:
    need("native")
    if native.disabled():
        pytest.skip("HOSTWARD_NO_NATIVE is set: the pure path only")
    module = native.load(reader.NATIVE)
    assert module is not None
    return module


def _pure(monkeypatch: pytest.MonkeyPatch, **kw: object) -> Scanner:
    monkeypatch.setenv("HOSTWARD_NO_NATIVE", "1")
    try:
        scanner = Scanner(**kw)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("HOSTWARD_NO_NATIVE")
    assert scanner.native is None
    return scanner


def _native(**kw: object) -> Scanner:
    scanner = Scanner(**kw)  # type: ignore[arg-type]
    assert scanner.native is not None
    return scanner


def _set_xattr(path: Path, name: str, value: bytes) -> bool:
    try:
        os.setxattr(path, name, value)
    except OSError:
        return False
    return True


def _tree(root: Path) -> dict[str, Path]:
    """Every kind of entry the recorder meets; returns the interesting ones by role."""
    root.mkdir(exist_ok=True)
    made: dict[str, Path] = {}
    for d in range(12):
        sub = root / f"d{d:02d}"
        sub.mkdir()
        for i in range(5):
            (sub / f"f{i}").write_bytes(os.urandom(10 + 333 * i))
    made["empty"] = root / "empty"
    made["empty"].touch()
    made["small"] = root / "small.txt"
    made["small"].write_bytes(b"hello\n")
    made["edge"] = root / "edge"
    made["edge"].write_bytes(os.urandom(SMALL_FILE - 1))  # the largest single-read file
    made["at_limit"] = root / "at-limit"
    made["at_limit"].write_bytes(os.urandom(SMALL_FILE))  # the smallest chunked one
    made["large"] = root / "large.bin"
    made["large"].write_bytes(os.urandom(3 * model.CHUNK + 12345))
    made["odd"] = root / os.fsdecode(b"odd \xff\x01name\n")
    made["odd"].write_bytes(b"odd bytes in the name")
    made["link"] = root / "link"
    made["link"].symlink_to("small.txt")
    (root / "dangling").symlink_to("nowhere")
    (root / "d00" / "loop").symlink_to(".")
    made["fifo"] = root / "fifo"
    os.mkfifo(made["fifo"])
    made["xattr"] = root / "d01" / "f1"
    if _set_xattr(made["xattr"], "user.b", b"2") and _set_xattr(made["xattr"], "user.a", b"\x00\x01"):
        _set_xattr(made["xattr"], "user." + b"\xc3\xa9t\xc3\xa9".decode(), b"utf-8 name")
        _set_xattr(made["xattr"], "user.\udcff", b"undecodable name")
        # U+E000 encodes as EE 80 80, the undecodable byte F5 decodes to U+DCF5: sorted as names (as
        # pack_xattrs sorts them) and sorted as bytes these two come in opposite orders.
        _set_xattr(made["xattr"], "user.\ue000", b"private use")
        _set_xattr(made["xattr"], "user.\udcf5", b"undecodable F5")
        many = root / "d02" / "f2"  # a name list longer than the first buffer os.listxattr tries
        for i in range(40):
            _set_xattr(many, f"user.attribute-number-{i:03d}", bytes([i]) * i)
        big = root / "d03" / "f3"
        for size in (65536, 32768, 8192, 3500, 1000):  # as large as the file system takes
            if _set_xattr(big, "user.big", os.urandom(size)):
                break
    return made


def _scan(scanner: Scanner, roots: list[WatchRoot], **kw: object) -> dict[bytes, Row]:
    return scanner.scan(roots, **kw).rows  # type: ignore[arg-type]


def test_constants_match_the_python_side(fast: object) -> None:
    m = native.load(reader.NATIVE)
    assert m is not None
    assert (m.SMALL_FILE, m.CHUNK) == (reader.SMALL_FILE, model.CHUNK)
    assert (m.TRACKED_FLAGS, m.FS_IOC_GETFLAGS) == (model.TRACKED_FLAGS, model.FS_IOC_GETFLAGS)


def test_no_native_env_selects_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _pure(monkeypatch).native is None


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "forked"])
def test_native_and_pure_scans_give_identical_rows(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, processes: bool
) -> None:
    made = _tree(tmp_path / "root")
    roots = [WatchRoot(_b(tmp_path / "root"))]
    ours = _scan(_native(workers=2, racy_ns=0, processes=processes), roots)
    pure = _scan(_pure(monkeypatch, workers=2, racy_ns=0, processes=processes), roots)
    assert ours == pure
    entry = model.Entry._make(ours[_b(made["large"])])
    assert entry.sha256 == hashlib.sha256(made["large"].read_bytes()).digest()
    assert ours[_b(made["empty"])][model.P_SHA] == hashlib.sha256(b"").digest()
    assert ours[_b(made["odd"])][model.P_SHA] == hashlib.sha256(b"odd bytes in the name").digest()
    assert ours[_b(made["fifo"])][model.P_SHA] is None
    assert ours[_b(made["link"])][model.P_TARGET] == b"small.txt"
    if os.listxattr(made["xattr"]):
        assert model.unpack_xattrs(ours[_b(made["xattr"])][model.P_XATTRS])["user.a"] == b"\x00\x01"


def test_forked_baselines_are_the_same_file_content(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``hostward fim init``'s path: forked children writing part files that the parent merges."""
    from hostward.agent.fim.engine import FimEngine

    _tree(tmp_path / "root")
    roots = [WatchRoot(_b(tmp_path / "root"))]
    found = []
    for scanner in (
        _native(workers=2, racy_ns=0, processes=True),
        _pure(monkeypatch, workers=2, racy_ns=0, processes=True),
    ):
        assert scanner.forks_for(roots)
        engine, stats = FimEngine.init(
            tmp_path / f"{scanner.native is not None}.db", roots, scanner=scanner, packages=None
        )
        found.append(
            (engine.store.load(), (stats.entries, stats.files_hashed, stats.bytes_hashed, stats.errors))
        )
        engine.close()
    assert found[0] == found[1]
    assert found[0][1][0] == len(found[0][0]) > 60


def test_ignore_globs_nested_roots_and_quick_checks_agree(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = _tree(tmp_path / "root")
    roots = [
        WatchRoot(_b(tmp_path / "root"), ignore=("*.bin", "*/d04/*")),
        WatchRoot(_b(tmp_path / "root" / "d05"), recursive=False),
    ]
    from hostward.agent.fim.config import RootSet

    rootset = RootSet(roots)
    ours, pure = _native(workers=2, racy_ns=0), _pure(monkeypatch, workers=2, racy_ns=0)
    first = _scan(ours, rootset.roots, all_roots=rootset)
    assert first == _scan(pure, rootset.roots, all_roots=rootset)
    assert _b(made["large"]) not in first and _b(tmp_path / "root" / "d04" / "f1") not in first
    keys = {p: stat_key(r) for p, r in first.items()}
    made["small"].write_bytes(b"changed\n")
    os.unlink(tmp_path / "root" / "d06" / "f2")
    a = ours.scan(rootset.roots, all_roots=rootset, keys=keys)
    b = pure.scan(rootset.roots, all_roots=rootset, keys=keys)
    assert (a.rows, a.unchanged, a.missing) == (b.rows, b.unchanged, b.missing)
    assert _b(made["small"]) in a.rows and _b(tmp_path / "root" / "d06" / "f2") in a.missing


def test_entries_replaced_between_listing_and_recording(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Names listed as regular files that are by now something else, or gone."""
    os.mkfifo(tmp_path / "now-fifo")
    (tmp_path / "now-link").symlink_to("target")
    (tmp_path / "now-dir").mkdir()
    (tmp_path / "plain").write_bytes(b"plain")
    names = [b"gone", b"now-fifo", b"now-link", b"now-dir", b"plain"]
    if os.geteuid() == 0:
        os.mknod(tmp_path / "now-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        names.append(b"now-device")
    prefix = _b(tmp_path) + b"/"
    results = []
    for scanner in (_native(), _pure(monkeypatch)):
        dfd = os.open(tmp_path, O_DIR)
        try:
            rows = scanner.record_files(dfd, prefix, names)
        finally:
            os.close(dfd)
        results.append({r[0]: r for r in rows})
        results.append({r[0]: r for r in scanner.record_files(None, b"", [prefix + n for n in names])})
    assert results[0] == results[1] == results[2] == results[3]
    rows = results[0]
    assert prefix + b"gone" not in rows
    assert stat.S_ISFIFO(rows[prefix + b"now-fifo"][model.P_MODE])
    assert rows[prefix + b"now-link"][model.P_TARGET] == b"target"
    assert stat.S_ISDIR(rows[prefix + b"now-dir"][model.P_MODE])
    assert rows[prefix + b"plain"][model.P_SHA] == hashlib.sha256(b"plain").digest()


def test_a_file_longer_than_its_size_is_hashed_whole(fast: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc files report size 0 and have content: the "grew since fstat" path; procfs also has no
    inode flags, which both paths remember per device."""
    path = b"/proc/version"
    if not os.path.exists(path) or os.lstat(path).st_size != 0:
        pytest.skip("no procfs")
    ours, pure = _native(), _pure(monkeypatch)
    a, b = ours.record_files(None, b"", [path]), pure.record_files(None, b"", [path])
    assert a == b
    with open(path, "rb") as f:
        assert a[0][model.P_SHA] == hashlib.sha256(f.read()).digest()
    assert ours._no_flags_dev == pure._no_flags_dev == {os.lstat(path).st_dev}


def test_bad_input_is_handed_back_not_crashed_on(fast: object, tmp_path: Path) -> None:
    m = native.load(reader.NATIVE)
    assert m is not None
    (tmp_path / "f").write_bytes(b"x")
    dfd = os.open(tmp_path, O_DIR)
    try:
        rows, left, flags, nbytes = m.record(
            dfd, b"p/", [b"f", b"nul\0byte", b"missing"], 0, set(), set(), None
        )
        assert [r[0] for r in rows] == [b"p/f"] and left == [b"nul\0byte", b"missing"]
        assert (flags, nbytes) == (0, 1)
        assert m.record(-5, b"", [b"f"], 0, set(), set(), None)[1] == [b"f"]  # a bad descriptor
        with pytest.raises(TypeError):
            m.record(dfd, b"", ["text"], 0, set(), set(), None)  # type: ignore[list-item]
        with pytest.raises(ValueError):
            m.record(dfd, b"", [b"f"], 0, set(), set(), bytearray(10))
        with pytest.raises(TypeError):
            m.record(dfd, b"", [b"f"], 0, [], set(), None)  # type: ignore[arg-type]
        with pytest.raises(OSError):
            m.listdir(-5)
    finally:
        os.close(dfd)
    with pytest.raises(ValueError):  # what the pure path does with such a name, too
        PathReader().record_files(None, b"", [b"nul\0byte"])


def test_moved_compares_keys_like_the_walk(fast: object, tmp_path: Path) -> None:
    m = native.load(reader.NATIVE)
    assert m is not None
    for name in ("same", "racy", "changed", "new", "gone"):
        (tmp_path / name).write_bytes(name.encode())
    prefix = _b(tmp_path) + b"/"
    keys = {
        prefix + n: KEY.pack(*_key_fields(os.lstat(prefix + n)))
        for n in (b"same", b"racy", b"changed", b"gone")
    }
    (tmp_path / "changed").write_bytes(b"different size")
    os.unlink(tmp_path / "gone")

    class PointKeys:  # the parent's keys of a forked check: ``get`` only
        def __init__(self) -> None:
            self.get = keys.get

    names = [b"same", b"racy", b"changed", b"new", b"gone"]
    dfd = os.open(tmp_path, O_DIR)
    try:
        for source in (keys, PointKeys()):
            unchanged: set[bytes] = set()
            assert m.moved(dfd, prefix, names, source, {prefix + b"racy"}, unchanged) == [
                b"racy",
                b"changed",
                b"new",
            ]
            assert unchanged == {prefix + b"same"}
        with pytest.raises(TypeError):
            m.moved(dfd, prefix, names, keys, set(), frozenset())  # type: ignore[arg-type]
        with pytest.raises(AttributeError):
            m.moved(dfd, prefix, names, object(), set(), set())  # type: ignore[arg-type]
    finally:
        os.close(dfd)


def _key_fields(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid)


def test_listdir_splits_like_scandir(fast: object, tmp_path: Path) -> None:
    m = native.load(reader.NATIVE)
    assert m is not None
    _tree(tmp_path / "root")
    dfd = os.open(tmp_path / "root", O_DIR)
    try:
        files, dirs, others = m.listdir(dfd)
        assert os.lseek(dfd, 0, os.SEEK_CUR) == 0  # the caller's descriptor is left rewound
        with os.scandir(dfd) as it:
            entries = list(it)
    finally:
        os.close(dfd)

    def raw(e: os.DirEntry[str]) -> bytes:
        return os.fsencode(e.name)

    assert sorted(files) == sorted(raw(e) for e in entries if e.is_file(follow_symlinks=False))
    assert sorted(dirs) == sorted(raw(e) for e in entries if e.is_dir(follow_symlinks=False))
    assert sorted(others) == sorted(
        raw(e)
        for e in entries
        if not e.is_file(follow_symlinks=False) and not e.is_dir(follow_symlinks=False)
    )


def test_immutable_and_append_only_flags(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    need("root", "chattr +i / +a need CAP_LINUX_IMMUTABLE")
    locked, append = tmp_path / "locked", tmp_path / "append"
    locked.write_text("x")
    append.write_text("y")
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip(f"{tmp_path} has no inode flags")
    try:
        subprocess.run(["chattr", "+a", str(append)], check=True)
        roots = [WatchRoot(_b(tmp_path))]
        ours = _scan(_native(racy_ns=0), roots)
        assert ours == _scan(_pure(monkeypatch, racy_ns=0), roots)
        assert ours[_b(locked)][model.P_FLAGS] == FS_IMMUTABLE_FL
        assert ours[_b(append)][model.P_FLAGS] == FS_APPEND_FL
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
        subprocess.run(["chattr", "-a", str(append)], check=True)


_AS_NOBODY = """
import os, sys
from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.scan import Scanner
os.setgid(65534); os.setuid(65534)
roots = [WatchRoot(os.fsencode(sys.argv[1]))]
os.environ["HOSTWARD_NO_NATIVE"] = "1"
pure = Scanner(racy_ns=0, noatime=True)
os.environ["HOSTWARD_NO_NATIVE"] = "0"
ours = Scanner(racy_ns=0, noatime=True)
assert pure.native is None and ours.native is not None
a, b = ours.scan(roots).rows, pure.scan(roots).rows
print(a == b, ours._o_file == pure._o_file, not ours._o_file & os.O_NOATIME)
secret = os.fsencode(sys.argv[1]) + b"/secret"
print(a[secret][12], a[secret][8] is None, len(a))
"""


def test_unreadable_files_and_the_noatime_retry_as_another_user(fast: object) -> None:
    """As nobody: files of others refuse O_NOATIME (EPERM, retried without it) and a mode-000 file is
    recorded with EACCES, the same way on both paths. Root reads everything, hence the subprocess."""
    need("root", "needs to switch to the nobody user")
    base = Path(tempfile.mkdtemp(prefix="hw-fimscan-"))
    try:
        os.chmod(base, 0o755)
        for name in ("a", "b", "c"):
            (base / name).write_text(name * 100)
            os.chmod(base / name, 0o644)
        (base / "secret").write_text("top secret")
        os.chmod(base / "secret", 0o000)
        out = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, str(base)], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        assert out[0] == "True True True"
        assert out[1] == "EACCES True 5"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


class _Clock:
    """Time that only moves when the throttle sleeps: what it slept is what it charged."""

    def __init__(self) -> None:
        self.now = 0.0
        self.takes = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _throttled(scanner: Scanner, rate: int) -> _Clock:
    fake = _Clock()
    throttle = Throttle(rate, clock=fake.clock, sleep=fake.sleep)
    take = throttle.take

    def counted(nbytes: int) -> None:
        fake.takes += 1
        take(nbytes)

    throttle.take = counted  # type: ignore[method-assign]
    scanner.throttle = throttle
    return fake


@pytest.mark.parametrize("rate", [1 << 20, 40 << 20])
def test_the_throttle_is_honoured_on_the_native_path(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rate: int
) -> None:
    sizes = [100_000] * 30 + [SMALL_FILE + 5, 3 * model.CHUNK]
    paths = []
    for i, size in enumerate(sizes):
        p = tmp_path / f"f{i:02d}"
        p.write_bytes(os.urandom(size))
        paths.append(_b(p))
    slept = []
    results = []
    for scanner in (_native(rate=rate), _pure(monkeypatch, rate=rate)):
        fake = _throttled(scanner, rate)
        results.append(scanner.hash_batch(paths))
        slept.append((fake.now, fake.takes))
    assert results[0] == results[1]
    # Everything read was charged, as the pure path charges it (the same total: the same sleep) ...
    assert slept[0][0] == pytest.approx(slept[1][0], rel=1e-6)
    burst = max(rate // 4, model.CHUNK)
    small = sum(s + PER_FILE_COST for s in sizes[:30])
    assert slept[0][0] >= (small + sum(sizes[30:]) - burst) / rate
    # ... in several steps, never one charge for the whole batch.
    assert slept[0][1] >= 3


def test_throttled_agent_scan_keeps_its_rate(fast: object, tmp_path: Path) -> None:
    """A real clock: 3 MiB of small files at 2 MiB/s take at least a second on the native path."""
    import time

    for i in range(24):
        (tmp_path / f"f{i:02d}").write_bytes(os.urandom(128 * 1024))
    scanner = _native(workers=2, rate=2 << 20)
    started = time.monotonic()
    rows = scanner.scan([WatchRoot(_b(tmp_path))]).rows
    assert time.monotonic() - started >= 0.9
    assert sum(1 for r in rows.values() if r[model.P_SHA] is not None) == 24


def _all_names(root: Path) -> Iterator[bytes]:
    for dirpath, dirnames, filenames in os.walk(_b(root)):
        for n in dirnames + filenames:
            yield os.path.join(dirpath, n)


def test_hash_batch_of_whole_paths_matches(
    fast: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The agent's worker threads hand whole paths (no directory descriptor) to ``hash_batch``."""
    _tree(tmp_path / "root")
    paths = sorted(p for p in _all_names(tmp_path / "root") if stat.S_ISREG(os.lstat(p).st_mode))
    assert _native().hash_batch(paths) == _pure(monkeypatch).hash_batch(paths)
