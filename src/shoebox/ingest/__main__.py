"""`python -m shoebox.ingest --host H --port P`: run the ingestion orchestration service."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from shoebox.binding import refusal, warn_if_open
from shoebox.ingest.config import IngestSettings


def main() -> None:
    settings = IngestSettings()
    parser = argparse.ArgumentParser(prog="python -m shoebox.ingest", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="Listen on a non-loopback address without SHOEBOX_API_KEY (anyone who reaches it may use it).",
    )
    args = parser.parse_args()
    what = "the ingestion service"
    if reason := refusal(
        args.host, secret_set=bool(settings.api_key), insecure=args.insecure, what=what, secret="SHOEBOX_API_KEY"
    ):
        raise SystemExit(f"shoebox ingest: error: {reason}")
    warn_if_open(args.host, secret_set=bool(settings.api_key), what=what, prog="shoebox ingest")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Imported after the bind check: the app's imports (the store, the pipeline) take seconds.
    from shoebox.ingest.app import create_app
    from shoebox.ingest.context import DataDirInUse, lock_data_dir

    try:  # the service takes the lock again at start-up; this is for a readable refusal
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        lock_data_dir(settings.data_dir).close()
    except DataDirInUse as exc:
        raise SystemExit(f"shoebox ingest: {exc.message}") from None
    # One line per ML batch would drown the job logs that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, workers=1)


if __name__ == "__main__":
    main()
