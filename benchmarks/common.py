"""Shared helpers for the benchmarks: statistics, result rows, servers, kernels, child processes.

Every benchmark module exposes ``run(quick: bool) -> list[Row]``. A :class:`Row` is one line of
the published table: what shark_nb measured, what the alternative measured *in the same run*,
the comparison between them, the goal and whether it was met.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-bench-0000"


# --- statistics --------------------------------------------------------------------------------

@dataclass
class Sample:
    """Repeated measurements of one quantity (seconds unless said otherwise)."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(float(v))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def ms(self, digits: int = 1) -> str:
        """``12.3 ms [10.1–15.0]`` (median [min–max], n)."""
        return f"{self.median * 1000:.{digits}f} ms [{self.lo * 1000:.{digits}f}–{self.hi * 1000:.{digits}f}]"

    def s(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} s [{self.lo:.{digits}f}–{self.hi:.{digits}f}]"

    def __len__(self) -> int:
        return len(self.values)


def ratio_spread(num: Sample, den: Sample) -> tuple[float, float, float]:
    """Median ratio, and the spread of the per-repetition ratios (runs are paired/interleaved)."""
    pairs = [a / b for a, b in zip(num.values, den.values) if b > 0]
    return num.median / den.median, min(pairs), max(pairs)


def fmt_ratio(r: tuple[float, float, float], digits: int = 2) -> str:
    return f"{r[0]:.{digits}f}x [{r[1]:.{digits}f}–{r[2]:.{digits}f}]"


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


# --- rows --------------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the results table."""

    id: str                 # "1a", "3c", ...
    what: str               # short description of the comparison
    ours: str               # shark_nb's figure (median [spread])
    alternative: str        # the alternative's figure in the same run
    comparison: str         # the ratio / difference
    goal: str
    met: bool | None        # None: context only, no goal
    note: str = ""          # a sentence (required for a miss)
    details: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "—" if self.met is None else ("met" if self.met else "**missed**")


def error_row(bench_id: str, name: str, exc: BaseException) -> Row:
    return Row(bench_id, name, "error", "", "", "", False, f"the benchmark failed: {type(exc).__name__}: {exc}")


# --- timing ------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def interleave(reps: int, funcs: dict[str, Callable[[], Any]]) -> dict[str, Sample]:
    """Run every function once per repetition, rotating the order so drift hits them alike."""
    names = list(funcs)
    samples = {n: Sample() for n in names}
    for i in range(reps):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            dt, _ = timed(funcs[n])
            samples[n].add(dt)
    return samples


# --- servers and clients -----------------------------------------------------------------------

@contextlib.contextmanager
def sim_server(**config: Any) -> Iterator[Any]:
    """The simulator as a real loopback HTTP server in a thread of this process."""
    from shark_nb.simulator import Simulator, serve_in_thread

    with serve_in_thread(Simulator(**config)) as handle:
        yield handle


@contextlib.contextmanager
def shark_client(handle: Any, **kw: Any) -> Iterator[Any]:
    """A ``Shark`` on the loopback server with a throw-away ledger."""
    from shark_nb import Ledger, Shark

    with tempfile.TemporaryDirectory(prefix="shark-bench-") as tmp:
        client = Shark(api_key=KEY, base_url=handle.base_url, ledger=Ledger(os.path.join(tmp, "ledger.jsonl")), **kw)
        try:
            yield client
        finally:
            client.close()


def kernel_env(home: Path, base_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child kernel/process: this repo importable, an isolated SHARK_NB_HOME,
    and (with ``base_url``) a key and base URL pointing at a loopback simulator."""
    env = dict(os.environ)
    for k in ("SHARK_API_KEY", "SHARK_BASE_URL", "SHARK_OFFLINE"):
        env.pop(k, None)
    env["SHARK_NB_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if base_url is not None:
        env["SHARK_API_KEY"] = KEY
        env["SHARK_BASE_URL"] = base_url
    env.update(extra)
    return env


def run_child(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
              cwd: str | None = None) -> str:
    """Run ``python -c code args...`` and return its stdout; raise with stderr on failure."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (rc {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


def load_text() -> str:
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f} / {b:.2f} / {c:.2f}"
    except OSError:  # pragma: no cover - not on this platform
        return "n/a"
