"""Issue 8, downloads and saving: a paid image is never thrown away.

* one image that cannot be delivered (any reason) never costs its siblings; it is listed in
  ``result.missing`` with its URL and why, and the ledger keeps the URLs;
* the file host's 429/502/503/504 (and other 5xx) are retried honouring ``Retry-After``;
* ``data:`` URLs, relative URLs and bad base64 in the answer;
* more (or fewer) images than asked are delivered and noted, never silently;
* saving never overwrites: numbered names for several images, numeric suffixes for existing files.

The gateway and the file host are ``httpx.MockTransport`` fakes here; tests/test_faults.py runs the
same classes of fault against real loopback servers.
"""

from __future__ import annotations

import base64
import email.utils
import io
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest
from PIL import Image

from fault_servers import use_fake_time
from shark_nb import AsyncShark, Ledger, config
from shark_nb.display import Gallery
from shark_nb.errors import DownloadError, ValidationError
from shark_nb.images import read_metadata
from shark_nb.params import build_request
from shark_nb.results import GeneratedImage, GenerationResult, MissingImage

KEY = "sk-mny-Q7f1e2d3c4b9Z"  # random-looking: any 8-character piece of a key is redacted everywhere
API = "https://shark.test/api/v1"
FILES = "https://files.test"
CREDIT = 3169.5


def png(i: int = 0, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32 + i, 24), (40 * i % 256, 90, 160)).save(buf, fmt)
    return buf.getvalue()


def url(i: int) -> str:
    return f"{FILES}/img{i}.png?sig=s{i}"


def answer(n: int = 3, credit: float | None = CREDIT, data: list | None = None) -> dict:
    out = {"created": 1_790_000_000, "data": data if data is not None else [{"url": url(i)} for i in range(n)],
           "usage": {"input_tokens": 3, "output_tokens": 272 * n, "total_tokens": 3 + 272 * n}}
    if credit is not None:
        out["credit"] = credit
    return out


class Store:
    """The file host: ``/img{i}.png`` answers image i, unless a route scripts a list of answers
    (httpx.Response, an exception to raise, or a callable); the last one repeats."""

    def __init__(self, **routes):
        self.routes = {f"/{k}.png": list(v) for k, v in routes.items()}
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        steps = self.routes.get(request.url.path)
        if steps:
            step = steps.pop(0) if len(steps) > 1 else steps[0]
            if isinstance(step, Exception):
                raise step
            return step(request) if callable(step) else step
        i = int(request.url.path.rsplit("img", 1)[1].split(".")[0])
        return httpx.Response(200, content=png(i), headers={"content-type": "image/png"})

    def hits(self, name: str) -> int:
        return sum(1 for r in self.seen if r.url.path == f"/{name}.png")


def client_for(replies, store: Store, ledger: Ledger, **kw):
    """An AsyncShark whose POSTs get ``replies`` in turn (a dict = a 200 JSON answer)."""
    replies = list(replies)

    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=replies.pop(0) if len(replies) > 1 else replies[0])

    client = AsyncShark(api_key=KEY, base_url=API, ledger=ledger, transport=httpx.MockTransport(api),
                        download_transport=httpx.MockTransport(store), **kw)
    client.fake_time = use_fake_time(client)
    return client


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


def last(ledger: Ledger) -> dict:
    """The call's record as re-read from disk (lines merged by call_id)."""
    return Ledger.load(ledger.path).records[-1]


def no_key_anywhere(*texts) -> None:
    for t in texts:
        assert KEY not in str(t) and KEY[:8] not in str(t).replace("sk-money", "")


# ------------------------------------------------------------------------- partial delivery

XML_403 = httpx.Response(403, text="<Error><Code>AccessDenied</Code>Request has expired</Error>")

