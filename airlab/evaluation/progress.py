"""Rich progress bars for the long evaluation loops (a no-op when switched off)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yields ``advance()``; with ``total=None`` the bar is a spinner with the elapsed time."""
    if not enabled:
        yield lambda: None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns += [MofNCompleteColumn(), TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
