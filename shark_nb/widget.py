"""The studio widget (``shark_nb.studio()``); it lives in :mod:`shark_nb.ui`, split into parts.
This module keeps the names it always had."""

from __future__ import annotations

from .ui.jobs import REFUSED_MESSAGE, TICK_SECONDS
from .ui.studio import OFFLINE_BANNER, Studio, studio
from .ui.uploads import MAX_UPLOAD_BYTES

__all__ = ["Studio", "studio", "MAX_UPLOAD_BYTES"]
