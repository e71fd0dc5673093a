"""``python -m shark_nb``: the quickstart from a terminal.

Generates images for a prompt (on the offline simulator when no SHARK_API_KEY is set), saves them
with their metadata, and prints what it cost and the session ledger's path.

Every mistake ends in one line on stderr and exit code 2, before anything is sent (a bad flag, a
bad ``-n``, a bad SHARK_BASE_URL, an ``--out`` that cannot be a folder). A failed call is one line
and exit code 1. Images that were paid for are never lost: if ``--out`` cannot be written after
the call, they are saved under ``$SHARK_NB_HOME/rescued/`` (or a temporary folder) and the path
is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from . import config, params, text
from .errors import SharkError

DEFAULT_PROMPT = "a lighthouse on a cliff at dusk, watercolour"
PROG = "python -m shark_nb"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        _fail(f"{message} (see {PROG} --help)")


def _fail(message: str, code: int = 2) -> NoReturn:
    # the options and their messages are the magic's: here they are this command's
    print(f"{PROG}: error: {message.replace('%shark', PROG)}", file=sys.stderr)
    raise SystemExit(code)


def _check_out(out: str) -> Path:
    """``--out`` must be a folder we can create or write; checked before anything is paid for."""
    if not out.strip() or "\x00" in out:
        _fail(f"--out {out!r}: expected a folder path, e.g. --out {config.DEFAULT_SAVE_FOLDER}")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        _fail(f"--out {out}: it is a file, not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"--out {out}: cannot write into {parent} (permission denied); choose another folder")
    return path


def _model(name: str) -> Any:
    from .schemas import model_spec

    return model_spec(name)


def _rescue(result: Any) -> tuple[list[Path], str]:
    """Save paid images somewhere that works: $SHARK_NB_HOME/rescued/<tracing id>, else a temp folder."""
    problems = []
    for folder in (config.shark_home() / "rescued" / str(result.tracing_id),
                   Path(tempfile.gettempdir()) / f"{config.DEFAULT_SAVE_FOLDER}-{result.tracing_id}"):
        try:
            return result.save(folder), str(folder)
        except (OSError, ValueError) as exc:
            problems.append(f"{folder}: {exc}")
    raise OSError("; ".join(problems))


#: The quickstart's own defaults for gpt-image-2 (cheap and quick), where the user set none.
QUICKSTART_GPT = {"n": "2", "size": "1024x1024", "quality": "low"}


def main(argv: list[str] | None = None) -> int:
    from .magic.options import SchemaOption, fields_for, model_help, models_table, schema_options
    from .magic.usage import SharkUsageError

    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     epilog="Each model's own settings are options (values are checked by that model's "
                            f"schema):\n{models_table().replace('%shark', PROG)}",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("--model", default="gpt-image-2",
                        help="gpt-image-2 (default; quickstart: -n 2 --size 1024x1024 --quality low), "
                             "gemini, seedream, midjourney, grok-edit, or a full model id")
    parser.add_argument("--image", action="append", default=None, metavar="PATH_OR_URL",
                        help="reference image (repeatable); grok-edit needs exactly one")
    parser.add_argument("--mask", default=None, metavar="PNG", help="mask for the first --image (gpt-image-2)")
    for opt in schema_options():
        parser.add_argument(opt.option, dest=opt.dest, default=None, metavar=opt.name.upper(),
                            help=f"{opt.owner_names}: {opt.values_text()}")
    parser.add_argument("--wait", default="sync", help="sync (one request) or task (submit and poll)")
    parser.add_argument("--out", default=config.DEFAULT_SAVE_FOLDER,
                        help=f"folder for the images (default {config.DEFAULT_SAVE_FOLDER})")
    if argv is None:
        argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        known, _rest = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
        if "--model" in argv:
            try:
                print(model_help(_model(known.model)).replace("%shark", PROG))
            except SharkError as exc:
                _fail(str(exc))
            return 0
        parser.print_help()
        return 0
    args = parser.parse_args(argv)

    from . import Shark

    # validate everything before a word about generating (and before anything is paid for)
    try:
        spec = _model(args.model)
        given: dict[SchemaOption, str] = {o: getattr(args, o.dest) for o in schema_options()
                                          if getattr(args, o.dest) is not None}
        if spec.id == "openai/gpt-image-2":
            for opt in schema_options():
                if opt.name in QUICKSTART_GPT and opt not in given and spec in opt.owners:
                    given[opt] = QUICKSTART_GPT[opt.name]
        fields = fields_for(spec, given)
        request = params.build_request(args.prompt, model=spec.id, image=args.image, mask=args.mask,
                                       wait=args.wait, **fields)
        out = _check_out(args.out)
        client = Shark()
    except (SharkError, SharkUsageError) as exc:
        _fail(str(exc))

    where = "the offline simulator" if client.offline else client.base_url
    print(f"Generating {text.count(request.n, 'image')} on {where} (estimate {text.money(request.estimate_credit())})…")
    try:
        result = client.send(request)
    except SharkError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        print(f"Ledger: {client.ledger.path}", file=sys.stderr)
        for url in getattr(exc, "urls", ()):  # a DownloadError: the images are still there for a while
            print(f"  image URL: {url}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted — anything charged is in the ledger: {client.ledger.path}", file=sys.stderr)
        return 130
    code = 0
    try:
        paths = result.save(out)
    except (OSError, SharkError, ValueError) as exc:
        paths, folder = _rescue(result)
        print(f"{PROG}: could not save into {args.out} ({exc}); the paid images are saved in {folder}",
              file=sys.stderr)
        code = 1
    for path, image in zip(paths, result.images):
        print(f"  {path}  {image.size[0]}x{image.size[1]} {image.format}, {text.bytes_(len(image.data))}")
    for note in result._notes():  # images missing, or more/fewer than asked
        print(f"  note: {note}", file=sys.stderr)
    for missing in result.missing:
        if missing.url:
            print(f"  image {missing.index + 1} is still at {missing.url}", file=sys.stderr)
    print(f"Cost: {text.money(result.credit)} · {text.duration(result.latency)} · tracing id {result.tracing_id}")
    print(f"Ledger: {client.ledger.summary()}")
    print(f"        {client.ledger.path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
