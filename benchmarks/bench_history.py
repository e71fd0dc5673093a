"""10. History: opening ``shark_nb.history()`` over 10,000 past calls.

A ``$SHARK_NB_HOME`` is filled with 10,000 calls (1,000 with --quick) in 10 session files, written
as the client writes them — three lines per call (the write-ahead ``sending`` line, the ``ok``
line before the downloads, the final one) — a fifth of them saved (a ``saved`` line), with
thumbnails for the newest 200 calls (4 KB WebP files, as the client leaves them) and a few damaged
lines. Timed, in this process:

* **open**: ``shark_nb.history()`` — read every session file (the ledger's own forgiving reader),
  newest first — and build the widget with its first page (20 calls, their thumbnails read);
* **search**: typing a word into the search box (filter 10,000 prompts, render the page);
* **next page**: the "Older" button.

Alternative (same run): the floor — ``json.loads`` of every line of every file and nothing else.
Goal: open < 1 s.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

from common import Row, Sample

WORDS = ("fox", "owl", "lighthouse", "snow", "blue", "neon", "city", "forest", "river", "cat", "dragon", "glass")
MODELS = (("openai/gpt-image-2", {"n": 1, "size": "1024x1024", "quality": "low", "background": "auto",
                                  "output_format": "png"}),
          ("google/gemini-3.1-flash-image-preview", {"n": 1, "image_size": "1K", "aspect_ratio": "16:9",
                                                     "response_format": "b64_json"}))


def _thumb_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((256, 256), 40).convert("RGB").save(buf, "WEBP", quality=70)
    return buf.getvalue()


def make_history(home: Path, calls: int, sessions: int = 10, thumbs: int = 200, seed: int = 7) -> None:
    """Write ``calls`` calls over ``sessions`` ledger files under ``home`` (see the module doc)."""
    rng = random.Random(seed)
    folder = home / "ledger"
    folder.mkdir(parents=True)
    (home / "thumbs").mkdir()
    thumb = _thumb_bytes()
    per = calls // sessions
    t0 = 1_764_000_000
    k = 0
    for s in range(sessions):
        stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(t0 + s * 86400))
        lines = []
        for _ in range(per):
            model, params = MODELS[k % 2]
            call_id = uuid.UUID(int=rng.getrandbits(128)).hex
            when = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t0 + s * 86400 + k))
            prompt = " ".join(rng.choice(WORDS) for _ in range(8)) + f" #{k}"
            base = {"v": 1, "call_id": call_id, "time": when, "tracing_id": str(uuid.uuid4()), "model": model,
                    "prompt": prompt, "params": {"model": model, **params, "wait": "sync"}, "inputs": [],
                    "task_id": None, "status": None, "images": 0, "usage": None, "credit": None, "usd": None,
                    "estimate_credit": 72.0, "latency_s": 0.0, "offline": True, "error": None}
            lines.append({**base, "outcome": "sending"})
            done = {**base, "outcome": "ok", "status": 200, "credit": 70.5, "usd": 0.00705, "images_billed": 1,
                    "urls": [], "usage": {"input_tokens": 12, "output_tokens": 272, "total_tokens": 284}}
            lines.append(done)
            lines.append({**done, "images": 1, "latency_s": 1.2})
            if k % 5 == 0:
                lines.append({"v": 1, "call_id": call_id, "time": when, "saved": [f"/tmp/shark-images/{k}.png"]})
            if k >= calls - thumbs:
                (home / "thumbs" / f"{call_id}-0.webp").write_bytes(thumb)
            k += 1
        data = "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)
        data += '{"torn": \n[1, 2]\n'  # two damaged lines per file: skipped, counted
        (folder / f"{stamp}-{1000 + s}-{s:04x}.jsonl").write_text(data)


def _floor(home: Path) -> int:
    n = 0
    for p in sorted((home / "ledger").glob("*.jsonl")):
        for line in p.read_bytes().split(b"\n"):
            try:
                json.loads(line)
                n += 1
            except ValueError:
                pass
    return n


def run(quick: bool) -> list[Row]:
    import shark_nb

    calls = 1_000 if quick else 10_000
    reps = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="shark-bench-h-") as tmp:
        home = Path(tmp) / "home"
        make_history(home, calls)
        opened, floor, search, older = Sample(), Sample(), Sample(), Sample()
        shown = 0
        for i in range(reps):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for which in order:
                if which == 1:
                    t = time.perf_counter()
                    _floor(home)
                    floor.add(time.perf_counter() - t)
                    continue
                t = time.perf_counter()
                h = shark_nb.history(home=home)
                view = h.widget
                opened.add(time.perf_counter() - t)
                shown = len(h.all_entries)
                t = time.perf_counter()
                view.search.value = "fox blue"
                search.add(time.perf_counter() - t)
                t = time.perf_counter()
                view.next.click()
                older.add(time.perf_counter() - t)
                view.close()
        assert shown == calls, f"the history shows {shown} calls, not {calls}"
        ok = opened.median < 1.0
        rows = [
            Row("10a", f"shark_nb.history() over {calls:,} past calls (10 sessions): read + first page",
                opened.s(3), f"json.loads of every line: {floor.s(3)}",
                f"{opened.median / floor.median:.1f}x the floor", "< 1 s", ok,
                "" if ok else f"opening took {opened.median:.2f} s",
                [f"every file read with Ledger.load (merge by call_id, damaged lines counted); "
                 f"{calls:,} entries sorted newest first; one page of 20 widgets; thumbnails read for that page only"]),
            Row("10b", f"search 'fox blue' over {calls:,} prompts + render the page", search.ms(1), "", "", "", None),
            Row("10c", "next page (Older)", older.ms(1), "", "", "", None),
        ]
        return rows
