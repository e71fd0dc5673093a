"""Deterministic image synthesis for the offline simulator.

Every generated image is a function of its :class:`RenderSpec` only: the same request gives the
same bytes, in every process. The picture is a small landscape (sky gradient, sun, ridge lines,
a few foreground shapes, fractal colour texture and photographic grain) so that file sizes behave
like real model output (a 1024x1024 PNG is about 1.5 MB), with the prompt printed on a translucent
band at the bottom, the image's index (``2/4``) and a subtle "offline simulator" mark in the
top-right corner.

Edits: when the request carried ``data:`` reference images, the first one (cover-fitted to the
output size) is blended into the scene; with a mask, the reference is kept where the mask is
opaque and only the transparent area is repainted — the published mask semantics.

Pillow and numpy are imported lazily (the first render pays for it), so importing
``shark_nb.simulator`` stays light.

Speed on a 2-core machine: about 0.1-0.15 s for a 1024x1024 PNG and about 0.5 s for 2048x2048
(PNG is written with ``compress_level=1``; WebP with ``method=0``).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["RenderSpec", "RenderCache", "render", "seed_for", "parse_size", "FORMAT_MIME"]

FORMAT_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

#: Grain strength (standard deviation, in 8-bit levels) by quality.
_GRAIN = {"low": 4.5, "medium": 6.0, "high": 7.5, "auto": 6.0}


def parse_size(size: str) -> tuple[int, int]:
    """``"1536x1024"`` or ``"1536*1024"`` (Seedream's spelling) -> ``(1536, 1024)``; ``auto`` is
    1024x1024."""
    if size == "auto":
        return 1024, 1024
    w, _, h = size.replace("*", "x").partition("x")
    return int(w), int(h)


def seed_for(
    *,
    model: str,
    prompt: str,
    size: str,
    quality: str,
    background: str,
    output_format: str,
    index: int,
    inputs: str = "",
    settings: str = "",
) -> int:
    """A 64-bit seed from everything that shapes an image (``inputs`` hashes reference images;
    ``settings`` is any other model setting, as canonical JSON — left out of the key when empty,
    so gpt-image-2's seeds are what they always were)."""
    parts = [model, prompt, size, quality, background, output_format, index, inputs]
    if settings:
        parts.append(settings)
    key = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class RenderSpec:
    """Everything needed to draw one image. ``seed`` is the cache key.

    ``size`` is the pixel size as ``"WxH"`` (any width and height; ``auto`` = 1024x1024), so every
    model's dimensions render; ``label`` (the model's short name) is printed in the top-left
    corner so a grid comparing models stays legible."""

    seed: int
    prompt: str
    size: str = "auto"
    output_format: str = "png"
    quality: str = "auto"
    background: str = "auto"
    index: int = 0
    n: int = 1
    model: str = "openai/gpt-image-2"
    #: Raw bytes of ``data:`` reference images (edits); http(s) references can't be fetched offline.
    references: tuple[bytes, ...] = ()
    mask: bytes | None = None
    label: str = ""

    @property
    def dimensions(self) -> tuple[int, int]:
        return parse_size(self.size)

    @property
    def mime(self) -> str:
        return FORMAT_MIME[self.output_format]

    @property
    def cache_key(self) -> tuple[int, str]:
        return (self.seed, self.output_format)


# ---------------------------------------------------------------------------------------------
# drawing


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h % 1.0, max(0.0, min(1.0, s)), max(0.0, min(1.0, v)))
    return int(r * 255), int(g * 255), int(b * 255)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(a[i] + (b[i] - a[i]) * t) for i in range(3))  # type: ignore[return-value]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow without FreeType sizing
        return ImageFont.load_default()


