"""``Field`` and ``ModelSpec``: one gateway model's published request schema, and everything
derived from it (validation, the JSON body, estimates, help text).

Conventions every caller can rely on:

* A value of ``None`` means "not set" everywhere (so ``generate(n=None, ...)`` leaves ``n`` out).
* :meth:`ModelSpec.validate` takes the *settings* (the fields other than the prompt, the
  reference images and the mask) and returns them canonical, in the schema's order. It never
  drops a field and never rewrites one into a different value: a field the model lacks, or a
  value it does not take, is a :class:`~shark_nb.errors.ValidationError` naming the model, the
  field, the value, a did-you-mean and what is allowed.
* Reference images and the mask are inputs, not settings: the caller turns paths / bytes /
  PIL images into URLs and gives their count to :meth:`ModelSpec.check_inputs` and the URLs to
  :meth:`ModelSpec.body`.
* Task mode (``async`` + ``timeout``) is common to every model: ``body(task_timeout=...)``.
"""

from __future__ import annotations

import difflib
import html
import math
from dataclasses import dataclass, field as dc_field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from ..errors import ValidationError

#: Field kinds. ``choice``: one of ``choices`` (strings; ``numeric=True`` also takes numbers and
#: sends the matching string); ``int``: a whole number in ``min..max``; ``number``: a real number
#: in ``min..max``; ``text``: a string; ``url``: one http(s) or ``data:`` URL; ``urls``: a list
#: of them (at most ``max``); ``bool``: True / False.
KINDS = ("choice", "int", "number", "text", "url", "urls", "bool")
#: Roles: ``setting`` (validated by :meth:`ModelSpec.validate`), ``image`` and ``mask`` (inputs).
ROLES = ("setting", "image", "mask")
ANSWER_SHAPES = ("url", "b64_json")

TASK_TIMEOUT_MIN, TASK_TIMEOUT_MAX, TASK_TIMEOUT_DEFAULT = 30, 1800, 300
#: Fields every model shares, handled by :meth:`ModelSpec.body` itself.
COMMON_BODY_FIELDS = ("model", "prompt", "async", "timeout")


