"""The studio: write a prompt, pick a model and its settings, see the cost, generate, cancel, and
keep the results — without freezing the kernel.

    import shark_nb
    shark_nb.studio()                                  # gpt-image-2
    shark_nb.studio(model="gemini", aspect_ratio="16:9", n=2)

This module only composes the parts: :mod:`.settings` (the model's controls, from its schema),
:mod:`.uploads` (reference images and mask), :mod:`.jobs` (the widget-free job runner: asyncio
task, elapsed time, Cancel), :mod:`.gallery` (result cards). Changing the model rebuilds the
settings from the new model's schema, keeping the prompt, the images and the values the new model
shares (when valid for it; values of a model you come back to are remembered).

The API key is never a widget value (widget state is saved into notebooks): there is no key field;
the studio only says how to set one.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as widgets

from .. import text
from ..errors import ValidationError
from ..params import validate_model
from ..request import WAIT_MODES
from ..schemas import DEFAULT_MODEL, ModelSpec, model_spec, models
from ..session import async_client
from .common import ERROR_COLOR, MUTED, OK_COLOR, close_tree, plain, section
from .gallery import Gallery
from .jobs import JobRunner, Outcome
from .settings import SettingsPanel, carry_over
from .uploads import UploadSlots

__all__ = ["Studio", "studio", "OFFLINE_BANNER"]

OFFLINE_BANNER = ("Offline simulator — images are synthetic, nothing is charged. "
                  "Set SHARK_API_KEY or call shark_nb.set_key() to use the real API.")
#: Starting values that are not model settings.
STUDIO_KEYS = ("prompt", "model", "wait", "save_folder")
#: The settings the studio had before it spoke every model: attributes kept (None when the
#: current model lacks the field).
LEGACY_SETTINGS = ("size", "quality", "background", "output_format", "n")
_LABEL = {"description_width": "112px"}


def check_defaults(defaults: dict[str, Any]) -> tuple[ModelSpec, dict[str, Any]]:
    """The studio's starting model and settings, checked before any widget exists (a refused
    studio leaves no half-built widgets open). A name no model has: TypeError; a field this model
    lacks or a bad value: the schema's ValidationError (with its did-you-mean)."""
    known = {f.name for spec in models() for f in spec.settings}
    unknown = sorted(set(defaults) - set(STUDIO_KEYS) - known)
    if unknown:
        raise TypeError(f"studio() got unexpected settings {unknown}; known: {list(STUDIO_KEYS)} and the "
                        f"model's fields (shark_nb.model_spec(model).describe())")
    spec = model_spec(validate_model(defaults.get("model", DEFAULT_MODEL)))
    fields = spec.validate({k: v for k, v in defaults.items() if k not in STUDIO_KEYS})
    if defaults.get("wait", "task") not in WAIT_MODES:
        raise ValidationError("wait", defaults["wait"], "one of 'task', 'sync'")
    return spec, fields


