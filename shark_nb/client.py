"""The clients: :class:`AsyncShark` does the work over ``httpx.AsyncClient``; :class:`Shark` runs
the same coroutines on a private event-loop thread, so it works the same in a script and inside a
Jupyter kernel whose own loop is already running (no patching of the user's loop).

A call goes: validate (nothing sent on bad input) → budget check → POST with retries (one
``X-Tracing-ID`` for all attempts) → ledger line, fsynced, as soon as the gateway answered →
task polling if asked → image downloads in parallel, on a client that carries no key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, NoReturn, Sequence, TypeVar

import httpx

from . import config, pricing, retry
from .limiter import Limiter, limiter_for
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConflictError,
    DownloadError,
    SharkError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
    error_from_response,
    excerpt,
    redact,
    redact_all,
)
from .ledger import Ledger, clean_text, credit_rule, default_ledger
from .request import ImageRequest, build_request
from .schemas import DEFAULT_MODEL as MODEL
from .schemas import PRICE_BOOK, model_spec

if TYPE_CHECKING:
    from .compare import ComparisonGrid
    from .results import GeneratedImage, GenerationResult

__all__ = ["AsyncShark", "Shark", "Task"]

T = TypeVar("T")
_log = logging.getLogger("shark_nb")

TERMINAL_STATUSES = ("completed", "failed", "cancelled")
_STATUS_ALIASES = {
    "succeeded": "completed", "success": "completed", "complete": "completed", "done": "completed",
    "finished": "completed", "ready": "completed",
    "error": "failed", "failure": "failed", "canceled": "cancelled",
}
from ._version import __version__ as _VERSION  # noqa: E402 - the one version string
#: Said wherever a paid task may still be running: sending the call again could pay twice.
_NO_RESEND = "do not send the same generation again, that could pay for it twice"
#: Largest Content-Length read into a preallocated buffer (above: httpx's own reading).
_PREALLOC_MAX = 256 * 1024 * 1024


def _normalise_status(status: Any) -> str:
    """Map the gateway's status spelling to ours; anything unknown counts as still running."""
    s = str(status or "").strip().lower()
    s = _STATUS_ALIASES.get(s, s)
    return s if s in TERMINAL_STATUSES else "running"


@dataclass
class Task:
    """A task-mode generation at the gateway. ``status`` is updated while it is awaited."""

    id: str
    polling_url: str
    cancel_url: str | None
    status: str = "pending"
    created: int | None = None
    timeout: int | None = None
    call_id: str | None = None
    cancel_requested: bool = False
    raw: dict = field(default_factory=dict, repr=False)


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


