"""A short description of the machine a run was measured on, kept in the JSON next to the numbers."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import psutil


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - a missing optional library is just "not installed"
        return None


def describe_machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpu_model": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "qdrant_client": _qdrant_version(),
        "numpy": _version("numpy"),
        "pillow": _version("PIL"),
        "rawpy": _version("rawpy"),
        "gpu": _gpu(),
        "load_avg_at_start": [round(load1, 2), round(load5, 2)],
    }


def _gpu() -> str | None:
    """The accelerator ONNX Runtime can use here, if any (the services pick CUDA when it is there)."""
    try:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return None
    except Exception:  # noqa: BLE001
        return None
    from shoebox.ml.capabilities import gpu_description

    return gpu_description() or "CUDA"


def _qdrant_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("qdrant-client")
    except Exception:  # noqa: BLE001
        return None


class ForeignLoad:
    """CPU time used during the run by processes that are not this benchmark or its services.

    The load average cannot tell the benchmark's own work from other people's; this can, so the
    output says when numbers were measured on a machine that was busy with something else.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.cpu_s = 0.0
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="foreign-load", daemon=True)

    def _tick(self) -> None:
        me = psutil.Process()
        ours = {me.pid} | {c.pid for c in me.children(recursive=True)}
        seen: dict[int, float] = {}
        for proc in psutil.process_iter():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            seen[proc.pid] = t.user + t.system
            if proc.pid not in ours and proc.pid in self._last:
                self.cpu_s += max(0.0, seen[proc.pid] - self._last[proc.pid])
        self._last = seen

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def start(self) -> ForeignLoad:
        self._tick()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._t0
        return {
            "other_processes_cpu_s": round(self.cpu_s, 1),
            "wall_s": round(wall, 1),
            "other_processes_avg_cores": round(self.cpu_s / wall, 2) if wall else 0.0,
        }
