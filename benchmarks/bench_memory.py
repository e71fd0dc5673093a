"""8. Memory: peak RSS of the client while it generates and saves images.

Each scenario runs in a fresh child process whose only job is the measured work; the simulator
serves from this (the parent) process over loopback, so its render cache is not counted. The
child warms up first (imports, connection pools, one small image saved), then resets its peak
(``echo 5 > /proc/self/clear_refs``) and reads ``VmRSS`` before and ``VmHWM`` (peak RSS) after:

* **4 × 2048x2048 PNG**: ``generate(n=4, size="2048x2048")`` then ``result.save(folder)``;
* **raw httpx** (the alternative for the first): the same POST, the four downloads in parallel with
  ``asyncio.gather``, each body written to a file;
* **batch of 64**: ``generate_many`` of 64 prompts (1024x1024 PNG, concurrency 8), each
  result saved; against a batch of 16 in the same way, to show what grows with the batch.

Reported per image: peak increase / images, against the image's own size. The images a call
returns are held in ``result.images[].data`` (the contract: the bytes as served), so what must stay
bounded is the rest — the *transient* memory above the held bytes. Goal: at most one transient
copy per image in flight (4 parallel downloads for one call; 8 calls for the batch at concurrency 8),
+10 % for the allocator, and for the batch a marginal cost of about one image per extra image (the
transient part does not grow with the batch).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from common import Row, kernel_env, mb, run_child, sim_server

CHILD = r"""
import json, os, sys, tempfile
def stat(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
import asyncio
import httpx
from shark_nb import Ledger, Shark
folder = tempfile.mkdtemp()
mode, count, kw = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
c = Shark(base_url=os.environ["SHARK_BASE_URL"], ledger=Ledger(os.path.join(folder, "l.jsonl")))
loop = asyncio.new_event_loop()
raw_client = httpx.AsyncClient(timeout=120)

def raw(prompt, n, **params):
    # the alternative: raw httpx, downloads in parallel, each body written to a file
    async def go():
        body = dict(model="openai/gpt-image-2", prompt=prompt, n=n, **params)
        r = await raw_client.post(os.environ["SHARK_BASE_URL"] + "/images/generations", json=body,
                                  headers={"Authorization": "Bearer " + os.environ["SHARK_API_KEY"]})
        got = await asyncio.gather(*(raw_client.get(d["url"]) for d in r.json()["data"]))
        return [g.content for g in got]
    datas = loop.run_until_complete(go())
    paths = []
    for i, d in enumerate(datas):
        paths.append(os.path.join(folder, f"raw-{prompt[:10]}-{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(d)
    class R:  # shaped like a result for the tally below
        images = [type("I", (), {"data": d}) for d in datas]
    return R, paths

# warm-up (imports, pools, connections, one image saved) on the path about to be measured
if mode == "raw":
    raw("warm-up", 1, size="1024x1024", quality="low")
else:
    c.generate("warm-up", n=1, size="1024x1024", quality="low").save(folder)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
rss0 = stat("VmRSS")
phases = {}
if mode == "one-before":  # the code before the two memory changes, for the before/after row
    from shark_nb import client as _client, images as _images
    async def _fetch(self, url):  # httpx reads the body as a list of chunks, then joins it
        response = await self._dl().get(url)
        return response, await response.aread()
    _client.AsyncShark._fetch = _fetch
    _chunks = _images._png_chunks  # PNG chunks copied, not viewed
    _images._png_chunks = lambda data, views=False: _chunks(data)
if mode in ("one", "one-before"):
    results = [c.generate("memory: a harbour at dawn", n=count, **kw)]
    phases["generate"] = stat("VmHWM") - rss0
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss1 = stat("VmRSS")
    saved = results[0].save(folder)
    phases["save"] = stat("VmHWM") - rss1
elif mode == "raw":
    r, saved = raw("memory: a harbour at dawn", count, **kw)
    results = [r]
else:
    prompts = [f"memory batch {i}: a small boat" for i in range(count)]
    results = c.generate_many(prompts, concurrency=8, **kw)
    assert not [r for r in results if isinstance(r, Exception)], results
    saved = [p for r in results for p in r.save(folder)]
peak = stat("VmHWM")
held = sum(len(im.data) for r in results for im in r.images)
images = sum(len(r.images) for r in results)
if mode.startswith("one"):
    peak = rss0 + max(phases["generate"], rss1 - rss0 + phases["save"])
print(json.dumps(dict(rss0=rss0, peak=peak, held=held, images=images, saved=len(saved), reset=reset, phases=phases)))
"""


def _child(env: dict, mode: str, count: int, **kw) -> dict:
    out = run_child(CHILD, mode, str(count), json.dumps(kw), env=env, timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda d: d["peak"] - d["rss0"])[len(runs) // 2]


def run(quick: bool) -> list[Row]:
    big = dict(size="1024x1024") if quick else dict(size="2048x2048")
    batch, small_batch = (8, 4) if quick else (64, 16)
    with tempfile.TemporaryDirectory(prefix="shark-bench-m-") as tmp, sim_server(latency=0.0) as server:
        env = kernel_env(Path(tmp) / "home", server.base_url)
        reps = 1 if quick else 3
        ones, olds, raws = [], [], []
        for _ in range(reps):   # interleaved; the median run (by peak) of each is reported
            ones.append(_child(env, "one", 4, **big))
            olds.append(_child(env, "one-before", 4, **big))
            raws.append(_child(env, "raw", 4, **big))
        one, raw = _median_run(ones), _median_run(raws)
        old = _median_run(olds)
        small = _child(env, "many", small_batch, size="1024x1024")
        many = _child(env, "many", batch, size="1024x1024")
    rows = []
    inc = one["peak"] - one["rss0"]
    per = inc / one["images"]
    img = one["held"] / one["images"]
    transient = inc - one["held"]
    bound = 1.1 * 4 * img          # one transient copy per in-flight image (4 download in parallel)
    ok = transient <= bound and one["saved"] == one["images"]
    rows.append(Row(
        "8a", f"peak RSS while generating + saving 4 images at {big['size']} (PNG)",
        f"+{mb(inc)} peak = {mb(per)} per image ({inc / one['held']:.2f}x the images' bytes)",
        f"raw httpx + file writes +{mb(raw['peak'] - raw['rss0'])}; image size {mb(img)}",
        f"{inc / (raw['peak'] - raw['rss0']):.2f}x raw httpx; transient above the held images "
        f"{mb(transient)} = {transient / img:.1f} images",
        "transient ≤ 1 copy per in-flight image (4, +10 %)", ok,
        "" if ok else "transient copies of the images pile up during download/save",
        [f"median of {len(ones)} runs each (peaks: shark_nb "
         + ", ".join(mb(d["peak"] - d["rss0"]) for d in ones) + "; raw httpx "
         + ", ".join(mb(d["peak"] - d["rss0"]) for d in raws) + ")",
         f"phases: download {mb(one['phases']['generate'])} peak (the 4 downloads run in parallel, each into "
         f"one buffer of the announced size), save {mb(one['phases']['save'])} peak on top of the held images"]))
    inc_m = many["peak"] - many["rss0"]
    inc_s = small["peak"] - small["rss0"]
    # marginal cost of an image: what the 48 extra images of the larger batch added to the peak
    marginal = (inc_m - inc_s) / (many["images"] - small["images"])
    img_m = many["held"] / many["images"]
    transient_m = inc_m - many["held"]
    ok_m = transient_m <= 1.1 * 8 * img_m and marginal <= 1.1 * img_m and many["saved"] == many["images"]
    rows.append(Row(
        "8b", f"peak RSS while generate_many of {batch} runs (1024x1024 PNG, concurrency 8), all saved",
        f"+{mb(inc_m)} peak = {mb(inc_m / many['images'])} per image; marginal {mb(marginal)} per extra image",
        f"image size {mb(img_m)}; batch of {small_batch}: +{mb(inc_s)}",
        f"transient above the held images {mb(transient_m)} = {transient_m / img_m:.1f} images; "
        f"{inc_m / many['held']:.2f}x the images' bytes",
        "transient ≤ 1 copy per in-flight call (8, +10 %); marginal ≤ 1.1 images", ok_m,
        "" if ok_m else "memory beyond the returned images grows with the batch",
        [f"the batch's images stay in the returned results (the contract: .data holds the bytes as served); "
         "what must not grow is everything else — the marginal cost of one more image is its own size, and "
         f"the peak is {mb(inc_m - many['held'])} above the held bytes (in-flight downloads, bounded by the "
         f"concurrency); VmHWM reset with /proc/self/clear_refs: {many['reset']}"]))
    inc_old = old["peak"] - old["rss0"]
    rows.append(Row(
        "8c", f"code changes (context): peak of generate + save, 4 × {big['size']} PNG, after vs before "
              "(download into one Content-Length buffer; PNG chunks as memoryviews when saving)",
        f"after +{mb(inc)} (download {mb(one['phases']['generate'])}, save +{mb(one['phases']['save'])})",
        f"before +{mb(inc_old)} (download {mb(old['phases']['generate'])}, save +{mb(old['phases']['save'])})",
        f"{inc_old / inc:.2f}x less at the peak; save {old['phases']['save'] / max(one['phases']['save'], 1):.1f}x less",
        "", None,
        "before, each downloading image was held twice (httpx's chunk list, then the joined bytes; the freed "
        "chunks stay in the heap), and saving copied the image data three times (chunk payload, raw chunk, "
        "joined file); now the download fills one buffer of the announced size, and saving copies once",
        ["before runs: " + ", ".join(mb(d["peak"] - d["rss0"]) for d in olds)]))
    return rows