def _scene(spec: RenderSpec, rng) -> Any:
    """The landscape without grain or text, as an RGB PIL image at full size."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    W, H = spec.dimensions
    hue = float(rng.random())
    dusk = float(rng.random())
    sky_top = _hsv(hue + 0.55, 0.55 + 0.3 * dusk, 0.35 + 0.3 * rng.random())
    sky_low = _hsv(hue + 0.08, 0.35 + 0.3 * rng.random(), 0.85 + 0.15 * rng.random())
    horizon = 0.45 + 0.2 * float(rng.random())

    # Sky: vertical gradient drawn small, scaled up (smooth anyway).
    gh = 256
    y = np.linspace(0.0, 1.0, gh, dtype=np.float32)[:, None]
    t = np.clip(y / horizon, 0, 1) ** 1.3
    top = np.array(sky_top, np.float32)
    low = np.array(sky_low, np.float32)
    grad = (top * (1 - t) + low * t)[:, None, :]  # (gh, 1, 3)
    grad = np.repeat(grad, 4, axis=1)
    img = Image.fromarray(grad.astype(np.uint8), "RGB").resize((W, H), Image.BILINEAR)

    # Fractal colour texture (clouds, terrain detail): a few octaves of smooth noise.
    tex = np.zeros((H // 4, W // 4), np.float32)
    amp = 1.0
    for cells in (4, 9, 23, 61):
        small = rng.standard_normal((max(2, cells * H // W), cells)).astype(np.float32)
        layer = Image.fromarray(small, "F").resize((W // 4, H // 4), Image.BICUBIC)
        tex += np.asarray(layer) * amp
        amp *= 0.55
    tex_img = Image.fromarray(np.clip(tex * 18 + 128, 0, 255).astype(np.uint8), "L").resize((W, H), Image.BILINEAR)

    draw = ImageDraw.Draw(img)
    # Sun or moon with a soft glow.
    sx, sy = (0.15 + 0.7 * float(rng.random())) * W, (0.12 + 0.25 * float(rng.random())) * horizon * H * 2
    sr = (0.04 + 0.05 * float(rng.random())) * min(W, H)
    glow = Image.new("L", (W // 8, H // 8), 0)
    ImageDraw.Draw(glow).ellipse([(sx - sr * 3) / 8, (sy - sr * 3) / 8, (sx + sr * 3) / 8, (sy + sr * 3) / 8], fill=110)
    glow = glow.filter(ImageFilter.GaussianBlur(sr / 10)).resize((W, H), Image.BILINEAR)
    sun_col = _mix(sky_low, (255, 250, 225), 0.7)
    img = Image.composite(Image.new("RGB", (W, H), sun_col), img, glow)
    draw = ImageDraw.Draw(img)
    draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=sun_col)

    # Ridge lines, far to near: random walks, fading into the horizon colour.
    layers = 3 + int(rng.integers(0, 3))
    base_col = _hsv(hue + 0.3 + 0.2 * float(rng.random()), 0.45, 0.35)
    for k in range(layers):
        depth = (k + 1) / layers
        y0 = H * (horizon - 0.12 + 0.42 * depth * depth)
        steps = 24 + 12 * k
        walk = np.cumsum(rng.standard_normal(steps + 1)) * H * 0.018 * (1.3 - depth * 0.5)
        walk -= walk.mean()
        pts = [(W * i / steps, float(y0 + walk[i])) for i in range(steps + 1)]
        col = _mix(sky_low, base_col, 0.25 + 0.75 * depth)
        col = _mix(col, (0, 0, 0), 0.35 * depth)
        draw.polygon(pts + [(W, H), (0, H)], fill=col)

    # Foreground shapes: index-specific "objects" (trees, stones, towers).
    kinds = int(rng.integers(0, 3))
    count = 4 + int(rng.integers(0, 7))
    for _ in range(count):
        cx = float(rng.random()) * W
        cy = H * (0.72 + 0.26 * float(rng.random()))
        s = min(W, H) * (0.025 + 0.06 * float(rng.random()))
        col = _hsv(hue + 0.5 * float(rng.random()), 0.5 + 0.4 * float(rng.random()), 0.25 + 0.5 * float(rng.random()))
        shade = _mix(col, (0, 0, 0), 0.4)
        if kinds == 0:  # trees
            draw.rectangle([cx - s * 0.12, cy - s * 0.2, cx + s * 0.12, cy + s * 0.9], fill=shade)
            draw.polygon([(cx, cy - s * 2.2), (cx - s, cy + s * 0.1), (cx + s, cy + s * 0.1)], fill=col)
        elif kinds == 1:  # stones
            draw.ellipse([cx - s * 1.4, cy - s * 0.8, cx + s * 1.4, cy + s * 0.8], fill=shade)
            draw.ellipse([cx - s * 1.2, cy - s * 0.85, cx + s * 1.0, cy + s * 0.5], fill=col)
        else:  # towers
            draw.rectangle([cx - s * 0.5, cy - s * 3.0, cx + s * 0.5, cy + s], fill=col)
            draw.rectangle([cx, cy - s * 3.0, cx + s * 0.5, cy + s], fill=shade)
            for wy in range(3):
                wyy = cy - s * (2.5 - wy * 0.9)
                draw.rectangle([cx - s * 0.3, wyy, cx - s * 0.1, wyy + s * 0.3], fill=sun_col)

    # Texture modulates brightness (soft-light-ish): photo-like low-frequency detail.
    a = np.asarray(img, dtype=np.int16)
    t8 = np.asarray(tex_img, dtype=np.int16) - 128
    a = a + (t8[:, :, None] >> 1)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _cover(img, size):
    from PIL import Image

    W, H = size
    w, h = img.size
    scale = max(W / w, H / h)
    nw, nh = max(W, round(w * scale)), max(H, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - W) // 2, (nh - H) // 2
    return img.crop((left, top, left + W, top + H))


def _apply_references(img, spec: RenderSpec):
    """Blend the first reference image in; with a mask, repaint only its transparent area."""
    from PIL import Image, ImageFilter

    if not spec.references:
        return img
    try:
        ref = Image.open(io.BytesIO(spec.references[0]))
        ref = _cover(ref.convert("RGB"), img.size)
    except Exception:  # noqa: BLE001 - an unreadable reference is simply not used
        return img
    if spec.mask is not None:
        try:
            m = Image.open(io.BytesIO(spec.mask))
            alpha = m.convert("RGBA").getchannel("A").resize(img.size, Image.BILINEAR)
        except Exception:  # noqa: BLE001
            return Image.blend(ref, img, 0.5)
        # Opaque mask keeps the reference; transparent (alpha 0) is repainted.
        alpha = alpha.filter(ImageFilter.GaussianBlur(2))
        return Image.composite(ref, img, alpha)
    return Image.blend(ref, img, 0.45)


def _grain(img, rng, sigma: float):
    """Add colour photographic grain (approximately gaussian, per channel)."""
    import numpy as np
    from PIL import Image

    W, H = img.size
    # Sum of two uniform bytes is triangular (close enough to gaussian, and much cheaper than
    # normal()): values 0..510, mean 255, standard deviation about 104.
    raw = np.frombuffer(rng.bytes(2 * W * H * 3), np.uint8).reshape(2, H, W, 3)
    noise = raw[0].astype(np.int16) + raw[1]
    noise -= 255
    # Scale to the wanted sigma in 8-bit fixed point: noise * (sigma / 104).
    noise *= max(1, int(round(sigma * 16 / 104 * 16)))
    noise >>= 8
    a = np.asarray(img, dtype=np.int16) + noise
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _wrap(text: str, font, max_width: float, max_lines: int) -> list[str]:
    words = " ".join(text.split()).split(" ")
    lines: list[str] = []
    cur = ""
    for word in words:
        while font.getlength(word) > max_width and len(word) > 1:  # hard-break very long words
            cut = len(word)
            while cut > 1 and font.getlength(word[:cut]) > max_width:
                cut = max(1, int(cut * 0.8))
            if cur:
                lines.append(cur)
                cur = ""
            lines.append(word[:cut])
            word = word[cut:]
        trial = f"{cur} {word}" if cur else word
        if font.getlength(trial) <= max_width:
            cur = trial
        else:
            lines.append(cur)
            cur = word
        if len(lines) > max_lines:
            break
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + " …") > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + " …"
    return [ln for ln in lines if ln] or [""]


def _overlay_text(img, spec: RenderSpec):
    from PIL import Image, ImageDraw

    W, H = img.size
    fs = max(14, min(W, H) // 34)
    font = _font(fs)
    pad = fs // 2 + 4
    label = f"{spec.index + 1}/{spec.n}" if spec.n > 1 else ""
    label_w = font.getlength(label) + pad if label else 0
    lines = _wrap(spec.prompt, font, W - 2 * pad - label_w, max_lines=4)
    asc, desc = font.getmetrics()
    line_h = asc + desc + fs // 6
    band_h = line_h * len(lines) + 2 * pad
    top = H - band_h
    band = img.crop((0, top, W, H))
    band = Image.blend(band, Image.new("RGB", band.size, (8, 10, 16)), 0.55)
    img.paste(band, (0, top))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        y = top + pad + i * line_h
        draw.text((pad + 1, y + 1), line, font=font, fill=(0, 0, 0))
        draw.text((pad, y), line, font=font, fill=(245, 245, 240))
    if label:
        draw.text((W - pad - font.getlength(label), top + pad), label, font=font, fill=(255, 214, 120))

    # The subtle corner mark.
    ms = max(10, min(W, H) // 72)
    mfont = _font(ms)
    mark = "offline simulator"
    mw = int(mfont.getlength(mark)) + 2 * ms // 2 + 2
    mh = ms + ms // 2 + 4
    box = (W - mw - ms // 2, ms // 2, W - ms // 2, ms // 2 + mh)
    region = img.crop(box)
    marked = region.copy()
    ImageDraw.Draw(marked).text((ms // 2, 2), mark, font=mfont, fill=(255, 255, 255))
    img.paste(Image.blend(region, marked, 0.45), box[:2])

    if spec.label:  # the model's short name, top left, on a dark tab
        lfont = _font(fs)
        lw = int(lfont.getlength(spec.label))
        tab = (pad // 2, pad // 2, pad // 2 + lw + pad, pad // 2 + asc + desc + pad // 2)
        region = img.crop(tab)
        img.paste(Image.blend(region, Image.new("RGB", region.size, (8, 10, 16)), 0.6), tab[:2])
        ImageDraw.Draw(img).text((tab[0] + pad // 2, tab[1] + pad // 4), spec.label, font=lfont,
                                 fill=(255, 214, 120))
    return img


def render(spec: RenderSpec) -> bytes:
    """Draw one image and encode it in ``spec.output_format``. Deterministic for a given spec."""
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    img = _scene(spec, rng)
    img = _apply_references(img, spec)
    img = _grain(img, rng, _GRAIN.get(spec.quality, 6.0))
    img = _overlay_text(img, spec)
    out = io.BytesIO()
    fmt = spec.output_format
    if fmt == "png":
        img.save(out, "PNG", compress_level=1)
    elif fmt == "jpeg":
        img.save(out, "JPEG", quality=90)
    elif fmt == "webp":
        img.save(out, "WEBP", quality=85, method=0)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# cache


class RenderCache:
    """A thread-safe LRU of encoded images bounded by total bytes.

    ``get(spec)`` renders at most once per key even when many threads ask at the same time
    (the others wait for the first render).
    """

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, renderer: Callable[[RenderSpec], bytes] = render):
        self.max_bytes = max_bytes
        self._renderer = renderer
        self._items: "OrderedDict[tuple[int, str], bytes]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict[tuple[int, str], threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def peek(self, key: tuple[int, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def get(self, spec: RenderSpec) -> bytes:
        key = spec.cache_key
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return data
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                data = self._items.get(key)
                if data is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return data
                self.misses += 1
            data = self._renderer(spec)
            with self._lock:
                self._put(key, data)
                self._inflight.pop(key, None)
            return data

    def _put(self, key: tuple[int, str], data: bytes) -> None:
        if key in self._items:
            self._bytes -= len(self._items.pop(key))
        if len(data) > self.max_bytes:
            return
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

