"""The studio speaks every model: controls rebuilt from each model's schema, the body sent holds
exactly that model's fields with the values set in the controls, upload slots sized to the model,
the estimate honest about what it does not know; and the job runner's Cancel logic, tested with a
fake client and no widgets.

Studio tests run on the in-process simulator (``Button.click()`` fires the handlers a browser
click does); the body checked is the one the simulator received."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from types import SimpleNamespace

import ipywidgets as widgets
import pytest
from PIL import Image

import shark_nb
from shark_nb.client import AsyncShark
from shark_nb.errors import InvalidRequestError, TaskCancelledError, ValidationError
from shark_nb.ledger import Ledger
from shark_nb.simulator import Simulator
from shark_nb.ui.jobs import REFUSED_MESSAGE, JobRunner
from shark_nb.widget import Studio, studio


def png(size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (30, 120, 200) if mode == "RGB" else (30, 120, 200, 255)).save(buf, "PNG")
    return buf.getvalue()


STYLE_URL = "https://images.example.com/style.png"   # the simulator records it, never fetches it

#: Per model: every setting set to a value other than its default, through the controls.
SETTINGS = {
    "gpt-image-2": {"n": 2, "size": "1536x1024", "quality": "low", "background": "opaque", "output_format": "webp"},
    "gemini": {"n": 2, "seed": 7, "image_size": "2K", "aspect_ratio": "16:9", "response_format": "url"},
    "seedream": {"size": "1024*768"},
    "midjourney": {"aspect_ratio": "9:16", "version": "6.1", "quality": "0.5", "stylize": 250, "chaos": 10,
                   "weird": 5, "niji": "6", "seed": 42, "sref": STYLE_URL},
    "grok-edit": {},
}
#: Per model: the control class of each setting, in the schema's order.
KINDS = {
    "gpt-image-2": {"n": widgets.IntSlider, "size": widgets.Dropdown, "quality": widgets.Dropdown,
                    "background": widgets.Dropdown, "output_format": widgets.Dropdown},
    "gemini": {"n": widgets.IntSlider, "seed": widgets.IntText, "image_size": widgets.Dropdown,
               "aspect_ratio": widgets.Dropdown, "response_format": widgets.Dropdown},
    "seedream": {"size": widgets.Dropdown},
    "midjourney": {"aspect_ratio": widgets.Dropdown, "version": widgets.Dropdown, "quality": widgets.Dropdown,
                   "stylize": widgets.IntSlider, "chaos": widgets.IntSlider, "weird": widgets.IntSlider,
                   "niji": widgets.Dropdown, "seed": widgets.IntText, "sref": widgets.Text},
    "grok-edit": {},
}


async def until(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def posted(sim) -> list[dict]:
    return [e["json"] for e in sim.log if e["route"] == "post"]


@pytest.fixture
def sim():
    return Simulator(latency=0.05)


@pytest.fixture
async def client(sim, tmp_path):
    c = AsyncShark(simulator=sim, ledger=Ledger(tmp_path / "ledger.jsonl"), poll_interval=0.02, quiet=True)
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


def choose(s: Studio, name: str) -> None:
    s.model.value = shark_nb.model_spec(name).id


# ------------------------------------------------------------------------------ every model

@pytest.mark.parametrize("name", list(SETTINGS))
async def test_each_model_sends_exactly_its_fields_as_set_in_the_controls(st, sim, name):
    spec = shark_nb.model_spec(name)
    choose(st, name)
    for field, value in SETTINGS[name].items():
        st.settings[field].value = value
    if spec.requires_image:
        assert st.add_reference(png(), name="photo.png")
    st.prompt.value = f"a lighthouse, by {name}"
    st.generate_button.click()
    await st.wait()
    assert st.status.value.startswith("Done"), st.status.value
    (body,) = posted(sim)
    expected = {"model": spec.id, "prompt": f"a lighthouse, by {name}", **SETTINGS[name], "async": True,
                "timeout": 300}
    if spec.requires_image:
        assert isinstance(body.pop("image"), str)   # Grok: one URL, not a list
    assert body == expected
    assert st.results[-1].model == spec.id
    assert len(st.gallery.children) == SETTINGS[name].get("n", 1)
    assert spec.name in st.gallery.children[0].children[1].value      # the card names the model


@pytest.mark.parametrize("name", ["gemini", "seedream", "midjourney"])
async def test_a_control_left_at_the_models_default_is_not_sent(st, sim, name):
    """Models without send_defaults get only what the user changed; the gateway's defaults apply."""
    spec = shark_nb.model_spec(name)
    choose(st, name)
    changed = next(iter(SETTINGS[name]))
    st.settings[changed].value = SETTINGS[name][changed]
    st.prompt.value = "a fox"
    st.generate_button.click()
    await st.wait()
    (body,) = posted(sim)
    assert set(body) == {"model", "prompt", changed, "async", "timeout"}, body
    assert st.spec is spec


