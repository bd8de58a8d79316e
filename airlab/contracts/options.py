"""Markers that put an option's valid values into the signature that takes it.

A constructor built from the config states each option once, with its type, default and rule::

    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1
    baseline: Annotated[str, OneOf(BASELINES)] = "nvil"
    encoder_hidden: Annotated[Sequence[int], Range(ge=1)] = (200,)  # every layer size

Bounds are annotated-types' (the vocabulary pydantic and the rest of the ecosystem read): ``Range`` is its
``Interval`` with the one-line complaint, and a class may as well write ``Annotated[float, Gt(0)]``,
``Ge``, ``Le``, ``Lt`` or ``Interval(gt=0, lt=1)``, and ``Literal["a", "b"]`` for choices (``OneOf`` for
choices held in a tuple). :func:`airlab.config.validate.validate_config` reads these markers before
anything is built. The markers know nothing of the config; modules under ``airlab/data`` and
``airlab/models`` import them, never the other way round.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, Le, Lt


def describe(value: Any) -> str:
    """A value as the one-line errors quote it: strings quoted, numbers and lists as written."""
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class Range(Interval):
    """A number's bounds (``ge``/``gt`` below, ``le``/``lt`` above); on a list, each item's bounds.
    annotated-types' ``Interval``, so any reader of those markers (pydantic) reads it too."""

    @classmethod
    def of(cls, markers: Iterable[Any]) -> Range | None:
        """The bounds that annotated-types markers state (``Gt(0)``, ``Le(1)``, ``Interval(gt=0, lt=1)``,
        a ``Range``), as one Range; None when they state none."""
        bounds: dict[str, Any] = {}
        for marker in markers:
            for bound in marker if isinstance(marker, Interval) else (marker,):  # an Interval is its bounds
                if isinstance(bound, Gt | Ge | Lt | Le):
                    bounds.update(dataclasses.asdict(bound))
        return cls(**bounds) if bounds else None

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
    """The values a string option may take: ``Literal[...]``'s choices, where they are held in a tuple."""

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


#: What may follow the type inside ``Annotated[...]`` (annotated-types' bounds become one Range).
Rule = Range | OneOf | Excluded | Predicate


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def split_markers(hint: Any) -> tuple[Any, tuple[Rule, ...]]:
    """``Annotated[T, markers...]`` (or that ``| None``) -> ``(T, rules)``: annotated-types' bounds
    (``Gt``, ``Ge``, ``Lt``, ``Le``, ``Interval``, a ``Range``) as one Range, then airlab's other markers;
    choices that are the whole type (``Literal["a", "b"] | None``, not ``bool | Literal["link"]``) as a
    ``OneOf`` first."""
    markers: tuple[Any, ...] = ()
    inner = [member for member in _members(hint) if member is not type(None)]
    if typing.get_origin(hint) is Annotated:
        markers, hint = hint.__metadata__, typing.get_args(hint)[0]
    elif len(inner) == 1 < len(_members(hint)) and typing.get_origin(inner[0]) is Annotated:  # T | None
        markers, hint = inner[0].__metadata__, typing.Optional[typing.get_args(inner[0])[0]]  # noqa: UP045
    bounds = Range.of(markers)
    rules = [
        *([bounds] if bounds else []),
        *(m for m in markers if isinstance(m, OneOf | Excluded | Predicate)),
    ]
    literals = [member for member in _members(hint) if member is not type(None)]
    if literals and all(typing.get_origin(member) is Literal for member in literals):
        rules.insert(0, OneOf(choice for member in literals for choice in typing.get_args(member)))
    return hint, tuple(rules)


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
