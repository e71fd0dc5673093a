"""How many generation POSTs may be at the gateway at once: one adaptive limiter per gateway and
key, shared by every caller of the process (``generate``, ``generate_many``, ``compare``, the magic,
the studio, other threads and event loops).

The gateway publishes no limit, so the client finds it. Two parts:

* :class:`AIMDController` — a pure update rule (no clock, no locks; tested with a table), in the
  style of TCP and Netflix's concurrency-limits ``AIMDLimit``: the limit grows additively (+1 per
  window of calls that went out with the gate full) while calls succeed, and shrinks
  multiplicatively on a 429 (or a burst of 502/503/504 / ``provider_error``), once per
  congestion event (a 429 for a call sent before the last cut does not cut again). It remembers
  the level where the last loss happened and holds just below it, probing one step higher only
  after a run of successes there (the run doubles after each failed probe): a gateway with a
  fixed limit sees a handful of probes, not a sawtooth.
  The same idea on the *rate* (pacing): a 429 for a call sent at the minimum limit (one in flight)
  means even one caller back to back is too fast, so POST starts get a minimum ``gap``: the refused
  spacing × 1.5, ×1.5 again on each further such 429; while calls succeed it shrinks (×0.9 per
  success) down to the refused spacing × 1.2, holds there ``probe_after`` successes (doubling after
  each failed probe), then shrinks on; below 10 ms pacing is dropped and the limit may grow again.
* :class:`Limiter` — the thread-safe, loop-agnostic gate: a counter under a ``threading.Lock``;
  a caller that must wait parks an ``asyncio`` future of *its own* loop, woken with
  ``call_soon_threadsafe`` when a slot frees. A cancelled or failing caller gives its slot (and a
  wake-up it did not use) back. ``Retry-After`` is honoured by the refused call itself; it also
  becomes a pause shared by every caller when backing off cannot help (the limit is at its
  minimum) or the pause is long (``config.LIMITER_SHARED_PAUSE``). While pacing, a caller that
  got a slot is handed a start time under the lock (the last start, or the last handed-out time,
  plus the gap) and sleeps on its own loop until then; a cancelled sleeper's time is given back
  (the later sleepers move up and are woken early).

``limiter_for(base_url, key, scope)`` returns the process-wide limiter for a gateway and key; the
key is kept only as a short hash, never in any repr.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from . import config, text

__all__ = ["AIMDController", "Limiter", "Slot", "limiter_for"]


@dataclass
class AIMDController:
    """The pure update rule. ``limit`` is a float; ``int(limit)`` calls may be in flight."""

    limit: float = config.LIMITER_INITIAL
    min_limit: int = config.LIMITER_MIN
    max_limit: int = config.LIMITER_MAX
    backoff: float = config.LIMITER_BACKOFF        #: multiplicative decrease on loss
    probe_after: int = config.LIMITER_PROBE_AFTER  #: windows of success held below the last loss
    burst: int = config.LIMITER_ERROR_BURST        #: this many 5xx within burst_window cut the limit
    burst_window: float = config.LIMITER_ERROR_WINDOW
    ceiling: int | None = None   #: the level at which the last loss happened (None: none seen)
    held: float = 0.0            #: windows of success held just below the ceiling
    hold: int = 0                #: windows to hold before the next probe (doubles on a failed probe)
    epoch: int = 0               #: bumped by every cut; a slot remembers the epoch it was sent in
    errors: deque = field(default_factory=deque)
    pace_increase: float = config.LIMITER_PACE_INCREASE
    pace_margin: float = config.LIMITER_PACE_MARGIN
    pace_decrease: float = config.LIMITER_PACE_DECREASE
    pace_off: float = config.LIMITER_PACE_OFF
    pace_max: float = config.LIMITER_PACE_MAX
    gap: float = 0.0             #: minimum seconds between POST starts (0: not pacing)
    gap_floor: float | None = None  #: the gap holds here (refused spacing × margin) before probing lower
    gap_held: int = 0            #: successes held at the floor
    gap_hold: int = 0            #: successes to hold before the next probe (doubles on a failed probe)

    @property
    def allowed(self) -> int:
        return max(self.min_limit, min(self.max_limit, int(self.limit)))

    def on_success(self, sent_with: int) -> None:
        """A call answered. ``sent_with``: calls in flight when it was sent (itself included);
        the limit only grows when it was what held callers back."""
        if self.gap > 0:               # pacing: the rate grows first; the limit only once it is off
            self._pace_success()
            return
        if sent_with < self.allowed:
            return
        step = 1.0 / self.allowed
        if self.ceiling is not None and self.allowed >= self.ceiling:
            self.held += step          # probing the level of the last loss: one window through
            if self.held >= 1.0:       # means the limit moved up; grow as before any loss
                self.ceiling, self.held = None, 0.0
            return
        if self.ceiling is not None and self.allowed + 1 >= self.ceiling:
            self.held += step          # just below the last loss: hold, then probe one step
            if self.held >= self.hold:
                self.held = 0.0
                self.limit = float(min(self.allowed + 1, self.max_limit))
            return
        self.limit = min(self.limit + step, float(self.max_limit))  # additive: +1 per window

    def on_drop(self, sent_epoch: int, spacing: float | None = None) -> bool:
        """A 429. Returns True when it cut the limit (the first loss of a congestion event).
        ``spacing``: seconds between this call's start and the start before it; given (by the
        gate, for 429s) and the limit already at its minimum, the gap grows (pacing)."""
        if sent_epoch < self.epoch:
            return False               # sent before the last cut: part of the same event
        level = self.allowed
        if spacing is not None and level <= self.min_limit:
            self._pace_drop(spacing)
        failed_probe = self.ceiling is not None and level >= self.ceiling
        self.hold = min(self.hold * 2, 64 * self.probe_after) if failed_probe and self.hold else self.probe_after
        self.ceiling = level if self.ceiling is None or not failed_probe else min(self.ceiling, level)
        self.held = 0.0
        self.limit = max(float(self.min_limit), level * self.backoff)
        self.epoch += 1
        return True

    def _pace_drop(self, spacing: float) -> None:
        refused = max(self.gap, spacing)   # the spacing the gateway refused
        if refused <= 0:
            return
        failed_probe = self.gap > 0 and self.gap_floor is None
        self.gap_hold = (min(self.gap_hold * 2, 64 * self.probe_after) if failed_probe and self.gap_hold
                         else self.probe_after)
        self.gap = min(self.pace_max, refused * self.pace_increase)
        self.gap_floor = min(self.gap, refused * self.pace_margin)
        self.gap_held = 0

    def _pace_success(self) -> None:
        if self.gap_floor is not None and self.gap <= self.gap_floor:
            self.gap_held += 1         # at the floor: hold, then probe lower
            if self.gap_held >= self.gap_hold:
                self.gap_floor, self.gap_held = None, 0
            return
        self.gap *= self.pace_decrease
        if self.gap_floor is not None:
            self.gap = max(self.gap, self.gap_floor)
        elif self.gap < self.pace_off:
            self.gap, self.gap_hold = 0.0, 0  # pacing off: the next successes grow the limit

    def on_error(self, sent_epoch: int, now: float) -> bool:
        """A 502/503/504 or ``provider_error``: a burst of ``burst`` within ``burst_window`` s
        counts as a loss. Returns True when it cut the limit."""
        self.errors.append(now)
        while self.errors and self.errors[0] <= now - self.burst_window:
            self.errors.popleft()
        if len(self.errors) < self.burst:
            return False
        self.errors.clear()
        return self.on_drop(sent_epoch)


@dataclass
class LimiterStats:
    successes: int = 0
    rate_limited: int = 0       #: 429 answers
    errors: int = 0             #: 502/503/504 and provider_error answers
    backoffs: int = 0           #: cuts of the limit
    pauses: int = 0             #: shared pauses (Retry-After applied to every caller)
    max_limit_seen: int = 0
    min_limit_seen: int = 0
    gap: float = 0.0            #: the current minimum seconds between POST starts (0: not pacing)
    max_gap_seen: float = 0.0
    paced: int = 0              #: POSTs that waited for their start time


class Slot:
    """One permit to send one generation POST. Report the answer (``success``, ``drop``,
    ``error``) or just ``release``; every path is idempotent (``release`` after a report is a no-op)."""

    __slots__ = ("_limiter", "epoch", "sent_with", "started", "spacing", "_open")

    def __init__(self, limiter: "Limiter", epoch: int, sent_with: int, started: float = 0.0,
                 spacing: float | None = None) -> None:
        self._limiter, self.epoch, self.sent_with, self._open = limiter, epoch, sent_with, True
        self.started, self.spacing = started, spacing  # the limiter's clock; since the start before

    def success(self) -> None:
        self._settle("success")

    def drop(self, retry_after: float | None = None) -> int | None:
        """A 429. Returns the shared pause's number when this answer started one (its caller
        waits its own Retry-After and then need not wait the same pause again), else None."""
        return self._settle("drop", retry_after)

    def error(self) -> None:
        self._settle("error")

    def release(self) -> None:
        self._settle(None)

    def _settle(self, kind: str | None, retry_after: float | None = None) -> Any:
        if not self._open:
            return None
        self._open = False
        return self._limiter._settle(self, kind, retry_after)


class _Pace:
    """A caller holding a slot and sleeping until its start time ``due`` (paced)."""

    __slots__ = ("loop", "kick", "due")

    def __init__(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.loop, self.due, self.kick = loop, due, loop.create_future()


class Limiter:
    """The gate every generation POST of one gateway and key passes. Thread-safe; callers may
    live on any event loop. ``.limit``, ``.in_flight``, ``.stats`` show its state."""

    def __init__(self, name: str = "gateway", controller: AIMDController | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.controller = controller or AIMDController()
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()
        self._paused_until = 0.0
        self._pause_id = 0
        self._last_start: float | None = None  # the limiter's clock at the last POST start
        self._paced: list[_Pace] = []          # sleepers, in start-time order
        self._rng = random.Random()
        lim = self.controller.allowed
        self._stats = LimiterStats(max_limit_seen=lim, min_limit_seen=lim)

    def __repr__(self) -> str:
        gap = self.gap
        return (f"<Limiter {self.name}: limit {self.limit}, {self.in_flight} in flight, "
                + (f"gap {text.duration(gap)}, " if gap > 0 else "")
                + f"{self._stats.successes} ok, {self._stats.rate_limited} × 429, {self._stats.backoffs} backoffs>")

    @property
    def limit(self) -> int:
        """How many generation POSTs may be in flight now."""
        with self._lock:
            return self.controller.allowed

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def gap(self) -> float:
        """The learned minimum seconds between POST starts (0: not pacing)."""
        with self._lock:
            return self.controller.gap

    @property
    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(**{**vars(self._stats), "gap": self.controller.gap})

    @property
    def paused_for(self) -> float:
        """Seconds left of a shared pause (0 when none)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def reset(self) -> None:
        """Forget what was learned (a new controller with the same settings); slots in use stay counted."""
        with self._lock:
            c = self.controller
            self.controller = AIMDController(min_limit=c.min_limit, max_limit=c.max_limit, backoff=c.backoff,
                                             probe_after=c.probe_after, burst=c.burst, burst_window=c.burst_window,
                                             pace_increase=c.pace_increase, pace_margin=c.pace_margin,
                                             pace_decrease=c.pace_decrease, pace_off=c.pace_off, pace_max=c.pace_max)
            self._paused_until = 0.0
            lim = self.controller.allowed
            self._stats = LimiterStats(max_limit_seen=lim, min_limit_seen=lim)
            self._wake_locked(len(self._waiters))
            self._respace_locked(self._clock())

    async def acquire(self, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                      served_pause: int | None = None) -> Slot:
        """Wait for a slot (and for a shared pause to end). Cancelling the wait takes nothing.
        ``sleep``: how to wait out a pause (the client's own, so tests can fake time);
        ``served_pause``: a pause this caller already waited out on its own. While pacing, a
        caller with a slot sleeps (``sleep``, on its own loop) until its start time."""
        served = served_pause
        front = False
        while True:
            with self._lock:
                now = self._clock()
                pause = self._paused_until - now if self._pause_id != served else 0.0
                if pause <= 0 and self._in_flight < self.controller.allowed:
                    self._in_flight += 1
                    gap = self.controller.gap
                    last = self._paced[-1].due if self._paced else self._last_start
                    if gap <= 0 or last is None or last + gap <= now:
                        return self._start_locked(now)
                    pace = _Pace(asyncio.get_running_loop(), last + gap)
                    self._paced.append(pace)
                    break
                pause_id = self._pause_id
                if pause <= 0:
                    fut = asyncio.get_running_loop().create_future()
                    entry = (asyncio.get_running_loop(), fut)
                    (self._waiters.appendleft if front else self._waiters.append)(entry)
            if pause > 0:
                await sleep(pause + self._rng.random() * 0.05)
                served = pause_id
                continue
            try:
                await fut
            except BaseException:  # cancelled while queued, or woken and then cancelled
                with self._lock:
                    try:
                        self._waiters.remove(entry)
                    except ValueError:  # already woken: hand the wake-up on
                        self._wake_locked(1)
                raise
            front = True  # woken: the next try goes first in the queue
        return await self._wait_for_start(pace, sleep)

    async def _wait_for_start(self, pace: _Pace, sleep: Callable[[float], Awaitable[Any]]) -> Slot:
        """Sleep (holding the slot) until ``pace.due``; woken early when it moves up."""
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    if now >= pace.due - 1e-6:
                        self._paced.remove(pace)
                        self._stats.paced += 1
                        return self._start_locked(now)
                    wait = pace.due - now
                    if pace.kick.done():
                        pace.kick = pace.loop.create_future()
                    kick = pace.kick
                sleeper = asyncio.ensure_future(sleep(wait))
                try:
                    await asyncio.wait({sleeper, kick}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
        except BaseException:  # cancelled while waiting for its start: the slot and the time go back
            with self._lock:
                if pace in self._paced:
                    self._paced.remove(pace)
                    self._in_flight -= 1
                    self._respace_locked(self._clock())
                    self._wake_locked(1)
            raise

    # --- inside the lock ------------------------------------------------------------------------
    def _start_locked(self, now: float) -> Slot:
        """A POST starts now (its slot is already counted in flight)."""
        spacing = None if self._last_start is None else now - self._last_start
        self._last_start = now
        self._respace_locked(now)
        return Slot(self, self.controller.epoch, self._in_flight, now, spacing)

    def _respace_locked(self, now: float) -> None:
        """Start times of the sleepers: each the gap after the one before (the first after the last
        start), never in the past. A sleeper whose time moved up is woken to sleep less."""
        prev, gap = self._last_start, self.controller.gap
        for p in self._paced:
            due = now if prev is None or gap <= 0 else max(now, prev + gap)
            if due < p.due:
                try:
                    p.loop.call_soon_threadsafe(_resolve, p.kick)
                except RuntimeError:  # that loop is closed: its caller is gone
                    pass
            p.due = prev = due

    def _wake_locked(self, count: int) -> None:
        while count > 0 and self._waiters:
            loop, fut = self._waiters.popleft()
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed: its caller is gone
                continue
            count -= 1

    def _settle(self, slot: Slot, kind: str | None, retry_after: float | None) -> int | None:
        started = None
        with self._lock:
            self._in_flight -= 1
            c, s = self.controller, self._stats
            before = c.allowed
            if kind == "success":
                s.successes += 1
                c.on_success(max(slot.sent_with, c.allowed if self._waiters else 0))  # callers waited: the limit binds
            elif kind == "drop":
                s.rate_limited += 1
                spacing = slot.spacing
                if spacing is not None and retry_after and retry_after > 0:
                    # a start after a long idle says little about the rate; Retry-After bounds it (x2:
                    # in a sliding window it is the time until one slot frees, often below the spacing)
                    spacing = min(spacing, 2 * retry_after)
                s.backoffs += c.on_drop(slot.epoch, spacing)
                if retry_after and retry_after > 0 and (c.allowed <= c.min_limit
                                                        or retry_after >= config.LIMITER_SHARED_PAUSE):
                    until = self._clock() + retry_after
                    if until > self._paused_until:
                        self._paused_until, self._pause_id = until, self._pause_id + 1
                        s.pauses += 1
                        started = self._pause_id
            elif kind == "error":
                s.errors += 1
                s.backoffs += c.on_error(slot.epoch, self._clock())
            after = c.allowed
            s.max_limit_seen, s.min_limit_seen = max(s.max_limit_seen, after), min(s.min_limit_seen, after)
            s.max_gap_seen = max(s.max_gap_seen, c.gap)
            if self._paced:
                self._respace_locked(self._clock())
            self._wake_locked(max(0, after - self._in_flight) if after > before else 1)
        return started


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


# --- the process-wide registry ---------------------------------------------------------------------

_registry_lock = threading.Lock()
_shared: dict[tuple[str, str], Limiter] = {}
_scoped: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Limiter]]" = weakref.WeakKeyDictionary()


def key_fingerprint(key: str | None) -> str:
    """A short hash naming a key in a limiter's name: never the key, nor a prefix of it."""
    if not key:
        return "no-key"
    return "key#" + hashlib.sha256(b"shark_nb-limiter:" + key.encode()).hexdigest()[:8]


def limiter_for(base_url: str, key: str | None, scope: Any = None) -> Limiter:
    """The one limiter for this gateway (``base_url``) and key in this process. ``scope``: an
    object standing for a private gateway (an in-process simulator, a test transport); its
    limiters live as long as it does."""
    ident = (base_url.rstrip("/"), key_fingerprint(key))
    with _registry_lock:
        table = _shared if scope is None else _scoped.setdefault(scope, {})
        limiter = table.get(ident)
        if limiter is None:
            limiter = table[ident] = Limiter(f"{ident[0]} ({ident[1]})")
        return limiter


def reset_all() -> None:
    """Forget every learned limit (tests; a new session)."""
    with _registry_lock:
        limiters = list(_shared.values()) + [lim for t in _scoped.values() for lim in t.values()]
    for lim in limiters:
        lim.reset()
