"""The HTTP loop of the API client: one logical request with its retries, deadlines and
headers, the limiter's report, transport errors and the redaction of the key. Only URLs on the
API's own origin are ever sent the key (``_is_api_url``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Awaitable, TypeVar

import httpx

from .. import config, retry
from .._version import __version__ as _VERSION  # the one version string
from ..errors import APIConnectionError, APITimeoutError, SharkError, error_from_response, excerpt, redact
from ..ledger import clean_text
from ..request import ImageRequest

T = TypeVar("T")


@dataclass
class _Call:
    """What one logical call carries between its steps."""

    request: ImageRequest
    tracing_id: str
    call_id: str
    started: float
    estimate: float | None  #: None: unknown (a model with no price known yet)
    #: True while a POST of this call may be at the gateway with no answer yet: an interruption
    #: then leaves the call "unknown"; at any other moment (waiting out a 429 or a back-off) "not_sent".
    in_flight: bool = False


class _HttpMixin:
    """The request loop of :class:`AsyncShark` (``self._sleep``/``self._clock``/``self._rng``,
    ``self.limiter`` and ``self._rate_policy`` are set by its ``__init__``)."""

    def _api(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"User-Agent": f"shark_nb/{_VERSION} httpx/{httpx.__version__}"}
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=config.CONNECT_TIMEOUT),
                transport=self._transport, headers=headers, follow_redirects=False,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        return self._http

    def _headers(self, tracing_id: str, *, reserved: float | None = None) -> dict[str, str]:
        """``reserved``: this call's own estimate, already counted in the ledger (write-ahead); it
        is added back so the gateway's ceiling is the budget left *for this call*."""
        headers = {"X-Tracing-ID": tracing_id}
        if self._key is not None:
            headers["Authorization"] = "Bearer " + self._key.reveal()
        remaining = self.ledger.remaining
        if reserved is not None and remaining is not None:
            headers["X-App-User-Credits"] = _credits_header(remaining + reserved)
        return headers

    def _is_api_url(self, url: str) -> bool:
        """Only URLs on the API's own origin may carry the key."""
        a, b = httpx.URL(url), httpx.URL(self.base_url)
        return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    async def _request(
        self,
        method: str,
        url: str,
        *,
        tracing_id: str,
        json_body: dict | None = None,
        idempotent: bool,
        rate_limit_retries: int | None = None,
        reserved: float | None = None,
        flight: _Call | None = None,
        attempt_timeout: float | None = None,
    ) -> httpx.Response:
        """One logical API request with the retry policy; raises the mapped error.

        Each attempt has a deadline on the whole answer (``attempt_timeout``, default the client's
        ``timeout``): httpx's timeouts are per read, so a server trickling a byte every few seconds
        would otherwise hold the call for ever. Running out is a ``ReadTimeout``: a paid POST is
        then not retried (its outcome is unknown), a GET is."""
        limit = self.timeout if attempt_timeout is None else attempt_timeout
        if not self._is_api_url(url):
            raise APIConnectionError(f"refusing to send the API key to {httpx.URL(url).host}: "
                                     "not the API's host", tracing_id=tracing_id)
        client = self._api()
        content = json.dumps(json_body).encode() if json_body is not None else None
        attempt = 0
        gated = method == "POST" and not idempotent  # a generation: it passes the limiter
        served: int | None = None  # a shared pause this call already waited out as its own Retry-After
        while True:
            slot = None
            if gated and self._rate_policy == "fixed":
                await self._wait_rate_gate()
            elif gated:
                slot = await self.limiter.acquire(sleep=self._sleep, served_pause=served)
            headers = self._headers(tracing_id, reserved=reserved)
            if content is not None:
                headers["Content-Type"] = "application/json"
            if flight is not None:
                flight.in_flight = True  # from here until an answer, the bytes may be at the gateway
            try:
                try:
                    response, body = await _within(_exchange(client, method, url, content, headers), limit)
                except asyncio.TimeoutError:
                    raise httpx.ReadTimeout(f"no complete answer within {limit:g} s") from None
            except httpx.RequestError as exc:  # transport errors, and an undecodable body (DecodingError)
                if slot is not None:
                    slot.release()  # no answer: says nothing about the gateway's limit
                if flight is not None:
                    flight.in_flight = retry.may_have_been_charged(exc)  # those are never retried
                if retry.should_retry_exception(exc, idempotent=idempotent, attempt=attempt,
                                                max_retries=self.max_retries):
                    await self._sleep(retry.backoff_delay(attempt, rng=self._rng))
                    attempt += 1
                    continue
                raise self._transport_error(exc, tracing_id, paid=not idempotent) from None
            except BaseException:  # cancelled (or a bug): the slot goes back
                if slot is not None:
                    slot.release()
                raise
            if slot is not None:
                served = _report(slot, response, body) or served
            if flight is not None and response.status_code >= 300:
                flight.in_flight = False  # answered with an error: nothing was done (see retry.py)
            if 300 <= response.status_code < 400:
                raise APIConnectionError(
                    f"the API answered with a redirect (HTTP {response.status_code}) to "
                    f"{httpx.URL(response.headers.get('location', '')).host or 'an unknown place'}; "
                    "not followed so the key stays with the API's host — check base_url",
                    status=response.status_code, tracing_id=tracing_id)
            if response.status_code < 400:
                return response
            retry_after = retry.parse_retry_after(response.headers.get("retry-after"))
            if retry.should_retry_status(response.status_code, attempt=attempt, max_retries=self.max_retries,
                                         rate_limit_retries=rate_limit_retries):
                delay = retry.backoff_delay(attempt, retry_after, rng=self._rng)
                if response.status_code == 429 and gated and self._rate_policy == "fixed":
                    # The old policy: every generation of this client waits behind the same gate.
                    self._rate_gate = max(self._rate_gate, self._clock() + delay)
                else:
                    await self._sleep(delay)
                attempt += 1
                continue
            raise _clean_error(error_from_response(response.status_code, body, tracing_id=tracing_id,
                                                   retry_after=retry_after, secrets=self._secrets()))

    def _secrets(self) -> tuple[str, ...]:
        return (self._key.reveal(),) if self._key is not None else ()

    async def _wait_rate_gate(self) -> None:  # the "fixed" policy only
        # Loop: another caller's 429 may push the gate further while we sleep.
        while (delay := self._rate_gate - self._clock()) > 0:
            await self._sleep(delay + self._rng.random() * 0.05)

    def _transport_error(self, exc: httpx.RequestError, tracing_id: str, *, paid: bool) -> SharkError:
        kind = type(exc).__name__
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        if paid and retry.may_have_been_charged(exc):
            what = "an undecodable answer" if isinstance(exc, httpx.DecodingError) else "no answer"
            error = cls(f"{what} from the gateway ({kind}); the call may have been charged, so it "
                        "was not retried — it is in the ledger as outcome 'unknown'; quote the tracing id "
                        "to the provider", tracing_id=tracing_id)
            error.may_be_charged = True
            return error
        return cls(f"could not reach the gateway ({kind}: {excerpt(str(exc), 120, self._secrets())})",
                   tracing_id=tracing_id)


