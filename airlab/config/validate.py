"""Start-up validation of a composed config, from the signatures of the classes it builds.

Every config node with a ``_target_`` (airlab's classes, a user's own model, data or estimator class
from any module, torch's and Pyro's optimizers, Lightning's trainer, callbacks and loggers) is checked
against that target's constructor before anything is built: each key must be a parameter, of the
parameter's type (pydantic's strict validation of what a YAML value can be: :func:`yaml_type`), and meet
the rules its ``Annotated`` markers state (annotated-types' and airlab's: :mod:`airlab.contracts.options`).
A class that relates several of its options (two fractions that must leave training data) checks them
in a classmethod ``validate_options(options, prefix)``; options of different groups that do not go
together (an estimator the model cannot use, more devices than there are) are checked last
(:mod:`airlab.config.combinations`).

The exceptions, each in one table: YAML keys that are no constructor parameter (:data:`EXTRA_KEYS`),
parameters the builder passes (:data:`BUILD_TIME_ARGUMENTS`), third-party ranges
(:mod:`airlab.config.library`), the top-level keys (:data:`TOP_LEVEL`, :data:`SECTIONS`), ``paths.*``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import annotated_types
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ConfigDict, Strict, TypeAdapter

from airlab.config.combinations import check_devices
from airlab.config.interpolation import interpolation_source
from airlab.config.library import LIBRARY_RULES, OPEN_KEYWORDS
from airlab.contracts.estimator import Estimator, check_estimator_fits_model
from airlab.contracts.model import GenerativeModel
from airlab.contracts.options import ChecksOptions, OneOf, Range, Rule, describe, split_markers
from airlab.errors import ConfigError

#: The top-level keys of every task's config, which no constructor takes.
TOP_LEVEL: dict[str, Any] = {
    "seed": Annotated[int | None, Range(ge=0, le=2**32 - 1)],  # null draws one (train.resolve_seed)
    "task_name": str,
    "ckpt_path": str | None,
    "optimized_metric": str | None,
    "max_consecutive_bad": Annotated[int, Range(ge=1)],  # SVIModule's, passed by airlab.training.build
    "validate_args_steps": Annotated[int, Range(ge=-1)],  # SVIModule's, passed by airlab.training.build
    "tags": list[str] | None,
    "test": bool,
    "resume_sweep": bool,  # airlab.tracking.sweep: skip a sweep's finished jobs, resume the others
    "resume_in_place": bool,  # airlab.resume.checkpoint: with ckpt_path, continue in the run's own folder
}

#: The other top-level keys: the config groups (their nodes are checked below) and the sections a task
#: reads and checks itself before it starts work (``eval``: scripts/evaluate.py, ``report``:
#: scripts/variance_report.py, ``benchmark``: scripts/benchmark.py, ``study``: scripts/study.py,
#: ``compare``: scripts/compare.py).
SECTIONS = (
    "data", "model", "elbo", "optim", "scheduler", "trainer", "logger", "callbacks", "paths",
    "eval", "report", "benchmark", "study", "compare", "hydra",
)  # fmt: skip

#: ``paths.*`` (configs/paths): plain directories, no ``_target_``.
PATHS: dict[str, Any] = {"root_dir": str, "data_dir": str, "log_dir": str, "output_dir": str}

#: Groups whose entries each build one object (a callback, a logger) and so must carry a ``_target_``.
TARGET_LISTS = ("callbacks", "logger")

#: Keys a config node carries beside its ``_target_``'s parameters, by the node's path, each with the
#: class whose signature takes it. ``optim.baseline_lr`` is no optimizer argument: the SVI module gives
#: it to the baselines' parameter group (airlab.training.build.build_optimizer pops it before building
#: the optimizer).
EXTRA_KEYS: dict[str, dict[str, str]] = {"optim": {"baseline_lr": "airlab.training.svi_module.SVIModule"}}

#: Constructor parameters that the builder fills, by the node's path; they are not config keys. The model
#: gets one item's shape of its first input (as ``data_shape`` or ``image_shape``), the optimizer the
#: module's parameter groups, the learning-rate schedule its optimizer.
BUILD_TIME_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "model": ("data_shape", "image_shape"),
    "optim": ("params",),
    "scheduler": ("optimizer",),
}


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword parameter: its type (without the markers), its rules, its default, where declared."""

    name: str
    hint: Any
    rules: tuple[Rule, ...]
    default: Any
    declared_in: str

    @property
    def required(self) -> bool:
        """Whether the option has no default and must be given."""
        return self.default is inspect.Parameter.empty


