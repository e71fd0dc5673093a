"""Money under pressure (issue 8): the budget across threads and event loops, strange credits,
interrupted calls, lone surrogates, and a ledger file with odd lines.

Every gateway here is an ``httpx.MockTransport`` (no sockets) that counts the POSTs it sees: the
budget's promise is about requests that *left*, so that is what is counted.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import signal
import sys
import threading
import time
import warnings

import httpx
import pytest
from PIL import Image

from shark_nb import AsyncShark, Ledger, Shark
from shark_nb.errors import (
    BudgetExceededError,
    ContentModerationError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitError,
    ValidationError,
)
from shark_nb.ledger import MAX_CREDIT_PER_CALL, LedgerWarning, credit_rule
from shark_nb.params import build_request

KEY = "sk-test-BUDGET-0123456789"
API = "https://shark.test/api/v1"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode()
ESTIMATE = build_request("a fox", quality="low", size="1024x1024").estimate_credit()


def answer(credit=ESTIMATE, **extra) -> dict:
    return {"created": 1, "data": [{"b64_json": B64}], "credit": credit,
            "usage": {"input_tokens": 3, "output_tokens": 272, "total_tokens": 275}, **extra}


def raw_json(status: int, obj, headers=None) -> httpx.Response:
    """A response whose JSON keeps lone surrogates as ``\\udcff`` escapes (as a gateway may send)."""
    return httpx.Response(status, content=json.dumps(obj).encode("ascii"),
                          headers={"content-type": "application/json", **(headers or {})})


class Counter:
    """A thread-safe gateway: answers every POST with ``answer()`` and counts them."""

    def __init__(self, reply=None):
        self.lock = threading.Lock()
        self.posts = 0
        self.reply = reply or (lambda request: httpx.Response(200, json=answer()))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.posts += 1
        return self.reply(request)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


def aclient(ledger, handler, **kw) -> AsyncShark:
    return AsyncShark(api_key=KEY, base_url=API, ledger=ledger, transport=httpx.MockTransport(handler), **kw)


def sclient(ledger, handler, **kw) -> Shark:
    return Shark(api_key=KEY, base_url=API, ledger=ledger, transport=httpx.MockTransport(handler), **kw)


@pytest.fixture
def tight_switching():
    """Let the interpreter switch threads very often, so racing threads really interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


# ------------------------------------------------------------------ 1. the budget across threads

