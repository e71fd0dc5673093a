"""``midjourney/text-to-image``: numbers the API wants as strings.

``version`` and ``quality`` are number-strings (``"6.1"``, ``"0.25"``): 7, 7.0, ``"7"`` and
``"7.0"`` are all the value ``"7"`` and are sent as ``"7"``; 6.2 is refused (never rounded).
``niji`` takes ``close``, ``0``, ``5``, ``6`` (numbers accepted the same way).
"""

from __future__ import annotations

from typing import Any, Mapping

from .schema import Field, ModelSpec

SEED_MAX = 2**32 - 1  # not published; Midjourney seeds are 0..4294967295
SIM_CREDIT_PER_QUALITY_1 = 600  # the simulator's price of one image at quality "1" (not real)


def _sim_credit(prompt: str, s: Mapping[str, Any], reference_images: int) -> float:
    return SIM_CREDIT_PER_QUALITY_1 * float(s.get("quality", "1"))


SPEC = ModelSpec(
    id="midjourney/text-to-image",
    name="midjourney",
    title="Midjourney (text to image)",
    aliases=("mj",),
    fields=(
        Field("aspect_ratio", "choice", "width:height",
              choices=("1:1", "9:16", "16:9", "4:3", "3:4", "2:3", "3:2", "9:21", "21:9"), default="1:1"),
        Field("version", "choice", "model version", choices=("6", "6.1", "7"), default="7", numeric=True),
        Field("quality", "choice", "rendering time spent (0.25 = fastest)",
              choices=("0.25", "0.5", "1", "2"), default="1", numeric=True),
        Field("stylize", "int", "strength of Midjourney's own style", min=0, max=1000, default=100),
        Field("chaos", "int", "variety between results", min=0, max=100, default=0),
        Field("weird", "int", "unconventional aesthetics", min=0, max=3000, default=0),
        Field("niji", "choice", "the anime model's version (close = off)", choices=("close", "0", "5", "6"),
              default="close", numeric=True),
        Field("seed", "int", "seed for repeatable results (-1 = random)", min=-1, max=SEED_MAX, default=-1),
        Field("sref", "url", "style reference image (an http(s) or data: URL)", label="Style reference"),
    ),
    equivalents={"size": ("aspect_ratio",), "image_size": ("aspect_ratio",), "image": ("sref",),
                 "style": ("stylize",)},
    price_fields=("quality", "version"),
    sim_credit=_sim_credit,
    sim_price_note="600 credit per image at quality 1, scaled by quality (0.25: 150, 2: 1,200)",
)