async def test_gpt_image_2_sends_every_field_with_its_defaults(st, sim):
    st.prompt.value = "a fox"
    st.generate_button.click()
    await st.wait()
    (body,) = posted(sim)
    assert body == {"model": "openai/gpt-image-2", "prompt": "a fox", "n": 1, "size": "auto", "quality": "auto",
                    "background": "auto", "output_format": "png", "async": True, "timeout": 300}


@pytest.mark.parametrize("name", list(KINDS))
async def test_controls_are_rebuilt_from_the_models_schema(st, name):
    spec = shark_nb.model_spec(name)
    choose(st, name)
    assert list(st.settings) == list(KINDS[name])                     # in the schema's order
    for field in spec.settings:
        w = st.settings[field.name]
        assert type(w) is KINDS[name][field.name], field.name
        assert w.description == field.label and field.help in w.tooltip
        shown = [c for row in st.settings_box.children[0].children
                 for c in (row.children if isinstance(row, widgets.HBox) else (row,))]
        assert w in shown
        if isinstance(w, widgets.Dropdown):
            assert tuple(v for _label, v in w.options) == field.choices
            assert w.value == field.default
        elif isinstance(w, widgets.IntSlider):
            assert (w.min, w.max, w.value) == (field.min, field.max, field.default)
        elif isinstance(w, widgets.IntText):
            assert w.value == -1                                      # a seed: -1 = random
    assert "shark-studio-" + name.replace("_", "-") not in st.settings  # (sanity: keys are field names)


async def test_changing_the_model_closes_the_old_controls_and_keeps_prompt_images_and_shared_values(st):
    st.prompt.value = "a kite over a beach"
    st.n.value = 3
    assert st.add_reference(png(), name="a.png") and st.add_reference(png((32, 32)), name="b.png")
    old = dict(st.settings)
    choose(st, "gemini")
    assert all(w.comm is None for w in old.values())                 # closed, not leaked
    assert st.prompt.value == "a kite over a beach"
    assert st.reference_names == ["a.png", "b.png"]
    assert st.n.value == 3                                            # shared and valid: kept
    assert st.size is None and st.quality is None and st.output_format is None
    st.settings["aspect_ratio"].value = "21:9"
    choose(st, "midjourney")                                          # 21:9 is valid there too
    assert st.settings["aspect_ratio"].value == "21:9" and st.n is None
    st.settings["aspect_ratio"].value = "9:21"
    choose(st, "gemini")                                              # 9:21 is not: gemini's own last value
    assert st.settings["aspect_ratio"].value == "21:9"
    assert st.n.value == 3                                            # carried through a model without n
    choose(st, "gpt-image-2")
    assert st.size.value == "auto" and st.n.value == 3
    assert st.reference_names == ["a.png", "b.png"]


