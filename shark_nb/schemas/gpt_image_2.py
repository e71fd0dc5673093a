"""``openai/gpt-image-2``: the provider's reference model (shark-api.md, first table).

Its body carries every setting, defaults filled in, exactly as the provider's own example
request does; its estimate comes from the token table in :mod:`shark_nb.pricing`.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import pricing
from .schema import Field, ModelSpec

MAX_REFERENCE_IMAGES = 16


def _token_credit(prompt: str, s: Mapping[str, Any], reference_images: int) -> float:
    return pricing.estimate_credit(prompt=prompt, n=s.get("n", 1), size=s.get("size", "auto"),
                                   quality=s.get("quality", "auto"), reference_images=reference_images)


SPEC = ModelSpec(
    id="openai/gpt-image-2",
    name="gpt-image-2",
    title="OpenAI GPT Image 2",
    aliases=("gpt-image", "gpt", "openai"),
    send_defaults=True,
    fields=(
        Field("n", "int", "images to generate", min=1, max=4, default=1, option="-n", label="Images"),
        Field("size", "choice", "image size in pixels (auto: the model picks)",
              choices=("1024x1024", "1536x1024", "1024x1536", "2048x2048", "auto"), default="auto"),
        Field("quality", "choice", "rendering quality (auto is priced as medium)",
              choices=("low", "medium", "high", "auto"), default="auto"),
        Field("background", "choice", "background (no transparent on this model)",
              choices=("opaque", "auto"), default="auto"),
        Field("output_format", "choice", "file format of the images",
              choices=("png", "jpeg", "webp"), default="png", option="--format",
              value_aliases={"jpg": "jpeg"}, label="Format"),
        Field("image", "urls", "reference images to edit (data: or http(s) URLs)",
              max=MAX_REFERENCE_IMAGES, role="image", label="Reference images"),
        Field("mask", "url", "PNG with alpha for the first image: transparent = repaint",
              role="mask"),
    ),
    equivalents={"aspect_ratio": ("size",), "image_size": ("size",), "response_format": ("output_format",),
                 "format": ("output_format",)},
    price_fields=("n", "size", "quality"),
    token_estimate=_token_credit,
    sim_credit=_token_credit,
    sim_price_note="the token table (shark-api.md §3): output tokens by quality and size at $40 "
                   "per million, prompt and reference-image tokens at $5 per million",
)
