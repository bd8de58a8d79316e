"""Markers that put an option's valid values into the signature that takes it.

A constructor built from the config states each option once, with its type, default and rule::

    z_pres_prior: Annotated[float, Range(gt=0, lt=1)] = 0.01
    baseline: Annotated[str, OneOf(BASELINES)] = "nvil"
    encoder_hidden: Annotated[Sequence[int], Range(ge=1)] = (200,)  # every layer size

:func:`airlab.config.validate.validate_config` reads these markers before anything is built. The markers
know nothing of the config; modules under ``airlab/data`` and ``airlab/models`` import them, never the
other way round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def describe(value: Any) -> str:
    """A value as the one-line errors quote it: strings quoted, numbers and lists as written."""
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Range:
    """A number's bounds (``ge``/``gt`` below, ``le``/``lt`` above); on a list, each item's bounds."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None when it is inside."""
        if isinstance(value, float) and math.isnan(value):
            return "must be a number, not nan"
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        too_low = low is not None and (value < low if self.ge is not None else value <= low)
        too_high = high is not None and (value > high if self.le is not None else value >= high)
        if not (too_low or too_high):
            return None
        return f"{describe(value)} is out of range; must be {self.text()}"

    def text(self) -> str:
        """``>= 1``, ``> 0`` or ``in (0, 1)``."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"


@dataclass(frozen=True, init=False)
class OneOf:
    """The values a string option may take."""

    choices: tuple[Any, ...]

    def __init__(self, choices: Iterable[Any]) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def problem(self, value: Any) -> str | None:
        """None if ``value`` is one of ``choices``, else the one-line complaint."""
        if value in self.choices:
            return None
        return f"{describe(value)} is not valid; choose one of: {', '.join(str(c) for c in self.choices)}"


@dataclass(frozen=True)
class Excluded:
    """A value the range admits but the option refuses, and why (``reason`` follows the value)."""

    value: Any
    reason: str

    def problem(self, value: Any) -> str | None:
        """The complaint if ``value`` is the excluded value, else None."""
        return f"{describe(value)} {self.reason}" if value == self.value else None


@dataclass(frozen=True)
class Predicate:
    """A rule no range states (a fraction or a count, a duration): ``test(value)`` must hold;
    ``expected`` says what is valid."""

    test: Callable[[Any], bool]
    expected: str

    def problem(self, value: Any) -> str | None:
        """The complaint if ``test(value)`` fails, else None."""
        return None if self.test(value) else f"{describe(value)} is not valid; expected {self.expected}"


#: What may follow the type inside ``Annotated[...]``.
Rule = Range | OneOf | Excluded | Predicate


#: A layer's width or a latent's size: a larger one would not fit in any machine's memory.
UNITS = Range(ge=1, le=2**16)


class ChecksOptions:
    """Base for a class whose options constrain each other (two fractions that must leave training data,
    two save intervals that exclude each other): it declares so by inheriting this and overriding
    :meth:`validate_options`, which the config validator calls before anything is built."""

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], prefix: str) -> None:
        """Raise ``ConfigError`` naming ``<prefix>.<key>`` when ``options`` (the node's values, defaults
        filled in) do not go together."""
