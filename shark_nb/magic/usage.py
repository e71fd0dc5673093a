"""What the user typed, read carefully: the one-line error type, ``{name}`` expansion in prompts
and budget amounts."""

from __future__ import annotations

import re
import string
from typing import Any

from IPython.core.error import UsageError

__all__ = ["SharkUsageError", "expand_prompt", "parse_budget"]


class SharkUsageError(UsageError):
    """A mistake the user can fix: shown as one red line, no traceback; the cell fails.

    IPython prints a *plain* ``UsageError`` on stderr only, so under ipykernel the execute reply
    says "error" but no ``error`` message is sent and nbval lets the cell pass. A subclass goes
    through the normal traceback path, where ``_render_traceback_`` makes it one line.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31mUsageError: {self}\x1b[0m"]


# --- prompt expansion ------------------------------------------------------------------------

class _NamespaceFormatter(string.Formatter):
    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int):
            raise SharkUsageError(f"the prompt has a positional field {{{key}}}; name a notebook "
                                  "variable instead, or write {{ and }} for literal braces")
        return self.namespace[key]


def _field_names(text: str) -> list[str]:
    """The variable names a format string refers to (top level and nested in format specs)."""
    from _string import formatter_field_name_split  # the parser str.format itself uses

    names: list[str] = []
    for _literal, field, spec, _conv in string.Formatter().parse(text):
        if field is None:
            continue
        first, _rest = formatter_field_name_split(field)
        if first == "" or isinstance(first, int):
            raise SharkUsageError(
                f"the prompt has an empty or numbered field {{{field}}}: write {{name}} to insert "
                "a notebook variable, or {{ and }} for literal braces")
        names.append(first)
        if spec and "{" in spec:
            names.extend(_field_names(spec))
    return names


def expand_prompt(text: str, namespace: Any) -> str:
    """``{name}`` → the notebook variable's value (``{obj.attr}``, ``{seq[0]}`` and format specs
    work); ``{{`` / ``}}`` → literal braces. Raises :class:`SharkUsageError` naming every unknown
    name. Nothing is evaluated: only str.format's own field syntax."""
    if "{" not in text and "}" not in text:
        return text
    try:
        names = _field_names(text)
    except ValueError as exc:
        raise SharkUsageError(f"the prompt has an unbalanced brace ({exc}); write {{{{ or }}}} for "
                              "literal braces") from None
    missing = list(dict.fromkeys(n for n in names if n not in namespace))
    if missing:
        shown = ", ".join("{" + n + "}" for n in missing)
        which = ", ".join(repr(n) for n in missing)
        plural = "s" if len(missing) > 1 else ""
        raise SharkUsageError(
            f"unknown name{plural} in the prompt: {shown} — no notebook variable{plural} {which}; "
            f"define {'them' if plural else 'it'} first, or write {{{{ and }}}} for literal braces")
    try:
        return _NamespaceFormatter(namespace).vformat(text, (), {})
    except SharkUsageError:
        raise
    except (AttributeError, LookupError, ValueError, TypeError) as exc:
        raise SharkUsageError(f"could not expand the prompt: {type(exc).__name__}: {exc}") from None


# --- budget ----------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_USD_RES = [re.compile(p) for p in (rf"^\$\s*{_NUM}$", rf"^{_NUM}\s*\$$", rf"^{_NUM}\s*(?:usd|dollars?)$",
                                     rf"^usd\s*{_NUM}$")]
_CREDIT_RE = re.compile(rf"^{_NUM}\s*(?:credits?|cr)?$")


_THOUSANDS_CREDITS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*(?:credits?|cr)?$")
_OTHER_CURRENCY = re.compile(r"[€£¥₹]|\b(?:eur|euros?|gbp|jpy|chf|cad|aud|inr)\b")


def parse_budget(text: str) -> tuple[str, float | None]:
    """``"$2.50"`` / ``"2.50$"`` / ``"2.5 usd"`` → ("usd", 2.5); ``"25000"`` / ``"25,000 credits"``
    → ("credits", 25000.0); ``"off"`` / ``"none"`` → ("off", None). SharkUsageError otherwise.

    A comma is read only as a thousands separator of credits in full groups of three
    (``25,000``); anywhere else it is refused, never guessed: ``$2,50`` (a decimal comma) or
    ``$1,000`` could mean $2.50 or $250, $1 or $1000."""
    shown = text.strip()
    t = shown.lower().replace("_", "")
    if t in ("off", "none", "no", "unset", "remove"):
        return "off", None

    def refuse(why: str = "") -> SharkUsageError:
        return SharkUsageError(
            f"budget: {shown!r} is not an amount{why} — write %shark budget $2.50 (dollars), "
            "%shark budget 25000 (credits) or %shark budget off; for a prompt starting with "
            "'budget' write %shark -- budget ...")

    if "," in t:
        if not _THOUSANDS_CREDITS.match(t):
            raise refuse(" (a comma is ambiguous: use a point for cents, $2.50, and no comma for "
                         "thousands, $1000 or 25_000)")
        t = t.replace(",", "")
    if _OTHER_CURRENCY.search(t):
        raise refuse(" (only US dollars or credits)")
    if t.lstrip("$ ").startswith("-"):
        raise refuse(" (a budget cannot be negative)")
    for rx in _USD_RES:
        m = rx.match(t)
        if m:
            return "usd", float(m.group(1))
    m = _CREDIT_RE.match(t)
    if m:
        return "credits", float(m.group(1))
    raise refuse()

