"""Fault injection against real loopback servers: the simulator server and scripted servers.

For every fault, three things are checked:

* the user gets either the images or ONE clear typed error (class + message fragment);
* retries never exceed the policy (the server's own request counts);
* the ledger holds exactly the calls the server charged (``fault_servers.assert_ledger_matches``:
  every charged tracing id is in the ledger with its credit, or with credit null and outcome
  unknown/pending; no ledger record claims a credit the server did not charge; no duplicates),
  and no request to the file host (or to any other host) carried the key.

Then "the kernel stays usable": the same sync ``Shark`` client makes a normal call that succeeds.

No test depends on timing luck: the client's waits go through a fake clock (``FakeTime``), the
simulator's clock is a ``ManualClock`` (tasks advance only when told), and the only real waits
are read timeouts (1 s) against stalls of 5 s.

``SHARK_NB_REPORT=path.json`` writes the table of faults and observations (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import httpx
import pytest

from fault_servers import (
    KEY,
    PNG,
    ScriptedServer,
    Step,
    StepClock,
    assert_ledger_matches,
    recorder,
    use_fake_time,
)
from shark_nb import (
    APIConnectionError,
    APITimeoutError,
    AsyncShark,
    DownloadError,
    GatewayTimeoutError,
    Ledger,
    ProviderError,
    RateLimitError,
    Shark,
    TaskCancelledError,
    TaskFailedError,
)
from shark_nb import config, retry
from shark_nb.simulator import ManualClock, Simulator, serve_in_thread

GEN = "/api/v1/images/generations"
LOW = dict(quality="low", size="1024x1024", output_format="jpeg")
STALL = 5.0      # seconds a stalled answer waits: well past the 1 s timeouts below
SHORT = 1.0      # the client's read timeout in the stall tests

ROWS: list[dict] = []


def row(fault: str, where: str, expected: str, observed: str, requests: str, cmp) -> None:
    ROWS.append({"fault": fault, "where": where, "expected": expected, "observed": observed,
                 "requests": requests, "ledger": cmp.summary() if cmp is not None else ""})


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("SHARK_NB_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(ROWS, fh, indent=1)


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture
def start_sim():
    """start_sim(**config) -> a running simulator server (closed at teardown)."""
    handles = []

    def start(**cfg):
        cfg.setdefault("latency", 0.02)
        cfg.setdefault("clock", ManualClock())
        handle = serve_in_thread(Simulator(**cfg))
        handles.append(handle)
        return handle

    yield start
    for h in handles:
        h.close()


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def make_client(ledger):
    """make_client(base_url, fake=True, sim_clock=None, **kw) -> a sync Shark with fake waits."""
    clients = []

    def make(base_url, *, fake=True, sim_clock=None, **kw):
        client = Shark(api_key=KEY, base_url=base_url, ledger=ledger, **kw)
        client.fake_time = use_fake_time(client, sim_clock) if fake else None
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def scripted():
    servers = []

    def start(default=None):
        srv = ScriptedServer(default)
        servers.append(srv)
        srv.script("GET", "/files/*", Step(200, PNG, {"Content-Type": "image/png"}))
        return srv

    yield start
    for s in servers:
        s.close()


def posts_for(sim, tracing_id) -> int:
    return sum(1 for e in sim.log if e["route"] == "post" and e.get("tracing_id") == tracing_id)


def check(sim, ledger):
    """Ledger vs the simulator's own tally; no key ever sent to the file host."""
    cmp = assert_ledger_matches(ledger, sim.charges)
    assert sim.auth_leaks == 0
    return cmp


def assert_usable(client, *, scripted=False, sim=None):
    """The kernel stays usable: the same client makes a normal call that succeeds. (``sim``: a
    simulator whose latency a task test raised, set back to a quick sync answer first.)"""
    if sim is not None:
        sim.config.latency = 0.02
    result = client.generate("kernel still usable", **LOW)
    assert len(result.images) == 1
    assert result.images[0].size == ((48, 32) if scripted else (1024, 1024))
    return result


def normal(srv, credit=108.85) -> Step:
    return Step(200, srv.image_answer(credit=credit), charge=credit)


# ------------------------------------------------------------------------------- rate limits

@pytest.mark.parametrize("fmt, retry_after, low, high", [
    ("seconds", 7, 7.0, 7.1),
    ("http-date", 20, 18.0, 20.1),      # an HTTP date has 1 s resolution
    ("seconds", 3600, 60.0, 60.1),      # capped at config.MAX_RETRY_AFTER
])
def test_429_retry_after_is_honoured(start_sim, make_client, ledger, fmt, retry_after, low, high):
    srv = start_sim(retry_after_format=fmt)
    srv.sim.inject("post", "status", status=429, type="rate_limit_error", retry_after=retry_after)
    client = make_client(srv.base_url)
    result = client.generate("rate limited once", **LOW)
    waited = sum(client.fake_time.sleeps)
    assert low <= waited <= high
    assert posts_for(srv.sim, result.tracing_id) == 2
    cmp = check(srv.sim, ledger)
    row(f"429, Retry-After {retry_after} ({fmt})", "POST", "wait as told (capped at 60 s), retry once",
        f"images; waited {waited:.1f} s", "2 POSTs, same tracing id", cmp)
    assert_usable(client)


