"""Timestamps as the ledger stores them: ISO-8601 UTC with milliseconds, and back to epoch seconds."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def iso_epoch(iso: Any) -> float | None:
    """now_iso's inverse (any ISO-8601 time); None for what is not one."""
    if not isinstance(iso, str):
        return None
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
