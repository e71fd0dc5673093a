"""The magic's subcommands: ``ledger``, ``budget``, ``studio`` (``widget``), ``config``,
``help``, ``history`` and ``compare``; and the dry-run text. Each takes the :class:`~.core.SharkMagic`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import config, session, text
from ..errors import BudgetExceededError, ValidationError
from ..schemas import model_spec
from . import options
from .usage import SharkUsageError, expand_prompt, parse_budget

__all__ = ["run", "budget_text", "config_text", "compare", "dry_run_text"]


def run(magic: Any, name: str, rest: str) -> None:
    """A subcommand of the one-line form (not ``compare``, which has options of its own)."""
    if name == "help":
        if rest:
            raise SharkUsageError(_takes_nothing(name, rest))
        print(magic.help_text())
        return
    if name == "budget":
        return _budget(rest)
    if name == "history":
        return _history(rest)
    if rest:
        raise SharkUsageError(_takes_nothing(name, rest))
    if name == "ledger":
        from IPython.display import display

        display(session.get_client().ledger)
    elif name in ("studio", "widget"):
        _studio(magic)
    elif name == "config":
        print(config_text(magic))


def _takes_nothing(name: str, rest: str) -> str:
    return (f"%shark {name} takes no arguments (got {rest[:40]!r}); for a prompt that starts "
            f"with {name!r} write %shark -- {name} {rest[:20]}…")


# --- budget ---------------------------------------------------------------------------------------

def _budget(rest: str) -> None:
    ledger = session.get_client().ledger
    kind, amount = "show", None
    if rest:
        kind, amount = parse_budget(rest)
        if kind == "off":
            ledger.budget = None
        elif kind == "usd":
            ledger.set_budget_usd(amount)
        else:
            ledger.budget = amount
    print(budget_text(ledger, hint=kind == "credits" and amount is not None and amount < 100))


def _left(ledger: Any) -> str:
    remaining = ledger.remaining
    return f"{text.money(remaining)} left" if remaining >= 0 else f"{text.money(-remaining)} over"


def budget_text(ledger: Any, *, hint: bool = False) -> str:
    budget = ledger.budget
    if budget is None:
        return ("No session budget. Set one with %shark budget $2.50 (dollars) or "
                "%shark budget 25000 (credits).\nSession: " + ledger.summary())
    out = (f"Session budget: {text.money(budget)} — {_left(ledger)}. A call whose estimate exceeds "
           "what is left is refused.")
    if hint:
        out += (f"\n(That is {text.credit(budget)}. For dollars write %shark budget ${budget:g}; "
                f"1 USD = {text.credit(text.CREDITS_PER_USD)}.)")
    return out + "\nSession: " + ledger.summary()


# --- studio and config ----------------------------------------------------------------------------

def _studio(magic: Any) -> None:
    from IPython.display import display

    try:
        from ..widget import studio as factory
    except ImportError as exc:
        raise SharkUsageError(f"the studio is not available ({exc})") from None
    # the studio opens with the magic's model and its defaults (%config Shark.size applies to
    # both); it keeps its own wait mode (task, so that Cancel reaches the gateway)
    spec = model_spec(magic.model)
    defaults = dict(model=spec.id, **magic.model_defaults(spec), save_folder=magic.save_dir)
    try:
        widget = factory(client=session.get_client(), **defaults)
    except TypeError:  # a studio that takes fewer settings
        widget = factory(client=session.get_client())
    if widget is not None:
        display(widget)


def _history(words: str) -> None:
    """``%shark history [words]``: the history widget, searched for the words."""
    from IPython.display import display

    from ..archive import History

    display(History(words, client=session.get_client()))


def config_text(magic: Any) -> str:
    """The effective settings. The key is only ever shown as set / unset."""
    env_key = bool(os.environ.get("SHARK_API_KEY"))
    session_key = config._session_key is not None
    offline_flag = config._env_flag("SHARK_OFFLINE")
    client = session.get_client()
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
    save = Path(magic.save_dir).expanduser()
    ledger = client.ledger
    budget = ("none (%shark budget $2.50 sets one)" if ledger.budget is None
              else f"{text.money(ledger.budget)}, {_left(ledger)}")
    model = model_spec(magic.model)
    gpt = " ".join(f"{k}={getattr(magic, k)}" for k in ("n", "size", "quality", "background", "output_format"))
    rows = [
        ("service", service),
        ("API key", key),
        ("model", f"{model.name} ({model.id}), wait={magic.wait}"),
        ("defaults", f"gpt-image-2: {gpt}"),
    ]
    for model_id, fields in magic.defaults.items():
        shown = " ".join(f"{k}={v}" for k, v in fields.items()) or "(none)"
        rows.append(("", f"{model_spec(model_id).name}: {shown}"))
    rows += [
        ("previews", f"{magic.preview_format}, at most {magic.preview_max_side} px, quality "
                     f"{magic.preview_quality}" + (" — full resolution embedded (full=True)" if magic.full else "")),
        ("save dir", f"{magic.save_dir} ({save.resolve()})"),
        ("ledger", str(ledger.path)),
        ("session", ledger.summary()),
        ("budget", budget),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["shark_nb — %shark settings"] + [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines.append('Change a default: %config Shark.size = "1536x1024" (gpt-image-2), '
                 '%config Shark.defaults = {"gemini": {"aspect_ratio": "16:9"}} (any model); '
                 "list them: %config SharkMagic")
    return "\n".join(lines)


# --- dry run --------------------------------------------------------------------------------------

def dry_run_text(client: Any, requests: list[Any], labels: list[str] | None = None) -> str:
    """The exact body of each request (image data elided), its estimate with the basis, and the
    budget's verdict. Nothing is sent."""
    target = "the offline simulator" if client.offline else f"{client.base_url}/images/generations"
    lines = [f"Dry run — nothing was sent. POST to {target} with "
             + ("this body" if len(requests) == 1 else f"these {len(requests)} bodies") + " (image data elided):"]
    known, unknown = 0.0, 0
    for i, request in enumerate(requests):
        estimate = request.estimate()
        if labels:
            lines.append(f"[{labels[i]}]")
        lines.append(json.dumps(request.describe(), indent=2, ensure_ascii=False))
        if estimate.known:
            known += estimate.credit
            lines.append(f"Estimated cost: {estimate.text()} — an estimate; the ledger records what the "
                         "gateway reports.")
        else:
            unknown += 1
            lines.append(f"Estimated cost: unknown — {request.spec.name} publishes no price and none was "
                         "learned this session for these settings (never counted as 0).")
    remaining = client.ledger.remaining
    if remaining is not None:
        if unknown == len(requests):
            verdict = "the cost is unknown, so the budget cannot judge it in advance"
        else:
            verdict = "within" if known <= remaining + 1e-9 else "OVER"
            verdict = f"{'this call is' if len(requests) == 1 else 'the known cells are'} {verdict} budget"
            if unknown:
                verdict += f" ({text.count(unknown, 'cell')} of unknown cost not counted)"
        lines.append(f"Budget: {text.money(remaining)} left — {verdict}.")
    return "\n".join(lines)


