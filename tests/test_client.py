"""The client against a scripted gateway (httpx.MockTransport): retries, modes, ledger, secrets."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import time

import httpx
import pytest
from PIL import Image

import shark_nb
from shark_nb import AsyncShark, Ledger, Shark
from shark_nb.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BudgetExceededError,
    ContentModerationError,
    DownloadError,
    InvalidRequestError,
    ProviderError,
    RateLimitError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
)

KEY = "sk-test-SECRET-0123456789"
API = "https://shark.test/api/v1"
FILES = "https://files.test"


def png_bytes(color="red", size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


PNG = png_bytes()


class Gateway:
    """A scripted gateway: `script` is a list of responses (or callables) for successive POSTs."""

    def __init__(self, script=None, polls=None):
        self.script = list(script or [])
        self.polls = list(polls or [])
        self.requests: list[httpx.Request] = []
        self.downloads: list[httpx.Request] = []
        self.cancels: list[httpx.Request] = []
        self.cancel_status = 200
        self.file_status = 200

    def api(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path.endswith("/cancel"):
            self.cancels.append(request)
            if self.cancel_status == 409:
                return httpx.Response(409, json={"error": {"message": "already running", "type": "conflict"}})
            return httpx.Response(200, json={"id": "task_1", "status": "cancelled"})
        if request.method == "POST":
            step = self.script.pop(0) if self.script else ok_answer()
        else:
            step = self.polls.pop(0) if self.polls else {"id": "task_1", "status": "running"}
        if callable(step):
            return step(request)
        if isinstance(step, httpx.Response):
            return step
        status = 202 if step.get("object") == "image.generation.task" else 200
        return httpx.Response(status, json=step)

    def files(self, request: httpx.Request) -> httpx.Response:
        self.downloads.append(request)
        if self.file_status != 200:
            return httpx.Response(self.file_status, text="<Error>Request has expired</Error>")
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    def posts(self):
        return [r for r in self.requests if r.method == "POST" and not r.url.path.endswith("/cancel")]


def ok_answer(n=1, credit=1056.5, **extra):
    answer = {"created": 1_790_000_000, "data": [{"url": f"{FILES}/img{i}.png?sig=x"} for i in range(n)],
              "usage": {"input_tokens": 3, "output_tokens": 1056 * n, "total_tokens": 3 + 1056 * n},
              "credit": credit}
    answer.update(extra)
    return answer


def task_answer(task_id="task_1", timeout=300):
    return {"id": task_id, "object": "image.generation.task", "status": "pending", "created": 1,
            "timeout": timeout, "polling_url": f"{API}/images/generations/{task_id}",
            "cancel_url": f"{API}/images/generations/{task_id}/cancel"}


def error(status, type_, message="nope", headers=None):
    return httpx.Response(status, json={"error": {"message": message, "type": type_}}, headers=headers or {})


class FakeTime:
    """A clock that only moves when the client sleeps: retries run instantly and are measured."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


def make_client(gw: Gateway, ledger, fake_time: FakeTime | None = None, **kw) -> AsyncShark:
    client = AsyncShark(api_key=KEY, base_url=API, ledger=ledger, poll_interval=2.0,
                        transport=httpx.MockTransport(gw.api), download_transport=httpx.MockTransport(gw.files), **kw)
    ft = fake_time or FakeTime()
    client._sleep, client._clock = ft.sleep, ft.clock
    return client


# --- the happy paths ---------------------------------------------------------------------------