FAILURES = {
    # name: (the file host's answers for the failing image, reason fragment, status, attempts)
    "403 expired": ([XML_403], "the signed URL has expired or was refused (HTTP 403)", 403, 1),
    "401": ([httpx.Response(401)], "expired or was refused (HTTP 401)", 401, 1),
    "404": ([httpx.Response(404, text="NoSuchKey")], "answered HTTP 404", 404, 1),
    "410 empty": ([httpx.Response(410)], "answered HTTP 410 with an empty body", 410, 1),
    "500 x3": ([httpx.Response(500, text="oops")], "answered HTTP 500, 3 attempts", 500, 3),
    "truncated x3": ([httpx.Response(200, content=png(2)[:-40])], "arrived truncated, 3 attempts", None, 3),
    "empty 200 x3": ([httpx.Response(200, content=b"")], "sent an empty image, 3 attempts", None, 3),
    "reset x3": ([httpx.ReadError("connection reset")], "the download failed (ReadError, 3 attempts)", None, 3),
    "redirect loop": ([lambda r: httpx.Response(302, headers={"location": "/img2.png?again=1"})],
                      "the download failed (TooManyRedirects)", None, 21),
    "unreadable": ([httpx.Response(200, content=b"<html>login page</html>")],
                   "unreadable image: the bytes are not a readable image", None, 1),
}


@pytest.mark.parametrize("kind", FAILURES)
async def test_one_failed_image_never_costs_its_siblings(ledger, kind):
    steps, fragment, status, attempts = FAILURES[kind]
    store = Store(img2=steps)
    client = client_for([answer(3)], store, ledger)
    result = await client.generate("three foxes", n=3)
    assert [im.index for im in result.images] == [0, 1]
    assert [im.data for im in result.images] == [png(0), png(1)]
    (m,) = result.missing
    assert m.index == 2 and m.url == url(2) and fragment in m.reason and m.status == status
    assert store.hits("img2") == attempts and store.hits("img0") == store.hits("img1") == 1
    assert result.images_billed == 3 and not result.complete and len(result) == 2
    # said clearly everywhere the user looks
    line = f"2 of 3 images delivered; image 3: {m.reason}"
    assert line in repr(result) or f"2 of 3 images delivered ({m}" in repr(result)
    assert line in str(result) and "result.missing[i].url" in str(result)
    assert "#3 missing: " in result._repr_html_() and "2 of 3 images delivered" in result._repr_html_()
    # the ledger: charge kept, delivered vs billed, the URLs kept
    rec = last(ledger)
    assert rec["credit"] == CREDIT and rec["outcome"] == "ok"
    assert rec["images"] == 2 and rec["images_billed"] == 3 and rec["params"]["n"] == 3
    assert rec["urls"] == [url(0), url(1), url(2)]
    assert rec["missing"] == [{"index": 2, "url": url(2), "reason": m.reason, "status": status}]
    assert rec["error"].startswith("partial download: 2 of 3 images delivered; image 3:")
    assert Ledger.load(ledger.path).images == 2
    no_key_anywhere(repr(result), str(result), ledger.path.read_text())
    assert not any("authorization" in r.headers for r in store.seen)


@pytest.mark.parametrize("bad", [0, 1, 2])
async def test_the_failed_image_can_be_any_of_them(ledger, bad):
    store = Store(**{f"img{bad}": [XML_403]})
    result = await client_for([answer(3)], store, ledger).generate("x", n=3)
    assert [im.index for im in result.images] == [i for i in range(3) if i != bad]
    assert [m.index for m in result.missing] == [bad] and result.missing[0].url == url(bad)
    assert f"image {bad + 1}: the signed URL has expired" in str(result)


async def test_two_of_four_missing_for_different_reasons(ledger):
    store = Store(img1=[httpx.Response(404, text="NoSuchKey")], img3=[httpx.Response(200, content=b"not an image")])
    result = await client_for([answer(4)], store, ledger).generate("x", n=4)
    assert [im.index for im in result.images] == [0, 2]
    assert [(m.index, m.status) for m in result.missing] == [(1, 404), (3, None)]
    assert "2 of 4 images delivered; image 2: the file host answered HTTP 404; image 4: unreadable image" \
        in str(result)
    assert last(ledger)["images"] == 2 and last(ledger)["images_billed"] == 4


@pytest.mark.parametrize("n", [1, 3])
async def test_nothing_delivered_raises_one_download_error_carrying_every_url_and_the_result(ledger, n):
    store = Store(**{f"img{i}": [XML_403] for i in range(n)})
    client = client_for([answer(n)], store, ledger)
    with pytest.raises(DownloadError) as info:
        await client.generate("x", n=n)
    err = info.value
    assert err.urls == [url(i) for i in range(n)]
    assert [m.index for m in err.missing] == list(range(n)) and err.status == 403
    assert isinstance(err.result, GenerationResult) and err.result.images == []
    assert err.result.credit == CREDIT and err.result.tracing_id == err.tracing_id
    text = str(err)
    assert "expired" in text and "charged" in text and "error.urls" in text
    if n > 1:
        assert f"none of the {n} images could be delivered" in text and "image 3:" in text
    rec = last(ledger)
    assert rec["credit"] == CREDIT and rec["images"] == 0 and rec["images_billed"] == n
    assert rec["urls"] == err.urls and rec["error"].startswith("download failed: 0 of")
    no_key_anywhere(text, repr(err), ledger.path.read_text())


