"""The admin UI: a Streamlit app over the ingestion API (`streamlit run src/shoebox/admin/app.py`).

It talks only through `shoebox.client.ShoeboxClient`; see `launch` to start it as a process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")
DEFAULT_PORT = 8501


def launch(
    url: str = "http://127.0.0.1:8002",
    api_key: str | None = None,
    port: int = DEFAULT_PORT,
    *,
    ml_url: str | None = None,
    ml_api_key: str | None = None,
    address: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    insecure: bool = False,
    **popen: object,
) -> subprocess.Popen:
    """Start the admin UI as a child process and answer it at once (it is not waited for).

    Runs `<this python> -m streamlit run <admin/app.py> --server.port PORT --server.headless true
    --server.address ADDRESS` with the environment of this process plus `SHOEBOX_URL=url` and
    `SHOEBOX_API_KEY=api_key` (empty when None): the ingestion service the UI talks to. `ml_url`
    / `ml_api_key` (env `SHOEBOX_ML_URL` / `SHOEBOX_ML_API_KEY`) name the ML service whose
    capabilities the Services page shows; unset, the UI uses http://127.0.0.1:8001 and no key.
    `env` adds or overrides variables; `popen` goes to `subprocess.Popen` as is (stdout=…, …).

    The UI answers on http://ADDRESS:PORT/ once Streamlit has started (about a second or two;
    poll `/_stcore/health` for "ok"). Streamlit must be installed (extra `ui`); when it is not,
    the process exits at once with status 1 and "No module named streamlit" on stderr. The
    caller owns the process: stop it with `terminate()` then `wait()`.

    With `SHOEBOX_UI_PASSWORD` set (here or in `env`), every page asks for it first. An `address`
    other than loopback without it raises ValueError, unless `insecure`.
    """
    from shoebox.binding import refusal

    password_set = bool((env or {}).get("SHOEBOX_UI_PASSWORD", os.environ.get("SHOEBOX_UI_PASSWORD")))
    if reason := refusal(
        address, secret_set=password_set, insecure=insecure, what="the admin UI", secret="SHOEBOX_UI_PASSWORD"
    ):
        raise ValueError(reason)
    full_env = dict(os.environ)
    full_env["SHOEBOX_URL"] = url
    full_env["SHOEBOX_API_KEY"] = api_key or ""
    if ml_url is not None:
        full_env["SHOEBOX_ML_URL"] = ml_url
    if ml_api_key is not None:
        full_env["SHOEBOX_ML_API_KEY"] = ml_api_key
    full_env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    full_env.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.address",
        address,
        "--browser.gatherUsageStats",
        "false",
    ]
    return subprocess.Popen(cmd, env=full_env, **popen)  # type: ignore[arg-type]


__all__ = ["APP_PATH", "DEFAULT_PORT", "launch"]
