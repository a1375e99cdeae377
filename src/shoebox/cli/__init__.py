"""The `shoebox` command line: talks to the services over HTTP, or starts them itself.

Every command speaks the HTTP API of the ingestion service at `SHOEBOX_URL` (with
`SHOEBOX_API_KEY`). When nothing answers there and the URL is on this machine, the command
starts both services itself on loopback with the embedded defaults and stops them at exit, so
`shoebox ingest ~/Photos` works with nothing running. Tables go to stdout, `--json` prints
the API's answer for scripts; progress, banners and errors go to stderr.
"""

from shoebox.cli import commands, models, render, services  # noqa: E402,F401  (registers every command)
from shoebox.cli.commands import _export_next_step  # noqa: E402,F401
from shoebox.cli.common import app, ensure_test_model, test_model_dir  # noqa: E402,F401

__all__ = ["app"]
