"""The request: every gpt-image-2 field, validated, with its defaults and its JSON body.

Validation is strict and happens before anything is sent: a bad field raises
:class:`~shark_nb.errors.ValidationError` naming the field, the value and what is allowed.
Only documented fields are ever sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from . import pricing
from .errors import ValidationError

MODEL = "openai/gpt-image-2"
#: Other image models the gateway lists. Their parameter schemas differ; shark_nb sends them the
#: gpt-image fields it knows and lets the gateway judge.
OTHER_MODELS = (
    "google/gemini-3.1-flash-image-preview",
    "bytedance/seedream-v4.5",
    "midjourney/text-to-image",
    "x-ai/grok-imagine-image/edit",
)
SIZES = ("1024x1024", "1536x1024", "1024x1536", "2048x2048", "auto")
QUALITIES = ("low", "medium", "high", "auto")
BACKGROUNDS = ("opaque", "auto")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
WAIT_MODES = ("sync", "task")
N_MIN, N_MAX = 1, 4
TASK_TIMEOUT_MIN, TASK_TIMEOUT_MAX, TASK_TIMEOUT_DEFAULT = 30, 1800, 300
#: The published docs give no prompt limit; gpt-image models take 32,000 characters.
MAX_PROMPT_CHARS = 32_000
MAX_REFERENCE_IMAGES = 16

#: The body fields the API documents, in the order they are sent.
BODY_FIELDS = ("model", "prompt", "n", "size", "quality", "background", "output_format",
               "image", "mask", "async", "timeout")

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
    if not isinstance(model, str) or not model.strip() or any(c.isspace() for c in model.strip()):
        raise ValidationError("model", model, f"a model name such as {MODEL!r}")
    check_unicode("model", model)
    return model.strip()


@dataclass(frozen=True)
class ImageRequest:
    """A validated generation request. Build it with :func:`build_request`."""

    prompt: str
    model: str = MODEL
    n: int = 1
    size: str = "auto"
    quality: str = "auto"
    background: str = "auto"
    output_format: str = "png"
    image: tuple[str, ...] = ()
    mask: str | None = None
    wait: str = "sync"
    task_timeout: int = TASK_TIMEOUT_DEFAULT
    #: Ledger descriptions of the inputs (size and hash, never bytes); not sent.
    inputs: tuple[dict, ...] = field(default=(), compare=False)

    @property
    def is_task(self) -> bool:
        return self.wait == "task"

    def body(self) -> dict[str, Any]:
        """The JSON body, with only documented fields."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "n": self.n,
            "size": self.size,
            "quality": self.quality,
            "background": self.background,
            "output_format": self.output_format,
        }
        if self.image:
            body["image"] = list(self.image)
        if self.mask:
            body["mask"] = self.mask
        if self.is_task:
            body["async"] = True
            body["timeout"] = self.task_timeout
        return body

    def describe(self) -> dict[str, Any]:
        """The body with image payloads elided, for display (``--dry-run``) and logs."""
        body = self.body()
        if "image" in body:
            body["image"] = [_elide(u) for u in body["image"]]
        if "mask" in body:
            body["mask"] = _elide(body["mask"])
        return body

    def params(self) -> dict[str, Any]:
        """The settings that shape the result (for the ledger and file metadata)."""
        return {
            "model": self.model, "n": self.n, "size": self.size, "quality": self.quality,
            "background": self.background, "output_format": self.output_format, "wait": self.wait,
        }

    def estimate_credit(self) -> float:
        return pricing.estimate_credit(prompt=self.prompt, n=self.n, size=self.size,
                                       quality=self.quality, reference_images=len(self.image))

    def with_wait(self, wait: str) -> "ImageRequest":
        return replace(self, wait=_one_of("wait", wait, WAIT_MODES))


def _elide(url: str) -> str:
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        return f"{head},<{len(payload) * 3 // 4:,} bytes elided>"
    return url


def build_request(
    prompt: Any,
    *,
    n: Any = 1,
    size: Any = "auto",
    quality: Any = "auto",
    background: Any = "auto",
    output_format: Any = "png",
    image: Any = None,
    mask: Any = None,
    model: Any = MODEL,
    wait: Any = "sync",
    task_timeout: Any = TASK_TIMEOUT_DEFAULT,
) -> ImageRequest:
    """Validate every field and turn image inputs into URLs. Raises ValidationError."""
    prompt = validate_prompt(prompt)
    model = validate_model(model)
    n = _int_in("n", n, N_MIN, N_MAX)
    size = _one_of("size", size, SIZES)
    quality = _one_of("quality", quality, QUALITIES)
    background = _one_of("background", background, BACKGROUNDS)
    output_format = _one_of("output_format", output_format, OUTPUT_FORMATS)
    wait = _one_of("wait", wait, WAIT_MODES)
    task_timeout = _int_in("timeout", task_timeout, TASK_TIMEOUT_MIN, TASK_TIMEOUT_MAX)

    if image is None:
        items: list[Any] = []
    elif isinstance(image, (list, tuple)):
        items = list(image)
    else:
        items = [image]
    if len(items) > MAX_REFERENCE_IMAGES:
        raise ValidationError("image", f"<{len(items)} images>", f"at most {MAX_REFERENCE_IMAGES} reference images")
    if mask is not None and not items:
        raise ValidationError("mask", mask, "a mask together with at least one reference image (image=...)")
    if items or mask is not None:
        from . import images  # Pillow loads only when there are images to read

    urls: list[str] = []
    inputs: list[dict] = []
    first_size: tuple[int, int] | None = None
    for i, item in enumerate(items):
        url, info = images.input_to_url(item, field=f"image[{i}]")
        urls.append(url)
        inputs.append({"role": "image", **info})
        if first_size is None and info.get("width"):
            first_size = (info["width"], info["height"])
    mask_url = None
    if mask is not None:
        mask_url, info = images.mask_to_url(mask, field="mask", reference_size=first_size)
        inputs.append({"role": "mask", **info})
    return ImageRequest(
        prompt=prompt, model=model, n=n, size=size, quality=quality, background=background,
        output_format=output_format, image=tuple(urls), mask=mask_url, wait=wait,
        task_timeout=task_timeout, inputs=tuple(inputs),
    )
