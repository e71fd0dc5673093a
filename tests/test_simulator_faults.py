"""Deterministic fault injection in the simulator: one test (at least) per fault kind."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from shark_nb.params import MODEL
from shark_nb.simulator import (
    FAULT_KINDS,
    AsyncSimulatorTransport,
    ManualClock,
    Simulator,
    SimulatorTransport,
    serve_in_thread,
)

GOOD = {"model": MODEL, "prompt": "a paper boat on a pond", "size": "1024x1024", "quality": "low"}
TASK = {**GOOD, "async": True}


@pytest.fixture
def sim() -> Simulator:
    return Simulator(latency=0)


@pytest.fixture
def c(sim):
    with httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base) as client:
        yield client


def post(c, body=GOOD, **kw):
    return c.post("/images/generations", json=body, **kw)


def test_inject_validates_its_arguments(sim):
    with pytest.raises(ValueError):
        sim.inject("nowhere", "status")
    with pytest.raises(ValueError):
        sim.inject("post", "explode")
    with pytest.raises(ValueError):
        sim.inject("cancel", "no_images")
    with pytest.raises(ValueError):
        sim.inject("poll", "task_failed")
    with pytest.raises(ValueError):
        sim.inject("post", "status", count=0)
    with pytest.raises(ValueError):
        sim.inject("post", "status", colour="red")
    assert set(FAULT_KINDS) >= {"status", "html", "empty", "truncated_json", "stall", "no_images", "reset"}


def test_status_fault_with_retry_after_and_count(sim, c):
    fault = sim.inject("post", "status", count=2, status=503, type="provider_error", message="upstream busy",
                       retry_after=7)
    for left in (1, 0):
        r = post(c, headers={"X-Tracing-ID": "t"})
        assert r.status_code == 503
        assert r.json() == {"error": {"message": "upstream busy", "type": "provider_error"}}
        assert r.headers["retry-after"] == "7"
        assert r.headers["x-tracing-id"] == "t"
        assert fault.remaining == left
    assert sim.faults == []
    assert post(c).status_code == 200
    assert len(sim.charges) == 1  # faulted requests were not processed


def test_status_fault_default_type_follows_status(sim, c):
    sim.inject("post", "status", status=429)
    sim.inject("post", "status", status=504)
    sim.inject("post", "status")
    assert post(c).json()["error"]["type"] == "rate_limit_error"
    assert post(c).json()["error"]["type"] == "timeout_error"
    r = post(c)
    assert r.status_code == 502 and r.json()["error"]["type"] == "provider_error"


def test_status_fault_http_date_retry_after():
    s = Simulator(latency=0, retry_after_format="http-date", clock=ManualClock())
    s.inject("post", "status", status=429, retry_after=3)
    r = s.handle("POST", s.api_base + "/images/generations", {}, json.dumps(GOOD).encode())
    assert r.status == 429 and r.headers["Retry-After"].endswith("GMT")


def test_html_fault(sim, c):
    sim.inject("post", "html", status=502)
    r = post(c)
    assert r.status_code == 502
    assert r.headers["content-type"] == "text/html"
    assert r.text.lstrip().startswith("<html>") and "502 Bad Gateway" in r.text
    assert sim.charges == []


def test_empty_fault(sim, c):
    sim.inject("post", "empty", status=504)
    r = post(c)
    assert r.status_code == 504 and r.content == b""
    assert sim.charges == []


def test_truncated_json_fault_is_charged(sim, c):
    sim.inject("post", "truncated_json")
    r = post(c)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content) > 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert len(sim.charges) == 1  # processed: the client cannot know it was charged


def test_stall_fault_delays_the_answer(sim):
    sim.inject("poll", "stall", delay=12.5)
    task = sim.handle("POST", sim.api_base + "/images/generations", {}, json.dumps(TASK).encode()).json()
    r = sim.handle("GET", task["polling_url"], {}, b"")
    assert r.status == 200 and r.delay == pytest.approx(12.5)
    assert sim.handle("GET", task["polling_url"], {}, b"").delay == 0


def test_stall_fault_times_out_an_in_process_client(sim):
    sim.inject("post", "stall", delay=30)
    with httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base,
                      timeout=httpx.Timeout(5, read=0.05)) as c:
        with pytest.raises(httpx.ReadTimeout):
            post(c)
        assert post(c).status_code == 200


def test_no_images_fault_on_post(sim, c):
    sim.inject("post", "no_images")
    out = post(c).json()
    assert out["data"] == [] and out["credit"] > 0
    assert len(sim.charges) == 1


def test_no_images_fault_on_poll_waits_for_completion():
    clock = ManualClock()
    sim = Simulator(latency=10, task_pending=1, clock=clock)
    c = httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)
    sim.inject("poll", "no_images")
    sim.inject("poll", "status", status=502)
    task = post(c, TASK).json()
    assert c.get(task["polling_url"]).status_code == 502  # the status fault is not blocked
    assert c.get(task["polling_url"]).json()["status"] == "pending"  # no_images not consumed yet
    clock.advance(10)
    done = c.get(task["polling_url"]).json()
    assert done["status"] == "completed" and done["data"] == [] and "credit" in done
    again = c.get(task["polling_url"]).json()
    assert len(again["data"]) == 1
    assert len(sim.charges) == 1


def test_no_images_fault_on_async_post_marks_the_task():
    clock = ManualClock()
    sim = Simulator(latency=5, clock=clock, task_result_shape="output_urls")
    c = httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)
    sim.inject("post", "no_images")
    task = post(c, TASK).json()
    clock.advance(5)
    assert c.get(task["polling_url"]).json()["output"] == {"urls": []}


def test_reset_fault_in_process(sim, c):
    sim.inject("post", "reset")
    with pytest.raises(httpx.RemoteProtocolError):
        post(c)
    assert len(sim.charges) == 1  # processed and charged, answer lost
    assert post(c).status_code == 200


def test_reset_fault_async_transport(sim):
    sim.inject("download", "reset")

    async def main():
        async with httpx.AsyncClient(transport=AsyncSimulatorTransport(sim), base_url=sim.api_base) as ac:
            url = (await ac.post("/images/generations", json=GOOD)).json()["data"][0]["url"]
            with pytest.raises(httpx.RemoteProtocolError):
                await ac.get(url)
            assert (await ac.get(url)).status_code == 200

    asyncio.run(main())


def test_reset_fault_on_the_real_server():
    s = Simulator(latency=0)
    with serve_in_thread(s) as srv, httpx.Client(base_url=srv.base_url) as client:
        s.inject("post", "reset")
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/images/generations", json=GOOD)
        assert client.post("/images/generations", json=GOOD).status_code == 200
        s.inject("download", "reset")
        url = client.post("/images/generations", json=GOOD).json()["data"][0]["url"]
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url)
        assert client.get(url).status_code == 200
    assert len(s.charges) == 3


def test_task_failed_fault():
    clock = ManualClock()
    sim = Simulator(latency=10, clock=clock)
    c = httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)
    sim.inject("post", "task_failed", message="the provider fell over")
    task = post(c, TASK).json()
    clock.advance(9)
    assert c.get(task["polling_url"]).json()["status"] == "running"
    clock.advance(1)
    failed = c.get(task["polling_url"]).json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"message": "the provider fell over", "type": "provider_error", "code": "upstream_error"}
    assert sim.charges == []
    # On a sync post it is a 502 provider_error.
    sim.inject("post", "task_failed")
    r = post(c)
    assert r.status_code == 502 and r.json()["error"]["type"] == "provider_error"


def test_poll_and_cancel_faults():
    sim = Simulator(latency=10, clock=ManualClock())
    c = httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)
    task = post(c, TASK).json()
    sim.inject("poll", "html", status=504)
    sim.inject("cancel", "status", status=500)
    r = c.get(task["polling_url"])
    assert r.status_code == 504 and "<html>" in r.text
    r = c.post(task["cancel_url"])
    assert r.status_code == 500 and r.json()["error"]["type"] == "provider_error"
    sim.inject("cancel", "truncated_json")
    r = c.post(task["cancel_url"])
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert sim.task(task["id"])["status"] == "cancelled"


def test_download_faults(sim, c):
    url = post(c).json()["data"][0]["url"]
    full = c.get(url).content
    sim.inject("download", "status", status=503)
    r = c.get(url)
    assert r.status_code == 503 and b"<Error>" in r.content
    sim.inject("download", "truncated_json")
    r = c.get(url)
    assert r.status_code == 200 and r.content == full[: len(full) // 2]
    sim.inject("download", "html", status=502)
    assert c.get(url).status_code == 502
    sim.inject("download", "empty", status=500)
    r = c.get(url)
    assert r.status_code == 500 and r.content == b""
    sim.inject("download", "stall", delay=3)
    resp = sim.handle("GET", url, {}, b"")
    assert resp.status == 200 and resp.delay == pytest.approx(3)
    assert c.get(url).content == full


def test_models_fault(sim, c):
    sim.inject("models", "empty", status=502)
    assert c.get("/models").status_code == 502
    assert c.get("/models").status_code == 200


def test_clear_faults(sim, c):
    sim.inject("post", "status", count=5)
    sim.clear_faults()
    assert post(c).status_code == 200


def test_a_failing_render_answers_500_not_a_hang_up(sim, c):
    url = post(c).json()["data"][0]["url"]

    def boom(spec):
        raise RuntimeError("render exploded")

    sim.cache._renderer = boom
    r = c.get(url)
    assert r.status_code == 500 and b"InternalError" in r.content


def test_edit_inputs_are_forgotten_beyond_the_bound():
    import base64
    import io

    import numpy as np
    from PIL import Image

    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    ref = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert len(buf.getvalue()) > 10_000
    s = Simulator(latency=0, cache_max_bytes=15_000)
    with httpx.Client(transport=s.transport(), base_url=s.api_base) as cl:
        first = post(cl, {**GOOD, "image": [ref]}).json()["data"][0]["url"]
        second = post(cl, {**GOOD, "image": [ref]}).json()["data"][0]["url"]
        assert cl.get(first).status_code == 404  # record forgotten (its inputs were too heavy to keep)
        assert cl.get(second).status_code == 200