def test_429_beyond_the_retry_budget_is_one_rate_limit_error(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("post", "status", count=3, status=429, type="rate_limit_error", retry_after=1)
    client = make_client(srv.base_url)
    with pytest.raises(RateLimitError, match="wait a moment") as info:
        client.generate("always limited", **LOW)
    assert posts_for(srv.sim, info.value.tracing_id) == 1 + config.DEFAULT_MAX_RETRIES
    assert srv.sim.charges == []
    assert ledger.records[-1]["outcome"] == "rate_limit_error" and ledger.records[-1]["credit"] is None
    cmp = check(srv.sim, ledger)
    row("429 x3", "POST", "RateLimitError after 1 + max_retries", "RateLimitError", "3 POSTs", cmp)
    assert_usable(client)


def test_batch_under_a_real_rate_limit_with_http_date_retry_after(start_sim, make_client, ledger):
    # Real time here: the server's sliding window must actually pass.
    srv = start_sim(clock=time.monotonic, retry_after_format="http-date")
    srv.sim.rate_limit = (3, 0.5)
    client = make_client(srv.base_url, fake=False)
    results = client.generate_many([f"tile {i}" for i in range(6)], concurrency=6, **LOW)
    assert not [r for r in results if isinstance(r, Exception)]
    per_call = [posts_for(srv.sim, r.tracing_id) for r in results]
    assert sum(per_call) > 6 and max(per_call) <= 1 + config.BATCH_RATE_LIMIT_RETRIES
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 6
    row("rate limit 3 per 0.5 s, Retry-After as HTTP date", "POST (batch of 6, concurrency 6)",
        "shared back-off, zero failures", "6 images", f"{sum(per_call)} POSTs (max {max(per_call)} per call)", cmp)


# ------------------------------------------------------------------------------ 5xx bursts

BURSTS = [
    ("status", {"status": 502, "type": "provider_error"}, ProviderError, "simulated 502"),
    ("status", {"status": 504, "type": "timeout_error"}, GatewayTimeoutError, "simulated 504"),
    ("html", {"status": 502}, ProviderError, "Bad Gateway"),
    ("empty", {"status": 503}, ProviderError, "empty body"),
]


@pytest.mark.parametrize("kind, opts, cls, fragment", BURSTS)
def test_5xx_burst_within_the_retry_budget_is_survived(start_sim, make_client, ledger, kind, opts, cls, fragment):
    srv = start_sim()
    srv.sim.inject("post", kind, count=config.DEFAULT_MAX_RETRIES, **opts)
    client = make_client(srv.base_url)
    result = client.generate("burst", **LOW)
    assert posts_for(srv.sim, result.tracing_id) == 1 + config.DEFAULT_MAX_RETRIES
    assert len(client.fake_time.sleeps) == config.DEFAULT_MAX_RETRIES  # a back-off before each retry
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1 and ledger.calls == 1
    row(f"{opts['status']} {kind} x2", "POST", "retried with the same tracing id", "images", "3 POSTs", cmp)
    assert_usable(client)


@pytest.mark.parametrize("kind, opts, cls, fragment", BURSTS)
def test_5xx_burst_beyond_the_retry_budget_is_one_typed_error(start_sim, make_client, ledger, kind, opts, cls,
                                                               fragment):
    srv = start_sim()
    srv.sim.inject("post", kind, count=1 + config.DEFAULT_MAX_RETRIES, **opts)
    client = make_client(srv.base_url)
    with pytest.raises(cls, match=fragment) as info:
        client.generate("burst", **LOW)
    assert info.value.status == opts["status"]
    assert posts_for(srv.sim, info.value.tracing_id) == 1 + config.DEFAULT_MAX_RETRIES
    assert srv.sim.charges == [] and ledger.records[-1]["credit"] is None
    cmp = check(srv.sim, ledger)
    row(f"{opts['status']} {kind} x3", "POST", f"{cls.__name__} after 3 attempts", cls.__name__, "3 POSTs", cmp)
    assert_usable(client)


def test_5xx_on_a_poll_and_on_a_download_are_retried(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3)
    srv.sim.inject("poll", "html", status=502)
    srv.sim.inject("download", "status", status=503)
    client = make_client(srv.base_url, sim_clock=clock)
    result = client.generate("task with hiccups", wait="task", **LOW)
    assert len(result.images) == 1
    assert srv.sim.requests["download"] == 2
    cmp = check(srv.sim, ledger)
    row("502 HTML page on a poll + 503 on a download", "GET poll / GET file", "retried", "images",
        f"{srv.sim.requests['poll']} polls, 2 downloads", cmp)
    assert_usable(client, sim=srv.sim)


# ------------------------------------------------------------------------ connection resets

def test_reset_mid_answer_on_the_post_is_not_retried_and_recorded_unknown(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("post", "reset")
    client = make_client(srv.base_url)
    with pytest.raises(APIConnectionError, match="may have been charged") as info:
        client.generate("reset", **LOW)
    assert info.value.may_be_charged
    assert posts_for(srv.sim, info.value.tracing_id) == 1
    assert [c["tracing_id"] for c in srv.sim.charges] == [info.value.tracing_id]  # the server did charge
    cmp = check(srv.sim, ledger)
    assert cmp.covered_unknown == 1 and ledger.records[-1]["outcome"] == "unknown"
    row("connection reset mid-body (simulator)", "POST", "not retried; ledger 'unknown'", "APIConnectionError",
        "1 POST", cmp)
    assert_usable(client)


@pytest.mark.parametrize("action, exc_name", [("rst", "ReadError"), ("rst_mid", "ReadError"),
                                               ("cut", "RemoteProtocolError")])
def test_tcp_reset_or_cut_on_the_post_of_a_scripted_gateway(scripted, make_client, ledger, action, exc_name):
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(credit=272.0), action=action, charge=272.0),
               normal(srv))
    client = make_client(srv.base_url)
    with pytest.raises(APIConnectionError, match=exc_name) as info:
        client.generate("reset", **LOW)
    assert info.value.may_be_charged
    assert len(srv.requests("POST")) == 1
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.covered_unknown == 1
    row(f"TCP {'RST' if action.startswith('rst') else 'FIN'} "
        f"{'before the answer' if action == 'rst' else 'mid-body'}", "POST", "not retried; ledger 'unknown'",
        f"APIConnectionError ({exc_name})", "1 POST", cmp)
    assert_usable(client, scripted=True)
    assert not any(s.carries_key() for s in srv.requests("GET", "/files/"))