class AsyncShark:
    """Async client for the Shark image API. See the README for the whole surface."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        ledger: Ledger | None = None,
        offline: bool | None = None,
        poll_interval: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        download_transport: httpx.AsyncBaseTransport | None = None,
        simulator: Any = None,
        quiet: bool = False,
    ) -> None:
        settings = config.resolve(api_key, base_url, offline if simulator is None else True)
        self._key = settings.key
        self.offline = settings.offline
        self.base_url = settings.base_url if simulator is None else getattr(simulator, "api_base", settings.base_url)
        self.timeout = _positive("timeout", config.DEFAULT_TIMEOUT if timeout is None else timeout)
        self.max_retries = _non_negative_int("max_retries", config.DEFAULT_MAX_RETRIES if max_retries is None else max_retries)
        self.poll_interval = _positive("poll_interval", config.DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval)
        self.ledger = ledger if ledger is not None else default_ledger()
        self.simulator = None
        if self.offline and transport is None:
            if simulator is None:
                from .simulator import Simulator

                simulator = Simulator()
            self.simulator = simulator
            from .simulator import AsyncSimulatorTransport

            transport = AsyncSimulatorTransport(simulator)
            download_transport = download_transport or transport
            self.base_url = simulator.api_base
            if not quiet:
                config.announce_offline()
        self._transport = transport
        self._download_transport = download_transport
        self._http: httpx.AsyncClient | None = None
        self._downloads: httpx.AsyncClient | None = None
        # Every generation POST passes the process-wide adaptive limiter of this gateway and key
        # (an in-process simulator or a test transport is a gateway of its own).
        scope = self.simulator if self.simulator is not None else transport
        self.limiter: Limiter = limiter_for(self.base_url, self._key.reveal() if self._key else None, scope)
        #: "adaptive" (the limiter) or "fixed" (the old shared back-off, kept for the benchmark's comparison)
        self._rate_policy = "adaptive"
        self._rate_gate = 0.0  # "fixed" only: monotonic time before which no POST is sent
        self._rng = random.Random()
        # Injectable for tests: every wait goes through these two.
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic

    # --- plumbing ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        mode = "offline simulator" if self.offline else self.base_url
        return f"<{type(self).__name__} {mode} key={'set' if self._key else 'unset'}>"

    @property
    def api_key_set(self) -> bool:
        return self._key is not None

    def _api(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"User-Agent": f"shark_nb/{_VERSION} httpx/{httpx.__version__}"}
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=config.CONNECT_TIMEOUT),
                transport=self._transport, headers=headers, follow_redirects=False,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        return self._http

    def _dl(self) -> httpx.AsyncClient:
        # A separate client with no credentials at all: the signed URLs live on another host.
        if self._downloads is None:
            self._downloads = httpx.AsyncClient(
                timeout=httpx.Timeout(config.DOWNLOAD_TIMEOUT, connect=config.CONNECT_TIMEOUT),
                transport=self._download_transport, follow_redirects=True,
                headers={"User-Agent": f"shark_nb/{_VERSION}"},
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
        return self._downloads

    async def aclose(self) -> None:
        for c in (self._http, self._downloads):
            if c is not None:
                await c.aclose()
        self._http = self._downloads = None

    async def __aenter__(self) -> "AsyncShark":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

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

    def _task_url(self, url: Any, fallback: str) -> tuple[str, str | None]:
        """Where to send a task's poll or cancel, from the URL the gateway advertised: (url, why
        the advertised one was not used, or None).

        A relative URL ("/api/v1/videos/x", "images/generations/x", "./x") is resolved against
        the base URL. An absolute one on the API's host (or, for a loopback API, on any spelling
        of this machine) keeps only its path and query: the request goes to the API's own scheme,
        host and port, so a proxy's internal port or http-behind-TLS cannot send the key
        elsewhere. Any other host (also "//host/x") is refused: ``fallback``, the documented
        ``{base_url}/images/generations/{id}`` URL on the API's origin, is used instead."""
        if not isinstance(url, str) or not url.strip():
            return fallback, None
        api = httpx.URL(self.base_url + "/")
        try:
            target = api.join(url.strip())
        except (httpx.InvalidURL, ValueError):
            return fallback, "is not a readable URL"
        if target.scheme not in ("http", "https") or not _same_host(target.host, api.host):
            return fallback, f"is on another host ({target.host or target.scheme or '?'})"
        origin = f"{api.scheme}://{api.netloc.decode('ascii')}"
        return origin + target.raw_path.decode("ascii"), None

    def _task_urls(self, task_id: str, polling_url: Any = None, cancel_url: Any = None) -> tuple[str, str, list[str]]:
        """(polling URL, cancel URL, notes on advertised URLs that were refused) for a task."""
        documented = self.base_url + _task_path(task_id)
        poll, why_poll = self._task_url(polling_url, documented)
        cancel, why_cancel = self._task_url(cancel_url, documented + "/cancel")
        notes = [f"{name} {why}; using the documented URL on the API's host instead"
                 for name, why in (("polling_url", why_poll), ("cancel_url", why_cancel)) if why]
        return poll, cancel, notes

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    # --- public API ----------------------------------------------------------------------------
    def build(self, prompt: Any, **params: Any) -> ImageRequest:
        """Validate a request without sending it (what ``--dry-run`` shows)."""
        return build_request(prompt, **params)

    def estimate(self, prompt: str = "", *, model: Any = MODEL, image: Any = None, **fields: Any) -> float | None:
        """Estimated credit for these settings, or None when it is unknown (never 0 for unknown):
        gpt-image-2 from its token table; the other models from prices seen this session for the
        same model and price-shaping settings. Only an estimate; the ledger records real charges.
        ``image`` is counted, not read. Bad settings raise ValidationError as ``generate`` would."""
        spec = model_spec(model)
        fields.pop("mask", None)
        for name in ("wait", "task_timeout", "on_task"):
            fields.pop(name, None)
        refs = len(image) if isinstance(image, (list, tuple)) else int(image is not None)
        return spec.estimate(str(prompt or ""), spec.validate(fields), refs).credit

    async def generate(
        self,
        prompt: Any,
        *,
        model: Any = MODEL,
        image: Any = None,
        mask: Any = None,
        wait: str = "sync",
        task_timeout: int = 300,
        on_task: Callable[[Task], Any] | None = None,
        on_image: Callable[["GeneratedImage"], Any] | None = None,
        **fields: Any,
    ) -> "GenerationResult":
        """Generate (or edit, with ``image=``/``mask=``) and download the images.

        ``model``: a gateway id or alias (``gpt-image-2``, ``gemini``, ``seedream``,
        ``midjourney``, ``grok-edit``); ``fields``: that model's own settings (below). A field the
        model lacks is a ValidationError, never dropped. ``wait="task"`` submits an async task
        and polls it; ``on_task(task)`` is called once the gateway has accepted it (the studio
        uses it to enable Cancel). Cancelling the awaiting coroutine cancels the task at the
        gateway. ``on_image(image)`` is called as soon as each image's bytes are complete, in
        arrival order (``image.index`` is its place in the answer; ``image.result`` the result
        being delivered), on the client's event loop: keep it quick (hand pixel work to a thread).
        An exception in it is logged and noted on the result; the image is delivered all the same.
        """
        kwargs = dict(model=model, image=image, mask=mask, wait=wait, task_timeout=task_timeout, **fields)
        if image is not None or mask is not None:
            request = await asyncio.to_thread(build_request, prompt, **kwargs)
        else:
            request = build_request(prompt, **kwargs)
        return await self.send(request, on_task=on_task, on_image=on_image)

    async def send(self, request: ImageRequest, *, on_task: Callable[[Task], Any] | None = None,
                   rate_limit_retries: int | None = None,
                   on_image: Callable[["GeneratedImage"], Any] | None = None) -> "GenerationResult":
        """Send an already validated request (from :meth:`build`); ``on_image`` as in :meth:`generate`."""
        estimate = request.estimate_credit()
        call = _Call(request=request, tracing_id=str(uuid.uuid4()), call_id=uuid.uuid4().hex,
                     started=time.monotonic(), estimate=estimate)
        # Write-ahead: the call is on disk before a byte leaves (outcome "sending", counted at its
        # estimate against the budget), so a crash mid-call leaves a record. The budget check and
        # this line are one step under the ledger's lock, so calls on other event loops or threads
        # sharing the ledger cannot together overspend it. Every path below replaces it.
        # An unknown estimate (a model with no price known yet) reserves nothing and passes while
        # the budget is not spent; the gateway's guard (X-App-User-Credits) judges its real cost.
        self.ledger.reserve(self._entry(call, outcome="sending"), estimate if estimate is not None else 0.0)
        answer = await self._post_generation(call, rate_limit_retries)
        if request.is_task and (answer.get("id") or not _image_items(answer)):
            # (a gateway that answers a task request at once with images is taken as sync)
            task = self._task_from(answer, call)
            if on_task is not None:
                on_task(task)
            answer = clean_text(await self._await_task(task, call))
        return await self._finish(answer, call, on_image)

    async def generate_many(
        self,
        prompts: Iterable[Any],
        *,
        concurrency: int = config.DEFAULT_CONCURRENCY,
        **params: Any,
    ) -> list["GenerationResult | Exception"]:
        """Run many prompts with bounded concurrency; results in input order.

        A failure is returned in its slot (usually a :class:`SharkError`) instead of losing the batch.
        ``concurrency`` is an upper bound: the gateway's adaptive limiter (``client.limiter``,
        shared by every caller of this gateway and key) decides how many POSTs are in flight. A 429
        is retried after its ``Retry-After``, up to ``config.BATCH_RATE_LIMIT_RETRIES`` times.
        """
        prompts = list(prompts)
        concurrency = _int_range("concurrency", concurrency, 1, 64)
        requests: list[ImageRequest | SharkError] = []
        for p in prompts:
            try:
                requests.append(build_request(p, **params))
            except ValidationError as exc:
                requests.append(exc)
        return await self._send_batch(requests, concurrency)

    async def compare(
        self,
        prompt: Any,
        *,
        models: Any = None,
        model: Any = None,
        vary: Any = None,
        concurrency: int = config.DEFAULT_CONCURRENCY,
        **common: Any,
    ) -> "ComparisonGrid":
        """One prompt across models (``models=["gpt-image-2", "gemini"]`` or ``{model: its own
        fields}``) or across values of one model's settings (``model=..., vary={"quality": ["low",
        "high"]}``), sent as one batch. Every cell is validated and the whole grid's estimate is
        checked against the budget before anything is sent; failures stay in their cells.
        ``common``: fields for every cell (each cell's model must have them)."""
        from .compare import ComparisonGrid, plan_comparison

        concurrency = _int_range("concurrency", concurrency, 1, 64)
        plan = plan_comparison(prompt, models=models, model=model, vary=vary, **common)
        self.ledger.check_budget(plan.known_estimate)
        results = await self._send_batch(list(plan.requests), concurrency)
        return ComparisonGrid(plan, results)

    async def _send_batch(self, requests: list[ImageRequest | SharkError],
                          concurrency: int) -> list["GenerationResult | Exception"]:
        """Send validated requests with bounded concurrency; results (or errors) in order."""
        sem = asyncio.Semaphore(concurrency)

        async def one(req: ImageRequest | SharkError) -> "GenerationResult | Exception":
            if isinstance(req, SharkError):
                return req
            async with sem:
                try:
                    return await self.send(req, rate_limit_retries=config.BATCH_RATE_LIMIT_RETRIES)
                except Exception as exc:  # noqa: BLE001 - any failure stays in its slot; the batch goes on
                    return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def cancel(self, task: Task | str) -> str:
        """Ask the gateway to cancel a task. Returns its status: ``"cancelled"`` or, when the
        gateway refuses (409: already running or finished), ``"refused"``; the task goes on and
        may still be charged, and it stays in the ledger as pending until it ends."""
        if isinstance(task, str):
            url = self._task_urls(task)[1]
            task_obj = None
        else:
            task.cancel_requested = True
            url = self._task_urls(task.id, cancel_url=task.cancel_url)[1]
            task_obj = task
        try:
            response = await self._request("POST", url, tracing_id=str(uuid.uuid4()), idempotent=True,
                                            attempt_timeout=min(self.timeout, config.CANCEL_TIMEOUT))
        except ConflictError:
            return "refused"
        status = "cancelled"
        try:
            status = _normalise_status(response.json().get("status", "cancelled"))
        except (ValueError, AttributeError):
            pass
        if task_obj is not None and status == "cancelled":
            task_obj.status = "cancelled"
        return status if status == "cancelled" else "refused"

    async def reconcile(self) -> list[dict]:
        """Poll the tasks the ledger still lists as pending and record how they ended.

        A sync call interrupted while its POST was at the gateway stays ``"unknown"`` (held at its
        estimate): the gateway has no way to look it up, so ask the provider with its tracing id
        and book the answer with ``client.ledger.settle(call_id_or_tracing_id, credit)``
        (``client.ledger.unsettled`` lists them)."""
        updated = []
        for rec in self.ledger.records:
            if rec.get("outcome") != "pending" or not (rec.get("polling_url") or rec.get("task_id")):
                continue
            url = self._task_urls(str(rec.get("task_id") or ""), rec.get("polling_url"))[0]
            try:
                response = await self._request("GET", url, tracing_id=rec["tracing_id"], idempotent=True,
                                                attempt_timeout=min(self.timeout, config.POLL_TIMEOUT))
                body = response.json()
            except (SharkError, ValueError):
                continue
            if not isinstance(body, dict):
                continue
            status = _normalise_status(body.get("status"))
            if status == "running":
                continue
            body = clean_text(body)
            entry = dict(rec, outcome="ok" if status == "completed" else status,
                         credit=_credit(body), usage=body.get("usage"), **_credit_report(body))
            entry["usd"] = pricing.credits_to_usd(entry["credit"])
            updated.append(self.ledger.record(redact_all(entry, self._secrets())))
        return updated

    # --- the HTTP core -------------------------------------------------------------------------
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

    # --- steps of a generation -----------------------------------------------------------------
    def _entry(self, call: _Call, **fields: Any) -> dict:
        req = call.request
        entry = {
            "call_id": call.call_id, "tracing_id": call.tracing_id, "model": req.model,
            "prompt": req.prompt, "params": req.params(), "inputs": list(req.inputs),
            "task_id": None, "outcome": "ok", "status": None, "images": 0, "usage": None,
            "credit": None, "usd": None, "estimate_credit": call.estimate,
            "latency_s": round(time.monotonic() - call.started, 3), "offline": self.offline, "error": None,
        }
        entry.update(fields)
        if entry["credit"] is not None:
            entry["usd"] = pricing.credits_to_usd(entry["credit"])
        return entry

    def _record(self, entry: dict) -> None:
        # every field may hold server text (usage, ids, URLs, messages): none may carry the key
        self.ledger.record(redact_all(entry, self._secrets()))

    async def _post_generation(self, call: _Call, rate_limit_retries: int | None) -> dict:
        url = f"{self.base_url}/images/generations"
        try:
            response = await self._request("POST", url, tracing_id=call.tracing_id, json_body=call.request.body(),
                                            idempotent=False, rate_limit_retries=rate_limit_retries,
                                            reserved=call.estimate or 0.0, flight=call)
        except APIError as exc:
            self._record(self._entry(call, outcome=exc.type or "error", status=exc.status, error=exc.message))
            raise
        except APIConnectionError as exc:
            # may_be_charged: the POST may have reached the gateway, so the outcome is unknown and
            # the estimate counts against the budget until reconciled; otherwise it never left.
            self._record(self._entry(call, outcome="unknown" if exc.may_be_charged else exc.type, error=exc.message))
            raise
        except BaseException:  # cancelled (Ctrl-C, Cancel, a batch torn down) or a bug
            if call.in_flight:  # the POST may be at the gateway: unknown, held at the estimate
                self._record(self._entry(call, outcome="unknown", error="interrupted before the gateway answered; "
                                         "it may have been charged (ledger.settle() books the real cost)"))
            else:  # waiting out a 429 or a back-off: every attempt so far was answered "not done"
                self._record(self._entry(call, outcome="not_sent", error="interrupted before the request was sent "
                                         "(while waiting to retry); nothing was charged"))
            raise
        try:
            answer = clean_text(response.json())  # the gateway's text may hold lone surrogates
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            self._record(self._entry(call, outcome="unknown", status=response.status_code,
                                     error="unreadable answer (not JSON)"))
            raise APIConnectionError(
                f"the gateway answered HTTP {response.status_code} but the body is not valid JSON "
                f"({excerpt(response.content, 80, self._secrets())!r}); the call may have been charged — it is in the ledger as unknown",
                status=response.status_code, tracing_id=call.tracing_id) from None
        answer["_status"] = response.status_code
        return answer

    def _task_from(self, answer: dict, call: _Call) -> Task:
        task_id = answer.get("id")
        if not task_id:
            self._record(self._entry(call, outcome="unknown", status=answer.get("_status"),
                                     error="task answer without an id"))
            raise APIConnectionError("the gateway accepted the task but sent no task id", tracing_id=call.tracing_id)
        # Relative URLs are resolved on the API's origin; one on another host is never sent the
        # key: the documented URL is polled instead and the ledger line says why.
        polling_url, cancel_url, notes = self._task_urls(str(task_id), answer.get("polling_url"),
                                                         answer.get("cancel_url"))
        task = Task(id=str(task_id), polling_url=polling_url, cancel_url=cancel_url,
                    status=str(answer.get("status") or "pending"),
                    created=answer.get("created"), timeout=answer.get("timeout"), call_id=call.call_id, raw=answer)
        self._record(self._entry(call, outcome="pending", status=answer.get("_status"), task_id=task.id,
                                 polling_url=task.polling_url, error="; ".join(notes) or None))
        return task

    async def _await_task(self, task: Task, call: _Call) -> dict:
        """Poll until the task ends. Cancelling this coroutine cancels the task at the gateway.

        A failed poll (5xx, 429, a reset, a timeout) never abandons the paid task: polling goes
        on, backing off up to ``config.MAX_POLL_BACKOFF`` s (or as ``Retry-After`` says), until
        the task's own deadline. Only answers that polling again cannot cure stop it early
        (:meth:`_stop_polling`)."""
        limit = _finite(task.timeout)  # the gateway's number, tolerating "300" or junk
        limit = limit if limit is not None and limit > 0 else call.request.task_timeout
        deadline = self._clock() + limit + config.TASK_DEADLINE_MARGIN
        # The schedule: a first poll soon after the start, then spacing out geometrically to the
        # steady ``poll_interval`` (0.5, 1, 2, 2 ... s after each other by default): a job done in
        # 0.3 s is seen at 0.5 s, not 2 s, for at most two more polls on a long job.
        step = min(config.POLL_FIRST, self.poll_interval)
        delay, failures, not_found = step, 0, 0
        try:
            while True:
                await self._sleep(delay)
                step = min(step * config.POLL_GROWTH, self.poll_interval)
                delay = step
                try:
                    response = await self._request("GET", task.polling_url, tracing_id=call.tracing_id, idempotent=True,
                                                    attempt_timeout=min(self.timeout, config.POLL_TIMEOUT))
                except (APIError, APIConnectionError) as exc:
                    documented = self._task_urls(task.id)[0]
                    if exc.status == 404 and task.polling_url != documented:
                        task.polling_url = documented  # the advertised path is unknown there: use the documented one
                        continue
                    failures += 1
                    not_found = not_found + 1 if exc.status == 404 else 0
                    if _poll_error_is_final(exc, not_found):
                        await self._stop_polling(task, call, exc)
                    if self._clock() > deadline:
                        await self._task_deadline(task, call, f"could not be polled before the deadline "
                                                              f"(last error: {exc.message})")
                    delay = min(config.MAX_POLL_BACKOFF,
                                max(exc.retry_after or 0.0, self.poll_interval * 2 ** min(failures, 8)))
                    continue
                failures = not_found = 0
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                if not isinstance(body, dict):  # e.g. `null` or a list from a broken proxy: still running
                    body = {}
                task.status = _normalise_status(body.get("status"))
                if task.status == "running" and _image_items(body):
                    task.status = "completed"  # an unknown status spelling, but the images are there
                task.raw = body
                if task.status == "completed":
                    body["_status"] = response.status_code
                    return body
                if task.status in ("failed", "cancelled"):
                    return self._task_ended(task, body, call)
                if self._clock() > deadline:
                    await self._task_deadline(task, call, f"was still {body.get('status', 'running')!r} after the deadline")
        except asyncio.CancelledError:
            status = await asyncio.shield(self._cancel_quietly(task))
            outcome = "cancelled" if status == "cancelled" else "pending"
            self._record(self._entry(call, outcome=outcome, task_id=task.id, polling_url=task.polling_url,
                                     error="cancelled by the user" if outcome == "cancelled" else
                                     "stopped waiting; the gateway did not confirm the cancel, so it may still be charged"))
            raise

    async def _task_deadline(self, task: Task, call: _Call, why: str) -> NoReturn:
        """The deadline passed: cancel the task (bounded); the ledger says how that went."""
        if await self._cancel_quietly(task) == "cancelled":  # the gateway confirms: no charge
            self._record(self._entry(call, outcome="cancelled", task_id=task.id,
                                     error="deadline passed; the task was cancelled at the gateway"))
            raise APITimeoutError(f"task {task.id} {why}, so it was cancelled at the gateway (not charged)",
                                  tracing_id=call.tracing_id)
        self._record(self._entry(call, outcome="pending", task_id=task.id, polling_url=task.polling_url,
                                 error=f"deadline passed: the task {why}"))
        raise APITimeoutError(
            f"task {task.id} {why} and the gateway did not confirm a cancel — it may still be charged, so it stays "
            f"in the ledger as pending (client.reconcile() checks it later); {_NO_RESEND}",
            tracing_id=call.tracing_id)

    async def _stop_polling(self, task: Task, call: _Call, exc: SharkError) -> NoReturn:
        """A poll answer that polling again cannot cure (401/403, another 4xx, a redirect, 404
        several times): try to cancel (bounded), record the outcome, raise naming the task."""
        what = (f"the gateway does not know task {task.id} (HTTP 404 on {config.POLL_NOT_FOUND_LIMIT} polls)"
                if exc.status == 404 else f"polling task {task.id} failed: {exc.message}")
        if await self._cancel_quietly(task) == "cancelled":
            self._record(self._entry(call, outcome="cancelled", task_id=task.id, error=f"{what}; cancelled"))
            tail = "so it was cancelled at the gateway (not charged)"
        else:
            self._record(self._entry(call, outcome="pending", task_id=task.id, polling_url=task.polling_url,
                                     error=f"{what}; the task may still run and be charged"))
            tail = ("the task may still run and be charged: it stays in the ledger as pending "
                    f"(client.reconcile() checks it later); {_NO_RESEND}")
        cls = type(exc) if exc.status != 404 else APIError  # a 404 here is not an unknown *model*
        error = cls(f"{what}; {tail}", status=exc.status, type=exc.type if exc.status != 404 else "task_not_found",
                    code=exc.code, tracing_id=call.tracing_id)
        raise error from None

    async def _cancel_quietly(self, task: Task) -> str:
        """Cancel while giving up a wait: bounded by ``config.CANCEL_TIMEOUT``; "cancelled" only
        when the gateway confirms it."""
        try:
            return await _within(self.cancel(task), config.CANCEL_TIMEOUT)
        except (SharkError, asyncio.TimeoutError):
            return "unconfirmed"

    def _task_ended(self, task: Task, body: dict, call: _Call) -> dict:
        err = body.get("error")
        if isinstance(err, dict):
            message, etype = str(err.get("message") or "task failed"), err.get("type")
        else:
            message, etype = (str(err) if err else f"task {task.status}"), None
        message = self._redact(message)  # a gateway that echoes the key must not put it in the ledger
        credit = _credit(body)
        if task.status == "cancelled":
            self._record(self._entry(call, outcome="cancelled", task_id=task.id, credit=credit, error=message))
            raise TaskCancelledError(f"task {task.id} was cancelled", task_id=task.id, tracing_id=call.tracing_id)
        self._record(self._entry(call, outcome="task_failed", task_id=task.id, credit=credit, error=message,
                                 usage=body.get("usage")))
        raise TaskFailedError(f"task {task.id} failed: {self._redact(message)}", task_id=task.id,
                              tracing_id=call.tracing_id, type=etype or TaskFailedError.type)

    async def _finish(self, answer: dict, call: _Call,
                      on_image: Callable[["GeneratedImage"], Any] | None = None) -> "GenerationResult":
        """Book the charge, then deliver every image that arrives. An image that cannot be
        delivered is listed in ``result.missing`` (with its URL and why) and never costs its
        siblings; only a call where none arrived raises :class:`DownloadError`. Each image is
        handed to ``on_image`` as soon as its bytes are complete (see :meth:`generate`)."""
        from .results import GeneratedImage, GenerationResult, MissingImage, Usage

        items = _image_items(answer)
        credit = _credit(answer)
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        task_id = answer.get("id") if call.request.is_task else None
        notes = _count_notes(answer, items, call.request.n)
        shown = [self._shown_url(it.get("url")) for it in items]
        base = dict(status=answer.get("_status"), task_id=task_id, credit=credit, usage=usage,
                    images_billed=len(items), urls=[u for u in shown if u and not u.startswith("data:")],
                    **({"note": "; ".join(notes)} if notes else {}), **_credit_report(answer))
        # The charge and every image URL are on disk before anything else can fail.
        if not items:
            self._record(self._entry(call, outcome="ok", error="the answer held no images", **base))
            raise APIConnectionError("the gateway answered but sent no images; any charge is in the ledger",
                                     status=answer.get("_status"), tracing_id=call.tracing_id)
        self._record(self._entry(call, outcome="ok", images=0, **base))
        # The result exists before the downloads, so each image can be handed out as it arrives.
        result = GenerationResult(
            images=[], usage=Usage.from_json(usage), credit=credit, tracing_id=call.tracing_id,
            request=call.request, model=call.request.model, task_id=task_id, created=answer.get("created"),
            offline=self.offline, call_id=call.call_id, notes=notes, expected=len(items),
        )

        def arrived(i: int, data: "bytes | _Missing") -> "GeneratedImage | _Missing":
            if isinstance(data, _Missing):
                return data
            url = shown[i]
            try:
                image = GeneratedImage.from_bytes(
                    data, url=None if url and url.startswith("data:") else url, index=i, result=result)
            except ValueError as exc:  # one unreadable image is missing on its own
                return _Missing(f"unreadable image: the bytes are not a readable image ({exc})")
            if on_image is not None:
                try:
                    on_image(image)
                except Exception as exc:  # noqa: BLE001 - a display hook never costs a paid image
                    why = f"on_image failed for image {i + 1} ({type(exc).__name__}: {self._redact(str(exc))[:120]})"
                    _log.warning("shark_nb: %s", why)
                    result.notes.append(why + "; the image is in the result")
            return image

        got = await self._download_all(items, call.tracing_id, arrived)
        PRICE_BOOK.record(call.request.model, call.request.settings, credit, len(items))
        result.latency = time.monotonic() - call.started
        for i, (item, url) in enumerate(zip(got, shown)):
            if isinstance(item, _Missing):
                result.missing.append(MissingImage(i, url, item.reason, item.status))
            else:
                result.images.append(item)
        missing = [{"index": m.index, "url": m.url, "reason": m.reason, "status": m.status} for m in result.missing]
        error = None
        if result.missing:
            error = ("download failed: " if not result.images else "partial download: ") + result._delivery_line()
        self._record(self._entry(call, outcome="ok", images=len(result.images), error=error,
                                 **({"missing": missing} if missing else {}), **base))
        if not result.images:
            raise self._nothing_delivered(result)
        result.ledger = self.ledger  # result.save records where the files went (the history links them)
        from .archive import schedule_thumbnails

        schedule_thumbnails(result)  # the history's thumbnails, on a worker thread; never raises
        return result

    def _nothing_delivered(self, result: "GenerationResult") -> DownloadError:
        missing = result.missing
        if len(missing) == 1:
            message = f"the image could not be delivered: {missing[0].reason}"
        else:
            message = f"none of the {len(missing)} images could be delivered: " + "; ".join(map(str, missing))
        urls = [m.url for m in missing if m.url and not m.url.startswith("data:")]
        message += "; the call was charged and is in the ledger"
        if urls:
            message += " with the image URLs (also in error.urls; fetch them while they live)"
        statuses = {m.status for m in missing}
        error = DownloadError(message, status=statuses.pop() if len(statuses) == 1 else None,
                              tracing_id=result.tracing_id)
        error.urls, error.missing, error.result = urls, list(missing), result
        return error

    def _shown_url(self, url: Any) -> str | None:
        """An image URL as kept in the result, the error and the ledger: absolute, without the key,
        and a ``data:`` URL shortened to its header."""
        if not isinstance(url, str) or not url.strip():
            return None
        url = url.strip()
        if url[:5].lower() == "data:":
            head = url.partition(",")[0]
            return f"data:{head[5:60]},… ({len(url):,} characters)"  # "data:" in lower case, as tested below
        try:
            url = str(httpx.URL(self.base_url).join(url))
        except (httpx.InvalidURL, ValueError, TypeError):
            pass
        return self._redact(url)

    async def _download_all(self, items: list[dict], tracing_id: str,
                            arrived: Callable[[int, "bytes | _Missing"], T]) -> list[T]:
        """``arrived(index, bytes or why it is missing)`` for every image as soon as its download
        ends (arrival order); their answers in the answer's order. One failure never costs the others."""
        sem = asyncio.Semaphore(config.DOWNLOAD_CONCURRENCY)

        async def one(i: int, item: dict) -> T:
            try:
                data: "bytes | _Missing" = await self._image_bytes(item, tracing_id, sem)
            except _Missing as exc:
                data = exc
            except Exception as exc:  # noqa: BLE001 - an unforeseen failure is this image's, not the call's
                data = _Missing(f"unexpected error ({type(exc).__name__}: {self._redact(str(exc))[:120]})")
            return arrived(i, data)

        return list(await asyncio.gather(*(one(i, it) for i, it in enumerate(items))))

    async def _image_bytes(self, item: dict, tracing_id: str, sem: asyncio.Semaphore) -> bytes:
        """One image: inline (``b64_json`` or a ``data:`` URL) decoded; a URL (absolute, or relative
        to the API's base URL) downloaded on the key-less client. Raises _Missing with the reason."""
        from . import images

        url, b64 = item.get("url"), item.get("b64_json")
        if b64:
            try:
                text = str(b64).strip()
                return images.decode_data_url(text)[1] if text[:5].lower() == "data:" else images.decode_base64(text)
            except ValueError:
                if not url:
                    raise _Missing("the inline image (b64_json) is not valid base64") from None
        if not isinstance(url, str) or not url.strip():
            raise _Missing(f"the answer gave no usable image URL ({type(url).__name__})")
        url = url.strip()
        if url[:5].lower() == "data:":
            try:
                return images.decode_data_url(url)[1]
            except ValueError as exc:
                raise _Missing(f"the data: URL cannot be decoded ({exc})") from None
        try:
            absolute = httpx.URL(self.base_url).join(url)  # a relative URL: against the API's base URL
        except (httpx.InvalidURL, ValueError, TypeError):
            raise _Missing("the image URL is malformed") from None
        if absolute.scheme not in ("http", "https") or not absolute.host:
            raise _Missing(f"the image URL is not http(s) ({absolute.scheme or 'no scheme'})")
        if self._key is not None and self._key.reveal() in str(absolute):
            raise _Missing("the image URL contains the API key; it was not fetched")
        async with sem:
            return await self._download(str(absolute), tracing_id)

    async def _fetch(self, url: str) -> tuple[httpx.Response, bytes]:
        """GET one URL on the key-less client. A 200 with a Content-Length is read into one buffer
        of that size: a large image is then not held twice while it downloads (httpx's list of
        chunks plus the joined bytes — with four parallel 2048x2048 PNGs, ~35 MB more at the peak)."""
        async with self._dl().stream("GET", url) as response:
            size = response.headers.get("content-length", "").strip()
            if (response.status_code != 200 or not size.isdigit() or not 0 < int(size) <= _PREALLOC_MAX
                    or response.headers.get("content-encoding", "identity").strip().lower() != "identity"):
                return response, await response.aread()
            buf = bytearray(int(size))
            pos = 0
            async for chunk in response.aiter_bytes():
                end = pos + len(chunk)
                if end > len(buf):
                    buf.extend(bytes(end - len(buf)))
                buf[pos:end] = chunk
                pos = end
            del buf[pos:]
            return response, bytes(buf)

    async def _download(self, url: str, tracing_id: str) -> bytes:
        """Fetch one signed URL, with no key, retrying transient failures: transport errors, a
        cut or empty body, 5xx and 429 (honouring ``Retry-After`` as the API path does).
        Raises _Missing with the reason."""
        attempt = 0
        while True:
            try:
                try:
                    # A whole-download deadline too: httpx's timeouts are per read, so a store that
                    # trickles a byte every few seconds would otherwise never time out.
                    response, data = await asyncio.wait_for(self._fetch(url), config.DOWNLOAD_TIMEOUT)
                except asyncio.TimeoutError:
                    raise httpx.ReadTimeout(f"no complete image within {config.DOWNLOAD_TIMEOUT:g} s") from None
            except httpx.RequestError as exc:  # also DecodingError and TooManyRedirects (a redirect loop)
                if retry.should_retry_exception(exc, idempotent=True, attempt=attempt, max_retries=self.max_retries):
                    await self._sleep(retry.backoff_delay(attempt, rng=self._rng))
                    attempt += 1
                    continue
                raise _Missing(f"the download failed ({type(exc).__name__}"
                               f"{f', {attempt + 1} attempts' if attempt else ''})") from None
            status = response.status_code
            if status == 200 and data and _image_looks_complete(data):
                return data
            if (status == 200 or status >= 500 or retry.should_retry_status(
                    status, attempt=attempt, max_retries=self.max_retries)) and attempt < self.max_retries:
                retry_after = retry.parse_retry_after(response.headers.get("retry-after"))
                await self._sleep(retry.backoff_delay(attempt, retry_after, rng=self._rng))
                attempt += 1
                continue
            tries = f", {attempt + 1} attempts" if attempt else ""
            why = (("the image arrived truncated" if data else "the file host sent an empty image") + tries
                   if status == 200 else
                   f"the signed URL has expired or was refused (HTTP {status})" if status in (401, 403)
                   else f"the file host answered HTTP {status}{' with an empty body' if not data else ''}{tries}")
            raise _Missing(why, status=None if status == 200 else status)


