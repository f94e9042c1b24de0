"""Whole-file-or-nothing writes: a temp file in the target's folder, then a rename.

Every file the project writes for a user (configs, manifests, checkpoints, result files, plots,
the procedural dataset) goes through here, so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import errno
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from murauer_dist.errors import with_path


def default_file_mode() -> int:
    """0o666 less the process umask: what open() would give (mkstemp alone gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class _RecordingFile:
    """A file whose first failed write is remembered: torch.save's C++ writer swallows the OSError of a
    full disk and raises "RuntimeError: ... unexpected pos" instead; atomic_open raises the OSError."""

    def __init__(self, handle):
        self._handle, self.error = handle, None

    def write(self, data):
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _named(err: OSError, path: Path) -> str:
    """The path an OSError of atomic_open is about: a parent that is in the way, else the target (never the
    temp file)."""
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and err.filename and not Path(err.filename).name.startswith(
            f".{path.name}."):
        return err.filename
    return str(path)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """Open a temp file for writing; on success it replaces `path`, on any error it is removed.

    An OSError (a full disk, a read-only folder, `path` being a folder ...) names `path`, not the temp file,
    and a write error that a C++ writer turned into a RuntimeError is raised as the OSError it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise with_path(err, _named(err, path)) from None
    recording = None
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, mode) as handle:
            recording = _RecordingFile(handle)
            yield recording
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename not in (None, tmp) and err.filename2 is None:
            raise                                  # about another file, read inside the block
        raise with_path(err, _named(err, path)) from None
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if recording is not None and recording.error is not None:
            raise with_path(recording.error, path) from err
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
