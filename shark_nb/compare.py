"""Model-vs-model (or setting-vs-setting) comparison: one prompt, several requests, one grid.

:func:`plan_comparison` turns ``models=[...]`` / ``models={model: fields}`` / ``model=...,
vary={field: [values]}`` into labelled, *validated* requests — every cell is checked before
anything is sent, so a bad field in one column refuses the whole grid with a message naming that
column. The client sends the plan as one batch (``generate_many``'s concurrency and shared 429
back-off) after checking the *whole* grid's estimate against the budget, and returns a
:class:`ComparisonGrid`: a column per cell, each an image, its credit and latency, failures in
their own cell.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence

from . import text
from .errors import SharkError, ValidationError
from .request import ImageRequest, build_request
from .schemas import model_spec

__all__ = ["ComparisonPlan", "ComparisonGrid", "plan_comparison"]

MAX_CELLS = 16


@dataclass
class ComparisonPlan:
    """The labelled requests of a comparison, validated, not yet sent."""

    prompt: str
    labels: list[str]
    requests: list[ImageRequest]

    @cached_property
    def estimates(self) -> list[float | None]:
        """Each cell's estimate, computed once (the totals and the text below all read it)."""
        return [r.estimate_credit() for r in self.requests]

    @property
    def known_estimate(self) -> float:
        """The sum of the cells whose estimate is known."""
        return float(sum(e for e in self.estimates if e is not None))

    @property
    def unknown_cells(self) -> int:
        return sum(1 for e in self.estimates if e is None)

    def estimate_text(self) -> str:
        """``12 cells, estimated 5,069.4 credit ($0.51) + 2 cells of unknown cost``."""
        known, unknown = self.known_estimate, self.unknown_cells
        head = text.count(len(self.requests), "cell")
        if unknown == len(self.requests):
            return f"{head}, estimate unknown (no price is known yet for these models)"
        tail = f" + {text.count(unknown, 'cell')} of unknown cost" if unknown else ""
        return f"{head}, estimated {text.money(known)}{tail}"


