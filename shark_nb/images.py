"""Image inputs, mask checks, previews and metadata on save.

* :func:`input_to_url` / :func:`mask_to_url` turn what a user passes as ``image=`` / ``mask=``
  (a path, bytes, a PIL image, an http(s) URL, a ``data:`` URL or a :class:`GeneratedImage`)
  into the URL the API takes, after checking it locally: it must decode as an image, stay under
  :data:`MAX_INPUT_BYTES` and :data:`MAX_INPUT_PIXELS` (checked from the header, before any pixel
  is decoded, so a decompression bomb is refused at once). Problems raise
  :class:`~shark_nb.errors.ValidationError` naming the field, the value and what is allowed.
* :func:`make_preview` / :func:`preview_for_display`: small previews for inline display, so the
  notebook file stays small.
* :func:`save_image`: atomic writes that embed the prompt and parameters as metadata *without
  re-encoding the pixels* (PNG ``iTXt``, JPEG EXIF + XMP, WebP ``VP8X`` + ``EXIF`` + ``XMP``);
  :func:`read_metadata` reads it back.
* :func:`safe_filename` / :func:`unique_path`: file names that work on every OS and never
  overwrite.

Pillow is imported at the top: this module is imported lazily (on first use), not at package
import.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import json
import os
import re
import secrets
import struct
import threading
import unicodedata
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit
from xml.sax.saxutils import escape as _xml_escape

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError, features

from .errors import ValidationError

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_INPUT_PIXELS",
    "SUPPORTED_FORMATS",
    "input_to_url",
    "mask_to_url",
    "image_info",
    "describe_bytes",
    "make_preview",
    "preview_for_display",
    "open_image",
    "save_image",
    "read_metadata",
    "embed_metadata",
    "safe_filename",
    "unique_path",
    "suffix_for",
]

#: Largest local input accepted, in bytes (the encoded file).
MAX_INPUT_BYTES = 50 * 1024 * 1024
#: Largest local input accepted, in pixels (width x height), checked from the header.
MAX_INPUT_PIXELS = 40_000_000
#: Largest URL accepted as an http(s) input.
MAX_URL_CHARS = 8192

#: Formats sent as they are (no re-encoding).
SUPPORTED_FORMATS = ("png", "jpeg", "webp", "gif")
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
#: Pillow plugins we ever let parse untrusted bytes. Formats outside SUPPORTED_FORMATS are
#: converted to PNG. (Deliberately no EPS/PDF/PSD/etc.: EPS would run Ghostscript.)
_OPEN_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "ICO") + (
    ("AVIF",) if features.check("avif") else ()
)
_PIL_TO_FORMAT = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif"}

_ALLOWED_INPUT = (
    "a PNG, JPEG, WebP or GIF image (a file path, bytes, a PIL image, an http(s) URL or a "
    f"data: URL), at most {MAX_INPUT_BYTES // (1024 * 1024)} MB and "
    f"{MAX_INPUT_PIXELS / 1e6:g} megapixels"
)
_ALLOWED_MASK = (
    "a PNG with an alpha channel (RGBA, LA, or a palette with transparency) the size of the "
    "first reference image: transparent pixels mark the area to repaint"
)

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXT_JPEG_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
_EXIF_HEADER = b"Exif\x00\x00"
_SHARK_NS = "https://shark.ai/ns/shark_nb/1.0/"
_SOFTWARE = "shark_nb"
_JPEG_SEGMENT_MAX = 65533  # payload bytes of one APPn segment (65535 minus the length field)


class _ImageProblem(Exception):
    """Internal: why some bytes were refused. Turned into ValidationError / ValueError."""


# --------------------------------------------------------------------------------------------
# Header sniffing (no Pillow, no pixel decode)
# --------------------------------------------------------------------------------------------

def _sniff(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """(format, (w, h)) read from the header of a PNG, JPEG, WebP or GIF; None otherwise."""
    try:
        if data.startswith(_PNG_SIG):
            if len(data) >= 24 and data[12:16] == b"IHDR":
                w, h = struct.unpack(">II", data[16:24])
                return "png", (w, h)
            return None
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            w, h = struct.unpack("<HH", data[6:10])
            return "gif", (w, h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            size = _webp_canvas(data[12:])
            return ("webp", size) if size else None
        if data[:3] == b"\xff\xd8\xff":
            size = _jpeg_size(data)
            return ("jpeg", size) if size else None
    except (struct.error, IndexError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (w, h)
        i += 2 + length
    return None


def _webp_first_chunk(body: bytes) -> tuple[bytes, bytes] | None:
    if len(body) < 8:
        return None
    fourcc = body[:4]
    (size,) = struct.unpack("<I", body[4:8])
    return fourcc, body[8 : 8 + size]


def _webp_bitstream_info(fourcc: bytes, payload: bytes) -> tuple[int, int, bool] | None:
    """(w, h, has_alpha) of a VP8 / VP8L bitstream, from its header."""
    if fourcc == b"VP8 ":
        if len(payload) < 10 or payload[3:6] != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack("<HH", payload[6:10])
        return w & 0x3FFF, h & 0x3FFF, False
    if fourcc == b"VP8L":
        if len(payload) < 5 or payload[0] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", payload[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    return None


def _webp_canvas(body: bytes) -> tuple[int, int] | None:
    first = _webp_first_chunk(body)
    if first is None:
        return None
    fourcc, payload = first
    if fourcc == b"VP8X":
        if len(payload) < 10:
            return None
        w = int.from_bytes(payload[4:7], "little") + 1
        h = int.from_bytes(payload[7:10], "little") + 1
        return w, h
    info = _webp_bitstream_info(fourcc, payload)
    return (info[0], info[1]) if info else None


# --------------------------------------------------------------------------------------------
# Bomb-safe opening
# --------------------------------------------------------------------------------------------

def _too_many_pixels(w: int, h: int, limit: int) -> str:
    return (f"the image is {w}x{h} = {w * h / 1e6:,.1f} megapixels, more than the "
            f"{limit / 1e6:g} megapixel limit")


def _open_checked(data: bytes, *, max_pixels: int | None = None) -> ImageFile.ImageFile:
    """Open (lazily: header only) with the pixel count checked before any decode.

    Raises _ImageProblem. Pillow's DecompressionBombError / Warning become _ImageProblem too,
    without touching the global ``Image.MAX_IMAGE_PIXELS``.
    """
    limit = MAX_INPUT_PIXELS if max_pixels is None else max_pixels
    sniffed = _sniff(data)
    if sniffed is not None:
        w, h = sniffed[1]
        if w * h > limit:
            raise _ImageProblem(_too_many_pixels(w, h, limit))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageProblem(f"refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise _ImageProblem("the data is not a recognised image") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
            TypeError, KeyError, MemoryError) as exc:
        raise _ImageProblem(f"the image header cannot be read ({exc})") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise _ImageProblem(f"the image has no pixels ({w}x{h})")
    if w * h > limit:
        im.close()
        raise _ImageProblem(_too_many_pixels(w, h, limit))
    return im


def _load_checked(im: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageProblem(f"refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
            TypeError, KeyError, zlib.error) as exc:
        raise _ImageProblem(f"the image is damaged or truncated ({exc})") from None
    except MemoryError:
        raise _ImageProblem("the image is too large to decode") from None


def _decode_fully(data: bytes) -> Image.Image:
    """Open, verify (CRCs, structure) and decode the first frame. Raises _ImageProblem."""
    im = _open_checked(data)
    try:
        im.verify()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
            TypeError, KeyError, zlib.error) as exc:
        raise _ImageProblem(f"the image is damaged or truncated ({exc})") from None
    im = _open_checked(data)
    _load_checked(im)
    return im


def open_image(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode bytes into a loaded PIL image, refusing bombs. Raises ValueError."""
    try:
        im = _open_checked(bytes(data), max_pixels=max_pixels)
        _load_checked(im)
    except _ImageProblem as exc:
        raise ValueError(str(exc)) from None
    return im