def test_reset_on_a_poll_is_retried(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3)
    srv.sim.inject("poll", "reset")
    client = make_client(srv.base_url, sim_clock=clock)
    result = client.generate("task", wait="task", **LOW)
    assert len(result.images) == 1
    polls = srv.sim.requests["poll"]
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row("connection reset mid-body", "GET poll", "retried (idempotent)", "images", f"{polls} polls", cmp)
    assert_usable(client, sim=srv.sim)


@pytest.mark.parametrize("count", [1, 3])
def test_reset_on_a_download(start_sim, make_client, ledger, count):
    srv = start_sim()
    srv.sim.inject("download", "reset", count=count)
    client = make_client(srv.base_url)
    if count <= config.DEFAULT_MAX_RETRIES:
        assert len(client.generate("reset download", **LOW).images) == 1
        observed = "images"
    else:
        with pytest.raises(DownloadError, match="RemoteProtocolError.*charged"):
            client.generate("reset download", **LOW)
        observed = "DownloadError"
    assert srv.sim.requests["download"] == min(count, config.DEFAULT_MAX_RETRIES) + 1
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1  # charged and recorded with its credit, images or not
    row(f"connection reset mid-body x{count}", "GET file", "retried; DownloadError past the budget, credit kept",
        observed, f"{srv.sim.requests['download']} downloads", cmp)
    assert_usable(client)


def test_tcp_reset_on_a_download_of_a_scripted_gateway(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, normal(srv))
    srv.script("GET", "/files/*", Step(action="rst"), Step(200, PNG, {"Content-Type": "image/png"}), replace=True)
    client = make_client(srv.base_url)
    assert len(client.generate("x", **LOW).images) == 1
    assert len(srv.requests("GET", "/files/")) == 2
    cmp = assert_ledger_matches(ledger, srv.charges)
    row("TCP RST before the answer", "GET file", "retried", "images", "2 downloads", cmp)


def test_an_undecodable_download_is_retried(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, normal(srv))
    srv.script("GET", "/files/*", Step(200, PNG, {"Content-Encoding": "gzip"}),  # a proxy mislabelling it
               Step(200, PNG, {"Content-Type": "image/png"}), replace=True)
    client = make_client(srv.base_url)
    assert len(client.generate("x", **LOW).images) == 1
    assert len(srv.requests("GET", "/files/")) == 2
    cmp = assert_ledger_matches(ledger, srv.charges)
    row("gzip Content-Encoding on a plain body", "GET file", "retried", "images", "2 downloads", cmp)


def test_the_retry_policy_covers_decoding_errors_and_not_redirect_loops():
    req = httpx.Request("POST", "http://127.0.0.1/api/v1/images/generations")
    decoding, loop = httpx.DecodingError("bad gzip", request=req), httpx.TooManyRedirects("loop", request=req)
    assert retry.may_have_been_charged(decoding)           # the POST was answered: it may be billed
    assert not retry.should_retry_exception(decoding, idempotent=False, attempt=0, max_retries=2)
    assert retry.should_retry_exception(decoding, idempotent=True, attempt=0, max_retries=2)
    assert not retry.should_retry_exception(loop, idempotent=True, attempt=0, max_retries=2)


# -------------------------------------------------------------------------------------- stalls

def test_a_stalled_post_times_out_is_not_retried_and_the_charge_is_unknown(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("post", "stall", delay=STALL)
    client = make_client(srv.base_url, timeout=SHORT)
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError, match="may have been charged") as info:
        client.generate("stall", **LOW)
    elapsed = time.monotonic() - t0
    assert elapsed < STALL  # the client gave up at its timeout, not when the server answered
    assert posts_for(srv.sim, info.value.tracing_id) == 1
    assert [c["tracing_id"] for c in srv.sim.charges] == [info.value.tracing_id]  # the server DID charge
    cmp = check(srv.sim, ledger)
    rec = [r for r in ledger.records if r["tracing_id"] == info.value.tracing_id][0]
    assert rec["outcome"] == "unknown" and rec["credit"] is None and ledger.unknown_cost_calls == 1
    row(f"stall {STALL:g} s (client timeout {SHORT:g} s)", "POST", "APITimeoutError, not retried, ledger 'unknown'",
        f"APITimeoutError after {elapsed:.1f} s", "1 POST", cmp)
    assert_usable(client)


def test_a_stalled_poll_is_retried(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3)
    srv.sim.inject("poll", "stall", delay=STALL)
    client = make_client(srv.base_url, sim_clock=clock, timeout=SHORT)
    result = client.generate("task", wait="task", **LOW)
    assert len(result.images) == 1
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row(f"stall {STALL:g} s", "GET poll", "read timeout, retried", "images", f"{srv.sim.requests['poll']} polls", cmp)
    assert_usable(client, sim=srv.sim)


@pytest.mark.parametrize("count", [1, 3])
def test_a_stalled_download(start_sim, make_client, ledger, monkeypatch, count):
    srv = start_sim()
    warm = make_client(srv.base_url)
    assert_usable(warm)  # renders (and caches) the image, so only the stall can make a download slow
    monkeypatch.setattr(config, "DOWNLOAD_TIMEOUT", SHORT)  # read when the next client opens its downloads
    srv.sim.inject("download", "stall", count=count, delay=STALL)
    client = make_client(srv.base_url)
    before = srv.sim.requests["download"]
    if count <= config.DEFAULT_MAX_RETRIES:
        assert len(assert_usable(client).images) == 1
        observed = "images"
    else:
        with pytest.raises(DownloadError, match="ReadTimeout.*charged"):
            assert_usable(client)
        observed = "DownloadError"
    downloads = srv.sim.requests["download"] - before
    assert downloads == min(count, config.DEFAULT_MAX_RETRIES) + 1
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 2  # both calls charged, both with their credit
    row(f"stall {STALL:g} s x{count} (download timeout {SHORT:g} s)", "GET file",
        "retried; DownloadError past the budget, credit kept", observed, f"{downloads} downloads", cmp)
    assert_usable(client)


