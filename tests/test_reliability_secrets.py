"""Secrets and the network: a value that is the W&B key (from the environment or the netrc file) is never
echoed in an error; `logging.wandb_mode=auto` with a key and an unreachable server falls back to offline
logging with one line, within a bounded time (real `murauer-dist` child processes, no network)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from test_reliability_train import FAKE_KEY, LAUNCHER, child_env, cli, one_line_error

NETRC_KEY = "9a8b7c6d5e4f30211203f4e5d6c7b8a9fedcba98"
OFFLINE_WITHIN_S = 60        # the probe's 5 s and an offline start, with room for a loaded 2-core machine


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_bad_value_that_is_the_api_key_is_not_echoed(tmp_path):
    result = cli(tmp_path, "print-config", "tiny", f"logging.progress={FAKE_KEY}", WANDB_API_KEY=FAKE_KEY)
    line = one_line_error(result)
    assert "logging.progress" in line and "<redacted>" in line, line
    assert FAKE_KEY not in result.stdout + result.stderr

    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {NETRC_KEY}\n")
    netrc.chmod(0o600)
    result = cli(tmp_path, "print-config", "tiny", f"logging.wandb_mode={NETRC_KEY}", NETRC=str(netrc))
    line = one_line_error(result)
    assert "logging.wandb_mode" in line and "<redacted>" in line, line
    assert NETRC_KEY not in result.stdout + result.stderr


def test_auto_mode_without_a_reachable_server_logs_offline_within_a_bound(tmp_path):
    out = tmp_path / "run"
    homes = {name: str(tmp_path / "wandb-home" / name.lower())
             for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")}
    port = closed_port()
    env = child_env(tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=f"http://127.0.0.1:{port}", WANDB_SILENT="true",
                    **homes)
    del env["WANDB_MODE"]                                     # the config's mode decides: auto
    (tmp_path / "launch.py").write_text(LAUNCHER)
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(tmp_path / "launch.py"), "train", "tiny", f"train.out={out}",
                             "train.max_steps=2", "logging.wandb_mode=auto"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert seconds < OFFLINE_WITHIN_S, seconds
    notes = [line for line in result.stderr.splitlines() if "W&B is not reachable" in line]
    assert len(notes) == 1 and f"127.0.0.1:{port}: connection refused" in notes[0], result.stderr[-3000:]
    assert f"logging offline to {out / 'wandb'}" in notes[0] and "wandb sync" in notes[0]
    assert any((out / "wandb").glob("offline-run-*/*.wandb"))
    assert "Traceback" not in result.stderr and FAKE_KEY not in result.stdout + result.stderr
    leaked = [str(p) for p in Path(tmp_path).rglob("*") if p.is_file() and p.name != "launch.py"
              and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []
