"""One way for tests to get an IPython shell with ``%shark`` loaded on a known client."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from IPython.core.interactiveshell import InteractiveShell

from shark_nb import magic, session
from shark_nb.ledger import reset_default_ledger


@contextlib.contextmanager
def magic_shell(client: Any = None) -> Iterator[InteractiveShell]:
    """The shell with the extension freshly loaded: on ``client`` when given, else on a new shared
    client and ledger. Afterwards the extension is unloaded and the shared client forgotten."""
    shell = InteractiveShell.instance()
    magic.unload_ipython_extension(shell)
    session.reset_client()
    reset_default_ledger()
    if client is not None:
        session.set_client(client)
    magic.load_ipython_extension(shell)
    try:
        yield shell
    finally:
        for name in ("_shark", "grid"):
            shell.user_ns.pop(name, None)
        magic.unload_ipython_extension(shell)
        session.reset_client()
        reset_default_ledger()