async def _within(aw: Awaitable[T], seconds: float) -> T:
    """``await aw`` with a deadline (``asyncio.TimeoutError`` past it). ``asyncio.timeout`` where
    there is one: ``asyncio.wait_for`` before 3.12 can swallow a cancellation that arrives as the
    inner call finishes, and a swallowed cancel here means a task that Ctrl-C did not stop."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await aw
    return await asyncio.wait_for(aw, seconds)


async def _exchange(client: httpx.AsyncClient, method: str, url: str, content: bytes | None,
                    headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    response = await client.request(method, url, content=content, headers=headers)
    return response, await response.aread()


def _report(slot: Any, response: httpx.Response, body: bytes) -> int | None:
    """Tell the limiter how a generation POST was answered: 2xx success, 429 a drop (with its
    Retry-After), 500/502/503/504 or ``provider_error`` an error (a burst of them cuts the limit);
    anything else (a 4xx about the request itself, a redirect) just frees the slot. Returns the
    shared pause this answer started, if any."""
    status = response.status_code
    if status < 300:
        slot.success()
    elif status == 429:
        return slot.drop(retry.parse_retry_after(response.headers.get("retry-after")))
    elif status in (500, 502, 503, 504) or b'"provider_error"' in body[:4096]:
        slot.error()
    else:
        slot.release()
    return None


def _clean_error(exc: SharkError) -> SharkError:
    """The error with lone surrogates in its text replaced (the gateway's message may hold
    them): it can then be printed, logged and written to the ledger."""
    for name in ("message", "type", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            setattr(exc, name, clean_text(value))
    exc.args = tuple(clean_text(a) for a in exc.args)
    return exc


def _credits_header(remaining: float) -> str:
    value = max(0.0, remaining)
    return str(int(value)) if value == int(value) else f"{value:.4f}".rstrip("0").rstrip(".")


def _excerpt(body: bytes, limit: int = 80) -> str:
    return excerpt(body, limit)  # redacted first, then cut
