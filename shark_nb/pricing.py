"""The cost model used for estimates (and by the offline simulator to price its answers).

The gateway publishes no price table, so estimates use gpt-image token counts per image priced at
$40 per million image-output tokens and $5 per million text-input tokens, at 10,000 credit per USD
(see docs/shark-api.md, section 3). Everything computed here is an *estimate*; the ledger records
what the gateway reports.
"""

from __future__ import annotations

CREDITS_PER_USD = 10_000
USD_PER_OUTPUT_TOKEN = 40 / 1_000_000
USD_PER_INPUT_TOKEN = 5 / 1_000_000

#: Image-output tokens per image, by quality then size.
OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1536x1024": 408, "1024x1536": 408, "2048x2048": 1088},
    "medium": {"1024x1024": 1056, "1536x1024": 1584, "1024x1536": 1584, "2048x2048": 4224},
    "high": {"1024x1024": 4160, "1536x1024": 6240, "1024x1536": 6240, "2048x2048": 16640},
}

#: Text tokens per reference image, a rough figure for the input side of an edit.
INPUT_TOKENS_PER_REFERENCE_IMAGE = 255


def resolve_quality(quality: str) -> str:
    return "medium" if quality == "auto" else quality


def resolve_size(size: str) -> str:
    return "1024x1024" if size == "auto" else size


def prompt_tokens(prompt: str) -> int:
    """A rough token count for a prompt (about four characters a token, at least one)."""
    return max(1, (len(prompt) + 3) // 4)


def output_tokens(quality: str, size: str, n: int = 1) -> int:
    return OUTPUT_TOKENS[resolve_quality(quality)][resolve_size(size)] * n


def input_tokens(prompt: str, reference_images: int = 0) -> int:
    return prompt_tokens(prompt) + INPUT_TOKENS_PER_REFERENCE_IMAGE * reference_images


def credits_for_tokens(input_toks: int, output_toks: int) -> float:
    usd = input_toks * USD_PER_INPUT_TOKEN + output_toks * USD_PER_OUTPUT_TOKEN
    return round(usd * CREDITS_PER_USD, 4)


def estimate_credit(
    *, prompt: str = "", n: int = 1, size: str = "auto", quality: str = "auto", reference_images: int = 0
) -> float:
    """Estimated credit for one call with these settings."""
    return credits_for_tokens(input_tokens(prompt, reference_images), output_tokens(quality, size, n))


def credits_to_usd(credit: float | None) -> float | None:
    return None if credit is None else credit / CREDITS_PER_USD


def usd_to_credits(usd: float) -> float:
    return usd * CREDITS_PER_USD
