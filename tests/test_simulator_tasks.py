"""The simulator's task mode, cancel, URL expiry and rate limit, driven by an injected clock."""

from __future__ import annotations

import base64
import email.utils
import io

import httpx
import pytest
from PIL import Image

from shark_nb import pricing
from shark_nb.params import MODEL
from shark_nb.simulator import ManualClock, Simulator, SimulatorTransport

GOOD = {"model": MODEL, "prompt": "a lighthouse at night"}
TASK = {**GOOD, "async": True}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make(clock, **kw) -> tuple[Simulator, httpx.Client]:
    kw.setdefault("latency", 10.0)
    kw.setdefault("task_pending", 2.0)
    sim = Simulator(clock=clock, **kw)
    return sim, httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)


def start(c: httpx.Client, **fields) -> dict:
    r = c.post("/images/generations", json={**TASK, **fields})
    assert r.status_code == 202, r.text
    return r.json()


def test_task_lifecycle(clock):
    sim, c = make(clock)
    task = start(c, n=2, quality="low")
    assert set(task) == {"id", "object", "status", "created", "timeout", "polling_url", "cancel_url"}
    assert task["id"].startswith("task_") and task["object"] == "image.generation.task"
    assert task["status"] == "pending" and task["timeout"] == 300 and isinstance(task["created"], int)
    assert task["polling_url"] == f"{sim.api_base}/images/generations/{task['id']}"
    assert task["cancel_url"] == f"{sim.api_base}/images/generations/{task['id']}/cancel"

    assert c.get(task["polling_url"]).json()["status"] == "pending"
    clock.advance(1.9)
    assert c.get(task["polling_url"]).json()["status"] == "pending"
    clock.advance(0.2)
    assert c.get(task["polling_url"]).json()["status"] == "running"
    clock.advance(7.8)
    assert c.get(task["polling_url"]).json()["status"] == "running"
    assert sim.charges == []
    clock.advance(0.2)
    done = c.get(task["polling_url"]).json()
    assert done["status"] == "completed"
    assert {"id", "object", "status", "created", "data", "usage", "credit"} <= set(done)
    assert len(done["data"]) == 2
    in_t = pricing.input_tokens(GOOD["prompt"])
    out_t = pricing.output_tokens("low", "auto", 2)
    assert done["usage"] == {"input_tokens": in_t, "output_tokens": out_t, "total_tokens": in_t + out_t}
    assert done["credit"] == pricing.credits_for_tokens(in_t, out_t)
    for _ in range(3):  # polled many times, charged once
        assert c.get(task["polling_url"]).json()["data"] == done["data"]
    (charge,) = sim.charges
    assert charge["task_id"] == task["id"] and charge["credit"] == done["credit"] and charge["images"] == 2
    img = c.get(done["data"][0]["url"])
    assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).size == (1024, 1024)
    assert sim.requests["poll"] == 8


def test_completed_task_is_charged_even_if_never_polled(clock):
    sim, c = make(clock)
    task = start(c)
    clock.advance(10)
    (charge,) = sim.charges
    assert charge["task_id"] == task["id"]
    assert sim.task(task["id"])["status"] == "completed"


def test_task_charge_keeps_the_posts_tracing_id(clock):
    sim, c = make(clock)
    r = c.post("/images/generations", json=TASK, headers={"X-Tracing-ID": "trace-task"})
    clock.advance(11)
    c.get(r.json()["polling_url"], headers={"X-Tracing-ID": "poll-trace"})
    assert sim.charges[0]["tracing_id"] == "trace-task"


def test_custom_timeout_and_timeout_failure(clock):
    sim, c = make(clock, latency=100.0)
    task = start(c, timeout=30)
    assert task["timeout"] == 30
    clock.advance(29)
    assert c.get(task["polling_url"]).json()["status"] == "running"
    clock.advance(1)
    failed = c.get(task["polling_url"]).json()
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "timeout_error" and failed["error"]["message"]
    assert "data" not in failed and "credit" not in failed
    assert sim.charges == []


def test_task_error_as_string(clock):
    sim, c = make(clock, latency=100.0, task_error_as_string=True)
    task = start(c, timeout=30)
    clock.advance(31)
    failed = c.get(task["polling_url"]).json()
    assert failed["status"] == "failed" and isinstance(failed["error"], str)


