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

import json
from typing import Any, Iterable

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
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.code = code
        self.tracing_id = tracing_id
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

    def __init__(self, field: str, value: Any, allowed: str, *, detail: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = _short_repr(value)
        message = f"{field}={shown} is not valid: {detail + '; ' if detail else ''}expected {allowed}"
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


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    if message is None:
        text = body.decode("utf-8", "replace").strip() if body else ""
        if text:
            message = f"the gateway answered HTTP {status} with a non-JSON body: {_excerpt(text)!r}"
        else:
            message = f"the gateway answered HTTP {status} with an empty body"
    hint = _HINTS.get(cls)
    if hint and hint not in message:
        message = f"{message} — {hint}"
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[secure]")
    return cls(message, status=status, type=etype or cls.type, code=code, tracing_id=tracing_id,
               retry_after=retry_after)
