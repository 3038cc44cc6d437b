"""Logging for the long-running processes (``serve``, ``runner``): identical records repeated
within a window are dropped and counted, so an outage (the database down, every poll failing)
writes one line per distinct error per window instead of one per request or poll."""

from __future__ import annotations

import logging
import threading
import time


class RepeatFilter(logging.Filter):
    """Pass a record unless an identical one (logger, level, message) passed less than
    ``window_s`` seconds ago; the next one that passes says how many were dropped."""

    def __init__(self, window_s: float = 60.0, max_keys: int = 1000):
        super().__init__()
        self.window_s, self.max_keys = window_s, max_keys
        self._seen: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is passed on untouched
            return True
        key = (record.name, record.levelno, message, record.exc_info is not None)
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window_s:
                entry[1] += 1
                return False
            dropped = entry[1] if entry is not None else 0
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if dropped:
            record.msg = f"{message} (and {dropped} identical messages in the last {self.window_s:.0f} s)"
            record.args = None
        return True


def install_repeat_filter(window_s: float = 60.0) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every handler of the root and uvicorn loggers."""
    flt = RepeatFilter(window_s)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RepeatFilter) for f in handler.filters):
                handler.addFilter(flt)
    return flt
