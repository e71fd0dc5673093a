"""The offline Shark API: one request handler, independent of how it is served.

:class:`Simulator` answers ``handle(method, url, headers, body) -> SimResponse`` the way the
published API does (docs/shark-api.md). It never sleeps and never touches the network: the
transport or server that serves it applies ``SimResponse.delay`` (and ``stream_fault``).

Routes (under the API base path, ``/api/v1`` by default)::

    POST /images/generations                 generate (sync 200, or 202 task with "async": true)
    GET  /images/generations/{task_id}       poll a task
    POST /images/generations/{task_id}/cancel
    GET  /models, GET /models/{model_id}     OpenAI-style model list
    GET  /files/{image_id}.{ext}?expires=&sig=   signed image URLs, on the *files* base URL

Authentication: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``; any non-empty key is
accepted except ``config.invalid_key`` (401 ``auth_error``). A missing key is 401 unless
``config.allow_anonymous``. File downloads take no key: a download that carries one is refused
with 400 like an object store does (``config.reject_download_auth``) and counted in
``sim.auth_leaks``; the key must never travel to the file host.

Every gateway model is served, each judged by its own schema from :mod:`shark_nb.schemas`
(the same one the client validates with; no second table here). The request is routed by
``model`` first: it must be a full model id (``gemini`` or another shark_nb alias is 404
``model_not_found`` with the full id as hint; an unknown id is 404 listing the models). Then
validation is strict and independent of the client (the simulator checks what clients send): a
field the model lacks is 400 ``unknown_parameter`` naming the model and the field; a wrong JSON
type (``"version": 7`` for Midjourney's string ``"7"``, ``n: 2.0``), a value that is not the
schema's canonical one (``"1024x1024"`` for Seedream, ``"2k"``, ``"jpg"``), out-of-range
numbers, bad data URLs and masks all answer 400 ``invalid_request_error`` naming the field
(``error.param``) and what is allowed; a missing required field (Grok's ``image``) is 400
``missing_required_parameter``. OpenAI-only fields (``user``, ``moderation``, ``style``...)
are unknown fields too; the OpenAI Python SDK's ``images.generate(model=, prompt=, size=, n=)``
sends none of them, so it works unchanged. ``config.extra_fields`` lists fields to tolerate
(and ignore) if needed. ``timeout`` without ``"async": true`` is validated, then ignored. A
prompt over ``params.MAX_PROMPT_CHARS`` is 400 ``input_too_large``; a prompt containing
``[moderate]`` is 400 ``content_moderation``. ``X-App-User-Credits`` (and ``config.balance``)
give 402 ``insufficient_credits`` when the estimated credit exceeds them.

Per model (see :class:`_Request`): the pixel size comes from the model's own fields (``size``;
``aspect_ratio`` x ``image_size`` at 1024/2048/4096 px on the long side; Grok: its reference
image's size), the format from ``output_format`` (Seedream: JPEG; others PNG), the answer shape
from the model (Gemini ``b64_json`` unless ``response_format: "url"``; others URLs;
``config.response_format`` / ``task_result_shape`` override it for every model). Each image shows
the model's short name in its top-left corner.

Costs are each schema's simulator price (``ModelSpec.simulator_credit``, docs/models.md; for
gpt-image-2 the token table of :mod:`shark_nb.pricing`, auto size = 1024x1024, auto quality =
medium). ``usage`` (tokens) is answered for gpt-image-2 only: the other models are not priced
in tokens, so their answers carry ``credit`` and no ``usage``. Every charge is tallied in
``sim.charges`` (sync answers when answered; tasks once, when they complete),
``sim.total_credit`` sums them, ``sim.requests`` counts requests per route and
``sim.log`` keeps the last requests (bodies with data URLs elided) for assertions.

Tasks follow a time-based state machine driven by ``config.clock`` (inject a fake clock in
tests): ``pending`` for ``task_pending`` seconds, then ``running``, then ``completed`` once
``latency`` seconds have passed since creation — or ``failed`` (``timeout_error``) at the task's
timeout if ``latency`` exceeds it. Cancel answers 200 ``cancelled`` for a pending or running
task (not charged; with ``cancel_running="refuse"`` a running task answers 409 ``conflict``) and
409 for a completed or failed one. Undocumented shapes a client must tolerate are switchable:
``task_result_shape`` (``data_url``, ``b64_json``, ``output_urls``), ``status_spelling`` (e.g.
``{"running": "in_progress", "pending": "queued"}``), ``task_error_as_string``,
``omit_credit``, ``omit_usage``, ``response_format="b64_json"`` / ``"url"`` (sync answers, every model).

Faults (deterministic; ``sim.inject(route, kind, count=1, **options)``, route one of ``post``,
``poll``, ``cancel``, ``download``, ``models``; queued faults are consumed in order by the next
requests they apply to):

``status``          answer ``status`` (default 502) with an error envelope (``type``,
                    ``message``, ``code``; ``retry_after`` adds a Retry-After header). The
                    request is not processed (a proxy or gateway answered).
``html``            an HTML error page (``status``, default 502), as a proxy would; not processed.
``empty``           ``status`` (default 502) with an empty body; not processed.
``truncated_json``  the request *is* processed (and charged), then its body (normally a 200's
                    JSON) is cut in half (for downloads: the image bytes), with a matching
                    Content-Length.
``stall``           processed normally, answered after ``delay`` extra seconds (default 30).
``no_images``       a 200 generation answer (post) or completed poll (poll) with ``data: []``;
                    the call is still charged. On an async post it marks that task.
``reset``           processed (and charged), then the connection drops mid-answer: the server
                    closes the socket after part of the body, the in-process transports raise
                    ``httpx.RemoteProtocolError``.
``task_failed``     post only: the next async task ends ``failed`` (``type``, default
                    ``provider_error``; ``message``) when it would have completed; a sync post
                    answers 502 ``provider_error`` instead.

Hidden limits (the client is not told them; it has to find them):

* ``sim.rate_limit = (max_posts, per_seconds)``: generation POSTs in a sliding window;
* ``sim.max_in_flight = K``: at most K generations at work at once (a POST is at work until its
  answer is due: ``latency`` seconds after it was accepted; a task until it is due to finish);
* ``sim.schedule_limits(after_posts, rate_limit=..., max_in_flight=...)``: change either limit
  once that many POSTs have been accepted (``sim.limit_schedule`` lists the pending changes).

Beyond a limit: 429 ``rate_limit_error`` with ``Retry-After`` — the time until a POST would be
accepted, in whole seconds rounded up (``retry_after_format="seconds"``, the default), as a
fraction (``"fractional"``, e.g. ``0.274``) or as an HTTP date (``"http-date"``).

Images are drawn by :mod:`.render` lazily, at download time (or at answer time for base64
answers), and cached by seed in a bounded LRU. Signed URLs live ``url_ttl`` seconds from when
the answer was produced (task URLs from completion); expired or tampered URLs answer 403 with an
XML body like an object store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import math
import os
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from .. import pricing
from ..params import MAX_PROMPT_CHARS
from ..schemas import find_model, model_ids, models
from ..schemas.schema import (COMMON_BODY_FIELDS, TASK_TIMEOUT_DEFAULT, TASK_TIMEOUT_MAX, TASK_TIMEOUT_MIN, Field,
                              ModelSpec, _fmt_bound)
from .render import FORMAT_MIME, RenderCache, RenderSpec, parse_size, seed_for

if TYPE_CHECKING:  # pragma: no cover
    import httpx

__all__ = [
    "Simulator",
    "SimulatorConfig",
    "SimResponse",
    "Fault",
    "ManualClock",
    "ROUTES",
    "FAULT_KINDS",
    "IN_PROCESS_API_BASE",
    "IN_PROCESS_FILES_BASE",
    "MODERATION_TOKEN",
]

IN_PROCESS_API_BASE = "http://api.shark-sim.invalid/api/v1"
IN_PROCESS_FILES_BASE = "http://files.shark-sim.invalid"
MODERATION_TOKEN = "[moderate]"
ROUTES = ("post", "poll", "cancel", "download", "models")
FAULT_KINDS = ("status", "html", "empty", "truncated_json", "stall", "no_images", "reset", "task_failed")
_FAULT_ROUTES = {"no_images": ("post", "poll"), "task_failed": ("post",)}
_PRE_KINDS = ("status", "html", "empty")
_WRAP_KINDS = ("truncated_json", "stall", "reset")
TASK_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
#: A request body larger than this is refused with 400 input_too_large.
MAX_BODY_BYTES = 64 * 1024 * 1024

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "auth_error",
    402: "insufficient_credits",
    403: "auth_error",
    404: "model_not_found",
    409: "conflict",
    429: "rate_limit_error",
    504: "timeout_error",
}
_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
_MODEL_OWNERS = {"openai": "openai", "google": "google", "bytedance": "bytedance",
                 "midjourney": "midjourney", "x-ai": "xai"}


class ManualClock:
    """A clock for tests: ``clock()`` returns the current value, ``advance(s)`` moves it on.

    ``Simulator(clock=ManualClock())`` makes tasks, URL expiry and rate limits deterministic.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += float(seconds)
            return self._t

    def __repr__(self) -> str:
        return f"ManualClock({self._t})"


