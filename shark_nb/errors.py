"""The errors shark_nb raises, and the mapping from an HTTP answer to one of them.

    SharkError                      .status .type .code .message .tracing_id
     ├── ValidationError            (also ValueError) bad input, raised before anything is sent
     ├── BudgetExceededError        the estimate exceeds the session budget; nothing was sent
     ├── APIError                   the gateway answered with an error
     │    ├── InvalidRequestError        400 invalid_request_error
     │    ├── ContentModerationError     400 content_moderation
     │    ├── InputTooLargeError         400 input_too_large
     │    ├── AuthenticationError        401 auth_error
     │    ├── InsufficientCreditsError   402 insufficient_credits
     │    ├── ModelNotFoundError         404 model_not_found
     │    ├── ConflictError              409 (e.g. a task that refuses to be cancelled)
     │    ├── RateLimitError             429 rate_limit_error        (retried)
     │    ├── ProviderError              502 provider_error / other 5xx (retried)
     │    └── GatewayTimeoutError        504 timeout_error           (retried)
     ├── APIConnectionError         no usable answer (connection refused, reset, bad JSON in a 200)
     │    └── APITimeoutError       no answer in time; for a paid POST the outcome is unknown
     ├── DownloadError              a generated image could not be fetched (the call was charged)
     ├── TaskFailedError            a task ended with status "failed"
     └── TaskCancelledError         a task ended with status "cancelled"

Every message is short and names what to do; none ever contains the API key.
"""

from __future__ import annotations

import html
import json
import re
import threading
import weakref
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

__all__ = [
    "SharkError",
    "ValidationError",
    "BudgetExceededError",
    "APIError",
    "InvalidRequestError",
    "ContentModerationError",
    "InputTooLargeError",
    "AuthenticationError",
    "InsufficientCreditsError",
    "ModelNotFoundError",
    "ConflictError",
    "RateLimitError",
    "ProviderError",
    "GatewayTimeoutError",
    "APIConnectionError",
    "APITimeoutError",
    "DownloadError",
    "TaskFailedError",
    "TaskCancelledError",
    "error_from_response",
    "redact",
    "excerpt",
]


class SharkError(Exception):
    """Base of every shark_nb error."""

    status: int | None = None
    type: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        tracing_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Every text field may come from the server (which can echo the key): redacted here, once,
        # for every error shark_nb raises.
        message = redact(message)
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = redact(type)
        self.code = redact(code) if code is not None else None
        self.tracing_id = redact(tracing_id) if tracing_id is not None else None
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status}{', ' + self.type if self.type else ''})")
        if self.tracing_id:
            parts.append(f"[tracing id {self.tracing_id}]")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.message!r}, status={self.status!r}, type={self.type!r})"


