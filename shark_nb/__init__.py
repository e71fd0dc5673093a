"""shark_nb: the Shark AI image gateway's five image models as first-class Jupyter citizens.

Public surface (everything else is private)::

    from shark_nb import Shark, AsyncShark, Ledger, SharkError, set_key, studio
    from shark_nb import models, model_spec          # one schema per model
    from shark_nb import MaskPainter                 # paint a mask over an image, in the browser
    shark_nb.history()                               # every past call; .read(path) for a saved file
    %load_ext shark_nb

Heavy modules (httpx, Pillow, ipywidgets) load on first use, so ``%load_ext shark_nb`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import clear_key, set_key
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BudgetExceededError,
    ConflictError,
    ContentModerationError,
    DownloadError,
    GatewayTimeoutError,
    InputTooLargeError,
    InsufficientCreditsError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    SharkError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
)

from ._version import __version__

_LAZY = {
    "Shark": "client",
    "AsyncShark": "client",
    "Task": "client",
    "Ledger": "ledger",
    "GenerationResult": "results",
    "GeneratedImage": "results",
    "MissingImage": "results",
    "Usage": "results",
    "ImageRequest": "params",
    "studio": "widget",
    "models": "schemas",
    "model_spec": "schemas",
    "ModelSpec": "schemas",
    "Field": "schemas",
    "Studio": "widget",
    "MaskPainter": "ui.painter",
    "history": "archive",
    "HistoryEntry": "archive",
}

__all__ = [
    "Shark", "AsyncShark", "Task", "Ledger", "GenerationResult", "GeneratedImage", "MissingImage", "Usage", "ImageRequest",
    "studio", "Studio", "MaskPainter", "history", "HistoryEntry", "models", "model_spec", "ModelSpec", "Field", "set_key", "clear_key", "load_ipython_extension",
    "SharkError", "ValidationError", "BudgetExceededError", "APIError", "InvalidRequestError",
    "ContentModerationError", "InputTooLargeError", "AuthenticationError", "InsufficientCreditsError",
    "ModelNotFoundError", "ConflictError", "RateLimitError", "ProviderError", "GatewayTimeoutError",
    "APIConnectionError", "APITimeoutError", "DownloadError", "TaskFailedError", "TaskCancelledError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shark_nb' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext shark_nb``: register ``%shark`` / ``%%shark``."""
    from .magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magic import unload_ipython_extension as unload

    unload(ipython)
