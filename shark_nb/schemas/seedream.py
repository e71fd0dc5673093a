"""``bytedance/seedream-v4.5``: sizes are written with a ``*`` (``1024*1024``).

``1024x1024`` is refused with a did-you-mean ``1024*1024``: the gateway would refuse it, and
rewriting it silently is not ours to do.
"""

from __future__ import annotations

from typing import Any, Mapping

from .schema import Field, ModelSpec

SIZES = ("512*512", "768*768", "1024*1024", "1536*1536", "2048*2048", "1024*768", "768*1024",
         "1536*1024", "1024*1536")
SIM_CREDIT_PER_IMAGE = 400  # the simulator's flat price per image (not a real price)


def _sim_credit(prompt: str, s: Mapping[str, Any], reference_images: int) -> float:
    return SIM_CREDIT_PER_IMAGE


SPEC = ModelSpec(
    id="bytedance/seedream-v4.5",
    name="seedream",
    title="ByteDance Seedream 4.5",
    aliases=("seedream-v4.5", "seedream-4.5"),
    fields=(
        Field("size", "choice", "width*height in pixels", choices=SIZES, default="2048*2048"),
    ),
    equivalents={"aspect_ratio": ("size",), "image_size": ("size",)},
    price_fields=("size",),
    sim_credit=_sim_credit,
    sim_price_note="400 credit per image, any size",
)
