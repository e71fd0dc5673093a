"""shark_nb.images: inputs, mask checks, bombs, previews, metadata on save, file names."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from shark_nb import images
from shark_nb.errors import ValidationError


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def sample(mode: str = "RGB", size=(64, 40)) -> Image.Image:
    """A small image with some structure (so lossy codecs have something to do)."""
    w, h = size
    arr = np.zeros((h, w, 4), dtype=np.uint8)
    arr[..., 0] = np.arange(w, dtype=np.uint8)[None, :] * 3
    arr[..., 1] = np.arange(h, dtype=np.uint8)[:, None] * 5
    arr[..., 2] = 128
    arr[..., 3] = 255
    arr[: h // 2, : w // 2, 3] = 0  # a transparent quarter
    im = Image.fromarray(arr, "RGBA")
    return im if mode == "RGBA" else im.convert(mode)


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def crafted_png(w: int, h: int, *, bit_depth: int = 8, color_type: int = 2, idat: bytes | None = None) -> bytes:
    """A PNG whose IHDR claims w x h, with (by default) a tiny IDAT: a header-only bomb."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", idat if idat is not None else zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def decode_data_url(url: str) -> tuple[str, bytes]:
    head, _, payload = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(payload)


def assert_names(exc: pytest.ExceptionInfo, field: str, *parts: str) -> str:
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert exc.value.field == field
    assert msg.startswith(f"{field}="), msg
    assert "expected" in msg, msg
    for part in parts:
        assert part.lower() in msg.lower(), (part, msg)
    return msg


class FakeGenerated:
    """Duck type of GeneratedImage: .data bytes and .format."""

    def __init__(self, data: bytes, fmt: str) -> None:
        self.data = data
        self.format = fmt


# --------------------------------------------------------------------------------------------
# inputs accepted
# --------------------------------------------------------------------------------------------

INFO_KEYS = {"bytes", "sha256", "width", "height", "format"}


@pytest.mark.parametrize("fmt,pil_fmt,kw", [
    ("png", "PNG", {}), ("jpeg", "JPEG", {"quality": 90}), ("webp", "WEBP", {"quality": 80}),
    ("gif", "GIF", {}),
])
def test_supported_bytes_are_sent_unchanged(fmt, pil_fmt, kw):
    data = encode(sample(), pil_fmt, **kw)
    url, info = images.input_to_url(data, field="image[0]")
    mime, payload = decode_data_url(url)
    assert mime == f"image/{fmt}"
    assert payload == data  # no re-encoding
    assert INFO_KEYS <= set(info)
    assert info["format"] == fmt and (info["width"], info["height"]) == (64, 40)
    assert info["bytes"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert not any(isinstance(v, (bytes, bytearray)) for v in info.values())


def test_every_input_kind_is_accepted(tmp_path):
    data = encode(sample(), "PNG")
    p = tmp_path / "in.png"
    p.write_bytes(data)
    kinds = {
        "str path": str(p),
        "Path": p,
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "data url": "data:image/png;base64," + base64.b64encode(data).decode(),
        "generated": FakeGenerated(data, "png"),
    }
    for name, item in kinds.items():
        url, info = images.input_to_url(item, field="image[0]")
        assert decode_data_url(url) == ("image/png", data), name
        assert info["sha256"] == hashlib.sha256(data).hexdigest(), name


def test_path_with_tilde_and_pathlike(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.jpg").write_bytes(encode(sample(), "JPEG"))
    url, info = images.input_to_url("~/a.jpg", field="image[0]")
    assert url.startswith("data:image/jpeg;base64,") and info["name"] == "a.jpg"


def test_pil_images_are_png_with_alpha_kept():
    for mode in ("RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16"):
        im = sample("RGBA").convert(mode) if mode != "I;16" else Image.new("I;16", (8, 8), 40000)
        url, info = images.input_to_url(im, field="image[0]")
        mime, payload = decode_data_url(url)
        assert mime == "image/png"
        back = Image.open(io.BytesIO(payload))
        assert back.format == "PNG" and back.size == im.size
        if mode in ("RGBA", "LA"):
            assert back.mode == mode
            assert back.getchannel("A").getextrema() == (0, 255)
        assert info["format"] == "png" and info["bytes"] == len(payload)


def test_numpy_array_is_accepted():
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    url, info = images.input_to_url(arr, field="image[0]")
    assert url.startswith("data:image/png;base64,") and (info["width"], info["height"]) == (20, 10)
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(np.zeros((4, 4), dtype=np.float64), field="image[0]")
    assert_names(exc, "image[0]", "uint8")


@pytest.mark.parametrize("pil_fmt", ["BMP", "TIFF"])
def test_other_formats_are_converted_to_png(pil_fmt):
    data = encode(sample(), pil_fmt)
    url, info = images.input_to_url(data, field="image[1]")
    mime, payload = decode_data_url(url)
    assert mime == "image/png" and info["format"] == "png" and info["converted_from"] == pil_fmt.lower()
    assert Image.open(io.BytesIO(payload)).convert("RGB").tobytes() == Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def test_http_urls_pass_through_unfetched():
    for url in ("https://example.com/cat.png?sig=abc", "http://example.org/x.jpg"):
        out, info = images.input_to_url(url, field="image[0]")
        assert out == url and info == {"url": url}


def test_data_url_variants_are_normalised():
    data = encode(sample(), "PNG")
    b64 = base64.b64encode(data).decode()
    # wrong declared type, line breaks, missing padding: all fine, the bytes decide
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)).rstrip("=")
    url, info = images.input_to_url("data:image/jpeg;base64," + wrapped, field="image[0]")
    assert decode_data_url(url) == ("image/png", data)
    assert info["source"] == "data_url"


