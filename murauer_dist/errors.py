"""The one base class for errors caused by the user's input or environment.

The CLI catches `UserError` and prints its message as one line (no traceback; `--debug` or
MURAUER_DEBUG=1 shows it). A message names the file, key or value and says what to do. Library
code raises these and never calls sys.exit; anything else is a bug and keeps its traceback.

Faults of the machine (a full disk, a read-only or unwritable folder, a file where a folder is
needed or the reverse, an I/O error) reach the CLI as OSError from wherever the write happened;
`machine_error` turns one (found anywhere in an exception's cause/context chain) into a MachineError
whose message says what happened, to which path, and what to do. Everything else keeps its traceback.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class UserError(Exception):
    """Bad input (a file, a key, a value) or an environment that cannot serve the command."""


class MachineError(UserError):
    """The machine refused a file operation: no space, a read-only or unwritable folder, a file where a
    folder is needed (or the reverse), an I/O error. The message names the path and what to do."""


# errno values that are the machine's or the file system's answer, not a bug of this program.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST,
                            errno.ENOTDIR, errno.EISDIR, errno.EIO, errno.ENAMETOOLONG, errno.ELOOP, errno.EFBIG})
AGAIN = ("what was written before is complete (every file is written whole or not at all), and the same command "
         "run again continues from there")


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def existing_ancestor(path: str | os.PathLike) -> Path:
    """`path` itself, or the nearest of its parents that exists (the current folder at the end)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def file_ancestor(path: str | os.PathLike) -> Path | None:
    """The first parent of `path` that exists and is not a folder (so nothing can be made below it)."""
    for parent in reversed(Path(os.path.abspath(path)).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def free_space(path: str | os.PathLike) -> str:
    """'X free in FOLDER' for the nearest existing folder of `path` ('' when it cannot be measured)."""
    folder = existing_ancestor(path)
    folder = folder if folder.is_dir() else folder.parent
    try:
        return f"{size_text(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        return ""


def with_path(err: OSError, path: str | os.PathLike) -> OSError:
    """The same OSError naming `path` (a write to an open file raises one without a file name; a failed
    temp file names the temp file, not the file the user asked for)."""
    named = type(err)(err.errno, err.strerror or os.strerror(err.errno or 0), str(path))
    named.__cause__ = err.__cause__
    named.__context__ = err.__context__
    named.__traceback__ = err.__traceback__
    return named


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def describe_os_error(err: OSError) -> str:
    """One line: what the machine refused, for which path, and what to do."""
    path = err.filename2 if err.errno == errno.EISDIR and err.filename2 else err.filename
    where = str(path) if path not in (None, "") else "a file of this command (the system did not say which)"
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if code == errno.ENOSPC else "the disk quota is exhausted"
        free = free_space(path) if path else ""
        return (f"{what} writing {where}{f' ({free})' if free else ''}: free some space or write to a larger disk; "
                f"{AGAIN}")
    if code == errno.EROFS:
        return (f"cannot write {where}: {existing_ancestor(path) if path else 'its folder'} is on a read-only file "
                "system; choose an output on a writable disk")
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied for {where} (this user may not read or write it there); choose a folder you "
                "may write to, or fix its permissions")
    if code == errno.EEXIST and path and Path(path).exists() and not Path(path).is_dir():
        return (f"{where} is a file, but a folder is needed there: remove or rename the file, or choose another "
                "output folder")
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_ancestor(path) if path else None
        if blocker is None and path and Path(path).exists() and not Path(path).is_dir():
            blocker = Path(path)
        if blocker is not None:
            return (f"{where}: {blocker} is a file, not a folder, so nothing can be made inside it: remove or rename "
                    "it, or choose another output folder")
        return f"{where}: {err.strerror}; choose another output folder"
    if code == errno.EISDIR:
        return f"{where} is a folder, but a file is needed there: give a file name (a path inside it, e.g.)"
    if code == errno.EIO:
        return (f"input/output error on {where}: the disk or network file system failed (see `dmesg`); check it, "
                f"then run the same command again; {AGAIN}")
    if code == errno.ELOOP:
        return f"{where}: a symbolic link that loops (it points back to itself); replace it with the file or folder"
    if code == errno.ENAMETOOLONG:
        return f"{where}: the path is too long for the file system; choose a shorter output path"
    if code == errno.EFBIG:
        return (f"{where}: the file is too large for the file system or for this process's file size limit "
                f"(ulimit -f); write to another file system or raise the limit")
    return f"{where}: {err.strerror}"


def machine_error(err: BaseException) -> MachineError | None:
    """The MachineError behind `err` (itself, or an OSError of MACHINE_ERRNOS in its cause/context chain);
    None when `err` is something else (a bug keeps its traceback)."""
    for item in _chain(err):
        if isinstance(item, MachineError):
            return item
        if isinstance(item, OSError) and item.errno in MACHINE_ERRNOS:
            fault = MachineError(describe_os_error(item))
            fault.__cause__ = err
            return fault
    return None
