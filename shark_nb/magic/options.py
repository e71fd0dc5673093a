"""The magic's options, derived from the model schemas (:mod:`shark_nb.schemas`).

Every setting of every model is one option (``Field.option``: ``--aspect-ratio``, ``--seed``,
``-n``, ``--format`` ...). A name several models share (``--size`` on gpt-image-2 and seedream,
``--quality`` on gpt-image-2 and midjourney, ``--seed``, ``--aspect-ratio``, ``-n``) is ONE
option whose meaning depends on ``--model``: its text is read by the chosen model's
``Field.parse`` and judged by that model's schema. ``--image`` / ``--mask`` are the inputs of the
models that have an image / mask field. Nothing here lists a model's fields by hand.

The line is split by :func:`split_line`: options up to the first word that is not one (or
``--``); the rest of the line is the prompt, verbatim. Options are never abbreviated (a prefix
that works today could change meaning when a model adds an option); a misspelt or abbreviated
option is refused with a did-you-mean.
"""

from __future__ import annotations

import argparse
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from IPython.core.magic_arguments import argument

from ..schemas import ModelSpec, model_spec, models
from .usage import SharkUsageError

__all__ = ["SchemaOption", "schema_options", "schema_arguments", "model_options", "given_options",
           "fields_for", "not_for_model", "unknown_option", "split_line", "models_table", "model_help"]

#: Options every call has (the parser's own, not a model's); a schema option may not take one.
COMMON_OPTIONS = ("--model", "--image", "--mask", "--wait", "-o", "--out", "--save", "--dry-run", "--full",
                  "--models", "--vary", "-h", "--help")


@dataclass(frozen=True, eq=False)  # one instance per option (cached): compared by identity
class SchemaOption:
    """One option of the magic and the models whose setting it is (same field name on each)."""

    option: str                       #: "--aspect-ratio"
    name: str                         #: the field name: "aspect_ratio"
    owners: tuple[ModelSpec, ...]     #: the models that take it, in menu order

    @property
    def dest(self) -> str:
        return "field_" + self.name

    @property
    def owner_names(self) -> str:
        return "/".join(s.name for s in self.owners)

    def values_text(self) -> str:
        """``gpt-image-2: 1..4; gemini: 1..4``."""
        return "; ".join(f"{s.name}: {s.field(self.name).values_text()}" for s in self.owners)


@lru_cache(maxsize=1)
def _options() -> tuple[SchemaOption, ...]:
    by_option: dict[str, tuple[str, list[ModelSpec]]] = {}
    for spec in models():
        for f in spec.settings:
            if f.option in COMMON_OPTIONS:
                raise TypeError(f"{spec.id}: field {f.name!r} takes the magic's own option {f.option}")
            name, owners = by_option.setdefault(f.option, (f.name, []))
            if name != f.name:
                raise TypeError(f"option {f.option} would mean {name!r} on {owners[0].id} and {f.name!r} on "
                                f"{spec.id}; give one of them another option")
            owners.append(spec)
    return tuple(SchemaOption(opt, name, tuple(owners)) for opt, (name, owners) in by_option.items())


def schema_options() -> tuple[SchemaOption, ...]:
    """Every model setting as an option, in the order the models list them."""
    return _options()


def schema_arguments(func: Callable) -> Callable:
    """Decorator (under ``@magic_arguments()``): one argparse argument per schema option. Their
    values stay text; help lists them per model (:func:`models_table`), not argparse."""
    for opt in reversed(schema_options()):
        func = argument(opt.option, dest=opt.dest, default=None, metavar=opt.name.upper(),
                        help=argparse.SUPPRESS)(func)
    return func


def input_option(spec: ModelSpec, field_name: str) -> str | None:
    """The option that sets this model's field (``--image`` / ``--mask`` for the inputs)."""
    f = next((f for f in spec.fields if f.name == field_name), None)
    if f is None:
        return None
    return {"image": "--image", "mask": "--mask"}.get(f.role, f.option)


def model_options(spec: ModelSpec) -> list[str]:
    """The options this model takes: its settings', then ``--image`` / ``--mask``."""
    opts = [f.option for f in spec.settings]
    if spec.image_field is not None:
        opts.append("--image")
    if spec.takes_mask:
        opts.append("--mask")
    return opts


def given_options(args: argparse.Namespace) -> dict[SchemaOption, str]:
    """The schema options present on the line, with their text."""
    return {o: getattr(args, o.dest) for o in schema_options() if getattr(args, o.dest, None) is not None}


def not_for_model(option: str, spec: ModelSpec, *, owners: str | None = None, field_name: str | None = None) -> str:
    """``--aspect-ratio is a gemini/midjourney option; gpt-image-2 takes --size (gpt-image-2's
    options: ...; %shark --model gpt-image-2 --help)``."""
    if owners is None:
        match = next((o for o in schema_options() if o.option == option), None)
        owners = match.owner_names if match else "different model's"
        field_name = match.name if match else field_name
    takes = []
    for name in spec.equivalents.get(field_name or "", ()):
        opt = input_option(spec, name)
        if opt and opt not in takes:
            takes.append(opt)
    hint = f"; {spec.name} takes {' and '.join(takes)}" if takes else ""
    return (f"{option} is a {owners} option, not {spec.name}'s{hint} "
            f"({spec.name}'s options: {', '.join(model_options(spec)) or 'none but the prompt'}; "
            f"%shark --model {spec.name} --help)")