def test_a_trickling_download_hits_the_whole_download_deadline(scripted, make_client, ledger, monkeypatch):
    # Every read is quick (a chunk each 0.1 s), so only a deadline on the whole transfer stops it.
    monkeypatch.setattr(config, "DOWNLOAD_TIMEOUT", 0.5)
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(credit=272.0), charge=272.0))
    srv.script("GET", "/files/*", *[Step(200, PNG, {"Content-Type": "image/png"}, delay=0.1, action="trickle")] * 3,
               replace=True)
    client = make_client(srv.base_url)
    with pytest.raises(DownloadError, match="ReadTimeout.*charged"):
        client.generate("slow store", **LOW)
    assert len(srv.requests("GET", "/files/")) == 1 + config.DEFAULT_MAX_RETRIES
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.with_credit == 1
    row("download trickling a chunk every 0.1 s (deadline 0.5 s)", "GET file",
        "retried; DownloadError past the budget, credit kept", "DownloadError",
        f"{len(srv.requests('GET', '/files/'))} downloads", cmp)


# --------------------------------------------------------------------------- malformed answers

def test_truncated_json_in_a_200_is_unknown(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("post", "truncated_json")
    client = make_client(srv.base_url)
    with pytest.raises(APIConnectionError, match="not valid JSON") as info:
        client.generate("cut", **LOW)
    assert posts_for(srv.sim, info.value.tracing_id) == 1 and len(srv.sim.charges) == 1
    cmp = check(srv.sim, ledger)
    assert cmp.covered_unknown == 1
    row("truncated JSON in a 200 (simulator)", "POST", "APIConnectionError, ledger 'unknown'", "APIConnectionError",
        "1 POST", cmp)
    assert_usable(client)


MALFORMED = [
    ("JSON null", Step(200, b"null", {"Content-Type": "application/json"}, charge=272.0), "not valid JSON"),
    ("JSON list", Step(200, b"[1, 2]", {"Content-Type": "application/json"}, charge=272.0), "not valid JSON"),
    ("broken JSON", Step(200, b'{"created": 1, "data": [{"url": ', {"Content-Type": "application/json"},
                         charge=272.0), "not valid JSON"),
    ("HTML page with 200 (captive portal)", Step(200, "<html><body>Please log in</body></html>",
                                                 {"Content-Type": "text/html"}), "not valid JSON"),
    ("gzip header on a plain body", Step(200, b'{"created": 1}', {"Content-Encoding": "gzip",
                                                                  "Content-Type": "application/json"},
                                         charge=272.0), "undecodable answer"),
    ("200 with data: {}", Step(200, {"created": 1, "data": {}, "credit": 272.0}, charge=272.0), "no images"),
]


@pytest.mark.parametrize("name, step, fragment", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_200_answers_are_one_typed_error_and_never_lose_the_charge(scripted, make_client, ledger, name,
                                                                             step, fragment):
    srv = scripted()
    srv.script("POST", GEN, step, normal(srv))
    client = make_client(srv.base_url)
    with pytest.raises(APIConnectionError, match=fragment):
        client.generate("x", **LOW)
    assert len(srv.requests("POST")) == 1
    cmp = assert_ledger_matches(ledger, srv.charges)
    row(name, "POST (scripted gateway)", "APIConnectionError, charge kept", "APIConnectionError", "1 POST", cmp)
    assert_usable(client, scripted=True)


def test_an_html_error_page_keeps_status_and_an_excerpt(scripted, make_client, ledger):
    srv = scripted()
    page = "<html><head><title>503 Service Temporarily Unavailable</title></head><body>cloudflare</body></html>"
    srv.script("POST", GEN, *[Step(503, page, {"Content-Type": "text/html"})] * 3, normal(srv))
    client = make_client(srv.base_url)
    with pytest.raises(ProviderError, match="non-JSON body.*503 Service") as info:
        client.generate("x", **LOW)
    assert info.value.status == 503 and "Traceback" not in str(info.value)
    assert len(srv.requests("POST")) == 3
    cmp = assert_ledger_matches(ledger, srv.charges)
    row("HTML 503 page from a proxy x3", "POST (scripted gateway)", "ProviderError with status and excerpt",
        "ProviderError", "3 POSTs", cmp)
    assert_usable(client, scripted=True)


def test_odd_task_and_poll_bodies_are_tolerated(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(202, srv.task_answer(timeout="300")))          # a number as a string
    done = dict(id="task_1", status="completed", **srv.image_answer(credit=272.0))
    srv.script("GET", GEN + "/task_1", Step(200, b"null", {"Content-Type": "application/json"}),
               Step(200, b"[]", {"Content-Type": "application/json"}),
               Step(200, b'{"status": "runn', {"Content-Type": "application/json"}),
               Step(200, done, charge=272.0))
    client = make_client(srv.base_url)
    result = client.generate("x", wait="task", **LOW)
    assert len(result.images) == 1 and result.credit == 272.0
    assert len(srv.requests("GET", GEN)) == 4
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.with_credit == 1
    row("task answer with timeout \"300\"; polls answering null, [], cut JSON", "POST 202 / GET poll",
        "still running, keep polling", "images", "4 polls", cmp)


def test_truncated_poll_is_taken_as_still_running(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3)
    srv.sim.inject("poll", "truncated_json", count=2)
    client = make_client(srv.base_url, sim_clock=clock)
    result = client.generate("task", wait="task", **LOW)
    assert len(result.images) == 1
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row("truncated JSON x2", "GET poll", "still running, keep polling", "images",
        f"{srv.sim.requests['poll']} polls", cmp)


def test_a_truncated_image_with_a_consistent_length_is_retried(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("download", "truncated_json")  # cut body, matching Content-Length
    client = make_client(srv.base_url)
    result = client.generate("cut image", **LOW)
    assert result.images[0].to_pil().size == (1024, 1024)
    assert srv.sim.requests["download"] == 2
    check(srv.sim, ledger)


def test_an_image_cut_every_time_is_a_download_error_with_the_charge_kept(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("download", "truncated_json", count=3)
    client = make_client(srv.base_url)
    with pytest.raises(DownloadError, match="truncated"):
        client.generate("cut image", **LOW)
    assert srv.sim.requests["download"] == 3
    assert check(srv.sim, ledger).with_credit == 1


# ------------------------------------------------------------------------------- no images

@pytest.mark.parametrize("route", ["post", "poll"])
def test_a_200_with_no_images_is_a_clear_error_and_keeps_the_credit(start_sim, make_client, ledger, route):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3 if route == "poll" else 0.02)
    srv.sim.inject(route, "no_images")
    client = make_client(srv.base_url, sim_clock=clock)
    with pytest.raises(APIConnectionError, match="no images"):
        client.generate("empty", wait="sync" if route == "post" else "task", **LOW)
    assert srv.sim.requests["download"] == 0
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row("200 with data: []", "POST" if route == "post" else "GET poll (completed)",
        "APIConnectionError 'no images', credit kept", "APIConnectionError", "no retry", cmp)
    assert_usable(client, sim=srv.sim)


# ------------------------------------------------------------------------------ signed URLs

def test_an_expired_signed_url_is_a_download_error_and_the_credit_stays(start_sim, make_client, ledger):
    srv = start_sim(clock=StepClock(step=5.0), url_ttl=1)  # the clock jumps 5 s per read
    client = make_client(srv.base_url)
    with pytest.raises(DownloadError, match="expired") as info:
        client.generate("expired", **LOW)
    assert info.value.status == 403
    assert srv.sim.requests["download"] == 1  # a 403 is final: not retried
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1 and "download failed" in ledger.records[-1]["error"]
    row("signed URL expired (403 XML)", "GET file", "DownloadError, not retried, credit kept", "DownloadError",
        "1 download", cmp)
    srv.sim.config.url_ttl = 1e6
    assert_usable(client)


# ------------------------------------------------ issue 8: one image's fault is only that image's

def test_one_expired_url_of_three_delivers_the_other_two_simulator(start_sim, make_client, ledger):
    srv = start_sim()
    srv.sim.inject("download", "status", status=403, message="Request has expired")  # one file, final
    client = make_client(srv.base_url)
    result = client.generate("three", n=3, **LOW)
    assert len(result.images) == 2 and len(result.missing) == 1 and result.missing[0].status == 403
    assert "2 of 3 images delivered" in str(result) and srv.sim.requests["download"] == 3
    rec = ledger.records[-1]
    assert rec["images"] == 2 and rec["images_billed"] == 3 and len(rec["urls"]) == 3
    assert rec["missing"][0]["url"] == result.missing[0].url
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row("1 of 3 signed URLs refused (403), simulator", "GET file",
        "the other 2 delivered; the 3rd in result.missing with its URL; ledger images 2 / billed 3",
        "2 images + 1 missing", "3 downloads", cmp)
    assert_usable(client)


@pytest.mark.parametrize("status, step", [
    (403, Step(403, "<Error><Code>AccessDenied</Code></Error>", {"Content-Type": "application/xml"})),
    (404, Step(404, "NoSuchKey")),
    (200, Step(200, b"<html>login</html>", {"Content-Type": "text/html"})),  # unreadable
])
def test_one_bad_file_of_three_on_a_scripted_store(scripted, make_client, ledger, status, step):
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(n=3, credit=300.0), charge=300.0))
    srv.script("GET", "/files/img1.png", step)
    client = make_client(srv.base_url)
    result = client.generate("x", n=3, **LOW)
    assert [im.index for im in result.images] == [0, 2] and [m.index for m in result.missing] == [1]
    assert result.missing[0].url == f"{srv.url}/files/img1.png?sig=abc"
    assert len(srv.requests("GET", "/files/img1.png")) == 1  # final answers are not retried
    assert not any(r.carries_key() for r in srv.requests("GET", "/files/"))
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert ledger.records[-1]["images"] == 2
    row(f"1 of 3 files answers {status}{' (not an image)' if status == 200 else ''}", "GET file (scripted)",
        "2 delivered + 1 missing with its URL and reason", "partial result", "3 downloads", cmp)
    srv.script("POST", GEN, normal(srv))
    assert_usable(client, scripted=True)


def test_every_file_refused_is_one_download_error_with_the_urls(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(n=2, credit=200.0), charge=200.0))
    srv.script("GET", "/files/*", Step(403, "expired"), replace=True)
    client = make_client(srv.base_url)
    with pytest.raises(DownloadError, match="none of the 2 images") as info:
        client.generate("x", n=2, **LOW)
    assert info.value.urls == [f"{srv.url}/files/img{i}.png?sig=abc" for i in range(2)]
    assert ledger.records[-1]["urls"] == info.value.urls and ledger.records[-1]["images"] == 0
    cmp = assert_ledger_matches(ledger, srv.charges)
    row("every signed URL refused (n=2)", "GET file (scripted)", "DownloadError with .urls and .result, credit kept",
        "DownloadError", "2 downloads", cmp)


