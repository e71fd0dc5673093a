"""``google/gemini-3.1-flash-image-preview`` (Gemini 3.1 Flash Image, preview).

Answers inline by default (``response_format`` ``b64_json``: ``data[].b64_json``). No price is
published: estimates are learned from charged calls, else unknown.
"""

from __future__ import annotations

from typing import Any, Mapping

from .schema import Field, ModelSpec

MAX_REFERENCE_IMAGES = 16  # not published; shark_nb's own bound, as for gpt-image-2
SEED_MAX = 2**31 - 1       # not published; a 32-bit signed seed
#: The simulator's price per image, by image_size (not a real price).
SIM_CREDIT_PER_IMAGE = {"1K": 390, "2K": 650, "4K": 1_300}


def _sim_credit(prompt: str, s: Mapping[str, Any], reference_images: int) -> float:
    return SIM_CREDIT_PER_IMAGE[s.get("image_size", "1K")] * s.get("n", 1)


SPEC = ModelSpec(
    id="google/gemini-3.1-flash-image-preview",
    name="gemini",
    title="Google Gemini 3.1 Flash Image (preview)",
    aliases=("gemini-3.1-flash-image-preview", "gemini-flash-image", "nano-banana"),
    answer_shape="b64_json",
    fields=(
        Field("n", "int", "images to generate", min=1, max=4, default=1, option="-n", label="Images"),
        Field("seed", "int", "seed for repeatable results (-1 = random)", min=-1, max=SEED_MAX),
        Field("image_size", "choice", "resolution class", choices=("1K", "2K", "4K"), default="1K"),
        Field("aspect_ratio", "choice", "width:height",
              choices=("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"), default="1:1"),
        Field("response_format", "choice", "b64_json: images inline; url: links to download",
              choices=("b64_json", "url"), default="b64_json"),
        Field("image", "urls", "reference images (data: or http(s) URLs)", max=MAX_REFERENCE_IMAGES,
              role="image", label="Reference images"),
    ),
    equivalents={"size": ("aspect_ratio", "image_size"), "quality": ("image_size",),
                 "sref": ("image",)},
    price_fields=("image_size",),
    sim_credit=_sim_credit,
    sim_price_note="per image by image_size: 1K 390, 2K 650, 4K 1,300 credit",
)
