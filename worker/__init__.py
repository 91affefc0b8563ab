"""The live service `churn-worker run` starts, and nothing else: sources (SQS, Kinesis), the
pipeline, scoring, re-scoring, alert routing, the ledger and publishing, the shadow model, the
archive, settings and the runtime that owns them. Imports `features` and `plumbing` only."""
