"""The tutorial notebooks in ``notebooks/`` run top to bottom, offline, with no key — under nbval.

How the notebooks join the plain ``pytest`` run (``testpaths = ["tests"]``):
:func:`test_notebooks_run_under_nbval` runs, in a subprocess,

    python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider <copy of notebooks/>

* on a **temporary copy** of ``notebooks/``, so the images and CSV the notebooks write
  (``shark-images/`` beside each notebook) never land in the repository;
* with ``SHARK_NB_HOME`` in a temporary folder (the session ledgers go there), no
  ``SHARK_API_KEY`` / ``SHARK_BASE_URL`` / ``SHARK_OFFLINE`` (a key-less user: the offline
  simulator), the default ``SHARK_SIM_LATENCY``, and every HTTP(S) proxy pointed at a closed
  local port, so a notebook that tried to reach the network would fail instead of passing by luck;
* with ``PYTHONPATH`` set to this checkout, so the kernel imports the code under test whether or
  not the package is installed.

One gap in nbval is closed here: IPython prints a *plain* ``UsageError`` (a magic that is not
loaded or does not exist, ``%load_ext`` of a missing extension's magic) on stderr only, not as an
error output, so nbval passes such a cell. (The ``%shark`` magic's own mistakes are sent as real
error outputs, so nbval sees those.) A small plugin (:data:`STRICT_PLUGIN`, written as
``conftest.py`` into the copy) fails any cell that printed ``UsageError:``. A cell tagged
``raises-exception`` (honoured by nbval and nbclient alike) shows an error on purpose: the plugin
checks that it does raise one.

A subprocess keeps the environment clean: the kernels do not inherit this session's fixtures,
``filterwarnings = error`` or monkeypatched variables, and nbval's own collection stays out of
``tests/``. A JUnit report tells which cells ran: every notebook must be collected, with every
code cell, and every cell must pass. ``--nbval-lax`` executes all cells and fails on errors, but
compares no outputs (the notebooks are stored with outputs cleared; offline images and tracing
ids differ on every run anyway).

To run the notebooks by hand, from the repository root:

    SHARK_NB_HOME=$(mktemp -d) python -m pytest --nbval-lax notebooks/

The other tests here are static checks of the stored notebooks (cheap, no kernel).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXPECTED = [
    "01-quickstart.ipynb",
    "02-magic.ipynb",
    "03-studio.ipynb",
    "04-editing.ipynb",
    "05-ledger-and-budgets.ipynb",
    "06-batches.ipynb",
    "07-models.ipynb",
    "08-history.ipynb",
]
#: A stored notebook above this size has outputs or pasted data in it: the repo must stay small.
MAX_STORED_BYTES = 24_000
#: Generous per-notebook ceiling (cell time, kernel start excluded); each takes a few seconds.
MAX_SECONDS_PER_NOTEBOOK = 60.0
#: Where a request to the network would go: a closed port (connection refused at once).
BLACKHOLE_PROXY = "http://127.0.0.1:9"


#: conftest.py for the nbval run: a cell that printed a UsageError fails (see the module docstring).
STRICT_PLUGIN = '''
import re

import pytest

USAGE_ERROR = re.compile(r"^UsageError:", re.M)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    cell = getattr(item, "cell", None)
    if cell is None:
        return result
    outputs = getattr(item, "test_outputs", None) or []
    if "raises-exception" in cell.get("metadata", {}).get("tags", []):
        if not any(o.get("output_type") == "error" for o in outputs):
            pytest.fail("the cell is tagged raises-exception but raised nothing", pytrace=False)
        return result
    printed = "".join(o.get("text", "") for o in outputs
                      if o.get("output_type") == "stream" and o.get("name") == "stderr")
    if USAGE_ERROR.search(printed):
        pytest.fail("the cell printed a UsageError (nbval alone would pass it):\\n" + printed[-2000:],
                    pytrace=False)
    return result
'''


def _notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _code_cells(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a key-less user, with the network closed off (shared with test_binder)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SHARK_") and k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")}
    env["SHARK_NB_HOME"] = str(home)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = BLACKHOLE_PROXY
    env["NO_PROXY"] = env["no_proxy"] = ""
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def copy_notebooks(dest: Path) -> Path:
    """A copy of notebooks/*.ipynb (nothing else: no stray shark-images/ or checkpoints)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in _notebook_paths():
        shutil.copy2(path, dest / path.name)
    return dest


# ------------------------------------------------------------------------------ stored notebooks

def test_every_tutorial_notebook_is_there():
    assert [p.name for p in _notebook_paths()] == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_stored_small_valid_and_without_outputs(name):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3", "Binder and nbval start the python3 kernel"
    size = path.stat().st_size
    assert size < MAX_STORED_BYTES, f"{name} is {size:,} bytes: clear its outputs before committing"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} was saved with outputs: clear them"
            assert cell.execution_count is None, f"{name} cell {i} was saved with an execution count"
        assert "attachments" not in cell or not cell.attachments, f"{name} cell {i} carries attachments"
    assert "widgets" not in nb.metadata, f"{name} was saved with widget state"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_holds_no_key_and_no_network_address(name):
    text = (NOTEBOOKS / name).read_text(encoding="utf-8")
    assert not re.search(r"sk-[A-Za-z0-9_\-]{8,}", text), f"{name} contains something that looks like an API key"
    assert "SHARK_API_KEY=" not in text.replace("SHARK_API_KEY=sk-...", ""), f"{name} sets a key"
    # Code cells never point at a host: everything runs on the in-process simulator.
    for cell in _code_cells(NOTEBOOKS / name):
        assert not re.search(r"https?://", cell.source), f"{name} has a URL in a code cell: {cell.source[:80]!r}"


def test_quickstart_opens_by_saying_it_runs_offline_without_a_key():
    nb = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    text = first.source.lower()
    assert "offline simulator" in text and "without an api key" in text and "nothing is charged" in text


@pytest.mark.parametrize("name", EXPECTED)
def test_code_cells_are_valid_python(name):
    for cell in _code_cells(NOTEBOOKS / name):
        if cell.source.lstrip().startswith("%%"):
            continue  # the whole cell belongs to a cell magic (a prompt)
        source = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line
                           for line in cell.source.splitlines())
        compile(source, f"{name} cell", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


# ------------------------------------------------------------------------------------- nbval run

def _junit_cells(report: Path) -> dict[str, list[ET.Element]]:
    by_notebook: dict[str, list[ET.Element]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        # nodeid "01-quickstart.ipynb::Cell 3" -> classname "01-quickstart.ipynb", name "Cell 3"
        by_notebook.setdefault(case.get("classname", ""), []).append(case)
    return by_notebook


def test_notebooks_run_under_nbval(tmp_path):
    work = copy_notebooks(tmp_path / "notebooks")
    (work / "pytest.ini").write_text("[pytest]\naddopts =\n")  # this folder is the rootdir; no repo config
    (work / "conftest.py").write_text(STRICT_PLUGIN)
    report = tmp_path / "nbval.xml"
    env = clean_env(tmp_path / "shark_home")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=120",
         "-p", "no:cacheprovider", "-q", "-rfE", f"--junitxml={report}", "-o", "junit_family=xunit2", "."],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )
    elapsed = time.monotonic() - started
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"nbval failed (exit {proc.returncode}):\n{tail}"
    assert report.exists(), tail

    cells = _junit_cells(report)
    assert sorted(cells) == EXPECTED, f"notebooks collected: {sorted(cells)}\n{tail}"
    timings = []
    for name in EXPECTED:
        expected = len(_code_cells(NOTEBOOKS / name))
        cases = cells[name]
        assert len(cases) == expected, f"{name}: {len(cases)} cells ran, {expected} code cells in the notebook"
        bad = [c.get("name") for c in cases if len(c)]  # <failure>, <error> or <skipped> children
        assert not bad, f"{name}: cells not passed: {bad}\n{tail}"
        seconds = sum(float(c.get("time", 0)) for c in cases)
        timings.append(f"{name} {seconds:.1f}s")
        assert seconds < MAX_SECONDS_PER_NOTEBOOK, f"{name} took {seconds:.1f} s"
    print(f"\nnbval: {sum(len(v) for v in cells.values())} cells in {len(cells)} notebooks, "
          f"{elapsed:.1f} s in all ({', '.join(timings)})")

    # The notebooks wrote into the temporary copy and the temporary SHARK_NB_HOME, not the repo.
    assert any((tmp_path / "shark_home" / "ledger").glob("*.jsonl")), "the notebooks wrote no ledger"
    assert (work / "shark-images").is_dir()
    assert sorted(p.name for p in NOTEBOOKS.iterdir() if p.suffix == ".ipynb") == EXPECTED


def test_quickstart_output_announces_offline_keeps_files_beside_it_and_stays_small(tmp_path):
    """What a key-less user sees and keeps after running the quickstart (run with nbclient)."""
    pytest.importorskip("nbclient")
    work = copy_notebooks(tmp_path / "notebooks")
    home = tmp_path / "shark_home"
    env = clean_env(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    script = (
        "import sys, nbformat, nbclient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "nbclient.NotebookClient(nb, timeout=120, kernel_name='python3',\n"
        "    resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
        "nbformat.write(nb, sys.argv[3])\n"
    )
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run([sys.executable, "-c", script, str(work / "01-quickstart.ipynb"), str(work), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    executed = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "offline simulator" in text          # the announcement a key-less user sees
    assert "Secret(" not in text and "Bearer" not in text
    saved = list((work / "shark-images").glob("*.png"))
    assert saved, "the quickstart saves its image beside the notebook"
    ledgers = list((home / "ledger").glob("*.jsonl"))
    assert len(ledgers) == 1
    lines = [json.loads(line) for line in ledgers[0].read_text().splitlines() if line.strip()]
    assert lines and all(r["offline"] is True for r in lines)
    from shark_nb import Ledger

    records = Ledger.load(ledgers[0]).records  # write-ahead "sending" lines merged into their outcome
    assert records and all(r["outcome"] == "ok" for r in records)
    # The executed notebook stays small: previews, not full images (about 2 MB each here).
    assert out.stat().st_size < 400_000, f"executed quickstart is {out.stat().st_size:,} bytes"
