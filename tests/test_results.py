"""shark_nb.results: Usage, GeneratedImage, GenerationResult (saving, metadata, display)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shark_nb import images
from shark_nb.errors import ValidationError
from shark_nb.params import build_request
from shark_nb.results import GeneratedImage, GenerationResult, Usage


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noisy(size=(1024, 1024), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    if mode == "RGBA":
        arr[..., 3] = 255
        arr[: h // 4, : w // 4, 3] = 0
    return Image.fromarray(arr, mode)


PROMPT = 'a <b>fox</b> & "friends" <script>alert(1)</script>'


def make_result(fmt="PNG", n=2, credit=412.5, offline=False, mode="RGB", size=(1024, 1024), **kw):
    request = build_request(PROMPT, n=n, size="1024x1024", quality="low", output_format=fmt.lower())
    imgs = [GeneratedImage.from_bytes(encode(noisy(size, mode, seed=i), fmt), url=f"https://store.example/{i}",
                                      index=i) for i in range(n)]
    return GenerationResult(
        images=imgs, usage=Usage(12, 272 * n, 12 + 272 * n), credit=credit, tracing_id="trace-123",
        request=request, task_id=kw.pop("task_id", None), created=1_700_000_000, latency=3.25,
        offline=offline, call_id="call-1", **kw,
    )


# --------------------------------------------------------------------------------------------
# Usage
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("obj,expected", [
    ({"input_tokens": 10, "output_tokens": 272, "total_tokens": 282}, Usage(10, 272, 282)),
    ({"input_tokens": 10, "output_tokens": 272}, Usage(10, 272, 282)),
    ({"output_tokens": 272}, Usage(None, 272, None)),
    ({"total_tokens": 5}, Usage(None, None, 5)),
    ({"input_tokens": "10", "output_tokens": 20.0, "total_tokens": "x"}, Usage(10, 20, 30)),
    ({"input_tokens": True, "output_tokens": -3, "total_tokens": float("nan")}, None),
    ({"input_tokens": None, "output_tokens": [1], "total_tokens": {"a": 1}}, None),
    ({"input_tokens": 1.5, "output_tokens": 2}, Usage(None, 2, None)),
    ({"prompt_tokens": 7, "completion_tokens": 8}, Usage(7, 8, 15)),
    ({"input_tokens": 10, "output_tokens": 272, "total_tokens": 282,
      "input_tokens_details": {"image_tokens": 0}, "extra": "ignored"}, Usage(10, 272, 282)),
    ({}, None), (None, None), ("usage", None), ([1, 2, 3], None), (42, None),
])
def test_usage_from_json(obj, expected):
    assert Usage.from_json(obj) == expected


def test_usage_is_frozen_and_prints():
    u = Usage(1, 2, 3)
    with pytest.raises(AttributeError):
        u.input_tokens = 5  # type: ignore[misc]
    assert str(u) == "1 in / 2 out / 3 total"
    assert str(Usage(None, 2, None)) == "? in / 2 out / ? total"
    assert u.to_dict() == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


# --------------------------------------------------------------------------------------------
# GeneratedImage
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pil_fmt,fmt", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_from_bytes(pil_fmt, fmt):
    data = encode(noisy((300, 200)), pil_fmt)
    img = GeneratedImage.from_bytes(data, url="https://x/y", index=3)
    assert img.data == data and img.format == fmt and img.size == (300, 200)
    assert img.url == "https://x/y" and img.index == 3 and img.result is None
    assert (img.width, img.height) == (300, 200)
    pil = img.to_pil()
    assert pil.size == (300, 200)
    assert pil.tobytes() == Image.open(io.BytesIO(data)).convert(pil.mode).tobytes()


def test_from_bytes_rejects_garbage():
    with pytest.raises(ValueError):
        GeneratedImage.from_bytes(b"<html>expired link</html>")


def test_image_repr_is_short_and_has_no_bytes():
    img = GeneratedImage.from_bytes(encode(noisy((1024, 1024)), "PNG"))
    r = repr(img)
    assert len(r) < 80 and "1024x1024" in r and "PNG" in r and "\\x" not in r and "b'" not in r


def test_image_preview_is_small_and_cached():
    img = GeneratedImage.from_bytes(encode(noisy((1536, 1024)), "PNG"))
    p = img.preview(max_side=512)
    im = Image.open(io.BytesIO(p))
    assert im.format == "WEBP" and im.size == (512, 341) and len(p) < len(img.data)
    assert img.preview(max_side=512) is p
    assert Image.open(io.BytesIO(img.preview(max_side=200, format="jpeg"))).format == "JPEG"


def test_mimebundle_is_a_compact_jpeg_for_opaque_images():
    img = GeneratedImage.from_bytes(encode(noisy((2048, 2048)), "PNG"))
    bundle = img._repr_mimebundle_()
    assert set(bundle) == {"image/jpeg", "text/plain"}
    data = base64.b64decode(bundle["image/jpeg"])
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and max(im.size) <= 1024
    assert len(data) < len(img.data) / 4
    assert bundle["text/plain"] == repr(img)


def test_mimebundle_falls_back_to_png_with_transparency():
    img = GeneratedImage.from_bytes(encode(noisy((1024, 1024), "RGBA"), "PNG"))
    bundle = img._repr_mimebundle_()
    assert "image/png" in bundle and "image/jpeg" not in bundle
    im = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert im.mode == "RGBA" and max(im.size) <= 512


def test_mimebundle_of_broken_bytes_is_text_only():
    good = GeneratedImage.from_bytes(encode(noisy((64, 64)), "PNG"))
    broken = GeneratedImage(data=good.data[:80], format="png", size=(64, 64))
    assert set(broken._repr_mimebundle_()) == {"text/plain"}


# --------------------------------------------------------------------------------------------
# GenerationResult
# --------------------------------------------------------------------------------------------

def test_result_basics():
    r = make_result()
    assert len(r) == 2 and list(r) == r.images and r[1] is r.images[1] and r[-1].index == 1
    assert all(img.result is r for img in r)
    assert r.prompt == PROMPT and r.model == "openai/gpt-image-2"
    assert r.cost_usd == pytest.approx(0.04125)
    assert r.estimate_credit == pytest.approx(r.request.estimate_credit())
    assert r.saved == []
    assert make_result(credit=None).cost_usd is None


def test_result_indexes_images_when_not_given():
    data = encode(noisy((8, 8)), "PNG")
    r = GenerationResult(images=[GeneratedImage.from_bytes(data), GeneratedImage.from_bytes(data)])
    assert [img.index for img in r] == [0, 1] and r.prompt == "" and r.estimate_credit is None


def test_result_repr_is_short_and_safe():
    r = make_result(offline=True)
    text = repr(r)
    assert len(text) < 200 and "2 images" in text and "trace-123" in text and "offline" in text
    assert "b'" not in text and "\\x" not in text
    assert "credit=unknown" in repr(make_result(credit=None))


def test_metadata():
    r = make_result(task_id="task_abc", offline=True)
    meta = r.metadata()
    assert meta["prompt"] == PROMPT
    assert json.loads(meta["parameters"]) == r.request.params()
    assert meta["tracing_id"] == "trace-123" and meta["credit"] == "412.5" and meta["model"] == "openai/gpt-image-2"
    assert meta["created"] == "1700000000" and meta["task_id"] == "task_abc"
    assert meta["offline"] == "offline simulator" and meta["Software"] == "shark_nb"
    assert json.loads(meta["usage"]) == {"input_tokens": 12, "output_tokens": 544, "total_tokens": 556}
    assert all(isinstance(v, str) for v in meta.values())
    m2 = make_result(credit=None).metadata()
    assert m2["credit"] == "unknown" and m2["offline"] == "false" and "task_id" not in m2


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_save_folder_writes_safe_unique_names_with_metadata(tmp_path, fmt, suffix):
    r = make_result(fmt=fmt, size=(128, 128))
    paths = r.save(tmp_path / "out")
    assert [p.name for p in paths] == [
        f"a-b-fox-b-friends-script-alert-1-script-{i}{suffix}" for i in (1, 2)]
    assert r.saved == paths
    for img, p in zip(r, paths):
        assert p.read_bytes() != img.data  # metadata added...
        assert Image.open(p).tobytes() == Image.open(io.BytesIO(img.data)).tobytes()  # ...pixels untouched
        meta = images.read_metadata(p)
        assert meta == {**r.metadata(), "image_index": str(img.index)}
    again = r.save(tmp_path / "out")  # never overwrites
    assert [p.name for p in again] == [f"a-b-fox-b-friends-script-alert-1-script-{i}-2{suffix}" for i in (1, 2)]
    assert len(list((tmp_path / "out").iterdir())) == 4
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_save_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = make_result(n=1, size=(32, 32))
    (p,) = r.save()
    assert p.parent == Path("shark-images") and p.name == "a-b-fox-b-friends-script-alert-1-script.png"
    p2 = r[0].save()
    assert p2.name.endswith("-2.png") and r.saved == [p, p2]


def test_image_save_to_explicit_path(tmp_path):
    r = make_result(fmt="JPEG", n=1, size=(32, 32))
    target = tmp_path / "sub" / "mine.jpeg"
    assert r[0].save(target) == target and target.exists()
    first = target.read_bytes()
    again = r[0].save(target)  # a second save never replaces the first file...
    assert again == target.with_name("mine-2.jpeg") and target.read_bytes() == first
    assert r[0].save(target, overwrite=True) == target  # ...unless asked to
    assert images.read_metadata(target)["tracing_id"] == "trace-123"
    with pytest.raises(ValidationError) as exc:
        r[0].save(tmp_path / "wrong.png")
    assert "path=" in str(exc.value) and ".jpg" in str(exc.value) and "JPEG" in str(exc.value)
    # an existing folder whose name has a dot is a folder
    folder = tmp_path / "v1.0"
    folder.mkdir()
    assert r[0].save(folder).parent == folder


def test_standalone_image_save(tmp_path):
    img = GeneratedImage.from_bytes(encode(noisy((16, 16)), "PNG"))
    p = img.save(tmp_path)
    assert p.name == "image.png"
    assert images.read_metadata(p) == {"Software": "shark_nb", "image_index": "0"}


def _thumbs(html_text: str) -> list[Image.Image]:
    out = []
    for mime, b64 in re.findall(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"', html_text):
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert mime == f"image/{im.format.lower()}"
        out.append(im)
    return out


def test_html_gallery_is_compact_and_escaped():
    r = make_result(size=(1536, 1024))
    text = r._repr_html_()
    assert "<script>" not in text and "<b>fox" not in text
    assert html.escape(PROMPT) in text
    thumbs = _thumbs(text)
    assert len(thumbs) == 2 and all(t.format == "JPEG" and max(t.size) <= 256 for t in thumbs)
    assert len(text) < 100_000
    assert "1536×1024" in text and "PNG" in text
    assert "this call: 412.5 credit ($0.04)" in text and "trace-123" in text and "3.2 s" in text
    assert "12 in / 544 out / 556 total" in text
    assert "offline simulator" not in text


def test_html_footer_unknown_credit_and_offline_badge():
    text = make_result(credit=None, offline=True, n=1, size=(64, 64))._repr_html_()
    assert "credit unknown" in text and "estimate" in text and "offline simulator" in text


def test_html_with_transparency_and_broken_images():
    r = make_result(n=1, mode="RGBA", size=(300, 300))
    (thumb,) = _thumbs(r._repr_html_())
    assert thumb.format == "PNG" and max(thumb.size) <= 256
    good = r[0]
    broken = GeneratedImage(data=good.data[:100], format="png", size=good.size)
    text = GenerationResult(images=[broken], tracing_id='<"x">')._repr_html_()
    assert "no preview" in text and '<"x">' not in text and "&lt;&quot;x&quot;&gt;" in text


def test_html_links_each_image_to_its_saved_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = make_result(n=2, size=(16, 16))
    assert r._repr_html_().count("<i>not saved</i>") == 2
    paths = r.save(tmp_path / "out")
    text = r._repr_html_()
    for p in paths:
        assert f'<a href="out/{p.name}" target="_blank"' in text
    assert "not saved" not in text
