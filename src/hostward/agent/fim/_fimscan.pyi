"""Types of the C accelerator ``src/native/fimscan.c`` (the twin of ``reader.PathReader._scan_file``)."""

from collections.abc import Container, Mapping, Sequence

SMALL_FILE: int
CHUNK: int
TRACKED_FLAGS: int
FS_IOC_GETFLAGS: int

def record(
    dir_fd: int,
    prefix: bytes,
    names: Sequence[bytes],
    o_flags: int,
    no_flags: set[int],
    no_xattr: set[int],
    buf: bytearray | None,
    limit: int = 0,
    /,
) -> tuple[list[tuple], list[bytes], int, int]: ...
def listdir(dir_fd: int, /) -> tuple[list[bytes], list[bytes], list[bytes]]: ...
def moved(
    dir_fd: int,
    prefix: bytes,
    names: Sequence[bytes],
    keys: Mapping[bytes, bytes],
    racy: Container[bytes],
    unchanged: set[bytes],
    /,
) -> list[bytes]: ...
