"""Settings from the environment, for every service's `from_env` and start_all's planner (agent/launch):
one `EnvSpec` per dataclass says which variable sets which field and how its text is parsed.

A variable that is unset or blank is not passed at all, so the field's default in the dataclass is the
one place a default lives (the README's configuration tables are checked against them by
tests/test_config_table.py). A set one is parsed; text that does not parse is a ConfigError naming the
variable and what it expects, and the dataclass's own `__post_init__` validates the value.

It lives in token_server/ because that is the package every service may import: the token server never
imports the agent, and the agent already uses token_server.http_guard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting (and its env variable)."""


@dataclass(frozen=True)
class Parser:
    """How a variable's text becomes a field's value; `expects` ends the message "NAME='text' is not ..."."""

    expects: str
    convert: Callable[[str], Any]

    def __call__(self, name: str, raw: str) -> Any:
        try:
            return self.convert(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not {self.expects}") from None


def _flag(raw: str) -> bool:
    word = raw.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


TEXT = Parser("text", str)
INTEGER = Parser("an integer", int)
NUMBER = Parser("a number", float)
FLAG = Parser("1 or 0", _flag)
PATH = Parser("a path", Path)
COMMA_LIST = Parser("a comma-separated list", lambda raw: tuple(p.strip() for p in raw.split(",") if p.strip()))


@dataclass(frozen=True)
class Var:
    name: str  # the environment variable
    field: str  # the dataclass field it sets
    parse: Parser = TEXT
    hint: str = ""  # what to set, said when the field has no default and the variable is unset


def given(env: Mapping[str, str], name: str) -> str | None:
    """The variable's text, or None when it is unset or blank (blank counts as unset everywhere)."""
    return (env.get(name) or "").strip() or None


def field_default(target: type, name: str) -> Any:
    """A dataclass field's default (its factory's product), or dataclasses.MISSING when it has none."""
    field = {f.name: f for f in dataclasses.fields(cast(Any, target))}[name]
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return MISSING


@dataclass(frozen=True)
class EnvSpec(Generic[T]):
    """The variables of one dataclass."""

    target: type[T]
    vars: tuple[Var, ...]

    def __post_init__(self) -> None:
        fields = {f.name for f in dataclasses.fields(cast(Any, self.target))}
        unknown = [v.field for v in self.vars if v.field not in fields]
        if unknown:
            raise TypeError(f"{self.target.__name__} has no field(s) {unknown}")

    def kwargs(self, env: Mapping[str, str]) -> dict[str, Any]:
        """The parsed value of every variable that is set, by field name; nothing for the others."""
        return {v.field: v.parse(v.name, raw) for v in self.vars if (raw := given(env, v.name)) is not None}

    def build(self, env: Mapping[str, str], **fields: Any) -> T:
        """The dataclass from `env`; `fields` are given by the caller and win over the environment."""
        kwargs = self.kwargs(env) | fields
        for v in self.vars:
            if v.field not in kwargs and field_default(self.target, v.field) is MISSING:
                raise ConfigError(f"{v.name} is not set" + (f": {v.hint}" if v.hint else ""))
        return self.target(**kwargs)

    def value(self, env: Mapping[str, str], field: str) -> Any:
        """What one field will be: the variable's parsed value when set, else the field's default."""
        var = next(v for v in self.vars if v.field == field)
        raw = given(env, var.name)
        return field_default(self.target, field) if raw is None else var.parse(var.name, raw)
