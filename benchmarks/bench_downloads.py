"""2. Parallel downloads: n=4 images with 0.25 s per download, against sequential downloads.

Server time 0 s for the POST and ``download_latency=0.25`` for every image, on the loopback
server. In the same run:

* **shark_nb n=4**: ``Shark.generate(n=4)`` (downloads in parallel);
* **shark_nb n=1**: ``Shark.generate(n=1)`` — one download's time (the floor for n=4);
* **sequential**: raw httpx, the POST then the four GETs one after another.

Goal: n=4 close to one download's time (≤ 1.25x of n=1).
"""

from __future__ import annotations

import httpx
from common import (
    KEY,
    Row,
    fmt_ratio,
    interleave,
    ratio_spread,
    shark_client,
    sim_server,
)

PARAMS = dict(size="1024x1024", quality="low", output_format="jpeg")
PROMPT = "benchmark prompt: parallel downloads"


def run(quick: bool) -> list[Row]:
    reps = 2 if quick else 9
    dl = 0.1 if quick else 0.25
    with sim_server(latency=0.0, download_latency=dl) as server, shark_client(server) as shark, \
            httpx.Client(timeout=60) as raw:
        body = {"model": "openai/gpt-image-2", "prompt": PROMPT, "n": 4, **PARAMS}

        def sequential() -> None:
            r = raw.post(f"{server.base_url}/images/generations", json=body, headers={"Authorization": f"Bearer {KEY}"})
            r.raise_for_status()
            for d in r.json()["data"]:
                assert raw.get(d["url"]).content

        funcs = {
            "n4": lambda: shark.generate(PROMPT, n=4, **PARAMS),
            "n1": lambda: shark.generate(PROMPT, n=1, **PARAMS),
            "seq": sequential,
        }
        for f in funcs.values():
            f()
        s = interleave(reps, funcs)
    r1 = ratio_spread(s["n4"], s["n1"])
    rseq = ratio_spread(s["seq"], s["n4"])
    ok = r1[0] <= 1.25
    return [Row(
        "2", f"n=4 with {dl:g} s per download: shark_nb (parallel) vs one download (n=1) and vs sequential",
        "n=4 " + s["n4"].s(3), f"n=1 {s['n1'].s(3)}; sequential {s['seq'].s(3)}",
        f"n=4 / n=1 = {fmt_ratio(r1)}; {rseq[0]:.2f}x faster than sequential",
        "n=4 ≤ 1.25x one download", ok,
        "" if ok else "the four downloads do not overlap well enough",
    )]
