"""What a path is, in words, and output paths checked before any work.

`what_is(path)` says what is (or is not) at a path: a folder, an empty file, a text file, a ZIP
archive, a broken or looping symbolic link, a path below a file ... so that an error names the
thing it found instead of "does not exist" or "holds Python objects".

`output_folder(path, what)` and `output_file(path, what)` check, before a command starts its work,
that its output can be written there: not a file where a folder is needed (or the reverse), no file
among the parents, and a folder that this user may write to on a writable file system. They create
nothing; an OutputPathError names the option (`what`), the path and what to do.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from murauer_dist.errors import UserError, existing_ancestor, file_ancestor

_MAGIC = ((b"PK\x03\x04", "a ZIP archive (a torch checkpoint is one)"), (b"\x1f\x8b", "a gzip file"),
          (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\x93NUMPY", "a numpy .npy file"),
          (b"\x80", "a Python pickle"), (b"%PDF", "a PDF file"), (b"\x7fELF", "an executable"))


class OutputPathError(UserError):
    """An output path that cannot be written: a file where a folder is needed or the reverse, a read-only or
    unwritable folder."""


def _link_problem(path: Path) -> str | None:
    if not path.is_symlink():
        return None
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    try:
        path.resolve(strict=True)
    except RuntimeError:                                        # Python < 3.13: a loop is a RuntimeError
        return f"is a symbolic link that loops (-> {target}, which leads back to itself)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"is a symbolic link that loops (-> {target}, which leads back to itself)"
        return f"is a broken symbolic link (-> {target}, which does not exist)"
    return None


def what_is(path: str | os.PathLike) -> str:
    """What is at `path`, as the end of a sentence that starts with the path: "does not exist", "is a
    folder", "is an empty file", "is a text file", "is a ZIP archive ..." ..."""
    path = Path(path)
    link = _link_problem(path)
    if link:
        return link
    blocker = file_ancestor(path)
    if blocker is not None:
        return f"cannot exist: {blocker} is a file, not a folder"
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a folder"
    if not path.is_file():
        return "is not a regular file (a device, pipe or socket)"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if not head:
        return "is an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"is {kind}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:                           # not just a character cut at the 4 KB mark
            return "is binary data"
        text = head[:err.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text)
    return "is a text file" if printable >= 0.95 * max(len(text), 1) else "is binary data"


def _writable_folder(folder: Path, label: str) -> None:
    """OutputPathError unless this user may create entries in `folder` on a writable file system."""
    if os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise OutputPathError(f"{label}: {folder} is on a read-only file system; choose an output on a writable disk")
    raise OutputPathError(f"{label}: this user may not write in {folder} (permission denied); choose a folder you may "
                          f"write to, or fix its permissions")


def _label(what: str, path: Path, note: str) -> str:
    return f"{what}={path}" + (f" ({note})" if note else "")


def output_folder(path: str | os.PathLike, what: str, note: str = "") -> Path:
    """`path` as an output folder (made later by the command): OutputPathError when a file is in the way or
    the folder (or the nearest parent that exists) cannot be written. `what` names the option, `note` says
    where a default came from."""
    path = Path(path)
    label = _label(what, path, note)
    link = _link_problem(path)
    if link:
        raise OutputPathError(f"{label} {link}; give a folder")
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{label} {what_is(path)}, not a folder: give a folder (it is made if it does not "
                              f"exist), or move the file away")
    blocker = file_ancestor(path)
    if blocker is not None:
        raise OutputPathError(f"{label}: {blocker} is a file, not a folder, so nothing can be made inside it; choose "
                              f"another output folder")
    _writable_folder(existing_ancestor(path), label)
    return path


def output_file(path: str | os.PathLike, what: str, note: str = "") -> Path:
    """`path` as an output file (written later, atomically): OutputPathError when it is a folder, a parent is
    a file, or its folder cannot be written."""
    path = Path(path)
    label = _label(what, path, note)
    if path.is_dir():
        raise OutputPathError(f"{label} is a folder, but a file is written there: give a file path (one inside that "
                              f"folder, e.g.)")
    link = _link_problem(path)
    if link:
        raise OutputPathError(f"{label} {link}; give a file name")
    blocker = file_ancestor(path)
    if blocker is not None:
        raise OutputPathError(f"{label}: {blocker} is a file, not a folder, so nothing can be made inside it; choose "
                              f"another output path")
    _writable_folder(existing_ancestor(path.parent if str(path.parent) else Path(".")), label)
    return path
