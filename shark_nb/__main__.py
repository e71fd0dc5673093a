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

DEFAULT_PROMPT = "a lighthouse on a cliff at dusk, watercolour"
PROG = "python -m shark_nb"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        _fail(f"{message} (see {PROG} --help)")


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("-n", type=int, default=2, help="images, 1..4 (default 2)")
    parser.add_argument("--size", default="1024x1024", choices=params.SIZES)
    parser.add_argument("--quality", default="low", choices=params.QUALITIES)
    parser.add_argument("--format", dest="output_format", default="png", choices=params.OUTPUT_FORMATS)
    parser.add_argument("--wait", default="sync", choices=params.WAIT_MODES)
    parser.add_argument("--out", default=config.DEFAULT_SAVE_FOLDER,
                        help=f"folder for the images (default {config.DEFAULT_SAVE_FOLDER})")
    args = parser.parse_args(argv)

    from . import Shark, SharkError

    # validate everything before a word about generating (and before anything is paid for)
    try:
        request = params.build_request(args.prompt, n=args.n, size=args.size, quality=args.quality,
                                       output_format=args.output_format, wait=args.wait)
        out = _check_out(args.out)
        client = Shark()
    except SharkError as exc:
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