def image_info(data: bytes) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) from the header, without decoding any pixel.

    The format is ``"png"``, ``"jpeg"``, ``"webp"``, ``"gif"`` or, for other formats Pillow
    reads, its lower-cased Pillow name. Raises ValueError when the bytes are not an image.
    """
    data = bytes(data)
    sniffed = _sniff(data)
    if sniffed is not None:
        return sniffed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"the image is too large to inspect safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - anything Pillow raises on garbage
        raise ValueError(f"not a recognised image ({type(exc).__name__})") from None
    fmt = _PIL_TO_FORMAT.get(im.format or "", (im.format or "unknown").lower())
    size = im.size
    im.close()
    return fmt, size


def describe_bytes(data: bytes) -> dict[str, Any]:
    """Ledger description of image bytes: size, hash, dimensions, format. Never the bytes."""
    data = bytes(data)
    info: dict[str, Any] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        fmt, (w, h) = image_info(data)
    except ValueError:
        fmt, w, h = None, None, None
    info.update(width=w, height=h, format=fmt)
    return info


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def _data_url(fmt: str, data: bytes) -> str:
    return f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


def _to_png_mode(im: Image.Image) -> Image.Image:
    """An image in a mode PNG stores well (8 bits a channel), keeping alpha."""
    if im.mode in ("RGB", "RGBA", "L", "LA", "1", "P"):
        return im  # for P, the PNG encoder keeps the palette and its transparency
    if im.mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if im.mode in ("I", "F"):
        return im.convert("L")
    bands = im.getbands()
    has_alpha = "A" in bands or "a" in bands or "transparency" in im.info
    return im.convert("RGBA" if has_alpha else "RGB")


def _encode_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    _to_png_mode(im).save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _checked_bytes(data: bytes) -> tuple[bytes, str, tuple[int, int], str | None]:
    """Check local image bytes: (bytes to send, format, size, converted_from). _ImageProblem."""
    if not data:
        raise _ImageProblem("it is empty (0 bytes)")
    if len(data) > MAX_INPUT_BYTES:
        raise _ImageProblem(f"it is {len(data) / 1e6:,.1f} MB")
    im = _decode_fully(data)
    fmt = _PIL_TO_FORMAT.get(im.format or "")
    if fmt is not None:
        return data, fmt, im.size, None
    converted_from = (im.format or "unknown").lower()
    try:
        png = _encode_png(im)
    except (OSError, ValueError) as exc:
        raise _ImageProblem(f"the {converted_from} image cannot be converted to PNG ({exc})") from None
    if len(png) > MAX_INPUT_BYTES:
        raise _ImageProblem(f"it is {len(png) / 1e6:,.1f} MB once converted to PNG")
    return png, "png", im.size, converted_from


def _info(data: bytes, fmt: str, size: tuple[int, int], **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "width": size[0], "height": size[1], "format": fmt,
    }
    info.update({k: v for k, v in extra.items() if v is not None})
    return info


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))
    except ValueError:
        return "<url with credentials>"


def _check_http_url(url: str, field: str) -> str:
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(field, url, "an http(s) URL", detail=f"the URL has {len(url):,} characters "
                              f"(at most {MAX_URL_CHARS:,})")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValidationError(field, url, "an http(s) URL without spaces or control characters",
                              detail="the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValidationError(field, url, "an http(s) URL", detail=f"the URL is malformed ({exc})") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError(field, _redact_url(url), "an http(s) URL without user name or password",
                              detail="the URL carries credentials, which would be sent to the gateway")
    if not parts.hostname:
        raise ValidationError(field, url, "an http(s) URL with a host name", detail="the URL has no host")
    return url


def decode_base64(text: str) -> bytes:
    """Lenient base64 (inputs' data: URLs, and images the gateway sends inline): whitespace,
    percent-encoding, the URL-safe alphabet and missing padding are tolerated; anything else
    raises ValueError."""
    clean = re.sub(r"\s+", "", str(text))
    if "%" in clean:
        clean = unquote_to_bytes(clean).decode("ascii", "replace")
    clean = clean.replace("-", "+").replace("_", "/")  # tolerate URL-safe base64
    clean += "=" * (-len(clean) % 4)
    try:
        return base64.b64decode(clean, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the base64 cannot be decoded") from None


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(media type, bytes) of a ``data:`` URL, base64 or percent-encoded; ValueError if malformed."""
    head, sep, payload = str(url).partition(",")
    if not sep or head[:5].lower() != "data:":
        raise ValueError("a data: URL needs a comma before its payload")
    params = [p.strip().lower() for p in head[5:].split(";")]
    if "base64" in params[1:]:
        return params[0], decode_base64(payload)
    return params[0], unquote_to_bytes(payload)


def _decode_data_url(url: str, field: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise ValidationError(field, url, "a data: URL such as 'data:image/png;base64,...'",
                              detail="the data: URL has no comma before its payload")
    params = [p.strip().lower() for p in head[5:].split(";")]
    mediatype = params[0]
    if mediatype and not mediatype.startswith("image/"):
        raise ValidationError(field, url, _ALLOWED_INPUT,
                              detail=f"the data: URL holds {mediatype!r}, not an image")
    is_b64 = "base64" in params[1:]
    if is_b64:
        # refuse by the payload length before decoding anything
        if len(payload) * 3 // 4 > MAX_INPUT_BYTES + 3:
            raise ValidationError(field, url, _ALLOWED_INPUT,
                                  detail=f"it is about {len(payload) * 3 / 4e6:,.1f} MB")
        try:
            return decode_base64(payload)
        except ValueError:
            raise ValidationError(field, url, "a data: URL with valid base64",
                                  detail="the base64 payload cannot be decoded") from None
    if len(payload) > 3 * MAX_INPUT_BYTES:
        raise ValidationError(field, url, _ALLOWED_INPUT, detail="the data: URL is too long")
    return unquote_to_bytes(payload)


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def _read_path(path: Path, field: str, shown: str) -> bytes:
    try:
        st = path.stat()
    except PermissionError:
        raise ValidationError(field, shown, _ALLOWED_INPUT, detail="the file cannot be read (permission denied)") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENAMETOOLONG:
            detail = "no such file"
            if len(shown) >= 64 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", shown):
                detail += " (it looks like base64 data: prefix it with 'data:image/png;base64,')"
            raise ValidationError(field, shown, _ALLOWED_INPUT, detail=detail) from None
        raise ValidationError(field, shown, _ALLOWED_INPUT,
                              detail=f"the file cannot be read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ValidationError(field, shown, _ALLOWED_INPUT, detail="it is a folder, not a file")
    if not path.is_file():
        raise ValidationError(field, shown, _ALLOWED_INPUT, detail="it is not a regular file")
    if st.st_size > MAX_INPUT_BYTES:
        raise ValidationError(field, shown, _ALLOWED_INPUT, detail=f"the file is {st.st_size / 1e6:,.1f} MB")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except PermissionError:
        raise ValidationError(field, shown, _ALLOWED_INPUT, detail="the file cannot be read (permission denied)") from None
    except OSError as exc:
        raise ValidationError(field, shown, _ALLOWED_INPUT,
                              detail=f"the file cannot be read ({exc.strerror or exc})") from None
    return data


def _local_bytes(item: Any, field: str) -> tuple[bytes, Any, dict[str, Any]] | tuple[None, str, dict[str, Any]]:
    """Resolve a local input to (bytes, shown value, extra info), or (None, url, {}) for http(s)."""
    if hasattr(item, "data") and hasattr(item, "format") and isinstance(getattr(item, "data"), (bytes, bytearray, memoryview)) \
            and not isinstance(item, Image.Image):
        return bytes(item.data), item, {"source": "generated"}
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item), bytes(item), {"source": "bytes"}
    if isinstance(item, str):
        text = item.strip()
        lower = text[:16].lower()
        if lower.startswith("data:"):
            return _decode_data_url(text, field), item, {"source": "data_url"}
        if lower.startswith(("http://", "https://")):
            return None, _check_http_url(text, field), {}
        m = _SCHEME_RE.match(text)
        if m and len(m.group(1)) > 1 and not os.path.exists(item):
            raise ValidationError(field, item, _ALLOWED_INPUT,
                                  detail=f"the {m.group(1).lower()}: scheme is not supported "
                                         "(only http, https and data URLs, or a local file path)")
        if not text:
            raise ValidationError(field, item, _ALLOWED_INPUT, detail="the path is empty")
        path = Path(item).expanduser()
        return _read_path(path, field, item), item, {"source": "file", "name": path.name}
    if isinstance(item, os.PathLike):
        try:
            path = Path(os.fspath(item)).expanduser()
        except TypeError:
            raise ValidationError(field, item, _ALLOWED_INPUT, detail="the path is not text") from None
        return _read_path(path, field, str(item)), str(item), {"source": "file", "name": path.name}
    raise ValidationError(field, item, _ALLOWED_INPUT,
                          detail=f"a {type(item).__name__} is not an image input")


def _pil_to_png(im: Image.Image, field: str) -> bytes:
    w, h = im.size
    if w * h > MAX_INPUT_PIXELS:
        raise ValidationError(field, im, _ALLOWED_INPUT, detail=_too_many_pixels(w, h, MAX_INPUT_PIXELS))
    if w <= 0 or h <= 0:
        raise ValidationError(field, im, _ALLOWED_INPUT, detail=f"the image has no pixels ({w}x{h})")
    try:
        _load_checked(im)
        png = _encode_png(im)
    except _ImageProblem as exc:
        raise ValidationError(field, im, _ALLOWED_INPUT, detail=str(exc)) from None
    except (OSError, ValueError) as exc:
        raise ValidationError(field, im, _ALLOWED_INPUT,
                              detail=f"the image cannot be encoded as PNG ({exc})") from None
    if len(png) > MAX_INPUT_BYTES:
        raise ValidationError(field, im, _ALLOWED_INPUT, detail=f"it is {len(png) / 1e6:,.1f} MB as PNG")
    return png


def _from_array(item: Any, field: str) -> Any:
    """A numpy uint8 array (H x W, H x W x 3 or H x W x 4) becomes a PIL image."""
    if type(item).__module__ != "numpy" or not hasattr(item, "ndim"):
        return item
    shape = getattr(item, "shape", ())
    ok = str(getattr(item, "dtype", "")) == "uint8" and (
        item.ndim == 2 or (item.ndim == 3 and shape[2] in (1, 3, 4)))
    if not ok:
        raise ValidationError(field, f"<array shape={tuple(shape)} dtype={getattr(item, 'dtype', '?')}>",
                              "a uint8 array shaped (H, W), (H, W, 3) or (H, W, 4), or " + _ALLOWED_INPUT)
    if len(shape) == 3 and shape[2] == 1:
        item = item[:, :, 0]
    if int(shape[0]) * int(shape[1]) > MAX_INPUT_PIXELS:
        raise ValidationError(field, f"<array shape={tuple(shape)}>", _ALLOWED_INPUT,
                              detail=_too_many_pixels(int(shape[1]), int(shape[0]), MAX_INPUT_PIXELS))
    return Image.fromarray(item)


def input_to_url(item: Any, *, field: str) -> tuple[str, dict[str, Any]]:
    """Turn one reference-image input into (URL for the API, description for the ledger).

    Accepts a file path (str or os.PathLike), bytes / bytearray / memoryview, a PIL image, an
    http(s) URL (returned as it is, not fetched), a ``data:`` URL (decoded and checked) or a
    ``GeneratedImage``. Supported formats are sent unchanged; others Pillow reads (BMP, TIFF, ...)
    are converted to PNG; PIL images are encoded as PNG (alpha kept). Raises ValidationError.
    """
    item = _from_array(item, field)
    if isinstance(item, Image.Image):
        png = _pil_to_png(item, field)
        return _data_url("png", png), _info(png, "png", item.size, source="pil")
    data, shown, extra = _local_bytes(item, field)
    if data is None:
        return shown, {"url": shown}
    try:
        out, fmt, size, converted_from = _checked_bytes(data)
    except _ImageProblem as exc:
        raise ValidationError(field, shown, _ALLOWED_INPUT, detail=str(exc)) from None
    return _data_url(fmt, out), _info(out, fmt, size, converted_from=converted_from, **extra)


def _has_alpha_channel(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _mask_alpha_warning(im: Image.Image) -> None:
    try:
        alpha = im.convert("RGBA").getchannel("A") if im.mode not in ("RGBA", "LA") else im.getchannel("A")
        lo, _hi = alpha.getextrema()
    except (OSError, ValueError):
        return
    if lo == 255:
        warnings.warn("the mask has no transparent pixel, so nothing would be repainted "
                      "(transparent pixels mark the area to repaint)", UserWarning, stacklevel=3)


def _is_painter(item: Any) -> bool:
    """A mask painter (``shark_nb.MaskPainter``, or anything with a ``mask_png`` attribute)."""
    return not isinstance(item, (str, bytes, bytearray, memoryview, os.PathLike)) and hasattr(item, "mask_png")


def _painted_bytes(item: Any, field: str) -> tuple[bytes, Any, dict[str, Any]]:
    """A painter's PNG bytes, then checked like any other mask (PNG, alpha, the reference's size)."""
    data = item.mask_png
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValidationError(field, item, _ALLOWED_MASK,
                              detail=f"its mask_png is a {type(data).__name__}, not PNG bytes")
    return bytes(data), item, {"source": "painter"}


def mask_to_url(item: Any, *, field: str = "mask",
                reference_size: tuple[int, int] | None = None) -> tuple[str, dict[str, Any]]:
    """Turn a mask input into (URL, ledger description), checking it is a PNG with alpha.

    Transparent pixels mark the area to repaint. An http(s) URL is passed through unchecked; a
    mask painter gives its ``mask_png``, checked the same way. When ``reference_size`` is given,
    the mask must have that size. Raises ValidationError.
    """
    item = _from_array(item, field)
    if isinstance(item, Image.Image):
        if not _has_alpha_channel(item):
            raise ValidationError(field, item, _ALLOWED_MASK,
                                  detail=f"the image (mode {item.mode}) has no alpha channel; "
                                         "use im.convert('RGBA') and make the area to repaint transparent")
        im = item.convert("RGBA") if item.mode == "PA" else item
        png = _pil_to_png(im, field)
        size = item.size
        out, shown, extra = png, item, {"source": "pil"}
        checked = im
    else:
        data, shown, extra = _painted_bytes(item, field) if _is_painter(item) else _local_bytes(item, field)
        if data is None:
            return shown, {"url": shown}
        try:
            out, fmt, size, converted_from = _checked_bytes(data)
        except _ImageProblem as exc:
            raise ValidationError(field, shown, _ALLOWED_MASK, detail=str(exc)) from None
        if converted_from is not None or fmt != "png":
            raise ValidationError(field, shown, _ALLOWED_MASK,
                                  detail=f"it is a {(converted_from or fmt).upper()} image, not a PNG")
        checked = _open_checked(out)
        if not _has_alpha_channel(checked):
            raise ValidationError(field, shown, _ALLOWED_MASK,
                                  detail=f"the PNG (mode {checked.mode}) has no alpha channel")
        try:
            _load_checked(checked)
        except _ImageProblem as exc:  # pragma: no cover - already decoded once
            raise ValidationError(field, shown, _ALLOWED_MASK, detail=str(exc)) from None
    if reference_size is not None and tuple(size) != tuple(reference_size):
        rw, rh = reference_size
        raise ValidationError(field, shown, _ALLOWED_MASK,
                              detail=f"the mask is {size[0]}x{size[1]} but the reference image is {rw}x{rh}")
    _mask_alpha_warning(checked)
    return _data_url("png", out), _info(out, "png", size, **extra)


# --------------------------------------------------------------------------------------------
# Previews
# --------------------------------------------------------------------------------------------

_PREVIEW_FORMATS = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
#: libwebp effort: 2 encodes a 1024 px preview ~3x faster than 4 (26 vs 76 ms) for +3-5 % bytes.
_WEBP_METHOD = 2
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def preview_pool() -> ThreadPoolExecutor:
    """The process's preview workers (``config.PREVIEW_WORKERS`` threads): the magic and the
    studio make each image's preview here as soon as it arrives, off the kernel's main thread.
    Pillow releases the GIL while it decodes, reduces, resizes and encodes, so they run in parallel."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from . import config

            _POOL = ThreadPoolExecutor(config.PREVIEW_WORKERS, thread_name_prefix="shark_nb-preview")
        return _POOL


def _preview_image(data: bytes, max_side: int) -> Image.Image:
    """The first frame, oriented, reduced to fit max_side, in RGB / RGBA / L."""
    if not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1:
        raise ValueError(f"max_side must be a positive whole number, not {max_side!r}")
    try:
        im = _open_checked(bytes(data))
    except _ImageProblem as exc:
        raise ValueError(str(exc)) from None
    w, h = im.size
    scale = min(1.0, max_side / max(w, h))
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if im.format in ("JPEG", "MPO") and scale < 1:
        im.draft(None, target)  # let libjpeg decode at 1/2, 1/4 or 1/8 scale: much faster
    try:
        _load_checked(im)
    except _ImageProblem as exc:
        raise ValueError(str(exc)) from None
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a damaged EXIF block only costs the orientation
    if _has_alpha_channel(im) or im.mode in ("La", "RGBa"):
        im = im.convert("RGBA")
    elif im.mode == "L":
        pass
    elif im.mode != "RGB":
        im = im.convert("RGB")
    # reducing_gap=1: first Image.reduce() by the largest whole factor that keeps the image at
    # least the target size (a 2048 px image -> 1024 px is one box reduce, ~10x cheaper than
    # Lanczos from full size), then Lanczos for the rest. Measured against a plain Lanczos
    # resize: PSNR 44-50 dB (tests/test_images.py, docs/reliability.md "Issue 10").
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=1.0)
    return im


def _encode_preview(im: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        if im.mode == "RGBA":
            bg = Image.new("RGB", im.size, (255, 255, 255))
            bg.paste(im, mask=im.getchannel("A"))
            im = bg
        im.save(buf, "JPEG", quality=quality, optimize=True)
    elif fmt == "WEBP":
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGB")
        im.save(buf, "WEBP", quality=quality, method=_WEBP_METHOD)
    else:
        im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def make_preview(data: bytes, *, max_side: int = 1024, format: str = "webp", quality: int = 80) -> bytes:
    """A downscaled preview (aspect kept) for inline display.

    ``format`` is ``"webp"``, ``"jpeg"`` or ``"png"``. Images already small enough are still
    re-encoded to the compact format; for JPEG, alpha is flattened on white. Raises ValueError.
    """
    fmt = _PREVIEW_FORMATS.get(str(format).lower())
    if fmt is None:
        raise ValueError(f"format must be 'webp', 'jpeg' or 'png', not {format!r}")
    return _encode_preview(_preview_image(data, max_side), fmt, quality)


def _has_transparency(im: Image.Image) -> bool:
    if im.mode != "RGBA":
        return False
    lo, _hi = im.getchannel("A").getextrema()
    return lo < 255


def preview_for_display(data: bytes, *, max_side: int = 1024, quality: int = 80,
                        png_max_side: int | None = None) -> tuple[str, bytes]:
    """(mime type, bytes) of a preview that every Jupyter front end renders natively:
    a JPEG, or a PNG when the image has transparent pixels (reduced further to
    ``png_max_side`` when given, PNG being larger). Raises ValueError."""
    im = _preview_image(data, max_side)
    if _has_transparency(im):
        if png_max_side and max(im.size) > png_max_side:
            im.thumbnail((png_max_side, png_max_side), Image.Resampling.LANCZOS)
        return "image/png", _encode_preview(im, "PNG", quality)
    return "image/jpeg", _encode_preview(im, "JPEG", quality)


# --------------------------------------------------------------------------------------------
# Metadata embedding (no re-encoding)
# --------------------------------------------------------------------------------------------

def _clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list, tuple)) \
                else str(value)
        out[str(key)] = value
    out.setdefault("Software", _SOFTWARE)
    return out


# --- PNG ---

def _png_chunks(data: bytes, *, views: bool = False) -> list[tuple[bytes, Any, Any]]:
    """[(type, payload, raw chunk bytes)], validating lengths. Stops after IEND. With ``views``,
    payload and raw are memoryviews into ``data`` instead of copies."""
    if not data.startswith(_PNG_SIG):
        raise ValueError("not a PNG")
    chunks = []
    buf = memoryview(data) if views else data
    i, n = 8, len(data)
    while True:
        if i + 12 > n:
            raise ValueError("PNG is truncated (no IEND chunk)")
        (length,) = struct.unpack(">I", data[i : i + 4])
        ctype = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > n:
            raise ValueError("PNG chunk runs past the end of the file")
        chunks.append((ctype, buf[i + 8 : i + 8 + length], buf[i:end]))
        i = end
        if ctype == b"IEND":
            return chunks


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)


def _png_keyword(key: str) -> bytes:
    kw = key.encode("latin-1", "replace")
    kw = re.sub(rb"[^\x20-\x7e\xa1-\xff]", b"_", kw)
    kw = re.sub(rb" {2,}", b" ", kw).strip()[:79]
    return kw or b"key"


def _png_itxt(key: str, text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 1024:
        body = b"\x01\x00" + b"\x00" + b"\x00" + zlib.compress(raw, 9)
    else:
        body = b"\x00\x00" + b"\x00" + b"\x00" + raw
    return _png_chunk(b"iTXt", _png_keyword(key) + b"\x00" + body)


def _png_text_key(ctype: bytes, payload: bytes) -> bytes | None:
    if ctype in (b"tEXt", b"zTXt", b"iTXt"):
        return payload.split(b"\x00", 1)[0]
    return None


def _png_embed(data: bytes, metadata: dict[str, str]) -> bytes:
    # memoryviews: the image data is copied once (into the result), not three times
    chunks = _png_chunks(data, views=True)
    if chunks[0][0] != b"IHDR":
        raise ValueError("PNG does not start with IHDR")
    keys = {_png_keyword(k) for k in metadata}
    new_text = b"".join(_png_itxt(k, v) for k, v in metadata.items())
    out = [_PNG_SIG, chunks[0][2], new_text]
    for ctype, payload, raw in chunks[1:]:
        if ctype in (b"tEXt", b"zTXt", b"iTXt") and _png_text_key(ctype, bytes(payload)) in keys:
            continue  # replaced by ours
        out.append(raw)
    return b"".join(out)


# --- EXIF / XMP ---

def _xml_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", key)
    if not name or not (name[0].isalpha() or name[0] == "_") or name.lower().startswith("xml"):
        name = "k_" + name
    return name


_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: str) -> str:
    return _xml_escape(_XML_BAD.sub("\ufffd", value), {'"': "&quot;"})


def _build_xmp(metadata: dict[str, str]) -> bytes:
    prompt = metadata.get("prompt")
    lines = [
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>',
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">',
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
        '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        f' xmlns:shark="{_SHARK_NS}">',
    ]
    if prompt is not None:
        lines.append('   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
                     f"{_xml_text(prompt)}</rdf:li></rdf:Alt></dc:description>")
    lines.append(f"   <xmp:CreatorTool>{_xml_text(metadata.get('Software', _SOFTWARE))}</xmp:CreatorTool>")
    for key, value in metadata.items():
        lines.append(f"   <shark:{_xml_name(key)}>{_xml_text(value)}</shark:{_xml_name(key)}>")
    lines += ["  </rdf:Description>", " </rdf:RDF>", "</x:xmpmeta>", '<?xpacket end="w"?>']
    return "\n".join(lines).encode("utf-8")


def _parse_xmp(packet: bytes | str) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    if isinstance(packet, bytes):
        packet = packet.decode("utf-8", "replace")
    if "<!DOCTYPE" in packet or "<!ENTITY" in packet:
        return {}  # never expand entities from a file
    start = packet.find("<x:xmpmeta")
    end = packet.find("</x:xmpmeta>")
    if start < 0 or end < 0:
        return {}
    try:
        root = ET.fromstring(packet[start : end + len("</x:xmpmeta>")])
    except ET.ParseError:
        return {}
    out: dict[str, str] = {}
    prefix = "{" + _SHARK_NS + "}"
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith(prefix):
            out[el.tag[len(prefix):]] = el.text or ""
    if "prompt" not in out:
        for el in root.iter("{http://purl.org/dc/elements/1.1/}description"):
            texts = [li.text or "" for li in el.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li")]
            if texts:
                out["prompt"] = texts[0]
    return out


def _build_exif(metadata: dict[str, str], existing: bytes | None) -> bytes:
    """An EXIF block (with the ``Exif\\0\\0`` header), merged into any existing one."""
    exif = Image.Exif()
    if existing:
        try:
            exif.load(existing)
        except Exception:  # noqa: BLE001 - a damaged EXIF block is replaced
            exif = Image.Exif()
    prompt = metadata.get("prompt")
    if prompt is not None:
        exif[0x010E] = prompt.encode("utf-8")  # ImageDescription; UTF-8 as most readers expect
    exif[0x0131] = metadata.get("Software", _SOFTWARE)  # Software
    comment = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"))
    exif.get_ifd(ExifTags.IFD.Exif)[0x9286] = b"ASCII\x00\x00\x00" + comment.encode("ascii")  # UserComment
    return exif.tobytes()


def _shrunk(metadata: dict[str, str], keep: int) -> dict[str, str]:
    out = dict(metadata)
    if "prompt" in out and len(out["prompt"]) > keep:
        out["prompt"] = out["prompt"][:keep] + "…"
    return out


def _fit(builder, metadata: dict[str, str], limit: int, *args: Any) -> bytes:
    """Build a metadata block no larger than limit, shortening the prompt if needed."""
    block = builder(metadata, *args)
    keep = len(metadata.get("prompt", ""))
    while len(block) > limit and keep > 0:
        keep //= 2
        block = builder(_shrunk(metadata, keep), *args)
    if len(block) > limit:  # other fields are too long: keep only the essentials
        essentials = {k: v[:1000] for k, v in metadata.items() if k in ("prompt", "Software", "tracing_id", "credit", "model")}
        block = builder(_shrunk(essentials, 1000), *args)
    return block


# --- JPEG ---

def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """([(marker, raw segment bytes)] up to the first SOS, rest of the file from SOS on)."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    segs: list[tuple[int, bytes]] = []
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0xDA or marker == 0xD9:
            return segs, data[i:]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            segs.append((marker, data[i : i + 2]))
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2 or i + 2 + length > n:
            raise ValueError("JPEG segment runs past the end of the file")
        segs.append((marker, data[i : i + 2 + length]))
        i += 2 + length
    raise ValueError("JPEG has no image data")


def _jpeg_app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_embed(data: bytes, metadata: dict[str, str]) -> bytes:
    segs, rest = _jpeg_segments(data)
    existing_exif = None
    kept: list[tuple[int, bytes]] = []
    for marker, raw in segs:
        if marker == 0xE1:
            payload = raw[4:]
            if payload.startswith(_EXIF_HEADER):
                existing_exif = existing_exif or payload
                continue
            if payload.startswith(_XMP_JPEG_HEADER) or payload.startswith(_XMP_EXT_JPEG_HEADER):
                continue
        kept.append((marker, raw))
    exif = _fit(_build_exif, metadata, _JPEG_SEGMENT_MAX, existing_exif)
    xmp = _fit(_build_xmp, metadata, _JPEG_SEGMENT_MAX - len(_XMP_JPEG_HEADER))
    ours = _jpeg_app1(exif) + _jpeg_app1(_XMP_JPEG_HEADER + xmp)
    # after SOI and a leading JFIF/JFXX APP0 (which must come first), before everything else
    n_app0 = 0
    while n_app0 < len(kept) and kept[n_app0][0] == 0xE0:
        n_app0 += 1
    head = b"".join(raw for _, raw in kept[:n_app0])
    tail = b"".join(raw for _, raw in kept[n_app0:])
    return b"\xff\xd8" + head + ours + tail + rest


# --- WebP ---

def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = min(len(data), 8 + riff_size)
    chunks = []
    i = 12
    while i + 8 <= end:
        fourcc = data[i : i + 4]
        (size,) = struct.unpack("<I", data[i + 4 : i + 8])
        if i + 8 + size > end:
            raise ValueError("WebP chunk runs past the end of the file")
        chunks.append((fourcc, data[i + 8 : i + 8 + size]))
        i += 8 + size + (size & 1)
    if not chunks:
        raise ValueError("WebP has no chunks")
    return chunks


def _webp_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


def _webp_embed(data: bytes, metadata: dict[str, str]) -> bytes:
    chunks = _webp_chunks(data)
    existing_exif = next((p for c, p in chunks if c == b"EXIF"), None)
    chunks = [(c, p) for c, p in chunks if c not in (b"EXIF", b"XMP ")]
    first, payload = chunks[0]
    if first == b"VP8X":
        if len(payload) < 10:
            raise ValueError("WebP VP8X chunk is too short")
        vp8x = bytes([payload[0] | 0x08 | 0x04]) + payload[1:]
        chunks[0] = (b"VP8X", vp8x)
    else:
        info = _webp_bitstream_info(first, payload)
        if info is None:
            raise ValueError("WebP bitstream header not recognised")
        w, h, alpha = info
        flags = 0x08 | 0x04 | (0x10 if alpha else 0)
        vp8x = bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", vp8x))
    exif_block = _build_exif(metadata, existing_exif)
    exif_payload = exif_block[len(_EXIF_HEADER):] if exif_block.startswith(_EXIF_HEADER) else exif_block
    ours = [(b"EXIF", exif_payload), (b"XMP ", _build_xmp(metadata))]
    image_chunks = {b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"}
    last = max(i for i, (c, _) in enumerate(chunks) if c in image_chunks)
    chunks[last + 1 : last + 1] = ours
    body = b"WEBP" + b"".join(_webp_chunk(c, p) for c, p in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def embed_metadata(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    """The same image with the metadata embedded; pixels are never re-encoded.

    PNG gets ``iTXt`` chunks; JPEG an EXIF APP1 and an XMP APP1; WebP becomes extended (VP8X)
    with ``EXIF`` and ``XMP`` chunks. Other formats are returned unchanged. Raises ValueError
    when the container is malformed.
    """
    data = bytes(data)
    meta = _clean_metadata(metadata)
    if data.startswith(_PNG_SIG):
        return _png_embed(data, meta)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_embed(data, meta)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_embed(data, meta)
    return data


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

def _atomic_write(data: bytes, path: Path, *, overwrite: bool) -> None:
    folder = path.parent
    tmp = folder / f".{path.name[:100]}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and refuses to clobber an existing file
            except FileExistsError:
                raise
            except OSError:  # no hard links here (some network / FAT file systems)
                if path.exists():
                    raise FileExistsError(str(path)) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):
        try:
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


def save_image(data: bytes, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None,
               overwrite: bool = True) -> Path:
    """Write the image atomically with its metadata embedded; return the path.

    The file is written to a temporary name in the same folder, fsynced, then moved into place:
    there is never a half-written file. The pixels are not re-encoded. If the container cannot
    take the metadata (malformed), the bytes are saved unchanged with a warning: a paid image is
    never lost. With ``overwrite=False``, an existing file raises FileExistsError.
    """
    path = Path(path).expanduser()
    data = bytes(data)
    try:
        out = embed_metadata(data, metadata or {})
    except (ValueError, struct.error, IndexError) as exc:
        warnings.warn(f"could not embed metadata in {path.name} ({exc}); saved the image without it",
                      UserWarning, stacklevel=2)
        out = data
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, path, overwrite=overwrite)
    return path


_MAX_TEXT_BYTES = 16 * 1024 * 1024


def _inflate_limited(payload: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(payload, _MAX_TEXT_BYTES)
    if d.unconsumed_tail:
        raise ValueError("text chunk too large")
    return out


def _png_read_text(data: bytes) -> dict[str, str]:
    """Every tEXt / zTXt / iTXt chunk of a PNG, read from the container (no pixel decode)."""
    out: dict[str, str] = {}
    try:
        chunks = _png_chunks(data)
    except ValueError:
        return out
    for ctype, payload, _raw in chunks:
        try:
            if ctype == b"tEXt":
                key, _, value = payload.partition(b"\x00")
                out[key.decode("latin-1")] = value.decode("latin-1")
            elif ctype == b"zTXt":
                key, _, rest = payload.partition(b"\x00")
                out[key.decode("latin-1")] = _inflate_limited(rest[1:]).decode("latin-1")
            elif ctype == b"iTXt":
                key, _, rest = payload.partition(b"\x00")
                flag, _method = rest[0], rest[1]
                _lang, _, rest = rest[2:].partition(b"\x00")
                _tkey, _, text = rest.partition(b"\x00")
                if flag:
                    text = _inflate_limited(text)
                out[key.decode("latin-1")] = text.decode("utf-8", "replace")
        except (ValueError, IndexError, zlib.error):
            continue
    return out


def read_metadata(path: str | os.PathLike | bytes) -> dict[str, str]:
    """The metadata shark_nb (or another tool) wrote into an image file.

    PNG: every text chunk. JPEG / WebP: the shark_nb XMP fields, else the EXIF UserComment JSON,
    else the EXIF ImageDescription and Software. Returns {} when there is none.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        data = bytes(path)
    else:
        data = Path(path).expanduser().read_bytes()
    if data.startswith(_PNG_SIG):
        return _png_read_text(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)  # header only, no decode
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    out: dict[str, str] = {}
    xmp = im.info.get("xmp")
    if xmp:
        out = _parse_xmp(xmp)
        if out:
            return out
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001
        return {}
    comment = exif.get_ifd(ExifTags.IFD.Exif).get(0x9286)
    if isinstance(comment, bytes) and len(comment) >= 8:
        try:
            parsed = json.loads(comment[8:].decode("utf-8", "replace").rstrip("\x00 "))
            if isinstance(parsed, dict):
                return {str(k): str(v) for k, v in parsed.items()}
        except ValueError:
            pass
    desc = exif.get(0x010E)
    if desc:
        if isinstance(desc, str):
            try:
                desc = desc.encode("latin-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass
        out["prompt"] = str(desc).rstrip("\x00")
    if exif.get(0x0131):
        out["Software"] = str(exif.get(0x0131))
    return out


# --------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------

_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)}


def suffix_for(fmt: str) -> str:
    """The usual file suffix for an image format ("jpeg" -> ".jpg")."""
    return {"jpeg": ".jpg", "jpg": ".jpg"}.get(fmt, f".{fmt or 'bin'}")


def safe_filename(stem_text: str, *, suffix: str, max_len: int = 80) -> str:
    """A file name safe on Windows, macOS and Linux, made from (say) a prompt.

    ASCII slug (NFKD, other characters dropped), lower case, words joined by ``-``; never a
    reserved Windows name, never empty (``image``), no trailing dots or spaces, no separators;
    at most ``max_len`` characters including the suffix.
    """
    suffix = re.sub(r"[^A-Za-z0-9._\-]", "", str(suffix or ""))
    if suffix and not suffix.startswith((".", "-", "_")):
        suffix = "." + suffix
    if max_len < len(suffix) + 1:
        raise ValueError(f"max_len={max_len} leaves no room for a name before {suffix!r}")
    text = unicodedata.normalize("NFKD", str(stem_text or ""))
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    room = max_len - len(suffix)
    if len(slug) > room:
        cut = slug[:room]
        if "-" in cut[room // 2 :] and not slug[room : room + 1] == "-":
            cut = cut[: cut.rfind("-")]  # end on a word boundary when it costs little
        slug = cut.strip("-")
    if not slug:
        slug = "image"[:room]
    if slug.upper() in _RESERVED or slug.split(".")[0].upper() in _RESERVED:
        slug = (slug + "-image")[:room] if len(slug) + 6 <= room else "image"[:room]
    return (slug + suffix).rstrip(". ")


def unique_path(folder: str | os.PathLike, name: str) -> Path:
    """folder/name, or folder/name-2.ext, name-3.ext, ... : the first that does not exist."""
    folder = Path(folder).expanduser()
    candidate = folder / name
    if not candidate.exists():
        return candidate
    p = Path(name)
    stem, suffix = p.stem, p.suffix
    i = 2
    while True:
        candidate = folder / f"{stem}-{i}{suffix}"
        if not candidate.exists():
            return candidate
        i += 1

