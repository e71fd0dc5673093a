"""The synchronous client: :class:`Shark` runs :class:`AsyncShark`'s coroutines on one private
event-loop thread, so it works the same in a script and inside a Jupyter kernel whose own loop is
already running (no patching of the user's loop)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, TypeVar

from .. import config
from ..errors import SharkError
from ..request import ImageRequest
from .core import AsyncShark
from .tasks import Task

if TYPE_CHECKING:
    from ..compare import ComparisonGrid
    from ..results import GeneratedImage, GenerationResult

T = TypeVar("T")


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


Shark.generate.__doc__ = AsyncShark.generate.__doc__  # every model's fields, from the schemas (core.py)