# -- types -------------------------------------------------------------------------------------------

SEQUENCE_TYPES = (list, tuple, collections.abc.Sequence)
MAPPING_TYPES = (dict, collections.abc.Mapping)
SCALAR_TYPES = (bool, int, float, str, type(None), None)
UNION_TYPES = (typing.Union, types.UnionType)
#: pydantic's strict mode: a bool is no int and a string no number; an int is a float.
STRICT = ConfigDict(strict=True)


def yaml_type(hint: Any) -> Any:
    """The type that plain YAML data must have to fit ``hint``, for pydantic: what no YAML value can be
    (a Path, a Tensor, a class) becomes ``Any`` (the class converts or refuses the value), as does a union
    of only such types or holding ``Any``; a union keeps the members a YAML value can be (``float | Tensor``:
    float; ``timedelta | None``: None); any sequence takes a list or a tuple, any mapping a dict (its keys
    and values unchecked), a ``Literal`` its choices of their own types; markers are left out."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return yaml_type(args[0])
    if origin in UNION_TYPES:
        members = () if Any in args else tuple(m for m in map(yaml_type, args) if m is not Any)
        return typing.Union[members] if members else Any  # noqa: UP007 (a tuple of members)
    if origin is Literal:  # of a choice's type, strictly (pydantic's Literal takes 1 for True), and a choice
        kinds = tuple(dict.fromkeys(type(choice) for choice in args))
        return Annotated[typing.Union[kinds], annotated_types.Predicate(args.__contains__)]  # noqa: UP007
    if hint in SCALAR_TYPES:
        return hint
    if origin is tuple and args and args[-1] is not Ellipsis:  # a list of len(args) values
        return Annotated[tuple[tuple(map(yaml_type, args))], Strict(False)]  # lax for the list only
    if hint in SEQUENCE_TYPES or origin in SEQUENCE_TYPES:
        item = yaml_type(args[0]) if args else Any
        return list[item] | tuple[item, ...]  # strict: a list or a tuple, no str
    if hint in MAPPING_TYPES or origin in MAPPING_TYPES:
        return dict
    return Any


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    """pydantic's strict validator of :func:`yaml_type` of ``hint``, built once per hint."""
    return TypeAdapter(yaml_type(hint), config=STRICT)


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value (plain YAML data) fits ``hint``, by pydantic's strict validation of its
    :func:`yaml_type`: types a YAML value cannot be (a Path, a Tensor) accept anything."""
    try:
        adapter = _adapter(hint)
    except TypeError:  # a hint that cannot be hashed (a marker holding a list): built each time
        adapter = _adapter.__wrapped__(hint)
    return adapter.validator.isinstance_python(value)


def type_name(hint: Any) -> str:
    """``int``, ``float or null``, ``a list of int``: what the error message says is expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return type_name(args[0])
    if origin in UNION_TYPES:  # the members a YAML value can be (float | Tensor: float)
        shown = [m for m in args if yaml_type(m) is not Any] if yaml_type(hint) is not Any else args
        return " or ".join(map(type_name, shown))
    if hint is None or hint is type(None):
        return "null"
    if origin is Literal:
        return "one of: " + ", ".join(str(arg) for arg in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} values"
    if hint in SEQUENCE_TYPES or origin in SEQUENCE_TYPES:
        return f"a list of {type_name(args[0])}" if args else "a list"
    if hint in MAPPING_TYPES or origin in MAPPING_TYPES:
        return "a mapping"
    return hint.__name__ if isinstance(hint, type) else str(hint)


def check_value(key: str, value: Any, hint: Any, rules: tuple[Rule, ...] = ()) -> None:
    """Raise ``ConfigError(key, ...)`` when ``value`` is not of type ``hint`` or breaks a rule."""
    hint, own_rules = split_markers(hint)
    if not matches(value, hint):
        for rule in own_rules:  # of a choice's type but no choice (Literal["a", "b"] given "c"): the choices
            if isinstance(rule, OneOf) and type(value) in map(type, rule.choices) and rule.problem(value):
                raise ConfigError(key, rule.problem(value))
        shown = "null" if value is None else describe(value)
        raise ConfigError(key, f"{shown} has the wrong type; expected {type_name(hint)}")
    if value is None:
        return
    for rule in (*own_rules, *rules):
        # A range bounds each item of a list (layer sizes, Adam's betas); a choice is the whole value.
        items = value if isinstance(rule, Range) and isinstance(value, list | tuple) else [value]
        for item in items:
            problem = rule.problem(item)
            if problem is not None:
                raise ConfigError(key, problem)


