"""Secret hygiene: a planted key is looked for everywhere a full session leaves text behind.

One module-scoped run (:func:`session`) uses the key ``PLANTED`` *online* against the simulator
served as a real loopback server (``serve_in_thread()``), with the signed image URLs on a
**different host** (API at ``http://127.0.0.1:PORT/api/v1``, files at ``http://localhost:PORT``):

* every tutorial notebook in ``notebooks/`` is executed with nbclient, in a temporary copy, with
  ``SHARK_API_KEY=PLANTED`` and ``SHARK_BASE_URL`` pointing at the loopback server (all of them
  run online; none needs ``SHARK_OFFLINE``). A first cell is prepended to each copy that turns on
  DEBUG logging of ``httpx``, ``httpcore`` and ``shark_nb`` to the cell's stderr, so the kernel's
  logs land in the executed notebooks too. nbclient stores the widget state (the studio of
  ``03-studio`` and ``%shark studio`` of ``02-magic``) in the notebooks' metadata;
* the ``%shark`` magic, in process (a real ``InteractiveShell``), with errors: a bad option, an
  auth error (the simulator is told that the planted key is invalid), a budget refusal, a URL
  that carries the key as its password, ``%shark config`` / ``ledger`` / ``studio`` / ``--dry-run``;
* the client: sync and task mode, batches, saved images, gateway error messages and a failed task
  that echo the key back, settings errors that quote the key (base URL with the key as password or
  query, the key pasted as the base URL, the key with a newline);
* the studio, in process: references, an upload, Generate, Save, Open, an auth error; then
  ``get_state()`` of every widget alive in the process;

with DEBUG logging of ``httpx``/``httpcore``/``shark_nb`` captured throughout. Then the key is
searched for in: every file written (executed notebooks, ledgers, CSV, saved images — raw bytes —
and their metadata as read back), every notebook output and the saved widget state, every
captured magic output, every log record, the reprs of every object a user holds (clients,
results, errors, ledger, Secret, settings, studio), every exception message and its formatted
traceback (with ``vars(exc)``). The key must appear nowhere; the numbers of places are printed.

Also checked: the key is never sent anywhere but the API's host (downloads carry no credentials,
``sim.auth_leaks == 0``; a redirect to another host is not followed; a polling URL on another
host is refused), ledger files are mode 0600 in a 0700 folder, and ``set_key()`` writes nothing
under ``SHARK_NB_HOME`` or ``HOME``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import os
import stat
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

PLANTED = "sk-planted-7f3a9c2e-DO-NOT-LEAK"
#: What is searched for: the key, two distinctive pieces of it (a truncated repr would still show
#: one) and its base64 forms (as in a Basic/Bearer header or a data URL).
NEEDLES = tuple({
    PLANTED.encode(), b"7f3a9c2e", b"DO-NOT-LEAK",
    base64.b64encode(PLANTED.encode()), base64.b64encode(b"Bearer " + PLANTED.encode()),
    base64.b64encode(b":" + PLANTED.encode()),
})
REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
LOGGERS = ("httpx", "httpcore", "shark_nb")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

LOGGING_CELL = """\
# (added by tests/test_secret_hygiene.py: DEBUG logs of httpx/httpcore/shark_nb into the outputs)
import logging as _logging, sys as _sys
_handler = _logging.StreamHandler(_sys.stderr)
_handler.setFormatter(_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
for _name in ("httpx", "httpcore", "shark_nb"):
    _logging.getLogger(_name).setLevel(_logging.DEBUG)
    _logging.getLogger(_name).addHandler(_handler)
"""


# ------------------------------------------------------------------------------ the corpus

@dataclass
class Corpus:
    """Every place scanned, by kind: (label, bytes)."""

    places: list[tuple[str, str, bytes]] = field(default_factory=list)

    def add(self, kind: str, label: str, data: Any) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            blob = bytes(data)
        else:
            blob = str(data).encode("utf-8", "surrogatepass")
        self.places.append((kind, label, blob))

    def add_exception(self, label: str, exc: BaseException, *, source_lines: bool = True) -> None:
        """The message, repr, args and attributes, and the formatted traceback. ``source_lines=False``
        for an error raised by a cell whose own source holds the key (the user typed it there): the
        traceback then leaves out the quoted source lines, which are the user's, not shark_nb's."""
        self.add("exception", label, f"{exc}\n{exc!r}\n{exc.args!r}\n{_vars(exc)}")
        if source_lines:
            text = "".join(traceback.format_exception(exc))
        else:
            frames = traceback.extract_tb(exc.__traceback__)
            text = "".join(f"{f.filename}:{f.lineno} in {f.name}\n" for f in frames)
            text += "".join(traceback.format_exception_only(exc))
        self.add("traceback", label, text)

    def leaks(self) -> list[str]:
        return [f"{kind}: {label}" for kind, label, blob in self.places if any(n in blob for n in NEEDLES)]

    def count(self, kind: str) -> int:
        return sum(1 for k, _l, _b in self.places if k == kind)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, _l, _b in self.places:
            out[kind] = out.get(kind, 0) + 1
        return out


def _vars(obj: Any) -> str:
    try:
        return repr(vars(obj))
    except TypeError:
        return ""


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(threadName)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record) + f" | args={record.args!r}")
        except Exception as exc:  # noqa: BLE001 - a broken record is a finding too
            self.records.append(f"<unformattable record {record.name}: {exc!r}>")


# ------------------------------------------------------------------------------ helpers

class _Recorder(ThreadingHTTPServer):
    """A tiny HTTP server that records every request; redirects them when ``redirect_to`` is set."""

    daemon_threads = True

    def __init__(self, redirect_to: str | None = None) -> None:
        self.seen: list[dict] = []
        self.redirect_to = redirect_to
        super().__init__(("127.0.0.1", 0), _RecorderHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _RecorderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        if self.server.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = b'{"error": {"message": "nothing here", "type": "invalid_request_error"}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _carries_key(request: dict) -> bool:
    blob = json.dumps(request["headers"]).encode() + request["body"] + request["path"].encode()
    return any(n in blob for n in NEEDLES)


def _png(size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (30, 120, 200) if mode == "RGB" else (30, 120, 200, 255)).save(buf, "PNG")
    return buf.getvalue()


def _state_json(state: dict) -> str:
    return json.dumps(state, default=lambda o: bytes(o).decode("latin-1")
                      if isinstance(o, (bytes, bytearray, memoryview)) else repr(o))


def _all_files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_dir():
            yield from (p for p in sorted(root.rglob("*")) if p.is_file())


@dataclass
class Session:
    corpus: Corpus
    root: Path
    sim: Any
    port: int
    notebooks: dict[str, Any]
    notebook_outputs: int
    widget_models: int
    log_records: int
    homes: list[Path]
    image_urls: list[str]
    redirect_api: list[dict]
    redirect_other: list[dict]
    other_host_sim: Any
    polling_error: BaseException | None
    sim_log: list[dict]


# ------------------------------------------------------------------------------ the session

@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Iterator[Session]:
    from shark_nb import magic
    from shark_nb.ledger import reset_default_ledger
    from shark_nb.simulator import Simulator, serve_in_thread

    root = tmp_path_factory.mktemp("secret_hygiene")
    sim = Simulator(latency=0.01)
    srv = serve_in_thread(sim)
    # the object store on another host: same server, reached as "localhost" instead of 127.0.0.1
    sim.config.files_base = f"http://localhost:{srv.port}"
    corpus = Corpus()
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    capture = _Capture()
    saved_levels = {name: logging.getLogger(name).level for name in LOGGERS}
    recorders: list[_Recorder] = []
    other_srv = None
    try:
        for name in PROXY_VARS:
            os.environ.pop(name, None)
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        os.environ.pop("SHARK_OFFLINE", None)

        # 1. the notebooks, executed online in kernels (in parallel)
        nb_dir = root / "notebooks"
        nb_dir.mkdir()
        kernel_home = root / "kernel_home"
        kernel_env = dict(os.environ, SHARK_API_KEY=PLANTED, SHARK_BASE_URL=srv.base_url,
                          SHARK_NB_HOME=str(kernel_home), PYTHONPATH=str(REPO))
        notebooks = asyncio.run(_run_notebooks(nb_dir, kernel_env))

        # 2.-4. in process: the magic, the client, the studio, with DEBUG logs captured
        os.environ.update(SHARK_API_KEY=PLANTED, SHARK_BASE_URL=srv.base_url,
                          SHARK_NB_HOME=str(root / "home"))
        for name in LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
            logging.getLogger(name).addHandler(capture)
        work = root / "work"
        work.mkdir()
        os.chdir(work)
        magic.reset_client()
        reset_default_ledger()
        _run_magic(corpus, sim)
        image_urls = _run_client(corpus, sim, srv, root)
        recorders, redirect_api, redirect_other = _run_redirect(corpus)
        other_srv, polling_error = _run_polling_elsewhere(corpus)
        asyncio.run(_run_studio(corpus, sim, srv, root))
        _scan_widgets(corpus)
        _scan_settings_and_secret(corpus)
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(capture)
            logging.getLogger(name).setLevel(saved_levels[name])
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        magic.reset_client()
        reset_default_ledger()
        from shark_nb import config

        config.clear_key()

    # the logs, the files, the notebooks
    for i, line in enumerate(capture.records):
        corpus.add("log record", f"log {i}", line)
    homes = [root / "home", kernel_home]
    for path in _all_files(root):
        corpus.add("file", str(path.relative_to(root)), path.read_bytes())
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
            from shark_nb.images import read_metadata

            try:
                corpus.add("image metadata", str(path.relative_to(root)), json.dumps(read_metadata(path)))
            except ValueError:
                pass
    outputs = widget_models = 0
    for name, nb in notebooks.items():
        for c, cell in enumerate(nb.cells):
            for o, output in enumerate(cell.get("outputs", ())):
                outputs += 1
                corpus.add("notebook output", f"{name} cell {c} output {o}", json.dumps(output))
        state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        for model_id, model in state.get("state", {}).items():
            widget_models += 1
            corpus.add("saved widget state", f"{name} {model.get('model_name')} {model_id}", json.dumps(model))
    yield Session(
        corpus=corpus, root=root, sim=sim, port=srv.port, notebooks=notebooks, notebook_outputs=outputs,
        widget_models=widget_models, log_records=len(capture.records), homes=homes, image_urls=image_urls,
        redirect_api=redirect_api, redirect_other=redirect_other,
        other_host_sim=other_srv.sim if other_srv is not None else None, polling_error=polling_error,
        sim_log=list(sim.log),
    )
    from ipywidgets.widgets import widget as widget_module

    from shark_nb.widget import Studio

    for w in list(widget_module._instances.values()):  # the studio %shark studio displayed
        if isinstance(w, Studio):
            w.close()
    for r in recorders:
        r.close()
    if other_srv is not None:
        other_srv.close()
    srv.close()


async def _run_notebooks(folder: Path, env: dict) -> dict[str, Any]:
    import nbformat
    from nbclient import NotebookClient

    async def one(source: Path) -> tuple[str, Any]:
        nb = nbformat.read(source, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(LOGGING_CELL))
        path = folder / source.name
        client = NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True,
                                resources={"metadata": {"path": str(folder)}})
        await client.async_execute(env=env)
        nbformat.write(nb, path)
        return source.name, nb

    return dict(await asyncio.gather(*(one(p) for p in NOTEBOOKS)))


def _run_magic(corpus: Corpus, sim: Any) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from shark_nb import magic

    shell = InteractiveShell.instance()
    magic.unload_ipython_extension(shell)
    magic.load_ipython_extension(shell)
    cells = [
        "%shark --size 1024x1024 --quality low -o fox a red fox in the snow",
        "%%shark --size 1024x1024 --quality low --wait task\na heron at dawn",
        "%shark config",
        "%shark ledger",
        "%shark --dry-run -n 2 a fox",
        "%shark --colour red a fox",                                          # bad option
        f"%shark --image https://me:{PLANTED}@example.com/a.png a fox",       # the key as a URL password
        "AUTH",                                                               # auth error (below)
        "%shark budget 0.0001$",
        "%shark --quality high a fox",                                        # budget refusal
        "%shark budget off",
        "%shark studio",
        "fox",
        "print(repr(fox), str(fox), repr(fox.images[0]))",
    ]
    errors = 0
    try:
        for i, cell in enumerate(cells):
            if cell == "AUTH":
                sim.config.invalid_key = PLANTED
                cell = "%shark --quality low a fox"
            try:
                with capture_output() as cap:
                    result = shell.run_cell(cell)
            finally:
                sim.config.invalid_key = "sk-invalid"
            parts = [cap.stdout, cap.stderr] + [json.dumps(o.data, default=repr) for o in cap.outputs]
            corpus.add("magic output", f"cell {i}: {cell[:40]}", "\n".join(parts))
            err = result.error_in_exec
            if err is not None:
                errors += 1
                corpus.add_exception(f"magic cell {i}", err, source_lines=PLANTED not in cell)
        assert errors == 4, f"expected 4 failing cells (bad option, URL, auth, budget), got {errors}"
        client = magic.get_client()
        corpus.add("repr", "magic client", f"{client!r}\n{_vars(client.aio)}")
        corpus.add("repr", "magic ledger", f"{client.ledger!r}\n{client.ledger._repr_html_()}")
        client.close()
    finally:
        shell.user_ns.pop("fox", None)
        shell.user_ns.pop("_shark", None)
        magic.unload_ipython_extension(shell)
        magic.reset_client()


def _run_client(corpus: Corpus, sim: Any, srv: Any, root: Path) -> list[str]:
    from shark_nb import AuthenticationError, ValidationError, config, set_key
    from shark_nb.client import Shark
    from shark_nb.images import read_metadata

    urls: list[str] = []
    client = Shark(api_key=PLANTED, base_url=srv.base_url, poll_interval=0.05)
    try:
        result = client.generate("a lighthouse at dusk", size="1024x1024", quality="low")
        task_result = client.generate("a lighthouse at dawn", size="1024x1024", quality="low", wait="task",
                                      task_timeout=60)
        urls += [im.url for r in (result, task_result) for im in r.images]
        for r in (result, task_result):
            paths = r.save(root / "saved")
            for p in paths:
                corpus.add("image metadata", f"read_metadata({p.name})", json.dumps(read_metadata(p)))
            corpus.add("repr", f"result {r.tracing_id}",
                       f"{r!r}\n{r}\n{r._repr_html_() if hasattr(r, '_repr_html_') else ''}\n"
                       + "\n".join(f"{im!r} {im}" for im in r.images))
        batch = client.generate_many(["a cup of cocoa", "a forbidden picture [moderate]"], size="1024x1024",
                                     quality="low", concurrency=2)
        corpus.add("repr", "generate_many", repr(batch))
        for item in batch:
            if isinstance(item, BaseException):
                corpus.add_exception("generate_many slot", item)

        # errors that could carry the key
        sim.config.invalid_key = PLANTED
        try:
            with pytest.raises(AuthenticationError) as info:
                client.generate("a fox", quality="low")
            corpus.add_exception("auth error", info.value)
        finally:
            sim.config.invalid_key = "sk-invalid"
        echo = f"bad header 'Authorization: Bearer {PLANTED}' (x-api-key={PLANTED})"
        sim.inject("post", "status", status=400, type="invalid_request_error", message=echo)
        with pytest.raises(Exception) as info:
            client.generate("a fox", quality="low")
        corpus.add_exception("gateway echoes the key", info.value)
        # the key in the error's type and code, and crossing the old 120-character cut
        sim.inject("post", "status", status=401, type=PLANTED, code=PLANTED, message="x" * 115 + PLANTED)
        with pytest.raises(Exception) as info:
            client.generate("a fox", quality="low")
        corpus.add_exception("gateway echoes the key in type and code", info.value)
        sim.inject("post", "task_failed", type="provider_error", message=echo)
        with pytest.raises(Exception) as info:
            client.generate("a fox", quality="low", wait="task", task_timeout=60)
        corpus.add_exception("failed task echoes the key", info.value)
        with pytest.raises(ValidationError) as info:
            client.generate("a fox", image=f"https://me:{PLANTED}@example.com/a.png")
        corpus.add_exception("image URL with the key as password", info.value)
        for kwargs in ({"api_key": PLANTED + "\n"}, {"api_key": " " + PLANTED},
                       {"api_key": PLANTED, "base_url": f"https://me:{PLANTED}@shark.ai/api/v1"},
                       {"api_key": PLANTED, "base_url": f"https://{PLANTED}@shark.ai/api/v1"},
                       {"api_key": PLANTED, "base_url": f"https://shark.ai/api/v1?api_key={PLANTED}"},
                       {"api_key": PLANTED, "base_url": f"https://shark.ai/api/v1#{PLANTED}"},
                       {"api_key": PLANTED, "base_url": PLANTED},
                       {"api_key": PLANTED, "base_url": "http://example.com/api/v1"}):
            with pytest.raises(ValidationError) as info:
                Shark(**kwargs)
            corpus.add_exception(f"Shark({sorted(kwargs)})", info.value)
        with pytest.raises(ValidationError) as info:
            set_key(PLANTED + "\r\n")
        corpus.add_exception("set_key with a newline", info.value)
        config.clear_key()

        aio = client.aio
        corpus.add("repr", "Shark", f"{client!r}\n{client}\n{_vars(client)}")
        corpus.add("repr", "AsyncShark", f"{aio!r}\n{aio}\n{_vars(aio)}\n{aio._api()!r}\n{aio._api().headers!r}")
        corpus.add("repr", "ledger", f"{client.ledger!r}\n{client.ledger._repr_html_()}\n{client.ledger.summary()}"
                                     f"\n{client.ledger.records!r}")
        csv = client.ledger.to_csv(root / "exports" / "ledger.csv")
        assert csv.is_file()
        try:
            corpus.add("repr", "ledger dataframe", client.ledger.to_dataframe().to_string())
        except ImportError:  # pragma: no cover - pandas is a test dependency
            pass
    finally:
        client.close()
    return urls


def _run_redirect(corpus: Corpus) -> tuple[list[_Recorder], list[dict], list[dict]]:
    """The API host answers 307 to another host: the client must not follow (the key stays home)."""
    from shark_nb import APIConnectionError
    from shark_nb.client import Shark

    other = _Recorder()
    api = _Recorder(redirect_to=f"http://localhost:{other.server_port}")
    client = Shark(api_key=PLANTED, base_url=f"http://127.0.0.1:{api.server_port}/api/v1", max_retries=0)
    try:
        with pytest.raises(APIConnectionError) as info:
            client.generate("a fox", quality="low")
        assert "redirect" in str(info.value)
        corpus.add_exception("redirect refused", info.value)
        with pytest.raises(APIConnectionError):
            client.cancel("task_123")  # a GET/POST to the API that is redirected: not followed either
    finally:
        client.close()
    return [other, api], api.seen, other.seen


def _run_polling_elsewhere(corpus: Corpus) -> tuple[Any, BaseException | None]:
    """A task whose polling URL names another host: the client refuses to send it the key and
    polls the documented URL on the API's own host instead (issue 8: a refusal must not abandon
    a paid task). ``evil.example`` is never resolved: a leak would be a connection attempt."""
    from shark_nb.client import Shark
    from shark_nb.simulator import Simulator, serve_in_thread

    srv = serve_in_thread(Simulator(latency=0.01))
    srv.sim.config.api_base = f"http://evil.example:{srv.port}/api/v1"  # what its polling_url will name
    client = Shark(api_key=PLANTED, base_url=f"http://127.0.0.1:{srv.port}/api/v1", poll_interval=0.01)
    error = None
    try:
        result = client.generate("a fox", quality="low", wait="task", task_timeout=60)
        corpus.add("repr", "polling URL on another host: result", repr(result))
    except Exception as exc:  # noqa: BLE001
        error = exc
        corpus.add_exception("polling URL on another host", exc)
    finally:
        client.close()
    return srv, error


async def _run_studio(corpus: Corpus, sim: Any, srv: Any, root: Path) -> None:
    import ipywidgets as widgets

    from shark_nb.client import AsyncShark
    from shark_nb.widget import studio

    client = AsyncShark(api_key=PLANTED, base_url=srv.base_url, poll_interval=0.05)
    st = studio(client, save_folder=str(root / "studio-out"), size="1024x1024", quality="low")
    try:
        assert st.add_reference(_png(), name="reference.png")
        st.reference_upload.set_state({"value": [
            {"name": "upload.png", "type": "image/png", "size": 10, "content": memoryview(_png((64, 48))),
             "last_modified": 1_700_000_000_000}]})
        st.remove_reference(1)
        st.prompt.value = "the same scene at night"
        st.generate_button.click()
        await st.wait_for_job()
        assert st.status.value.startswith("Done"), st.status.value
        card = st.gallery.children[0]
        buttons = [w for w in _walk(card) if isinstance(w, widgets.Button)]
        for b in buttons:
            if b.description in ("Save", "Open"):
                b.click()
        for _ in range(200):
            if not st._helpers:
                break
            await asyncio.sleep(0.01)
        # an auth error, shown in the status line
        sim.config.invalid_key = PLANTED
        try:
            st.generate_button.click()
            await st.wait_for_job()
        finally:
            sim.config.invalid_key = "sk-invalid"
        assert st.status.value.startswith("Error"), st.status.value
        corpus.add("studio status", "after an auth error", st.status.value)
        if st.last_error is not None:
            corpus.add_exception("studio last_error", st.last_error)
        corpus.add("repr", "studio", f"{st!r}\n{st.client!r}\n{_vars(st.client)}")
        for w in _walk(st):
            corpus.add("studio widget get_state()", f"{type(w).__name__} {w.model_id}", _state_json(w.get_state()))
    finally:
        st.close()
        await client.aclose()


def _walk(root: Any) -> list[Any]:
    """The widget and every widget it references (children, layout, style, ...)."""
    import ipywidgets as widgets

    seen: dict[str, Any] = {}

    def walk(w: Any) -> None:
        if w.model_id in seen:
            return
        seen[w.model_id] = w
        for name in w.keys:
            value = getattr(w, name, None)
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(item, widgets.Widget):
                    walk(item)

    walk(root)
    return list(seen.values())


def _scan_widgets(corpus: Corpus) -> None:
    """Every widget still alive in this process (the magic's studio included), as a front end
    would save it."""
    import ipywidgets as widgets

    state = widgets.Widget.get_manager_state(drop_defaults=False)
    for model_id, model in state["state"].items():
        corpus.add("live widget state", f"{model.get('model_name')} {model_id}", _state_json(model))


def _scan_settings_and_secret(corpus: Corpus) -> None:
    import pickle

    from shark_nb import config

    secret = config.check_key(PLANTED)
    corpus.add("repr", "Secret", f"{secret!r} {secret} {secret!s} {[secret]} {({'k': secret})}")
    corpus.add("repr", "Secret format", f"{secret:}" if hasattr(secret, "__format__") else "")
    with pytest.raises(TypeError) as info:
        pickle.dumps(secret)
    corpus.add_exception("pickling a Secret", info.value)
    corpus.add("repr", "Settings", repr(config.resolve(api_key=PLANTED, base_url="http://127.0.0.1:1/api/v1")))
    corpus.add("repr", "Settings from the environment", repr(config.resolve()))


# ------------------------------------------------------------------------------ tests

def test_the_session_ran_online_with_the_key(session: Session):
    """The scan means something: the key was used, against the loopback server, by every surface."""
    log = session.sim_log
    api = [e for e in log if e["route"] in ("post", "poll", "cancel")]
    assert len([e for e in api if e["route"] == "post"]) >= 20, "the notebooks and the in-process run generate"
    assert all(e["auth"] == "bearer" for e in api), "every API request carried the key"
    assert any(e["route"] == "poll" for e in api), "task mode ran (the studio, %%shark --wait task)"
    assert len(session.notebooks) == len(NOTEBOOKS) >= 6
    kernel_ledgers = list((session.homes[1] / "ledger").glob("*.jsonl"))
    assert kernel_ledgers and all('"offline": false' in p.read_text().replace('"offline":false', '"offline": false')
                                  for p in kernel_ledgers), "the notebooks ran online, not on the simulator"
    assert session.widget_models > 50, "the executed notebooks hold the studio's widget state"
    assert session.log_records > 50, "DEBUG logs were captured"


def test_the_planted_key_appears_nowhere(session: Session, capsys):
    corpus = session.corpus
    leaks = corpus.leaks()
    kinds = corpus.kinds()
    files = kinds.get("file", 0)
    summary = (f"secret hygiene: {len(corpus.places)} places scanned — {files} files "
               f"({sum(1 for k, l, _ in corpus.places if k == 'file' and l.endswith('.ipynb'))} executed notebooks), "
               f"{session.notebook_outputs} notebook outputs, {session.widget_models} saved widget models, "
               f"{kinds.get('live widget state', 0)} live widget states, "
               f"{kinds.get('studio widget get_state()', 0)} studio get_state(), "
               f"{kinds.get('magic output', 0)} magic outputs, {kinds.get('log record', 0)} log records, "
               f"{kinds.get('repr', 0)} reprs, {kinds.get('exception', 0)} exceptions + "
               f"{kinds.get('traceback', 0)} tracebacks, {kinds.get('image metadata', 0)} image metadata")
    with capsys.disabled():
        print("\n" + summary)
    (session.root / "scan-summary.txt").write_text(summary + "\n" + json.dumps(kinds, indent=1), encoding="utf-8")
    assert files >= 20 and session.notebook_outputs >= 50 and kinds.get("exception", 0) >= 15
    assert not leaks, "the planted key leaked into:\n" + "\n".join(leaks[:40])


def test_the_key_only_goes_to_the_api_host(session: Session):
    sim = session.sim
    downloads = [e for e in session.sim_log if e["route"] == "download"]
    assert downloads, "images were downloaded from the file host"
    assert sim.auth_leaks == 0
    assert all(e["auth"] is None for e in downloads), "a download carried Authorization or x-api-key"
    assert session.image_urls and all(u.startswith(f"http://localhost:{session.port}/files/")
                                      for u in session.image_urls), "the files are on another host"


def test_a_redirect_to_another_host_is_not_followed(session: Session):
    assert session.redirect_api, "the API host saw the request (with the key: it is the API)"
    assert all(_carries_key(r) for r in session.redirect_api)
    assert session.redirect_other == [], "the other host must see no request at all"


def test_a_polling_url_on_another_host_is_refused(session: Session):
    # The foreign URL was not used (evil.example cannot be reached here: using it would have failed);
    # the documented URL on the API's own host was polled with the key, and the images came back.
    assert session.polling_error is None, repr(session.polling_error)
    assert session.other_host_sim.requests["poll"] >= 1
    assert session.other_host_sim.requests["post"] == 1


def test_ledger_files_are_private(session: Session):
    ledgers = [p for home in session.homes for p in (home / "ledger").glob("*")]
    assert len(ledgers) >= 2
    for home in session.homes:
        assert stat.S_IMODE((home / "ledger").stat().st_mode) == 0o700, home
    for path in ledgers:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


def _snapshot(*roots: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            try:
                st = p.lstat()
            except OSError:
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p)] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def test_set_key_writes_nothing(tmp_path, monkeypatch):
    import getpass

    import shark_nb
    from shark_nb import config
    from shark_nb.client import Shark

    home, nb_home, cwd = tmp_path / "home", tmp_path / "shark_nb_home", tmp_path / "cwd"
    for d in (home, nb_home, cwd):
        d.mkdir()
    (home / ".profile").write_text("# a user's file\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHARK_NB_HOME", str(nb_home))
    monkeypatch.chdir(cwd)
    before = _snapshot(home, nb_home, cwd)
    try:
        shark_nb.set_key(PLANTED)
        assert config.resolve().key is not None
        monkeypatch.setattr(getpass, "getpass", lambda prompt="": PLANTED)
        shark_nb.set_key()                      # the interactive form
        client = Shark()                        # uses the session key; creates no file until a call
        assert client.api_key_set and not client.offline
        client.close()
    finally:
        config.clear_key()
    assert _snapshot(home, nb_home, cwd) == before, "set_key() / Shark() wrote something"
    for path in _all_files(home, nb_home, cwd):
        assert not any(n in path.read_bytes() for n in NEEDLES), path


# ------------------------------------------------------------------------------ adversarial echoes
#
# A hostile or buggy gateway echoes the key back in every way it can: in an error's message, type
# and code, at any position (0, across the old 120-character cut, at the end, repeated, split over
# two fields), JSON- or URL-encoded, after "Bearer " in any case, in HTML pages, in a 200 that is not
# JSON, in a failed task and in a poll's error. Keys hold characters that escaping changes
# (``\``, ``"``, ``%``, ``/``, ``&``). Nothing of 8+ characters of the key may reach the exception
# (str, repr, args, attributes, traceback), the ledger FILE, or a log record.

from urllib.parse import quote  # noqa: E402

ADVERSARIAL_KEYS = (
    "sk-adv-0f9e8d7c6b5a4f3e2d1c",
    "sk-back\\slash\\7Q2w9E4r",
    'sk-quote"Zx81%2Fpq%41-yy',
    "sk-sl/ash+plus=Eq&amp<tag>9",
    "sk-" + "Ab3Cd5" * 40,  # 243 characters
)
ADV_API = "http://127.0.0.1:9/api/v1"  # never contacted: httpx.MockTransport answers


def _key_fragments(key: str) -> set[str]:
    """Every 8-character piece of the key, raw and in the spellings a file or message may hold."""
    forms = {key, json.dumps(key)[1:-1], repr(key)[1:-1], quote(key, safe=""), key.replace("\\", "\\\\")}
    return {f[i:i + 8].lower() for f in forms for i in range(len(f) - 7)}


def _assert_clean(where: str, text: str, key: str) -> None:
    low = text.lower()
    found = sorted(f for f in _key_fragments(key) if f in low)
    assert not found, f"{where} holds pieces of the key {found[:3]}: {text[:400]!r}"


def _assert_exception_clean(exc: BaseException, key: str) -> None:
    _assert_clean("the exception", f"{exc}\n{exc!r}\n{exc.args!r}\n{_vars(exc)}\n"
                  + "".join(traceback.format_exception(exc)), key)
    for attr in ("message", "type", "code", "tracing_id"):
        value = getattr(exc, attr, None)
        if value is not None:
            _assert_clean(f"exc.{attr}", str(value), key)


def _echo_bodies(key: str) -> dict[str, tuple[bytes, str]]:
    """label → (body, content type): the key in every place a server could put it."""
    env = lambda **e: json.dumps({"error": e}).encode()  # noqa: E731
    bodies = {
        "message at 0": env(message=key + " is not valid", type="auth_error"),
        "message at the end": env(message="x" * 300 + " got " + key, type="invalid_request_error"),
        "message repeated": env(message=f"{key} {key}{key} ({key})", type="auth_error"),
        "in error.type": env(message="denied", type=key),
        "in error.code": env(message="denied", type="auth_error", code=key),
        "in type and code, not the message": env(message="denied", type="Bearer " + key, code=key[:20]),
        "split over message and type": env(message="key starts " + key[:12], type=key[12:]),
        "json-escaped in a body without the envelope": b'{"detail": "' + json.dumps(key)[1:-1].encode() + b'"}',
        "url-encoded": ("token=" + quote(key, safe="") + "&x=1").encode(),
        "bEaReR prefix": ("Authorization: bEaReR " + key).encode(),
        "BEARER url-encoded": ("auth=BEARER%20" + quote(key, safe="")).encode(),
        "unicode around it": ("ключ ☃ «" + key + "» 🔑").encode(),
        "empty": b"",
    }
    for pos in (0, 100, 105, 110, 115, 119, 120, 125, 130):
        bodies[f"plain text, key at {pos}"] = (("x" * pos + key + " tail").encode(), "text/plain")
        bodies[f"html, key at {pos}"] = (("<html><body><p>" + "y" * pos + key + "</p></body></html>").encode(),
                                         "text/html")
        bodies[f"json message, key at {pos}"] = env(message="z" * pos + key + " rest", type="provider_error")
    return {k: (v if isinstance(v, tuple) else (v, "application/json")) for k, v in bodies.items()}


class _Echo:
    """A gateway scripted per test: answers POST (and polls) with what the test set."""

    def __init__(self, post: httpx.Response, poll: httpx.Response | None = None) -> None:
        self.post, self.poll = post, poll

    def api(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return self.post
        return self.poll or httpx.Response(200, json={"id": "t1", "status": "running"})


def _adv_client(key: str, gateway: _Echo, ledger: Any) -> Any:
    from shark_nb.client import AsyncShark

    client = AsyncShark(api_key=key, base_url=ADV_API, ledger=ledger, max_retries=0, poll_interval=0.01,
                        transport=httpx.MockTransport(gateway.api),
                        download_transport=httpx.MockTransport(lambda r: httpx.Response(404)))

    # Virtual time: every wait passes at once and moves the clock on, so a task whose polls keep
    # failing reaches its deadline (the client polls on until then) without real waiting.
    now = [1000.0]

    async def no_wait(s: float) -> None:
        now[0] += max(s, 0.001)
        await asyncio.sleep(0)

    client._sleep = no_wait
    client._clock = lambda: now[0]
    return client


@pytest.fixture
def shark_logs():
    capture = _Capture()
    saved = {}
    for name in LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(logging.DEBUG)
        lg.addHandler(capture)
    yield capture
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(capture)
        logging.getLogger(name).setLevel(saved[name])


async def _call_and_check(key: str, gateway: _Echo, tmp_path: Path, logs: _Capture, label: str, **kw: Any):
    from shark_nb import SharkError
    from shark_nb.ledger import Ledger

    path = tmp_path / f"ledger-{hashlib.sha1(label.encode()).hexdigest()[:8]}.jsonl"
    client = _adv_client(key, gateway, Ledger(path))
    try:
        with pytest.raises(SharkError) as info:
            await client.generate("a fox", quality="low", **kw)
    finally:
        await client.aclose()
    _assert_exception_clean(info.value, key)
    raw = path.read_bytes()
    assert raw, "the call is in the ledger"
    _assert_clean(f"ledger file ({label})", raw.decode("utf-8"), key)
    _assert_clean(f"ledger read back ({label})", repr([json.loads(line) for line in raw.splitlines()]), key)
    _assert_clean(f"logs ({label})", "\n".join(logs.records), key)
    return info.value


import httpx  # noqa: E402


@pytest.mark.parametrize("key", ADVERSARIAL_KEYS, ids=lambda k: k[:14])
@pytest.mark.parametrize("status", [400, 401, 402, 404, 429, 500, 502, 503, 504])
async def test_a_key_echoed_in_an_error_answer_is_nowhere(key, status, tmp_path, shark_logs):
    for label, (body, ctype) in _echo_bodies(key).items():
        gateway = _Echo(httpx.Response(status, content=body, headers={"content-type": ctype}))
        exc = await _call_and_check(key, gateway, tmp_path, shark_logs, f"{status} {label}")
        assert exc.status == status, label


@pytest.mark.parametrize("key", ADVERSARIAL_KEYS, ids=lambda k: k[:14])
async def test_a_non_json_200_that_echoes_the_key_is_redacted(key, tmp_path, shark_logs):
    from shark_nb import APIConnectionError

    for label, (body, ctype) in _echo_bodies(key).items():
        if body.startswith(b"{"):
            continue  # JSON: not this case
        gateway = _Echo(httpx.Response(200, content=body or b"<", headers={"content-type": ctype}))
        exc = await _call_and_check(key, gateway, tmp_path, shark_logs, f"200 {label}")
        assert isinstance(exc, APIConnectionError) and "not valid JSON" in exc.message, label
    # the excerpt still shows the server's text around the key
    gateway = _Echo(httpx.Response(200, content=b"proxy says: " + key.encode() + b" denied"))
    exc = await _call_and_check(key, gateway, tmp_path, shark_logs, "200 with context")
    assert "proxy says: [secure] denied" in exc.message


@pytest.mark.parametrize("key", ADVERSARIAL_KEYS, ids=lambda k: k[:14])
async def test_a_failed_task_that_echoes_the_key_is_redacted(key, tmp_path, shark_logs):
    from shark_nb import TaskFailedError

    accepted = httpx.Response(200, json={"id": "t1", "status": "queued"})
    for i, (message, etype, code) in enumerate([
        (key, "provider_error", None),
        ("x" * 115 + key, key, key),
        ("ok", "Bearer " + key, "c-" + key),
        (f"{key[:10]}|{key[10:]}", None, None),
    ]):
        poll = httpx.Response(200, json={"id": "t1", "status": "failed", "usage": {"note": key},
                                         "error": {"message": message, "type": etype, "code": code}})
        exc = await _call_and_check(key, _Echo(accepted, poll), tmp_path, shark_logs, f"task {i}", wait="task")
        assert isinstance(exc, TaskFailedError)


@pytest.mark.parametrize("key", ADVERSARIAL_KEYS, ids=lambda k: k[:14])
@pytest.mark.parametrize("status", [400, 401, 404, 500, 502])
async def test_a_poll_error_that_echoes_the_key_is_redacted(key, status, tmp_path, shark_logs):
    accepted = httpx.Response(200, json={"id": "t1", "status": "queued"})
    for label in ("html, key at 115", "in error.type", "json message, key at 119", "bEaReR prefix"):
        body, ctype = _echo_bodies(key)[label]
        poll = httpx.Response(status, content=body, headers={"content-type": ctype})
        await _call_and_check(key, _Echo(accepted, poll), tmp_path, shark_logs, f"poll {status} {label}",
                              wait="task")


@pytest.mark.parametrize("key", ADVERSARIAL_KEYS, ids=lambda k: k[:14])
async def test_a_transport_error_that_quotes_the_key_is_redacted(key, tmp_path, shark_logs):
    for pos in (0, 110, 118, 125):
        class Raising(_Echo):
            def api(self, request: httpx.Request) -> httpx.Response:
                raise httpx.ConnectError("x" * pos + key + " refused", request=request)

        await _call_and_check(key, Raising(httpx.Response(200)), tmp_path, shark_logs, f"connect {pos}")


def test_redact_handles_every_spelling_and_any_long_enough_piece():
    from shark_nb.errors import redact

    key = 'sk-ZZ\\q"u/o%te-93jd8e7f6g'
    secrets = (key,)
    cases = {
        key: "[secure]",
        "a " + key + " b": "a [secure] b",
        json.dumps({"k": key}): '{"k": "[secure]"}',
        "k=" + quote(key, safe=""): "k=[secure]",
        key.upper(): "[secure]",
        key[:8] + "…": "[secure]…",          # a prefix left by a cut
        "…" + key[-8:]: "…[secure]",          # a suffix
        key[:7] + " x": key[:7] + " x",        # 7 characters: not a leak
        "BeArEr abc-1234567": "BeArEr [secure]",  # any bearer token that looks like one
        "a bearer of gifts": "a bearer of gifts",  # ordinary words are not tokens
    }
    for text, expected in cases.items():
        assert redact(text, secrets) == expected, text
    assert redact(None, secrets) is None and redact("", secrets) == ""


def test_a_live_key_is_redacted_from_every_error_without_being_passed():
    from shark_nb import SharkError, TaskFailedError
    from shark_nb.config import Secret

    secret = Secret("sk-live-registry-0123abcd")
    key = secret.reveal()
    for exc in (SharkError("bad " + key, type=key, code=key, tracing_id=key),
                TaskFailedError("x" * 118 + key, type=key, task_id="t")):
        _assert_exception_clean(exc, key)
    del secret
    import gc

    gc.collect()
    assert key in str(SharkError("gone " + key)), "a dead Secret is no longer searched for"


def test_a_key_stays_redacted_after_an_earlier_holder_of_the_same_key_is_dropped():
    """Two clients with the same key (a notebook cell run twice): dropping the first must not make
    the second's key leak. (Secrets compare equal by value; a WeakSet held only the first.)"""
    import gc

    from shark_nb.client import AsyncShark
    from shark_nb.errors import redact

    key = "sk-twice-Qw8Er7Ty6Ui5"
    first = AsyncShark(api_key=key, base_url="https://api.example.test/api/v1", quiet=True)
    second = AsyncShark(api_key=key, base_url="https://api.example.test/api/v1", quiet=True)
    del first
    gc.collect()
    assert second.api_key_set
    for text in (f"echo {key}", f"Bearer {key}", f"type={key[:9]}", f"{key[-9:]} at the end"):
        assert "Qw8Er7" not in redact(text) and "Er7Ty6Ui5" not in redact(text), text
