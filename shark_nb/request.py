"""The request: one model, a prompt, that model's validated settings, the image inputs and the
wait mode — everything the client needs to send a call, and nothing it must not send.

The model's schema (:mod:`shark_nb.schemas`) is the only judge of the settings: a field the model
lacks, or a value it does not take, is a :class:`~shark_nb.errors.ValidationError` raised here,
before anything is read from disk or sent. The JSON body contains only that model's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Mapping

from .errors import ValidationError
from .params import validate_model, validate_prompt
from .schemas import DEFAULT_MODEL, TASK_TIMEOUT_DEFAULT, TASK_TIMEOUT_MAX, TASK_TIMEOUT_MIN, Estimate, ModelSpec, model_spec

__all__ = ["ImageRequest", "build_request", "WAIT_MODES"]

WAIT_MODES = ("sync", "task")


@dataclass(frozen=True)
class ImageRequest:
    """A validated generation request. Build it with :func:`build_request` (or
    ``client.build(...)``).

    ``fields`` holds the settings the caller gave, validated and canonical; ``settings`` adds the
    model's published defaults (what the gateway will use: the ledger's parameters and the files'
    metadata). A setting is also readable as an attribute: ``request.size``, ``request.n``.
    """

    prompt: str
    model: str = DEFAULT_MODEL
    fields: Mapping[str, Any] = field(default_factory=dict)
    image: tuple[str, ...] = ()
    mask: str | None = None
    wait: str = "sync"
    task_timeout: int = TASK_TIMEOUT_DEFAULT
    #: Ledger descriptions of the inputs (size and hash, never bytes); not sent.
    inputs: tuple[dict, ...] = field(default=(), compare=False)

    @cached_property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The model's defaults overlaid with the settings given."""
        return self.spec.effective(self.fields)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a setting of this model, read by name.
        if not name.startswith("_"):
            settings = self.settings
            if name in settings or any(f.name == name for f in self.spec.settings):
                return settings.get(name)
        raise AttributeError(f"{type(self).__name__} for {self.model} has no {name!r}")

    @property
    def is_task(self) -> bool:
        return self.wait == "task"

    @property
    def n(self) -> int:
        """Images this call asks for (1 for models without ``n``)."""
        return self.spec.images_per_call(self.fields)

    def body(self) -> dict[str, Any]:
        """The JSON body, with only this model's fields."""
        return self.spec.body(self.prompt, self.fields, image_urls=self.image, mask_url=self.mask,
                              task_timeout=self.task_timeout if self.is_task else None)

    def describe(self) -> dict[str, Any]:
        """The body with image payloads elided, for display (``--dry-run``) and logs."""
        body = self.body()
        for name, value in list(body.items()):
            if isinstance(value, str) and value.startswith("data:"):
                body[name] = _elide(value)
            elif isinstance(value, list):
                body[name] = [_elide(v) if isinstance(v, str) else v for v in value]
        return body

    def params(self) -> dict[str, Any]:
        """The settings that shape the result (for the ledger and file metadata)."""
        return {"model": self.model, **self.settings, "wait": self.wait}

    def estimate(self) -> Estimate:
        """The estimated cost with its basis (token table, learned this session, or unknown)."""
        return self.spec.estimate(self.prompt, self.fields, len(self.image))

    def estimate_credit(self) -> float | None:
        """The estimate in credit; None when unknown (never 0 for unknown)."""
        return self.estimate().credit

    def with_wait(self, wait: str) -> "ImageRequest":
        return replace(self, wait=_wait_mode(wait))


def _elide(url: str) -> str:
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        return f"{head},<{len(payload) * 3 // 4:,} bytes elided>"
    return url


def _wait_mode(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in WAIT_MODES:
        return value.strip().lower()
    raise ValidationError("wait", value, "one of " + ", ".join(repr(w) for w in WAIT_MODES))


def _task_timeout(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()) or not TASK_TIMEOUT_MIN <= value <= TASK_TIMEOUT_MAX:
        raise ValidationError("timeout", value, f"a whole number from {TASK_TIMEOUT_MIN} to {TASK_TIMEOUT_MAX}")
    return int(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def build_request(
    prompt: Any,
    *,
    model: Any = DEFAULT_MODEL,
    image: Any = None,
    mask: Any = None,
    wait: Any = "sync",
    task_timeout: Any = TASK_TIMEOUT_DEFAULT,
    **fields: Any,
) -> ImageRequest:
    """Validate everything, then turn image inputs into URLs. Raises ValidationError.

    ``fields`` are the model's settings (``n``, ``size``, ``aspect_ratio``, ...; see
    ``shark_nb.model_spec(model).describe()``); ``None`` means "not set". Every cheap check
    (model, prompt, settings, the number of inputs) runs before any file is read.
    """
    spec = model_spec(validate_model(model))
    prompt = validate_prompt(prompt)
    settings = spec.validate(fields)
    wait = _wait_mode(wait)
    task_timeout = _task_timeout(task_timeout)
    items = _as_list(image)
    if mask is not None and not items and spec.takes_mask:  # name the mask the user gave
        raise ValidationError("mask", mask, "a mask together with at least one reference image (image=...)",
                              model=spec.id)
    spec.check_inputs(len(items), mask is not None)
    if items or mask is not None:
        from . import images  # Pillow loads only when there are images to read

    urls: list[str] = []
    inputs: list[dict] = []
    first_size: tuple[int, int] | None = None
    for i, item in enumerate(items):
        url, info = images.input_to_url(item, field=f"image[{i}]" if spec.max_images > 1 else "image")
        urls.append(url)
        inputs.append({"role": "image", **info})
        if first_size is None and info.get("width"):
            first_size = (info["width"], info["height"])
    mask_url = None
    if mask is not None:
        mask_url, info = images.mask_to_url(mask, field="mask", reference_size=first_size)
        inputs.append({"role": "mask", **info})
    return ImageRequest(prompt=prompt, model=spec.id, fields=settings, image=tuple(urls), mask=mask_url,
                        wait=wait, task_timeout=task_timeout, inputs=tuple(inputs))
