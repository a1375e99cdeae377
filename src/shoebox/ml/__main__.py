"""`python -m shoebox.ml --host H --port P`: the ML inference service (one uvicorn worker)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from shoebox.binding import refusal, warn_if_open
from shoebox.ml.config import MLSettings
from shoebox.ml.models.download import ModelUnavailableError, resolve_model_dir


def main(argv: list[str] | None = None) -> int:
    settings = MLSettings()
    parser = argparse.ArgumentParser(prog="python -m shoebox.ml", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--no-access-log", action="store_true", help="Do not log every request.")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="Listen on a non-loopback address without SHOEBOX_API_KEY (anyone who reaches it may use it).",
    )
    args = parser.parse_args(argv)
    # Before the model: a refused bind must not cost a download or a load.
    what = "the ML service"
    if reason := refusal(
        args.host, secret_set=bool(settings.api_key), insecure=args.insecure, what=what, secret="SHOEBOX_API_KEY"
    ):
        print(f"shoebox-ml: error: {reason}", file=sys.stderr)
        return 2
    warn_if_open(args.host, secret_set=bool(settings.api_key), what=what, prog="shoebox-ml")

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Find (or download) the model before the server starts, so a missing one is one clear line
    # and a non-zero exit instead of a startup traceback.
    try:
        model_dirs = [resolve_model_dir(settings, entry) for entry in settings.model_entries()]
    except ModelUnavailableError as exc:
        print(f"shoebox-ml: error: {exc.message}", file=sys.stderr)
        return 2
    from shoebox.ml.models.clip import listed_twice

    if (twice := listed_twice(model_dirs)) is not None:
        print(f"shoebox-ml: error: SHOEBOX_MODELS lists one model twice: {twice}", file=sys.stderr)
        return 2
    settings = settings.model_copy(
        update={
            "model_dir": model_dirs[0],
            "models": ",".join(str(d) for d in model_dirs),
            "host": args.host,
            "port": args.port,
        }
    )

    from shoebox.ml.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
