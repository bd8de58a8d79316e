"""Option types are checked by pydantic (strict, with YAML's semantics) and ranges may be written with
annotated-types' markers: the same one-line messages as airlab's own ``Range`` and ``OneOf``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import torch
from annotated_types import Ge, Gt, Interval, Le, Lt
from pydantic import TypeAdapter

from airlab.config import check_node
from airlab.config.validate import _adapter, matches, yaml_type
from airlab.contracts.options import Range, split_markers
from airlab.errors import ConfigError


class Tiny:
    """A user's class with the ecosystem's markers (and airlab's, for comparison)."""

    def __init__(
        self,
        rate: Annotated[float, Gt(0)] = 0.1,
        count: Annotated[int, Ge(1)] = 1,
        below: Annotated[float, Lt(1)] = 0.5,
        at_most: Annotated[float, Le(1)] = 0.5,
        fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.5,
        closed: Annotated[float, Interval(ge=0, le=1)] = 0.5,
        mixed: Annotated[float, Gt(0), Le(1)] = 0.5,
        airlab_range: Annotated[float, Range(gt=0, lt=1)] = 0.5,
        sizes: Annotated[Sequence[int], Ge(1)] = (8,),
        optional: Annotated[int, Ge(0)] | None = None,
        kind: Literal["fast", "slow"] = "fast",
        maybe_kind: Literal["fast", "slow"] | None = None,
        flag: bool | Literal["warn"] = False,
        log_model: Literal[True, False, "all"] = False,
        flag_only: bool = False,
        pair: tuple[float, float] = (0.9, 0.999),
        names: list[str] | None = None,
        path: Path = Path("outputs"),
        path_or_name: str | Path | None = None,
        weights: torch.Tensor = torch.zeros(1),  # noqa: B008
        optional_weights: torch.Tensor | None = None,
        lr: float | torch.Tensor = 1e-3,
        anything: Any = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        pass


def check(**values):
    return check_node("tiny", Tiny, values)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rate", 0, "0 is out of range; must be > 0"),
        ("rate", -0.5, "-0.5 is out of range; must be > 0"),
        ("count", 0, "0 is out of range; must be >= 1"),
        ("below", 1.0, "1.0 is out of range; must be < 1"),
        ("at_most", 1.5, "1.5 is out of range; must be <= 1"),
        ("fraction", 1.0, "1.0 is out of range; must be in (0, 1)"),
        ("fraction", 0, "0 is out of range; must be in (0, 1)"),
        ("closed", -0.1, "-0.1 is out of range; must be in [0, 1]"),
        ("mixed", 2, "2 is out of range; must be in (0, 1]"),  # two markers read as one range
        ("airlab_range", 1.0, "1.0 is out of range; must be in (0, 1)"),
        ("fraction", float("nan"), "must be a number, not nan"),
        ("sizes", [8, 0], "0 is out of range; must be >= 1"),  # a range on a list bounds each item
        ("optional", -1, "-1 is out of range; must be >= 0"),  # Annotated[int, Ge(0)] | None
    ],
)
def test_annotated_types_markers_give_the_range_messages(key, value, message):
    with pytest.raises(ConfigError) as err:
        check(**{key: value})
    assert err.value.key == f"tiny.{key}"
    assert str(err.value) == f"tiny.{key}: {message}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("count", True, "True has the wrong type; expected int"),  # a bool is no int
        ("rate", False, "False has the wrong type; expected float"),
        ("flag_only", 1, "1 has the wrong type; expected bool"),
        ("flag_only", "yes", "'yes' has the wrong type; expected bool"),
        ("count", 1.5, "1.5 has the wrong type; expected int"),
        ("rate", "fast", "'fast' has the wrong type; expected float"),
        ("sizes", 8, "8 has the wrong type; expected a list of int"),
        ("sizes", "8", "'8' has the wrong type; expected a list of int"),  # a string is no list
        ("sizes", [8, "a"], "[8, 'a'] has the wrong type; expected a list of int"),
        ("pair", [0.9], "[0.9] has the wrong type; expected a list of 2 values"),
        ("names", ["a", 1], "['a', 1] has the wrong type; expected a list of str or null"),
        ("optional", "abc", "'abc' has the wrong type; expected int or null"),
        ("options", [1], "[1] has the wrong type; expected a mapping or null"),
        ("lr", "abc", "'abc' has the wrong type; expected float"),  # float | Tensor: the float
        ("optional_weights", [1.0], "[1.0] has the wrong type; expected null"),  # Tensor | None: the None
        ("kind", "medium", "'medium' is not valid; choose one of: fast, slow"),
        ("maybe_kind", "medium", "'medium' is not valid; choose one of: fast, slow"),
        ("kind", 3, "3 has the wrong type; expected one of: fast, slow"),
        ("log_model", 1, "1 has the wrong type; expected one of: True, False, all"),  # 1 is no True
        ("flag", "sometimes", "'sometimes' has the wrong type; expected bool or one of: warn"),
    ],
)
def test_wrong_types_are_refused_with_one_line(key, value, message):
    with pytest.raises(ConfigError) as err:
        check(**{key: value})
    assert str(err.value) == f"tiny.{key}: {message}"


def test_yaml_values_of_the_right_type_pass():
    values = check(
        rate=1,  # an int is a float
        mixed=1,
        count=10**12,
        sizes=[1, 2],  # a list for a Sequence
        pair=[0.9, 0.99],  # and for a tuple
        optional=None,
        kind="slow",
        maybe_kind=None,
        flag="warn",
        log_model="all",
        names=["a"],
        path="outputs/run",  # a Path: the class converts the string
        path_or_name="outputs/run",
        weights=[1.0, 2.0],  # a Tensor: the class converts (or refuses) the list
        lr=0.01,
        anything={"a": [1, None]},
        options={"a": 1},
    )
    assert values["path"] == "outputs/run" and values["rate"] == 1
    check(log_model=True, flag=True, pair=(0.5, 0.5), sizes=(3,))  # tuples from a Python caller


def test_path_and_class_typed_options_accept_anything():
    assert matches("outputs/run", Path) and matches(3, Path)
    assert matches("x", torch.Tensor) and matches({"a": 1}, Tiny)
    assert matches("x", Any) and matches([1, "a"], list[Any])
    assert not matches("x", Sequence[Any])  # a string is no list, even of anything


def test_markers_are_read_into_one_range():
    assert split_markers(Annotated[float, Interval(gt=0, lt=1)]) == (float, (Range(gt=0, lt=1),))
    assert split_markers(Annotated[float, Gt(0), Le(1)])[1] == (Range(gt=0, le=1),)
    assert split_markers(Annotated[int, Ge(0)] | None)[1] == (Range(ge=0),)
    # airlab's Range is annotated-types' Interval: pydantic (or any reader of the markers) reads it.
    assert list(Range(ge=1, lt=5)) == [Ge(1), Lt(5)]
    assert TypeAdapter(Annotated[int, Range(ge=1)]).validate_python(3) == 3


def test_adapters_are_built_once_per_hint():
    hint = list[int] | tuple[str, str] | None
    assert matches([1], hint)
    misses = _adapter.cache_info().misses
    assert matches(("a", "b"), hint) and not matches(["a"], hint)
    assert _adapter.cache_info().misses == misses
    # A hint that cannot be hashed (a marker holding a list) is checked all the same, built each time.
    unhashable = Annotated[int, ["a note"]]
    assert matches(3, unhashable) and not matches("3", unhashable)
    assert yaml_type(Annotated[Sequence[Path], Ge(1)]) == list[Any] | tuple[Any, ...]