# --------------------------------------------------------------------------------------------
# inputs refused
# --------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(missing, field="image[0]")
    assert_names(exc, "image[0]", "nope.png", "no such file", "PNG, JPEG, WebP or GIF")


def test_directory(tmp_path):
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(tmp_path, field="image[2]")
    assert_names(exc, "image[2]", tmp_path.name, "folder")


def test_unreadable_file(tmp_path, monkeypatch):
    p = tmp_path / "secret.png"
    p.write_bytes(encode(sample(), "PNG"))

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", deny, raising=False)  # root can read anything: simulate
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(str(p), field="image[0]")
    assert_names(exc, "image[0]", "secret.png", "permission denied")


def test_non_image_file(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am not a picture")
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(p, field="image[0]")
    assert_names(exc, "image[0]", "notes.png", "not a recognised image")


def test_empty_bytes():
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(b"", field="image[0]")
    assert_names(exc, "image[0]", "0 bytes", "empty")


def test_truncated_png():
    data = encode(sample(size=(200, 200)), "PNG")
    for cut in (len(data) - 20, len(data) // 2, 60):
        with pytest.raises(ValidationError) as exc:
            images.input_to_url(data[:cut], field="image[0]")
        assert_names(exc, "image[0]", f"{cut} bytes")


def test_png_with_bad_crc_is_refused():
    data = bytearray(encode(sample(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # damage the compressed data: the CRC no longer matches
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(bytes(data), field="image[0]")
    assert_names(exc, "image[0]")


def test_truncated_jpeg():
    data = encode(sample(size=(300, 300)), "JPEG")
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(data[: len(data) // 2], field="image[0]")
    assert_names(exc, "image[0]", "truncated")


@pytest.mark.parametrize("url,scheme", [
    ("file:///etc/passwd", "file"), ("ftp://example.com/a.png", "ftp"),
    ("javascript:alert(1)", "javascript"), ("s3://bucket/key.png", "s3"),
])
def test_other_schemes_are_refused(url, scheme):
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(url, field="image[0]")
    assert_names(exc, "image[0]", url[:20], f"{scheme}: scheme is not supported")


def test_url_with_credentials_is_refused_without_echoing_the_password():
    with pytest.raises(ValidationError) as exc:
        images.input_to_url("https://alice:hunter2@example.com/a.png", field="image[0]")
    msg = assert_names(exc, "image[0]", "credentials", "example.com")
    assert "hunter2" not in msg and "alice" not in msg and "hunter2" not in repr(exc.value.value)


@pytest.mark.parametrize("url", ["https:///nohost.png", "https://exa mple.com/a.png", "http://host:99999/x"])
def test_malformed_http_urls(url):
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(url, field="image[0]")
    assert_names(exc, "image[0]", "http(s) URL")


@pytest.mark.parametrize("bad", [None, 42, 3.5, {"a": 1}, ["x.png"], object()])
def test_wrong_types(bad):
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(bad, field="image[3]")
    assert_names(exc, "image[3]", type(bad).__name__, "a file path, bytes, a PIL image")


@pytest.mark.parametrize("url,detail", [
    ("data:text/plain;base64,aGVsbG8=", "not an image"),
    ("data:image/png;base64,@@@not-base64@@@", "base64"),
    ("data:image/png;base64", "no comma"),
    ("data:image/png;base64," + base64.b64encode(b"GIF89a\x01\x00\x01\x00 garbage").decode(), "image"),
])
def test_bad_data_urls(url, detail):
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(url, field="image[0]")
    assert_names(exc, "image[0]", "data:", detail)


def test_too_many_bytes(monkeypatch, tmp_path):
    data = encode(sample(), "PNG")
    monkeypatch.setattr(images, "MAX_INPUT_BYTES", len(data) - 1)
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(data, field="image[0]")
    assert_names(exc, "image[0]", "MB")
    p = tmp_path / "big.png"
    p.write_bytes(data)
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(p, field="image[0]")
    assert_names(exc, "image[0]", "big.png", "MB")


def test_pil_image_with_too_many_pixels(monkeypatch):
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 100)
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(Image.new("RGB", (20, 20)), field="image[0]")
    assert_names(exc, "image[0]", "megapixel")


# --------------------------------------------------------------------------------------------
# decompression bombs and huge headers
# --------------------------------------------------------------------------------------------

def test_20000_square_header_is_refused_quickly(recwarn):
    data = crafted_png(20000, 20000)
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(data, field="image[0]")
    assert time.perf_counter() - t0 < 0.5
    assert_names(exc, "image[0]", "20000x20000", "megapixel")
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_real_compressed_bomb_is_refused_before_decoding():
    w, h = 8000, 6000  # 48 megapixels of 1-bit grey: ~6 KB compressed
    raw = (b"\x00" + b"\x00" * (w // 8)) * h
    data = crafted_png(w, h, bit_depth=1, color_type=0, idat=zlib.compress(raw, 9))
    assert len(data) < 100_000
    assert Image.open(io.BytesIO(data)).size == (w, h)  # a genuine image
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(data, field="image[0]")
    assert time.perf_counter() - t0 < 0.5
    assert_names(exc, "image[0]", "8000x6000")


@pytest.mark.parametrize("w,h", [(10000, 10000), (20000, 20000)])
def test_pillow_bomb_warning_and_error_become_validation_errors(monkeypatch, recwarn, w, h):
    """With our own limit lifted, Pillow's DecompressionBombWarning (> 89 MP) and
    DecompressionBombError (> 179 MP) still end as a ValidationError, not a warning or crash."""
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 10**12)
    monkeypatch.setattr(images, "_sniff", lambda data: None)  # skip our header pre-check
    with pytest.raises(ValidationError) as exc:
        images.input_to_url(crafted_png(w, h), field="image[0]")
    assert_names(exc, "image[0]", "decompression bomb")
    assert Image.MAX_IMAGE_PIXELS == before
    assert not [x for x in recwarn if issubclass(x.category, Image.DecompressionBombWarning)]


def test_image_info_reads_huge_headers_without_decoding():
    t0 = time.perf_counter()
    assert images.image_info(crafted_png(20000, 20000)) == ("png", (20000, 20000))
    assert time.perf_counter() - t0 < 0.1


def test_bomb_refused_as_mask_and_preview():
    with pytest.raises(ValidationError):
        images.mask_to_url(crafted_png(20000, 20000, color_type=6), reference_size=None)
    with pytest.raises(ValueError):
        images.make_preview(crafted_png(20000, 20000))


# --------------------------------------------------------------------------------------------
# image_info / describe_bytes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pil_fmt,kw,fmt", [
    ("PNG", {}, "png"), ("JPEG", {}, "jpeg"), ("JPEG", {"progressive": True}, "jpeg"),
    ("WEBP", {"lossless": True}, "webp"), ("WEBP", {"quality": 50}, "webp"), ("GIF", {}, "gif"),
    ("BMP", {}, "bmp"),
])
def test_image_info(pil_fmt, kw, fmt):
    im = sample("RGBA" if pil_fmt == "WEBP" else "RGB", size=(123, 45))
    assert images.image_info(encode(im, pil_fmt, **kw)) == (fmt, (123, 45))


def test_image_info_rejects_garbage():
    with pytest.raises(ValueError):
        images.image_info(b"definitely not an image")


def test_describe_bytes():
    data = encode(sample(), "PNG")
    d = images.describe_bytes(data)
    assert d == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                 "width": 64, "height": 40, "format": "png"}
    assert images.describe_bytes(b"xx")["format"] is None


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------

def test_mask_accepts_rgba_la_and_palette_with_transparency(tmp_path):
    rgba = sample("RGBA", size=(32, 32))
    for item in (rgba, rgba.convert("LA"), encode(rgba, "PNG")):
        url, info = images.mask_to_url(item, field="mask", reference_size=(32, 32))
        mime, payload = decode_data_url(url)
        assert mime == "image/png" and info["format"] == "png"
        assert Image.open(io.BytesIO(payload)).mode in ("RGBA", "LA")
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 0, 255, 255, 255])
    pal.info["transparency"] = 0
    url, _ = images.mask_to_url(pal, reference_size=(32, 32))
    assert "transparency" in Image.open(io.BytesIO(decode_data_url(url)[1])).info
    p = tmp_path / "mask.png"
    p.write_bytes(encode(pal, "PNG", transparency=0))
    images.mask_to_url(p, reference_size=(32, 32))


def test_mask_without_alpha_is_refused(tmp_path):
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(Image.new("RGB", (8, 8)), field="mask")
    assert_names(exc, "mask", "mode RGB", "transparent pixels mark the area to repaint")
    p = tmp_path / "opaque.png"
    p.write_bytes(encode(Image.new("L", (8, 8)), "PNG"))
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(str(p), field="mask")
    assert_names(exc, "mask", "opaque.png", "no alpha channel", "transparent pixels mark the area to repaint")


@pytest.mark.parametrize("pil_fmt,name", [("JPEG", "JPEG"), ("WEBP", "WEBP"), ("GIF", "GIF"), ("BMP", "BMP")])
def test_mask_must_be_png(pil_fmt, name):
    im = sample("RGBA" if pil_fmt in ("WEBP",) else "RGB")
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(encode(im, pil_fmt), field="mask")
    assert_names(exc, "mask", f"{name} image, not a PNG", "a PNG with an alpha channel")


def test_mask_size_must_match_reference():
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(Image.new("RGBA", (512, 512)), field="mask", reference_size=(1024, 1536))
    assert_names(exc, "mask", "512x512", "1024x1536")
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(encode(Image.new("RGBA", (10, 20)), "PNG"), reference_size=(20, 10))
    assert_names(exc, "mask", "10x20", "20x10")


def test_mask_http_url_passes_through_and_bad_ones_are_refused():
    url = "https://cdn.example.com/mask.png"
    assert images.mask_to_url(url, reference_size=(1, 1)) == (url, {"url": url})
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url("file:///tmp/mask.png")
    assert_names(exc, "mask", "file: scheme")
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(b"junk")
    assert_names(exc, "mask", "4 bytes")


def test_fully_opaque_mask_warns():
    with pytest.warns(UserWarning, match="no transparent pixel"):
        images.mask_to_url(Image.new("RGBA", (4, 4), (0, 0, 0, 255)))


# --------------------------------------------------------------------------------------------
# previews
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,pil_fmt", [("webp", "WEBP"), ("jpeg", "JPEG"), ("png", "PNG")])
def test_preview_is_smaller_and_within_max_side(fmt, pil_fmt):
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (1024, 1536, 3), dtype=np.uint8))
    data = encode(big, "PNG")
    out = images.make_preview(data, max_side=256, format=fmt)
    im = Image.open(io.BytesIO(out))
    assert im.format == pil_fmt
    assert max(im.size) == 256 and im.size == (256, 171)  # aspect kept
    assert len(out) < len(data)


