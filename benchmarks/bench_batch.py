"""3. Batch throughput: ``generate_many`` against a sequential loop, with and without a rate limit.

32 prompts (n=1, 1024x1024, quality low, JPEG) at 0.5 s of server time each, on the loopback
server. An untimed pass over the same prompts warms the simulator's render cache first, so the
client is what gets timed (the simulator renders in this process).

* ``for p in prompts: shark.generate(p)`` — the sequential loop (the baseline);
* ``shark.generate_many(prompts, concurrency=C)`` for C = 1, 4, 8, 16;
* the same at C=8 with the simulator's rate limit on (``sim.rate_limit = (8, 1.0)``: 8 POSTs per
  sliding second, 429 + Retry-After beyond): every call must complete (no failure in any slot),
  and the time is compared with the ideal schedule (see the method notes in RESULTS.md).
"""

from __future__ import annotations

import math

from common import Row, Sample, shark_client, sim_server, timed

PARAMS = dict(n=1, size="1024x1024", quality="low", output_format="jpeg")


def ideal_rate_limited(m: int, n: int, per: float, latency: float, concurrency: int) -> float:
    """Lower bound for m calls under "n posts per `per` s" at `concurrency` (see RESULTS.md)."""
    return max((math.ceil(m / n) - 1) * per + latency, math.ceil(m / concurrency) * latency)


def run(quick: bool) -> list[Row]:
    m, latency = (8, 0.1) if quick else (32, 0.5)
    reps_slow, reps_fast = (1, 1) if quick else (2, 3)
    limit = (4, 1.0) if quick else (8, 1.0)
    prompts = [f"batch prompt {i}: a small boat" for i in range(m)]
    levels = (1, 4, 8, 16)
    samples: dict[str, Sample] = {k: Sample() for k in ["loop", *[f"c{c}" for c in levels], "rl"]}
    failures: dict[str, int] = {k: 0 for k in samples}
    rate_limited: list[int] = []
    with sim_server(latency=latency) as server, shark_client(server) as shark:
        shark.generate_many(prompts, concurrency=16, **PARAMS)  # untimed: warm the render cache

        def loop() -> None:
            for p in prompts:
                shark.generate(p, **PARAMS)

        def many(c: int) -> None:
            res = shark.generate_many(prompts, concurrency=c, **PARAMS)
            failures[f"c{c}"] += sum(isinstance(r, Exception) for r in res)

        for rep in range(max(reps_slow, reps_fast)):
            if rep < reps_slow:
                samples["loop"].add(timed(loop)[0])
                samples["c1"].add(timed(lambda: many(1))[0])
            for c in levels[1:]:
                samples[f"c{c}"].add(timed(lambda c=c: many(c))[0])
        # rate-limited runs, each from a quiet window
        for _ in range(reps_fast):
            import time

            time.sleep(limit[1] + 0.1)
            server.sim.rate_limit = limit
            server.sim.reset_stats()
            dt, res = timed(lambda: shark.generate_many(prompts, concurrency=8, **PARAMS))
            server.sim.rate_limit = None
            samples["rl"].add(dt)
            failures["rl"] += sum(isinstance(r, Exception) for r in res)
            rate_limited.append(sum(1 for e in server.sim.log if e.get("route") == "post" and e.get("status") == 429))
    base = samples["loop"].median
    rows = []
    detail = [f"sequential loop of {m} × generate: {samples['loop'].s()}"]
    for c in levels:
        k = "c" + str(c)
        fails = f", {failures[k]} failures" if failures[k] else ""
        detail.append(f"concurrency {c}: {samples[k].s()} = {base / samples[k].median:.2f}x (ideal {min(m, c)}x){fails}")
    s8 = base / samples["c8"].median
    spread8 = (base / samples["c8"].hi, base / samples["c8"].lo)
    ok8 = s8 >= 5 and failures["c8"] == 0
    rows.append(Row(
        "3a", f"{m} prompts at {latency:g} s: generate_many(concurrency=8) vs a sequential loop",
        "c=8 " + samples["c8"].s(), "loop " + samples["loop"].s(),
        f"{s8:.2f}x faster [{spread8[0]:.2f}–{spread8[1]:.2f}] (c=1 {base / samples['c1'].median:.2f}x, "
        f"c=4 {base / samples['c4'].median:.2f}x, c=16 {base / samples['c16'].median:.2f}x)",
        "≥ 5x at c=8", ok8, "" if ok8 else "the batch does not overlap its calls well enough", detail))
    ideal = ideal_rate_limited(m, limit[0], limit[1], latency, 8)
    r = samples["rl"].median / ideal
    ok = r <= 1.5 and failures["rl"] == 0
    rows.append(Row(
        "3b", f"{m} prompts, rate limit {limit[0]} POSTs/{limit[1]:g} s (429 + Retry-After), c=8: "
              "time vs the ideal schedule; failures",
        f"{samples['rl'].s()}, {failures['rl']} failures, {min(rate_limited)}–{max(rate_limited)} 429s per run",
        f"ideal {ideal:.2f} s", f"{r:.2f}x the ideal [{samples['rl'].lo / ideal:.2f}–{samples['rl'].hi / ideal:.2f}]",
        "0 failures, ≤ 1.5x ideal", ok,
        "" if ok else ("some calls failed under the rate limit" if failures["rl"]
                       else "the shared back-off leaves the rate-limit windows under-used"),
        [f"ideal = max((ceil({m}/{limit[0]}) − 1)·{limit[1]:g} + {latency:g}, ceil({m}/8)·{latency:g}) = {ideal:.2f} s"]))
    return rows
