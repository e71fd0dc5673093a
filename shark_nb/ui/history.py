"""The history widget (``shark_nb.history()``): a search box, a model filter, one page of past
calls (a thumbnail per image, prompt, model, settings, credit, time, links to the saved files, a
Restore button), Previous / Next, and the restored studio below.

Only the page shown is rendered: its thumbnails are read from disk then (≤ 30 KB each) and the
previous page's widgets are closed, so 10,000 past calls cost one page of widgets."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from .. import text
from ..display import file_link
from .common import ERROR_COLOR, MUTED, OK_COLOR, close_tree, plain

__all__ = ["HistoryView"]

_ALL = "__all__"


def _model_label(model: str) -> str:
    from ..schemas import find_model

    spec = find_model(model)
    return spec.name if spec is not None else model


class HistoryView(widgets.VBox):
    """``.search`` (Text), ``.model`` (Dropdown), ``.rows`` (one HBox per entry of the page),
    ``.previous`` / ``.next``, ``.page_label``, ``.status``, ``.studio_box`` (the restored studio),
    ``.studio`` (it, or None). ``history`` is the :class:`shark_nb.archive.History` it shows."""

    def __init__(self, history: Any) -> None:
        super().__init__()
        self.history = history
        self.studio: Any = None
        self.search = widgets.Text(value=history.query, placeholder="words in the prompt, e.g. fox blue",
                                   description="Search", continuous_update=False,
                                   style={"description_width": "56px"}, layout=widgets.Layout(width="340px"))
        self.model = widgets.Dropdown(options=self._model_options(), value=history.model or _ALL,
                                      description="Model", style={"description_width": "48px"},
                                      layout=widgets.Layout(width="300px"))
        self.previous = widgets.Button(description="Newer", icon="chevron-left", layout=widgets.Layout(width="auto"))
        self.next = widgets.Button(description="Older", icon="chevron-right", layout=widgets.Layout(width="auto"))
        self.page_label = widgets.HTML()
        self.summary = widgets.HTML()
        self.status = widgets.HTML()
        self.rows = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.studio_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        bar = widgets.HBox([self.search, self.model, self.previous, self.page_label, self.next],
                           layout=widgets.Layout(align_items="center", flex_flow="row wrap", width="100%"))
        self.children = (widgets.HTML("<div style='font-size:15px'><b>shark_nb history</b></div>"), bar,
                         self.summary, self.rows, self.status, self.studio_box)
        default_layout = self.layout
        self.layout = widgets.Layout(border="1px solid #dadce0", padding="10px 12px", width="100%",
                                     max_width="1180px")
        default_layout.close()
        self.add_class("shark-history")
        for part, css in ((self.search, "search"), (self.model, "model"), (self.previous, "newer"),
                          (self.next, "older"), (self.page_label, "page"), (self.rows, "rows"),
                          (self.status, "status"), (self.studio_box, "studio")):
            part.add_class(f"shark-history-{css}")
        self.search.observe(self._on_search, names="value")
        self.model.observe(self._on_model, names="value")
        self.previous.on_click(lambda _b: self.go(self.history.page - 1))
        self.next.on_click(lambda _b: self.go(self.history.page + 1))
        self.render()

    def _model_options(self) -> list[tuple[str, str]]:
        counts: dict[str, int] = {}
        for e in self.history.all_entries:
            counts[e.model] = counts.get(e.model, 0) + 1
        return [("All models", _ALL)] + [(f"{_model_label(m)} ({counts[m]:,})", m) for m in self.history.models]

    # ----------------------------------------------------------------------------- controls
    def _on_search(self, change: dict) -> None:
        self.history.search(change["new"] or "")
        self.render()

    def _on_model(self, change: dict) -> None:
        self.history.filter(None if change["new"] == _ALL else change["new"])
        self.render()

    def go(self, page: int) -> None:
        """Show page ``page`` (0-based; clamped to the pages there are)."""
        self.history.page = max(0, min(page, self.history.pages - 1))
        self.render()

    # ------------------------------------------------------------------------------- render
    def render(self) -> None:
        h = self.history
        old = self.rows.children
        start = h.page * h.page_size
        entries = h.page_entries()
        self.rows.children = tuple(self._row(start + j, e) for j, e in enumerate(entries)) or (
            widgets.HTML(f"<div style='color:{MUTED};padding:16px 4px'>"
                         + ("No call matches." if h.all_entries else
                            "No calls yet: every generation (the magic, the studio, the client) appears here.")
                         + "</div>"),)
        close_tree(*old)
        self.previous.disabled = h.page == 0
        self.next.disabled = h.page >= h.pages - 1
        self.page_label.value = f"<span style='padding:0 8px'>page {h.page + 1:,} of {h.pages:,}</span>"
        self.summary.value = f"<div style='color:{MUTED};font-size:12px'>{html.escape(h.summary())}</div>"

    def _pictures(self, entry: Any) -> widgets.Widget:
        from ..archive import MAX_THUMBS_SHOWN

        pics = []
        for path in entry.thumbnails[:MAX_THUMBS_SHOWN]:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            pics.append(widgets.Image(value=data, format="webp",
                                      layout=widgets.Layout(width="96px", height="96px", object_fit="contain")))
        if not pics:
            return widgets.HTML(f"<div style='width:96px;height:96px;display:flex;align-items:center;"
                                f"justify-content:center;color:{MUTED};font-size:11px;background:#f5f5f5'>"
                                "no picture</div>")
        return widgets.HBox(pics)

    def _row(self, i: int, e: Any) -> widgets.HBox:
        esc = html.escape
        credit = text.money(e.credit) if e.credit is not None else "credit unknown"
        outcome = e.outcome or "?"
        colour = OK_COLOR if outcome in ("ok", "settled") else ERROR_COLOR
        links = []
        for p in e.existing_files:
            href, shown = file_link(p)
            links.append(f"<a href='{esc(href)}' target='_blank' title='{esc(str(p))}'>{esc(p.name)}</a>")
        gone = len(e.files) - len(links)
        files = (" · ".join(links) + (f" ({gone} moved or deleted)" if gone else "")) if e.files else "not saved"
        info = widgets.HTML(
            f"<div style='font-size:12.5px;line-height:1.45'>"
            f"<div title='{esc(e.prompt[:2000])}'><b>{esc(text.shorten(e.prompt, 140))}</b></div>"
            f"<div style='color:{MUTED}'>{esc(e.shown_time)} · {esc(_model_label(e.model))} · {esc(e.settings)}"
            f" · {esc(credit)} · <span style='color:{colour}'>{esc(outcome)}</span></div>"
            f"<div style='color:{MUTED};font-size:11.5px'>files: {files}</div></div>",
            layout=widgets.Layout(flex="1 1 auto", margin="0 8px"))
        restore = widgets.Button(description="Restore", icon="undo", layout=widgets.Layout(width="auto"),
                                 tooltip="Open a studio with this prompt, model and settings")
        restore.add_class("shark-history-restore")
        restore.on_click(lambda _b: self.restore(i))
        row = widgets.HBox([self._pictures(e), info, restore],
                           layout=widgets.Layout(align_items="center", border_bottom="1px solid #eee",
                                                 padding="4px 0", width="100%"))
        row.add_class("shark-history-row")
        return row

    # ------------------------------------------------------------------------------ restore
    def restore(self, i: int) -> Any:
        """What a Restore button does: ``history.restore(i)``, the studio shown below."""
        try:
            return self.history.restore(i)
        except Exception as exc:  # noqa: BLE001 - a callback: report, never raise into the void
            self.status.value = (f"<div style='color:{ERROR_COLOR};font-size:12px'>Could not restore: "
                                 f"{html.escape(plain(exc))}</div>")
            return None

    def show_studio(self, studio: Any, entry: Any) -> None:
        old = self.studio
        self.studio = studio
        self.status.value = (f"<div style='color:{OK_COLOR};font-size:12px;margin-top:6px'>Restored "
                             f"{html.escape(entry.shown_time)} · {html.escape(text.shorten(entry.prompt, 60))}"
                             " — the studio below has its prompt, model and settings.</div>")
        self.studio_box.children = (studio,)
        if old is not None and old is not studio:
            old.close()

    def close(self) -> None:
        if self.studio is not None:
            self.studio.close()
        close_tree(*(self.children or ()))
        super().close()
        close_tree(self.layout)
