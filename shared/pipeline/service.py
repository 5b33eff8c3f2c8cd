"""The Pipeline: what on_upload, on_job_done, the sweeper and reprocess do, over injected adapters.

Follow one upload through the steps, each a module a floor below the last:
`ingest` (an S3 record: validate the key, HEAD the object, record it in the ledger) ->
`advance` (the delta rule; Lambda channels run in-process, `lambda_channels`; GPU channels go to
`dispatch`) -> `dispatch` (claim in the ledger, then POST /run with presigned URLs and a signed
webhook) -> `results` (on_job_done's webhook, or the sweeper's /status poll: the answer parsed at the
boundary, `job_output`, each artifact checked, the dependent Lambda channels run) -> `completion`
(item status, the owner's manifest and spec version) -> `sweep` (what is due: lost webhooks, claims
and jobs past their deadline, retries whose backoff has passed, manifests, persons). When to retry
and when to give up is decided in one place, `policy`.
"""

from __future__ import annotations

from typing import Any

from shared.pipeline.advance import Advance
from shared.pipeline.completion import Completion
from shared.pipeline.core import Outcome, artifact_key
from shared.pipeline.dispatch import Dispatch
from shared.pipeline.ingest import Ingest
from shared.pipeline.ledger import PROCESSING, Refusals, Runs
from shared.pipeline.persons import Persons
from shared.pipeline.plan import DISPATCHED
from shared.pipeline.results import Results
from shared.pipeline.sweep import Sweep


class Pipeline(Sweep, Completion, Results, Dispatch, Advance, Ingest):
    """Every step over one set of adapters (see shared.pipeline.core.Core for the arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.persons = Persons(self)
        self.runs = Runs(self.ledger)
        self.refusals = Refusals(self.ledger)


__all__ = ["DISPATCHED", "PROCESSING", "Outcome", "Pipeline", "artifact_key"]
