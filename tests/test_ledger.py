"""The session ledger: storage, merge, money, budget, durability, exports, HTML."""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

import shark_nb
from shark_nb import ledger as ledger_mod
from shark_nb.errors import BudgetExceededError, ValidationError
from shark_nb.ledger import Ledger, LedgerWarning, default_ledger, reset_default_ledger

REPO_ROOT = Path(shark_nb.__file__).resolve().parent.parent
POSIX = os.name == "posix"


def make_entry(**overrides):
    entry = {
        "tracing_id": "trace-1",
        "model": "openai/gpt-image-2",
        "prompt": "a red fox in the snow",
        "params": {"n": 2, "size": "1024x1024", "quality": "low", "background": "auto",
                   "output_format": "png", "wait": "sync"},
        "inputs": [{"role": "image", "bytes": 123, "sha256": "ab" * 32, "width": 64, "height": 64,
                    "format": "png"},
                   {"role": "mask", "url": "https://example.com/m.png"}],
        "task_id": None,
        "outcome": "ok",
        "status": 200,
        "images": 2,
        "usage": {"input_tokens": 10, "output_tokens": 544, "total_tokens": 554},
        "credit": 218.1,
        "usd": 0.02181,
        "estimate_credit": 218.1,
        "latency_s": 1.25,
        "offline": True,
        "error": None,
    }
    entry.update(overrides)
    return entry


def file_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line.strip()]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(autouse=True)
def _fresh_default_ledger():
    reset_default_ledger()
    yield
    reset_default_ledger()


# ------------------------------------------------------------------------------ storage


def test_default_path_is_a_lazily_created_session_file():
    led = Ledger()
    home = Path(os.environ["SHARK_NB_HOME"])
    assert led.path.parent == home / "ledger"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-%d-[0-9a-f]{4}\.jsonl" % os.getpid(), led.path.name)
    assert not led.path.exists()  # nothing is created before the first record
    assert not (home / "ledger").exists()
    led.record(make_entry())
    assert led.path.is_file()


