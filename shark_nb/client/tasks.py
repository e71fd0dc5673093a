"""Task-mode generations: the :class:`Task`, status spellings, where a task is polled and
cancelled (never off the API's origin), polling until the task ends, cancelling, and
reconciling the tasks the ledger still lists as pending."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from .. import config, pricing
from ..errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConflictError,
    SharkError,
    TaskCancelledError,
    TaskFailedError,
    redact_all,
)
from ..ledger import clean_text
from ._answer import _credit, _credit_report, _finite, _image_items
from ._http import _Call, _within

TERMINAL_STATUSES = ("completed", "failed", "cancelled")
_STATUS_ALIASES = {
    "succeeded": "completed", "success": "completed", "complete": "completed", "done": "completed",
    "finished": "completed", "ready": "completed",
    "error": "failed", "failure": "failed", "canceled": "cancelled",
}
#: Said wherever a paid task may still be running: sending the call again could pay twice.
_NO_RESEND = "do not send the same generation again, that could pay for it twice"


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


class _TaskMixin:
    """Tasks for :class:`AsyncShark`: URLs, polling, cancel, reconcile. Uses its ``_request``
    (``_http.py``), its ledger lines (``_entry``/``_record``) and ``self._sleep``/``self._clock``."""

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
