"""Keep credentials out of everything a run writes: configs, metrics, wandb config and summary.

Two rules: a mapping entry whose *name* says it holds a credential ('key', 'token', 'secret',
'password') is replaced, and any string that contains the live W&B API key is replaced too.
The live keys are WANDB_API_KEY and the W&B entry of the netrc file wandb reads.
Applied to everything a run writes or hands to wandb: RUN/config.yaml and config-changes.yaml, the
config inside every checkpoint, metrics.jsonl, the wandb config, project, entity, group and name,
the command line wandb records (sys.argv), and the one-line error messages.
"""
from __future__ import annotations

import netrc
import os
import re
from urllib.parse import urlparse

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"key|token|secret|password", re.IGNORECASE)
# Environment variables whose values are credentials; their values never leave the process.
SECRET_ENV_VARS = ("WANDB_API_KEY",)
# Shorter values are not credentials (a real W&B key has 40 or more characters); replacing them
# everywhere would mangle paths and numbers.
MIN_SECRET_LENGTH = 8


def wandb_host() -> str:
    """The W&B server's host name (WANDB_BASE_URL, else api.wandb.ai): the netrc entry wandb logs in with."""
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _netrc_password(path: str, host: str, stamp: tuple) -> str:
    """The password of `host` in the netrc file `path` ('' when there is none or it cannot be read)."""
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):
        return ""
    return (entry[2] or "") if entry else ""


_NETRC_CACHE: dict = {}


def netrc_secret() -> str:
    """The W&B key of the netrc file wandb reads (NETRC, else ~/.netrc), cached per file version."""
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        stat = os.stat(path)
    except OSError:
        return ""
    key = (path, wandb_host(), stat.st_mtime_ns, stat.st_size)
    if key not in _NETRC_CACHE:
        _NETRC_CACHE.clear()
        _NETRC_CACHE[key] = _netrc_password(path, key[1], key[2:])
    return _NETRC_CACHE[key]


def live_secrets() -> list[str]:
    """Credential values of this process (never printed): the environment's (WANDB_API_KEY) and the W&B
    key in the netrc file wandb would log in with."""
    found = [os.environ[name] for name in SECRET_ENV_VARS if os.environ.get(name)]
    found.append(netrc_secret())
    return [value for value in found if len(value.strip()) >= MIN_SECRET_LENGTH]


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    for secret in live_secrets() if secrets is None else secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_secrets(tree, secrets: list[str] | None = None):
    """A copy of `tree` (dicts, lists, scalars) with credential entries and values redacted."""
    secrets = live_secrets() if secrets is None else secrets
    if isinstance(tree, dict):
        return {name: REDACTED if isinstance(name, str) and SECRET_NAME.search(name) and value not in (None, "")
                else scrub_secrets(value, secrets)
                for name, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(scrub_secrets(item, secrets) for item in tree)
    if isinstance(tree, str):
        return redact_text(tree, secrets)
    return tree
