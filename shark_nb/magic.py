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
    %shark --help                   this help

Options: ``-n N``, ``--size``, ``--quality``, ``--background``, ``--format``, ``--model``,
``--image X`` (repeatable) and ``--mask X`` where X is a file path or the name of a notebook
variable holding a PIL image, bytes, a GenerationResult (its first image, or ``name[i]``) or a
GeneratedImage; ``--wait sync|task``, ``-o/--out NAME``, ``--save DIR``, ``--dry-run``,
``--full``.

Decisions (documented in ``%shark --help`` too):

* **A prompt that starts with a subcommand word** (``ledger``, ``budget``, ``studio``, ``widget``,
  ``config``, ``help``): subcommands are recognised only as the *first word of the line form*.
  Write ``%shark -- ledger of a ship``, put any option first (``%shark -n 1 ledger of a ship``),
  or use the cell form, whose body is always a prompt. A subcommand given extra words it does not
  take is an error that says so, never a silent generation.
* **A prompt that starts with ``-``**: put ``--`` before it. An unknown option is an error.
* **``{name}``** expands notebook variables with :class:`string.Formatter` against the user
  namespace (attribute and index access, format specs, no ``eval``); ``{{`` / ``}}`` are literal
  braces; an unknown name is an error naming it.
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

from __future__ import annotations

import json
import keyword
import os
import re
import string
from copy import deepcopy
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

from . import config, params, pricing
from .display import PREVIEW_FORMATS, Gallery, fmt_credit
from .errors import SharkError, ValidationError
from .session import get_client, reset_client, set_client

__all__ = ["SharkMagic", "SharkUsageError", "get_client", "set_client", "reset_client",
           "expand_prompt", "parse_budget", "load_ipython_extension", "unload_ipython_extension"]

#: The extra config section name: ``%config Shark.size = "1536x1024"``.
CONFIG_ALIAS = "Shark"
SUBCOMMANDS = ("ledger", "budget", "studio", "widget", "config", "help")


class SharkUsageError(UsageError):
    """A mistake the user can fix: shown as one red line, no traceback; the cell fails.

    IPython prints a *plain* ``UsageError`` on stderr only, so under ipykernel the execute reply
    says "error" but no ``error`` message is sent and nbval lets the cell pass. A subclass goes
    through the normal traceback path, where ``_render_traceback_`` makes it one line.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31mUsageError: {self}\x1b[0m"]


# --- prompt expansion ------------------------------------------------------------------------

class _NamespaceFormatter(string.Formatter):
    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int):
            raise SharkUsageError(f"the prompt has a positional field {{{key}}}; name a notebook "
                                  "variable instead, or write {{ and }} for literal braces")
        return self.namespace[key]


def _field_names(text: str) -> list[str]:
    """The variable names a format string refers to (top level and nested in format specs)."""
    from _string import formatter_field_name_split  # the parser str.format itself uses

    names: list[str] = []
    for _literal, field, spec, _conv in string.Formatter().parse(text):
        if field is None:
            continue
        first, _rest = formatter_field_name_split(field)
        if first == "" or isinstance(first, int):
            raise SharkUsageError(
                f"the prompt has an empty or numbered field {{{field}}}: write {{name}} to insert "
                "a notebook variable, or {{ and }} for literal braces")
        names.append(first)
        if spec and "{" in spec:
            names.extend(_field_names(spec))
    return names


def expand_prompt(text: str, namespace: Any) -> str:
    """``{name}`` → the notebook variable's value (``{obj.attr}``, ``{seq[0]}`` and format specs
    work); ``{{`` / ``}}`` → literal braces. Raises :class:`SharkUsageError` naming every unknown
    name. Nothing is evaluated: only str.format's own field syntax."""
    if "{" not in text and "}" not in text:
        return text
    try:
        names = _field_names(text)
    except ValueError as exc:
        raise SharkUsageError(f"the prompt has an unbalanced brace ({exc}); write {{{{ or }}}} for "
                              "literal braces") from None
    missing = list(dict.fromkeys(n for n in names if n not in namespace))
    if missing:
        shown = ", ".join("{" + n + "}" for n in missing)
        which = ", ".join(repr(n) for n in missing)
        plural = "s" if len(missing) > 1 else ""
        raise SharkUsageError(
            f"unknown name{plural} in the prompt: {shown} — no notebook variable{plural} {which}; "
            f"define {'them' if plural else 'it'} first, or write {{{{ and }}}} for literal braces")
    try:
        return _NamespaceFormatter(namespace).vformat(text, (), {})
    except SharkUsageError:
        raise
    except (AttributeError, LookupError, ValueError, TypeError) as exc:
        raise SharkUsageError(f"could not expand the prompt: {type(exc).__name__}: {exc}") from None


