"""A model's settings as controls, built from its schema (:class:`~shark_nb.schemas.ModelSpec`).

One control per setting, in the schema's order, labelled with ``Field.label`` and with
``Field.help`` as its tooltip:

=============================  ===============================================================
field                          control
=============================  ===============================================================
choice                         ``Dropdown`` of the choices (the values sent)
int, range ≤ 10,000 wide       ``IntSlider`` (``n`` 1..4, ``stylize`` 0..1000, ``weird`` 0..3000)
int from -1 (a seed)           ``IntText``, -1 = random (the ranges are 2³¹ / 2³² wide)
other int / number             ``BoundedIntText`` / ``BoundedFloatText`` (``FloatText`` unbounded)
text, url, urls                ``Text`` (empty = not set; ``urls`` comma-separated)
bool                           ``Checkbox``
=============================  ===============================================================

Reading the values back (:meth:`SettingsPanel.values`) validates them with the schema and gives
the fields dict for ``client.build(...)``. A model with ``send_defaults=True`` (gpt-image-2,
whose body always carries every field, as the provider's own example does) gets every control's
value; the other models get only the controls whose value differs from the model's default (the
gateway's defaults then apply, and the body stays what a user of that model would write). A
control at its default is therefore not "dropped": it asks for exactly what the gateway does
when the field is absent.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import ipywidgets as widgets

from ..errors import ValidationError
from ..schemas import Field, ModelSpec

__all__ = ["SettingsPanel", "make_control", "control_default", "carry_over"]

#: Int ranges up to this wide get a slider; wider ones a box.
SLIDER_SPAN = 10_000
LABEL_WIDTH = "112px"
NOT_SET = "(not set)"


def control_default(f: Field) -> Any:
    """The value a control shows when nothing was chosen: the published default; for a seed
    with none published, -1 (random); empty text; unchecked; else None ("not set")."""
    if f.default is not None:
        return f.default
    if f.kind == "int" and f.min == -1:
        return -1
    if f.kind in ("text", "url", "urls"):
        return ""
    if f.kind == "bool":
        return False
    return None


def _is_seed(f: Field) -> bool:
    return f.kind == "int" and f.min == -1


def is_wide(f: Field) -> bool:
    """Sliders, text boxes and long labels take a row of their own; the others go two a row."""
    slider = (f.kind == "int" and not _is_seed(f) and f.min is not None and f.max is not None
              and f.max - f.min <= SLIDER_SPAN)
    return slider or f.kind in ("text", "url", "urls") or len(f.label or "") > 16


def make_control(f: Field, value: Any) -> widgets.Widget:
    """The control for one field, showing ``value`` (already valid for the field)."""
    common: dict[str, Any] = dict(description=f.label, tooltip=f.help or f.label,
                                  style={"description_width": LABEL_WIDTH},
                                  layout=widgets.Layout(width="100%" if is_wide(f) else "50%"))
    if f.kind == "choice":
        options: list[Any] = [(c, c) for c in f.choices]
        if control_default(f) is None:
            options.insert(0, (NOT_SET, None))
        w: widgets.Widget = widgets.Dropdown(options=options, value=value, **common)
    elif f.kind == "int" and _is_seed(f):
        w = widgets.IntText(value=value, **{**common, "tooltip": f"{f.help} · {f.allowed()}"})
    elif f.kind == "int" and f.min is not None and f.max is not None and f.max - f.min <= SLIDER_SPAN:
        w = widgets.IntSlider(value=value, min=int(f.min), max=int(f.max), step=1, continuous_update=False,
                              **common)
    elif f.kind in ("int", "number") and f.min is not None and f.max is not None:
        cls = widgets.BoundedIntText if f.kind == "int" else widgets.BoundedFloatText
        w = cls(value=value if value is not None else f.min, min=f.min, max=f.max, **common)
    elif f.kind in ("int", "number"):
        w = (widgets.IntText if f.kind == "int" else widgets.FloatText)(value=value or 0, **common)
    elif f.kind == "bool":
        w = widgets.Checkbox(value=bool(value), indent=False, **common)
    else:  # text, url, urls
        shown = ", ".join(value) if isinstance(value, (list, tuple)) else (value or "")
        hint = {"url": "https://… or data: URL", "urls": "URLs, comma-separated"}.get(f.kind, "")
        w = widgets.Text(value=shown, placeholder=hint, **common)
    w.add_class("shark-studio-setting")
    w.add_class("shark-studio-" + f.name.replace("_", "-"))
    if f.name == "output_format":
        w.add_class("shark-studio-format")  # the older hook
    return w


def _read(f: Field, raw: Any) -> Any:
    """A control's value as a field value (None: not set)."""
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            return None
        return f.parse(raw) if f.kind in ("urls", "int", "number", "bool") else raw
    return raw


def carry_over(spec: ModelSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values that ``spec`` has fields for and accepts (canonical); the others are left out
    (their controls start at the model's default)."""
    out = {}
    for f in spec.settings:
        value = values.get(f.name)
        if value is None:
            continue
        try:
            out[f.name] = f.validate(value, model=spec.id, owner=spec.name)
        except ValidationError:
            continue
    return out


class SettingsPanel:
    """The controls of one model's settings (``.controls``: name -> widget; ``.box``: the grid).

    ``values``: starting values, valid for the model (see :func:`carry_over`); the others start
    at :func:`control_default`. ``on_change()`` is called whenever a control changes.
    """

    def __init__(self, spec: ModelSpec, values: Mapping[str, Any] | None = None, *,
                 on_change: Callable[[], Any] | None = None) -> None:
        self.spec = spec
        values = values or {}
        self.controls: dict[str, widgets.Widget] = {}
        for f in spec.settings:
            value = values.get(f.name)
            self.controls[f.name] = make_control(f, control_default(f) if value is None else value)
        rows: list[widgets.Widget] = []
        pair: list[widgets.Widget] = []
        for f in spec.settings:       # wide controls on their own row, the others two a row
            if is_wide(f):
                if pair:
                    rows.append(widgets.HBox(pair, layout=widgets.Layout(width="100%")))
                    pair = []
                rows.append(self.controls[f.name])
            else:
                pair.append(self.controls[f.name])
                if len(pair) == 2:
                    rows.append(widgets.HBox(pair, layout=widgets.Layout(width="100%")))
                    pair = []
        if pair:
            rows.append(widgets.HBox(pair, layout=widgets.Layout(width="100%")))
        if not rows:
            rows.append(widgets.HTML(f"<div style='color:#5f6368;font-size:12px;padding:2px 0 2px 116px'>"
                                     f"{spec.name} has no settings besides the prompt and its image.</div>"))
        self.box = widgets.VBox(rows, layout=widgets.Layout(width="100%"))
        self.box.add_class("shark-studio-settings")
        if on_change is not None:
            for w in self.controls.values():
                w.observe(lambda _change: on_change(), names="value")

    def raw_values(self) -> dict[str, Any]:
        """Every control's value as a field value (None: not set), unvalidated: what a model
        change carries over."""
        return {f.name: _read(f, self.controls[f.name].value) for f in self.spec.settings}

    def values(self) -> dict[str, Any]:
        """The fields to send, validated and canonical (ValidationError names the field and what
        it takes). ``send_defaults`` models: every setting; the others: the settings that differ
        from the model's default (module docstring)."""
        given = {k: v for k, v in self.raw_values().items() if v is not None}
        checked = self.spec.validate(given)
        if self.spec.send_defaults:
            return checked
        return {name: v for name, v in checked.items() if v != control_default(self.spec.field(name))}

    def close(self) -> None:
        from .common import close_tree

        close_tree(self.box)
