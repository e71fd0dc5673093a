"""The public surface is exactly what shark_nb re-exports; the architecture's names are all there."""

import subprocess
import sys

import shark_nb

CONTRACT = {
    "Shark", "AsyncShark", "Ledger", "SharkError", "ValidationError", "InvalidRequestError",
    "ContentModerationError", "InputTooLargeError", "AuthenticationError", "InsufficientCreditsError",
    "ModelNotFoundError", "RateLimitError", "ProviderError", "GatewayTimeoutError", "APIConnectionError",
    "TaskFailedError", "TaskCancelledError", "BudgetExceededError", "studio", "set_key",
}


def test_every_exported_name_resolves():
    for name in shark_nb.__all__:
        assert getattr(shark_nb, name) is not None, name


def test_the_architecture_contract_is_exported():
    assert CONTRACT <= set(shark_nb.__all__)


def test_importing_the_package_loads_no_heavy_module():
    code = ("import sys, shark_nb; heavy = [m for m in ('httpx', 'PIL', 'numpy', 'ipywidgets') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