async def test_sync_generation_sends_the_documented_body_and_downloads_without_the_key(ledger):
    gw = Gateway([ok_answer(n=2)])
    client = make_client(gw, ledger)
    result = await client.generate("a red fox", n=2, size="1024x1024", quality="medium")
    post = gw.posts()[0]
    assert json.loads(post.content) == {"model": "openai/gpt-image-2", "prompt": "a red fox", "n": 2,
                                        "size": "1024x1024", "quality": "medium", "background": "auto",
                                        "output_format": "png"}
    assert post.headers["authorization"] == f"Bearer {KEY}"
    assert post.headers["content-type"] == "application/json"
    assert len(gw.downloads) == 2
    for d in gw.downloads:
        assert "authorization" not in d.headers and "x-api-key" not in d.headers
        assert KEY not in str(d.url) and KEY not in str(d.headers)
    assert [im.data for im in result.images] == [PNG, PNG]
    assert result.images[0].size == (32, 24) and result.images[0].format == "png"
    assert result.credit == 1056.5 and result.cost_usd == pytest.approx(0.10565)
    assert result.usage.output_tokens == 2112
    assert result.tracing_id == post.headers["x-tracing-id"]


async def test_ledger_line_is_written_before_the_downloads(ledger):
    seen = {}
    gw = Gateway([ok_answer()])
    original = gw.files

    def files(request):
        seen["records_at_download"] = len(Ledger.load(ledger.path).records)
        return original(request)

    gw.files = files
    client = make_client(gw, ledger)
    await client.generate("x")
    assert seen["records_at_download"] == 1
    rec = ledger.records[0]
    assert rec["outcome"] == "ok" and rec["credit"] == 1056.5 and rec["images"] == 1
    assert rec["tracing_id"] and rec["offline"] is False and rec["usd"] == pytest.approx(0.10565)


async def test_charged_call_survives_failed_download(ledger):
    gw = Gateway([ok_answer(credit=500)])
    gw.file_status = 403
    client = make_client(gw, ledger)
    with pytest.raises(DownloadError, match="expired"):
        await client.generate("x")
    assert ledger.total_credits == 500 and ledger.calls == 1
    assert "download failed" in ledger.records[0]["error"]


async def test_a_download_that_is_not_an_image_is_a_download_error_with_the_charge_kept(ledger):
    gw = Gateway([ok_answer(credit=300)])
    gw.files = lambda request: httpx.Response(200, content=b"<html>login page</html>")
    with pytest.raises(DownloadError, match="not a readable image"):
        await make_client(gw, ledger).generate("x")
    assert ledger.total_credits == 300 and "unreadable image" in ledger.records[0]["error"]