async def test_nothing_delivered_for_mixed_reasons_has_no_single_status(ledger):
    store = Store(img0=[XML_403], img1=[httpx.Response(200, content=b"junk")])
    with pytest.raises(DownloadError) as info:
        await client_for([answer(2)], store, ledger).generate("x", n=2)
    assert info.value.status is None and [m.status for m in info.value.missing] == [403, None]


async def test_the_ledger_knows_the_urls_before_any_download_finishes(ledger):
    seen = {}

    def slow(request):
        seen["record"] = last(ledger)
        return httpx.Response(200, content=png(0))

    store = Store(img0=[slow])
    await client_for([answer(1)], store, ledger).generate("x")
    assert seen["record"]["urls"] == [url(0)] and seen["record"]["images"] == 0
    assert seen["record"]["images_billed"] == 1 and seen["record"]["credit"] == CREDIT
    assert last(ledger)["images"] == 1 and "missing" not in last(ledger) and last(ledger)["error"] is None


async def test_generate_many_keeps_a_partial_result_in_its_slot(ledger):
    store = Store(img1=[httpx.Response(403)])
    client = client_for([answer(2)], store, ledger)
    results = await client.generate_many(["a", "b"], n=2)
    assert all(isinstance(r, GenerationResult) for r in results)
    assert [len(r.images) for r in results] == [1, 1] and all(r.missing[0].index == 1 for r in results)
    assert Ledger.load(ledger.path).images == 2 and ledger.total_credits == 2 * CREDIT


# ---------------------------------------------------------------- retrying the file host

def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
@pytest.mark.parametrize("retry_after, low, high", [
    ("7", 7.0, 7.0),
    ("0", 0.0, 0.0),
    ("http-date+20", 18.0, 20.0),     # an HTTP date has 1 s resolution
    ("3600", 60.0, 60.0),             # capped like the API path (config.MAX_RETRY_AFTER)
    ("http-date-30", 0.0, 0.0),       # a date in the past: at once
])
async def test_the_file_host_throttling_is_retried_honouring_retry_after(ledger, status, retry_after, low, high):
    value = http_date(float(retry_after.split("date")[1])) if "date" in retry_after else retry_after
    store = Store(img1=[httpx.Response(status, headers={"Retry-After": value}, text="SlowDown"),
                       lambda r: httpx.Response(200, content=png(1))])
    client = client_for([answer(2)], store, ledger)
    result = await client.generate("x", n=2)
    assert result.complete and [im.data for im in result.images] == [png(0), png(1)]
    assert store.hits("img1") == 2
    (waited,) = client.fake_time.sleeps
    assert low <= waited <= high


@pytest.mark.parametrize("status", [429, 503, 500])
async def test_the_file_host_throttling_without_retry_after_backs_off(ledger, status):
    store = Store(img0=[httpx.Response(status), httpx.Response(status, headers={"Retry-After": "soon"}),
                       lambda r: httpx.Response(200, content=png(0))])
    client = client_for([answer(1)], store, ledger)
    result = await client.generate("x")
    assert result.complete and store.hits("img0") == 3
    first, second = client.fake_time.sleeps
    assert config.INITIAL_RETRY_DELAY / 2 <= first <= config.INITIAL_RETRY_DELAY
    assert config.INITIAL_RETRY_DELAY <= second <= 2 * config.INITIAL_RETRY_DELAY  # exponential, jittered


