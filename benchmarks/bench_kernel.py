"""6. Kernel responsiveness: the round trip of a trivial cell while a studio generation runs,
against the same when the kernel is idle.

A real ipykernel (jupyter_client) with the studio, talking to the loopback simulator in this
process with 3 s of server time (task mode, the studio's default: a 202, polls every 2 s, two
downloads, thumbnails made in a worker thread). Generate is clicked the way a browser clicks it
(a ``comm_msg`` with the button's ``click`` event). The trivial cell is ``s.job is not None``: it
costs nothing and says whether the generation was still in flight, so only round trips made while
it was are counted as busy. A first generation is made untimed (imports, the server's render cache).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Row, Sample, kernel_env, sim_server

sys.path.insert(0, str(REPO / "tests"))
from kernel_driver import Kernel as _Kernel  # noqa: E402


class Kernel(_Kernel):
    def wait_idle_job(self, limit: float = 60) -> None:
        deadline = time.perf_counter() + limit
        while self.value("s.job is not None"):
            if time.perf_counter() > deadline:
                raise RuntimeError("the generation never finished")
            time.sleep(0.1)


def run(quick: bool) -> list[Row]:
    latency = 1.0 if quick else 3.0
    rounds = 1 if quick else 3
    idle, busy = Sample(), Sample()
    spacing = 0.05
    with tempfile.TemporaryDirectory(prefix="shark-bench-k-") as tmp, sim_server(latency=latency) as server:
        kernel = Kernel(kernel_env(Path(tmp) / "home", server.base_url), cwd=tmp)
        try:
            kernel.run("import shark_nb")
            kernel.run("s = shark_nb.studio(); s.prompt.value = 'a red fox in the snow'; s.n.value = 2")
            assert kernel.value("s.client.offline") is False, "the studio should use the loopback server"
            model_id = kernel.value("s.generate_button.model_id")
            kernel.click(model_id)          # untimed first generation: imports, render cache
            time.sleep(0.5)
            kernel.wait_idle_job()
            jobs = []
            for _ in range(rounds):
                for _ in range(10 if quick else 20):
                    dt, text = kernel.run("s.job is not None")
                    assert text == "False"
                    idle.add(dt)
                    time.sleep(spacing)
                t_click = time.perf_counter()
                kernel.click(model_id)
                time.sleep(0.05)
                while True:
                    dt, text = kernel.run("s.job is not None")
                    if text != "True":
                        break
                    busy.add(dt)
                    time.sleep(spacing)
                jobs.append(time.perf_counter() - t_click)
            status = kernel.value("s.status.value")
            n_results = kernel.value("len(s.results)")
        finally:
            kernel.close()
    assert status.startswith("Done"), status
    diff = busy.median - idle.median
    ok = diff <= 0.050
    busy_sorted = sorted(busy.values)
    p90 = busy_sorted[int(0.9 * (len(busy_sorted) - 1))]
    return [Row(
        "6", f"round trip of a trivial cell while a studio generation ({latency:g} s server, task mode, n=2) "
             "runs vs idle",
        f"busy {busy.ms()} (p90 {p90 * 1000:.1f} ms, {len(busy)} cells)",
        f"idle {idle.ms()} ({len(idle)} cells)",
        f"{diff * 1000:+.1f} ms (median busy − median idle)",
        "≤ +50 ms", ok,
        "" if ok else "cells wait behind work on the kernel's thread during a generation",
        [f"{rounds} generations of {', '.join(f'{j:.1f}' for j in jobs)} s each; {n_results} results in the studio; "
         "max busy round trip " + f"{busy.hi * 1000:.0f} ms"]),
    ]