def test_cancel_pending_task(clock):
    sim, c = make(clock)
    task = start(c)
    r = c.post(task["cancel_url"])
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled" and r.json()["id"] == task["id"]
    clock.advance(50)
    assert c.get(task["polling_url"]).json()["status"] == "cancelled"
    assert c.post(task["cancel_url"]).status_code == 200  # idempotent
    assert sim.charges == []
    assert sim.requests["cancel"] == 2


def test_cancel_running_task_allowed_and_refused(clock):
    sim, c = make(clock)
    task = start(c)
    clock.advance(5)
    assert c.post(task["cancel_url"]).json()["status"] == "cancelled"

    sim2, c2 = make(clock, cancel_running="refuse")
    task = start(c2)
    assert c2.post(task["cancel_url"]).status_code == 200  # still pending: fine
    task = start(c2)
    clock.advance(5)
    r = c2.post(task["cancel_url"])
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict"
    clock.advance(5)
    assert c2.get(task["polling_url"]).json()["status"] == "completed"
    assert len(sim2.charges) == 1


def test_cancel_finished_task_is_409(clock):
    sim, c = make(clock)
    task = start(c)
    clock.advance(10)
    r = c.post(task["cancel_url"])
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict"
    assert len(sim.charges) == 1  # the cancel attempt itself settled and charged the completion

    sim, c = make(clock, latency=100.0)
    task = start(c, timeout=30)
    clock.advance(30)
    assert c.post(task["cancel_url"]).status_code == 409


def test_status_spelling(clock):
    sim, c = make(clock, status_spelling={"pending": "queued", "running": "in_progress"})
    task = start(c)
    assert task["status"] == "queued"
    assert c.get(task["polling_url"]).json()["status"] == "queued"
    clock.advance(3)
    assert c.get(task["polling_url"]).json()["status"] == "in_progress"
    clock.advance(10)
    assert c.get(task["polling_url"]).json()["status"] == "completed"


def test_task_result_shapes(clock):
    sim, c = make(clock, task_result_shape="output_urls")
    task = start(c, n=2)
    clock.advance(10)
    done = c.get(task["polling_url"]).json()
    assert "data" not in done and len(done["output"]["urls"]) == 2
    assert c.get(done["output"]["urls"][1]).status_code == 200

    sim, c = make(clock, task_result_shape="b64_json", omit_credit=True)
    task = start(c, output_format="jpeg")
    clock.advance(10)
    done = c.get(task["polling_url"]).json()
    assert "credit" not in done and "usage" in done
    img = Image.open(io.BytesIO(base64.b64decode(done["data"][0]["b64_json"])))
    assert img.format == "JPEG"
    assert sim.charges[0]["reported"] is False


def test_async_false_is_sync(clock):
    sim, c = make(clock, latency=0.0)
    r = c.post("/images/generations", json={**GOOD, "async": False})
    assert r.status_code == 200 and "data" in r.json()


def test_polls_need_auth(clock):
    sim, c = make(clock, allow_anonymous=False)
    r = c.post("/images/generations", json=TASK, headers={"x-api-key": "k"})
    assert r.status_code == 202
    assert c.get(r.json()["polling_url"]).status_code == 401
    assert c.get(r.json()["polling_url"], headers={"x-api-key": "k"}).status_code == 200


# --------------------------------------------------------------------------- signed URLs


def test_url_expiry(clock):
    sim, c = make(clock, latency=0.0, url_ttl=60)
    url = c.post("/images/generations", json=GOOD).json()["data"][0]["url"]
    clock.advance(59)
    assert c.get(url).status_code == 200
    clock.advance(2)
    r = c.get(url)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/xml"
    assert b"AccessDenied" in r.content and b"expired" in r.content


def test_task_urls_expire_from_completion(clock):
    sim, c = make(clock, url_ttl=60)
    task = start(c)
    clock.advance(50)  # completed at t=10
    url = c.get(task["polling_url"]).json()["data"][0]["url"]
    clock.advance(19)  # t=69 < 10 + 60
    assert c.get(url).status_code == 200
    clock.advance(2)
    assert c.get(url).status_code == 403


