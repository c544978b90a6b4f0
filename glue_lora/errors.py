"""User-facing errors: each one is printed as a single line that names the problem and the fix."""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input from the user (config, data, model); printed without a traceback."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean: a, b?)' suffix with the nearest valid names, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""


def require_hub(what: str, alternative: str, host: str = "huggingface.co", timeout: float = 3.0) -> None:
    """Fail in seconds when the Hub is unreachable (the libraries retry for ~23 s before giving up).

    With HF_HUB_OFFLINE=1 the libraries read their cache without network, so nothing is probed.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        raise UsageError(f"{what} needs the Hugging Face Hub, which is unreachable ({host}:443: "
                         f"{err.strerror or err}); {alternative}, or set HF_HUB_OFFLINE=1 to use a cached copy") from err
