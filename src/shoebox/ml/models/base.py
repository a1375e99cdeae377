"""The lifecycle every model follows: load once (under a lock), then predict."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class InferenceModel(ABC):
    """Subclasses write `_load`; their predict methods call `ensure_loaded` first."""

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        # Two callers may arrive for a model neither has loaded; only one may build the sessions.
        with self._load_lock:
            if self._loaded:
                return
            self._load()
            self._loaded = True

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    @abstractmethod
    def _load(self) -> None: ...