class _Missing(Exception):
    """Why one image of an answer could not be delivered (becomes a MissingImage)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def _count_notes(answer: dict, items: list[dict], asked: int) -> list[str]:
    """What the user must hear about the number of images: more or fewer than asked, or entries
    of ``data`` that held no image. Never silent: these go on the result and in the ledger."""
    notes = []
    if len(items) > asked:
        notes.append(f"the gateway sent {len(items)} images for n={asked}: all are delivered; the credit it "
                     "reports may cover all of them")
    elif 0 < len(items) < asked:
        notes.append(f"the gateway sent {len(items)} image{'s' if len(items) != 1 else ''} for n={asked}")
    data = answer.get("data")
    if isinstance(data, list) and items:
        empty = len(data) - len(_image_items({"data": data}))
        if empty > 0:
            notes.append(f"the answer listed {empty} entr{'ies' if empty != 1 else 'y'} without an image "
                         "(no url or b64_json)")
    return notes


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


def _poll_error_is_final(exc: SharkError, not_found: int) -> bool:
    """A failed poll that polling again cannot cure: a redirect (not followed), 401/403 or another
    4xx, or a 404 on ``config.POLL_NOT_FOUND_LIMIT`` polls in a row. 5xx, 408, 429 and transport
    failures (status None) are transient: the task is polled on until its deadline."""
    status = exc.status
    if status is None or status >= 500 or status in (408, 429):
        return False
    if status == 404:
        return not_found >= config.POLL_NOT_FOUND_LIMIT
    return True


def _task_path(task_id: str) -> str:
    """The documented task URL path, the id quoted so that it cannot leave the path."""
    return "/images/generations/" + urllib.parse.quote(str(task_id), safe="")


def _same_host(a: str, b: str) -> bool:
    """One host, or two spellings of this machine (localhost, 127.0.0.1, ::1)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b or (config._is_loopback(a) and config._is_loopback(b))