def test_preview_of_big_jpeg_uses_draft_and_is_fast():
    data = encode(sample(size=(4000, 3000)).resize((4000, 3000)), "JPEG", quality=85)
    t0 = time.perf_counter()
    out = images.make_preview(data, max_side=512, format="jpeg")
    assert time.perf_counter() - t0 < 1.0
    assert Image.open(io.BytesIO(out)).size == (512, 384)


def test_small_images_are_still_reencoded():
    data = encode(sample(size=(100, 50)), "PNG")
    out = images.make_preview(data, max_side=1024, format="webp")
    im = Image.open(io.BytesIO(out))
    assert im.format == "WEBP" and im.size == (100, 50)


def test_jpeg_preview_flattens_alpha_on_white():
    data = encode(sample("RGBA"), "PNG")
    im = Image.open(io.BytesIO(images.make_preview(data, format="jpeg", quality=95)))
    assert im.mode == "RGB"
    r, g, b = im.getpixel((2, 2))  # in the transparent quarter
    assert min(r, g, b) > 240


def test_preview_for_display_picks_jpeg_or_png():
    opaque = encode(sample("RGB"), "PNG")
    assert images.preview_for_display(opaque)[0] == "image/jpeg"
    alpha = encode(sample("RGBA", size=(400, 200)), "PNG")
    mime, data = images.preview_for_display(alpha, png_max_side=100)
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (100, 50)
    # an alpha channel that is fully opaque does not force PNG
    assert images.preview_for_display(encode(sample("RGB").convert("RGBA"), "PNG"))[0] == "image/jpeg"


