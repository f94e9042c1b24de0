"""Open the wandb run of a training run (rank 0 only): pick the mode, keep files in the run dir.

Mode: the WANDB_MODE environment variable wins; else `logging.wandb_mode`; `auto` means online when
credentials exist (WANDB_API_KEY or a netrc entry for the W&B host) and offline otherwise, so a run
never stalls on a login prompt. Offline runs land in RUN_DIR/wandb/offline-run-*; upload them later
with `wandb sync RUN_DIR/wandb/offline-run-*`.
"""
from __future__ import annotations

import netrc
import os
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse

from murauer_dist.errors import UserError
from murauer_dist.tracking.secrets import redact_text, scrub_secrets

MODES = ("online", "offline", "disabled")
ENV_ALIASES = {"run": "online", "dryrun": "offline"}  # older spellings wandb still accepts
RUN_ID_FILE = "wandb-run-id.txt"                       # a resumed training run continues its wandb run


def wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


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
    from murauer_dist.atomic import atomic_write_text
    path = run_dir / RUN_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]   # wandb ids: lowercase letters and digits
    atomic_write_text(path, run_id + "\n")
    return run_id


def scrub_argv() -> None:
    """Redact live credentials in sys.argv, in place: wandb records the command line with the run."""
    sys.argv[:] = [redact_text(arg) for arg in sys.argv]


def open_wandb_run(config_tree: dict, logging_cfg, run_dir: Path, mode: str):
    """wandb.init for rank 0 with the scrubbed, resolved config; None when mode is disabled.

    Every string wandb stores is scrubbed first: the config, project, entity, group and name, and the
    command line it records (sys.argv, redacted in place before wandb reads it).
    """
    if mode == "disabled":
        return None
    import wandb
    scrub_argv()
    # Under `wandb agent` the run id comes from the sweep (WANDB_RUN_ID); never replace it.
    given_id = os.environ.get("WANDB_RUN_ID")
    return wandb.init(
        project=redact_text(logging_cfg.project) or None,
        entity=redact_text(logging_cfg.entity) or None,
        group=redact_text(logging_cfg.group) or None,
        name=redact_text(logging_cfg.name) or None,
        config=scrub_secrets(config_tree),
        dir=str(run_dir),
        mode=mode,
        id=None if given_id else _run_id(run_dir),
        resume=None if given_id else "allow",
    )
