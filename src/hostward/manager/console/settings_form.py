"""A policy's settings as an HTML form, generated from its JSON schema, and the posted form read back.

Booleans are checkboxes, integers/numbers/strings inputs (enums a select), lists textareas with one value
per line; anything else (nested objects) is edited as JSON. The policy's pydantic model validates the
result, so a bad value comes back as the model's own message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hostward.core.errors import Invalid

FIELD_PREFIX = "s_"
_UNITS = {
    "s": "seconds",
    "ms": "milliseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "mb": "MB",
    "kb": "KB",
}


def human_title(name: str, title: str | None) -> str:
    """A readable field title: "ports_interval_s" gives "Ports interval (seconds)".

    pydantic's automatic title ("Ports Interval S") is replaced; an explicit title on the field is kept.
    """
    if title and title != name.replace("_", " ").title():
        return title
    words = name.split("_")
    unit = _UNITS.get(words[-1]) if len(words) > 1 else None
    text = " ".join(words[:-1] if unit else words).capitalize()
    return f"{text} ({unit})" if unit else text


@dataclass(frozen=True)
class SettingField:
    name: str
    title: str
    description: str
    widget: str  # checkbox | number | text | select | lines | json
    value: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    item_type: str = "string"
    nullable: bool = False

    @property
    def input_name(self) -> str:
        return FIELD_PREFIX + self.name

    @property
    def text(self) -> str:
        """The value as the widget shows it."""
        if self.value is None:
            return ""
        if self.widget == "lines":
            return "\n".join(str(v) for v in self.value)
        if self.widget == "json":
            return json.dumps(self.value, indent=2)
        return str(self.value)


def _resolve(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Follow ``$ref`` and unwrap ``anyOf: [X, null]``; returns (schema, nullable)."""
    nullable = False
    schema = dict(prop)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) == 1:
            schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **options[0]}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"), {})
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema, nullable


def fields_for(schema: Mapping[str, Any], values: Mapping[str, Any]) -> list[SettingField]:
    defs = schema.get("$defs", {})
    out = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _resolve(raw, defs)
        kind = prop.get("type")
        value = values.get(name, prop.get("default"))
        common = {
            "name": name,
            "title": human_title(name, prop.get("title")),
            "description": prop.get("description", ""),
            "value": value,
            "nullable": nullable,
        }
        if "enum" in prop:
            out.append(SettingField(widget="select", choices=tuple(str(c) for c in prop["enum"]), **common))
        elif kind == "boolean":
            out.append(SettingField(widget="checkbox", **common))
        elif kind in ("integer", "number"):
            out.append(
                SettingField(
                    widget="number",
                    minimum=prop.get("minimum"),
                    maximum=prop.get("maximum"),
                    item_type=kind,
                    **common,
                )
            )
        elif kind == "string":
            out.append(SettingField(widget="text", **common))
        elif kind == "array" and prop.get("items", {}).get("type") in ("string", "integer", "number"):
            out.append(SettingField(widget="lines", item_type=prop["items"]["type"], **common))
        else:
            out.append(SettingField(widget="json", **common))
    return out


def _number(text: str, kind: str, title: str) -> int | float:
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError as exc:
        raise Invalid(f"{title}: {text!r} is not a {'whole ' if kind == 'integer' else ''}number") from exc


def parse_form(fields: list[SettingField], form: Mapping[str, Any]) -> dict[str, Any]:
    """The settings dict from a posted form (unchecked checkboxes are absent from a form, so False)."""
    settings: dict[str, Any] = {}
    for f in fields:
        raw = form.get(f.input_name)
        text = raw.strip() if isinstance(raw, str) else ""
        if f.widget == "checkbox":
            settings[f.name] = raw is not None
        elif f.widget == "number":
            settings[f.name] = None if not text and f.nullable else _number(text, f.item_type, f.title)
        elif f.widget == "lines":
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            settings[f.name] = (
                lines if f.item_type == "string" else [_number(x, f.item_type, f.title) for x in lines]
            )
        elif f.widget == "json":
            try:
                settings[f.name] = json.loads(text) if text else None
            except json.JSONDecodeError as exc:
                raise Invalid(f"{f.title}: not valid JSON ({exc.msg})") from exc
        else:
            settings[f.name] = None if not text and f.nullable else text
    return settings