# -- signatures --------------------------------------------------------------------------------------


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # a third-party annotation that does not resolve: no types from it
        return {}


@functools.cache
def signature_options(target: Callable) -> dict[str, Option]:
    """The keyword parameters ``target`` takes, following ``**kwargs`` up the class hierarchy (as
    ``super().__init__(**kwargs)`` does)."""
    if not isinstance(target, type):
        owners = [(target, target)]
    else:
        owners = [
            (klass, klass.__dict__["__init__"]) for klass in target.__mro__ if "__init__" in klass.__dict__
        ]
    options: dict[str, Option] = {}
    for owner, function in owners:
        if function is object.__init__:
            break
        hints = _type_hints(owner if dataclasses.is_dataclass(owner) else function)
        passes_on = False
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                passes_on = True
            elif parameter.name != "self" and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                hint, rules = split_markers(hints.get(parameter.name, Any))
                options.setdefault(
                    parameter.name,
                    Option(parameter.name, hint, rules, parameter.default, owner.__module__),
                )
        if not passes_on:
            break
    return options


def options_of(path: str, target: Callable) -> dict[str, Option]:
    """The keys a config node at ``path`` building ``target`` may carry: the constructor's parameters,
    less those the builder passes, plus the node's declared extra keys."""
    injected = BUILD_TIME_ARGUMENTS.get(path, ())
    options = {name: o for name, o in signature_options(target).items() if name not in injected}
    for name, owner in EXTRA_KEYS.get(path, {}).items():
        options[name] = signature_options(get_object(owner))[name]
    return options


# -- nodes -------------------------------------------------------------------------------------------


def _plain(node: Any) -> dict[str, Any]:
    """A node as plain data, interpolations resolved where they can be (a library call may have no
    Hydra run to resolve ``${hydra:...}`` against; such values are then left unchecked)."""
    if not isinstance(node, DictConfig):
        return dict(node)
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:
        raw = OmegaConf.to_container(node, resolve=False)
        return {k: v for k, v in raw.items() if not (isinstance(v, str) and "${" in v)}


