"""User-facing errors.

An ``AirlabError`` is a user mistake (a bad config value, a missing data file, a checkpoint that does
not fit). The scripts print it as one line on stderr, ``airlab error: <key>: <message>``, and exit with
code 2, without a traceback unless ``HYDRA_FULL_ERROR=1``.

Hydra's own errors (an unknown group option such as ``model=foo``, a malformed override, an unknown key
given without ``+``) happen before any airlab code runs. :func:`run_hydra_app` has Hydra raise them
instead of printing its multi-line report, and prints them the same way: one line, exit code 2.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2
#: Hydra raises (instead of reporting) its errors while this variable is "1".
FULL_ERROR = "HYDRA_FULL_ERROR"
#: Set by :func:`run_hydra_app` while it, not the user, has set ``HYDRA_FULL_ERROR``.
STARTUP_MARKER = "AIRLAB_REPORTS_HYDRA_ERRORS"
OVERRIDE_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


class AirlabError(Exception):
    """A mistake the user can fix; the message is one line that names the key or file."""


class ConfigError(AirlabError):
    """A bad config value; the message starts with the dotted ``key`` to change."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class DataError(AirlabError):
    """Data that are missing, unreadable or do not fit the config."""

    pass


class CheckpointError(AirlabError):
    """A checkpoint that cannot be read or does not fit the configured model."""

    pass


class OutputError(AirlabError):
    """A file that cannot be written: a full disk, a read-only or forbidden folder."""

    pass


#: The ``OSError`` numbers of a place that cannot be written (full, read-only, forbidden, over quota).
UNWRITABLE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def unwritable(err: BaseException) -> str | None:
    """``<path>: cannot write (No space left on device); ...`` for an error of an unwritable place, found
    in ``err`` or its causes; None for any other error."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in UNWRITABLE:
            where = seen.filename or "the output folder"
            return (
                f"{where}: cannot write ({seen.strerror or 'error ' + str(seen.errno)}); free space there "
                "or point paths.root_dir (AIRLAB_ROOT) at a writable folder; the last checkpoint already on "
                "disk is intact"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _print_and_exit(message: str) -> None:
    message = " ".join(message.split())  # one line, whatever the message held
    print(f"airlab error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def _restore_hydra_reporting() -> None:
    """Give Hydra back its own reporting once the task runs: an unexpected error in the task is a bug,
    and Hydra prints its (trimmed) traceback as usual."""
    if os.environ.pop(STARTUP_MARKER, None) is not None:
        os.environ.pop(FULL_ERROR, None)


def report_user_errors(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn``; turn an ``AirlabError`` into one line on stderr and exit code 2."""
    _restore_hydra_reporting()
    try:
        return fn(*args, **kwargs)
    except AirlabError as err:
        if os.environ.get(FULL_ERROR) == "1":
            raise
        _print_and_exit(str(err))
        raise  # not reached: _print_and_exit exits


def hydra_error_line(err: Exception) -> str:
    """``<key>: <message>`` for an error Hydra or OmegaConf raised while composing the config."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        valid = ", ".join(sorted(err.options))
        return f"{group}: {option!r} is not an option of the {group} group; choose one of: {valid}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, OverrideParseException):
        detail = "; ".join(line for line in lines if not line.startswith(("Error parsing", "See http")))
        return (
            f"{err.override}: malformed override ({detail}); write key=value, +key=value to add a key "
            f"or ~key to remove one ({OVERRIDE_GRAMMAR})"
        )
    cause = err.__cause__
    full_key = cause.full_key if isinstance(cause, OmegaConfBaseException) else None
    if full_key and "not in struct" in str(cause):
        parent = cause.parent_node
        keys = [str(k) for k in parent if not str(k).startswith("_")] if parent is not None else []
        valid = f"; valid keys: {', '.join(keys)}" if keys else ""
        return f"{full_key}: unknown key{valid}"
    # Anything else: its own text, without Hydra's search path and hint lines.
    kept = []
    for line in lines:
        if line.startswith(("Config search path", "Set the environment variable")):
            break
        kept.append(line)
    return f"command line: {' '.join(kept) or type(err).__name__}"


def run_hydra_app(main: Callable[[], T]) -> T:
    """Run a ``@hydra.main`` function so that Hydra's own errors end as one line and exit code 2.

    Hydra reports a composition error itself (several lines, exit code 1) unless ``HYDRA_FULL_ERROR=1``,
    when it raises it. This sets that documented variable for the start-up only, prints what Hydra
    raises as ``airlab error: <key>: <message>``, and lets :func:`report_user_errors` unset it as soon as
    the task starts. A user who sets ``HYDRA_FULL_ERROR=1`` gets Hydra's full traceback, as before.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get(FULL_ERROR) == "1":
        return main()
    os.environ[FULL_ERROR], os.environ[STARTUP_MARKER] = "1", "1"
    try:
        return main()
    except (HydraException, OmegaConfBaseException) as err:
        if STARTUP_MARKER not in os.environ:
            raise  # raised by the task: not a start-up error
        _print_and_exit(hydra_error_line(err))
        raise  # not reached: _print_and_exit exits
    except OSError as err:  # Hydra making the run directory in a read-only or full place
        line = unwritable(err)
        if line is None:
            raise
        _print_and_exit(line)
        raise  # not reached: _print_and_exit exits
    finally:
        _restore_hydra_reporting()
