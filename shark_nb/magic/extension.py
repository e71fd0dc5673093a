"""``%load_ext shark_nb``: registering the magic, and the two input-cleanup steps it needs."""

from __future__ import annotations

import re
from typing import Any

from .core import SharkMagic

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_EMPTY_CELL_MAGIC = re.compile(r"^%%shark(?:[ \t]+(.*?))?[ \t]*\r?\n?$")


def _empty_cell_body(lines: list[str]) -> list[str]:
    """Input cleanup: ``%%shark`` with an empty body is refused by IPython itself, as a plain
    UsageError the cell does not fail on ("Did you mean the line magic"). Hand it to the magic,
    which says so in one red line and fails the cell (``%%shark --help`` still shows the help)."""
    if not lines or any(line.strip() for line in lines[1:]):
        return lines
    m = _EMPTY_CELL_MAGIC.match(lines[0])
    if m is None:
        return lines
    return [f"get_ipython().find_cell_magic('shark')({(m.group(1) or '')!r}, '')\n"]



_QUESTION_LINE = re.compile(r"^([ \t]*)%shark[ \t]+(.*\?)[ \t]*\r?\n?$")


def _keep_question_marks(lines: list[str]) -> list[str]:
    """Input cleanup: IPython reads a line ending in ``?`` as a help request (``%shark what is
    this?`` would show help for ``this``). Turn such a ``%shark`` line into the explicit call, so
    a one-line prompt may end in a question mark. ``%shark?`` alone still shows the help."""
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        m = _QUESTION_LINE.match(line)
        if m and not m.group(2).lstrip().startswith("?"):
            out.append(f"{m.group(1)}get_ipython().run_line_magic('shark', {m.group(2)!r})\n")
        else:
            out.append(line)
    return out


_loaded: dict[int, SharkMagic] = {}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext shark_nb``: register ``%shark`` / ``%%shark`` on this shell."""
    old = _loaded.pop(id(ipython), None)
    if old is not None and old in getattr(ipython, "configurables", []):
        ipython.configurables.remove(old)
    magic = SharkMagic(shell=ipython)
    ipython.register_magics(magic)
    _loaded[id(ipython)] = magic
    cleanup = getattr(ipython, "input_transformers_cleanup", None)
    for transform in (_keep_question_marks, _empty_cell_body):
        if cleanup is not None and transform not in cleanup:
            cleanup.append(transform)


def unload_ipython_extension(ipython: Any) -> None:
    cleanup = getattr(ipython, "input_transformers_cleanup", None)
    for transform in (_keep_question_marks, _empty_cell_body):
        if cleanup is not None and transform in cleanup:
            cleanup.remove(transform)
    magic = _loaded.pop(id(ipython), None)
    if magic is None:
        return
    if magic in getattr(ipython, "configurables", []):
        ipython.configurables.remove(magic)
    registry = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        if registry[kind].get("shark") is not None and getattr(registry[kind]["shark"], "__self__", None) is magic:
            del registry[kind]["shark"]
    ipython.magics_manager.registry.pop(type(magic).__name__, None)

