"""One run folder as a Python object (``airlab.load_run``): config, metrics, scalar history, checkpoints,
the model rebuilt from its checkpoint, a Pyro ``Predictive`` over it, and its pictures.

Everything is read from the folder on each access (a run that is still training shows its latest
state), except the rebuilt model, which is kept per checkpoint file until that file changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig, ListConfig, OmegaConf
from pyro import poutine
from pyro.infer import Predictive

from airlab.contracts.model import GenerativeModel
from airlab.errors import AirlabError, CheckpointError, ConfigError
from airlab.resume.checkpoint import load_checkpoint, load_model_weights
from airlab.resume.training_state import CONFIG_KEY
from airlab.training.build import build_datamodule, build_model

#: The columns of :attr:`Run.history`.
HISTORY_COLUMNS = ("step", "tag", "value", "wall_time")
#: Folders of a run that belong to a logger: their PNGs (TensorBoard's projector sprite) are not pictures.
LOGGER_FOLDERS = frozenset({"tensorboard", "wandb", "mlruns", "mlartifacts"})
#: ``${hydra:runtime.output_dir}`` and the like in a saved config: Hydra's resolver, absent in a notebook.
HYDRA_INTERPOLATION = re.compile(r"\$\{hydra:([\w.]+)\}")

Which = Literal["last", "best"]


def _hydra_value(path: str, hydra: DictConfig | None, run_dir: Path) -> Any:
    """The value of ``${hydra:<path>}`` for the run: from its ``.hydra/hydra.yaml``, else (for the run
    directory itself) ``run_dir``; None when neither knows it."""
    found = OmegaConf.select(hydra, path, default=None) if hydra is not None else None
    if found is None and path == "runtime.output_dir":
        return str(run_dir)
    return found


def _substitute_hydra(value: Any, hydra: DictConfig | None, run_dir: Path) -> Any:
    """``value`` (a plain container of the saved config) with the ``${hydra:...}`` interpolations that
    the run's Hydra config answers replaced by their values."""
    if isinstance(value, dict):
        return {k: _substitute_hydra(v, hydra, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_hydra(v, hydra, run_dir) for v in value]
    if not isinstance(value, str) or "${hydra:" not in value:
        return value
    whole = HYDRA_INTERPOLATION.fullmatch(value)
    if whole is not None:
        found = _hydra_value(whole.group(1), hydra, run_dir)
        return value if found is None else found

    def replace(match: re.Match[str]) -> str:
        found = _hydra_value(match.group(1), hydra, run_dir)
        return match.group(0) if found is None else str(found)

    return HYDRA_INTERPOLATION.sub(replace, value)


def _resolved(node: Any) -> Any:
    """``node`` as plain Python, each interpolation resolved where it resolves and kept as written where it
    does not (an environment variable of the machine that trained it, a ``???``)."""
    if not isinstance(node, DictConfig | ListConfig):
        return node
    raw = OmegaConf.to_container(node, resolve=False)
    keys = range(len(node)) if isinstance(node, ListConfig) else list(raw)
    plain = [None] * len(node) if isinstance(node, ListConfig) else {}
    for key in keys:
        try:
            plain[key] = _resolved(node[key])
        except Exception:  # omegaconf's resolution errors have no common base beyond Exception
            plain[key] = raw[key]
    return plain


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the block in ``path``, then return to the current directory."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The composed config of the run in ``run_dir`` (``.hydra/config.yaml``) as a plain dict, resolved
    as far as it resolves outside Hydra (``${hydra:...}`` from ``.hydra/hydra.yaml``)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError("load_run", f"{path}: not found (Hydra writes it when a run starts)")
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    hydra = OmegaConf.load(hydra_file).get("hydra") if hydra_file.is_file() else None
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return _resolved(OmegaConf.create(_substitute_hydra(raw, hydra, run_dir)))


def tensorboard_history(folder: Path) -> pd.DataFrame:
    """Every scalar of the TensorBoard event files under ``folder``, in the order written (wall time)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # a line per event file otherwise
    rows = []
    for directory in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            rows += [(e.step, tag, e.value, e.wall_time) for e in events.Scalars(tag)]
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.sort_values("wall_time", kind="stable")


def csv_history(files: list[Path]) -> pd.DataFrame:
    """Every scalar of CSVLogger ``metrics.csv`` files (one column per tag, a row per logging call), in
    the order written; they record no wall time (NaN)."""
    frames = []
    for path in files:
        table = pd.read_csv(path)
        tags = [c for c in table.columns if c != "step"]
        long = table.melt(
            id_vars=["step"], value_vars=tags, var_name="tag", value_name="value", ignore_index=False
        )
        long = long.dropna(subset=["value"]).rename_axis("row").sort_values("row", kind="stable")
        frames.append(long.reset_index(drop=True))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "tag", "value"])
    frame["wall_time"] = float("nan")
    return frame[list(HISTORY_COLUMNS)]


def tidy_history(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows in the order written) with one row per (tag, step), the last written (a resumed
    run logs its steps again), sorted by tag and step."""
    frame = frame.drop_duplicates(["tag", "step"], keep="last")
    frame = frame.astype({"step": "int64", "tag": "str", "value": "float64", "wall_time": "float64"})
    return frame.sort_values(["tag", "step"], kind="stable").reset_index(drop=True)


@dataclass
class Run:
    """A run folder. ``config``, ``metrics``, ``history`` and ``pictures`` read it on each access;
    ``checkpoint``, ``model`` and ``predictive`` take ``"last"`` or ``"best"``."""

    path: Path
    _models: dict[tuple[str, int], GenerativeModel] = field(default_factory=dict, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        """The run's composed config (``.hydra/config.yaml``), a plain dict (see :func:`run_config`)."""
        return run_config(self.path)

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json``: what it logged last (written when the run ends)."""
        path = self.path / "metrics.json"
        if not path.is_file():
            raise ConfigError("load_run", f"{path}: not found (the run failed or is still running)")
        return json.loads(path.read_text())

    @property
    def history(self) -> pd.DataFrame:
        """Every logged scalar: columns ``step``, ``tag``, ``value``, ``wall_time`` (seconds since the
        epoch; NaN from CSV), sorted by tag and step, one row per (tag, step) (the last written). Read from
        ``tensorboard/``'s event files, else from the CSV logger's ``metrics.csv``; empty without either."""
        if any((self.path / "tensorboard").rglob("events.out.tfevents.*")):
            return tidy_history(tensorboard_history(self.path / "tensorboard"))
        return tidy_history(csv_history(sorted(self.path.rglob("metrics.csv"))))

    @property
    def pictures(self) -> list[Path]:
        """The PNG pictures the run wrote (sorted), without the loggers' own files."""
        found = self.path.rglob("*.png")
        return sorted(p for p in found if not LOGGER_FOLDERS & set(p.relative_to(self.path).parts[:-1]))

    def checkpoint(self, which: Which = "last") -> Path:
        """``checkpoints/last.ckpt``, or the best checkpoint: the one the ModelCheckpoint recorded as
        ``best_model_path`` in ``last.ckpt``, else the newest other ``.ckpt``. One line if there is none."""
        folder = self.path / "checkpoints"
        last = folder / "last.ckpt"
        if which == "last":
            if not last.is_file():
                raise CheckpointError(f"load_run: {last}: not found (the run saved no checkpoint yet)")
            return last
        if which != "best":
            raise ConfigError("checkpoint", f"{which!r}: pass 'last' or 'best'")
        others = [p for p in folder.glob("*.ckpt") if not p.name.startswith("last")]
        recorded = _recorded_best(last) if last.is_file() else None
        if recorded is not None and (folder / recorded).is_file():
            return folder / recorded
        if not others:
            raise CheckpointError(f"load_run: {folder}: no best checkpoint (no .ckpt besides last.ckpt)")
        return max(others, key=lambda p: (p.stat().st_mtime_ns, p.name))

    @property
    def launch_dir(self) -> Path:
        """The folder the run's command was started in (Hydra's ``runtime.cwd``; else the current one):
        the config's relative paths (``data.data_dir``) are relative to it."""
        hydra_file = self.path / ".hydra" / "hydra.yaml"
        hydra = OmegaConf.load(hydra_file).get("hydra") if hydra_file.is_file() else None
        found = OmegaConf.select(hydra, "runtime.cwd", default=None) if hydra is not None else None
        return Path(found) if found else Path.cwd()

    def datamodule(self, which: Which = "last") -> pl.LightningDataModule:
        """The data the checkpoint was trained on, built from its config (``data`` as trained, so
        ``data.data_dir`` must still hold it) and set up for fitting, its relative paths read from
        :attr:`launch_dir` as when it trained."""
        data = build_datamodule(OmegaConf.create(load_checkpoint(self.checkpoint(which))[CONFIG_KEY]))
        with working_directory(self.launch_dir):
            data.setup("fit")
        return data

    def model(
        self, which: Which = "last", datamodule: pl.LightningDataModule | None = None
    ) -> GenerativeModel:
        """The model of the checkpoint, rebuilt from the config it holds (as ``scripts/evaluate.py`` does),
        its weights loaded safely (``weights_only=True``), in eval mode, on the CPU. The data's shapes
        come from ``datamodule`` (default: :meth:`datamodule`). Built once per checkpoint file."""
        path = self.checkpoint(which)
        key = (str(path), path.stat().st_mtime_ns)
        if key not in self._models:
            checkpoint = load_checkpoint(path)
            cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
            data = build_datamodule(cfg) if datamodule is None else datamodule
            with working_directory(self.launch_dir):  # the data's shapes, read as when it trained
                model = build_model(cfg.model, data)
            load_model_weights(model, checkpoint, cfg, str(path))  # refuses another class or shapes
            self._models[key] = model
        return self._models[key].eval()

    def predictive(
        self,
        num_samples: int,
        posterior: bool = True,
        which: Which = "last",
        resample_observed: bool = True,
        return_sites: tuple[str, ...] = (),
        parallel: bool = False,
    ) -> Predictive:
        """A ``pyro.infer.Predictive`` over :meth:`model`; call it with the model's inputs
        (``predictive(images)``) for a dict of draws, ``num_samples`` first.

        ``posterior=True`` draws the latents from the guide given the inputs (the posterior predictive),
        ``False`` from the prior (the inputs then give only the batch's size and shape). With
        ``resample_observed`` the observed sites are drawn anew (``poutine.uncondition``), else they are
        the inputs repeated. ``return_sites`` and ``parallel`` are Predictive's."""
        model = self.model(which)
        story = poutine.uncondition(model.model) if resample_observed else model.model
        return Predictive(
            story,
            guide=model.guide if posterior else None,
            num_samples=num_samples,
            return_sites=return_sites,
            parallel=parallel,
        )


def _recorded_best(last: Path) -> str | None:
    """The file name of the ``best_model_path`` a ModelCheckpoint recorded in ``last``, or None."""
    try:
        states = load_checkpoint(last).get("callbacks") or {}
    except AirlabError:  # an unreadable last.ckpt: the newest file decides
        return None
    for state in states.values():
        if isinstance(state, dict) and state.get("best_model_path"):
            return Path(str(state["best_model_path"])).name
    return None


def load_run(path: str | Path) -> Run:
    """The run in folder ``path`` (``outputs/<task>/<date>/<time>/``, or a sweep's ``<job>/``); one line
    naming it when it is no run folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError("load_run", f"{path}: no such run folder")
    markers = (path / ".hydra" / "config.yaml", path / "metrics.json", path / "checkpoints")
    if not any(m.exists() for m in markers):
        raise ConfigError(
            "load_run", f"{path}: not a run folder (no .hydra/config.yaml, metrics.json or checkpoints/)"
        )
    return Run(path)