# --- compare --------------------------------------------------------------------------------------

COMPARE_HELP = """usage: %shark compare --models A,B,C [options] PROMPT
       %shark compare --model M --vary FIELD=V1,V2[,...] [--vary FIELD2=...] [options] PROMPT
       %%shark compare ...            (the cell body is the prompt)

One prompt, one cell per model (--models) or per value of a field of one model (--vary; several
--vary: every combination), sent as one batch. The other options apply to every cell (each cell's
model must take them) on top of each model's defaults. The estimate of the whole grid and the
budget left are shown before anything is sent; a grid over the budget is refused; a bad cell is
refused naming the cell, before anything is sent. A failure stays in its cell.
-o NAME assigns the grid (also `_shark`); every image is saved under the save folder;
--dry-run shows each cell's body and the estimate."""


def _vary(items: list[str], spec: Any) -> dict[str, list[Any]]:
    """``["quality=low,medium"]`` -> ``{"quality": ["low", "medium"]}``: the field by its name or
    option, each value read by the model's field."""
    by_option = {f.option.lstrip("-"): f for f in spec.settings}
    out: dict[str, list[Any]] = {}
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip()
        if not eq or not name or not values.strip():
            raise SharkUsageError(f"--vary {item}: write --vary FIELD=V1,V2 (e.g. --vary quality=low,high)")
        f = next((f for f in spec.settings if f.name == name), None) or by_option.get(name.lstrip("-")) \
            or by_option.get(name.replace("_", "-"))
        if f is None:
            opt = next((o for o in options.schema_options() if o.name == name or o.option.lstrip("-") == name), None)
            if opt is not None:
                raise SharkUsageError(f"--vary {name}: " + options.not_for_model(
                    opt.option, spec, owners=opt.owner_names, field_name=opt.name))
            raise SharkUsageError(f"--vary {item}: {spec.name} has no field {name!r}; its fields: "
                                  + ", ".join(f.name for f in spec.settings))
        if f.name in out:
            raise SharkUsageError(f"--vary {f.name} is given twice; list every value once: --vary {f.name}=A,B,C")
        out[f.name] = [f.parse(v) for v in values.split(",") if v.strip()]
    return out


