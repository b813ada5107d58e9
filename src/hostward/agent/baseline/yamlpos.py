"""YAML loading that remembers where every value came from, so policy errors name line and column."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path_ = tuple[str | int, ...]


class YamlPosError(ValueError):
    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class Marks:
    """(line, column) of each value, by its path from the document root (keys and list indexes)."""

    def __init__(self) -> None:
        self._marks: dict[Path_, tuple[int, int]] = {}

    def set(self, path: Path_, node: Node) -> None:
        self._marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)

    def at(self, path: Path_) -> tuple[int | None, int | None]:
        """The mark of ``path`` or of its nearest ancestor that has one."""
        p = tuple(path)
        while True:
            if p in self._marks:
                return self._marks[p]
            if not p:
                return None, None
            p = p[:-1]


def load(text: str) -> tuple[Any, Marks]:
    """Parse one YAML document with the safe loader; raises YamlPosError with the problem's position."""
    loader = yaml.SafeLoader(text)
    marks = Marks()
    try:
        node = loader.get_single_node()
        if node is None:
            return None, marks
        return _build(loader, node, (), marks), marks
    except yaml.MarkedYAMLError as exc:
        # The context mark is where the broken construct starts (an unterminated quote), the problem
        # mark where the parser gave up (often the end of the file): name both, point at the start.
        mark = exc.context_mark or exc.problem_mark
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.problem_mark is not None:
            pm = exc.problem_mark
            problem = f"{exc.context}: {problem} at line {pm.line + 1}, column {pm.column + 1}"
        raise YamlPosError(
            f"YAML syntax error: {problem}",
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlPosError(f"YAML error: {exc}", None, None) from exc
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: Node, path: Path_, marks: Marks) -> Any:
    marks.set(path, node)
    if isinstance(node, MappingNode):
        # Duplicates are errors among the keys written in this mapping; keys merged in with ``<<:``
        # are defaults that a written key overrides (flatten_mapping puts them first).
        written: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise YamlPosError(
                    "a mapping key must be a scalar",
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            if key in written:
                raise YamlPosError(
                    f"duplicate key {key!r}", key_node.start_mark.line + 1, key_node.start_mark.column + 1
                )
            written.add(key)
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            out[key] = _build(loader, value_node, (*path, str(key)), marks)
        return out
    if isinstance(node, SequenceNode):
        return [_build(loader, item, (*path, i), marks) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    return loader.construct_object(node, deep=True)
