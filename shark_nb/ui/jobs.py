"""The studio's job runner: one generation at a time, as an asyncio task on the running loop, with
a working Cancel — and no widgets, so its logic is tested with a fake client
(``tests/test_studio_models.py``).

How it keeps the kernel free: :meth:`JobRunner.start` creates the job with ``loop.create_task``
on the kernel's own running loop and returns at once. The job builds the request with
``client.build(prompt, model=..., image=..., mask=..., wait=..., **fields)`` (in a worker thread
when there are images to read) and awaits ``client.send(request, on_task=...)`` of an
:class:`~shark_nb.client.AsyncShark`; a ticker calls ``on_update()`` every ``tick_seconds`` so
the owner can show the elapsed time.

Cancel (:meth:`JobRunner.cancel`, one method for every click):

* task mode, the gateway's task known: ``client.cancel(task)``. Accepted: the poll loop sees the
  task cancelled and the job ends "cancelled at the gateway". Refused (409: already running) or
  failed: :attr:`refused`; the button becomes "Stop waiting", and the next click stops waiting
  (the call may still be charged; it stays in the ledger as pending).
* task mode, before the gateway answered with the task id: the cancel is remembered and sent
  as soon as the id arrives (``on_task``); a second click stops waiting.
* sync mode: nothing to cancel at the gateway; the click stops waiting.

No double charge: :meth:`start` refuses while a job runs (guarded here, not by a button's
disabled state: a double click races the browser).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .. import text
from ..errors import SharkError, TaskCancelledError
from .common import plain

__all__ = ["JobRunner", "Outcome", "REFUSED_MESSAGE", "TICK_SECONDS"]

log = logging.getLogger(__name__)

#: Seconds between updates of the elapsed time.
TICK_SECONDS = 0.5
REFUSED_MESSAGE = ("The gateway refused to cancel: the task is already running and may still be charged. "
                   "Click “Stop waiting” to stop waiting for it.")
NO_LOOP = ("no running asyncio event loop (run the studio in a Jupyter kernel, "
           "or click from inside a coroutine)")


@dataclass
class Outcome:
    """How a job ended. ``kind``: ``"done"``, ``"error"``, ``"cancelled"`` (at the gateway) or
    ``"stopped"`` (the user stopped waiting). ``extra``: what ``prepare(result)`` returned."""

    kind: str
    message: str
    result: Any = None
    extra: Any = None
    error: BaseException | None = None


class JobRunner:
    """Runs generations for one owner (the studio). ``on_update()``: the phase, the elapsed time
    or the cancel state changed; ``on_finish(outcome)``: the job ended (once per job, also when
    it was cancelled before its first step); ``prepare(result)``: an async step after the call
    (the studio's previews), still cancellable; ``on_image(image)``: each image as soon as it has
    arrived (the client's hook, on this loop)."""

    def __init__(self, client: Any, *, on_update: Callable[[], Any] = lambda: None,
                 on_finish: Callable[[Outcome], Any] = lambda outcome: None,
                 prepare: Callable[[Any], Awaitable[Any]] | None = None,
                 tick_seconds: float = TICK_SECONDS, on_image: Callable[[Any], Any] | None = None) -> None:
        self.client = client
        self.on_update, self.on_finish, self.prepare = on_update, on_finish, prepare
        self.on_image = on_image
        self.tick_seconds = tick_seconds
        self.job: asyncio.Task | None = None
        self.task: Any = None                 # the gateway task of the current job (from on_task)
        self.wait_mode = "task"
        self.phase = ""
        self.cancel_requested = False         # Cancel clicked before the gateway gave a task id
        self.refused = False                  # the gateway refused to cancel
        self.stopping = False                 # the user asked to stop waiting
        self.started = 0.0
        self._cancelling: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None

    # ------------------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.done()

    def elapsed(self) -> str:
        return text.duration(time.monotonic() - self.started)

    def status_line(self) -> str:
        return f"{self.phase} · {self.elapsed()}"

    @property
    def cancel_label(self) -> str:
        waiting_for_id = self.cancel_requested and self.task is None
        return "Stop waiting" if self.refused or waiting_for_id else "Cancel"

    @property
    def cancel_enabled(self) -> bool:
        """False when idle, while stopping, and while a cancel request is on its way."""
        if not self.running or self.stopping:
            return False
        return self.refused or self._cancelling is None

    # ------------------------------------------------------------------------------ start
    def start(self, prompt: str, **request: Any) -> asyncio.Task | None:
        """Start a generation (``request``: ``client.build``'s keywords). None if one is already
        running; RuntimeError when no event loop runs in this thread."""
        if self.running:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(NO_LOOP) from None
        self.task, self._cancelling = None, None
        self.cancel_requested = self.refused = self.stopping = False
        self.wait_mode = request.get("wait", "sync")
        self.started = time.monotonic()
        self.phase = "Sending…"
        self.job = loop.create_task(self._run(prompt, request))
        self.job.add_done_callback(self._job_done)
        self._ticker = loop.create_task(self._tick())
        return self.job

    async def _tick(self) -> None:
        while self.running:
            self._update()
            await asyncio.sleep(self.tick_seconds)

    def _update(self) -> None:
        try:
            self.on_update()
        except Exception as exc:  # noqa: BLE001 - a display callback never breaks the job
            log.warning("studio: update callback failed: %s", exc)

    async def _run(self, prompt: str, request: dict) -> Outcome:
        try:
            if request.get("image") is not None or request.get("mask") is not None:
                built = await asyncio.to_thread(self.client.build, prompt, **request)
            else:
                built = self.client.build(prompt, **request)
            if self.wait_mode == "sync":
                self.phase = "Generating (sync)"
            hook = {"on_image": self.on_image} if self.on_image is not None else {}
            result = await self.client.send(built, on_task=self._on_task, **hook)
            self.phase = "Preparing previews…"
            extra = await self.prepare(result) if self.prepare is not None else None
        except asyncio.CancelledError:
            return Outcome("stopped", self._stopped_message())
        except TaskCancelledError as exc:
            task_id = getattr(self.task, "id", "")
            return Outcome("cancelled", f"Cancelled at the gateway after {self.elapsed()} (task {task_id}).",
                           error=exc)
        except Exception as exc:  # noqa: BLE001 - SharkError or not, say it in plain words
            if not isinstance(exc, SharkError):
                log.error("studio: unexpected error during generation", exc_info=exc)
            return Outcome("error", f"Error: {plain(exc)}", error=exc)
        credit = "cost unknown" if result.credit is None else text.money(result.credit)
        notes = result._notes() if hasattr(result, "_notes") else []
        if notes:  # images missing, or more/fewer than asked: say so where the user looks
            return Outcome("done", f"Done in {self.elapsed()} · {credit}. " + " ".join(notes), result, extra)
        images = text.count(len(result.images), "image")
        return Outcome("done", f"Done: {images} in {self.elapsed()} · {credit}.", result, extra)

    def _on_task(self, task: Any) -> None:
        """The gateway accepted the task: Cancel can now reach it."""
        try:
            self.task = task
            if self.cancel_requested:
                self._start_gateway_cancel()
            else:
                self.phase = f"Generating · task {text.shorten(task.id, 16)}"
            self._update()
        except Exception as exc:  # noqa: BLE001 - never break the call from a display callback
            log.warning("studio: on_task callback failed: %s", exc)

    def _stopped_message(self) -> str:
        took = self.elapsed()
        if self.wait_mode == "sync":
            return (f"Stopped waiting after {took}. The call may still be charged; "
                    "it is in the ledger as 'unknown'.")
        if self.task is None:
            return (f"Stopped waiting after {took}, before the gateway confirmed the task. The call may "
                    "still be charged; it is in the ledger as 'unknown'.")
        if self.refused:
            return (f"Stopped waiting after {took}. The gateway refused to cancel task {self.task.id}, so it "
                    "may still be charged; it stays in the ledger as pending (client.reconcile() checks it later).")
        return f"Stopped waiting after {took} (task {self.task.id}); cancel was requested at the gateway."

    def _job_done(self, job: asyncio.Task) -> None:
        # Runs even when the job was cancelled before its first step (so _run's handlers never ran).
        if self.job is not job:
            return
        self.job = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if job.cancelled():
            outcome = Outcome("stopped", self._stopped_message())
        elif job.exception() is not None:  # only a BaseException gets past _run's handlers
            outcome = Outcome("error", f"Error: {plain(job.exception())}", error=job.exception())
        else:
            outcome = job.result()
        try:
            self.on_finish(outcome)
        except Exception as exc:  # noqa: BLE001
            log.error("studio: finish callback failed", exc_info=exc)

    async def wait(self) -> None:
        """Wait until the current job (if any) has finished; never raises for the job's outcome."""
        job = self.job
        if job is not None:
            await asyncio.wait([job])
        await asyncio.sleep(0)  # let the done callbacks run

    def close(self) -> None:
        """Stop the ticker (the job itself goes on: its charge still reaches the ledger)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # ----------------------------------------------------------------------------- cancel
    def cancel(self) -> None:
        """What a click on Cancel / Stop waiting does (module docstring)."""
        job = self.job
        if job is None or job.done() or self.stopping:
            return
        if self.wait_mode == "sync" or self.refused or (self.cancel_requested and self.task is None):
            self.stopping = True                 # stop waiting
            self.phase = "Stopping…"
            job.cancel()
        elif self._cancelling is not None:
            return                               # a cancel request is already on its way
        elif self.task is None:
            self.cancel_requested = True         # cancel as soon as the gateway gives the task id
            self.phase = "Cancel requested — waiting for the gateway to accept the task so it can be cancelled"
        else:
            self._start_gateway_cancel()
        self._update()

    def _start_gateway_cancel(self) -> None:
        if self._cancelling is not None or self.task is None:
            return
        self.phase = f"Cancelling task {self.task.id} at the gateway…"
        self._cancelling = asyncio.ensure_future(self._cancel_at_gateway(self.task))

    async def _cancel_at_gateway(self, task: Any) -> None:
        try:
            outcome = await self.client.cancel(task)
        except Exception as exc:  # noqa: BLE001 - a failed cancel request counts as refused
            outcome = "refused"
            log.info("studio: the cancel request failed: %s", plain(exc))
        if not self.running:
            return
        if outcome == "cancelled":
            # The poll loop sees the task as cancelled at its next poll and records it in the ledger.
            self.phase = f"Cancelled at the gateway (task {task.id}) — finishing"
        else:
            self.refused = True
            self.phase = REFUSED_MESSAGE
        self._update()
