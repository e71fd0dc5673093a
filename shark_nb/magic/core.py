""":class:`SharkMagic`: the settings (traitlets), the line's dispatch and one generation.

The options come from the model schemas (:mod:`.options`); the subcommands (ledger, budget,
studio, config, compare) are in :mod:`.subcommands`. See the package docstring for the grammar
and the decisions.
"""

from __future__ import annotations

import keyword
import logging
import re
import threading
from concurrent.futures import Future, wait
from copy import deepcopy
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Dict, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

from .. import params, session, text
from ..display import PREVIEW_FORMATS, Gallery
from ..errors import SharkError, ValidationError
from ..results import DEFAULT_FOLDER
from ..schemas import DEFAULT_MODEL, ModelSpec, model_spec
from . import options, subcommands
from .usage import SharkUsageError, expand_prompt

__all__ = ["SharkMagic", "CONFIG_ALIAS", "SUBCOMMANDS"]

#: The extra config section name: ``%config Shark.size = "1536x1024"``.
CONFIG_ALIAS = "Shark"
SUBCOMMANDS = ("ledger", "budget", "studio", "widget", "config", "help", "compare", "history")
#: gpt-image-2's settings that are traits of their own (the magic had them before the other models).
GPT_TRAITS = ("n", "size", "quality", "background", "output_format")

_IDENT = re.compile(r"([A-Za-z_]\w*)(?:\[(-?\d+)\])?")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")  # two letters or more: not a drive letter
_GPT = model_spec(DEFAULT_MODEL)
log = logging.getLogger(__name__)