def _image_looks_complete(data: bytes) -> bool:
    """A cheap structural check that an image was not cut short (a proxy or object store can send
    a truncated body with a matching Content-Length): PNG ends with IEND, JPEG with EOI, a WebP's
    RIFF size fits. Unknown formats pass; decoding is left to the result."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.endswith(b"IEND\xaeB`\x82")
    if data.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in data[-1024:]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return True


def _image_items(answer: dict) -> list[dict]:
    """Images from ``data[].url``, ``data[].b64_json`` or ``output.urls[]`` (undocumented shapes)."""
    items: list[dict] = []
    data = answer.get("data")
    if isinstance(data, list):
        for d in data:
            if isinstance(d, dict) and (d.get("url") or d.get("b64_json")):
                items.append({"url": d.get("url"), "b64_json": d.get("b64_json")})
            elif isinstance(d, str) and d:
                items.append({"url": d})
    output = answer.get("output")
    if not items and isinstance(output, dict):
        for u in output.get("urls") or output.get("images") or []:
            if isinstance(u, str) and u:
                items.append({"url": u})
            elif isinstance(u, dict) and u.get("url"):
                items.append({"url": u["url"]})
    return items


def _credit(answer: dict) -> float | None:
    """The credit to count: a plausible number, else None (unknown); see ``ledger.credit_rule``."""
    return credit_rule(answer.get("credit"))[0]


def _credit_report(answer: dict) -> dict:
    """For the ledger: the raw credit and why it is not counted, when it is not (else {})."""
    raw = answer.get("credit")
    note = credit_rule(raw)[1]
    if isinstance(raw, float) and not math.isfinite(raw):
        raw = str(raw)  # NaN / Infinity: kept as the text JSON can hold
    return {"credit_reported": raw, "credit_note": note} if note else {}


def _clean_error(exc: SharkError) -> SharkError:
    """The error with lone surrogates in its text replaced (the gateway's message may hold
    them): it can then be printed, logged and written to the ledger."""
    for name in ("message", "type", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            setattr(exc, name, clean_text(value))
    exc.args = tuple(clean_text(a) for a in exc.args)
    return exc


def _finite(value: Any) -> float | None:
    """A finite number from a JSON value (numbers, or numeric strings such as "300"), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        if isinstance(value, str):
            try:
                f = float(value)
                return f if math.isfinite(f) else None
            except ValueError:
                return None
        return None
    return float(value)


