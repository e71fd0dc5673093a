"""The studio widget, driven headlessly: ``Button.click()`` fires the same handlers a browser click
does, and ``FileUpload.set_state`` delivers an upload the way the front end does. Everything runs
on the offline simulator, in process."""

from __future__ import annotations

import asyncio
import io
import json
import time

import ipywidgets as widgets
import pytest
from PIL import Image

from shark_nb import pricing
from shark_nb.client import AsyncShark, Shark
from shark_nb.ledger import Ledger
from shark_nb.simulator import AsyncSimulatorTransport, Simulator
from shark_nb.widget import MAX_UPLOAD_BYTES, OFFLINE_BANNER, Studio, studio

PLANTED = "sk-planted-3f9c1d7e5b2a4c68"


# ----------------------------------------------------------------------------------- helpers

def png(size=(64, 48), mode="RGB", color=(200, 60, 40), transparent_box=None) -> bytes:
    im = Image.new(mode, size, color if mode == "RGB" else (*color, 255))
    if transparent_box is not None:
        im.paste((0, 0, 0, 0), transparent_box)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def upload(widget: widgets.FileUpload, *files: tuple[str, bytes]) -> None:
    """Deliver files to a FileUpload exactly as the browser does (a state update from the front end)."""
    widget.set_state({"value": [
        {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
         "last_modified": 1_700_000_000_000}
        for name, data in files
    ]})


