"""Issue 8, tasks and deadlines: a paid task is never abandoned by the client.

* relative / foreign ``polling_url`` and ``cancel_url`` (resolved on the API's origin, or refused
  with the documented URL used instead), against the simulator as a real loopback server in both
  URL modes, addressed as ``localhost`` and as ``127.0.0.1``;
* Ctrl-C (SIGINT) in a plain script cancels the task at the gateway before the process exits;
* failing polls keep polling until the task's deadline, and no message invites a paid resend;
* a server trickling bytes cannot hold the POST, a poll or a cancel past its deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from fault_servers import KEY, PNG, ScriptedServer, Step, assert_ledger_matches, use_fake_time, wait_until
from shark_nb import APIConnectionError, APITimeoutError, AsyncShark, AuthenticationError, Ledger, Shark
from shark_nb import config
from shark_nb.errors import APIError
from shark_nb.simulator import ManualClock, Simulator, serve_in_thread
from shark_nb.simulator.__main__ import build_parser

REPO = Path(__file__).resolve().parents[1]
GEN = "/api/v1/images/generations"
LOW = dict(quality="low", size="1024x1024", output_format="jpeg")


def no_resend_advice(message: str) -> None:
    """No message in the task path may tell the user to send a paid generation again."""
    assert not re.search(r"\bretry\b|try again|run it again|generate again", message, re.I), message


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def scripted():
    servers = []

    def start():
        srv = ScriptedServer()
        srv.script("GET", "/files/*", Step(200, PNG, {"Content-Type": "image/png"}))
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.close()


def completed(srv, task_id="task_1", credit=272.0) -> Step:
    return Step(200, srv.image_answer(credit=credit, id=task_id, status="completed"), charge=credit)


def running(task_id="task_1") -> Step:
    return Step(200, {"id": task_id, "status": "running"})


# ------------------------------------------------------------------- 1. task URL resolution

API = "http://127.0.0.1:8765/api/v1"
DOC = API + "/images/generations/task_1"


@pytest.mark.parametrize("advertised, expected, refused", [
    ("/api/v1/videos/task_1", "http://127.0.0.1:8765/api/v1/videos/task_1", False),     # the gateway's video tasks
    ("images/generations/task_1", DOC, False),                                           # no leading slash
    ("./images/generations/task_1", DOC, False),
    ("/api/v1/images/generations/task_1?view=full&x=%20y", DOC + "?view=full&x=%20y", False),  # query kept
    ("http://localhost:8765/api/v1/images/generations/task_1", DOC, False),             # other spelling of localhost
    ("http://[::1]:8765/api/v1/images/generations/task_1", DOC, False),
    ("https://127.0.0.1:8765/api/v1/images/generations/task_1", DOC, False),            # https vs http: API's scheme
    ("http://127.0.0.1:9999/api/v1/images/generations/task_1", DOC, False),             # a proxy's inner port
    ("http://127.0.0.1:8765/api/v1/images/generations/task_1#frag", DOC, False),        # fragment dropped
    ("//evil.example/api/v1/images/generations/task_1", DOC, True),                      # scheme-relative: other host
    ("http://other-host/api/v1/images/generations/task_1", DOC, True),
    ("https://evil.example:8765/x?k=1", DOC, True),
    ("ftp://127.0.0.1/x", DOC, True),
    ("", DOC, False),
    (None, DOC, False),
    (42, DOC, False),
])
def test_task_urls_resolve_on_the_apis_origin_and_other_hosts_are_refused(advertised, expected, refused):
    client = AsyncShark(api_key=KEY, base_url=API, quiet=True)
    url, why = client._task_url(advertised, DOC)
    assert url == expected
    assert (why is not None) == refused
    assert httpx.URL(url).host == "127.0.0.1" and httpx.URL(url).port == 8765  # the key only ever goes here


def test_a_public_api_resolves_paths_only_on_its_own_host():
    client = AsyncShark(api_key=KEY, base_url="https://shark.ai/api/v1", quiet=True)
    assert client._task_url("http://shark.ai:8080/api/v1/x?a=1", "F") == ("https://shark.ai/api/v1/x?a=1", None)
    assert client._task_url("HTTPS://SHARK.AI./api/v1/x", "F") == ("https://shark.ai/api/v1/x", None)
    assert client._task_url("http://localhost/api/v1/x", "F")[0] == "F"      # not this machine's API
    assert client._task_url("https://shark.ai.evil.example/x", "F")[0] == "F"
    # a hostile task id cannot climb out of the documented path
    poll, cancel, _ = client._task_urls("../../admin?x=1")
    assert poll == "https://shark.ai/api/v1/images/generations/..%2F..%2Fadmin%3Fx%3D1"
    assert cancel == poll + "/cancel"


@pytest.mark.parametrize("mode", ["absolute", "relative"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_task_mode_against_the_simulator_server_in_both_url_modes_and_host_names(ledger, mode, host):
    with serve_in_thread(Simulator(latency=0.3, task_pending=0.05, task_urls=mode)) as srv:
        base = f"http://{host}:{srv.port}/api/v1"
        advertised = httpx.post(base + "/images/generations", json={"model": "openai/gpt-image-2", "prompt": "p",
                                                                    "async": True}).json()["polling_url"]
        if mode == "relative":
            assert advertised.startswith("/api/v1/images/generations/task_")
        else:  # built from the Host the client used, so it works under either name
            assert advertised.startswith(f"http://{host}:{srv.port}/api/v1/images/generations/task_")
        with Shark(api_key=KEY, base_url=base, ledger=ledger, poll_interval=0.05) as client:
            result = client.generate("a lighthouse", wait="task", **LOW)
            assert len(result.images) == 1 and result.task_id
            assert client.cancel(result.task_id) == "refused"  # completed: 409 — but the URL worked
        assert srv.sim.requests["poll"] >= 1 and srv.sim.requests["cancel"] == 1
        (charge,) = [c for c in srv.sim.charges if c["task_id"] == result.task_id]
        assert ledger.records[-1]["outcome"] == "ok" and ledger.records[-1]["credit"] == charge["credit"]


def test_a_cancel_reaches_the_simulator_through_a_relative_cancel_url(ledger):
    with serve_in_thread(Simulator(latency=30, task_pending=0, task_urls="relative")) as srv:
        async def run():
            import asyncio
            async with AsyncShark(api_key=KEY, base_url=f"http://localhost:{srv.port}/api/v1", ledger=ledger,
                                  poll_interval=0.02) as client:
                job = asyncio.ensure_future(client.generate("stop me", wait="task", **LOW))
                while srv.sim.requests["poll"] < 2:
                    await asyncio.sleep(0.01)
                job.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await job

        import asyncio
        asyncio.run(run())
        assert srv.sim.requests["cancel"] == 1
        assert ledger.records[-1]["outcome"] == "cancelled"


def test_the_cli_offers_relative_task_urls():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "shark_nb.simulator", "--port", "0", "--latency", "0",
                             "--relative-task-urls", "--allow-anonymous"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        base = re.search(r"(http://127\.0\.0\.1:\d+/api/v1)", proc.stdout.readline())[1]
        task = httpx.post(base + "/images/generations", json={"model": "openai/gpt-image-2", "prompt": "p",
                                                              "async": True}).json()
        assert task["polling_url"] == "/api/v1/images/generations/" + task["id"]
        assert task["cancel_url"] == task["polling_url"] + "/cancel"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert build_parser().parse_args([]).relative_task_urls is False


# ------------------------------------------------------------------- 7. failing polls

FAILURES = {
    "500": Step(500, {"error": {"message": "boom", "type": "api_error"}}),
    "502 Retry-After": Step(502, {"error": {"message": "upstream", "type": "provider_error"}}, {"Retry-After": "7"}),
    "503 Retry-After": Step(503, b"<html>busy</html>", {"Retry-After": "20", "Content-Type": "text/html"}),
    "504": Step(504, {"error": {"message": "slow", "type": "timeout_error"}}),
    "429": Step(429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, {"Retry-After": "3"}),
    "reset": Step(action="rst"),
    "cut": Step(200, {"id": "task_1", "status": "running"}, action="cut"),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_polls_failing_many_times_keep_polling_the_paid_task_until_it_completes(scripted, ledger, name):
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer(timeout=1800)))
    # 12 failed polls in a row (each is itself 1 + max_retries attempts), then the task completes
    srv.script("GET", GEN + "/task_1", *[FAILURES[name]] * (12 * 3), Step(200, b"not json"), running(),
               completed(srv))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    ft = use_fake_time(client)
    result = client.generate("stubborn", wait="task", **LOW)
    assert len(result.images) == 1
    assert len(srv.requests("GET", GEN)) == 12 * 3 + 3
    waits = [w for w in ft.sleeps if w >= config.DEFAULT_POLL_INTERVAL]
    assert max(ft.sleeps) <= config.MAX_POLL_BACKOFF                       # back-off, capped
    assert max(waits) == config.MAX_POLL_BACKOFF                           # ... and it did back off
    if "Retry-After" in FAILURES[name].headers:
        assert float(FAILURES[name].headers["Retry-After"]) in ft.sleeps   # honoured
    assert sum(ft.sleeps) < 1800
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.with_credit == 1 and ledger.records[-1]["outcome"] == "ok"
    client.close()


def test_polls_failing_until_the_deadline_cancel_the_task_and_say_where_it_is(scripted, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer(timeout=60)))
    srv.script("GET", GEN + "/task_1", Step(503, b"<html>busy</html>", {"Retry-After": "120"}))
    srv.script("POST", GEN + "/task_1/cancel", Step(503, b""))     # the cancel cannot be confirmed either
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    ft = use_fake_time(client)
    with pytest.raises(APITimeoutError) as info:
        client.generate("never", wait="task", **LOW)
    msg = str(info.value)
    assert "task_1 could not be polled before the deadline" in msg and "pending" in msg and "reconcile" in msg
    assert "pay for it twice" in msg
    no_resend_advice(msg)
    assert 60 + config.TASK_DEADLINE_MARGIN < ft.now - 10_000 <= 60 + config.TASK_DEADLINE_MARGIN + 2 * 60
    assert len(srv.requests("POST", GEN + "/task_1/cancel")) == 1 + config.DEFAULT_MAX_RETRIES
    rec = ledger.records[-1]
    assert rec["outcome"] == "pending" and rec["task_id"] == "task_1" and rec["polling_url"]
    client.close()


@pytest.mark.parametrize("status, cls", [(401, AuthenticationError), (403, AuthenticationError),
                                         (400, APIError), (307, APIConnectionError)])
def test_a_poll_answer_that_polling_cannot_cure_stops_with_the_task_in_the_ledger(scripted, ledger, status, cls):
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer()))
    srv.script("GET", GEN + "/task_1", running(),
               Step(status, {"error": {"message": "no", "type": "auth_error" if status in (401, 403) else
                                        "invalid_request_error"}}, {"Location": "http://evil.example/x"}))
    srv.script("POST", GEN + "/task_1/cancel", Step(status if status != 307 else 409, {"error": {"message": "no"}}))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    use_fake_time(client)
    with pytest.raises(cls) as info:
        client.generate("key revoked mid-task", wait="task", **LOW)
    msg = str(info.value)
    assert "task_1" in msg and "pending" in msg and "reconcile" in msg
    no_resend_advice(msg)
    assert len(srv.requests("GET", GEN)) == 2                        # not hammered
    assert len(srv.requests("POST", GEN + "/task_1/cancel")) == 1    # a cancel was tried
    assert ledger.records[-1]["outcome"] == "pending" and ledger.records[-1]["task_id"] == "task_1"
    client.close()


def test_a_404_on_the_poll_tries_the_documented_url_then_gives_up_after_a_few(scripted, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer(polling_url="/api/v1/videos/task_1")))
    gone = Step(404, {"error": {"message": "task not found", "type": "invalid_request_error"}})
    srv.script("GET", "/api/v1/videos/task_1", gone)
    srv.script("GET", GEN + "/task_1", gone)
    srv.script("POST", GEN + "/task_1/cancel", Step(200, {"id": "task_1", "status": "cancelled"}))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    use_fake_time(client)
    with pytest.raises(APIError) as info:
        client.generate("lost", wait="task", **LOW)
    assert info.value.type == "task_not_found" and "does not know task task_1" in str(info.value)
    assert "cancelled at the gateway" in str(info.value)
    no_resend_advice(str(info.value))
    assert len(srv.requests("GET", "/api/v1/videos/")) == 1
    assert len(srv.requests("GET", GEN + "/task_1")) == config.POLL_NOT_FOUND_LIMIT
    assert ledger.records[-1]["outcome"] == "cancelled"
    client.close()


def test_a_404_then_the_task_is_found_is_delivered(scripted, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer()))
    srv.script("GET", GEN + "/task_1", Step(404, {"error": {"message": "not yet", "type": "x"}}), running(),
               completed(srv))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    use_fake_time(client)
    assert len(client.generate("eventually", wait="task", **LOW).images) == 1
    assert assert_ledger_matches(ledger, srv.charges).with_credit == 1
    client.close()


# ------------------------------------------------------------------- 12. trickling servers

def test_a_trickling_post_is_bounded_by_the_timeout_and_not_retried(scripted, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(credit=272.0), delay=0.2, action="trickle", charge=272.0))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger, timeout=0.8)
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError, match="may have been charged") as info:
        client.generate("slowly", **LOW)
    assert time.monotonic() - t0 < 2.5                    # the body needs 4 s: the deadline cut it
    assert info.value.may_be_charged and len(srv.requests("POST")) == 1
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.covered_unknown == 1 and ledger.records[-1]["outcome"] == "unknown"
    client.close()


def test_a_trickling_poll_is_cut_at_the_poll_deadline_and_polling_goes_on(scripted, ledger, monkeypatch):
    monkeypatch.setattr(config, "POLL_TIMEOUT", 0.5)
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer()))
    srv.script("GET", GEN + "/task_1", *[Step(200, {"id": "task_1", "status": "running", "pad": "x" * 400},
                                              delay=0.1, action="trickle")] * 4, completed(srv))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    use_fake_time(client)
    t0 = time.monotonic()
    assert len(client.generate("drip", wait="task", **LOW).images) == 1
    assert time.monotonic() - t0 < 4 * 0.5 + 2
    assert assert_ledger_matches(ledger, srv.charges).with_credit == 1
    client.close()


def test_a_trickling_cancel_is_bounded(scripted, ledger, monkeypatch):
    monkeypatch.setattr(config, "CANCEL_TIMEOUT", 0.6)
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer(timeout=30)))
    srv.script("GET", GEN + "/task_1", running())
    srv.script("POST", GEN + "/task_1/cancel", Step(200, {"id": "task_1", "status": "cancelled", "pad": "x" * 400},
                                                     delay=0.1, action="trickle"))
    client = Shark(api_key=KEY, base_url=srv.base_url, ledger=ledger)
    use_fake_time(client)
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError, match="did not confirm a cancel"):
        client.generate("too long", wait="task", **LOW)
    assert time.monotonic() - t0 < 0.6 + 1.5
    assert ledger.records[-1]["outcome"] == "pending"
    with pytest.raises(APITimeoutError):                  # the public cancel is bounded the same way
        client.cancel("task_1")
    assert time.monotonic() - t0 < 2 * (0.6 * 3) + 2
    client.close()


# ------------------------------------------------------------------- 5. Ctrl-C in a plain script

SCRIPT = textwrap.dedent("""
    import sys
    from shark_nb import Ledger, Shark
    client = Shark(api_key="sk-ctrl-c-test", base_url=sys.argv[1], ledger=Ledger(sys.argv[2]), poll_interval=0.05)
    print("started", flush=True)
    client.generate("a slow lighthouse", wait="task", quality="low", size="1024x1024")
    print("finished", flush=True)