def _credits_header(remaining: float) -> str:
    value = max(0.0, remaining)
    return str(int(value)) if value == int(value) else f"{value:.4f}".rstrip("0").rstrip(".")


def _excerpt(body: bytes, limit: int = 80) -> str:
    return excerpt(body, limit)  # redacted first, then cut


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValidationError(name, value, "a positive number of seconds")
    return float(value)


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(name, value, "a whole number >= 0")
    return value


def _int_range(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(name, value, f"a whole number from {lo} to {hi}")
    return value


# --- the sync client -------------------------------------------------------------------------------

class _LoopThread:
    """One private event loop in a daemon thread, shared by every sync client of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, name="shark_nb-loop", daemon=True).start()
                ready.wait()
                cls._loop = loop
            return cls._loop

    @classmethod
    def run(cls, coro: Awaitable[T]) -> T:
        started, done = threading.Event(), threading.Event()

        async def tracked() -> T:
            started.set()
            try:
                return await coro
            finally:
                done.set()

        future = asyncio.run_coroutine_threadsafe(tracked(), cls.loop())  # type: ignore[arg-type]
        try:
            return future.result()
        except KeyboardInterrupt:
            # Ctrl-C, in a notebook or a plain script: cancel the coroutine (which cancels a task
            # at the gateway and records the call) and WAIT until it has done so, bounded.
            # future.cancel() itself returns at once: in a script the interpreter would then exit
            # and kill this daemon loop thread before the cancel was ever sent.
            future.cancel()
            cls._wait_for_cleanup(started, done)
            raise

    @staticmethod
    def _wait_for_cleanup(started: threading.Event, done: threading.Event) -> None:
        """Wait (at most ``config.CANCEL_TIMEOUT`` + 2 s) for an interrupted call to finish its
        cancel and ledger line. Another Ctrl-C meanwhile does not cut that short: it is bounded,
        and cutting it would leave a paid task running with nothing kept."""
        end = time.monotonic() + config.CANCEL_TIMEOUT + 2.0
        told = False
        while time.monotonic() < end:
            try:
                if done.wait(0.05):
                    return
                if not started.is_set() and time.monotonic() > end - config.CANCEL_TIMEOUT - 1.5:
                    return  # cancelled before it began: nothing was sent
            except KeyboardInterrupt:
                if not told:
                    told = True
                    print("shark_nb: finishing the cancel at the gateway (a few seconds at most)…",
                          file=sys.stderr, flush=True)


class Shark:
    """The synchronous client: same arguments and methods as :class:`AsyncShark`, blocking."""

    def __init__(self, api_key: str | None = None, **kwargs: Any) -> None:
        self._async = AsyncShark(api_key, **kwargs)

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncShark", "Shark")

    @property
    def aio(self) -> AsyncShark:
        """The underlying async client (for use on an event loop you own)."""
        return self._async

    offline = property(lambda self: self._async.offline)
    ledger = property(lambda self: self._async.ledger)
    base_url = property(lambda self: self._async.base_url)
    simulator = property(lambda self: self._async.simulator)
    limiter = property(lambda self: self._async.limiter)
    api_key_set = property(lambda self: self._async.api_key_set)

    def build(self, prompt: Any, **params: Any) -> ImageRequest:
        return self._async.build(prompt, **params)

    def estimate(self, prompt: str = "", **params: Any) -> float | None:
        return self._async.estimate(prompt, **params)

    def generate(self, prompt: Any, **params: Any) -> "GenerationResult":
        return _LoopThread.run(self._async.generate(prompt, **params))

    estimate.__doc__ = AsyncShark.estimate.__doc__

    def send(self, request: ImageRequest, *, on_image: Callable[["GeneratedImage"], Any] | None = None
             ) -> "GenerationResult":
        """Send a validated request; ``on_image`` runs on the client's loop thread (see generate)."""
        return _LoopThread.run(self._async.send(request, on_image=on_image))

    def generate_many(self, prompts: Sequence[Any], *, concurrency: int = config.DEFAULT_CONCURRENCY,
                      **params: Any) -> list["GenerationResult | SharkError"]:
        return _LoopThread.run(self._async.generate_many(prompts, concurrency=concurrency, **params))

    def compare(self, prompt: Any, **kwargs: Any) -> "ComparisonGrid":
        return _LoopThread.run(self._async.compare(prompt, **kwargs))

    compare.__doc__ = AsyncShark.compare.__doc__

    def cancel(self, task: Task | str) -> str:
        return _LoopThread.run(self._async.cancel(task))

    def reconcile(self) -> list[dict]:
        return _LoopThread.run(self._async.reconcile())

    def close(self) -> None:
        _LoopThread.run(self._async.aclose())

    def __del__(self, _finalizing: Any = sys.is_finalizing, _schedule: Any = asyncio.run_coroutine_threadsafe,
                _threads: Any = _LoopThread) -> None:
        # A client dropped without close() (common in notebooks): close its connections on the
        # loop thread, without waiting, instead of leaving sockets open until exit. Never at
        # interpreter shutdown (the OS closes the sockets; module globals may already be None,
        # hence the names bound as defaults), and never a word on stderr.
        try:
            if _finalizing():
                return
            aio = getattr(self, "_async", None)
            loop = _threads._loop
            if aio is None or (aio._http is None and aio._downloads is None) or loop is None or not loop.is_running():
                return
            coro = aio.aclose()
            try:
                _schedule(coro, loop)
            except BaseException:  # the loop is shutting down with the interpreter
                coro.close()
        except Exception:  # noqa: BLE001 - a finaliser must not raise
            pass

    def __enter__(self) -> "Shark":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _every_models_fields() -> str:
    from .schemas import models

    return "\n\n".join(spec.describe() for spec in models())


# help(client.generate) lists every model's fields, from the schemas (the one source).
AsyncShark.generate.__doc__ = (AsyncShark.generate.__doc__ or "") + "\n        Every model's fields:\n\n" + \
    "\n".join("        " + line for line in _every_models_fields().splitlines()) + "\n"
Shark.generate.__doc__ = AsyncShark.generate.__doc__
