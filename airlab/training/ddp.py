"""DDP started by Lightning from a Hydra app: the ranks it starts run this job, in its run directory.

Lightning's DDP strategy starts ranks 1, 2, ... of a node as new processes that re-run the script with
``sys.argv[1:]`` and the parent's ``hydra.run.dir``. In a single run that is the same run directory.
In a multirun job it is not: the command still holds ``-m`` and the whole sweep, so each child would
run the sweep again (every job, into a sweep directory of its own), and ``hydra.run.dir`` is not the
job's directory. :func:`child_command` gives the children this job's own overrides and its output
directory instead; :func:`install` makes Lightning use it. Under Slurm (``hydra/launcher=slurm``)
Slurm starts every rank itself and none of this applies.
"""

from __future__ import annotations

import sys

import __main__
from airlab.compat.lightning_internals import install_subprocess_command

#: Command-line flags of a Hydra app that take a value and that the children need as they are.
CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")
#: Hydra overrides that belong to the parent's launch (the children run one job in a given directory).
LAUNCH_KEYS = (
    "hydra.run",
    "hydra.sweep",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.mode",
    "hydra.job.name",
    "hydra.job.num",
    "hydra.job.id",
    "hydra.output_subdir",
)


def config_flags(argv: list[str]) -> list[str]:
    """The ``--config-name``/``-cn``, ``--config-path``/``-cp`` and ``--config-dir``/``-cd`` flags of
    ``argv`` with their values; overrides, ``-m`` and every other flag are left out."""
    kept: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in CONFIG_FLAGS:
            kept += [arg, next(args, "")]
        elif arg.startswith(tuple(f"{flag}=" for flag in CONFIG_FLAGS)):
            kept.append(arg)
    return kept


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of the process Lightning starts for ``local_rank``: this
    script with this job's overrides (the user's Hydra overrides too, less those of the launch), in
    this job's output directory, logging to ``train_ddp_process_<rank>.log`` there."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += config_flags(sys.argv[1:])
    command += [o for o in hydra_cfg.overrides.hydra if not _key(o).startswith(LAUNCH_KEYS)]
    command += list(hydra_cfg.overrides.task)
    output_dir = hydra_cfg.runtime.output_dir
    command += [
        f'hydra.run.dir="{output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # the parent wrote .hydra/
    ]
    return command, get_original_cwd()


def install() -> None:
    """Make Lightning's DDP launcher start its processes with :func:`child_command` (idempotent)."""
    install_subprocess_command(child_command)