def _env_latency() -> float:
    raw = os.environ.get("SHARK_SIM_LATENCY", "")
    try:
        value = float(raw) if raw.strip() else 0.05
    except ValueError:
        value = 0.05
    return value if math.isfinite(value) and value >= 0 else 0.05


RETRY_AFTER_FORMATS = ("seconds", "fractional", "http-date")


@dataclass
class SimulatorConfig:
    """How the simulator behaves. Every field has an offline-friendly default."""

    #: API base URL used in ``polling_url``/``cancel_url``. None: ``IN_PROCESS_API_BASE``, or the
    #: server's own address when served by :func:`~shark_nb.simulator.serve_in_thread`.
    api_base: str | None = None
    #: Base URL of the signed image links (the "object store"). None: as for ``api_base``.
    files_base: str | None = None
    #: How ``polling_url``/``cancel_url`` are advertised: ``"absolute"`` (on the scheme, host and
    #: port the request was addressed to, so ``localhost`` and ``127.0.0.1`` both work; on
    #: ``api_base`` when that is set explicitly) or ``"relative"`` (``/api/v1/images/...``, as the
    #: gateway's own video tasks do).
    task_urls: str = "absolute"
    #: Seconds a sync POST takes to answer, and a task's duration (env ``SHARK_SIM_LATENCY``).
    latency: float = field(default_factory=_env_latency)
    #: Extra seconds before each file download answers.
    download_latency: float = 0.0
    #: Lifetime of the signed image URLs, in seconds.
    url_ttl: float = 600.0
    #: Seconds a task stays ``pending`` before ``running``. None: ``min(1.0, latency / 4)``.
    task_pending: float | None = None
    #: Monotonic-style clock in seconds (inject a fake one in tests). Unix times the simulator
    #: reports (``created``, URL ``expires``) are this clock plus a fixed offset taken at start.
    clock: Callable[[], float] = time.monotonic
    #: The one key that is refused with 401.
    invalid_key: str = "sk-invalid"
    #: Accept requests that carry no key at all.
    allow_anonymous: bool = True
    #: Account balance in credits (None: unlimited); charges are deducted, 402 when too low.
    balance: float | None = None
    #: Leave ``credit`` out of answers (a gateway with no price configured). Still tallied.
    omit_credit: bool = False
    #: Leave ``usage`` out of answers.
    omit_usage: bool = False
    #: Sync answers carry ``"url"`` or ``"b64_json"`` images, for every model (it wins over a
    #: Gemini request's own ``response_format``). None: each model's own shape (URLs; Gemini
    #: ``b64_json`` unless its request asks ``response_format: "url"``).
    response_format: str | None = None
    #: Completed-task image shape: ``data_url`` (data[].url), ``b64_json`` (data[].b64_json) or
    #: ``output_urls`` (output.urls[]), for every model. None: the model's own answer shape
    #: (``data_url``; Gemini ``b64_json`` unless asked for ``url``).
    task_result_shape: str | None = None
    #: How task statuses are spelled, e.g. ``{"running": "in_progress", "pending": "queued"}``.
    status_spelling: dict[str, str] = field(default_factory=dict)
    #: A failed task's ``error`` is a plain string instead of an envelope object.
    task_error_as_string: bool = False
    #: ``"allow"``: a running task can be cancelled; ``"refuse"``: it answers 409.
    cancel_running: str = "allow"
    #: ``(max_posts, per_seconds)`` for generation POSTs, or None. Also settable as
    #: ``sim.rate_limit`` at any time.
    rate_limit: tuple[int, float] | None = None
    #: At most this many generations at work at once (429 beyond), or None. Also ``sim.max_in_flight``.
    max_in_flight: int | None = None
    #: ``"seconds"`` (whole, rounded up), ``"fractional"`` or ``"http-date"`` for Retry-After.
    retry_after_format: str = "seconds"
    #: Refuse (400) downloads that carry an Authorization or x-api-key header.
    reject_download_auth: bool = True
    #: Body fields tolerated (and ignored) besides the documented ones; empty = strict.
    extra_fields: tuple[str, ...] = ()
    #: HMAC key for the signed URLs.
    signing_key: bytes = b"shark-nb-offline-simulator"
    #: Bound of the rendered-image cache, in bytes.
    cache_max_bytes: int = 256 * 1024 * 1024
    #: How many image records and tasks are remembered (oldest finished ones are forgotten).
    max_records: int = 20_000

    def __post_init__(self) -> None:
        if self.response_format not in (None, "url", "b64_json"):
            raise ValueError("response_format must be None, 'url' or 'b64_json'")
        if self.task_result_shape not in (None, "data_url", "b64_json", "output_urls"):
            raise ValueError("task_result_shape must be None, 'data_url', 'b64_json' or 'output_urls'")
        if self.cancel_running not in ("allow", "refuse"):
            raise ValueError("cancel_running must be 'allow' or 'refuse'")
        if self.task_urls not in ("absolute", "relative"):
            raise ValueError("task_urls must be 'absolute' or 'relative'")
        if self.retry_after_format not in RETRY_AFTER_FORMATS:
            raise ValueError("retry_after_format must be 'seconds', 'fractional' or 'http-date'")
        if self.max_in_flight is not None and (isinstance(self.max_in_flight, bool)
                                               or not isinstance(self.max_in_flight, int) or self.max_in_flight < 1):
            raise ValueError("max_in_flight must be None or a whole number >= 1")
        bad = set(self.status_spelling) - set(TASK_STATUSES)
        if bad:
            raise ValueError(f"status_spelling keys must be task statuses, not {sorted(bad)}")
        if self.latency < 0 or self.download_latency < 0 or self.url_ttl < 0:
            raise ValueError("latency, download_latency and url_ttl must be >= 0")


