"""The one base class for errors caused by the user's input or environment.

The CLI catches `UserError` and prints its message as one line (no traceback; `--debug` or
MURAUER_DEBUG=1 shows it). A message names the file, key or value and says what to do. Library
code raises these and never calls sys.exit; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, a key, a value) or an environment that cannot serve the command."""
