"""The Binder setup in ``binder/`` gives a JupyterLab where the notebooks work with no key.

What mybinder.org (repo2docker) does with this repository, and so what these tests check:

* ``binder/`` exists, so repo2docker reads its configuration from there only (root files such as
  ``pyproject.toml`` are not looked at for the environment).
* ``binder/runtime.txt`` (``python-3.11``) picks the Python; the base environment brings
  JupyterLab 4, notebook 7 and ipywidgets 8.
* ``binder/requirements.txt`` is installed with ``pip install -r binder/requirements.txt`` from the
  repository root. Its ``.`` line is a local reference, which makes repo2docker copy the whole
  repository in first; pip reads ``.`` relative to the working directory: the repository root.
  No ``postBuild`` is needed.
* The launch link (``binder/README-badge.md``) opens ``lab/tree/notebooks/01-quickstart.ipynb``.

The fast tests check those files. :func:`test_binder_environment_runs_every_notebook` builds the
environment for real in a **fresh virtualenv** (no system site-packages) from a copy of the
repository: first the base environment's stand-in (``jupyterlab`` 4, ``ipywidgets`` 8), then
``pip install -r binder/requirements.txt`` from the copy's root, exactly as repo2docker runs it.
Then it executes every notebook with that venv's own kernel (nbclient, which fails on any error
*including* a magic's ``UsageError``), with no key and the network closed off, and starts JupyterLab
to check that the launch URL answers and that the widgets extension (the studio needs it) is there.

It needs the package index (pip's cache helps: it is not disabled) and takes 1–2 minutes here
(venv 5–9 s, base environment 15–29 s, requirements 13–18 s, notebooks 19–25 s, JupyterLab 3–5 s),
so it runs when ``CI`` is true (CI services set it) or ``SHARK_NB_SLOW=1``, and is skipped
otherwise:

    SHARK_NB_SLOW=1 python -m pytest tests/test_binder.py -q -s
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_notebooks import EXPECTED, clean_env, copy_notebooks

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"
#: What repo2docker's base environment provides (repo2docker/buildpacks/conda/environment.py-3.11.yml).
BASE_ENV = ["jupyterlab>=4,<5", "ipywidgets>=8,<9"]
#: Copied into the throw-away repository: everything but VCS data, caches and build output.
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".benchmarks", "*.egg-info",
                                     "build", "dist", ".venv", "shark-images", ".ipynb_checkpoints")

SLOW = os.environ.get("CI", "").lower() in ("true", "1", "yes") or os.environ.get("SHARK_NB_SLOW") == "1"


def _requirement_lines() -> list[str]:
    lines = []
    for raw in (BINDER / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


# ------------------------------------------------------------------------------ the binder files

def test_binder_requirements_install_this_repository_and_pandas():
    lines = _requirement_lines()
    # "." (not "-e ."): a normal install, from the repository root where repo2docker runs pip.
    assert "." in lines, lines
    assert any(re.match(r"pandas\b", line) for line in lines), "05-ledger-and-budgets needs pandas"
    # Nothing that would fight the base environment's JupyterLab or pin the kernel.
    assert not any(re.match(r"(jupyterlab|notebook|jupyter-server|ipykernel)\b", line) for line in lines), lines


def test_binder_runtime_is_a_python_the_package_supports():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-3\.(\d+)", runtime)
    assert m, runtime
    requires = re.search(r'requires-python\s*=\s*">=3\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert requires and int(m.group(1)) >= int(requires.group(1))


def test_binder_needs_no_postbuild_and_sets_no_key():
    for name in ("postBuild", "start", "environment.yml", "Dockerfile", "setup.py"):
        assert not (BINDER / name).exists(), f"binder/{name} would change how repo2docker builds"
    for path in BINDER.iterdir():
        assert not re.search(r"SHARK_API_KEY\s*=", path.read_text()), f"{path.name}: Binder must run key-less"


def test_badge_opens_the_quickstart_in_jupyterlab():
    text = (BINDER / "README-badge.md").read_text()
    links = re.findall(r"\((https://mybinder\.org/v2/gh/[^)\s]+)\)", text)
    assert links, text
    for link in links:
        assert link.startswith("https://mybinder.org/v2/gh/OWNER/shark_nb/HEAD?"), link
        urlpath = re.search(r"[?&]urlpath=([^&#]+)", link).group(1)
        assert urlpath == "lab/tree/notebooks/01-quickstart.ipynb", urlpath
        assert (REPO / urlpath.removeprefix("lab/tree/")).is_file()


# ------------------------------------------------------------------------- the real environment

RUNNER = r'''
import json, os, sys, time
import nbformat
from nbclient import NotebookClient

folder, report = sys.argv[1], sys.argv[2]
results = {}
for name in sys.argv[3:]:
    nb = nbformat.read(os.path.join(folder, name), as_version=4)
    started = time.monotonic()
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": folder}}).execute()
        error = None
    except Exception as exc:  # CellExecutionError, DeadKernelError, timeouts
        error = f"{type(exc).__name__}: {exc}"[-3000:]
    for i, c in enumerate(nb.cells):
        tags = c.get("metadata", {}).get("tags", [])
        if "raises-exception" in tags and not any(o.output_type == "error" for o in c.outputs):
            error = error or f"cell {i} is tagged raises-exception but raised nothing"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    results[name] = {"seconds": round(time.monotonic() - started, 1), "error": error,
                     "text": "".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
                                     for o in outputs)}
with open(report, "w") as fh:
    json.dump(results, fh)
'''

PROBE = "import sys, shark_nb; print('PROBE', sys.prefix, shark_nb.__file__, shark_nb.Shark().offline)"


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-5000:]}"
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.skipif(not SLOW, reason="builds a fresh virtualenv (needs the package index, 1-2 min): "
                                      "set SHARK_NB_SLOW=1 (CI=true runs it)")
def test_binder_environment_runs_every_notebook(tmp_path):
    timings: dict[str, float] = {}
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=COPY_IGNORE)
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"

    # pip's own environment: the user's pip configuration and cache, but nothing of this session's
    # Python (no PYTHONPATH: the kernel must import shark_nb from the venv).
    pip_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    t = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=pip_env, timeout=300)
    timings["venv"] = time.monotonic() - t
    t = time.monotonic()
    _run([str(py), "-m", "pip", "install", "-q", *BASE_ENV], cwd=repo, env=pip_env, timeout=1200)
    timings["base environment"] = time.monotonic() - t
    t = time.monotonic()
    # Exactly repo2docker's command, from the repository root.
    _run([str(py), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], cwd=repo, env=pip_env,
         timeout=1200)
    timings["binder/requirements.txt"] = time.monotonic() - t

    # Run the notebooks with the venv's kernel, key-less and with the network closed off.
    env = clean_env(tmp_path / "shark_home")
    env.pop("PYTHONPATH", None)
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter-data")   # no user-level kernelspec can win
    env.pop("JUPYTER_PATH", None)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(venv)
    work = copy_notebooks(tmp_path / "notebooks")
    probe = work / "00-probe.ipynb"
    probe.write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": PROBE, "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 4}))
    (tmp_path / "runner.py").write_text(RUNNER)
    report = tmp_path / "report.json"
    t = time.monotonic()
    _run([str(py), str(tmp_path / "runner.py"), str(work), str(report), probe.name, *EXPECTED],
         cwd=work, env=env, timeout=900)
    timings["notebooks"] = time.monotonic() - t
    results = json.loads(report.read_text())

    # The kernel was the venv's, importing the installed package, offline.
    assert results[probe.name]["error"] is None, results[probe.name]
    m = re.search(r"PROBE (\S+) (\S+) (\w+)", results[probe.name]["text"])
    assert m, results[probe.name]
    prefix, module, offline = m.groups()
    assert Path(prefix).resolve() == venv.resolve(), f"the kernel ran in {prefix}, not the Binder venv"
    assert Path(module).resolve().is_relative_to(venv.resolve()), f"shark_nb imported from {module}"
    assert offline == "True"

    failed = {name: r["error"] for name, r in results.items() if r["error"]}
    assert not failed, "\n\n".join(f"{name}:\n{err}" for name, err in failed.items())
    assert "offline simulator" in results["01-quickstart.ipynb"]["text"]

    # JupyterLab starts, the launch URL answers, and the widgets extension (for the studio) is there.
    port = _free_port()
    token = "binder-test"
    t = time.monotonic()
    lab = subprocess.Popen(
        [str(venv / "bin" / "jupyter"), "lab", "--no-browser", f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={repo}",
         "--ServerApp.port_retries=0", *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = _get(f"{base}/api/status?token={token}", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            assert lab.poll() is None, f"jupyter lab exited:\n{lab.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, "jupyter lab did not start in 90 s"
            time.sleep(0.5)
        status, body = _get(f"{base}/lab/tree/notebooks/01-quickstart.ipynb?token={token}")
        assert status == 200 and b"jupyter-config-data" in body, (status, body[:300])
        status, body = _get(f"{base}/api/contents/notebooks/01-quickstart.ipynb?token={token}&content=0")
        assert status == 200, status
        status, body = _get(f"{base}/lab/api/extensions?token={token}")
        assert status == 200, status
        names = sorted(str(e.get("name")) for e in json.loads(body))
        assert any("jupyterlab-manager" in n for n in names), names   # the ipywidgets extension
        status, body = _get(f"{base}/api/kernelspecs?token={token}")
        assert json.loads(body)["default"] == "python3"
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
        if lab.stdout is not None:
            lab.stdout.close()
    timings["jupyter lab check"] = time.monotonic() - t

    shutil.rmtree(venv, ignore_errors=True)  # ~400 MB; kept only when the test fails, for a look
    per_notebook = ", ".join(f"{n} {r['seconds']}s" for n, r in results.items())
    print("\nbinder venv: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + f"\n  ({per_notebook})")