def _race(ledger: Ledger, gateway: Counter, kinds: list[str]) -> list:
    """One thread per kind, released together by a barrier; each makes one call."""
    barrier = threading.Barrier(len(kinds))
    outcomes: list = [None] * len(kinds)

    def run(i: int, kind: str) -> None:
        try:
            if kind == "sync":  # Shark: the call runs on the process's private loop thread
                client = sclient(ledger, gateway)
                barrier.wait()
                try:
                    outcomes[i] = client.generate("a fox", quality="low", size="1024x1024")
                finally:
                    client.close()
            else:  # AsyncShark on this thread's own event loop
                async def go():
                    async with aclient(ledger, gateway) as client:
                        barrier.wait()
                        return await client.generate("a fox", quality="low", size="1024x1024")

                outcomes[i] = asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - kept for the assertions
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, k)) for i, k in enumerate(kinds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


@pytest.mark.parametrize("kinds", [
    ["async"] * 8,
    ["sync"] * 8,
    ["async", "sync"] * 4,
], ids=["8-own-loops", "8-sync-clients-one-private-loop", "mixed"])
def test_a_budget_for_one_call_sends_exactly_one_request_from_racing_threads(tmp_path, kinds, tight_switching):
    for rep in range(50 if kinds[0] == "async" and kinds[-1] == "async" else 25):
        ledger = Ledger(tmp_path / f"race-{rep}.jsonl", budget=ESTIMATE)  # fits exactly one call
        gateway = Counter()
        outcomes = _race(ledger, gateway, kinds)
        ok = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
        assert gateway.posts == 1, f"repetition {rep}: {gateway.posts} requests sent"
        assert len(ok) == 1 and len(refused) == len(kinds) - 1, outcomes
        assert ledger.committed_credits == pytest.approx(ESTIMATE)
        assert ledger.remaining == pytest.approx(0)
        assert len(Ledger.load(ledger.path).records) == 1  # refusals reserve nothing


def test_sync_and_async_generate_many_together_never_pass_the_budget(tmp_path, tight_switching):
    for rep in range(20):
        ledger = Ledger(tmp_path / f"many-{rep}.jsonl", budget=ESTIMATE * 3)  # three calls, not four
        gateway = Counter()
        barrier = threading.Barrier(3)
        results: dict[str, list] = {}
        prompts = [f"a fox {i}" for i in range(4)]

        def sync_batch():
            with sclient(ledger, gateway) as client:
                barrier.wait()
                results["sync"] = client.generate_many(prompts, concurrency=4, quality="low", size="1024x1024")

        def async_batch(name):
            async def go():
                async with aclient(ledger, gateway) as client:
                    barrier.wait()
                    return await client.generate_many(prompts, concurrency=4, quality="low", size="1024x1024")

            results[name] = asyncio.run(go())

        threads = [threading.Thread(target=sync_batch), threading.Thread(target=async_batch, args=("a1",)),
                   threading.Thread(target=async_batch, args=("a2",))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        flat = [r for batch in results.values() for r in batch]
        assert len(flat) == 12
        assert gateway.posts == 3, f"repetition {rep}: {gateway.posts} requests sent"
        assert sum(not isinstance(r, Exception) for r in flat) == 3
        assert sum(isinstance(r, BudgetExceededError) for r in flat) == 9
        assert ledger.total_credits == pytest.approx(3 * ESTIMATE) and ledger.remaining == pytest.approx(0)


def test_reserve_checks_and_records_in_one_step(ledger):
    ledger.budget = 100
    ledger.reserve({"call_id": "a", "outcome": "sending", "estimate_credit": 60}, 60)
    with pytest.raises(BudgetExceededError):
        ledger.reserve({"call_id": "b", "outcome": "sending", "estimate_credit": 60}, 60)
    assert [r["call_id"] for r in ledger.records] == ["a"]  # a refusal leaves no line
    ledger.reserve({"call_id": "c", "outcome": "sending", "estimate_credit": 40}, 40)
    assert ledger.remaining == pytest.approx(0)


# ------------------------------------------------------------- 2. lone surrogates, in and out

@pytest.mark.parametrize("prompt, position, code", [
    ("\udcffa fox from an odd file name", 0, "DCFF"),
    ("a fox \udc80 in the snow", 6, "DC80"),
    ("a fox cut mid-emoji \ud83e", 20, "D83E"),
    ("\ud83ea fox", 0, "D83E"),
    ("a fox " + "\ud83e\udd8a", 6, "D83E"),  # a surrogate *pair* in a str is not text either
])
async def test_a_prompt_with_a_lone_surrogate_is_refused_before_sending(ledger, prompt, position, code):
    gateway = Counter()
    async with aclient(ledger, gateway) as client:
        with pytest.raises(ValidationError) as info:
            await client.generate(prompt)
        batch = await client.generate_many(["a fox", prompt])
    message = str(info.value)
    assert message.startswith("prompt=") and f"position {position}" in message and f"U+{code}" in message
    message.encode("utf-8")  # the message itself can be printed anywhere
    assert isinstance(batch[1], ValidationError) and f"U+{code}" in str(batch[1])
    assert gateway.posts == 1 and len(ledger.records) == 1  # only the batch's good prompt went


def test_a_model_name_with_a_lone_surrogate_is_refused(ledger):
    with pytest.raises(ValidationError, match=r"model=.*U\+DCFF"):
        build_request("a fox", model="openai/gpt-image-2\udcff")


def _reload_clean(ledger: Ledger) -> list[dict]:
    ledger.path.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    with warnings.catch_warnings():
        warnings.simplefilter("error", LedgerWarning)
        return Ledger.load(ledger.path).records


@pytest.mark.parametrize("extra, where", [
    ({"usage": {"input_tokens\udcff": 3, "output_tokens": 272, "total_tokens": 275}}, ("usage", "input_tokens\ufffd")),
    ({"usage": {"input_tokens": "3\ud800", "output_tokens": 272, "total_tokens": 275}}, ("usage", "input_tokens")),
    ({"note\udcff": "odd \udc80 value"}, None),  # ignored, as unknown fields are
    ({"credit": "12\udcff"}, ("credit_reported",)),
    ({"data": [{"b64_json": B64, "revised_prompt": "a fox \ud83e"}]}, None),
], ids=["usage-key", "usage-value", "unknown-field", "credit-string", "image-item-field"])
async def test_a_paid_answer_with_lone_surrogates_is_delivered_and_booked(ledger, extra, where):
    gateway = Counter(lambda r: raw_json(200, answer(**extra)))
    async with aclient(ledger, gateway) as client:
        result = await client.generate("a fox", quality="low", size="1024x1024")
    assert result.images and result.images[0].data == PNG  # the paid image is not lost
    (rec,) = _reload_clean(ledger)
    assert rec["outcome"] == "ok" and rec["tracing_id"] == result.tracing_id
    assert "\ufffd" in json.dumps(rec, ensure_ascii=False) or where is None
    if where == ("credit_reported",):
        assert rec["credit"] is None and rec["credit_reported"] == "12\ufffd"
        assert ledger.committed_credits == pytest.approx(ESTIMATE)  # unknown: counted at the estimate
    else:
        assert rec["credit"] == pytest.approx(ESTIMATE)


@pytest.mark.parametrize("status, error_body, expected", [
    (400, {"error": {"message": "blocked: \ud83e", "type": "content_moderation"}}, ContentModerationError),
    (400, {"error": {"message": "blocked \udcff by policy", "type": "content_moderation", "code": "x\udcff"}},
     ContentModerationError),
    (400, {"error": {"message": "blocked", "type": "content_moderation\udcff"}}, InvalidRequestError),
    (402, {"error": {"message": "no credit left \udcff", "type": "insufficient_credits"}}, InsufficientCreditsError),
], ids=["message-cut-mid-emoji", "message-and-code", "type", "402-message"])
async def test_an_error_with_lone_surrogates_stays_its_typed_error(ledger, status, error_body, expected):
    gateway = Counter(lambda r: raw_json(status, error_body))
    async with aclient(ledger, gateway) as client:
        with pytest.raises(expected) as info:
            await client.generate("a fox")
    err = info.value
    assert type(err) is expected
    for text in (str(err), repr(err), err.message, err.type or "", err.code or ""):
        text.encode("utf-8")
    (rec,) = _reload_clean(ledger)
    assert rec["status"] == status and rec["credit"] is None and "\ufffd" in rec["error"] + rec["outcome"]


async def test_a_task_id_with_a_lone_surrogate_is_polled_and_booked(ledger):
    def gw(request):
        if request.method == "POST":
            return raw_json(202, {"id": "task_\udcff", "object": "image.generation.task", "status": "pending",
                                  "polling_url": f"{API}/images/generations/t1"})
        return raw_json(200, {"id": "task_\udcff", "status": "completed", **answer()})

    async with aclient(ledger, Counter(gw), poll_interval=0.01) as client:
        result = await client.generate("a fox", wait="task")
    assert result.task_id == "task_\ufffd" and result.images
    (rec,) = _reload_clean(ledger)
    assert rec["task_id"] == "task_\ufffd" and rec["credit"] == pytest.approx(ESTIMATE)


def test_the_ledger_writer_never_fails_on_any_string(ledger):
    nasty = {"call_id": "s", "prompt": "a \udcff", "error": "cut \ud83e", "usage": {"k\udc80": ["v\udfff", {"\ud800": 1}]},
             "outcome": "ok", "credit": 5}
    with pytest.warns(LedgerWarning, match="not valid Unicode"):
        stored = ledger.record(nasty)
    assert stored["prompt"] == "a \ufffd" and stored["usage"] == {"k\ufffd": ["v\ufffd", {"\ufffd": 1}]}
    (back,) = Ledger.load(ledger.path).records
    assert back == stored and ledger.total_credits == 5
    ledger.to_csv(ledger.path.with_suffix(".csv"))
    ledger._repr_html_().encode("utf-8")


# ---------------------------------------------------------------- 3. strange credits

@pytest.mark.parametrize("reported, counted, note", [
    (300, 300.0, None),
    ("300", 300.0, None),
    (0, 0.0, None),
    (None, None, None),
    (-5, None, "negative"),
    ("-5", None, "negative"),
    (float("nan"), None, "not a finite number"),
    (float("inf"), None, "not a finite number"),
    ("abc", None, "not a number"),
    (True, None, "not a number"),
    ([12], None, "not a number"),
    (MAX_CREDIT_PER_CALL + 1, None, "above"),
    (10 ** 400, None, "not a finite number"),
])
def test_credit_rule(reported, counted, note):
    credit, why = credit_rule(reported)
    assert credit == counted
    assert (why is None) == (note is None) and (note is None or note in why)


@pytest.mark.parametrize("reported, committed_extra", [
    (-5, ESTIMATE),
    (-1e9, ESTIMATE),
    ("-300", ESTIMATE),
    ("abc", ESTIMATE),
    (1e300, MAX_CREDIT_PER_CALL),
    (float("inf"), MAX_CREDIT_PER_CALL),
    (float("nan"), ESTIMATE),
])
async def test_a_strange_credit_is_kept_but_never_loosens_the_budget(ledger, reported, committed_extra):
    ledger.budget = 100 * ESTIMATE
    body = json.dumps(answer(credit=reported)).encode()  # NaN / Infinity as the JSON extensions
    gateway = Counter(lambda r: httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    async with aclient(ledger, gateway) as client:
        result = await client.generate("a fox", quality="low", size="1024x1024")
    assert result.images and result.credit is None
    (rec,) = Ledger.load(ledger.path).records
    assert rec["credit"] is None and rec["credit_note"]
    assert rec["credit_reported"] == (reported if isinstance(reported, (int, str)) or math.isfinite(reported)
                                      else str(reported))  # kept for a dispute
    assert ledger.suspect_credit_calls == 1 and "suspect credit" in ledger.summary()
    assert ledger.total_credits == 0  # never negative, never absurd
    assert ledger.committed_credits == pytest.approx(committed_extra)
    assert ledger.remaining <= 100 * ESTIMATE - ESTIMATE + 1e-9


def test_old_records_with_a_negative_or_absurd_credit_do_not_loosen_the_budget(tmp_path):
    path = tmp_path / "old.jsonl"
    lines = [
        {"call_id": "a", "outcome": "ok", "credit": 100.0, "estimate_credit": 90},
        {"call_id": "b", "outcome": "ok", "credit": -1000.0, "estimate_credit": 90},      # at its estimate
        {"call_id": "c", "outcome": "provider_error", "credit": -50.0, "estimate_credit": 90},  # not charged
        {"call_id": "d", "outcome": "sending", "credit": None, "estimate_credit": -500},   # never below 0
        {"call_id": "e", "outcome": "task_failed", "credit": 1e15, "estimate_credit": 90},  # at the ceiling
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    led = Ledger.load(path)
    led.budget = 2 * MAX_CREDIT_PER_CALL
    assert led.total_credits == 100.0
    assert led.committed_credits == pytest.approx(100 + 90 + 0 + 0 + MAX_CREDIT_PER_CALL)
    assert led.suspect_credit_calls == 3 and led.unknown_cost_calls == 3


# ----------------------------------------------------- 4. interrupted calls, and settling them

class FastClock:
    """A fake clock that jumps forward by each wait: retries run at once."""

    def __init__(self):
        self.now = 1000.0

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.now += seconds
        await asyncio.sleep(0)

    def install(self, client: AsyncShark) -> AsyncShark:
        client._sleep, client._clock = self.sleep, self.clock
        return client


class Blocker:
    """A fake clock whose sleeps never end: the call parks in its wait until cancelled."""

    def __init__(self):
        self.now = 1000.0
        self.waiting = asyncio.Event()

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.waiting.set()
        await asyncio.Event().wait()


async def _cancel_while_waiting(ledger, handler, **kw):
    gateway = Counter(handler)
    client = aclient(ledger, gateway)
    blocker = Blocker()
    client._sleep, client._clock = blocker.sleep, blocker.clock
    job = asyncio.ensure_future(client.generate("a fox", quality="low", size="1024x1024", **kw))
    await asyncio.wait_for(blocker.waiting.wait(), 5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await client.aclose()
    return gateway


@pytest.mark.parametrize("first", [
    httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit_error"}},
                   headers={"retry-after": "30"}),
    httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit_error"}}),
    httpx.Response(502, text="<html>bad gateway</html>"),
    httpx.Response(503, text=""),
    httpx.Response(504, json={"error": {"message": "upstream", "type": "timeout_error"}}),
], ids=["429-retry-after-rate-gate", "429-rate-gate", "502-backoff", "503-backoff", "504-backoff"])
async def test_a_call_cancelled_while_waiting_to_retry_is_not_sent(ledger, first):
    ledger.budget = 2 * ESTIMATE
    gateway = await _cancel_while_waiting(ledger, lambda r: first)
    assert gateway.posts == 1
    (rec,) = Ledger.load(ledger.path).records
    assert rec["outcome"] == "not_sent" and rec["credit"] is None and "nothing was charged" in rec["error"]
    assert ledger.committed_credits == 0 and ledger.remaining == pytest.approx(2 * ESTIMATE)
    assert ledger.unknown_cost_calls == 0 and ledger.calls == 0


async def test_a_task_call_cancelled_while_waiting_out_a_429_is_not_sent(ledger):
    limited = httpx.Response(429, headers={"retry-after": "5"})
    await _cancel_while_waiting(ledger, lambda r: limited, wait="task")
    assert ledger.records[0]["outcome"] == "not_sent"


async def test_a_call_cancelled_while_its_post_is_at_the_gateway_stays_unknown_and_can_be_settled(ledger):
    arrived = asyncio.Event()

    async def stuck(request):
        arrived.set()
        await asyncio.Event().wait()

    ledger.budget = 2 * ESTIMATE
    client = aclient(ledger, stuck)
    job = asyncio.ensure_future(client.generate("a fox", quality="low", size="1024x1024"))
    await asyncio.wait_for(arrived.wait(), 5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await client.aclose()
    (rec,) = ledger.records
    assert rec["outcome"] == "unknown" and "may have been charged" in rec["error"]
    assert ledger.committed_credits == pytest.approx(ESTIMATE) and [r["call_id"] for r in ledger.unsettled] == [rec["call_id"]]
    # The provider says (by tracing id) what it charged: the user books it.
    settled = ledger.settle(rec["tracing_id"], 123.5, note="per provider support")
    assert settled["outcome"] == "settled" and settled["settled_from"] == "unknown" and settled["credit"] == 123.5
    assert ledger.unsettled == [] and ledger.total_credits == 123.5
    assert ledger.committed_credits == pytest.approx(123.5)
    back = Ledger.load(ledger.path)
    assert back.records == ledger.records and back.total_credits == 123.5


async def test_a_call_cancelled_after_a_429_then_during_the_retried_post_is_unknown(ledger):
    answers = iter([httpx.Response(429, headers={"retry-after": "1"})])
    arrived = asyncio.Event()

    async def handler(request):
        try:
            return next(answers)
        except StopIteration:
            arrived.set()
            await asyncio.Event().wait()

    client = FastClock().install(aclient(ledger, handler))
    job = asyncio.ensure_future(client.generate("a fox"))
    await asyncio.wait_for(arrived.wait(), 5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await client.aclose()
    assert ledger.records[0]["outcome"] == "unknown"


def test_settle_refuses_unknown_ids_and_bad_credits(ledger):
    ledger.record({"call_id": "c1", "tracing_id": "t1", "outcome": "unknown", "estimate_credit": 50})
    for bad in (-1, float("nan"), "12", True, MAX_CREDIT_PER_CALL * 2):
        with pytest.raises(ValidationError, match="credit="):
            ledger.settle("c1", bad)
    with pytest.raises(ValidationError, match="call_id='nope'"):
        ledger.settle("nope", 0)
    assert ledger.settle("c1", 0)["credit"] == 0 and ledger.committed_credits == 0


def _interrupt_main_when(event: threading.Event) -> threading.Thread:
    def fire():
        if event.wait(10):
            time.sleep(0.05)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
@pytest.mark.parametrize("where, outcome", [("rate-limit wait", "not_sent"), ("in-flight POST", "unknown")])
def test_ctrl_c_on_the_sync_client(ledger, where, outcome):
    seen = threading.Event()

    async def handler(request):
        seen.set()
        if where == "in-flight POST":
            await asyncio.sleep(30)
        return httpx.Response(429, headers={"retry-after": "30"})

    client = sclient(ledger, handler)  # real sleeps: the rate gate waits 30 s
    fired = _interrupt_main_when(seen)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.generate("a fox")
    fired.join(5)
    assert time.monotonic() - started < 10
    (rec,) = Ledger.load(ledger.path).records
    assert rec["outcome"] == outcome
    assert ledger.committed_credits == (0 if outcome == "not_sent" else pytest.approx(rec["estimate_credit"]))
    # The client still works afterwards.
    ok = sclient(ledger, lambda r: httpx.Response(200, json=answer()))
    assert ok.generate("a fox").images
    client.close()
    ok.close()


async def test_a_429_that_runs_out_of_retries_is_still_a_rate_limit_error(ledger):
    """Not an interruption: the typed error and its usual ledger line are unchanged."""
    client = FastClock().install(
        aclient(ledger, lambda r: httpx.Response(429, json={"error": {"message": "x", "type": "rate_limit_error"}})))
    with pytest.raises(RateLimitError):
        await client.generate("a fox")
    await client.aclose()
    assert ledger.records[0]["outcome"] == "rate_limit_error"


# ------------------------------------------------------------ 5. a ledger file with odd lines

ODD_LINES = [
    b'{"call_id": "o1", "outcome": ["ok"], "credit": 10, "estimate_credit": 5}',
    b'{"call_id": "o2", "outcome": "ok", "credit": "abc", "estimate_credit": 7}',
    b'{"call_id": "o3", "outcome": "ok", "images": null, "credit": 1}',
    b'{"call_id": "o4", "outcome": "ok", "params": 5, "usage": [1, 2], "inputs": "x", "credit": 2}',
    b'{"call_id": "o5", "outcome": {"k": 1}, "credit": null, "estimate_credit": "9"}',
    b'{"call_id": ["o6"], "outcome": "ok", "credit": 3, "time": 17, "prompt": {"p": 1}}',
    b'{"call_id": "o7", "outcome": "ok", "credit": 1e400, "images": 1e999, "latency_s": "fast"}',
    b'{"call_id": "o8", "outcome": "ok", "credit": 4, "images": 100000000000000000000000000000000000000000000000'
    + b"0" * 400 + b"}",
    b'{"call_id": "o9", "outcome": "ok", "credit": 5, "prompt": "caf\xc3\xa9 \xff\xfe broken bytes"}',
    b'{"call_id": "o10", "outcome": "ok", "credit": 6, "prompt": "a \\udcff escape"}',
    b'{"call_id": "o11", "outcome": "ok", "credit": 7, "deep": ' + b'[' * 200 + b']' * 200 + b"}",
    b"[" * 100_000 + b"]" * 100_000,                       # blows json's recursion limit: skipped
    b"[1, 2, 3]",                                           # a list: skipped
    b"42",                                                  # a number: skipped
    b'"just a string"',                                     # skipped
    b'{"call_id": "huge", "prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}',  # over 4 MB: skipped
    b"\xff\xfe\x00garbage",                                 # skipped
]
SKIPPED = 6


def _check_usable(led: Ledger) -> None:
    assert isinstance(led.total_credits, float) and math.isfinite(led.total_credits)
    assert isinstance(led.committed_credits, float) and math.isfinite(led.committed_credits)
    led.budget = 1e6
    assert math.isfinite(led.remaining)
    for text in (repr(led), led.summary(), led._repr_html_()):
        text.encode("utf-8")
    led.to_csv(led.path.with_suffix(".csv"))
    led.path.with_suffix(".csv").read_bytes().decode("utf-8")
    df = led.to_dataframe()
    assert len(df) == len(led.records)
    led.unsettled  # noqa: B018
    led.total_tokens  # noqa: B018
    led.images  # noqa: B018


def test_a_ledger_file_with_odd_lines_loads_and_stays_usable(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"\n".join(ODD_LINES) + b"\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        led = Ledger.load(path)
    assert led.skipped == SKIPPED
    assert len([w for w in caught if issubclass(w.category, LedgerWarning)]) == SKIPPED
    assert f"{SKIPPED} damaged lines skipped" in led.summary()
    recs = {str(r.get("call_id")): r for r in led.records}
    assert set(recs) == {"o1", "o2", "o3", "o4", "o5", '["o6"]', "o7", "o8", "o9", "o10", "o11"}
    assert recs["o1"]["outcome"] is None  # a damaged outcome counts as "may have been charged"
    assert "\ufffd" in recs["o9"]["prompt"] and recs["o9"]["prompt"].startswith("café")
    assert recs["o10"]["prompt"] == "a \ufffd escape"
    assert "nested too deeply" in json.dumps(recs["o11"]["deep"])
    # money: known credits 10+1+2+3+4+5+6+7 (o1's 10 counts: a credit is a credit whatever the outcome)
    assert led.total_credits == pytest.approx(38)
    # unknown: o2 ("abc", estimate 7), o5 (damaged outcome, estimate "9" is not a number: 0), o7 (1e400)
    assert led.unknown_cost_calls == 3
    _check_usable(led)
    # Appending still works, and the file reloads with the same view plus the new record.
    led.record({"call_id": "new", "outcome": "ok", "credit": 1.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LedgerWarning)
        again = Ledger.load(path)
    assert again.records == led.records and again.total_credits == pytest.approx(39.5)


@pytest.mark.parametrize("entry", [
    {"outcome": ["ok"], "credit": "abc"},
    {"outcome": "ok", "images": None, "params": 5, "usage": "lots"},
    {"outcome": "ok", "credit": 10 ** 400, "images": 10 ** 400},
    {"outcome": "ok", "prompt": ["a", "list"], "time": 5, "call_id": 7},
])
def test_record_accepts_odd_types_without_breaking_totals(ledger, entry):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LedgerWarning)
        ledger.record(entry)
        ledger.record({"call_id": "good", "outcome": "ok", "credit": 2.0})
        back = Ledger.load(ledger.path)
    assert ledger.total_credits == back.total_credits == 2.0
    _check_usable(ledger)


def test_a_live_ledger_whose_file_is_damaged_in_between_keeps_working(ledger):
    calls = Counter()
    client = sclient(ledger, calls)
    client.generate("a fox", quality="low", size="1024x1024")
    with open(ledger.path, "ab") as fh:  # another program scribbles on the file, no newline at the end
        fh.write(b'{"call_id": "x", "outcome": ["ok"]}\n' + b"[" * 50_000 + b"\n\xff\xfe junk")
    client.generate("a hen", quality="low", size="1024x1024")
    client.generate_many(["a cat", "a dog"], quality="low", size="1024x1024")
    client.close()
    assert calls.posts == 4
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        back = Ledger.load(ledger.path)
    ours = [r for r in back.records if r.get("call_id") != "x"]
    assert [r["prompt"] for r in ours] == ["a fox", "a hen", "a cat", "a dog"]
    assert all(r["outcome"] == "ok" and r["credit"] == pytest.approx(ESTIMATE) for r in ours)
    assert back.skipped == 2  # the deep line and the junk; our next line started on a fresh line
    _check_usable(back)