def compare(magic: Any, rest: str, cell: str | None) -> None:
    """``%shark compare --models a,b,c PROMPT`` / ``--model m --vary field=v1,v2 PROMPT``."""
    from IPython.display import display

    from ..compare import plan_comparison
    from .core import _note, interrupted, save_images

    args, prompt, wants_help = magic.parse_line(rest)
    if wants_help:
        print(COMPARE_HELP)
        return
    prompt = expand_prompt(magic.prompt_of(prompt, cell, command="%shark compare"), magic.shell.user_ns)
    magic.check_out_and_save(args)
    given = options.given_options(args)
    if args.models is not None and args.vary is not None:
        raise SharkUsageError("%shark compare takes --models (one cell per model) or --model with --vary "
                              "(one cell per value), not both")
    if args.models is not None:
        if args.model is not None:
            raise SharkUsageError("%shark compare: --models names every cell's model; drop --model")
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        if not names:
            raise SharkUsageError("--models: name at least one model, e.g. --models gpt-image-2,gemini")
        cells: dict[str, dict] = {}
        for name in names:
            try:
                spec = model_spec(name)
            except ValidationError as exc:
                raise SharkUsageError(f"--models {name}: {exc.message}") from None
            if spec.id in cells:
                raise SharkUsageError(f"--models lists {spec.name} twice; to compare one model's settings "
                                      f"write --model {spec.name} --vary FIELD=V1,V2")
            kwargs = magic.request_kwargs(args, spec, given, cell=f"[{spec.name}] ")
            cells[spec.id] = {k: v for k, v in kwargs.items() if k != "model"}
        plan_args: dict[str, Any] = dict(models=cells)
    elif args.vary is not None:
        spec = options.resolve_model(args.model, magic.model)
        vary = _vary(args.vary, spec)
        both = [f for f in vary if any(o.name == f for o in given)]
        if both:
            raise SharkUsageError(f"{spec.field(both[0]).option} and --vary {both[0]} are both given; "
                                  "the varied values are the cells' values: drop one")
        plan_args = dict(vary=vary, **magic.request_kwargs(args, spec, given))
    else:
        raise SharkUsageError("%shark compare needs --models A,B,C or --model M --vary FIELD=V1,V2 "
                              "(%shark compare --help); for a prompt that starts with 'compare' write "
                              "%shark -- compare ...")
    try:
        plan = plan_comparison(prompt, **plan_args)
    except ValidationError as exc:  # already names the cell: "[gemini] size=..."
        raise SharkUsageError(exc.message) from None
    client = session.get_client()
    if args.dry_run:
        print(dry_run_text(client, plan.requests, plan.labels))
        print("Total: " + plan.estimate_text())
        return
    left = client.ledger.remaining
    budget = "no session budget" if left is None else f"budget: {text.money(left)} left"
    status = display(_note(f"comparing — {plan.estimate_text()}; {budget}. Sending…"), raw=True, display_id=True)
    try:
        try:
            grid = client.compare(prompt, **plan_args)
        except KeyboardInterrupt:
            raise SharkUsageError(interrupted(plan.requests[0].is_task)) from None
        except BudgetExceededError as exc:
            raise SharkUsageError(f"the grid of {text.count(len(plan.requests), 'cell')} is over the "
                                  f"budget: {exc.message}") from None
        save_dir = args.save if args.save is not None else magic.save_dir
        notes: list[str] = []
        for label, result in zip(grid.labels, grid.results):
            if not isinstance(result, BaseException):
                save_images(result, save_dir, notes, label=f"[{label}] ")
        magic.assign(args.out, grid)
    except BaseException:  # never an empty output: say what became of the estimate line
        status.update(_note("no grid: the comparison did not complete (the error follows)"), raw=True)
        raise
    status.update(grid)
    if notes:
        raise SharkUsageError(notes[0])
