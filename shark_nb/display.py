"""The gallery: how a generation shows in a notebook — compact previews, full files on disk.

:class:`Gallery` is a rich display object (``IPython.display.display(Gallery(...))``). Its
mimebundle is small HTML plus a ``text/plain`` fallback:

* each image as an inline preview, at most ``max_side`` px on its long side, re-encoded as WebP
  (default) or JPEG, in an ``<img src="data:image/webp;base64,...">``; with ``full=True`` the
  image is embedded as served (full resolution — the notebook file grows by the image's size);
* under each, a caption: size, format, its share of the call's credit, and a link to the
  full-resolution file saved on disk (relative to the kernel's working directory, which is the
  notebook's folder, so JupyterLab opens it in a tab);
* a footer: the call's credit and its dollar value (or "credit unknown" with the estimate),
  tokens, latency and tracing id when the result has them, the session total from the ledger,
  and an "offline simulator" badge when the simulator answered.

It is THE gallery renderer: the magic displays it, and ``GenerationResult._repr_html_`` is
``Gallery(result, max_side=256, preview_format="auto")`` (thumbnails: JPEG, or PNG where the
image has transparent pixels). Numbers and money are written by :mod:`shark_nb.text`.

It only duck-types the result (``.images`` with ``.data`` / ``.format`` / ``.size``, ``.credit``,
``.offline``, ``.prompt``; optionally ``.model``, ``.usage``, ``.latency``, ``.tracing_id``,
``.estimate_credit``, ``.missing``, ``.saved``), so anything can render the same gallery. The
styles used are all on JupyterLab's HTML sanitizer allow-list, so the output looks the same in an
untrusted notebook; ``<img src="data:...">`` survives sanitizing (``src`` is not scheme-checked).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from . import config, text

__all__ = ["Gallery", "PREVIEW_FORMATS", "preview_data_url", "file_link", "fmt_credit", "human_bytes"]

#: Preview encodings every current Jupyter front end renders in an ``<img>``.
PREVIEW_FORMATS = ("webp", "jpeg")
_MIME = {"webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
#: Display width of a preview, by how many images the gallery holds, so that 2 sit side by side
#: and 3-4 fit a row of a normal-width notebook (the preview itself is sharper, for zooming and
#: high-DPI screens).
_TILE_PX = {1: 640, 2: 420}
_TILE_PX_MANY = 300
_BADGE = ('<span style="background:#fde68a;color:#7c2d12;border-radius:4px;padding:0 5px;'
          'font-size:11px;white-space:nowrap">offline simulator</span>')


def fmt_credit(credit: float | None, *, usd: bool = True) -> str:
    """``1,234.5 credit ($0.12)`` (:func:`shark_nb.text.money`), without the dollars when
    ``usd=False``; ``unknown`` when not known. Kept for the modules that import it."""
    return text.money(credit) if usd else text.credit(credit)


def preview_data_url(image: Any, *, max_side: int = config.PREVIEW_MAX_SIDE, format: str = config.PREVIEW_FORMAT,
                     quality: int = config.PREVIEW_QUALITY) -> tuple[str, int, tuple[int, int]]:
    """(``data:`` URL, bytes embedded, display size) for one image's preview. ValueError if the
    image cannot be decoded. ``format="auto"``: JPEG, or a PNG (at half the side) when the image
    has transparent pixels, which JPEG would lose."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h, 1))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if format == "auto":
        if hasattr(image, "_display"):
            mime, data = image._display(max_side, quality=quality)
        else:
            from .images import preview_for_display

            mime, data = preview_for_display(image.data, max_side=max_side, quality=quality,
                                             png_max_side=max(64, max_side // 2))
        return _data_url(mime, data), len(data), size
    if hasattr(image, "preview"):
        data = image.preview(max_side=max_side, format=format, quality=quality)
    else:
        from .images import make_preview

        data = make_preview(image.data, max_side=max_side, format=format, quality=quality)
    return _data_url(_MIME.get(format, "image/webp"), data), len(data), size


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_link(path: str | os.PathLike, base: str | os.PathLike | None = None) -> tuple[str, str]:
    """(href, shown text) for a saved file: relative to ``base`` (the kernel's working
    directory by default) so the notebook front end resolves it beside the notebook."""
    path = Path(path)
    base = Path(base) if base is not None else Path.cwd()
    try:
        rel = Path(os.path.relpath(path.resolve(), base.resolve()))
    except ValueError:  # another drive on Windows
        return path.resolve().as_uri(), str(path)
    shown = rel.as_posix()
    return quote(shown), shown


def human_bytes(n: int) -> str:
    """``812 B``, ``95 KB``, ``2.0 MB`` (:func:`shark_nb.text.bytes_`). Kept for the modules that import it."""
    return text.bytes_(n)


class Gallery:
    """A generation result as a compact gallery (see the module docstring).

    ``paths`` are the saved files, one per image (``None`` for one not saved); by default the
    result's ``saved`` list. ``ledger`` adds the session total to the footer. ``notes`` are extra
    lines (escaped) shown under the footer, e.g. a save failure. Previews are computed once,
    when the object is first rendered (or read from the images' cache, where the preview pool
    already made them).

    A *live* gallery, while a call's images are still arriving: ``images`` (those arrived, any
    order) and ``pending`` (how many are still coming: a placeholder each, captions say the files
    are being saved). The magic shows it through ``display_id`` and replaces it with the final one.
    """

    def __init__(
        self,
        result: Any,
        *,
        paths: Sequence[str | os.PathLike | None] | None = None,
        ledger: Any = None,
        max_side: int = config.PREVIEW_MAX_SIDE,
        preview_format: str = config.PREVIEW_FORMAT,
        full: bool = False,
        quality: int = config.PREVIEW_QUALITY,
        base: str | os.PathLike | None = None,
        notes: Sequence[str] = (),
        images: Sequence[Any] | None = None,
        pending: int | None = None,
    ) -> None:
        if preview_format not in (*PREVIEW_FORMATS, "auto"):
            raise ValueError(f"preview_format must be one of {(*PREVIEW_FORMATS, 'auto')}, not {preview_format!r}")
        self.result = result
        self.images = list(getattr(result, "images", result)) if images is None else \
            sorted(images, key=lambda im: getattr(im, "index", 0))
        self.pending = pending
        if paths is None:
            saved = list(getattr(result, "saved", []) or [])
            paths = saved[-len(self.images):] if len(saved) >= len(self.images) else [None] * len(self.images)
        self.paths = [Path(p) if p is not None else None for p in paths]
        self.paths += [None] * (len(self.images) - len(self.paths))
        self.ledger = ledger
        self.max_side = max_side
        self.preview_format = preview_format
        self.full = full
        self.quality = quality
        self.base = Path(base) if base is not None else Path.cwd()
        # images the call paid for that did not arrive, and the result's own notes, are shown too
        self.missing = list(getattr(result, "missing", None) or [])
        result_notes = result._notes() if hasattr(result, "_notes") else []
        self.notes = list(result_notes) + [n for n in notes if n not in result_notes]
        # the session total is read now: the gallery shows the state right after this call
        self._session = ledger.summary() if ledger is not None and hasattr(ledger, "summary") else None
        self._html: str | None = None
        #: bytes embedded for the images (the figure the notebook file grows by, before base64)
        self.embedded_bytes = 0

    # -- pieces --------------------------------------------------------------------------
    def _credit_share(self) -> float | None:
        credit = getattr(self.result, "credit", None)
        n = len(self.images) + len(self.missing) + (self.pending or 0)  # the credit covers them all
        return None if credit is None or not n else credit / n

    def _number(self, i: int, image: Any) -> int:
        """An image's number: its place in the answer when some are missing (so "#3 missing"
        and "#2" do not clash), else its place in the gallery."""
        return getattr(image, "index", i) + 1 if self.missing or self.pending is not None else i + 1

    def _img_tag(self, image: Any, alt: str) -> str:
        esc = html.escape
        w, h = image.size
        if self.full:
            fmt = str(getattr(image, "format", "png"))
            url, nbytes, shown = _data_url(_MIME.get(fmt, "image/png"), image.data), len(image.data), (w, h)
        else:
            try:
                url, nbytes, shown = preview_data_url(image, max_side=self.max_side,
                                                      format=self.preview_format, quality=self.quality)
            except ValueError as exc:
                return (f'<div style="padding:1em;border:1px dashed #999;color:#666">'
                        f'no preview: {esc(str(exc))}</div>')
        self.embedded_bytes += nbytes
        tile = min(shown[0], _TILE_PX.get(len(self.images), _TILE_PX_MANY))
        return (f'<img src="{url}" alt="{esc(alt)}" title="{esc(alt)}" width="{tile}" '
                f'style="max-width:100%;height:auto;display:block">')

    def _figure(self, i: int, image: Any, share: float | None) -> str:
        esc = html.escape
        w, h = image.size
        fmt = str(getattr(image, "format", "?"))
        alt = text.shorten(getattr(self.result, "prompt", "") or f"image {i + 1}", 300)
        bits = [f"{w}×{h}", fmt.upper(), text.bytes_(len(image.data)),
                text.credit(share) if share is not None else "credit unknown"]
        caption = esc(" · ".join(bits))
        path = self.paths[i]
        if path is not None:
            href, shown = file_link(path, self.base)
            caption += (f'<br><a href="{esc(href)}" target="_blank" title="full-resolution file">'
                        f"{esc(shown)}</a>")
        else:
            caption += "<br><i>not saved</i>" if self.pending is None else "<br><i>saving…</i>"
        if len(self.images) + len(self.missing) + (self.pending or 0) > 1:
            caption = f"#{self._number(i, image)} · " + caption
        return (f'<figure style="margin:0 8px 8px 0">{self._img_tag(image, alt)}'
                f'<figcaption style="font-size:11px;color:#555;line-height:1.4">{caption}</figcaption>'
                "</figure>")

    def _footer_parts(self) -> list[str]:
        """``this call: 412.5 credit ($0.04)`` (or ``credit unknown (estimate ...)``), tokens,
        latency, tracing id, the session total: what the result and the ledger know."""
        r = self.result
        credit = getattr(r, "credit", None)
        if credit is not None:
            parts = [f"this call: {text.money(credit)}"]
        else:
            est = getattr(r, "estimate_credit", None)
            est = None if callable(est) else est
            parts = ["this call: credit unknown" + (f" (estimate {text.credit(est)})" if est is not None else "")]
        if getattr(r, "usage", None) is not None:
            parts.append(f"tokens {r.usage}")
        if getattr(r, "latency", None):
            parts.append(text.duration(r.latency))
        if getattr(r, "tracing_id", None):
            parts.append(f"tracing id {r.tracing_id}")
        if self._session is not None:
            parts.append(f"session: {self._session}")
        if self.pending is not None:
            parts.insert(0, f"{len(self.images)} of {len(self.images) + self.pending} images here; "
                            "the others are arriving")
        return parts

    def _footer(self) -> str:
        html_text = " · ".join(html.escape(p) for p in self._footer_parts())
        if getattr(self.result, "offline", False):
            html_text += " " + _BADGE
        return html_text

    # -- display protocol ----------------------------------------------------------------
    def to_html(self) -> str:
        if self._html is None:
            esc = html.escape
            self.embedded_bytes = 0
            share = self._credit_share()
            figures = [self._figure(i, im, share) for i, im in enumerate(self.images)]
            figures += [f'<figure style="margin:0 8px 8px 0"><div style="padding:1em;border:1px dashed #c62828;'
                        f'color:#c62828;font-size:12px;max-width:{_TILE_PX_MANY}px">#{m.index + 1} missing: '
                        f'{esc(m.reason)}</div></figure>' for m in self.missing]
            arrived = {getattr(im, "index", i) for i, im in enumerate(self.images)}
            figures += [f'<figure style="margin:0 8px 8px 0"><div style="padding:1em;border:1px dashed #999;'
                        f'color:#666;font-size:12px;width:{_TILE_PX_MANY // 2}px">#{k + 1} arriving…</div></figure>'
                        for k in [k for k in range(len(self.images) + (self.pending or 0)) if k not in arrived]
                        [:self.pending or 0]]
            figures = figures or ['<div style="color:#666">no images</div>']
            prompt = getattr(self.result, "prompt", "")
            model = getattr(self.result, "model", "")
            line = " — ".join(x for x in (f"<b>{esc(model)}</b>" if model else "",
                                          esc(text.shorten(prompt, 300)) if prompt else "") if x)
            head = f'<div style="font-size:12px;margin-bottom:4px;color:#333">{line}</div>' if line else ""
            notes = "".join(f'<div style="font-size:12px;color:#c62828">{esc(n)}</div>' for n in self.notes)
            self._html = (
                '<div class="shark-nb-gallery">' + head
                + '<div style="display:flex;flex-wrap:wrap;align-items:flex-start">' + "".join(figures) + "</div>"
                + f'<div style="font-size:11px;color:#444">{self._footer()}</div>{notes}</div>'
            )
        return self._html

    def to_text(self) -> str:
        n = len(self.images)
        count = f"{n} of {n + len(self.missing)} images" if self.missing else f"{n} image{'s' if n != 1 else ''}"
        lines = [count + (f" for {text.shorten(getattr(self.result, 'prompt', ''), 60)!r}"
                                                      if getattr(self.result, "prompt", "") else "")]
        share = self._credit_share()
        for i, (im, path) in enumerate(zip(self.images, self.paths)):
            w, h = im.size
            where = str(path) if path is not None else "not saved"
            lines.append(f"  #{self._number(i, im)} {w}x{h} {str(getattr(im, 'format', '?')).upper()} "
                         f"{text.credit(share) if share is not None else 'credit unknown'} -> {where}")
        lines += [f"  #{m.index + 1} missing: {m.reason}" for m in self.missing]
        footer = " · ".join(self._footer_parts())
        if getattr(self.result, "offline", False):
            footer += " · offline simulator"
        lines.append(footer)
        lines.extend(self.notes)
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.to_html(), "text/plain": self.to_text()}

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return self.to_text()
