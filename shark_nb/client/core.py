""":class:`AsyncShark`: its settings, the public calls, and the steps of one generation
(write-ahead ledger line, the paid POST, then tasks and downloads from the mixins)."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import httpx

from .. import config, pricing
from ..errors import APIConnectionError, APIError, SharkError, ValidationError, excerpt, redact_all
from ..ledger import Ledger, clean_text, default_ledger
from ..limiter import Limiter, limiter_for
from ..request import ImageRequest, build_request
from ..schemas import DEFAULT_MODEL as MODEL
from ..schemas import model_spec
from ._answer import _image_items
from ._http import _Call, _HttpMixin
from .downloads import _DownloadMixin
from .tasks import Task, _TaskMixin

if TYPE_CHECKING:
    from ..compare import ComparisonGrid
    from ..results import GeneratedImage, GenerationResult


class AsyncShark(_TaskMixin, _DownloadMixin, _HttpMixin):
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
                from ..simulator import Simulator

                simulator = Simulator()
            self.simulator = simulator
            from ..simulator import AsyncSimulatorTransport

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

    async def aclose(self) -> None:
        for c in (self._http, self._downloads):
            if c is not None:
                await c.aclose()
        self._http = self._downloads = None

    async def __aenter__(self) -> "AsyncShark":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

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
        from ..compare import ComparisonGrid, plan_comparison

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


def _every_models_fields() -> str:
    from ..schemas import models

    return "\n\n".join(spec.describe() for spec in models())


# help(client.generate) lists every model's fields, from the schemas (the one source).
AsyncShark.generate.__doc__ = (AsyncShark.generate.__doc__ or "") + "\n        Every model's fields:\n\n" + \
    "\n".join("        " + line for line in _every_models_fields().splitlines()) + "\n"
