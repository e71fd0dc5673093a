"""Settings: every default that shapes behaviour, and where the key and base URL come from.

Precedence: an explicit argument, then the environment (``SHARK_API_KEY``, ``SHARK_BASE_URL``,
``SHARK_OFFLINE``), then a key given with :func:`set_key` in this process. No key at all means the
offline simulator, announced once.

The key is held in a :class:`Secret` whose repr and str never show it; it is only revealed when
building the ``Authorization`` header for the API's own host.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ValidationError, remember_secret

# --- defaults (one place for every number that shapes behaviour) -------------------------------
DEFAULT_BASE_URL = "https://shark.ai/api/v1"
DEFAULT_TIMEOUT = 360.0            # seconds to wait for a sync answer (image generation is slow)
CONNECT_TIMEOUT = 10.0
DOWNLOAD_TIMEOUT = 120.0           # seconds per image download attempt, in all (not per read)
DEFAULT_MAX_RETRIES = 2            # for 429/502/503/504 and requests that never left
BATCH_RATE_LIMIT_RETRIES = 10      # generate_many keeps backing off on 429 this many times
INITIAL_RETRY_DELAY = 0.5          # seconds; doubles each attempt, with jitter
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0             # a Retry-After longer than this is capped
DEFAULT_POLL_INTERVAL = 2.0        # task mode: steady seconds between polls (provider says 2-5 s)
POLL_FIRST = 0.5                   # task mode: the first poll this soon after the start ...
POLL_GROWTH = 2.0                  # ... then each gap this many times the last, up to the poll interval
TASK_DEADLINE_MARGIN = 30.0        # stop polling this long after the task's own timeout
POLL_TIMEOUT = 30.0                # seconds for one poll answer, in all (not per read); at most `timeout`
MAX_POLL_BACKOFF = 30.0            # failing polls back off up to this many seconds between polls
POLL_NOT_FOUND_LIMIT = 3           # a task the gateway answers 404 for this many polls in a row is given up
CANCEL_TIMEOUT = 8.0               # seconds a cancel (with its retries) may take when stopping a wait
DOWNLOAD_CONCURRENCY = 8
DEFAULT_CONCURRENCY = 4            # generate_many
# The adaptive limiter (shark_nb/limiter.py): generation POSTs in flight per gateway and key
LIMITER_INITIAL = 4                # calls in flight allowed before anything is learned
LIMITER_MIN = 1
LIMITER_MAX = 64
LIMITER_BACKOFF = 0.5              # the limit is multiplied by this on a 429 (or a 5xx burst)
LIMITER_PROBE_AFTER = 8            # windows of success held just below the last 429 before probing higher
LIMITER_ERROR_BURST = 3            # this many 502/503/504/provider_error answers ...
LIMITER_ERROR_WINDOW = 10.0        # ... within this many seconds cut the limit like a 429
LIMITER_SHARED_PAUSE = 5.0         # a Retry-After this long (or one at the minimum limit) pauses every caller
# Pacing: 429s at the minimum limit (1 in flight) mean the gateway's rate is below one caller's
# back-to-back rate; then POST starts are spaced by a learned gap (AIMD on the rate).
LIMITER_PACE_INCREASE = 1.5       # on such a 429: gap = (the refused spacing) x this
LIMITER_PACE_MARGIN = 1.2         # the gap holds at (the refused spacing) x this ...
LIMITER_PACE_DECREASE = 0.9       # ... and otherwise shrinks by this factor per success
LIMITER_PACE_OFF = 0.01           # a gap below this many seconds is dropped: pacing off, the limit may grow
LIMITER_PACE_MAX = 30.0           # never more than this many seconds between POST starts
OFFLINE_BASE_URL = "http://api.shark-sim.invalid/api/v1"
DEFAULT_SAVE_FOLDER = "shark-images"   # full-resolution files, relative to the working directory
DEFAULT_HOME = "~/.shark_nb"           # the ledger and rescued images (SHARK_NB_HOME)
PREVIEW_MAX_SIDE = 1024                # inline previews: long side in pixels ...
PREVIEW_FORMAT = "webp"                # ... encoding ("webp" or "jpeg") ...
PREVIEW_QUALITY = 80                   # ... and quality
THUMB_SIDE = 256                       # a GenerationResult's own repr: thumbnails this size
PREVIEW_WORKERS = max(2, min(4, os.cpu_count() or 2))  # threads making previews as images arrive
SIM_LATENCY = 0.05                     # seconds the offline simulator takes per call
HISTORY_THUMB_SIDE = 256               # shark_nb.history(): the thumbnail each delivered image leaves ...
HISTORY_THUMB_MAX_BYTES = 30 * 1024    # ... at most this big (WebP, under $SHARK_NB_HOME/thumbs)
HISTORY_PAGE_SIZE = 20                 # calls per page of the history widget

# --- environment variables (every name the package reads; tests use SHARK_NB_SLOW too) ---------
ENV_API_KEY = "SHARK_API_KEY"
ENV_BASE_URL = "SHARK_BASE_URL"
ENV_OFFLINE = "SHARK_OFFLINE"
ENV_HOME = "SHARK_NB_HOME"
ENV_SIM_LATENCY = "SHARK_SIM_LATENCY"
ENV_SLOW_TESTS = "SHARK_NB_SLOW"       # tests only: run the long reliability runs

_session_key: "Secret | None" = None
_offline_announced = False


class Secret:
    """A string that never shows itself in a repr, str, log or traceback."""

    __slots__ = ("_value", "__weakref__")

    def __init__(self, value: str) -> None:
        self._value = value
        remember_secret(self)  # while it lives, every error and ledger line is redacted of it

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('[secure]')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickled into anything
        raise TypeError("a Secret cannot be pickled")


def check_key(key: object) -> Secret:
    """Validate an API key; the error never quotes it."""
    if isinstance(key, Secret):
        return key
    if not isinstance(key, str) or not key:
        raise ValidationError("api_key", "<hidden>", "a non-empty string such as 'sk-...'")
    if key != key.strip() or any(c.isspace() for c in key):
        raise ValidationError("api_key", "<hidden>", "a key with no spaces or line breaks",
                              detail="it contains whitespace (a stray newline from copy-paste?)")
    if any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise ValidationError("api_key", "<hidden>", "printable ASCII characters only")
    return Secret(key)


def _is_loopback(host: str) -> bool:
    if host in ("localhost",) or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _redact_url(url: str) -> str:
    """The URL with any user-info, query and fragment replaced by ``***`` (they may hold a key)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    head, _q, _tail = rest.partition("?")
    head = head.split("#", 1)[0]
    netloc, slash, path = head.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    shown = (scheme + "://" if sep else "") + netloc + slash + path
    return shown + ("?***" if ("?" in rest or "#" in rest) else "")


