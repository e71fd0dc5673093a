"""Every gpt-image-2 field is validated before anything is sent."""

import pytest

from shark_nb import ValidationError, pricing
from shark_nb.params import MAX_PROMPT_CHARS, build_request


def test_defaults_give_the_providers_example_body():
    body = build_request("Your prompt here").body()
    assert body == {"model": "openai/gpt-image-2", "prompt": "Your prompt here", "n": 1, "size": "auto",
                    "quality": "auto", "background": "auto", "output_format": "png"}


def test_task_mode_adds_async_and_timeout_only():
    body = build_request("x", wait="task", task_timeout=600).body()
    assert body["async"] is True and body["timeout"] == 600
    assert set(body) == {"model", "prompt", "n", "size", "quality", "background", "output_format", "async", "timeout"}


@pytest.mark.parametrize(
    "field, value, allowed_fragment",
    [
        ("n", 0, "1 to 4"),
        ("n", 5, "1 to 4"),
        ("n", 2.5, "1 to 4"),
        ("n", True, "1 to 4"),
        ("n", "2", "1 to 4"),
        ("size", "512x512", "'1024x1024'"),
        ("size", "1024X1024 ", None),  # normalised, accepted
        ("size", 1024, "'2048x2048'"),
        ("quality", "ultra", "'high'"),
        ("quality", None, None),  # None = not set: the model's default applies
        ("background", "transparent", "'opaque'"),
        ("output_format", "gif", "'webp'"),
        ("output_format", "JPG", None),  # alias, accepted
        ("model", "", "known models"),
        ("model", "openai/gpt image", "known models"),
        ("wait", "later", "'task'"),
        ("task_timeout", 29, "30 to 1800"),
        ("task_timeout", 1801, "30 to 1800"),
        ("task_timeout", float("nan"), "30 to 1800"),
    ],
)
def test_bad_fields_name_field_value_and_allowed(field, value, allowed_fragment):
    if allowed_fragment is None:
        build_request("ok", **{field: value})
        return
    with pytest.raises(ValidationError) as info:
        build_request("ok", **{field: value})
    message = str(info.value)
    shown = "timeout" if field == "task_timeout" else field
    assert message.startswith(shown + "=")
    assert allowed_fragment in message
    assert info.value.field == shown


@pytest.mark.parametrize("prompt, fragment", [
    ("", "empty"),
    ("   \n\t ", "empty"),
    (None, "text string"),
    (42, "text string"),
    ("x" * (MAX_PROMPT_CHARS + 1), f"{MAX_PROMPT_CHARS:,}"),
    ("bell\x07", "control characters 0x7"),
    ("nul\x00byte", "0x0"),
])
def test_bad_prompts(prompt, fragment):
    with pytest.raises(ValidationError) as info:
        build_request(prompt)
    assert info.value.field == "prompt" and fragment in str(info.value)


def test_long_prompt_error_is_short():
    with pytest.raises(ValidationError) as info:
        build_request("y" * 100_000)
    assert len(str(info.value)) < 200 and "100,000" in str(info.value)


def test_unicode_prompt_with_newlines_is_fine():
    assert build_request("un renard roux 🦊 dans la neige\nstyle: aquarelle").prompt.startswith("un renard")


def test_mask_without_image_is_refused():
    with pytest.raises(ValidationError) as info:
        build_request("x", mask=b"\x89PNG")
    assert info.value.field == "mask"


def test_estimate_follows_the_cost_model():
    req = build_request("a fox", n=2, size="1536x1024", quality="high")
    assert req.estimate_credit() == pricing.credits_for_tokens(pricing.prompt_tokens("a fox"), 2 * 6240)
    # auto is estimated as medium at 1024x1024
    assert build_request("a fox").estimate_credit() == pricing.credits_for_tokens(2, 1056)


def test_describe_elides_image_payloads():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    req = build_request("edit", image=[buf.getvalue()])
    shown = req.describe()
    assert shown["image"][0].startswith("data:image/png;base64,<") and "elided" in shown["image"][0]
    assert req.body()["image"][0].startswith("data:image/png;base64,iVBOR")
    assert req.inputs[0]["role"] == "image" and req.inputs[0]["width"] == 64
