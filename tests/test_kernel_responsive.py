"""The kernel never freezes: a generation started from the studio runs on the kernel's own event
loop, so other cells keep executing while it is in flight.

A real ipykernel is started with ``jupyter_client``; the simulator is made slow
(``SHARK_SIM_LATENCY=3``); Generate is clicked the way a browser clicks it (a ``comm_msg`` carrying
the button's ``click`` event); then a trivial cell is executed several times and each round trip
is timed. The measured latencies are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from kernel_driver import Kernel  # noqa: E402  (after the skips)

REPO = Path(__file__).resolve().parents[1]
LATENCY = 3.0
TRIVIAL_RUNS = 6
SPACING = 0.3   # seconds between the trivial cells during the job
MAX_ROUND_TRIP = 1.0  # seconds; generous (idle round trips are a few ms), the job takes >= 3 s


@pytest.fixture
def kernel(tmp_path):
    env = dict(os.environ)
    env.pop("SHARK_API_KEY", None)
    env.update(SHARK_SIM_LATENCY=str(LATENCY), SHARK_NB_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    k = Kernel(env)
    try:
        yield k
    finally:
        k.close()


def test_trivial_cells_run_while_a_generation_is_in_flight(kernel, tmp_path):
    kernel.run(f"import os; os.chdir({str(tmp_path)!r})")
    kernel.run("import shark_nb, time")
    kernel.run("s = shark_nb.studio(); s.prompt.value = 'a red fox in the snow'; s.n.value = 2")
    assert kernel.value("s.client.offline") is True
    model_id = kernel.value("s.generate_button.model_id")

    idle = [kernel.run("1+1")[0] for _ in range(TRIVIAL_RUNS)]

    kernel.click(model_id)
    t_click = time.perf_counter()
    busy: list[float] = []
    for _ in range(TRIVIAL_RUNS):   # spread over the first ~2 s of the ~3 s job
        rtt, text = kernel.run("1+1")
        assert text == "2"
        busy.append(rtt)
        time.sleep(SPACING)
    # the job really was in flight the whole time the trivial cells ran
    still_running = kernel.value("s.job is not None")
    status_during = kernel.value("s.status.value")
    t_measured = time.perf_counter() - t_click

    deadline = time.perf_counter() + 30
    while kernel.value("s.job is not None"):
        assert time.perf_counter() < deadline, "the generation never finished"
        time.sleep(0.1)
    job_seconds = time.perf_counter() - t_click
    final = kernel.value("(s.status.value, len(s.results), [len(r.images) for r in s.results], s.client.ledger.calls)")

    print(f"\nround trip of '1+1' idle:   {', '.join(f'{x * 1000:.0f} ms' for x in idle)}"
          f"\nround trip during the job: {', '.join(f'{x * 1000:.0f} ms' for x in busy)}"
          f"\n{TRIVIAL_RUNS} trivial cells done {t_measured:.2f} s after the click; job finished after "
          f"{job_seconds:.2f} s; status while running: {status_during!r}; final: {final[0]!r}", file=sys.stderr)

    assert still_running, f"the job had already finished after {t_measured:.2f} s"
    assert max(busy) < MAX_ROUND_TRIP, busy
    assert job_seconds >= LATENCY
    assert status_during.startswith("Generating · task") and status_during.endswith(" s"), status_during
    status, n_results, n_images, calls = final
    assert status.startswith("Done: 2 images"), status
    assert n_results == 1 and n_images == [2] and calls == 1