async def test_values_of_a_model_you_come_back_to_are_remembered(st):
    st.size.value = "1536x1024"
    st.quality.value = "high"
    choose(st, "midjourney")
    assert st.settings["aspect_ratio"].value == "1:1"                 # first visit: the model's defaults
    assert st.settings["quality"].value == "1"                        # 'high' is not a midjourney quality
    choose(st, "seedream")
    assert st.settings["size"].value == "2048*2048"                   # '1536x1024' is not a seedream size
    choose(st, "gpt-image-2")
    assert (st.size.value, st.quality.value) == ("1536x1024", "high")


async def test_studio_starts_on_any_model_with_its_settings_validated(client):
    s = studio(client, model="gemini", aspect_ratio="16:9", n=2)
    assert s.model.value == "google/gemini-3.1-flash-image-preview"
    assert s.settings["aspect_ratio"].value == "16:9" and s.n.value == 2 and s.size is None
    assert "google/gemini-3.1-flash-image-preview" in s.header.value
    s.close()
    s = studio(client, model="MJ", version=7, quality=0.25)           # canonical: "7", "0.25"
    assert s.settings["version"].value == "7" and s.settings["quality"].value == "0.25"
    s.close()
    with pytest.raises(ValidationError, match=r"gemini has no size.*did you mean 'aspect_ratio'"):
        studio(client, model="gemini", size="1024x1024")
    with pytest.raises(ValidationError, match="stylize=1001"):
        studio(client, model="midjourney", stylize=1001)
    with pytest.raises(ValidationError, match="seedream has no n"):
        studio(client, model="seedream", n=2)
    with pytest.raises(TypeError, match="unexpected settings.*colour"):
        studio(client, model="gemini", colour="red")


async def test_the_model_dropdown_lists_every_model_by_short_name_and_id(st):
    assert [v for _label, v in st.model.options] == [s.id for s in shark_nb.models()]
    for (label, model_id), spec in zip(st.model.options, shark_nb.models()):
        assert spec.name in label and model_id in label


# --------------------------------------------------------------------------- upload slots

async def test_grok_edit_requires_one_image_before_generate(st, sim):
    choose(st, "grok-edit")
    assert st.generate_button.disabled
    assert "grok-edit edits an image" in st.status.value
    st.prompt.value = "make it night"
    st.generate_button.click()                                        # a raced click sends nothing
    assert st.job is None and not sim.log
    assert st.add_reference(png(), name="photo.png")
    assert not st.generate_button.disabled and st.status.value.startswith("Ready")
    assert not st.add_reference(png(), name="second.png")
    assert "at most 1 reference image for grok-edit" in st.reference_message.value
    assert not st.uploads.reference_upload.multiple
    st.generate_button.click()
    await st.wait()
    (body,) = posted(sim)
    assert body["image"].startswith("data:image/png;base64,")


async def test_grok_edit_with_more_images_than_it_takes_blocks_generate_until_some_are_removed(st):
    assert st.add_reference(png()) and st.add_reference(png())
    choose(st, "grok-edit")
    assert st.generate_button.disabled and "remove 1 of the 2 reference images" in st.status.value
    st.remove_reference(1)
    assert not st.generate_button.disabled


async def test_mask_slot_only_for_gpt_image_2_and_upload_slots_follow_max_images(st):
    slots = st.uploads
    for spec in shark_nb.models():
        choose(st, spec.name)
        assert (slots.mask_section.layout.display != "none") == spec.takes_mask, spec.name
        assert (slots.reference_upload.layout.display != "none") == (spec.max_images > 0), spec.name
        assert slots.reference_upload.multiple == (spec.max_images > 1), spec.name
    assert [s.name for s in shark_nb.models() if s.takes_mask] == ["gpt-image-2"]


async def test_images_kept_for_a_model_that_takes_none_are_not_sent_and_that_is_said(st, sim):
    assert st.add_reference(png(), name="a.png")
    choose(st, "seedream")
    assert "1 reference image not sent (seedream takes none)" in st.uploads.reference_note.value
    assert not st.generate_button.disabled
    st.prompt.value = "a fox"
    st.generate_button.click()
    assert "1 reference image not sent" in st.status.value           # said while sending, too
    await st.wait()
    (body,) = posted(sim)
    assert "image" not in body
    assert st.references and st.reference_names == ["a.png"]         # still there for the next model
    assert not st.add_reference(png(), name="b.png")
    assert "seedream takes no reference images" in st.reference_message.value


