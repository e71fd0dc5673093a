"""Issue 9's "done when": against the simulator served as a real loopback HTTP server, each of
the five models is called from the client, the magic and the studio with its own fields, and the
body that reached the server holds exactly that model's fields; each model's bad values are
refused before anything is sent; the comparison grid works from Python and from the magic."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shark_nb import BudgetExceededError, Shark, ValidationError
from shark_nb.ledger import Ledger
from shark_nb.simulator import Simulator, serve_in_thread
from shell_harness import magic_shell

KEY = "sk-e2e-Z9y8X7w6V5u4"
GPT, GEMINI, SEEDREAM, MJ, GROK = ("openai/gpt-image-2", "google/gemini-3.1-flash-image-preview",
                                   "bytedance/seedream-v4.5", "midjourney/text-to-image",
                                   "x-ai/grok-imagine-image/edit")
STYLE = "https://example.test/style.png"


def _png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(Simulator(latency=0.01)) as handle:
        yield handle


@pytest.fixture
def client(server, tmp_path):
    c = Shark(api_key=KEY, base_url=server.base_url, ledger=Ledger(tmp_path / "ledger.jsonl"), poll_interval=0.05)
    server.sim.log.clear()
    yield c
    c.close()


def posted(server) -> list[dict]:
    return [e["json"] for e in list(server.sim.log) if e.get("json") is not None]


# (model, fields given, the body the server must receive) — each model with its own fields
CALLS = [
    (GPT, dict(n=2, size="1024x1024", quality="low", background="opaque", output_format="webp"),
     {"model": GPT, "prompt": "a red fox", "n": 2, "size": "1024x1024", "quality": "low",
      "background": "opaque", "output_format": "webp"}),
    ("gemini", dict(n=2, aspect_ratio="16:9", image_size="1K", seed=7),
     {"model": GEMINI, "prompt": "a red fox", "n": 2, "seed": 7, "image_size": "1K", "aspect_ratio": "16:9"}),
    ("seedream", dict(size="1024*768"),
     {"model": SEEDREAM, "prompt": "a red fox", "size": "1024*768"}),
    ("mj", dict(aspect_ratio="3:2", version=6.1, quality="0.5", stylize=250, chaos=5, seed=3, sref=STYLE),
     {"model": MJ, "prompt": "a red fox", "aspect_ratio": "3:2", "version": "6.1", "quality": "0.5",
      "stylize": 250, "chaos": 5, "seed": 3, "sref": STYLE}),
]


@pytest.mark.parametrize("model, fields, body", CALLS, ids=["gpt-image-2", "gemini", "seedream", "midjourney"])
@pytest.mark.parametrize("wait", ["sync", "task"])
def test_the_client_sends_each_model_exactly_its_own_fields(client, server, model, fields, body, wait):
    result = client.generate("a red fox", model=model, wait=wait, **fields)
    sent = posted(server)[-1]
    expected = dict(body, **({"async": True, "timeout": 300} if wait == "task" else {}))
    assert sent == expected
    assert result.request.model == body["model"] and len(result.images) == body.get("n", 1)
    assert result.credit is not None and client.ledger.records[-1]["credit"] == result.credit


def test_the_client_sends_grok_edit_its_one_required_image(client, server):
    result = client.generate("make it night", model="grok-edit", image=_png((80, 60)))
    (sent,) = posted(server)
    assert set(sent) == {"model", "prompt", "image"} and sent["model"] == GROK
    assert isinstance(sent["image"], str) and sent["image"].startswith("data:image/png;base64,")
    assert result.images[0].size == (80, 60)  # the simulator edits at the reference's own size


@pytest.mark.parametrize("model, fields, fragment", [
    (GPT, dict(size="1024*1024"), "size='1024*1024'"),
    (GPT, dict(aspect_ratio="16:9"), "gpt-image-2 has no aspect_ratio"),
    ("gemini", dict(size="1024x1024"), "gemini has no size"),
    ("gemini", dict(aspect_ratio="5:3"), "aspect_ratio='5:3'"),
    ("gemini", dict(n=5), "n=5"),
    ("seedream", dict(size="1024x1024"), "did you mean '1024*1024'"),
    ("seedream", dict(n=2), "seedream has no n"),
    ("midjourney", dict(stylize=1001), "stylize=1001"),
    ("midjourney", dict(version="6.2"), "did you mean '6.1'"),
    ("midjourney", dict(output_format="png"), "midjourney has no output_format"),
    ("grok-edit", {}, "image= is required"),
])
def test_each_models_bad_values_are_refused_before_sending(client, server, model, fields, fragment):
    with pytest.raises(ValidationError) as info:
        client.generate("a red fox", model=model, **fields)
    assert fragment in str(info.value)
    assert posted(server) == [] and client.ledger.calls == 0


def test_compare_from_python_over_the_server(client, server):
    grid = client.compare("a red fox", models={"gpt-image-2": {"quality": "low", "size": "1024x1024"},
                                               "gemini": {"aspect_ratio": "1:1"}, "seedream": {}})
    assert grid.labels == ["gpt-image-2", "gemini", "seedream"] and grid.failures == 0
    assert sorted(b["model"] for b in posted(server)) == sorted([GPT, GEMINI, SEEDREAM])
    html = grid._repr_html_()
    assert html.count("<img") == 3 and "gemini" in html and "credit" in html
    vary = client.compare("a red fox", model="gpt-image-2", vary={"quality": ["low", "medium"]}, size="1024x1024")
    assert vary.labels == ["quality=low", "quality=medium"]
    assert [r.request.settings["quality"] for r in vary.results] == ["low", "medium"]


def test_a_failing_cell_stays_in_its_place(client, server):
    from shark_nb import ContentModerationError

    server.sim.inject("post", "status", count=1, status=400, type="content_moderation",
                      message="blocked by the safety system")
    grid = client.compare("a red fox", models={"gpt-image-2": {"quality": "low"}, "seedream": {}}, concurrency=1)
    assert grid.failures == 1
    assert isinstance(grid["gpt-image-2"], ContentModerationError)
    assert len(grid["seedream"].images) == 1
    html = grid._repr_html_()
    assert "ContentModerationError" in html and "blocked by the safety system" in html and html.count("<img") == 1


def test_the_budget_guards_the_whole_grid_before_anything_is_sent(client, server):
    one = client.estimate("a red fox", quality="high", size="2048x2048")
    client.ledger.budget = one * 1.5  # room for one cell, not two
    with pytest.raises(BudgetExceededError):
        client.compare("a red fox", model="gpt-image-2", vary={"quality": ["high", "high"]}, size="2048x2048")
    assert posted(server) == []


@pytest.fixture
def ip(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with magic_shell(client) as shell:
        yield shell


def _run(ip, cell: str):
    result = ip.run_cell(cell)
    return result


@pytest.mark.parametrize("line, body", [
    ("%shark --model gpt-image-2 -n 1 --size 1024x1024 --quality low a red fox",
     {"model": GPT, "prompt": "a red fox", "n": 1, "size": "1024x1024", "quality": "low", "background": "auto",
      "output_format": "png"}),
    ("%shark --model gemini --aspect-ratio 9:16 --image-size 1K a red fox",
     {"model": GEMINI, "prompt": "a red fox", "image_size": "1K", "aspect_ratio": "9:16"}),
    ("%shark --model seedream --size 768*1024 a red fox",
     {"model": SEEDREAM, "prompt": "a red fox", "size": "768*1024"}),
    ("%shark --model midjourney --version 7 --stylize 50 --niji close a red fox",
     {"model": MJ, "prompt": "a red fox", "version": "7", "stylize": 50, "niji": "close"}),
])
def test_the_magic_sends_each_model_exactly_its_own_fields(ip, server, line, body):
    result = _run(ip, line)
    assert result.success, result.error_in_exec
    assert posted(server)[-1] == body


def test_the_magic_compares_models_over_the_server(ip, server):
    result = _run(ip, "%shark compare --models gpt-image-2,gemini,seedream -o grid a red fox")
    assert result.success, result.error_in_exec
    grid = ip.user_ns["grid"]
    assert grid.labels == ["gpt-image-2", "gemini", "seedream"] and grid.failures == 0
    assert sorted(b["model"] for b in posted(server)) == sorted([GPT, GEMINI, SEEDREAM])


async def test_the_studio_sends_each_model_exactly_its_own_fields(server, tmp_path):
    from shark_nb.client import AsyncShark
    from shark_nb.widget import Studio

    aclient = AsyncShark(api_key=KEY, base_url=server.base_url, ledger=Ledger(tmp_path / "s.jsonl"),
                         poll_interval=0.05)
    studio = Studio(aclient)
    try:
        server.sim.log.clear()
        studio.prompt.value = "a red fox"
        studio.model.value = GEMINI
        studio.settings["aspect_ratio"].value = "21:9"
        studio.generate_button.click()
        await studio.wait()
        studio.model.value = SEEDREAM
        studio.settings["size"].value = "1536*1024"
        studio.generate_button.click()
        await studio.wait()
        gemini, seedream = posted(server)
        assert {k: v for k, v in gemini.items() if k not in ("async", "timeout")} == {
            "model": GEMINI, "prompt": "a red fox", "aspect_ratio": "21:9"}
        assert {k: v for k, v in seedream.items() if k not in ("async", "timeout")} == {
            "model": SEEDREAM, "prompt": "a red fox", "size": "1536*1024"}
        assert [r.request.model for r in studio.results] == [GEMINI, SEEDREAM]
    finally:
        studio.close()
        await aclient.aclose()
