"""The Hub's handler.py: the worker is handlers/runpod_worker/handler.py over shared/worker; this
only starts it (`python .runpod/handler.py` = `python -m handlers.runpod_worker`, the image's CMD)."""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runpy.run_module("handlers.runpod_worker", run_name="__main__", alter_sys=True)
