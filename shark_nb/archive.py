"""The history of every past generation: ``shark_nb.history()``, ``shark_nb.history.read(path)``.

    h = shark_nb.history()              # every call in $SHARK_NB_HOME (all sessions), newest first
    h = shark_nb.history("fox blue")    # prompts holding every word; model="gemini" filters
    h.entries[0]                        # HistoryEntry: time, prompt, model, params, credit, ...
    h.restore(0)                        # a studio with exactly that call's prompt, model, fields
    shark_nb.history.read("fox.png")    # the entry behind a file shark_nb saved (PNG, JPEG, WebP)

Where the pieces come from:

* **The calls**: every session file ``$SHARK_NB_HOME/ledger/*.jsonl``, read by the ledger's own
  forgiving reader (:meth:`shark_nb.Ledger.load`): a damaged line is skipped and counted
  (:attr:`History.skipped`), never stops the rest. Refusals where nothing was sent
  (``budget_exceeded``, ``validation_error``, ``not_sent``) are not history.
* **The pictures**: each delivered image leaves a small WebP thumbnail
  ``$SHARK_NB_HOME/thumbs/<call_id>-<index>.webp`` (≤ 30 KB), written by a background thread after
  the result is returned (:func:`schedule_thumbnails`); a failure there is logged, never raised.
  They are found by name, only for the entries on the page shown. Sessions from before had none:
  text only.
* **The full files**: ``result.save`` (and so the magic and the studio's Save) appends a ledger
  line ``{"call_id", "saved": [paths]}`` (:meth:`shark_nb.Ledger.note_saved`); the history links
  to those that still exist.

``shark_nb.history`` is an object (a :class:`_HistoryFunction`): callable, and with ``.read``.
This module is not named ``history`` so that importing it can never replace that object.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import config, text
from .errors import ValidationError
from .ledger import Ledger, LedgerWarning, _credit_of, _number

__all__ = ["History", "HistoryEntry", "history", "read", "load_entries", "thumbnail_path",
           "write_thumbnails", "schedule_thumbnails", "wait_for_thumbnails"]

log = logging.getLogger("shark_nb")

#: Outcomes where nothing was sent: not part of the history.
_NOT_CALLS = frozenset({"budget_exceeded", "validation_error", "not_sent"})
#: Thumbnails shown per entry (a call of n=10 still shows a row of this many).
MAX_THUMBS_SHOWN = 4


# ------------------------------------------------------------------------------------ thumbnails


def thumbs_dir(home: str | os.PathLike | None = None) -> Path:
    """``<home>/thumbs`` (home: ``$SHARK_NB_HOME``)."""
    return (Path(home).expanduser() if home is not None else config.shark_home()) / "thumbs"


def thumbnail_path(call_id: str, index: int, home: str | os.PathLike | None = None) -> Path:
    """Where the thumbnail of image ``index`` (its place in the answer) of ``call_id`` lives."""
    return thumbs_dir(home) / f"{call_id}-{int(index)}.webp"


def _small_webp(data: bytes) -> bytes:
    """A WebP of at most HISTORY_THUMB_MAX_BYTES: 256 px at quality 70, smaller if it must be.
    The image is decoded once (the costly part, ~0.1 s for a 2048² PNG); each smaller try starts
    from the 256 px copy."""
    from PIL import Image

    from . import images

    limit = config.HISTORY_THUMB_MAX_BYTES
    side = config.HISTORY_THUMB_SIDE
    small = images._preview_image(data, side)
    out = b""
    for side_, quality in ((side, 70), (side, 45), (side * 3 // 4, 35), (side // 2, 30)):
        im = small
        if max(small.size) > side_:
            im = small.copy()
            im.thumbnail((side_, side_), Image.Resampling.LANCZOS)
        out = images._encode_preview(im, "WEBP", quality)
        if len(out) <= limit:
            return out
    raise ValueError(f"no thumbnail under {text.bytes_(limit)} (smallest {text.bytes_(len(out))})")


def write_thumbnails(call_id: str, pictures: Iterable[tuple[int, bytes]],
                     home: str | os.PathLike | None = None) -> list[Path]:
    """Write one thumbnail per ``(index, image bytes)``; return the paths written. Never raises:
    an image that cannot be thumbnailed (or a folder that cannot be written) is logged and
    skipped — the call it belongs to has already been returned to the user."""
    from .ledger import _make_private_dirs

    written = []
    folder = thumbs_dir(home)
    for index, data in pictures:
        target = thumbnail_path(call_id, index, home)
        try:
            small = _small_webp(data)
            _make_private_dirs(folder)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(small)
            os.replace(tmp, target)
            written.append(target)
        except Exception as exc:  # noqa: BLE001 - a thumbnail is a convenience, never a failure
            log.warning("shark_nb: no history thumbnail for call %s image %s (%s: %s)",
                        call_id, index, type(exc).__name__, exc)
    return written


_pool: ThreadPoolExecutor | None = None
_pending: set[Future] = set()
_pool_lock = threading.Lock()


def schedule_thumbnails(result: Any) -> Future | None:
    """Thumbnail a delivered result's images on a background thread (the caller returns at once).
    Never raises: a failure to schedule is logged. Returns the Future (tests wait on it)."""
    global _pool
    try:
        call_id = getattr(result, "call_id", None)
        pictures = [(img.index, img.data) for img in getattr(result, "images", ())]
        if not call_id or not pictures:
            return None
        home = config.shark_home()  # now: the home this call was booked under
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shark_nb-thumbs")
            future = _pool.submit(write_thumbnails, call_id, pictures, home)
            _pending.add(future)
        future.add_done_callback(_pending.discard)
        return future
    except Exception as exc:  # noqa: BLE001 - never fail (or delay) the call over a thumbnail
        log.warning("shark_nb: could not schedule history thumbnails (%s: %s)", type(exc).__name__, exc)
        return None


def wait_for_thumbnails(timeout: float | None = 30.0) -> None:
    """Wait until every scheduled thumbnail is written (tests, notebooks before ``history()``)."""
    from concurrent.futures import wait

    with _pool_lock:
        pending = list(_pending)
    if pending:
        wait(pending, timeout=timeout)


# --------------------------------------------------------------------------------------- entries


@dataclass
class HistoryEntry:
    """One past call. ``time`` is ISO 8601 UTC (as in the ledger); ``params`` the call's settings
    (``ImageRequest.params()``: the model's fields, ``model`` and ``wait``); ``credit`` None when
    unknown; ``session`` the ledger file it came from (None for :func:`read`); ``files`` the
    full-resolution files it was saved to (``existing_files``: those still there);
    ``thumbnails`` its thumbnails on disk (looked up when asked)."""

    time: str
    prompt: str
    model: str
    params: dict
    credit: float | None
    outcome: str | None
    tracing_id: str
    session: Path | None
    files: list[Path] = field(default_factory=list)
    call_id: str = ""
    images: int = 0
    error: str | None = None
    images_billed: int = field(default=0, repr=False)
    home: Path | None = field(default=None, repr=False)

    @property
    def thumbnails(self) -> list[Path]:
        """The thumbnails this call left (none for calls from before thumbnails, or failed ones)."""
        if not self.call_id:
            return []
        found = []
        for i in range(max(self.images, self.images_billed, len(self.files), 1)):
            p = thumbnail_path(self.call_id, i, self.home)
            if p.is_file():
                found.append(p)
        return found

    @property
    def existing_files(self) -> list[Path]:
        return [p for p in self.files if p.is_file()]

    @property
    def fields(self) -> dict[str, Any]:
        """The model's own settings (params without ``model`` and ``wait``; unset ones left out)."""
        return {k: v for k, v in self.params.items() if k not in ("model", "wait") and v is not None}

    @property
    def settings(self) -> str:
        """The settings in a few words, as the ledger shows them (``1024x1024 · low · n=2``)."""
        from .ledger import settings_summary

        return settings_summary(self.model, self.params)

    @property
    def shown_time(self) -> str:
        """``2026-11-26 13:45`` (UTC), or the raw text when it is not a time."""
        t = self.time or ""
        return t.replace("T", " ")[:16] if len(t) >= 16 and t[10:11] == "T" else t

    def studio_defaults(self) -> dict[str, Any]:
        """What :meth:`restore` gives the studio: prompt, model, wait and the model's fields."""
        out: dict[str, Any] = {"prompt": self.prompt, "model": self.model, **self.fields}
        if self.params.get("wait") in ("sync", "task"):
            out["wait"] = self.params["wait"]
        return out

    def restore(self, *, images: bool = False, client: Any = None) -> Any:
        """A studio pre-filled with this call's prompt, model and fields (exactly its settings).
        ``images=True`` adds its saved full-resolution files as reference images; when none is
        on disk the studio's status says so (thumbnails are too small to edit from)."""
        from .ui.studio import studio

        st = studio(client, **self.studio_defaults())
        if images:
            files = self.existing_files
            added = sum(1 for p in files if st.add_reference(p))
            if not files:
                st._set_status("This call's images are not available as references: they were never saved "
                               "(only thumbnails exist). Save results to reuse them.", "error")
            elif added < len(files):
                st._set_status(f"{added} of {len(files)} saved images added as references "
                               "(see the message under the reference images).", "error")
            else:
                st._set_status(f"Restored with {text.count(added, 'saved image')} as references.", "ok")
        return st

    def __str__(self) -> str:
        credit = text.money(self.credit) if self.credit is not None else "credit unknown"
        return (f"{self.shown_time} · {self.model} · {self.settings} · {credit} · {self.outcome or '?'}\n"
                f"  {text.shorten(self.prompt, 100)}")


def _entry(r: dict, session: Path | None, home: Path | None) -> HistoryEntry | None:
    outcome = r.get("outcome")
    if outcome in _NOT_CALLS:
        return None
    params = r.get("params") if isinstance(r.get("params"), dict) else {}
    saved = r.get("saved") if isinstance(r.get("saved"), list) else []
    images = _number(r.get("images"))
    billed = _number(r.get("images_billed"))
    return HistoryEntry(
        time=str(r.get("time") or ""), prompt=str(r.get("prompt") or ""),
        model=str(r.get("model") or params.get("model") or "?"), params=dict(params),
        credit=_credit_of(r), outcome=outcome, tracing_id=str(r.get("tracing_id") or ""), session=session,
        files=[Path(p) for p in saved if isinstance(p, str)], call_id=str(r.get("call_id") or ""),
        images=int(images) if images and images > 0 else 0, error=r.get("error"), home=home,
        images_billed=int(min(billed, 100)) if billed and billed > 0 else 0)


def load_entries(home: str | os.PathLike | None = None) -> tuple[list[HistoryEntry], int, list[str]]:
    """``(entries newest first, damaged lines skipped, files that could not be read)`` over every
    session under ``home``. Each file goes through :meth:`Ledger.load` (forgiving: a torn or
    damaged line is skipped and counted, the rest kept)."""
    home_path = Path(home).expanduser() if home is not None else config.shark_home()
    entries: list[HistoryEntry] = []
    skipped = 0
    unreadable: list[str] = []
    for path in Ledger.sessions(home_path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LedgerWarning)  # counted in .skipped instead
                led = Ledger.load(path)
        except (OSError, MemoryError) as exc:
            unreadable.append(f"{path.name}: {exc}")
            continue
        skipped += led.skipped
        for r in led._values():
            e = _entry(r, path, home_path)
            if e is not None:
                entries.append(e)
    entries.sort(key=lambda e: e.time, reverse=True)  # ISO 8601 UTC: text order is time order
    return entries, skipped, unreadable


# --------------------------------------------------------------------------------------- history


def _model_id(model: Any) -> str | None:
    if model is None or model == "":
        return None
    from .schemas import find_model

    spec = find_model(model)
    if spec is not None:
        return spec.id
    if isinstance(model, str) and model.strip():
        return model.strip()  # a model the package no longer knows: matched as written
    raise ValidationError("model", model, "a model id or alias (shark_nb.models()), or None for every model")


class History:
    """Every past call under ``$SHARK_NB_HOME`` (or ``home``), newest first, searchable.

    ``entries``: the calls the search and the model filter keep; ``all_entries``: every call;
    ``page_entries()`` the current page (``page``, ``pages``, ``page_size``); ``search(words)``,
    ``filter(model)``; ``restore(i)`` a studio pre-filled from ``entries[i]``; ``skipped`` damaged
    ledger lines left out. Displayed, it is the history widget (``widget``).
    """

    def __init__(self, words: str = "", *, model: Any = None, home: str | os.PathLike | None = None,
                 page_size: int | None = None, client: Any = None) -> None:
        size = config.HISTORY_PAGE_SIZE if page_size is None else page_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 500:
            raise ValidationError("page_size", page_size, "a whole number from 1 to 500")
        if not isinstance(words, str):
            raise ValidationError("words", words, "text: words the prompt must hold")
        self.home = Path(home).expanduser() if home is not None else config.shark_home()
        self.page_size = size
        self.client = client
        self.query = words.strip()
        self.model = _model_id(model)
        self.page = 0
        self._widget: Any = None
        self.refresh()

    def refresh(self) -> "History":
        """Read the ledger folder again (new calls, new saves). Thumbnails still being written
        for calls that just finished are waited for (briefly), so their pictures show."""
        wait_for_thumbnails(timeout=3.0)
        self.all_entries, self.skipped, self.unreadable = load_entries(self.home)
        self._apply()
        return self

    def _apply(self) -> None:
        words = self.query.casefold().split()
        model = self.model
        self.entries = [e for e in self.all_entries
                        if (model is None or e.model == model)
                        and all(w in e.prompt.casefold() for w in words)]
        self.page = min(self.page, self.pages - 1)

    def search(self, words: str = "") -> "History":
        """Keep the calls whose prompt holds every word (any case); "" keeps all. Back to page 1."""
        if not isinstance(words, str):
            raise ValidationError("words", words, "text: words the prompt must hold")
        self.query, self.page = words.strip(), 0
        self._apply()
        return self

    def filter(self, model: Any = None) -> "History":
        """Keep one model's calls (an id or alias); None keeps every model. Back to page 1."""
        self.model, self.page = _model_id(model), 0
        self._apply()
        return self

    @property
    def models(self) -> list[str]:
        """The models the history holds, most used first."""
        counts: dict[str, int] = {}
        for e in self.all_entries:
            counts[e.model] = counts.get(e.model, 0) + 1
        return sorted(counts, key=lambda m: (-counts[m], m))

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.entries) // self.page_size))

    def page_entries(self, page: int | None = None) -> list[HistoryEntry]:
        """The entries of one page (0-based; default the current one)."""
        p = self.page if page is None else page
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < self.pages:
            raise ValidationError("page", page, f"a page from 0 to {self.pages - 1}")
        return self.entries[p * self.page_size:(p + 1) * self.page_size]

    def restore(self, i: int, *, images: bool = False) -> Any:
        """A studio pre-filled with ``entries[i]``'s prompt, model and fields (see
        :meth:`HistoryEntry.restore`); shown below the history when the history is displayed."""
        if isinstance(i, bool) or not isinstance(i, int) or not -len(self.entries) <= i < len(self.entries):
            raise ValidationError("i", i, f"an index into history.entries (0 to {len(self.entries) - 1})"
                                  if self.entries else "an index into history.entries, which is empty")
        st = self.entries[i].restore(images=images, client=self.client)
        if self._widget is not None:
            self._widget.show_studio(st, self.entries[i])
        return st

    @property
    def widget(self) -> Any:
        """The history widget (built on first use)."""
        if self._widget is None:
            from .ui.history import HistoryView

            self._widget = HistoryView(self)
        return self._widget

    def summary(self) -> str:
        sessions = len({e.session for e in self.all_entries})
        parts = [text.count(len(self.all_entries), "call"), text.count(sessions, "session")]
        if len(self.entries) != len(self.all_entries):
            parts.insert(0, f"{len(self.entries):,} shown")
        if self.skipped:
            parts.append(f"{text.count(self.skipped, 'damaged ledger line')} skipped")
        if self.unreadable:
            parts.append(f"{text.count(len(self.unreadable), 'unreadable ledger file')}")
        return " · ".join(parts)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"<History {self.summary()} · {self.home}>"

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> HistoryEntry:
        return self.entries[i]


