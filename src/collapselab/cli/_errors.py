"""The CLI's one error boundary: every failure ends in one ``error: ...`` line and an exit code.

Exit codes (documented in README, "Exit codes"):

* ``0``: success;
* ``1``: a problem with the inputs, the data, the files or the machine (a
  :class:`~collapselab.core.errors.CollapseLabError`, or an ``OSError`` such as a permission
  denied, a read-only or full disk, a file-size limit), or a claim that failed;
* ``2``: a usage error (unknown option, missing argument, a value out of its range);
* ``70``: an unexpected internal error, a bug (``EX_SOFTWARE`` of ``sysexits.h``);
* ``130``: interrupted (Ctrl-C, ``SIGINT``).

No traceback reaches the user unless ``collapselab --debug ...`` or ``COLLAPSELAB_DEBUG=1``
asks for it; then the traceback is printed before the error line.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

try:  # typer >= 0.20 vendors click as typer._click; older releases use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover (depends on the installed typer)
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from ..core.errors import CollapseLabError

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "cli_errors",
    "click_exceptions",
    "debug_enabled",
    "describe_os_error",
    "set_debug",
    "usage_error",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

_debug = False


def set_debug(flag: bool) -> None:
    """Turn tracebacks on or off for this invocation (the app's ``--debug`` option)."""
    global _debug
    _debug = bool(flag)


def debug_enabled() -> bool:
    """Whether ``--debug`` was given or ``COLLAPSELAB_DEBUG`` is set to a true value."""
    return _debug or os.environ.get("COLLAPSELAB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _say(message: str) -> None:
    typer.echo(f"error: {_one_line(message)}", err=True)


_OS_FIXES = {
    errno.ENOSPC: ("no space left on the device", "free some space or choose another --out"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose another --out"),
    errno.EFBIG: ("the file is larger than the file-size limit (ulimit -f)", "raise the limit or choose another --out"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder with --out"),
    errno.EACCES: ("permission denied", "choose a path you may write to (--out) or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may write to (--out) or change its permissions"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EEXIST: ("the path exists already (as a file)", "choose another path or remove the file"),
    errno.EISDIR: ("the path is a folder, not a file", "give a file name"),
    errno.ENOENT: ("the path does not exist", "check the path"),
    errno.ENAMETOOLONG: ("the file name is too long", "choose a shorter path"),
}


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp")


def _user_path(name: object) -> str:
    """The path the user asked for: an atomic write's temporary file ``.NAME.XXXX.tmp`` is named
    by its target ``NAME`` (same folder)."""
    p = Path(str(name))
    match = _TEMPORARY.fullmatch(p.name)
    return str(p.with_name(match.group("name")) if match else p)


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError`` from a file operation: what failed, on which path, the fix."""
    target = exc.filename2 if exc.filename2 is not None else exc.filename  # a rename: its destination
    where = "" if target is None else _user_path(target)
    what, fix = _OS_FIXES.get(exc.errno or -1, (exc.strerror or type(exc).__name__, "check the path, its permissions and the free disk space"))
    return f"{where + ': ' if where else ''}{what} ({exc.strerror or exc}); {fix}"


def _torch_write_failure(exc: BaseException) -> bool:
    """torch.save's C++ writer reports a failed write (full disk, size limit) as a RuntimeError."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text or "file write failed" in text)


def _traceback() -> None:
    if debug_enabled():
        traceback.print_exc(file=sys.stderr)


def handle(exc: BaseException) -> int:
    """Print the error line for ``exc`` (and the traceback with ``--debug``); return the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        _traceback()
        _say("interrupted (Ctrl-C); a run folder keeps its last checkpoint: continue it with --resume RUN_FOLDER")
        return EXIT_INTERRUPTED
    _traceback()
    if isinstance(exc, CollapseLabError):
        _say(str(exc))
        return EXIT_ERROR
    if isinstance(exc, OSError):
        _say(describe_os_error(exc))
        return EXIT_ERROR
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))):
        _say("out of memory; use a smaller problem (--subset, --batch-size, fewer or narrower layers)")
        return EXIT_ERROR
    if _torch_write_failure(exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _say(f"writing a file failed ({first}); the disk may be full or a file-size limit reached: free space or choose another --out")
        return EXIT_ERROR
    hint = "" if debug_enabled() else "; run again with `collapselab --debug ...` for the traceback"
    _say(f"internal error ({type(exc).__name__}: {exc}); this is a bug in collapselab, please report it with the command line{hint}")
    return EXIT_INTERNAL


def usage_error(exc: click_exceptions.ClickException) -> int:
    """A usage error (Typer/click) as one ``error:`` line naming the option and pointing at ``--help``
    (a command group called without a command prints its help instead)."""
    if isinstance(exc, getattr(click_exceptions, "NoArgsIsHelpError", ())):
        typer.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "collapselab"
    message = f"{message} See `{command} --help`." if message.endswith("?") else f"{message.rstrip('.')}; see `{command} --help`"
    _say(message)
    return EXIT_USAGE if isinstance(exc, click_exceptions.UsageError) else EXIT_ERROR


def cli_errors(func: F) -> F:
    """Wrap a command: every exception becomes one ``error:`` line and its exit code (see the module)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click_exceptions.ClickException):
            raise  # the command's own exit (typer.Exit) and usage errors: the app handles them
        except BaseException as exc:  # noqa: BLE001 (the boundary: everything else ends here)
            if isinstance(exc, SystemExit):
                raise
            raise typer.Exit(handle(exc)) from None

    return wrapper  # type: ignore[return-value]
