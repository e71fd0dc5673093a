"""``python -m shark_nb``: the quickstart from a terminal.

Generates images for a prompt (on the offline simulator when no SHARK_API_KEY is set), saves them
with their metadata, and prints what it cost and the session ledger's path.
"""

from __future__ import annotations

import argparse
import sys

from . import params

DEFAULT_PROMPT = "a lighthouse on a cliff at dusk, watercolour"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shark_nb", description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument("-n", type=int, default=2, help="images, 1..4 (default 2)")
    parser.add_argument("--size", default="1024x1024", choices=params.SIZES)
    parser.add_argument("--quality", default="low", choices=params.QUALITIES)
    parser.add_argument("--format", dest="output_format", default="png", choices=params.OUTPUT_FORMATS)
    parser.add_argument("--wait", default="sync", choices=params.WAIT_MODES)
    parser.add_argument("--out", default="shark-images", help="folder for the images (default shark-images)")
    args = parser.parse_args(argv)

    from . import Shark, SharkError

    client = Shark()
    where = "the offline simulator" if client.offline else client.base_url
    estimate = client.estimate(args.prompt, n=args.n, size=args.size, quality=args.quality)
    print(f"Generating {args.n} image(s) on {where} (estimate {estimate:,.1f} credit)…")
    try:
        result = client.generate(args.prompt, n=args.n, size=args.size, quality=args.quality,
                                 output_format=args.output_format, wait=args.wait)
    except SharkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for url in getattr(exc, "urls", ()):  # a DownloadError: the images are still there for a while
            print(f"  image URL: {url}", file=sys.stderr)
        return 1
    for path, image in zip(result.save(args.out), result.images):
        print(f"  {path}  {image.size[0]}x{image.size[1]} {image.format}, {len(image.data):,} bytes")
    for note in result._notes():  # images missing, or more/fewer than asked
        print(f"  note: {note}", file=sys.stderr)
    for missing in result.missing:
        if missing.url:
            print(f"  image {missing.index + 1} is still at {missing.url}", file=sys.stderr)
    credit = "unknown" if result.credit is None else f"{result.credit:,.1f} credit (${result.cost_usd:.4f})"
    print(f"Cost: {credit} · {result.latency:.2f} s · tracing id {result.tracing_id}")
    print(f"Ledger: {client.ledger.summary()}")
    print(f"        {client.ledger.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
