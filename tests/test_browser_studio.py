"""The studio in a real browser: JupyterLab in headless Chromium opens a notebook, runs
``shark_nb.studio()``, types a prompt, picks a size and a count, clicks Generate, watches the
elapsed time tick, and sees the images and the cost. Then it picks Gemini in the model dropdown,
sees the controls change with the model (aspect ratio and image size appear, size and the mask
slot go), generates again and sees the new results. Takes a screenshot of the studio on each.

Runs on the offline simulator (no SHARK_API_KEY reaches the server), with ``SHARK_SIM_LATENCY=1``
so the running state is visible. Skipped when playwright or a system Chromium is missing —
except in CI (``CI`` set), where that is a failure: ``.ci/run`` installs Chromium.

The screenshots go to the test's tmp folder; ``SHARK_NB_SCREENSHOT=docs/studio.png`` and
``SHARK_NB_SCREENSHOT_GEMINI=docs/studio-gemini.png`` refresh the ones in the docs (runs never touch
the working tree otherwise);
``pytest -s`` prints the time each phase took.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest

from browser_harness import LOAD_TIMEOUT, chromium, lab_with_notebook, open_notebook, run_cell

PROMPT = "a lighthouse on a cliff at dusk, watercolour"
SIZE = "1536x1024"
N = 2
SCREENSHOT_ENV = os.environ.get("SHARK_NB_SCREENSHOT")
GEMINI_SCREENSHOT_ENV = os.environ.get("SHARK_NB_SCREENSHOT_GEMINI")
GEMINI = "google/gemini-3.1-flash-image-preview"
GEMINI_PROMPT = "a lighthouse on a cliff at dusk, ukiyo-e woodblock print"
MAX_SCREENSHOT_BYTES = 500_000

GENERATE_TIMEOUT = 60_000


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a folder that holds studio.ipynb; stopped (with its kernels) afterwards."""
    with lab_with_notebook(tmp_path, "studio.ipynb", "import shark_nb; s = shark_nb.studio(); s",
                           env={"SHARK_SIM_LATENCY": "1"}) as server:
        yield server


def _save_screenshot(png: bytes, target: Path) -> int:
    """Write the screenshot; over the size budget, re-encode it as a palette PNG (and shrink it
    until it fits)."""
    if len(png) > MAX_SCREENSHOT_BYTES:
        from PIL import Image

        img = Image.open(io.BytesIO(png)).convert("RGB")
        while True:
            buf = io.BytesIO()
            img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
            png = buf.getvalue()
            if len(png) <= MAX_SCREENSHOT_BYTES or img.width < 200:
                break
            img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    return len(png)


