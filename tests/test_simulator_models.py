"""The simulator serves every gateway model, each judged by its own schema (shark_nb.schemas):
valid calls (sync and task, in process and over a real loopback server) answer images of the
model's size and format at the documented simulator price; foreign fields, bad values and
missing inputs are 400 naming the field; aliases are 404 with a hint."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from PIL import Image

from shark_nb import pricing
from shark_nb.schemas import model_spec, models
from shark_nb.simulator import ManualClock, Simulator, SimulatorTransport, serve_in_thread
from shark_nb.simulator.render import RenderSpec, render

GPT = "openai/gpt-image-2"
GEMINI = "google/gemini-3.1-flash-image-preview"
SEEDREAM = "bytedance/seedream-v4.5"
MJ = "midjourney/text-to-image"
GROK = "x-ai/grok-imagine-image/edit"
PROMPT = "a lighthouse at dusk"


def data_url(size=(96, 64), mode="RGB", fmt="PNG") -> str:
    buf = io.BytesIO()
    Image.new(mode, size, (40, 90, 200) if mode == "RGB" else (40, 90, 200, 255)).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


REF = data_url((96, 64))

# (id, fields, pixel size, PIL format, answer shape, documented simulator credit, images, usage?)
VALID = [
    ("gpt-image-2", GPT, {"n": 2, "size": "1536x1024", "quality": "low", "output_format": "webp"}, (1536, 1024),
     "WEBP", "url", pricing.estimate_credit(prompt=PROMPT, n=2, size="1536x1024", quality="low"), 2, True),
    ("gemini-1K-16:9", GEMINI, {"n": 2, "seed": 7, "aspect_ratio": "16:9", "image_size": "1K"}, (1024, 576), "PNG",
     "b64_json", 780, 2, False),
    ("gemini-2K-3:4-url", GEMINI, {"aspect_ratio": "3:4", "image_size": "2K", "response_format": "url"},
     (1536, 2048), "PNG", "url", 650, 1, False),
    ("gemini-21:9-with-reference", GEMINI, {"aspect_ratio": "21:9", "image": [REF]}, (1024, 440), "PNG",
     "b64_json", 390, 1, False),
    ("seedream", SEEDREAM, {"size": "1024*768"}, (1024, 768), "JPEG", "url", 400, 1, False),
    ("midjourney", MJ, {"aspect_ratio": "9:16", "version": "6.1", "quality": "0.5", "stylize": 250, "chaos": 10,
                        "niji": "close", "seed": 12}, (576, 1024), "PNG", "url", 300, 1, False),
    ("midjourney-sref", MJ, {"sref": REF, "quality": "2"}, (1024, 1024), "PNG", "url", 1200, 1, False),
    ("grok-edit", GROK, {"image": REF}, (96, 64), "PNG", "url", 200, 1, False),
    ("grok-edit-http", GROK, {"image": "https://example.com/cat.png"}, (1024, 1024), "PNG", "url", 200, 1, False),
]
IDS = [c[0] for c in VALID]


def body(model, **fields):
    return {"model": model, "prompt": PROMPT, **fields}


def make_client(sim: Simulator) -> httpx.Client:
    return httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base)


@pytest.fixture
def sim() -> Simulator:
    return Simulator(latency=0)


@pytest.fixture
def client(sim):
    with make_client(sim) as c:
        yield c


def post(c, b, **kw) -> httpx.Response:
    return c.post("/images/generations", json=b, **kw)


def images_of(c: httpx.Client, entries: list[dict], shape: str) -> list[Image.Image]:
    out = []
    for d in entries:
        assert set(d) == {shape}
        if shape == "b64_json":
            raw = base64.b64decode(d["b64_json"])
        else:
            r = c.get(d["url"])
            assert r.status_code == 200
            raw = r.content
            assert r.headers["content-type"] == {"PNG": "image/png", "JPEG": "image/jpeg",
                                                 "WEBP": "image/webp"}[Image.open(io.BytesIO(raw)).format]
        img = Image.open(io.BytesIO(raw))
        img.load()
        out.append(img)
    return out


def check_answer(c, out, model, fields, dims, fmt, shape, credit, n, usage):
    assert out["credit"] == pytest.approx(credit)
    refs = len(fields["image"]) if isinstance(fields.get("image"), list) else int("image" in fields or "sref" in fields)
    settings = {k: v for k, v in fields.items() if k not in ("image",)}
    assert out["credit"] == pytest.approx(model_spec(model).simulator_credit(PROMPT, settings, refs))
    assert ("usage" in out) is usage
    imgs = images_of(c, out["data"], shape)
    assert len(imgs) == n
    assert all(i.size == dims and i.format == fmt for i in imgs)


# --------------------------------------------------------------------------- valid calls


@pytest.mark.parametrize("case", VALID, ids=IDS)
def test_sync_call_answers_the_models_size_format_shape_and_price(client, sim, case):
    _, model, fields, dims, fmt, shape, credit, n, usage = case
    r = post(client, body(model, **fields))
    assert r.status_code == 200, r.text
    out = r.json()
    check_answer(client, out, model, fields, dims, fmt, shape, credit, n, usage)
    (charge,) = sim.charges
    assert charge["credit"] == pytest.approx(credit) and charge["images"] == n and charge["task_id"] is None


@pytest.mark.parametrize("case", VALID, ids=IDS)
def test_task_mode_works_for_every_model(case):
    _, model, fields, dims, fmt, shape, credit, n, usage = case
    clock = ManualClock()
    s = Simulator(latency=5, clock=clock, task_pending=1)
    with make_client(s) as c:
        r = post(c, body(model, **fields, **{"async": True, "timeout": 60}))
        assert r.status_code == 202, r.text
        task = r.json()
        assert c.get(f"/images/generations/{task['id']}").json()["status"] == "pending"
        assert s.charges == []
        clock.advance(6)
        out = c.get(f"/images/generations/{task['id']}").json()
        assert out["status"] == "completed"
        check_answer(c, out, model, fields, dims, fmt, shape, credit, n, usage)
    (charge,) = s.charges
    assert charge["task_id"] == task["id"] and charge["credit"] == pytest.approx(credit)


def test_a_cancelled_task_of_another_model_is_not_charged():
    clock = ManualClock()
    s = Simulator(latency=5, clock=clock)
    with make_client(s) as c:
        task = post(c, body(SEEDREAM, **{"async": True})).json()
        assert c.post(f"/images/generations/{task['id']}/cancel").json()["status"] == "cancelled"
        clock.advance(10)
    assert s.charges == []


def test_same_request_same_image_and_settings_shape_the_image(client):
    def first(b):
        out = post(client, b).json()
        return base64.b64decode(out["data"][0]["b64_json"])

    a = first(body(GEMINI, seed=1))
    assert first(body(GEMINI, seed=1)) == a
    assert first(body(GEMINI, seed=2)) != a  # a setting beyond the size changes the picture
    mj = [post(client, body(MJ, stylize=s)).json()["data"][0]["url"] for s in (100, 900)]
    assert client.get(mj[0]).content != client.get(mj[1]).content


# --------------------------------------------------------------------------- answer shape


def test_gemini_4k_renders_at_4096_on_the_long_side(client):
    out = post(client, body(GEMINI, image_size="4K", aspect_ratio="21:9", response_format="url")).json()
    assert out["credit"] == 1300
    (img,) = images_of(client, out["data"], "url")
    assert img.size == (4096, 1752)


def test_gemini_answers_inline_by_default_and_url_when_asked(client):
    assert set(post(client, body(GEMINI)).json()["data"][0]) == {"b64_json"}
    assert set(post(client, body(GEMINI, response_format="b64_json")).json()["data"][0]) == {"b64_json"}
    assert set(post(client, body(GEMINI, response_format="url")).json()["data"][0]) == {"url"}
    for model, extra in ((GPT, {}), (SEEDREAM, {}), (MJ, {}), (GROK, {"image": REF})):
        assert set(post(client, body(model, **extra)).json()["data"][0]) == {"url"}, model


@pytest.mark.parametrize("override", ["url", "b64_json"])
def test_the_config_override_of_the_answer_shape_wins_for_every_model(override):
    s = Simulator(latency=0, response_format=override)
    with make_client(s) as c:
        for model, extra in ((GPT, {}), (GEMINI, {"response_format": "url"}), (GEMINI, {}), (SEEDREAM, {}),
                             (MJ, {}), (GROK, {"image": REF})):
            out = post(c, body(model, **extra)).json()
            assert set(out["data"][0]) == {override}, (model, extra)


def test_task_result_shape_follows_the_model_unless_configured():
    clock = ManualClock()
    for cfg, model, extra, key in ((None, GEMINI, {}, "b64_json"), (None, GEMINI, {"response_format": "url"}, "url"),
                                   (None, SEEDREAM, {}, "url"), ("data_url", GEMINI, {}, "url"),
                                   ("output_urls", GEMINI, {}, None)):
        s = Simulator(latency=1, clock=clock, task_result_shape=cfg)
        with make_client(s) as c:
            tid = post(c, body(model, **extra, **{"async": True})).json()["id"]
            clock.advance(2)
            out = c.get(f"/images/generations/{tid}").json()
        if key is None:
            assert len(out["output"]["urls"]) == 1 and "data" not in out
        else:
            assert set(out["data"][0]) == {key}, (cfg, model, extra)


# --------------------------------------------------------------------------- refusals

FOREIGN = [
    (GEMINI, "size", "1024x1024", "aspect_ratio"),
    (GEMINI, "mask", REF, None),
    (GEMINI, "quality", "high", "image_size"),
    (SEEDREAM, "quality", "high", None),
    (SEEDREAM, "image", [REF], None),
    (SEEDREAM, "n", 2, None),
    (MJ, "output_format", "png", None),
    (MJ, "image", [REF], "sref"),
    (MJ, "n", 1, None),
    (GROK, "n", 1, None),
    (GROK, "mask", REF, None),
    (GROK, "aspect_ratio", "1:1", None),
    (GPT, "aspect_ratio", "1:1", "size"),
    (GPT, "seed", 3, None),
    (GPT, "response_format", "url", "output_format"),
]


@pytest.mark.parametrize("model,field,value,hint", FOREIGN, ids=[f"{m.split('/')[0]}-{f}" for m, f, _, _ in FOREIGN])
def test_a_field_the_model_lacks_is_400_naming_model_and_field(client, sim, model, field, value, hint):
    extra = {"image": REF} if model == GROK else {}
    r = post(client, body(model, **extra, **{field: value}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "unknown_parameter"
    assert err["param"] == field
    assert model in err["message"] and repr(field) in err["message"]
    assert "data:image" not in err["message"]  # the value (maybe megabytes) is never echoed
    if hint:
        assert f"did you mean {hint!r}" in err["message"]
    assert sim.charges == []


BAD_VALUES = [
    # (id, model, fields, param, code, words in the message)
    ("seedream-x-size", SEEDREAM, {"size": "1024x1024"}, "size", "invalid_value", ["1024*1024", "'1024x1024'"]),
    ("seedream-size-number", SEEDREAM, {"size": 1024}, "size", "invalid_type", ["string"]),
    ("mj-stylize-1001", MJ, {"stylize": 1001}, "stylize", "invalid_value", ["0 to 1,000", "1001"]),
    ("mj-stylize-float", MJ, {"stylize": 100.0}, "stylize", "invalid_type", ["integer"]),
    ("mj-version-number", MJ, {"version": 7}, "version", "invalid_type", ["string", "6.1", "a JSON number"]),
    ("mj-version-float", MJ, {"version": 6.1}, "version", "invalid_type", ["string"]),
    ("mj-version-7.0", MJ, {"version": "7.0"}, "version", "invalid_value", ["'7.0'"]),
    ("mj-quality-number", MJ, {"quality": 1}, "quality", "invalid_type", ["string"]),
    ("mj-niji-number", MJ, {"niji": 6}, "niji", "invalid_type", ["string"]),
    ("mj-seed-high", MJ, {"seed": 2**32}, "seed", "invalid_value", ["4,294,967,295"]),
    ("mj-sref-list", MJ, {"sref": [REF]}, "sref", "invalid_type", ["one image URL"]),
    ("mj-sref-ftp", MJ, {"sref": "ftp://example.com/s.png"}, "sref", "invalid_image_url", []),
    ("gemini-ratio-5:3", GEMINI, {"aspect_ratio": "5:3"}, "aspect_ratio", "invalid_value", ["16:9", "'5:3'"]),
    ("gemini-size-case", GEMINI, {"image_size": "2k"}, "image_size", "invalid_value", ["1K, 2K, 4K"]),
    ("gemini-n-5", GEMINI, {"n": 5}, "n", "invalid_value", ["1 to 4"]),
    ("gemini-n-float", GEMINI, {"n": 2.0}, "n", "invalid_type", []),
    ("gemini-seed-string", GEMINI, {"seed": "7"}, "seed", "invalid_type", []),
    ("gemini-seed-null", GEMINI, {"seed": None}, "seed", "invalid_type", []),
    ("gemini-format-case", GEMINI, {"response_format": "URL"}, "response_format", "invalid_value", ["b64_json"]),
    ("gemini-image-string", GEMINI, {"image": REF}, "image", "invalid_type", ["array"]),
    ("gemini-image-17", GEMINI, {"image": ["https://example.com/a.png"] * 17}, "image", "invalid_value", ["16"]),
    ("gemini-image-bad-b64", GEMINI, {"image": ["data:image/png;base64,!!"]}, "image[0]", "invalid_image_url", []),
    ("grok-two-images", GROK, {"image": [REF, REF]}, "image", "invalid_type", ["single image", "2"]),
    ("grok-one-image-list", GROK, {"image": [REF]}, "image", "invalid_type", ["single image"]),
    ("grok-image-not-image", GROK, {"image": "data:image/png;base64," + base64.b64encode(b"hello").decode()},
     "image", "invalid_image", []),
    ("grok-image-ftp", GROK, {"image": "ftp://example.com/a.png"}, "image", "invalid_image_url", []),
]


@pytest.mark.parametrize("model,fields,param,code,words", [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_is_400_with_the_field_and_what_is_allowed(client, sim, model, fields, param, code, words):
    r = post(client, body(model, **fields))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] == code
    for w in words:
        assert w in err["message"], (w, err["message"])
    assert sim.charges == []


@pytest.mark.parametrize("fields", [{}, {"image": None}, {"prompt_image": REF}])
def test_grok_edit_without_its_image_is_400_missing_required_parameter(client, fields):
    r = post(client, body(GROK, **fields))
    err = r.json()["error"]
    assert r.status_code == 400
    if "prompt_image" in fields:  # an unknown field is named first, like any other
        assert err["param"] == "prompt_image" and err["code"] == "unknown_parameter"
        return
    assert err["param"] == "image" and err["code"] == "missing_required_parameter"
    assert GROK in err["message"]


@pytest.mark.parametrize("model", [m.id for m in models()])
def test_model_independent_checks_apply_to_every_model(client, sim, model):
    extra = {"image": REF} if model == GROK else {}
    cases = [
        ({**body(model, **extra), "prompt": ""}, 400, "prompt"),
        ({k: v for k, v in body(model, **extra).items() if k != "prompt"}, 400, "prompt"),
        ({**body(model, **extra), "prompt": "x" * 32_001}, 400, "prompt"),
        (body(model, **extra, **{"async": "yes"}), 400, "async"),
        (body(model, **extra, **{"async": True, "timeout": 10}), 400, "timeout"),
    ]
    for b, status, param in cases:
        r = post(client, b)
        assert r.status_code == status and r.json()["error"]["param"] == param, (param, r.text)
    r = post(client, body(model, **extra, prompt="a cat [moderate]"))
    assert r.status_code == 400 and r.json()["error"]["type"] == "content_moderation"
    r = post(client, body(model, **extra), headers={"X-App-User-Credits": "1"})
    assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_credits"
    assert sim.charges == []


def test_extra_fields_are_tolerated_for_every_model():
    s = Simulator(latency=0, extra_fields=("user",))
    with make_client(s) as c:
        assert post(c, body(SEEDREAM, user="u1")).status_code == 200
        assert post(c, body(GROK, image=REF, user="u1")).status_code == 200


# --------------------------------------------------------------------------- model names


@pytest.mark.parametrize("name", sorted({n for m in models() for n in m.names if n != m.id} |
                                        {m.id.upper() for m in models()}))
def test_an_alias_as_model_is_404_with_the_full_id_as_hint(client, name):
    r = post(client, {"model": name, "prompt": PROMPT})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "model_not_found" and err["param"] == "model"
    full = model_spec(name).id
    assert f"did you mean {full!r}" in err["message"] and "full model ids only" in err["message"]
    r = client.get(f"/models/{name}")
    assert r.status_code == 404 and full in r.json()["error"]["message"]


def test_an_unknown_model_is_404_listing_the_models(client):
    err = post(client, {"model": "acme/imagine-9", "prompt": PROMPT}).json()["error"]
    assert err["type"] == "model_not_found"
    assert all(m.id in err["message"] for m in models())


def test_models_lists_all_five_as_supported(client):
    out = client.get("/models").json()
    assert [m["id"] for m in out["data"]] == [GPT, GEMINI, SEEDREAM, MJ, GROK]
    assert all(m["supported_by_simulator"] is True for m in out["data"])
    for mid in (GEMINI, GROK):
        one = client.get(f"/models/{mid}").json()
        assert one["id"] == mid and one["supported_by_simulator"] is True


# --------------------------------------------------------------------------- render label


def test_the_image_shows_the_models_short_name_in_the_top_left():
    plain = RenderSpec(seed=5, prompt="p", size="320x240")
    labelled = RenderSpec(seed=5, prompt="p", size="320x240", label="seedream")
    a = Image.open(io.BytesIO(render(plain))).convert("RGB")
    b = Image.open(io.BytesIO(render(labelled))).convert("RGB")
    from PIL import ImageChops

    box = ImageChops.difference(a, b).getbbox()
    assert box is not None and box[0] < 20 and box[1] < 20 and box[2] < 160 and box[3] < 60


def test_sizes_render_for_every_spelling():
    for size, dims in (("1024*768", (1024, 768)), ("96x64", (96, 64)), ("16x16", (16, 16))):
        assert Image.open(io.BytesIO(render(RenderSpec(seed=1, prompt="a long prompt " * 20, size=size,
                                                       label="gpt-image-2")))).size == dims


# --------------------------------------------------------------------------- real loopback server


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(Simulator(latency=0)) as srv:
        yield srv


@pytest.mark.parametrize("case", [c for c in VALID if c[0] in ("gpt-image-2", "gemini-1K-16:9", "seedream",
                                                                "midjourney", "grok-edit")],
                         ids=["gpt-image-2", "gemini", "seedream", "midjourney", "grok-edit"])
def test_every_model_over_the_loopback_server(server, case):
    _, model, fields, dims, fmt, shape, credit, n, usage = case
    with httpx.Client(base_url=server.base_url) as c:  # the key goes to the API, never to the file host
        r = c.post("/images/generations", content=json.dumps(body(model, **fields)),
                   headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"})
        assert r.status_code == 200, r.text
        check_answer(c, r.json(), model, fields, dims, fmt, shape, credit, n, usage)
        bad = c.post("/images/generations", json=body(model, **fields, bogus=1))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "bogus"
        assert model in bad.json()["error"]["message"]


def test_task_mode_over_the_loopback_server_for_another_model():
    with serve_in_thread(Simulator(latency=0.2, task_pending=0.05)) as srv, httpx.Client() as c:
        task = c.post(srv.base_url + "/images/generations",
                      json=body(GEMINI, aspect_ratio="4:5", **{"async": True})).json()
        url = srv.base_url + f"/images/generations/{task['id']}"
        deadline = time.monotonic() + 10
        while (status := c.get(url).json())["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status["status"] == "completed" and status["credit"] == 390 and "usage" not in status
        img = Image.open(io.BytesIO(base64.b64decode(status["data"][0]["b64_json"])))
        assert img.size == (816, 1024)


def test_the_cli_help_names_every_model():
    from shark_nb.simulator.__main__ import build_parser

    text = " ".join(build_parser().format_help().split())
    assert all(m.id in text for m in models()) and "full model id" in text
    args = build_parser().parse_args([])
    assert args.response_format is None and args.task_result_shape is None  # each model's own shape