def _trait_check(name: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValidationError as exc:
        raise TraitError(f"SharkMagic.{name}: {exc.message}") from None


def _gpt_help(name: str) -> str:
    f = _GPT.field(name)
    return f"gpt-image-2's default {f.option} ({f.values_text()}); other models: Shark.defaults."


_HELP_EPILOG = """
Subcommands (first word of the one-line form):
  %shark ledger                 the session ledger (every call, its credit; the session total)
  %shark budget [AMOUNT|off]    show or set the session budget: $2.50, 2.50$ or 2.50 usd are
                                dollars; 25000 or 25000 credits is credits (1 USD = 10,000 credit)
  %shark studio                 the studio widget (also: %shark widget)
  %shark config                 the effective settings; the API key only as set/unset
  %shark history [WORDS]        every past call (all sessions), newest first, with its pictures;
                                WORDS: only prompts holding them; Restore opens a studio with it
  %shark compare --models gpt-image-2,gemini,seedream [options] PROMPT
  %shark compare --model gpt-image-2 --vary quality=low,medium,high [options] PROMPT
                                one prompt, a grid of cells; the estimate is shown before
                                sending, the budget judges the whole grid (%%shark compare too)
  %shark --help                 this help; %shark --model NAME --help: one model's options

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

Defaults: %config Shark.size = "1536x1024" (gpt-image-2's size, quality, background,
output_format, n); any model: %config Shark.defaults = {"gemini": {"aspect_ratio": "16:9"}};
%config SharkMagic lists them.
"""


@magics_class
class SharkMagic(Magics, Configurable):
    """``%shark`` / ``%%shark``. Settings are the defaults of every call; change them with
    ``%config Shark.<name> = value`` (or ``SharkMagic.<name>``)."""

    size = Unicode("auto", help=_gpt_help("size")).tag(config=True)
    quality = Unicode("auto", help=_gpt_help("quality")).tag(config=True)
    background = Unicode("auto", help=_gpt_help("background")).tag(config=True)
    output_format = Unicode("png", help=_gpt_help("output_format")).tag(config=True)
    n = Int(1, help=_gpt_help("n")).tag(config=True)
    defaults = Dict(help='Defaults per model, any model name or alias as key: {"gemini": {"aspect_ratio": '
                    '"16:9"}, "mj": {"stylize": 250}}. Validated by each model\'s schema when set; '
                    "the options on the line win.").tag(config=True)
    model = Unicode(DEFAULT_MODEL, help="Default --model (an id or alias: gpt-image-2, gemini, seedream, "
                    "midjourney, grok-edit).").tag(config=True)
    wait = Unicode("sync", help="Default --wait: 'sync' (one long request) or 'task' (async task, polled; "
                   "an interrupt cancels it at the gateway).").tag(config=True)
    save_dir = Unicode(DEFAULT_FOLDER, help="Folder for the full-resolution files, relative to the "
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

    # -- trait validation (the schemas) -------------------------------------------------------
    @validate(*GPT_TRAITS)
    def _v_gpt_setting(self, proposal: Any) -> Any:
        name = proposal.trait.name
        return _trait_check(name, lambda v: _GPT.field(name).validate(v, model=_GPT.id, owner=_GPT.name),
                            proposal.value)

    @validate("defaults")
    def _v_defaults(self, proposal: Any) -> dict:
        out: dict[str, dict] = {}
        for key, fields in proposal.value.items():
            spec = _trait_check("defaults", model_spec, key)
            if not isinstance(fields, dict):
                raise TraitError(f"SharkMagic.defaults[{key!r}]: expected a dict of {spec.name}'s fields, "
                                 f"e.g. {{{spec.settings[0].name!r}: ...}}" if spec.settings else
                                 f"SharkMagic.defaults[{key!r}]: {spec.name} has no settings")
            if spec.id in out:
                raise TraitError(f"SharkMagic.defaults: {key!r} and another key both name {spec.id}")
            try:
                out[spec.id] = spec.validate(fields)
            except ValidationError as exc:
                raise TraitError(f"SharkMagic.defaults[{key!r}]: {exc.message}") from None
        return out

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

    def model_defaults(self, spec: ModelSpec) -> dict[str, Any]:
        """This model's defaults from the settings: gpt-image-2's own traits (for gpt-image-2
        only), then ``defaults[model]``. The options on the line are laid over them."""
        out: dict[str, Any] = {}
        if spec.id == _GPT.id:
            out.update({name: getattr(self, name) for name in GPT_TRAITS})
        out.update(self.defaults.get(spec.id, {}))
        return out

    # -- the magic ---------------------------------------------------------------------------
    @magic_arguments()
    @argument("--model", default=None, metavar="NAME",
              help="the model: gpt-image-2, gemini, seedream, midjourney (mj), grok-edit (grok); "
                   "default gpt-image-2")
    @argument("--image", action="append", default=None, metavar="PATH_OR_VAR",
              help="reference image (repeatable): a file path or a notebook variable")
    @argument("--mask", default=None, metavar="PATH_OR_VAR",
              help="mask for the first --image: a PNG with alpha (transparent = repaint)")
    @argument("--wait", default=None, metavar="sync|task", help="sync: one request; task: async task, polled")
    @argument("-o", "--out", default=None, metavar="NAME", help="also assign the result to this variable")
    @argument("--save", default=None, metavar="DIR", help="folder for the full-resolution files")
    @argument("--dry-run", action="store_true", help="show the request and its estimated cost; send nothing")
    @argument("--full", action="store_true", default=None, help="embed full-resolution images, not previews")
    @argument("--models", default=None, metavar="A,B,C", help="%%shark compare: the models, one cell each")
    @argument("--vary", action="append", default=None, metavar="FIELD=V1,V2",
              help="%%shark compare: one cell per value of a field of --model (repeatable)")
    @options.schema_arguments
    @no_var_expand  # we expand {name} ourselves (IPython would leave unknown names silently)
    @line_cell_magic
    def shark(self, line: str, cell: str | None = None) -> None:
        """Generate images with the Shark API: gpt-image-2, Gemini, Seedream, Midjourney, Grok edit."""
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

    def help_text(self, model: str | None = None) -> str:
        """``%shark --help``; with a model, that model's options only."""
        if model is not None:
            return options.model_help(model_spec(model))
        text_ = self._parser.format_help().rstrip()
        if text_.startswith("::"):  # magic_arguments formats the usage as an RST block
            text_ = "usage: " + text_[2:].lstrip("\n ")
        text_ = text_.replace("options:\n", "common options:\n  -h, --help            show this help\n", 1)
        return text_ + "\n\n" + options.models_table() + "\n" + _HELP_EPILOG

    def parse_line(self, line: str) -> tuple[Any, str, bool]:
        """(argparse namespace, prompt, --help seen) for the options part of a line."""
        tokens, prompt, wants_help = options.split_line(line, self._parser)
        return self._parser.parse_args(tokens), prompt, wants_help

    def _run(self, line: str, cell: str | None) -> None:
        first = line.strip().split(None, 1)
        if first and first[0] == "compare":  # line and cell form (a cell's first line holds only options)
            return subcommands.compare(self, first[1] if len(first) > 1 else "", cell)
        if cell is None and first and first[0] in SUBCOMMANDS:
            rest = first[1].strip() if len(first) > 1 else ""
            return subcommands.run(self, first[0], rest)
        args, prompt, wants_help = self.parse_line(line)
        if wants_help:
            print(self.help_text(args.model))
            return None
        if args.models is not None or args.vary is not None:
            raise SharkUsageError("--models and --vary are options of %shark compare: write "
                                  "%shark compare --models gpt-image-2,gemini PROMPT")
        prompt = self.prompt_of(prompt, cell)
        return self._generate(args, expand_prompt(prompt, self.shell.user_ns))

    @staticmethod
    def prompt_of(prompt: str, cell: str | None, *, command: str = "%shark") -> str:
        """The prompt: the rest of the line, or the cell body (then the line holds only options)."""
        if cell is not None:
            if prompt:
                raise SharkUsageError(
                    f"%{command} takes only options on its first line; put the prompt in the cell "
                    f"body (found {prompt[:40]!r} on the line)")
            prompt = cell.strip()
            if not prompt:
                raise SharkUsageError("the cell is empty: write the prompt below the %%shark line")
        elif not prompt:
            raise SharkUsageError(f"no prompt: write {command} [options] PROMPT, or %{command} with the "
                                  "prompt in the cell body (%shark --help)")
        return prompt

    # -- generation --------------------------------------------------------------------------
    def request_kwargs(self, args: Any, spec: ModelSpec, given: dict, *, cell: str = "") -> dict[str, Any]:
        """The build_request arguments of one call (or one compare cell) on ``spec``: that model's
        defaults, the options given (read by its fields), its inputs and the wait mode."""
        fields = {**self.model_defaults(spec), **options.fields_for(spec, given, cell=cell)}
        self.check_inputs(spec, bool(args.image), args.mask, cell=cell)
        images = [self.resolve_input(v, "--image") for v in (args.image or [])]
        mask = self.resolve_input(args.mask, "--mask") if args.mask is not None else None
        return dict(model=spec.id, image=images or None, mask=mask,
                    wait=args.wait if args.wait is not None else self.wait, **fields)

    @staticmethod
    def check_inputs(spec: ModelSpec, images: bool, mask: str | None, *, cell: str = "") -> None:
        """``--image`` / ``--mask`` for a model that takes none, no ``--image`` for one that
        requires it, a mask without an image: named as options (the schema words the counts)."""
        from ..schemas import models

        for given, option, has in ((images, "--image", spec.image_field is not None),
                                   (mask is not None, "--mask", spec.takes_mask)):
            if given and not has:
                takers = "/".join(s.name for s in models()
                                  if (s.image_field if option == "--image" else s.mask_field) is not None)
                raise SharkUsageError(cell + options.not_for_model(option, spec, owners=takers,
                                                                  field_name=option[2:]))
        if mask is not None and not images:
            raise SharkUsageError(f"{cell}--mask {mask}: a mask goes together with at least one reference "
                                  "image: add --image PATH_OR_VAR (the mask is for the first one)")
        if spec.requires_image and not images:
            raise SharkUsageError(f"{cell}{spec.name} edits an image: give it with --image PATH_OR_VAR "
                                  f"(%shark --model {spec.name} --help)")

    def resolve_input(self, value: str, option: str) -> Any:
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
                    raise SharkUsageError(f"{option} {value}: the result has "
                                          f"{text.count(len(images), 'image')}") from None
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

    def check_out_and_save(self, args: Any) -> None:
        out = args.out
        if out is not None and (not out.isidentifier() or keyword.iskeyword(out)):
            raise SharkUsageError(f"-o {out}: not a valid Python variable name")
        if args.save is not None and (not args.save.strip() or "\x00" in args.save):
            raise SharkUsageError(f"--save {args.save!r}: expected a folder path, e.g. --save shark-images")

    def _generate(self, args: Any, prompt: str) -> None:
        from IPython.display import display

        self.check_out_and_save(args)
        spec = options.resolve_model(args.model, self.model)
        client = session.get_client()
        request = client.build(prompt, **self.request_kwargs(args, spec, options.given_options(args)))
        if args.dry_run:
            print(self.dry_run_text(client, request))
            return None
        save_dir = args.save if args.save is not None else self.save_dir
        full = self.full if args.full is None else args.full
        look = dict(max_side=self.preview_max_side, preview_format=self.preview_format,
                    quality=self.preview_quality, full=full)
        status = None
        if getattr(self.shell, "kernel", None) is not None:  # a notebook front end: say we're busy
            status = display(_note(f"generating {text.count(request.n, 'image')} with {spec.name}… "
                                   "(interrupt the kernel to cancel)"), raw=True, display_id=True)
        live = LivePreviews(status, **look)
        try:
            try:
                result = client.send(request, on_image=live.on_image)
            except KeyboardInterrupt:
                raise SharkUsageError(interrupted(request.is_task)) from None
            notes = []
            paths = save_images(result, save_dir, notes)  # while the last previews are being made
            self.assign(args.out, result)
            live.finish()
            gallery = Gallery(result, paths=paths, ledger=client.ledger, notes=notes, **look)
        except BaseException:
            live.close()
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

    def assign(self, out: str | None, value: Any) -> None:
        ns = self.shell.user_ns
        ns["_shark"] = value
        if out is not None:
            ns[out] = value

    @staticmethod
    def dry_run_text(client: Any, request: Any) -> str:
        return subcommands.dry_run_text(client, [request])

    # -- kept for callers of the former single module ------------------------------------------
    @staticmethod
    def budget_text(ledger: Any, *, hint: bool = False) -> str:
        return subcommands.budget_text(ledger, hint=hint)

    def config_text(self) -> str:
        return subcommands.config_text(self)


class LivePreviews:
    """Each image's preview made as soon as it arrives (the client's ``on_image`` hook), in
    :func:`shark_nb.images.preview_pool` — off the kernel's main thread, several at once. With a
    display handle, the gallery is updated in place (``display_id``) as each preview is ready:
    plain HTML every time, so a saved notebook renders anywhere. The final gallery replaces it,
    reading the previews from the images' cache."""

    def __init__(self, handle: Any, **look: Any) -> None:
        self.handle, self.look = handle, look
        self.lock = threading.Lock()
        self.arrived: list[Any] = []
        self.futures: list[Future] = []
        self.closed = False

    def on_image(self, image: Any) -> None:
        """On the client's event loop: only hands the pixel work to the pool."""
        from ..images import preview_pool

        self.futures.append(preview_pool().submit(self._preview, image))

    def _preview(self, image: Any) -> None:
        look = self.look
        if not look["full"]:
            try:
                image.preview(max_side=look["max_side"], format=look["preview_format"], quality=look["quality"])
            except ValueError:
                pass  # the gallery says "no preview" for this one
        with self.lock:
            self.arrived.append(image)
            if self.handle is None or self.closed:
                return
            pending = image.result.images_billed - len(self.arrived)
            try:
                self.handle.update(Gallery(image.result, images=self.arrived, pending=pending, **look))
            except Exception as exc:  # noqa: BLE001 - a live update is a nicety; the final gallery follows
                log.warning("shark_nb: live gallery update failed: %s", exc)

    def finish(self) -> None:
        """Wait for every preview; no live update after this (the final gallery comes next)."""
        wait(self.futures)
        self.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True


def interrupted(is_task: bool) -> str:
    if is_task:
        why = "the task was asked to cancel at the gateway"
    else:
        why = ("the request was abandoned; if it reached the gateway it may still be charged "
               "(a sync request cannot be cancelled)")
    return f"interrupted: {why}; every call is in %shark ledger"


def save_images(result: Any, save_dir: str, notes: list[str], *, label: str = "") -> list[Any]:
    """Save a result's images under ``save_dir``; a failure becomes a note (the images stay in
    ``_shark``), never a lost image."""
    try:
        return list(result.save(save_dir))
    except (OSError, SharkError, ValueError) as exc:
        notes.append(f"{label}could not save the images to {save_dir!r}: {exc} — they are in _shark; "
                     "save them with _shark.save('another/folder')")
        return [None] * len(result.images)


def _note(text_: str) -> dict[str, str]:
    """A grey one-line status, as a raw bundle with a real text/plain (not an object's repr)."""
    import html

    return {"text/plain": text_, "text/html": f'<span style="color:#666;font-size:12px">{html.escape(text_)}</span>'}


# ``%shark?`` shows the argparse help (magic_arguments wrote it into the docstring): add what each
# model takes, from the schemas.
SharkMagic.shark.__doc__ = (SharkMagic.shark.__doc__ or "") + "\n" + options.models_table() + "\n"