def test_preview_bad_arguments():
    data = encode(sample(), "PNG")
    with pytest.raises(ValueError):
        images.make_preview(data, format="bmp")
    with pytest.raises(ValueError):
        images.make_preview(data, max_side=0)
    with pytest.raises(ValueError):
        images.make_preview(b"not an image")


# --------------------------------------------------------------------------------------------
# metadata on save
# --------------------------------------------------------------------------------------------

META = {
    "prompt": "a red fox in the snow",
    "parameters": '{"n": 1, "size": "1024x1024", "quality": "low"}',
    "tracing_id": "7f0c1c5e-9a43-4d43-9c8e-000000000001",
    "credit": "123.4",
    "model": "openai/gpt-image-2",
}
UNICODE_PROMPT = "un renard roux 🦊 dans la neige — <b>&amp;</b> « ça »\nsecond line"


def pixels(data_or_path) -> tuple[str, tuple[int, int], bytes]:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(src) as im:
        im.load()
        return im.mode, im.size, im.tobytes()


CASES = [
    ("png-rgb", "PNG", "RGB", {}),
    ("png-rgba", "PNG", "RGBA", {}),
    ("png-palette", "PNG", "P", {}),
    ("jpeg", "JPEG", "RGB", {"quality": 90}),
    ("jpeg-grey-progressive", "JPEG", "L", {"progressive": True}),
    ("webp-lossy", "WEBP", "RGB", {"quality": 80}),
    ("webp-lossless", "WEBP", "RGB", {"lossless": True}),
    ("webp-lossless-alpha", "WEBP", "RGBA", {"lossless": True}),
    ("webp-lossy-alpha", "WEBP", "RGBA", {"quality": 70}),
]


