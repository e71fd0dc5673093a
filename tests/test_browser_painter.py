"""The mask painter in a real browser: JupyterLab in headless Chromium on a 2x device-scale page
shows ``shark_nb.MaskPainter`` over a 2048x2048 image; the mouse draws a long stroke across it,
one segment of it outside the canvas (pointer capture keeps it coming; the canvas clips it);
then the kernel's ``painter.mask`` is read and checked pixel by pixel at the image's own size:
transparent under the stroke, opaque elsewhere — including along the edge the stroke left by.
Undo gives a fully opaque mask back. A stroke painted from Python shows in the page.

Measured (printed; ``pytest -s``): the messages the browser sent to the kernel during the stroke
(counted twice: comm messages reaching the widget in the kernel, and websocket frames the page
sent) — the goal is 0 — and the time from mouse-up to the mask in the kernel.

Same harness as test_browser_studio.py (skipped without playwright / Chromium, failed in CI).
The screenshot goes to the test's tmp folder; ``SHARK_NB_SCREENSHOT_PAINTER=docs/painter.png``
refreshes the one in the docs.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_harness import LOAD_TIMEOUT, JupyterLab, chromium, lab_with_notebook, open_notebook, run_cell
from test_browser_studio import MAX_SCREENSHOT_BYTES
from test_browser_studio import _save_screenshot as save_screenshot

SIDE = int(os.environ.get("SHARK_NB_PAINTER_SIDE", "2048"))   # 4096 to measure a big image by hand
BRUSH = 96                      # image pixels
SCREENSHOT_ENV = os.environ.get("SHARK_NB_SCREENSHOT_PAINTER")
#: Image pixels of tolerance around the stroke's rim (a CSS pixel is ~2.5 image pixels here,
#: and the brush's edge is anti-aliased).
RIM = 6

CELL = f"""\
import time, shark_nb
from PIL import Image, ImageDraw
S = {SIDE}
ref = Image.new("RGB", (S, S), "#8ecae6")
d = ImageDraw.Draw(ref)
d.rectangle([0, 1280, S, S], fill="#219ebc")
d.ellipse([520, 1120, 1560, 1520], fill="#e9c46a")
d.rectangle([880, 940, 1160, 1200], fill="#f4f1de")
d.polygon([(840, 960), (1020, 800), (1200, 960)], fill="#e76f51")
d.ellipse([1400, 240, 1760, 600], fill="#ffb703")
painter = shark_nb.MaskPainter(ref, brush_size={BRUSH})
stamps, comm_msgs = [], []
painter.observe(lambda change: stamps.append(time.time()), names="mask_png")
_on_msg = painter.comm._msg_callback
def _counted(msg):
    comm_msgs.append(time.time())
    return _on_msg(msg)