class _WaitToggle(widgets.ToggleButtons):
    """The wait-mode toggle (``.value`` is "task" or "sync"). Calling it — ``await studio.wait()``
    — waits for the current job, so ``studio.wait`` is both the widget and the coroutine."""

    def __init__(self, waiter: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiter = waiter

    def __call__(self) -> Any:
        return self._waiter()


class Studio(widgets.VBox):
    """The shark_nb studio. Build it with :func:`studio`.

    Scriptable: ``.prompt``, ``.model`` (a Dropdown of gateway ids), ``.settings`` (the current
    model's controls: field name -> widget; set ``.value``), ``.size``, ``.quality``,
    ``.background``, ``.output_format``, ``.n`` (that control, or None when the model lacks the
    field), ``.wait``, ``.generate_button``, ``.cancel_button``, ``.status`` (plain text),
    ``.estimate``, ``.ledger_strip``, ``.gallery``, ``.results`` (GenerationResults, newest last),
    ``.job`` (the running asyncio task or None), ``.runner`` (the job runner), ``.references``
    (list of bytes), ``.mask`` (bytes or None), ``await studio.wait()``, ``add_reference()``,
    ``set_mask()`` (bytes, a path or a MaskPainter), ``open_painter(i)`` / ``.painter``, ``close()``.
    """

    def __init__(self, client: Any = None, **defaults: Any) -> None:
        spec, fields = check_defaults(defaults)   # may refuse: before the first widget exists
        resolved = async_client(client)
        super().__init__()
        self.client = resolved
        self.results: list[Any] = []
        self.last_error: BaseException | None = None
        self._remembered: dict[str, dict[str, Any]] = {}   # model id -> its controls' last values
        self._latest: dict[str, Any] = {}                  # field name -> its latest value, any model
        self.uploads = UploadSlots(on_change=self._changed)
        self.results_view = Gallery(defaults.get("save_folder"), use_as_reference=self._use_as_reference,
                                    status=self._set_status)
        # each image's card is added as soon as it has arrived; the job's last step waits for them
        self.runner = JobRunner(resolved, on_update=self._show_progress, on_finish=self._finished,
                                prepare=self.results_view.settle, on_image=self.results_view.arriving)
        self._build(spec, defaults)
        self.panel = SettingsPanel(spec, fields, on_change=self._changed)
        self.settings_box.children = (self.panel.box,)
        self.uploads.configure(spec)
        self.model.observe(self._on_model, names="value")
        self.prompt.observe(lambda _change: self._update_estimate(), names="value")
        self._changed()
        self._refresh_ledger()

    # ------------------------------------------------------------------------------ building
    def _build(self, spec: ModelSpec, d: dict[str, Any]) -> None:
        wide = widgets.Layout(width="100%")
        self.prompt = widgets.Textarea(
            value=str(d.get("prompt", "")), placeholder="Describe the image — e.g. a red fox in the snow, watercolour",
            layout=widgets.Layout(width="100%", height="84px"))
        self.model = widgets.Dropdown(options=[(f"{s.name} · {s.id}", s.id) for s in models()], value=spec.id,
                                      description="Model", style=_LABEL, layout=wide,
                                      tooltip="The gateway model; its own settings appear below")
        self.settings_box = widgets.VBox(layout=wide)
        self.wait = _WaitToggle(
            self.wait_for_job, options=[("Task", "task"), ("Sync", "sync")], value=d.get("wait", "task"),
            style={"button_width": "100px"}, layout=widgets.Layout(width="auto"),
            tooltips=["Submit a task and poll it: Cancel really cancels at the gateway",
                      "Wait for the answer on one request: Cancel only stops waiting"])
        self.wait_mode = self.wait  # the same widget, under a name that reads as a setting
        self.estimate = widgets.HTML()
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play",
                                              tooltip="Generate with these settings",
                                              layout=widgets.Layout(width="auto", flex="1 1 auto"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True,
                                            tooltip="Cancel the running generation",
                                            layout=widgets.Layout(width="auto", flex="1 1 auto"))
        self.status = widgets.Label(layout=wide)
        self.ledger_strip = widgets.HTML()
        self.header = widgets.HTML()
        offline = self.client.offline
        self.banner = widgets.HTML(
            "<div style='background:#fef7e0;border-left:4px solid #f9ab00;padding:6px 10px;font-size:12.5px;"
            f"line-height:1.4'>{html.escape(OFFLINE_BANNER)} Then run <code>shark_nb.studio()</code> again.</div>"
            if offline else "", layout=widgets.Layout(display=None if offline else "none"))
        controls = widgets.VBox(
            [widgets.HTML(section("Prompt")), self.prompt, self.model, self.settings_box,
             widgets.HBox([widgets.HTML("<div style='text-align:right;padding-right:8px'>Wait</div>",
                                        layout=widgets.Layout(width="112px", margin="0 4px 0 0")), self.wait],
                          layout=wide),
             self.uploads.box,
             widgets.HTML("<hr style='margin:6px 0;border:none;border-top:1px solid #e0e0e0'>"),
             self.estimate,
             widgets.HBox([self.generate_button, self.cancel_button], layout=wide),
             self.status],
            layout=widgets.Layout(width="460px", flex="0 0 460px", padding="0 14px 0 0",
                                  border_right="1px solid #e0e0e0"))
        body = widgets.HBox([controls, self.results_view.box], layout=widgets.Layout(width="100%",
                                                                                    align_items="flex-start"))
        self.children = (self.header, self.banner, body, self.ledger_strip)
        default_layout = self.layout
        self.layout = widgets.Layout(border="1px solid #dadce0", padding="10px 12px", width="100%",
                                     max_width="1180px")
        default_layout.close()  # replaced: it would stay open (and in the saved widget state) for good
        # Stable CSS classes: hooks for custom styling and for the browser test.
        self.add_class("shark-studio")
        for part, css in ((self.prompt, "prompt"), (self.model, "model"), (self.wait, "wait"),
                          (self.estimate, "estimate"), (self.generate_button, "generate"),
                          (self.cancel_button, "cancel"), (self.status, "status"), (self.ledger_strip, "ledger"),
                          (self.header, "header"), (self.banner, "banner")):
            part.add_class(f"shark-studio-{css}")
        self.generate_button.on_click(self._on_generate)
        self.cancel_button.on_click(self._on_cancel)

    # ------------------------------------------------------------------------- the model
    @property
    def spec(self) -> ModelSpec:
        return self.panel.spec

    @property
    def settings(self) -> dict[str, widgets.Widget]:
        """The current model's controls: field name -> widget."""
        return self.panel.controls

    def _on_model(self, change: dict) -> None:
        try:
            old, spec = self.panel, model_spec(change["new"])
            self._remembered[old.spec.id] = old.raw_values()
            self._latest.update(old.raw_values())
            # this model's own last values, overlaid with the latest value of each field it shares
            # (set on any model), where valid for it; the rest: the model's defaults
            values = {**carry_over(spec, self._remembered.get(spec.id, {})), **carry_over(spec, self._latest)}
            self.panel = SettingsPanel(spec, values, on_change=self._changed)
            self.settings_box.children = (self.panel.box,)
            old.close()
            self.uploads.configure(spec)
            self._changed()
        except Exception as exc:  # noqa: BLE001 - report, never swallow
            self.last_error = exc
            self._set_status(f"Could not switch the model: {plain(exc)}", "error")

    def _changed(self) -> None:
        """After any change of prompt-independent inputs: header, estimate, Generate's state."""
        self._update_header()
        self._update_estimate()
        if self.runner.running:
            return
        blocked = self.uploads.blocked()
        self.generate_button.disabled = blocked is not None
        if blocked:
            self._set_status(blocked, "error")
        elif not self.status.value or self.status.value == getattr(self, "_blocked_shown", None) \
                or self.status.value.startswith("Ready"):
            self._set_status("Ready." if not self.client.offline else "Ready — offline simulator.")
        self._blocked_shown = blocked

    # --------------------------------------------------------------------------- display bits
    def _set_status(self, message: str, kind: str = "info") -> None:
        self.status.value = message
        self.status.style.text_color = {"error": ERROR_COLOR, "ok": OK_COLOR}.get(kind)

    def _update_header(self) -> None:
        spec = self.spec
        style = "border-radius:8px;padding:1px 8px;font-size:11px"
        mode = (f"<span style='background:#fef7e0;color:#8a6100;{style}'>offline simulator</span>"
                if self.client.offline else f"<span style='background:#e6f4ea;color:#1b5e20;{style}'>live API · key set</span>")
        self.header.value = (
            "<div style='display:flex;align-items:center;gap:10px;font-size:15px'>"
            f"<b>shark_nb studio</b><span style='color:{MUTED}'>·</span>"
            f"<span title='{html.escape(spec.title)}'><code style='font-size:13px'>{html.escape(spec.id)}</code></span>"
            f"{mode}</div>")

    def _update_estimate(self) -> None:
        try:
            fields = self.panel.values()
            est = self.spec.estimate(self.prompt.value or "", fields, len(self.uploads.images_to_send()))
        except Exception as exc:  # noqa: BLE001 - never let a display update raise in a callback
            self.estimate.value = f"<span style='color:{ERROR_COLOR}'>No estimate: {html.escape(plain(exc))}</span>"
            return
        remaining = self.client.ledger.remaining
        budget = "no budget set" if remaining is None else f"budget left {text.money(remaining)}"
        if est.known:
            figure = f"<b>~{text.money(est.credit)}</b> <span style='color:{MUTED}'>· {html.escape(est.basis)}</span>"
            if remaining is not None and est.credit > remaining:
                budget = f"<span style='color:{ERROR_COLOR}'>over budget: only {text.credit(remaining)} left</span>"
        else:
            figure = (f"<b>unknown</b> <span style='color:{MUTED}'>· no published price for {self.spec.name}; "
                      "learned from this session's calls after the first one</span>")
            if remaining is not None:
                budget += " · the gateway's own guard checks this call"
        self.estimate.value = (f"<div style='line-height:1.5'><span style='color:{MUTED}'>estimate:</span> {figure}"
                               f"<br><span style='color:{MUTED};font-size:12px'>{budget}</span></div>")

    def _refresh_ledger(self) -> None:
        led = self.client.ledger
        parts = [text.count(led.calls, "call"), text.count(led.images, "image"), text.money(led.total_credits)]
        if led.unknown_cost_calls:
            parts.append(f"{text.count(led.unknown_cost_calls, 'call')} of unknown cost")
        remaining = led.remaining
        parts.append("no budget set" if remaining is None else f"budget left {text.money(remaining)}")
        self.ledger_strip.value = (
            f"<div style='font-size:12px;color:{MUTED};border-top:1px solid #e0e0e0;padding-top:6px'>"
            f"<b>Session ledger</b> · {html.escape(' · '.join(parts))}</div>")

    # ----------------------------------------------------------------------- generate / cancel
    def _on_generate(self, _button: Any = None) -> None:
        if self.runner.running:
            return  # a click that raced the disabled state: one job at a time, no double charge
        try:
            prompt = self.prompt.value or ""
            blocked = self.uploads.blocked()
            if blocked:
                self._set_status(blocked, "error")
                return
            if not prompt.strip():
                self._set_status("Write a prompt first.", "error")
                return
            fields = self.panel.values()
            images = self.uploads.images_to_send()
            self.runner.start(prompt, model=self.spec.id, image=images or None, mask=self.uploads.mask_to_send(),
                              wait=self.wait.value, **fields)
        except Exception as exc:  # noqa: BLE001 - report, never swallow
            self.last_error = exc
            self._set_status(f"Error: {plain(exc)}" if isinstance(exc, ValidationError)
                             else f"Could not start: {plain(exc)}", "error")
            return
        self.generate_button.disabled = True
        aside = self.uploads.set_aside()
        self.runner.phase = "Sending…" + (f" ({'; '.join(aside)})" if aside else "")
        self._show_progress()

    def _on_cancel(self, _button: Any = None) -> None:
        try:
            self.runner.cancel()
        except Exception as exc:  # noqa: BLE001 - report, never swallow
            self.last_error = exc
            self._set_status(f"Cancel failed: {plain(exc)}", "error")

    def _show_progress(self) -> None:
        r = self.runner
        if r.running:
            self.status.value = r.status_line()
            self.status.style.text_color = None
        self.cancel_button.disabled = not r.cancel_enabled
        self.cancel_button.description = r.cancel_label
        self.cancel_button.button_style = "warning" if r.refused else ""

    def _finished(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.last_error = outcome.error
        if outcome.kind == "done":
            self.results.append(outcome.result)
            self.results_view.add(outcome.result, outcome.extra or [])
        notes = outcome.kind == "done" and not outcome.message.startswith("Done:")
        self._set_status(outcome.message, "error" if outcome.kind == "error" or notes
                         else "ok" if outcome.kind == "done" else "info")
        self._show_progress()
        self._refresh_ledger()
        self._changed()

    @property
    def job(self) -> Any:
        """The running asyncio task, or None."""
        return self.runner.job

    async def wait_for_job(self) -> None:
        """Wait until the current job (if any) has finished; never raises for the job's outcome."""
        await self.runner.wait()

    # ------------------------------------------------------------------ the previous names
    @property
    def size(self) -> widgets.Widget | None:
        return self.settings.get("size")

    @property
    def quality(self) -> widgets.Widget | None:
        return self.settings.get("quality")

    @property
    def background(self) -> widgets.Widget | None:
        return self.settings.get("background")

    @property
    def output_format(self) -> widgets.Widget | None:
        return self.settings.get("output_format")

    @property
    def n(self) -> widgets.Widget | None:
        return self.settings.get("n")

    # ---------------------------------------------------------------------- images (uploads.py)
    references = property(lambda self: self.uploads.references)
    reference_names = property(lambda self: self.uploads.reference_names)
    mask = property(lambda self: self.uploads.mask)
    mask_name = property(lambda self: self.uploads.mask_name)
    reference_upload = property(lambda self: self.uploads.reference_upload)
    reference_box = property(lambda self: self.uploads.reference_box)
    reference_message = property(lambda self: self.uploads.reference_message)
    mask_upload = property(lambda self: self.uploads.mask_upload)
    mask_box = property(lambda self: self.uploads.mask_box)
    mask_message = property(lambda self: self.uploads.mask_message)
    gallery = property(lambda self: self.results_view.grid)
    viewer = property(lambda self: self.results_view.viewer)
    viewer_image = property(lambda self: self.results_view.viewer_image)
    viewer_close = property(lambda self: self.results_view.viewer_close)
    save_folder = property(lambda self: self.results_view.save_folder)
    _helpers = property(lambda self: self.results_view.helpers)

    def add_reference(self, data: Any, name: str | None = None) -> bool:
        """Add a reference image (bytes or a file path). Returns False (with a message) if refused."""
        return self.uploads.add_reference(data, name)

    def remove_reference(self, index: int) -> None:
        self.uploads.remove_reference(index)

    def set_mask(self, data: Any, name: str | None = None) -> bool:
        """Set the mask (PNG with alpha, the size of the first reference); None clears it."""
        return self.uploads.set_mask(data, name)

    painter = property(lambda self: self.uploads.painter)

    def open_painter(self, index: int = 0) -> Any:
        """Open the MaskPainter ("Paint mask") over reference ``index`` under the mask slot; each
        finished stroke fills the slot (checked like an upload). Returns the painter."""
        return self.uploads.open_painter(index)

    def _use_as_reference(self, img: Any) -> None:
        if self.add_reference(img.data, name=f"result {img.index + 1}.{img.format}"):
            self._set_status(f"Added as reference image {len(self.references)}: the next Generate edits it.", "ok")
        else:
            self._set_status("The image was not added: see the message under the reference images.", "error")

    # ------------------------------------------------------------------------------------ misc
    def close(self) -> None:
        """Close the studio and every widget in it (their layouts and styles too)."""
        if getattr(self, "runner", None) is None:  # a studio refused in __init__ (close() from __del__)
            return super().close()
        self.runner.close()
        close_tree(*(c for c in (self.children or ())), getattr(getattr(self, "panel", None), "box", None))
        super().close()
        close_tree(self.layout)

    def __repr__(self) -> str:
        state = "running" if self.runner.job is not None else "idle"
        return (f"<Studio {self.spec.name} · {'offline' if self.client.offline else 'live'} · {state} · "
                f"{len(self.results)} results · {len(self.references)} references>")


def studio(client: Any = None, **defaults: Any) -> Studio:
    """Open the studio. ``client``: an AsyncShark (default: the session's shared client — the
    one ``%shark`` uses — or the offline simulator when no key is set). ``defaults``: starting
    values for prompt, model (an id or alias), wait ("task" or "sync"), save_folder, and the
    model's own settings (``shark_nb.model_spec(model).describe()`` lists them)."""
    return Studio(client, **defaults)
