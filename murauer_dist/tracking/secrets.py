"""Keep credentials out of everything a run writes: configs, metrics, wandb config and summary.

Two rules: a mapping entry whose *name* says it holds a credential ('key', 'token', 'secret',
'password') is replaced, and any string that contains the live W&B API key is replaced too.
Applied to everything a run writes or hands to wandb: RUN/config.yaml and config-changes.yaml, the
config inside every checkpoint, metrics.jsonl, the wandb config, project, entity, group and name,
the command line wandb records (sys.argv), and the one-line error messages.
"""
from __future__ import annotations

import os
import re

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"key|token|secret|password", re.IGNORECASE)
# Environment variables whose values are credentials; their values never leave the process.
SECRET_ENV_VARS = ("WANDB_API_KEY",)
# Shorter values are not credentials (a real W&B key has 40 or more characters); replacing them
# everywhere would mangle paths and numbers.
MIN_SECRET_LENGTH = 8


def live_secrets() -> list[str]:
    """Credential values present in this process's environment (never printed)."""
    return [os.environ[name] for name in SECRET_ENV_VARS if len(os.environ.get(name, "").strip()) >= MIN_SECRET_LENGTH]


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
