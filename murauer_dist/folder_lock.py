"""One command at a time in a folder: an advisory lock on a training run, a shard set, an experiment.

`FolderLock(folder, what)` takes an exclusive `fcntl.flock` on FOLDER/.murauer-lock and writes who
holds it (pid, host, command, start time) into that file. A second command on the same folder stops
with FolderLockedError naming the holder; it never waits. The kernel drops a flock when its process
dies (a crash, `kill -9`, a node that lost power takes its locks with it on a local disk), so a lock
file that is there but can be locked is stale: it is taken over with one line saying whose it was.
A clean exit removes the file. Readers (`make-shards --verify`, a training run on the shards) only
check that no writer holds the lock (check_not_locked), which needs no write access.

Advisory: it holds between murauer_dist commands, not against other programs. On a network file
system flock works where the file system passes locks to its server (NFSv4, Lustre with `flock`
mounted); the record names the host, so the message says where the holder runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from murauer_dist.errors import UserError, with_path
from murauer_dist.tracking.secrets import redact_text

LOCK_NAME = ".murauer-lock"


class FolderLockedError(UserError):
    """Another command works in this folder now."""


def _holder_text(record: dict) -> str:
    if not record:
        return "another process (its record is empty)"
    text = f"pid {record.get('pid', '?')} on host {record.get('host', '?')}"
    if record.get("started"):
        text += f" since {record['started']}"
    if record.get("command"):
        text += f" (`{record['command']}`)"
    return text


def _read_record(handle) -> dict:
    handle.seek(0)
    raw = handle.read()
    try:
        record = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"pid": "?", "host": "?", "note": "unreadable record"}
    return record if isinstance(record, dict) else {}


def _command_line() -> str:
    text = " ".join(["murauer-dist", *sys.argv[1:]]) if sys.argv else "murauer-dist"
    return redact_text(text if len(text) <= 300 else text[:297] + "...")


class FolderLock:
    """Exclusive advisory lock on FOLDER (made if missing) for one command; see the module doc.

    `what` names the folder for messages (`train.out`, `make-shards OUT`, `experiment --out`); `log`
    receives the take-over line (stderr by default)."""

    def __init__(self, folder: str | os.PathLike, what: str, log=None):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._handle = None
        self._made_folder = False
        self.taken_over: dict | None = None

    def acquire(self) -> "FolderLock":
        try:
            self._made_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise with_path(err, err.filename or self.folder) from None
        while True:
            try:
                handle = open(self.path, "a+")
            except OSError as err:
                raise with_path(err, self.path) from None
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _read_record(handle)
                handle.close()
                raise FolderLockedError(
                    f"{self.what}={self.folder} is in use by {_holder_text(record)}: two commands never share a "
                    f"folder. Wait for it to finish (or stop it), or choose another {self.what}") from None
            except OSError as err:
                handle.close()
                raise with_path(err, self.path) from None
            # The file may have been removed (a holder's clean exit) between open and flock: lock the new one.
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        previous = _read_record(handle)
        if previous:
            self.taken_over = previous
            self.log(f"[lock] {self.what}={self.folder}: taking over the lock left by {_holder_text(previous)}, "
                     f"which no longer holds it (it ended without cleaning up)")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it), then unlock; a folder the lock made and nothing
        else filled is removed too (a command refused before its work leaves no empty folder)."""
        if self._handle is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._handle.close()
            self._handle = None
        if self._made_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_not_locked(folder: str | os.PathLike, what: str, doing: str) -> None:
    """FolderLockedError when a command holds FOLDER's lock now (a reader's check: writes nothing, takes
    nothing; a read-only folder is fine). `doing` says what the caller was about to do."""
    path = Path(folder) / LOCK_NAME
    try:
        handle = open(path, "r")
    except OSError:
        return                                         # no lock file: nobody holds it
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(f"{what}={folder} is being written by {_holder_text(_read_record(handle))}; "
                                    f"{doing} after it has finished") from None
        except OSError:
            return                                     # a file system without flock: nothing to learn
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def folder_lock(folder: str | os.PathLike, what: str, enabled: bool = True, log=None):
    """FolderLock(folder, what) as a context manager; a no-op when not `enabled` (e.g. on ranks > 0)."""
    if not enabled:
        return nullcontext()
    return FolderLock(folder, what, log=log)