async def test_b64_json_and_output_urls_are_accepted(ledger):
    b64 = {"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}], "credit": 10}
    gw = Gateway([b64, {"created": 1, "output": {"urls": [f"{FILES}/a.png"]}, "credit": 10}])
    client = make_client(gw, ledger)
    assert (await client.generate("x")).images[0].data == PNG
    assert len(gw.downloads) == 0
    assert (await client.generate("x")).images[0].data == PNG


async def test_missing_credit_is_unknown_never_zero(ledger):
    answer = ok_answer()
    del answer["credit"]
    gw = Gateway([answer])
    result = await make_client(gw, ledger).generate("x")
    assert result.credit is None and result.cost_usd is None
    assert ledger.records[0]["credit"] is None and ledger.unknown_cost_calls == 1
    assert ledger.total_credits == 0


async def test_unknown_response_fields_are_ignored(ledger):
    gw = Gateway([ok_answer(brand_new_field={"x": 1}, data_extra=[1, 2])])
    assert len((await make_client(gw, ledger).generate("x")).images) == 1


# --- retries -----------------------------------------------------------------------------------

async def test_same_tracing_id_on_every_retry_and_backoff_between(ledger):
    ft = FakeTime()
    gw = Gateway([error(502, "provider_error"), error(504, "timeout_error"), ok_answer()])
    result = await make_client(gw, ledger, ft).generate("x")
    ids = {r.headers["x-tracing-id"] for r in gw.posts()}
    assert len(gw.posts()) == 3 and ids == {result.tracing_id}
    assert len(ft.sleeps) == 2 and 0.25 <= ft.sleeps[0] <= 0.5 and 0.5 <= ft.sleeps[1] <= 1.0
    assert ledger.calls == 1  # one logical call, one record


async def test_retries_stop_at_the_policy(ledger):
    gw = Gateway([error(502, "provider_error")] * 5)
    with pytest.raises(ProviderError) as info:
        await make_client(gw, ledger).generate("x")
    assert len(gw.posts()) == 3  # 1 + max_retries (2)
    assert info.value.tracing_id == gw.posts()[0].headers["x-tracing-id"]
    assert ledger.records[0]["outcome"] == "provider_error" and ledger.records[0]["credit"] is None


@pytest.mark.parametrize("response, cls", [
    (error(400, "invalid_request_error"), InvalidRequestError),
    (error(400, "content_moderation"), ContentModerationError),
    (error(401, "auth_error"), AuthenticationError),
])
async def test_4xx_is_never_retried(ledger, response, cls):
    gw = Gateway([response, ok_answer()])
    with pytest.raises(cls):
        await make_client(gw, ledger).generate("x")
    assert len(gw.posts()) == 1


async def test_retry_after_seconds_is_honoured(ledger):
    ft = FakeTime()
    gw = Gateway([error(429, "rate_limit_error", headers={"Retry-After": "7"}), ok_answer()])
    await make_client(gw, ledger, ft).generate("x")
    assert len(gw.posts()) == 2 and 7.0 <= sum(ft.sleeps) <= 7.1


async def test_retry_after_http_date_is_honoured(ledger):
    ft = FakeTime()
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    gw = Gateway([error(429, "rate_limit_error", headers={"Retry-After": when}), ok_answer()])
    await make_client(gw, ledger, ft).generate("x")
    assert 18.0 <= sum(ft.sleeps) <= 20.2


async def test_rate_limit_exhausted_raises_rate_limit_error(ledger):
    gw = Gateway([error(429, "rate_limit_error", headers={"Retry-After": "1"})] * 4)
    with pytest.raises(RateLimitError):
        await make_client(gw, ledger).generate("x")
    assert len(gw.posts()) == 3


async def test_connection_refused_is_retried_because_nothing_was_sent(ledger):
    calls = []

    def refuse_then_answer(request):
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=ok_answer())

    gw = Gateway([refuse_then_answer])
    gw.script = [refuse_then_answer] * 3
    await make_client(gw, ledger).generate("x")
    assert len(calls) == 3 and ledger.calls == 1


async def test_a_sync_post_that_times_out_is_not_retried_and_recorded_unknown(ledger):
    def stall(request):
        raise httpx.ReadTimeout("timed out", request=request)

    gw = Gateway([stall, ok_answer()])
    with pytest.raises(APITimeoutError, match="may have been charged") as info:
        await make_client(gw, ledger).generate("x", quality="high")
    assert len(gw.posts()) == 1
    assert info.value.may_be_charged
    rec = ledger.records[0]
    assert rec["outcome"] == "unknown" and rec["credit"] is None
    assert ledger.unknown_cost_calls == 1


async def test_html_error_page_from_a_proxy_is_a_typed_error(ledger):
    page = httpx.Response(502, text="<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
                          headers={"content-type": "text/html"})
    gw = Gateway([page] * 3)
    with pytest.raises(ProviderError, match="Bad Gateway"):
        await make_client(gw, ledger).generate("x")


async def test_truncated_json_in_a_200_is_recorded_unknown(ledger):
    gw = Gateway([httpx.Response(200, content=b'{"created": 1, "data": [{"url": "ht')])
    with pytest.raises(APIConnectionError, match="not valid JSON"):
        await make_client(gw, ledger).generate("x")
    assert ledger.records[0]["outcome"] == "unknown"


async def test_a_200_with_no_images_is_a_clear_error_and_keeps_the_charge(ledger):
    gw = Gateway([{"created": 1, "data": [], "credit": 42}])
    with pytest.raises(APIConnectionError, match="no images"):
        await make_client(gw, ledger).generate("x")
    assert ledger.total_credits == 42