class ValidationError(SharkError, ValueError):
    """A parameter or input is wrong. Raised before any request is sent."""

    type = "validation_error"

    def __init__(self, field: str, value: Any, allowed: str, *, detail: str | None = None,
                 model: str | None = None, suggestion: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        #: The model whose schema refused the value (None: not model-specific).
        self.model = model
        #: The closest valid name or value (a did-you-mean), or None.
        self.suggestion = suggestion
        shown = _short_repr(value)
        where = f" for {model}" if model else ""
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        message = f"{field}={shown} is not valid{where}: {detail + '; ' if detail else ''}expected {allowed}{hint}"
        super().__init__(message)


class BudgetExceededError(SharkError):
    """The call's estimated cost exceeds what is left of the session budget. Nothing was sent."""

    type = "budget_exceeded"

    def __init__(self, message: str, *, estimate: float, remaining: float) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.remaining = remaining


class APIError(SharkError):
    """The gateway answered with an error status."""


class InvalidRequestError(APIError):
    status, type = 400, "invalid_request_error"


class ContentModerationError(APIError):
    status, type = 400, "content_moderation"


class InputTooLargeError(APIError):
    status, type = 400, "input_too_large"


class AuthenticationError(APIError):
    status, type = 401, "auth_error"


class InsufficientCreditsError(APIError):
    status, type = 402, "insufficient_credits"


class ModelNotFoundError(APIError):
    status, type = 404, "model_not_found"


class ConflictError(APIError):
    status, type = 409, "conflict"


class RateLimitError(APIError):
    status, type = 429, "rate_limit_error"


class ProviderError(APIError):
    status, type = 502, "provider_error"


class GatewayTimeoutError(APIError):
    status, type = 504, "timeout_error"


class APIConnectionError(SharkError):
    """No usable answer came back. ``may_be_charged`` is True when a paid POST may have reached
    the gateway (it is then in the ledger with outcome "unknown")."""

    type = "connection_error"
    may_be_charged = False


class APITimeoutError(APIConnectionError):
    """No answer in time. For a POST this means the call may have been charged."""

    type = "timeout"


class DownloadError(SharkError):
    """No generated image could be delivered. The call itself was answered (and charged).

    Raised only when *none* of a call's images arrived (when some did, the call returns a
    :class:`~shark_nb.results.GenerationResult` whose ``.missing`` lists the others).
    ``urls``: every image URL of the call, to fetch while they live; ``missing``: why each image
    is missing; ``result``: the (empty) result with the credit and tracing id.
    """

    type = "download_error"
    urls: "list[str] | tuple" = ()
    missing: "list | tuple" = ()
    result = None


class TaskFailedError(SharkError):
    type = "task_failed"

    def __init__(self, message: str, *, task_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.task_id = task_id


class TaskCancelledError(SharkError):
    type = "task_cancelled"

    def __init__(self, message: str, *, task_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.task_id = task_id


_BY_TYPE: dict[str, type[APIError]] = {
    cls.type: cls  # type: ignore[misc]
    for cls in (
        InvalidRequestError,
        ContentModerationError,
        InputTooLargeError,
        AuthenticationError,
        InsufficientCreditsError,
        ModelNotFoundError,
        RateLimitError,
        ProviderError,
        GatewayTimeoutError,
    )
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    402: InsufficientCreditsError,
    404: ModelNotFoundError,
    409: ConflictError,
    413: InputTooLargeError,
    429: RateLimitError,
    504: GatewayTimeoutError,
}
_HINTS: dict[type[APIError], str] = {
    AuthenticationError: "check SHARK_API_KEY (or call shark_nb.set_key())",
    InsufficientCreditsError: "top up your account or raise the budget",
    ContentModerationError: "rephrase the prompt or change the reference images",
    RateLimitError: "wait a moment and try again, or lower the concurrency",
    InputTooLargeError: "shorten the prompt or use smaller reference images",
}


def _short_repr(value: Any, limit: int = 60) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    size, mode = getattr(value, "size", None), getattr(value, "mode", None)
    if isinstance(mode, str) and isinstance(size, tuple) and len(size) == 2:  # a PIL image
        return f"<PIL image {size[0]}x{size[1]} {mode}>"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 15] + "…" + text[-12:]
    return text


# --- redaction: the one place that removes the API key from text ------------------------------

REDACTED = "[secure]"
#: A run of this many characters of the key (prefix, suffix or middle) counts as a leak.
MIN_FRAGMENT = 8
#: Longest text redacted as a whole; longer server bodies are cut to this first (still redacted
#: before the final, shorter cut, so a key crossing that cut cannot leave a piece behind).
_REDACT_SCAN = 65536
#: Live key holders by identity. Not a WeakSet: Secrets compare equal by value, so a WeakSet keeps
#: only the first of two holders of the same key, and when that one dies the key is forgotten
#: while the second (a new client with the same key) is still alive.
_live_secrets: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
_live_lock = threading.Lock()
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# "Bearer <token>" in any case, also URL-encoded (Bearer%20…, Bearer+…): a credential-looking token
# (8+ token characters with a digit, "-" or "_") is masked even when it is not this process's key.
_BEARER = re.compile(r"(?i)\b(bearer(?:\s+|%20|\+))(?=[A-Za-z0-9._~+/=%-]*[0-9_-])[A-Za-z0-9._~+/=%-]{8,}")


def remember_secret(secret: Any) -> None:
    """Register a key holder (an object with ``reveal()``, i.e. :class:`config.Secret`): while it is
    alive, :func:`redact` removes its key from every error, ledger line and excerpt."""
    with _live_lock:
        _live_secrets[id(secret)] = secret


def _key_forms(key: str) -> set[str]:
    """The spellings a server may echo a key in: raw, JSON-escaped (also with ``\\/``), repr- or
    backslash-escaped, URL-encoded and HTML-escaped."""
    json_form = json.dumps(key)[1:-1]
    forms = {key, json_form, json_form.replace("/", "\\/"), repr(key)[1:-1], key.replace("\\", "\\\\"),
             quote(key, safe=""), quote(key), quote_plus(key, safe=""), html.escape(key)}
    return {f.translate(_ASCII_LOWER) for f in forms if f}


def redact(text: Any, secrets: Iterable[str] = ()) -> Any:
    """``text`` with the API key removed: every live key (see :func:`remember_secret`) and every
    string in ``secrets``, in any of the forms of :func:`_key_forms`, matched without regard to
    ASCII case, and any piece of it of :data:`MIN_FRAGMENT`+ characters (a prefix left by a cut, a
    suffix, a middle), each run replaced by ``[secure]``; and ``Bearer <token>``. Non-strings are
    returned as they are. Redact *before* cutting or escaping text, never after."""
    if not isinstance(text, str) or not text:
        return text
    if "earer" in text.lower():
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    with _live_lock:
        keys = {s.reveal() for s in list(_live_secrets.values())}
    keys.update(s for s in secrets if s)
    if keys:
        low = text.translate(_ASCII_LOWER)  # same length as text, so positions carry over
        needles: set[str] = set()
        for key in keys:
            for form in _key_forms(key):
                if len(form) <= MIN_FRAGMENT:
                    needles.add(form)
                else:
                    needles.update(form[i:i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1))
        spans = []
        for needle in needles:
            start = low.find(needle)
            while start != -1:
                spans.append((start, start + len(needle)))
                start = low.find(needle, start + 1)
        if spans:
            spans.sort()
            out, pos, end = [], 0, -1
            for a, b in spans:
                if a > end:  # a new run
                    if end >= 0:
                        out.append(REDACTED)
                    out.append(text[pos:a])
                    end = b
                else:
                    end = max(end, b)
                pos = end
            out.append(REDACTED)
            out.append(text[pos:])
            text = "".join(out)
    return text


def redact_all(value: Any, secrets: Iterable[str] = ()) -> Any:
    """:func:`redact` applied to every string inside dicts, lists and tuples (a ledger entry)."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_all(k, secrets): redact_all(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v, secrets) for v in value)
    return value


def excerpt(text: str | bytes, limit: int = 120, secrets: Iterable[str] = ()) -> str:
    """A short one-line excerpt of server text for a message: redacted first, on the raw text,
    then whitespace collapsed and cut to ``limit`` characters (quote it with ``!r`` after)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text[: _REDACT_SCAN * 4]).decode("utf-8", "replace")
    text = " ".join(redact(text[:_REDACT_SCAN], secrets).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_excerpt = excerpt


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from an error envelope; all None if the body is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(payload, dict):
        return None, None, None
    err = payload.get("error", payload)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return None, None, None
    message = err.get("message")
    etype = err.get("type")
    code = err.get("code")
    return (
        str(message) if message is not None else None,
        str(etype) if etype is not None else None,
        str(code) if code is not None else None,
    )


def error_from_response(
    status: int,
    body: bytes,
    *,
    tracing_id: str | None = None,
    retry_after: float | None = None,
    secrets: Iterable[str] = (),
) -> APIError:
    """Build the typed error for an HTTP error answer, JSON envelope, HTML page or empty body."""
    message, etype, code = parse_error_body(body)
    cls = _BY_TYPE.get(etype or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ProviderError if status >= 500 else InvalidRequestError if status >= 400 else APIError
    secrets = tuple(secrets)
    if message is None:
        text = excerpt(body, secrets=secrets) if body else ""
        if not text:
            message = f"the gateway answered HTTP {status} with an empty body"
        else:
            try:
                json.loads(body)
                what = "a JSON body without the error envelope"
            except (ValueError, UnicodeDecodeError):
                what = "a non-JSON body"
            message = f"the gateway answered HTTP {status} with {what}: {text!r}"
    hint = _HINTS.get(cls)
    if hint and hint not in message:
        message = f"{message} — {hint}"
    # everything the server sent is redacted (the message, and the type and code it names)
    message, etype, code = (redact(x, secrets) for x in (message, etype, code))
    return cls(message, status=status, type=etype or cls.type, code=code, tracing_id=tracing_id,
               retry_after=retry_after)
