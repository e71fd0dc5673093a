"""The simulator as a real loopback server: httpx, keep-alive, concurrency, curl, the OpenAI SDK, the CLI."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from shark_nb.params import MODEL
from shark_nb.simulator import ServerHandle, Simulator, serve_in_thread

GOOD = {"model": MODEL, "prompt": "a kite over the dunes", "size": "1024x1024", "quality": "low"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with serve_in_thread(Simulator(latency=0)) as srv:
        yield srv


def test_handle_urls(server: ServerHandle):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    assert server.base_url == server.url + "/api/v1"
    assert server.sim.api_base == server.base_url and server.sim.files_base == server.url
    assert repr(server).startswith("<ServerHandle http://127.0.0.1:")


def test_sync_and_download_over_http(server):
    with httpx.Client(base_url=server.base_url) as c:
        r = c.post("/images/generations", json={**GOOD, "n": 2}, headers={"X-Tracing-ID": "srv-1"})
        assert r.status_code == 200
        assert r.headers["x-tracing-id"] == "srv-1"
        assert int(r.headers["content-length"]) == len(r.content)
        out = r.json()
        for d in out["data"]:
            assert d["url"].startswith(server.url + "/files/")
            img = c.get(d["url"])
            assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
            assert int(img.headers["content-length"]) == len(img.content)
        head = c.head(out["data"][0]["url"])
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
        bad = c.post("/images/generations", json={**GOOD, "n": 7})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"
    assert len(server.sim.charges) == 1


def test_task_mode_over_http():
    sim = Simulator(latency=0.2, task_pending=0.05)
    with serve_in_thread(sim) as srv, httpx.Client() as c:
        task = c.post(srv.base_url + "/images/generations", json={**GOOD, "async": True}).json()
        assert task["polling_url"].startswith(srv.base_url + "/images/generations/task_")
        deadline = time.monotonic() + 10
        while True:
            status = c.get(task["polling_url"]).json()
            if status["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status["status"] == "completed"
        assert c.get(status["data"][0]["url"]).status_code == 200


def test_keep_alive_two_requests_on_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(2):
            conn.request("POST", "/api/v1/images/generations", body=json.dumps(GOOD),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(body)
            assert not resp.will_close
        conn.request("GET", "/api/v1/images/generations/task_missing")
        resp = conn.getresponse()
        assert resp.status == 404 and json.loads(resp.read())["error"]["code"] == "task_not_found"
    finally:
        conn.close()


def test_chunked_request_body(server):
    def chunks():
        raw = json.dumps(GOOD).encode()
        yield raw[:10]
        yield raw[10:]

    r = httpx.post(server.base_url + "/images/generations", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200


def test_32_concurrent_requests_are_served_in_parallel():
    sim = Simulator(latency=0.5)
    with serve_in_thread(sim) as srv, httpx.Client(limits=httpx.Limits(max_connections=64), timeout=30) as c:
        t0 = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda _: c.post(srv.base_url + "/images/generations", json=GOOD).status_code,
                                  range(32)))
        elapsed = time.monotonic() - t0
    assert codes == [200] * 32
    assert elapsed < 8  # serially this would take 16 s
    assert len(sim.charges) == 32


def test_close_stops_the_server():
    srv = serve_in_thread(Simulator(latency=0))
    c = httpx.Client()
    assert c.get(srv.base_url + "/models").status_code == 200  # leaves a keep-alive connection open
    srv.close()
    srv.close()  # idempotent
    assert srv.closed and not srv.thread.is_alive()
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.base_url + "/models", timeout=2)
    c.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_providers_curl_example_works_unchanged():
    sim = Simulator(latency=0, allow_anonymous=False)
    with serve_in_thread(sim) as srv:
        cmd = f"""curl -sS -X POST {srv.base_url}/images/generations \\
  -H "Authorization: Bearer <api-key>" -H "Content-Type: application/json" \\
  -d '{{"model": "openai/gpt-image-2", "n": 1, "size": "auto", "prompt": "Your prompt here",
       "quality": "auto", "background": "auto", "output_format": "png"}}'"""
        done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert len(out["data"]) == 1 and out["credit"] > 0
        assert set(out["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
        img = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{content_type}",
                              out["data"][0]["url"]], capture_output=True, text=True, timeout=30)
        assert img.stdout == "200 image/png"


def test_openai_sdk_images_generate(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
    res = client.images.generate(model="openai/gpt-image-2", prompt="a lighthouse in fog",
                                 size="1024x1024", n=1)
    assert len(res.data) == 1 and res.data[0].url.startswith(server.url + "/files/")
    assert res.usage is not None and res.usage.output_tokens == 1056
    assert httpx.get(res.data[0].url).status_code == 200
    # The SDK sends only documented fields for these arguments (checked in the request log).
    (sent,) = [e["json"] for e in server.sim.log if e["route"] == "post"]
    assert set(sent) == {"model", "prompt", "size", "n"}
    # The simulator is strict: OpenAI-only fields are refused like any unknown field.
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="openai/gpt-image-2", prompt="x", response_format="url")
    assert "response_format" in str(err.value)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sk-invalid", base_url=server.base_url, max_retries=0).images.generate(
            model="openai/gpt-image-2", prompt="x")


def test_cli_runs_prints_the_url_and_stops_on_ctrl_c():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "shark_nb.simulator", "--port", "0", "--latency", "0",
                             "--rate-limit", "1/60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/api/v1)", line)
        assert m, line
        base = m[1]
        assert httpx.get(base + "/models").status_code == 401  # a key is required by default
        ok = httpx.post(base + "/images/generations", json=GOOD, headers={"Authorization": "Bearer sk-cli"})
        assert ok.status_code == 200
        limited = httpx.post(base + "/images/generations", json=GOOD, headers={"Authorization": "Bearer sk-cli"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "shark_nb.simulator", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=30)
    assert out.returncode == 0 and "--rate-limit" in out.stdout and "--allow-anonymous" in out.stdout