def test_tampered_urls_are_403(clock):
    sim, c = make(clock, latency=0.0)
    url = httpx.URL(c.post("/images/generations", json=GOOD).json()["data"][0]["url"])
    bad_sig = url.copy_set_param("sig", "0" * 32)
    assert c.get(bad_sig).status_code == 403 and b"SignatureDoesNotMatch" in c.get(bad_sig).content
    later = url.copy_set_param("expires", str(int(url.params["expires"]) + 3600))
    assert c.get(later).status_code == 403
    assert c.get(url.copy_with(query=b"")).status_code == 403
    other_ext = str(url).replace(".png?", ".jpeg?")
    assert c.get(other_ext).status_code == 403
    # A well-signed URL for an image that does not exist
    ghost = sim._signed_url("img_" + "0" * 32, "png", int(sim.now_unix()) + 60)
    r = c.get(ghost)
    assert r.status_code == 404 and b"NoSuchKey" in r.content
    assert c.get(url).status_code == 200


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_sliding_window(clock):
    sim, c = make(clock, latency=0.0)
    sim.rate_limit = (2, 10)
    assert c.post("/images/generations", json=GOOD).status_code == 200
    clock.advance(4)
    assert c.post("/images/generations", json=GOOD).status_code == 200
    r = c.post("/images/generations", json=GOOD)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.headers["retry-after"] == "6"
    clock.advance(6)
    assert c.post("/images/generations", json=GOOD).status_code == 200
    assert len(sim.charges) == 3
    assert c.get("/models").status_code == 200  # only generation POSTs are limited
    sim.rate_limit = None
    for _ in range(3):
        assert c.post("/images/generations", json=GOOD).status_code == 200


def test_rate_limit_http_date(clock):
    sim, c = make(clock, latency=0.0, rate_limit=(1, 30), retry_after_format="http-date")
    assert c.post("/images/generations", json=GOOD).status_code == 200
    r = c.post("/images/generations", json=GOOD)
    assert r.status_code == 429
    when = email.utils.parsedate_to_datetime(r.headers["retry-after"]).timestamp()
    assert when == pytest.approx(sim.now_unix() + 30, abs=1.5)


def test_task_urls_follow_the_host_the_request_was_addressed_to(clock):
    sim = Simulator(clock=clock, latency=10.0)
    sim.bind("http://127.0.0.1:8765/api/v1", "http://127.0.0.1:8765")
    for origin in ("http://localhost:8765", "http://127.0.0.1:8765", "http://[::1]:8765", "https://proxy.test"):
        task = sim.handle("POST", origin + "/api/v1/images/generations", {}, _body(TASK)).json()
        assert task["polling_url"] == f"{origin}/api/v1/images/generations/{task['id']}"
        assert task["cancel_url"] == task["polling_url"] + "/cancel"
        poll = sim.handle("GET", origin.replace("localhost", "127.0.0.1") + f"/api/v1/images/generations/{task['id']}",
                          {}).json()
        assert poll["polling_url"].startswith(origin.replace("localhost", "127.0.0.1") + "/api/v1/")


def test_relative_task_urls_mode(clock):
    sim, c = make(clock, task_urls="relative")
    task = start(c)
    assert task["polling_url"] == f"/api/v1/images/generations/{task['id']}"
    assert task["cancel_url"] == task["polling_url"] + "/cancel"
    origin = sim.api_base[: -len("/api/v1")]
    assert c.get(origin + task["polling_url"]).json()["polling_url"] == task["polling_url"]
    assert c.post(origin + task["cancel_url"]).json()["status"] == "cancelled"


def test_an_explicit_api_base_is_advertised_as_configured(clock):
    sim = Simulator(clock=clock, api_base="https://gateway.test/api/v1")
    task = sim.handle("POST", "http://127.0.0.1:1/api/v1/images/generations", {}, _body(TASK)).json()
    assert task["polling_url"] == f"https://gateway.test/api/v1/images/generations/{task['id']}"
    with pytest.raises(ValueError, match="task_urls"):
        Simulator(task_urls="sideways")


def _body(payload: dict) -> bytes:
    import json

    return json.dumps(payload).encode()