# --- task mode ---------------------------------------------------------------------------------

async def test_task_mode_polls_until_completed(ledger):
    ft = FakeTime()
    done = {"id": "task_1", "status": "completed", **ok_answer(credit=99)}
    gw = Gateway([task_answer()], polls=[{"id": "task_1", "status": "queued"},
                                         {"id": "task_1", "status": "in_progress"}, done])
    seen = []
    result = await make_client(gw, ledger, ft).generate("x", wait="task", on_task=seen.append)
    body = json.loads(gw.posts()[0].content)
    assert body["async"] is True and body["timeout"] == 300
    assert seen[0].id == "task_1"
    assert result.task_id == "task_1" and result.credit == 99
    polls = [r for r in gw.requests if r.method == "GET"]
    assert len(polls) == 3 and ft.sleeps == [0.5, 1.0, 2.0]  # the ramp to the poll interval
    assert {r.headers["x-tracing-id"] for r in gw.requests} == {result.tracing_id}
    assert ledger.records[0]["outcome"] == "ok" and ledger.records[0]["task_id"] == "task_1"
    assert ledger.calls == 1  # pending line merged into the final one


@pytest.mark.parametrize("err", [{"message": "provider exploded", "type": "provider_error"}, "provider exploded"])
async def test_failed_task_maps_to_task_failed_error(ledger, err):
    gw = Gateway([task_answer()], polls=[{"id": "task_1", "status": "failed", "error": err}])
    with pytest.raises(TaskFailedError, match="provider exploded") as info:
        await make_client(gw, ledger).generate("x", wait="task")
    assert info.value.task_id == "task_1"
    assert ledger.records[0]["outcome"] == "task_failed"


async def test_task_cancelled_at_the_gateway(ledger):
    gw = Gateway([task_answer()], polls=[{"id": "task_1", "status": "canceled"}])
    with pytest.raises(TaskCancelledError):
        await make_client(gw, ledger).generate("x", wait="task")
    assert ledger.records[0]["outcome"] == "cancelled"


async def test_cancelling_the_wait_cancels_the_task_at_the_gateway(ledger):
    gw = Gateway([task_answer()])
    client = make_client(gw, ledger)
    client._sleep = asyncio.sleep
    client.poll_interval = 0.01
    started = asyncio.Event()
    job = asyncio.ensure_future(client.generate("x", wait="task", on_task=lambda t: started.set()))
    await started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert len(gw.cancels) == 1 and gw.cancels[0].headers["authorization"] == f"Bearer {KEY}"
    assert ledger.records[0]["outcome"] == "cancelled"


async def test_cancel_refused_with_409_keeps_the_task_pending_in_the_ledger(ledger):
    gw = Gateway([task_answer()])
    gw.cancel_status = 409
    client = make_client(gw, ledger)
    client._sleep = asyncio.sleep
    client.poll_interval = 0.01
    tasks = []
    job = asyncio.ensure_future(client.generate("x", wait="task", on_task=tasks.append))
    while not tasks:
        await asyncio.sleep(0.005)
    assert await client.cancel(tasks[0]) == "refused"
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    rec = ledger.records[0]
    assert rec["outcome"] == "pending" and rec["task_id"] == "task_1" and "may still be charged" in rec["error"]
    assert ledger.unknown_cost_calls == 1
    # Later the task finishes at the gateway; reconcile() records the charge.
    gw.polls = [{"id": "task_1", "status": "completed", **ok_answer(credit=77)}]
    updated = await client.reconcile()
    assert len(updated) == 1 and ledger.total_credits == 77 and ledger.unknown_cost_calls == 0


async def test_task_past_its_deadline_is_cancelled_at_the_gateway(ledger):
    ft = FakeTime()
    gw = Gateway([task_answer(timeout=30)], polls=[{"id": "task_1", "status": "running"}] * 400)
    with pytest.raises(APITimeoutError, match="cancelled at the gateway"):
        await make_client(gw, ledger, ft).generate("x", wait="task", task_timeout=30)
    assert ledger.records[0]["outcome"] == "cancelled" and ledger.unknown_cost_calls == 0
    assert len(gw.cancels) == 1
    assert sum(ft.sleeps) <= 30 + 30 + 2.0 + 0.01


