"""The history (issue 12): ``shark_nb.history()`` over every session, search, model filter,
paging, restore into the studio with exactly the call's settings, ``history.read(path)`` from a
saved PNG / JPEG / WebP, damaged and old ledgers, thumbnails (small, off the hot path, never
failing a call) and the saved paths recorded in the ledger by every way of saving."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import shark_nb
from shark_nb import archive, config, session
from shark_nb.archive import History, HistoryEntry, wait_for_thumbnails
from shark_nb.errors import ValidationError
from shark_nb.ledger import Ledger, _normalise, ledger_dir
from shark_nb.request import build_request


# ---------------------------------------------------------------------------------- helpers

def home() -> Path:
    return config.shark_home()


def session_ledger(name: str) -> Ledger:
    """A session file under $SHARK_NB_HOME/ledger, named like the real ones (newer names later)."""
    return Ledger(ledger_dir() / f"{name}-{os.getpid()}-0000.jsonl")


@pytest.fixture
def clients():
    made = []

    def make(ledger: Ledger) -> shark_nb.Shark:
        c = shark_nb.Shark(offline=True, ledger=ledger)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    session.reset_client()


@pytest.fixture
def two_sessions(clients):
    """Two sessions: an older one (gpt-image-2 twice) and a newer one (gemini, seedream)."""
    old = clients(session_ledger("2026-01-02T10-00-00Z"))
    r1 = old.generate("a red fox in the snow", quality="low", size="1024x1024")
    r2 = old.generate("an owl under blue light", quality="medium", n=2, size="1536x1024", output_format="webp")
    new = clients(session_ledger("2026-02-03T10-00-00Z"))
    r3 = new.generate("a Fox made of blue glass", model="gemini", aspect_ratio="16:9", image_size="2K", seed=7)
    r4 = new.generate("a lighthouse at dusk", model="seedream", size="2048*2048")
    wait_for_thumbnails()
    return new, [r1, r2, r3, r4]


def built_params(st) -> dict:
    """The params of the request the studio's Generate would send now."""
    return build_request(st.prompt.value, model=st.model.value, wait=st.wait.value, **st.panel.values()).params()


# ------------------------------------------------------------------------------------ entries

def test_entries_from_every_session_newest_first(two_sessions):
    _client, results = two_sessions
    h = shark_nb.history()
    assert [e.prompt for e in h.entries] == [r.prompt for r in reversed(results)]
    assert [e.tracing_id for e in h.entries] == [r.tracing_id for r in reversed(results)]
    assert len({e.session for e in h.entries}) == 2
    assert all(e.session.parent == ledger_dir() for e in h.entries)
    fox = h.entries[-1]
    assert isinstance(fox, HistoryEntry)
    assert fox.model == "openai/gpt-image-2" and fox.outcome == "ok" and fox.images == 1
    assert fox.params == results[0].request.params()
    assert fox.credit == results[0].credit and fox.credit is not None
    assert fox.time.endswith("Z") and fox.files == []
    assert h.summary() == "4 calls · 2 sessions"


def test_history_is_callable_and_has_read_and_imports_do_not_replace_it():
    import shark_nb.archive  # noqa: F401
    import shark_nb.ui.history  # noqa: F401

    assert callable(shark_nb.history) and callable(shark_nb.history.read)
    assert shark_nb.history is archive.history
    assert isinstance(shark_nb.history(), History)
    assert shark_nb.HistoryEntry is HistoryEntry


def test_search_needs_every_word_in_any_case_and_the_model_filter_takes_aliases(two_sessions):
    h = shark_nb.history("fox")
    assert [e.prompt for e in h.entries] == ["a Fox made of blue glass", "a red fox in the snow"]
    assert [e.prompt for e in h.search("BLUE fox").entries] == ["a Fox made of blue glass"]
    assert [e.prompt for e in h.search("blue").entries] == ["a Fox made of blue glass", "an owl under blue light"]
    assert h.search("zebra").entries == []
    assert len(h.search("").entries) == 4
    assert [e.prompt for e in h.filter("gemini").entries] == ["a Fox made of blue glass"]
    assert [e.model for e in h.filter("openai/gpt-image-2").search("owl").entries] == ["openai/gpt-image-2"]
    assert len(h.filter(None).search("").entries) == 4
    assert [e.prompt for e in shark_nb.history("fox", model="gpt-image-2").entries] == ["a red fox in the snow"]
    assert h.models[0] == "openai/gpt-image-2" and set(h.models) == {e.model for e in h.all_entries}