painter.comm.on_msg(_counted)
painter
"""


@pytest.fixture
def lab(tmp_path):
    with lab_with_notebook(tmp_path, "painter.ipynb", CELL) as server:
        yield server


class Kernel:
    """A second client of the notebook's own kernel (its connection file is in the server's
    runtime folder), to read the painter's state as the kernel sees it."""

    def __init__(self, lab: JupyterLab) -> None:
        from jupyter_client import BlockingKernelClient

        (kernel,) = lab.kernels()
        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(lab.workdir / "jupyter" / "runtime" / f"kernel-{kernel['id']}.json"))
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def run(self, code: str, expr: str = "None") -> object:
        msg_id = self.client.execute(code, silent=True, user_expressions={"out": f"__import__('json').dumps({expr})"})
        while True:
            reply = self.client.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        assert content["status"] == "ok", content
        result = content["user_expressions"]["out"]
        assert result["status"] == "ok", result
        return json.loads(eval(result["data"]["text/plain"]))  # noqa: S307 - a repr of a str we made

    def wait(self, expr: str, timeout: float = 30.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.run("", expr)
            if value:
                return value
            time.sleep(0.02)
        raise TimeoutError(f"the kernel never had {expr}")

    def close(self) -> None:
        self.client.stop_channels()


def stroke_distance(points: list[tuple[float, float]], side: int) -> np.ndarray:
    """Each pixel centre's distance (image pixels) to the polyline through ``points``."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    best = np.full((side, side), np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in zip(points, points[1:]):
        dx, dy = bx - ax, by - ay
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        np.minimum(best, np.hypot(xs - (ax + t * dx), ys - (ay + t * dy)), out=best)
    return best


def test_paint_a_mask_with_the_mouse_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect

    assert "anywidget" in lab.federated_extensions(), "anywidget's lab extension is not on the server's data path"
    console: list[str] = []
    frames: list[float] = []
    with chromium(viewport=(1280, 1100), device_scale_factor=2) as (_browser, page):
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.on("websocket", lambda ws: ws.on("framesent", lambda _payload: frames.append(time.time())))
        kernel = None
        try:
            cell = open_notebook(page, lab, "painter.ipynb")
            run_cell(page, cell)
            root = page.locator(".shark-painter")
            error = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"], '
                                 '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
            expect(root.or_(error).first).to_be_visible(timeout=LOAD_TIMEOUT)
            assert not error.count(), error.first.inner_text()
            expect(root).to_have_attribute("data-ready", "true", timeout=LOAD_TIMEOUT)
            page.wait_for_function("() => { const i = document.querySelector('.shark-painter img');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=LOAD_TIMEOUT)
            kernel = Kernel(lab)
            assert kernel.run("", "painter.size") == [SIDE, SIDE]

            # --- the visible canvas is fit to the page and sized for the device pixel ratio
            overlay = root.locator("canvas.shark-painter-overlay")
            overlay.scroll_into_view_if_needed()
            page.mouse.move(5, 5)
            box = overlay.bounding_box()
            assert box and box["width"] < SIDE / 2          # shown reduced: fit to width
            dims = page.evaluate("() => { const c = document.querySelector('canvas.shark-painter-overlay');"
                                 " return [c.width, c.height, window.devicePixelRatio]; }")
            assert dims[2] == 2 and abs(dims[0] - 2 * box["width"]) <= 1 and abs(dims[1] - 2 * box["height"]) <= 1
            viewport = page.viewport_size
            assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (box, viewport)

            # --- a long stroke, one segment of it outside the canvas (beyond the right edge)
            scale = SIDE / box["width"]
            x0, y0 = box["x"], box["y"]

            def css(ix: float, iy: float) -> tuple[float, float]:
                return x0 + ix / scale, y0 + iy / scale

            outside = SIDE + 2 * BRUSH                     # past the edge, brush and all
            path = [(300, 700), (outside, 700), (outside, 1400), (1100, 1400)]
            page.mouse.move(*css(*path[0]))
            stamps_before = kernel.run("", "len(stamps)")
            t_down = time.time()
            page.mouse.down()
            moves = 0
            for (ax, ay), (bx, by) in zip(path, path[1:]):
                steps = 80
                for k in range(1, steps + 1):
                    page.mouse.move(*css(ax + (bx - ax) * k / steps, ay + (by - ay) * k / steps))
                    moves += 1
            t_up = time.time()
            page.mouse.up()
            kernel.wait(f"len(stamps) > {stamps_before}")
            arrived = kernel.run("", f"stamps[{stamps_before}]")
            latency_ms = (arrived - t_up) * 1000
            comm_during = kernel.run("", f"sum({t_down} <= t < {t_up} for t in comm_msgs)")
            comm_after = kernel.run("", f"sum(t >= {t_up} for t in comm_msgs)")
            frames_during = sum(t_down <= t < t_up for t in frames)

            # --- the mask in the kernel, at the image's own size
            mask_path = tmp_path / "mask.png"
            kernel.run(f"open({str(mask_path)!r}, 'wb').write(painter.mask_png)")
            mask = Image.open(mask_path)
            assert mask.size == (SIDE, SIDE) and mask.mode == "RGBA"
            a = np.asarray(mask.getchannel("A"))
            dist = stroke_distance(path, SIDE)
            under, away = dist <= BRUSH / 2 - RIM, dist >= BRUSH / 2 + RIM
            assert under.sum() > 100_000 and (a[under] == 0).all(), f"{(a[under] != 0).sum()} pixels under the stroke kept"
            assert (a[away] == 255).all(), f"{(a[away] != 255).sum()} pixels away from the stroke painted"
            # the stroke reaches the very edge where it left and came back, and the part drawn
            # outside never leaks in along the edge
            assert a[700, SIDE - 1] == 0 and a[1400, SIDE - 1] == 0
            assert (a[700 + BRUSH:1400 - BRUSH, SIDE - 8:] == 255).all()

            # --- brush size from the keyboard: ] grows it (the page has the focus)
            size_text = root.locator(".shark-painter-size span")
            expect(size_text).to_have_text(f"{BRUSH} px")
            page.keyboard.press("]")
            expect(size_text).to_have_text(f"{round(BRUSH * 1.25)} px")
            kernel.wait(f"painter.brush_size == {round(BRUSH * 1.25)}")
            page.keyboard.press("[")
            expect(size_text).to_have_text(f"{BRUSH} px")

            # --- undo: the mask in the kernel is fully opaque again
            n = kernel.run("", "len(stamps)")
            root.locator("button.shark-painter-undo").click()
            kernel.wait(f"len(stamps) > {n}")
            kernel.wait("painter.painted == 0")
            expect(root.locator("button.shark-painter-undo")).to_be_disabled()
            expect(root.locator("button.shark-painter-redo")).to_be_enabled()

            # --- a stroke from Python shows in the page (read back from the overlay canvas)
            kernel.run("painter.paint_ellipse((1380, 220, 1780, 620))")
            page.wait_for_function(
                "() => { const c = document.querySelector('canvas.shark-painter-overlay');"
                f" const x = Math.round(c.width * 1580 / {SIDE}), y = Math.round(c.height * 420 / {SIDE});"
                " return c.getContext('2d').getImageData(x, y, 1, 1).data[3] > 200; }", timeout=15_000)

            # --- the screenshot: a brush stroke around the house as well
            page.mouse.move(*css(1020 + 250, 1010))
            page.mouse.down()
            for k in range(1, 41):
                angle = 2 * np.pi * k / 40
                page.mouse.move(*css(1020 + 250 * np.cos(angle), 1010 + 230 * np.sin(angle)))
            page.mouse.up()
            kernel.wait(f"len(stamps) > {n + 2}")
            page.mouse.move(*css(1250, 900))                # the brush ring, on the image
            shot = Path(SCREENSHOT_ENV) if SCREENSHOT_ENV else tmp_path / "painter.png"
            shot_bytes = save_screenshot(root.screenshot(animations="disabled"), shot)
            assert shot_bytes < MAX_SCREENSHOT_BYTES
        except BaseException:
            try:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            except Exception:  # noqa: BLE001
                pass
            print(f"failure screenshot: {tmp_path / 'failure.png'}")
            print("browser console:\n" + "\n".join(console[-40:]))
            print("server log:\n" + lab.log_tail())
            raise
        finally:
            if kernel is not None:
                kernel.close()

    print(f"\nstroke: {moves} mouse moves over {t_up - t_down:.2f} s on a {SIDE}x{SIDE} image, 2x page"
          f"\n  messages to the kernel during the stroke: {comm_during} comm messages, "
          f"{frames_during} websocket frames sent by the page"
          f"\n  after mouse-up: {comm_after} comm message(s); mask in the kernel {latency_ms:.0f} ms after mouse-up"
          f"\n  screenshot: {shot} ({shot_bytes} bytes)")
    assert comm_during == 0 and frames_during == 0
    assert latency_ms < 5000
    assert not [c for c in console if re.search(r"shark|painter|anywidget", c, re.I)], console