async def test_task_past_its_deadline_that_refuses_to_cancel_stays_pending(ledger):
    gw = Gateway([task_answer(timeout=30)], polls=[{"id": "task_1", "status": "running"}] * 400)
    gw.cancel_status = 409
    with pytest.raises(APITimeoutError, match="did not confirm a cancel.*pending.*reconcile"):
        await make_client(gw, ledger).generate("x", wait="task", task_timeout=30)
    assert ledger.records[0]["outcome"] == "pending" and ledger.unknown_cost_calls == 1


# --- budget, validation and secrets ------------------------------------------------------------

async def test_budget_refuses_locally_and_sends_nothing(ledger):
    ledger.budget = 100.0
    gw = Gateway([ok_answer()])
    with pytest.raises(BudgetExceededError) as info:
        await make_client(gw, ledger).generate("x", quality="high", size="2048x2048")
    assert gw.requests == [] and info.value.estimate > 100


async def test_remaining_budget_is_sent_as_user_credits_header(ledger):
    ledger.budget = 5000.0
    gw = Gateway([ok_answer(credit=1000), ok_answer(credit=1000)])
    client = make_client(gw, ledger)
    await client.generate("x", quality="low")
    await client.generate("x", quality="low")
    assert [r.headers["x-app-user-credits"] for r in gw.posts()] == ["5000", "4000"]


async def test_validation_sends_nothing(ledger):
    gw = Gateway()
    with pytest.raises(ValidationError, match="size"):
        await make_client(gw, ledger).generate("x", size="640x480")
    assert gw.requests == [] and ledger.calls == 0


async def test_redirect_is_not_followed_so_the_key_stays_home(ledger):
    gw = Gateway([httpx.Response(307, headers={"location": "https://evil.test/steal"})])
    with pytest.raises(APIConnectionError, match="evil.test"):
        await make_client(gw, ledger).generate("x")
    assert all(r.url.host == "shark.test" for r in gw.requests)


async def test_polling_url_on_another_host_never_gets_the_key(ledger):
    # Refused; the documented URL on the API's host is polled instead, and the ledger says why.
    bad = dict(task_answer(), polling_url="https://evil.test/poll", cancel_url="https://evil.test/cancel")
    gw = Gateway([bad], polls=[dict(ok_answer(), id="task_1", status="completed")])
    result = await make_client(gw, ledger).generate("x", wait="task")
    assert len(result.images) == 1
    assert all(r.url.host == "shark.test" for r in gw.requests)
    assert str(gw.requests[1].url) == f"{API}/images/generations/task_1"
    pending = [line for line in map(json.loads, ledger.path.read_text().splitlines()) if line["outcome"] == "pending"]
    assert "polling_url is on another host (evil.test)" in pending[0]["error"]
    assert "cancel_url is on another host (evil.test)" in pending[0]["error"]


async def test_key_never_appears_in_reprs_errors_or_the_ledger(ledger):
    gw = Gateway([error(401, "auth_error", message=f"bad key {KEY}")])
    client = make_client(gw, ledger)
    with pytest.raises(AuthenticationError) as info:
        await client.generate("x")
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in repr(client) and KEY not in repr(client._key)
    assert KEY not in ledger.path.read_text()


# --- batches and the sync wrapper --------------------------------------------------------------