# ------------------------------------------------------------------------------- estimate

async def test_estimate_is_unknown_for_a_model_without_a_price_then_learned_after_one_call(st, sim):
    choose(st, "gemini")
    st.prompt.value = "a fox"
    assert "unknown" in st.estimate.value and "0 credit" not in st.estimate.value
    assert "$0" not in st.estimate.value
    st.generate_button.click()
    await st.wait()
    assert "learned from 1 call this session" in st.estimate.value
    assert f"~{shark_nb.text.money(390)}" in st.estimate.value        # the simulator's gemini 1K price
    st.settings["image_size"].value = "4K"                            # another price class: not learned yet
    assert "unknown" in st.estimate.value
    choose(st, "gpt-image-2")
    assert "token table" in st.estimate.value


async def test_an_invalid_value_typed_into_a_control_is_named_and_nothing_is_sent(st, sim):
    choose(st, "midjourney")
    st.settings["seed"].value = 2**33
    assert "No estimate: seed=" in st.estimate.value
    st.prompt.value = "a fox"
    st.generate_button.click()
    assert st.status.value.startswith("Error: seed=8589934592") and "from -1 to 4,294,967,295" in st.status.value
    assert st.job is None and not sim.log


# ---------------------------------------------------------------- the job runner, no widgets

class FakeClient:
    """Just what the runner uses: build, send (with on_task), cancel."""

    def __init__(self, *, cancel="cancelled", id_after=0.0, fail=None):
        self.cancel_answer, self.id_after, self.fail = cancel, id_after, fail
        self.built, self.cancels = [], []
        self.cancelled = False
        self.finish = asyncio.Event()

    def build(self, prompt, **kw):
        if prompt == "bad":
            raise ValidationError("prompt", prompt, "a good prompt")
        self.built.append((prompt, kw))
        return SimpleNamespace(prompt=prompt, wait=kw.get("wait", "sync"))

    async def send(self, request, on_task=None):
        await asyncio.sleep(self.id_after)            # the gateway has not answered the POST yet
        if self.fail is not None:
            raise self.fail
        task = SimpleNamespace(id="task_123")
        if request.wait == "task" and on_task is not None:
            on_task(task)
        while not self.finish.is_set():
            if self.cancelled:
                raise TaskCancelledError("the task was cancelled", task_id=task.id)
            await asyncio.sleep(0.005)
        return SimpleNamespace(credit=5_000, images=[1, 2])

    async def cancel(self, task):
        self.cancels.append(task.id)
        if isinstance(self.cancel_answer, Exception):
            raise self.cancel_answer
        if self.cancel_answer == "cancelled":
            self.cancelled = True
        return self.cancel_answer


def runner_for(client, **kw):
    finished, updates = [], []
    runner = JobRunner(client, on_update=lambda: updates.append(runner.status_line()),
                       on_finish=finished.append, tick_seconds=0.02, **kw)
    return runner, finished, updates


async def test_runner_done_reports_images_and_money_and_ticks_the_elapsed_time():
    client = FakeClient()
    runner, finished, updates = runner_for(client)
    assert runner.start("a fox", model="gemini", wait="task", n=2) is not None
    assert runner.start("a second fox", wait="task") is None          # one job at a time
    await asyncio.sleep(0.1)
    client.finish.set()
    await runner.wait()
    assert [p for p, _ in client.built] == ["a fox"]
    (outcome,) = finished
    assert outcome.kind == "done" and outcome.message.startswith("Done: 2 images in ")
    assert "5,000 credit ($0.50)" in outcome.message
    assert len(updates) >= 3 and all(u.endswith(" s") for u in updates)
    assert any("task task_123" in u for u in updates)
    assert runner.job is None and not runner.cancel_enabled


