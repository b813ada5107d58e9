"""Log tailing with real files: offsets, restart, rotation (live and while stopped), truncation, junk."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from hostward.agent.collectors.journal import JournalReader, parse_entry
from hostward.agent.collectors.logtail import (
    MAX_LINE_BYTES,
    FileTailer,
    LogSource,
    LogWatch,
    OffsetStore,
    discover_sources,
    parse_log_source,
)

FAKE_JOURNALCTL = Path(__file__).resolve().parents[1] / "fakes" / "journalctl.py"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def lines(n: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {i}\n" for i in range(n))


def tailer(path: Path, state: Path, clock: FakeClock | None = None, start: str = "start") -> FileTailer:
    return FileTailer(path, OffsetStore(state), f"file:{path}", start=start, clock=clock or FakeClock())  # type: ignore[arg-type]


def stop(t: FileTailer) -> None:
    t.commit()
    t.store.save()
    t.close()


def test_reads_complete_lines_and_keeps_a_partial_one(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("a\nb\npartial")
    t = tailer(log, tmp_path / "state")
    assert t.read() == ["a", "b"]
    assert t.read() == []
    append(log, " line\nc\n")
    assert t.read() == ["partial line", "c"]


def test_read_text_hands_out_whole_lines_as_one_decoded_chunk(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_bytes("é1\nb\r\n\npart".encode() + b"\xe2\x82")
    t = tailer(log, tmp_path / "state")
    assert t.read_text() == "é1\nb\r\n\n"  # whole lines only, each with its newline
    assert t.counters["lines"] == 3
    assert t.read_text() == ""
    with open(log, "ab") as fh:
        fh.write(b"\xac ial\nlast\n")  # the rest of a UTF-8 sequence cut between two reads
    assert t.read_text() == "part€ ial\nlast\n"
    t.commit()
    assert t.store.get(f"file:{log}")["offset"] == log.stat().st_size  # type: ignore[index]


def test_first_start_begins_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(lines(5))
    t = tailer(log, tmp_path / "state", start="end")
    assert t.read() == []
    append(log, "new\n")
    assert t.read() == ["new"]


def test_a_file_created_after_start_is_read_from_its_beginning(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    t = tailer(log, tmp_path / "state", start="end")
    assert t.read() == []
    log.write_text("first\n")
    assert t.read() == ["first"]


def test_restart_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    state = tmp_path / "state"
    log.write_text(lines(3) + "half")
    t = tailer(log, state)
    assert t.read() == ["line 0", "line 1", "line 2"]
    stop(t)
    append(log, " done\n" + lines(2, "more"))
    t2 = tailer(log, state, start="end")
    assert t2.read() == ["half done", "more 0", "more 1"]


def test_live_rename_rotation_drains_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    clock = FakeClock()
    log.write_text(lines(2, "old"))
    t = tailer(log, tmp_path / "state", clock)
    assert t.read() == ["old 0", "old 1"]
    with open(log, "a", encoding="utf-8") as writer:  # the syslog daemon keeps its descriptor
        os.rename(log, tmp_path / "auth.log.1")
        log.write_text("new 0\n")
        writer.write("old 2\nold 3 cut")
        writer.flush()
        got = t.read()  # notices the rotation
        got += t.read()
        assert got == ["old 2", "new 0"]
        assert t.draining
        writer.write(" late\n")
        writer.flush()
        assert t.read() == ["old 3 cut late"]
        clock.t += 5
        assert t.read() == []
        assert not t.draining
        append(log, "new 1\n")
        assert t.read() == ["new 1"]
        assert t.counters["rotations"] == 1


def test_a_line_cut_by_rotation_is_handed_out_when_the_old_file_is_finished(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    clock = FakeClock()
    log.write_text("a\nunfinished")
    t = tailer(log, tmp_path / "state", clock)
    assert t.read() == ["a"]
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("b\n")
    assert t.read() == []  # rotation seen; the old file is drained until it stays quiet
    clock.t += 5
    assert t.read() == ["unfinished", "b"]


def test_rotation_while_stopped_reads_the_rest_of_the_old_file_then_the_new(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    state = tmp_path / "state"
    log.write_text(lines(2, "a"))
    t = tailer(log, state)
    assert t.read() == ["a 0", "a 1"]
    stop(t)
    append(log, "a 2\n")  # written before the rotation, while the agent was down
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text(lines(2, "b"))
    t2 = tailer(log, state)
    assert t2.read() == ["a 2", "b 0", "b 1"]
    assert t2.counters["rotations"] == 1


def test_rotation_while_stopped_with_the_old_file_gone_starts_the_new_file(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    state = tmp_path / "state"
    log.write_text(lines(2, "a"))
    t = tailer(log, state)
    t.read()
    stop(t)
    (tmp_path / "new").write_text(lines(1, "b"))  # created before the old one goes: another inode
    os.unlink(log)  # compressed away
    os.rename(tmp_path / "new", log)
    t2 = tailer(log, state)
    assert t2.read() == ["b 0"]
    assert t2.counters["lost_rotations"] == 1


def test_stop_while_draining_a_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    state = tmp_path / "state"
    clock = FakeClock()
    log.write_text("a0\n")
    t = tailer(log, state, clock)
    assert t.read() == ["a0"]
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("b0\n")
    assert t.read() + t.read() == ["b0"]
    assert t.draining
    stop(t)
    append(tmp_path / "auth.log.1", "a1\n")
    append(log, "b1\n")
    t2 = tailer(log, state, clock)
    assert t2.read() == ["a1", "b1"]


def test_copytruncate_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(lines(3))
    t = tailer(log, tmp_path / "state")
    assert len(t.read()) == 3
    with open(log, "r+", encoding="utf-8") as f:
        f.truncate(0)
    append(log, "after 0\n")
    assert t.read() == ["after 0"]
    assert t.counters["truncations"] == 1


def test_truncated_and_regrown_past_the_offset_is_detected_by_the_head(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("x\n")
    t = tailer(log, tmp_path / "state")
    assert t.read() == ["x"]
    with open(log, "r+", encoding="utf-8") as f:
        f.truncate(0)
    append(log, "y longer line\nz\n")
    assert t.read() == ["y longer line", "z"]


def test_truncation_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    state = tmp_path / "state"
    log.write_text(lines(5))
    t = tailer(log, state)
    t.read()
    stop(t)
    with open(log, "r+", encoding="utf-8") as f:
        f.truncate(0)
    append(log, "fresh\n")
    t2 = tailer(log, state)
    assert t2.read() == ["fresh"]


def test_enormous_lines_are_cut_and_following_lines_survive(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_bytes(b"before\n" + b"A" * (3 * MAX_LINE_BYTES) + b"\nafter\n")
    t = tailer(log, tmp_path / "state")
    got: list[str] = []
    for _ in range(10):
        got += t.read()
    assert got[0] == "before" and got[-1] == "after" and len(got) == 3
    assert len(got[1]) == MAX_LINE_BYTES
    assert t.counters["long_lines"] == 1


def test_binary_and_invalid_utf8_are_replaced_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_bytes(b"\x00\xff\xfe garbage \xc3\n\x80\x81\nok\n")
    t = tailer(log, tmp_path / "state")
    got = t.read()
    assert got[-1] == "ok" and len(got) == 3 and "\ufffd" in got[0]


def test_damaged_state_file_starts_over(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "logtail.json").write_text("{not json")
    store = OffsetStore(state)
    assert store.get("file:/x") is None


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("sshd:/var/log/sshd.log", LogSource(kind="file", service="sshd", path=Path("/var/log/sshd.log"))),
        ("/var/log/auth.log", LogSource(kind="file", service="auto", path=Path("/var/log/auth.log"))),
        ("pure-ftpd:/var/log/x", LogSource(kind="file", service="pure-ftpd", path=Path("/var/log/x"))),
        (
            "journald:ssh.service,vsftpd.service",
            LogSource(kind="journald", units=("ssh.service", "vsftpd.service")),
        ),
    ],
)
def test_parse_log_source(spec: str, want: LogSource) -> None:
    assert parse_log_source(spec) == want


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("telnet:/var/log/x", "unknown service 'telnet'"),
        ("sshd:relative.log", "must be absolute"),
        ("auth.log", "expected SERVICE:PATH"),
        ("", "empty"),
    ],
)
def test_parse_log_source_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_log_source(spec)


def test_discover_sources(tmp_path: Path) -> None:
    (tmp_path / "var/log/mysql").mkdir(parents=True)
    (tmp_path / "var/log/mysql/error.log").write_text("")
    (tmp_path / "var/log/vsftpd.log").write_text("")
    found = discover_sources(tmp_path, journal=True)
    assert [(s.kind, s.service) for s in found] == [
        ("file", "vsftpd"),
        ("file", "mysql"),
        ("journald", "auto"),
    ]
    (tmp_path / "var/log/auth.log").write_text("")
    found = discover_sources(tmp_path, journal=True)
    first = found[0]
    assert (first.kind, first.service, first.path) == ("file", "auto", tmp_path / "var/log/auth.log")
    assert all(s.kind == "file" for s in found)


def test_log_watch_wakes_on_append_and_commits(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    state = tmp_path / "state"
    watch = LogWatch([LogSource(kind="file", path=log)], state, start="start")
    try:
        assert watch.poll(0) == []
        t0 = time.monotonic()
        append(log, "hello\n")
        batches = watch.poll(2.0)
        assert time.monotonic() - t0 < 1.0
        assert [b.lines for b in batches] == [["hello"]]
        watch.commit(force=True)
    finally:
        watch.close()
    saved = json.loads((state / "logtail.json").read_text())
    assert saved["sources"][f"file:{log}"]["offset"] == 6


# ---- journald --------------------------------------------------------------------------------------


def entry(i: int, message: str = "Failed password for root from 203.0.113.7 port 22 ssh2") -> str:
    return json.dumps(
        {
            "__CURSOR": f"s=abc;i={i}",
            "__REALTIME_TIMESTAMP": str(1_764_000_000_000_000 + i),
            "SYSLOG_IDENTIFIER": "sshd-session",
            "_PID": "42",
            "MESSAGE": message,
        }
    )


def test_parse_entry_handles_binary_messages_and_junk() -> None:
    e = parse_entry(entry(1).encode())
    assert e is not None and (e.identifier, e.pid, e.realtime) == ("sshd-session", 42, 1_764_000_000.000001)
    binary = json.dumps({"__CURSOR": "c", "MESSAGE": [70, 97, 105, 108, 255]}).encode()
    b = parse_entry(binary)
    assert b is not None and b.message.startswith("Fail")
    assert parse_entry(b"not json") is None
    assert parse_entry(b'{"MESSAGE": "no cursor"}') is None


def _wait_entries(reader: JournalReader, n: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [e.cursor for e in reader.read()]
        time.sleep(0.02)
    return got


def test_journal_reader_follows_persists_the_cursor_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal.jsonl"
    argv_log = tmp_path / "argv.jsonl"
    journal.write_text(entry(0) + "\n")
    monkeypatch.setenv("FAKE_JOURNAL", str(journal))
    monkeypatch.setenv("FAKE_JOURNAL_ARGV", str(argv_log))
    store = OffsetStore(tmp_path / "state")
    command = (sys.executable, str(FAKE_JOURNALCTL))
    reader = JournalReader(store, command=command, backoff_s=(0.1, 0.2))
    reader.start()
    try:
        time.sleep(0.5)
        append(journal, entry(1) + "\n" + entry(2) + "\n")
        assert _wait_entries(reader, 2) == ["s=abc;i=1", "s=abc;i=2"]  # -n 0: the old entry is not replayed
        reader.commit()
        store.save()
    finally:
        reader.stop()
    first_argv = json.loads(argv_log.read_text().splitlines()[0])
    assert "-n" in first_argv and "-u" in first_argv and "ssh.service" in first_argv
    # a new agent run continues after the stored cursor
    append(journal, entry(3) + "\n")
    monkeypatch.setenv("FAKE_JOURNAL_EXIT_AFTER", "1")  # and journalctl keeps crashing after one entry
    reader2 = JournalReader(OffsetStore(tmp_path / "state"), command=command, backoff_s=(0.1, 0.2))
    reader2.start()
    try:
        assert _wait_entries(reader2, 1) == ["s=abc;i=3"]
        append(journal, entry(4) + "\n")
        assert _wait_entries(reader2, 1) == ["s=abc;i=4"]
        assert reader2.counters["restarts"] >= 1
    finally:
        reader2.stop()
    invocations = [json.loads(x) for x in argv_log.read_text().splitlines()]
    assert "--after-cursor=s=abc;i=2" in invocations[1]
    assert "--after-cursor=s=abc;i=3" in invocations[2]