async def until(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    """The widget and every widget it references (children, layout, style, ...)."""
    seen: dict[str, widgets.Widget] = {}

    def walk(w: widgets.Widget) -> None:
        if w.model_id in seen:
            return
        seen[w.model_id] = w
        for name in w.keys:
            value = getattr(w, name, None)
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                if isinstance(item, widgets.Widget):
                    walk(item)

    walk(root)
    return list(seen.values())


def state_blob(root: widgets.Widget) -> bytes:
    """Every synced value of every widget, as bytes (binary buffers included)."""
    out = []
    for w in all_widgets(root):
        for key, value in w.get_state().items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                out.append(bytes(value))
            else:
                out.append(json.dumps(value, default=repr).encode())
            out.append(key.encode())
    return b"\n".join(out)


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture
def sim():
    return Simulator(latency=0.2)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
async def client(sim, ledger):
    c = AsyncShark(simulator=sim, ledger=ledger, poll_interval=0.05, quiet=True)
    yield c
    await c.aclose()


@pytest.fixture
async def st(client, tmp_path):
    s = studio(client, save_folder=str(tmp_path / "out"))
    yield s
    if s.job is not None:
        s.job.cancel()
        await s.wait()
    s.close()


# ------------------------------------------------------------------------------------ tests

async def test_generate_shows_images_newest_first_and_updates_the_ledger_strip(st, sim):
    st.prompt.value = "a red fox in the snow"
    st.n.value = 2
    st.size.value = "1024x1024"
    st.quality.value = "low"
    assert "0 calls" in st.ledger_strip.value
    st.generate_button.click()
    assert st.job is not None and st.generate_button.disabled and not st.cancel_button.disabled
    await st.wait()
    assert st.job is None and not st.generate_button.disabled and st.cancel_button.disabled
    assert len(st.results) == 1 and len(st.results[0].images) == 2
    assert len(st.gallery.children) == 2
    assert st.status.value.startswith("Done: 2 images")
    credit = sim.total_credit
    assert "1 call" in st.ledger_strip.value and "2 images" in st.ledger_strip.value
    assert f"{credit:g} credit" in st.ledger_strip.value.replace(",", "")
    thumb = st.gallery.children[0].children[0]
    assert isinstance(thumb, widgets.Image) and thumb.format == "jpeg"
    assert 0 < len(thumb.value) < 60_000  # a small preview, not the full image
    assert max(Image.open(io.BytesIO(thumb.value)).size) <= 256

    # a second call lands first in the gallery (newest first), results keep call order
    st.prompt.value = "a blue whale"
    st.n.value = 1
    st.generate_button.click()
    await st.wait()
    assert [r.prompt for r in st.results] == ["a red fox in the snow", "a blue whale"]
    assert len(st.gallery.children) == 3
    assert "a blue whale" in st.gallery.children[0].children[1].value
    assert "2 calls" in st.ledger_strip.value


async def test_estimate_is_labelled_and_follows_size_quality_and_n(st, client):
    st.prompt.value = "a lighthouse"

    def expected(**kw):
        credit = client.estimate("a lighthouse", **kw)
        return f"{credit:,.4f}".rstrip("0").rstrip(".")

    assert "estimate" in st.estimate.value
    before = st.estimate.value
    st.size.value = "2048x2048"
    assert st.estimate.value != before
    assert expected(size="2048x2048") in st.estimate.value
    st.quality.value = "high"
    assert expected(size="2048x2048", quality="high") in st.estimate.value
    st.n.value = 3
    text = expected(size="2048x2048", quality="high", n=3)
    assert text in st.estimate.value
    usd = pricing.credits_to_usd(client.estimate("a lighthouse", size="2048x2048", quality="high", n=3))
    assert f"${usd:,.2f}" in st.estimate.value
    assert "no budget set" in st.estimate.value


async def test_budget_left_is_shown_in_estimate_and_ledger_strip(client, tmp_path):
    client.ledger.budget = 5_000
    s = studio(client)
    assert "budget left 5,000 credit" in s.estimate.value
    assert "budget left 5,000 credit" in s.ledger_strip.value
    s.prompt.value = "x"
    s.quality.value = "high"
    s.size.value = "2048x2048"
    s.n.value = 4
    assert "over budget" in s.estimate.value
    s.close()


async def test_double_click_starts_one_job_and_charges_once(st, sim):
    st.prompt.value = "one fox only"
    st.generate_button.click()
    first = st.job
    st.generate_button.click()          # the race: a click that arrives before the button is disabled
    st._on_generate(None)               # and the handler called directly, for good measure
    assert st.job is first
    await st.wait()
    assert sim.requests["post"] == 1
    assert len(sim.charges) == 1
    assert len(st.results) == 1
    assert st.client.ledger.calls == 1


async def test_status_shows_elapsed_time_while_running(client, sim):
    sim.config.latency = 1.2
    s = studio(client)
    s.prompt.value = "a slow fox"
    s.generate_button.click()
    await asyncio.sleep(0.7)
    first = s.status.value
    await asyncio.sleep(0.6)
    second = s.status.value
    assert first != second and first.endswith(" s") and second.endswith(" s")
    assert "task" in second
    await s.wait()
    assert s.status.value.startswith("Done")
    s.close()


async def test_cancel_mid_task_cancels_at_the_gateway(client, sim):
    sim.config.latency = 10
    s = studio(client)
    s.prompt.value = "a fox that never arrives"
    s.generate_button.click()
    await until(lambda: s.runner.task is not None, what="the task id")
    task_id = s.runner.task.id
    s.cancel_button.click()
    await asyncio.wait_for(s.wait(), 5)
    assert sim.task(task_id)["status"] == "cancelled"
    assert sim.requests["cancel"] == 1
    assert sim.charges == []
    record = client.ledger.records[-1]
    assert record["task_id"] == task_id and record["outcome"] == "cancelled"
    assert "Cancelled at the gateway" in s.status.value
    assert s.results == [] and not s.generate_button.disabled and s.cancel_button.disabled
    s.close()


async def test_cancel_before_the_task_id_cancels_once_the_gateway_answers(client, sim):
    sim.config.latency = 10
    s = studio(client)
    s.prompt.value = "quick cancel"
    s.generate_button.click()
    s.cancel_button.click()             # before the POST has been answered
    assert s.cancel_button.description == "Stop waiting"
    await asyncio.wait_for(s.wait(), 5)
    assert sim.requests["cancel"] == 1
    assert sim.charges == []
    assert client.ledger.records[-1]["outcome"] == "cancelled"
    assert "Cancelled at the gateway" in s.status.value
    s.close()


async def test_refused_cancel_is_explained_and_a_second_click_stops_waiting(client, sim):
    sim.config.latency = 10
    sim.config.cancel_running = "refuse"
    sim.config.task_pending = 0.0
    s = studio(client)
    s.prompt.value = "an unstoppable fox"
    s.generate_button.click()
    await until(lambda: s.runner.task is not None, what="the task id")
    s.cancel_button.click()
    await until(lambda: s.runner.refused, what="the refusal")
    await asyncio.sleep(0.6)            # one tick of the status line
    assert ("the gateway refused to cancel: the task is already running and may still be charged"
            in s.status.value.lower())
    assert s.cancel_button.description == "Stop waiting" and not s.cancel_button.disabled
    assert s.job is not None            # still waiting: stopping is the user's choice
    s.cancel_button.click()
    await asyncio.wait_for(s.wait(), 5)
    assert s.job is None
    assert "Stopped waiting" in s.status.value and "may still be charged" in s.status.value
    assert client.ledger.records[-1]["outcome"] == "pending"   # kept, so a late charge is not lost
    assert not s.generate_button.disabled
    s.close()


async def test_sync_mode_cancel_stops_waiting_and_says_it_may_be_charged(client, sim):
    sim.config.latency = 10
    s = studio(client, wait="sync")
    assert s.wait.value == "sync"
    s.prompt.value = "a sync fox"
    s.generate_button.click()
    await asyncio.sleep(0.2)
    s.cancel_button.click()
    await asyncio.wait_for(s.wait(), 5)
    assert "Stopped waiting" in s.status.value and "may still be charged" in s.status.value
    assert sim.requests["cancel"] == 0
    assert client.ledger.records[-1]["outcome"] == "unknown"
    assert not s.generate_button.disabled
    s.close()


async def test_moderation_error_is_shown_in_plain_words(st):
    st.prompt.value = "[moderate] something the safety system blocks"
    st.generate_button.click()
    await st.wait()
    assert st.status.value.startswith("Error: the request was blocked by the safety system")
    assert "Traceback" not in st.status.value and "content_moderation" not in st.status.value
    assert st.status.style.text_color is not None
    assert st.results == [] and not st.generate_button.disabled


async def test_empty_prompt_is_refused_before_anything_is_sent(st, sim):
    st.prompt.value = "   "
    st.generate_button.click()
    assert st.job is None
    assert st.status.value == "Write a prompt first."
    assert sim.requests["post"] == 0


async def test_gateway_failure_is_reported_and_the_studio_stays_usable(st, sim):
    sim.inject("post", "status", status=401, type="auth_error", message="invalid api key")
    st.prompt.value = "a fox"
    st.generate_button.click()
    await st.wait()
    assert st.status.value.startswith("Error: invalid api key")
    st.generate_button.click()
    await st.wait()
    assert st.status.value.startswith("Done")


async def test_reference_upload_adds_thumbnails_and_a_remove_button(st):
    upload(st.reference_upload, ("a.png", png()), ("b.png", png(color=(0, 90, 200))))
    assert len(st.references) == 2 and st.reference_names == ["a.png", "b.png"]
    assert st.reference_upload.value == ()          # the bytes do not stay in the widget state
    cards = st.reference_box.children
    assert len(cards) == 2 and isinstance(cards[0].children[0], widgets.Image)
    before = st.estimate.value
    cards[0].children[-1].click()                   # remove a.png
    assert st.reference_names == ["b.png"] and len(st.reference_box.children) == 1
    assert st.estimate.value != before              # reference images count in the estimate


async def test_oversize_empty_and_undecodable_uploads_get_clear_messages(st):
    upload(st.reference_upload, ("huge.png", b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES + 1)))
    assert st.references == []
    assert "huge.png" in st.reference_message.value and "limit is 20 MB" in st.reference_message.value
    upload(st.reference_upload, ("empty.png", b""))
    assert "empty.png is empty (0 bytes)" in st.reference_message.value
    upload(st.reference_upload, ("notes.png", b"this is not an image at all"))
    assert "notes.png was not added" in st.reference_message.value
    assert st.references == []
    upload(st.reference_upload, ("ok.png", png()))
    assert st.references and st.reference_message.value == ""


