"""``%shark`` / ``%%shark``: generate images from a notebook cell.

Load with ``%load_ext shark_nb``. Grammar (``%shark --help`` prints it)::

    %%shark [options]               the cell body is the prompt
    a red fox in the snow, {style}

    %shark [options] [--] prompt    one line; options first, the prompt is the rest of the
                                    line, verbatim (quotes and apostrophes are kept)
    %shark ledger                   the session ledger
    %shark budget [AMOUNT | off]    show or set the session budget: $2.50 / 2.50$ / 2.50 usd
                                    are dollars, 25000 (or 25000 credits) is credits
    %shark studio                   the studio widget (``%shark widget`` is the same)
    %shark config                   the effective settings (the key only as set / unset)
    %shark compare --models gpt-image-2,gemini,seedream [options] prompt
    %shark compare --model gpt-image-2 --vary quality=low,medium,high [options] prompt
                                    one prompt across models or values: a grid (also %%shark compare)
    %shark --help                   this help; %shark --model NAME --help: one model's options

Options: every setting of every model is an option, derived from the model schemas
(:mod:`shark_nb.magic.options`): ``-n``, ``--size``, ``--quality``, ``--aspect-ratio``,
``--image-size``, ``--seed``, ``--stylize``, ``--sref`` ... An option shared by several models
means that model's field (its text read by the chosen model's ``Field.parse``, its value judged
by that model's schema); an option the chosen model lacks is an error naming the models that take
it. ``--model`` takes ids and aliases (gemini, mj, grok ...); ``--image X`` (repeatable) and
``--mask X`` where X is a file path or the name of a notebook variable holding a PIL image,
bytes, a GenerationResult (its first image, or ``name[i]``) or a GeneratedImage; ``--wait
sync|task``, ``-o/--out NAME``, ``--save DIR``, ``--dry-run``, ``--full``.

Decisions (documented in ``%shark --help`` too):

* **A prompt that starts with a subcommand word** (``ledger``, ``budget``, ``studio``, ``widget``,
  ``config``, ``help``, ``compare``): subcommands are recognised only as the *first word of the line form*.
  Write ``%shark -- ledger of a ship``, put any option first (``%shark -n 1 ledger of a ship``),
  or use the cell form, whose body is always a prompt. A subcommand given extra words it does not
  take is an error that says so, never a silent generation.
* **A prompt that starts with ``-``**: put ``--`` before it. An unknown option is an error with a
  did-you-mean (``--output-format`` -> ``--format``, ``--stylise`` -> ``--stylize``); options are
  never abbreviated (``--qual`` is refused with "did you mean --quality"), because the options
  grow with the schemas and an abbreviation could change meaning when a model is added.
* **``{name}``** expands notebook variables with :class:`string.Formatter` against the user
  namespace (attribute and index access, format specs, no ``eval``); ``{{`` / ``}}`` are literal
  braces; an unknown name is an error naming it.
* **Defaults per model**: ``%config Shark.defaults = {"gemini": {"aspect_ratio": "16:9"}}``
  (any model name or alias as key; validated by that model's schema when set). The older
  traits ``size``, ``quality``, ``background``, ``output_format`` and ``n`` are gpt-image-2's
  defaults (validated by its schema) and are used for gpt-image-2 only: other models' fields of
  the same name take other values. Order: the model's published defaults < those traits (for
  gpt-image-2) < ``defaults[model]`` < the options on the line.
* **Config**: the settings are traitlets on :class:`SharkMagic`. ``%config SharkMagic.size = ...``
  works, and so does ``%config Shark.size = ...`` (and ``c.Shark.size`` in ``ipython_config.py``):
  ``Shark`` is declared as an extra *config section name* of SharkMagic (``section_names``), so
  there is no second Python class called ``Shark`` next to the client ``shark_nb.Shark``. When
  both are set, ``SharkMagic.*`` wins (traitlets: the more specific section). ``%config
  SharkMagic`` lists the settings with their help.
* **Errors** a user can fix (bad option, validation, auth, moderation, credits, budget, unknown
  ``{name}``, missing file) raise :class:`SharkUsageError`, a ``UsageError`` that renders as one
  red line with no traceback. It is sent as an *error* message (not just stderr text as a plain
  ``UsageError`` is in ipykernel), so the cell fails for nbval, nbclient and "Run All".
* **A one-line prompt ending in ``?``**: IPython would read it as a help request (``%shark what
  is this?`` → help on ``this``); an input-cleanup step registered by the extension turns such a
  ``%shark`` line into the explicit magic call. ``%shark?`` alone still shows the help.
* **One client per process** (:func:`get_client`), created on first use — offline when there is
  no key (the client announces it) — and shared with the studio, so there is one session ledger.
"""

from ..session import get_client, reset_client, set_client
from .core import CONFIG_ALIAS, SUBCOMMANDS, SharkMagic
from .extension import _loaded, load_ipython_extension, unload_ipython_extension
from .usage import SharkUsageError, expand_prompt, parse_budget

__all__ = ["SharkMagic", "SharkUsageError", "get_client", "set_client", "reset_client",
           "expand_prompt", "parse_budget", "load_ipython_extension", "unload_ipython_extension"]