# --- budget ----------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_USD_RES = [re.compile(p) for p in (rf"^\$\s*{_NUM}$", rf"^{_NUM}\s*\$$", rf"^{_NUM}\s*(?:usd|dollars?)$",
                                     rf"^usd\s*{_NUM}$")]
_CREDIT_RE = re.compile(rf"^{_NUM}\s*(?:credits?|cr)?$")


_THOUSANDS_CREDITS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*(?:credits?|cr)?$")
_OTHER_CURRENCY = re.compile(r"[€£¥₹]|\b(?:eur|euros?|gbp|jpy|chf|cad|aud|inr)\b")


def parse_budget(text: str) -> tuple[str, float | None]:
    """``"$2.50"`` / ``"2.50$"`` / ``"2.5 usd"`` → ("usd", 2.5); ``"25000"`` / ``"25,000 credits"``
    → ("credits", 25000.0); ``"off"`` / ``"none"`` → ("off", None). SharkUsageError otherwise.

    A comma is read only as a thousands separator of credits in full groups of three
    (``25,000``); anywhere else it is refused, never guessed: ``$2,50`` (a decimal comma) or
    ``$1,000`` could mean $2.50 or $250, $1 or $1000."""
    shown = text.strip()
    t = shown.lower().replace("_", "")
    if t in ("off", "none", "no", "unset", "remove"):
        return "off", None

    def refuse(why: str = "") -> SharkUsageError:
        return SharkUsageError(
            f"budget: {shown!r} is not an amount{why} — write %shark budget $2.50 (dollars), "
            "%shark budget 25000 (credits) or %shark budget off; for a prompt starting with "
            "'budget' write %shark -- budget ...")

    if "," in t:
        if not _THOUSANDS_CREDITS.match(t):
            raise refuse(" (a comma is ambiguous: use a point for cents, $2.50, and no comma for "
                         "thousands, $1000 or 25_000)")
        t = t.replace(",", "")
    if _OTHER_CURRENCY.search(t):
        raise refuse(" (only US dollars or credits)")
    if t.lstrip("$ ").startswith("-"):
        raise refuse(" (a budget cannot be negative)")
    for rx in _USD_RES:
        m = rx.match(t)
        if m:
            return "usd", float(m.group(1))
    m = _CREDIT_RE.match(t)
    if m:
        return "credits", float(m.group(1))
    raise refuse()


# --- line tokenizing -------------------------------------------------------------------------

_TOKEN = re.compile(r"""(?:"[^"]*"|'[^']*'|\S)+""")
_IDENT = re.compile(r"([A-Za-z_]\w*)(?:\[(-?\d+)\])?")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")  # two letters or more: not a drive letter


def _unquote(token: str) -> str:
    import shlex

    try:
        parts = shlex.split(token)
    except ValueError:
        return token
    return parts[0] if len(parts) == 1 else token


def _n_option(text: str) -> int:
    """``-n``: a whole number (the range is checked with the other fields, by params)."""
    import argparse

    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid int value {text!r}: expected a whole number from {params.N_MIN} to {params.N_MAX}") from None


def _looks_like_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


# --- the magic -------------------------------------------------------------------------------

