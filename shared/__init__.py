"""serverless-embeddings: the embedding library (spec, models, media, storage, ledger, pipeline)."""
