"""The studio's results: one card per image (a small preview, the prompt, the model, the size),
newest first, each added as soon as its image has arrived (:meth:`Gallery.arriving`), with Save (the full-size file to a folder), Open (a larger view) and "Use as
reference". Previews are small JPEG/PNG thumbnails, so the notebook's saved widget state stays
small; the full images stay in the results (``studio.results``) and on disk once saved."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import ipywidgets as widgets

from .. import text
from .common import MUTED, OK_COLOR, display_path, note, plain, thumb

__all__ = ["Gallery", "THUMB_SIDE", "VIEW_SIDE", "previews"]

#: Side of the gallery thumbnails and of the "Open" view, in pixels.
THUMB_SIDE = 256
VIEW_SIDE = 1024


def default_folder() -> str:
    from ..results import DEFAULT_FOLDER

    return DEFAULT_FOLDER


async def previews(result: Any) -> list[tuple[bytes, str]]:
    """The thumbnails of a result's images, built in the preview pool, in parallel."""
    from ..images import preview_pool

    loop = asyncio.get_running_loop()
    return list(await asyncio.gather(*(loop.run_in_executor(preview_pool(), thumb, img.data, THUMB_SIDE)
                                       for img in result.images)))


class Gallery:
    """The results column: ``.grid`` (the cards), ``.viewer``, ``.save_folder``, ``.box``.

    ``use_as_reference(img)``: what the card's button does; ``status(text, kind)``: where
    messages go. ``.helpers`` keeps the Save / Open tasks referenced while they run."""

    def __init__(self, save_folder: str | None, *, use_as_reference: Callable[[Any], Any],
                 status: Callable[[str, str], Any]) -> None:
        self._use_as_reference = use_as_reference
        self._status = status
        self.helpers: set[asyncio.Task] = set()
        # the running call's cards, added as its images arrive: result, index -> (card, thumbnail)
        self._live_result: Any = None
        self._live: dict[int, tuple[widgets.VBox, tuple[bytes, str]]] = {}
        self._older: tuple = ()
        self._making: list[asyncio.Future] = []
        self.save_folder = widgets.Text(value=str(save_folder or default_folder()), description="Save to",
                                        style={"description_width": "56px"},
                                        tooltip="Folder (relative to the notebook) where Save writes full-size files",
                                        layout=widgets.Layout(width="260px"))
        self.viewer_image = widgets.Image(format="jpeg", layout=widgets.Layout(max_width="100%", height="auto"))
        self.viewer_caption = widgets.HTML()
        self.viewer_close = widgets.Button(description="Close", icon="times", layout=widgets.Layout(width="auto"))
        self.viewer = widgets.VBox(
            [widgets.HBox([self.viewer_caption, self.viewer_close],
                          layout=widgets.Layout(justify_content="space-between", align_items="center")),
             self.viewer_image],
            layout=widgets.Layout(display="none", border="1px solid #dadce0", padding="6px", margin="0 0 8px 0"))
        self.grid = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, 214px)", grid_gap="10px", width="100%",
            align_items="flex-start"))
        self.empty = widgets.HTML(
            f"<div style='color:{MUTED};padding:24px 4px'>Results appear here, newest first. "
            "Each image: Save (full size to the folder above), Open (larger view), "
            "Use as reference (for the next edit).</div>")
        head = widgets.HBox([widgets.HTML("<div style='font-weight:600'>Results</div>"), self.save_folder],
                            layout=widgets.Layout(justify_content="space-between", align_items="center",
                                                  width="100%"))
        self.box = widgets.VBox([head, self.viewer, self.empty, self.grid],
                                layout=widgets.Layout(flex="1 1 auto", min_width="300px", padding="0 0 0 14px"))
        self.viewer_close.on_click(lambda _b: self.close_viewer())
        for part, css in ((self.grid, "gallery"), (self.viewer, "viewer"), (self.save_folder, "save-folder")):
            part.add_class(f"shark-studio-{css}")

    def arriving(self, img: Any) -> None:
        """An image of the running call has arrived (the client's ``on_image`` hook, on the
        kernel's loop): its thumbnail is made in the preview pool and its card added when ready."""
        from ..images import preview_pool

        making = asyncio.get_running_loop().run_in_executor(preview_pool(), thumb, img.data, THUMB_SIDE)
        self._making.append(making)
        making.add_done_callback(lambda f: None if f.cancelled() or f.exception() else self._place(img, f.result()))

    async def settle(self, result: Any) -> list[tuple[bytes, str]]:
        """The job's last step: wait for the thumbnails still being made; those of ``result``'s
        images, in its order (any image that got no card yet gets its thumbnail made now)."""
        making, self._making = self._making, []
        if making:
            await asyncio.wait(making)
        shown = self._live if self._live_result is result else {}
        todo = [img for img in result.images if img.index not in shown]
        made = dict(zip((img.index for img in todo), await previews(SimpleNamespace(images=todo)))) if todo else {}
        return [shown[img.index][1] if img.index in shown else made[img.index] for img in result.images]

    def _place(self, img: Any, thumbnail: tuple[bytes, str]) -> None:
        """Show one image's card: the running call's cards first (in the answer's order), then the older ones."""
        if img.result is not self._live_result:
            self._live_result, self._live, self._older = img.result, {}, self.grid.children
        if img.index in self._live:
            return
        self._live[img.index] = (self._card(img.result, img, *thumbnail), thumbnail)
        self.grid.children = (*(card for _i, (card, _t) in sorted(self._live.items())), *self._older)
        self.empty.layout.display = "none"

    def add(self, result: Any, thumbs: list[tuple[bytes, str]]) -> None:
        """Cards for every image of ``result`` (those already shown as they arrived stay as they are)."""
        for img, thumbnail in zip(result.images, thumbs):
            self._place(img, thumbnail)

    def _card(self, result: Any, img: Any, preview: bytes, fmt: str) -> widgets.VBox:
        picture = widgets.Image(value=preview, format=fmt,
                                layout=widgets.Layout(width="200px", height="200px", object_fit="contain"))
        w, h = img.size
        n = getattr(result, "images_billed", len(result.images))
        idx = f" · {img.index + 1}/{n}" if n > 1 else ""
        model = _model_name(getattr(result, "model", None))
        caption = widgets.HTML(
            f"<div style='font-size:12px;line-height:1.3;width:200px'>"
            f"<div style='overflow:hidden;text-overflow:ellipsis;white-space:nowrap' "
            f"title='{html.escape(result.prompt)}'>{html.escape(text.shorten(result.prompt, 60))}</div>"
            f"<div style='color:{MUTED}'>{html.escape(model)}{' · ' if model else ''}"
            f"{w}×{h} {html.escape(img.format.upper())}{idx}</div></div>")

        def small() -> widgets.Layout:
            return widgets.Layout(width="auto", flex="1 1 0%", height="26px", padding="0 4px", margin="1px")

        save = widgets.Button(description="Save", icon="download", tooltip="Save the full-size file to the folder above",
                              layout=small())
        open_ = widgets.Button(description="Open", icon="expand", tooltip="Show a larger view", layout=small())
        reuse = widgets.Button(description="Use as reference", icon="retweet",
                               tooltip="Add this image to the reference images for the next edit", layout=small())
        path = widgets.HTML(layout=widgets.Layout(width="200px"))
        save.on_click(lambda _b: self._spawn(self.save(img, path, save)))
        open_.on_click(lambda _b: self._spawn(self.open(img)))
        reuse.on_click(lambda _b: self._use_as_reference(img))
        return widgets.VBox(
            [picture, caption, widgets.HBox([save, open_], layout=widgets.Layout(width="100%")),
             widgets.HBox([reuse], layout=widgets.Layout(width="100%")), path],
            layout=widgets.Layout(width="210px", padding="5px", border="1px solid #e0e0e0"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.helpers.add(task)
        task.add_done_callback(self.helpers.discard)

    async def save(self, img: Any, path_label: widgets.HTML, button: widgets.Button) -> Path | None:
        folder = (self.save_folder.value or "").strip() or default_folder()
        button.disabled = True
        try:
            path = await asyncio.to_thread(img.save, folder)
        except Exception as exc:  # noqa: BLE001
            note(path_label, f"Not saved: {plain(exc)}", error=True)
            return None
        finally:
            button.disabled = False
        path_label.value = (f"<div style='font-size:11px;color:{OK_COLOR};word-break:break-all'>"
                            f"Saved: <code>{html.escape(display_path(path))}</code></div>")
        return path

    async def open(self, img: Any) -> None:
        try:
            preview, fmt = await asyncio.to_thread(thumb, img.data, VIEW_SIDE)
        except Exception as exc:  # noqa: BLE001
            self._status(f"Could not open the image: {plain(exc)}", "error")
            return
        w, h = img.size
        self.viewer_image.format = fmt
        self.viewer_image.value = preview
        saved = img.result.saved[-1] if img.result is not None and img.result.saved else None
        where = (f" · saved at <code>{html.escape(display_path(saved))}</code>" if saved
                 else " · Save writes the full file")
        self.viewer_caption.value = (f"<div style='font-size:12px'><b>{html.escape(text.shorten(img.prompt, 80))}</b>"
                                     f"<br><span style='color:{MUTED}'>{w}×{h} {img.format.upper()} "
                                     f"(view scaled to ≤ {VIEW_SIDE} px){where}</span></div>")
        self.viewer.layout.display = None

    def close_viewer(self) -> None:
        self.viewer.layout.display = "none"
        self.viewer_image.value = b""  # keep the notebook's saved widget state small


def _model_name(model: Any) -> str:
    from ..schemas import find_model

    spec = find_model(model) if model else None
    return spec.name if spec is not None else ""
