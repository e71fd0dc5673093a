"""Image synthesis: sizes, formats, determinism, realistic file sizes, edits, the render cache."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from shark_nb.params import MODEL
from shark_nb.simulator import Simulator, SimulatorTransport
from shark_nb.simulator.render import RenderCache, RenderSpec, parse_size, render, seed_for


def spec(prompt="a fox in the snow", size="1024x1024", fmt="png", quality="auto", index=0, n=1, **kw) -> RenderSpec:
    seed = seed_for(model=MODEL, prompt=prompt, size=size, quality=quality, background="auto",
                    output_format=fmt, index=index)
    return RenderSpec(seed=seed, prompt=prompt, size=size, output_format=fmt, quality=quality, index=index, n=n,
                      **kw)


def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("size,fmt,pil_format,dims", [
    ("auto", "png", "PNG", (1024, 1024)),
    ("1536x1024", "jpeg", "JPEG", (1536, 1024)),
    ("1024x1536", "webp", "WEBP", (1024, 1536)),
])
def test_size_and_format(size, fmt, pil_format, dims):
    img = open_image(render(spec(size=size, fmt=fmt)))
    assert img.format == pil_format
    assert img.size == dims
    assert img.mode == "RGB"


def test_2048_png():
    data = render(spec(size="2048x2048", quality="high"))
    img = open_image(data)
    assert img.size == (2048, 2048)
    assert len(data) > 3_000_000


def test_1024_png_is_photo_sized():
    data = render(spec())
    assert len(data) > 800_000
    t0 = time.perf_counter()
    render(spec(prompt="another prompt entirely"))
    assert time.perf_counter() - t0 < 5  # generous; about 0.15 s on 2 cores


def test_deterministic_and_different_per_index_and_prompt():
    a = render(spec(index=0, n=2))
    assert render(spec(index=0, n=2)) == a
    b = render(spec(index=1, n=2))
    c = render(spec(prompt="a whale in the sky", index=0, n=2))
    pa, pb, pc = (np.asarray(open_image(x), dtype=np.int16) for x in (a, b, c))
    # visibly different: a large mean absolute difference, not just grain
    assert np.abs(pa - pb).mean() > 15
    assert np.abs(pa - pc).mean() > 15


def test_seed_covers_every_field():
    base = dict(model=MODEL, prompt="p", size="auto", quality="auto", background="auto", output_format="png",
                index=0)
    seeds = {seed_for(**base)}
    for k, v in [("model", "m"), ("prompt", "q"), ("size", "1024x1024"), ("quality", "low"),
                 ("background", "opaque"), ("output_format", "webp"), ("index", 1)]:
        seeds.add(seed_for(**{**base, k: v}))
    seeds.add(seed_for(**base, inputs="abc"))
    assert len(seeds) == 9


def test_prompt_band_and_long_prompts():
    img = np.asarray(open_image(render(spec(prompt="word " * 2000, fmt="jpeg"))), dtype=np.float32)
    assert img.shape == (1024, 1024, 3)
    # the translucent band darkens the bottom rows relative to an unbanded render's average
    bottom = img[-20:].mean()
    assert bottom < 140
    open_image(render(spec(prompt="x" * 500 + " émoji ✨ 漢字", fmt="png")))  # hard breaks, odd glyphs


def test_parse_size():
    assert parse_size("auto") == (1024, 1024)
    assert parse_size("1536x1024") == (1536, 1024)


def test_same_request_same_bytes_through_the_simulator():
    sim = Simulator(latency=0)
    with httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base) as c:
        body = {"model": MODEL, "prompt": "twin images", "n": 2, "output_format": "jpeg"}
        u1 = [d["url"] for d in c.post("/images/generations", json=body).json()["data"]]
        u2 = [d["url"] for d in c.post("/images/generations", json=body).json()["data"]]
        assert u1 != u2  # distinct image ids and URLs...
        b1 = [c.get(u).content for u in u1]
        b2 = [c.get(u).content for u in u2]
        assert b1 == b2  # ...but the same pictures
        assert b1[0] != b1[1]
    assert sim.cache.misses == 2 and sim.cache.hits == 2


def test_edit_with_mask_keeps_the_opaque_area():
    red = Image.new("RGB", (256, 256), (220, 20, 20))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 128, 256))  # left half transparent: repaint it

    def url(img):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    sim = Simulator(latency=0)
    with httpx.Client(transport=SimulatorTransport(sim), base_url=sim.api_base) as c:
        r = c.post("/images/generations", json={"model": MODEL, "prompt": "paint the left", "image": [url(red)],
                                                "mask": url(mask), "size": "1024x1024"})
        assert r.status_code == 200, r.text
        out = np.asarray(open_image(c.get(r.json()["data"][0]["url"]).content), dtype=np.float32)
    right = out[150:600, 700:950].mean(axis=(0, 1))
    left = out[150:600, 50:400].mean(axis=(0, 1))
    assert right[0] > 170 and right[1] < 70 and right[2] < 70  # kept: still red
    assert np.abs(left - right).sum() > 60  # repainted


def test_cache_is_bounded_and_renders_once():
    calls = []
    gate = threading.Event()

    def slow_render(s: RenderSpec) -> bytes:
        calls.append(s.seed)
        gate.wait(2)
        return bytes(100)

    cache = RenderCache(max_bytes=250, renderer=slow_render)
    s1 = spec(prompt="one")
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(s1))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    assert calls == [s1.seed] and len(results) == 8
    cache.get(spec(prompt="two"))
    cache.get(spec(prompt="three"))
    assert cache.size_bytes <= 250 and len(cache) == 2
    assert cache.peek(s1.cache_key) is None  # the oldest was evicted