async def test_throttling_past_the_retry_budget_is_a_missing_image_not_a_lost_call(ledger):
    store = Store(img1=[httpx.Response(429, headers={"Retry-After": "2"}, text="SlowDown")])
    client = client_for([answer(2)], store, ledger)
    result = await client.generate("x", n=2)
    assert store.hits("img1") == 1 + config.DEFAULT_MAX_RETRIES
    assert client.fake_time.sleeps == [2.0] * config.DEFAULT_MAX_RETRIES
    assert result.missing[0].status == 429 and "HTTP 429, 3 attempts" in result.missing[0].reason
    assert len(result.images) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_a_final_status_is_not_retried(ledger, status):
    store = Store(img0=[httpx.Response(status, headers={"Retry-After": "1"})])
    client = client_for([answer(1)], store, ledger)
    with pytest.raises(DownloadError):
        await client.generate("x")
    assert store.hits("img0") == 1 and client.fake_time.sleeps == []


# ------------------------------------------------------------ data: URLs, relative URLs, base64

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


INLINE = {
    "data url base64": lambda d: {"url": "data:image/png;base64," + b64(d)},
    "data url base64, wrapped lines": lambda d: {"url": "data:image/png;base64," + "\n".join(
        b64(d)[i:i + 76] for i in range(0, len(b64(d)), 76))},
    "data url base64, url-safe, no padding": lambda d: {
        "url": "data:image/png;base64," + base64.urlsafe_b64encode(d).decode().rstrip("=")},
    "data url, upper-case scheme": lambda d: {"url": "DATA:image/png;BASE64," + b64(d)},
    "data url percent-encoded": lambda d: {"url": "data:image/png," + quote_from_bytes(d)},
    "data url, no media type": lambda d: {"url": "data:;base64," + b64(d)},
    "data url as a bare string": lambda d: "data:image/png;base64," + b64(d),
    "b64_json": lambda d: {"b64_json": b64(d)},
    "b64_json holding a data url": lambda d: {"b64_json": "data:image/png;base64," + b64(d)},
    "output.urls data url": None,  # below
}


@pytest.mark.parametrize("shape", [k for k in INLINE if INLINE[k] is not None])
async def test_inline_images_are_decoded_not_downloaded(ledger, shape):
    store = Store()
    data = [INLINE[shape](png(0)), {"url": url(1)}]
    result = await client_for([answer(data=data)], store, ledger).generate("x", n=2)
    assert [im.data for im in result.images] == [png(0), png(1)] and result.complete
    assert [r.url.path for r in store.seen] == ["/img1.png"]  # only the real URL was fetched
    assert result.images[0].url is None  # the payload is not kept twice
    rec = last(ledger)
    assert rec["urls"] == [url(1)] and len(ledger.path.read_text()) < 20_000


async def test_output_urls_may_hold_a_data_url(ledger):
    reply = {"created": 1, "credit": 5, "output": {"urls": ["data:image/png;base64," + b64(png(0))]}}
    result = await client_for([reply], Store(), ledger).generate("x")
    assert result.images[0].data == png(0)


BAD_INLINE = {
    "bad base64 in a data url": ({"url": "data:image/png;base64,!!!not*base64!!!"}, "cannot be decoded"),
    "data url without a comma": ({"url": "data:image/png;base64"}, "cannot be decoded"),
    "truncated base64 (1 char too many)": ({"url": "data:image/png;base64,QUJDR"}, "cannot be decoded"),
    "bad b64_json": ({"b64_json": "%%%% not base64"}, "b64_json) is not valid base64"),
    "b64_json of non-image bytes": ({"b64_json": b64(b"hello world")}, "unreadable image"),
    "percent data url of text": ({"url": "data:text/plain,hello"}, "unreadable image"),
    "ftp url": ({"url": "ftp://files.test/img.png"}, "not http(s) (ftp)"),
    "javascript url": ({"url": "javascript:alert(1)"}, "not http(s) (javascript)"),
    "malformed url": ({"url": "https://[::1/img.png"}, "malformed"),
    "url is a number": ({"url": 12345}, "no usable image URL (int)"),
}


@pytest.mark.parametrize("case", BAD_INLINE)
async def test_a_bad_inline_or_odd_url_is_a_missing_image_with_a_reason_not_a_crash(ledger, case):
    item, fragment = BAD_INLINE[case]
    store = Store()
    result = await client_for([answer(data=[{"url": url(0)}, item])], store, ledger).generate("x", n=2)
    assert [im.index for im in result.images] == [0]
    (m,) = result.missing
    assert m.index == 1 and fragment in m.reason
    assert [r.url.path for r in store.seen] == ["/img0.png"]  # nothing odd was fetched
    assert last(ledger)["images"] == 1 and last(ledger)["images_billed"] == 2