@pytest.mark.parametrize("name,pil_fmt,mode,kw", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("prompt", [META["prompt"], UNICODE_PROMPT], ids=["ascii", "unicode"])
def test_metadata_round_trip_keeps_pixels(tmp_path, name, pil_fmt, mode, kw, prompt):
    data = encode(sample(mode), pil_fmt, **kw)
    meta = {**META, "prompt": prompt}
    ext = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}[pil_fmt]
    path = images.save_image(data, tmp_path / f"out{ext}", metadata=meta)
    assert path == tmp_path / f"out{ext}"
    assert pixels(path) == pixels(data)  # not re-encoded
    assert images.read_metadata(path) == {**meta, "Software": "shark_nb"}
    with Image.open(path) as im:
        assert im.format == pil_fmt
        if pil_fmt == "PNG":
            assert im.text["prompt"] == prompt and im.text["Software"] == "shark_nb"
            assert im.info["tracing_id"] == META["tracing_id"]  # before IDAT: no decode needed
        else:
            exif = im.getexif()
            assert exif[0x0131] == "shark_nb"
            desc = exif[0x010E]
            assert desc.encode("latin-1").decode("utf-8") == prompt  # UTF-8 bytes, read as latin-1
            if prompt.isascii():
                assert desc == prompt
            user_comment = exif.get_ifd(0x8769)[0x9286]
            assert user_comment.startswith(b"ASCII\x00\x00\x00") and b"tracing_id" in user_comment
            xmp = im.info["xmp"]
            xmp = xmp if isinstance(xmp, str) else xmp.decode("utf-8")
            assert "shark_nb" in xmp and META["tracing_id"] in xmp