def _fmt_bound(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _canon_number(value: Any) -> Decimal | None:
    """A number or numeric string as a normalised Decimal (7, 7.0, "7", "7.00" -> 7); None if
    it is not one (bools, NaN, infinities, other text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        text = repr(value) if isinstance(value, float) else str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    try:
        d = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return d.normalize() if d.is_finite() else None


@dataclass(frozen=True)
class Field:
    """One request field of one model, as the provider publishes it."""

    name: str                                  #: the JSON name
    kind: str                                  #: one of KINDS
    help: str = ""                             #: one line, for --help, tooltips and docs
    choices: tuple[str, ...] = ()              #: for kind "choice": the values sent
    min: float | None = None                   #: for int / number: inclusive bounds;
    max: float | None = None                   #:   for urls: max = the most items
    default: Any = None                        #: the published default (None: none published)
    required: bool = False
    option: str | None = None                  #: the magic's option; None: "--" + name with "-"
    numeric: bool = False                      #: choice of number-strings ("6.1"): takes 6.1 too
    value_aliases: Mapping[str, str] = dc_field(default_factory=dict)  #: e.g. {"jpg": "jpeg"}
    role: str = "setting"                      #: one of ROLES
    label: str | None = None                   #: the studio's label; None: from the name

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"Field {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.role not in ROLES:
            raise TypeError(f"Field {self.name!r}: role {self.role!r} is not one of {ROLES}")
        if self.kind == "choice" and not self.choices:
            raise TypeError(f"Field {self.name!r}: a choice needs choices")
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "value_aliases", MappingProxyType(dict(self.value_aliases)))
        if self.option is None:
            object.__setattr__(self, "option", "--" + self.name.replace("_", "-"))
        if self.label is None:
            object.__setattr__(self, "label", self.name.replace("_", " ").capitalize())

    # -- describing ----------------------------------------------------------------------
    def allowed(self) -> str:
        """What the field takes, in words: ``one of '1:1', '16:9'``, ``a whole number from 0 to
        1,000``."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind in ("int", "number"):
            what = "a whole number" if self.kind == "int" else "a number"
            if self.min is not None and self.max is not None:
                return f"{what} from {_fmt_bound(self.min)} to {_fmt_bound(self.max)}"
            if self.min is not None:
                return f"{what} of at least {_fmt_bound(self.min)}"
            return what
        if self.kind == "url":
            return "an http(s) or data: URL"
        if self.kind == "urls":
            most = f"at most {int(self.max)} " if self.max is not None else ""
            return f"a list of {most}http(s) or data: URLs"
        if self.kind == "bool":
            return "True or False"
        return "a text string"

    def values_text(self) -> str:
        """The values for a help table: ``1:1, 16:9`` / ``0..1000`` / ``URL``."""
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind in ("int", "number"):
            lo = "" if self.min is None else _fmt_bound(self.min).replace(",", "")
            hi = "" if self.max is None else _fmt_bound(self.max).replace(",", "")
            return f"{lo}..{hi}"
        return {"url": "URL", "urls": "list of URLs" if self.max is None else f"1..{int(self.max)} URLs",
                "bool": "true, false", "text": "text"}[self.kind]

    # -- values --------------------------------------------------------------------------
    def validate(self, value: Any, *, model: str | None = None, owner: str | None = None) -> Any:
        """The canonical value to send, or ValidationError. ``model`` (the id) and ``owner``
        (the short name) only word the message."""
        def bad(suggestion: str | None = None, detail: str | None = None, allowed: str | None = None):
            allowed = allowed or self.allowed()
            if owner and self.kind == "choice":
                allowed = f"{owner}'s {self.name}: {allowed}"
            return ValidationError(self.name, value, allowed, detail=detail, model=model,
                                   suggestion=suggestion)

        kind = self.kind
        if kind == "choice":
            return self._choice(value, bad)
        if kind in ("int", "number"):
            ok_type = not isinstance(value, bool) and isinstance(value, (int, float))
            if not ok_type or (isinstance(value, float) and not math.isfinite(value)):
                raise bad()
            if kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise bad()
                value_n: float = int(value)
            else:
                value_n = value
            if (self.min is not None and value_n < self.min) or (self.max is not None and value_n > self.max):
                raise bad()
            return value_n
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad()
            return value
        if kind == "text":
            if not isinstance(value, str):
                raise bad()
            return value
        if kind == "url":
            return _url(value, bad)
        if kind == "urls":
            items = list(value) if isinstance(value, (list, tuple)) else None
            if items is None:
                raise bad()
            if self.max is not None and len(items) > self.max:
                raise bad(detail=f"{len(items)} given")
            return [_url(v, bad) for v in items]
        raise AssertionError(kind)  # pragma: no cover

    def _choice(self, value: Any, bad: Callable[..., ValidationError]) -> str:
        if self.numeric:
            num = _canon_number(value)
            if num is not None:
                for c in self.choices:
                    if _canon_number(c) == num:
                        return c
        if isinstance(value, str):
            key = value.strip().casefold()
            key = self.value_aliases.get(key, key)
            for c in self.choices:
                if c.casefold() == key:
                    return c
            raise bad(suggestion=self._closest(value.strip()))
        if self.numeric and _canon_number(value) is not None:
            raise bad(suggestion=self._closest(str(_canon_number(value))))
        raise bad()

    def _closest(self, text: str) -> str | None:
        """A did-you-mean among the choices: for a number, the nearest numeric choice; else the
        same value written with another separator (``1024x1024`` for ``1024*1024``, ``16/9`` for
        ``16:9``); else the nearest spelling."""
        num = _canon_number(text) if self.numeric else None
        if num is not None:
            numeric = [(abs(_canon_number(c) - num), i, c) for i, c in enumerate(self.choices)
                       if _canon_number(c) is not None]
            if numeric:
                return min(numeric)[2]
        folded = {c.casefold(): c for c in self.choices}
        t = text.casefold()
        for a, b in (("x", "*"), ("*", "x"), ("×", "*"), ("×", "x"), ("/", ":"), ("x", ":"), ("-", ":")):
            if t.replace(a, b) in folded:
                return folded[t.replace(a, b)]
        near = difflib.get_close_matches(t, list(folded), n=1, cutoff=0.6)
        return folded[near[0]] if near else None

    def parse(self, text: str) -> Any:
        """A value typed as text (a magic option, a text box) -> the typed value to validate:
        ``"7"`` -> 7 for an int, ``"true"`` -> True for a bool; anything that does not parse is
        returned unchanged so :meth:`validate` names it."""
        if not isinstance(text, str):
            return text
        t = text.strip()
        if self.kind == "int":
            try:
                return int(t)
            except ValueError:
                try:
                    f = float(t)
                    return int(f) if f.is_integer() else f
                except ValueError:
                    return text
        if self.kind == "number":
            try:
                return float(t)
            except ValueError:
                return text
        if self.kind == "bool":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
                t.lower(), text)
        if self.kind == "urls":
            return [p.strip() for p in t.split(",") if p.strip()]
        return t


