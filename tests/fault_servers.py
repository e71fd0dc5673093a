"""Helpers for the fault-injection and durability suites: scripted loopback servers, a fake
clock for the client's waits, and the one comparison that matters — ledger vs server charges.

* :class:`ScriptedServer` — a real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 that answers
  exactly what a test scripts, per ``(method, path)``: any status/headers/body, a stall, a body
  cut off mid-way (FIN), a TCP reset (RST, via ``SO_LINGER 0``) before or during the answer. It
  records every request it saw (headers included) and keeps its own tally of "charges", so a
  test can compare the client's ledger with what this fake gateway billed.
* A :class:`ScriptedServer` with only a default step is the *recorder*: the "other host" a
  redirect points at, which proves whether the API key ever reached it.
* :func:`serve_recording` — the shark_nb simulator server, whose handler also notes the instant
  each answer was fully written (the durability test needs "answered before the kill").
* :func:`ledger_vs_charges` / :func:`assert_ledger_matches` — the precise comparison (below).

The comparison (``charges`` = the server's own tally, one entry per charged logical call,
keyed by the ``X-Tracing-ID`` the client sent; ``records`` = the ledger re-read from disk,
lines merged by ``call_id``):

1. **Nothing lost**: every charged tracing id appears in the ledger, either with exactly the
   credit the server charged, or with ``credit`` null and an outcome that the ledger counts as
   "may have been charged, cost unknown" (``unknown``, ``pending``... see ``ledger.MAY_BE_CHARGED``).
2. **Nothing invented**: no ledger record claims a credit the server did not charge (every
   record with a credit has a charge with that tracing id and the same credit).
3. **No duplicates**: no tracing id appears in two ledger records, and the server never charged
   one tracing id twice (a retried POST that got billed twice would show here).

A ledger record with a null credit for a call the server did *not* charge (e.g. an unreadable
answer recorded as ``unknown``) is allowed: it is conservative, and reported as ``conservative``.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping

from PIL import Image

from shark_nb.ledger import MAY_BE_CHARGED, Ledger

KEY = "sk-faults-PLANTED-7f3a9c"


def image_bytes(fmt: str = "PNG", color: str = "teal", size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


PNG = image_bytes()


# ------------------------------------------------------------------------------------ fake time

class FakeTime:
    """The client's clock and sleep: waits take no real time, but every one is recorded.

    Install with :func:`use_fake_time`. Network timeouts (httpx) stay real.
    """

    def __init__(self, start: float = 10_000.0, linked: Any = None) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.linked = linked  # a simulator ManualClock that moves with this one (or None)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        if self.linked is not None:
            self.linked.advance(max(0.0, seconds))
        await asyncio.sleep(0)


def use_fake_time(client: Any, sim_clock: Any = None) -> FakeTime:
    """Give a ``Shark`` or ``AsyncShark`` a :class:`FakeTime`; returns it. With ``sim_clock`` (a
    simulator ``ManualClock``), the simulator's tasks advance exactly as the client waits."""
    ft = FakeTime(linked=sim_clock)
    target = getattr(client, "aio", client)
    target._sleep, target._clock = ft.sleep, ft.clock
    return ft


class StepClock:
    """A simulator clock that jumps ``step`` seconds every time it is read (URL expiry tests)."""

    def __init__(self, start: float = 1_000.0, step: float = 5.0) -> None:
        self._t = start
        self._step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._t += self._step
            return self._t


# ------------------------------------------------------------------------- scripted server

