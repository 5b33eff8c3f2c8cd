"""Session fixtures for the worker's subprocess tests (defined in support.py)."""

from tests.integration.worker.support import api_worker, media, media_server

__all__ = ["api_worker", "media", "media_server"]