def fields_for(spec: ModelSpec, given: dict[SchemaOption, str], *, cell: str = "") -> dict[str, Any]:
    """The typed fields of ``spec`` for the options given (``Field.parse``); an option the model
    lacks is a SharkUsageError naming the models that take it. Values are judged later, by the
    schema, when the request is built."""
    out: dict[str, Any] = {}
    for opt, text in given.items():
        if spec not in opt.owners:
            raise SharkUsageError(cell + not_for_model(opt.option, spec, owners=opt.owner_names, field_name=opt.name))
        out[opt.name] = spec.field(opt.name).parse(text)
    return out


# --- did-you-mean ---------------------------------------------------------------------------------

def _other_spellings(known: list[str]) -> dict[str, str]:
    """Spellings a user may type for an option: the field name (``--output-format`` ->
    ``--format``), with underscores, and the names other models use for the same job
    (``--style`` -> ``--stylize``)."""
    out: dict[str, str] = {}
    for o in schema_options():
        for spelled in ("--" + o.name, "--" + o.name.replace("_", "-")):
            if spelled != o.option:
                out[spelled] = o.option
    for spec in models():
        for other, targets in spec.equivalents.items():
            spelled = "--" + other.replace("_", "-")
            opt = input_option(spec, targets[0])
            if spelled not in known and opt:
                out.setdefault(spelled, opt)
    return {k: v for k, v in out.items() if k not in known}


def suggest_option(name: str, known: list[str]) -> str | None:
    spellings = _other_spellings(known)
    low = name.lower()
    for candidate in (low, low.replace("_", "-")):
        if candidate in known and candidate != name:
            return candidate
        if candidate in spellings:
            return spellings[candidate]
    longs = [o for o in known if o.startswith("--")]
    prefixed = [o for o in longs if o.startswith(low)] if low.startswith("--") and len(low) > 3 else []
    if len(prefixed) == 1:
        return prefixed[0]
    near = difflib.get_close_matches(low, longs + list(spellings), n=1, cutoff=0.75)
    if near:
        return spellings.get(near[0], near[0])
    return None


def unknown_option(name: str, known: list[str]) -> str:
    hint = suggest_option(name, known)
    mean = f" — did you mean {hint}?" if hint else ""
    return (f"unknown option {name!r}{mean} (%shark --help lists the options); put -- before a "
            "prompt that starts with '-'")


# --- the line -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""(?:"[^"]*"|'[^']*'|\S)+""")


def _unquote(token: str) -> str:
    import shlex

    try:
        parts = shlex.split(token)
    except ValueError:
        return token
    return parts[0] if len(parts) == 1 else token


def _looks_like_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def split_line(line: str, parser: argparse.ArgumentParser) -> tuple[list[str], str, bool]:
    """Options up to the first word that is not one (or ``--``); the rest of the line is the
    prompt, verbatim. Returns (option tokens for argparse, prompt, --help seen). An unknown
    option, a missing value or an option given twice (other than the repeatable ``--image`` /
    ``--vary``) is a SharkUsageError."""
    actions = parser._option_string_actions
    known = sorted(actions)
    tokens: list[str] = []
    seen: set[Any] = set()
    wants_help = False
    pending: str | None = None

    def take(name: str) -> None:
        action = actions[name]
        if action in seen and not isinstance(action, argparse._AppendAction):
            raise SharkUsageError(f"option {name} is given twice; give it once")
        seen.add(action)

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
        if name in actions:
            take(name)
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
            take(name[:2])
            tokens += [name[:2], _unquote(tok[2:])]  # -n2, -ofox
            continue
        raise SharkUsageError(unknown_option(name, known))
    if pending is not None:
        raise SharkUsageError(f"option {pending} needs a value (see %shark --help)")
    return tokens, "", wants_help


# --- help -----------------------------------------------------------------------------------------

def models_table() -> str:
    """What each model takes, one row per model (values: :func:`model_help`)."""
    specs = models()
    rows = [(s.name, s.id, ", ".join(model_options(s)) or "(the prompt only)") for s in specs]
    w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
    lines = ["model options — what each model takes (an option another model takes is an error naming it;",
             "values and defaults: %shark --model NAME --help):"]
    lines += [f"  {a.ljust(w0)}  {b.ljust(w1)}  {c}" for a, b, c in rows]
    lines.append("  names: " + "; ".join(f"{s.name} = {', '.join(n for n in s.names if n not in (s.name, s.id))}"
                                         for s in specs if len(s.names) > 2))
    required = [s.name for s in specs if s.requires_image]
    if required:
        lines.append(f"  {', '.join(required)} edit{'s' if len(required) == 1 else ''} an image: --image is required")
    return "\n".join(lines)


def model_help(spec: ModelSpec) -> str:
    """``%shark --model NAME --help``: that model's fields only, and the common options."""
    return "\n".join([
        f"%shark --model {spec.name} [options] PROMPT — the options {spec.name} takes:",
        "",
        spec.describe(),
        "",
        "Every call also takes: --wait sync|task, -o NAME, --save DIR, --dry-run, --full "
        "(%shark --help for everything).",
    ])


def resolve_model(name: str | None, default: str) -> ModelSpec:
    return model_spec(name if name is not None else default)