def _png_chunk_list(data: bytes):
    i, out = 8, []
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        ctype = data[i + 4 : i + 8]
        payload = data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        out.append((ctype, payload, crc == zlib.crc32(ctype + payload)))
        i += 12 + length
    return out


def test_png_chunks_have_valid_crcs_and_order(tmp_path):
    data = encode(sample(), "PNG")
    out = images.save_image(data, tmp_path / "a.png", metadata={**META, "prompt": "x" * 5000}).read_bytes()
    chunks = _png_chunk_list(out)
    assert all(ok for _, _, ok in chunks)
    kinds = [c for c, _, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert kinds.index(b"iTXt") < kinds.index(b"IDAT")
    assert images.read_metadata(out)["prompt"] == "x" * 5000  # long text compressed and read back
    # the original chunks are all still there, byte for byte
    assert [c for c in _png_chunk_list(data)] == [c for c in chunks if c[0] != b"iTXt"]


def test_png_existing_text_with_same_key_is_replaced(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", "old prompt")
    info.add_text("Author", "someone")
    data = encode(sample(), "PNG", pnginfo=info)
    path = images.save_image(data, tmp_path / "a.png", metadata=META)
    meta = images.read_metadata(path)
    assert meta["prompt"] == META["prompt"] and meta["Author"] == "someone"
    assert [c for c, _, _ in _png_chunk_list(path.read_bytes())].count(b"iTXt") == len(META) + 1


def test_jpeg_existing_segments_and_exif_are_kept(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0112] = 1              # Orientation
    data = encode(sample(), "JPEG", exif=exif.tobytes(), comment=b"hello comment", quality=90)
    path = images.save_image(data, tmp_path / "a.jpg", metadata=META)
    out = path.read_bytes()
    assert out[:2] == b"\xff\xd8" and out[2:4] == b"\xff\xe0"  # JFIF APP0 still first
    assert b"hello comment" in out
    assert out.count(b"Exif\x00\x00") == 1  # merged, not duplicated
    with Image.open(path) as im:
        e = im.getexif()
        assert e[0x010F] == "CameraMaker" and e[0x0112] == 1 and e[0x010E] == META["prompt"]
        assert im.info.get("comment") == b"hello comment"
    assert pixels(path) == pixels(data)
    # saving again replaces our metadata instead of stacking it
    again = images.save_image(out, tmp_path / "b.jpg", metadata={**META, "credit": "1"})
    assert images.read_metadata(again)["credit"] == "1"
    assert again.read_bytes().count(b"http://ns.adobe.com/xap/1.0/\x00") == 1


def test_jpeg_very_long_prompt_still_fits_its_segments(tmp_path):
    prompt = "é" * 32_000  # 64 KB of UTF-8, 192 KB as escaped JSON: over one APP1 segment
    data = encode(sample(), "JPEG")
    path = images.save_image(data, tmp_path / "a.jpg", metadata={**META, "prompt": prompt})
    assert pixels(path) == pixels(data)
    back = images.read_metadata(path)
    assert back["tracing_id"] == META["tracing_id"]
    assert prompt.startswith(back["prompt"].rstrip("…"))


def _webp_chunks(data: bytes):
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    i, out = 12, []
    while i < len(data):
        fourcc, size = data[i : i + 4], struct.unpack("<I", data[i + 4 : i + 8])[0]
        out.append((fourcc, data[i + 8 : i + 8 + size]))
        i += 8 + size + (size & 1)
    assert i == len(data)
    return out


@pytest.mark.parametrize("kw,mode,alpha", [
    ({"quality": 80}, "RGB", False), ({"lossless": True}, "RGB", False),
    ({"lossless": True}, "RGBA", True), ({"quality": 80}, "RGBA", True),
])
def test_webp_becomes_extended_with_correct_flags(tmp_path, kw, mode, alpha):
    im = sample(mode, size=(301, 77))
    data = encode(im, "WEBP", **kw)
    out = images.save_image(data, tmp_path / "a.webp", metadata=META).read_bytes()
    chunks = _webp_chunks(out)
    fourccs = [c for c, _ in chunks]
    assert fourccs[0] == b"VP8X" and b"EXIF" in fourccs and b"XMP " in fourccs
    vp8x = chunks[0][1]
    flags = vp8x[0]
    assert flags & 0x08 and flags & 0x04 and not flags & 0x02  # EXIF, XMP, not animated
    assert bool(flags & 0x10) == alpha
    assert int.from_bytes(vp8x[4:7], "little") + 1 == 301
    assert int.from_bytes(vp8x[7:10], "little") + 1 == 77
    assert fourccs.index(b"EXIF") > max(fourccs.index(c) for c in (b"VP8 ", b"VP8L") if c in fourccs)
    assert not chunks[fourccs.index(b"EXIF")][1].startswith(b"Exif\x00\x00")  # raw TIFF per spec
    assert pixels(out) == pixels(data)


def test_gif_and_unknown_containers_are_saved_unchanged(tmp_path):
    gif = encode(sample(), "GIF")
    assert images.save_image(gif, tmp_path / "a.gif", metadata=META).read_bytes() == gif


def test_malformed_container_is_saved_raw_with_a_warning(tmp_path):
    broken = encode(sample(), "PNG")[:-30]  # no IEND: cannot be walked
    with pytest.warns(UserWarning, match="could not embed metadata"):
        path = images.save_image(broken, tmp_path / "b.png", metadata=META)
    assert path.read_bytes() == broken  # the paid image is never lost


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    data = encode(sample(), "PNG")
    folder = tmp_path / "deep" / "er"
    p = images.save_image(data, folder / "a.png", metadata=META)
    assert sorted(x.name for x in folder.iterdir()) == ["a.png"]
    old = p.read_bytes()

    # a crash during the write: the old file is intact, no temp file is left behind
    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images.os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        images.save_image(encode(sample("L"), "PNG"), p, metadata=META)
    monkeypatch.undo()
    assert p.read_bytes() == old
    assert sorted(x.name for x in folder.iterdir()) == ["a.png"]

    images.save_image(data, folder / "b.png", metadata=META)
    assert sorted(x.name for x in folder.iterdir()) == ["a.png", "b.png"]


def test_save_without_overwrite(tmp_path):
    data = encode(sample(), "PNG")
    p = images.save_image(data, tmp_path / "a.png", metadata={})
    with pytest.raises(FileExistsError):
        images.save_image(data, p, metadata=META, overwrite=False)
    assert images.read_metadata(p) == {"Software": "shark_nb"}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.png"]


def test_metadata_values_are_coerced_and_none_skipped(tmp_path):
    p = images.save_image(encode(sample(), "PNG"), tmp_path / "a.png",
                          metadata={"credit": 12.5, "params": {"n": 2}, "task_id": None})
    assert images.read_metadata(p) == {"credit": "12.5", "params": '{"n": 2}', "Software": "shark_nb"}


def test_read_metadata_of_plain_images(tmp_path):
    for fmt in ("PNG", "JPEG", "WEBP"):
        assert images.read_metadata(encode(sample(), fmt)) == {}
    with pytest.raises(ValueError):
        images.read_metadata(b"nope")


# --------------------------------------------------------------------------------------------
# file names
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,suffix,expected", [
    ("A red fox in the snow", ".png", "a-red-fox-in-the-snow.png"),
    ("Crème brûlée, façade & naïve café", ".jpg", "creme-brulee-facade-naive-cafe.jpg"),
    ("ﬁne ½ Ⅻ ｆｕｌｌｗｉｄｔｈ", ".png", "fine-12-xii-fullwidth.png"),
    ("日本語のプロンプト", ".png", "image.png"),
    ("🦊🦊🦊", ".webp", "image.webp"),
    ("", ".png", "image.png"),
    ("   ...   ", ".png", "image.png"),
    ("../../etc/passwd", ".png", "etc-passwd.png"),
    ("C:\\Windows\\System32\\evil", ".png", "c-windows-system32-evil.png"),
    ("a/b\\c:d*e?f\"g<h>i|j", ".png", "a-b-c-d-e-f-g-h-i-j.png"),
    ("CON", ".png", "con-image.png"),
    ("nul", ".txt", "nul-image.txt"),
    ("com1", ".png", "com1-image.png"),
    ("LPT9", ".png", "lpt9-image.png"),
    ("Com¹", ".png", "com1-image.png"),
    ("trailing dots...", ".png", "trailing-dots.png"),
    ("tab\tnew\nline\x00nul", ".png", "tab-new-line-nul.png"),
    ("fox", "png", "fox.png"),
    ("fox", "-2.png", "fox-2.png"),
])
def test_safe_filename_table(text, suffix, expected):
    assert images.safe_filename(text, suffix=suffix) == expected


