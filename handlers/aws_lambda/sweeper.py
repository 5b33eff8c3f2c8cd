"""Lambda: the sweeper (EventBridge schedule, every minute).

Handler `handlers.aws_lambda.sweeper.handler`. Reads the ledger's sweep-index (never scans): polls
/status for jobs past their deadline (a lost webhook completes this way), re-dispatches claims that
were never submitted and retries whose backoff has passed, quarantines after MAX_ATTEMPTS. Returns
`{"counts": {action: n}}`. Sample event: infra/events/sweeper/schedule.json.
"""

from __future__ import annotations

import os

from shared.pipeline.lambdas import build

handler = build("sweeper", os.environ)