def _fields_of(value: Any, model: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("models", value, f"a mapping of {model}'s fields (e.g. {{'n': 1}})")
    return dict(value)


def plan_comparison(prompt: Any, *, models: Any = None, model: Any = None, vary: Any = None,
                    **common: Any) -> ComparisonPlan:
    """Validate every cell of a comparison; raise ValidationError (naming the cell) before
    anything is sent. ``models``: a list of ids/aliases, or ``{model: its own fields}``;
    ``vary``: ``{field: [values]}`` for one ``model`` (several fields: every combination).
    ``common``: fields (and ``image=``, ``mask=``, ``wait=``) for every cell."""
    cells: list[tuple[str, dict[str, Any]]] = []
    if models is not None and vary is not None:
        raise ValidationError("vary", vary, "either models=... or model=... with vary=..., not both")
    if models is not None:
        if model is not None:
            raise ValidationError("model", model, "models=[...] alone (each cell names its model)")
        if isinstance(models, str):
            models = [m for m in models.split(",") if m.strip()]
        items = list(models.items()) if isinstance(models, Mapping) else [(m, None) for m in models]
        if not items:
            raise ValidationError("models", models, "at least one model")
        for name, own in items:
            spec = model_spec(name)
            cells.append((spec.name, {"model": spec.id, **common, **_fields_of(own, spec.name)}))
    elif vary is not None:
        if not isinstance(vary, Mapping) or not vary:
            raise ValidationError("vary", vary, "a mapping of field -> list of values, e.g. {'quality': ['low', 'high']}")
        spec = model_spec(model if model is not None else common.get("model", "gpt-image-2"))
        names = list(vary)
        value_lists = []
        for name in names:
            values = vary[name]
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValidationError(f"vary[{name!r}]", values, "a non-empty list of values")
            value_lists.append(list(values))
        for combo in itertools.product(*value_lists):
            label = ", ".join(f"{n}={v}" for n, v in zip(names, combo))
            cells.append((label, {**common, "model": spec.id, **dict(zip(names, combo))}))
    else:
        raise ValidationError("models", None, "models=[...] (or model=... with vary={field: [values]})")
    if len(cells) > MAX_CELLS:
        raise ValidationError("models", f"<{len(cells)} cells>", f"at most {MAX_CELLS} cells in one comparison")
    labels = _unique([label for label, _ in cells])
    requests = []
    for label, kwargs in zip(labels, cells):
        try:
            requests.append(build_request(prompt, **kwargs[1]))
        except ValidationError as exc:
            exc.message = f"[{label}] {exc.message}"
            exc.args = (exc.message,)
            raise
    return ComparisonPlan(prompt=requests[0].prompt, labels=labels, requests=requests)


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


@dataclass
class ComparisonGrid:
    """The outcome of a comparison: ``results[i]`` (a GenerationResult or the exception that
    cell ended with) under ``labels[i]``. Renders as an HTML grid, a column per cell."""

    plan: ComparisonPlan
    results: list[Any] = field(default_factory=list)
    max_side: int = 384

    @property
    def labels(self) -> list[str]:
        return self.plan.labels

    @property
    def prompt(self) -> str:
        return self.plan.prompt

    @property
    def credit(self) -> float | None:
        """Credit reported across the grid (None when no cell reported one)."""
        known = [r.credit for r in self.results if getattr(r, "credit", None) is not None]
        return float(sum(known)) if known else None

    @property
    def failures(self) -> int:
        return sum(1 for r in self.results if isinstance(r, BaseException))

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            key = self.labels.index(key)
        return self.results[key]

    def __len__(self) -> int:
        return len(self.results)

    def _cell_html(self, label: str, result: Any) -> str:
        from .display import preview_data_url

        e = html.escape
        head = f"<div style='font-weight:600;margin-bottom:4px'>{e(label)}</div>"
        if isinstance(result, BaseException):
            kind = type(result).__name__
            msg = result.message if isinstance(result, SharkError) else str(result)
            return (head + f"<div style='color:#b3261e;font-size:12px;border:1px dashed #e0a0a0;padding:8px'>"
                    f"<b>{e(kind)}</b><br>{e(text.shorten(msg, 300))}</div>")
        imgs = []
        for img in getattr(result, "images", []):
            try:
                url, _n, (w, h) = preview_data_url(img, max_side=self.max_side)
            except ValueError:
                imgs.append("<div style='color:#b3261e'>unreadable image</div>")
                continue
            imgs.append(f"<img src='{url}' width='{w}' height='{h}' style='max-width:100%;height:auto;"
                        f"display:block;margin-bottom:4px' alt='{e(label)}'>")
        latency = getattr(result, "latency", None)
        meta = [text.money(result.credit) if result.credit is not None else "credit unknown"]
        if latency is not None:
            meta.append(text.duration(latency))
        caption = f"<div style='font-size:12px;color:#5f6368'>{e(' · '.join(meta))}</div>"
        return head + "".join(imgs) + caption

    def _repr_html_(self) -> str:
        e = html.escape
        cells = "".join(f"<div style='flex:0 0 {self.max_side}px;max-width:{self.max_side}px'>"
                        f"{self._cell_html(label, result)}</div>"
                        for label, result in zip(self.labels, self.results))
        total = self.credit
        foot = [text.count(len(self.results), "cell"),
                ("total " + text.money(total)) if total is not None else "total credit unknown"]
        if self.failures:
            foot.append(text.count(self.failures, "failure"))
        if any(getattr(r, "offline", False) for r in self.results):
            foot.append("offline simulator")
        return (f"<div><div style='font-size:13px;margin-bottom:6px'><b>Comparison</b> — "
                f"{e(text.shorten(self.prompt, 120))}</div>"
                f"<div style='display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start'>{cells}</div>"
                f"<div style='font-size:12px;color:#5f6368;margin-top:6px'>{e(' · '.join(foot))}</div></div>")

    def __repr__(self) -> str:
        parts = []
        for label, r in zip(self.labels, self.results):
            if isinstance(r, BaseException):
                parts.append(f"{label}: {type(r).__name__}")
            else:
                parts.append(f"{label}: {len(r.images)} image(s), "
                             + (text.credit(r.credit) if r.credit is not None else "credit unknown"))
        return f"<ComparisonGrid {self.prompt[:40]!r} — " + "; ".join(parts) + ">"
