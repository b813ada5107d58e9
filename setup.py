"""Native accelerators (C, optional): everything else about the package is in pyproject.toml.

Each module has a pure-Python twin that gives the same results; ``hostward.native.load`` picks the C one
when it was built (and ``HOSTWARD_NO_NATIVE=1`` is not set). A machine without a C compiler, the PCRE2 or
the OpenSSL headers still installs hostward, only slower; CI requires the modules (capability ``native``).
"""

from setuptools import Extension, setup

CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        # login-log chunk parser: the chunk regex run by PCRE2's JIT, event rows built in C
        Extension(
            "hostward.agent.detectors._logscan",
            ["src/native/logscan.c"],
            libraries=["pcre2-8"],
            extra_compile_args=CFLAGS,
            optional=True,
        ),
        # FIM per-file recording: open/fstat/flags/xattrs/SHA-256 of a directory's files without the GIL
        Extension(
            "hostward.agent.fim._fimscan",
            ["src/native/fimscan.c"],
            libraries=["crypto"],
            extra_compile_args=CFLAGS,
            optional=True,
        ),
    ]
)