async def test_bad_b64_json_falls_back_to_its_url(ledger):
    store = Store()
    result = await client_for([answer(data=[{"b64_json": "***", "url": url(0)}])], store, ledger).generate("x")
    assert result.images[0].data == png(0) and store.hits("img0") == 1


async def test_bad_b64_json_whose_url_fails_too_keeps_the_url(ledger):
    store = Store(img1=[XML_403])
    data = [{"url": url(0)}, {"b64_json": "***", "url": url(1)}]
    result = await client_for([answer(data=data)], store, ledger).generate("x", n=2)
    assert result.missing[0].url == url(1) and last(ledger)["urls"] == [url(0), url(1)]


@pytest.mark.parametrize("relative, fetched", [
    ("/files/img0.png?sig=1", "https://shark.test/files/img0.png?sig=1"),       # against the API's origin
    ("files/img0.png", "https://shark.test/api/files/img0.png"),               # RFC 3986, like a browser
    ("//cdn.test/img0.png", "https://cdn.test/img0.png"),                      # scheme-relative
])
async def test_a_relative_url_is_resolved_against_the_api_and_fetched_without_the_key(ledger, relative, fetched):
    store = Store()
    result = await client_for([answer(data=[{"url": relative}])], store, ledger).generate("x")
    (req,) = store.seen
    assert str(req.url) == fetched and result.images[0].data == png(0)
    assert "authorization" not in req.headers and "x-api-key" not in req.headers and KEY not in str(req.url)
    assert result.images[0].url == fetched and last(ledger)["urls"] == [fetched]


async def test_a_url_carrying_the_key_is_never_fetched_nor_recorded(ledger):
    store = Store()
    bad = f"{FILES}/img1.png?token={KEY}"
    result = await client_for([answer(data=[{"url": url(0)}, {"url": bad}])], store, ledger).generate("x", n=2)
    assert store.hits("img1") == 0 and "contains the API key" in result.missing[0].reason
    no_key_anywhere(repr(result), str(result), result.missing, ledger.path.read_text())


# --------------------------------------------------------------- more or fewer than asked

async def test_more_images_than_asked_are_delivered_and_flagged(ledger):
    result = await client_for([answer(3)], Store(), ledger).generate("x", n=1)
    assert len(result.images) == 3 and result.complete
    assert result.notes == ["the gateway sent 3 images for n=1: all are delivered; the credit it reports "
                            "may cover all of them"]
    assert "sent 3 images for n=1" in str(result) and "sent 3 images for n=1" in result._repr_html_()
    rec = last(ledger)
    assert rec["params"]["n"] == 1 and rec["images"] == 3 and rec["images_billed"] == 3
    assert "sent 3 images for n=1" in rec["note"] and rec["credit"] == CREDIT


@pytest.mark.parametrize("n, sent", [(2, 3), (1, 4), (2, 4)])
async def test_every_surplus_count_is_flagged(ledger, n, sent):
    result = await client_for([answer(sent)], Store(), ledger).generate("x", n=n)
    assert len(result.images) == sent and f"sent {sent} images for n={n}" in last(ledger)["note"]


async def test_fewer_images_than_asked_are_flagged(ledger):
    result = await client_for([answer(2)], Store(), ledger).generate("x", n=3)
    assert len(result.images) == 2 and result.notes == ["the gateway sent 2 images for n=3"]
    assert last(ledger)["note"] == "the gateway sent 2 images for n=3"


async def test_entries_without_an_image_are_flagged_not_dropped_silently(ledger):
    data = [{"url": url(0)}, {}, {"revised_prompt": "a fox"}]
    result = await client_for([answer(data=data)], Store(), ledger).generate("x")
    assert len(result.images) == 1
    assert "the answer listed 2 entries without an image" in last(ledger)["note"]
    assert any("2 entries without an image" in n for n in result.notes)


async def test_a_normal_call_has_no_note(ledger):
    result = await client_for([answer(2)], Store(), ledger).generate("x", n=2)
    assert result.notes == [] and "note" not in last(ledger) and str(result) == repr(result)


# ---------------------------------------------------------------------- display of partial results

