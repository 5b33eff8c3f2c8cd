"""The logging configuration, one for each kind of process. Every logger of the project (`shared.*`:
pipeline, ledger, worker, models; `handlers.*`) is a stdlib logger named after its module, and goes
through the configuration its process chose:

- Lambda (`lambda_logger`): Powertools' Logger, JSON lines with the invocation's keys (function, request
  id, cold start, correlation id). The project's stdlib loggers are given its handler and level
  (Powertools' `copy_config_to_registered_loggers`), so their lines are the same JSON with the same keys;
  without it their INFO lines would go nowhere (Lambda's runtime logs WARNING and up, as plain text).
- RunPod worker (`worker`): on RunPod, one JSON object a line on stderr, as the runpod SDK's own logger
  writes there ({"requestId", "level", "message"}, plus logger and time; requestId is the job being
  handled, `job_id`); plain text elsewhere (`--rp_serve_api` on a laptop, the local stack's worker.log).
- CLI (`cli`): human text on stderr through rich; warnings and errors only, unless -v (info) / -vv (debug).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from rich.console import Console

PROJECT = ("shared", "handlers")  # the top-level loggers every module's logger propagates to
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)  # the worker's job being handled


def lambda_logger(
    service: str, level: str = "INFO", stream: TextIO | None = None, *, adopt: bool = True
) -> Logger:
    """Powertools' Logger for a function. `adopt`: give the project's stdlib loggers its handler and level
    (in Lambda, where the process is the function's; not where one process hosts several functions and
    owns its logging: the local stack, `se invoke`)."""
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logger = Logger(service=service, level=level, stream=stream)
    if adopt:
        for name in PROJECT:
            logging.getLogger(name)  # registered now: Powertools only configures loggers that exist
        copy_config_to_registered_loggers(source_logger=logger, include=set(PROJECT))
    return logger


class WorkerJson(logging.Formatter):
    """One JSON object a line, the runpod SDK's fields first."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "requestId": job_id.get(),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": self.formatTime(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def worker(level: str = "INFO", *, structured: bool, stream: TextIO | None = None) -> logging.Handler:
    """The worker process's logging: every logger to `stream` (stderr), JSON lines when `structured`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        WorkerJson() if structured else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    return handler


def cli(verbosity: int, console: Console) -> logging.Handler:
    """The CLI's logging: human lines on `console` (stderr). 0: the project's warnings and errors (and
    other libraries' errors); 1 (-v): the project's info; 2 (-vv): debug, and other libraries' info.
    Returns the handler: `remove` it when the command ends (an in-process caller keeps its own logging)."""
    from rich.logging import RichHandler

    handler = RichHandler(
        console=console, show_path=verbosity > 1, markup=False, rich_tracebacks=False, log_time_format="%X"
    )
    root = logging.getLogger()
    names = ("", *PROJECT, "py.warnings")
    handler._se_levels = {n: logging.getLogger(n).level for n in names}  # type: ignore[attr-defined]
    for old in [h for h in root.handlers if hasattr(h, "_se_levels")]:
        remove(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbosity > 1 else logging.ERROR)
    project = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    for name in PROJECT:
        logging.getLogger(name).setLevel(project)
    logging.captureWarnings(True)  # Python warnings (libraries') are log records: shown with -v
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbosity else logging.ERROR)
    return handler


def remove(handler: logging.Handler) -> None:
    """Undo `cli`: the handler goes, the levels it set are restored."""
    logging.getLogger().removeHandler(handler)
    for name, level in getattr(handler, "_se_levels", {}).items():
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(False)
