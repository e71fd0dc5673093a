"""The studio's image slots: reference images and the mask, sized to the current model.

``configure(spec)`` shows the slots the model has: up to ``spec.max_images`` reference images
(none for Seedream and Midjourney — Midjourney's ``sref`` is a URL box among the settings), one
*required* image for Grok edit, the mask slot only where ``spec.takes_mask``. Images added for
another model are kept when the model changes (the user may switch back): a model that takes
none does not send them, and the slot says so in words; more images than the model takes, or a
required image missing, blocks Generate with a message (:meth:`UploadSlots.blocked`).

Uploads travel from the browser to the kernel in one websocket message. Jupyter Server keeps
Tornado's default ``websocket_max_message_size`` of 10 MiB, and a ``FileUpload`` sends all the
files picked at once in one message: so pick files that together stay under about 10 MB (larger:
``studio.add_reference("path/to/file")`` from code, or raise
``--ServerApp.tornado_settings="{'websocket_max_message_size': 104857600}"``). Whatever arrives
is checked here: at most :data:`MAX_UPLOAD_BYTES` per file, not empty, decodable as an image
(the same reader the client uses); a mask must be a PNG with alpha, the size of the first image.

"Paint mask" on a reference image opens a :class:`~shark_nb.ui.painter.MaskPainter` over it
under the mask slot; each finished stroke puts the painted mask in the slot through
:meth:`UploadSlots.set_mask`, so it is checked exactly like an uploaded one.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets
import traitlets

from .. import text
from ..errors import ValidationError
from ..schemas import ModelSpec
from .common import MUTED, close_tree, note, plain, section, thumb, validation_detail

__all__ = ["UploadSlots", "MAX_UPLOAD_BYTES"]

#: Largest uploaded file accepted (bytes). Note that Jupyter Server's default websocket message
#: limit (10 MiB, Tornado's default) usually stops larger uploads before they reach the kernel.
MAX_UPLOAD_BYTES = 20 * 1000 * 1000
REF_THUMB_SIDE = 96


class UploadSlots:
    """Reference images (``.references``: bytes, ``.reference_names``) and the mask (``.mask``,
    ``.mask_name``) with their upload buttons, thumbnails and messages. ``on_change()`` runs
    after every change (the studio updates its estimate and its Generate button)."""

    def __init__(self, on_change: Callable[[], Any] = lambda: None) -> None:
        self.on_change = on_change
        self.spec: ModelSpec | None = None
        self.references: list[bytes] = []
        self.reference_names: list[str] = []
        self.mask: bytes | None = None
        self.mask_name: str | None = None
        self.painter: Any = None           # the open MaskPainter, if any
        self.painter_index: int | None = None
        self._painted_over: bytes | None = None   # the reference the painter shows

        grid = dict(grid_template_columns="repeat(auto-fill, 76px)", grid_gap="6px", width="100%")
        self.reference_title = widgets.HTML()
        self.reference_upload = widgets.FileUpload(
            accept="image/*", multiple=True, description="Add images", icon="upload",
            tooltip=("PNG, JPEG, WebP or GIF, up to about 10 MB per upload in total: Jupyter drops larger "
                     "messages before they reach the kernel. Larger files: studio.add_reference('path')"),
            layout=widgets.Layout(width="auto"))
        self.reference_box = widgets.GridBox(layout=widgets.Layout(**grid))
        self.reference_message = widgets.HTML()
        self.reference_note = widgets.HTML()      # what this model does with the images
        self.mask_upload = widgets.FileUpload(
            accept="image/png", multiple=False, description="Add mask", icon="upload",
            tooltip="A PNG with transparency (transparent = area to repaint), the size of the first reference",
            layout=widgets.Layout(width="auto"))
        self.mask_box = widgets.GridBox(layout=widgets.Layout(**grid))
        self.mask_message = widgets.HTML()
        self.painter_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.reference_section = widgets.VBox(
            [self.reference_title, self.reference_upload, self.reference_box, self.reference_message,
             self.reference_note], layout=widgets.Layout(width="100%"))
        self.mask_section = widgets.VBox(
            [widgets.HTML(section("Mask", "PNG with transparency = area to repaint")), self.mask_upload,
             self.mask_box, self.mask_message, self.painter_box], layout=widgets.Layout(width="100%"))
        self.box = widgets.VBox([self.reference_section, self.mask_section], layout=widgets.Layout(width="100%"))
        for part, css in ((self.reference_upload, "reference-upload"), (self.reference_box, "references"),
                          (self.reference_message, "reference-message"), (self.reference_note, "reference-note"),
                          (self.mask_upload, "mask-upload"), (self.mask_box, "mask-box"),
                          (self.mask_message, "mask-message"), (self.mask_section, "mask"),
                          (self.painter_box, "painter"),
                          (self.reference_section, "reference-slots")):
            part.add_class(f"shark-studio-{css}")

        self.reference_upload.observe(self._on_reference_upload, names="value")
        self.mask_upload.observe(self._on_mask_upload, names="value")
        # the browser could not read a file (FileReader error): say so instead of doing nothing
        self.reference_upload.observe(lambda c: self._upload_error(c, self.reference_message), names="error")
        self.mask_upload.observe(lambda c: self._upload_error(c, self.mask_message), names="error")

    # ------------------------------------------------------------------------------ the model
    @property
    def max_images(self) -> int:
        return self.spec.max_images if self.spec is not None else 0

    def configure(self, spec: ModelSpec) -> None:
        """Show the slots ``spec`` has (called at start and on every model change)."""
        self.spec = spec
        f = spec.image_field
        takes = spec.max_images
        if takes == 0:
            self.reference_title.value = section("Reference images", f"{spec.name} takes none")
        elif spec.requires_image:
            self.reference_title.value = section(f.label if f else "Image", "required · the image to edit")
        else:
            self.reference_title.value = section("Reference images",
                                                 f"up to {takes} · for edits · ≤ 10 MB per upload")
        self.reference_upload.multiple = takes > 1
        self.reference_upload.description = "Add images" if takes > 1 else "Add image"
        self.reference_upload.layout.display = None if takes else "none"
        self.mask_section.layout.display = None if spec.takes_mask else "none"
        self._refresh_references()        # "Paint mask" only where the model takes a mask
        self._refresh_notes()

    def images_to_send(self) -> list[bytes]:
        """The reference images this model takes (none for a model without an image field)."""
        return list(self.references) if self.max_images else []

    def mask_to_send(self) -> bytes | None:
        return self.mask if self.spec is not None and self.spec.takes_mask else None

    def blocked(self) -> str | None:
        """Why Generate cannot run with these images, or None."""
        spec = self.spec
        if spec is None:
            return None
        count = len(self.references)
        if spec.requires_image and not count:
            return f"{spec.name} edits an image: add one under “{spec.image_field.label}” first."
        if spec.max_images and count > spec.max_images:
            extra = count - spec.max_images
            return (f"{spec.name} takes {text.count(spec.max_images, 'image')}: remove {extra} of the "
                    f"{count} reference images.")
        if self.mask_to_send() is not None and not count:
            return "A mask needs a reference image: add one, or remove the mask."
        return None

    def set_aside(self) -> list[str]:
        """What is kept in the studio but not sent to this model, in words (for the status line)."""
        out = []
        if self.references and not self.max_images:
            out.append(f"{text.count(len(self.references), 'reference image')} not sent ({self.spec.name} takes none)")
        if self.mask is not None and self.spec is not None and not self.spec.takes_mask:
            out.append(f"the mask not sent ({self.spec.name} takes none)")
        return out

    def _refresh_notes(self) -> None:
        aside = self.set_aside()
        note(self.reference_note, "Kept for the models that take them: " + "; ".join(aside) + "." if aside else "",
             warn=True)
        blocked = self.blocked()
        if blocked and self.references and self.max_images:
            note(self.reference_note, blocked, error=True)

    # ----------------------------------------------------------------------------- references
    def add_reference(self, data: bytes | str | os.PathLike, name: str | None = None) -> bool:
        """Add a reference image (bytes or a file path). Returns False (with a message) if refused."""
        data, name = self._read_if_path(data, name, self.reference_message)
        if data is None:
            return False
        name = name or f"image {len(self.references) + 1}"
        problem = self._check_image(bytes(data), name)
        if problem is None and self.spec is not None and len(self.references) >= self.max_images:
            problem = (f"{name} was not added: {self.spec.name} takes no reference images." if not self.max_images
                       else f"{name} was not added: at most {text.count(self.max_images, 'reference image')}"
                            f"{' for ' + self.spec.name if self.max_images == 1 else ''}.")
        if problem:
            note(self.reference_message, problem, error=True)
            return False
        self.references.append(bytes(data))
        self.reference_names.append(name)
        note(self.reference_message, "")
        self._references_changed()
        return True

    def remove_reference(self, index: int) -> None:
        del self.references[index]
        del self.reference_names[index]
        self._references_changed()

    def _references_changed(self) -> None:
        if self.painter is not None and (self.painter_index is None or self.painter_index >= len(self.references)
                                         or self.references[self.painter_index] is not self._painted_over):
            self.close_painter()          # its image was removed (or moved)
        self._refresh_references()
        if self.mask is not None:
            problem, _warning = self._check_mask(self.mask, self.mask_name or "mask")
            if problem:
                self.mask, self.mask_name = None, None
                note(self.mask_message, "The mask was removed: " + problem.split(": ", 1)[-1], error=True)
                self._refresh_mask()
        self._refresh_notes()
        self.on_change()

    # ----------------------------------------------------------------------------------- mask
    def set_mask(self, data: bytes | str | os.PathLike | None, name: str | None = None) -> bool:
        """Set the mask (PNG with alpha, the size of the first reference). None clears it.
        Returns False, with a message, when the mask is refused (and not kept)."""
        if data is None:
            self.mask, self.mask_name = None, None
            note(self.mask_message, "")
        else:
            if _is_painter(data):
                data, name = data.mask_png, name or "painted mask"
            data, name = self._read_if_path(data, name, self.mask_message)
            if data is None:
                return False
            name = name or "mask"
            data = bytes(data)
            problem, warning = self._check_size(data, name), None
            if problem is None and self.spec is not None and not self.spec.takes_mask:
                problem = f"{name} was not kept: {self.spec.name} takes no mask."
            if problem is None:
                problem, warning = self._check_mask(data, name)
            if problem:
                note(self.mask_message, problem, error=True)
                return False
            self.mask, self.mask_name = data, name
            note(self.mask_message, warning or "", warn=bool(warning))
        self._refresh_mask()
        self._refresh_notes()
        self.on_change()
        return True

    # --------------------------------------------------------------------------------- checks
    @staticmethod
    def _check_size(data: bytes, name: str) -> str | None:
        if not data:
            return f"{name} is empty (0 bytes) — nothing was added. Pick the file again."
        if len(data) > MAX_UPLOAD_BYTES:
            return (f"{name} is {text.number(len(data))} bytes; the limit is {text.number(MAX_UPLOAD_BYTES / 1e6)} MB "
                    f"({text.number(MAX_UPLOAD_BYTES)} bytes) per image. "
                    "Export a smaller version (e.g. a JPEG) and try again.")
        return None

    def _check_image(self, data: bytes, name: str) -> str | None:
        problem = self._check_size(data, name)
        if problem:
            return problem
        from .. import images

        try:
            images.input_to_url(data, field=name)
        except ValidationError as exc:
            return f"{name} was not added: {validation_detail(exc)}."
        return None

    def _check_mask(self, data: bytes, name: str) -> tuple[str | None, str | None]:
        """(problem, warning) for a mask candidate against the current first reference."""
        from .. import images

        if not self.references:
            return (f"{name} was not kept: add a reference image first — the mask must match its size.", None)
        try:
            _fmt, ref_size = images.image_info(self.references[0])
        except ValueError:
            ref_size = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                images.mask_to_url(data, field="mask", reference_size=ref_size)
            except ValidationError as exc:
                return (f"Mask {name} was not kept: {validation_detail(exc)}.", None)
        warning = next((str(w.message) for w in caught if issubclass(w.category, UserWarning)), None)
        return None, (f"Note: {warning}." if warning else None)

    @staticmethod
    def _read_if_path(data: Any, name: str | None, message: widgets.HTML) -> tuple[bytes | None, str | None]:
        """A path is read (its file name becomes the name); bytes pass through. An unreadable
        file is reported in ``message`` and gives None."""
        if not isinstance(data, (str, os.PathLike)):
            return data, name
        path = Path(data).expanduser()
        name = name or path.name
        try:
            return path.read_bytes(), name
        except OSError as exc:
            note(message, f"Could not read {name}: {exc.strerror or exc}.", error=True)
            return None, name

    # ------------------------------------------------------------------------------ thumbnails
    def _refresh_references(self) -> None:
        old = list(self.reference_box.children)
        items = []
        for i, data in enumerate(self.references):
            name = self.reference_names[i] if i < len(self.reference_names) else f"image {i + 1}"
            label = widgets.HTML(f"<div style='font-size:10.5px;color:{MUTED};width:72px;overflow:hidden;"
                                 f"text-overflow:ellipsis;white-space:nowrap' title='{html.escape(name)}'>"
                                 f"{'1st · ' if i == 0 else ''}{html.escape(name)}</div>")
            paint = (lambda i=i: self.open_painter(i)) if self.spec is not None and self.spec.takes_mask else None
            items.append(_thumb_card(data, f"Remove {name}", lambda i=i: self.remove_reference(i), label,
                                     paint=paint))
        self.reference_box.children = items
        close_tree(*old)

    def _refresh_mask(self) -> None:
        old = list(self.mask_box.children)
        self.mask_box.children = () if self.mask is None else (
            _thumb_card(self.mask, "Remove the mask", lambda: self.set_mask(None), None, dashed=True),)
        close_tree(*old)

    # -------------------------------------------------------------------------------- painter
    def open_painter(self, index: int = 0) -> Any:
        """Open the mask painter over reference ``index`` under the mask slot (replacing an open
        one). It starts from the current mask when that fits the image; every finished stroke
        puts its mask in the slot, checked like an upload. Returns the painter."""
        from .painter import MaskPainter

        self.close_painter()
        data, name = self.references[index], self.reference_names[index]
        painter = MaskPainter(data)
        if self.mask is not None:
            try:
                painter.mask_png = self.mask        # continue the current mask (same size only)
            except traitlets.TraitError:             # another size: start from nothing
                pass
        painter.observe(lambda _c: self.set_mask(painter.mask_png, name=f"painted over {name}"), names="mask_png")
        close = widgets.Button(description="Close painter", icon="times", layout=widgets.Layout(width="auto"),
                               tooltip="Close the painter (the mask stays in the slot)")
        close.on_click(lambda _b: self.close_painter())
        title = widgets.HTML(section("Paint mask", f"over {html.escape(name)} · paint the area to repaint"))
        self.painter, self.painter_index, self._painted_over = painter, index, data
        self.painter_box.children = (widgets.HBox([title, close], layout=widgets.Layout(
            justify_content="space-between", align_items="center", width="100%")), painter)
        return painter

    def close_painter(self) -> None:
        old = list(self.painter_box.children)
        self.painter, self.painter_index, self._painted_over = None, None, None
        self.painter_box.children = ()
        close_tree(*old)

    # --------------------------------------------------------------------------------- uploads
    @staticmethod
    def _uploaded(change: dict) -> list[tuple[str, bytes]]:
        files = []
        for item in change.get("new") or ():
            try:
                name = str(item.get("name") or "upload")
                content = item.get("content")
                data = bytes(content) if content is not None else b""
            except Exception:  # noqa: BLE001 - a malformed upload value
                name, data = "upload", b""
            files.append((name, data))
        return files

    def _on_reference_upload(self, change: dict) -> None:
        files = self._uploaded(change)
        if not files:
            return
        try:
            problems = [self.reference_message.value for name, data in files
                        if not self.add_reference(data, name=name)]
            if problems:
                self.reference_message.value = "".join(problems)
        except Exception as exc:  # noqa: BLE001 - report callback errors, never swallow them
            note(self.reference_message, f"Upload failed: {plain(exc)}", error=True)
        finally:
            _clear(self.reference_upload)

    def _on_mask_upload(self, change: dict) -> None:
        files = self._uploaded(change)
        if not files:
            return
        try:
            name, data = files[-1]
            self.set_mask(data, name=name)
        except Exception as exc:  # noqa: BLE001
            note(self.mask_message, f"Upload failed: {plain(exc)}", error=True)
        finally:
            _clear(self.mask_upload)

    @staticmethod
    def _upload_error(change: dict, target: widgets.HTML) -> None:
        if change.get("new"):
            note(target, f"The browser could not read the file: {change['new']}", error=True)


def _is_painter(data: Any) -> bool:
    return not isinstance(data, (bytes, bytearray, memoryview, str, os.PathLike)) and hasattr(data, "mask_png")


def _thumb_card(data: bytes, tooltip: str, remove: Callable[[], Any], label: widgets.HTML | None, *,
                dashed: bool = False, paint: Callable[[], Any] | None = None) -> widgets.VBox:
    preview, fmt = thumb(data, REF_THUMB_SIDE)
    img = widgets.Image(value=preview, format=fmt, layout=widgets.Layout(
        width="72px", height="72px", object_fit="contain",
        border=f"1px {'dashed #9aa0a6' if dashed else 'solid #dadce0'}"))
    button = widgets.Button(description="Remove", icon="times", tooltip=tooltip,
                            layout=widgets.Layout(width="72px", height="24px", padding="0"))
    button.style.font_size = "11px"
    button.on_click(lambda _b: remove())
    buttons = [button]                     # "Remove" stays the card's last child
    if paint is not None:
        painter = widgets.Button(description="Paint mask", icon="paint-brush",
                                 tooltip="Paint the area to repaint over this image",
                                 layout=widgets.Layout(width="72px", height="24px", padding="0"))
        painter.style.font_size = "11px"
        painter.add_class("shark-studio-paint-mask")
        painter.on_click(lambda _b: paint())
        buttons.insert(0, painter)
    return widgets.VBox([img, *([label] if label else []), *buttons], layout=widgets.Layout(width="74px"))


def _clear(upload: widgets.FileUpload) -> None:
    # The bytes now live in .references / .mask; keep them out of the widget state (which a
    # notebook may save) and let the same file be picked again.
    try:
        upload.value = ()
    except Exception:  # noqa: BLE001
        pass
