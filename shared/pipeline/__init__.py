"""The orchestration, as plain code over injected adapters (DESIGN.md, Flow). Read in this order:

keys (parse/validate S3 keys, artifact keys) -> plan (which channels an item needs, the delta rule,
"final and current") -> policy (retries, backoff, deadlines, quarantine: the one retry policy) ->
ledger (the rows and their conditional transitions, over ledger_table's storage port: DynamoDB in
shared.aws.ledger, a dict in shared.dev.memory_ledger) ->
core (the adapters every step shares, Outcome) -> ingest (S3 record -> item) -> advance (the delta rule
applied; Lambda channels run in-process, lambda_channels) -> dispatch (claim, then POST /run) ->
job_output (a RunPod answer parsed at the boundary) -> results (the answer applied to its dispatch) ->
completion (item status, manifests, spec versions; search_sync: the owners' search tables, written with
the manifests) -> sweep (what is due) -> service (the Pipeline
that joins the steps for the Lambda handlers, lambdas). Beside them: events (S3/SQS event models),
tokens (webhook HMAC tokens), runpod_client, persons, reprocess, admin, manifests (parquet rows),
settings.
"""