async def test_mask_upload_is_validated(st):
    upload(st.mask_upload, ("mask.png", png(mode="RGBA", transparent_box=(0, 0, 10, 10))))
    assert st.mask is None and "add a reference image first" in st.mask_message.value

    upload(st.reference_upload, ("ref.png", png(size=(64, 48))))
    upload(st.mask_upload, ("small.png", png(size=(32, 32), mode="RGBA", transparent_box=(0, 0, 8, 8))))
    assert st.mask is None
    assert "32x32" in st.mask_message.value and "64x48" in st.mask_message.value

    upload(st.mask_upload, ("flat.png", png(size=(64, 48), mode="RGB")))
    assert st.mask is None and "no alpha channel" in st.mask_message.value

    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "JPEG")
    upload(st.mask_upload, ("mask.jpg", buf.getvalue()))
    assert st.mask is None and "not a PNG" in st.mask_message.value

    good = png(size=(64, 48), mode="RGBA", transparent_box=(0, 0, 20, 20))
    upload(st.mask_upload, ("good.png", good))
    assert st.mask == good and st.mask_message.value == ""
    assert len(st.mask_box.children) == 1

    # removing the reference the mask was matched to drops the mask, with a message
    st.reference_box.children[0].children[-1].click()
    assert st.mask is None and "removed" in st.mask_message.value


async def test_edit_with_reference_and_mask_is_sent(st, sim):
    st.add_reference(png(size=(64, 48)), name="ref.png")
    assert st.set_mask(png(size=(64, 48), mode="RGBA", transparent_box=(0, 0, 20, 20)), name="m.png")
    st.prompt.value = "put a hat on it"
    st.generate_button.click()
    await st.wait()
    assert st.status.value.startswith("Done"), st.status.value
    body = next(e["json"] for e in sim.log if e["route"] == "post")
    assert len(body["image"]) == 1 and "mask" in body


