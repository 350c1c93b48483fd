"""Atomic file writes that keep the user's umask, and file errors that name the path and the fix.

:func:`atomic_write_bytes` writes a temporary file in the target's folder, fsyncs it and
renames it over the target (``os.replace``), so a crash leaves the old file or the new one,
never a torn one. :func:`storage_errors` turns an ``OSError`` (permission denied, read-only or
full disk, a file-size limit, a file where a folder belongs) into a
:class:`~collapselab.core.errors.StorageError` whose message names the path and the fix.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import StorageError

__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_text", "storage_errors"]

_FIXES = {
    errno.EACCES: "choose a folder you may write (--out) or fix its permissions",
    errno.EPERM: "choose a folder you may write (--out) or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another folder (--out)",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is exhausted: free some space",
    errno.EFBIG: "the file outgrew the file-size limit: raise it (ulimit -f) or free the file system's limit",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another --out or move the file",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another --out or move the file",
    errno.EISDIR: "a folder stands where a file is needed: move it",
}


@contextmanager
def storage_errors(path: Path | str, action: str = "write") -> Iterator[None]:
    """Inside: an ``OSError`` becomes a :class:`StorageError` naming ``path`` and the fix."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise StorageError(f"cannot {action} {path}: {exc.strerror or exc} ({exc.filename or path} is missing; check the path)") from exc
    except OSError as exc:
        fix = _FIXES.get(exc.errno or -1, "check the path, the permissions and the free space")
        err = StorageError(f"cannot {action} {path}: {exc.strerror or exc} ({fix})")
        err.errno = exc.errno
        raise err from exc


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it; restored on the next line
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A crash leaves the old file or the new one, never a torn one; the file gets the mode a
    plain ``open`` would give (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    with storage_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a crash leaves the old file or the new one, never a torn one."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
