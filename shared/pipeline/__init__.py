"""The orchestration, pure of AWS (DESIGN.md, Flow). Read in this order, each a floor below the last:

keys (parse/validate S3 keys, artifact keys) -> plan (which channels an item needs, the delta rule) ->
ledger (DynamoDB rows and their conditional transitions) -> dispatch (claim, then POST /run to RunPod)
-> callback (the webhook token, applying a job's result) -> lambda_channels (the text channels run
in-process) -> sweep (lost webhooks, retries, quarantine) -> manifests (parquet per owner and spec).
`shared.pipeline.service.Pipeline` wires them for the Lambda handlers.
"""
