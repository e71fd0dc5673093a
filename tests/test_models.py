"""One declarative schema per gateway model: registry, validation, bodies, estimates, help."""

import base64
import io
import json
import math

import pytest

from shark_nb import ValidationError, pricing
from shark_nb.schemas import (PRICE_BOOK, Estimate, Field, ModelSpec, PriceBook, find_model, model_spec,
                             models)
from shark_nb.params import build_request

GPT, GEMINI, SEEDREAM, MJ, GROK = (
    "openai/gpt-image-2", "google/gemini-3.1-flash-image-preview", "bytedance/seedream-v4.5",
    "midjourney/text-to-image", "x-ai/grok-imagine-image/edit")
URL = "https://example.test/ref.png"
DATA_URL = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(autouse=True)
def _clean_price_book():
    PRICE_BOOK.clear()
    yield
    PRICE_BOOK.clear()


def _png_data_url(size=(8, 8), mode="RGB") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, (200, 10, 10, 0) if mode == "RGBA" else (200, 10, 10)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# --------------------------------------------------------------------------------- registry

def test_models_lists_the_five_gateway_models_gpt_image_2_first():
    assert [m.id for m in models()] == [GPT, GEMINI, SEEDREAM, MJ, GROK]
    assert all(isinstance(m, ModelSpec) for m in models())


@pytest.mark.parametrize("name, model_id", [
    (GPT, GPT), ("gpt-image-2", GPT), ("GPT-Image-2", GPT), (" gpt-image-2 ", GPT),
    (GEMINI, GEMINI), ("gemini", GEMINI), ("Gemini", GEMINI),
    (SEEDREAM, SEEDREAM), ("seedream", SEEDREAM), ("SEEDREAM", SEEDREAM),
    (MJ, MJ), ("midjourney", MJ), ("mj", MJ), ("MJ", MJ),
    (GROK, GROK), ("grok-edit", GROK), ("grok", GROK), ("Grok", GROK),
])
def test_model_spec_takes_full_ids_and_aliases_in_any_case(name, model_id):
    assert model_spec(name).id == model_id


def test_model_spec_returns_a_spec_unchanged_and_find_model_returns_none_for_unknown():
    spec = model_spec("gemini")
    assert model_spec(spec) is spec
    assert find_model("dall-e-3") is None and find_model(None) is None and find_model(3) is None


@pytest.mark.parametrize("name, suggestion", [
    ("gemnii", "gemini"), ("seedram", "seedream"), ("midjurney", "midjourney"), ("gpt-image-1", "gpt-image-2"),
    ("grok-edt", "grok-edit"), ("openai/dall-e-3", "gpt-image-2"), ("stable-diffusion", None),
    ("", None), (None, None), (7, None),
])
def test_unknown_model_names_the_value_a_did_you_mean_and_every_known_model(name, suggestion):
    with pytest.raises(ValidationError) as info:
        model_spec(name)
    err = info.value
    assert err.field == "model" and err.value == name and err.suggestion == suggestion
    message = str(err)
    assert message.startswith(f"model={name!r} is not valid")
    for spec in models():
        assert spec.id in message and spec.name in message
    assert (f"did you mean {suggestion!r}?" in message) == (suggestion is not None)


def test_every_name_belongs_to_exactly_one_model():
    seen = {}
    for spec in models():
        for n in spec.names:
            assert seen.setdefault(n.casefold(), spec.id) == spec.id


# --------------------------------------------------------------------------------- valid values