@pytest.mark.parametrize("status, fmt, wait", [(429, "seconds", 3), (503, "http-date", 20), (502, "seconds", 1),
                                               (504, "seconds", 3600)])
def test_a_throttled_file_host_is_retried_honouring_retry_after(start_sim, make_client, ledger, status, fmt, wait):
    srv = start_sim(retry_after_format=fmt)
    srv.sim.inject("download", "status", status=status, retry_after=wait)
    client = make_client(srv.base_url)
    result = client.generate("throttled store", **LOW)
    assert result.complete and srv.sim.requests["download"] == 2
    (waited,) = client.fake_time.sleeps
    expected = min(wait, config.MAX_RETRY_AFTER)
    assert expected - 2.0 <= waited <= expected + 0.1  # an HTTP date has 1 s resolution
    cmp = check(srv.sim, ledger)
    row(f"{status} on a download, Retry-After {wait} ({fmt})", "GET file",
        "retried after the wait (capped at 60 s)", f"images; waited {waited:.1f} s", "2 downloads", cmp)


def test_relative_and_data_urls_in_the_answer(scripted, make_client, ledger):
    srv = scripted()
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    answer = {"created": 1, "credit": 50.0, "data": [
        {"url": "/files/rel.png?sig=1"}, {"url": data_url}, {"url": "data:image/png;base64,@@bad@@"},
        {"b64_json": "not base64!"}]}
    srv.script("POST", GEN, Step(200, answer, charge=50.0))
    client = make_client(srv.base_url)
    result = client.generate("x", n=4, **LOW)
    assert [im.index for im in result.images] == [0, 1] and [m.index for m in result.missing] == [2, 3]
    (rel,) = srv.requests("GET", "/files/")
    assert rel.path == "/files/rel.png?sig=1" and not rel.carries_key()  # same host as the API: still no key
    cmp = assert_ledger_matches(ledger, srv.charges)
    row("relative URL, data: URL, bad data: URL, bad b64_json (n=4)", "answer",
        "relative fetched without the key, data: decoded, bad ones missing with a reason", "2 images + 2 missing",
        "1 download", cmp)


