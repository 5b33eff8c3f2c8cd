"""`se stack up` stops cleanly on Ctrl-C: the terminal's SIGINT reaches moto's and the worker's
processes as soon as the CLI's, so the pump and the sweeper see their calls fail before the stack is
told to stop. Failures while stopping end their threads quietly; failures otherwise are logged."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from shared.dev.stack import Pump


class DeadAfter:
    """An SQS client (and a sweeper) that work until `dead` is set, then refuse every call, as a
    killed moto does."""

    def __init__(self) -> None:
        self.dead = threading.Event()

    def receive_message(self, **kw: Any) -> dict:
        if self.dead.is_set():
            raise ConnectionError("Could not connect to the endpoint URL")
        time.sleep(0.02)
        return {}

    def sweeper(self, event: Any, context: Any) -> dict:
        if self.dead.is_set():
            raise ConnectionError("Could not connect to the endpoint URL")
        return {}


def pump(fake: DeadAfter) -> Pump:
    return Pump(fake, "q", "arn:q", lambda e, c: {}, fake.sweeper, visibility_s=30, sweep_every_s=0.02)


def test_failures_while_stopping_end_the_threads_quietly(caplog: pytest.LogCaptureFixture) -> None:
    fake = DeadAfter()
    p = pump(fake).start()
    time.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="shared.dev.stack"):
        fake.dead.set()  # the Ctrl-C reached moto first
        time.sleep(0.2)
        p.stop()  # then the stack
    assert not any(t.is_alive() for t in p.threads)
    assert caplog.records == [], [r.getMessage() for r in caplog.records]


def test_failures_of_a_running_stack_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    fake = DeadAfter()
    p = pump(fake).start()
    with caplog.at_level(logging.WARNING, logger="shared.dev.stack"):
        fake.dead.set()
        time.sleep(1.5)
        p.stop()
    assert {r.getMessage() for r in caplog.records} >= {"pump", "sweeper"}
