"""The one way shark_nb writes numbers, credit, money, sizes and durations.

Every caption, table, status line and error message goes through these functions, so one
amount reads the same everywhere (5,000 credit is ``5,000 credit ($0.50)``, never ``$0.5`` in
one place and ``$0.5000`` in another).

Rules:

* **Numbers**: thousands separators, up to 4 decimals with trailing zeros trimmed
  (``1,234.5``, ``106``, ``0.0272``); below 0.0001 two significant digits (``0.000012``).
* **Credit**: ``5,000 credit`` (the unit is a mass noun: ``1 credit``, ``2.5 credit``).
* **Dollars**: whole cents from one cent up (``$0.50``, ``$1,234.00``); below one cent up to
  four decimals (``$0.0027``), below a hundredth of a cent two significant digits
  (``$0.000012``); zero is ``$0.00``; a negative amount is ``-$0.50``.
* **Unknown** (``None``, NaN, infinities, non-numbers): the word ``unknown``, never ``0`` or ``$0``.
"""

from __future__ import annotations

import math
from typing import Any

#: 1 USD = 10,000 credit (shark-api.md). Kept equal to ``pricing.CREDITS_PER_USD``.
CREDITS_PER_USD = 10_000
UNKNOWN = "unknown"

__all__ = ["UNKNOWN", "shorten", "number", "credit", "usd", "usd_of_credit", "money", "count", "bytes_",
           "duration"]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def number(value: Any, decimals: int = 4) -> str:
    """``1234.5`` -> ``1,234.5``; ``10000`` -> ``10,000``; ``0.0272`` -> ``0.0272``;
    ``0.0000123`` -> ``0.000012``; ``None`` -> ``unknown``."""
    x = _finite(value)
    if x is None:
        return UNKNOWN
    if x != 0 and abs(x) < 10 ** -decimals:
        return f"{x:.2g}" if abs(x) >= 1e-4 else _plain_sig(x)
    text = f"{x:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _plain_sig(x: float) -> str:
    """Two significant digits without exponent notation: 1.2e-05 -> '0.000012'."""
    digits = 1 - int(math.floor(math.log10(abs(x))))
    return f"{x:.{digits}f}".rstrip("0").rstrip(".")


def credit(value: Any) -> str:
    """``5,000 credit``; ``unknown`` when the amount is not known."""
    text = number(value)
    return text if text == UNKNOWN else f"{text} credit"


def usd(value: Any) -> str:
    """An amount in dollars: ``$0.50``, ``$1,234.00``, ``$0.0027``, ``-$0.50``, ``unknown``."""
    x = _finite(value)
    if x is None:
        return UNKNOWN
    sign, a = ("-" if x < 0 else ""), abs(x)
    if a == 0:
        return "$0.00"
    if round(a, 4) >= 0.01:
        return f"{sign}${a:,.2f}"
    if a >= 0.0001:
        return f"{sign}${a:.4f}".rstrip("0")
    return f"{sign}${_plain_sig(a)}"


def usd_of_credit(value: Any) -> str:
    """The dollar value of an amount of credit: 5,000 -> ``$0.50``."""
    x = _finite(value)
    return UNKNOWN if x is None else usd(x / CREDITS_PER_USD)


def money(value: Any) -> str:
    """An amount of credit with its dollar value: ``5,000 credit ($0.50)``; ``unknown``."""
    x = _finite(value)
    return UNKNOWN if x is None else f"{credit(x)} ({usd_of_credit(x)})"


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 image``, ``3 images``, ``1,204 calls``."""
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def bytes_(n: int) -> str:
    """``812 B``, ``95 KB``, ``2.0 MB``, ``1.5 GB`` (binary units, as the previews are sized)."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.0f} KB"
    if n < 1024 ** 3:
        return f"{n / 1024 ** 2:.1f} MB"
    return f"{n / 1024 ** 3:.1f} GB"


def duration(seconds: Any) -> str:
    """``0.4 s``, ``59.9 s``, ``2 min 05 s``, ``1 h 02 min``; ``unknown`` for None."""
    x = _finite(seconds)
    if x is None or x < 0:
        return UNKNOWN
    if x < 59.95:
        return f"{x:.1f} s"
    total = int(round(x))
    if total < 3600:
        m, s = divmod(total, 60)
        return f"{m} min {s:02d} s"
    h, rest = divmod(total, 3600)
    return f"{h} h {rest // 60:02d} min"


def shorten(value: Any, limit: int) -> str:
    """Whitespace collapsed to single spaces, cut to ``limit`` characters with an ellipsis."""
    s = " ".join(str(value).split())
    return s if len(s) <= limit else s[: max(0, limit - 1)] + "…"
