"""User-facing errors: any of these ends a command with a one-paragraph message and exit code 2, not a trace."""
from __future__ import annotations

import sys

from guardray.core.config import ConfigError
from guardray.core.records import DataError
from guardray.models import ModelNotFound

USER_ERRORS = (ConfigError, DataError, ModelNotFound, FileNotFoundError)


class UsageError(ValueError):
    """A bad argument or combination of arguments."""


def run_cli(fn) -> int:
    try:
        rc = fn()
        return int(rc or 0)
    except USER_ERRORS + (UsageError,) as e:
        print(f"guardray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("guardray: interrupted", file=sys.stderr)
        return 130