# model -> field -> values accepted and what is sent for each
ACCEPTED = {
    GPT: {
        "n": [(1, 1), (4, 4), (2.0, 2)],
        "size": [(s, s) for s in ("1024x1024", "1536x1024", "1024x1536", "2048x2048", "auto")]
                + [("1024X1024 ", "1024x1024"), ("AUTO", "auto")],
        "quality": [(q, q) for q in ("low", "medium", "high", "auto")] + [("High", "high")],
        "background": [("opaque", "opaque"), ("auto", "auto")],
        "output_format": [("png", "png"), ("jpeg", "jpeg"), ("webp", "webp"), ("JPG", "jpeg"), ("jpg", "jpeg")],
    },
    GEMINI: {
        "n": [(1, 1), (3, 3), (4.0, 4)],
        "seed": [(-1, -1), (0, 0), (7, 7), (2**31 - 1, 2**31 - 1), (12.0, 12)],
        "image_size": [("1K", "1K"), ("2K", "2K"), ("4K", "4K"), ("2k", "2K")],
        "aspect_ratio": [(a, a) for a in ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")],
        "response_format": [("b64_json", "b64_json"), ("url", "url"), ("URL", "url")],
    },
    SEEDREAM: {
        "size": [(s, s) for s in ("512*512", "768*768", "1024*1024", "1536*1536", "2048*2048", "1024*768",
                                  "768*1024", "1536*1024", "1024*1536")] + [(" 1024*1024", "1024*1024")],
    },
    MJ: {
        "aspect_ratio": [(a, a) for a in ("1:1", "9:16", "16:9", "4:3", "3:4", "2:3", "3:2", "9:21", "21:9")],
        "version": [("6", "6"), ("6.1", "6.1"), ("7", "7"), (7, "7"), (7.0, "7"), ("7.0", "7"), (6, "6"),
                    (6.1, "6.1"), ("6.10", "6.1")],
        "quality": [("0.25", "0.25"), ("0.5", "0.5"), ("1", "1"), ("2", "2"), (0.25, "0.25"), (0.5, "0.5"),
                    (".5", "0.5"), (1, "1"), (1.0, "1"), (2, "2"), ("2.0", "2")],
        "stylize": [(0, 0), (100, 100), (1000, 1000), (250.0, 250)],
        "chaos": [(0, 0), (100, 100), (50, 50)],
        "weird": [(0, 0), (3000, 3000), (1500, 1500)],
        "niji": [("close", "close"), ("CLOSE", "close"), ("0", "0"), (0, "0"), ("5", "5"), (5, "5"), (6, "6"),
                 (6.0, "6")],
        "seed": [(-1, -1), (0, 0), (4294967295, 4294967295)],
        "sref": [(URL, URL), (DATA_URL, DATA_URL), ("http://h/x.jpg", "http://h/x.jpg")],
    },
    GROK: {},
}

ACCEPTED_CASES = [(m, f, v, sent) for m, fields in ACCEPTED.items() for f, pairs in fields.items()
                  for v, sent in pairs]


@pytest.mark.parametrize("model, field, value, sent", ACCEPTED_CASES)
def test_valid_values_are_accepted_and_sent_canonical(model, field, value, sent):
    spec = model_spec(model)
    out = spec.validate({field: value})
    assert out == {field: sent}
    assert type(out[field]) is type(sent)
    assert spec.body("p", {field: value})[field] == sent


def test_every_setting_of_every_model_has_accepted_cases():
    for spec in models():
        assert set(ACCEPTED[spec.id]) == {f.name for f in spec.settings}, spec.id


# --------------------------------------------------------------------------------- invalid values

REFUSED = {
    GPT: {
        "n": [0, 5, 2.5, True, "2", float("nan")],
        "size": ["512x512", "1024*1024", 1024, "", "2048"],
        "quality": ["ultra", 1, "hd"],
        "background": ["transparent", True],
        "output_format": ["gif", ["png"], "tiff"],
    },
    GEMINI: {
        "n": [0, 5, "1", 1.5],
        "seed": [-2, 2**31, 1.5, "7", True, float("inf")],
        "image_size": ["8K", "1k2", 1, "1024"],
        "aspect_ratio": ["16/9", "1:2", "9:21", 1.0],
        "response_format": ["png", "json", True],
    },
    SEEDREAM: {
        "size": ["1024x1024", "auto", "1024*1025", 1024, "4096*4096", "1024×1024"],
    },
    MJ: {
        "aspect_ratio": ["4:5", "16/9", 1],
        "version": ["5", 5, 6.2, "6.1.1", "v7", True, float("nan"), "7a"],
        "quality": ["0.3", 0.3, 4, "high", False, "0.75"],
        "stylize": [-1, 1001, 10.5, "100", True],
        "chaos": [-1, 101, "0"],
        "weird": [-1, 3001, 0.5],
        "niji": ["4", 4, "open", True, 5.5, ""],
        "seed": [-2, 2**32, 1.5, "1"],
        "sref": ["ref.png", "ftp://h/x.png", "https://", "https:///x", 12, "https://h/a b.png", "data:image/png"],
    },
}
REFUSED_CASES = [(m, f, v) for m, fields in REFUSED.items() for f, values in fields.items() for v in values]


@pytest.mark.parametrize("model, field, value", REFUSED_CASES)
def test_bad_values_are_refused_naming_model_field_value_and_allowed(model, field, value):
    spec = model_spec(model)
    with pytest.raises(ValidationError) as info:
        spec.validate({field: value})
    err = info.value
    assert err.field == field and err.model == model
    assert err.value is value or (isinstance(value, float) and math.isnan(value))
    message = str(err)
    assert message.startswith(f"{field}=") and f"is not valid for {model}" in message
    assert err.allowed in message and err.allowed
    with pytest.raises(ValidationError):
        spec.body("p", {field: value})


def test_output_format_png_with_a_trailing_space_is_accepted_as_today():
    # build_request strips choice values; the schema does the same (not a different value)
    assert model_spec("gpt-image-2").validate({"output_format": "png "}) == {"output_format": "png"}


@pytest.mark.parametrize("model, field, value, suggestion", [
    (SEEDREAM, "size", "1024x1024", "1024*1024"),
    (SEEDREAM, "size", "1536X1024", "1536*1024"),
    (SEEDREAM, "size", "768×1024", "768*1024"),
    (GPT, "size", "1024*1024", "1024x1024"),
    (GEMINI, "aspect_ratio", "16/9", "16:9"),
    (GEMINI, "aspect_ratio", "16x9", "16:9"),
    (GEMINI, "image_size", "4k ", None),  # accepted, see below
    (MJ, "version", 6.2, "6.1"),
    (MJ, "version", "5", "6"),
    (MJ, "quality", "0.3", "0.25"),
    (MJ, "quality", 4, "2"),
    (MJ, "niji", 4, "5"),
    (GPT, "quality", "hihg", "high"),
    (GPT, "background", "transparent", None),
])
def test_a_refused_value_gets_the_closest_valid_value_as_did_you_mean(model, field, value, suggestion):
    spec = model_spec(model)
    if field == "image_size":
        assert spec.validate({field: value}) == {field: "4K"}
        return
    with pytest.raises(ValidationError) as info:
        spec.validate({field: value})
    assert info.value.suggestion == suggestion
    if suggestion:
        assert f"did you mean {suggestion!r}?" in str(info.value)


def test_seedream_size_with_an_x_is_refused_listing_seedreams_sizes():
    with pytest.raises(ValidationError) as info:
        model_spec("seedream").validate({"size": "1024x1024"})
    message = str(info.value)
    assert "seedream's size" in message and "'1024*1024'" in message and "'2048*2048'" in message
    assert "did you mean '1024*1024'?" in message


def test_numeric_choices_never_round_to_a_neighbour():
    mj = model_spec("mj")
    for value in (6.05, 6.15, 0.26, 1.0001, 7.000001):
        with pytest.raises(ValidationError):
            mj.validate({"version" if value > 5 else "quality": value})


# --------------------------------------------------------------------------------- unknown fields

def _all_field_names():
    return sorted({f.name for m in models() for f in m.fields} | {"style", "format", "steps"})


@pytest.mark.parametrize("model", [GPT, GEMINI, SEEDREAM, MJ, GROK])
@pytest.mark.parametrize("name", _all_field_names())
def test_a_field_the_model_lacks_is_refused_never_dropped(model, name):
    spec = model_spec(model)
    if name in spec.field_names:
        return
    with pytest.raises(ValidationError) as info:
        spec.validate({name: "x"})
    err = info.value
    assert err.field == name and err.model == model
    message = str(err)
    assert f"{spec.name} has no {name}" in message
    assert "its fields: prompt" + "".join(", " + f for f in spec.field_names) in message
    if err.suggestion:
        assert err.suggestion in spec.field_names


@pytest.mark.parametrize("model, name, suggestion", [
    (GEMINI, "output_format", None),  # response_format is b64/url, not a file format
    (GEMINI, "size", "aspect_ratio"),
    (GEMINI, "quality", "image_size"),
    (GEMINI, "aspect_ration", "aspect_ratio"),
    (SEEDREAM, "aspect_ratio", "size"),
    (SEEDREAM, "image_size", "size"),
    (MJ, "size", "aspect_ratio"),
    (MJ, "image", "sref"),
    (MJ, "stylise", "stylize"),
    (GPT, "aspect_ratio", "size"),
    (GPT, "format", "output_format"),
    (GROK, "sref", "image"),
    (SEEDREAM, "background", None),
])
def test_a_field_from_another_model_suggests_this_models_counterpart(model, name, suggestion):
    with pytest.raises(ValidationError) as info:
        model_spec(model).validate({name: "x"})
    assert info.value.suggestion == suggestion


def test_gemini_size_names_both_fields_that_play_its_part():
    with pytest.raises(ValidationError) as info:
        model_spec("gemini").validate({"size": "1024x1024"})
    assert "aspect_ratio and image_size play its part" in str(info.value)


@pytest.mark.parametrize("name", ["model", "prompt", "async", "timeout"])
def test_common_body_fields_are_not_settings(name):
    with pytest.raises(ValidationError) as info:
        model_spec("seedream").validate({name: "x"})
    assert info.value.field == name


@pytest.mark.parametrize("model, name", [(GPT, "image"), (GPT, "mask"), (GEMINI, "image"), (GROK, "image")])
def test_inputs_passed_as_settings_point_to_their_argument(model, name):
    with pytest.raises(ValidationError) as info:
        model_spec(model).validate({name: URL})
    assert f"the {name}= argument" in str(info.value)


def test_none_means_not_set_and_non_mappings_are_refused():
    spec = model_spec("midjourney")
    assert spec.validate({"stylize": None, "chaos": 5}) == {"chaos": 5}
    assert spec.body("p", {"stylize": None}) == {"model": MJ, "prompt": "p"}
    with pytest.raises(ValidationError):
        spec.validate([("chaos", 5)])


# --------------------------------------------------------------------------------- inputs

def test_the_input_surface_of_each_model():
    table = {m.id: (m.max_images, m.requires_image, m.takes_mask, m.has_n, m.answer_shape) for m in models()}
    assert table == {
        GPT: (16, False, True, True, "url"),
        GEMINI: (16, False, False, True, "b64_json"),
        SEEDREAM: (0, False, False, False, "url"),
        MJ: (0, False, False, False, "url"),
        GROK: (1, True, False, False, "url"),
    }


@pytest.mark.parametrize("model, images, mask, fragment", [
    (SEEDREAM, 1, False, "seedream takes no reference images"),
    (MJ, 2, False, "midjourney takes no reference images"),
    (GROK, 0, False, "image= is required"),
    (GROK, 2, False, "at most 1 reference image"),
    (GPT, 17, False, "at most 16 reference images"),
    (GEMINI, 17, False, "at most 16"),
    (GEMINI, 1, True, "gemini takes no mask"),
    (GROK, 1, True, "grok-edit takes no mask"),
    (GPT, 0, True, "together with at least one reference image"),
])
def test_inputs_a_model_does_not_take_are_refused(model, images, mask, fragment):
    spec = model_spec(model)
    with pytest.raises(ValidationError) as info:
        spec.check_inputs(images, mask)
    assert fragment in str(info.value) and info.value.model == model
    with pytest.raises(ValidationError):
        spec.body("p", {}, image_urls=[URL] * images, mask_url=URL if mask else None)


def test_midjourney_image_refusal_points_to_sref():
    with pytest.raises(ValidationError) as info:
        model_spec("mj").check_inputs(1)
    assert info.value.suggestion == "sref"


@pytest.mark.parametrize("model, images, mask", [(GPT, 16, True), (GPT, 1, False), (GEMINI, 16, False),
                                                 (GROK, 1, False), (SEEDREAM, 0, False), (MJ, 0, False)])
def test_inputs_each_model_takes_are_accepted(model, images, mask):
    model_spec(model).check_inputs(images, mask)


# --------------------------------------------------------------------------------- bodies

GPT_SETTINGS = [
    {},
    {"n": 4},
    {"size": "1536x1024", "quality": "high"},
    {"size": "2048x2048", "quality": "low", "background": "opaque", "output_format": "webp"},
    {"output_format": "jpg"},
    {"n": 2.0, "size": "1024X1024", "quality": "Medium", "output_format": "JPEG"},
]


def _body_before_the_schemas(prompt, *, n=1, size="auto", quality="auto", background="auto",
                             output_format="png", image=(), mask=None, task_timeout=None):
    """The body shark_nb sent for gpt-image-2 before the schemas existed (the old
    ``params.ImageRequest.body``, values already canonical), kept as the reference."""
    body = {"model": GPT, "prompt": prompt, "n": n, "size": size, "quality": quality,
            "background": background, "output_format": output_format}
    if image:
        body["image"] = list(image)
    if mask:
        body["mask"] = mask
    if task_timeout is not None:
        body["async"] = True
        body["timeout"] = task_timeout
    return body


_CANONICAL = {"jpg": "jpeg", "JPEG": "jpeg", "1024X1024": "1024x1024", "Medium": "medium", 2.0: 2}


@pytest.mark.parametrize("settings", GPT_SETTINGS)
@pytest.mark.parametrize("inputs", ["none", "one", "two+mask"])
@pytest.mark.parametrize("wait, timeout", [("sync", 300), ("task", 300), ("task", 30), ("task", 1800)])
def test_gpt_image_2_body_is_byte_identical_to_what_was_always_sent(settings, inputs, wait, timeout):
    ref, mask = _png_data_url(), _png_data_url(mode="RGBA")
    images = {"none": [], "one": [ref], "two+mask": [ref, "https://example.test/b.png"]}[inputs]
    req = build_request("a red fox, in snow", image=images or None,
                        mask=mask if inputs == "two+mask" else None,
                        wait=wait, task_timeout=timeout, **settings)
    canonical = {k: _CANONICAL.get(v, v) for k, v in settings.items()}
    expected = _body_before_the_schemas("a red fox, in snow", image=req.image, mask=req.mask,
                                        task_timeout=timeout if wait == "task" else None, **canonical)
    assert json.dumps(req.body()) == json.dumps(expected)
    body = model_spec("gpt-image-2").body(
        "a red fox, in snow", settings, image_urls=list(req.image), mask_url=req.mask,
        task_timeout=timeout if wait == "task" else None)
    assert json.dumps(body) == json.dumps(expected)


def test_gpt_image_2_default_body_is_the_providers_example():
    assert model_spec("gpt").body("Your prompt here", {}) == {
        "model": GPT, "prompt": "Your prompt here", "n": 1, "size": "auto", "quality": "auto",
        "background": "auto", "output_format": "png"}


@pytest.mark.parametrize("model, settings, kwargs, expected", [
    (GEMINI, {}, {}, {"model": GEMINI, "prompt": "p"}),
    (GEMINI, {"response_format": "url", "seed": 7, "aspect_ratio": "16:9", "image_size": "2K", "n": 2}, {},
     {"model": GEMINI, "prompt": "p", "n": 2, "seed": 7, "image_size": "2K", "aspect_ratio": "16:9",
      "response_format": "url"}),
    (GEMINI, {"seed": -1}, {"image_urls": [URL, DATA_URL], "task_timeout": 600},
     {"model": GEMINI, "prompt": "p", "seed": -1, "image": [URL, DATA_URL], "async": True, "timeout": 600}),
    (SEEDREAM, {}, {}, {"model": SEEDREAM, "prompt": "p"}),
    (SEEDREAM, {"size": "1024*1024"}, {"task_timeout": 300},
     {"model": SEEDREAM, "prompt": "p", "size": "1024*1024", "async": True, "timeout": 300}),
    (MJ, {"sref": URL, "seed": 3, "niji": 6, "weird": 10, "chaos": 5, "stylize": 250, "quality": 0.5,
          "version": 6.1, "aspect_ratio": "21:9"}, {},
     {"model": MJ, "prompt": "p", "aspect_ratio": "21:9", "version": "6.1", "quality": "0.5", "stylize": 250,
      "chaos": 5, "weird": 10, "niji": "6", "seed": 3, "sref": URL}),
    (MJ, {"version": 7}, {}, {"model": MJ, "prompt": "p", "version": "7"}),
    (GROK, {}, {"image_urls": [URL]}, {"model": GROK, "prompt": "p", "image": URL}),
    (GROK, {}, {"image_urls": (DATA_URL,), "task_timeout": 1800},
     {"model": GROK, "prompt": "p", "image": DATA_URL, "async": True, "timeout": 1800}),
])
def test_bodies_carry_exactly_the_models_fields_in_schema_order(model, settings, kwargs, expected):
    body = model_spec(model).body("p", settings, **kwargs)
    assert json.dumps(body) == json.dumps(expected)  # keys, values and order


@pytest.mark.parametrize("timeout", [29, 1801, 300.0, True, "300"])
def test_task_timeout_out_of_range_is_refused(timeout):
    with pytest.raises(ValidationError) as info:
        model_spec("seedream").body("p", {}, task_timeout=timeout)
    assert info.value.field == "timeout"


def test_defaults_and_effective_settings():
    assert model_spec("gpt").defaults() == {"n": 1, "size": "auto", "quality": "auto", "background": "auto",
                                            "output_format": "png"}
    assert model_spec("gemini").defaults() == {"n": 1, "image_size": "1K", "aspect_ratio": "1:1",
                                               "response_format": "b64_json"}
    assert model_spec("seedream").defaults() == {"size": "2048*2048"}
    assert model_spec("mj").defaults() == {"aspect_ratio": "1:1", "version": "7", "quality": "1", "stylize": 100,
                                           "chaos": 0, "weird": 0, "niji": "close", "seed": -1}
    assert model_spec("grok").defaults() == {}
    assert model_spec("mj").effective({"version": 6})["version"] == "6"


def test_answer_shape_follows_response_format():
    gemini = model_spec("gemini")
    assert gemini.answer_shape_for({}) == "b64_json"
    assert gemini.answer_shape_for({"response_format": "url"}) == "url"
    assert model_spec("seedream").answer_shape_for(None) == "url"


# --------------------------------------------------------------------------------- the simulator's check

@pytest.mark.parametrize("model, settings, kwargs", [
    (GPT, {"quality": "low"}, {"image_urls": [URL], "mask_url": DATA_URL, "task_timeout": 300}),
    (GEMINI, {"aspect_ratio": "16:9"}, {"image_urls": [URL]}),
    (SEEDREAM, {"size": "512*512"}, {}),
    (MJ, {"version": "6.1", "quality": "2"}, {"task_timeout": 60}),
    (GROK, {}, {"image_urls": [URL]}),
])
def test_validate_body_accepts_what_body_builds(model, settings, kwargs):
    spec = model_spec(model)
    effective = spec.validate_body(spec.body("a fox", settings, **kwargs))
    assert effective == spec.effective(settings)


@pytest.mark.parametrize("model, body, field", [
    (GEMINI, {"size": "1024x1024"}, "size"),
    (SEEDREAM, {"size": "1024x1024"}, "size"),
    (SEEDREAM, {"n": 1}, "n"),
    (MJ, {"version": 7}, "version"),       # the wire wants the string
    (MJ, {"image": [URL]}, "image"),
    (GROK, {}, "image"),
    (GROK, {"image": [URL]}, "image"),     # a list, not one URL
    (GPT, {"timeout": 300}, "timeout"),    # timeout without async
    (GPT, {"async": "yes"}, "async"),
    (GPT, {"async": True, "timeout": 20}, "timeout"),
    (GPT, {"mask": URL}, "mask"),
])
def test_validate_body_refuses_what_the_gateway_refuses(model, body, field):
    spec = model_spec(model)
    full = {"model": spec.id, "prompt": "a fox", **body}
    if model == MJ and field == "version":
        assert spec.validate_body(full)["version"] == "7"  # a number is accepted and read as "7"
        return
    with pytest.raises(ValidationError) as info:
        spec.validate_body(full)
    assert info.value.field == field


def test_validate_body_checks_model_and_prompt():
    spec = model_spec("seedream")
    with pytest.raises(ValidationError) as info:
        spec.validate_body({"model": GPT, "prompt": "x"})
    assert info.value.field == "model"
    with pytest.raises(ValidationError) as info:
        spec.validate_body({"model": SEEDREAM, "prompt": "  "})
    assert info.value.field == "prompt"


# --------------------------------------------------------------------------------- estimates

@pytest.mark.parametrize("settings, refs", [({}, 0), ({"quality": "high", "size": "2048x2048", "n": 3}, 2),
                                            ({"quality": "low"}, 0)])
def test_gpt_image_2_estimate_is_the_token_table(settings, refs):
    est = model_spec("gpt-image-2").estimate("a fox in snow", settings, refs)
    expected = pricing.estimate_credit(prompt="a fox in snow", n=settings.get("n", 1),
                                       size=settings.get("size", "auto"), quality=settings.get("quality", "auto"),
                                       reference_images=refs)
    assert est == Estimate(expected, "token table") and float(est) == expected and est.known
    assert "token table" in est.text() and "credit" in est.text()


@pytest.mark.parametrize("model", [GEMINI, SEEDREAM, MJ, GROK])
def test_models_without_a_price_table_estimate_unknown_never_zero(model):
    est = model_spec(model).estimate("a fox", {})
    assert est.credit is None and not est.known and est.basis == "unknown" and str(est) == "unknown"
    assert model_spec(model).estimate_credit("a fox", {}) is None
    with pytest.raises(TypeError):
        float(est)


def test_a_learned_price_is_used_for_the_same_price_shaping_settings_only():
    gemini = model_spec("gemini")
    assert PRICE_BOOK.record(gemini.id, {"image_size": "2K", "model": gemini.id, "wait": "sync"}, 1300, 2)
    assert PRICE_BOOK.record("gemini", {"image_size": "2k", "aspect_ratio": "16:9"}, 700, 1)
    est = gemini.estimate("x", {"image_size": "2K", "n": 3})
    assert est.credit == pytest.approx(3 * (650 + 700) / 2)
    assert est.basis == "learned from 2 calls this session" and est.learned and est.calls == 2
    assert "learned from 2 calls" in est.text()
    assert gemini.estimate("x", {"image_size": "4K"}).credit is None          # another price class
    assert gemini.estimate("x", {}).credit is None                           # 1K by default
    assert model_spec("seedream").estimate("x", {"size": "2048*2048"}).credit is None  # another model


def test_the_default_setting_and_the_unset_setting_share_a_learned_price():
    assert PRICE_BOOK.record("seedream", {}, 400, 1)
    assert model_spec("seedream").estimate("x", {"size": "2048*2048"}).credit == 400
    assert model_spec("seedream").estimate("x", {"size": "1024*1024"}).credit is None


@pytest.mark.parametrize("credit, images", [(None, 1), (float("nan"), 1), (-5, 1), (100, 0), (True, 1),
                                            (100, None), ("100", 1)])
def test_calls_without_a_usable_price_teach_nothing(credit, images):
    book = PriceBook()
    assert book.record("seedream", {}, credit, images) is False
    assert len(book) == 0 and model_spec("seedream").estimate("x", {}, book=book).credit is None


def test_unknown_models_teach_nothing_and_a_separate_book_is_separate():
    book = PriceBook()
    assert book.record("openai/dall-e-9", {}, 100, 1) is False
    assert book.record("mj", {"quality": 2}, 1200, 1)
    assert model_spec("mj").estimate("x", {"quality": "2"}, book=book).credit == 1200
    assert model_spec("mj").estimate("x", {"quality": "2"}).credit is None  # the global book is untouched


@pytest.mark.parametrize("model, settings, credit", [
    (GEMINI, {}, 390), (GEMINI, {"image_size": "2K", "n": 2}, 1300), (GEMINI, {"image_size": "4K"}, 1300),
    (SEEDREAM, {}, 400), (SEEDREAM, {"size": "512*512"}, 400),
    (MJ, {}, 600), (MJ, {"quality": 0.25}, 150), (MJ, {"quality": "2"}, 1200),
    (GROK, {}, 200),
])
def test_simulator_prices_are_the_documented_table(model, settings, credit):
    assert model_spec(model).simulator_credit("a fox", settings) == credit


def test_gpt_image_2_simulator_price_is_the_token_table():
    spec = model_spec("gpt")
    assert spec.simulator_credit("a fox", {"quality": "high"}, 1) == pricing.estimate_credit(
        prompt="a fox", quality="high", reference_images=1)


# --------------------------------------------------------------------------------- help and options

@pytest.mark.parametrize("model", [GPT, GEMINI, SEEDREAM, MJ, GROK])
def test_describe_lists_every_field_with_its_values_and_default(model):
    spec = model_spec(model)
    text, html = spec.describe(), spec.describe_html()
    assert spec.id in text and "prompt" in text
    for f in spec.fields:
        assert f.name in text and f.values_text() in text and f.help in text
        assert f.name in html
    assert "<script" not in html


def test_magic_options_come_from_the_schema():
    assert list(model_spec("gpt").option_map()) == ["-n", "--size", "--quality", "--background", "--format"]
    assert list(model_spec("gemini").option_map()) == ["-n", "--seed", "--image-size", "--aspect-ratio",
                                                       "--response-format"]
    assert "--stylize" in model_spec("mj").option_map() and "--sref" in model_spec("mj").option_map()


@pytest.mark.parametrize("kind, text, parsed", [
    ("int", "7", 7), ("int", " -1 ", -1), ("int", "7.0", 7), ("int", "7.5", 7.5), ("int", "seven", "seven"),
    ("number", "0.5", 0.5), ("bool", "true", True), ("bool", "No", False), ("bool", "maybe", "maybe"),
    ("choice", " 16:9 ", "16:9"), ("urls", "https://a/x.png, https://a/y.png", ["https://a/x.png", "https://a/y.png"]),
])
def test_field_parse_turns_option_text_into_a_value_to_validate(kind, text, parsed):
    f = Field("x", kind, choices=("16:9",) if kind == "choice" else ())
    assert f.parse(text) == parsed


def test_schema_mistakes_fail_at_import_time():
    with pytest.raises(TypeError):
        Field("x", "colour")
    with pytest.raises(TypeError):
        Field("x", "choice")
    with pytest.raises(TypeError):
        ModelSpec(id="a/b", name="b", title="B", fields=(Field("x", "int"), Field("x", "int")))


def test_specs_and_fields_are_frozen():
    spec = model_spec("gemini")
    with pytest.raises(AttributeError):
        spec.id = "other"
    with pytest.raises(AttributeError):
        spec.fields[0].max = 99
    with pytest.raises(TypeError):
        spec.equivalents["x"] = ("y",)


def test_validation_error_without_model_keeps_its_old_message():
    err = ValidationError("n", 5, "a whole number from 1 to 4", detail="too many")
    assert str(err) == "n=5 is not valid: too many; expected a whole number from 1 to 4"
    assert err.model is None and err.suggestion is None


def test_shark_nb_exports_models_and_model_spec_at_top_level():
    import shark_nb
    import shark_nb.schemas  # importing the package must not shadow the functions

    assert [m.id for m in shark_nb.models()] == [GPT, GEMINI, SEEDREAM, MJ, GROK]
    assert shark_nb.model_spec("mj").id == MJ
    assert shark_nb.ModelSpec is ModelSpec and shark_nb.Field is Field


def test_importing_the_schemas_stays_light():
    import subprocess
    import sys

    code = ("import sys, shark_nb.schemas as m; m.model_spec('gemini').body('x', {'seed': 1}); "
            "print(sorted(k for k in ('httpx', 'PIL', 'ipywidgets', 'IPython') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
