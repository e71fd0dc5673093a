"""1. Per-call overhead: ``Shark.generate`` against raw httpx and against the OpenAI Python SDK.

The same work on every path: one POST /images/generations (n=4, 1024x1024, quality low, JPEG)
and the four image downloads, against the simulator served as a real loopback HTTP server, at
0 s and 0.2 s of server time. Runs are interleaved (the order rotates every repetition).

* **shark_nb**: ``Shark.generate`` (validation, budget check, ledger line fsynced, parallel
  downloads on a key-less client, result objects).
* **raw httpx**: an ``httpx.AsyncClient`` doing the POST and the four GETs with
  ``asyncio.gather`` — the hand-written floor.
* **OpenAI SDK**: ``OpenAI(api_key=..., base_url=...).images.generate(...)``, then the four
  ``data[].url`` downloaded the way a typical user does: ``httpx.get(url)`` one after another
  (a new connection each; the SDK itself does not download).

Also measured (context): the simulator's TCP_NODELAY fix — a raw POST round trip with Nagle's
algorithm on (before) and off (after).
"""

from __future__ import annotations

import asyncio

import httpx
from common import (
    KEY,
    Row,
    Sample,
    fmt_ratio,
    interleave,
    ratio_spread,
    shark_client,
    sim_server,
    timed,
)

PARAMS = dict(n=4, size="1024x1024", quality="low", output_format="jpeg")
PROMPT = "benchmark prompt: a lighthouse on a cliff"
BODY = {"model": "openai/gpt-image-2", "prompt": PROMPT, "background": "auto", **PARAMS}


def _raw_call(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient, base_url: str) -> None:
    async def go() -> None:
        r = await client.post(f"{base_url}/images/generations", json=BODY,
                              headers={"Authorization": f"Bearer {KEY}"})
        r.raise_for_status()
        urls = [d["url"] for d in r.json()["data"]]
        got = await asyncio.gather(*(client.get(u) for u in urls))
        assert all(g.status_code == 200 and g.content for g in got)
    loop.run_until_complete(go())


def _sdk_call(sdk: object) -> None:
    resp = sdk.images.generate(model="openai/gpt-image-2", prompt=PROMPT, **PARAMS)  # type: ignore[attr-defined]
    datas = [httpx.get(d.url).content for d in resp.data]   # what a typical user writes
    assert len(datas) == 4 and all(datas)


def _measure(latency: float, reps: int) -> dict[str, Sample]:
    import openai

    with sim_server(latency=latency) as server, shark_client(server) as shark:
        loop = asyncio.new_event_loop()
        raw = httpx.AsyncClient(timeout=60)
        sdk = openai.OpenAI(api_key=KEY, base_url=server.base_url)
        funcs = {
            "shark": lambda: shark.generate(PROMPT, **PARAMS),
            "raw": lambda: _raw_call(loop, raw, server.base_url),
            "sdk": lambda: _sdk_call(sdk),
        }
        for f in funcs.values():  # warm-up: connections, imports, the simulator's render cache
            f()
        samples = interleave(reps, funcs)
        sdk.close()
        loop.run_until_complete(raw.aclose())
        loop.close()
        assert server.sim.auth_leaks == 0
    return samples


def _nagle(reps: int) -> tuple[Sample, Sample]:
    """Raw POST round trip (0 s server time) with Nagle's algorithm on vs off on the server."""
    from shark_nb.simulator import server as srv

    out = []
    saved = srv._Handler.disable_nagle_algorithm
    try:
        for nodelay in (False, True):
            srv._Handler.disable_nagle_algorithm = nodelay
            with sim_server(latency=0.0) as server, httpx.Client(timeout=30) as c:
                body = dict(BODY, n=1)
                def post(c=c, body=body, url=f"{server.base_url}/images/generations"):
                    c.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}).raise_for_status()
                post()
                s = Sample()
                for _ in range(reps):
                    s.add(timed(post)[0])
                out.append(s)
    finally:
        srv._Handler.disable_nagle_algorithm = saved
    return out[0], out[1]


def run(quick: bool) -> list[Row]:
    reps0, reps2 = (3, 3) if quick else (21, 15)
    s0 = _measure(0.0, reps0)
    s2 = _measure(0.2, reps2)
    rows = []
    r_raw2 = ratio_spread(s2["shark"], s2["raw"])
    rows.append(Row(
        "1a", "per-call time, n=4 (POST + 4 downloads), 0.2 s server: shark_nb vs raw httpx",
        s2["shark"].ms(), "raw httpx " + s2["raw"].ms(), fmt_ratio(r_raw2, 3) + f" ({(r_raw2[0] - 1) * 100:+.1f} %)",
        "≤ 1.10x", r_raw2[0] <= 1.10,
        "" if r_raw2[0] <= 1.10 else "shark_nb's own work (validation, ledger fsync, result objects) exceeds 10 % of a 0.2 s call",
        [f"0 s server: shark_nb {s0['shark'].ms()}, raw httpx {s0['raw'].ms()}, ratio "
         f"{fmt_ratio(ratio_spread(s0['shark'], s0['raw']), 3)} (context: absolute overhead "
         f"{(s0['shark'].median - s0['raw'].median) * 1000:+.1f} ms per call)"]))
    for rid, lat, s in (("1b", 0.0, s0), ("1c", 0.2, s2)):
        r = ratio_spread(s["shark"], s["sdk"])
        ok = r[0] <= 1.0
        rows.append(Row(
            rid, f"per-call time, n=4, {lat:g} s server: shark_nb vs OpenAI SDK + sequential httpx.get",
            s["shark"].ms(), "SDK " + s["sdk"].ms(), fmt_ratio(r, 3),
            "≤ 1.00x (never slower)", ok,
            "" if ok else "slower than the SDK path",
            [f"{lat:g} s: SDK path = images.generate + httpx.get(url) for each of the 4 URLs in turn"]))
    nagle_on, nagle_off = _nagle(3 if quick else 15)
    rows.append(Row(
        "1z", "simulator fidelity (context): raw POST round trip, 0 s server, Nagle on (before) vs TCP_NODELAY (after)",
        "after " + nagle_off.ms(), "before " + nagle_on.ms(),
        f"{nagle_on.median / nagle_off.median:.1f}x faster", "", None,
        "the loopback server now sets TCP_NODELAY like production servers; before, every small JSON "
        "answer waited ~40 ms for the client's delayed ACK, which skewed the 0 s figures"))
    return rows
