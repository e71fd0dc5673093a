"""A real JupyterLab server plus a real headless Chromium, for the browser tests.

    with JupyterLab(tmp_path, env={"SHARK_SIM_LATENCY": "1"}) as lab:
        lab.url("lab/tree/studio.ipynb")      # token included
        with chromium() as browser: ...

The server is isolated from the machine it runs on: ``JUPYTER_CONFIG_DIR``, ``JUPYTER_DATA_DIR``,
``JUPYTER_RUNTIME_DIR``, ``IPYTHONDIR`` and the JupyterLab settings / workspaces directories all
live in a temporary folder, ``JUPYTER_PATH`` / ``JUPYTER_CONFIG_PATH`` are dropped, and no
``SHARK_*`` variable leaks in (no key: the kernel runs the offline simulator). The environment's
own ``sys.prefix/share/jupyter`` stays on the data path, which is where the ipywidgets lab
extension (``jupyterlab_widgets``) is installed; :meth:`JupyterLab.federated_extensions` reads the
page config the server really serves, so a test can check the extension was found.

Teardown never leaves processes behind: the server's descendants (its kernels, which
``jupyter_client`` starts in sessions of their own) are recorded, the server gets SIGTERM (Jupyter
Server then shuts its kernels down), then SIGKILL if it lingers, and any recorded kernel still
alive is killed by its pid (checked against its start time, so a reused pid is never hit).

Playwright's own browser download is not used: :func:`find_chromium` looks for a system Chromium
(Debian's ``/usr/bin/chromium``; ``SHARK_NB_CHROMIUM`` overrides).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

#: Environment variables never passed to the server (and so to its kernels).
_DROPPED_ENV = ("SHARK_API_KEY", "SHARK_BASE_URL", "SHARK_OFFLINE", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH",
                "JUPYTERLAB_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "JUPYTER_TOKEN",
                "JUPYTER_PREFER_ENV_PATH", "JUPYTER_PLATFORM_DIRS")


# ------------------------------------------------------------------------------ availability

def find_chromium() -> str | None:
    """A system Chromium: $SHARK_NB_CHROMIUM, /usr/bin/chromium, or chromium on PATH."""
    for candidate in (os.environ.get("SHARK_NB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not importable ({exc}); install the test extras: pip install -e '.[test]'"
    if find_chromium() is None:
        return ("no Chromium found (looked at $SHARK_NB_CHROMIUM, /usr/bin/chromium and chromium on PATH); "
                "install it with: apt-get install chromium")
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_browser() -> str:
    """The Chromium executable; skip the test (fail it in CI, which installs Chromium) when the
    browser stack is missing."""
    import pytest

    reason = browser_unavailable_reason()
    if reason:
        if in_ci():
            pytest.fail(f"browser test cannot run in CI: {reason} (.ci/run installs Chromium)", pytrace=False)
        pytest.skip(reason)
    return find_chromium()  # type: ignore[return-value]


@contextlib.contextmanager
def chromium(viewport: tuple[int, int] = (1280, 900), device_scale_factor: float = 1) -> Iterator[Any]:
    """(browser, page) on a headless system Chromium; closed on exit, even on failure.
    ``device_scale_factor=2`` gives a hi-DPI page (``window.devicePixelRatio == 2``)."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          device_scale_factor=device_scale_factor)
            page = context.new_page()
            yield browser, page
        finally:
            browser.close()


# --------------------------------------------------------------------------------- notebooks

def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook of code cells with a python3 kernelspec (so JupyterLab asks for no kernel)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, str(path))
    return path