def check_base_url(url: object) -> str:
    """https anywhere; plain http only on this machine (the key would otherwise travel in clear)."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError("base_url", url, "an https:// URL such as " + repr(DEFAULT_BASE_URL))
    url_given, url = url, url.strip().rstrip("/")
    if url[:3].lower() == "sk-":  # a key pasted into SHARK_BASE_URL: say so without echoing it
        raise ValidationError("base_url", "<hidden>", "an https:// URL such as " + repr(DEFAULT_BASE_URL),
                              detail=f"it looks like an API key (put the key in {ENV_API_KEY})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError("base_url", _redact_url(url), "an https:// URL such as " + repr(DEFAULT_BASE_URL),
                              detail="the URL is malformed") from None
    if parts.username or parts.password or "@" in parts.netloc:
        # never echo the user-info: it is often the key itself
        raise ValidationError("base_url", _redact_url(url), "a URL without credentials in it (pass api_key=)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        given = url_given.strip()
        detail = ("it has no https:// in front" if "://" not in given else
                  f"the {parts.scheme}: scheme is not supported" if parts.scheme not in ("http", "https") else
                  "it has no host name")
        raise ValidationError("base_url", _redact_url(given), "an https:// URL such as " + repr(DEFAULT_BASE_URL),
                              detail=detail)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        # paths are appended to the base URL: a query would swallow them (and may hold a secret)
        raise ValidationError("base_url", _redact_url(url), "a URL without ?query or #fragment, such as "
                              + repr(DEFAULT_BASE_URL))
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not parts.hostname.endswith(".invalid"):
        raise ValidationError("base_url", url, "https:// (plain http:// only for localhost)",
                              detail="the API key would travel unencrypted")
    return url


def set_key(key: str | None = None) -> None:
    """Set the API key for this Python process. With no argument, ask for it with getpass.

    The key is kept in memory only: it is never written to a file, a notebook or widget state.
    """
    global _session_key
    if key is None:
        import getpass

        key = getpass.getpass("Shark API key (input hidden): ")
    _session_key = check_key(key)


def clear_key() -> None:
    global _session_key
    _session_key = None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    key: Secret | None
    base_url: str
    offline: bool


def resolve(api_key: object = None, base_url: object = None, offline: bool | None = None) -> Settings:
    """Work out the key, base URL and offline mode from arguments, environment and set_key()."""
    key = None
    if api_key is not None:
        key = check_key(api_key)
    elif os.environ.get(ENV_API_KEY):
        key = check_key(os.environ[ENV_API_KEY])
    elif _session_key is not None:
        key = _session_key
    if offline is None:
        offline = _env_flag(ENV_OFFLINE) or key is None
    if offline:
        return Settings(key=None, base_url=OFFLINE_BASE_URL, offline=True)
    if key is None:
        raise ValidationError("api_key", None, f"a key from {ENV_API_KEY}, shark_nb.set_key() or api_key=",
                              detail="offline=False needs a key")
    url = base_url if base_url is not None else os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return Settings(key=key, base_url=check_base_url(url), offline=False)


OFFLINE_NOTICE = (f"shark_nb: no API key found ({ENV_API_KEY} or shark_nb.set_key()) — using the "
                  "offline simulator: images are synthetic and nothing is charged.")
_OFFLINE_TAIL = " — using the offline simulator: images are synthetic and nothing is charged."


def offline_reason() -> str:
    """Why this process is offline, in words: the banner must not say "no key" when there is one."""
    if _env_flag(ENV_OFFLINE):
        return f"{ENV_OFFLINE}={os.environ.get(ENV_OFFLINE, '').strip()} is set"
    if os.environ.get(ENV_API_KEY) or _session_key is not None:
        return "offline mode was asked for (offline=True)"
    return f"no API key found ({ENV_API_KEY} or shark_nb.set_key())"


def shark_home() -> "Path":
    """``$SHARK_NB_HOME``, or ``~/.shark_nb``: where the ledger and rescued images live."""
    from pathlib import Path

    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser()


def announce_offline() -> None:
    """Say once per process that we are offline, and why."""
    global _offline_announced
    if not _offline_announced:
        _offline_announced = True
        print("shark_nb: " + offline_reason() + _OFFLINE_TAIL, file=sys.stderr)