def test_bad_arguments_are_refused_with_the_field_named():
    for kwargs, field in (({"page_size": 0}, "page_size"), ({"page_size": "5"}, "page_size"),
                          ({"page_size": True}, "page_size"), ({"words": 5}, "words"), ({"model": 5}, "model")):
        with pytest.raises(ValidationError) as err:
            shark_nb.history(**kwargs)
        assert err.value.field == field
    h = shark_nb.history()
    with pytest.raises(ValidationError, match="history.entries, which is empty"):
        h.restore(0)
    with pytest.raises(ValidationError):
        h.page_entries(1)


def test_a_model_the_package_no_longer_knows_is_matched_as_written():
    led = session_ledger("2026-01-01T00-00-00Z")
    led.record({"model": "acme/retired-model", "prompt": "old", "params": {"model": "acme/retired-model", "x": 1},
                "outcome": "ok", "images": 1, "credit": 5})
    h = shark_nb.history(model="acme/retired-model")
    assert [e.prompt for e in h.entries] == ["old"] and h.entries[0].settings == "x=1"


# ------------------------------------------------------------------------------------ paging

def test_paging_renders_one_page_and_reads_thumbnails_only_for_it(clients, monkeypatch):
    c = clients(session_ledger("2026-03-01T00-00-00Z"))
    for i in range(7):
        c.generate(f"call number {i}", quality="low", size="1024x1024")
    wait_for_thumbnails()
    looked = []
    original = HistoryEntry.thumbnails
    monkeypatch.setattr(HistoryEntry, "thumbnails",
                        property(lambda self: looked.append(self.prompt) or original.fget(self)))
    h = shark_nb.history(page_size=3)
    assert h.pages == 3 and looked == []
    assert [e.prompt for e in h.page_entries()] == ["call number 6", "call number 5", "call number 4"]
    assert [e.prompt for e in h.page_entries(2)] == ["call number 0"]
    view = h.widget
    assert looked == ["call number 6", "call number 5", "call number 4"]
    assert len(view.rows.children) == 3 and view.previous.disabled and not view.next.disabled
    assert "page 1 of 3" in view.page_label.value
    view.next.click()
    view.next.click()
    assert looked[3:] == ["call number 3", "call number 2", "call number 1", "call number 0"]
    assert len(view.rows.children) == 1 and view.next.disabled and "page 3 of 3" in view.page_label.value
    view.previous.click()
    assert h.page == 1
    view.search.value = "number 1"
    assert h.page == 0 and h.pages == 1 and len(view.rows.children) == 1
    view.close()


# ------------------------------------------------------------------------------------ restore

@pytest.mark.parametrize("which", [1, 2])  # gpt-image-2 (n=2, webp, 1536x1024, medium) and gemini (seed, 2K, 16:9)
def test_restore_opens_a_studio_with_exactly_the_calls_settings(two_sessions, which):
    client, results = two_sessions
    r = results[which]
    h = shark_nb.history(client=client)
    i = next(k for k, e in enumerate(h.entries) if e.tracing_id == r.tracing_id)
    st = h.restore(i)
    try:
        assert st.prompt.value == r.prompt
        assert st.model.value == r.request.model
        assert st.wait.value == r.request.wait == "sync"
        assert built_params(st) == r.request.params()
        assert st.client.ledger is client.ledger
    finally:
        st.close()


def test_the_restore_button_shows_the_studio_below_the_history(two_sessions):
    client, results = two_sessions
    h = shark_nb.history(model="gemini", client=client)
    view = h.widget
    button = next(w for w in view.rows.children[0].children if getattr(w, "description", "") == "Restore")
    button.click()
    st = view.studio
    assert st is not None and view.studio_box.children == (st,)
    assert built_params(st) == results[2].request.params()
    assert "Restored" in view.status.value
    view.restore(0)  # again: the first studio is replaced and closed
    assert view.studio is not st and st.comm is None
    view.close()


def test_restore_with_images_uses_the_saved_files_or_says_they_are_not_available(two_sessions, tmp_path):
    client, results = two_sessions
    results[2].save(tmp_path / "saved")
    h = shark_nb.history(client=client)
    st = h.restore(1, images=True)  # gemini: saved
    assert len(st.references) == 1 and "1 saved image as references" in st.status.value
    st.close()
    st = h.restore(3, images=True)  # the first call: never saved
    assert st.references == [] and "not available as references" in st.status.value
    st.close()


