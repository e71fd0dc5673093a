"""The client against the simulator served as a real loopback HTTP server.

Every test compares the ledger with the simulator's own tally of charges: the ledger must hold
exactly the calls the server charged.
"""

from __future__ import annotations

import threading

import pytest

from shark_nb import (
    APIConnectionError,
    AsyncShark,
    AuthenticationError,
    ContentModerationError,
    InsufficientCreditsError,
    Ledger,
    Shark,
)
from shark_nb.images import read_metadata
from shark_nb.simulator import Simulator, serve_in_thread

KEY = "sk-integration-PLANTED-4242"


@pytest.fixture
def server():
    with serve_in_thread(Simulator(latency=0.05)) as handle:
        yield handle


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


def client_for(handle, ledger, **kw) -> Shark:
    return Shark(api_key=KEY, base_url=handle.base_url, ledger=ledger, **kw)


def charged_tracing_ids(sim) -> list[str]:
    return sorted(c["tracing_id"] for c in sim.charges)


def ledger_charged_ids(ledger) -> list[str]:
    return sorted(r["tracing_id"] for r in ledger.records if r["credit"] is not None)


def test_sync_generation_end_to_end(server, ledger, tmp_path):
    client = client_for(server, ledger)
    result = client.generate("a red fox in the snow", n=2, size="1536x1024", quality="low", output_format="webp")
    assert [im.size for im in result.images] == [(1536, 1024)] * 2
    assert {im.format for im in result.images} == {"webp"}
    assert result.credit == server.sim.charges[0]["credit"] and result.credit > 0
    assert server.sim.auth_leaks == 0
    paths = result.save(tmp_path / "out")
    meta = read_metadata(paths[0])
    assert meta["prompt"] == "a red fox in the snow" and meta["tracing_id"] == result.tracing_id
    assert KEY not in paths[0].read_bytes().decode("latin-1")
    assert ledger_charged_ids(ledger) == charged_tracing_ids(server.sim)


def test_task_mode_end_to_end(server, ledger):
    client = client_for(server, ledger, poll_interval=0.05)
    server.sim.config.latency = 0.3
    result = client.generate("a lighthouse", wait="task", quality="low")
    assert result.task_id and result.task_id.startswith("task_")
    assert server.sim.requests["poll"] >= 2
    assert ledger.records[0]["outcome"] == "ok" and ledger.calls == 1
    assert ledger_charged_ids(ledger) == charged_tracing_ids(server.sim)


def test_batch_at_concurrency_loses_and_duplicates_nothing(server, ledger):
    client = client_for(server, ledger)
    prompts = [f"tile {i}" for i in range(12)]
    results = client.generate_many(prompts, concurrency=6, quality="low", size="1024x1024")
    assert [r.prompt for r in results] == prompts
    assert ledger.calls == 12 and len(server.sim.charges) == 12
    assert ledger_charged_ids(ledger) == charged_tracing_ids(server.sim)
    assert ledger.total_credits == pytest.approx(server.sim.total_credit)


def test_batch_under_rate_limit_completes_with_zero_failures(server, ledger):
    server.sim.rate_limit = (3, 0.5)
    client = client_for(server, ledger)
    results = client.generate_many([f"p{i}" for i in range(8)], concurrency=8, quality="low")
    assert not [r for r in results if isinstance(r, Exception)]
    assert server.sim.requests["post"] > 8  # some 429s happened and were retried
    assert ledger_charged_ids(ledger) == charged_tracing_ids(server.sim)


def test_provider_errors_are_retried_with_the_same_tracing_id(server, ledger):
    server.sim.inject("post", "status", count=2, status=502, type="provider_error")
    result = client_for(server, ledger).generate("x", quality="low")
    posts = [e for e in server.sim.log if e["route"] == "post"]
    assert len(posts) == 3 and {e["tracing_id"] for e in posts} == {result.tracing_id}
    assert ledger.calls == 1


def test_connection_reset_after_charging_is_recorded_as_unknown(server, ledger):
    server.sim.inject("post", "reset")
    with pytest.raises(APIConnectionError, match="may have been charged"):
        client_for(server, ledger).generate("x", quality="low")
    assert len(server.sim.charges) == 1  # the server did charge
    rec = ledger.records[0]
    assert rec["outcome"] == "unknown" and rec["tracing_id"] == server.sim.charges[0]["tracing_id"]
    assert ledger.unknown_cost_calls == 1


@pytest.mark.parametrize("setup, prompt, cls", [
    (lambda sim: None, "a [moderate] test", ContentModerationError),
    (lambda sim: setattr(sim, "balance", 1.0), "x", InsufficientCreditsError),
])
def test_typed_errors_from_the_server(server, ledger, setup, prompt, cls):
    setup(server.sim)
    with pytest.raises(cls):
        client_for(server, ledger).generate(prompt, quality="low")
    assert server.sim.charges == []


def test_invalid_key_is_an_authentication_error_without_the_key(server, ledger):
    client = Shark(api_key="sk-invalid", base_url=server.base_url, ledger=ledger)
    with pytest.raises(AuthenticationError) as info:
        client.generate("x")
    assert "sk-invalid" not in str(info.value)


def test_budget_header_reaches_the_server(server, ledger, monkeypatch):
    ledger.budget = 150.0
    client = client_for(server, ledger)
    client.generate("x", quality="low", size="1024x1024")  # estimate 108.85: fits
    # Bypass the local guard: the server-side guard (X-App-User-Credits = 41.15 left) refuses.
    monkeypatch.setattr(ledger, "check_budget", lambda estimate: None)
    with pytest.raises(InsufficientCreditsError):
        client.generate("x", quality="low", size="1024x1024")
    assert len(server.sim.charges) == 1


def test_async_client_against_the_server(server, ledger):
    import asyncio

    async def run():
        async with AsyncShark(api_key=KEY, base_url=server.base_url, ledger=ledger) as client:
            return await asyncio.gather(*(client.generate(f"p{i}", quality="low") for i in range(3)))

    results = asyncio.run(run())
    assert len(results) == 3 and len(server.sim.charges) == 3
    assert server.sim.auth_leaks == 0


def test_sync_client_from_many_threads(server, ledger):
    client = client_for(server, ledger)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(client.generate("t", quality="low"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 4 and ledger.calls == 4
    assert ledger_charged_ids(ledger) == charged_tracing_ids(server.sim)


def test_a_dropped_sync_client_closes_its_connections(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import gc, time, warnings
        warnings.simplefilter("always", ResourceWarning)
        from shark_nb import Ledger, Shark
        from shark_nb.simulator import Simulator, serve_in_thread
        with serve_in_thread(Simulator(latency=0.01)) as h:
            c = Shark(api_key="sk-x", base_url=h.base_url, ledger=Ledger({str(tmp_path / 'l.jsonl')!r}))
            c.generate("x", quality="low")
            del c
            gc.collect(); time.sleep(0.5); gc.collect()
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]
    assert "ResourceWarning" not in run.stderr, run.stderr[-2000:]
