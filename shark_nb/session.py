"""The process-wide session: one client, hence one ledger, shared by the ``%shark`` magic, the
studio (and, later, the history), so that the session total is one number wherever a call started.

The magic and the studio both import this module and never each other.
"""

from __future__ import annotations

import threading
from typing import Any

from . import config

__all__ = ["get_client", "set_client", "reset_client", "async_client"]

_client: Any = None
_client_settings: Any = None
_client_lock = threading.Lock()


def get_client() -> Any:
    """The process-wide :class:`shark_nb.Shark` the magic (and the studio) use.

    Created on first use from the environment (offline simulator when there is no key). If the
    key or base URL changes later (``shark_nb.set_key()``, ``SHARK_API_KEY``), the next call gets
    a new client on the *same* ledger, so the session total carries on.
    """
    global _client, _client_settings
    with _client_lock:
        if _client is not None and _client_settings is None:
            return _client  # given with set_client(): used as it is
        settings = config.resolve()
        if _client is None or settings != _client_settings:
            from .client import Shark

            ledger = _client.ledger if _client is not None else None
            _client = Shark(ledger=ledger) if ledger is not None else Shark()
            _client_settings = settings
        return _client


def set_client(client: Any) -> None:
    """Use this client (a :class:`shark_nb.Shark`) for the magic and the studio."""
    global _client, _client_settings
    with _client_lock:
        _client, _client_settings = client, None


def reset_client() -> None:
    """Forget the shared client (the next use creates a new one)."""
    global _client, _client_settings
    with _client_lock:
        _client = _client_settings = None


def async_client(client: Any = None) -> Any:
    """A client for code that runs on the kernel's own loop (the studio): the given one; else the
    session's shared client. A sync ``Shark`` gets an :class:`~shark_nb.client.AsyncShark` twin
    for this loop, with the same key, base URL, simulator and ledger."""
    from .client import AsyncShark, Shark

    if client is None:
        client = get_client()
    if isinstance(client, Shark):
        return _async_twin(client.aio)
    return client


def _async_twin(inner: Any) -> Any:
    """An AsyncShark like ``inner`` (the sync client's own, which lives on a private loop thread
    whose connections cannot be used from the kernel's loop)."""
    from .client import AsyncShark

    if inner.offline and inner.simulator is not None:
        return AsyncShark(simulator=inner.simulator, ledger=inner.ledger, poll_interval=inner.poll_interval,
                          quiet=True)
    return AsyncShark(api_key=inner._key, base_url=inner.base_url, ledger=inner.ledger, timeout=inner.timeout,
                      max_retries=inner.max_retries, poll_interval=inner.poll_interval,
                      transport=inner._transport, download_transport=inner._download_transport, quiet=True)