def test_a_broken_restore_is_reported_in_the_widget_not_raised():
    led = session_ledger("2026-01-01T00-00-00Z")
    led.record({"model": "acme/retired-model", "prompt": "old", "params": {"model": "acme/retired-model"},
                "outcome": "ok"})
    view = shark_nb.history().widget
    assert view.restore(0) is None
    assert "Could not restore" in view.status.value and "model" in view.status.value
    view.close()


# ----------------------------------------------------------------------------- read(path)

@pytest.mark.parametrize("fmt,suffix", [("png", ".png"), ("jpeg", ".jpg"), ("webp", ".webp")])
def test_read_gives_back_the_entry_of_a_saved_file(clients, tmp_path, fmt, suffix):
    c = clients(session_ledger("2026-04-01T00-00-00Z"))
    r = c.generate("a cat in a teacup, «watercolour» ✓", quality="low", size="1024x1536", n=2, output_format=fmt)
    paths = r.save(tmp_path / "out")
    assert [p.suffix for p in paths] == [suffix, suffix]
    e = shark_nb.history.read(paths[1])
    assert e.prompt == r.prompt and e.model == "openai/gpt-image-2"
    assert e.params == r.request.params()
    assert e.credit == r.credit and e.tracing_id == r.tracing_id and e.call_id == r.call_id
    assert e.files == [paths[1]] and e.session is None and e.time.endswith("Z")
    st = e.restore(client=c)
    try:
        assert built_params(st) == r.request.params()
    finally:
        st.close()


