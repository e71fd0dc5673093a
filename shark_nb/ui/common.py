"""Small pieces the studio's parts share: colours, messages in plain words, previews, and closing
a widget tree completely (its layouts and styles are widget models of their own)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterator

import ipywidgets as widgets

from ..errors import SharkError, ValidationError

ERROR_COLOR = "#b3261e"
OK_COLOR = "#1b5e20"
WARN_COLOR = "#8a6100"
MUTED = "#5f6368"


def plain(exc: BaseException) -> str:
    """The message a designer should read: the SharkError's message, never a traceback."""
    if isinstance(exc, SharkError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def validation_detail(exc: ValidationError) -> str:
    """'mask=<12 bytes> is not valid: the PNG has no alpha; expected ...' -> 'the PNG has no alpha'
    (the 'expected ...' part is already said next to the upload button)."""
    detail = exc.message.split(" is not valid: ", 1)[-1]
    return detail.split("; expected ", 1)[0]


def note(target: widgets.HTML, message: str, *, error: bool = False, warn: bool = False) -> None:
    """A small line of text under a control (empty: cleared)."""
    if not message:
        target.value = ""
        return
    color = ERROR_COLOR if error else WARN_COLOR if warn else MUTED
    target.value = f"<div style='color:{color};font-size:12px;line-height:1.35'>{html.escape(message)}</div>"


def section(title: str, hint: str = "") -> str:
    small = f" <span style='color:{MUTED};font-weight:normal;font-size:11.5px'>{html.escape(hint)}</span>" if hint else ""
    return f"<div style='font-weight:600;margin-top:6px'>{html.escape(title)}{small}</div>"


def thumb(data: bytes, side: int) -> tuple[bytes, str]:
    """A small preview (bytes, format) of image bytes; (b"", "png") when it cannot be decoded."""
    from .. import images

    try:
        mime, preview = images.preview_for_display(data, max_side=side)
    except (ValueError, TypeError):
        return b"", "png"
    return preview, mime.split("/")[-1]


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _tree(root: widgets.Widget, seen: dict[int, widgets.Widget]) -> None:
    """Every widget reachable from ``root`` through its synced traits (children, layout, style...)."""
    if id(root) in seen:
        return
    seen[id(root)] = root
    for name in getattr(root, "keys", ()) or ():
        value = getattr(root, name, None)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, widgets.Widget):
                _tree(item, seen)


def descendants(root: widgets.Widget) -> Iterator[widgets.Widget]:
    seen: dict[int, widgets.Widget] = {}
    _tree(root, seen)
    yield from seen.values()


def close_tree(*roots: widgets.Widget | None) -> None:
    """Close each widget and everything it references: children, layouts, styles. ``Widget.close()``
    alone leaves the Layout and Style models open (in the kernel and the notebook's saved state)."""
    for root in roots:
        if root is not None:
            for w in list(descendants(root)):
                w.close()
