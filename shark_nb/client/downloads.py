"""Delivering a generation's images: the charge booked first, then every image downloaded in
parallel on a client that carries no key (or decoded when inline), each handed out as it
arrives; one that cannot be delivered is listed as missing and never costs its siblings."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import httpx

from .. import config, retry
from .._version import __version__ as _VERSION
from ..errors import APIConnectionError, DownloadError
from ..schemas import PRICE_BOOK
from ._answer import _count_notes, _credit, _credit_report, _image_items
from ._http import _Call

if TYPE_CHECKING:
    from ..results import GeneratedImage, GenerationResult

T = TypeVar("T")
_log = logging.getLogger("shark_nb")
#: Largest Content-Length read into a preallocated buffer (above: httpx's own reading).
_PREALLOC_MAX = 256 * 1024 * 1024


class _DownloadMixin:
    """Image delivery for :class:`AsyncShark`: the key-less download client, retries that wait on
    ``self._sleep``, and the ledger lines (``_entry``/``_record``) that book the charge first."""

    def _dl(self) -> httpx.AsyncClient:
        # A separate client with no credentials at all: the signed URLs live on another host.
        if self._downloads is None:
            self._downloads = httpx.AsyncClient(
                timeout=httpx.Timeout(config.DOWNLOAD_TIMEOUT, connect=config.CONNECT_TIMEOUT),
                transport=self._download_transport, follow_redirects=True,
                headers={"User-Agent": f"shark_nb/{_VERSION}"},
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
        return self._downloads

    async def _finish(self, answer: dict, call: _Call,
                      on_image: Callable[["GeneratedImage"], Any] | None = None) -> "GenerationResult":
        """Book the charge, then deliver every image that arrives. An image that cannot be
        delivered is listed in ``result.missing`` (with its URL and why) and never costs its
        siblings; only a call where none arrived raises :class:`DownloadError`. Each image is
        handed to ``on_image`` as soon as its bytes are complete (see :meth:`generate`)."""
        from ..results import GeneratedImage, GenerationResult, MissingImage, Usage

        items = _image_items(answer)
        credit = _credit(answer)
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        task_id = answer.get("id") if call.request.is_task else None
        notes = _count_notes(answer, items, call.request.n)
        shown = [self._shown_url(it.get("url")) for it in items]
        base = dict(status=answer.get("_status"), task_id=task_id, credit=credit, usage=usage,
                    images_billed=len(items), urls=[u for u in shown if u and not u.startswith("data:")],
                    **({"note": "; ".join(notes)} if notes else {}), **_credit_report(answer))
        # The charge and every image URL are on disk before anything else can fail.
        if not items:
            self._record(self._entry(call, outcome="ok", error="the answer held no images", **base))
            raise APIConnectionError("the gateway answered but sent no images; any charge is in the ledger",
                                     status=answer.get("_status"), tracing_id=call.tracing_id)
        self._record(self._entry(call, outcome="ok", images=0, **base))
        # The result exists before the downloads, so each image can be handed out as it arrives.
        result = GenerationResult(
            images=[], usage=Usage.from_json(usage), credit=credit, tracing_id=call.tracing_id,
            request=call.request, model=call.request.model, task_id=task_id, created=answer.get("created"),
            offline=self.offline, call_id=call.call_id, notes=notes, expected=len(items),
        )

        def arrived(i: int, data: "bytes | _Missing") -> "GeneratedImage | _Missing":
            if isinstance(data, _Missing):
                return data
            url = shown[i]
            try:
                image = GeneratedImage.from_bytes(
                    data, url=None if url and url.startswith("data:") else url, index=i, result=result)
            except ValueError as exc:  # one unreadable image is missing on its own
                return _Missing(f"unreadable image: the bytes are not a readable image ({exc})")
            if on_image is not None:
                try:
                    on_image(image)
                except Exception as exc:  # noqa: BLE001 - a display hook never costs a paid image
                    why = f"on_image failed for image {i + 1} ({type(exc).__name__}: {self._redact(str(exc))[:120]})"
                    _log.warning("shark_nb: %s", why)
                    result.notes.append(why + "; the image is in the result")
            return image

        got = await self._download_all(items, call.tracing_id, arrived)
        PRICE_BOOK.record(call.request.model, call.request.settings, credit, len(items))
        result.latency = time.monotonic() - call.started
        for i, (item, url) in enumerate(zip(got, shown)):
            if isinstance(item, _Missing):
                result.missing.append(MissingImage(i, url, item.reason, item.status))
            else:
                result.images.append(item)
        missing = [{"index": m.index, "url": m.url, "reason": m.reason, "status": m.status} for m in result.missing]
        error = None
        if result.missing:
            error = ("download failed: " if not result.images else "partial download: ") + result._delivery_line()
        self._record(self._entry(call, outcome="ok", images=len(result.images), error=error,
                                 **({"missing": missing} if missing else {}), **base))
        if not result.images:
            raise self._nothing_delivered(result)
        result.ledger = self.ledger  # result.save records where the files went (the history links them)
        from ..archive import schedule_thumbnails

        schedule_thumbnails(result)  # the history's thumbnails, on a worker thread; never raises
        return result

    def _nothing_delivered(self, result: "GenerationResult") -> DownloadError:
        missing = result.missing
        if len(missing) == 1:
            message = f"the image could not be delivered: {missing[0].reason}"
        else:
            message = f"none of the {len(missing)} images could be delivered: " + "; ".join(map(str, missing))
        urls = [m.url for m in missing if m.url and not m.url.startswith("data:")]
        message += "; the call was charged and is in the ledger"
        if urls:
            message += " with the image URLs (also in error.urls; fetch them while they live)"
        statuses = {m.status for m in missing}
        error = DownloadError(message, status=statuses.pop() if len(statuses) == 1 else None,
                              tracing_id=result.tracing_id)
        error.urls, error.missing, error.result = urls, list(missing), result
        return error

    def _shown_url(self, url: Any) -> str | None:
        """An image URL as kept in the result, the error and the ledger: absolute, without the key,
        and a ``data:`` URL shortened to its header."""
        if not isinstance(url, str) or not url.strip():
            return None
        url = url.strip()
        if url[:5].lower() == "data:":
            head = url.partition(",")[0]
            return f"data:{head[5:60]},… ({len(url):,} characters)"  # "data:" in lower case, as tested below
        try:
            url = str(httpx.URL(self.base_url).join(url))
        except (httpx.InvalidURL, ValueError, TypeError):
            pass
        return self._redact(url)

    async def _download_all(self, items: list[dict], tracing_id: str,
                            arrived: Callable[[int, "bytes | _Missing"], T]) -> list[T]:
        """``arrived(index, bytes or why it is missing)`` for every image as soon as its download
        ends (arrival order); their answers in the answer's order. One failure never costs the others."""
        sem = asyncio.Semaphore(config.DOWNLOAD_CONCURRENCY)

        async def one(i: int, item: dict) -> T:
            try:
                data: "bytes | _Missing" = await self._image_bytes(item, tracing_id, sem)
            except _Missing as exc:
                data = exc
            except Exception as exc:  # noqa: BLE001 - an unforeseen failure is this image's, not the call's
                data = _Missing(f"unexpected error ({type(exc).__name__}: {self._redact(str(exc))[:120]})")
            return arrived(i, data)

        return list(await asyncio.gather(*(one(i, it) for i, it in enumerate(items))))

    async def _image_bytes(self, item: dict, tracing_id: str, sem: asyncio.Semaphore) -> bytes:
        """One image: inline (``b64_json`` or a ``data:`` URL) decoded; a URL (absolute, or relative
        to the API's base URL) downloaded on the key-less client. Raises _Missing with the reason."""
        from .. import images

        url, b64 = item.get("url"), item.get("b64_json")
        if b64:
            try:
                text = str(b64).strip()
                return images.decode_data_url(text)[1] if text[:5].lower() == "data:" else images.decode_base64(text)
            except ValueError:
                if not url:
                    raise _Missing("the inline image (b64_json) is not valid base64") from None
        if not isinstance(url, str) or not url.strip():
            raise _Missing(f"the answer gave no usable image URL ({type(url).__name__})")
        url = url.strip()
        if url[:5].lower() == "data:":
            try:
                return images.decode_data_url(url)[1]
            except ValueError as exc:
                raise _Missing(f"the data: URL cannot be decoded ({exc})") from None
        try:
            absolute = httpx.URL(self.base_url).join(url)  # a relative URL: against the API's base URL
        except (httpx.InvalidURL, ValueError, TypeError):
            raise _Missing("the image URL is malformed") from None
        if absolute.scheme not in ("http", "https") or not absolute.host:
            raise _Missing(f"the image URL is not http(s) ({absolute.scheme or 'no scheme'})")
        if self._key is not None and self._key.reveal() in str(absolute):
            raise _Missing("the image URL contains the API key; it was not fetched")
        async with sem:
            return await self._download(str(absolute), tracing_id)

    async def _fetch(self, url: str) -> tuple[httpx.Response, bytes]:
        """GET one URL on the key-less client. A 200 with a Content-Length is read into one buffer
        of that size: a large image is then not held twice while it downloads (httpx's list of
        chunks plus the joined bytes — with four parallel 2048x2048 PNGs, ~35 MB more at the peak)."""
        async with self._dl().stream("GET", url) as response:
            size = response.headers.get("content-length", "").strip()
            if (response.status_code != 200 or not size.isdigit() or not 0 < int(size) <= _PREALLOC_MAX
                    or response.headers.get("content-encoding", "identity").strip().lower() != "identity"):
                return response, await response.aread()
            buf = bytearray(int(size))
            pos = 0
            async for chunk in response.aiter_bytes():
                end = pos + len(chunk)
                if end > len(buf):
                    buf.extend(bytes(end - len(buf)))
                buf[pos:end] = chunk
                pos = end
            del buf[pos:]
            return response, bytes(buf)

    async def _download(self, url: str, tracing_id: str) -> bytes:
        """Fetch one signed URL, with no key, retrying transient failures: transport errors, a
        cut or empty body, 5xx and 429 (honouring ``Retry-After`` as the API path does).
        Raises _Missing with the reason."""
        attempt = 0
        while True:
            try:
                try:
                    # A whole-download deadline too: httpx's timeouts are per read, so a store that
                    # trickles a byte every few seconds would otherwise never time out.
                    response, data = await asyncio.wait_for(self._fetch(url), config.DOWNLOAD_TIMEOUT)
                except asyncio.TimeoutError:
                    raise httpx.ReadTimeout(f"no complete image within {config.DOWNLOAD_TIMEOUT:g} s") from None
            except httpx.RequestError as exc:  # also DecodingError and TooManyRedirects (a redirect loop)
                if retry.should_retry_exception(exc, idempotent=True, attempt=attempt, max_retries=self.max_retries):
                    await self._sleep(retry.backoff_delay(attempt, rng=self._rng))
                    attempt += 1
                    continue
                raise _Missing(f"the download failed ({type(exc).__name__}"
                               f"{f', {attempt + 1} attempts' if attempt else ''})") from None
            status = response.status_code
            if status == 200 and data and _image_looks_complete(data):
                return data
            if (status == 200 or status >= 500 or retry.should_retry_status(
                    status, attempt=attempt, max_retries=self.max_retries)) and attempt < self.max_retries:
                retry_after = retry.parse_retry_after(response.headers.get("retry-after"))
                await self._sleep(retry.backoff_delay(attempt, retry_after, rng=self._rng))
                attempt += 1
                continue
            tries = f", {attempt + 1} attempts" if attempt else ""
            why = (("the image arrived truncated" if data else "the file host sent an empty image") + tries
                   if status == 200 else
                   f"the signed URL has expired or was refused (HTTP {status})" if status in (401, 403)
                   else f"the file host answered HTTP {status}{' with an empty body' if not data else ''}{tries}")
            raise _Missing(why, status=None if status == 200 else status)


class _Missing(Exception):
    """Why one image of an answer could not be delivered (becomes a MissingImage)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def _image_looks_complete(data: bytes) -> bool:
    """A cheap structural check that an image was not cut short (a proxy or object store can send
    a truncated body with a matching Content-Length): PNG ends with IEND, JPEG with EOI, a WebP's
    RIFF size fits. Unknown formats pass; decoding is left to the result."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.endswith(b"IEND\xaeB`\x82")
    if data.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in data[-1024:]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return True