def check_node(prefix: str, target: Callable, node: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """Check the keys of ``node`` against ``target``'s signature; returns the plain values (underscored
    keys such as ``_target_`` left out)."""
    values = {str(k): v for k, v in _plain(node).items() if not str(k).startswith("_")}
    options = options_of(prefix, target)
    open_keywords = f"{target.__module__}.{target.__qualname__}" in OPEN_KEYWORDS
    for key, value in values.items():
        option = options.get(key)
        if option is not None and isinstance(value, dict) and "_target_" in value:
            check_nested(f"{prefix}.{key}", value)  # an object argument (trainer.profiler)
            continue
        if option is None:
            if open_keywords:
                continue
            raise ConfigError(f"{prefix}.{key}", f"unknown key; valid keys: {', '.join(options)}")
        if value == "???":  # OmegaConf's mandatory value, left unset
            raise ConfigError(f"{prefix}.{key}", f"must be set ({type_name(option.hint)})")
        rules = option.rules
        # A third-party parameter's rule, by the module declaring it (airlab's subclasses inherit it).
        declared = f"{option.declared_in}."
        library_rules = next((r for m, r in LIBRARY_RULES.items() if declared.startswith(m)), {})
        if key in library_rules:
            rules = (*rules, library_rules[key])
        check_value(f"{prefix}.{key}", value, option.hint, rules)
    for name, option in options.items():
        if option.required and name not in values and not open_keywords:
            raise ConfigError(f"{prefix}.{name}", f"must be set ({type_name(option.hint)})")
    if isinstance(target, type) and issubclass(target, ChecksOptions):  # options that constrain each other
        defaults = {name: o.default for name, o in options.items() if not o.required}
        target.validate_options({**defaults, **values}, prefix)
    return values


def check_nested(key: str, node: dict[str, Any]) -> None:
    """An argument given as a node with its own ``_target_`` (debug=profiler's ``trainer.profiler``):
    its keys are checked against that target's signature."""
    try:
        target = get_object(str(node["_target_"]))
    except Exception as err:
        raise ConfigError(
            f"{key}._target_", f"cannot be imported ({type(err).__name__}); check the name"
        ) from None
    check_node(key, target, node)


def _target_paths(node: Any, path: str = "") -> typing.Iterator[str]:
    """The dotted paths of the nodes with a ``_target_`` in ``node`` (plain, unresolved data)."""
    if not isinstance(node, dict):
        return
    if path and "_target_" in node:
        yield path
        return
    for key, child in node.items():
        yield from _target_paths(child, f"{path}.{key}" if path else str(key))


def check_top_level(cfg: DictConfig) -> None:
    """The top-level keys, ``paths.*``, and the entries of the callback and logger groups."""
    valid = (*TOP_LEVEL, *SECTIONS)
    for key in cfg:
        if str(key) not in valid:
            raise ConfigError(str(key), f"unknown top-level key; valid keys: {', '.join(valid)}")
    for key, hint in TOP_LEVEL.items():
        if key in cfg:
            value = cfg.get(key)
            plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            check_value(key, plain, hint)
    paths = cfg.get("paths")
    if paths is not None:
        for key, value in _plain(paths).items():
            if key not in PATHS:
                raise ConfigError(f"paths.{key}", f"unknown key; valid keys: {', '.join(PATHS)}")
            check_value(f"paths.{key}", value, PATHS[key])
    for group in TARGET_LISTS:
        entries = OmegaConf.to_container(cfg.get(group) or OmegaConf.create(), resolve=False)
        named = [name for name, node in entries.items() if isinstance(node, dict) and "_target_" in node]
        for name, node in entries.items():
            # With no entry to build (callbacks=none), a preset's settings for the removed entries
            # (experiment=air_pyro_tutorial sets callbacks.model_checkpoint.every_n_epochs) are left over.
            if named and node is not None and name not in named:
                raise ConfigError(
                    f"{group}.{name}",
                    f"unknown entry (no _target_ to build); valid entries: {', '.join(named) or 'none'}",
                )


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first bad value of ``cfg``; build nothing."""
    check_top_level(cfg)
    checked: dict[str, tuple[Any, dict[str, Any]]] = {}
    for path in _target_paths(OmegaConf.to_container(cfg, resolve=False)):
        node = OmegaConf.select(cfg, path)
        target_name = str(node.get("_target_"))
        try:
            target = get_object(target_name)
        except Exception as err:
            raise ConfigError(
                f"{path}._target_",
                f"{target_name!r} cannot be imported ({type(err).__name__}); check the name",
            ) from None
        try:
            values = check_node(path, target, node)
        except ConfigError as err:
            source = interpolation_source(cfg, err.key)
            if source is None:
                raise
            because = str(err)[len(err.key) + 2 :]
            raise ConfigError(
                err.key, f"{because} (its value is {source}'s: set {source}, or {err.key})"
            ) from None
        defaults = {n: o.default for n, o in options_of(path, target).items() if not o.required}
        checked[path] = (target, {**defaults, **values})
    check_combinations(checked)


def _subclass(target: Any, base: type) -> bool:
    return isinstance(target, type) and issubclass(target, base)


def check_combinations(checked: Mapping[str, tuple[Any, Mapping[str, Any]]]) -> None:
    """Options of different nodes that do not go together (``checked``: each node's path -> its target
    and its options, defaults filled in); see :mod:`airlab.config.combinations`."""
    model, elbo = checked.get("model"), checked.get("elbo")
    if model and elbo and _subclass(elbo[0], Estimator) and _subclass(model[0], GenerativeModel):
        (estimator, estimator_options), (model_class, model_options) = elbo, model
        option = model_class.baseline_option
        check_estimator_fits_model(
            estimator,
            model_class,
            vectorize_particles=bool(estimator_options.get("vectorize_particles")),
            baseline_kind=model_class.baseline_kind(model_options),
            baseline_value=model_options.get(option) if option else None,
        )
    if "trainer" in checked:
        check_devices(checked["trainer"][1])