def test_studio_generates_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect

    import shark_nb
    from shark_nb import pricing, text

    assert "@jupyter-widgets/jupyterlab-manager" in lab.federated_extensions(), (
        "the ipywidgets lab extension (jupyterlab_widgets) is not on the isolated server's data path")

    timings: dict[str, float] = {}
    t0 = last = time.monotonic()

    def mark(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        timings[name] = now - last
        last = now

    console: list[str] = []
    with chromium(viewport=(1280, 1200)) as (_browser, page):
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            # --- open the notebook and wait for its kernel
            cell = open_notebook(page, lab, "studio.ipynb")
            mark("open notebook + kernel connected")

            # --- run the cell (Shift+Enter in its editor, as a user would)
            run_cell(page, cell)
            expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=15_000)
            studio = page.locator(".shark-studio")
            error = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
                                 ':has-text("Traceback"), .jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')
            expect(studio.or_(error).first).to_be_visible(timeout=LOAD_TIMEOUT)
            assert not error.count(), f"the cell failed:\n{error.first.inner_text()}"
            status = studio.locator(".shark-studio-status")
            expect(status).to_have_text(re.compile(r"^Ready"), timeout=LOAD_TIMEOUT)
            mark("run cell + studio rendered")

            # --- prompt, count, size
            estimate = studio.locator(".shark-studio-estimate")
            expect(estimate).to_contain_text("credit")
            prompt = studio.locator(".shark-studio-prompt textarea")
            prompt.click()
            prompt.fill(PROMPT)
            readout = studio.locator(".shark-studio-n .widget-readout")
            readout.fill(str(N))
            readout.press("Enter")
            expect(readout).to_have_text(str(N))
            studio.locator(".shark-studio-size select").select_option(SIZE)
            expected = pricing.estimate_credit(prompt=PROMPT, n=N, size=SIZE, quality="auto")
            # The estimate is computed in the kernel: seeing it proves prompt, n and size arrived.
            expect(estimate).to_contain_text(text.credit(expected), timeout=15_000)
            mark("prompt + n + size + estimate")

            # --- Generate: the running state, then the results
            generate = studio.locator("button.shark-studio-generate")
            cancel = studio.locator("button.shark-studio-cancel")
            generate.click()
            expect(status).to_have_text(re.compile(r"^(Sending|Generating).*· \d+(\.\d)? s$"), timeout=10_000)
            expect(generate).to_be_disabled()
            expect(cancel).to_be_enabled()
            running_text = status.inner_text()
            gallery = studio.locator(".shark-studio-gallery")
            expect(gallery.locator("img")).to_have_count(N, timeout=GENERATE_TIMEOUT)
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('.shark-studio-gallery img')];"
                " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                timeout=GENERATE_TIMEOUT)
            expect(status).to_have_text(re.compile(rf"^Done: {N} images in .*credit"), timeout=GENERATE_TIMEOUT)
            expect(generate).to_be_enabled()
            expect(cancel).to_be_disabled()
            mark("generate (simulator latency 1 s)")

            done_text = status.inner_text()
            credit = re.search(r"([\d,]+(?:\.\d+)?) credit \((\$[\d.,]+)\)", done_text)
            assert credit, done_text
            ledger = studio.locator(".shark-studio-ledger")
            expect(ledger).to_contain_text("1 call")
            expect(ledger).to_contain_text(f"{N} images")
            expect(ledger).to_contain_text(f"{credit.group(1)} credit ({credit.group(2)})")
            captions = gallery.inner_text()
            w, h = SIZE.split("x")
            assert captions.count(f"{w}×{h}") == N, captions
            assert PROMPT[:30] in captions, captions

            # --- the screenshot: the studio itself, mouse out of the way
            page.mouse.move(0, 0)
            studio.scroll_into_view_if_needed()
            shot_path = Path(SCREENSHOT_ENV) if SCREENSHOT_ENV else tmp_path / "studio.png"
            size = _save_screenshot(studio.screenshot(animations="disabled"), shot_path)
            assert size < MAX_SCREENSHOT_BYTES, size
            mark("checks + screenshot")

            # --- another model: the controls change with it
            menu = [spec.id for spec in shark_nb.models()]     # the dropdown's order
            studio.locator(".shark-studio-model select").select_option(index=menu.index(GEMINI))
            aspect = studio.locator(".shark-studio-aspect-ratio select")
            expect(aspect).to_be_visible(timeout=15_000)
            expect(studio.locator(".shark-studio-image-size select")).to_be_visible()
            expect(studio.locator(".shark-studio-size")).to_have_count(0)
            expect(studio.locator(".shark-studio-quality")).to_have_count(0)
            expect(studio.locator(".shark-studio-mask")).to_be_hidden()
            expect(studio.locator(".shark-studio-header")).to_contain_text(GEMINI)
            expect(readout).to_have_text(str(N))                  # n: shared, kept
            expect(prompt).to_have_value(PROMPT)                  # the prompt: kept
            expect(estimate).to_contain_text("unknown")           # no published price, none learned yet
            aspect.select_option("16:9")
            prompt.fill(GEMINI_PROMPT)
            expect(estimate).to_contain_text("unknown")
            generate.click()
            expect(gallery.locator("img")).to_have_count(2 * N, timeout=GENERATE_TIMEOUT)
            expect(status).to_have_text(re.compile(rf"^Done: {N} images in .*credit"), timeout=GENERATE_TIMEOUT)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.shark-studio-gallery img')]"
                ".every(i => i.complete && i.naturalWidth > 0)", timeout=GENERATE_TIMEOUT)
            expect(estimate).to_contain_text("learned from 1 call this session")
            expect(ledger).to_contain_text("2 calls")
            captions = gallery.inner_text()
            assert captions.count("gemini · 1024×576") == N, captions
            page.mouse.move(0, 0)
            gemini_path = Path(GEMINI_SCREENSHOT_ENV) if GEMINI_SCREENSHOT_ENV else tmp_path / "studio-gemini.png"
            gemini_size = _save_screenshot(studio.screenshot(animations="disabled"), gemini_path)
            assert gemini_size < MAX_SCREENSHOT_BYTES, gemini_size
            mark("gemini: controls change, generate, screenshot")
        except BaseException:
            with_failure = tmp_path / "failure.png"
            try:
                page.screenshot(path=str(with_failure), full_page=True)
            except Exception:  # noqa: BLE001 - the diagnostics must not hide the failure
                pass
            print(f"failure screenshot: {with_failure}")
            print("browser console:\n" + "\n".join(console[-40:]))
            print("server log:\n" + lab.log_tail())
            raise

    timings["total (after server start)"] = time.monotonic() - t0
    print(f"\nrunning status seen: {running_text!r}\ndone status: {done_text!r}\nscreenshot: {shot_path} ({size} bytes)"
          f"\ngemini screenshot: {gemini_path} ({gemini_size} bytes)")
    for name, seconds in timings.items():
        print(f"  {name:32s} {seconds:6.2f} s")
