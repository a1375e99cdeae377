"""Start the two services as child processes on loopback and wait until they answer /health.

Used by `shoebox up`, the CLI's auto-start, the end-to-end tests and the benchmarks, so that
all of them run the services exactly the way a user does (`python -m shoebox.ml|ingest`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shoebox.binding import connect_host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    kind: str  # "ml" or "ingest"
    host: str
    port: int
    proc: subprocess.Popen
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Where this machine reaches it (loopback for a wildcard bind such as 0.0.0.0)."""
        return f"http://{connect_host(self.host)}:{self.port}"

    def wait_healthy(self, timeout: float = 120.0, require: str | None = None) -> dict:
        """Poll /health until it answers 200 (and `require` in the body is truthy, e.g. model_loaded)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} service exited with {self.proc.returncode}: {self.tail_log()}")
            try:
                r = httpx.get(self.url + "/health", timeout=2.0)
                if r.status_code == 200:
                    body = r.json()
                    if require is None or body.get(require):
                        return body
                    last = body
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{self.kind} service not healthy after {timeout}s ({last}): {self.tail_log()}")

    def tail_log(self, n: int = 4000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def start_service(
    kind: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    insecure: bool = False,
) -> ServiceProcess:
    """Start `python -m shoebox.<kind> --host H --port P` with `env` layered over os.environ.

    `insecure` passes `--insecure`: a non-loopback `host` without SHOEBOX_API_KEY is otherwise refused.
    """
    port = port or free_port()
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the child
    proc = subprocess.Popen(
        [sys.executable, "-m", f"shoebox.{kind}", "--host", host, "--port", str(port)]
        + (["--insecure"] if insecure else []),
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return ServiceProcess(kind=kind, host=host, port=port, proc=proc, log_path=log_path, env=env or {})