@dataclass
class Step:
    """One scripted answer.

    ``action``:
      ``"answer"``      send it (after ``delay`` seconds);
      ``"cut"``         send the status line, headers (full Content-Length) and half the body,
                        then close (FIN): the client sees an incomplete body;
      ``"rst"``         read the request, then reset the connection (RST) without a byte;
      ``"rst_mid"``     send headers and half the body, then reset (RST);
      ``"trickle"``     send the body a chunk every ``delay`` seconds (each read is quick, the
                        whole transfer is not).
    ``charge``: credit this fake gateway bills for the request (under its X-Tracing-ID), or None.
    """

    status: int = 200
    body: bytes | dict | list | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    action: str = "answer"
    charge: float | None = None

    def payload(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        return data, headers


@dataclass
class Seen:
    """A request as the scripted server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float

    @property
    def tracing_id(self) -> str | None:
        return self.headers.get("x-tracing-id")

    def carries_key(self, key: str = KEY) -> bool:
        """True if any header (or the path) holds the key or an auth header is present."""
        if "authorization" in self.headers or "x-api-key" in self.headers:
            return True
        return key in self.path or any(key in v for v in self.headers.values())


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Scripted/1.0"
    sys_version = ""
    timeout = 30
    server: "_ScriptedHTTPServer"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
        step = owner._next_step(seen)
        owner._note(seen, step)
        if step.delay and step.action != "trickle":
            time.sleep(step.delay)
        data, headers = step.payload()
        if step.action == "rst":
            self._reset()
            return
        self.send_response(step.status)
        for k, v in headers.items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        if step.action in ("cut", "rst_mid"):
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if step.action == "rst_mid":
                self._reset()
                return
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.end_headers()
        if step.action == "trickle":
            chunk = max(1, len(data) // 20)
            try:
                for i in range(0, len(data), chunk):
                    self.wfile.write(data[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(step.delay)
            except OSError:  # the client gave up: that is the point
                self.close_connection = True
            return
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER on, linger time 0, then close)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _ScriptedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # clients hanging up (timeouts, resets) are the point of these tests


class ScriptedServer:
    """A loopback HTTP server answering what the test scripts. Use as a context manager.

    ``srv.script("POST", "/api/v1/images/generations", Step(...), Step(...))`` queues answers for
    successive matching requests (exact path, or a path prefix ending in ``*``); once a queue is
    empty its last step repeats if ``repeat_last`` (the default), else ``default`` answers.
    ``srv.seen`` lists every request; ``srv.charges`` what the fake gateway billed.
    """

    def __init__(self, default: Step | None = None) -> None:
        self.default = default or Step(404, {"error": {"message": "no script for this request",
                                                       "type": "invalid_request_error"}})
        self.seen: list[Seen] = []
        self.charges: list[dict[str, Any]] = []
        self._routes: dict[tuple[str, str], deque[Step]] = {}
        self._last: dict[tuple[str, str], Step] = {}
        self._lock = threading.Lock()
        self._httpd = _ScriptedHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/api/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"scripted-{self.port}", daemon=True)
        self._thread.start()

    # -- scripting
    def script(self, method: str, path: str, *steps: Step, replace: bool = False) -> "ScriptedServer":
        """Queue ``steps`` for ``(method, path)`` (``replace=True``: instead of what is queued)."""
        with self._lock:
            key = (method.upper(), path)
            if replace:
                self._routes.pop(key, None)
                self._last.pop(key, None)
            self._routes.setdefault(key, deque()).extend(steps)
        return self

    def _match(self, method: str, path: str) -> tuple[str, str] | None:
        """An exact path wins; otherwise the longest matching ``prefix*``."""
        bare = path.split("?", 1)[0]
        if (method, bare) in self._routes:
            return (method, bare)
        prefixes = [p for (m, p) in self._routes if m == method and p.endswith("*") and bare.startswith(p[:-1])]
        return (method, max(prefixes, key=len)) if prefixes else None

    def _next_step(self, seen: Seen) -> Step:
        with self._lock:
            key = self._match(seen.method, seen.path)
            if key is None:
                return self.default
            queue = self._routes[key]
            if queue:
                step = queue.popleft()
                self._last[key] = step
                return step
            return self._last.get(key, self.default)

    def _note(self, seen: Seen, step: Step) -> None:
        with self._lock:
            self.seen.append(seen)
            if step.charge is not None:
                self.charges.append({"tracing_id": seen.tracing_id, "credit": step.charge})

    # -- views
    def requests(self, method: str | None = None, prefix: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method) and s.path.startswith(prefix)]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ScriptedServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- canned answers for the API on this server
    def image_answer(self, n: int = 1, credit: float | None = 108.85, files_base: str | None = None,
                     **extra: Any) -> dict:
        base = files_base or self.url
        answer: dict[str, Any] = {"created": int(time.time()),
                                  "data": [{"url": f"{base}/files/img{i}.png?sig=abc"} for i in range(n)],
                                  "usage": {"input_tokens": 3, "output_tokens": 272 * n, "total_tokens": 3 + 272 * n}}
        if credit is not None:
            answer["credit"] = credit
        answer.update(extra)
        return answer

    def task_answer(self, task_id: str = "task_1", polling_url: str | None = None, **extra: Any) -> dict:
        answer = {"id": task_id, "object": "image.generation.task", "status": "pending",
                  "created": int(time.time()), "timeout": 300,
                  "polling_url": polling_url or f"{self.base_url}/images/generations/{task_id}",
                  "cancel_url": f"{self.base_url}/images/generations/{task_id}/cancel"}
        answer.update(extra)
        return answer


def recorder() -> ScriptedServer:
    """The "other host": answers every request with a PNG and records whether a key came along."""
    return ScriptedServer(default=Step(200, PNG, {"Content-Type": "image/png"}))


# ------------------------------------------------------------- simulator with a sent-time log

def serve_recording(sim: Any):
    """Like ``serve_in_thread(sim)``, but the handle's ``.sent`` list gets, for every API answer
    fully written to the socket, ``(time.monotonic(), route, tracing_id, status)``."""
    from shark_nb.simulator import server as srv_mod

    sent: list[tuple[float, str, str | None, int]] = []
    lock = threading.Lock()

    class RecordingHandler(srv_mod._Handler):
        def _serve(self) -> None:  # type: ignore[override]
            tracing = self.headers.get("X-Tracing-ID")
            route = "post" if self.command == "POST" and self.path.rstrip("/").endswith("/images/generations") else \
                "download" if "/files/" in self.path else "other"
            super()._serve()
            try:
                self.wfile.flush()
            except OSError:
                return
            with lock:
                sent.append((time.monotonic(), route, tracing, 0))

        do_GET = do_POST = do_HEAD = _serve  # the base class bound its own _serve to these names

    handle = srv_mod.serve_in_thread(sim)
    handle.server.RequestHandlerClass = RecordingHandler
    handle.sent = sent  # type: ignore[attr-defined]
    return handle


# ------------------------------------------------------------------ ledger vs server charges

@dataclass
class Comparison:
    charged: int                 # charges the server tallied
    with_credit: int             # ... found in the ledger with the same credit
    covered_unknown: int         # ... found with credit null and a may-be-charged outcome
    lost: list[str]              # charged tracing ids missing from the ledger (or wrong outcome)
    invented: list[str]          # ledger records claiming a credit the server did not charge
    duplicated: list[str]        # tracing ids in two ledger records, or charged twice
    conservative: int            # ledger records of unknown cost the server did not charge
    ledger_calls: int

    @property
    def ok(self) -> bool:
        return not (self.lost or self.invented or self.duplicated)

    def summary(self) -> str:
        return (f"{self.charged} charged = {self.with_credit} with credit + {self.covered_unknown} unknown/pending; "
                f"lost {len(self.lost)}, invented {len(self.invented)}, duplicated {len(self.duplicated)}, "
                f"conservative {self.conservative}")


def ledger_vs_charges(ledger: Ledger | Iterable[Mapping], charges: Iterable[Mapping]) -> Comparison:
    """Compare ledger records (a Ledger — re-read from its file — or records) with charges."""
    if isinstance(ledger, Ledger):
        records = Ledger.load(ledger.path).records if ledger.path.exists() else []
    else:
        records = list(ledger)
    charges = list(charges)
    charge_count = Counter(c["tracing_id"] for c in charges)
    by_charge = {c["tracing_id"]: c for c in charges}
    rec_count = Counter(r.get("tracing_id") for r in records)
    by_rec = {r.get("tracing_id"): r for r in records}
    duplicated = sorted({t for t, k in charge_count.items() if k > 1} | {t for t, k in rec_count.items() if k > 1})
    lost, with_credit, covered = [], 0, 0
    for tid, c in by_charge.items():
        r = by_rec.get(tid)
        if r is None:
            lost.append(tid)
        elif r.get("credit") is not None and abs(float(r["credit"]) - float(c["credit"])) < 1e-6:
            with_credit += 1
        elif r.get("credit") is None and r.get("outcome") in MAY_BE_CHARGED:
            covered += 1
        else:
            lost.append(tid)
    invented = sorted(str(r.get("tracing_id")) for r in records
                      if r.get("credit") is not None and r.get("tracing_id") not in by_charge)
    conservative = sum(1 for r in records if r.get("credit") is None and r.get("outcome") in MAY_BE_CHARGED
                       and r.get("tracing_id") not in by_charge)
    calls = sum(1 for r in records if r.get("outcome") not in ("budget_exceeded", "validation_error"))
    return Comparison(len(charges), with_credit, covered, sorted(lost), invented, duplicated, conservative, calls)


def assert_ledger_matches(ledger: Ledger | Iterable[Mapping], charges: Iterable[Mapping]) -> Comparison:
    cmp = ledger_vs_charges(ledger, charges)
    assert cmp.ok, cmp.summary() + f"\nlost={cmp.lost}\ninvented={cmp.invented}\nduplicated={cmp.duplicated}"
    return cmp


def jsonl_lines_valid(path: Any) -> tuple[int, list[int]]:
    """(number of lines, indexes of lines that are not a JSON object) of a JSONL file; a file not
    ending in a newline counts its tail as a (torn) line."""
    data = open(path, "rb").read()
    chunks = data.split(b"\n")
    bad, n = [], 0
    for i, raw in enumerate(chunks):
        if not raw.strip():
            continue
        n += 1
        try:
            ok = isinstance(json.loads(raw), dict)
        except ValueError:
            ok = False
        if not ok:
            bad.append(i)
    return n, bad


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until truthy (returned) or ``timeout`` (AssertionError)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
