"""Composing configs with Hydra from inside a task: the same search path as the running app.

Tasks that need another config (the benchmark's AIR runs, the variance report's estimator options) ask
Hydra, never read YAML files themselves, so that ``hydra.searchpath`` and config groups added by users
apply as they do on the command line.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from airlab import CONFIG_DIR
from airlab.errors import ConfigError


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """``configs/<config_name>.yaml`` with ``overrides``, as the script of that name would compose it:
    inside a Hydra app with the app's search path, else with the repository's ``configs/``."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def group_options(group: str) -> list[str]:
    """The options Hydra knows for config ``group`` (e.g. ``elbo``: trace, tracegraph, ...)."""
    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def compose_group_option(config_name: str, group: str, option: str, key: str) -> DictConfig:
    """The node that ``<group>=<option>`` gives ``config_name``; an unknown option is refused, naming
    ``key``."""
    try:
        return compose_config(config_name, [f"{group}={option}"])[group]
    except MissingConfigException:
        raise ConfigError(
            key, f"{option!r} is not valid; choose one of: {', '.join(group_options(group))}"
        ) from None
