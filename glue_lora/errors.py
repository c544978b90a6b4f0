"""User-facing errors: each one is printed as a single line that names the problem and the fix."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input from the user (config, data, model); printed without a traceback."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean: a, b?)' suffix with the nearest valid names, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1/ON/YES/TRUE), re-read so a test or caller can change it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def require_hub(what: str, alternative: str, timeout: float = 3.0) -> None:
    """Fail in seconds when the Hub is unreachable (the libraries retry for ~23 s before giving up).

    Probes the endpoint the libraries will use (HF_ENDPOINT, e.g. a mirror) through huggingface_hub's own HTTP
    session, so proxies and CA settings apply exactly as they will for the download. With HF_HUB_OFFLINE=1 the
    libraries read their cache without network, so nothing is probed.
    """
    if hub_offline():
        return
    from huggingface_hub import constants, get_session  # imported late: only runs that need the Hub pay for it

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)  # any HTTP answer, even 404, means reachable
    except Exception as err:  # noqa: BLE001 - the client library (httpx, httpx2) varies by hub version
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{what} needs the Hugging Face Hub, which is unreachable ({constants.ENDPOINT}: "
                         f"{reason}); {alternative}, or set HF_HUB_OFFLINE=1 to use a cached copy") from err