@dataclass
class SimResponse:
    """One answer. The server/transport waits ``delay`` seconds before sending it.

    ``stream_fault == "reset"``: send only part of it and drop the connection.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    stream_fault: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    """A queued fault; ``remaining`` counts the requests it will still hit."""

    route: str
    kind: str
    remaining: int
    options: dict[str, Any]


class _APIError(Exception):
    def __init__(self, status: int, message: str, type: str | None = None, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status, "provider_error" if status >= 500 else "invalid_request_error")
        self.code = code
        self.param = param
        self.headers = headers or {}


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> _APIError:
    return _APIError(400, message, "invalid_request_error", code, param)


#: Output format of models without an ``output_format`` field (a simulator decision, see
#: docs/reliability.md "Issue 9 — the simulator serves every model"); the rest answer PNG.
_OUTPUT_FORMAT = {"bytedance/seedream-v4.5": "jpeg"}
#: Long side in pixels of an ``image_size`` class (no ``image_size``: 1024).
_LONG_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}
#: The largest side rendered for a model that answers at its reference image's size.
_MAX_SIDE = 4096


def _ratio_dims(ratio: str, long_side: int) -> tuple[int, int]:
    """``"16:9"`` at 1024 -> (1024, 576): the long side given, the short one from the ratio,
    rounded to a multiple of 8."""
    a, _, b = ratio.partition(":")
    w, h = float(a), float(b)
    short = max(8, int(round(long_side * min(w, h) / max(w, h) / 8)) * 8)
    return (long_side, short) if w >= h else (short, long_side)


@dataclass
class _Request:
    """A validated generation request, for any model: its schema, the prompt, the effective
    settings (the model's defaults overlaid with what was sent; no URLs), the reference image
    URLs (``image`` or Midjourney's ``sref``), the mask, and task mode."""

    spec: ModelSpec
    prompt: str
    settings: dict[str, Any]
    image: list[str]
    mask: str | None
    is_async: bool
    timeout: int
    references: tuple[bytes, ...] = ()
    mask_bytes: bytes | None = None
    #: Pixel size of the first data: reference image (None: none, or only http(s) ones).
    reference_size: tuple[int, int] | None = None

    @property
    def model(self) -> str:
        return self.spec.id

    @property
    def n(self) -> int:
        return int(self.settings.get("n", 1))

    @property
    def dimensions(self) -> tuple[int, int]:
        """The rendered pixel size, from the model's own fields: ``size`` (``WxH`` / ``W*H``;
        auto = 1024x1024), else ``aspect_ratio`` with ``image_size`` (1K/2K/4K = 1024/2048/4096
        on the long side; none: 1024), else the reference image's size (at most 4096 on the
        long side), else 1024x1024."""
        s = self.settings
        if "size" in s:
            return parse_size(s["size"])
        if "aspect_ratio" in s:
            return _ratio_dims(s["aspect_ratio"], _LONG_SIDE.get(s.get("image_size"), 1024))
        if self.reference_size is not None:
            w, h = self.reference_size
            scale = min(1.0, _MAX_SIDE / max(w, h))
            return max(1, round(w * scale)), max(1, round(h * scale))
        return 1024, 1024

    @property
    def size(self) -> str:
        w, h = self.dimensions
        return f"{w}x{h}"

    @property
    def output_format(self) -> str:
        return self.settings.get("output_format") or _OUTPUT_FORMAT.get(self.model, "png")

    def answer_shape(self, override: str | None) -> str:
        """``url`` or ``b64_json``: the config's override if set, else the model's (Gemini:
        its ``response_format``, b64_json by default)."""
        return override or self.spec.answer_shape_for(self.settings)

    def seed_settings(self) -> str:
        """The settings that shape the picture beyond size/quality/background/format, as JSON
        ("" for gpt-image-2, whose seeds stay as they were)."""
        rest = {k: v for k, v in self.settings.items()
                if k not in ("n", "size", "quality", "background", "output_format", "response_format")}
        return json.dumps(rest, sort_keys=True, separators=(",", ":")) if rest else ""

    def inputs_digest(self) -> str:
        h = hashlib.sha256()
        for url in self.image:
            h.update(hashlib.sha256(url.encode()).digest())
        if self.mask:
            h.update(b"mask" + hashlib.sha256(self.mask.encode()).digest())
        return h.hexdigest()[:16] if (self.image or self.mask) else ""

    def costs(self) -> tuple[int | None, int | None, float]:
        """(input tokens, output tokens, credit). The credit is the schema's simulator price;
        tokens only for a model priced by the token table (gpt-image-2), else None."""
        credit = self.spec.simulator_credit(self.prompt, self.settings, len(self.image))
        if self.spec.token_estimate is None:
            return None, None, credit
        in_t = pricing.input_tokens(self.prompt, len(self.image))
        out_t = pricing.output_tokens(self.settings.get("quality", "auto"), self.settings.get("size", "auto"),
                                      self.n)
        return in_t, out_t, credit


@dataclass
class _Task:
    id: str
    request: _Request
    t0: float
    created: int
    timeout: int
    latency: float
    pending_for: float
    tracing_id: str
    status: str = "pending"  # a *final* status once it is terminal
    images: list[tuple[str, RenderSpec]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    finished_at: float | None = None
    fail_with: dict[str, Any] | None = None
    no_images: bool = False
    credit: float | None = None
    usage: dict[str, int] | None = None


def _strict_value(spec: ModelSpec, f: Field, v: Any) -> Any:
    """One setting judged strictly from its schema field, as the gateway would: the exact JSON
    type (a number for a string-valued field such as Midjourney's ``version`` is refused: the
    schema's canonical string is what clients send) and the canonical value (no case folding, no
    ``jpg``). 400 naming the field and what is allowed."""
    name = f.name
    lo = None if f.min is None else _fmt_bound(f.min)
    hi = None if f.max is None else _fmt_bound(f.max)
    if f.kind in ("int", "number"):
        ok = not isinstance(v, bool) and isinstance(v, int if f.kind == "int" else (int, float)) and \
            (not isinstance(v, float) or math.isfinite(v))
        what = "an integer" if f.kind == "int" else "a number"
        if not ok:
            raise _bad(f"{name} must be {what} from {lo} to {hi}", name, "invalid_type")
        if (f.min is not None and v < f.min) or (f.max is not None and v > f.max):
            raise _bad(f"{name} must be from {lo} to {hi}, got {v}", name)
        return v
    if f.kind == "choice":
        if not isinstance(v, str):
            kind = "null" if v is None else "boolean" if isinstance(v, bool) else \
                "number" if isinstance(v, (int, float)) else "array" if isinstance(v, list) else "object"
            raise _bad(f"{name} must be a string, one of {', '.join(f.choices)}; got {json.dumps(v)} "
                       f"(a JSON {kind}; {spec.id} takes the string)", name, "invalid_type")
        if v not in f.choices:
            extra = " (this model has no transparent background)" if name == "background" and v == "transparent" else ""
            raise _bad(f"{name} must be one of {', '.join(f.choices)}; got {v!r}{extra}", name)
        return v
    if f.kind == "bool":
        if not isinstance(v, bool):
            raise _bad(f"{name} must be a boolean", name, "invalid_type")
        return v
    if not isinstance(v, str):  # text
        raise _bad(f"{name} must be a string", name, "invalid_type")
    return v


def _elide(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:"):
        head, _, payload = value.partition(",")
        return f"{head},<{len(payload) * 3 // 4} bytes>"
    if isinstance(value, list):
        return [_elide(v) for v in value]
    return value


class Simulator:
    """The offline Shark API service. Thread-safe; share one between transports and a server.

    ``Simulator(config)`` or ``Simulator(latency=0, url_ttl=5, ...)`` (keyword overrides).
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        config = config or SimulatorConfig()
        self.config = replace(config, **overrides) if overrides else config
        self._lock = threading.RLock()
        self._epoch = time.time() - self.config.clock()
        self.rate_limit: tuple[int, float] | None = self.config.rate_limit
        self.max_in_flight: int | None = self.config.max_in_flight
        #: ``[(after_posts, {"rate_limit": ..., "max_in_flight": ...}), ...]``: pending limit changes
        self.limit_schedule: list[tuple[int, dict[str, Any]]] = []
        self.accepted_posts = 0  # generation POSTs that passed the limits
        self._at_work: list[float] = []  # when each accepted generation's answer is due
        self.balance: float | None = self.config.balance
        self.cache = RenderCache(self.config.cache_max_bytes)
        self.auth_leaks = 0
        self.log: deque[dict[str, Any]] = deque(maxlen=1000)
        self._charges: list[dict[str, Any]] = []
        self._requests: Counter[str] = Counter()
        self._tasks: "OrderedDict[str, _Task]" = OrderedDict()
        self._images: "OrderedDict[str, RenderSpec]" = OrderedDict()
        self._image_weights: dict[str, int] = {}
        self._weight = 0
        self._faults: list[Fault] = []
        self._post_times: deque[float] = deque()
        self._bound_api_base: str | None = None
        self._bound_files_base: str | None = None
        self._local = threading.local()  # the origin the request being handled was addressed to

    # ------------------------------------------------------------------ public helpers

    @property
    def api_base(self) -> str:
        return (self.config.api_base or self._bound_api_base or IN_PROCESS_API_BASE).rstrip("/")

    @property
    def files_base(self) -> str:
        return (self.config.files_base or self._bound_files_base or IN_PROCESS_FILES_BASE).rstrip("/")

    def bind(self, api_base: str, files_base: str) -> None:
        """Set the base URLs used when the config leaves them unset (done by the server)."""
        self._bound_api_base = api_base
        self._bound_files_base = files_base

    def now(self) -> float:
        """The simulator's clock (``config.clock``)."""
        return self.config.clock()

    def now_unix(self) -> float:
        """Unix time as the simulator sees it (the clock plus the offset taken at start)."""
        return self.config.clock() + self._epoch

    @property
    def charges(self) -> list[dict[str, Any]]:
        """Every charge so far (copies): tracing_id, task_id, credit, images, time, tokens.

        Tasks whose time has come are settled first, so a completed task is charged even if
        nobody polled it.
        """
        self.settle()
        with self._lock:
            return [dict(c) for c in self._charges]

    @property
    def total_credit(self) -> float:
        return round(sum(c["credit"] for c in self.charges), 4)

    @property
    def requests(self) -> Counter:
        """Requests seen per route (post, poll, cancel, download, models, other)."""
        with self._lock:
            return Counter(self._requests)

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The current public view of a task (as a poll would answer), or None."""
        with self._lock:
            t = self._tasks.get(task_id)
            if t is None:
                return None
            status = self._advance(t)
        return self._task_body(t, status)

    def reset_stats(self) -> None:
        """Forget charges, request counts, the log and auth-leak count (not tasks or images)."""
        with self._lock:
            self._charges.clear()
            self._requests.clear()
            self.log.clear()
            self.auth_leaks = 0

    def schedule_limits(self, after_posts: int, **limits: Any) -> None:
        """Change ``rate_limit`` and/or ``max_in_flight`` once ``after_posts`` generation POSTs
        (counted from the simulator's start, ``sim.accepted_posts``) have been accepted."""
        unknown = set(limits) - {"rate_limit", "max_in_flight"}
        if unknown:
            raise ValueError(f"schedule_limits takes rate_limit and max_in_flight, not {sorted(unknown)}")
        with self._lock:
            self.limit_schedule.append((int(after_posts), dict(limits)))
            self.limit_schedule.sort(key=lambda change: change[0])

    def inject(self, route: str, kind: str, count: int = 1, **options: Any) -> Fault:
        """Queue a fault for the next ``count`` matching requests on ``route``."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, not {kind!r}")
        allowed = _FAULT_ROUTES.get(kind)
        if allowed and route not in allowed:
            raise ValueError(f"fault {kind!r} applies to routes {allowed}, not {route!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive integer")
        known = {"status", "type", "message", "code", "retry_after", "delay", "body"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown fault options {sorted(unknown)}; known: {sorted(known)}")
        fault = Fault(route, kind, count, dict(options))
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def settle(self) -> None:
        """Advance every unfinished task to its current state (charging completed ones)."""
        with self._lock:
            for t in list(self._tasks.values()):
                if t.status not in TERMINAL:
                    self._advance(t)

    def transport(self) -> "httpx.BaseTransport":
        """A :class:`~shark_nb.simulator.SimulatorTransport` over this simulator."""
        from .transport import SimulatorTransport

        return SimulatorTransport(self)

    def async_transport(self) -> "httpx.AsyncBaseTransport":
        """An :class:`~shark_nb.simulator.AsyncSimulatorTransport` over this simulator."""
        from .transport import AsyncSimulatorTransport

        return AsyncSimulatorTransport(self)

    def image_bytes(self, image_id: str) -> bytes:
        """The rendered bytes of a served image (renders on first use). KeyError if unknown."""
        with self._lock:
            spec = self._images[image_id]
        return self.cache.get(spec)

    # ------------------------------------------------------------------ entry point

    def handle(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> SimResponse:
        """Answer one HTTP request. Never sleeps; see :class:`SimResponse`."""
        h = {str(k).lower(): str(v) for k, v in headers.items()}
        parts = urlsplit(url)
        self._local.origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None
        path = unquote(parts.path)
        method = method.upper()
        route, arg = self._route(method, path)
        with self._lock:
            self._requests[route] += 1
        entry: dict[str, Any] = {"time": self.now_unix(), "route": route, "method": method, "path": path,
                                 "auth": "bearer" if "authorization" in h else "x-api-key" if "x-api-key" in h else None}
        if route == "download":
            try:
                resp = self._download(method, arg, parts.query, h)
            except Exception as e:  # noqa: BLE001 - answer like a broken object store, never hang up
                resp = self._xml_error(500, "InternalError", f"simulator internal error: {type(e).__name__}")
        else:
            tracing = h.get("x-tracing-id", "").strip() or str(uuid.uuid4())
            entry["tracing_id"] = tracing
            try:
                resp = self._api(route, method, arg, h, body, tracing, entry)
            except _APIError as e:
                resp = self._error(e)
            except Exception as e:  # noqa: BLE001 - a simulator bug must still answer like a server
                resp = self._error(_APIError(500, f"simulator internal error: {type(e).__name__}: {e}",
                                             "provider_error", "internal_error"))
            resp.headers["X-Tracing-ID"] = tracing
        entry["status"] = resp.status
        with self._lock:
            self.log.append(entry)
        return resp

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, path: str) -> tuple[str, Any]:
        api_path = urlsplit(self.api_base).path.rstrip("/")
        files_path = urlsplit(self.files_base).path.rstrip("/")
        if path.startswith(files_path + "/files/"):
            return "download", path[len(files_path) + len("/files/"):]
        if api_path and not (path == api_path or path.startswith(api_path + "/")):
            return "other", ("not_found", path)
        rest = path[len(api_path):].rstrip("/") or "/"
        if rest == "/images/generations":
            return ("post", None) if method == "POST" else ("other", ("method", path))
        m = re.fullmatch(r"/images/generations/([^/]+)", rest)
        if m:
            return ("poll", m[1]) if method in ("GET", "HEAD") else ("other", ("method", path))
        m = re.fullmatch(r"/images/generations/([^/]+)/cancel", rest)
        if m:
            return ("cancel", m[1]) if method == "POST" else ("other", ("method", path))
        if rest == "/models" or rest.startswith("/models/"):
            arg = rest[len("/models/"):] if rest.startswith("/models/") else None
            return ("models", arg) if method in ("GET", "HEAD") else ("other", ("method", path))
        return "other", ("not_found", path)

    # ------------------------------------------------------------------ faults

    def _take_fault(self, route: str, kinds: tuple[str, ...]) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.route == route and f.kind in kinds:
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def _fault_response(self, fault: Fault, route: str) -> SimResponse:
        o = fault.options
        status = int(o.get("status", 502))
        if fault.kind == "html":
            reason = _REASONS.get(status, "Error")
            page = o.get("body") or (
                f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            return SimResponse(status, {"Content-Type": "text/html"}, page.encode())
        if fault.kind == "empty":
            return SimResponse(status, {}, b"")
        # "status"
        err = _APIError(status, o.get("message") or f"simulated {status} error", o.get("type"), o.get("code"))
        if route == "download":
            resp = self._xml_error(status, o.get("code") or "InternalError", err.message)
        else:
            resp = self._error(err)
        if o.get("retry_after") is not None:
            resp.headers["Retry-After"] = self._retry_after_value(o["retry_after"])
        return resp

    def _wrap_fault(self, fault: Fault | None, resp: SimResponse) -> SimResponse:
        if fault is None:
            return resp
        if fault.kind == "stall":
            resp.delay += float(fault.options.get("delay", 30.0))
        elif fault.kind == "truncated_json":
            cut = max(1, len(resp.body) // 2) if resp.body else 0
            resp.body = resp.body[:cut]
        elif fault.kind == "reset":
            resp.stream_fault = "reset"
        return resp

    def _retry_after_value(self, seconds: Any) -> str:
        if isinstance(seconds, str):
            return seconds
        if self.config.retry_after_format == "fractional":
            return f"{max(0.001, float(seconds)):.3f}"
        secs = max(1, math.ceil(float(seconds)))
        if self.config.retry_after_format == "http-date":
            return formatdate(self.now_unix() + secs, usegmt=True)
        return str(secs)

    # ------------------------------------------------------------------ API

    def _api(self, route: str, method: str, arg: Any, h: dict[str, str], body: bytes, tracing: str,
             entry: dict[str, Any]) -> SimResponse:
        if route == "other":
            why, path = arg
            if why == "method":
                raise _APIError(405, f"method {method} is not allowed on {path}", "invalid_request_error",
                                "method_not_allowed")
            raise _APIError(404, f"no route for {method} {path}", "invalid_request_error", "not_found")
        fault = self._take_fault(route, _PRE_KINDS + _WRAP_KINDS)
        if fault is not None and fault.kind in _PRE_KINDS:
            return self._fault_response(fault, route)
        self._authenticate(h)
        try:
            if route == "post":
                resp = self._post(h, body, tracing, entry)
            elif route == "poll":
                resp = self._poll(arg)
            elif route == "cancel":
                resp = self._cancel(arg)
            else:
                resp = self._models(arg)
        except _APIError as e:
            resp = self._error(e)
        if method == "HEAD":
            resp.headers["Content-Length"] = str(len(resp.body))
            resp.body = b""
        return self._wrap_fault(fault, resp)

    def _authenticate(self, h: dict[str, str]) -> None:
        key: str | None = None
        auth = h.get("authorization")
        if auth is not None:
            scheme, _, token = auth.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _APIError(401, "malformed Authorization header: expected 'Bearer <key>'", "auth_error",
                                "invalid_api_key")
            key = token.strip()
        elif h.get("x-api-key", "").strip():
            key = h["x-api-key"].strip()
        if key is None:
            if self.config.allow_anonymous:
                return
            raise _APIError(401, "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                            "auth_error", "missing_api_key")
        if key == self.config.invalid_key:
            raise _APIError(401, "invalid API key", "auth_error", "invalid_api_key")

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None, delay: float = 0.0) -> SimResponse:
        body = json.dumps(payload, separators=(",", ":")).encode()
        hdrs = {"Content-Type": "application/json"}
        if headers:
            hdrs.update(headers)
        return SimResponse(status, hdrs, body, delay)

    def _error(self, e: _APIError) -> SimResponse:
        err: dict[str, Any] = {"message": e.message, "type": e.type}
        if e.code:
            err["code"] = e.code
        if e.param:
            err["param"] = e.param
        return self._json(e.status, {"error": err}, e.headers)

    # -- POST /images/generations

    def _parse_json(self, h: dict[str, str], body: bytes) -> dict[str, Any]:
        ctype = h.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise _bad(f"Content-Type must be application/json, not {ctype!r} (the API takes JSON only)",
                       code="unsupported_media_type")
        if len(body) > MAX_BODY_BYTES:
            raise _APIError(400, f"request body too large ({len(body):,} bytes; the limit is {MAX_BODY_BYTES:,})",
                            "input_too_large", "body_too_large")
        if not body.strip():
            raise _bad("the request body is empty: expected a JSON object", code="invalid_json")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise _bad(f"the request body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise _bad("the request body must be a JSON object", code="invalid_json")
        return payload

    def _validate(self, p: dict[str, Any]) -> _Request:
        # The gateway routes by model first; the model's schema (shark_nb.schemas) then judges
        # the fields, strictly: the exact JSON type and canonical value the schema publishes.
        if "model" not in p:
            raise _bad("missing required parameter: 'model'", "model", "missing_required_parameter")
        model = p["model"]
        if not isinstance(model, str):
            raise _bad("model must be a string", "model", "invalid_type")
        spec = self._model_or_404(model)
        allowed = set(COMMON_BODY_FIELDS) | set(spec.field_names) | set(self.config.extra_fields)
        for key in p:
            if key not in allowed:
                raise self._unknown_field(spec, key)

        if "prompt" not in p:
            raise _bad("missing required parameter: 'prompt'", "prompt", "missing_required_parameter")
        prompt = p["prompt"]
        if not isinstance(prompt, str):
            raise _bad("prompt must be a string", "prompt", "invalid_type")
        if not prompt.strip():
            raise _bad("prompt must not be empty", "prompt", "empty_prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise _APIError(400, f"prompt is too long: {len(prompt):,} characters, the limit is "
                                 f"{MAX_PROMPT_CHARS:,}", "input_too_large", "prompt_too_long", "prompt")
        for f in spec.fields:
            if f.required and p.get(f.name) is None:
                what = "the image to edit" if f.role == "image" else f.allowed()
                raise _bad(f"missing required parameter: {f.name!r} ({spec.id} requires {what})", f.name,
                           "missing_required_parameter")

        given = {f.name: _strict_value(spec, f, p[f.name]) for f in spec.settings
                 if f.name in p and f.kind not in ("url", "urls")}

        is_async = p.get("async", False)
        if not isinstance(is_async, bool):
            raise _bad("async must be a boolean", "async", "invalid_type")
        timeout = p.get("timeout", TASK_TIMEOUT_DEFAULT)
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise _bad(f"timeout must be an integer number of seconds from {TASK_TIMEOUT_MIN} to "
                       f"{TASK_TIMEOUT_MAX}", "timeout", "invalid_type")
        if not TASK_TIMEOUT_MIN <= timeout <= TASK_TIMEOUT_MAX:
            raise _bad(f"timeout must be from {TASK_TIMEOUT_MIN} to {TASK_TIMEOUT_MAX} seconds, got {timeout}",
                       "timeout")
        # (timeout without async is accepted and ignored: it only applies to tasks.)

        # Reference images (gpt-image-2 / Gemini ``image`` lists, Grok's one ``image``,
        # Midjourney's ``sref``): each data: URL decoded and checked.
        images: list[str] = []
        references: list[bytes] = []
        first_size: tuple[int, int] | None = None
        for f in spec.fields:
            if f.kind not in ("url", "urls") or f.role == "mask" or f.name not in p:
                continue
            raw = p[f.name]
            if f.kind == "urls":
                if not isinstance(raw, list):
                    raise _bad(f"{f.name} must be an array of image URLs (data: or http(s))", f.name, "invalid_type")
                if not raw:
                    raise _bad(f"{f.name} must contain at least one URL when present", f.name)
                most = spec.max_images if f.role == "image" else int(f.max or len(raw))
                if len(raw) > most:
                    raise _bad(f"at most {most} reference images, got {len(raw)}", f.name)
                named = [(url, f"{f.name}[{i}]") for i, url in enumerate(raw)]
            else:
                if isinstance(raw, list):
                    raise _bad(f"{f.name} must be one image URL string (data: or http(s)), not an array of "
                               f"{len(raw)}: {spec.id} takes a single image", f.name, "invalid_type")
                named = [(raw, f.name)]
            for url, name in named:
                data, dims, _fmt, _alpha = self._check_image_url(url, name)
                images.append(url)
                if data is not None:
                    references.append(data)
                    if first_size is None:
                        first_size = dims
        mask: str | None = None
        mask_bytes: bytes | None = None
        mask_field = spec.mask_field
        if mask_field is not None and mask_field.name in p:
            mask = p[mask_field.name]
            if not images:
                raise _bad("mask needs at least one reference image in 'image'", "mask")
            mask_bytes, dims, fmt, alpha = self._check_image_url(mask, "mask")
            if mask_bytes is not None:
                if fmt != "PNG":
                    raise _bad(f"mask must be a PNG, got {fmt}", "mask", "invalid_image_format")
                if not alpha:
                    raise _bad("mask must have an alpha channel (transparent = area to repaint)", "mask",
                               "invalid_mask")
                if first_size is not None and dims != first_size:
                    raise _bad(f"mask size {dims[0]}x{dims[1]} does not match the first image "
                               f"({first_size[0]}x{first_size[1]})", "mask", "invalid_mask")
        return _Request(spec, prompt, spec.effective(given), images, mask, is_async, timeout, tuple(references),
                        mask_bytes, first_size)

    @staticmethod
    def _model_or_404(model: str) -> ModelSpec:
        """The schema of a model the gateway knows by this exact id; else 404 model_not_found,
        with a hint when it is one of shark_nb's aliases (the gateway knows full ids only)."""
        spec = find_model(model)
        if spec is not None and spec.id == model:
            return spec
        hint = (f"; the gateway knows full model ids only: did you mean {spec.id!r}?" if spec is not None
                else f"; the models: {', '.join(model_ids())}")
        raise _APIError(404, f"model {model!r} not found{hint}", "model_not_found", "model_not_found", "model")

    @staticmethod
    def _unknown_field(spec: ModelSpec, key: str) -> _APIError:
        near = spec._no_such_field(key, None).suggestion  # the schema's own did-you-mean
        hint = f"; did you mean {near!r}?" if near else ""
        return _bad(f"Unrecognized request argument supplied: {key!r} ({spec.id} has no parameter {key!r}; "
                    f"its parameters: {', '.join(['prompt', *spec.field_names])}{hint})", key,
                    "unknown_parameter")

    @staticmethod
    def _check_image_url(url: Any, name: str) -> tuple[bytes | None, tuple[int, int], str, bool]:
        """(raw bytes, size, format, has_alpha) for a data: URL; (None, (0,0), "", False) for http(s)."""
        if not isinstance(url, str) or not url:
            raise _bad(f"{name} must be a URL string (data: or http(s))", name, "invalid_type")
        if url[:5].lower() == "data:":
            head, sep, payload = url.partition(",")
            if not sep:
                raise _bad(f"{name} is not a valid data URL", name, "invalid_image_url")
            meta = head[5:].split(";")
            mediatype = meta[0].strip().lower()
            if "base64" not in [m.strip().lower() for m in meta[1:]]:
                raise _bad(f"{name}: data URLs must be base64-encoded", name, "invalid_image_url")
            if not mediatype.startswith("image/"):
                raise _bad(f"{name}: data URL media type must be image/*, got {mediatype or 'none'!r}", name,
                           "invalid_image_url")
            if any(c.isspace() for c in payload[:200]) or any(c.isspace() for c in payload[-200:]):
                payload = re.sub(r"\s+", "", payload)
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(f"{name}: the data URL payload is not valid base64", name, "invalid_image_url") from None
            from PIL import Image  # lazily: only requests with images pay for Pillow

            try:
                with Image.open(io.BytesIO(data)) as img:
                    dims = img.size
                    fmt = img.format or ""
                    mode = img.mode
                    alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
                    img.verify()
            except Image.DecompressionBombError:
                raise _APIError(400, f"{name}: the image is too large", "input_too_large", "image_too_large",
                                name) from None
            except Exception:  # noqa: BLE001 - anything Pillow can't read is not an image
                raise _bad(f"{name}: the data URL does not decode to a readable image", name,
                           "invalid_image") from None
            return data, dims, fmt, alpha
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https") and parts.netloc:
            return None, (0, 0), "", False  # not fetched: the simulator has no network
        raise _bad(f"{name} must be a data: URL or an http(s) URL", name, "invalid_image_url")

    def _post(self, h: dict[str, str], body: bytes, tracing: str, entry: dict[str, Any]) -> SimResponse:
        due = self._check_rate_limit()
        try:
            return self._post_accepted(h, body, tracing, entry)
        except _APIError:
            with self._lock:  # refused (400, 402 ...): it is not at work
                if due in self._at_work:
                    self._at_work.remove(due)
            raise

    def _post_accepted(self, h: dict[str, str], body: bytes, tracing: str, entry: dict[str, Any]) -> SimResponse:
        payload = self._parse_json(h, body)
        entry["json"] = {k: _elide(v) for k, v in payload.items()}
        req = self._validate(payload)
        in_t, out_t, credit = req.costs()
        ceiling = h.get("x-app-user-credits")
        if ceiling is not None:
            try:
                limit = float(ceiling)
                if not math.isfinite(limit) or limit < 0:
                    raise ValueError
            except ValueError:
                raise _bad("X-App-User-Credits must be a non-negative number", "X-App-User-Credits") from None
            if credit > limit:
                raise _APIError(402, f"the estimated cost {credit:g} credit exceeds X-App-User-Credits {limit:g}",
                                "insufficient_credits", "user_credit_limit")
        with self._lock:
            if self.balance is not None and credit > self.balance:
                raise _APIError(402, f"insufficient credits: the estimated cost is {credit:g} credit, the "
                                     f"balance is {self.balance:g}", "insufficient_credits", "insufficient_balance")
        if MODERATION_TOKEN in req.prompt.lower():
            raise _APIError(400, "the request was blocked by the safety system", "content_moderation",
                            "moderation_blocked", "prompt")

        if req.is_async:
            return self._create_task(req, tracing)

        fail = self._take_fault("post", ("task_failed",))
        if fail is not None:
            o = fail.options
            raise _APIError(int(o.get("status", 502)), o.get("message") or "the upstream provider failed",
                            o.get("type") or "provider_error", o.get("code") or "upstream_error")
        no_images = self._take_fault("post", ("no_images",)) is not None
        created = int(self.now_unix())
        images = [] if no_images else [self._register_image(req, i) for i in range(req.n)]
        t0 = time.perf_counter()
        shape = req.answer_shape(self.config.response_format)
        data = self._image_entries(images, shape)
        # Rendering base64 answers takes real time: count it against the latency.
        spent = time.perf_counter() - t0 if shape == "b64_json" else 0.0
        self._charge(tracing, None, credit, req.n, in_t, out_t)
        out: dict[str, Any] = {"created": created, "data": data}
        if not self.config.omit_usage and in_t is not None and out_t is not None:
            out["usage"] = {"input_tokens": in_t, "output_tokens": out_t, "total_tokens": in_t + out_t}
        if not self.config.omit_credit:
            out["credit"] = credit
        return self._json(200, out, delay=max(0.0, self.config.latency - spent))

    def _check_rate_limit(self) -> float:
        """Apply the hidden limits to a generation POST; returns when its answer is due (it is at
        work until then). 429 with Retry-After beyond a limit."""
        with self._lock:
            while self.limit_schedule and self.accepted_posts >= self.limit_schedule[0][0]:
                for name, value in self.limit_schedule.pop(0)[1].items():
                    setattr(self, name, value)
            limit, most = self.rate_limit, self.max_in_flight
            now = self.now()
            self._at_work = [t for t in self._at_work if t > now]
            if most and len(self._at_work) >= most:
                raise _APIError(429, f"too many requests at once: at most {most} in flight",
                                "rate_limit_error", "concurrency_limit_exceeded",
                                headers={"Retry-After": self._retry_after_value(min(self._at_work) - now)})
            if not limit:
                self._post_times.clear()
            else:
                max_posts, per = int(limit[0]), float(limit[1])
                while self._post_times and self._post_times[0] <= now - per:
                    self._post_times.popleft()
                if len(self._post_times) >= max_posts:
                    wait = per - (now - self._post_times[0]) if self._post_times else per
                    raise _APIError(429, f"rate limit reached: at most {max_posts} requests per {per:g} s",
                                    "rate_limit_error", "rate_limit_exceeded",
                                    headers={"Retry-After": self._retry_after_value(wait)})
                self._post_times.append(now)
            self.accepted_posts += 1
            due = now + self.config.latency
            self._at_work.append(due)
            return due

    def _register_image(self, req: _Request, index: int) -> tuple[str, RenderSpec]:
        quality = str(req.settings.get("quality", "auto"))
        background = str(req.settings.get("background", "auto"))
        seed = seed_for(model=req.model, prompt=req.prompt, size=req.size, quality=quality,
                        background=background, output_format=req.output_format, index=index,
                        inputs=req.inputs_digest(), settings=req.seed_settings())
        spec = RenderSpec(seed=seed, prompt=req.prompt, size=req.size, output_format=req.output_format,
                          quality=quality, background=background, index=index, n=req.n, model=req.model,
                          references=req.references, mask=req.mask_bytes, label=req.spec.name)
        image_id = "img_" + uuid.uuid4().hex
        weight = sum(len(r) for r in req.references) + len(req.mask_bytes or b"")
        with self._lock:
            self._images[image_id] = spec
            if weight:
                self._image_weights[image_id] = weight
                self._weight += weight
            # Forget the oldest records beyond max_records, or while the edit inputs they hold
            # (reference images and masks, kept to render lazily) exceed the cache bound.
            while len(self._images) > 1 and (len(self._images) > self.config.max_records
                                    or self._weight > self.config.cache_max_bytes):
                old_id, _ = self._images.popitem(last=False)
                self._weight -= self._image_weights.pop(old_id, 0)
        return image_id, spec

    def _signed_url(self, image_id: str, ext: str, expires: int) -> str:
        sig = self._sign(f"{image_id}.{ext}", expires)
        return f"{self.files_base}/files/{image_id}.{ext}?expires={expires}&sig={sig}"

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self.config.signing_key, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def _image_entries(self, images: list[tuple[str, RenderSpec]], shape: str) -> list[dict[str, str]]:
        if shape == "b64_json":
            return [{"b64_json": base64.b64encode(self.cache.get(spec)).decode("ascii")} for _, spec in images]
        expires = int(self.now_unix() + self.config.url_ttl)
        return [{"url": self._signed_url(iid, spec.output_format, expires)} for iid, spec in images]

    def _charge(self, tracing: str, task_id: str | None, credit: float, images: int, in_t: int | None,
                out_t: int | None) -> None:
        with self._lock:
            self._charges.append({
                "tracing_id": tracing, "task_id": task_id, "credit": credit, "images": images,
                "time": self.now_unix(), "input_tokens": in_t, "output_tokens": out_t,
                "reported": not self.config.omit_credit,
            })
            if self.balance is not None:
                self.balance = round(self.balance - credit, 4)

    # -- tasks

    def _create_task(self, req: _Request, tracing: str) -> SimResponse:
        cfg = self.config
        pending_for = cfg.task_pending if cfg.task_pending is not None else min(1.0, cfg.latency / 4)
        task = _Task(id="task_" + uuid.uuid4().hex, request=req, t0=self.now(), created=int(self.now_unix()),
                     timeout=req.timeout, latency=cfg.latency, pending_for=pending_for, tracing_id=tracing)
        fail = self._take_fault("post", ("task_failed",))
        if fail is not None:
            task.fail_with = dict(fail.options)
        task.no_images = self._take_fault("post", ("no_images",)) is not None
        with self._lock:
            self._tasks[task.id] = task
            self._prune_tasks()
        body = {
            "id": task.id, "object": "image.generation.task", "status": self._spell("pending"),
            "created": task.created, "timeout": task.timeout,
        }
        body["polling_url"], body["cancel_url"] = self._task_urls(task.id)
        return self._json(202, body)

    def _task_urls(self, task_id: str) -> tuple[str, str]:
        """(polling_url, cancel_url) as advertised to the request being handled (config.task_urls)."""
        api_path = urlsplit(self.api_base).path.rstrip("/")
        origin = getattr(self._local, "origin", None)
        if self.config.task_urls == "relative":
            base = api_path
        elif self.config.api_base is None and origin:
            base = origin + api_path
        else:
            base = self.api_base
        url = f"{base}/images/generations/{task_id}"
        return url, url + "/cancel"

    def _prune_tasks(self) -> None:
        if len(self._tasks) <= self.config.max_records:
            return
        for tid in list(self._tasks):
            if len(self._tasks) <= self.config.max_records:
                break
            if self._tasks[tid].status in TERMINAL:
                del self._tasks[tid]

    def _spell(self, status: str) -> str:
        return self.config.status_spelling.get(status, status)

    def _advance(self, t: _Task) -> str:
        """Bring a task up to date with the clock; charge it once on completion. Lock held."""
        if t.status in TERMINAL:
            return t.status
        elapsed = self.now() - t.t0
        if t.latency > t.timeout and elapsed >= t.timeout:
            t.status = "failed"
            t.finished_at = t.t0 + t.timeout
            t.error = {"message": f"the task did not finish within its timeout of {t.timeout} s",
                       "type": "timeout_error", "code": "task_timeout"}
        elif t.latency <= t.timeout and elapsed >= t.latency:
            t.finished_at = t.t0 + t.latency
            if t.fail_with is not None:
                o = t.fail_with
                t.status = "failed"
                t.error = {"message": o.get("message") or "the upstream provider failed",
                           "type": o.get("type") or "provider_error", "code": o.get("code") or "upstream_error"}
            else:
                req = t.request
                in_t, out_t, credit = req.costs()
                t.images = [] if t.no_images else [self._register_image(req, i) for i in range(req.n)]
                expires = int(t.finished_at + self._epoch + self.config.url_ttl)
                t.urls = [self._signed_url(iid, spec.output_format, expires) for iid, spec in t.images]
                t.usage = None if in_t is None or out_t is None else \
                    {"input_tokens": in_t, "output_tokens": out_t, "total_tokens": in_t + out_t}
                t.credit = credit
                t.status = "completed"
                self._charge(t.tracing_id, t.id, credit, req.n, in_t, out_t)
        elif elapsed >= t.pending_for:
            return "running"
        return t.status

    def _task_body(self, t: _Task, status: str | None = None, no_images: bool = False) -> dict[str, Any]:
        status = status or (t.status if t.status in TERMINAL else
                            ("running" if self.now() - t.t0 >= t.pending_for else "pending"))
        body: dict[str, Any] = {"id": t.id, "object": "image.generation.task", "status": self._spell(status),
                                "created": t.created, "timeout": t.timeout}
        if status == "completed":
            images = [] if no_images else t.images
            shape = self.config.task_result_shape or \
                ("b64_json" if t.request.answer_shape(None) == "b64_json" else "data_url")
            if shape == "b64_json":
                body["data"] = self._image_entries(images, "b64_json")
            else:
                urls = [] if no_images else t.urls
                if shape == "output_urls":
                    body["output"] = {"urls": urls}
                else:
                    body["data"] = [{"url": u} for u in urls]
            if not self.config.omit_usage and t.usage:
                body["usage"] = dict(t.usage)
            if not self.config.omit_credit and t.credit is not None:
                body["credit"] = t.credit
        elif status == "failed" and t.error:
            body["error"] = t.error["message"] if self.config.task_error_as_string else dict(t.error)
        elif status in ("pending", "running"):
            body["polling_url"], body["cancel_url"] = self._task_urls(t.id)
        return body

    def _get_task(self, task_id: str) -> _Task:
        t = self._tasks.get(task_id)
        if t is None:
            raise _APIError(404, f"task {task_id!r} not found", "invalid_request_error", "task_not_found")
        return t

    def _poll(self, task_id: str) -> SimResponse:
        with self._lock:
            t = self._get_task(task_id)
            status = self._advance(t)
        no_images = status == "completed" and self._take_fault("poll", ("no_images",)) is not None
        return self._json(200, self._task_body(t, status, no_images))

    def _cancel(self, task_id: str) -> SimResponse:
        with self._lock:
            t = self._get_task(task_id)
            status = self._advance(t)
            if status in ("completed", "failed"):
                raise _APIError(409, f"task {task_id} is already {status} and cannot be cancelled", "conflict",
                                f"task_{status}")
            if status == "running" and self.config.cancel_running == "refuse":
                raise _APIError(409, f"task {task_id} is already running and cannot be cancelled", "conflict",
                                "task_running")
            if status != "cancelled":
                t.status = "cancelled"
                t.finished_at = self.now()
            return self._json(200, self._task_body(t, "cancelled"))

    # -- models

    def _models(self, model_id: str | None) -> SimResponse:
        def obj(spec: ModelSpec) -> dict[str, Any]:
            mid = spec.id
            return {"id": mid, "object": "model", "created": 1767225600,
                    "owned_by": _MODEL_OWNERS.get(mid.split("/")[0], mid.split("/")[0]),
                    "supported_by_simulator": True}

        if model_id is None:
            return self._json(200, {"object": "list", "data": [obj(m) for m in models()]})
        return self._json(200, obj(self._model_or_404(model_id)))

    # ------------------------------------------------------------------ files

    @staticmethod
    def _xml_error(status: int, code: str, message: str) -> SimResponse:
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n").encode()
        return SimResponse(status, {"Content-Type": "application/xml"}, body)

    def _download(self, method: str, name: str, query: str, h: dict[str, str]) -> SimResponse:
        fault = self._take_fault("download", _PRE_KINDS + _WRAP_KINDS)
        if fault is not None and fault.kind in _PRE_KINDS:
            return self._fault_response(fault, "download")
        resp = self._download_inner(method, name, query, h)
        if method == "HEAD" and resp.status == 200:
            resp.headers["Content-Length"] = str(len(resp.body))
            resp.body = b""
        return self._wrap_fault(fault, resp)

    def _download_inner(self, method: str, name: str, query: str, h: dict[str, str]) -> SimResponse:
        if method not in ("GET", "HEAD"):
            return self._xml_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        if "authorization" in h or "x-api-key" in h:
            with self._lock:
                self.auth_leaks += 1
            if self.config.reject_download_auth:
                return self._xml_error(
                    400, "InvalidArgument",
                    "Only one auth mechanism allowed; only the signature query parameters or the Authorization "
                    "header should be specified (shark_nb: an API key must never be sent to the file host)")
        q = parse_qs(query)
        expires_s = (q.get("expires") or [""])[0]
        sig = (q.get("sig") or [""])[0]
        if not expires_s or not sig:
            return self._xml_error(403, "AccessDenied", "Query-string authentication requires the expires and sig "
                                                        "parameters")
        m = re.fullmatch(r"(img_[0-9a-f]{32})\.(png|jpeg|webp)", name)
        try:
            expires = int(expires_s)
        except ValueError:
            return self._xml_error(403, "AccessDenied", "Invalid expires parameter")
        if not hmac.compare_digest(self._sign(name, expires), sig) or m is None:
            return self._xml_error(403, "SignatureDoesNotMatch",
                                   "The request signature we calculated does not match the signature you provided.")
        if self.now_unix() > expires:
            return self._xml_error(403, "AccessDenied", "Request has expired")
        with self._lock:
            spec = self._images.get(m[1])
        if spec is None or spec.output_format != m[2]:
            return self._xml_error(404, "NoSuchKey", "The specified key does not exist.")
        data = self.cache.get(spec)
        return SimResponse(200, {"Content-Type": FORMAT_MIME[spec.output_format], "ETag": f'"{spec.seed:016x}"',
                                 "Cache-Control": "private, max-age=600"}, data, self.config.download_latency)
