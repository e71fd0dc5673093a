"""Smoke test of the benchmark runner: ``benchmarks/run.py --quick`` completes and writes a table
with a row for every benchmark.

It asserts nothing about speed (the machines are shared and noisy): only that every benchmark ran
and reported. The table goes to a temporary path, never to the repository's RESULTS.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("jupyter_client")
pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "benchmarks" / "run.py"


def _benchmark_ids() -> list[str]:
    sys.path.insert(0, str(RUNNER.parent))
    try:
        import run  # benchmarks/run.py
    finally:
        sys.path.remove(str(RUNNER.parent))
    return [bid for bid, _module, _title in run.BENCHMARKS]


def test_quick_run_completes_and_writes_every_row(tmp_path):
    out = tmp_path / "RESULTS.md"
    results = REPO / "benchmarks" / "RESULTS.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(RUNNER), "--quick", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    took = time.monotonic() - started
    assert proc.returncode == 0, f"the runner failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert out.exists()
    text = out.read_text()
    assert "| # | comparison |" in text
    rows = re.findall(r"^\| (\d+[a-z]?) \|", text, flags=re.MULTILINE)
    for bid in _benchmark_ids():
        assert any(r == bid or (r[:-1] == bid and r[-1].isalpha()) for r in rows), f"no row for benchmark {bid}"
    for line in text.splitlines():
        if re.match(r"^\| \d", line):
            assert "| error |" not in line, line
            assert re.search(r"\| (met|\*\*missed\*\*|—) \|$", line), line
    assert "load average" in text
    # the repository's published table is left alone
    assert (results.stat().st_mtime_ns if results.exists() else None) == before
    print(f"\nquick benchmark run: {took:.0f} s", file=sys.stderr)
