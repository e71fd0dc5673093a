"""``python -m shark_nb.simulator``: run the offline Shark API as a loopback HTTP server.

    python -m shark_nb.simulator --port 8765
    python -m shark_nb.simulator --port 8765 --latency 2 --rate-limit 5/60 --allow-anonymous
    python -m shark_nb.simulator --latency 0.5 --max-in-flight 4 --retry-after-format fractional

Serves every image model of the gateway (``GET /models`` lists them), each validated by its own
schema from :mod:`shark_nb.schemas`. Prints one line with the API base URL
(``http://127.0.0.1:8765/api/v1``), then serves until Ctrl-C (or SIGTERM). Unlike the in-process simulator, the server requires a key by default (any
non-empty key but ``--invalid-key``); ``--allow-anonymous`` lifts that.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import serve_in_thread
from .service import Simulator, SimulatorConfig, _env_latency


def _rate(text: str) -> tuple[int, float]:
    try:
        n, _, per = text.partition("/")
        value = (int(n), float(per or 1))
        if value[0] < 1 or value[1] <= 0:
            raise ValueError
        return value
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/SECONDS such as 5/60, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
        if value < 1:
            raise ValueError
        return value
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None


def _spelling(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise argparse.ArgumentTypeError(f"expected STATUS=SPELLING[,...], got {text!r}")
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    from ..schemas import models

    listed = "; ".join(f"{m.id} ({m.name})" for m in models())
    p = argparse.ArgumentParser(
        prog="python -m shark_nb.simulator",
        description="Run the offline Shark AI image API simulator on a loopback port. It serves every "
                    f"image model of the gateway, each validated by its own schema: {listed}. Send the "
                    "full model id (the gateway knows no aliases); prices are the simulator's own "
                    "(docs/models.md).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--latency", type=float, default=None,
                   help="seconds per generation, sync and task (default $SHARK_SIM_LATENCY or 0.05)")
    p.add_argument("--download-latency", type=float, default=0.0, help="extra seconds per image download")
    p.add_argument("--url-ttl", type=float, default=600.0, help="lifetime of signed image URLs in seconds")
    p.add_argument("--task-pending", type=float, default=None, help="seconds a task stays 'pending'")
    p.add_argument("--rate-limit", type=_rate, default=None, metavar="N/SECONDS",
                   help="at most N generation POSTs per SECONDS (429 with Retry-After beyond)")
    p.add_argument("--max-in-flight", type=_positive_int, default=None, metavar="K",
                   help="at most K generations at work at once (429 with Retry-After beyond)")
    p.add_argument("--retry-after-format", choices=("seconds", "fractional", "http-date"), default="seconds",
                   help="Retry-After on 429: whole seconds rounded up (default), fractional seconds, or an HTTP date")
    p.add_argument("--allow-anonymous", action="store_true", help="accept requests without an API key")
    p.add_argument("--invalid-key", default="sk-invalid", help="the key answered with 401 (default sk-invalid)")
    p.add_argument("--balance", type=float, default=None, help="account balance in credits (default unlimited)")
    p.add_argument("--omit-credit", action="store_true", help="leave 'credit' out of answers")
    p.add_argument("--omit-usage", action="store_true", help="leave 'usage' out of answers")
    p.add_argument("--response-format", choices=("url", "b64_json"), default=None,
                   help="sync image shape for every model (default: each model's own: URLs, Gemini b64_json)")
    p.add_argument("--task-result-shape", choices=("data_url", "b64_json", "output_urls"), default=None,
                   help="completed-task image shape for every model (default: each model's own)")
    p.add_argument("--status-spelling", type=_spelling, default={}, metavar="STATUS=WORD,...",
                   help="e.g. running=in_progress,pending=queued")
    p.add_argument("--task-error-as-string", action="store_true", help="failed tasks carry error as a string")
    p.add_argument("--cancel-running", choices=("allow", "refuse"), default="allow",
                   help="whether a running task may be cancelled (refuse: 409)")
    p.add_argument("--api-base", default=None, help="API base URL to advertise (default: this server)")
    p.add_argument("--relative-task-urls", action="store_true",
                   help="advertise polling_url/cancel_url as paths (/api/v1/...), as the gateway's video tasks do")
    p.add_argument("--files-base", default=None, help="base URL of the image links (default: this server)")
    p.add_argument("--allow-download-auth", action="store_true",
                   help="do not refuse downloads that carry an API key (they are still counted)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SimulatorConfig(
        api_base=args.api_base, files_base=args.files_base,
        latency=_env_latency() if args.latency is None else args.latency,
        download_latency=args.download_latency, url_ttl=args.url_ttl, task_pending=args.task_pending,
        rate_limit=args.rate_limit, max_in_flight=args.max_in_flight, retry_after_format=args.retry_after_format,
        allow_anonymous=args.allow_anonymous, invalid_key=args.invalid_key, balance=args.balance,
        omit_credit=args.omit_credit, omit_usage=args.omit_usage, response_format=args.response_format,
        task_result_shape=args.task_result_shape, status_spelling=args.status_spelling,
        task_error_as_string=args.task_error_as_string, cancel_running=args.cancel_running,
        reject_download_auth=not args.allow_download_auth,
        task_urls="relative" if args.relative_task_urls else "absolute",
    )
    try:
        handle = serve_in_thread(Simulator(config), host=args.host, port=args.port, verbose=args.verbose)
    except OSError as e:
        print(f"shark_nb simulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    print(f"shark_nb simulator listening on {handle.base_url} (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.close()
    print("shark_nb simulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