def _trait_check(name: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValidationError as exc:
        raise TraitError(f"SharkMagic.{name}: {exc.message}") from None


_HELP_EPILOG = """
Subcommands (first word of the one-line form):
  %shark ledger                 the session ledger (every call, its credit; the session total)
  %shark budget [AMOUNT|off]    show or set the session budget: $2.50, 2.50$ or 2.50 usd are
                                dollars; 25000 or 25000 credits is credits (1 USD = 10,000 credit)
  %shark studio                 the studio widget (also: %shark widget)
  %shark config                 the effective settings; the API key only as set/unset
  %shark --help                 this help

Prompts:
  %%shark [options]             the cell body is the prompt (always a prompt, even "ledger ...")
  %shark [options] PROMPT       options first; the rest of the line is the prompt, verbatim
  %shark -- ledger of a ship    `--` ends the options: for a prompt starting with a subcommand
                                word or with '-'
  {name} inserts a notebook variable ({obj.attr}, {items[0]} and {x:.2f} work);
  {{ and }} are literal braces; an unknown name is an error.

--image / --mask take a file path or the name of a notebook variable holding a PIL image,
bytes, a GenerationResult (its first image; name[i] picks another) or a GeneratedImage.

Every image is saved at full resolution (with its prompt and parameters as metadata) under the
save folder (default shark-images/ beside the notebook); the notebook shows previews.
The result is `_shark` (and NAME with -o NAME).

Defaults: %config Shark.size = "1536x1024" (or SharkMagic.size); %config SharkMagic lists them.
"""


@magics_class
class SharkMagic(Magics, Configurable):
    """``%shark`` / ``%%shark``. Settings are the defaults of every call; change them with
    ``%config Shark.<name> = value`` (or ``SharkMagic.<name>``)."""

    size = Unicode("auto", help="Default --size: " + ", ".join(params.SIZES) + ".").tag(config=True)
    quality = Unicode("auto", help="Default --quality: " + ", ".join(params.QUALITIES) + ".").tag(config=True)
    background = Unicode("auto", help="Default --background: " + ", ".join(params.BACKGROUNDS) + ".").tag(config=True)
    output_format = Unicode("png", help="Default --format (the files' format): "
                            + ", ".join(params.OUTPUT_FORMATS) + ".").tag(config=True)
    n = Int(1, help=f"Default -n: images per call, {params.N_MIN}..{params.N_MAX}.").tag(config=True)
    model = Unicode(params.MODEL, help="Default --model.").tag(config=True)
    wait = Unicode("sync", help="Default --wait: 'sync' (one long request) or 'task' (async task, polled; "
                   "an interrupt cancels it at the gateway).").tag(config=True)
    save_dir = Unicode("shark-images", help="Folder for the full-resolution files, relative to the "
                       "kernel's working directory (the notebook's folder).").tag(config=True)
    preview_max_side = Int(1024, help="Inline previews are at most this many pixels on their long "
                           "side (64..4096).").tag(config=True)
    preview_format = Unicode("webp", help="Inline preview encoding: 'webp' (smallest; rendered by "
                             "JupyterLab, Notebook 7 and VS Code) or 'jpeg'.").tag(config=True)
    preview_quality = Int(80, help="Encoder quality of the previews (1..100).").tag(config=True)
    full = Bool(False, help="Embed full-resolution images in the notebook instead of previews "
                "(the notebook file grows by the images' size).").tag(config=True)

    @classmethod
    def section_names(cls) -> list[str]:
        # "Shark" first: a config section is applied in this order, so SharkMagic.* wins.
        return [CONFIG_ALIAS, *super().section_names()]

    # -- trait validation (the tables of params.py) ------------------------------------------
    @validate("size")
    def _v_size(self, proposal: Any) -> str:
        return _trait_check("size", params._one_of, "size", proposal.value, params.SIZES)

    @validate("quality")
    def _v_quality(self, proposal: Any) -> str:
        return _trait_check("quality", params._one_of, "quality", proposal.value, params.QUALITIES)

    @validate("background")
    def _v_background(self, proposal: Any) -> str:
        return _trait_check("background", params._one_of, "background", proposal.value, params.BACKGROUNDS)

    @validate("output_format")
    def _v_output_format(self, proposal: Any) -> str:
        return _trait_check("output_format", params._one_of, "output_format", proposal.value, params.OUTPUT_FORMATS)

    @validate("n")
    def _v_n(self, proposal: Any) -> int:
        return _trait_check("n", params._int_in, "n", proposal.value, params.N_MIN, params.N_MAX)

    @validate("model")
    def _v_model(self, proposal: Any) -> str:
        return _trait_check("model", params.validate_model, proposal.value)

    @validate("wait")
    def _v_wait(self, proposal: Any) -> str:
        return _trait_check("wait", params._one_of, "wait", proposal.value, params.WAIT_MODES)

    @validate("save_dir")
    def _v_save_dir(self, proposal: Any) -> str:
        value = proposal.value
        if not value.strip() or "\x00" in value:
            raise TraitError("SharkMagic.save_dir: expected a folder path, e.g. 'shark-images'")
        return value

    @validate("preview_max_side")
    def _v_preview_max_side(self, proposal: Any) -> int:
        return _trait_check("preview_max_side", params._int_in, "preview_max_side", proposal.value, 64, 4096)

    @validate("preview_format")
    def _v_preview_format(self, proposal: Any) -> str:
        return _trait_check("preview_format", params._one_of, "preview_format",
                            {"jpg": "jpeg"}.get(str(proposal.value).lower(), proposal.value), PREVIEW_FORMATS)

    @validate("preview_quality")
    def _v_preview_quality(self, proposal: Any) -> int:
        return _trait_check("preview_quality", params._int_in, "preview_quality", proposal.value, 1, 100)

    def update_config(self, config: Any) -> None:
        """Like Configurable's, but a rejected value is forgotten: otherwise it would stay in the
        merged config and make every later ``%config`` of this class fail too."""
        before = deepcopy(self.config)
        try:
            super().update_config(config)
        except TraitError:
            self.config = before
            raise

    # -- the magic ---------------------------------------------------------------------------
    @magic_arguments()
    @argument("-n", type=_n_option, default=None, metavar="N", help="images to generate, 1..4")
    @argument("--size", default=None, help="1024x1024, 1536x1024, 1024x1536, 2048x2048 or auto")
    @argument("--quality", default=None, help="low, medium, high or auto")
    @argument("--background", default=None, help="opaque or auto")
    @argument("--format", dest="output_format", default=None, metavar="FORMAT",
              help="format of the files: png, jpeg or webp")
    @argument("--model", default=None, help="model id (default openai/gpt-image-2)")
    @argument("--image", action="append", default=None, metavar="PATH_OR_VAR",
              help="reference image to edit (repeatable): a file path or a notebook variable")
    @argument("--mask", default=None, metavar="PATH_OR_VAR",
              help="mask for the first --image: a PNG with alpha (transparent = repaint)")
    @argument("--wait", default=None, metavar="sync|task", help="sync: one request; task: async task, polled")
    @argument("-o", "--out", default=None, metavar="NAME", help="also assign the result to this variable")
    @argument("--save", default=None, metavar="DIR", help="folder for the full-resolution files")
    @argument("--dry-run", action="store_true", help="show the request and its estimated cost; send nothing")
    @argument("--full", action="store_true", default=None, help="embed full-resolution images, not previews")
    @no_var_expand  # we expand {name} ourselves (IPython would leave unknown names silently)
    @line_cell_magic
    def shark(self, line: str, cell: str | None = None) -> None:
        """Generate images with the Shark API (model openai/gpt-image-2)."""
        try:
            self._run(line, cell)
        except SharkUsageError:
            raise
        except UsageError as exc:  # argparse and friends: make it a one-line *failing* error
            raise SharkUsageError(str(exc)) from None
        except SharkError as exc:
            raise SharkUsageError(str(exc)) from None
        return None

    # -- dispatch ----------------------------------------------------------------------------
    @property
    def _parser(self) -> Any:
        return self.shark.parser

    def help_text(self) -> str:
        text = self._parser.format_help().rstrip()
        if text.startswith("::"):  # magic_arguments formats the usage as an RST block
            text = "usage: " + text[2:].lstrip("\n ")
        text = text.replace("options:\n", "options:\n  -h, --help            show this help\n", 1)
        return text + "\n" + _HELP_EPILOG

    def _run(self, line: str, cell: str | None) -> None:
        if cell is None:
            first = line.strip().split(None, 1)
            if first and first[0] in SUBCOMMANDS:
                rest = first[1].strip() if len(first) > 1 else ""
                return self._subcommand(first[0], rest)
        tokens, prompt, wants_help = self._split(line)
        if wants_help:
            print(self.help_text())
            return None
        args = self._parser.parse_args(tokens)
        if cell is not None:
            if prompt:
                raise SharkUsageError(
                    f"%%shark takes only options on its first line; put the prompt in the cell "
                    f"body (found {prompt[:40]!r} on the line)")
            prompt = cell.strip()
            if not prompt:
                raise SharkUsageError("the cell is empty: write the prompt below the %%shark line")
        elif not prompt:
            raise SharkUsageError("no prompt: write %shark [options] PROMPT, or %%shark with the "
                                  "prompt in the cell body (%shark --help)")
        return self._generate(args, expand_prompt(prompt, self.shell.user_ns))

    def _split(self, line: str) -> tuple[list[str], str, bool]:
        """Options up to the first word that is not one (or ``--``); the rest of the line is the
        prompt, verbatim. Returns (option tokens for argparse, prompt, --help seen)."""
        actions = self._parser._option_string_actions
        longs = [o for o in actions if o.startswith("--")]
        tokens: list[str] = []
        wants_help = False
        pending: str | None = None
        for m in _TOKEN.finditer(line):
            tok = m.group(0)
            if pending is not None:
                tokens.append(_unquote(tok))
                pending = None
                continue
            if tok == "--":
                return tokens, line[m.end():].strip(), wants_help
            if tok in ("-h", "--help"):
                wants_help = True
                continue
            if not tok.startswith("-") or tok == "-" or _looks_like_number(tok):
                return tokens, line[m.start():].strip(), wants_help
            name, eq, value = tok.partition("=")
            if name.startswith("--") and name not in actions:
                hits = [o for o in longs if o.startswith(name)]
                if len(hits) == 1:
                    name = hits[0]
            if name in actions:
                takes_value = actions[name].nargs != 0
                if eq:
                    if not takes_value:
                        raise SharkUsageError(f"option {name} takes no value")
                    tokens += [name, _unquote(value)]
                else:
                    tokens.append(name)
                    if takes_value:
                        pending = name
                continue
            if not name.startswith("--") and name[:2] in actions and actions[name[:2]].nargs != 0:
                tokens += [name[:2], _unquote(tok[2:])]  # -n2, -ofox
                continue
            raise SharkUsageError(f"unknown option {name!r} (see %shark --help); put -- before a "
                                  "prompt that starts with '-'")
        if pending is not None:
            raise SharkUsageError(f"option {pending} needs a value (see %shark --help)")
        return tokens, "", wants_help

    def _subcommand(self, name: str, rest: str) -> None:
        if name == "help":
            if rest:
                raise SharkUsageError(self._takes_nothing(name, rest))
            print(self.help_text())
            return
        if name == "budget":
            return self._budget(rest)
        if rest:
            raise SharkUsageError(self._takes_nothing(name, rest))
        if name == "ledger":
            from IPython.display import display

            display(get_client().ledger)
        elif name in ("studio", "widget"):
            self._studio()
        elif name == "config":
            print(self.config_text())

    @staticmethod
    def _takes_nothing(name: str, rest: str) -> str:
        return (f"%shark {name} takes no arguments (got {rest[:40]!r}); for a prompt that starts "
                f"with {name!r} write %shark -- {name} {rest[:20]}…")

    # -- subcommands -------------------------------------------------------------------------
    def _budget(self, rest: str) -> None:
        ledger = get_client().ledger
        kind, amount = "show", None
        if rest:
            kind, amount = parse_budget(rest)
            if kind == "off":
                ledger.budget = None
            elif kind == "usd":
                ledger.set_budget_usd(amount)
            else:
                ledger.budget = amount
        print(self.budget_text(ledger, hint=kind == "credits" and amount is not None and amount < 100))

    @staticmethod
    def budget_text(ledger: Any, *, hint: bool = False) -> str:
        budget = ledger.budget
        if budget is None:
            return ("No session budget. Set one with %shark budget $2.50 (dollars) or "
                    "%shark budget 25000 (credits).\nSession: " + ledger.summary())
        remaining = ledger.remaining
        left = (f"{fmt_credit(remaining)} left" if remaining >= 0
                else f"{fmt_credit(-remaining)} over")
        text = f"Session budget: {fmt_credit(budget)} — {left}. A call whose estimate exceeds what is left is refused."
        if hint:
            text += (f"\n(That is {budget:g} credit. For dollars write %shark budget ${budget:g}; "
                     f"1 USD = {pricing.CREDITS_PER_USD:,} credit.)")
        return text + "\nSession: " + ledger.summary()

    def _studio(self) -> None:
        from IPython.display import display

        try:
            from .widget import studio as factory
        except ImportError as exc:
            raise SharkUsageError(f"the studio is not available ({exc})") from None
        # the studio opens with the magic's defaults (%config Shark.size applies to both); it
        # keeps its own wait mode (task, so that Cancel reaches the gateway)
        defaults = dict(size=self.size, quality=self.quality, background=self.background,
                        output_format=self.output_format, n=self.n, model=self.model, save_folder=self.save_dir)
        try:
            widget = factory(client=get_client(), **defaults)
        except TypeError:  # a studio that takes fewer settings
            widget = factory(client=get_client())
        if widget is not None:
            display(widget)

    def config_text(self) -> str:
        """The effective settings. The key is only ever shown as set / unset."""
        env_key = bool(os.environ.get("SHARK_API_KEY"))
        session_key = config._session_key is not None
        offline_flag = config._env_flag("SHARK_OFFLINE")
        client = get_client()
        if client.offline:
            why = ("SHARK_OFFLINE=1" if offline_flag else "no API key")
            service = f"offline simulator ({why}): synthetic images, nothing is charged"
        else:
            service = str(client.base_url)
        if env_key or session_key:
            source = "SHARK_API_KEY" if env_key else "shark_nb.set_key()"
            key = f"set (from {source})" + (" — not used while SHARK_OFFLINE=1" if offline_flag else "")
        else:
            key = "unset (set SHARK_API_KEY or call shark_nb.set_key())"
        save = Path(self.save_dir).expanduser()
        ledger = client.ledger
        if ledger.budget is None:
            budget = "none (%shark budget $2.50 sets one)"
        else:
            remaining = ledger.remaining
            budget = fmt_credit(ledger.budget) + ", " + (f"{fmt_credit(remaining)} left" if remaining >= 0
                                                          else f"{fmt_credit(-remaining)} over")
        rows = [
            ("service", service),
            ("API key", key),
            ("defaults", f"n={self.n} size={self.size} quality={self.quality} background={self.background} "
                         f"format={self.output_format} model={self.model} wait={self.wait}"),
            ("previews", f"{self.preview_format}, at most {self.preview_max_side} px, quality "
                         f"{self.preview_quality}" + (" — full resolution embedded (full=True)" if self.full else "")),
            ("save dir", f"{self.save_dir} ({save.resolve()})"),
            ("ledger", str(ledger.path)),
            ("session", ledger.summary()),
            ("budget", budget),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["shark_nb — %shark settings"] + [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines.append('Change a default: %config Shark.size = "1536x1024" (or SharkMagic.size); '
                     "list them: %config SharkMagic")
        return "\n".join(lines)

    # -- generation --------------------------------------------------------------------------
    def _resolve_input(self, value: str, option: str) -> Any:
        """A --image / --mask value: a notebook variable's object, or a path / URL as given."""
        ns = self.shell.user_ns
        m = _IDENT.fullmatch(value)
        if m and m.group(1) in ns:
            obj, index = ns[m.group(1)], m.group(2)
            images = getattr(obj, "images", None)
            if isinstance(images, list):  # a GenerationResult
                if not images:
                    raise SharkUsageError(f"{option} {value}: that result has no images")
                i = int(index) if index is not None else 0
                try:
                    return images[i]
                except IndexError:
                    raise SharkUsageError(f"{option} {value}: the result has {len(images)} image(s)") from None
            if index is not None:
                if isinstance(obj, (list, tuple)):
                    try:
                        return obj[int(index)]
                    except IndexError:
                        raise SharkUsageError(f"{option} {value}: index out of range") from None
                raise SharkUsageError(f"{option} {value}: {m.group(1)} is a {type(obj).__name__}, "
                                      "which cannot be indexed")
            return obj
        lower = value[:8].lower()
        if lower.startswith(("http://", "https:/", "data:")) or _URL_SCHEME.match(value):
            return value  # a URL: the client says what is wrong with it (e.g. file: is not supported)
        if Path(value).expanduser().exists():
            return value
        if m:
            raise SharkUsageError(f"{option} {value}: there is no notebook variable or file named {value!r}")
        raise SharkUsageError(f"{option} {value}: file not found (relative paths start in {Path.cwd()})")

    def _generate(self, args: Any, prompt: str) -> None:
        from IPython.display import display

        out = args.out
        if out is not None and (not out.isidentifier() or keyword.iskeyword(out)):
            raise SharkUsageError(f"-o {out}: not a valid Python variable name")
        if args.save is not None and (not args.save.strip() or "\x00" in args.save):
            raise SharkUsageError(f"--save {args.save!r}: expected a folder path, e.g. --save shark-images")
        images = [self._resolve_input(v, "--image") for v in (args.image or [])]
        mask = self._resolve_input(args.mask, "--mask") if args.mask is not None else None
        pick = lambda given, default: default if given is None else given  # noqa: E731
        settings = dict(
            n=pick(args.n, self.n), size=pick(args.size, self.size), quality=pick(args.quality, self.quality),
            background=pick(args.background, self.background),
            output_format=pick(args.output_format, self.output_format),
            model=pick(args.model, self.model), wait=pick(args.wait, self.wait),
        )
        client = get_client()
        request = client.build(prompt, image=images or None, mask=mask, **settings)
        if args.dry_run:
            print(self.dry_run_text(client, request))
            return None
        save_dir = args.save if args.save is not None else self.save_dir
        full = self.full if args.full is None else args.full
        status = None
        if getattr(self.shell, "kernel", None) is not None:  # a notebook front end: say we're busy
            n = request.n
            status = display(_note(f'generating {n} image{"s" if n != 1 else ""}… (interrupt the kernel '
                                   'to cancel)'), raw=True, display_id=True)
        try:
            try:
                result = client.send(request)
            except KeyboardInterrupt:
                if request.is_task:
                    why = "the task was asked to cancel at the gateway"
                else:
                    why = ("the request was abandoned; if it reached the gateway it may still be charged "
                           "(a sync request cannot be cancelled)")
                raise SharkUsageError(f"interrupted: {why}; every call is in %shark ledger") from None
            notes = []
            try:
                paths: list[Any] = result.save(save_dir)
            except (OSError, SharkError, ValueError) as exc:
                paths = [None] * len(result.images)
                notes.append(f"could not save the images to {save_dir!r}: {exc} — they are in _shark; "
                             "save them with _shark.save('another/folder')")
            ns = self.shell.user_ns
            ns["_shark"] = result
            if out is not None:
                ns[out] = result
            gallery = Gallery(result, paths=paths, ledger=client.ledger, max_side=self.preview_max_side,
                              preview_format=self.preview_format, quality=self.preview_quality, full=full,
                              notes=notes)
        except BaseException:
            if status is not None:  # never an empty output: say what became of the busy line
                status.update(_note("no images: the call did not complete (the error follows)"), raw=True)
            raise
        if status is not None:
            status.update(gallery)
        else:
            display(gallery)
        if notes:
            raise SharkUsageError(notes[0])
        return None

    @staticmethod
    def dry_run_text(client: Any, request: Any) -> str:
        body = json.dumps(request.describe(), indent=2, ensure_ascii=False)
        estimate = request.estimate_credit()
        target = "the offline simulator" if client.offline else f"{client.base_url}/images/generations"
        lines = [f"Dry run — nothing was sent. POST to {target} with this body (image data elided):",
                 body,
                 f"Estimated cost: {fmt_credit(estimate)} — an estimate; the ledger records what the gateway reports."]
        remaining = client.ledger.remaining
        if remaining is not None:
            verdict = "within" if estimate <= remaining + 1e-9 else "OVER"
            lines.append(f"Budget: {fmt_credit(remaining)} left — this call is {verdict} budget.")
        return "\n".join(lines)


def _note(text: str) -> dict[str, str]:
    """A grey one-line status, as a raw bundle with a real text/plain (not an object's repr)."""
    import html

    return {"text/plain": text, "text/html": f'<span style="color:#666;font-size:12px">{html.escape(text)}</span>'}


# --- extension entry points ------------------------------------------------------------------

_EMPTY_CELL_MAGIC = re.compile(r"^%%shark(?:[ \t]+(.*?))?[ \t]*\r?\n?$")


def _empty_cell_body(lines: list[str]) -> list[str]:
    """Input cleanup: ``%%shark`` with an empty body is refused by IPython itself, as a plain
    UsageError the cell does not fail on ("Did you mean the line magic"). Hand it to the magic,
    which says so in one red line and fails the cell (``%%shark --help`` still shows the help)."""
    if not lines or any(line.strip() for line in lines[1:]):
        return lines
    m = _EMPTY_CELL_MAGIC.match(lines[0])
    if m is None:
        return lines
    return [f"get_ipython().find_cell_magic('shark')({(m.group(1) or '')!r}, '')\n"]



_QUESTION_LINE = re.compile(r"^([ \t]*)%shark[ \t]+(.*\?)[ \t]*\r?\n?$")


def _keep_question_marks(lines: list[str]) -> list[str]:
    """Input cleanup: IPython reads a line ending in ``?`` as a help request (``%shark what is
    this?`` would show help for ``this``). Turn such a ``%shark`` line into the explicit call, so
    a one-line prompt may end in a question mark. ``%shark?`` alone still shows the help."""
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        m = _QUESTION_LINE.match(line)
        if m and not m.group(2).lstrip().startswith("?"):
            out.append(f"{m.group(1)}get_ipython().run_line_magic('shark', {m.group(2)!r})\n")
        else:
            out.append(line)
    return out


_loaded: dict[int, SharkMagic] = {}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext shark_nb``: register ``%shark`` / ``%%shark`` on this shell."""
    old = _loaded.pop(id(ipython), None)
    if old is not None and old in getattr(ipython, "configurables", []):
        ipython.configurables.remove(old)
    magic = SharkMagic(shell=ipython)
    ipython.register_magics(magic)
    _loaded[id(ipython)] = magic
    cleanup = getattr(ipython, "input_transformers_cleanup", None)
    for transform in (_keep_question_marks, _empty_cell_body):
        if cleanup is not None and transform not in cleanup:
            cleanup.append(transform)


def unload_ipython_extension(ipython: Any) -> None:
    cleanup = getattr(ipython, "input_transformers_cleanup", None)
    for transform in (_keep_question_marks, _empty_cell_body):
        if cleanup is not None and transform in cleanup:
            cleanup.remove(transform)
    magic = _loaded.pop(id(ipython), None)
    if magic is None:
        return
    if magic in getattr(ipython, "configurables", []):
        ipython.configurables.remove(magic)
    registry = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        if registry[kind].get("shark") is not None and getattr(registry[kind]["shark"], "__self__", None) is magic:
            del registry[kind]["shark"]
    ipython.magics_manager.registry.pop(type(magic).__name__, None)
