"""Open the wandb run of a training run (rank 0 only): pick the mode, keep files in the run dir.

Mode: the WANDB_MODE environment variable wins; else `logging.wandb_mode`; `auto` means online when
credentials exist (WANDB_API_KEY or a netrc entry for the W&B host) and offline otherwise, so a run
never stalls on a login prompt. Offline runs land in RUN_DIR/wandb/offline-run-*; upload them later
with `wandb sync RUN_DIR/wandb/offline-run-*`. An online run whose server cannot be reached (probed
first, then a bounded wandb.init) logs offline instead and says so in one line.
"""
from __future__ import annotations

import netrc
import os
import socket
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlparse

from murauer_dist.atomic import atomic_write_text
from murauer_dist.errors import UserError
from murauer_dist.tracking.secrets import redact_text, scrub_secrets, wandb_host

MODES = ("online", "offline", "disabled")
ENV_ALIASES = {"run": "online", "dryrun": "offline"}  # older spellings wandb still accepts
RUN_ID_FILE = "wandb-run-id.txt"                       # a resumed training run continues its wandb run
PROBE_TIMEOUT_S = 5.0        # a TCP connection to the W&B server, before an online run starts
INIT_TIMEOUT_S = 30.0        # an online wandb.init (wandb's own default is 90 s); WANDB_INIT_TIMEOUT wins


def has_wandb_credentials() -> bool:
    """True when wandb could log in without asking; reads, never prints, the credential."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.is_file():
        return False
    try:
        entry = netrc.netrc(str(path)).authenticators(wandb_host())
    except (netrc.NetrcParseError, OSError) as err:
        # The parser's message can quote file contents, so only the path is shown.
        print(f"[tracking] cannot read {path} ({type(err).__name__}); treating W&B as logged out",
              file=sys.stderr)
        return False
    return bool(entry and entry[2])


def resolve_wandb_mode(config_mode: str) -> str:
    """online | offline | disabled, from WANDB_MODE (wins) or the config's mode."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        mode = ENV_ALIASES.get(env_mode, env_mode)
        if mode not in MODES:
            raise UserError(f"environment variable WANDB_MODE={env_mode!r}: expected one of {', '.join(MODES)}")
        return mode
    if config_mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    if config_mode not in MODES:
        raise ValueError(f"config key 'logging.wandb_mode': {config_mode!r} is not one of auto, {', '.join(MODES)}")
    return config_mode


def _run_id(run_dir: Path) -> str:
    """The wandb id of this run directory, created once, so a resumed run appends to the same run."""
    path = run_dir / RUN_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]   # wandb ids: lowercase letters and digits
    atomic_write_text(path, run_id + "\n")
    return run_id


def scrub_argv() -> None:
    """Redact live credentials in sys.argv, in place: wandb records the command line with the run."""
    sys.argv[:] = [redact_text(arg) for arg in sys.argv]


def _proxied() -> bool:
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                                  "WANDB_HTTP_PROXY", "WANDB_HTTPS_PROXY"))


def unreachable(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the W&B server (WANDB_BASE_URL) cannot be reached, or None when a TCP connection opens within
    `timeout_s` (name lookup included: it runs in a thread that is not waited for longer). Behind a proxy
    nothing is probed (None): the bounded wandb.init decides."""
    if _proxied():
        return None
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    answer: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                answer.append(None)
        except OSError as err:
            answer.append(err.strerror or type(err).__name__.replace("Error", " error").lower())

    thread = threading.Thread(target=probe, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    if not answer:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    return None if answer[0] is None else f"{host}:{port}: {answer[0].lower()}"


def _offline_note(run_dir: Path, why: str) -> None:
    print(redact_text(f"[tracking] W&B is not reachable ({why}): logging offline to {run_dir / 'wandb'} instead; "
                      f"upload later with `wandb sync {run_dir / 'wandb'}/offline-run-*`"), file=sys.stderr, flush=True)


def init_timeout_s() -> float:
    """How long an online wandb.init may take: WANDB_INIT_TIMEOUT when set, else INIT_TIMEOUT_S."""
    try:
        return float(os.environ["WANDB_INIT_TIMEOUT"])
    except (KeyError, ValueError):
        return INIT_TIMEOUT_S


def open_wandb_run(config_tree: dict, logging_cfg, run_dir: Path, mode: str):
    """wandb.init for rank 0 with the scrubbed, resolved config; None when mode is disabled.

    Every string wandb stores is scrubbed first: the config, project, entity, group and name, and the
    command line it records (sys.argv, redacted in place before wandb reads it).

    Online, the server is probed first (PROBE_TIMEOUT_S) and wandb.init is bounded (init_timeout_s); when the
    server cannot be reached or the online start fails, the run logs offline and says so in one line:
    a training job never dies or stalls on the network.
    """
    if mode == "disabled":
        return None
    import wandb  # lazy: heavy: wandb (a disabled run never imports it)
    scrub_argv()
    # Under `wandb agent` the run id comes from the sweep (WANDB_RUN_ID); never replace it.
    given_id = os.environ.get("WANDB_RUN_ID")
    arguments = dict(
        project=redact_text(logging_cfg.project) or None,
        entity=redact_text(logging_cfg.entity) or None,
        group=redact_text(logging_cfg.group) or None,
        name=redact_text(logging_cfg.name) or None,
        config=scrub_secrets(config_tree),
        dir=str(run_dir),
        id=None if given_id else _run_id(run_dir),
        resume=None if given_id else "allow",
    )
    if mode == "online":
        why = unreachable()
        if why is None:
            try:
                return wandb.init(**arguments, mode="online", settings=wandb.Settings(init_timeout=init_timeout_s()))
            except wandb.errors.Error as err:       # no answer in time, refused key, server error
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                why = f"{type(err).__name__}: {first[:160]}"
                wandb.teardown()                    # the service still holds the failed run's id
        _offline_note(run_dir, why)
        mode = "offline"
    return wandb.init(**arguments, mode=mode)
