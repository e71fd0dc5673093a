"""Many notebook users call ``nest_asyncio.apply()`` for other libraries. It patches the running
loop (re-entrant ``run_until_complete``, ``asyncio.run`` inside a running loop): the client, the
magic and the studio must all still work in a REAL kernel where it has been applied.

One kernel (module scope), ``nest_asyncio.apply()`` first, the simulator served on a loopback
port with a key set (so real sockets and the real Authorization path are used, not the in-process
transport). Every way a notebook drives the client is tried: sync ``Shark`` (also from inside a
coroutine on the kernel's loop, and nested in ``asyncio.run``), ``AsyncShark`` with top-level
``await``, with ``asyncio.run`` (a new loop each time, the same client reused), with
``run_until_complete`` on the kernel's own loop, sync and task mode, batches; ``%shark`` and
``%%shark``; the studio's Generate clicked the way a browser clicks it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("nest_asyncio")
pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from kernel_driver import Kernel  # noqa: E402  (after the skips)

REPO = Path(__file__).resolve().parents[1]
GEN = "n=1, size='1024x1024', quality='low'"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARK_")}
    env.update(SHARK_SIM_LATENCY="0.05", SHARK_NB_HOME=str(tmp / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    k = Kernel(env, cwd=str(tmp))
    try:
        k.run("import nest_asyncio, asyncio; nest_asyncio.apply()")
        assert k.value("type(asyncio.get_event_loop()).__name__ + str(hasattr(asyncio.get_event_loop(), "
                       "'_nest_patched'))").endswith("True"), "nest_asyncio is applied to the kernel's loop"
        k.run("import os, shark_nb\nfrom shark_nb.simulator import serve_in_thread\nsrv = serve_in_thread()\n"
              "os.environ['SHARK_API_KEY'] = 'sk-nest-asyncio-0123456789'\n"
              "os.environ['SHARK_BASE_URL'] = srv.base_url")
        yield k
    finally:
        k.close()


@pytest.mark.parametrize("label, code", [
    ("sync Shark", f"c = shark_nb.Shark(); len(c.generate('a fox', {GEN}).images)"),
    ("sync Shark, task mode", f"len(shark_nb.Shark().generate('a fox', {GEN}, wait='task').images)"),
    ("sync Shark inside a coroutine awaited at top level",
     f"async def g():\n    return shark_nb.Shark().generate('x', {GEN})\nlen((await g()).images)"),
    ("sync Shark inside asyncio.run",
     f"async def h():\n    return shark_nb.Shark().generate('x', {GEN})\nlen(asyncio.run(h()).images)"),
    ("sync batch", f"[len(r.images) for r in shark_nb.Shark().generate_many(['a', 'b', 'c'], {GEN})][0]"),
    ("AsyncShark, top-level await", f"a = shark_nb.AsyncShark(); len((await a.generate('a fox', {GEN})).images)"),
    ("AsyncShark, asyncio.run (a new loop)",
     f"a2 = shark_nb.AsyncShark(); len(asyncio.run(a2.generate('a fox', {GEN})).images)"),
    ("the same AsyncShark in a second asyncio.run", f"len(asyncio.run(a2.generate('a fox', {GEN})).images)"),
    ("the same AsyncShark back on the kernel's loop", f"len((await a2.generate('a fox', {GEN})).images)"),
    ("AsyncShark, run_until_complete on the kernel's loop",
     f"len(asyncio.get_event_loop().run_until_complete(a2.generate('a fox', {GEN}, wait='task')).images)"),
    ("AsyncShark batch in asyncio.run",
     f"[len(r.images) for r in asyncio.run(a2.generate_many(['a', 'b'], {GEN}))][0]"),
])
def test_the_client_works_after_nest_asyncio_apply(kernel, label, code):
    _, out = kernel.run(code, timeout=120)
    assert out.splitlines()[-1] == "1", (label, out)


def test_the_magic_works_after_nest_asyncio_apply(kernel):
    kernel.run("%load_ext shark_nb")
    before = kernel.value("shark_nb.magic.get_client().ledger.calls")
    kernel.run("%shark --size 1024x1024 --quality low a fox in the snow", timeout=120)
    kernel.run("%%shark --size 1024x1024 --quality low --wait task\na fox at dusk", timeout=120)
    assert kernel.value("(len(_shark.images), shark_nb.magic.get_client().offline)") == (1, False)
    assert kernel.value("shark_nb.magic.get_client().ledger.calls") == before + 2
    with pytest.raises(AssertionError, match="SharkUsageError"):
        kernel.run("%shark --size 999x999 a fox")  # still one failing line, not a crash


def test_the_studio_generates_and_the_kernel_stays_usable_after_nest_asyncio_apply(kernel):
    kernel.run("s = shark_nb.studio(); s.prompt.value = 'a red fox'; s.n.value = 1")
    assert kernel.value("s.client.offline") is False
    kernel.click(kernel.value("s.generate_button.model_id"))
    assert kernel.run("1 + 1")[1] == "2"  # while it runs
    deadline = time.monotonic() + 60
    while kernel.value("s.job is not None"):
        assert time.monotonic() < deadline, "the studio's generation never finished"
        time.sleep(0.1)
    status, results = kernel.value("(s.status.value, len(s.results))")
    assert status.startswith("Done: 1 image") and results == 1, status
    kernel.run("s.close()")