# ------------------------------------------------------------------------------ the server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_time(pid: int) -> str | None:
    """The start time of a live process (field 22 of /proc/PID/stat); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every descendant of ``root`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[tuple[int, str]] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), ()):
            started = _start_time(child)
            if started is not None:
                out.append((child, started))
                todo.append(child)
    return out


class JupyterLab:
    """``python -m jupyterlab`` on 127.0.0.1, a free port and a random token, rooted at ``root``,
    with every Jupyter directory in ``workdir``. Use as a context manager."""

    def __init__(self, root: Path, workdir: Path, env: dict[str, str] | None = None,
                 startup_timeout: float = 90.0) -> None:
        self.root = Path(root)
        self.workdir = Path(workdir)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(24)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "jupyterlab.log"
        self._log_file: Any = None
        #: (pid, start time) of every process the server started (kernels), recorded at stop().
        self.children: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ urls and requests
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path.lstrip('/')}{sep}token={self.token}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        req = urllib.request.Request(self.base + path.lstrip("/"),
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def federated_extensions(self) -> list[str]:
        """Names of the prebuilt lab extensions the server really serves (from the page config)."""
        status, page = self.get("lab")
        match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
        if status != 200 or not match:
            raise RuntimeError(f"GET /lab answered {status} with no page config")
        config = json.loads(html.unescape(match.group(1)))
        return [ext.get("name", "") for ext in config.get("federated_extensions", [])]

    def kernels(self) -> list[dict]:
        status, body = self.get("api/kernels")
        return json.loads(body) if status == 200 else []

    def wait_for_connected_kernel(self, timeout: float = 60.0) -> dict:
        """Wait until a kernel is running, idle, and has a browser connected to it (its websocket).

        JupyterLab's own kernel indicator reads "idle" before the page has connected to the kernel;
        a cell run in that window is silently dropped, so the tests wait on the server's view."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kernel in self.kernels():
                if kernel.get("connections", 0) >= 1 and kernel.get("execution_state") == "idle":
                    return kernel
            time.sleep(0.2)
        raise TimeoutError(f"no idle kernel with a browser connection within {timeout:.0f} s: {self.kernels()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # --------------------------------------------------------------------------- lifecycle
    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        jup = self.workdir / "jupyter"
        dirs = {
            "JUPYTER_CONFIG_DIR": jup / "config",
            "JUPYTER_DATA_DIR": jup / "data",
            "JUPYTER_RUNTIME_DIR": jup / "runtime",
            "IPYTHONDIR": jup / "ipython",
            "JUPYTERLAB_SETTINGS_DIR": jup / "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": jup / "lab-workspaces",
        }
        for name, path in dirs.items():
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def _write_lab_settings(self, settings_dir: Path) -> None:
        """No news / update toasts over the page."""
        target = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--ServerApp.terminals_enabled=False",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # containers, CI
        ]

    def start(self) -> "JupyterLab":
        env = self.environment()
        self._write_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            self._log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.command(), cwd=str(self.root), env=env, stdin=subprocess.DEVNULL,
                                         stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
                if "address already in use" not in self.log_tail(200).lower():
                    break
        raise RuntimeError(f"{last_error}\n--- server log ---\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc and self.proc.returncode}")
            try:
                status, body = self.get("api/status", timeout=2)
                if status == 200 and "started" in body:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter lab did not answer /api/status within {self.startup_timeout:.0f} s")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every kernel it started; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self.children.extend(_descendants(proc.pid))
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # Jupyter Server shuts its kernels down on SIGTERM
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        deadline = time.monotonic() + 5
        for pid, started in self.children:
            while _start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.1)  # give a kernel a moment to finish its own shutdown
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def leftover_processes(self) -> list[int]:
        """Processes started by this server that are still alive (for the no-orphans check)."""
        return [pid for pid, started in self.children if _start_time(pid) == started]

    def __enter__(self) -> "JupyterLab":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- what every browser test does first ---------------------------------------------------------------

#: Milliseconds. Generous: a cold JupyterLab + kernel on a busy CI box can be slow.
LOAD_TIMEOUT = 60_000


@contextlib.contextmanager
def lab_with_notebook(tmp_path: Path, name: str, *cells: str, env: dict[str, str] | None = None) -> Iterator["JupyterLab"]:
    """JupyterLab serving a folder that holds one notebook ``name`` with ``cells``, with its own
    ``SHARK_NB_HOME``; stopped (with its kernels) afterwards, and nothing it started left behind."""
    require_browser()
    root = tmp_path / "notebooks"
    root.mkdir()
    write_notebook(root / name, *cells)
    server = JupyterLab(root, tmp_path / "lab", env={"SHARK_NB_HOME": str(tmp_path / "shark_home"), **(env or {})})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.leftover_processes(), f"processes left behind: {server.leftover_processes()}"


def open_notebook(page: Any, lab: "JupyterLab", name: str) -> Any:
    """Open ``name`` in ``page``, wait until its kernel is connected and idle, and fold the left
    sidebar (room for wide widgets). Returns the first cell's locator, ready to run."""
    from playwright.sync_api import expect

    page.goto(lab.url(f"lab/tree/{name}"), timeout=LOAD_TIMEOUT)
    cell = page.locator(".jp-Notebook .jp-Cell").first
    expect(cell).to_be_visible(timeout=LOAD_TIMEOUT)
    lab.wait_for_connected_kernel(timeout=LOAD_TIMEOUT / 1000)
    expect(page.locator(".jp-Notebook-ExecutionIndicator").first).to_have_attribute(
        "data-status", "idle", timeout=LOAD_TIMEOUT)
    left_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if left_tab.count():
        left_tab.first.click()
        expect(page.locator("#jp-left-stack")).to_be_hidden()
    return cell


def run_cell(page: Any, cell: Any) -> None:
    """Run a cell as a user would: click into its editor, Shift+Enter."""
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
