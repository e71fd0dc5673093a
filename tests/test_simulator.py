"""The offline simulator: validation, sync answers, auth, credits, models, transports."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import uuid

import httpx
import pytest
from PIL import Image

from shark_nb import pricing
from shark_nb.params import MAX_PROMPT_CHARS, MODEL, OTHER_MODELS
from shark_nb.simulator import (
    AsyncSimulatorTransport,
    Simulator,
    SimulatorConfig,
    SimulatorTransport,
)

GOOD = {"model": MODEL, "prompt": "a red fox in the snow"}


def make_client(sim: Simulator, **kw) -> httpx.Client:
    return httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base, **kw)


def post(c: httpx.Client, body=None, **kw) -> httpx.Response:
    return c.post("/images/generations", json=GOOD if body is None else body, **kw)


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def sim() -> Simulator:
    return Simulator(latency=0)


@pytest.fixture
def client(sim):
    with make_client(sim) as c:
        yield c


# --------------------------------------------------------------------------- validation

RGB_64 = Image.new("RGB", (64, 64), (200, 30, 30))
PNG_URL = data_url(RGB_64)


def _with(**fields):
    body = dict(GOOD)
    for k, v in fields.items():
        if v is _DROP:
            body.pop(k, None)
        else:
            body[k] = v
    return body


_DROP = object()

INVALID = [
    # (id, body, status, type, param)
    ("model-missing", _with(model=_DROP), 400, "invalid_request_error", "model"),
    ("model-not-string", _with(model=5), 400, "invalid_request_error", "model"),
    ("model-alias", _with(model="gpt-image-2"), 404, "model_not_found", "model"),
    ("model-id-case", _with(model="OpenAI/GPT-Image-2"), 404, "model_not_found", "model"),
    ("gpt-field-on-other-model", _with(model=OTHER_MODELS[0], size="1024x1024"), 400, "invalid_request_error",
     "size"),
    ("model-unknown", _with(model="acme/imagine-9"), 404, "model_not_found", "model"),
    ("unknown-field", _with(response_format="url"), 400, "invalid_request_error", "response_format"),
    ("unknown-field-user", _with(user="u1"), 400, "invalid_request_error", "user"),
    ("prompt-missing", _with(prompt=_DROP), 400, "invalid_request_error", "prompt"),
    ("prompt-empty", _with(prompt=""), 400, "invalid_request_error", "prompt"),
    ("prompt-blank", _with(prompt="   \n"), 400, "invalid_request_error", "prompt"),
    ("prompt-not-string", _with(prompt=["a"]), 400, "invalid_request_error", "prompt"),
    ("prompt-too-long", _with(prompt="x" * (MAX_PROMPT_CHARS + 1)), 400, "input_too_large", "prompt"),
    ("n-zero", _with(n=0), 400, "invalid_request_error", "n"),
    ("n-five", _with(n=5), 400, "invalid_request_error", "n"),
    ("n-bool", _with(n=True), 400, "invalid_request_error", "n"),
    ("n-float", _with(n=2.0), 400, "invalid_request_error", "n"),
    ("n-string", _with(n="2"), 400, "invalid_request_error", "n"),
    ("size", _with(size="512x512"), 400, "invalid_request_error", "size"),
    ("size-case", _with(size="AUTO"), 400, "invalid_request_error", "size"),
    ("quality", _with(quality="ultra"), 400, "invalid_request_error", "quality"),
    ("background-transparent", _with(background="transparent"), 400, "invalid_request_error", "background"),
    ("output_format-jpg", _with(output_format="jpg"), 400, "invalid_request_error", "output_format"),
    ("output_format-case", _with(output_format="PNG"), 400, "invalid_request_error", "output_format"),
    ("async-string", _with(**{"async": "yes"}), 400, "invalid_request_error", "async"),
    ("async-int", _with(**{"async": 1}), 400, "invalid_request_error", "async"),
    ("timeout-low", _with(**{"async": True, "timeout": 29}), 400, "invalid_request_error", "timeout"),
    ("timeout-high", _with(**{"async": True, "timeout": 1801}), 400, "invalid_request_error", "timeout"),
    ("timeout-float", _with(**{"async": True, "timeout": 30.5}), 400, "invalid_request_error", "timeout"),
    ("timeout-bool", _with(**{"async": True, "timeout": True}), 400, "invalid_request_error", "timeout"),
    ("image-string", _with(image=PNG_URL), 400, "invalid_request_error", "image"),
    ("image-empty", _with(image=[]), 400, "invalid_request_error", "image"),
    ("image-too-many", _with(image=["https://example.com/a.png"] * 17), 400, "invalid_request_error", "image"),
    ("image-ftp", _with(image=["ftp://example.com/a.png"]), 400, "invalid_request_error", "image[0]"),
    ("image-not-string", _with(image=[5]), 400, "invalid_request_error", "image[0]"),
    ("image-bad-base64", _with(image=["data:image/png;base64,!!!notbase64"]), 400, "invalid_request_error",
     "image[0]"),
    ("image-not-base64", _with(image=["data:image/png,abc"]), 400, "invalid_request_error", "image[0]"),
    ("image-text-mime", _with(image=["data:text/plain;base64,aGVsbG8="]), 400, "invalid_request_error",
     "image[0]"),
    ("image-not-an-image", _with(image=["data:image/png;base64," + base64.b64encode(b"hello world").decode()]),
     400, "invalid_request_error", "image[0]"),
    ("image-second-bad", _with(image=[PNG_URL, "data:image/png;base64,AAAA"]), 400, "invalid_request_error",
     "image[1]"),
    ("mask-without-image", _with(mask=data_url(Image.new("RGBA", (64, 64)))), 400, "invalid_request_error",
     "mask"),
    ("mask-jpeg", _with(image=[PNG_URL], mask=data_url(RGB_64, "JPEG")), 400, "invalid_request_error", "mask"),
    ("mask-no-alpha", _with(image=[PNG_URL], mask=data_url(RGB_64)), 400, "invalid_request_error", "mask"),
    ("mask-size-mismatch", _with(image=[PNG_URL], mask=data_url(Image.new("RGBA", (32, 32)))), 400,
     "invalid_request_error", "mask"),
    ("mask-not-string", _with(image=[PNG_URL], mask={"url": "x"}), 400, "invalid_request_error", "mask"),
]


@pytest.mark.parametrize("body,status,etype,param", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_requests_are_refused_with_an_envelope(client, sim, body, status, etype, param):
    r = post(client, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) >= {"message", "type"}
    assert err["type"] == etype
    assert err.get("param") == param
    assert isinstance(err["message"], str) and err["message"]
    assert sim.charges == []


def test_unknown_field_is_named_in_the_message(client):
    err = post(client, _with(style="vivid")).json()["error"]
    assert "style" in err["message"]
    assert err["code"] == "unknown_parameter"


def test_other_gateway_models_judge_gpt_fields_by_their_own_schema(client):
    # Every gateway model is served (tests/test_simulator_models.py); gpt-image-2's fields are
    # unknown parameters to the models that lack them, named with the model.
    for model in OTHER_MODELS:
        err = post(client, _with(model=model, background="opaque")).json()["error"]
        assert err["code"] == "unknown_parameter" and err["param"] == "background"
        assert model in err["message"] and "'background'" in err["message"]


@pytest.mark.parametrize("raw,ctype", [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"", "application/json"),
    (b"\xff\xfe", "application/json"),
    (json.dumps(GOOD).encode(), "multipart/form-data; boundary=x"),
    (json.dumps(GOOD).encode(), "application/x-www-form-urlencoded"),
])
def test_bad_bodies_are_400(client, raw, ctype):
    r = client.post("/images/generations", content=raw, headers={"Content-Type": ctype})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_valid_variants_are_accepted(client):
    ok = [
        _with(n=4, size="1536x1024", quality="low", background="opaque", output_format="webp"),
        _with(size="1024x1536", quality="high", output_format="jpeg"),
        _with(size="2048x2048", quality="auto", background="auto"),
        _with(prompt="x" * MAX_PROMPT_CHARS),
        _with(image=["https://example.com/cat.png", "http://example.com/dog.jpg"]),
        _with(image=[PNG_URL, data_url(RGB_64, "JPEG"), data_url(RGB_64, "WEBP")]),
        _with(image=[PNG_URL], mask=data_url(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))),
        _with(image=[PNG_URL], mask=data_url(Image.new("LA", (64, 64)))),
        _with(image=["https://example.com/cat.png"], mask="https://example.com/mask.png"),
        _with(**{"async": False, "timeout": 60}),  # timeout without async: accepted, ignored
        _with(**{"async": False}),
    ]
    for body in ok:
        r = post(client, body)
        assert r.status_code == 200, (body.keys(), r.text)


def test_data_url_with_line_breaks_is_accepted(client):
    b64 = PNG_URL.split(",", 1)[1]
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    assert post(client, _with(image=["data:image/png;base64," + wrapped])).status_code == 200


# --------------------------------------------------------------------------- sync answers


@pytest.mark.parametrize("fields,size,quality", [
    ({}, "1024x1024", "medium"),
    ({"n": 3, "quality": "low", "size": "1536x1024"}, "1536x1024", "low"),
    ({"quality": "high", "size": "2048x2048", "n": 2}, "2048x2048", "high"),
])
def test_sync_answer_shape_and_cost_model(client, sim, fields, size, quality):
    body = _with(**fields)
    r = post(client, body)
    assert r.status_code == 200
    out = r.json()
    assert set(out) == {"created", "data", "usage", "credit"}
    n = fields.get("n", 1)
    assert isinstance(out["created"], int)
    assert len(out["data"]) == n and all(set(d) == {"url"} for d in out["data"])
    assert all(d["url"].startswith(sim.files_base + "/files/img_") for d in out["data"])
    in_t = pricing.input_tokens(body["prompt"], 0)
    out_t = pricing.output_tokens(quality, size, n)
    assert out["usage"] == {"input_tokens": in_t, "output_tokens": out_t, "total_tokens": in_t + out_t}
    assert out["credit"] == pricing.credits_for_tokens(in_t, out_t)
    assert out["credit"] == pricing.estimate_credit(prompt=body["prompt"], n=n, size=fields.get("size", "auto"),
                                                    quality=fields.get("quality", "auto"))
    (charge,) = sim.charges
    assert charge["credit"] == out["credit"] and charge["images"] == n and charge["task_id"] is None
    assert sim.total_credit == out["credit"]


def test_reference_images_add_input_tokens(client):
    out = post(client, _with(image=[PNG_URL, "https://example.com/x.png"])).json()
    assert out["usage"]["input_tokens"] == pricing.input_tokens(GOOD["prompt"], 2)


def test_urls_are_on_the_files_host_and_download(client, sim):
    out = post(client, _with(n=2, size="1024x1024", output_format="jpeg")).json()
    for d in out["data"]:
        url = httpx.URL(d["url"])
        assert url.host == "files.shark-sim.invalid"
        assert {"expires", "sig"} <= set(url.params.keys())
        r = client.get(d["url"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        assert int(r.headers["content-length"]) == len(r.content)
        assert Image.open(io.BytesIO(r.content)).size == (1024, 1024)
    assert sim.requests["download"] == 2 and sim.requests["post"] == 1


def test_download_with_the_api_key_is_refused_and_counted(client, sim):
    url = post(client).json()["data"][0]["url"]
    r = client.get(url, headers={"Authorization": "Bearer sk-secret"})
    assert r.status_code == 400
    assert b"InvalidArgument" in r.content and b"sk-secret" not in r.content
    assert sim.auth_leaks == 1
    lenient = Simulator(latency=0, reject_download_auth=False)
    with make_client(lenient) as c:
        url = post(c).json()["data"][0]["url"]
        assert c.get(url, headers={"x-api-key": "k"}).status_code == 200
        assert lenient.auth_leaks == 1


def test_omit_credit_and_usage(sim):
    s = Simulator(latency=0, omit_credit=True, omit_usage=True)
    with make_client(s) as c:
        out = post(c).json()
    assert "credit" not in out and "usage" not in out
    (charge,) = s.charges
    assert charge["reported"] is False and charge["credit"] > 0


def test_b64_json_response_format():
    s = Simulator(latency=0, response_format="b64_json")
    with make_client(s) as c:
        out = post(c, _with(output_format="webp", size="1024x1024")).json()
    (item,) = out["data"]
    assert set(item) == {"b64_json"}
    img = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert img.format == "WEBP" and img.size == (1024, 1024)


def test_sync_post_is_delayed_by_latency_and_polls_are_not():
    s = Simulator(latency=2.5, task_pending=0)
    resp = s.handle("POST", s.api_base + "/images/generations", {"content-type": "application/json"},
                    json.dumps(GOOD).encode())
    assert resp.status == 200 and resp.delay == pytest.approx(2.5)
    task = s.handle("POST", s.api_base + "/images/generations", {},
                    json.dumps(_with(**{"async": True})).encode())
    assert task.status == 202 and task.delay == 0
    poll = s.handle("GET", task.json()["polling_url"], {}, b"")
    assert poll.status == 200 and poll.delay == 0


def test_moderation_token():
    s = Simulator(latency=0)
    with make_client(s) as c:
        r = post(c, _with(prompt="a cat [moderate] please"))
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "content_moderation"
        r = post(c, _with(prompt="[MODERATE]", **{"async": True}))
        assert r.status_code == 400 and r.json()["error"]["type"] == "content_moderation"
    assert s.charges == []


# --------------------------------------------------------------------------- auth, tracing, credits


def test_auth_rules():
    s = Simulator(latency=0, allow_anonymous=False)
    with make_client(s) as c:
        r = post(c)
        assert r.status_code == 401 and r.json()["error"]["type"] == "auth_error"
        assert post(c, headers={"Authorization": "Bearer sk-anything"}).status_code == 200
        assert post(c, headers={"Authorization": "Bearer <api-key>"}).status_code == 200
        assert post(c, headers={"x-api-key": "sk-other"}).status_code == 200
        for bad in ({"Authorization": "Bearer sk-invalid"}, {"x-api-key": "sk-invalid"},
                    {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
            r = post(c, headers=bad)
            assert r.status_code == 401, bad
            assert r.json()["error"]["type"] == "auth_error"
            assert "sk-invalid" not in r.text
        # polls and the model list need a key too
        assert c.get("/models").status_code == 401
        assert c.get("/models", headers={"x-api-key": "k"}).status_code == 200


def test_invalid_key_is_refused_even_when_anonymous_is_allowed(client):
    r = post(client, headers={"Authorization": "Bearer sk-invalid"})
    assert r.status_code == 401


def test_tracing_id_is_echoed_and_recorded(client, sim):
    r = post(client, headers={"X-Tracing-ID": "trace-123"})
    assert r.headers["x-tracing-id"] == "trace-123"
    r2 = post(client)
    generated = r2.headers["x-tracing-id"]
    assert uuid.UUID(generated).version == 4
    assert [c["tracing_id"] for c in sim.charges] == ["trace-123", generated]
    # errors echo it too
    r3 = post(client, _with(n=9), headers={"X-Tracing-ID": "t-err"})
    assert r3.status_code == 400 and r3.headers["x-tracing-id"] == "t-err"


def test_user_credit_ceiling(client, sim):
    cost = pricing.estimate_credit(prompt=GOOD["prompt"])
    r = post(client, headers={"X-App-User-Credits": str(cost - 0.01)})
    assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_credits"
    assert post(client, headers={"X-App-User-Credits": str(cost)}).status_code == 200
    assert post(client, headers={"X-App-User-Credits": "lots"}).status_code == 400
    assert len(sim.charges) == 1


def test_account_balance():
    cost = pricing.estimate_credit(prompt=GOOD["prompt"])
    s = Simulator(latency=0, balance=cost * 1.5)
    with make_client(s) as c:
        assert post(c).status_code == 200
        assert s.balance == pytest.approx(cost * 0.5)
        r = post(c)
        assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_credits"
    assert len(s.charges) == 1


# --------------------------------------------------------------------------- routes


def test_models_list(client):
    out = client.get("/models").json()
    assert out["object"] == "list"
    ids = [m["id"] for m in out["data"]]
    assert ids[0] == MODEL and set(OTHER_MODELS) <= set(ids)
    assert all(m["object"] == "model" for m in out["data"])
    assert client.get(f"/models/{MODEL}").json()["id"] == MODEL
    r = client.get("/models/acme/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "model_not_found"


def test_unknown_routes_and_methods(client, sim):
    assert client.get("/nothing/here").status_code == 404
    assert client.get("/images/generations").status_code == 405
    assert client.delete("/images/generations/task_x").status_code == 405
    r = client.get("/images/generations/task_doesnotexist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
    assert client.post("/images/generations/task_nope/cancel").status_code == 404
    assert sim.requests["other"] == 3


def test_request_log_elides_data_urls(client, sim):
    post(client, _with(image=[PNG_URL]), headers={"X-Tracing-ID": "t1"})
    entry = sim.log[-1]
    assert entry["route"] == "post" and entry["status"] == 200 and entry["tracing_id"] == "t1"
    assert entry["json"]["image"][0].startswith("data:image/png;base64,<")
    assert entry["json"]["prompt"] == GOOD["prompt"]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        SimulatorConfig(task_result_shape="nope")
    with pytest.raises(ValueError):
        SimulatorConfig(status_spelling={"done": "x"})
    with pytest.raises(ValueError):
        SimulatorConfig(cancel_running="maybe")


def test_extra_fields_can_be_tolerated():
    s = Simulator(latency=0, extra_fields=("user",))
    with make_client(s) as c:
        assert post(c, _with(user="u1")).status_code == 200
        assert post(c, _with(style="x")).status_code == 400


def test_env_latency_default(monkeypatch):
    monkeypatch.setenv("SHARK_SIM_LATENCY", "1.75")
    assert SimulatorConfig().latency == 1.75
    monkeypatch.setenv("SHARK_SIM_LATENCY", "bogus")
    assert SimulatorConfig().latency == 0.05
    monkeypatch.delenv("SHARK_SIM_LATENCY")
    assert SimulatorConfig().latency == 0.05


# --------------------------------------------------------------------------- transports


def test_in_process_read_timeout_still_charges():
    s = Simulator(latency=0.5)
    with make_client(s, timeout=httpx.Timeout(5, read=0.05)) as c:
        with pytest.raises(httpx.ReadTimeout):
            post(c)
    assert len(s.charges) == 1  # the server did the work: the outcome is unknown to the client


def test_async_transport_runs_handler_off_the_loop():
    s = Simulator(latency=0.01)
    threads: list[threading.Thread] = []
    original = s.handle

    def spy(*a, **kw):
        threads.append(threading.current_thread())
        return original(*a, **kw)

    s.handle = spy  # type: ignore[method-assign]

    async def main():
        async with httpx.AsyncClient(transport=AsyncSimulatorTransport(s), base_url=s.api_base) as c:
            rs = await asyncio.gather(*[c.post("/images/generations", json=GOOD) for _ in range(8)])
            assert all(r.status_code == 200 for r in rs)
            img = await c.get(rs[0].json()["data"][0]["url"])
            assert img.status_code == 200 and img.content[:8] == b"\x89PNG\r\n\x1a\n"
            return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert threads and all(t is not loop_thread for t in threads)
    assert len(s.charges) == 8


def test_transport_default_simulator():
    t = SimulatorTransport()
    assert isinstance(t.sim, Simulator)
    with httpx.Client(transport=t, base_url=t.sim.api_base) as c:
        assert c.get("/models").status_code == 200