async def test_use_as_reference_save_and_open(st, tmp_path):
    st.prompt.value = "a lighthouse at dusk"
    st.generate_button.click()
    await st.wait()
    card = st.gallery.children[0]
    save, open_ = card.children[2].children
    (reuse,) = card.children[3].children
    path_label = card.children[4]
    image = st.results[0].images[0]

    reuse.click()
    assert st.references == [image.data]
    assert len(st.reference_box.children) == 1
    assert "reference" in st.status.value

    save.click()
    await until(lambda: "Saved" in path_label.value, what="the save")
    saved = list((tmp_path / "out").iterdir())
    assert len(saved) == 1 and saved[0].read_bytes()[:8] == image.data[:8]
    assert saved[0].stat().st_size >= len(image.data)  # the full file (plus metadata), not a preview

    open_.click()
    await until(lambda: st.viewer.layout.display is None, what="the viewer")
    assert st.viewer_image.value and max(Image.open(io.BytesIO(st.viewer_image.value)).size) <= 1024
    st.viewer_close.click()
    assert st.viewer.layout.display == "none" and st.viewer_image.value == b""


async def test_offline_banner_and_how_to_set_a_key(st):
    assert st.banner.layout.display != "none"
    assert OFFLINE_BANNER in st.banner.value.replace("&#x27;", "'")
    assert "shark_nb.set_key()" in st.banner.value and "SHARK_API_KEY" in st.banner.value
    assert "offline simulator" in st.header.value
    assert "shark_nb studio" in st.header.value and "openai/gpt-image-2" in st.header.value


async def test_no_widget_is_a_password_field(st):
    assert not any(isinstance(w, widgets.Password) for w in all_widgets(st))


async def test_the_key_never_appears_in_any_widget_state(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARK_API_KEY", PLANTED)
    sim = Simulator(latency=0.1)
    transport = AsyncSimulatorTransport(sim)
    client = AsyncShark(api_key=PLANTED, base_url=sim.api_base, transport=transport, download_transport=transport,
                        ledger=Ledger(tmp_path / "l.jsonl"), poll_interval=0.05)
    assert not client.offline
    s = studio(client, save_folder=str(tmp_path / "out"))
    assert s.banner.layout.display == "none" and "live API" in s.header.value
    s.prompt.value = "a fox with a key"
    s.generate_button.click()
    await s.wait()
    assert s.status.value.startswith("Done"), s.status.value
    s.prompt.value = "[moderate] error path too"
    s.generate_button.click()
    await s.wait()
    assert s.status.value.startswith("Error")
    blob = state_blob(s)
    assert PLANTED.encode() not in blob
    assert PLANTED not in repr(s)
    assert len(all_widgets(s)) > 40  # the walk really covered the tree
    s.close()
    await client.aclose()


async def test_generate_without_a_running_loop_says_so():
    # Building and clicking outside any event loop (a plain script) reports, never raises.
    def build_and_click():
        s = Studio(AsyncShark(simulator=Simulator(), ledger=Ledger(None), quiet=True))
        s.prompt.value = "x"
        s.generate_button.click()
        return s

    s = await asyncio.to_thread(build_and_click)
    assert s.job is None and "no running asyncio event loop" in s.status.value
    assert not s.generate_button.disabled
    s.close()


async def test_a_sync_shark_client_is_given_an_async_twin_sharing_its_ledger(ledger):
    sim = Simulator(latency=0.05)
    sync_client = Shark(simulator=sim, ledger=ledger, poll_interval=0.05, quiet=True)
    s = studio(sync_client)
    assert isinstance(s.client, AsyncShark) and s.client.ledger is ledger and s.client.simulator is sim
    s.prompt.value = "shared"
    s.generate_button.click()
    await s.wait()
    assert ledger.calls == 1 and sim.requests["post"] == 1
    s.close()
    await s.client.aclose()


def test_unknown_or_invalid_defaults_are_refused():
    c = AsyncShark(simulator=Simulator(), ledger=Ledger(None), quiet=True)
    with pytest.raises(TypeError, match="colour"):
        studio(c, colour="red")
    with pytest.raises(ValueError, match="size"):
        studio(c, size="999x999")
    with pytest.raises(ValueError, match="n="):
        studio(c, n=9)


async def test_shark_nb_studio_is_callable_even_after_the_submodule_was_imported(client):
    import importlib

    import shark_nb

    importlib.import_module("shark_nb.widget")   # what `%shark studio` does
    s = shark_nb.studio(client)
    assert isinstance(s, Studio) and s.client is client
    s.close()


async def test_without_a_client_the_studio_shares_the_magic_client_ledger(ledger):
    from shark_nb import magic

    sim = Simulator(latency=0.05)
    magic.set_client(Shark(simulator=sim, ledger=ledger, poll_interval=0.05, quiet=True))
    try:
        s = studio()
        assert s.client.ledger is ledger and s.client.simulator is sim
        s.prompt.value = "via the magic's client"
        s.generate_button.click()
        await s.wait()
        assert ledger.calls == 1
        s.close()
        await s.client.aclose()
    finally:
        magic.reset_client()
