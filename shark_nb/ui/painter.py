"""The mask painter: paint the area to repaint over a reference image, in the browser.

    p = shark_nb.MaskPainter(image)        # anything image= accepts, or a result / result image
    p                                      # paint: brush, eraser, [ ] size, undo / redo, clear, invert
    p.mask                                 # PIL RGBA, the image's own size: alpha 0 = painted = repaint
    p.mask_png                             # the same as PNG bytes (what the API wants)
    client.generate(prompt, image=img, mask=p)     # a painter is a valid mask=; %shark --mask p

Built with anywidget: the front end is ``painter.js`` + ``painter.css`` shipped in this package
(no JupyterLab build step), so it runs in JupyterLab 4, Notebook 7, VS Code and Binder.

Every stroke is drawn in the browser (pointer events with pointer capture: mouse, pen, touch)
into an offscreen canvas of the image's natural size; nothing crosses the websocket while a
stroke is drawn. When it ends (and on undo / redo / clear / invert) the mask goes to the kernel
once, as PNG bytes in a binary buffer (:attr:`MaskPainter.mask_png`, a synced ``Bytes`` trait).
The reference travels to the browser once, as a JPEG (PNG when it has transparency) of at most
:data:`DISPLAY_MAX_SIDE` pixels: only the display is reduced, never the mask.

Python-side strokes (:meth:`paint_ellipse`, :meth:`paint_rect`, :meth:`clear`, :meth:`invert`)
change ``mask_png``; the front end redraws from it and can undo them like its own strokes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import anywidget
import traitlets
from PIL import Image, ImageChops, ImageDraw

from .. import images
from ..errors import ValidationError

__all__ = ["MaskPainter", "DISPLAY_MAX_SIDE"]

#: Longest side of the display copy of the reference sent to the browser (the mask keeps the
#: image's own size whatever this is).
DISPLAY_MAX_SIDE = 2048
_HERE = Path(__file__).parent
_ALLOWED_IMAGE = "an image input (a path, bytes, a PIL image, a data: URL, a GeneratedImage or a result)"
_ALLOWED_BOX = "(x0, y0, x1, y1) in the image's pixels with x0 <= x1 and y0 <= y1"


def _bytes_from_json(value: Any, _widget: Any) -> bytes:
    """A buffer from the front end arrives as a memoryview: keep plain bytes."""
    return bytes(value) if value is not None else b""


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _reference_bytes(image: Any) -> bytes:
    """The reference's bytes, checked like any ``image=`` input (an http(s) URL is refused:
    the painter needs the pixels, and shark_nb never fetches a URL it was given)."""
    results = getattr(image, "images", None)
    if isinstance(results, list):            # a GenerationResult: its first image
        if not results:
            raise ValidationError("image", image, _ALLOWED_IMAGE, detail="the result has no images")
        image = results[0]
    url, _info = images.input_to_url(image, field="image")
    if not url.startswith("data:"):
        raise ValidationError("image", image, _ALLOWED_IMAGE,
                              detail="an http(s) URL cannot be painted over; download the image first")
    return images.decode_data_url(url)[1]


class MaskPainter(anywidget.AnyWidget):
    """Paint the area to repaint over ``image``; see the module docstring.

    ``brush_size`` is in the image's pixels (default: a 20th of its longer side); ``color`` and
    ``opacity`` set the overlay that shows the painted area (the image stays visible).
    """

    _esm = _HERE / "painter.js"
    _css = _HERE / "painter.css"

    width = traitlets.Int(read_only=True).tag(sync=True)
    height = traitlets.Int(read_only=True).tag(sync=True)
    #: The display copy of the reference and its mime type (sent once).
    _image = traitlets.Bytes(read_only=True).tag(sync=True)
    _image_type = traitlets.Unicode(read_only=True).tag(sync=True)
    #: The mask, PNG at the image's own size. No echo: the browser that sent it has it already.
    mask_png = traitlets.Bytes().tag(sync=True, from_json=_bytes_from_json, echo_update=False)
    brush_size = traitlets.Int(1).tag(sync=True)
    color = traitlets.Unicode("#ff2d6f").tag(sync=True)
    opacity = traitlets.Float(0.45).tag(sync=True)

    def __init__(self, image: Any, *, brush_size: int | None = None, color: str = "#ff2d6f",
                 opacity: float = 0.45, **kwargs: Any) -> None:
        data = _reference_bytes(image)
        try:
            fmt, (w, h) = images.image_info(data)
            mime, shown = images.preview_for_display(data, max_side=DISPLAY_MAX_SIDE, quality=85)
        except ValueError as exc:
            raise ValidationError("image", image, _ALLOWED_IMAGE, detail=str(exc)) from None
        if not (0 < float(opacity) <= 1):
            raise ValidationError("opacity", opacity, "a number in (0, 1]")
        size = brush_size if brush_size is not None else max(4, round(max(w, h) / 20))
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= max(w, h):
            raise ValidationError("brush_size", brush_size, f"a whole number of pixels from 1 to {max(w, h)}")
        super().__init__(brush_size=size, color=str(color), opacity=float(opacity),
                         mask_png=_png(Image.new("RGBA", (w, h), (0, 0, 0, 255))), **kwargs)
        self.set_trait("width", w)
        self.set_trait("height", h)
        self.set_trait("_image", shown)
        self.set_trait("_image_type", mime)
        #: The reference's bytes as given (checked); ``reference_format`` its format.
        self.reference = data
        self.reference_format = fmt

    # ----------------------------------------------------------------------------- the mask
    @traitlets.validate("mask_png")
    def _check_mask_png(self, proposal: dict) -> bytes:
        """Whatever sets the mask (the browser included) must give a PNG of the image's size."""
        data = bytes(proposal["value"])
        try:
            fmt, size = images.image_info(data)
        except ValueError as exc:
            raise traitlets.TraitError(f"mask_png: {exc}") from None
        expected = (self.width, self.height)
        if fmt != "png" or (self.width and tuple(size) != expected):
            raise traitlets.TraitError(f"mask_png must be a PNG of {expected[0]}x{expected[1]}, "
                                       f"got a {fmt} of {size[0]}x{size[1]}")
        return data

    @property
    def size(self) -> tuple[int, int]:
        """The reference image's (width, height), which is also the mask's."""
        return (self.width, self.height)

    @property
    def mask(self) -> Image.Image:
        """The mask as a PIL RGBA image of the reference's size: alpha 0 where painted (the area
        to repaint), 255 elsewhere (a brush's anti-aliased rim is in between)."""
        im = images.open_image(self.mask_png)
        return im if im.mode == "RGBA" else im.convert("RGBA")

    @property
    def painted(self) -> float:
        """The fraction of the image marked for repainting (alpha below 128)."""
        hist = self.mask.getchannel("A").histogram()
        return sum(hist[:128]) / (self.width * self.height)

    def _set_alpha(self, alpha: Image.Image) -> None:
        im = Image.new("RGBA", self.size, (0, 0, 0, 0))
        im.putalpha(alpha)
        self.mask_png = _png(im)

    # ------------------------------------------------------------------- Python-side strokes
    def _box(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise ValidationError("box", box, _ALLOWED_BOX) from None
        if not (x0 <= x1 and y0 <= y1):
            raise ValidationError("box", box, _ALLOWED_BOX, detail="the corners are swapped")
        return x0, y0, x1, y1

    def _paint(self, shape: str, box: Sequence[float], erase: bool) -> None:
        xy = self._box(box)
        alpha = self.mask.getchannel("A")
        getattr(ImageDraw.Draw(alpha), shape)(xy, fill=255 if erase else 0)
        self._set_alpha(alpha)

    def paint_ellipse(self, box: Sequence[float], *, erase: bool = False) -> None:
        """Mark the ellipse inside ``box`` = (x0, y0, x1, y1) (image pixels) for repainting;
        ``erase=True`` keeps it instead. The front end shows it (and can undo it)."""
        self._paint("ellipse", box, erase)

    def paint_rect(self, box: Sequence[float], *, erase: bool = False) -> None:
        """Mark the rectangle ``box`` = (x0, y0, x1, y1) (image pixels) for repainting."""
        self._paint("rectangle", box, erase)

    def clear(self) -> None:
        """Nothing painted: the whole image is kept."""
        self._set_alpha(Image.new("L", self.size, 255))

    def invert(self) -> None:
        """Swap painted and kept."""
        self._set_alpha(ImageChops.invert(self.mask.getchannel("A")))

    def __repr__(self) -> str:
        return (f"MaskPainter({self.width}x{self.height}, {self.painted:.1%} painted; "
                "use .mask / .mask_png, or pass it as mask=)")
