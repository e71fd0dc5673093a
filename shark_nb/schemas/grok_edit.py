"""``x-ai/grok-imagine-image/edit``: edits one image; ``image`` (a single URL) is required."""

from __future__ import annotations

from typing import Any, Mapping

from .schema import Field, ModelSpec

SIM_CREDIT_PER_IMAGE = 200  # the simulator's flat price per edit (not a real price)


def _sim_credit(prompt: str, s: Mapping[str, Any], reference_images: int) -> float:
    return SIM_CREDIT_PER_IMAGE


SPEC = ModelSpec(
    id="x-ai/grok-imagine-image/edit",
    name="grok-edit",
    title="xAI Grok Imagine (image edit)",
    aliases=("grok", "grok-imagine-edit", "grok-imagine-image/edit"),
    fields=(
        Field("image", "url", "the image to edit (one URL)", required=True, role="image", label="Image to edit"),
    ),
    equivalents={"sref": ("image",)},
    sim_credit=_sim_credit,
    sim_price_note="200 credit per edit",
)