def _url(value: Any, bad: Callable[..., ValidationError]) -> str:
    """An http(s) URL with a host, or a ``data:`` URL with a payload; never rewritten."""
    if not isinstance(value, str):
        raise bad()
    low = value[:8].lower()
    if low.startswith(("http://", "https://")):
        rest = value.split("//", 1)[1]
        if rest and not rest.startswith("/") and not any(c.isspace() for c in value):
            return value
    elif low.startswith("data:") and "," in value:
        return value
    raise bad()


@dataclass(frozen=True)
class Estimate:
    """An estimated cost. ``credit`` is None when the cost is unknown (never 0 for unknown).

    ``basis`` says where the figure comes from: ``"token table"``, ``"learned from 3 calls this
    session"`` or ``"unknown"``. ``float(estimate)`` works for a known figure and raises
    TypeError for an unknown one, so an unknown cost can never be summed as 0 by accident.
    """

    credit: float | None
    basis: str = "unknown"
    calls: int = 0  #: for a learned figure: how many charged calls it comes from

    @property
    def known(self) -> bool:
        return self.credit is not None

    @property
    def learned(self) -> bool:
        return self.calls > 0

    def __float__(self) -> float:
        if self.credit is None:
            raise TypeError("the estimate is unknown (no price table or learned price for this model)")
        return float(self.credit)

    def text(self) -> str:
        """``~1,056 credit ($0.11), token table`` / ``unknown``."""
        from .. import text

        if self.credit is None:
            return text.UNKNOWN
        return f"~{text.money(self.credit)}, {self.basis}"

    def __str__(self) -> str:
        return self.text()


UNKNOWN_ESTIMATE = Estimate(None, "unknown")


