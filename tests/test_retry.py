"""The retry policy is a set of pure decisions: tested as tables."""

import email.utils
import random

import httpx
import pytest

from shark_nb import config, retry

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("soon", None),
        ("100000", config.MAX_RETRY_AFTER),
        (email.utils.formatdate(NOW + 7, usegmt=True), 7.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        (email.utils.formatdate(NOW + 3600, usegmt=True), config.MAX_RETRY_AFTER),
        ("Wed, 99 Foo 2026 00:00:00 GMT", None),
    ],
)
def test_retry_after_parsing(header, expected):
    assert retry.parse_retry_after(header, now=NOW) == expected


def test_retry_after_http_date_is_honoured_against_the_clock():
    header = email.utils.formatdate(NOW + 12, usegmt=True)
    assert retry.parse_retry_after(header, now=NOW) == pytest.approx(12.0)


@pytest.mark.parametrize(
    "status, attempt, max_retries, rate_limit_retries, expected",
    [
        (429, 0, 2, None, True),
        (429, 2, 2, None, False),
        (429, 2, 2, 10, True),
        (429, 10, 2, 10, False),
        (502, 0, 2, None, True),
        (502, 1, 2, None, True),
        (502, 2, 2, None, False),
        (503, 0, 2, None, True),
        (504, 0, 2, None, True),
        (504, 0, 0, None, False),
        (500, 0, 2, None, False),
        (400, 0, 2, None, False),
        (401, 0, 2, None, False),
        (402, 0, 2, None, False),
        (404, 0, 2, None, False),
        (409, 0, 2, None, False),
    ],
)
def test_should_retry_status_table(status, attempt, max_retries, rate_limit_retries, expected):
    assert retry.should_retry_status(status, attempt=attempt, max_retries=max_retries,
                                     rate_limit_retries=rate_limit_retries) is expected


_req = httpx.Request("POST", "https://shark.ai/api/v1/images/generations")


@pytest.mark.parametrize(
    "exc, idempotent, expected",
    [
        (httpx.ConnectError("refused", request=_req), False, True),
        (httpx.ConnectTimeout("slow connect", request=_req), False, True),
        (httpx.PoolTimeout("no free connection", request=_req), False, True),
        # The POST left and no answer came: it may have been charged, never retried blindly.
        (httpx.ReadTimeout("no answer", request=_req), False, False),
        (httpx.RemoteProtocolError("reset mid-response", request=_req), False, False),
        (httpx.ReadError("reset", request=_req), False, False),
        (httpx.WriteError("broken pipe", request=_req), False, False),
        # GETs are idempotent: polls and downloads retry anything transient.
        (httpx.ReadTimeout("no answer", request=_req), True, True),
        (httpx.RemoteProtocolError("reset", request=_req), True, True),
        (ValueError("not a transport error"), True, False),
    ],
)
def test_should_retry_exception_table(exc, idempotent, expected):
    assert retry.should_retry_exception(exc, idempotent=idempotent, attempt=0, max_retries=2) is expected


def test_no_retry_after_the_budget_of_attempts():
    exc = httpx.ConnectError("refused", request=_req)
    assert retry.should_retry_exception(exc, idempotent=True, attempt=2, max_retries=2) is False


@pytest.mark.parametrize("exc, charged", [
    (httpx.ConnectError("x", request=_req), False),
    (httpx.ReadTimeout("x", request=_req), True),
    (httpx.RemoteProtocolError("x", request=_req), True),
])
def test_may_have_been_charged(exc, charged):
    assert retry.may_have_been_charged(exc) is charged


def test_backoff_grows_exponentially_with_bounded_jitter():
    rng = random.Random(7)
    for attempt in range(8):
        base = min(config.INITIAL_RETRY_DELAY * 2 ** attempt, config.MAX_RETRY_DELAY)
        for _ in range(50):
            d = retry.backoff_delay(attempt, rng=rng)
            assert base / 2 <= d <= base


def test_backoff_jitter_spreads_concurrent_callers():
    rng = random.Random(1)
    delays = {round(retry.backoff_delay(3, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 10


def test_retry_after_wins_over_backoff_and_is_capped():
    assert retry.backoff_delay(0, 4.0) == 4.0
    assert retry.backoff_delay(5, 0.0) == 0.0
    assert retry.backoff_delay(0, 10_000) == config.MAX_RETRY_AFTER
