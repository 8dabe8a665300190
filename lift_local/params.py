"""Parameters declared once: a frozen dataclass whose fields say their default, help and limits.

The command line, the TOML config, `--set` and Python all build the same dataclass, and `Params` checks
every field against its declaration when it is built, so a limit holds wherever a value comes from. A value
outside its limits is a `ParameterError` naming the field; the config and the command line add where the
value came from (file and key, or option).
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from collections.abc import Callable
from typing import Any

from .errors import ParameterError


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           check: Callable[[Any], None] | None = None, **cli: Any) -> Any:
    """A parameter field: its default, the help its command-line option shows, and its limits: `low`/`high`
    (inclusive; `low_open` excludes `low`) for numbers, and `check` (raises ValueError saying what is wrong)
    for anything else. `cli` holds more for the option: `flags` (e.g. ("-k",)), `required` (the command asks
    for it though `run` has a default), `metavar`, and `parse` (text to value, for types other than numbers,
    strings and choices)."""
    limits = {"low": low, "high": high, "low_open": low_open, "check": check}
    return dataclasses.field(default=default, metadata={"help": help, **limits, **cli})


def limits(field: dataclasses.Field) -> str | None:
    """The allowed range of a numeric field in words, e.g. "in (0, 1]" or "at least 1"; None if it has none."""
    low, high, low_open = (field.metadata.get(key) for key in ("low", "high", "low_open"))
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"above {low:g}" if low_open else f"at least {low:g}"
    if high is not None:
        return f"at most {high:g}"
    return None


@dataclasses.dataclass(frozen=True)
class Params:
    """Base of every parameter dataclass: checks each field against its declaration when built. A subclass
    with checks across fields adds them in its own `__post_init__`, after calling this one."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            if field.init:
                check_field(type(self), field, hints[field.name], getattr(self, field.name))


def check_field(cls: type, field: dataclasses.Field, hint: Any, value: Any) -> None:
    def fail(problem: str) -> None:
        raise ParameterError(cls.__name__, field.name, problem)

    if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
        fail(f"must be one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
    allowed = limits(field)
    if allowed is not None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            fail(f"must be a number {allowed}, got {value!r}")
        low, high = field.metadata["low"], field.metadata["high"]
        # Written so that NaN, which compares false with everything, is outside.
        above_low = low is None or (value > low if field.metadata["low_open"] else value >= low)
        if not (above_low and (high is None or value <= high)):
            fail(f"must be {allowed}, got {value!r}")
    if field.metadata.get("check") is not None:
        try:
            field.metadata["check"](value)
        except ValueError as err:
            fail(str(err))