def test_safe_filename_caps_length_on_a_word_boundary():
    prompt = "a very long prompt about " + "foxes and snow " * 40
    name = images.safe_filename(prompt, suffix=".png")
    assert len(name) <= 80 and name.endswith(".png")
    assert name.startswith("a-very-long-prompt-about-foxes")
    assert not name[:-4].endswith("-")
    stem = name[:-4]
    assert stem.split("-")[-1] in {"foxes", "and", "snow"}  # whole words only
    assert len(images.safe_filename("x" * 500, suffix=".jpg", max_len=20)) == 20
    for n in (10, 30, 255):
        assert len(images.safe_filename("word " * 100, suffix=".webp", max_len=n)) <= n
    with pytest.raises(ValueError):
        images.safe_filename("x", suffix=".png", max_len=4)


def test_safe_filename_is_always_safe():
    bad_chars = set('<>:"/\\|?*') | {chr(c) for c in range(32)}
    for text in ["", " ", ".", "..", "con.txt", "a" * 300, "\u202e evil", "x/../..", "ÆØÅ"]:
        name = images.safe_filename(text, suffix=".png")
        assert name and not (set(name) & bad_chars) and name.isascii()
        assert not name.endswith((".", " ")) and not name.startswith(".")
        assert name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL"}


def test_unique_path(tmp_path):
    assert images.unique_path(tmp_path, "a.png") == tmp_path / "a.png"
    (tmp_path / "a.png").write_bytes(b"1")
    assert images.unique_path(tmp_path, "a.png") == tmp_path / "a-2.png"
    (tmp_path / "a-2.png").write_bytes(b"2")
    (tmp_path / "a-3.png").write_bytes(b"3")
    assert images.unique_path(tmp_path, "a.png") == tmp_path / "a-4.png"
    assert images.unique_path(tmp_path, "b") == tmp_path / "b"


def test_suffix_for():
    assert images.suffix_for("jpeg") == ".jpg"
    assert images.suffix_for("png") == ".png"
    assert images.suffix_for("webp") == ".webp"