@dataclass(frozen=True)
class ModelSpec:
    """One gateway model: its id, names and fields, and what follows from them."""

    id: str                                    #: the gateway's model id, sent as ``model``
    name: str                                  #: the short name used in messages ("gemini")
    title: str                                 #: a readable title for menus and help
    fields: tuple[Field, ...]                  #: settings and inputs, in body order
    aliases: tuple[str, ...] = ()              #: other accepted names (case-insensitive)
    #: True: the body carries every setting, defaults filled in (gpt-image-2, as the provider's
    #: own example does). False: only the settings the caller set (the gateway's defaults apply).
    send_defaults: bool = False
    answer_shape: str = "url"                  #: the default answer: "url" or "b64_json"
    #: Fields of other models mapped to this model's field(s) that play their part, for the
    #: did-you-mean: {"size": ("aspect_ratio", "image_size")}.
    equivalents: Mapping[str, tuple[str, ...]] = dc_field(default_factory=dict)
    #: The settings that shape the price, keying learned prices ({} = one price per image).
    price_fields: tuple[str, ...] = ()
    #: Estimated credit for a call from the token table: (prompt, settings, reference_images)
    #: -> credit. None: the model has no published price (estimates are learned or unknown).
    token_estimate: Callable[[str, Mapping[str, Any], int], float] | None = None
    #: What the offline simulator charges: (prompt, effective settings, reference_images) ->
    #: credit for the call.
    sim_credit: Callable[[str, Mapping[str, Any], int], float] | None = None
    #: How sim_credit is worked out, in words (docs and help).
    sim_price_note: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise TypeError(f"{self.id}: duplicate field names")
        if self.answer_shape not in ANSWER_SHAPES:
            raise TypeError(f"{self.id}: answer_shape {self.answer_shape!r}")
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "equivalents", MappingProxyType(
            {k: tuple([v] if isinstance(v, str) else v) for k, v in self.equivalents.items()}))

    # -- the schema, asked -------------------------------------------------------------------
    def field(self, name: str) -> Field:
        """The named field; ValidationError (with a did-you-mean) if this model lacks it."""
        for f in self.fields:
            if f.name == name:
                return f
        raise self._no_such_field(name, None)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def settings(self) -> tuple[Field, ...]:
        """The fields :meth:`validate` takes (not the reference images or the mask)."""
        return tuple(f for f in self.fields if f.role == "setting")

    @property
    def image_field(self) -> Field | None:
        return next((f for f in self.fields if f.role == "image"), None)

    @property
    def mask_field(self) -> Field | None:
        return next((f for f in self.fields if f.role == "mask"), None)

    @property
    def max_images(self) -> int:
        """How many reference images the model takes (0: none)."""
        f = self.image_field
        if f is None:
            return 0
        return 1 if f.kind == "url" else int(f.max) if f.max is not None else 16

    @property
    def requires_image(self) -> bool:
        f = self.image_field
        return bool(f and f.required)

    @property
    def takes_mask(self) -> bool:
        return self.mask_field is not None

    @property
    def has_n(self) -> bool:
        return any(f.name == "n" for f in self.settings)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this model answers to: the id, the short name, the aliases."""
        return (self.id, self.name, *self.aliases)

    def option_map(self) -> dict[str, Field]:
        """The magic's options for this model's settings: ``{"--aspect-ratio": Field, ...}``."""
        return {f.option: f for f in self.settings}

    def defaults(self) -> dict[str, Any]:
        """The published defaults of the settings that have one."""
        return {f.name: f.default for f in self.settings if f.default is not None}

    def effective(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the validated settings: what the gateway will use (for the
        ledger's parameters, file metadata and price keys)."""
        return {**self.defaults(), **self.validate(fields)}

    # -- validation --------------------------------------------------------------------------
    def validate(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The settings, validated and canonical, in schema order; None values are "not set" and
        left out. Raises ValidationError for a field this model lacks, a bad value, or a
        missing required setting."""
        if not isinstance(fields, Mapping):
            raise ValidationError("fields", fields, f"a mapping of {self.name}'s fields")
        by_name = {f.name: f for f in self.fields}
        for name, value in fields.items():
            f = by_name.get(name)
            if f is None:
                raise self._no_such_field(name, value)
            if f.role != "setting" and value is not None:
                raise ValidationError(name, value, f"the {name}= argument (a path, bytes, a PIL image "
                                      "or a URL), not a setting", model=self.id)
        out: dict[str, Any] = {}
        for f in self.settings:
            value = fields.get(f.name)
            if value is None:
                if f.required:
                    raise ValidationError(f.name, None, f.allowed(), model=self.id,
                                          detail=f"{self.name} requires {f.name}")
                continue
            out[f.name] = f.validate(value, model=self.id, owner=self.name)
        return out

    def _no_such_field(self, name: Any, value: Any) -> ValidationError:
        own = list(self.field_names)
        suggestion = None
        if isinstance(name, str):
            if name in COMMON_BODY_FIELDS:
                hint = {"model": "the model= argument", "prompt": "the prompt argument",
                        "async": "wait='task'", "timeout": "wait='task' with task_timeout="}[name]
                return ValidationError(name, value, hint, model=self.id,
                                       detail=f"{name} is not a setting of its own")
            mapped = [m for m in self.equivalents.get(name, ()) if m in own]
            near = difflib.get_close_matches(name.lower(), own, n=1, cutoff=0.7)
            suggestion = mapped[0] if mapped else (near[0] if near else None)
        detail = f"{self.name} has no {name}" if isinstance(name, str) else "not a field name"
        if suggestion and len(mapped) > 1:
            detail += f" ({' and '.join(mapped)} play its part)"
        return ValidationError(
            str(name) if isinstance(name, str) else "field", value,
            ("one of its fields: " + ", ".join(["prompt", *own])),
            detail=detail, model=self.id, suggestion=suggestion)

    def check_inputs(self, images: int = 0, mask: bool = False) -> None:
        """Refuse reference images / a mask this model does not take, too many images, a
        missing required image, or a mask without an image. ``images`` is the count."""
        f = self.image_field
        if images and f is None:
            raise ValidationError("image", f"<{images} image{'s' if images != 1 else ''}>",
                                  "no reference images", model=self.id,
                                  detail=f"{self.name} takes no reference images",
                                  suggestion="sref" if "sref" in self.field_names else None)
        if f is not None and images > self.max_images:
            raise ValidationError("image", f"<{images} images>",
                                  f"at most {self.max_images} reference image{'s' if self.max_images != 1 else ''}",
                                  model=self.id)
        if f is not None and f.required and not images:
            raise ValidationError("image", None, "one reference image URL, path, bytes or PIL image",
                                  model=self.id, detail=f"{self.name} edits an image: image= is required")
        if mask:
            if not self.takes_mask:
                raise ValidationError("mask", "<mask>", "no mask", model=self.id,
                                      detail=f"{self.name} takes no mask")
            if not images:
                raise ValidationError("mask", "<mask>",
                                      "a mask together with at least one reference image (image=...)",
                                      model=self.id)

    # -- the request ---------------------------------------------------------------------------
    def body(self, prompt: str, fields: Mapping[str, Any], *, image_urls: Sequence[str] = (),
             mask_url: str | None = None, task_timeout: int | None = None) -> dict[str, Any]:
        """The JSON body: ``model``, ``prompt``, this model's settings (every one with defaults
        when ``send_defaults``, else the ones set), the image(s) and mask, and ``async`` +
        ``timeout`` when ``task_timeout`` is given (task mode). Validates the settings and inputs;
        the prompt is validated by the caller (``params.validate_prompt``)."""
        settings = self.validate(fields)
        if self.send_defaults:
            settings = {f.name: settings.get(f.name, f.default) for f in self.settings
                        if settings.get(f.name, f.default) is not None}
        urls = list(image_urls or ())
        self.check_inputs(len(urls), mask_url is not None)
        body: dict[str, Any] = {"model": self.id, "prompt": prompt, **settings}
        f = self.image_field
        if urls and f is not None:
            body[f.name] = f.validate(urls[0] if f.kind == "url" else urls, model=self.id)
        if mask_url is not None and self.mask_field is not None:
            body[self.mask_field.name] = self.mask_field.validate(mask_url, model=self.id)
        if task_timeout is not None:
            if isinstance(task_timeout, bool) or not isinstance(task_timeout, int) or \
                    not TASK_TIMEOUT_MIN <= task_timeout <= TASK_TIMEOUT_MAX:
                raise ValidationError("timeout", task_timeout,
                                      f"a whole number of seconds from {TASK_TIMEOUT_MIN} to {TASK_TIMEOUT_MAX}")
            body["async"] = True
            body["timeout"] = task_timeout
        return body

    def validate_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Check a whole JSON body the way the gateway does (the simulator's validation):
        ``model`` is this model, a valid prompt, only this model's fields, good values, inputs
        this model takes, ``async``/``timeout`` well formed. Returns the effective settings
        (defaults overlaid). Raises ValidationError."""
        from ..params import validate_prompt  # the one prompt rule; imported late (no cycle)

        if not isinstance(body, Mapping):
            raise ValidationError("body", body, "a JSON object")
        if body.get("model") != self.id:
            raise ValidationError("model", body.get("model"), repr(self.id))
        validate_prompt(body.get("prompt"))
        rest = {k: v for k, v in body.items() if k not in COMMON_BODY_FIELDS}
        inputs = {f.name: rest.pop(f.name) for f in self.fields if f.role != "setting" and f.name in rest}
        settings = self.validate(rest)
        for name, value in inputs.items():
            inputs[name] = self.field(name).validate(value, model=self.id)
        img = inputs.get(self.image_field.name) if self.image_field else None
        count = 0 if img is None else (1 if isinstance(img, str) else len(img))
        self.check_inputs(count, inputs.get("mask") is not None)
        if "async" in body and not isinstance(body["async"], bool):
            raise ValidationError("async", body["async"], "true or false", model=self.id)
        if "timeout" in body:
            t = body["timeout"]
            if not body.get("async"):
                raise ValidationError("timeout", t, "timeout only with async: true", model=self.id)
            if isinstance(t, bool) or not isinstance(t, int) or not TASK_TIMEOUT_MIN <= t <= TASK_TIMEOUT_MAX:
                raise ValidationError("timeout", t, f"a whole number from {TASK_TIMEOUT_MIN} to {TASK_TIMEOUT_MAX}",
                                      model=self.id)
        return {**self.defaults(), **settings}

    def answer_shape_for(self, fields: Mapping[str, Any] | None = None) -> str:
        """The answer's shape for these settings: a ``response_format`` set by the caller wins,
        else the model's default (:attr:`answer_shape`)."""
        rf = (fields or {}).get("response_format")
        return rf if rf in ANSWER_SHAPES else self.answer_shape

    # -- cost ----------------------------------------------------------------------------------
    def images_per_call(self, fields: Mapping[str, Any]) -> int:
        n = self.effective(fields).get("n")
        return int(n) if n is not None else 1

    def estimate(self, prompt: str, fields: Mapping[str, Any], reference_images: int = 0, *,
                 book: Any = None) -> Estimate:
        """The estimated cost of a call: from the token table where the model has one, else
        learned from this session's charged calls with the same price-shaping settings (see
        :mod:`shark_nb.schemas.learned`), else unknown (``Estimate(None, "unknown")``)."""
        if self.token_estimate is not None:
            return Estimate(self.token_estimate(prompt, self.effective(fields), reference_images), "token table")
        from .learned import PRICE_BOOK

        return (book if book is not None else PRICE_BOOK).estimate(self, fields)

    def estimate_credit(self, prompt: str, fields: Mapping[str, Any], reference_images: int = 0) -> float | None:
        """:meth:`estimate` as a plain number, None when unknown."""
        return self.estimate(prompt, fields, reference_images).credit

    def simulator_credit(self, prompt: str, fields: Mapping[str, Any], reference_images: int = 0) -> float:
        """What the offline simulator charges for this call (documented in the package
        docstring and docs/models.md; not a real price)."""
        assert self.sim_credit is not None, self.id
        return self.sim_credit(prompt, self.effective(fields), reference_images)

    def price_key(self, fields: Mapping[str, Any]) -> tuple:
        """The price-shaping settings of a call, defaults filled in: ``(("image_size", "2K"),)``.
        Unknown or bad values are ignored here (this keys records, it does not validate)."""
        eff = dict(self.defaults())
        for name in self.price_fields:
            value = fields.get(name)
            if value is None:
                continue
            try:
                eff[name] = self.field(name).validate(value)
            except ValidationError:
                eff[name] = value
        return tuple((n, eff.get(n)) for n in self.price_fields)

    # -- help ------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(field, option, values, default, help) per field, prompt first."""
        rows = [("prompt", "", "text", "required", "what to generate (or how to edit)")]
        for f in self.fields:
            option = f.option or ""
            default = "required" if f.required else ("" if f.default is None else str(f.default))
            rows.append((f.name, option, f.values_text(), default, f.help))
        return rows

    def describe(self) -> str:
        """A plain-text table of the fields, for ``help()`` and ``%shark --model X --help``."""
        header = ("field", "option", "values", "default", "meaning")
        rows = [header, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"{self.id} ({', '.join(a for a in (self.name, *self.aliases) if a != self.id)}) — {self.title}"]
        for r in rows:
            lines.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
        shape = "images inline (b64_json)" if self.answer_shape == "b64_json" else "image URLs"
        lines.append(f"  answers with {shape} by default; task mode (wait='task') works as for every model")
        return "\n".join(line.rstrip() for line in lines)

    def describe_html(self) -> str:
        """The same table as HTML (escaped), for rich help and the studio."""
        e = html.escape
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("field", "option", "values", "default", "meaning"))
        body = "".join("<tr>" + "".join(f"<td><code>{e(c)}</code></td>" if i < 2 and c else f"<td>{e(c)}</td>"
                                        for i, c in enumerate(r)) + "</tr>" for r in self.rows())
        return (f"<div><b>{e(self.title)}</b> <code>{e(self.id)}</code>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")

    def __repr__(self) -> str:
        return f"<ModelSpec {self.id} ({self.name}): {', '.join(self.field_names)}>"