""")


def _run_child(tmp_path, base_url, how):
    ledger_path = tmp_path / "child.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), SHARK_NB_HOME=str(tmp_path / "home"))
    env.pop("SHARK_API_KEY", None)
    if how == "script":
        script = tmp_path / "child.py"
        script.write_text(SCRIPT)
        argv = [sys.executable, str(script), base_url, str(ledger_path)]
    else:
        argv = [sys.executable, "-c", SCRIPT, base_url, str(ledger_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    return proc, ledger_path


def _interrupt(proc, when, *, second_after=None):
    try:
        wait_until(when, timeout=20)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        if second_after is not None:
            time.sleep(second_after)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=config.CANCEL_TIMEOUT + 10)
        return time.monotonic() - t0, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("how", ["script", "python -c"])
def test_ctrl_c_while_polling_in_a_plain_script_cancels_the_task_before_exiting(tmp_path, how):
    with serve_in_thread(Simulator(latency=60, task_pending=0)) as srv:
        proc, path = _run_child(tmp_path, srv.base_url, how)
        took, out, err = _interrupt(proc, lambda: srv.sim.requests["poll"] >= 2)
        assert proc.returncode != 0 and "KeyboardInterrupt" in err and "finished" not in out
        assert took < 5
        assert srv.sim.requests["cancel"] == 1
        (task_id,) = [t for t in srv.sim._tasks]
        assert srv.sim.task(task_id)["status"] == "cancelled" and srv.sim.charges == []
        rec = Ledger.load(path).records[-1]
        assert rec["outcome"] == "cancelled" and rec["task_id"] == task_id


def test_a_second_ctrl_c_during_the_cancel_does_not_cut_it_short(tmp_path):
    with serve_in_thread(Simulator(latency=60, task_pending=0)) as srv:
        srv.sim.inject("cancel", "stall", delay=1.5)  # the gateway takes 1.5 s to confirm the cancel
        proc, path = _run_child(tmp_path, srv.base_url, "script")
        took, out, err = _interrupt(proc, lambda: srv.sim.requests["poll"] >= 2, second_after=0.4)
        assert "finishing the cancel" in err
        assert 1.5 <= took < config.CANCEL_TIMEOUT + 3
        assert srv.sim.requests["cancel"] == 1 and srv.sim.charges == []
        assert Ledger.load(path).records[-1]["outcome"] == "cancelled"


def test_ctrl_c_during_the_post_records_the_call_as_unknown(tmp_path):
    with serve_in_thread(Simulator(latency=60, task_pending=0)) as srv:
        srv.sim.inject("post", "stall", delay=20)  # the gateway took the task but has not answered yet
        proc, path = _run_child(tmp_path, srv.base_url, "script")
        took, out, err = _interrupt(proc, lambda: srv.sim.requests["post"] >= 1)
        assert took < 5 and "KeyboardInterrupt" in err
        rec = Ledger.load(path).records[-1]
        assert rec["outcome"] == "unknown" and "interrupted" in rec["error"]  # at its estimate, not lost


def test_ctrl_c_during_the_download_keeps_the_charge(tmp_path):
    with serve_in_thread(Simulator(latency=0.3, task_pending=0)) as srv:
        srv.sim.inject("download", "stall", delay=20)
        proc, path = _run_child(tmp_path, srv.base_url, "script")
        took, out, err = _interrupt(proc, lambda: srv.sim.requests["download"] >= 1)
        assert took < 5 and "KeyboardInterrupt" in err
        (charge,) = srv.sim.charges
        rec = Ledger.load(path).records[-1]
        assert rec["outcome"] == "ok" and rec["credit"] == charge["credit"] and rec["task_id"]
