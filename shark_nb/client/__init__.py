"""The clients: :class:`AsyncShark` does the work over ``httpx.AsyncClient``; :class:`Shark` runs
the same coroutines on a private event-loop thread, so it works the same in a script and inside a
Jupyter kernel whose own loop is already running (no patching of the user's loop).

A call goes: validate (nothing sent on bad input) → budget check → POST with retries (one
``X-Tracing-ID`` for all attempts) → ledger line, fsynced, as soon as the gateway answered →
task polling if asked → image downloads in parallel, on a client that carries no key.

The modules, each one concern (``AsyncShark`` is composed of one mixin per module)::

    core.py       AsyncShark: settings, the public calls, the paid POST and its ledger lines
    _http.py      _HttpMixin: the request loop (retries, deadlines, headers, the limiter, redaction)
    tasks.py      Task, _TaskMixin: task URLs, polling, cancel, reconcile
    downloads.py  _DownloadMixin: booking the charge and delivering every image, key-less
    _answer.py    reading a gateway answer (images, credit, count notes)
    sync.py       _LoopThread and Shark, the blocking client

Every name below was importable from the single ``client.py`` this package replaces, and stays so.
"""

from __future__ import annotations

import asyncio  # noqa: F401 - kept importable from here (tests patch client.asyncio, client.sys)
import sys  # noqa: F401

from .. import config  # noqa: F401
from ._answer import _count_notes, _credit, _credit_report, _finite, _image_items  # noqa: F401
from ._http import (  # noqa: F401
    _VERSION,
    _Call,
    _clean_error,
    _credits_header,
    _exchange,
    _excerpt,
    _report,
    _within,
)
from .core import AsyncShark, _int_range, _non_negative_int, _positive, _every_models_fields  # noqa: F401
from .downloads import _PREALLOC_MAX, _image_looks_complete, _Missing  # noqa: F401
from .sync import Shark, _LoopThread  # noqa: F401
from .tasks import (  # noqa: F401
    _NO_RESEND,
    _STATUS_ALIASES,
    TERMINAL_STATUSES,
    Task,
    _normalise_status,
    _poll_error_is_final,
    _same_host,
    _task_path,
)

__all__ = ["AsyncShark", "Shark", "Task"]