def test_more_images_than_asked_are_delivered_and_noted(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(n=3, credit=300.0), charge=300.0))
    client = make_client(srv.base_url)
    result = client.generate("x", n=1, **LOW)
    assert len(result.images) == 3 and "sent 3 images for n=1" in str(result)
    assert "sent 3 images for n=1" in ledger.records[-1]["note"] and ledger.records[-1]["images_billed"] == 3
    cmp = assert_ledger_matches(ledger, srv.charges)
    row("3 images answered for n=1", "answer", "all delivered, noted on the result and in the ledger",
        "3 images + a note", "3 downloads", cmp)


def test_slow_signed_urls_are_survived(start_sim, make_client, ledger):
    srv = start_sim(download_latency=0.5)
    client = make_client(srv.base_url)
    t0 = time.monotonic()
    result = client.generate("slow store", n=3, **LOW)
    elapsed = time.monotonic() - t0
    assert len(result.images) == 3 and srv.sim.requests["download"] == 3
    assert elapsed >= 0.5
    cmp = check(srv.sim, ledger)
    row("slow object store (0.5 s per file), n=3", "GET file", "images",
        f"images in {elapsed:.2f} s", "3 downloads", cmp)


# ------------------------------------------------------------------------------------ tasks

@pytest.mark.parametrize("as_string", [False, True])
def test_a_failed_task_is_a_task_failed_error_and_not_charged(start_sim, make_client, ledger, as_string):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3, task_error_as_string=as_string)
    srv.sim.inject("post", "task_failed", message="upstream exploded")
    client = make_client(srv.base_url, sim_clock=clock)
    with pytest.raises(TaskFailedError, match="upstream exploded") as info:
        client.generate("fail", wait="task", **LOW)
    assert info.value.task_id and srv.sim.charges == []
    assert ledger.records[-1]["outcome"] == "task_failed"
    cmp = check(srv.sim, ledger)
    row(f"task failed (error as {'string' if as_string else 'object'})", "GET poll", "TaskFailedError",
        "TaskFailedError", f"1 POST, {srv.sim.requests['poll']} polls", cmp)
    assert_usable(client, sim=srv.sim)


def test_a_task_cancelled_elsewhere_is_a_task_cancelled_error(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=10)
    client = make_client(srv.base_url, sim_clock=clock)

    def cancel_at_the_gateway(task):  # e.g. from the provider's dashboard
        resp = srv.sim.handle("POST", task.cancel_url, {"Authorization": "Bearer other"}, b"")
        assert resp.status == 200

    with pytest.raises(TaskCancelledError):
        client.generate("cancelled", wait="task", on_task=cancel_at_the_gateway, **LOW)
    assert srv.sim.charges == [] and ledger.records[-1]["outcome"] == "cancelled"
    cmp = check(srv.sim, ledger)
    row("task cancelled at the gateway by someone else", "GET poll", "TaskCancelledError", "TaskCancelledError",
        "1 POST, 1 poll", cmp)
    assert_usable(client, sim=srv.sim)


def _cancel_the_wait(base_url, ledger, sim):
    """Start a task with the async client, cancel the awaiting coroutine, return the task."""
    async def run():
        async with AsyncShark(api_key=KEY, base_url=base_url, ledger=ledger, poll_interval=0.02) as client:
            tasks = []
            job = asyncio.ensure_future(client.generate("cancel me", wait="task", on_task=tasks.append, **LOW))
            while sim.requests["poll"] < 2:
                await asyncio.sleep(0.01)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            return tasks[0]

    return asyncio.run(run())


def test_cancelling_the_wait_cancels_at_the_gateway(start_sim, make_client, ledger):
    srv = start_sim(latency=10, task_pending=0)
    task = _cancel_the_wait(srv.base_url, ledger, srv.sim)
    assert srv.sim.task(task.id)["status"] == "cancelled" and srv.sim.requests["cancel"] == 1
    assert ledger.records[-1]["outcome"] == "cancelled"
    cmp = check(srv.sim, ledger)
    row("user cancels the wait (asyncio)", "POST cancel_url", "cancelled at the gateway, ledger 'cancelled'",
        "CancelledError", "1 cancel", cmp)
    assert_usable(make_client(srv.base_url), sim=srv.sim)


