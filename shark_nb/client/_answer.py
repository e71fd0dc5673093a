"""Reading a gateway answer: its images, its credit and what to tell about their number.
Every shape here is tolerated, never trusted (see docs/shark-api.md)."""

from __future__ import annotations

import math
from typing import Any

from ..ledger import credit_rule


def _count_notes(answer: dict, items: list[dict], asked: int) -> list[str]:
    """What the user must hear about the number of images: more or fewer than asked, or entries
    of ``data`` that held no image. Never silent: these go on the result and in the ledger."""
    notes = []
    if len(items) > asked:
        notes.append(f"the gateway sent {len(items)} images for n={asked}: all are delivered; the credit it "
                     "reports may cover all of them")
    elif 0 < len(items) < asked:
        notes.append(f"the gateway sent {len(items)} image{'s' if len(items) != 1 else ''} for n={asked}")
    data = answer.get("data")
    if isinstance(data, list) and items:
        empty = len(data) - len(_image_items({"data": data}))
        if empty > 0:
            notes.append(f"the answer listed {empty} entr{'ies' if empty != 1 else 'y'} without an image "
                         "(no url or b64_json)")
    return notes


def _image_items(answer: dict) -> list[dict]:
    """Images from ``data[].url``, ``data[].b64_json`` or ``output.urls[]`` (undocumented shapes)."""
    items: list[dict] = []
    data = answer.get("data")
    if isinstance(data, list):
        for d in data:
            if isinstance(d, dict) and (d.get("url") or d.get("b64_json")):
                items.append({"url": d.get("url"), "b64_json": d.get("b64_json")})
            elif isinstance(d, str) and d:
                items.append({"url": d})
    output = answer.get("output")
    if not items and isinstance(output, dict):
        for u in output.get("urls") or output.get("images") or []:
            if isinstance(u, str) and u:
                items.append({"url": u})
            elif isinstance(u, dict) and u.get("url"):
                items.append({"url": u["url"]})
    return items


def _credit(answer: dict) -> float | None:
    """The credit to count: a plausible number, else None (unknown); see ``ledger.credit_rule``."""
    return credit_rule(answer.get("credit"))[0]


def _credit_report(answer: dict) -> dict:
    """For the ledger: the raw credit and why it is not counted, when it is not (else {})."""
    raw = answer.get("credit")
    note = credit_rule(raw)[1]
    if isinstance(raw, float) and not math.isfinite(raw):
        raw = str(raw)  # NaN / Infinity: kept as the text JSON can hold
    return {"credit_reported": raw, "credit_note": note} if note else {}


def _finite(value: Any) -> float | None:
    """A finite number from a JSON value (numbers, or numeric strings such as "300"), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        if isinstance(value, str):
            try:
                f = float(value)
                return f if math.isfinite(f) else None
            except ValueError:
                return None
        return None
    return float(value)
