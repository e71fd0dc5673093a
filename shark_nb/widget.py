"""The studio: an ipywidgets tool to write a prompt, pick settings, see the cost, generate, cancel,
and keep the results — without freezing the kernel.

    import shark_nb
    shark_nb.studio()                      # or shark_nb.studio(client, size="1536x1024", n=2)

How it stays responsive: Generate starts ``self._run()`` as an asyncio task on the kernel's own
running loop (``asyncio.ensure_future`` from the button callback) and returns at once. The job
awaits :class:`~shark_nb.client.AsyncShark` (never the blocking ``Shark``); previews are built in
worker threads (``asyncio.to_thread``). Between cells — and while other cells are idle — the
kernel's loop runs the job, the elapsed-time ticker and the button callbacks.

Cancel: the studio uses task mode by default, so Cancel reaches the gateway
(``client.cancel(task)``). If the gateway refuses (409: already running), the studio says so and
the button becomes "Stop waiting"; a second click stops waiting (the call may still be charged
and stays in the ledger). In sync mode Cancel only stops waiting.

No double charge: a click while a job runs starts nothing — guarded by ``self.job`` on the Python
side, not only by the button's disabled state (a double click races the browser).

The API key is never a widget value (widget state is saved into notebooks): there is no key field;
the studio only says how to set one.

Uploads travel from the browser to the kernel in one websocket message. Jupyter Server keeps
Tornado's default ``websocket_max_message_size`` of 10 MiB, and a ``FileUpload`` sends all the
files picked at once in one message: so pick files that together stay under about 10 MB (larger:
``studio.add_reference("path/to/file")`` from code, or raise
``--ServerApp.tornado_settings="{'websocket_max_message_size': 104857600}"``). Whatever arrives
is checked here: at most :data:`MAX_UPLOAD_BYTES` per file, not empty, decodable as an image.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets

from . import pricing
from .errors import SharkError, TaskCancelledError, ValidationError
from .session import async_client
from .params import (
    BACKGROUNDS,
    MAX_REFERENCE_IMAGES,
    MODEL,
    N_MAX,
    N_MIN,
    OTHER_MODELS,
    OUTPUT_FORMATS,
    QUALITIES,
    SIZES,
)

__all__ = ["Studio", "studio", "MAX_UPLOAD_BYTES"]

log = logging.getLogger(__name__)

#: Largest uploaded file accepted (bytes). Note that Jupyter Server's default websocket message
#: limit (10 MiB, Tornado's default) usually stops larger uploads before they reach the kernel.
MAX_UPLOAD_BYTES = 20 * 1000 * 1000
#: Side of the gallery thumbnails, the reference thumbnails and the "Open" view, in pixels.
THUMB_SIDE = 256
REF_THUMB_SIDE = 96
VIEW_SIDE = 1024
#: Seconds between updates of the elapsed time in the status line.
TICK_SECONDS = 0.5

OFFLINE_BANNER = ("Offline simulator — images are synthetic, nothing is charged. "
                  "Set SHARK_API_KEY or call shark_nb.set_key() to use the real API.")
REFUSED_MESSAGE = ("The gateway refused to cancel: the task is already running and may still be charged. "
                   "Click “Stop waiting” to stop waiting for it.")

_DEFAULT_KEYS = ("prompt", "model", "size", "quality", "background", "output_format", "n", "wait",
                 "save_folder")
_ERROR_COLOR = "#b3261e"
_OK_COLOR = "#1b5e20"
_MUTED = "#5f6368"


# --------------------------------------------------------------------------------------- helpers

def _num(x: float) -> str:
    """1234.5 -> '1,234.5'; 106.0 -> '106'; 0.0272 -> '0.0272'."""
    text = f"{x:,.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _usd(credit: float) -> str:
    usd = credit / pricing.CREDITS_PER_USD
    if usd == 0:
        return "$0.00"
    if abs(usd) < 1:
        return f"${usd:.4f}".rstrip("0").rstrip(".") if abs(usd) >= 0.0001 else f"${usd:.2g}"
    return f"${usd:,.2f}"


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s:02d} s"


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _plain(exc: BaseException) -> str:
    """The message a designer should read: the SharkError's message, never a traceback."""
    if isinstance(exc, SharkError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _validation_detail(exc: ValidationError) -> str:
    """'mask=<12 bytes> is not valid: the PNG has no alpha; expected ...' -> 'the PNG has no alpha'
    (the 'expected ...' part is already said next to the upload button)."""
    detail = exc.message.split(" is not valid: ", 1)[-1]
    return detail.split("; expected ", 1)[0]


def _fail(name: str, value: Any, allowed: tuple | str) -> ValidationError:
    shown = allowed if isinstance(allowed, str) else "one of " + ", ".join(repr(a) for a in allowed)
    return ValidationError(name, value, shown)


def _check_defaults(d: dict[str, Any]) -> None:
    """The studio's starting settings, checked before any widget is built (same rules as the controls)."""
    for name, allowed, default in (("size", SIZES, "auto"), ("quality", QUALITIES, "auto"),
                                   ("background", BACKGROUNDS, "auto"),
                                   ("output_format", OUTPUT_FORMATS, "png"), ("wait", ("task", "sync"), "task")):
        if d.get(name, default) not in allowed:
            raise _fail(name, d[name], allowed)
    n = d.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not N_MIN <= n <= N_MAX:
        raise _fail("n", n, f"a whole number from {N_MIN} to {N_MAX}")


class _WaitToggle(widgets.ToggleButtons):
    """The wait-mode toggle (``.value`` is "task" or "sync"). Calling it — ``await studio.wait()``
    — waits for the current job, so ``studio.wait`` is both the widget and the coroutine."""

    def __init__(self, waiter: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiter = waiter

    def __call__(self) -> Any:
        return self._waiter()


# ---------------------------------------------------------------------------------------- studio

class Studio(widgets.VBox):
    """The shark_nb studio. Build it with :func:`studio`.

    Scriptable: ``.prompt``, ``.model``, ``.size``, ``.quality``, ``.background``,
    ``.output_format``, ``.n``, ``.wait`` (the widgets: set ``.value``), ``.generate_button``,
    ``.cancel_button``, ``.status`` (``.status.value`` is plain text), ``.estimate``,
    ``.ledger_strip``, ``.gallery``, ``.results`` (GenerationResults, newest last), ``.job`` (the
    running asyncio task or None), ``.references`` (list of bytes), ``.mask`` (bytes or None),
    ``await studio.wait()`` (wait for the current job), ``add_reference()``, ``set_mask()``.
    """

    def __init__(self, client: Any = None, **defaults: Any) -> None:
        # Everything that can refuse the arguments runs before the first widget exists: a refused
        # studio leaves no half-built widgets open in the kernel (they would never be closed).
        unknown = sorted(set(defaults) - set(_DEFAULT_KEYS))
        if unknown:
            raise TypeError(f"studio() got unexpected settings {unknown}; known: {list(_DEFAULT_KEYS)}")
        _check_defaults(defaults)
        resolved = async_client(client)
        super().__init__()
        self.client = resolved
        self.results: list[Any] = []
        self.references: list[bytes] = []
        self.reference_names: list[str] = []
        self.mask: bytes | None = None
        self.mask_name: str | None = None
        self.job: asyncio.Task | None = None
        self.last_error: BaseException | None = None
        self._task: Any = None              # the gateway task of the current job (from on_task)
        self._job_wait = "task"
        self._cancel_requested = False      # Cancel clicked before the gateway gave a task id
        self._cancelling: asyncio.Task | None = None
        self._refused = False               # the gateway refused to cancel
        self._stopping = False              # the user asked to stop waiting
        self._phase = ""
        self._started = 0.0
        self._ticker: asyncio.Task | None = None
        self._helpers: set[asyncio.Task] = set()   # Save / Open tasks (kept referenced)

        self._build_controls(defaults)
        self._build_layout()
        self._add_dom_classes()
        self._wire()
        self._refresh_references()
        self._refresh_mask()
        self._update_estimate()
        self._refresh_ledger()
        self._set_status("Ready." if not self.client.offline else "Ready — offline simulator.")

    # ------------------------------------------------------------------------------ building
    def _build_controls(self, d: dict[str, Any]) -> None:
        def choice(name: str, value: Any, allowed: tuple) -> Any:
            if value not in allowed:
                raise _fail(name, value, allowed)
            return value

        wide = widgets.Layout(width="100%")
        dstyle = {"description_width": "78px"}
        self.prompt = widgets.Textarea(
            value=str(d.get("prompt", "")), placeholder="Describe the image — e.g. a red fox in the snow, watercolour",
            layout=widgets.Layout(width="100%", height="84px"))
        models = (MODEL, *OTHER_MODELS)
        model = d.get("model", MODEL)
        if model not in models:
            models = (*models, str(model))  # a newer model the table does not list yet
        self.model = widgets.Dropdown(options=models, value=model, description="Model", style=dstyle, layout=wide)
        half = widgets.Layout(width="50%")
        self.size = widgets.Dropdown(options=SIZES, value=choice("size", d.get("size", "auto"), SIZES),
                                     description="Size", style=dstyle, layout=half)
        self.quality = widgets.Dropdown(options=QUALITIES, value=choice("quality", d.get("quality", "auto"), QUALITIES),
                                        description="Quality", style=dstyle, layout=half)
        self.background = widgets.Dropdown(
            options=BACKGROUNDS, value=choice("background", d.get("background", "auto"), BACKGROUNDS),
            description="Background", style=dstyle, layout=half)
        self.output_format = widgets.Dropdown(
            options=OUTPUT_FORMATS, value=choice("output_format", d.get("output_format", "png"), OUTPUT_FORMATS),
            description="Format", style=dstyle, layout=half)
        n = d.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not N_MIN <= n <= N_MAX:
            raise _fail("n", n, f"a whole number from {N_MIN} to {N_MAX}")
        self.n = widgets.IntSlider(value=n, min=N_MIN, max=N_MAX, step=1, description="Images",
                                   style=dstyle, layout=wide)
        self.wait = _WaitToggle(
            self.wait_for_job,
            options=[("Task", "task"), ("Sync", "sync")],
            value=choice("wait", d.get("wait", "task"), ("task", "sync")),
            style={"button_width": "100px"},
            tooltips=["Submit a task and poll it: Cancel really cancels at the gateway",
                      "Wait for the answer on one request: Cancel only stops waiting"],
            layout=widgets.Layout(width="auto"))
        self.wait_mode = self.wait  # the same widget, under a name that reads as a setting

        # uploads
        self.reference_upload = widgets.FileUpload(
            accept="image/*", multiple=True, description="Add images", icon="upload",
            tooltip=("PNG, JPEG, WebP or GIF, up to about 10 MB per upload in total: Jupyter drops larger "
                     "messages before they reach the kernel. Larger files: studio.add_reference('path')"),
            layout=widgets.Layout(width="auto"))
        self.reference_box = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, 76px)", grid_gap="6px", width="100%"))
        self.reference_message = widgets.HTML()
        self.mask_upload = widgets.FileUpload(
            accept="image/png", multiple=False, description="Add mask", icon="upload",
            tooltip="A PNG with transparency (transparent = area to repaint), the size of the first reference",
            layout=widgets.Layout(width="auto"))
        self.mask_box = widgets.GridBox(layout=widgets.Layout(grid_template_columns="repeat(auto-fill, 76px)",
                                                             grid_gap="6px", width="100%"))
        self.mask_message = widgets.HTML()

        # cost, actions, status
        self.estimate = widgets.HTML()
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play",
                                              tooltip="Generate with these settings",
                                              layout=widgets.Layout(width="auto", flex="1 1 auto"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True,
                                            tooltip="Cancel the running generation",
                                            layout=widgets.Layout(width="auto", flex="1 1 auto"))
        self.status = widgets.Label(layout=widgets.Layout(width="100%"))
        # results
        self.save_folder = widgets.Text(value=str(d.get("save_folder", _default_folder())),
                                        description="Save to", style={"description_width": "56px"},
                                        tooltip="Folder (relative to the notebook) where Save writes full-size files",
                                        layout=widgets.Layout(width="260px"))
        self.viewer_image = widgets.Image(format="jpeg", layout=widgets.Layout(max_width="100%", height="auto"))
        self.viewer_caption = widgets.HTML()
        self.viewer_close = widgets.Button(description="Close", icon="times", layout=widgets.Layout(width="auto"))
        self.viewer = widgets.VBox(
            [widgets.HBox([self.viewer_caption, self.viewer_close],
                          layout=widgets.Layout(justify_content="space-between", align_items="center")),
             self.viewer_image],
            layout=widgets.Layout(display="none", border="1px solid #dadce0", padding="6px",
                                  margin="0 0 8px 0"))
        self.gallery = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, 214px)", grid_gap="10px", width="100%",
            align_items="flex-start"))
        self.gallery_empty = widgets.HTML(
            f"<div style='color:{_MUTED};padding:24px 4px'>Results appear here, newest first. "
            "Each image: Save (full size to the folder above), Open (larger view), "
            "Use as reference (for the next edit).</div>")
        self.ledger_strip = widgets.HTML()

    def _build_layout(self) -> None:
        client = self.client
        mode = ("<span style='background:#fef7e0;color:#8a6100;border-radius:8px;padding:1px 8px;"
                "font-size:11px'>offline simulator</span>" if client.offline else
                "<span style='background:#e6f4ea;color:#1b5e20;border-radius:8px;padding:1px 8px;"
                "font-size:11px'>live API · key set</span>")
        self.header = widgets.HTML(
            "<div style='display:flex;align-items:center;gap:10px;font-size:15px'>"
            f"<b>shark_nb studio</b><span style='color:{_MUTED}'>·</span>"
            f"<code style='font-size:13px'>{html.escape(MODEL)}</code>{mode}</div>")
        banner_text = ""
        if client.offline:
            banner_text = (
                "<div style='background:#fef7e0;border-left:4px solid #f9ab00;padding:6px 10px;"
                f"font-size:12.5px;line-height:1.4'>{html.escape(OFFLINE_BANNER)} "
                "Then run <code>shark_nb.studio()</code> again.</div>")
        self.banner = widgets.HTML(banner_text, layout=widgets.Layout(display=None if client.offline else "none"))

        def section(title: str, hint: str = "") -> widgets.HTML:
            small = f" <span style='color:{_MUTED};font-weight:normal;font-size:11.5px'>{hint}</span>" if hint else ""
            return widgets.HTML(f"<div style='font-weight:600;margin-top:6px'>{title}{small}</div>")

        row = widgets.Layout(width="100%")
        controls = widgets.VBox(
            [
                section("Prompt"),
                self.prompt,
                self.model,
                widgets.HBox([self.size, self.quality], layout=row),
                widgets.HBox([self.background, self.output_format], layout=row),
                self.n,
                widgets.HBox([widgets.HTML("<div style='text-align:right;padding-right:8px'>Wait</div>",
                                           layout=widgets.Layout(width="78px", margin="0 4px 0 0")),
                              self.wait], layout=row),
                section("Reference images", "for edits · ≤ 10 MB per upload"),
                self.reference_upload,
                self.reference_box,
                self.reference_message,
                section("Mask", "PNG with transparency = area to repaint"),
                self.mask_upload,
                self.mask_box,
                self.mask_message,
                widgets.HTML("<hr style='margin:6px 0;border:none;border-top:1px solid #e0e0e0'>"),
                self.estimate,
                widgets.HBox([self.generate_button, self.cancel_button], layout=widgets.Layout(width="100%")),
                self.status,
            ],
            layout=widgets.Layout(width="400px", flex="0 0 400px", padding="0 14px 0 0",
                                  border_right="1px solid #e0e0e0"),
        )
        results_head = widgets.HBox(
            [widgets.HTML("<div style='font-weight:600'>Results</div>"), self.save_folder],
            layout=widgets.Layout(justify_content="space-between", align_items="center", width="100%"))
        results = widgets.VBox([results_head, self.viewer, self.gallery_empty, self.gallery],
                               layout=widgets.Layout(flex="1 1 auto", min_width="300px", padding="0 0 0 14px"))
        self._body = widgets.HBox([controls, results], layout=widgets.Layout(width="100%", align_items="flex-start"))
        self.children = (self.header, self.banner, self._body, self.ledger_strip)
        default_layout = self.layout
        self.layout = widgets.Layout(border="1px solid #dadce0", padding="10px 12px", width="100%",
                                     max_width="1180px")
        default_layout.close()  # replaced: it would stay open (and in the saved widget state) for good
        # Stable CSS classes: hooks for custom styling and for the browser test (tests/test_browser_studio.py).
        for part, name in ((self, ""), (self.prompt, "prompt"), (self.size, "size"), (self.n, "n"),
                           (self.generate_button, "generate"), (self.cancel_button, "cancel"),
                           (self.status, "status"), (self.estimate, "estimate"), (self.gallery, "gallery"),
                           (self.ledger_strip, "ledger")):
            part.add_class("shark-studio" + (f"-{name}" if name else ""))

    def _add_dom_classes(self) -> None:
        """Stable CSS hooks (``.shark-studio``, ``.shark-studio-prompt``, ...) for styling and browser tests."""
        self.add_class("shark-studio")
        for name in ("prompt", "model", "size", "quality", "background", "output_format", "n", "wait",
                     "reference_upload", "reference_box", "reference_message", "mask_upload", "mask_box",
                     "mask_message", "estimate", "generate_button", "cancel_button", "status", "save_folder",
                     "viewer", "gallery", "ledger_strip", "header", "banner"):
            css = {"generate_button": "generate", "cancel_button": "cancel", "ledger_strip": "ledger",
                   "reference_box": "references", "output_format": "format"}.get(name, name.replace("_", "-"))
            getattr(self, name).add_class(f"shark-studio-{css}")

    def _wire(self) -> None:
        for w in (self.prompt, self.size, self.quality, self.n, self.model):
            w.observe(self._on_settings, names="value")
        self.reference_upload.observe(self._on_reference_upload, names="value")
        self.mask_upload.observe(self._on_mask_upload, names="value")
        # the browser could not read a file (FileReader error): say so instead of doing nothing
        self.reference_upload.observe(lambda c: self._on_upload_error(c, self.reference_message), names="error")
        self.mask_upload.observe(lambda c: self._on_upload_error(c, self.mask_message), names="error")
        self.generate_button.on_click(self._on_generate)
        self.cancel_button.on_click(self._on_cancel)
        self.viewer_close.on_click(lambda _b: self._close_viewer())

    # --------------------------------------------------------------------------- display bits
    def _set_status(self, text: str, kind: str = "info") -> None:
        self.status.value = text
        self.status.style.text_color = {"error": _ERROR_COLOR, "ok": _OK_COLOR}.get(kind)

    def _update_estimate(self) -> None:
        try:
            credit = self.client.estimate(self.prompt.value or "", n=self.n.value, size=self.size.value,
                                          quality=self.quality.value, image=list(self.references))
        except Exception as exc:  # noqa: BLE001 - never let a display update raise in a callback
            self.estimate.value = f"<span style='color:{_ERROR_COLOR}'>No estimate: {html.escape(_plain(exc))}</span>"
            return
        remaining = self.client.ledger.remaining
        if remaining is None:
            budget = "no budget set"
        else:
            budget = f"budget left {_num(remaining)} credit ({_usd(remaining)})"
            if credit > remaining:
                budget = f"<span style='color:{_ERROR_COLOR}'>over budget: only {_num(remaining)} credit left</span>"
        note = "" if self.model.value == MODEL else " (gpt-image-2 prices)"
        self.estimate.value = (
            f"<div style='line-height:1.5'><span style='color:{_MUTED}'>estimate{note}:</span> "
            f"<b>{_num(credit)} credit</b> ≈ <b>{_usd(credit)}</b>"
            f"<br><span style='color:{_MUTED};font-size:12px'>{budget}</span></div>")

    def _refresh_ledger(self) -> None:
        led = self.client.ledger
        credits = led.total_credits
        parts = [_plural(led.calls, "call"), _plural(led.images, "image"),
                 f"{_num(credits)} credit ({_usd(credits)})"]
        unknown = led.unknown_cost_calls
        if unknown:
            parts.append(f"{_plural(unknown, 'call')} of unknown cost")
        remaining = led.remaining
        parts.append("no budget set" if remaining is None else f"budget left {_num(remaining)} credit ({_usd(remaining)})")
        self.ledger_strip.value = (
            f"<div style='font-size:12px;color:{_MUTED};border-top:1px solid #e0e0e0;padding-top:6px'>"
            f"<b>Session ledger</b> · {html.escape(' · '.join(parts))}</div>")

    def _on_settings(self, _change: dict) -> None:
        self._update_estimate()

    # ------------------------------------------------------------------------ references / mask
    def add_reference(self, data: bytes | str | os.PathLike, name: str | None = None) -> bool:
        """Add a reference image (bytes or a file path). Returns False (with a message) if refused."""
        data, name = self._read_if_path(data, name, self.reference_message)
        if data is None:
            return False
        name = name or f"image {len(self.references) + 1}"
        problem = self._check_image_bytes(bytes(data), name)
        if problem is None and len(self.references) >= MAX_REFERENCE_IMAGES:
            problem = f"{name} was not added: at most {MAX_REFERENCE_IMAGES} reference images."
        if problem:
            self._note(self.reference_message, problem, error=True)
            return False
        self.references.append(bytes(data))
        self.reference_names.append(name)
        self._note(self.reference_message, "")
        self._after_references_changed()
        return True

    def _read_if_path(self, data: Any, name: str | None, message: Any) -> tuple[bytes | None, str | None]:
        """A path is read (its file name becomes the name); bytes pass through. An unreadable
        file is reported in ``message`` and gives None."""
        if not isinstance(data, (str, os.PathLike)):
            return data, name
        path = Path(data).expanduser()
        name = name or path.name
        try:
            return path.read_bytes(), name
        except OSError as exc:
            self._note(message, f"Could not read {name}: {exc.strerror or exc}.", error=True)
            return None, name

    def remove_reference(self, index: int) -> None:
        del self.references[index]
        del self.reference_names[index]
        self._after_references_changed()

    def set_mask(self, data: bytes | str | os.PathLike | None, name: str | None = None) -> bool:
        """Set the mask (PNG with alpha, the size of the first reference). None clears it.
        Returns False, with a message in the widget, when the mask is refused (and not kept)."""
        if data is None:
            self.mask, self.mask_name = None, None
            self._note(self.mask_message, "")
            self._refresh_mask()
            return True
        data, name = self._read_if_path(data, name, self.mask_message)
        if data is None:
            return False
        name = name or "mask"
        data = bytes(data)
        problem = self._check_upload_size(data, name)
        warning = None
        if problem is None:
            problem, warning = self._check_mask(data, name)
        if problem:
            self._note(self.mask_message, problem, error=True)
            return False
        self.mask, self.mask_name = data, name
        self._note(self.mask_message, warning or "", error=False, warn=bool(warning))
        self._refresh_mask()
        self._update_estimate()
        return True

    def _check_upload_size(self, data: bytes, name: str) -> str | None:
        if not data:
            return f"{name} is empty (0 bytes) — nothing was added. Pick the file again."
        if len(data) > MAX_UPLOAD_BYTES:
            return (f"{name} is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB "
                    f"({MAX_UPLOAD_BYTES:,} bytes) per image. "
                    "Export a smaller version (e.g. a JPEG) and try again.")
        return None

    def _check_image_bytes(self, data: bytes, name: str) -> str | None:
        problem = self._check_upload_size(data, name)
        if problem:
            return problem
        from . import images

        try:
            images.input_to_url(data, field=name)
        except ValidationError as exc:
            return f"{name} was not added: {_validation_detail(exc)}."
        return None

    def _check_mask(self, data: bytes, name: str) -> tuple[str | None, str | None]:
        """(problem, warning) for a mask candidate against the current first reference."""
        from . import images

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
                return (f"Mask {name} was not kept: {_validation_detail(exc)}.", None)
        warning = next((str(w.message) for w in caught if issubclass(w.category, UserWarning)), None)
        return None, (f"Note: {warning}." if warning else None)

    def _after_references_changed(self) -> None:
        self._refresh_references()
        if self.mask is not None:
            problem, _warning = self._check_mask(self.mask, self.mask_name or "mask")
            if problem:
                self.mask, self.mask_name = None, None
                self._note(self.mask_message, "The mask was removed: " + problem.split(": ", 1)[-1], error=True)
                self._refresh_mask()
        self._update_estimate()

    def _note(self, target: widgets.HTML, text: str, *, error: bool = False, warn: bool = False) -> None:
        if not text:
            target.value = ""
            return
        color = _ERROR_COLOR if error else "#8a6100" if warn else _MUTED
        target.value = f"<div style='color:{color};font-size:12px;line-height:1.35'>{html.escape(text)}</div>"

    def _thumb(self, data: bytes, side: int) -> tuple[bytes, str]:
        from . import images

        try:
            mime, preview = images.preview_for_display(data, max_side=side)
        except (ValueError, TypeError):
            return b"", "png"
        return preview, mime.split("/")[-1]

    def _refresh_references(self) -> None:
        old = list(self.reference_box.children)
        items = []
        for i, data in enumerate(self.references):
            preview, fmt = self._thumb(data, REF_THUMB_SIDE)
            img = widgets.Image(value=preview, format=fmt,
                                layout=widgets.Layout(width="72px", height="72px", object_fit="contain",
                                                      border="1px solid #dadce0"))
            name = self.reference_names[i] if i < len(self.reference_names) else f"image {i + 1}"
            remove = widgets.Button(description="Remove", icon="times", tooltip=f"Remove {name}",
                                    layout=widgets.Layout(width="72px", height="24px", padding="0"))
            remove.style.font_size = "11px"
            remove.on_click(lambda _b, i=i: self.remove_reference(i))
            label = widgets.HTML(f"<div style='font-size:10.5px;color:{_MUTED};width:72px;overflow:hidden;"
                                 f"text-overflow:ellipsis;white-space:nowrap' title='{html.escape(name)}'>"
                                 f"{'1st · ' if i == 0 else ''}{html.escape(name)}</div>")
            items.append(widgets.VBox([img, label, remove], layout=widgets.Layout(width="74px")))
        self.reference_box.children = items
        _close_all(old)

    def _refresh_mask(self) -> None:
        old = list(self.mask_box.children)
        if self.mask is None:
            self.mask_box.children = ()
        else:
            preview, fmt = self._thumb(self.mask, REF_THUMB_SIDE)
            img = widgets.Image(value=preview, format=fmt,
                                layout=widgets.Layout(width="72px", height="72px", object_fit="contain",
                                                      border="1px dashed #9aa0a6"))
            remove = widgets.Button(description="Remove", icon="times", tooltip="Remove the mask",
                                    layout=widgets.Layout(width="72px", height="24px", padding="0"))
            remove.style.font_size = "11px"
            remove.on_click(lambda _b: self.set_mask(None))
            self.mask_box.children = (widgets.VBox([img, remove], layout=widgets.Layout(width="74px")),)
        _close_all(old)

    def _uploaded(self, change: dict) -> list[tuple[str, bytes]]:
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
            problems = []
            for name, data in files:
                if not self.add_reference(data, name=name):
                    problems.append(self.reference_message.value)
            if problems:
                self.reference_message.value = "".join(problems)
        except Exception as exc:  # noqa: BLE001 - report callback errors, never swallow them
            self._note(self.reference_message, f"Upload failed: {_plain(exc)}", error=True)
        finally:
            self._clear_upload(self.reference_upload)

    def _on_mask_upload(self, change: dict) -> None:
        files = self._uploaded(change)
        if not files:
            return
        try:
            name, data = files[-1]
            self.set_mask(data, name=name)
        except Exception as exc:  # noqa: BLE001
            self._note(self.mask_message, f"Upload failed: {_plain(exc)}", error=True)
        finally:
            self._clear_upload(self.mask_upload)

    def _on_upload_error(self, change: dict, target: widgets.HTML) -> None:
        if change.get("new"):
            self._note(target, f"The browser could not read the file: {change['new']}", error=True)

    @staticmethod
    def _clear_upload(upload: widgets.FileUpload) -> None:
        # The bytes now live in .references / .mask; keep them out of the widget state (which a
        # notebook may save) and let the same file be picked again.
        try:
            upload.value = ()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------------------ generation
    def _on_generate(self, _button: Any = None) -> None:
        if self.job is not None and not self.job.done():
            return  # a click that raced the disabled state: one job at a time, no double charge
        try:
            prompt = self.prompt.value or ""
            if not prompt.strip():
                self._set_status("Write a prompt first.", "error")
                return
            if self.mask is not None and not self.references:
                self._set_status("A mask needs a reference image: add one, or remove the mask.", "error")
                return
            params = dict(n=self.n.value, size=self.size.value, quality=self.quality.value,
                          background=self.background.value, output_format=self.output_format.value,
                          model=self.model.value, wait=self.wait.value,
                          image=list(self.references) or None, mask=self.mask)
            self._task = None
            self._cancel_requested = self._refused = self._stopping = False
            self._cancelling = None
            self._job_wait = params["wait"]
            self._started = time.monotonic()
            self._phase = "Sending…"
            self.generate_button.disabled = True
            self.cancel_button.disabled = False
            self.cancel_button.description = "Cancel"
            self._set_status("Sending…")
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None:
                raise RuntimeError("no running asyncio event loop (run the studio in a Jupyter kernel, "
                                   "or click from inside a coroutine)")
            self.job = loop.create_task(self._run(prompt, params))
            self.job.add_done_callback(self._job_done)
            self._ticker = loop.create_task(self._tick())
        except Exception as exc:  # noqa: BLE001 - report, never swallow
            self.last_error = exc
            self.job = None
            self._reset_buttons()
            self._set_status(f"Could not start: {_plain(exc)}", "error")

    async def _tick(self) -> None:
        while True:
            if self.job is None:
                return
            self.status.value = f"{self._phase} · {_elapsed(time.monotonic() - self._started)}"
            await asyncio.sleep(TICK_SECONDS)

    def _on_task(self, task: Any) -> None:
        """The gateway accepted the task: Cancel can now reach it."""
        try:
            self._task = task
            if self._cancel_requested:
                self._start_gateway_cancel()
            else:
                self._phase = f"Generating · task {_short(task.id, 16)}"
        except Exception as exc:  # noqa: BLE001 - never break the call from a display callback
            log.warning("studio: on_task callback failed: %s", exc)

    async def _run(self, prompt: str, params: dict) -> None:
        result = None
        try:
            if params["wait"] == "sync":
                self._phase = "Generating (sync)"
            result = await self.client.generate(prompt, on_task=self._on_task, **params)
            self._phase = "Preparing previews…"
            thumbs = await asyncio.to_thread(
                lambda: [self._thumb(img.data, THUMB_SIDE) for img in result.images])
        except asyncio.CancelledError:
            self._stop_ticker()
            self._set_status(self._cancelled_message(), "info")
            return
        except TaskCancelledError:
            self._stop_ticker()
            task_id = getattr(self._task, "id", "")
            self._set_status(f"Cancelled at the gateway after {self._elapsed_now()} (task {task_id}).", "info")
            return
        except Exception as exc:  # noqa: BLE001 - SharkError or not, say it in plain words
            self._stop_ticker()
            self.last_error = exc
            if not isinstance(exc, SharkError):
                log.error("studio: unexpected error during generation", exc_info=exc)
            self._set_status(f"Error: {_plain(exc)}", "error")
            return
        finally:
            self._refresh_ledger()
            self._update_estimate()
        self._stop_ticker()
        self.results.append(result)
        self._add_cards(result, thumbs)
        credit = "cost unknown" if result.credit is None else f"{_num(result.credit)} credit ({_usd(result.credit)})"
        notes = result._notes() if hasattr(result, "_notes") else []
        if notes:  # images missing, or more/fewer than asked: say so where the user looks
            self._set_status(f"Done in {self._elapsed_now()} · {credit}. " + " ".join(notes), "error")
        else:
            self._set_status(f"Done: {_plural(len(result.images), 'image')} in {self._elapsed_now()} · {credit}.", "ok")

    def _elapsed_now(self) -> str:
        return _elapsed(time.monotonic() - self._started)

    def _cancelled_message(self) -> str:
        took = self._elapsed_now()
        if self._job_wait == "sync":
            return (f"Stopped waiting after {took}. The call may still be charged; "
                    "it is in the ledger as 'unknown'.")
        if self._task is None:
            return (f"Stopped waiting after {took}, before the gateway confirmed the task. The call may "
                    "still be charged; it is in the ledger as 'unknown'.")
        task_id = self._task.id
        if self._refused:
            return (f"Stopped waiting after {took}. The gateway refused to cancel task {task_id}, so it may "
                    "still be charged; it stays in the ledger as pending (client.reconcile() checks it later).")
        return f"Stopped waiting after {took} (task {task_id}); cancel was requested at the gateway."

    def _stop_ticker(self) -> None:
        # getattr: close() also runs from Widget.__del__ on a studio whose __init__ raised early
        if getattr(self, "_ticker", None) is not None:
            self._ticker.cancel()
            self._ticker = None

    def _job_done(self, job: asyncio.Task) -> None:
        # Runs even when the job was cancelled before its first step (so _run's handlers never ran).
        if self.job is not job:
            return  # an older job; a newer one owns the buttons now
        self.job = None
        self._stop_ticker()
        self._reset_buttons()
        if job.cancelled():
            self._set_status(self._cancelled_message())
        elif job.exception() is not None:  # only a BaseException gets past _run's handlers
            self._set_status(f"Error: {_plain(job.exception())}", "error")
        self._refresh_ledger()

    def _reset_buttons(self) -> None:
        self.generate_button.disabled = False
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancel"
        self.cancel_button.button_style = ""

    async def wait_for_job(self) -> None:
        """Wait until the current job (if any) has finished; never raises for the job's outcome."""
        job = self.job
        if job is not None:
            await asyncio.wait([job])
        await asyncio.sleep(0)  # let the done callbacks run

    # ----------------------------------------------------------------------------------- cancel
    def _on_cancel(self, _button: Any = None) -> None:
        try:
            job = self.job
            if job is None or job.done() or self._stopping:
                return
            if self._job_wait == "sync":
                self._stop_waiting(job)          # sync: nothing to cancel at the gateway
            elif self._refused or (self._cancel_requested and self._task is None):
                self._stop_waiting(job)          # the second click: stop waiting
            elif self._cancelling is not None:
                return                           # a cancel request is already on its way
            elif self._task is None:
                # The gateway has not given the task id yet: cancel as soon as it does.
                self._cancel_requested = True
                self._phase = "Cancel requested — waiting for the gateway to accept the task so it can be cancelled"
                self.cancel_button.description = "Stop waiting"
            else:
                self._start_gateway_cancel()
        except Exception as exc:  # noqa: BLE001 - report, never swallow
            self.last_error = exc
            self._set_status(f"Cancel failed: {_plain(exc)}", "error")

    def _stop_waiting(self, job: asyncio.Task) -> None:
        self._stopping = True
        self._phase = "Stopping…"
        self.cancel_button.disabled = True
        job.cancel()

    def _start_gateway_cancel(self) -> None:
        if self._cancelling is not None or self._task is None:
            return
        self._phase = f"Cancelling task {self._task.id} at the gateway…"
        self.cancel_button.disabled = True
        self._cancelling = asyncio.ensure_future(self._cancel_at_gateway(self._task))

    async def _cancel_at_gateway(self, task: Any) -> None:
        try:
            outcome = await self.client.cancel(task)
        except Exception as exc:  # noqa: BLE001 - a failed cancel request counts as refused
            outcome = "refused"
            log.info("studio: the cancel request failed: %s", _plain(exc))
        job = self.job
        if job is None or job.done():
            return
        if outcome == "cancelled":
            # The poll loop sees the task as cancelled at its next poll and records it in the ledger.
            self._phase = f"Cancelled at the gateway (task {task.id}) — finishing"
        else:
            self._refused = True
            self._phase = REFUSED_MESSAGE
            self.cancel_button.description = "Stop waiting"
            self.cancel_button.button_style = "warning"
            self.cancel_button.disabled = False

    # ---------------------------------------------------------------------------------- gallery
    def _add_cards(self, result: Any, thumbs: list[tuple[bytes, str]]) -> None:
        cards = [self._card(result, img, thumb, fmt) for img, (thumb, fmt) in zip(result.images, thumbs)]
        self.gallery.children = (*cards, *self.gallery.children)  # newest first
        self.gallery_empty.layout.display = "none"

    def _card(self, result: Any, img: Any, thumb: bytes, fmt: str) -> widgets.VBox:
        picture = widgets.Image(value=thumb, format=fmt,
                                layout=widgets.Layout(width="200px", height="200px", object_fit="contain"))
        w, h = img.size
        n = getattr(result, "images_billed", len(result.images))
        idx = f" · {img.index + 1}/{n}" if n > 1 else ""
        caption = widgets.HTML(
            f"<div style='font-size:12px;line-height:1.3;width:200px'>"
            f"<div style='overflow:hidden;text-overflow:ellipsis;white-space:nowrap' "
            f"title='{html.escape(result.prompt)}'>{html.escape(_short(result.prompt, 60))}</div>"
            f"<div style='color:{_MUTED}'>{w}×{h} {html.escape(img.format.upper())}{idx}</div></div>")
        def small() -> widgets.Layout:
            return widgets.Layout(width="auto", flex="1 1 0%", height="26px", padding="0 4px", margin="1px")

        save = widgets.Button(description="Save", icon="download", tooltip="Save the full-size file to the folder above",
                              layout=small())
        open_ = widgets.Button(description="Open", icon="expand", tooltip="Show a larger view", layout=small())
        reuse = widgets.Button(description="Use as reference", icon="retweet",
                               tooltip="Add this image to the reference images for the next edit", layout=small())
        path = widgets.HTML(layout=widgets.Layout(width="200px"))
        save.on_click(lambda _b: self._spawn(self._save(img, path, save)))
        open_.on_click(lambda _b: self._spawn(self._open(img)))
        reuse.on_click(lambda _b: self._use_as_reference(img))
        return widgets.VBox(
            [picture, caption, widgets.HBox([save, open_], layout=widgets.Layout(width="100%")),
             widgets.HBox([reuse], layout=widgets.Layout(width="100%")), path],
            layout=widgets.Layout(width="210px", padding="5px", border="1px solid #e0e0e0"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def _save(self, img: Any, path_label: widgets.HTML, button: widgets.Button) -> Path | None:
        folder = (self.save_folder.value or "").strip() or _default_folder()
        button.disabled = True
        try:
            path = await asyncio.to_thread(img.save, folder)
        except Exception as exc:  # noqa: BLE001
            self._note(path_label, f"Not saved: {_plain(exc)}", error=True)
            return None
        finally:
            button.disabled = False
        shown = _display_path(path)
        path_label.value = (f"<div style='font-size:11px;color:{_OK_COLOR};word-break:break-all'>"
                            f"Saved: <code>{html.escape(shown)}</code></div>")
        return path

    async def _open(self, img: Any) -> None:
        try:
            preview, fmt = await asyncio.to_thread(self._thumb, img.data, VIEW_SIDE)
        except Exception as exc:  # noqa: BLE001
            self._set_status(f"Could not open the image: {_plain(exc)}", "error")
            return
        w, h = img.size
        self.viewer_image.format = fmt
        self.viewer_image.value = preview
        saved = img.result.saved[-1] if img.result is not None and img.result.saved else None
        where = f" · saved at <code>{html.escape(_display_path(saved))}</code>" if saved else " · Save writes the full file"
        self.viewer_caption.value = (f"<div style='font-size:12px'><b>{html.escape(_short(img.prompt, 80))}</b>"
                                     f"<br><span style='color:{_MUTED}'>{w}×{h} {img.format.upper()} "
                                     f"(view scaled to ≤ {VIEW_SIDE} px){where}</span></div>")
        self.viewer.layout.display = None

    def _close_viewer(self) -> None:
        self.viewer.layout.display = "none"
        self.viewer_image.value = b""  # keep the notebook's saved widget state small

    def _use_as_reference(self, img: Any) -> None:
        name = f"result {img.index + 1}.{img.format}"
        if self.add_reference(img.data, name=name):
            self._set_status(f"Added as reference image {len(self.references)}: the next Generate edits it.", "ok")

    # ------------------------------------------------------------------------------------ misc
    def close(self) -> None:
        """Close the studio and every widget in it (their layouts and styles too)."""
        self._stop_ticker()
        _close_all(list(_descendants(self)))
        super().close()
        _close_parts(self)

    def __repr__(self) -> str:
        state = "running" if self.job is not None else "idle"
        return (f"<Studio {'offline' if self.client.offline else 'live'} · {state} · "
                f"{len(self.results)} results · {len(self.references)} references>")


# ------------------------------------------------------------------------------ module helpers

def _default_folder() -> str:
    try:
        from .results import DEFAULT_FOLDER
    except ImportError:  # pragma: no cover
        return "shark-images"
    return DEFAULT_FOLDER


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _descendants(widget: widgets.Widget):
    for child in getattr(widget, "children", ()) or ():
        yield child
        yield from _descendants(child)


def _close_parts(w: widgets.Widget) -> None:
    """Close a widget's Layout and Style: they are widget models of their own, which
    ``Widget.close()`` leaves open (in the kernel, and in the notebook's saved widget state)."""
    for part in (getattr(w, "layout", None), getattr(w, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()


def _close_all(ws: list) -> None:
    for w in ws:
        for d in list(_descendants(w)):
            d.close()
            _close_parts(d)
        w.close()
        _close_parts(w)


def studio(client: Any = None, **defaults: Any) -> Studio:
    """Open the studio. ``client``: an AsyncShark (default: the %shark magic's shared client, or a
    new one — the offline simulator when no key is set). ``defaults``: starting values for
    prompt, model, size, quality, background, output_format, n, wait ("task" or "sync") and
    save_folder."""
    return Studio(client, **defaults)