async def test_generate_many_keeps_order_and_returns_failures_in_their_slot(ledger):
    def answer_for(request):
        prompt = json.loads(request.content)["prompt"]
        if prompt == "bad":
            return error(400, "content_moderation")
        return httpx.Response(200, json=ok_answer(credit=float(len(prompt))))

    gw = Gateway()
    gw.script = [answer_for] * 5
    results = await make_client(gw, ledger).generate_many(["a", "bb", "bad", "", "cccc"], concurrency=2)
    assert [r.credit for r in (results[0], results[1], results[4])] == [1.0, 2.0, 4.0]
    assert isinstance(results[2], ContentModerationError)
    assert isinstance(results[3], ValidationError)
    assert len(gw.posts()) == 4


async def test_generate_many_backs_off_together_on_429(ledger):
    ft = FakeTime()
    state = {"n": 0}

    def limited(request):
        state["n"] += 1
        if state["n"] == 2:
            return error(429, "rate_limit_error", headers={"Retry-After": "3"})
        return httpx.Response(200, json=ok_answer())

    gw = Gateway()
    gw.script = [limited] * 6
    results = await make_client(gw, ledger, ft).generate_many(["a", "b", "c", "d", "e"], concurrency=3)
    assert all(not isinstance(r, Exception) for r in results)
    assert any(s >= 3.0 for s in ft.sleeps)


def test_sync_client_works_inside_a_running_event_loop(ledger):
    gw = Gateway([ok_answer()])
    client = Shark(api_key=KEY, base_url=API, ledger=ledger, transport=httpx.MockTransport(gw.api),
                   download_transport=httpx.MockTransport(gw.files))

    async def inside_a_notebook_cell():
        return client.generate("x")  # blocking call while a loop runs in this thread (like ipykernel)

    result = asyncio.run(inside_a_notebook_cell())
    assert result.images[0].data == PNG
    assert "Shark" in repr(client) and KEY not in repr(client)


def test_offline_client_without_key_announces_itself(capsys, ledger):
    shark_nb.config._offline_announced = False
    client = Shark(ledger=ledger)
    assert client.offline is True
    assert "offline simulator" in capsys.readouterr().err


async def test_concurrent_calls_cannot_together_overspend_the_budget(ledger):
    estimate = shark_nb.params.build_request("x", quality="low").estimate_credit()
    ledger.budget = estimate * 2.5  # room for two calls in flight, not three
    gw = Gateway()
    gw.script = [lambda r: httpx.Response(200, json=ok_answer(credit=estimate))] * 4
    results = await make_client(gw, ledger).generate_many(["a", "b", "c", "d"], concurrency=4, quality="low")
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(refused) == 2 and len(gw.posts()) == 2
    assert ledger.total_credits <= ledger.budget


async def test_the_call_is_on_disk_before_the_request_leaves(ledger):
    seen = {}

    def answer(request):
        seen["on_disk"] = Ledger.load(ledger.path).records
        return httpx.Response(200, json=ok_answer())

    gw = Gateway([answer])
    await make_client(gw, ledger).generate("x")
    (rec,) = seen["on_disk"]
    assert rec["outcome"] == "sending" and rec["tracing_id"] == gw.posts()[0].headers["x-tracing-id"]
    assert ledger.records[0]["outcome"] == "ok"


async def test_a_completed_task_with_an_unknown_status_spelling_is_recognised_by_its_images(ledger):
    done = {"id": "task_1", "status": "all_set", **ok_answer(credit=12)}
    gw = Gateway([task_answer()], polls=[{"id": "task_1", "status": "working"}, done])
    result = await make_client(gw, ledger).generate("x", wait="task")
    assert result.credit == 12 and ledger.records[0]["outcome"] == "ok"


async def test_generate_many_keeps_an_unexpected_failure_in_its_slot(ledger, monkeypatch):
    gw = Gateway([ok_answer(), ok_answer()])
    client = make_client(gw, ledger)
    real_send = client.send

    async def flaky_send(request, **kw):
        if request.prompt == "boom":
            raise OSError("disk full")
        return await real_send(request, **kw)

    monkeypatch.setattr(client, "send", flaky_send)
    results = await client.generate_many(["a", "boom", "b"])
    assert isinstance(results[1], OSError) and results[0].images and results[2].images
