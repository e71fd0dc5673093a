"""The studio, in parts a reader can hold in their head.

| module | owns |
|---|---|
| :mod:`.studio` | ``Studio`` / ``studio()``: composition, the model dropdown, estimate, status |
| :mod:`.settings` | a model's settings as controls, built from its schema; reading them back |
| :mod:`.uploads` | reference-image slots and the mask slot, sized to the model, with their checks |
| :mod:`.jobs` | the job runner, no widgets: asyncio task, elapsed ticker, Cancel / Stop waiting |
| :mod:`.gallery` | result cards: previews, Save, Open, Use as reference |
| :mod:`.common` | colours, plain-words messages, previews, closing widget trees |

``shark_nb.widget`` re-exports the public names (``Studio``, ``studio``, ``MAX_UPLOAD_BYTES``).
"""

from .studio import OFFLINE_BANNER, Studio, studio
from .uploads import MAX_UPLOAD_BYTES

__all__ = ["Studio", "studio", "MAX_UPLOAD_BYTES", "OFFLINE_BANNER"]