def partial_result(n=3, missing=(2,), fmt="PNG") -> GenerationResult:
    request = build_request("a fox", n=n, size="1024x1024", quality="low", output_format=fmt.lower())
    r = GenerationResult(images=[], credit=300.0, tracing_id="t-1", request=request)
    for i in range(n):
        if i in missing:
            r.missing.append(MissingImage(i, url(i), "the signed URL has expired or was refused (HTTP 403)", 403))
        else:
            r.images.append(GeneratedImage.from_bytes(png(i, fmt), url=url(i), index=i, result=r))
    return r


def test_the_gallery_shows_what_arrived_and_a_note_for_each_missing_image():
    g = Gallery(partial_result(3, missing=(1,)))
    html_text = g.to_html()
    assert html_text.count("<img ") == 2 and "#2 missing: the signed URL has expired" in html_text
    assert "#1 ·" in html_text and "#3 ·" in html_text  # numbered by their place in the answer
    assert "2 of 3 images delivered" in html_text
    assert "100 credit" in html_text  # each image's share: 300 / 3 billed, not / 2 delivered
    text = g.to_text()
    assert text.startswith("2 of 3 images") and "#2 missing:" in text and "#3 " in text


def test_the_gallery_of_a_complete_result_is_unchanged():
    text = Gallery(partial_result(2, missing=())).to_text()
    assert text.startswith("2 images") and "missing" not in text and "#1 " in text and "#2 " in text


def test_repr_str_and_html_of_a_partial_result():
    r = partial_result(3, missing=(2,))
    assert "2 of 3 images delivered (image 3: the signed URL has expired or was refused (HTTP 403))" in repr(r)
    assert "2 of 3 images delivered; image 3: the signed URL has expired or was refused (HTTP 403)" in str(r)
    assert "#3 missing: the signed URL has expired" in r._repr_html_()
    assert r._repr_html_() == Gallery(r, max_side=256, preview_format="auto", quality=75).to_html()  # one renderer


# ------------------------------------------------------------------------------------- saving

def test_a_file_name_for_several_images_is_numbered(tmp_path):
    r = partial_result(2, missing=())
    paths = r.save(tmp_path / "fox.png")
    assert [p.name for p in paths] == ["fox-1.png", "fox-2.png"]
    assert [Image.open(p).size for p in paths] == [(32, 24), (33, 24)]
    assert read_metadata(paths[1])["image_index"] == "1"


def test_a_file_name_for_one_image_is_used_as_is_and_never_replaced(tmp_path):
    r = partial_result(1, missing=())
    (p,) = r.save(tmp_path / "fox.png")
    assert p == tmp_path / "fox.png"
    first = p.read_bytes()
    (p2,) = r.save(tmp_path / "fox.png")
    assert p2.name == "fox-2.png" and p.read_bytes() == first
    (p3,) = r.save(tmp_path / "fox.png", overwrite=True)
    assert p3 == p and sorted(f.name for f in tmp_path.iterdir()) == ["fox-2.png", "fox.png"]


def test_saving_twice_to_a_file_name_or_a_folder_never_overwrites(tmp_path):
    r = partial_result(2, missing=())
    a = r.save(tmp_path / "fox.png")
    b = r.save(tmp_path / "fox.png")
    assert [p.name for p in b] == ["fox-1-2.png", "fox-2-2.png"]
    c = r.save(tmp_path / "out")
    d = r.save(tmp_path / "out")
    assert [p.name for p in c] == ["a-fox-1.png", "a-fox-2.png"]
    assert [p.name for p in d] == ["a-fox-1-2.png", "a-fox-2-2.png"]
    assert len({*a, *b, *c, *d}) == 8 and all(p.exists() for p in (*a, *b, *c, *d))
    assert r.saved == [*a, *b, *c, *d]


def test_a_file_the_user_already_has_is_never_replaced(tmp_path):
    mine = tmp_path / "fox-1.png"
    mine.write_bytes(b"my own file")
    paths = partial_result(2, missing=()).save(tmp_path / "fox.png")
    assert mine.read_bytes() == b"my own file"
    assert [p.name for p in paths] == ["fox-1-2.png", "fox-2.png"]


def test_a_partial_result_keeps_the_numbers_of_the_answer(tmp_path):
    r = partial_result(3, missing=(1,))
    assert [p.name for p in r.save(tmp_path / "fox.png")] == ["fox-1.png", "fox-3.png"]
    assert [p.name for p in r.save(tmp_path / "dir")] == ["a-fox-1.png", "a-fox-3.png"]


