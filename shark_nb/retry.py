"""The retry policy, as pure decisions the client's loop asks about (tested with tables).

Users pay for every generation, so the policy is billing-aware:

* An answer of 429, 502, 503 or 504 means the gateway did not do the work: retried, with the
  same ``X-Tracing-ID``, honouring ``Retry-After`` (seconds or an HTTP date, capped).
* A request that provably never left (connection refused, connect timeout, no free connection)
  is retried.
* A paid POST that left but got no answer (read timeout, connection reset) may have been charged:
  it is **not** retried; the caller records the outcome as unknown.
* GETs (polls, downloads) are idempotent: any transient failure is retried.
* Every other 4xx is final.
"""

from __future__ import annotations

import email.utils
import random
import time

import httpx

from . import config

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Failures where the request cannot have reached the server.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None for a missing or unreadable header, 0 for a date in the past, and never more
    than ``config.MAX_RETRY_AFTER``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), config.MAX_RETRY_AFTER)


def backoff_delay(attempt: int, retry_after: float | None = None, *, rng: random.Random | None = None) -> float:
    """How long to sleep before retry number ``attempt`` (0 for the first retry).

    ``Retry-After`` wins when given; otherwise exponential backoff with "equal jitter", so that
    concurrent callers do not retry in lock-step.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), config.MAX_RETRY_AFTER)
    base = min(config.INITIAL_RETRY_DELAY * (2 ** attempt), config.MAX_RETRY_DELAY)
    r = (rng or random).random()
    return base / 2 + base / 2 * r


def should_retry_status(status: int, *, attempt: int, max_retries: int,
                        rate_limit_retries: int | None = None) -> bool:
    """Retry an error answer? ``attempt`` counts the retries already made."""
    if status == 429:
        limit = max_retries if rate_limit_retries is None else rate_limit_retries
        return attempt < limit
    return status in RETRY_STATUSES and attempt < max_retries


def should_retry_exception(exc: BaseException, *, idempotent: bool, attempt: int, max_retries: int) -> bool:
    """Retry after a transport failure? Only when it is safe for the user's money."""
    # RequestError, not only TransportError: an answer whose body cannot be decoded (a bad
    # Content-Encoding from a proxy) is as transient; a redirect loop is not worth repeating.
    if attempt >= max_retries or not isinstance(exc, httpx.RequestError) or isinstance(exc, httpx.TooManyRedirects):
        return False
    if isinstance(exc, NOT_SENT_ERRORS):
        return True
    return idempotent


def may_have_been_charged(exc: BaseException) -> bool:
    """A POST that failed this way may have reached the gateway and been charged."""
    return isinstance(exc, httpx.RequestError) and not isinstance(exc, NOT_SENT_ERRORS)