def test_cancel_refused_with_409_keeps_the_call_pending_until_reconciled(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=10, task_pending=0, cancel_running="refuse")
    task = _cancel_the_wait(srv.base_url, ledger, srv.sim)
    rec = ledger.records[-1]
    assert rec["outcome"] == "pending" and rec["task_id"] == task.id and "may still be charged" in rec["error"]
    client = make_client(srv.base_url)
    assert client.cancel(task.id) == "refused"                 # the sync client says so too
    clock.advance(11)                                           # ... and the task completes and is charged
    assert len(srv.sim.charges) == 1
    cmp = check(srv.sim, ledger)
    assert cmp.covered_unknown == 1                             # covered as pending until reconciled
    assert len(client.reconcile()) == 1
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1 and ledger.unknown_cost_calls == 0
    row("cancel refused (409) on a running task", "POST cancel_url", "ledger 'pending'; reconcile() books the credit",
        "CancelledError, then 'refused'", f"{srv.sim.requests['cancel']} cancels", cmp)
    assert_usable(client, sim=srv.sim)


def test_a_task_pending_past_the_deadline(start_sim, make_client, ledger, monkeypatch):
    monkeypatch.setattr(config, "TASK_DEADLINE_MARGIN", 4.0)
    srv = start_sim(latency=20, status_spelling={"pending": "queued"})  # the sim clock is frozen: stays queued
    client = make_client(srv.base_url)
    with pytest.raises(APITimeoutError, match="'queued' after the deadline.*cancelled at the gateway"):
        client.generate("forever", wait="task", task_timeout=30, **LOW)
    polls = srv.sim.requests["poll"]
    assert polls <= (30 + 4) / 2 + 2
    assert sum(client.fake_time.sleeps) <= 30 + 4 + 2 + 0.01
    assert srv.sim.requests["cancel"] == 1
    assert ledger.records[-1]["outcome"] == "cancelled" and ledger.unknown_cost_calls == 0
    cmp = check(srv.sim, ledger)
    assert cmp.charged == 0
    row("task stays 'queued' past timeout + margin", "GET poll", "APITimeoutError, cancel sent, ledger 'cancelled'",
        "APITimeoutError", f"{polls} polls, 1 cancel", cmp)
    assert_usable(client, sim=srv.sim)


@pytest.mark.parametrize("spelling, setup, outcome", [
    ({"pending": "queued", "running": "in_progress", "completed": "succeeded"}, None, "images"),
    ({"cancelled": "canceled"}, "cancel", TaskCancelledError),
    ({"failed": "error"}, "fail", TaskFailedError),
])
def test_status_spellings(start_sim, make_client, ledger, spelling, setup, outcome):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=5, status_spelling=spelling)
    if setup == "fail":
        srv.sim.inject("post", "task_failed")
    client = make_client(srv.base_url, sim_clock=clock)
    on_task = (lambda t: srv.sim.handle("POST", t.cancel_url, {}, b"")) if setup == "cancel" else None
    if outcome == "images":
        assert len(client.generate("spelled", wait="task", on_task=on_task, **LOW).images) == 1
    else:
        with pytest.raises(outcome):
            client.generate("spelled", wait="task", on_task=on_task, **LOW)
    cmp = check(srv.sim, ledger)
    row(f"status spelling {spelling}", "GET poll", "mapped", getattr(outcome, "__name__", outcome),
        f"{srv.sim.requests['poll']} polls", cmp)
    assert_usable(client, sim=srv.sim)


def test_an_unknown_spelling_of_completed_is_recognised_by_its_images(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=5, status_spelling={"completed": "all_set"})
    client = make_client(srv.base_url, sim_clock=clock)
    result = client.generate("spelled oddly", wait="task", task_timeout=30, **LOW)
    assert len(result.images) == 1 and len(srv.sim.charges) == 1
    assert ledger.records[-1]["outcome"] == "ok"
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row("status 'all_set' (unknown spelling of completed)", "GET poll",
        "a poll that carries images is taken as completed", "images",
        f"{srv.sim.requests['poll']} polls", cmp)
    assert_usable(client, sim=srv.sim)


# ------------------------------------------------------------------- redirects and the key

@pytest.mark.parametrize("status", [302, 307, 308])
def test_an_api_redirect_to_another_host_is_refused_and_the_key_never_leaves(scripted, make_client, ledger, status):
    with recorder() as other:
        srv = scripted()
        srv.script("POST", GEN, Step(status, b"", {"Location": other.url + "/steal"}), normal(srv))
        client = make_client(srv.base_url)
        with pytest.raises(APIConnectionError, match=f"redirect \\(HTTP {status}\\)"):
            client.generate("x", **LOW)
        assert len(srv.requests("POST")) == 1
        assert other.seen == []                         # not followed at all
        cmp = assert_ledger_matches(ledger, srv.charges)
        assert_usable(client, scripted=True)
        assert other.seen == []
    row(f"API answers {status} to another host", "POST", "APIConnectionError, not followed", "APIConnectionError",
        "1 POST; 0 requests at the other host", cmp)


def test_a_poll_redirect_or_a_foreign_polling_url_never_gets_the_key(scripted, make_client, ledger):
    with recorder() as other:
        srv = scripted()
        # task_2 advertises another host name: refused, the documented URL is polled. task_3 advertises
        # this machine on another port (the recorder): only its path is used, on the API's own origin.
        srv.script("POST", GEN, Step(202, srv.task_answer("task_1")),
                   Step(202, srv.task_answer("task_2", polling_url="http://evil.example/poll/task_2",
                                             cancel_url="http://evil.example/poll/task_2/cancel")),
                   Step(202, srv.task_answer("task_3", polling_url=other.url + "/poll/task_3",
                                             cancel_url=other.url + "/poll/task_3/cancel")), normal(srv))
        srv.script("GET", GEN + "/task_1", Step(307, b"", {"Location": other.url + "/poll/task_1"}))
        srv.script("POST", GEN + "/task_1/cancel", Step(409, {"error": {"message": "running", "type": "conflict"}}))
        for tid in ("task_2", "task_3"):
            srv.script("GET", GEN + "/" + tid, Step(200, srv.image_answer(credit=272.0, id=tid, status="completed"),
                                                     charge=272.0))
        client = make_client(srv.base_url)
        with pytest.raises(APIConnectionError, match="redirect.*pending.*reconcile"):
            client.generate("x", wait="task", **LOW)
        assert len(client.generate("y", wait="task", **LOW).images) == 1
        assert len(client.generate("z", wait="task", **LOW).images) == 1
        assert other.seen == []
        assert [r["outcome"] for r in ledger.records[:3]] == ["pending", "ok", "ok"]  # the redirected task stays
        polls = [s.path for s in srv.requests("GET") if not s.path.startswith("/files/")]
        # task_3's advertised path went to the API's own host (404 there), then the documented URL
        assert polls == [GEN + "/task_1", GEN + "/task_2", "/poll/task_3", GEN + "/task_3"]
        cmp = assert_ledger_matches(ledger, srv.charges)
        assert_usable(client, scripted=True)
    row("poll answers 307 to another host; polling_url on another host / on this machine's other port", "GET poll",
        "redirect: APIConnectionError, ledger 'pending'; foreign host: the documented URL is polled; other port: "
        "its path on the API's origin", "APIConnectionError; images; images", "0 requests at the other host", cmp)


