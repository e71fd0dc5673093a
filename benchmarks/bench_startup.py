"""7. Start-up cost: ``%load_ext shark_nb`` against ``import ipywidgets`` alone, in fresh processes.

Three fresh interpreters per repetition, interleaved:

* **shell**: ``InteractiveShell.instance()`` (what every kernel already pays);
* **ipywidgets**: the shell, then ``import ipywidgets`` — the alternative;
* **load_ext**: the shell, then ``ip.run_line_magic('load_ext', 'shark_nb')``.

Goal: the load_ext process ≤ 1.3x the ipywidgets one (heavy imports — httpx, Pillow, numpy,
ipywidgets — deferred until first use). In-process increments (the time of the ``load_ext`` call,
or of ``import ipywidgets``, after the shell exists, and the modules each one imports) are
measured too, as context.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Row, Sample, kernel_env

SHELL = "from IPython.core.interactiveshell import InteractiveShell; ip = InteractiveShell.instance()"
VARIANTS = {
    "shell": SHELL,
    "ipywidgets": SHELL + "; import ipywidgets",
    "load_ext": SHELL + "; ip.run_line_magic('load_ext', 'shark_nb')",
}
HEAVY = ("httpx", "PIL", "numpy", "ipywidgets", "shark_nb.client", "shark_nb.images", "shark_nb.widget",
         "shark_nb.ledger")
PROBE = """
import sys, time, json
{shell}
before = set(sys.modules)
t = time.perf_counter()
{action}
dt = time.perf_counter() - t
new = set(sys.modules) - before
print(json.dumps(dict(dt=dt, new=len(new), heavy=sorted(h for h in {heavy!r} if h in sys.modules))))
"""


def run(quick: bool) -> list[Row]:
    reps = 2 if quick else 11
    with tempfile.TemporaryDirectory(prefix="shark-bench-s-") as tmp:
        env = kernel_env(Path(tmp) / "home")
        wall = {k: Sample() for k in VARIANTS}
        names = list(VARIANTS)
        for code in ([] if quick else VARIANTS.values()):  # warm the OS file cache and .pyc files
            subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        for i in range(reps):
            for name in names[i % 3:] + names[:i % 3]:
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", VARIANTS[name]], env=env, check=True, capture_output=True)
                wall[name].add(time.perf_counter() - t)
        inproc: dict[str, Sample] = {"ipywidgets": Sample(), "load_ext": Sample()}
        info: dict[str, dict] = {}
        for _ in range(1 if quick else 5):
            for name, action in (("ipywidgets", "import ipywidgets"),
                                 ("load_ext", "ip.run_line_magic('load_ext', 'shark_nb')")):
                out = subprocess.run([sys.executable, "-c", PROBE.format(shell=SHELL, action=action, heavy=HEAVY)],
                                     env=env, check=True, capture_output=True, text=True).stdout
                info[name] = json.loads(out.strip().splitlines()[-1])
                inproc[name].add(info[name]["dt"])
    ratio = wall["load_ext"].median / wall["ipywidgets"].median
    pairs = [a / b for a, b in zip(wall["load_ext"].values, wall["ipywidgets"].values)]
    ok = ratio <= 1.3
    heavy = info["load_ext"]["heavy"]
    return [Row(
        "7", "fresh process: IPython shell + %load_ext shark_nb vs shell + import ipywidgets",
        "load_ext " + wall["load_ext"].ms(0), "ipywidgets " + wall["ipywidgets"].ms(0),
        f"{ratio:.2f}x [{min(pairs):.2f}–{max(pairs):.2f}]",
        "≤ 1.3x", ok,
        "" if ok else "load_ext imports heavy modules at load time",
        [f"shell alone {wall['shell'].ms(0)}",
         f"in-process, after the shell: load_ext {inproc['load_ext'].ms(1)} ({info['load_ext']['new']} new modules; "
         f"heavy ones loaded: {', '.join(heavy) if heavy else 'none of ' + ', '.join(HEAVY)}) vs import ipywidgets "
         f"{inproc['ipywidgets'].ms(1)} ({info['ipywidgets']['new']} new modules)"]),
    ]
