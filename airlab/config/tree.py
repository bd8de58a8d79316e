"""The composed config as a rich tree: printed at start-up and saved as ``config_tree.log`` in the run
directory (lightning-hydra-template's ``print_config_tree``), by rank zero only."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

#: The groups shown first, in this order; the other top-level keys follow as composed.
FIRST = ("data", "model", "elbo", "optim", "trainer", "logger", "callbacks", "paths")

#: Where the tree is saved in the run directory.
TREE_FILE = "config_tree.log"


def config_tree(cfg: DictConfig, order: Sequence[str] = FIRST) -> Tree:
    """One branch per top-level group (its YAML, resolved where it resolves); scalars in one branch."""
    tree = Tree("config", style="bold", guide_style="dim")
    keys = [k for k in order if k in cfg] + [str(k) for k in cfg if str(k) not in order]
    scalars = {k: cfg[k] for k in keys if not OmegaConf.is_config(cfg.get(k))}
    for key in keys:
        node = cfg.get(key)
        if not OmegaConf.is_config(node):
            continue
        try:
            text = OmegaConf.to_yaml(node, resolve=True)
        except Exception:  # an interpolation with nothing to resolve it (no Hydra run): as written
            text = OmegaConf.to_yaml(node)
        tree.add(key, style="bold cyan").add(Syntax(text, "yaml", word_wrap=True, background_color="default"))
    if scalars:
        text = OmegaConf.to_yaml(OmegaConf.create(scalars), resolve=True)
        tree.add("top level", style="bold cyan").add(
            Syntax(text, "yaml", word_wrap=True, background_color="default")
        )
    return tree


def print_config_tree(cfg: DictConfig) -> str:
    """Print the tree to stdout (colour on a terminal only); returns it as plain text."""
    tree = config_tree(cfg)
    Console().print(tree)
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=False, no_color=True, width=120).print(tree)
    return buffer.getvalue()


def save_config_tree(text: str, output_dir: str | Path) -> Path:
    """Write the plain tree to ``output_dir/config_tree.log``; returns the path."""
    path = Path(output_dir) / TREE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
