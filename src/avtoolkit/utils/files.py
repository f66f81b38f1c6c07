"""Atomic writes and checksums: nothing half-written is ever left where a reader would find it.

Each write is staged in a hidden folder next to its target, ``.{name}.{tag}.tmp``, holding a ``.lock`` file that
the writing process keeps locked (``flock``) until it is done. The lock tells a staging folder in use from one left
behind by a killed run: the next write of the same target removes the latter, or resumes from it when it was
staged under the same resume key.
"""

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from avtoolkit.errors import UserError

LOCK_FILE = ".lock"
"""The file of a staging folder that its writer keeps locked."""

_UNLOCKED_GRACE_S = 60.0
"""A staging folder without a lock file is only taken for stale after this long (its writer may be creating it)."""

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no staging folder is ever taken for stale
    fcntl = None  # type: ignore[assignment]


def staging_folders(path: str | Path) -> list[Path]:
    """The staging folders of writes of ``path`` (in use or left behind), next to it."""
    target = Path(path)
    return sorted(p for p in target.parent.glob(f".{target.name}.*.tmp") if p.is_dir())


def _try_lock(folder: Path) -> IO[str] | None:
    """Lock ``folder``'s lock file (created if missing) and return it open, or ``None`` when another holds it."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - kept open while the lock is held
    except OSError:  # removed meanwhile, or not writable
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _holder(folder: Path) -> str:
    try:
        pid = (folder / LOCK_FILE).read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid else "another process"


def remove_stale_staging(path: str | Path, keep: Path | None = None) -> list[Path]:
    """Remove the staging folders of ``path`` left behind by killed runs; never one in use. Returns those removed.

    A folder is stale when no process holds its lock (or, without a lock file, when it is older than a minute).
    ``keep`` is left in place even when stale.
    """
    removed = []
    for folder in staging_folders(path):
        if keep is not None and folder == keep:
            continue
        if not (folder / LOCK_FILE).exists():
            try:
                age = time.time() - folder.stat().st_mtime
            except OSError:
                continue
            if fcntl is None or age < _UNLOCKED_GRACE_S:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            continue
        handle = _try_lock(folder)
        if handle is None:
            continue  # in use
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            handle.close()
    return removed


@contextmanager
def atomic_path(path: str | Path, resume_key: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it.

    Works for files and directories: write (or create a directory) at the yielded path. Staging folders that killed
    runs left next to ``path`` are removed first.

    Args:
        path: The file or folder to write.
        resume_key: Make the write resumable: the staging folder is named after this key (which must capture
            everything the content depends on) and is kept when the block is interrupted (``KeyboardInterrupt``,
            ``SystemExit``, or the process killed); the next call with the same key gets it back with what was
            written there. An ordinary exception still deletes it. The yielded path's parent (the staging folder)
            may hold the writer's own bookkeeping files next to it: they are deleted with the folder.

    Raises:
        UserError: Another process is writing ``path`` under the same ``resume_key`` now.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if resume_key is None:
        remove_stale_staging(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        tmp = target.parent / f".{target.name}.{resume_key}.tmp"
        remove_stale_staging(target, keep=tmp)
        tmp.mkdir(exist_ok=True)
    lock = _try_lock(tmp)
    if lock is None and fcntl is not None:
        raise UserError(
            f"{_holder(tmp)} is writing {target} now (staging it in {tmp}): wait for it to finish, or stop it first"
        )
    keep = False
    try:
        if lock is not None:
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()}\n")
            lock.flush()
        tmp_target = tmp / target.name
        try:
            yield tmp_target
        except (KeyboardInterrupt, SystemExit):
            keep = resume_key is not None
            raise
        if not tmp_target.exists():
            raise FileNotFoundError(f"nothing was written at {tmp_target} for {target}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp_target, target)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.close()


def sha256sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
