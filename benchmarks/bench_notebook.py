"""5. Notebook weight: the saved .ipynb made with ``%%shark`` (its defaults: WebP previews of at
most 1024 px, full files on disk) against the naive way of showing the same images
(``IPython.display.Image(data)`` of the full PNG bytes), with the full-resolution files' size
alongside.

One notebook runs in a real kernel (nbclient): ``%load_ext shark_nb``, then 8 images at 2048x2048
and 8 at 1024x1024 made with the magic (``-n 4`` per cell, default quality and format: PNG), then
the same prompts and settings through the client and shown naively, then a cell that reports what
each magic image was (URL, SHA-256, saved path). The kernel talks to the loopback simulator in this
process. The cells are then split into two notebooks — the magic cells and the naive cells — and
each is saved with nbformat; their sizes are compared.

Nothing lost on disk: every magic image must be saved, and each file must be the bytes the server
served (checked against the server's own copy, by image id) plus metadata chunks only: the
non-text PNG chunks identical, the prompt readable from the file's metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from common import Row, kernel_env, mb, sim_server

_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _png_core(data: bytes) -> list[bytes]:
    from shark_nb.images import _png_chunks

    return [raw for ctype, _payload, raw in _png_chunks(data) if ctype not in _TEXT_CHUNKS]


def run(quick: bool) -> list[Row]:
    import nbformat
    from nbclient import NotebookClient

    from shark_nb.images import read_metadata

    n, per_cell = (1, 1) if quick else (8, 4)
    sets = [("2048x2048", "big"), ("1024x1024", "small")]
    cells_magic, cells_naive, names = [], [], []
    for size, stem in sets:
        for k in range(n // per_cell):
            name = f"{stem}{k}"
            prompt = f"notebook weight {stem} {k}: a harbour at dawn, fishing boats, gulls"
            names.append((name, prompt))
            cells_magic.append(f"%%shark -n {per_cell} --size {size} -o {name}\n{prompt}")
            cells_naive.append(f"r = get_client().generate({prompt!r}, n={per_cell}, size={size!r})\n"
                               "for im in r.images:\n    display(Image(im.data))\n"
                               f"naive_sha += [im.sha256 for im in r.images]")
    report = ("import json\nrows = []\n"
              f"for name in {[nm for nm, _ in names]!r}:\n"
              "    res = globals()[name]\n"
              "    rows += [dict(url=im.url, sha=im.sha256, path=str(p.resolve()), prompt=res.prompt)\n"
              "             for im, p in zip(res.images, res.saved)]\n"
              "print(json.dumps(dict(rows=rows, naive_sha=naive_sha)))")
    with tempfile.TemporaryDirectory(prefix="shark-bench-nb-") as tmp, sim_server(latency=0.0) as server:
        tmpd = Path(tmp)
        nb = nbformat.v4.new_notebook()
        setup_naive = ("from IPython.display import Image, display\nfrom shark_nb.magic import get_client\n"
                       "naive_sha = []")
        nb.cells = ([nbformat.v4.new_code_cell("%load_ext shark_nb")]
                    + [nbformat.v4.new_code_cell(c) for c in cells_magic]
                    + [nbformat.v4.new_code_cell(setup_naive)]
                    + [nbformat.v4.new_code_cell(c) for c in cells_naive]
                    + [nbformat.v4.new_code_cell(report)])
        with _environ(kernel_env(tmpd / "home", server.base_url)):
            NotebookClient(nb, kernel_name="python3", timeout=600,
                           resources={"metadata": {"path": tmp}}).execute()
        k = 1 + len(cells_magic)
        magic_nb = nbformat.v4.new_notebook(cells=nb.cells[:k])
        naive_nb = nbformat.v4.new_notebook(cells=nb.cells[k:k + 1 + len(cells_naive)])
        sizes = {}
        for label, book in (("magic", magic_nb), ("naive", naive_nb)):
            path = tmpd / f"{label}.ipynb"
            nbformat.write(book, path)
            sizes[label] = path.stat().st_size
        out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
        info = json.loads(out.strip().splitlines()[-1])
        rows = info["rows"]
        files = sorted((tmpd / "shark-images").glob("*"))
        disk = sum(f.stat().st_size for f in files)
        served_total, problems = 0, []
        for r in rows:
            image_id = Path(urlsplit(r["url"]).path).stem
            served = server.sim.image_bytes(image_id)
            served_total += len(served)
            saved = Path(r["path"]).read_bytes()
            if hashlib.sha256(served).hexdigest() != r["sha"]:
                problems.append(f"{image_id}: the kernel's bytes differ from what the server served")
            if _png_core(saved) != _png_core(served):
                problems.append(f"{Path(r['path']).name}: image chunks differ from the served file")
            if read_metadata(Path(r["path"])).get("prompt") != r["prompt"]:
                problems.append(f"{Path(r['path']).name}: prompt metadata missing")
        if sorted(info["naive_sha"]) != sorted(r["sha"] for r in rows):
            problems.append("the naive cells did not show the same images")
    expected = 2 * n
    lost = len(rows) != expected or len(files) != expected or bool(problems)
    ratio = sizes["naive"] / sizes["magic"]
    ok = ratio >= 10 and not lost
    return [Row(
        "5", f"saved .ipynb for {n} image{'s' if n > 1 else ''} at 2048² + {n} at 1024² (PNG): %%shark defaults vs naive "
             "display(Image(png_bytes))",
        f"{mb(sizes['magic'])} notebook + {len(files)} files on disk ({mb(disk)})",
        f"naive {mb(sizes['naive'])} notebook; full-resolution files {mb(served_total)} as served",
        f"{ratio:.1f}x smaller; files: {len(files)}/{expected} saved, "
        + ("byte-identical + metadata" if not problems else f"{len(problems)} problems"),
        "≥ 10x smaller, nothing lost on disk", ok,
        "" if ok else ("; ".join(problems[:3]) or f"only {ratio:.1f}x smaller"),
        [f"magic notebook {sizes['magic']:,} B vs naive {sizes['naive']:,} B; files on disk {disk:,} B = the "
         f"{served_total:,} B served + {disk - served_total:,} B of metadata (prompt, parameters, tracing id, credit)"],
    )]
