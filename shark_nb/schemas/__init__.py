"""Every image model on the gateway, from one declarative schema each.

::

    from shark_nb.schemas import models, model_spec
    spec = model_spec("seedream")          # full id or alias, any case
    spec.validate({"size": "1024*1024"})   # -> {"size": "1024*1024"}; a bad value or a field the
                                           #    model lacks -> ValidationError with a did-you-mean
    spec.body("a fox", {"size": "1024*1024"}, task_timeout=300)
    spec.estimate("a fox", {})             # Estimate(credit or None, basis)

One file per model (``gpt_image_2.py``, ``gemini_flash_image.py``, ``seedream.py``,
``midjourney.py``, ``grok_edit.py``), each defining ``SPEC``. **Adding a model** = a new file
with its ``SPEC`` + its module name in ``_MODULES`` below (one line) + tests.

| model | names | answer | simulator price (credit; not a real price) |
|---|---|---|---|
| ``openai/gpt-image-2`` | gpt-image-2, gpt-image, gpt, openai | URL | token table (shark-api.md §3): 1024x1024 medium = 422.4 + prompt |
| ``google/gemini-3.1-flash-image-preview`` | gemini, nano-banana | b64_json | per image: 1K 390, 2K 650, 4K 1,300 |
| ``bytedance/seedream-v4.5`` | seedream | URL | 400 per image |
| ``midjourney/text-to-image`` | midjourney, mj | URL | 600 per image at quality 1, times quality |
| ``x-ai/grok-imagine-image/edit`` | grok-edit, grok | URL | 200 per edit |

The gateway publishes no prices: only gpt-image-2 has an estimate from the start (its token
table); the others are estimated from prices learned this session (:mod:`.learned`) or unknown.
"""

from __future__ import annotations

import difflib
from importlib import import_module
from typing import Any

from ..errors import ValidationError
from .learned import PRICE_BOOK, PriceBook
from .schema import (ANSWER_SHAPES, TASK_TIMEOUT_DEFAULT, TASK_TIMEOUT_MAX, TASK_TIMEOUT_MIN,
                     UNKNOWN_ESTIMATE, Estimate, Field, ModelSpec)

#: The model modules, in menu order; each defines ``SPEC``. A new model: one line here.
_MODULES = ("gpt_image_2", "gemini_flash_image", "seedream", "midjourney", "grok_edit")

_SPECS: tuple[ModelSpec, ...] | None = None
_BY_NAME: dict[str, ModelSpec] = {}

#: The default model.
DEFAULT_MODEL = "openai/gpt-image-2"


def _load() -> tuple[ModelSpec, ...]:
    global _SPECS
    if _SPECS is None:
        specs = tuple(import_module(f".{m}", __name__).SPEC for m in _MODULES)
        by_name: dict[str, ModelSpec] = {}
        for spec in specs:
            for n in spec.names:
                key = n.casefold()
                if key in by_name and by_name[key] is not spec:
                    raise RuntimeError(f"model name {n!r} is claimed by {by_name[key].id} and {spec.id}")
                by_name[key] = spec
        _BY_NAME.update(by_name)
        _SPECS = specs
    return _SPECS


def models() -> list[ModelSpec]:
    """Every image model shark_nb knows, in menu order (gpt-image-2 first)."""
    return list(_load())


def find_model(name: Any) -> ModelSpec | None:
    """The model with this id or alias (any case, spaces trimmed), or None."""
    if isinstance(name, ModelSpec):
        return name
    if not isinstance(name, str):
        return None
    _load()
    return _BY_NAME.get(name.strip().casefold())


def model_spec(name: Any) -> ModelSpec:
    """The model with this id or alias (``gpt-image-2``, ``gemini``, ``seedream``,
    ``midjourney``/``mj``, ``grok-edit``/``grok``; any case). A ModelSpec is returned as is.
    An unknown name -> ValidationError naming it, the closest name and the known models."""
    spec = find_model(name)
    if spec is not None:
        return spec
    specs = _load()
    suggestion = None
    if isinstance(name, str) and name.strip():
        key = name.strip().casefold()
        near = difflib.get_close_matches(key, list(_BY_NAME), n=1, cutoff=0.6)
        if not near:  # "gemini-2" / "openai/dall-e": the same family
            near = [k for k in _BY_NAME if k.split("/")[0] == key.split("/")[0].split("-")[0]][:1]
        suggestion = _BY_NAME[near[0]].name if near else None
    raise ValidationError("model", name, "one of the known models: " +
                          ", ".join(f"{s.name} ({s.id})" for s in specs), suggestion=suggestion)


def model_ids() -> list[str]:
    return [s.id for s in _load()]


__all__ = ["Field", "ModelSpec", "Estimate", "UNKNOWN_ESTIMATE", "PriceBook", "PRICE_BOOK", "models",
           "model_spec", "find_model", "model_ids", "DEFAULT_MODEL", "ANSWER_SHAPES",
           "TASK_TIMEOUT_MIN", "TASK_TIMEOUT_MAX", "TASK_TIMEOUT_DEFAULT"]