def test_record_adds_version_time_and_call_id_and_writes_one_exact_line(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    stored = led.record(make_entry(prompt="café ☕"))
    assert stored["v"] == 1
    assert re.fullmatch(r"[0-9a-f]{32}", stored["call_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stored["time"])
    raw = led.path.read_bytes()
    expected = json.dumps(stored, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
    assert raw == expected.encode("utf-8")
    # Given values are kept.
    again = led.record(make_entry(call_id="c" * 32, time="2026-01-01T00:00:00Z", v=1))
    assert again["call_id"] == "c" * 32 and again["time"] == "2026-01-01T00:00:00Z"


def test_append_and_reload_round_trip(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    stored = [led.record(make_entry(prompt=f"prompt {i}", credit=100.0 + i)) for i in range(3)]
    assert len(file_lines(led.path)) == 3
    back = Ledger.load(led.path)
    assert back.path == led.path
    assert back.records == stored == led.records
    assert back.calls == 3 and back.images == 6
    assert back.total_credits == pytest.approx(303.0)
    # A loaded ledger can be appended to.
    back.record(make_entry())
    assert len(file_lines(led.path)) == 4
    assert Ledger.load(led.path).calls == 4


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        Ledger.load(tmp_path / "nope.jsonl")


def test_records_are_copies(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry())
    led.records[0]["credit"] = 1e9
    led.records[0]["usage"]["total_tokens"] = 0
    assert led.total_credits == pytest.approx(218.1)
    assert led.total_tokens["total_tokens"] == 554


def test_lines_with_the_same_call_id_merge_last_wins_first_seen_order(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry(call_id="a" * 32, outcome="pending", task_id="task_1", credit=None,
                          images=0, usage=None, estimate_credit=500.0))
    led.record(make_entry(call_id="b" * 32, credit=10.0))
    assert led.unknown_cost_calls == 1
    led.record({"call_id": "a" * 32, "outcome": "ok", "credit": 480.5, "images": 2, "status": 200})
    recs = led.records
    assert [r["call_id"] for r in recs] == ["a" * 32, "b" * 32]
    a = recs[0]
    assert a["outcome"] == "ok" and a["credit"] == 480.5 and a["images"] == 2
    assert a["task_id"] == "task_1"  # kept from the first line
    assert led.calls == 2 and led.unknown_cost_calls == 0
    assert led.total_credits == pytest.approx(490.5)
    assert len(file_lines(led.path)) == 3  # the file keeps every line
    assert Ledger.load(led.path).records == recs


# -------------------------------------------------------------------------------- money


def test_unknown_credit_is_never_counted_as_zero(tmp_path):
    led = Ledger(tmp_path / "s.jsonl", budget=10_000)
    led.record(make_entry(credit=100.0))
    led.record(make_entry(credit=None, usd=None, estimate_credit=250.0))      # ok, price missing
    led.record(make_entry(outcome="unknown", credit=None, estimate_credit=40.0, images=0))
    led.record(make_entry(outcome="pending", credit=None, estimate_credit=10.0, images=0))
    led.record(make_entry(outcome="content_moderation", status=400, credit=None,
                          estimate_credit=999.0, images=0))                    # not charged
    led.record(make_entry(outcome="cancelled", credit=None, estimate_credit=999.0, images=0))
    assert led.total_credits == pytest.approx(100.0)
    assert led.unknown_cost_calls == 3
    assert led.committed_credits == pytest.approx(100.0 + 250.0 + 40.0 + 10.0)
    assert led.remaining == pytest.approx(10_000 - 400.0)
    assert "3 calls of unknown cost" in led.summary()
    assert led.calls == 6


def test_known_credit_counts_whatever_the_outcome(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry(outcome="download_error", credit=50.0, images=0))
    led.record(make_entry(outcome="cancelled", credit=12.5, images=0))
    led.record(make_entry(outcome="download_error", credit=None, estimate_credit=7.0, images=0))
    assert led.total_credits == pytest.approx(62.5)
    assert led.total_usd == pytest.approx(0.00625)
    assert led.unknown_cost_calls == 1
    assert led.committed_credits == pytest.approx(69.5)


def test_client_side_refusals_are_not_calls(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry())
    led.record(make_entry(outcome="budget_exceeded", credit=None, images=0, status=None))
    assert led.calls == 1
    assert led.unknown_cost_calls == 0


def test_totals_tokens_and_images(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry())
    led.record(make_entry(usage=None, images=1))
    led.record(make_entry(usage={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}))
    assert led.total_tokens == {"input_tokens": 11, "output_tokens": 546, "total_tokens": 557}
    assert led.images == 5


def test_summary_format(tmp_path):
    led = Ledger(tmp_path / "s.jsonl", budget=10_000)
    led.record(make_entry(images=3, credit=1000.0))
    led.record(make_entry(images=4, credit=234.5))
    led.record(make_entry(images=0, credit=None, outcome="unknown", estimate_credit=0.0))
    assert led.summary() == ("3 calls · 7 images · 1,234.5 credit ($0.12) · 1 call of unknown cost · "
                             "budget 10,000 credit, 8,765.5 left")
    empty = Ledger(tmp_path / "e.jsonl")
    assert empty.summary() == "0 calls · 0 images · 0 credit ($0.00)"


def test_repr_is_short_and_never_shows_prompts(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry(prompt="my secret prompt " * 50))
    text = repr(led)
    assert "secret" not in text
    assert "1 call" in text and len(text) < 300


# ------------------------------------------------------------------------------- budget


def test_budget_check_raises_naming_estimate_and_remaining(tmp_path):
    led = Ledger(tmp_path / "s.jsonl", budget=1000)
    led.record(make_entry(credit=700.0))
    led.check_budget(300.0)  # exactly what is left: fine
    with pytest.raises(BudgetExceededError) as info:
        led.check_budget(1234.5)
    err = info.value
    assert err.estimate == pytest.approx(1234.5)
    assert err.remaining == pytest.approx(300.0)
    msg = str(err)
    assert "1,234.5" in msg and "300" in msg
    assert "%shark budget" in msg and "ledger.budget" in msg
    assert isinstance(err, shark_nb.errors.SharkError)


def test_budget_counts_estimates_of_unknown_cost_calls(tmp_path):
    led = Ledger(tmp_path / "s.jsonl", budget=1000)
    led.record(make_entry(outcome="pending", credit=None, estimate_credit=900.0, images=0))
    with pytest.raises(BudgetExceededError):
        led.check_budget(200.0)
    led.check_budget(100.0)


def test_no_budget_is_a_no_op_and_remaining_can_go_negative(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    assert led.budget is None and led.remaining is None
    led.check_budget(1e12)
    led.record(make_entry(credit=500.0))
    led.budget = 200
    assert led.remaining == pytest.approx(-300.0)
    assert "300 over" in led.summary()
    with pytest.raises(BudgetExceededError, match="over"):
        led.check_budget(0.5)


def test_budget_validation_and_usd(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    for bad in (-1, float("nan"), float("inf"), "10", True):
        with pytest.raises(ValidationError):
            led.budget = bad
    with pytest.raises(ValidationError):
        Ledger(tmp_path / "t.jsonl", budget=-5)
    led.set_budget_usd(2.5)
    assert led.budget == pytest.approx(25_000.0)
    led.set_budget_usd(None)
    assert led.budget is None
    with pytest.raises(ValidationError):
        led.set_budget_usd(-1)
    led.budget = 0
    assert led.budget == 0.0
    assert not led.path.exists()  # setting a budget writes nothing


# ------------------------------------------------------------------------ files & modes


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_file_is_0600_and_folder_0700_even_with_a_permissive_umask():
    old = os.umask(0)
    try:
        led = Ledger()
        led.record(make_entry())
    finally:
        os.umask(old)
    assert stat.S_IMODE(led.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(led.path.parent.stat().st_mode) == 0o700


def test_torn_last_line_is_skipped_with_a_warning_and_appends_start_fresh(tmp_path):
    path = tmp_path / "s.jsonl"
    led = Ledger(path)
    good = [led.record(make_entry(prompt=f"p{i}")) for i in range(3)]
    full = json.dumps(make_entry(call_id="d" * 32), separators=(",", ":")).encode()
    with open(path, "ab") as fh:
        fh.write(full[: len(full) // 2])  # a crash mid-write: no newline, invalid JSON
    with pytest.warns(LedgerWarning, match="last line"):
        back = Ledger.load(path)
    assert back.records == good
    # The next record must not be glued onto the torn fragment.
    added = back.record(make_entry(prompt="after the crash"))
    with pytest.warns(LedgerWarning, match="line 4"):  # the torn fragment, now mid-file
        again = Ledger.load(path)
    assert again.records == good + [added]


def test_complete_last_line_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"call_id": "x", "credit": 5.0, "outcome": "ok"}), encoding="utf-8")
    with pytest.warns(LedgerWarning, match="no newline"):
        back = Ledger.load(path)
    assert back.total_credits == 5.0


def test_invalid_lines_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = [json.dumps({"call_id": "a", "credit": 1.0, "outcome": "ok"}), "{oops", "[1, 2]",
             "", json.dumps({"call_id": "b", "credit": 2.0, "outcome": "ok"}), "\xff"]
    path.write_bytes(("\n".join(lines[:5]) + "\n").encode() + b"\xff\xfe\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = Ledger.load(path)
    assert len([w for w in caught if issubclass(w.category, LedgerWarning)]) == 3
    assert [r["call_id"] for r in back.records] == ["a", "b"]
    assert back.total_credits == 3.0


def test_values_json_cannot_hold_are_sanitised_not_lost(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    with pytest.warns(LedgerWarning):
        stored = led.record(make_entry(latency_s=float("nan"), extra=object()))
    assert stored["latency_s"] is None and isinstance(stored["extra"], str)
    assert Ledger.load(led.path).records == [stored]


def test_a_failed_write_is_kept_in_memory_and_retried(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    led = Ledger(blocker / "s.jsonl")
    with pytest.warns(LedgerWarning, match="kept in memory"):
        first = led.record(make_entry(credit=11.0))
    assert led.unsaved == 1 and led.total_credits == 11.0
    assert "not yet saved" in led.summary()
    blocker.unlink()
    second = led.record(make_entry(credit=22.0))
    assert led.unsaved == 0
    assert Ledger.load(led.path).records == [first, second]


def test_sessions_newest_first(tmp_path):
    home = tmp_path / "home"
    folder = home / "ledger"
    folder.mkdir(parents=True)
    names = ["2026-11-26T13-45-02Z-1-aaaa.jsonl", "2026-11-27T09-00-00Z-2-bbbb.jsonl",
             "2025-01-01T00-00-00Z-3-cccc.jsonl"]
    for n in names:
        (folder / n).write_text("")
    (folder / "notes.txt").write_text("")
    assert [p.name for p in Ledger.sessions(home)] == [names[1], names[0], names[2]]
    assert Ledger.sessions(tmp_path / "nowhere") == []
    # Default home: the current session shows up once it has a file.
    led = Ledger()
    led.record(make_entry())
    assert Ledger.sessions()[0] == led.path


def test_default_ledger_is_shared_and_resettable():
    a = default_ledger()
    assert default_ledger() is a
    reset_default_ledger()
    assert default_ledger() is not a
    assert ledger_mod.default_ledger() is default_ledger()


# --------------------------------------------------------------------------- durability

_KILL_CHILD = r"""
import json, sys
from shark_nb.ledger import Ledger

led = Ledger(sys.argv[1])
for i in range(1_000_000):
    entry = {"v": 1, "call_id": "%032x" % i, "time": "2026-11-26T13:45:02.123Z",
             "outcome": "ok", "credit": 1.5, "images": 1, "prompt": ""}
    size = len(json.dumps(entry, separators=(",", ":")).encode()) + 1
    entry["prompt"] = "x" * (256 - size)  # every line exactly 256 bytes (see the test)
    led.record(entry)                     # returns after os.write + os.fsync
    print(entry["call_id"], flush=True)
"""


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_sigkill_mid_loop_leaves_only_complete_lines_and_loses_nothing_fsynced(tmp_path):
    # Why 256-byte lines: Linux can split one buffered write at a page boundary when a fatal
    # signal arrives, so "one os.write = whole line" holds for lines that do not straddle a
    # 4 KiB page. Lines of exactly 256 bytes never do, which makes this test deterministic;
    # the loader test above covers what happens to a torn tail.
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD)
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            env=child_env())
    reported = []
    try:
        while len(reported) < 200:
            line = proc.stdout.readline()
            assert line, "the child died early"
            reported.append(line.decode().strip())
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reported += rest.decode().split()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    ids = [json.loads(line)["call_id"] for line in lines]  # every line is complete JSON
    assert all(len(line) == 255 for line in lines)
    # Everything reported as fsynced is there, in order; at most one more record was written
    # after the child's last print and before the kill.
    assert ids[: len(reported)] == reported
    assert len(reported) <= len(ids) <= len(reported) + 1
    assert ids == ["%032x" % i for i in range(len(ids))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Ledger.load(path).calls == len(ids)


_WRITER_CHILD = r"""
import sys
from shark_nb.ledger import Ledger

path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
led = Ledger(path)
sys.stdin.readline()  # wait for "go" so both writers start together
for i in range(count):
    # varied sizes, some long lines spanning pages
    led.record({"call_id": f"{tag}-{i:05d}", "writer": tag, "i": i, "outcome": "ok", "credit": 1.0,
                "prompt": tag * (10 + (i * 37) % 6000)})
print("done", flush=True)
"""


def test_two_processes_appending_to_the_same_file(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER_CHILD)
    path = tmp_path / "shared.jsonl"
    procs = [subprocess.Popen([sys.executable, str(script), str(path), tag, "500"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env())
             for tag in ("A", "B")]
    outs = [p.communicate(b"go\n", timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and all(b"done" in o for o in outs)
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 1000
    entries = [json.loads(line) for line in lines]  # no interleaved or torn line
    for tag in ("A", "B"):
        mine = [e["i"] for e in entries if e["writer"] == tag]
        assert mine == list(range(500))  # each writer's lines whole and in order
        assert all(e["prompt"] == tag * len(e["prompt"]) for e in entries if e["writer"] == tag)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = Ledger.load(path)
    assert back.calls == 1000 and back.total_credits == 1000.0


def test_threads_appending_concurrently(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    threads_n, per_thread = 8, 50
    barrier = threading.Barrier(threads_n)
    errors = []

    def work(t):
        try:
            barrier.wait()
            for i in range(per_thread):
                led.record(make_entry(prompt=f"t{t}-{i}" * (1 + i % 50), credit=1.0))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    total = threads_n * per_thread
    assert led.calls == total and led.total_credits == pytest.approx(total)
    lines = file_lines(led.path)
    assert len(lines) == total
    ids = {json.loads(line)["call_id"] for line in lines}
    assert len(ids) == total
    assert Ledger.load(led.path).records == led.records


# ------------------------------------------------------------------------------ exports


def test_to_csv_content(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry(call_id="a" * 32, prompt='He said "hi", then, left\nnew line'))
    led.record(make_entry(call_id="b" * 32, credit=None, usd=None, usage=None, inputs=[], outcome="unknown",
                          extra_field={"k": 1}))
    out = led.to_csv(tmp_path / "out" / "ledger.csv")
    assert out == tmp_path / "out" / "ledger.csv"
    assert [p.name for p in out.parent.iterdir()] == ["ledger.csv"]  # no temp file left behind
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    cols = list(rows[0].keys())
    for col in ("time", "call_id", "tracing_id", "prompt", "n", "size", "quality", "background",
                "output_format", "wait", "inputs", "outcome", "images", "input_tokens",
                "output_tokens", "total_tokens", "credit", "usd", "estimate_credit", "latency_s",
                "offline", "extra_field"):
        assert col in cols
    assert "params" not in cols and "usage" not in cols
    a, b = rows
    assert a["prompt"] == 'He said "hi", then, left\nnew line'
    assert a["n"] == "2" and a["size"] == "1024x1024" and a["quality"] == "low"
    assert a["inputs"] == "2" and b["inputs"] == "0"
    assert a["output_tokens"] == "544" and b["output_tokens"] == ""
    assert float(a["credit"]) == pytest.approx(218.1)
    assert b["credit"] == ""  # unknown stays unknown, not 0
    assert json.loads(b["extra_field"]) == {"k": 1}
    # Overwrite in place; an existing folder gets <session>.csv.
    led.to_csv(out)
    into_dir = led.to_csv(tmp_path / "out")
    assert into_dir == tmp_path / "out" / "s.csv"


def test_to_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    led = Ledger(tmp_path / "s.jsonl")
    empty = led.to_dataframe()
    assert len(empty) == 0 and "credit" in empty.columns
    led.record(make_entry(credit=100.0))
    led.record(make_entry(credit=None, outcome="unknown", usage=None))
    df = led.to_dataframe()
    assert len(df) == 2
    assert df["credit"].iloc[0] == 100.0 and math.isnan(df["credit"].iloc[1])
    assert df["credit"].sum() == 100.0
    assert list(df["quality"]) == ["low", "low"]
    assert list(df["inputs"]) == [2, 2]
    assert str(df["time"].dt.tz) == "UTC"
    assert isinstance(df, pd.DataFrame)


def test_to_dataframe_without_pandas(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    led = Ledger(tmp_path / "s.jsonl")
    with pytest.raises(ImportError, match="pip install pandas"):
        led.to_dataframe()


# --------------------------------------------------------------------------------- HTML


def test_html_escapes_prompts_and_shows_totals_and_budget(tmp_path):
    led = Ledger(tmp_path / "s.jsonl", budget=10_000)
    evil = '<script>alert("x")</script> & <b>bold</b>'
    led.record(make_entry(prompt=evil, error=None))
    led.record(make_entry(prompt="x" * 1000, credit=None, outcome="unknown", offline=False,
                          error='<img src=x onerror="boom">'))
    out = led._repr_html_()
    assert "<script>" not in out and "<b>bold" not in out and "<img" not in out
    assert "&lt;script&gt;" in out and "&amp;" in out
    assert "x" * 501 not in out  # truncated: 80 characters shown, 500 in the tooltip
    assert ">" + "x" * 79 + "…<" in out
    assert "unknown" in out and "offline" in out
    assert "Total" in out and "Budget 10,000 credit" in out
    assert "1024x1024 · low · n=2" in out and ">gpt-image-2<" in out  # the model's short name


def test_html_shows_the_last_50_rows_newest_last(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    for i in range(60):
        led.record(make_entry(prompt=f"prompt number {i:03d}"))
    out = led._repr_html_()
    assert "…10 earlier calls" in out
    assert "prompt number 009" not in out and "prompt number 010" in out
    assert out.index("prompt number 010") < out.index("prompt number 059")
    assert "No budget set" in out


# ----------------------------------------------------------- parameters of whatever model


def _call(model, **fields):
    from shark_nb.request import build_request

    req = build_request("a fox", model=model, **fields)
    return make_entry(model=req.model, params=req.params())


@pytest.mark.parametrize("model, fields, shown", [
    ("gpt-image-2", dict(n=2, size="1024x1024", quality="low"), "1024x1024 · low · n=2"),
    ("gpt-image-2", {}, "auto · auto · n=1"),                      # the price fields, even at default
    ("gpt-image-2", dict(background="opaque", output_format="webp"), "auto · auto · opaque · webp · n=1"),
    ("gemini", dict(aspect_ratio="16:9", image_size="2K", n=2), "2K · 16:9 · n=2"),
    ("gemini", dict(seed=7), "seed=7 · 1K"),
    ("seedream", dict(size="1024*1024"), "1024*1024"),
    ("midjourney", {}, "version=7 · quality=1"),
    ("midjourney", dict(stylize=250, aspect_ratio="16:9"), "16:9 · version=7 · quality=1 · stylize=250"),
    ("grok-edit", dict(image="https://example.com/in.png"), "defaults"),
])
def test_the_settings_column_shows_that_models_own_settings(tmp_path, model, fields, shown):
    from shark_nb.ledger import settings_summary

    entry = _call(model, **fields)
    assert settings_summary(entry["model"], entry["params"]) == shown
    led = Ledger(tmp_path / "s.jsonl")
    led.record(entry)
    assert f">{html.escape(shown)}</span>" in led._repr_html_()


def test_the_settings_of_a_model_shark_nb_does_not_know_are_shown_as_they_are(tmp_path):
    from shark_nb.ledger import settings_summary

    params = {"model": "acme/painter-9", "style": "oil", "steps": 30, "wait": "sync"}
    assert settings_summary("acme/painter-9", params) == "style=oil · steps=30"
    assert settings_summary("acme/painter-9", "garbage") == "defaults"
    led = Ledger(tmp_path / "s.jsonl")
    led.record(make_entry(model="acme/painter-9", params=params))
    out = led._repr_html_()
    assert "style=oil · steps=30" in out and ">acme/painter-9<" in out


def test_csv_columns_are_the_union_of_the_params_every_model_used(tmp_path):
    led = Ledger(tmp_path / "s.jsonl")
    led.record(_call("gpt-image-2", n=2, quality="low"))
    led.record(_call("gemini", aspect_ratio="16:9"))
    led.record(_call("midjourney", stylize=250))
    led.record(make_entry(params={"model": "other/model", "images": 3, "wait": "task"}))  # odd names
    out = led.to_csv(tmp_path / "l.csv")
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols, rows = reader.fieldnames, list(reader)
    params = cols[cols.index("prompt") + 1: cols.index("inputs")]
    assert params == ["n", "size", "quality", "background", "output_format", "wait", "image_size",
                      "aspect_ratio", "response_format", "version", "stylize", "chaos", "weird", "niji",
                      "seed", "params.model", "params.images"]
    assert cols.count("model") == 1 and "params" not in cols
    gpt, gemini, mj, odd = rows
    assert (gpt["quality"], gpt["aspect_ratio"]) == ("low", "")
    assert (gemini["aspect_ratio"], gemini["quality"], gemini["n"]) == ("16:9", "", "1")
    assert (mj["stylize"], mj["quality"], mj["aspect_ratio"]) == ("250", "1", "1:1")
    assert (odd["params.model"], odd["params.images"], odd["images"], odd["wait"]) == ("other/model", "3", "2", "task")


def test_dataframe_has_the_same_param_columns(tmp_path):
    pytest.importorskip("pandas")
    led = Ledger(tmp_path / "s.jsonl")
    led.record(_call("seedream", size="1024*1024"))
    led.record(_call("gemini", image_size="4K"))
    df = led.to_dataframe()
    assert list(df["size"].fillna("")) == ["1024*1024", ""] and list(df["image_size"].fillna("")) == ["", "4K"]
