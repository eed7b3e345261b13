"""Verb settings declared once: each field carries its default, its constraint and its documentation.

A verb's settings are a dataclass whose fields are declared with :func:`setting`::

    @dataclass
    class TrainSettings(Settings):
        steps: int = setting(1000, positive_int, "optimiser steps")
        lr: float = setting(3e-4, positive, "Adam learning rate")
        buffer: str = setting("memory", one_of("memory", "disk"), "where the replay buffer lives")
        clip: float | None = setting(None, optional(positive), "gradient-norm clip; null: none")

    settings = settings_from(TrainSettings, cfg)   # in the verb's validate() / run()

:func:`settings_from` reads every field of the dataclass from the config by its name (a field the config
lacks keeps its default), checks each value against the field's constraint, converts it (``positive`` gives a
float, list constraints give tuples) and builds the dataclass. A bad value is one line naming the key, the
value and what is valid::

    ConfigError: steps must be a positive integer, got 0 (optimiser steps)

Code that builds settings by hand (tests, benchmarks) calls ``settings.check()`` (:func:`validate_fields`) for
the same errors. A verb that trains with a library's settings dataclass and has keys of its own subclasses it
(``class WorldModelRunSettings(WorldModelSettings)``) and passes the subclass instance to the trainer. So a new
key is declared once, next to its documentation, and is validated and read from the config with no more code.

What fields cannot say (a key required only in some mode, names looked up in a registry, constraints between
two keys) stays in the verb's ``validate(cfg)``, after :func:`settings_from`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from worldssl.runtime.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Check:
    """A constraint on one setting: ``valid`` says in words what passes (``"a positive integer"``), ``test``
    decides, ``convert`` (optional) turns an accepted config value into what the code uses."""

    valid: str
    test: Callable[[Any], bool]
    convert: Callable[[Any], Any] | None = None

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


integer = Check("an integer", _is_int, int)
positive_int = Check("a positive integer", lambda v: _is_int(v) and v >= 1, int)
non_negative_int = Check("an integer >= 0", lambda v: _is_int(v) and v >= 0, int)
number = Check("a number", _is_number, float)
positive = Check("> 0", lambda v: _is_number(v) and v > 0, float)
non_negative = Check(">= 0", lambda v: _is_number(v) and v >= 0, float)
boolean = Check("true or false", lambda v: isinstance(v, bool))
amp_mode = Check("auto, true or false", lambda v: isinstance(v, bool) or v == "auto")


def one_of(*choices: Any) -> Check:
    """One of ``choices`` (strings are compared exactly)."""
    return Check(f"one of {', '.join(map(str, choices))}", lambda v: isinstance(v, type(choices[0])) and v in choices)


def between(low: float, high: float) -> Check:
    """A number strictly between ``low`` and ``high``."""
    return Check(f"in ({low:g}, {high:g})", lambda v: _is_number(v) and low < v < high, float)


def optional(check: Check) -> Check:
    """``check`` or null (None)."""
    return Check(f"{check.valid} or null", lambda v: v is None or check(v),
                 None if check.convert is None else (lambda v: None if v is None else check.convert(v)))


def list_of(check: Check, non_empty: bool = True) -> Check:
    """A (non-empty) list whose every item passes ``check``; converted to a tuple."""
    convert = check.convert or (lambda v: v)
    noun = check.valid.split(" ", 1)[1] if check.valid.startswith(("a ", "an ")) else check.valid
    return Check(f"a {'non-empty ' if non_empty else ''}list of {noun}s",
                 lambda v: isinstance(v, (list, tuple)) and (len(v) > 0 or not non_empty) and all(map(check, v)),
                 lambda v: tuple(convert(x) for x in v))


def setting(default: Any = dataclasses.MISSING, check: Check | None = None, doc: str = "", *,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its constraint (``check``, None: anything) and documentation (``doc``)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"check": check, "doc": doc})


def describe(cls: type) -> list[tuple[str, Any, str, str]]:
    """``(name, default, what is valid, doc)`` of every field of a settings dataclass (for help texts)."""
    out = []
    for f in dataclasses.fields(cls):
        check = f.metadata.get("check")
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append((f.name, default, check.valid if check else "", f.metadata.get("doc", "")))
    return out


def check_value(name: str, value: Any, field: dataclasses.Field) -> Any:
    """``value`` converted for field ``name``, or a one-line :class:`ConfigError`."""
    check: Check | None = field.metadata.get("check")
    if check is None:
        return value
    if not check(value):
        doc = field.metadata.get("doc")
        raise ConfigError(f"{name} must be {check.valid}, got {value!r}" + (f" ({doc})" if doc else ""))
    return check.convert(value) if check.convert is not None else value


def validate_fields(settings: Any, names: Iterable[str] | None = None) -> None:
    """Check every field of ``settings`` (or only ``names``) against its declared constraint."""
    wanted = None if names is None else set(names)
    for f in dataclasses.fields(settings):
        if wanted is None or f.name in wanted:
            check_value(f.name, getattr(settings, f.name), f)


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def settings_from(cls: type[T], cfg: Any, **overrides: Any) -> T:
    """``cls`` built from the config keys named like its fields (``overrides`` win), each value checked and
    converted; a field the config lacks keeps its default."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in overrides:
            value = overrides[f.name]
        elif f.name in cfg:
            value = _plain(cfg[f.name])
        else:
            continue
        values[f.name] = check_value(f.name, value, f)
    return cls(**values)


class Settings:
    """Mixin for settings dataclasses: ``check()`` validates every declared field."""

    def check(self) -> None:
        validate_fields(self)