@pytest.mark.parametrize("name, fmt, ok", [
    ("fox.jpg", "PNG", False),       # PNG bytes are never written under .jpg (nor converted)
    ("fox.webp", "PNG", False),
    ("fox.png", "JPEG", False),
    ("fox.PNG", "PNG", True),        # the case of the suffix does not matter
    ("fox.jpeg", "JPEG", True),      # every usual JPEG suffix
    ("fox.jpg", "JPEG", True),
])
def test_the_suffix_must_match_the_bytes_and_nothing_is_written_otherwise(tmp_path, name, fmt, ok):
    r = partial_result(2, missing=(), fmt=fmt)
    if ok:
        paths = r.save(tmp_path / name)
        stem, suffix = name.rsplit(".", 1)
        assert [p.name for p in paths] == [f"{stem}-1.{suffix}", f"{stem}-2.{suffix}"]
        assert [p.read_bytes()[:4] for p in paths][0] == r[0].data[:4]  # bytes as served
    else:
        with pytest.raises(ValidationError, match=r"path=.*expected a file name ending in"):
            r.save(tmp_path / name)
        assert list(tmp_path.iterdir()) == []  # checked before any file is written


def test_an_existing_folder_with_a_dot_is_a_folder(tmp_path):
    folder = tmp_path / "shots.v2"
    folder.mkdir()
    paths = partial_result(2, missing=()).save(folder)
    assert [p.parent for p in paths] == [folder, folder]


def test_a_single_image_saved_to_a_file_name_never_replaces_it(tmp_path):
    r = partial_result(2, missing=())
    p1 = r[0].save(tmp_path / "pick.png")
    p2 = r[1].save(tmp_path / "pick.png")
    assert (p1.name, p2.name) == ("pick.png", "pick-2.png")
    assert Image.open(p1).size == (32, 24) and Image.open(p2).size == (33, 24)


async def test_a_partial_call_end_to_end_saves_what_arrived(ledger, tmp_path):
    store = Store(img0=[XML_403])
    result = await client_for([answer(3)], store, ledger).generate("a fox", n=3)
    paths = result.save(tmp_path / "fox.png")
    assert [p.name for p in paths] == ["fox-2.png", "fox-3.png"]
    assert Path(paths[0]).read_bytes() != b"" and result.missing[0].url == url(0)


# ----------------------------------------------------------------------- the studio and the CLI

async def test_the_studio_shows_a_partial_result_and_says_what_is_missing(ledger, tmp_path):
    from shark_nb.simulator import Simulator
    from shark_nb.widget import studio

    sim = Simulator(latency=0.05)
    sim.inject("download", "status", status=403, message="Request has expired")
    client = AsyncShark(simulator=sim, ledger=ledger, poll_interval=0.05, quiet=True)
    st = studio(client, save_folder=str(tmp_path / "out"))
    try:
        st.prompt.value, st.n.value, st.quality.value = "two foxes", 2, "low"
        st.generate_button.click()
        await st.wait()
        (result,) = st.results
        assert len(result.images) == 1 and len(result.missing) == 1
        assert len(st.gallery.children) == 1
        assert "1 of 2 images delivered" in st.status.value and "HTTP 403" in st.status.value
        assert "2 images" not in st.ledger_strip.value and "1 image" in st.ledger_strip.value
    finally:
        st.close()
        await client.aclose()


def test_the_cli_saves_what_arrived_and_prints_the_missing_url(tmp_path, monkeypatch, capsys):
    from shark_nb import __main__ as cli
    from shark_nb import client as client_mod

    store = Store(img1=[XML_403])

    class FakeShark(client_mod.Shark):
        def __init__(self):
            super().__init__(api_key=KEY, base_url=API, ledger=Ledger(tmp_path / "l.jsonl"),
                             transport=httpx.MockTransport(lambda r: httpx.Response(200, json=answer(2))),
                             download_transport=httpx.MockTransport(store))

    monkeypatch.setattr("shark_nb.Shark", FakeShark)
    assert cli.main(["a fox", "-n", "2", "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "a-fox-1.png" in out and "a-fox-2.png" not in out
    assert "1 of 2 images delivered; image 2: the signed URL has expired" in err and url(1) in err
    assert KEY not in out + err
