"""The offline Shark API simulator: the published API, with no account, no network and no spend.

One request handler (:class:`Simulator`) served two ways:

* in process, as httpx transports: :class:`SimulatorTransport` / :class:`AsyncSimulatorTransport`
  (API at ``http://api.shark-sim.invalid/api/v1``, images at ``http://files.shark-sim.invalid``);
* as a real loopback HTTP server: :func:`serve_in_thread` (tests, benchmarks) or
  ``python -m shark_nb.simulator --port 8765`` (``--help`` lists the knobs).

Behaviour, configuration (:class:`SimulatorConfig`) and the deterministic fault injection
(``sim.inject(route, kind, ...)``, ``sim.rate_limit``) are documented in
:mod:`shark_nb.simulator.service`; image synthesis in :mod:`shark_nb.simulator.render`.
Importing this package is light: Pillow and numpy load on the first render.
"""

from .server import ServerHandle, serve_in_thread
from .service import FAULT_KINDS, ROUTES, Fault, ManualClock, SimResponse, Simulator, SimulatorConfig
from .transport import AsyncSimulatorTransport, SimulatorTransport

__all__ = [
    "Simulator",
    "SimulatorConfig",
    "SimResponse",
    "Fault",
    "ManualClock",
    "ROUTES",
    "FAULT_KINDS",
    "SimulatorTransport",
    "AsyncSimulatorTransport",
    "serve_in_thread",
    "ServerHandle",
]
