"""Prices learned from this session's charged calls, for models with no published price.

After each charged call the ledger (or client) reports what it cost::

    PRICE_BOOK.record(model, fields, credit, images)

and a later estimate for the same model *and the same price-shaping settings* (``spec.price_fields``,
defaults filled in: Gemini's ``image_size``, Seedream's ``size``, Midjourney's ``quality`` and
``version``) is the mean credit per image times the images asked for, labelled
``"learned from N calls this session"``. With nothing learned the estimate is unknown, never 0.
Calls with no ``credit`` or no images teach nothing. The book lives in memory for the process.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Mapping

from .schema import UNKNOWN_ESTIMATE, Estimate, ModelSpec


class PriceBook:
    """Mean credit per image, per (model id, price-shaping settings). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple, tuple[float, int]] = {}  # key -> (sum of credit per image, calls)

    @staticmethod
    def _key(model: ModelSpec | str, fields: Mapping[str, Any]) -> tuple | None:
        from . import find_model

        spec = model if isinstance(model, ModelSpec) else find_model(model)
        if spec is None:
            return None
        return (spec.id, spec.price_key(fields or {}))

    def record(self, model: ModelSpec | str, fields: Mapping[str, Any] | None, credit: Any,
               images: Any) -> bool:
        """Learn from one charged call. ``fields`` may be the ledger's parameters (extra keys
        such as ``model`` or ``wait`` are ignored). True when something was learned."""
        if isinstance(credit, bool) or not isinstance(credit, (int, float)) or not math.isfinite(credit) \
                or credit < 0 or isinstance(images, bool) or not isinstance(images, int) or images <= 0:
            return False
        key = self._key(model, fields or {})
        if key is None:
            return False
        with self._lock:
            total, calls = self._seen.get(key, (0.0, 0))
            self._seen[key] = (total + credit / images, calls + 1)
        return True

    def lookup(self, model: ModelSpec | str, fields: Mapping[str, Any] | None) -> tuple[float, int] | None:
        """(mean credit per image, calls) for these settings, or None."""
        key = self._key(model, fields or {})
        with self._lock:
            seen = self._seen.get(key) if key else None
        return None if seen is None else (seen[0] / seen[1], seen[1])

    def estimate(self, spec: ModelSpec, fields: Mapping[str, Any]) -> Estimate:
        found = self.lookup(spec, fields)
        if found is None:
            return UNKNOWN_ESTIMATE
        per_image, calls = found
        n = spec.images_per_call(fields)
        return Estimate(round(per_image * n, 4),
                        f"learned from {calls} call{'s' if calls != 1 else ''} this session", calls)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def __repr__(self) -> str:
        return f"<PriceBook: {len(self)} learned price(s)>"


#: The process-wide book that ``ModelSpec.estimate`` reads by default.
PRICE_BOOK = PriceBook()

__all__ = ["PriceBook", "PRICE_BOOK"]
