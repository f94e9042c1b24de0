"""Faults of the machine for tests: a small file system that fills up, a read-only one.

A command runs in its own mount namespace (`unshare --user --map-root-user --mount`, no root needed where
user namespaces are allowed), where a tiny tmpfs or a read-only bind mount replaces a folder; the real
write calls fail the way they do on a full or read-only disk. What the command left there is copied out
before the namespace ends, so the test can check it. Where namespaces are not allowed, the test is skipped.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest


@lru_cache(maxsize=1)
def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=64k tmpfs "
                            "\"$(mktemp -d)\""], capture_output=True, timeout=30)
    return probe.returncode == 0


def need_namespaces() -> None:
    if not namespaces_work():
        pytest.skip("needs `unshare --user --mount` to make a small or read-only file system")


def run_on(setup: str, argv: list[str], env: dict, cwd: Path, copy_out: tuple[Path, Path] | None = None,
           timeout: int = 300) -> subprocess.CompletedProcess:
    """`python ARGV` after the shell commands `setup` in a fresh mount namespace; `copy_out` = (mounted
    folder, outside folder): its content is copied out after the command (the tmpfs ends with it)."""
    need_namespaces()
    command = " ".join(shlex.quote(part) for part in [sys.executable, *argv])
    script = f"set -e\n{setup}\nset +e\n{command}\ncode=$?\n"
    if copy_out is not None:
        script += f"cp -a {shlex.quote(str(copy_out[0]))}/. {shlex.quote(str(copy_out[1]))}/\n"
    script += "exit $code\n"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def small_disk(folder: Path, size: str) -> str:
    """Shell setup: a tmpfs of `size` (e.g. 300k) mounted on `folder`."""
    return f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))}"


def read_only(folder: Path) -> str:
    """Shell setup: `folder` bind-mounted onto itself read-only."""
    quoted = shlex.quote(str(folder))
    return f"mount --bind {quoted} {quoted}\nmount -o remount,bind,ro {quoted}"