def test_read_refuses_a_file_without_shark_nb_metadata(tmp_path):
    for name, fmt in (("plain.png", "PNG"), ("plain.jpg", "JPEG"), ("plain.webp", "WEBP")):
        path = tmp_path / name
        Image.new("RGB", (8, 8), (1, 2, 3)).save(path, fmt)
        with pytest.raises(ValidationError, match="no shark_nb metadata") as err:
            shark_nb.history.read(path)
        assert err.value.field == "path"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValidationError, match="not a readable image"):
        shark_nb.history.read(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        shark_nb.history.read(tmp_path / "missing.png")


# ----------------------------------------------------------------------- old and damaged ledgers

OLD_LINES = [
    # a line from the first ledger version: no v, no saved, no images_billed, no thumbnails
    {"call_id": "old1", "time": "2025-11-26T13:45:02.123Z", "tracing_id": "t-old1", "model": "openai/gpt-image-2",
     "prompt": "an old fox", "params": {"model": "openai/gpt-image-2", "n": 1, "size": "1024x1024",
                                       "quality": "low", "background": "auto", "output_format": "png"},
     "outcome": "ok", "images": 1, "credit": 70.5},
    {"call_id": "odd", "time": "2025-11-26T14:00:00.000Z", "model": ["not", "text"], "prompt": 5,
     "params": 5, "outcome": ["ok"], "credit": "abc", "images": "x"},
    {"call_id": "refused", "time": "2025-11-26T15:00:00.000Z", "model": "openai/gpt-image-2",
     "prompt": "never sent", "outcome": "budget_exceeded"},
]


def test_old_and_damaged_ledgers_show_every_good_call(clients):
    folder = ledger_dir()
    folder.mkdir(parents=True)
    lines = [json.dumps(x) for x in OLD_LINES]
    raw = (lines[0] + "\n" + "{not json\n" + "[1, 2]\n" + lines[1] + "\n" + "\xff\xfe garbage\n"
           + lines[2] + "\n").encode("utf-8", "surrogateescape")
    (folder / "2025-11-26T13-45-00Z-1-abcd.jsonl").write_bytes(raw + b'{"call_id": "torn", "prom')
    (folder / "2025-11-27T00-00-00Z-1-abcd.jsonl").write_bytes(b"")  # an empty session
    c = clients(session_ledger("2026-05-01T00-00-00Z"))
    c.generate("a new fox", quality="low", size="1024x1024")
    wait_for_thumbnails()
    h = shark_nb.history()
    assert [e.prompt for e in h.entries] == ["a new fox", "5", "an old fox"]
    assert h.skipped == 4 and "4 damaged ledger lines skipped" in h.summary()
    old = h.entries[-1]
    assert old.thumbnails == [] and old.files == [] and old.credit == 70.5
    odd = h.entries[1]
    assert odd.params == {} and odd.outcome is None and odd.credit is None and odd.model == '["not", "text"]'
    assert len(h.entries[0].thumbnails) == 1
    view = h.widget
    texts = [w.value for row in view.rows.children for w in row.children if hasattr(w, "value")
             and isinstance(w.value, str)]
    assert sum("no picture" in t for t in texts) == 2  # the old calls: text only
    assert any("an old fox" in t for t in texts)
    view.close()


def test_fast_ledger_read_equals_the_full_normalisation(tmp_path):
    entries = [
        OLD_LINES[0], OLD_LINES[1],
        {"call_id": "nan", "credit": float("nan"), "usd": float("inf"), "prompt": "x"},
        {"call_id": "big", "credit": 1e308, "prompt": "y"},
        {"call_id": "deep", "params": json.loads("[" * 40 + "]" * 40), "prompt": "z"},
        {"call_id": "keys", "params": {"k": {"n": [1, 2.5, None, True]}}, "error": {"a": 1}},
    ]
    text = "".join(json.dumps(e) + "\n" for e in entries)
    text += '{"call_id": "huge", "credit": 1e999}\n{"call_id": "sur", "prompt": "a\\ud83e b", "\\udcff": 1}\n'
    path = tmp_path / "l.jsonl"
    path.write_text(text)
    got = Ledger(path).records
    want = []
    for line in text.splitlines():
        want.append(_normalise(json.loads(line)))
    assert got == want
    assert got[-1]["prompt"] == "a\ufffd b" and got[-2]["credit"] is None and got[2]["credit"] is None


# ------------------------------------------------------------------------------------ thumbnails

def test_every_delivered_image_leaves_a_small_webp_thumbnail(clients):
    c = clients(session_ledger("2026-06-01T00-00-00Z"))
    r = c.generate("a detailed city at night", quality="high", size="1536x1024", n=3)
    wait_for_thumbnails()
    thumbs = sorted((home() / "thumbs").iterdir())
    assert [p.name for p in thumbs] == [f"{r.call_id}-{i}.webp" for i in range(3)]
    for p in thumbs:
        data = p.read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert len(data) <= 30 * 1024
        assert max(Image.open(io.BytesIO(data)).size) <= 256
        assert p.stat().st_mode & 0o077 == 0


def test_a_noisy_large_image_still_gets_a_thumbnail_under_30_kb(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((2048, 2048), 120).convert("RGB").save(buf, "PNG")
    written = archive.write_thumbnails("noisy", [(0, buf.getvalue())], tmp_path)
    assert len(written) == 1 and 0 < written[0].stat().st_size <= 30 * 1024


def test_a_thumbnail_failure_is_logged_and_never_fails_or_delays_the_call(clients, monkeypatch, caplog):
    c = clients(session_ledger("2026-06-02T00-00-00Z"))

    real = archive._small_webp

    def broken(data):
        raise OSError("disk full")

    monkeypatch.setattr(archive, "_small_webp", broken)
    with caplog.at_level(logging.WARNING, logger="shark_nb"):
        r = c.generate("a fox", quality="low", size="1024x1024")
        wait_for_thumbnails()
    assert len(r.images) == 1 and c.ledger.records[-1]["outcome"] == "ok"
    assert "no history thumbnail" in caplog.text and "disk full" in caplog.text
    assert not (home() / "thumbs").exists() or not any((home() / "thumbs").iterdir())
    # a slow thumbnail does not hold the call back: it is written after the result is returned
    gate = threading.Event()
    monkeypatch.setattr(archive, "_small_webp", lambda data: (gate.wait(10), b"RIFF....WEBP")[1])
    started = time.monotonic()
    r2 = c.generate("a second fox", quality="low", size="1024x1024")
    assert time.monotonic() - started < 5 and not archive.thumbnail_path(r2.call_id, 0).exists()
    gate.set()
    wait_for_thumbnails()
    assert archive.thumbnail_path(r2.call_id, 0).exists()
    # a thumbs "folder" that is a file: logged, the call still fine
    (home() / "thumbs").rename(home() / "thumbs-old")
    (home() / "thumbs").write_text("not a folder")
    monkeypatch.setattr(archive, "_small_webp", real)
    with caplog.at_level(logging.WARNING, logger="shark_nb"):
        r3 = c.generate("a third fox", quality="low", size="1024x1024")
        wait_for_thumbnails()
    assert len(r3.images) == 1 and caplog.text.count("no history thumbnail") >= 2


def test_a_failure_to_schedule_is_logged_not_raised(clients, monkeypatch, caplog):
    c = clients(session_ledger("2026-06-03T00-00-00Z"))
    monkeypatch.setattr(archive, "_pool", None)
    monkeypatch.setattr(archive, "ThreadPoolExecutor", lambda **kw: (_ for _ in ()).throw(RuntimeError("no threads")))
    with caplog.at_level(logging.WARNING, logger="shark_nb"):
        r = c.generate("a fox", quality="low", size="1024x1024")
    assert len(r.images) == 1 and "could not schedule history thumbnails" in caplog.text


# ------------------------------------------------------------------------- saved paths recorded

def test_result_save_records_the_paths_and_keeps_the_calls_time_and_totals(clients, tmp_path):
    c = clients(session_ledger("2026-07-01T00-00-00Z"))
    r = c.generate("a fox", quality="low", size="1024x1024", n=2)
    before = c.ledger.records[0]
    credits, calls = c.ledger.total_credits, c.ledger.calls
    first = r.save(tmp_path / "a")
    second = r[0].save(tmp_path / "b")
    rec = c.ledger.records[0]
    assert rec["saved"] == [str(p.resolve()) for p in [*first, second]]
    assert rec["time"] == before["time"] and rec["outcome"] == "ok" and rec["credit"] == before["credit"]
    assert (c.ledger.total_credits, c.ledger.calls) == (credits, calls)
    reread = Ledger.load(c.ledger.path).records
    assert reread[0]["saved"] == rec["saved"] and len(reread) == 1
    e = shark_nb.history().entries[0]
    assert e.files == [*(p.resolve() for p in first), second.resolve()]
    second.unlink()
    assert e.existing_files == [p.resolve() for p in first]
    view = shark_nb.history().widget
    shown = view.rows.children[0].children[1].value
    assert "a-fox-1.png" in shown and "1 moved or deleted" in shown
    view.close()


def test_a_call_id_the_ledger_does_not_hold_writes_nothing(tmp_path):
    led = Ledger(tmp_path / "l.jsonl")
    assert led.note_saved("nope", [tmp_path / "x.png"]) is None
    assert not led.path.exists() and led.calls == 0


def test_a_ledger_that_cannot_record_the_save_costs_a_warning_not_the_files(clients, tmp_path, monkeypatch):
    c = clients(session_ledger("2026-07-02T00-00-00Z"))
    r = c.generate("a fox", quality="low", size="1024x1024")
    monkeypatch.setattr(c.ledger, "note_saved", lambda *a: (_ for _ in ()).throw(OSError("read-only")))
    with pytest.warns(UserWarning, match="could not record where"):
        paths = r.save(tmp_path)
    assert paths[0].exists()


def test_the_magic_and_the_studio_save_record_their_paths(tmp_path, monkeypatch):
    from IPython.utils.capture import capture_output

    from shark_nb import magic
    from shell_harness import magic_shell

    monkeypatch.chdir(tmp_path)
    with magic_shell() as shell:
        with capture_output():
            shell.run_cell("%shark --quality low --size 1024x1024 a fox from the magic").raise_error()
        result = shell.user_ns["_shark"]
        rec = magic.get_client().ledger.records[-1]
        assert rec["saved"] == [str(p.resolve()) for p in result.saved]
        assert Path(rec["saved"][0]).parent == (tmp_path / "shark-images").resolve()
        # the studio's Save button path (Gallery.save)
        from shark_nb.ui.gallery import Gallery
        import ipywidgets as widgets

        gallery = Gallery(str(tmp_path / "studio-out"), use_as_reference=lambda img: None, status=lambda *a: None)
        path = asyncio.run(gallery.save(result[0], widgets.HTML(), widgets.Button()))
        rec = magic.get_client().ledger.records[-1]
        assert rec["saved"][-1] == str(path.resolve()) and len(rec["saved"]) == 2
        # %shark history WORDS shows the widget, searched
        with capture_output() as cap:
            shell.run_cell("%shark history magic").raise_error()
        assert any("application/vnd.jupyter.widget-view+json" in o.data for o in cap.outputs)
        with capture_output() as cap:
            shell.run_cell("%shark history").raise_error()
        assert any("application/vnd.jupyter.widget-view+json" in o.data for o in cap.outputs)