async def test_runner_cancel_accepted_at_the_gateway():
    client = FakeClient(cancel="cancelled")
    runner, finished, _ = runner_for(client)
    runner.start("a fox", wait="task")
    await until(lambda: runner.task is not None)
    assert runner.cancel_enabled and runner.cancel_label == "Cancel"
    runner.cancel()
    assert not runner.cancel_enabled                                 # the request is on its way
    runner.cancel()                                                  # a second click meanwhile: nothing more
    await runner.wait()
    assert client.cancels == ["task_123"]
    (outcome,) = finished
    assert outcome.kind == "cancelled" and "Cancelled at the gateway" in outcome.message
    assert "task_123" in outcome.message


@pytest.mark.parametrize("answer", ["refused", InvalidRequestError("boom")], ids=["409", "request-failed"])
async def test_runner_cancel_refused_then_stop_waiting(answer):
    client = FakeClient(cancel=answer)
    runner, finished, _ = runner_for(client)
    runner.start("a fox", wait="task")
    await until(lambda: runner.task is not None)
    runner.cancel()
    await until(lambda: runner.refused, what="the refusal")
    assert runner.phase == REFUSED_MESSAGE
    assert runner.cancel_label == "Stop waiting" and runner.cancel_enabled
    assert runner.running and finished == []                          # stopping is the user's choice
    runner.cancel()
    await runner.wait()
    assert client.cancels == ["task_123"]                             # never a second cancel request
    (outcome,) = finished
    assert outcome.kind == "stopped"
    assert "refused to cancel task task_123" in outcome.message and "may still be charged" in outcome.message


async def test_runner_cancel_before_the_task_id_is_sent_when_the_id_arrives():
    client = FakeClient(cancel="cancelled", id_after=0.15)
    runner, finished, _ = runner_for(client)
    runner.start("a fox", wait="task")
    runner.cancel()
    assert runner.cancel_requested and runner.cancel_label == "Stop waiting" and client.cancels == []
    await runner.wait()
    assert client.cancels == ["task_123"]
    assert finished[0].kind == "cancelled"


async def test_runner_second_click_before_the_task_id_stops_waiting():
    client = FakeClient(id_after=5)
    runner, finished, _ = runner_for(client)
    runner.start("a fox", wait="task")
    runner.cancel()
    runner.cancel()
    await asyncio.wait_for(runner.wait(), 2)
    assert client.cancels == []
    assert finished[0].kind == "stopped" and "before the gateway confirmed the task" in finished[0].message


async def test_runner_sync_mode_cancel_only_stops_waiting():
    client = FakeClient()
    runner, finished, _ = runner_for(client)
    runner.start("a fox", wait="sync")
    await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.wait_for(runner.wait(), 2)
    assert client.cancels == [] and finished[0].kind == "stopped"
    assert "it is in the ledger as 'unknown'" in finished[0].message


async def test_runner_reports_errors_in_plain_words_and_can_start_again():
    client = FakeClient(fail=InvalidRequestError("the gateway said no", status=400))
    runner, finished, _ = runner_for(client)
    runner.start("a fox", wait="task")
    await runner.wait()
    runner.start("bad", wait="task")                                  # refused by build: nothing sent
    await runner.wait()
    assert [o.message for o in finished] == ["Error: the gateway said no",
                                             "Error: prompt='bad' is not valid: expected a good prompt"]
    assert isinstance(finished[1].error, ValidationError)


async def test_runner_job_cancelled_before_its_first_step_still_finishes_once():
    runner, finished, _ = runner_for(FakeClient())
    job = runner.start("a fox", wait="task")
    job.cancel()
    await runner.wait()
    assert [o.kind for o in finished] == ["stopped"] and runner.job is None


def test_runner_without_a_running_loop_says_so():
    runner, finished, _ = runner_for(FakeClient())
    errors = []

    def click():
        try:
            runner.start("a fox")
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=click)
    t.start()
    t.join()
    assert errors and "no running asyncio event loop" in errors[0] and runner.job is None and finished == []