def test_a_download_redirect_to_another_host_is_followed_without_any_key(scripted, make_client, ledger):
    with recorder() as store:
        srv = scripted()
        srv.script("POST", GEN, Step(200, srv.image_answer(n=2), charge=108.85))
        srv.script("GET", "/files/img0.png", Step(302, b"", {"Location": store.url + "/bucket/img0.png?sig=1"}))
        client = make_client(srv.base_url)
        result = client.generate("x", n=2, **LOW)
        assert len(result.images) == 2
        assert len(store.seen) == 1 and store.seen[0].path.startswith("/bucket/img0.png")
        assert not store.seen[0].carries_key()
        assert not any(s.carries_key() for s in srv.requests("GET", "/files/"))
        assert srv.requests("POST")[0].headers["authorization"] == f"Bearer {KEY}"  # the API did get it
        cmp = assert_ledger_matches(ledger, srv.charges)
    row("signed URL redirects (302) to another host", "GET file", "followed, no key sent", "images",
        "1 request at the other host, no Authorization", cmp)


def test_a_redirect_loop_on_a_download_is_a_download_error(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, normal(srv))
    srv.script("GET", "/files/img0.png", Step(302, b"", {"Location": "/files/img0.png?again=1"}))
    client = make_client(srv.base_url)
    with pytest.raises(DownloadError, match="TooManyRedirects.*charged"):
        client.generate("x", **LOW)
    hops = len(srv.requests("GET", "/files/"))
    assert hops == 21  # httpx follows 20 redirects, once: a loop is not retried
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.with_credit == 1
    row("redirect loop on a signed URL", "GET file", "DownloadError, credit kept", "DownloadError",
        f"{hops} hops, no retry", cmp)


def test_the_key_never_reaches_the_file_host_in_any_fault(start_sim, make_client, ledger):
    """A final sweep: every simulator request of this test that went to the file host was keyless."""
    srv = start_sim()
    for kind in ("reset", "status", "stall"):
        srv.sim.inject("download", kind, **({"delay": 0.2} if kind == "stall" else {}))
        client = make_client(srv.base_url)
        client.generate(f"sweep {kind}", **LOW)
    downloads = [e for e in srv.sim.log if e["route"] == "download"]
    assert len(downloads) == 2 + 2 + 1 and all(e["auth"] is None for e in downloads)  # reset, 502 retried
    assert srv.sim.auth_leaks == 0
    check(srv.sim, ledger)


# ------------------------------------------------------------------ issue 8: tasks and deadlines

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_relative_task_urls_under_either_host_name(start_sim, make_client, ledger, host):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=3, task_urls="relative")
    client = make_client(f"http://{host}:{srv.port}/api/v1", sim_clock=clock)
    result = client.generate("relative", wait="task", **LOW)
    assert len(result.images) == 1 and srv.sim.requests["poll"] >= 1
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row(f"relative polling_url/cancel_url, API addressed as {host}", "POST 202, GET poll",
        "resolved on the API's origin", "images", f"{srv.sim.requests['poll']} polls", cmp)
    assert_usable(client, sim=srv.sim)


def test_a_poll_failing_ten_times_does_not_abandon_the_paid_task(start_sim, make_client, ledger):
    clock = ManualClock()
    srv = start_sim(clock=clock, latency=200)
    srv.sim.inject("poll", "status", count=30, status=503, retry_after=5)   # 10 polls x 3 attempts
    client = make_client(srv.base_url, sim_clock=clock)
    result = client.generate("patient", wait="task", task_timeout=600, **LOW)
    assert len(result.images) == 1
    assert max(client.fake_time.sleeps) <= config.MAX_POLL_BACKOFF
    cmp = check(srv.sim, ledger)
    assert cmp.with_credit == 1
    row("503 with Retry-After on 10 polls in a row (30 attempts)", "GET poll",
        "polling goes on with capped back-off until the task's deadline", "images",
        f"{srv.sim.requests['poll']} polls", cmp)
    assert_usable(client, sim=srv.sim)


def test_a_trickling_post_hits_the_whole_answer_deadline(scripted, make_client, ledger):
    srv = scripted()
    srv.script("POST", GEN, Step(200, srv.image_answer(credit=272.0), delay=0.2, action="trickle", charge=272.0),
               normal(srv))
    client = make_client(srv.base_url, timeout=SHORT)
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError, match="may have been charged"):
        client.generate("drip", **LOW)
    elapsed = time.monotonic() - t0
    assert elapsed < 2 * SHORT and len(srv.requests("POST")) == 1
    cmp = assert_ledger_matches(ledger, srv.charges)
    assert cmp.covered_unknown == 1
    row(f"POST answer trickling a chunk every 0.2 s (timeout {SHORT:g} s)", "POST",
        "APITimeoutError at the deadline, not retried, ledger 'unknown'", f"APITimeoutError after {elapsed:.1f} s",
        "1 POST", cmp)
    assert_usable(client, scripted=True)
