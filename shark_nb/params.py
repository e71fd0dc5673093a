"""The prompt rules every model shares, and gpt-image-2's published tables under their old names.

The request itself (:class:`~shark_nb.request.ImageRequest`, :func:`~shark_nb.request.build_request`)
is in :mod:`shark_nb.request`, validated by each model's schema (:mod:`shark_nb.schemas`); both are
still importable from here. The tables below are read from the gpt-image-2 schema, not written out
again.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .errors import ValidationError
from .schemas import DEFAULT_MODEL, TASK_TIMEOUT_DEFAULT, TASK_TIMEOUT_MAX, TASK_TIMEOUT_MIN, model_ids, model_spec

MODEL = DEFAULT_MODEL
_GPT = model_spec(MODEL)
#: The other image models the gateway serves (each with its own schema).
OTHER_MODELS = tuple(m for m in model_ids() if m != MODEL)
SIZES = _GPT.field("size").choices
QUALITIES = _GPT.field("quality").choices
BACKGROUNDS = _GPT.field("background").choices
OUTPUT_FORMATS = _GPT.field("output_format").choices
WAIT_MODES = ("sync", "task")
N_MIN, N_MAX = int(_GPT.field("n").min), int(_GPT.field("n").max)
#: The published docs give no prompt limit; gpt-image models take 32,000 characters.
MAX_PROMPT_CHARS = 32_000
MAX_REFERENCE_IMAGES = _GPT.max_images
#: gpt-image-2's body fields, in the order they are sent.
BODY_FIELDS = ("model", "prompt", *(f.name for f in _GPT.fields), "async", "timeout")

_FORMAT_ALIASES = {"jpg": "jpeg"}


def _one_of(field_name: str, value: Any, allowed: Sequence[str]) -> str:
    if isinstance(value, str):
        v = value.strip().lower()
        v = _FORMAT_ALIASES.get(v, v) if field_name == "output_format" else v
        if v in allowed:
            return v
    raise ValidationError(field_name, value, "one of " + ", ".join(repr(a) for a in allowed))


def _int_in(field_name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())
    ):
        raise ValidationError(field_name, value, f"a whole number from {lo} to {hi}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValidationError(field_name, value, f"a whole number from {lo} to {hi}")
    return v


def validate_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise ValidationError("prompt", prompt, "a text string")
    if not prompt.strip():
        raise ValidationError("prompt", prompt, "a non-empty text", detail="the prompt is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            "prompt", prompt, f"at most {MAX_PROMPT_CHARS:,} characters",
            detail=f"it has {len(prompt):,} characters",
        )
    bad = sorted({hex(ord(c)) for c in prompt if (ord(c) < 32 and c not in "\n\r\t") or ord(c) == 127})
    if bad:
        raise ValidationError("prompt", prompt, "printable text (newlines and tabs are fine)",
                              detail=f"it contains control characters {', '.join(bad[:5])}")
    check_unicode("prompt", prompt)
    return prompt


def check_unicode(field_name: str, text: str) -> None:
    """Refuse text holding a lone surrogate (U+D800..U+DFFF): what Python makes of bytes that are
    not UTF-8 (an odd file name read with ``surrogateescape``, a ``\\ud83e`` escape cut in half).
    It cannot be sent as UTF-8 nor written to the ledger, so it is named, with its position."""
    for i, c in enumerate(text):
        if "\ud800" <= c <= "\udfff":
            raise ValidationError(
                field_name, text, "valid Unicode text",
                detail=f"position {i} holds a lone surrogate U+{ord(c):04X} (text decoded from bytes that "
                       "are not UTF-8, such as an odd file name)")


def validate_model(model: Any) -> str:
    """The gateway id of a model given by id or alias; a ValidationError with a did-you-mean
    and the known models otherwise."""
    if isinstance(model, str):
        check_unicode("model", model)
    return model_spec(model).id


def __getattr__(name: str) -> Any:
    # The request itself lives in shark_nb.request (imported lazily: it imports this module).
    if name in ("ImageRequest", "build_request"):
        from . import request

        return getattr(request, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
