"""User-facing errors.

An ``AirlabError`` is a user mistake (a bad config value, a missing data file, a checkpoint that does
not fit). The scripts print it as one line on stderr and exit with a non-zero code, without a
traceback unless ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


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


def report_user_errors(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn``; turn an ``AirlabError`` into one line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except AirlabError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"airlab error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
