"""The simulator as in-process httpx transports (no sockets, no network).

    sim = Simulator()
    httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)
    httpx.AsyncClient(transport=AsyncSimulatorTransport(sim), base_url=sim.api_base)

One transport serves both hosts: the API (``sim.api_base``) and the signed image URLs
(``sim.files_base``), so use the same transport (or one built on the same ``sim``) for downloads.

Each transport applies ``SimResponse.delay`` (``time.sleep`` / ``await asyncio.sleep``) and honours
the request's read timeout the way a socket would: if the answer would take longer than the read
timeout, it waits that long and raises ``httpx.ReadTimeout`` (the request was still processed, as
on a real server). A ``reset`` fault raises ``httpx.RemoteProtocolError``. The async transport
runs the handler in a worker thread (``asyncio.to_thread``), so rendering never blocks the loop.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from .service import SimResponse, Simulator

__all__ = ["SimulatorTransport", "AsyncSimulatorTransport"]


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    value = timeout.get("read") if isinstance(timeout, dict) else None
    return float(value) if value is not None else None


def _response(request: httpx.Request, resp: SimResponse) -> httpx.Response:
    if resp.stream_fault == "reset":
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a complete response (simulated connection reset)",
            request=request,
        )
    return httpx.Response(resp.status, headers=resp.headers, content=resp.body, request=request)


def _timed_out(request: httpx.Request) -> httpx.ReadTimeout:
    return httpx.ReadTimeout("The read operation timed out (simulator)", request=request)


class SimulatorTransport(httpx.BaseTransport):
    """Synchronous in-process transport over a :class:`Simulator` (a new one if not given)."""

    def __init__(self, sim: Simulator | None = None) -> None:
        self.sim = sim if sim is not None else Simulator()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        resp = self.sim.handle(request.method, str(request.url), request.headers, body)
        if resp.delay > 0:
            limit = _read_timeout(request)
            if limit is not None and resp.delay > limit:
                time.sleep(limit)
                raise _timed_out(request)
            time.sleep(resp.delay)
        return _response(request, resp)


class AsyncSimulatorTransport(httpx.AsyncBaseTransport):
    """Asynchronous in-process transport; the handler runs in a thread, delays are asyncio sleeps."""

    def __init__(self, sim: Simulator | None = None) -> None:
        self.sim = sim if sim is not None else Simulator()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        resp = await asyncio.to_thread(self.sim.handle, request.method, str(request.url), request.headers, body)
        if resp.delay > 0:
            limit = _read_timeout(request)
            if limit is not None and resp.delay > limit:
                await asyncio.sleep(limit)
                raise _timed_out(request)
            await asyncio.sleep(resp.delay)
        return _response(request, resp)
