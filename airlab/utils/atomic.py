"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Every helper writes to a temporary file in the target's own directory (so the rename stays on one
file system), flushes it to disk with ``fsync``, then ``os.replace``-s it over the target and syncs the
directory. If the writer raises (or the process dies) before the rename, the target is untouched and
the temporary file is removed (after a crash a hidden ``.<name>.*.tmp`` may be left behind).

Use whichever fits the writer::

    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics))
    atomic_write_bytes(path, payload)
    with atomic_open(sweep_dir / "summary.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with atomic_path(ckpt_path) as tmp:  # for writers that want a path (torch.save, np.savez)
        torch.save(state, tmp)

The new file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` less the umask),
not ``tempfile``'s private ``0o600``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_path(path: Path, directory: bool = False) -> None:
    """Flush ``path``'s data (or a directory's entries) to disk; a directory sync is best effort."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory and os.name == "posix" else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some systems (and Windows) cannot open a directory
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, the file written
    there is fsync-ed and renamed over ``path`` (creating the parent directory first if needed).

    If the block raises, the temporary file is deleted and ``path`` keeps its old content (or stays
    absent). The block must write the file at the yielded path itself (and close it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_path(target.parent, directory=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode, **kwargs)`` that writes a temporary file and renames it over ``path`` on success.

    ``mode`` must be a write mode (``"w"`` or ``"wb"``); ``kwargs`` go to :func:`open` (``encoding``,
    ``newline``). The handle is closed before the rename.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes a whole new file; mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_path`)."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
