"""Storage faults: a write that fails for want of storage is one line naming the path and the free space.

A full disk (ENOSPC), an exhausted quota (EDQUOT), a read-only file system (EROFS) or a failing device
(EIO) is neither a bug of the harness nor a result of the episode it interrupts: it is an infrastructure
failure (:class:`~harness.errors.StorageError`), so the episode is played again when the run is rerun,
in a roomier place or after space is freed, and the CLI prints one line (exit code 1) instead of a
traceback. Each store turns the fault into that error at one place, with :func:`guarded`:

* a run directory: :func:`harness.trajectory.append_line` and :func:`~harness.trajectory.write_json_atomic`
  (every line and JSON file of the store), and :meth:`~harness.trajectory.RunStore.open`;
* the MLflow store: :func:`harness.tracking._scope`, around everything logged;
* the Optuna study: :func:`harness.tuning.tune`, around the optimisation.

SQLite reports a full disk in its own words (``database or disk is full``) rather than as an errno;
:func:`fault_of` reads both. A store that is a file created in many steps (the MLflow store's and the
Optuna study's SQLite databases, each a schema migration long) is created by :func:`create_atomically`:
whole or not at all, so a rerun after a failed creation starts afresh instead of tripping over half a schema.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import StorageError
from harness.procfs import alive

# errno -> what the one line calls it
STORAGE_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "I/O error",
}
# SQLite's messages for the same faults (SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY)
SQLITE_MESSAGES = {
    "database or disk is full": "disk full",
    "disk i/o error": "I/O error",
    "attempt to write a readonly database": "read-only file system",
}


def free_bytes(path: Path | str) -> int | None:
    """The bytes an unprivileged writer may still use on the file system holding ``path`` (or its nearest
    existing parent); None if that cannot be told."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        stat = os.statvfs(where)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def size_text(n: int) -> str:
    """``n`` bytes as a person reads them: ``512 B``, ``12 KiB``, ``3.5 GiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{n} B"
    return f"{value:.0f} {units[unit]}" if value >= 10 else f"{value:.1f} {units[unit]}"


def fault_of(exc: BaseException) -> str | None:
    """What storage fault ``exc`` (or an exception it was raised from) is, or None if it is none."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return STORAGE_ERRNOS[current.errno]
        text = str(current).lower()
        for message, what in SQLITE_MESSAGES.items():
            if message in text:
                return what
        stack += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return None


def storage_error(what: str, path: Path | str) -> StorageError:
    """The one line of a storage fault: ``disk full writing /x/y (12 KiB free)``."""
    free = free_bytes(path)
    shown = "free space unknown" if free is None else f"{size_text(free)} free"
    return StorageError(f"{what} writing {path} ({shown})")


@contextmanager
def guarded(path: Path | str) -> Iterator[None]:
    """Writes to ``path`` (a file, or a store's directory) whose storage faults become a
    :class:`~harness.errors.StorageError` naming the file (the one the fault names, else ``path``);
    every other exception passes unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        what = fault_of(exc)
        if what is None:
            raise
        named = exc.filename if isinstance(exc, OSError) and exc.filename else path
        raise storage_error(what, named) from exc


# A creation that fails with less free than this was stopped by the disk: a schema migration that met a
# full disk may go on to fail on a statement after the one the disk refused, with a message of its own.
NEARLY_FULL = 1 << 20
SQLITE_SIDE_FILES = ("", "-journal", "-wal", "-shm")  # a database file and what SQLite keeps beside it
CREATING = ".creating-"  # the infix of a file being created: ``.<name>.creating-<pid>-<attempt>``


def _remove(path: Path) -> None:
    for side in SQLITE_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{side}").unlink()


def create_atomically(path: Path, create: Callable[[Path], None]) -> None:
    """Create the SQLite database ``path`` whole or not at all, unless it exists.

    ``create(tmp)`` builds it under a temporary name in the same directory (and closes it); the
    finished file is then linked into place, which fails rather than replaces if another process got
    there first. What a failed or killed creation left (temporaries of processes no longer alive) is
    removed first, so a rerun needs no cleanup by hand.
    """
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}{CREATING}"
    for stale in path.parent.glob(f"{prefix}*"):
        pid, _, rest = stale.name.removeprefix(prefix).partition("-")
        if pid.isdigit() and not alive(int(pid)):
            _remove(path.parent / f"{prefix}{pid}-{rest.split('-')[0]}")
    # A fresh name per attempt: a library may keep a connection to an earlier attempt's file open.
    tmp = path.parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with guarded(path):
            try:
                create(tmp)
            except Exception as exc:
                free = free_bytes(path.parent)
                if fault_of(exc) is None and free is not None and free < NEARLY_FULL:
                    raise storage_error("disk full", path) from exc
                raise
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it meanwhile: theirs is as good
    finally:
        _remove(tmp)
