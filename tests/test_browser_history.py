"""The history in a real browser: JupyterLab in headless Chromium runs a notebook cell that makes
two calls (gpt-image-2, then Gemini at 16:9) and opens ``shark_nb.history()``; the page shows both
calls with their thumbnails, newest first; typing a word in Search keeps one; its Restore button
opens a studio below the history with that call's prompt, model and settings.

Offline simulator (no SHARK_API_KEY reaches the server). Skipped when playwright or a system
Chromium is missing — except in CI, where that is a failure. The screenshot goes to the test's
tmp folder (``SHARK_NB_SCREENSHOT_HISTORY=docs/history.png`` writes it there instead).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from browser_harness import LOAD_TIMEOUT, chromium, lab_with_notebook, open_notebook, run_cell
from test_browser_studio import MAX_SCREENSHOT_BYTES, _save_screenshot

FOX = "a red fox under a blue light"
OWL = "an owl on a birch branch, ukiyo-e"
GEMINI = "google/gemini-3.1-flash-image-preview"
SCREENSHOT_ENV = os.environ.get("SHARK_NB_SCREENSHOT_HISTORY")

CELL = f"""import shark_nb
client = shark_nb.Shark()
client.generate({FOX!r}, quality="low", size="1024x1024")
client.generate({OWL!r}, model="gemini", aspect_ratio="16:9", image_size="1K")
shark_nb.history()"""


@pytest.fixture
def lab(tmp_path):
    with lab_with_notebook(tmp_path, "history.ipynb", CELL, env={"SHARK_SIM_LATENCY": "0.05"}) as server:
        yield server


def test_history_opens_searches_and_restores_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect

    console: list[str] = []
    with chromium(viewport=(1280, 1400)) as (_browser, page):
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            cell = open_notebook(page, lab, "history.ipynb")
            run_cell(page, cell)

            history = page.locator(".shark-history")
            error = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"], '
                                 '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
                                 ':has-text("Traceback")')
            expect(history.or_(error).first).to_be_visible(timeout=LOAD_TIMEOUT)
            assert not error.count(), f"the cell failed:\n{error.first.inner_text()}"

            # both calls, newest first, each with its thumbnail
            rows = history.locator(".shark-history-row")
            expect(rows).to_have_count(2, timeout=15_000)
            expect(rows.nth(0)).to_contain_text(OWL)
            expect(rows.nth(1)).to_contain_text(FOX)
            expect(rows.nth(0)).to_contain_text("16:9")
            expect(rows.locator("img")).to_have_count(2)
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('.shark-history-row img')];"
                " return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                timeout=15_000)
            expect(history.locator(".shark-history-page")).to_contain_text("page 1 of 1")

            # search: one word keeps one call
            search = history.locator(".shark-history-search input")
            search.fill("owl")
            search.press("Enter")
            expect(rows).to_have_count(1, timeout=15_000)
            expect(rows.first).to_contain_text(OWL)

            # restore: a studio below, with that call's prompt, model and settings
            rows.first.locator("button.shark-history-restore").click()
            studio = history.locator(".shark-history-studio .shark-studio")
            expect(studio).to_be_visible(timeout=15_000)
            expect(history.locator(".shark-history-status")).to_contain_text("Restored")
            expect(studio.locator(".shark-studio-prompt textarea")).to_have_value(OWL)
            # (an ipywidgets Dropdown's <select> value is the option's label)
            expect(studio.locator(".shark-studio-model select")).to_have_value(re.compile(re.escape(GEMINI) + "$"))
            expect(studio.locator(".shark-studio-aspect-ratio select")).to_have_value(re.compile(r"^16:9\b"))
            expect(studio.locator(".shark-studio-image-size select")).to_have_value(re.compile(r"^1K\b"))
            expect(studio.locator(".shark-studio-header")).to_contain_text(GEMINI)

            page.mouse.move(0, 0)
            history.scroll_into_view_if_needed()
            shot = Path(SCREENSHOT_ENV) if SCREENSHOT_ENV else tmp_path / "history.png"
            assert _save_screenshot(history.screenshot(animations="disabled"), shot) < MAX_SCREENSHOT_BYTES
        except BaseException:
            try:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            except Exception:  # noqa: BLE001
                pass
            print("browser console:\n" + "\n".join(console[-40:]))
            print("server log:\n" + lab.log_tail())
            raise
    assert not [c for c in console if "pageerror" in c], console