# ------------------------------------------------------------------------------- read(path)


def _created_time(value: Any) -> str:
    try:
        stamp = datetime.fromtimestamp(int(str(value).strip()), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read(path: str | os.PathLike) -> HistoryEntry:
    """The entry behind an image file shark_nb saved (PNG, JPEG or WebP), from the metadata it
    embedded: prompt, model, settings, credit, tracing id. ``.restore()`` opens a studio with it.
    A file without shark_nb's metadata: a ValidationError saying so; no such file:
    FileNotFoundError."""
    from . import images

    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"no file at {p}")
    try:
        meta = images.read_metadata(p)
    except ValueError as exc:
        raise ValidationError("path", str(p), "an image file shark_nb saved (PNG, JPEG or WebP)",
                              detail=str(exc)) from None
    try:
        params = json.loads(meta.get("parameters") or "null")
    except ValueError:
        params = None
    if not isinstance(params, dict) or not (meta.get("model") or params.get("model")):
        raise ValidationError("path", str(p), "an image file shark_nb saved (PNG, JPEG or WebP)",
                              detail="the file holds no shark_nb metadata (prompt and settings); "
                                     "only files written by result.save, the magic or the studio's Save do")
    credit = None
    try:
        credit = float(meta["credit"]) if meta.get("credit") not in (None, "", "unknown") else None
    except ValueError:
        pass
    index = meta.get("image_index", "0")
    return HistoryEntry(
        time=_created_time(meta.get("created")), prompt=meta.get("prompt", ""),
        model=meta.get("model") or str(params.get("model")), params=params, credit=credit, outcome="ok",
        tracing_id=meta.get("tracing_id", ""), session=None, files=[p], call_id=meta.get("call_id", ""),
        images=int(index) + 1 if index.isdigit() else 1)


class _HistoryFunction:
    """``shark_nb.history(words="", *, model=None, home=None, page_size=20, client=None)`` opens
    the history (a :class:`History`, displayed as its widget); ``shark_nb.history.read(path)``
    reads the entry behind a saved image file."""

    History = History
    HistoryEntry = HistoryEntry

    def __call__(self, words: str = "", *, model: Any = None, home: str | os.PathLike | None = None,
                 page_size: int | None = None, client: Any = None) -> History:
        return History(words, model=model, home=home, page_size=page_size, client=client)

    @staticmethod
    def read(path: str | os.PathLike) -> HistoryEntry:
        """The entry behind an image file shark_nb saved (see :func:`shark_nb.archive.read`)."""
        return read(path)

    def __repr__(self) -> str:
        return "<shark_nb.history(words='', model=None): every past call; .read(path): a saved file's entry>"


history = _HistoryFunction()
