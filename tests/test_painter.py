"""shark_nb.MaskPainter in Python: the mask's PNG round trip, sizes, alpha semantics, invert, the
paint helpers, the messages the front end exchanges, the mask check, and a painter used as
``mask=`` by the client (against the simulator), the magic and the studio.

The drawing itself (pointer events in a real browser) is tests/test_browser_painter.py.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import traitlets
from PIL import Image

import shark_nb
from shark_nb import ValidationError, images
from shark_nb.ui.painter import DISPLAY_MAX_SIDE, MaskPainter

UI = Path(shark_nb.__file__).parent / "ui"


def png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def alpha(p: MaskPainter) -> np.ndarray:
    return np.asarray(p.mask.getchannel("A"))


def scene(size=(320, 200)) -> Image.Image:
    im = Image.new("RGB", size, (30, 120, 200))
    im.paste((240, 200, 40), (0, size[1] // 2, size[0], size[1]))
    return im


# ------------------------------------------------------------------------ inputs and sizes

@pytest.mark.parametrize("kind", ["pil", "png-bytes", "jpeg-bytes", "path", "data-url", "rgba-pil"])
def test_mask_starts_opaque_at_the_references_own_size(kind, tmp_path):
    im = scene((333, 187))
    item = {"pil": im, "png-bytes": png_bytes(im), "jpeg-bytes": png_bytes(im, "JPEG"),
            "rgba-pil": im.convert("RGBA")}.get(kind)
    if kind == "path":
        im.save(tmp_path / "ref.png")
        item = str(tmp_path / "ref.png")
    if kind == "data-url":
        item = images.input_to_url(im, field="image")[0]
    p = MaskPainter(item)
    assert p.size == (333, 187) and (p.width, p.height) == (333, 187)
    m = p.mask
    assert m.mode == "RGBA" and m.size == (333, 187)
    assert alpha(p).min() == 255                         # nothing painted: everything kept
    assert images.image_info(p.mask_png) == ("png", (333, 187))
    assert p.painted == 0.0


def test_a_generated_image_and_a_result_are_accepted():
    client = shark_nb.Shark(offline=True, quiet=True)
    result = client.generate("a fox", size="1024x1536", quality="low")
    for item in (result.images[0], result):
        p = MaskPainter(item)
        assert p.size == (1024, 1536) and p.reference == result.images[0].data


def test_big_image_is_shown_reduced_but_the_mask_keeps_its_own_size():
    p = MaskPainter(scene((4096, 2048)))
    fmt, shown = images.image_info(p._image)
    assert p._image_type == "image/jpeg" and fmt == "jpeg"
    assert shown == (DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE // 2)
    assert p.mask.size == (4096, 2048) and images.image_info(p.mask_png)[1] == (4096, 2048)
    assert len(p._image) < 1_000_000 and len(p.mask_png) < 200_000
    # a transparent reference is shown as a PNG (a JPEG would lose its alpha)
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    assert MaskPainter(rgba)._image_type == "image/png"


@pytest.mark.parametrize("item, words", [
    ("https://example.com/a.png", "download the image first"),
    (b"not an image", "image"),
    ("no-such-file.png", "no-such-file.png"),
    (42, "int"),
])
def test_inputs_that_cannot_be_painted_over_are_refused(item, words):
    with pytest.raises(ValidationError) as exc:
        MaskPainter(item)
    assert exc.value.field == "image" and words in str(exc.value)


@pytest.mark.parametrize("kwargs, field", [
    (dict(brush_size=0), "brush_size"), (dict(brush_size=10_000), "brush_size"), (dict(brush_size=2.5), "brush_size"),
    (dict(brush_size=True), "brush_size"), (dict(opacity=0), "opacity"), (dict(opacity=1.5), "opacity"),
])
def test_bad_settings_are_refused(kwargs, field):
    with pytest.raises(ValidationError) as exc:
        MaskPainter(scene(), **kwargs)
    assert exc.value.field == field


def test_default_brush_is_a_twentieth_of_the_longer_side():
    assert MaskPainter(scene((400, 100))).brush_size == 20
    assert MaskPainter(scene((40, 30))).brush_size == 4
    assert MaskPainter(scene(), brush_size=7).brush_size == 7


# ---------------------------------------------------------------- alpha semantics, helpers

def test_paint_ellipse_makes_its_area_transparent_and_nothing_else():
    p = MaskPainter(scene((300, 200)))
    p.paint_ellipse((100, 50, 200, 150))
    a = alpha(p)
    assert a[100, 150] == 0                       # centre: repaint
    assert a[55, 105] == 255 and a[100, 99] == 255 and a[10, 10] == 255 and a[199, 299] == 255
    assert set(np.unique(a)) == {0, 255}          # Python strokes are crisp
    assert p.painted == pytest.approx(np.pi * 50 * 50 / (300 * 200), rel=0.05)


def test_paint_rect_covers_exactly_its_box_and_erase_gives_it_back():
    p = MaskPainter(scene((300, 200)))
    p.paint_rect((10, 20, 29, 39))                # PIL boxes include both corners
    a = alpha(p)
    assert (a[20:40, 10:30] == 0).all() and (a == 0).sum() == 400
    p.paint_rect((10, 20, 19, 39), erase=True)
    a = alpha(p)
    assert (a[20:40, 20:30] == 0).all() and (a == 0).sum() == 200
    p.paint_rect((-50, -50, 5, 5))                # boxes may leave the image: clipped
    assert (alpha(p)[:6, :6] == 0).all()


@pytest.mark.parametrize("box", [(10, 10, 5, 20), (1, 2, 3), "abcd", None, (0, 0, "x", 1)])
def test_bad_boxes_are_refused(box):
    p = MaskPainter(scene())
    with pytest.raises(ValidationError) as exc:
        p.paint_ellipse(box)
    assert exc.value.field == "box"
    assert alpha(p).min() == 255                  # nothing changed


def test_invert_swaps_painted_and_kept_and_twice_is_identity():
    p = MaskPainter(scene((120, 80)))
    p.paint_rect((0, 0, 59, 79))
    before = alpha(p).copy()
    p.invert()
    assert (alpha(p) == 255 - before).all()
    assert p.painted == pytest.approx(0.5)
    p.invert()
    assert (alpha(p) == before).all()
    p.clear()
    assert alpha(p).min() == 255 and p.painted == 0


def test_png_round_trip_and_what_the_browser_may_send():
    p = MaskPainter(scene((64, 48)))
    m = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (8, 8, 24, 24))
    m.putpixel((30, 30), (0, 0, 0, 100))          # a brush's soft rim is kept as it is
    sent = png_bytes(m)
    p.set_state({"mask_png": memoryview(sent)})   # how the front end's buffer arrives
    assert isinstance(p.mask_png, bytes) and p.mask_png == sent
    assert p.mask.tobytes() == m.tobytes()
    # anything else is refused and the mask stays as it was
    for bad in (png_bytes(m.resize((32, 24))), png_bytes(m.convert("RGB"), "JPEG"), b"garbage"):
        with pytest.raises(traitlets.TraitError):
            p.mask_png = bad
        assert p.mask_png == sent


def test_the_front_end_gets_python_strokes_and_no_echo_of_its_own(monkeypatch):
    p = MaskPainter(scene((64, 48)))
    sent = []
    monkeypatch.setattr(p, "_send", lambda msg, buffers=None: sent.append((msg, buffers)))
    p.paint_rect((0, 0, 9, 9))
    (msg, buffers), = sent
    assert msg["method"] == "update" and msg["state"] == {} and msg["buffer_paths"] == [["mask_png"]]
    assert bytes(buffers[0]) == p.mask_png        # the PNG itself, as a binary buffer (no base64)
    sent.clear()
    m = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    p.set_state({"mask_png": memoryview(png_bytes(m))})
    assert not any("mask_png" in str(s[0]) for s in sent), sent   # no 2 MB echo back to the browser


def test_front_end_files_ship_in_the_package_and_are_loaded_from_files():
    js, css = (UI / "painter.js").read_text(), (UI / "painter.css").read_text()
    p = MaskPainter(scene((10, 10)))
    assert p._esm == js and p._css == css
    assert "export default" in js and "setPointerCapture" in js
    pyproject = (UI.parents[1] / "pyproject.toml").read_text()
    assert '"shark_nb.ui" = ["*.js", "*.css"]' in pyproject and '"anywidget' in pyproject
    assert "MaskPainter" in shark_nb.__all__ and shark_nb.MaskPainter is MaskPainter


def test_repr_says_what_it_is_without_pixels():
    p = MaskPainter(scene((100, 50)))
    p.paint_rect((0, 0, 49, 49))
    assert repr(p) == "MaskPainter(100x50, 50.0% painted; use .mask / .mask_png, or pass it as mask=)"


# ------------------------------------------------------------------------- the mask check

def test_a_painter_is_checked_like_any_mask():
    p = MaskPainter(scene((64, 48)))
    p.paint_rect((0, 0, 9, 9))
    url, info = images.mask_to_url(p, field="mask", reference_size=(64, 48))
    assert url.startswith("data:image/png;base64,")
    assert images.decode_data_url(url)[1] == p.mask_png
    assert info["source"] == "painter" and (info["width"], info["height"]) == (64, 48)
    with pytest.raises(ValidationError) as exc:
        images.mask_to_url(p, field="mask", reference_size=(128, 96))
    assert "the mask is 64x48 but the reference image is 128x96" in str(exc.value)


def test_an_unpainted_painter_warns_that_nothing_would_be_repainted():
    p = MaskPainter(scene((64, 48)))
    with pytest.warns(UserWarning, match="no transparent pixel"):
        images.mask_to_url(p, reference_size=(64, 48))


def test_an_object_whose_mask_png_is_not_bytes_is_refused():
    class Fake:
        mask_png = "not bytes"

    class Jpeg:
        mask_png = png_bytes(Image.new("RGB", (8, 8)), "JPEG")

    with pytest.raises(ValidationError, match="mask_png is a str, not PNG bytes"):
        images.mask_to_url(Fake())
    with pytest.raises(ValidationError, match="JPEG image, not a PNG"):
        images.mask_to_url(Jpeg())


# ------------------------------------------------------------------ a painter as mask=

def test_generate_with_a_painter_repaints_only_the_painted_area():
    client = shark_nb.Shark(offline=True, quiet=True)
    ref = Image.new("RGB", (1024, 1024), (220, 20, 20))
    p = MaskPainter(ref)
    p.paint_rect((0, 0, 511, 1023))                       # left half: repaint
    result = client.generate("paint the left", image=ref, mask=p, size="1024x1024", quality="low")
    out = np.asarray(result.images[0].to_pil().convert("RGB"), dtype=np.float32)
    right = out[150:600, 700:950].mean(axis=(0, 1))
    left = out[150:600, 50:400].mean(axis=(0, 1))
    assert right[0] > 170 and right[1] < 70 and right[2] < 70     # kept: still red
    assert np.abs(left - right).sum() > 60                        # repainted
    mask_input = client.ledger.records[-1]["inputs"][-1]
    assert mask_input["role"] == "mask" and mask_input["source"] == "painter"
    assert mask_input["sha256"] == images.describe_bytes(p.mask_png)["sha256"]


def test_generate_refuses_a_painter_over_another_size_before_sending():
    client = shark_nb.Shark(offline=True, quiet=True)
    p = MaskPainter(scene((64, 48)))
    p.paint_rect((0, 0, 9, 9))
    calls = client.ledger.calls
    with pytest.raises(ValidationError, match="64x48 but the reference image is 1024x1024"):
        client.generate("x", image=Image.new("RGB", (1024, 1024)), mask=p, size="1024x1024")
    assert client.ledger.calls == calls


def test_magic_takes_a_painter_variable_as_mask(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from shark_nb import magic

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    magic.unload_ipython_extension(shell)
    magic.reset_client()
    magic.load_ipython_extension(shell)
    try:
        ref = Image.new("RGB", (256, 256), "white")
        painter = MaskPainter(ref)
        painter.paint_ellipse((64, 64, 191, 191))
        shell.user_ns.update(ref=ref, painter=painter, tiny=MaskPainter(scene((32, 32))))
        with capture_output():
            result = shell.run_cell("%shark --image ref --mask painter --quality low --size 1024x1024 a moon")
        result.raise_error()
        inputs = shell.user_ns["_shark"].request.inputs
        assert inputs[-1]["role"] == "mask" and inputs[-1]["source"] == "painter"
        with capture_output():
            bad = shell.run_cell("%shark --image ref --mask tiny a moon")
        assert "32x32 but the reference image is 256x256" in str(bad.error_in_exec)
    finally:
        for name in ("ref", "painter", "tiny", "_shark"):
            shell.user_ns.pop(name, None)
        magic.unload_ipython_extension(shell)
        magic.reset_client()


# --------------------------------------------------------------------------- the studio

@pytest.fixture
async def st(tmp_path):
    from shark_nb import AsyncShark, Ledger
    from shark_nb.simulator import Simulator

    client = AsyncShark(simulator=Simulator(latency=0), ledger=Ledger(tmp_path / "l.jsonl"), quiet=True)
    s = shark_nb.studio(client, save_folder=str(tmp_path / "out"))
    yield s
    s.close()
    await client.aclose()


def _paint_buttons(st):
    return [w for card in st.reference_box.children for w in card.children
            if "shark-studio-paint-mask" in getattr(w, "_dom_classes", ())]


async def test_studio_paint_mask_opens_the_painter_and_fills_the_mask_slot(st):
    assert st.add_reference(png_bytes(scene((64, 48))), name="a.png")
    assert st.add_reference(png_bytes(scene((80, 80))), name="b.png")
    buttons = _paint_buttons(st)
    assert len(buttons) == 2                      # every reference image gets "Paint mask"
    buttons[0].click()
    p = st.painter
    assert isinstance(p, MaskPainter) and p.size == (64, 48) and p in st.uploads.painter_box.children
    assert st.mask is None                        # opening it sets nothing yet
    p.paint_ellipse((10, 10, 30, 30))             # a stroke (from Python; the browser's arrive the same way)
    assert st.mask == p.mask_png and st.mask_name == "painted over a.png"
    assert len(st.mask_box.children) == 1 and st.mask_message.value == ""
    # the upload slot stays
    assert st.mask_upload in st.uploads.mask_section.children
    # over an image of another size: refused like an uploaded mask of the wrong size
    buttons = _paint_buttons(st)
    buttons[1].click()
    q = st.painter
    assert q is not p and q.size == (80, 80) and st.mask == p.mask_png
    q.paint_rect((0, 0, 9, 9))
    assert st.mask == p.mask_png and "80x80" in st.mask_message.value and "64x48" in st.mask_message.value
    st.uploads.close_painter()
    assert st.painter is None and not st.uploads.painter_box.children


async def test_studio_painter_continues_the_current_mask_and_closes_with_its_image(st):
    st.add_reference(png_bytes(scene((64, 48))), name="a.png")
    m = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, 16, 16))
    assert st.set_mask(png_bytes(m), name="up.png")
    p = st.open_painter(0)
    assert (alpha(p)[:16, :16] == 0).all() and st.mask_name == "up.png"
    st.set_mask(None)
    assert st.set_mask(p, name=None) and st.mask_name == "painted mask"     # set_mask takes a painter
    st.remove_reference(0)
    assert st.painter is None                     # its image went: the painter closes
    assert st.mask is None                        # and the mask with it, as for uploads


async def test_studio_sends_the_painted_mask(st):
    st.add_reference(png_bytes(Image.new("RGB", (1024, 1024), (220, 20, 20))), name="red.png")
    p = st.open_painter(0)
    p.paint_rect((0, 0, 511, 1023))
    st.prompt.value = "paint the left"
    st.generate_button.click()
    await st.wait()
    assert st.results and not st.last_error, st.status.value
    record = st.client.ledger.records[-1]
    assert [i["role"] for i in record["inputs"]] == ["image", "mask"]
    assert record["inputs"][1]["sha256"] == images.describe_bytes(p.mask_png)["sha256"]


async def test_paint_mask_only_where_the_model_takes_a_mask(st):
    st.add_reference(png_bytes(scene((64, 48))), name="a.png")
    assert len(_paint_buttons(st)) == 1
    st.model.value = shark_nb.model_spec("gemini").id
    assert _paint_buttons(st) == []
    st.model.value = shark_nb.model_spec("gpt-image-2").id
    assert len(_paint_buttons(st)) == 1


def test_no_warning_noise_when_building_a_painter():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaskPainter(scene((50, 50)))
