"""The C accelerators: built where CI requires them, and switched off by HOSTWARD_NO_NATIVE."""

from __future__ import annotations

import pytest

from hostward import native
from tests.conftest import need


@pytest.mark.parametrize("name", native.MODULES)
def test_native_module_is_built_and_loaded(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need("native")
    monkeypatch.delenv("HOSTWARD_NO_NATIVE", raising=False)
    module = native.load(name)
    assert module is not None and module.__name__ == name
    assert module.__file__ is not None and module.__file__.endswith(".so")


@pytest.mark.parametrize(("value", "off"), [("1", True), ("yes", True), ("0", False), ("", False)])
def test_no_native_switch(value: str, off: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTWARD_NO_NATIVE", value)
    assert native.disabled() is off
    if off:
        assert all(native.load(name) is None for name in native.MODULES)


def test_unknown_module_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown native module"):
        native.load("hostward.nothing")
